//! [`GuardedIo`]: the client stream with its per-IP slot and the request
//! head deadline (`header_timeout`) of HTTP/1.x.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, SocketDigest, TimingDigest,
};
use pingora::protocols::{Peek, Shutdown, Ssl, Stream, UniqueID, UniqueIDType, ALPN};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::per_ip::IpSlot;

/// Where a connection is in its request cycle, for the head deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Receiving a request head: the deadline runs.
    Head,
    /// The head is in; body and response follow.
    AfterHead,
    /// A response was written; the next byte read starts a new head.
    Idle,
}

pub(crate) struct HeadTimer {
    timeout: Duration,
    /// When the head being received must be complete.
    deadline: Instant,
    /// Armed only when a read has to wait in the middle of a head: a head
    /// that arrives whole (the usual keep-alive request) costs no timer.
    sleep: Option<Pin<Box<Sleep>>>,
    phase: Phase,
    /// Line ends in a row (an empty line ends the head).
    line_ends: u8,
}

impl HeadTimer {
    pub(crate) fn new(timeout: Duration) -> Self {
        HeadTimer {
            timeout,
            deadline: Instant::now() + timeout,
            sleep: None,
            phase: Phase::Head,
            line_ends: 0,
        }
    }

    /// Looks at bytes just read: a first byte after a response starts a new
    /// head (and its deadline); the empty line ending a head stops the deadline.
    /// Bytes after the end of the head (the body) are not looked at.
    fn on_read(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if data.ends_with(b"\r\n\r\n") {
            // The usual read: a whole head and nothing after it. Its last
            // four bytes are an empty line whatever came before, so the head
            // is in by the end of this read, as the pass below would find
            // (line by line), and the deadline it would start is never
            // looked at (only a head being received has one).
            if self.phase != Phase::AfterHead {
                self.phase = Phase::AfterHead;
                self.sleep = None;
            }
            return;
        }
        if self.phase == Phase::Idle {
            self.phase = Phase::Head;
            self.line_ends = 0;
            self.deadline = Instant::now() + self.timeout;
        }
        if self.phase != Phase::Head {
            return;
        }
        let only_cr = |segment: &[u8]| segment.iter().all(|&b| b == b'\r');
        let mut line_start = 0;
        for end in memchr::memchr_iter(b'\n', data) {
            if !only_cr(&data[line_start..end]) {
                self.line_ends = 0;
            }
            self.line_ends += 1;
            if self.line_ends == 2 {
                self.phase = Phase::AfterHead;
                // Nothing to wait for until the next head: no timer is kept.
                self.sleep = None;
                return;
            }
            line_start = end + 1;
        }
        if !only_cr(&data[line_start..]) {
            self.line_ends = 0;
        }
    }

    /// A read has to wait: whether the head's deadline has passed (the timer
    /// wakes the task when it does).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = self.deadline;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        sleep.as_mut().poll(cx).is_ready()
    }
}

/// A stream that carries its connection slot and enforces the head deadline.
pub(crate) struct GuardedIo {
    pub(crate) inner: Stream,
    pub(crate) _slot: Option<IpSlot>,
    /// HTTP/1.x only. Boxed: an HTTP/2 connection has none, and inline its
    /// room (48 bytes) would put every stream in the next allocation size.
    pub(crate) head: Option<Box<HeadTimer>>,
    pub(crate) _open: super::lingering::OpenConnection,
}

impl fmt::Debug for GuardedIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedIo")
            .field("inner", &self.inner)
            .finish()
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        let Some(head) = this.head.as_mut() else {
            return res;
        };
        match res {
            Poll::Ready(Ok(())) => head.on_read(&buf.filled()[before..]),
            Poll::Pending if head.phase == Phase::Head && head.expired(cx) => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request head not received within header_timeout",
                )));
            }
            _ => {}
        }
        res
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(head) = self.head.as_mut() {
            head.phase = Phase::Idle;
        }
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(head) = self.head.as_mut() {
            head.phase = Phase::Idle;
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for GuardedIo {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for GuardedIo {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedIo {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for GuardedIo {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for GuardedIo {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for GuardedIo {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for GuardedIo {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }

    /// Pingora waits with this before it allocates a request head buffer; a
    /// head that is due runs out here as it would in `poll_read`.
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let res = self.inner.poll_read_ready(cx);
        if res.is_pending() {
            if let Some(head) = self.head.as_mut() {
                if head.phase == Phase::Head && head.expired(cx) {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request head not received within header_timeout",
                    )));
                }
            }
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn head_end_is_found_across_reads() {
        let mut t = HeadTimer::new(Duration::from_secs(1));
        t.on_read(b"GET / HTTP/1.1\r\nHost: x\r\n\r");
        assert_eq!(t.phase, Phase::Head);
        t.on_read(b"\n");
        assert_eq!(t.phase, Phase::AfterHead);
        t.phase = Phase::Idle;
        t.on_read(b"G");
        assert_eq!(t.phase, Phase::Head, "a new request restarts the deadline");
        t.on_read(b"ET / HTTP/1.1\nHost: x\n\nbody");
        assert_eq!(
            t.phase,
            Phase::AfterHead,
            "bare LF line ends end a head too"
        );
    }

    #[tokio::test]
    async fn a_read_ending_in_an_empty_line_ends_the_head() {
        let mut t = HeadTimer::new(Duration::from_secs(1));
        t.on_read(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(t.phase, Phase::AfterHead);
        // Body bytes that happen to end so change nothing.
        t.on_read(b"a\r\n\r\n");
        assert_eq!(t.phase, Phase::AfterHead);
        t.phase = Phase::Idle;
        t.on_read(b"GET / HTTP/1.1\r\n");
        assert_eq!(t.phase, Phase::Head);
        t.on_read(b"Host: x\r\n\r\n");
        assert_eq!(t.phase, Phase::AfterHead, "a head split over two reads");
        t.phase = Phase::Idle;
        t.on_read(b"\r\n\r\n");
        assert_eq!(t.phase, Phase::AfterHead, "as the line-by-line pass finds");
    }
}
