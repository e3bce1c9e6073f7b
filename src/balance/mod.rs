//! Weighted target selection: nginx's smooth weighted round-robin, precomputed.
//!
//! The schedule (the order SWRR would pick targets in over one full cycle) is computed when
//! the routing table is built, so a pick on the hot path is one atomic increment and an index:
//! no lock, no per-request arithmetic over all targets.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::metrics::{ServiceMetrics, TargetMetrics};

/// Longest schedule kept; groups whose reduced weights sum to more are scaled down to it
/// (relative error well under 1% for the weights Consul allows).
const MAX_SCHEDULE: u64 = 16_384;

/// One backend address of a target group.
#[derive(Debug, Clone)]
pub struct Target {
    /// Stable identity (the Consul service ID): metrics label, sticky cookie source.
    pub id: Arc<str>,
    pub addr: SocketAddr,
    /// Weight in force now (Consul's Passing/Warning weight, 0 when not usable).
    pub weight: u32,
    pub state: TargetState,
    pub metrics: TargetMetrics,
    /// The id sticky cookies carry: a hash of `id`, computed once per build.
    pub cookie: crate::sticky::CookieId,
}

/// An instance's health as the balancer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetState {
    Passing,
    Warning,
    Critical,
    Maintenance,
}

impl TargetState {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Passing => "passing",
            TargetState::Warning => "warning",
            TargetState::Critical => "critical",
            TargetState::Maintenance => "maintenance",
        }
    }
}

/// The targets of one (service, port) and the precomputed SWRR schedule over them.
#[derive(Debug)]
pub struct TargetGroup {
    pub service: Arc<str>,
    pub metrics: ServiceMetrics,
    targets: Box<[Target]>,
    schedule: Box<[u32]>,
    cursor: AtomicUsize,
}

impl TargetGroup {
    pub fn new(service: Arc<str>, targets: Vec<Target>, metrics: ServiceMetrics) -> TargetGroup {
        let schedule = smooth_weighted_schedule(&targets);
        TargetGroup {
            service,
            metrics,
            targets: targets.into_boxed_slice(),
            schedule,
            cursor: AtomicUsize::new(0),
        }
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Whether any target may get traffic at all.
    pub fn has_usable(&self) -> bool {
        !self.schedule.is_empty()
    }

    /// The next target in weighted order that `accept` allows. When the scheduled one is
    /// refused, the other weighted targets are tried in turn, each at most once.
    pub fn pick(&self, mut accept: impl FnMut(&Target) -> bool) -> Option<&Target> {
        if self.schedule.is_empty() {
            return None;
        }
        let slot = self.cursor.fetch_add(1, Ordering::Relaxed) % self.schedule.len();
        let first = self.schedule[slot] as usize;
        let n = self.targets.len();
        (0..n)
            .map(|k| &self.targets[(first + k) % n])
            .find(|t| t.weight > 0 && accept(t))
    }

    pub fn find(&self, id: &str) -> Option<&Target> {
        self.targets.iter().find(|t| &*t.id == id)
    }
}

/// nginx's smooth weighted round-robin run for one full cycle: each round every target gains
/// its weight, the richest is picked and pays the total. Spreads picks evenly (5,1,1 gives
/// a a b a c a a, not a a a a a b c).
fn smooth_weighted_schedule(targets: &[Target]) -> Box<[u32]> {
    let weights = reduced_weights(targets);
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += w;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        schedule.push(best as u32);
    }
    schedule.into_boxed_slice()
}

/// Weights divided by their gcd and scaled so the cycle stays short; non-zero stays non-zero.
fn reduced_weights(targets: &[Target]) -> Vec<i64> {
    let g = targets
        .iter()
        .fold(0u64, |g, t| gcd(g, u64::from(t.weight)));
    if g == 0 {
        return vec![0; targets.len()];
    }
    let total: u64 = targets.iter().map(|t| u64::from(t.weight) / g).sum();
    targets
        .iter()
        .map(|t| {
            let w = u64::from(t.weight) / g;
            let scaled = if total > MAX_SCHEDULE {
                (w * MAX_SCHEDULE / total).max(u64::from(w > 0))
            } else {
                w
            };
            scaled as i64
        })
        .collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(weights: &[u32]) -> TargetGroup {
        let metrics = crate::metrics::Metrics::new();
        let targets = weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Target {
                id: format!("t{i}").into(),
                addr: SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
                weight,
                state: TargetState::Passing,
                metrics: metrics.target("svc", &format!("t{i}")),
                cookie: crate::sticky::CookieId::of(&format!("t{i}")),
            })
            .collect();
        TargetGroup::new("svc".into(), targets, metrics.service("svc"))
    }

    fn shares(g: &TargetGroup, n: usize) -> Vec<usize> {
        let mut counts = vec![0; g.targets().len()];
        for _ in 0..n {
            let t = g.pick(|_| true).unwrap();
            counts[g.targets().iter().position(|x| x.id == t.id).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn smooth_order_matches_nginx() {
        let g = group(&[5, 1, 1]);
        let order: Vec<_> = (0..7)
            .map(|_| g.pick(|_| true).unwrap().id.to_string())
            .collect();
        assert_eq!(order, ["t0", "t0", "t1", "t0", "t2", "t0", "t0"]);
    }

    #[test]
    fn distribution_follows_weights_and_zero_gets_nothing() {
        let g = group(&[3, 1, 0, 6]);
        assert_eq!(shares(&g, 10_000), vec![3000, 1000, 0, 6000]);
    }

    #[test]
    fn large_weights_are_scaled_within_one_percent() {
        let g = group(&[65_535, 1, 30_000]);
        let s = shares(&g, 100_000);
        let want = [65_535.0 / 95_536.0, 1.0 / 95_536.0, 30_000.0 / 95_536.0];
        for (got, want) in s.iter().zip(want) {
            assert!((*got as f64 / 100_000.0 - want).abs() < 0.01, "{s:?}");
        }
        assert!(s[1] > 0, "a non-zero weight keeps some traffic");
    }

    #[test]
    fn refused_targets_fall_through_to_the_next() {
        let g = group(&[1, 1, 1]);
        for _ in 0..30 {
            assert_ne!(&*g.pick(|t| &*t.id != "t1").unwrap().id, "t1");
        }
        assert!(g.pick(|_| false).is_none());
        assert!(group(&[0, 0]).pick(|_| true).is_none());
    }
}
