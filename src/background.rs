//! Background services over the live state: the health checks of the
//! current pools (restarted on every reload), the reporter of servers that
//! passive health lets back in, the rate-limit janitor, and the sampler of
//! the status page's rates.
//! They read [`State`]; the pool and limiter modules do not, so the live
//! state depends on them and never the other way round.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::task::JoinSet;

use crate::config::HealthCheck;
use crate::metrics;
use crate::pool::health::{check, record, CheckError};
use crate::pool::{Backend, Pool};
use crate::state::State;

/// How often idle rate-limit keys are evicted.
pub(crate) const JANITOR_INTERVAL: Duration = Duration::from_secs(10);
/// How often ejected servers are looked at, to report their return (the
/// return itself is exact: selection compares the time).
pub(crate) const EJECTION_POLL: Duration = Duration::from_millis(100);

/// Checks every server of `pool` forever, every `interval`.
async fn watch_pool(pool: Arc<Pool>, hc: HealthCheck, state: Arc<State>) {
    let mut ticker = tokio::time::interval(hc.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let mut checks = JoinSet::new();
        for backend in &pool.backends {
            let backend = backend.clone();
            let hc = hc.clone();
            checks.spawn(async move {
                let result = check(backend.addr, &hc).await;
                (backend, result)
            });
        }
        while let Some(done) = checks.join_next().await {
            let Ok((backend, result)) = done else {
                continue;
            };
            let changed = record(&backend, &hc, &result);
            if let Some(healthy) = changed {
                on_health_change(&state, &pool, &backend, healthy, result.err());
            }
        }
    }
}

/// Runs the health checks of the current config, restarting them on reload.
pub(crate) struct HealthService {
    pub state: Arc<State>,
}

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut reloads = self.state.subscribe();
        loop {
            let runtime = self.state.current();
            let mut tasks = JoinSet::new();
            for pool in runtime.pools.values() {
                match pool.config.health.clone() {
                    Some(hc) => {
                        tasks.spawn(watch_pool(pool.clone(), hc, self.state.clone()));
                    }
                    None => self.unchecked(pool),
                }
            }
            drop(runtime);
            tokio::select! {
                _ = shutdown.changed() => return,
                changed = reloads.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            tasks.abort_all();
        }
    }
}

impl HealthService {
    /// A pool without checks (a reload may have removed them): nothing would
    /// ever bring a server the checks took out back, so all are in rotation.
    fn unchecked(&self, pool: &Pool) {
        for backend in &pool.backends {
            backend.pending.store(false, Ordering::Relaxed);
            backend.passes.store(0, Ordering::Relaxed);
            backend.fails.store(0, Ordering::Relaxed);
            if backend.set_healthy(true) {
                on_health_change(&self.state, pool, backend, true, None);
            }
        }
    }
}

/// Logs a server's flip and sets its gauge (unless a reload removed it).
fn on_health_change(
    state: &State,
    pool: &Pool,
    backend: &Backend,
    healthy: bool,
    cause: Option<CheckError>,
) {
    // A checker of a pool that a reload just replaced may still report;
    // the gauge of a server the reload removed must not come back.
    let current = state.current().pools.get(pool.name()).is_some_and(|p| {
        p.backends
            .iter()
            .any(|b| std::ptr::eq(Arc::as_ptr(b), backend))
    });
    if current {
        metrics::set_backend_health(pool.name(), &backend.label, healthy);
    }
    match (healthy, cause) {
        (true, _) => log::info!(
            "upstream {}: server {} is healthy again",
            pool.name(),
            backend.label
        ),
        (false, Some(cause)) => log::warn!(
            "upstream {}: server {} taken out of rotation: health check {}",
            pool.name(),
            backend.label,
            crate::logging::chain(&cause)
        ),
        (false, None) => log::warn!(
            "upstream {}: server {} taken out of rotation",
            pool.name(),
            backend.label
        ),
    }
}

/// Logs the return of servers whose ejection (passive health) is over and
/// resets their gauge.
pub(crate) struct EjectionReporter {
    pub state: Arc<State>,
}

#[async_trait]
impl BackgroundService for EjectionReporter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut ticker = tokio::time::interval(EJECTION_POLL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = ticker.tick() => {
                    let now = crate::pool::passive::now_ms();
                    for pool in self.state.current().pools.values() {
                        for backend in &pool.backends {
                            if backend.take_return(now) {
                                metrics::set_backend_ejected(pool.name(), &backend.label, false);
                                log::info!(
                                    "upstream {}: server {} is back in rotation after its ejection{}",
                                    pool.name(),
                                    backend.label,
                                    if backend.is_healthy() { "" } else { " (still failing health checks)" }
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Periodically evicts idle keys from the current limiters.
pub(crate) struct LimiterJanitor {
    pub state: Arc<State>,
}

#[async_trait]
impl BackgroundService for LimiterJanitor {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut ticker = tokio::time::interval(JANITOR_INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = ticker.tick() => {
                    for limiter in self.state.current().limiters.iter() {
                        limiter.evict_idle();
                    }
                }
            }
        }
    }
}

/// Samples the counters behind the status page's rates once a second (see
/// [`crate::status::rates`]); runs only with an admin listener.
pub(crate) struct StatusSampler;

#[async_trait]
impl BackgroundService for StatusSampler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut ticker = tokio::time::interval(crate::status::rates::SAMPLE_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = ticker.tick() => crate::status::rates::sample(),
            }
        }
    }
}
