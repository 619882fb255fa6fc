//! Criterion micro-benchmarks of the per-request hot path:
//! route matching, header work, the rate-limit check, upstream selection and
//! static path resolution. Run with `cargo bench --bench hot_path`.

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse::config::{
    Balance, HashKey, RateKey, RateLimit, Route, ServerAddr, Target, Upstream,
};
use gatehouse::pool::Pool;
use gatehouse::proxy::headers;
use gatehouse::proxy::route::{upstream_path, RouteTable};
use gatehouse::rate_limit::{Key, Limiters};

fn routes() -> RouteTable {
    let route = |prefix: &str, target: Target| Route {
        prefix: prefix.to_string(),
        target,
        strip_prefix: true,
        rate_limits: vec![],
        max_body_size: 1 << 20,
        request_buffering: true,
        response_buffering: true,
        cors: None,
        access: None,
        compression: true,
    };
    RouteTable::new(&[
        route("/", Target::Static("site".into())),
        route("/api/", Target::Upstream("api".into())),
        route("/api/v2/", Target::Upstream("api2".into())),
        route("/assets/", Target::Static("site".into())),
        route("/admin/", Target::Upstream("admin".into())),
    ])
}

fn upstream(balance: Balance) -> Upstream {
    Upstream {
        name: "api".into(),
        servers: (0..4)
            .map(|i| ServerAddr {
                addr: SocketAddr::from(([127, 0, 0, 1], 5000 + i)),
                weight: 1 + u32::from(i % 2),
            })
            .collect(),
        balance,
        hash_key: HashKey::ClientIp,
        connect_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_secs(1),
        write_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        retries: 2,
        websocket_idle_timeout: Duration::from_secs(1),
        health: None,
        passive: None,
    }
}

fn bench_routes(c: &mut Criterion) {
    let table = routes();
    c.bench_function("route/find_api", |b| {
        b.iter(|| table.find_index(black_box("/api/users/42")))
    });
    c.bench_function("route/find_static", |b| {
        b.iter(|| table.find_index(black_box("/index.html")))
    });
    let route = table
        .get(table.find_index("/api/users").unwrap_or(0))
        .cloned();
    if let Some(route) = route {
        c.bench_function("route/strip_prefix", |b| {
            b.iter(|| upstream_path(&route, black_box("/api/users?id=1")))
        });
    }
}

fn bench_headers(c: &mut Criterion) {
    let sent = http::HeaderValue::from_static("0f3c2a9e-request-id");
    c.bench_function("headers/request_id_kept", |b| {
        b.iter(|| headers::request_id(black_box(Some(&sent))))
    });
    c.bench_function("headers/request_id_generated", |b| {
        b.iter(|| headers::request_id(black_box(None)))
    });
    let trusted = vec!["10.0.0.0/8".parse().unwrap_or_else(|_| unreachable!())];
    let peer: IpAddr = [10, 1, 1, 1].into();
    c.bench_function("headers/client_ip_trusted_xff", |b| {
        b.iter(|| {
            headers::client_ip(
                Some(peer),
                Some(black_box(b"203.0.113.9, 10.2.2.2")),
                &trusted,
            )
        })
    });
    c.bench_function("headers/set_forwarding", |b| {
        b.iter(|| {
            let mut req = pingora::http::RequestHeader::build("GET", b"/users?id=1", None).ok()?;
            headers::set_forwarding(
                &mut req,
                Some(peer),
                Some(peer),
                true,
                Some(http::HeaderValue::from_static("example.com")),
                &http::HeaderValue::from_static("abc"),
                // The request has none of the fields, as the raw pass would say.
                headers::Sent::NONE,
            );
            Some(req)
        })
    });
}

fn bench_rate_limit(c: &mut Criterion) {
    let mut cfg = std::collections::BTreeMap::new();
    cfg.insert(
        "api".to_string(),
        RateLimit {
            name: "api".into(),
            key: RateKey::ClientIp,
            rate: 1e9,
            burst: 1_000_000,
            store: None,
        },
    );
    let limiters = Limiters::build(&cfg, None);
    let Some(limiter) = limiters.get("api") else {
        return;
    };
    let key = Key::Ip([127, 0, 0, 1].into());
    c.bench_function("rate_limit/check_one_key", |b| {
        b.iter(|| limiter.check(black_box(&key)))
    });
    let mut n: u32 = 0;
    c.bench_function("rate_limit/check_many_keys", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            limiter.check(&Key::Ip(IpAddr::from((n % 10_000).to_be_bytes())))
        })
    });
}

fn bench_select(c: &mut Criterion) {
    for (name, balance) in [
        ("round_robin", Balance::RoundRobin),
        ("least_conn", Balance::LeastConn),
        ("random", Balance::Random),
        ("consistent_hash", Balance::ConsistentHash),
    ] {
        let pool = Pool::new(upstream(balance));
        c.bench_function(&format!("select/{name}"), |b| {
            b.iter(|| pool.select(black_box(b"203.0.113.9"), &[]))
        });
    }
}

criterion_group!(
    benches,
    bench_routes,
    bench_headers,
    bench_rate_limit,
    bench_select
);
criterion_main!(benches);
