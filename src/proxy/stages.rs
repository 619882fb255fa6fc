//! The request's stages, in order: each a plain function of the request head,
//! the config snapshot and the request's context, returning a [`Decision`].
//!
//! ```text
//! framing → head size → acme challenge → redirect → host → route → access → cors preflight
//!         → rate limits → body size → target
//! ```
//!
//! The first stage that does not answer [`Decision::Continue`] decides the
//! answer; `respond::send` writes it. No stage does I/O, so each is tested
//! here without a `Session`. A route with a shared limit (one whose buckets
//! are in a store) stops at the rate limits with [`Decision::AskStore`]:
//! `request_filter` awaits the store, applies its answers with [`apply_rate`]
//! as the stage applies local ones, then [`resume`]s after the rate limits.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use pingora::http::{FramingField, RequestHeader};

use super::ctx::Ctx;
use super::{cors, framing, headers, redirect, route};
use crate::config::Target;
use crate::metrics;
use crate::rate_limit::Decision as RateDecision;
use crate::state::Snapshot;
use crate::static_files::Site;

/// The request as the stages see it.
pub(crate) struct Request<'a> {
    pub head: &'a RequestHeader,
    /// The head's bytes as received (HTTP/1 only). Private, with `lines`: the
    /// framing checks take both, and only [`Request::new`] keeps them in step.
    raw: Option<&'a [u8]>,
    /// The one pass over `raw`'s lines (HTTP/1 only).
    lines: Option<framing::RawLines>,
}

impl<'a> Request<'a> {
    /// The request with its raw head (HTTP/1) gone over once.
    pub(crate) fn new(head: &'a RequestHeader, raw: Option<&'a [u8]>) -> Self {
        Request {
            head,
            raw,
            lines: raw.map(framing::raw_lines),
        }
    }

    /// Which of the fields Gatehouse reads the client may have sent.
    pub(crate) fn sent(&self) -> framing::Sent {
        self.lines.map_or(framing::Sent::UNKNOWN, |l| l.sent())
    }
}

/// What a stage decided.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Go on to the next stage (after the last one: proxy upstream).
    Continue,
    /// A JSON error with this status, and these headers.
    Error {
        status: u16,
        headers: Vec<(HeaderName, String)>,
    },
    /// A 301 to this location.
    Redirect(String),
    /// A 204 answering a CORS preflight, with these headers.
    Preflight(Vec<(HeaderName, HeaderValue)>),
    /// Serve `path` from a static site.
    Static { site: Arc<Site>, path: String },
    /// Shared limits wait in `ctx.shared_limits`: ask their store, then
    /// [`resume`].
    AskStore,
    /// A 200 with an ACME http-01 key authorization.
    AcmeChallenge(String),
}

impl Decision {
    fn error(status: u16) -> Decision {
        Decision::Error {
            status,
            headers: Vec::new(),
        }
    }
}

