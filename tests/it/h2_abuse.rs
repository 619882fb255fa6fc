//! HTTP/2 abuse over TLS (ALPN h2): rapid reset, the concurrent-stream limit,
//! oversized and endless header blocks, and malformed frames. The `h2` crate
//! drives well-formed traffic; hand-written frames do what it would refuse.
//! Resource use is read from `/proc/PID` of the gatehouse process.

use crate::common;
use std::time::{Duration, Instant};

use common::{Backend, Gatehouse};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;

type Tls = TlsStream<TcpStream>;

async fn start(api: &Backend) -> Gatehouse {
    Gatehouse::builder(common::HTTPS)
        .append(common::API)
        .backend("api", api)
        .start()
        .await
}

async fn tls_h2(gh: &Gatehouse) -> Tls {
    let (stream, info) = common::tls::connect(gh.https_addr(), "localhost", &["h2"])
        .await
        .unwrap();
    assert_eq!(info.alpn.as_deref(), Some("h2"));
    stream
}

/// CPU time (user + system) and resident memory of a process.
fn usage(pid: u32) -> (Duration, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    // USER_HZ is 100 on Linux.
    (Duration::from_millis(ticks * 10), rss_kb * 1024)
}

/// A GET over a fresh h2 connection with the `h2` crate: the status.
async fn h2_get(gh: &Gatehouse, path: &str) -> u16 {
    let io = tls_h2(gh).await;
    let (client, conn) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::get(format!("https://localhost:{}{path}", gh.https_port))
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), resp)
        .await
        .expect("no answer on h2")
        .unwrap();
    resp.status().as_u16()
}

// ---------------------------------------------------------------------------
// Hand-written frames.

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

#[derive(Debug, Clone)]
struct Frame {
    ty: u8,
    stream: u32,
    payload: Vec<u8>,
}

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HPACK integer with an `n`-bit prefix, first byte ORed with `mask`.
fn hpack_int(out: &mut Vec<u8>, mask: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(mask | v as u8);
        return;
    }
    out.push(mask | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// Literal header fields without indexing, no Huffman.
fn hpack(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn get_block(gh: &Gatehouse, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let authority = format!("localhost:{}", gh.https_port);
    let mut h = vec![
        (":method", "GET"),
        (":scheme", "https"),
        (":path", path),
        (":authority", authority.as_str()),
    ];
    h.extend_from_slice(extra);
    hpack(&h)
}

/// A connection speaking hand-written frames; a task reads the server's.
struct RawH2 {
    w: WriteHalf<Tls>,
    rx: mpsc::UnboundedReceiver<Frame>,
    /// The server's first SETTINGS: (id, value) pairs.
    settings: Vec<(u16, u32)>,
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// GOAWAY with this error code.
    GoAway(u32),
    /// Closed without GOAWAY.
    Closed,
    /// Still open when the wait ended.
    Open,
}

impl RawH2 {
    async fn connect(gh: &Gatehouse) -> RawH2 {
        let (r, mut w) = tokio::io::split(tls_h2(gh).await);
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(read_frames(r, tx));
        w.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        w.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("no SETTINGS from the server")
            .expect("closed before SETTINGS");
        assert_eq!(first.ty, SETTINGS, "{first:?}");
        let settings = first
            .payload
            .chunks(6)
            .map(|c| {
                (
                    u16::from_be_bytes([c[0], c[1]]),
                    u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                )
            })
            .collect();
        w.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
        RawH2 { w, rx, settings }
    }

    fn setting(&self, id: u16) -> Option<u32> {
        self.settings
            .iter()
            .find(|(k, _)| *k == id)
            .map(|(_, v)| *v)
    }

    /// Writes; `false` once the server has closed.
    async fn send(&mut self, bytes: &[u8]) -> bool {
        self.w.write_all(bytes).await.is_ok() && self.w.flush().await.is_ok()
    }

    /// Frames read within `within`, and how the connection stood then.
    async fn collect(&mut self, within: Duration) -> (Vec<Frame>, End) {
        let deadline = Instant::now() + within;
        let mut frames = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline.into(), self.rx.recv()).await {
                Err(_) => return (frames, End::Open),
                Ok(None) => {
                    let end = match frames.iter().rev().find(|f| f.ty == GOAWAY) {
                        Some(g) => End::GoAway(goaway_code(g)),
                        None => End::Closed,
                    };
                    return (frames, end);
                }
                Ok(Some(f)) => {
                    let goaway = (f.ty == GOAWAY).then(|| goaway_code(&f));
                    frames.push(f);
                    if let Some(code) = goaway {
                        return (frames, End::GoAway(code));
                    }
                }
            }
        }
    }
}

