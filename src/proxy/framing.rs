//! Checks of the request head that Pingora's parser lets through but a
//! backend or another proxy could read differently: framing (Content-Length
//! and Transfer-Encoding), line ends, the form of the request target. Pure
//! functions of the parsed head and, on HTTP/1, its raw bytes.

use pingora::http::RequestHeader;

/// Bytes of the request line and headers: exact on HTTP/1 (the raw head),
/// rebuilt from the parsed parts on HTTP/2.
pub(crate) fn head_size(req: &RequestHeader, raw: Option<&[u8]>) -> u64 {
    if let Some(raw) = raw {
        return raw.len() as u64;
    }
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
pub(crate) fn framing_problem(req: &RequestHeader, raw: Option<&[u8]>) -> Option<&'static str> {
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
    let Some(raw) = raw else {
        // HTTP/2: no request line, the `:path` is the target.
        return target_problem(req.raw_path());
    };
    // The target as sent: the parsed one has lost a fragment already.
    let target = raw.split(|&b| b == b' ').nth(1).unwrap_or_default();
    target_problem(target).or_else(|| raw_framing_problem(raw))
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

/// [`framing_problem`] on raw HTTP/1 head bytes: one pass over the line ends.
fn raw_framing_problem(raw: &[u8]) -> Option<&'static str> {
    let names_at = |start: usize, name: &[u8]| {
        raw.get(start..start + name.len())
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
            && raw.get(start + name.len()) == Some(&b':')
    };
    let (mut length, mut coding) = (false, false);
    let mut line_start = 0;
    for end in memchr::memchr_iter(b'\n', raw) {
        if end == 0 || raw[end - 1] != b'\r' {
            return Some("a line ended by a bare LF");
        }
        match raw.get(line_start) {
            Some(b'c' | b'C') => length |= names_at(line_start, b"content-length"),
            Some(b't' | b'T') => coding |= names_at(line_start, b"transfer-encoding"),
            _ => {}
        }
        line_start = end + 1;
    }
    if length && coding {
        return Some("both Content-Length and Transfer-Encoding");
    }
    None
}

/// Drops an `Upgrade: h2c` offer (with `HTTP2-Settings` and `Connection`):
/// the request is then served as the HTTP/1.1 request it also is.
pub(crate) fn strip_h2c_upgrade(req: &mut RequestHeader) {
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
