//! Request path → a safe, normalized path below the site root.
//!
//! This is the only place that decides whether a request path may reach the
//! file system. The rules, in order:
//!
//! 1. the raw path must start with `/` and contain no `\`, `%2f` or `%5c`
//!    (any case): an encoded separator is refused before decoding;
//! 2. percent-decoding is done exactly once and must give UTF-8 without NUL;
//! 3. no segment may be `..` (raw, or decoded from `%2e%2e`, `.%2e`, …);
//! 4. empty and `.` segments are dropped (`//` and `/./` merge, as in Nginx);
//! 5. a segment starting with `.` (a hidden file or directory) is not found,
//!    except `.well-known` (RFC 8615: ACME, `security.txt`, app links).
//!
//! Rules 1–3 give 400, rule 5 gives 404. What passes is a [`SafePath`] whose
//! segments can be pushed onto the root one by one.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// The one hidden directory that is served.
const WELL_KNOWN: &str = ".well-known";

/// Why a request path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PathError {
    /// Malformed or hostile: 400.
    Bad,
    /// Names a hidden file or directory: 404.
    Hidden,
}

/// A decoded, normalized request path that stays below the root.
///
/// The text is `/` followed by the segments joined with `/`, with a trailing
/// `/` when the request names a directory (`/`, `/docs/`). It is also the
/// cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SafePath<'a>(Cow<'a, str>);

impl<'a> SafePath<'a> {
    /// Checks and normalizes `raw` (percent-encoded, without the query).
    pub(super) fn parse(raw: &'a str) -> Result<SafePath<'a>, PathError> {
        if !raw.starts_with('/') || raw.contains('\\') || has_encoded_separator(raw) {
            return Err(PathError::Bad);
        }
        let decoded = if raw.contains('%') {
            percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| PathError::Bad)?
        } else {
            Cow::Borrowed(raw)
        };
        if decoded.contains(['\0', '\\']) {
            return Err(PathError::Bad);
        }
        let mut hidden = false;
        let mut normal = true;
        let mut segments = decoded[1..].split('/').peekable();
        while let Some(segment) = segments.next() {
            let last = segments.peek().is_none();
            match segment {
                ".." => return Err(PathError::Bad),
                "" => normal &= last,
                "." => normal = false,
                WELL_KNOWN => {}
                s if s.starts_with('.') => hidden = true,
                _ => {}
            }
        }
        if hidden {
            return Err(PathError::Hidden);
        }
        if normal {
            return Ok(SafePath(decoded));
        }
        let dir = decoded.ends_with('/') || decoded.ends_with("/.");
        let mut text = String::with_capacity(decoded.len());
        for segment in decoded.split('/').filter(|s| !s.is_empty() && *s != ".") {
            text.push('/');
            text.push_str(segment);
        }
        if dir || text.is_empty() {
            text.push('/');
        }
        Ok(SafePath(Cow::Owned(text)))
    }

    /// Rebuilds a path from its [`as_str`](Self::as_str) text (already checked).
    pub(super) fn from_checked(text: &'a str) -> SafePath<'a> {
        SafePath(Cow::Borrowed(text))
    }

    /// The normalized text, e.g. `/docs/` or `/assets/app.js`.
    pub(super) fn as_str(&self) -> &str {
        &self.0
    }

    /// The decoded segments, none empty, `.` or `..`.
    pub(super) fn segments(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.0.split('/').filter(|s| !s.is_empty())
    }

    /// Whether the request names a directory (ends with `/`).
    pub(super) fn is_dir(&self) -> bool {
        self.0.ends_with('/')
    }

    /// The last segment; `None` for `/`.
    pub(super) fn last(&self) -> Option<&str> {
        self.segments().next_back()
    }
}

fn has_encoded_separator(raw: &str) -> bool {
    raw.as_bytes().windows(3).any(|w| {
        w[0] == b'%' && w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f')
            || w[0] == b'%' && w[1] == b'5' && w[2].eq_ignore_ascii_case(&b'c')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        match SafePath::parse(raw) {
            Ok(p) => p.as_str().to_string(),
            Err(e) => panic!("{raw:?} refused: {e:?}"),
        }
    }

    #[test]
    fn normal_paths_are_kept_as_they_are() {
        assert!(matches!(
            SafePath::parse("/a/b.js"),
            Ok(SafePath(Cow::Borrowed(_)))
        ));
        assert_eq!(ok("/"), "/");
        assert_eq!(ok("/docs/"), "/docs/");
        assert_eq!(ok("/a%20b.txt"), "/a b.txt");
        assert_eq!(ok("/caf%C3%A9"), "/café");
        assert_eq!(ok("/.well-known/security.txt"), "/.well-known/security.txt");
    }

    #[test]
    fn slashes_and_dots_merge() {
        assert_eq!(ok("//a///b"), "/a/b");
        assert_eq!(ok("/a/./b/"), "/a/b/");
        assert_eq!(ok("/a/."), "/a/");
        assert_eq!(ok("/."), "/");
        assert_eq!(ok("/%2e/a"), "/a");
        assert_eq!(ok("//"), "/");
    }

    #[test]
    fn hostile_paths_are_bad_requests() {
        for raw in [
            "",
            "a/b",
            "/../etc/passwd",
            "/a/../../b",
            "/..",
            "/%2e%2e/x",
            "/%2E%2E/x",
            "/.%2e/x",
            "/%2e./x",
            "/a/%2f..",
            "/a%2F..",
            "/a%5c..%5cb",
            "/a%5C..",
            "/a\\b",
            "/%00",
            "/a%00.html",
            "/..%2f",
            "/%ff%fe",
        ] {
            assert_eq!(SafePath::parse(raw), Err(PathError::Bad), "{raw:?}");
        }
    }

    #[test]
    fn hidden_segments_are_not_found() {
        for raw in [
            "/.env",
            "/.git/config",
            "/a/.htpasswd",
            "/%2egit/HEAD",
            "/...",
        ] {
            assert_eq!(SafePath::parse(raw), Err(PathError::Hidden), "{raw:?}");
        }
    }

    #[test]
    fn decoding_happens_once() {
        // `%252e%252e` decodes to the literal name `%2e%2e`, not to `..`.
        assert_eq!(ok("/%252e%252e/x"), "/%2e%2e/x");
    }

    #[test]
    fn segments_and_last() {
        let p = SafePath::parse("/a/b/c.txt").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(p.segments().collect::<Vec<_>>(), ["a", "b", "c.txt"]);
        assert_eq!(p.last(), Some("c.txt"));
        assert!(!p.is_dir());
        let root = SafePath::parse("/").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(root.last(), None);
        assert!(root.is_dir());
    }
}
