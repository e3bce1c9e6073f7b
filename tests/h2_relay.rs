//! h2 clients through the relay's target side, over real sockets: bodies as data frames
//! whatever the target's framing (chunked taken off, close-delimited, large, none), what the
//! target sees of an h2 request (its `:authority` as `Host`, split cookies joined, no h2-only
//! fields), upstream connection reuse, a target that breaks off mid-body, and requests with
//! a body, which hyper's client still sends.
//!
//! The client is hyper's h2 client (prior knowledge); the target is [`RawBackend`]
//! (scripted replies, every request recorded with its upstream connection number).

mod common;
#[path = "common/raw.rs"]
mod raw;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use corral::runtime::Runtime;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use raw::{leak, RawBackend, Reply};
use tokio::net::TcpStream;

/// Corral on a free port, forwarding everything to one raw backend.
async fn setup() -> (RawBackend, u16, Arc<Runtime>) {
    let backend = RawBackend::start(0).await.unwrap();
    let (port, rt) = corral_to(backend.port, r#"{"upstreamResponse":3000}"#).await;
    (backend, port, rt)
}

async fn h2(port: u16) -> SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    /// The body, or what broke it.
    body: Result<Bytes, String>,
}

async fn send(sender: &mut SendRequest<Full<Bytes>>, req: Request<Full<Bytes>>) -> Answer {
    let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .expect("no response within 5 s")
        .expect("the request failed");
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(5), body.collect())
        .await
        .expect("no body end within 5 s")
        .map(|b| b.to_bytes())
        .map_err(|e| e.to_string());
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://h2.test{path}"))
        .body(Full::default())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_response_reaches_an_h2_client_as_data_and_the_target_is_reused() {
    bounded(async {
        let (backend, port, _rt) = setup().await;
        backend.reset(vec![Reply::Raw(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\
              Connection: X-Private\r\nX-Private: 1\r\nKeep-Alive: timeout=5\r\nX-Kind: chunked\r\n\r\n\
              5;name=value\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\nX-Checksum: abc\r\n\r\n",
        )]);
        let mut client = h2(port).await;
        let a = send(&mut client, get("/chunked")).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body.as_deref(), Ok(&b"hello world!"[..]));
        assert_eq!(a.headers["x-kind"], "chunked");
        for hop in ["transfer-encoding", "connection", "x-private", "keep-alive"] {
            assert!(!a.headers.contains_key(hop), "{hop} reached the client");
        }
        let b = send(&mut client, get("/after")).await;
        assert_eq!(b.body.as_deref(), Ok(&b"/after"[..]));
        let seen = backend.requests();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0].conn, seen[1].conn, "the target connection was not reused");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_delimited_and_large_bodies_arrive_whole() {
    bounded(async {
        let (backend, port, _rt) = setup().await;
        let large: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 23) as u8).collect();
        let mut reply =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", large.len()).into_bytes();
        reply.extend_from_slice(&large);
        backend.reset(vec![
            Reply::RawClose(b"HTTP/1.1 200 OK\r\nX-Kind: eof\r\n\r\nends where the target closes"),
            Reply::Raw(leak(reply)),
        ]);
        let mut client = h2(port).await;
        let eof = send(&mut client, get("/eof")).await;
        assert_eq!(
            eof.body.as_deref(),
            Ok(&b"ends where the target closes"[..])
        );
        let big = send(&mut client, get("/large")).await;
        assert_eq!(big.headers["content-length"], large.len().to_string());
        assert!(
            big.body.as_ref().is_ok_and(|b| b[..] == large[..]),
            "large body differs"
        );
        let seen = backend.requests();
        assert_ne!(seen[0].conn, seen[1].conn, "a closed connection was reused");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_without_a_body_end_the_stream() {
    bounded(async {
        let (backend, port, _rt) = setup().await;
        backend.reset(vec![
            Reply::Raw(b"HTTP/1.1 204 No Content\r\nX-N: 1\r\n\r\n"),
            Reply::Raw(b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"),
            Reply::Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
            Reply::Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ]);
        let mut client = h2(port).await;
        let a = send(&mut client, get("/204")).await;
        assert_eq!(
            (a.status, a.body.as_deref()),
            (StatusCode::NO_CONTENT, Ok(&b""[..]))
        );
        let b = send(&mut client, get("/304")).await;
        assert_eq!(b.status, StatusCode::NOT_MODIFIED);
        let head = Request::head("http://h2.test/head")
            .body(Full::default())
            .unwrap();
        let c = send(&mut client, head).await;
        assert_eq!(
            (c.status, c.body.as_deref()),
            (StatusCode::OK, Ok(&b""[..]))
        );
        let d = send(&mut client, get("/empty")).await;
        assert_eq!(d.body.as_deref(), Ok(&b""[..]));
        let seen = backend.requests();
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert!(
            seen.iter().all(|s| s.conn == seen[0].conn),
            "a target connection was not reused after a response without a body: {seen:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_target_gets_an_http1_request_with_host_and_joined_cookies() {
    bounded(async {
        let (backend, port, _rt) = setup().await;
        let mut client = h2(port).await;
        let req = Request::get("http://app.example:8443/p/a?q=1&r=2")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-custom", "kept")
            .body(Full::default())
            .unwrap();
        let a = send(&mut client, req).await;
        assert_eq!(a.body.as_deref(), Ok(&b"/p/a?q=1&r=2"[..]));
        let seen = backend.requests();
        let head = seen[0].head.to_ascii_lowercase();
        assert!(head.starts_with("get /p/a?q=1&r=2 http/1.1\r\n"), "{head}");
        for want in [
            "host: app.example:8443\r\n",
            "cookie: a=1; b=2\r\n",
            "x-custom: kept\r\n",
            "x-forwarded-for: 6.6.6.6, 127.0.0.1\r\n",
            "x-forwarded-proto: http\r\n",
        ] {
            assert!(head.contains(want), "{want:?} missing from {head}");
        }
        assert_eq!(head.matches("host:").count(), 1, "{head}");
        assert_eq!(head.matches("cookie:").count(), 1, "{head}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_breaking_off_mid_body_resets_only_that_stream() {
    bounded(async {
        let (backend, port, _rt) = setup().await;
        backend.reset(vec![Reply::RawClose(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part of it",
        )]);
        let mut client = h2(port).await;
        // The reset may reach the client before it has read the head: either way the stream
        // must not end cleanly.
        let cut = tokio::time::timeout(Duration::from_secs(5), async {
            let response = client.send_request(get("/cut")).await?;
            response.into_body().collect().await
        })
        .await
        .expect("the cut stream was not ended within 5 s");
        assert!(cut.is_err(), "a cut body ended cleanly");
        let b = send(&mut client, get("/next")).await;
        assert_eq!(b.body.as_deref(), Ok(&b"/next"[..]));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_responses_and_requests_with_bodies_keep_their_answers() {
    bounded(async {
        let (backend, port, _rt) = setup().await;
        backend.reset(vec![Reply::Raw(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        )]);
        let mut client = h2(port).await;
        let bad = send(&mut client, get("/ambiguous")).await;
        assert_eq!(bad.status, StatusCode::BAD_GATEWAY);
        // A body goes through hyper's client, as before.
        let post = Request::builder()
            .method(Method::POST)
            .uri("http://h2.test/upload")
            .body(Full::new(Bytes::from_static(b"payload")))
            .unwrap();
        let ok = send(&mut client, post).await;
        assert_eq!(ok.body.as_deref(), Ok(&b"/upload"[..]));
        let seen = backend.requests();
        assert_eq!(seen.last().map(|s| &s.body[..]), Some(&b"payload"[..]));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_each_get_their_own_answer() {
    bounded(async {
        let (_backend, port, _rt) = setup().await;
        let client = h2(port).await;
        let mut streams = Vec::new();
        for i in 0..50 {
            let mut client = client.clone();
            streams.push(tokio::spawn(async move {
                let path = format!("/stream/{i}");
                let a = send(&mut client, get(&path)).await;
                assert_eq!(a.body.as_deref(), Ok(path.as_bytes()));
            }));
        }
        for s in streams {
            s.await.unwrap();
        }
    })
    .await;
}
