//! Checks of the policies routes attach: `[cors.NAME]` and `[access.NAME]`;
//! and of `[compression]`, which routes may opt out of.

use http::header::{HeaderName, HeaderValue};

use super::Checker;
use crate::config::defaults::{
    DEFAULT_COMPRESSION_MIN_SIZE, DEFAULT_COMPRESSION_TYPES, DEFAULT_CORS_MAX_AGE,
    DEFAULT_CORS_METHODS,
};
use crate::config::error::KeyPath;
use crate::config::file;
use crate::config::model::{
    AccessList, Algorithm, Compression, CorsPolicy, MediaRange, OriginPattern,
};
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

/// `[compression]`: `None` when `enabled = false` (the other keys are still checked).
pub(super) fn check_compression(
    c: &mut Checker,
    s: &file::CompressionSection,
) -> Option<Compression> {
    let p = KeyPath::of(&["compression"]);
    let mut algorithms = Vec::new();
    match &s.algorithms {
        None => algorithms.extend(Algorithm::ALL),
        Some(list) => {
            if list.is_empty() {
                c.problem(
                    p.key("algorithms"),
                    "needs at least one of \"zstd\", \"br\", \"gzip\" (or set enabled = false)",
                );
            }
            for (i, name) in list.iter().enumerate() {
                match Algorithm::ALL.into_iter().find(|a| a.token() == name) {
                    Some(a) if algorithms.contains(&a) => c.problem(
                        p.key("algorithms").index(i),
                        format!("{name:?} is listed twice"),
                    ),
                    Some(a) => algorithms.push(a),
                    None => c.problem(
                        p.key("algorithms").index(i),
                        format!("{name:?} is not one of \"zstd\", \"br\", \"gzip\""),
                    ),
                }
            }
        }
    }
    let min_size = c.size(
        p.key("min_size"),
        s.min_size.as_deref(),
        DEFAULT_COMPRESSION_MIN_SIZE,
    );
    let defaults: Vec<String> = DEFAULT_COMPRESSION_TYPES
        .iter()
        .map(|t| t.to_string())
        .collect();
    let names = s.types.as_ref().unwrap_or(&defaults);
    let mut types = Vec::new();
    for (i, text) in names.iter().enumerate() {
        match media_range(text) {
            Some(range) => types.push(range),
            None => c.problem(
                p.key("types").index(i),
                format!("{text:?} is not a media type (\"type/subtype\" or \"type/*\")"),
            ),
        }
    }
    s.enabled.unwrap_or(true).then_some(Compression {
        algorithms,
        min_size,
        types,
    })
}

/// `"*/*"`, `"text/*"` or `"application/json"` (no parameters), any case.
fn media_range(text: &str) -> Option<MediaRange> {
    let lower = text.trim().to_ascii_lowercase();
    let (top, sub) = lower.split_once('/')?;
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match (top, sub) {
        ("*", "*") => Some(MediaRange::Any),
        (top, "*") if token(top) => Some(MediaRange::Type(top.to_string())),
        (top, sub) if token(top) && token(sub) => Some(MediaRange::Exact(lower.clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_ranges() {
        assert_eq!(media_range("*/*"), Some(MediaRange::Any));
        assert_eq!(media_range("Text/*"), Some(MediaRange::Type("text".into())));
        assert_eq!(
            media_range("application/vnd.api+json"),
            Some(MediaRange::Exact("application/vnd.api+json".into()))
        );
        for bad in [
            "text",
            "*/json",
            "text/",
            "/json",
            "text/html; charset=utf-8",
            "a/b/c",
        ] {
            assert_eq!(media_range(bad), None, "{bad}");
        }
        let text = MediaRange::Type("text".into());
        assert!(text.matches("text/html"));
        assert!(!text.matches("textual/html"));
        assert!(!text.matches("application/json"));
    }
}
