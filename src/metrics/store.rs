//! The control-state store's gauges: which backend, how far this replica has followed it,
//! and how often its watch had to reconnect.

use std::time::Instant;

use parking_lot::Mutex;
use prometheus::{Gauge, IntCounter, IntGauge, IntGaugeVec, Opts, Registry};

use super::register;

pub struct StoreMetrics {
    info: IntGaugeVec,
    sync_revision: IntGauge,
    watch_reconnects: IntCounter,
    write_conflicts: IntCounter,
    since_sync: Gauge,
    last_sync: Mutex<Option<Instant>>,
}

impl StoreMetrics {
    pub(super) fn new(r: &Registry) -> StoreMetrics {
        StoreMetrics {
            info: register(
                r,
                IntGaugeVec::new(
                    Opts::new("corral_store_info", "The control-state store backend (1)."),
                    &["backend"],
                ),
            ),
            sync_revision: register(
                r,
                IntGauge::new(
                    "corral_store_sync_revision",
                    "Store revision this replica last synced to (etcd; 0 for file).",
                ),
            ),
            watch_reconnects: register(
                r,
                IntCounter::new(
                    "corral_store_watch_reconnects_total",
                    "Times the store watch broke and was reopened.",
                ),
            ),
            write_conflicts: register(
                r,
                IntCounter::new(
                    "corral_store_write_conflicts_total",
                    "API writes recomputed because another replica wrote first.",
                ),
            ),
            since_sync: register(
                r,
                Gauge::new(
                    "corral_store_seconds_since_last_sync",
                    "Seconds since this replica last heard from the store.",
                ),
            ),
            last_sync: Mutex::new(None),
        }
    }

    pub fn set_backend(&self, backend: &str) {
        self.info.reset();
        self.info.with_label_values(&[backend]).set(1);
    }

    /// The store answered, and this replica is current up to `revision`.
    pub fn synced(&self, revision: i64) {
        if revision > self.sync_revision.get() {
            self.sync_revision.set(revision);
        }
        *self.last_sync.lock() = Some(Instant::now());
    }

    pub fn watch_reconnect(&self) {
        self.watch_reconnects.inc();
    }

    pub fn write_conflict(&self) {
        self.write_conflicts.inc();
    }

    /// Brings the age gauge up to now (before each scrape).
    pub(super) fn refresh(&self) {
        if let Some(at) = *self.last_sync.lock() {
            self.since_sync.set(at.elapsed().as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Metrics;

    #[test]
    fn store_gauges() {
        let m = Metrics::new();
        m.store.set_backend("etcd");
        m.store.synced(41);
        m.store.synced(7);
        m.store.watch_reconnect();
        m.store.write_conflict();
        let text = m.render();
        assert!(
            text.contains(r#"corral_store_info{backend="etcd"} 1"#),
            "{text}"
        );
        assert!(text.contains("corral_store_sync_revision 41"), "{text}");
        assert!(
            text.contains("corral_store_watch_reconnects_total 1"),
            "{text}"
        );
        assert!(
            text.contains("corral_store_seconds_since_last_sync 0"),
            "{text}"
        );
    }
}
