//! Reloads: the config file read again, validated, and the next [`Snapshot`]
//! built completely (carrying server health, pooled state and limiter buckets
//! over) before one `store` swaps it in. A reload that fails changes nothing.
//!
//! Reloads are serialised (SIGHUP, `gatehouse reload` and `watch_config` may
//! overlap). Each one first records a fingerprint of the files it is about to
//! read ([`State::files_fingerprint`]), so the config watcher ([`watch`]) can
//! tell a file that changed since from one a reload already saw.

pub(crate) mod watch;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use crate::config::{self, Config, ConfigErrors};
use crate::metrics;
use crate::state::{Snapshot, State};
use crate::tls::CertSet;

/// What a successful reload changed that it could not apply.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// Settings that need new sockets or threads: they take an upgrade (`run -u`).
    pub needs_upgrade: Vec<String>,
}

impl State {
    /// A hash of the contents of the files a reload reads: the config file and
    /// the certificates and keys the running config names. Reads files: call
    /// it off the async threads.
    pub fn files_fingerprint(&self) -> u64 {
        fingerprint(&watched_files(&self.config_path, &self.current().config))
    }

    /// [`State::files_fingerprint`] as the last load or reload attempt saw it,
    /// whether that attempt succeeded or not.
    pub fn loaded_fingerprint(&self) -> u64 {
        self.loaded_fingerprint.load(Ordering::Relaxed)
    }

    /// Re-reads the config file and swaps it in. On any error the running
    /// config stays and the error is returned (and counted). Blocking (reads
    /// files); one reload runs at a time.
    pub fn reload(&self) -> Result<ReloadReport, ConfigErrors> {
        let _one_at_a_time = self
            .reload_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.loaded_fingerprint
            .store(self.files_fingerprint(), Ordering::Relaxed);
        let result = self.try_reload();
        match &result {
            // Logged before counted: whoever watches the counter finds the log.
            Ok(report) => {
                for item in &report.needs_upgrade {
                    log::warn!("reload: {item} changed; this takes a binary upgrade (run -u) and is ignored");
                }
                log::info!("reload: config {} applied", self.config_path.display());
                self.note_reload(None);
                metrics::record_reload(true);
            }
            Err(errors) => {
                log::error!("reload rejected, the running config stays:\n{errors}");
                self.note_reload(Some(errors.to_string()));
                metrics::record_reload(false);
            }
        }
        result
    }

    fn try_reload(&self) -> Result<ReloadReport, ConfigErrors> {
        let config = config::load(&self.config_path)?;
        let old = self.current();
        let report = ReloadReport {
            needs_upgrade: needs_upgrade(&old.config, &config),
        };
        // Certificates first: a missing or broken file keeps the old set.
        let certs = match (&config.https, &self.certs) {
            (Some(https), Some(_)) => Some(CertSet::load(https).map_err(|e| {
                ConfigErrors::single(
                    Some(&self.config_path),
                    format!("https: {}", crate::logging::chain(&e)),
                )
            })?),
            _ => None,
        };
        let runtime = Snapshot::build(config, Some(&old));
        crate::pool::health::first_checks(runtime.pools.values());
        if let (Some(resolver), Some(certs)) = (&self.certs, certs) {
            resolver.replace(certs);
        }
        for pool in runtime.pools.values() {
            for b in &pool.backends {
                metrics::set_backend_health(pool.name(), &b.label, b.is_healthy());
                if pool.config.passive.is_some() {
                    metrics::set_backend_ejected(pool.name(), &b.label, b.is_ejected());
                }
            }
        }
        for (name, pool) in &old.pools {
            for b in &pool.backends {
                let kept = runtime
                    .pools
                    .get(name)
                    .is_some_and(|p| p.backends.iter().any(|n| n.addr == b.addr));
                if !kept {
                    metrics::remove_backend(name, &b.label);
                }
            }
        }
        self.current.store(Arc::new(runtime));
        self.generation.send_modify(|g| *g += 1);
        Ok(report)
    }
}

/// Settings a reload cannot apply because they need new sockets or threads.
fn needs_upgrade(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let http = |c: &Config| c.http.as_ref().map(|h| h.listen.clone());
    let https = |c: &Config| c.https.as_ref().map(|h| h.listen.clone());
    if http(old) != http(new) {
        out.push("http.listen".to_string());
    }
    if https(old) != https(new) {
        out.push("https.listen".to_string());
    }
    if old.https.as_ref().map(|h| h.http2) != new.https.as_ref().map(|h| h.http2) {
        out.push("https.http2".to_string());
    }
    if old.admin != new.admin {
        out.push("admin.listen".to_string());
    }
    if old.server.threads != new.server.threads {
        out.push("server.threads".to_string());
    }
    for (key, a, b) in [
        (
            "server.pid_file",
            &old.server.pid_file,
            &new.server.pid_file,
        ),
        (
            "server.upgrade_sock",
            &old.server.upgrade_sock,
            &new.server.upgrade_sock,
        ),
    ] {
        if a != b {
            out.push(key.to_string());
        }
    }
    if old.server.access_log != new.server.access_log {
        out.push("server.access_log".to_string());
    }
    if old.server.grace_period != new.server.grace_period {
        out.push("server.grace_period".to_string());
    }
    if old.server.drain_delay != new.server.drain_delay {
        out.push("server.drain_delay".to_string());
    }
    if old.acme != new.acme {
        out.push("acme".to_string());
    }
    out
}

/// The config file and every certificate and key file `config` names.
pub(crate) fn watched_files(config_path: &Path, config: &Config) -> Vec<PathBuf> {
    let mut files = vec![config_path.to_path_buf()];
    if let Some(https) = &config.https {
        if https.default_pair {
            files.push(https.cert.clone());
            files.push(https.key.clone());
        }
        for sni in &https.sni {
            files.push(sni.cert.clone());
            files.push(sni.key.clone());
        }
    }
    files
}

/// A hash of each file's path and contents (a file that cannot be read hashes
/// as its error kind, so it changes when the file appears).
pub(crate) fn fingerprint(files: &[PathBuf]) -> u64 {
    let mut h = DefaultHasher::new();
    for path in files {
        path.hash(&mut h);
        match std::fs::read(path) {
            Ok(bytes) => bytes.hash(&mut h),
            Err(e) => format!("{:?}", e.kind()).hash(&mut h),
        }
    }
    h.finish()
}
