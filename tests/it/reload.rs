//! Config reloads under load: SIGHUP, `gatehouse reload` and `watch_config`
//! swap servers, health settings and certificates without failing a request;
//! a broken config is rejected and the running one keeps serving.

use crate::common;
use std::time::Duration;

use common::load::{seq_of, Load};
use common::{tls, Backend, Gatehouse};

const RELOADS: &str = "gatehouse_config_reloads_total";
const HEALTHY: &str = "gatehouse_upstream_server_healthy";
/// Time allowed for anything the tests wait for.
const WITHIN: Duration = Duration::from_secs(10);
/// Pause of each load task between two requests (leaves the 2 cores some slack).
const PAUSE: Duration = Duration::from_millis(2);

/// Checks every 100 ms; new servers join on their first pass.
const JOIN_AT_ONCE_HEALTH: &str = r#"
[upstream.api.health]
path = "/health"
interval = "100ms"
timeout = "500ms"
healthy_threshold = 1
unhealthy_threshold = 1
"#;

/// `/api/` to the pool `api` of `servers` (plus `extra` keys of the pool,
/// then `health`), `/` to a static site; HTTPS and admin listeners.
fn config(server: &str, servers: &[&Backend], extra: &str, health: &str) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|b| format!("\"{}\"", b.addr()))
        .collect();
    format!(
        r#"{server}
[https]
listen = ["127.0.0.1:{{https_port}}"]
self_signed = true
cert = "certs/server.crt"
key = "certs/server.key"

[admin]
listen = "127.0.0.1:{{admin_port}}"

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
servers = [{}]
{extra}
{health}
"#,
        list.join(", ")
    )
}

/// The harness's default `[server]` section with `watch_config` on.
fn watching_server() -> String {
    common::gatehouse::DEFAULT_SERVER.replace("[server]", "[server]\nwatch_config = true")
}

async fn start(text: &str) -> Gatehouse {
    let gh = Gatehouse::builder(text)
        .file("site/index.html", "<!doctype html><p>home</p>")
        .file("site/app.js", "console.log('app');")
        .start()
        .await;
    assert!(
        gh.wait_pid_file(gh.pid(), WITHIN).await,
        "pid file not written"
    );
    gh
}

/// `n1` HTTP/1.1 and `n2` HTTP/2 clients, one connection each.
fn clients(gh: &Gatehouse, n1: usize, n2: usize) -> Vec<(String, reqwest::Client)> {
    let h1 = (0..n1).map(|i| (format!("h1#{i}"), gh.client_h1()));
    let h2 = (0..n2).map(|i| (format!("h2#{i}"), gh.client_h2()));
    h1.chain(h2).collect()
}

fn urls(gh: &Gatehouse) -> Vec<String> {
    vec![gh.https_url("/api/x"), gh.https_url("/app.js")]
}

/// Waits until the `result` reload counter reaches `value`.
async fn reloaded(gh: &Gatehouse, result: &str, value: f64) -> bool {
    gh.wait_metric(RELOADS, &[("result", result)], value, WITHIN)
        .await
}

async fn reloads(gh: &Gatehouse, result: &str) -> f64 {
    gh.metric(RELOADS, &[("result", result)]).await.unwrap()
}

async fn health_gauge(gh: &Gatehouse, b: &Backend) -> Option<f64> {
    gh.metric(HEALTHY, &[("upstream", "api"), ("server", &b.addr_str())])
        .await
}

