//! `gatehouse check` (validate without binding; every problem with its file,
//! line, column and key path) and `gatehouse cert`.
//!
//! These run the binary to completion and need no runtime: plain `#[test]`s.

use crate::common;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `gatehouse check -c gatehouse.toml` in a fresh temp dir; returns
/// whether it exited 0, its exit code, stdout + stderr, and the config path.
pub(crate) fn check(config: &str) -> (Option<i32>, String, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gatehouse.toml");
    std::fs::write(&file, config).unwrap();
    let out = Command::new(common::gatehouse::binary())
        .arg("check")
        .arg("-c")
        .arg(&file)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text, file, dir)
}

/// Asserts exit code 1 and that the output names `key` at `file:line:`.
fn assert_reported(code: Option<i32>, out: &str, file: &Path, key: &str, line: usize) {
    assert_eq!(code, Some(1), "exit code; output:\n{out}");
    assert!(out.contains(key), "key path {key} not named:\n{out}");
    let at = format!("{}:{line}:", file.display());
    let located = out.lines().any(|l| {
        l.contains(key)
            && l.find(&at).is_some_and(|i| {
                l[i + at.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit())
            })
    });
    assert!(located, "{key} not reported at {at}COL:\n{out}");
}

const GOOD: &str = r#"
[server]
threads = 2
grace_period = "1s"
access_log = "off"

[http]
listen = ["127.0.0.1:{busy}"]
redirect_to_https = true
https_port = 8443

[https]
listen = ["127.0.0.1:8443"]
self_signed = true
cert = "certs/server.crt"
key = "certs/server.key"

[[route]]
prefix = "/api/"
upstream = "api"
strip_prefix = true

[upstream.api]
servers = ["127.0.0.1:5000", "127.0.0.1:5001 weight=2"]
balance = "round_robin"

[upstream.api.health]
interval = "2s"
"#;

#[test]
fn good_config_is_ok_without_binding() {
    // The listen port is taken: check must not try to bind it.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let (code, out, _, _dir) = check(&GOOD.replace("{busy}", &port.to_string()));
    assert_eq!(code, Some(0), "output:\n{out}");
    assert!(out.lines().any(|l| l.trim() == "ok"), "output:\n{out}");
}

#[test]
fn unknown_key_is_reported_with_its_place() {
    let (code, out, file, _dir) = check("[server]\nthreds = 2\n");
    assert_eq!(code, Some(1), "output:\n{out}");
    assert!(out.contains("threds"), "output:\n{out}");
    assert!(
        out.contains(&format!("{}:2:1", file.display())),
        "output:\n{out}"
    );
}

#[test]
fn bad_duration_is_reported_with_its_key_path() {
    let config = r#"[upstream.api]
servers = ["127.0.0.1:5000"]

[upstream.api.health]
interval = "2 parsecs"
"#;
    let (code, out, file, _dir) = check(config);
    assert_reported(code, &out, &file, "upstream.api.health.interval", 5);
}

#[test]
fn route_to_undefined_upstream_is_reported() {
    let config = r#"[[route]]
prefix = "/api/"
upstream = "api"

[[route]]
prefix = "/x/"
upstream = "nope"

[upstream.api]
servers = ["127.0.0.1:5000"]
"#;
    let (code, out, file, _dir) = check(config);
    assert_reported(code, &out, &file, "route[1].upstream", 7);
    assert!(out.contains("nope"), "the undefined name is given:\n{out}");
}

#[test]
fn bad_server_address_is_reported() {
    let config = r#"[upstream.api]
servers = [
  "127.0.0.1:5000",
  "not an address",
]
"#;
    let (code, out, file, _dir) = check(config);
    assert_reported(code, &out, &file, "upstream.api.servers[1]", 4);
}

#[test]
fn every_problem_is_reported_at_once() {
    let config = r#"[http]
listen = ["0.0.0.0:http"]
redirect_to_https = false

[[route]]
prefix = "/"
upstream = "missing"

[upstream.api]
servers = ["127.0.0.1:99999"]

[upstream.api.health]
interval = "soon"
"#;
    let (code, out, file, _dir) = check(config);
    assert_reported(code, &out, &file, "http.listen[0]", 2);
    assert_reported(code, &out, &file, "route[0].upstream", 7);
    assert_reported(code, &out, &file, "upstream.api.servers[0]", 10);
    assert_reported(code, &out, &file, "upstream.api.health.interval", 13);
}

#[test]
fn type_errors_do_not_hide_each_other_or_later_problems() {
    // An unknown key and a wrong type (serde) around a bad duration (validation).
    let config = r#"[http]
listen = ["127.0.0.1:8080"]
redirect_to_https = false

[upstream.api]
servers = ["127.0.0.1:5000"]
retrys = 3

[upstream.api.health]
interval = "soon"

[rate_limit.fast]
rate = "fast"
"#;
    let (code, out, file, _dir) = check(config);
    assert_reported(code, &out, &file, "upstream.api.retrys", 7);
    assert_reported(code, &out, &file, "upstream.api.health.interval", 10);
    assert_reported(code, &out, &file, "rate_limit.fast.rate", 13);
    let reported = out
        .lines()
        .filter(|l| l.contains(": upstream.") || l.contains(": rate_limit."))
        .count();
    assert_eq!(reported, 3, "each problem once:\n{out}");
}

#[test]
fn toml_syntax_error_gives_its_line() {
    let (code, out, file, _dir) = check("[server]\nthreads = 2\ngrace_period = \"1s\n");
    assert_eq!(code, Some(1), "output:\n{out}");
    assert!(
        out.contains(&format!("{}:3:", file.display())),
        "output:\n{out}"
    );
}

#[test]
fn cert_writes_a_usable_certificate_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let out = Command::new(common::gatehouse::binary())
        .args(["cert", "--host", "example.test", "--out"])
        .arg(&out_dir)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut certs = Vec::new();
    let mut keys = Vec::new();
    for entry in std::fs::read_dir(&out_dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let found: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        if !found.is_empty() {
            certs = found;
        }
        if let Ok(key) = PrivateKeyDer::from_pem_slice(&bytes) {
            keys.push(key);
        }
    }
    assert!(
        !certs.is_empty(),
        "no certificate written in {}",
        out_dir.display()
    );
    assert_eq!(keys.len(), 1, "one key written");
    let sans = common::tls::subject_alt_names(certs[0].as_ref());
    assert!(sans.iter().any(|s| s == "example.test"), "{sans:?}");

    // The pair is usable by a TLS server (the key matches the certificate).
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, keys.remove(0));
    assert!(config.is_ok(), "{:?}", config.err());
}
