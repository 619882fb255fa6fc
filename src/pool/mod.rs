//! Upstream pools: the servers of one `[upstream.NAME]`, their health, and the
//! balancing algorithms that pick one for a request.
//!
//! A [`Pool`] is built from the validated config. Each server's state
//! ([`Backend`]: health and in-flight count) lives in an `Arc` that a reload
//! hands over to the new pool when the server stays, so health and counters
//! survive reloads. Selection is lock-free: atomics for round robin and
//! least-connections, a prebuilt ketama ring for consistent hashing.
//!
//! Only healthy servers that passive health ([`passive`]) has not ejected
//! are picked. A server added by a reload starts out of
//! rotation until its first health check passes; at start-up every server
//! starts healthy (as in Nginx and HAProxy), and connect failures are retried
//! on another server meanwhile.

pub mod health;
pub mod passive;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pingora::upstreams::peer::{HttpPeer, Peer};
use pingora_ketama::{Bucket, Continuum};

use crate::config::{Balance, ServerAddr, Upstream};

/// Longest precomputed weighted round-robin schedule (entries).
const MAX_SCHEDULE: usize = 4096;

/// One backend server and its live state.
#[derive(Debug)]
pub struct Backend {
    pub addr: SocketAddr,
    /// `addr` as text, for metric labels and logs.
    pub label: String,
    healthy: AtomicBool,
    in_flight: AtomicUsize,
    /// Consecutive passing or failing checks (written by the health checker).
    pub(crate) passes: AtomicU32,
    pub(crate) fails: AtomicU32,
    /// Added by a reload and not yet seen passing: joins on its first pass.
    pub(crate) pending: AtomicBool,
    /// Passive health ([`passive`]): failed requests in a row.
    pub(crate) failures: AtomicU32,
    /// Ejections in a row, for the doubling.
    pub(crate) ejections: AtomicU32,
    /// Out of rotation until this time ([`passive::now_ms`]); 0 = never ejected.
    pub(crate) ejected_until: AtomicU64,
    /// Ejected and its return not reported yet (log line, gauge).
    pub(crate) ejected: AtomicBool,
    /// Its `gatehouse_upstream_requests_total` series, by status.
    pub(crate) series: crate::metrics::ServerSeries,
    /// The reuse hash of its [`plain_peer`] (the key of its idle connections
    /// in Pingora's keep-alive pool), computed once, not per request.
    pub(crate) reuse_hash: u64,
}

/// The peer Gatehouse connects to for a server: plain TCP to `addr`, no SNI.
/// `proxy::upstream::peer` adds the pool's timeouts, which are not part of
/// the peer's reuse hash.
pub(crate) fn plain_peer(addr: SocketAddr) -> Box<HttpPeer> {
    Box::new(HttpPeer::new(addr, false, String::new()))
}

impl Backend {
    pub(crate) fn new(addr: SocketAddr, healthy: bool) -> Self {
        Backend {
            addr,
            label: addr.to_string(),
            healthy: AtomicBool::new(healthy),
            in_flight: AtomicUsize::new(0),
            passes: AtomicU32::new(0),
            fails: AtomicU32::new(0),
            pending: AtomicBool::new(!healthy),
            failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejected: AtomicBool::new(false),
            series: Default::default(),
            reuse_hash: plain_peer(addr).reuse_hash(),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Sets the health flag; returns whether it changed.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Ordering::Relaxed) != healthy
    }

    /// Requests being served by this server right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Counts a request as in flight on a server until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Backend>);

impl InFlight {
    pub fn new(backend: Arc<Backend>) -> Self {
        backend.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(backend)
    }

    pub fn backend(&self) -> &Arc<Backend> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One upstream pool.
pub struct Pool {
    pub config: Upstream,
    pub backends: Vec<Arc<Backend>>,
    weights: Vec<u32>,
    /// Smooth weighted round-robin order of backend indexes.
    schedule: Vec<usize>,
    cursor: AtomicUsize,
    ring: Option<Continuum>,
    /// Held while deciding an ejection, so `max_ejected_percent` holds.
    ejecting: Mutex<()>,
    /// Its `gatehouse_upstream_duration_seconds` series.
    pub(crate) series: crate::metrics::PoolSeries,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.config.name)
            .field("backends", &self.backends)
            .finish()
    }
}

impl Pool {
    /// Builds a pool, taking over the state of servers that `previous` already had.
    /// A pool at start-up: every server starts in rotation.
    pub fn new(config: Upstream) -> Pool {
        Pool::build(config, None, false)
    }

