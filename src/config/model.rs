//! The validated config model: what the rest of Gatehouse reads.
//!
//! Only `validate` builds these types (from the serde types of `file.rs`);
//! every value is already parsed and checked: addresses, durations, sizes,
//! header names, enums. Nothing here does I/O.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use ipnet::IpNet;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub http: Option<HttpListener>,
    pub https: Option<HttpsListener>,
    pub admin: Option<SocketAddr>,
    /// Added to every response that does not already carry them.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// In file order; the proxy builds its longest-prefix table from them.
    pub routes: Vec<Route>,
    pub statics: BTreeMap<String, StaticSite>,
    pub upstreams: BTreeMap<String, Upstream>,
    pub rate_limits: BTreeMap<String, RateLimit>,
    pub cors: BTreeMap<String, Arc<CorsPolicy>>,
    pub access: BTreeMap<String, Arc<AccessList>>,
    /// `[compression]`; `None` when absent or `enabled = false`.
    pub compression: Option<Arc<Compression>>,
    pub acme: Option<Acme>,
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
    /// Where buffered request bodies spill past [`super::defaults::REQUEST_BODY_IN_MEMORY`].
    pub temp_dir: PathBuf,
    /// The whole request body must arrive within this (408 otherwise).
    pub client_body_timeout: Duration,
    /// A client that accepts no bytes for this long is cut.
    pub send_timeout: Duration,
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
    /// A PROXY protocol header is expected first (from `trusted_proxies` only).
    pub proxy_protocol: bool,
}

/// `[https]`
#[derive(Debug, Clone)]
pub struct HttpsListener {
    pub listen: Vec<SocketAddr>,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `cert` and `key` are served as the default certificate; false only
    /// with `[acme]` and neither key given (the ACME certificate is then the
    /// only one, besides `sni`).
    pub default_pair: bool,
    pub self_signed: bool,
    pub http2: bool,
    pub hsts: Option<HeaderValue>,
    pub sni: Vec<SniCert>,
    /// A PROXY protocol header is expected before the handshake.
    pub proxy_protocol: bool,
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
    /// Upstream routes: read the whole body before choosing a server.
    pub request_buffering: bool,
    /// Upstream routes: read the answer at the server's pace.
    pub response_buffering: bool,
    /// The route's CORS policy (shared with `Config::cors`).
    pub cors: Option<Arc<CorsPolicy>>,
    /// The route's access list (shared with `Config::access`).
    pub access: Option<Arc<AccessList>>,
    /// Whether `[compression]` applies to this route's answers.
    pub compression: bool,
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
    /// Idle time allowed both ways on a connection upgraded by a 101.
    pub websocket_idle_timeout: Duration,
    pub health: Option<HealthCheck>,
    pub passive: Option<PassiveHealth>,
}

/// `[upstream.NAME.passive]`: servers failing real requests are ejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassiveHealth {
    /// Consecutive failures (connect error, timeout, a status below) that eject.
    pub consecutive_failures: u32,
    pub failure_statuses: Vec<u16>,
    /// First ejection time; doubles on each repeat, up to
    /// `MAX_EJECTION_MULTIPLIER` times.
    pub eject_for: Duration,
    /// Most of the pool ejected at once, 0 to 100.
    pub max_ejected_percent: u32,
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
    /// Where the buckets live when they are shared by several instances.
    pub store: Option<RateStore>,
}

/// `store`, `store_timeout`, `on_store_error` and `instances` of a `[rate_limit.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RateStore {
    /// `redis://...` as configured (it may hold a password).
    pub url: String,
    /// Longest wait for one check.
    pub timeout: Duration,
    pub on_error: OnStoreError,
    /// Instances expected to share the limit, at least 1.
    pub instances: u32,
}

/// What a check does while the store does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    /// Local buckets at `rate / instances` and `burst / instances`.
    Local,
    /// Admit the request uncounted.
    Allow,
    /// Refuse with 429.
    Deny,
}

