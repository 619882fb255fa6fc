//! Rate limits: one keyed GCRA limiter (governor) per `[rate_limit.NAME]`.
//!
//! One limiter is shared by every worker thread and both listeners, so the
//! configured rate is the real rate. A request whose key is missing (the header
//! is absent) counts against one shared "missing key" bucket: it is limited,
//! never waved through. Idle keys are evicted by [`LimiterJanitor`] so a flood
//! of distinct keys cannot grow memory without bound.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use http::HeaderMap;

use crate::config::{RateKey, RateLimit};

/// Longest header value used as a key (bytes); longer values are cut.
const MAX_KEY_LEN: usize = 256;

/// What a limiter counts by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Ip(IpAddr),
    Text(Box<str>),
    /// The keying header was absent.
    Missing,
}

type Keyed =
    RateLimiter<Key, DefaultKeyedStateStore<Key>, DefaultClock, StateInformationMiddleware>;

/// One named limit.
pub struct Limiter {
    pub config: RateLimit,
    limiter: Keyed,
}

/// The outcome of a check, with what the `RateLimit-*` headers report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The bucket size.
    pub limit: u32,
    pub remaining: u32,
    /// Whole seconds until the bucket is full again (allowed) or until the next
    /// request is allowed (refused); at least 1 when refused.
    pub reset_secs: u64,
}

impl Limiter {
    fn new(config: RateLimit) -> Limiter {
        let period = Duration::from_secs_f64(1.0 / config.rate).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(config.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Limiter {
            config,
            limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
        }
    }

    /// The key of a request.
    pub fn key_for(&self, client_ip: Option<IpAddr>, headers: &HeaderMap) -> Key {
        match &self.config.key {
            RateKey::ClientIp => client_ip.map_or(Key::Missing, Key::Ip),
            RateKey::Header(name) => match headers.get(name).map(|v| v.as_bytes()) {
                Some(v) if !v.is_empty() => {
                    let v = &v[..v.len().min(MAX_KEY_LEN)];
                    Key::Text(String::from_utf8_lossy(v).into())
                }
                _ => Key::Missing,
            },
        }
    }

    /// Takes one request from `key`'s bucket.
    pub fn check(&self, key: &Key) -> Decision {
        let per_request = 1.0 / self.config.rate;
        match self.limiter.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let missing = self.config.burst.saturating_sub(remaining);
                Decision {
                    allowed: true,
                    limit: self.config.burst,
                    remaining,
                    reset_secs: (f64::from(missing) * per_request).ceil() as u64,
                }
            }
            Err(not_until) => {
                // The limiter's own clock: building a new one costs CPUID
                // probes on every refusal.
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                Decision {
                    allowed: false,
                    limit: self.config.burst,
                    remaining: 0,
                    reset_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                }
            }
        }
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }

    /// Drops keys whose buckets are full again (they hold no information).
    pub fn evict_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// Every limiter of one config.
#[derive(Default)]
pub struct Limiters {
    by_name: HashMap<String, Arc<Limiter>>,
}

impl Limiters {
    /// Builds the limiters; a limit whose settings did not change keeps its buckets.
    pub fn build(config: &BTreeMap<String, RateLimit>, previous: Option<&Limiters>) -> Limiters {
        let by_name = config
            .iter()
            .map(|(name, rl)| {
                let kept = previous
                    .and_then(|p| p.by_name.get(name))
                    .filter(|l| l.config == *rl)
                    .cloned();
                (
                    name.clone(),
                    kept.unwrap_or_else(|| Arc::new(Limiter::new(rl.clone()))),
                )
            })
            .collect();
        Limiters { by_name }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Limiter>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Limiter>> {
        self.by_name.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rate: f64, burst: u32) -> Limiter {
        Limiter::new(RateLimit {
            name: "t".into(),
            key: RateKey::ClientIp,
            rate,
            burst,
        })
    }

    #[test]
    fn burst_then_refusal_with_retry_after() {
        let l = limit(1.0, 5);
        let k = Key::Ip([127, 0, 0, 1].into());
        let allowed = (0..20).filter(|_| l.check(&k).allowed).count();
        assert_eq!(allowed, 5);
        let d = l.check(&k);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.reset_secs, 1);
        let other = Key::Ip([127, 0, 0, 2].into());
        assert!(l.check(&other).allowed, "keys have their own buckets");
    }

    #[test]
    fn remaining_counts_down_and_fractional_rates_wait_longer() {
        let l = limit(10.0, 3);
        let k = Key::Missing;
        assert_eq!(l.check(&k).remaining, 2);
        assert_eq!(l.check(&k).remaining, 1);
        assert_eq!(l.check(&k).remaining, 0);
        let slow = limit(0.5, 1);
        assert!(slow.check(&k).allowed);
        let d = slow.check(&k);
        assert!(!d.allowed);
        assert_eq!(d.reset_secs, 2, "0.5/s means one request every 2 s");
    }

    #[test]
    fn header_keys_and_missing_header() {
        let l = Limiter::new(RateLimit {
            name: "h".into(),
            key: RateKey::Header(http::header::HeaderName::from_static("x-api-key")),
            rate: 1.0,
            burst: 1,
        });
        let mut h = HeaderMap::new();
        assert_eq!(l.key_for(None, &h), Key::Missing);
        h.insert("x-api-key", http::HeaderValue::from_static("abc"));
        assert_eq!(l.key_for(None, &h), Key::Text("abc".into()));
    }

    #[test]
    fn eviction_drops_only_full_buckets() {
        let fast = limit(1000.0, 1);
        let slow = limit(0.1, 2);
        for i in 0..100u8 {
            let k = Key::Ip([10, 0, 0, i].into());
            assert!(fast.check(&k).allowed);
            assert!(slow.check(&k).allowed);
        }
        assert_eq!((fast.len(), slow.len()), (100, 100));
        // 1 ms per request: every fast bucket is full again well within 20 ms.
        std::thread::sleep(Duration::from_millis(20));
        fast.evict_idle();
        slow.evict_idle();
        assert!(fast.is_empty(), "{} full buckets kept", fast.len());
        assert_eq!(slow.len(), 100, "buckets still refilling are kept");
        // An evicted key starts again with a full bucket.
        let d = fast.check(&Key::Ip([10, 0, 0, 1].into()));
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
    }

    #[test]
    fn reload_keeps_buckets_of_unchanged_limits() {
        let mut cfg = BTreeMap::new();
        cfg.insert(
            "a".to_string(),
            RateLimit {
                name: "a".into(),
                key: RateKey::ClientIp,
                rate: 1.0,
                burst: 1,
            },
        );
        let first = Limiters::build(&cfg, None);
        let again = Limiters::build(&cfg, Some(&first));
        assert!(Arc::ptr_eq(
            first.get("a").unwrap(),
            again.get("a").unwrap()
        ));
        cfg.get_mut("a").unwrap().rate = 2.0;
        let changed = Limiters::build(&cfg, Some(&again));
        assert!(!Arc::ptr_eq(
            first.get("a").unwrap(),
            changed.get("a").unwrap()
        ));
    }
}
