//! Shared rate limits (`store = "redis://..."`) against a real `redis-server`
//! on loopback and real Gatehouse binaries: three instances enforce one
//! limit; Redis killed mid-run (fallback to local buckets, no 5xx, logged
//! once and counted) and back (shared again); a stopped Redis (the timeout,
//! one try per second, `deny` and `allow`); a reload to another store; and
//! the Lua GCRA against the local governor limiter, check by check.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common;
use common::redis::RedisServer;
use common::{plain_client as client, Backend, Gatehouse};
use gatehouse::config::{OnStoreError, RateKey, RateLimit, RateStore};
use gatehouse::rate_limit::{Key, Limiters};

const FALLBACKS: &str = "gatehouse_rate_limit_store_fallbacks_total";
const STORE_UP: &str = "gatehouse_rate_limit_store_up";
const STORE_ERRORS: &str = "gatehouse_rate_limit_store_errors_total";
const WITHIN: Duration = Duration::from_secs(10);

/// `[rate_limit.api]` keyed by `X-Tenant`, shared through `url`, plus `extra`.
/// The store timeout is generous unless `extra` sets it: test machines are
/// busy, and a check that times out falls back (the stopped-Redis test sets it).
fn shared_limit(url: &str, rate: u32, burst: u32, extra: &str) -> String {
    let timeout = if extra.contains("store_timeout") {
        ""
    } else {
        "store_timeout = \"500ms\"\n"
    };
    format!(
        "[rate_limit.api]\nkey = \"header:x-tenant\"\nrate = {rate}\nburst = {burst}\nstore = \"{url}\"\n{timeout}{extra}\n"
    )
}

/// `/api/` limited by `api` and `/open/` by `open`, both to the backend `{api}`.
const ROUTES: &str = r#"
[[route]]
prefix = "/api/"
upstream = "api"
rate_limit = "api"

[[route]]
prefix = "/open/"
upstream = "api"
rate_limit = "open"

[upstream.api]
servers = ["{api}"]
"#;

/// One instance: plain and admin listeners, [`ROUTES`], the limits `limits`.
async fn instance(api: &Backend, limits: &str) -> Gatehouse {
    Gatehouse::builder(common::HTTP_PLAIN)
        .append(common::ADMIN)
        .append(ROUTES)
        .append(limits)
        .backend("api", api)
        .start()
        .await
}

/// The same config in `n` instances.
async fn instances(api: &Backend, limits: &str, n: usize) -> Vec<Gatehouse> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(instance(api, limits).await);
    }
    out
}

/// What a run of requests got.
#[derive(Debug, Default)]
struct Tally {
    /// 200s per instance.
    admitted: Vec<usize>,
    refused: usize,
    /// Any other status, and transport errors (as 0).
    other: Vec<u16>,
    /// From the first request sent to the last.
    elapsed: Duration,
}

impl Tally {
    fn total(&self) -> usize {
        self.admitted.iter().sum()
    }
}

/// `workers` clients send `GET /api/x` with `X-Tenant: tenant`, each one
/// request at a time, round-robin over `urls`, for `run`.
async fn drive(urls: &[String], tenant: &str, workers: usize, run: Duration) -> Tally {
    let start = Instant::now();
    let deadline = start + run;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let urls = urls.to_vec();
        let tenant = tenant.to_string();
        tasks.push(tokio::spawn(async move {
            let client = client();
            let mut t = Tally {
                admitted: vec![0; urls.len()],
                ..Tally::default()
            };
            let mut i = w;
            while Instant::now() < deadline {
                let n = i % urls.len();
                i += 1;
                let resp = client
                    .get(format!("{}/api/x", urls[n]))
                    .header("x-tenant", &tenant)
                    .send()
                    .await;
                match resp.map(|r| r.status().as_u16()) {
                    Ok(200) => t.admitted[n] += 1,
                    Ok(429) => t.refused += 1,
                    Ok(s) => t.other.push(s),
                    Err(_) => t.other.push(0),
                }
            }
            t
        }));
    }
    let mut tally = Tally {
        admitted: vec![0; urls.len()],
        ..Tally::default()
    };
    for task in tasks {
        let t = task.await.unwrap();
        for (sum, n) in tally.admitted.iter_mut().zip(t.admitted) {
            *sum += n;
        }
        tally.refused += t.refused;
        tally.other.extend(t.other);
    }
    tally.elapsed = start.elapsed().min(run);
    tally
}

