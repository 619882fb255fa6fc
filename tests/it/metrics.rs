//! Prometheus metrics and the admin listener, scraped over HTTP from the real
//! binary and parsed as Prometheus text: exact counts per route and status,
//! upstream counts per server, histograms, the health gauge, rate limits,
//! reloads, and admin paths kept off the public listeners.

use crate::common;
use std::time::Duration;

use common::{Backend, Gatehouse};
use prometheus_parse::{Sample, Scrape, Value};

/// How long async effects (logging after the response, health flips,
/// reloads) may take to show in a scrape.
const SETTLE: Duration = Duration::from_secs(10);

/// SPEC.md's histogram buckets: 0.5 ms to 30 s, then `+Inf`.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

const INDEX: &str = "<!doctype html><title>site</title>";
const APP_JS: &str = "console.log('metrics');\n";

/// `/api/` to the pool `api` (servers `{b1}`, `{b2}`), `/` to a static site.
const SITE_AND_API: &str = r#"
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
servers = ["{b1}", "{b2}"]
"#;

/// HTTPS, the plain listener and the admin listener, with `config` and the site files.
fn builder(config: &str) -> common::gatehouse::GatehouseBuilder {
    Gatehouse::builder(common::HTTPS)
        .append(common::HTTP_PLAIN)
        .append(common::ADMIN)
        .append(config)
        .file("site/index.html", INDEX)
        .file("site/app.js", APP_JS)
}

/// One parsed scrape of `/metrics`.
struct Metrics {
    samples: Vec<Sample>,
}

impl Metrics {
    /// Samples of `name` whose labels include every pair of `labels`.
    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
    }

    /// The sum of the matching counters or gauges; 0 when there are none.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels)
            .map(|s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                other => panic!("{name} is not a counter or gauge: {other:?}"),
            })
            .sum()
    }

    /// The gauge of exactly one sample, `None` when it is absent.
    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self.matching(name, labels).collect();
        assert!(found.len() <= 1, "{name} {labels:?}: {found:?}");
        found.first().map(|s| match &s.value {
            Value::Gauge(v) => *v,
            other => panic!("{name} is not a gauge: {other:?}"),
        })
    }

    /// The total count (`+Inf` bucket) of the matching histograms.
    fn histogram_count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels)
            .map(|s| match &s.value {
                Value::Histogram(buckets) => buckets
                    .iter()
                    .find(|b| b.less_than.is_infinite())
                    .map_or(0.0, |b| b.count),
                other => panic!("{name} is not a histogram: {other:?}"),
            })
            .sum()
    }
}

