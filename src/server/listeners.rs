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

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;

use super::accept::Acceptor;
use super::drain;
use crate::config::Protocol;
use crate::proxy::l4::{serve_udp, UdpOptions};
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

/// A listener's socket kind: a port can carry a TCP and a UDP listener independently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    fn of(protocol: Protocol) -> Transport {
        if protocol == Protocol::Udp {
            Transport::Udp
        } else {
            Transport::Tcp
        }
    }
}

enum Socket {
    Tcp(Acceptor),
    Udp(UdpSocket),
}

pub struct ListenerSet {
    ip: IpAddr,
    bound: BTreeMap<(u16, Transport), Bound>,
}

impl ListenerSet {
    pub fn new(ip: IpAddr) -> ListenerSet {
        ListenerSet {
            ip,
            bound: BTreeMap::new(),
        }
    }

    /// Binds every listener of `table` not bound yet. On failure nothing new stays bound.
    pub fn bind_missing(
        &mut self,
        table: &RoutingTable,
        shared: &Arc<Shared>,
    ) -> Result<(), BindError> {
        let mut fresh = Vec::new();
        for listener in table.listeners() {
            let key = (listener.port, Transport::of(listener.protocol));
            if self.bound.contains_key(&key) {
                continue;
            }
            let addr = SocketAddr::new(self.ip, listener.port);
            let socket = match key.1 {
                Transport::Tcp => bind_std(addr).and_then(Acceptor::new).map(Socket::Tcp),
                Transport::Udp => bind_udp(addr).map(Socket::Udp),
            };
            match socket {
                Ok(socket) => fresh.push((key, socket)),
                Err(source) => return Err(BindError { addr, source }),
            }
        }
        let max_conns = table.limits.max_connections_per_listener;
        let udp = UdpOptions {
            idle_timeout: table.timeouts.udp_idle(),
            max_flows: table.limits.udp_max_flows,
        };
        for ((port, transport), socket) in fresh {
            let (signal, watch) = drain::channel();
            let shared = shared.clone();
            let task = match socket {
                Socket::Tcp(s) => tokio::spawn(accept_loop(s, port, shared, watch, max_conns)),
                Socket::Udp(s) => tokio::spawn(serve_udp(s, port, shared, watch, udp)),
            };
            tracing::info!(port, ?transport, "listener opened");
            self.bound.insert((port, transport), Bound { signal, task });
        }
        Ok(())
    }

    /// Stops listeners `table` no longer has and drains their connections in the background,
    /// for at most `deadline`.
    pub fn close_unused(&mut self, table: &RoutingTable, deadline: Duration) {
        let unused: Vec<(u16, Transport)> = self
            .bound
            .keys()
            .copied()
            .filter(|(port, transport)| {
                table
                    .listener(*port)
                    .is_none_or(|l| Transport::of(l.protocol) != *transport)
            })
            .collect();
        for key in unused {
            if let Some(bound) = self.bound.remove(&key) {
                tracing::info!(port = key.0, transport = ?key.1, "listener closing");
                tokio::spawn(drain_one(key.0, bound, deadline));
            }
        }
    }

    /// Drains every listener (shutdown), waiting at most `deadline`.
    pub async fn drain_all(&mut self, deadline: Duration) {
        let all = std::mem::take(&mut self.bound);
        futures_util::future::join_all(
            all.into_iter()
                .map(|((port, _), bound)| drain_one(port, bound, deadline)),
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

fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

pub(crate) fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::from_std(bind_std(addr)?)
}

/// A listening, non-blocking TCP socket.
fn bind_std(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    // Restarts must not wait for TIME_WAIT sockets of the previous process.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    // Linux gives accepted sockets the listener's TCP_NODELAY: set once here, not with a
    // system call per connection.
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Accepts until drained. Holding a permit per connection caps them at `max_conns`: at the
/// cap, accepting pauses and the kernel backlog absorbs the burst, as HAProxy's maxconn does.
async fn accept_loop(
    socket: Acceptor,
    port: u16,
    shared: Arc<Shared>,
    watch: drain::Watch,
    max_conns: usize,
) {
    let permits = Arc::new(Semaphore::new(max_conns));
    let stop = watch.signaled();
    tokio::pin!(stop);
    loop {
        // A free permit is taken without a wait; only a full listener waits for one.
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => tokio::select! {
                () = &mut stop => return,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => return,
                },
            },
        };
        let (stream, client) = tokio::select! {
            biased;
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
        let shared = shared.clone();
        let watch = watch.clone();
        tokio::spawn(async move {
            crate::proxy::serve(stream, client, port, shared, watch).await;
            drop(permit);
        });
    }
}
