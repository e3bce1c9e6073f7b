//! Passive health: targets that fail requests are taken out for a while.
//!
//! A connect failure or a connection reset before the response counts against a target;
//! `threshold` consecutive ones (default 3) start a cool-off (default 10 s, doubled for each
//! trip in a row, at most 5 min; see [`PassiveHealth::configure`]). When the cool-off ends the
//! target gets traffic again: one success clears its record, one failure sends it back for
//! twice as long.
//!
//! This is runtime state, outside the immutable routing table (a swap keeps it), keyed by
//! target id. Healthy targets have no entry, so with no failures the data path pays one
//! atomic load per check.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::time::Instant;

use crate::balance::Target;

pub const DEFAULT_THRESHOLD: u32 = 3;
pub const DEFAULT_COOL_OFF: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_COOL_OFF: Duration = Duration::from_secs(300);

#[derive(Debug)]
pub struct PassiveHealth {
    entries: RwLock<HashMap<Arc<str>, Entry>>,
    /// `entries.len()`, readable without the lock.
    len: AtomicUsize,
    params: parking_lot::Mutex<Params>,
}

#[derive(Debug, Clone, Copy)]
struct Params {
    /// Consecutive failures that start a cool-off.
    threshold: u32,
    /// The first cool-off; each trip in a row doubles it.
    base: Duration,
    max: Duration,
}

#[derive(Debug, Default)]
struct Entry {
    failures: u32,
    /// Trips in a row without a success in between.
    trips: u32,
    until: Option<Instant>,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        PassiveHealth::new(DEFAULT_THRESHOLD, DEFAULT_COOL_OFF, DEFAULT_MAX_COOL_OFF)
    }
}

impl PassiveHealth {
    pub fn new(threshold: u32, base: Duration, max: Duration) -> PassiveHealth {
        PassiveHealth {
            entries: RwLock::new(HashMap::new()),
            len: AtomicUsize::new(0),
            params: parking_lot::Mutex::new(Params {
                threshold: threshold.max(1),
                base,
                max,
            }),
        }
    }

    /// Changes the threshold and cool-offs (tests and tuning); records in force are kept.
    pub fn configure(&self, threshold: u32, base: Duration, max: Duration) {
        *self.params.lock() = Params {
            threshold: threshold.max(1),
            base,
            max,
        };
    }

    /// Whether `target` may get traffic now (not cooling off).
    pub fn usable(&self, target: &Target) -> bool {
        if self.len.load(Ordering::Acquire) == 0 {
            return true;
        }
        let entries = self.entries.read();
        match entries.get(&*target.id).and_then(|e| e.until) {
            Some(until) => Instant::now() >= until,
            None => true,
        }
    }

    /// Records a failed attempt; returns the cool-off it started, if any.
    pub fn failure(&self, target: &Target) -> Option<Duration> {
        let params = *self.params.lock();
        let mut entries = self.entries.write();
        let entry = entries.entry(target.id.clone()).or_default();
        let now = Instant::now();
        if entry.until.is_some_and(|u| now < u) {
            // Already out: in-flight requests failing too change nothing.
            return None;
        }
        entry.failures += 1;
        let threshold = if entry.trips > 0 { 1 } else { params.threshold };
        let cool_off = (entry.failures >= threshold).then(|| {
            let factor = 1u32.checked_shl(entry.trips.min(16)).unwrap_or(u32::MAX);
            let cool_off = params.base.saturating_mul(factor).min(params.max);
            entry.trips = entry.trips.saturating_add(1);
            entry.failures = 0;
            entry.until = Some(now + cool_off);
            cool_off
        });
        self.len.store(entries.len(), Ordering::Release);
        if let Some(d) = cool_off {
            tracing::warn!(target = %target.id, cool_off = ?d, "target failing: taken out for a cool-off");
        }
        cool_off
    }

    /// Records a successful exchange: the target's record is cleared (unless it is cooling off,
    /// which only a request started before the trip can report).
    pub fn success(&self, target: &Target) {
        if self.len.load(Ordering::Acquire) == 0 {
            return;
        }
        if !self.entries.read().contains_key(&*target.id) {
            return;
        }
        let mut entries = self.entries.write();
        let now = Instant::now();
        if let Some(e) = entries.get(&*target.id) {
            if e.until.is_some_and(|u| now < u) {
                return;
            }
            if e.trips > 0 {
                tracing::info!(target = %target.id, "target answering again after its cool-off");
            }
            entries.remove(&*target.id);
        }
        self.len.store(entries.len(), Ordering::Release);
    }

    /// Forgets targets that are not in `ids` (called after a table swap).
    pub fn retain(&self, ids: &HashSet<&str>) {
        if self.len.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut entries = self.entries.write();
        entries.retain(|id, _| ids.contains(&**id));
        self.len.store(entries.len(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::TargetState;

    fn target(id: &str) -> Target {
        let m = crate::metrics::Metrics::new();
        Target {
            id: id.into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            weight: 1,
            state: TargetState::Passing,
            metrics: m.target("s", id),
            cookie: crate::sticky::CookieId::of(id),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn trips_after_threshold_backs_off_and_recovers() {
        let p = PassiveHealth::new(3, Duration::from_secs(10), Duration::from_secs(25));
        let t = target("a");
        let other = target("b");
        assert_eq!(p.failure(&t), None);
        p.success(&t);
        assert_eq!(p.failure(&t), None);
        assert_eq!(p.failure(&t), None);
        assert_eq!(p.failure(&t), Some(Duration::from_secs(10)));
        assert!(!p.usable(&t));
        assert!(p.usable(&other));
        // A success reported by an older request does not bring it back early.
        p.success(&t);
        assert!(!p.usable(&t));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(p.usable(&t));
        // On probation: one failure sends it back, for twice as long, capped.
        assert_eq!(p.failure(&t), Some(Duration::from_secs(20)));
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(p.failure(&t), Some(Duration::from_secs(25)));
        tokio::time::advance(Duration::from_secs(25)).await;
        p.success(&t);
        assert_eq!(p.len.load(Ordering::Relaxed), 0);
        assert_eq!(p.failure(&t), None, "a success resets the back-off");
        p.retain(&HashSet::new());
        assert_eq!(p.len.load(Ordering::Relaxed), 0);
    }
}
