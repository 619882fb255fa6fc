//! A static site through the real server over HTTPS: cache rules, conditional
//! and range requests, HEAD, 405, precompressed siblings, SPA fallback, and no
//! way out of the root.

use crate::common;
use common::{raw, tls, Gatehouse};

const INDEX: &str = "<!doctype html><title>spa</title><div id=app></div>";
const APP_JS: &str = "console.log('gatehouse test app');\n";
const CSS: &str = "body { color: rebeccapurple; }\n/* padding padding padding */\n";
/// Stand-in for gzip bytes: the server must send the sibling as is.
const CSS_GZ: &[u8] = b"\x1f\x8bFAKE-GZIP-BODY-FOR-TEST";
const SECRET: &str = "TOP-SECRET-7c1e5d";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

const CONFIG: &str = r#"
[[route]]
prefix = "/"
static = "site"

[static.site]
root = "site"
index = "index.html"
spa_fallback = true

[[static.site.cache]]
extensions = ["js", "css"]
cache_control = "public, max-age=31536000, immutable"
"#;

/// The site in `{dir}/site`, with secrets next to it and symlinks leading out.
async fn start() -> Gatehouse {
    let b = Gatehouse::builder(common::HTTPS)
        .append(CONFIG)
        .file("site/index.html", INDEX)
        .file("site/assets/app.3f2a.js", APP_JS)
        .file("site/assets/style.9b1c.css", CSS)
        .file("site/assets/style.9b1c.css.gz", CSS_GZ)
        .file("secret.txt", SECRET)
        .file("Cargo.toml", SECRET)
        .symlink("../secret.txt", "site/link.txt")
        .symlink("..", "site/escape");
    let abs_secret = b.dir().join("secret.txt");
    b.symlink(abs_secret, "site/abs-link.txt").start().await
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_is_no_cache_and_hashed_asset_is_immutable() {
    let gh = start().await;
    let client = gh.client();

    let index = client.get(gh.https_url("/")).send().await.unwrap();
    assert_eq!(index.status(), 200);
    assert!(header(&index, "content-type")
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(header(&index, "cache-control").as_deref(), Some("no-cache"));
    assert!(header(&index, "etag").is_some());
    assert!(header(&index, "last-modified").is_some());
    assert_eq!(index.text().await.unwrap(), INDEX);

    let js = client
        .get(gh.https_url("/assets/app.3f2a.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
    let ct = header(&js, "content-type").unwrap();
    assert!(ct.starts_with("application/javascript"), "{ct}");
    assert_eq!(header(&js, "cache-control").as_deref(), Some(IMMUTABLE));
    assert_eq!(js.text().await.unwrap(), APP_JS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_requests_get_304() {
    let gh = start().await;
    let client = gh.client();
    let url = gh.https_url("/assets/app.3f2a.js");

    let first = client.get(&url).send().await.unwrap();
    let etag = header(&first, "etag").expect("ETag");
    let modified = header(&first, "last-modified").expect("Last-Modified");

    let again = client
        .get(&url)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(header(&again, "etag").as_deref(), Some(etag.as_str()));
    assert!(again.bytes().await.unwrap().is_empty());

    let since = client
        .get(&url)
        .header("If-Modified-Since", &modified)
        .send()
        .await
        .unwrap();
    assert_eq!(since.status(), 304);

    let other = client
        .get(&url)
        .header("If-None-Match", "\"not-the-etag\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    assert_eq!(other.text().await.unwrap(), APP_JS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_get_206_or_416() {
    let gh = start().await;
    let client = gh.client();
    let url = gh.https_url("/assets/app.3f2a.js");
    let len = APP_JS.len();

    let part = client
        .get(&url)
        .header("Range", "bytes=0-6")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        header(&part, "content-range"),
        Some(format!("bytes 0-6/{len}"))
    );
    assert_eq!(part.text().await.unwrap(), &APP_JS[..7]);

    let suffix = client
        .get(&url)
        .header("Range", "bytes=-3")
        .send()
        .await
        .unwrap();
    assert_eq!(suffix.status(), 206);
    assert_eq!(suffix.text().await.unwrap(), &APP_JS[len - 3..]);

    let beyond = client
        .get(&url)
        .header("Range", format!("bytes={len}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), 416);
    assert_eq!(
        header(&beyond, "content-range"),
        Some(format!("bytes */{len}"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_has_no_body_and_post_is_405() {
    let gh = start().await;
    let client = gh.client();
    let url = gh.https_url("/assets/app.3f2a.js");

    let head = client.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        header(&head, "content-length"),
        Some(APP_JS.len().to_string())
    );
    assert!(header(&head, "etag").is_some());
    assert!(head.bytes().await.unwrap().is_empty());

    for method in [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let resp = client
            .request(method.clone(), &url)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{method}");
        let allow = header(&resp, "allow").unwrap_or_default();
        assert!(allow.contains("GET"), "{method}: Allow = {allow:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_sibling_is_served_with_vary() {
    let gh = start().await;
    let client = gh.client();
    let url = gh.https_url("/assets/style.9b1c.css");

    let gz = client
        .get(&url)
        .header("Accept-Encoding", "gzip, deflate")
        .send()
        .await
        .unwrap();
    assert_eq!(gz.status(), 200);
    assert_eq!(header(&gz, "content-encoding").as_deref(), Some("gzip"));
    assert!(header(&gz, "content-type").unwrap().starts_with("text/css"));
    assert!(header(&gz, "vary")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .contains("accept-encoding"));
    assert_eq!(header(&gz, "cache-control").as_deref(), Some(IMMUTABLE));
    assert_eq!(gz.bytes().await.unwrap().as_ref(), CSS_GZ);

    let plain = client.get(&url).send().await.unwrap();
    assert_eq!(plain.status(), 200);
    assert!(header(&plain, "content-encoding").is_none());
    assert!(header(&plain, "vary")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .contains("accept-encoding"));
    assert_eq!(plain.text().await.unwrap(), CSS);

    let refused = client
        .get(&url)
        .header("Accept-Encoding", "gzip;q=0, br;q=0")
        .send()
        .await
        .unwrap();
    assert!(
        header(&refused, "content-encoding").is_none(),
        "gzip;q=0 refuses gzip"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spa_fallback_only_for_extensionless_paths() {
    let gh = start().await;
    let client = gh.client();

    let route = client
        .get(gh.https_url("/dashboard/settings"))
        .send()
        .await
        .unwrap();
    assert_eq!(route.status(), 200);
    assert!(header(&route, "content-type")
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(route.text().await.unwrap(), INDEX);

    for missing in ["/assets/missing.js", "/missing.css"] {
        let resp = client.get(gh.https_url(missing)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{missing}");
        assert_ne!(resp.text().await.unwrap(), INDEX, "{missing}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_outside_the_root_is_served() {
    let gh = start().await;
    let paths = [
        "/../Cargo.toml",
        "/../secret.txt",
        "/assets/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/.%2e/secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/a%5c..%5c..%5csecret.txt",
        "/..\\secret.txt",
        "/assets\\..\\..\\secret.txt",
        "/%00",
        "/index.html%00.js",
        "/link.txt",
        "/abs-link.txt",
        "/escape/secret.txt",
    ];
    for path in paths {
        let req = raw::get(path, Some("localhost"));
        match tls::raw_request(gh.https_addr(), "localhost", &req).await {
            Ok(resp) => {
                assert!(
                    resp.status == 400 || resp.status == 404,
                    "{path} got {} {}",
                    resp.status,
                    resp.body_text()
                );
                assert!(
                    !resp.body_text().contains(SECRET),
                    "{path} leaked the secret"
                );
            }
            // Closing the connection without an answer also serves nothing,
            // but the spec asks for 400 or 404.
            Err(e) => panic!("{path}: no response: {e}"),
        }
    }
    // The site itself still works.
    let ok = tls::raw_request(
        gh.https_addr(),
        "localhost",
        &raw::get("/index.html", Some("localhost")),
    )
    .await
    .unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body_text(), INDEX);
}

/// A cached file of `SENDFILE_MIN_SIZE` (256 KiB) or more goes out with
/// sendfile(2) over plain HTTP/1.1: byte-exact, a range from its offset, HEAD
/// without a body, and the keep-alive connection still framed right for the
/// next answer. Over TLS (h1 and h2) the same bytes come from memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_cached_file_is_byte_exact_over_plain_and_tls() {
    let big: Vec<u8> = (0..1024 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let gh = Gatehouse::builder(common::HTTPS)
        .append(common::HTTP_PLAIN)
        .append(CONFIG)
        .file("site/index.html", INDEX)
        .file("site/big.bin", &big)
        .start()
        .await;
    let request = |method: &str, path: &str, extra: &str| {
        format!("{method} {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n").into_bytes()
    };
    let mut conn = tokio::net::TcpStream::connect(gh.http_addr())
        .await
        .unwrap();
    // Twice: the first answer loads the cache, the second is served from it.
    for round in 0..2 {
        let full = raw::exchange(&mut conn, &request("GET", "/big.bin", ""))
            .await
            .unwrap();
        assert_eq!(full.status, 200, "round {round}");
        assert_eq!(full.header("content-length"), Some("1048576"));
        assert!(full.body == big, "round {round}: body differs");
    }
    let part = raw::exchange(
        &mut conn,
        &request("GET", "/big.bin", "Range: bytes=300001-700000\r\n"),
    )
    .await
    .unwrap();
    assert_eq!(part.status, 206);
    assert_eq!(
        part.header("content-range"),
        Some("bytes 300001-700000/1048576")
    );
    assert!(part.body == big[300_001..=700_000], "range differs");
    let head = raw::exchange(&mut conn, &request("HEAD", "/big.bin", ""))
        .await
        .unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("1048576"));
    assert!(head.body.is_empty());
    let small = raw::exchange(&mut conn, &request("GET", "/index.html", ""))
        .await
        .unwrap();
    assert_eq!(small.status, 200);
    assert_eq!(small.body_text(), INDEX);

    for (name, client) in [("h1", gh.client_h1()), ("h2", gh.client_h2())] {
        let resp = client.get(gh.https_url("/big.bin")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{name}");
        assert!(resp.bytes().await.unwrap() == big, "{name}: body differs");
    }
}

/// A client that reads nothing for a while (4 KiB receive buffer) still
/// gets the whole file byte-exact once it reads, and the next answer on the
/// same connection: the bytes sendfile(2) queued are the file's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_reader_of_a_sent_file_gets_it_whole() {
    let big: Vec<u8> = (0..1024 * 1024u32).map(|i| (i * 13 % 251) as u8).collect();
    let gh = Gatehouse::builder(common::HTTP_PLAIN)
        .append(CONFIG)
        .file("site/index.html", INDEX)
        .file("site/big.bin", &big)
        .start()
        .await;
    // The first answer puts the file in the cache; the next is sent from it.
    let first = raw::request(gh.http_addr(), &raw::get("/big.bin", Some("t")))
        .await
        .unwrap();
    assert_eq!(first.status, 200);
    assert!(first.body == big);

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut reader = socket.connect(gh.http_addr()).await.unwrap();
    let get = b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut reader, get)
        .await
        .unwrap();
    // Not a readiness check: the point is to read late.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let late = raw::read_response(&mut reader, false).await.unwrap();
    assert_eq!(late.status, 200);
    assert!(late.body == big, "late body differs");
    let next = raw::exchange(&mut reader, b"GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(next.body_text(), INDEX);
}
