//! Headers Gatehouse adds: the request id, the forwarding headers sent
//! upstream, and the headers added to every response.

use std::net::IpAddr;

use bytes::{BufMut, BytesMut};
use http::header::{HeaderName, HeaderValue};
use ipnet::IpNet;
use pingora::http::{RequestHeader, ResponseHeader};

pub use super::framing::Sent;
use crate::config::Config;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The request's host: the `Host` header, or the URI authority (HTTP/2).
pub fn request_host(req: &RequestHeader) -> Option<&str> {
    match req.headers.get(http::header::HOST) {
        Some(h) => h.to_str().ok(),
        None => req.uri.authority().map(|a| a.as_str()),
    }
}

/// Longest client-sent request id that is kept (bytes).
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The client's request id when it is 1 to 128 characters of `[A-Za-z0-9._:-]`,
/// else a new random one (32 hex digits).
///
/// A header value, so that the upstream request and the response take it
/// as a cheap clone (a kept id shares the bytes of the client's head).
pub fn request_id(sent: Option<&HeaderValue>) -> HeaderValue {
    if let Some(v) = sent {
        let b = v.as_bytes();
        if !b.is_empty()
            && b.len() <= MAX_REQUEST_ID_LEN
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
        {
            return v.clone();
        }
    }
    // A byte at a time (two digits), not a digit at a time: half the steps.
    let mut id = [0u8; 32];
    // 16 bytes always fit 32 digits.
    let _ = hex::encode_to_slice(fastrand::u128(..).to_be_bytes(), &mut id);
    // 32 hex digits are always a valid value.
    HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(&id))
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// A request id as text (ids are visible ASCII by construction).
pub fn request_id_str(id: &HeaderValue) -> &str {
    id.to_str().unwrap_or_default()
}

/// The client address: the TCP peer, unless the peer is a trusted proxy, in
/// which case the rightmost untrusted address of `X-Forwarded-For`.
pub fn client_ip(peer: Option<IpAddr>, xff: Option<&[u8]>, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if trusted.is_empty() || !is_trusted(&peer) {
        return Some(peer);
    }
    let Some(list) = xff.and_then(|v| std::str::from_utf8(v).ok()) else {
        return Some(peer);
    };
    let mut leftmost = None;
    for hop in list.rsplit(',') {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            // A garbled hop ends the chain we can believe.
            break;
        };
        if !is_trusted(&ip) {
            return Some(ip);
        }
        leftmost = Some(ip);
    }
    leftmost.or(Some(peer))
}

/// The request's host as a header value for `X-Forwarded-Host`: the `Host`
/// header (shared, not copied), or the URI authority (HTTP/2); `None` when
/// neither is usable text.
pub fn request_host_value(req: &RequestHeader) -> Option<HeaderValue> {
    match req.headers.get(http::header::HOST) {
        Some(h) => h.to_str().is_ok().then(|| h.clone()),
        None => req
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    }
}

/// Sets the forwarding headers on the request sent upstream.
///
/// They go on the HTTP/1 wire after the client's fields, written once into
/// one buffer (vendor patch 124, `set_h1_extra_fields`) instead of five
/// inserts into the header map, each hashing its name (issue 13). The
/// client's own copies are removed first, looked up only when its raw head
/// may have them (`sent`). Values are static, shared with the client's head
/// or written here: an address by hand, the previous `X-Forwarded-For` list
/// (the client's first such field) before the peer.
pub fn set_forwarding(
    req: &mut RequestHeader,
    client: Option<IpAddr>,
    peer: Option<IpAddr>,
    tls: bool,
    host: Option<HeaderValue>,
    request_id: &HeaderValue,
    sent: Sent,
) {
    if sent.real_ip() {
        req.remove_header(&X_REAL_IP);
    }
    let prev = match sent.forwarded_for() {
        true => req.remove_header(&X_FORWARDED_FOR),
        false => None,
    };
    if sent.forwarded_proto() {
        req.remove_header(&X_FORWARDED_PROTO);
    }
    if sent.forwarded_host() {
        req.remove_header(&X_FORWARDED_HOST);
    }
    if sent.request_id() {
        req.remove_header(&X_REQUEST_ID);
    }
    let prev = prev
        .as_ref()
        .map(|v| v.as_bytes())
        .filter(|v| !v.is_empty());
    let host = host.as_ref().map(|h| h.as_bytes());
    // Names, separators and two addresses of at most 39 bytes fit in 256.
    let mut fields = BytesMut::with_capacity(
        256 + prev.map_or(0, <[u8]>::len) + host.map_or(0, <[u8]>::len) + request_id.len(),
    );
    if let Some(ip) = client {
        fields.put_slice(b"X-Real-IP: ");
        put_ip(&mut fields, ip);
        fields.put_slice(b"\r\n");
    }
    if let Some(peer) = peer {
        fields.put_slice(b"X-Forwarded-For: ");
        if let Some(prev) = prev {
            fields.put_slice(prev);
            fields.put_slice(b", ");
        }
        put_ip(&mut fields, peer);
        fields.put_slice(b"\r\n");
    }
    fields.put_slice(match tls {
        true => b"X-Forwarded-Proto: https\r\n".as_slice(),
        false => b"X-Forwarded-Proto: http\r\n",
    });
    if let Some(host) = host {
        fields.put_slice(b"X-Forwarded-Host: ");
        fields.put_slice(host);
        fields.put_slice(b"\r\n");
    }
    fields.put_slice(b"X-Request-Id: ");
    fields.put_slice(request_id.as_bytes());
    fields.put_slice(b"\r\n");
    // Every value is a valid field value: an address, a value of the
    // client's head (no CR, LF or NUL after parsing) or the checked id.
    req.set_h1_extra_fields(fields.freeze());
}

