//! The upstream side of a request: the peer to connect to, the consistent-hash
//! key, how upstream failures map to a status, and what each attempt tells
//! passive health.

use std::net::IpAddr;

use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};

use super::Ctx;
use crate::config::{HashKey, Upstream};
use crate::metrics;
use crate::pool::passive::Outcome;
use crate::pool::Backend;

/// The peer for one attempt on `backend`, with the pool's timeouts (boxed
/// as it is made: Pingora takes it boxed, and the peer is large).
pub(crate) fn peer(backend: &Backend, cfg: &Upstream) -> Box<HttpPeer> {
    let mut peer = crate::pool::plain_peer(backend.addr);
    peer.options.connection_timeout = Some(cfg.connect_timeout);
    peer.options.read_timeout = Some(cfg.read_timeout);
    peer.options.write_timeout = Some(cfg.write_timeout);
    peer.options.idle_timeout = Some(cfg.idle_timeout);
    peer
}

/// Counts the outcome of the current attempt for passive health (once per
/// attempt); logs and counts an ejection it causes.
pub(crate) fn record_outcome(ctx: &mut Ctx, outcome: Outcome) {
    if ctx.outcome_recorded {
        return;
    }
    let (Some(pool), Some(in_flight)) = (&ctx.pool, &ctx.in_flight) else {
        return;
    };
    let backend = in_flight.backend();
    if let Some(ejection) = pool.record_outcome(backend, outcome) {
        metrics::record_ejection(pool.name(), &backend.label);
        let failures = pool
            .config
            .passive
            .as_ref()
            .map_or(0, |p| p.consecutive_failures);
        log::warn!(
            "upstream {}: server {} ejected for {:?} after {failures} failed requests in a row (ejection {} in a row)",
            pool.name(),
            backend.label,
            ejection.duration,
            ejection.streak,
        );
    }
    ctx.outcome_recorded = true;
}

/// What a server's answer with `status` tells passive health.
pub(crate) fn outcome_of_status(cfg: &Upstream, status: u16) -> Outcome {
    match &cfg.passive {
        Some(p) if p.failure_statuses.contains(&status) => Outcome::Failure,
        _ => Outcome::Success,
    }
}

/// The bytes `consistent_hash` hashes for this request.
pub(crate) fn hash_key(
    key: &HashKey,
    client_ip: Option<IpAddr>,
    req: &pingora::http::RequestHeader,
) -> Vec<u8> {
    match key {
        HashKey::ClientIp => client_ip
            .map(|ip| ip.to_string().into_bytes())
            .unwrap_or_default(),
        HashKey::Path => req.uri.path().as_bytes().to_vec(),
        HashKey::Header(name) => req
            .headers
            .get(name)
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default(),
        HashKey::Cookie(name) => cookie(req, name).map(<[u8]>::to_vec).unwrap_or_default(),
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(req: &'a pingora::http::RequestHeader, name: &str) -> Option<&'a [u8]> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .find_map(|v| {
            v.as_bytes().split(|&b| b == b';').find_map(|pair| {
                let pair = pair.trim_ascii();
                let eq = pair.iter().position(|&b| b == b'=')?;
                (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
            })
        })
}

/// The status for a request that failed while proxying.
///
/// - 503: no server could be reached (every attempt failed to connect, so
///   nothing was sent and the client may safely try again), the same answer
///   as for a pool with no healthy server (HAProxy and Envoy answer so too).
/// - 502: a server took the request and then failed the exchange.
/// - 504: a server took the request and did not answer in time.
///
/// 0 means the client is gone and no response can be written.
pub(crate) fn status_for(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        ErrorType::ConnectTimedout
        | ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::ConnectProxyFailure
        | ErrorType::TLSHandshakeFailure
        | ErrorType::TLSHandshakeTimedout
        | ErrorType::SocketError
        | ErrorType::BindError => 503,
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if *e.esource() == ErrorSource::Upstream =>
        {
            504
        }
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                ErrorType::ReadTimedout => 408,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 502,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_values_are_found() {
        let mut req = pingora::http::RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("cookie", "a=1; session=xyz ; b=2")
            .unwrap();
        assert_eq!(cookie(&req, "session"), Some(&b"xyz"[..]));
        assert_eq!(cookie(&req, "missing"), None);
    }

    #[test]
    fn timeouts_are_504_and_other_upstream_failures_502() {
        let mut e = Error::new(ErrorType::ReadTimedout);
        e.esource = ErrorSource::Upstream;
        assert_eq!(status_for(&e), 504);
        let mut e = Error::new(ErrorType::ConnectRefused);
        e.esource = ErrorSource::Upstream;
        assert_eq!(status_for(&e), 503, "no server could be reached");
        let mut e = Error::new(ErrorType::ConnectTimedout);
        e.esource = ErrorSource::Upstream;
        assert_eq!(status_for(&e), 503, "no server could be reached");
        let mut e = Error::new(ErrorType::ConnectionClosed);
        e.esource = ErrorSource::Upstream;
        assert_eq!(status_for(&e), 502, "a server failed the exchange");
        assert_eq!(status_for(&Error::new(ErrorType::HTTPStatus(503))), 503);
    }
}
