//! The JSON access log from the real binary: every field with the right value
//! for proxied, static and error requests; file, stdout and off sinks;
//! reopening on SIGUSR1 after rotation; and a stalled sink that does not
//! stall traffic.

use crate::common;
use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{eventually, Backend, Gatehouse};
use serde_json::Value;

/// How long a line may take to reach the sink.
const SETTLE: Duration = Duration::from_secs(10);

/// Every field of a line (present even when `null`).
const FIELDS: &[&str] = &[
    "time",
    "client_ip",
    "method",
    "host",
    "path",
    "route",
    "status",
    "bytes_sent",
    "duration_ms",
    "upstream",
    "server",
    "upstream_duration_ms",
    "request_id",
    "protocol",
    "tls_version",
    "user_agent",
    "referer",
];

const APP_JS: &str = "console.log('access log');\n";

/// `[server]` with the access log going to `{sink}`.
const SERVER: &str = r#"
[server]
threads = 1
grace_period = "1s"
access_log = "{sink}"
pid_file = "{dir}/gatehouse.pid"
upgrade_sock = "{dir}/upgrade.sock"
"#;

/// `/api/` to `{api}`, `/down/` to `{down}` (taken out by its first failed
/// health check), `/` to the static site.
const ROUTES: &str = r#"
[[route]]
prefix = "/api/"
upstream = "api"
strip_prefix = true

[[route]]
prefix = "/down/"
upstream = "down"

[[route]]
prefix = "/"
static = "site"

[static.site]
root = "site"

[upstream.api]
servers = ["{api}"]

[upstream.down]
servers = ["{down}"]
[upstream.down.health]
path = "/health"
interval = "100ms"
timeout = "500ms"
healthy_threshold = 1
unhealthy_threshold = 1
"#;

fn builder(sink: &str) -> common::gatehouse::GatehouseBuilder {
    Gatehouse::builder(&SERVER.replace("{sink}", sink))
        .append(common::HTTPS)
        .append(common::HTTP_PLAIN)
        .append(common::ADMIN)
        .file("site/app.js", APP_JS)
}

/// Every line of `text`, parsed; panics on a line that is not a JSON object
/// with every field of [`FIELDS`].
fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            let obj = v
                .as_object()
                .unwrap_or_else(|| panic!("not an object: {l}"));
            for f in FIELDS {
                assert!(obj.contains_key(*f), "no {f} in {l}");
            }
            v
        })
        .collect()
}

fn read_lines(path: &Path) -> Vec<Value> {
    parse_lines(&std::fs::read_to_string(path).unwrap_or_default())
}

fn has_id(lines: &[Value], id: &str) -> bool {
    lines.iter().any(|l| l["request_id"] == id)
}

/// Waits for the line of request `id` from `source`.
async fn line_for(source: impl Fn() -> Vec<Value>, id: &str) -> Value {
    let mut found = None;
    eventually(SETTLE, || {
        found = source().into_iter().find(|l| l["request_id"] == id);
        std::future::ready(found.is_some())
    })
    .await;
    found.unwrap_or_else(|| panic!("no line for {id}"))
}

/// GET `url` with `X-Request-Id: id`; the status and the body length.
async fn get_with_id(client: &reqwest::Client, url: &str, id: &str) -> (u16, usize) {
    let resp = client
        .get(url)
        .header("x-request-id", id)
        .header("user-agent", "access-log-test/1.0")
        .header("referer", "https://example.test/from")
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().await.unwrap().len())
}

