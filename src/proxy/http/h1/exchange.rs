//! One request through the relay: route, stickiness, a target picked and tried (once more
//! elsewhere when that is safe), the answer passed on to the client.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderValue};
use http::{StatusCode, Uri};
use tokio::time::Sleep;

use super::super::error::ProxyError;
use super::super::log::{lines_wanted, AccessLog};
use super::super::upstream::{ConnectError, RawConn, UpstreamError};
use super::super::{connect_error, first_target, retry_target, Proxy};
use super::request::RequestHead;
use super::response::{Fields, Framing, ResponseHead};
use super::target::{body, round, Round};
use super::{deadline, error_response, write_flush, ClientIo};
use crate::balance::{Target, TargetGroup};
use crate::config::StickinessPolicy;
use crate::routing::{normalize_host, Listener, RoutingTable};
use crate::sticky::{self, StickyMetrics};

/// One request through the relay.
pub struct Exchange<'a> {
    pub proxy: &'a Proxy,
    pub table: &'a Arc<RoutingTable>,
    /// The listener the request came in on (`None`: removed as the connection was accepted).
    pub listener: Option<&'a Listener>,
    /// The request's head and body as the client sent them.
    pub request: &'a [u8],
    pub head: &'a RequestHead,
    /// A drain has begun: the client is told this is the last response.
    pub closing: bool,
    /// The request came from an h2 client (see [`super::h2_stream`]).
    pub for_h2: bool,
}

/// A target's answer, its head read.
pub struct Answer<'g> {
    pub target: &'g Target,
    pub conn: RawConn,
    /// What was read after the head.
    pub rest: BytesMut,
    pub head: ResponseHead,
    /// What a sticky listener's cookie said, for the response's cookie.
    pub sticky: Option<sticky::Decision<'g>>,
}

/// The request as it goes to a target.
#[derive(Clone, Copy)]
pub struct Outbound<'r> {
    pub head: &'r [u8],
    pub body: &'r [u8],
    /// HEAD: the response has no body whatever its framing fields say.
    pub head_request: bool,
    /// Where the response's fields go: the client's head, or a map (an h2 client, the
    /// cookie fields of a sticky listener).
    pub fields: Fields,
}

/// How one try with a target failed.
enum Failure {
    /// Nothing was sent: any request may go elsewhere.
    NotSent(ProxyError),
    /// Nothing was sent, the target is at its connection limit: busy, not failing.
    Full(ProxyError),
    /// The connection broke before any response byte.
    Reset(ProxyError),
    /// Not retried: a timeout, an invalid response.
    Fatal(ProxyError),
}

impl<'a> Exchange<'a> {
    /// Serves the request; `false` when the client connection must close afterwards.
    pub async fn run<IO: ClientIo>(self, io: &mut IO, timer: Pin<&mut Sleep>) -> bool {
        let mut log = self.access_log();
        // `send` awaited here rather than through `answer`: a level of future less on the
        // HTTP/1 path.
        let host = self.host();
        let answer = self
            .send(host.as_deref(), self.path(), &mut log, timer)
            .await;
        Self::settle(&mut log, host, &answer);
        match answer {
            Ok(answer) => self.pass_on(io, answer, &mut log).await,
            Err(e) => {
                let keep = self.head.keep_alive && !self.closing && !e.closes_connection();
                log.bytes_out = e.body().len() as u64;
                write_flush(io, &error_response(&e, !keep)).await.is_ok() && keep
            }
        }
    }

