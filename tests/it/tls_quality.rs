//! TLS quality with hand-written ClientHellos over TCP: no TLS 1.0/1.1 (or
//! SSL 3), only forward-secret AEAD suites, no compression; and a warning for
//! a world-readable private key. Every refusal has a control: the same helper
//! with a valid TLS 1.2 hello gets a ServerHello.

use crate::common;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::Gatehouse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TLS10: u16 = 0x0301;
const TLS11: u16 = 0x0302;
const TLS12: u16 = 0x0303;
const SSL3: u16 = 0x0300;

/// ECDHE with AES-GCM, for ECDSA and RSA certificates.
const ECDHE_GCM: &[u16] = &[0xc02b, 0xc02c, 0xc02f, 0xc030];
/// ECDHE with CBC (forward secret, not AEAD).
const ECDHE_CBC: &[u16] = &[0xc009, 0xc00a, 0xc013, 0xc014, 0xc023, 0xc027];
/// RSA key exchange (no forward secrecy), GCM and CBC.
const RSA_KX: &[u16] = &[0x009c, 0x009d, 0x003c, 0x002f, 0x0035, 0x000a];

/// What the server sent back first.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// An alert record (content type 21): level, description.
    Alert(u8, u8),
    /// A ServerHello (content type 22): version, cipher suite, compression.
    ServerHello(u16, u16, u8),
    /// The connection closed without a record.
    Closed,
    /// Something else (content type, first bytes).
    Other(u8, Vec<u8>),
}

impl Reply {
    /// A fatal alert or a closed connection.
    fn is_refusal(&self) -> bool {
        matches!(self, Reply::Alert(2, _) | Reply::Closed)
    }
}

fn u16s(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_be_bytes()).collect()
}

fn with_len16(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn ext(id: u16, body: &[u8]) -> Vec<u8> {
    let mut out = id.to_be_bytes().to_vec();
    out.extend(with_len16(body));
    out
}

/// A ClientHello record: `version` as legacy_version, no supported_versions
/// extension (so nothing above `version` is offered), SNI `localhost`,
/// x25519/P-256/P-384, common signature schemes, EMS and renegotiation_info.
fn client_hello(version: u16, suites: &[u16], compression: &[u8]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    body.extend([0x42u8; 32]); // random
    body.push(32);
    body.extend([0x17u8; 32]); // session id
    body.extend(with_len16(&u16s(suites)));
    body.push(compression.len() as u8);
    body.extend_from_slice(compression);

    let mut exts = Vec::new();
    let name = b"localhost";
    let mut sni = vec![0u8];
    sni.extend(with_len16(name));
    exts.extend(ext(0x0000, &with_len16(&sni)));
    exts.extend(ext(0x000a, &with_len16(&u16s(&[0x001d, 0x0017, 0x0018]))));
    exts.extend(ext(0x000b, &[1, 0]));
    exts.extend(ext(
        0x000d,
        &with_len16(&u16s(&[
            0x0403, 0x0503, 0x0804, 0x0805, 0x0401, 0x0501, 0x0807, 0x0201, 0x0203,
        ])),
    ));
    exts.extend(ext(0x0017, &[]));
    exts.extend(ext(0xff01, &[0]));
    exts.extend(ext(0x0023, &[]));
    body.extend(with_len16(&exts));

    let mut hs = vec![1u8];
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut record = vec![22u8, 0x03, 0x01];
    record.extend(with_len16(&hs));
    record
}

async fn read_exact_or_eof(s: &mut TcpStream, buf: &mut [u8]) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(3), s.read_exact(buf)).await,
        Ok(Ok(_))
    )
}

/// Sends `hello` to the TLS port and reads the first record back.
async fn hello(gh: &Gatehouse, hello: &[u8]) -> Reply {
    let mut s = TcpStream::connect(gh.https_addr()).await.unwrap();
    s.write_all(hello).await.unwrap();
    let mut head = [0u8; 5];
    if !read_exact_or_eof(&mut s, &mut head).await {
        return Reply::Closed;
    }
    let len = usize::from(u16::from_be_bytes([head[3], head[4]]));
    let mut body = vec![0u8; len];
    if !read_exact_or_eof(&mut s, &mut body).await {
        return Reply::Other(head[0], body);
    }
    match head[0] {
        21 if len >= 2 => Reply::Alert(body[0], body[1]),
        22 if body.first() == Some(&2) && len > 40 => {
            // type(1) len(3) version(2) random(32) sid_len(1) sid suite(2) compression(1)
            let version = u16::from_be_bytes([body[4], body[5]]);
            let sid = usize::from(body[38]);
            let at = 39 + sid;
            let suite = u16::from_be_bytes([body[at], body[at + 1]]);
            Reply::ServerHello(version, suite, body[at + 2])
        }
        t => Reply::Other(t, body.into_iter().take(16).collect()),
    }
}

