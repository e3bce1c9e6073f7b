//! Cookie stickiness over real sockets: every mode and flag, with HAProxy's meaning.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use common::{corral, free_port};
use corral::config::Config;
use corral::runtime::{Runtime, Source};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};

/// A backend answering its name; on `/login` it sets `JSESSIONID=<name>-session` itself.
/// It records the `Cookie` header of every request.
struct Backend {
    name: String,
    addr: SocketAddr,
    cookies: Arc<Mutex<Vec<Option<String>>>>,
}

impl Backend {
    async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cookies = Arc::new(Mutex::new(Vec::new()));
        let (name2, seen) = (name.to_string(), cookies.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (name, seen) = (name2.clone(), seen.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (name, seen) = (name.clone(), seen.clone());
                        async move {
                            let cookie = req
                                .headers()
                                .get_all("cookie")
                                .iter()
                                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                                .collect::<Vec<_>>();
                            seen.lock()
                                .push((!cookie.is_empty()).then(|| cookie.join("; ")));
                            let mut resp = Response::builder().header("x-backend", &name);
                            if req.uri().path() == "/login" {
                                resp = resp.header(
                                    "set-cookie",
                                    format!("JSESSIONID={name}-session; Path=/app; HttpOnly"),
                                );
                            }
                            let _ = req.into_body().collect().await;
                            Ok::<_, Infallible>(resp.body(Full::new(Bytes::from(name))).unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend {
            name: name.to_string(),
            addr,
            cookies,
        }
    }

    fn last_cookie(&self) -> Option<String> {
        self.cookies.lock().last().cloned().flatten()
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    /// `name=value` of the first `Set-Cookie`, as a client would send it back.
    fn cookie_pair(&self) -> String {
        let c = &self.set_cookies()[0];
        c.split(';').next().unwrap().to_string()
    }
}

async fn reply(resp: Response<Incoming>) -> Reply {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn send(port: u16, method: Method, path: &str, cookie: Option<&str>) -> Reply {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "sticky.test");
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    reply(resp).await
}

async fn get(port: u16, path: &str, cookie: Option<&str>) -> Reply {
    send(port, Method::GET, path, cookie).await
}

fn config(port: u16, policy: &str, backends: &[&Backend]) -> String {
    let services: Vec<String> = backends
        .iter()
        .map(|b| {
            format!(
                r#"{{"ID":"{0}-id","Service":"web","Address":"127.0.0.1","Port":{1}}}"#,
                b.name,
                b.addr.port()
            )
        })
        .collect();
    format!(
        r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{
            "portRules":[{{"sourcePort":{port},"serviceId":"web"}}],
            "stickinessPolicy":{policy}}}}}],
          "services":[{}]}}"#,
        services.join(",")
    )
}

async fn three() -> Vec<Backend> {
    vec![
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ]
}

