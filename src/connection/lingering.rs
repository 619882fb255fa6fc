//! Open client connections, counted, and the gentle drain that waits for them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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

/// Counts one open client connection until dropped. Carried by the
/// connection's stream ([`super::GuardedIo`]): it counts the connection from
/// the moment it reaches the application (after its TLS handshake, if any)
/// until its socket is closed.
pub(crate) struct OpenConnection(());

impl OpenConnection {
    pub(crate) fn new() -> Self {
        OPEN_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        OpenConnection(())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        OPEN_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits, at most [`IDLE_LINGER`], for the open client connections to end.
///
/// Pingora closes idle HTTP/1.1 keep-alive connections the moment the
/// listeners close (the app's `cleanup`). A client may have sent its next
/// request on such a connection at that very moment; it would see the
/// connection reset and fail the request. Delaying `cleanup` by
/// [`IDLE_LINGER`] lets those requests in: Pingora answers every request read
/// after shutdown began with `Connection: close`, so each busy connection ends
/// cleanly after one more answer.
pub(crate) async fn linger() {
    let start = Instant::now();
    while OPEN_CONNECTIONS.load(Ordering::Relaxed) > 0 && start.elapsed() < IDLE_LINGER {
        tokio::time::sleep(DRAIN_POLL).await;
    }
}
