//! Raw HTTP/1.1 exchanges: bytes out, one parsed response back, with a timeout.
//!
//! For requests a client library would normalise or refuse (no `Host`, junk
//! `Host`, `..` in the path, NUL, backslashes) and for hostile input.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Time allowed for a whole raw exchange.
pub const RAW_TIMEOUT: Duration = Duration::from_secs(5);

/// One response as read off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Header names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// The interim (1xx) answers read before this one: status and headers.
    pub interim: Vec<(u16, Vec<(String, String)>)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET {path} HTTP/1.1` with `Host: {host}` (none when `None`) and
/// `Connection: close`.
pub fn get(path: &str, host: Option<&str>) -> Vec<u8> {
    let mut s = format!("GET {path} HTTP/1.1\r\n");
    if let Some(h) = host {
        s.push_str(&format!("Host: {h}\r\n"));
    }
    s.push_str("Connection: close\r\n\r\n");
    s.into_bytes()
}

/// Connects to `addr`, sends `bytes` and reads one response.
pub async fn request(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<RawResponse> {
    let mut stream = timed(TcpStream::connect(addr)).await??;
    exchange(&mut stream, bytes).await
}

/// Connects to `addr`, sends `bytes` and returns every byte the server sends
/// until it closes, unparsed: for tests of the exact wire form (name case,
/// folding). Send `Connection: close`.
pub async fn wire(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = timed(TcpStream::connect(addr)).await??;
    timed(stream.write_all(bytes)).await??;
    let mut out = Vec::new();
    timed(stream.read_to_end(&mut out)).await??;
    Ok(out)
}

/// Sends `bytes` on `stream` and reads one response (no body after `HEAD`).
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
) -> std::io::Result<RawResponse> {
    timed(stream.write_all(bytes)).await??;
    timed(stream.flush()).await??;
    let head = bytes.starts_with(b"HEAD ");
    timed(read_response(stream, head)).await?
}

async fn timed<F: std::future::Future>(f: F) -> std::io::Result<F::Output> {
    tokio::time::timeout(RAW_TIMEOUT, f)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "raw exchange timed out"))
}

fn invalid(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

/// Reads one response; interim 1xx responses before it are kept in
/// [`RawResponse::interim`].
pub async fn read_response<S: AsyncRead + Unpin>(
    stream: &mut S,
    head_request: bool,
) -> std::io::Result<RawResponse> {
    let mut buf: Vec<u8> = Vec::new();
    let mut interim = Vec::new();
    loop {
        let (status, headers, head_len) = loop {
            let mut hs = [httparse::EMPTY_HEADER; 128];
            let mut resp = httparse::Response::new(&mut hs);
            match resp
                .parse(&buf)
                .map_err(|e| invalid(&format!("bad response head: {e}")))?
            {
                httparse::Status::Complete(n) => {
                    let headers: Vec<(String, String)> = resp
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    break (resp.code.unwrap_or(0), headers, n);
                }
                httparse::Status::Partial => {
                    if read_more(stream, &mut buf).await? == 0 {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!(
                                "closed before a full response head ({} bytes read)",
                                buf.len()
                            ),
                        ));
                    }
                }
            }
        };
        buf.drain(..head_len);
        if (100..200).contains(&status) {
            interim.push((status, headers));
            continue;
        }
        let mut resp = RawResponse {
            status,
            headers,
            interim,
            body: Vec::new(),
        };
        if head_request || status == 204 || status == 304 {
            return Ok(resp);
        }
        let chunked = resp
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        if chunked {
            resp.body = read_chunked(stream, &mut buf).await?;
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len
                .trim()
                .parse()
                .map_err(|_| invalid("bad content-length"))?;
            while buf.len() < len {
                if read_more(stream, &mut buf).await? == 0 {
                    return Err(invalid("closed in a response body"));
                }
            }
            buf.truncate(len);
            resp.body = buf;
        } else {
            while read_more(stream, &mut buf).await? != 0 {}
            resp.body = buf;
        }
        return Ok(resp);
    }
}

async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

async fn read_chunked<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = loop {
            if let Some(pos) = buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&buf[..pos]).into_owned();
                buf.drain(..pos + 2);
                break line;
            }
            if read_more(stream, buf).await? == 0 {
                return Err(invalid("closed in a chunked body"));
            }
        };
        let size_hex = line.split(';').next().unwrap_or("").trim();
        if size_hex.is_empty() {
            continue;
        }
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| invalid("bad chunk size"))?;
        if size == 0 {
            return Ok(body);
        }
        while buf.len() < size + 2 {
            if read_more(stream, buf).await? == 0 {
                return Err(invalid("closed in a chunk"));
            }
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}
