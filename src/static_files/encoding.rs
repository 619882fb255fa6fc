//! `Accept-Encoding` → which precompressed sibling (`.br`, `.gz`) to send.
//!
//! A coding is acceptable when it is listed with a q-value above 0, or when
//! `*` is (with a q-value above 0) and the coding is not listed. Among the
//! acceptable siblings that exist the highest q-value wins; on a tie `br` is
//! preferred over `gzip`. `x-gzip` counts as `gzip`. Without an acceptable
//! sibling the file is sent as it is (`identity` is never refused).

use http::header::{self, HeaderMap};

/// A content coding Gatehouse can serve from a precompressed sibling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Coding {
    Identity,
    Brotli,
    Gzip,
}

impl Coding {
    /// The sibling file suffix, e.g. `.br`.
    pub(super) fn suffix(self) -> &'static str {
        match self {
            Coding::Identity => "",
            Coding::Brotli => ".br",
            Coding::Gzip => ".gz",
        }
    }

    /// The `Content-Encoding` token.
    pub(super) fn token(self) -> &'static str {
        match self {
            Coding::Identity => "identity",
            Coding::Brotli => "br",
            Coding::Gzip => "gzip",
        }
    }
}

/// q-values in thousandths, as RFC 9110 §12.4.2 allows three decimals.
type Q = u16;

/// Chooses the coding to send, given which siblings exist.
pub(super) fn choose(headers: &HeaderMap, have_br: bool, have_gzip: bool) -> Coding {
    if !have_br && !have_gzip {
        return Coding::Identity;
    }
    let (mut br, mut gzip, mut star): (Option<Q>, Option<Q>, Option<Q>) = (None, None, None);
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(text) = value.to_str() else { continue };
        for element in text.split(',') {
            let mut parts = element.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let Some(q) = parts.try_fold(1000, |q, p| param_q(p).map(|v| v.unwrap_or(q))) else {
                continue;
            };
            let slot = if coding.eq_ignore_ascii_case("br") {
                &mut br
            } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                &mut gzip
            } else if coding == "*" {
                &mut star
            } else {
                continue;
            };
            *slot = Some(slot.map_or(q, |old: Q| old.max(q)));
        }
    }
    let br = if have_br { br.or(star).unwrap_or(0) } else { 0 };
    let gzip = if have_gzip {
        gzip.or(star).unwrap_or(0)
    } else {
        0
    };
    match (br, gzip) {
        (0, 0) => Coding::Identity,
        (b, g) if b >= g => Coding::Brotli,
        _ => Coding::Gzip,
    }
}

/// One `;name=value` parameter: `Some(Some(q))` for a valid `q`,
/// `Some(None)` for another parameter, `None` for an invalid `q`.
fn param_q(param: &str) -> Option<Option<Q>> {
    let Some((name, value)) = param.split_once('=') else {
        return Some(None);
    };
    if !name.trim().eq_ignore_ascii_case("q") {
        return Some(None);
    }
    parse_q(value.trim()).map(Some)
}

/// `0`, `0.5`, `1`, `1.000` → thousandths; anything else is invalid.
fn parse_q(text: &str) -> Option<Q> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: Q = 0;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += Q::from(b - b'0') * [100, 10, 1][i];
    }
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn pick(accept: &str, br: bool, gz: bool) -> Coding {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(accept).unwrap_or_else(|e| panic!("{e}")),
        );
        choose(&h, br, gz)
    }

    #[test]
    fn prefers_br_then_gzip() {
        assert_eq!(pick("gzip, deflate, br", true, true), Coding::Brotli);
        assert_eq!(pick("gzip, deflate, br", false, true), Coding::Gzip);
        assert_eq!(pick("gzip", true, true), Coding::Gzip);
        assert_eq!(pick("br", false, true), Coding::Identity);
        assert_eq!(pick("identity", true, true), Coding::Identity);
        assert_eq!(pick("", true, true), Coding::Identity);
        assert_eq!(choose(&HeaderMap::new(), true, true), Coding::Identity);
    }

    #[test]
    fn honours_q_values() {
        assert_eq!(pick("br;q=0, gzip", true, true), Coding::Gzip);
        assert_eq!(pick("br;q=0.0, gzip;q=0", true, true), Coding::Identity);
        assert_eq!(pick("gzip;q=1.0, br;q=0.5", true, true), Coding::Gzip);
        assert_eq!(pick("BR;Q=0.9, GZIP;q=0.9", true, true), Coding::Brotli);
        assert_eq!(pick("*", true, true), Coding::Brotli);
        assert_eq!(pick("*;q=0", true, true), Coding::Identity);
        assert_eq!(pick("br;q=0, *", true, true), Coding::Gzip);
        assert_eq!(pick("x-gzip", true, true), Coding::Gzip);
        // An invalid q-value drops the element.
        assert_eq!(pick("br;q=2, gzip", true, true), Coding::Gzip);
        assert_eq!(pick("br;q=abc", true, false), Coding::Identity);
    }

    #[test]
    fn q_values() {
        assert_eq!(parse_q("0"), Some(0));
        assert_eq!(parse_q("0.001"), Some(1));
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("1.5"), None);
        assert_eq!(parse_q("0.0001"), None);
        assert_eq!(parse_q(""), None);
        assert_eq!(parse_q("-1"), None);
    }
}
