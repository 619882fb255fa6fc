//! Passive health (outlier ejection): servers that fail real requests leave
//! rotation for a while, without waiting for an active check.
//!
//! After `consecutive_failures` failed requests in a row (a connect error, a
//! timeout or another upstream error, or an answer whose status is in
//! `failure_statuses`), a server is ejected for `eject_for`. Each repeat
//! ejection doubles that time, up to [`MAX_EJECTION_MULTIPLIER`] times; each
//! whole `eject_for` a server spends in rotation since its last return takes
//! one doubling back (as Envoy's ejection multiplier does).
//!
//! At most `max_ejected_percent` of the pool is ejected at once, rounded
//! down; when that rounds down to zero, one server may still be ejected if
//! the pool has more than one (a single-server pool is never ejected: there
//! would be nothing left to send to), and 0 % disables ejection.
//!
//! The last server in rotation is never ejected: servers that active checks
//! took out count as out too (unlike Envoy's cap, which counts only ejected
//! ones and can leave a pool with nothing to send to).
//!
//! Ejection is separate from active health: a server returns when its time is
//! up, and selection skips a server that is ejected or unhealthy. The state
//! lives in [`Backend`] atomics, so it survives reloads like health does.

use std::sync::atomic::Ordering;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use super::{Backend, Pool};
use crate::config::defaults::MAX_EJECTION_MULTIPLIER;
use crate::config::PassiveHealth;

/// Process-wide origin of the millisecond clock the atomics hold.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds since [`EPOCH`] (never 0, which means "never ejected").
pub(crate) fn now_ms() -> u64 {
    (EPOCH.elapsed().as_millis() as u64).saturating_add(1)
}

/// What one request did on one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

/// A server just ejected, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    pub duration: Duration,
    /// How many ejections in a row (1 on a first one).
    pub streak: u32,
}

/// How many of `servers` may be ejected at once with `percent`.
pub fn max_ejected(servers: usize, percent: u32) -> usize {
    let allowed = servers.saturating_mul(percent as usize) / 100;
    if allowed == 0 && percent > 0 && servers > 1 {
        1
    } else {
        allowed
    }
}

/// The ejection time of ejection number `streak` (1 = first): doubled on
/// each repeat, capped at [`MAX_EJECTION_MULTIPLIER`] × `base`.
pub fn ejection_time(base: Duration, streak: u32) -> Duration {
    let doublings = streak.saturating_sub(1).min(31);
    let multiplier = (1u32 << doublings).min(MAX_EJECTION_MULTIPLIER);
    base.saturating_mul(multiplier)
}

impl Backend {
    /// Whether the server is ejected at `now` (from [`now_ms`]).
    pub fn is_ejected_at(&self, now: u64) -> bool {
        now < self.ejected_until.load(Ordering::Relaxed)
    }

    /// Whether the server is ejected right now.
    pub fn is_ejected(&self) -> bool {
        self.is_ejected_at(now_ms())
    }

    /// Once an ejection's time is up: clears the reported flag. Returns
    /// whether the server just came back (for its log line and gauge).
    pub(crate) fn take_return(&self, now: u64) -> bool {
        self.ejected.load(Ordering::Relaxed)
            && !self.is_ejected_at(now)
            && self.ejected.swap(false, Ordering::Relaxed)
    }
}

impl Pool {
    /// Counts one request's outcome on `backend`; returns the ejection it
    /// caused, if any. Does nothing without `[upstream.NAME.passive]`.
    pub fn record_outcome(&self, backend: &Backend, outcome: Outcome) -> Option<Ejection> {
        let passive = self.config.passive.as_ref()?;
        match outcome {
            Outcome::Success => {
                backend.failures.store(0, Ordering::Relaxed);
                None
            }
            Outcome::Failure => {
                let failures = backend.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if failures < passive.consecutive_failures {
                    return None;
                }
                self.try_eject(backend, passive, now_ms())
            }
        }
    }

    fn try_eject(&self, backend: &Backend, passive: &PassiveHealth, now: u64) -> Option<Ejection> {
        // One decision at a time per pool, so the cap holds under races.
        let _guard = self
            .ejecting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if backend.is_ejected_at(now) {
            return None;
        }
        let ejected = self
            .backends
            .iter()
            .filter(|b| b.is_ejected_at(now))
            .count();
        // Servers out of rotation for either reason: the last one in rotation
        // is never ejected (a pool of two with one failing its active checks
        // keeps serving from the other, as a cloud balancer fails open).
        let out = self
            .backends
            .iter()
            .filter(|b| b.is_ejected_at(now) || !b.is_healthy())
            .count();
        if ejected >= max_ejected(self.backends.len(), passive.max_ejected_percent)
            || out + 1 >= self.backends.len()
        {
            return None;
        }
        // Time in rotation since the last return takes doublings back.
        let base_ms = (passive.eject_for.as_millis() as u64).max(1);
        let returned = backend.ejected_until.load(Ordering::Relaxed);
        let quiet = if returned == 0 {
            u64::MAX
        } else {
            now.saturating_sub(returned) / base_ms
        };
        let previous = backend.ejections.load(Ordering::Relaxed);
        let streak = previous
            .saturating_sub(u32::try_from(quiet).unwrap_or(u32::MAX))
            .saturating_add(1);
        let duration = ejection_time(passive.eject_for, streak);
        backend.ejections.store(streak, Ordering::Relaxed);
        backend.ejected_until.store(
            now.saturating_add(duration.as_millis() as u64),
            Ordering::Relaxed,
        );
        backend.ejected.store(true, Ordering::Relaxed);
        backend.failures.store(0, Ordering::Relaxed);
        Some(Ejection { duration, streak })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Balance, HashKey, ServerAddr, Upstream};
    use std::net::SocketAddr;

