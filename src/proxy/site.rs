//! The hand-off to a static site: the site answers, the proxy adds the
//! request's id to error bodies, decorates the header and writes it.

use pingora::proxy::Session;

use super::{headers, Ctx};
use crate::answers::error_body;
use crate::static_files::{write_reply, ReplyBody, Site};

/// Serves `path` of `site` for the request in `session`.
pub(crate) async fn serve(
    session: &mut Session,
    ctx: &mut Ctx,
    site: &Site,
    path: &str,
) -> pingora::Result<()> {
    let req = session.req_header();
    let compress = ctx.route().is_none_or(|r| r.compression);
    let mut reply = site
        .respond_compressing(&req.method, path, &req.headers, compress)
        .await;
    if let Some(c) = reply.compressed {
        crate::metrics::record_compressed(c.algorithm.token(), c.cached);
    }
    let status = reply.header.status.as_u16();
    if status >= 400 {
        if let ReplyBody::Full(_) = reply.body {
            // The same JSON error as every other, with this request's id.
            let body = error_body(status, Some(ctx.request_id()));
            reply
                .header
                .insert_header(http::header::CONTENT_LENGTH, body.len())?;
            reply.body = ReplyBody::Full(body);
            reply.file = None;
        }
    }
    if let Some(snapshot) = &ctx.snapshot {
        headers::decorate(
            &mut reply.header,
            &snapshot.config,
            ctx.tls,
            &ctx.request_id,
        )?;
    }
    ctx.add_rate_headers(&mut reply.header)?;
    ctx.add_cors_headers(&mut reply.header, session.req_header())?;
    ctx.status = reply.header.status.as_u16();
    write_reply(session, reply).await
}
