//! The bound sockets, kept in step with the routing table.
//!
//! A port is bound while some listener in the table uses it; what happens on a connection
//! (HTTP, TLS, L4) is looked up in the table per connection, so a rule change never rebinds.
//! Applying a table is two-phase: [`ListenerSet::bind_missing`] before the swap (a port that
//! cannot be bound refuses the whole table), [`ListenerSet::close_unused`] after it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::drain;
use crate::config::Protocol;
use crate::routing::RoutingTable;
use crate::runtime::Shared;

#[derive(Debug, thiserror::Error)]
#[error("cannot bind {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

struct Bound {
    signal: drain::Signal,
    task: tokio::task::JoinHandle<()>,
}

pub struct ListenerSet {
    ip: IpAddr,
    bound: BTreeMap<u16, Bound>,
}

impl ListenerSet {
    pub fn new(ip: IpAddr) -> ListenerSet {
        ListenerSet {
            ip,
            bound: BTreeMap::new(),
        }
    }

    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.bound.keys().copied()
    }

    /// Binds every port of `table` not bound yet. On failure nothing new stays bound.
    pub fn bind_missing(
        &mut self,
        table: &RoutingTable,
        shared: &Arc<Shared>,
    ) -> Result<(), BindError> {
        let mut fresh = Vec::new();
        for listener in table.listeners() {
            // TODO(udp): bind a UdpSocket and spawn `proxy::l4::serve_udp` for these; a TCP
            // socket on a udp listener's port would only accept and close connections.
            if listener.protocol == Protocol::Udp || self.bound.contains_key(&listener.port) {
                continue;
            }
            let addr = SocketAddr::new(self.ip, listener.port);
            match bind_tcp(addr) {
                Ok(socket) => fresh.push((listener.port, socket)),
                Err(source) => return Err(BindError { addr, source }),
            }
        }
        let max_conns = table.limits.max_connections_per_listener;
        for (port, socket) in fresh {
            let (signal, watch) = drain::channel();
            let task = tokio::spawn(accept_loop(socket, port, shared.clone(), watch, max_conns));
            tracing::info!(port, "listener opened");
            self.bound.insert(port, Bound { signal, task });
        }
        Ok(())
    }

    /// Stops accepting on ports `table` no longer uses and drains their connections in the
    /// background, for at most `deadline`.
    pub fn close_unused(&mut self, table: &RoutingTable, deadline: Duration) {
        let unused: Vec<u16> = self
            .bound
            .keys()
            .copied()
            // A port that became udp no longer wants its TCP socket (`bound` is TCP only).
            .filter(|port| {
                table
                    .listener(*port)
                    .map_or(true, |l| l.protocol == Protocol::Udp)
            })
            .collect();
        for port in unused {
            if let Some(bound) = self.bound.remove(&port) {
                tracing::info!(port, "listener closing");
                tokio::spawn(drain_one(port, bound, deadline));
            }
        }
    }

    /// Drains every listener (shutdown), waiting at most `deadline`.
    pub async fn drain_all(&mut self, deadline: Duration) {
        let all = std::mem::take(&mut self.bound);
        futures_util::future::join_all(
            all.into_iter()
                .map(|(port, bound)| drain_one(port, bound, deadline)),
        )
        .await;
    }
}

async fn drain_one(port: u16, bound: Bound, deadline: Duration) {
    let Bound { signal, task } = bound;
    let open = signal.watchers();
    if tokio::time::timeout(deadline, signal.drain())
        .await
        .is_err()
    {
        tracing::warn!(port, "drain deadline passed, closing remaining connections");
    }
    task.abort();
    tracing::info!(
        port,
        connections = open.saturating_sub(1),
        "listener closed"
    );
}

pub(crate) fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    // Restarts must not wait for TIME_WAIT sockets of the previous process.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// Accepts until drained. Holding a permit per connection caps them at `max_conns`: at the
/// cap, accepting pauses and the kernel backlog absorbs the burst, as HAProxy's maxconn does.
async fn accept_loop(
    socket: TcpListener,
    port: u16,
    shared: Arc<Shared>,
    watch: drain::Watch,
    max_conns: usize,
) {
    let permits = Arc::new(Semaphore::new(max_conns));
    let stop = watch.signaled();
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            () = &mut stop => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, client) = tokio::select! {
            () = &mut stop => return,
            accepted = socket.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(port, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let watch = watch.clone();
        tokio::spawn(async move {
            crate::proxy::serve(stream, client, port, shared, watch).await;
            drop(permit);
        });
    }
}
