//! Ordinary HTTP/1.1 relaying over real sockets: how bodies are framed in both directions,
//! which responses have none, interim responses, pipelining, upstream connection reuse, and
//! what the target and the client see of each other's headers. The hostile cases are in
//! `tests/hostile.rs`; these are the everyday ones a rewrite of the HTTP/1 path must keep.
//!
//! The client is raw bytes ([`raw::Conn`]) and so is the target ([`RawBackend`]: scripted
//! replies, every request it parsed recorded with its upstream connection number).

mod common;
#[path = "common/raw.rs"]
mod raw;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use corral::runtime::Runtime;
use raw::{exchange, leak, Conn, RawBackend, Reply, Response};

/// The longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(5);

/// Corral on a free port, forwarding everything to one raw backend.
async fn setup() -> (RawBackend, u16, Arc<Runtime>) {
    setup_with_timeouts(r#"{"upstreamResponse":3000}"#).await
}

/// [`setup`] with these `timeouts` (a JSON object).
async fn setup_with_timeouts(timeouts: &str) -> (RawBackend, u16, Arc<Runtime>) {
    let backend = RawBackend::start(0).await.unwrap();
    let (port, rt) = corral_to(backend.port, timeouts).await;
    (backend, port, rt)
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").into_bytes()
}

/// The next response on `conn`, which must arrive.
async fn response(conn: &mut Conn, what: &str) -> Response {
    match conn.response(false, WAIT).await {
        Some(r) => r,
        None => panic!(
            "{what}: no complete response; got {:?}",
            String::from_utf8_lossy(conn.rest())
        ),
    }
}

/// A request on `conn` answered by the backend's echo: 200 with the path as the body.
async fn echoed(conn: &mut Conn, path: &str) {
    conn.send(&get(path)).await;
    let r = response(conn, path).await;
    assert_eq!((r.status, r.body.as_str()), (200, path), "{r:?}");
}

/// `n` bytes of printable text that do not repeat with a short period, so that a lost,
/// doubled or misplaced block shows.
fn pattern(n: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    (0..n)
        .map(|i| ALPHABET[(i + i / 997 + i / 65_521) % ALPHABET.len()])
        .collect()
}

/// 1. A chunked response (chunk extension, trailer section) reaches the client whole; the
/// client connection and the upstream one both stay usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_response_with_extension_and_trailers() {
    bounded(async {
        let (backend, port, _rt) = setup().await;
        backend.reset(vec![Reply::Raw(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\nX-Kind: chunked\r\n\r\n\
              5;name=value\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\nX-Checksum: abc\r\n\r\n",
        )]);
        let mut conn = Conn::connect(port).await;
        conn.send(&get("/chunked")).await;
        let r = response(&mut conn, "chunked").await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body, "hello world!", "{r:?}");
        assert_eq!(r.header("x-kind").as_deref(), Some("chunked"), "{r:?}");
        println!(
            "chunked response to the client: transfer-encoding {:?}, content-length {:?}, trailers {:?}",
            r.header("transfer-encoding"),
            r.header("content-length"),
            r.trailers
        );
        echoed(&mut conn, "/after-chunked").await;
        let seen = backend.requests();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(
            seen[0].conn, seen[1].conn,
            "the upstream connection was not reused after a chunked response"
        );
    })
    .await;
}

/// 2. A response without Content-Length or Transfer-Encoding ends when the target closes:
/// the client gets the whole body, then either the connection ends or the body was framed
/// (and then the connection keeps working). A new connection works either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_delimited_response() {
    bounded(async {
        let (backend, port, _rt) = setup().await;
        let body = "a body that ends where the target closes";
        backend.reset(vec![Reply::RawClose(
            b"HTTP/1.1 200 OK\r\nX-Kind: eof\r\n\r\na body that ends where the target closes",
        )]);
        let mut conn = Conn::connect(port).await;
        conn.send(&get("/eof")).await;
        let r = response(&mut conn, "close-delimited").await;
        assert_eq!((r.status, r.body.as_str()), (200, body), "{r:?}");
        assert_eq!(r.header("x-kind").as_deref(), Some("eof"), "{r:?}");
        let framed = r
            .header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
            || r.header("content-length").is_some();
        println!(
            "close-delimited response to the client: framed={framed}, transfer-encoding {:?}, content-length {:?}, connection {:?}",
            r.header("transfer-encoding"),
            r.header("content-length"),
            r.header("connection")
        );
        if framed && r.header("connection").as_deref() != Some("close") {
            echoed(&mut conn, "/same-connection").await;
        } else {
            assert!(
                conn.ends_within(WAIT).await,
                "an unframed (or Connection: close) response, and the connection stays open"
            );
            assert!(conn.rest().is_empty(), "{:?}", conn.rest());
        }
        let got = exchange(port, &get("/next"), 1, WAIT).await;
        assert_eq!(got.statuses(), [200], "{got:?}");
        assert_eq!(got.responses[0].body, "/next");
    })
    .await;
}