    /// A pool built by a reload. Servers `previous` had keep their state; new
    /// ones (all of them when the pool itself is new) wait for a passing
    /// check when health checks are configured.
    pub fn reloaded(config: Upstream, previous: Option<&Pool>) -> Pool {
        Pool::build(config, previous, true)
    }

    fn build(config: Upstream, previous: Option<&Pool>, reloading: bool) -> Pool {
        let backends: Vec<Arc<Backend>> = config
            .servers
            .iter()
            .map(|s| {
                previous
                    .and_then(|p| p.backends.iter().find(|b| b.addr == s.addr).cloned())
                    .unwrap_or_else(|| {
                        // New servers of a reload wait for a passing check when checks are on.
                        let healthy = !reloading || config.health.is_none();
                        Arc::new(Backend::new(s.addr, healthy))
                    })
            })
            .collect();
        let weights: Vec<u32> = config.servers.iter().map(|s| s.weight).collect();
        let schedule = smooth_schedule(&weights);
        let ring = (config.balance == Balance::ConsistentHash).then(|| {
            let buckets: Vec<Bucket> = config
                .servers
                .iter()
                .map(|ServerAddr { addr, weight }| Bucket::new(*addr, *weight))
                .collect();
            Continuum::new(&buckets)
        });
        let start = fastrand::usize(..schedule.len().max(1));
        Pool {
            config,
            backends,
            weights,
            schedule,
            cursor: AtomicUsize::new(start),
            ring,
            ejecting: Mutex::new(()),
            series: Default::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Whether any server is in rotation.
    pub fn any_healthy(&self) -> bool {
        self.backends.iter().any(|b| b.is_healthy())
    }

    /// Picks a healthy server, not ejected and not in `tried`. `key` feeds
    /// consistent hashing.
    pub fn select(&self, key: &[u8], tried: &[SocketAddr]) -> Option<Arc<Backend>> {
        let now = passive::now_ms();
        let eligible = |i: usize| {
            let b = &self.backends[i];
            b.is_healthy() && !b.is_ejected_at(now) && !tried.contains(&b.addr)
        };
        let idx = match self.config.balance {
            Balance::RoundRobin => self.round_robin(eligible),
            Balance::LeastConn => self.least_conn(eligible),
            Balance::Random => self.random(eligible),
            Balance::ConsistentHash => self.consistent(key, eligible),
        }?;
        self.backends.get(idx).cloned()
    }

    fn round_robin(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.schedule.len();
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| self.schedule[(start + k) % n])
            .find(|&i| eligible(i))
    }

    fn least_conn(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        // Ties go round-robin, so equal servers share an idle period evenly.
        let n = self.backends.len();
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(usize, usize, u32)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if !eligible(i) {
                continue;
            }
            let load = self.backends[i].in_flight();
            let w = self.weights[i];
            let better = match best {
                None => true,
                // load/w < best_load/best_w, without division.
                Some((_, bl, bw)) => (load as u128) * (bw as u128) < (bl as u128) * (w as u128),
            };
            if better {
                best = Some((i, load, w));
            }
        }
        best.map(|(i, _, _)| i)
    }

    fn random(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let total: u64 = (0..self.backends.len())
            .filter(|&i| eligible(i))
            .map(|i| u64::from(self.weights[i]))
            .sum();
        if total == 0 {
            return None;
        }
        let mut r = fastrand::u64(..total);
        for i in (0..self.backends.len()).filter(|&i| eligible(i)) {
            let w = u64::from(self.weights[i]);
            if r < w {
                return Some(i);
            }
            r -= w;
        }
        None
    }

    fn consistent(&self, key: &[u8], eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let ring = self.ring.as_ref()?;
        // Walk the ring from the key's point to the first eligible server; the
        // walk is bounded, and a pool with no eligible server falls through.
        let limit = self.backends.len() * 160 * 1000;
        ring.node_iter(key)
            .take(limit)
            .filter_map(|addr| self.backends.iter().position(|b| b.addr == *addr))
            .find(|&i| eligible(i))
    }
}