/// Load requests sent after `after` (by sequence number) among the first
/// `upto` requests `b` received.
fn sent_after(b: &Backend, after: u64, upto: usize) -> Vec<u64> {
    b.all_requests()[..upto]
        .iter()
        .filter_map(seq_of)
        .filter(|&s| s > after)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_alternating_servers_lose_no_request() {
    let b = [
        Backend::named("b1").await,
        Backend::named("b2").await,
        Backend::named("b3").await,
    ];
    let server = common::gatehouse::DEFAULT_SERVER;
    let first = config(server, &[&b[0], &b[1]], "", JOIN_AT_ONCE_HEALTH);
    let second = config(server, &[&b[1], &b[2]], "", JOIN_AT_ONCE_HEALTH);
    let gh = start(&first).await;
    let load = Load::start(clients(&gh, 8, 8), &urls(&gh), PAUSE);
    assert!(
        load.progressed(200, WITHIN).await,
        "no traffic before the reloads"
    );

    let base = reloads(&gh, "ok").await;
    // (removed server, last sequence number sent before the reload was seen
    // applied, how many requests it had received when the next reload began).
    let mut windows: Vec<(usize, u64, usize)> = Vec::new();
    let mut open: Option<(usize, u64)> = None;
    for i in 1..=20u32 {
        let (text, removed) = if i % 2 == 1 {
            (&second, 0)
        } else {
            (&first, 2)
        };
        if let Some((x, after)) = open.take() {
            windows.push((x, after, b[x].all_requests().len()));
        }
        gh.write_config(text);
        if i % 5 == 0 {
            let out = gh.run_cli(&["reload", "-c", "gatehouse.toml"]);
            assert!(out.status.success(), "gatehouse reload: {out:?}");
        } else {
            gh.signal("HUP");
        }
        assert!(
            reloaded(&gh, "ok", base + f64::from(i)).await,
            "reload {i} was not applied"
        );
        open = Some((removed, load.seq()));
        assert!(
            load.progressed(60, WITHIN).await,
            "no traffic after reload {i}"
        );
    }
    if let Some((x, after)) = open.take() {
        windows.push((x, after, b[x].all_requests().len()));
    }
    load.stop().await.assert_no_failures();

    for (x, after, upto) in windows {
        let late = sent_after(&b[x], after, upto);
        assert!(
            late.is_empty(),
            "{} got requests sent after the reload that removed it: {late:?}",
            b[x].name()
        );
    }
    for server in &b {
        assert!(server.count() > 0, "{} served nothing", server.name());
    }
    assert_eq!(reloads(&gh, "error").await, 0.0);
}

/// Checks every 2 s: long enough that a new server waiting for the checker's
/// next round would leave its pool empty for a while.
const SLOW_HEALTH: &str = r#"
[upstream.api.health]
path = "/health"
interval = "2s"
timeout = "500ms"
healthy_threshold = 2
unhealthy_threshold = 2
"#;

/// Blue/green in the config: every server of the pool replaced at once,
/// twenty times, under HTTP/1.1 and HTTP/2 load. New servers get their first
/// check before the new config takes effect, so the pool is never empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_whole_pool_swaps_lose_no_request() {
    let blue = [Backend::named("blue1").await, Backend::named("blue2").await];
    let green = Backend::named("green").await;
    let server = common::gatehouse::DEFAULT_SERVER;
    let blue_cfg = config(server, &[&blue[0], &blue[1]], "", SLOW_HEALTH);
    let green_cfg = config(server, &[&green], "", SLOW_HEALTH);
    let gh = start(&blue_cfg).await;
    let load = Load::start(clients(&gh, 8, 8), &urls(&gh), PAUSE);
    assert!(
        load.progressed(200, WITHIN).await,
        "no traffic before the swaps"
    );
    let base = reloads(&gh, "ok").await;
    for i in 1..=20u32 {
        gh.write_config(if i % 2 == 1 { &green_cfg } else { &blue_cfg });
        gh.signal("HUP");
        assert!(
            reloaded(&gh, "ok", base + f64::from(i)).await,
            "swap {i} was not applied"
        );
        assert!(
            load.progressed(40, WITHIN).await,
            "no traffic after swap {i}"
        );
    }
    load.stop().await.assert_no_failures();
    for b in blue.iter().chain([&green]) {
        assert!(b.count() > 0, "{} served nothing", b.name());
    }
}

