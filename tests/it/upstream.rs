//! Upstream pools: path rewriting, forwarding headers, request ids, balancing,
//! health checks, retries, the 502/503/504 answers, and when an upstream
//! HTTP/1.x connection is reused.

use crate::common;
use common::FAST_HEALTH;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::scripted::ScriptedBackend;
use common::{eventually, Backend, Gatehouse, Mode};

/// `[[route]] /api/ -> api` (prefix stripped) and `[upstream.api]` with
/// `servers` and the `extra` lines (keys of `[upstream.api]`, then subtables).
fn api_config(servers: &[String], extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[[route]]\nprefix = \"/api/\"\nupstream = \"api\"\nstrip_prefix = true\n\n[upstream.api]\nservers = [{}]\n{extra}\n",
        list.join(", ")
    )
}

/// HTTPS plus the plain listener (no redirect) in front of `servers`.
async fn start_api(servers: &[String], extra: &str) -> Gatehouse {
    Gatehouse::builder(common::HTTPS)
        .append(common::HTTP_PLAIN)
        .append(&api_config(servers, extra))
        .start()
        .await
}

/// GET `url`; the name of the backend that answered, or the failure.
async fn served_by(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let resp = client.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| format!("{e:?}"))?;
    if status != 200 {
        return Err(format!("{status}: {body}"));
    }
    Ok(common::server_of(&body))
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_prefix_rewrites_the_path() {
    let b = Backend::named("b").await;
    let gh = start_api(&[b.addr_str()], "").await;
    let client = gh.client();

    for (sent, seen) in [
        ("/api/users?id=1", "/users?id=1"),
        ("/api", "/"),
        ("/api/", "/"),
        ("/api/a/b/", "/a/b/"),
    ] {
        let resp = client.get(gh.https_url(sent)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{sent}");
        assert_eq!(b.last_request().unwrap().path, seen, "{sent}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_reach_the_backend() {
    let b = Backend::named("b").await;
    let gh = start_api(&[b.addr_str()], "").await;
    let authority = format!("localhost:{}", gh.https_port);

    for (proto, client) in [("http/1.1", gh.client_h1()), ("h2", gh.client())] {
        let resp = client
            .get(gh.https_url("/api/x"))
            .header("X-Forwarded-For", "203.0.113.7")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{proto}");
        let returned_id = resp
            .headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_string());
        let seen = b.last_request().unwrap();
        assert_eq!(
            seen.header("host"),
            Some(authority.as_str()),
            "{proto}: Host as the client sent it"
        );
        assert_eq!(seen.header_all("host").len(), 1, "{proto}: one Host");
        assert_eq!(seen.header("x-real-ip"), Some("127.0.0.1"), "{proto}");
        assert_eq!(
            seen.header("x-forwarded-for"),
            Some("203.0.113.7, 127.0.0.1"),
            "{proto}"
        );
        assert_eq!(seen.header("x-forwarded-proto"), Some("https"), "{proto}");
        assert_eq!(
            seen.header("x-forwarded-host"),
            Some(authority.as_str()),
            "{proto}"
        );
        let id = seen.header("x-request-id").expect("X-Request-Id generated");
        assert!(!id.is_empty());
        assert_eq!(
            returned_id.as_deref(),
            Some(id),
            "{proto}: the id is returned to the client"
        );
    }

    // Plain listener: proto http, Host as sent.
    let resp = gh
        .client()
        .get(gh.http_url("/api/plain"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = b.last_request().unwrap();
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    let plain_host = format!("127.0.0.1:{}", gh.http_port);
    assert_eq!(seen.header("host"), Some(plain_host.as_str()));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
}

/// Sends a request with `X-Request-Id: id` (none when `None`); the id the
/// backend saw and the one returned to the client.
async fn send_with_id(
    client: &reqwest::Client,
    url: &str,
    b: &Backend,
    id: Option<String>,
) -> (Option<String>, Option<String>) {
    let mut req = client.get(url);
    if let Some(id) = id {
        req = req.header("X-Request-Id", id);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let returned = resp
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_string());
    let seen = b
        .last_request()
        .unwrap()
        .header("x-request-id")
        .map(str::to_string);
    (seen, returned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_kept_when_valid_replaced_when_not() {
    let b = Backend::named("b").await;
    let gh = start_api(&[b.addr_str()], "").await;
    let client = gh.client_h1();
    let url = gh.https_url("/api/id");

    let send = |id: Option<String>| send_with_id(&client, &url, &b, id);

    let (seen, returned) = send(Some("abc-123_DEF".into())).await;
    assert_eq!(seen.as_deref(), Some("abc-123_DEF"));
    assert_eq!(returned.as_deref(), Some("abc-123_DEF"));

    for bad in [
        "a".repeat(300),
        "bad id".to_string(),
        "bad\tid".to_string(),
        "<script>".to_string(),
    ] {
        let (seen, returned) = send(Some(bad.clone())).await;
        let seen = seen.expect("an id is sent upstream");
        assert_ne!(seen, bad, "invalid id {bad:?} must be replaced");
        assert!(
            !seen.is_empty() && seen.len() <= 128 && !seen.contains([' ', '\t']),
            "{seen:?}"
        );
        assert_eq!(returned.as_deref(), Some(seen.as_str()));
    }

    let (first, _) = send(None).await;
    let (second, _) = send(None).await;
    assert!(first.is_some() && second.is_some());
    assert_ne!(first, second, "generated ids are unique");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_follows_weights() {
    let b1 = Backend::named("b1").await;
    let b2 = Backend::named("b2").await;
    let servers = [b1.addr_str(), format!("{} weight=2", b2.addr_str())];
    let gh = start_api(&servers, "balance = \"round_robin\"").await;
    let client = gh.client_h1();
    let url = gh.https_url("/api/rr");

    for i in 0..300 {
        served_by(&client, &url)
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
    }
    let (c1, c2) = (b1.count(), b2.count());
    assert_eq!(c1 + c2, 300);
    assert!(
        c1.abs_diff(100) <= 10 && c2.abs_diff(200) <= 10,
        "b1 {c1}, b2 {c2}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_gives_each_a_fair_share() {
    let b1 = Backend::named("b1").await;
    let b2 = Backend::named("b2").await;
    let gh = start_api(&[b1.addr_str(), b2.addr_str()], "balance = \"random\"").await;
    let client = gh.client_h1();
    let url = gh.https_url("/api/random");

    let mut order = Vec::new();
    for i in 0..200 {
        order.push(
            served_by(&client, &url)
                .await
                .unwrap_or_else(|e| panic!("request {i}: {e}")),
        );
    }
    let (c1, c2) = (b1.count(), b2.count());
    assert!(c1 >= 60 && c2 >= 60, "b1 {c1}, b2 {c2}");
    // Not a strict alternation (that would be round robin).
    let alternations = order.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(
        alternations < 190,
        "{alternations} alternations in 200: looks like round robin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_prefers_the_idle_server() {
    let slow = Backend::builder()
        .name("slow")
        .delay(Duration::from_millis(400))
        .start()
        .await;
    let fast = Backend::named("fast").await;
    let gh = start_api(
        &[slow.addr_str(), fast.addr_str()],
        "balance = \"least_conn\"",
    )
    .await;
    let client = gh.client_h1();
    let url = gh.https_url("/api/lc");

    // 8 concurrent workers, 6 requests each.
    let mut workers = Vec::new();
    for _ in 0..8 {
        let client = client.clone();
        let url = url.clone();
        workers.push(tokio::spawn(async move {
            for _ in 0..6 {
                served_by(&client, &url).await.unwrap();
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let (s, f) = (slow.count(), fast.count());
    assert_eq!(s + f, 48);
    assert!(
        f >= 33,
        "fast {f}, slow {s}: least_conn should send most to the fast server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_by_header_is_sticky() {
    let backends = [
        Backend::named("h1").await,
        Backend::named("h2").await,
        Backend::named("h3").await,
    ];
    let servers: Vec<String> = backends.iter().map(Backend::addr_str).collect();
    let gh = start_api(
        &servers,
        "balance = \"consistent_hash\"\nhash_key = \"header:X-User\"",
    )
    .await;
    let client = gh.client_h1();
    let url = gh.https_url("/api/hash");

    let mut placement: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for round in 0..4 {
        for u in 0..16 {
            let user = format!("user-{u}");
            let resp = client
                .get(&url)
                .header("X-User", &user)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "round {round} {user}");
            let server = common::server_of(&resp.text().await.unwrap());
            placement.entry(user).or_default().insert(server);
        }
    }
    for (user, servers) in &placement {
        assert_eq!(servers.len(), 1, "{user} went to {servers:?}");
    }
    let used: BTreeSet<&String> = placement.values().flatten().collect();
    assert!(used.len() >= 2, "16 users all on {used:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_server_is_taken_out_and_comes_back() {
    let b1 = Backend::named("b1").await;
    let b2 = Backend::named("b2").await;
    let gh = start_api(&[b1.addr_str(), b2.addr_str()], FAST_HEALTH).await;
    let client = gh.client_h1();
    let url = gh.https_url("/api/h");

    for _ in 0..10 {
        served_by(&client, &url).await.unwrap();
    }
    assert!(b1.count() > 0 && b2.count() > 0, "both serve while healthy");
    assert!(
        eventually(Duration::from_secs(2), || async {
            b2.count_path("/health") > 0
        })
        .await,
        "no health check reached b2"
    );

    // Out within interval x threshold (400 ms) plus margin.
    b2.set_healthy(false);
    let flipped = Instant::now();
    let out = eventually(Duration::from_secs(2), || async {
        let before = b2.count();
        for _ in 0..6 {
            if served_by(&client, &url).await.is_err() {
                return false;
            }
        }
        b2.count() == before
    })
    .await;
    assert!(
        out,
        "b2 still served {:?} after /health turned 500",
        flipped.elapsed()
    );
    let before = b2.count();
    for _ in 0..20 {
        assert_eq!(served_by(&client, &url).await.unwrap(), "b1");
    }
    assert_eq!(b2.count(), before);

    b2.set_healthy(true);
    let back = eventually(Duration::from_secs(2), || async {
        served_by(&client, &url).await.ok().as_deref() == Some("b2")
    })
    .await;
    assert!(back, "b2 did not come back after /health turned 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_server_fails_no_request() {
    let b1 = Backend::named("b1").await;
    let b2 = Backend::named("b2").await;
    let gh = start_api(&[b1.addr_str(), b2.addr_str()], "retries = 2").await;
    let client = gh.client_h1();
    let url = gh.https_url("/api/k");

    let mut failures = Vec::new();
    for i in 0..200 {
        if i == 50 {
            b2.stop().await;
        }
        if let Err(e) = served_by(&client, &url).await {
            failures.push(format!("request {i}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(
        b2.count() >= 20,
        "b2 served {} before it was stopped",
        b2.count()
    );
    assert!(b1.count() >= 150, "b1 served {}", b1.count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_healthy_server_gives_503_json() {
    let b1 = Backend::named("b1").await;
    let b2 = Backend::named("b2").await;
    let gh = start_api(&[b1.addr_str(), b2.addr_str()], FAST_HEALTH).await;
    let client = gh.client_h1();
    let url = gh.https_url("/api/down");
    served_by(&client, &url).await.unwrap();

    b1.stop().await;
    b2.stop().await;
    let got_503 = eventually(Duration::from_secs(3), || async {
        client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 503)
    })
    .await;
    assert!(got_503, "no 503 after every server went down");
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    assert!(ct.unwrap_or_default().starts_with("application/json"));
    let id = resp
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_string());
    let body = json(&resp.text().await.unwrap());
    assert_eq!(body["status"], 503);
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert!(
        body["request_id"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    if let Some(id) = id {
        assert_eq!(body["request_id"].as_str(), Some(id.as_str()));
    }
}

/// "No server could be reached" has one answer, 503, from the first request
/// on: before any health check has run (servers start in rotation and every
/// connect fails) and after the checks took them out alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reachable_server_gives_503_before_and_after_the_checks() {
    let closed = [common::free_port(), common::free_port()];
    let servers: Vec<String> = closed.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    // The first check runs only after an hour: every answer here comes before it.
    let never = "\n[upstream.api.health]\npath = \"/health\"\ninterval = \"1h\"\n";
    let gh = start_api(&servers, never).await;
    let client = gh.client_h1();
    for _ in 0..3 {
        let resp = client.get(gh.https_url("/api/x")).send().await.unwrap();
        assert_eq!(resp.status(), 503, "before any check");
        let body = json(&resp.text().await.unwrap());
        assert_eq!(body["error"], "service_unavailable");
    }
    // The same once the checks have taken both out.
    let gh = start_api(&servers, FAST_HEALTH).await;
    let client = gh.client_h1();
    for _ in 0..3 {
        let resp = client.get(gh.https_url("/api/x")).send().await.unwrap();
        assert_eq!(resp.status(), 503);
    }
}

/// The keep-alive pool to a server: requests one after another share one
/// connection; once idle, it is closed by Gatehouse after `idle_timeout` (within
/// the pool's 1 s sweep), and the next request opens a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connection_is_reused_then_closed_after_idle_timeout() {
    let b = Backend::named("api").await;
    let gh = start_api(&[b.addr_str()], "idle_timeout = \"1s\"").await;
    let client = gh.client_h1();
    for _ in 0..5 {
        assert_eq!(
            served_by(&client, &gh.http_url("/api/x")).await,
            Ok("api".into())
        );
    }
    assert_eq!(
        b.accepted(),
        1,
        "five requests in a row over one upstream connection"
    );
    assert_eq!(b.open_connections(), 1);

    let idle_since = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || async {
            b.open_connections() == 0
        })
        .await,
        "the idle upstream connection is still open 5 s after a 1 s idle_timeout"
    );
    let closed_after = idle_since.elapsed();
    assert!(
        (Duration::from_millis(900)..=Duration::from_millis(2600)).contains(&closed_after),
        "idle upstream connection closed after {closed_after:?} (idle_timeout 1 s, sweep 1 s)"
    );

    assert_eq!(
        served_by(&client, &gh.http_url("/api/y")).await,
        Ok("api".into())
    );
    assert_eq!(
        b.accepted(),
        2,
        "a request after the close opens a new connection"
    );
}

/// The read timeout on a reused upstream connection counts from that request:
/// the timer the connection keeps from the request before (armed for an
/// earlier deadline) neither cuts the answer short nor lets it run long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_timeout_on_a_reused_upstream_connection_counts_from_its_request() {
    let b = Backend::named("api").await;
    let gh = start_api(&[b.addr_str()], "read_timeout = \"400ms\"").await;
    let client = gh.client_h1();
    assert_eq!(
        served_by(&client, &gh.http_url("/api/first")).await,
        Ok("api".into())
    );
    // The first request's deadline (400 ms after it) falls inside the second's wait.
    tokio::time::sleep(Duration::from_millis(250)).await;
    b.set_mode(Mode::NeverAnswer);
    let started = Instant::now();
    let resp = client.get(gh.http_url("/api/second")).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(resp.status(), 504);
    assert!(
        (Duration::from_millis(380)..Duration::from_millis(1500)).contains(&took),
        "504 after {took:?} with a 400 ms read timeout"
    );
    assert_eq!(b.count_path("/second"), 1);
    assert_eq!(b.accepted(), 1, "the second request reused the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_read_timeout_gives_504() {
    let b = Backend::builder()
        .name("mute")
        .mode(Mode::NeverAnswer)
        .start()
        .await;
    let gh = start_api(&[b.addr_str()], "read_timeout = \"300ms\"").await;

    let started = Instant::now();
    let resp = gh
        .client_h1()
        .get(gh.https_url("/api/slow"))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(resp.status(), 504);
    assert!(
        took < Duration::from_secs(2),
        "took {took:?} with a 300 ms read timeout"
    );
    assert!(b.count() >= 1, "the request reached the backend");
    assert_eq!(json(&resp.text().await.unwrap())["status"], 504);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_hanging_up_gives_502() {
    let b = Backend::builder()
        .name("rude")
        .mode(Mode::CloseWithoutAnswer)
        .start()
        .await;
    let gh = start_api(&[b.addr_str()], "").await;

    let resp = gh
        .client_h1()
        .get(gh.https_url("/api/bye"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert!(b.count() >= 1, "the request reached the backend");
    assert_eq!(json(&resp.text().await.unwrap())["status"], 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_hop_by_hop_field_alone_is_not_forwarded() {
    let b = Backend::named("b").await;
    let gh = start_api(&[b.addr_str()], "").await;
    // One field per request and no `Connection` header, so that each name on
    // its own must be recognised (vendor patch 13 decides from the names
    // present before removing any).
    for (name, value) in [
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("Proxy-Authenticate", "Basic"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("HTTP2-Settings", "AAMAAABkAAQAAP__"),
    ] {
        let req = format!(
            "GET /api/hop HTTP/1.1\r\nHost: h.test\r\n{name}: {value}\r\nX-Kept: yes\r\n\r\n"
        );
        let resp = common::raw::request(gh.http_addr(), req.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(resp.status, 200, "{name}: {}", resp.body_text());
        let seen = b.last_request().expect("the backend got the request");
        assert_eq!(seen.header(name), None, "{name} was forwarded");
        assert_eq!(seen.header("x-kept"), Some("yes"), "{name}");
    }
}

/// A browser's request (fetch metadata, client hints, `Connection:
/// keep-alive` with a `Keep-Alive` field) goes up with every field but the
/// hop-by-hop ones, each with its value (vendor patches 130 and 131: the
/// browser names are static names, and only the hop-by-hop fields present
/// are removed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_request_goes_up_whole_but_its_hop_by_hop_fields() {
    let b = Backend::named("b").await;
    let gh = start_api(&[b.addr_str()], "").await;
    let kept = [
        ("sec-ch-ua-platform", "\"Linux\""),
        (
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0.0.0",
        ),
        ("sec-ch-ua", "\"Chromium\";v=\"131\""),
        ("Sec-Ch-Ua-Mobile", "?0"),
        ("Accept", "application/json"),
        ("Sec-Fetch-Site", "same-origin"),
        ("sec-fetch-mode", "cors"),
        ("Sec-Fetch-Dest", "empty"),
        ("Sec-Fetch-User", "?1"),
        ("Priority", "u=1, i"),
        ("Upgrade-Insecure-Requests", "1"),
        ("Accept-Language", "en-US,en;q=0.9"),
        ("Cookie", "session=3f9a; theme=dark"),
    ];
    // The last case names no field in `Connection` and carries six more
    // hop-by-hop fields between the kept ones, so that each must be found by
    // its own name (the others are removed as nominated too).
    let more_hop_by_hop = [
        ("TE", "trailers"),
        ("Proxy-Connection", "keep-alive"),
        ("Trailer", "X-Checksum"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("HTTP2-Settings", "AAMAAABkAAQAAP__"),
        ("Proxy-Authenticate", "Basic"),
    ];
    let cases: [(&str, &[(&str, &str)]); 4] = [
        ("keep-alive", &[]),
        ("Keep-Alive", &[]),
        ("close, keep-alive", &[]),
        ("close", &more_hop_by_hop),
    ];
    for (connection, extra) in cases {
        let mut req = format!(
            "GET /api/browser HTTP/1.1\r\nHost: h.test\r\nConnection: {connection}\r\nKeep-Alive: timeout=5\r\n"
        );
        for (i, (name, value)) in kept.iter().enumerate() {
            req.push_str(&format!("{name}: {value}\r\n"));
            if let Some((name, value)) = extra.get(i) {
                req.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        req.push_str("\r\n");
        let resp = common::raw::request(gh.http_addr(), req.as_bytes())
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{connection}: {}", resp.body_text());
        let seen = b.last_request().expect("the backend got the request");
        assert_eq!(seen.header("keep-alive"), None, "{connection}");
        assert_eq!(seen.header("connection"), None, "{connection}");
        for (name, _) in more_hop_by_hop {
            assert_eq!(seen.header(name), None, "{connection}: {name} went up");
        }
        for (name, value) in kept {
            assert_eq!(seen.header_all(name), vec![value], "{connection}: {name}");
        }
        // Nothing else went up but Host and the forwarding fields. (The fields'
        // order is not kept: a removal moves the last field into its place,
        // which RFC 9110 section 5.3 allows for fields of different names.)
        let mut others: Vec<&str> = seen
            .headers
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| !kept.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)))
            .collect();
        others.sort_unstable();
        assert_eq!(
            others,
            [
                "host",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto",
                "x-real-ip",
                "x-request-id"
            ],
            "{connection}"
        );
    }
}

/// The raw HTTP/1 head is gone over once for the fields Gatehouse reads
/// (proxy/framing.rs): a client's `X-Forwarded-For` and `X-Request-Id` are
/// found in any spelling; a head without hop-by-hop fields goes up whole and
/// a field nominated by `Connection` still does not (vendor patch 76).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_forwarding_fields_are_found_in_any_spelling() {
    let b = Backend::named("b").await;
    let gh = start_api(&[b.addr_str()], "").await;
    let req = "GET /api/spell HTTP/1.1\r\nHost: h.test\r\nx-FORWARDED-for: 203.0.113.7\r\nX-REQUEST-ID: abc-123\r\nX-Kept: yes\r\nx-real-IP: 192.0.2.66\r\nX-Forwarded-PROTO: gopher\r\nx-forwarded-host: evil.test\r\n\r\n";
    let resp = common::raw::request(gh.http_addr(), req.as_bytes())
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    assert_eq!(resp.header("x-request-id"), Some("abc-123"));
    let seen = b.last_request().expect("the backend got the request");
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(seen.header_all("x-forwarded-for").len(), 1);
    assert_eq!(seen.header("x-request-id"), Some("abc-123"));
    assert_eq!(seen.header("x-kept"), Some("yes"));
    // The client's forwarding fields are replaced, never passed beside ours.
    for (name, value) in [
        ("x-real-ip", "127.0.0.1"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "h.test"),
        ("x-request-id", "abc-123"),
    ] {
        assert_eq!(seen.header_all(name), vec![value], "{name}");
    }

    let req = "GET /api/nominated HTTP/1.1\r\nHost: h.test\r\nConnection: X-Secret\r\nX-Secret: 1\r\nX-Kept: yes\r\n\r\n";
    let resp = common::raw::request(gh.http_addr(), req.as_bytes())
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    let seen = b.last_request().expect("the backend got the request");
    assert_eq!(seen.header("x-secret"), None, "a nominated field went up");
    assert_eq!(seen.header("x-kept"), Some("yes"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
}

/// A raw HTTP/1.1 server: each request head it reads (as sent, bytes) goes to
/// the channel, and each is answered with `answer`. Keep-alive connections
/// are served until the peer closes.
async fn raw_backend(
    answer: &'static [u8],
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = buf.drain(..end + 4).collect();
                        let _ = tx.send(head);
                        if conn.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// Header names are not kept in the case they came in: on the HTTP/1 wire,
/// both to the server and to the client, every name is written in
/// Title-Case (vendor patch 14; HTTP field names are case-insensitive), or
/// the customary spelling of a few well-known names (`X-Real-IP`, `ETag`).
/// Names of every kind of length are written (vendor patch 123: under 4
/// bytes, 4 to 7, 8 and over with a tail). The server's `Date` and
/// `Connection` are replaced: the time of the answer (patch 122 reads it from
/// the coarse clock) and what Gatehouse does with the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_names_go_out_in_title_case_on_http1() {
    let (addr, mut heads) = raw_backend(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\netag: \"e\"\r\nx-lower-name: 1\r\nX-SHOUTED-NAME: 2\r\nX-Mixed-CASE: 3\r\nage: 4\r\nserver: raw\r\nx-a-b-c-d-e: 5\r\nx-abcdefgh: 6\r\ndate: Thu, 01 Jan 1970 00:00:00 GMT\r\nconnection: keep-alive\r\n\r\nok",
    )
    .await;
    let gh = start_api(&[addr.to_string()], "").await;

    let request = "GET /api/case HTTP/1.1\r\nhost: h.test\r\nx-API-key: k\r\nUSER-AGENT: raw\r\nConnection: close\r\n\r\n";
    let response = common::raw::wire(gh.http_addr(), request.as_bytes())
        .await
        .expect("the response within the timeout");
    let response = String::from_utf8_lossy(&response);
    let head = response.split("\r\n\r\n").next().unwrap_or_default();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    for line in [
        "\r\nContent-Length: 2\r\n",
        "\r\nETag: \"e\"\r\n",
        "\r\nX-Lower-Name: 1\r\n",
        "\r\nX-Shouted-Name: 2\r\n",
        "\r\nX-Mixed-Case: 3\r\n",
        "\r\nAge: 4\r\n",
        "\r\nServer: raw\r\n",
        "\r\nX-A-B-C-D-E: 5\r\n",
        "\r\nX-Abcdefgh: 6\r\n",
        "\r\nX-Request-Id: ",
    ] {
        assert!(
            format!("{head}\r\n").contains(line),
            "{line:?} to the client: {head}"
        );
    }
    // One `Date` and one `Connection`, Gatehouse's (vendor patch 127 writes
    // them after the other fields): the client asked to close.
    let lines = |prefix: &str| {
        head.split("\r\n")
            .filter_map(|l| l.strip_prefix(prefix))
            .collect::<Vec<_>>()
    };
    assert_eq!(lines("Connection: "), vec!["close"], "{head}");
    let dates = lines("Date: ");
    assert_eq!(dates.len(), 1, "{head}");
    let date = dates[0];
    let date = httpdate::parse_http_date(date).expect("an HTTP date");
    let now = std::time::SystemTime::now();
    let skew = now.duration_since(date).unwrap_or_else(|e| e.duration());
    assert!(
        skew < Duration::from_secs(5),
        "Date {date:?} is {skew:?} from now: {head}"
    );

    // The request head the server got (health checks use /health; the
    // request is the one for /case).
    let upstream = tokio::time::timeout(common::raw::RAW_TIMEOUT, async {
        loop {
            let head = heads.recv().await.expect("the backend is running");
            if head.starts_with(b"GET /case ") {
                return String::from_utf8(head).unwrap();
            }
        }
    })
    .await
    .expect("the request reached the server");
    for line in [
        "\r\nHost: h.test\r\n",
        "\r\nX-Api-Key: k\r\n",
        "\r\nUser-Agent: raw\r\n",
        "\r\nX-Real-IP: 127.0.0.1\r\n",
        "\r\nX-Forwarded-For: 127.0.0.1\r\n",
        "\r\nX-Forwarded-Proto: http\r\n",
        "\r\nX-Forwarded-Host: h.test\r\n",
        "\r\nX-Request-Id: ",
    ] {
        assert!(
            upstream.contains(line),
            "{line:?} to the server: {upstream}"
        );
    }
    assert!(!upstream.contains("x-API-key"), "{upstream}");
}

/// An answer with an obs-fold (RFC 9112 section 5.2) reaches the client with the folded
/// value on one line and the other fields and the body as sent; an answer without one is
/// passed with its values as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folded_upstream_field_reaches_the_client_on_one_line() {
    let (addr, _heads) = raw_backend(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Folded: first\r\n \t second\r\nX-Plain: a  b\t c\r\n\r\nok",
    )
    .await;
    let (plain_addr, _plain_heads) = raw_backend(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Plain: a  b\t c\r\nX-Quoted: \"x, y\"\r\n\r\nok",
    )
    .await;
    for (addr, want) in [
        (
            addr,
            &[
                "\r\nX-Folded: first second\r\n",
                "\r\nX-Plain: a  b\t c\r\n",
            ][..],
        ),
        (
            plain_addr,
            &["\r\nX-Plain: a  b\t c\r\n", "\r\nX-Quoted: \"x, y\"\r\n"][..],
        ),
    ] {
        let gh = start_api(&[addr.to_string()], "").await;
        let request = "GET /api/fold HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n";
        let response = common::raw::wire(gh.http_addr(), request.as_bytes())
            .await
            .expect("the response within the timeout");
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, "ok", "{response}");
        for line in want {
            assert!(
                format!("{head}\r\n").contains(line),
                "{line:?} to the client: {head}"
            );
        }
        assert!(!head.contains("\n \t"), "{head}");
    }
}

// The reuse of an upstream HTTP/1.x connection: each answer below decides
// whether the connection may carry the next request, from facts the client
// session keeps of the request it wrote and the answer head it handed over
// (vendor patches 62, 63, 96). The scripted server keeps every socket open,
// so a wrong "keep it" is not undone by the pool's check for a closed socket
// nor by a retry on a fresh connection: the second request would arrive, and
// be answered, on the first connection.

/// GET `url`: the status and the body.
async fn get_text(client: &reqwest::Client, url: &str) -> (u16, String) {
    let resp = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e:?}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// The (connection number, path) of each request the server read.
fn connections_of(b: &ScriptedBackend) -> Vec<(usize, String)> {
    b.requests()
        .into_iter()
        .map(|r| (r.connection, r.path))
        .collect()
}

/// `/api/one` then `/api/two` over one keep-alive client connection (so the
/// first exchange, and the release of its upstream connection, is over
/// before the second starts); both must be answered 200 with `body`.
async fn get_one_then_two(gh: &Gatehouse, body: &str) {
    let client = gh.client_h1();
    for path in ["/api/one", "/api/two"] {
        let (status, got) = get_text(&client, &gh.http_url(path)).await;
        assert_eq!((status, got.as_str()), (200, body), "{path}");
    }
}

/// The control for the answers below that end the connection: an HTTP/1.1
/// answer framed by `Content-Length` with no `Connection` field is kept, and
/// the next request goes over the same upstream connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http11_answer_keeps_the_upstream_connection() {
    let b = ScriptedBackend::answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let gh = start_api(&[b.addr_str()], "").await;
    get_one_then_two(&gh, "ok").await;
    assert_eq!(
        connections_of(&b),
        [(1, "/one".to_string()), (1, "/two".to_string())],
        "both requests over the first upstream connection"
    );
    assert_eq!(b.accepted(), 1);
    for r in b.requests() {
        assert!(
            r.head.starts_with("GET ") && r.head.contains(" HTTP/1.1\r\n"),
            "{}",
            r.head
        );
        assert!(
            !r.head
                .to_ascii_lowercase()
                .contains("\r\nconnection: close"),
            "the request asked the server to close: {}",
            r.head
        );
    }
}

/// `Connection: close` on an HTTP/1.1 answer ends the upstream connection even
/// when the server leaves its socket open: the next request opens a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_answer_with_connection_close_is_not_reused() {
    let b = ScriptedBackend::answering(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    let gh = start_api(&[b.addr_str()], "").await;
    get_one_then_two(&gh, "ok").await;
    assert_eq!(
        connections_of(&b),
        [(1, "/one".to_string()), (2, "/two".to_string())],
        "the second request went over the connection the server closed by `Connection: close`"
    );
    assert_eq!(b.accepted(), 2);
}

/// An HTTP/1.0 answer is the last on its connection unless it says
/// `Connection: keep-alive`; one with `Transfer-Encoding` is the last even
/// when it does (RFC 9112 section 6.1). The server leaves the socket open in
/// each case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_upstream_answer_is_reused_only_with_keep_alive() {
    let cases: [(&'static [u8], usize, &str); 3] = [
        (
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
            2,
            "HTTP/1.0 without keep-alive",
        ),
        (
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
            1,
            "HTTP/1.0 with Connection: keep-alive",
        ),
        (
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            2,
            "HTTP/1.0 with Transfer-Encoding",
        ),
    ];
    for (answer, connections, case) in cases {
        let b = ScriptedBackend::answering(answer).await;
        let gh = start_api(&[b.addr_str()], "").await;
        let client = gh.client_h1();
        for path in ["/api/one", "/api/two"] {
            let (status, got) = get_text(&client, &gh.http_url(path)).await;
            assert_eq!((status, got.as_str()), (200, "ok"), "{case}: {path}");
        }
        let want: Vec<(usize, String)> = vec![(1, "/one".into()), (connections, "/two".into())];
        assert_eq!(connections_of(&b), want, "{case}");
        assert_eq!(b.accepted(), connections, "{case}");
    }
}

/// An interim `103 Early Hints` from the server is passed on to an HTTP/1.1
/// client ahead of the final answer (Pingora's default: the server session
/// does not drop informational answers); the final answer is the one counted
/// and logged (200, not 103), and the connection is kept for the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_103_is_passed_on_and_the_connection_kept() {
    let b = ScriptedBackend::answering(
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    let gh = Gatehouse::builder(
        r#"
[server]
threads = 1
grace_period = "1s"
access_log = "{dir}/access.log"
pid_file = "{dir}/gatehouse.pid"
upgrade_sock = "{dir}/upgrade.sock"
"#,
    )
    .append(common::HTTP_PLAIN)
    .append(common::ADMIN)
    .append(common::API)
    .var("api", b.addr_str())
    .start()
    .await;

    // One client connection, so the second request starts after the first
    // exchange (and the release of its upstream connection) is over.
    let mut stream = tokio::net::TcpStream::connect(gh.http_addr())
        .await
        .expect("connect to gatehouse");
    for path in ["/api/one", "/api/two"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: h.test\r\n\r\n");
        let resp = common::raw::exchange(&mut stream, request.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(resp.status, 200, "{path}: {}", resp.body_text());
        assert_eq!(resp.body_text(), "ok", "{path}");
        let interim: Vec<u16> = resp.interim.iter().map(|(s, _)| *s).collect();
        assert_eq!(interim, [103], "{path}: the interim answers passed on");
        let link = resp.interim[0]
            .1
            .iter()
            .find(|(k, _)| k == "link")
            .map(|(_, v)| v.as_str());
        assert_eq!(
            link,
            Some("</style.css>; rel=preload; as=style"),
            "{path}: the 103's Link field"
        );
    }
    assert_eq!(
        connections_of(&b),
        [(1, "/one".to_string()), (1, "/two".to_string())],
        "both requests over the first upstream connection"
    );
    assert_eq!(b.accepted(), 1);

    // Counted and logged as the final answer.
    let within = Duration::from_secs(10);
    assert!(
        gh.wait_metric(
            "gatehouse_requests_total",
            &[("status", "200")],
            2.0,
            within
        )
        .await,
        "gatehouse_requests_total{{status=\"200\"}} is {:?}, not 2",
        gh.metric("gatehouse_requests_total", &[("status", "200")])
            .await
    );
    assert!(
        gh.wait_metric(
            "gatehouse_upstream_requests_total",
            &[("status", "200")],
            2.0,
            within
        )
        .await
    );
    for name in [
        "gatehouse_requests_total",
        "gatehouse_upstream_requests_total",
    ] {
        assert_eq!(gh.metric(name, &[("status", "103")]).await, None, "{name}");
    }
    let log = gh.dir().join("access.log");
    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    assert!(
        eventually(within, || std::future::ready(lines().len() >= 2)).await,
        "two access log lines: {:?}",
        lines()
    );
    let statuses: Vec<serde_json::Value> = lines().iter().map(|l| l["status"].clone()).collect();
    assert_eq!(statuses, [200, 200], "{:?}", lines());
}

/// The answer to a `HEAD` has no body whatever its `Content-Length` says:
/// the connection is kept and the next request's answer, on the same
/// connection, reaches its client whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_answer_has_no_body_and_the_next_answer_is_intact() {
    let b = ScriptedBackend::start(|req| {
        if req.method == "HEAD" {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec()
        } else {
            let body = format!("answer to {}", req.path);
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }
    })
    .await;
    let gh = start_api(&[b.addr_str()], "").await;
    let client = gh.client_h1();
    for round in ["1", "2"] {
        let url = gh.http_url(&format!("/api/head{round}"));
        let resp = client
            .head(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("HEAD {url}: {e:?}"));
        assert_eq!(resp.status(), 200, "HEAD {url}");
        assert_eq!(
            resp.headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok()),
            Some("5"),
            "HEAD {url}: the server's Content-Length"
        );
        let (status, body) = get_text(&client, &gh.http_url(&format!("/api/get{round}"))).await;
        assert_eq!(status, 200, "GET after HEAD {round}");
        assert_eq!(body, format!("answer to /get{round}"), "round {round}");
    }
    let seen: Vec<(usize, String, String)> = b
        .requests()
        .into_iter()
        .map(|r| (r.connection, r.method, r.path))
        .collect();
    let want: Vec<(usize, String, String)> = [
        ("HEAD", "/head1"),
        ("GET", "/get1"),
        ("HEAD", "/head2"),
        ("GET", "/get2"),
    ]
    .iter()
    .map(|(m, p)| (1, m.to_string(), p.to_string()))
    .collect();
    assert_eq!(seen, want, "all four over the first upstream connection");
    assert_eq!(b.accepted(), 1);
}

/// Bytes after the end of an answer's body, in the same write (here a whole
/// second answer nobody asked for), make the connection unfit for reuse: the
/// next request goes over a new connection and gets its own answer, never the
/// smuggled one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrequested_answer_after_the_body_is_never_delivered() {
    let b = ScriptedBackend::start(|req| {
        let body = format!("answer to {}", req.path);
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}\
             HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Smuggled: yes\r\n\r\nsmuggled",
            body.len()
        )
        .into_bytes()
    })
    .await;
    let gh = start_api(&[b.addr_str()], "").await;
    let client = gh.client_h1();
    for path in ["/one", "/two", "/three"] {
        let url = gh.http_url(&format!("/api{path}"));
        let resp = client
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e:?}"));
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers().get("x-smuggled"), None, "{path}");
        assert_eq!(
            resp.text().await.unwrap_or_default(),
            format!("answer to {path}"),
            "{path}"
        );
    }
    assert_eq!(
        connections_of(&b),
        [
            (1, "/one".to_string()),
            (2, "/two".to_string()),
            (3, "/three".to_string())
        ],
        "each request over a new upstream connection"
    );
    assert_eq!(b.accepted(), 3);
}

// Findings (failing on main afc1df6): how an HTTP/1.0 client is answered.

/// An HTTP/1.0 request without `Connection: keep-alive` is the last on its
/// connection (RFC 9112 section 9.3): the answer says `Connection: close` and
/// Gatehouse closes the connection after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_client_without_keep_alive_gets_connection_close() {
    let b = ScriptedBackend::answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let gh = start_api(&[b.addr_str()], "").await;
    // Read until Gatehouse closes (raw::wire times out after 5 s if it does not).
    let wire = common::raw::wire(
        gh.http_addr(),
        b"GET /api/ten HTTP/1.0\r\nHost: h.test\r\n\r\n",
    )
    .await
    .expect("Gatehouse closes the HTTP/1.0 connection after the answer");
    let wire = String::from_utf8_lossy(&wire);
    assert!(wire.contains(" 200 "), "{wire}");
    assert!(wire.contains("\r\nConnection: close\r\n"), "{wire}");
    assert!(wire.ends_with("\r\n\r\nok"), "{wire}");
}

/// An answer whose end is the connection's close (no length, no chunks) goes
/// to an HTTP/1.0 keep-alive client the same way, never chunked (RFC 9112
/// section 6.1; vendor patch 128), so Gatehouse closes that connection too and
/// the answer says `Connection: close` (patch 127 chooses the value after the
/// body framing is known). Before, the client got `Transfer-Encoding:
/// chunked`, which HTTP/1.0 does not know, with `Connection: keep-alive`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_delimited_answer_to_an_http10_client_says_connection_close() {
    // Answers each request without a length and closes, as an HTTP/1.0 server
    // does (health checks get a length).
    let b = ScriptedBackend::closing(|req| {
        if req.path.starts_with("/health") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
        } else {
            b"HTTP/1.1 200 OK\r\n\r\nuntil close".to_vec()
        }
    })
    .await;
    let gh = start_api(&[b.addr_str()], "").await;
    // Read until Gatehouse closes (raw::wire times out after 5 s if it does not).
    let wire = common::raw::wire(
        gh.http_addr(),
        b"GET /api/eof HTTP/1.0\r\nHost: h.test\r\nConnection: keep-alive\r\n\r\n",
    )
    .await
    .expect("Gatehouse closes the connection after a close-delimited answer");
    let wire = String::from_utf8_lossy(&wire);
    assert!(
        wire.starts_with("HTTP/1.0 200 ") || wire.starts_with("HTTP/1.1 200 "),
        "{wire}"
    );
    assert!(wire.contains("\r\nConnection: close\r\n"), "{wire}");
    assert!(!wire.contains("keep-alive"), "{wire}");
    assert!(wire.ends_with("\r\n\r\nuntil close"), "{wire}");
}

/// An HTTP/1.0 client is never sent a 1xx (RFC 9110 section 15.2: "a server
/// MUST NOT send a 1xx response to an HTTP/1.0 client"); it gets the final
/// answer alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_103_is_not_passed_on_to_an_http10_client() {
    let b = ScriptedBackend::answering(
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    let gh = start_api(&[b.addr_str()], "").await;
    let mut stream = tokio::net::TcpStream::connect(gh.http_addr())
        .await
        .expect("connect to gatehouse");
    let resp = common::raw::exchange(
        &mut stream,
        b"GET /api/hints HTTP/1.0\r\nHost: h.test\r\nConnection: keep-alive\r\n\r\n",
    )
    .await
    .expect("the answer within the timeout");
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    assert_eq!(resp.body_text(), "ok");
    let interim: Vec<u16> = resp.interim.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        interim,
        [] as [u16; 0],
        "1xx answers sent to an HTTP/1.0 client"
    );
}
