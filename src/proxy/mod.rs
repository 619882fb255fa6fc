//! The Pingora `ProxyHttp` implementation: one request's path through Gatehouse.
//!
//! ```text
//! request_filter        snapshot → request id → client ip → redirect → host
//!                       → route → rate limits → body size → static | pool
//! upstream_peer         pick a healthy server not tried yet (retries land here again)
//! fail_to_connect       retry on another server while `retries` allow
//! upstream_request_filter  strip prefix, forwarding headers
//! response_filter       [headers], HSTS, X-Request-Id, RateLimit-*
//! fail_to_proxy         502 / 503 / 504 as short JSON
//! logging               metrics, access log
//! ```

pub mod headers;
pub mod redirect;
pub mod respond;
pub mod route;
pub mod upstream;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::ServerSession;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};

use crate::access_log;
use crate::config::{Route, Target};
use crate::lifecycle::drain::RequestInFlight;
use crate::metrics;
use crate::pool::{InFlight, Pool};
use crate::rate_limit::Decision;
use crate::state::{Snapshot, State};
use crate::static_files::ReplyBody;

/// The proxy. Cheap to clone; all state is in [`State`].
pub struct Gatehouse {
    pub state: Arc<State>,
}

/// Per-request state, alive from the first filter to `logging`.
pub struct Ctx {
    pub start: Instant,
    /// The config snapshot this request uses from start to end.
    pub rt: Option<Arc<Snapshot>>,
    /// Index of the matched route in the route table.
    pub route: Option<usize>,
    pub tls: bool,
    pub request_id: String,
    pub peer_ip: Option<IpAddr>,
    pub client_ip: Option<IpAddr>,
    pub pool: Option<Arc<Pool>>,
    /// Servers already tried for this request.
    pub tried: Vec<SocketAddr>,
    /// Whether a server took the request and then failed the exchange.
    pub exchange_failed: bool,
    pub in_flight: Option<InFlight>,
    pub upstream_start: Option<Instant>,
    pub upstream_status: Option<u16>,
    /// The most restrictive rate-limit decision, for the `RateLimit-*` headers.
    pub rate: Option<Decision>,
    /// Request body bytes seen so far, against `max_body`.
    pub body_seen: u64,
    pub max_body: u64,
    /// The status sent to the client (0 when none could be sent).
    pub status: u16,
    /// Counts this request in flight (the drain waits for none) until dropped.
    _counted: RequestInFlight,
}

impl Ctx {
    fn new() -> Self {
        Ctx {
            _counted: RequestInFlight::new(),
            start: Instant::now(),
            rt: None,
            route: None,
            tls: false,
            request_id: String::new(),
            peer_ip: None,
            client_ip: None,
            pool: None,
            tried: Vec::new(),
            exchange_failed: false,
            in_flight: None,
            upstream_start: None,
            upstream_status: None,
            rate: None,
            body_seen: 0,
            max_body: u64::MAX,
            status: 0,
        }
    }

    /// The matched route.
    pub fn route(&self) -> Option<&Route> {
        let rt = self.rt.as_ref()?;
        rt.routes.get(self.route?)
    }

    /// Adds `RateLimit-Limit`, `-Remaining`, `-Reset` when a limit applied.
    pub fn add_rate_headers(&self, header: &mut ResponseHeader) -> pingora::Result<()> {
        if let Some(d) = &self.rate {
            header.insert_header("ratelimit-limit", d.limit.to_string())?;
            header.insert_header("ratelimit-remaining", d.remaining.to_string())?;
            header.insert_header("ratelimit-reset", d.reset_secs.to_string())?;
        }
        Ok(())
    }
}

/// What a request-filter stage decided.
enum Step {
    /// Go on to the next stage.
    Next,
    /// A response was written; stop.
    Done,
}

fn is_tls(session: &Session) -> bool {
    session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .is_some()
}

/// The request's host: the `Host` header, or the URI authority (HTTP/2).
fn request_host(req: &RequestHeader) -> Option<&str> {
    match req.headers.get(http::header::HOST) {
        Some(h) => h.to_str().ok(),
        None => req.uri.authority().map(|a| a.as_str()),
    }
}

/// Bytes of the request line and headers as received (approximately: the
/// request line is rebuilt from the parsed parts).
fn head_size(req: &RequestHeader) -> u64 {
    let target = req.uri.path_and_query().map_or(1, |p| p.as_str().len())
        + req.uri.authority().map_or(0, |a| a.as_str().len());
    let line = req.method.as_str().len() + target + 12;
    let fields: usize = req
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    (line + fields) as u64
}