/// `ip` in its text form.
fn put_ip(buf: &mut BytesMut, ip: IpAddr) {
    match ip {
        // Dotted decimal by hand into a stack buffer, then one copy: `fmt`
        // costs more than the rest of the header, and a `put_u8` per digit
        // checks the buffer's room each time.
        IpAddr::V4(v4) => {
            let mut text = [0u8; 15];
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    text[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    text[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                text[len] = b'0' + octet % 10;
                len += 1;
            }
            buf.put_slice(&text[..len]);
        }
        IpAddr::V6(_) => {
            use std::fmt::Write;
            // Writing to a BytesMut cannot fail.
            let _ = write!(buf, "{ip}");
        }
    }
}

/// Adds `[headers]`, HSTS (HTTPS only) and the request id to a response,
/// never replacing a header the response already has.
pub fn decorate(
    resp: &mut ResponseHeader,
    config: &Config,
    tls: bool,
    request_id: &HeaderValue,
) -> pingora::Result<()> {
    for (name, value) in &config.headers {
        if !resp.headers.contains_key(name) {
            resp.insert_header(name.clone(), value.clone())?;
        }
    }
    if tls {
        if let Some(hsts) = config.https.as_ref().and_then(|h| h.hsts.as_ref()) {
            if !resp
                .headers
                .contains_key(http::header::STRICT_TRANSPORT_SECURITY)
            {
                resp.insert_header(http::header::STRICT_TRANSPORT_SECURITY, hsts.clone())?;
            }
        }
    }
    resp.insert_header(X_REQUEST_ID, request_id.clone())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_safe() {
        let ok = HeaderValue::from_static("abc-123_x.y:z");
        assert_eq!(request_id(Some(&ok)), "abc-123_x.y:z");
        let spaces = HeaderValue::from_static("a b");
        assert_ne!(request_id(Some(&spaces)), "a b");
        let long = HeaderValue::from_str(&"a".repeat(129)).unwrap();
        let new = request_id(Some(&long));
        assert_eq!(new.len(), 32);
        assert!(request_id_str(&new)
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_ne!(request_id(None), request_id(None));
    }

    fn wire(req: &RequestHeader) -> String {
        let mut buf = Vec::new();
        req.header_to_h1_wire(&mut buf);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn addresses_are_written_as_displayed() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "127.0.0.1",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut buf = BytesMut::new();
            put_ip(&mut buf, ip);
            assert_eq!(&buf[..], ip.to_string().as_bytes());
        }
    }

    #[test]
    fn forwarding_fields_replace_the_clients_and_follow_its_fields() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("Host", "example.com").unwrap();
        req.insert_header("X-Forwarded-For", "203.0.113.9").unwrap();
        req.append_header("X-Forwarded-For", "198.51.100.1")
            .unwrap();
        req.insert_header("X-Real-IP", "1.1.1.1").unwrap();
        req.insert_header("X-Forwarded-Proto", "gopher").unwrap();
        req.insert_header("X-Forwarded-Host", "evil.test").unwrap();
        req.insert_header("X-Request-Id", "old").unwrap();
        let peer: IpAddr = "10.1.1.1".parse().unwrap();
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        let id = HeaderValue::from_static("abc");
        set_forwarding(
            &mut req,
            Some(client),
            Some(peer),
            false,
            None,
            &id,
            Sent::UNKNOWN,
        );
        // The client's copies are gone from the map; the new ones follow Host.
        assert_eq!(req.headers.len(), 1);
        assert_eq!(
            wire(&req),
            "Host: example.com\r\nX-Real-IP: 203.0.113.9\r\n\
             X-Forwarded-For: 203.0.113.9, 10.1.1.1\r\nX-Forwarded-Proto: http\r\n\
             X-Request-Id: abc\r\n"
        );

        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        let host = Some(HeaderValue::from_static("example.com"));
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        set_forwarding(
            &mut req,
            Some(v6),
            Some(peer),
            true,
            host,
            &id,
            Sent::UNKNOWN,
        );
        assert_eq!(
            wire(&req),
            "X-Real-IP: 2001:db8::7\r\nX-Forwarded-For: 10.1.1.1\r\n\
             X-Forwarded-Proto: https\r\nX-Forwarded-Host: example.com\r\n\
             X-Request-Id: abc\r\n"
        );
        // Set again (a retry builds the request anew from the client's): replaced.
        set_forwarding(&mut req, None, None, false, None, &id, Sent::UNKNOWN);
        assert_eq!(
            wire(&req),
            "X-Forwarded-Proto: http\r\nX-Request-Id: abc\r\n"
        );
    }

    #[test]
    fn xff_is_believed_only_from_trusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer_untrusted: IpAddr = "192.0.2.7".parse().unwrap();
        let peer_trusted: IpAddr = "10.1.1.1".parse().unwrap();
        let xff = b"203.0.113.9, 198.51.100.2, 10.2.2.2";
        assert_eq!(
            client_ip(Some(peer_untrusted), Some(xff), &trusted),
            Some(peer_untrusted)
        );
        assert_eq!(
            client_ip(Some(peer_trusted), Some(xff), &trusted),
            Some("198.51.100.2".parse().unwrap())
        );
        assert_eq!(
            client_ip(Some(peer_trusted), None, &trusted),
            Some(peer_trusted)
        );
        assert_eq!(
            client_ip(Some(peer_trusted), Some(b"10.3.3.3"), &trusted),
            Some("10.3.3.3".parse().unwrap())
        );
        assert_eq!(
            client_ip(Some(peer_trusted), Some(b"garbage"), &trusted),
            Some(peer_trusted)
        );
    }
}
