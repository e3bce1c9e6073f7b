//! Passive health over real sockets: a killed backend costs clients nothing for GETs, a
//! failing target cools off and comes back, resets are retried only when that is safe.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{corral, free_port, Client};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A backend that can be killed (listener and every connection gone) and started again on
/// the same port.
struct Killable {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Killable {
    async fn start(name: &'static str, addr: Option<SocketAddr>) -> Killable {
        let listener = TcpListener::bind(addr.unwrap_or(([127, 0, 0, 1], 0).into()))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let counter = counter.clone();
                conns.spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let counter = counter.clone();
                        async move {
                            let _ = req.into_body().collect().await;
                            counter.fetch_add(1, Ordering::Relaxed);
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(name))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Killable { addr, hits, task }
    }

    /// Closes the listener and every open connection (dropping the task drops the JoinSet).
    async fn kill(self) -> SocketAddr {
        self.task.abort();
        let _ = self.task.await;
        self.addr
    }
}

/// A backend that reads a request head and closes the connection without a byte of answer.
async fn resetter() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if let Ok(n) = stream.read(&mut buf).await {
                    if n > 0 {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
                drop(stream);
            });
        }
    });
    (addr, seen)
}

fn lb(port: u16, services: &[(&str, SocketAddr)]) -> String {
    let services: Vec<String> = services
        .iter()
        .map(|(id, addr)| {
            format!(
                r#"{{"ID":"{id}","Service":"web","Address":"127.0.0.1","Port":{}}}"#,
                addr.port()
            )
        })
        .collect();
    format!(
        r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{"portRules":[{{"sourcePort":{port},"serviceId":"web"}}]}}}}],
           "services":[{}]}}"#,
        services.join(",")
    )
}

fn counter(rt: &corral::runtime::Runtime, family: &str, target: &str) -> u64 {
    let text = rt.shared().metrics.render();
    let needle = format!(r#"{family}{{service="web",target="{target}"}} "#);
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map_or(0, |v| v.trim().parse().unwrap())
}

async fn send(port: u16, method: Method, body: &'static str) -> (StatusCode, String) {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri("/")
        .header("host", "x")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_killed_backend_costs_gets_nothing_cools_off_and_comes_back() {
    let a = Killable::start("a", None).await;
    let b = Killable::start("b", None).await;
    let port = free_port();
    let rt = corral(&lb(port, &[("a", a.addr), ("b", b.addr)])).await;
    rt.shared()
        .passive
        .configure(3, Duration::from_millis(600), Duration::from_secs(5));

    // Warm keep-alive connections to both, so the kill also breaks pooled ones.
    let mut client = Client::connect(port).await;
    for _ in 0..10 {
        assert_eq!(client.get("x", "/").await.0, StatusCode::OK);
    }
    let b_hits_before = b.hits.load(Ordering::Relaxed);
    let dead = a.kill().await;

    for i in 0..100 {
        let (status, _, body) = client.get("x", "/").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "b"),
            "request {i}"
        );
    }
    assert_eq!(b.hits.load(Ordering::Relaxed) - b_hits_before, 100);
    let retries = counter(&rt, "corral_target_retries_total", "a");
    let connect_errors = counter(&rt, "corral_target_connect_errors_total", "a");
    assert!(
        (1..=3).contains(&retries),
        "at most threshold retries before the cool-off, got {retries}"
    );
    assert!(
        connect_errors <= 3,
        "cooling off: no more connects ({connect_errors})"
    );

    // Back on the same port: after the cool-off it gets traffic again.
    let a = Killable::start("a", Some(dead)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while a.hits.load(Ordering::Relaxed) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "a never came back");
        let (status, _, _) = client.get("x", "/").await;
        assert_eq!(status, StatusCode::OK);
    }
    let mut seen_a = 0;
    for _ in 0..20 {
        if client.get("x", "/").await.2 == "a" {
            seen_a += 1;
        }
    }
    assert_eq!(seen_a, 10, "round-robin again after one success");
    drop(a);
}

#[tokio::test]
async fn all_targets_cooling_off_is_503_with_retry_after() {
    let dead_port = free_port();
    let port = free_port();
    let rt = corral(&lb(port, &[("d", ([127, 0, 0, 1], dead_port).into())])).await;
    rt.shared()
        .passive
        .configure(2, Duration::from_secs(30), Duration::from_secs(30));
    for _ in 0..2 {
        let (status, _, _) = common::get(port, "x", "/").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
    }
    let (status, headers, _) = common::get(port, "x", "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers.get("retry-after").unwrap(), "1");
}

#[tokio::test]
async fn resets_are_retried_only_when_safe() {
    let good = Killable::start("good", None).await;
    let (bad, bad_seen) = resetter().await;
    let port = free_port();
    let rt = corral(&lb(port, &[("bad", bad), ("good", good.addr)])).await;
    // Keep the resetter in rotation for the whole test.
    rt.shared()
        .passive
        .configure(1000, Duration::from_secs(1), Duration::from_secs(1));

    // GET, DELETE, PUT with a small body, POST without one: retried, the client sees 200.
    for (method, body) in [
        (Method::GET, ""),
        (Method::DELETE, ""),
        (Method::PUT, "{\"k\":1}"),
        (Method::POST, ""),
    ] {
        for _ in 0..4 {
            let (status, got) = send(port, method.clone(), body).await;
            assert_eq!((status, got.as_str()), (StatusCode::OK, "good"), "{method}");
        }
    }
    assert!(
        bad_seen.load(Ordering::Relaxed) >= 8,
        "the resetter was tried"
    );
    assert!(counter(&rt, "corral_target_retries_total", "bad") >= 8);

    // A POST with a body is not replayed: the reset is the client's 502 when it lands there.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(send(port, Method::POST, "payload").await.0);
    }
    assert!(statuses.contains(&StatusCode::BAD_GATEWAY), "{statuses:?}");
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
}
