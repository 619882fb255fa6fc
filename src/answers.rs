//! The bodies of every answer Gatehouse writes itself on the public
//! listeners: the short JSON error for each status and the redirect text.
//! Stages decide the status; `proxy::respond` writes the answer; static sites
//! use the same bodies for their 404, 405, 412 and 416.
//!
//! (The admin listener answers operators in plain text of its own.)

use bytes::Bytes;

/// The `error` field of a JSON error for a status.
pub(crate) fn error_name(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        411 => "length_required",
        412 => "precondition_failed",
        413 => "payload_too_large",
        414 => "uri_too_long",
        416 => "range_not_satisfiable",
        421 => "misdirected_request",
        429 => "rate_limited",
        431 => "request_header_fields_too_large",
        500 => "internal_error",
        502 => "bad_gateway",
        503 => "service_unavailable",
        504 => "gateway_timeout",
        s if s >= 500 => "server_error",
        _ => "client_error",
    }
}

/// `{"error":"rate_limited","request_id":"...","status":429}`; without
/// `request_id` when there is none (a static site's own answer, before the
/// proxy adds the request's id).
pub(crate) fn error_body(status: u16, request_id: Option<&str>) -> Bytes {
    let body = match request_id {
        Some(id) => serde_json::json!({
            "error": error_name(status),
            "status": status,
            "request_id": id,
        }),
        None => serde_json::json!({
            "error": error_name(status),
            "status": status,
        }),
    };
    Bytes::from(body.to_string())
}

/// The body of a 301.
pub(crate) const REDIRECT_BODY: &[u8] = b"Moved Permanently\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_name_the_status_and_carry_the_id() {
        assert_eq!(
            error_body(429, Some("abc")),
            r#"{"error":"rate_limited","request_id":"abc","status":429}"#
        );
        assert_eq!(
            error_body(404, None),
            r#"{"error":"not_found","status":404}"#
        );
        assert_eq!(error_name(599), "server_error");
        assert_eq!(error_name(418), "client_error");
    }
}
