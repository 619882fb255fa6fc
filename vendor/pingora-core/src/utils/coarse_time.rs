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

//! Gatehouse patch: clocks for times that need no better than a few milliseconds.
//!
//! Linux keeps `CLOCK_MONOTONIC_COARSE` and `CLOCK_REALTIME_COARSE` as of the last
//! clock tick (1-4 ms behind the precise clocks) and the vDSO reads them without
//! touching the time counter: about 5 ns, where `Instant::now()` costs 40-50 ns on
//! a virtual machine (the counter read is the cost). The Date header, the idle
//! ages of pooled connections and the deadlines of timeouts of a second or more
//! were each read from the precise clock on every request.

use std::time::{Duration, Instant, SystemTime};

/// `clock_gettime` or `clock_getres`.
#[cfg(target_os = "linux")]
type ClockCall = unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int;

/// `call(clock)` as a duration: the time (`clock_gettime`) or the resolution
/// (`clock_getres`).
#[cfg(target_os = "linux")]
fn read_with(call: ClockCall, clock: libc::clockid_t) -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    if unsafe { call(clock, &mut ts) } != 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(ts.tv_sec).ok()?,
        u32::try_from(ts.tv_nsec).ok()?,
    ))
}

#[cfg(target_os = "linux")]
fn read(clock: libc::clockid_t) -> Option<Duration> {
    read_with(libc::clock_gettime, clock)
}

/// Whole seconds since the Unix epoch, up to a tick late.
pub fn realtime_secs() -> u64 {
    #[cfg(target_os = "linux")]
    if let Some(now) = read(libc::CLOCK_REALTIME_COARSE) {
        return now.as_secs();
    }
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The monotonic time (from an arbitrary origin), up to a tick late.
pub fn monotonic() -> Duration {
    #[cfg(target_os = "linux")]
    if let Some(now) = read(libc::CLOCK_MONOTONIC_COARSE) {
        return now;
    }
    static ORIGIN: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
    ORIGIN.elapsed()
}

/// `Instant::now()` to within a tick either way: a precise instant taken once per
/// thread, moved on by the coarse clock.
pub fn instant() -> Instant {
    thread_local! {
        static BASE: (Instant, Duration) = (Instant::now(), monotonic());
    }
    BASE.with(|(at, coarse)| *at + monotonic().saturating_sub(*coarse))
}

/// The coarse clocks' tick: how far [instant] may be from `Instant::now()` either
/// way (10 ms where the system does not say).
pub fn tick() -> Duration {
    static TICK: std::sync::LazyLock<Duration> = std::sync::LazyLock::new(|| {
        #[cfg(target_os = "linux")]
        if let Some(tick) = read_with(libc::clock_getres, libc::CLOCK_MONOTONIC_COARSE) {
            return tick;
        }
        Duration::from_millis(10)
    });
    *TICK
}

/// A deadline `after` from now that is never earlier than `Instant::now() + after`
/// (and at most two ticks later): [instant] plus a tick.
pub fn deadline(after: Duration) -> Instant {
    instant() + tick() + after
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_clocks_follow_the_precise_ones_within_a_tick() {
        // A tick is at most 10 ms (HZ = 100); the reads are not atomic, so allow two.
        let slack = Duration::from_millis(20);
        let precise = Instant::now();
        let coarse = instant();
        let diff = if coarse > precise {
            coarse - precise
        } else {
            precise - coarse
        };
        assert!(diff <= slack, "{diff:?}");
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(realtime_secs().abs_diff(wall) <= 1);
        assert!(tick() > Duration::ZERO && tick() <= Duration::from_millis(10));
        let before = Instant::now() + Duration::from_millis(50);
        assert!(deadline(Duration::from_millis(50)) >= before);
        let a = monotonic();
        std::thread::sleep(Duration::from_millis(30));
        assert!(monotonic() - a >= Duration::from_millis(10));
    }
}
