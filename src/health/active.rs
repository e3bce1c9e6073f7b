//! Active checks: the Consul agent's HTTP, TCP and TTL checks, run for real.
//!
//! One [`Monitor`] task owns the probes. After every committed change of the control state it
//! reconciles the running probes with the checks the agent state defines (a probe whose
//! definition changed is restarted). Each HTTP/TCP probe runs on its own `Interval`, first
//! after a random offset within it (so probes registered together spread out), under a shared
//! concurrency limit, never on the data path. A status change is written through
//! `Control::update`, so the routing table is rebuilt and swapped; requests in flight to a
//! target that goes critical complete on the table they started with.
//!
//! TTL checks go critical when not refreshed within their TTL (the API handlers stamp
//! [`TtlClock`]); a check critical for longer than its `DeregisterCriticalServiceAfter`
//! deregisters its service. gRPC, script, Docker, UDP, H2PING and alias checks are stored and
//! shown but not run: their status stays as registered or last set.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use prometheus::IntCounter;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::api::consul::model::{CheckDefinition, HealthCheck, CRITICAL, PASSING, WARNING};
use crate::api::Control;

/// Probes running at once, across all checks.
pub const MAX_CONCURRENT_PROBES: usize = 32;
/// Consul's default check timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest interval honoured (a smaller one would turn a probe into a busy loop).
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// How often TTL expiry and critical-service deregistration are looked at.
const REAP_TICK: Duration = Duration::from_millis(200);

/// When each TTL check was last refreshed through the API (`/v1/agent/check/pass|warn|fail|
/// update`). Refreshes that do not change the state are stamped here only, so they cost no
/// table rebuild.
#[derive(Debug, Default)]
pub struct TtlClock {
    refreshed: Mutex<HashMap<String, Instant>>,
}

impl TtlClock {
    pub fn refreshed(&self, check_id: &str) {
        self.refreshed
            .lock()
            .insert(check_id.to_string(), Instant::now());
    }

    /// When `check_id` was last refreshed; a check seen for the first time starts now.
    fn last(&self, check_id: &str) -> Instant {
        *self
            .refreshed
            .lock()
            .entry(check_id.to_string())
            .or_insert_with(Instant::now)
    }

    fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.refreshed.lock().retain(|id, _| keep(id));
    }
}

/// Starts the monitor of `control`'s checks; it runs until the process ends.
pub fn spawn(control: Arc<Control>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(Monitor::new(control).run())
}

/// What a probe runs; a probe is restarted when this changes.
#[derive(Debug, Clone, PartialEq)]
struct ProbeSpec {
    service_id: String,
    service_name: String,
    definition: CheckDefinition,
}

struct RunningProbe {
    spec: ProbeSpec,
    task: AbortHandle,
}

struct Monitor {
    control: Arc<Control>,
    probes: HashMap<String, RunningProbe>,
    limiter: Arc<Semaphore>,
    /// Since when each check with `DeregisterCriticalServiceAfter` has been critical.
    critical_since: HashMap<String, Instant>,
}

impl Monitor {
    fn new(control: Arc<Control>) -> Monitor {
        Monitor {
            control,
            probes: HashMap::new(),
            limiter: Arc::new(Semaphore::new(MAX_CONCURRENT_PROBES)),
            critical_since: HashMap::new(),
        }
    }

