//! Prometheus metrics with the names of SPEC.md, in one registry of our own.
//!
//! Label values are bounded: `route` is the configured prefix, `method` one of
//! the standard methods or `OTHER`, `status` the numeric code, `server` the
//! configured address. Metrics are process-wide, so they survive reloads.

use std::sync::{LazyLock, Mutex, OnceLock};

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Histogram buckets for an edge proxy, in seconds: 0.5 ms to 30 s.
pub(crate) const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// All of Gatehouse's metrics.
pub(crate) struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_requests: IntCounterVec,
    pub upstream_duration: HistogramVec,
    pub upstream_healthy: IntGaugeVec,
    pub upstream_ejections: IntCounterVec,
    pub upstream_ejected: IntGaugeVec,
    pub rate_limited: IntCounterVec,
    pub store_up: IntGaugeVec,
    pub store_errors: IntCounterVec,
    pub store_fallbacks: IntCounterVec,
    pub access_denied: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub last_reload_success: Gauge,
    pub access_log_dropped: IntCounter,
    pub client_disconnects: IntCounterVec,
    pub request_body_spills: IntCounter,
    pub request_body_spilled_bytes: IntCounter,
    pub client_timeouts: IntCounterVec,
    pub compressed: IntCounterVec,
    pub acme_expiry: GaugeVec,
    pub acme_renewals: IntCounterVec,
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new();
    let counter =
        |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
    let histogram =
        |name: &str, help: &str, labels: &[&str]| -> Result<HistogramVec, prometheus::Error> {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            )?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
    let requests = counter(
        "gatehouse_requests_total",
        "Requests answered, by route prefix, method and status.",
        &["route", "method", "status"],
    )?;
    let request_duration = histogram(
        "gatehouse_request_duration_seconds",
        "Time from request start to the end of the response, by route prefix.",
        &["route"],
    )?;
    let upstream_requests = counter(
        "gatehouse_upstream_requests_total",
        "Responses received from upstream servers, by pool, server and status.",
        &["upstream", "server", "status"],
    )?;
    let upstream_duration = histogram(
        "gatehouse_upstream_duration_seconds",
        "Time from picking an upstream server to the end of its response, by pool.",
        &["upstream"],
    )?;
    let upstream_healthy = IntGaugeVec::new(
        Opts::new(
            "gatehouse_upstream_server_healthy",
            "1 while the server is in rotation, 0 while health checks keep it out.",
        ),
        &["upstream", "server"],
    )?;
    registry.register(Box::new(upstream_healthy.clone()))?;
    let upstream_ejections = counter(
        "gatehouse_upstream_ejections_total",
        "Servers ejected by passive health (failed real requests), by pool and server.",
        &["upstream", "server"],
    )?;
    let upstream_ejected = IntGaugeVec::new(
        Opts::new(
            "gatehouse_upstream_server_ejected",
            "1 while passive health keeps the server out of rotation.",
        ),
        &["upstream", "server"],
    )?;
    registry.register(Box::new(upstream_ejected.clone()))?;
    let rate_limited = counter(
        "gatehouse_rate_limited_total",
        "Requests refused with 429, by limit name.",
        &["limit"],
    )?;
    let store_up = IntGaugeVec::new(
        Opts::new(
            "gatehouse_rate_limit_store_up",
            "1 while the rate limit store answers, 0 while its limits fall back.",
        ),
        &["store"],
    )?;
    registry.register(Box::new(store_up.clone()))?;
    let store_errors = counter(
        "gatehouse_rate_limit_store_errors_total",
        "Calls to a rate limit store that failed or timed out, by store.",
        &["store"],
    )?;
    let store_fallbacks = counter(
        "gatehouse_rate_limit_store_fallbacks_total",
        "Checks of a shared limit answered by on_store_error instead of the store, by limit.",
        &["limit"],
    )?;
    let access_denied = counter(
        "gatehouse_access_denied_total",
        "Requests refused with 403 by an access list, by list name.",
        &["list"],
    )?;
    let config_reloads = counter(
        "gatehouse_config_reloads_total",
        "Config reloads, by result (ok or error).",
        &["result"],
    )?;
    // Both series exist from the start, so `increase(...{result="error"}[5m])`
    // sees the first failed reload.
    for result in ["ok", "error"] {
        config_reloads.with_label_values(&[result]);
    }
    let last_reload_success = Gauge::new(
        "gatehouse_config_last_reload_success_timestamp_seconds",
        "Unix time of the last config load or reload that succeeded.",
    )?;
    registry.register(Box::new(last_reload_success.clone()))?;
    let access_log_dropped = IntCounter::new(
        "gatehouse_access_log_dropped_total",
        "Access log lines dropped because the sink could not keep up.",
    )?;
    registry.register(Box::new(access_log_dropped.clone()))?;
    let client_disconnects = counter(
        "gatehouse_client_disconnects_total",
        "Client connections that ended early or broke (not errors of the proxy), by phase.",
        &["phase"],
    )?;
    for phase in crate::logging::ClientPhase::ALL {
        client_disconnects.with_label_values(&[phase.as_str()]);
    }
    let request_body_spills = IntCounter::new(
        "gatehouse_request_body_spills_total",
        "Buffered request bodies that spilled past memory to a temp file.",
    )?;
    registry.register(Box::new(request_body_spills.clone()))?;
    let request_body_spilled_bytes = IntCounter::new(
        "gatehouse_request_body_spilled_bytes_total",
        "Bytes of buffered request bodies that spilled to temp files.",
    )?;
    registry.register(Box::new(request_body_spilled_bytes.clone()))?;
    let client_timeouts = counter(
        "gatehouse_client_timeouts_total",
        "Requests ended because the client was too slow, by deadline.",
        &["deadline"],
    )?;
    for deadline in ["client_body_timeout", "send_timeout"] {
        client_timeouts.with_label_values(&[deadline]);
    }
    let compressed = counter(
        "gatehouse_compressed_responses_total",
        "Answers Gatehouse compressed, by encoding and source (cached: a static file's variant made once; on_the_fly: compressed for this request).",
        &["encoding", "source"],
    )?;
    let acme_expiry = GaugeVec::new(
        Opts::new(
            "gatehouse_acme_certificate_expiry_seconds",
            "Unix time the served ACME certificate expires, by domain.",
        ),
        &["domain"],
    )?;
    registry.register(Box::new(acme_expiry.clone()))?;
    let acme_renewals = counter(
        "gatehouse_acme_renewals_total",
        "ACME issuance attempts (first and renewals), by result (success or failure).",
        &["result"],
    )?;
    Ok(Metrics {
        compressed,
        registry,
        requests,
        request_duration,
        upstream_requests,
        upstream_duration,
        upstream_healthy,
        upstream_ejections,
        upstream_ejected,
        rate_limited,
        store_up,
        store_errors,
        store_fallbacks,
        access_denied,
        config_reloads,
        last_reload_success,
        access_log_dropped,
        client_disconnects,
        request_body_spills,
        request_body_spilled_bytes,
        client_timeouts,
        acme_expiry,
        acme_renewals,
    })
}

