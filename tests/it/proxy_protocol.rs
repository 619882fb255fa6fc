//! PROXY protocol behind an L4 balancer: HAProxy from Debian in TCP mode with
//! `send-proxy-v2` in front of both listeners, `curl --haproxy-protocol` for
//! v1, and raw headers. The client address the header carries is the one
//! the backend is told; untrusted peers and missing or malformed headers are
//! closed without reaching it.

use crate::common;
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Backend, Gatehouse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const WITHIN: Duration = Duration::from_secs(10);

/// HTTP and HTTPS listeners expecting PROXY headers from 127.0.0.1 only; a
/// header (like a request head) must arrive within 1 s.
async fn start(api: &Backend) -> Gatehouse {
    let server = common::gatehouse::DEFAULT_SERVER.replace(
        "[server]",
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\nheader_timeout = \"1s\"",
    );
    Gatehouse::builder(&server)
        .append(&common::HTTP_PLAIN.replace(
            "redirect_to_https = false",
            "redirect_to_https = false\nproxy_protocol = true",
        ))
        .append(&common::HTTPS.replace(
            "self_signed = true",
            "self_signed = true\nproxy_protocol = true",
        ))
        .append(common::API)
        .backend("api", api)
        .start()
        .await
}

/// HAProxy forwarding TCP from a free port to `to`, with a v2 header.
struct Haproxy {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn haproxy(to: SocketAddr) -> Haproxy {
    let binary = ["/usr/sbin/haproxy", "haproxy"]
        .into_iter()
        .find(|b| Command::new(b).arg("-v").output().is_ok())
        .expect("haproxy is not installed: `bash .ci/deps.sh --test` installs it");
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let config = format!(
        "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\nfrontend f\n  bind 127.0.0.1:{port}\n  default_backend b\nbackend b\n  server gh {to} send-proxy-v2\n"
    );
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let child = Command::new(binary)
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        common::eventually(WITHIN, || async {
            TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await,
        "haproxy did not listen"
    );
    Haproxy {
        child,
        port,
        _dir: dir,
    }
}

/// `curl ARGS` (blocking, off the runtime); its stdout, or the failure.
async fn curl(args: Vec<String>) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("curl")
            .args(["-sS", "-k", "--max-time", "10"])
            .args(&args)
            .output()
            .map_err(|e| {
                format!("curl is not installed ({e}): `bash .ci/deps.sh --test` installs it")
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    })
    .await
    .unwrap()
}

fn real_ip_of_last(api: &Backend) -> Option<String> {
    api.last_request()
        .and_then(|r| r.header("x-real-ip").map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_v2_in_front_of_both_listeners_carries_the_client_address() {
    let api = Backend::named("api").await;
    let gh = start(&api).await;
    for (what, to, scheme) in [
        ("plain", gh.http_addr(), "http"),
        ("TLS", gh.https_addr(), "https"),
    ] {
        let lb = haproxy(to).await;
        // The client connects to HAProxy from 127.0.0.2.
        let body = curl(vec![
            "--interface".into(),
            "127.0.0.2".into(),
            format!("{scheme}://127.0.0.1:{}/api/x", lb.port),
        ])
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(body.contains("api"), "{what}: {body}");
        assert_eq!(
            real_ip_of_last(&api).as_deref(),
            Some("127.0.0.2"),
            "{what}"
        );
        let xff = api
            .last_request()
            .and_then(|r| r.header("x-forwarded-for").map(str::to_string));
        assert_eq!(xff.as_deref(), Some("127.0.0.2"), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_from_curl_and_by_hand_is_understood() {
    let api = Backend::named("api").await;
    let gh = start(&api).await;
    let body = curl(vec!["--haproxy-protocol".into(), gh.http_url("/api/curl")])
        .await
        .unwrap();
    assert!(body.contains("api"), "{body}");
    assert_eq!(real_ip_of_last(&api).as_deref(), Some("127.0.0.1"));

    // Two requests on the connection: the second is served by a new session
    // on the kept stream, with the connection's digest carried over (vendor
    // patch 126), and still has the address of the PROXY header.
    let mut s = TcpStream::connect(gh.http_addr()).await.unwrap();
    let first = common::raw::exchange(
        &mut s,
        b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\r\nGET /api/v1 HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(first.status, 200, "{}", first.body_text());
    assert_eq!(real_ip_of_last(&api).as_deref(), Some("203.0.113.9"));
    s.write_all(b"GET /api/v1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WITHIN, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(real_ip_of_last(&api).as_deref(), Some("203.0.113.9"));
}

/// Sends `bytes` from `from`; whether the connection was closed without an
/// answer.
async fn closed_without_answer(to: SocketAddr, from: IpAddr, bytes: &[u8]) -> bool {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let mut s = socket.connect(to).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    match tokio::time::timeout(WITHIN, s.read_to_end(&mut out)).await {
        Ok(Ok(_)) | Ok(Err(_)) => out.is_empty(),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_peers_and_bad_headers_are_closed() {
    let api = Backend::named("api").await;
    let gh = start(&api).await;
    let local: IpAddr = [127, 0, 0, 1].into();
    let stranger: IpAddr = [127, 0, 0, 3].into();
    let good =
        b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\r\nGET /api/x HTTP/1.1\r\nHost: a\r\n\r\n";
    let cases: [(&str, IpAddr, &[u8]); 4] = [
        ("a valid header from an untrusted peer", stranger, good),
        (
            "no header",
            local,
            b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "a malformed header",
            local,
            b"PROXY TCP4 999.1.1.1 127.0.0.1 1 2\r\nGET /api/x HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "a truncated v2 header",
            local,
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\x01",
        ),
    ];
    for (what, from, bytes) in cases {
        assert!(
            closed_without_answer(gh.http_addr(), from, bytes).await,
            "{what}: answered"
        );
        assert!(
            closed_without_answer(gh.https_addr(), from, bytes).await,
            "{what} (TLS listener): answered"
        );
    }
    assert_eq!(api.count(), 0, "something reached the backend");
}
