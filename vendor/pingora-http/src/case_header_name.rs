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
/// bytes at a time (see [title_case_into]).
#[inline]
pub(crate) fn put_title_case(buf: &mut impl BufMut, name: &[u8]) {
    let mut chunk = [0u8; 64];
    if let Some(spelling) = customary_spelling(name) {
        buf.put_slice(spelling.as_bytes());
        return;
    }
    let mut starts_word = true;
    for part in name.chunks(chunk.len()) {
        let out = &mut chunk[..part.len()];
        starts_word = title_case_words(out, part, starts_word);
        buf.put_slice(out);
    }
}

/// Gatehouse patch: [put_title_case] into `out`, which must be at least as long as `name`;
/// gives the length written (that of `name`, or of its customary spelling, which is never
/// longer). Bytes of `out` after that length may be overwritten.
///
/// The bytes after the last whole eight are done as one more word, not one at a time
/// (about 7 instructions a byte, on most names of every head): a name of 8 bytes or more
/// ends with its last eight bytes again, overlapping the word before (a byte's case
/// depends only on the byte before it, so the overlap is written twice the same); a name
/// of 4 to 7 bytes is read as two overlapping 4-byte halves and written as a whole word
/// when `out` has room for it.
#[inline]
pub(crate) fn title_case_into(out: &mut [u8], name: &[u8]) -> usize {
    if let Some(spelling) = customary_spelling(name) {
        out[..spelling.len()].copy_from_slice(spelling.as_bytes());
        return spelling.len();
    }
    let n = name.len();
    if n >= 8 {
        let whole = n - n % 8;
        title_case_words(&mut out[..whole], &name[..whole], true);
        if whole < n {
            let last = n - 8;
            let carry = if name[last - 1] == b'-' { 0x80 } else { 0 };
            let (upper, _) = title_case_word(word_at(name, last), carry);
            out[last..n].copy_from_slice(&upper.to_le_bytes());
        }
    } else if n >= 4 && out.len() >= 8 {
        let half = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&name[at..at + 4]);
            u64::from(u32::from_le_bytes(b))
        };
        // The bytes both halves hold are the same, so or-ing them keeps them.
        let word = half(0) | (half(n - 4) << (8 * (n - 4)));
        let (upper, _) = title_case_word(word, 0x80);
        out[..8].copy_from_slice(&upper.to_le_bytes());
    } else {
        title_case_words(&mut out[..n], name, true);
    }
    n
}

/// The eight bytes of `name` from `at` as a little-endian word.
#[inline]
fn word_at(name: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&name[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Title-Case of `name` into `out` (the same length), eight bytes at a time (a byte at a
/// time cost ~7 instructions per byte on every name of every head written). `starts_word`:
/// whether the first byte starts a word; gives the same for the byte after the last.
#[inline]
fn title_case_words(out: &mut [u8], name: &[u8], starts_word: bool) -> bool {
    // 0x80 in the lowest byte: the next byte starts a word.
    let mut carry = if starts_word { 0x80u64 } else { 0 };
    let mut outs = out.chunks_exact_mut(8);
    let mut ins = name.chunks_exact(8);
    for (o, i) in (&mut outs).zip(&mut ins) {
        let (upper, next) = title_case_word(word_at(i, 0), carry);
        o.copy_from_slice(&upper.to_le_bytes());
        carry = next;
    }
    let mut start = carry != 0;
    for (o, &b) in outs.into_remainder().iter_mut().zip(ins.remainder()) {
        *o = if start { b.to_ascii_uppercase() } else { b };
        start = b == b'-';
    }
    start
}

/// Eight name bytes (little-endian) in Title-Case, given whether the first
/// starts a word (`carry`, 0x80 or 0); also returns the same for the byte
/// after them. Bytes of 0x80 and above (not in a header name) are left as
/// they are.
#[inline]
fn title_case_word(x: u64, carry: u64) -> (u64, u64) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let ascii = !x & HIGH;
    let low = x & LOW7;
    // Exact per-byte test for `-` (no borrow between bytes).
    let d = low ^ (ONES * b'-' as u64);
    let dash = !((d + LOW7) | d) & ascii;
    // b'a' <= byte <= b'z' (the sums of 7-bit values never carry out of a byte).
    let letter = (low + ONES * (0x80 - b'a' as u64)) & !(low + ONES * (0x80 - b'z' as u64 - 1));
    let starts = (dash << 8) | carry;
    let upper = x ^ ((starts & letter & ascii) >> 2);
    (upper, (dash >> 56) & 0x80)
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
        // Eight-byte words: a `-` at the end of one starts the next.
        assert_eq!(title("x-forwarded-for"), "X-Forwarded-For");
        assert_eq!(title("abcdefg-hijklmn-o"), "Abcdefg-Hijklmn-O");
        assert_eq!(
            title("access-control-allow-origin"),
            "Access-Control-Allow-Origin"
        );
        assert_eq!(title("x-1a-{|}~-z09_`az"), "X-1a-{|}~-Z09_`az");
    }

    #[test]
    fn title_case_into_a_buffer() {
        let mut out = [0u8; 64];
        let n = title_case_into(&mut out, b"x-forwarded-proto");
        assert_eq!(&out[..n], b"X-Forwarded-Proto");
        let n = title_case_into(&mut out, b"www-authenticate");
        assert_eq!(&out[..n], b"WWW-Authenticate");
        let n = title_case_into(&mut out, b"a");
        assert_eq!(&out[..n], b"A");
    }

    #[test]
    fn title_case_into_matches_the_byte_rule_at_every_length() {
        // Every length from 1 to 40 (the whole-word, overlapping-tail and half-word
        // paths), with dashes at every position, into a roomy buffer and a tight one.
        let base = b"ab-cd-e-fghij-k--lmnop-qrs-tuv-wxyz-0a-b";
        for n in 1..=base.len() {
            for dash in 0..n {
                let mut name = base[..n].to_vec();
                name[dash] = b'-';
                if customary_spelling(&name).is_some() {
                    continue;
                }
                let mut want = Vec::new();
                let mut upper = true;
                for &b in &name {
                    want.push(if upper { b.to_ascii_uppercase() } else { b });
                    upper = b == b'-';
                }
                let mut roomy = [0u8; 64];
                let len = title_case_into(&mut roomy, &name);
                assert_eq!(&roomy[..len], &want[..], "{}", String::from_utf8_lossy(&name));
                let mut tight = vec![0u8; n];
                let len = title_case_into(&mut tight, &name);
                assert_eq!(&tight[..len], &want[..], "{}", String::from_utf8_lossy(&name));
            }
        }
    }

    #[test]
    fn title_case_matches_the_byte_rule() {
        // Every token byte at every position of a name longer than one
        // 64-byte chunk, after a `-` and not.
        let token: Vec<u8> = (0u8..128)
            .filter(|b| b.is_ascii_graphic() && !b"\"(),/:;<=>?@[\\]{}".contains(b))
            .map(|b| b.to_ascii_lowercase())
            .collect();
        for shift in 0..token.len() {
            let mut name = token.clone();
            name.rotate_left(shift);
            name.extend_from_slice(b"-");
            name.extend_from_slice(&token);
            let mut want = Vec::new();
            let mut upper = true;
            for &b in &name {
                want.push(if upper { b.to_ascii_uppercase() } else { b });
                upper = b == b'-';
            }
            let mut got = Vec::new();
            put_title_case(&mut got, &name);
            if customary_spelling(&name).is_none() {
                assert_eq!(got, want, "{}", String::from_utf8_lossy(&name));
            }
        }
    }
}
