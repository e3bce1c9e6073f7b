//! The `udp` listener: datagrams relayed per client address (a *flow*) to a weighted target.
//!
//! A client's first datagram opens a flow: a target picked by the balancer of the listener's
//! first rule, an upstream socket connected to it, and a task relaying the target's replies
//! back to the client through the listener socket. Later datagrams from the same address go
//! to the same target until the flow is idle for [`UdpOptions::idle_timeout`] (either
//! direction counts as activity); the target is re-picked only when it leaves the current
//! table or its weight drops to 0.
//!
//! The socket loop owns the [`FlowTable`]: no lock on the datagram path. Reply tasks only mark
//! activity through an atomic.
//!
//! When the table holds [`UdpOptions::max_flows`] flows, a *new* client's datagrams are
//! dropped (counted, logged at debug at most once a second); live flows are never evicted.
//! Evicting the least recently used flow would let anyone who can send datagrams from many
//! (possibly spoofed) source addresses flush every real client out of the table, and each
//! eviction would cost a socket and a task for a flow that likely never answers. Dropping
//! keeps established flows working, and idle expiry frees room for new clients.
//!
//! The relay stops, dropping every flow, on drain or when the port leaves the table (or stops
//! being `udp`). The removal is noticed on the next datagram or sweep (at most 1 s later).

use std::collections::hash_map::{Entry, HashMap};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::balance::{Target, TargetGroup};
use crate::config::Protocol;
use crate::metrics::ListenerMetrics;
use crate::routing::{Listener, RoutingTable};
use crate::runtime::Shared;
use crate::server::drain;

/// The largest datagram relayed either way: every UDP payload fits (65,507 bytes over IPv4,
/// 65,527 over IPv6), so nothing is ever truncated.
pub const MAX_DATAGRAM: usize = 64 * 1024;

/// Pause after an unexpected socket error, so a persistent one cannot spin a task.
const ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// At most one "datagram dropped" log line per this period.
const DROP_LOG_EVERY: Duration = Duration::from_secs(1);

/// Per-listener relay settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpOptions {
    /// A flow that moved no datagram either way for this long is dropped.
    pub idle_timeout: Duration,
    /// Most flows at once; at the bound, new clients' datagrams are dropped.
    pub max_flows: usize,
}

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions {
            idle_timeout: Duration::from_secs(30),
            max_flows: 10_000,
        }
    }
}

/// Relays datagrams arriving on `socket` (the listener of `port`) until `drain` fires or the
/// port is no longer a `udp` listener in `shared.table`. Every flow ends with it.
pub async fn serve_udp(
    socket: UdpSocket,
    port: u16,
    shared: Arc<Shared>,
    drain: drain::Watch,
    options: UdpOptions,
) {
    let socket = Arc::new(socket);
    let mut relay = Relay {
        socket: socket.clone(),
        port,
        shared,
        flows: FlowTable::new(options, Instant::now()),
        drops: DropLog::default(),
        seen_listener: false,
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut sweep = tokio::time::interval(sweep_period(options.idle_timeout));
    sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let stop = drain.signaled();
    tokio::pin!(stop);
    tracing::info!(port, ?options, "udp relay started");
    let reason = loop {
        let step = tokio::select! {
            () = &mut stop => break "drain",
            _ = sweep.tick() => relay.sweep(Instant::now()),
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, client)) => relay.on_datagram(&buf[..n], client, Instant::now()),
                Err(e) => {
                    // An ICMP error for an earlier send_to (Windows reports them here).
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
                    ) {
                        tracing::warn!(port, error = %e, "udp receive failed");
                        tokio::time::sleep(ERROR_BACKOFF).await;
                    }
                    ControlFlow::Continue(())
                }
            },
        };
        if step.is_break() {
            break "listener removed";
        }
    };
    tracing::info!(
        port,
        reason,
        flows = relay.flows.len(),
        refused = relay.flows.refused(),
        "udp relay stopped"
    );
    // Dropping the relay drops every flow, which aborts its reply task.
}

