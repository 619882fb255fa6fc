//! `/status` as one HTML page: no external assets, no script; it reloads
//! itself every [`REFRESH_SECONDS`](super::REFRESH_SECONDS) with a
//! `<meta http-equiv="refresh">`.
//!
//! The page is a maud template: every value is HTML-escaped unless wrapped
//! in `PreEscaped`, which only the constant style sheet is. Names come from
//! the config (pools, limits, files) and from certificates, so they are
//! escaped like any other input. Rows carry `data-` attributes (pool, server,
//! state) for scripts and tests that read the DOM.

use std::time::Duration;

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::{human_duration, Status, Traffic, REFRESH_SECONDS};

/// Seconds of validity left under which a certificate is shown as expiring.
const EXPIRY_WARNING_SECONDS: i64 = 14 * 86_400;

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d1d1f;background:#fafafa}
h1{font-size:1.5em;margin:0 0 .2em}h2{font-size:1.15em;margin:1.6em 0 .4em}
h3{font-size:1em;margin:1em 0 .3em}.meta{color:#555}.meta span{margin-right:1.5em}
table{border-collapse:collapse;background:#fff;min-width:50%}
th,td{padding:.3em .8em;border-bottom:1px solid #e3e3e3;text-align:left}
th{background:#f0f0f0;font-weight:600}.n{text-align:right;font-variant-numeric:tabular-nums}
.summary{font-size:1.1em;font-weight:600}
.state{display:inline-block;min-width:4.5em;padding:0 .5em;border-radius:3px;color:#fff;font-weight:600;text-align:center}
.up{background:#1a7f37}.down{background:#cf222e}.ejected{background:#bc4c00}.pending{background:#6e7781}.degraded{background:#bc4c00}
.warn{color:#bc4c00;font-weight:600}.bad{color:#cf222e;font-weight:600}
.error{white-space:pre-wrap;color:#cf222e;background:#fff;padding:.5em;border:1px solid #f0c0c0}
footer{margin-top:2em;color:#777;font-size:.9em}
";

/// Renders the page.
pub(crate) fn render(status: &Status) -> String {
    page(status).into_string()
}

fn rate(x: f64) -> String {
    format!("{x:.2}")
}

/// Share of errors among requests, as a percentage.
fn error_share(t: &Traffic) -> String {
    if t.requests == 0 {
        "–".to_string()
    } else {
        format!("{:.1} %", t.errors as f64 * 100.0 / t.requests as f64)
    }
}

/// One line on the servers out of rotation, for the title and the top of
/// the page.
fn summary(s: &Status) -> (String, &'static str) {
    let total: usize = s.pools.iter().map(|p| p.servers.len()).sum();
    let up: usize = s.pools.iter().map(|p| p.servers_up).sum();
    if up == total {
        return (format!("all {total} servers up"), "up");
    }
    // A pool with no server up answers 503 to every request.
    let state = if s.pools.iter().any(|p| p.servers_up == 0) {
        "down"
    } else {
        "degraded"
    };
    (
        format!("{} of {total} servers out of rotation", total - up),
        state,
    )
}

fn page(s: &Status) -> Markup {
    let (summary, summary_state) = summary(s);
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content=(REFRESH_SECONDS);
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Gatehouse: " (summary) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "Gatehouse" }
                p.summary { span class={ "state " (summary_state) } { (summary_state) } " " (summary) }
                p.meta {
                    span { "version " b { (s.version) } }
                    span { "up " b #uptime { (human_duration(Duration::from_secs(s.uptime_seconds))) } }
                    span { "since " (s.started_at) }
                    span { "page generated " time #generated datetime=(s.generated_at) { (s.generated_at) } }
                }
                p.meta {
                    span { "config " code { (s.config.file) } }
                    span { "loaded " (s.config.loaded_at) }
                    @if let Some(r) = &s.config.last_reload {
                        @if r.ok {
                            span { "last reload " (r.at) ": applied" }
                        } @else {
                            span.bad { "last reload " (r.at) ": rejected, the running config stays" }
                        }
                    }
                }
                @if let Some(error) = s.config.last_reload.as_ref().and_then(|r| r.error.as_ref()) {
                    pre.error { (error) }
                }
                (pools(s))
                (limits(s))
                (listeners(s))
                (certificates(s))
                footer {
                    "Refreshes every " (REFRESH_SECONDS) " s. Rates cover the last "
                    (format!("{:.0}", s.rate_window_seconds)) " s. The same data as JSON: "
                    a href="status.json" { "status.json" } "; Prometheus: " a href="metrics" { "metrics" } "."
                }
            }
        }
    }
}

fn pools(s: &Status) -> Markup {
    html! {
        h2 { "Pools" }
        @if s.pools.is_empty() {
            p { "No upstream pools are configured." }
        }
        @for pool in &s.pools {
            section.pool data-pool=(pool.name) {
                h3 {
                    (pool.name)
                    span.meta {
                        " — " (pool.servers_up) " of " (pool.servers.len()) " up · "
                        (pool.balance) " · "
                        @if pool.health_checks { "health checks" } @else { "no health checks" }
                        @if pool.passive_health { " · passive health" }
                    }
                }
                table {
                    tr {
                        th { "server" } th { "state" } th { "weight" } th { "in flight" }
                        th { "req/s" } th { "errors/s" } th { "error %" } th { "requests (last min)" }
                    }
                    @for srv in &pool.servers {
                        tr.server data-server=(srv.address) data-state=(srv.state) {
                            td { code { (srv.address) } }
                            td {
                                span class={ "state " (srv.state) } { (srv.state) }
                                @if srv.ejected {
                                    " " (format!("{:.0}", srv.ejected_for_seconds)) " s left"
                                }
                            }
                            td.n { (srv.weight) }
                            td.n { (srv.in_flight) }
                            td.n { (rate(srv.last_minute.requests_per_second)) }
                            td.n { (rate(srv.last_minute.errors_per_second)) }
                            td.n { (error_share(&srv.last_minute)) }
                            td.n { (srv.last_minute.requests) }
                        }
                    }
                    tr.total {
                        th { "pool" } th {} th {}
                        th.n { (pool.in_flight) }
                        th.n { (rate(pool.last_minute.requests_per_second)) }
                        th.n { (rate(pool.last_minute.errors_per_second)) }
                        th.n { (error_share(&pool.last_minute)) }
                        th.n { (pool.last_minute.requests) }
                    }
                }
            }
        }
    }
}

fn limits(s: &Status) -> Markup {
    html! {
        h2 { "Rate limits" }
        @if s.rate_limits.is_empty() {
            p { "No rate limits are configured." }
        } @else {
            table {
                tr {
                    th { "limit" } th { "key" } th { "rate/s" } th { "burst" }
                    th { "keys tracked" } th { "refused (last min)" } th { "refused/s" }
                }
                @for l in &s.rate_limits {
                    tr.limit data-limit=(l.name) {
                        td { (l.name) }
                        td { code { (l.key) } }
                        td.n { (l.rate) }
                        td.n { (l.burst) }
                        td.n { (l.tracked_keys) }
                        td.n.warn[l.refused_last_minute > 0] { (l.refused_last_minute) }
                        td.n { (rate(l.refused_per_second)) }
                    }
                }
            }
        }
    }
}

fn listeners(s: &Status) -> Markup {
    html! {
        h2 { "Listeners" }
        table {
            tr { th { "kind" } th { "address" } th { "PROXY protocol" } }
            @for l in &s.listeners {
                tr {
                    td { (l.kind) }
                    td { code { (l.address) } }
                    td { @if l.proxy_protocol { "expected" } @else { "–" } }
                }
            }
        }
    }
}

fn certificates(s: &Status) -> Markup {
    html! {
        h2 { "Certificates" }
        @if s.certificates.is_empty() {
            p { "No TLS listener." }
        } @else {
            table {
                tr { th { "file" } th { "names" } th { "expires" } th { "left" } }
                @for c in &s.certificates {
                    @let class = if c.seconds_left <= 0 {
                        Some("bad")
                    } else if c.seconds_left < EXPIRY_WARNING_SECONDS {
                        Some("warn")
                    } else {
                        None
                    };
                    tr {
                        td {
                            code { (c.file) }
                            @if c.default { " (default)" }
                        }
                        td { (c.names.join(", ")) }
                        td { (c.not_after) }
                        td class=[class] {
                            @if c.seconds_left <= 0 {
                                "expired"
                            } @else {
                                (human_duration(Duration::from_secs(c.seconds_left.unsigned_abs())))
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;

    fn status(pool_name: &str) -> Status {
        Status {
            version: "0.1.0",
            generated_at: "2026-01-01T00:00:00Z".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            uptime_seconds: 3,
            config: ConfigStatus {
                file: "/etc/<gatehouse>.toml".into(),
                loaded_at: "2026-01-01T00:00:00Z".into(),
                last_reload: Some(ReloadStatus {
                    at: "2026-01-01T00:00:00Z".into(),
                    ok: false,
                    error: Some("bad <key> & \"value\"".into()),
                }),
            },
            listeners: vec![],
            rate_window_seconds: 60.0,
            pools: vec![PoolStatus {
                name: pool_name.into(),
                balance: "round_robin",
                health_checks: true,
                passive_health: false,
                servers_up: 0,
                in_flight: 0,
                last_minute: Traffic::default(),
                servers: vec![ServerStatus {
                    address: "127.0.0.1:1".into(),
                    weight: 1,
                    state: "down",
                    healthy: false,
                    ejected: false,
                    ejected_for_seconds: 0.0,
                    in_flight: 0,
                    last_minute: Traffic::default(),
                }],
            }],
            rate_limits: vec![],
            certificates: vec![],
        }
    }

    #[test]
    fn names_are_escaped_in_text_and_attributes() {
        let page = render(&status("<script>alert(1)</script>\"'&"));
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;'&amp;"));
        assert!(page.contains("data-pool=\"&lt;script&gt;alert(1)&lt;/script&gt;&quot;'&amp;\""));
        assert!(page.contains("/etc/&lt;gatehouse&gt;.toml"));
        assert!(page.contains("bad &lt;key&gt; &amp; &quot;value&quot;"));
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        assert!(page.contains("data-server=\"127.0.0.1:1\" data-state=\"down\""));
    }

    #[test]
    fn the_summary_is_down_only_when_a_pool_has_no_server_up() {
        let mut s = status("api");
        assert_eq!(summary(&s).1, "down", "the only server of a pool is down");
        s.pools[0].servers.push(ServerStatus {
            address: "127.0.0.1:2".into(),
            weight: 1,
            state: "up",
            healthy: true,
            ejected: false,
            ejected_for_seconds: 0.0,
            in_flight: 0,
            last_minute: Traffic::default(),
        });
        s.pools[0].servers_up = 1;
        assert_eq!(
            summary(&s),
            ("1 of 2 servers out of rotation".to_string(), "degraded")
        );
        s.pools[0].servers.remove(0);
        assert_eq!(summary(&s), ("all 1 servers up".to_string(), "up"));
    }
}
