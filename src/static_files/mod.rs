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
//!     ├─ coding       .br / .gz sibling, or a compressed variant, by            encoding
//!     │               Accept-Encoding ([compression]: made once per cached
//!     │               file in the background, on the fly until then and for
//!     │               larger files)
//!     ├─ conditions   412, 304                                                  conditional
//!     └─ range        206, 416 (or 200)
//!  write_reply(session, reply)  header, then the bytes (sendfile(2) on plain h1) or the file in chunks
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
//! - `[compression]`: a cached compressible file (type listed, at least
//!   `min_size`) gets its zstd/br/gzip variants made once at the best levels
//!   on the blocking pool (a few at a time, process-wide), started by its
//!   first request; each has its own strong ETag (`"…+br"`) and a
//!   `Content-Length`. A coding with a sibling uses the sibling. Until the
//!   variants exist, and for files above [`MAX_CACHED_FILE_SIZE`], the answer
//!   is compressed per request at the fast levels, with a weak ETag
//!   (`W/"…"`) and no `Content-Length` for streamed files. A request with
//!   `Range` gets the file as it is (the range of the identity bytes).
//!   Answers Gatehouse compresses carry no `Accept-Ranges`; every answer of
//!   a file that may be compressed carries `Vary: Accept-Encoding`, 304s too.
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
//! A cached file of [`SENDFILE_MIN_SIZE`] or more also keeps its descriptor
//! open: over plain HTTP/1.x its bytes go out with sendfile(2), corked with
//! the header (`connection::send_file`), as Nginx's `sendfile on; tcp_nopush
//! on;` does; TLS and h2 write the same bytes from memory.

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
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

pub use cache::{CACHE_CAPACITY_BYTES, CACHE_MAX_ENTRIES};
pub use disk::{MAX_CACHED_FILE_SIZE, SENDFILE_MIN_SIZE};

use cache::{Cache, WatchSlot};
use conditional::{Precondition, Span, Validators};
use disk::{FileSet, Resolved, Variant};
use path::{PathError, SafePath};

use crate::compression::{self, Encoder, Level};
use crate::config::{Algorithm, Compression, StaticSite};
use crate::connection::Sent;
pub use cache_control::cache_control_for;

/// Bytes read from disk at a time when streaming a file larger than
/// [`MAX_CACHED_FILE_SIZE`].
pub const STREAM_CHUNK_SIZE: usize = 256 * 1024;

/// Cached files whose compressed variants are being made at once, at most,
/// process-wide (half the cores): the best levels are slow, and a deploy
/// empties every cache at the same moment.
static GENERATING: LazyLock<Arc<Semaphore>> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    Arc::new(Semaphore::new((cores / 2).max(1)))
});

/// One static site: its config and its cache of files.
pub struct Site {
    config: Arc<StaticSite>,
    cache: Arc<Cache>,
    watch: Arc<WatchSlot>,
    /// `[compression]` of the config the site was built from.
    compression: Option<Arc<Compression>>,
    /// Codings in the server's order of preference (siblings' too).
    preference: Vec<Algorithm>,
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
    /// Set when Gatehouse compressed the body (not for a sibling).
    pub compressed: Option<Compressed>,
    /// The open file whose bytes from this offset are `body`'s (a cached file
    /// of at least [`SENDFILE_MIN_SIZE`]): [`write_reply`] sends them with
    /// sendfile(2) where the connection allows (plain HTTP/1.x).
    pub file: Option<(Arc<File>, u64)>,
}

/// How a reply's body was compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compressed {
    pub algorithm: Algorithm,
    /// From a variant made once (else on the fly for this request).
    pub cached: bool,
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
    /// `remaining` bytes of `file` from `offset`, streamed, compressed by
    /// `encoder` when there is one.
    File {
        file: File,
        offset: u64,
        remaining: u64,
        encoder: Option<Box<Encoder>>,
    },
}

impl Site {
    /// Wraps a validated site. Does no I/O; the file watcher starts with the
    /// first request.
    pub fn new(config: StaticSite) -> Site {
        Site::with_compression(config, None)
    }

    /// [`Site::new`] with the config's `[compression]`.
    pub fn with_compression(config: StaticSite, compression: Option<Arc<Compression>>) -> Site {
        let cache = Arc::new(Cache::new(&config.name));
        let preference = encoding::preference(compression.as_deref().map(|c| &c.algorithms[..]));
        Site {
            config: Arc::new(config),
            cache,
            watch: Arc::new(WatchSlot::default()),
            compression,
            preference,
        }
    }

