//! The control listener: health, readiness, and (later) the Rancher and Consul APIs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use crate::runtime::Runtime;
use crate::server::drain;

/// Serves the control API on `listener` until `drain` fires.
pub async fn serve(listener: tokio::net::TcpListener, runtime: Arc<Runtime>, drain: drain::Watch) {
    let stop = drain.signaled();
    tokio::pin!(stop);
    loop {
        let (stream, _peer): (_, SocketAddr) = tokio::select! {
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
        let runtime = runtime.clone();
        let drain = drain.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let runtime = runtime.clone();
                async move { Ok::<_, Infallible>(handle(&runtime, req).await) }
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

async fn handle(runtime: &Runtime, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => text(StatusCode::OK, "ok\n".into()),
        (&Method::GET, "/ready") => text(StatusCode::OK, "ready\n".into()),
        (&Method::GET, "/") => text(StatusCode::OK, summary(runtime)),
        _ => text(StatusCode::NOT_FOUND, "404 Not Found\n".into()),
    }
}

/// A plain-text view of the table; the status page replaces it.
fn summary(runtime: &Runtime) -> String {
    let table = runtime.table();
    let mut out = format!("corral {}\ngeneration {}\n", env!("CARGO_PKG_VERSION"), table.generation());
    for l in table.listeners() {
        out += &format!("listener {} (load balancer {})\n", l.label, l.load_balancer);
        for r in l.routes.iter() {
            out += &format!(
                "  host={} path={} priority={} -> {}\n",
                if r.host.to_string().is_empty() { "*".to_string() } else { r.host.to_string() },
                if r.path.is_empty() { "/" } else { &r.path },
                r.priority.map_or("-".to_string(), |p| p.to_string()),
                r.service
            );
        }
    }
    for g in table.groups() {
        out += &format!("service {}\n", g.service);
        for t in g.targets() {
            out += &format!("  {} {} weight {}\n", t.id, t.addr, t.weight);
        }
    }
    out
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
