//! Validation: the serde types of `file.rs` into the model of `model.rs`,
//! collecting every problem (key path and message) instead of stopping at
//! the first. `targets.rs` checks what routes point at (static sites,
//! upstream pools, rate limits) and the routes themselves; `policies.rs`
//! the CORS policies and access lists routes attach.

mod acme;
mod policies;
mod targets;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};

use super::defaults::*;
use super::error::{KeyPath, Problem};
use super::file::{self, FileConfig};
use super::model::*;
use super::units::{parse_cidr, parse_duration, parse_size};

/// Collects problems while validating, so that all are reported together.
pub(super) struct Checker<'a> {
    pub(super) problems: Vec<Problem>,
    /// Directory relative paths are taken from.
    pub(super) base: &'a Path,
}

impl Checker<'_> {
    pub(super) fn problem(&mut self, path: KeyPath, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    pub(super) fn duration(
        &mut self,
        path: KeyPath,
        value: Option<&str>,
        default: Duration,
    ) -> Duration {
        let Some(text) = value else { return default };
        match parse_duration(text) {
            Ok(d) => d,
            Err(msg) => {
                self.problem(path, msg);
                default
            }
        }
    }

    /// [`Checker::duration`] for a key that must be more than zero.
    pub(super) fn positive_duration(
        &mut self,
        path: KeyPath,
        value: Option<&str>,
        default: Duration,
    ) -> Duration {
        let d = self.duration(path.clone(), value, default);
        if d.is_zero() {
            self.problem(path, "must be more than zero");
        }
        d
    }

    pub(super) fn size(&mut self, path: KeyPath, value: Option<&str>, default: u64) -> u64 {
        let Some(text) = value else { return default };
        match parse_size(text) {
            Ok(n) => n,
            Err(msg) => {
                self.problem(path, msg);
                default
            }
        }
    }

    pub(super) fn positive(&mut self, path: KeyPath, value: Option<i64>, default: u32) -> u32 {
        match value {
            None => default,
            Some(n) if n >= 1 && n <= i64::from(u32::MAX) => n as u32,
            Some(n) => {
                self.problem(
                    path,
                    format!("must be a whole number of at least 1, got {n}"),
                );
                default
            }
        }
    }

    pub(super) fn addrs(&mut self, path: KeyPath, list: &[String]) -> Vec<SocketAddr> {
        if list.is_empty() {
            self.problem(path.clone(), "needs at least one address");
        }
        let mut out = Vec::new();
        for (i, a) in list.iter().enumerate() {
            match a.parse::<SocketAddr>() {
                Ok(sa) => out.push(sa),
                Err(_) => self.problem(
                    path.index(i),
                    format!(
                        "{a:?} is not an IP:port address (e.g. \"0.0.0.0:8080\" or \"[::]:8080\")"
                    ),
                ),
            }
        }
        out
    }

    pub(super) fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    pub(super) fn header_value(&mut self, path: KeyPath, v: &str) -> HeaderValue {
        match HeaderValue::from_str(v) {
            Ok(h) => h,
            Err(_) => {
                self.problem(path, format!("{v:?} is not a valid header value"));
                HeaderValue::from_static("")
            }
        }
    }
}