/// How often idle flows are swept and the table checked for the listener's removal.
fn sweep_period(idle_timeout: Duration) -> Duration {
    (idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// The socket loop's state.
struct Relay {
    socket: Arc<UdpSocket>,
    port: u16,
    shared: Arc<Shared>,
    flows: FlowTable<Flow>,
    drops: DropLog,
    /// Whether a table in force has had this listener yet (see [`Relay::listener`]).
    seen_listener: bool,
}

impl Relay {
    /// The port's listener in `table` if it is a `udp` one; `Break` when it was removed.
    ///
    /// Ports are bound before the table that adds them is swapped in, so a relay may start
    /// while the old table is still in force: absence means removal only once the listener
    /// has been seen.
    fn listener<'t>(&mut self, table: &'t RoutingTable) -> ControlFlow<(), Option<&'t Listener>> {
        match table.listener(self.port) {
            Some(l) if l.protocol == Protocol::Udp => {
                self.seen_listener = true;
                ControlFlow::Continue(Some(l))
            }
            _ if self.seen_listener => ControlFlow::Break(()),
            _ => ControlFlow::Continue(None),
        }
    }

    /// One datagram from `client`: to its flow's target, opening the flow if needed.
    /// `Break` when the listener is gone.
    fn on_datagram(
        &mut self,
        datagram: &[u8],
        client: SocketAddr,
        now: Instant,
    ) -> ControlFlow<()> {
        let table = self.shared.table.load();
        let Some(listener) = self.listener(&table)? else {
            self.drops
                .note(self.port, client, "listener not in the table yet", now);
            return ControlFlow::Continue(());
        };
        listener.metrics.bytes_in.inc_by(datagram.len() as u64);
        // For UDP the listener's first rule in rank order decides; host and path mean nothing.
        let group = listener
            .routes
            .iter()
            .next()
            .map(|route| &**table.group(route.group));

        let mut known = false;
        if let Some(flow) = self.flows.lookup(client, now) {
            known = true;
            if flow.keeps_target(&table, group) {
                flow.forward(datagram);
                return ControlFlow::Continue(());
            }
            tracing::debug!(port = self.port, %client, target = %flow.target, "udp flow re-picked");
        }
        let Some(target) = group.and_then(|g| g.pick(|_| true)) else {
            self.drops.note(self.port, client, "no usable target", now);
            return ControlFlow::Continue(());
        };
        let socket = &self.socket;
        let opened = self.flows.insert_with(client, now, |activity| {
            Flow::open(
                client,
                target,
                table.generation(),
                socket,
                &listener.metrics,
                activity,
            )
        });
        match opened {
            Ok(flow) => {
                if !known {
                    listener.metrics.connections.inc();
                }
                target.metrics.requests.inc();
                tracing::debug!(port = self.port, %client, target = %target.id, "udp flow opened");
                flow.forward(datagram);
            }
            Err(InsertError::Full) => self.drops.note(self.port, client, "flow table full", now),
            Err(InsertError::Make(e)) => {
                target.metrics.connect_errors.inc();
                tracing::debug!(
                    port = self.port,
                    %client,
                    target = %target.id,
                    error = %e,
                    "udp upstream socket failed"
                );
                self.drops
                    .note(self.port, client, "upstream socket failed", now);
            }
        }
        ControlFlow::Continue(())
    }

    /// Periodic: drops idle flows. `Break` when the listener is gone.
    fn sweep(&mut self, now: Instant) -> ControlFlow<()> {
        self.listener(&self.shared.table.load())?;
        let expired = self.flows.expire(now);
        if expired > 0 {
            tracing::debug!(
                port = self.port,
                expired,
                flows = self.flows.len(),
                "udp flows expired"
            );
        }
        ControlFlow::Continue(())
    }
}

/// One client's relay: its target, the upstream socket connected to it, the reply task.
struct Flow {
    target: Arc<str>,
    addr: SocketAddr,
    /// The table generation `target` was last found usable in.
    checked: u64,
    upstream: Arc<UdpSocket>,
    replies: JoinHandle<()>,
    active: IntGauge,
}

