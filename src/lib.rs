//! Gatehouse: an edge reverse proxy and load balancer built on Pingora.
//!
//! One process takes the place of Nginx and a cloud load balancer in front of a
//! web app. A request travels through the modules in this order:
//!
//! ```text
//!  listener (plain :8080 | TLS :8443, rustls, h2/h1 by ALPN)   server, connection, tls
//!     │    per-IP cap, request-head deadline                   connection
//!     ▼
//!  request head checks: framing, target form, size ──▶ 400/431 proxy::framing
//!     ├─ plain and a pending ACME http-01 token ──▶ 200 key authorization
//!     │                                                         acme
//!     ├─ plain and redirect_to_https ──▶ 301 https://host:port/path?q
//!     │                                                         proxy::redirect
//!     ▼
//!  route by longest prefix ──▶ 404                             proxy::route
//!     ▼
//!  access list of the route ──▶ 403                            proxy::stages
//!     ▼
//!  CORS preflight of the route ──▶ 204 / 403                   proxy::cors
//!     ▼
//!  rate limits of the route ──▶ 429                            rate_limit
//!     (shared ones: one round trip to Redis)                   rate_limit::store
//!     ▼
//!  body size ──▶ 413
//!     ├─ static site ──▶ file, 304, 206, SPA fallback          static_files
//!     └─ upstream pool ──▶ healthy server, retries, X-Forwarded-*
//!                                                               pool, proxy::upstream
//!     ▼
//!  response headers ([headers], HSTS, X-Request-Id, CORS)      proxy::headers, proxy::cors
//!     ▼
//!  compression (zstd, br, gzip by Accept-Encoding)             compression
//!     ▼
//!  metrics and JSON access log                                 metrics, access_log
//! ```
//!
//! Every answer Gatehouse writes itself comes from `proxy::answers`. The
//! config lives in [`state::State`] behind an `ArcSwap`; each request loads
//! one [`state::Snapshot`] at its start and keeps it to the end; [`reload`]
//! builds the next one. [`lifecycle`] owns signals, drain, the pid file and
//! upgrades. ARCHITECTURE.md has the code map and the invariants.

/// The command line: `run`, `check`, `cert`, `reload`.
pub mod cli;
/// The config file: serde types, the validated model, located errors.
pub mod config;
/// Reloading the config into a new snapshot; `watch_config`.
pub(crate) mod reload;
/// The live config snapshot behind `ArcSwap`.
pub(crate) mod state;
/// Builds and runs the Pingora server: listeners and services.
pub(crate) mod server;
/// Signals, drain, pid file, upgrade hand-over.
pub(crate) mod lifecycle;
/// Per-connection limits before HTTP: per-IP cap, request-head deadline, pre-TLS check.
pub(crate) mod connection;
/// Certificates, SNI selection, self-signed generation.
pub mod tls;
/// Certificates from an ACME CA: issuance, renewal, challenge answers.
pub mod acme;
/// The bodies of every answer Gatehouse writes itself (JSON errors, redirects).
pub(crate) mod answers;
/// The `ProxyHttp` implementation: the request's stages, upstream, answers.
pub mod proxy;
/// Keyed GCRA rate limiters, local or shared through Redis.
pub mod rate_limit;
/// Static sites: safe paths, conditional and range requests, the file cache.
pub mod static_files;
/// Compression of answers: Accept-Encoding, the encoders, the proxied answer's plan.
pub mod compression;
/// Upstream pools: balancing and health checks.
pub mod pool;
/// Background services over the live state: health checks, limiter janitor.
pub(crate) mod background;
/// Prometheus metrics.
pub(crate) mod metrics;
/// The JSON access log.
pub(crate) mod access_log;
/// The operational log: client events demoted and counted, floods held back.
pub mod logging;
/// The admin listener: `/metrics`, `/healthz`, `/readyz`, `/status`.
pub(crate) mod admin;
/// The status page: `/status` (HTML) and `/status.json`.
pub(crate) mod status;
