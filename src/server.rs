//! Builds the Pingora server from a validated config and runs it.
//!
//! Services: the proxy (plain and TLS listeners on one `ProxyHttp`), the admin
//! listener, the health checker, the limiter janitor, and the signal handler
//! for SIGHUP (reload) and SIGUSR1 (reopen the access log). Pingora itself
//! handles SIGQUIT (upgrade), SIGTERM (graceful stop) and SIGINT (fast stop).

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::background_service;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::BackgroundService;
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::config::Config;
use crate::pool::health::HealthService;
use crate::proxy::Gatehouse;
use crate::rate_limit::LimiterJanitor;
use crate::state::State;

/// Upper bound on attempts Pingora makes for one request; the pool's
/// `retries` is the real limit, enforced in `fail_to_connect`.
const PINGORA_MAX_RETRIES: usize = 101;
/// Seconds given to runtimes to exit after the grace period.
const RUNTIME_SHUTDOWN_SECONDS: u64 = 5;

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

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Gatehouse {
            state: state.clone(),
        },
        "proxy",
    );
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
pub fn run(mut server: Server) {
    server.bootstrap();
    server.run(RunArgs::default());
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
