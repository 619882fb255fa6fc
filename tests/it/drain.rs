//! Graceful stop on SIGTERM: `/readyz` turns 503 and the listeners keep
//! serving for `drain_delay`, then no new connection is accepted, requests in
//! flight finish, and the process exits 0 as soon as they have, long before
//! `grace_period` ends.

use crate::common;
use std::time::{Duration, Instant};

use common::{Backend, Gatehouse};

/// Time allowed for anything the tests wait for.
const WITHIN: Duration = Duration::from_secs(10);
/// How long the backend takes to answer the slow request.
const SLOW: Duration = Duration::from_millis(1500);

/// Grace 20 s, drain delay `{drain_delay}`.
const SERVER: &str = r#"
[server]
threads = 1
grace_period = "20s"
drain_delay = "{drain_delay}"
access_log = "off"
pid_file = "{dir}/gatehouse.pid"
upgrade_sock = "{dir}/upgrade.sock"
"#;

/// The pool's server may take 10 s to answer.
const SLOW_API: &str = "read_timeout = \"10s\"\n";

async fn start(api: &Backend, drain_delay: &str) -> Gatehouse {
    let gh = Gatehouse::builder(SERVER)
        .append(common::HTTPS)
        .append(common::ADMIN)
        .append(common::SITE)
        .append(common::API)
        .append(SLOW_API)
        .var("drain_delay", drain_delay)
        .backend("api", api)
        .file("site/index.html", "<!doctype html><p>home</p>")
        .start()
        .await;
    assert!(gh.wait_pid_file(gh.pid(), WITHIN).await, "no pid file");
    gh
}

async fn readyz(gh: &Gatehouse) -> Option<u16> {
    let resp = reqwest::get(gh.admin_url("/readyz")).await.ok()?;
    Some(resp.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_slow_request_finish_and_exits_early() {
    let api = Backend::builder().name("slow").delay(SLOW).start().await;
    let gh = start(&api, "1s").await;
    assert_eq!(readyz(&gh).await, Some(200));

    let client = gh.client_h1();
    let url = gh.https_url("/api/slow");
    let slow = tokio::spawn(async move {
        let resp = client.get(url).send().await.map_err(|e| format!("{e:?}"))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| format!("{e:?}"))?;
        Ok::<_, String>((status, body))
    });
    assert!(
        common::eventually(WITHIN, || async { api.count() == 1 }).await,
        "the slow request did not reach the backend"
    );

    let term = Instant::now();
    gh.signal("TERM");
    assert!(
        common::eventually(WITHIN, || async { readyz(&gh).await == Some(503) }).await,
        "/readyz does not report the drain"
    );
    // Still serving during drain_delay, on a new connection.
    let resp = gh.client().get(gh.https_url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "not serving during drain_delay");
    assert!(
        term.elapsed() < Duration::from_secs(1),
        "test too slow to see drain_delay"
    );

    // After drain_delay: no new connection is taken while the slow request runs.
    let refused = common::eventually(WITHIN, || async {
        tokio::net::TcpStream::connect(gh.https_addr())
            .await
            .is_err()
    })
    .await;
    assert!(refused, "still accepting after drain_delay");
    assert!(gh.try_wait().is_none(), "exited with a request in flight");

    let (status, body) = slow.await.unwrap().expect("the slow request failed");
    assert_eq!(status, 200);
    assert_eq!(common::server_of(&body), "slow");

    let exit = gh
        .wait_exit(Duration::from_secs(5).saturating_sub(term.elapsed()))
        .await
        .expect("still running 5 s after SIGTERM (grace period is 20 s)");
    assert!(exit.success(), "exit status {exit}");
    assert!(gh.stderr().contains("drained"));
    assert_eq!(gh.pid_file_pid(), None, "the pid file was left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_when_idle_exits_at_once() {
    let api = Backend::named("api").await;
    let gh = start(&api, "0s").await;
    // An idle keep-alive connection does not hold the exit up.
    let client = gh.client_h1();
    let resp = client.get(gh.https_url("/api/x")).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    let term = Instant::now();
    gh.signal("TERM");
    let exit = gh.wait_exit(WITHIN).await.expect("did not exit");
    assert!(exit.success(), "exit status {exit}");
    let took = term.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(gh.pid_file_pid(), None, "the pid file was left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_during_a_drain_stops_at_once() {
    let api = Backend::builder().name("slow").delay(WITHIN).start().await;
    let gh = start(&api, "0s").await;
    let client = gh.client_h1();
    let url = gh.https_url("/api/never");
    let _stuck = tokio::spawn(async move { client.get(url).send().await });
    assert!(common::eventually(WITHIN, || async { api.count() == 1 }).await);

    gh.signal("TERM");
    assert!(gh.wait_for_output("draining in-flight", WITHIN).await);
    let int = Instant::now();
    gh.signal("INT");
    let exit = gh.wait_exit(WITHIN).await.expect("did not exit");
    assert!(
        // Far below the 20 s grace period; loose enough for a loaded 2-core machine.
        int.elapsed() < Duration::from_secs(5),
        "took {:?}",
        int.elapsed()
    );
    assert!(exit.success(), "exit status {exit}");
}
