//! Conditional and range requests (RFC 9110 §13 and §14), as pure functions
//! of the request headers and one representation's validators.
//!
//! Order of evaluation (RFC 9110 §13.2.2): `If-Match`, else
//! `If-Unmodified-Since` (412); then `If-None-Match`, else `If-Modified-Since`
//! (304); then `Range` with `If-Range` (206 or 416, or 200 when `If-Range`
//! does not match).
//!
//! Choices where the RFC leaves room:
//! - `If-Modified-Since` gives 304 when the file is not newer than the date
//!   (RFC 9110), not only on an exact match (Nginx's default `exact`).
//! - One range is served as 206; several ranges (`bytes=0-1,5-6`) get the
//!   whole file with 200 rather than `multipart/byteranges`, which browsers
//!   and download tools do not need.
//! - A syntactically invalid `Range` is ignored (200), an unsatisfiable one
//!   gives 416.

use http::header::{self, HeaderMap};

/// The validators of the representation being served.
#[derive(Debug, Clone, Copy)]
pub(super) struct Validators<'a> {
    /// Strong entity tag with its quotes, e.g. `"65f1c2a0.0-400"`.
    pub(super) etag: &'a str,
    /// Modification time, whole seconds since the epoch.
    pub(super) modified: u64,
}

/// What the preconditions decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Precondition {
    /// Serve the representation (maybe a range of it).
    Proceed,
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// Evaluates `If-Match`, `If-Unmodified-Since`, `If-None-Match` and
/// `If-Modified-Since` for a GET or HEAD.
pub(super) fn preconditions(headers: &HeaderMap, v: Validators<'_>) -> Precondition {
    if headers.contains_key(header::IF_MATCH) {
        if !any_tag_matches(headers, header::IF_MATCH, v.etag, Comparison::Strong) {
            return Precondition::Failed;
        }
    } else if let Some(date) = date_header(headers, header::IF_UNMODIFIED_SINCE) {
        if v.modified > date {
            return Precondition::Failed;
        }
    }
    if headers.contains_key(header::IF_NONE_MATCH) {
        if any_tag_matches(headers, header::IF_NONE_MATCH, v.etag, Comparison::Weak) {
            return Precondition::NotModified;
        }
    } else if let Some(date) = date_header(headers, header::IF_MODIFIED_SINCE) {
        if v.modified <= date {
            return Precondition::NotModified;
        }
    }
    Precondition::Proceed
}

/// The part of the representation to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Span {
    /// All of it, 200.
    Whole,
    /// Bytes `start..=end`, 206.
    Part { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Decides from `Range` and `If-Range` which part of a `len`-byte
/// representation to send.
pub(super) fn span(headers: &HeaderMap, len: u64, v: Validators<'_>) -> Span {
    let mut ranges = headers.get_all(header::RANGE).iter();
    let (Some(range), None) = (ranges.next(), ranges.next()) else {
        return Span::Whole;
    };
    if !if_range_holds(headers, v) {
        return Span::Whole;
    }
    match range.to_str() {
        Ok(text) => parse_range(text, len),
        Err(_) => Span::Whole,
    }
}

/// `If-Range` absent, or naming this exact representation (strong ETag match,
/// or a date equal to its `Last-Modified`).
fn if_range_holds(headers: &HeaderMap, v: Validators<'_>) -> bool {
    let Some(value) = headers.get(header::IF_RANGE) else {
        return true;
    };
    let Ok(text) = value.to_str() else {
        return false;
    };
    let text = text.trim();
    if text.starts_with('"') || text.starts_with("W/") {
        return text == v.etag;
    }
    httpdate::parse_http_date(text)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .is_some_and(|d| d.as_secs() == v.modified)
}

/// Parses one `Range` value against a representation of `len` bytes.
pub(super) fn parse_range(text: &str, len: u64) -> Span {
    let text = text.trim();
    let Some((unit, set)) = text.split_once('=') else {
        return Span::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Span::Whole;
    }
    let mut specs = set.split(',').map(str::trim).filter(|s| !s.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else {
        // No range, or several: serve the whole representation.
        return Span::Whole;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return Span::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // Suffix range: the last N bytes.
        let Some(n) = digits(last) else {
            return Span::Whole;
        };
        if n == 0 || len == 0 {
            return Span::Unsatisfiable;
        }
        return Span::Part {
            start: len.saturating_sub(n),
            end: len - 1,
        };
    }
    let Some(start) = digits(first) else {
        return Span::Whole;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match digits(last) {
            Some(end) if end >= start => end,
            _ => return Span::Whole,
        }
    };
    if start >= len {
        return Span::Unsatisfiable;
    }
    Span::Part {
        start,
        end: end.min(len - 1),
    }
}

/// A run of ASCII digits; values too large for `u64` saturate.
fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    /// Both tags strong and equal (`If-Match`).
    Strong,
    /// Equal once `W/` is ignored (`If-None-Match`).
    Weak,
}

/// Whether any tag of every `name` header matches `ours`; `*` matches.
fn any_tag_matches(
    headers: &HeaderMap,
    name: header::HeaderName,
    ours: &str,
    cmp: Comparison,
) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|value| tag_list_matches(value.as_bytes(), ours.as_bytes(), cmp))
}

