//! The configuration model: what a control plane (file or API) says corral should do.
//!
//! It is shaped like Rancher's `lbConfig`/`portRules` and Consul's agent service definition so
//! that the control API store and the config file both feed [`crate::routing::build`] the same
//! value. Nothing here is validated beyond its JSON shape: the routing builder is the one place
//! that decides whether a configuration can be served.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod duration;

pub use duration::Millis;

/// Everything a routing table is built from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub load_balancers: Vec<LoadBalancer>,
    /// Backend instances, in Consul's agent service shape (`ID`, `Service`, `Address`, …).
    #[serde(default)]
    pub services: Vec<Instance>,
    #[serde(default)]
    pub certificates: Vec<Certificate>,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub limits: Limits,
}

/// A Rancher `loadBalancerService`: a named set of port rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancer {
    pub name: String,
    pub lb_config: LbConfig,
}

/// Rancher 1.2+ `lbConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LbConfig {
    #[serde(default)]
    pub port_rules: Vec<PortRule>,
    #[serde(default)]
    pub certificate_ids: Vec<String>,
    #[serde(default)]
    pub default_certificate_id: Option<String>,
    #[serde(default)]
    pub stickiness_policy: Option<StickinessPolicy>,
}

/// Rancher `portRule`. `service_id` names the service whose instances are the targets (in the
/// file config it is the Consul service name; the API store resolves its ids to names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortRule {
    pub source_port: u16,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub priority: Option<u32>,
    pub service_id: String,
    #[serde(default)]
    pub target_port: Option<u16>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Http,
    Https,
    Tcp,
    Tls,
    Sni,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Tcp => "tcp",
            Protocol::Tls => "tls",
            Protocol::Sni => "sni",
            Protocol::Udp => "udp",
        }
    }

    /// Whether requests on this listener are HTTP (routed per request) rather than streams.
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Https)
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Rancher `loadBalancerCookieStickinessPolicy`, with HAProxy's meaning of each flag.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StickinessPolicy {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub cookie: Option<String>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub mode: StickinessMode,
    #[serde(default)]
    pub indirect: bool,
    #[serde(default)]
    pub nocache: bool,
    #[serde(default)]
    pub postonly: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StickinessMode {
    #[default]
    Insert,
    Rewrite,
    Prefix,
}

/// A backend instance in the shape of Consul's agent service definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Service")]
    pub service: String,
    /// Empty means 127.0.0.1, as for a Consul agent's local services.
    #[serde(rename = "Address", default)]
    pub address: String,
    /// 0 means "the rule's `targetPort`".
    #[serde(rename = "Port", default)]
    pub port: u16,
    #[serde(rename = "Weights", default)]
    pub weights: Weights,
    #[serde(rename = "Status", default)]
    pub status: HealthStatus,
    #[serde(rename = "Maintenance", default)]
    pub maintenance: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    #[serde(rename = "Passing")]
    pub passing: u32,
    #[serde(rename = "Warning")]
    pub warning: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            passing: 1,
            warning: 1,
        }
    }
}

/// Consul's aggregated check status of an instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    #[default]
    Passing,
    Warning,
    Critical,
}

impl Instance {
    /// Consul's weight semantics: Passing weight while passing, Warning weight while warning,
    /// nothing while critical or in maintenance.
    pub fn effective_weight(&self) -> u32 {
        if self.maintenance {
            return 0;
        }
        match self.status {
            HealthStatus::Passing => self.weights.passing,
            HealthStatus::Warning => self.weights.warning,
            HealthStatus::Critical => 0,
        }
    }
}

/// A certificate for `https`/`tls` listeners: inline PEM (API) or PEM files (config file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Certificate {
    /// What `certificateIds` and `defaultCertificateId` refer to.
    pub id: String,
    #[serde(default)]
    pub cert: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub cert_chain: Option<String>,
    #[serde(default)]
    pub cert_path: Option<String>,
    #[serde(default)]
    pub key_path: Option<String>,
}