impl Flow {
    fn open(
        client: SocketAddr,
        target: &Target,
        generation: u64,
        listener: &Arc<UdpSocket>,
        metrics: &ListenerMetrics,
        activity: Activity,
    ) -> io::Result<Flow> {
        let upstream = Arc::new(connect_upstream(target.addr)?);
        let replies = tokio::spawn(relay_replies(
            upstream.clone(),
            listener.clone(),
            client,
            activity,
            metrics.bytes_out.clone(),
        ));
        metrics.active.inc();
        Ok(Flow {
            target: target.id.clone(),
            addr: target.addr,
            checked: generation,
            upstream,
            replies,
            active: metrics.active.clone(),
        })
    }

    /// Whether the flow's target is still in `table`'s group for this listener with a
    /// non-zero weight. Checked once per table generation, not per datagram.
    fn keeps_target(&mut self, table: &RoutingTable, group: Option<&TargetGroup>) -> bool {
        if self.checked == table.generation() {
            return true;
        }
        let usable = group
            .and_then(|g| g.find(&self.target))
            .is_some_and(|t| t.addr == self.addr && t.weight > 0);
        if usable {
            self.checked = table.generation();
        }
        usable
    }

    /// Sends without waiting: a datagram that does not fit the socket buffer now is dropped,
    /// as the network would, so one flow never stalls the listener loop.
    fn forward(&self, datagram: &[u8]) {
        // Straight to the (non-blocking) socket rather than through tokio's readiness cache:
        // a fresh socket is not known to be writable until the reactor has turned, so
        // `try_send` would drop a new flow's first datagram.
        let socket = socket2::SockRef::from(&*self.upstream);
        let mut result = socket.send(datagram);
        if matches!(&result, Err(e) if e.kind() == io::ErrorKind::ConnectionRefused) {
            // The error was an ICMP port unreachable for an earlier datagram; this one was
            // not sent. The target may be back: try once more.
            result = socket.send(datagram);
        }
        if let Err(e) = result {
            tracing::debug!(target = %self.target, error = %e, "udp datagram to target dropped");
        }
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.replies.abort();
        self.active.dec();
    }
}

/// An unspecified-address socket of the target's family, connected to it: the kernel picks
/// the source address by route and filters out datagrams from anyone but the target.
fn connect_upstream(target: SocketAddr) -> io::Result<UdpSocket> {
    let local = match target {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let socket = std::net::UdpSocket::bind(local)?;
    socket.connect(target)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// A flow's reply side: the target's datagrams back to `client` via the listener socket.
/// Runs until the flow is dropped (which aborts it).
async fn relay_replies(
    upstream: Arc<UdpSocket>,
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    activity: Activity,
    bytes_out: IntCounter,
) {
    loop {
        if let Err(e) = upstream.readable().await {
            tracing::debug!(%client, error = %e, "udp upstream not readable");
            tokio::time::sleep(ERROR_BACKOFF).await;
            continue;
        }
        // The buffer lives only while there are datagrams to read: an idle flow holds none.
        let mut buf = Vec::with_capacity(MAX_DATAGRAM);
        loop {
            buf.clear();
            match upstream.try_recv_buf(&mut buf) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // An ICMP port unreachable for a datagram we sent: the target may come back.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => {
                    tracing::debug!(%client, error = %e, "udp receive from target failed");
                    tokio::time::sleep(ERROR_BACKOFF).await;
                    break;
                }
            }
            activity.touch(Instant::now());
            match listener.send_to(&buf, client).await {
                Ok(sent) => bytes_out.inc_by(sent as u64),
                Err(e) => tracing::debug!(%client, error = %e, "udp reply to client failed"),
            }
        }
    }
}

/// Counts dropped datagrams and logs them at debug, at most once per [`DROP_LOG_EVERY`].
#[derive(Default)]
struct DropLog {
    /// Dropped since the last log line.
    pending: u64,
    last_log: Option<Instant>,
}

impl DropLog {
    fn note(&mut self, port: u16, client: SocketAddr, reason: &'static str, now: Instant) {
        self.pending += 1;
        if self
            .last_log
            .is_some_and(|last| now.saturating_duration_since(last) < DROP_LOG_EVERY)
        {
            return;
        }
        tracing::debug!(port, %client, reason, dropped = self.pending, "udp datagrams dropped");
        self.pending = 0;
        self.last_log = Some(now);
    }
}

