//! The Rancher resources as the API stores (and persists) them.
//!
//! Services and load balancers share one store and one id space (`1s<N>`); a load balancer is
//! a service whose `kind` is [`Kind::LoadBalancerService`]. Certificates are `1c<N>`. Deleted
//! resources are dropped from the store (a GET by id then answers 404, which the contract
//! allows).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::state_machine::ServiceState;

/// Rancher's resources as the API stores them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RancherState {
    /// The last number handed out; ids are `1s<N>` / `1c<N>` with N from this one counter.
    pub next_id: u64,
    pub services: Vec<Service>,
    pub certificates: Vec<StoredCertificate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Kind {
    Service,
    LoadBalancerService,
    /// Any IPs or one hostname as a service (Rancher's `externalService`).
    ExternalService,
    /// A service alias: stands for the services linked to it (Rancher's `dnsService`).
    DnsService,
}

impl Kind {
    pub fn type_name(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::LoadBalancerService => "loadBalancerService",
            Kind::ExternalService => "externalService",
            Kind::DnsService => "dnsService",
        }
    }

    /// The collection a resource of this kind lives in (its `links.self`).
    pub fn collection(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::LoadBalancerService => "loadbalancerservices",
            Kind::ExternalService => "externalservices",
            Kind::DnsService => "dnsservices",
        }
    }

    /// Every kind, for looking one up by its type name.
    pub const ALL: [Kind; 4] = [
        Kind::Service,
        Kind::LoadBalancerService,
        Kind::ExternalService,
        Kind::DnsService,
    ];

    /// The kind whose `type` is `name` (case-insensitive).
    pub fn from_type_name(name: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.type_name().eq_ignore_ascii_case(name))
    }
}

/// A `service` or `loadBalancerService`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub id: String,
    pub kind: Kind,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub state: ServiceState,
    pub uuid: String,
    /// Milliseconds since the epoch.
    pub created: i64,
    /// Writable fields stored as sent and echoed (`environmentId`, `stackId`, `launchConfig`,
    /// `scale`, `startOnCreate`, `metadata`, `selectorLink`, and for load balancers the legacy
    /// `loadBalancerConfig`, `certificateIds`, `defaultCertificateId`).
    #[serde(default)]
    pub fields: Map<String, Value>,
    /// Load balancers only: the effective configuration (derived when `legacy`).
    #[serde(default)]
    pub lb_config: Option<LbConfig>,
    /// A load balancer described by the v1 legacy fields; `lb_config` is derived from them.
    #[serde(default)]
    pub legacy: bool,
    #[serde(default)]
    pub links: Vec<ServiceLink>,
    /// The last `upgrade` action's input, echoed in the `upgrade` field.
    #[serde(default)]
    pub upgrade: Option<Value>,
    /// The launchConfig before the current upgrade, restored by `rollback`.
    #[serde(default)]
    pub previous_launch_config: Option<Value>,
}

impl Service {
    pub fn is_lb(&self) -> bool {
        self.kind == Kind::LoadBalancerService
    }

    /// The target `serviceId`s of the effective rules.
    pub fn rule_targets(&self) -> impl Iterator<Item = &str> {
        self.lb_config
            .iter()
            .flat_map(|c| c.port_rules.iter())
            .filter_map(|r| r.service_id.as_deref())
    }

    /// Certificate ids this load balancer refers to, effective config and legacy fields alike.
    pub fn certificate_refs(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(c) = &self.lb_config {
            out.extend(c.certificate_ids.iter().cloned());
            out.extend(c.default_certificate_id.iter().cloned());
        }
        if let Some(Value::Array(ids)) = self.fields.get("certificateIds") {
            out.extend(ids.iter().filter_map(Value::as_str).map(str::to_string));
        }
        if let Some(Value::String(id)) = self.fields.get("defaultCertificateId") {
            out.push(id.clone());
        }
        out
    }
}

