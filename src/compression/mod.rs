//! Compression of answers: `[compression]` applied to proxied answers on the
//! fly, and the rules static sites share (`static_files` compresses cached
//! files once, when loaded, and larger files on the fly).
//!
//! ```text
//!  response_filter      eligible?  status not 1xx/204/206, no Content-Range,
//!                       no Content-Encoding, no Cache-Control: no-transform,
//!                       type in `types` (never text/event-stream),
//!                       Content-Length unknown or ≥ min_size (and not 0)
//!                       └─ yes: Vary: Accept-Encoding (304s too)
//!                          coding from Accept-Encoding (accept.rs) unless the
//!                          request has Range or is HEAD's body
//!                          └─ Content-Encoding, no Content-Length, chunked on
//!                             HTTP/1 (HEAD too), no Accept-Ranges, ETag weak
//!  response_body_filter every piece through the encoder (encoder.rs); flushed
//!                       per piece when the length is unknown (streams)
//! ```
//!
//! When `[compression]` is absent or disabled, or the route says
//! `compression = false`, a request pays one `Option` check per filter.

pub mod accept;
pub mod encoder;

use http::header::{self, HeaderMap, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

pub use accept::Accepted;
pub use encoder::{compress, Encoder, Level};

use crate::config::Compression;

/// Never compressed, whatever `types` says: each event must reach the client
/// as it is sent, and EventSource clients gain little from it.
const EVENT_STREAM: &str = "text/event-stream";

/// Whether answers with this `Content-Type` are compressed.
pub fn compressible(policy: &Compression, content_type: &HeaderValue) -> bool {
    let Ok(text) = content_type.to_str() else {
        return false;
    };
    let essence = text.split(';').next().unwrap_or("").trim();
    // Types are short; no allocation for the usual lower-case ones.
    let lower;
    let essence = if essence.bytes().any(|b| b.is_ascii_uppercase()) {
        lower = essence.to_ascii_lowercase();
        lower.as_str()
    } else {
        essence
    };
    essence != EVENT_STREAM && policy.types.iter().any(|t| t.matches(essence))
}

/// Whether `Cache-Control` says `no-transform`.
pub fn no_transform(headers: &HeaderMap) -> bool {
    headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
        })
    })
}

/// Whether `Vary` already covers `Accept-Encoding` (or is `*`).
fn varies_by_encoding(headers: &HeaderMap) -> bool {
    headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',').any(|name| {
                let name = name.trim();
                name == "*" || name.eq_ignore_ascii_case("accept-encoding")
            })
        })
    })
}

/// `W/"x"` for a strong `"x"`; `None` for a value that is no entity tag.
pub fn weak_etag(etag: &HeaderValue) -> Option<HeaderValue> {
    let bytes = etag.as_bytes();
    if bytes.starts_with(b"W/") {
        return Some(etag.clone());
    }
    if bytes.len() < 2 || !bytes.starts_with(b"\"") || !bytes.ends_with(b"\"") {
        return None;
    }
    let mut weak = Vec::with_capacity(bytes.len() + 2);
    weak.extend_from_slice(b"W/");
    weak.extend_from_slice(bytes);
    HeaderValue::from_bytes(&weak).ok()
}

/// What `response_filter` decided for one proxied answer.
#[derive(Debug)]
pub enum Plan {
    /// Sent as it is.
    AsIs,
    /// Headers changed for an encoded answer without a body (HEAD).
    HeadersOnly(crate::config::Algorithm),
    /// Headers changed; the body goes through this encoder.
    Encode(Box<Encoder>),
}

