//! Request counters sampled every [`INTERVAL`] into a bounded ring per target and per service:
//! the rates (req/s, error share over the last minute) and sparklines of the status page.
//!
//! Memory is bounded twice: each series keeps at most [`POINTS`] + 1 samples, and each tick
//! keeps only the series the routing table in force still has (at most [`MAX_SERIES`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::{Instant, MissedTickBehavior};

use crate::metrics::CODE_CLASSES;
use crate::routing::RoutingTable;
use crate::runtime::Runtime;
use crate::server::drain;

/// Time between two samples.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// Rate points a series keeps: 5 minutes at [`INTERVAL`].
pub const POINTS: usize = 150;
/// Window of the "last minute" rates.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);
/// Most series kept, whatever the table holds.
pub const MAX_SERIES: usize = 8192;

/// What one series counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// All requests routed to a service; errors are its 5xx answers.
    Service(Arc<str>),
    /// Requests sent to one target; errors are failed connections to it.
    Target { service: Arc<str>, id: Arc<str> },
}

/// Cumulative counter values at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, Copy)]
struct Point {
    /// Since the sampler started.
    at: Duration,
    counts: Counts,
}

#[derive(Debug, Default)]
struct Series {
    points: VecDeque<Point>,
}

impl Series {
    fn push(&mut self, point: Point) {
        let reset = self.points.back().is_some_and(|last| {
            point.counts.requests < last.counts.requests || point.counts.errors < last.counts.errors
        });
        if reset {
            // The series was dropped and made anew: earlier samples say nothing about it.
            self.points.clear();
        }
        if self.points.len() > POINTS {
            self.points.pop_front();
        }
        self.points.push_back(point);
    }

    fn rates(&self) -> Rates {
        let Some(last) = self.points.back() else {
            return Rates::default();
        };
        let since = last.at.saturating_sub(RATE_WINDOW);
        let base = self.points.iter().find(|p| p.at >= since).unwrap_or(last);
        let (per_second, error_rate) = rate(base, last);
        let history = self
            .points
            .iter()
            .zip(self.points.iter().skip(1))
            .map(|(a, b)| rate(a, b).0)
            .collect();
        Rates {
            per_second,
            error_rate,
            history,
        }
    }
}

/// Requests per second and error share between two samples.
fn rate(from: &Point, to: &Point) -> (f64, f64) {
    let secs = to.at.saturating_sub(from.at).as_secs_f64();
    let requests = to.counts.requests.saturating_sub(from.counts.requests);
    let errors = to.counts.errors.saturating_sub(from.counts.errors);
    let per_second = if secs > 0.0 {
        requests as f64 / secs
    } else {
        0.0
    };
    let error_rate = if requests > 0 {
        (errors as f64 / requests as f64).min(1.0)
    } else {
        0.0
    };
    (per_second, error_rate)
}

/// What a series says now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rates {
    /// Over the last minute (or since the series began, if later).
    pub per_second: f64,
    pub error_rate: f64,
    /// Requests per second of each interval, oldest first; at most [`POINTS`].
    pub history: Vec<f64>,
}

#[derive(Debug, Default)]
pub struct Sampler {
    series: Mutex<HashMap<Key, Series>>,
}

impl Sampler {
    pub fn new() -> Sampler {
        Sampler::default()
    }

    /// Records one sample of every series in `counts`; series not in it are dropped.
    pub fn record(&self, at: Duration, counts: impl IntoIterator<Item = (Key, Counts)>) {
        let mut series = self.series.lock();
        let mut old = std::mem::take(&mut *series);
        for (key, counts) in counts {
            if series.len() >= MAX_SERIES {
                break;
            }
            let mut s = old.remove(&key).unwrap_or_default();
            s.push(Point { at, counts });
            series.insert(key, s);
        }
    }

