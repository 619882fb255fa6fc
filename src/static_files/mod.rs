//! Static sites: safe path resolution, conditional and range requests,
//! precompressed siblings, cache rules and SPA fallback.
//!
//! ```text
//!  Site::respond(method, path, headers)
//!     ├─ method       GET | HEAD, else 405 + Allow
//!     ├─ path         decode once, refuse ../NUL/\/%2f → 400, hidden → 404      path
//!     ├─ cache        hit: no syscall, no blocking (inotify keeps it fresh)     cache
//!     │  └─ miss      resolve on the blocking pool: file, dir → 301,            disk
//!     │               dir/ → index, SPA fallback; real path must be in root
//!     ├─ coding       .br / .gz sibling by Accept-Encoding                      encoding
//!     ├─ conditions   412, 304                                                  conditional
//!     └─ range        206, 416 (or 200)
//!  write_reply(session, reply)  header, then the bytes or the file in chunks
//! ```
//!
//! Behaviour, and the choices made where SPEC.md is silent (Nginx's where it
//! has one):
//! - `Content-Type` from the extension (`mime_guess`; `.js` is
//!   `application/javascript` as in Nginx's `mime.types`, unknown is
//!   `application/octet-stream`), with `; charset=utf-8` on text types.
//!   `Content-Length`, `Accept-Ranges: bytes`, `ETag`, `Last-Modified` always.
//! - The ETag is strong: `"{mtime seconds:x}.{nanoseconds:x}-{length:x}"`
//!   (Nginx's `"mtime-length"` plus nanoseconds, so that a rewrite within the
//!   same second changes it; no inode, so that copies on several hosts agree),
//!   with `-br`/`-gz` appended for a compressed sibling.
//! - `/docs` naming a directory gets `301 Location: ./docs/` (relative, so it
//!   stays right under a stripped route prefix; the query is dropped).
//!   `/docs/` serves `docs/{index}`; a directory without an index is 404
//!   (Nginx: 403), or the SPA index when the fallback applies.
//! - SPA fallback: a path whose last segment has no extension and that names
//!   no file gets the root index (200, the index's `Cache-Control`).
//! - Hidden files and directories (a segment starting with `.`) are 404,
//!   except `.well-known`.
//! - Several ranges in one request get the whole file (200). `HEAD` is
//!   answered exactly like `GET` (including 206/304) without the body.
//! - Any error reading the disk is 404 (no 403: nothing is said about files
//!   that cannot be served).
//! - Errors are short JSON (`{"error":"not_found","status":404}`).
//!
//! Files up to [`MAX_CACHED_FILE_SIZE`] are held in memory; larger files
//! stream from disk in [`STREAM_CHUNK_SIZE`] chunks read on the blocking pool,
//! one chunk ahead of the socket. See [`cache`] for freshness and limits.

mod cache;
mod cache_control;
mod conditional;
mod disk;
mod encoding;
mod path;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use tokio::task::JoinHandle;

pub use cache::{CACHE_CAPACITY_BYTES, CACHE_MAX_ENTRIES};
pub use disk::MAX_CACHED_FILE_SIZE;

use cache::{Cache, WatchSlot};
use conditional::{Precondition, Span, Validators};
use disk::{FileSet, Resolved, Variant};
use path::{PathError, SafePath};

use crate::config::StaticSite;
pub use cache_control::cache_control_for;

/// Bytes read from disk at a time when streaming a file larger than
/// [`MAX_CACHED_FILE_SIZE`].
pub const STREAM_CHUNK_SIZE: usize = 256 * 1024;

/// One static site: its config and its cache of files.
pub struct Site {
    config: Arc<StaticSite>,
    cache: Arc<Cache>,
    watch: Arc<WatchSlot>,
}

impl fmt::Debug for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Site")
            .field("name", &self.config.name)
            .field("root", &self.config.root)
            .finish_non_exhaustive()
    }
}

