//! Checks of the request head that Pingora's parser lets through but a
//! backend or another proxy could read differently: framing (Content-Length
//! and Transfer-Encoding), line ends, the form of the request target. Pure
//! functions of the parsed head and, on HTTP/1, its raw bytes.

use pingora::http::{FramingField, RequestHeader};

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
///
/// `lines` is [`raw_lines`] of `raw` (the one pass over the raw head, made
/// once per request by [`super::stages::Request::new`]).
pub(crate) fn framing_problem(
    req: &RequestHeader,
    raw: Option<&[u8]>,
    lines: Option<RawLines>,
) -> Option<&'static str> {
    // HTTP/1: a parsed header's name is a raw line's name, so a head without
    // a `Content-Length` or `Transfer-Encoding` line (the usual request)
    // needs no lookup of either.
    let (has_length, has_coding) = match lines {
        Some(RawLines::Scanned { length, coding, .. }) => (length, coding),
        // A bare LF stopped the pass, or HTTP/2: look both up.
        Some(RawLines::BareLf) | None => (true, true),
    };
    if has_length {
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
    }
    // The only transfer coding a request may use here is `chunked` alone:
    // others would be dropped on the way upstream without decoding the body.
    if has_coding {
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
    }
    let (Some(raw), Some(lines)) = (raw, lines) else {
        // HTTP/2: no request line, the `:path` is the target.
        return target_problem(req.raw_path());
    };
    // The target as sent: the parsed one has lost a fragment already.
    let target = raw.split(|&b| b == b' ').nth(1).unwrap_or_default();
    target_problem(target).or(lines.problem())
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

/// What one pass over the line ends of a raw HTTP/1 head found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawLines {
    /// A line ended by a bare LF (the pass stopped there).
    BareLf,
    /// Every line ends in CRLF; whether a `Content-Length` line and a
    /// `Transfer-Encoding` line are there, and which of the fields Gatehouse
    /// reads itself ([`Sent`]) have a line.
    Scanned {
        length: bool,
        coding: bool,
        sent: Sent,
    },
}

/// Which of the request fields Gatehouse reads or replaces itself
/// (`X-Request-Id` and the forwarding fields) the client may have sent: a
/// field without a line in the raw HTTP/1 head is not in the parsed one, so
/// it is not looked up or removed (each hashes the custom name: ~150
/// instructions, issue 13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent(u8);

impl Sent {
    /// Nothing known (HTTP/2, or a pass stopped by a bare LF): look up.
    pub const UNKNOWN: Sent = Sent(
        Self::REQUEST_ID
            | Self::FORWARDED_FOR
            | Self::REAL_IP
            | Self::FORWARDED_PROTO
            | Self::FORWARDED_HOST,
    );
    /// None of them sent.
    pub const NONE: Sent = Sent(0);
    const REQUEST_ID: u8 = 1;
    const FORWARDED_FOR: u8 = 2;
    const REAL_IP: u8 = 4;
    const FORWARDED_PROTO: u8 = 8;
    const FORWARDED_HOST: u8 = 16;

    /// Whether the client may have sent `X-Request-Id`.
    pub fn request_id(self) -> bool {
        self.0 & Self::REQUEST_ID != 0
    }

    /// Whether the client may have sent `X-Forwarded-For`.
    pub fn forwarded_for(self) -> bool {
        self.0 & Self::FORWARDED_FOR != 0
    }

    /// Whether the client may have sent `X-Real-IP`.
    pub fn real_ip(self) -> bool {
        self.0 & Self::REAL_IP != 0
    }

    /// Whether the client may have sent `X-Forwarded-Proto`.
    pub fn forwarded_proto(self) -> bool {
        self.0 & Self::FORWARDED_PROTO != 0
    }

    /// Whether the client may have sent `X-Forwarded-Host`.
    pub fn forwarded_host(self) -> bool {
        self.0 & Self::FORWARDED_HOST != 0
    }
}

impl RawLines {
    /// The fields of [`Sent`] the head may have.
    pub(crate) fn sent(self) -> Sent {
        match self {
            RawLines::Scanned { sent, .. } => sent,
            RawLines::BareLf => Sent::UNKNOWN,
        }
    }

    /// The framing problem these lines are, if any.
    fn problem(self) -> Option<&'static str> {
        match self {
            RawLines::BareLf => Some("a line ended by a bare LF"),
            RawLines::Scanned {
                length: true,
                coding: true,
                ..
            } => Some("both Content-Length and Transfer-Encoding"),
            RawLines::Scanned { .. } => None,
        }
    }
}

