//! Hostile HTTP/1.1 on the plain listener (`redirect_to_https = false`), sent
//! raw over TCP, against a backend that records every byte it receives.
//!
//! For each request that must be refused: the status, that the connection is
//! closed afterwards, and that the backend received not one byte. A control
//! request on the same setup shows that the backend is reachable, so "nothing
//! arrived" is a real observation.

use crate::common;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Gatehouse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Time allowed for any single read in these tests.
const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// A backend that keeps every byte it receives, and answers each complete
/// request with `200`, body = the request target.
struct Sink {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
    heads: Arc<Mutex<Vec<String>>>,
    conns: Arc<Mutex<Vec<Arc<Conn>>>>,
    task: JoinHandle<()>,
}

/// One connection the backend accepted.
#[derive(Default)]
struct Conn {
    received: Mutex<Vec<u8>>,
    /// The proxy closed it (EOF or error on read).
    closed: std::sync::atomic::AtomicBool,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sink {
    async fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let conns: Arc<Mutex<Vec<Arc<Conn>>>> = Arc::default();
        let (r, h, c) = (received.clone(), heads.clone(), conns.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let conn = Arc::new(Conn::default());
                c.lock().unwrap().push(conn.clone());
                tokio::spawn(sink_conn(stream, r.clone(), h.clone(), conn));
            }
        });
        Sink {
            addr,
            received,
            heads,
            conns,
            task,
        }
    }

    fn bytes(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    fn text_since(&self, from: usize) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()[from..]).into_owned()
    }

    /// The connection on which `needle` arrived.
    fn conn_with(&self, needle: &str) -> Option<Arc<Conn>> {
        self.conns
            .lock()
            .unwrap()
            .iter()
            .find(|c| String::from_utf8_lossy(&c.received.lock().unwrap()).contains(needle))
            .cloned()
    }

    /// Heads of complete requests, in order.
    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

async fn sink_conn(
    mut stream: TcpStream,
    received: Arc<Mutex<Vec<u8>>>,
    heads: Arc<Mutex<Vec<String>>>,
    conn: Arc<Conn>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                conn.closed.store(true, std::sync::atomic::Ordering::SeqCst);
                return;
            }
            Ok(n) => n,
        };
        received.lock().unwrap().extend_from_slice(&chunk[..n]);
        conn.received.lock().unwrap().extend_from_slice(&chunk[..n]);
        buf.extend_from_slice(&chunk[..n]);
        while let Some((len, head, target)) = complete_request(&buf) {
            buf.drain(..len);
            heads.lock().unwrap().push(head);
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{target}",
                target.len()
            );
            if stream.write_all(resp.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

/// Length, head text and target of the first complete request in `buf`.
fn complete_request(buf: &[u8]) -> Option<(usize, String, String)> {
    let mut hs = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut hs);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let target = req.path.unwrap_or("").to_string();
    let mut body_len = 0;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            body_len = std::str::from_utf8(h.value).ok()?.trim().parse().ok()?;
        }
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let rest = &buf[head_len..];
            let end = rest.windows(5).position(|w| w == b"0\r\n\r\n")?;
            body_len = end + 5;
        }
    }
    if buf.len() < head_len + body_len {
        return None;
    }
    let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
    Some((head_len + body_len, head, target))
}

/// The plain listener routing everything to `sink`.
async fn start(sink: &Sink) -> Gatehouse {
    Gatehouse::builder(common::HTTP_PLAIN)
        .append(
            r#"
[[route]]
prefix = "/"
upstream = "sink"

[upstream.sink]
servers = ["{sink}"]
"#,
        )
        .var("sink", sink.addr.to_string())
        .start()
        .await
}

/// Sends `bytes` on a fresh connection; everything read until the server
/// closes (`closed = true`) or [`IO_TIMEOUT`] passes (`closed = false`).
async fn send(gh: &Gatehouse, bytes: &[u8]) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(gh.http_addr()).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match tokio::time::timeout(IO_TIMEOUT, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
            Err(_) => return (out, false),
        }
    }
}

/// The status codes of the responses in `bytes`, with their bodies.
fn responses(mut bytes: &[u8]) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    loop {
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut hs);
        let Ok(httparse::Status::Complete(n)) = resp.parse(bytes) else {
            return out;
        };
        let len: usize = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
            .unwrap_or(0);
        let end = (n + len).min(bytes.len());
        out.push((
            resp.code.unwrap_or(0),
            String::from_utf8_lossy(&bytes[n..end]).into_owned(),
        ));
        bytes = &bytes[end..];
    }
}

