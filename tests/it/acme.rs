//! `[acme]` against a real ACME CA on loopback: Debian's `pebble`, with
//! `pebble-challtestsrv` as its DNS server (every name resolves to
//! 127.0.0.1, or to an address the test sets). Pebble serves its API with a
//! certificate from a CA the test makes (`acme.ca_bundle`), validates http-01
//! and tls-alpn-01 on Gatehouse's listeners (pebble's `httpPort` and
//! `tlsPort` are Gatehouse's ports) and issues from a root it makes at start,
//! which the test fetches from pebble's management interface and trusts.
//!
//! Needs `pebble` (installed by `.ci/deps.sh --test`); fails saying so
//! otherwise.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::common::{self, eventually, free_port, Gatehouse, ADMIN};

/// Time allowed for pebble to come up, and for one issuance to show.
const WITHIN: Duration = Duration::from_secs(20);

const DOMAIN: &str = "shop.test";
const WWW: &str = "www.shop.test";

/// `{storage}`, `{directory}`, `{ca}`, `{challenge}`, `{renew_before}` are
/// filled per test.
const ACME: &str = r#"
[acme]
directory = "{directory}"
contact = "mailto:ops@shop.test"
domains = ["shop.test", "www.shop.test"]
storage = "{storage}"
challenge = "{challenge}"
renew_before = "{renew_before}"
ca_bundle = "{ca}"
retry_backoff = "1s"
"#;

const HTTP_AND_HTTPS: &str = r#"
[http]
listen = ["127.0.0.1:{http_port}"]
redirect_to_https = true
https_port = {https_port}

[https]
listen = ["127.0.0.1:{https_port}"]
"#;

/// A pebble CA and its DNS server, killed on drop.
struct Pebble {
    dir: tempfile::TempDir,
    children: Vec<Child>,
    acme_port: u16,
    management_port: u16,
    dns_management_port: u16,
}

