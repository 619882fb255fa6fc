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

//! Gatehouse patch: a read timeout that a connection keeps from one read to the
//! next, so that a read that has to wait costs no timer registration.
//!
//! `pingora_timeout::timeout` registers a timer the first time the read is
//! pending (a shared 10 ms slot: a lookup in a per-thread map, often two `Arc`s
//! and a map node for a new slot, a boxed future and a `Notify` waiter) and
//! drops it when the read completes. A keep-alive connection waits on every
//! request, so each request paid for it (issue 13).
//!
//! [ConnTimeout] keeps one timer per connection instead (a `pingora_timeout`
//! sleep, so the same 10 ms clock and no entry in tokio's timer wheel, which
//! would make every park of the runtime compute a timeout). Each timed read
//! computes its own deadline (the first time it is pending, as
//! `pingora_timeout::timeout` does) and only polls the sleep, which is allowed
//! to be armed for an earlier deadline: when that earlier one passes, a sleep
//! for the read's deadline replaces it. So a busy connection registers a timer
//! about once per timeout period instead of once per read, and a read still
//! fails at its own deadline (taken from the coarse clock since Gatehouse
//! patch 122: never early, at most two clock ticks late).

use crate::utils::coarse_time;
use pingora_timeout::Elapsed;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

type Sleep = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// A timer kept by a connection across its timed reads. Arms itself the first
/// time a read has to wait.
#[derive(Default)]
pub struct ConnTimeout {
    /// The sleep and the deadline it was armed for.
    sleep: Option<(Sleep, Instant)>,
}

impl fmt::Debug for ConnTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnTimeout")
            .field("deadline", &self.sleep.as_ref().map(|(_, d)| *d))
            .finish()
    }
}

impl ConnTimeout {
    /// `future`, failing with [Elapsed] when it is still pending `duration`
    /// after it first had to wait. One timed future at a time (it borrows the
    /// timer).
    pub async fn timeout<F: Future>(
        &mut self,
        duration: Duration,
        future: F,
    ) -> Result<F::Output, Elapsed> {
        let mut future = std::pin::pin!(future);
        let mut deadline = None;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = future.as_mut().poll(cx) {
                return Poll::Ready(Ok(v));
            }
            // Gatehouse patch: the coarse clock for a read timeout's deadline (never
            // early, at most two ticks of 1-10 ms late), where the precise one cost
            // a clock read for every request that waited for its answer.
            let deadline = *deadline.get_or_insert_with(|| coarse_time::deadline(duration));
            self.poll_deadline(deadline, cx).map(Err)
        })
        .await
    }

    /// Pending until `deadline`, then ready.
    fn poll_deadline(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<Elapsed> {
        // Twice at most: a sleep armed for an earlier deadline is replaced once.
        for _ in 0..2 {
            // None yet, or armed for a later deadline (a longer timeout): arm
            // one for this deadline. One armed for an earlier deadline is kept.
            if !matches!(&self.sleep, Some((_, armed)) if *armed <= deadline) {
                let wait = deadline.saturating_duration_since(Instant::now());
                self.sleep = Some((Box::pin(pingora_timeout::sleep(wait)), deadline));
            }
            let Some((sleep, armed)) = self.sleep.as_mut() else {
                return Poll::Ready(Elapsed); // armed just above
            };
            let armed = *armed;
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // Done: a finished sleep must not be polled again.
            self.sleep = None;
            if armed >= deadline || Instant::now() >= deadline {
                return Poll::Ready(Elapsed);
            }
            // An earlier deadline passed: the next turn arms one for `deadline`.
        }
        Poll::Ready(Elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_futures_arm_nothing() {
        let mut timer = ConnTimeout::default();
        for i in 0..3 {
            let v = timer.timeout(Duration::from_secs(1), async { i }).await;
            assert_eq!(v.unwrap(), i);
        }
        assert!(timer.sleep.is_none());
    }

    #[tokio::test]
    async fn each_wait_gets_its_own_deadline_from_one_sleep() {
        let mut timer = ConnTimeout::default();
        let start = Instant::now();
        // Completes in time: arms the sleep for start + 300 ms.
        let done = timer
            .timeout(
                Duration::from_millis(300),
                tokio::time::sleep(Duration::from_millis(100)),
            )
            .await;
        assert!(done.is_ok());
        let armed = timer.sleep.as_ref().unwrap().1;
        // The next wait's deadline is later than the armed one: it still times
        // out at its own deadline (about 100 + 300 ms), not at the armed one.
        let second = Instant::now();
        let res = timer
            .timeout(Duration::from_millis(300), std::future::pending::<()>())
            .await;
        assert!(res.is_err());
        let elapsed = second.elapsed();
        assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(1000), "{elapsed:?}");
        assert!(armed < second + Duration::from_millis(300));
        // A shorter timeout than the armed one is honoured too.
        let _ = timer
            .timeout(
                Duration::from_millis(5_000),
                tokio::time::sleep(Duration::from_millis(10)),
            )
            .await;
        let third = Instant::now();
        let res = timer
            .timeout(Duration::from_millis(100), std::future::pending::<()>())
            .await;
        assert!(res.is_err());
        assert!(third.elapsed() < Duration::from_millis(1000));
        // After a timeout, the same timer serves the next read.
        let v = timer
            .timeout(Duration::from_millis(300), async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                7
            })
            .await;
        assert_eq!(v.unwrap(), 7);
        assert!(start.elapsed() < Duration::from_secs(3));
    }
}
