//! The plain listener: 301 to HTTPS built from the client's own Host, 400 for a
//! missing or malformed Host, and plain serving when the redirect is off.

use crate::common;
use common::{raw, Backend, Gatehouse};

/// Plain listener redirecting, HTTPS listener, one route to a backend.
const CONFIG: &str = r#"
[[route]]
prefix = "/"
upstream = "app"

[upstream.app]
servers = ["{app}"]
"#;

async fn start(http_section: &str, app: &Backend) -> Gatehouse {
    Gatehouse::builder(http_section)
        .append(common::HTTPS)
        .append(CONFIG)
        .backend("app", app)
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_to_https_keeping_path_and_query() {
    let app = Backend::named("app").await;
    let gh = start(common::HTTP_REDIRECT, &app).await;

    for host in ["example.test:8080", "example.test"] {
        let resp = raw::request(gh.http_addr(), &raw::get("/path/x?q=1&b=two", Some(host)))
            .await
            .unwrap();
        assert_eq!(resp.status, 301, "Host {host}");
        assert_eq!(
            resp.header("location"),
            Some(format!("https://example.test:{}/path/x?q=1&b=two", gh.https_port).as_str()),
            "Host {host}: the Host's own port is dropped and the HTTPS port put in"
        );
    }
    assert_eq!(
        app.count(),
        0,
        "a redirected request must not reach the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_omits_port_443() {
    let app = Backend::named("app").await;
    let http = r#"
[http]
listen = ["127.0.0.1:{http_port}"]
redirect_to_https = true
https_port = 443
"#;
    let gh = start(http, &app).await;
    let resp = raw::request(
        gh.http_addr(),
        &raw::get("/a?b=c", Some("www.example.test:8080")),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 301);
    assert_eq!(
        resp.header("location"),
        Some("https://www.example.test/a?b=c")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_junk_host_is_400() {
    let app = Backend::named("app").await;
    let gh = start(common::HTTP_REDIRECT, &app).await;

    let resp = raw::request(gh.http_addr(), &raw::get("/", None))
        .await
        .unwrap();
    assert_eq!(resp.status, 400, "no Host");
    assert!(resp.header("location").is_none());

    for host in [
        "evil.com/x",
        "evil.com x",
        "user@evil.com",
        "evil.com:80:80",
        "evil.com:http",
    ] {
        let resp = raw::request(gh.http_addr(), &raw::get("/p", Some(host)))
            .await
            .unwrap();
        assert_eq!(resp.status, 400, "Host {host:?}");
        let location = resp.header("location").unwrap_or_default();
        assert!(
            !location.contains("evil"),
            "Host {host:?} redirected to {location}"
        );
    }
    assert_eq!(app.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_off_serves_routes_on_plain_http() {
    let app = Backend::named("app").await;
    let gh = start(common::HTTP_PLAIN, &app).await;

    let resp = gh
        .client()
        .get(gh.http_url("/hello?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("location").is_none());
    let body = resp.text().await.unwrap();
    assert_eq!(common::server_of(&body), "app");
    assert_eq!(app.last_request().unwrap().path, "/hello?x=1");
}
