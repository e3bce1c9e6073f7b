//! The HTTP reverse proxy: HTTP/1.1 and h2 (prior knowledge) on one listener, HTTP/1.1 to
//! targets. Per request, the phases are named after what they do: [`Proxy::route`] picks the
//! rule, [`Proxy::upstream_request`] rewrites the request, [`Proxy::send`] picks a target and
//! exchanges, [`Proxy::downstream_response`] rewrites the answer.

mod body;
mod error;
mod headers;
mod log;
mod timer;
mod upstream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

pub use body::ProxyBody;
pub use error::ProxyError;
pub use upstream::Pool;

use crate::balance::{Target, TargetGroup};
use crate::routing::{normalize_host, Listener, Route, RoutingTable};
use crate::runtime::Shared;
use crate::server::drain;
use log::AccessLog;
use upstream::Sender;

/// Serves one client connection until it closes or a drain asks it to finish.
pub async fn serve_connection<IO>(
    io: IO,
    client: SocketAddr,
    port: u16,
    scheme: &'static str,
    shared: Arc<Shared>,
    drain: drain::Watch,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeouts = shared.table.load().timeouts;
    let (head_timer, io) =
        timer::HeadTimer::new(io, timeouts.idle_keepalive(), timeouts.request_headers());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(head_timer)
        .header_read_timeout(timeouts.request_headers())
        .max_headers(100)
        .max_buf_size(64 * 1024);
    builder.http2().timer(TokioTimer::new());

    let proxy = Arc::new(Proxy {
        shared,
        client,
        port,
        forwarded: headers::Forwarded::new(client.ip(), scheme, port),
    });
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(proxy.handle(req).await) }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        res = conn.as_mut() => res,
        () = drain.signaled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%client, error = %e, "client connection ended with an error");
    }
}

/// What one client connection's requests share.
struct Proxy {
    shared: Arc<Shared>,
    client: SocketAddr,
    port: u16,
    /// `X-Forwarded-*` for this connection's requests, formatted once.
    forwarded: headers::Forwarded,
}

