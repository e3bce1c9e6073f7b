//! Hostile traffic over real sockets (issue 8): the raw cases of `common/raw.rs` against corral
//! with an instrumented raw backend, each followed by a victim request on a fresh connection;
//! then timeouts (slowloris, slow body) and many idle connections.

mod common;
#[path = "common/raw.rs"]
mod raw;

use std::time::{Duration, Instant};

use common::*;
use raw::{exchange, RawBackend, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(port: u16, backend: u16, timeouts: &str) -> String {
    format!(
        r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{"portRules":[
            {{"sourcePort":{port},"serviceId":"raw"}}]}}}}],
          "services":[{{"ID":"raw1","Service":"raw","Address":"127.0.0.1","Port":{backend}}}],
          "timeouts":{{"upstreamResponse":2000{timeouts}}}}}"#
    )
}

/// Runs every case of `class`; fails listing each case that did not do what it wants.
async fn run_class(class: &str) {
    let backend = RawBackend::start(0).await.unwrap();
    let port = free_port();
    let _rt = corral(&config(port, backend.port, "")).await;
    let cases: Vec<_> = raw::cases()
        .into_iter()
        .filter(|c| c.class == class)
        .collect();
    assert!(!cases.is_empty(), "no cases in {class}");
    let mut failures = Vec::new();
    for case in &cases {
        let out = raw::run(case, port, &backend, Duration::from_secs(3)).await;
        println!(
            "{class:10} {:18} client {:?} closed={} upstream={} | {}",
            out.verdict.label(),
            out.got.statuses(),
            out.got.closed,
            out.upstream.len(),
            case.name
        );
        if let Err(why) = raw::check(case, &out) {
            failures.push(format!(
                "- {}: {why}\n    client: {:?} closed={} rest={:?}\n    backend: {:?}\n    victim: {:?}",
                case.name,
                out.got.statuses(),
                out.got.closed,
                out.got.rest.chars().take(200).collect::<String>(),
                out.upstream_raw.chars().take(400).collect::<String>(),
                out.victim.statuses(),
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} {class} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn at_least_sixty_cases() {
    let n = raw::cases().len();
    assert!(n >= 60, "{n} cases");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing() {
    run_class("framing").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_syntax() {
    run_class("headers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_trailers_upgrade_connect() {
    run_class("hop-by-hop").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelining() {
    run_class("pipelining").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits() {
    run_class("limits").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_side() {
    run_class("upstream").await;
}

/// The verdict logic itself: a proxy that forwards a smuggled request is caught.
#[tokio::test]
async fn verdicts_catch_a_desync_and_an_unsafe_forward() {
    let backend = RawBackend::start(0).await.unwrap();
    // A "proxy" that is a TCP pipe: it forwards everything verbatim.
    let pipe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pipe_port = pipe.local_addr().unwrap().port();
    let backend_port = backend.port;
    tokio::spawn(async move {
        while let Ok((mut client, _)) = pipe.accept().await {
            tokio::spawn(async move {
                if let Ok(mut up) = TcpStream::connect(("127.0.0.1", backend_port)).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                }
            });
        }
    });
    let cases = raw::cases();
    let find = |prefix: &str| cases.iter().find(|c| c.name.starts_with(prefix)).unwrap();
    let out = raw::run(
        find("Content-Length: 2^64"),
        pipe_port,
        &backend,
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(out.verdict, Verdict::Unsafe, "{out:?}");
    let out = raw::run(
        find("CL + TE (CL first)"),
        pipe_port,
        &backend,
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(out.verdict, Verdict::Desync, "{out:?}");
    let out = raw::run(
        find("headers named in Connection"),
        pipe_port,
        &backend,
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(out.verdict, Verdict::Unsafe, "{out:?}");
}

/// A head trickled one line at a time is cut by `requestHeaders`; others are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_head_is_cut_while_others_are_served() {
    let backend = RawBackend::start(0).await.unwrap();
    let port = free_port();
    let _rt = corral(&config(port, backend.port, r#","requestHeaders":500"#)).await;
    let mut slow = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: h\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let mut closed_after = None;
    for i in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if slow
            .write_all(format!("X-{i}: v\r\n").as_bytes())
            .await
            .is_err()
        {
            closed_after = Some(start.elapsed());
            break;
        }
        let mut b = [0u8; 512];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), slow.read(&mut b)).await {
            assert!(
                n == 0 || b.starts_with(b"HTTP/1.1 408"),
                "{:?}",
                String::from_utf8_lossy(&b[..n])
            );
            closed_after = Some(start.elapsed());
            break;
        }
        if i == 2 {
            let got = exchange(
                port,
                b"GET /other HTTP/1.1\r\nHost: h\r\n\r\n",
                1,
                Duration::from_secs(2),
            )
            .await;
            assert_eq!(got.statuses(), [200], "{got:?}");
        }
    }
    let closed_after = closed_after.expect("slowloris connection still open after 4 s");
    assert!(
        closed_after >= Duration::from_millis(400) && closed_after < Duration::from_millis(1500),
        "{closed_after:?}"
    );
    assert!(backend.requests().iter().all(|r| r.target() != "/slow"));
}

/// A body that stops arriving is cut by `requestBody` with 408 and a close; other clients are
/// served meanwhile, and the target never sees a complete request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_body_is_cut_while_others_are_served() {
    let backend = RawBackend::start(0).await.unwrap();
    let port = free_port();
    let _rt = corral(&config(port, backend.port, r#","requestBody":500"#)).await;
    let mut slow = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let start = Instant::now();
    slow.write_all(b"POST /slow HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let other = exchange(
        port,
        b"GET /other HTTP/1.1\r\nHost: h\r\n\r\n",
        1,
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(other.statuses(), [200], "{other:?}");
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "slow-body connection not closed within 3 s");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_millis(2000),
        "{elapsed:?}"
    );
    let seen = backend.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].target(), "/other");
}

/// 2,000 idle keep-alive client connections (10,000 in `scripts/hostile.sh`): a new request is
/// still answered, and the idle ones are still alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_idle_connections_still_serve() {
    let backend = RawBackend::start(0).await.unwrap();
    let port = free_port();
    let _rt = corral(&config(port, backend.port, "")).await;
    let mut idle = Vec::new();
    let start = Instant::now();
    for _ in 0..2000 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        // One request each, so every connection is a parsed keep-alive connection.
        s.write_all(b"GET /i HTTP/1.1\r\nHost: h\r\n\r\n")
            .await
            .unwrap();
        idle.push(s);
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "opening is too slow"
        );
    }
    for s in &mut idle {
        let mut b = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .expect("idle connection got no answer")
            .unwrap();
        assert!(b[..n].starts_with(b"HTTP/1.1 200"));
    }
    let got = exchange(
        port,
        b"GET /new HTTP/1.1\r\nHost: h\r\n\r\n",
        1,
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(got.statuses(), [200], "{got:?}");
    // The idle connections are still usable.
    let s = &mut idle[0];
    s.write_all(b"GET /again HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let mut b = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut b))
        .await
        .unwrap()
        .unwrap();
    assert!(b[..n].starts_with(b"HTTP/1.1 200"));
}
