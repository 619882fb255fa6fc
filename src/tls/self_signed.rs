//! Development certificates: self-signed, made with rcgen for the names in
//! [`SELF_SIGNED_HOSTS`] (or those given to `gatehouse cert`), valid from now
//! for a year, and regenerated at start when missing, unreadable or near
//! expiry (`https.self_signed = true`).

use std::path::Path;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::TlsError;
use crate::config::HttpsListener;

/// Names a development certificate is made for.
pub const SELF_SIGNED_HOSTS: &[&str] = &["localhost", "127.0.0.1", "::1"];

/// How long a generated certificate is valid from now: 365 days, well under
/// the 398 days browsers accept for a server certificate.
pub const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// How far back a generated certificate's validity starts, so that a client
/// whose clock is a little behind accepts it: 1 hour.
pub const SELF_SIGNED_BACKDATE: Duration = Duration::from_secs(3600);

/// With `self_signed = true`, a certificate that expires within this time is
/// regenerated at start: 7 days.
pub const SELF_SIGNED_RENEW_BEFORE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Bytes of randomness in a generated certificate's serial number (the
/// CA/Browser Forum asks for at least 8).
const SERIAL_BYTES: usize = 16;

/// A certificate and key pair in PEM, as generated for development.
pub struct GeneratedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Makes a self-signed certificate for `hosts` (DNS names or IP addresses),
/// valid from [`SELF_SIGNED_BACKDATE`] ago for [`SELF_SIGNED_VALIDITY`], with a
/// random serial number.
pub fn generate_self_signed(hosts: &[String]) -> Result<GeneratedCert, TlsError> {
    let now = SystemTime::now();
    generate_valid_between(
        hosts,
        now - SELF_SIGNED_BACKDATE,
        now + SELF_SIGNED_VALIDITY,
    )
}

fn generate_valid_between(
    hosts: &[String],
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<GeneratedCert, TlsError> {
    let mut params = rcgen::CertificateParams::new(hosts.to_vec())?;
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    params.serial_number = Some(random_serial()?);
    let signing_key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&signing_key)?;
    Ok(GeneratedCert {
        cert_pem: cert.pem(),
        key_pem: signing_key.serialize_pem(),
    })
}

/// A positive serial number of [`SERIAL_BYTES`] bytes from the system's
/// secure random source.
fn random_serial() -> Result<rcgen::SerialNumber, TlsError> {
    let mut bytes = [0u8; SERIAL_BYTES];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| TlsError::Random)?;
    // Top bit clear: the number is positive; next bit set: never zero and
    // always the same length.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}

/// Writes a generated pair; the key file is made readable by its owner only.
pub fn write_cert_pair(generated: &GeneratedCert, cert: &Path, key: &Path) -> Result<(), TlsError> {
    for path in [cert, key] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
                path: dir.to_path_buf(),
                source,
            })?;
        }
    }
    write_private(key, generated.key_pem.as_bytes())?;
    std::fs::write(cert, &generated.cert_pem).map_err(|source| TlsError::Write {
        path: cert.to_path_buf(),
        source,
    })
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(data).map_err(err)
}

/// With `self_signed = true`, makes the default certificate when either file
/// is missing, or when the certificate cannot be read or expires within
/// [`SELF_SIGNED_RENEW_BEFORE`]. Returns whether a certificate was generated.
pub fn ensure_default_cert(https: &HttpsListener) -> Result<bool, TlsError> {
    if !https.self_signed {
        return Ok(false);
    }
    let replacing = if https.cert.is_file() && https.key.is_file() {
        match renewal_reason(&https.cert, SystemTime::now()) {
            Some(reason) => Some(reason),
            None => return Ok(false),
        }
    } else {
        None
    };
    let hosts: Vec<String> = SELF_SIGNED_HOSTS.iter().map(|h| h.to_string()).collect();
    let generated = generate_self_signed(&hosts)?;
    write_cert_pair(&generated, &https.cert, &https.key)?;
    match replacing {
        Some(reason) => log::warn!(
            "the self-signed certificate at {} {reason}: generated a new one for {}",
            https.cert.display(),
            SELF_SIGNED_HOSTS.join(", "),
        ),
        None => log::warn!(
            "generated a self-signed development certificate for {} at {}",
            SELF_SIGNED_HOSTS.join(", "),
            https.cert.display()
        ),
    }
    Ok(true)
}

/// Why the certificate at `cert` should be replaced at time `now`, if it should.
fn renewal_reason(cert: &Path, now: SystemTime) -> Option<String> {
    let Some(not_after) = not_after(cert) else {
        return Some("cannot be read as a certificate".to_string());
    };
    let expiry = httpdate::fmt_http_date(not_after);
    if not_after <= now {
        Some(format!("expired on {expiry}"))
    } else if not_after <= now + SELF_SIGNED_RENEW_BEFORE {
        Some(format!("expires on {expiry}"))
    } else {
        None
    }
}

