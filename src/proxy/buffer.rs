//! Request buffering: the whole request body is read before a server is
//! chosen, so a slow or vanishing uploader never holds a backend worker, and
//! a body that ends badly (client gone, malformed chunk, too large, too slow)
//! never reaches a backend at all.
//!
//! The first [`REQUEST_BODY_IN_MEMORY`] bytes stay in memory; the rest spills
//! to an unnamed temp file in `server.temp_dir` (unlinked from the start, so
//! nothing is left behind whatever happens to the process). The body goes
//! upstream in one piece, read back from the file when it spilled; it is kept
//! until the request ends, so a retry after a connect failure resends it.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use pingora::ErrorType;

use crate::config::defaults::REQUEST_BODY_IN_MEMORY;
use crate::metrics;

/// A whole request body, read.
#[derive(Debug, Default)]
pub(crate) struct BufferedBody {
    memory: BytesMut,
    /// The spilled body: everything, memory part included.
    file: Option<File>,
    len: u64,
}

/// Why a body could not be buffered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BufferError {
    #[error("request body over max_body_size")]
    TooLarge,
    #[error("request body not received within client_body_timeout")]
    TimedOut,
    #[error("malformed request body")]
    Malformed(#[source] Box<pingora::Error>),
    #[error("client went away while sending the body")]
    ClientGone(#[source] Box<pingora::Error>),
    #[error("cannot spill the request body to a temp file")]
    Spill(#[source] io::Error),
}

impl BufferError {
    /// The answer owed to the client, when one can still be sent.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            BufferError::TooLarge => Some(413),
            BufferError::TimedOut => Some(408),
            BufferError::Malformed(_) => Some(400),
            BufferError::Spill(_) => Some(500),
            BufferError::ClientGone(_) => None,
        }
    }
}

impl BufferedBody {
    /// Bytes in the body.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Whether part of it went to disk.
    pub(crate) fn spilled(&self) -> bool {
        self.file.is_some()
    }

    async fn push(&mut self, chunk: Bytes, temp_dir: &Path) -> io::Result<()> {
        self.len += chunk.len() as u64;
        if self.file.is_none() && self.memory.len() + chunk.len() <= REQUEST_BODY_IN_MEMORY {
            self.memory.extend_from_slice(&chunk);
            return Ok(());
        }
        let first = self.file.is_none();
        let memory = std::mem::take(&mut self.memory).freeze();
        let file = self.file.take();
        let dir = temp_dir.to_path_buf();
        let file = blocking(move || {
            let mut file = match file {
                Some(f) => f,
                None => tempfile::tempfile_in(&dir)?,
            };
            file.write_all(&memory)?;
            file.write_all(&chunk)?;
            Ok(file)
        })
        .await?;
        if first {
            metrics::record_request_body_spill();
        }
        self.file = Some(file);
        Ok(())
    }

    /// The whole body in one piece (read back from disk when it spilled).
    pub(crate) async fn bytes(&self) -> io::Result<Bytes> {
        let Some(file) = &self.file else {
            return Ok(self.memory.clone().freeze());
        };
        let file = file.try_clone()?;
        let len = usize::try_from(self.len).map_err(io::Error::other)?;
        blocking(move || {
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, 0)?;
            Ok(Bytes::from(buf))
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

/// Reads the whole request body of `session`: at most `max` bytes, all of
/// it within `deadline`, spilling to `temp_dir`.
pub(crate) async fn read_body(
    session: &mut Session,
    max: u64,
    deadline: Duration,
    temp_dir: &Path,
) -> Result<BufferedBody, BufferError> {
    let temp_dir: PathBuf = temp_dir.to_path_buf();
    let read = async {
        let mut body = BufferedBody::default();
        loop {
            let chunk = session.read_request_body().await.map_err(|e| {
                match e.etype() {
                    // Pingora's chunked-body errors are custom types.
                    ErrorType::InvalidHTTPHeader
                    | ErrorType::Custom("InvalidChunk" | "InvalidTrailerEnd") => {
                        BufferError::Malformed(e)
                    }
                    _ => BufferError::ClientGone(e),
                }
            })?;
            let Some(chunk) = chunk else {
                return Ok(body);
            };
            if body.len() + chunk.len() as u64 > max {
                return Err(BufferError::TooLarge);
            }
            body.push(chunk, &temp_dir)
                .await
                .map_err(BufferError::Spill)?;
        }
    };
    match tokio::time::timeout(deadline, read).await {
        Ok(result) => {
            if let Ok(body) = &result {
                if body.spilled() {
                    metrics::record_request_body_spilled_bytes(body.len());
                }
            }
            result
        }
        Err(_) => {
            metrics::record_client_timeout("client_body_timeout");
            Err(BufferError::TimedOut)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn small_bodies_stay_in_memory_large_ones_spill_to_an_unnamed_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut small = BufferedBody::default();
        small
            .push(Bytes::from_static(b"hello"), dir.path())
            .await
            .unwrap();
        assert!(!small.spilled());
        assert_eq!(small.bytes().await.unwrap(), "hello");

        let mut large = BufferedBody::default();
        let chunk = Bytes::from(vec![7u8; 40 * 1024]);
        for _ in 0..5 {
            large.push(chunk.clone(), dir.path()).await.unwrap();
        }
        assert!(large.spilled());
        assert_eq!(large.len(), 200 * 1024);
        let all = large.bytes().await.unwrap();
        assert_eq!(all.len(), 200 * 1024);
        assert!(all.iter().all(|&b| b == 7));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the temp file has no name in the directory"
        );
    }
}