/// Decides for a proxied answer and changes its headers accordingly.
pub fn plan_proxied(
    policy: &Compression,
    req: &RequestHeader,
    resp: &mut ResponseHeader,
) -> pingora::Result<Plan> {
    let status = resp.status.as_u16();
    if status < 200 || status == 204 || status == 206 {
        return Ok(Plan::AsIs);
    }
    let h = &resp.headers;
    if h.contains_key(header::CONTENT_RANGE)
        || h.contains_key(header::CONTENT_ENCODING)
        || no_transform(h)
        || !h
            .get(header::CONTENT_TYPE)
            .is_some_and(|t| compressible(policy, t))
    {
        return Ok(Plan::AsIs);
    }
    let length = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok());
    // An empty body stays empty (no encoder ever sees it).
    if length.is_some_and(|n| n < policy.min_size || n == 0) {
        return Ok(Plan::AsIs);
    }
    // The answer differs by Accept-Encoding from here on, for caches too.
    if !varies_by_encoding(&resp.headers) {
        resp.append_header(header::VARY, HeaderValue::from_static("Accept-Encoding"))?;
    }
    if status == 304 || req.headers.contains_key(header::RANGE) {
        return Ok(Plan::AsIs);
    }
    let Some(algorithm) = Accepted::parse(&req.headers).choose(&policy.algorithms, |_| true) else {
        return Ok(Plan::AsIs);
    };
    resp.insert_header(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(algorithm.token()),
    )?;
    resp.remove_header(&header::CONTENT_LENGTH);
    resp.remove_header(&header::ACCEPT_RANGES);
    // HTTP/1 framing without a length (Pingora's h2 codec drops it).
    resp.insert_header(
        header::TRANSFER_ENCODING,
        HeaderValue::from_static("chunked"),
    )?;
    if let Some(etag) = resp.headers.get(header::ETAG) {
        match weak_etag(etag) {
            Some(weak) => resp.insert_header(header::ETAG, weak)?,
            None => {
                resp.remove_header(&header::ETAG);
            }
        }
    }
    if req.method == http::Method::HEAD {
        return Ok(Plan::HeadersOnly(algorithm));
    }
    // A known length is a finite answer: let the encoder fill its blocks.
    // Without one it may be a stream: nothing waits for the next piece.
    let encoder = Encoder::new(algorithm, Level::Fast, length.is_none()).map_err(|e| {
        pingora::Error::because(pingora::ErrorType::InternalError, "starting an encoder", e)
    })?;
    Ok(Plan::Encode(Box::new(encoder)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Algorithm, MediaRange};

    fn policy() -> Compression {
        Compression {
            algorithms: Algorithm::ALL.to_vec(),
            min_size: 1024,
            types: vec![
                MediaRange::Type("text".into()),
                MediaRange::Exact("application/json".into()),
            ],
        }
    }

    fn req(accept: &str, range: bool) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("accept-encoding", accept).unwrap();
        if range {
            r.insert_header("range", "bytes=0-10").unwrap();
        }
        r
    }

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn get<'a>(r: &'a ResponseHeader, name: &str) -> Vec<&'a str> {
        r.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn types() {
        let p = policy();
        let ct = |s: &'static str| compressible(&p, &HeaderValue::from_static(s));
        assert!(ct("text/html"));
        assert!(ct("Text/HTML; charset=utf-8"));
        assert!(ct("application/json"));
        assert!(!ct("application/json-seq"));
        assert!(!ct("text/event-stream"));
        assert!(!ct("image/png"));
        assert!(!ct(""));
    }

    #[test]
    fn a_json_answer_is_encoded_with_the_headers_changed() {
        let mut r = resp(
            200,
            &[
                ("content-type", "application/json"),
                ("content-length", "5000"),
                ("etag", "\"v1\""),
                ("accept-ranges", "bytes"),
                ("vary", "Origin"),
            ],
        );
        let plan = plan_proxied(&policy(), &req("gzip, br", false), &mut r).unwrap();
        assert!(matches!(plan, Plan::Encode(e) if e.algorithm() == Algorithm::Brotli));
        assert_eq!(get(&r, "content-encoding"), ["br"]);
        assert_eq!(get(&r, "content-length"), Vec::<&str>::new());
        assert_eq!(get(&r, "accept-ranges"), Vec::<&str>::new());
        assert_eq!(get(&r, "transfer-encoding"), ["chunked"]);
        assert_eq!(get(&r, "etag"), ["W/\"v1\""]);
        assert_eq!(get(&r, "vary"), ["Origin", "Accept-Encoding"]);
    }

    #[test]
    fn what_is_left_alone() {
        let json = [("content-type", "application/json")];
        let p = policy();
        // (status, answer headers, request, whether Vary is added)
        type Case<'a> = (u16, Vec<(&'a str, &'a str)>, RequestHeader, bool);
        let cases: Vec<Case> = vec![
            (204, json.to_vec(), req("gzip", false), false),
            (206, json.to_vec(), req("gzip", false), false),
            (101, json.to_vec(), req("gzip", false), false),
            (
                200,
                vec![("content-type", "image/png")],
                req("gzip", false),
                false,
            ),
            (
                200,
                vec![("content-type", "text/event-stream")],
                req("gzip", false),
                false,
            ),
            (200, vec![], req("gzip", false), false),
            (
                200,
                [json[0], ("content-length", "1023")].to_vec(),
                req("gzip", false),
                false,
            ),
            (
                200,
                [json[0], ("content-encoding", "br")].to_vec(),
                req("gzip", false),
                false,
            ),
            (
                200,
                [json[0], ("cache-control", "public, No-Transform")].to_vec(),
                req("gzip", false),
                false,
            ),
            // Eligible, so Vary, but not encoded:
            (200, json.to_vec(), req("gzip", true), true),
            (200, json.to_vec(), req("deflate", false), true),
            (200, json.to_vec(), req("gzip;q=0", false), true),
            (304, json.to_vec(), req("gzip", false), true),
        ];
        for (status, headers, request, vary) in cases {
            let mut r = resp(status, &headers);
            let plan = plan_proxied(&p, &request, &mut r).unwrap();
            assert!(matches!(plan, Plan::AsIs), "{status} {headers:?}");
            assert!(!r.headers.contains_key("transfer-encoding"));
            let expect = if vary {
                vec!["Accept-Encoding"]
            } else {
                vec![]
            };
            assert_eq!(get(&r, "vary"), expect, "{status} {headers:?}");
        }
    }

    #[test]
    fn head_gets_the_same_headers() {
        let mut r = resp(200, &[("content-type", "text/html"), ("etag", "bad")]);
        let mut head = req("zstd", false);
        head.set_method(http::Method::HEAD);
        let plan = plan_proxied(&policy(), &head, &mut r).unwrap();
        assert!(matches!(plan, Plan::HeadersOnly(Algorithm::Zstd)));
        assert_eq!(get(&r, "content-encoding"), ["zstd"]);
        assert_eq!(get(&r, "transfer-encoding"), ["chunked"]);
        // Not an entity tag: dropped rather than passed on for other bytes.
        assert!(!r.headers.contains_key("etag"));
        // Vary already covering it is not repeated.
        let mut r = resp(
            200,
            &[
                ("content-type", "text/html"),
                ("vary", "accept-encoding, origin"),
            ],
        );
        let _ = plan_proxied(&policy(), &req("gzip", false), &mut r).unwrap();
        assert_eq!(get(&r, "vary"), ["accept-encoding, origin"]);
    }

    #[test]
    fn etags() {
        let weak = |s: &'static str| weak_etag(&HeaderValue::from_static(s));
        assert_eq!(weak("\"a\"").unwrap(), "W/\"a\"");
        assert_eq!(weak("W/\"a\"").unwrap(), "W/\"a\"");
        assert_eq!(weak("a"), None);
        assert_eq!(weak("\""), None);
    }
}
