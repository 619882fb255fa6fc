//! Finding the file for a [`SafePath`] on disk (blocking: run it on the
//! blocking pool) and describing it as a [`FileSet`]: the file and its
//! precompressed siblings, with every header value precomputed.
//!
//! Every file is opened first and its real path (of the open descriptor, from
//! `/proc/self/fd`, else `canonicalize`) must lie inside the root; otherwise it
//! does not exist for us. This holds for the requested file, its `.br`/`.gz`
//! siblings, a directory's index and the SPA fallback alike. Only regular
//! files are opened (a FIFO or device is never touched). Any error reading the
//! disk is "not found".

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderValue;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use super::encoding::Coding;
use super::path::SafePath;
use crate::compression::{self, Level};
use crate::config::{Algorithm, Compression, StaticSite};

/// Files up to this size (bytes) are kept in memory; larger ones stream from disk.
pub const MAX_CACHED_FILE_SIZE: u64 = 2 * 1024 * 1024;

/// Cached files from this size on keep their descriptor open and are sent
/// with sendfile(2) over plain HTTP/1.x (below it, copying costs less than
/// the separate header write it takes). Bounds the descriptors a full cache
/// holds: 64 MiB / 256 KiB = 256 per site.
pub const SENDFILE_MIN_SIZE: u64 = 256 * 1024;

/// Last second an HTTP-date can express (9999-12-31T23:59:59Z), in seconds since the epoch.
const MAX_HTTP_DATE_SECS: u64 = 253_402_300_799;

/// Characters escaped in a redirect's `Location`.
const LOCATION_ESCAPE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// What a request path leads to.
#[derive(Debug, Clone)]
pub(super) enum Resolved {
    File(Arc<FileSet>),
    /// 301 to this relative `Location` (a directory named without its `/`).
    Redirect(HeaderValue),
    NotFound,
}

/// A file to serve, with its precompressed siblings.
#[derive(Debug)]
pub(super) struct FileSet {
    pub(super) identity: Variant,
    pub(super) br: Option<Variant>,
    pub(super) gzip: Option<Variant>,
    /// Of the original file, also for its compressed siblings.
    pub(super) content_type: HeaderValue,
    pub(super) cache_control: HeaderValue,
    /// `[compression]` applies: its type is listed and it is at least `min_size`.
    pub(super) compressible: bool,
    /// Variants Gatehouse compressed (cached files only), shared with the
    /// set that replaces this one while the file does not change.
    pub(super) generated: Arc<Generated>,
}

/// Compressed variants of a cached file, made once in the background.
#[derive(Debug, Default)]
pub(super) struct Generated {
    started: AtomicBool,
    variants: OnceLock<Vec<Variant>>,
}

impl Generated {
    /// Whether `coding` may be sent from here: not made yet (the request
    /// compresses on the fly meanwhile) or made and smaller than the file.
    pub(super) fn offers(&self, coding: Coding) -> bool {
        self.variants
            .get()
            .is_none_or(|vs| vs.iter().any(|v| v.coding == coding))
    }

    /// The variant for `coding`, once made.
    pub(super) fn get(&self, coding: Coding) -> Option<&Variant> {
        self.variants.get()?.iter().find(|v| v.coding == coding)
    }

    /// Claims the work of making the variants: true for the first caller only.
    pub(super) fn claim(&self) -> bool {
        !self.started.load(Ordering::Relaxed) && !self.started.swap(true, Ordering::AcqRel)
    }

    /// Gives the work back unstarted (no room to run it now).
    pub(super) fn unclaim(&self) {
        self.started.store(false, Ordering::Release);
    }
}

impl FileSet {
    pub(super) fn variant(&self, coding: Coding) -> &Variant {
        match coding {
            Coding::Brotli => self.br.as_ref(),
            Coding::Gzip => self.gzip.as_ref(),
            Coding::Identity | Coding::Zstd => None,
        }
        .unwrap_or(&self.identity)
    }

    /// Whether a sibling exists, so responses must carry `Vary: Accept-Encoding`.
    pub(super) fn varies(&self) -> bool {
        self.br.is_some() || self.gzip.is_some()
    }

