//! One ACME issuance with `instant-acme`: the account (restored from storage
//! or created), an order for every domain, each authorization answered with
//! the configured challenge, then a fresh key, its CSR and the chain.
//!
//! The HTTP client is hyper with rustls (ring), trusting the system's roots
//! plus `acme.ca_bundle`, so a private or test CA (pebble) can be used.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, ChallengeType, HttpClient,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};

use super::storage::Storage;
use super::AcmeState;
use crate::config::{Acme, AcmeChallenge};

/// How long an order may take to become ready (the CA validating every
/// challenge) and then to deliver its certificate.
const ORDER_TIMEOUT: Duration = Duration::from_secs(90);
/// First wait between polls of an order; grows by half each time.
const ORDER_POLL: Duration = Duration::from_millis(250);

/// Why an issuance failed.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("no trusted roots for the ACME directory (none from the system, no acme.ca_bundle)")]
    NoRoots,
    #[error("cannot read acme.ca_bundle {path}")]
    CaBundle {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS settings of the ACME client")]
    TlsConfig(#[source] rustls::Error),
    #[error("ACME account storage")]
    Storage(#[source] std::io::Error),
    #[error("the stored ACME account does not parse")]
    AccountFile(#[source] serde_json::Error),
    #[error("ACME {step}")]
    Acme {
        step: &'static str,
        #[source]
        source: instant_acme::Error,
    },
    #[error("the CA offers no {kind} challenge for {domain}")]
    NoChallenge { kind: &'static str, domain: String },
    #[error("the authorization of {domain} is {status:?}")]
    Authorization {
        domain: String,
        status: AuthorizationStatus,
    },
    #[error("the order is {status:?}: {reasons}")]
    Order {
        status: OrderStatus,
        reasons: String,
    },
    #[error("cannot make the tls-alpn-01 certificate for {domain}")]
    AlpnCert {
        domain: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("the tls-alpn-01 certificate for {domain} is not usable: {message}")]
    AlpnKey { domain: String, message: String },
}

fn acme_err(step: &'static str) -> impl FnOnce(instant_acme::Error) -> IssueError {
    move |source| IssueError::Acme { step, source }
}

/// A certificate chain and its key, in PEM, as issued.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

/// The account file: the credentials and the directory they belong to.
#[derive(Serialize, Deserialize)]
struct SavedAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// Removes every challenge answer when the attempt ends, however it ends.
struct ClearChallenges<'a>(&'a AcmeState);

impl Drop for ClearChallenges<'_> {
    fn drop(&mut self) {
        self.0.http01.clear();
        self.0.certs.clear_challenges();
    }
}

/// Runs one issuance for every domain of `acme`; the challenges are
/// answered through `state` while it runs.
pub async fn issue(
    acme: &Acme,
    storage: &Storage,
    state: &AcmeState,
) -> Result<Issued, IssueError> {
    let account = account(acme, storage).await?;
    let identifiers: Vec<Identifier> = acme.domains.iter().cloned().map(Identifier::Dns).collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(acme_err("new order"))?;
    let _clear = ClearChallenges(state);
    let kind = match acme.challenge {
        AcmeChallenge::Http01 => ChallengeType::Http01,
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    let kind_name = challenge_name(acme.challenge);
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(acme_err("authorization"))?;
        let domain = authz.identifier().to_string();
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            status => return Err(IssueError::Authorization { domain, status }),
        }
        let mut challenge = authz
            .challenge(kind.clone())
            .ok_or(IssueError::NoChallenge {
                kind: kind_name,
                domain: domain.clone(),
            })?;
        let key_auth = challenge.key_authorization();
        match acme.challenge {
            AcmeChallenge::Http01 => state
                .http01
                .insert(challenge.token.clone(), key_auth.as_str().to_string()),
            AcmeChallenge::TlsAlpn01 => {
                let cert = alpn_challenge_cert(&domain, key_auth.digest().as_ref())?;
                state.certs.add_challenge(&domain, cert);
            }
        }
        log::info!("acme: answering the {kind_name} challenge for {domain}");
        challenge
            .set_ready()
            .await
            .map_err(acme_err("challenge ready"))?;
    }
    let polling = RetryPolicy::new()
        .initial_delay(ORDER_POLL)
        .backoff(1.5)
        .timeout(ORDER_TIMEOUT);
    let status = order
        .poll_ready(&polling)
        .await
        .map_err(acme_err("order poll"))?;
    if status != OrderStatus::Ready {
        let reasons = failed_challenges(&mut order).await;
        return Err(IssueError::Order { status, reasons });
    }
    let key_pem = order.finalize().await.map_err(acme_err("finalize"))?;
    let chain_pem = order
        .poll_certificate(&polling)
        .await
        .map_err(acme_err("certificate download"))?;
    Ok(Issued { chain_pem, key_pem })
}

/// What the CA said about each failed challenge of an order.
async fn failed_challenges(order: &mut instant_acme::Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        let domain = authz.identifier().to_string();
        if let Ok(state) = authz.refresh().await {
            for ch in &state.challenges {
                if let Some(problem) = &ch.error {
                    reasons.push(format!("{domain}: {problem}"));
                }
            }
        }
    }
    if reasons.is_empty() {
        "no reason given".to_string()
    } else {
        reasons.join("; ")
    }
}

