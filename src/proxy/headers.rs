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
pub fn request_id(sent: Option<&HeaderValue>) -> String {
    if let Some(v) = sent {
        let b = v.as_bytes();
        if !b.is_empty()
            && b.len() <= MAX_REQUEST_ID_LEN
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
        {
            // Checked to be ASCII just above.
            return String::from_utf8_lossy(b).into_owned();
        }
    }
    format!("{:032x}", fastrand::u128(..))
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

/// Sets the forwarding headers on the request sent upstream.
///
/// Names are given as `&'static str` in their usual spelling, which Pingora's
/// case-preserving header map takes without looking a title case up and
/// copying it; values that are fixed are static.
pub fn set_forwarding(
    req: &mut RequestHeader,
    client: Option<IpAddr>,
    peer: Option<IpAddr>,
    tls: bool,
    host: Option<&str>,
    request_id: &str,
) -> pingora::Result<()> {
    if let Some(ip) = client {
        req.insert_header("X-Real-IP", ip_value(ip, None))?;
    }
    if let Some(peer) = peer {
        let prev = req
            .headers
            .get(&X_FORWARDED_FOR)
            .map(|v| v.as_bytes())
            .filter(|v| !v.is_empty());
        req.insert_header("X-Forwarded-For", ip_value(peer, prev))?;
    }
    let proto = if tls { "https" } else { "http" };
    req.insert_header("X-Forwarded-Proto", HeaderValue::from_static(proto))?;
    match host {
        Some(h) => req.insert_header("X-Forwarded-Host", h)?,
        None => {
            req.remove_header(&X_FORWARDED_HOST);
        }
    }
    req.insert_header("X-Request-Id", request_id)?;
    Ok(())
}

/// `ip` as a header value, after `prev, ` when there is a previous list.
fn ip_value(ip: IpAddr, prev: Option<&[u8]>) -> HeaderValue {
    use std::io::Write;
    let mut buf = Vec::with_capacity(prev.map_or(0, |p| p.len() + 2) + 39);
    if let Some(prev) = prev {
        buf.extend_from_slice(prev);
        buf.extend_from_slice(b", ");
    }
    // Writing to a Vec cannot fail, and an IP address is always a valid value.
    let _ = write!(buf, "{ip}");
    HeaderValue::from_maybe_shared(bytes::Bytes::from(buf))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Adds `[headers]`, HSTS (HTTPS only) and the request id to a response,
/// never replacing a header the response already has.
pub fn decorate(
    resp: &mut ResponseHeader,
    config: &Config,
    tls: bool,
    request_id: &str,
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
    resp.insert_header(X_REQUEST_ID, request_id)?;
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
        assert_eq!(request_id(Some(&long)).len(), 32);
        assert_ne!(request_id(None), request_id(None));
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
