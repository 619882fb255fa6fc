//! Which representation of a file to send, by `Accept-Encoding`
//! ([`crate::compression::accept`] has the rules): the file itself, a
//! precompressed sibling (`.br`, `.gz`) or a variant Gatehouse compressed.
//!
//! Siblings are always candidates; a variant Gatehouse makes is one for the
//! codings without a sibling. Ties go to the server's preference:
//! `compression.algorithms`, then the sibling codings it does not list
//! (`br` before `gzip`, also when `[compression]` is absent).

use http::header::HeaderMap;

use crate::compression::Accepted;
use crate::config::Algorithm;

/// A content coding of a file's representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Coding {
    Identity,
    Zstd,
    Brotli,
    Gzip,
}

impl Coding {
    /// The sibling file suffix, e.g. `.br` (none for zstd: not looked for).
    pub(super) fn suffix(self) -> &'static str {
        match self {
            Coding::Identity | Coding::Zstd => "",
            Coding::Brotli => ".br",
            Coding::Gzip => ".gz",
        }
    }

    /// The `Content-Encoding` token.
    pub(super) fn token(self) -> &'static str {
        self.algorithm().map_or("identity", Algorithm::token)
    }

    pub(super) fn algorithm(self) -> Option<Algorithm> {
        match self {
            Coding::Identity => None,
            Coding::Zstd => Some(Algorithm::Zstd),
            Coding::Brotli => Some(Algorithm::Brotli),
            Coding::Gzip => Some(Algorithm::Gzip),
        }
    }
}

impl From<Algorithm> for Coding {
    fn from(a: Algorithm) -> Coding {
        match a {
            Algorithm::Zstd => Coding::Zstd,
            Algorithm::Brotli => Coding::Brotli,
            Algorithm::Gzip => Coding::Gzip,
        }
    }
}

/// The server's order of preference: `algorithms` (of `[compression]`),
/// then the sibling codings it leaves out.
pub(super) fn preference(algorithms: Option<&[Algorithm]>) -> Vec<Algorithm> {
    let mut order = algorithms.map(<[Algorithm]>::to_vec).unwrap_or_default();
    for sibling in [Algorithm::Brotli, Algorithm::Gzip] {
        if !order.contains(&sibling) {
            order.push(sibling);
        }
    }
    order
}

/// The coding to send, of those `available`.
pub(super) fn choose(
    headers: &HeaderMap,
    preference: &[Algorithm],
    available: impl Fn(Algorithm) -> bool,
) -> Coding {
    Accepted::parse(headers)
        .choose(preference, available)
        .map_or(Coding::Identity, Coding::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;
    use http::HeaderValue;

    fn pick(accept: &str, br: bool, gz: bool) -> Coding {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(accept).unwrap_or_else(|e| panic!("{e}")),
        );
        choose(&h, &preference(None), |a| match a {
            Algorithm::Brotli => br,
            Algorithm::Gzip => gz,
            Algorithm::Zstd => false,
        })
    }

    #[test]
    fn prefers_br_then_gzip() {
        assert_eq!(pick("gzip, deflate, br", true, true), Coding::Brotli);
        assert_eq!(pick("gzip, deflate, br", false, true), Coding::Gzip);
        assert_eq!(pick("gzip", true, true), Coding::Gzip);
        assert_eq!(pick("br", false, true), Coding::Identity);
        assert_eq!(pick("identity", true, true), Coding::Identity);
        assert_eq!(pick("", true, true), Coding::Identity);
        assert_eq!(pick("zstd", true, true), Coding::Identity);
    }

    #[test]
    fn honours_q_values() {
        assert_eq!(pick("br;q=0, gzip", true, true), Coding::Gzip);
        assert_eq!(pick("br;q=0.0, gzip;q=0", true, true), Coding::Identity);
        assert_eq!(pick("gzip;q=1.0, br;q=0.5", true, true), Coding::Gzip);
        assert_eq!(pick("*", true, true), Coding::Brotli);
        assert_eq!(pick("*;q=0", true, true), Coding::Identity);
        assert_eq!(pick("br;q=0, *", true, true), Coding::Gzip);
        assert_eq!(pick("br;q=2, gzip", true, true), Coding::Gzip);
    }

    #[test]
    fn preference_lists_configured_codings_first() {
        use Algorithm::*;
        assert_eq!(preference(None), [Brotli, Gzip]);
        assert_eq!(preference(Some(&[Zstd, Gzip])), [Zstd, Gzip, Brotli]);
        assert_eq!(
            preference(Some(&[Gzip, Zstd, Brotli])),
            [Gzip, Zstd, Brotli]
        );
    }
}
