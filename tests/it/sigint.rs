//! SIGINT ends the process within a second, whatever it is doing, and leaves a
//! short log: 102 trials over six situations (idle, after reloads, idle
//! keep-alive connections, under load, during a drain, an open upgraded
//! connection), the signal sent at a spread of moments in each.
//!
//! Before the fix, 7 of 15 such trials hung: Pingora's fast shutdown left an
//! accept loop spinning on a runtime already gone, logging ~600,000 lines a
//! second with the socket still open.

use crate::common;
use std::time::{Duration, Instant};

use common::load::Load;
use common::{Backend, Gatehouse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Trials per situation.
const TRIALS: u64 = 17;
/// How long the process may take to exit after SIGINT.
const EXIT_WITHIN: Duration = Duration::from_secs(1);
/// More log lines than this after a trial means something logged in a loop.
const MAX_LOG_LINES: usize = 200;
/// Time allowed for set-up steps.
const WITHIN: Duration = Duration::from_secs(10);

/// The delay before the signal in trial `i`: spread over 0..300 ms.
fn moment(i: u64) -> Duration {
    Duration::from_millis((i * 53) % 300)
}

async fn start(api: &str, server: &str) -> Gatehouse {
    let gh = Gatehouse::builder(server)
        .append(common::HTTPS)
        .append(common::HTTP_PLAIN)
        .append(common::ADMIN)
        .append(common::API)
        .append("read_timeout = \"30s\"\n")
        .var("api", api)
        .start()
        .await;
    assert!(gh.wait_pid_file(gh.pid(), WITHIN).await, "no pid file");
    gh
}

/// Sends SIGINT and checks the exit: in time, status 0, the pid file gone,
/// and a log of bounded length with no accept loop in it.
async fn interrupt(gh: &Gatehouse, what: &str) {
    let sent = Instant::now();
    gh.signal("INT");
    let status = gh.wait_exit(EXIT_WITHIN).await;
    let log = gh.stderr();
    assert!(
        status.is_some(),
        "{what}: still running {EXIT_WITHIN:?} after SIGINT; log tail:\n{}",
        tail(&log)
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "{what}: exit {status:?}"
    );
    let lines = log.lines().count() + gh.stdout().lines().count();
    assert!(
        lines < MAX_LOG_LINES,
        "{what}: {lines} log lines; tail:\n{}",
        tail(&log)
    );
    assert!(!log.contains("Accept() failed"), "{what}: {}", tail(&log));
    assert!(
        gh.pid_file_pid().is_none(),
        "{what}: pid file left behind after {:?}",
        sent.elapsed()
    );
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_when_idle() {
    let api = Backend::named("api").await;
    for i in 0..TRIALS {
        let gh = start(&api.addr_str(), common::gatehouse::DEFAULT_SERVER).await;
        tokio::time::sleep(moment(i)).await;
        interrupt(&gh, &format!("idle #{i}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_after_reloads() {
    let api = Backend::named("api").await;
    for i in 0..TRIALS {
        let gh = start(&api.addr_str(), common::gatehouse::DEFAULT_SERVER).await;
        for n in 1..=1 + i % 3 {
            gh.signal("HUP");
            assert!(
                gh.wait_metric(
                    "gatehouse_config_reloads_total",
                    &[("result", "ok")],
                    n as f64,
                    WITHIN
                )
                .await,
                "reload {n} not applied"
            );
        }
        tokio::time::sleep(moment(i)).await;
        interrupt(&gh, &format!("after reloads #{i}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_with_idle_keepalive_connections() {
    let api = Backend::named("api").await;
    for i in 0..TRIALS {
        let gh = start(&api.addr_str(), common::gatehouse::DEFAULT_SERVER).await;
        let (h1, h2) = (gh.client_h1(), gh.client_h2());
        for client in [&h1, &h2] {
            let resp = client.get(gh.https_url("/api/x")).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.bytes().await.unwrap();
        }
        // And a plain connection that has sent half a head.
        let mut half = TcpStream::connect(gh.http_addr()).await.unwrap();
        half.write_all(b"GET /api/x HTTP/1.1\r\nHo").await.unwrap();
        tokio::time::sleep(moment(i)).await;
        interrupt(&gh, &format!("idle keep-alive #{i}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_under_load() {
    let api = Backend::named("api").await;
    for i in 0..TRIALS {
        let gh = start(&api.addr_str(), common::gatehouse::DEFAULT_SERVER).await;
        let clients = vec![
            ("h1".to_string(), gh.client_h1()),
            ("h2".to_string(), gh.client_h2()),
        ];
        let load = Load::start(clients, &[gh.https_url("/api/x")], Duration::from_millis(1));
        assert!(load.progressed(20, WITHIN).await, "no traffic");
        tokio::time::sleep(moment(i)).await;
        interrupt(&gh, &format!("under load #{i}")).await;
        // Requests cut by the exit fail, as they should on SIGINT.
        load.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_during_a_drain() {
    let slow = Backend::builder()
        .name("slow")
        .delay(Duration::from_secs(5))
        .start()
        .await;
    let server = common::gatehouse::DEFAULT_SERVER
        .replace(r#"grace_period = "1s""#, r#"grace_period = "30s""#)
        .replace("[server]", "[server]\ndrain_delay = \"{delay}\"");
    for i in 0..TRIALS {
        let delay = if i % 2 == 0 { "0s" } else { "2s" };
        let gh = Gatehouse::builder(&server)
            .append(common::HTTPS)
            .append(common::ADMIN)
            .append(common::API)
            .append("read_timeout = \"30s\"\n")
            .var("api", slow.addr_str())
            .var("delay", delay)
            .start()
            .await;
        assert!(gh.wait_pid_file(gh.pid(), WITHIN).await, "no pid file");
        // A request in flight keeps the drain going.
        let client = gh.client_h1();
        let url = gh.https_url("/api/slow");
        let pending = tokio::spawn(async move { client.get(url).send().await });
        assert!(
            common::eventually(WITHIN, || async { slow.count() > 0 }).await,
            "the slow request never reached the backend"
        );
        slow.clear();
        gh.signal("TERM");
        tokio::time::sleep(moment(i)).await;
        assert!(
            gh.try_wait().is_none(),
            "exited before SIGINT: the drain was not running"
        );
        interrupt(&gh, &format!("draining (drain_delay {delay}) #{i}")).await;
        pending.abort();
    }
}

/// A backend that answers every request with `101 Switching Protocols` and
/// then echoes what it receives: an upgraded (WebSocket-like) connection.
async fn upgrade_backend() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let answer = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
                if s.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                loop {
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&b[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_with_an_open_upgraded_connection() {
    let (api, backend) = upgrade_backend().await;
    for i in 0..TRIALS {
        let gh = start(&api, common::gatehouse::DEFAULT_SERVER).await;
        let mut ws = TcpStream::connect(gh.http_addr()).await.unwrap();
        ws.write_all(
            b"GET /api/ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        )
        .await
        .unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::time::timeout(WITHIN, ws.read(&mut b))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed before the 101");
            got.extend_from_slice(&b[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 101"), "{}", got.escape_ascii());
        ws.write_all(b"ping").await.unwrap();
        let mut echo = [0u8; 4];
        tokio::time::timeout(WITHIN, ws.read_exact(&mut echo))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&echo, b"ping");
        tokio::time::sleep(moment(i)).await;
        interrupt(&gh, &format!("open upgraded connection #{i}")).await;
    }
    backend.abort();
}
