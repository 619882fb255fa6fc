//! Checks of what routes point at: static sites, upstream pools, rate
//! limits, and the routes themselves.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::header::HeaderName;

use super::Checker;
use crate::config::defaults::*;
use crate::config::error::KeyPath;
use crate::config::file;
use crate::config::model::*;
use crate::config::units::parse_server;

pub(super) fn check_static(
    c: &mut Checker,
    name: &str,
    s: &file::StaticSection,
) -> Option<StaticSite> {
    let p = KeyPath::of(&["static", name]);
    let root = match c.path(&s.root).canonicalize() {
        Ok(r) if r.is_dir() => Some(r),
        Ok(r) => {
            c.problem(p.key("root"), format!("{} is not a directory", r.display()));
            None
        }
        Err(e) => {
            c.problem(p.key("root"), format!("{}: {e}", c.path(&s.root).display()));
            None
        }
    };
    let index = s.index.clone().unwrap_or_else(|| DEFAULT_INDEX.to_string());
    if index.is_empty() || index.contains(['/', '\\', '\0']) || index == ".." {
        c.problem(
            p.key("index"),
            format!("{index:?} must be a plain file name"),
        );
    }
    let mut cache_rules = Vec::new();
    for (i, rule) in s.cache.iter().enumerate() {
        let rp = p.key("cache").index(i);
        if rule.extensions.is_empty() {
            c.problem(rp.key("extensions"), "needs at least one extension");
        }
        let extensions = rule
            .extensions
            .iter()
            .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
            .collect();
        let cache_control = c.header_value(rp.key("cache_control"), &rule.cache_control);
        cache_rules.push(CacheRule {
            extensions,
            cache_control,
        });
    }
    let default_cache_control = c.header_value(
        p.key("default_cache_control"),
        s.default_cache_control
            .as_deref()
            .unwrap_or(DEFAULT_STATIC_CACHE_CONTROL),
    );
    Some(StaticSite {
        name: name.to_string(),
        root: root?,
        index,
        spa_fallback: s.spa_fallback.unwrap_or(false),
        cache_rules,
        default_cache_control,
    })
}

