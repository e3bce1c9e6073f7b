//! Micro-benchmarks of the request path's pure parts: rule lookup, weighted pick, cookie
//! parsing and the table build a reload (every API write) pays for.
//!
//! `cargo bench --bench hot_paths`

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

use corral::balance::{Target, TargetGroup, TargetState};
use corral::config::Config;
use corral::metrics::Metrics;
use corral::routing::{self, BuildContext, RoutingTable};
use corral::tls::TlsContext;

const PORT: u16 = 18080;

/// One load balancer with `n` rules on one port (exact hosts, wildcards, paths, a catch-all)
/// over `n` services of two instances each.
fn config(n: usize) -> Config {
    let mut rules = Vec::with_capacity(n);
    let mut services = Vec::with_capacity(2 * n);
    for i in 0..n {
        let (hostname, path) = match i % 4 {
            0 => (format!("svc{i}.example.com"), String::new()),
            1 => (format!("*.zone{i}.example.com"), String::new()),
            2 => (format!("api{i}.example.com"), format!("/v{i}")),
            _ => (format!("shop{i}.*"), "/cart".to_string()),
        };
        rules.push(serde_json::json!({
            "sourcePort": PORT, "protocol": "http", "hostname": hostname, "path": path,
            "serviceId": format!("svc{i}"), "targetPort": 8000
        }));
        for k in 0..2 {
            services.push(serde_json::json!({
                "ID": format!("svc{i}-{k}"), "Service": format!("svc{i}"),
                "Address": "127.0.0.1", "Port": 20000 + (i * 2 + k) as u16,
                "Weights": { "Passing": 1 + k as u32, "Warning": 1 }
            }));
        }
    }
    rules.push(serde_json::json!({ "sourcePort": PORT, "protocol": "http", "serviceId": "svc0" }));
    let json = serde_json::json!({
        "loadBalancers": [{ "name": "lb", "lbConfig": { "portRules": rules } }],
        "services": services,
    });
    Config::from_json(&json.to_string()).expect("benchmark config is valid")
}

fn build(config: &Config, metrics: &Metrics, tls: &TlsContext) -> RoutingTable {
    let ctx = BuildContext {
        generation: 1,
        reserved_ports: &[9180],
        metrics,
        tls,
    };
    routing::build(config, &ctx).expect("benchmark config builds")
}

fn routing_lookup(c: &mut Criterion) {
    let (metrics, tls) = (Metrics::new(), TlsContext::new());
    let table = build(&config(1000), &metrics, &tls);
    let routes = &table.listener(PORT).expect("listener").routes;
    assert_eq!(routes.len(), 1001);
    let mut g = c.benchmark_group("routing_lookup_1000_rules");
    let cases = [
        ("exact", "svc500.example.com", "/index.html"),
        ("wildcard", "www.zone501.example.com", "/"),
        ("exact_path", "api502.example.com", "/v502/users"),
        ("prefix", "shop503.co.uk", "/cart/1"),
        ("fallback", "unknown.example.org", "/"),
    ];
    for (name, host, path) in cases {
        assert!(routes.lookup(Some(host), path).is_some(), "{name}");
        g.bench_function(name, |b| {
            b.iter(|| routes.lookup(black_box(Some(host)), black_box(path)))
        });
    }
    g.bench_function("normalize_host_then_lookup", |b| {
        b.iter(|| {
            let host = routing::normalize_host(black_box("WWW.Zone501.Example.com:8080"));
            routes
                .lookup(host.as_deref(), black_box("/"))
                .map(|r| r.group)
        })
    });
    g.finish();
}

fn weighted_pick(c: &mut Criterion) {
    let metrics = Metrics::new();
    let group = |weights: &[u32]| {
        let targets = weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Target {
                id: format!("t{i}").into(),
                addr: SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
                weight,
                state: TargetState::Passing,
                metrics: metrics.target("svc", &format!("t{i}")),
                cookie: corral::sticky::CookieId::of(&format!("t{i}")),
            })
            .collect();
        TargetGroup::new("svc".into(), targets, metrics.service("svc"))
    };
    let mut g = c.benchmark_group("weighted_pick");
    let four = group(&[3, 1, 1, 1]);
    g.bench_function("4_targets", |b| {
        b.iter(|| four.pick(|_| true).map(|t| t.addr))
    });
    let hundred = group(&(1..=100).collect::<Vec<u32>>());
    g.bench_function("100_targets", |b| {
        b.iter(|| hundred.pick(|_| true).map(|t| t.addr))
    });
    g.bench_function("100_targets_one_refused", |b| {
        b.iter(|| hundred.pick(|t| &*t.id != "t7").map(|t| t.addr))
    });
    g.finish();
}

/// corral has no sticky-cookie code in this tree yet (`src/sticky`); this measures what it
/// will build on: the `cookie` crate parsing a typical browser `Cookie` header and finding
/// one name.
fn cookie_parse(c: &mut Criterion) {
    let header = "_ga=GA1.2.1234567890.1700000000; _gid=GA1.2.987654321.1700000000; \
                  session=9f86d081884c7d659a2feaa0c55ad015; theme=dark; lang=en-GB; \
                  SERVERID=web-3; csrftoken=abcdefABCDEF0123456789";
    c.bench_function("cookie_parse_find", |b| {
        b.iter(|| {
            cookie::Cookie::split_parse(black_box(header))
                .filter_map(Result::ok)
                .find(|c| c.name() == "SERVERID")
                .map(|c| c.value().len())
        })
    });
}

fn table_build(c: &mut Criterion) {
    let (metrics, tls) = (Metrics::new(), TlsContext::new());
    let config = config(1000);
    let mut g = c.benchmark_group("table_build");
    g.sample_size(20);
    g.bench_function("1000_services_2000_instances", |b| {
        b.iter_batched(
            || (),
            |()| build(&config, &metrics, &tls),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// An HTTPS load balancer with `n` certificates (ECDSA P-256, self-signed).
fn config_with_certificates(n: usize) -> Config {
    let mut certificates = Vec::with_capacity(n);
    for i in 0..n {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![format!("site{i}.example.com")])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        certificates.push(serde_json::json!({
            "id": format!("c{i}"), "cert": cert.pem(), "key": key.serialize_pem()
        }));
    }
    let ids: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    let json = serde_json::json!({
        "loadBalancers": [{ "name": "lb", "lbConfig": {
            "portRules": [{ "sourcePort": PORT, "protocol": "https", "serviceId": "web" }],
            "certificateIds": ids, "defaultCertificateId": "c0" } }],
        "services": [{ "ID": "web-1", "Service": "web", "Address": "127.0.0.1", "Port": 20000 }],
        "certificates": certificates,
    });
    Config::from_json(&json.to_string()).expect("benchmark config is valid")
}

/// What an API write that does not touch certificates pays for them: nothing to parse when
/// the certificates are already known (`cached`), all of them otherwise (`cold`).
fn table_build_certificates(c: &mut Criterion) {
    let metrics = Metrics::new();
    let config = config_with_certificates(50);
    let mut g = c.benchmark_group("table_build_50_certificates");
    g.sample_size(20);
    let warm = TlsContext::new();
    build(&config, &metrics, &warm);
    g.bench_function("cached", |b| b.iter(|| build(&config, &metrics, &warm)));
    g.bench_function("cold", |b| {
        b.iter_batched(
            TlsContext::new,
            |tls| build(&config, &metrics, &tls),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(
    benches,
    routing_lookup,
    weighted_pick,
    cookie_parse,
    table_build,
    table_build_certificates
);
criterion_main!(benches);
