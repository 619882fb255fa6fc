//! Validators and conditional requests: ETag, Last-Modified, 304, 412, ranges, HEAD, methods.

use super::*;

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
