//! The cost of one rate-limit check: local (governor, in process) against
//! shared (the GCRA script in a real `redis-server` on loopback).
//!
//! Run with `cargo bench --bench rate_limit_store` (needs `redis-server`:
//! `bash .ci/deps.sh --test`). Starts its own Redis on a free loopback port
//! (no persistence), builds one local and one shared limit with the same
//! settings (high enough that every check is admitted: the cost of counting,
//! not of refusing), keyed by 1,000 client addresses in turn, and measures:
//!
//! - latency: checks one at a time, each timed; p50 / p99 / max. For a shared
//!   limit this is what a request waits for in `request_filter`: the latency
//!   it adds over a local limit.
//! - throughput: checks per second, one at a time and from 64 concurrent
//!   tasks on a 2-thread runtime (as Gatehouse's workers would ask).
//!
//! Bounded: about 100,000 shared checks, a few seconds. `cargo test --benches`
//! runs a short version.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse::config::{OnStoreError, RateKey, RateLimit, RateStore};
use gatehouse::rate_limit::{Key, Limiter, Limiters};

/// Distinct keys, used in turn.
const KEYS: u32 = 1000;
const TASKS: usize = 64;

struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> (Redis, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start redis-server ({e}): install it with `bash .ci/deps.sh --test`")
        });
    let redis = Redis(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pong = TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_millis(500)))?;
            s.write_all(b"PING\r\n")?;
            let mut buf = [0u8; 16];
            let n = s.read(&mut buf)?;
            Ok(buf[..n].starts_with(b"+PONG"))
        });
        if pong.unwrap_or(false) {
            return (redis, port);
        }
        assert!(
            Instant::now() < deadline,
            "redis-server did not answer PING"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn key(i: u32) -> Key {
    Key::Ip(IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i % KEYS)))
}

/// p50, p99 and max of `samples` (sorted here).
fn percentiles(samples: &mut [Duration]) -> (Duration, Duration, Duration) {
    samples.sort_unstable();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
    (at(0.50), at(0.99), at(1.0))
}

fn row(what: &str, samples: &mut [Duration], total: Duration) {
    let (p50, p99, max) = percentiles(samples);
    println!(
        "| {what} | {:.1} | {:.1} | {:.1} | {:.0} |",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        max.as_secs_f64() * 1e6,
        samples.len() as f64 / total.as_secs_f64()
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--test" || a == "--list")
        || std::env::var_os("RATE_LIMIT_BENCH_QUICK").is_some();
    let (local_n, shared_n) = if quick {
        (10_000, 1_000)
    } else {
        (1_000_000, 50_000)
    };
    let (_redis, port) = start_redis();
    let url = format!("redis://127.0.0.1:{port}");
    let limit = |name: &str, store: Option<RateStore>| RateLimit {
        name: name.into(),
        key: RateKey::ClientIp,
        rate: 1e9,
        burst: 1_000_000_000,
        store,
    };
    let mut config = BTreeMap::new();
    config.insert("local".to_string(), limit("local", None));
    let store = RateStore {
        url,
        timeout: Duration::from_secs(1),
        on_error: OnStoreError::Deny,
        instances: 1,
    };
    config.insert("shared".to_string(), limit("shared", Some(store)));
    let limiters = Limiters::build(&config, None);
    let local = Arc::clone(limiters.get("local").unwrap());
    let shared = Arc::clone(limiters.get("shared").unwrap());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    println!("| check | p50 µs | p99 µs | max µs | checks/s |");
    println!("|---|---:|---:|---:|---:|");

    // Local, one at a time.
    let mut samples = Vec::with_capacity(local_n);
    let start = Instant::now();
    for i in 0..local_n as u32 {
        let k = key(i);
        let t = Instant::now();
        assert!(local.check(&k).allowed);
        samples.push(t.elapsed());
    }
    row("local, one at a time", &mut samples, start.elapsed());

    // Shared, one at a time (after a warm-up: connection, script loaded).
    rt.block_on(async {
        for i in 0..100 {
            assert!(shared.check_shared(&key(i)).await.unwrap().allowed);
        }
        let mut samples = Vec::with_capacity(shared_n);
        let start = Instant::now();
        for i in 0..shared_n as u32 {
            let k = key(i);
            let t = Instant::now();
            let d = shared.check_shared(&k).await;
            samples.push(t.elapsed());
            assert!(d.as_ref().is_some_and(|d| d.allowed), "store failed: {d:?}");
        }
        row(
            "shared (Redis), one at a time",
            &mut samples,
            start.elapsed(),
        );
    });

    // Shared, from concurrent tasks.
    let per_task = shared_n / TASKS * 2;
    let (mut samples, total) = rt.block_on(concurrent(&shared, per_task));
    row(
        &format!("shared (Redis), {TASKS} concurrent tasks"),
        &mut samples,
        total,
    );
    assert!(!shared.store().unwrap().is_down(), "no check fell back");
}

async fn concurrent(shared: &Arc<Limiter>, per_task: usize) -> (Vec<Duration>, Duration) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let shared = Arc::clone(shared);
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(per_task);
            for i in 0..per_task as u32 {
                let k = key(i + t as u32 * 7);
                let s = Instant::now();
                let d = shared.check_shared(&k).await;
                samples.push(s.elapsed());
                assert!(d.as_ref().is_some_and(|d| d.allowed), "store failed: {d:?}");
            }
            samples
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (all, start.elapsed())
}
