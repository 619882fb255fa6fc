//! The config file as written: serde types that mirror the TOML one to one.
//!
//! Nothing here is validated beyond what serde checks (types, unknown keys);
//! [`super::runtime`] turns a [`FileConfig`] into the model the proxy uses.
//! Every table denies unknown keys so a typo is an error, not a silent default.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    pub http: Option<HttpSection>,
    pub https: Option<HttpsSection>,
    pub admin: Option<AdminSection>,
    /// Response headers added when the response does not already carry them.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteSection>,
    #[serde(default, rename = "static")]
    pub statics: BTreeMap<String, StaticSection>,
    #[serde(default, rename = "upstream")]
    pub upstreams: BTreeMap<String, UpstreamSection>,
    #[serde(default, rename = "rate_limit")]
    pub rate_limits: BTreeMap<String, RateLimitSection>,
    /// Named CORS policies, attached to routes with `cors = "NAME"`.
    #[serde(default)]
    pub cors: BTreeMap<String, CorsSection>,
    /// Named access lists, attached to routes with `access = "NAME"`.
    #[serde(default)]
    pub access: BTreeMap<String, AccessSection>,
    /// Compression of answers on the fly and of cached static files.
    pub compression: Option<CompressionSection>,
    /// Certificates from an ACME CA (Let's Encrypt and others).
    pub acme: Option<AcmeSection>,
}

/// `[server]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub threads: Option<i64>,
    pub grace_period: Option<String>,
    /// On SIGTERM, time `/readyz` answers 503 while traffic is still served.
    pub drain_delay: Option<String>,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    pub access_log: Option<String>,
    /// CIDRs whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Option<Vec<String>>,
    /// Limit on a request body, e.g. `"10MiB"`; routes may override it.
    pub max_body_size: Option<String>,
    /// Largest request head (request line and headers), e.g. `"32KiB"`; 431 above it.
    pub max_header_size: Option<String>,
    /// Time allowed to receive a complete request head.
    pub header_timeout: Option<String>,
    /// Idle time allowed between requests on a kept-alive client connection.
    pub keepalive_timeout: Option<String>,
    /// Concurrent client connections allowed from one IP address.
    pub max_connections_per_ip: Option<i64>,
    /// Re-read the config file when it changes.
    pub watch_config: Option<bool>,
    /// Where buffered request bodies spill past memory.
    pub temp_dir: Option<String>,
    /// Time allowed for a whole request body; 408 after it.
    pub client_body_timeout: Option<String>,
    /// Time a client may accept no bytes of an answer before it is cut.
    pub send_timeout: Option<String>,
}

/// `[http]`: the plain-text listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    pub listen: Vec<String>,
    pub redirect_to_https: Option<bool>,
    pub https_port: Option<i64>,
    /// Expect a PROXY protocol header (v1 or v2) from trusted peers.
    pub proxy_protocol: Option<bool>,
}

/// `[https]`: the TLS listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpsSection {
    pub listen: Vec<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub self_signed: Option<bool>,
    pub http2: Option<bool>,
    pub hsts: Option<String>,
    #[serde(default)]
    pub sni: Vec<SniSection>,
    /// Expect a PROXY protocol header (v1 or v2) before the TLS handshake.
    pub proxy_protocol: Option<bool>,
}

/// `[[https.sni]]`: one more certificate, picked by server name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniSection {
    pub hosts: Vec<String>,
    pub cert: String,
    pub key: String,
}

/// `[admin]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    pub listen: String,
}

/// `[[route]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub prefix: String,
    pub upstream: Option<String>,
    #[serde(rename = "static")]
    pub static_site: Option<String>,
    pub strip_prefix: Option<bool>,
    /// One limit name or a list of them; all must allow the request.
    pub rate_limit: Option<OneOrMany>,
    pub max_body_size: Option<String>,
    /// Read the whole request body before choosing a server (upstream routes).
    pub request_buffering: Option<bool>,
    /// Read the answer at the server's pace, not the client's (upstream routes).
    pub response_buffering: Option<bool>,
    /// The name of a `[cors.NAME]` policy.
    pub cors: Option<String>,
    /// The name of an `[access.NAME]` list; other clients get 403.
    pub access: Option<String>,
    /// `false`: this route's answers are never compressed by Gatehouse.
    pub compression: Option<bool>,
}

