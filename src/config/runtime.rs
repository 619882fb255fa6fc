//! The validated config model: what the proxy reads at runtime.
//!
//! [`validate`] turns a [`FileConfig`] into a [`Config`], or into every
//! [`Problem`] it found. Everything the proxy needs is parsed here once:
//! addresses, durations, sizes, header names, enums and the route table.
//! Nothing in this module touches the network.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use ipnet::IpNet;

use super::error::{KeyPath, Problem};
use super::file::{self, FileConfig};

/// Worker threads per listener service when `server.threads` is absent.
pub const DEFAULT_THREADS: usize = 2;
/// Drain time on SIGTERM / SIGQUIT when `server.grace_period` is absent.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);
/// Time `/readyz` reports 503 on SIGTERM before listeners close.
pub const DEFAULT_DRAIN_DELAY: Duration = Duration::ZERO;
/// Pid file when `server.pid_file` is absent.
pub const DEFAULT_PID_FILE: &str = "/tmp/gatehouse.pid";
/// Upgrade socket when `server.upgrade_sock` is absent.
pub const DEFAULT_UPGRADE_SOCK: &str = "/tmp/gatehouse_upgrade.sock";
/// Time allowed to receive a request head (slowloris guard).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle time allowed between requests on a kept-alive client connection.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest request head accepted (request line and headers): 32 KiB (bytes).
pub const DEFAULT_MAX_HEADER_SIZE: u64 = 32 * 1024;
/// Largest request body accepted when no limit is configured: 10 MiB (bytes).
pub const DEFAULT_MAX_BODY_SIZE: u64 = 10 * 1024 * 1024;
/// Port put in redirects when `http.https_port` is absent.
pub const DEFAULT_HTTPS_PORT: u16 = 443;
/// Upstream TCP connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Upstream read timeout (time to wait for each read of the response).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Upstream write timeout.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an idle pooled upstream connection is kept.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Extra attempts on another server after a failed connect.
pub const DEFAULT_RETRIES: usize = 2;
/// Health check request path.
pub const DEFAULT_HEALTH_PATH: &str = "/";
/// Time between health checks of one server.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// Time allowed for one health check.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Consecutive passes that bring a server back.
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
/// Consecutive failures that take a server out.
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 2;
/// `Cache-Control` for static files no rule matches (and for index.html).
pub const DEFAULT_STATIC_CACHE_CONTROL: &str = "no-cache";

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub http: Option<HttpListener>,
    pub https: Option<HttpsListener>,
    pub admin: Option<SocketAddr>,
    /// Added to every response that does not already carry them.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub routes: RouteTable,
    pub statics: BTreeMap<String, StaticSite>,
    pub upstreams: BTreeMap<String, Upstream>,
    pub rate_limits: BTreeMap<String, RateLimit>,
}

/// `[server]`
#[derive(Debug, Clone)]
pub struct Server {
    pub threads: usize,
    pub grace_period: Duration,
    pub drain_delay: Duration,
    pub pid_file: PathBuf,
    pub upgrade_sock: PathBuf,
    pub access_log: AccessLog,
    pub trusted_proxies: Vec<IpNet>,
    /// Bytes.
    pub max_body_size: u64,
    /// Bytes of request line plus headers.
    pub max_header_size: u64,
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub max_connections_per_ip: Option<usize>,
    pub watch_config: bool,
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    Stdout,
    File(PathBuf),
}

/// `[http]`
#[derive(Debug, Clone)]
pub struct HttpListener {
    pub listen: Vec<SocketAddr>,
    pub redirect_to_https: bool,
    pub https_port: u16,
}

/// `[https]`
#[derive(Debug, Clone)]
pub struct HttpsListener {
    pub listen: Vec<SocketAddr>,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub self_signed: bool,
    pub http2: bool,
    pub hsts: Option<HeaderValue>,
    pub sni: Vec<SniCert>,
}

/// A certificate chosen by SNI.
#[derive(Debug, Clone)]
pub struct SniCert {
    /// Lower-case names; `*.example.com` matches one label.
    pub hosts: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a route sends requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Static(String),
    Upstream(String),
}

