//! Builds the Pingora server from a validated config and runs it.
//!
//! Services: the proxy (plain and TLS listeners on one `ProxyHttp`), the admin
//! listener, the health checker, the limiter janitor, and the signal handler
//! for SIGHUP (reload) and SIGUSR1 (reopen the access log).
//!
//! Shutdown: SIGQUIT hands the listening sockets to a new instance (`run -u`),
//! SIGTERM turns `/readyz` to 503, waits `drain_delay`, then stops accepting;
//! SIGINT stops at once. After a graceful stop begins, the process exits as
//! soon as no request has been in flight for [`DRAIN_QUIET`], and at the
//! latest when `grace_period` ends (Pingora alone would always wait all of it).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::background_service;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::config::Config;
use crate::connection::Guarded;
use crate::pool::health::HealthService;
use crate::proxy::Gatehouse;
use crate::rate_limit::LimiterJanitor;
use crate::state::State;

/// Upper bound on attempts Pingora makes for one request; the pool's
/// `retries` is the real limit, enforced in `fail_to_connect`.
const PINGORA_MAX_RETRIES: usize = 101;
/// Seconds given to runtimes to exit after the grace period.
const RUNTIME_SHUTDOWN_SECONDS: u64 = 5;

/// How long no request must be in flight before a draining process exits.
pub const DRAIN_QUIET: Duration = Duration::from_millis(300);
/// How often the drain watcher looks.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// Why the server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("access log: {0}")]
    AccessLog(#[source] std::io::Error),
}

/// Pingora's own settings from ours.
fn server_conf(config: &Config) -> ServerConf {
    let s = &config.server;
    ServerConf {
        threads: s.threads,
        grace_period_seconds: Some(s.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(RUNTIME_SHUTDOWN_SECONDS),
        pid_file: s.pid_file.to_string_lossy().into_owned(),
        upgrade_sock: s.upgrade_sock.to_string_lossy().into_owned(),
        max_retries: PINGORA_MAX_RETRIES,
        ..ServerConf::default()
    }
}

/// Builds every service; nothing is bound until [`Server::run`].
pub fn build(
    config: Config,
    config_path: &Path,
    upgrade: bool,
) -> Result<(Server, Arc<State>), StartError> {
    if let Some(https) = &config.https {
        crate::tls::ensure_default_cert(https)?;
    }
    crate::access_log::init(&config.server.access_log).map_err(StartError::AccessLog)?;
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(&config));
    let http = config.http.clone();
    let https = config.https.clone();
    let admin = config.admin;
    let state = State::new(config, config_path)?;
    crate::metrics::record_reload(true);

    // Per-connection limits (per-IP cap, request head deadline) wrap the proxy.
    let app = pingora::proxy::http_proxy(&server.configuration, Gatehouse { state: state.clone() });
    let mut proxy = Service::new("proxy".to_string(), Guarded::new(app, state.clone()));
    if let Some(http) = &http {
        for addr in &http.listen {
            proxy.add_tcp(&addr.to_string());
        }
    }
    if let (Some(https), Some(resolver)) = (&https, state.cert_resolver()) {
        for addr in &https.listen {
            let mut tls = TlsSettings::with_callbacks(Box::new(NoCallbacks))
                .map_err(|e| StartError::Tls(crate::tls::TlsError::Settings(e)))?;
            tls.set_cert_resolver(resolver.clone());
            if https.http2 {
                tls.enable_h2();
            }
            proxy.add_tls_with_settings(&addr.to_string(), None, tls);
        }
    }
    server.add_service(proxy);

    if let Some(addr) = admin {
        let mut admin_service = Service::new(
            "admin".to_string(),
            AdminApp {
                state: state.clone(),
            },
        );
        admin_service.add_tcp(&addr.to_string());
        server.add_service(admin_service);
    }
    server.add_service(background_service(
        "health checks",
        HealthService {
            state: state.clone(),
        },
    ));
    server.add_service(background_service(
        "rate limit janitor",
        LimiterJanitor {
            state: state.clone(),
        },
    ));
    server.add_service(background_service(
        "signals",
        SignalService {
            state: state.clone(),
        },
    ));
    Ok((server, state))
}

/// Binds and serves until a shutdown signal; returns when the server stopped.
pub fn run(mut server: Server, state: Arc<State>, drain_delay: Duration) {
    server.bootstrap();
    let pid_file = state.current().config.server.pid_file.clone();
    // Pingora only writes the pid file when it daemonizes; `gatehouse reload` needs it.
    if let Err(e) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
        log::warn!("cannot write the pid file {}: {e}", pid_file.display());
    }
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals { state, drain_delay }),
    });
}

/// Turns SIGQUIT, SIGTERM and SIGINT into Pingora's shutdown kinds.
struct Signals {
    state: Arc<State>,
    drain_delay: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
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
        tokio::select! {
            _ = quit.recv() => {
                log::info!("SIGQUIT: handing the listeners to the new instance, then draining");
                self.state.set_draining();
                ShutdownSignal::GracefulUpgrade
            }
            _ = term.recv() => {
                self.state.set_draining();
                if !self.drain_delay.is_zero() {
                    log::info!("SIGTERM: /readyz reports 503; still serving for {:?}", self.drain_delay);
                    tokio::time::sleep(self.drain_delay).await;
                }
                log::info!("SIGTERM: no longer accepting; draining in-flight requests");
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => ShutdownSignal::FastShutdown,
        }
    }
}

/// Exits the process once nothing has been in flight for [`DRAIN_QUIET`],
/// or returns when `grace` is over (Pingora then ends the process).
fn exit_when_drained(grace: Duration) {
    let start = Instant::now();
    let mut idle_since: Option<Instant> = None;
    while start.elapsed() < grace {
        if crate::proxy::requests_in_flight() == 0 {
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= DRAIN_QUIET {
                log::info!("drained: no request in flight; exiting");
                crate::access_log::flush(Duration::from_secs(1));
                std::process::exit(0);
            }
        } else {
            idle_since = None;
        }
        std::thread::sleep(DRAIN_POLL);
    }
}

/// TLS accept callbacks that do nothing (certificates come from the resolver).
struct NoCallbacks;

#[async_trait]
impl pingora::listeners::TlsAccept for NoCallbacks {}

/// SIGHUP reloads the config; SIGUSR1 reopens the access log; a starting
/// shutdown marks the process as draining for `/readyz`.
struct SignalService {
    state: Arc<State>,
}

#[async_trait]
impl BackgroundService for SignalService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let (mut hup, mut usr1) = match (
            signal(SignalKind::hangup()),
            signal(SignalKind::user_defined1()),
        ) {
            (Ok(h), Ok(u)) => (h, u),
            (Err(e), _) | (_, Err(e)) => {
                log::error!("cannot listen for SIGHUP/SIGUSR1, reloads are off: {e}");
                let _ = shutdown.changed().await;
                self.state.set_draining();
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    self.state.set_draining();
                    let grace = self.state.current().config.server.grace_period;
                    let spawned = std::thread::Builder::new()
                        .name("drain".into())
                        .spawn(move || exit_when_drained(grace));
                    if let Err(e) = spawned {
                        log::warn!("cannot watch the drain, waiting out the grace period: {e}");
                    }
                    return;
                }
                _ = hup.recv() => {
                    let state = self.state.clone();
                    // Reading files and certificates is blocking work.
                    let _ = tokio::task::spawn_blocking(move || state.reload()).await;
                }
                _ = usr1.recv() => crate::access_log::reopen(),
            }
        }
    }
}
