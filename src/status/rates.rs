//! Request, error and refusal rates over the last minute, for the status page.
//!
//! Nothing is added to the request path: the counters already kept for
//! Prometheus (`gatehouse_upstream_requests_total` by pool, server and status,
//! `gatehouse_rate_limited_total` by limit) are read once a second by
//! [`crate::background::StatusSampler`] into a ring of [`SAMPLES`] totals. A
//! rate is the difference between the totals read when the page is asked for
//! and the oldest sample at most [`WINDOW`] old, over the time between them.
//! An error is an answer with a 5xx status (the server's, or the 502/504
//! Gatehouse wrote when the exchange with the server failed).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus::core::Collector;

use crate::metrics;

/// The window the rates cover.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// How often the counters are sampled.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Samples kept: one a second over the window, and the one just before it.
const SAMPLES: usize = 62;

/// Counter totals at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// (pool, server) → (answers, 5xx answers).
    pub(crate) servers: HashMap<(String, String), (u64, u64)>,
    /// Limit name → refusals.
    pub(crate) limits: HashMap<String, u64>,
}

impl Totals {
    /// The totals of the process-wide metrics now.
    pub(crate) fn read() -> Totals {
        let mut totals = Totals::default();
        let Some(m) = metrics::get() else {
            return totals;
        };
        for family in m.upstream_requests.collect() {
            for metric in family.get_metric() {
                let label = |name: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_string())
                };
                let (Some(pool), Some(server), Some(status)) =
                    (label("upstream"), label("server"), label("status"))
                else {
                    continue;
                };
                let n = metric.get_counter().get_value() as u64;
                let entry = totals.servers.entry((pool, server)).or_default();
                entry.0 += n;
                if status.starts_with('5') {
                    entry.1 += n;
                }
            }
        }
        for family in m.rate_limited.collect() {
            for metric in family.get_metric() {
                if let Some(limit) = metric.get_label().iter().find(|l| l.name() == "limit") {
                    *totals.limits.entry(limit.value().to_string()).or_default() +=
                        metric.get_counter().get_value() as u64;
                }
            }
        }
        totals
    }
}

/// Counts over a window: what [`Window::since`] returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Recent {
    /// The time covered (up to [`WINDOW`]; shorter just after start-up).
    pub(crate) seconds: f64,
    pub(crate) servers: HashMap<(String, String), (u64, u64)>,
    pub(crate) limits: HashMap<String, u64>,
}

impl Recent {
    /// Answers and 5xx answers of one server.
    pub(crate) fn server(&self, pool: &str, server: &str) -> (u64, u64) {
        self.servers
            .get(&(pool.to_string(), server.to_string()))
            .copied()
            .unwrap_or_default()
    }

    /// Refusals of one limit.
    pub(crate) fn limit(&self, name: &str) -> u64 {
        self.limits.get(name).copied().unwrap_or_default()
    }

    /// `count` per second over the window (taken as at least a second, so
    /// the first requests after start-up do not read as a huge rate).
    pub(crate) fn per_second(&self, count: u64) -> f64 {
        count as f64 / self.seconds.max(1.0)
    }
}

/// The ring of samples.
#[derive(Debug, Default)]
pub(crate) struct Window {
    samples: VecDeque<(Instant, Totals)>,
}

impl Window {
    /// Adds a sample taken at `at`, dropping the oldest past [`SAMPLES`].
    pub(crate) fn push(&mut self, at: Instant, totals: Totals) {
        if self.samples.len() >= SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((at, totals));
    }

    /// What changed between the oldest sample at most [`WINDOW`] before `at`
    /// and `now` (the totals at `at`).
    pub(crate) fn since(&self, at: Instant, now: &Totals) -> Recent {
        let Some((then, base)) = self
            .samples
            .iter()
            .find(|(t, _)| at.saturating_duration_since(*t) <= WINDOW)
        else {
            return Recent::default();
        };
        let servers = now
            .servers
            .iter()
            .map(|(key, &(req, err))| {
                let (req0, err0) = base.servers.get(key).copied().unwrap_or_default();
                (
                    key.clone(),
                    (req.saturating_sub(req0), err.saturating_sub(err0)),
                )
            })
            .collect();
        let limits = now
            .limits
            .iter()
            .map(|(key, &n)| {
                let n0 = base.limits.get(key).copied().unwrap_or_default();
                (key.clone(), n.saturating_sub(n0))
            })
            .collect();
        Recent {
            seconds: at.saturating_duration_since(*then).as_secs_f64(),
            servers,
            limits,
        }
    }
}

static WINDOW_STATE: Mutex<Window> = Mutex::new(Window {
    samples: VecDeque::new(),
});

/// Takes one sample of the counters (the sampler calls it every second).
pub(crate) fn sample() {
    let totals = Totals::read();
    WINDOW_STATE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Instant::now(), totals);
}

/// The counts of the last minute, up to now.
pub(crate) fn last_minute() -> Recent {
    let now = Totals::read();
    WINDOW_STATE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .since(Instant::now(), &now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(req: u64, err: u64, refused: u64) -> Totals {
        Totals {
            servers: HashMap::from([(("api".into(), "127.0.0.1:1".into()), (req, err))]),
            limits: HashMap::from([("per_ip".into(), refused)]),
        }
    }

    #[test]
    fn the_window_counts_the_last_minute_only() {
        let t0 = Instant::now();
        let mut w = Window::default();
        assert_eq!(w.since(t0, &totals(5, 1, 1)), Recent::default());
        for s in 0..=90u64 {
            w.push(t0 + Duration::from_secs(s), totals(s * 10, s, s * 2));
        }
        let at = t0 + Duration::from_secs(90);
        let recent = w.since(at, &totals(900, 90, 180));
        assert_eq!(recent.seconds, 60.0);
        assert_eq!(recent.server("api", "127.0.0.1:1"), (600, 60));
        assert_eq!(recent.server("api", "127.0.0.1:2"), (0, 0));
        assert_eq!(recent.limit("per_ip"), 120);
        assert_eq!(recent.per_second(600), 10.0);
        assert!(w.samples.len() <= SAMPLES);
    }

    #[test]
    fn a_young_window_covers_the_time_since_the_first_sample() {
        let t0 = Instant::now();
        let mut w = Window::default();
        w.push(t0, Totals::default());
        let recent = w.since(t0 + Duration::from_secs(4), &totals(8, 2, 0));
        assert_eq!(recent.seconds, 4.0);
        assert_eq!(recent.server("api", "127.0.0.1:1"), (8, 2));
        assert_eq!(recent.per_second(8), 2.0);
        assert_eq!(
            Recent::default().per_second(3),
            3.0,
            "a window of at least 1 s"
        );
    }
}
