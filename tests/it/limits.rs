//! Request limits against the real binary: body size (by `Content-Length` and
//! while streaming a chunked body), per-route body size, head size (431), the
//! head deadline against slowloris clients, and the per-IP connection cap.

use crate::common;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::raw::{self, RawResponse};
use common::{plain_client as client, Backend, Gatehouse};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const LOCAL1: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const LOCAL2: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A `[server]` section like the harness default (1 worker thread) plus `extra`.
fn server(extra: &str) -> String {
    format!(
        "[server]\nthreads = 1\ngrace_period = \"1s\"\naccess_log = \"off\"\npid_file = \"{{dir}}/gatehouse.pid\"\nupgrade_sock = \"{{dir}}/upgrade.sock\"\n{extra}\n"
    )
}

/// Plain listener, `server_extra`, and `/api/` → backend `{api}` (prefix stripped).
async fn start(backend: &Backend, server_extra: &str, more: &str) -> Gatehouse {
    Gatehouse::builder(&server(server_extra))
        .append(common::HTTP_PLAIN)
        .append(
            "[[route]]\nprefix = \"/api/\"\nupstream = \"api\"\nstrip_prefix = true\n\n[upstream.api]\nservers = [\"{api}\"]\n",
        )
        .append(more)
        .backend("api", backend)
        .start()
        .await
}

