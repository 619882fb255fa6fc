//! `Accept-Encoding` (RFC 9110 §12.5.3): which content codings the client
//! takes, with their q-values.
//!
//! A coding is acceptable when it is listed with a q-value above 0, or when
//! `*` is (with a q-value above 0) and the coding is not listed by name.
//! `q=0` refuses. `x-gzip` counts as `gzip`. An element whose q-value is not
//! valid (`q=2`, `q=abc`, `q=0.0001`) is ignored. Among acceptable codings the
//! highest q-value wins and the server's order of preference breaks ties. An
//! explicit `identity` with a higher q-value than every acceptable coding
//! keeps the answer as it is. `identity` is never refused (no 406: the answer
//! is sent as it is, as Nginx does).

use http::header::{self, HeaderMap};

use crate::config::Algorithm;

/// q-values in thousandths, as RFC 9110 §12.4.2 allows three decimals.
type Q = u16;

/// What one request's `Accept-Encoding` headers say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accepted {
    zstd: Option<Q>,
    br: Option<Q>,
    gzip: Option<Q>,
    identity: Option<Q>,
    star: Option<Q>,
}

impl Accepted {
    /// Parses every `Accept-Encoding` header of `headers` (none: nothing accepted).
    pub fn parse(headers: &HeaderMap) -> Accepted {
        let mut a = Accepted::default();
        for value in headers.get_all(header::ACCEPT_ENCODING) {
            let Ok(text) = value.to_str() else { continue };
            for element in text.split(',') {
                let mut parts = element.split(';');
                let coding = parts.next().unwrap_or("").trim();
                let Some(q) = parts.try_fold(1000, |q, p| param_q(p).map(|v| v.unwrap_or(q)))
                else {
                    continue;
                };
                let slot = if coding.eq_ignore_ascii_case("zstd") {
                    &mut a.zstd
                } else if coding.eq_ignore_ascii_case("br") {
                    &mut a.br
                } else if coding.eq_ignore_ascii_case("gzip")
                    || coding.eq_ignore_ascii_case("x-gzip")
                {
                    &mut a.gzip
                } else if coding.eq_ignore_ascii_case("identity") {
                    &mut a.identity
                } else if coding == "*" {
                    &mut a.star
                } else {
                    continue;
                };
                // A coding listed twice keeps its best q-value.
                *slot = Some(slot.map_or(q, |old: Q| old.max(q)));
            }
        }
        a
    }

    /// The q-value of `coding` (0: not acceptable).
    fn q(&self, coding: Algorithm) -> Q {
        let named = match coding {
            Algorithm::Zstd => self.zstd,
            Algorithm::Brotli => self.br,
            Algorithm::Gzip => self.gzip,
        };
        named.or(self.star).unwrap_or(0)
    }

    /// The coding to send: of `preference` (the server's order), those for
    /// which `available` holds and the client accepts, the one with the
    /// highest q-value, the earliest on a tie; `None` for the answer as it is.
    pub fn choose(
        &self,
        preference: &[Algorithm],
        available: impl Fn(Algorithm) -> bool,
    ) -> Option<Algorithm> {
        let mut best: Option<(Algorithm, Q)> = None;
        for &coding in preference {
            let q = self.q(coding);
            if q > 0 && available(coding) && best.is_none_or(|(_, b)| q > b) {
                best = Some((coding, q));
            }
        }
        let (coding, q) = best?;
        match self.identity {
            Some(identity) if identity > q => None,
            _ => Some(coding),
        }
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
    use Algorithm::{Brotli, Gzip, Zstd};

    const ALL: &[Algorithm] = &[Zstd, Brotli, Gzip];

    fn accepted(accept: &str) -> Accepted {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(accept).unwrap_or_else(|e| panic!("{e}")),
        );
        Accepted::parse(&h)
    }

    fn pick(accept: &str, preference: &[Algorithm]) -> Option<Algorithm> {
        accepted(accept).choose(preference, |_| true)
    }

    #[test]
    fn server_preference_among_equals() {
        assert_eq!(pick("gzip, deflate, br, zstd", ALL), Some(Zstd));
        assert_eq!(pick("gzip, deflate, br, zstd", &[Gzip, Brotli]), Some(Gzip));
        assert_eq!(pick("gzip, deflate, br", ALL), Some(Brotli));
        assert_eq!(pick("gzip", ALL), Some(Gzip));
        assert_eq!(pick("br", &[Zstd, Gzip]), None);
        assert_eq!(pick("deflate", ALL), None);
        assert_eq!(pick("identity", ALL), None);
        assert_eq!(pick("", ALL), None);
        assert_eq!(
            Accepted::parse(&HeaderMap::new()).choose(ALL, |_| true),
            None
        );
    }

    #[test]
    fn q_values_outrank_preference() {
        assert_eq!(pick("zstd;q=0.5, br;q=0.8, gzip", ALL), Some(Gzip));
        assert_eq!(pick("gzip;q=1.0, br;q=0.5", ALL), Some(Gzip));
        assert_eq!(pick("BR;Q=0.9, GZIP;q=0.9", ALL), Some(Brotli));
        assert_eq!(pick("zstd;q=0, br;q=0.1", ALL), Some(Brotli));
        assert_eq!(pick("zstd;q=0.0, br;q=0, gzip;q=0.000", ALL), None);
        // A coding listed twice keeps its best q-value.
        assert_eq!(pick("gzip;q=0.2, br;q=0.5, gzip", ALL), Some(Gzip));
    }

    #[test]
    fn star_and_identity() {
        assert_eq!(pick("*", ALL), Some(Zstd));
        assert_eq!(pick("*;q=0", ALL), None);
        assert_eq!(pick("zstd;q=0, *", ALL), Some(Brotli));
        assert_eq!(pick("*;q=0.5, gzip", ALL), Some(Gzip));
        assert_eq!(pick("x-gzip", ALL), Some(Gzip));
        // identity preferred explicitly over every coding offered.
        assert_eq!(pick("identity, gzip;q=0.5", ALL), None);
        assert_eq!(pick("identity;q=0.5, gzip", ALL), Some(Gzip));
        // identity;q=0 refuses the answer as it is: compress when possible.
        assert_eq!(pick("gzip, identity;q=0", ALL), Some(Gzip));
        assert_eq!(pick("identity;q=0", ALL), None);
    }

    #[test]
    fn invalid_elements_are_ignored() {
        assert_eq!(pick("br;q=2, gzip", ALL), Some(Gzip));
        assert_eq!(pick("br;q=abc", ALL), None);
        assert_eq!(pick("zstd;level=3, gzip;q=0.5", ALL), Some(Zstd));
        assert_eq!(pick(",,; ;q=1, gzip", ALL), Some(Gzip));
    }

    #[test]
    fn availability_is_respected() {
        let a = accepted("zstd, br, gzip;q=0.5");
        assert_eq!(a.choose(ALL, |c| c != Zstd), Some(Brotli));
        assert_eq!(a.choose(ALL, |c| c == Gzip), Some(Gzip));
        assert_eq!(a.choose(ALL, |_| false), None);
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
