//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/status`,
//! `/status.json`, and nothing else.
//!
//! It is a separate Pingora service on its own address (loopback by default),
//! so admin paths can never be reached through the public listeners.

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::state::State;
use crate::status::{html, Status};

/// The status page may not load anything nor run any script: whatever a
/// name in it says, it stays text.
const STATUS_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'";

/// Serves the admin endpoints.
pub(crate) struct AdminApp {
    pub(crate) state: Arc<State>,
}

fn text(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response<Vec<u8>> {
    let body = body.into();
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .header(http::header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

/// The HTML status page, with its content security policy.
fn status_page(state: &State) -> Response<Vec<u8>> {
    let mut resp = text(
        200,
        "text/html; charset=utf-8",
        html::render(&Status::read(state)),
    );
    resp.headers_mut().insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(STATUS_CSP),
    );
    resp
}

fn status_json(state: &State) -> Response<Vec<u8>> {
    match serde_json::to_vec_pretty(&Status::read(state)) {
        Ok(body) => text(200, "application/json", body),
        Err(e) => {
            log::error!("/status.json: {e}");
            text(
                500,
                "text/plain; charset=utf-8",
                "cannot encode the status\n",
            )
        }
    }
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
            "/status" => status_page(&self.state),
            "/status.json" => status_json(&self.state),
            "/healthz" => text(200, "text/plain; charset=utf-8", "ok\n"),
            "/readyz" if crate::lifecycle::drain::is_draining() => {
                text(503, "text/plain; charset=utf-8", "draining\n")
            }
            "/readyz" => text(200, "text/plain; charset=utf-8", "ready\n"),
            _ => text(404, "text/plain; charset=utf-8", "not found\n"),
        }
    }
}