/// Why a request's framing is refused, when it is.
///
/// Pingora accepts some heads that a backend or another proxy could frame
/// differently: it drops `Content-Length` when `Transfer-Encoding` is also
/// present, and accepts lines ended by a bare LF. Both are refused here, from
/// the raw head bytes, as Nginx refuses them.
fn framing_problem(session: &Session) -> Option<&'static str> {
    let req = session.req_header();
    let mut lengths = req.headers.get_all(http::header::CONTENT_LENGTH).iter();
    if let Some(length) = lengths.next() {
        if lengths.next().is_some() {
            return Some("more than one Content-Length");
        }
        // Only 1*DIGIT: no lists ("5,5"), signs or spaces.
        let v = length.as_bytes();
        if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
            return Some("a Content-Length that is not a plain number");
        }
    }
    // The only transfer coding a request may use here is `chunked` alone:
    // others would be dropped on the way upstream without decoding the body.
    let mut codings = req.headers.get_all(http::header::TRANSFER_ENCODING).iter();
    if let Some(coding) = codings.next() {
        if codings.next().is_some()
            || !coding
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked")
        {
            return Some("a Transfer-Encoding other than chunked");
        }
    }
    let Some(h1) = session.as_downstream().as_http1() else {
        return target_problem(req.raw_path());
    };
    // The target as sent: the parsed one has lost a fragment already.
    let raw = h1.get_headers_raw_bytes();
    let target = raw.split(|&b| b == b' ').nth(1).unwrap_or_default();
    target_problem(target).or_else(|| raw_framing_problem(&raw))
}

/// Why a request target is refused, when it is (RFC 9112 section 3.2).
///
/// Only origin-form (`/path?query`) and absolute-form (`http://host/path`)
/// are served. Authority-form belongs to CONNECT (refused before this) and
/// asterisk-form (`OPTIONS *`) asks about the proxy itself: both get 400, as
/// Nginx answers. A `#` cannot be part of a target: a fragment that one
/// parser drops and another keeps would route one path and serve another.
/// Raw spaces and control characters never get here: the parser refuses them.
fn target_problem(target: &[u8]) -> Option<&'static str> {
    let has_scheme = |scheme: &[u8]| {
        target.len() > scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme)
    };
    if !(target.starts_with(b"/") || has_scheme(b"http://") || has_scheme(b"https://")) {
        return Some("a request target that is not origin- or absolute-form");
    }
    if target.contains(&b'#') {
        return Some("a fragment in the request target");
    }
    None
}

/// [`framing_problem`] on raw HTTP/1 head bytes.
fn raw_framing_problem(raw: &[u8]) -> Option<&'static str> {
    let mut prev = 0u8;
    for &b in raw {
        if b == b'\n' && prev != b'\r' {
            return Some("a line ended by a bare LF");
        }
        prev = b;
    }
    let has = |name: &[u8]| {
        raw.split(|&b| b == b'\n').any(|line| {
            line.len() > name.len()
                && line[..name.len()].eq_ignore_ascii_case(name)
                && line[name.len()] == b':'
        })
    };
    if has(b"content-length") && has(b"transfer-encoding") {
        return Some("both Content-Length and Transfer-Encoding");
    }
    None
}

impl Gatehouse {
    /// Ambiguous framing is refused with 400 and the connection closed, so
    /// nothing that a backend could read differently is ever forwarded.
    async fn framing_stage(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<Step> {
        if let Some(problem) = framing_problem(session) {
            log::debug!("refused a request with {problem}");
            respond::send_error(session, ctx, 400).await?;
            return Ok(Step::Done);
        }
        // An h2c upgrade is not offered: the request is served as HTTP/1.1.
        let req = session.req_header_mut();
        let h2c = req
            .headers
            .get(http::header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("h2c")));
        if h2c {
            req.remove_header(&http::header::UPGRADE);
            req.remove_header("http2-settings");
            req.remove_header(&http::header::CONNECTION);
        }
        Ok(Step::Next)
    }

    /// A request head over `max_header_size` gets 431.
    async fn head_size_stage(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        rt: &Snapshot,
    ) -> pingora::Result<Step> {
        if head_size(session.req_header()) > rt.config.server.max_header_size {
            respond::send_error(session, ctx, 431).await?;
            return Ok(Step::Done);
        }
        Ok(Step::Next)
    }

