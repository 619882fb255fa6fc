//! Headers Gatehouse adds: the request id, the forwarding headers sent
//! upstream, and the headers added to every response.

use std::net::IpAddr;

use http::header::{HeaderName, HeaderValue};
use ipnet::IpNet;
use pingora::http::{RequestHeader, ResponseHeader};

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
/// Names are given as constant `HeaderName`s, which Pingora's header maps
/// take without parsing (vendor patch 12; they go out in Title-Case, patch
/// 14); values are static, shared with the client's head, or (the
/// addresses) written once: `X-Real-IP` and `X-Forwarded-For` share one
/// value when they are the same. `sent_xff` false says that the client sent
/// no `X-Forwarded-For` (known from its raw head): it is not looked up.
pub fn set_forwarding(
    req: &mut RequestHeader,
    client: Option<IpAddr>,
    peer: Option<IpAddr>,
    tls: bool,
    host: Option<HeaderValue>,
    request_id: &HeaderValue,
    sent_xff: bool,
) -> pingora::Result<()> {
    let mut real_ip = None;
    if let Some(ip) = client {
        let v = address_value(ip);
        real_ip = Some((ip, v.clone()));
        req.insert_header(X_REAL_IP, v)?;
    }
    if let Some(peer) = peer {
        let prev = match sent_xff {
            true => req.headers.get(&X_FORWARDED_FOR),
            false => None,
        }
        .map(|v| v.as_bytes())
        .filter(|v| !v.is_empty());
        let value = match (prev, real_ip) {
            (None, Some((ip, v))) if ip == peer => v,
            _ => ip_value(peer, prev),
        };
        req.insert_header(X_FORWARDED_FOR, value)?;
    }
    let proto = if tls { "https" } else { "http" };
    req.insert_header(X_FORWARDED_PROTO, HeaderValue::from_static(proto))?;
    match host {
        Some(h) => req.insert_header(X_FORWARDED_HOST, h)?,
        None => {
            req.remove_header(&X_FORWARDED_HOST);
        }
    }
    req.insert_header(X_REQUEST_ID, request_id.clone())?;
    Ok(())
}

thread_local! {
    /// The last address written by [address_value] on this thread, with its
    /// value (its bytes shared, so a clone is a reference count).
    static LAST_ADDRESS: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> =
        const { std::cell::RefCell::new(None) };
}

/// `ip` as a header value, written once per address in a row on a thread: a
/// keep-alive connection's requests (and one client's connections) share the
/// bytes instead of each formatting and allocating them again (issue 13).
fn address_value(ip: IpAddr) -> HeaderValue {
    LAST_ADDRESS.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((cached, value)) if *cached == ip => value.clone(),
            _ => {
                let value = ip_value(ip, None);
                // The first clone makes the bytes shared: later ones only count.
                *last = Some((ip, value.clone()));
                value
            }
        }
    })
}

/// `ip` as a header value, after `prev, ` when there is a previous list.
fn ip_value(ip: IpAddr, prev: Option<&[u8]>) -> HeaderValue {
    let mut buf = Vec::with_capacity(prev.map_or(0, |p| p.len() + 2) + 39);
    if let Some(prev) = prev {
        buf.extend_from_slice(prev);
        buf.extend_from_slice(b", ");
    }
    match ip {
        // Dotted decimal by hand: `fmt` costs more than the rest of the header.
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf.push(b'.');
                }
                if octet >= 100 {
                    buf.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    buf.push(b'0' + octet / 10 % 10);
                }
                buf.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(_) => {
            use std::io::Write;
            // Writing to a Vec cannot fail.
            let _ = write!(buf, "{ip}");
        }
    }
    // An IP address (after a list that was a valid value) is always a valid value.
    HeaderValue::from_maybe_shared(bytes::Bytes::from(buf))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
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

    #[test]
    fn address_values_are_reused_only_for_the_same_address() {
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let b: IpAddr = "::1".parse().unwrap();
        assert_eq!(address_value(a), "192.0.2.7");
        assert_eq!(address_value(a), "192.0.2.7");
        assert_eq!(address_value(b), "::1");
        assert_eq!(address_value(a), "192.0.2.7");
    }

    #[test]
    fn ip_values_match_display() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "127.0.0.1",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_value(ip, None), ip.to_string().as_str());
            assert_eq!(
                ip_value(ip, Some(b"192.0.2.1")),
                format!("192.0.2.1, {ip}").as_str()
            );
        }
    }

    #[test]
    fn forwarding_headers_share_the_address_only_when_equal() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("X-Forwarded-For", "203.0.113.9").unwrap();
        let peer: IpAddr = "10.1.1.1".parse().unwrap();
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        let id = HeaderValue::from_static("abc");
        set_forwarding(&mut req, Some(client), Some(peer), false, None, &id, true).unwrap();
        assert_eq!(req.headers[&X_REAL_IP], "203.0.113.9");
        assert_eq!(req.headers[&X_FORWARDED_FOR], "203.0.113.9, 10.1.1.1");
        assert!(req.headers.get(&X_FORWARDED_HOST).is_none());
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        let host = Some(HeaderValue::from_static("example.com"));
        set_forwarding(&mut req, Some(peer), Some(peer), true, host, &id, false).unwrap();
        assert_eq!(req.headers[&X_REAL_IP], "10.1.1.1");
        assert_eq!(req.headers[&X_FORWARDED_FOR], "10.1.1.1");
        assert_eq!(req.headers[&X_FORWARDED_PROTO], "https");
        assert_eq!(req.headers[&X_FORWARDED_HOST], "example.com");
        assert_eq!(req.headers[&X_REQUEST_ID], "abc");
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