/// One pass over the line ends of raw HTTP/1 head bytes.
pub(crate) fn raw_lines(raw: &[u8]) -> RawLines {
    let names_at = |start: usize, name: &[u8]| {
        raw.get(start..start + name.len())
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
            && raw.get(start + name.len()) == Some(&b':')
    };
    let (mut length, mut coding) = (false, false);
    let mut sent = Sent::NONE;
    let mut line_start = 0;
    for end in memchr::memchr_iter(b'\n', raw) {
        if end == 0 || raw[end - 1] != b'\r' {
            return RawLines::BareLf;
        }
        match raw.get(line_start) {
            Some(b'c' | b'C') => length |= names_at(line_start, b"content-length"),
            Some(b't' | b'T') => coding |= names_at(line_start, b"transfer-encoding"),
            Some(b'x' | b'X') => {
                sent.0 |= [
                    (b"x-request-id".as_slice(), Sent::REQUEST_ID),
                    (b"x-forwarded-for", Sent::FORWARDED_FOR),
                    (b"x-real-ip", Sent::REAL_IP),
                    (b"x-forwarded-proto", Sent::FORWARDED_PROTO),
                    (b"x-forwarded-host", Sent::FORWARDED_HOST),
                ]
                .into_iter()
                .find(|(name, _)| names_at(line_start, name))
                .map_or(0, |(_, bit)| bit);
            }
            _ => {}
        }
        line_start = end + 1;
    }
    RawLines::Scanned {
        length,
        coding,
        sent,
    }
}

/// Drops an `Upgrade: h2c` offer (with `HTTP2-Settings` and `Connection`):
/// the request is then served as the HTTP/1.1 request it also is.
pub(crate) fn strip_h2c_upgrade(req: &mut RequestHeader) {
    // A parsed HTTP/1 head records that it has no `Upgrade` (the usual
    // request): no lookup then.
    if req.lacks(FramingField::Upgrade) {
        return;
    }
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

    /// [`framing_problem`] with the pass over `raw` made here.
    fn problem(req: &RequestHeader, raw: Option<&[u8]>) -> Option<&'static str> {
        framing_problem(req, raw, raw.map(raw_lines))
    }

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
    fn problems_are_found_with_the_raw_head_in_the_same_order() {
        let mut req = RequestHeader::build("POST", b"/", None).unwrap();
        req.insert_header("content-length", "1,1").unwrap();
        let raw = b"POST / HTTP/1.1\r\nContent-Length: 1,1\r\n\r\n";
        assert_eq!(
            problem(&req, Some(raw)),
            Some("a Content-Length that is not a plain number")
        );
        let mut req = RequestHeader::build("POST", b"/", None).unwrap();
        req.insert_header("transfer-encoding", "gzip").unwrap();
        let raw = b"POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n";
        assert_eq!(
            problem(&req, Some(raw)),
            Some("a Transfer-Encoding other than chunked")
        );
        let req = RequestHeader::build("GET", b"/", None).unwrap();
        let ok = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(problem(&req, Some(ok)), None);
        let lf = b"GET / HTTP/1.1\nHost: a\r\n\r\n";
        assert_eq!(problem(&req, Some(lf)), Some("a line ended by a bare LF"));
        let fragment = b"GET /#x HTTP/1.1\nHost: a\r\n\r\n";
        assert_eq!(
            problem(&req, Some(fragment)),
            Some("a fragment in the request target"),
            "the target's problem first, as before"
        );
    }

    #[test]
    fn ambiguous_framing_is_found_in_raw_heads() {
        let ok = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(raw_lines(ok).problem(), None);
        let both = b"POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 2\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(raw_lines(both).problem().is_some());
        let lf = b"GET / HTTP/1.1\nHost: a\r\n\r\n";
        assert!(raw_lines(lf).problem().is_some());
        let lookalike = b"GET / HTTP/1.1\r\nX-Content-Length: 1\r\nTransfer-Encoding-X: y\r\n\r\n";
        assert_eq!(raw_lines(lookalike).problem(), None);
    }

    #[test]
    fn the_pass_records_which_fields_gatehouse_reads_were_sent() {
        let none = raw_lines(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Hosts: b\r\n\r\n").sent();
        assert_eq!(none, Sent::NONE);
        let both =
            raw_lines(b"GET / HTTP/1.1\r\nx-request-id: 1\r\nX-FORWARDED-FOR: 10.0.0.1\r\n\r\n")
                .sent();
        assert!(both.request_id() && both.forwarded_for());
        assert!(!both.real_ip() && !both.forwarded_proto() && !both.forwarded_host());
        let rest = raw_lines(
            b"GET / HTTP/1.1\r\nX-Real-Ip: 1\r\nx-forwarded-PROTO: http\r\nX-Forwarded-Host: h\r\n\r\n",
        )
        .sent();
        assert!(rest.real_ip() && rest.forwarded_proto() && rest.forwarded_host());
        assert!(!rest.request_id() && !rest.forwarded_for());
        // A name that only starts like one of them is not it.
        let lookalike = raw_lines(
            b"GET / HTTP/1.1\r\nX-Request-Ids: 1\r\nX-Forwarded-For-X: 2\r\nX-Real-IPs: 3\r\n\r\n",
        )
        .sent();
        assert_eq!(lookalike, Sent::NONE);
        // A bare LF stops the pass: nothing is known.
        let lf = raw_lines(b"GET / HTTP/1.1\nX-Request-Id: 1\r\n\r\n").sent();
        assert_eq!(lf, Sent::UNKNOWN);
    }
}
