//! [`Lingering`]: the proxy application, drained gently, counting open
//! client connections.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use crate::lifecycle::drain::DRAIN_POLL;

/// After the listeners close, how long an idle HTTP/1.1 keep-alive connection
/// stays open so that a request already on its way is answered (with
/// `Connection: close`) rather than cut off.
pub(crate) const IDLE_LINGER: Duration = Duration::from_secs(1);

/// Client connections open on the proxy listeners, process-wide.
static OPEN_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

/// Client connections open now.
pub(crate) fn open_connections() -> usize {
    OPEN_CONNECTIONS.load(Ordering::Relaxed)
}

/// The proxy application, drained gently.
///
/// Pingora closes idle HTTP/1.1 keep-alive connections the moment the
/// listeners close (the app's `cleanup`). A client may have sent its next
/// request on such a connection at that very moment; it would see the
/// connection reset and fail the request. Delaying `cleanup` by
/// [`IDLE_LINGER`] lets those requests in: Pingora answers every request read
/// after shutdown began with `Connection: close`, so each busy connection ends
/// cleanly after one more answer. It also counts open connections.
pub(crate) struct Lingering<A> {
    app: Arc<A>,
}

impl<A> Lingering<A> {
    pub(crate) fn new(app: A) -> Self {
        Lingering { app: Arc::new(app) }
    }
}

/// Counts one open client connection until dropped.
struct OpenConnection;

impl OpenConnection {
    fn new() -> Self {
        OPEN_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        OPEN_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Lingering<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _open = OpenConnection::new();
        self.app.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        let start = Instant::now();
        while OPEN_CONNECTIONS.load(Ordering::Relaxed) > 0 && start.elapsed() < IDLE_LINGER {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        self.app.cleanup().await;
    }
}
