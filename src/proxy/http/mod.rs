//! The HTTP reverse proxy: HTTP/1.1 (the [`h1`] relay, hyper for what it hands over) and h2
//! (prior knowledge) on one listener, HTTP/1.1 to
//! targets. Per request, the phases are named after what they do: [`Proxy::route`] picks the
//! rule, [`Proxy::upstream_request`] rewrites the request, [`Proxy::send`] picks a target and
//! exchanges, [`Proxy::downstream_response`] rewrites the answer.

mod body;
mod buffers;
mod error;
mod h1;
mod headers;
mod log;
mod replay;
mod timer;
mod upstream;
mod validate;
pub mod version;

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::{pending, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

pub use body::ProxyBody;
pub use buffers::Buffers;
pub use error::ProxyError;
pub use h1::ClientIo;
pub use upstream::Pool;
pub use version::HttpVersion;

use crate::balance::{Target, TargetGroup};
use crate::health::PassiveHealth;
use crate::io::Activity;
use crate::routing::{normalize_host, Listener, Route, RoutingTable};
use crate::runtime::Shared;
use crate::server::drain;
use crate::sticky;
use body::Payload;
use log::AccessLog;
use upstream::{ConnectError, Sender, UpstreamError};

/// Serves one client connection until it closes or a drain asks it to finish. `version` is
/// what a TLS client agreed to by ALPN; `None` for a plain TCP client and a TLS one that
/// offered no ALPN, whose first bytes tell (the h2 preface or not). HTTP/1 is the relay's
/// ([`h1`]), h2 hyper's.
///
/// The connection's state comes boxed, the one allocation a connection's task makes for it:
/// a task is as large as the largest state it could be in, and tokio moves a new task's
/// future several times before its first poll and writes it whole again when it ends. A
/// plain function, not an `async fn`, so that nothing around that box keeps its arguments
/// a second time.
pub fn serve_connection<IO: ClientIo>(
    io: IO,
    version: Option<HttpVersion>,
    client: SocketAddr,
    port: u16,
    scheme: &'static str,
    shared: Arc<Shared>,
    drain: drain::Watch,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let proxy = Arc::new(Proxy {
        shared,
        client,
        port,
        forwarded: headers::Forwarded::new(client.ip(), scheme, port),
    });
    match version {
        Some(HttpVersion::Http1) => Box::pin(h1::serve(io, proxy, drain, false)),
        None => Box::pin(h1::serve(io, proxy, drain, true)),
        Some(HttpVersion::H2) => Box::pin(async move {
            serve_hyper(io, HttpVersion::H2, proxy, &drain).await;
        }),
    }
}

/// Serves a connection with hyper: h2, or HTTP/1 from a request the relay hands over on.
async fn serve_hyper<IO>(io: IO, version: HttpVersion, proxy: Arc<Proxy>, drain: &drain::Watch)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let client = proxy.client;
    let timeouts = proxy.shared.table.load().timeouts;
    // Boxed: hyper keeps one slot per connection for this future, idle or not, and moves it
    // into a task per h2 stream; boxed, that slot is a pointer and the exchange's few
    // kilobytes exist only while a request is in flight.
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        Box::pin(async move { Ok::<_, Infallible>(proxy.handle(req).await) })
    });
    let idle = timeouts.idle_keepalive();
    let result = match version {
        HttpVersion::Http1 => {
            let (head_timer, io) = timer::HeadTimer::new(io, idle, timeouts.request_headers());
            let mut http1 = http1::Builder::new();
            http1
                .timer(head_timer)
                .header_read_timeout(timeouts.request_headers())
                .ignore_invalid_headers(false)
                .max_headers(MAX_HEADERS)
                .max_buf_size(MAX_HEAD_BYTES)
                // `max_buf_size` alone lets a read that completes the head overshoot it.
                .max_header_size(MAX_HEAD_BYTES);
            let conn = http1
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            let finish = |c: Pin<&mut _>| http1::UpgradeableConnection::graceful_shutdown(c);
            until_done(conn, drain, pending(), finish).await
        }
        HttpVersion::H2 => {
            // hyper's h1 connection cuts idle keep-alives itself; its h2 one never does.
            let activity = Activity::new();
            let conn = h2_builder().serve_connection(TokioIo::new(activity.watch(io)), service);
            let finish = |c: Pin<&mut _>| http2::Connection::graceful_shutdown(c);
            until_done(conn, drain, activity.idle_for(idle), finish).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%client, error = %e, "client connection ended with an error");
    }
}

/// Header fields in one request head; more is answered 431.
const MAX_HEADERS: usize = 100;
/// Bytes in one request head; more is answered 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;

fn h2_builder() -> http2::Builder<TokioExecutor> {
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new());
    h2
}