/// A response ready to be decorated by the caller and written with [`write_reply`].
#[derive(Debug)]
pub struct Reply {
    pub header: ResponseHeader,
    pub body: ReplyBody,
}

impl Reply {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.header.status
    }
}

/// The body of a [`Reply`].
#[derive(Debug)]
pub enum ReplyBody {
    /// No body (HEAD, 304, 301).
    Empty,
    /// The whole body, from memory.
    Full(Bytes),
    /// `remaining` bytes of `file` from `offset`, streamed.
    File {
        file: File,
        offset: u64,
        remaining: u64,
    },
}

impl Site {
    /// Wraps a validated site. Does no I/O; the file watcher starts with the
    /// first request.
    pub fn new(config: StaticSite) -> Site {
        let cache = Arc::new(Cache::new(&config.name));
        Site {
            config: Arc::new(config),
            cache,
            watch: Arc::new(WatchSlot::default()),
        }
    }

    /// The site's config.
    pub fn config(&self) -> &StaticSite {
        &self.config
    }

    /// Answers a request. `path` is percent-encoded, without the query, with
    /// the route prefix already stripped when the route says so.
    pub async fn respond(&self, method: &Method, path: &str, headers: &HeaderMap) -> Reply {
        let head = match *method {
            Method::GET => false,
            Method::HEAD => true,
            _ => return error(StatusCode::METHOD_NOT_ALLOWED, false),
        };
        let path = match SafePath::parse(path) {
            Ok(p) => p,
            Err(PathError::Bad) => return error(StatusCode::BAD_REQUEST, head),
            Err(PathError::Hidden) => return error(StatusCode::NOT_FOUND, head),
        };
        self.watch.ensure_started(&self.cache, &self.config.root);
        let mut fresh = false;
        loop {
            let resolved = if fresh {
                self.load(&path, None).await
            } else {
                self.lookup(&path).await
            };
            let set = match resolved {
                None => return error(StatusCode::INTERNAL_SERVER_ERROR, head),
                Some(Resolved::NotFound) => return error(StatusCode::NOT_FOUND, head),
                Some(Resolved::Redirect(location)) => return redirect(location),
                Some(Resolved::File(set)) => set,
            };
            match self.serve(&set, head, headers).await {
                Some(reply) => return reply,
                // The large file changed since it was described: look again, once.
                None if !fresh => {
                    self.cache.remove(path.as_str());
                    fresh = true;
                }
                None => return error(StatusCode::NOT_FOUND, head),
            }
        }
    }

    /// The cached answer (revalidated unless the watcher runs), or a fresh one.
    async fn lookup(&self, path: &SafePath<'_>) -> Option<Resolved> {
        match self.cache.get(path.as_str()) {
            Some(hit) if self.cache.trusted() => Some(hit),
            Some(Resolved::File(set)) => self.load(path, Some(set)).await,
            _ => self.load(path, None).await,
        }
    }

    /// Resolves on the blocking pool and caches the answer; `None` if the task failed.
    async fn load(&self, path: &SafePath<'_>, prev: Option<Arc<FileSet>>) -> Option<Resolved> {
        let generation = self.cache.generation();
        let config = Arc::clone(&self.config);
        let key = path.as_str().to_owned();
        let task = tokio::task::spawn_blocking(move || {
            let resolved = disk::resolve(&config, &SafePath::from_checked(&key), prev.as_deref());
            (key, resolved)
        });
        match task.await {
            Ok((key, resolved)) => {
                self.cache.insert(&key, generation, &resolved);
                Some(resolved)
            }
            Err(e) => {
                log::error!(
                    "static site {:?}: file lookup failed: {e}",
                    self.config.name
                );
                None
            }
        }
    }

