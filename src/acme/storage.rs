//! The ACME files under `acme.storage`: the account (its key and URL),
//! the certificate chain and its key. The directory is made private (0700),
//! every file is written private (0600) to a temp file in the same
//! directory and renamed over the old one, so a reader (or a crash) never
//! sees half a file, and the old pair stays until the new one is complete.

use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;

use crate::tls::{load_certified_key, TlsError};

/// File names inside the storage directory.
const ACCOUNT_FILE: &str = "account.json";
const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";

/// The storage directory of one `[acme]` section.
#[derive(Debug, Clone)]
pub struct Storage {
    dir: PathBuf,
}

/// A certificate read back from storage or just issued.
pub struct Stored {
    pub key: Arc<CertifiedKey>,
    pub not_after: SystemTime,
    /// Lower-case DNS names of its subjectAltName.
    pub names: Vec<String>,
}

impl Storage {
    pub fn new(dir: &Path) -> Storage {
        Storage {
            dir: dir.to_path_buf(),
        }
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CERT_FILE)
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join(KEY_FILE)
    }

    fn account_path(&self) -> PathBuf {
        self.dir.join(ACCOUNT_FILE)
    }

    /// Creates the directory if needed and makes it private (0700).
    pub fn ensure_dir(&self) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
    }

    /// The saved account, if there is one.
    pub fn read_account(&self) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.account_path()) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn write_account(&self, bytes: &[u8]) -> io::Result<()> {
        self.ensure_dir()?;
        write_private(&self.account_path(), bytes)
    }

    /// The stored certificate, when both files are there and make a pair.
    pub fn read_cert(&self) -> Result<Option<Stored>, TlsError> {
        let (cert, key) = (self.cert_path(), self.key_path());
        if !cert.is_file() || !key.is_file() {
            return Ok(None);
        }
        let certified = load_certified_key(&cert, &key)?;
        Ok(Some(describe(certified)))
    }

    /// Replaces the stored pair: the key first, then the chain (a reader that
    /// sees the new chain also sees its key).
    pub fn write_cert(&self, chain_pem: &str, key_pem: &str) -> io::Result<()> {
        self.ensure_dir()?;
        write_private(&self.key_path(), key_pem.as_bytes())?;
        write_private(&self.cert_path(), chain_pem.as_bytes())
    }
}

/// The end of validity and the names of a certified key's leaf certificate
/// (far past and no names when it cannot be parsed, so it is renewed).
pub fn describe(key: Arc<CertifiedKey>) -> Stored {
    let (not_after, names) = key
        .cert
        .first()
        .map(|der| leaf_facts(der))
        .unwrap_or((SystemTime::UNIX_EPOCH, Vec::new()));
    Stored {
        key,
        not_after,
        names,
    }
}

fn leaf_facts(der: &CertificateDer<'_>) -> (SystemTime, Vec<String>) {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return (SystemTime::UNIX_EPOCH, Vec::new());
    };
    let not_after = u64::try_from(cert.validity().not_after.timestamp())
        .ok()
        .and_then(|secs| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    (not_after, names)
}

/// Parses a PEM chain and key as issued into a signing-ready pair.
pub fn certified_from_pem(chain_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<_> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err("the CA sent no PEM certificate".into());
    }
    let private = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("the generated key does not parse: {e}"))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&private)
        .map_err(|e| format!("the generated key is not usable: {e}"))?;
    let certified = CertifiedKey::new(chain, signer);
    certified
        .keys_match()
        .map_err(|e| format!("the certificate does not match its key: {e}"))?;
    Ok(Arc::new(certified))
}

/// Writes `data` to `path` with mode 0600, through a temp file renamed over it.
fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    // A temp file left by an older umask or owner: private all the same.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_directory_are_private_and_read_back() {
        let base = tempfile::tempdir().unwrap();
        let storage = Storage::new(&base.path().join("acme/store"));
        let generated =
            crate::tls::generate_self_signed(&["a.example".to_string(), "b.example".to_string()])
                .unwrap();
        assert!(storage.read_cert().unwrap().is_none());
        storage
            .write_cert(&generated.cert_pem, &generated.key_pem)
            .unwrap();
        storage.write_account(b"{}").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&base.path().join("acme/store")), 0o700);
        for file in [
            storage.cert_path(),
            storage.key_path(),
            storage.account_path(),
        ] {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        let stored = storage.read_cert().unwrap().unwrap();
        assert_eq!(stored.names, ["a.example", "b.example"]);
        assert!(stored.not_after > SystemTime::now() + Duration::from_secs(300 * 24 * 3600));
        assert_eq!(storage.read_account().unwrap().unwrap(), b"{}");
        assert!(certified_from_pem(&generated.cert_pem, &generated.key_pem).is_ok());
        assert!(certified_from_pem(&generated.key_pem, &generated.key_pem).is_err());
    }
}