    /// Plain listener with `redirect_to_https`: 301, or 400 for an unusable Host.
    async fn redirect_stage(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        rt: &Snapshot,
    ) -> pingora::Result<Step> {
        let Some(http) = rt
            .config
            .http
            .as_ref()
            .filter(|h| h.redirect_to_https && !ctx.tls)
        else {
            return Ok(Step::Next);
        };
        let req = session.req_header();
        let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let location =
            request_host(req).and_then(|h| redirect::https_location(h, http.https_port, pq));
        match location {
            Some(loc) => respond::send_redirect(session, ctx, &loc).await?,
            None => respond::send_error(session, ctx, 400).await?,
        }
        Ok(Step::Done)
    }

    /// HTTP/1.1 requires a Host; a malformed one is refused too.
    async fn host_stage(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<Step> {
        let req = session.req_header();
        let host_ok = match request_host(req) {
            Some(h) => redirect::host_without_port(h).is_some(),
            None => req.version == http::Version::HTTP_10,
        };
        if host_ok {
            Ok(Step::Next)
        } else {
            respond::send_error(session, ctx, 400).await?;
            Ok(Step::Done)
        }
    }

    async fn route_stage(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        rt: &Snapshot,
    ) -> pingora::Result<Step> {
        match rt.routes.find_index(session.req_header().uri.path()) {
            Some(i) => {
                ctx.route = Some(i);
                Ok(Step::Next)
            }
            None => {
                respond::send_error(session, ctx, 404).await?;
                Ok(Step::Done)
            }
        }
    }

    async fn rate_limit_stage(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        rt: &Snapshot,
    ) -> pingora::Result<Step> {
        let Some(route) = ctx.route.and_then(|i| rt.routes.get(i)) else {
            return Ok(Step::Next);
        };
        for name in &route.rate_limits {
            let Some(limiter) = rt.limiters.get(name) else {
                continue;
            };
            let key = limiter.key_for(ctx.client_ip, &session.req_header().headers);
            let decision = limiter.check(&key);
            if !decision.allowed {
                metrics::record_rate_limited(name);
                let retry_after = decision.reset_secs.to_string();
                ctx.rate = Some(decision);
                respond::send_error_with(
                    session,
                    ctx,
                    429,
                    &[(http::header::RETRY_AFTER, retry_after)],
                )
                .await?;
                return Ok(Step::Done);
            }
            if ctx
                .rate
                .as_ref()
                .is_none_or(|d| decision.remaining < d.remaining)
            {
                ctx.rate = Some(decision);
            }
        }
        Ok(Step::Next)
    }

    async fn body_size_stage(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<Step> {
        let max = ctx.route().map_or(u64::MAX, |r| r.max_body_size);
        ctx.max_body = max;
        let declared = session
            .req_header()
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            respond::send_error(session, ctx, 413).await?;
            return Ok(Step::Done);
        }
        Ok(Step::Next)
    }

    async fn target_stage(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        rt: &Snapshot,
    ) -> pingora::Result<Step> {
        let Some(route) = ctx.route.and_then(|i| rt.routes.get(i)) else {
            return Ok(Step::Next);
        };
        match &route.target {
            Target::Static(name) => {
                let Some(site) = rt.sites.get(name) else {
                    respond::send_error(session, ctx, 404).await?;
                    return Ok(Step::Done);
                };
                let req = session.req_header();
                let path = req.uri.path();
                let stripped;
                let path = if route.strip_prefix {
                    stripped = route::upstream_path(route, path);
                    stripped.as_str()
                } else {
                    path
                };
                let mut reply = site.respond(&req.method, path, &req.headers).await;
                let status = reply.header.status.as_u16();
                if status >= 400 {
                    if let ReplyBody::Full(_) = reply.body {
                        // The same JSON error as every other, with this request's id.
                        let body = respond::error_body(status, &ctx.request_id);
                        reply
                            .header
                            .insert_header(http::header::CONTENT_LENGTH, body.len())?;
                        reply.body = ReplyBody::Full(body);
                    }
                }
                headers::decorate(&mut reply.header, &rt.config, ctx.tls, &ctx.request_id)?;
                ctx.add_rate_headers(&mut reply.header)?;
                ctx.status = reply.header.status.as_u16();
                crate::static_files::write_reply(session, reply).await?;
                Ok(Step::Done)
            }
            Target::Upstream(name) => {
                let pool = rt.pools.get(name).cloned();
                if !pool.as_ref().is_some_and(|p| p.any_healthy()) {
                    respond::send_error(session, ctx, 503).await?;
                    return Ok(Step::Done);
                }
                ctx.pool = pool;
                Ok(Step::Next)
            }
        }
    }
}

#[async_trait]
impl ProxyHttp for Gatehouse {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new()
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        // Pipelined HTTP/1.1 requests are answered one after another, in order.
        session.as_downstream_mut().set_pipelining_enabled(true);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        let rt = self.state.current();
        ctx.rt = Some(rt.clone());
        ctx.tls = is_tls(session);
        if crate::lifecycle::drain::is_draining() {
            // Draining (SIGTERM, or after an upgrade's handover): `Connection:
            // close`, so each busy keep-alive connection ends after this answer.
            session.set_keepalive(None);
        } else if !session.is_process_shutting_down() {
            let idle = rt.config.server.keepalive_timeout;
            session.set_keepalive(Some(idle.as_secs().max(1)));
        }
        let req = session.req_header();
        ctx.request_id = headers::request_id(req.headers.get(headers::X_REQUEST_ID));
        ctx.peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.client_ip = headers::client_ip(
            ctx.peer_ip,
            req.headers
                .get(headers::X_FORWARDED_FOR)
                .map(|v| v.as_bytes()),
            &rt.config.server.trusted_proxies,
        );

