//! Memory of a keyed rate limiter under a flood of distinct client addresses,
//! and what idle-key eviction gives back.
//!
//! Run with `cargo bench --bench limiter_memory`. Floods one limiter (rate
//! 1000/s, burst 1, so every bucket is full again 1 ms after its request) with
//! 1,000,000 distinct IPv4 keys, then waits until every bucket is full and
//! runs `evict_idle()` (what the janitor does every 10 s). Prints the process
//! RSS (`VmRSS` of /proc/self/status) and the key count at each step, then a
//! one-line summary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use gatehouse::config::{RateKey, RateLimit};
use gatehouse::rate_limit::{Key, Limiters};

const KEYS: u32 = 1_000_000;
const RATE: f64 = 1000.0;

/// Resident set size of this process in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it too, so
    // keep that short.
    let quick = std::env::args().any(|a| a == "--test" || a == "--list")
        || std::env::var_os("LIMITER_MEMORY_QUICK").is_some();
    let keys = if quick { 10_000 } else { KEYS };

    let mut config = BTreeMap::new();
    config.insert(
        "flood".to_string(),
        RateLimit {
            name: "flood".into(),
            key: RateKey::ClientIp,
            rate: RATE,
            burst: 1,
            store: None,
        },
    );
    let limiters = Limiters::build(&config, None);
    let limiter = limiters.get("flood").expect("limiter built");

    let before = rss_kib();
    let start = Instant::now();
    let mut allowed = 0u32;
    for i in 0..keys {
        // 10.0.0.0/8 and beyond: every key distinct.
        let ip = IpAddr::V4(Ipv4Addr::from(0x0A00_0000u32.wrapping_add(i)));
        if limiter.check(&Key::Ip(ip)).allowed {
            allowed += 1;
        }
    }
    let flood_time = start.elapsed();
    let after_flood = rss_kib();
    let len_flood = limiter.len();
    assert_eq!(allowed, keys, "every new key has a full bucket");

    // Every bucket is full again 1 ms after its request; eviction keeps keys
    // used within the last emission interval, so wait a few of those.
    std::thread::sleep(Duration::from_millis(10));
    let evict_start = Instant::now();
    limiter.evict_idle();
    let evict_time = evict_start.elapsed();
    let after_evict = rss_kib();
    let len_evict = limiter.len();

    let grown = after_flood.saturating_sub(before);
    println!("before:        RSS {:8.1} MiB", mib(before));
    println!(
        "after flood:   RSS {:8.1} MiB  keys {len_flood:>9}  ({keys} checks in {flood_time:.2?}, {:.0} checks/s)",
        mib(after_flood),
        f64::from(keys) / flood_time.as_secs_f64()
    );
    println!(
        "after evict:   RSS {:8.1} MiB  keys {len_evict:>9}  (evict_idle in {evict_time:.2?})",
        mib(after_evict)
    );
    println!(
        "limiter_memory: {keys} keys: +{:.1} MiB ({:.0} B/key); after eviction: {len_evict} keys, RSS {:.1} MiB (was {:.1} before the flood)",
        mib(grown),
        (grown * 1024) as f64 / f64::from(keys),
        mib(after_evict),
        mib(before)
    );
}
