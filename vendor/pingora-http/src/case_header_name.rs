// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

use crate::*;
use bytes::{BufMut, Bytes};

/// A header name as given by the caller, in any case. Gatehouse patch: only its
/// lower-cased form is kept (as the map key); see [put_title_case] for the wire.
#[derive(Debug, Clone)]
pub struct CaseHeaderName(Bytes);

impl CaseHeaderName {
    pub fn new(name: String) -> Self {
        CaseHeaderName(name.into())
    }
}

impl CaseHeaderName {
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    pub fn from_slice(buf: &[u8]) -> Self {
        CaseHeaderName(Bytes::copy_from_slice(buf))
    }
}

/// A trait for the types a header name can be given as.
pub trait IntoCaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName;

    /// Gatehouse patch: the header's map key. The default parses it from the
    /// bytes; a [HeaderName] is used as it is, without parsing it again.
    fn into_header_name(self) -> Result<HeaderName>
    where
        Self: Sized,
    {
        parse_header_name(self.into_case_header_name().as_slice())
    }
}

fn parse_header_name(name: &[u8]) -> Result<HeaderName> {
    HeaderName::from_bytes(name).or_err(InvalidHTTPHeader, "invalid header name")
}

impl IntoCaseHeaderName for CaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        self
    }
}

impl IntoCaseHeaderName for String {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }

    fn into_header_name(self) -> Result<HeaderName> {
        parse_header_name(self.as_bytes())
    }
}

impl IntoCaseHeaderName for &'static str {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }

    fn into_header_name(self) -> Result<HeaderName> {
        parse_header_name(self.as_bytes())
    }
}

impl IntoCaseHeaderName for HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(Bytes::copy_from_slice(self.as_str().as_bytes()))
    }

    fn into_header_name(self) -> Result<HeaderName> {
        Ok(self)
    }
}

impl IntoCaseHeaderName for &HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(Bytes::copy_from_slice(self.as_str().as_bytes()))
    }

    fn into_header_name(self) -> Result<HeaderName> {
        Ok(self.clone())
    }
}

impl IntoCaseHeaderName for Bytes {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self)
    }

    fn into_header_name(self) -> Result<HeaderName> {
        parse_header_name(&self)
    }
}

/// Gatehouse patch: writes a lower-case header name in canonical Title-Case:
/// the first letter and each letter after a `-` upper-cased (`x-api-key` as
/// `X-Api-Key`). Names whose registered or customary spelling is not
/// Title-Case go out in that spelling (`ETag`, `WWW-Authenticate`,
/// `X-Real-IP`, `Sec-WebSocket-Key`, ...). Works through a stack buffer, 64
/// bytes at a time.
#[inline]
pub(crate) fn put_title_case(buf: &mut impl BufMut, name: &[u8]) {
    if let Some(spelling) = customary_spelling(name) {
        buf.put_slice(spelling.as_bytes());
        return;
    }
    let mut chunk = [0u8; 64];
    let mut upper = true;
    for part in name.chunks(chunk.len()) {
        let out = &mut chunk[..part.len()];
        for (o, &b) in out.iter_mut().zip(part) {
            *o = if upper { b.to_ascii_uppercase() } else { b };
            upper = b == b'-';
        }
        buf.put_slice(out);
    }
}

/// The spelling of well-known names that Title-Case would get wrong.
fn customary_spelling(name: &[u8]) -> Option<&'static str> {
    Some(match name {
        b"etag" => "ETag",
        b"te" => "TE",
        b"dnt" => "DNT",
        b"www-authenticate" => "WWW-Authenticate",
        b"content-md5" => "Content-MD5",
        b"x-real-ip" => "X-Real-IP",
        b"x-xss-protection" => "X-XSS-Protection",
        b"x-ua-compatible" => "X-UA-Compatible",
        b"x-dns-prefetch-control" => "X-DNS-Prefetch-Control",
        b"sec-websocket-key" => "Sec-WebSocket-Key",
        b"sec-websocket-accept" => "Sec-WebSocket-Accept",
        b"sec-websocket-version" => "Sec-WebSocket-Version",
        b"sec-websocket-protocol" => "Sec-WebSocket-Protocol",
        b"sec-websocket-extensions" => "Sec-WebSocket-Extensions",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    #[test]
    fn test_case_header_name() {
        assert_eq!("FoO".into_case_header_name().as_slice(), b"FoO");
        assert_eq!("FoO".to_string().into_case_header_name().as_slice(), b"FoO");
        assert_eq!(header::SERVER.into_case_header_name().as_slice(), b"server");
    }

    #[test]
    fn test_header_names() {
        assert_eq!(header::SERVER.into_header_name().unwrap(), header::SERVER);
        assert_eq!("X-Foo".into_header_name().unwrap().as_str(), "x-foo");
        assert_eq!(
            String::from("X-Foo").into_header_name().unwrap().as_str(),
            "x-foo"
        );
        assert!("bad name".into_header_name().is_err());
    }

    #[test]
    fn test_title_case() {
        let title = |name: &str| {
            let mut buf = Vec::new();
            put_title_case(&mut buf, name.as_bytes());
            String::from_utf8(buf).unwrap()
        };
        assert_eq!(title("content-type"), "Content-Type");
        assert_eq!(title("x-request-id"), "X-Request-Id");
        assert_eq!(title("te"), "TE");
        assert_eq!(title("etag"), "ETag");
        assert_eq!(title("x-real-ip"), "X-Real-IP");
        assert_eq!(title("sec-websocket-accept"), "Sec-WebSocket-Accept");
        assert_eq!(title("www-authenticate"), "WWW-Authenticate");
        assert_eq!(title(""), "");
        assert_eq!(title("a-"), "A-");
    }
}