/// A swap to servers that are all down answers 503 at once (not after a
/// hang), and a swap back serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_to_servers_that_are_down_gives_503_at_once() {
    let up = Backend::named("up").await;
    let down = [Backend::named("down1").await, Backend::named("down2").await];
    for b in &down {
        b.stop().await;
    }
    let server = common::gatehouse::DEFAULT_SERVER;
    let gh = start(&config(server, &[&up], "", SLOW_HEALTH)).await;
    let client = gh.client_h1();
    let get = |client: reqwest::Client, url: String| async move {
        let started = std::time::Instant::now();
        let resp = client.get(url).send().await.unwrap();
        (resp.status().as_u16(), started.elapsed())
    };
    assert_eq!(get(client.clone(), gh.https_url("/api/x")).await.0, 200);
    let base = reloads(&gh, "ok").await;
    gh.write_config(&config(server, &[&down[0], &down[1]], "", SLOW_HEALTH));
    gh.signal("HUP");
    assert!(reloaded(&gh, "ok", base + 1.0).await, "reload not applied");
    for _ in 0..5 {
        let (status, took) = get(client.clone(), gh.https_url("/api/x")).await;
        assert_eq!(status, 503);
        assert!(took < Duration::from_secs(2), "503 took {took:?}");
    }
    gh.write_config(&config(server, &[&up], "", SLOW_HEALTH));
    gh.signal("HUP");
    assert!(reloaded(&gh, "ok", base + 2.0).await, "reload not applied");
    assert_eq!(get(client, gh.https_url("/api/x")).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_state_survives_a_reload() {
    let a = Backend::named("a").await;
    let b = Backend::named("b").await;
    // Out after one failed check; back only after 1000 passes, whereas a
    // server new to the pool joins on its first pass.
    let health =
        JOIN_AT_ONCE_HEALTH.replace("\nhealthy_threshold = 1\n", "\nhealthy_threshold = 1000\n");
    let server = common::gatehouse::DEFAULT_SERVER;
    let gh = start(&config(server, &[&a, &b], "", &health)).await;
    let load = Load::start(clients(&gh, 2, 2), &[gh.https_url("/api/x")], PAUSE);
    assert!(load.progressed(50, WITHIN).await);

    b.set_healthy(false);
    assert!(
        common::eventually(WITHIN, || async {
            health_gauge(&gh, &b).await == Some(0.0)
        })
        .await,
        "b was not taken out"
    );
    b.set_healthy(true);

    let base = reloads(&gh, "ok").await;
    gh.write_config(&config(server, &[&a, &b], "retries = 1", &health));
    gh.signal("HUP");
    assert!(reloaded(&gh, "ok", base + 1.0).await);
    let after = load.seq();
    // Enough passing checks of b after the reload that a new server would be in.
    let checks = b.count_path("/health");
    assert!(
        common::eventually(WITHIN, || async { b.count_path("/health") >= checks + 3 }).await,
        "b is not checked"
    );
    assert!(load.progressed(50, WITHIN).await);
    let upto = b.all_requests().len();
    load.stop().await.assert_no_failures();

    let late = sent_after(&b, after, upto);
    assert!(
        late.is_empty(),
        "b (unhealthy, kept by the reload) got requests: {late:?}"
    );
    assert_eq!(health_gauge(&gh, &b).await, Some(0.0));
    assert_eq!(health_gauge(&gh, &a).await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_the_certificate() {
    let api = Backend::named("api").await;
    let server = common::gatehouse::DEFAULT_SERVER;
    let gh = start(&config(server, &[&api], "", "")).await;
    let old_der = tls::handshake(gh.https_addr(), "localhost", &["http/1.1"])
        .await
        .unwrap()
        .cert_der;

    // The next certificate, made as `gatehouse cert` makes it.
    let out = gh.run_cli(&[
        "cert",
        "--host",
        "localhost",
        "--host",
        "127.0.0.1",
        "--out",
        "certs-next",
    ]);
    assert!(out.status.success(), "gatehouse cert: {out:?}");
    let next_pem = std::fs::read(gh.dir().join("certs-next/server.crt")).unwrap();
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let next_der = CertificateDer::pem_slice_iter(&next_pem)
        .next()
        .unwrap()
        .unwrap()
        .to_vec();
    assert_ne!(old_der, next_der);

    // Clients trust both, so a reconnect after the swap would pass too.
    let trusting = |h2: bool| {
        let b = gh
            .client_builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&next_pem).unwrap());
        if h2 {
            b.http2_prior_knowledge()
        } else {
            b.http1_only()
        }
        .build()
        .unwrap()
    };
    let mut load_clients = Vec::new();
    for i in 0..4 {
        load_clients.push((format!("h1#{i}"), trusting(false)));
        load_clients.push((format!("h2#{i}"), trusting(true)));
    }
    let load = Load::start(load_clients, &urls(&gh), PAUSE);
    // A keep-alive connection made with the old certificate.
    let keep_alive = b"GET /app.js HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let (mut old_conn, info) = tls::connect(gh.https_addr(), "localhost", &["http/1.1"])
        .await
        .unwrap();
    assert_eq!(info.cert_der, old_der);
    let resp = common::raw::exchange(&mut old_conn, keep_alive)
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert!(load.progressed(100, WITHIN).await);

    for name in ["server.key", "server.crt"] {
        std::fs::copy(
            gh.dir().join("certs-next").join(name),
            gh.dir().join("certs").join(name),
        )
        .unwrap();
    }
    let base = reloads(&gh, "ok").await;
    gh.signal("HUP");
    assert!(reloaded(&gh, "ok", base + 1.0).await);

    let fresh = tls::handshake(gh.https_addr(), "localhost", &["h2", "http/1.1"])
        .await
        .unwrap();
    assert_eq!(
        fresh.cert_der, next_der,
        "a new handshake gets the new certificate"
    );
    let resp = common::raw::exchange(&mut old_conn, keep_alive)
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "the old connection keeps working");
    assert!(load.progressed(100, WITHIN).await);
    load.stop().await.assert_no_failures();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_is_rejected_and_the_old_one_serves() {
    let b1 = Backend::named("b1").await;
    let b2 = Backend::named("b2").await;
    let server = common::gatehouse::DEFAULT_SERVER;
    let gh = start(&config(server, &[&b1], "", "")).await;
    let load = Load::start(clients(&gh, 4, 4), &urls(&gh), PAUSE);
    assert!(load.progressed(100, WITHIN).await);
    let ok = reloads(&gh, "ok").await;
    let errors = reloads(&gh, "error").await;

    // Moves the pool to b2, but with a bad duration.
    let broken = config(server, &[&b2], "connect_timeout = \"soon\"", "");
    let line = broken
        .lines()
        .position(|l| l.starts_with("connect_timeout"))
        .unwrap()
        + 1;
    gh.write_config(&broken);
    gh.signal("HUP");
    assert!(
        reloaded(&gh, "error", errors + 1.0).await,
        "the error was not counted"
    );
    assert!(
        gh.wait_for_output(&format!("gatehouse.toml:{line}:"), WITHIN)
            .await,
        "the log does not name the line"
    );
    assert!(gh.stderr().contains("upstream.api.connect_timeout"));
    assert!(load.progressed(200, WITHIN).await);
    assert_eq!(b2.count(), 0, "the rejected config was applied");

    // `gatehouse reload` checks first and does not signal.
    let out = gh.run_cli(&["reload", "-c", "gatehouse.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not signalled"));

    // A good config afterwards applies; a changed admin address is reported
    // as needing an upgrade (the admin listener stays where it is).
    let fixed =
        config(server, &[&b2], "", "").replace("{admin_port}", &common::free_port().to_string());
    gh.write_config(&fixed);
    gh.signal("HUP");
    assert!(reloaded(&gh, "ok", ok + 1.0).await);
    assert!(gh.stderr().contains("admin.listen changed"), "not reported");
    let before = b2.count();
    assert!(load.progressed(100, WITHIN).await);
    assert!(b2.count() > before, "the fixed config does not serve");
    load.stop().await.assert_no_failures();
    assert_eq!(reloads(&gh, "error").await, errors + 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_config_reloads_when_the_file_changes() {
    let b1 = Backend::named("b1").await;
    let b2 = Backend::named("b2").await;
    let server = watching_server();
    let gh = start(&config(&server, &[&b1], "", "")).await;
    let client = gh.client();
    let served_by = || async {
        let resp = client.get(gh.https_url("/api/x")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        common::server_of(&resp.text().await.unwrap())
    };
    assert_eq!(served_by().await, "b1");
    let ok = reloads(&gh, "ok").await;
    let errors = reloads(&gh, "error").await;

    // Replaced by rename, as editors and config management do.
    gh.write_config(&config(&server, &[&b2], "", ""));
    assert!(
        reloaded(&gh, "ok", ok + 1.0).await,
        "the change was not picked up"
    );
    assert_eq!(served_by().await, "b2");

    // Written in place, broken: rejected once, not retried on every look.
    std::fs::write(
        gh.config_path(),
        config(&server, &[&b1], "retries = -1", ""),
    )
    .unwrap();
    assert!(reloaded(&gh, "error", errors + 1.0).await);
    assert_eq!(served_by().await, "b2");

    gh.write_config(&config(&server, &[&b1], "", ""));
    assert!(reloaded(&gh, "ok", ok + 2.0).await);
    assert_eq!(served_by().await, "b1");
    assert_eq!(reloads(&gh, "error").await, errors + 1.0);
    assert_eq!(
        reloads(&gh, "ok").await,
        ok + 2.0,
        "no reload without a change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_server_finishes_its_requests() {
    let slow = Backend::builder()
        .name("slow")
        .delay(Duration::from_millis(1000))
        .start()
        .await;
    let fast = Backend::named("fast").await;
    let server = common::gatehouse::DEFAULT_SERVER;
    let gh = start(&config(server, &[&slow], "", "")).await;
    let client = gh.client();
    let url = gh.https_url("/api/in-flight");
    let in_flight = tokio::spawn(async move {
        let resp = client.get(url).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    });
    assert!(common::eventually(WITHIN, || async { slow.count() == 1 }).await);

    let base = reloads(&gh, "ok").await;
    gh.write_config(&config(server, &[&fast], "", ""));
    gh.signal("HUP");
    assert!(reloaded(&gh, "ok", base + 1.0).await);
    assert!(
        !in_flight.is_finished(),
        "the test is too slow to reload mid-request"
    );
    let resp = gh
        .client()
        .get(gh.https_url("/api/next"))
        .send()
        .await
        .unwrap();
    assert_eq!(common::server_of(&resp.text().await.unwrap()), "fast");

    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(common::server_of(&body), "slow");
    assert_eq!(slow.count(), 1);
}