        if let Step::Done = self.framing_stage(session, ctx).await? {
            return Ok(true);
        }
        if let Step::Done = self.head_size_stage(session, ctx, &rt).await? {
            return Ok(true);
        }
        if let Step::Done = self.redirect_stage(session, ctx, &rt).await? {
            return Ok(true);
        }
        if let Step::Done = self.host_stage(session, ctx).await? {
            return Ok(true);
        }
        if let Step::Done = self.route_stage(session, ctx, &rt).await? {
            return Ok(true);
        }
        if let Step::Done = self.rate_limit_stage(session, ctx, &rt).await? {
            return Ok(true);
        }
        if let Step::Done = self.body_size_stage(session, ctx).await? {
            return Ok(true);
        }
        if let Step::Done = self.target_stage(session, ctx, &rt).await? {
            return Ok(true);
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        if let Some(chunk) = body {
            ctx.body_seen = ctx.body_seen.saturating_add(chunk.len() as u64);
            if ctx.body_seen > ctx.max_body {
                return Error::e_explain(
                    ErrorType::HTTPStatus(413),
                    "request body over max_body_size",
                );
            }
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let Some(pool) = ctx.pool.clone() else {
            return Error::e_explain(ErrorType::HTTPStatus(503), "no pool for this route");
        };
        let key = if pool.config.balance == crate::config::Balance::ConsistentHash {
            upstream::hash_key(&pool.config.hash_key, ctx.client_ip, session.req_header())
        } else {
            Vec::new()
        };
        let Some(backend) = pool.select(&key, &ctx.tried) else {
            // Nothing healthy is left to try: 503 while no server could be
            // reached, 502 once one took the request and failed the exchange.
            let status = if ctx.exchange_failed { 502 } else { 503 };
            return Error::e_explain(
                ErrorType::HTTPStatus(status),
                "no healthy upstream server left to try",
            );
        };
        ctx.tried.push(backend.addr);
        let peer = upstream::peer(&backend, &pool.config);
        ctx.in_flight = Some(InFlight::new(backend));
        ctx.upstream_start = Some(Instant::now());
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let retries = ctx.pool.as_ref().map_or(0, |p| p.config.retries);
        if ctx.tried.len() <= retries {
            e.set_retry(true);
        }
        if let Some(pool) = &ctx.pool {
            log::warn!("upstream {}: connect to {peer} failed: {e}", pool.name());
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        // Servers get origin-form (`/path?query`), also when the client sent
        // absolute-form (`http://host/path`), with the route's prefix stripped.
        let route = ctx.route().filter(|r| r.strip_prefix);
        let absolute_form = !upstream_request.raw_path().starts_with(b"/");
        if route.is_some() || absolute_form {
            let pq = upstream_request
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str());
            let new_path = match route {
                Some(route) => route::upstream_path(route, pq),
                None => pq.to_string(),
            };
            let uri = new_path.parse::<http::Uri>().map_err(|e| {
                Error::because(ErrorType::HTTPStatus(400), "upstream request target", e)
            })?;
            upstream_request.set_uri(uri);
        }
        let host = request_host(session.req_header()).map(str::to_owned);
        if upstream_request.headers.get(http::header::HOST).is_none() {
            if let Some(h) = &host {
                upstream_request.insert_header(http::header::HOST, h.as_str())?;
            }
        }
        headers::set_forwarding(
            upstream_request,
            ctx.client_ip,
            ctx.peer_ip,
            ctx.tls,
            host.as_deref(),
            &ctx.request_id,
        )
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        ctx.upstream_status = Some(upstream_response.status.as_u16());
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        if let Some(rt) = &ctx.rt {
            headers::decorate(upstream_response, &rt.config, ctx.tls, &ctx.request_id)?;
        }
        ctx.add_rate_headers(upstream_response)?;
        ctx.status = upstream_response.status.as_u16();
        Ok(())
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        ctx.exchange_failed = true;
        // Pingora's policy: only idempotent requests, and only when a reused
        // (kept-alive) connection failed, are retried.
        let mut e = e.more_context(format!("Peer: {peer}"));
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        // A stale pooled connection says nothing about the server: let the
        // retry pick it again on a fresh connection.
        if client_reused && e.retry() {
            if let Some(i) = ctx
                .tried
                .iter()
                .rposition(|a| Some(a) == peer._address.as_inet())
            {
                ctx.tried.remove(i);
            }
        }
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let status = upstream::status_for(e);
        // The connection is not reused after a failed exchange: say so.
        session.set_keepalive(None);
        if status > 0 && session.response_written().is_none() {
            if let Err(write_err) = respond::send_error(session, ctx, status).await {
                log::debug!("could not send the {status} error: {write_err}");
            }
        }
        if ctx.upstream_status.is_none() && ctx.in_flight.is_some() && status >= 500 {
            ctx.upstream_status = Some(status);
        }
        ctx.status = session
            .response_written()
            .map_or(status, |r| r.status.as_u16());
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn downstream_request_error(&self, session: &mut ServerSession, error: &Error) {
        // Anything but an unparsable head is a broken connection: nothing can be sent.
        if matches!(error.etype(), ErrorType::InvalidHTTPHeader) {
            respond::send_unparsed_head_error(session, &self.state.current()).await;
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, error: &Error) -> bool {
        // Statuses Gatehouse decided itself (503, 413, ...) are in the access
        // log and metrics already; only real failures go to the error log.
        matches!(error.etype(), ErrorType::HTTPStatus(_))
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        if ctx.status == 0 {
            ctx.status = session.response_written().map_or(0, |r| r.status.as_u16());
        }
        let elapsed = ctx.start.elapsed();
        let route = ctx.route().map_or("none", |r| r.prefix.as_str());
        let method = metrics::method_label(&session.req_header().method);
        metrics::record_request(route, method, ctx.status, elapsed);
        if let Some(m) = metrics::get() {
            if let (Some(pool), Some(flight)) = (&ctx.pool, &ctx.in_flight) {
                let upstream_status =
                    metrics::status_label(ctx.upstream_status.unwrap_or(ctx.status));
                m.upstream_requests
                    .with_label_values(&[pool.name(), &flight.backend().label, upstream_status])
                    .inc();
                if let Some(t) = ctx.upstream_start {
                    // Measured to the same end as the request, so never longer.
                    let upstream = elapsed.saturating_sub(t.saturating_duration_since(ctx.start));
                    m.upstream_duration
                        .with_label_values(&[pool.name()])
                        .observe(upstream.as_secs_f64());
                }
            }
        }
        access_log::record(session, e, ctx, elapsed);
        // Release the in-flight slot now rather than when the context is dropped.
        ctx.in_flight = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_origin_and_absolute_form_targets_are_served() {
        for ok in [&b"/"[..], b"/a?b=c", b"//a", b"http://h/a", b"HTTPS://h:1/"] {
            assert_eq!(target_problem(ok), None, "{}", ok.escape_ascii());
        }
        for bad in [
            &b"*"[..],
            b"foo",
            b"h:80",
            b"http://",
            b"/a#b",
            b"",
            b"ftp://h/",
        ] {
            assert!(target_problem(bad).is_some(), "{}", bad.escape_ascii());
        }
    }

    #[test]
    fn ambiguous_framing_is_found_in_raw_heads() {
        let ok = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(raw_framing_problem(ok), None);
        let both = b"POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 2\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(raw_framing_problem(both).is_some());
        let lf = b"GET / HTTP/1.1\nHost: a\r\n\r\n";
        assert!(raw_framing_problem(lf).is_some());
        let lookalike = b"GET / HTTP/1.1\r\nX-Content-Length: 1\r\nTransfer-Encoding-X: y\r\n\r\n";
        assert_eq!(raw_framing_problem(lookalike), None);
    }
}