/// 3. HEAD answered with `Content-Length: 1234` and no body: the client gets the head, no
/// body bytes, and its next request is answered correctly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_response_has_no_body() {
    bounded(async {
        let (backend, port, _rt) = setup().await;
        backend.reset(vec![Reply::Raw(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nX-Kind: head\r\n\r\n",
        )]);
        let mut conn = Conn::connect(port).await;
        conn.send(b"HEAD /head HTTP/1.1\r\nHost: h\r\n\r\n").await;
        let r = conn
            .response(true, WAIT)
            .await
            .expect("no response to HEAD");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("x-kind").as_deref(), Some("head"), "{r:?}");
        assert_eq!(r.header("content-length").as_deref(), Some("1234"), "{r:?}");
        assert!(
            !conn.ends_within(Duration::from_millis(200)).await,
            "connection closed after HEAD"
        );
        assert!(
            conn.rest().is_empty(),
            "body bytes after a HEAD response: {:?}",
            String::from_utf8_lossy(conn.rest())
        );
        echoed(&mut conn, "/after-head").await;
        let seen = backend.requests();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen[0].head.starts_with("HEAD /head HTTP/1.1"), "{seen:?}");
    })
    .await;
}

/// 4. 204 and 304 have no body: the next request on the same connection is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_body_204_and_304_keep_the_connection_in_sync() {
    bounded(async {
        let (backend, port, _rt) = setup().await;
        backend.reset(vec![
            Reply::Raw(b"HTTP/1.1 204 No Content\r\nX-Kind: 204\r\n\r\n"),
            Reply::Raw(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nX-Kind: 304\r\n\r\n"),
        ]);
        let mut conn = Conn::connect(port).await;
        conn.send(&get("/204")).await;
        let r = response(&mut conn, "204").await;
        assert_eq!(r.status, 204, "{r:?}");
        assert_eq!(r.header("x-kind").as_deref(), Some("204"), "{r:?}");
        conn.send(b"GET /304 HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"v1\"\r\n\r\n")
            .await;
        let r = response(&mut conn, "304").await;
        assert_eq!(r.status, 304, "{r:?}");
        assert_eq!(r.header("etag").as_deref(), Some("\"v1\""), "{r:?}");
        assert_eq!(r.header("x-kind").as_deref(), Some("304"), "{r:?}");
        echoed(&mut conn, "/after-304").await;
        assert!(conn.rest().is_empty(), "{:?}", conn.rest());
        let seen = backend.requests();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(seen[1].head.contains("\"v1\""), "{seen:?}");
    })
    .await;
}

/// 5. Interim responses (103 Early Hints, 100 Continue) before the final one: the client gets
/// the final 200 with its body, and the connection stays in sync. Whether the 1xx reaches the
/// client is not pinned down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_responses_before_the_final_one() {
    bounded(async {
        let (backend, port, _rt) = setup().await;
        backend.reset(vec![
            Reply::Raw(
                b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
                  HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nafter-hints",
            ),
            Reply::Raw(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\nafter-continue",
            ),
        ]);
        let mut conn = Conn::connect(port).await;
        for (path, body) in [("/hints", "after-hints"), ("/continue", "after-continue")] {
            conn.send(&get(path)).await;
            let mut interim = Vec::new();
            let r = loop {
                let r = response(&mut conn, path).await;
                if (100..200).contains(&r.status) {
                    interim.push(r.status);
                    continue;
                }
                break r;
            };
            println!("{path}: interim responses the client saw: {interim:?}");
            assert_eq!((r.status, r.body.as_str()), (200, body), "{r:?}");
        }
        echoed(&mut conn, "/after-interim").await;
        assert_eq!(backend.requests().len(), 3);
    })
    .await;
}

