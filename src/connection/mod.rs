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
//!
//! Each guarded stream also counts as an open connection
//! ([`lingering::OpenConnection`]); on shutdown, [`Guarded`]'s cleanup keeps
//! idle keep-alive connections open a moment so requests already on their way
//! are answered.

mod head_timer;
mod lingering;
mod per_ip;
mod proxy_protocol;
mod sendfile;

pub(crate) use head_timer::GuardedIo;
pub(crate) use lingering::open_connections;
pub(crate) use sendfile::{send_file, Sent};

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, Peek, Stream, UniqueID, ALPN};
use pingora::server::ShutdownWatch;

use crate::state::{Snapshot, State};
use head_timer::HeadTimer;
use lingering::OpenConnection;
use per_ip::PerIp;

/// The settings a new connection is checked against, read from the current
/// config (copied, so no config is cloned per connection).
#[derive(Clone, Copy)]
struct Limits {
    max_connections_per_ip: Option<usize>,
    header_timeout: Duration,
}

impl Limits {
    fn of(snapshot: &Snapshot) -> Limits {
        let server = &snapshot.config.server;
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

/// The proxy application with per-connection limits in front.
pub(crate) struct Guarded<A> {
    app: Arc<A>,
    state: Arc<State>,
    per_ip: Arc<PerIp>,
}

impl<A> Guarded<A> {
    pub(crate) fn new(app: A, state: Arc<State>) -> Self {
        Guarded {
            app: Arc::new(app),
            state,
            per_ip: Arc::default(),
        }
    }

    /// The check to run on TLS connections before their handshake.
    pub(crate) fn pre_tls(&self) -> Arc<PreTls> {
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
pub(crate) struct PreTls {
    state: Arc<State>,
    per_ip: Arc<PerIp>,
}

/// Whether the listener (`https` if `tls`, else `http`) has `proxy_protocol = true`.
fn expects_proxy_header(snapshot: &Snapshot, tls: bool) -> bool {
    let config = &snapshot.config;
    if tls {
        config.https.as_ref().is_some_and(|h| h.proxy_protocol)
    } else {
        config.http.as_ref().is_some_and(|h| h.proxy_protocol)
    }
}

/// For a listener with `proxy_protocol = true` (the caller checks,
/// [`expects_proxy_header`]): refuses peers that are not trusted proxies,
/// reads their PROXY header and makes its source the connection's client
/// address.
async fn take_proxy_header<S>(snapshot: &Snapshot, stream: &mut S) -> pingora::Result<()>
where
    S: tokio::io::AsyncRead + GetSocketDigest + UniqueID + Unpin + ?Sized,
{
    let config = &snapshot.config;
    let peer = peer_ip(stream);
    let trusted = &config.server.trusted_proxies;
    if !peer.is_some_and(|ip| trusted.iter().any(|net| net.contains(&ip))) {
        return pingora::Error::e_explain(
            pingora::ErrorType::ConnectionClosed,
            "PROXY protocol listener: peer is not in server.trusted_proxies",
        );
    }
    match proxy_protocol::read_header(stream, config.server.header_timeout).await {
        Ok(Some(client)) => proxy_protocol::set_client_addr(stream, client),
        Ok(None) => {}
        Err(e) => {
            return Err(pingora::Error::because(
                pingora::ErrorType::ConnectionClosed,
                "PROXY protocol header refused",
                e,
            ))
        }
    }
    Ok(())
}

#[async_trait]
impl PreTlsProcess for PreTls {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        // One config snapshot for the whole check (held only this long).
        let snapshot = self.state.current();
        if expects_proxy_header(&snapshot, true) {
            take_proxy_header(&snapshot, stream).await?;
        }
        let limits = Limits::of(&snapshot);
        drop(snapshot);
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

impl<A: ServerApp + Send + Sync + 'static> Guarded<A> {
    /// Takes the connection's per-IP slot and wraps the stream that carries
    /// it; `None` when the connection is closed instead (an ACME TLS-ALPN
    /// validation, or a client at its connection cap).
    fn guard(&self, stream: Stream, snapshot: &Snapshot, open: OpenConnection) -> Option<Stream> {
        // A tls-alpn-01 validation (ALPN `acme-tls/1`) only looks at the
        // certificate; there is no HTTP to serve on it.
        let alpn = stream.selected_alpn_proto();
        if let Some(ALPN::Custom(p)) = &alpn {
            log::debug!(
                "TLS connection closed after the handshake: ALPN {:?} carries no HTTP",
                String::from_utf8_lossy(p.protocol())
            );
            return None;
        }
        let limits = Limits::of(snapshot);
        let slot = match peer_ip(&*stream) {
            Some(ip) => match self.per_ip.acquire(ip, limits.max_connections_per_ip) {
                Some(slot) => Some(slot),
                None => {
                    log::debug!("connection from {ip} refused: max_connections_per_ip reached");
                    return None;
                }
            },
            None => None,
        };
        let h1 = !matches!(alpn, Some(ALPN::H2));
        Some(Box::new(GuardedIo {
            inner: stream,
            _slot: slot,
            head: h1.then(|| Box::new(HeadTimer::new(limits.header_timeout))),
            _open: open,
        }))
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    /// Written out rather than `async fn`: the connection is checked here,
    /// before any await, and the application's own future is returned as it
    /// is. No wrapper future (with a box of its own) lives as long as the
    /// connection; the open-connection count and the per-IP slot ride on the
    /// stream instead. Only a PROXY-protocol plain listener has an await
    /// first (the header read).
    fn process_new<'life0, 'life1, 'async_trait>(
        self: &'life0 Arc<Self>,
        stream: Stream,
        shutdown: &'life1 ShutdownWatch,
    ) -> Pin<Box<dyn Future<Output = Option<Stream>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        let open = OpenConnection::new();
        // One config snapshot for the checks, not held for the connection's
        // life (an old config would stay alive after a reload). TLS
        // connections had their PROXY header read before the handshake
        // (PreTls).
        let snapshot = self.state.current();
        if stream.get_ssl_digest().is_none() && expects_proxy_header(&snapshot, false) {
            return Box::pin(async move {
                let guarded = {
                    let mut stream = stream;
                    // Boxed: the read's state is gone once the header is read.
                    let read = Box::pin(take_proxy_header(&snapshot, &mut *stream));
                    if let Err(e) = read.await {
                        log::debug!("connection closed: {e}");
                        return None;
                    }
                    let guarded = self.guard(stream, &snapshot, open)?;
                    drop(snapshot);
                    guarded
                };
                self.app.process_new(guarded, shutdown).await
            });
        }
        match self.guard(stream, &snapshot, open) {
            Some(guarded) => self.app.process_new(guarded, shutdown),
            None => Box::pin(std::future::ready(None)),
        }
    }

    async fn cleanup(&self) {
        lingering::linger().await;
        self.app.cleanup().await;
    }
}
