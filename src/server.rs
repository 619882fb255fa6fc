//! Builds the Pingora server from a validated config and runs it.
//!
//! Services: the proxy (plain and TLS listeners on one `ProxyHttp`), the admin
//! listener, the health checker, the limiter janitor, the config watcher
//! (`server.watch_config`), and the signal handler for SIGHUP (reload) and
//! SIGUSR1 (reopen the access log).
//!
//! Shutdown:
//! - SIGTERM turns `/readyz` to 503 and keeps serving for `drain_delay` (each
//!   HTTP/1.1 answer closing its connection, so clients move on), then stops
//!   accepting and drains.
//! - SIGQUIT hands the listening sockets to a new instance (`run -u`), which
//!   must be waiting on `upgrade_sock` (within [`UPGRADE_SOCK_WAIT`], else the
//!   SIGQUIT is refused and this instance keeps serving). Pingora keeps both
//!   instances accepting for 5 s, then this one stops accepting and drains.
//! - SIGINT exits at once (also during a drain), without Pingora's runtime
//!   teardown (see [`exit_now`]).
//!
//! A drain: HTTP/2 connections get GOAWAY; an HTTP/1.1 keep-alive connection
//! answers its next request with `Connection: close` (idle ones are closed
//! after [`IDLE_LINGER`]), so a client that keeps sending never has a request
//! cut off. The process exits as soon as no request has been in flight for
//! [`DRAIN_QUIET`], and at the latest when `grace_period` ends (Pingora alone
//! would always wait all of it).
//!
//! The pid file is written once the signal handlers are in place and removed
//! on exit only while it still holds this process's pid: after an upgrade it
//! holds the new instance's.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig, DEFAULT_L4_WRITE_BUFFER_SIZE};
use pingora::prelude::background_service;
use pingora::protocols::Stream;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;
use pingora::services::listening::Service;
use tokio::signal::unix::{signal, SignalKind};

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

/// Read buffer of a client connection (bytes).
pub const CLIENT_READ_BUFFER: usize = 4 * 1024;
/// How long no request must be in flight before a draining process exits.
pub const DRAIN_QUIET: Duration = Duration::from_millis(300);
/// How long a fast exit waits for the access log to be written.
const FAST_EXIT_FLUSH: Duration = Duration::from_millis(200);
/// How often the drain watcher looks.
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// After the listeners close, how long an idle HTTP/1.1 keep-alive connection
/// stays open so that a request already on its way is answered (with
/// `Connection: close`) rather than cut off.
pub const IDLE_LINGER: Duration = Duration::from_secs(1);
/// How long SIGQUIT waits for a new instance (`run -u`) to open `upgrade_sock`.
pub const UPGRADE_SOCK_WAIT: Duration = Duration::from_secs(5);
/// How often `watch_config` looks at the config and certificate files.
pub const WATCH_POLL: Duration = Duration::from_millis(100);
/// How long watched files must stay unchanged before the reload starts, so a
/// file written in several steps is read once it is complete.
pub const WATCH_DEBOUNCE: Duration = Duration::from_millis(200);

/// Client connections open on the proxy listeners, process-wide.
static OPEN_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

/// Why the server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("access log: {0}")]
    AccessLog(#[source] std::io::Error),
    #[error("cannot set up signal handling: {0}")]
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
pub fn build(
    config: Config,
    config_path: &Path,
    upgrade: bool,
) -> Result<(Server, Arc<State>), StartError> {
    hold_signals().map_err(StartError::Signals)?;
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
    let pid_file = config.server.pid_file.clone();
    let state = State::new(config, config_path)?;
    crate::metrics::record_startup_load();

    // Per-connection limits (per-IP cap, request head deadline) wrap the proxy;
    // the drain behaviour wraps both.
    let app = pingora::proxy::http_proxy(
        &server.configuration,
        Gatehouse {
            state: state.clone(),
        },
    );
    let guarded = Guarded::new(app, state.clone());
    let pre_tls = guarded.pre_tls();
    let mut proxy = Service::new("proxy".to_string(), Lingering::new(guarded));
    proxy.endpoints().set_pre_tls_callback(pre_tls);
    // Pingora's default 64 KiB read buffer per client connection costs ~100 KiB
    // per idle keep-alive connection; heads fit a small one, and large body
    // reads bypass it.
    let buffers = L4BufferSettings::new(CLIENT_READ_BUFFER, DEFAULT_L4_WRITE_BUFFER_SIZE);
    if let Some(http) = &http {
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
            proxy.endpoints().add_listener(
                ListenerConfig::tcp(addr.to_string())
                    .tls(tls)
                    .l4_buffer(buffers),
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
        "config watcher",
        ConfigWatcher {
            state: state.clone(),
        },
    ));
    server.add_service(background_service(
        "signals",
        SignalService {
            state: state.clone(),
            grace,
            pid_file,
        },
    ));
    Ok((server, state))
}

/// Binds (or, with `-u`, takes the sockets over) and serves until a shutdown
/// signal; returns when the server stopped.
pub fn run(mut server: Server, state: Arc<State>, drain_delay: Duration) {
    // With `-u` this waits for the old instance to send its sockets.
    server.bootstrap();
    let pid_file = state.current().config.server.pid_file.clone();
    let upgrade_sock = PathBuf::from(&server.configuration.upgrade_sock);
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals {
            state,
            drain_delay,
            upgrade_sock,
            pid_file: pid_file.clone(),
        }),
    });
    remove_pid_file_if_ours(&pid_file);
}

