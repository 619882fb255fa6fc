//! The Pingora `ProxyHttp` implementation: one request's path through Gatehouse.
//!
//! ```text
//! request_filter        snapshot → request id → client ip → the stages (stages.rs):
//!                       framing → head size → redirect → host → route → access
//!                       → cors preflight → rate limits → body size → static site | pool
//!                       (shared rate limits: one await on their store, then the rest)
//! upstream_peer         pick a healthy, not ejected server not tried yet (retries land here again)
//! fail_to_connect       passive health counts a failure; retry on another server while `retries` allow
//! upstream_request_filter  strip prefix, forwarding headers
//! upstream_response_filter passive health counts the server's status
//! response_filter       [headers], HSTS, X-Request-Id, RateLimit-*, CORS; a 101 switches
//!                       the client side to `websocket_idle_timeout`; compression's plan
//!                       (headers, encoder)
//! response_body_filter  the body through the encoder, when compressing
//! upgraded_timeout      the server side of a 101 likewise (vendor patch 8)
//! fail_to_proxy         502 / 503 / 504 as short JSON
//! logging               metrics, access log (observe.rs)
//! ```
//!
//! Every answer Gatehouse writes itself goes through `respond.rs`.

pub(crate) mod buffer;
pub(crate) mod cors;
pub(crate) mod ctx;
pub(crate) mod framing;
pub mod headers;
pub(crate) mod observe;
pub mod redirect;
pub(crate) mod respond;
pub mod route;
pub(crate) mod site;
pub(crate) mod stages;
pub(crate) mod upstream;

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::ServerSession;
use pingora::proxy::{FailToProxy, ProxyHttp, ResponseBuffering, Session};
use pingora::upstreams::peer::{HttpPeer, Peer};
use pingora::{Error, ErrorSource, ErrorType};
use tokio::sync::Semaphore;

pub use ctx::Ctx;
use stages::Decision;

use crate::config::defaults::{RESPONSE_BUFFER_PER_REQUEST, RESPONSE_BUFFER_TOTAL};
use crate::config::Balance;
use crate::pool::passive::Outcome;
use crate::pool::InFlight;
use crate::state::State;

/// The proxy. Cheap to clone; all state is in [`State`].
pub struct Gatehouse {
    pub state: Arc<State>,
}

/// Asks the store of each shared limit the rate-limit stage queued, in
/// order; the first refusal is the answer.
async fn ask_store(ctx: &mut Ctx) -> Decision {
    for (limiter, key) in std::mem::take(&mut ctx.shared_limits) {
        let answer = limiter.check_shared(&key).await;
        if let Some(refused) = stages::apply_rate(&limiter.config.name, answer, ctx) {
            return refused;
        }
    }
    Decision::Continue
}

