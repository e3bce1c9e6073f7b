//! Upstream HTTP/1.1 connections, pooled per target address.
//!
//! A connection is checked out, used for one request, and given back only once hyper says it
//! can take another (response fully read, keep-alive intact). A connection that saw any error
//! ends its task, so it is closed and never handed out again.
//!
//! [`Sender`] wraps hyper's sender for the two things hyper leaves to its user: a response
//! whose framing the target and corral could read differently (`Content-Length` with
//! `Transfer-Encoding`, a coding other than `chunked`) is refused, which drops the
//! connection; and a request body that stalls longer than [`BodyTimeout`] fails the exchange
//! as the client's fault, not the target's.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::body::Payload;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpStream;

/// Why an exchange with a target failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    #[error("invalid response framing: {0}")]
    InvalidResponse(&'static str),
    #[error("{0}")]
    Io(std::io::Error),
    #[error("the connection closed before a response")]
    ClosedEarly,
    #[error("the client's request body stalled")]
    ClientBodyTimeout,
    #[error("the client's request body is invalid: {0}")]
    ClientBody(hyper::Error),
}

/// The longest pause allowed between two reads of a request body (`None`: no limit); set
/// on the request by the validation phase.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Option<Duration>);

/// An HTTP/1.1 connection to one target.
pub struct Sender {
    inner: SendRequest<ClientBody>,
}

/// A request that failed; the request itself comes back if it was never sent.
pub struct TrySendError {
    message: Option<Request<Payload>>,
    error: UpstreamError,
}

impl TrySendError {
    pub fn take_message(&mut self) -> Option<Request<Payload>> {
        self.message.take()
    }

    pub fn into_error(self) -> UpstreamError {
        self.error
    }
}

impl Sender {
    pub fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }

    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    pub async fn ready(&mut self) -> Result<(), hyper::Error> {
        self.inner.ready().await
    }

    pub async fn send_request(
        &mut self,
        req: Request<Payload>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut e = match self.try_send_request(req).await {
            Ok(response) => return Ok(response),
            Err(e) => e,
        };
        e.message = None;
        Err(e.into_error())
    }

    pub async fn try_send_request(
        &mut self,
        req: Request<Payload>,
    ) -> Result<Response<Incoming>, TrySendError> {
        let (req, state) = ClientBody::wrap(req);
        match self.inner.try_send_request(req).await {
            Ok(response) => check_response(response).map_err(|error| TrySendError {
                message: None,
                error,
            }),
            Err(mut e) => {
                let message = e.take_message().map(|r| r.map(|b| b.inner));
                let error = e.into_error();
                let error = match state.load(Ordering::Acquire) {
                    BODY_TIMED_OUT => UpstreamError::ClientBodyTimeout,
                    BODY_FAILED => UpstreamError::ClientBody(error),
                    _ => UpstreamError::Hyper(error),
                };
                Err(TrySendError { message, error })
            }
        }
    }
}

/// RFC 9112 §6.3: a response with both `Transfer-Encoding` and `Content-Length` "ought to be
/// handled as an error"; hyper takes chunked and would keep the connection. A coding other
/// than a single `chunked` means a close-delimited body of a coding corral cannot vouch for.
/// Refusing drops the response and its connection.
fn check_response(response: Response<Incoming>) -> Result<Response<Incoming>, UpstreamError> {
    let headers = response.headers();
    let mut te = headers.get_all(header::TRANSFER_ENCODING).iter();
    let Some(first) = te.next() else {
        return Ok(response);
    };
    if headers.contains_key(header::CONTENT_LENGTH) {
        return Err(UpstreamError::InvalidResponse(
            "both content-length and transfer-encoding",
        ));
    }
    if !first
        .as_bytes()
        .trim_ascii()
        .eq_ignore_ascii_case(b"chunked")
        || te.next().is_some()
    {
        return Err(UpstreamError::InvalidResponse(
            "transfer-encoding other than chunked",
        ));
    }
    Ok(response)
}

const BODY_OK: u8 = 0;
const BODY_TIMED_OUT: u8 = 1;
const BODY_FAILED: u8 = 2;

pin_project_lite::pin_project! {
    /// The client's request body on its way to the target, with a deadline on each wait.
    pub struct ClientBody {
        #[pin]
        inner: Payload,
        timeout: Option<Duration>,
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
        state: Arc<AtomicU8>,
    }
}