fn base_urls(ghs: &[Gatehouse]) -> Vec<String> {
    ghs.iter().map(|g| g.http_url("")).collect()
}

/// Sends one request; the status and `RateLimit-Limit`.
async fn one(client: &reqwest::Client, base: &str, tenant: &str) -> (u16, Option<String>) {
    let resp = client
        .get(format!("{base}/api/x"))
        .header("x-tenant", tenant)
        .send()
        .await
        .unwrap();
    let limit = resp
        .headers()
        .get("ratelimit-limit")
        .map(|v| v.to_str().unwrap().to_string());
    (resp.status().as_u16(), limit)
}

/// Sends `n` requests one after another to `base`; how many were admitted.
async fn admitted_of(client: &reqwest::Client, base: &str, tenant: &str, n: usize) -> usize {
    let mut admitted = 0;
    for _ in 0..n {
        let (status, _) = one(client, base, tenant).await;
        assert!(status == 200 || status == 429, "status {status}");
        admitted += usize::from(status == 200);
    }
    admitted
}

fn assert_within(got: usize, expected: f64, share: f64, what: &str) {
    let got = got as f64;
    assert!(
        (got - expected).abs() <= expected * share,
        "{what}: {got} admitted, expected {expected:.0} ± {:.0} %",
        share * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_enforce_one_limit_within_5_percent() {
    let redis = RedisServer::start().await;
    let api = Backend::named("api").await;
    let (rate, burst) = (50u32, 100u32);
    let limit = shared_limit(
        &redis.url(),
        rate,
        burst,
        "instances = 3\n[rate_limit.open]\nrate = 1000000",
    );
    let ghs = instances(&api, &limit, 3).await;

    let run = Duration::from_secs(10);
    let tally = drive(&base_urls(&ghs), "t1", 6, run).await;
    assert!(
        tally.other.is_empty(),
        "only 200 and 429: {:?}",
        tally.other
    );
    let expected = f64::from(burst) + f64::from(rate) * tally.elapsed.as_secs_f64();
    eprintln!("three instances: {tally:?}, expected {expected:.0}");
    assert_within(tally.total(), expected, 0.05, "three instances, one limit");
    assert!(
        tally.refused > tally.total(),
        "the client asked for more than the limit: {tally:?}"
    );
    for (i, n) in tally.admitted.iter().enumerate() {
        assert!(*n > 0, "instance {i} admitted nothing: {tally:?}");
    }
    assert_eq!(
        api.count(),
        tally.total(),
        "refused requests never reach the backend"
    );
    // The answers count the shared bucket: its size, not a third of it.
    let (_, limit) = one(&client(), &ghs[1].http_url(""), "t1").await;
    assert_eq!(limit.as_deref(), Some("100"));
    for gh in &ghs {
        assert_eq!(
            gh.metric(STORE_UP, &[("store", &redis.url())]).await,
            Some(1.0)
        );
        assert_eq!(gh.metric(FALLBACKS, &[("limit", "api")]).await, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_falls_back_without_5xx_then_shares_again() {
    let mut redis = RedisServer::start().await;
    let api = Backend::named("api").await;
    let (rate, burst) = (30u32, 30u32);
    let limit = shared_limit(
        &redis.url(),
        rate,
        burst,
        "instances = 3\non_store_error = \"local\"\n[rate_limit.open]\nrate = 1000000",
    );
    let ghs = instances(&api, &limit, 3).await;
    let urls = base_urls(&ghs);

    let shared = drive(&urls, "a", 4, Duration::from_secs(2)).await;
    assert!(shared.other.is_empty(), "{:?}", shared.other);
    let expected = f64::from(burst) + f64::from(rate) * shared.elapsed.as_secs_f64();
    assert_within(shared.total(), expected, 0.05, "shared, before the kill");

    // Killed while requests are in flight.
    let during = tokio::spawn({
        let urls = urls.clone();
        async move { drive(&urls, "b", 4, Duration::from_secs(3)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    let fallback = during.await.unwrap();
    assert!(
        fallback.other.is_empty(),
        "no request fails while Redis is gone: {:?}",
        fallback.other
    );
    // Local buckets of rate/3 and burst/3 in each instance, round-robin: about
    // the shared limit again (loosely: the kill lands mid-run).
    let expected = f64::from(burst) + f64::from(rate) * fallback.elapsed.as_secs_f64();
    eprintln!("shared: {shared:?}\nfallback: {fallback:?}, expected {expected:.0}");
    assert_within(fallback.total(), expected, 0.35, "local fallback");
    for gh in &ghs {
        assert!(
            gh.metric(FALLBACKS, &[("limit", "api")])
                .await
                .unwrap_or(0.0)
                > 0.0
        );
        assert!(
            gh.metric(STORE_ERRORS, &[("store", &redis.url())])
                .await
                .unwrap_or(0.0)
                > 0.0
        );
        assert_eq!(
            gh.metric(STORE_UP, &[("store", &redis.url())]).await,
            Some(0.0)
        );
        let log = gh.stderr();
        assert_eq!(
            log.matches("falling back to local buckets (10/s, burst 10)")
                .count(),
            1,
            "the fallback is logged once per outage:\n{log}"
        );
        // Local buckets say so: a third of the burst.
        let (status, limit) = one(&client(), &gh.http_url(""), "probe").await;
        assert_eq!((status, limit.as_deref()), (200, Some("10")));
    }

    redis.restart().await;
    let c = client();
    for gh in &ghs {
        let back = common::eventually(WITHIN, || async {
            let _ = one(&c, &gh.http_url(""), "wake").await;
            gh.metric(STORE_UP, &[("store", &redis.url())]).await == Some(1.0)
        })
        .await;
        assert!(back, "the store is used again:\n{}", gh.stderr());
        assert!(
            gh.stderr().contains("the limit is shared again"),
            "{}",
            gh.stderr()
        );
    }
    // Shared again: one instance empties the tenant's bucket, the others
    // find it empty (local buckets would each have had 10).
    let start = Instant::now();
    let first = admitted_of(&c, &urls[0], "c", 2 * burst as usize).await;
    let others =
        admitted_of(&c, &urls[1], "c", 20).await + admitted_of(&c, &urls[2], "c", 20).await;
    let refill = (start.elapsed().as_secs_f64() * f64::from(rate)).ceil() as usize;
    assert!(
        (burst as usize..=burst as usize + refill).contains(&first),
        "{first} admitted by one instance (bucket {burst}, refill {refill})"
    );
    assert!(
        others <= refill,
        "{others} admitted by the others, refill {refill}"
    );
    let (_, limit) = one(&c, &urls[2], "d").await;
    assert_eq!(limit.as_deref(), Some("30"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_costs_one_timeout_per_second_and_deny_or_allow_apply() {
    let redis = RedisServer::start().await;
    let api = Backend::named("api").await;
    let limit = format!(
        "{}[rate_limit.open]\nrate = 1000\nstore = \"{}\"\nstore_timeout = \"200ms\"\non_store_error = \"allow\"\n",
        shared_limit(&redis.url(), 1000, 1000, "store_timeout = \"200ms\"\non_store_error = \"deny\""),
        redis.url()
    );
    let gh = instance(&api, &limit).await;
    let c = client();
    let base = gh.http_url("");
    assert_eq!(one(&c, &base, "t").await.0, 200);

    redis.signal("STOP");
    // The first check waits for the timeout; the next ones, within the
    // retry interval, fall back at once.
    let start = Instant::now();
    let mut refused = Vec::new();
    for _ in 0..10 {
        let resp = c
            .get(format!("{base}/api/x"))
            .header("x-tenant", "t")
            .send()
            .await
            .unwrap();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        refused.push((resp.status().as_u16(), retry_after));
    }
    let took = start.elapsed();
    assert!(
        refused.iter().all(|r| *r == (429, Some("1".to_string()))),
        "deny: 429 with Retry-After: 1, {refused:?}"
    );
    assert!(
        took >= Duration::from_millis(200),
        "the first check waited: {took:?}"
    );
    assert!(
        took < Duration::from_millis(900),
        "not one timeout per request: {took:?}"
    );
    // `allow` admits, without RateLimit headers (nothing was counted).
    let resp = c.get(format!("{base}/open/x")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("ratelimit-limit").is_none());
    assert_eq!(
        gh.metric(STORE_UP, &[("store", &redis.url())]).await,
        Some(0.0)
    );
    assert!(
        gh.metric(FALLBACKS, &[("limit", "api")])
            .await
            .unwrap_or(0.0)
            >= 10.0
    );
    assert!(gh
        .stderr()
        .contains("refusing every request (on_store_error = deny)"));

    redis.signal("CONT");
    let back = common::eventually(WITHIN, || async { one(&c, &base, "t").await.0 == 200 }).await;
    assert!(back, "admitted again once Redis answers:\n{}", gh.stderr());
    assert!(gh.stderr().contains("answers again"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_to_another_store_reconnects() {
    let first = RedisServer::start().await;
    let second = RedisServer::start().await;
    let api = Backend::named("api").await;
    let gh = instance(
        &api,
        // One request every 10 s: a bucket's key lives 10 s after a request
        // (keys expire once their bucket is full again).
        &shared_limit(&first.url(), 1, 100, "[rate_limit.open]\nrate = 1000")
            .replace("rate = 1\n", "rate = 0.1\n"),
    )
    .await;
    let c = client();
    assert_eq!(one(&c, &gh.http_url(""), "r").await.0, 200);
    assert_eq!(
        first
            .command(&["EXISTS", "gatehouse:rl:api:h:r"])
            .await
            .as_deref(),
        Some(":1\r\n")
    );

    let text = gh.config_text().replace(&first.url(), &second.url());
    gh.write_config(&text);
    gh.signal("HUP");
    assert!(
        gh.wait_metric(
            "gatehouse_config_reloads_total",
            &[("result", "ok")],
            1.0,
            WITHIN
        )
        .await,
        "{}",
        gh.stderr()
    );
    assert_eq!(one(&c, &gh.http_url(""), "s").await.0, 200);
    assert_eq!(
        second
            .command(&["EXISTS", "gatehouse:rl:api:h:s"])
            .await
            .as_deref(),
        Some(":1\r\n")
    );
    assert_eq!(
        first
            .command(&["EXISTS", "gatehouse:rl:api:h:s"])
            .await
            .as_deref(),
        Some(":0\r\n")
    );
    assert_eq!(
        gh.metric(STORE_UP, &[("store", &second.url())]).await,
        Some(1.0)
    );
}

fn limit(name: &str, rate: f64, burst: u32, store: Option<RateStore>) -> RateLimit {
    RateLimit {
        name: name.into(),
        key: RateKey::ClientIp,
        rate,
        burst,
        store,
    }
}

fn store(url: &str, on_error: OnStoreError, instances: u32) -> RateStore {
    RateStore {
        url: url.into(),
        timeout: Duration::from_millis(500),
        on_error,
        instances,
    }
}

/// The Lua GCRA and governor answer the same, check by check: bursts,
/// remaining counts, refusals with their wait, fractional rates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_answers_as_the_local_limiter() {
    let redis = RedisServer::start().await;
    for (rate, burst, checks) in [
        (1.0, 5, 8),
        (0.5, 1, 3),
        (2.0, 10, 12),
        (10.0, 3, 5),
        (1000.0, 20, 3),
    ] {
        let mut config = std::collections::BTreeMap::new();
        config.insert("local".to_string(), limit("local", rate, burst, None));
        let shared = limit(
            &format!("shared{burst}"),
            rate,
            burst,
            Some(store(&redis.url(), OnStoreError::Deny, 1)),
        );
        config.insert("shared".to_string(), shared);
        let limiters = Limiters::build(&config, None);
        let local = Arc::clone(limiters.get("local").unwrap());
        let shared = Arc::clone(limiters.get("shared").unwrap());
        let key = Key::Ip([127, 0, 0, 1].into());
        for i in 0..checks {
            let l = local.check(&key);
            let s = shared.check_shared(&key).await.unwrap();
            if rate <= 2.0 {
                assert_eq!(s, l, "rate {rate} burst {burst}, check {i}");
            } else {
                // Faster refill: the two checks are a round trip apart, so a
                // token may come back between them.
                assert!(
                    s.limit == l.limit
                        && s.reset_secs == l.reset_secs
                        && s.remaining.abs_diff(l.remaining) <= 1
                        && (s.allowed == l.allowed || s.remaining + l.remaining <= 1),
                    "rate {rate} burst {burst}, check {i}: {s:?} {l:?}"
                );
            }
        }
        assert!(!shared.store().unwrap().is_down());
    }
    // Buckets expire once full again: the slow one in at most 2 s, the fast
    // one at once.
    let ttl = redis
        .command(&["PTTL", "gatehouse:rl:shared1:ip:127.0.0.1"])
        .await
        .unwrap();
    let ttl: i64 = ttl.trim_start_matches(':').trim().parse().unwrap();
    assert!((1..=2000).contains(&ttl), "PTTL {ttl}");
    let gone = common::eventually(WITHIN, || async {
        redis
            .command(&["EXISTS", "gatehouse:rl:shared20:ip:127.0.0.1"])
            .await
            .as_deref()
            == Some(":0\r\n")
    })
    .await;
    assert!(gone, "an idle key vanishes");
}

/// `on_store_error` against a store nobody listens on: local buckets of
/// `rate / instances` and `burst / instances`, admit, or refuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fallback_against_a_dead_store() {
    let dead = format!("redis://127.0.0.1:{}", common::free_port());
    let key = Key::Ip([127, 0, 0, 1].into());
    let mut config = std::collections::BTreeMap::new();
    for (name, on_error) in [
        ("local", OnStoreError::Local),
        ("allow", OnStoreError::Allow),
        ("deny", OnStoreError::Deny),
    ] {
        config.insert(
            name.to_string(),
            limit(name, 9.0, 9, Some(store(&dead, on_error, 3))),
        );
    }
    let limiters = Limiters::build(&config, None);
    let local = limiters.get("local").unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(local.check_shared(&key).await.map(|d| (d.allowed, d.limit)));
    }
    assert_eq!(
        got,
        [
            Some((true, 3)),
            Some((true, 3)),
            Some((true, 3)),
            Some((false, 3))
        ],
        "burst 9 over 3 instances"
    );
    assert_eq!(
        limiters.get("allow").unwrap().check_shared(&key).await,
        None
    );
    let denied = limiters
        .get("deny")
        .unwrap()
        .check_shared(&key)
        .await
        .unwrap();
    assert!(!denied.allowed && denied.reset_secs == 1, "{denied:?}");
    // One store for the three limits.
    let stores: Vec<_> = ["local", "allow", "deny"]
        .iter()
        .map(|n| Arc::as_ptr(limiters.get(n).unwrap().store().unwrap()))
        .collect();
    assert!(
        stores.windows(2).all(|w| w[0] == w[1]),
        "one connection per URL"
    );
}