/// Timeouts, in milliseconds in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Timeouts {
    /// From the first byte of a request head to its end (slowloris guard).
    pub request_headers: Millis,
    /// Longest pause between two reads of a request body (slow-body guard).
    pub request_body: Millis,
    pub upstream_connect: Millis,
    /// From the request sent to the upstream's response head.
    pub upstream_response: Millis,
    /// How long a client keep-alive connection may wait for its next request.
    pub idle_keepalive: Millis,
    /// Graceful drain deadline on shutdown or listener removal.
    pub drain: Millis,
    /// TLS handshake, and reading the ClientHello on `sni` listeners.
    pub handshake: Millis,
    /// An L4 (`tcp`, `tls`, `sni`) connection with no byte either way for this long is closed.
    pub stream_idle: Millis,
    /// A UDP flow with no datagram either way for this long is forgotten.
    pub udp_idle: Millis,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            request_headers: Millis::from_secs(10),
            request_body: Millis::from_secs(30),
            upstream_connect: Millis::from_secs(3),
            upstream_response: Millis::from_secs(60),
            idle_keepalive: Millis::from_secs(60),
            drain: Millis::from_secs(30),
            handshake: Millis::from_secs(10),
            stream_idle: Millis::from_secs(300),
            udp_idle: Millis::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Limits {
    /// Idle upstream connections kept per target.
    pub upstream_idle_per_target: usize,
    /// Open connections per target, busy and idle (nginx's `max_conns`); 0: no limit. A
    /// request that would need one more goes to another target, or is answered 503.
    pub upstream_max_per_target: usize,
    /// Concurrent client connections per listener (HAProxy's `maxconn`).
    pub max_connections_per_listener: usize,
    /// UDP flows per listener; datagrams of new clients beyond it are dropped.
    pub udp_max_flows: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            upstream_idle_per_target: 64,
            upstream_max_per_target: 0,
            max_connections_per_listener: 10_000,
            udp_max_flows: 10_000,
        }
    }
}

/// Why a configuration file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
}

impl Config {
    /// Parses a JSON document; the error names the JSON path of the offending field.
    pub fn from_json(text: &str) -> Result<Config, String> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                e.into_inner().to_string()
            } else {
                format!("at `{path}`: {}", e.into_inner())
            }
        })
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_json(&text).map_err(|message| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        })
    }
}

impl Timeouts {
    pub fn request_headers(&self) -> Duration {
        self.request_headers.into()
    }
    pub fn request_body(&self) -> Duration {
        self.request_body.into()
    }
    pub fn upstream_connect(&self) -> Duration {
        self.upstream_connect.into()
    }
    pub fn upstream_response(&self) -> Duration {
        self.upstream_response.into()
    }
    pub fn idle_keepalive(&self) -> Duration {
        self.idle_keepalive.into()
    }
    pub fn drain(&self) -> Duration {
        self.drain.into()
    }
    pub fn handshake(&self) -> Duration {
        self.handshake.into()
    }
    pub fn stream_idle(&self) -> Duration {
        self.stream_idle.into()
    }
    pub fn udp_idle(&self) -> Duration {
        self.udp_idle.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_names_its_path() {
        let err = Config::from_json(
            r#"{"loadBalancers":[{"name":"a","lbConfig":{"portRules":[{"sourcePort":80,"serviceId":"web","hostnme":"x"}]}}]}"#,
        )
        .unwrap_err();
        assert!(
            err.contains("loadBalancers[0].lbConfig.portRules[0]"),
            "{err}"
        );
        assert!(err.contains("hostnme"), "{err}");
    }

    #[test]
    fn defaults_and_weights() {
        let c = Config::from_json(
            r#"{"services":[{"ID":"w1","Service":"web","Port":81,"Weights":{"Passing":3,"Warning":1},"Status":"warning"}]}"#,
        )
        .unwrap();
        assert_eq!(c.services[0].effective_weight(), 1);
        assert_eq!(c.timeouts.request_headers(), Duration::from_secs(10));
        assert_eq!(c.limits.max_connections_per_listener, 10_000);
    }
}
