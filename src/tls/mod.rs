//! TLS: certificates from PEM files, SNI selection, and self-signed generation.
//!
//! rustls only speaks TLS 1.2 and 1.3 and only offers forward-secret AEAD
//! suites, so the protocol floor comes with the library. Certificates are served
//! by [`SniResolver`], a rustls `ResolvesServerCert` whose certificate set sits
//! behind an `ArcSwap`: a config reload builds a new [`CertSet`] and swaps it in,
//! new handshakes see it at once and established connections keep theirs.
//!
//! [`self_signed`] makes development certificates; [`acme`] holds what the
//! ACME client puts in front of them (its certificate and, while a
//! tls-alpn-01 challenge is pending, the challenge certificates).

pub mod acme;
pub mod self_signed;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::HttpsListener;
pub use acme::AcmeCerts;
pub use self_signed::{ensure_default_cert, generate_self_signed, write_cert_pair, GeneratedCert};

/// Why a certificate could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key found")]
    NoKey { path: PathBuf },
    #[error("{path}: unsupported private key")]
    BadKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{cert}: the certificate does not match the key in {key}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("cannot generate a self-signed certificate")]
    Generate(#[from] rcgen::Error),
    #[error("cannot generate a self-signed certificate: no random bytes for its serial number")]
    Random,
    #[error("TLS listener settings")]
    Settings(#[source] Box<pingora::Error>),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Loads a PEM chain and key into a signing-ready pair.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let chain: Vec<_> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    warn_if_world_readable(key);
    let key_pem = read(key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .ok()
        .ok_or_else(|| TlsError::NoKey {
            path: key.to_path_buf(),
        })?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&private).map_err(|source| {
        TlsError::BadKey {
            path: key.to_path_buf(),
            source,
        }
    })?;
    let certified = CertifiedKey::new(chain, signer);
    if certified.keys_match().is_err() {
        return Err(TlsError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        });
    }
    Ok(Arc::new(certified))
}

fn warn_if_world_readable(key: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(key) {
        if meta.permissions().mode() & 0o004 != 0 {
            log::warn!(
                "private key {} is readable by every user; chmod 600 it",
                key.display()
            );
        }
    }
}

/// What the status page shows of one loaded certificate (its leaf).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The PEM file it was loaded from.
    pub file: PathBuf,
    /// Served when no SNI certificate matches.
    pub default: bool,
    /// DNS names and IP addresses of the subject alternative names, or the
    /// subject's common name when it has none.
    pub names: Vec<String>,
    /// End of validity.
    pub not_after: std::time::SystemTime,
}

impl CertInfo {
    /// Reads the names and validity of `chain`'s leaf; `None` when it does
    /// not parse (rustls served it anyway; the status page leaves it out).
    fn of(file: &Path, default: bool, chain: &[CertificateDer<'_>]) -> Option<CertInfo> {
        use x509_parser::extensions::GeneralName;
        let (_, leaf) = x509_parser::parse_x509_certificate(chain.first()?.as_ref()).ok()?;
        let mut names: Vec<String> = leaf
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::DNSName(d) => Some((*d).to_string()),
                        GeneralName::IPAddress(ip) => ip_text(ip),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        if names.is_empty() {
            names.extend(
                leaf.subject()
                    .iter_common_name()
                    .filter_map(|cn| cn.as_str().ok().map(str::to_string)),
            );
        }
        let secs = leaf.validity().not_after.timestamp();
        let not_after = if secs >= 0 {
            std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(secs as u64))?
        } else {
            std::time::UNIX_EPOCH
        };
        Some(CertInfo {
            file: file.to_path_buf(),
            default,
            names,
            not_after,
        })
    }
}

/// An IP address of a subject alternative name (4 or 16 bytes) as text.
fn ip_text(bytes: &[u8]) -> Option<String> {
    let ip = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(ip.to_string())
}

/// The certificates of the TLS listener: a default and those chosen by SNI.
pub struct CertSet {
    /// `None` when `[acme]` serves the listener without a configured pair.
    default: Option<Arc<CertifiedKey>>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*.`, e.g. `example.com` for `*.example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// Names and expiry of each file loaded, the default first.
    info: Vec<CertInfo>,
}

