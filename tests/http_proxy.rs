//! The HTTP data plane over real sockets: routing, errors, headers, WebSocket, h2, weights,
//! and table swaps under load.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use corral::config::Config;
use http::StatusCode;

fn instance(id: &str, service: &str, b: &Backend, passing: u32) -> String {
    format!(
        r#"{{"ID":"{id}","Service":"{service}","Address":"127.0.0.1","Port":{},"Weights":{{"Passing":{passing},"Warning":1}}}}"#,
        b.addr.port()
    )
}

#[tokio::test]
async fn routing_precedence_and_wildcards() {
    let names = ["exact", "exact-api", "suffix", "prefix", "fallback", "prio"];
    let mut backends = Vec::new();
    for n in names {
        backends.push(Backend::start(n, Behaviour::Name).await);
    }
    let port = free_port();
    let services: Vec<_> = backends
        .iter()
        .map(|b| instance(&b.name, &b.name, b, 1))
        .collect();
    let config = format!(
        r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{"portRules":[
            {{"sourcePort":{port},"serviceId":"fallback"}},
            {{"sourcePort":{port},"hostname":"*.example.com","serviceId":"suffix"}},
            {{"sourcePort":{port},"hostname":"www.example.com","serviceId":"exact"}},
            {{"sourcePort":{port},"hostname":"www.example.com","path":"/api","serviceId":"exact-api"}},
            {{"sourcePort":{port},"hostname":"example.*","serviceId":"prefix"}},
            {{"sourcePort":{port},"hostname":"urgent.example.org","path":"/","priority":1,"serviceId":"prio"}},
            {{"sourcePort":{port},"hostname":"urgent.example.org","path":"/deep","priority":2,"serviceId":"exact"}}
        ]}}}}],"services":[{}]}}"#,
        services.join(",")
    );
    let _rt = corral(&config).await;
    let cases = [
        ("www.example.com", "/", "exact"),
        ("WWW.Example.com:8080", "/api/v1", "exact-api"),
        ("a.b.example.com", "/", "suffix"),
        ("example.net", "/", "prefix"),
        ("example.com", "/", "prefix"),
        ("unknown.test", "/", "fallback"),
        ("urgent.example.org", "/deep", "prio"),
    ];
    for (host, path, want) in cases {
        let (status, _, body) = get(port, host, path).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, want),
            "{host}{path}"
        );
    }
}

#[tokio::test]
async fn no_rule_is_404_with_a_body_and_keeps_the_connection() {
    let b = Backend::start("a", Behaviour::Name).await;
    let port = free_port();
    let _rt = corral(&format!(
        r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{"portRules":[
            {{"sourcePort":{port},"hostname":"a.test","serviceId":"a"}}]}}}}],"services":[{}]}}"#,
        instance("a", "a", &b, 1)
    ))
    .await;
    let mut client = Client::connect(port).await;
    let (status, _, body) = client.get("b.test", "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("no rule matches"), "{body}");
    let (status, _, body) = client.get("a.test", "/").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "a"));
}

#[tokio::test]
async fn upstream_failures_are_502_503_504() {
    let slow = Backend::start("slow", Behaviour::Slow(Duration::from_secs(3))).await;
    let dead_port = free_port();
    let port = free_port();
    let config = format!(
        r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{"portRules":[
            {{"sourcePort":{port},"path":"/dead","serviceId":"dead"}},
            {{"sourcePort":{port},"path":"/none","serviceId":"nobody"}},
            {{"sourcePort":{port},"path":"/drained","serviceId":"drained"}},
            {{"sourcePort":{port},"path":"/slow","serviceId":"slow"}}]}}}}],
          "services":[
            {{"ID":"d1","Service":"dead","Address":"127.0.0.1","Port":{dead_port}}},
            {{"ID":"z1","Service":"drained","Address":"127.0.0.1","Port":{dead_port},"Maintenance":true}},
            {}],
          "timeouts":{{"upstreamResponse":300}}}}"#,
        instance("slow", "slow", &slow, 1)
    );
    let _rt = corral(&config).await;
    let (status, _, body) = get(port, "x", "/dead").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let (status, headers, _) = get(port, "x", "/none").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"));
    let (status, _, _) = get(port, "x", "/drained").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let start = std::time::Instant::now();
    let (status, _, body) = get(port, "x", "/slow").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(start.elapsed() < Duration::from_secs(2));
    let metrics = _rt.shared().metrics.render();
    assert!(
        metrics.contains(r#"corral_target_timeouts_total{service="slow",target="slow"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"corral_target_connect_errors_total{service="dead",target="d1"} 1"#));
}

#[tokio::test]
async fn connect_failure_moves_to_the_next_target() {
    let live = Backend::start("live", Behaviour::Name).await;
    let dead_port = free_port();
    let port = free_port();
    let _rt = corral(&format!(
        r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{"portRules":[{{"sourcePort":{port},"serviceId":"web"}}]}}}}],
          "services":[{{"ID":"dead","Service":"web","Address":"127.0.0.1","Port":{dead_port}}},{}]}}"#,
        instance("live", "web", &live, 1)
    ))
    .await;
    for _ in 0..10 {
        let (status, _, body) = get(port, "x", "/").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "live"));
    }
}