type Stage = fn(&Request<'_>, &Snapshot, &mut Ctx) -> Decision;

/// The stages in the order they run, with their names.
pub(crate) const STAGES: [(&str, Stage); 11] = [
    ("framing", framing),
    ("head size", head_size),
    ("acme challenge", acme_challenge),
    ("redirect", redirect),
    ("host", host),
    ("route", route),
    ("access", access),
    ("cors preflight", cors_preflight),
    ("rate limits", rate_limits),
    ("body size", body_size),
    ("target", target),
];

/// Where [`resume`] starts: the stage after the rate limits (found at
/// compile time, so adding a stage cannot make it point elsewhere).
const AFTER_RATE_LIMITS: usize = stage_after("rate limits");

const fn stage_after(name: &str) -> usize {
    let name = name.as_bytes();
    let mut i = 0;
    while i < STAGES.len() {
        let candidate = STAGES[i].0.as_bytes();
        if candidate.len() == name.len() {
            let mut j = 0;
            while j < name.len() && candidate[j] == name[j] {
                j += 1;
            }
            if j == name.len() {
                return i + 1;
            }
        }
        i += 1;
    }
    panic!("no stage of that name")
}

/// Runs the stages until one decides.
pub(crate) fn run(req: &Request<'_>, snapshot: &Snapshot, ctx: &mut Ctx) -> Decision {
    run_from(0, req, snapshot, ctx)
}

/// Runs the stages after the rate limits (once the store has answered).
pub(crate) fn resume(req: &Request<'_>, snapshot: &Snapshot, ctx: &mut Ctx) -> Decision {
    run_from(AFTER_RATE_LIMITS, req, snapshot, ctx)
}

fn run_from(first: usize, req: &Request<'_>, snapshot: &Snapshot, ctx: &mut Ctx) -> Decision {
    for (_, stage) in STAGES.iter().skip(first) {
        let decided = stage(req, snapshot, ctx);
        if !matches!(decided, Decision::Continue) {
            return decided;
        }
        // `Continue` owns nothing: skip the call to the enum's drop glue
        // that dropping it costs otherwise (once per stage per request).
        std::mem::forget(decided);
    }
    Decision::Continue
}

/// Ambiguous framing or a target in the wrong form: 400 (and the connection
/// is closed), so nothing a backend could read differently is forwarded.
fn framing(req: &Request<'_>, _: &Snapshot, _: &mut Ctx) -> Decision {
    match framing::framing_problem(req.head, req.raw, req.lines) {
        Some(problem) => {
            log::debug!("refused a request with {problem}");
            Decision::error(400)
        }
        None => Decision::Continue,
    }
}

/// A head over `max_header_size`: 431.
fn head_size(req: &Request<'_>, snapshot: &Snapshot, _: &mut Ctx) -> Decision {
    if framing::head_size(req.head, req.raw) > snapshot.config.server.max_header_size {
        Decision::error(431)
    } else {
        Decision::Continue
    }
}

/// With `[acme]`, on the plain listener: the key authorization of a pending
/// http-01 challenge, before any redirect (the CA validates over plain HTTP).
/// Without `[acme]`, one `Option` check.
fn acme_challenge(req: &Request<'_>, snapshot: &Snapshot, ctx: &mut Ctx) -> Decision {
    let Some(acme) = snapshot.acme.as_ref().filter(|_| !ctx.tls) else {
        return Decision::Continue;
    };
    if req.head.method != http::Method::GET && req.head.method != http::Method::HEAD {
        return Decision::Continue;
    }
    match acme.http01.answer(req.head.uri.path()) {
        Some(key_authorization) => Decision::AcmeChallenge(key_authorization),
        None => Decision::Continue,
    }
}

/// The plain listener with `redirect_to_https`: 301, or 400 for an unusable Host.
fn redirect(req: &Request<'_>, snapshot: &Snapshot, ctx: &mut Ctx) -> Decision {
    let Some(http) = snapshot
        .config
        .http
        .as_ref()
        .filter(|h| h.redirect_to_https && !ctx.tls)
    else {
        return Decision::Continue;
    };
    let pq = req.head.uri.path_and_query().map_or("/", |p| p.as_str());
    match headers::request_host(req.head)
        .and_then(|h| redirect::https_location(h, http.https_port, pq))
    {
        Some(location) => Decision::Redirect(location),
        None => Decision::error(400),
    }
}

/// HTTP/1.1 requires a Host; a malformed one is refused too.
fn host(req: &Request<'_>, _: &Snapshot, _: &mut Ctx) -> Decision {
    let ok = match headers::request_host(req.head) {
        Some(h) => redirect::host_without_port(h).is_some(),
        None => req.head.version == http::Version::HTTP_10,
    };
    if ok {
        Decision::Continue
    } else {
        Decision::error(400)
    }
}

/// The route with the longest matching prefix, or 404.
fn route(req: &Request<'_>, snapshot: &Snapshot, ctx: &mut Ctx) -> Decision {
    match snapshot.routes.find_index(req.head.uri.path()) {
        Some(i) => {
            ctx.route = Some(i);
            Decision::Continue
        }
        None => Decision::error(404),
    }
}

/// A client the route's access list refuses: 403 (counted by list). The
/// address is `ctx.client_ip`, so `X-Forwarded-For` counts only from
/// `trusted_proxies`. Before the rate limits: a refused client spends no tokens.
fn access(_: &Request<'_>, snapshot: &Snapshot, ctx: &mut Ctx) -> Decision {
    let Some(list) = ctx
        .route
        .and_then(|i| snapshot.routes.get(i))
        .and_then(|r| r.access.as_deref())
    else {
        return Decision::Continue;
    };
    if list.permits(ctx.client_ip) {
        Decision::Continue
    } else {
        metrics::record_access_denied(&list.name);
        Decision::error(403)
    }
}

/// A CORS preflight on a route with a policy is answered here, never by a
/// backend: 204 with the policy's headers when the origin is allowed, else
/// 403 without CORS headers (the browser then refuses the actual request).
fn cors_preflight(req: &Request<'_>, snapshot: &Snapshot, ctx: &mut Ctx) -> Decision {
    let Some(policy) = ctx
        .route
        .and_then(|i| snapshot.routes.get(i))
        .and_then(|r| r.cors.as_deref())
    else {
        return Decision::Continue;
    };
    if !cors::is_preflight(req.head) {
        return Decision::Continue;
    }
    let preflight = req
        .head
        .headers
        .get(http::header::ORIGIN)
        .and_then(|origin| cors::preflight_headers(policy, origin));
    match preflight {
        Some(headers) => Decision::Preflight(headers),
        None => Decision::error(403),
    }
}

/// Every limit of the route must allow the request, else 429 with
/// `Retry-After`; the most restrictive answer feeds the `RateLimit-*` headers.
/// Local limits are checked here; shared ones are queued in
/// `ctx.shared_limits` for `request_filter` to ask the store.
fn rate_limits(req: &Request<'_>, snapshot: &Snapshot, ctx: &mut Ctx) -> Decision {
    let Some(route) = ctx.route.and_then(|i| snapshot.routes.get(i)) else {
        return Decision::Continue;
    };
    for name in &route.rate_limits {
        let Some(limiter) = snapshot.limiters.get(name) else {
            continue;
        };
        let key = limiter.key_for(ctx.client_ip, &req.head.headers);
        if limiter.is_shared() {
            ctx.shared_limits.push((limiter.clone(), key));
            continue;
        }
        if let Some(refused) = apply_rate(name, Some(limiter.check(&key)), ctx) {
            return refused;
        }
    }
    if ctx.shared_limits.is_empty() {
        Decision::Continue
    } else {
        Decision::AskStore
    }
}

/// Applies one limit's answer: a refusal is the 429 to send (counted); an
/// admission feeds `ctx.rate` when it is the most restrictive so far. `None`
/// (a shared limit whose store is down, with `on_store_error = "allow"`)
/// admits without headers.
pub(crate) fn apply_rate(
    name: &str,
    decision: Option<RateDecision>,
    ctx: &mut Ctx,
) -> Option<Decision> {
    let decision = decision?;
    if !decision.allowed {
        metrics::record_rate_limited(name);
        let retry_after = decision.reset_secs.to_string();
        ctx.rate = Some(decision);
        return Some(Decision::Error {
            status: 429,
            headers: vec![(http::header::RETRY_AFTER, retry_after)],
        });
    }
    if ctx
        .rate
        .as_ref()
        .is_none_or(|d| decision.remaining < d.remaining)
    {
        ctx.rate = Some(decision);
    }
    None
}

/// A declared body over the route's `max_body_size`: 413 (a chunked body is
/// counted as it streams, in `request_body_filter`).
fn body_size(req: &Request<'_>, _: &Snapshot, ctx: &mut Ctx) -> Decision {
    let max = ctx.route().map_or(u64::MAX, |r| r.max_body_size);
    ctx.max_body = max;
    // No lookup when the parsed head records that it has no `Content-Length`.
    let declared = match req.head.lacks(FramingField::ContentLength) {
        true => None,
        false => req.head.headers.get(http::header::CONTENT_LENGTH),
    }
    .and_then(|v| v.to_str().ok())
    .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        Decision::error(413)
    } else {
        Decision::Continue
    }
}

