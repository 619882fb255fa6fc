//! Checks of the policies routes attach: `[cors.NAME]` and `[access.NAME]`.

use http::header::{HeaderName, HeaderValue};

use super::Checker;
use crate::config::defaults::{DEFAULT_CORS_MAX_AGE, DEFAULT_CORS_METHODS};
use crate::config::error::KeyPath;
use crate::config::file;
use crate::config::model::{AccessList, CorsPolicy, OriginPattern};
use crate::config::units::{parse_cidr, parse_origin};

pub(super) fn check_cors(c: &mut Checker, name: &str, s: &file::CorsSection) -> CorsPolicy {
    let p = KeyPath::of(&["cors", name]);
    let credentials = s.allow_credentials.unwrap_or(false);
    if s.allow_origins.is_empty() {
        c.problem(p.key("allow_origins"), "needs at least one origin");
    }
    let mut allow_origins = Vec::new();
    for (i, text) in s.allow_origins.iter().enumerate() {
        match parse_origin(text) {
            Ok(OriginPattern::Any) if credentials => c.problem(
                p.key("allow_origins").index(i),
                "\"*\" cannot be used with allow_credentials = true (browsers refuse it): list the origins",
            ),
            Ok(pattern) => allow_origins.push(pattern),
            Err(msg) => c.problem(p.key("allow_origins").index(i), msg),
        }
    }
    let any_origin = allow_origins.contains(&OriginPattern::Any);
    if any_origin && allow_origins.len() > 1 {
        c.problem(
            p.key("allow_origins"),
            "\"*\" already allows every origin: list nothing else with it",
        );
    }
    let default_methods: Vec<String> = DEFAULT_CORS_METHODS.iter().map(|m| m.to_string()).collect();
    let methods = s.allow_methods.as_ref().unwrap_or(&default_methods);
    if methods.is_empty() {
        c.problem(p.key("allow_methods"), "needs at least one method");
    }
    let allow_methods = token_list(c, &p.key("allow_methods"), methods, credentials, |m| {
        http::Method::from_bytes(m.as_bytes()).is_ok()
    })
    .unwrap_or_else(|| HeaderValue::from_static(""));
    let is_header = |h: &str| HeaderName::from_bytes(h.as_bytes()).is_ok();
    let allow_headers = s
        .allow_headers
        .as_ref()
        .and_then(|hs| token_list(c, &p.key("allow_headers"), hs, credentials, is_header));
    let expose_headers = s
        .expose_headers
        .as_ref()
        .and_then(|hs| token_list(c, &p.key("expose_headers"), hs, credentials, is_header));
    let max_age = c.duration(p.key("max_age"), s.max_age.as_deref(), DEFAULT_CORS_MAX_AGE);
    CorsPolicy {
        name: name.to_string(),
        allow_origins,
        any_origin,
        allow_methods,
        allow_headers,
        expose_headers,
        allow_credentials: credentials,
        max_age: HeaderValue::from(max_age.as_secs()),
    }
}

/// Checks each entry with `valid` (or `"*"`, without credentials) and joins
/// them into one header value; `None` for an empty list.
fn token_list(
    c: &mut Checker,
    p: &KeyPath,
    list: &[String],
    credentials: bool,
    valid: impl Fn(&str) -> bool,
) -> Option<HeaderValue> {
    for (i, t) in list.iter().enumerate() {
        if t == "*" {
            if credentials {
                c.problem(
                    p.index(i),
                    "\"*\" is taken literally by browsers when allow_credentials = true: list the names",
                );
            }
        } else if !valid(t) {
            c.problem(p.index(i), format!("{t:?} is not a valid name"));
        }
    }
    if list.is_empty() {
        return None;
    }
    HeaderValue::from_str(&list.join(", ")).ok()
}

pub(super) fn check_access(c: &mut Checker, name: &str, s: &file::AccessSection) -> AccessList {
    let p = KeyPath::of(&["access", name]);
    let mut nets = |key: &str, list: &[String]| {
        let mut out = Vec::new();
        for (i, text) in list.iter().enumerate() {
            match parse_cidr(text) {
                Some(net) => out.push(net.trunc()),
                None => c.problem(
                    p.key(key).index(i),
                    format!("{text:?} is not an IP address or CIDR block"),
                ),
            }
        }
        out
    };
    let allow = nets("allow", &s.allow);
    let deny = nets("deny", &s.deny);
    AccessList {
        name: name.to_string(),
        allow,
        deny,
    }
}
