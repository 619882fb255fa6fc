//! The command line: `run`, `check`, `cert`, `reload`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Config file used when `-c` is not given.
pub const DEFAULT_CONFIG: &str = "conf/gatehouse.toml";

/// Gatehouse: an edge reverse proxy and load balancer.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Config file (for `gatehouse` with no subcommand, which is `run`).
    #[arg(short, long, global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run in the foreground.
    Run {
        /// Take the listening sockets over from a running instance (zero-downtime upgrade).
        #[arg(short, long)]
        upgrade: bool,
    },
    /// Validate a config without binding anything; prints `ok` or each problem.
    Check,
    /// Write a self-signed certificate and key for development.
    Cert {
        /// Names (DNS or IP) the certificate is for.
        #[arg(long = "host", required = true, num_args = 1..)]
        hosts: Vec<String>,
        /// Directory to write `server.crt` and `server.key` into.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
    },
    /// Ask the running instance (from the config's pid file) to reload its config.
    Reload,
}

impl Cli {
    pub fn config_path(&self) -> &Path {
        self.config.as_deref().unwrap_or(Path::new(DEFAULT_CONFIG))
    }
}

/// Runs the command and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = cli.config_path().to_path_buf();
    match cli.command {
        None => run(&path, false),
        Some(Command::Run { upgrade }) => run(&path, upgrade),
        Some(Command::Check) => check(&path),
        Some(Command::Cert { hosts, out }) => cert(&hosts, &out),
        Some(Command::Reload) => reload(&path),
    }
}

fn run(path: &Path, upgrade: bool) -> ExitCode {
    let config = match crate::config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("gatehouse: the config has errors; nothing was started");
            return ExitCode::FAILURE;
        }
    };
    if !upgrade {
        // Pingora retries a busy port for 30 s and then gives up; say it at once.
        let busy = busy_listen_addresses(&config);
        if !busy.is_empty() {
            for (key, addr, e) in &busy {
                eprintln!("{}: {key}: cannot listen on {addr}: {e}", path.display());
            }
            eprintln!("gatehouse: nothing was started (use `run -u` to take sockets over from a running instance)");
            return ExitCode::FAILURE;
        }
    }
    let drain_delay = config.server.drain_delay;
    match crate::server::build(config, path, upgrade) {
        Ok((server, state)) => {
            log::info!(
                "gatehouse {} starting with {}",
                env!("CARGO_PKG_VERSION"),
                path.display()
            );
            crate::server::run(server, state, drain_delay);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gatehouse: {}", crate::logging::chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// Listen addresses of `config` that cannot be bound now, with their key.
fn busy_listen_addresses(
    config: &crate::config::Config,
) -> Vec<(&'static str, std::net::SocketAddr, std::io::Error)> {
    let mut all: Vec<(&'static str, std::net::SocketAddr)> = Vec::new();
    if let Some(http) = &config.http {
        all.extend(http.listen.iter().map(|a| ("http.listen", *a)));
    }
    if let Some(https) = &config.https {
        all.extend(https.listen.iter().map(|a| ("https.listen", *a)));
    }
    if let Some(admin) = config.admin {
        all.push(("admin.listen", admin));
    }
    all.into_iter()
        .filter_map(|(key, addr)| {
            std::net::TcpListener::bind(addr)
                .err()
                .map(|e| (key, addr, e))
        })
        .collect()
}

fn check(path: &Path) -> ExitCode {
    match crate::config::load(path) {
        Ok(config) => {
            // Certificates given as files must load too (generated ones are made at run).
            if let Some(https) = &config.https {
                let generated_later =
                    https.self_signed && !(https.cert.is_file() && https.key.is_file());
                if !generated_later {
                    if let Err(e) = crate::tls::CertSet::load(https) {
                        println!("{}: https: {}", path.display(), crate::logging::chain(&e));
                        return ExitCode::FAILURE;
                    }
                }
            }
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            println!("{errors}");
            ExitCode::FAILURE
        }
    }
}

fn cert(hosts: &[String], out: &Path) -> ExitCode {
    let cert_path = out.join("server.crt");
    let key_path = out.join("server.key");
    let result = crate::tls::generate_self_signed(hosts)
        .and_then(|g| crate::tls::write_cert_pair(&g, &cert_path, &key_path));
    match result {
        Ok(()) => {
            println!("wrote {} and {}", cert_path.display(), key_path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gatehouse cert: {}", crate::logging::chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn reload(path: &Path) -> ExitCode {
    let config = match crate::config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "gatehouse reload: the config has errors; the running instance was not signalled"
            );
            return ExitCode::FAILURE;
        }
    };
    let pid_file = &config.server.pid_file;
    let pid = match std::fs::read_to_string(pid_file).map(|s| s.trim().parse::<i32>()) {
        Ok(Ok(pid)) if pid > 0 => pid,
        Ok(_) => {
            eprintln!(
                "gatehouse reload: {} does not hold a pid",
                pid_file.display()
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("gatehouse reload: cannot read {}: {e}", pid_file.display());
            return ExitCode::FAILURE;
        }
    };
    match nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    ) {
        Ok(()) => {
            println!("sent SIGHUP to {pid}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gatehouse reload: cannot signal {pid}: {e}");
            ExitCode::FAILURE
        }
    }
}
