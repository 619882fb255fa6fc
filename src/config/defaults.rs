//! Defaults and limits of the config, as named constants (units in the docs).
//!
//! Every value a key takes when it is absent, and every bound a validation
//! check enforces, is here, so that adding a key touches this file, the serde
//! type in `file.rs`, the model in `model.rs` and one check in `validate/`.

use std::time::Duration;

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
/// Idle time (no byte either way) after which an upgraded (WebSocket)
/// connection is closed; it replaces the request timeouts after the 101.
pub const DEFAULT_WEBSOCKET_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Consecutive failed requests that eject a server (passive health).
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
/// Server answers that count as failures (passive health).
pub const DEFAULT_FAILURE_STATUSES: [u16; 3] = [502, 503, 504];
/// Time out of rotation on a first ejection; doubles on each repeat.
pub const DEFAULT_EJECT_FOR: Duration = Duration::from_secs(30);
/// Most of a pool that may be ejected at once (percent).
pub const DEFAULT_MAX_EJECTED_PERCENT: u32 = 50;
/// Cap of the ejection time, as a multiple of `eject_for`.
pub const MAX_EJECTION_MULTIPLIER: u32 = 10;
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
/// Time allowed for a whole request body (`server.client_body_timeout`).
pub const DEFAULT_CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Time a client may accept no bytes of an answer (`server.send_timeout`).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Whether upstream routes read the whole request body before choosing a server.
pub const DEFAULT_REQUEST_BUFFERING: bool = true;
/// Whether upstream routes read answers at the server's pace.
pub const DEFAULT_RESPONSE_BUFFERING: bool = true;
/// Bytes of a buffered request body kept in memory; the rest spills to a
/// temp file in `server.temp_dir` (so small bodies never touch disk).
pub const REQUEST_BODY_IN_MEMORY: usize = 64 * 1024;
/// Bytes of one buffered answer that may wait in memory for a slow client.
pub const RESPONSE_BUFFER_PER_REQUEST: usize = 32 * 1024 * 1024;
/// Bytes of all buffered answers of the process together; past it, answers
/// are read at their clients' pace again.
pub const RESPONSE_BUFFER_TOTAL: usize = 512 * 1024 * 1024;

/// `cors.NAME.allow_methods` when absent: the CORS-safelisted methods.
pub const DEFAULT_CORS_METHODS: &[&str] = &["GET", "HEAD", "POST"];
/// `cors.NAME.max_age` when absent: how long a browser may cache a preflight
/// answer (Chromium caps it at 2 hours).
pub const DEFAULT_CORS_MAX_AGE: Duration = Duration::from_secs(600);

/// `compression.min_size` when absent (bytes): smaller answers gain nothing.
pub const DEFAULT_COMPRESSION_MIN_SIZE: u64 = 1024;
/// `compression.types` when absent: text formats browsers and API clients fetch.
pub const DEFAULT_COMPRESSION_TYPES: &[&str] = &[
    "text/*",
    "application/json",
    "application/javascript",
    "image/svg+xml",
];

/// Certificate chain of `[https]` when `cert` is absent (relative to the
/// current directory).
pub const DEFAULT_CERT: &str = "certs/server.crt";
/// Private key of `[https]` when `key` is absent.
pub const DEFAULT_KEY: &str = "certs/server.key";
/// Whether `[https]` offers HTTP/2 by ALPN when `http2` is absent.
pub const DEFAULT_HTTP2: bool = true;
/// Whether `[http]` redirects to HTTPS when `redirect_to_https` is absent.
pub const DEFAULT_REDIRECT_TO_HTTPS: bool = true;
/// File served for a directory of a static site when `index` is absent.
pub const DEFAULT_INDEX: &str = "index.html";
/// Most extra attempts `upstream.NAME.retries` may ask for.
pub const MAX_RETRIES: i64 = 100;
/// Largest `weight=N` of an upstream server.
pub const MAX_WEIGHT: u32 = 1000;
/// Highest `rate_limit.NAME.rate`, requests per second.
pub const MAX_RATE: f64 = 1e9;
/// `rate_limit.NAME.store_timeout` when absent: the longest wait for one
/// check against the store.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(50);
/// Longest `rate_limit.NAME.store_timeout`.
pub const MAX_STORE_TIMEOUT: Duration = Duration::from_secs(10);
/// `rate_limit.NAME.instances` when absent.
pub const DEFAULT_INSTANCES: u32 = 1;
/// After a failed check, how long a store is left alone (checks use
/// `on_store_error` meanwhile) before one check tries it again.
pub const STORE_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// How long connecting to a store may take before the attempt fails.
pub const STORE_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// ACME directory when `acme.directory` is absent: Let's Encrypt production.
pub const DEFAULT_ACME_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Where the ACME account key and certificates live when `acme.storage` is absent.
pub const DEFAULT_ACME_STORAGE: &str = "certs/acme";
/// Renew an ACME certificate this long before it expires: 30 days.
pub const DEFAULT_ACME_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Wait after a first failed ACME attempt; doubles on each failure in a row.
pub const DEFAULT_ACME_RETRY_BACKOFF: Duration = Duration::from_secs(60);
/// Longest wait between failed ACME attempts: 1 hour.
pub const MAX_ACME_RETRY_BACKOFF: Duration = Duration::from_secs(3600);
