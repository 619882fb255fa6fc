//! CORS at the edge: whether a request's `Origin` is allowed by the route's
//! policy, the headers of a preflight answer (the `cors preflight` stage
//! answers it), and the headers added to every other answer of the route.
//!
//! Gatehouse is authoritative on a route with a policy: `Access-Control-*`
//! headers a backend sent are replaced by the policy's, so a backend cannot
//! widen what the edge allows. Every answer of such a route carries
//! `Vary: Origin`, so a cache never hands one origin's answer to another.
//! Routes without a policy are not touched.

use http::header::{self, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

use crate::config::{CorsPolicy, OriginPattern};

/// The headers a policy answer may carry (removed from a backend's answer).
const CORS_HEADERS: [HeaderName; 6] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
];

/// Whether `req` is a CORS preflight: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`.
pub(crate) fn is_preflight(req: &RequestHeader) -> bool {
    req.method == http::Method::OPTIONS
        && req.headers.contains_key(header::ORIGIN)
        && req
            .headers
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Whether `origin` (the `Origin` header's bytes) is allowed by `policy`.
pub(crate) fn origin_allowed(policy: &CorsPolicy, origin: &[u8]) -> bool {
    policy
        .allow_origins
        .iter()
        .any(|pattern| matches(pattern, origin))
}

fn matches(pattern: &OriginPattern, origin: &[u8]) -> bool {
    match pattern {
        OriginPattern::Any => true,
        OriginPattern::Exact(exact) => origin.eq_ignore_ascii_case(exact.as_bytes()),
        OriginPattern::Subdomains {
            scheme,
            suffix,
            port,
        } => {
            let Some(authority) = strip_prefix_ci(origin, scheme.as_bytes()) else {
                return false;
            };
            let Some(host) = strip_suffix_ci(authority, port.as_bytes()) else {
                return false;
            };
            let Some(labels) = strip_suffix_ci(host, suffix.as_bytes()) else {
                return false;
            };
            // One or more labels: `a` or `a.b`, never empty, never `a..b`.
            !labels.is_empty()
                && labels.first() != Some(&b'.')
                && labels.split(|&b| b == b'.').all(|l| {
                    !l.is_empty() && l.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-')
                })
        }
    }
}

fn strip_prefix_ci<'a>(text: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let (head, rest) = text.split_at_checked(prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then_some(rest)
}

fn strip_suffix_ci<'a>(text: &'a [u8], suffix: &[u8]) -> Option<&'a [u8]> {
    let (rest, tail) = text.split_at_checked(text.len().checked_sub(suffix.len())?)?;
    tail.eq_ignore_ascii_case(suffix).then_some(rest)
}

/// The `Access-Control-Allow-Origin` for an allowed `origin`: `*` for a `*`
/// policy (never with credentials: validation refuses that), else the origin.
fn allow_origin(policy: &CorsPolicy, origin: &HeaderValue) -> HeaderValue {
    if policy.any_origin && !policy.allow_credentials {
        HeaderValue::from_static("*")
    } else {
        origin.clone()
    }
}

/// The headers of the answer to a preflight from `origin`, or `None` when
/// the origin is not allowed (the stage answers 403 then).
pub(crate) fn preflight_headers(
    policy: &CorsPolicy,
    origin: &HeaderValue,
) -> Option<Vec<(HeaderName, HeaderValue)>> {
    if !origin_allowed(policy, origin.as_bytes()) {
        return None;
    }
    let mut out = vec![
        (
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            allow_origin(policy, origin),
        ),
        (
            header::ACCESS_CONTROL_ALLOW_METHODS,
            policy.allow_methods.clone(),
        ),
        (header::ACCESS_CONTROL_MAX_AGE, policy.max_age.clone()),
        (header::VARY, HeaderValue::from_static("Origin")),
    ];
    if let Some(h) = &policy.allow_headers {
        out.push((header::ACCESS_CONTROL_ALLOW_HEADERS, h.clone()));
    }
    if policy.allow_credentials {
        out.push((
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        ));
    }
    Some(out)
}

/// Adds the CORS headers of `policy` to the answer of `req` (not a
/// preflight: its answer has them already): `Vary: Origin` always, the
/// rest when the origin is allowed.
pub(crate) fn decorate(
    resp: &mut ResponseHeader,
    policy: &CorsPolicy,
    req: &RequestHeader,
) -> pingora::Result<()> {
    if resp
        .headers
        .contains_key(header::ACCESS_CONTROL_ALLOW_METHODS)
        && is_preflight(req)
    {
        // Gatehouse's own preflight answer.
        return Ok(());
    }
    for name in &CORS_HEADERS {
        resp.remove_header(name);
    }
    add_vary_origin(resp)?;
    let Some(origin) = req.headers.get(header::ORIGIN) else {
        return Ok(());
    };
    if !origin_allowed(policy, origin.as_bytes()) {
        return Ok(());
    }
    resp.insert_header(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        allow_origin(policy, origin),
    )?;
    if let Some(h) = &policy.expose_headers {
        resp.insert_header(header::ACCESS_CONTROL_EXPOSE_HEADERS, h.clone())?;
    }
    if policy.allow_credentials {
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true")?;
    }
    Ok(())
}

