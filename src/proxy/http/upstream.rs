//! Upstream HTTP/1.1 connections, pooled per target address.
//!
//! A connection is checked out, used for one request, and given back only once hyper says it
//! can take another (response fully read, keep-alive intact). A connection that saw any error
//! ends its task, so it is closed and never handed out again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpStream;

pub type Sender = SendRequest<Incoming>;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<ConnectError> for std::io::Error {
    fn from(e: ConnectError) -> std::io::Error {
        match e {
            ConnectError::Timeout(_) => std::io::Error::new(std::io::ErrorKind::TimedOut, e),
            ConnectError::Io(e) => e,
        }
    }
}

#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    idle: Mutex<HashMap<SocketAddr, Vec<Sender>>>,
    max_idle_per_target: usize,
}

impl Pool {
    pub fn new(max_idle_per_target: usize) -> Pool {
        Pool {
            inner: Arc::new(PoolInner {
                idle: Mutex::new(HashMap::new()),
                max_idle_per_target,
            }),
        }
    }

    /// An idle connection to `addr` that is still open, if the pool has one.
    pub fn take_idle(&self, addr: SocketAddr) -> Option<Sender> {
        let mut idle = self.inner.idle.lock();
        let stack = idle.get_mut(&addr)?;
        while let Some(sender) = stack.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    /// A new connection to `addr`, its driver task spawned.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<Sender, ConnectError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnectError::Timeout(timeout))??;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ConnectError::Io(std::io::Error::other(e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "upstream connection closed with error");
            }
        });
        Ok(sender)
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
        let mut idle = self.inner.idle.lock();
        let stack = idle.entry(addr).or_default();
        stack.retain(|s| !s.is_closed());
        if stack.len() < self.inner.max_idle_per_target {
            stack.push(sender);
        }
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
