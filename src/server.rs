//! Builds the Pingora server from a validated config and runs it.
//!
//! Services: the proxy (plain and TLS listeners on one `ProxyHttp`), the admin
//! listener, the health checker, the limiter janitor, the ACME client, the config watcher
//! (`server.watch_config`), and the signal handler for SIGHUP (reload) and
//! SIGUSR1 (reopen the access log).
//!
//!
//! The process lifecycle (signals, drain, pid file, upgrade) is in
//! [`crate::lifecycle`]; per-connection limits in [`crate::connection`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig, DEFAULT_L4_WRITE_BUFFER_SIZE};
use pingora::prelude::background_service;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::background::{EjectionReporter, HealthService, LimiterJanitor, StatusSampler};
use crate::config::Config;
use crate::connection::Guarded;
use crate::lifecycle::{pid_file, signals};
use crate::proxy::Gatehouse;
use crate::reload::watch::ConfigWatcher;
use crate::state::State;

/// Upper bound on attempts Pingora makes for one request; the pool's
/// `retries` is the real limit, enforced in `fail_to_connect`.
const PINGORA_MAX_RETRIES: usize = 101;
/// Seconds given to runtimes to exit after the grace period.
const RUNTIME_SHUTDOWN_SECONDS: u64 = 5;

/// Read buffer of a client connection on a PROXY protocol listener (bytes):
/// the PROXY v1 line is read a byte at a time.
pub(crate) const PROXY_PROTOCOL_READ_BUFFER: usize = 4 * 1024;

/// The socket buffers of a client connection. Reads are not buffered (except
/// for the PROXY header): Pingora reads a request head into a 4 KiB buffer of
/// its own and rustls reads 4 KiB at a time, so a 4 KiB read buffer under
/// them was passed by, yet held by every idle connection. Writes keep
/// Pingora's one-segment buffer, which joins a response head and a small body
/// in one send.
fn client_buffers(proxy_protocol: bool) -> L4BufferSettings {
    let read = if proxy_protocol {
        PROXY_PROTOCOL_READ_BUFFER
    } else {
        0
    };
    L4BufferSettings::new(read, DEFAULT_L4_WRITE_BUFFER_SIZE)
}

/// Why the server could not be started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    #[error("TLS")]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot open the access log")]
    AccessLog(#[source] std::io::Error),
    #[error("cannot set up signal handling")]
    Signals(#[source] std::io::Error),
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
        // One single-threaded runtime per worker thread, as Nginx has one event
        // loop per worker: no cross-thread wake-ups on the request path.
        work_stealing: false,
        ..ServerConf::default()
    }
}

/// Builds every service; nothing is bound until [`Server::run`].
pub(crate) fn build(
    config: Config,
    config_path: &Path,
    upgrade: bool,
) -> Result<(Server, Arc<State>), StartError> {
    signals::hold().map_err(StartError::Signals)?;
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
    let grace = config.server.grace_period;
    let acme = config.acme.clone();
    let acme_alpn = acme
        .as_ref()
        .is_some_and(|a| a.challenge == crate::config::AcmeChallenge::TlsAlpn01);
    let pid_file = config.server.pid_file.clone();
    let state = State::new(config, config_path)?;
    crate::metrics::record_startup_load();

    // Per-connection limits (per-IP cap, request head deadline), the
    // open-connection count and the gentle drain wrap the proxy.
    let app = pingora::proxy::http_proxy(
        &server.configuration,
        Gatehouse {
            state: state.clone(),
        },
    );
    let guarded = Guarded::new(app, state.clone());
    let pre_tls = guarded.pre_tls();
    let mut proxy = Service::new("proxy".to_string(), guarded);
    proxy.endpoints().set_pre_tls_callback(pre_tls);
    if let Some(http) = &http {
        let buffers = client_buffers(http.proxy_protocol);
        for addr in &http.listen {
            proxy
                .endpoints()
                .add_listener(ListenerConfig::tcp(addr.to_string()).l4_buffer(buffers));
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
            if acme_alpn {
                // tls-alpn-01: the CA's validator offers only `acme-tls/1`;
                // the resolver answers it with the challenge certificate.
                if !https.http2 {
                    tls.set_alpn(pingora::protocols::ALPN::H1);
                }
                tls.add_alpn_protocol(crate::tls::acme::ACME_TLS_ALPN);
            }
            proxy.endpoints().add_listener(
                ListenerConfig::tcp(addr.to_string())
                    .tls(tls)
                    .l4_buffer(client_buffers(https.proxy_protocol)),
            );
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
        server.add_service(background_service("status sampler", StatusSampler));
    }
    server.add_service(background_service(
        "health checks",
        HealthService {
            state: state.clone(),
        },
    ));
    server.add_service(background_service(
        "ejection reporter",
        EjectionReporter {
            state: state.clone(),
        },
    ));
    server.add_service(background_service(
        "rate limit janitor",
        LimiterJanitor {
            state: state.clone(),
        },
    ));
    if let (Some(config), Some(acme_state)) = (acme, state.acme()) {
        crate::metrics::init_acme_renewals();
        server.add_service(background_service(
            "acme",
            crate::acme::AcmeService {
                config,
                state: acme_state,
            },
        ));
    }
    server.add_service(background_service(
        "config watcher",
        ConfigWatcher {
            state: state.clone(),
        },
    ));
    server.add_service(background_service(
        "signals",
        signals::SignalService {
            state: state.clone(),
            grace,
            pid_file,
        },
    ));
    Ok((server, state))
}

/// Binds (or, with `-u`, takes the sockets over) and serves until a shutdown
/// signal; returns when the server stopped.
pub(crate) fn run(mut server: Server, state: Arc<State>, drain_delay: Duration) {
    // With `-u` this waits for the old instance to send its sockets.
    server.bootstrap();
    let pid_file = state.current().config.server.pid_file.clone();
    let upgrade_sock = PathBuf::from(&server.configuration.upgrade_sock);
    server.run(RunArgs {
        shutdown_signal: Box::new(signals::Signals {
            drain_delay,
            upgrade_sock,
            pid_file: pid_file.clone(),
        }),
    });
    pid_file::remove_if_ours(&pid_file);
}

/// TLS accept callbacks that do nothing (certificates come from the resolver).
struct NoCallbacks;

#[async_trait]
impl pingora::listeners::TlsAccept for NoCallbacks {}
