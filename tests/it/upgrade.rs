//! Zero-downtime binary upgrade: a second instance started with `run -u`
//! takes the listening sockets over when the first gets SIGQUIT; clients that
//! keep sending see no failed request, the old process drains and exits, and
//! the pid file ends up naming the new one.

use crate::common;
use std::time::{Duration, Instant};

use common::gatehouse::UPGRADE_SOCK;
use common::load::Load;
use common::{Backend, Gatehouse};

/// Time allowed for anything the tests wait for.
const WITHIN: Duration = Duration::from_secs(10);
/// Pingora keeps the old instance accepting this long after the handover.
const HANDOVER: Duration = Duration::from_secs(5);
/// Pause of each load task between two requests.
const PAUSE: Duration = Duration::from_millis(2);

const SERVER: &str = r#"
[server]
threads = 1
grace_period = "20s"
access_log = "off"
pid_file = "{dir}/gatehouse.pid"
upgrade_sock = "{dir}/upgrade.sock"
"#;

const ROUTES: &str = r#"
[[route]]
prefix = "/api/"
upstream = "api"
strip_prefix = true

[[route]]
prefix = "/"
static = "site"

[static.site]
root = "site"

[upstream.api]
servers = ["{api1}", "{api2}"]
"#;

async fn start(api1: &Backend, api2: &Backend) -> Gatehouse {
    let gh = Gatehouse::builder(SERVER)
        .append(common::HTTPS)
        .append(common::ADMIN)
        .append(ROUTES)
        .backend("api1", api1)
        .backend("api2", api2)
        .file("site/index.html", "<!doctype html><p>home</p>")
        .file("site/app.js", "console.log('app');")
        .start()
        .await;
    assert!(gh.wait_pid_file(gh.pid(), WITHIN).await, "no pid file");
    gh
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_under_load_loses_no_request() {
    let api1 = Backend::named("api1").await;
    let api2 = Backend::named("api2").await;
    let gh = start(&api1, &api2).await;
    let mut clients = Vec::new();
    for i in 0..8 {
        clients.push((format!("h1#{i}"), gh.client_h1()));
        clients.push((format!("h2#{i}"), gh.client_h2()));
    }
    let urls = [gh.https_url("/api/x"), gh.https_url("/app.js")];
    let load = Load::start(clients, &urls, PAUSE);
    assert!(load.progressed(200, WITHIN).await);

    let next = gh.start_successor();
    let sock = gh.dir().join(UPGRADE_SOCK);
    assert!(
        common::eventually(WITHIN, || async { sock.exists() }).await,
        "the new instance does not wait on the upgrade socket\n{}",
        next.stderr()
    );
    let quit = Instant::now();
    gh.signal("QUIT");
    assert!(
        gh.wait_pid_file(next.pid(), WITHIN).await,
        "the new instance did not take over\n{}",
        next.stderr()
    );
    let status = gh
        .wait_exit(HANDOVER + WITHIN)
        .await
        .expect("the old instance did not exit");
    assert!(status.success(), "old instance: {status}");
    let took = quit.elapsed();
    assert!(
        took < HANDOVER + Duration::from_secs(3),
        "the old instance took {took:?} to drain"
    );
    assert!(gh.stderr().contains("drained"));

    // Only the new instance is left; the clients reconnected to it.
    let served = api1.count() + api2.count();
    assert!(
        load.progressed(300, WITHIN).await,
        "no traffic after the upgrade"
    );
    assert!(api1.count() + api2.count() > served);
    let report = load.stop().await;
    report.assert_no_failures();

    assert_eq!(
        gh.pid_file_pid(),
        Some(next.pid()),
        "the old instance removed the new pid file"
    );
    let ready = reqwest::get(gh.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    assert!(next.try_wait().is_none(), "the new instance exited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_without_a_new_instance_keeps_serving() {
    let api1 = Backend::named("api1").await;
    let api2 = Backend::named("api2").await;
    let gh = start(&api1, &api2).await;
    // What a `run -u` killed while it waited leaves behind: a socket file
    // nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(gh.dir().join(UPGRADE_SOCK)).unwrap());
    gh.signal("QUIT");
    assert!(
        gh.wait_for_output("SIGQUIT ignored", WITHIN).await,
        "the refused upgrade is not logged"
    );
    assert!(gh.try_wait().is_none(), "it exited");
    let resp = gh
        .client()
        .get(gh.https_url("/api/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ready = reqwest::get(gh.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
}