    async fn run(mut self) {
        let mut changes = self.control.subscribe();
        let mut tick = tokio::time::interval(REAP_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.reconcile();
        loop {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.reconcile();
                }
                _ = tick.tick() => self.reap().await,
            }
        }
        for probe in self.probes.values() {
            probe.task.abort();
        }
    }

    /// Starts probes for new or changed HTTP/TCP checks and stops those of removed ones.
    fn reconcile(&mut self) {
        let state = self.control.state();
        let checks = &state.agent.checks;
        self.probes.retain(|id, probe| {
            let keep = checks.get(id).and_then(probe_spec).as_ref() == Some(&probe.spec);
            if !keep {
                probe.task.abort();
            }
            keep
        });
        let metrics = &self.control.runtime().shared().metrics;
        for (id, check) in checks {
            if self.probes.contains_key(id) {
                continue;
            }
            let Some(spec) = probe_spec(check) else {
                continue;
            };
            let failures = metrics
                .target_health_check_failures
                .with_label_values(&[&spec.service_name, &spec.service_id]);
            let probe = Probe {
                control: self.control.clone(),
                check_id: id.clone(),
                spec: spec.clone(),
                limiter: self.limiter.clone(),
                failures,
            };
            let task = tokio::spawn(probe.run()).abort_handle();
            tracing::debug!(check = %id, kind = check.kind(), "health probe started");
            self.probes.insert(id.clone(), RunningProbe { spec, task });
        }
        self.control.health.retain(|id| checks.contains_key(id));
        self.critical_since.retain(|id, _| checks.contains_key(id));
    }

    /// TTL expiry and `DeregisterCriticalServiceAfter`.
    async fn reap(&mut self) {
        let state = self.control.state();
        let now = Instant::now();
        let mut expired = Vec::new();
        let mut deregister = Vec::new();
        for (id, check) in &state.agent.checks {
            if let Some(ttl) = check.definition.ttl.and_then(duration) {
                let last = self.control.health.last(id);
                if check.status != CRITICAL && now.duration_since(last) > ttl {
                    expired.push(id.clone());
                }
            }
            let Some(after) = check
                .definition
                .deregister_critical_service_after
                .and_then(duration)
            else {
                continue;
            };
            if check.status == CRITICAL {
                let since = *self.critical_since.entry(id.clone()).or_insert(now);
                if now.duration_since(since) >= after {
                    deregister.push(check.service_id.clone());
                }
            } else {
                self.critical_since.remove(id);
            }
        }
        for id in expired {
            tracing::info!(check = %id, "TTL check expired: critical");
            set_status(&self.control, &id, CRITICAL, "TTL expired").await;
        }
        deregister.dedup();
        for service_id in deregister {
            let result = self
                .control
                .update(|state| {
                    if state.agent.services.contains_key(&service_id) {
                        crate::api::consul::writes::deregister(&mut state.agent, &service_id)?;
                    }
                    Ok(())
                })
                .await;
            match result {
                Ok(()) => tracing::info!(
                    service_id = %service_id,
                    "critical for longer than DeregisterCriticalServiceAfter: deregistered"
                ),
                Err(e) => {
                    tracing::warn!(service_id = %service_id, error = %e.message, "cannot deregister")
                }
            }
        }
    }
}

/// The probe a check needs, if it is one corral runs.
fn probe_spec(check: &HealthCheck) -> Option<ProbeSpec> {
    let d = &check.definition;
    if check.is_maintenance() || (d.http.is_empty() && d.tcp.is_empty()) || !d.grpc.is_empty() {
        return None;
    }
    d.interval.and_then(duration)?;
    Some(ProbeSpec {
        service_id: check.service_id.clone(),
        service_name: check.service_name.clone(),
        definition: d.clone(),
    })
}

/// A Go duration in nanoseconds, if positive.
fn duration(ns: i64) -> Option<Duration> {
    u64::try_from(ns)
        .ok()
        .filter(|&n| n > 0)
        .map(Duration::from_nanos)
}

/// Writes a check's new status (and output) unless it already has it.
async fn set_status(control: &Control, check_id: &str, status: &str, output: &str) {
    let current = control.state();
    if current
        .agent
        .checks
        .get(check_id)
        .is_none_or(|c| c.status == status)
    {
        return;
    }
    let result = control
        .update(|state| {
            if let Some(c) = state.agent.checks.get_mut(check_id) {
                if c.status != status {
                    c.status = status.to_string();
                    c.output = output.to_string();
                }
            }
            Ok(())
        })
        .await;
    if let Err(e) = result {
        tracing::warn!(check = %check_id, error = %e.message, "cannot record a check status");
    }
}

struct Probe {
    control: Arc<Control>,
    check_id: String,
    spec: ProbeSpec,
    limiter: Arc<Semaphore>,
    failures: IntCounter,
}

