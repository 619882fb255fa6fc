//! Active health checks: `GET path` to each server every `interval`.
//!
//! A server leaves rotation after `unhealthy_threshold` consecutive failures and
//! comes back after `healthy_threshold` consecutive passes; a pass is a 2xx
//! answer within `timeout`. `crate::background::HealthService` runs the
//! checks of the current config and restarts them when a reload swaps it;
//! because server state is carried across reloads ([`super::Pool::new`]), a
//! restart keeps every server's health. [`first_checks`] runs the first check
//! of the servers a reload adds before that reload takes effect.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::{Backend, Pool};
use crate::config::HealthCheck;

/// Largest health check response head read (bytes).
const MAX_HEAD: usize = 16 * 1024;

/// Why a check failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("timed out")]
    Timeout,
    #[error("connect failed")]
    Connect(#[source] std::io::Error),
    #[error("i/o error")]
    Io(#[source] std::io::Error),
    #[error("not an HTTP response")]
    BadResponse,
    #[error("status {0}")]
    Status(u16),
}

/// One check of one server.
pub async fn check(addr: SocketAddr, hc: &HealthCheck) -> Result<(), CheckError> {
    match tokio::time::timeout(hc.timeout, exchange(addr, &hc.path)).await {
        Err(_) => Err(CheckError::Timeout),
        Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
        Ok(Ok(status)) => Err(CheckError::Status(status)),
        Ok(Err(e)) => Err(e),
    }
}

async fn exchange(addr: SocketAddr, path: &str) -> Result<u16, CheckError> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(CheckError::Connect)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: gatehouse-health-check\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(CheckError::Io)?;
    let mut buf = Vec::with_capacity(512);
    loop {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.map_err(CheckError::Io)?;
        if n == 0 {
            return Err(CheckError::BadResponse);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => return resp.code.ok_or(CheckError::BadResponse),
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            _ => return Err(CheckError::BadResponse),
        }
    }
}

/// Records a check result; flips the server after enough consecutive results.
/// Returns the new health when it changed.
pub fn record(
    backend: &Backend,
    hc: &HealthCheck,
    result: &Result<(), CheckError>,
) -> Option<bool> {
    if result.is_ok() {
        backend.fails.store(0, Ordering::Relaxed);
        let passes = backend
            .passes
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        // A server never seen healthy (added by a reload) joins on its first pass.
        let needed = if backend.pending.load(Ordering::Relaxed) {
            1
        } else {
            hc.healthy_threshold
        };
        if passes >= needed {
            backend.pending.store(false, Ordering::Relaxed);
            return backend.set_healthy(true).then_some(true);
        }
        None
    } else {
        backend.passes.store(0, Ordering::Relaxed);
        let fails = backend
            .fails
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        (fails >= hc.unhealthy_threshold && backend.set_healthy(false)).then_some(false)
    }
}

/// Runs the first check of every server of `pools` that has never been
/// checked (those a reload adds), all at once, and records the results; takes
/// at most one check `timeout`. Called by a reload before the new config takes
/// effect, so a pool whose servers were all replaced (a blue/green swap) goes
/// on serving from the new servers at once instead of answering 503 until the
/// checker's next round; new servers that fail stay out, so a swap to servers
/// that are down gives 503 at once, not hangs. Blocking: call it off the
/// request path (reloads run on a blocking thread).
pub fn first_checks<'a>(pools: impl Iterator<Item = &'a Arc<Pool>>) {
    let pending: Vec<(Arc<Backend>, HealthCheck)> = pools
        .filter_map(|pool| Some((pool, pool.config.health.clone()?)))
        .flat_map(|(pool, hc)| {
            pool.backends
                .iter()
                .filter(|b| b.pending.load(Ordering::Relaxed))
                .map(move |b| (b.clone(), hc.clone()))
        })
        .collect();
    if pending.is_empty() {
        return;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::warn!("reload: cannot check new servers first, they wait for the checker: {e}");
            return;
        }
    };
    runtime.block_on(async {
        let mut checks = JoinSet::new();
        for (backend, hc) in pending {
            checks.spawn(async move {
                let result = check(backend.addr, &hc).await;
                if let Err(e) = &result {
                    log::info!(
                        "reload: new server {} failed its first check: {e}",
                        backend.label
                    );
                }
                record(&backend, &hc, &result);
            });
        }
        while checks.join_next().await.is_some() {}
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn hc(up: u32, down: u32) -> HealthCheck {
        HealthCheck {
            path: "/".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(200),
            healthy_threshold: up,
            unhealthy_threshold: down,
        }
    }

    #[test]
    fn thresholds_debounce_flips() {
        let b = Backend::new(SocketAddr::from(([127, 0, 0, 1], 1)), true);
        let h = hc(2, 3);
        let fail = Err(CheckError::Status(500));
        assert_eq!(record(&b, &h, &fail), None);
        assert_eq!(record(&b, &h, &fail), None);
        assert_eq!(
            record(&b, &h, &Ok(())),
            None,
            "a pass resets the failure count"
        );
        assert_eq!(record(&b, &h, &fail), None);
        assert_eq!(record(&b, &h, &fail), None);
        assert_eq!(record(&b, &h, &fail), Some(false));
        assert_eq!(record(&b, &h, &Ok(())), None);
        assert_eq!(record(&b, &h, &Ok(())), Some(true));
    }

    #[tokio::test]
    async fn checks_real_servers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((mut s, _)) = listener.accept().await {
                n += 1;
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let status = if n == 1 {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let h = hc(1, 1);
        assert!(check(addr, &h).await.is_ok());
        assert!(matches!(
            check(addr, &h).await,
            Err(CheckError::Status(503))
        ));
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(matches!(
            check(closed, &h).await,
            Err(CheckError::Connect(_))
        ));
    }
}