#[tokio::test]
async fn headers_are_forwarded_and_hop_by_hop_stripped() {
    let b = Backend::start("b", Behaviour::Name).await;
    let port = free_port();
    let _rt = corral(&format!(
        r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{"portRules":[{{"sourcePort":{port},"serviceId":"b"}}]}}}}],"services":[{}]}}"#,
        instance("b", "b", &b, 1)
    ))
    .await;
    let request = "GET /p?q=1 HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: 203.0.113.7\r\n\
        Connection: keep-alive, X-Private\r\nX-Private: secret\r\nKeep-Alive: timeout=5\r\n\
        Proxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: h2c\r\nX-Kept: 1\r\n\
        Connection: close\r\n\r\n";
    let response = raw_exchange(port, request.as_bytes(), Duration::from_secs(3)).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        !response.to_ascii_lowercase().contains("x-hop"),
        "{response}"
    );
    let seen = b.seen.lock();
    let h = &seen[0].headers;
    assert_eq!(seen[0].uri, "/p?q=1");
    assert_eq!(h["host"], "app.test");
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-port"], port.to_string().as_str());
    assert_eq!(h["te"], "trailers");
    assert_eq!(h["x-kept"], "1");
    for gone in ["x-private", "keep-alive", "proxy-connection", "upgrade"] {
        assert!(!h.contains_key(gone), "{gone} was forwarded: {h:?}");
    }
}

#[tokio::test]
async fn websocket_is_spliced_only_after_101() {
    let ws = Backend::start("ws", Behaviour::WebSocketEcho).await;
    let plain = Backend::start("plain", Behaviour::Name).await;
    let port = free_port();
    let _rt = corral(&format!(
        r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{"portRules":[
            {{"sourcePort":{port},"path":"/ws","serviceId":"ws"}},
            {{"sourcePort":{port},"serviceId":"plain"}}]}}}}],"services":[{},{}]}}"#,
        instance("ws", "ws", &ws, 1),
        instance("plain", "plain", &plain, 1)
    ))
    .await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    s.write_all(b"ping-through-the-proxy").await.unwrap();
    let mut echo = vec![0u8; 22];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"ping-through-the-proxy");

    // A backend that does not switch gives an ordinary response.
    let response = raw_exchange(
        port,
        b"GET /other HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("plain"), "{response}");
}

#[tokio::test]
async fn h2_prior_knowledge_is_proxied_to_http1() {
    let b = Backend::start("h1-backend", Behaviour::Name).await;
    let port = free_port();
    let _rt = corral(&format!(
        r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{"portRules":[
            {{"sourcePort":{port},"hostname":"h2.test","serviceId":"b"}}]}}}}],"services":[{}]}}"#,
        instance("b", "b", &b, 1)
    ))
    .await;
    let (status, body) = h2_get(port, "h2.test:443", "/x").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "h1-backend"));
    let seen = b.seen.lock();
    assert_eq!(seen[0].version, http::Version::HTTP_11);
    assert_eq!(seen[0].headers["host"], "h2.test:443");
    assert_eq!(seen[0].uri, "/x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_hold_within_two_percent_over_10000_requests() {
    let a = Backend::start("a", Behaviour::Name).await;
    let b = Backend::start("b", Behaviour::Name).await;
    let c = Backend::start("c", Behaviour::Name).await;
    let port = free_port();
    let _rt = corral(&format!(
        r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{"portRules":[{{"sourcePort":{port},"serviceId":"web"}}]}}}}],
          "services":[{},{},{}]}}"#,
        instance("a", "web", &a, 5),
        instance("b", "web", &b, 3),
        instance("c", "web", &c, 2)
    ))
    .await;
    let counts = Arc::new(parking_lot::Mutex::new(std::collections::HashMap::<
        String,
        usize,
    >::new()));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let counts = counts.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(port).await;
            for _ in 0..2500 {
                let (_, _, body) = client.get("x", "/").await;
                *counts.lock().entry(body).or_default() += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let counts = counts.lock();
    for (name, want) in [("a", 0.5), ("b", 0.3), ("c", 0.2)] {
        let share = counts[name] as f64 / 10_000.0;
        assert!(
            (share - want).abs() <= 0.02,
            "{name}: {share} vs {want} ({counts:?})"
        );
    }
}