pub(crate) fn challenge_name(c: AcmeChallenge) -> &'static str {
    match c {
        AcmeChallenge::Http01 => "http-01",
        AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
    }
}

/// The stored account for this directory, or a new one (then stored).
async fn account(acme: &Acme, storage: &Storage) -> Result<Account, IssueError> {
    let saved = {
        let storage = storage.clone();
        tokio::task::spawn_blocking(move || storage.read_account())
            .await
            .map_err(|e| IssueError::Storage(std::io::Error::other(e)))?
            .map_err(IssueError::Storage)?
    };
    if let Some(bytes) = saved {
        let saved: SavedAccount =
            serde_json::from_slice(&bytes).map_err(IssueError::AccountFile)?;
        if saved.directory == acme.directory {
            return Account::builder_with_http(http_client(acme.ca_bundle.as_deref())?)
                .from_credentials(saved.credentials)
                .await
                .map_err(acme_err("account"));
        }
        log::info!(
            "acme: the stored account belongs to {}; creating one at {}",
            saved.directory,
            acme.directory
        );
    }
    let contact: Vec<&str> = acme.contact.iter().map(String::as_str).collect();
    let (account, credentials) =
        Account::builder_with_http(http_client(acme.ca_bundle.as_deref())?)
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                acme.directory.clone(),
                None,
            )
            .await
            .map_err(acme_err("new account"))?;
    let bytes = serde_json::to_vec_pretty(&SavedAccount {
        directory: acme.directory.clone(),
        credentials,
    })
    .map_err(IssueError::AccountFile)?;
    let storage = storage.clone();
    tokio::task::spawn_blocking(move || storage.write_account(&bytes))
        .await
        .map_err(|e| IssueError::Storage(std::io::Error::other(e)))?
        .map_err(IssueError::Storage)?;
    log::info!("acme: created an account at {}", acme.directory);
    Ok(account)
}

/// hyper over rustls (ring), trusting the system's roots and `ca_bundle`.
fn http_client(ca_bundle: Option<&Path>) -> Result<Box<dyn HttpClient>, IssueError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_bundle {
        let pem = std::fs::read(path).map_err(|source| IssueError::CaBundle {
            path: path.display().to_string(),
            source,
        })?;
        roots
            .add_parsable_certificates(CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok));
    }
    if roots.is_empty() {
        return Err(IssueError::NoRoots);
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(IssueError::TlsConfig)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    let client: HyperClient<_, BodyWrapper<Bytes>> =
        HyperClient::builder(TokioExecutor::new()).build(connector);
    Ok(Box::new(client))
}

/// The self-signed certificate a tls-alpn-01 validation of `domain` must
/// see (RFC 8737 §3): the domain as its only name and the critical
/// acmeIdentifier extension holding the SHA-256 of the key authorization.
fn alpn_challenge_cert(domain: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, IssueError> {
    let alpn_err = |message: String| IssueError::AlpnKey {
        domain: domain.to_string(),
        message,
    };
    if digest.len() != 32 {
        return Err(alpn_err(format!("a {}-byte digest", digest.len())));
    }
    let rcgen_err = |source| IssueError::AlpnCert {
        domain: domain.to_string(),
        source,
    };
    let mut params = rcgen::CertificateParams::new(vec![domain.to_string()]).map_err(rcgen_err)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(rcgen_err)?;
    let cert = params.self_signed(&key).map_err(rcgen_err)?;
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = rustls::crypto::ring::sign::any_supported_type(&private)
        .map_err(|e| alpn_err(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alpn_certificate_names_the_domain_and_carries_the_digest() {
        let digest = [7u8; 32];
        let ck = alpn_challenge_cert("a.example", &digest).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(ck.cert[0].as_ref()).unwrap();
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        // DER OCTET STRING of 32 bytes.
        assert_eq!(ext.value[..2], [0x04, 32]);
        assert_eq!(ext.value[2..], digest);
        assert!(alpn_challenge_cert("a.example", &[1, 2]).is_err());
    }
}