/// Scans an entity-tag list (`"a", W/"b"` or `*`).
fn tag_list_matches(mut list: &[u8], ours: &[u8], cmp: Comparison) -> bool {
    loop {
        while let [b' ' | b'\t' | b',', rest @ ..] = list {
            list = rest;
        }
        if list.is_empty() {
            return false;
        }
        if let [b'*', rest @ ..] = list {
            if rest.iter().all(|b| matches!(b, b' ' | b'\t' | b',')) {
                return true;
            }
        }
        let (weak, rest) = match list {
            [b'W', b'/', rest @ ..] => (true, rest),
            _ => (false, list),
        };
        let tag_end = match rest {
            [b'"', inner @ ..] => inner.iter().position(|&b| b == b'"').map(|i| i + 2),
            _ => None,
        };
        match tag_end {
            Some(end) => {
                let tag = &rest[..end];
                if tag == ours && !(weak && cmp == Comparison::Strong) {
                    return true;
                }
                list = &rest[end..];
            }
            None => {
                // Not an entity tag: skip to the next list element.
                match list.iter().position(|&b| b == b',') {
                    Some(i) => list = &list[i + 1..],
                    None => return false,
                }
            }
        }
    }
}

/// A header holding an HTTP-date, in seconds since the epoch; invalid dates
/// are ignored (RFC 9110 §13.1.3).
fn date_header(headers: &HeaderMap, name: header::HeaderName) -> Option<u64> {
    let text = headers.get(name)?.to_str().ok()?;
    let time = httpdate::parse_http_date(text.trim()).ok()?;
    Some(time.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const TAG: &str = "\"5f-100\"";
    const V: Validators<'static> = Validators {
        etag: TAG,
        modified: 1_700_000_000,
    };

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                name.clone(),
                HeaderValue::from_str(value).unwrap_or_else(|e| panic!("{e}")),
            );
        }
        h
    }

    #[test]
    fn entity_tag_lists() {
        let m = |list: &str, cmp| tag_list_matches(list.as_bytes(), TAG.as_bytes(), cmp);
        assert!(m(TAG, Comparison::Weak));
        assert!(m("W/\"5f-100\"", Comparison::Weak));
        assert!(!m("W/\"5f-100\"", Comparison::Strong));
        assert!(m("\"x\", \"5f-100\"", Comparison::Weak));
        assert!(m("  *  ", Comparison::Strong));
        assert!(!m("\"5f-10\"", Comparison::Weak));
        assert!(!m("5f-100", Comparison::Weak));
        assert!(!m("\"5f-100", Comparison::Weak));
        assert!(m("garbage, \"5f-100\"", Comparison::Weak));
        assert!(!m("", Comparison::Weak));
        assert!(!m("*x", Comparison::Weak));
    }

    #[test]
    fn if_none_match_wins_over_if_modified_since() {
        let later = httpdate::fmt_http_date(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
        );
        let h = headers(&[
            (header::IF_NONE_MATCH, "\"other\""),
            (header::IF_MODIFIED_SINCE, &later),
        ]);
        assert_eq!(preconditions(&h, V), Precondition::Proceed);
        let h = headers(&[(header::IF_MODIFIED_SINCE, &later)]);
        assert_eq!(preconditions(&h, V), Precondition::NotModified);
        let h = headers(&[(header::IF_MODIFIED_SINCE, "not a date")]);
        assert_eq!(preconditions(&h, V), Precondition::Proceed);
    }

    #[test]
    fn if_match_and_if_unmodified_since() {
        assert_eq!(
            preconditions(&headers(&[(header::IF_MATCH, "\"x\"")]), V),
            Precondition::Failed
        );
        assert_eq!(
            preconditions(&headers(&[(header::IF_MATCH, TAG)]), V),
            Precondition::Proceed
        );
        let earlier = httpdate::fmt_http_date(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000),
        );
        let h = headers(&[(header::IF_UNMODIFIED_SINCE, &earlier)]);
        assert_eq!(preconditions(&h, V), Precondition::Failed);
    }

    #[test]
    fn ranges() {
        assert_eq!(
            parse_range("bytes=0-9", 100),
            Span::Part { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range("bytes=90-", 100),
            Span::Part { start: 90, end: 99 }
        );
        assert_eq!(
            parse_range("bytes=-10", 100),
            Span::Part { start: 90, end: 99 }
        );
        assert_eq!(
            parse_range("bytes=-1000", 100),
            Span::Part { start: 0, end: 99 }
        );
        assert_eq!(
            parse_range("bytes=50-99999999999999999999999", 100),
            Span::Part { start: 50, end: 99 }
        );
        assert_eq!(
            parse_range("Bytes = 1-1 ,", 100),
            Span::Part { start: 1, end: 1 }
        );
        assert_eq!(parse_range("bytes=100-", 100), Span::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Span::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Span::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Span::Whole);
        assert_eq!(parse_range("bytes=9-1", 100), Span::Whole);
        assert_eq!(parse_range("items=0-1", 100), Span::Whole);
        assert_eq!(parse_range("bytes=a-b", 100), Span::Whole);
        assert_eq!(parse_range("bytes=-", 100), Span::Whole);
        assert_eq!(parse_range("bytes=+1-2", 100), Span::Whole);
        assert_eq!(parse_range("bytes", 100), Span::Whole);
    }

    #[test]
    fn if_range() {
        let date = httpdate::fmt_http_date(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(V.modified),
        );
        let part = Span::Part { start: 0, end: 0 };
        let with =
            |value: &str| headers(&[(header::RANGE, "bytes=0-0"), (header::IF_RANGE, value)]);
        assert_eq!(span(&with(TAG), 10, V), part);
        assert_eq!(span(&with(&date), 10, V), part);
        assert_eq!(span(&with("\"old\""), 10, V), Span::Whole);
        assert_eq!(span(&with("W/\"5f-100\""), 10, V), Span::Whole);
        assert_eq!(
            span(&with("Mon, 01 Jan 2001 00:00:00 GMT"), 10, V),
            Span::Whole
        );
    }
}
