//! Property tests (proptest, bounded case counts, no I/O beyond a temp dir):
//!
//! - the config parser and validator never panic, and every error names a
//!   key or a position;
//! - the HTTPS redirect never points at another authority than the request's
//!   own host;
//! - the route table always picks the longest matching prefix;
//! - static path resolution never serves a byte from outside the root.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::LazyLock;

use gatehouse::config::{Route, StaticSite, Target};
use gatehouse::proxy::redirect::https_location;
use gatehouse::proxy::route::{upstream_path, RouteTable};
use gatehouse::static_files::{ReplyBody, Site};
use http::header::{HeaderMap, HeaderValue};
use http::Method;
use proptest::prelude::*;
use proptest::test_runner::Config as PtConfig;

// ---------------------------------------------------------------------------
// Config

/// A complete valid config (no files needed: no static site, no TLS).
const VALID: &str = r#"[server]
threads = 2
grace_period = "30s"
access_log = "off"
max_body_size = "10MiB"
trusted_proxies = ["10.0.0.0/8"]

[http]
listen = ["127.0.0.1:8080"]
redirect_to_https = false
https_port = 8443

[admin]
listen = "127.0.0.1:9901"

[headers]
"X-Frame-Options" = "DENY"

[[route]]
prefix = "/api/"
upstream = "backend"
strip_prefix = true
rate_limit = "api"

[[route]]
prefix = "/"
upstream = "backend"

[upstream.backend]
servers = ["127.0.0.1:5000", "127.0.0.1:5001 weight=2"]
balance = "consistent_hash"
hash_key = "header:X-User"
connect_timeout = "2s"
read_timeout = "30s"
retries = 2

[upstream.backend.health]
path = "/health"
interval = "2s"
timeout = "1s"
healthy_threshold = 2
unhealthy_threshold = 2

[rate_limit.api]
key = "client_ip"
rate = 50
burst = 100
"#;

static BASE: LazyLock<tempfile::TempDir> = LazyLock::new(|| tempfile::tempdir().unwrap());

/// Parses; on error, checks that each error is located. Panics propagate.
fn check_config(text: &str) -> Result<(), TestCaseError> {
    if let Err(errors) = gatehouse::config::parse(text, None, BASE.path()) {
        prop_assert!(!errors.0.is_empty(), "an empty error list");
        for e in &errors.0 {
            // The one error about the config as a whole names no key.
            let whole = e.message.starts_with("no listener");
            prop_assert!(
                whole || !e.key.is_empty() || e.position.is_some(),
                "error without key or position: {e} (from {text:?})"
            );
        }
    }
    Ok(())
}

/// Values of every TOML type, including ones that are wrong for most keys.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (-5i64..70000).prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        "[a-z0-9:./ =-]{0,24}".prop_map(|s| format!("{s:?}")),
        "[0-9]{1,12}(ms|s|m|h|d|us|ns|KiB|MiB|GiB|k|m|g|x)?".prop_map(|s| format!("{s:?}")),
        "(127\\.0\\.0\\.1|0\\.0\\.0\\.0|::1|\\[::1\\]|localhost|10\\.0\\.0\\.0/8)(:[0-9]{1,6})?( weight=-?[0-9]{1,5})?"
            .prop_map(|s| format!("[{s:?}]")),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("[1, \"a\", true]".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
        "\\PC{0,12}".prop_map(|s| format!("{s:?}")),
    ]
}

const KEYS: &[&str] = &[
    "threads",
    "grace_period",
    "drain_delay",
    "pid_file",
    "access_log",
    "trusted_proxies",
    "max_body_size",
    "max_header_size",
    "header_timeout",
    "keepalive_timeout",
    "max_connections_per_ip",
    "watch_config",
    "listen",
    "redirect_to_https",
    "https_port",
    "cert",
    "key",
    "self_signed",
    "http2",
    "hsts",
    "hosts",
    "prefix",
    "upstream",
    "static",
    "strip_prefix",
    "rate_limit",
    "root",
    "index",
    "spa_fallback",
    "extensions",
    "cache_control",
    "default_cache_control",
    "servers",
    "balance",
    "hash_key",
    "connect_timeout",
    "read_timeout",
    "write_timeout",
    "idle_timeout",
    "retries",
    "path",
    "interval",
    "timeout",
    "healthy_threshold",
    "unhealthy_threshold",
    "rate",
    "burst",
    "bogus",
];

