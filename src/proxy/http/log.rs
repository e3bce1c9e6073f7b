//! The end of a request: one access log line and the request metrics, written when the
//! response body is finished (so they carry the byte count and the full duration).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, StatusCode, Uri};
use prometheus::IntCounter;

use crate::metrics::code_class;
use crate::routing::{GroupId, RoutingTable};

#[derive(Debug)]
pub struct AccessLog {
    pub start: Instant,
    pub client: SocketAddr,
    pub port: u16,
    /// The table the request was routed with; it names the listener and service counters.
    pub table: Arc<RoutingTable>,
    pub method: Method,
    pub host: String,
    /// The request target as received (shares hyper's buffer: cloning it copies nothing).
    pub uri: Uri,
    pub status: StatusCode,
    pub rule: Option<Arc<str>>,
    pub group: Option<GroupId>,
    pub target: Option<Arc<str>>,
    pub target_requests: Option<IntCounter>,
    pub bytes_out: u64,
    /// The response body broke off before its end.
    pub aborted: bool,
}

/// Whether access log lines are written at all (`RUST_LOG` lets `corral::access` through at
/// `info`): the relay spells out a record's host and path only then. Metrics are recorded
/// either way.
pub fn lines_wanted() -> bool {
    tracing::enabled!(target: "corral::access", tracing::Level::INFO)
}

impl AccessLog {
    /// The record of a request that just arrived; the phases fill in the rest.
    pub fn new(
        client: SocketAddr,
        port: u16,
        table: Arc<RoutingTable>,
        method: Method,
        uri: Uri,
    ) -> AccessLog {
        AccessLog {
            start: Instant::now(),
            client,
            port,
            table,
            method,
            host: String::new(),
            uri,
            status: StatusCode::OK,
            rule: None,
            group: None,
            target: None,
            target_requests: None,
            bytes_out: 0,
            aborted: false,
        }
    }

    /// The warning for a request corral could not proxy, naming where it was going.
    pub fn failed(&self, e: &super::ProxyError) {
        tracing::warn!(
            listener = self.table.listener(self.port).map_or("-", |l| &*l.label),
            rule = self.rule.as_deref().unwrap_or("-"),
            target = e.target().unwrap_or("-"),
            error = %e,
            "request failed"
        );
    }

    fn record_metrics(&self, elapsed: f64) {
        let class = code_class(self.status.as_u16());
        if let Some(listener) = self.table.listener(self.port) {
            listener.metrics.requests[class].inc();
        }
        if let Some(group) = self.group {
            let metrics = &self.table.group(group).metrics;
            metrics.requests[class].inc();
            metrics.duration.observe(elapsed);
        }
        if let Some(target) = &self.target_requests {
            target.inc();
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed().as_secs_f64();
        self.record_metrics(elapsed);
        let listener = self.table.listener(self.port).map_or("-", |l| &*l.label);
        tracing::info!(
            target: "corral::access",
            client = %self.client,
            listener,
            method = %self.method,
            host = %self.host,
            path = %self.uri.path(),
            status = self.status.as_u16(),
            rule = self.rule.as_deref().unwrap_or("-"),
            target = self.target.as_deref().unwrap_or("-"),
            bytes = self.bytes_out,
            duration_ms = elapsed * 1000.0,
            aborted = self.aborted,
        );
    }
}
