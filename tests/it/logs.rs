//! The operational log keeps ERROR and WARN for what an operator must act on:
//! clients that hang up, reset, stall or never finish a TLS handshake are
//! counted in `gatehouse_client_disconnects_total{phase}` and logged at DEBUG.

use crate::common;
use std::time::Duration;

use common::{Backend, Gatehouse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DISCONNECTS: &str = "gatehouse_client_disconnects_total";
const WITHIN: Duration = Duration::from_secs(10);

const SERVER: &str = r#"
[server]
threads = 1
grace_period = "1s"
access_log = "off"
header_timeout = "300ms"
pid_file = "{dir}/gatehouse.pid"
upgrade_sock = "{dir}/upgrade.sock"
"#;

/// Lines at WARN or ERROR in `log`.
fn loud_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" ERROR ") || l.contains(" WARN "))
        .collect()
}

async fn disconnects(gh: &Gatehouse, phase: &str) -> f64 {
    gh.metric(DISCONNECTS, &[("phase", phase)])
        .await
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_hang_up_are_counted_not_logged_as_errors() {
    let api = Backend::builder()
        .name("api")
        .response_header("x-pad", &"p".repeat(100))
        .start()
        .await;
    let gh = Gatehouse::builder(SERVER)
        .append(common::HTTPS)
        .append(common::HTTP_PLAIN)
        .append(common::ADMIN)
        .append(common::API)
        .backend("api", &api)
        .start()
        .await;
    let logged_at_start = gh.stderr().len();
    // (The harness's readiness probe already counted as an early hang-up.)
    let handshakes = disconnects(&gh, "tls_handshake").await;
    let timeouts = disconnects(&gh, "header_timeout").await;

    // A TLS client that says hello and hangs up mid-handshake, five times.
    for _ in 0..5 {
        let mut s = TcpStream::connect(gh.https_addr()).await.unwrap();
        // The first bytes of a ClientHello record, then nothing.
        s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
            .await
            .unwrap();
        drop(s);
    }
    // A TLS connection that completes a request, then closes without close_notify.
    for _ in 0..5 {
        let (mut s, _) = common::tls::connect(gh.https_addr(), "localhost", &["http/1.1"])
            .await
            .unwrap();
        s.write_all(b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut b = [0u8; 256];
        let _ = s.read(&mut b).await;
        // Drop the TLS session without close_notify: close the TCP socket.
        let (tcp, _) = s.into_inner();
        drop(tcp);
    }
    // Plain clients: half a head, then gone; half a head, then silence past
    // header_timeout; a request whose answer is never read (reset).
    for _ in 0..5 {
        let mut s = TcpStream::connect(gh.http_addr()).await.unwrap();
        s.write_all(b"GET /api/x HTTP/1.1\r\nHo").await.unwrap();
        drop(s);
    }
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(gh.http_addr()).await.unwrap();
        s.write_all(b"GET /api/x HTTP/1.1\r\nHo").await.unwrap();
        stalled.push(s);
    }
    for _ in 0..5 {
        // Closed with the answer unread: the kernel resets the connection.
        let s = TcpStream::connect(gh.http_addr()).await.unwrap();
        let (mut r, mut w) = s.into_split();
        w.write_all(b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut b = [0u8; 16];
        let _ = r.read(&mut b).await;
        drop((r, w));
    }

    assert!(
        common::eventually(WITHIN, || async {
            disconnects(&gh, "tls_handshake").await >= handshakes + 5.0
                && disconnects(&gh, "header_timeout").await >= timeouts + 3.0
        })
        .await,
        "handshakes {} head timeouts {}\n{}",
        disconnects(&gh, "tls_handshake").await,
        disconnects(&gh, "header_timeout").await,
        gh.stderr()
    );
    drop(stalled);
    // A request after all of it, so every event before it has been handled.
    let resp = gh
        .client_h1()
        .get(gh.https_url("/api/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let log = gh.stderr();
    let loud = loud_lines(&log[logged_at_start..]);
    assert!(
        loud.is_empty(),
        "client behaviour logged at WARN/ERROR:\n{}",
        loud.join("\n")
    );
}
