//! A backend that handles one request at a time, like a Gunicorn sync worker:
//! HTTP/1.0 answers, the connection closed after each, and the next
//! connection accepted only when the current one is done.
//!
//! Paths: `/big` answers [`BIG_LEN`] bytes of [`big_body`]; `/sse` sends
//! [`SSE_EVENTS`] events [`SSE_GAP`] apart as `text/event-stream`; `/health`
//! answers 200; everything else answers `ok` after reading the body, whose
//! bytes are kept ([`Serial::bodies`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Bytes of the `/big` answer.
pub const BIG_LEN: usize = 20 * 1000 * 1000;
/// Events of the `/sse` answer, and the pause between two.
pub const SSE_EVENTS: usize = 3;
pub const SSE_GAP: Duration = Duration::from_millis(700);

/// The `/big` answer: a pattern that shows any byte out of place.
pub fn big_body() -> Vec<u8> {
    (0..BIG_LEN)
        .map(|i| (i % 251) as u8 ^ (i / 251 % 256) as u8)
        .collect()
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: String,
    pub body: Vec<u8>,
}

pub struct Serial {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    /// Paths of every request head that arrived, complete request or not.
    heads: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for Serial {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Serial {
    pub async fn start() -> Serial {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let heads: Arc<Mutex<Vec<String>>> = Arc::default();
        let (rec, hd) = (received.clone(), heads.clone());
        let big: Arc<[u8]> = big_body().into();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                // One at a time: the next connection waits for this one.
                serve(stream, &rec, &hd, &big).await;
            }
        });
        Serial {
            addr,
            received,
            heads,
            task,
        }
    }

    pub fn addr_str(&self) -> String {
        self.addr.to_string()
    }

    /// Paths of every request head that arrived (`/health` excluded).
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    /// Requests received completely (head and body), `/health` excluded.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

async fn serve(
    mut s: TcpStream,
    received: &Mutex<Vec<Received>>,
    heads: &Mutex<Vec<String>>,
    big: &[u8],
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    if path != "/health" {
        heads.lock().unwrap().push(path.clone());
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    match path.as_str() {
        "/health" => {
            let _ = s
                .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
            return;
        }
        "/big" => {
            let h = format!("HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n", big.len());
            if s.write_all(h.as_bytes()).await.is_ok() {
                let _ = s.write_all(big).await;
            }
        }
        "/sse" => {
            let h = "HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n";
            if s.write_all(h.as_bytes()).await.is_ok() {
                for i in 0..SSE_EVENTS {
                    if i > 0 {
                        tokio::time::sleep(SSE_GAP).await;
                    }
                    let e = format!("data: event {i}\n\n");
                    if s.write_all(e.as_bytes()).await.is_err() {
                        break;
                    }
                }
            }
        }
        _ => {
            let answer = format!("ok {}", body.len());
            let h = format!(
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{answer}",
                answer.len()
            );
            let _ = s.write_all(h.as_bytes()).await;
        }
    }
    let _ = s.shutdown().await;
    received.lock().unwrap().push(Received {
        path,
        headers: head,
        body,
    });
}