pub(super) fn check_upstream(c: &mut Checker, name: &str, u: &file::UpstreamSection) -> Upstream {
    let p = KeyPath::of(&["upstream", name]);
    if u.servers.is_empty() {
        c.problem(p.key("servers"), "needs at least one server");
    }
    let mut servers: Vec<ServerAddr> = Vec::new();
    for (i, s) in u.servers.iter().enumerate() {
        match parse_server(s) {
            Ok(sa) if servers.iter().any(|o| o.addr == sa.addr) => {
                c.problem(
                    p.key("servers").index(i),
                    format!("{} is listed twice", sa.addr),
                );
            }
            Ok(sa) => servers.push(sa),
            Err(msg) => c.problem(p.key("servers").index(i), msg),
        }
    }
    let balance = match u.balance.as_deref() {
        None | Some("round_robin") => Balance::RoundRobin,
        Some("least_conn") => Balance::LeastConn,
        Some("consistent_hash") => Balance::ConsistentHash,
        Some("random") => Balance::Random,
        Some(other) => {
            c.problem(
                p.key("balance"),
                format!("unknown algorithm {other:?}: use round_robin, least_conn, consistent_hash or random"),
            );
            Balance::RoundRobin
        }
    };
    let hash_key = match u.hash_key.as_deref() {
        None | Some("client_ip") => HashKey::ClientIp,
        Some("path") => HashKey::Path,
        Some(other) => {
            if let Some(h) = other.strip_prefix("header:") {
                match HeaderName::from_bytes(h.as_bytes()) {
                    Ok(n) => HashKey::Header(n),
                    Err(_) => {
                        c.problem(
                            p.key("hash_key"),
                            format!("{h:?} is not a valid header name"),
                        );
                        HashKey::ClientIp
                    }
                }
            } else if let Some(cookie) = other.strip_prefix("cookie:").filter(|s| !s.is_empty()) {
                HashKey::Cookie(cookie.to_string())
            } else {
                c.problem(
                    p.key("hash_key"),
                    format!("unknown hash key {other:?}: use client_ip, path, header:NAME or cookie:NAME"),
                );
                HashKey::ClientIp
            }
        }
    };
    if u.hash_key.is_some() && balance != Balance::ConsistentHash {
        c.problem(
            p.key("hash_key"),
            "is only used with balance = \"consistent_hash\"",
        );
    }
    let retries = match u.retries {
        None => DEFAULT_RETRIES,
        Some(n) if (0..=MAX_RETRIES).contains(&n) => n as usize,
        Some(n) => {
            c.problem(
                p.key("retries"),
                format!("must be between 0 and {MAX_RETRIES}, got {n}"),
            );
            DEFAULT_RETRIES
        }
    };
    let health = u.health.as_ref().map(|h| {
        let hp = p.key("health");
        let path = h
            .path
            .clone()
            .unwrap_or_else(|| DEFAULT_HEALTH_PATH.to_string());
        if !path.starts_with('/') || path.contains(|ch: char| ch.is_ascii_control() || ch == ' ') {
            c.problem(
                hp.key("path"),
                format!("{path:?} must be an absolute path starting with /"),
            );
        }
        let interval = c.positive_duration(
            hp.key("interval"),
            h.interval.as_deref(),
            DEFAULT_HEALTH_INTERVAL,
        );
        let timeout = c.positive_duration(
            hp.key("timeout"),
            h.timeout.as_deref(),
            DEFAULT_HEALTH_TIMEOUT,
        );
        HealthCheck {
            path,
            interval,
            timeout,
            healthy_threshold: c.positive(
                hp.key("healthy_threshold"),
                h.healthy_threshold,
                DEFAULT_HEALTHY_THRESHOLD,
            ),
            unhealthy_threshold: c.positive(
                hp.key("unhealthy_threshold"),
                h.unhealthy_threshold,
                DEFAULT_UNHEALTHY_THRESHOLD,
            ),
        }
    });
    let connect_timeout = c.positive_duration(
        p.key("connect_timeout"),
        u.connect_timeout.as_deref(),
        DEFAULT_CONNECT_TIMEOUT,
    );
    let read_timeout = c.positive_duration(
        p.key("read_timeout"),
        u.read_timeout.as_deref(),
        DEFAULT_READ_TIMEOUT,
    );
    let write_timeout = c.positive_duration(
        p.key("write_timeout"),
        u.write_timeout.as_deref(),
        DEFAULT_WRITE_TIMEOUT,
    );
    let idle_timeout = c.duration(
        p.key("idle_timeout"),
        u.idle_timeout.as_deref(),
        DEFAULT_IDLE_TIMEOUT,
    );
    let websocket_idle_timeout = c.positive_duration(
        p.key("websocket_idle_timeout"),
        u.websocket_idle_timeout.as_deref(),
        DEFAULT_WEBSOCKET_IDLE_TIMEOUT,
    );
    let passive = u
        .passive
        .as_ref()
        .map(|s| check_passive(c, &p.key("passive"), s));
    Upstream {
        name: name.to_string(),
        servers,
        balance,
        hash_key,
        connect_timeout,
        read_timeout,
        write_timeout,
        idle_timeout,
        retries,
        websocket_idle_timeout,
        health,
        passive,
    }
}

