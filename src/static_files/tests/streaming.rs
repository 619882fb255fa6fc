//! Streaming from disk and writing replies over a real HTTP/1 session.

use super::*;

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
    let mut chunks = FileChunks::new(file, 0, size as u64, None);
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
