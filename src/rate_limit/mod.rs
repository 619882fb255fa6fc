//! Rate limits: one keyed GCRA limiter per `[rate_limit.NAME]`.
//!
//! A local limit (no `store`) is a governor limiter shared by every worker
//! thread and both listeners, so the configured rate is this instance's real
//! rate; it is checked synchronously in the stage pipeline. A shared limit
//! (`store = "redis://..."`) keeps its buckets in the store (`store.rs`), so
//! every instance naming the same store and limit counts against one bucket;
//! its check is one round trip, awaited by `request_filter`. While the store
//! does not answer, `on_store_error` decides: local buckets at
//! `rate / instances` (the governor limiter of the limit), admit, or refuse.
//!
//! A request whose key is missing (the header is absent) counts against one
//! shared "missing key" bucket: it is limited, never waved through. Idle keys
//! are evicted by the limiter janitor (locally) and by key expiry (in Redis),
//! so a flood of distinct keys cannot grow memory without bound.

pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use http::HeaderMap;

use crate::config::{OnStoreError, RateKey, RateLimit, RateStore};
use crate::metrics;
pub use store::Store;

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

impl Key {
    /// The Redis key of this key's bucket in `limit`:
    /// `gatehouse:rl:{limit}:ip:ADDR`, `...:h:VALUE` or `...:missing`.
    pub fn bucket(&self, limit: &str) -> String {
        match self {
            Key::Ip(ip) => format!("gatehouse:rl:{limit}:ip:{ip}"),
            Key::Text(t) => format!("gatehouse:rl:{limit}:h:{t}"),
            Key::Missing => format!("gatehouse:rl:{limit}:missing"),
        }
    }
}

type Keyed =
    RateLimiter<Key, DefaultKeyedStateStore<Key>, DefaultClock, StateInformationMiddleware>;

/// One named limit.
pub struct Limiter {
    pub config: RateLimit,
    /// The local buckets: the limit itself, or the fallback of a shared one.
    limiter: Keyed,
    /// Rate and burst of the local buckets.
    local_rate: f64,
    local_burst: u32,
    shared: Option<Shared>,
}

/// The store side of a shared limit.
struct Shared {
    store: Arc<Store>,
    settings: RateStore,
    /// Seconds between two requests at the full rate.
    interval: Duration,
    /// Whether checks are falling back (logged once per outage).
    falling_back: AtomicBool,
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

impl Decision {
    /// An admitted request that left `remaining` of `burst` at `rate`.
    fn allowed(rate: f64, burst: u32, remaining: u32) -> Decision {
        let missing = burst.saturating_sub(remaining);
        Decision {
            allowed: true,
            limit: burst,
            remaining,
            reset_secs: (f64::from(missing) / rate).ceil() as u64,
        }
    }

    /// A refused request that may come back after `wait`.
    fn refused(burst: u32, wait: Duration) -> Decision {
        Decision {
            allowed: false,
            limit: burst,
            remaining: 0,
            reset_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
        }
    }
}

impl Limiter {
    /// A limit; a shared one uses `store` (a store for its URL).
    fn new(config: RateLimit, store: Option<Arc<Store>>) -> Limiter {
        let divisor = config.store.as_ref().map_or(1, |s| s.instances.max(1));
        let local_rate = config.rate / f64::from(divisor);
        let local_burst = (config.burst / divisor).max(1);
        let period = Duration::from_secs_f64(1.0 / local_rate).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(local_burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let shared = config
            .store
            .clone()
            .zip(store)
            .map(|(settings, store)| Shared {
                store,
                settings,
                interval: Duration::from_secs_f64(1.0 / config.rate),
                falling_back: AtomicBool::new(false),
            });
        Limiter {
            config,
            limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            local_rate,
            local_burst,
            shared,
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

    /// Whether the buckets live in a store ([`Limiter::check_shared`]).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// The store of a shared limit.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.shared.as_ref().map(|s| &s.store)
    }

    /// Takes one request from `key`'s local bucket.
    pub fn check(&self, key: &Key) -> Decision {
        match self.limiter.check_key(key) {
            Ok(snapshot) => Decision::allowed(
                self.local_rate,
                self.local_burst,
                snapshot.remaining_burst_capacity(),
            ),
            // The limiter's own clock: building a new one costs CPUID
            // probes on every refusal.
            Err(not_until) => Decision::refused(
                self.local_burst,
                not_until.wait_time_from(self.limiter.clock().now()),
            ),
        }
    }

    /// Takes one request from `key`'s bucket in the store; while the store
    /// does not answer, `on_store_error` decides. `None`: admitted uncounted
    /// (`allow`). A local limit checks locally.
    pub async fn check_shared(&self, key: &Key) -> Option<Decision> {
        let Some(shared) = &self.shared else {
            return Some(self.check(key));
        };
        let name = &self.config.name;
        let answer = shared
            .store
            .check(
                key.bucket(name),
                shared.interval,
                self.config.burst,
                shared.settings.timeout,
            )
            .await;
        match answer {
            Ok(reply) => {
                if shared.falling_back.swap(false, Ordering::Relaxed) {
                    log::info!(
                        "rate limit {name}: store {} answers again; the limit is shared again",
                        shared.store.label()
                    );
                }
                Some(if reply.allowed {
                    Decision::allowed(self.config.rate, self.config.burst, reply.remaining)
                } else {
                    Decision::refused(self.config.burst, reply.wait)
                })
            }
            Err(e) => {
                metrics::record_store_fallback(name);
                let on_error = shared.settings.on_error;
                if !shared.falling_back.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "rate limit {name}: store {} unreachable ({e}); falling back to {}",
                        shared.store.label(),
                        self.fallback_text(on_error)
                    );
                }
                match on_error {
                    OnStoreError::Local => Some(self.check(key)),
                    OnStoreError::Allow => None,
                    OnStoreError::Deny => {
                        Some(Decision::refused(self.config.burst, Duration::from_secs(1)))
                    }
                }
            }
        }
    }