fn check_passive(c: &mut Checker, p: &KeyPath, s: &file::PassiveSection) -> PassiveHealth {
    let consecutive_failures = c.positive(
        p.key("consecutive_failures"),
        s.consecutive_failures,
        DEFAULT_CONSECUTIVE_FAILURES,
    );
    let failure_statuses = match &s.failure_statuses {
        None => DEFAULT_FAILURE_STATUSES.to_vec(),
        Some(list) => {
            if list.is_empty() {
                c.problem(
                    p.key("failure_statuses"),
                    "must name at least one status (connect errors and timeouts always count)",
                );
            }
            let mut statuses = Vec::with_capacity(list.len());
            for (i, &n) in list.iter().enumerate() {
                match u16::try_from(n) {
                    Ok(status) if (400..=599).contains(&status) => statuses.push(status),
                    _ => c.problem(
                        p.key("failure_statuses").index(i),
                        format!("must be an error status between 400 and 599, got {n}"),
                    ),
                }
            }
            statuses
        }
    };
    let eject_for = c.positive_duration(
        p.key("eject_for"),
        s.eject_for.as_deref(),
        DEFAULT_EJECT_FOR,
    );
    let max_ejected_percent = match s.max_ejected_percent {
        None => DEFAULT_MAX_EJECTED_PERCENT,
        Some(n) if (0..=100).contains(&n) => n as u32,
        Some(n) => {
            c.problem(
                p.key("max_ejected_percent"),
                format!("must be between 0 and 100, got {n}"),
            );
            DEFAULT_MAX_EJECTED_PERCENT
        }
    };
    PassiveHealth {
        consecutive_failures,
        failure_statuses,
        eject_for,
        max_ejected_percent,
    }
}

pub(super) fn check_rate_limit(
    c: &mut Checker,
    name: &str,
    r: &file::RateLimitSection,
) -> Option<RateLimit> {
    let p = KeyPath::of(&["rate_limit", name]);
    let key = match r.key.as_deref() {
        None | Some("client_ip") => RateKey::ClientIp,
        Some(other) => match other
            .strip_prefix("header:")
            .map(|h| HeaderName::from_bytes(h.as_bytes()))
        {
            Some(Ok(h)) => RateKey::Header(h),
            _ => {
                c.problem(
                    p.key("key"),
                    format!("unknown key {other:?}: use client_ip or header:NAME"),
                );
                return None;
            }
        },
    };
    if !(r.rate.is_finite() && r.rate > 0.0 && r.rate <= MAX_RATE) {
        c.problem(
            p.key("rate"),
            format!(
                "must be a number of requests per second above 0, got {}",
                r.rate
            ),
        );
        return None;
    }
    let default_burst = r.rate.ceil().max(1.0) as i64;
    let burst = c.positive(p.key("burst"), Some(r.burst.unwrap_or(default_burst)), 1);
    let store = check_rate_store(c, &p, r);
    Some(RateLimit {
        name: name.to_string(),
        key,
        rate: r.rate,
        burst,
        store,
    })
}

/// `store` and the keys that only mean something with it.
fn check_rate_store(c: &mut Checker, p: &KeyPath, r: &file::RateLimitSection) -> Option<RateStore> {
    let Some(url) = &r.store else {
        for (key, set) in [
            ("store_timeout", r.store_timeout.is_some()),
            ("on_store_error", r.on_store_error.is_some()),
            ("instances", r.instances.is_some()),
        ] {
            if set {
                c.problem(
                    p.key(key),
                    "only applies to a limit with a store (add store = \"redis://HOST:PORT\")",
                );
            }
        }
        return None;
    };
    if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
        c.problem(
            p.key("store"),
            format!("{url:?} is not a usable Redis URL (redis://HOST:PORT[/DB]): {e}"),
        );
    }
    let timeout = c.duration(
        p.key("store_timeout"),
        r.store_timeout.as_deref(),
        DEFAULT_STORE_TIMEOUT,
    );
    if timeout.is_zero() || timeout > MAX_STORE_TIMEOUT {
        c.problem(
            p.key("store_timeout"),
            format!("must be above 0 and at most {MAX_STORE_TIMEOUT:?}, got {timeout:?}"),
        );
    }
    let on_error = match r.on_store_error.as_deref() {
        None | Some("local") => OnStoreError::Local,
        Some("allow") => OnStoreError::Allow,
        Some("deny") => OnStoreError::Deny,
        Some(other) => {
            c.problem(
                p.key("on_store_error"),
                format!("unknown value {other:?}: use local, allow or deny"),
            );
            OnStoreError::Local
        }
    };
    let instances = c.positive(p.key("instances"), r.instances, DEFAULT_INSTANCES);
    Some(RateStore {
        url: url.clone(),
        timeout,
        on_error,
        instances,
    })
}

