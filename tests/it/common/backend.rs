//! A real HTTP/1.1 backend on `127.0.0.1`, run on the test's tokio runtime.
//!
//! It records every request (method, path with query, headers, body), answers
//! like `examples/backend.rs` (a JSON echo with its name, header `X-Backend`),
//! answers `GET /health` with a status the test can flip, and can be switched
//! to a slow, mute or hanging-up mode. [`Backend::stop`] closes the listener and
//! every open connection, so connects are refused until [`Backend::restart`]
//! binds the same port again.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// The path answered with the health status.
pub const HEALTH_PATH: &str = "/health";

/// How the backend answers requests other than `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answer at once.
    Normal,
    /// Wait this long, then answer.
    Slow(Duration),
    /// Read the request and never answer (the connection stays open).
    NeverAnswer,
    /// Read the request and close the connection without a byte of answer.
    CloseWithoutAnswer,
    /// Answer at once with this status (and the usual JSON echo).
    Status(u16),
}

/// A fixed answer body, in place of the JSON echo.
#[derive(Debug, Clone)]
pub struct Body {
    pub content_type: String,
    /// Sent with `Content-Length` when one piece, else chunked, one chunk per
    /// piece, `gap` apart.
    pub pieces: Vec<Vec<u8>>,
    pub gap: Duration,
}

/// One request as the backend received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path with query, as on the request line.
    pub path: String,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (any case).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Builder for [`Backend`].
#[derive(Debug, Clone)]
pub struct BackendBuilder {
    name: Option<String>,
    port: u16,
    mode: Mode,
    health_status: u16,
    response_headers: Vec<(String, String)>,
    body: Option<Body>,
}

impl BackendBuilder {
    /// Answers every request (not `/health`) with `body` of `content_type`
    /// and a `Content-Length`, instead of the JSON echo.
    pub fn body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(Body {
            content_type: content_type.to_string(),
            pieces: vec![body.into()],
            gap: Duration::ZERO,
        });
        self
    }

    /// Answers every request (not `/health`) chunked, one chunk per piece,
    /// `gap` apart, instead of the JSON echo.
    pub fn chunked(mut self, content_type: &str, pieces: Vec<Vec<u8>>, gap: Duration) -> Self {
        self.body = Some(Body {
            content_type: content_type.to_string(),
            pieces,
            gap,
        });
        self
    }

    /// Name reported in the JSON `server` field and `X-Backend` (default `backend-PORT`).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// Wait `d` before answering each request (not `/health`).
    pub fn delay(mut self, d: Duration) -> Self {
        self.mode = Mode::Slow(d);
        self
    }

    /// Answering mode for requests other than `/health`.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Status of `/health` at start (default 200).
    pub fn health_status(mut self, status: u16) -> Self {
        self.health_status = status;
        self
    }

    /// A header put on every answer (not `/health`).
    pub fn response_header(mut self, name: &str, value: &str) -> Self {
        self.response_headers
            .push((name.to_string(), value.to_string()));
        self
    }

    /// Binds and starts serving on the current tokio runtime.
    pub async fn start(self) -> Backend {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend local addr");
        let shared = Arc::new(Shared {
            name: self
                .name
                .unwrap_or_else(|| format!("backend-{}", addr.port())),
            requests: Mutex::new(Vec::new()),
            health_status: AtomicU16::new(self.health_status),
            mode: Mutex::new(self.mode),
            response_headers: self.response_headers,
            body: self.body,
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
        });
        let backend = Backend {
            shared,
            addr,
            running: Mutex::new(None),
        };
        backend.spawn(listener);
        backend
    }
}

struct Shared {
    name: String,
    requests: Mutex<Vec<Request>>,
    health_status: AtomicU16,
    mode: Mutex<Mode>,
    response_headers: Vec<(String, String)>,
    body: Option<Body>,
    /// TCP connections accepted so far.
    accepted: AtomicUsize,
    /// TCP connections open now (until the client closes one, or the backend).
    open: AtomicUsize,
}

struct Running {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// A running (or stopped) test backend. Dropping it stops it.
pub struct Backend {
    shared: Arc<Shared>,
    addr: SocketAddr,
    running: Mutex<Option<Running>>,
}

impl Backend {
    pub fn builder() -> BackendBuilder {
        BackendBuilder {
            name: None,
            port: 0,
            mode: Mode::Normal,
            health_status: 200,
            response_headers: Vec::new(),
            body: None,
        }
    }

