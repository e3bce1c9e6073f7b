//! Stream proxying for `tcp`, `tls` (after termination) and `sni` (after the ClientHello):
//! bytes copied both ways, each direction closed on its own (half-close), cut when idle.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::balance::{Target, TargetGroup};
use crate::io::{Observed, Observer};
use crate::routing::{Route, RoutingTable};
use crate::server::drain;

/// Connects to a target of `route` and relays `client` to it, starting with `prefix` (bytes
/// already read from the client, e.g. a ClientHello). A target that refuses the connection is
/// left for the next one, once; then the client connection is closed.
pub async fn relay<IO>(
    mut client: IO,
    prefix: &[u8],
    table: &RoutingTable,
    route: &Route,
    drain: &drain::Watch,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let group = table.group(route.group);
    let timeouts = &table.timeouts;
    let Some((target, mut upstream)) = connect(group, timeouts.upstream_connect()).await else {
        let _ = client.shutdown().await;
        return;
    };
    target.metrics.requests.inc();
    if !prefix.is_empty() && upstream.write_all(prefix).await.is_err() {
        return;
    }
    let activity = Activity::new();
    let mut client = activity.watch(client);
    let mut upstream = activity.watch(&mut upstream);
    let drain_deadline = timeouts.drain();
    tokio::select! {
        result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = result {
                tracing::debug!(target = %target.id, error = %e, "stream ended with an error");
            }
        }
        () = activity.idle_for(timeouts.stream_idle()) => {
            tracing::debug!(target = %target.id, "stream idle, closing");
        }
        () = async { drain.signaled().await; tokio::time::sleep(drain_deadline).await } => {
            tracing::debug!(target = %target.id, "drain deadline passed, closing stream");
        }
    }
}

async fn connect(group: &TargetGroup, timeout: Duration) -> Option<(&Target, TcpStream)> {
    let first = group.pick(|_| true)?;
    match try_connect(first, timeout).await {
        Ok(stream) => return Some((first, stream)),
        Err(e) => tracing::warn!(target = %first.id, error = %e, "connect failed"),
    }
    let next = group.pick(|t| t.id != first.id)?;
    first.metrics.retries.inc();
    match try_connect(next, timeout).await {
        Ok(stream) => Some((next, stream)),
        Err(e) => {
            tracing::warn!(target = %next.id, error = %e, "connect failed; closing the client");
            None
        }
    }
}

async fn try_connect(target: &Target, timeout: Duration) -> std::io::Result<TcpStream> {
    let result = match tokio::time::timeout(timeout, TcpStream::connect(target.addr)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    };
    if result.is_err() {
        target.metrics.connect_errors.inc();
    }
    let stream = result?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// When a byte last moved in either direction.
#[derive(Clone)]
struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn watch<T>(&self, io: T) -> Observed<T, Activity> {
        Observed::new(io, self.clone())
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            if last.elapsed() >= idle {
                return;
            }
            tokio::time::sleep_until(last + idle).await;
        }
    }
}

impl Observer for Activity {
    fn on_read(&self, _bytes: usize) {
        self.touch();
    }
}
