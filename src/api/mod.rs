//! The control listener: the Rancher v1 API at `/v1`, the Consul agent API at `/v1/agent/`,
//! and health/readiness for orchestrators.

pub mod audit;
pub mod consul;
mod control;
mod error;
pub mod rancher;
mod request;
mod resolve;
pub mod status;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Serialize;

pub use control::{Auth, Control};
pub use error::ApiError;
pub use request::{ApiRequest, MAX_BODY};

use crate::runtime::Runtime;
use crate::server::drain;

/// A control response, built whole.
pub struct Reply(pub Response<Full<Bytes>>);

impl Reply {
    pub fn new(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
        let mut r = Response::new(Full::new(body.into()));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        Reply(r)
    }

    pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply::new(status, "application/json", body),
            Err(e) => Reply::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode the response: {e}\n"),
            ),
        }
    }

    pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Reply {
        Reply::new(status, "text/plain; charset=utf-8", body)
    }

    pub fn empty(status: StatusCode) -> Reply {
        Reply::new(status, "text/plain; charset=utf-8", Bytes::new())
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Reply {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.0.headers_mut().insert(name, v);
        }
        self
    }
}

/// Serves the control listener until `drain` fires. Connections are served concurrently, so a
/// Consul blocking query never stalls another client.
pub async fn serve(listener: tokio::net::TcpListener, control: Arc<Control>, drain: drain::Watch) {
    let sampler = Arc::new(status::Sampler::new());
    // Stops with the drain, or with this loop if it is dropped first.
    let _sampler_task = status::SamplerTask::spawn(sampler.clone(), &control, drain.clone());
    let stop = drain.signaled();
    tokio::pin!(stop);
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            () = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "control accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let control = control.clone();
        let sampler = sampler.clone();
        let drain = drain.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let control = control.clone();
                let sampler = sampler.clone();
                async move { Ok::<_, Infallible>(route(&control, &sampler, req, peer).await.0) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = drain.signaled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

async fn route(
    control: &Control,
    sampler: &status::Sampler,
    req: http::Request<hyper::body::Incoming>,
    peer: SocketAddr,
) -> Reply {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, "/health") => return Reply::text(StatusCode::OK, "ok\n"),
        // Answered only once the store is loaded and its listeners are bound (the control
        // listener starts after that), until shutdown begins.
        (&Method::GET, "/ready") if control.runtime().is_draining() => {
            return Reply::text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        }
        (&Method::GET, "/ready") => return Reply::text(StatusCode::OK, "ready\n"),
        (&Method::GET, "/" | "/status") => {
            return status::handle(control, sampler, &path, req.headers())
        }
        (&Method::GET, "/metrics") => return metrics_reply(control.runtime()),
        _ => {}
    }
    let is_consul = path.starts_with("/v1/agent/");
    let is_rancher = !is_consul && (path == "/v1" || path == "/v1/" || path.starts_with("/v1/"));
    if !is_consul && !is_rancher {
        return Reply::text(StatusCode::NOT_FOUND, "404 Not Found\n");
    }
    let schemas = (!is_consul).then(|| rancher::schemas_url(req.headers(), peer));
    let req = match ApiRequest::read(req, peer).await {
        Ok(req) => req,
        Err(e) => {
            return match schemas {
                Some(schemas) => rancher::error_reply(&e).header("x-api-schemas", &schemas),
                None => Reply::text(e.status, format!("{}\n", e.message)),
            }
        }
    };
    let reply = if is_consul {
        consul::handle(control, req).await
    } else {
        rancher::handle(control, req).await
    };
    let api = if is_consul { "consul" } else { "rancher" };
    control
        .runtime()
        .shared()
        .metrics
        .control_request(api, &method, reply.0.status().as_u16());
    reply
}

fn metrics_reply(runtime: &Runtime) -> Reply {
    Reply::new(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        runtime.shared().metrics.render(),
    )
}

/// Serves `/metrics` alone (for `--metrics-addr`), until `drain` fires.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    runtime: Arc<Runtime>,
    drain: drain::Watch,
) {
    let stop = drain.signaled();
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            () = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let runtime = runtime.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let reply = if req.uri().path() == "/metrics" {
                    metrics_reply(&runtime)
                } else {
                    Reply::text(StatusCode::NOT_FOUND, "404 Not Found\n")
                };
                async move { Ok::<_, Infallible>(reply.0) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