impl Probe {
    async fn run(self) {
        let d = &self.spec.definition;
        let interval = d
            .interval
            .and_then(duration)
            .unwrap_or(DEFAULT_TIMEOUT)
            .max(MIN_INTERVAL);
        let timeout = d.timeout.and_then(duration).unwrap_or(DEFAULT_TIMEOUT);
        // Spread probes registered together over their interval.
        let offset =
            RandomState::new().hash_one(&self.check_id) % interval.as_nanos().max(1) as u64;
        let mut ticker =
            tokio::time::interval_at(Instant::now() + Duration::from_nanos(offset), interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut streak = Streak::default();
        loop {
            ticker.tick().await;
            let (status, output) = {
                let Ok(_permit) = self.limiter.acquire().await else {
                    return;
                };
                if d.http.is_empty() {
                    tcp(&d.tcp, timeout).await
                } else {
                    http(d, timeout).await
                }
            };
            if status != PASSING {
                self.failures.inc();
                tracing::debug!(check = %self.check_id, status, %output, "health probe failed");
            }
            if let Some(status) = streak.observe(status, d) {
                set_status(&self.control, &self.check_id, status, &output).await;
            }
        }
    }
}

/// Consul's `SuccessBeforePassing`, `FailuresBeforeWarning` and `FailuresBeforeCritical`.
#[derive(Debug, Default)]
struct Streak {
    successes: i64,
    failures: i64,
}

impl Streak {
    /// The status to report after a probe's raw result, if any.
    fn observe(&mut self, raw: &'static str, d: &CheckDefinition) -> Option<&'static str> {
        match raw {
            PASSING => {
                self.successes += 1;
                self.failures = 0;
                (self.successes >= d.success_before_passing.max(1)).then_some(PASSING)
            }
            WARNING => {
                self.successes = 0;
                self.failures = 0;
                Some(WARNING)
            }
            _ => {
                self.failures += 1;
                self.successes = 0;
                let critical_after = d.failures_before_critical.max(1);
                let warning_after = if d.failures_before_warning > 0 {
                    d.failures_before_warning
                } else {
                    critical_after
                };
                if self.failures >= critical_after {
                    Some(CRITICAL)
                } else if self.failures >= warning_after {
                    Some(WARNING)
                } else {
                    None
                }
            }
        }
    }
}

/// A TCP check: passing when a connection opens within `timeout`.
async fn tcp(addr: &str, timeout: Duration) -> (&'static str, String) {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(_)) => (PASSING, format!("TCP connect {addr}: Success")),
        Ok(Err(e)) => (CRITICAL, format!("dial tcp {addr}: {e}")),
        Err(_) => (CRITICAL, format!("dial tcp {addr}: i/o timeout")),
    }
}

/// An HTTP check: 2xx passing, 429 warning, anything else (or no answer) critical.
async fn http(d: &CheckDefinition, timeout: Duration) -> (&'static str, String) {
    let method = if d.method.is_empty() {
        Method::GET
    } else {
        match Method::from_bytes(d.method.as_bytes()) {
            Ok(m) => m,
            Err(_) => return (CRITICAL, format!("invalid method {:?}", d.method)),
        }
    };
    match tokio::time::timeout(timeout, http_exchange(d, method.clone())).await {
        Ok(Ok(status)) => {
            let line = format!(
                "HTTP {method} {}: {} {}",
                d.http,
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            );
            let result = if status.is_success() {
                PASSING
            } else if status == http::StatusCode::TOO_MANY_REQUESTS {
                WARNING
            } else {
                CRITICAL
            };
            (result, line)
        }
        Ok(Err(e)) => (CRITICAL, format!("HTTP {method} {}: {e}", d.http)),
        Err(_) => (
            CRITICAL,
            format!("HTTP {method} {}: timed out after {timeout:?}", d.http),
        ),
    }
}

async fn http_exchange(d: &CheckDefinition, method: Method) -> Result<http::StatusCode, String> {
    let uri: Uri = d.http.parse().map_err(|e| format!("invalid URL: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("URL scheme must be http or https".into()),
    };
    let host = uri.host().ok_or("URL has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let authority = uri.authority().map_or(host, |a| a.as_str());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .body(Full::new(Bytes::from(d.body.clone())))
        .map_err(|e| e.to_string())?;
    let headers = req.headers_mut();
    headers.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static("Consul Health Check"),
    );
    headers.insert(
        http::header::ACCEPT,
        HeaderValue::from_static("text/plain, text/*, */*"),
    );
    headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    if let Ok(v) = HeaderValue::from_str(authority) {
        headers.insert(http::header::HOST, v);
    }
    for (name, values) in &d.header {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        headers.remove(&name);
        for v in values {
            if let Ok(v) = HeaderValue::from_str(v) {
                headers.append(name.clone(), v);
            }
        }
    }
    if tls {
        let server_name = if d.tls_server_name.is_empty() {
            host
        } else {
            &d.tls_server_name
        };
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|e| format!("invalid TLS server name: {e}"))?;
        let connector =
            tokio_rustls::TlsConnector::from(super::tls::client_config(d.tls_skip_verify)?);
        let stream = connector
            .connect(name, stream)
            .await
            .map_err(|e| e.to_string())?;
        exchange(stream, req).await
    } else {
        exchange(stream, req).await
    }
}

async fn exchange<IO>(io: IO, req: Request<Full<Bytes>>) -> Result<http::StatusCode, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let result = sender.send_request(req).await.map_err(|e| e.to_string());
    driver.abort();
    result.map(|r| r.status())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streak_thresholds() {
        let plain = CheckDefinition::default();
        let mut s = Streak::default();
        assert_eq!(s.observe(CRITICAL, &plain), Some(CRITICAL));
        assert_eq!(s.observe(PASSING, &plain), Some(PASSING));
        assert_eq!(s.observe(WARNING, &plain), Some(WARNING));
        let d = CheckDefinition {
            success_before_passing: 2,
            failures_before_warning: 1,
            failures_before_critical: 3,
            ..Default::default()
        };
        let mut s = Streak::default();
        assert_eq!(s.observe(PASSING, &d), None);
        assert_eq!(s.observe(PASSING, &d), Some(PASSING));
        assert_eq!(s.observe(CRITICAL, &d), Some(WARNING));
        assert_eq!(s.observe(CRITICAL, &d), Some(WARNING));
        assert_eq!(s.observe(CRITICAL, &d), Some(CRITICAL));
    }
}
