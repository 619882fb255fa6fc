//! The JSON access log: one object per line, to stdout, a file, or nowhere.
//!
//! Worker threads only format the line and hand it to a bounded queue; a
//! dedicated thread writes it. When the sink cannot keep up (slow pipe, full
//! disk) lines are dropped and counted in `gatehouse_access_log_dropped_total`
//! rather than stalling traffic. A file sink is reopened on SIGUSR1, so log
//! rotation (rename, then signal) works as it does with Nginx.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::AccessLog;
use crate::metrics;

/// Lines queued for the writer before new ones are dropped.
pub(crate) const QUEUE_LINES: usize = 16 * 1024;
/// Bytes the writer gathers before a write to the sink.
const WRITE_BUFFER: usize = 64 * 1024;
/// Longest wait (when idle) between SIGUSR1 and reopening the file.
const REOPEN_POLL: Duration = Duration::from_millis(200);

static SINK: OnceLock<SyncSender<String>> = OnceLock::new();
static REOPEN: AtomicBool = AtomicBool::new(false);
/// Lines queued or written but not yet flushed.
static PENDING: AtomicUsize = AtomicUsize::new(0);

/// One access log line. Every field is always present (`null` when unknown).
#[derive(Serialize)]
pub(crate) struct Entry<'a> {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub client_ip: Option<String>,
    /// `null` when the request head could not be parsed.
    pub method: Option<&'a str>,
    pub host: Option<&'a str>,
    /// The path without the query string; `null` when the head could not be parsed.
    pub path: Option<&'a str>,
    /// The matched route's prefix; `null` when no route matched.
    pub route: Option<&'a str>,
    pub status: u16,
    pub bytes_sent: usize,
    pub duration_ms: f64,
    /// The upstream pool of the route, also when no server could be picked (503).
    pub upstream: Option<&'a str>,
    /// The server that took the last attempt.
    pub server: Option<&'a str>,
    pub upstream_duration_ms: Option<f64>,
    pub request_id: &'a str,
    /// `h1` or `h2`.
    pub protocol: &'static str,
    /// `TLSv1.2` or `TLSv1.3`; `null` on the plain listener.
    pub tls_version: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub referer: Option<&'a str>,
    /// Why the request failed, when it did.
    pub error: Option<String>,
}

/// Starts the writer thread for `target`. Call once; later calls are ignored.
pub(crate) fn init(target: &AccessLog) -> std::io::Result<()> {
    let open: Box<dyn FnMut() -> std::io::Result<Box<dyn Write + Send>> + Send> = match target {
        AccessLog::Off => return Ok(()),
        AccessLog::Stdout => Box::new(|| Ok(Box::new(std::io::stdout()) as Box<dyn Write + Send>)),
        AccessLog::File(path) => {
            let path = path.clone();
            // Fail now, at start-up, if the file cannot be opened.
            open_file(&path)?;
            Box::new(move || open_file(&path).map(|f| Box::new(f) as Box<dyn Write + Send>))
        }
    };
    let (tx, rx) = sync_channel(QUEUE_LINES);
    if SINK.set(tx).is_err() {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || writer(rx, open))?;
    Ok(())
}