fn goaway_code(f: &Frame) -> u32 {
    let p = &f.payload;
    if p.len() >= 8 {
        u32::from_be_bytes([p[4], p[5], p[6], p[7]])
    } else {
        u32::MAX
    }
}

async fn read_frames(mut r: ReadHalf<Tls>, tx: mpsc::UnboundedSender<Frame>) {
    let mut head = [0u8; 9];
    loop {
        if r.read_exact(&mut head).await.is_err() {
            return;
        }
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        if r.read_exact(&mut payload).await.is_err() {
            return;
        }
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let f = Frame {
            ty: head[3],
            stream,
            payload,
        };
        if tx.send(f).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_cut_off_or_cheap() {
    let api = Backend::named("api").await;
    let gh = start(&api).await;
    assert_eq!(h2_get(&gh, "/api/warm").await, 200);
    let (cpu0, rss0) = usage(gh.pid());

    let io = tls_h2(&gh).await;
    let (client, conn) = h2::client::handshake(io).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let url = format!("https://localhost:{}/api/rr", gh.https_port);
    let started = Instant::now();
    let mut sent = 0;
    for _ in 0..5000 {
        let req = http::Request::get(&url).body(()).unwrap();
        match client.send_request(req, false) {
            Ok((_, mut stream)) => {
                stream.send_reset(h2::Reason::CANCEL);
                sent += 1;
            }
            Err(_) => break,
        }
        if sent % 100 == 0 {
            // Let the connection task write what is queued.
            match tokio::time::timeout(Duration::from_secs(5), client.clone().ready()).await {
                Ok(Ok(c)) => client = c,
                _ => break,
            }
        }
    }
    let spent = started.elapsed();
    // The connection either ends (GOAWAY) or still answers a request.
    let req = http::Request::get(format!("https://localhost:{}/api/after", gh.https_port))
        .body(())
        .unwrap();
    let still_serves = match client.send_request(req, true) {
        Ok((resp, _)) => matches!(
            tokio::time::timeout(Duration::from_secs(5), resp).await,
            Ok(Ok(r)) if r.status() == 200
        ),
        Err(_) => false,
    };
    let ended = tokio::time::timeout(Duration::from_secs(3), conn).await;
    let cut_off = matches!(&ended, Ok(Ok(Err(e))) if e.is_go_away() || e.is_io())
        || (!still_serves && ended.is_ok());
    assert!(
        still_serves || cut_off,
        "neither served after the resets nor closed: {ended:?}"
    );

    // The abuse really happened: enough streams went out for the CPU and
    // memory figures below to mean something (Pingora/h2 cut off after ~170
    // on an idle machine). A server slow to accept streams (a loaded machine)
    // reaches h2's limit of 20 reset streams it has not yet accepted sooner:
    // that cut-off after more than 20 resets is the defence too. The client
    // sees it as GOAWAY(ENHANCE_YOUR_CALM), or as a broken pipe when the
    // server closed while the client was still writing resets. A server that
    // ends the connection at 20 resets or fewer fails here.
    assert!(
        sent >= 100 || (sent > 20 && cut_off),
        "only {sent} streams were opened and reset before the connection ended: {ended:?}"
    );
    let (cpu1, rss1) = usage(gh.pid());
    let cpu = cpu1.saturating_sub(cpu0);
    let rss = rss1.saturating_sub(rss0);
    eprintln!(
        "rapid reset: {sent} streams in {spent:?}; gatehouse CPU +{cpu:?}, RSS +{} KiB, backend saw {}, still serves: {still_serves}, connection end: {ended:?}",
        rss / 1024,
        api.count()
    );
    assert!(cpu < Duration::from_secs(2), "CPU +{cpu:?}");
    assert!(rss < 50 << 20, "RSS +{} MiB", rss >> 20);
    // The server stays healthy for everyone else.
    assert_eq!(h2_get(&gh, "/api/next").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_are_limited() {
    let api = Backend::builder()
        .name("api")
        .delay(Duration::from_millis(1500))
        .start()
        .await;
    let gh = start(&api).await;
    let mut h2 = RawH2::connect(&gh).await;
    // SETTINGS_MAX_CONCURRENT_STREAMS (3) is advertised and finite.
    let max = h2
        .setting(3)
        .expect("no SETTINGS_MAX_CONCURRENT_STREAMS advertised");
    assert!((1..=1000).contains(&max), "max_concurrent_streams {max}");

    // Open max + 50 streams at once; each waits 1.5 s at the backend.
    let over = max + 50;
    let mut bytes = Vec::new();
    for i in 0..over {
        let block = get_block(&gh, &format!("/api/c{i}"), &[]);
        bytes.extend(frame(HEADERS, END_STREAM | END_HEADERS, 1 + 2 * i, &block));
    }
    assert!(h2.send(&bytes).await);
    let (frames, end) = h2.collect(Duration::from_secs(1)).await;
    let refused: Vec<u32> = frames
        .iter()
        .filter(|f| f.ty == RST_STREAM && f.payload == 7u32.to_be_bytes())
        .map(|f| f.stream)
        .collect();
    let reached = api.count();
    eprintln!(
        "max_concurrent_streams {max}: {} refused, {reached} reached the backend, end {end:?}",
        refused.len()
    );
    assert!(
        reached <= max as usize,
        "{reached} requests reached the backend with a limit of {max}"
    );
    assert!(
        refused.len() >= 50 || matches!(end, End::GoAway(_)),
        "{} streams refused, end {end:?}, of {over} with a limit of {max}",
        refused.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_lists_are_refused() {
    let api = Backend::named("api").await;
    let gh = start(&api).await;

    // Over Gatehouse's 32 KiB max_header_size, under h2's 64 KiB list limit: 431.
    let big = "a".repeat(40 * 1024);
    let io = tls_h2(&gh).await;
    let (client, conn) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::get(format!("https://localhost:{}/api/big", gh.https_port))
        .header("x-big", big.as_str())
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), resp)
        .await
        .unwrap();
    match resp {
        Ok(r) => assert_eq!(r.status(), 431),
        Err(e) => assert!(e.is_reset() || e.is_go_away(), "{e:?}"),
    }

    // Over the advertised SETTINGS_MAX_HEADER_LIST_SIZE: stream error,
    // GOAWAY or 431, never a request upstream.
    let mut h2 = RawH2::connect(&gh).await;
    let limit = h2.setting(6).unwrap_or(64 * 1024) as usize;
    let huge = "b".repeat(limit + 16 * 1024);
    let block = get_block(&gh, "/api/huge", &[("x-huge", huge.as_str())]);
    let mut bytes = Vec::new();
    let parts: Vec<&[u8]> = block.chunks(16 * 1024).collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let (ty, flags) = if i == 0 {
            (HEADERS, END_STREAM | if last { END_HEADERS } else { 0 })
        } else {
            (CONTINUATION, if last { END_HEADERS } else { 0 })
        };
        bytes.extend(frame(ty, flags, 1, part));
    }
    h2.send(&bytes).await;
    let (frames, end) = h2.collect(Duration::from_secs(3)).await;
    let reset = frames.iter().any(|f| f.ty == RST_STREAM && f.stream == 1);
    let answered = frames.iter().any(|f| f.ty == HEADERS && f.stream == 1);
    assert!(
        reset || answered || end != End::Open,
        "no reaction to a {} KiB header list: {frames:?}",
        block.len() / 1024
    );
    assert_eq!(api.count(), 0, "an oversized request reached the backend");
    assert_eq!(h2_get(&gh, "/api/after").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_continuation_frames_are_cut_off() {
    let api = Backend::named("api").await;
    let gh = start(&api).await;
    let (cpu0, rss0) = usage(gh.pid());
    let mut h2 = RawH2::connect(&gh).await;
    let block = get_block(&gh, "/api/cont", &[]);
    assert!(h2.send(&frame(HEADERS, END_STREAM, 1, &block)).await);
    // 16 MiB of header fields in CONTINUATION frames, never ending the block.
    let field = hpack(&[("x-pad", &"p".repeat(16 * 1024 - 16))]);
    let mut sent = 0usize;
    let mut still_writing = true;
    while sent < 16 << 20 {
        let mut batch = Vec::new();
        for _ in 0..16 {
            batch.extend(frame(CONTINUATION, 0, 1, &field));
        }
        sent += batch.len();
        if !h2.send(&batch).await {
            still_writing = false;
            break;
        }
    }
    let (_, end) = h2.collect(Duration::from_secs(3)).await;
    let (cpu1, rss1) = usage(gh.pid());
    let (cpu, rss) = (cpu1.saturating_sub(cpu0), rss1.saturating_sub(rss0));
    eprintln!(
        "continuation flood: {} KiB sent, writing until the end: {still_writing}, end {end:?}, CPU +{cpu:?}, RSS +{} KiB",
        sent / 1024,
        rss / 1024
    );
    // The flood started: at least one batch of 256 KiB (four times the
    // 64 KiB header-list limit) was written, or refused because the server
    // had already cut the block off. How many batches the socket takes before
    // the server's GOAWAY and close depends on timing (1.5-2.3 MiB on an idle
    // machine, under 1 MiB under load), so the test asks no more than that.
    assert!(
        sent >= 256 << 10,
        "only {sent} bytes of CONTINUATION went out: the flood was not sent"
    );
    assert!(
        !still_writing || end != End::Open,
        "16 MiB of CONTINUATION accepted and the connection still open"
    );
    assert!(rss < 50 << 20, "RSS +{} MiB", rss >> 20);
    assert!(cpu < Duration::from_secs(2), "CPU +{cpu:?}");
    assert_eq!(api.count(), 0);
    assert_eq!(h2_get(&gh, "/api/after").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_end_the_connection() {
    let api = Backend::named("api").await;
    let gh = start(&api).await;
    // Control: a well-formed request on a raw connection is answered.
    let mut h2 = RawH2::connect(&gh).await;
    let block = get_block(&gh, "/api/ok", &[]);
    assert!(
        h2.send(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &block))
            .await
    );
    let (frames, _) = h2.collect(Duration::from_millis(500)).await;
    assert!(
        frames.iter().any(|f| f.ty == HEADERS && f.stream == 1),
        "the control request got no answer: {frames:?}"
    );

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "HEADERS on stream 0",
            frame(HEADERS, END_STREAM | END_HEADERS, 0, &block),
        ),
        (
            "DATA on an idle stream",
            frame(DATA, END_STREAM, 5, b"hello"),
        ),
        (
            "RST_STREAM on an idle stream",
            frame(RST_STREAM, 0, 7, &8u32.to_be_bytes()),
        ),
        (
            "SETTINGS of 5 bytes",
            frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0]),
        ),
        ("SETTINGS on stream 1", frame(SETTINGS, 0, 1, &[])),
        (
            "WINDOW_UPDATE of 0 on the connection",
            frame(WINDOW_UPDATE, 0, 0, &0u32.to_be_bytes()),
        ),
        (
            "frame over the max frame size",
            frame(DATA, 0, 1, &vec![0u8; 20000]),
        ),
        (
            "HEADERS with an even stream id",
            frame(HEADERS, END_STREAM | END_HEADERS, 2, &block),
        ),
        (
            "CONTINUATION without HEADERS",
            frame(CONTINUATION, END_HEADERS, 1, &block),
        ),
        (
            "HPACK garbage",
            frame(HEADERS, END_STREAM | END_HEADERS, 1, &[0xff; 32]),
        ),
    ];
    let mut failures = Vec::new();
    for (name, bytes) in &cases {
        let mut h2 = RawH2::connect(&gh).await;
        h2.send(bytes).await;
        let (_, end) = h2.collect(Duration::from_secs(3)).await;
        eprintln!("{name}: {end:?}");
        match end {
            End::GoAway(code) if code != 0 => {}
            other => failures.push(format!("{name}: {other:?}")),
        }
        // A new connection is served afterwards.
        let status = h2_get(&gh, "/api/after").await;
        if status != 200 {
            failures.push(format!("{name}: then {status} on a new connection"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
