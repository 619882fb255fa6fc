//! What the ACME client puts in front of the listener's own certificates:
//! the certificate it obtained for its domains, swapped in whole when it is
//! renewed, and the tls-alpn-01 challenge certificates while a validation is
//! pending (RFC 8737).
//!
//! The ACME client ([`crate::acme`]) writes here; the resolver
//! ([`super::SniResolver`]) only reads, so a handshake never waits on it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwapOption;
use rustls::sign::CertifiedKey;

/// The ALPN protocol of a tls-alpn-01 validation (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The ACME certificate and pending challenge certificates of the listener.
pub struct AcmeCerts {
    /// Lower-case DNS names the certificate is for.
    domains: Vec<String>,
    issued: ArcSwapOption<CertifiedKey>,
    /// tls-alpn-01 certificates by lower-case domain, while pending.
    challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl fmt::Debug for AcmeCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmeCerts")
            .field("domains", &self.domains)
            .field("issued", &self.issued.load().is_some())
            .finish()
    }
}

impl AcmeCerts {
    /// Nothing issued yet for `domains` (lower-case).
    pub fn new(domains: Vec<String>) -> Self {
        AcmeCerts {
            domains,
            issued: ArcSwapOption::empty(),
            challenges: Mutex::new(HashMap::new()),
        }
    }

    /// The ACME certificate, once there is one.
    pub fn cert(&self) -> Option<Arc<CertifiedKey>> {
        self.issued.load_full()
    }

    /// The ACME certificate when `server_name` is one of its domains.
    pub fn cert_for(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        let name = server_name.trim_end_matches('.');
        if self.domains.iter().any(|d| d.eq_ignore_ascii_case(name)) {
            self.cert()
        } else {
            None
        }
    }

    /// Serves `cert` to every handshake from now on (connections keep theirs).
    pub fn install(&self, cert: Arc<CertifiedKey>) {
        self.issued.store(Some(cert));
    }

    /// The challenge certificate for a tls-alpn-01 validation of `server_name`.
    pub fn challenge_cert(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        let name = server_name.trim_end_matches('.').to_ascii_lowercase();
        self.challenges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&name)
            .cloned()
    }

    /// Answers tls-alpn-01 validations of `domain` with `cert` until removed.
    pub fn add_challenge(&self, domain: &str, cert: Arc<CertifiedKey>) {
        self.challenges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(domain.to_ascii_lowercase(), cert);
    }

    /// Drops every challenge certificate.
    pub fn clear_challenges(&self) {
        self.challenges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// Whether a ClientHello's ALPN list offers `acme-tls/1`.
pub fn offers_acme_tls<'a>(alpn: Option<impl Iterator<Item = &'a [u8]>>) -> bool {
    alpn.is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN))
}
