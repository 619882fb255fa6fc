// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! Gatehouse patch: the keep-alive pool of the [TransportConnector](super::TransportConnector).
//!
//! Stock Pingora kept idle streams in `pingora_pool::ConnectionPool`: a `DashMap`
//! of per-peer nodes (created on check-in, removed again by the checkout that
//! emptied them), a sharded LRU with a `Notify` per entry for the pool size
//! limit, and a `oneshot` per check-in. For one busy peer that is all churn:
//! about 4,000 instructions per proxied request (issue 13). Here one mutex guards
//! a map from the peer's reuse hash to its idle streams, oldest first; the node
//! of a peer stays while the peer is in use, and the [IdleSweeper] drops it once
//! it has been empty for a sweep.
//!
//! Behaviour kept from the stock pool: at most `size` idle streams in all (the
//! oldest one is closed to make room), the idle timeout (an expired stream is
//! never handed out, and is closed within [IDLE_SWEEP_INTERVAL] of expiring),
//! and streams that the server closed or sent data on are not reused (tested on
//! checkout; the sweeper closes them within a sweep). A checkout takes the most
//! recently returned stream: the one least likely to have been closed by the
//! server's own keep-alive timeout.

use super::{test_reusable_stream, Kept};
use crate::protocols::conn_timeout::ConnTimeout;
use crate::protocols::Stream;
use ahash::HashMap;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use crate::utils::coarse_time;
use std::time::Duration;

/// How often the [IdleSweeper] looks at the idle streams.
pub(crate) const IDLE_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// An idle stream in the pool.
pub(crate) struct IdleStream {
    pub(crate) stream: Stream,
    /// What the stream's HTTP/1 sessions keep with it: the read timer, so the
    /// next session does not register one again (patch 18's `ConnTimeout`),
    /// and the connection's digest (patch 126).
    pub(crate) kept: Kept,
    /// When it was put back, on the coarse monotonic clock (Gatehouse patch: an
    /// `Instant` cost a precise clock read at every check-in and checkout).
    since: Duration,
    idle_timeout: Option<Duration>,
}

impl IdleStream {
    /// Whether it has been idle for its idle timeout at `now` ([coarse_time::monotonic]).
    pub(crate) fn expired(&self, now: Duration) -> bool {
        self.idle_timeout
            .is_some_and(|t| now.saturating_sub(self.since) >= t)
    }
}

#[derive(Default)]
struct Idle {
    /// Per peer (its reuse hash), oldest first.
    peers: HashMap<u64, VecDeque<IdleStream>>,
    /// Idle streams in all.
    len: usize,
    /// Whether a sweeper task runs (it stops when the pool is empty).
    sweeping: bool,
}

impl Idle {
    /// Takes out the stream that has been idle the longest, of any peer.
    fn pop_oldest(&mut self) -> Option<IdleStream> {
        let key = self
            .peers
            .iter()
            .filter_map(|(key, streams)| streams.front().map(|s| (*key, s.since)))
            .min_by_key(|(_, since)| *since)?
            .0;
        let oldest = self.peers.get_mut(&key)?.pop_front()?;
        self.len -= 1;
        Some(oldest)
    }
}

/// The idle streams of a connector.
pub(crate) struct IdlePool {
    idle: Mutex<Idle>,
    size: usize,
}

impl IdlePool {
    pub(crate) fn new(size: usize) -> Self {
        IdlePool {
            idle: Mutex::new(Idle::default()),
            size,
        }
    }

    /// Puts `stream` back as the newest idle stream of `key`. Returns `true`
    /// when no sweeper runs: the caller starts one ([IdleSweeper::start]).
    #[must_use]
    pub(crate) fn put(
        &self,
        key: u64,
        stream: Stream,
        kept: Kept,
        idle_timeout: Option<Duration>,
    ) -> bool {
        if self.size == 0 {
            return false; // dropped: closed
        }
        let idle_stream = IdleStream {
            stream,
            kept,
            since: coarse_time::monotonic(),
            idle_timeout,
        };
        let (evicted, start_sweeper) = {
            let mut idle = self.idle.lock();
            idle.peers.entry(key).or_default().push_back(idle_stream);
            idle.len += 1;
            let evicted = if idle.len > self.size {
                idle.pop_oldest()
            } else {
                None
            };
            (evicted, !std::mem::replace(&mut idle.sweeping, true))
        };
        drop(evicted); // closed outside the lock
        start_sweeper
    }

    /// Takes out the newest idle stream of `key`. The caller checks it
    /// ([IdleStream::expired], [test_reusable_stream]).
    pub(crate) fn take(&self, key: u64) -> Option<IdleStream> {
        let mut idle = self.idle.lock();
        let stream = idle.peers.get_mut(&key)?.pop_back()?;
        idle.len -= 1;
        Some(stream)
    }

