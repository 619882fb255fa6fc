//! `[acme]`: the CA, the domains, where the account and certificates are
//! kept, and which challenge answers for us (and so which listener it needs).

use std::net::IpAddr;
use std::path::Path;

use super::Checker;
use crate::config::defaults::*;
use crate::config::error::KeyPath;
use crate::config::file::AcmeSection;
use crate::config::model::{Acme, AcmeChallenge, HttpListener, HttpsListener};

pub(super) fn check_acme(
    c: &mut Checker,
    a: &AcmeSection,
    http: Option<&HttpListener>,
    https: Option<&HttpsListener>,
) -> Acme {
    let p = KeyPath::of(&["acme"]);
    let directory = a
        .directory
        .clone()
        .unwrap_or_else(|| DEFAULT_ACME_DIRECTORY.to_string());
    if !is_http_url(&directory) {
        c.problem(
            p.key("directory"),
            format!("{directory:?} is not an http:// or https:// URL of an ACME directory"),
        );
    }
    let contact: Vec<String> = a
        .contact
        .as_ref()
        .map(|o| match o {
            crate::config::file::OneOrMany::One(s) => vec![s.clone()],
            crate::config::file::OneOrMany::Many(v) => v.clone(),
        })
        .unwrap_or_default()
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    for (i, uri) in contact.iter().enumerate() {
        let ok = uri
            .split_once(':')
            .is_some_and(|(scheme, rest)| !scheme.is_empty() && !rest.is_empty());
        if !ok {
            let path = match &a.contact {
                Some(crate::config::file::OneOrMany::Many(_)) => p.key("contact").index(i),
                _ => p.key("contact"),
            };
            c.problem(
                path,
                format!("{uri:?} is not a contact URI (e.g. \"mailto:ops@example.com\")"),
            );
        }
    }
    let domains = check_domains(c, &p, &a.domains);
    let storage = c.path(a.storage.as_deref().unwrap_or(DEFAULT_ACME_STORAGE));
    if let Err(msg) = writable_dir(&storage) {
        c.problem(p.key("storage"), msg);
    }
    let challenge = match a.challenge.as_deref() {
        None | Some("http-01") => AcmeChallenge::Http01,
        Some("tls-alpn-01") => AcmeChallenge::TlsAlpn01,
        Some(other) => {
            c.problem(
                p.key("challenge"),
                format!("{other:?} is not a challenge Gatehouse answers: \"http-01\" or \"tls-alpn-01\""),
            );
            AcmeChallenge::Http01
        }
    };
    match challenge {
        AcmeChallenge::Http01 if http.is_none() => c.problem(
            p.key("challenge"),
            "http-01 is answered on the [http] listener (port 80 for a public CA): add an [http] section",
        ),
        _ => {}
    }
    if https.is_none() {
        c.problem(
            p.clone(),
            "the ACME certificate is served on the [https] listener: add an [https] section",
        );
    }
    let renew_before = c.positive_duration(
        p.key("renew_before"),
        a.renew_before.as_deref(),
        DEFAULT_ACME_RENEW_BEFORE,
    );
    let retry_backoff = c.positive_duration(
        p.key("retry_backoff"),
        a.retry_backoff.as_deref(),
        DEFAULT_ACME_RETRY_BACKOFF,
    );
    let ca_bundle = match a.ca_bundle.as_deref() {
        None | Some("") => None,
        Some(file) => {
            let path = c.path(file);
            if let Err(msg) = has_pem_certificate(&path) {
                c.problem(p.key("ca_bundle"), msg);
            }
            Some(path)
        }
    };
    Acme {
        directory,
        contact,
        domains,
        storage,
        challenge,
        renew_before,
        ca_bundle,
        retry_backoff: retry_backoff.min(MAX_ACME_RETRY_BACKOFF),
    }
}

/// Lower-case DNS names; no wildcards (neither challenge can prove one), no
/// IP addresses, no repeats.
fn check_domains(c: &mut Checker, p: &KeyPath, domains: &[String]) -> Vec<String> {
    if domains.is_empty() {
        c.problem(
            p.key("domains"),
            "needs at least one domain name to get a certificate for",
        );
    }
    let mut out: Vec<String> = Vec::new();
    for (i, d) in domains.iter().enumerate() {
        let name = d.trim_end_matches('.').to_ascii_lowercase();
        let problem = if name.starts_with("*.") {
            Some("is a wildcard: http-01 and tls-alpn-01 cannot prove one (it takes dns-01)")
        } else if name.parse::<IpAddr>().is_ok() {
            Some("is an IP address: give a DNS name")
        } else if !is_dns_name(&name) {
            Some("is not a DNS name")
        } else if out.contains(&name) {
            Some("is listed twice")
        } else {
            None
        };
        match problem {
            Some(why) => c.problem(p.key("domains").index(i), format!("{d:?} {why}")),
            None => out.push(name),
        }
    }
    out
}

