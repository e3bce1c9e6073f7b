//! Prometheus metrics, named as in `shared/METRICS.md`.
//!
//! The counters live here, outside the routing snapshot, so a table swap never resets them.
//! The table holds pre-resolved handles (`ListenerMetrics`, `ServiceMetrics`,
//! `TargetMetrics`) so the request path never hashes label values; a swap removes the series
//! of listeners and targets that are gone.

mod io;
mod store;

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use io::{counting, CountingIo};
pub use store::StoreMetrics;

/// 0.5 ms to 10 s.
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
pub const TARGET_STATES: [&str; 4] = ["passing", "warning", "critical", "maintenance"];

/// The index of a status code's class in [`CODE_CLASSES`].
pub fn code_class(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

pub struct Metrics {
    registry: Registry,
    listener_connections: IntCounterVec,
    listener_active: IntGaugeVec,
    listener_requests: IntCounterVec,
    listener_bytes_in: IntCounterVec,
    listener_bytes_out: IntCounterVec,
    tls_handshakes: IntCounterVec,
    service_requests: IntCounterVec,
    service_duration: HistogramVec,
    target_requests: IntCounterVec,
    target_up: IntGaugeVec,
    target_weight: IntGaugeVec,
    target_state: IntGaugeVec,
    target_connect_errors: IntCounterVec,
    target_timeouts: IntCounterVec,
    target_retries: IntCounterVec,
    pub target_health_check_failures: IntCounterVec,
    pub sticky: IntCounterVec,
    pub config_generation: IntGauge,
    config_reloads: IntCounterVec,
    config_last_success: Gauge,
    pub certificate_not_after: GaugeVec,
    control_requests: IntCounterVec,
    pub store: StoreMetrics,
    /// Label sets currently exported, so a swap can remove what is gone.
    live: Mutex<LiveSeries>,
}

#[derive(Default)]
struct LiveSeries {
    listeners: HashSet<String>,
    services: HashSet<String>,
    targets: HashSet<(String, String)>,
}

/// Handles for one listener.
#[derive(Debug, Clone)]
pub struct ListenerMetrics {
    pub connections: IntCounter,
    pub active: IntGauge,
    pub requests: [IntCounter; 5],
    pub bytes_in: IntCounter,
    pub bytes_out: IntCounter,
    pub tls_ok: IntCounter,
    pub tls_resumed: IntCounter,
    pub tls_failed: IntCounter,
}

/// Handles for one service (a target group's service name).
#[derive(Debug, Clone)]
pub struct ServiceMetrics {
    pub requests: [IntCounter; 5],
    pub duration: Histogram,
}

/// Handles for one target of a service.
#[derive(Debug, Clone)]
pub struct TargetMetrics {
    pub requests: IntCounter,
    pub connect_errors: IntCounter,
    pub timeouts: IntCounter,
    pub retries: IntCounter,
}

/// How a target stands, for the `up`/`weight`/`state` gauges.
#[derive(Debug, Clone, Copy)]
pub struct TargetStatus<'a> {
    pub state: &'a str,
    pub weight: u32,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(registry, IntGaugeVec::new(Opts::new(name, help), labels))
}