async fn scrape(gh: &Gatehouse) -> Metrics {
    let resp = gh
        .client()
        .get(gh.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = resp.text().await.unwrap();
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    Metrics {
        samples: parsed.samples,
    }
}

/// Scrapes until `done` holds or [`SETTLE`] has passed; returns the last scrape
/// (the caller asserts on it, so a timeout shows the values seen).
async fn settle(gh: &Gatehouse, done: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let m = scrape(gh).await;
        if done(&m) || std::time::Instant::now() >= deadline {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn get_status(client: &reqwest::Client, url: &str) -> u16 {
    client.get(url).send().await.unwrap().status().as_u16()
}

const REQUESTS: &str = "gatehouse_requests_total";
const DURATION: &str = "gatehouse_request_duration_seconds";
const UPSTREAM_REQUESTS: &str = "gatehouse_upstream_requests_total";
const UPSTREAM_DURATION: &str = "gatehouse_upstream_duration_seconds";
const HEALTHY: &str = "gatehouse_upstream_server_healthy";
const RATE_LIMITED: &str = "gatehouse_rate_limited_total";
const RELOADS: &str = "gatehouse_config_reloads_total";
const LAST_RELOAD: &str = "gatehouse_config_last_reload_success_timestamp_seconds";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_by_route_method_and_status() {
    let b1 = Backend::named("b1").await;
    let b2 = Backend::named("b2").await;
    let gh = builder(SITE_AND_API)
        .backend("b1", &b1)
        .backend("b2", &b2)
        .start()
        .await;
    let client = gh.client();
    let before = scrape(&gh).await;

    for path in ["/", "/", "/", "/", "/app.js", "/app.js", "/app.js"] {
        assert_eq!(
            get_status(&client, &gh.https_url(path)).await,
            200,
            "{path}"
        );
    }
    for path in ["/missing.js", "/nope.css", "/missing.js"] {
        assert_eq!(
            get_status(&client, &gh.https_url(path)).await,
            404,
            "{path}"
        );
    }
    for i in 0..5 {
        let url = gh.https_url(&format!("/api/item/{i}?q={i}"));
        assert_eq!(get_status(&client, &url).await, 200);
    }
    let head = client.head(gh.https_url("/")).send().await.unwrap();
    assert_eq!(head.status(), 200);

    let delta = |m: &Metrics, labels: &[(&str, &str)]| {
        m.value(REQUESTS, labels) - before.value(REQUESTS, labels)
    };
    let static_ok = [("route", "/"), ("method", "GET"), ("status", "200")];
    let static_404 = [("route", "/"), ("method", "GET"), ("status", "404")];
    let static_head = [("route", "/"), ("method", "HEAD"), ("status", "200")];
    let api_ok = [("route", "/api/"), ("method", "GET"), ("status", "200")];
    let m = settle(&gh, |m| {
        delta(m, &static_ok) == 7.0
            && delta(m, &static_404) == 3.0
            && delta(m, &static_head) == 1.0
            && delta(m, &api_ok) == 5.0
            && m.histogram_count(UPSTREAM_DURATION, &[]) == 5.0
    })
    .await;
    assert_eq!(delta(&m, &static_ok), 7.0);
    assert_eq!(delta(&m, &static_404), 3.0);
    assert_eq!(delta(&m, &static_head), 1.0);
    assert_eq!(delta(&m, &api_ok), 5.0);
    assert_eq!(
        m.value(REQUESTS, &[]) - before.value(REQUESTS, &[]),
        16.0,
        "nothing else was counted"
    );

    // Durations: one observation per request, by route.
    let count_delta = |name: &str, labels: &[(&str, &str)]| {
        m.histogram_count(name, labels) - before.histogram_count(name, labels)
    };
    assert_eq!(count_delta(DURATION, &[("route", "/")]), 11.0);
    assert_eq!(count_delta(DURATION, &[("route", "/api/")]), 5.0);
    assert_eq!(count_delta(UPSTREAM_DURATION, &[("upstream", "api")]), 5.0);
    for s in m.matching(DURATION, &[]) {
        let Value::Histogram(buckets) = &s.value else {
            panic!("{s:?}")
        };
        let bounds: Vec<f64> = buckets.iter().map(|b| b.less_than).collect();
        let mut expected = BUCKETS.to_vec();
        expected.push(f64::INFINITY);
        assert_eq!(bounds, expected, "buckets of {:?}", s.labels);
    }

    // Upstream responses per configured server, matching what each backend saw.
    assert_eq!(b1.count() + b2.count(), 5);
    assert!(b1.count() >= 2 && b2.count() >= 2, "round robin");
    for b in [&b1, &b2] {
        let server = b.addr_str();
        let labels = [("upstream", "api"), ("server", &server), ("status", "200")];
        assert_eq!(
            m.value(UPSTREAM_REQUESTS, &labels),
            b.count() as f64,
            "{}",
            b.name()
        );
    }
    assert_eq!(m.value(UPSTREAM_REQUESTS, &[]), 5.0);

    // Label values are bounded: no raw path, no query, ever.
    for s in &m.samples {
        for (k, v) in s.labels.iter() {
            assert!(
                !v.contains("/api/item") && !v.contains("app.js") && !v.contains('?'),
                "{} has {k}={v}",
                s.metric
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_matching_no_route_share_one_label() {
    let b1 = Backend::named("b1").await;
    let gh = builder(
        r#"
[[route]]
prefix = "/api/"
upstream = "api"

[upstream.api]
servers = ["{b1}"]
"#,
    )
    .backend("b1", &b1)
    .start()
    .await;
    let client = gh.client();
    for path in ["/nothing/here", "/other", "/x?y=1"] {
        assert_eq!(
            get_status(&client, &gh.https_url(path)).await,
            404,
            "{path}"
        );
    }
    let labels = [("route", "none"), ("status", "404")];
    let m = settle(&gh, |m| m.value(REQUESTS, &labels) == 3.0).await;
    assert_eq!(m.value(REQUESTS, &labels), 3.0);
    assert_eq!(m.value(REQUESTS, &[]), 3.0);
    assert_eq!(m.histogram_count(DURATION, &[("route", "none")]), 3.0);
    for s in &m.samples {
        for v in s.labels.values() {
            assert!(!v.contains("nothing") && !v.contains("other"), "{s:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_gauge_follows_the_health_checker() {
    let b1 = Backend::named("b1").await;
    let b2 = Backend::named("b2").await;
    let gh = builder(&format!(
        "{SITE_AND_API}\n{}",
        r#"
[upstream.api.health]
path = "/health"
interval = "100ms"
timeout = "500ms"
healthy_threshold = 2
unhealthy_threshold = 1
"#
    ))
    .backend("b1", &b1)
    .backend("b2", &b2)
    .start()
    .await;
    let (s1, s2) = (b1.addr_str(), b2.addr_str());
    let gauge =
        |m: &Metrics, server: &str| m.gauge(HEALTHY, &[("upstream", "api"), ("server", server)]);

    let m = scrape(&gh).await;
    assert_eq!(gauge(&m, &s1), Some(1.0));
    assert_eq!(gauge(&m, &s2), Some(1.0));

    b1.set_healthy(false);
    let m = settle(&gh, |m| gauge(m, &s1) == Some(0.0)).await;
    assert_eq!(gauge(&m, &s1), Some(0.0), "b1 failed its checks");
    assert_eq!(gauge(&m, &s2), Some(1.0), "b2 is untouched");

    b1.set_healthy(true);
    let m = settle(&gh, |m| gauge(m, &s1) == Some(1.0)).await;
    assert_eq!(gauge(&m, &s1), Some(1.0), "b1 passed its checks again");
    assert_eq!(gauge(&m, &s2), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_refusals_are_counted_by_limit() {
    let b1 = Backend::named("b1").await;
    let b2 = Backend::named("b2").await;
    let config = SITE_AND_API.replace(
        "strip_prefix = true",
        "strip_prefix = true\nrate_limit = \"x\"",
    );
    let gh = builder(&format!(
        "{config}\n[rate_limit.x]\nkey = \"client_ip\"\nrate = 1\nburst = 2\n"
    ))
    .backend("b1", &b1)
    .backend("b2", &b2)
    .start()
    .await;
    let client = gh.client();
    let before = scrape(&gh).await;

    let mut refused = 0;
    for _ in 0..8 {
        match get_status(&client, &gh.https_url("/api/limited")).await {
            429 => refused += 1,
            200 => {}
            other => panic!("status {other}"),
        }
    }
    // Unlimited route, for contrast.
    assert_eq!(get_status(&client, &gh.https_url("/")).await, 200);
    assert!(
        refused >= 3,
        "burst 2 at 1/s refuses most of 8 quick requests: {refused}"
    );

    let limited = [("limit", "x")];
    let refusals = [("route", "/api/"), ("status", "429")];
    let m = settle(&gh, |m| {
        m.value(RATE_LIMITED, &limited) - before.value(RATE_LIMITED, &limited) == refused as f64
            && m.value(REQUESTS, &refusals) == refused as f64
    })
    .await;
    assert_eq!(
        m.value(RATE_LIMITED, &limited) - before.value(RATE_LIMITED, &limited),
        refused as f64
    );
    assert_eq!(m.value(RATE_LIMITED, &[]), refused as f64, "only limit x");
    assert_eq!(m.value(REQUESTS, &refusals), refused as f64);
    assert_eq!(
        m.value(UPSTREAM_REQUESTS, &[]),
        (8 - refused) as f64,
        "refused requests never reach a server"
    );
}

/// Writes `text` as the config and sends SIGHUP.
fn reload_with(gh: &Gatehouse, text: &str) {
    std::fs::write(gh.config_path(), text).unwrap();
    gh.signal("HUP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_are_counted_and_counters_survive_them() {
    let b1 = Backend::named("b1").await;
    let gh = builder(
        r#"
[[route]]
prefix = "/"
static = "site"

[static.site]
root = "site"
"#,
    )
    .start()
    .await;
    let client = gh.client();
    let original = gh.config_text().to_string();
    for _ in 0..3 {
        assert_eq!(get_status(&client, &gh.https_url("/")).await, 200);
    }
    let site_ok = [("route", "/"), ("status", "200")];
    let before = settle(&gh, |m| m.value(REQUESTS, &site_ok) == 3.0).await;
    assert_eq!(before.value(REQUESTS, &site_ok), 3.0);
    let ok = |m: &Metrics| m.value(RELOADS, &[("result", "ok")]);
    let err = |m: &Metrics| m.value(RELOADS, &[("result", "error")]);
    let stamp = |m: &Metrics| m.gauge(LAST_RELOAD, &[]).unwrap_or(0.0);
    assert_eq!(err(&before), 0.0, "the error series exists from the start");
    assert!(
        stamp(&before) > 1.6e9,
        "set at start-up: {}",
        stamp(&before)
    );

    // A good reload that adds a route.
    let with_api = format!(
        "{original}\n[[route]]\nprefix = \"/api/\"\nupstream = \"api\"\n\n[upstream.api]\nservers = [\"{}\"]\n",
        b1.addr_str()
    );
    reload_with(&gh, &with_api);
    let m = settle(&gh, |m| ok(m) == ok(&before) + 1.0).await;
    assert_eq!(ok(&m), ok(&before) + 1.0);
    assert_eq!(err(&m), 0.0);
    assert!(
        stamp(&m) > stamp(&before),
        "{} > {}",
        stamp(&m),
        stamp(&before)
    );
    assert_eq!(get_status(&client, &gh.https_url("/api/x")).await, 200);
    assert_eq!(
        m.value(REQUESTS, &site_ok),
        3.0,
        "counters survive the reload"
    );

    // A broken config: rejected, counted, and the old config keeps serving.
    let broken = format!("{original}\n[[route]]\nprefix = \"/b/\"\nupstream = \"missing\"\n");
    reload_with(&gh, &broken);
    let m2 = settle(&gh, |m| err(m) == 1.0).await;
    assert_eq!(err(&m2), 1.0);
    assert_eq!(ok(&m2), ok(&m), "no success counted");
    assert_eq!(stamp(&m2), stamp(&m), "last success time unchanged");
    assert_eq!(
        get_status(&client, &gh.https_url("/api/x")).await,
        200,
        "the previous config (with /api/) still serves"
    );
    assert_eq!(get_status(&client, &gh.https_url("/")).await, 200);
    let m3 = settle(&gh, |m| m.value(REQUESTS, &site_ok) == 4.0).await;
    assert_eq!(m3.value(REQUESTS, &site_ok), 4.0, "and keep counting");
    assert_eq!(
        m3.value(REQUESTS, &[("route", "/api/"), ("status", "200")]),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spec_metric_has_its_type_and_labels() {
    let b1 = Backend::named("b1").await;
    let b2 = Backend::named("b2").await;
    let config = SITE_AND_API.replace(
        "strip_prefix = true",
        "strip_prefix = true\nrate_limit = \"x\"",
    );
    let gh = builder(&format!("{config}\n[rate_limit.x]\nrate = 1\nburst = 1\n"))
        .backend("b1", &b1)
        .backend("b2", &b2)
        .start()
        .await;
    let client = gh.client();
    assert_eq!(get_status(&client, &gh.https_url("/")).await, 200);
    assert_eq!(get_status(&client, &gh.https_url("/api/a")).await, 200);
    assert_eq!(get_status(&client, &gh.https_url("/api/a")).await, 429);
    let m = settle(&gh, |m| m.value(REQUESTS, &[]) == 3.0).await;

    #[derive(Debug, PartialEq)]
    enum Kind {
        Counter,
        Gauge,
        Histogram,
    }
    let table: &[(&str, Kind, &[&str])] = &[
        (REQUESTS, Kind::Counter, &["route", "method", "status"]),
        (DURATION, Kind::Histogram, &["route"]),
        (
            UPSTREAM_REQUESTS,
            Kind::Counter,
            &["upstream", "server", "status"],
        ),
        (UPSTREAM_DURATION, Kind::Histogram, &["upstream"]),
        (HEALTHY, Kind::Gauge, &["upstream", "server"]),
        (RATE_LIMITED, Kind::Counter, &["limit"]),
        (RELOADS, Kind::Counter, &["result"]),
        (LAST_RELOAD, Kind::Gauge, &[]),
        ("gatehouse_access_log_dropped_total", Kind::Counter, &[]),
    ];
    for (name, kind, labels) in table {
        let found: Vec<&Sample> = m.matching(name, &[]).collect();
        assert!(!found.is_empty(), "{name} is missing");
        for s in found {
            let got = match s.value {
                Value::Counter(_) => Kind::Counter,
                Value::Gauge(_) => Kind::Gauge,
                Value::Histogram(_) => Kind::Histogram,
                ref other => panic!("{name}: {other:?}"),
            };
            assert_eq!(&got, kind, "{name}");
            let mut keys: Vec<&str> = s.labels.keys().map(String::as_str).collect();
            keys.sort_unstable();
            let mut want = labels.to_vec();
            want.sort_unstable();
            assert_eq!(keys, want, "{name}");
        }
    }
    // Status and server labels are the numeric code and the configured address.
    for s in m.matching(REQUESTS, &[]) {
        let status = s.labels.get("status").unwrap();
        assert!(status.parse::<u16>().is_ok(), "{status}");
    }
    let servers: std::collections::BTreeSet<&str> = m
        .matching(HEALTHY, &[])
        .map(|s| s.labels.get("server").unwrap())
        .collect();
    let configured = [b1.addr_str(), b2.addr_str()];
    let configured: std::collections::BTreeSet<&str> =
        configured.iter().map(String::as_str).collect();
    assert_eq!(servers, configured);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_paths_stay_on_the_admin_listener() {
    let gh = builder(
        r#"
[server]
threads = 1
grace_period = "1s"
drain_delay = "10s"
access_log = "off"
pid_file = "{dir}/gatehouse.pid"
upgrade_sock = "{dir}/upgrade.sock"

[[route]]
prefix = "/"
static = "site"

[static.site]
root = "site"
"#,
    )
    .start()
    .await;
    let client = gh.client();

    // The public listeners route admin paths like any other: the site's 404.
    for url in [
        gh.https_url("/metrics"),
        gh.http_url("/metrics"),
        gh.https_url("/healthz"),
        gh.https_url("/readyz"),
    ] {
        let resp = client.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{url}");
        let body = resp.text().await.unwrap();
        assert!(
            !body.contains("gatehouse_"),
            "{url} exposed metrics: {body}"
        );
    }

    // The admin listener serves its three paths and nothing else.
    let admin = |path: &str| client.get(gh.admin_url(path)).send();
    let metrics = admin("/metrics").await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains(REQUESTS));
    assert_eq!(admin("/healthz").await.unwrap().status(), 200);
    assert_eq!(admin("/readyz").await.unwrap().status(), 200);
    for path in ["/", "/index.html", "/metricsx", "/admin", "/metrics/x"] {
        assert_eq!(admin(path).await.unwrap().status(), 404, "{path}");
    }
    let post = client.post(gh.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(post.status(), 405);

    // Draining: /readyz turns 503 while /healthz and the site keep answering.
    gh.signal("TERM");
    let draining = common::eventually(SETTLE, || async {
        admin("/readyz").await.is_ok_and(|r| r.status() == 503)
    })
    .await;
    assert!(draining, "/readyz never reported draining");
    assert_eq!(admin("/healthz").await.unwrap().status(), 200);
}