/// A string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The names as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `[static.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticSection {
    pub root: String,
    pub index: Option<String>,
    pub spa_fallback: Option<bool>,
    #[serde(default)]
    pub cache: Vec<CacheSection>,
    /// `Cache-Control` for files no rule matches (default `no-cache`).
    pub default_cache_control: Option<String>,
}

/// `[[static.NAME.cache]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    pub extensions: Vec<String>,
    pub cache_control: String,
}

/// `[upstream.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    pub servers: Vec<String>,
    pub balance: Option<String>,
    pub hash_key: Option<String>,
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    pub write_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub retries: Option<i64>,
    pub websocket_idle_timeout: Option<String>,
    pub health: Option<HealthSection>,
    pub passive: Option<PassiveSection>,
}

/// `[upstream.NAME.passive]`: outlier ejection on real traffic.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveSection {
    pub consecutive_failures: Option<i64>,
    pub failure_statuses: Option<Vec<i64>>,
    pub eject_for: Option<String>,
    pub max_ejected_percent: Option<i64>,
}

/// `[upstream.NAME.health]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    pub path: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub healthy_threshold: Option<i64>,
    pub unhealthy_threshold: Option<i64>,
}

/// `[rate_limit.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    pub key: Option<String>,
    pub rate: f64,
    pub burst: Option<i64>,
    /// `"redis://host:port[/db]"`: the buckets live there, shared by every
    /// instance that names the same store and limit.
    pub store: Option<String>,
    /// How long a check may wait for the store, e.g. `"50ms"`.
    pub store_timeout: Option<String>,
    /// `"local"`, `"allow"` or `"deny"`.
    pub on_store_error: Option<String>,
    /// How many instances share the limit (the local fallback divides by it).
    pub instances: Option<i64>,
}

/// `[cors.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSection {
    /// `"https://app.example.com"`, `"https://*.example.com"` or `"*"`.
    pub allow_origins: Vec<String>,
    pub allow_methods: Option<Vec<String>>,
    pub allow_headers: Option<Vec<String>>,
    pub expose_headers: Option<Vec<String>>,
    pub allow_credentials: Option<bool>,
    /// How long a browser may cache a preflight answer, e.g. `"10m"`.
    pub max_age: Option<String>,
}

/// `[access.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessSection {
    /// Addresses and CIDR blocks let in; empty lets in everyone not denied.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Addresses and CIDR blocks refused, checked before `allow`.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// `[compression]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionSection {
    pub enabled: Option<bool>,
    /// `"zstd"`, `"br"`, `"gzip"`: the server's preference among codings the
    /// client accepts equally.
    pub algorithms: Option<Vec<String>>,
    /// Answers with a smaller `Content-Length` are sent as they are, e.g. `"1KiB"`.
    pub min_size: Option<String>,
    /// Media types compressed: `"type/subtype"` or `"type/*"`.
    pub types: Option<Vec<String>>,
}

/// `[acme]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeSection {
    /// The CA's directory URL.
    pub directory: Option<String>,
    /// `"mailto:ops@example.com"`, or a list of them.
    pub contact: Option<OneOrMany>,
    pub domains: Vec<String>,
    /// Directory of the account key and issued certificates.
    pub storage: Option<String>,
    /// `"http-01"` or `"tls-alpn-01"`.
    pub challenge: Option<String>,
    /// Renew this long before the certificate expires, e.g. `"30d"`.
    pub renew_before: Option<String>,
    /// PEM file of extra roots trusted for the directory's HTTPS.
    pub ca_bundle: Option<String>,
    /// First wait after a failed attempt, e.g. `"1m"`; doubles up to an hour.
    pub retry_backoff: Option<String>,
}
