//! Scenarios: a real site in a temp directory, answered through `Site::respond`
//! (and `write_reply` over an in-memory HTTP/1 connection).

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant, UNIX_EPOCH};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::config::CacheRule;

const INDEX: &str = "<!doctype html><title>spa</title>";
const APP_JS: &str = "console.log('app');\n";
const APP_JS_BR: &[u8] = b"BROTLI-BYTES-OF-APP-JS";
const APP_JS_GZ: &[u8] = b"\x1f\x8bGZIP-BYTES-OF-APP-JS";
const DOCS_INDEX: &str = "<h1>docs</h1>";
const SECRET: &str = "TOP-SECRET-d41d8cd9";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Upper bound when waiting for the file watcher.
const WAIT: Duration = Duration::from_secs(10);

/// `{tmp}/secret.txt` outside the root `{tmp}/site`, and the site itself.
struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new() -> Fixture {
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

    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("site")
    }

    fn write(&self, rel: &str, content: impl AsRef<[u8]>) {
        let path = self.root().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, content).unwrap();
    }

    /// Rewrites a file and moves its mtime on, as a rewrite within the
    /// file system's timestamp granularity would otherwise keep it.
    fn rewrite(&self, rel: &str, content: impl AsRef<[u8]>) {
        let path = self.root().join(rel);
        let before = std::fs::metadata(&path).and_then(|m| m.modified()).unwrap();
        std::fs::write(&path, content).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(before + Duration::from_millis(1500))
            .unwrap();
    }

    fn link(&self, target: impl AsRef<Path>, rel: &str) {
        symlink(target, self.root().join(rel)).unwrap();
    }

    fn config(&self, spa_fallback: bool) -> StaticSite {
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

    fn site(&self) -> Site {
        Site::new(self.config(false))
    }

    fn spa(&self) -> Site {
        Site::new(self.config(true))
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        h.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    h
}

async fn get(site: &Site, path: &str, pairs: &[(&str, &str)]) -> Reply {
    site.respond(&Method::GET, path, &headers(pairs)).await
}

fn hdr(reply: &Reply, name: &str) -> Option<String> {
    reply
        .header
        .headers
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// The body, streamed through [`FileChunks`] when it is a file.
async fn body(reply: Reply) -> Vec<u8> {
    match reply.body {
        ReplyBody::Empty => Vec::new(),
        ReplyBody::Full(b) => b.to_vec(),
        ReplyBody::File {
            file,
            offset,
            remaining,
        } => {
            let mut chunks = FileChunks::new(file, offset, remaining);
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

async fn text(site: &Site, path: &str) -> (StatusCode, String) {
    let reply = get(site, path, &[]).await;
    let status = reply.status();
    (
        status,
        String::from_utf8_lossy(&body(reply).await).into_owned(),
    )
}

async fn wait_until_watching(site: &Site) {
    get(site, "/", &[]).await;
    let start = Instant::now();
    while !site.watching() {
        assert!(start.elapsed() < WAIT, "the watcher did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `path` until its body is `want` (bounded by [`WAIT`]).
async fn eventually(site: &Site, path: &str, want_status: StatusCode, want: &str) {
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

#[tokio::test]
async fn content_type_length_and_validators() {
    let f = Fixture::new();
    let site = f.site();
    for (path, ct) in [
        ("/index.html", "text/html; charset=utf-8"),
        ("/assets/app.js", "application/javascript; charset=utf-8"),
        ("/assets/style.css", "text/css; charset=utf-8"),
        ("/data.json", "application/json; charset=utf-8"),
        ("/readme.txt", "text/plain; charset=utf-8"),
        ("/logo.png", "image/png"),
        ("/LICENSE", "application/octet-stream"),
    ] {
        let r = get(&site, path, &[]).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(hdr(&r, "content-type").as_deref(), Some(ct), "{path}");
        assert_eq!(hdr(&r, "accept-ranges").as_deref(), Some("bytes"));
        let etag = hdr(&r, "etag").unwrap();
        assert!(
            etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"),
            "{etag}"
        );
        let modified = hdr(&r, "last-modified").unwrap();
        assert!(httpdate::parse_http_date(&modified).is_ok(), "{modified}");
        let len: usize = hdr(&r, "content-length").unwrap().parse().unwrap();
        assert_eq!(body(r).await.len(), len, "{path}");
    }
    let r = get(&site, "/assets/app.js", &[]).await;
    assert_eq!(body(r).await, APP_JS.as_bytes());
}

#[tokio::test]
async fn etag_changes_with_the_file_and_differs_per_coding() {
    let f = Fixture::new();
    let site = Site::without_watcher(f.config(false));
    let plain = hdr(&get(&site, "/readme.txt", &[]).await, "etag").unwrap();
    f.rewrite("readme.txt", "hellO");
    let after = hdr(&get(&site, "/readme.txt", &[]).await, "etag").unwrap();
    assert_ne!(plain, after, "same length, rewritten: the ETag must change");
    let identity = hdr(&get(&site, "/assets/app.js", &[]).await, "etag").unwrap();
    let br = hdr(
        &get(&site, "/assets/app.js", &[("accept-encoding", "br")]).await,
        "etag",
    )
    .unwrap();
    assert_ne!(identity, br);
}

#[tokio::test]
async fn if_none_match_gives_304() {
    let f = Fixture::new();
    let site = f.site();
    let first = get(&site, "/assets/app.js", &[]).await;
    let etag = hdr(&first, "etag").unwrap();
    let weak = format!("W/{etag}");
    let list = format!("\"nope\", {etag}");
    for value in [etag.as_str(), weak.as_str(), list.as_str(), "*"] {
        let r = get(&site, "/assets/app.js", &[("if-none-match", value)]).await;
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{value}");
        assert_eq!(hdr(&r, "etag").as_deref(), Some(etag.as_str()));
        assert!(hdr(&r, "last-modified").is_some());
        assert_eq!(hdr(&r, "cache-control").as_deref(), Some(IMMUTABLE));
        assert_eq!(hdr(&r, "vary").as_deref(), Some("Accept-Encoding"));
        assert!(hdr(&r, "content-length").is_none());
        assert!(matches!(r.body, ReplyBody::Empty));
    }
    let r = get(&site, "/assets/app.js", &[("if-none-match", "\"nope\"")]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body(r).await, APP_JS.as_bytes());
}

#[tokio::test]
async fn if_modified_since_gives_304_only_without_if_none_match() {
    let f = Fixture::new();
    let site = f.site();
    let modified = hdr(&get(&site, "/readme.txt", &[]).await, "last-modified").unwrap();
    let r = get(&site, "/readme.txt", &[("if-modified-since", &modified)]).await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert!(hdr(&r, "etag").is_some());
    let r = get(
        &site,
        "/readme.txt",
        &[
            ("if-modified-since", &modified),
            ("if-none-match", "\"other\""),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK, "If-None-Match takes precedence");
    let r = get(
        &site,
        "/readme.txt",
        &[("if-modified-since", "Mon, 01 Jan 2001 00:00:00 GMT")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body(r).await, b"hello");
}

#[tokio::test]
async fn if_match_mismatch_gives_412() {
    let f = Fixture::new();
    let site = f.site();
    let r = get(&site, "/readme.txt", &[("if-match", "\"old\"")]).await;
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
}

#[tokio::test]
async fn ranges() {
    let f = Fixture::new();
    let site = f.site();
    let len = APP_JS.len();
    let cases = [
        ("bytes=0-6", 0, 6),
        ("bytes=8-", 8, len - 1),
        ("bytes=-3", len - 3, len - 1),
        ("bytes=5-5", 5, 5),
        ("bytes=2-100000", 2, len - 1),
    ];
    for (range, start, end) in cases {
        let r = get(&site, "/assets/app.js", &[("range", range)]).await;
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            hdr(&r, "content-range"),
            Some(format!("bytes {start}-{end}/{len}")),
            "{range}"
        );
        assert_eq!(
            hdr(&r, "content-length"),
            Some((end - start + 1).to_string()),
            "{range}"
        );
        assert_eq!(body(r).await, &APP_JS.as_bytes()[start..=end], "{range}");
    }
    for range in [
        format!("bytes={len}-"),
        "bytes=-0".to_string(),
        format!("bytes={}-{}", len + 5, len + 9),
    ] {
        let r = get(&site, "/assets/app.js", &[("range", &range)]).await;
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(hdr(&r, "content-range"), Some(format!("bytes */{len}")));
    }
    let r = get(&site, "/assets/app.js", &[("range", "bytes=0-1,4-5")]).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "several ranges get the whole file"
    );
    assert_eq!(body(r).await, APP_JS.as_bytes());
    let r = get(&site, "/assets/app.js", &[("range", "bytes=oops")]).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn if_range_honours_the_range_only_when_it_matches() {
    let f = Fixture::new();
    let site = f.site();
    let first = get(&site, "/readme.txt", &[]).await;
    let etag = hdr(&first, "etag").unwrap();
    let modified = hdr(&first, "last-modified").unwrap();
    for validator in [etag.as_str(), modified.as_str()] {
        let r = get(
            &site,
            "/readme.txt",
            &[("range", "bytes=1-2"), ("if-range", validator)],
        )
        .await;
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{validator}");
        assert_eq!(body(r).await, b"el");
    }
    for validator in ["\"stale\"", "Mon, 01 Jan 2001 00:00:00 GMT"] {
        let r = get(
            &site,
            "/readme.txt",
            &[("range", "bytes=1-2"), ("if-range", validator)],
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK, "{validator}");
        assert_eq!(body(r).await, b"hello");
    }
}

#[tokio::test]
async fn head_is_get_without_body() {
    let f = Fixture::new();
    let site = f.site();
    let g = get(&site, "/assets/app.js", &[]).await;
    let h = site
        .respond(&Method::HEAD, "/assets/app.js", &HeaderMap::new())
        .await;
    assert_eq!(h.status(), StatusCode::OK);
    assert_eq!(h.header.headers, g.header.headers);
    assert_eq!(hdr(&h, "content-length"), Some(APP_JS.len().to_string()));
    assert!(matches!(h.body, ReplyBody::Empty));
    let missing = site
        .respond(&Method::HEAD, "/nope.txt", &HeaderMap::new())
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(matches!(missing.body, ReplyBody::Empty));
}

#[tokio::test]
async fn other_methods_get_405_with_allow() {
    let f = Fixture::new();
    let site = f.site();
    for method in [
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
        Method::PATCH,
    ] {
        let r = site
            .respond(&method, "/index.html", &HeaderMap::new())
            .await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(hdr(&r, "allow").as_deref(), Some("GET, HEAD"));
        assert_eq!(hdr(&r, "content-type").as_deref(), Some("application/json"));
        assert_eq!(
            body(r).await,
            br#"{"error":"method_not_allowed","status":405}"#
        );
    }
}

#[tokio::test]
async fn errors_are_short_json() {
    let f = Fixture::new();
    let site = f.site();
    let r = get(&site, "/missing.txt", &[]).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(hdr(&r, "content-type").as_deref(), Some("application/json"));
    assert_eq!(hdr(&r, "content-length").as_deref(), Some("34"));
    assert_eq!(body(r).await, br#"{"error":"not_found","status":404}"#);
    let r = get(&site, "/../x", &[]).await;
    assert_eq!(body(r).await, br#"{"error":"bad_request","status":400}"#);
}

#[tokio::test]
async fn precompressed_siblings_follow_accept_encoding() {
    let f = Fixture::new();
    let site = f.site();
    let cases: [(&str, Option<&str>, &[u8]); 7] = [
        ("gzip, deflate, br", Some("br"), APP_JS_BR),
        ("br;q=0.5, gzip", Some("gzip"), APP_JS_GZ),
        ("br;q=0, gzip", Some("gzip"), APP_JS_GZ),
        ("gzip", Some("gzip"), APP_JS_GZ),
        ("br;q=0, gzip;q=0", None, APP_JS.as_bytes()),
        ("identity", None, APP_JS.as_bytes()),
        ("", None, APP_JS.as_bytes()),
    ];
    for (accept, coding, want) in cases {
        let r = get(&site, "/assets/app.js", &[("accept-encoding", accept)]).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(hdr(&r, "content-encoding").as_deref(), coding, "{accept:?}");
        assert_eq!(
            hdr(&r, "content-type").as_deref(),
            Some("application/javascript; charset=utf-8")
        );
        assert_eq!(
            hdr(&r, "vary").as_deref(),
            Some("Accept-Encoding"),
            "{accept:?}"
        );
        assert_eq!(hdr(&r, "cache-control").as_deref(), Some(IMMUTABLE));
        assert_eq!(hdr(&r, "content-length"), Some(want.len().to_string()));
        assert_eq!(body(r).await, want, "{accept:?}");
    }
    // No sibling: no Vary.
    let r = get(
        &site,
        "/assets/style.css",
        &[("accept-encoding", "br, gzip")],
    )
    .await;
    assert!(hdr(&r, "vary").is_none());
    assert!(hdr(&r, "content-encoding").is_none());
    // A range of the compressed variant is a range of the compressed bytes.
    let r = get(
        &site,
        "/assets/app.js",
        &[("accept-encoding", "br"), ("range", "bytes=0-5")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        hdr(&r, "content-range"),
        Some(format!("bytes 0-5/{}", APP_JS_BR.len()))
    );
    assert_eq!(body(r).await, &APP_JS_BR[..6]);
    // 304 against the compressed variant's ETag.
    let etag = hdr(
        &get(&site, "/assets/app.js", &[("accept-encoding", "br")]).await,
        "etag",
    )
    .unwrap();
    let r = get(
        &site,
        "/assets/app.js",
        &[("accept-encoding", "br"), ("if-none-match", &etag)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = get(&site, "/assets/app.js", &[("if-none-match", &etag)]).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the identity variant has its own ETag"
    );
}

#[tokio::test]
async fn cache_control_follows_rules_but_index_is_no_cache() {
    let f = Fixture::new();
    f.write("assets/index.html", "x");
    let site = f.spa();
    for (path, cc) in [
        ("/", "no-cache"),
        ("/index.html", "no-cache"),
        ("/docs/", "no-cache"),
        ("/assets/app.js", IMMUTABLE),
        ("/assets/style.css", IMMUTABLE),
        ("/logo.png", IMMUTABLE),
        ("/readme.txt", "no-cache"),
        ("/some/spa/route", "no-cache"),
    ] {
        let r = get(&site, path, &[]).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(hdr(&r, "cache-control").as_deref(), Some(cc), "{path}");
    }
}

#[tokio::test]
async fn spa_fallback_serves_index_for_routes_but_not_for_assets() {
    let f = Fixture::new();
    let spa = f.spa();
    for route in ["/dashboard", "/dashboard/settings", "/users/42/", "/empty/"] {
        let r = get(&spa, route, &[]).await;
        assert_eq!(r.status(), StatusCode::OK, "{route}");
        assert_eq!(
            hdr(&r, "content-type").as_deref(),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(hdr(&r, "cache-control").as_deref(), Some("no-cache"));
        assert_eq!(body(r).await, INDEX.as_bytes(), "{route}");
    }
    for missing in [
        "/assets/missing.js",
        "/missing.css",
        "/dashboard/app.v2",
        "/.env",
    ] {
        let (status, got) = text(&spa, missing).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
        assert_ne!(got, INDEX);
    }
    let plain = f.site();
    assert_eq!(text(&plain, "/dashboard").await.0, StatusCode::NOT_FOUND);
    assert_eq!(text(&plain, "/empty/").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn directories() {
    let f = Fixture::new();
    let site = f.site();
    let r = get(&site, "/docs", &[]).await;
    assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(hdr(&r, "location").as_deref(), Some("./docs/"));
    assert_eq!(hdr(&r, "content-length").as_deref(), Some("0"));
    assert_eq!(
        text(&site, "/docs/").await,
        (StatusCode::OK, DOCS_INDEX.to_string())
    );
    assert_eq!(
        text(&site, "/docs/guide.txt").await,
        (StatusCode::OK, "guide".to_string())
    );
    assert_eq!(text(&site, "/").await, (StatusCode::OK, INDEX.to_string()));
    assert_eq!(
        text(&site, "//docs//").await,
        (StatusCode::OK, DOCS_INDEX.to_string())
    );
    f.write("a b/index.html", "spaced");
    let r = get(&site, "/a%20b", &[]).await;
    assert_eq!(hdr(&r, "location").as_deref(), Some("./a%20b/"));
}

#[tokio::test]
async fn hidden_files_are_not_found_except_well_known() {
    let f = Fixture::new();
    f.write(".env", SECRET);
    f.write(".git/config", SECRET);
    f.write(".well-known/security.txt", "Contact: x");
    let site = f.spa();
    for path in ["/.env", "/.git/config", "/%2egit/config", "/.git/"] {
        let (status, got) = text(&site, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(!got.contains(SECRET));
    }
    assert_eq!(
        text(&site, "/.well-known/security.txt").await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn traversal_forms_are_refused() {
    let f = Fixture::new();
    let site = f.spa();
    for path in [
        "/../secret.txt",
        "/../etc/passwd",
        "/assets/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/.%2e/secret.txt",
        "/%2e./secret.txt",
        "/a/%2f..",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/a%5c..%5cb",
        "/a%5C..%5Csecret.txt",
        "/a\\b",
        "/..\\secret.txt",
        "/%00",
        "/index.html%00.js",
        "/%c0%ae%c0%ae/secret.txt",
        "relative.txt",
        "",
    ] {
        let (status, got) = text(&site, path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert!(!got.contains(SECRET), "{path}");
    }
}

#[tokio::test]
async fn symlinks_are_served_only_inside_the_root() {
    let f = Fixture::new();
    let secret = f.dir.path().join("secret.txt");
    f.link("../secret.txt", "rel-out.txt");
    f.link(&secret, "abs-out.txt");
    f.link("..", "escape");
    f.link("readme.txt", "alias.txt");
    f.link("docs", "manual");
    // A sibling leading out must not be used either.
    f.write("page.html", "<p>page</p>");
    f.link(&secret, "page.html.gz");
    let site = f.site();
    for path in [
        "/rel-out.txt",
        "/abs-out.txt",
        "/escape/secret.txt",
        "/escape",
        "/escape/",
    ] {
        let (status, got) = text(&site, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(!got.contains(SECRET), "{path}");
    }
    assert_eq!(
        text(&site, "/alias.txt").await,
        (StatusCode::OK, "hello".to_string())
    );
    assert_eq!(
        text(&site, "/manual/guide.txt").await,
        (StatusCode::OK, "guide".to_string())
    );
    let r = get(&site, "/page.html", &[("accept-encoding", "gzip")]).await;
    assert!(hdr(&r, "content-encoding").is_none());
    assert!(hdr(&r, "vary").is_none());
    assert_eq!(body(r).await, b"<p>page</p>");
}

#[tokio::test]
async fn spa_index_leading_out_is_not_served() {
    let f = Fixture::new();
    std::fs::remove_file(f.root().join("index.html")).unwrap();
    f.link(f.dir.path().join("secret.txt"), "index.html");
    let site = f.spa();
    for path in ["/", "/dashboard", "/index.html"] {
        let (status, got) = text(&site, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(!got.contains(SECRET));
    }
}

#[tokio::test]
async fn a_fifo_is_not_opened() {
    let f = Fixture::new();
    let fifo = f.root().join("pipe.txt");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let site = f.site();
    let r = tokio::time::timeout(Duration::from_secs(5), get(&site, "/pipe.txt", &[])).await;
    assert_eq!(
        r.expect("a FIFO must not block").status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn odd_names_and_times() {
    let f = Fixture::new();
    f.write("café.txt", "accent");
    f.write("old.txt", "old");
    let file = std::fs::File::options()
        .write(true)
        .open(f.root().join("old.txt"))
        .unwrap();
    file.set_modified(UNIX_EPOCH - Duration::from_secs(86_400))
        .unwrap();
    let site = f.site();
    assert_eq!(
        text(&site, "/caf%C3%A9.txt").await,
        (StatusCode::OK, "accent".to_string())
    );
    let r = get(&site, "/old.txt", &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        hdr(&r, "last-modified").as_deref(),
        Some("Thu, 01 Jan 1970 00:00:00 GMT")
    );
}

#[tokio::test]
async fn small_files_are_served_from_memory() {
    let f = Fixture::new();
    let site = f.site();
    wait_until_watching(&site).await;
    let ptr = |r: &Reply| match &r.body {
        ReplyBody::Full(b) => b.as_ptr(),
        other => panic!("not from memory: {other:?}"),
    };
    let a = get(&site, "/assets/app.js", &[]).await;
    let b = get(&site, "/assets/app.js", &[]).await;
    assert_eq!(
        ptr(&a),
        ptr(&b),
        "the second answer reuses the cached bytes"
    );
    assert!(site.cache().len() >= 1);
}

#[tokio::test]
async fn a_rewritten_file_is_served_fresh_with_the_watcher() {
    let f = Fixture::new();
    let site = f.spa();
    wait_until_watching(&site).await;
    assert_eq!(text(&site, "/readme.txt").await.1, "hello");
    assert_eq!(text(&site, "/readme.txt").await.1, "hello");
    assert!(site.cache().len() >= 1, "the answer is cached");
    f.write("readme.txt", "HELLO");
    eventually(&site, "/readme.txt", StatusCode::OK, "HELLO").await;
    f.write("readme.txt", "a longer text");
    eventually(&site, "/readme.txt", StatusCode::OK, "a longer text").await;
    // A new file hides the SPA fallback for its path; a deleted one is gone.
    assert_eq!(text(&site, "/later").await.1, INDEX);
    f.write("later", "now a file");
    eventually(&site, "/later", StatusCode::OK, "now a file").await;
    std::fs::remove_file(f.root().join("docs/guide.txt")).unwrap();
    eventually(
        &site,
        "/docs/guide.txt",
        StatusCode::NOT_FOUND,
        r#"{"error":"not_found","status":404}"#,
    )
    .await;
    // Replaced by rename, as deploy tools do, in a new subdirectory.
    f.write("new/dir/x.txt", "one");
    eventually(&site, "/new/dir/x.txt", StatusCode::OK, "one").await;
    f.write("new/dir/x.tmp", "two");
    std::fs::rename(
        f.root().join("new/dir/x.tmp"),
        f.root().join("new/dir/x.txt"),
    )
    .unwrap();
    eventually(&site, "/new/dir/x.txt", StatusCode::OK, "two").await;
}

#[tokio::test]
async fn without_the_watcher_every_hit_is_revalidated() {
    let f = Fixture::new();
    let site = Site::without_watcher(f.config(true));
    assert!(!site.watching());
    let a = get(&site, "/readme.txt", &[]).await;
    let b = get(&site, "/readme.txt", &[]).await;
    match (&a.body, &b.body) {
        (ReplyBody::Full(x), ReplyBody::Full(y)) => {
            assert_eq!(x.as_ptr(), y.as_ptr(), "unchanged bytes are reused")
        }
        other => panic!("{other:?}"),
    }
    f.rewrite("readme.txt", "HELLO");
    assert_eq!(
        text(&site, "/readme.txt").await.1,
        "HELLO",
        "no wait needed"
    );
    f.write("dashboard", "a file now");
    assert_eq!(text(&site, "/dashboard").await.1, "a file now");
}

#[tokio::test]
async fn large_files_stream_from_disk() {
    let f = Fixture::new();
    let big: Vec<u8> = (0..(MAX_CACHED_FILE_SIZE as usize * 3 + 12_345))
        .map(|i| (i % 251) as u8)
        .collect();
    f.write("big.bin", &big);
    let site = f.site();
    let r = get(&site, "/big.bin", &[]).await;
    assert!(matches!(r.body, ReplyBody::File { .. }));
    assert_eq!(hdr(&r, "content-length"), Some(big.len().to_string()));
    assert_eq!(body(r).await, big);
    let r = get(&site, "/big.bin", &[("range", "bytes=100000-300000")]).await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(body(r).await, &big[100_000..=300_000]);
    let r = site
        .respond(&Method::HEAD, "/big.bin", &HeaderMap::new())
        .await;
    assert!(matches!(r.body, ReplyBody::Empty));
    // Rewritten behind the cache's back: the stale description is noticed
    // when the file is opened again, and the answer is fresh.
    let site = Site::trusting_blindly(f.config(false));
    assert_eq!(body(get(&site, "/big.bin", &[]).await).await, big);
    let other: Vec<u8> = big[1000..].iter().rev().copied().collect();
    f.write("big.bin", &other);
    let r = get(&site, "/big.bin", &[]).await;
    assert_eq!(hdr(&r, "content-length"), Some(other.len().to_string()));
    assert_eq!(body(r).await, other);
}

#[tokio::test]
async fn a_file_cut_short_while_streaming_is_an_error() {
    let f = Fixture::new();
    let size = STREAM_CHUNK_SIZE * 4 + 12_345;
    f.write("big.bin", vec![7u8; size]);
    let file = std::fs::File::open(f.root().join("big.bin")).unwrap();
    let mut chunks = FileChunks::new(file, 0, size as u64);
    assert!(chunks.next().await.unwrap().is_some());
    std::fs::File::options()
        .write(true)
        .open(f.root().join("big.bin"))
        .unwrap()
        .set_len(10)
        .unwrap();
    let mut result = Ok(Some(Bytes::new()));
    while let Ok(Some(_)) = result {
        result = chunks.next().await;
    }
    assert_eq!(
        result.unwrap_err().kind(),
        std::io::ErrorKind::UnexpectedEof
    );
}

/// Sends `request` through a real Pingora HTTP/1 session and returns the raw answer.
async fn over_http1(site: &Site, request: &str) -> Vec<u8> {
    let (mut client, server) = tokio::io::duplex(4 << 20);
    client.write_all(request.as_bytes()).await.unwrap();
    let mut session = Session::new_h1(Box::new(server));
    assert!(session.read_request().await.unwrap());
    let req = session.req_header();
    let reply = site
        .respond(&req.method, req.uri.path(), &req.headers)
        .await;
    write_reply(&mut session, reply).await.unwrap();
    drop(session);
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.unwrap();
    out
}

fn split_response(raw: &[u8]) -> (String, Vec<u8>) {
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    (
        String::from_utf8_lossy(&raw[..at]).to_lowercase(),
        raw[at + 4..].to_vec(),
    )
}

#[tokio::test]
async fn write_reply_sends_bodies_and_nothing_for_head() {
    let f = Fixture::new();
    let big: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
    f.write("big.bin", &big);
    let site = f.site();

    let (head, body) =
        split_response(&over_http1(&site, "GET /readme.txt HTTP/1.1\r\nHost: x\r\n\r\n").await);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-length: 5"), "{head}");
    assert_eq!(body, b"hello");

    let (head, body) =
        split_response(&over_http1(&site, "HEAD /readme.txt HTTP/1.1\r\nHost: x\r\n\r\n").await);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-length: 5"), "{head}");
    assert!(body.is_empty());

    let (head, body) =
        split_response(&over_http1(&site, "HEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\n").await);
    assert!(
        head.contains(&format!("content-length: {}", big.len())),
        "{head}"
    );
    assert!(body.is_empty());

    let (head, body) =
        split_response(&over_http1(&site, "GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n").await);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, big);

    let (head, body) =
        split_response(&over_http1(&site, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").await);
    assert!(head.starts_with("http/1.1 404"), "{head}");
    assert_eq!(body, br#"{"error":"not_found","status":404}"#);
}

#[tokio::test]
async fn garbage_paths_never_leave_the_root_nor_panic() {
    let f = Fixture::new();
    f.link("../secret.txt", "link.txt");
    f.link("..", "escape");
    let site = f.spa();
    let tokens = [
        "/",
        "/",
        "..",
        ".",
        "%2e",
        "%2E",
        "%2f",
        "%5c",
        "\\",
        "%00",
        "%",
        "%c0%af",
        "%ff",
        "a",
        "escape",
        "link.txt",
        "secret.txt",
        "index.html",
        "docs",
        "~",
        "%252e",
        ".%2e",
        "//",
        "é",
        "?",
        "#",
        ";",
    ];
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    for _ in 0..3000 {
        let mut path = String::new();
        for _ in 0..rng.usize(1..10) {
            path.push_str(tokens[rng.usize(..tokens.len())]);
        }
        let (status, got) = text(&site, &path).await;
        assert!(!got.contains(SECRET), "{path:?} leaked the secret");
        assert!(
            [
                StatusCode::OK,
                StatusCode::MOVED_PERMANENTLY,
                StatusCode::BAD_REQUEST,
                StatusCode::NOT_FOUND
            ]
            .contains(&status),
            "{path:?} → {status}"
        );
    }
    // Raw random bytes (as far as a &str allows).
    for _ in 0..2000 {
        let bytes: Vec<u8> = (0..rng.usize(0..40)).map(|_| rng.u8(..)).collect();
        let path = format!("/{}", String::from_utf8_lossy(&bytes));
        let (_, got) = text(&site, &path).await;
        assert!(!got.contains(SECRET), "{path:?} leaked the secret");
    }
}

#[test]
fn new_needs_no_runtime_and_does_no_io() {
    let missing = StaticSite {
        name: "gone".into(),
        root: "/nonexistent/gatehouse-test-root".into(),
        index: "index.html".into(),
        spa_fallback: true,
        cache_rules: vec![],
        default_cache_control: HeaderValue::from_static("no-cache"),
    };
    // No runtime here: building a site must not spawn or block on anything.
    let site = Site::new(missing);
    assert!(
        !std::path::Path::new("/nonexistent/gatehouse-test-root").exists(),
        "building a site must not create its root"
    );
    // The missing root shows only when a request asks for it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(
        rt.block_on(get(&site, "/index.html", &[])).status(),
        StatusCode::NOT_FOUND
    );
}
