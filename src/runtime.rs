//! The running state: the one `ArcSwap` that holds the routing table, and the one function
//! that changes it.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use std::collections::HashSet;

use crate::config::Config;
use crate::metrics::{Metrics, TargetStatus};
use crate::proxy::http::Pool;
use crate::routing::{self, BuildContext, BuildError, RoutingTable};
use crate::server::{BindError, ListenerSet};
use crate::tls::TlsContext;

/// What every connection reads: the current table and the upstream connection pool.
pub struct Shared {
    pub table: ArcSwap<RoutingTable>,
    pub pool: Pool,
    /// Read buffers of the HTTP/1 relay's requests in flight.
    pub buffers: crate::proxy::http::Buffers,
    pub metrics: Metrics,
    pub tls: TlsContext,
    /// Targets cooling off after failed requests; outside the table, so swaps keep it.
    pub passive: crate::health::PassiveHealth,
}

/// Where a configuration change came from, for `corral_config_reloads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Api,
    File,
    Store,
    /// An external service's hostname resolved to new addresses.
    Dns,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::File => "file",
            Source::Store => "store",
            Source::Dns => "dns",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// How many apply outcomes [`Runtime::reloads`] keeps.
const RELOAD_LOG: usize = 32;

/// One attempt to change the table (the status page lists them).
#[derive(Debug, Clone)]
pub struct ReloadRecord {
    /// Milliseconds since the epoch.
    pub at_ms: i64,
    pub source: Source,
    /// The generation swapped in; `None` when the change was refused.
    pub generation: Option<u64>,
    pub error: Option<String>,
}

pub struct Runtime {
    shared: Arc<Shared>,
    /// Set when shutdown starts, so `/ready` tells load balancers in front to stop sending.
    draining: std::sync::atomic::AtomicBool,
    /// The last [`RELOAD_LOG`] apply outcomes, oldest first.
    reloads: parking_lot::Mutex<VecDeque<ReloadRecord>>,
    /// Held across a whole apply, so applies are serialised and listeners match the table.
    listeners: tokio::sync::Mutex<ListenerSet>,
    /// Ports no rule may take (the control listener's).
    reserved: Vec<u16>,
}

impl Runtime {
    pub fn new(listen_ip: IpAddr, reserved: Vec<u16>) -> Runtime {
        let table = RoutingTable::empty();
        let pool = Pool::new(table.limits.upstream_idle_per_target);
        Runtime {
            shared: Arc::new(Shared {
                table: ArcSwap::from_pointee(table),
                pool,
                buffers: Default::default(),
                metrics: Metrics::new(),
                tls: TlsContext::new(),
                passive: Default::default(),
            }),
            draining: std::sync::atomic::AtomicBool::new(false),
            listeners: tokio::sync::Mutex::new(ListenerSet::new(listen_ip)),
            reserved,
            reloads: parking_lot::Mutex::new(VecDeque::with_capacity(RELOAD_LOG)),
        }
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn table(&self) -> Arc<RoutingTable> {
        self.shared.table.load_full()
    }

    /// Builds a table from `config`, binds its new ports, swaps it in and drains the ports it
    /// no longer uses. On any error the serving table and listeners are unchanged.
    pub async fn apply(
        &self,
        config: &Config,
        source: Source,
    ) -> Result<Arc<RoutingTable>, ApplyError> {
        let mut listeners = self.listeners.lock().await;
        let result = self.swap(config, &mut listeners);
        let metrics = &self.shared.metrics;
        match &result {
            Ok(table) => {
                metrics.reload(source.as_str(), true, table.generation());
                tracing::info!(
                    generation = table.generation(),
                    listeners = table.listeners().count(),
                    source = source.as_str(),
                    "routing table swapped"
                );
            }
            Err(_) => metrics.reload(source.as_str(), false, 0),
        }
        self.record_reload(ReloadRecord {
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            source,
            generation: result.as_ref().ok().map(|t| t.generation()),
            error: result.as_ref().err().map(ToString::to_string),
        });
        // A refused build may have created series; export only what the table in force has.
        self.sync_metrics(&self.shared.table.load());
        result
    }

    fn record_reload(&self, record: ReloadRecord) {
        let mut log = self.reloads.lock();
        if log.len() == RELOAD_LOG {
            log.pop_front();
        }
        log.push_back(record);
    }

    /// The recent apply outcomes, oldest first.
    pub fn reloads(&self) -> Vec<ReloadRecord> {
        self.reloads.lock().iter().cloned().collect()
    }

    fn swap(
        &self,
        config: &Config,
        listeners: &mut ListenerSet,
    ) -> Result<Arc<RoutingTable>, ApplyError> {
        let ctx = BuildContext {
            generation: self.shared.table.load().generation() + 1,
            reserved_ports: &self.reserved,
            metrics: &self.shared.metrics,
            tls: &self.shared.tls,
        };
        let table = routing::build(config, &ctx)?;
        listeners.bind_missing(&table, &self.shared)?;
        let table = Arc::new(table);
        self.shared.table.store(table.clone());
        listeners.close_unused(&table, table.timeouts.drain());
        Ok(table)
    }

    /// Sets the target gauges from `table` and drops the series of everything it lacks.
    fn sync_metrics(&self, table: &RoutingTable) {
        let metrics = &self.shared.metrics;
        let listeners: HashSet<String> = table.listeners().map(|l| l.label.to_string()).collect();
        let mut services = HashSet::new();
        let mut targets = HashSet::new();
        for group in table.groups() {
            services.insert(group.service.to_string());
            for t in group.targets() {
                let status = TargetStatus {
                    state: t.state.as_str(),
                    weight: t.weight,
                };
                metrics.set_target_status(&group.service, &t.id, status);
                targets.insert((group.service.to_string(), t.id.to_string()));
            }
        }
        metrics.retain(&listeners, &services, &targets);
        metrics.set_certificates(table.certificates());
        let ids = targets.iter().map(|(_, t)| t.as_str()).collect();
        self.shared.passive.retain(&ids);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops accepting everywhere and waits for in-flight requests, at most `deadline`.
    pub async fn drain(&self, deadline: Duration) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.listeners.lock().await.drain_all(deadline).await;
    }
}