/// One `[[route]]`.
#[derive(Debug, Clone)]
pub struct Route {
    pub prefix: String,
    pub target: Target,
    pub strip_prefix: bool,
    pub rate_limits: Vec<String>,
    /// Bytes; the server default when the route sets none.
    pub max_body_size: u64,
}

/// Routes ordered for longest-prefix matching.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// Sorted by prefix length, longest first.
    routes: Vec<Route>,
}

impl RouteTable {
    /// Builds the table; the order of `routes` does not matter.
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        RouteTable { routes }
    }

    /// The route with the longest prefix matching `path`.
    ///
    /// A prefix that ends in `/` also matches the path without that slash, so
    /// `/api/` takes `/api` as well (and `strip_prefix` makes it `/`).
    pub fn find(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| prefix_matches(&r.prefix, path))
    }

    /// Index of the route with the longest prefix matching `path`.
    pub fn find_index(&self, path: &str) -> Option<usize> {
        self.routes
            .iter()
            .position(|r| prefix_matches(&r.prefix, path))
    }

    /// The route at `index` (from [`RouteTable::find_index`]).
    pub fn get(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }

    /// All routes, longest prefix first.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        || (prefix.len() > 1 && prefix.ends_with('/') && path == &prefix[..prefix.len() - 1])
}

impl Route {
    /// The path (with query) to send upstream for `path_and_query`.
    pub fn upstream_path(&self, path_and_query: &str) -> String {
        if !self.strip_prefix {
            return path_and_query.to_string();
        }
        let bare = self.prefix.trim_end_matches('/');
        let rest = path_and_query.strip_prefix(bare).unwrap_or(path_and_query);
        if rest.is_empty() || rest.starts_with('?') {
            format!("/{rest}")
        } else if rest.starts_with('/') {
            rest.to_string()
        } else {
            format!("/{rest}")
        }
    }
}

/// `[static.NAME]`
#[derive(Debug, Clone)]
pub struct StaticSite {
    pub name: String,
    /// Canonical (absolute, symlink-free) path.
    pub root: PathBuf,
    pub index: String,
    pub spa_fallback: bool,
    pub cache_rules: Vec<CacheRule>,
    pub default_cache_control: HeaderValue,
}

/// `Cache-Control` for a set of file extensions.
#[derive(Debug, Clone)]
pub struct CacheRule {
    /// Lower-case, without the dot.
    pub extensions: Vec<String>,
    pub cache_control: HeaderValue,
}

impl StaticSite {
    /// `Cache-Control` for a file with this extension (index files never match a rule).
    pub fn cache_control_for(&self, file_name: &str) -> &HeaderValue {
        if file_name == self.index {
            return &self.default_cache_control;
        }
        let ext = Path::new(file_name)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("");
        self.cache_rules
            .iter()
            .find(|r| r.extensions.iter().any(|e| e.eq_ignore_ascii_case(ext)))
            .map_or(&self.default_cache_control, |r| &r.cache_control)
    }
}

/// Load-balancing algorithm of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastConn,
    ConsistentHash,
    Random,
}

/// What `consistent_hash` hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Path,
    Header(HeaderName),
    Cookie(String),
}

/// One backend server of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    pub addr: SocketAddr,
    pub weight: u32,
}

/// `[upstream.NAME]`
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub servers: Vec<ServerAddr>,
    pub balance: Balance,
    pub hash_key: HashKey,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    pub retries: usize,
    pub health: Option<HealthCheck>,
}

/// `[upstream.NAME.health]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// What a rate limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    ClientIp,
    Header(HeaderName),
}

/// `[rate_limit.NAME]`
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    pub name: String,
    pub key: RateKey,
    /// Requests per second, sustained.
    pub rate: f64,
    /// Bucket size.
    pub burst: u32,
}

/// Collects problems while validating, so that all are reported together.
struct Checker<'a> {
    problems: Vec<Problem>,
    /// Directory relative paths are taken from.
    base: &'a Path,
}

