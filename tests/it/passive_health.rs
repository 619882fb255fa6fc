//! Passive health (outlier ejection) under load: a server that starts failing
//! real requests (503s, or refused connections) leaves rotation after
//! `consecutive_failures` of them, no GET fails while it is out, and it comes
//! back once `eject_for` is over and it answers again.

use crate::common;
use std::time::{Duration, Instant};

use common::load::Load;
use common::{Backend, Gatehouse, Mode};

/// Time allowed for anything the tests wait for.
const WITHIN: Duration = Duration::from_secs(10);
/// `consecutive_failures` of the pool.
const FAILURES: usize = 3;
/// `eject_for` of the pool.
const EJECT_FOR: Duration = Duration::from_secs(4);
/// Load clients, each one request at a time.
const CLIENTS: usize = 4;
/// Pause of each load task between two requests.
const PAUSE: Duration = Duration::from_millis(5);

const CONFIG: &str = r#"
[server]
threads = 1
access_log = "off"
pid_file = "{dir}/gatehouse.pid"
upgrade_sock = "{dir}/upgrade.sock"

[[route]]
prefix = "/api/"
upstream = "api"
strip_prefix = true

[upstream.api]
servers = ["{api1}", "{api2}"]

[upstream.api.passive]
consecutive_failures = 3
failure_statuses = [502, 503, 504]
eject_for = "4s"
max_ejected_percent = 50
"#;

async fn start(api1: &Backend, api2: &Backend) -> Gatehouse {
    Gatehouse::builder(CONFIG)
        .append(common::HTTPS)
        .append(common::ADMIN)
        .backend("api1", api1)
        .backend("api2", api2)
        .start()
        .await
}

fn load(gh: &Gatehouse) -> Load {
    let clients = (0..CLIENTS)
        .map(|i| (format!("h1#{i}"), gh.client_h1()))
        .collect();
    Load::start(clients, &[gh.https_url("/api/x")], PAUSE)
}

async fn ejections(gh: &Gatehouse, server: &Backend) -> f64 {
    gh.metric(
        "gatehouse_upstream_ejections_total",
        &[("upstream", "api"), ("server", &server.addr_str())],
    )
    .await
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_503_is_ejected_and_comes_back() {
    let api1 = Backend::named("api1").await;
    let api2 = Backend::named("api2").await;
    let gh = start(&api1, &api2).await;
    let labels = [("upstream", "api"), ("server", &*api2.addr_str())];

    let warmup = load(&gh);
    assert!(warmup.progressed(50, WITHIN).await);
    api2.clear();
    api2.set_mode(Mode::Status(503));
    assert!(
        common::eventually(WITHIN, || async { ejections(&gh, &api2).await >= 1.0 }).await,
        "api2 was never ejected\n{}",
        gh.stderr()
    );
    let report = warmup.stop().await;
    // A 503 is passed on, not retried: the failures before the ejection are
    // the ones that ejected it (plus what was in flight at that moment).
    assert!(
        report.failed as usize <= FAILURES + CLIENTS,
        "{} GETs failed before the ejection",
        report.failed
    );
    assert!(
        api2.count() <= FAILURES + CLIENTS,
        "api2 took {} requests before its ejection",
        api2.count()
    );
    assert_eq!(
        gh.metric("gatehouse_upstream_server_ejected", &labels)
            .await,
        Some(1.0)
    );
    assert!(gh.wait_for_output("ejected for 4s", WITHIN).await);

    // Out of rotation: no GET fails, none reaches it.
    api2.clear();
    let out = load(&gh);
    assert!(out.progressed(100, WITHIN).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = out.stop().await;
    report.assert_no_failures();
    assert_eq!(api2.count(), 0, "an ejected server got requests");

    // It answers again; it is back once the ejection time is over.
    api2.set_mode(Mode::Normal);
    let back = Instant::now();
    let again = load(&gh);
    assert!(
        common::eventually(EJECT_FOR + WITHIN, || async { api2.count() > 0 }).await,
        "api2 never came back"
    );
    assert!(
        common::eventually(WITHIN, || async {
            gh.metric("gatehouse_upstream_server_ejected", &labels)
                .await
                == Some(0.0)
        })
        .await,
        "the ejected gauge stayed at 1"
    );
    assert!(gh.wait_for_output("back in rotation", WITHIN).await);
    assert!(again.progressed(50, WITHIN).await);
    again.stop().await.assert_no_failures();
    assert!(back.elapsed() < EJECT_FOR + WITHIN);
    assert_eq!(ejections(&gh, &api2).await, 1.0);
    assert_eq!(ejections(&gh, &api1).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_eject_a_server_and_no_get_fails() {
    let api1 = Backend::named("api1").await;
    let api2 = Backend::named("api2").await;
    let gh = start(&api1, &api2).await;
    let traffic = load(&gh);
    assert!(traffic.progressed(50, WITHIN).await);
    // Connect failures are retried on the other server, and count.
    api2.stop().await;
    assert!(
        common::eventually(WITHIN, || async { ejections(&gh, &api2).await >= 1.0 }).await,
        "api2 was never ejected\n{}",
        gh.stderr()
    );
    assert!(traffic.progressed(100, WITHIN).await);
    traffic.stop().await.assert_no_failures();
    assert_eq!(ejections(&gh, &api1).await, 0.0);
}
