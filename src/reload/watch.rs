//! `server.watch_config`: reload when the files change.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::state::State;

/// How often `watch_config` looks at the config and certificate files.
pub(crate) const WATCH_POLL: Duration = Duration::from_millis(100);
/// How long watched files must stay unchanged before the reload starts, so a
/// file written in several steps is read once it is complete.
pub(crate) const WATCH_DEBOUNCE: Duration = Duration::from_millis(200);

/// `server.watch_config`: reloads when the config file or a certificate or key
/// it names changes (content, not just mtime), once the files have been
/// stable for [`WATCH_DEBOUNCE`]. Polling works the same for files edited in
/// place, replaced by rename, or swapped behind a symlink (Kubernetes
/// ConfigMaps). A change a reload already read (SIGHUP) is not reloaded again.
pub(crate) struct ConfigWatcher {
    pub state: Arc<State>,
}

#[async_trait]
impl BackgroundService for ConfigWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut ticker = tokio::time::interval(WATCH_POLL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A changed fingerprint and when it was first seen.
        let mut pending: Option<(u64, Instant)> = None;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = ticker.tick() => {}
            }
            if !self.state.current().config.server.watch_config {
                pending = None;
                continue;
            }
            let state = self.state.clone();
            let Ok(now) = tokio::task::spawn_blocking(move || state.files_fingerprint()).await
            else {
                continue;
            };
            if now == self.state.loaded_fingerprint() {
                pending = None;
                continue;
            }
            match pending {
                Some((seen, since)) if seen == now => {
                    if since.elapsed() >= WATCH_DEBOUNCE {
                        pending = None;
                        log::info!(
                            "watch_config: {} or a certificate changed; reloading",
                            self.state.config_path().display()
                        );
                        let state = self.state.clone();
                        let _ = tokio::task::spawn_blocking(move || state.reload()).await;
                    }
                }
                _ => pending = Some((now, Instant::now())),
            }
        }
    }
}
