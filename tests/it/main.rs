//! Gatehouse's integration tests, one module per capability, in one test
//! binary (linked once). Every test starts the real `gatehouse` binary and
//! real servers on loopback; `common` holds the harness and its builders.
//!
//! Run one capability with `cargo test --test it reload::`.

// A test binary has no public API: `pub` in the harness means "shared between
// test modules".
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

mod access;
mod acme;
mod access_log;
mod bench_configs;
mod check;
mod compression;
mod cors;
mod cors_browser;
mod drain;
mod faults;
mod h2_abuse;
mod hostile;
mod limits;
mod logs;
mod metrics;
mod passive_health;
mod proptest_invariants;
mod proxy_protocol;
mod rate_limit;
mod rate_limit_redis;
mod redirect;
mod reload;
mod sigint;
mod slow_clients;
mod static_site;
mod status_page;
mod tls;
mod tls_quality;
mod upgrade;
mod upstream;
mod websocket;