/// Sends each case on its own connection; every one must get `status`, see
/// its connection closed, and leave the backend without a byte. Failures are
/// collected so one run shows all of them.
async fn refused(gh: &Gatehouse, sink: &Sink, status: u16, cases: &[(&str, Vec<u8>)]) {
    let mut failures = Vec::new();
    for (name, bytes) in cases {
        let before = sink.bytes();
        let (out, closed) = send(gh, bytes).await;
        let got: Vec<u16> = responses(&out).iter().map(|r| r.0).collect();
        if got != [status] {
            failures.push(format!(
                "{name}: expected one {status}, got {got:?}: {:?}",
                String::from_utf8_lossy(&out[..out.len().min(200)])
            ));
        }
        // Every refusal, the parser's own included, is the short JSON error
        // with a request id.
        if let Some((_, body)) = responses(&out).first() {
            let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
            let id = json.as_ref().and_then(|j| j["request_id"].as_str());
            let json_status = json.as_ref().and_then(|j| j["status"].as_u64());
            if json_status != Some(u64::from(status)) || id.is_none_or(str::is_empty) {
                failures.push(format!(
                    "{name}: not the JSON error with a request id: {body:?}"
                ));
            }
        }
        if !closed {
            failures.push(format!(
                "{name}: connection still open {IO_TIMEOUT:?} after the {status}"
            ));
        }
        if sink.bytes() != before {
            failures.push(format!(
                "{name}: the backend received {:?}",
                sink.text_since(before)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A control: a well-formed request on the same setup reaches the backend.
async fn control(gh: &Gatehouse, sink: &Sink) {
    let before = sink.bytes();
    let (out, _) = send(
        gh,
        b"POST /control HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert_eq!(responses(&out), [(200, "/control".to_string())]);
    assert!(sink.text_since(before).ends_with("\r\n\r\nhello"));
}

fn case(name: &'static str, text: &str) -> (&'static str, Vec<u8>) {
    (name, text.as_bytes().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_gets_400_and_reaches_nothing() {
    let sink = Sink::start().await;
    let gh = start(&sink).await;
    control(&gh, &sink).await;
    let cases = [
        case(
            "Content-Length then Transfer-Encoding",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        case(
            "Transfer-Encoding then Content-Length",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        ),
        case(
            "duplicate equal Content-Length",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        ),
        case(
            "duplicate differing Content-Length",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        case(
            "Content-Length: +5",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
        ),
        case(
            "Transfer-Encoding: xchunked",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        ),
        case(
            "Transfer-Encoding: chunked, identity",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        ),
        case(
            "space before colon",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nhello",
        ),
        case(
            "obs-fold",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
        ),
    ];
    refused(&gh, &sink, 400, &cases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_heads_get_400_and_reach_nothing() {
    let sink = Sink::start().await;
    let gh = start(&sink).await;
    control(&gh, &sink).await;
    let cases = [
        case("bare LF line ends", "GET / HTTP/1.1\nHost: a\n\n"),
        case("one bare LF", "GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n"),
        case("bare CR", "GET / HTTP/1.1\rHost: a\r\n\r\n"),
        case(
            "NUL in a header",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n",
        ),
        case("missing Host", "GET / HTTP/1.1\r\n\r\n"),
        case(
            "two Host headers",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ),
        case("malformed Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
        case(
            "absolute-form naming another host",
            "GET http://evil.example/x HTTP/1.1\r\nHost: good.example\r\n\r\n",
        ),
        case("HTTP/0.9", "GET /\r\n\r\n"),
    ];
    refused(&gh, &sink, 400, &cases).await;
}

/// Request-line anomalies (RFC 9112 section 3.2: a recipient of an invalid
/// request line should answer 400 and not autocorrect it), each with what
/// Nginx 1.22 answered on this machine:
///
/// | request line                 | Gatehouse | Nginx 1.22          |
/// |------------------------------|-----------|---------------------|
/// | `GET /a b HTTP/1.1` (space)  | 400       | 400                 |
/// | `GET /a<TAB>b HTTP/1.1`      | 400       | 400                 |
/// | `GET<TAB>/a HTTP/1.1`        | 400       | 400                 |
/// | `GET  /a HTTP/1.1` (2 SP)    | 400       | 200 (merges spaces) |
/// | `GET /a  HTTP/1.1` (2 SP)    | 400       | 200 (merges spaces) |
/// | `GET /a HTTP/1.1 ` (trailing)| 400       | 200                 |
/// | ` GET /a HTTP/1.1` (leading) | 400       | 400                 |
/// | `GET /a<0x01>b HTTP/1.1`     | 400       | 400                 |
/// | `GET /a<DEL>b HTTP/1.1`      | 400       | 400                 |
/// | `GET foo HTTP/1.1`           | 400       | 400                 |
/// | `GET * HTTP/1.1`             | 400       | 400                 |
/// | `OPTIONS * HTTP/1.1`         | 400       | 400                 |
/// | `GET localhost:80 HTTP/1.1`  | 400       | 400                 |
/// | `GET /a#frag HTTP/1.1`       | 400       | 200 (keeps `#frag`) |
/// | `GET /a HTTP/2.0` over h1    | 400       | 505                 |
///
/// Where Nginx is lenient (extra spaces, a fragment) Gatehouse refuses: the
/// line is invalid, and a lenient reading in one hop and a strict one in the
/// next is how requests slip past filters. Bytes Nginx accepts and forwards
/// unchanged (raw UTF-8, `"`, `{`, `|`) are forwarded unchanged here too,
/// never re-encoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_line_anomalies_get_400_and_reach_nothing() {
    let sink = Sink::start().await;
    let gh = start(&sink).await;
    control(&gh, &sink).await;
    let line = |name: &'static str, line: &[u8]| {
        let mut bytes = line.to_vec();
        bytes.extend_from_slice(b"\r\nHost: a\r\n\r\n");
        (name, bytes)
    };
    let cases = [
        line("raw space in the target", b"GET /a b HTTP/1.1"),
        line("tab in the target", b"GET /a\tb HTTP/1.1"),
        line("tab after the method", b"GET\t/a HTTP/1.1"),
        line("two spaces after the method", b"GET  /a HTTP/1.1"),
        line("two spaces before the version", b"GET /a  HTTP/1.1"),
        line("trailing space", b"GET /a HTTP/1.1 "),
        line("leading space", b" GET /a HTTP/1.1"),
        line("control character in the target", b"GET /a\x01b HTTP/1.1"),
        line("DEL in the target", b"GET /a\x7fb HTTP/1.1"),
        line("target without a slash", b"GET foo HTTP/1.1"),
        line("asterisk-form on GET", b"GET * HTTP/1.1"),
        line("asterisk-form on OPTIONS", b"OPTIONS * HTTP/1.1"),
        line("authority-form on GET", b"GET localhost:80 HTTP/1.1"),
        line("fragment in the target", b"GET /a#frag HTTP/1.1"),
        line("HTTP/2.0 on an HTTP/1 connection", b"GET /a HTTP/2.0"),
    ];
    refused(&gh, &sink, 400, &cases).await;

    // Lenient where Nginx is, and forwarded exactly as sent.
    for target in [&b"/caf\xc3\xa9"[..], b"/a\"b", b"/a{b}", b"/a|b"] {
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(target);
        req.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let (out, _) = send(&gh, &req).await;
        let got = responses(&out);
        assert_eq!(got.len(), 1, "{}", target.escape_ascii());
        assert_eq!(got[0].0, 200, "{}", target.escape_ascii());
        assert_eq!(
            got[0].1.as_bytes(),
            target,
            "the backend saw another target than {}",
            target.escape_ascii()
        );
    }
}

/// A head the parser refuses is answered, logged and counted like any other
/// request Gatehouse refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parser_refusals_are_logged_and_counted() {
    let sink = Sink::start().await;
    let config = format!(
        "{}{}",
        common::gatehouse::DEFAULT_SERVER.replace(
            r#"access_log = "off""#,
            r#"access_log = "{dir}/access.log""#
        ),
        common::ADMIN
    );
    let gh = Gatehouse::builder(&format!("{config}{}", common::HTTP_PLAIN))
        .append(
            r#"
[[route]]
prefix = "/"
upstream = "sink"

[upstream.sink]
servers = ["{sink}"]
"#,
        )
        .var("sink", sink.addr.to_string())
        .start()
        .await;
    let labels = [("route", "none"), ("method", "OTHER"), ("status", "400")];
    let before = gh
        .metric("gatehouse_requests_total", &labels)
        .await
        .unwrap_or(0.0);
    let heads: [&[u8]; 4] = [
        b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\rHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
    ];
    let mut ids = Vec::new();
    for head in heads {
        let (out, _) = send(&gh, head).await;
        let (status, body) = responses(&out).into_iter().next().expect("an answer");
        assert_eq!(status, 400, "{}", head.escape_ascii());
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
        assert_eq!(json["error"], "bad_request");
        let id = json["request_id"].as_str().expect("request id").to_string();
        let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
        assert!(
            text.contains(&format!("x-request-id: {id}")),
            "the header and the body carry one id: {text}"
        );
        ids.push(id);
    }
    assert!(
        gh.wait_metric(
            "gatehouse_requests_total",
            &labels,
            before + 4.0,
            Duration::from_secs(5)
        )
        .await,
        "each refused head is counted"
    );
    let log_path = gh.dir().join("access.log");
    let found = common::eventually(Duration::from_secs(5), || async {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        ids.iter().all(|id| text.contains(id.as_str()))
    })
    .await;
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(found, "one access-log line per refused head:\n{text}");
    for line in text.lines() {
        let entry: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        assert_eq!(entry["status"], 400, "{line}");
        assert_eq!(entry["route"], serde_json::Value::Null, "{line}");
        assert_eq!(entry["client_ip"], "127.0.0.1", "{line}");
    }
    assert_eq!(sink.bytes(), 0, "nothing reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_header_gets_431() {
    let sink = Sink::start().await;
    let gh = start(&sink).await;
    // Control: 16 KiB of header is under the 32 KiB default.
    let ok = format!(
        "GET /ok HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(16 * 1024)
    );
    let (out, _) = send(&gh, ok.as_bytes()).await;
    assert_eq!(responses(&out), [(200, "/ok".to_string())]);
    let head = |n: usize| {
        format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
            "a".repeat(n)
        )
    };
    let cases = [
        ("40 KiB header", head(40 * 1024).into_bytes()),
        ("100 KiB header", head(100 * 1024).into_bytes()),
    ];
    refused(&gh, &sink, 431, &cases).await;
    // More header lines than the parser takes: refused by Pingora's parser
    // with its own 400 (a 431 would be more precise).
    let many: String = (0..2000)
        .map(|i| format!("X-H{i}: {}\r\n", "v".repeat(20)))
        .collect();
    let cases = [(
        "2000 header lines",
        format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").into_bytes(),
    )];
    refused(&gh, &sink, 400, &cases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_for_the_same_host_is_one_clean_request() {
    let sink = Sink::start().await;
    let gh = start(&sink).await;
    let (out, _) = send(
        &gh,
        b"GET http://good.example/x?q=1 HTTP/1.1\r\nHost: good.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    let got = responses(&out);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, 200);
    let heads = sink.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let hosts: Vec<&str> = heads[0]
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("host:"))
        .collect();
    assert_eq!(hosts.len(), 1, "{}", heads[0]);
    assert!(
        hosts[0].eq_ignore_ascii_case("host: good.example"),
        "{}",
        heads[0]
    );
}

/// An absolute-form target (`GET http://good.example/x HTTP/1.1`) is sent
/// upstream in origin form, as Nginx does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_is_forwarded_in_origin_form() {
    let sink = Sink::start().await;
    let gh = start(&sink).await;
    let (out, _) = send(
        &gh,
        b"GET http://good.example/x?q=1 HTTP/1.1\r\nHost: good.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(responses(&out), [(200, "/x?q=1".to_string())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upgrade_is_served_as_http11() {
    let sink = Sink::start().await;
    let gh = start(&sink).await;
    let mut s = TcpStream::connect(gh.http_addr()).await.unwrap();
    s.write_all(
        b"GET /u HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    )
    .await
    .unwrap();
    let resp = tokio::time::timeout(IO_TIMEOUT, common::raw::read_response(&mut s, false))
        .await
        .expect("an answer")
        .unwrap();
    assert_eq!(resp.status, 200, "served, not 101 Switching Protocols");
    assert_eq!(resp.body_text(), "/u");
    assert_eq!(resp.header("upgrade"), None);
    let heads = sink.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let head = heads[0].to_ascii_lowercase();
    assert!(head.starts_with("get /u http/1.1\r\n"), "{head}");
    for name in ["upgrade:", "http2-settings:"] {
        assert!(!head.contains(name), "the backend saw {name}\n{head}");
    }
    assert!(
        !head.contains("connection: upgrade"),
        "the backend saw Connection: Upgrade\n{head}"
    );
    // The connection is still HTTP/1.1: a second request on it works.
    s.write_all(b"GET /again HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let resp = tokio::time::timeout(IO_TIMEOUT, common::raw::read_response(&mut s, false))
        .await
        .expect("a second answer")
        .unwrap();
    assert_eq!((resp.status, resp.body_text().as_str()), (200, "/again"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_gets_are_answered_in_order() {
    let sink = Sink::start().await;
    let gh = start(&sink).await;
    // Both in one write; the last asks to close so the read ends.
    let (out, closed) = send(
        &gh,
        b"GET /first HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\n\r\nGET /third HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        responses(&out),
        [
            (200, "/first".to_string()),
            (200, "/second".to_string()),
            (200, "/third".to_string())
        ],
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(closed, "Connection: close on the last one was honoured");
    let targets: Vec<String> = sink
        .heads()
        .iter()
        .map(|h| h.split(' ').nth(1).unwrap_or("").to_string())
        .collect();
    assert_eq!(targets, ["/first", "/second", "/third"]);
}

/// A body with an unparseable chunk size (or bare-LF chunk lines) after a
/// valid head. Pingora streams request bodies, so the head has already gone
/// upstream when the body turns out to be bad. What must hold: the client
/// gets 400 and a closed connection, no complete request reaches the backend,
/// and the upstream connection that carried the partial request is closed
/// (never reused, so nothing sent later can be read as its body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chunked_body_never_completes_upstream() {
    let sink = Sink::start().await;
    let gh = start(&sink).await;
    control(&gh, &sink).await;
    for (path, body) in [
        (
            "/overflow",
            "FFFFFFFFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n",
        ),
        ("/lf-chunks", "5\nhello\n0\n\n"),
        ("/junk-size", "5x\r\nhello\r\n0\r\n\r\n"),
    ] {
        let heads_before = sink.heads().len();
        let before = sink.bytes();
        let req =
            format!("POST {path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
        let (out, closed) = send(&gh, req.as_bytes()).await;
        let got: Vec<u16> = responses(&out).iter().map(|r| r.0).collect();
        assert_eq!(got, [400], "{path}");
        assert!(closed, "{path}: client connection left open");
        assert_eq!(
            sink.heads().len(),
            heads_before,
            "{path}: a complete request reached the backend: {:?}",
            sink.text_since(before)
        );
        // The next request is answered: the backend parsed it as a request
        // of its own, not as the rest of the broken one.
        let (out, _) = send(
            &gh,
            b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(responses(&out), [(200, "/next".to_string())], "{path}");
        // Whatever part of the broken request went upstream went on a
        // connection that is then closed, never reused.
        let needle = format!("POST {path} ");
        let closed = common::eventually(Duration::from_secs(2), || async {
            sink.conn_with(&needle)
                .is_some_and(|c| c.closed.load(std::sync::atomic::Ordering::SeqCst))
        })
        .await;
        assert!(
            closed || sink.conn_with(&needle).is_none(),
            "{path}: the upstream connection with a partial request stays open"
        );
    }
}

/// `Content-Length: 5,5` (a list) is refused like two `Content-Length` lines
/// are. Pingora accepts it, and Gatehouse once forwarded the value verbatim,
/// leaving each backend to decide how long the body is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_list_gets_400() {
    let sink = Sink::start().await;
    let gh = start(&sink).await;
    control(&gh, &sink).await;
    let cases = [
        case(
            "Content-Length: 5,5",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,5\r\n\r\nhello",
        ),
        case(
            "Content-Length: 5, 5",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello",
        ),
    ];
    refused(&gh, &sink, 400, &cases).await;
}

/// `Transfer-Encoding: gzip, chunked` is refused. Pingora would send it on
/// as `Transfer-Encoding: chunked`, the gzip coding dropped, not decoded, so
/// the backend would read compressed bytes as the plain body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_transfer_coding_is_refused() {
    let sink = Sink::start().await;
    let gh = start(&sink).await;
    control(&gh, &sink).await;
    let before = sink.bytes();
    let (out, _) = send(
        &gh,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    let got: Vec<u16> = responses(&out).iter().map(|r| r.0).collect();
    assert!(got == [501] || got == [400], "{got:?}");
    assert_eq!(sink.bytes(), before, "{:?}", sink.text_since(before));
}
