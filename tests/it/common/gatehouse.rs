//! The real `gatehouse` binary as a child process in a fresh temp dir.
//!
//! The config text may use placeholders, replaced before the file is written:
//! `{http_port}`, `{https_port}`, `{admin_port}` (free ports picked by the
//! harness), `{dir}` (the temp dir, which is also the working directory, so
//! relative paths in the config land in it) and `{NAME}` for each
//! [`GatehouseBuilder::var`] / [`GatehouseBuilder::backend`].
//!
//! A `[server]` section (1 thread, 1 s grace period, access log off, pid file
//! and upgrade socket in the temp dir) is prepended when the config has none.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::backend::Backend;
use super::free_port;

/// Time allowed for the listeners to come up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Timeout of every request made by the clients handed out here.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `[server]` section used when the config has none.
pub const DEFAULT_SERVER: &str = r#"
[server]
threads = 1
grace_period = "1s"
access_log = "off"
pid_file = "{dir}/gatehouse.pid"
upgrade_sock = "{dir}/upgrade.sock"
"#;

/// The path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_gatehouse")
}

/// Builder for [`Gatehouse`]; the temp dir exists as soon as the builder does.
pub struct GatehouseBuilder {
    dir: TempDir,
    config: String,
    vars: Vec<(String, String)>,
    args: Vec<String>,
    cert_path: String,
    env: Vec<(String, String)>,
    ports: (Option<u16>, Option<u16>),
}

impl GatehouseBuilder {
    /// Uses these ports for `{http_port}` and `{https_port}` instead of fresh
    /// ones (when another server must know them first, e.g. an ACME CA).
    pub fn ports(mut self, http: u16, https: u16) -> Self {
        self.ports = (Some(http), Some(https));
        self
    }

    /// The temp dir (the future working directory).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Appends more config text.
    pub fn append(mut self, text: &str) -> Self {
        self.config.push('\n');
        self.config.push_str(text);
        self
    }

    /// Writes a file at `rel` (relative to the temp dir), creating parent dirs.
    pub fn file(self, rel: &str, contents: impl AsRef<[u8]>) -> Self {
        let path = self.dir.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent dir");
        }
        std::fs::write(&path, contents).expect("write file");
        self
    }

    /// Creates a symlink at `link` (relative to the temp dir) pointing to
    /// `target` (taken as is: relative to the link's directory, or absolute).
    pub fn symlink(self, target: impl AsRef<Path>, link: &str) -> Self {
        let path = self.dir.path().join(link);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent dir");
        }
        std::os::unix::fs::symlink(target, path).expect("create symlink");
        self
    }

    /// Replaces `{name}` with `value` in the config.
    pub fn var(mut self, name: &str, value: impl Into<String>) -> Self {
        self.vars.push((name.to_string(), value.into()));
        self
    }

    /// Replaces `{name}` with the backend's `127.0.0.1:PORT`.
    pub fn backend(self, name: &str, backend: &Backend) -> Self {
        let addr = backend.addr_str();
        self.var(name, addr)
    }

    /// Where the HTTPS certificate the clients trust is, relative to the temp
    /// dir (default `certs/server.crt`).
    pub fn cert_path(mut self, rel: &str) -> Self {
        self.cert_path = rel.to_string();
        self
    }

    /// Writes the config, starts `gatehouse run -c gatehouse.toml` and waits
    /// until every listener whose port placeholder the config uses accepts TCP
    /// connections. Panics with the child's output if it exits or is not ready
    /// within [`READY_TIMEOUT`].
    pub async fn start(self) -> Gatehouse {
        let http_port = self.ports.0.unwrap_or_else(free_port);
        let https_port = self.ports.1.unwrap_or_else(free_port);
        let admin_port = free_port();
        let mut text = self.config.clone();
        if !text.lines().any(|l| l.trim() == "[server]") {
            text = format!("{DEFAULT_SERVER}\n{text}");
        }
        let mut wait_on = Vec::new();
        for (placeholder, port) in [
            ("{http_port}", http_port),
            ("{https_port}", https_port),
            ("{admin_port}", admin_port),
        ] {
            if text.contains(placeholder) {
                wait_on.push(port);
            }
        }
        let dir = self.dir.path().to_path_buf();
        text = text
            .replace("{http_port}", &http_port.to_string())
            .replace("{https_port}", &https_port.to_string())
            .replace("{admin_port}", &admin_port.to_string())
            .replace("{dir}", &dir.display().to_string());
        for (name, value) in &self.vars {
            text = text.replace(&format!("{{{name}}}"), value);
        }
        let config_path = dir.join("gatehouse.toml");
        std::fs::write(&config_path, &text).expect("write config");

        let stdout = std::fs::File::create(dir.join("stdout.log")).expect("create stdout.log");
        let stderr = std::fs::File::create(dir.join("stderr.log")).expect("create stderr.log");
        let mut cmd = Command::new(binary());
        cmd.arg("run")
            .arg("-c")
            .arg(&config_path)
            .args(&self.args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn gatehouse");
        let gh = Gatehouse {
            dir: self.dir,
            child: Mutex::new(child),
            config_path,
            config_text: text,
            cert_path: self.cert_path,
            http_port,
            https_port,
            admin_port,
        };
        gh.wait_ready(&wait_on).await;
        gh
    }
}

