//! Signals: SIGQUIT, SIGTERM and SIGINT become Pingora's shutdown kinds (or,
//! for SIGINT, an exit at once); SIGHUP reloads; SIGUSR1 reopens the access log.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use super::drain::{exit_now, exit_when_drained, set_draining};
use super::{pid_file, upgrade};
use crate::state::State;

/// Installs the process-wide handlers for the signals Gatehouse uses, so that
/// one arriving before the services listen for it (a SIGHUP from `gatehouse
/// reload` or systemd right after start) is ignored instead of killing the
/// process by its default action. tokio keeps a handler for the life of the
/// process once a signal is first listened for.
pub(crate) fn hold() -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async {
        for kind in [
            SignalKind::hangup(),
            SignalKind::user_defined1(),
            SignalKind::quit(),
        ] {
            // The stream can go; the handler stays.
            drop(signal(kind)?);
        }
        Ok(())
    })
}

/// Turns SIGQUIT, SIGTERM and SIGINT into Pingora's shutdown kinds.
pub(crate) struct Signals {
    /// From the start-up config, as Pingora's grace period (see `needs_upgrade`).
    pub(crate) drain_delay: Duration,
    /// Where Pingora sends the sockets on SIGQUIT.
    pub(crate) upgrade_sock: PathBuf,
    pub(crate) pid_file: PathBuf,
}

/// Exits the process when `signal` arrives.
async fn exit_on(mut signal: tokio::signal::unix::Signal, why: &'static str, pid_file: PathBuf) {
    if signal.recv().await.is_some() {
        exit_now(why, &pid_file);
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (mut quit, mut term, mut int) = match (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(q), Ok(t), Ok(i)) => (q, t, i),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                log::error!("cannot listen for shutdown signals: {e}");
                return std::future::pending().await;
            }
        };
        loop {
            tokio::select! {
                _ = quit.recv() => {
                    let sock = &self.upgrade_sock;
                    if upgrade::ready(sock, upgrade::UPGRADE_SOCK_WAIT).await {
                        // `/readyz` stays 200: the new instance serves the same sockets.
                        log::info!("SIGQUIT: handing the listeners to the new instance; draining in 5 s");
                        tokio::spawn(exit_on(int, "SIGINT while handing over", self.pid_file.clone()));
                        return ShutdownSignal::GracefulUpgrade;
                    }
                    log::error!(
                        "SIGQUIT ignored, still serving: no new instance is waiting on {} (start `gatehouse run -u` first)",
                        sock.display()
                    );
                }
                _ = term.recv() => {
                    set_draining();
                    if !self.drain_delay.is_zero() {
                        log::info!("SIGTERM: /readyz reports 503; still serving for {:?}", self.drain_delay);
                        tokio::select! {
                            _ = tokio::time::sleep(self.drain_delay) => {}
                            _ = int.recv() => exit_now("SIGINT during the drain delay", &self.pid_file),
                        }
                    }
                    // The same SIGINT stream goes on listening, so a SIGINT
                    // at any moment of the drain is seen.
                    tokio::spawn(exit_on(int, "SIGINT while draining", self.pid_file.clone()));
                    log::info!("SIGTERM: no longer accepting; draining in-flight requests");
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = int.recv() => exit_now("SIGINT", &self.pid_file),
            }
        }
    }
}

/// SIGHUP reloads the config; SIGUSR1 reopens the access log; a starting
/// shutdown marks the process as draining for `/readyz` and starts the drain
/// watcher. Writes the pid file once SIGHUP is handled.
pub(crate) struct SignalService {
    pub(crate) state: Arc<State>,
    /// The grace period Pingora was started with (a reload cannot change it).
    pub(crate) grace: Duration,
    pub(crate) pid_file: PathBuf,
}

#[async_trait]
impl BackgroundService for SignalService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (mut hup, mut usr1) = match (
            signal(SignalKind::hangup()),
            signal(SignalKind::user_defined1()),
        ) {
            (Ok(h), Ok(u)) => (h, u),
            (Err(e), _) | (_, Err(e)) => {
                log::error!("cannot listen for SIGHUP/SIGUSR1, reloads are off: {e}");
                let _ = shutdown.changed().await;
                set_draining();
                return;
            }
        };
        // `gatehouse reload` reads it; Pingora only writes it when it daemonizes.
        if let Err(e) = pid_file::write(&self.pid_file) {
            log::warn!("cannot write the pid file {}: {e}", self.pid_file.display());
        }
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    self.start_drain();
                    return;
                }
                _ = hup.recv() => {
                    log::info!("SIGHUP: reloading {}", self.state.config_path().display());
                    let state = self.state.clone();
                    // Reading files and certificates is blocking work.
                    let _ = tokio::task::spawn_blocking(move || state.reload()).await;
                }
                _ = usr1.recv() => crate::access_log::reopen(),
            }
        }
    }
}

impl SignalService {
    fn start_drain(&self) {
        set_draining();
        let grace = self.grace;
        let pid_file = self.pid_file.clone();
        let spawned = std::thread::Builder::new()
            .name("drain".into())
            .spawn(move || exit_when_drained(grace, &pid_file));
        if let Err(e) = spawned {
            log::warn!("cannot watch the drain, waiting out the grace period: {e}");
        }
    }
}