/// A smooth weighted round-robin order (Nginx's algorithm): weights 5,1,1 give
/// a a b a c a a rather than a a a a a b c.
fn smooth_schedule(weights: &[u32]) -> Vec<usize> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total == 0 {
        return Vec::new();
    }
    let gcd = weights.iter().fold(0u64, |g, &w| gcd(g, u64::from(w)));
    let len = ((total / gcd.max(1)) as usize).min(MAX_SCHEDULE);
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(len);
    for _ in 0..len {
        for (c, &w) in current.iter_mut().zip(weights) {
            *c += i64::from(w);
        }
        let Some((best, _)) = current
            .iter()
            .enumerate()
            .max_by_key(|&(i, &c)| (c, std::cmp::Reverse(i)))
        else {
            break;
        };
        current[best] -= total as i64;
        out.push(best);
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HashKey;
    use std::time::Duration;

    fn upstream(balance: Balance, weights: &[u32]) -> Upstream {
        Upstream {
            name: "u".into(),
            servers: weights
                .iter()
                .enumerate()
                .map(|(i, &w)| ServerAddr {
                    addr: SocketAddr::from(([127, 0, 0, 1], 5000 + i as u16)),
                    weight: w,
                })
                .collect(),
            balance,
            hash_key: HashKey::ClientIp,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            retries: 2,
            websocket_idle_timeout: Duration::from_secs(1),
            health: None,
            passive: None,
        }
    }

    fn counts(pool: &Pool, n: usize, key: impl Fn(usize) -> Vec<u8>) -> Vec<usize> {
        let mut c = vec![0; pool.backends.len()];
        for k in 0..n {
            let b = pool.select(&key(k), &[]).unwrap();
            c[pool.backends.iter().position(|x| x.addr == b.addr).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn smooth_schedule_interleaves() {
        assert_eq!(smooth_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_schedule(&[2, 2]), vec![0, 1]);
    }

    #[test]
    fn weighted_round_robin_is_exact() {
        let pool = Pool::new(upstream(Balance::RoundRobin, &[1, 2]));
        assert_eq!(counts(&pool, 300, |_| vec![]), vec![100, 200]);
    }

    #[test]
    fn unhealthy_and_tried_servers_are_skipped() {
        let pool = Pool::new(upstream(Balance::RoundRobin, &[1, 1, 1]));
        pool.backends[0].set_healthy(false);
        let tried = [pool.backends[1].addr];
        for _ in 0..10 {
            assert_eq!(
                pool.select(b"", &tried).unwrap().addr,
                pool.backends[2].addr
            );
        }
        pool.backends[2].set_healthy(false);
        assert!(pool.select(b"", &tried).is_none());
    }

    #[test]
    fn least_conn_prefers_idle_servers() {
        let pool = Pool::new(upstream(Balance::LeastConn, &[1, 1]));
        let _busy = InFlight::new(pool.backends[0].clone());
        for _ in 0..5 {
            assert_eq!(pool.select(b"", &[]).unwrap().addr, pool.backends[1].addr);
        }
    }

    #[test]
    fn consistent_hash_is_sticky_and_fails_over() {
        let pool = Pool::new(upstream(Balance::ConsistentHash, &[1, 1, 1]));
        let first = pool.select(b"user-42", &[]).unwrap().addr;
        for _ in 0..10 {
            assert_eq!(pool.select(b"user-42", &[]).unwrap().addr, first);
        }
        let c = counts(&pool, 3000, |k| format!("user-{k}").into_bytes());
        assert!(c.iter().all(|&n| n > 500), "spread: {c:?}");
        let failover = pool.select(b"user-42", &[first]).unwrap().addr;
        assert_ne!(failover, first);
    }

    #[test]
    fn random_respects_weights() {
        let pool = Pool::new(upstream(Balance::Random, &[1, 3]));
        let c = counts(&pool, 4000, |_| vec![]);
        assert!(c[1] > 2 * c[0], "{c:?}");
    }

    #[test]
    fn reload_keeps_state_and_new_servers_wait_for_checks() {
        let mut cfg = upstream(Balance::RoundRobin, &[1, 1]);
        cfg.health = Some(crate::config::HealthCheck {
            path: "/".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: 1,
            unhealthy_threshold: 1,
        });
        let old = Pool::new(cfg.clone());
        old.backends[1].set_healthy(false);
        cfg.servers.push(ServerAddr {
            addr: SocketAddr::from(([127, 0, 0, 1], 6000)),
            weight: 1,
        });
        let new = Pool::reloaded(cfg, Some(&old));
        assert!(Arc::ptr_eq(&old.backends[0], &new.backends[0]));
        assert!(!new.backends[1].is_healthy());
        assert!(
            !new.backends[2].is_healthy(),
            "added servers wait for a passing check"
        );
    }
}