    /// Whether a precompressed sibling exists for `algorithm`.
    pub(super) fn has_sibling(&self, algorithm: Algorithm) -> bool {
        match algorithm {
            Algorithm::Brotli => self.br.is_some(),
            Algorithm::Gzip => self.gzip.is_some(),
            Algorithm::Zstd => false,
        }
    }

    /// Bytes held in memory. A compressible cached file counts twice: its
    /// compressed variants (a third of it each at most, for text) may join it.
    pub(super) fn memory(&self) -> usize {
        let files: usize = [Some(&self.identity), self.br.as_ref(), self.gzip.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|v| v.data.as_ref())
            .map(Bytes::len)
            .sum();
        let variants = match &self.identity.data {
            Some(data) if self.compressible => data.len(),
            _ => 0,
        };
        files + variants
    }

    /// Makes the compressed variants of a cached file at [`Level::Best`] for
    /// each of `algorithms` without a sibling, keeping those smaller than the
    /// file. Blocking and CPU-heavy: run it on the blocking pool.
    pub(super) fn generate(&self, algorithms: &[Algorithm]) {
        let Some(data) = &self.identity.data else {
            return;
        };
        let mut variants = Vec::new();
        for &algorithm in algorithms {
            if self.has_sibling(algorithm) {
                continue;
            }
            match compression::compress(algorithm, Level::Best, data) {
                Ok(out) if out.len() < data.len() => {
                    if let Some(v) = self.identity.encoded(algorithm, out) {
                        variants.push(v);
                    }
                }
                Ok(_) => {}
                Err(e) => log::warn!(
                    "compressing {} with {}: {e}",
                    self.identity.path.display(),
                    algorithm.token()
                ),
            }
        }
        let _ = self.generated.variants.set(variants);
    }
}

/// One file on disk as it was when looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    dev: u64,
    ino: u64,
}

