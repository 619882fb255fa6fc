//! The status page of the admin listener: `/status` (HTML for people,
//! [`html`]) and `/status.json` (the same [`Status`] for scripts; its shape
//! is `docs/status.schema.json` and the README's "Status page").
//!
//! A [`Status`] is read from the live state when the page is asked for:
//! servers' health, ejections and in-flight counts from the current
//! [`Snapshot`](crate::state::Snapshot)'s pools, certificates from the TLS
//! resolver, and the last minute's rates from [`rates`], which samples the
//! Prometheus counters off the request path.

pub(crate) mod html;
pub(crate) mod rates;

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::{Balance, RateKey};
use crate::pool::{passive, Backend};
use crate::state::State;

/// Seconds between two refreshes of the HTML page.
pub(crate) const REFRESH_SECONDS: u32 = 5;

/// Everything the status page shows.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    pub(crate) version: &'static str,
    /// When this status was read (RFC 3339, UTC).
    pub(crate) generated_at: String,
    pub(crate) started_at: String,
    pub(crate) uptime_seconds: u64,
    pub(crate) config: ConfigStatus,
    pub(crate) listeners: Vec<Listener>,
    /// The time the rates cover: 60 s, shorter in the first minute.
    pub(crate) rate_window_seconds: f64,
    pub(crate) pools: Vec<PoolStatus>,
    pub(crate) rate_limits: Vec<LimitStatus>,
    pub(crate) certificates: Vec<CertStatus>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ConfigStatus {
    /// The config file's path, made absolute.
    pub(crate) file: String,
    /// When the running config was loaded (start-up or the last good reload).
    pub(crate) loaded_at: String,
    pub(crate) last_reload: Option<ReloadStatus>,
}

