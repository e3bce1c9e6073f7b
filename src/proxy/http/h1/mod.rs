//! The HTTP/1.1 relay: the common request, proxied as bytes.
//!
//! hyper parses every head into a header map and serialises it again, on both sides of the
//! proxy, and holds an 8 KiB read and an 8 KiB write buffer for each connection's whole life.
//! The relay reads a request head into a buffer that exists only while a request is in
//! flight, rewrites it for the target in one pass ([`request`]), sends it on a pooled plain
//! connection, and passes the response head ([`response`]) and body through as they come.
//! An idle client connection holds no buffer at all.
//!
//! It takes only what it can forward without doubt about its meaning; anything else (see
//! [`request`]) is handed, with the bytes read so far, to hyper's connection, which serves
//! the connection from then on. On a sticky listener, the `Cookie`, `Set-Cookie` and
//! `Cache-Control` fields alone go through a header map, for the stickiness policy.

mod chunked;
mod request;
mod response;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{StatusCode, Uri};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::ProxyError;
use super::log::AccessLog;
use super::upstream::{RawConn, UpstreamError};
use super::version::{classify, FirstBytes};
use super::{HttpVersion, Proxy, MAX_HEAD_BYTES};
use crate::balance::{Target, TargetGroup};
use crate::config::StickinessPolicy;
use crate::io::Rewind;
use crate::metrics::CountingIo;
use crate::routing::{normalize_host, RoutingTable};
use crate::server::drain;
use crate::sticky::{self, StickyMetrics};
use request::{Parsed, RequestHead};
use response::{Framing, ResponseHead};

/// A client connection the relay can serve.
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The socket under a plain connection: waiting on it for readiness lets an idle
    /// connection hold no read buffer. TLS keeps its own buffers; it answers `None`.
    fn plain_socket(&self) -> Option<&TcpStream> {
        None
    }
}

