//! A shared store of buckets: Redis, reached over one multiplexed connection
//! per store URL, with the GCRA of `gcra.lua` run server-side (one round trip
//! per check, `EVALSHA`, loaded again by `redis::Script` after `NOSCRIPT`).
//!
//! Calls run on a small runtime of their own, so the connection's tasks live
//! in one place whatever Pingora worker asks. A store that fails a call is
//! left alone for [`STORE_RETRY_INTERVAL`]: meanwhile the limits fall back to
//! their `on_store_error` without waiting, and one check at a time tries the
//! store again, so a dead Redis costs one timeout per interval, not one per
//! request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::defaults::{STORE_CONNECT_TIMEOUT, STORE_RETRY_INTERVAL};
use crate::metrics;

/// The GCRA script (see `gcra.lua`).
static SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("gcra.lua")));

/// The runtime every store call runs on (one thread; Redis answers in
/// microseconds and the connection pipelines). `None` if it could not start.
static RUNTIME: LazyLock<Option<tokio::runtime::Runtime>> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("gatehouse-store")
        .enable_all()
        .build()
        .map_err(|e| log::error!("rate limit stores disabled: no runtime for them: {e}"))
        .ok()
});

/// The start of [`Store::retry_at`]'s clock.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds since [`EPOCH`], at least 1 (0 means "up").
fn now_ms() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// What the script answered for one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub allowed: bool,
    /// Requests left in the burst after this one (admitted).
    pub remaining: u32,
    /// Until a request is admitted (refused).
    pub wait: Duration,
}

/// Why a check got no answer from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("left alone after a failure; next try within {STORE_RETRY_INTERVAL:?}")]
    Resting,
    #[error("no client: {0}")]
    Unavailable(&'static str),
}

/// One store, shared by every limit that names its URL and kept across
/// reloads that keep the URL.
pub struct Store {
    /// As configured (it may hold a password): the store's identity.
    url: String,
    /// Without credentials: for logs and the metric label.
    label: String,
    conn: Result<ConnectionManager, String>,
    /// [`now_ms`] before which no call is tried; 0 while the store answers.
    retry_at: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("label", &self.label).finish()
    }
}

impl Store {
    /// A store for `url` (checked by the config). Starts connecting at once
    /// (without waiting); never fails: a store without a client fails every
    /// check.
    pub fn new(url: &str) -> Arc<Store> {
        let store = Arc::new(Self::unstarted(url));
        store.warm_up();
        store
    }

    fn unstarted(url: &str) -> Store {
        let label = label_of(url);
        let conn = Self::connect(url).map_err(|e| {
            log::error!("rate limit store {label}: {e}");
            e
        });
        // Unknown until the first answer.
        metrics::set_store_up(&label, false);
        Store {
            url: url.to_string(),
            label,
            conn,
            retry_at: AtomicU64::new(0),
        }
    }

    /// Connects and loads the script now, so that the first check is one
    /// round trip; a store that does not answer is marked down (logged,
    /// counted) as a failed check would.
    fn warm_up(self: &Arc<Self>) {
        let (Ok(conn), Some(runtime)) = (&self.conn, RUNTIME.as_ref()) else {
            return;
        };
        let mut conn = conn.clone();
        let store = Arc::clone(self);
        runtime.spawn(async move {
            let load = SCRIPT.load_async(&mut conn);
            match tokio::time::timeout(STORE_CONNECT_TIMEOUT, load).await {
                Ok(Ok(_)) if !store.is_down() => metrics::set_store_up(&store.label, true),
                Ok(Ok(_)) => store.succeeded(),
                Ok(Err(e)) => store.failed(&StoreError::Redis(e)),
                Err(_) => store.failed(&StoreError::Timeout(STORE_CONNECT_TIMEOUT)),
            }
        });
    }