static METRICS: LazyLock<Option<Metrics>> = LazyLock::new(|| match build() {
    Ok(m) => Some(m),
    Err(e) => {
        log::error!("metrics disabled: {e}");
        None
    }
});

/// The metrics, when the registry could be built (it always can with these names).
pub(crate) fn get() -> Option<&'static Metrics> {
    METRICS.as_ref()
}

/// A bounded `method` label.
pub(crate) fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// Sets the health gauge of one server.
pub(crate) fn set_backend_health(upstream: &str, server: &str, healthy: bool) {
    if let Some(m) = get() {
        m.upstream_healthy
            .with_label_values(&[upstream, server])
            .set(i64::from(healthy));
    }
}

/// Counts an ejection by passive health and sets the ejected gauge.
pub(crate) fn record_ejection(upstream: &str, server: &str) {
    if let Some(m) = get() {
        m.upstream_ejections
            .with_label_values(&[upstream, server])
            .inc();
        m.upstream_ejected
            .with_label_values(&[upstream, server])
            .set(1);
    }
}

/// Sets the ejected gauge of one server.
pub(crate) fn set_backend_ejected(upstream: &str, server: &str, ejected: bool) {
    if let Some(m) = get() {
        m.upstream_ejected
            .with_label_values(&[upstream, server])
            .set(i64::from(ejected));
    }
}

