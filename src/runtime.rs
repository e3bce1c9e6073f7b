//! The running state: the one `ArcSwap` that holds the routing table, and the one function
//! that changes it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::proxy::http::Pool;
use crate::routing::{self, BuildError, RoutingTable};
use crate::server::{BindError, ListenerSet};

/// What every connection reads: the current table and the upstream connection pool.
pub struct Shared {
    pub table: ArcSwap<RoutingTable>,
    pub pool: Pool,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Bind(#[from] BindError),
}

pub struct Runtime {
    shared: Arc<Shared>,
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
            }),
            listeners: tokio::sync::Mutex::new(ListenerSet::new(listen_ip)),
            reserved,
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
    pub async fn apply(&self, config: &Config) -> Result<Arc<RoutingTable>, ApplyError> {
        let mut listeners = self.listeners.lock().await;
        let generation = self.shared.table.load().generation() + 1;
        let table = routing::build(config, generation, &self.reserved)?;
        listeners.bind_missing(&table, &self.shared)?;
        let table = Arc::new(table);
        self.shared.table.store(table.clone());
        listeners.close_unused(&table, table.timeouts.drain());
        tracing::info!(
            generation,
            listeners = table.listeners().count(),
            "routing table swapped"
        );
        Ok(table)
    }

    /// Stops accepting everywhere and waits for in-flight requests, at most `deadline`.
    pub async fn drain(&self, deadline: Duration) {
        self.listeners.lock().await.drain_all(deadline).await;
    }
}
