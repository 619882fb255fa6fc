//! Units in config values: durations, sizes, addresses, CIDR blocks, origins.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::defaults::MAX_WEIGHT;
use super::model::{OriginPattern, ServerAddr};

/// Parses `"500ms"`, `"5s"`, `"1m"`, `"1h"` (and combinations like `"1m30s"`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.trim_start().starts_with('-') {
        return Err(format!("duration {text:?} must not be negative"));
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("{text:?} is not a duration with a unit such as \"500ms\", \"5s\" or \"1m\" ({e})")
    })
}

/// Parses a size such as `"512"`, `"64KiB"`, `"10MiB"`, `"1GiB"` (k/m/g and kb/mb/gb are
/// taken as binary multiples too, as Nginx does).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("{text:?} is not a size such as \"512KiB\", \"10MiB\" or \"1GiB\"");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// An address (`10.0.0.1`) or a block (`10.0.0.0/8`).
pub fn parse_cidr(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// `"*"`, `"scheme://host[:port]"` or `"scheme://*.domain[:port]"`: no path,
/// no user, no query. Lower-cased; a default port (80, 443) is dropped, as
/// browsers drop it from `Origin`.
pub fn parse_origin(text: &str) -> Result<OriginPattern, String> {
    if text == "*" {
        return Ok(OriginPattern::Any);
    }
    let bad = |why: &str| {
        format!("{text:?} is not an origin ({why}): use \"https://host[:port]\", \"https://*.domain\" or \"*\"")
    };
    let lower = text.to_ascii_lowercase();
    let Some((scheme, authority)) = lower.split_once("://") else {
        return Err(bad("no scheme://"));
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(bad("a bad scheme"));
    }
    if authority.contains(['/', '?', '#']) {
        return Err(bad("an origin has no path"));
    }
    if authority.contains('@') {
        return Err(bad("an origin has no user"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, port)) if !h.ends_with(':') && !port.contains(']') => match port.parse::<u16>() {
            Ok(n) if n > 0 => (h, Some(n)),
            _ => return Err(bad("a bad port")),
        },
        _ => (authority, None),
    };
    let default_port = match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    };
    let port = match port {
        Some(n) if Some(n) != default_port => format!(":{n}"),
        _ => String::new(),
    };
    let bracketed = host.starts_with('[') && host.ends_with(']') && host.len() > 2;
    let name_ok = |h: &str| {
        !h.is_empty()
            && !h.starts_with('.')
            && !h.ends_with('.')
            && !h.contains("..")
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
    };
    if let Some(domain) = host.strip_prefix("*.") {
        if !name_ok(domain) {
            return Err(bad("a bad domain after *."));
        }
        return Ok(OriginPattern::Subdomains {
            scheme: format!("{scheme}://"),
            suffix: format!(".{domain}"),
            port,
        });
    }
    let ipv6_ok = bracketed
        && host[1..host.len() - 1]
            .chars()
            .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.'));
    if !(name_ok(host) || ipv6_ok) {
        return Err(bad("a bad host"));
    }
    Ok(OriginPattern::Exact(format!("{scheme}://{host}{port}")))
}

/// `"127.0.0.1:5000"` or `"127.0.0.1:5001 weight=2"`.
pub fn parse_server(text: &str) -> Result<ServerAddr, String> {
    let mut parts = text.split_whitespace();
    let addr_text = parts.next().unwrap_or("");
    let addr = addr_text.parse::<SocketAddr>().map_err(|_| {
        format!("{addr_text:?} is not an IP:port address (host names are not resolved)")
    })?;
    let mut weight = 1;
    for opt in parts {
        match opt.strip_prefix("weight=").map(str::parse::<u32>) {
            Some(Ok(w)) if (1..=MAX_WEIGHT).contains(&w) => weight = w,
            Some(_) => {
                return Err(format!(
                    "{opt:?}: weight must be a whole number from 1 to {MAX_WEIGHT}"
                ))
            }
            None => {
                return Err(format!(
                    "unknown server option {opt:?} (only weight=N is known)"
                ))
            }
        }
    }
    Ok(ServerAddr { addr, weight })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_units_and_are_not_negative() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    #[test]
    fn server_weights() {
        assert_eq!(
            parse_server("127.0.0.1:5001 weight=2").map(|s| s.weight),
            Ok(2)
        );
        assert!(parse_server("localhost:5000").is_err());
        assert!(parse_server("127.0.0.1:5000 weight=0").is_err());
        assert!(parse_server("127.0.0.1:5000 backup").is_err());
    }

    #[test]
    fn cidr_blocks_and_single_addresses() {
        assert_eq!(parse_cidr("10.0.0.0/8").map(|n| n.prefix_len()), Some(8));
        assert_eq!(parse_cidr("::1").map(|n| n.prefix_len()), Some(128));
        assert!(parse_cidr("10.0.0.0/33").is_none());
    }

    #[test]
    fn origins_are_parsed_and_normalised() {
        assert_eq!(parse_origin("*"), Ok(OriginPattern::Any));
        assert_eq!(
            parse_origin("HTTPS://App.Example.com:443"),
            Ok(OriginPattern::Exact("https://app.example.com".into()))
        );
        assert_eq!(
            parse_origin("http://127.0.0.1:8080"),
            Ok(OriginPattern::Exact("http://127.0.0.1:8080".into()))
        );
        assert_eq!(
            parse_origin("http://[::1]:8080"),
            Ok(OriginPattern::Exact("http://[::1]:8080".into()))
        );
        assert_eq!(
            parse_origin("https://*.example.com"),
            Ok(OriginPattern::Subdomains {
                scheme: "https://".into(),
                suffix: ".example.com".into(),
                port: String::new(),
            })
        );
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/x",
            "https://user@app.example.com",
            "https://",
            "https://a..b",
            "https://*.",
            "https://a.*.example.com",
            "https://app.example.com:0",
            "https://app.example.com:99999",
            "ht tp://a",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