    /// Routes the request and exchanges it with a target up to the final response head, on
    /// the connection's `timer`; `log` gets what the exchange learnt, its status included.
    pub async fn answer(
        &self,
        log: &mut AccessLog,
        timer: Pin<&mut Sleep>,
    ) -> Result<Answer<'a>, ProxyError> {
        let host = self.host();
        let answer = self.send(host.as_deref(), self.path(), log, timer).await;
        Self::settle(log, host, &answer);
        answer
    }

    /// The request's access log record, before it is answered.
    pub fn access_log(&self) -> AccessLog {
        // The path is text for the log line alone.
        let uri = if lines_wanted() {
            Uri::try_from(self.path()).unwrap_or_default()
        } else {
            Uri::default()
        };
        AccessLog::new(
            self.proxy.client,
            self.proxy.port,
            self.table.clone(),
            self.head.method.clone(),
            uri,
        )
    }

    fn path(&self) -> &'a str {
        self.text(self.head.path.clone())
    }

    fn host(&self) -> Option<Cow<'a, str>> {
        self.head
            .host
            .clone()
            .and_then(|h| normalize_host(self.text(h)))
    }

    /// What the log record learns from the exchange's outcome.
    fn settle(
        log: &mut AccessLog,
        host: Option<Cow<'_, str>>,
        answer: &Result<Answer<'_>, ProxyError>,
    ) {
        if lines_wanted() {
            log.host = host.map(Cow::into_owned).unwrap_or_default();
        }
        match answer {
            Ok(answer) => {
                log.status = StatusCode::from_u16(answer.head.status).unwrap_or(StatusCode::OK);
            }
            Err(e) => {
                log.failed(e);
                log.status = e.status();
            }
        }
    }

    /// A part of the request head that the parser checked is ASCII.
    fn text(&self, range: std::ops::Range<usize>) -> &'a str {
        std::str::from_utf8(&self.request[range]).unwrap_or_default()
    }

    /// Routes the request, picks a target and exchanges with it; a failed try is retried
    /// once on another target under the same rules as hyper's path (`Proxy::send`).
    async fn send(
        &self,
        host: Option<&str>,
        path: &str,
        log: &mut AccessLog,
        mut timer: Pin<&mut Sleep>,
    ) -> Result<Answer<'a>, ProxyError> {
        let table: &'a RoutingTable = self.table;
        let listener = self.listener.ok_or(ProxyError::ListenerClosing)?;
        let route = listener
            .routes
            .lookup(host, path)
            .ok_or(ProxyError::NoRoute)?;
        log.rule = Some(route.name.clone());
        log.group = Some(route.group);
        let group: &'a TargetGroup = table.group(route.group);
        let passive = &self.proxy.shared.passive;
        let (sticky, sticky_head) = match (&listener.stickiness, &route.sticky) {
            (Some(policy), Some(metrics)) => {
                let (decision, head) = self.sticky_request(policy, metrics, group);
                (Some(decision), Some(head))
            }
            _ => (None, None),
        };
        let outbound = Outbound {
            head: sticky_head.as_deref().unwrap_or(&self.head.upstream),
            body: &self.request[self.head.len..],
            head_request: self.head.method == http::Method::HEAD,
            fields: if self.for_h2 {
                Fields::Map
            } else if sticky.is_some() {
                Fields::HeadHoldingCookies
            } else {
                Fields::Head
            },
        };
        let prefer = sticky.as_ref().and_then(sticky::Decision::wanted);
        let mut target = first_target(group, prefer, passive)?;
        let mut retried = false;
        loop {
            log.target = Some(target.id.clone());
            log.target_requests = Some(target.metrics.requests.clone());
            let error = match self.attempt(target, outbound, timer.as_mut()).await {
                Ok((conn, rest, head)) => {
                    passive.success(target);
                    return Ok(Answer {
                        target,
                        conn,
                        rest,
                        head,
                        sticky,
                    });
                }
                Err(Failure::NotSent(e)) => {
                    passive.failure(target);
                    e
                }
                Err(Failure::Full(e)) => e,
                Err(Failure::Reset(e)) => {
                    passive.failure(target);
                    if !self.head.replayable() {
                        return Err(e);
                    }
                    e
                }
                Err(Failure::Fatal(e)) => return Err(e),
            };
            target = retry_target(group, passive, target, error, &mut retried)?;
        }
    }

    /// Reads a sticky listener's cookie (`sticky::on_request`, on a map of the request's
    /// `Cookie` fields alone) and writes the fields it leaves into the target's head.
    fn sticky_request(
        &self,
        policy: &'a StickinessPolicy,
        metrics: &'a StickyMetrics,
        group: &'a TargetGroup,
    ) -> (sticky::Decision<'a>, Vec<u8>) {
        let mut cookies = HeaderMap::new();
        for range in &self.head.cookies {
            if let Ok(value) = HeaderValue::from_bytes(&self.request[range.clone()]) {
                cookies.append(header::COOKIE, value);
            }
        }
        let passive = &self.proxy.shared.passive;
        let decision = sticky::on_request(
            policy,
            metrics,
            group,
            &self.head.method,
            &mut cookies,
            |t| passive.usable(t),
        );
        let mut upstream = self.head.upstream.clone();
        // Before the empty line that ends the head.
        upstream.truncate(upstream.len().saturating_sub(2));
        write_fields(&mut upstream, &cookies);
        upstream.extend_from_slice(b"\r\n");
        (decision, upstream)
    }

    /// One try with `target`, within the response timeout (on the connection's `timer`): a
    /// pooled connection that turns out to have been closed by the target is replaced by a
    /// fresh one, once.
    async fn attempt(
        &self,
        target: &Target,
        outbound: Outbound<'_>,
        timer: Pin<&mut Sleep>,
    ) -> Result<(RawConn, BytesMut, ResponseHead), Failure> {
        let timeout = self.table.timeouts.upstream_response();
        let exchange = async {
            let pooled = self.proxy.shared.pool.take_idle_raw(target.addr);
            let reused = pooled.is_some();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => self.connect(target).await?,
            };
            let buffers = &self.proxy.shared.buffers;
            let mut result = round(&mut conn.stream, outbound, buffers).await;
            if reused && self.head.replayable() && matches!(result, Err(Round::Stale(_))) {
                conn = self.connect(target).await?;
                result = round(&mut conn.stream, outbound, buffers).await;
            }
            match result {
                Ok((rest, head)) => Ok((conn, rest, head)),
                Err(Round::Stale(source) | Round::Reset(source)) => {
                    Err(Failure::Reset(self.upstream(target, source)))
                }
                Err(Round::Invalid(source)) => Err(Failure::Fatal(self.upstream(target, source))),
            }
        };
        match deadline::within(timer, timeout, exchange).await {
            Ok(result) => result,
            Err(deadline::Elapsed) => {
                target.metrics.timeouts.inc();
                Err(Failure::Fatal(ProxyError::ResponseTimeout {
                    target: target.id.clone(),
                    secs: timeout.as_secs_f64(),
                }))
            }
        }
    }

    fn upstream(&self, target: &Target, source: UpstreamError) -> ProxyError {
        ProxyError::Upstream {
            target: target.id.clone(),
            source,
        }
    }

    /// A new connection to `target`. Boxed: most requests find a pooled connection, and the
    /// connect state would otherwise make every exchange future larger (it is moved, and
    /// allocated, per request).
    async fn connect(&self, target: &Target) -> Result<RawConn, Failure> {
        let timeout = self.table.timeouts.upstream_connect();
        let max_open = self.table.limits.upstream_max_per_target;
        let pool = &self.proxy.shared.pool;
        Box::pin(pool.connect_raw(target.addr, timeout, max_open))
            .await
            .map_err(|e| {
                let full = matches!(e, ConnectError::AtCapacity(_));
                let e = connect_error(target, e);
                if full {
                    Failure::Full(e)
                } else {
                    Failure::NotSent(e)
                }
            })
    }

    /// Writes the response head and body to the client; the target's connection goes back
    /// to the pool if the body ended cleanly where its framing said.
    async fn pass_on<IO: ClientIo>(
        &self,
        io: &mut IO,
        answer: Answer<'_>,
        log: &mut AccessLog,
    ) -> bool {
        let Answer {
            target,
            mut conn,
            mut rest,
            mut head,
            sticky,
        } = answer;
        let keep = self.head.keep_alive && !self.closing && head.framing != Framing::UntilClose;
        if let Some(decision) = &sticky {
            decision.on_response(target, &mut head.held);
        }
        let mut out = head.client;
        write_fields(&mut out, &head.held);
        if !keep {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        let streamed = body(io, &mut conn.stream, &mut rest, out, head.framing, log).await;
        self.proxy.shared.buffers.give(rest);
        match streamed {
            Ok(clean) => {
                if clean && head.reusable {
                    self.proxy.shared.pool.put_raw(target.addr, conn);
                }
                keep
            }
            Err(e) => {
                tracing::debug!(target = %target.id, error = %e, "response body cut short");
                log.aborted = true;
                false
            }
        }
    }
}

/// Appends `fields` to a head being written, one line per value.
fn write_fields(out: &mut Vec<u8>, fields: &HeaderMap) {
    for (name, value) in fields {
        write_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
}

/// Appends one `name: value` line to a head being written.
pub fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}