/// Drives `conn` to its end. Once a drain is asked for, or `idle` resolves, `finish` lets it
/// complete what is in flight and close.
async fn until_done<C: Future>(
    conn: C,
    drain: &drain::Watch,
    idle: impl Future<Output = ()>,
    finish: impl FnOnce(Pin<&mut C>),
) -> C::Output {
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => return res,
        () = drain.signaled() => {}
        () = idle => {}
    }
    finish(conn.as_mut());
    conn.await
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
        let req = if req.version() == Version::HTTP_2 {
            match h1::h2_stream::serve(self, req).await {
                Ok(response) => return response,
                Err(req) => req,
            }
        } else {
            req
        };
        let table = self.shared.table.load_full();
        let host = request_host(&req);
        let mut log = AccessLog::new(
            self.client,
            self.port,
            table.clone(),
            req.method().clone(),
            req.uri().clone(),
        );
        // Boxed: h2 requests without a body, the common case, took the relay's path above,
        // and this one's state (hyper's client, a body, retries) would otherwise be room in
        // every request's future, which hyper moves several times per stream.
        let result = Box::pin(self.proxy(&table, host.as_deref(), req, &mut log)).await;
        log.host = host.unwrap_or_default();
        let response = match result {
            Ok(response) => response,
            Err(e) => {
                log.failed(&e);
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
        validate::request(&mut req, &table.timeouts)?;
        let listener = table
            .listener(self.port)
            .ok_or(ProxyError::ListenerClosing)?;
        let route = Self::route(listener, host, &req)?;
        log.rule = Some(route.name.clone());
        let websocket = headers::is_websocket_upgrade(req.method(), req.headers());
        let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
        log.group = Some(route.group);
        let group = table.group(route.group);
        let sticky = match (&listener.stickiness, &route.sticky) {
            (Some(policy), Some(metrics)) => Some(sticky::on_request(
                policy,
                metrics,
                group,
                &req.method().clone(),
                req.headers_mut(),
                |t| self.shared.passive.usable(t),
            )),
            _ => None,
        };
        let req = self.upstream_request(req, websocket)?;
        let prefer = sticky.as_ref().and_then(sticky::Decision::wanted);
        let (target, sender, mut response) = self.send(table, group, prefer, req, log).await?;
        if let Some(decision) = &sticky {
            decision.on_response(target, response.headers_mut());
        }

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

    /// Picks a target (the sticky one when it is usable), gets a connection to it and
    /// exchanges the request. A failed attempt is retried once on another target when that is
    /// safe: the connection was refused (nothing was sent), or it was reset before any response
    /// byte and the request can be replayed (see [`replay`]). Both failures count against the
    /// target's passive health.
    async fn send<'g>(
        &self,
        table: &RoutingTable,
        group: &'g TargetGroup,
        prefer: Option<&'g Target>,
        req: Request<Incoming>,
        log: &mut AccessLog,
    ) -> Result<(&'g Target, Sender, Response<Incoming>), ProxyError> {
        let passive = &self.shared.passive;
        let may_retry = group.targets().len() > 1;
        let (mut req, replay) =
            replay::prepare(req, may_retry, table.timeouts.upstream_response()).await?;
        let mut retried = false;
        let mut target = first_target(group, prefer, passive)?;
        loop {
            log.target = Some(target.id.clone());
            log.target_requests = Some(target.metrics.requests.clone());
            let error = match self.attempt(table, target, req).await {
                Attempt::Done(sender, response) => {
                    passive.success(target);
                    return Ok((target, sender, response));
                }
                Attempt::Failed(e) => return Err(e),
                Attempt::NotSent(unsent, e) => {
                    passive.failure(target);
                    req = unsent;
                    e
                }
                Attempt::Full(unsent, e) => {
                    req = unsent;
                    e
                }
                Attempt::Reset(e) => {
                    passive.failure(target);
                    match &replay {
                        Some(replay) => req = replay.request(),
                        None => return Err(e),
                    }
                    e
                }
            };
            target = retry_target(group, passive, target, error, &mut retried)?;
        }
    }

    /// One exchange with `target`.
    async fn attempt(
        &self,
        table: &RoutingTable,
        target: &Target,
        req: Request<Payload>,
    ) -> Attempt {
        let timeouts = &table.timeouts;
        let mut sender = match self.checkout(table, target).await {
            Ok(sender) => sender,
            Err(e) => return Attempt::unsent(req, e),
        };
        let response_timeout = timeouts.upstream_response();
        let exchange = async {
            match sender.try_send_request(req).await {
                Ok(response) => Ok(response),
                Err(mut e) => match e.take_message() {
                    // The pooled connection closed before the request went out: a fresh
                    // connection gets the untouched request.
                    Some(req) => {
                        sender = match self.connect(table, target).await {
                            Ok(sender) => sender,
                            Err(e) => return Err(Attempt::unsent(req, e)),
                        };
                        Box::pin(sender.send_request(req))
                            .await
                            .map_err(|source| Attempt::upstream(target, source))
                    }
                    None => Err(Attempt::upstream(target, e.into_error())),
                },
            }
        };
        match tokio::time::timeout(response_timeout, exchange).await {
            Ok(Ok(response)) => Attempt::Done(sender, response),
            Ok(Err(attempt)) => attempt,
            Err(_) => {
                target.metrics.timeouts.inc();
                Attempt::Failed(ProxyError::ResponseTimeout {
                    target: target.id.clone(),
                    secs: response_timeout.as_secs_f64(),
                })
            }
        }
    }

    async fn checkout(&self, table: &RoutingTable, target: &Target) -> Result<Sender, ProxyError> {
        if let Some(sender) = self.shared.pool.take_idle(target.addr) {
            return Ok(sender);
        }
        self.connect(table, target).await
    }

    /// A new connection to `target` (see [`connect_error`]).
    ///
    /// The connect state is boxed: most requests find a pooled connection, and every future
    /// on the request path is moved, and for h2 spawned, with all the room its slowest path
    /// needs.
    async fn connect(&self, table: &RoutingTable, target: &Target) -> Result<Sender, ProxyError> {
        let timeout = table.timeouts.upstream_connect();
        let max_open = table.limits.upstream_max_per_target;
        Box::pin(self.shared.pool.connect(target.addr, timeout, max_open))
            .await
            .map_err(|e| connect_error(target, e))
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

/// How one exchange with a target ended.
enum Attempt {
    Done(Sender, Response<Incoming>),
    /// Nothing was sent (connect failure): any request may go elsewhere.
    NotSent(Request<Payload>, ProxyError),
    /// Nothing was sent because the target is at its connection limit: busy, not failing.
    Full(Request<Payload>, ProxyError),
    /// The connection broke before any response: only a replayable request may go elsewhere.
    Reset(ProxyError),
    /// Not retried (timeout, malformed response).
    Failed(ProxyError),
}

impl Attempt {
    fn unsent(req: Request<Payload>, e: ProxyError) -> Attempt {
        if matches!(e, ProxyError::AtCapacity { .. }) {
            Attempt::Full(req, e)
        } else {
            Attempt::NotSent(req, e)
        }
    }

    /// Only a connection that broke before any response may be retried: a stalled or invalid
    /// client body, or an invalid response, is the same wherever it is sent.
    fn upstream(target: &Target, source: UpstreamError) -> Attempt {
        let reset = matches!(&source, UpstreamError::Hyper(e) if replay::is_reset(e));
        let e = ProxyError::Upstream {
            target: target.id.clone(),
            source,
        };
        if reset {
            Attempt::Reset(e)
        } else {
            Attempt::Failed(e)
        }
    }
}

/// The request's host, from the URI authority (h2, absolute-form) or the `Host` header.
fn request_host(req: &Request<Incoming>) -> Option<String> {
    let raw = match req.uri().authority() {
        Some(a) => a.as_str(),
        None => req.headers().get(header::HOST)?.to_str().ok()?,
    };
    normalize_host(raw).map(Cow::into_owned)
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
    if retry_after(e) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if e.closes_connection() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Whether an error answer tells the client to come back in a second: the targets are
/// missing or busy, not broken.
fn retry_after(e: &ProxyError) -> bool {
    matches!(
        e,
        ProxyError::NoTarget { .. } | ProxyError::AtCapacity { .. }
    )
}

/// After a try on `target` failed with `error` in a way that allows another: the request goes
/// once, and only once, to another usable target of the group (counted in the target's
/// retries); otherwise `error` is the answer.
fn retry_target<'g>(
    group: &'g TargetGroup,
    passive: &PassiveHealth,
    target: &'g Target,
    error: ProxyError,
    retried: &mut bool,
) -> Result<&'g Target, ProxyError> {
    if *retried {
        return Err(error);
    }
    let Some(next) = group.pick(|t| t.id != target.id && passive.usable(t)) else {
        return Err(error);
    };
    target.metrics.retries.inc();
    tracing::warn!(target = %target.id, next = %next.id, %error, "retrying on the next target");
    *retried = true;
    Ok(next)
}

/// A failed connect as the client's error; it counts in the target's connect errors (a
/// target at its connection limit has not failed).
fn connect_error(target: &Target, e: ConnectError) -> ProxyError {
    match e {
        ConnectError::AtCapacity(limit) => ProxyError::AtCapacity {
            target: target.id.clone(),
            limit,
        },
        source => {
            target.metrics.connect_errors.inc();
            ProxyError::Connect {
                target: target.id.clone(),
                source: source.into(),
            }
        }
    }
}

/// The target a request goes to first: the one its sticky cookie names, when that may be
/// used, else the balancer's pick among the usable ones.
fn first_target<'g>(
    group: &'g TargetGroup,
    prefer: Option<&'g Target>,
    passive: &PassiveHealth,
) -> Result<&'g Target, ProxyError> {
    match prefer {
        Some(t) => Ok(t),
        None => group
            .pick(|t| passive.usable(t))
            .ok_or_else(|| ProxyError::NoTarget {
                service: group.service.clone(),
            }),
    }
}