impl Stamp {
    fn of(m: &Metadata) -> Stamp {
        Stamp {
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// One representation: the file itself or a compressed sibling.
#[derive(Debug)]
pub(super) struct Variant {
    pub(super) coding: Coding,
    /// Real (symlink-free) path, inside the root.
    pub(super) path: PathBuf,
    pub(super) stamp: Stamp,
    /// Length of the representation in bytes.
    pub(super) len: u64,
    /// Strong ETag, `"{mtime secs:x}.{nanos:x}-{len:x}"` plus `-br`/`-gz` for
    /// siblings, or the file's plus `+zstd`/`+br`/`+gzip` for variants
    /// Gatehouse compressed.
    pub(super) etag: HeaderValue,
    pub(super) last_modified: HeaderValue,
    /// Modification time in whole seconds since the epoch (clamped to HTTP-date range).
    pub(super) modified: u64,
    /// The content when at most [`MAX_CACHED_FILE_SIZE`]; else it streams from disk.
    pub(super) data: Option<Bytes>,
    /// The open file `data` was read from, when it holds at least
    /// [`SENDFILE_MIN_SIZE`] bytes: plain HTTP/1.x answers send it with
    /// sendfile(2) instead of copying `data` into the socket.
    pub(super) file: Option<Arc<File>>,
}

impl Variant {
    /// A variant of this (cached) file compressed by Gatehouse: the same
    /// validators but its own strong ETag, `"…+br"`.
    fn encoded(&self, algorithm: Algorithm, data: Bytes) -> Option<Variant> {
        let tag = self.etag.as_bytes();
        let inner = tag.strip_suffix(b"\"")?;
        let mut etag = inner.to_vec();
        etag.push(b'+');
        etag.extend_from_slice(algorithm.token().as_bytes());
        etag.push(b'"');
        Some(Variant {
            coding: Coding::from(algorithm),
            path: self.path.clone(),
            stamp: self.stamp,
            len: data.len() as u64,
            etag: HeaderValue::from_bytes(&etag).ok()?,
            last_modified: self.last_modified.clone(),
            modified: self.modified,
            data: Some(data),
            file: None,
        })
    }
}

/// Resolves `path` below `site.root`. `prev` is the cached answer being
/// revalidated: file contents whose stamp did not change are reused, not read.
/// `compression` decides which files are compressible.
pub(super) fn resolve(
    site: &StaticSite,
    compression: Option<&Compression>,
    path: &SafePath<'_>,
    prev: Option<&FileSet>,
) -> Resolved {
    let set_of = |full: &Path, name: &str| file_set(site, compression, full, name, prev);
    let mut full = site.root.clone();
    full.extend(path.segments());
    let name = path.last().unwrap_or(&site.index);
    if path.is_dir() {
        full.push(&site.index);
        if let Some(set) = set_of(&full, &site.index) {
            return Resolved::File(Arc::new(set));
        }
    } else {
        match std::fs::metadata(&full) {
            Ok(m) if m.is_dir() => {
                if std::fs::canonicalize(&full).is_ok_and(|real| real.starts_with(&site.root)) {
                    let location = format!("./{}/", utf8_percent_encode(name, LOCATION_ESCAPE));
                    if let Ok(value) = HeaderValue::from_str(&location) {
                        return Resolved::Redirect(value);
                    }
                }
                return Resolved::NotFound;
            }
            Ok(m) if m.is_file() => {
                if let Some(set) = set_of(&full, name) {
                    return Resolved::File(Arc::new(set));
                }
            }
            _ => {}
        }
    }
    if site.spa_fallback
        && path
            .last()
            .is_none_or(|last| Path::new(last).extension().is_none())
    {
        let index = site.root.join(&site.index);
        if let Some(set) = set_of(&index, &site.index) {
            return Resolved::File(Arc::new(set));
        }
    }
    Resolved::NotFound
}

/// The file at `path` (served under the name `name`) and its siblings.
fn file_set(
    site: &StaticSite,
    compression: Option<&Compression>,
    path: &Path,
    name: &str,
    prev: Option<&FileSet>,
) -> Option<FileSet> {
    let identity = variant(&site.root, path, Coding::Identity, prev)?;
    let content_type = content_type(name);
    let compressible = compression
        .is_some_and(|c| identity.len >= c.min_size && compression::compressible(c, &content_type));
    // Variants already made of the same file are kept.
    let generated = prev
        .filter(|p| p.identity.stamp == identity.stamp && p.identity.path == identity.path)
        .map(|p| Arc::clone(&p.generated))
        .unwrap_or_default();
    let is_compressed = name.ends_with(".br") || name.ends_with(".gz");
    let sibling = |coding: Coding| {
        if is_compressed {
            return None;
        }
        let mut sibling = path.as_os_str().to_owned();
        sibling.push(coding.suffix());
        variant(&site.root, Path::new(&sibling), coding, prev)
    };
    Some(FileSet {
        br: sibling(Coding::Brotli),
        gzip: sibling(Coding::Gzip),
        identity,
        content_type,
        cache_control: super::cache_control_for(site, name).clone(),
        compressible,
        generated,
    })
}

/// Opens `path` and describes it, or `None` when it is missing, not a regular
/// file, outside `root`, or unreadable.
fn variant(root: &Path, path: &Path, coding: Coding, prev: Option<&FileSet>) -> Option<Variant> {
    let (mut file, meta, real) = open_inside(root, path)?;
    let stamp = Stamp::of(&meta);
    let reusable = prev
        .map(|p| p.variant(coding))
        .filter(|v| v.coding == coding && v.stamp == stamp && v.path == real)
        .and_then(|v| v.data.clone());
    let data = match reusable {
        Some(data) => Some(data),
        None if meta.len() <= MAX_CACHED_FILE_SIZE => {
            let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
            (&mut file)
                .take(MAX_CACHED_FILE_SIZE)
                .read_to_end(&mut buf)
                .ok()?;
            Some(Bytes::from(buf))
        }
        None => None,
    };
    let len = data.as_ref().map_or(meta.len(), |d| d.len() as u64);
    let mtime = clamp_to_http_date(meta.modified().unwrap_or(UNIX_EPOCH));
    let since_epoch = mtime.duration_since(UNIX_EPOCH).unwrap_or_default();
    let tag_suffix = match coding {
        Coding::Identity | Coding::Zstd => "",
        Coding::Brotli => "-br",
        Coding::Gzip => "-gz",
    };
    let etag = format!(
        "\"{:x}.{:x}-{:x}{tag_suffix}\"",
        since_epoch.as_secs(),
        since_epoch.subsec_nanos(),
        len
    );
    Some(Variant {
        coding,
        path: real,
        stamp,
        len,
        etag: HeaderValue::from_str(&etag).ok()?,
        last_modified: HeaderValue::from_str(&httpdate::fmt_http_date(mtime)).ok()?,
        modified: since_epoch.as_secs(),
        // The descriptor that was just read (or, for reused bytes, the same
        // inode: the stamp holds dev and ino); not kept for small files, so
        // that a full cache holds at most CACHE_CAPACITY_BYTES / SENDFILE_MIN_SIZE.
        file: (data.is_some() && len >= SENDFILE_MIN_SIZE).then(|| Arc::new(file)),
        data,
    })
}

/// Opens a regular file whose real path lies inside `root`.
pub(super) fn open_inside(root: &Path, path: &Path) -> Option<(File, Metadata, PathBuf)> {
    // Checked before opening so that a FIFO or device is never opened.
    if !std::fs::metadata(path).ok()?.is_file() {
        return None;
    }
    let file = File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let real = real_path(&file, path)?;
    real.starts_with(root).then_some((file, meta, real))
}

/// Opens a variant again to stream it; `None` when it changed since it was described.
pub(super) fn reopen(root: &Path, v: &Variant) -> Option<File> {
    let (file, meta, real) = open_inside(root, &v.path)?;
    (Stamp::of(&meta) == v.stamp && real == v.path).then_some(file)
}

/// The path the open descriptor refers to, with every symlink resolved.
fn real_path(file: &File, path: &Path) -> Option<PathBuf> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        if let Ok(real) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
            if real.is_absolute() {
                return Some(real);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
    std::fs::canonicalize(path).ok()
}

/// `httpdate` panics outside 1970..=9999; file times can be anything.
pub(super) fn clamp_to_http_date(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) if d.as_secs() > MAX_HTTP_DATE_SECS => {
            UNIX_EPOCH + Duration::from_secs(MAX_HTTP_DATE_SECS)
        }
        Ok(_) => t,
        Err(_) => UNIX_EPOCH,
    }
}

/// `Content-Type` from the file name; text types get `; charset=utf-8`.
pub(super) fn content_type(name: &str) -> HeaderValue {
    let Some(mime) = mime_guess::from_path(name).first() else {
        return HeaderValue::from_static("application/octet-stream");
    };
    // Nginx's mime.types (and so its users' tooling) says application/javascript.
    let essence = match mime.essence_str() {
        "text/javascript" => "application/javascript",
        other => other,
    };
    let text = mime.type_() == mime_guess::mime::TEXT
        || matches!(
            essence,
            "application/javascript"
                | "application/json"
                | "application/manifest+json"
                | "application/xml"
                | "image/svg+xml"
        );
    let value = if text {
        format!("{essence}; charset=utf-8")
    } else {
        essence.to_string()
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(
            content_type("app.js"),
            "application/javascript; charset=utf-8"
        );
        assert_eq!(
            content_type("app.mjs"),
            "application/javascript; charset=utf-8"
        );
        assert_eq!(content_type("data.json"), "application/json; charset=utf-8");
        assert_eq!(content_type("logo.svg"), "image/svg+xml; charset=utf-8");
        assert_eq!(content_type("a.png"), "image/png");
        assert_eq!(content_type("font.woff2"), "font/woff2");
        assert_eq!(content_type("app.wasm"), "application/wasm");
        assert_eq!(content_type("LICENSE"), "application/octet-stream");
        assert_eq!(content_type("x.unknownext"), "application/octet-stream");
    }

    #[test]
    fn dates_outside_http_range_are_clamped() {
        let before = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(clamp_to_http_date(before), UNIX_EPOCH);
        let after = UNIX_EPOCH + Duration::from_secs(MAX_HTTP_DATE_SECS + 1_000_000);
        let clamped = clamp_to_http_date(after);
        assert_eq!(
            httpdate::fmt_http_date(clamped),
            "Fri, 31 Dec 9999 23:59:59 GMT"
        );
    }
}
