//! Path resolution: SPA fallback, directories, hidden files, traversal, symlinks, odd files, and never a byte from outside the root.

use super::*;

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