/// A running Gatehouse; killed (SIGKILL) on drop.
pub struct Gatehouse {
    dir: TempDir,
    child: Mutex<Child>,
    config_path: PathBuf,
    config_text: String,
    cert_path: String,
    pub http_port: u16,
    pub https_port: u16,
    pub admin_port: u16,
}

impl Gatehouse {
    /// A builder for the config `config` (placeholders allowed).
    pub fn builder(config: &str) -> GatehouseBuilder {
        GatehouseBuilder {
            dir: tempfile::Builder::new()
                .prefix("gatehouse-test-")
                .tempdir()
                .expect("create temp dir"),
            config: config.to_string(),
            vars: Vec::new(),
            args: Vec::new(),
            cert_path: "certs/server.crt".to_string(),
            env: Vec::new(),
            ports: (None, None),
        }
    }

    async fn wait_ready(&self, ports: &[u16]) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut pending: Vec<u16> = ports.to_vec();
        while !pending.is_empty() {
            if let Some(status) = self.try_wait() {
                panic!(
                    "gatehouse exited with {status} before it was ready\n--- config ---\n{}\n--- stderr ---\n{}\n--- stdout ---\n{}",
                    self.config_text,
                    self.stderr(),
                    self.stdout()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "gatehouse not listening on {pending:?} after {READY_TIMEOUT:?}\n--- stderr ---\n{}",
                    self.stderr()
                );
            }
            let mut still = Vec::new();
            for port in pending {
                let ok = tokio::time::timeout(
                    Duration::from_millis(500),
                    tokio::net::TcpStream::connect(("127.0.0.1", port)),
                )
                .await
                .is_ok_and(|r| r.is_ok());
                if !ok {
                    still.push(port);
                }
            }
            pending = still;
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// The temp dir (the child's working directory).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The config as written (placeholders replaced).
    pub fn config_text(&self) -> &str {
        &self.config_text
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap_or_else(|e| e.into_inner()).id()
    }

    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http_port))
    }

    pub fn https_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.https_port))
    }

    /// `http://127.0.0.1:HTTP_PORT{path}`
    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    /// `https://localhost:HTTPS_PORT{path}`; use with [`Gatehouse::client`],
    /// which resolves `localhost` to 127.0.0.1.
    pub fn https_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.https_port)
    }

    /// `http://127.0.0.1:ADMIN_PORT{path}`
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// Everything the child wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    /// Everything the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The HTTPS certificate (PEM) the clients trust.
    pub fn cert_pem(&self) -> Vec<u8> {
        let path = self.dir.path().join(&self.cert_path);
        std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// The builder behind [`Gatehouse::client`] (trusts the server
    /// certificate, resolves `localhost`, follows no redirects), for tests that
    /// need more, e.g. a second root certificate.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let cert =
            reqwest::Certificate::from_pem(&self.cert_pem()).expect("parse server certificate");
        reqwest::Client::builder()
            .add_root_certificate(cert)
            .tls_built_in_root_certs(false)
            .resolve("localhost", self.https_addr())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(CLIENT_TIMEOUT)
            .no_proxy()
    }

    /// A client for both listeners that trusts the server certificate, offers
    /// h2 and http/1.1 by ALPN, and follows no redirects.
    pub fn client(&self) -> reqwest::Client {
        self.client_builder().build().expect("build client")
    }

    /// Like [`Gatehouse::client`], offering only http/1.1.
    pub fn client_h1(&self) -> reqwest::Client {
        self.client_builder()
            .http1_only()
            .build()
            .expect("build client")
    }

    /// Like [`Gatehouse::client`], offering only h2 by ALPN (fails against a
    /// server that does not speak h2).
    pub fn client_h2(&self) -> reqwest::Client {
        self.client_builder()
            .http2_prior_knowledge()
            .build()
            .expect("build client")
    }

    /// Sends a signal by name (`HUP`, `TERM`, `QUIT`, `INT`...) with kill(1).
    pub fn signal(&self, name: &str) {
        send_signal(self.pid(), name);
    }

    /// The exit status, if the child has exited.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        child_exit(&self.child)
    }

    /// Waits (polling) up to `within` for the child to exit.
    pub async fn wait_exit(&self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls the stderr and stdout logs up to `within` for `needle`.
    pub async fn wait_for_output(&self, needle: &str, within: Duration) -> bool {
        super::eventually(within, || async {
            self.stderr().contains(needle) || self.stdout().contains(needle)
        })
        .await
    }
}

