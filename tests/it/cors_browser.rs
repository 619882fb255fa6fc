//! CORS in a real browser: headless Chromium loads a page from Gatehouse's
//! static site on one origin (`http://127.0.0.1:PAGE`) whose script fetches
//! the API from another (`http://127.0.0.1:API`, a second listener of the
//! same Gatehouse) and writes each outcome into the DOM, which the test reads
//! with `--dump-dom`. The browser, not the test, decides what is allowed.
//!
//! Needs `chromium` (installed by `.ci/deps.sh --test`); the test fails with that
//! advice when it is missing. `CHROMIUM=/path/to/chrome` picks another binary.

use crate::common;
use std::process::Command;
use std::time::Duration;

use common::{Backend, Gatehouse};

/// The page: four fetches to the API origin, each writing `ok STATUS
/// exposed|hidden` or `blocked` into its element, then `done`.
const PAGE: &str = r#"<!doctype html>
<html><body>
<p id="allowed">pending</p>
<p id="refused">pending</p>
<p id="refused_simple">pending</p>
<p id="credentials">pending</p>
<p id="done"></p>
<script>
const API = "http://127.0.0.1:{api_port}";
async function probe(id, path, opts) {
  let out;
  try {
    const r = await fetch(API + path, opts);
    await r.text();
    out = "ok " + r.status + " " + (r.headers.get("x-request-id") ? "exposed" : "hidden");
  } catch (e) {
    out = "blocked";
  }
  document.getElementById(id).textContent = out;
}
const json = { method: "PUT", headers: { "Content-Type": "application/json" }, body: "{}" };
Promise.all([
  probe("allowed", "/api/items", json),
  probe("refused", "/refused/items", json),
  probe("refused_simple", "/refused/simple", {}),
  probe("credentials", "/creds/me", { credentials: "include" }),
]).then(() => { document.getElementById("done").textContent = "done"; });
</script>
</body></html>
"#;

const CONFIG: &str = r#"
[http]
listen = ["127.0.0.1:{http_port}", "127.0.0.1:{api_port}"]
redirect_to_https = false

[[route]]
prefix = "/"
static = "site"

[static.site]
root = "site"

[[route]]
prefix = "/api/"
upstream = "api"
cors = "page"

[[route]]
prefix = "/creds/"
upstream = "api"
cors = "page_credentials"

[[route]]
prefix = "/refused/"
upstream = "api"
cors = "elsewhere"

[upstream.api]
servers = ["{api}"]

[cors.page]
allow_origins = ["http://127.0.0.1:{http_port}"]
allow_methods = ["GET", "PUT"]
allow_headers = ["Content-Type"]
expose_headers = ["X-Request-Id"]

[cors.page_credentials]
allow_origins = ["http://127.0.0.1:{http_port}"]
allow_credentials = true

[cors.elsewhere]
allow_origins = ["https://app.example.com"]
allow_methods = ["GET", "PUT"]
allow_headers = ["Content-Type"]
"#;

/// Loads `url` in headless Chromium and returns the DOM after the page's
/// fetches ran (at most `budget` of virtual time).
async fn dump_dom(url: String, budget: Duration) -> String {
    let browser = common::chromium("this test runs CORS in a real browser");
    let profile = tempfile::tempdir().unwrap();
    let profile_arg = format!("--user-data-dir={}", profile.path().display());
    let budget_arg = format!("--virtual-time-budget={}", budget.as_millis());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-proxy-server",
                "--no-first-run",
                &profile_arg,
                &budget_arg,
                "--dump-dom",
                &url,
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", browser.display()))
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element `<p id="ID">` in `dom`.
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let open = format!("<p id=\"{id}\">");
    dom.split_once(&open)
        .and_then(|(_, rest)| rest.split_once("</p>"))
        .map_or("", |(text, _)| text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_on_another_origin_is_allowed_and_refused_as_configured() {
    let api = Backend::named("api").await;
    let api_port = common::free_port();
    let gh = Gatehouse::builder(CONFIG)
        .var("api_port", api_port.to_string())
        .file(
            "site/index.html",
            PAGE.replace("{api_port}", &api_port.to_string()),
        )
        .backend("api", &api)
        .start()
        .await;
    let api_url = format!("http://127.0.0.1:{api_port}/");
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap()
                .get(&api_url)
                .send()
                .await
                .is_ok()
        })
        .await,
        "the second listener never answered"
    );

    let mut dom = String::new();
    for budget in [5_000, 15_000] {
        dom = dump_dom(gh.http_url("/index.html"), Duration::from_millis(budget)).await;
        if text_of(&dom, "done") == "done" {
            break;
        }
    }
    assert_eq!(
        text_of(&dom, "done"),
        "done",
        "the page did not finish:\n{dom}"
    );
    assert_eq!(
        text_of(&dom, "allowed"),
        "ok 200 exposed",
        "a preflighted PUT from the allowed origin, X-Request-Id exposed:\n{dom}"
    );
    assert_eq!(text_of(&dom, "refused"), "blocked", "{dom}");
    assert_eq!(text_of(&dom, "refused_simple"), "blocked", "{dom}");
    assert_eq!(text_of(&dom, "credentials"), "ok 200 hidden", "{dom}");

    let seen: Vec<(String, String)> = api
        .all_requests()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect();
    assert!(
        seen.iter().all(|(m, _)| m != "OPTIONS"),
        "preflights reached the backend: {seen:?}"
    );
    assert!(
        seen.contains(&("PUT".into(), "/api/items".into())),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|(_, p)| p == "/refused/items"),
        "the refused preflight stopped the PUT: {seen:?}"
    );
    assert!(
        seen.iter().any(|(_, p)| p == "/refused/simple"),
        "a simple GET is sent; the browser hides its answer: {seen:?}"
    );
}