impl fmt::Debug for CertSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertSet")
            .field("exact", &self.exact.keys().collect::<Vec<_>>())
            .field("wildcard", &self.wildcard.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl CertSet {
    /// Loads every certificate the `[https]` section names.
    pub fn load(https: &HttpsListener) -> Result<CertSet, TlsError> {
        let default = if https.default_pair {
            Some(load_certified_key(&https.cert, &https.key)?)
        } else {
            None
        };
        let mut info: Vec<CertInfo> = default
            .as_ref()
            .and_then(|d| CertInfo::of(&https.cert, true, &d.cert))
            .into_iter()
            .collect();
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for sni in &https.sni {
            let ck = load_certified_key(&sni.cert, &sni.key)?;
            info.extend(CertInfo::of(&sni.cert, false, &ck.cert));
            for host in &sni.hosts {
                match host.strip_prefix("*.") {
                    Some(suffix) => wildcard.insert(suffix.to_string(), ck.clone()),
                    None => exact.insert(host.clone(), ck.clone()),
                };
            }
        }
        Ok(CertSet {
            default,
            exact,
            wildcard,
            info,
        })
    }

    /// Names and expiry of each certificate file, the default first.
    pub fn info(&self) -> &[CertInfo] {
        &self.info
    }

    /// The certificate for a server name: exact match, then a one-label wildcard,
    /// then the default (also when the client sent no SNI), if there is one.
    pub fn pick(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = server_name else {
            return self.default.clone();
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(ck) = self.exact.get(&name) {
            return Some(ck.clone());
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(ck) = self.wildcard.get(parent) {
                return Some(ck.clone());
            }
        }
        self.default.clone()
    }
}

/// rustls certificate resolver over a swappable [`CertSet`], with the ACME
/// certificates (when `[acme]` is configured) in front of it.
#[derive(Debug)]
pub struct SniResolver {
    certs: ArcSwap<CertSet>,
    acme: Option<Arc<AcmeCerts>>,
}

impl SniResolver {
    pub fn new(certs: CertSet, acme: Option<Arc<AcmeCerts>>) -> Self {
        SniResolver {
            certs: ArcSwap::from_pointee(certs),
            acme,
        }
    }

    /// The certificates served now.
    pub fn current(&self) -> Arc<CertSet> {
        self.certs.load_full()
    }

    /// Serves `certs` to every handshake from now on.
    pub fn replace(&self, certs: CertSet) {
        self.certs.store(Arc::new(certs));
    }
}

impl ResolvesServerCert for SniResolver {
    /// With ACME: a tls-alpn-01 validation (ALPN `acme-tls/1`) gets only its
    /// challenge certificate; the ACME domains get the ACME certificate. Then
    /// the configured certificates, and the ACME certificate for names (or
    /// clients without SNI) that nothing else covers.
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name();
        let Some(acme) = &self.acme else {
            return self.certs.load().pick(name);
        };
        if acme::offers_acme_tls(hello.alpn()) {
            return acme.challenge_cert(name?);
        }
        if let Some(ck) = name.and_then(|n| acme.cert_for(n)) {
            return Some(ck);
        }
        self.certs.load().pick(name).or_else(|| acme.cert())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str, hosts: &[&str]) -> (PathBuf, PathBuf) {
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let g = generate_self_signed(&hosts).unwrap();
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        write_cert_pair(&g, &cert, &key).unwrap();
        (cert, key)
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let (dc, dk) = pair(dir.path(), "default", &["localhost"]);
        let (ac, ak) = pair(dir.path(), "api", &["api.example.com"]);
        let (wc, wk) = pair(dir.path(), "wild", &["*.example.com"]);
        let https = HttpsListener {
            listen: vec![],
            cert: dc,
            key: dk,
            default_pair: true,
            self_signed: false,
            http2: true,
            hsts: None,
            sni: vec![
                crate::config::SniCert {
                    hosts: vec!["*.example.com".into()],
                    cert: wc,
                    key: wk,
                },
                crate::config::SniCert {
                    hosts: vec!["api.example.com".into()],
                    cert: ac,
                    key: ak,
                },
            ],
            proxy_protocol: false,
        };
        let set = CertSet::load(&https).unwrap();
        let der = |ck: Option<Arc<CertifiedKey>>| ck.unwrap().cert[0].as_ref().to_vec();
        let default = der(set.pick(None));
        let api = der(set.pick(Some("API.example.com")));
        let wild = der(set.pick(Some("www.example.com")));
        assert_ne!(api, default);
        assert_ne!(wild, default);
        assert_ne!(api, wild);
        assert_eq!(
            der(set.pick(Some("a.b.example.com"))),
            default,
            "wildcards cover one label"
        );
        assert_eq!(der(set.pick(Some("example.com"))), default);
        let info = set.info();
        assert_eq!(info.len(), 3);
        assert!(info[0].default && !info[1].default);
        assert_eq!(info[0].names, vec!["localhost".to_string()]);
        assert_eq!(info[1].names, vec!["*.example.com".to_string()]);
        assert!(info[2].not_after > std::time::SystemTime::now());
    }

    #[test]
    fn key_file_is_private_and_mismatch_is_caught() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (c1, k1) = pair(dir.path(), "one", &["a.test"]);
        let (_c2, k2) = pair(dir.path(), "two", &["b.test"]);
        assert_eq!(
            std::fs::metadata(&k1).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(load_certified_key(&c1, &k1).is_ok());
        assert!(matches!(
            load_certified_key(&c1, &k2),
            Err(TlsError::Mismatch { .. })
        ));
        assert!(matches!(
            load_certified_key(&k1, &k1),
            Err(TlsError::NoCertificate { .. })
        ));
    }
}