const TABLES: &[&str] = &[
    "[server]",
    "[http]",
    "[https]",
    "[admin]",
    "[headers]",
    "[[route]]",
    "[static.s]",
    "[[static.s.cache]]",
    "[upstream.backend]",
    "[upstream.u]",
    "[upstream.backend.health]",
    "[upstream.u.health]",
    "[rate_limit.api]",
    "[rate_limit.r]",
    "[[https.sni]]",
    "[nope]",
];

/// Tables from the schema filled with schema keys and values of any type.
fn structured_config() -> impl Strategy<Value = String> {
    let line = (prop::sample::select(KEYS), toml_value()).prop_map(|(k, v)| format!("{k} = {v}\n"));
    let table = (
        prop::sample::select(TABLES),
        prop::collection::vec(line, 0..6),
    )
        .prop_map(|(t, lines)| format!("{t}\n{}", lines.concat()));
    prop::collection::vec(table, 0..8).prop_map(|t| t.concat())
}

/// The valid config with a few edits: cut, insert or replace at random places.
fn garbled_config() -> impl Strategy<Value = String> {
    let edit = (
        0usize..VALID.len(),
        0usize..40,
        prop_oneof![
            Just(String::new()),
            "\\PC{0,8}",
            "[\\[\\]\"'=#.\\n{},]{1,4}",
            toml_value(),
        ],
    );
    prop::collection::vec(edit, 1..4).prop_map(|edits| {
        let mut text = VALID.to_string();
        for (at, cut, insert) in edits {
            let mut at = at.min(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let mut end = (at + cut).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.replace_range(at..end, &insert);
        }
        text
    })
}

/// The valid config with some values replaced by values of any type, so the
/// keys stay known and the validator (not serde) sees the bad values.
fn revalued_config() -> impl Strategy<Value = String> {
    let lines: Vec<&'static str> = VALID.lines().collect();
    let n = lines.len();
    prop::collection::vec((0..n, toml_value()), 1..5).prop_map(move |swaps| {
        let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        for (i, v) in swaps {
            if let Some((k, _)) = out[i].split_once(" = ") {
                out[i] = format!("{k} = {v}");
            }
        }
        out.join("\n")
    })
}

/// Cases per property: `default`, or `PROPTEST_CASES` for longer runs.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(PtConfig { cases: cases(400), failure_persistence: None, ..PtConfig::default() })]

    #[test]
    fn config_parse_never_panics_on_any_text(text in "\\PC{0,300}") {
        check_config(&text)?;
    }

    #[test]
    fn config_parse_never_panics_on_garbled_config(text in garbled_config()) {
        check_config(&text)?;
    }

    #[test]
    fn config_validate_never_panics_on_bad_values(text in revalued_config()) {
        check_config(&text)?;
    }

    #[test]
    fn config_validate_never_panics_on_schema_shaped_input(text in structured_config()) {
        check_config(&text)?;
    }
}

/// A value missing at the end of the text gives an error with an empty
/// message (`gatehouse check` prints `file:1:3: ` and nothing else): toml's
/// `Error::message()` is empty for it. Found by the properties above.
#[test]
fn every_config_error_has_a_message() {
    for text in ["A=", "[http]\nlisten =", "[server]\nthreads = "] {
        let errors = gatehouse::config::parse(text, None, BASE.path()).unwrap_err();
        for e in &errors.0 {
            assert!(!e.message.trim().is_empty(), "{text:?}: {e:?}");
        }
    }
}

#[test]
fn the_valid_config_is_valid() {
    gatehouse::config::parse(VALID, None, BASE.path()).unwrap();
}

// ---------------------------------------------------------------------------
// Redirect Location

