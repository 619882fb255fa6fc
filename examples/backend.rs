//! A small API backend to put behind Gatehouse while trying it out.
//!
//! It answers `GET /health` with `200 ok`, and every other request with a JSON
//! echo of what it received, so the forwarding headers Gatehouse adds and the
//! way it balances requests between servers can be seen from a client:
//!
//! ```text
//! {"server":"backend-5000","method":"GET","path":"/users?id=1",
//!  "headers":{"host":"localhost:8443","x-forwarded-for":"127.0.0.1",...}}
//! ```
//!
//! A hand-written HTTP/1.1 server on tokio: keep-alive, request bodies read by
//! `Content-Length` (or chunked), responses with `Content-Length`.
//!
//! Run two of them and a Gatehouse in front:
//!
//! ```text
//! cargo run --example backend -- --port 5000
//! cargo run --example backend -- --port 5001 --name second
//! curl http://127.0.0.1:5000/health
//! curl -s http://127.0.0.1:5000/users?id=1
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::{Buf, BytesMut};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head accepted, in bytes.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest request body accepted, in bytes.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Most headers parsed in one request.
const MAX_HEADERS: usize = 100;

/// Command line of the example backend.
#[derive(Parser, Debug)]
#[command(about = "Example API backend for Gatehouse: echoes each request as JSON")]
struct Args {
    /// Port to listen on.
    #[arg(long, default_value_t = 5000)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
    /// Name reported in the `server` field (default `backend-PORT`).
    #[arg(long)]
    name: Option<String>,
}

/// One parsed request.
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    keep_alive: bool,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let name = args
        .name
        .unwrap_or_else(|| format!("backend-{}", args.port));
    let addr = SocketAddr::new(args.bind, args.port);
    let listener = TcpListener::bind(addr).await?;
    eprintln!("{name} listening on http://{addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        let name = name.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(stream, &name).await {
                eprintln!("{name}: connection error: {e}");
            }
        });
    }
}

/// Serves requests on one connection until the client closes it or asks to.
async fn serve(mut stream: TcpStream, name: &str) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let Some(req) = read_request(&mut stream, &mut buf).await? else {
            return Ok(());
        };
        let (status, content_type, body) = if req.path == "/health" {
            ("200 OK", "text/plain", "ok".to_string())
        } else {
            ("200 OK", "application/json", echo(name, &req))
        };
        let connection = if req.keep_alive {
            "keep-alive"
        } else {
            "close"
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nX-Backend: {name}\r\nConnection: {connection}\r\n\r\n",
            body.len()
        );
        let mut out = head.into_bytes();
        if req.method != "HEAD" {
            out.extend_from_slice(body.as_bytes());
        }
        stream.write_all(&out).await?;
        if !req.keep_alive {
            return Ok(());
        }
    }
}

/// The JSON answer for a request.
fn echo(name: &str, req: &Request) -> String {
    let mut headers = BTreeMap::new();
    for (k, v) in &req.headers {
        headers
            .entry(k.clone())
            .and_modify(|old: &mut String| {
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

/// Reads one request (head and body); `None` when the client closed the
/// connection between requests.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
) -> std::io::Result<Option<Request>> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(buf).map_err(invalid)? {
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
                let header = |n: &str| {
                    headers
                        .iter()
                        .find(|(k, _)| k == n)
                        .map(|(_, v)| v.to_ascii_lowercase())
                };
                let connection = header("connection").unwrap_or_default();
                let keep_alive = if version == 0 {
                    connection.contains("keep-alive")
                } else {
                    !connection.contains("close")
                };
                if header("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
                    read_chunked(stream, buf).await?;
                } else {
                    let len: usize = match header("content-length") {
                        Some(v) => v.trim().parse().map_err(invalid)?,
                        None => 0,
                    };
                    if len > MAX_BODY_BYTES {
                        return Err(invalid("request body too large"));
                    }
                    fill(stream, buf, len).await?;
                    buf.advance(len);
                }
                return Ok(Some(Request {
                    method,
                    path,
                    headers,
                    keep_alive,
                }));
            }
            httparse::Status::Partial => {
                if buf.len() > MAX_HEAD_BYTES {
                    return Err(invalid("request head too large"));
                }
                if stream.read_buf(buf).await? == 0 {
                    return if buf.is_empty() {
                        Ok(None)
                    } else {
                        Err(invalid("connection closed in a request head"))
                    };
                }
            }
        }
    }
}

/// Reads and discards a chunked body.
async fn read_chunked(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<()> {
    let mut total = 0usize;
    loop {
        let line = read_line(stream, buf).await?;
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(invalid)?;
        total = total.saturating_add(size);
        if total > MAX_BODY_BYTES {
            return Err(invalid("request body too large"));
        }
        if size == 0 {
            // Trailers end with an empty line.
            while !read_line(stream, buf).await?.is_empty() {}
            return Ok(());
        }
        fill(stream, buf, size + 2).await?;
        buf.advance(size + 2);
    }
}

/// Reads one CRLF-terminated line, without the CRLF.
async fn read_line(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<String> {
    loop {
        if let Some(pos) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..pos]).into_owned();
            buf.advance(pos + 2);
            return Ok(line);
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(invalid("line too long"));
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(invalid("connection closed in a chunked body"));
        }
    }
}

/// Reads until `buf` holds at least `len` bytes.
async fn fill(stream: &mut TcpStream, buf: &mut BytesMut, len: usize) -> std::io::Result<()> {
    while buf.len() < len {
        if stream.read_buf(buf).await? == 0 {
            return Err(invalid("connection closed in a request body"));
        }
    }
    Ok(())
}

fn invalid<E: Into<Box<dyn std::error::Error + Send + Sync>>>(e: E) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}