// No `#[async_trait]`: the per-request hooks of Pingora's `ProxyHttp` return
// `impl Future` (vendor patch 93), so these `async fn`s allocate no box per call.
impl ProxyHttp for Gatehouse {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new()
    }

    /// No Pingora modules: Pingora's default is its response compression
    /// module switched off (level 0), which Gatehouse never switches on (it
    /// compresses in `response_filter`); it still cost every request an
    /// allocation and four calls.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

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
        let snapshot = self.state.current();
        ctx.snapshot = Some(snapshot.clone());
        ctx.tls = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .is_some();
        if crate::lifecycle::drain::is_draining() {
            // Draining (SIGTERM, or after an upgrade's handover): `Connection:
            // close`, so each busy keep-alive connection ends after this answer.
            session.set_keepalive(None);
        } else if !session.is_process_shutting_down() {
            let idle = snapshot.config.server.keepalive_timeout;
            session.set_keepalive(Some(idle.as_secs().max(1)));
        }
        // A client that takes no bytes of an answer for this long is cut.
        session.set_write_timeout(Some(snapshot.config.server.send_timeout));
        framing::strip_h2c_upgrade(session.req_header_mut());
        let raw = session
            .as_downstream()
            .as_http1()
            .map(|h1| h1.get_headers_raw_bytes());
        // One pass over the raw head (HTTP/1): the framing checks use it, and
        // a field Gatehouse reads that has no line there is not looked up.
        let request = stages::Request::new(session.req_header(), raw.as_deref());
        ctx.sent = request.sent();
        let req = request.head;
        let sent_id = match ctx.sent.request_id() {
            true => req.headers.get(headers::X_REQUEST_ID),
            false => None,
        };
        ctx.request_id = headers::request_id(sent_id);
        ctx.peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let trusted = &snapshot.config.server.trusted_proxies;
        // `X-Forwarded-For` counts only from trusted proxies: without any,
        // it is not looked up.
        let xff = match trusted.is_empty() || !ctx.sent.forwarded_for() {
            true => None,
            false => req.headers.get(headers::X_FORWARDED_FOR),
        };
        ctx.client_ip = headers::client_ip(ctx.peer_ip, xff.map(|v| v.as_bytes()), trusted);
        let mut decided = stages::run(&request, &snapshot, ctx);
        if let Decision::AskStore = decided {
            // Boxed: the await's state is allocated only by routes with a
            // shared limit, not carried in every request's future.
            decided = Box::pin(ask_store(ctx)).await;
            if let Decision::Continue = decided {
                decided = stages::resume(&request, &snapshot, ctx);
            }
        }
        match decided {
            Decision::Continue => {}
            decided => {
                respond::send(session, ctx, decided).await?;
                return Ok(true);
            }
        }
        let buffering = ctx.pool.is_some() && ctx.route().is_some_and(|r| r.request_buffering);
        if buffering && !session.is_body_empty() {
            let server = &snapshot.config.server;
            match buffer::read_body(
                session,
                ctx.max_body,
                server.client_body_timeout,
                &server.temp_dir,
            )
            .await
            {
                Ok(body) => ctx.body = Some(body),
                Err(e) => match e.status() {
                    Some(status) => {
                        log::debug!("request body refused: {}", crate::logging::chain(&e));
                        respond::send_error(session, ctx, status).await?;
                        return Ok(true);
                    }
                    // The client is gone: nothing to answer, no server contacted.
                    None => {
                        return Err(
                            Error::because(ErrorType::ReadError, "request body", e).into_down()
                        )
                    }
                },
            }
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        if let Some(buffered) = &ctx.body {
            // The whole body was read before a server was chosen; each
            // attempt sends it in one piece.
            *body = if end_of_stream {
                Some(buffered.bytes().await.map_err(|e| {
                    Error::because(ErrorType::InternalError, "reading the buffered body", e)
                })?)
            } else {
                None
            };
            return Ok(());
        }
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
        let key = if pool.config.balance == Balance::ConsistentHash {
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
        debug_assert_eq!(peer.reuse_hash(), backend.reuse_hash, "cached reuse hash");
        ctx.in_flight = Some(InFlight::new(backend));
        ctx.outcome_recorded = false;
        ctx.upstream_start = Some(Instant::now());
        Ok(peer)
    }

    /// The server's reuse hash, kept with it ([`crate::pool::Backend`]):
    /// Pingora need not hash the peer per request (vendor patch 90). Only
    /// for the peer made from that server: any other peer is hashed by
    /// Pingora, so pooled connections of two servers can never mix.
    fn upstream_peer_reuse_hash(&self, peer: &HttpPeer, ctx: &Ctx) -> Option<u64> {
        let backend = ctx.in_flight.as_ref()?.backend();
        (peer._address.as_inet() == Some(&backend.addr)).then_some(backend.reuse_hash)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        upstream::record_outcome(ctx, Outcome::Failure);
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
            // The new target's bytes become the URI's (`parse` would copy them).
            let uri = http::Uri::from_maybe_shared(Bytes::from(new_path)).map_err(|e| {
                Error::because(ErrorType::HTTPStatus(400), "upstream request target", e)
            })?;
            upstream_request.set_uri(uri);
        }
        // An HTTP/1 request goes up with the client's head, Host included:
        // its value is read there (one lookup instead of two).
        let h1_host = match session.req_header().version {
            http::Version::HTTP_2 => None,
            _ => upstream_request.headers.get(http::header::HOST),
        };
        let host = match h1_host {
            Some(h) => h.to_str().is_ok().then(|| h.clone()),
            None => {
                let host = headers::request_host_value(session.req_header());
                if upstream_request.headers.get(http::header::HOST).is_none() {
                    if let Some(h) = &host {
                        upstream_request.insert_header(http::header::HOST, h.clone())?;
                    }
                }
                host
            }
        };
        if let Some(body) = &ctx.body {
            // A buffered body goes upstream with its length, as Nginx sends it
            // (WSGI servers want a Content-Length).
            upstream_request.remove_header(&http::header::TRANSFER_ENCODING);
            upstream_request.insert_header(http::header::CONTENT_LENGTH, body.len())?;
        }
        headers::set_forwarding(
            upstream_request,
            ctx.client_ip,
            ctx.peer_ip,
            ctx.tls,
            host,
            &ctx.request_id,
            ctx.sent,
        );
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        let status = upstream_response.status.as_u16();
        ctx.upstream_status = Some(status);
        // An interim answer (100 Continue) says nothing yet; a 101 is final.
        let fin = status >= 200 || status == 101;
        if let Some(pool) = ctx.pool.clone().filter(|_| fin) {
            upstream::record_outcome(ctx, upstream::outcome_of_status(&pool.config, status));
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        // The answer is Gatehouse's: its own HTTP version, not the server's
        // (an HTTP/1.0 server such as Gunicorn's sync worker would otherwise
        // make every answer to an HTTP/1.1 client an HTTP/1.0 one).
        if upstream_response.version < http::Version::HTTP_11 {
            upstream_response.set_version(http::Version::HTTP_11);
        }
        if let Some(snapshot) = &ctx.snapshot {
            headers::decorate(
                upstream_response,
                &snapshot.config,
                ctx.tls,
                &ctx.request_id,
            )?;
        }
        ctx.add_rate_headers(upstream_response)?;
        ctx.add_cors_headers(upstream_response, session.req_header())?;
        if let Some(policy) = ctx.compression() {
            use crate::compression::{plan_proxied, Plan};
            match plan_proxied(policy, session.req_header(), upstream_response)? {
                Plan::AsIs => {}
                Plan::HeadersOnly(a) => crate::metrics::record_compressed(a.token(), false),
                Plan::Encode(encoder) => {
                    crate::metrics::record_compressed(encoder.algorithm().token(), false);
                    ctx.encoder = Some(encoder);
                }
            }
        }
        ctx.status = upstream_response.status.as_u16();
        if ctx.status == 101 {
            // An upgraded (WebSocket) connection may idle for as long as the
            // pool allows, both ways, instead of the request timeouts.
            let idle = ctx.pool.as_ref().map(|p| p.config.websocket_idle_timeout);
            if let Some(idle) = idle {
                session.set_read_timeout(Some(idle));
                session.set_write_timeout(Some(idle));
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<Option<Duration>> {
        if let Some(encoder) = &mut ctx.encoder {
            let input = body.take().unwrap_or_default();
            let out = encoder.encode(&input, end_of_stream).map_err(|e| {
                Error::because(ErrorType::InternalError, "compressing the answer", e)
            })?;
            *body = Some(out);
            if end_of_stream {
                ctx.encoder = None;
            }
        }
        Ok(None)
    }

    fn upgraded_timeout(&self, _session: &Session, ctx: &Ctx) -> Option<Duration> {
        ctx.pool.as_ref().map(|p| p.config.websocket_idle_timeout)
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
        let body_kept = ctx.body.is_some() || !session.as_ref().retry_buffer_truncated();
        if !session.req_header().method.is_idempotent() || !body_kept {
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

    fn response_buffering(&self, _session: &Session, ctx: &Ctx) -> Option<ResponseBuffering> {
        static TOTAL: LazyLock<Arc<Semaphore>> =
            LazyLock::new(|| Arc::new(Semaphore::new(RESPONSE_BUFFER_TOTAL)));
        ctx.route()
            .filter(|r| r.response_buffering)
            .map(|_| ResponseBuffering {
                per_request: RESPONSE_BUFFER_PER_REQUEST,
                total: TOTAL.clone(),
            })
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
        if e.is_some_and(|e| *e.esource() == ErrorSource::Upstream) {
            // A timeout or a broken exchange, before any answer was counted.
            upstream::record_outcome(ctx, Outcome::Failure);
        }
        observe::finish(session, e, ctx);
        // Release the in-flight slot now rather than when the context is dropped.
        ctx.in_flight = None;
    }
}