/// Drops the health and ejection gauges of a server a reload removed.
pub(crate) fn remove_backend(upstream: &str, server: &str) {
    if let Some(m) = get() {
        let _ = m.upstream_healthy.remove_label_values(&[upstream, server]);
        let _ = m.upstream_ejected.remove_label_values(&[upstream, server]);
    }
}

/// Counts a reload (SIGHUP, `gatehouse reload`, `watch_config`).
pub(crate) fn record_reload(ok: bool) {
    if let Some(m) = get() {
        // The time first: a scrape that sees the new count sees its time too.
        if ok {
            m.last_reload_success.set(unix_now());
        }
        m.config_reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }
}

/// Sets the expiry gauge of every domain of the served ACME certificate.
pub(crate) fn set_acme_expiry(domains: &[String], not_after: std::time::SystemTime) {
    if let Some(m) = get() {
        let secs = not_after
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        for domain in domains {
            m.acme_expiry
                .with_label_values(&[domain.as_str()])
                .set(secs);
        }
    }
}

/// Counts an ACME attempt; both series exist once `[acme]` is configured.
pub(crate) fn record_acme_renewal(ok: bool) {
    if let Some(m) = get() {
        m.acme_renewals
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
    }
}

/// Creates both series of `gatehouse_acme_renewals_total` at 0.
pub(crate) fn init_acme_renewals() {
    if let Some(m) = get() {
        for result in ["success", "failure"] {
            m.acme_renewals.with_label_values(&[result]);
        }
    }
}

/// Marks the config loaded at start-up: sets the last-success time without
/// counting a reload.
pub(crate) fn record_startup_load() {
    if let Some(m) = get() {
        m.last_reload_success.set(unix_now());
    }
}

/// Counts one answered request: `gatehouse_requests_total` and the duration.
pub(crate) fn record_request(route: &str, method: &str, status: u16, elapsed: std::time::Duration) {
    if let Some(m) = get() {
        m.requests
            .with_label_values(&[route, method, status_label(status)])
            .inc();
        m.request_duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }
}

/// The series of one route, resolved on first use and kept with the route:
/// `with_label_values` hashes every label and takes the vector's lock on each
/// call, four times per proxied request.
#[derive(Debug, Default)]
pub(crate) struct RouteSeries {
    requests: Memo<(&'static str, u16)>,
    duration: OnceLock<Histogram>,
}

impl RouteSeries {
    /// [`record_request`] for the route with prefix `route`.
    pub(crate) fn record(
        &self,
        route: &str,
        method: &'static str,
        status: u16,
        elapsed: std::time::Duration,
    ) {
        let Some(m) = get() else { return };
        self.requests.inc((method, status), || {
            m.requests
                .with_label_values(&[route, method, status_label(status)])
        });
        self.duration
            .get_or_init(|| m.request_duration.with_label_values(&[route]))
            .observe(elapsed.as_secs_f64());
    }
}

/// `gatehouse_upstream_requests_total` of one server, by status.
pub(crate) type ServerSeries = Memo<u16>;

/// Counts a proxied request of `upstream`'s `server` answered with `status`.
pub(crate) fn record_upstream_request(
    series: &ServerSeries,
    upstream: &str,
    server: &str,
    status: u16,
) {
    let Some(m) = get() else { return };
    series.inc(status, || {
        m.upstream_requests
            .with_label_values(&[upstream, server, status_label(status)])
    });
}

/// `gatehouse_upstream_duration_seconds` of one pool, resolved on first use.
#[derive(Debug, Default)]
pub(crate) struct PoolSeries(OnceLock<Histogram>);

impl PoolSeries {
    pub(crate) fn observe(&self, upstream: &str, elapsed: std::time::Duration) {
        let Some(m) = get() else { return };
        self.0
            .get_or_init(|| m.upstream_duration.with_label_values(&[upstream]))
            .observe(elapsed.as_secs_f64());
    }
}

/// Counters of one vector already resolved for a few label sets that differ
/// only in `K` (method and status), so that a repeated set costs a lock and
/// a short scan instead of a label hash and the vector's lock.
#[derive(Default)]
pub(crate) struct Memo<K> {
    seen: Mutex<Vec<(K, IntCounter)>>,
}

impl<K> std::fmt::Debug for Memo<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Memo")
    }
}

