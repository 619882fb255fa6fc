//! The operational log: `env_logger` behind two guards.
//!
//! 1. **Client behaviour is not an error of the proxy.** Pingora and rustls log
//!    a client that hangs up, resets, never finishes its TLS handshake or sends
//!    an IP address as SNI at ERROR or WARN. Those lines are recognised here,
//!    counted in `gatehouse_client_disconnects_total{phase}` and logged at
//!    DEBUG, so ERROR stays for what an operator must act on.
//! 2. **No call site floods the log.** WARN and ERROR lines are limited per
//!    call site to [`BURST`] lines, refilled at [`PER_SECOND`]; what is held
//!    back is counted and reported with the next line let through (a loop that
//!    fails on every turn can otherwise write gigabytes a minute).
//!
//! Pingora's messages are matched by their text (`Downstream ...`): Pingora is
//! pinned (vendored), and `tests/logs.rs` fails when a message changes.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// An error and its causes, `outer: inner: innermost`: each error's own
/// message says only its part, and its cause is kept as its `source`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

/// Lines a call site may log at WARN or ERROR in a burst.
pub const BURST: f64 = 20.0;
/// Lines per second a call site gets back after a burst.
pub const PER_SECOND: f64 = 5.0;

/// Where a client connection was when it ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientPhase {
    /// Before or during the TLS handshake.
    TlsHandshake,
    /// The request head did not arrive within `header_timeout`.
    HeaderTimeout,
    /// While Gatehouse read the request (head or body), or an idle keep-alive
    /// or HTTP/2 connection.
    Request,
    /// While Gatehouse wrote the response.
    Response,
}

impl ClientPhase {
    pub const ALL: [ClientPhase; 4] = [
        ClientPhase::TlsHandshake,
        ClientPhase::HeaderTimeout,
        ClientPhase::Request,
        ClientPhase::Response,
    ];

    /// The `phase` label.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientPhase::TlsHandshake => "tls_handshake",
            ClientPhase::HeaderTimeout => "header_timeout",
            ClientPhase::Request => "request",
            ClientPhase::Response => "response",
        }
    }
}

/// What a WARN or ERROR line from a dependency is really about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Something the operator should see.
    Operational,
    /// A client ending its connection or sending something refused.
    Client(ClientPhase),
    /// Expected noise that needs no count (an IP address sent as SNI, a pooled
    /// upstream connection that could not be reused).
    Noise,
}

/// Classifies a WARN or ERROR line by its target and text.
pub fn classify(target: &str, message: &str) -> Kind {
    if target.starts_with("rustls") {
        return if message.contains("SNI") {
            Kind::Noise
        } else {
            Kind::Operational
        };
    }
    if !target.starts_with("pingora") {
        return Kind::Operational;
    }
    if message.contains("failed to acquire reusable stream") {
        return Kind::Noise;
    }
    if message.contains("Downstream handshake") {
        return Kind::Client(ClientPhase::TlsHandshake);
    }
    let downstream = message.contains("Downstream")
        || message.contains("cannot reserve capacity")
        || message.contains("failed to send error response to downstream");
    if !downstream {
        return Kind::Operational;
    }
    let phase = if message.contains("header_timeout") {
        ClientPhase::HeaderTimeout
    } else if message.contains("WriteError") || message.contains("WriteTimedout") {
        ClientPhase::Response
    } else {
        ClientPhase::Request
    };
    Kind::Client(phase)
}

/// Per call site: tokens left and when they were last refilled, and how many
/// lines were held back since the last one let through.
struct Site {
    tokens: f64,
    refilled: Instant,
    held: u64,
}

/// The logger: classification and rate limiting in front of `env_logger`.
pub struct GuardedLogger {
    inner: env_logger::Logger,
    sites: Mutex<HashMap<(String, u32), Site>>,
}

/// Installs the logger (`RUST_LOG`, default `info`). Later calls do nothing.
pub fn init() {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    // WARN and ERROR lines are looked at even when their target is filtered,
    // so client events are counted at any log level.
    let max = inner.filter().max(LevelFilter::Warn);
    let logger = GuardedLogger {
        inner,
        sites: Mutex::new(HashMap::new()),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(max);
    }
}

