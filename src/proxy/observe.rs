//! The end of a request: metrics and the access-log line, from the context.

use std::time::{Duration, SystemTime};

use pingora::proxy::Session;

use super::Ctx;
use crate::access_log::{self, Entry};
use crate::config::Target;
use crate::metrics;

/// Counts the request and writes its access-log line.
pub(crate) fn finish(session: &Session, e: Option<&pingora::Error>, ctx: &Ctx) {
    let elapsed = ctx.start.elapsed();
    let method = metrics::method_label(&session.req_header().method);
    match (ctx.route(), ctx.route_series()) {
        (Some(route), Some(series)) => series.record(&route.prefix, method, ctx.status, elapsed),
        _ => metrics::record_request("none", method, ctx.status, elapsed),
    }
    if e.is_some_and(|e| {
        e.esource() == &pingora::ErrorSource::Downstream
            && e.etype() == &pingora::ErrorType::WriteTimedout
    }) {
        metrics::record_client_timeout("send_timeout");
    }
    if let (Some(pool), Some(flight)) = (&ctx.pool, &ctx.in_flight) {
        let backend = flight.backend();
        metrics::record_upstream_request(
            &backend.series,
            pool.name(),
            &backend.label,
            ctx.upstream_status.unwrap_or(ctx.status),
        );
        if let Some(upstream) = upstream_elapsed(ctx, elapsed) {
            pool.series.observe(pool.name(), upstream);
        }
    }
    if access_log::enabled() {
        access_log::write(&entry(session, e, ctx, elapsed));
    }
}

/// Time from picking a server to the request's end (never longer than the
/// request, since both are measured to the same end).
fn upstream_elapsed(ctx: &Ctx, elapsed: Duration) -> Option<Duration> {
    let picked = ctx.upstream_start?;
    Some(elapsed.saturating_sub(picked.saturating_duration_since(ctx.start)))
}

/// The access-log line of a finished request.
fn entry<'a>(
    session: &'a Session,
    e: Option<&pingora::Error>,
    ctx: &'a Ctx,
    elapsed: Duration,
) -> Entry<'a> {
    let req = session.req_header();
    let header_str =
        |name: http::header::HeaderName| req.headers.get(name).and_then(|v| v.to_str().ok());
    let route = ctx.route();
    Entry {
        time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        client_ip: ctx.client_ip.map(|ip| ip.to_string()),
        method: Some(req.method.as_str()),
        host: header_str(http::header::HOST).or_else(|| req.uri.authority().map(|a| a.as_str())),
        path: Some(req.uri.path()),
        route: route.map(|r| r.prefix.as_str()),
        status: ctx.status,
        bytes_sent: session.body_bytes_sent(),
        duration_ms: elapsed.as_secs_f64() * 1000.0,
        upstream: match route.map(|r| &r.target) {
            Some(Target::Upstream(name)) => Some(name.as_str()),
            _ => None,
        },
        server: ctx.in_flight.as_ref().map(|f| f.backend().label.as_str()),
        upstream_duration_ms: upstream_elapsed(ctx, elapsed).map(|d| d.as_secs_f64() * 1000.0),
        request_id: ctx.request_id(),
        protocol: if session.is_http2() { "h2" } else { "h1" },
        tls_version: session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .map(|s| access_log::tls_version_name(&s.version)),
        user_agent: header_str(http::header::USER_AGENT),
        referer: header_str(http::header::REFERER),
        error: e.map(access_log::error_text),
    }
}
