//! Certificates from an ACME CA (`[acme]`): obtained at start when missing,
//! renewed `renew_before` their expiry, swapped into the TLS resolver without
//! a restart. A failed attempt is logged and counted, retried after
//! `retry_backoff` (doubling, capped), and never replaces a working
//! certificate.
//!
//! [`AcmeState`] is what the request path sees: the http-01 tokens (answered
//! on the plain listener before the redirect, `proxy/stages.rs`) and the
//! certificates ([`crate::tls::AcmeCerts`], read by the resolver).
//! [`AcmeService`] is the Pingora background service that runs the client
//! ([`client`]) and keeps the files ([`storage`]).

pub mod client;
pub mod storage;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::defaults::MAX_ACME_RETRY_BACKOFF;
use crate::config::Acme;
use crate::metrics;
use crate::tls::AcmeCerts;
use storage::{Storage, Stored};

/// Where http-01 validations fetch their token (RFC 8555 §8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// Longest an issuance may take, all steps together.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(180);
/// Longest sleep before the renewal time is looked at again (a clock that
/// jumps is noticed within this).
const RECHECK: Duration = Duration::from_secs(3600);

/// The http-01 key authorizations by token, while challenges are pending.
#[derive(Debug, Default)]
pub struct Http01 {
    tokens: Mutex<HashMap<String, String>>,
}