/// Validates a parsed file. `base` is the directory relative paths are taken from
/// (the current directory, as Nginx takes its prefix).
pub(super) fn validate(f: FileConfig, base: &Path) -> Result<Config, Vec<Problem>> {
    let mut c = Checker {
        problems: Vec::new(),
        base,
    };
    let server = check_server(&mut c, &f.server);
    let http = f.http.as_ref().map(|h| check_http(&mut c, h));
    let https = f
        .https
        .as_ref()
        .map(|h| check_https(&mut c, h, f.acme.is_some()));
    let acme = f
        .acme
        .as_ref()
        .map(|a| acme::check_acme(&mut c, a, http.as_ref(), https.as_ref()));
    if http.is_none() && https.is_none() {
        c.problem(
            KeyPath::default(),
            "no listener: add an [http] or an [https] section",
        );
    }
    if let (Some(h), None) = (&http, &https) {
        if h.redirect_to_https {
            c.problem(
                KeyPath::of(&["http", "redirect_to_https"]),
                "redirects to HTTPS but there is no [https] section",
            );
        }
    }
    for (section, on) in [
        ("http", http.as_ref().is_some_and(|h| h.proxy_protocol)),
        ("https", https.as_ref().is_some_and(|h| h.proxy_protocol)),
    ] {
        if on && server.trusted_proxies.is_empty() {
            c.problem(
                KeyPath::of(&[section, "proxy_protocol"]),
                "needs server.trusted_proxies: the balancers allowed to send PROXY headers",
            );
        }
    }
    let admin = f
        .admin
        .as_ref()
        .and_then(|a| match a.listen.parse::<SocketAddr>() {
            Ok(sa) => Some(sa),
            Err(_) => {
                c.problem(
                    KeyPath::of(&["admin", "listen"]),
                    format!("{:?} is not an IP:port address", a.listen),
                );
                None
            }
        });
    let headers = check_headers(&mut c, &f.headers);
    let statics = f
        .statics
        .iter()
        .filter_map(|(name, s)| {
            targets::check_static(&mut c, name, s).map(|site| (name.clone(), site))
        })
        .collect();
    let upstreams = f
        .upstreams
        .iter()
        .map(|(name, u)| (name.clone(), targets::check_upstream(&mut c, name, u)))
        .collect();
    let rate_limits = f
        .rate_limits
        .iter()
        .filter_map(|(name, r)| {
            targets::check_rate_limit(&mut c, name, r).map(|rl| (name.clone(), rl))
        })
        .collect();
    let cors: BTreeMap<_, _> = f
        .cors
        .iter()
        .map(|(name, s)| {
            (
                name.clone(),
                Arc::new(policies::check_cors(&mut c, name, s)),
            )
        })
        .collect();
    let access: BTreeMap<_, _> = f
        .access
        .iter()
        .map(|(name, s)| {
            (
                name.clone(),
                Arc::new(policies::check_access(&mut c, name, s)),
            )
        })
        .collect();
    let compression = f
        .compression
        .as_ref()
        .and_then(|s| policies::check_compression(&mut c, s))
        .map(Arc::new);
    let routes = targets::check_routes(
        &mut c,
        f.routes,
        targets::Attachable {
            statics: &f.statics,
            upstreams: &f.upstreams,
            limits: &f.rate_limits,
            cors: &cors,
            access: &access,
        },
        &server,
    );

    if c.problems.is_empty() {
        Ok(Config {
            server,
            http,
            https,
            admin,
            headers,
            routes,
            statics,
            upstreams,
            rate_limits,
            cors,
            access,
            compression,
            acme,
        })
    } else {
        Err(c.problems)
    }
}

fn check_server(c: &mut Checker, s: &file::ServerSection) -> Server {
    let p = KeyPath::of(&["server"]);
    let threads = c.positive(p.key("threads"), s.threads, DEFAULT_THREADS as u32) as usize;
    let grace_period = c.duration(
        p.key("grace_period"),
        s.grace_period.as_deref(),
        DEFAULT_GRACE_PERIOD,
    );
    let access_log = match s.access_log.as_deref() {
        None | Some("stdout") => AccessLog::Stdout,
        Some("off") => AccessLog::Off,
        Some("") => {
            c.problem(
                p.key("access_log"),
                "must be \"stdout\", \"off\" or a file path",
            );
            AccessLog::Off
        }
        Some(path) => AccessLog::File(c.path(path)),
    };
    let mut trusted_proxies = Vec::new();
    for (i, cidr) in s.trusted_proxies.iter().flatten().enumerate() {
        match parse_cidr(cidr) {
            Some(net) => trusted_proxies.push(net),
            None => c.problem(
                p.key("trusted_proxies").index(i),
                format!("{cidr:?} is not an IP address or CIDR block"),
            ),
        }
    }
    let max_connections_per_ip = s
        .max_connections_per_ip
        .map(|n| c.positive(p.key("max_connections_per_ip"), Some(n), 1) as usize);
    let drain_delay = c.duration(
        p.key("drain_delay"),
        s.drain_delay.as_deref(),
        DEFAULT_DRAIN_DELAY,
    );
    Server {
        threads,
        grace_period,
        drain_delay,
        pid_file: c.path(s.pid_file.as_deref().unwrap_or(DEFAULT_PID_FILE)),
        upgrade_sock: c.path(s.upgrade_sock.as_deref().unwrap_or(DEFAULT_UPGRADE_SOCK)),
        access_log,
        trusted_proxies,
        max_body_size: c.size(
            p.key("max_body_size"),
            s.max_body_size.as_deref(),
            DEFAULT_MAX_BODY_SIZE,
        ),
        max_header_size: c.size(
            p.key("max_header_size"),
            s.max_header_size.as_deref(),
            DEFAULT_MAX_HEADER_SIZE,
        ),
        header_timeout: c.duration(
            p.key("header_timeout"),
            s.header_timeout.as_deref(),
            DEFAULT_HEADER_TIMEOUT,
        ),
        keepalive_timeout: c.duration(
            p.key("keepalive_timeout"),
            s.keepalive_timeout.as_deref(),
            DEFAULT_KEEPALIVE_TIMEOUT,
        ),
        max_connections_per_ip,
        watch_config: s.watch_config.unwrap_or(false),
        temp_dir: check_temp_dir(c, &p, s.temp_dir.as_deref()),
        client_body_timeout: c.duration(
            p.key("client_body_timeout"),
            s.client_body_timeout.as_deref(),
            DEFAULT_CLIENT_BODY_TIMEOUT,
        ),
        send_timeout: c.duration(
            p.key("send_timeout"),
            s.send_timeout.as_deref(),
            DEFAULT_SEND_TIMEOUT,
        ),
    }
}