    /// The site's config.
    pub fn config(&self) -> &StaticSite {
        &self.config
    }

    /// Answers a request. `path` is percent-encoded, without the query, with
    /// the route prefix already stripped when the route says so.
    pub async fn respond(&self, method: &Method, path: &str, headers: &HeaderMap) -> Reply {
        self.respond_compressing(method, path, headers, true).await
    }

    /// [`Site::respond`]; `compress`: whether the route lets `[compression]` apply.
    pub async fn respond_compressing(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        compress: bool,
    ) -> Reply {
        let policy = self.compression.as_deref().filter(|_| compress);
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
            match self.serve(&set, head, headers, policy).await {
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
        let compression = self.compression.clone();
        let key = path.as_str().to_owned();
        let task = tokio::task::spawn_blocking(move || {
            let path = SafePath::from_checked(&key);
            let resolved = disk::resolve(&config, compression.as_deref(), &path, prev.as_deref());
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
    async fn serve(
        &self,
        set: &Arc<FileSet>,
        head: bool,
        headers: &HeaderMap,
        policy: Option<&Compression>,
    ) -> Option<Reply> {
        let compressible = policy.is_some() && set.compressible;
        let varies = set.varies() || compressible;
        // Ranges are of the file itself (or of a sibling, as before).
        let generate = compressible && !headers.contains_key(header::RANGE);
        // Accept-Encoding is only read when there is a choice to make.
        let coding = if set.varies() || generate {
            encoding::choose(headers, &self.preference, |a| {
                set.has_sibling(a) || (generate && set.generated.offers(a.into()))
            })
        } else {
            encoding::Coding::Identity
        };
        // The representation: the file, a sibling, a variant made once
        // (`made`), or the file to compress now (`on_the_fly`).
        let (v, made, on_the_fly) = match coding.algorithm() {
            Some(a) if !set.has_sibling(a) => match set.generated.get(coding) {
                Some(variant) => (variant, Some(a), None),
                None => {
                    self.start_generating(set);
                    (&set.identity, None, Some(a))
                }
            },
            _ => (set.variant(coding), None, None),
        };
        let validators = Validators {
            etag: v.etag.to_str().unwrap_or_default(),
            modified: v.modified,
        };
        // Compressed here and now: other bytes each time, so a weak tag.
        let etag = match on_the_fly {
            Some(_) => compression::weak_etag(&v.etag),
            None => Some(v.etag.clone()),
        };
        match conditional::preconditions(headers, validators) {
            Precondition::Proceed => {}
            Precondition::NotModified => {
                return Some(not_modified(set, v, etag, varies));
            }
            Precondition::Failed => return Some(error(StatusCode::PRECONDITION_FAILED, head)),
        }
        let (status, start, len) = match conditional::span(headers, v.len, validators) {
            Span::Whole => (StatusCode::OK, 0, v.len),
            Span::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
            Span::Unsatisfiable => return Some(unsatisfiable(v, varies, head)),
        };
        let mut h = representation_headers(set, v, etag, varies);
        if made.is_some() || on_the_fly.is_some() {
            h.remove(header::ACCEPT_RANGES);
        }
        if let Some(a) = on_the_fly {
            h.insert(
                header::CONTENT_ENCODING,
                HeaderValue::from_static(a.token()),
            );
            // Boxed: the common path's future stays as small as it was.
            return Box::pin(self.serve_on_the_fly(set, v, a, head, h)).await;
        }
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        if status == StatusCode::PARTIAL_CONTENT {
            let range = format!("bytes {start}-{}/{}", start + len - 1, v.len);
            if let Ok(value) = HeaderValue::from_str(&range) {
                h.insert(header::CONTENT_RANGE, value);
            }
        }
        let mut file = None;
        let body = if head || len == 0 {
            ReplyBody::Empty
        } else if let Some(data) = &v.data {
            file = v.file.as_ref().map(|f| (Arc::clone(f), start));
            // `len` and `start` lie within `data` (`v.len` is its length).
            ReplyBody::Full(data.slice(start as usize..(start + len) as usize))
        } else {
            ReplyBody::File {
                file: self.reopen(set, v).await?,
                offset: start,
                remaining: len,
                encoder: None,
            }
        };
        let compressed = made.map(|algorithm| Compressed {
            algorithm,
            cached: true,
        });
        Some(Reply {
            header: response(status, h),
            body,
            compressed,
            file,
        })
    }

    /// The whole file compressed for this request with `algorithm` at the
    /// fast level: at once on the blocking pool for a cached file (with its
    /// length), else streamed as it is read (without one). HEAD: no work.
    async fn serve_on_the_fly(
        &self,
        set: &Arc<FileSet>,
        v: &Variant,
        algorithm: Algorithm,
        head: bool,
        mut h: HeaderMap,
    ) -> Option<Reply> {
        let compressed = Some(Compressed {
            algorithm,
            cached: false,
        });
        let body = match &v.data {
            _ if head => ReplyBody::Empty,
            Some(data) => {
                let data = data.clone();
                let task = tokio::task::spawn_blocking(move || {
                    compression::compress(algorithm, Level::Fast, &data)
                });
                match task.await {
                    Ok(Ok(out)) => {
                        h.insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
                        ReplyBody::Full(out)
                    }
                    Ok(Err(e)) => {
                        log::error!("compressing {}: {e}", v.path.display());
                        return Some(error(StatusCode::INTERNAL_SERVER_ERROR, head));
                    }
                    Err(e) => {
                        log::error!("compressing {}: {e}", v.path.display());
                        return Some(error(StatusCode::INTERNAL_SERVER_ERROR, head));
                    }
                }
            }
            None => {
                let encoder = Encoder::new(algorithm, Level::Fast, false)
                    .map_err(|e| log::error!("compressing {}: {e}", v.path.display()))
                    .ok()?;
                ReplyBody::File {
                    file: self.reopen(set, v).await?,
                    offset: 0,
                    remaining: v.len,
                    encoder: Some(Box::new(encoder)),
                }
            }
        };
        if !matches!(body, ReplyBody::Full(_)) {
            // HTTP/1 framing of an answer of unknown length (h2 drops it).
            h.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
        Some(Reply {
            header: response(StatusCode::OK, h),
            body,
            compressed,
            file: None,
        })
    }

    /// Opens a file to stream it; `None` when it changed since it was described.
    async fn reopen(&self, set: &Arc<FileSet>, v: &Variant) -> Option<File> {
        let (set, root, coding) = (Arc::clone(set), self.config.root.clone(), v.coding);
        let opened =
            tokio::task::spawn_blocking(move || disk::reopen(&root, set.variant(coding))).await;
        opened.ok().flatten()
    }

    /// Starts making the compressed variants of a cached file in the
    /// background, unless it is already under way or there is no room now
    /// (a later request tries again).
    fn start_generating(&self, set: &Arc<FileSet>) {
        let Some(policy) = &self.compression else {
            return;
        };
        if set.identity.data.is_none() || !set.generated.claim() {
            return;
        }
        let Ok(permit) = Arc::clone(&GENERATING).try_acquire_owned() else {
            set.generated.unclaim();
            return;
        };
        let (set, policy) = (Arc::clone(set), Arc::clone(policy));
        tokio::task::spawn_blocking(move || {
            set.generate(&policy.algorithms);
            drop(permit);
        });
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
/// `etag` is `v`'s, or its weak form when compressed per request (`None`:
/// the file's tag is no entity tag, so none is sent).
fn representation_headers(
    set: &FileSet,
    v: &Variant,
    etag: Option<HeaderValue>,
    varies: bool,
) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(12);
    h.insert(header::CONTENT_TYPE, set.content_type.clone());
    if let Some(etag) = etag {
        h.insert(header::ETAG, etag);
    }
    h.insert(header::LAST_MODIFIED, v.last_modified.clone());
    h.insert(header::CACHE_CONTROL, set.cache_control.clone());
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if varies {
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

fn not_modified(set: &FileSet, v: &Variant, etag: Option<HeaderValue>, varies: bool) -> Reply {
    let mut h = HeaderMap::with_capacity(4);
    if let Some(etag) = etag {
        h.insert(header::ETAG, etag);
    }
    h.insert(header::LAST_MODIFIED, v.last_modified.clone());
    h.insert(header::CACHE_CONTROL, set.cache_control.clone());
    if varies {
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    Reply {
        header: response(StatusCode::NOT_MODIFIED, h),
        body: ReplyBody::Empty,
        compressed: None,
        file: None,
    }
}

fn unsatisfiable(v: &Variant, varies: bool, head: bool) -> Reply {
    let mut h = HeaderMap::with_capacity(6);
    if let Ok(value) = HeaderValue::from_str(&format!("bytes */{}", v.len)) {
        h.insert(header::CONTENT_RANGE, value);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if varies {
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
        compressed: None,
        file: None,
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
        compressed: None,
        file: None,
    }
}

/// A response head from a header map (names go out in Title-Case on
/// HTTP/1, vendor patch 14; lower-case on HTTP/2).
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
    let Reply {
        header, body, file, ..
    } = reply;
    let body = if head { ReplyBody::Empty } else { body };
    match body {
        ReplyBody::Full(bytes) if file.is_some() && !bytes.is_empty() => {
            session
                .write_response_header(Box::new(header), false)
                .await?;
            if let Some((file, offset)) = file {
                match crate::connection::send_file(session, &file, offset, bytes.len()).await? {
                    Sent::All => return session.write_response_body(None, true).await,
                    Sent::NotHere => {}
                }
            }
            session.write_response_body(Some(bytes), true).await
        }
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
            encoder,
        } => {
            let empty = remaining == 0 && encoder.is_none();
            session
                .write_response_header(Box::new(header), empty)
                .await?;
            let mut chunks = FileChunks::new(file, offset, remaining, encoder);
            if remaining == 0 {
                let last = chunks.finish_empty();
                return session.write_response_body(last, true).await;
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

/// What a read-ahead task gives back: the chunk (compressed when there is an
/// encoder) with the number of file bytes it holds, and the encoder.
type Chunk = (io::Result<(Bytes, u64)>, Option<Box<Encoder>>);

/// Reads a byte range of a file in [`STREAM_CHUNK_SIZE`] chunks on the
/// blocking pool, one chunk ahead of the caller, compressing them there
/// when there is an encoder (it travels with the one task in flight).
struct FileChunks {
    file: Arc<File>,
    pos: u64,
    end: u64,
    ahead: Option<JoinHandle<Chunk>>,
    encoder: Option<Box<Encoder>>,
}

impl FileChunks {
    fn new(file: File, offset: u64, len: u64, encoder: Option<Box<Encoder>>) -> FileChunks {
        FileChunks {
            file: Arc::new(file),
            pos: offset,
            end: offset.saturating_add(len),
            ahead: None,
            encoder,
        }
    }

    /// Whether every byte of the range was returned.
    fn done(&self) -> bool {
        self.pos >= self.end
    }

    /// The body of an empty range: nothing, or an empty compressed stream.
    fn finish_empty(&mut self) -> Option<Bytes> {
        self.encoder.as_mut()?.encode(b"", true).ok()
    }

    /// The next chunk; `None` at the end; an error if the file got shorter.
    /// A compressed chunk may be empty (the encoder holds its bytes).
    async fn next(&mut self) -> io::Result<Option<Bytes>> {
        let Some(task) = self.ahead.take().or_else(|| self.read_at(self.pos)) else {
            return Ok(None);
        };
        let (chunk, encoder) = task.await.map_err(io::Error::other)?;
        self.encoder = encoder;
        let (chunk, read) = chunk?;
        self.pos += read;
        self.ahead = self.read_at(self.pos);
        Ok(Some(chunk))
    }

    fn read_at(&mut self, pos: u64) -> Option<JoinHandle<Chunk>> {
        if pos >= self.end {
            return None;
        }
        let want =
            usize::try_from(self.end - pos).map_or(STREAM_CHUNK_SIZE, |n| n.min(STREAM_CHUNK_SIZE));
        let last = pos + want as u64 >= self.end;
        let file = Arc::clone(&self.file);
        let mut encoder = self.encoder.take();
        Some(tokio::task::spawn_blocking(move || {
            let chunk = read_chunk(&file, pos, want).and_then(|raw| {
                let read = raw.len() as u64;
                match &mut encoder {
                    // A short read is not the last: the file got shorter and
                    // the next read says so.
                    Some(e) => e.encode(&raw, last && read == want as u64),
                    None => Ok(raw),
                }
                .map(|out| (out, read))
            });
            (chunk, encoder)
        }))
    }
}

/// Up to `want` bytes of `file` at `pos`; an error at the end of the file.
fn read_chunk(file: &File, pos: u64, want: usize) -> io::Result<Bytes> {
    let mut buf = vec![0; want];
    let n = loop {
        match file.read_at(&mut buf, pos) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the file got shorter while being sent",
        ));
    }
    buf.truncate(n);
    Ok(Bytes::from(buf))
}
