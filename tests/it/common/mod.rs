//! Test harness shared by every integration test (`mod common;`).
//!
//! Everything runs on loopback inside the test process, except Gatehouse itself,
//! which is the real binary started as a child process:
//!
//! - [`Backend`]: a real HTTP/1.1 server on `127.0.0.1` that records what it
//!   receives, answers with a JSON echo naming itself, serves `/health` with a
//!   status the test can flip, and can be slow, mute, stopped and restarted.
//! - [`Gatehouse`]: the binary, run with `run -c FILE` in a fresh temp dir from a
//!   config string with placeholders for ports, the dir and backend addresses;
//!   waits for its listeners, kills it on drop, and hands out clients that trust
//!   its generated certificate.
//! - [`redis`]: a real `redis-server` on a free loopback port (shared rate limits).
//! - [`tls`]: raw TLS handshakes (version, ALPN, SNI, served certificate) and
//!   [`raw`]: raw HTTP/1.1 exchanges over TCP or TLS for inputs a client library
//!   would normalise or refuse.
//! - [`scripted`]: a raw HTTP/1.x server answering with bytes the test
//!   scripts, counting its connections (upstream framing and reuse).
//!
//! Tests are `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`; the
//! backends run on the test's runtime.
//!
//! ```ignore
//! let api = Backend::builder().name("api1").start().await;
//! let gh = Gatehouse::builder(common::HTTPS)
//!     .append(r#"
//!         [[route]]
//!         prefix = "/api/"
//!         upstream = "api"
//!         strip_prefix = true
//!         [upstream.api]
//!         servers = ["{api1}"]
//!     "#)
//!     .backend("api1", &api)
//!     .start()
//!     .await;
//! let resp = gh.client().get(gh.https_url("/api/users?id=1")).send().await.unwrap();
//! assert_eq!(resp.status(), 200);
//! assert_eq!(api.last_request().unwrap().path, "/users?id=1");
//! ```

pub mod backend;
pub mod gatehouse;
pub mod load;
pub mod raw;
pub mod redis;
pub mod scripted;
pub mod serial;
pub mod tls;
pub mod websocket;

use std::collections::HashSet;
use std::future::Future;
use std::net::TcpListener;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use backend::{Backend, Mode};
pub use gatehouse::Gatehouse;

/// `[https]` on `127.0.0.1:{https_port}` with a self-signed certificate
/// generated into `certs/` of the temp dir.
pub const HTTPS: &str = r#"
[https]
listen = ["127.0.0.1:{https_port}"]
self_signed = true
cert = "certs/server.crt"
key = "certs/server.key"
"#;

/// `[http]` on `127.0.0.1:{http_port}`, redirecting to `{https_port}`.
pub const HTTP_REDIRECT: &str = r#"
[http]
listen = ["127.0.0.1:{http_port}"]
redirect_to_https = true
https_port = {https_port}
"#;

/// `[http]` on `127.0.0.1:{http_port}`, serving the routes in plain text.
pub const HTTP_PLAIN: &str = r#"
[http]
listen = ["127.0.0.1:{http_port}"]
redirect_to_https = false
"#;

/// `[admin]` on `127.0.0.1:{admin_port}`.
/// `/` to the static site `site` (directory `site/` in the temp dir).
pub const SITE: &str = r#"
[[route]]
prefix = "/"
static = "site"

[static.site]
root = "site"
"#;

/// `/api/` (prefix stripped) to the pool `api` with one server, `{api}` (set
/// it with `.backend("api", &b)`). `[upstream.api]` is the last table, so
/// more keys of the pool can be appended.
pub const API: &str = r#"
[[route]]
prefix = "/api/"
upstream = "api"
strip_prefix = true

[upstream.api]
servers = ["{api}"]
"#;

/// Health checks of the pool `api`: `/health` every 200 ms, two results in a
/// row to flip.
pub const FAST_HEALTH: &str = r#"
[upstream.api.health]
path = "/health"
interval = "200ms"
timeout = "200ms"
healthy_threshold = 2
unhealthy_threshold = 2
"#;

pub const ADMIN: &str = r#"
[admin]
listen = "127.0.0.1:{admin_port}"
"#;

/// Ports handed out by [`free_port`] in this process, never handed out twice.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read
/// the port, close). Never returns the same port twice in one test process.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if guard.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("no free port found in 100 tries");
}

/// Polls `check` every 25 ms until it returns true or `within` has passed;
/// returns whether it did. For "eventually" assertions without fixed sleeps.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The `server` field of a backend's JSON echo.
pub fn server_of(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["server"].as_str().unwrap_or_default().to_string()
}

/// The Chromium binary: `$CHROMIUM`, else `chromium` or `chromium-browser`
/// on the PATH. Panics saying how to install it, for a test that `needs` it.
pub fn chromium(needs: &str) -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return std::path::PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "chromium is missing: {needs}. Install it with `bash .ci/deps.sh --test` \
         (apt-get install chromium) or set CHROMIUM=/path/to/chrome"
    );
}

/// A plain-HTTP client with a 10 s timeout, for tests that talk to several
/// Gatehouses or to one without its certificate.
pub fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("build client")
}
