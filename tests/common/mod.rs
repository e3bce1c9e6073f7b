//! A real-socket harness: backends on 127.0.0.1 ephemeral ports, corral's runtime in-process.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use corral::config::Config;
use corral::runtime::{Runtime, Source};

/// How a test backend answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 with its name as the body.
    Name,
    /// Waits this long before answering.
    Slow(Duration),
    /// Accepts WebSocket upgrades and echoes bytes.
    WebSocketEcho,
}

pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    /// Request heads as received (method, uri, headers).
    pub seen: Arc<Mutex<Vec<http::request::Parts>>>,
}

impl Backend {
    pub async fn start(name: &str, behaviour: Behaviour) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (name_owned, seen2) = (name.to_string(), seen.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let name = name_owned.clone();
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let name = name.clone();
                        let seen = seen.clone();
                        async move { Ok::<_, Infallible>(answer(name, behaviour, seen, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Backend {
            name: name.to_string(),
            addr,
            seen,
        }
    }
}

async fn answer(
    name: String,
    behaviour: Behaviour,
    seen: Arc<Mutex<Vec<http::request::Parts>>>,
    mut req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if behaviour == Behaviour::WebSocketEcho && req.headers().contains_key("upgrade") {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", "test")
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    let (parts, body) = req.into_parts();
    let _ = body.collect().await;
    seen.lock().push(parts);
    if let Behaviour::Slow(d) = behaviour {
        tokio::time::sleep(d).await;
    }
    Response::builder()
        .header("x-backend", name.as_str())
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "must not reach the client")
        .body(Full::new(Bytes::from(name)))
        .unwrap()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A corral runtime on 127.0.0.1 serving `config`.
pub async fn corral(config: &str) -> Arc<Runtime> {
    let runtime = Arc::new(Runtime::new(IpAddr::V4(Ipv4Addr::LOCALHOST), vec![]));
    let config = Config::from_json(config).unwrap();
    runtime.apply(&config, Source::File).await.unwrap();
    runtime
}

/// Corral on a free port, forwarding everything to the one target on `target_port`, with
/// these `timeouts` (a JSON object): (its port, the runtime).
pub async fn corral_to(target_port: u16, timeouts: &str) -> (u16, Arc<Runtime>) {
    let port = free_port();
    let rt = corral(&format!(
        r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{"portRules":[
            {{"sourcePort":{port},"serviceId":"raw"}}]}}}}],
          "services":[{{"ID":"raw1","Service":"raw","Address":"127.0.0.1","Port":{target_port}}}],
          "timeouts":{timeouts}}}"#
    ))
    .await;
    (port, rt)
}

/// Runs a whole test under one overall deadline, so that nothing can hang the suite.
pub async fn bounded(test: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .expect("test did not finish within 60 s");
}

/// One request on a fresh HTTP/1.1 connection: (status, headers, body).
pub async fn get(port: u16, host: &str, path: &str) -> (StatusCode, http::HeaderMap, String) {
    let mut client = Client::connect(port).await;
    client.get(host, path).await
}

/// A keep-alive HTTP/1.1 client connection.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Client {
    pub async fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Client { sender }
    }

    pub async fn try_get(
        &mut self,
        host: &str,
        path: &str,
    ) -> Result<(StatusCode, http::HeaderMap, String), hyper::Error> {
        self.sender.ready().await?;
        let req = Request::get(path)
            .header("host", host)
            .body(Empty::new())
            .unwrap();
        let resp = self.sender.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok((
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        ))
    }

    pub async fn get(&mut self, host: &str, path: &str) -> (StatusCode, http::HeaderMap, String) {
        self.try_get(host, path).await.unwrap()
    }
}

/// Sends raw bytes and reads until the peer closes or `timeout` passes.
pub async fn raw_exchange(port: u16, bytes: &[u8], timeout: Duration) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// An h2 prior-knowledge GET: (status, body).
pub async fn h2_get(port: u16, authority: &str, path: &str) -> (StatusCode, String) {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("http://{authority}{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