/// What a route may name: its target, its limits and its policies.
pub(super) struct Attachable<'a> {
    pub statics: &'a BTreeMap<String, file::StaticSection>,
    pub upstreams: &'a BTreeMap<String, file::UpstreamSection>,
    pub limits: &'a BTreeMap<String, file::RateLimitSection>,
    pub cors: &'a BTreeMap<String, Arc<CorsPolicy>>,
    pub access: &'a BTreeMap<String, Arc<AccessList>>,
}

/// The named policy of `key`, or a problem when none has that name.
fn attach<T>(
    c: &mut Checker,
    p: &KeyPath,
    key: &str,
    name: Option<&str>,
    defined: &BTreeMap<String, Arc<T>>,
) -> Option<Arc<T>> {
    let name = name?;
    let found = defined.get(name).cloned();
    if found.is_none() {
        c.problem(p.key(key), format!("no [{key}.{name}] is defined"));
    }
    found
}

pub(super) fn check_routes(
    c: &mut Checker,
    routes: Vec<file::RouteSection>,
    named: Attachable<'_>,
    server: &Server,
) -> Vec<Route> {
    let Attachable {
        statics,
        upstreams,
        limits,
        ..
    } = named;
    let mut out: Vec<Route> = Vec::new();
    for (i, r) in routes.into_iter().enumerate() {
        let p = KeyPath::of(&["route"]).index(i);
        if !r.prefix.starts_with('/') {
            c.problem(p.key("prefix"), format!("{:?} must start with /", r.prefix));
        }
        if out.iter().any(|o| o.prefix == r.prefix) {
            c.problem(p.key("prefix"), format!("{:?} is routed twice", r.prefix));
        }
        let target = match (r.upstream, r.static_site) {
            (Some(u), None) => {
                if !upstreams.contains_key(&u) {
                    c.problem(p.key("upstream"), format!("no [upstream.{u}] is defined"));
                }
                Target::Upstream(u)
            }
            (None, Some(s)) => {
                if !statics.contains_key(&s) {
                    c.problem(p.key("static"), format!("no [static.{s}] is defined"));
                }
                Target::Static(s)
            }
            _ => {
                c.problem(
                    p.clone(),
                    "needs exactly one of upstream = \"NAME\" or static = \"NAME\"",
                );
                continue;
            }
        };
        let rate_limits = r
            .rate_limit
            .map(file::OneOrMany::into_vec)
            .unwrap_or_default();
        for (j, name) in rate_limits.iter().enumerate() {
            if !limits.contains_key(name) {
                let kp = if rate_limits.len() == 1 {
                    p.key("rate_limit")
                } else {
                    p.key("rate_limit").index(j)
                };
                c.problem(kp, format!("no [rate_limit.{name}] is defined"));
            }
        }
        let strip_prefix = r.strip_prefix.unwrap_or(false);
        if matches!(target, Target::Static(_)) {
            for (key, set) in [
                ("request_buffering", r.request_buffering.is_some()),
                ("response_buffering", r.response_buffering.is_some()),
            ] {
                if set {
                    c.problem(p.key(key), "only applies to routes with an upstream");
                }
            }
        }
        let max_body_size = c.size(
            p.key("max_body_size"),
            r.max_body_size.as_deref(),
            server.max_body_size,
        );
        let cors = attach(c, &p, "cors", r.cors.as_deref(), named.cors);
        let access = attach(c, &p, "access", r.access.as_deref(), named.access);
        out.push(Route {
            cors,
            access,
            prefix: r.prefix,
            target,
            strip_prefix,
            rate_limits,
            max_body_size,
            request_buffering: r.request_buffering.unwrap_or(DEFAULT_REQUEST_BUFFERING),
            response_buffering: r.response_buffering.unwrap_or(DEFAULT_RESPONSE_BUFFERING),
            compression: r.compression.unwrap_or(true),
        });
    }
    out
}