impl GuardedLogger {
    /// Whether a line from this call site may go out now, and how many were
    /// held back before it.
    fn admit(&self, record: &Record<'_>) -> Option<u64> {
        let site = (
            record.module_path().unwrap_or(record.target()).to_string(),
            record.line().unwrap_or(0),
        );
        let mut sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let s = sites.entry(site).or_insert(Site {
            tokens: BURST,
            refilled: now,
            held: 0,
        });
        let refill = now.duration_since(s.refilled).as_secs_f64() * PER_SECOND;
        s.tokens = (s.tokens + refill).min(BURST);
        s.refilled = now;
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            Some(std::mem::take(&mut s.held))
        } else {
            s.held += 1;
            None
        }
    }

    fn emit(&self, level: Level, record: &Record<'_>, args: std::fmt::Arguments<'_>) {
        let metadata = Metadata::builder()
            .level(level)
            .target(record.target())
            .build();
        if !self.inner.enabled(&metadata) {
            return;
        }
        self.inner.log(
            &Record::builder()
                .metadata(metadata)
                .args(args)
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }
}

impl Log for GuardedLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= Level::Warn || self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if record.level() > Level::Warn {
            if self.inner.matches(record) {
                self.inner.log(record);
            }
            return;
        }
        let mut text = String::new();
        let _ = write!(text, "{}", record.args());
        match classify(record.target(), &text) {
            Kind::Client(phase) => {
                if let Some(m) = crate::metrics::get() {
                    m.client_disconnects
                        .with_label_values(&[phase.as_str()])
                        .inc();
                }
                self.emit(Level::Debug, record, format_args!("{text}"));
            }
            Kind::Noise => self.emit(Level::Debug, record, format_args!("{text}")),
            Kind::Operational => match self.admit(record) {
                Some(0) => self.emit(record.level(), record, format_args!("{text}")),
                Some(held) => self.emit(
                    record.level(),
                    record,
                    format_args!("{text} ({held} more like this held back)"),
                ),
                None => {}
            },
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_prints_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read x.pem")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("no such file"));
        assert_eq!(chain(&e), "cannot read x.pem: no such file");
    }

    #[test]
    fn client_events_from_pingora_are_not_operational() {
        let cases = [
            (
                "pingora_core::services::listening",
                "Downstream handshake error from 127.0.0.1:5000: early eof",
                Kind::Client(ClientPhase::TlsHandshake),
            ),
            (
                "pingora_proxy",
                "Fail to proxy: Downstream ReadError context: request head not received within header_timeout",
                Kind::Client(ClientPhase::HeaderTimeout),
            ),
            (
                "pingora_proxy",
                "Fail to proxy: Downstream WriteError cause: Broken pipe (os error 32), status: 502",
                Kind::Client(ClientPhase::Response),
            ),
            (
                "pingora_proxy",
                "Fail to proxy: Downstream H2Error context: while idling",
                Kind::Client(ClientPhase::Request),
            ),
            (
                "rustls::msgs::handshake",
                "Illegal SNI extension: ignoring IP address presented as hostname",
                Kind::Noise,
            ),
            (
                "pingora_core::connectors",
                "failed to acquire reusable stream",
                Kind::Noise,
            ),
            (
                "pingora_core::services::listening",
                "Accept() failed A Tokio 1.x context was found, but it is being shutdown.",
                Kind::Operational,
            ),
            (
                "pingora_proxy",
                "Fail to proxy: Upstream ConnectRefused",
                Kind::Operational,
            ),
            ("gatehouse::state", "Downstream", Kind::Operational),
        ];
        for (target, message, kind) in cases {
            assert_eq!(classify(target, message), kind, "{target}: {message}");
        }
    }

    #[test]
    fn a_call_site_in_a_tight_loop_is_held_back_and_counted() {
        let logger = GuardedLogger {
            inner: env_logger::Builder::new()
                .filter_level(LevelFilter::Off)
                .build(),
            sites: Mutex::new(HashMap::new()),
        };
        let record = Record::builder()
            .level(Level::Error)
            .target("pingora_core::services::listening")
            .module_path(Some("pingora_core::services::listening"))
            .line(Some(255))
            .args(format_args!("Accept() failed"))
            .build();
        let admitted = (0..100_000)
            .filter(|_| logger.admit(&record).is_some())
            .count();
        // The burst plus what refills while the loop runs (well under a second).
        assert!(
            (BURST as usize..BURST as usize + 10).contains(&admitted),
            "{admitted} lines let through"
        );
        let other = Record::builder()
            .level(Level::Error)
            .target("gatehouse")
            .module_path(Some("gatehouse::state"))
            .line(Some(1))
            .args(format_args!("x"))
            .build();
        assert_eq!(logger.admit(&other), Some(0), "other sites are not held");
    }
}
