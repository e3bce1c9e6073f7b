//! Stream proxying for `tcp`, `tls` (after termination) and `sni` (after the ClientHello):
//! bytes copied both ways, each direction closed on its own (half-close), cut when idle.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::balance::{Target, TargetGroup};
use crate::io::Activity;
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
