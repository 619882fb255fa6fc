//! Slow clients against a backend that handles one request at a time (as
//! Gunicorn's sync workers do): with request and response buffering, an
//! uploader or a reader that takes its time never holds the backend, so
//! another client is answered at once; bodies that end badly never reach it;
//! the deadlines cut clients that are too slow.
//!
//! "At once" is asserted as under [`PROMPT`]; without buffering the other
//! client waits for the slow one (the control test shows it), which here
//! keeps its request open for as long as the test runs.

use crate::common;
use std::time::{Duration, Instant};

use common::serial::{big_body, Serial, BIG_LEN, SSE_EVENTS, SSE_GAP};
use common::Gatehouse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// An answer "at once": loose for a loaded 2-core machine.
const PROMPT: Duration = Duration::from_secs(3);
const WITHIN: Duration = Duration::from_secs(10);

fn server(client_body_timeout: &str, send_timeout: &str) -> String {
    format!(
        r#"
[server]
threads = 1
grace_period = "1s"
access_log = "off"
pid_file = "{{dir}}/gatehouse.pid"
upgrade_sock = "{{dir}}/upgrade.sock"
temp_dir = "{{dir}}/tmp"
max_body_size = "16MiB"
client_body_timeout = "{client_body_timeout}"
send_timeout = "{send_timeout}"
"#
    )
}

const HEALTH: &str = r#"
[upstream.api.health]
path = "/health"
interval = "300ms"
timeout = "1s"
healthy_threshold = 1
unhealthy_threshold = 2
"#;

async fn start(api: &Serial, server_section: &str, route_extra: &str) -> Gatehouse {
    let route = common::API.replace(
        "strip_prefix = true\n",
        &format!("strip_prefix = true\n{route_extra}"),
    );
    Gatehouse::builder(server_section)
        .append(common::HTTP_PLAIN)
        .append(common::HTTPS)
        .append(common::ADMIN)
        .append(&route)
        .append("read_timeout = \"60s\"\n")
        .append(HEALTH)
        .var("api", api.addr_str())
        .file("tmp/.keep", "")
        .start()
        .await
}

async fn default_gatehouse(api: &Serial) -> Gatehouse {
    start(api, &server("30s", "30s"), "").await
}

/// GET `/api/quick` from a fresh client; its status and how long it took.
async fn quick_get(gh: &Gatehouse) -> (Option<u16>, Duration) {
    let started = Instant::now();
    let status = tokio::time::timeout(WITHIN, reqwest::get(gh.http_url("/api/quick")))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|r| r.status().as_u16());
    (status, started.elapsed())
}

async fn assert_prompt(gh: &Gatehouse, what: &str) {
    let (status, took) = quick_get(gh).await;
    assert_eq!(
        status,
        Some(200),
        "{what}: the other client got no answer in {took:?}"
    );
    assert!(took < PROMPT, "{what}: the other client waited {took:?}");
}