    fn pool(servers: usize, percent: u32) -> Pool {
        Pool::new(Upstream {
            name: "u".into(),
            servers: (0..servers)
                .map(|i| ServerAddr {
                    addr: SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
                    weight: 1,
                })
                .collect(),
            balance: Balance::RoundRobin,
            hash_key: HashKey::ClientIp,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            retries: 2,
            websocket_idle_timeout: Duration::from_secs(1),
            health: None,
            passive: Some(PassiveHealth {
                consecutive_failures: 3,
                failure_statuses: vec![503],
                eject_for: Duration::from_secs(10),
                max_ejected_percent: percent,
            }),
        })
    }

    fn fail(pool: &Pool, i: usize, n: usize) -> Option<Ejection> {
        let b = pool.backends[i].clone();
        (0..n)
            .map(|_| pool.record_outcome(&b, Outcome::Failure))
            .last()
            .flatten()
    }

    #[test]
    fn the_percent_cap_rounds_down_but_allows_one_of_several() {
        assert_eq!(max_ejected(10, 50), 5);
        assert_eq!(max_ejected(3, 50), 1);
        assert_eq!(max_ejected(3, 10), 1, "rounds to zero: one of several");
        assert_eq!(max_ejected(1, 50), 0, "a lone server is never ejected");
        assert_eq!(max_ejected(1, 100), 1);
        assert_eq!(max_ejected(4, 0), 0, "0 % disables ejection");
        assert_eq!(max_ejected(4, 100), 4);
    }

    #[test]
    fn ejection_time_doubles_up_to_the_cap() {
        let base = Duration::from_secs(30);
        let times: Vec<u64> = (1..=6).map(|s| ejection_time(base, s).as_secs()).collect();
        assert_eq!(times, vec![30, 60, 120, 240, 300, 300]);
        assert_eq!(ejection_time(base, u32::MAX).as_secs(), 300);
    }

    #[test]
    fn the_last_server_in_rotation_is_never_ejected() {
        let p = pool(2, 50);
        p.backends[0].set_healthy(false);
        assert!(
            fail(&p, 1, 5).is_none(),
            "the other server is unhealthy: ejecting this one leaves nothing"
        );
        let healthy = pool(2, 50);
        assert!(
            fail(&healthy, 1, 3).is_some(),
            "with the other in rotation it goes"
        );
        let all = pool(3, 100);
        assert!(fail(&all, 0, 3).is_some());
        assert!(fail(&all, 1, 3).is_some());
        assert!(fail(&all, 2, 3).is_none(), "even at 100 %, one stays");
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets_the_count() {
        let pool = pool(4, 50);
        let b = pool.backends[0].clone();
        assert!(fail(&pool, 0, 2).is_none());
        assert!(pool.record_outcome(&b, Outcome::Success).is_none());
        assert!(fail(&pool, 0, 2).is_none(), "the count started again");
        let e = fail(&pool, 0, 1).expect("third failure in a row ejects");
        assert_eq!(e.duration, Duration::from_secs(10));
        assert!(b.is_ejected());
        for _ in 0..20 {
            assert_ne!(pool.select(b"", &[]).unwrap().addr, b.addr);
        }
    }

    #[test]
    fn no_more_than_the_percent_is_ejected() {
        let pool = pool(4, 50);
        assert!(fail(&pool, 0, 3).is_some());
        assert!(fail(&pool, 1, 3).is_some());
        assert!(fail(&pool, 2, 3).is_none(), "half the pool is out already");
        assert!(!pool.backends[2].is_ejected());
        let lone = self::pool(1, 50);
        assert!(fail(&lone, 0, 10).is_none());
    }

    #[test]
    fn a_repeat_ejection_doubles_and_time_in_rotation_forgives() {
        let pool = pool(2, 50);
        let b = &pool.backends[0];
        let passive = pool.config.passive.clone().unwrap();
        let t0 = 1_000;
        let first = pool.try_eject(b, &passive, t0).unwrap();
        assert_eq!(first.duration, Duration::from_secs(10));
        // Back at t0 + 10 s, failing again at once: twice as long.
        let t1 = t0 + 10_000;
        assert!(!b.is_ejected_at(t1));
        let second = pool.try_eject(b, &passive, t1).unwrap();
        assert_eq!((second.streak, second.duration.as_secs()), (2, 20));
        // Back at t1 + 20 s; 25 s in rotation (two whole eject_for) forgive both.
        let t2 = t1 + 20_000 + 25_000;
        let third = pool.try_eject(b, &passive, t2).unwrap();
        assert_eq!((third.streak, third.duration.as_secs()), (1, 10));
        assert!(b.take_return(t2 + 10_000));
        assert!(!b.take_return(t2 + 10_001), "reported once");
    }
}
