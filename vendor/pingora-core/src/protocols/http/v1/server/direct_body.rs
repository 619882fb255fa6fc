//! Gatehouse patch 23: response body bytes the application writes to the
//! socket itself (sendfile(2) of a static file over plain TCP), with the
//! session's `Content-Length` accounting kept right, so that `finish_body`,
//! keep-alive reuse and `body_bytes_sent` behave as after `write_body`.

use pingora_error::{ErrorType::WriteError, OrErr, Result};
use tokio::io::AsyncWriteExt;

use super::super::body::BodyMode;
use super::HttpSession;

impl HttpSession {
    /// Gatehouse patch 23: gets ready for `len` body bytes the caller writes
    /// straight to the socket: flushes what is buffered (the response header).
    /// `Ok(false)` when the body is not framed by `Content-Length` with room
    /// for `len` more bytes: write it with [`HttpSession::write_body`].
    pub async fn prepare_direct_body(&mut self, len: usize) -> Result<bool> {
        match self.body_writer.body_mode {
            BodyMode::ContentLength(total, written) if written.saturating_add(len) <= total => {}
            _ => return Ok(false),
        }
        self.underlying_stream
            .flush()
            .await
            .or_err(WriteError, "flushing response header")?;
        Ok(true)
    }

    /// Gatehouse patch 23: counts `n` body bytes the caller wrote to the socket
    /// itself after [`HttpSession::prepare_direct_body`].
    pub fn direct_body_written(&mut self, n: usize) {
        if let BodyMode::ContentLength(total, written) = self.body_writer.body_mode {
            self.body_writer.body_mode = BodyMode::ContentLength(total, written + n);
            self.body_bytes_sent += n;
        }
    }
}
