//! Raw TLS client (tokio-rustls, ring): handshake with a chosen SNI, ALPN list
//! and protocol versions, and report what was negotiated and which certificate
//! the server sent. The certificate is not verified (SNI tests look at
//! certificates for names the client could not verify anyway).

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, ProtocolVersion, SignatureScheme, SupportedProtocolVersion};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::raw::{self, RawResponse, RAW_TIMEOUT};

pub use rustls::version::{TLS12, TLS13};

/// What a handshake negotiated.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    pub version: Option<ProtocolVersion>,
    /// The ALPN protocol the server picked, if any.
    pub alpn: Option<String>,
    /// DNS names and IP addresses in the server certificate's subjectAltName.
    pub sans: Vec<String>,
    /// The server's end-entity certificate (DER).
    pub cert_der: Vec<u8>,
}

impl TlsInfo {
    pub fn is_tls13(&self) -> bool {
        self.version == Some(ProtocolVersion::TLSv1_3)
    }

    pub fn is_tls12(&self) -> bool {
        self.version == Some(ProtocolVersion::TLSv1_2)
    }

    /// Whether the certificate names `san` exactly (e.g. `*.wild.test`).
    pub fn has_san(&self, san: &str) -> bool {
        self.sans.iter().any(|s| s.eq_ignore_ascii_case(san))
    }
}

/// Handshake with TLS 1.2 and 1.3 allowed. `sni` is sent as the server name
/// (an IP address string sends no SNI); `alpn` is offered in order.
pub async fn handshake(addr: SocketAddr, sni: &str, alpn: &[&str]) -> std::io::Result<TlsInfo> {
    handshake_with(addr, sni, alpn, &[&TLS13, &TLS12]).await
}

/// Handshake allowing only `versions`.
pub async fn handshake_with(
    addr: SocketAddr,
    sni: &str,
    alpn: &[&str],
    versions: &[&'static SupportedProtocolVersion],
) -> std::io::Result<TlsInfo> {
    connect_with(addr, sni, alpn, versions)
        .await
        .map(|(_, info)| info)
}

/// Opens a TLS connection (TLS 1.2 or 1.3) and returns it with what was negotiated.
pub async fn connect(
    addr: SocketAddr,
    sni: &str,
    alpn: &[&str],
) -> std::io::Result<(TlsStream<TcpStream>, TlsInfo)> {
    connect_with(addr, sni, alpn, &[&TLS13, &TLS12]).await
}

/// Opens a TLS connection allowing only `versions`.
pub async fn connect_with(
    addr: SocketAddr,
    sni: &str,
    alpn: &[&str],
    versions: &[&'static SupportedProtocolVersion],
) -> std::io::Result<(TlsStream<TcpStream>, TlsInfo)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let connector = TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(sni.to_string()).map_err(other)?;
    let fut = async {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        connector.connect(name, tcp).await
    };
    let stream = tokio::time::timeout(RAW_TIMEOUT, fut).await.map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
    })??;
    let (_, conn) = stream.get_ref();
    let cert_der = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default();
    let info = TlsInfo {
        version: conn.protocol_version(),
        alpn: conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        sans: subject_alt_names(&cert_der),
        cert_der,
    };
    Ok((stream, info))
}

/// Sends `bytes` over a fresh TLS connection (ALPN http/1.1) and reads one response.
pub async fn raw_request(
    addr: SocketAddr,
    sni: &str,
    bytes: &[u8],
) -> std::io::Result<RawResponse> {
    let (mut stream, _) = connect(addr, sni, &["http/1.1"]).await?;
    raw::exchange(&mut stream, bytes).await
}

/// The DNS names and IP addresses in a DER certificate's subjectAltName.
pub fn subject_alt_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some((*d).to_string()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => Some(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()),
                16 => {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(b);
                    Some(std::net::Ipv6Addr::from(a).to_string())
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The subjectAltNames of the first certificate in a PEM text.
pub fn pem_subject_alt_names(pem: &[u8]) -> Vec<String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let first = CertificateDer::pem_slice_iter(pem).next();
    match first {
        Some(Ok(der)) => subject_alt_names(der.as_ref()),
        _ => Vec::new(),
    }
}

fn other<E: std::fmt::Display>(e: E) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Accepts any certificate; signatures are still checked.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
