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

pub mod access_log;
pub mod admin;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod rate_limit;
pub mod server;
pub mod state;
pub mod static_files;
pub mod tls;
pub mod connection;
