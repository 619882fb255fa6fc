//! A load driver: keep-alive clients sending GETs in a loop while a test
//! reloads, upgrades or drains Gatehouse, counting every failed request.
//!
//! Each task owns one client (so one connection per task) and sends GETs to
//! its URLs in turn until stopped. A request fails on any transport error,
//! on a status that is not 2xx, or when its body cannot be read. Every request
//! carries [`SEQ_HEADER`], a number from one counter shared by all tasks in
//! the order the requests were started, so a backend's log tells which
//! requests were sent after a given moment ([`Load::seq`]).
//!
//! ```ignore
//! let load = Load::start(clients, &[gh.https_url("/api/x")], Duration::from_millis(2));
//! assert!(load.progressed(100, Duration::from_secs(10)).await);
//! // ... reload ...
//! load.stop().await.assert_no_failures();
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::backend::Request;

/// The header carrying the request's sequence number.
pub const SEQ_HEADER: &str = "x-load-seq";

/// Failure messages kept for the report (the count is always exact).
const KEPT_FAILURES: usize = 20;

#[derive(Default)]
struct Shared {
    seq: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<Vec<String>>,
}

/// Running load; stop it with [`Load::stop`].
pub struct Load {
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

/// What a load run saw.
#[derive(Debug)]
pub struct Report {
    pub ok: u64,
    pub failed: u64,
    /// The first few failures, as `client url (seq, time since the start): error`.
    pub failures: Vec<String>,
}

impl Report {
    /// Panics with the failures unless there were none (and some requests succeeded).
    pub fn assert_no_failures(&self) {
        assert!(
            self.failed == 0,
            "{} of {} requests failed; first ones:\n{}",
            self.failed,
            self.failed + self.ok,
            self.failures.join("\n")
        );
        assert!(self.ok > 0, "no request succeeded");
    }
}

impl Load {
    /// One task per `(label, client)`, each sending GETs to `urls` in turn and
    /// pausing `pause` after each request.
    pub fn start(
        clients: Vec<(String, reqwest::Client)>,
        urls: &[String],
        pause: Duration,
    ) -> Load {
        assert!(!urls.is_empty(), "no URL to load");
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared::default());
        let started = std::time::Instant::now();
        let tasks = clients
            .into_iter()
            .enumerate()
            .map(|(i, (label, client))| {
                let stop = stop.clone();
                let shared = shared.clone();
                let urls = urls.to_vec();
                tokio::spawn(async move {
                    // Tasks start on different URLs so every URL is busy at once.
                    let mut k = i;
                    while !stop.load(Ordering::Relaxed) {
                        let url = &urls[k % urls.len()];
                        k += 1;
                        let seq = shared.seq.fetch_add(1, Ordering::SeqCst) + 1;
                        match get(&client, url, seq).await {
                            Ok(()) => {
                                shared.ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => {
                                shared.failed.fetch_add(1, Ordering::SeqCst);
                                let mut kept = shared.failures.lock().unwrap();
                                if kept.len() < KEPT_FAILURES {
                                    kept.push(format!(
                                        "{label} {url} (seq {seq}, at {:?}): {e}",
                                        started.elapsed()
                                    ));
                                }
                            }
                        }
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            shared,
            tasks,
        }
    }

    /// The number of requests started so far: every request started later
    /// carries a larger [`SEQ_HEADER`].
    pub fn seq(&self) -> u64 {
        self.shared.seq.load(Ordering::SeqCst)
    }

    pub fn ok(&self) -> u64 {
        self.shared.ok.load(Ordering::SeqCst)
    }

    /// Waits up to `within` for `n` more requests to succeed.
    pub async fn progressed(&self, n: u64, within: Duration) -> bool {
        let target = self.ok() + n;
        super::eventually(within, || async { self.ok() >= target }).await
    }

    /// Stops every task after its current request and reports.
    pub async fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        let failures = self.shared.failures.lock().unwrap().clone();
        Report {
            ok: self.shared.ok.load(Ordering::SeqCst),
            failed: self.shared.failed.load(Ordering::SeqCst),
            failures,
        }
    }
}

async fn get(client: &reqwest::Client, url: &str, seq: u64) -> Result<(), String> {
    let resp = client
        .get(url)
        .header(SEQ_HEADER, seq.to_string())
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status();
    let version = resp.version();
    let body = resp.bytes().await.map_err(|e| format!("body: {e:?}"))?;
    if !status.is_success() {
        return Err(format!(
            "{status} ({version:?}): {}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(())
}

/// The [`SEQ_HEADER`] of a request a backend received, if it came from a load.
pub fn seq_of(req: &Request) -> Option<u64> {
    req.header(SEQ_HEADER).and_then(|v| v.parse().ok())
}