/// A POST announcing 100 bytes that sends 48 over about a second, then waits.
async fn slow_uploader(gh: &Gatehouse) -> TcpStream {
    let mut s = TcpStream::connect(gh.http_addr()).await.unwrap();
    s.write_all(b"POST /api/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..6 {
        s.write_all(&[b'x'; 8]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uploaders_do_not_hold_the_backend() {
    let api = Serial::start().await;
    let gh = default_gatehouse(&api).await;
    assert_prompt(&gh, "before").await;
    let one = slow_uploader(&gh).await;
    assert_prompt(&gh, "one slow uploader").await;
    let mut four = vec![one];
    for _ in 0..3 {
        four.push(slow_uploader(&gh).await);
    }
    assert_prompt(&gh, "four slow uploaders").await;
    // Over TLS too.
    let (mut tls, _) = common::tls::connect(gh.https_addr(), "localhost", &["http/1.1"])
        .await
        .unwrap();
    tls.write_all(b"POST /api/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nxxxx")
        .await
        .unwrap();
    assert_prompt(&gh, "a slow uploader over TLS").await;
    assert!(
        !api.heads().iter().any(|p| p == "/upload"),
        "an unfinished upload reached the backend"
    );
    drop((four, tls));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_http2_uploader_does_not_hold_the_backend() {
    let api = Serial::start().await;
    let gh = default_gatehouse(&api).await;
    let (io, _) = common::tls::connect(gh.https_addr(), "localhost", &["h2"])
        .await
        .unwrap();
    let (client, conn) = h2::client::handshake(io).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::post(format!("https://localhost:{}/api/upload", gh.https_port))
        .header("content-length", "100")
        .body(())
        .unwrap();
    let (_resp, mut body) = client.send_request(req, false).unwrap();
    body.send_data(bytes::Bytes::from_static(&[b'x'; 48]), false)
        .unwrap();
    assert_prompt(&gh, "a slow HTTP/2 uploader").await;
    assert!(!api.heads().iter().any(|p| p == "/upload"));
    conn.abort();
}

/// A plain connection with a 4 KiB receive buffer that asks for the 20 MB
/// answer and reads nothing.
async fn slow_reader(gh: &Gatehouse) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(gh.http_addr()).await.unwrap();
    s.write_all(b"GET /api/big HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_of_a_big_answer_do_not_hold_the_backend() {
    let api = Serial::start().await;
    let gh = default_gatehouse(&api).await;
    let plain = slow_reader(&gh).await;
    assert!(
        common::eventually(WITHIN, || async {
            api.received().iter().any(|r| r.path == "/big")
        })
        .await,
        "the backend never finished the big answer"
    );
    assert_prompt(&gh, "a slow reader").await;
    // Over TLS, and over HTTP/2 without releasing flow-control window.
    let (mut tls, _) = common::tls::connect(gh.https_addr(), "localhost", &["http/1.1"])
        .await
        .unwrap();
    tls.write_all(b"GET /api/big HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (io, _) = common::tls::connect(gh.https_addr(), "localhost", &["h2"])
        .await
        .unwrap();
    let (client, conn) = h2::client::handshake(io).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::get(format!("https://localhost:{}/api/big", gh.https_port))
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    let resp = tokio::time::timeout(WITHIN, resp).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        common::eventually(WITHIN, || async {
            api.received().iter().filter(|r| r.path == "/big").count() == 3
        })
        .await,
        "the backend did not finish all three big answers"
    );
    assert_prompt(&gh, "slow readers over TCP, TLS and HTTP/2").await;
    drop((plain, tls, resp));
    conn.abort();
}

/// Clients that hang up in the middle of a big buffered answer give its share
/// of the process-wide buffer budget (512 MiB) back: after 40 of them (800 MB
/// read from the backend, most of it still in the pipe when the client went),
/// the backend is still read at its pace and a big answer still arrives whole.
/// Before, each hang-up kept its share for the life of the process, and the
/// 32nd big answer here waited for the budget forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_hang_up_mid_answer_give_the_buffer_budget_back() {
    let api = Serial::start().await;
    let gh = default_gatehouse(&api).await;
    let finished = || api.received().iter().filter(|r| r.path == "/big").count();
    for i in 1..=40 {
        let reader = slow_reader(&gh).await;
        assert!(
            common::eventually(WITHIN, || async { finished() == i }).await,
            "the backend did not finish big answer {i}: the buffer budget ran out"
        );
        drop(reader);
    }
    let body = tokio::time::timeout(WITHIN, async {
        reqwest::get(gh.http_url("/api/big"))
            .await?
            .error_for_status()?
            .bytes()
            .await
    })
    .await
    .expect("the last big answer within the time limit")
    .expect("the last big answer");
    assert_eq!(body.len(), BIG_LEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_response_buffering_a_slow_reader_holds_the_backend() {
    let api = Serial::start().await;
    let gh = start(&api, &server("30s", "30s"), "response_buffering = false\n").await;
    let reader = slow_reader(&gh).await;
    // Let the answer start flowing; it cannot finish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, took) = quick_get(&gh).await;
    assert!(
        status.is_none() || took >= PROMPT,
        "answered in {took:?} ({status:?}) although the backend should be held"
    );
    drop(reader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_uploads_and_downloads_arrive_byte_exact_and_leave_no_temp_file() {
    let api = Serial::start().await;
    let gh = default_gatehouse(&api).await;
    let spills = || async {
        gh.metric("gatehouse_request_body_spills_total", &[])
            .await
            .unwrap_or(0.0)
    };
    let before = spills().await;
    let upload: Vec<u8> = (0..8 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let client = reqwest::Client::new();
    for (i, url) in [gh.http_url("/api/put"), gh.https_url("/api/put")]
        .iter()
        .enumerate()
    {
        let client = if i == 0 {
            client.clone()
        } else {
            gh.client_h2()
        };
        let resp = client
            .post(url.as_str())
            .body(upload.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), format!("ok {}", upload.len()));
    }
    let got: Vec<_> = api
        .received()
        .into_iter()
        .filter(|r| r.path == "/put")
        .collect();
    assert_eq!(got.len(), 2);
    for r in &got {
        assert!(r.body == upload, "the upload arrived changed");
        assert!(
            r.headers
                .to_ascii_lowercase()
                .contains("content-length: 8388608"),
            "a buffered body goes upstream with its length: {}",
            r.headers
        );
    }
    assert_eq!(spills().await, before + 2.0, "8 MiB bodies spill to disk");
    let big = client
        .get(gh.http_url("/api/big"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(big.len(), BIG_LEN);
    assert!(big == big_body(), "the download arrived changed");
    let left: Vec<_> = std::fs::read_dir(gh.dir().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != ".keep")
        .collect();
    assert!(left.is_empty(), "temp files left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_end_badly_never_reach_the_backend() {
    let api = Serial::start().await;
    let gh = default_gatehouse(&api).await;
    // Abandoned half-way.
    let mut s = TcpStream::connect(gh.http_addr()).await.unwrap();
    s.write_all(b"POST /api/abandoned HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&[b'x'; 500]).await.unwrap();
    drop(s);
    // A malformed chunk after a good one.
    let bad = b"POST /api/chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nbad\r\n0\r\n\r\n";
    let resp = common::raw::request(gh.http_addr(), bad).await.unwrap();
    assert_eq!(resp.status, 400);
    // Over the size limit, sent chunked (no Content-Length to refuse up front).
    let mut s = TcpStream::connect(gh.http_addr()).await.unwrap();
    s.write_all(b"POST /api/huge HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 1 << 20, "y".repeat(1 << 20));
    let mut status = None;
    for _ in 0..20 {
        if s.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let mut answer = vec![0u8; 4096];
    if let Ok(Ok(n)) = tokio::time::timeout(WITHIN, s.read(&mut answer)).await {
        status = String::from_utf8_lossy(&answer[..n])
            .split_whitespace()
            .nth(1)
            .map(str::to_string);
    }
    assert_eq!(status.as_deref(), Some("413"));
    assert_prompt(&gh, "after the bad bodies").await;
    // The backend speaks HTTP/1.0; Gatehouse answers in its own version.
    let mut s = TcpStream::connect(gh.http_addr()).await.unwrap();
    s.write_all(&common::raw::get("/api/v", Some("a")))
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WITHIN, s.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let heads = api.heads();
    for path in ["/abandoned", "/chunked", "/huge"] {
        assert!(
            !heads.iter().any(|p| p == path),
            "{path} reached the backend: {heads:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_slower_than_client_body_timeout_gets_408() {
    let api = Serial::start().await;
    let gh = start(&api, &server("1s", "30s"), "").await;
    let mut s = TcpStream::connect(gh.http_addr()).await.unwrap();
    s.write_all(b"POST /api/slow HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    // One byte every 200 ms: every read is quick, the whole body is not.
    let trickle = tokio::spawn(async move {
        for _ in 0..50 {
            if s.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut out = Vec::new();
        let _ = tokio::time::timeout(WITHIN, s.read_to_end(&mut out)).await;
        out
    });
    let out = trickle.await.unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert_eq!(
        gh.metric(
            "gatehouse_client_timeouts_total",
            &[("deadline", "client_body_timeout")]
        )
        .await,
        Some(1.0)
    );
    assert!(!api.heads().iter().any(|p| p == "/slow"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_is_cut_after_send_timeout() {
    let api = Serial::start().await;
    let gh = start(&api, &server("30s", "1s"), "").await;
    let mut reader = slow_reader(&gh).await;
    assert!(
        gh.wait_metric(
            "gatehouse_client_timeouts_total",
            &[("deadline", "send_timeout")],
            1.0,
            WITHIN
        )
        .await,
        "the reader was not cut"
    );
    // What was sent before the cut, then the end of the connection.
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(WITHIN, reader.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got += n,
            Err(_) => panic!("the connection stayed open after the cut"),
        }
    }
    assert!(got < BIG_LEN, "the whole answer went out ({got} bytes)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_are_streamed_with_buffering_on() {
    let api = Serial::start().await;
    let gh = default_gatehouse(&api).await;
    let started = Instant::now();
    let mut resp = reqwest::get(gh.http_url("/api/sse")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(chunk) = tokio::time::timeout(WITHIN, resp.chunk())
        .await
        .unwrap()
        .unwrap()
    {
        text.push_str(&String::from_utf8_lossy(&chunk));
        arrivals.push(started.elapsed());
    }
    assert_eq!(text.matches("data: event").count(), SSE_EVENTS, "{text}");
    let first = arrivals[0];
    let last = *arrivals.last().unwrap();
    // The stream takes (events - 1) gaps; the first event must not wait for them.
    assert!(
        last >= SSE_GAP * (SSE_EVENTS as u32 - 1),
        "the events came faster than sent: {arrivals:?}"
    );
    assert!(
        first < SSE_GAP,
        "the first event waited for the stream: {arrivals:?}"
    );
}

/// Resident memory of a process (bytes).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap()
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_slow_uploaders_spill_to_disk_not_memory() {
    let api = Serial::start().await;
    let gh = default_gatehouse(&api).await;
    let rss_before = rss(gh.pid());
    let part = vec![b'u'; 256 * 1024];
    let mut open = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(gh.http_addr()).await.unwrap();
        s.write_all(b"POST /api/many HTTP/1.1\r\nHost: a\r\nContent-Length: 1048576\r\n\r\n")
            .await
            .unwrap();
        s.write_all(&part).await.unwrap();
        open.push(s);
    }
    assert!(
        gh.wait_metric("gatehouse_request_body_spills_total", &[], 200.0, WITHIN)
            .await,
        "the bodies did not spill"
    );
    let grown = rss(gh.pid()).saturating_sub(rss_before);
    eprintln!(
        "200 slow uploaders with 256 KiB each in flight: RSS +{} KiB ({} KiB each)",
        grown / 1024,
        grown / 1024 / 200
    );
    // 200 x 256 KiB = 50 MiB of bodies; memory holds 64 KiB of each at most
    // (12.5 MiB), plus connection state and allocator slack, which swing by
    // 15 MiB between runs on a loaded machine: held in memory, the bodies
    // alone would pass 50 MiB.
    assert!(grown < 48 << 20, "RSS grew {} MiB", grown >> 20);
    assert_prompt(&gh, "200 slow uploaders").await;
    drop(open);
}
