//! The in-memory file cache and its invalidation (watcher, or a stat per hit).

use super::*;

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