fn open_file(path: &PathBuf) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Waits (up to `limit`) until every queued line is written and flushed.
pub(crate) fn flush(limit: Duration) {
    let start = std::time::Instant::now();
    while PENDING.load(Ordering::Relaxed) > 0 && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Asks the writer to reopen its file (after log rotation).
pub(crate) fn reopen() {
    REOPEN.store(true, Ordering::Relaxed);
}

fn writer(
    rx: Receiver<String>,
    mut open: Box<dyn FnMut() -> std::io::Result<Box<dyn Write + Send>> + Send>,
) {
    let mut out = match open() {
        Ok(o) => std::io::BufWriter::with_capacity(WRITE_BUFFER, o),
        Err(e) => {
            log::error!("access log: cannot open: {e}");
            return;
        }
    };
    // Set while writes fail, so a full disk is reported once, not per line.
    let mut failing = false;
    let mut write = |out: &mut std::io::BufWriter<Box<dyn Write + Send>>, line: String| match out
        .write_all(line.as_bytes())
    {
        Ok(()) if failing => {
            failing = false;
            log::info!("access log: writing again");
        }
        Ok(()) => {}
        Err(e) => {
            if !failing {
                failing = true;
                log::warn!("access log: write failed, dropping lines until it works: {e}");
            }
            if let Some(m) = metrics::get() {
                m.access_log_dropped.inc();
            }
        }
    };
    loop {
        match rx.recv_timeout(REOPEN_POLL) {
            Ok(line) => {
                let mut written = 1;
                write(&mut out, line);
                // Write out as soon as the queue is empty, so lines are never held long.
                while let Ok(more) = rx.try_recv() {
                    written += 1;
                    write(&mut out, more);
                }
                let _ = out.flush();
                PENDING.fetch_sub(written, Ordering::Relaxed);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let _ = out.flush();
                return;
            }
        }
        if REOPEN.swap(false, Ordering::Relaxed) {
            let _ = out.flush();
            match open() {
                Ok(o) => {
                    out = std::io::BufWriter::with_capacity(WRITE_BUFFER, o);
                    log::info!("access log: reopened");
                }
                Err(e) => log::error!("access log: reopen failed, keeping the old file: {e}"),
            }
        }
    }
}

/// Whether lines are written at all (`access_log` is not `off`).
pub(crate) fn enabled() -> bool {
    SINK.get().is_some()
}

/// Formats and queues one line.
pub(crate) fn write(entry: &Entry<'_>) {
    if let Some(sink) = SINK.get() {
        queue(sink, entry);
    }
}

/// Formats and queues the line for a request whose head could not be parsed
/// (answered 400 before any route or config snapshot was involved).
pub(crate) fn record_unparsed(
    client_ip: Option<std::net::IpAddr>,
    tls_version: Option<&str>,
    request_id: &str,
    bytes_sent: usize,
    elapsed: Duration,
) {
    let Some(sink) = SINK.get() else { return };
    let entry = Entry {
        time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        client_ip: client_ip.map(|ip| ip.to_string()),
        method: None,
        host: None,
        path: None,
        route: None,
        status: 400,
        bytes_sent,
        duration_ms: elapsed.as_secs_f64() * 1000.0,
        upstream: None,
        server: None,
        upstream_duration_ms: None,
        request_id,
        protocol: "h1",
        tls_version: tls_version.map(tls_version_name),
        user_agent: None,
        referer: None,
        error: Some("invalid request head".to_string()),
    };
    queue(sink, &entry);
}

fn queue(sink: &SyncSender<String>, entry: &Entry<'_>) {
    let Ok(mut line) = serde_json::to_string(entry) else {
        return;
    };
    line.push('\n');
    enqueue(sink, line);
}

/// Hands `line` to the writer without waiting; a full queue drops it and
/// counts the drop. Returns whether the line was queued.
fn enqueue(sink: &SyncSender<String>, line: String) -> bool {
    PENDING.fetch_add(1, Ordering::Relaxed);
    match sink.try_send(line) {
        Ok(()) => true,
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            PENDING.fetch_sub(1, Ordering::Relaxed);
            if let Some(m) = metrics::get() {
                m.access_log_dropped.inc();
            }
            false
        }
    }
}

/// The usual spelling of a TLS version (rustls names them `TLSv1_3`).
pub(crate) fn tls_version_name(version: &str) -> &str {
    match version {
        "TLSv1_3" => "TLSv1.3",
        "TLSv1_2" => "TLSv1.2",
        other => other,
    }
}

/// A short reason: the explanation Gatehouse gave for its own status errors
/// (`no healthy upstream server left to try`), else the error type
/// (`ConnectRefused`, `ReadTimeout`, ...).
pub(crate) fn error_text(e: &pingora::Error) -> String {
    match (&e.etype, &e.context) {
        (pingora::ErrorType::HTTPStatus(_), Some(context)) => context.as_str().to_string(),
        (etype, _) => etype.as_str().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let dropped = || metrics::get().map_or(0, |m| m.access_log_dropped.get());
        let before = dropped();
        // Nobody reads: the writer is stalled.
        let (tx, _rx) = sync_channel(2);
        let started = std::time::Instant::now();
        let queued: Vec<bool> = (0..5).map(|i| enqueue(&tx, format!("{i}\n"))).collect();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(queued, [true, true, false, false, false]);
        assert_eq!(dropped() - before, 3);
    }

    #[test]
    fn tls_versions_are_spelled_as_usual() {
        assert_eq!(tls_version_name("TLSv1_3"), "TLSv1.3");
        assert_eq!(tls_version_name("TLSv1_2"), "TLSv1.2");
        assert_eq!(tls_version_name("TLSv1.3"), "TLSv1.3");
    }
}
