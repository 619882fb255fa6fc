//! Draining: the process-wide "draining" flag (`/readyz` 503, `Connection:
//! close`), the count of requests in flight, and the exits: once drained, at
//! the end of the grace period, or at once (SIGINT).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::pid_file;

/// How long no request must be in flight before a draining process exits.
pub(crate) const DRAIN_QUIET: Duration = Duration::from_millis(300);
/// How long a fast exit waits for the access log to be written.
const FAST_EXIT_FLUSH: Duration = Duration::from_millis(200);
/// How often the drain watcher looks.
pub(crate) const DRAIN_POLL: Duration = Duration::from_millis(20);

/// Set on SIGTERM and when a graceful shutdown starts.
static DRAINING: AtomicBool = AtomicBool::new(false);
/// Requests between the proxy's `new_ctx` and the end of its `logging`.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// From now on `/readyz` answers 503 and each HTTP/1.1 answer closes its
/// connection.
pub(crate) fn set_draining() {
    DRAINING.store(true, Ordering::Relaxed);
}

pub(crate) fn is_draining() -> bool {
    DRAINING.load(Ordering::Relaxed)
}

/// Requests being handled right now, process-wide.
pub(crate) fn requests_in_flight() -> usize {
    IN_FLIGHT.load(Ordering::Relaxed)
}

/// One request in flight, counted until dropped.
#[derive(Debug)]
pub(crate) struct RequestInFlight(());

impl RequestInFlight {
    pub(crate) fn new() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        RequestInFlight(())
    }
}

impl Default for RequestInFlight {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Ends the process at once (SIGINT, or a grace period that ran out): the
/// access log is flushed (briefly) and the pid file removed, then the process
/// exits without waiting for requests in flight.
///
/// Pingora's own fast shutdown drops its runtimes one by one; an accept loop
/// whose listener belonged to a runtime already gone then fails on every turn
/// without yielding, so its runtime never stops, the socket stays open and
/// the loop logs millions of lines (issue 10). Exiting the process here is
/// what Nginx does on SIGINT, and it cannot hang.
pub(crate) fn exit_now(why: &str, pid_file: &Path) -> ! {
    log::info!("{why}: exiting now");
    crate::access_log::flush(FAST_EXIT_FLUSH);
    pid_file::remove_if_ours(pid_file);
    std::process::exit(0)
}

/// Exits the process once nothing has been in flight for [`DRAIN_QUIET`],
/// or returns when `grace` is over (Pingora then ends the process).
pub(crate) fn exit_when_drained(grace: Duration, pid_file: &Path) {
    let start = Instant::now();
    let mut idle_since: Option<Instant> = None;
    while start.elapsed() < grace {
        if requests_in_flight() == 0 {
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= DRAIN_QUIET {
                log::info!(
                    "drained in {:?}: no request in flight ({} idle connections closed); exiting",
                    start.elapsed(),
                    crate::connection::open_connections()
                );
                crate::access_log::flush(Duration::from_secs(1));
                pid_file::remove_if_ours(pid_file);
                std::process::exit(0);
            }
        } else {
            idle_since = None;
        }
        std::thread::sleep(DRAIN_POLL);
    }
    log::warn!(
        "grace period over with {} requests in flight",
        requests_in_flight()
    );
    exit_now("grace period over", pid_file);
}
