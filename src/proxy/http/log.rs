//! The access log: one line per request, written when its response body is finished.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, StatusCode};

#[derive(Debug)]
pub struct AccessLog {
    pub start: Instant,
    pub client: SocketAddr,
    pub listener: Arc<str>,
    pub method: Method,
    pub host: String,
    pub path: String,
    pub status: StatusCode,
    pub rule: Option<Arc<str>>,
    pub target: Option<Arc<str>>,
    pub bytes_out: u64,
    /// The response body broke off before its end.
    pub aborted: bool,
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        tracing::info!(
            target: "corral::access",
            client = %self.client,
            listener = %self.listener,
            method = %self.method,
            host = %self.host,
            path = %self.path,
            status = self.status.as_u16(),
            rule = self.rule.as_deref().unwrap_or("-"),
            target = self.target.as_deref().unwrap_or("-"),
            bytes = self.bytes_out,
            duration_ms = self.start.elapsed().as_secs_f64() * 1000.0,
            aborted = self.aborted,
        );
    }
}