/// 6. Sequential requests on one client connection share one upstream connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_reuse_one_upstream_connection() {
    bounded(async {
        let (backend, port, _rt) = setup().await;
        let mut conn = Conn::connect(port).await;
        for i in 0..5 {
            echoed(&mut conn, &format!("/seq{i}")).await;
        }
        let seen = backend.requests();
        assert_eq!(seen.len(), 5, "{seen:?}");
        let conns: Vec<usize> = seen.iter().map(|s| s.conn).collect();
        assert!(conns.iter().all(|c| *c == conns[0]), "{conns:?}");
        assert_eq!(backend.conns(), 1);
    })
    .await;
}

/// 7. A pooled connection the target closes while it is idle is not used again: the next
/// request goes on a new connection and gets its answer, not a 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_an_idle_connection_is_not_a_502() {
    bounded(async {
        let (backend, port, _rt) = setup().await;
        // A keep-alive response, then the target closes the connection anyway.
        backend.reset(vec![Reply::RawClose(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst",
        )]);
        let mut conn = Conn::connect(port).await;
        conn.send(&get("/first")).await;
        let r = response(&mut conn, "first").await;
        assert_eq!((r.status, r.body.as_str()), (200, "first"), "{r:?}");
        // Idle for a while, as a pooled connection is when its target cuts it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        echoed(&mut conn, "/second").await;
        // And on a new client connection too.
        let got = exchange(port, &get("/third"), 1, WAIT).await;
        assert_eq!(got.statuses(), [200], "{got:?}");
        let seen = backend.requests();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_ne!(seen[0].conn, seen[1].conn, "{seen:?}");
    })
    .await;
}

/// 8. Request bodies of every size, with Content-Length and chunked, reach the target intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_reach_the_target_intact() {
    bounded(async {
        let (backend, port, _rt) = setup().await;
        let mut conn = Conn::connect(port).await;
        for size in [0, 10, 100 * 1024, 2 * 1024 * 1024] {
            let body = pattern(size);
            let path = format!("/post-{size}");
            let mut request = format!(
                "POST {path} HTTP/1.1\r\nHost: h\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
            )
            .into_bytes();
            request.extend_from_slice(&body);
            conn.send(&request).await;
            let r = response(&mut conn, &path).await;
            assert_eq!((r.status, r.body.as_str()), (200, path.as_str()), "{r:?}");
            let seen = backend.requests();
            let last = seen.last().unwrap();
            assert_eq!(last.target(), path);
            assert_eq!(last.body.len(), size, "{path}");
            assert!(last.body == body, "{path}: the body changed on the way");
        }
        // Chunked from the client, with a chunk extension and CRLFs inside the data.
        conn.send(
            b"POST /chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
              4\r\nWiki\r\n5;ext=x\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\n",
        )
        .await;
        let r = response(&mut conn, "chunked POST").await;
        assert_eq!((r.status, r.body.as_str()), (200, "/chunked"), "{r:?}");
        let seen = backend.requests();
        let last = seen.last().unwrap();
        assert_eq!(last.target(), "/chunked");
        assert_eq!(
            String::from_utf8_lossy(&last.body),
            "Wikipedia in\r\n\r\nchunks."
        );
        // A bigger chunked body, in many chunks.
        let body = pattern(300 * 1024);
        let mut request =
            b"POST /chunked-big HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for piece in body.chunks(7_000) {
            request.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            request.extend_from_slice(piece);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        conn.send(&request).await;
        let r = response(&mut conn, "big chunked POST").await;
        assert_eq!((r.status, r.body.as_str()), (200, "/chunked-big"), "{r:?}");
        let seen = backend.requests();
        let last = seen.last().unwrap();
        assert_eq!(last.body.len(), body.len());
        assert!(last.body == body, "the chunked body changed on the way");
        echoed(&mut conn, "/after-posts").await;
    })
    .await;
}

/// 9. Three GETs in one write: three answers, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_gets_are_answered_in_order() {
    bounded(async {
        let (backend, port, _rt) = setup().await;
        let got = exchange(
            port,
            b"GET /p1 HTTP/1.1\r\nHost: h\r\n\r\nGET /p2 HTTP/1.1\r\nHost: h\r\n\r\nGET /p3 HTTP/1.1\r\nHost: h\r\n\r\n",
            3,
            WAIT,
        )
        .await;
        assert_eq!(got.statuses(), [200, 200, 200], "{got:?}");
        let bodies: Vec<&str> = got.responses.iter().map(|r| r.body.as_str()).collect();
        assert_eq!(bodies, ["/p1", "/p2", "/p3"]);
        assert!(!got.closed, "{got:?}");
        assert!(got.rest.is_empty(), "{got:?}");
        let targets: Vec<String> = backend
            .requests()
            .iter()
            .map(|s| s.target().to_string())
            .collect();
        assert_eq!(targets, ["/p1", "/p2", "/p3"]);
    })
    .await;
}