/// One entry of `allow_origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// `"*"`: every origin (never with credentials).
    Any,
    /// `scheme://host[:port]`, lower-case, without a default port.
    Exact(String),
    /// `scheme://*.domain[:port]`: one or more labels under `domain`.
    Subdomains {
        /// `"https://"`, lower-case.
        scheme: String,
        /// `".example.com"`, lower-case, with its leading dot.
        suffix: String,
        /// `":8443"`, or empty for the scheme's default port.
        port: String,
    },
}

/// `[cors.NAME]`, with its answer headers built once.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    pub name: String,
    pub allow_origins: Vec<OriginPattern>,
    /// `allow_origins` is `["*"]` (the answer says `*`, not the origin).
    pub any_origin: bool,
    /// `Access-Control-Allow-Methods`.
    pub allow_methods: HeaderValue,
    /// `Access-Control-Allow-Headers`, when any are allowed.
    pub allow_headers: Option<HeaderValue>,
    /// `Access-Control-Expose-Headers`, when any are exposed.
    pub expose_headers: Option<HeaderValue>,
    pub allow_credentials: bool,
    /// `Access-Control-Max-Age` (whole seconds).
    pub max_age: HeaderValue,
}

/// `[access.NAME]`
#[derive(Debug, Clone)]
pub struct AccessList {
    pub name: String,
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

impl AccessList {
    /// Whether `client` may pass: not denied, and listed when `allow` is not
    /// empty. An unknown address passes no list.
    pub fn permits(&self, client: Option<std::net::IpAddr>) -> bool {
        let Some(ip) = client else { return false };
        let ip = ip.to_canonical();
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

/// A content coding Gatehouse compresses answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Zstd,
    Brotli,
    Gzip,
}

impl Algorithm {
    /// Every algorithm, in the default order of preference.
    pub const ALL: [Algorithm; 3] = [Algorithm::Zstd, Algorithm::Brotli, Algorithm::Gzip];

    /// The `Content-Encoding` token (`zstd`, `br`, `gzip`), also its name in the config.
    pub fn token(self) -> &'static str {
        match self {
            Algorithm::Zstd => "zstd",
            Algorithm::Brotli => "br",
            Algorithm::Gzip => "gzip",
        }
    }
}

/// One entry of `compression.types`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaRange {
    /// `"*/*"`.
    Any,
    /// `"text/*"`: the top-level type, lower-case, without the `/*`.
    Type(String),
    /// `"application/json"`, lower-case.
    Exact(String),
}

impl MediaRange {
    /// Whether `essence` (`type/subtype`, lower-case, no parameters) is in the range.
    pub fn matches(&self, essence: &str) -> bool {
        match self {
            MediaRange::Any => true,
            MediaRange::Type(t) => essence
                .strip_prefix(t.as_str())
                .is_some_and(|rest| rest.starts_with('/')),
            MediaRange::Exact(e) => essence == e,
        }
    }
}

/// `[compression]`, enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compression {
    /// The server's preference among codings the client accepts equally; no duplicates.
    pub algorithms: Vec<Algorithm>,
    /// Bytes; answers with a smaller known length are sent as they are.
    pub min_size: u64,
    pub types: Vec<MediaRange>,
}

/// How the ACME CA checks that we control a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// A token fetched over plain HTTP on port 80 (the `[http]` listener).
    Http01,
    /// A special certificate fetched over TLS on port 443 with ALPN
    /// `acme-tls/1` (the `[https]` listener).
    TlsAlpn01,
}

/// `[acme]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acme {
    pub directory: String,
    pub contact: Vec<String>,
    /// Lower-case DNS names, all on one certificate.
    pub domains: Vec<String>,
    pub storage: PathBuf,
    pub challenge: AcmeChallenge,
    pub renew_before: Duration,
    /// Extra roots for the directory's HTTPS, besides the system's.
    pub ca_bundle: Option<PathBuf>,
    /// First wait after a failure; doubles up to `MAX_ACME_RETRY_BACKOFF`.
    pub retry_backoff: Duration,
}
