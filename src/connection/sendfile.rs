//! A response body sent from an open file with sendfile(2) over a plain TCP
//! client connection: the kernel hands the page-cache pages to the socket, so
//! the bytes are neither copied into Gatehouse nor out of it (a 1 MiB static
//! file: the copy into the socket was half the CPU of the answer). TLS, HTTP/2
//! and anything else write the bytes from memory as before.
//!
//! Pingora's HTTP/1 session flushes the header and counts the bytes written
//! here (vendor patch 23), so `Content-Length` framing, keep-alive reuse and
//! the body byte count stay as they are after an ordinary body write.

use std::fs::File;
use std::future::Future;
use std::io;
use std::time::Duration;

use pingora::protocols::http::v1::server::HttpSession as HttpSessionV1;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Stream;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::GuardedIo;

/// What [`send_file`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Every byte went out; the body still has to be finished.
    All,
    /// Not a plain HTTP/1.x TCP connection with a `Content-Length` body:
    /// nothing was written, write the bytes the usual way.
    NotHere,
}

/// Writes `len` bytes of `file` from `offset` as the response body, after the
/// header (already written, not yet flushed). An error when the file holds
/// fewer bytes than that (it got shorter: the connection cannot be used on),
/// or when the client goes away or is slower than the write timeout.
pub(crate) async fn send_file(
    session: &mut Session,
    file: &File,
    offset: u64,
    len: usize,
) -> Result<Sent> {
    let ServerSession::H1(h1) = session.as_downstream_mut() else {
        return Ok(Sent::NotHere);
    };
    // Corked, the header waiting in the write buffer goes out in the first
    // segment of the file's bytes, not in a small one of its own.
    let Some(tcp) = l4(h1.stream()).and_then(L4Stream::tcp_socket) else {
        return Ok(Sent::NotHere);
    };
    cork(tcp, true);
    let sent = send_corked(h1, file, offset, len).await;
    if let Some(tcp) = l4(h1.stream()).and_then(L4Stream::tcp_socket) {
        cork(tcp, false);
    }
    sent
}

/// [`send_file`] on a corked plain TCP connection.
async fn send_corked(h1: &mut HttpSessionV1, file: &File, offset: u64, len: usize) -> Result<Sent> {
    let timeout = h1.get_write_timeout();
    // The header's flush is inside the deadline too: a client that stopped
    // reading must not hold the connection before the first byte of the file.
    let send = async {
        if !h1.prepare_direct_body(len).await? {
            return Ok(Sent::NotHere);
        }
        let mut pos = nix::libc::off_t::try_from(offset).map_err(|_| short_file())?;
        let mut left = len;
        while left > 0 {
            let Some(tcp) = plain_tcp(h1.stream()) else {
                return Err(
                    Error::explain(ErrorType::WriteError, "sending a file: socket gone")
                        .into_down(),
                );
            };
            let n = send_some(tcp, file, &mut pos, left).await.map_err(|e| {
                Error::because(ErrorType::WriteError, "sending a file", e).into_down()
            })?;
            if n == 0 {
                return Err(short_file());
            }
            h1.direct_body_written(n);
            left -= n;
        }
        Ok(Sent::All)
    };
    match timeout {
        Some(t) => with_timeout(t, send).await,
        None => send.await,
    }
}

async fn with_timeout(t: Duration, send: impl Future<Output = Result<Sent>>) -> Result<Sent> {
    match tokio::time::timeout(t, send).await {
        Ok(res) => res,
        // The client's side, as Pingora marks its own body write errors.
        Err(_) => Err(Error::explain(
            ErrorType::WriteTimedout,
            format!("sending a file, timeout: {t:?}"),
        )
        .into_down()),
    }
}

/// Sets or clears `TCP_CORK`. A failure only costs a small segment.
fn cork(tcp: &TcpStream, on: bool) {
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_cork(on) {
        log::debug!("TCP_CORK {on}: {e}");
    }
}

/// One sendfile(2) once the socket can take bytes: how many it took.
async fn send_some(
    tcp: &TcpStream,
    file: &File,
    pos: &mut nix::libc::off_t,
    left: usize,
) -> io::Result<usize> {
    loop {
        tcp.writable().await?;
        match tcp.try_io(Interest::WRITABLE, || {
            nix::sys::sendfile::sendfile(tcp, file, Some(&mut *pos), left).map_err(io::Error::from)
        }) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn short_file() -> Box<Error> {
    Error::explain(
        ErrorType::ReadError,
        "sending a file: it got shorter while being sent",
    )
}

/// Pingora's L4 stream of a plain (not TLS) client connection, under
/// Gatehouse's wrapper.
fn l4(stream: &Stream) -> Option<&L4Stream> {
    let guarded = stream.as_ref().as_any().downcast_ref::<GuardedIo>()?;
    guarded.inner.as_ref().as_any().downcast_ref::<L4Stream>()
}

/// The TCP socket of a plain client connection, with nothing waiting in its
/// write buffer.
fn plain_tcp(stream: &Stream) -> Option<&TcpStream> {
    l4(stream)?.tcp_for_direct_write()
}
