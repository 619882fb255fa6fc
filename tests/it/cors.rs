//! CORS at the edge against the real binary: preflights answered by
//! Gatehouse (the backend never sees them), allowed and refused origins,
//! `*.domain` patterns, credentials, `Vary: Origin` appended to the
//! backend's `Vary`, and the headers on Gatehouse's own answers (errors,
//! static files). `cors_browser` runs the same policy in headless Chromium.

use crate::common;
use reqwest::{Method, Response};

use common::{Backend, Gatehouse};

const ROUTES: &str = r#"
[[route]]
prefix = "/api/"
upstream = "api"
strip_prefix = true
cors = "app"

[[route]]
prefix = "/creds/"
upstream = "api"
cors = "creds"

[[route]]
prefix = "/open/"
upstream = "api"
cors = "open"

[[route]]
prefix = "/plain/"
upstream = "api"

[[route]]
prefix = "/dead/"
upstream = "dead"
cors = "app"

[[route]]
prefix = "/"
static = "site"
cors = "app"

[static.site]
root = "site"

[upstream.api]
servers = ["{api}"]

[upstream.dead]
servers = ["127.0.0.1:1"]
retries = 0

[cors.app]
allow_origins = ["https://app.example.com", "https://*.example.org"]
allow_methods = ["GET", "POST", "PUT", "DELETE"]
allow_headers = ["Content-Type", "Authorization"]
expose_headers = ["X-Request-Id"]
max_age = "10m"

[cors.creds]
allow_origins = ["https://app.example.com"]
allow_credentials = true

[cors.open]
allow_origins = ["*"]
"#;

const APP: &str = "https://app.example.com";

async fn start() -> (Backend, Gatehouse) {
    let api = Backend::builder()
        .name("api")
        .response_header("vary", "Accept-Encoding")
        .start()
        .await;
    let gh = Gatehouse::builder(common::HTTP_PLAIN)
        .append(ROUTES)
        .file("site/index.html", "<p>site</p>")
        .backend("api", &api)
        .start()
        .await;
    (api, gh)
}

async fn send(gh: &Gatehouse, method: Method, path: &str, headers: &[(&str, &str)]) -> Response {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut req = client.request(method, gh.http_url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn header<'a>(resp: &'a Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).map(|v| v.to_str().unwrap())
}

fn vary(resp: &Response) -> Vec<String> {
    resp.headers()
        .get_all("vary")
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect()
}

