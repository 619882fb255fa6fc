//! The admin listener's status page: `/status.json` checked against
//! `docs/status.schema.json` (with the `jsonschema` crate) and against what
//! the test did to real backends (requests, 5xx, refusals, a request in
//! flight, a server stopped, a rejected reload); `/status` with hostile
//! names in the config; and the page in headless Chromium, which must show a
//! server going down by refreshing itself.
//!
//! The browser test needs `chromium` (installed by `.ci/deps.sh --test`); it
//! fails with that advice when it is missing. It drives the browser over the
//! DevTools protocol (a WebSocket) to read the DOM of the page it keeps open.

use crate::common;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use common::{Backend, Gatehouse, Mode};

/// Time allowed for anything the status should come to show.
const WITHIN: Duration = Duration::from_secs(15);

/// The committed schema of `/status.json`.
fn schema() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/status.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Panics with every violation when `status` does not match the schema.
fn assert_schema_valid(status: &Value) {
    let validator = jsonschema::validator_for(&schema()).expect("the schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(status)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "/status.json breaks docs/status.schema.json:\n{}\n{status:#}",
        errors.join("\n")
    );
}

async fn status_json(gh: &Gatehouse) -> Value {
    let resp = reqwest::Client::new()
        .get(gh.admin_url("/status.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    resp.json().await.unwrap()
}

/// Polls `/status.json` until `check` holds; returns that status, or panics
/// with the last one.
async fn status_where(gh: &Gatehouse, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let deadline = tokio::time::Instant::now() + WITHIN;
    while tokio::time::Instant::now() < deadline {
        last = status_json(gh).await;
        if check(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/status.json never showed {what}:\n{last:#}");
}

fn pool<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no pool {name}: {status:#}"))
}

fn server<'a>(status: &'a Value, pool_name: &str, addr: &str) -> &'a Value {
    pool(status, pool_name)["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["address"] == addr)
        .unwrap_or_else(|| panic!("no server {addr} in {pool_name}: {status:#}"))
}

fn limit<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["rate_limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no limit {name}: {status:#}"))
}

/// Two servers in `api` (checked: the test appends `common::FAST_HEALTH`), a
/// slow one in `slow`, a failing one in `broken`, and a tight limit on a static route; HTTPS with a generated
/// certificate, plain HTTP and the admin listener.
const CONFIG: &str = r#"
[http]
listen = ["127.0.0.1:{http_port}"]
redirect_to_https = false

[[route]]
prefix = "/api/"
upstream = "api"

[[route]]
prefix = "/slow/"
upstream = "slow"

[[route]]
prefix = "/broken/"
upstream = "broken"

[[route]]
prefix = "/limited/"
static = "site"
rate_limit = "tight"

[static.site]
root = "site"

[upstream.api]
servers = ["{a}", "{b}"]

[upstream.slow]
servers = ["{slow}"]
read_timeout = "30s"

[upstream.broken]
servers = ["{broken}"]

[rate_limit.tight]
key = "client_ip"
rate = 0.01
burst = 2
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_follows_its_schema_and_the_live_state() {
    let a = Backend::named("a").await;
    let b = Backend::named("b").await;
    let slow = Backend::builder()
        .name("slow")
        .mode(Mode::Slow(Duration::from_secs(3)))
        .start()
        .await;
    let broken = Backend::builder()
        .name("broken")
        .mode(Mode::Status(500))
        .start()
        .await;
    let gh = Gatehouse::builder(common::HTTPS)
        .append(common::ADMIN)
        .append(CONFIG)
        .append(common::FAST_HEALTH)
        .file("site/limited/index.html", "hi")
        .backend("a", &a)
        .backend("b", &b)
        .backend("slow", &slow)
        .backend("broken", &broken)
        .start()
        .await;
    let client = gh.client();

    let first = status_json(&gh).await;
    assert_schema_valid(&first);
    assert_eq!(first["version"], env!("CARGO_PKG_VERSION"));
    assert!(first["config"]["file"]
        .as_str()
        .unwrap()
        .ends_with("gatehouse.toml"));
    assert_eq!(first["config"]["last_reload"], Value::Null);
    let listeners: Vec<(String, String)> = first["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap().to_string(),
                l["address"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (kind, addr) in [
        ("http", gh.http_addr()),
        ("https", gh.https_addr()),
        (
            "admin",
            gh.admin_url("")
                .trim_start_matches("http://")
                .parse::<std::net::SocketAddr>()
                .unwrap(),
        ),
    ] {
        assert!(
            listeners.contains(&(kind.to_string(), addr.to_string())),
            "{kind} {addr} missing: {listeners:?}"
        );
    }
    let certs = first["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 1, "{certs:?}");
    assert_eq!(certs[0]["default"], true);
    assert!(certs[0]["file"]
        .as_str()
        .unwrap()
        .ends_with("certs/server.crt"));
    assert!(
        certs[0]["names"]
            .as_array()
            .unwrap()
            .contains(&json!("localhost")),
        "{certs:?}"
    );
    assert!(
        certs[0]["seconds_left"].as_i64().unwrap() > 300 * 86_400,
        "a generated certificate is good for a year: {certs:?}"
    );
    let api = pool(&first, "api");
    assert_eq!(
        (api["servers_up"].as_u64(), api["health_checks"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(server(&first, "api", &a.addr_str())["state"], "up");

    // Ten answers from `api`, three 500s from `broken`, five tries at a
    // limit of two.
    for _ in 0..10 {
        let r = client.get(gh.https_url("/api/x")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    for _ in 0..3 {
        let r = client.get(gh.https_url("/broken/x")).send().await.unwrap();
        assert_eq!(r.status(), 500);
    }
    let mut refused = 0;
    for _ in 0..5 {
        let r = client.get(gh.https_url("/limited/")).send().await.unwrap();
        refused += usize::from(r.status() == 429);
    }
    assert_eq!(refused, 3);
    let counted = status_where(&gh, "the requests of the last minute", |s| {
        pool(s, "api")["last_minute"]["requests"] == 10
            && pool(s, "broken")["last_minute"]["errors"] == 3
            && limit(s, "tight")["refused_last_minute"] == 3
    })
    .await;
    assert_schema_valid(&counted);
    let api = &pool(&counted, "api")["last_minute"];
    assert_eq!(api["errors"], 0);
    assert!(api["requests_per_second"].as_f64().unwrap() > 0.0, "{api}");
    let per_server: u64 = [&a, &b]
        .iter()
        .map(|s| {
            server(&counted, "api", &s.addr_str())["last_minute"]["requests"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(per_server, 10, "the pool's count is its servers' sum");
    assert_eq!(
        server(&counted, "broken", &broken.addr_str())["last_minute"]["requests"],
        3
    );
    assert_eq!(limit(&counted, "tight")["key"], "client_ip");

    // One request held by the slow server is in flight until it answers.
    let slow_url = gh.https_url("/slow/x");
    let held = tokio::spawn({
        let client = client.clone();
        async move { client.get(slow_url).send().await.map(|r| r.status()) }
    });
    let busy = status_where(&gh, "a request in flight", |s| {
        pool(s, "slow")["in_flight"] == 1
    })
    .await;
    assert_eq!(server(&busy, "slow", &slow.addr_str())["in_flight"], 1);
    assert_eq!(held.await.unwrap().unwrap(), 200);
    status_where(&gh, "the slow request done", |s| {
        pool(s, "slow")["in_flight"] == 0 && pool(s, "slow")["last_minute"]["requests"] == 1
    })
    .await;

    // A stopped server fails its checks and is shown down.
    b.stop().await;
    let down = status_where(&gh, "server b down", |s| {
        server(s, "api", &b.addr_str())["state"] == "down"
    })
    .await;
    assert_schema_valid(&down);
    assert_eq!(server(&down, "api", &b.addr_str())["healthy"], false);
    assert_eq!(server(&down, "api", &a.addr_str())["state"], "up");
    assert_eq!(pool(&down, "api")["servers_up"], 1);

    // A rejected reload is shown with its reason; the config stays.
    gh.write_config("this is = = not toml");
    gh.signal("HUP");
    let rejected = status_where(&gh, "the rejected reload", |s| {
        s["config"]["last_reload"]["ok"] == false
    })
    .await;
    assert_schema_valid(&rejected);
    assert!(rejected["config"]["last_reload"]["error"]
        .as_str()
        .unwrap()
        .contains("gatehouse.toml"));
    assert_eq!(
        rejected["config"]["loaded_at"],
        first["config"]["loaded_at"]
    );
    assert_eq!(rejected["pools"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_are_escaped_on_the_page() {
    let api = Backend::named("api").await;
    let gh = Gatehouse::builder(&common::HTTPS.replace("certs/server.crt", "certs/<x-cert>.crt"))
        .cert_path("certs/<x-cert>.crt")
        .append(common::ADMIN)
        .append(
            r#"
[[route]]
prefix = "/"
upstream = "<script>alert('pool')</script>"
rate_limit = "<img src=x onerror=alert(1)>"

[upstream."<script>alert('pool')</script>"]
servers = ["{api}"]

[rate_limit."<img src=x onerror=alert(1)>"]
key = "header:X-Key"
rate = 1
burst = 1
"#,
        )
        .backend("api", &api)
        .start()
        .await;
    let resp = reqwest::Client::new()
        .get(gh.admin_url("/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/html; charset=utf-8"
    );
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    let page = resp.text().await.unwrap();
    for raw in ["<script", "<img", "<x-cert"] {
        assert!(
            !page.contains(raw),
            "{raw} reached the page unescaped:\n{page}"
        );
    }
    for escaped in [
        "&lt;script&gt;alert('pool')&lt;/script&gt;",
        "&lt;img src=x onerror=alert(1)&gt;",
        "certs/&lt;x-cert&gt;.crt",
    ] {
        assert!(page.contains(escaped), "{escaped} missing:\n{page}");
    }
    assert!(page.contains("<meta http-equiv=\"refresh\""));

    // The JSON carries the names as they are.
    let status = status_json(&gh).await;
    assert_schema_valid(&status);
    assert_eq!(
        pool(&status, "<script>alert('pool')</script>")["servers_up"],
        1
    );
    assert_eq!(
        limit(&status, "<img src=x onerror=alert(1)>")["key"],
        "header:x-key"
    );
}

/// Headless Chromium with the DevTools protocol on a free port, showing
/// one page; killed on drop.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    devtools: u16,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    async fn open(url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let binary = common::chromium("this test loads the status page in a real browser");
        let child = Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--no-proxy-server",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        // Chromium writes the port it bound into the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = tokio::time::Instant::now() + WITHIN;
        let devtools = loop {
            let port = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u16>().ok()));
            if let Some(port) = port {
                break port;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromium never opened its DevTools port"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Browser {
            child,
            _profile: profile,
            devtools,
        }
    }

    /// The DevTools WebSocket of the page showing `url`.
    async fn page_socket(&self, url: &str) -> String {
        let list = format!("http://127.0.0.1:{}/json/list", self.devtools);
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let deadline = tokio::time::Instant::now() + WITHIN;
        loop {
            if let Ok(resp) = client.get(&list).send().await {
                let targets: Vec<Value> = resp.json().await.unwrap_or_default();
                let socket = targets
                    .iter()
                    .find(|t| t["type"] == "page" && t["url"] == url)
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str());
                if let Some(socket) = socket {
                    return socket.to_string();
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromium shows no page at {url}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A DevTools connection to one page.
struct Page {
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    next_id: u64,
}

impl Page {
    async fn connect(socket: &str) -> Page {
        let addr = socket
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(socket, tcp)
            .await
            .expect("DevTools WebSocket");
        Page { ws, next_id: 1 }
    }

    /// Evaluates `expression` in the page; `None` while the page is between
    /// two loads (or the expression throws).
    async fn eval(&mut self, expression: &str) -> Option<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let call = json!({
            "id": id,
            "method": "Runtime.evaluate",
            "params": { "expression": expression, "returnByValue": true },
        });
        self.ws.send(Message::text(call.to_string())).await.unwrap();
        loop {
            let msg = tokio::time::timeout(WITHIN, self.ws.next())
                .await
                .expect("DevTools answered")
                .expect("DevTools connection open")
                .unwrap();
            let Message::Text(text) = msg else { continue };
            let reply: Value = serde_json::from_str(text.as_str()).unwrap();
            if reply["id"] != id {
                continue;
            }
            if reply["result"].get("exceptionDetails").is_some() {
                return None;
            }
            return reply["result"]["result"].get("value").cloned();
        }
    }
}

/// `{server: state}` of every server row on the page, and the time the
/// page was generated.
const READ_PAGE: &str = "JSON.stringify({
  generated: document.getElementById('generated').textContent,
  servers: Object.fromEntries([...document.querySelectorAll('tr.server')]
    .map(r => [r.dataset.server, r.dataset.state])),
})";

async fn read_page(page: &mut Page) -> Option<Value> {
    let text = page.eval(READ_PAGE).await?;
    serde_json::from_str(text.as_str()?).ok()
}

/// Reads the page until `check` holds; returns what it showed then.
async fn page_until(page: &mut Page, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WITHIN;
    let mut shown = None;
    while tokio::time::Instant::now() < deadline {
        shown = read_page(page).await;
        if let Some(s) = shown.as_ref().filter(|s| check(s)) {
            return s.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the page never showed {what}: {shown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_server_going_down_by_refreshing_itself() {
    let a = Backend::named("a").await;
    let b = Backend::named("b").await;
    let gh = Gatehouse::builder(common::HTTP_PLAIN)
        .append(common::ADMIN)
        .append(
            r#"
[[route]]
prefix = "/api/"
upstream = "api"

[upstream.api]
servers = ["{a}", "{b}"]
"#,
        )
        .append(common::FAST_HEALTH)
        .backend("a", &a)
        .backend("b", &b)
        .start()
        .await;
    let url = gh.admin_url("/status");
    let browser = Browser::open(&url).await;
    let mut page = Page::connect(&browser.page_socket(&url).await).await;

    let before = page_until(&mut page, "both servers up", |s| {
        s["servers"][a.addr_str()] == "up" && s["servers"][b.addr_str()] == "up"
    })
    .await;

    b.stop().await;
    // The test loaded the page once: a new state on it comes from the page
    // reloading itself.
    let after = page_until(&mut page, "server b down", |s| {
        s["servers"][b.addr_str()] == "down"
    })
    .await;
    assert_eq!(after["servers"][a.addr_str()], "up");
    assert_ne!(
        after["generated"], before["generated"],
        "the page was generated again"
    );
}