/// A static route is served here; an upstream route goes on to the pool
/// (503 at once when no server of it is healthy).
fn target(req: &Request<'_>, snapshot: &Snapshot, ctx: &mut Ctx) -> Decision {
    let Some(route) = ctx.route.and_then(|i| snapshot.routes.get(i)) else {
        return Decision::Continue;
    };
    match &route.target {
        Target::Static(name) => match snapshot.sites.get(name) {
            Some(site) => {
                let path = req.head.uri.path();
                let path = if route.strip_prefix {
                    route::upstream_path(route, path)
                } else {
                    path.to_string()
                };
                Decision::Static {
                    site: site.clone(),
                    path,
                }
            }
            None => Decision::error(404),
        },
        Target::Upstream(_) => {
            let pool = ctx.route.and_then(|i| snapshot.route_pool(i)).cloned();
            if !pool.as_ref().is_some_and(|p| p.any_healthy()) {
                return Decision::error(503);
            }
            ctx.pool = pool;
            Decision::Continue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(extra: &str) -> Arc<Snapshot> {
        let dir = std::env::temp_dir();
        let text = format!(
            r#"
[http]
listen = ["127.0.0.1:1"]
redirect_to_https = false
[[route]]
prefix = "/api/"
upstream = "api"
strip_prefix = true
rate_limit = "one"
max_body_size = "10"
[upstream.api]
servers = ["127.0.0.1:2"]
[rate_limit.one]
rate = 1
burst = 1
{extra}
"#
        );
        let config = crate::config::parse(&text, None, &dir).expect("valid config");
        Arc::new(Snapshot::build(config, None))
    }

    fn head(line: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let (method, path) = line.split_once(' ').unwrap_or(("GET", "/"));
        let mut h = RequestHeader::build(method, path.as_bytes(), None).unwrap();
        for (k, v) in headers {
            h.insert_header(k.to_string(), *v).unwrap();
        }
        h
    }

    /// Runs the stages as `request_filter` does: the context holds the snapshot.
    fn decide(
        snapshot: &Arc<Snapshot>,
        head: &RequestHeader,
        raw: Option<&[u8]>,
    ) -> (Decision, Ctx) {
        let mut ctx = Ctx::new();
        ctx.snapshot = Some(snapshot.clone());
        let d = run(&Request::new(head, raw), snapshot, &mut ctx);
        (d, ctx)
    }

    fn status(d: &Decision) -> Option<u16> {
        match d {
            Decision::Error { status, .. } => Some(*status),
            _ => None,
        }
    }

    #[test]
    fn resume_starts_right_after_the_rate_limits() {
        assert_eq!(STAGES[AFTER_RATE_LIMITS - 1].0, "rate limits");
    }

    #[test]
    fn a_shared_limit_is_left_to_the_store_and_a_local_one_checked_here() {
        let snap = snapshot("store = \"redis://127.0.0.1:1\"\n");
        let h = head("GET /api/x", &[("host", "a")]);
        let (d, ctx) = decide(&snap, &h, None);
        assert!(matches!(d, Decision::AskStore), "{d:?}");
        assert_eq!(ctx.shared_limits.len(), 1);
        assert!(
            ctx.rate.is_none() && ctx.pool.is_none(),
            "nothing after the limits ran"
        );
        // The local limit of the same route is checked in the stage.
        let local = snapshot("");
        let (d, ctx) = decide(&local, &h, None);
        assert!(matches!(d, Decision::Continue), "{d:?}");
        assert!(ctx.shared_limits.is_empty());
    }

    #[test]
    fn a_pending_acme_token_is_answered_on_the_plain_listener_before_the_redirect() {
        let mut built = Snapshot::build((*snapshot("").config).clone(), None);
        let mut http = built.config.http.clone().unwrap();
        http.redirect_to_https = true;
        let mut config = (*built.config).clone();
        config.http = Some(http);
        built.config = Arc::new(config);
        let acme = Arc::new(crate::acme::AcmeState {
            http01: crate::acme::Http01::default(),
            certs: Arc::new(crate::tls::AcmeCerts::new(vec!["a.example".into()])),
        });
        acme.http01.insert("tok".into(), "tok.thumb".into());
        built.acme = Some(acme);
        let snap = Arc::new(built);
        let host = [("host", "a.example")];
        let h = head("GET /.well-known/acme-challenge/tok", &host);
        let (d, _) = decide(&snap, &h, None);
        assert!(
            matches!(&d, Decision::AcmeChallenge(k) if k == "tok.thumb"),
            "{d:?}"
        );
        // Other tokens, other methods and TLS requests go on to the redirect.
        for (line, tls) in [
            ("GET /.well-known/acme-challenge/other", false),
            ("POST /.well-known/acme-challenge/tok", false),
            ("GET /.well-known/acme-challenge/tok", true),
        ] {
            let h = head(line, &host);
            let mut ctx = Ctx::new();
            ctx.snapshot = Some(snap.clone());
            ctx.tls = tls;
            let d = run(&Request::new(&h, None), &snap, &mut ctx);
            assert!(
                !matches!(d, Decision::AcmeChallenge(_)),
                "{line} tls={tls}: {d:?}"
            );
        }
    }

    #[test]
    fn a_good_api_request_goes_upstream_with_its_route() {
        let snap = snapshot("");
        let h = head("GET /api/x", &[("host", "a")]);
        let (d, ctx) = decide(&snap, &h, None);
        assert!(matches!(d, Decision::Continue), "{d:?}");
        assert_eq!(ctx.route().map(|r| r.prefix.as_str()), Some("/api/"));
        assert!(ctx.pool.is_some());
        assert_eq!(ctx.max_body, 10);
        assert_eq!(ctx.rate.as_ref().map(|r| r.remaining), Some(0));
    }

    #[test]
    fn each_stage_answers_its_own_refusal() {
        let snap = snapshot("");
        let host = [("host", "a")];
        let huge = "h".repeat(40 * 1024);
        type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<&'a [u8]>, u16);
        let cases: [Case; 5] = [
            (
                "GET /api/x",
                host.to_vec(),
                Some(b"GET /api/x HTTP/1.1\nHost: a\r\n\r\n"),
                400,
            ),
            ("GET /api/x", vec![("host", "a b")], None, 400),
            ("GET /nothing", host.to_vec(), None, 404),
            (
                "POST /api/x",
                vec![("host", "a"), ("content-length", "11")],
                None,
                413,
            ),
            ("GET /api/x", vec![("host", huge.as_str())], None, 431),
        ];
        for (line, hs, raw, expected) in cases {
            let h = head(line, &hs);
            let (d, _) = decide(&snap, &h, raw);
            assert_eq!(status(&d), Some(expected), "{line} {hs:?}");
        }
    }

    #[test]
    fn the_second_request_over_the_limit_gets_429_with_retry_after() {
        let snap = snapshot("");
        let h = head("GET /api/x", &[("host", "a")]);
        let _ = decide(&snap, &h, None);
        let (d, ctx) = decide(&snap, &h, None);
        match d {
            Decision::Error { status, headers } => {
                assert_eq!(status, 429);
                assert_eq!(headers[0].0, http::header::RETRY_AFTER);
                assert_eq!(headers[0].1, "1");
            }
            other => panic!("{other:?}"),
        }
        assert!(ctx.pool.is_none(), "a refused request picks no pool");
    }

    #[test]
    fn plain_requests_are_redirected_when_asked() {
        let snap = snapshot("");
        let mut config = (*snap.config).clone();
        if let Some(http) = config.http.as_mut() {
            http.redirect_to_https = true;
            http.https_port = 8443;
        }
        let snap = Arc::new(Snapshot::build(config, None));
        let h = head("GET /x?y=1", &[("host", "example.com:8080")]);
        let (d, _) = decide(&snap, &h, None);
        match d {
            Decision::Redirect(location) => assert_eq!(location, "https://example.com:8443/x?y=1"),
            other => panic!("{other:?}"),
        }
    }

    /// `/api/` as above, `/office/` behind the access list `office` and the
    /// CORS policy `app`, both sharing the limit `one`.
    fn policy_snapshot() -> Arc<Snapshot> {
        snapshot(
            r#"
[[route]]
prefix = "/office/"
upstream = "api"
rate_limit = "one"
cors = "app"
access = "office"
[cors.app]
allow_origins = ["https://app.example.com", "https://*.example.org"]
allow_methods = ["GET", "PUT"]
allow_headers = ["Content-Type"]
allow_credentials = true
max_age = "1m"
[access.office]
allow = ["10.0.0.0/8", "192.0.2.7"]
deny = ["10.9.0.0/16"]
"#,
        )
    }

    fn decide_from(snapshot: &Arc<Snapshot>, head: &RequestHeader, ip: &str) -> (Decision, Ctx) {
        let mut ctx = Ctx::new();
        ctx.snapshot = Some(snapshot.clone());
        ctx.client_ip = ip.parse().ok();
        let d = run(&Request::new(head, None), snapshot, &mut ctx);
        (d, ctx)
    }

    #[test]
    fn access_lists_deny_first_then_allow_only_the_listed() {
        let snap = policy_snapshot();
        let h = head("GET /office/x", &[("host", "a")]);
        for (ip, expected) in [
            ("10.1.2.3", None),
            ("192.0.2.7", None),
            ("10.9.0.1", Some(403)),
            ("192.0.2.8", Some(403)),
            ("::ffff:10.1.2.3", None),
            ("not an address", Some(403)),
        ] {
            let snap = Arc::new(Snapshot::build((*snap.config).clone(), None));
            let (d, _) = decide_from(&snap, &h, ip);
            assert_eq!(status(&d), expected, "{ip}: {d:?}");
        }
    }

    #[test]
    fn a_refused_client_spends_no_rate_limit_token() {
        let snap = policy_snapshot();
        let h = head("GET /office/x", &[("host", "a")]);
        for _ in 0..3 {
            let (d, ctx) = decide_from(&snap, &h, "192.0.2.8");
            assert_eq!(status(&d), Some(403));
            assert!(ctx.rate.is_none(), "no limit was asked");
        }
        let (d, _) = decide_from(&snap, &h, "10.1.1.1");
        assert!(matches!(d, Decision::Continue), "{d:?}");
    }

    #[test]
    fn preflights_are_answered_here_and_spend_no_token() {
        let snap = policy_snapshot();
        let preflight = |origin: &str| {
            head(
                "OPTIONS /office/x",
                &[
                    ("host", "a"),
                    ("origin", origin),
                    ("access-control-request-method", "PUT"),
                ],
            )
        };
        for _ in 0..3 {
            let (d, ctx) = decide_from(&snap, &preflight("https://app.example.com"), "10.1.1.1");
            let headers = match d {
                Decision::Preflight(headers) => headers,
                other => panic!("{other:?}"),
            };
            let get = |n: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k == n)
                    .and_then(|(_, v)| v.to_str().ok())
            };
            assert_eq!(
                get("access-control-allow-origin"),
                Some("https://app.example.com")
            );
            assert_eq!(get("access-control-allow-methods"), Some("GET, PUT"));
            assert_eq!(get("access-control-allow-headers"), Some("Content-Type"));
            assert_eq!(get("access-control-allow-credentials"), Some("true"));
            assert_eq!(get("access-control-max-age"), Some("60"));
            assert_eq!(get("vary"), Some("Origin"));
            assert!(ctx.rate.is_none() && ctx.pool.is_none());
        }
        let (d, _) = decide_from(&snap, &preflight("https://a.b.example.org"), "10.1.1.1");
        assert!(matches!(d, Decision::Preflight(_)), "{d:?}");
        let (d, _) = decide_from(
            &snap,
            &preflight("https://example.org.evil.com"),
            "10.1.1.1",
        );
        assert_eq!(status(&d), Some(403));
        // The access list comes first.
        let (d, _) = decide_from(&snap, &preflight("https://app.example.com"), "192.0.2.8");
        assert_eq!(status(&d), Some(403));
        // A plain OPTIONS (no Access-Control-Request-Method) goes upstream.
        let plain = head(
            "OPTIONS /office/x",
            &[("host", "a"), ("origin", "https://app.example.com")],
        );
        let (d, ctx) = decide_from(&snap, &plain, "10.1.1.1");
        assert!(matches!(d, Decision::Continue), "{d:?}");
        assert!(ctx.pool.is_some());
    }

    #[test]
    fn routes_without_policies_ignore_preflights_and_addresses() {
        let snap = policy_snapshot();
        let h = head(
            "OPTIONS /api/x",
            &[
                ("host", "a"),
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "PUT"),
            ],
        );
        let (d, ctx) = decide_from(&snap, &h, "192.0.2.8");
        assert!(matches!(d, Decision::Continue), "{d:?}");
        assert!(ctx.pool.is_some());
    }
}
