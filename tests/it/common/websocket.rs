//! WebSocket on both ends (tokio-tungstenite): [`WsBackend`], an echo server
//! on loopback, and [`connect`], a client through Gatehouse over TCP or TLS.
//!
//! The server echoes text and binary messages; on the text `close-me` it
//! starts a close handshake itself (code 1000, reason `bye`). It counts the
//! upgrades it accepted and the close frames it received.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{tls, Gatehouse};

/// Time allowed for one message to come back.
pub const ECHO_WITHIN: Duration = Duration::from_secs(5);

/// A WebSocket echo server on `127.0.0.1`.
pub struct WsBackend {
    addr: SocketAddr,
    upgrades: Arc<AtomicUsize>,
    closes: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl WsBackend {
    pub async fn start() -> WsBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upgrades = Arc::new(AtomicUsize::new(0));
        let closes = Arc::new(AtomicUsize::new(0));
        let (u, c) = (upgrades.clone(), closes.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (u, c) = (u.clone(), c.clone());
                tokio::spawn(async move {
                    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    u.fetch_add(1, Ordering::SeqCst);
                    echo(ws, c).await;
                });
            }
        });
        WsBackend {
            addr,
            upgrades,
            closes,
            task,
        }
    }

    pub fn addr_str(&self) -> String {
        self.addr.to_string()
    }

    /// Upgrades accepted so far.
    pub fn upgrades(&self) -> usize {
        self.upgrades.load(Ordering::SeqCst)
    }

    /// Close frames received from clients so far.
    pub fn closes(&self) -> usize {
        self.closes.load(Ordering::SeqCst)
    }
}

impl Drop for WsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(mut ws: WebSocketStream<TcpStream>, closes: Arc<AtomicUsize>) {
    while let Some(Ok(msg)) = ws.next().await {
        let reply = match msg {
            Message::Text(t) if t.as_str() == "close-me" => {
                let frame = CloseFrame {
                    code: CloseCode::Normal,
                    reason: "bye".into(),
                };
                let _ = ws.close(Some(frame)).await;
                continue;
            }
            Message::Text(_) | Message::Binary(_) => msg,
            Message::Close(_) => {
                // tungstenite answers the close frame on the next poll.
                closes.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            _ => continue,
        };
        if ws.send(reply).await.is_err() {
            return;
        }
    }
}

/// A client connection through Gatehouse, over TCP or TLS.
pub type Client = WebSocketStream<Box<dyn Stream>>;

/// Any byte stream a WebSocket can run on.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Opens `path` as a WebSocket through Gatehouse: `ws://` on the `[http]`
/// listener, or `wss://` (ALPN http/1.1) on the `[https]` one. Panics unless
/// the answer is 101.
pub async fn connect(gh: &Gatehouse, path: &str, tls: bool) -> Client {
    let (stream, url): (Box<dyn Stream>, String) = if tls {
        let (s, _) = tls::connect(gh.https_addr(), "localhost", &["http/1.1"])
            .await
            .unwrap();
        (Box::new(s), format!("wss://localhost{path}"))
    } else {
        let s = TcpStream::connect(gh.http_addr()).await.unwrap();
        (Box::new(s), format!("ws://localhost{path}"))
    };
    let (ws, resp) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("WebSocket handshake through Gatehouse");
    assert_eq!(resp.status(), 101);
    ws
}

/// Sends `text` and waits for the same text back.
pub async fn round_trip(ws: &mut Client, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
    match tokio::time::timeout(ECHO_WITHIN, ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => assert_eq!(t.as_str(), text),
        other => panic!("no echo of {text:?}: {other:?}"),
    }
}

/// Waits up to `within` for the connection to end (a close frame, an error
/// or EOF); returns the close frame if one came.
pub async fn wait_closed(ws: &mut Client, within: Duration) -> Option<Option<CloseFrame>> {
    tokio::time::timeout(within, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .ok()
}