async fn post(client: &reqwest::Client, url: &str, len: usize) -> (u16, String) {
    let resp = client
        .post(url)
        .body(vec![b'x'; len])
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {len} bytes to {url}: {e:?}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// A TCP connection to `addr` from the local address `from`.
async fn connect_from(from: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let stream = tokio::time::timeout(raw::RAW_TIMEOUT, socket.connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A keep-alive `GET` (no `Connection: close`).
fn keep_alive_get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

/// Sends nothing more and waits up to `within` for the peer to close: `Ok(bytes
/// read before the close)` if it did, `Err` if the connection stayed open.
async fn wait_closed<S: AsyncRead + Unpin>(
    stream: &mut S,
    within: Duration,
) -> Result<Vec<u8>, Vec<u8>> {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return Err(got),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// How a trickling client ended.
#[derive(Debug)]
struct Trickle {
    /// From the first byte of the head to the close.
    closed_after: Duration,
    /// Bytes the server sent before closing.
    received: Vec<u8>,
    /// Bytes of head sent.
    sent: usize,
}

/// Sends `start` of a request head, then one more byte every `every`, never
/// ending the head, until the server closes the connection (or `give_up`).
async fn trickle<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    start: &[u8],
    every: Duration,
    give_up: Duration,
) -> Trickle {
    let t0 = Instant::now();
    let deadline = tokio::time::Instant::now() + give_up;
    let mut sent = 0;
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let done = |received: Vec<u8>, sent: usize| Trickle {
        closed_after: t0.elapsed(),
        received,
        sent,
    };
    if stream.write_all(start).await.is_err() || stream.flush().await.is_err() {
        return done(received, sent);
    }
    sent += start.len();
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            r = stream.read(&mut buf) => match r {
                Ok(0) | Err(_) => return done(received, sent),
                Ok(n) => received.extend_from_slice(&buf[..n]),
            },
            _ = ticker.tick() => {
                if stream.write_all(b"a").await.is_err() || stream.flush().await.is_err() {
                    return done(received, sent);
                }
                sent += 1;
            }
            _ = tokio::time::sleep_until(deadline) => {
                panic!("still open after {give_up:?} with {sent} bytes of head sent");
            }
        }
    }
}

/// The head a slowloris client starts with (no end).
const PARTIAL_HEAD: &[u8] = b"GET /api/slow HTTP/1.1\r\nHost: test\r\nX-Slow: ";

fn assert_cut_in_time(t: &Trickle, what: &str) {
    assert!(
        t.sent > PARTIAL_HEAD.len(),
        "{what}: the trickle never started: {t:?}"
    );
    assert!(
        t.closed_after >= Duration::from_millis(900),
        "{what}: closed too early: {t:?}"
    );
    assert!(
        t.closed_after <= Duration::from_millis(2500),
        "{what}: not closed within 2.5 s: {t:?}"
    );
    assert!(
        t.received.is_empty() || t.received.starts_with(b"HTTP/1.1 408"),
        "{what}: unexpected answer {:?}",
        String::from_utf8_lossy(&t.received)
    );
}

// ---------------------------------------------------------------- body size

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_over_the_limit_gets_413_before_proxying() {
    let api = Backend::named("api").await;
    let gh = start(&api, "max_body_size = \"1KiB\"", "").await;
    let c = client();
    let url = gh.http_url("/api/upload");

    let (status, body) = post(&c, &url, 1025).await;
    assert_eq!(status, 413, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "payload_too_large");
    assert_eq!(v["status"], 413);
    assert_eq!(api.count(), 0, "the backend sees nothing");

    // At the limit is fine, and the body arrives whole.
    let (status, _) = post(&c, &url, 1024).await;
    assert_eq!(status, 200);
    assert_eq!(api.last_request().unwrap().body.len(), 1024);

    // A raw request declaring a large body, with none sent: refused on the head alone.
    let resp = raw::request(
        gh.http_addr(),
        b"POST /api/upload HTTP/1.1\r\nHost: test\r\nContent-Length: 1000000000\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 413);
    assert_eq!(api.count(), 1);
}

/// Sends a chunked POST of `chunks` × `chunk_len` bytes to `path`, in one write
/// per chunk; the response if one came, `None` if the connection was closed.
async fn chunked_post(
    addr: SocketAddr,
    path: &str,
    chunks: usize,
    chunk_len: usize,
) -> Option<RawResponse> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{chunk_len:x}\r\n{}\r\n", "y".repeat(chunk_len));
    for _ in 0..chunks {
        // The server may refuse and close part-way; keep going regardless.
        if s.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    match tokio::time::timeout(raw::RAW_TIMEOUT, raw::read_response(&mut s, false)).await {
        Err(_) => panic!("no response and no close within {:?}", raw::RAW_TIMEOUT),
        Ok(Ok(resp)) => Some(resp),
        Ok(Err(e)) => {
            assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                ),
                "{e:?}"
            );
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_the_limit_is_cut_off() {
    let api = Backend::named("api").await;
    let gh = start(&api, "max_body_size = \"1KiB\"", "").await;

    // Under the limit: passes whole.
    let ok = chunked_post(gh.http_addr(), "/api/small", 3, 300).await;
    assert_eq!(ok.map(|r| r.status), Some(200));
    let seen = api.last_request().unwrap();
    assert_eq!((seen.path.as_str(), seen.body.len()), ("/small", 900));

    // 16 KiB in 512-byte chunks against 1 KiB.
    let resp = chunked_post(gh.http_addr(), "/api/big", 32, 512).await;
    if let Some(r) = &resp {
        assert_eq!(r.status, 413, "{}", r.body_text());
    }
    // The backend never gets a complete body (it records only whole requests).
    let complete = common::eventually(Duration::from_millis(300), || async {
        api.count_path("/big") > 0
    })
    .await;
    assert!(!complete, "the backend received the whole oversized body");

    // Gatehouse is still fine.
    let ok = chunked_post(gh.http_addr(), "/api/small2", 1, 10).await;
    assert_eq!(ok.map(|r| r.status), Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_max_body_size_overrides_the_server_one() {
    let api = Backend::named("api").await;
    let routes = r#"
[[route]]
prefix = "/big/"
upstream = "api"
max_body_size = "64KiB"

[[route]]
prefix = "/small/"
upstream = "api"
max_body_size = "1KiB"
"#;
    let gh = start(&api, "max_body_size = \"8KiB\"", routes).await;
    let c = client();

    for (path, len, want) in [
        ("/big/x", 4096, 200),
        ("/big/x", 16 * 1024, 200),
        ("/big/x", 64 * 1024 + 1, 413),
        ("/small/x", 1024, 200),
        ("/small/x", 4096, 413),
        ("/api/x", 4096, 200),
        ("/api/x", 8 * 1024 + 1, 413),
    ] {
        let (status, body) = post(&c, &gh.http_url(path), len).await;
        assert_eq!(status, want, "POST {len} bytes to {path}: {body}");
    }
    assert_eq!(api.count(), 4);

    // The route limit also applies to streamed bodies.
    let resp = chunked_post(gh.http_addr(), "/small/stream", 8, 512).await;
    if let Some(r) = resp {
        assert_eq!(r.status, 413);
    }
    let streamed = chunked_post(gh.http_addr(), "/big/stream", 32, 512).await;
    assert_eq!(streamed.map(|r| r.status), Some(200));
    assert_eq!(api.count_path("/big/stream"), 1);
    assert_eq!(api.count_path("/small/stream"), 0);
}

// ---------------------------------------------------------------- head size

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_head_gets_431_and_normal_requests_still_work() {
    let api = Backend::named("api").await;
    let gh = start(&api, "", "").await;
    let addr = gh.http_addr();

    // One 40 KiB header against the default 32 KiB.
    let big = format!(
        "GET /api/x HTTP/1.1\r\nHost: test\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    let resp = raw::request(addr, big.as_bytes()).await.unwrap();
    assert_eq!(resp.status, 431, "{}", resp.body_text());
    let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(v["error"], "request_header_fields_too_large");

    // 40 KiB spread over 80 headers.
    let mut many = String::from("GET /api/x HTTP/1.1\r\nHost: test\r\n");
    for i in 0..80 {
        many.push_str(&format!("X-H{i}: {}\r\n", "b".repeat(500)));
    }
    many.push_str("Connection: close\r\n\r\n");
    let resp = raw::request(addr, many.as_bytes()).await.unwrap();
    assert_eq!(resp.status, 431);
    assert_eq!(api.count(), 0);

    // Under the limit: served, header intact.
    let fine = format!(
        "GET /api/x HTTP/1.1\r\nHost: test\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "c".repeat(24 * 1024)
    );
    let resp = raw::request(addr, fine.as_bytes()).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(
        api.last_request().unwrap().header("x-big").map(str::len),
        Some(24 * 1024)
    );
    let resp = client().get(gh.http_url("/api/y")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_requests_get_413_and_431_too() {
    let api = Backend::named("api").await;
    let gh = Gatehouse::builder(&server("max_body_size = \"1KiB\""))
        .append(common::HTTPS)
        .append(
            "[[route]]\nprefix = \"/api/\"\nupstream = \"api\"\n\n[upstream.api]\nservers = [\"{api}\"]\n",
        )
        .backend("api", &api)
        .start()
        .await;
    let c = gh.client_h2();
    let url = gh.https_url("/api/x");

    let r = c.post(&url).body(vec![b'x'; 2048]).send().await.unwrap();
    assert_eq!(
        (r.version(), r.status().as_u16()),
        (reqwest::Version::HTTP_2, 413)
    );
    let r = c
        .get(&url)
        .header("x-big", "a".repeat(40 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    assert_eq!(api.count(), 0);
    let r = c.post(&url).body(vec![b'x'; 1024]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(api.last_request().unwrap().body.len(), 1024);
}

// ---------------------------------------------------------------- head deadline

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_off_while_others_are_served() {
    let api = Backend::named("api").await;
    let gh = Gatehouse::builder(&server("header_timeout = \"1s\""))
        .append(common::HTTP_PLAIN)
        .append(common::HTTPS)
        .append(
            "[[route]]\nprefix = \"/api/\"\nupstream = \"api\"\n\n[upstream.api]\nservers = [\"{api}\"]\n",
        )
        .backend("api", &api)
        .start()
        .await;
    let addr = gh.http_addr();
    let https = gh.https_addr();

    let plain = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        trickle(
            &mut s,
            PARTIAL_HEAD,
            Duration::from_millis(300),
            Duration::from_secs(5),
        )
        .await
    });
    let tls = tokio::spawn(async move {
        let (mut s, _) = common::tls::connect(https, "localhost", &["http/1.1"])
            .await
            .unwrap();
        trickle(
            &mut s,
            PARTIAL_HEAD,
            Duration::from_millis(300),
            Duration::from_secs(5),
        )
        .await
    });
    // A connection that sends nothing at all.
    let silent = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let t0 = Instant::now();
        let r = wait_closed(&mut s, Duration::from_secs(5)).await;
        (t0.elapsed(), r)
    });

    // Meanwhile a normal client is served, over new and kept-alive connections.
    let c = client();
    let mut served = 0;
    while !(plain.is_finished() && tls.is_finished() && silent.is_finished()) {
        let resp = c.get(gh.http_url("/api/normal")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let fresh = raw::request(addr, &raw::get("/api/fresh", Some("test")))
            .await
            .unwrap();
        assert_eq!(fresh.status, 200);
        served += 2;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served >= 10, "only {served} requests served meanwhile");

    assert_cut_in_time(&plain.await.unwrap(), "plain HTTP/1.1");
    assert_cut_in_time(&tls.await.unwrap(), "HTTP/1.1 over TLS");
    let (after, r) = silent.await.unwrap();
    assert!(r.is_ok(), "a silent connection stayed open");
    assert!(
        (Duration::from_millis(900)..=Duration::from_millis(2500)).contains(&after),
        "silent connection closed after {after:?}"
    );
    assert_eq!(api.count_path("/slow"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_is_not_cut_by_the_head_deadline() {
    let api = Backend::named("api").await;
    let gh = start(&api, "header_timeout = \"1s\"", "").await;
    let addr = gh.http_addr();

    // Request, idle 1.5 s, request again on the same connection.
    let idle = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let first = raw::exchange(&mut s, &keep_alive_get("/api/one"))
            .await
            .unwrap();
        assert_eq!(first.status, 200);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let second = raw::exchange(&mut s, &keep_alive_get("/api/two")).await;
        second.map(|r| r.status)
    });
    // Request, idle 1.5 s, then a second head trickled: the deadline counts
    // from that head's first byte.
    let slow_second = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let first = raw::exchange(&mut s, &keep_alive_get("/api/three"))
            .await
            .unwrap();
        assert_eq!(first.status, 200);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        trickle(
            &mut s,
            PARTIAL_HEAD,
            Duration::from_millis(300),
            Duration::from_secs(5),
        )
        .await
    });

    assert_eq!(
        idle.await.unwrap().unwrap(),
        200,
        "the kept-alive connection serves a second request after 1.5 s idle"
    );
    assert_cut_in_time(&slow_second.await.unwrap(), "second head trickled");
    assert_eq!(api.count_path("/two"), 1);
}

/// `keepalive_timeout` counts from the latest answer: a connection that was
/// idle 0.6 s before its second request is closed about 1 s after the second
/// answer, not 1 s after the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_timeout_counts_from_the_latest_answer() {
    let api = Backend::named("api").await;
    let gh = start(&api, "keepalive_timeout = \"1s\"", "").await;
    let mut s = TcpStream::connect(gh.http_addr()).await.unwrap();
    let first = raw::exchange(&mut s, &keep_alive_get("/api/one"))
        .await
        .unwrap();
    assert_eq!(first.status, 200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let second = raw::exchange(&mut s, &keep_alive_get("/api/two"))
        .await
        .unwrap();
    assert_eq!(second.status, 200);
    let answered = Instant::now();
    let closed = wait_closed(&mut s, Duration::from_secs(4)).await;
    let after = answered.elapsed();
    assert_eq!(
        closed,
        Ok(Vec::new()),
        "the idle connection is closed quietly within 4 s"
    );
    assert!(
        (Duration::from_millis(900)..=Duration::from_millis(1800)).contains(&after),
        "idle connection closed {after:?} after the second answer (keepalive_timeout 1 s)"
    );
}

// ---------------------------------------------------------------- connections per IP

/// A connection from `from` that completed one request (so it was surely
/// accepted) and is kept open.
async fn served_connection(from: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let mut s = connect_from(from, addr).await?;
    let resp = raw::exchange(&mut s, &keep_alive_get("/api/conn")).await?;
    if resp.status != 200 {
        return Err(std::io::Error::other(format!("status {}", resp.status)));
    }
    Ok(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_ip_are_capped() {
    let api = Backend::named("api").await;
    let gh = start(&api, "max_connections_per_ip = 3", "").await;
    let addr = gh.http_addr();

    let mut held = Vec::new();
    for i in 0..3 {
        let s = served_connection(LOCAL1, addr)
            .await
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        held.push(s);
    }

    // The 4th from the same address is closed without an answer.
    let mut fourth = connect_from(LOCAL1, addr).await.unwrap();
    let _ = fourth.write_all(&keep_alive_get("/api/fourth")).await;
    let got = wait_closed(&mut fourth, Duration::from_secs(5)).await;
    match got {
        Ok(bytes) => assert!(
            bytes.is_empty(),
            "the 4th connection got an answer: {:?}",
            String::from_utf8_lossy(&bytes)
        ),
        Err(bytes) => panic!(
            "the 4th connection stayed open ({} bytes received)",
            bytes.len()
        ),
    }
    assert_eq!(api.count_path("/fourth"), 0);

    // Another address is not affected.
    let other = served_connection(LOCAL2, addr).await;
    assert!(other.is_ok(), "127.0.0.2: {other:?}");

    // The held connections still work.
    for s in held.iter_mut() {
        let r = raw::exchange(s, &keep_alive_get("/api/again"))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }

    // Closing one frees a slot for 127.0.0.1.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    let _replacement = loop {
        match served_connection(LOCAL1, addr).await {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(e) => panic!("no slot for 127.0.0.1 after closing a connection: {e}"),
        }
    };
    // With the replacement held, the cap applies again.
    let mut fifth = connect_from(LOCAL1, addr).await.unwrap();
    let _ = fifth.write_all(&keep_alive_get("/api/fifth")).await;
    assert_eq!(
        wait_closed(&mut fifth, Duration::from_secs(5)).await,
        Ok(Vec::new()),
        "cap of 3 again"
    );
}

// ---------------------------------------------------------------- before TLS

/// A TLS connection that never sends its ClientHello is closed after
/// `header_timeout` by the pre-TLS check. (One that starts a handshake and
/// stalls is bounded by Pingora's fixed 60 s handshake timeout instead.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tls_connections_are_closed_after_header_timeout() {
    let api = Backend::named("api").await;
    let gh = Gatehouse::builder(&server(
        "header_timeout = \"1s\"\nmax_connections_per_ip = 3",
    ))
    .append(common::HTTPS)
    .append(
        "[[route]]\nprefix = \"/api/\"\nupstream = \"api\"\n\n[upstream.api]\nservers = [\"{api}\"]\n",
    )
    .backend("api", &api)
    .start()
    .await;
    // Ten connections from one address that never send a ClientHello.
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(TcpStream::connect(gh.https_addr()).await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_millis(2500);
    let mut still_open = 0;
    for s in silent.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        if wait_closed(s, left).await.is_err() {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open, 0,
        "{still_open} of 10 silent TLS connections from one IP still open after 2.5 s \
         (header_timeout 1 s, max_connections_per_ip 3)"
    );
}
