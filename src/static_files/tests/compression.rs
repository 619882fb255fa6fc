//! `[compression]` on a static site: variants made once for cached files,
//! on the fly until then and for files streamed from disk, and what is never
//! compressed.

use std::io::Read;

use super::*;
use crate::config::{Algorithm, Compression, MediaRange};

fn policy(min_size: u64) -> Arc<Compression> {
    Arc::new(Compression {
        algorithms: Algorithm::ALL.to_vec(),
        min_size,
        types: vec![
            MediaRange::Type("text".into()),
            MediaRange::Exact("application/javascript".into()),
            MediaRange::Exact("application/json".into()),
        ],
    })
}

/// JavaScript-like text that compresses well.
fn script(lines: usize) -> String {
    (0..lines)
        .map(|i| format!("export function f{i}(a, b) {{ return a * {i} + b; }}\n"))
        .collect()
}

fn decode(encoding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "zstd" => out = zstd::stream::decode_all(data).unwrap(),
        "br" => {
            brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        "gzip" => {
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .unwrap();
        }
        other => panic!("unexpected encoding {other}"),
    }
    out
}

fn site(f: &Fixture, min_size: u64) -> Site {
    Site::with_compression(f.config(true), Some(policy(min_size)))
}

/// Waits until the cached variants of `path` are served (bounded).
async fn wait_cached(site: &Site, path: &str, accept: &str) -> Reply {
    let start = Instant::now();
    loop {
        let r = get(site, path, &[("accept-encoding", accept)]).await;
        if r.compressed.is_some_and(|c| c.cached) {
            return r;
        }
        assert!(start.elapsed() < WAIT, "no cached variant of {path}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_cached_file_is_compressed_once_and_on_the_fly_until_then() {
    let f = Fixture::new();
    let js = script(400);
    f.write("assets/bundle.js", &js);
    let site = site(&f, 1024);

    let first = get(
        &site,
        "/assets/bundle.js",
        &[("accept-encoding", "gzip, br, zstd")],
    )
    .await;
    let identity_tag = {
        let plain = get(&site, "/assets/bundle.js", &[]).await;
        assert_eq!(hdr(&plain, "vary").as_deref(), Some("Accept-Encoding"));
        assert_eq!(hdr(&plain, "accept-ranges").as_deref(), Some("bytes"));
        assert!(plain.compressed.is_none());
        hdr(&plain, "etag").unwrap()
    };
    assert_eq!(hdr(&first, "content-encoding").as_deref(), Some("zstd"));
    assert_eq!(hdr(&first, "vary").as_deref(), Some("Accept-Encoding"));
    assert_eq!(hdr(&first, "accept-ranges"), None);
    if !first.compressed.unwrap().cached {
        // Compressed for this request: the weak form of the file's tag.
        assert_eq!(hdr(&first, "etag"), Some(format!("W/{identity_tag}")));
    }
    assert_eq!(decode("zstd", &body(first).await), js.as_bytes());

    for (accept, encoding) in [("zstd", "zstd"), ("br, gzip", "br"), ("gzip", "gzip")] {
        let r = wait_cached(&site, "/assets/bundle.js", accept).await;
        assert_eq!(hdr(&r, "content-encoding").as_deref(), Some(encoding));
        let tag = hdr(&r, "etag").unwrap();
        assert_eq!(
            tag,
            format!("{}+{encoding}\"", identity_tag.trim_end_matches('"'))
        );
        let len: usize = hdr(&r, "content-length").unwrap().parse().unwrap();
        let data = body(r).await;
        assert_eq!(data.len(), len);
        assert!(len < js.len() / 4, "{encoding}: {len} of {}", js.len());
        assert_eq!(decode(encoding, &data), js.as_bytes());
        // The same bytes again: no new work, the cached variant.
        let again = get(&site, "/assets/bundle.js", &[("accept-encoding", accept)]).await;
        match (&again.body, &data) {
            (ReplyBody::Full(b), d) => assert_eq!(&b[..], &d[..]),
            (other, _) => panic!("{other:?}"),
        }
        // Its own tag validates it.
        let not_modified = get(
            &site,
            "/assets/bundle.js",
            &[("accept-encoding", accept), ("if-none-match", &tag)],
        )
        .await;
        assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            hdr(&not_modified, "vary").as_deref(),
            Some("Accept-Encoding")
        );
        assert_eq!(hdr(&not_modified, "etag"), Some(tag));
    }
}

#[tokio::test]
async fn ranges_small_files_other_types_and_opt_out_are_sent_as_they_are() {
    let f = Fixture::new();
    let js = script(100);
    f.write("assets/bundle.js", &js);
    f.write("small.txt", "tiny");
    f.write("photo.png", vec![1u8; 5000]);
    let site = site(&f, 1024);
    let accept = ("accept-encoding", "gzip, br, zstd");

    let part = get(
        &site,
        "/assets/bundle.js",
        &[accept, ("range", "bytes=0-9")],
    )
    .await;
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(hdr(&part, "content-encoding"), None);
    assert_eq!(hdr(&part, "vary").as_deref(), Some("Accept-Encoding"));
    assert_eq!(body(part).await, &js.as_bytes()[..10]);

    let small = get(&site, "/small.txt", &[accept]).await;
    assert_eq!(hdr(&small, "content-encoding"), None);
    assert_eq!(hdr(&small, "vary"), None);
    let png = get(&site, "/photo.png", &[accept]).await;
    assert_eq!(hdr(&png, "content-encoding"), None);
    assert_eq!(hdr(&png, "vary"), None);

    let opted_out = site
        .respond_compressing(
            &Method::GET,
            "/assets/bundle.js",
            &headers(&[accept]),
            false,
        )
        .await;
    assert_eq!(hdr(&opted_out, "content-encoding"), None);
    assert_eq!(hdr(&opted_out, "vary"), None);

    let refused = get(&site, "/assets/bundle.js", &[("accept-encoding", "*;q=0")]).await;
    assert_eq!(hdr(&refused, "content-encoding"), None);
    assert_eq!(hdr(&refused, "vary").as_deref(), Some("Accept-Encoding"));
    assert_eq!(body(refused).await, js.as_bytes());
}

#[tokio::test]
async fn siblings_keep_their_coding_and_variants_fill_the_others() {
    let f = Fixture::new();
    // assets/app.js has fake .br and .gz siblings in the fixture; make it big
    // enough to be compressible.
    let js = script(50);
    f.write("assets/app.js", &js);
    let site = site(&f, 16);
    let br = get(&site, "/assets/app.js", &[("accept-encoding", "br")]).await;
    assert_eq!(body(br).await, APP_JS_BR);
    let gz = get(&site, "/assets/app.js", &[("accept-encoding", "gzip")]).await;
    assert_eq!(body(gz).await, APP_JS_GZ);
    // zstd has no sibling: Gatehouse's, preferred among equals.
    let z = wait_cached(&site, "/assets/app.js", "gzip, br, zstd").await;
    assert_eq!(hdr(&z, "content-encoding").as_deref(), Some("zstd"));
    assert_eq!(decode("zstd", &body(z).await), js.as_bytes());
}

#[tokio::test]
async fn a_file_above_the_cache_size_is_compressed_as_it_streams() {
    let f = Fixture::new();
    let mut text = String::new();
    while text.len() as u64 <= MAX_CACHED_FILE_SIZE + 300_000 {
        text.push_str(&script(1000));
    }
    f.write("big.txt", &text);
    let site = site(&f, 1024);
    for encoding in ["zstd", "br", "gzip"] {
        let r = get(&site, "/big.txt", &[("accept-encoding", encoding)]).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(hdr(&r, "content-encoding").as_deref(), Some(encoding));
        assert_eq!(hdr(&r, "content-length"), None);
        assert_eq!(hdr(&r, "transfer-encoding").as_deref(), Some("chunked"));
        assert!(hdr(&r, "etag").unwrap().starts_with("W/\""));
        assert!(matches!(r.compressed, Some(c) if !c.cached));
        assert!(matches!(
            r.body,
            ReplyBody::File {
                encoder: Some(_),
                ..
            }
        ));
        let data = body(r).await;
        assert!(data.len() < text.len() / 4, "{encoding}: {}", data.len());
        assert_eq!(decode(encoding, &data), text.as_bytes(), "{encoding}");
    }
    // HEAD: the same headers, no work.
    let head = site
        .respond(
            &Method::HEAD,
            "/big.txt",
            &headers(&[("accept-encoding", "gzip")]),
        )
        .await;
    assert_eq!(hdr(&head, "content-encoding").as_deref(), Some("gzip"));
    assert!(matches!(head.body, ReplyBody::Empty));
    // A client that compares the weak tag gets its 304, with Vary.
    let tag = hdr(
        &get(&site, "/big.txt", &[("accept-encoding", "gzip")]).await,
        "etag",
    )
    .unwrap();
    let nm = get(
        &site,
        "/big.txt",
        &[("accept-encoding", "gzip"), ("if-none-match", &tag)],
    )
    .await;
    assert_eq!(nm.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(hdr(&nm, "etag"), Some(tag));
    assert_eq!(hdr(&nm, "vary").as_deref(), Some("Accept-Encoding"));
}