    /// The reply for a file; `None` when a streamed file changed under us.
    async fn serve(&self, set: &Arc<FileSet>, head: bool, headers: &HeaderMap) -> Option<Reply> {
        let coding = encoding::choose(headers, set.br.is_some(), set.gzip.is_some());
        let v = set.variant(coding);
        let validators = Validators {
            etag: v.etag.to_str().unwrap_or_default(),
            modified: v.modified,
        };
        match conditional::preconditions(headers, validators) {
            Precondition::Proceed => {}
            Precondition::NotModified => return Some(not_modified(set, v)),
            Precondition::Failed => return Some(error(StatusCode::PRECONDITION_FAILED, head)),
        }
        let (status, start, len) = match conditional::span(headers, v.len, validators) {
            Span::Whole => (StatusCode::OK, 0, v.len),
            Span::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
            Span::Unsatisfiable => return Some(unsatisfiable(set, v, head)),
        };
        let mut h = representation_headers(set, v);
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        if status == StatusCode::PARTIAL_CONTENT {
            let range = format!("bytes {start}-{}/{}", start + len - 1, v.len);
            if let Ok(value) = HeaderValue::from_str(&range) {
                h.insert(header::CONTENT_RANGE, value);
            }
        }
        let body = if head || len == 0 {
            ReplyBody::Empty
        } else if let Some(data) = &v.data {
            // `len` and `start` lie within `data` (`v.len` is its length).
            ReplyBody::Full(data.slice(start as usize..(start + len) as usize))
        } else {
            let (set, root) = (Arc::clone(set), self.config.root.clone());
            let opened =
                tokio::task::spawn_blocking(move || disk::reopen(&root, set.variant(coding))).await;
            ReplyBody::File {
                file: opened.ok().flatten()?,
                offset: start,
                remaining: len,
            }
        };
        Some(Reply {
            header: response(status, h),
            body,
        })
    }

    #[cfg(test)]
    fn cache(&self) -> &Cache {
        &self.cache
    }

    #[cfg(test)]
    fn watching(&self) -> bool {
        self.cache.trusted()
    }

    #[cfg(test)]
    fn without_watcher(config: StaticSite) -> Site {
        let site = Site::new(config);
        site.watch.disable(&site.cache, false);
        site
    }

    /// Trusts the cache with no watcher at all, to see what happens when a
    /// change is missed.
    #[cfg(test)]
    fn trusting_blindly(config: StaticSite) -> Site {
        let site = Site::new(config);
        site.watch.disable(&site.cache, true);
        site
    }
}

/// `Content-Type`, validators, `Cache-Control`, `Accept-Ranges`, `Vary`, `Content-Encoding`.
fn representation_headers(set: &FileSet, v: &Variant) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(12);
    h.insert(header::CONTENT_TYPE, set.content_type.clone());
    h.insert(header::ETAG, v.etag.clone());
    h.insert(header::LAST_MODIFIED, v.last_modified.clone());
    h.insert(header::CACHE_CONTROL, set.cache_control.clone());
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if set.varies() {
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    if v.coding != encoding::Coding::Identity {
        h.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(v.coding.token()),
        );
    }
    h
}