/// 50 table swaps while keep-alive and connection-per-request clients run: zero failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_swaps_under_traffic_lose_nothing() {
    let a = Backend::start("a", Behaviour::Name).await;
    let b = Backend::start("b", Behaviour::Name).await;
    let port = free_port();
    let other_port = free_port();
    let config = |weight_b: u32, extra: bool| {
        let extra_rule = if extra {
            format!(r#",{{"sourcePort":{other_port},"serviceId":"web"}}"#)
        } else {
            String::new()
        };
        format!(
            r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{"portRules":[{{"sourcePort":{port},"serviceId":"web"}}{extra_rule}]}}}}],
              "services":[{},{}]}}"#,
            instance("a", "web", &a, 1),
            instance("b", "web", &b, weight_b)
        )
    };
    let rt = corral(&config(1, false)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for keep_alive in [true, true, false, false] {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let mut client = Client::connect(port).await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
                let result = if keep_alive {
                    client.try_get("x", "/").await
                } else {
                    Client::connect(port).await.try_get("x", "/").await
                };
                match result {
                    Ok((StatusCode::OK, _, _)) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for i in 0..50u32 {
        let c = Config::from_json(&config(1 + i % 3, i % 2 == 0)).unwrap();
        let table = rt.apply(&c, corral::runtime::Source::File).await.unwrap();
        assert_eq!(table.generation(), u64::from(i) + 2);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} failed of {}", ok + failed);
    assert!(ok > 200, "only {ok} requests ran");
}

#[tokio::test]
async fn an_invalid_table_is_refused_and_the_old_one_keeps_serving() {
    let b = Backend::start("b", Behaviour::Name).await;
    let port = free_port();
    let rt = corral(&format!(
        r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{"portRules":[{{"sourcePort":{port},"serviceId":"b"}}]}}}}],"services":[{}]}}"#,
        instance("b", "b", &b, 1)
    ))
    .await;
    let bad = Config::from_json(&format!(
        r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{"portRules":[{{"sourcePort":{port},"serviceId":"b","hostname":"bad host"}}]}}}}]}}"#
    ))
    .unwrap();
    assert!(rt.apply(&bad, corral::runtime::Source::File).await.is_err());
    assert_eq!(rt.table().generation(), 1);
    let (status, _, body) = get(port, "x", "/").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "b"));
}

/// `limits.upstreamMaxPerTarget`: a target with that many connections open is skipped (not
/// marked as failing), and with every target full the answer is a quick 503.
#[tokio::test]
async fn targets_at_their_connection_limit_are_skipped_then_503() {
    let a = Backend::start("a", Behaviour::Slow(Duration::from_millis(1500))).await;
    let b = Backend::start("b", Behaviour::Slow(Duration::from_millis(1500))).await;
    let port = free_port();
    let config = format!(
        r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{"portRules":[{{"sourcePort":{port},"serviceId":"web"}}]}}}}],
          "services":[{},{}],"limits":{{"upstreamMaxPerTarget":1}}}}"#,
        instance("a", "web", &a, 1),
        instance("b", "web", &b, 1)
    );
    let rt = corral(&config).await;
    // Two slow requests take the one connection each target may have...
    let first = tokio::spawn(get(port, "x", "/1"));
    let second = tokio::spawn(get(port, "x", "/2"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...so a third finds both full: 503 at once, not after the targets' 1.5 s.
    let start = std::time::Instant::now();
    let (status, headers, body) = get(port, "x", "/3").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(headers.contains_key("retry-after"));
    assert!(start.elapsed() < Duration::from_millis(500));
    let mut served = vec![first.await.unwrap().2, second.await.unwrap().2];
    served.sort();
    assert_eq!(
        served,
        ["a", "b"],
        "the second request went to the free target"
    );
    // The connections are back in the pool: the next requests are served, and neither
    // target was counted as failing.
    let (status, _, _) = get(port, "x", "/4").await;
    assert_eq!(status, StatusCode::OK);
    let metrics = rt.shared().metrics.render();
    let connect_errors = "corral_target_connect_errors_total";
    assert!(metrics.lines().any(|l| l.starts_with(connect_errors)));
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with(connect_errors) && !l.ends_with(" 0")),
        "{metrics}"
    );
}

/// `limits.maxConnectionsPerListener`: with that many client connections open, the next one
/// waits in the kernel's backlog, unserved, until one of them closes.
#[tokio::test]
async fn a_listener_serves_at_most_its_connection_limit() {
    let b = Backend::start("b", Behaviour::Name).await;
    let port = free_port();
    let _rt = corral(&format!(
        r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{"portRules":[{{"sourcePort":{port},"serviceId":"web"}}]}}}}],
          "services":[{}],"limits":{{"maxConnectionsPerListener":2}}}}"#,
        instance("b", "web", &b, 1)
    ))
    .await;
    let mut first = Client::connect(port).await;
    let mut second = Client::connect(port).await;
    assert_eq!(first.get("x", "/").await.0, StatusCode::OK);
    assert_eq!(second.get("x", "/").await.0, StatusCode::OK);
    let third = tokio::spawn(async move { Client::connect(port).await.get("x", "/").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served over the limit"
    );
    drop(first);
    let (status, _, body) = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("the waiting connection was not served once a slot was free")
        .unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "b"));
    assert_eq!(second.get("x", "/").await.0, StatusCode::OK);
}