/// Where the harness's default `[server]` section puts the pid file.
pub const PID_FILE: &str = "gatehouse.pid";

/// Where the harness's default `[server]` section puts the upgrade socket.
pub const UPGRADE_SOCK: &str = "upgrade.sock";

impl Gatehouse {
    /// The pid written in `{dir}/gatehouse.pid` (the default `pid_file`), if any.
    pub fn pid_file_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join(PID_FILE))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Waits up to `within` for the pid file to name `pid`. Gatehouse writes it
    /// once it handles SIGHUP, so wait for it before sending one.
    pub async fn wait_pid_file(&self, pid: u32, within: Duration) -> bool {
        super::eventually(within, || async { self.pid_file_pid() == Some(pid) }).await
    }

    /// Runs `gatehouse ARGS` to completion in the temp dir (e.g. `reload -c gatehouse.toml`).
    pub fn run_cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(binary())
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run gatehouse")
    }

    /// Replaces the config file with `text` (placeholders of the ports and
    /// `{dir}` replaced; the `[server]` section is not added), atomically.
    pub fn write_config(&self, text: &str) {
        let text = text
            .replace("{http_port}", &self.http_port.to_string())
            .replace("{https_port}", &self.https_port.to_string())
            .replace("{admin_port}", &self.admin_port.to_string())
            .replace("{dir}", &self.dir.path().display().to_string());
        let tmp = self.dir.path().join("gatehouse.toml.tmp");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, &self.config_path).expect("replace config");
    }

    /// The value of the first sample of `name` on the admin `/metrics` whose
    /// labels include `labels` (counters, gauges, untyped); `None` when there is
    /// none or the scrape fails.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let text = reqwest::Client::builder()
            .no_proxy()
            .timeout(CLIENT_TIMEOUT)
            .build()
            .ok()?
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).ok()?;
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .find_map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => Some(v),
                _ => None,
            })
    }

    /// Waits up to `within` for [`Gatehouse::metric`] to reach at least `value`.
    pub async fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        value: f64,
        within: Duration,
    ) -> bool {
        super::eventually(within, || async {
            self.metric(name, labels).await.is_some_and(|v| v >= value)
        })
        .await
    }

    /// Starts a second instance on the same config and dir with `run -u`: it
    /// takes the sockets over once this one gets SIGQUIT. Does not wait for it.
    pub fn start_successor(&self) -> Successor {
        let dir = self.dir.path().to_path_buf();
        let stdout = std::fs::File::create(dir.join("successor.stdout.log"))
            .expect("create successor.stdout.log");
        let stderr = std::fs::File::create(dir.join("successor.stderr.log"))
            .expect("create successor.stderr.log");
        let mut cmd = Command::new(binary());
        cmd.arg("run")
            .arg("-c")
            .arg(&self.config_path)
            .arg("-u")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let child = cmd.spawn().expect("spawn gatehouse -u");
        Successor {
            child: Mutex::new(child),
            dir,
        }
    }
}

/// A second Gatehouse started with `run -u` by [`Gatehouse::start_successor`];
/// killed (SIGKILL) on drop. Drop it before the [`Gatehouse`] whose dir it uses.
pub struct Successor {
    child: Mutex<Child>,
    dir: PathBuf,
}

impl Successor {
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap_or_else(|e| e.into_inner()).id()
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        child_exit(&self.child)
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("successor.stderr.log")).unwrap_or_default()
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
        if std::thread::panicking() {
            let err = self.stderr();
            let tail = &err[err.len().saturating_sub(4000)..];
            eprintln!("--- successor stderr (tail) ---\n{tail}");
        }
    }
}

impl Drop for Gatehouse {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
        if std::thread::panicking() {
            let err = self.stderr();
            let tail = &err[err.len().saturating_sub(4000)..];
            eprintln!("--- gatehouse stderr (tail) ---\n{tail}");
        }
        if std::env::var_os("GATEHOUSE_TEST_KEEP").is_some() {
            let path = self.dir.path().to_path_buf();
            eprintln!("keeping {}", path.display());
            std::mem::forget(std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().expect("create temp dir"),
            ));
        }
    }
}

/// Sends a signal by name (`HUP`, `TERM`, `QUIT`, `INT`...) to `pid` with kill(1).
fn send_signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg("-s")
        .arg(name)
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -s {name} failed");
}

/// The child's exit status, if it has exited.
fn child_exit(child: &std::sync::Mutex<std::process::Child>) -> Option<ExitStatus> {
    child
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .try_wait()
        .ok()
        .flatten()
}
