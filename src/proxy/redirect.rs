//! The plain listener's redirect to HTTPS.
//!
//! The Location is built from the request's own `Host` (its port dropped) and
//! the configured HTTPS port, so the redirect can only point at the host the
//! client asked for. A missing or malformed Host gets 400 instead.

/// Bytes of a host name or IPv4 address: ASCII letters, digits, `.` and `-`.
const NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'.' || c == b'-';
        b += 1;
    }
    table
};

/// The host part of a `Host` header value, without its port, when it is a
/// plausible host name, IPv4 address or bracketed IPv6 address.
pub fn host_without_port(host: &str) -> Option<&str> {
    if host.is_empty() || host.len() > 255 {
        return None;
    }
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let end = rest.find(']')?;
        let inside = &rest[..end];
        if inside.is_empty()
            || !inside
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return None;
        }
        (&host[..end + 2], &rest[end + 1..])
    } else {
        // One pass (this runs on every request): the name is the run of name
        // bytes; whatever follows must be the port. A second `:` or any other
        // byte is then not a port, as when splitting at the last `:`.
        let end = host
            .bytes()
            .position(|b| !NAME_BYTES[usize::from(b)])
            .unwrap_or(host.len());
        let name = &host[..end];
        if name.is_empty() || name.starts_with(['.', '-']) {
            return None;
        }
        (name, &host[end..])
    };
    if !port.is_empty() {
        let digits = port.strip_prefix(':')?;
        if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    Some(name)
}

/// `https://host[:port]/path?query` for a redirect, or `None` for a bad Host.
pub fn https_location(host: &str, https_port: u16, path_and_query: &str) -> Option<String> {
    let name = host_without_port(host)?;
    let path = if path_and_query.starts_with('/') {
        path_and_query
    } else {
        "/"
    };
    Some(if https_port == 443 {
        format!("https://{name}{path}")
    } else {
        format!("https://{name}:{https_port}{path}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_path_and_query_and_swaps_port() {
        assert_eq!(
            https_location("example.com:8080", 8443, "/a/b?x=1").as_deref(),
            Some("https://example.com:8443/a/b?x=1")
        );
        assert_eq!(
            https_location("example.com", 443, "/").as_deref(),
            Some("https://example.com/")
        );
        assert_eq!(
            https_location("[::1]:8080", 8443, "/").as_deref(),
            Some("https://[::1]:8443/")
        );
        assert_eq!(
            https_location("127.0.0.1", 8443, "/x").as_deref(),
            Some("https://127.0.0.1:8443/x")
        );
    }

    /// The split at the last `:` this replaced, as the reference.
    fn split_at_last_colon(host: &str) -> Option<&str> {
        if host.is_empty() || host.len() > 255 || host.starts_with('[') {
            return None;
        }
        let (name, port) = match host.bytes().rposition(|b| b == b':') {
            Some(i) => (&host[..i], &host[i..]),
            None => (host, ""),
        };
        if !port.is_empty() {
            let digits = port.strip_prefix(':')?;
            if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
        }
        let valid = !name.is_empty()
            && !name.starts_with(['.', '-'])
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        valid.then_some(name)
    }

    #[test]
    fn one_pass_agrees_with_the_split_at_the_last_colon() {
        let parts = [
            "",
            "a",
            "example.com",
            "127.0.0.1",
            ":",
            "8080",
            "123456",
            "-",
            ".",
            "_",
            " ",
            "é",
            "x:",
        ];
        for a in parts {
            for b in parts {
                for c in parts {
                    let host = format!("{a}{b}{c}");
                    assert_eq!(
                        host_without_port(&host),
                        split_at_last_colon(&host),
                        "{host:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn refuses_hosts_that_could_redirect_elsewhere() {
        for bad in [
            "",
            "evil.com/x",
            "a b",
            "user@evil.com",
            "evil.com:80:80",
            "evil.com:",
            "evil.com:http",
            "[::1",
            "[evil.com]",
            ".evil.com",
            "evil.com\\x",
            "evil.com?",
            "evil.com#",
        ] {
            assert_eq!(https_location(bad, 8443, "/"), None, "{bad:?}");
        }
    }
}