/// 10. A 2 MiB response with Content-Length arrives complete, and the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_response_arrives_complete() {
    bounded(async {
        let (backend, port, _rt) = setup().await;
        let body = pattern(2 * 1024 * 1024);
        let mut reply =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        reply.extend_from_slice(&body);
        backend.reset(vec![Reply::Raw(leak(reply))]);
        let mut conn = Conn::connect(port).await;
        conn.send(&get("/large")).await;
        let r = response(&mut conn, "large").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), body.len());
        assert!(
            r.body.as_bytes() == body,
            "the response body changed on the way"
        );
        echoed(&mut conn, "/after-large").await;
    })
    .await;
}

/// 11. `Connection: close` from the client: the answer, then corral closes the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connection_close_is_honoured() {
    bounded(async {
        let (_backend, port, _rt) = setup().await;
        let mut conn = Conn::connect(port).await;
        conn.send(b"GET /bye HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            .await;
        let r = response(&mut conn, "Connection: close").await;
        assert_eq!((r.status, r.body.as_str()), (200, "/bye"), "{r:?}");
        assert!(
            conn.ends_within(Duration::from_secs(1)).await,
            "connection still open 1 s after a Connection: close exchange"
        );
        assert!(conn.rest().is_empty(), "{:?}", conn.rest());
    })
    .await;
}

/// 12. An HTTP/1.0 request without keep-alive is answered, then the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_without_keep_alive_is_answered_then_closed() {
    bounded(async {
        let (backend, port, _rt) = setup().await;
        let mut conn = Conn::connect(port).await;
        conn.send(b"GET /old HTTP/1.0\r\nHost: h\r\n\r\n").await;
        let r = response(&mut conn, "HTTP/1.0").await;
        assert_eq!((r.status, r.body.as_str()), (200, "/old"), "{r:?}");
        println!("HTTP/1.0 answer head: {:?}", r.head);
        assert!(
            conn.ends_within(Duration::from_secs(1)).await,
            "HTTP/1.0 connection still open 1 s after the answer"
        );
        assert!(conn.rest().is_empty(), "{:?}", conn.rest());
        let seen = backend.requests();
        assert_eq!(seen.len(), 1, "{seen:?}");
        println!("HTTP/1.0 request as the target saw it: {:?}", seen[0].head);
    })
    .await;
}

/// The header fields of a request head, names lowercased, values trimmed, in order.
fn fields(head: &str) -> Vec<(String, String)> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect()
}

fn values(fields: &[(String, String)], name: &str) -> Vec<String> {
    fields
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .collect()
}

/// 13. The request as the target sees it: origin-form target unchanged, `X-Forwarded-*` set
/// (`X-Forwarded-For` appended to), `Host` kept, hop-by-hop headers gone, the rest kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_target_sees_the_request_rewritten_for_one_hop() {
    bounded(async {
        let (backend, port, _rt) = setup().await;
        let mut conn = Conn::connect(port).await;
        conn.send(
            b"GET /p/a%20b?q=1&r=%2F HTTP/1.1\r\nHost: app.test:8080\r\n\
              X-Forwarded-For: 203.0.113.7\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\
              Keep-Alive: timeout=5\r\nUser-Agent: relay-test/1.0\r\nAccept: text/html, */*;q=0.8\r\n\
              X-Kept: a  b, c\r\nX-Multi: 1\r\nX-Multi: 2\r\nCookie: a=1; b=2\r\n\r\n",
        )
        .await;
        let r = response(&mut conn, "rewritten request").await;
        assert_eq!(r.status, 200, "{r:?}");
        let seen = backend.requests();
        assert_eq!(seen.len(), 1, "{seen:?}");
        let head = &seen[0].head;
        println!("request as the target saw it:\n{head}");
        assert!(
            head.starts_with("GET /p/a%20b?q=1&r=%2F HTTP/1.1\r\n"),
            "{head}"
        );
        let f = fields(head);
        let one = |name: &str| {
            let v = values(&f, name);
            assert_eq!(v.len(), 1, "{name}: {v:?} in\n{head}");
            v[0].clone()
        };
        assert_eq!(one("host"), "app.test:8080");
        assert_eq!(one("x-forwarded-for"), "203.0.113.7, 127.0.0.1");
        assert_eq!(one("x-forwarded-proto"), "http");
        assert_eq!(one("x-forwarded-port"), port.to_string());
        assert_eq!(one("user-agent"), "relay-test/1.0");
        assert_eq!(one("accept"), "text/html, */*;q=0.8");
        assert_eq!(one("x-kept"), "a  b, c");
        assert_eq!(one("cookie"), "a=1; b=2");
        assert_eq!(values(&f, "x-multi").join(", "), "1, 2", "{head}");
        for gone in ["x-hop", "keep-alive"] {
            assert!(values(&f, gone).is_empty(), "{gone} forwarded:\n{head}");
        }
        for v in values(&f, "connection") {
            assert!(!v.to_ascii_lowercase().contains("x-hop"), "{head}");
        }
    })
    .await;
}