    pub fn rates(&self, key: &Key) -> Rates {
        self.series
            .lock()
            .get(key)
            .map(Series::rates)
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.series.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The counters of every service and target of `table`, each once.
pub fn counts(table: &RoutingTable) -> HashMap<Key, Counts> {
    let mut out = HashMap::new();
    let server_errors = CODE_CLASSES.len() - 1;
    for group in table.groups() {
        out.entry(Key::Service(group.service.clone()))
            .or_insert_with(|| Counts {
                requests: group.metrics.requests.iter().map(|c| c.get()).sum(),
                errors: group.metrics.requests[server_errors].get(),
            });
        for t in group.targets() {
            let key = Key::Target {
                service: group.service.clone(),
                id: t.id.clone(),
            };
            out.entry(key).or_insert_with(|| Counts {
                requests: t.metrics.requests.get(),
                errors: t.metrics.connect_errors.get(),
            });
        }
    }
    out
}

/// Samples the table in force every [`INTERVAL`] until `drain` fires.
pub async fn run(sampler: Arc<Sampler>, runtime: Arc<Runtime>, drain: drain::Watch) {
    let start = Instant::now();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let stop = drain.signaled();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => sampler.record(start.elapsed(), counts(&runtime.table())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> Key {
        Key::Target {
            service: "web".into(),
            id: id.into(),
        }
    }

    fn at(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn counts(requests: u64, errors: u64) -> Counts {
        Counts { requests, errors }
    }

    #[test]
    fn rates_over_the_last_minute() {
        let s = Sampler::new();
        // 10 req/s with 1 error in 10 for 2 minutes, then nothing for the last minute.
        let mut req = 0;
        for i in 0..=90u64 {
            if i <= 60 {
                req = i * 2 * 10;
            }
            s.record(at(i * 2), [(key("a"), counts(req, req / 10))]);
        }
        let r = s.rates(&key("a"));
        assert_eq!(r.per_second, 0.0);
        assert_eq!(r.history.len(), 90);
        assert_eq!(r.history[0], 10.0);
        assert_eq!(*r.history.last().unwrap(), 0.0);

        let s = Sampler::new();
        for i in 0..=40u64 {
            s.record(at(i * 2), [(key("a"), counts(i * 2 * 5, i))]);
        }
        let r = s.rates(&key("a"));
        assert!((r.per_second - 5.0).abs() < 1e-9, "{r:?}");
        assert!((r.error_rate - 0.1).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn one_sample_has_no_rate() {
        let s = Sampler::new();
        s.record(at(0), [(key("a"), counts(100, 0))]);
        assert_eq!(s.rates(&key("a")), Rates::default());
        assert_eq!(s.rates(&key("nope")), Rates::default());
    }

    #[test]
    fn history_is_bounded_to_five_minutes() {
        let s = Sampler::new();
        for i in 0..1000u64 {
            s.record(at(i * 2), [(key("a"), counts(i, 0))]);
        }
        let r = s.rates(&key("a"));
        assert_eq!(r.history.len(), POINTS);
        assert!((r.per_second - 0.5).abs() < 1e-9);
    }

    #[test]
    fn gone_targets_are_dropped_and_resets_restart_the_series() {
        let s = Sampler::new();
        s.record(at(0), [(key("a"), counts(0, 0)), (key("b"), counts(0, 0))]);
        s.record(at(2), [(key("a"), counts(10, 0)), (key("b"), counts(4, 0))]);
        assert_eq!(s.len(), 2);
        s.record(at(4), [(key("a"), counts(20, 0))]);
        assert_eq!(s.len(), 1);
        assert_eq!(s.rates(&key("b")), Rates::default());
        // A counter that went backwards was removed and made anew.
        s.record(at(6), [(key("a"), counts(3, 0))]);
        assert_eq!(s.rates(&key("a")).history.len(), 0);
        s.record(at(8), [(key("a"), counts(7, 0))]);
        assert_eq!(s.rates(&key("a")).per_second, 2.0);
    }

    #[test]
    fn series_count_is_capped() {
        let s = Sampler::new();
        let many = (0..MAX_SERIES + 100).map(|i| (key(&i.to_string()), counts(0, 0)));
        s.record(at(0), many);
        assert_eq!(s.len(), MAX_SERIES);
    }
}
