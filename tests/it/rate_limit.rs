//! Rate limits against the real binary: exact burst counts, per-client and
//! per-header buckets, the shared "missing key" bucket, fractional rates,
//! `Retry-After` / `RateLimit-*`, several limits on one route, trusted-proxy
//! `X-Forwarded-For`, the JSON 429 body and limits on static routes.
//!
//! Different clients are told apart by their loopback source address
//! (127.0.0.1 and 127.0.0.2; Linux routes all of 127/8 to `lo`). Most tests use
//! slow refill rates (0.1–0.2/s) so counts are exact; the burst test uses
//! rate 10 and allows for the refill measured during the burst.

use crate::common;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::{Backend, Gatehouse};

const LOCAL1: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const LOCAL2: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A `[server]` section like the harness default (2 worker threads) plus `extra`.
fn server(extra: &str) -> String {
    format!(
        "[server]\nthreads = 2\ngrace_period = \"1s\"\naccess_log = \"off\"\npid_file = \"{{dir}}/gatehouse.pid\"\nupgrade_sock = \"{{dir}}/upgrade.sock\"\n{extra}\n"
    )
}

/// `/api/` → backend `{api}` with `rate_limit = {limits}` (a TOML string or list).
fn api_route(limits: &str) -> String {
    format!(
        "[[route]]\nprefix = \"/api/\"\nupstream = \"api\"\nstrip_prefix = true\nrate_limit = {limits}\n\n[upstream.api]\nservers = [\"{{api}}\"]\n"
    )
}

/// `[rate_limit.NAME]`
fn limit(name: &str, key: &str, rate: f64, burst: u32) -> String {
    format!("[rate_limit.{name}]\nkey = \"{key}\"\nrate = {rate:?}\nburst = {burst}\n")
}

/// Plain listener + `server_extra` + the API route with `limits`, and `more` config.
async fn start(backend: &Backend, server_extra: &str, limits: &str, more: &str) -> Gatehouse {
    Gatehouse::builder(&server(server_extra))
        .append(common::HTTP_PLAIN)
        .append(&api_route(limits))
        .append(more)
        .backend("api", backend)
        .start()
        .await
}

