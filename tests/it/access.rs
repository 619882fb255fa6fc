//! Access lists against the real binary: listed clients pass, others get a
//! 403 JSON with a request id and never reach the backend, deny is checked
//! before allow, `X-Forwarded-For` counts only from a trusted proxy, refused
//! clients spend no rate-limit tokens, and `gatehouse_access_denied_total`
//! counts by list. Clients are told apart by their loopback source address
//! (127.0.0.1 and 127.0.0.2).

use crate::common;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::{Backend, Gatehouse};

const LOCAL1: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const LOCAL2: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

const ROUTES: &str = r#"
[[route]]
prefix = "/office/"
upstream = "api"
access = "office"
rate_limit = "shared"

[[route]]
prefix = "/both/"
upstream = "api"
access = "both"

[[route]]
prefix = "/open/"
upstream = "api"

[upstream.api]
servers = ["{api}"]

[rate_limit.shared]
key = "header:x-key"
rate = 0.1
burst = 1

[access.office]
allow = ["127.0.0.1", "192.0.2.0/24"]

[access.both]
allow = ["127.0.0.0/8"]
deny = ["127.0.0.2"]
"#;

async fn start(server_extra: &str) -> (Backend, Gatehouse) {
    let api = Backend::named("api").await;
    let server = format!(
        "[server]\nthreads = 2\ngrace_period = \"1s\"\naccess_log = \"off\"\npid_file = \"{{dir}}/gatehouse.pid\"\nupgrade_sock = \"{{dir}}/upgrade.sock\"\n{server_extra}\n"
    );
    let gh = Gatehouse::builder(&server)
        .append(common::HTTP_PLAIN)
        .append(common::ADMIN)
        .append(ROUTES)
        .backend("api", &api)
        .start()
        .await;
    (api, gh)
}

fn client_from(ip: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip)
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get(
    gh: &Gatehouse,
    from: IpAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client_from(from).get(gh.http_url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

async fn denied(gh: &Gatehouse, list: &str) -> f64 {
    gh.metric("gatehouse_access_denied_total", &[("list", list)])
        .await
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlisted_clients_get_403_with_a_request_id_and_are_counted() {
    let (api, gh) = start("").await;
    let ok = get(&gh, LOCAL1, "/office/x", &[]).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(api.count(), 1);

    let refused = get(&gh, LOCAL2, "/office/x", &[("x-request-id", "refused-1")]).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(
        refused.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["status"], 403);
    assert_eq!(body["request_id"], "refused-1");
    assert_eq!(
        api.count(),
        1,
        "the refused request never reached the backend"
    );

    assert_eq!(get(&gh, LOCAL2, "/open/x", &[]).await.status(), 200);
    assert_eq!(denied(&gh, "office").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_is_checked_before_allow() {
    let (_api, gh) = start("").await;
    assert_eq!(get(&gh, LOCAL1, "/both/x", &[]).await.status(), 200);
    assert_eq!(get(&gh, LOCAL2, "/both/x", &[]).await.status(), 403);
    assert_eq!(denied(&gh, "both").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    // No trusted proxies: 127.0.0.2 claiming to be 127.0.0.1 is still 127.0.0.2.
    let (_api, gh) = start("").await;
    let spoofed = get(
        &gh,
        LOCAL2,
        "/office/x",
        &[("x-forwarded-for", "127.0.0.1")],
    )
    .await;
    assert_eq!(spoofed.status(), 403);
    drop(gh);

    // 127.0.0.1 is a trusted proxy: the client is the address it forwards for.
    let (_api, gh) = start("trusted_proxies = [\"127.0.0.1\"]").await;
    let forwarded = get(
        &gh,
        LOCAL1,
        "/office/x",
        &[("x-forwarded-for", "192.0.2.9")],
    )
    .await;
    assert_eq!(forwarded.status(), 200, "192.0.2.9 is listed");
    let outside = get(
        &gh,
        LOCAL1,
        "/office/x",
        &[("x-forwarded-for", "203.0.113.5")],
    )
    .await;
    assert_eq!(
        outside.status(),
        403,
        "203.0.113.5 is not, though its proxy is"
    );
    // An untrusted peer's header is still not believed.
    let spoofed = get(
        &gh,
        LOCAL2,
        "/office/x",
        &[("x-forwarded-for", "127.0.0.1")],
    )
    .await;
    assert_eq!(spoofed.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_clients_spend_no_rate_limit_tokens() {
    // `/office/` has one token per `x-key` (refilling every 10 s), checked
    // after the access list.
    let (_api, gh) = start("").await;
    let key = [("x-key", "k")];
    for _ in 0..3 {
        assert_eq!(get(&gh, LOCAL2, "/office/x", &key).await.status(), 403);
    }
    assert_eq!(get(&gh, LOCAL1, "/office/x", &key).await.status(), 200);
    assert_eq!(get(&gh, LOCAL1, "/office/x", &key).await.status(), 429);
}
