//! Scenarios: a real site in a temp directory, answered through `Site::respond`
//! (and `write_reply` over an in-memory HTTP/1 connection). The fixture and
//! helpers are here; the scenarios are split by concern.

mod cache;
mod compression;
mod resolution;
mod streaming;
mod validators;

pub(super) use std::os::unix::fs::symlink;
pub(super) use std::path::Path;
pub(super) use std::time::{Duration, Instant, UNIX_EPOCH};

pub(super) use http::header::{HeaderMap, HeaderName, HeaderValue};
pub(super) use http::{Method, StatusCode};
pub(super) use tempfile::TempDir;
pub(super) use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(super) use super::*;
pub(super) use crate::config::CacheRule;

pub(super) const INDEX: &str = "<!doctype html><title>spa</title>";
pub(super) const APP_JS: &str = "console.log('app');\n";
pub(super) const APP_JS_BR: &[u8] = b"BROTLI-BYTES-OF-APP-JS";
pub(super) const APP_JS_GZ: &[u8] = b"\x1f\x8bGZIP-BYTES-OF-APP-JS";
pub(super) const DOCS_INDEX: &str = "<h1>docs</h1>";
pub(super) const SECRET: &str = "TOP-SECRET-d41d8cd9";
pub(super) const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Upper bound when waiting for the file watcher.
pub(super) const WAIT: Duration = Duration::from_secs(10);

/// `{tmp}/secret.txt` outside the root `{tmp}/site`, and the site itself.
pub(super) struct Fixture {
    dir: TempDir,
}

impl Fixture {
    pub(super) fn new() -> Fixture {
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir(f.root()).unwrap();
        f.write("../secret.txt", SECRET);
        f.write("index.html", INDEX);
        f.write("assets/app.js", APP_JS);
        f.write("assets/app.js.br", APP_JS_BR);
        f.write("assets/app.js.gz", APP_JS_GZ);
        f.write("assets/style.css", "body{}");
        f.write("data.json", "{}");
        f.write("logo.png", b"\x89PNG");
        f.write("readme.txt", "hello");
        f.write("LICENSE", "MIT");
        f.write("docs/index.html", DOCS_INDEX);
        f.write("docs/guide.txt", "guide");
        std::fs::create_dir(f.root().join("empty")).unwrap();
        f
    }

    pub(super) fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("site")
    }

    pub(super) fn write(&self, rel: &str, content: impl AsRef<[u8]>) {
        let path = self.root().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, content).unwrap();
    }

    /// Rewrites a file and moves its mtime on, as a rewrite within the
    /// file system's timestamp granularity would otherwise keep it.
    pub(super) fn rewrite(&self, rel: &str, content: impl AsRef<[u8]>) {
        let path = self.root().join(rel);
        let before = std::fs::metadata(&path).and_then(|m| m.modified()).unwrap();
        std::fs::write(&path, content).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(before + Duration::from_millis(1500))
            .unwrap();
    }

    pub(super) fn link(&self, target: impl AsRef<Path>, rel: &str) {
        symlink(target, self.root().join(rel)).unwrap();
    }

    pub(super) fn config(&self, spa_fallback: bool) -> StaticSite {
        StaticSite {
            name: "test".into(),
            root: self.root().canonicalize().unwrap(),
            index: "index.html".into(),
            spa_fallback,
            cache_rules: vec![CacheRule {
                extensions: vec!["js".into(), "css".into(), "png".into()],
                cache_control: HeaderValue::from_static(IMMUTABLE),
            }],
            default_cache_control: HeaderValue::from_static("no-cache"),
        }
    }

    pub(super) fn site(&self) -> Site {
        Site::new(self.config(false))
    }

    pub(super) fn spa(&self) -> Site {
        Site::new(self.config(true))
    }
}

pub(super) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        h.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    h
}

pub(super) async fn get(site: &Site, path: &str, pairs: &[(&str, &str)]) -> Reply {
    site.respond(&Method::GET, path, &headers(pairs)).await
}

pub(super) fn hdr(reply: &Reply, name: &str) -> Option<String> {
    reply
        .header
        .headers
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// The body, streamed through [`FileChunks`] when it is a file.
pub(super) async fn body(reply: Reply) -> Vec<u8> {
    match reply.body {
        ReplyBody::Empty => Vec::new(),
        ReplyBody::Full(b) => b.to_vec(),
        ReplyBody::File {
            file,
            offset,
            remaining,
            encoder,
        } => {
            let mut chunks = FileChunks::new(file, offset, remaining, encoder);
            let mut out = Vec::new();
            while let Some(chunk) = chunks.next().await.unwrap() {
                assert!(chunk.len() <= STREAM_CHUNK_SIZE);
                out.extend_from_slice(&chunk);
            }
            assert!(chunks.done());
            out
        }
    }
}

pub(super) async fn text(site: &Site, path: &str) -> (StatusCode, String) {
    let reply = get(site, path, &[]).await;
    let status = reply.status();
    (
        status,
        String::from_utf8_lossy(&body(reply).await).into_owned(),
    )
}

pub(super) async fn wait_until_watching(site: &Site) {
    get(site, "/", &[]).await;
    let start = Instant::now();
    while !site.watching() {
        assert!(start.elapsed() < WAIT, "the watcher did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `path` until its body is `want` (bounded by [`WAIT`]).
pub(super) async fn eventually(site: &Site, path: &str, want_status: StatusCode, want: &str) {
    let start = Instant::now();
    loop {
        let (status, got) = text(site, path).await;
        if status == want_status && got == want {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "{path}: still {status} {got:?}, want {want_status} {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