/// A plain-HTTP client whose connections come from `ip`.
fn client_from(ip: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// What the tests look at in a response.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// A header that must be present and a number.
    fn num(&self, name: &str) -> u64 {
        let v = self
            .header(name)
            .unwrap_or_else(|| panic!("no {name} on {self:?}"));
        v.parse()
            .unwrap_or_else(|_| panic!("{name}: {v:?} is not a whole number"))
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

async fn get(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.unwrap();
    Resp {
        status,
        headers,
        body,
    }
}

/// Sends `n` requests one after another; the statuses.
async fn statuses(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get(client, url, headers).await.status);
    }
    out
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

/// Every status is 200 or 429, and the 200s come first.
fn assert_allowed_then_limited(statuses: &[u16], what: &str) {
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{what}: {statuses:?}"
    );
    let first_429 = statuses
        .iter()
        .position(|s| *s == 429)
        .unwrap_or(statuses.len());
    assert!(
        statuses[first_429..].iter().all(|s| *s == 429),
        "{what}: an allowed request after a refusal: {statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_100_allows_exactly_the_bucket() {
    let api = Backend::named("api").await;
    let gh = start(&api, "", "\"api\"", &limit("api", "client_ip", 10.0, 20)).await;
    let client = client_from(LOCAL1);
    let url = gh.http_url("/api/burst");

    let start = Instant::now();
    let got = statuses(&client, &url, &[], 100).await;
    let elapsed = start.elapsed();

    let allowed = count(&got, 200);
    let limited = count(&got, 429);
    assert_eq!(allowed + limited, 100, "only 200 and 429 expected: {got:?}");
    if elapsed < Duration::from_millis(100) {
        assert_allowed_then_limited(&got, "no refill during the burst");
    }
    assert!(
        got[..20].iter().all(|s| *s == 200),
        "the first 20 fill the bucket: {got:?}"
    );
    // The bucket gains one request per 100 ms while the burst runs.
    let refill = (elapsed.as_secs_f64() * 10.0).floor() as usize;
    assert!(
        (20..=20 + refill + 1).contains(&allowed),
        "{allowed} allowed in {elapsed:?} (bucket 20, refill at most {refill}): {got:?}"
    );
    assert_eq!(
        api.count(),
        allowed,
        "refused requests never reach the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bucket_across_connections_threads_and_listeners() {
    let api = Backend::named("api").await;
    let gh = Gatehouse::builder(&server(""))
        .append(common::HTTP_PLAIN)
        .append(common::HTTPS)
        .append(&api_route("\"api\""))
        .append(&limit("api", "client_ip", 1.0, 10))
        .backend("api", &api)
        .start()
        .await;

    // Four clients at once, each with its own connection: two over plain
    // HTTP/1.1, two over HTTPS (h2), all from 127.0.0.1.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let (client, url) = if i % 2 == 0 {
            (client_from(LOCAL1), gh.http_url("/api/shared"))
        } else {
            (gh.client(), gh.https_url("/api/shared"))
        };
        tasks.push(tokio::spawn(async move {
            statuses(&client, &url, &[], 10).await
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    let allowed = count(&got, 200);
    assert_eq!(allowed + count(&got, 429), 40, "{got:?}");
    let refill = elapsed.as_secs_f64().floor() as usize;
    assert!(
        (10..=10 + refill + 1).contains(&allowed),
        "one bucket of 10 for every connection and listener: {allowed} allowed in {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_have_independent_buckets() {
    let api = Backend::named("api").await;
    let gh = start(&api, "", "\"api\"", &limit("api", "client_ip", 0.1, 3)).await;
    let url = gh.http_url("/api/ip");
    let one = client_from(LOCAL1);
    let two = client_from(LOCAL2);

    let a = statuses(&one, &url, &[], 6).await;
    assert_eq!(a, [200, 200, 200, 429, 429, 429], "127.0.0.1");
    let b = statuses(&two, &url, &[], 6).await;
    assert_eq!(
        b,
        [200, 200, 200, 429, 429, 429],
        "127.0.0.2 has its own bucket"
    );
    assert_eq!(
        api.last_request().unwrap().header("x-real-ip"),
        Some("127.0.0.2"),
        "the second client really came from 127.0.0.2"
    );
    assert_eq!(
        get(&one, &url, &[]).await.status,
        429,
        "127.0.0.1 still limited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_keyed_limit_and_the_missing_key_bucket() {
    let api = Backend::named("api").await;
    let gh = start(
        &api,
        "",
        "\"keys\"",
        &limit("keys", "header:X-Api-Key", 0.1, 2),
    )
    .await;
    let url = gh.http_url("/api/key");
    let one = client_from(LOCAL1);
    let two = client_from(LOCAL2);

    let a = statuses(&one, &url, &[("X-Api-Key", "key-a")], 4).await;
    assert_eq!(a, [200, 200, 429, 429], "key-a");
    let b = statuses(&one, &url, &[("X-Api-Key", "key-b")], 4).await;
    assert_eq!(b, [200, 200, 429, 429], "key-b has its own bucket");
    // The key is the header, not the address: key-a is spent from any client.
    assert_eq!(
        get(&two, &url, &[("X-Api-Key", "key-a")]).await.status,
        429,
        "key-a from another address"
    );

    // No header: one shared bucket, limited like any other, whoever sends it.
    assert_eq!(get(&one, &url, &[]).await.status, 200);
    assert_eq!(get(&two, &url, &[]).await.status, 200);
    let missing = get(&one, &url, &[]).await;
    assert_eq!(
        missing.status, 429,
        "requests without the header share a bucket"
    );
    assert_eq!(get(&two, &url, &[]).await.status, 429);
    // An empty value is the same as no header.
    assert_eq!(get(&two, &url, &[("X-Api-Key", "")]).await.status, 429);
    // Other keys are untouched.
    assert_eq!(get(&two, &url, &[("X-Api-Key", "key-c")]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fractional_rate_waits_two_seconds() {
    let api = Backend::named("api").await;
    let gh = start(&api, "", "\"slow\"", &limit("slow", "client_ip", 0.5, 1)).await;
    let client = client_from(LOCAL1);
    let url = gh.http_url("/api/slow");

    let first = get(&client, &url, &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.num("ratelimit-limit"), 1);
    assert_eq!(first.num("ratelimit-remaining"), 0);
    assert_eq!(
        first.num("ratelimit-reset"),
        2,
        "a full bucket again in 2 s"
    );
    let second = get(&client, &url, &[]).await;
    assert_eq!(second.status, 429);
    assert_eq!(
        second.header("retry-after"),
        Some("2"),
        "0.5/s means one request every 2 s"
    );
    assert_eq!(second.num("ratelimit-reset"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_and_ratelimit_headers() {
    let api = Backend::named("api").await;
    // One request per 5 s, bucket of 5.
    let gh = start(&api, "", "\"api\"", &limit("api", "client_ip", 0.2, 5)).await;
    let client = client_from(LOCAL1);
    let url = gh.http_url("/api/h");

    let start = Instant::now();
    for i in 1..=5u64 {
        let r = get(&client, &url, &[]).await;
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.num("ratelimit-limit"), 5, "request {i}");
        assert_eq!(r.num("ratelimit-remaining"), 5 - i, "request {i}");
        assert_eq!(
            r.num("ratelimit-reset"),
            5 * i,
            "request {i}: seconds until the bucket is full again"
        );
        assert!(r.header("retry-after").is_none(), "request {i}");
    }
    let r = get(&client, &url, &[]).await;
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(r.status, 429);
    assert_eq!(r.num("ratelimit-limit"), 5);
    assert_eq!(r.num("ratelimit-remaining"), 0);
    let retry = r.num("retry-after");
    // The next request is allowed 5 s after the first one was taken.
    let earliest = (5.0 - elapsed).ceil().max(1.0) as u64;
    assert!(
        (earliest..=5).contains(&retry),
        "Retry-After {retry} (expected {earliest}..=5 after {elapsed:.2} s)"
    );
    assert_eq!(
        r.num("ratelimit-reset"),
        retry,
        "Reset agrees with Retry-After"
    );
    assert!(
        r.header("retry-after")
            .unwrap()
            .bytes()
            .all(|b| b.is_ascii_digit()),
        "whole seconds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_of_a_route_must_allow() {
    let api = Backend::named("api").await;
    // per_ip: 3 per client address; per_key: 5 per API key, from any address.
    let limits = format!(
        "{}{}",
        limit("per_ip", "client_ip", 0.1, 3),
        limit("per_key", "header:X-Api-Key", 0.1, 5)
    );
    let gh = start(&api, "", "[\"per_ip\", \"per_key\"]", &limits).await;
    let url = gh.http_url("/api/two");
    let one = client_from(LOCAL1);
    let two = client_from(LOCAL2);
    let key = [("X-Api-Key", "shared")];

    let first = get(&one, &url, &key).await;
    assert_eq!(first.status, 200);
    // The most restrictive limit is the one reported.
    assert_eq!(first.num("ratelimit-limit"), 3);
    assert_eq!(first.num("ratelimit-remaining"), 2);
    let rest = statuses(&one, &url, &key, 3).await;
    assert_eq!(rest, [200, 200, 429], "per_ip (3) stops 127.0.0.1 first");

    // 127.0.0.2 has a fresh per_ip bucket but the key has 2 of 5 left.
    let r = get(&two, &url, &key).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.num("ratelimit-limit"),
        5,
        "per_key is now the tighter one"
    );
    assert_eq!(r.num("ratelimit-remaining"), 1);
    let rest = statuses(&two, &url, &key, 2).await;
    assert_eq!(rest, [200, 429], "per_key (5) stops 127.0.0.2");
    // Another address with another key passes both.
    let three = client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
    assert_eq!(
        get(&three, &url, &[("X-Api-Key", "other")]).await.status,
        200
    );
    assert_eq!(api.count(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxy_forwarded_for_gives_separate_buckets() {
    let api = Backend::named("api").await;
    let gh = start(
        &api,
        "trusted_proxies = [\"127.0.0.0/8\"]",
        "\"api\"",
        &limit("api", "client_ip", 0.1, 2),
    )
    .await;
    let url = gh.http_url("/api/xff");
    let client = client_from(LOCAL1);

    let a = statuses(&client, &url, &[("X-Forwarded-For", "203.0.113.1")], 3).await;
    assert_eq!(a, [200, 200, 429], "client 203.0.113.1");
    assert_eq!(
        api.last_request().unwrap().header("x-real-ip"),
        Some("203.0.113.1")
    );
    let b = statuses(&client, &url, &[("X-Forwarded-For", "203.0.113.2")], 3).await;
    assert_eq!(b, [200, 200, 429], "client 203.0.113.2 has its own bucket");
    // The rightmost untrusted hop is the client: trusted hops after it are skipped,
    // anything the client put before it is not believed.
    let hops = get(
        &client,
        &url,
        &[("X-Forwarded-For", "198.51.100.9, 203.0.113.1, 127.0.0.5")],
    )
    .await;
    assert_eq!(hops.status, 429, "still 203.0.113.1");
    // The proxy's own requests (no X-Forwarded-For) are keyed by the proxy.
    assert_eq!(get(&client, &url, &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarded_for_from_untrusted_peer_does_not_escape() {
    let api = Backend::named("api").await;
    let limits = limit("api", "client_ip", 0.1, 2);
    // No trusted proxies at all, and trusted proxies that do not include the peer.
    for server_extra in ["", "trusted_proxies = [\"10.0.0.0/8\"]"] {
        let gh = start(&api, server_extra, "\"api\"", &limits).await;
        let url = gh.http_url("/api/spoof");
        let client = client_from(LOCAL1);
        let mut got = Vec::new();
        for i in 0..8 {
            let spoof = format!("198.51.100.{}, 10.0.0.{}", i + 1, i + 1);
            got.push(
                get(&client, &url, &[("X-Forwarded-For", spoof.as_str())])
                    .await
                    .status,
            );
        }
        assert_eq!(
            got,
            [200, 200, 429, 429, 429, 429, 429, 429],
            "{server_extra:?}: a new X-Forwarded-For per request is still 127.0.0.1"
        );
        assert_eq!(
            api.last_request().unwrap().header("x-real-ip"),
            Some("127.0.0.1")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_is_json_with_the_request_id_and_counted() {
    let api = Backend::named("api").await;
    let gh = Gatehouse::builder(&server(""))
        .append(common::HTTP_PLAIN)
        .append(common::ADMIN)
        .append(&api_route("\"api\""))
        .append(&limit("api", "client_ip", 0.1, 1))
        .backend("api", &api)
        .start()
        .await;
    let url = gh.http_url("/api/json");
    let client = client_from(LOCAL1);

    assert_eq!(get(&client, &url, &[]).await.status, 200);

    // A valid client id is kept.
    let r = get(&client, &url, &[("X-Request-Id", "rl-test-42")]).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-request-id"), Some("rl-test-42"));
    assert_eq!(
        r.json(),
        serde_json::json!({"error": "rate_limited", "status": 429, "request_id": "rl-test-42"})
    );

    // Otherwise a generated one, the same in the body and the header.
    let r = get(&client, &url, &[]).await;
    assert_eq!(r.status, 429);
    let v = r.json();
    assert_eq!(v["error"], "rate_limited");
    assert_eq!(v["status"], 429);
    let id = v["request_id"].as_str().expect("request_id is a string");
    assert!(!id.is_empty());
    assert_eq!(r.header("x-request-id"), Some(id));
    assert!(r.header("retry-after").is_some());

    // HEAD gets the same status and headers without a body.
    let head = client.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 429);
    assert!(head.headers().contains_key("retry-after"));

    let metrics = reqwest::get(gh.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("gatehouse_rate_limited_total{limit=\"api\"}"))
        .unwrap_or_else(|| panic!("no gatehouse_rate_limited_total for api:\n{metrics}"));
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(n, 3.0, "{line}");
    assert_eq!(api.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_route_is_limited_too() {
    let gh = Gatehouse::builder(&server(""))
        .append(common::HTTP_PLAIN)
        .append(
            r#"
[[route]]
prefix = "/"
static = "site"
rate_limit = "pages"

[static.site]
root = "site"

[rate_limit.pages]
key = "client_ip"
rate = 0.1
burst = 2
"#,
        )
        .file("site/index.html", "<h1>hi</h1>")
        .file("site/app.js", "console.log(1)")
        .start()
        .await;
    let client = client_from(LOCAL1);

    let r = get(&client, &gh.http_url("/"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "<h1>hi</h1>");
    assert_eq!(r.num("ratelimit-limit"), 2);
    assert_eq!(r.num("ratelimit-remaining"), 1);
    let r = get(&client, &gh.http_url("/app.js"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.num("ratelimit-remaining"), 0);

    let r = get(&client, &gh.http_url("/"), &[]).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"], "rate_limited");
    assert!(r.num("retry-after") >= 1);
    // Other clients are served.
    let other = get(&client_from(LOCAL2), &gh.http_url("/"), &[]).await;
    assert_eq!(other.status, 200);
    // Any path of the route, even one with no file, is refused once the bucket is empty.
    assert_eq!(
        get(&client, &gh.http_url("/nope.js"), &[]).await.status,
        429
    );
}