    fn fallback_text(&self, on_error: OnStoreError) -> String {
        match on_error {
            OnStoreError::Local => format!(
                "local buckets ({}/s, burst {})",
                (self.local_rate * 100.0).round() / 100.0,
                self.local_burst
            ),
            OnStoreError::Allow => "admitting every request (on_store_error = allow)".into(),
            OnStoreError::Deny => "refusing every request (on_store_error = deny)".into(),
        }
    }

    /// Keys currently tracked locally.
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
    /// Builds the limiters; a limit whose settings did not change keeps its
    /// buckets, and a store whose URL is still named keeps its connection.
    pub fn build(config: &BTreeMap<String, RateLimit>, previous: Option<&Limiters>) -> Limiters {
        let mut stores: HashMap<String, Arc<Store>> = previous
            .into_iter()
            .flat_map(|p| p.by_name.values())
            .filter_map(|l| l.store())
            .map(|s| (s.url().to_string(), s.clone()))
            .collect();
        let by_name = config
            .iter()
            .map(|(name, rl)| {
                let kept = previous
                    .and_then(|p| p.by_name.get(name))
                    .filter(|l| l.config == *rl)
                    .cloned();
                let limiter = kept.unwrap_or_else(|| {
                    let store = rl.store.as_ref().map(|s| {
                        stores
                            .entry(s.url.clone())
                            .or_insert_with(|| Store::new(&s.url))
                            .clone()
                    });
                    Arc::new(Limiter::new(rl.clone(), store))
                });
                (name.clone(), limiter)
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
        Limiter::new(
            RateLimit {
                name: "t".into(),
                key: RateKey::ClientIp,
                rate,
                burst,
                store: None,
            },
            None,
        )
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
        let l = Limiter::new(
            RateLimit {
                name: "h".into(),
                key: RateKey::Header(http::header::HeaderName::from_static("x-api-key")),
                rate: 1.0,
                burst: 1,
                store: None,
            },
            None,
        );
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
    fn reload_keeps_the_store_of_a_url_still_named() {
        let shared = |rate: f64, url: &str| RateLimit {
            name: "s".into(),
            key: RateKey::ClientIp,
            rate,
            burst: 1,
            store: Some(RateStore {
                url: url.into(),
                timeout: Duration::from_millis(50),
                on_error: OnStoreError::Local,
                instances: 1,
            }),
        };
        let mut cfg = BTreeMap::new();
        cfg.insert("s".to_string(), shared(1.0, "redis://127.0.0.1:1"));
        cfg.insert("t".to_string(), shared(2.0, "redis://127.0.0.1:1"));
        let first = Limiters::build(&cfg, None);
        let store = |l: &Limiters, n: &str| Arc::clone(l.get(n).unwrap().store().unwrap());
        assert!(
            Arc::ptr_eq(&store(&first, "s"), &store(&first, "t")),
            "one per URL"
        );
        cfg.insert("s".to_string(), shared(5.0, "redis://127.0.0.1:1"));
        let changed_rate = Limiters::build(&cfg, Some(&first));
        assert!(!Arc::ptr_eq(
            first.get("s").unwrap(),
            changed_rate.get("s").unwrap()
        ));
        assert!(Arc::ptr_eq(&store(&first, "s"), &store(&changed_rate, "s")));
        cfg.insert("s".to_string(), shared(5.0, "redis://127.0.0.1:2"));
        let moved = Limiters::build(&cfg, Some(&changed_rate));
        assert!(
            !Arc::ptr_eq(&store(&first, "s"), &store(&moved, "s")),
            "a new URL reconnects"
        );
        assert!(Arc::ptr_eq(&store(&first, "t"), &store(&moved, "t")));
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
                store: None,
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