async fn preflight(gh: &Gatehouse, path: &str, origin: &str) -> Response {
    send(
        gh,
        Method::OPTIONS,
        path,
        &[
            ("origin", origin),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "content-type"),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights_are_answered_at_the_edge_and_never_reach_the_backend() {
    let (api, gh) = start().await;
    let ok = preflight(&gh, "/api/users", APP).await;
    assert_eq!(ok.status(), 204);
    assert_eq!(header(&ok, "access-control-allow-origin"), Some(APP));
    assert_eq!(
        header(&ok, "access-control-allow-methods"),
        Some("GET, POST, PUT, DELETE")
    );
    assert_eq!(
        header(&ok, "access-control-allow-headers"),
        Some("Content-Type, Authorization")
    );
    assert_eq!(header(&ok, "access-control-max-age"), Some("600"));
    assert_eq!(header(&ok, "access-control-allow-credentials"), None);
    assert_eq!(header(&ok, "content-length"), None, "a 204 has no length");
    assert!(vary(&ok).contains(&"origin".to_string()));
    assert!(header(&ok, "x-request-id").is_some());

    let sub = preflight(&gh, "/api/users", "https://a.b.example.org").await;
    assert_eq!(sub.status(), 204);
    assert_eq!(
        header(&sub, "access-control-allow-origin"),
        Some("https://a.b.example.org")
    );

    for evil in [
        "https://evil.com",
        "https://example.org.evil.com",
        "http://app.example.com",
    ] {
        let refused = preflight(&gh, "/api/users", evil).await;
        assert_eq!(refused.status(), 403, "{evil}");
        assert_eq!(header(&refused, "access-control-allow-origin"), None);
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(body["status"], 403);
        assert!(body["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    }
    assert_eq!(api.count(), 0, "no preflight reached the backend");

    // Without a policy the route is Gatehouse's no business: the backend answers.
    let plain = preflight(&gh, "/plain/x", APP).await;
    assert_eq!(plain.status(), 200);
    assert_eq!(header(&plain, "access-control-allow-origin"), None);
    assert_eq!(api.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_origins_get_cors_headers_and_vary_is_appended() {
    let (api, gh) = start().await;
    let ok = send(&gh, Method::GET, "/api/users", &[("origin", APP)]).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(header(&ok, "access-control-allow-origin"), Some(APP));
    assert_eq!(
        header(&ok, "access-control-expose-headers"),
        Some("X-Request-Id")
    );
    assert_eq!(header(&ok, "access-control-allow-credentials"), None);
    assert_eq!(vary(&ok), ["accept-encoding", "origin"]);
    assert_eq!(
        api.last_request().unwrap().header("origin"),
        Some(APP),
        "the backend still sees the origin"
    );

    for evil in [
        "https://example.org.evil.com",
        "https://example.org",
        "null",
    ] {
        let refused = send(&gh, Method::GET, "/api/users", &[("origin", evil)]).await;
        assert_eq!(refused.status(), 200, "the request itself is not refused");
        assert_eq!(
            header(&refused, "access-control-allow-origin"),
            None,
            "{evil}"
        );
        assert_eq!(header(&refused, "access-control-expose-headers"), None);
        assert_eq!(vary(&refused), ["accept-encoding", "origin"]);
    }
    let no_origin = send(&gh, Method::GET, "/api/users", &[]).await;
    assert_eq!(header(&no_origin, "access-control-allow-origin"), None);
    assert_eq!(vary(&no_origin), ["accept-encoding", "origin"]);

    let plain = send(&gh, Method::GET, "/plain/x", &[("origin", APP)]).await;
    assert_eq!(header(&plain, "access-control-allow-origin"), None);
    assert_eq!(
        vary(&plain),
        ["accept-encoding"],
        "routes without a policy are untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_echo_the_origin_and_star_is_only_without_them() {
    let (_api, gh) = start().await;
    let creds = send(&gh, Method::GET, "/creds/me", &[("origin", APP)]).await;
    assert_eq!(header(&creds, "access-control-allow-origin"), Some(APP));
    assert_eq!(
        header(&creds, "access-control-allow-credentials"),
        Some("true")
    );
    let pre = preflight(&gh, "/creds/me", APP).await;
    assert_eq!(pre.status(), 204);
    assert_eq!(header(&pre, "access-control-allow-origin"), Some(APP));
    assert_eq!(
        header(&pre, "access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        header(&pre, "access-control-allow-methods"),
        Some("GET, HEAD, POST"),
        "the default methods"
    );

    let open = send(
        &gh,
        Method::GET,
        "/open/x",
        &[("origin", "https://anyone.test")],
    )
    .await;
    assert_eq!(header(&open, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&open, "access-control-allow-credentials"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gatehouse_own_answers_and_static_files_carry_the_headers() {
    let (_api, gh) = start().await;
    let page = send(&gh, Method::GET, "/index.html", &[("origin", APP)]).await;
    assert_eq!(page.status(), 200);
    assert_eq!(header(&page, "access-control-allow-origin"), Some(APP));
    let missing = send(&gh, Method::GET, "/nothing.html", &[("origin", APP)]).await;
    assert_eq!(missing.status(), 404);
    assert_eq!(header(&missing, "access-control-allow-origin"), Some(APP));
    let dead = send(&gh, Method::GET, "/dead/x", &[("origin", APP)]).await;
    assert!(dead.status().is_server_error(), "{}", dead.status());
    assert_eq!(header(&dead, "access-control-allow-origin"), Some(APP));
    assert!(vary(&dead).contains(&"origin".to_string()));
    let body: serde_json::Value = dead.json().await.unwrap();
    assert!(body["request_id"].is_string());
}
