//! The HTTP/1.1 relay: the common request, proxied as bytes.
//!
//! hyper parses every head into a header map and serialises it again, on both sides of the
//! proxy, and holds an 8 KiB read and an 8 KiB write buffer for each connection's whole life.
//! The relay reads a request head into a buffer that exists only while a request is in
//! flight, rewrites it for the target in one pass ([`request`]), sends it on a pooled plain
//! connection ([`exchange`]: route, stickiness, target, retry), and passes the response head
//! ([`response`]) and body through as they come ([`target`]). This file is the client
//! connection's loop; an idle client connection holds no buffer at all.
//!
//! It takes only what it can forward without doubt about its meaning; anything else (see
//! [`request`]) is handed, with the bytes read so far, to hyper's connection, which serves
//! the connection from then on. On a sticky listener, the `Cookie`, `Set-Cookie` and
//! `Cache-Control` fields alone go through a header map, for the stickiness policy.

mod chunked;
mod deadline;
mod exchange;
pub mod h2_stream;
mod request;
mod response;
mod target;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::error::ProxyError;
use super::upstream::UpstreamError;
use super::version::{classify, FirstBytes};
use super::{Buffers, HttpVersion, Proxy, MAX_HEAD_BYTES};
use crate::io::Rewind;
use crate::metrics::CountingIo;
use crate::routing::RoutingTable;
use crate::server::drain;
use exchange::Exchange;
use request::Parsed;

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

/// Bytes read at a time from a client.
const CLIENT_READ: usize = 4 * 1024;

/// Serves one client connection until it closes, a drain asks it to finish, or a request
/// needs hyper (which then serves the rest). With `maybe_h2`, first bytes that are the h2
/// preface give the connection to hyper's h2.
///
/// An `async` block rather than an `async fn`: an idle connection is this future, and an
/// `async fn` keeps its parameters twice (as passed, and moved into its body).
#[allow(clippy::manual_async_fn)]
pub fn serve<IO: ClientIo>(
    mut io: IO,
    proxy: Arc<Proxy>,
    drain: drain::Watch,
    mut maybe_h2: bool,
) -> impl Future<Output = ()> + Send {
    async move {
        let mut buf = BytesMut::new();
        // One wait for the drain signal for the connection's life, not one per request, and
        // one timer (see `deadline`).
        let draining = drain.signaled();
        tokio::pin!(draining);
        let timer = deadline::timer(proxy.shared.table.load().timeouts.idle_keepalive());
        tokio::pin!(timer);
        loop {
            let table = proxy.shared.table.load_full();
            if buf.is_empty() {
                // Between requests the connection keeps no buffer.
                let buffers = &proxy.shared.buffers;
                buffers.give(std::mem::take(&mut buf));
                let idle = table.timeouts.idle_keepalive();
                let next = next_bytes(&mut io, buffers, idle, timer.as_mut(), draining.as_mut());
                match next.await {
                    Some(read) => buf = read,
                    None => return,
                }
            }
            let conn = Connection {
                proxy: &proxy,
                table: &table,
                drain: &drain,
            };
            match conn
                .request(&mut io, &mut buf, &mut maybe_h2, timer.as_mut())
                .await
            {
                Next::Request => {}
                Next::Close => return,
                Next::Handoff(version) => {
                    drop(table);
                    // Boxed: rare, and hyper's connection is kilobytes (the TLS session
                    // too, moved in) that every relayed connection would otherwise carry.
                    let rest = handoff(io, buf, proxy, drain.clone(), version);
                    return Box::pin(rest).await;
                }
            }
        }
    }
}

/// What the connection does after a request.
enum Next {
    Request,
    Close,
    /// Serve the rest with hyper, the bytes read so far first.
    Handoff(HttpVersion),
}

/// What one request on a connection reads.
struct Connection<'c> {
    proxy: &'c Arc<Proxy>,
    table: &'c Arc<RoutingTable>,
    drain: &'c drain::Watch,
}

