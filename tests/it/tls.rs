//! The TLS listener: protocol versions, ALPN, certificates chosen by SNI, HSTS,
//! and the `[headers]` added to responses.

use crate::common;
use common::tls::{self, TLS12, TLS13};
use common::{Backend, Gatehouse};

const HSTS: &str = "max-age=31536000; includeSubDomains";
const INDEX: &str = "<!doctype html><title>home</title>";

/// Plain listener without redirect, HTTPS with HSTS, `[headers]`, a static
/// site at `/` and an upstream at `/api/`.
const CONFIG: &str = r#"
[http]
listen = ["127.0.0.1:{http_port}"]
redirect_to_https = false

[https]
listen = ["127.0.0.1:{https_port}"]
self_signed = true
cert = "certs/server.crt"
key = "certs/server.key"
hsts = "max-age=31536000; includeSubDomains"

[headers]
"X-Content-Type-Options" = "nosniff"
"X-Frame-Options" = "DENY"

[[route]]
prefix = "/api/"
upstream = "api"
strip_prefix = true

[[route]]
prefix = "/"
static = "site"

[static.site]
root = "site"
index = "index.html"

[upstream.api]
servers = ["{api}"]
"#;

async fn start_full(api: &Backend) -> Gatehouse {
    Gatehouse::builder(CONFIG)
        .file("site/index.html", INDEX)
        .backend("api", api)
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls13_and_tls12_handshakes_succeed() {
    let api = Backend::named("api").await;
    let gh = start_full(&api).await;

    let t13 = tls::handshake_with(gh.https_addr(), "localhost", &["http/1.1"], &[&TLS13])
        .await
        .unwrap();
    assert!(t13.is_tls13(), "{:?}", t13.version);
    let t12 = tls::handshake_with(gh.https_addr(), "localhost", &["http/1.1"], &[&TLS12])
        .await
        .unwrap();
    assert!(t12.is_tls12(), "{:?}", t12.version);
    // Both versions offered: the best one wins.
    let best = tls::handshake(gh.https_addr(), "localhost", &[])
        .await
        .unwrap();
    assert!(best.is_tls13(), "{:?}", best.version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_negotiates_h2_and_http11() {
    let api = Backend::named("api").await;
    let gh = start_full(&api).await;

    let h2 = tls::handshake(gh.https_addr(), "localhost", &["h2", "http/1.1"])
        .await
        .unwrap();
    assert_eq!(h2.alpn.as_deref(), Some("h2"));
    let h1 = tls::handshake(gh.https_addr(), "localhost", &["http/1.1"])
        .await
        .unwrap();
    assert_eq!(h1.alpn.as_deref(), Some("http/1.1"));

    // And whole requests over each protocol, static and proxied.
    for path in ["/", "/api/x"] {
        let r2 = gh.client().get(gh.https_url(path)).send().await.unwrap();
        assert_eq!(r2.version(), reqwest::Version::HTTP_2, "{path}");
        assert_eq!(r2.status(), 200, "{path}");
        let r1 = gh.client_h1().get(gh.https_url(path)).send().await.unwrap();
        assert_eq!(r1.version(), reqwest::Version::HTTP_11, "{path}");
        assert_eq!(r1.status(), 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_off_offers_no_h2() {
    let https = common::HTTPS.replace("self_signed = true", "self_signed = true\nhttp2 = false");
    let gh = Gatehouse::builder(&https)
        .append(
            r#"
[[route]]
prefix = "/"
static = "site"
[static.site]
root = "site"
"#,
        )
        .file("site/index.html", INDEX)
        .start()
        .await;

    let info = tls::handshake(gh.https_addr(), "localhost", &["h2", "http/1.1"])
        .await
        .unwrap();
    assert_ne!(info.alpn.as_deref(), Some("h2"));
    // A client that only speaks h2 gets no h2.
    if let Ok(info) = tls::handshake(gh.https_addr(), "localhost", &["h2"]).await {
        assert_ne!(info.alpn.as_deref(), Some("h2"));
    }
    let resp = gh.client().get(gh.https_url("/")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_selects_the_certificate() {
    let api = rcgen::generate_simple_self_signed(vec!["api.example.test".to_string()]).unwrap();
    let wild = rcgen::generate_simple_self_signed(vec!["*.wild.test".to_string()]).unwrap();
    let sni = r#"
[[https.sni]]
hosts = ["api.example.test"]
cert = "certs/api.crt"
key = "certs/api.key"

[[https.sni]]
hosts = ["*.wild.test"]
cert = "certs/wild.crt"
key = "certs/wild.key"

[[route]]
prefix = "/"
static = "site"
[static.site]
root = "site"
"#;
    let gh = Gatehouse::builder(common::HTTPS)
        .append(sni)
        .file("certs/api.crt", api.cert.pem())
        .file("certs/api.key", api.signing_key.serialize_pem())
        .file("certs/wild.crt", wild.cert.pem())
        .file("certs/wild.key", wild.signing_key.serialize_pem())
        .file("site/index.html", INDEX)
        .start()
        .await;

    let info = tls::handshake(gh.https_addr(), "api.example.test", &["http/1.1"])
        .await
        .unwrap();
    assert_eq!(
        info.cert_der,
        api.cert.der().to_vec(),
        "api.example.test got {:?}",
        info.sans
    );
    let info = tls::handshake(gh.https_addr(), "x.wild.test", &["http/1.1"])
        .await
        .unwrap();
    assert_eq!(
        info.cert_der,
        wild.cert.der().to_vec(),
        "x.wild.test got {:?}",
        info.sans
    );

    // The [https] pair is the default: for its own names, others, and no SNI.
    let default_sans = tls::pem_subject_alt_names(&gh.cert_pem());
    assert!(
        default_sans.iter().any(|s| s == "localhost"),
        "{default_sans:?}"
    );
    for name in ["localhost", "other.test", "127.0.0.1"] {
        let info = tls::handshake(gh.https_addr(), name, &["http/1.1"])
            .await
            .unwrap();
        assert!(info.has_san("localhost"), "{name} got {:?}", info.sans);
        assert_ne!(info.cert_der, api.cert.der().to_vec());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_on_https_only() {
    let api = Backend::named("api").await;
    let gh = start_full(&api).await;
    let client = gh.client();

    for path in ["/", "/api/x"] {
        let resp = client.get(gh.https_url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(
            resp.headers()
                .get("strict-transport-security")
                .map(|v| v.to_str().unwrap()),
            Some(HSTS),
            "HTTPS {path}"
        );
        let resp = client.get(gh.http_url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(
            resp.headers().get("strict-transport-security").is_none(),
            "plain HTTP {path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_headers_are_added_but_never_override() {
    let api = Backend::builder()
        .name("api")
        .response_header("X-Frame-Options", "SAMEORIGIN")
        .start()
        .await;
    let gh = start_full(&api).await;
    let client = gh.client();

    let header = |r: &reqwest::Response, n: &str| {
        r.headers().get(n).map(|v| v.to_str().unwrap().to_string())
    };

    let stat = client.get(gh.https_url("/")).send().await.unwrap();
    assert_eq!(stat.status(), 200);
    assert_eq!(
        header(&stat, "x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(header(&stat, "x-frame-options").as_deref(), Some("DENY"));

    let proxied = client.get(gh.https_url("/api/x")).send().await.unwrap();
    assert_eq!(proxied.status(), 200);
    assert_eq!(header(&proxied, "x-backend").as_deref(), Some("api"));
    assert_eq!(
        header(&proxied, "x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(
        proxied
            .headers()
            .get_all("x-frame-options")
            .iter()
            .collect::<Vec<_>>(),
        vec!["SAMEORIGIN"],
        "the backend's own header is kept, not replaced or doubled"
    );
}