fn sticky_count(rt: &Runtime, result: &str) -> u64 {
    let text = rt.shared().metrics.render();
    let needle = format!(r#"corral_sticky_total{{result="{result}",service="web"}} "#);
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn insert_sets_an_opaque_cookie_and_sticks_for_100_requests() {
    let bs = three().await;
    let port = free_port();
    let rt = corral(&config(
        port,
        r#"{"name":"p","cookie":"SRV","domain":".example.test"}"#,
        &[&bs[0], &bs[1], &bs[2]],
    ))
    .await;
    let first = get(port, "/", None).await;
    assert_eq!(first.status, StatusCode::OK);
    let set = first.set_cookies();
    assert_eq!(set.len(), 1, "{set:?}");
    let id = first.cookie_pair();
    let value = id.strip_prefix("SRV=").unwrap();
    assert_eq!(value.len(), 16, "{set:?}");
    assert!(value.bytes().all(|b| b.is_ascii_hexdigit()));
    for b in &bs {
        assert!(
            !set[0].contains(&b.addr.port().to_string()),
            "no address in {set:?}"
        );
    }
    assert!(set[0].contains("Path=/"), "{set:?}");
    assert!(set[0].contains("Domain=example.test"), "{set:?}");
    assert!(
        first.headers.get("cache-control").is_none(),
        "no nocache flag"
    );

    let owner = first.body.clone();
    for _ in 0..100 {
        let r = get(port, "/", Some(&format!("a=1; {id}; b=2"))).await;
        assert_eq!(r.body, owner);
        assert!(r.set_cookies().is_empty(), "a valid cookie is not re-set");
    }
    // Not indirect: the backend sees the cookie.
    let backend = bs.iter().find(|b| b.name == owner).unwrap();
    assert_eq!(
        backend.last_cookie().as_deref(),
        Some(format!("a=1; {id}; b=2").as_str())
    );
    assert_eq!(sticky_count(&rt, "hit"), 100);
    assert_eq!(sticky_count(&rt, "miss"), 1);

    // A reload (new generation, same instances) keeps the id valid.
    let same = Config::from_json(&config(
        port,
        r#"{"cookie":"SRV","domain":".example.test"}"#,
        &[&bs[0], &bs[1], &bs[2]],
    ))
    .unwrap();
    rt.apply(&same, Source::File).await.unwrap();
    let r = get(port, "/", Some(&id)).await;
    assert_eq!(r.body, owner);
    assert!(r.set_cookies().is_empty());
}

#[tokio::test]
async fn indirect_strips_the_cookie_and_nocache_marks_private() {
    let bs = three().await;
    let port = free_port();
    let _rt = corral(&config(
        port,
        r#"{"cookie":"SRV","indirect":true,"nocache":true}"#,
        &[&bs[0], &bs[1], &bs[2]],
    ))
    .await;
    let first = get(port, "/", Some("a=1")).await;
    assert_eq!(
        first
            .headers
            .get("cache-control")
            .map(|v| v.to_str().unwrap()),
        Some("private")
    );
    let id = first.cookie_pair();
    assert!(!first.set_cookies()[0].contains("Domain"), "no domain set");
    let owner = bs.iter().find(|b| b.name == first.body).unwrap();
    for _ in 0..10 {
        let r = get(port, "/", Some(&format!("a=1; {id}"))).await;
        assert_eq!(r.body, owner.name);
        assert!(r.set_cookies().is_empty());
        assert!(r.headers.get("cache-control").is_none());
        assert_eq!(owner.last_cookie().as_deref(), Some("a=1"), "SRV stripped");
    }
    // Only the sticky cookie: no Cookie header at all reaches the backend.
    let r = get(port, "/", Some(&id)).await;
    assert_eq!(r.body, owner.name);
    assert_eq!(owner.last_cookie(), None);
}

#[tokio::test]
async fn postonly_inserts_on_post_responses_only() {
    let bs = three().await;
    let port = free_port();
    let _rt = corral(&config(
        port,
        r#"{"cookie":"SRV","postonly":true}"#,
        &[&bs[0], &bs[1], &bs[2]],
    ))
    .await;
    for _ in 0..3 {
        let r = get(port, "/", None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.set_cookies().is_empty());
    }
    let post = send(port, Method::POST, "/", None).await;
    let id = post.cookie_pair();
    assert!(id.starts_with("SRV="));
    for _ in 0..10 {
        assert_eq!(get(port, "/", Some(&id)).await.body, post.body);
    }
}

#[tokio::test]
async fn malformed_and_unknown_cookies_are_balanced_and_reset() {
    let bs = three().await;
    let port = free_port();
    let rt = corral(&config(
        port,
        r#"{"cookie":"SRV"}"#,
        &[&bs[0], &bs[1], &bs[2]],
    ))
    .await;
    let junk = [
        "SRV=garbage",
        "SRV=",
        "SRV=\"unterminated",
        "SRV=0123456789ABCDEF",
        "SRV=%ff%00; ;;==",
        "SRV=é",
    ];
    for cookie in junk {
        let r = get(port, "/", Some(cookie)).await;
        assert_eq!(r.status, StatusCode::OK, "{cookie}");
        assert!(r.cookie_pair().starts_with("SRV="), "{cookie}");
    }
    // Well-formed but naming no target (a removed one): redispatched, re-set.
    let r = get(port, "/", Some("SRV=0123456789abcdef")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_ne!(r.cookie_pair(), "SRV=0123456789abcdef");
    assert_eq!(sticky_count(&rt, "redispatch"), 1);
}

#[tokio::test]
async fn rebalances_when_the_sticky_target_goes_away() {
    let bs = three().await;
    let port = free_port();
    let all = [&bs[0], &bs[1], &bs[2]];
    let rt = corral(&config(port, r#"{"cookie":"SRV"}"#, &all)).await;
    let first = get(port, "/", None).await;
    let id = first.cookie_pair();
    let owner = first.body.clone();

    // Weight 0 (critical): the cookie no longer holds; a new one is set.
    let rest: Vec<&Backend> = all.iter().copied().filter(|b| b.name != owner).collect();
    let mut critical = Config::from_json(&config(port, r#"{"cookie":"SRV"}"#, &all)).unwrap();
    for inst in &mut critical.services {
        if inst.id == format!("{owner}-id") {
            inst.status = corral::config::HealthStatus::Critical;
        }
    }
    rt.apply(&critical, Source::File).await.unwrap();
    let r = get(port, "/", Some(&id)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_ne!(r.body, owner);
    let new_id = r.cookie_pair();
    assert_ne!(new_id, id);
    for _ in 0..20 {
        assert_eq!(get(port, "/", Some(&new_id)).await.body, r.body);
    }

    // Gone from the table entirely: same.
    let gone = Config::from_json(&config(port, r#"{"cookie":"SRV"}"#, &rest)).unwrap();
    rt.apply(&gone, Source::File).await.unwrap();
    let r = get(port, "/", Some(&id)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_ne!(r.body, owner);
    assert_ne!(r.cookie_pair(), id);
    assert!(sticky_count(&rt, "redispatch") >= 2);
}

#[tokio::test]
async fn rewrite_replaces_the_backend_value_with_the_target_id() {
    let bs = three().await;
    let port = free_port();
    let _rt = corral(&config(
        port,
        r#"{"cookie":"JSESSIONID","mode":"rewrite","nocache":true}"#,
        &[&bs[0], &bs[1], &bs[2]],
    ))
    .await;
    // No cookie from the backend: corral sets none.
    assert!(get(port, "/", None).await.set_cookies().is_empty());
    let login = get(port, "/login", None).await;
    let set = login.set_cookies();
    assert_eq!(set.len(), 1, "{set:?}");
    let pair = login.cookie_pair();
    let value = pair.strip_prefix("JSESSIONID=").unwrap();
    assert_eq!(value.len(), 16);
    assert!(!set[0].contains("session"), "{set:?}");
    assert!(set[0].ends_with("; Path=/app; HttpOnly"), "{set:?}");
    assert_eq!(
        login
            .headers
            .get("cache-control")
            .map(|v| v.to_str().unwrap()),
        Some("private")
    );
    for _ in 0..20 {
        let r = get(port, "/", Some(&pair)).await;
        assert_eq!(r.body, login.body);
    }
}

#[tokio::test]
async fn prefix_prepends_the_id_and_strips_it_on_the_way_in() {
    let bs = three().await;
    let port = free_port();
    let _rt = corral(&config(
        port,
        r#"{"cookie":"JSESSIONID","mode":"prefix"}"#,
        &[&bs[0], &bs[1], &bs[2]],
    ))
    .await;
    let login = get(port, "/login", None).await;
    let pair = login.cookie_pair();
    let owner = bs.iter().find(|b| b.name == login.body).unwrap();
    let (id, original) = pair
        .strip_prefix("JSESSIONID=")
        .unwrap()
        .split_once('~')
        .unwrap();
    assert_eq!(id.len(), 16);
    assert_eq!(original, format!("{}-session", owner.name));
    assert!(login.set_cookies()[0].ends_with("; Path=/app; HttpOnly"));
    for _ in 0..20 {
        let r = get(port, "/", Some(&format!("x=1; {pair}"))).await;
        assert_eq!(r.body, owner.name);
        assert_eq!(
            owner.last_cookie().as_deref(),
            Some(format!("x=1; JSESSIONID={original}").as_str()),
            "the backend gets its own value back"
        );
    }
    // A value without the prefix reaches the backend untouched and is balanced.
    let r = get(port, "/", Some("JSESSIONID=plain")).await;
    assert_eq!(r.status, StatusCode::OK);
    let served = bs.iter().find(|b| b.name == r.body).unwrap();
    assert_eq!(served.last_cookie().as_deref(), Some("JSESSIONID=plain"));
}

#[tokio::test]
async fn no_policy_means_no_cookie() {
    let bs = three().await;
    let port = free_port();
    let services: Vec<String> = bs
        .iter()
        .map(|b| {
            format!(
                r#"{{"ID":"{0}","Service":"web","Port":{1}}}"#,
                b.name,
                b.addr.port()
            )
        })
        .collect();
    let _rt = corral(&format!(
        r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{"portRules":[{{"sourcePort":{port},"serviceId":"web"}}]}}}}],
           "services":[{}]}}"#,
        services.join(",")
    ))
    .await;
    let mut owners = std::collections::HashSet::new();
    for _ in 0..6 {
        let r = get(port, "/login", Some("SRV=x")).await;
        assert_eq!(r.cookie_pair(), format!("JSESSIONID={}-session", r.body));
        owners.insert(r.body);
    }
    assert_eq!(owners.len(), 3, "round-robin, no stickiness");
}

/// An h2 request (prior knowledge), its cookies as separate fields the way h2 clients split
/// them (RFC 9113 §8.2.3).
async fn get_h2(port: u16, path: &str, cookies: &[&str]) -> Reply {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut req = Request::get(format!("http://sticky.test{path}"));
    for c in cookies {
        req = req.header("cookie", *c);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    reply(resp).await
}

/// h2 streams go through the relay's exchange: the cookie is inserted into their response
/// and read back from split `Cookie` fields.
#[tokio::test]
async fn h2_clients_are_stuck_too() {
    let bs = three().await;
    let port = free_port();
    let _rt = corral(&config(
        port,
        r#"{"name":"p","cookie":"SRV","mode":"insert","indirect":true,"nocache":true}"#,
        &[&bs[0], &bs[1], &bs[2]],
    ))
    .await;
    let first = get_h2(port, "/", &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    let id = first.cookie_pair();
    assert!(id.starts_with("SRV="), "{:?}", first.set_cookies());
    assert!(first.headers.get("cache-control").is_some(), "nocache");
    let owner = first.body.clone();
    for _ in 0..20 {
        let r = get_h2(port, "/", &["a=1", &id, "b=2"]).await;
        assert_eq!(r.body, owner, "an h2 request left its sticky target");
    }
    let backend = bs.iter().find(|b| b.name == owner).unwrap();
    // `indirect`: the target never sees corral's cookie; the others arrive joined.
    assert_eq!(backend.last_cookie().as_deref(), Some("a=1; b=2"));
}
