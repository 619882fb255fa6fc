//! A real `redis-server` (Debian's package, installed by `.ci/deps.sh --test`)
//! on a free loopback port, without persistence, in a temp dir; killed on drop.
//! Ready means it answered `PING`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::free_port;

/// Time allowed for the server to answer `PING`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct RedisServer {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers.
    pub async fn start() -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            dir: tempfile::Builder::new()
                .prefix("gatehouse-redis-")
                .tempdir()
                .expect("create temp dir"),
            child: None,
        };
        server.restart().await;
        server
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same port (after [`RedisServer::kill`]),
    /// empty, and waits until it answers.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("create log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): install it with `bash .ci/deps.sh --test` \
                     (Debian package redis-server)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        while !self.ping().await {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("redis-server exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING within {READY_TIMEOUT:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal by name (`STOP`, `CONT`) with kill(1).
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args(["-s", name, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Whether the server answers `PING` with `PONG` within 500 ms.
    pub async fn ping(&self) -> bool {
        matches!(self.command(&["PING"]).await, Some(reply) if reply.starts_with("+PONG"))
    }

    /// Sends one command (RESP array of bulk strings) and returns the raw
    /// reply as text; `None` on a connection error or after 500 ms.
    pub async fn command(&self, args: &[&str]) -> Option<String> {
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        let exchange = async {
            let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
            stream.write_all(req.as_bytes()).await.ok()?;
            let mut buf = vec![0u8; 64 * 1024];
            let n = stream.read(&mut buf).await.ok()?;
            (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
        };
        tokio::time::timeout(Duration::from_millis(500), exchange)
            .await
            .ok()
            .flatten()
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