    fn connect(url: &str) -> Result<ConnectionManager, String> {
        let runtime = RUNTIME.as_ref().ok_or("no runtime")?;
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(STORE_CONNECT_TIMEOUT))
            // One attempt per reconnection: the retry interval paces them.
            .set_number_of_retries(0);
        // The manager's tasks start on the store runtime.
        let _entered = runtime.enter();
        ConnectionManager::new_lazy_with_config(client, config).map_err(|e| e.to_string())
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL without credentials.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether the last call failed (checks fall back until one succeeds).
    pub fn is_down(&self) -> bool {
        self.retry_at.load(Ordering::Relaxed) != 0
    }

    /// Takes one request from `bucket`, whose limit admits one request every
    /// `interval` with bursts of `burst`; waits at most `timeout`.
    pub async fn check(
        &self,
        bucket: String,
        interval: Duration,
        burst: u32,
        timeout: Duration,
    ) -> Result<Reply, StoreError> {
        if !self.may_try() {
            return Err(StoreError::Resting);
        }
        let result = self.call(bucket, interval, burst, timeout).await;
        match &result {
            Ok(_) => self.succeeded(),
            Err(e) => self.failed(e),
        }
        result
    }

    async fn call(
        &self,
        bucket: String,
        interval: Duration,
        burst: u32,
        timeout: Duration,
    ) -> Result<Reply, StoreError> {
        let mut conn = self
            .conn
            .as_ref()
            .map_err(|_| StoreError::Unavailable("the client could not be built"))?
            .clone();
        let runtime = RUNTIME
            .as_ref()
            .ok_or(StoreError::Unavailable("no runtime"))?;
        let micros = interval.as_secs_f64() * 1e6;
        let mut task = runtime.spawn(async move {
            SCRIPT
                .key(bucket)
                .arg(micros)
                .arg(burst)
                .invoke_async::<(i64, i64, i64)>(&mut conn)
                .await
        });
        let (allowed, remaining, wait_us) = match tokio::time::timeout(timeout, &mut task).await {
            Ok(Ok(answer)) => answer?,
            Ok(Err(_)) => return Err(StoreError::Unavailable("the call was cancelled")),
            Err(_) => {
                task.abort();
                return Err(StoreError::Timeout(timeout));
            }
        };
        Ok(Reply {
            allowed: allowed == 1,
            remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
            wait: Duration::from_micros(u64::try_from(wait_us.max(0)).unwrap_or(u64::MAX)),
        })
    }

    /// While up: always. While down: one caller per retry interval.
    fn may_try(&self) -> bool {
        let at = self.retry_at.load(Ordering::Relaxed);
        if at == 0 {
            return true;
        }
        let now = now_ms();
        now >= at
            && self
                .retry_at
                .compare_exchange(at, now + retry_ms(), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    fn succeeded(&self) {
        let was_down = self.retry_at.swap(0, Ordering::Relaxed) != 0;
        if was_down {
            log::info!("rate limit store {} answers again", self.label);
            metrics::set_store_up(&self.label, true);
        }
    }

    fn failed(&self, e: &StoreError) {
        metrics::record_store_error(&self.label);
        if self.retry_at.swap(now_ms() + retry_ms(), Ordering::Relaxed) == 0 {
            log::warn!("rate limit store {} unreachable: {e}", self.label);
            metrics::set_store_up(&self.label, false);
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        metrics::remove_store(&self.label);
    }
}

fn retry_ms() -> u64 {
    u64::try_from(STORE_RETRY_INTERVAL.as_millis()).unwrap_or(1000)
}

/// `redis://user:secret@host:6379/0` → `redis://host:6379/0`.
pub fn label_of(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://{rest}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_hide_credentials() {
        assert_eq!(label_of("redis://user:pa@ss@h:6379/2"), "redis://h:6379/2");
        assert_eq!(label_of("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn a_failed_store_rests_then_lets_one_check_through() {
        let store = Store::unstarted("redis://127.0.0.1:1");
        assert!(store.may_try());
        store.failed(&StoreError::Resting);
        assert!(store.is_down());
        assert!(!store.may_try(), "resting");
        store
            .retry_at
            .store(now_ms().saturating_sub(1).max(1), Ordering::Relaxed);
        assert!(store.may_try(), "one try after the interval");
        assert!(!store.may_try(), "only one");
        store.succeeded();
        assert!(!store.is_down() && store.may_try());
    }
}