/// Labels of letters, digits and inner hyphens, 1 to 63 bytes each, 253 at most.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn is_http_url(text: &str) -> bool {
    match text.parse::<http::Uri>() {
        Ok(uri) => matches!(uri.scheme_str(), Some("https" | "http")) && uri.authority().is_some(),
        Err(_) => false,
    }
}

/// `dir` is a directory Gatehouse can create files in, or can be created
/// (its nearest existing ancestor is such a directory). Creates nothing that
/// stays.
fn writable_dir(dir: &Path) -> Result<(), String> {
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => existing = parent,
            _ => return Err(format!("{} cannot be created", dir.display())),
        }
    }
    if !existing.is_dir() {
        return Err(format!("{} is not a directory", existing.display()));
    }
    tempfile::tempfile_in(existing).map(drop).map_err(|e| {
        if existing == dir {
            format!("{} is not writable: {e}", dir.display())
        } else {
            format!(
                "{} cannot be created: {} is not writable: {e}",
                dir.display(),
                existing.display()
            )
        }
    })
}

/// `path` is a PEM file with at least one certificate.
fn has_pem_certificate(path: &Path) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if CertificateDer::pem_slice_iter(&pem).any(|c| c.is_ok()) {
        Ok(())
    } else {
        Err(format!("{}: no PEM certificate found", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{parse, AcmeChallenge};

    fn keys_of(text: &str, base: &Path) -> Vec<String> {
        match parse(text, None, base) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.iter().map(|e| e.key.clone()).collect(),
        }
    }

    #[test]
    fn a_minimal_acme_section_needs_no_certificate_files() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"
[http]
listen = ["127.0.0.1:80"]
[https]
listen = ["127.0.0.1:443"]
[acme]
domains = ["Example.com", "www.example.com."]
"#;
        let config = parse(text, None, dir.path()).unwrap();
        let acme = config.acme.unwrap();
        assert_eq!(acme.domains, ["example.com", "www.example.com"]);
        assert_eq!(acme.challenge, AcmeChallenge::Http01);
        assert_eq!(acme.storage, dir.path().join("certs/acme"));
        assert!(acme
            .directory
            .starts_with("https://acme-v02.api.letsencrypt.org/"));
        assert!(!config.https.unwrap().default_pair);
        assert!(
            !dir.path().join("certs").exists(),
            "validation creates nothing"
        );
    }

    #[test]
    fn bad_acme_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), "x").unwrap();
        let text = r#"
[https]
listen = ["127.0.0.1:443"]
[acme]
directory = "ftp://ca"
contact = ["ops@example.com"]
domains = ["*.example.com", "10.0.0.1", "a..b", "ok.example", "ok.example"]
storage = "file/acme"
challenge = "dns-01"
renew_before = "soon"
ca_bundle = "file"
"#;
        let keys = keys_of(text, dir.path());
        for key in [
            "acme.directory",
            "acme.contact[0]",
            "acme.domains[0]",
            "acme.domains[1]",
            "acme.domains[2]",
            "acme.domains[4]",
            "acme.storage",
            "acme.challenge",
            "acme.renew_before",
            "acme.ca_bundle",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} missing in {keys:?}");
        }
        assert!(!keys.iter().any(|k| k == "acme.domains[3]"));
    }

    #[test]
    fn each_challenge_needs_its_listener() {
        let dir = tempfile::tempdir().unwrap();
        let no_http = r#"
[https]
listen = ["127.0.0.1:443"]
[acme]
domains = ["example.com"]
"#;
        assert_eq!(keys_of(no_http, dir.path()), ["acme.challenge"]);
        let alpn_only_https = r#"
[https]
listen = ["127.0.0.1:443"]
[acme]
domains = ["example.com"]
challenge = "tls-alpn-01"
"#;
        assert!(keys_of(alpn_only_https, dir.path()).is_empty());
        let no_https = r#"
[http]
listen = ["127.0.0.1:80"]
[acme]
domains = []
"#;
        let keys = keys_of(no_https, dir.path());
        assert!(keys.iter().any(|k| k == "acme"), "{keys:?}");
        assert!(keys.iter().any(|k| k == "acme.domains"), "{keys:?}");
    }
}