    /// A backend with default settings and the given name.
    pub async fn named(name: &str) -> Backend {
        Self::builder().name(name).start().await
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, for a config's `servers` list.
    pub fn addr_str(&self) -> String {
        self.addr.to_string()
    }

    /// `/health` answers 200 when true, 500 when false.
    pub fn set_healthy(&self, healthy: bool) {
        self.set_health_status(if healthy { 200 } else { 500 });
    }

    /// Switches how requests other than `/health` are answered.
    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.shared.mode) = mode;
    }

    pub fn set_health_status(&self, status: u16) {
        self.shared.health_status.store(status, Ordering::SeqCst);
    }

    /// Every request received, `/health` checks included.
    pub fn all_requests(&self) -> Vec<Request> {
        lock(&self.shared.requests).clone()
    }

    /// Number of requests received except `/health` checks.
    pub fn count(&self) -> usize {
        lock(&self.shared.requests)
            .iter()
            .filter(|r| !is_health(&r.path))
            .count()
    }

    /// Number of requests received for exactly `path` (with query, if any).
    pub fn count_path(&self, path: &str) -> usize {
        lock(&self.shared.requests)
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    /// The latest request other than a `/health` check.
    pub fn last_request(&self) -> Option<Request> {
        lock(&self.shared.requests)
            .iter()
            .rev()
            .find(|r| !is_health(&r.path))
            .cloned()
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// TCP connections open now: accepted and not yet closed by the client.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Forgets the recorded requests.
    pub fn clear(&self) {
        lock(&self.shared.requests).clear();
    }

    pub fn is_running(&self) -> bool {
        lock(&self.running).is_some()
    }

    /// Closes the listener and every open connection; returns once they are
    /// closed, so a connect to the port is refused from then on.
    pub async fn stop(&self) {
        let running = lock(&self.running).take();
        if let Some(r) = running {
            let _ = r.shutdown.send(());
            let _ = r.task.await;
        }
    }

    /// Binds the same port again (after [`Backend::stop`]) and serves.
    pub async fn restart(&self) {
        if self.is_running() {
            return;
        }
        let mut last_err = None;
        for _ in 0..100 {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => {
                    self.spawn(listener);
                    return;
                }
                Err(e) => last_err = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("cannot bind {} again: {last_err:?}", self.addr);
    }

    fn spawn(&self, listener: TcpListener) {
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, self.shared.clone(), rx));
        *lock(&self.running) = Some(Running { shutdown: tx, task });
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(r) = lock(&self.running).take() {
            let _ = r.shutdown.send(());
            r.task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn is_health(path: &str) -> bool {
    path == HEALTH_PATH || path.starts_with("/health?")
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    shared.accepted.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.set_nodelay(true);
                    conns.spawn(serve(stream, shared.clone()));
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

/// Serves one connection until the client closes it or asks to.
async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    shared.open.fetch_add(1, Ordering::SeqCst);
    let _open = OpenConnection(shared.clone());
    serve_requests(stream, &shared).await;
}

/// Counts a connection as open until its task ends (or is aborted).
struct OpenConnection(Arc<Shared>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve_requests(mut stream: TcpStream, shared: &Shared) {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let Ok(Some((req, keep_alive))) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        lock(&shared.requests).push(req.clone());
        let out = if is_health(&req.path) {
            let status = shared.health_status.load(Ordering::SeqCst);
            let body = if (200..300).contains(&status) {
                "ok"
            } else {
                "unhealthy"
            };
            response(
                status,
                "text/plain",
                &[],
                body,
                keep_alive,
                req.method == "HEAD",
            )
        } else {
            let mode = *lock(&shared.mode);
            let mut status = 200;
            match mode {
                Mode::Normal => {}
                Mode::Status(s) => status = s,
                Mode::Slow(d) => tokio::time::sleep(d).await,
                Mode::NeverAnswer => std::future::pending::<()>().await,
                Mode::CloseWithoutAnswer => return,
            }
            let mut headers = vec![("X-Backend".to_string(), shared.name.clone())];
            headers.extend(shared.response_headers.iter().cloned());
            if let Some(body) = &shared.body {
                let head = req.method == "HEAD";
                if write_body(&mut stream, status, &headers, body, keep_alive, head)
                    .await
                    .is_err()
                    || !keep_alive
                {
                    return;
                }
                continue;
            }
            let body = echo(&shared.name, &req);
            response(
                status,
                "application/json",
                &headers,
                &body,
                keep_alive,
                req.method == "HEAD",
            )
        };
        if stream.write_all(&out).await.is_err() || !keep_alive {
            return;
        }
    }
}

fn response(
    status: u16,
    content_type: &str,
    headers: &[(String, String)],
    body: &str,
    keep_alive: bool,
    head: bool,
) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {}\r\n",
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if !head {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// Writes a fixed [`Body`]: with `Content-Length` when it is one piece, else
/// chunked with a pause between chunks (the head and each chunk flushed).
async fn write_body(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    body: &Body,
    keep_alive: bool,
    head: bool,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status} Status\r\nContent-Type: {}\r\nConnection: {}\r\n",
        body.content_type,
        if keep_alive { "keep-alive" } else { "close" }
    );
    let chunked = body.pieces.len() != 1;
    if chunked {
        out.push_str("Transfer-Encoding: chunked\r\n");
    } else {
        out.push_str(&format!("Content-Length: {}\r\n", body.pieces[0].len()));
    }
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    stream.write_all(out.as_bytes()).await?;
    if head {
        return Ok(());
    }
    if !chunked {
        return stream.write_all(&body.pieces[0]).await;
    }
    for (i, piece) in body.pieces.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(body.gap).await;
        }
        let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
        chunk.extend_from_slice(piece);
        chunk.extend_from_slice(b"\r\n");
        stream.write_all(&chunk).await?;
    }
    stream.write_all(b"0\r\n\r\n").await
}

/// The JSON echo: `{"server", "method", "path", "headers": {name: value}}`;
/// repeated headers are joined with `", "`.
fn echo(name: &str, req: &Request) -> String {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &req.headers {
        headers
            .entry(k.clone())
            .and_modify(|old| {
                old.push_str(", ");
                old.push_str(v);
            })
            .or_insert_with(|| v.clone());
    }
    serde_json::json!({
        "server": name,
        "method": req.method,
        "path": req.path,
        "headers": headers,
    })
    .to_string()
}

type IoResult<T> = std::io::Result<T>;

fn invalid(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

/// Reads one request; `None` when the client closed between requests.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
) -> IoResult<Option<(Request, bool)>> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(buf).map_err(|_| invalid("bad request head"))? {
            httparse::Status::Complete(head_len) => {
                let version = parsed.version.unwrap_or(1);
                let method = parsed.method.unwrap_or("GET").to_string();
                let path = parsed.path.unwrap_or("/").to_string();
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                buf.advance(head_len);
                let mut req = Request {
                    method,
                    path,
                    headers,
                    body: Vec::new(),
                };
                let connection = req
                    .header("connection")
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                let keep_alive = if version == 0 {
                    connection.contains("keep-alive")
                } else {
                    !connection.contains("close")
                };
                let chunked = req
                    .header("transfer-encoding")
                    .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
                if chunked {
                    req.body = read_chunked(stream, buf).await?;
                } else {
                    let len: usize = match req.header("content-length") {
                        Some(v) => v
                            .trim()
                            .parse()
                            .map_err(|_| invalid("bad content-length"))?,
                        None => 0,
                    };
                    fill(stream, buf, len).await?;
                    req.body = buf.split_to(len).to_vec();
                }
                return Ok(Some((req, keep_alive)));
            }
            httparse::Status::Partial => {
                if buf.len() > 256 * 1024 {
                    return Err(invalid("request head too large"));
                }
                if stream.read_buf(buf).await? == 0 {
                    return if buf.is_empty() {
                        Ok(None)
                    } else {
                        Err(invalid("closed in head"))
                    };
                }
            }
        }
    }
}

async fn read_chunked(stream: &mut TcpStream, buf: &mut BytesMut) -> IoResult<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(stream, buf).await?;
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| invalid("bad chunk size"))?;
        if size == 0 {
            while !read_line(stream, buf).await?.is_empty() {}
            return Ok(body);
        }
        fill(stream, buf, size + 2).await?;
        body.extend_from_slice(&buf[..size]);
        buf.advance(size + 2);
    }
}

async fn read_line(stream: &mut TcpStream, buf: &mut BytesMut) -> IoResult<String> {
    loop {
        if let Some(pos) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..pos]).into_owned();
            buf.advance(pos + 2);
            return Ok(line);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(invalid("closed in chunked body"));
        }
    }
}

async fn fill(stream: &mut TcpStream, buf: &mut BytesMut, len: usize) -> IoResult<()> {
    while buf.len() < len {
        if stream.read_buf(buf).await? == 0 {
            return Err(invalid("closed in body"));
        }
    }
    Ok(())
}