/// Installs the process-wide handlers for the signals Gatehouse uses, so that
/// one arriving before the services listen for it (a SIGHUP from `gatehouse
/// reload` or systemd right after start) is ignored instead of killing the
/// process by its default action. tokio keeps a handler for the life of the
/// process once a signal is first listened for.
fn hold_signals() -> std::io::Result<()> {
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

/// Writes our pid, atomically (a reader never sees a half-written file).
fn write_pid_file(path: &Path) -> std::io::Result<()> {
    let pid = std::process::id();
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{pid}.tmp"));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{pid}\n"))?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Removes the pid file if it still names this process: after an upgrade it
/// names the new instance, which keeps it.
fn remove_pid_file_if_ours(path: &Path) {
    let ours = std::fs::read_to_string(path)
        .is_ok_and(|s| s.trim().parse::<u32>() == Ok(std::process::id()));
    if ours {
        if let Err(e) = std::fs::remove_file(path) {
            log::warn!("cannot remove the pid file {}: {e}", path.display());
        }
    }
}

/// Waits up to `within` for a new instance to listen on the upgrade socket.
async fn upgrade_sock_ready(path: &Path, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if unix_socket_listening(path) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// Whether some process listens on the unix socket bound at `path`. A file
/// left behind by a `run -u` that died is not enough: Pingora would fail to
/// send the sockets and shut down anyway. Reads `/proc/net/unix` (connecting
/// to find out would use up the one connection the new instance accepts);
/// without it, the file existing has to do.
fn unix_socket_listening(path: &Path) -> bool {
    /// `__SO_ACCEPTCON` in the flags column: the socket listens.
    const ACCEPTING: u32 = 0x0001_0000;
    let (Ok(table), Some(name)) = (std::fs::read_to_string("/proc/net/unix"), path.to_str()) else {
        return path.exists();
    };
    let suffix = format!(" {name}");
    // Num RefCount Protocol Flags Type St Inode Path (the path may hold spaces)
    table.lines().skip(1).any(|line| {
        line.ends_with(&suffix)
            && line
                .split_whitespace()
                .nth(3)
                .and_then(|flags| u32::from_str_radix(flags, 16).ok())
                .is_some_and(|flags| flags & ACCEPTING != 0)
    })
}

/// Turns SIGQUIT, SIGTERM and SIGINT into Pingora's shutdown kinds.
struct Signals {
    state: Arc<State>,
    /// From the start-up config, as Pingora's grace period (see `needs_upgrade`).
    drain_delay: Duration,
    /// Where Pingora sends the sockets on SIGQUIT.
    upgrade_sock: PathBuf,
    pid_file: PathBuf,
}

/// Exits the process when `signal` arrives.
async fn exit_on(mut signal: tokio::signal::unix::Signal, why: &'static str, pid_file: PathBuf) {
    if signal.recv().await.is_some() {
        exit_now(why, &pid_file);
    }
}

/// Ends the process at once (SIGINT, or a grace period that ran out): the
/// access log is flushed (briefly) and the pid file removed, then the process
/// exits without waiting for requests in flight.
///
/// Pingora's own fast shutdown drops its runtimes one by one; an accept loop
/// whose listener belonged to a runtime already gone then fails on every turn
/// without yielding, so its runtime never stops, the socket stays open and
/// the loop logs millions of lines (issue 10). Exiting the process here is
/// what Nginx does on SIGINT, and it cannot hang.
fn exit_now(why: &str, pid_file: &Path) -> ! {
    log::info!("{why}: exiting now");
    crate::access_log::flush(FAST_EXIT_FLUSH);
    remove_pid_file_if_ours(pid_file);
    std::process::exit(0)
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
                    if upgrade_sock_ready(sock, UPGRADE_SOCK_WAIT).await {
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
                    self.state.set_draining();
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

/// Exits the process once nothing has been in flight for [`DRAIN_QUIET`],
/// or returns when `grace` is over (Pingora then ends the process).
fn exit_when_drained(grace: Duration, pid_file: &Path) {
    let start = Instant::now();
    let mut idle_since: Option<Instant> = None;
    while start.elapsed() < grace {
        if crate::proxy::requests_in_flight() == 0 {
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= DRAIN_QUIET {
                log::info!(
                    "drained in {:?}: no request in flight ({} idle connections closed); exiting",
                    start.elapsed(),
                    OPEN_CONNECTIONS.load(Ordering::Relaxed)
                );
                crate::access_log::flush(Duration::from_secs(1));
                remove_pid_file_if_ours(pid_file);
                std::process::exit(0);
            }
        } else {
            idle_since = None;
        }
        std::thread::sleep(DRAIN_POLL);
    }
    log::warn!(
        "grace period over with {} requests in flight",
        crate::proxy::requests_in_flight()
    );
    exit_now("grace period over", pid_file);
}

/// TLS accept callbacks that do nothing (certificates come from the resolver).
struct NoCallbacks;

#[async_trait]
impl pingora::listeners::TlsAccept for NoCallbacks {}

/// The proxy application, drained gently.
///
/// Pingora closes idle HTTP/1.1 keep-alive connections the moment the
/// listeners close (the app's `cleanup`). A client may have sent its next
/// request on such a connection at that very moment; it would see the
/// connection reset and fail the request. Delaying `cleanup` by
/// [`IDLE_LINGER`] lets those requests in: Pingora answers every request read
/// after shutdown began with `Connection: close`, so each busy connection ends
/// cleanly after one more answer. It also counts open connections.
pub struct Lingering<A> {
    app: Arc<A>,
}

impl<A> Lingering<A> {
    pub fn new(app: A) -> Self {
        Lingering { app: Arc::new(app) }
    }
}

/// Counts one open client connection until dropped.
struct OpenConnection;

impl OpenConnection {
    fn new() -> Self {
        OPEN_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        OPEN_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Lingering<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _open = OpenConnection::new();
        self.app.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        let start = Instant::now();
        while OPEN_CONNECTIONS.load(Ordering::Relaxed) > 0 && start.elapsed() < IDLE_LINGER {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        self.app.cleanup().await;
    }
}

/// SIGHUP reloads the config; SIGUSR1 reopens the access log; a starting
/// shutdown marks the process as draining for `/readyz` and starts the drain
/// watcher. Writes the pid file once SIGHUP is handled.
struct SignalService {
    state: Arc<State>,
    /// The grace period Pingora was started with (a reload cannot change it).
    grace: Duration,
    pid_file: PathBuf,
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
                self.state.set_draining();
                return;
            }
        };
        // `gatehouse reload` reads it; Pingora only writes it when it daemonizes.
        if let Err(e) = write_pid_file(&self.pid_file) {
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
        self.state.set_draining();
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

/// `server.watch_config`: reloads when the config file or a certificate or key
/// it names changes (content, not just mtime), once the files have been
/// stable for [`WATCH_DEBOUNCE`]. Polling works the same for files edited in
/// place, replaced by rename, or swapped behind a symlink (Kubernetes
/// ConfigMaps). A change a reload already read (SIGHUP) is not reloaded again.
struct ConfigWatcher {
    state: Arc<State>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_listening_upgrade_socket_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upgrade.sock");
        assert!(!unix_socket_listening(&path));
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(unix_socket_listening(&path));
        drop(listener);
        assert!(path.exists(), "the socket file stays behind");
        assert!(!unix_socket_listening(&path));
    }

    #[test]
    fn pid_file_is_removed_only_while_it_is_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gatehouse.pid");
        write_pid_file(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        std::fs::write(&path, "999999999\n").unwrap();
        remove_pid_file_if_ours(&path);
        assert!(path.exists(), "a successor's pid file stays");
        write_pid_file(&path).unwrap();
        remove_pid_file_if_ours(&path);
        assert!(!path.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no temp file left"
        );
    }
}
