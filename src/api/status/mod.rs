//! The status page: `GET /` (HTML, server-rendered, then updated in place by polling) and
//! `GET /status` (the same data as JSON).
//!
//! [`collect`] reads the routing table in force, the control state, the reload log and the
//! [`Sampler`]; nothing here writes anything. Certificates show their public facts only: no
//! key, no token, no API key ever reaches a page.

mod render;
pub mod sampler;

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, StatusCode};
use prometheus::core::Collector;
use serde::Serialize;

pub use sampler::Sampler;

use super::{Control, Reply};
use crate::api::rancher::{basic_matches, rfc3339};
use crate::config::Weights;
use crate::runtime::ReloadRecord;
use crate::tls::cert;
use sampler::Key;

/// Refused reloads shown, newest first.
const REFUSED_SHOWN: usize = 10;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub version: &'static str,
    pub generation: u64,
    /// When this document was made, milliseconds since the epoch.
    pub now_ms: i64,
    pub last_reload: Option<Reload>,
    /// Recent refused reloads, newest first.
    pub refused_reloads: Vec<Reload>,
    pub load_balancers: Vec<LoadBalancer>,
    pub services: Vec<Service>,
    pub certificates: Vec<Certificate>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reload {
    pub at: String,
    pub at_ms: i64,
    pub source: &'static str,
    pub generation: Option<u64>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancer {
    pub name: String,
    pub state: String,
    pub listeners: Vec<Listener>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    pub port: u16,
    pub protocol: &'static str,
    pub active_connections: i64,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// Empty: any host.
    pub host: String,
    /// Empty: any path.
    pub path: String,
    pub priority: Option<u32>,
    pub service: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub name: String,
    /// Over the last minute.
    pub requests_per_second: f64,
    /// Share of 5xx answers over the last minute.
    pub error_rate: f64,
    /// `corral_sticky_total{result="hit"}`.
    pub sticky_hits: u64,
    pub targets: Vec<Target>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub id: String,
    pub address: String,
    /// passing, warning, critical or maintenance.
    pub state: &'static str,
    /// The registered weights (`None` when the instance is not found in the configuration).
    pub configured_weight: Option<u32>,
    pub configured_warning_weight: Option<u32>,
    /// The weight in force now.
    pub weight: u32,
    /// Over the last minute.
    pub requests_per_second: f64,
    /// Share of requests whose connection to this target failed, over the last minute.
    pub error_rate: f64,
    /// Requests per second every 2 s over the last 5 minutes, oldest first.
    pub history: Vec<f64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Certificate {
    pub id: String,
    pub name: String,
    pub cn: Option<String>,
    pub sans: Vec<String>,
    pub expires_at: Option<String>,
    /// Whole days left (negative once expired).
    pub days_to_expiry: Option<i64>,
}

/// `GET /` (the page) and `GET /status` (JSON), behind the Rancher API keys when set.
pub fn handle(control: &Control, sampler: &Sampler, path: &str, headers: &HeaderMap) -> Reply {
    if let Some((access, secret)) = &control.auth.rancher {
        let authorization = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !basic_matches(authorization, access, secret) {
            return Reply::text(
                StatusCode::UNAUTHORIZED,
                "401 Unauthorized: valid API keys are required\n",
            )
            .header("www-authenticate", "Basic realm=\"corral\"");
        }
    }
    let status = collect(control, sampler);
    let reply = if path == "/status" {
        Reply::json(StatusCode::OK, &status)
    } else {
        Reply::new(
            StatusCode::OK,
            "text/html; charset=utf-8",
            render::page(&status),
        )
    };
    reply
        .header("cache-control", "no-store")
        .header("x-content-type-options", "nosniff")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn reload(r: &ReloadRecord) -> Reload {
    Reload {
        at: rfc3339(r.at_ms),
        at_ms: r.at_ms,
        source: r.source.as_str(),
        generation: r.generation,
        error: r.error.clone(),
    }
}

/// Everything the page shows, now.
pub fn collect(control: &Control, sampler: &Sampler) -> Status {
    let runtime = control.runtime();
    let table = runtime.table();
    let state = control.state();
    let file = control.file_config();
    let now = now_ms();

    let reloads = runtime.reloads();
    let last_reload = reloads
        .iter()
        .rev()
        .find(|r| r.generation.is_some())
        .map(reload);
    let refused_reloads = reloads
        .iter()
        .rev()
        .filter(|r| r.error.is_some())
        .take(REFUSED_SHOWN)
        .map(reload)
        .collect();

    // Load balancers: the API's in every state, then any other the table serves (file ones).
    let mut load_balancers: Vec<LoadBalancer> = state
        .rancher
        .services
        .iter()
        .filter(|s| s.is_lb())
        .map(|s| LoadBalancer {
            name: s.name.clone(),
            state: s.state.as_str().to_string(),
            listeners: Vec::new(),
        })
        .collect();
    for l in table.listeners() {
        let lb = match load_balancers
            .iter()
            .position(|lb| lb.name == *l.load_balancer)
        {
            Some(i) => &mut load_balancers[i],
            None => {
                load_balancers.push(LoadBalancer {
                    name: l.load_balancer.to_string(),
                    state: "active".to_string(),
                    listeners: Vec::new(),
                });
                let last = load_balancers.len() - 1;
                &mut load_balancers[last]
            }
        };
        lb.listeners.push(Listener {
            port: l.port,
            protocol: l.protocol.as_str(),
            active_connections: l.metrics.active.get(),
            rules: l
                .routes
                .iter()
                .map(|r| Rule {
                    host: r.host.to_string(),
                    path: r.path.to_string(),
                    priority: r.priority,
                    service: r.service.to_string(),
                })
                .collect(),
        });
    }

    // Configured weights by instance ID: the file's instances, then the agent's.
    let weights: HashMap<String, Weights> = file
        .services
        .iter()
        .cloned()
        .chain(state.agent.instances())
        .map(|i| (i.id, i.weights))
        .collect();
    let sticky = sticky_hits(control);

    let mut services: Vec<Service> = Vec::new();
    for group in table.groups() {
        let i = match services.iter().position(|s| s.name == *group.service) {
            Some(i) => i,
            None => {
                let rates = sampler.rates(&Key::Service(group.service.clone()));
                services.push(Service {
                    name: group.service.to_string(),
                    requests_per_second: rates.per_second,
                    error_rate: rates.error_rate,
                    sticky_hits: sticky.get(&*group.service).copied().unwrap_or(0),
                    targets: Vec::new(),
                });
                services.len() - 1
            }
        };
        for t in group.targets() {
            if services[i].targets.iter().any(|x| x.id == *t.id) {
                continue;
            }
            let rates = sampler.rates(&Key::Target {
                service: group.service.clone(),
                id: t.id.clone(),
            });
            let configured = weights.get(&*t.id);
            services[i].targets.push(Target {
                id: t.id.to_string(),
                address: t.addr.to_string(),
                state: t.state.as_str(),
                configured_weight: configured.map(|w| w.passing),
                configured_warning_weight: configured.map(|w| w.warning),
                weight: t.weight,
                requests_per_second: rates.per_second,
                error_rate: rates.error_rate,
                history: rates.history,
            });
        }
    }

    let mut certificates: Vec<Certificate> = state
        .rancher
        .certificates
        .iter()
        .map(|c| certificate(&c.id, &c.name, Some(&c.cert), now))
        .collect();
    certificates.extend(
        file.certificates
            .iter()
            .map(|c| certificate(&c.id, &c.id, c.cert.as_deref(), now)),
    );

    Status {
        version: env!("CARGO_PKG_VERSION"),
        generation: table.generation(),
        now_ms: now,
        last_reload,
        refused_reloads,
        load_balancers,
        services,
        certificates,
    }
}

/// The public facts of a certificate (never its key).
fn certificate(id: &str, name: &str, pem: Option<&str>, now_ms: i64) -> Certificate {
    let info = pem.and_then(|p| cert::inspect(p).ok());
    Certificate {
        id: id.to_string(),
        name: name.to_string(),
        cn: info.as_ref().and_then(|i| i.cn.clone()),
        sans: info
            .as_ref()
            .map(|i| i.subject_alternative_names.clone())
            .unwrap_or_default(),
        expires_at: info.as_ref().map(|i| rfc3339(i.not_after_unix * 1000)),
        days_to_expiry: info
            .as_ref()
            .map(|i| (i.not_after_unix - now_ms.div_euclid(1000)).div_euclid(86_400)),
    }
}

/// Sticky hits by service, from the series `corral_sticky_total` has (none are created).
fn sticky_hits(control: &Control) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for family in control.runtime().shared().metrics.sticky.collect() {
        for m in family.get_metric() {
            let label = |name: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_string())
            };
            if label("result").as_deref() != Some("hit") {
                continue;
            }
            if let Some(service) = label("service") {
                *out.entry(service).or_insert(0) += m.get_counter().get_value() as u64;
            }
        }
    }
    out
}

/// The sampler's task handle: aborted when the control listener stops.
pub struct SamplerTask(tokio::task::JoinHandle<()>);

impl SamplerTask {
    pub fn spawn(
        sampler: Arc<Sampler>,
        control: &Control,
        drain: crate::server::drain::Watch,
    ) -> SamplerTask {
        SamplerTask(tokio::spawn(sampler::run(
            sampler,
            control.runtime().clone(),
            drain,
        )))
    }
}

impl Drop for SamplerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}