/// The end of the validity of the first certificate in a PEM file.
fn not_after(cert: &Path) -> Option<SystemTime> {
    let pem = std::fs::read(cert).ok()?;
    let der = CertificateDer::pem_slice_iter(&pem).next()?.ok()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let secs = u64::try_from(parsed.validity().not_after.timestamp()).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::super::load_certified_key;

    use super::*;

    fn unix_secs(t: SystemTime) -> i64 {
        t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
    }

    /// Validity (not before, not after) and serial of a PEM certificate, as
    /// read by x509-parser.
    fn validity(pem: &[u8]) -> (i64, i64, Vec<u8>) {
        let der = CertificateDer::pem_slice_iter(pem).next().unwrap().unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let v = cert.validity();
        (
            v.not_before.timestamp(),
            v.not_after.timestamp(),
            cert.raw_serial().to_vec(),
        )
    }

    #[test]
    fn generated_certificates_are_valid_from_now_for_a_year() {
        let hosts = vec!["localhost".to_string()];
        let before = unix_secs(SystemTime::now());
        let one = generate_self_signed(&hosts).unwrap();
        let two = generate_self_signed(&hosts).unwrap();
        let after = unix_secs(SystemTime::now());
        let (not_before, not_after, serial) = validity(one.cert_pem.as_bytes());
        let backdate = SELF_SIGNED_BACKDATE.as_secs() as i64;
        assert!(
            (before - backdate..=after - backdate).contains(&not_before),
            "not before {not_before}, generated at {before}..{after}"
        );
        let year = 365 * 24 * 3600;
        assert!(
            (before + year..=after + year).contains(&not_after),
            "not after {not_after}, generated at {before}..{after}"
        );
        assert_eq!(serial.len(), SERIAL_BYTES);
        assert_ne!(
            serial,
            validity(two.cert_pem.as_bytes()).2,
            "random serials"
        );
    }

    fn self_signed_listener(dir: &Path, self_signed: bool) -> HttpsListener {
        HttpsListener {
            listen: vec![],
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
            default_pair: true,
            self_signed,
            http2: true,
            hsts: None,
            sni: vec![],
            proxy_protocol: false,
        }
    }

    fn write_expired(https: &HttpsListener) {
        let now = SystemTime::now();
        let day = Duration::from_secs(24 * 3600);
        let g =
            generate_valid_between(&["localhost".to_string()], now - 400 * day, now - day).unwrap();
        write_cert_pair(&g, &https.cert, &https.key).unwrap();
    }

    #[test]
    fn an_expired_self_signed_certificate_is_replaced_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let https = self_signed_listener(dir.path(), true);
        write_expired(&https);
        let now = unix_secs(SystemTime::now());
        assert!(validity(&std::fs::read(&https.cert).unwrap()).1 < now);

        assert!(ensure_default_cert(&https).unwrap(), "regenerated");
        let (_, not_after, _) = validity(&std::fs::read(&https.cert).unwrap());
        assert!(
            not_after > now + 300 * 24 * 3600,
            "valid again: {not_after}"
        );
        assert!(load_certified_key(&https.cert, &https.key).is_ok());

        assert!(!ensure_default_cert(&https).unwrap(), "a valid one is kept");
    }

    #[test]
    fn a_certificate_is_renewed_a_week_before_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let https = self_signed_listener(dir.path(), true);
        let g = generate_self_signed(&["localhost".to_string()]).unwrap();
        write_cert_pair(&g, &https.cert, &https.key).unwrap();
        let now = SystemTime::now();
        assert_eq!(renewal_reason(&https.cert, now), None);
        let later = now + SELF_SIGNED_VALIDITY - SELF_SIGNED_RENEW_BEFORE / 2;
        let reason = renewal_reason(&https.cert, later).unwrap();
        assert!(reason.starts_with("expires on"), "{reason}");
    }

    #[test]
    fn an_unreadable_self_signed_certificate_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let https = self_signed_listener(dir.path(), true);
        std::fs::write(&https.cert, "not a certificate").unwrap();
        std::fs::write(&https.key, "not a key").unwrap();
        assert!(ensure_default_cert(&https).unwrap());
        assert!(load_certified_key(&https.cert, &https.key).is_ok());
    }

    #[test]
    fn certificates_are_left_alone_without_self_signed() {
        let dir = tempfile::tempdir().unwrap();
        let https = self_signed_listener(dir.path(), false);
        write_expired(&https);
        let before = std::fs::read(&https.cert).unwrap();
        assert!(!ensure_default_cert(&https).unwrap());
        assert_eq!(std::fs::read(&https.cert).unwrap(), before);
    }
}
