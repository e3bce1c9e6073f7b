//! An h2 client's request, sent to its target by the relay.
//!
//! hyper's h2 server hands each stream over as a request with a header map. Sending it on
//! with hyper's HTTP/1 client would cost a second state machine, a task per connection and
//! two channels per request, and a second header map for the response. Instead, a request
//! without a body is written as the HTTP/1.1 head a client of the relay would have sent and
//! goes through the relay's own exchange ([`Exchange::answer`]: the same checks and
//! rewriting, routing, stickiness, pool and retries); the response head is read into the map
//! h2 needs, and the body streamed from the target's socket as data frames, de-chunked
//! ([`RelayedBody`]). What the relay would hand over (see [`request`]) and requests with a
//! body stay on hyper's path.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::super::upstream::RawConn;
use super::super::{error_response, Proxy, ProxyBody};
use super::deadline;
use super::exchange::{write_field, Answer, Exchange};
use super::request::{self, Parsed};
use super::response::Framing;
use super::target::{BodyEnd, TARGET_READ};
use crate::runtime::Shared;

/// Serves `req` through the relay, or gives it back for hyper's path.
pub async fn serve(
    proxy: &Proxy,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Request<Incoming>> {
    if !req.body().is_end_stream() {
        return Err(req);
    }
    let table = proxy.shared.table.load_full();
    let listener = table.listener(proxy.port);
    let sticky = listener.is_some_and(|l| l.stickiness.is_some());
    let bytes = http1_head(&req);
    let head = match request::parse(&bytes, &proxy.forwarded, sticky) {
        Parsed::Request(head) if head.body_len == 0 => head,
        _ => return Err(req),
    };
    // Not kept while the exchange is in flight: everything it needs is in `bytes`.
    drop(req);
    let exchange = Exchange {
        proxy,
        table: &table,
        listener,
        request: &bytes,
        head: &head,
        closing: false,
        for_h2: true,
    };
    let timer = deadline::timer(table.timeouts.upstream_response());
    tokio::pin!(timer);
    let mut log = exchange.access_log();
    let response = match exchange.answer(&mut log, timer).await {
        Ok(answer) => response(answer, &proxy.shared),
        Err(e) => error_response(&e),
    };
    Ok(response.map(|body| body.with_log(log)))
}

/// The HTTP/1.1 head of `req` (its `:authority` as `Host`, split `Cookie` fields joined as
/// RFC 9113 §8.2.3 says), for the relay's parser to check and rewrite like any other.
fn http1_head(req: &Request<Incoming>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let authority = req.uri().authority();
    if let Some(authority) = authority {
        write_field(&mut out, b"host", authority.as_str().as_bytes());
    }
    for (name, value) in req.headers() {
        if *name == header::COOKIE || *name == header::HOST && authority.is_some() {
            continue;
        }
        write_field(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    let mut cookies = req.headers().get_all(header::COOKIE).iter();
    if let Some(first) = cookies.next() {
        out.extend_from_slice(b"cookie: ");
        out.extend_from_slice(first.as_bytes());
        for more in cookies {
            out.extend_from_slice(b"; ");
            out.extend_from_slice(more.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The h2 response to a target's answer.
fn response(answer: Answer<'_>, shared: &Arc<Shared>) -> Response<ProxyBody> {
    let Answer {
        target,
        conn,
        rest,
        mut head,
        sticky,
    } = answer;
    if let Some(decision) = &sticky {
        decision.on_response(target, &mut head.held);
    }
    let body = RelayedBody::new(conn, rest, head.framing, head.reusable, target.addr, shared);
    let mut response = Response::new(ProxyBody::relayed(body));
    *response.status_mut() = StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY);
    *response.headers_mut() = head.held;
    response
}

/// A response body read from a target's connection: data frames as they come, chunked
/// framing taken off. The connection goes back to the pool once the body ended exactly where
/// its framing said, and its read buffer to the relay's stack.
pub struct RelayedBody {
    /// `None` once the body is done.
    conn: Option<RawConn>,
    buf: BytesMut,
    end: BodyEnd,
    reusable: bool,
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl RelayedBody {
    fn new(
        conn: RawConn,
        buf: BytesMut,
        framing: Framing,
        reusable: bool,
        addr: SocketAddr,
        shared: &Arc<Shared>,
    ) -> RelayedBody {
        let mut body = RelayedBody {
            conn: Some(conn),
            buf,
            end: BodyEnd::new(framing),
            reusable,
            addr,
            shared: shared.clone(),
        };
        // Ended already: h2 sends the head with END_STREAM and never polls the body.
        if matches!(framing, Framing::Empty | Framing::Length(0)) {
            body.finish(true);
        }
        body
    }

    /// The body's data in the buffer, if any, and whether the body ends with it.
    fn take(&mut self) -> io::Result<(Bytes, bool)> {
        // Where the data is: one range but for chunked bodies, so the first is kept apart
        // and only further ones allocate.
        let mut first = None;
        let mut more = Vec::new();
        let (n, complete) = self.end.advance(&self.buf, |r| match first {
            None => first = Some(r),
            Some(_) => more.push(r),
        })?;
        // The data moved to the front, over the chunk size lines it follows.
        let mut len = 0;
        for r in first.into_iter().chain(more) {
            let n = r.len();
            if r.start != len {
                self.buf.copy_within(r, len);
            }
            len += n;
        }
        let mut taken = self.buf.split_to(n);
        taken.truncate(len);
        Ok((taken.freeze(), complete))
    }

    /// Ends the body: the connection is kept when `clean` and nothing follows the body.
    fn finish(&mut self, clean: bool) {
        if let Some(conn) = self.conn.take() {
            if clean && self.reusable && self.buf.is_empty() {
                self.shared.pool.put_raw(self.addr, conn);
            }
            self.shared.buffers.give(mem::take(&mut self.buf));
        }
    }

    fn fail(&mut self, e: io::Error) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        self.finish(false);
        Poll::Ready(Some(Err(e)))
    }
}

impl Body for RelayedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = self.get_mut();
        loop {
            if this.conn.is_none() {
                return Poll::Ready(None);
            }
            let (data, complete) = match this.take() {
                Ok(taken) => taken,
                Err(e) => return this.fail(e),
            };
            if complete {
                this.finish(true);
            }
            if !data.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            this.buf.reserve(TARGET_READ);
            let read = loop {
                if let Err(e) = ready!(conn.stream.poll_read_ready(cx)) {
                    break Err(e);
                }
                match conn.stream.try_read_buf(&mut this.buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    read => break read,
                }
            };
            match read {
                Ok(0) => {
                    if let Err(e) = this.end.closed() {
                        return this.fail(e);
                    }
                    this.finish(false);
                    return Poll::Ready(None);
                }
                Ok(_) => {}
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.end.remaining_length() {
            _ if self.conn.is_none() => SizeHint::with_exact(0),
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for RelayedBody {
    fn drop(&mut self) {
        self.finish(false);
    }
}