impl Checker<'_> {
    fn problem(&mut self, path: KeyPath, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    fn duration(&mut self, path: KeyPath, value: Option<&str>, default: Duration) -> Duration {
        let Some(text) = value else { return default };
        match parse_duration(text) {
            Ok(d) => d,
            Err(msg) => {
                self.problem(path, msg);
                default
            }
        }
    }

    fn size(&mut self, path: KeyPath, value: Option<&str>, default: u64) -> u64 {
        let Some(text) = value else { return default };
        match parse_size(text) {
            Ok(n) => n,
            Err(msg) => {
                self.problem(path, msg);
                default
            }
        }
    }

    fn positive(&mut self, path: KeyPath, value: Option<i64>, default: u32) -> u32 {
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

    fn addrs(&mut self, path: KeyPath, list: &[String]) -> Vec<SocketAddr> {
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

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn header_value(&mut self, path: KeyPath, v: &str) -> HeaderValue {
        match HeaderValue::from_str(v) {
            Ok(h) => h,
            Err(_) => {
                self.problem(path, format!("{v:?} is not a valid header value"));
                HeaderValue::from_static("")
            }
        }
    }
}

/// Parses `"500ms"`, `"5s"`, `"1m"`, `"1h"` (and combinations like `"1m30s"`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.trim_start().starts_with('-') {
        return Err(format!("duration {text:?} must not be negative"));
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("{text:?} is not a duration with a unit such as \"500ms\", \"5s\" or \"1m\" ({e})")
    })
}

/// Parses a size such as `"512"`, `"64KiB"`, `"10MiB"`, `"1GiB"` (k/m/g and kb/mb/gb are
/// taken as binary multiples too, as Nginx does).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("{text:?} is not a size such as \"512KiB\", \"10MiB\" or \"1GiB\"");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// Validates a parsed file. `base` is the directory relative paths are taken from
/// (the current directory, as Nginx takes its prefix).
pub fn validate(f: FileConfig, base: &Path) -> Result<Config, Vec<Problem>> {
    let mut c = Checker {
        problems: Vec::new(),
        base,
    };
    let server = check_server(&mut c, &f.server);
    let http = f.http.as_ref().map(|h| check_http(&mut c, h));
    let https = f.https.as_ref().map(|h| check_https(&mut c, h));
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
        .filter_map(|(name, s)| check_static(&mut c, name, s).map(|site| (name.clone(), site)))
        .collect();
    let upstreams = f
        .upstreams
        .iter()
        .map(|(name, u)| (name.clone(), check_upstream(&mut c, name, u)))
        .collect();
    let rate_limits = f
        .rate_limits
        .iter()
        .filter_map(|(name, r)| check_rate_limit(&mut c, name, r).map(|rl| (name.clone(), rl)))
        .collect();
    let routes = check_routes(
        &mut c,
        f.routes,
        &f.statics,
        &f.upstreams,
        &f.rate_limits,
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
    }
}

/// An address (`10.0.0.1`) or a block (`10.0.0.0/8`).
fn parse_cidr(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
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
        redirect_to_https: h.redirect_to_https.unwrap_or(true),
        https_port,
    }
}

