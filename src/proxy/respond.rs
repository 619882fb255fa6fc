//! The one place that writes the answers Gatehouse makes itself: a stage's
//! [`Decision`], an upstream failure, or a head the parser refused. Bodies
//! come from [`crate::answers`]; every answer goes through
//! [`super::headers::decorate`].

use std::time::Instant;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::proxy::Session;

use super::stages::Decision;
use super::{headers, site, Ctx};
use crate::answers::{error_body, REDIRECT_BODY};
use crate::state::Snapshot;

/// Writes what a stage decided (nothing for [`Decision::Continue`]).
pub(crate) async fn send(
    session: &mut Session,
    ctx: &mut Ctx,
    decision: Decision,
) -> pingora::Result<()> {
    match decision {
        Decision::Continue => Ok(()),
        Decision::Error { status, headers } => {
            send_error_with(session, ctx, status, &headers).await
        }
        Decision::Redirect(location) => send_redirect(session, ctx, &location).await,
        Decision::Preflight(headers) => send_preflight(session, ctx, headers).await,
        Decision::Static { site, path } => site::serve(session, ctx, &site, &path).await,
        // `request_filter` asks the store before anything is sent; reaching
        // here would be a bug of ours, answered as one.
        Decision::AskStore => send_error_with(session, ctx, 500, &[]).await,
        Decision::AcmeChallenge(key_authorization) => {
            let mut header = ResponseHeader::build(200, Some(3))?;
            header.insert_header(http::header::CONTENT_TYPE, "application/octet-stream")?;
            header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
            send_body(session, ctx, header, Bytes::from(key_authorization)).await
        }
    }
}

/// Writes a decorated response with `body`; HEAD gets the headers only.
async fn send_body(
    session: &mut Session,
    ctx: &mut Ctx,
    mut header: ResponseHeader,
    body: Bytes,
) -> pingora::Result<()> {
    if header.status != http::StatusCode::NO_CONTENT {
        header.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    }
    if let Some(snapshot) = &ctx.snapshot {
        headers::decorate(&mut header, &snapshot.config, ctx.tls, &ctx.request_id)?;
    }
    ctx.add_rate_headers(&mut header)?;
    ctx.add_cors_headers(&mut header, session.req_header())?;
    ctx.status = header.status.as_u16();
    let head_only = session.req_header().method == http::Method::HEAD || body.is_empty();
    session
        .write_response_header(Box::new(header), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Writes a JSON error response.
pub(crate) async fn send_error(
    session: &mut Session,
    ctx: &mut Ctx,
    status: u16,
) -> pingora::Result<()> {
    send_error_with(session, ctx, status, &[]).await
}

/// Writes a JSON error response with extra headers.
pub(crate) async fn send_error_with(
    session: &mut Session,
    ctx: &mut Ctx,
    status: u16,
    extra: &[(http::HeaderName, String)],
) -> pingora::Result<()> {
    let header = error_header(status, extra)?;
    if closes(status) {
        session.set_keepalive(None);
    }
    let body = error_body(status, Some(ctx.request_id()));
    send_body(session, ctx, header, body).await
}

/// Whether an error answer closes the connection: after these the rest of
/// the request cannot be trusted to be framed as we think.
fn closes(status: u16) -> bool {
    matches!(status, 400 | 413 | 431)
}

/// The header of a JSON error answer, before its length and decoration.
fn error_header(
    status: u16,
    extra: &[(http::HeaderName, String)],
) -> pingora::Result<ResponseHeader> {
    let mut header = ResponseHeader::build(status, Some(extra.len() + 5))?;
    header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    for (name, value) in extra {
        header.insert_header(name.clone(), value.as_str())?;
    }
    if closes(status) {
        header.insert_header(http::header::CONNECTION, "close")?;
    }
    Ok(header)
}

/// Writes a 301 to `location`.
async fn send_redirect(
    session: &mut Session,
    ctx: &mut Ctx,
    location: &str,
) -> pingora::Result<()> {
    let mut header = ResponseHeader::build(301, Some(3))?;
    header.insert_header(http::header::LOCATION, location)?;
    header.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    send_body(session, ctx, header, Bytes::from_static(REDIRECT_BODY)).await
}

/// Writes the 204 answer to a CORS preflight.
async fn send_preflight(
    session: &mut Session,
    ctx: &mut Ctx,
    cors_headers: Vec<(http::HeaderName, http::HeaderValue)>,
) -> pingora::Result<()> {
    let mut header = ResponseHeader::build(204, Some(cors_headers.len() + 3))?;
    for (name, value) in cors_headers {
        header.insert_header(name, value)?;
    }
    send_body(session, ctx, header, Bytes::new()).await
}

/// Answers a request whose head could not be parsed (a bad request line, a
/// bare CR, a NUL, obs-fold, ...): the same JSON 400 with a request id as
/// every other error, `Connection: close`, one access-log line (route `none`)
/// and a count in `gatehouse_requests_total`.
pub(crate) async fn send_unparsed_head_error(session: &mut ServerSession, snapshot: &Snapshot) {
    let start = Instant::now();
    let request_id = headers::request_id(None);
    let tls = session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .map(|s| s.version.to_string());
    let body = error_body(400, Some(headers::request_id_str(&request_id)));
    let header = (|| -> pingora::Result<ResponseHeader> {
        let mut header = error_header(400, &[])?;
        header.insert_header(http::header::CONTENT_LENGTH, body.len())?;
        headers::decorate(&mut header, &snapshot.config, tls.is_some(), &request_id)?;
        Ok(header)
    })();
    let mut sent = 0;
    match header {
        Ok(header) => {
            session.set_keepalive(None);
            let written = async {
                session.write_response_header(Box::new(header)).await?;
                session.write_response_body(body.clone(), true).await?;
                session.finish_body().await
            };
            match written.await {
                Ok(()) => sent = body.len(),
                Err(e) => log::debug!("could not answer an unparsable request head: {e}"),
            }
        }
        Err(e) => log::warn!("cannot build the 400 answer: {e}"),
    }
    let client_ip = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    crate::metrics::record_request("none", "OTHER", 400, start.elapsed());
    crate::access_log::record_unparsed(
        client_ip,
        tls.as_deref(),
        headers::request_id_str(&request_id),
        sent,
        start.elapsed(),
    );
}
