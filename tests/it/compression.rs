//! `[compression]` through the real server: proxied answers compressed on the
//! fly (zstd, br, gzip by Accept-Encoding, q-values and server preference),
//! what passes untouched (an upstream's own encoding, no-transform, small
//! answers, ranges, event streams, a route that opts out), HEAD, streams not
//! held back, h2, and static files (variants made once for cached files, on
//! the fly for a file above the cache size). Bodies are decoded with the real
//! decoders and compared with what the server sent.

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common;
use common::{Backend, Gatehouse};

/// A JSON answer of about 20 KiB, like a Flask list endpoint's.
fn json_answer() -> String {
    let items: Vec<String> = (0..220)
        .map(|i| {
            format!(
                r#"{{"id":{i},"name":"user {i}","email":"user{i}@example.com","active":{},"score":{}}}"#,
                i % 3 == 0,
                i * 37 % 1000
            )
        })
        .collect();
    format!(r#"{{"items":[{}],"total":220}}"#, items.join(","))
}

/// JavaScript-like text of at least `size` bytes.
fn script(size: usize) -> String {
    let mut s = String::new();
    let mut i = 0;
    while s.len() < size {
        s.push_str(&format!(
            "export function handler{i}(event, ctx) {{ if (!event) return null; return ctx.render({{ id: {i}, kind: \"item\" }}); }}\n"
        ));
        i += 1;
    }
    s
}

fn decode(encoding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "zstd" => out = zstd::stream::decode_all(data).expect("zstd"),
        "br" => {
            brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .expect("brotli");
        }
        "gzip" => {
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .expect("gzip");
        }
        other => panic!("unexpected encoding {other:?}"),
    }
    out
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    let values: Vec<&str> = r
        .headers()
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

fn varies(r: &reqwest::Response) -> bool {
    header(r, "vary").is_some_and(|v| v.to_ascii_lowercase().contains("accept-encoding"))
}

const COMPRESSION: &str = r#"
[compression]
enabled = true
algorithms = ["zstd", "br", "gzip"]
min_size = "1KiB"
types = ["text/*", "application/json", "application/javascript", "image/svg+xml"]
"#;

/// `/json/` → a JSON backend (with `ETag: "v1"`), `/raw/` the same with
/// `compression = false`, `/{name}/` → each other backend of `more`.
async fn start(json: &Backend, more: &[(&str, &Backend)], extra: &str) -> Gatehouse {
    let mut config = format!(
        r#"{COMPRESSION}
{extra}
[[route]]
prefix = "/json/"
upstream = "json"
[[route]]
prefix = "/raw/"
upstream = "json"
compression = false
[upstream.json]
servers = ["{{json}}"]
"#
    );
    for (name, _) in more {
        config.push_str(&format!(
            "[[route]]\nprefix = \"/{name}/\"\nupstream = \"{name}\"\n[upstream.{name}]\nservers = [\"{{{name}}}\"]\n"
        ));
    }
    let mut b = Gatehouse::builder(&format!("{}{}{config}", common::HTTPS, common::ADMIN))
        .backend("json", json);
    for (name, backend) in more {
        b = b.backend(name, backend);
    }
    b.start().await
}

async fn json_backend(body: &str) -> Backend {
    Backend::builder()
        .body("application/json", body)
        .response_header("ETag", "\"v1\"")
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_json_is_compressed_by_q_values_then_server_preference() {
    let body = json_answer();
    assert!(body.len() > 15_000);
    let json = json_backend(&body).await;
    let gh = start(&json, &[], "").await;
    let client = gh.client_h1();
    let url = gh.https_url("/json/users");

    for (accept, expect) in [
        ("gzip, deflate, br, zstd", "zstd"),
        ("gzip, deflate, br", "br"),
        ("gzip;q=1.0, br;q=0.5, zstd;q=0.1", "gzip"),
        ("br;q=0.9, gzip;q=0.9", "br"),
        ("zstd;q=0, *", "br"),
        ("x-gzip", "gzip"),
        ("*", "zstd"),
    ] {
        let r = client
            .get(&url)
            .header("Accept-Encoding", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            header(&r, "content-encoding").as_deref(),
            Some(expect),
            "{accept}"
        );
        assert!(varies(&r), "{accept}");
        assert_eq!(header(&r, "etag").as_deref(), Some("W/\"v1\""), "{accept}");
        assert_eq!(header(&r, "content-length"), None, "{accept}");
        assert_eq!(header(&r, "transfer-encoding").as_deref(), Some("chunked"));
        let wire = r.bytes().await.unwrap();
        assert!(
            wire.len() < body.len() / 4,
            "{accept}: {} bytes",
            wire.len()
        );
        assert_eq!(decode(expect, &wire), body.as_bytes(), "{accept}");
    }

    // Nothing acceptable, or nothing asked: as it is, still with Vary.
    for accept in [
        Some("zstd;q=0, br;q=0, gzip;q=0"),
        Some("deflate"),
        Some("identity"),
        Some("*;q=0"),
        Some("identity, gzip;q=0.5"),
        None,
    ] {
        let mut req = client.get(&url);
        if let Some(a) = accept {
            req = req.header("Accept-Encoding", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(header(&r, "content-encoding"), None, "{accept:?}");
        assert!(varies(&r), "{accept:?}");
        assert_eq!(header(&r, "etag").as_deref(), Some("\"v1\""));
        assert_eq!(
            header(&r, "content-length"),
            Some(body.len().to_string()),
            "{accept:?}"
        );
        assert_eq!(r.text().await.unwrap(), body);
    }
    let counted = gh
        .metric(
            "gatehouse_compressed_responses_total",
            &[("encoding", "zstd"), ("source", "on_the_fly")],
        )
        .await;
    assert_eq!(counted, Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_encoding_no_transform_small_answers_and_event_streams_pass_untouched() {
    let body = json_answer();
    let json = json_backend(&body).await;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(body.as_bytes()).unwrap();
    let gzipped = gz.finish().unwrap();
    let encoded = Backend::builder()
        .body("application/json", gzipped.clone())
        .response_header("Content-Encoding", "gzip")
        .start()
        .await;
    let no_transform = Backend::builder()
        .body("application/json", body.clone())
        .response_header("Cache-Control", "private, no-transform")
        .start()
        .await;
    let small = Backend::builder()
        .body("application/json", "x".repeat(1000))
        .start()
        .await;
    let png = Backend::builder()
        .body("image/png", vec![7u8; 50_000])
        .start()
        .await;
    let events = "data: tick\n\n".repeat(200);
    let sse = Backend::builder()
        .body("text/event-stream", events.clone())
        .start()
        .await;
    let gh = start(
        &json,
        &[
            ("encoded", &encoded),
            ("notransform", &no_transform),
            ("small", &small),
            ("png", &png),
            ("sse", &sse),
        ],
        "",
    )
    .await;
    let client = gh.client_h1();
    let get = |path: &str| {
        client
            .get(gh.https_url(path))
            .header("Accept-Encoding", "zstd, br, gzip")
            .send()
    };

    // The server's gzip passes as it is: not compressed twice.
    let r = get("/encoded/x").await.unwrap();
    assert_eq!(header(&r, "content-encoding").as_deref(), Some("gzip"));
    assert_eq!(r.bytes().await.unwrap(), gzipped);

    let r = get("/notransform/x").await.unwrap();
    assert_eq!(header(&r, "content-encoding"), None);
    assert!(!varies(&r));
    assert_eq!(r.text().await.unwrap(), body);

    let r = get("/small/x").await.unwrap();
    assert_eq!(header(&r, "content-encoding"), None);
    assert!(!varies(&r));
    assert_eq!(header(&r, "content-length").as_deref(), Some("1000"));

    let r = get("/png/x").await.unwrap();
    assert_eq!(header(&r, "content-encoding"), None);
    assert_eq!(r.bytes().await.unwrap().len(), 50_000);

    let r = get("/sse/x").await.unwrap();
    assert_eq!(header(&r, "content-encoding"), None);
    assert_eq!(r.text().await.unwrap(), events);

    // A route with `compression = false`.
    let r = get("/raw/x").await.unwrap();
    assert_eq!(header(&r, "content-encoding"), None);
    assert!(!varies(&r));
    assert_eq!(r.text().await.unwrap(), body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_requests_are_answered_raw_and_head_gets_the_get_headers() {
    let body = json_answer();
    let json = json_backend(&body).await;
    let gh = start(&json, &[], "").await;
    let client = gh.client_h1();
    let url = gh.https_url("/json/users");

    // The backend ignores Range: the whole answer, as it is.
    let r = client
        .get(&url)
        .header("Accept-Encoding", "gzip")
        .header("Range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-encoding"), None);
    assert!(varies(&r));
    assert_eq!(r.text().await.unwrap(), body);

    let head = client
        .head(&url)
        .header("Accept-Encoding", "br")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "content-encoding").as_deref(), Some("br"));
    assert!(varies(&head));
    assert_eq!(header(&head, "etag").as_deref(), Some("W/\"v1\""));
    assert_eq!(header(&head, "content-length"), None);
    assert!(head.bytes().await.unwrap().is_empty());
    // The connection is still good for the next request.
    let r = client
        .get(&url)
        .header("Accept-Encoding", "br")
        .send()
        .await
        .unwrap();
    assert_eq!(decode("br", &r.bytes().await.unwrap()), body.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_answers_are_compressed_too() {
    let body = json_answer();
    let json = json_backend(&body).await;
    let gh = Gatehouse::builder(&format!(
        "{}{COMPRESSION}{}\n[[route]]\nprefix = \"/\"\nupstream = \"api\"\n[upstream.api]\nservers = [\"{{api}}\"]\n[[route]]\nprefix = \"/static/\"\nstatic = \"site\"\nstrip_prefix = true\n[static.site]\nroot = \"site\"\n",
        common::HTTPS,
        ""
    ))
    .backend("api", &json)
    .file("site/app.js", script(40_000))
    .start()
    .await;
    let client = gh.client_h2();
    for encoding in ["zstd", "br", "gzip"] {
        let r = client
            .get(gh.https_url("/users"))
            .header("Accept-Encoding", encoding)
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(header(&r, "content-encoding").as_deref(), Some(encoding));
        assert!(varies(&r));
        assert_eq!(header(&r, "transfer-encoding"), None);
        assert_eq!(decode(encoding, &r.bytes().await.unwrap()), body.as_bytes());

        let r = client
            .get(gh.https_url("/static/app.js"))
            .header("Accept-Encoding", encoding)
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(header(&r, "content-encoding").as_deref(), Some(encoding));
        assert_eq!(
            decode(encoding, &r.bytes().await.unwrap()),
            script(40_000).as_bytes()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_unknown_length_is_not_held_back() {
    const GAP: Duration = Duration::from_secs(2);
    let first = format!("{{\"event\":\"first\",\"pad\":\"{}\"}}\n", "a".repeat(1500));
    let second = "{\"event\":\"second\"}\n".to_string();
    let json = json_backend("{}").await;
    let stream = Backend::builder()
        .chunked(
            "application/json",
            vec![first.clone().into_bytes(), second.clone().into_bytes()],
            GAP,
        )
        .start()
        .await;
    let gh = start(&json, &[("stream", &stream)], "").await;
    let started = Instant::now();
    let mut r = gh
        .client_h1()
        .get(gh.https_url("/stream/x"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-encoding").as_deref(), Some("gzip"));
    // Decode as the bytes come: the first piece must be readable before the
    // server sends the second.
    let mut seen = Vec::new();
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    while !String::from_utf8_lossy(decoder.get_ref()).contains("first") {
        let chunk = r.chunk().await.unwrap().expect("the stream ended early");
        seen.extend_from_slice(&chunk);
        decoder.write_all(&chunk).unwrap();
        decoder.flush().unwrap();
    }
    assert!(
        started.elapsed() < GAP,
        "the first piece waited for the second: {:?}",
        started.elapsed()
    );
    while let Some(chunk) = r.chunk().await.unwrap() {
        seen.extend_from_slice(&chunk);
    }
    assert_eq!(decode("gzip", &seen), format!("{first}{second}").as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_size_applies_to_known_lengths() {
    let json = json_backend(&"y".repeat(3000)).await;
    let big = Backend::builder()
        .body("application/json", "z".repeat(5000))
        .start()
        .await;
    let gh = Gatehouse::builder(&format!(
        "{}{}",
        common::HTTPS,
        r#"
[compression]
min_size = "4KiB"
[[route]]
prefix = "/small/"
upstream = "small"
[upstream.small]
servers = ["{small}"]
[[route]]
prefix = "/big/"
upstream = "big"
[upstream.big]
servers = ["{big}"]
"#
    ))
    .backend("small", &json)
    .backend("big", &big)
    .start()
    .await;
    let client = gh.client_h1();
    let r = client
        .get(gh.https_url("/small/x"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-encoding"), None);
    assert_eq!(r.text().await.unwrap().len(), 3000);
    let r = client
        .get(gh.https_url("/big/x"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-encoding").as_deref(), Some("gzip"));
    assert_eq!(decode("gzip", &r.bytes().await.unwrap()).len(), 5000);
}

const SITE: &str = r#"
[[route]]
prefix = "/"
static = "site"
[static.site]
root = "site"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_static_file_gets_variants_made_once() {
    let js = script(150 * 1024);
    let gh = Gatehouse::builder(&format!(
        "{}{}{COMPRESSION}{SITE}",
        common::HTTPS,
        common::ADMIN
    ))
    .file("site/assets/bundle.js", &js)
    .start()
    .await;
    let client = gh.client_h1();
    let url = gh.https_url("/assets/bundle.js");
    let plain = client.get(&url).send().await.unwrap();
    assert!(varies(&plain));
    assert_eq!(header(&plain, "accept-ranges").as_deref(), Some("bytes"));
    let tag = header(&plain, "etag").unwrap();
    assert_eq!(plain.text().await.unwrap(), js);

    for encoding in ["zstd", "br", "gzip"] {
        // On the fly until the variant is made (in the background), then
        // the variant: its own strong tag and a length.
        let made = format!("{}+{encoding}\"", tag.trim_end_matches('"'));
        let deadline = Instant::now() + Duration::from_secs(20);
        let r = loop {
            let r = client
                .get(&url)
                .header("Accept-Encoding", encoding)
                .send()
                .await
                .unwrap();
            if header(&r, "etag").as_deref() == Some(made.as_str()) || Instant::now() > deadline {
                break r;
            }
            assert_eq!(header(&r, "content-encoding").as_deref(), Some(encoding));
            assert!(header(&r, "etag").unwrap().starts_with("W/"));
            let wire = r.bytes().await.unwrap();
            assert_eq!(decode(encoding, &wire), js.as_bytes());
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        assert_eq!(
            header(&r, "etag"),
            Some(made.clone()),
            "no variant: {:?}",
            r.headers()
        );
        assert_eq!(header(&r, "content-encoding").as_deref(), Some(encoding));
        assert!(varies(&r));
        assert_eq!(header(&r, "accept-ranges"), None);
        let len: usize = header(&r, "content-length").unwrap().parse().unwrap();
        let wire = r.bytes().await.unwrap();
        assert_eq!(wire.len(), len);
        assert!(len < js.len() / 5, "{encoding}: {len}");
        assert_eq!(decode(encoding, &wire), js.as_bytes());

        let not_modified = client
            .get(&url)
            .header("Accept-Encoding", encoding)
            .header("If-None-Match", &made)
            .send()
            .await
            .unwrap();
        assert_eq!(not_modified.status(), 304);
        assert!(varies(&not_modified));
    }
    let cached = gh
        .metric(
            "gatehouse_compressed_responses_total",
            &[("encoding", "br"), ("source", "cached")],
        )
        .await;
    assert!(cached >= Some(1.0), "{cached:?}");

    // A range is of the file as it is.
    let part = client
        .get(&url)
        .header("Accept-Encoding", "br")
        .header("Range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(header(&part, "content-encoding"), None);
    assert_eq!(part.text().await.unwrap(), &js[..100]);

    // HEAD: the GET's headers.
    let head = client
        .head(&url)
        .header("Accept-Encoding", "br")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&head, "content-encoding").as_deref(), Some("br"));
    assert!(head.bytes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_file_above_the_cache_size_is_compressed_per_request() {
    let text = script(2 * 1024 * 1024 + 500_000);
    let gh = Gatehouse::builder(&format!("{}{COMPRESSION}{SITE}", common::HTTPS))
        .file("site/big.txt", &text)
        .start()
        .await;
    for client in [gh.client_h1(), gh.client_h2()] {
        for encoding in ["zstd", "br", "gzip"] {
            let r = client
                .get(gh.https_url("/big.txt"))
                .header("Accept-Encoding", encoding)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(header(&r, "content-encoding").as_deref(), Some(encoding));
            assert_eq!(header(&r, "content-length"), None);
            assert!(header(&r, "etag").unwrap().starts_with("W/\""));
            assert!(varies(&r));
            let wire = r.bytes().await.unwrap();
            assert!(wire.len() < text.len() / 5, "{encoding}: {}", wire.len());
            assert_eq!(decode(encoding, &wire), text.as_bytes(), "{encoding}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_compressed_gets_the_original() {
    let body = json_answer();
    let json = json_backend(&body).await;
    let gh = start(&json, &[], "").await;
    let cert = gh.dir().join("certs/server.crt");
    let url = gh.https_url("/json/users");
    let port = gh.https_port;
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "--compressed", "-D", "-"])
            .arg("--cacert")
            .arg(&cert)
            .arg("--resolve")
            .arg(format!("localhost:{port}:127.0.0.1"))
            .arg(&url)
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| {
        panic!("curl is not installed ({e}): `bash .ci/deps.sh --test` installs it")
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (head, got) = text.split_once("\r\n\r\n").unwrap();
    let encoding = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-encoding: ")
            .map(str::to_string)
    });
    assert!(
        encoding.is_some(),
        "curl --compressed got no encoding:\n{head}"
    );
    assert_eq!(got, body);
}

#[test]
fn bad_compression_settings_are_reported_with_their_key() {
    let (code, text, _, _dir) = crate::check::check(
        r#"
[http]
listen = ["127.0.0.1:8080"]
redirect_to_https = false

[compression]
algorithms = ["zstd", "deflate", "zstd"]
min_size = "lots"
types = ["text/*", "json"]
"#,
    );
    assert_eq!(code, Some(1), "{text}");
    for needle in [
        "compression.algorithms[1]",
        "\"deflate\"",
        "compression.algorithms[2]",
        "listed twice",
        "compression.min_size",
        "compression.types[1]",
    ] {
        assert!(text.contains(needle), "{needle} not in:\n{text}");
    }
}