/// The host part of a Host header as a client meant it, by a rule written
/// independently of the code under test: `[v6]` with its brackets, or
/// everything before a trailing `:digits`.
fn expected_host(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Host header values: plausible names and IPs, and hostile ones.
fn host_header() -> impl Strategy<Value = String> {
    let label = "[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?";
    let name = prop::collection::vec(label, 1..4).prop_map(|l| l.join("."));
    let port =
        prop::option::of(0u32..70000).prop_map(|p| p.map(|p| format!(":{p}")).unwrap_or_default());
    let junk = prop::collection::vec(
        prop_oneof![
            Just("@".to_string()),
            Just(":".to_string()),
            Just("/".to_string()),
            Just("\\".to_string()),
            Just("[".to_string()),
            Just("]".to_string()),
            Just("?".to_string()),
            Just("#".to_string()),
            Just("%".to_string()),
            Just("..".to_string()),
            Just(" ".to_string()),
            Just("evil.com".to_string()),
            Just("::1".to_string()),
            Just("\u{ff0e}".to_string()),
            Just("\t".to_string()),
            "[a-z0-9.-]{1,6}",
            "\\PC{1,3}",
        ],
        1..8,
    )
    .prop_map(|p| p.concat());
    prop_oneof![
        (name.clone(), port.clone()).prop_map(|(n, p)| format!("{n}{p}")),
        "(\\[[0-9a-fA-F:.]{1,20}\\])(:[0-9]{1,6})?",
        (name, junk.clone()).prop_map(|(n, j)| format!("{n}{j}")),
        junk,
    ]
}

fn path_and_query() -> impl Strategy<Value = String> {
    "\\PC{0,30}".prop_filter_map("not a request target", |s| {
        let pq = format!("/{s}");
        pq.parse::<http::uri::PathAndQuery>()
            .ok()
            .map(|p| p.as_str().to_string())
    })
}

proptest! {
    #![proptest_config(PtConfig { cases: cases(1000), failure_persistence: None, ..PtConfig::default() })]

    #[test]
    fn redirect_location_keeps_the_requested_host(
        host in host_header(),
        port in prop_oneof![Just(443u16), Just(8443u16), 1u16..],
        pq in path_and_query(),
    ) {
        let Some(loc) = https_location(&host, port, &pq) else {
            return Ok(());
        };
        let uri: http::Uri = loc
            .parse()
            .map_err(|e| TestCaseError::fail(format!("{loc:?} is not a URI: {e}")))?;
        prop_assert_eq!(uri.scheme_str(), Some("https"), "{}", loc);
        let authority = uri.authority().expect("an authority").as_str();
        prop_assert!(!authority.contains('@'), "userinfo in {}", loc);
        let want = expected_host(&host);
        let want_authority = if port == 443 {
            want.to_string()
        } else {
            format!("{want}:{port}")
        };
        prop_assert!(
            authority.eq_ignore_ascii_case(&want_authority),
            "Host {:?} gave authority {:?} ({})", host, authority, loc
        );
        prop_assert_eq!(uri.path_and_query().map(|p| p.as_str()), Some(pq.as_str()));
    }

    #[test]
    fn plausible_hosts_are_redirected(
        labels in prop::collection::vec("[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", 1..4),
        host_port in prop::option::of(1u16..),
    ) {
        let name = labels.join(".");
        let host = match host_port {
            Some(p) => format!("{name}:{p}"),
            None => name.clone(),
        };
        let loc = https_location(&host, 8443, "/x?y=1");
        prop_assert_eq!(loc, Some(format!("https://{name}:8443/x?y=1")));
    }
}

// ---------------------------------------------------------------------------
// Route table

fn route(prefix: &str) -> Route {
    Route {
        prefix: prefix.to_string(),
        target: Target::Upstream("u".to_string()),
        strip_prefix: true,
        rate_limits: Vec::new(),
        max_body_size: 1024,
        request_buffering: true,
        response_buffering: true,
        cors: None,
        access: None,
        compression: true,
    }
}

/// The brute-force model: every route that matches (a plain prefix, or the
/// path equal to a `/`-ended prefix without its slash), longest wins.
fn model(prefixes: &BTreeSet<String>, path: &str) -> Option<String> {
    prefixes
        .iter()
        .filter(|p| {
            path.starts_with(p.as_str())
                || (p.len() > 1 && p.ends_with('/') && path == &p[..p.len() - 1])
        })
        .max_by_key(|p| p.len())
        .cloned()
}

proptest! {
    #![proptest_config(PtConfig { cases: cases(1000), failure_persistence: None, ..PtConfig::default() })]

    #[test]
    fn route_table_picks_the_longest_matching_prefix(
        prefixes in prop::collection::btree_set("/[ab/]{0,5}", 0..10),
        path in "/[ab/]{0,7}(\\?[ab=]{0,3})?",
    ) {
        let table = RouteTable::new(&prefixes.iter().map(|p| route(p)).collect::<Vec<_>>());
        let got = table.find(&path).map(|r| r.prefix.clone());
        prop_assert_eq!(&got, &model(&prefixes, &path), "path {}", path);
        let index = table.find_index(&path);
        prop_assert_eq!(index.and_then(|i| table.get(i)).map(|r| r.prefix.clone()), got);
        if let Some(r) = table.find(&path) {
            let up = upstream_path(r, &path);
            prop_assert!(up.starts_with('/'), "{} -> {}", path, up);
        }
    }
}

// ---------------------------------------------------------------------------
// Static files

const SECRET: &str = "PROPTEST-SECRET-7f3a9c";

/// `{tmp}/secret.txt` and `{tmp}/private/key.pem` outside the root
/// `{tmp}/site`, which holds ordinary files and symlinks pointing out.
struct Fixture {
    _dir: tempfile::TempDir,
    site: Site,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let write = |rel: &str, text: &str| {
        let path = p.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("secret.txt", SECRET);
    write("private/key.pem", SECRET);
    write("site-sibling/x.txt", SECRET);
    write("site/index.html", "<h1>index</h1>");
    write("site/a.txt", "a");
    write("site/dir/b.txt", "b");
    write("site/.hidden", SECRET);
    write("site/.well-known/security.txt", "contact");
    let link = |target: &Path, rel: &str| std::os::unix::fs::symlink(target, p.join(rel)).unwrap();
    link(&p.join("secret.txt"), "site/link.txt");
    link(Path::new("../secret.txt"), "site/rel-link.txt");
    link(p, "site/up");
    link(&p.join("private"), "site/dir/private");
    let config = StaticSite {
        name: "prop".into(),
        root: p.join("site").canonicalize().unwrap(),
        index: "index.html".into(),
        spa_fallback: true,
        cache_rules: Vec::new(),
        default_cache_control: HeaderValue::from_static("no-cache"),
    };
    Fixture {
        _dir: dir,
        site: Site::new(config),
    }
});

static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
});