/// The last reload attempt.
#[derive(Debug, Serialize)]
pub(crate) struct ReloadStatus {
    pub(crate) at: String,
    pub(crate) ok: bool,
    /// Why it was rejected (the running config stayed).
    pub(crate) error: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Listener {
    /// `http`, `https` or `admin`.
    pub(crate) kind: &'static str,
    pub(crate) address: String,
    pub(crate) proxy_protocol: bool,
}

/// Traffic of a server or a pool over the rate window.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub(crate) struct Traffic {
    /// Answers (from the server, or 502/504 for a failed exchange).
    pub(crate) requests: u64,
    /// Those with a 5xx status.
    pub(crate) errors: u64,
    pub(crate) requests_per_second: f64,
    pub(crate) errors_per_second: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct PoolStatus {
    pub(crate) name: String,
    /// `round_robin`, `least_conn`, `consistent_hash` or `random`.
    pub(crate) balance: &'static str,
    pub(crate) health_checks: bool,
    pub(crate) passive_health: bool,
    /// Servers in rotation (state `up`).
    pub(crate) servers_up: usize,
    pub(crate) in_flight: usize,
    pub(crate) last_minute: Traffic,
    pub(crate) servers: Vec<ServerStatus>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ServerStatus {
    pub(crate) address: String,
    pub(crate) weight: u32,
    /// `up`, `down` (active checks failing), `pending` (added by a reload,
    /// waiting for its first passing check) or `ejected` (passive health).
    pub(crate) state: &'static str,
    /// Active health: the checks pass (always true without checks).
    pub(crate) healthy: bool,
    /// Passive health: out of rotation after failed requests.
    pub(crate) ejected: bool,
    /// Seconds until an ejection ends (0 when not ejected).
    pub(crate) ejected_for_seconds: f64,
    pub(crate) in_flight: usize,
    pub(crate) last_minute: Traffic,
}

#[derive(Debug, Serialize)]
pub(crate) struct LimitStatus {
    pub(crate) name: String,
    /// `client_ip` or `header:NAME`.
    pub(crate) key: String,
    pub(crate) rate: f64,
    pub(crate) burst: u32,
    /// Keys with a bucket right now.
    pub(crate) tracked_keys: usize,
    pub(crate) refused_last_minute: u64,
    pub(crate) refused_per_second: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct CertStatus {
    pub(crate) file: String,
    pub(crate) default: bool,
    pub(crate) names: Vec<String>,
    pub(crate) not_after: String,
    /// Negative once expired.
    pub(crate) seconds_left: i64,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn balance_name(b: Balance) -> &'static str {
    match b {
        Balance::RoundRobin => "round_robin",
        Balance::LeastConn => "least_conn",
        Balance::ConsistentHash => "consistent_hash",
        Balance::Random => "random",
    }
}

/// The state word of a server.
fn server_state(b: &Backend, now_ms: u64) -> &'static str {
    if b.is_healthy() {
        if b.is_ejected_at(now_ms) {
            "ejected"
        } else {
            "up"
        }
    } else if b.pending.load(std::sync::atomic::Ordering::Relaxed) {
        "pending"
    } else {
        "down"
    }
}

impl Status {
    /// Reads the status of the running process.
    pub(crate) fn read(state: &State) -> Status {
        let now = SystemTime::now();
        let snapshot = state.current();
        let config = &snapshot.config;
        let recent = rates::last_minute();
        let traffic = |(requests, errors): (u64, u64)| Traffic {
            requests,
            errors,
            requests_per_second: recent.per_second(requests),
            errors_per_second: recent.per_second(errors),
        };
        let now_ms = passive::now_ms();
        let pools = config
            .upstreams
            .keys()
            .filter_map(|name| snapshot.pools.get(name))
            .map(|pool| {
                let servers: Vec<ServerStatus> = pool
                    .backends
                    .iter()
                    .zip(&pool.config.servers)
                    .map(|(b, s)| ServerStatus {
                        address: b.label.clone(),
                        weight: s.weight,
                        state: server_state(b, now_ms),
                        healthy: b.is_healthy(),
                        ejected: b.is_ejected_at(now_ms),
                        ejected_for_seconds: b
                            .ejected_until
                            .load(std::sync::atomic::Ordering::Relaxed)
                            .saturating_sub(now_ms)
                            as f64
                            / 1000.0,
                        in_flight: b.in_flight(),
                        last_minute: traffic(recent.server(pool.name(), &b.label)),
                    })
                    .collect();
                let (requests, errors) = servers.iter().fold((0, 0), |(r, e), s| {
                    (r + s.last_minute.requests, e + s.last_minute.errors)
                });
                PoolStatus {
                    name: pool.name().to_string(),
                    balance: balance_name(pool.config.balance),
                    health_checks: pool.config.health.is_some(),
                    passive_health: pool.config.passive.is_some(),
                    servers_up: servers.iter().filter(|s| s.state == "up").count(),
                    in_flight: servers.iter().map(|s| s.in_flight).sum(),
                    last_minute: traffic((requests, errors)),
                    servers,
                }
            })
            .collect();
        let rate_limits = config
            .rate_limits
            .keys()
            .filter_map(|name| snapshot.limiters.get(name))
            .map(|l| {
                let refused = recent.limit(&l.config.name);
                LimitStatus {
                    name: l.config.name.clone(),
                    key: match &l.config.key {
                        RateKey::ClientIp => "client_ip".to_string(),
                        RateKey::Header(h) => format!("header:{h}"),
                    },
                    rate: l.config.rate,
                    burst: l.config.burst,
                    tracked_keys: l.len(),
                    refused_last_minute: refused,
                    refused_per_second: recent.per_second(refused),
                }
            })
            .collect();
        let certificates = state
            .cert_resolver()
            .map(|r| {
                r.current()
                    .info()
                    .iter()
                    .map(|c| CertStatus {
                        file: c.file.display().to_string(),
                        default: c.default,
                        names: c.names.clone(),
                        not_after: rfc3339(c.not_after),
                        seconds_left: seconds_between(now, c.not_after),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (started, uptime) = state.started();
        let reloads = state.reload_record();
        Status {
            version: env!("CARGO_PKG_VERSION"),
            generated_at: rfc3339(now),
            started_at: rfc3339(started),
            uptime_seconds: uptime.as_secs(),
            config: ConfigStatus {
                file: std::path::absolute(state.config_path())
                    .unwrap_or_else(|_| state.config_path().to_path_buf())
                    .display()
                    .to_string(),
                loaded_at: rfc3339(reloads.loaded_at),
                last_reload: reloads.last_attempt.map(|(at, error)| ReloadStatus {
                    at: rfc3339(at),
                    ok: error.is_none(),
                    error,
                }),
            },
            listeners: listeners(config),
            rate_window_seconds: recent.seconds,
            pools,
            rate_limits,
            certificates,
        }
    }
}

/// Seconds from `from` to `to`, negative when `to` is earlier.
fn seconds_between(from: SystemTime, to: SystemTime) -> i64 {
    match to.duration_since(from) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn listeners(config: &crate::config::Config) -> Vec<Listener> {
    let mut out = Vec::new();
    if let Some(http) = &config.http {
        out.extend(http.listen.iter().map(|a| Listener {
            kind: "http",
            address: a.to_string(),
            proxy_protocol: http.proxy_protocol,
        }));
    }
    if let Some(https) = &config.https {
        out.extend(https.listen.iter().map(|a| Listener {
            kind: "https",
            address: a.to_string(),
            proxy_protocol: https.proxy_protocol,
        }));
    }
    if let Some(admin) = config.admin {
        out.push(Listener {
            kind: "admin",
            address: admin.to_string(),
            proxy_protocol: false,
        });
    }
    out
}

/// A duration for people: `3d 4h`, `5h 2m`, `4m 10s`, `12s`.
pub(crate) fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {mins}m")
    } else if mins > 0 {
        format!("{mins}m {secs}s")
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_person_wrote_them() {
        assert_eq!(human_duration(Duration::from_secs(12)), "12s");
        assert_eq!(human_duration(Duration::from_secs(250)), "4m 10s");
        assert_eq!(human_duration(Duration::from_secs(5 * 3600 + 120)), "5h 2m");
        assert_eq!(
            human_duration(Duration::from_secs(3 * 86_400 + 4 * 3600)),
            "3d 4h"
        );
    }

    #[test]
    fn seconds_between_is_signed() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(seconds_between(t, t + Duration::from_secs(5)), 5);
        assert_eq!(seconds_between(t, t - Duration::from_secs(5)), -5);
    }
}