/// `server.temp_dir`: an existing directory (default: the system's temp dir).
fn check_temp_dir(c: &mut Checker, p: &KeyPath, dir: Option<&str>) -> PathBuf {
    let Some(dir) = dir else {
        return std::env::temp_dir();
    };
    let path = c.path(dir);
    if !path.is_dir() {
        c.problem(
            p.key("temp_dir"),
            format!("{} is not a directory", path.display()),
        );
    }
    path
}

fn check_http(c: &mut Checker, h: &file::HttpSection) -> HttpListener {
    let p = KeyPath::of(&["http"]);
    let https_port = match h.https_port {
        None => DEFAULT_HTTPS_PORT,
        Some(n) if (1..=65535).contains(&n) => n as u16,
        Some(n) => {
            c.problem(
                p.key("https_port"),
                format!("{n} is not a port number (1-65535)"),
            );
            DEFAULT_HTTPS_PORT
        }
    };
    HttpListener {
        listen: c.addrs(p.key("listen"), &h.listen),
        redirect_to_https: h.redirect_to_https.unwrap_or(DEFAULT_REDIRECT_TO_HTTPS),
        https_port,
        proxy_protocol: h.proxy_protocol.unwrap_or(false),
    }
}

/// `[https]`; with `acme`, `cert` and `key` may both be left out.
fn check_https(c: &mut Checker, h: &file::HttpsSection, acme: bool) -> HttpsListener {
    let p = KeyPath::of(&["https"]);
    let listen = c.addrs(p.key("listen"), &h.listen);
    let self_signed = h.self_signed.unwrap_or(false);
    let cert = c.path(h.cert.as_deref().unwrap_or(DEFAULT_CERT));
    let key = c.path(h.key.as_deref().unwrap_or(DEFAULT_KEY));
    let default_pair = self_signed || !acme || h.cert.is_some() || h.key.is_some();
    if default_pair && !self_signed {
        for (name, file) in [("cert", &cert), ("key", &key)] {
            if !file.is_file() {
                c.problem(
                    p.key(name),
                    format!(
                        "{} does not exist or is not a file (set self_signed = true to generate one for development)",
                        file.display()
                    ),
                );
            }
        }
    }
    let hsts = h.hsts.as_deref().map(|v| c.header_value(p.key("hsts"), v));
    let mut sni = Vec::new();
    for (i, s) in h.sni.iter().enumerate() {
        let sp = p.key("sni").index(i);
        if s.hosts.is_empty() {
            c.problem(sp.key("hosts"), "needs at least one host name");
        }
        let mut hosts = Vec::new();
        for (j, host) in s.hosts.iter().enumerate() {
            let lower = host.to_ascii_lowercase();
            let bare = lower.strip_prefix("*.").unwrap_or(&lower);
            if bare.is_empty()
                || bare.contains('*')
                || bare.contains(|ch: char| ch.is_whitespace() || ch == '/')
            {
                c.problem(
                    sp.key("hosts").index(j),
                    format!("{host:?} is not a host name or *.domain wildcard"),
                );
            }
            hosts.push(lower);
        }
        let cert = c.path(&s.cert);
        let key = c.path(&s.key);
        for (name, file) in [("cert", &cert), ("key", &key)] {
            if !file.is_file() {
                c.problem(
                    sp.key(name),
                    format!("{} does not exist or is not a file", file.display()),
                );
            }
        }
        sni.push(SniCert { hosts, cert, key });
    }
    HttpsListener {
        listen,
        cert,
        key,
        default_pair,
        self_signed,
        http2: h.http2.unwrap_or(DEFAULT_HTTP2),
        hsts,
        sni,
        proxy_protocol: h.proxy_protocol.unwrap_or(false),
    }
}

fn check_headers(
    c: &mut Checker,
    headers: &BTreeMap<String, String>,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    for (name, value) in headers {
        let p = KeyPath::of(&["headers", name]);
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(n) => {
                let v = c.header_value(p, value);
                out.push((n, v));
            }
            Err(_) => c.problem(p, format!("{name:?} is not a valid header name")),
        }
    }
    out
}