/// A link from a service to a service it consumes; its identity is [`ServiceLink::uuid`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceLink {
    pub service_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// v1 legacy target specs (`web.example.com:80/api=8080`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
}

impl ServiceLink {
    /// `"<serviceId>.<name or ''>"`, as Cattle keys service consume maps.
    pub fn uuid(&self) -> String {
        format!("{}.{}", self.service_id, self.name.as_deref().unwrap_or(""))
    }
}

/// Rancher 1.2+ `lbConfig`, as the API stores and renders it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LbConfig {
    #[serde(default)]
    pub port_rules: Vec<PortRule>,
    #[serde(default)]
    pub certificate_ids: Vec<String>,
    #[serde(default)]
    pub default_certificate_id: Option<String>,
    #[serde(default)]
    pub stickiness_policy: Option<StickinessPolicy>,
    #[serde(default)]
    pub config: Option<String>,
}

/// `portRule`; optional fields are left out of the rendering when absent ("as sent, plus
/// defaults").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortRule {
    pub source_port: u16,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

fn default_protocol() -> String {
    "http".to_string()
}

/// `loadBalancerCookieStickinessPolicy`, rendered with its defaults filled in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StickinessPolicy {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub cookie: Option<String>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub indirect: bool,
    #[serde(default)]
    pub nocache: bool,
    #[serde(default)]
    pub postonly: bool,
    #[serde(default = "default_mode")]
    pub mode: String,
}

fn default_mode() -> String {
    "insert".to_string()
}

/// A certificate with its PEM (the key is never rendered) and the facts parsed from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredCertificate {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub uuid: String,
    pub created: i64,
    pub cert: String,
    pub key: String,
    #[serde(default)]
    pub cert_chain: Option<String>,
    /// Read-only fields parsed from `cert` (`CN`, `certFingerprint`, …), rendered as stored.
    #[serde(default)]
    pub facts: BTreeMap<String, Value>,
}

impl RancherState {
    /// A fresh `1s<N>` / `1c<N>` id (prefix `s` or `c`).
    pub fn allocate_id(&mut self, prefix: char) -> String {
        self.next_id += 1;
        format!("1{prefix}{}", self.next_id)
    }

    pub fn service(&self, id: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.id.eq_ignore_ascii_case(id))
    }

    pub fn service_mut(&mut self, id: &str) -> Option<&mut Service> {
        self.services
            .iter_mut()
            .find(|s| s.id.eq_ignore_ascii_case(id))
    }

    pub fn certificate(&self, id: &str) -> Option<&StoredCertificate> {
        self.certificates
            .iter()
            .find(|c| c.id.eq_ignore_ascii_case(id))
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A unique id in the shape of a v4 uuid: the counter keeps it unique within a store, the
/// creation time across stores.
pub fn make_uuid(counter: u64, created_ms: i64) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let t = created_ms as u64;
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (t >> 16) as u32,
        (t & 0xffff) as u16,
        nanos & 0xfff,
        (nanos >> 12) & 0xfff,
        counter & 0xffff_ffff_ffff
    )
}

/// RFC 3339 (UTC, seconds) of a millisecond timestamp.
pub fn rfc3339(ms: i64) -> String {
    format!("{}Z", crate::utc::date_time(ms.div_euclid(1000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_rancher_style_and_never_reused() {
        let mut s = RancherState::default();
        assert_eq!(s.allocate_id('s'), "1s1");
        assert_eq!(s.allocate_id('c'), "1c2");
        assert_eq!(s.allocate_id('s'), "1s3");
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_393_290_000), "2026-11-23T00:21:30Z");
    }

    #[test]
    fn uuids_differ() {
        assert_ne!(make_uuid(1, 5), make_uuid(2, 5));
    }

    #[test]
    fn link_uuid() {
        let l = ServiceLink {
            service_id: "1s2".into(),
            name: None,
            ports: vec![],
        };
        assert_eq!(l.uuid(), "1s2.");
    }
}