impl Pebble {
    /// Starts pebble validating on `http_port` (http-01) and `tls_port`
    /// (tls-alpn-01), issuing certificates valid for `validity` seconds
    /// (pebble's default when `None`), and waits until both answer.
    async fn start(http_port: u16, tls_port: u16, validity: Option<u64>) -> Pebble {
        let dir = tempfile::Builder::new()
            .prefix("pebble-")
            .tempdir()
            .unwrap();
        write_api_certificates(dir.path());
        let acme_port = free_port();
        let management_port = free_port();
        let dns_port = free_port();
        let dns_management_port = free_port();
        let mut config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{acme_port}"),
                "managementListenAddress": format!("127.0.0.1:{management_port}"),
                "certificate": dir.path().join("api.crt"),
                "privateKey": dir.path().join("api.key"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        if let Some(secs) = validity {
            config["pebble"]["certificateValidityPeriod"] = secs.into();
        }
        std::fs::write(dir.path().join("pebble.json"), config.to_string()).unwrap();
        let dir_path = dir.path().to_path_buf();
        let log = move |name: &str| std::fs::File::create(dir_path.join(name)).unwrap();
        let dns = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-management", &format!("127.0.0.1:{dns_management_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdin(Stdio::null())
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .expect(
                "pebble-challtestsrv is not installed: `bash .ci/deps.sh --test` installs it (Debian package pebble)",
            );
        let mut pebble = Pebble {
            dir,
            children: vec![dns],
            acme_port,
            management_port,
            dns_management_port,
        };
        let ca = Command::new("pebble")
            .arg("-config")
            .arg(pebble.dir.path().join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            // Deterministic: no bad nonces, a fresh authorization (and so a
            // validation) for every order.
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("pebble is not installed: `bash .ci/deps.sh --test` installs it");
        pebble.children.push(ca);
        let client = pebble.api_client();
        let up = eventually(WITHIN, || async {
            let api = client.get(pebble.directory()).send().await;
            let dns = client
                .get(format!("http://127.0.0.1:{}/", pebble.dns_management_port))
                .send()
                .await;
            api.is_ok_and(|r| r.status().is_success()) && dns.is_ok()
        })
        .await;
        assert!(up, "pebble did not come up:\n{}", pebble.logs());
        pebble
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme_port)
    }

    /// The CA of pebble's own API certificate (for `acme.ca_bundle`).
    fn api_ca(&self) -> PathBuf {
        self.dir.path().join("api-ca.crt")
    }

    fn api_client(&self) -> reqwest::Client {
        let ca = std::fs::read(self.api_ca()).unwrap();
        reqwest::Client::builder()
            .no_proxy()
            .timeout(common::gatehouse::CLIENT_TIMEOUT)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap()
    }

    /// The root pebble issues from (made at its start).
    async fn root(&self) -> Vec<u8> {
        let url = format!("https://127.0.0.1:{}/roots/0", self.management_port);
        let response = self.api_client().get(url).send().await.unwrap();
        assert!(response.status().is_success());
        response.bytes().await.unwrap().to_vec()
    }

    /// Every name now resolves to `ip` for pebble's validations.
    async fn resolve_all_to(&self, ip: &str) {
        let url = format!(
            "http://127.0.0.1:{}/set-default-ipv4",
            self.dns_management_port
        );
        let response = self
            .api_client()
            .post(url)
            .body(serde_json::json!({ "ip": ip }).to_string())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    fn logs(&self) -> String {
        [
            "pebble.log",
            "pebble.err",
            "challtestsrv.log",
            "challtestsrv.err",
        ]
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
            format!("--- {f} ---\n{text}")
        })
        .collect()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A CA and a certificate for 127.0.0.1 signed by it, for pebble's API.
fn write_api_certificates(dir: &Path) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pebble API test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("api-ca.crt"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("api.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("api.key"), key.serialize_pem()).unwrap();
}

/// The leaf certificate (DER) served for `name` at `addr`, after a handshake
/// that verifies it (chain, name, validity) against `root` only.
async fn served_cert(addr: SocketAddr, name: &str, root: &[u8]) -> Result<Vec<u8>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(root) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(
        Duration::from_secs(5),
        TlsConnector::from(Arc::new(config)).connect(server_name, tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no certificate")?;
    Ok(leaf.as_ref().to_vec())
}

/// Waits until `name` is served a certificate chained to `root` that
/// `accept` takes; returns it.
async fn wait_served(
    gh: &Gatehouse,
    name: &str,
    root: &[u8],
    within: Duration,
    accept: impl Fn(&[u8]) -> bool,
) -> Vec<u8> {
    let deadline = Instant::now() + within;
    loop {
        let last = match served_cert(gh.https_addr(), name, root).await {
            Ok(der) if accept(&der) => return der,
            Ok(_) => "a certificate the test waits to see replaced".to_string(),
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "no acceptable certificate for {name} within {within:?} (last: {last})\n--- gatehouse ---\n{}",
            gh.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn serial(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.raw_serial_as_string()
}

fn acme_config(pebble: &Pebble, challenge: &str, storage: &str, renew_before: &str) -> String {
    ACME.replace("{directory}", &pebble.directory())
        .replace("{ca}", &pebble.api_ca().display().to_string())
        .replace("{challenge}", challenge)
        .replace("{storage}", storage)
        .replace("{renew_before}", renew_before)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_01_issues_at_start_and_a_restart_serves_the_stored_certificate() {
    let (http_port, https_port) = (free_port(), free_port());
    let pebble = Pebble::start(http_port, https_port, None).await;
    let storage = tempfile::tempdir().unwrap();
    let store = storage.path().join("acme");
    let config = format!(
        "{HTTP_AND_HTTPS}{ADMIN}{}",
        acme_config(&pebble, "http-01", &store.display().to_string(), "30d")
    );
    let gh = Gatehouse::builder(&config)
        .ports(http_port, https_port)
        .start()
        .await;
    let root = pebble.root().await;

    // Served for both names, chained to pebble's root (verified handshake).
    let leaf = wait_served(&gh, DOMAIN, &root, WITHIN, |_| true).await;
    let sans = common::tls::subject_alt_names(&leaf);
    assert!(sans.contains(&DOMAIN.to_string()) && sans.contains(&WWW.to_string()));
    assert_eq!(
        serial(&served_cert(gh.https_addr(), WWW, &root).await.unwrap()),
        serial(&leaf)
    );
    // Not a certificate our own test CA would accept: it is pebble's.
    let api_ca = std::fs::read(pebble.api_ca()).unwrap();
    assert!(served_cert(gh.https_addr(), DOMAIN, &api_ca).await.is_err());

    // The plain listener still redirects, challenge paths included, once no
    // challenge is pending.
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in ["/", "/.well-known/acme-challenge/unknown"] {
        let r = client
            .get(gh.http_url(path))
            .header("Host", DOMAIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 301, "{path}");
    }

    // Stored privately.
    assert_eq!(mode(&store), 0o700);
    for file in ["account.json", "cert.pem", "key.pem"] {
        assert_eq!(mode(&store.join(file)), 0o600, "{file}");
    }
    assert_eq!(
        gh.metric("gatehouse_acme_renewals_total", &[("result", "success")])
            .await,
        Some(1.0)
    );
    let expiry = gh
        .metric(
            "gatehouse_acme_certificate_expiry_seconds",
            &[("domain", WWW)],
        )
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(expiry > now + 24.0 * 3600.0, "expiry {expiry}, now {now}");
    drop(gh);

    // A restart on the same storage serves the stored certificate at once,
    // without asking the CA.
    let again = Gatehouse::builder(&config)
        .ports(http_port, https_port)
        .start()
        .await;
    let served = served_cert(again.https_addr(), DOMAIN, &root)
        .await
        .unwrap();
    assert_eq!(serial(&served), serial(&leaf));
    assert_eq!(
        again
            .metric("gatehouse_acme_renewals_total", &[("result", "success")])
            .await,
        Some(0.0)
    );
    assert!(again.stderr().contains("serving the stored certificate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_01_issues_a_certificate() {
    let https_port = free_port();
    // No plain listener at all: the challenge is answered on the TLS one.
    let pebble = Pebble::start(free_port(), https_port, None).await;
    let config = format!(
        r#"
[https]
listen = ["127.0.0.1:{{https_port}}"]
{ADMIN}{}"#,
        acme_config(&pebble, "tls-alpn-01", "acme", "30d")
    );
    let gh = Gatehouse::builder(&config)
        .ports(free_port(), https_port)
        .start()
        .await;
    let root = pebble.root().await;
    let leaf = wait_served(&gh, WWW, &root, WITHIN, |_| true).await;
    assert!(common::tls::subject_alt_names(&leaf).contains(&DOMAIN.to_string()));
    assert!(
        gh.stderr().contains("answering the tls-alpn-01 challenge"),
        "{}",
        gh.stderr()
    );

    // Ordinary clients still negotiate h2 or HTTP/1.1 next to acme-tls/1.
    let h2 = common::tls::handshake(gh.https_addr(), DOMAIN, &["h2", "http/1.1"])
        .await
        .unwrap();
    assert_eq!(h2.alpn.as_deref(), Some("h2"));
    let h1 = common::tls::handshake(gh.https_addr(), DOMAIN, &["http/1.1"])
        .await
        .unwrap();
    assert_eq!(h1.alpn.as_deref(), Some("http/1.1"));
    // With no challenge pending, acme-tls/1 gets no certificate at all.
    assert!(
        common::tls::handshake(gh.https_addr(), DOMAIN, &["acme-tls/1"])
            .await
            .is_err()
    );
    // HTTP over the ACME certificate.
    let client = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(&root).unwrap())
        .resolve(DOMAIN, gh.https_addr())
        .build()
        .unwrap();
    let r = client
        .get(format!("https://{DOMAIN}:{https_port}/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_swaps_certificates_in_and_a_failing_challenge_keeps_the_old_one() {
    let (http_port, https_port) = (free_port(), free_port());
    // Certificates valid 40 s, renewed 34 s before expiry: every ~6 s.
    let pebble = Pebble::start(http_port, https_port, Some(40)).await;
    let config = format!(
        "{HTTP_AND_HTTPS}{ADMIN}{}",
        acme_config(&pebble, "http-01", "acme", "34s")
    );
    let gh = Gatehouse::builder(&config)
        .ports(http_port, https_port)
        .start()
        .await;
    let root = pebble.root().await;
    let first = serial(&wait_served(&gh, DOMAIN, &root, WITHIN, |_| true).await);

    // Renewed and swapped in without a restart.
    let second = serial(&wait_served(&gh, DOMAIN, &root, WITHIN, |der| serial(der) != first).await);
    assert!(gh.try_wait().is_none(), "still the same process");
    assert!(
        gh.metric("gatehouse_acme_renewals_total", &[("result", "success")])
            .await
            .unwrap()
            >= 2.0
    );
    assert_ne!(first, second);

    // Validations now go to 127.0.0.2, where nothing listens: they fail.
    pebble.resolve_all_to("127.0.0.2").await;
    assert!(
        gh.wait_metric(
            "gatehouse_acme_renewals_total",
            &[("result", "failure")],
            1.0,
            WITHIN
        )
        .await,
        "no failed renewal counted\n{}",
        gh.stderr()
    );
    let failures = gh
        .metric("gatehouse_acme_renewals_total", &[("result", "failure")])
        .await
        .unwrap();
    // What is served now (a renewal may have finished just before the
    // switch) stays through the next failure too, and is still valid: the
    // handshake checks its validity.
    let kept = serial(&served_cert(gh.https_addr(), DOMAIN, &root).await.unwrap());
    assert!(
        gh.wait_metric(
            "gatehouse_acme_renewals_total",
            &[("result", "failure")],
            failures + 1.0,
            WITHIN
        )
        .await
    );
    let served = served_cert(gh.https_addr(), DOMAIN, &root).await.unwrap();
    assert_eq!(serial(&served), kept);
    let log = gh.stderr();
    assert!(log.contains("the current certificate stays"), "{log}");
    assert!(
        log.contains("127.0.0.2"),
        "the CA's reason is logged: {log}"
    );

    // Back to us: the next retry (backoff of seconds here) succeeds.
    pebble.resolve_all_to("127.0.0.1").await;
    let recovered = wait_served(&gh, DOMAIN, &root, WITHIN, |der| serial(der) != kept).await;
    assert_ne!(serial(&recovered), kept);
}