    /// One sweep: closes the expired streams and those the server closed (or
    /// sent data on), and forgets peers with no idle stream. Returns `false`
    /// (and marks the sweeper stopped) when the pool is empty.
    fn sweep(&self, unexpected_data_conn_count: &AtomicU64) -> bool {
        let keys: Vec<u64> = {
            let mut idle = self.idle.lock();
            idle.peers.retain(|_, streams| !streams.is_empty());
            idle.peers.keys().copied().collect()
        };
        for key in keys {
            // Tested outside the lock (each test is a read on the socket).
            let taken = {
                let mut idle = self.idle.lock();
                let Some(streams) = idle.peers.get_mut(&key) else {
                    continue;
                };
                let taken = std::mem::take(streams);
                idle.len -= taken.len();
                taken
            };
            let now = coarse_time::monotonic();
            let mut kept: VecDeque<IdleStream> = taken
                .into_iter()
                .filter_map(|mut s| {
                    // An armed timer holds the waker of the task that used the
                    // stream last: not kept past a sweep.
                    s.kept.timer = ConnTimeout::default();
                    (!s.expired(now)
                        && test_reusable_stream(&mut s.stream, unexpected_data_conn_count))
                    .then_some(s)
                })
                .collect();
            let mut evicted = Vec::new();
            {
                let mut idle = self.idle.lock();
                let streams = idle.peers.entry(key).or_default();
                // Streams put back meanwhile are newer than the kept ones;
                // `put` already counted them, so only the kept ones count
                // again here (counting all of them inflated `len` on every
                // such race until the pool evicted each stream it was given).
                let returned = kept.len();
                kept.append(streams);
                *streams = kept;
                idle.len += returned;
                while idle.len > self.size {
                    match idle.pop_oldest() {
                        Some(s) => evicted.push(s),
                        None => break,
                    }
                }
            }
            drop(evicted); // closed outside the lock
        }
        let mut idle = self.idle.lock();
        if idle.len == 0 {
            // Under the lock: a `put` after this sees `false` and starts a sweeper.
            idle.sweeping = false;
            return false;
        }
        true
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.idle.lock().len
    }
}

/// One task per connector, running only while the pool holds idle streams,
/// that closes those past their idle timeout and those the server closed (or
/// sent data on), once every [IDLE_SWEEP_INTERVAL].
///
/// Stock Pingora spawned an idle-watch task for every stream put back in the
/// pool, and on checkout woke it and waited for it to let go of the stream
/// (issue 13). The checkout itself refuses an expired stream and tests the
/// socket, so the timeout stays exact; the sweeper only frees the descriptors
/// of streams nobody asks for.
pub(crate) struct IdleSweeper;

impl IdleSweeper {
    pub(crate) fn start(pool: Arc<IdlePool>, unexpected_data_conn_count: Arc<AtomicU64>) {
        pingora_runtime::current_handle().spawn(async move {
            loop {
                pingora_timeout::sleep(IDLE_SWEEP_INTERVAL).await;
                if !pool.sweep(&unexpected_data_conn_count) {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn stream() -> (Stream, tokio::io::DuplexStream) {
        let (client, server) = tokio::io::duplex(64);
        (Box::new(client), server)
    }

    /// Test streams have no distinct ids: each one is told apart by its idle
    /// timeout (in seconds).
    fn mark(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n))
    }

    fn taken(pool: &IdlePool, key: u64) -> Option<u64> {
        pool.take(key)
            .map(|s| s.idle_timeout.map_or(0, |t| t.as_secs()))
    }

    #[tokio::test]
    async fn newest_first_per_peer() {
        let pool = IdlePool::new(8);
        let counter = AtomicU64::new(0);
        let (a, _sa) = stream();
        let (b, _sb) = stream();
        let (c, _sc) = stream();
        assert!(pool.put(1, a, ConnTimeout::default(), mark(100)));
        assert!(!pool.put(1, b, ConnTimeout::default(), mark(200)));
        assert!(!pool.put(2, c, ConnTimeout::default(), mark(300)));
        assert_eq!(taken(&pool, 1), Some(200));
        assert_eq!(taken(&pool, 1), Some(100));
        assert_eq!(taken(&pool, 1), None);
        assert_eq!(taken(&pool, 3), None);
        assert_eq!(pool.len(), 1);
        // The sweep keeps the live stream of peer 2 and forgets peer 1.
        assert!(pool.sweep(&counter));
        assert_eq!(pool.idle.lock().peers.len(), 1);
        assert_eq!(taken(&pool, 2), Some(300));
        assert!(!pool.sweep(&counter));
        assert!(!pool.idle.lock().sweeping);
    }

    #[tokio::test]
    async fn size_limit_closes_the_oldest_of_any_peer() {
        let pool = IdlePool::new(2);
        let (a, _sa) = stream();
        let (b, _sb) = stream();
        let (c, _sc) = stream();
        let _ = pool.put(1, a, ConnTimeout::default(), mark(100));
        std::thread::sleep(Duration::from_millis(2));
        let _ = pool.put(2, b, ConnTimeout::default(), mark(200));
        std::thread::sleep(Duration::from_millis(2));
        let _ = pool.put(2, c, ConnTimeout::default(), mark(300));
        assert_eq!(pool.len(), 2);
        assert_eq!(taken(&pool, 1), None);
        assert_eq!(taken(&pool, 2), Some(300));
        assert_eq!(taken(&pool, 2), Some(200));
        let none = IdlePool::new(0);
        let (d, _sd) = stream();
        assert!(!none.put(1, d, ConnTimeout::default(), None));
        assert_eq!(none.len(), 0);
    }

    #[tokio::test]
    async fn sweep_closes_expired_and_server_closed_streams() {
        let pool = IdlePool::new(8);
        let counter = AtomicU64::new(0);
        let (expiring, _s1) = stream();
        let (closed, s2) = stream();
        let (talking, mut s3) = stream();
        let (live, _s4) = stream();
        let _ = pool.put(
            1,
            expiring,
            ConnTimeout::default(),
            Some(Duration::from_millis(1)),
        );
        let _ = pool.put(1, closed, ConnTimeout::default(), mark(100));
        let _ = pool.put(1, talking, ConnTimeout::default(), mark(200));
        let _ = pool.put(1, live, ConnTimeout::default(), mark(300));
        drop(s2);
        s3.write_all(b"x").await.unwrap();
        std::thread::sleep(Duration::from_millis(2));
        assert!(pool.sweep(&counter));
        assert_eq!(pool.len(), 1);
        assert_eq!(counter.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(taken(&pool, 1), Some(300));
    }
}
