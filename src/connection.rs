//! Per-connection limits, applied before any HTTP parsing.
//!
//! [`Guarded`] wraps the proxy application. For each accepted connection it
//! takes a slot from the per-IP connection count (`max_connections_per_ip`;
//! a connection over the cap is closed at once) and wraps the stream in
//! [`GuardedIo`], which enforces `header_timeout` on HTTP/1.x: a request head
//! must arrive completely within that time, counted from the connection's start
//! for the first request and from the first byte of each later one. A slowloris
//! client that trickles its head is cut off; an idle keep-alive connection is
//! governed by the keep-alive timeout instead. The slot is released when the
//! stream is dropped, i.e. when the connection closes.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, SocketDigest, TimingDigest,
};
use pingora::protocols::{Peek, Shutdown, Ssl, Stream, UniqueID, UniqueIDType, ALPN};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::state::State;

/// The settings a new connection is checked against, read from the current
/// config (copied, so no config is cloned per connection).
#[derive(Clone, Copy)]
struct Limits {
    max_connections_per_ip: Option<usize>,
    header_timeout: Duration,
}

impl Limits {
    fn current(state: &State) -> Limits {
        let server = &state.current().config.server;
        Limits {
            max_connections_per_ip: server.max_connections_per_ip,
            header_timeout: server.header_timeout,
        }
    }
}

/// The client's IP address, from the socket.
fn peer_ip<S: GetSocketDigest + ?Sized>(stream: &S) -> Option<IpAddr> {
    stream
        .get_socket_digest()
        .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()))
}

/// Open connections per client IP.
#[derive(Default)]
struct PerIp {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    /// Connections `ip` holds now.
    fn count(&self, ip: IpAddr) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(&ip).copied().unwrap_or(0)
    }

    /// Takes a slot for `ip` unless `cap` are taken.
    fn acquire(self: &Arc<Self>, ip: IpAddr, cap: Option<usize>) -> Option<IpSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if cap.is_some_and(|cap| *n >= cap) {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            ip,
            table: self.clone(),
        })
    }
}

/// One connection's place in the per-IP count; released on drop.
struct IpSlot {
    ip: IpAddr,
    table: Arc<PerIp>,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// The proxy application with per-connection limits in front.
pub struct Guarded<A> {
    app: Arc<A>,
    state: Arc<State>,
    per_ip: Arc<PerIp>,
}

impl<A> Guarded<A> {
    pub fn new(app: A, state: Arc<State>) -> Self {
        Guarded {
            app: Arc::new(app),
            state,
            per_ip: Arc::default(),
        }
    }

    /// The check to run on TLS connections before their handshake.
    pub fn pre_tls(&self) -> Arc<PreTls> {
        Arc::new(PreTls {
            state: self.state.clone(),
            per_ip: self.per_ip.clone(),
        })
    }
}

/// Runs before a TLS handshake: a client already at its connection cap is
/// refused before any handshake work, and a connection that sends nothing
/// within `header_timeout` is closed. (A client that starts a handshake and
/// stalls is bounded by Pingora's fixed 60 s handshake timeout; connections
/// count against the cap once their handshake is done.)
pub struct PreTls {
    state: Arc<State>,
    per_ip: Arc<PerIp>,
}

#[async_trait]
impl PreTlsProcess for PreTls {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        let limits = Limits::current(&self.state);
        let ip = peer_ip(&*stream);
        if let (Some(ip), Some(cap)) = (ip, limits.max_connections_per_ip) {
            if self.per_ip.count(ip) >= cap {
                return pingora::Error::e_explain(
                    pingora::ErrorType::ConnectionClosed,
                    "max_connections_per_ip reached",
                );
            }
        }
        let mut first = [0u8; 1];
        match tokio::time::timeout(limits.header_timeout, stream.try_peek(&mut first)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(pingora::Error::because(
                pingora::ErrorType::ReadError,
                "before TLS",
                e,
            )),
            Err(_) => pingora::Error::e_explain(
                pingora::ErrorType::ReadTimedout,
                "no TLS ClientHello within header_timeout",
            ),
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let limits = Limits::current(&self.state);
        let ip = peer_ip(&*stream);
        let slot = match ip {
            Some(ip) => match self.per_ip.acquire(ip, limits.max_connections_per_ip) {
                Some(slot) => Some(slot),
                None => {
                    log::debug!("connection from {ip} refused: max_connections_per_ip reached");
                    return None;
                }
            },
            None => None,
        };
        let h1 = !matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        let head = h1.then(|| HeadTimer::new(limits.header_timeout));
        let guarded: Stream = Box::new(GuardedIo {
            inner: stream,
            _slot: slot,
            head,
        });
        self.app.process_new(guarded, shutdown).await
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

/// Where a connection is in its request cycle, for the head deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Receiving a request head: the deadline runs.
    Head,
    /// The head is in; body and response follow.
    AfterHead,
    /// A response was written; the next byte read starts a new head.
    Idle,
}

struct HeadTimer {
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    phase: Phase,
    /// Line ends in a row (an empty line ends the head).
    line_ends: u8,
}

impl HeadTimer {
    fn new(timeout: Duration) -> Self {
        HeadTimer {
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            phase: Phase::Head,
            line_ends: 0,
        }
    }

