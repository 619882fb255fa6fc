//! The admin listener: `/metrics`, `/healthz`, `/readyz`, and nothing else.
//!
//! It is a separate Pingora service on its own address (loopback by default),
//! so admin paths can never be reached through the public listeners.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

/// Serves the admin endpoints.
pub(crate) struct AdminApp;

fn text(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response<Vec<u8>> {
    let body = body.into();
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return text(405, "text/plain; charset=utf-8", "method not allowed\n");
        }
        match req.uri.path() {
            "/metrics" => text(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                crate::metrics::render(),
            ),
            "/healthz" => text(200, "text/plain; charset=utf-8", "ok\n"),
            "/readyz" if crate::lifecycle::drain::is_draining() => {
                text(503, "text/plain; charset=utf-8", "draining\n")
            }
            "/readyz" => text(200, "text/plain; charset=utf-8", "ready\n"),
            _ => text(404, "text/plain; charset=utf-8", "not found\n"),
        }
    }
}
