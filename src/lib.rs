//! Gatehouse: an edge reverse proxy and load balancer built on Pingora.
//!
//! One process takes the place of Nginx and a cloud load balancer in front of a
//! web app. A request travels through the modules in this order:
//!
//! ```text
//!  listener (plain :8080 | TLS :8443, rustls, h2/h1 by ALPN)      server, tls
//!     │
//!     ├─ plain and redirect_to_https ──▶ 301 https://host:port/path?q   proxy::redirect
//!     ▼
//!  rate limit of the matched route ──▶ 429                          rate_limit
//!     ▼
//!  route by longest prefix                                          config::runtime::RouteTable
//!     ├─ static site ──▶ file, 304, 206, SPA fallback               static_files
//!     └─ upstream pool ──▶ healthy server, retries, X-Forwarded-*   pool, proxy::upstream
//!     ▼
//!  response headers ([headers], HSTS, X-Request-Id)                 proxy::headers
//!     ▼
//!  metrics and JSON access log                                      metrics, access_log
//! ```
//!
//! The config lives in [`state::State`] behind an `ArcSwap`; each request loads
//! one snapshot at its start and keeps it to the end.

/// The command line: `run`, `check`, `cert`, `reload`.
pub mod cli;
/// The config file: serde types, the validated model, located errors.
pub mod config;
/// The live config snapshot behind `ArcSwap`, and reloads.
pub mod state;
/// Builds and runs the Pingora server: listeners, services, signals, drain.
pub mod server;
/// Per-connection limits before HTTP: per-IP cap, request-head deadline, pre-TLS check.
pub mod connection;
/// Certificates, SNI selection, self-signed generation.
pub mod tls;
/// The `ProxyHttp` implementation: redirect, route, limits, upstream, responses.
pub mod proxy;
/// Keyed GCRA rate limiters.
pub mod rate_limit;
/// Static sites: safe paths, conditional and range requests, the file cache.
pub mod static_files;
/// Upstream pools: balancing and health checks.
pub mod pool;
/// Prometheus metrics.
pub mod metrics;
/// The JSON access log.
pub mod access_log;
/// The operational log: client events demoted and counted, floods held back.
pub mod logging;
/// The admin listener: `/metrics`, `/healthz`, `/readyz`.
pub mod admin;