impl ClientBody {
    fn wrap(req: Request<Payload>) -> (Request<ClientBody>, Arc<AtomicU8>) {
        let timeout = req.extensions().get::<BodyTimeout>().and_then(|t| t.0);
        let state = Arc::new(AtomicU8::new(BODY_OK));
        let body_state = state.clone();
        let req = req.map(|inner| ClientBody {
            inner,
            timeout,
            sleep: None,
            state: body_state,
        });
        (req, state)
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                this.state.store(BODY_FAILED, Ordering::Release);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(frame) => {
                *this.sleep = None;
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let Some(timeout) = *this.timeout else {
                    return Poll::Pending;
                };
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.state.store(BODY_TIMED_OUT, Ordering::Release);
                Poll::Ready(Some(Err("request body stalled".into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("at its limit of {0} open connections")]
    AtCapacity(usize),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<ConnectError> for std::io::Error {
    fn from(e: ConnectError) -> std::io::Error {
        match e {
            ConnectError::Timeout(_) => std::io::Error::new(std::io::ErrorKind::TimedOut, e),
            ConnectError::AtCapacity(_) => std::io::Error::new(std::io::ErrorKind::WouldBlock, e),
            ConnectError::Io(e) => e,
        }
    }
}

#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    idle: Idle<Sender>,
    max_idle_per_target: usize,
    /// Connections open per target, busy or idle.
    open: Mutex<AddrMap<usize>>,
    /// The HTTP/1 relay's idle connections: plain sockets, no driver task.
    raw_idle: Idle<RawConn>,
}

/// Idle connections per target address, the most recently used first out.
/// Maps keyed by target address, looked up twice per request. The addresses come from the
/// configuration, not from clients, so SipHash's resistance to chosen keys buys nothing here
/// and costs a few hundred instructions per lookup; a multiply-rotate hash does.
type AddrMap<V> = HashMap<SocketAddr, V, BuildHasherDefault<AddrHasher>>;

#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Idle connections per target, most recently used last: reused first, while the ones at the
/// front have waited longest and are the first a target closes.
struct Idle<C>(Mutex<AddrMap<VecDeque<C>>>);

impl<C> Idle<C> {
    fn new() -> Self {
        Idle(Mutex::new(AddrMap::default()))
    }

    /// The most recent idle connection to `addr` that is `usable`; the ones passed over are
    /// dropped.
    fn take(&self, addr: SocketAddr, usable: impl Fn(&C) -> bool) -> Option<C> {
        let mut idle = self.0.lock();
        let stack = idle.get_mut(&addr)?;
        while let Some(conn) = stack.pop_back() {
            if usable(&conn) {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` unless `max` others are idle already. Those no longer `alive` are dropped
    /// from the front, oldest first, until one is: checking every idle connection on each
    /// return cost an h2 request 1.3k instructions with a hundred streams in flight.
    fn put(&self, addr: SocketAddr, conn: C, max: usize, alive: impl Fn(&C) -> bool) {
        let mut idle = self.0.lock();
        let stack = idle.entry(addr).or_default();
        while stack.front().is_some_and(|oldest| !alive(oldest)) {
            stack.pop_front();
        }
        if stack.len() < max {
            stack.push_back(conn);
        }
    }
}

/// A plain TCP connection to a target, for the HTTP/1 relay; counted against the target's
/// connection limit while it lives.
pub struct RawConn {
    pub stream: TcpStream,
    _slot: OpenSlot,
}

impl RawConn {
    /// Open, with nothing unread: a target that closed an idle connection, or sent bytes
    /// nobody asked for, made it unusable. tokio remembers that no readiness event came, so
    /// on a quiet socket this makes no system call.
    fn is_idle(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// One open connection to `addr`, counted while it lives.
struct OpenSlot {
    pool: Arc<PoolInner>,
    addr: SocketAddr,
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        let mut open = self.pool.open.lock();
        if let Some(n) = open.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.addr);
            }
        }
    }
}

impl Pool {
    pub fn new(max_idle_per_target: usize) -> Pool {
        Pool {
            inner: Arc::new(PoolInner {
                idle: Idle::new(),
                max_idle_per_target,
                open: Mutex::new(AddrMap::default()),
                raw_idle: Idle::new(),
            }),
        }
    }

    /// An idle connection to `addr` that is still open, if the pool has one.
    pub fn take_idle(&self, addr: SocketAddr) -> Option<Sender> {
        self.inner.idle.take(addr, Sender::is_ready)
    }

    /// A slot for one more connection to `addr`, unless `max_open` (0: no limit) are open.
    fn reserve(&self, addr: SocketAddr, max_open: usize) -> Option<OpenSlot> {
        let mut open = self.inner.open.lock();
        let n = open.entry(addr).or_default();
        if max_open > 0 && *n >= max_open {
            return None;
        }
        *n += 1;
        Some(OpenSlot {
            pool: self.inner.clone(),
            addr,
        })
    }

    /// A new TCP connection to `addr`; refused without trying when `max_open` connections
    /// to it are open already (0: no limit).
    async fn open(
        &self,
        addr: SocketAddr,
        timeout: Duration,
        max_open: usize,
    ) -> Result<(TcpStream, OpenSlot), ConnectError> {
        let slot = self
            .reserve(addr, max_open)
            .ok_or(ConnectError::AtCapacity(max_open))?;
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnectError::Timeout(timeout))??;
        let _ = stream.set_nodelay(true);
        Ok((stream, slot))
    }

    /// A new connection to `addr` for the HTTP/1 relay (see [`Pool::open`]).
    pub async fn connect_raw(
        &self,
        addr: SocketAddr,
        timeout: Duration,
        max_open: usize,
    ) -> Result<RawConn, ConnectError> {
        let (stream, slot) = self.open(addr, timeout, max_open).await?;
        Ok(RawConn {
            stream,
            _slot: slot,
        })
    }

    /// An idle relay connection to `addr` that is still open, if the pool has one.
    pub fn take_idle_raw(&self, addr: SocketAddr) -> Option<RawConn> {
        self.inner.raw_idle.take(addr, RawConn::is_idle)
    }

    /// Keeps a relay connection whose exchange ended cleanly for the next request to `addr`.
    pub fn put_raw(&self, addr: SocketAddr, conn: RawConn) {
        let max = self.inner.max_idle_per_target;
        self.inner.raw_idle.put(addr, conn, max, RawConn::is_idle);
    }

    /// A new connection to `addr`, its driver task spawned (see [`Pool::open`]).
    pub async fn connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
        max_open: usize,
    ) -> Result<Sender, ConnectError> {
        let (stream, slot) = self.open(addr, timeout, max_open).await?;
        let (inner, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ConnectError::Io(std::io::Error::other(e)))?;
        tokio::spawn(async move {
            // The connection counts against the limit until its driver ends.
            let _slot = slot;
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "upstream connection closed with error");
            }
        });
        Ok(Sender { inner })
    }

    /// Lends `sender` out for one exchange: the [`Checkin`] gives it back when dropped, which
    /// the response body does as soon as the target's response has been read to its end.
    pub fn checkin(&self, addr: SocketAddr, sender: Sender) -> Checkin {
        Checkin {
            pool: self.clone(),
            addr,
            sender: Some(sender),
        }
    }

    /// Gives `sender` back once it can carry another request; drops it if it never can.
    /// A connection that is ready now (its response read to the end) goes straight back;
    /// only one still busy needs a task to wait for it.
    pub fn recycle(&self, addr: SocketAddr, mut sender: Sender) {
        if sender.is_ready() {
            self.put(addr, sender);
            return;
        }
        if sender.is_closed() {
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                pool.put(addr, sender);
            }
        });
    }

    fn put(&self, addr: SocketAddr, sender: Sender) {
        let max = self.inner.max_idle_per_target;
        self.inner.idle.put(addr, sender, max, |s| !s.is_closed());
    }
}

/// A pooled connection out on one exchange; dropping it hands the connection back through
/// [`Pool::recycle`] (or closes it, if it can never take another request).
pub struct Checkin {
    pool: Pool,
    addr: SocketAddr,
    sender: Option<Sender>,
}

impl Drop for Checkin {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.pool.recycle(self.addr, sender);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8080))
    }

    #[test]
    fn the_most_recent_usable_connection_is_taken() {
        let idle = Idle::new();
        for id in 1..=4 {
            idle.put(addr(), id, 10, |_| true);
        }
        // 4 is gone (unusable), 3 is next.
        assert_eq!(idle.take(addr(), |&id| id != 4), Some(3));
        assert_eq!(idle.take(addr(), |_| true), Some(2));
        assert_eq!(
            idle.take(SocketAddr::from(([127, 0, 0, 1], 1)), |_| true),
            None
        );
    }

    #[test]
    fn returning_a_connection_checks_only_the_oldest_ones() {
        let idle = Idle::new();
        for id in 1..=50 {
            idle.put(addr(), id, 100, |_| true);
        }
        let checks = Cell::new(0);
        // 1 and 2 were closed by the target; 3 still works.
        idle.put(addr(), 51, 100, |&id| {
            checks.set(checks.get() + 1);
            id > 2
        });
        assert_eq!(checks.get(), 3);
        let mut left = Vec::new();
        while let Some(id) = idle.take(addr(), |_| true) {
            left.push(id);
        }
        assert_eq!(left, (3..=51).rev().collect::<Vec<_>>());
    }

    #[test]
    fn no_more_than_max_are_kept() {
        let idle = Idle::new();
        for id in 1..=5 {
            idle.put(addr(), id, 3, |_| true);
        }
        let mut left = Vec::new();
        while let Some(id) = idle.take(addr(), |_| true) {
            left.push(id);
        }
        assert_eq!(left, vec![3, 2, 1]);
    }
}