fn not_modified(set: &FileSet, v: &Variant) -> Reply {
    let mut h = HeaderMap::with_capacity(4);
    h.insert(header::ETAG, v.etag.clone());
    h.insert(header::LAST_MODIFIED, v.last_modified.clone());
    h.insert(header::CACHE_CONTROL, set.cache_control.clone());
    if set.varies() {
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    Reply {
        header: response(StatusCode::NOT_MODIFIED, h),
        body: ReplyBody::Empty,
    }
}

fn unsatisfiable(set: &FileSet, v: &Variant, head: bool) -> Reply {
    let mut h = HeaderMap::with_capacity(6);
    if let Ok(value) = HeaderValue::from_str(&format!("bytes */{}", v.len)) {
        h.insert(header::CONTENT_RANGE, value);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if set.varies() {
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    error_with(StatusCode::RANGE_NOT_SATISFIABLE, head, h)
}

fn redirect(location: HeaderValue) -> Reply {
    let mut h = HeaderMap::with_capacity(2);
    h.insert(header::LOCATION, location);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
    Reply {
        header: response(StatusCode::MOVED_PERMANENTLY, h),
        body: ReplyBody::Empty,
    }
}

/// A short JSON error, e.g. `{"error":"not_found","status":404}`; no body for HEAD.
fn error(status: StatusCode, head: bool) -> Reply {
    error_with(status, head, HeaderMap::with_capacity(4))
}

/// [`error`] with more headers.
fn error_with(status: StatusCode, head: bool, mut h: HeaderMap) -> Reply {
    let body = crate::answers::error_body(status.as_u16(), None);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        h.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    Reply {
        header: response(status, h),
        body: if head {
            ReplyBody::Empty
        } else {
            ReplyBody::Full(body)
        },
    }
}

/// A header without case tracking (lower-case names on HTTP/1 except the
/// common ones Pingora title-cases; HTTP/2 has no case anyway).
fn response(status: StatusCode, headers: HeaderMap) -> ResponseHeader {
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.headers = headers;
    ResponseHeader::from(parts)
}

/// Writes `reply` (header already decorated by the caller) to the client.
/// For HEAD only the header goes out, with the GET's `Content-Length`.
pub async fn write_reply(session: &mut Session, reply: Reply) -> pingora::Result<()> {
    let head = session.req_header().method == Method::HEAD;
    let Reply { header, body } = reply;
    let body = if head { ReplyBody::Empty } else { body };
    match body {
        ReplyBody::Empty => {
            session
                .write_response_header(Box::new(header), true)
                .await?;
            session.write_response_body(None, true).await
        }
        ReplyBody::Full(bytes) => {
            session
                .write_response_header(Box::new(header), bytes.is_empty())
                .await?;
            session.write_response_body(Some(bytes), true).await
        }
        ReplyBody::File {
            file,
            offset,
            remaining,
        } => {
            session
                .write_response_header(Box::new(header), remaining == 0)
                .await?;
            let mut chunks = FileChunks::new(file, offset, remaining);
            if remaining == 0 {
                return session.write_response_body(None, true).await;
            }
            while let Some(chunk) = chunks.next().await.map_err(|e| {
                pingora::Error::because(pingora::ErrorType::ReadError, "reading a static file", e)
            })? {
                session
                    .write_response_body(Some(chunk), chunks.done())
                    .await?;
            }
            Ok(())
        }
    }
}

/// Reads a byte range of a file in [`STREAM_CHUNK_SIZE`] chunks on the
/// blocking pool, one chunk ahead of the caller.
struct FileChunks {
    file: Arc<File>,
    pos: u64,
    end: u64,
    ahead: Option<JoinHandle<io::Result<Bytes>>>,
}

impl FileChunks {
    fn new(file: File, offset: u64, len: u64) -> FileChunks {
        FileChunks {
            file: Arc::new(file),
            pos: offset,
            end: offset.saturating_add(len),
            ahead: None,
        }
    }

    /// Whether every byte of the range was returned.
    fn done(&self) -> bool {
        self.pos >= self.end
    }

    /// The next chunk; `None` at the end; an error if the file got shorter.
    async fn next(&mut self) -> io::Result<Option<Bytes>> {
        let Some(task) = self.ahead.take().or_else(|| self.read_at(self.pos)) else {
            return Ok(None);
        };
        let chunk = task.await.map_err(io::Error::other)??;
        if chunk.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file got shorter while being sent",
            ));
        }
        self.pos += chunk.len() as u64;
        self.ahead = self.read_at(self.pos);
        Ok(Some(chunk))
    }

    fn read_at(&self, pos: u64) -> Option<JoinHandle<io::Result<Bytes>>> {
        if pos >= self.end {
            return None;
        }
        let want =
            usize::try_from(self.end - pos).map_or(STREAM_CHUNK_SIZE, |n| n.min(STREAM_CHUNK_SIZE));
        let file = Arc::clone(&self.file);
        Some(tokio::task::spawn_blocking(move || {
            let mut buf = vec![0; want];
            let n = loop {
                match file.read_at(&mut buf, pos) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
            buf.truncate(n);
            Ok(Bytes::from(buf))
        }))
    }
}