impl<K: Copy + PartialEq> Memo<K> {
    /// Label sets kept; more (a server answering with many statuses) resolve
    /// each time, as before.
    const KEPT: usize = 16;

    /// Increments the counter of `key`, resolving it with `resolve` when not kept.
    fn inc(&self, key: K, resolve: impl FnOnce() -> IntCounter) {
        let Ok(mut seen) = self.seen.lock() else {
            resolve().inc();
            return;
        };
        if let Some((_, counter)) = seen.iter().find(|(k, _)| *k == key) {
            counter.inc();
            return;
        }
        let counter = resolve();
        counter.inc();
        if seen.len() < Self::KEPT {
            seen.push((key, counter));
        }
    }
}

/// A `status` label without an allocation per request.
pub(crate) fn status_label(status: u16) -> &'static str {
    static LABELS: LazyLock<Vec<String>> =
        LazyLock::new(|| (0..600).map(|n: u16| n.to_string()).collect());
    LABELS
        .get(usize::from(status))
        .map_or("other", String::as_str)
}

/// Counts a buffered request body that spilled to disk.
pub(crate) fn record_request_body_spill() {
    if let Some(m) = get() {
        m.request_body_spills.inc();
    }
}

/// Adds the bytes of a spilled request body.
pub(crate) fn record_request_body_spilled_bytes(bytes: u64) {
    if let Some(m) = get() {
        m.request_body_spilled_bytes.inc_by(bytes);
    }
}

/// Counts a request ended by a client deadline (`client_body_timeout`,
/// `send_timeout`).
pub(crate) fn record_client_timeout(deadline: &str) {
    if let Some(m) = get() {
        m.client_timeouts.with_label_values(&[deadline]).inc();
    }
}

/// Counts an answer Gatehouse compressed (`cached`: from a variant made once).
pub(crate) fn record_compressed(encoding: &str, cached: bool) {
    if let Some(m) = get() {
        let source = if cached { "cached" } else { "on_the_fly" };
        m.compressed.with_label_values(&[encoding, source]).inc();
    }
}

/// Counts a request refused by a limit.
pub(crate) fn record_rate_limited(limit: &str) {
    if let Some(m) = get() {
        m.rate_limited.with_label_values(&[limit]).inc();
    }
}

/// Sets whether a rate limit store answers.
pub(crate) fn set_store_up(store: &str, up: bool) {
    if let Some(m) = get() {
        m.store_up.with_label_values(&[store]).set(i64::from(up));
    }
}

/// Drops the gauge of a store no limit names any more.
pub(crate) fn remove_store(store: &str) {
    if let Some(m) = get() {
        let _ = m.store_up.remove_label_values(&[store]);
    }
}

/// Counts a failed or timed-out call to a rate limit store.
pub(crate) fn record_store_error(store: &str) {
    if let Some(m) = get() {
        m.store_errors.with_label_values(&[store]).inc();
    }
}

/// Counts a check of a shared limit answered by its `on_store_error`.
pub(crate) fn record_store_fallback(limit: &str) {
    if let Some(m) = get() {
        m.store_fallbacks.with_label_values(&[limit]).inc();
    }
}

/// Counts a request refused by an access list.
pub(crate) fn record_access_denied(list: &str) {
    if let Some(m) = get() {
        m.access_denied.with_label_values(&[list]).inc();
    }
}

/// Seconds since the epoch, for the last-reload gauge.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The Prometheus text exposition of every metric.
pub(crate) fn render() -> String {
    let Some(m) = get() else { return String::new() };
    let mut out = Vec::new();
    if TextEncoder::new()
        .encode(&m.registry.gather(), &mut out)
        .is_err()
    {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_span_half_a_millisecond_to_thirty_seconds() {
        assert_eq!(LATENCY_BUCKETS.first(), Some(&0.0005));
        assert_eq!(LATENCY_BUCKETS.last(), Some(&30.0));
        assert!(LATENCY_BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let odd = http::Method::from_bytes(b"PURGE").unwrap_or(http::Method::GET);
        assert_eq!(method_label(&odd), "OTHER");
        assert_eq!(method_label(&http::Method::DELETE), "DELETE");
    }
}