/// 14. A target's `Connection: close` and `Keep-Alive` are its own hop's: the client sees
/// neither `Keep-Alive` nor a broken connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_connection_close_and_keep_alive_stay_upstream() {
    bounded(async {
        let (backend, port, _rt) = setup().await;
        backend.reset(vec![Reply::RawClose(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nKeep-Alive: timeout=5\r\nContent-Length: 4\r\n\r\ndone",
        )]);
        let mut conn = Conn::connect(port).await;
        conn.send(&get("/close")).await;
        let r = response(&mut conn, "target Connection: close").await;
        assert_eq!((r.status, r.body.as_str()), (200, "done"), "{r:?}");
        assert!(r.header("keep-alive").is_none(), "{r:?}");
        println!(
            "client-side connection header after the target's close: {:?}",
            r.header("connection")
        );
        if conn.ends_within(Duration::from_millis(300)).await {
            println!("corral closed the client connection after the target's Connection: close");
            assert!(conn.rest().is_empty(), "{:?}", conn.rest());
            let got = exchange(port, &get("/next"), 1, WAIT).await;
            assert_eq!(got.statuses(), [200], "{got:?}");
        } else {
            println!("the client connection stayed open after the target's Connection: close");
            echoed(&mut conn, "/next").await;
        }
        let seen = backend.requests();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_ne!(seen[0].conn, seen[1].conn, "{seen:?}");
    })
    .await;
}

/// A plain client's first bytes decide between HTTP/1 and h2 (prior knowledge): a first
/// segment that could still be the h2 preface (`P`) is waited on, not misread.
#[tokio::test]
async fn a_first_segment_like_the_h2_preface_is_waited_on() {
    bounded(async {
        let (backend, port, _rt) = setup().await;
        backend.reset(vec![Reply::Echo]);
        let mut conn = Conn::connect(port).await;
        conn.send(b"P").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        conn.send(b"OST /after-p HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
            .await;
        let r = response(&mut conn, "POST split after P").await;
        assert_eq!(r.status, 200);
        assert_eq!(backend.requests()[0].target(), "/after-p");
        let (status, body) = h2_get(port, "h", "/h2").await;
        assert_eq!((status.as_u16(), body.as_str()), (200, "/h2"));
    })
    .await;
}

/// A head that arrives a few bytes at a time is read whole (the relay parses again only
/// when a line has ended).
#[tokio::test]
async fn a_request_head_in_small_pieces() {
    bounded(async {
        let (backend, port, _rt) = setup().await;
        backend.reset(vec![Reply::Raw(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\nok",
        )]);
        let mut conn = Conn::connect(port).await;
        for piece in b"GET /bytewise HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n".chunks(3) {
            conn.send(piece).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let r = response(&mut conn, "head in pieces").await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        assert_eq!(backend.requests()[0].target(), "/bytewise");
    })
    .await;
}

/// One connection's waits share one timer (`deadline.rs`) but keep their own limits: an
/// idle wait longer than the response limit is not cut, a silent target is cut at the
/// response limit though the timer was last pushed out to an idle wait's end, and the idle
/// limit still closes the connection.
#[tokio::test]
async fn idle_and_response_waits_keep_their_own_limits() {
    bounded(async {
        let timeouts = r#"{"upstreamResponse":200,"idleKeepalive":1500}"#;
        let (backend, port, _rt) = setup_with_timeouts(timeouts).await;
        let mut conn = Conn::connect(port).await;
        echoed(&mut conn, "/first").await;
        // Idle for longer than the response limit the last wait left the timer at.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        echoed(&mut conn, "/second").await;
        // Whatever the timer was left at goes off in this idle wait, which pushes it out to
        // its own end, 1.5 s away: the next wait must pull it in.
        tokio::time::sleep(Duration::from_millis(400)).await;

        backend.reset(vec![Reply::Raw(b"")]);
        let asked = std::time::Instant::now();
        conn.send(&get("/silent")).await;
        let r = response(&mut conn, "silent target").await;
        let waited = asked.elapsed();
        assert_eq!(r.status, 504, "{r:?}");
        assert!(
            waited >= Duration::from_millis(150) && waited < Duration::from_millis(1000),
            "504 after {waited:?}"
        );

        let idle = std::time::Instant::now();
        assert!(
            conn.ends_within(WAIT).await,
            "the idle connection was not closed"
        );
        let closed = idle.elapsed();
        assert!(
            closed >= Duration::from_millis(1300) && closed < Duration::from_millis(3000),
            "closed after {closed:?}"
        );
    })
    .await;
}

/// A target that answers the first request on its first connection with `parts`, written
/// `pause` apart.
async fn paced_target(parts: Vec<&'static [u8]>, pause: Duration) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await.unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        for (i, part) in parts.into_iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            let _ = stream.write_all(part).await;
        }
        // Held open: the test decides when it is done.
        tokio::time::sleep(WAIT).await;
    });
    port
}

