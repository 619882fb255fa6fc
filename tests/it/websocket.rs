//! WebSocket through Gatehouse: the upgrade (101) over plain HTTP/1.1 and
//! TLS, messages and close frames both ways, an idle connection governed by
//! `websocket_idle_timeout` instead of the request timeouts, and an open
//! WebSocket through a drain (SIGTERM) and a reload (SIGHUP).

use crate::common;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use common::websocket::{connect, round_trip, wait_closed, WsBackend};
use common::Gatehouse;

/// Time allowed for anything the tests wait for.
const WITHIN: Duration = Duration::from_secs(10);
/// `websocket_idle_timeout` of the pool.
const WS_IDLE: Duration = Duration::from_secs(10);
/// Longer than the pool's `read_timeout` (1 s) and the keep-alive (1 s).
const IDLE_A_WHILE: Duration = Duration::from_secs(3);

const SERVER: &str = r#"
[server]
threads = 1
grace_period = "{grace}"
keepalive_timeout = "1s"
access_log = "off"
pid_file = "{dir}/gatehouse.pid"
upgrade_sock = "{dir}/upgrade.sock"
"#;

/// Appended to `[upstream.api]`: request timeouts far below the idle timeout.
const TIMEOUTS: &str = r#"
read_timeout = "1s"
write_timeout = "1s"
websocket_idle_timeout = "10s"
"#;

async fn start(ws: &WsBackend, grace: &str) -> Gatehouse {
    Gatehouse::builder(SERVER)
        .append(common::HTTPS)
        .append(common::HTTP_PLAIN)
        .append(common::ADMIN)
        .append(common::API)
        .append(TIMEOUTS)
        .var("api", ws.addr_str())
        .var("grace", grace)
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_and_close_frames_pass_both_ways_over_h1_and_tls() {
    let backend = WsBackend::start().await;
    let gh = start(&backend, "5s").await;
    for tls in [false, true] {
        // The client closes: its close frame reaches the server, whose
        // answering close frame comes back.
        let mut ws = connect(&gh, "/api/chat", tls).await;
        round_trip(&mut ws, "hello").await;
        round_trip(&mut ws, &"x".repeat(100_000)).await;
        ws.send(Message::binary(vec![0u8, 1, 2, 255]))
            .await
            .unwrap();
        let closes = backend.closes();
        ws.send(Message::Close(None)).await.unwrap();
        let reply = wait_closed(&mut ws, WITHIN).await;
        assert!(
            matches!(reply, Some(Some(_)) | Some(None)),
            "no close reply (tls: {tls})"
        );
        assert!(
            common::eventually(WITHIN, || async { backend.closes() > closes }).await,
            "the server saw no close frame (tls: {tls})"
        );

        // The server closes: its frame (code and reason) reaches the client.
        let mut ws = connect(&gh, "/api/chat", tls).await;
        round_trip(&mut ws, "before").await;
        ws.send(Message::text("close-me")).await.unwrap();
        let frame = wait_closed(&mut ws, WITHIN)
            .await
            .expect("connection not closed")
            .expect("no close frame from the server");
        assert_eq!(frame.code, CloseCode::Normal);
        assert_eq!(frame.reason.as_str(), "bye");
    }
    assert_eq!(backend.upgrades(), 4);
    // Each WebSocket is one request, answered 101, once it has ended.
    assert!(
        gh.wait_metric(
            "gatehouse_requests_total",
            &[("route", "/api/"), ("status", "101")],
            4.0,
            WITHIN,
        )
        .await,
        "the WebSockets were not counted as 101s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_websocket_outlives_the_request_timeouts_and_ends_at_its_idle_timeout() {
    let backend = WsBackend::start().await;
    let gh = start(&backend, "5s").await;
    let idle_then_end = |tls: bool| {
        let gh = &gh;
        async move {
            let mut ws = connect(gh, "/api/idle", tls).await;
            round_trip(&mut ws, "first").await;
            tokio::time::sleep(IDLE_A_WHILE).await;
            round_trip(&mut ws, "after 3 s idle").await;
            let last = Instant::now();
            let ended = wait_closed(&mut ws, WS_IDLE + WITHIN).await;
            let idle = last.elapsed();
            assert!(ended.is_some(), "still open {idle:?} after (tls: {tls})");
            assert!(
                idle >= WS_IDLE - Duration::from_millis(500),
                "cut after {idle:?} idle, before websocket_idle_timeout (tls: {tls})"
            );
        }
    };
    tokio::join!(idle_then_end(false), idle_then_end(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_keeps_an_open_websocket_until_the_grace_period_ends() {
    let backend = WsBackend::start().await;
    let gh = start(&backend, "4s").await;
    let mut ws = connect(&gh, "/api/drain", true).await;
    round_trip(&mut ws, "before").await;
    let term = Instant::now();
    gh.signal("TERM");
    tokio::time::sleep(Duration::from_secs(1)).await;
    round_trip(&mut ws, "while draining").await;
    assert!(gh.try_wait().is_none(), "exited with a WebSocket in flight");
    let ended = wait_closed(&mut ws, WITHIN).await;
    assert!(ended.is_some(), "the WebSocket outlived the grace period");
    let exit = gh.wait_exit(WITHIN).await.expect("did not exit");
    assert!(exit.success(), "{exit:?}");
    assert!(
        term.elapsed() >= Duration::from_millis(3500),
        "exited after {:?}, before the 4 s grace period",
        term.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_an_open_websocket() {
    let backend = WsBackend::start().await;
    let gh = start(&backend, "5s").await;
    let mut ws = connect(&gh, "/api/reload", false).await;
    round_trip(&mut ws, "before").await;
    let base = gh
        .metric("gatehouse_config_reloads_total", &[("result", "ok")])
        .await
        .unwrap_or(0.0);
    gh.write_config(&format!(
        "{}\n[headers]\nx-reloaded = \"yes\"\n",
        gh.config_text()
    ));
    gh.signal("HUP");
    assert!(
        gh.wait_metric(
            "gatehouse_config_reloads_total",
            &[("result", "ok")],
            base + 1.0,
            WITHIN
        )
        .await,
        "the reload was not applied\n{}",
        gh.stderr()
    );
    round_trip(&mut ws, "after the reload").await;
    let mut fresh = connect(&gh, "/api/reload", true).await;
    round_trip(&mut fresh, "a new one").await;
    round_trip(&mut ws, "and the old one again").await;
}

/// Pingora reads a client with a 60 s timeout of its own; a WebSocket idle
/// longer than that must still work. Slow (65 s): run with `--ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "idles 65 s"]
async fn an_idle_websocket_outlives_pingoras_60_s_client_read_timeout() {
    let backend = WsBackend::start().await;
    let gh = Gatehouse::builder(SERVER)
        .append(common::HTTP_PLAIN)
        .append(common::ADMIN)
        .append(common::API)
        .append("read_timeout = \"1s\"\nwebsocket_idle_timeout = \"90s\"\n")
        .var("api", backend.addr_str())
        .var("grace", "5s")
        .start()
        .await;
    let mut ws = connect(&gh, "/api/long", false).await;
    round_trip(&mut ws, "first").await;
    tokio::time::sleep(Duration::from_secs(65)).await;
    round_trip(&mut ws, "after 65 s idle").await;
}