impl Proxy {
    async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let table = self.shared.table.load_full();
        let host = request_host(&req);
        let mut log = AccessLog {
            start: Instant::now(),
            client: self.client,
            port: self.port,
            table: table.clone(),
            method: req.method().clone(),
            host: String::new(),
            uri: req.uri().clone(),
            status: StatusCode::OK,
            rule: None,
            group: None,
            target: None,
            target_requests: None,
            bytes_out: 0,
            aborted: false,
        };
        let result = self.proxy(&table, host.as_deref(), req, &mut log).await;
        log.host = host.unwrap_or_default();
        let response = match result {
            Ok(response) => response,
            Err(e) => {
                tracing::warn!(
                    listener = table.listener(self.port).map_or("-", |l| &*l.label),
                    rule = log.rule.as_deref().unwrap_or("-"),
                    target = e.target().unwrap_or("-"),
                    error = %e,
                    "request failed"
                );
                error_response(&e)
            }
        };
        log.status = response.status();
        response.map(|body| body.with_log(log))
    }

    async fn proxy(
        &self,
        table: &RoutingTable,
        host: Option<&str>,
        mut req: Request<Incoming>,
        log: &mut AccessLog,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let listener = table
            .listener(self.port)
            .ok_or(ProxyError::ListenerClosing)?;
        let route = Self::route(listener, host, &req)?;
        log.rule = Some(route.name.clone());
        let websocket = headers::is_websocket_upgrade(req.method(), req.headers());
        let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
        let req = self.upstream_request(req, websocket)?;
        log.group = Some(route.group);
        let group = table.group(route.group);
        let (target, sender, mut response) = self.send(table, group, req, log).await?;

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                return Err(ProxyError::UnsolicitedUpgrade {
                    target: target.id.clone(),
                });
            };
            splice_upgrade(
                client_upgrade,
                hyper::upgrade::on(&mut response),
                target.id.clone(),
            );
            return Ok(Self::downstream_response(response, None));
        }
        let checkin = self.shared.pool.checkin(target.addr, sender);
        Ok(Self::downstream_response(response, Some(checkin)))
    }

    fn route<'t>(
        listener: &'t Listener,
        host: Option<&str>,
        req: &Request<Incoming>,
    ) -> Result<&'t Route, ProxyError> {
        if req.method() == Method::CONNECT {
            return Err(ProxyError::MethodNotAllowed("CONNECT is not tunnelled"));
        }
        listener
            .routes
            .lookup(host, req.uri().path())
            .ok_or(ProxyError::NoRoute)
    }

    /// The request as the target gets it: HTTP/1.1, origin-form, no hop-by-hop headers,
    /// `X-Forwarded-*` set, `Host` kept (taken from `:authority` for h2 clients).
    fn upstream_request(
        &self,
        req: Request<Incoming>,
        websocket: bool,
    ) -> Result<Request<Incoming>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        if !parts.headers.contains_key(header::HOST) {
            if let Some(authority) = parts.uri.authority() {
                let value = HeaderValue::from_str(authority.as_str())
                    .map_err(|_| ProxyError::BadRequest("invalid authority"))?;
                parts.headers.insert(header::HOST, value);
            }
        }
        headers::strip_hop_by_hop(&mut parts.headers);
        if websocket {
            parts
                .headers
                .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        self.forwarded.apply(&mut parts.headers);
        let origin_form = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .parse::<Uri>()
            .map_err(|_| ProxyError::BadRequest("invalid request target"))?;
        parts.uri = origin_form;
        parts.version = Version::HTTP_11;
        Ok(Request::from_parts(parts, body))
    }

    /// Picks a target, gets a connection to it and exchanges the request. A target that
    /// refuses the connection is left for the next one in weighted order, once: the request
    /// has not been sent, so this is safe whatever its method.
    async fn send<'g>(
        &self,
        table: &RoutingTable,
        group: &'g TargetGroup,
        req: Request<Incoming>,
        log: &mut AccessLog,
    ) -> Result<(&'g Target, Sender, Response<Incoming>), ProxyError> {
        let timeouts = &table.timeouts;
        let no_target = || ProxyError::NoTarget {
            service: group.service.clone(),
        };
        let mut target = group.pick(|_| true).ok_or_else(no_target)?;
        let mut sender = match self.checkout(target, timeouts.upstream_connect()).await {
            Ok(sender) => sender,
            Err(first) => {
                let failed = target;
                target = group.pick(|t| t.id != failed.id).ok_or(first)?;
                failed.metrics.retries.inc();
                tracing::warn!(target = %failed.id, next = %target.id, "connect failed, trying the next target");
                self.checkout(target, timeouts.upstream_connect()).await?
            }
        };
        log.target = Some(target.id.clone());
        log.target_requests = Some(target.metrics.requests.clone());

        let response_timeout = timeouts.upstream_response();
        let exchange = async {
            match sender.try_send_request(req).await {
                Ok(response) => Ok(response),
                Err(mut e) => match e.take_message() {
                    // The pooled connection closed before the request went out: a fresh
                    // connection gets the untouched request.
                    Some(req) => {
                        sender = self
                            .shared
                            .pool
                            .connect(target.addr, timeouts.upstream_connect())
                            .await
                            .map_err(|source| ProxyError::Connect {
                                target: target.id.clone(),
                                source: source.into(),
                            })?;
                        sender
                            .send_request(req)
                            .await
                            .map_err(|source| ProxyError::Upstream {
                                target: target.id.clone(),
                                source,
                            })
                    }
                    None => Err(ProxyError::Upstream {
                        target: target.id.clone(),
                        source: e.into_error(),
                    }),
                },
            }
        };
        let response = tokio::time::timeout(response_timeout, exchange)
            .await
            .map_err(|_| ProxyError::ResponseTimeout {
                target: target.id.clone(),
                secs: response_timeout.as_secs_f64(),
            })??;
        Ok((target, sender, response))
    }

    async fn checkout(
        &self,
        target: &Target,
        connect_timeout: std::time::Duration,
    ) -> Result<Sender, ProxyError> {
        if let Some(sender) = self.shared.pool.take_idle(target.addr) {
            return Ok(sender);
        }
        self.shared
            .pool
            .connect(target.addr, connect_timeout)
            .await
            .map_err(|source| {
                target.metrics.connect_errors.inc();
                ProxyError::Connect {
                    target: target.id.clone(),
                    source: source.into(),
                }
            })
    }

    fn downstream_response(
        response: Response<Incoming>,
        checkin: Option<upstream::Checkin>,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = response.into_parts();
        if parts.status != StatusCode::SWITCHING_PROTOCOLS {
            headers::strip_hop_by_hop(&mut parts.headers);
        }
        Response::from_parts(parts, ProxyBody::upstream(body, checkin))
    }
}

/// The request's host, from the URI authority (h2, absolute-form) or the `Host` header.
fn request_host(req: &Request<Incoming>) -> Option<String> {
    let raw = match req.uri().authority() {
        Some(a) => a.as_str(),
        None => req.headers().get(header::HOST)?.to_str().ok()?,
    };
    normalize_host(raw)
}

/// Joins the client and target byte streams once both sides have switched protocols.
fn splice_upgrade(
    client: hyper::upgrade::OnUpgrade,
    target: hyper::upgrade::OnUpgrade,
    target_id: Arc<str>,
) {
    tokio::spawn(async move {
        let (client, target) = match tokio::try_join!(client, target) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(target = %target_id, error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut target = TokioIo::new(target);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut target).await {
            tracing::debug!(target = %target_id, error = %e, "upgraded connection ended");
        }
    });
}

fn error_response(e: &ProxyError) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::local(e.body()));
    *response.status_mut() = e.status();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if matches!(e, ProxyError::NoTarget { .. }) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if matches!(e, ProxyError::BadRequest(_)) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