impl Connection<'_> {
    /// Reads one request whose first bytes are in `buf` and serves it. Its own future, so
    /// that its state (the parsed head, the reads) takes the room the idle wait before it
    /// takes, not more.
    async fn request<IO: ClientIo>(
        self,
        io: &mut IO,
        buf: &mut BytesMut,
        maybe_h2: &mut bool,
        timer: Pin<&mut Sleep>,
    ) -> Next {
        let timeouts = &self.table.timeouts;
        let deadline = tokio::time::Instant::now() + timeouts.request_headers();
        while *maybe_h2 {
            match classify(buf) {
                FirstBytes::Speaks(HttpVersion::H2) => return Next::Handoff(HttpVersion::H2),
                FirstBytes::Speaks(HttpVersion::Http1) => *maybe_h2 = false,
                FirstBytes::Unclear => {
                    if !read_by(io, buf, deadline).await {
                        return Next::Close;
                    }
                }
            }
        }
        let listener = self.table.listener(self.proxy.port);
        let sticky = listener.is_some_and(|l| l.stickiness.is_some());
        let head = loop {
            let before = buf.len();
            match request::parse(buf, &self.proxy.forwarded, sticky) {
                Parsed::Request(head) => break head,
                Parsed::Handoff => return Next::Handoff(HttpVersion::Http1),
                Parsed::Partial if buf.len() >= MAX_HEAD_BYTES => {
                    return Next::Handoff(HttpVersion::Http1)
                }
                Parsed::Partial => {}
            }
            while !worth_parsing(buf, before) {
                // Closed, failed, or too slow (slowloris): like hyper, close unanswered.
                if !read_by(io, buf, deadline).await {
                    return Next::Close;
                }
            }
        };
        let whole = head.len + head.body_len;
        if buf.len() < whole {
            match read_body(io, buf, whole, timeouts.request_body()).await {
                BodyRead::Complete => {}
                BodyRead::Gone => return Next::Close,
                BodyRead::Stalled => {
                    let e = ProxyError::Upstream {
                        target: Arc::from("-"),
                        source: UpstreamError::ClientBodyTimeout,
                    };
                    let _ = write_flush(io, &error_response(&e, true)).await;
                    return Next::Close;
                }
            }
        }
        let exchange = Exchange {
            proxy: self.proxy,
            table: self.table,
            listener,
            request: &buf[..whole],
            head: &head,
            closing: self.drain.is_signaled(),
            for_h2: false,
        };
        let keep = Box::pin(exchange.run(io, timer)).await;
        buf.advance(whole);
        if keep && !self.drain.is_signaled() {
            Next::Request
        } else {
            Next::Close
        }
    }
}

/// Waits for the first bytes of the next request, read into a buffer from `buffers`; `None`
/// when none will come (closed, idle too long, draining).
async fn next_bytes<IO: ClientIo>(
    io: &mut IO,
    buffers: &Buffers,
    idle: Duration,
    timer: Pin<&mut Sleep>,
    draining: Pin<&mut impl Future<Output = ()>>,
) -> Option<BytesMut> {
    let wait = async {
        if let Some(socket) = io.plain_socket() {
            socket.readable().await.ok()?;
        }
        let mut buf = buffers.take();
        match read(io, &mut buf).await {
            Ok(n) if n > 0 => Some(buf),
            _ => {
                buffers.give(buf);
                None
            }
        }
    };
    tokio::select! {
        got = deadline::within(timer, idle, wait) => got.ok().flatten(),
        () = draining => None,
    }
}

async fn read<R: AsyncRead + Unpin>(io: &mut R, buf: &mut BytesMut) -> io::Result<usize> {
    buf.reserve(CLIENT_READ);
    io.read_buf(buf).await
}

/// Reads more of a head that must be complete by `deadline`; `false` when the client closed,
/// failed, or is too slow.
async fn read_by<IO: ClientIo>(
    io: &mut IO,
    buf: &mut BytesMut,
    deadline: tokio::time::Instant,
) -> bool {
    matches!(
        tokio::time::timeout_at(deadline, read(io, buf)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// Whether a head read since `before` may be complete now. httparse starts over on every
/// call: parsing again only once a line has ended keeps a head sent a byte at a time from
/// costing the square of its length (client and target heads alike).
fn worth_parsing(buf: &[u8], before: usize) -> bool {
    buf[before..].contains(&b'\n') || buf.len() >= MAX_HEAD_BYTES
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
    super::serve_hyper(io, version, proxy, &drain).await;
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
    request::push_decimal(&mut out, body.len() as u64);
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