/// When a flow last moved a datagram, either way. The socket loop and the flow's reply task
/// share it, so replies keep a flow alive without touching the table.
#[derive(Debug, Clone)]
pub(crate) struct Activity {
    epoch: Instant,
    /// Milliseconds after `epoch`.
    last: Arc<AtomicU64>,
}

impl Activity {
    fn new(epoch: Instant, now: Instant) -> Activity {
        Activity {
            epoch,
            last: Arc::new(AtomicU64::new(millis_since(epoch, now))),
        }
    }

    pub(crate) fn touch(&self, now: Instant) {
        self.last
            .fetch_max(millis_since(self.epoch, now), Ordering::Relaxed);
    }

    fn idle(&self, now: Instant) -> Duration {
        let last = self.last.load(Ordering::Relaxed);
        Duration::from_millis(millis_since(self.epoch, now).saturating_sub(last))
    }
}

fn millis_since(epoch: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}

/// Why [`FlowTable::insert_with`] added nothing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InsertError<E> {
    /// At the bound; the table counts it in [`FlowTable::refused`].
    Full,
    /// The flow's constructor failed.
    Make(E),
}

/// Flows by client address: bounded, expiring after an idle timeout, never evicting a live
/// flow for a new one (see the module docs).
pub(crate) struct FlowTable<F> {
    flows: HashMap<SocketAddr, FlowEntry<F>>,
    idle_timeout: Duration,
    max_flows: usize,
    epoch: Instant,
    refused: u64,
}

struct FlowEntry<F> {
    flow: F,
    activity: Activity,
}