/// Registers a collector whose definition is a compile-time constant of this module.
fn register<C: Collector + Clone + 'static>(registry: &Registry, made: prometheus::Result<C>) -> C {
    let collector = made.unwrap_or_else(|e| panic!("invalid metric definition: {e}"));
    registry
        .register(Box::new(collector.clone()))
        .unwrap_or_else(|e| panic!("duplicate metric definition: {e}"));
    collector
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let l = &["listener"];
        let st = &["service", "target"];
        let m = Metrics {
            listener_connections: counter(
                &r,
                "corral_listener_connections_total",
                "Client connections accepted.",
                l,
            ),
            listener_active: gauge(
                &r,
                "corral_listener_active_connections",
                "Client connections open now.",
                l,
            ),
            listener_requests: counter(
                &r,
                "corral_listener_requests_total",
                "Requests answered, by status class.",
                &["listener", "code_class"],
            ),
            listener_bytes_in: counter(
                &r,
                "corral_listener_bytes_in_total",
                "Bytes received from clients.",
                l,
            ),
            listener_bytes_out: counter(
                &r,
                "corral_listener_bytes_out_total",
                "Bytes sent to clients.",
                l,
            ),
            tls_handshakes: counter(
                &r,
                "corral_tls_handshakes_total",
                "TLS handshakes by result.",
                &["listener", "result"],
            ),
            service_requests: counter(
                &r,
                "corral_service_requests_total",
                "Requests routed to a service, by status class.",
                &["service", "code_class"],
            ),
            service_duration: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "corral_service_request_duration_seconds",
                        "Request duration, first byte in to last byte out.",
                    )
                    .buckets(DURATION_BUCKETS.to_vec()),
                    &["service"],
                ),
            ),
            target_requests: counter(
                &r,
                "corral_target_requests_total",
                "Requests sent to a target.",
                st,
            ),
            target_up: gauge(
                &r,
                "corral_target_up",
                "1 if the target may get traffic.",
                st,
            ),
            target_weight: gauge(&r, "corral_target_weight", "Effective weight now.", st),
            target_state: gauge(
                &r,
                "corral_target_state",
                "Health state, one-hot.",
                &["service", "target", "state"],
            ),
            target_connect_errors: counter(
                &r,
                "corral_target_connect_errors_total",
                "Failed connections to a target.",
                st,
            ),
            target_timeouts: counter(
                &r,
                "corral_target_timeouts_total",
                "Requests whose response head did not come in time.",
                st,
            ),
            target_retries: counter(
                &r,
                "corral_target_retries_total",
                "Requests retried away from a target.",
                st,
            ),
            target_health_check_failures: counter(
                &r,
                "corral_target_health_check_failures_total",
                "Failed health probes.",
                st,
            ),
            sticky: counter(
                &r,
                "corral_sticky_total",
                "Sticky-cookie decisions.",
                &["service", "result"],
            ),
            config_generation: register(
                &r,
                IntGauge::new(
                    "corral_config_generation",
                    "Generation of the routing table in force.",
                ),
            ),
            config_reloads: counter(
                &r,
                "corral_config_reloads_total",
                "Configuration changes by source and result.",
                &["source", "result"],
            ),
            config_last_success: register(
                &r,
                Gauge::new(
                    "corral_config_last_reload_success_timestamp_seconds",
                    "When the last table was swapped in.",
                ),
            ),
            certificate_not_after: register(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "corral_tls_certificate_not_after_timestamp_seconds",
                        "Certificate expiry.",
                    ),
                    &["certificate"],
                ),
            ),
            control_requests: counter(
                &r,
                "corral_control_requests_total",
                "Control API requests.",
                &["api", "method", "code_class"],
            ),
            store: StoreMetrics::new(&r),
            registry: r,
            live: Mutex::new(LiveSeries::default()),
        };
        let build = gauge(
            &m.registry,
            "corral_build_info",
            "Build information.",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        m
    }

    pub fn listener(&self, label: &str) -> ListenerMetrics {
        self.live.lock().listeners.insert(label.to_string());
        let tls = |result| self.tls_handshakes.with_label_values(&[label, result]);
        ListenerMetrics {
            connections: self.listener_connections.with_label_values(&[label]),
            active: self.listener_active.with_label_values(&[label]),
            requests: CODE_CLASSES
                .map(|class| self.listener_requests.with_label_values(&[label, class])),
            bytes_in: self.listener_bytes_in.with_label_values(&[label]),
            bytes_out: self.listener_bytes_out.with_label_values(&[label]),
            tls_ok: tls("ok"),
            tls_resumed: tls("resumed"),
            tls_failed: tls("failed"),
        }
    }

    pub fn service(&self, service: &str) -> ServiceMetrics {
        self.live.lock().services.insert(service.to_string());
        ServiceMetrics {
            requests: CODE_CLASSES
                .map(|class| self.service_requests.with_label_values(&[service, class])),
            duration: self.service_duration.with_label_values(&[service]),
        }
    }

    pub fn target(&self, service: &str, target: &str) -> TargetMetrics {
        self.live
            .lock()
            .targets
            .insert((service.to_string(), target.to_string()));
        let labels = [service, target];
        TargetMetrics {
            requests: self.target_requests.with_label_values(&labels),
            connect_errors: self.target_connect_errors.with_label_values(&labels),
            timeouts: self.target_timeouts.with_label_values(&labels),
            retries: self.target_retries.with_label_values(&labels),
        }
    }

    /// `corral_sticky_total` handles of one service.
    pub fn sticky_handles(&self, service: &str) -> crate::sticky::StickyMetrics {
        self.live.lock().services.insert(service.to_string());
        let result = |r| self.sticky.with_label_values(&[service, r]);
        crate::sticky::StickyMetrics {
            hit: result("hit"),
            miss: result("miss"),
            redispatch: result("redispatch"),
        }
    }

    /// Sets a target's `up`/`weight`/`state` gauges (for the table in force only).
    pub fn set_target_status(&self, service: &str, target: &str, status: TargetStatus<'_>) {
        let labels = [service, target];
        self.target_up
            .with_label_values(&labels)
            .set(i64::from(status.weight > 0));
        self.target_weight
            .with_label_values(&labels)
            .set(i64::from(status.weight));
        for state in TARGET_STATES {
            self.target_state
                .with_label_values(&[service, target, state])
                .set(i64::from(state == status.state));
        }
    }

    /// Removes the series of listeners, services and targets not in the given sets: called
    /// after a swap with what the new table uses.
    pub fn retain(
        &self,
        listeners: &HashSet<String>,
        services: &HashSet<String>,
        targets: &HashSet<(String, String)>,
    ) {
        let mut live = self.live.lock();
        for gone in live.listeners.difference(listeners) {
            let _ = self.listener_connections.remove_label_values(&[gone]);
            let _ = self.listener_active.remove_label_values(&[gone]);
            let _ = self.listener_bytes_in.remove_label_values(&[gone]);
            let _ = self.listener_bytes_out.remove_label_values(&[gone]);
            for class in CODE_CLASSES {
                let _ = self.listener_requests.remove_label_values(&[gone, class]);
            }
            for result in ["ok", "resumed", "failed"] {
                let _ = self.tls_handshakes.remove_label_values(&[gone, result]);
            }
        }
        for gone in live.services.difference(services) {
            let _ = self.service_duration.remove_label_values(&[gone]);
            for class in CODE_CLASSES {
                let _ = self.service_requests.remove_label_values(&[gone, class]);
            }
            for result in ["hit", "miss", "redispatch"] {
                let _ = self.sticky.remove_label_values(&[gone, result]);
            }
        }
        for (service, target) in live.targets.difference(targets) {
            let labels = [service.as_str(), target.as_str()];
            for vec in [
                &self.target_requests,
                &self.target_connect_errors,
                &self.target_timeouts,
                &self.target_retries,
                &self.target_health_check_failures,
            ] {
                let _ = vec.remove_label_values(&labels);
            }
            let _ = self.target_up.remove_label_values(&labels);
            let _ = self.target_weight.remove_label_values(&labels);
            for state in TARGET_STATES {
                let _ = self
                    .target_state
                    .remove_label_values(&[service, target, state]);
            }
        }
        live.listeners.clone_from(listeners);
        live.services.clone_from(services);
        live.targets.clone_from(targets);
    }

    /// Exports the expiry of exactly these certificates (id, not-after in Unix seconds).
    pub fn set_certificates<'a>(&self, certs: impl Iterator<Item = (&'a str, i64)>) {
        self.certificate_not_after.reset();
        for (id, not_after) in certs {
            self.certificate_not_after
                .with_label_values(&[id])
                .set(not_after as f64);
        }
    }

    /// Records a configuration change attempt (`source`: api, file, store).
    pub fn reload(&self, source: &str, ok: bool, generation: u64) {
        self.config_reloads
            .with_label_values(&[source, if ok { "ok" } else { "refused" }])
            .inc();
        if ok {
            self.config_generation.set(generation as i64);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.config_last_success.set(now);
        }
    }

    pub fn control_request(&self, api: &str, method: &http::Method, status: u16) {
        let method = match *method {
            http::Method::GET => "GET",
            http::Method::PUT => "PUT",
            http::Method::POST => "POST",
            http::Method::DELETE => "DELETE",
            _ => "OTHER",
        };
        self.control_requests
            .with_label_values(&[api, method, CODE_CLASSES[code_class(status)]])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.store.refresh();
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_share_counters_and_gone_series_are_removed() {
        let m = Metrics::new();
        m.listener("80/http").requests[1].inc();
        m.listener("80/http").requests[1].inc();
        m.target("web", "web-1").requests.inc();
        let status = TargetStatus {
            state: "passing",
            weight: 3,
        };
        m.set_target_status("web", "web-1", status);
        let text = m.render();
        assert!(
            text.contains(
                r#"corral_listener_requests_total{code_class="2xx",listener="80/http"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"corral_target_weight{service="web",target="web-1"} 3"#));
        assert!(
            text.contains(r#"corral_target_state{service="web",state="passing",target="web-1"} 1"#)
        );
        m.retain(&HashSet::new(), &HashSet::new(), &HashSet::new());
        let text = m.render();
        assert!(!text.contains("80/http"), "{text}");
        assert!(!text.contains("web-1"), "{text}");
        assert!(text.contains("corral_build_info"));
    }

    #[test]
    fn code_classes() {
        assert_eq!(CODE_CLASSES[code_class(204)], "2xx");
        assert_eq!(CODE_CLASSES[code_class(503)], "5xx");
        assert_eq!(CODE_CLASSES[code_class(99)], "1xx");
        assert_eq!(CODE_CLASSES[code_class(700)], "5xx");
    }
}