/// The body bytes of `GET path` (or `HEAD`), and the status.
fn fetch(method: &Method, path: &str) -> (u16, Vec<u8>) {
    RT.block_on(async {
        let reply = FIXTURE.site.respond(method, path, &HeaderMap::new()).await;
        let status = reply.header.status.as_u16();
        let body = match reply.body {
            ReplyBody::Empty => Vec::new(),
            ReplyBody::Full(b) => b.to_vec(),
            ReplyBody::File {
                file,
                offset,
                remaining,
                ..
            } => {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; remaining.min(1 << 20) as usize];
                let n = file.read_at(&mut buf, offset).unwrap();
                buf.truncate(n);
                buf
            }
        };
        (status, body)
    })
}

/// Request paths built from pieces that have got past path checks before.
fn hostile_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/"),
        Just("//"),
        Just(".."),
        Just("."),
        Just("%2e"),
        Just("%2E"),
        Just("%2e%2e"),
        Just(".%2e"),
        Just("%2f"),
        Just("%2F"),
        Just("%5c"),
        Just("\\"),
        Just("%00"),
        Just("%"),
        Just("%25"),
        Just("%252e"),
        Just("%c0%ae"),
        Just("%e0%80%ae"),
        Just("secret.txt"),
        Just("private"),
        Just("key.pem"),
        Just("site"),
        Just("site-sibling"),
        Just("x.txt"),
        Just("link.txt"),
        Just("rel-link.txt"),
        Just("up"),
        Just("dir"),
        Just(".hidden"),
        Just(".well-known"),
        Just("index.html"),
        Just("a.txt"),
        Just("?"),
        Just(";"),
        Just("~"),
        Just("%3f"),
        Just("%23"),
    ];
    prop_oneof![
        4 => prop::collection::vec(piece, 1..10).prop_map(|p| p.concat()),
        1 => "[ -~]{0,30}".prop_map(|s| s.to_string()),
    ]
    .prop_map(|s| {
        if s.starts_with('/') {
            s
        } else {
            format!("/{s}")
        }
    })
}

proptest! {
    #![proptest_config(PtConfig { cases: cases(1000), failure_persistence: None, ..PtConfig::default() })]

    #[test]
    fn static_files_never_serve_outside_the_root(path in hostile_path(), head in any::<bool>()) {
        let method = if head { Method::HEAD } else { Method::GET };
        let (status, body) = fetch(&method, &path);
        let text = String::from_utf8_lossy(&body);
        prop_assert!(!text.contains(SECRET), "{} {} served the secret ({})", method, path, status);
        prop_assert!(status != 500, "{} {} gave 500", method, path);
    }
}

#[test]
fn static_fixture_controls() {
    // The fixture serves what it should, so the property above is not vacuous.
    assert_eq!(fetch(&Method::GET, "/a.txt"), (200, b"a".to_vec()));
    assert_eq!(fetch(&Method::GET, "/dir/b.txt"), (200, b"b".to_vec()));
    assert_eq!(fetch(&Method::GET, "/.well-known/security.txt").0, 200);
    for path in [
        "/link.txt",
        "/rel-link.txt",
        "/up/secret.txt",
        "/dir/private/key.pem",
        "/.hidden",
    ] {
        let (status, body) = fetch(&Method::GET, path);
        assert!(
            !String::from_utf8_lossy(&body).contains(SECRET),
            "{path}: {status}"
        );
    }
}
