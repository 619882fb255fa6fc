//! A raw HTTP/1.x server on `127.0.0.1` whose answers are bytes the test
//! scripts, for upstream answers a real server library would not send (an
//! answer that says `Connection: close` and then keeps the socket open, an
//! HTTP/1.0 answer, a 1xx before the final answer, bytes after the body).
//!
//! It never closes a connection itself (but one started with
//! [ScriptedBackend::closing], which closes after each answer, as an HTTP/1.0
//! server ends an answer without a length): each one stays open until the
//! peer (Gatehouse) closes it, so a connection Gatehouse wrongly keeps for
//! reuse is not thrown away by the pool's check for a closed socket, and a
//! second request on it is answered and counted on that connection. It counts the
//! connections it accepted and records every request head with the number of
//! the connection it came on.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// One request head as the server read it.
#[derive(Debug, Clone)]
pub struct ScriptedRequest {
    /// 1 for the first connection accepted, 2 for the next, ...
    pub connection: usize,
    pub method: String,
    /// Path with query, as on the request line.
    pub path: String,
    /// The head as sent, request line to the blank line.
    pub head: String,
}

type Script = dyn Fn(&ScriptedRequest) -> Vec<u8> + Send + Sync;

struct Shared {
    script: Box<Script>,
    /// Close the connection after each answer.
    close_after_answer: bool,
    accepted: AtomicUsize,
    requests: Mutex<Vec<ScriptedRequest>>,
}

/// A running scripted server; stops (and drops its connections) on drop.
pub struct ScriptedBackend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl ScriptedBackend {
    /// Serves every request with the bytes `script` returns for it, written in
    /// one write; reads a `Content-Length` request body and ignores it.
    pub async fn start(
        script: impl Fn(&ScriptedRequest) -> Vec<u8> + Send + Sync + 'static,
    ) -> ScriptedBackend {
        Self::launch(Box::new(script), false).await
    }

    /// Like [Self::start], but closes each connection after its first answer.
    pub async fn closing(
        script: impl Fn(&ScriptedRequest) -> Vec<u8> + Send + Sync + 'static,
    ) -> ScriptedBackend {
        Self::launch(Box::new(script), true).await
    }

    async fn launch(script: Box<Script>, close_after_answer: bool) -> ScriptedBackend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind scripted backend");
        let addr = listener.local_addr().expect("scripted backend local addr");
        let shared = Arc::new(Shared {
            script,
            close_after_answer,
            accepted: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        ScriptedBackend { addr, shared, task }
    }

    /// Serves every request with the same `answer`.
    pub async fn answering(answer: &'static [u8]) -> ScriptedBackend {
        Self::start(move |_| answer.to_vec()).await
    }

    /// `127.0.0.1:PORT`, for a config's `servers` list.
    pub fn addr_str(&self) -> String {
        self.addr.to_string()
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Every request head read so far, in the order read.
    pub fn requests(&self) -> Vec<ScriptedRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for ScriptedBackend {
    fn drop(&mut self) {
        // The connection tasks live in the accept task's JoinSet: aborted with it.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let number = shared.accepted.fetch_add(1, Ordering::SeqCst) + 1;
        connections.spawn(serve(stream, number, shared.clone()));
        // Reap the finished ones so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
}

async fn serve(mut stream: TcpStream, connection: usize, shared: Arc<Shared>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // Every whole request in the buffer, in order.
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 128];
            let mut parsed = httparse::Request::new(&mut headers);
            let head_len = match parsed.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => break,
                // Not HTTP: stop answering, keep the socket until the peer closes.
                Err(_) => return drain(stream).await,
            };
            let body_len: usize = parsed
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() < head_len + body_len {
                break;
            }
            let request = ScriptedRequest {
                connection,
                method: parsed.method.unwrap_or_default().to_string(),
                path: parsed.path.unwrap_or_default().to_string(),
                head: String::from_utf8_lossy(&buf[..head_len]).into_owned(),
            };
            buf.drain(..head_len + body_len);
            let answer = (shared.script)(&request);
            shared
                .requests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(request);
            if stream.write_all(&answer).await.is_err() {
                return;
            }
            if shared.close_after_answer {
                let _ = stream.shutdown().await;
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads and discards until the peer closes.
async fn drain(mut stream: TcpStream) {
    let mut chunk = [0u8; 8192];
    while matches!(stream.read(&mut chunk).await, Ok(n) if n > 0) {}
}