impl Http01 {
    /// The key authorization to answer for a request path, when the path is a
    /// pending challenge's.
    pub fn answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(HTTP01_PREFIX)?;
        self.tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token)
            .cloned()
    }

    pub(crate) fn insert(&self, token: String, key_authorization: String) {
        self.tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token, key_authorization);
    }

    fn clear(&self) {
        self.tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// What the listeners read of ACME: shared by the snapshot, the resolver and
/// the background service.
#[derive(Debug)]
pub struct AcmeState {
    pub http01: Http01,
    pub certs: Arc<AcmeCerts>,
}

impl AcmeState {
    /// State for `acme`, serving the stored certificate if there is a usable one.
    /// Reads files: call before the server runs.
    pub fn load(acme: &Acme) -> Arc<AcmeState> {
        let state = Arc::new(AcmeState {
            http01: Http01::default(),
            certs: Arc::new(AcmeCerts::new(acme.domains.clone())),
        });
        let storage = Storage::new(&acme.storage);
        match storage.read_cert() {
            Ok(Some(stored)) if stored.not_after > SystemTime::now() => {
                log::info!(
                    "acme: serving the stored certificate for {} (expires {})",
                    stored.names.join(", "),
                    httpdate::fmt_http_date(stored.not_after)
                );
                install(&state, acme, &stored);
            }
            Ok(Some(_)) => log::warn!(
                "acme: the stored certificate {} has expired; obtaining a new one",
                storage.cert_path().display()
            ),
            Ok(None) => log::info!(
                "acme: no certificate in {} yet; obtaining one for {}",
                acme.storage.display(),
                acme.domains.join(", ")
            ),
            Err(e) => log::warn!(
                "acme: the stored certificate is not usable ({}); obtaining a new one",
                crate::logging::chain(&e)
            ),
        }
        state
    }
}

/// Serves `stored` and records its expiry.
fn install(state: &AcmeState, acme: &Acme, stored: &Stored) {
    state.certs.install(stored.key.clone());
    metrics::set_acme_expiry(&acme.domains, stored.not_after);
}

/// The background service: obtains and renews the certificate.
pub struct AcmeService {
    pub config: Acme,
    pub state: Arc<AcmeState>,
}

/// When the next attempt is due, from the certificate being served.
fn renewal_wait(served: Option<&Stored>, acme: &Acme, now: SystemTime) -> Duration {
    let Some(stored) = served else {
        return Duration::ZERO;
    };
    if !acme.domains.iter().all(|d| stored.names.contains(d)) {
        return Duration::ZERO;
    }
    let due = stored
        .not_after
        .checked_sub(acme.renew_before)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    due.duration_since(now)
        .unwrap_or(Duration::ZERO)
        .min(RECHECK)
}

impl AcmeService {
    /// One attempt: issue, check, store, serve.
    async fn attempt(&self, storage: &Storage) -> Result<Stored, String> {
        let issued = tokio::time::timeout(
            ATTEMPT_TIMEOUT,
            client::issue(&self.config, storage, &self.state),
        )
        .await
        .map_err(|_| format!("no certificate after {ATTEMPT_TIMEOUT:?}"))?
        .map_err(|e| crate::logging::chain(&e))?;
        let key = storage::certified_from_pem(&issued.chain_pem, &issued.key_pem)?;
        let stored = storage::describe(key);
        let storage = storage.clone();
        tokio::task::spawn_blocking(move || storage.write_cert(&issued.chain_pem, &issued.key_pem))
            .await
            .map_err(|e| format!("storing the certificate: {e}"))?
            .map_err(|e| format!("storing the certificate: {e}"))?;
        Ok(stored)
    }
}

#[async_trait]
impl BackgroundService for AcmeService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let storage = Storage::new(&self.config.storage);
        let mut served = self.state.certs.cert().map(storage::describe);
        let mut backoff = self.config.retry_backoff;
        let mut wait = renewal_wait(served.as_ref(), &self.config, SystemTime::now());
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            // Not yet due (a long wait is slept in RECHECK pieces).
            let due = renewal_wait(served.as_ref(), &self.config, SystemTime::now());
            if !due.is_zero() {
                wait = due;
                continue;
            }
            let attempt = tokio::select! {
                _ = shutdown.changed() => return,
                result = self.attempt(&storage) => result,
            };
            match attempt {
                Ok(stored) => {
                    log::info!(
                        "acme: new certificate for {} installed (expires {})",
                        stored.names.join(", "),
                        httpdate::fmt_http_date(stored.not_after)
                    );
                    install(&self.state, &self.config, &stored);
                    metrics::record_acme_renewal(true);
                    backoff = self.config.retry_backoff;
                    wait = renewal_wait(Some(&stored), &self.config, SystemTime::now());
                    served = Some(stored);
                }
                Err(e) => {
                    // Logged before counted: whoever watches the counter finds the log.
                    log::error!(
                        "acme: could not obtain a certificate for {}: {e}; {}; next attempt in {}",
                        self.config.domains.join(", "),
                        if served.is_some() {
                            "the current certificate stays"
                        } else {
                            "no ACME certificate is served yet"
                        },
                        humantime::format_duration(backoff)
                    );
                    metrics::record_acme_renewal(false);
                    wait = backoff;
                    backoff = (backoff * 2).min(MAX_ACME_RETRY_BACKOFF);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AcmeChallenge;

    fn acme(renew_before: Duration) -> Acme {
        Acme {
            directory: "https://ca.test/dir".into(),
            contact: vec![],
            domains: vec!["a.example".into()],
            storage: "/nonexistent".into(),
            challenge: AcmeChallenge::Http01,
            renew_before,
            ca_bundle: None,
            retry_backoff: Duration::from_secs(1),
        }
    }

    fn stored(names: &[&str], not_after: SystemTime) -> Stored {
        let g = crate::tls::generate_self_signed(&["x.example".to_string()]).unwrap();
        Stored {
            key: storage::certified_from_pem(&g.cert_pem, &g.key_pem).unwrap(),
            not_after,
            names: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn renewal_is_due_renew_before_expiry_or_at_once() {
        let now = SystemTime::now();
        let day = Duration::from_secs(24 * 3600);
        let a = acme(30 * day);
        assert_eq!(renewal_wait(None, &a, now), Duration::ZERO);
        let fresh = stored(&["a.example"], now + 31 * day);
        assert_eq!(renewal_wait(Some(&fresh), &a, now), RECHECK);
        let soon = stored(&["a.example"], now + 30 * day + Duration::from_secs(5));
        assert_eq!(renewal_wait(Some(&soon), &a, now), Duration::from_secs(5));
        let due = stored(&["a.example"], now + 29 * day);
        assert_eq!(renewal_wait(Some(&due), &a, now), Duration::ZERO);
        let other_names = stored(&["b.example"], now + 90 * day);
        assert_eq!(renewal_wait(Some(&other_names), &a, now), Duration::ZERO);
    }

    #[test]
    fn http01_answers_only_pending_tokens() {
        let h = Http01::default();
        assert_eq!(h.answer("/.well-known/acme-challenge/abc"), None);
        h.insert("abc".into(), "abc.thumb".into());
        assert_eq!(
            h.answer("/.well-known/acme-challenge/abc").as_deref(),
            Some("abc.thumb")
        );
        assert_eq!(h.answer("/abc"), None);
        assert_eq!(h.answer("/.well-known/acme-challenge/abd"), None);
        h.clear();
        assert_eq!(h.answer("/.well-known/acme-challenge/abc"), None);
    }
}
