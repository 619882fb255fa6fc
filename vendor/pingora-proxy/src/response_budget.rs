//! Gatehouse patch: response buffering.
//!
//! Upstream Pingora moves an answer from the upstream half to the downstream
//! half through a pipe of 4 tasks, so a client that reads slowly slows the
//! upstream read, and the server is held for as long as the client likes (one
//! worker of a one-request-at-a-time server such as Gunicorn's sync workers).
//! With a [`ResponseBuffering`] from `ProxyHttp::response_buffering`, the pipe
//! takes as many body bytes as the budget allows instead: the answer is read
//! from the server at the server's pace and handed to the client at the
//! client's. No chunk is held back: the client gets each one as soon as it can
//! take it. An answer marked `Content-Type: text/event-stream` or
//! `X-Accel-Buffering: no` keeps the small pipe (it is a stream, and could
//! otherwise grow without end for a client that does not read).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use pingora_core::protocols::http::HttpTask;
use tokio::sync::Semaphore;

/// Tasks the pipe holds when buffering (body chunks; bytes are bounded by the budget).
pub(crate) const BUFFERED_PIPE_TASKS: usize = 4096;

/// Bytes one streamed (unbuffered) answer may have in the pipe.
const STREAMING_BYTES: usize = 64 * 1024;

/// How much of an answer may wait in memory for a slow client.
#[derive(Debug, Clone)]
pub struct ResponseBuffering {
    /// Bytes of one answer at most.
    pub per_request: usize,
    /// Shared by every buffered answer of the process: when it is used up,
    /// answers are read from servers at their clients' pace again.
    pub total: Arc<Semaphore>,
}

/// The budget of one answer in flight.
#[derive(Debug)]
pub(crate) struct ResponseBudget {
    per_request: Semaphore,
    per_request_size: usize,
    total: Arc<Semaphore>,
    streaming: AtomicBool,
    /// Bytes taken from `total` and not given back yet: the share of the
    /// tasks still in the pipe. Given back when the budget is dropped, so an
    /// exchange that ends early (the client hung up mid-answer, an upstream
    /// error, a retry) returns what its dropped tasks held.
    from_total: AtomicUsize,
}

impl ResponseBudget {
    pub(crate) fn new(settings: ResponseBuffering) -> Arc<Self> {
        let per_request_size = settings.per_request.clamp(STREAMING_BYTES, u32::MAX as usize);
        Arc::new(ResponseBudget {
            per_request: Semaphore::new(per_request_size),
            per_request_size,
            total: settings.total,
            streaming: AtomicBool::new(false),
            from_total: AtomicUsize::new(0),
        })
    }

    /// Bytes of `task` counted against the budget (capped at the budget, so
    /// that one chunk larger than all of it can still pass).
    fn cost(&self, task: &HttpTask) -> u32 {
        let len = match task {
            HttpTask::Body(Some(b), _) | HttpTask::UpgradedBody(Some(b), _) => b.len(),
            _ => 0,
        };
        let cap = if self.streaming.load(Ordering::Relaxed) {
            STREAMING_BYTES
        } else {
            self.per_request_size
        };
        len.min(cap) as u32
    }

    /// Waits until `task` fits the budget, and takes its share. The first
    /// task of an answer (its header) decides whether it is a stream.
    pub(crate) async fn reserve(&self, task: &HttpTask) {
        if let HttpTask::Header(resp, _) = task {
            let stream = resp
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| {
                    v.trim_start()
                        .to_ascii_lowercase()
                        .starts_with("text/event-stream")
                })
                || resp
                    .headers
                    .get("x-accel-buffering")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"no"));
            if stream && !self.streaming.swap(true, Ordering::Relaxed) {
                self.per_request
                    .forget_permits(self.per_request_size - STREAMING_BYTES);
            }
        }
        let cost = self.cost(task);
        if cost == 0 {
            return;
        }
        if let Ok(p) = self.per_request.acquire_many(cost).await {
            p.forget();
        }
        if !self.streaming.load(Ordering::Relaxed) {
            if let Ok(p) = self.total.acquire_many(cost).await {
                p.forget();
                self.from_total.fetch_add(cost as usize, Ordering::Relaxed);
            }
        }
    }

    /// Gives back the share of a task the downstream half took out of the pipe.
    pub(crate) fn release(&self, task: &HttpTask) {
        let cost = self.cost(task) as usize;
        if cost == 0 {
            return;
        }
        self.per_request.add_permits(cost);
        if !self.streaming.load(Ordering::Relaxed) {
            // Only what this budget took and still holds goes back.
            let held = self
                .from_total
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                    Some(held.saturating_sub(cost))
                })
                .unwrap_or(0);
            self.total.add_permits(cost.min(held));
        }
    }
}

impl Drop for ResponseBudget {
    /// Gatehouse patch (row 61): the share of the tasks that never reached the
    /// downstream half goes back to the process-wide budget. Before, each
    /// exchange that ended with tasks in the pipe kept its share for the life
    /// of the process; about 16 downloads of big buffered answers cut off
    /// by their clients used up all of it, and every buffered answer after
    /// that waited for the budget forever.
    fn drop(&mut self) {
        let held = *self.from_total.get_mut();
        if held > 0 {
            self.total.add_permits(held);
        }
    }
}