/// The HTTPS listener with an RSA certificate made by `openssl` when it is
/// installed (so RSA key exchange would be possible if it were allowed),
/// else the generated ECDSA one.
async fn start() -> Gatehouse {
    let b = Gatehouse::builder(common::HTTPS);
    std::fs::create_dir_all(b.dir().join("certs")).unwrap();
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
        ])
        .arg(b.dir().join("certs/server.key"))
        .arg("-out")
        .arg(b.dir().join("certs/server.crt"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        eprintln!("openssl not available: testing with the generated ECDSA certificate");
    }
    b.start().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls10_and_tls11_hellos_are_refused() {
    let gh = start().await;
    let all: Vec<u16> = [ECDHE_GCM, ECDHE_CBC, RSA_KX].concat();

    // Control: the same hello at TLS 1.2 gets a ServerHello.
    match hello(&gh, &client_hello(TLS12, &all, &[0])).await {
        Reply::ServerHello(v, suite, 0) => {
            assert_eq!(v, TLS12);
            assert!(ECDHE_GCM.contains(&suite), "{suite:#06x}");
        }
        other => panic!("valid TLS 1.2 hello: {other:?}"),
    }
    for (name, version) in [("SSL 3.0", SSL3), ("TLS 1.0", TLS10), ("TLS 1.1", TLS11)] {
        let reply = hello(&gh, &client_hello(version, &all, &[0])).await;
        assert!(reply.is_refusal(), "{name}: {reply:?}");
        if let Reply::Alert(_, desc) = reply {
            assert!(
                desc == 70 || desc == 40,
                "{name}: alert {desc} (want protocol_version 70 or handshake_failure 40)"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_forward_secret_aead_suites_negotiate() {
    let gh = start().await;
    match hello(&gh, &client_hello(TLS12, ECDHE_GCM, &[0])).await {
        Reply::ServerHello(TLS12, suite, 0) => {
            eprintln!("TLS 1.2 with ECDHE-AES-GCM offered: {suite:#06x} chosen");
            assert!(ECDHE_GCM.contains(&suite), "{suite:#06x}")
        }
        other => panic!("ECDHE-AES-GCM refused: {other:?}"),
    }
    for (name, suites) in [
        ("RSA key exchange only", RSA_KX),
        ("TLS_RSA_WITH_AES_128_GCM_SHA256 only", &[0x009c][..]),
        ("ECDHE with CBC only", ECDHE_CBC),
    ] {
        let reply = hello(&gh, &client_hello(TLS12, suites, &[0])).await;
        assert!(reply.is_refusal(), "{name}: {reply:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_is_never_negotiated() {
    let gh = start().await;
    // Offered alongside null: null is chosen.
    match hello(&gh, &client_hello(TLS12, ECDHE_GCM, &[1, 0])).await {
        Reply::ServerHello(TLS12, _, compression) => assert_eq!(compression, 0),
        other => panic!("deflate + null: {other:?}"),
    }
    // Offered alone: refused.
    let reply = hello(&gh, &client_hello(TLS12, ECDHE_GCM, &[1])).await;
    assert!(reply.is_refusal(), "deflate only: {reply:?}");
}

/// Starts Gatehouse with a provided (not generated) key whose mode is `mode`.
async fn start_with_key_mode(mode: u32) -> Gatehouse {
    let b = Gatehouse::builder(
        r#"
[https]
listen = ["127.0.0.1:{https_port}"]
self_signed = false
cert = "certs/provided.crt"
key = "certs/provided.key"
"#,
    )
    .cert_path("certs/provided.crt");
    let pair = gatehouse::tls::generate_self_signed(&["localhost".to_string()]).unwrap();
    let key = b.dir().join("certs/provided.key");
    gatehouse::tls::write_cert_pair(&pair, &b.dir().join("certs/provided.crt"), &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
    b.start().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn world_readable_key_gives_a_warning() {
    let gh = start_with_key_mode(0o644).await;
    let key = gh.dir().join("certs/provided.key");
    let key_text = key.display().to_string();
    let warned = gh
        .wait_for_output("provided.key", Duration::from_secs(3))
        .await;
    let stderr = gh.stderr();
    assert!(
        warned
            && stderr
                .lines()
                .any(|l| l.contains(&key_text) || l.contains("certs/provided.key")),
        "no warning naming {key_text}:\n{stderr}"
    );
    // It still serves.
    let info = common::tls::handshake(gh.https_addr(), "localhost", &["http/1.1"])
        .await
        .unwrap();
    assert!(info.is_tls13() || info.is_tls12());

    // Control: mode 600 gives no warning.
    let quiet = start_with_key_mode(0o600).await;
    common::tls::handshake(quiet.https_addr(), "localhost", &["http/1.1"])
        .await
        .unwrap();
    assert!(
        !quiet.stderr().contains("provided.key"),
        "warned about a 0600 key:\n{}",
        quiet.stderr()
    );
}