/// The first bytes a client of corral gets for a GET of `path` from a target answering with
/// `parts`, `pause` apart (see [`paced_target`]), with how long they took.
async fn first_read_of(
    parts: Vec<&'static [u8]>,
    pause: Duration,
    path: &str,
) -> (String, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let target = paced_target(parts, pause).await;
    let (port, _rt) = corral_to(target, r#"{"upstreamResponse":3000}"#).await;
    let request = get(path);
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream.write_all(&request).await.unwrap();
    let asked = std::time::Instant::now();
    let mut chunk = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
        .await
        .expect("nothing arrived")
        .unwrap();
    (
        String::from_utf8_lossy(&chunk[..n]).into_owned(),
        asked.elapsed(),
    )
}

/// A head and a short body that the target sends as two segments reach the client in one:
/// corral waits for a small `Content-Length` body rather than pass the head on alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_body_goes_out_with_its_head() {
    bounded(async {
        let parts: Vec<&'static [u8]> = vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Kind: paced\r\n\r\n",
            b"hel",
            b"lo",
        ];
        let (text, _) = first_read_of(parts, Duration::from_millis(100), "/paced").await;
        assert!(
            text.starts_with("HTTP/1.1 200") && text.ends_with("\r\n\r\nhello"),
            "the first read held {text:?}, not the whole response"
        );
    })
    .await;
}

/// A chunked body is passed on as it comes: the first chunk reaches the client while the
/// target is still to send the rest (a stream of events must not wait for its end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_stream_is_passed_on_as_it_comes() {
    bounded(async {
        let parts: Vec<&'static [u8]> = vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n",
            b"6\r\nsecond\r\n0\r\n\r\n",
        ];
        let (text, took) = first_read_of(parts, Duration::from_millis(1500), "/events").await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
        assert!(
            took < Duration::from_millis(1000),
            "the head waited {took:?} for the rest of the stream"
        );
        assert!(!text.contains("second"), "{text:?}");
    })
    .await;
}

/// A target that closes inside a short `Content-Length` body: what it sent still reaches the
/// client, head first, before corral ends the connection. Waiting to send a short body with
/// its head must not lose the head when the rest never comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_body_cut_by_the_target_still_reaches_the_client() {
    bounded(async {
        let (backend, port, _rt) = setup().await;
        backend.reset(vec![Reply::RawClose(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Kind: cut\r\n\r\nhel",
        )]);
        let mut conn = Conn::connect(port).await;
        conn.send(&get("/cut")).await;
        assert!(
            conn.ends_within(WAIT).await,
            "a cut body, and the connection stays open"
        );
        let got = String::from_utf8_lossy(conn.rest()).into_owned();
        assert!(
            got.starts_with("HTTP/1.1 200") && got.ends_with("\r\n\r\nhel"),
            "the client got {got:?}"
        );
    })
    .await;
}
