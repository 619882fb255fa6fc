//! PROXY protocol (v1 text and v2 binary, HAProxy's specification) from the
//! L4 balancers in `server.trusted_proxies`, on listeners with
//! `proxy_protocol = true`.
//!
//! The header is read before anything else (before the TLS handshake on the
//! HTTPS listener), exactly its own bytes: what follows stays in the stream's
//! buffer for TLS or HTTP. The source address it carries replaces the peer
//! address in the connection's socket digest, so it is the client address
//! everywhere (per-IP cap, rate limits, `X-Real-IP`/`X-Forwarded-For`, the
//! access log). A peer that is not trusted, or a missing or malformed header,
//! closes the connection. `LOCAL` (v2) and `UNKNOWN` (v1) headers, which
//! balancers send for their own health checks, keep the peer address.

use std::net::SocketAddr;
use std::time::Duration;

use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::protocols::{GetSocketDigest, SocketDigest, UniqueID};
use ppp::{v1, v2};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes of the v2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 header (the specification's 107 bytes).
const V1_MAX: usize = 107;
/// Longest v2 header accepted (16-byte prefix and addresses, TLVs included).
const V2_MAX: usize = 16 + 1024;

/// Why a PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyHeaderError {
    #[error("no PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol header")]
    Malformed,
    #[error("PROXY protocol header not received in time")]
    TimedOut,
    #[error("reading the PROXY protocol header")]
    Io(#[source] std::io::Error),
}

/// Reads one PROXY header from `stream` within `within`; the client address
/// it carries, or `None` for a LOCAL/UNKNOWN header.
pub(crate) async fn read_header<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
    within: Duration,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    match tokio::time::timeout(within, read(stream)).await {
        Ok(result) => result,
        Err(_) => Err(ProxyHeaderError::TimedOut),
    }
}

async fn read<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut buf = vec![0u8; 8];
    stream
        .read_exact(&mut buf)
        .await
        .map_err(ProxyHeaderError::Io)?;
    if buf.starts_with(b"PROXY ") {
        // v1: one line, read a byte at a time so nothing past it is consumed
        // (the stream is buffered, so this costs no system calls).
        while !buf.ends_with(b"\r\n") {
            if buf.len() >= V1_MAX {
                return Err(ProxyHeaderError::Malformed);
            }
            let mut byte = [0u8; 1];
            stream
                .read_exact(&mut byte)
                .await
                .map_err(ProxyHeaderError::Io)?;
            buf.push(byte[0]);
        }
        return v1_source(&buf);
    }
    if buf[..] != V2_SIGNATURE[..8] {
        return Err(ProxyHeaderError::Missing);
    }
    buf.resize(16, 0);
    stream
        .read_exact(&mut buf[8..])
        .await
        .map_err(ProxyHeaderError::Io)?;
    let length = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if 16 + length > V2_MAX {
        return Err(ProxyHeaderError::Malformed);
    }
    buf.resize(16 + length, 0);
    stream
        .read_exact(&mut buf[16..])
        .await
        .map_err(ProxyHeaderError::Io)?;
    v2_source(&buf)
}

fn v1_source(bytes: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ProxyHeaderError::Malformed)?;
    let header = v1::Header::try_from(text).map_err(|_| ProxyHeaderError::Malformed)?;
    Ok(match header.addresses {
        v1::Addresses::Tcp4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        v1::Addresses::Tcp6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        v1::Addresses::Unknown => None,
    })
}

fn v2_source(bytes: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let header = v2::Header::try_from(bytes).map_err(|_| ProxyHeaderError::Malformed)?;
    if header.command == v2::Command::Local {
        return Ok(None);
    }
    Ok(match header.addresses {
        v2::Addresses::IPv4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        v2::Addresses::IPv6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
    })
}

/// Makes `client` the peer address of `stream`'s connection.
pub(crate) fn set_client_addr<S: GetSocketDigest + UniqueID + ?Sized>(
    stream: &mut S,
    client: SocketAddr,
) {
    let digest = SocketDigest::from_raw_fd(stream.id());
    let _ = digest.peer_addr.set(Some(PeerAddr::Inet(client)));
    stream.set_socket_digest(digest);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> (Result<Option<SocketAddr>, ProxyHeaderError>, Vec<u8>) {
        let mut r = bytes;
        let got = read_header(&mut r, Duration::from_secs(1)).await;
        (got, r.to_vec())
    }

    #[tokio::test]
    async fn v1_gives_the_source_and_leaves_the_rest() {
        let (got, rest) =
            parse(b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\r\nGET / HTTP/1.1\r\n").await;
        assert_eq!(got.unwrap(), Some("203.0.113.9:5555".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        let (got, _) = parse(b"PROXY TCP6 2001:db8::1 ::1 5555 443\r\n").await;
        assert_eq!(got.unwrap(), Some("[2001:db8::1]:5555".parse().unwrap()));
        let (got, _) = parse(b"PROXY UNKNOWN\r\n").await;
        assert_eq!(got.unwrap(), None);
    }

    #[tokio::test]
    async fn v2_gives_the_source_and_local_keeps_the_peer() {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0x00, 12]); // PROXY, TCP over IPv4, 12 bytes
        h.extend_from_slice(&[198, 51, 100, 7, 127, 0, 0, 1, 0x30, 0x39, 0x01, 0xbb]);
        h.extend_from_slice(b"\x16\x03\x01");
        let (got, rest) = parse(&h).await;
        assert_eq!(got.unwrap(), Some("198.51.100.7:12345".parse().unwrap()));
        assert_eq!(rest, b"\x16\x03\x01", "the TLS bytes after it stay");
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(parse(&local).await.0.unwrap(), None);
    }

    #[tokio::test]
    async fn missing_truncated_and_malformed_headers_are_refused() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.0,
            Err(ProxyHeaderError::Missing)
        ));
        assert!(parse(b"PROXY TCP4 1.2.3.4").await.0.is_err());
        assert!(matches!(
            parse(b"PROXY TCP4 999.2.3.4 1.2.3.4 1 2\r\n").await.0,
            Err(ProxyHeaderError::Malformed)
        ));
        let long = format!("PROXY {}\r\n", "x".repeat(200));
        assert!(matches!(
            parse(long.as_bytes()).await.0,
            Err(ProxyHeaderError::Malformed)
        ));
        let mut bad_v2 = V2_SIGNATURE.to_vec();
        bad_v2.extend_from_slice(&[0x21, 0x11, 0x00, 0x02, 1, 2]);
        assert!(parse(&bad_v2).await.0.is_err());
    }
}
