//! The routing table: one immutable, validated snapshot of what every listener does.
//!
//! [`build`] is the only constructor; the control API and the config file both go through it,
//! and the result is swapped whole into one `ArcSwap` (see [`crate::runtime`]).

mod build;
mod host;
mod routes;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use build::{build, BuildContext, BuildError};
pub use host::{normalize_host, HostPattern, HostPatternError};
pub use routes::{Route, RouteSet};

use crate::balance::TargetGroup;
use crate::config::{Limits, Protocol, StickinessPolicy, Timeouts};
use crate::metrics::ListenerMetrics;

/// Index of a target group in [`RoutingTable::groups`].
pub type GroupId = usize;

#[derive(Debug)]
pub struct RoutingTable {
    generation: u64,
    listeners: BTreeMap<u16, Listener>,
    groups: Vec<Arc<TargetGroup>>,
    /// Every certificate the table serves: id and expiry (Unix seconds).
    certificates: Vec<(Arc<str>, i64)>,
    pub timeouts: Timeouts,
    pub limits: Limits,
}

/// One port: its protocol, the load balancer that owns it and its ordered rules.
#[derive(Debug)]
pub struct Listener {
    pub port: u16,
    pub protocol: Protocol,
    pub load_balancer: Arc<str>,
    /// `"18080/http"`: how logs and metrics name this listener.
    pub label: Arc<str>,
    pub routes: RouteSet,
    pub stickiness: Option<Arc<StickinessPolicy>>,
    pub metrics: ListenerMetrics,
    /// The TLS configuration of `https` and `tls` listeners, certificates chosen by SNI.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Listener {
    /// The rule an L4 listener (`tcp`, `tls`, `udp`) sends its connections by: the best ranked.
    pub fn stream_route(&self) -> Option<&Route> {
        self.routes.iter().next()
    }
}

impl RoutingTable {
    /// A table that serves nothing: the state before any configuration arrives.
    pub fn empty() -> RoutingTable {
        RoutingTable {
            generation: 0,
            listeners: BTreeMap::new(),
            groups: Vec::new(),
            certificates: Vec::new(),
            timeouts: Timeouts::default(),
            limits: Limits::default(),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn listener(&self, port: u16) -> Option<&Listener> {
        self.listeners.get(&port)
    }

    pub fn listeners(&self) -> impl Iterator<Item = &Listener> {
        self.listeners.values()
    }

    pub fn group(&self, id: GroupId) -> &Arc<TargetGroup> {
        &self.groups[id]
    }

    pub fn groups(&self) -> &[Arc<TargetGroup>] {
        &self.groups
    }

    /// The certificates this table serves, with their expiry (Unix seconds).
    pub fn certificates(&self) -> impl Iterator<Item = (&str, i64)> {
        self.certificates.iter().map(|(id, t)| (&**id, *t))
    }
}