impl<F> FlowTable<F> {
    pub(crate) fn new(options: UdpOptions, now: Instant) -> FlowTable<F> {
        FlowTable {
            flows: HashMap::new(),
            idle_timeout: options.idle_timeout,
            max_flows: options.max_flows,
            epoch: now,
            refused: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.flows.len()
    }

    /// New clients turned away because the table was full, since it was created.
    pub(crate) fn refused(&self) -> u64 {
        self.refused
    }

    /// `client`'s flow, marked active at `now`; `None` if it has none or it has expired (an
    /// expired flow is dropped here, not only at the next [`FlowTable::expire`]).
    pub(crate) fn lookup(&mut self, client: SocketAddr, now: Instant) -> Option<&mut F> {
        match self.flows.entry(client) {
            Entry::Vacant(_) => None,
            Entry::Occupied(e) if e.get().activity.idle(now) >= self.idle_timeout => {
                e.remove();
                None
            }
            Entry::Occupied(e) => {
                let entry = e.into_mut();
                entry.activity.touch(now);
                Some(&mut entry.flow)
            }
        }
    }

    /// Adds a flow for `client` built by `make` from its activity handle, replacing the one
    /// it has (a re-pick, which does not count against the bound). When the table is full
    /// `make` is not called.
    pub(crate) fn insert_with<E>(
        &mut self,
        client: SocketAddr,
        now: Instant,
        make: impl FnOnce(Activity) -> Result<F, E>,
    ) -> Result<&mut F, InsertError<E>> {
        if self.flows.len() >= self.max_flows && !self.flows.contains_key(&client) {
            self.refused += 1;
            return Err(InsertError::Full);
        }
        let activity = Activity::new(self.epoch, now);
        let flow = make(activity.clone()).map_err(InsertError::Make)?;
        let entry = FlowEntry { flow, activity };
        let entry = match self.flows.entry(client) {
            Entry::Occupied(mut e) => {
                e.insert(entry);
                e.into_mut()
            }
            Entry::Vacant(e) => e.insert(entry),
        };
        Ok(&mut entry.flow)
    }

    /// Drops every flow idle for the timeout or longer; returns how many.
    pub(crate) fn expire(&mut self, now: Instant) -> usize {
        let before = self.flows.len();
        let timeout = self.idle_timeout;
        self.flows.retain(|_, e| e.activity.idle(now) < timeout);
        before - self.flows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(30);

    fn table(max_flows: usize) -> (FlowTable<&'static str>, Instant) {
        let now = Instant::now();
        let options = UdpOptions {
            idle_timeout: TIMEOUT,
            max_flows,
        };
        (FlowTable::new(options, now), now)
    }

    fn client(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn insert(
        t: &mut FlowTable<&'static str>,
        port: u16,
        now: Instant,
        flow: &'static str,
    ) -> Result<(), InsertError<()>> {
        t.insert_with(client(port), now, |_| Ok(flow)).map(|_| ())
    }

    #[test]
    fn insert_then_lookup_per_client() {
        let (mut t, now) = table(10);
        insert(&mut t, 1, now, "a").unwrap();
        insert(&mut t, 2, now, "b").unwrap();
        assert_eq!(t.lookup(client(1), now).copied(), Some("a"));
        assert_eq!(t.lookup(client(2), now).copied(), Some("b"));
        assert_eq!(t.lookup(client(3), now), None);
        assert_eq!(t.len(), 2);
        // Same address, other family or port: another flow.
        assert_eq!(t.lookup("[::1]:1".parse().unwrap(), now), None);
    }

    #[test]
    fn idle_flows_expire_and_activity_keeps_them() {
        let (mut t, now) = table(10);
        insert(&mut t, 1, now, "idle").unwrap();
        insert(&mut t, 2, now, "looked-up").unwrap();
        let mut reply_side = None;
        t.insert_with(client(3), now, |activity| {
            reply_side = Some(activity);
            Ok::<_, ()>("replied-to")
        })
        .unwrap();
        let half = now + TIMEOUT / 2;
        assert!(t.lookup(client(2), half).is_some());
        reply_side.unwrap().touch(half);

        assert_eq!(t.expire(now + TIMEOUT - Duration::from_millis(1)), 0);
        assert_eq!(t.expire(now + TIMEOUT), 1);
        assert_eq!(t.lookup(client(1), now + TIMEOUT), None);
        assert_eq!(t.len(), 2);

        // lookup itself refuses an expired flow, before any sweep.
        assert_eq!(t.lookup(client(2), half + TIMEOUT), None);
        assert_eq!(t.len(), 1);
        assert_eq!(t.expire(half + TIMEOUT), 1);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_full_table_refuses_new_clients_but_serves_live_ones() {
        let (mut t, now) = table(2);
        insert(&mut t, 1, now, "a").unwrap();
        insert(&mut t, 2, now, "b").unwrap();
        let mut called = false;
        let refused = t.insert_with(client(3), now, |_| {
            called = true;
            Ok::<_, ()>("c")
        });
        assert_eq!(refused.map(|_| ()), Err(InsertError::Full));
        assert!(!called, "no socket is made for a refused client");
        assert_eq!(t.refused(), 1);
        assert_eq!(t.lookup(client(1), now).copied(), Some("a"));
        // A re-pick for a client already in the table replaces its flow, full or not.
        insert(&mut t, 2, now, "b2").unwrap();
        assert_eq!(t.lookup(client(2), now).copied(), Some("b2"));
        assert_eq!(t.len(), 2);
        // Room again once a flow expires.
        t.lookup(client(1), now + TIMEOUT / 2);
        assert_eq!(t.expire(now + TIMEOUT), 1);
        insert(&mut t, 3, now + TIMEOUT, "c").unwrap();
        assert_eq!(t.refused(), 1);
    }

    #[test]
    fn a_failed_make_adds_nothing() {
        let (mut t, now) = table(1);
        let failed = t.insert_with(client(1), now, |_| Err::<&str, _>("bind failed"));
        assert_eq!(failed.map(|_| ()), Err(InsertError::Make("bind failed")));
        assert_eq!(t.len(), 0);
        insert(&mut t, 1, now, "a").unwrap();
    }

    #[test]
    fn sweep_period_is_bounded() {
        assert_eq!(
            sweep_period(Duration::from_secs(30)),
            Duration::from_secs(1)
        );
        assert_eq!(
            sweep_period(Duration::from_millis(200)),
            Duration::from_millis(50)
        );
        assert_eq!(sweep_period(Duration::ZERO), Duration::from_millis(10));
    }
}