fn check_https(c: &mut Checker, h: &file::HttpsSection) -> HttpsListener {
    let p = KeyPath::of(&["https"]);
    let listen = c.addrs(p.key("listen"), &h.listen);
    let self_signed = h.self_signed.unwrap_or(false);
    let cert = c.path(h.cert.as_deref().unwrap_or("certs/server.crt"));
    let key = c.path(h.key.as_deref().unwrap_or("certs/server.key"));
    if !self_signed {
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
        self_signed,
        http2: h.http2.unwrap_or(true),
        hsts,
        sni,
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

fn check_static(c: &mut Checker, name: &str, s: &file::StaticSection) -> Option<StaticSite> {
    let p = KeyPath::of(&["static", name]);
    let root = match c.path(&s.root).canonicalize() {
        Ok(r) if r.is_dir() => Some(r),
        Ok(r) => {
            c.problem(p.key("root"), format!("{} is not a directory", r.display()));
            None
        }
        Err(e) => {
            c.problem(p.key("root"), format!("{}: {e}", c.path(&s.root).display()));
            None
        }
    };
    let index = s.index.clone().unwrap_or_else(|| "index.html".to_string());
    if index.is_empty() || index.contains(['/', '\\', '\0']) || index == ".." {
        c.problem(
            p.key("index"),
            format!("{index:?} must be a plain file name"),
        );
    }
    let mut cache_rules = Vec::new();
    for (i, rule) in s.cache.iter().enumerate() {
        let rp = p.key("cache").index(i);
        if rule.extensions.is_empty() {
            c.problem(rp.key("extensions"), "needs at least one extension");
        }
        let extensions = rule
            .extensions
            .iter()
            .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
            .collect();
        let cache_control = c.header_value(rp.key("cache_control"), &rule.cache_control);
        cache_rules.push(CacheRule {
            extensions,
            cache_control,
        });
    }
    let default_cache_control = c.header_value(
        p.key("default_cache_control"),
        s.default_cache_control
            .as_deref()
            .unwrap_or(DEFAULT_STATIC_CACHE_CONTROL),
    );
    Some(StaticSite {
        name: name.to_string(),
        root: root?,
        index,
        spa_fallback: s.spa_fallback.unwrap_or(false),
        cache_rules,
        default_cache_control,
    })
}

fn check_upstream(c: &mut Checker, name: &str, u: &file::UpstreamSection) -> Upstream {
    let p = KeyPath::of(&["upstream", name]);
    if u.servers.is_empty() {
        c.problem(p.key("servers"), "needs at least one server");
    }
    let mut servers: Vec<ServerAddr> = Vec::new();
    for (i, s) in u.servers.iter().enumerate() {
        match parse_server(s) {
            Ok(sa) if servers.iter().any(|o| o.addr == sa.addr) => {
                c.problem(
                    p.key("servers").index(i),
                    format!("{} is listed twice", sa.addr),
                );
            }
            Ok(sa) => servers.push(sa),
            Err(msg) => c.problem(p.key("servers").index(i), msg),
        }
    }
    let balance = match u.balance.as_deref() {
        None | Some("round_robin") => Balance::RoundRobin,
        Some("least_conn") => Balance::LeastConn,
        Some("consistent_hash") => Balance::ConsistentHash,
        Some("random") => Balance::Random,
        Some(other) => {
            c.problem(
                p.key("balance"),
                format!("unknown algorithm {other:?}: use round_robin, least_conn, consistent_hash or random"),
            );
            Balance::RoundRobin
        }
    };
    let hash_key = match u.hash_key.as_deref() {
        None | Some("client_ip") => HashKey::ClientIp,
        Some("path") => HashKey::Path,
        Some(other) => {
            if let Some(h) = other.strip_prefix("header:") {
                match HeaderName::from_bytes(h.as_bytes()) {
                    Ok(n) => HashKey::Header(n),
                    Err(_) => {
                        c.problem(
                            p.key("hash_key"),
                            format!("{h:?} is not a valid header name"),
                        );
                        HashKey::ClientIp
                    }
                }
            } else if let Some(cookie) = other.strip_prefix("cookie:").filter(|s| !s.is_empty()) {
                HashKey::Cookie(cookie.to_string())
            } else {
                c.problem(
                    p.key("hash_key"),
                    format!("unknown hash key {other:?}: use client_ip, path, header:NAME or cookie:NAME"),
                );
                HashKey::ClientIp
            }
        }
    };
    if u.hash_key.is_some() && balance != Balance::ConsistentHash {
        c.problem(
            p.key("hash_key"),
            "is only used with balance = \"consistent_hash\"",
        );
    }
    let retries = match u.retries {
        None => DEFAULT_RETRIES,
        Some(n) if (0..=100).contains(&n) => n as usize,
        Some(n) => {
            c.problem(
                p.key("retries"),
                format!("must be between 0 and 100, got {n}"),
            );
            DEFAULT_RETRIES
        }
    };
    let health = u.health.as_ref().map(|h| {
        let hp = p.key("health");
        let path = h
            .path
            .clone()
            .unwrap_or_else(|| DEFAULT_HEALTH_PATH.to_string());
        if !path.starts_with('/') || path.contains(|ch: char| ch.is_ascii_control() || ch == ' ') {
            c.problem(
                hp.key("path"),
                format!("{path:?} must be an absolute path starting with /"),
            );
        }
        let interval = c.duration(
            hp.key("interval"),
            h.interval.as_deref(),
            DEFAULT_HEALTH_INTERVAL,
        );
        let timeout = c.duration(
            hp.key("timeout"),
            h.timeout.as_deref(),
            DEFAULT_HEALTH_TIMEOUT,
        );
        if interval.is_zero() {
            c.problem(hp.key("interval"), "must be more than zero");
        }
        if timeout.is_zero() {
            c.problem(hp.key("timeout"), "must be more than zero");
        }
        HealthCheck {
            path,
            interval,
            timeout,
            healthy_threshold: c.positive(
                hp.key("healthy_threshold"),
                h.healthy_threshold,
                DEFAULT_HEALTHY_THRESHOLD,
            ),
            unhealthy_threshold: c.positive(
                hp.key("unhealthy_threshold"),
                h.unhealthy_threshold,
                DEFAULT_UNHEALTHY_THRESHOLD,
            ),
        }
    });
    let connect_timeout = c.duration(
        p.key("connect_timeout"),
        u.connect_timeout.as_deref(),
        DEFAULT_CONNECT_TIMEOUT,
    );
    let read_timeout = c.duration(
        p.key("read_timeout"),
        u.read_timeout.as_deref(),
        DEFAULT_READ_TIMEOUT,
    );
    let write_timeout = c.duration(
        p.key("write_timeout"),
        u.write_timeout.as_deref(),
        DEFAULT_WRITE_TIMEOUT,
    );
    let idle_timeout = c.duration(
        p.key("idle_timeout"),
        u.idle_timeout.as_deref(),
        DEFAULT_IDLE_TIMEOUT,
    );
    for (key, d) in [
        ("connect_timeout", connect_timeout),
        ("read_timeout", read_timeout),
        ("write_timeout", write_timeout),
    ] {
        if d.is_zero() {
            c.problem(p.key(key), "must be more than zero");
        }
    }
    Upstream {
        name: name.to_string(),
        servers,
        balance,
        hash_key,
        connect_timeout,
        read_timeout,
        write_timeout,
        idle_timeout,
        retries,
        health,
    }
}

/// `"127.0.0.1:5000"` or `"127.0.0.1:5001 weight=2"`.
pub fn parse_server(text: &str) -> Result<ServerAddr, String> {
    let mut parts = text.split_whitespace();
    let addr_text = parts.next().unwrap_or("");
    let addr = addr_text.parse::<SocketAddr>().map_err(|_| {
        format!("{addr_text:?} is not an IP:port address (host names are not resolved)")
    })?;
    let mut weight = 1;
    for opt in parts {
        match opt.strip_prefix("weight=").map(str::parse::<u32>) {
            Some(Ok(w)) if (1..=1000).contains(&w) => weight = w,
            Some(_) => {
                return Err(format!(
                    "{opt:?}: weight must be a whole number from 1 to 1000"
                ))
            }
            None => {
                return Err(format!(
                    "unknown server option {opt:?} (only weight=N is known)"
                ))
            }
        }
    }
    Ok(ServerAddr { addr, weight })
}

fn check_rate_limit(c: &mut Checker, name: &str, r: &file::RateLimitSection) -> Option<RateLimit> {
    let p = KeyPath::of(&["rate_limit", name]);
    let key = match r.key.as_deref() {
        None | Some("client_ip") => RateKey::ClientIp,
        Some(other) => match other
            .strip_prefix("header:")
            .map(|h| HeaderName::from_bytes(h.as_bytes()))
        {
            Some(Ok(h)) => RateKey::Header(h),
            _ => {
                c.problem(
                    p.key("key"),
                    format!("unknown key {other:?}: use client_ip or header:NAME"),
                );
                return None;
            }
        },
    };
    if !(r.rate.is_finite() && r.rate > 0.0 && r.rate <= 1e9) {
        c.problem(
            p.key("rate"),
            format!(
                "must be a number of requests per second above 0, got {}",
                r.rate
            ),
        );
        return None;
    }
    let default_burst = r.rate.ceil().max(1.0) as i64;
    let burst = c.positive(p.key("burst"), Some(r.burst.unwrap_or(default_burst)), 1);
    Some(RateLimit {
        name: name.to_string(),
        key,
        rate: r.rate,
        burst,
    })
}

fn check_routes(
    c: &mut Checker,
    routes: Vec<file::RouteSection>,
    statics: &BTreeMap<String, file::StaticSection>,
    upstreams: &BTreeMap<String, file::UpstreamSection>,
    limits: &BTreeMap<String, file::RateLimitSection>,
    server: &Server,
) -> RouteTable {
    let mut out: Vec<Route> = Vec::new();
    for (i, r) in routes.into_iter().enumerate() {
        let p = KeyPath::of(&["route"]).index(i);
        if !r.prefix.starts_with('/') {
            c.problem(p.key("prefix"), format!("{:?} must start with /", r.prefix));
        }
        if out.iter().any(|o| o.prefix == r.prefix) {
            c.problem(p.key("prefix"), format!("{:?} is routed twice", r.prefix));
        }
        let target = match (r.upstream, r.static_site) {
            (Some(u), None) => {
                if !upstreams.contains_key(&u) {
                    c.problem(p.key("upstream"), format!("no [upstream.{u}] is defined"));
                }
                Target::Upstream(u)
            }
            (None, Some(s)) => {
                if !statics.contains_key(&s) {
                    c.problem(p.key("static"), format!("no [static.{s}] is defined"));
                }
                Target::Static(s)
            }
            _ => {
                c.problem(
                    p.clone(),
                    "needs exactly one of upstream = \"NAME\" or static = \"NAME\"",
                );
                continue;
            }
        };
        let rate_limits = r
            .rate_limit
            .map(file::OneOrMany::into_vec)
            .unwrap_or_default();
        for (j, name) in rate_limits.iter().enumerate() {
            if !limits.contains_key(name) {
                let kp = if rate_limits.len() == 1 {
                    p.key("rate_limit")
                } else {
                    p.key("rate_limit").index(j)
                };
                c.problem(kp, format!("no [rate_limit.{name}] is defined"));
            }
        }
        let strip_prefix = r.strip_prefix.unwrap_or(false);
        let max_body_size = c.size(
            p.key("max_body_size"),
            r.max_body_size.as_deref(),
            server.max_body_size,
        );
        out.push(Route {
            prefix: r.prefix,
            target,
            strip_prefix,
            rate_limits,
            max_body_size,
        });
    }
    RouteTable::new(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, strip: bool) -> Route {
        Route {
            prefix: prefix.to_string(),
            target: Target::Upstream("u".into()),
            strip_prefix: strip,
            rate_limits: vec![],
            max_body_size: 0,
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let t = RouteTable::new(vec![
            route("/", false),
            route("/api/", true),
            route("/api/v2/", true),
        ]);
        assert_eq!(
            t.find("/api/v2/x").map(|r| r.prefix.as_str()),
            Some("/api/v2/")
        );
        assert_eq!(
            t.find("/api/users").map(|r| r.prefix.as_str()),
            Some("/api/")
        );
        assert_eq!(t.find("/api").map(|r| r.prefix.as_str()), Some("/api/"));
        assert_eq!(t.find("/apix").map(|r| r.prefix.as_str()), Some("/"));
        assert_eq!(t.find("/index.html").map(|r| r.prefix.as_str()), Some("/"));
    }

    #[test]
    fn strip_prefix_keeps_query_and_leading_slash() {
        let r = route("/api/", true);
        assert_eq!(r.upstream_path("/api/users?id=1"), "/users?id=1");
        assert_eq!(r.upstream_path("/api"), "/");
        assert_eq!(r.upstream_path("/api/"), "/");
        assert_eq!(r.upstream_path("/api?x=1"), "/?x=1");
        assert_eq!(
            route("/api/", false).upstream_path("/api/users"),
            "/api/users"
        );
    }

    #[test]
    fn durations_need_units_and_are_not_negative() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    #[test]
    fn server_weights() {
        assert_eq!(
            parse_server("127.0.0.1:5001 weight=2").map(|s| s.weight),
            Ok(2)
        );
        assert!(parse_server("localhost:5000").is_err());
        assert!(parse_server("127.0.0.1:5000 weight=0").is_err());
        assert!(parse_server("127.0.0.1:5000 backup").is_err());
    }
}
