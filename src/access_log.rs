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

use pingora::proxy::Session;
use serde::Serialize;

use crate::config::runtime::AccessLog;
use crate::metrics;
use crate::proxy::Ctx;

/// Lines queued for the writer before new ones are dropped.
pub const QUEUE_LINES: usize = 16 * 1024;

static SINK: OnceLock<SyncSender<String>> = OnceLock::new();
static REOPEN: AtomicBool = AtomicBool::new(false);
/// Lines queued or written but not yet flushed.
static PENDING: AtomicUsize = AtomicUsize::new(0);

/// One access log line.
#[derive(Serialize)]
pub struct Entry<'a> {
    pub time: String,
    pub client_ip: Option<String>,
    pub method: &'a str,
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub route: Option<&'a str>,
    pub status: u16,
    pub bytes_sent: usize,
    pub duration_ms: f64,
    pub upstream: Option<&'a str>,
    pub server: Option<&'a str>,
    pub upstream_duration_ms: Option<f64>,
    pub request_id: &'a str,
    pub protocol: &'static str,
    pub tls_version: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub referer: Option<&'a str>,
    pub error: Option<String>,
}

/// Starts the writer thread for `target`. Call once; later calls are ignored.
pub fn init(target: &AccessLog) -> std::io::Result<()> {
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
pub fn flush(limit: Duration) {
    let start = std::time::Instant::now();
    while PENDING.load(Ordering::Relaxed) > 0 && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Asks the writer to reopen its file (after log rotation).
pub fn reopen() {
    REOPEN.store(true, Ordering::Relaxed);
}

fn writer(
    rx: Receiver<String>,
    mut open: Box<dyn FnMut() -> std::io::Result<Box<dyn Write + Send>> + Send>,
) {
    let mut out = match open() {
        Ok(o) => std::io::BufWriter::with_capacity(64 * 1024, o),
        Err(e) => {
            log::error!("access log: cannot open: {e}");
            return;
        }
    };
    let write = |out: &mut std::io::BufWriter<Box<dyn Write + Send>>, line: String| {
        if out.write_all(line.as_bytes()).is_err() {
            if let Some(m) = metrics::get() {
                m.access_log_dropped.inc();
            }
        }
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
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
                Ok(o) => out = std::io::BufWriter::with_capacity(64 * 1024, o),
                Err(e) => log::error!("access log: reopen failed, keeping the old file: {e}"),
            }
        }
    }
}

/// Formats and queues the line for a finished request.
pub fn record(session: &Session, e: Option<&pingora::Error>, ctx: &Ctx, elapsed: Duration) {
    let Some(sink) = SINK.get() else { return };
    let req = session.req_header();
    let header_str =
        |name: http::header::HeaderName| req.headers.get(name).and_then(|v| v.to_str().ok());
    let tls_version = session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .map(|s| s.version.as_ref());
    let flight = ctx.in_flight.as_ref().map(|f| f.backend());
    let entry = Entry {
        time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        client_ip: ctx.client_ip.map(|ip| ip.to_string()),
        method: req.method.as_str(),
        host: header_str(http::header::HOST).or_else(|| req.uri.authority().map(|a| a.as_str())),
        path: req.uri.path(),
        route: ctx.route().map(|r| r.prefix.as_str()),
        status: ctx.status,
        bytes_sent: session.body_bytes_sent(),
        duration_ms: elapsed.as_secs_f64() * 1000.0,
        upstream: ctx
            .pool
            .as_ref()
            .filter(|_| flight.is_some())
            .map(|p| p.name()),
        server: flight.map(|b| b.label.as_str()),
        upstream_duration_ms: ctx
            .upstream_start
            .map(|t| t.elapsed().as_secs_f64() * 1000.0),
        request_id: &ctx.request_id,
        protocol: if session.is_http2() { "h2" } else { "h1" },
        tls_version,
        user_agent: header_str(http::header::USER_AGENT),
        referer: header_str(http::header::REFERER),
        error: e.map(|e| e.etype().as_str().to_string()),
    };
    let Ok(mut line) = serde_json::to_string(&entry) else {
        return;
    };
    line.push('\n');
    PENDING.fetch_add(1, Ordering::Relaxed);
    if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = sink.try_send(line) {
        PENDING.fetch_sub(1, Ordering::Relaxed);
        if let Some(m) = metrics::get() {
            m.access_log_dropped.inc();
        }
    }
}