/// Appends `Origin` to `Vary` unless it is listed already (or `Vary: *`).
pub(crate) fn add_vary_origin(resp: &mut ResponseHeader) -> pingora::Result<()> {
    let listed = resp.headers.get_all(header::VARY).iter().any(|v| {
        v.as_bytes().split(|&b| b == b',').any(|t| {
            let t = t.trim_ascii();
            t == b"*" || t.eq_ignore_ascii_case(b"origin")
        })
    });
    if !listed {
        resp.append_header(header::VARY, "Origin")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::units::parse_origin as parse;

    fn policy(origins: &[&str], credentials: bool) -> CorsPolicy {
        CorsPolicy {
            name: "p".into(),
            allow_origins: origins.iter().map(|o| parse(o).unwrap()).collect(),
            any_origin: origins.contains(&"*"),
            allow_methods: HeaderValue::from_static("GET, POST"),
            allow_headers: Some(HeaderValue::from_static("Content-Type")),
            expose_headers: Some(HeaderValue::from_static("X-Request-Id")),
            allow_credentials: credentials,
            max_age: HeaderValue::from_static("600"),
        }
    }

    #[test]
    fn exact_origins_match_whole_and_case_insensitively() {
        let p = policy(&["https://app.example.com", "http://127.0.0.1:8080"], false);
        assert!(origin_allowed(&p, b"https://app.example.com"));
        assert!(origin_allowed(&p, b"HTTPS://APP.example.com"));
        assert!(origin_allowed(&p, b"http://127.0.0.1:8080"));
        for no in [
            &b"http://app.example.com"[..],
            b"https://app.example.com:8443",
            b"https://app.example.com.evil.com",
            b"https://app.example.co",
            b"http://127.0.0.1:80801",
            b"null",
            b"",
        ] {
            assert!(!origin_allowed(&p, no), "{}", String::from_utf8_lossy(no));
        }
    }

    #[test]
    fn suffix_patterns_match_labels_under_the_domain_with_that_scheme() {
        let p = policy(&["https://*.example.com"], false);
        assert!(origin_allowed(&p, b"https://app.example.com"));
        assert!(origin_allowed(&p, b"https://a.b-c.example.com"));
        assert!(origin_allowed(&p, b"https://App.Example.COM"));
        for no in [
            &b"https://example.com"[..],
            b"https://.example.com",
            b"https://a..example.com",
            b"https://example.com.evil.com",
            b"https://evilexample.com",
            b"https://app.example.com.evil.com",
            b"http://app.example.com",
            b"https://app.example.com:8443",
            b"https://evil.com/.example.com",
            b"https://a@b.example.com",
            b"https://a:b.example.com",
        ] {
            assert!(!origin_allowed(&p, no), "{}", String::from_utf8_lossy(no));
        }
        let with_port = policy(&["https://*.example.com:8443"], false);
        assert!(origin_allowed(&with_port, b"https://a.example.com:8443"));
        assert!(!origin_allowed(&with_port, b"https://a.example.com"));
    }

    #[test]
    fn preflights_echo_the_origin_or_say_star() {
        let origin = HeaderValue::from_static("https://app.example.com");
        let h = preflight_headers(&policy(&["https://app.example.com"], true), &origin).unwrap();
        let get = |n: &HeaderName| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(
            get(&header::ACCESS_CONTROL_ALLOW_ORIGIN),
            Some(origin.clone())
        );
        assert_eq!(
            get(&header::ACCESS_CONTROL_ALLOW_CREDENTIALS)
                .as_ref()
                .map(|v| v.as_bytes()),
            Some(&b"true"[..])
        );
        assert_eq!(
            get(&header::ACCESS_CONTROL_MAX_AGE)
                .as_ref()
                .map(|v| v.as_bytes()),
            Some(&b"600"[..])
        );
        let star = preflight_headers(&policy(&["*"], false), &origin).unwrap();
        assert_eq!(star[0].1, "*");
        let other = HeaderValue::from_static("https://evil.com");
        assert!(preflight_headers(&policy(&["https://app.example.com"], false), &other).is_none());
    }

    #[test]
    fn actual_answers_get_headers_only_for_allowed_origins_and_always_vary() {
        let p = policy(&["https://app.example.com"], true);
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("origin", "https://app.example.com")
            .unwrap();
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("vary", "Accept-Encoding").unwrap();
        resp.insert_header("access-control-allow-origin", "*")
            .unwrap();
        decorate(&mut resp, &p, &req).unwrap();
        assert_eq!(
            resp.headers["access-control-allow-origin"],
            "https://app.example.com"
        );
        assert_eq!(resp.headers["access-control-allow-credentials"], "true");
        assert_eq!(
            resp.headers["access-control-expose-headers"],
            "X-Request-Id"
        );
        let vary: Vec<_> = resp.headers.get_all("vary").iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);

        req.insert_header("origin", "https://evil.com").unwrap();
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("access-control-allow-origin", "*")
            .unwrap();
        resp.insert_header("vary", "origin").unwrap();
        decorate(&mut resp, &p, &req).unwrap();
        assert!(!resp.headers.contains_key("access-control-allow-origin"));
        assert!(!resp
            .headers
            .contains_key("access-control-allow-credentials"));
        assert_eq!(resp.headers.get_all("vary").iter().count(), 1);
    }
}