fn ms(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("not a number of ms: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_lines_carry_every_field() {
    let api = Backend::named("api1").await;
    let down = Backend::builder()
        .name("down1")
        .health_status(500)
        .start()
        .await;
    let gh = builder("{dir}/access.log")
        .append(ROUTES)
        .backend("api", &api)
        .backend("down", &down)
        .start()
        .await;
    let log = gh.dir().join("access.log");
    let lines = || read_lines(&log);
    let client = gh.client();
    let authority = format!("localhost:{}", gh.https_port);

    // Proxied, over h2.
    let (status, len) = get_with_id(&client, &gh.https_url("/api/users?id=1"), "proxied-h2").await;
    assert_eq!(status, 200);
    let l = line_for(lines, "proxied-h2").await;
    let time = l["time"].as_str().unwrap();
    assert!(time.ends_with('Z'), "UTC: {time}");
    let at = humantime::parse_rfc3339(time).unwrap();
    let age = SystemTime::now().duration_since(at).unwrap_or_default();
    assert!(age < Duration::from_secs(60), "{time}");
    assert_eq!(l["client_ip"], "127.0.0.1");
    assert_eq!(l["method"], "GET");
    assert_eq!(l["host"], authority.as_str());
    assert_eq!(l["path"], "/api/users", "no query string");
    assert_eq!(l["route"], "/api/");
    assert_eq!(l["status"], 200);
    assert_eq!(l["bytes_sent"], len);
    assert_eq!(l["upstream"], "api");
    assert_eq!(l["server"], api.addr_str().as_str());
    let (total, upstream) = (ms(&l["duration_ms"]), ms(&l["upstream_duration_ms"]));
    assert!(total > 0.0 && upstream > 0.0 && upstream <= total, "{l}");
    assert_eq!(l["protocol"], "h2");
    assert_eq!(l["tls_version"], "TLSv1.3");
    assert_eq!(l["user_agent"], "access-log-test/1.0");
    assert_eq!(l["referer"], "https://example.test/from");
    assert_eq!(l["error"], Value::Null);

    // Proxied, over HTTP/1.1.
    let (status, _) = get_with_id(&gh.client_h1(), &gh.https_url("/api/x"), "proxied-h1").await;
    assert_eq!(status, 200);
    let l = line_for(lines, "proxied-h1").await;
    assert_eq!(l["protocol"], "h1");
    assert_eq!(l["server"], api.addr_str().as_str());

    // Static.
    let (status, len) = get_with_id(&client, &gh.https_url("/app.js?v=3"), "static").await;
    assert_eq!((status, len), (200, APP_JS.len()));
    let l = line_for(lines, "static").await;
    assert_eq!(l["path"], "/app.js");
    assert_eq!(l["route"], "/");
    assert_eq!(l["status"], 200);
    assert_eq!(l["bytes_sent"], APP_JS.len());
    assert_eq!(l["upstream"], Value::Null);
    assert_eq!(l["server"], Value::Null);
    assert_eq!(l["upstream_duration_ms"], Value::Null);
    assert!(ms(&l["duration_ms"]) > 0.0);

    // Not found.
    let (status, len) = get_with_id(&client, &gh.https_url("/missing.js"), "missing").await;
    assert_eq!(status, 404);
    let l = line_for(lines, "missing").await;
    assert_eq!(l["status"], 404);
    assert_eq!(l["route"], "/");
    assert_eq!(l["bytes_sent"], len);

    // Every server of the pool down: 503, the pool named, no server picked.
    let out = eventually(SETTLE, || async {
        client
            .get(gh.https_url("/down/probe"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 503)
    })
    .await;
    assert!(out, "the down pool never answered 503");
    let (status, _) = get_with_id(&client, &gh.https_url("/down/x"), "all-down").await;
    assert_eq!(status, 503);
    let l = line_for(lines, "all-down").await;
    assert_eq!(l["status"], 503);
    assert_eq!(l["route"], "/down/");
    assert_eq!(l["upstream"], "down");
    assert_eq!(l["server"], Value::Null);
    assert_eq!(l["upstream_duration_ms"], Value::Null);

    // The plain listener: no TLS version, HTTP/1.1, Host as sent.
    let (status, _) = get_with_id(&client, &gh.http_url("/app.js"), "plain").await;
    assert_eq!(status, 200);
    let l = line_for(lines, "plain").await;
    assert_eq!(l["tls_version"], Value::Null);
    assert_eq!(l["protocol"], "h1");
    assert_eq!(l["host"], format!("127.0.0.1:{}", gh.http_port).as_str());

    assert!(
        gh.stdout().is_empty(),
        "a file sink writes nothing to stdout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_sink_writes_json_lines() {
    let gh = builder("stdout")
        .append("[[route]]\nprefix = \"/\"\nstatic = \"site\"\n[static.site]\nroot = \"site\"\n")
        .start()
        .await;
    let client = gh.client();
    for id in ["out-1", "out-2"] {
        let (status, _) = get_with_id(&client, &gh.https_url("/app.js"), id).await;
        assert_eq!(status, 200);
    }
    let l = line_for(|| parse_lines(&gh.stdout()), "out-2").await;
    assert_eq!(l["route"], "/");
    assert_eq!(l["status"], 200);
    let lines = parse_lines(&gh.stdout());
    assert!(has_id(&lines, "out-1"));
    assert!(!std::fs::read_dir(gh.dir()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("access")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_writes_nothing() {
    let gh = builder("off")
        .append("[[route]]\nprefix = \"/\"\nstatic = \"site\"\n[static.site]\nroot = \"site\"\n")
        .start()
        .await;
    let client = gh.client();
    for id in ["off-1", "off-2", "off-3"] {
        let (status, _) = get_with_id(&client, &gh.https_url("/app.js"), id).await;
        assert_eq!(status, 200);
    }
    // A graceful stop flushes whatever the log holds, so nothing can be late.
    gh.signal("TERM");
    assert!(gh.wait_exit(SETTLE).await.is_some(), "did not exit");
    assert_eq!(gh.stdout(), "");
    assert!(!gh.stderr().contains("off-1"));
    let files: Vec<String> = std::fs::read_dir(gh.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log") && n != "stdout.log" && n != "stderr.log")
        .collect();
    assert!(files.is_empty(), "{files:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_is_reopened_on_usr1_after_rotation() {
    let gh = builder("access.log")
        .append("[[route]]\nprefix = \"/\"\nstatic = \"site\"\n[static.site]\nroot = \"site\"\n")
        .start()
        .await;
    let client = gh.client();
    let log = gh.dir().join("access.log");
    let rotated = gh.dir().join("access.log.1");
    let send = |id: &'static str| {
        let client = client.clone();
        let url = gh.https_url("/app.js");
        async move { assert_eq!(get_with_id(&client, &url, id).await.0, 200) }
    };

    send("before-rotation").await;
    line_for(|| read_lines(&log), "before-rotation").await;

    // Rotate: rename; lines keep going to the open file until USR1.
    std::fs::rename(&log, &rotated).unwrap();
    send("after-rename").await;
    line_for(|| read_lines(&rotated), "after-rename").await;
    assert!(!log.exists());

    gh.signal("USR1");
    assert!(
        eventually(SETTLE, || std::future::ready(log.exists())).await,
        "access.log was not reopened"
    );
    send("after-reopen").await;
    line_for(|| read_lines(&log), "after-reopen").await;

    let new = read_lines(&log);
    let old = read_lines(&rotated);
    assert!(!has_id(&old, "after-reopen"));
    assert!(!has_id(&new, "before-rotation") && !has_id(&new, "after-rename"));
    assert!(has_id(&old, "before-rotation"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sink_does_not_stall_traffic() {
    const REQUESTS: usize = 500;
    let b = Gatehouse::builder("");
    let fifo = b.dir().join("access.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // Opening a FIFO for reading waits for the writer: Gatehouse's log.
    let reader = std::thread::spawn({
        let fifo = fifo.clone();
        move || std::fs::File::open(fifo).unwrap()
    });
    let gh = b
        .append(&SERVER.replace("{sink}", "{dir}/access.fifo"))
        .append(common::HTTPS)
        .append(common::ADMIN)
        .append("[[route]]\nprefix = \"/\"\nstatic = \"site\"\n[static.site]\nroot = \"site\"\n")
        .file("site/app.js", APP_JS)
        .start()
        .await;
    let reader = reader.join().unwrap();

    // Nobody reads yet: the pipe fills after ~150 lines and the writer blocks.
    // Requests must still be answered promptly.
    let client = gh.client_h1();
    let started = std::time::Instant::now();
    for i in 0..REQUESTS {
        let (status, _) =
            get_with_id(&client, &gh.https_url("/app.js"), &format!("stalled-{i}")).await;
        assert_eq!(status, 200, "request {i}");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "{took:?}");

    // Drain the pipe: every line arrives, in order, none dropped.
    let read = tokio::task::spawn_blocking(move || {
        let mut ids = Vec::new();
        for line in std::io::BufReader::new(reader).lines() {
            let line = line.unwrap();
            let v = &parse_lines(&line)[0];
            ids.push(v["request_id"].as_str().unwrap().to_string());
            if ids.len() == REQUESTS {
                break;
            }
        }
        ids
    });
    let ids = tokio::time::timeout(SETTLE, read)
        .await
        .expect("lines did not arrive")
        .unwrap();
    let expected: Vec<String> = (0..REQUESTS).map(|i| format!("stalled-{i}")).collect();
    assert_eq!(ids, expected);
    let metrics = gh
        .client()
        .get(gh.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("\ngatehouse_access_log_dropped_total 0\n"),
        "{metrics}"
    );
}