    /// Looks at bytes just read: a first byte after a response starts a new
    /// head (and its deadline); the empty line ending a head stops the deadline.
    /// Bytes after the end of the head (the body) are not looked at.
    fn on_read(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.phase == Phase::Idle {
            self.phase = Phase::Head;
            self.line_ends = 0;
            self.sleep.as_mut().reset(Instant::now() + self.timeout);
        }
        if self.phase != Phase::Head {
            return;
        }
        for &b in data {
            match b {
                b'\n' => {
                    self.line_ends += 1;
                    if self.line_ends == 2 {
                        self.phase = Phase::AfterHead;
                        return;
                    }
                }
                b'\r' => {}
                _ => self.line_ends = 0,
            }
        }
    }
}

/// A stream that carries its connection slot and enforces the head deadline.
pub struct GuardedIo {
    inner: Stream,
    _slot: Option<IpSlot>,
    head: Option<HeadTimer>,
}

impl fmt::Debug for GuardedIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedIo")
            .field("inner", &self.inner)
            .finish()
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(head) = this.head.as_mut().filter(|h| h.phase == Phase::Head) {
            if head.sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request head not received within header_timeout",
                )));
            }
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(head)) = (&res, this.head.as_mut()) {
            head.on_read(&buf.filled()[before..]);
        }
        res
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(head) = self.head.as_mut() {
            head.phase = Phase::Idle;
        }
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(head) = self.head.as_mut() {
            head.phase = Phase::Idle;
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for GuardedIo {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for GuardedIo {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedIo {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for GuardedIo {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for GuardedIo {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for GuardedIo {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for GuardedIo {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_cap_and_release() {
        let table = Arc::new(PerIp::default());
        let ip: IpAddr = [127, 0, 0, 9].into();
        let a = table.acquire(ip, Some(2));
        let b = table.acquire(ip, Some(2));
        assert!(a.is_some() && b.is_some());
        assert!(table.acquire(ip, Some(2)).is_none());
        assert!(table.acquire([127, 0, 0, 8].into(), Some(2)).is_some());
        drop(a);
        assert!(table.acquire(ip, Some(2)).is_some());
    }

    #[tokio::test]
    async fn head_end_is_found_across_reads() {
        let mut t = HeadTimer::new(Duration::from_secs(1));
        t.on_read(b"GET / HTTP/1.1\r\nHost: x\r\n\r");
        assert_eq!(t.phase, Phase::Head);
        t.on_read(b"\n");
        assert_eq!(t.phase, Phase::AfterHead);
        t.phase = Phase::Idle;
        t.on_read(b"G");
        assert_eq!(t.phase, Phase::Head, "a new request restarts the deadline");
        t.on_read(b"ET / HTTP/1.1\nHost: x\n\nbody");
        assert_eq!(
            t.phase,
            Phase::AfterHead,
            "bare LF line ends end a head too"
        );
    }
}