impl ClientIo for CountingIo<TcpStream> {
    fn plain_socket(&self) -> Option<&TcpStream> {
        Some(self.get_ref())
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ClientIo
    for tokio_rustls::server::TlsStream<T>
{
}

/// Bytes read at a time from a client, from a target for a response head, and for a body.
const CLIENT_READ: usize = 4 * 1024;
const TARGET_HEAD_READ: usize = 4 * 1024;
const TARGET_READ: usize = 16 * 1024;

/// Serves one client connection until it closes, a drain asks it to finish, or a request
/// needs hyper (which then serves the rest). With `maybe_h2`, first bytes that are the h2
/// preface give the connection to hyper's h2.
pub async fn serve<IO: ClientIo>(
    mut io: IO,
    proxy: Arc<Proxy>,
    drain: drain::Watch,
    mut maybe_h2: bool,
) {
    let mut buf = BytesMut::new();
    // One wait for the drain signal for the connection's life, not one per request.
    let draining = drain.signaled();
    tokio::pin!(draining);
    loop {
        let table = proxy.shared.table.load_full();
        let timeouts = table.timeouts;
        if buf.is_empty() {
            // Between requests the connection keeps no buffer.
            buf = BytesMut::new();
            let idle = timeouts.idle_keepalive();
            if !next_bytes(&mut io, &mut buf, idle, draining.as_mut()).await {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeouts.request_headers();
        while maybe_h2 {
            match classify(&buf) {
                FirstBytes::Speaks(HttpVersion::H2) => {
                    return handoff(io, buf, proxy, drain.clone(), HttpVersion::H2).await
                }
                FirstBytes::Speaks(HttpVersion::Http1) => maybe_h2 = false,
                FirstBytes::Unclear => {
                    match tokio::time::timeout_at(deadline, read(&mut io, &mut buf)).await {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => return,
                    }
                }
            }
        }
        let sticky = table
            .listener(proxy.port)
            .is_some_and(|l| l.stickiness.is_some());
        let head = loop {
            match request::parse(&buf, &proxy.forwarded, sticky) {
                Parsed::Request(head) => break head,
                Parsed::Handoff => {
                    return handoff(io, buf, proxy, drain.clone(), HttpVersion::Http1).await
                }
                Parsed::Partial if buf.len() >= MAX_HEAD_BYTES => {
                    return handoff(io, buf, proxy, drain.clone(), HttpVersion::Http1).await
                }
                Parsed::Partial => loop {
                    // Closed, failed, or too slow (slowloris): like hyper, close unanswered.
                    let before = buf.len();
                    match tokio::time::timeout_at(deadline, read(&mut io, &mut buf)).await {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => return,
                    }
                    // httparse starts over on every call: parsing again only once a line
                    // has ended keeps a head sent a byte at a time from costing its square.
                    if buf[before..].contains(&b'\n') || buf.len() >= MAX_HEAD_BYTES {
                        break;
                    }
                },
            }
        };
        let whole = head.len + head.body_len;
        if buf.len() < whole {
            match read_body(&mut io, &mut buf, whole, timeouts.request_body()).await {
                BodyRead::Complete => {}
                BodyRead::Gone => return,
                BodyRead::Stalled => {
                    let e = ProxyError::Upstream {
                        target: Arc::from("-"),
                        source: UpstreamError::ClientBodyTimeout,
                    };
                    let _ = write_flush(&mut io, &error_response(&e, true)).await;
                    return;
                }
            }
        }
        let exchange = Exchange {
            proxy: &proxy,
            table: &table,
            request: &buf[..whole],
            head: &head,
            closing: drain.is_signaled(),
        };
        let keep = Box::pin(exchange.run(&mut io)).await;
        buf.advance(whole);
        if !keep || drain.is_signaled() {
            return;
        }
    }
}

/// Waits for the first bytes of the next request; `false` when none will come (closed,
/// idle too long, draining).
async fn next_bytes<IO: ClientIo>(
    io: &mut IO,
    buf: &mut BytesMut,
    idle: Duration,
    draining: Pin<&mut impl Future<Output = ()>>,
) -> bool {
    let wait = async {
        if let Some(socket) = io.plain_socket() {
            socket.readable().await.ok()?;
        }
        read(io, buf).await.ok().filter(|&n| n > 0)
    };
    tokio::select! {
        got = tokio::time::timeout(idle, wait) => matches!(got, Ok(Some(_))),
        () = draining => false,
    }
}

async fn read<R: AsyncRead + Unpin>(io: &mut R, buf: &mut BytesMut) -> io::Result<usize> {
    buf.reserve(CLIENT_READ);
    io.read_buf(buf).await
}

enum BodyRead {
    Complete,
    /// The client closed or failed before sending all of it.
    Gone,
    /// No byte for longer than `requestBody`.
    Stalled,
}

async fn read_body<IO: ClientIo>(
    io: &mut IO,
    buf: &mut BytesMut,
    whole: usize,
    stall: Duration,
) -> BodyRead {
    buf.reserve(whole - buf.len());
    while buf.len() < whole {
        let read = io.read_buf(buf);
        let n = if stall.is_zero() {
            read.await
        } else {
            match tokio::time::timeout(stall, read).await {
                Ok(n) => n,
                Err(_) => return BodyRead::Stalled,
            }
        };
        if !matches!(n, Ok(n) if n > 0) {
            return BodyRead::Gone;
        }
    }
    BodyRead::Complete
}

/// Hands the connection to hyper, the bytes read so far first.
async fn handoff<IO: ClientIo>(
    io: IO,
    buf: BytesMut,
    proxy: Arc<Proxy>,
    drain: drain::Watch,
    version: HttpVersion,
) {
    let io = Rewind::new(io, buf.freeze());
    Box::pin(super::serve_hyper(io, version, proxy, &drain)).await;
}

/// One request through the relay.
struct Exchange<'a> {
    proxy: &'a Proxy,
    table: &'a Arc<RoutingTable>,
    /// The request's head and body as the client sent them.
    request: &'a [u8],
    head: &'a RequestHead,
    /// A drain has begun: the client is told this is the last response.
    closing: bool,
}

/// A target's answer, its head read.
struct Answer<'g> {
    target: &'g Target,
    conn: RawConn,
    /// What was read after the head.
    rest: BytesMut,
    head: ResponseHead,
    /// What a sticky listener's cookie said, for the response's cookie.
    sticky: Option<sticky::Decision<'g>>,
}

/// The request as it goes to a target.
#[derive(Clone, Copy)]
struct Outbound<'r> {
    head: &'r [u8],
    body: &'r [u8],
    /// HEAD: the response has no body whatever its framing fields say.
    head_request: bool,
    /// A sticky listener: the response's cookie fields are held for the policy.
    hold_cookies: bool,
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

/// How one request/response round on one connection failed.
enum Round {
    /// The connection was closed before the request could go out, or closed cleanly before
    /// any response byte: what a target's closing of an idle keep-alive connection looks
    /// like from here.
    Stale(UpstreamError),
    /// Reset before any response byte: the target may have seen the request.
    Reset(UpstreamError),
    Invalid(UpstreamError),
}

impl<'a> Exchange<'a> {
    /// Serves the request; `false` when the client connection must close afterwards.
    async fn run<IO: ClientIo>(self, io: &mut IO) -> bool {
        let path = self.text(self.head.path.clone());
        let host = self
            .head
            .host
            .clone()
            .and_then(|h| normalize_host(self.text(h)));
        let mut log = AccessLog::new(
            self.proxy.client,
            self.proxy.port,
            self.table.clone(),
            self.head.method.clone(),
            Uri::try_from(path).unwrap_or_default(),
        );
        let answer = self.send(host.as_deref(), path, &mut log).await;
        log.host = host.unwrap_or_default();
        match answer {
            Ok(answer) => {
                log.status = StatusCode::from_u16(answer.head.status).unwrap_or(StatusCode::OK);
                self.pass_on(io, answer, &mut log).await
            }
            Err(e) => {
                log.failed(&e);
                log.status = e.status();
                let keep = self.head.keep_alive && !self.closing && !e.closes_connection();
                log.bytes_out = e.body().len() as u64;
                write_flush(io, &error_response(&e, !keep)).await.is_ok() && keep
            }
        }
    }

    /// A part of the request head that the parser checked is ASCII.
    fn text(&self, range: std::ops::Range<usize>) -> &str {
        std::str::from_utf8(&self.request[range]).unwrap_or_default()
    }

    /// Routes the request, picks a target and exchanges with it; a failed try is retried
    /// once on another target under the same rules as hyper's path (`Proxy::send`).
    async fn send(
        &self,
        host: Option<&str>,
        path: &str,
        log: &mut AccessLog,
    ) -> Result<Answer<'a>, ProxyError> {
        let table: &'a RoutingTable = self.table;
        let listener = table
            .listener(self.proxy.port)
            .ok_or(ProxyError::ListenerClosing)?;
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
            hold_cookies: sticky.is_some(),
        };
        let mut target = match sticky.as_ref().and_then(sticky::Decision::wanted) {
            Some(t) => t,
            None => group
                .pick(|t| passive.usable(t))
                .ok_or_else(|| ProxyError::NoTarget {
                    service: group.service.clone(),
                })?,
        };
        let mut retried = false;
        loop {
            log.target = Some(target.id.clone());
            log.target_requests = Some(target.metrics.requests.clone());
            let error = match self.attempt(target, outbound).await {
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
            if retried {
                return Err(error);
            }
            let Some(next) = group.pick(|t| t.id != target.id && passive.usable(t)) else {
                return Err(error);
            };
            target.metrics.retries.inc();
            tracing::warn!(target = %target.id, next = %next.id, %error, "retrying on the next target");
            retried = true;
            target = next;
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

    /// One try with `target`, within the response timeout: a pooled connection that turns
    /// out to have been closed by the target is replaced by a fresh one, once.
    async fn attempt(
        &self,
        target: &Target,
        outbound: Outbound<'_>,
    ) -> Result<(RawConn, BytesMut, ResponseHead), Failure> {
        let timeout = self.table.timeouts.upstream_response();
        let exchange = async {
            let pooled = self.proxy.shared.pool.take_idle_raw(target.addr);
            let reused = pooled.is_some();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => self.connect(target).await?,
            };
            let mut result = round(&mut conn.stream, outbound).await;
            if reused && self.head.replayable() && matches!(result, Err(Round::Stale(_))) {
                conn = self.connect(target).await?;
                result = round(&mut conn.stream, outbound).await;
            }
            match result {
                Ok((rest, head)) => Ok((conn, rest, head)),
                Err(Round::Stale(source) | Round::Reset(source)) => {
                    Err(Failure::Reset(self.upstream(target, source)))
                }
                Err(Round::Invalid(source)) => Err(Failure::Fatal(self.upstream(target, source))),
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => {
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
                let full = matches!(e, super::upstream::ConnectError::AtCapacity(_));
                let e = super::connect_error(target, e);
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
            rest,
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
        match body(io, &mut conn.stream, rest, out, head.framing, log).await {
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

/// Sends the request on `stream` and reads the final response head, skipping 1xx ones.
async fn round(
    stream: &mut TcpStream,
    outbound: Outbound<'_>,
) -> Result<(BytesMut, ResponseHead), Round> {
    let Outbound {
        head,
        body,
        head_request,
        hold_cookies,
    } = outbound;
    let sent = if body.is_empty() {
        stream.write_all(head).await
    } else {
        let mut whole = Vec::with_capacity(head.len() + body.len());
        whole.extend_from_slice(head);
        whole.extend_from_slice(body);
        stream.write_all(&whole).await
    };
    sent.map_err(|e| Round::Stale(UpstreamError::Io(e)))?;
    let mut buf = BytesMut::with_capacity(TARGET_HEAD_READ);
    // Whether any response byte came (an interim response may have been consumed since).
    let mut answered = false;
    loop {
        // httparse starts over on every call: parsing again only once a line has ended keeps
        // a head sent a byte at a time from costing its square.
        let before = buf.len();
        loop {
            buf.reserve(TARGET_HEAD_READ);
            match stream.read_buf(&mut buf).await {
                Ok(0) if !answered => return Err(Round::Stale(UpstreamError::ClosedEarly)),
                Err(e) if !answered => return Err(Round::Reset(UpstreamError::Io(e))),
                Ok(0) => {
                    return Err(Round::Invalid(UpstreamError::InvalidResponse(
                        "closed inside the response head",
                    )))
                }
                Err(e) => return Err(Round::Invalid(UpstreamError::Io(e))),
                Ok(_) => answered = true,
            }
            if buf[before..].contains(&b'\n') || buf.len() >= MAX_HEAD_BYTES {
                break;
            }
        }
        loop {
            match response::parse(&buf, head_request, hold_cookies) {
                Err(why) => return Err(Round::Invalid(UpstreamError::InvalidResponse(why))),
                Ok(response::Parsed::Final(head)) => {
                    buf.advance(head.len);
                    return Ok((buf, head));
                }
                Ok(response::Parsed::Interim(len)) => buf.advance(len),
                Ok(response::Parsed::Partial) if buf.len() >= MAX_HEAD_BYTES => {
                    return Err(Round::Invalid(UpstreamError::InvalidResponse(
                        "response head too large",
                    )))
                }
                Ok(response::Parsed::Partial) => break,
            }
        }
    }
}

/// Streams a response body from the target to the client after `out` (the head). `Ok(true)`
/// when it ended exactly where its framing said, with nothing after it.
async fn body<IO: ClientIo>(
    io: &mut IO,
    target: &mut TcpStream,
    mut buf: BytesMut,
    mut out: Vec<u8>,
    framing: Framing,
    log: &mut AccessLog,
) -> io::Result<bool> {
    let mut scanner = chunked::ChunkedScanner::default();
    let mut remaining = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    // Takes from `buf` what belongs to the body; `true` once the body is complete.
    let mut take = |buf: &mut BytesMut, into: &mut Vec<u8>| -> io::Result<(usize, bool)> {
        let (n, done) = match framing {
            Framing::Empty => (0, true),
            Framing::Length(_) => {
                let n = remaining.min(buf.len() as u64) as usize;
                remaining -= n as u64;
                (n, remaining == 0)
            }
            Framing::Chunked => match scanner.scan(buf).map_err(io::Error::other)? {
                Some(end) => (end, true),
                None => (buf.len(), false),
            },
            Framing::UntilClose => (buf.len(), false),
        };
        into.extend_from_slice(&buf[..n]);
        buf.advance(n);
        Ok((n, done))
    };
    let (n, mut done) = take(&mut buf, &mut out)?;
    log.bytes_out += n as u64;
    io.write_all(&out).await?;
    let mut chunk = out;
    while !done {
        buf.reserve(TARGET_READ);
        if target.read_buf(&mut buf).await? == 0 {
            if framing == Framing::UntilClose {
                io.flush().await?;
                return Ok(false);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the target closed inside the body",
            ));
        }
        chunk.clear();
        let (n, complete) = take(&mut buf, &mut chunk)?;
        done = complete;
        log.bytes_out += n as u64;
        io.write_all(&chunk).await?;
    }
    io.flush().await?;
    // Bytes after a complete body: only a misbehaving target sends those.
    Ok(buf.is_empty())
}

/// Appends `fields` to a head being written, one line per value.
fn write_fields(out: &mut Vec<u8>, fields: &HeaderMap) {
    for (name, value) in fields {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

async fn write_flush<W: AsyncWrite + Unpin>(io: &mut W, bytes: &[u8]) -> io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

/// corral's own answer to a request it could not proxy, as hyper's path gives it.
fn error_response(e: &ProxyError, close: bool) -> Vec<u8> {
    let status = e.status();
    let body = e.body();
    let mut out = Vec::with_capacity(160 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    if super::retry_after(e) {
        out.extend_from_slice(b"retry-after: 1\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}
