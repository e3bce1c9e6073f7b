//! The agent's state (persisted inside `store::State`) and the JSON views Consul clients read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::go::duration_serde;
use super::health::{self, Aggregate};
use crate::config::{HealthStatus, Instance, Weights};

/// Check IDs with this prefix put their service into maintenance.
pub const MAINTENANCE_PREFIX: &str = "_service_maintenance:";
/// The node name health checks report.
pub const NODE_NAME: &str = "corral";
pub const DATACENTER: &str = "dc1";

pub const PASSING: &str = "passing";
pub const WARNING: &str = "warning";
pub const CRITICAL: &str = "critical";

/// The agent's local services (by ID) and their checks (by CheckID).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentState {
    pub services: BTreeMap<String, AgentService>,
    pub checks: BTreeMap<String, HealthCheck>,
}

impl AgentState {
    /// Every registered instance with its aggregated health and maintenance flag.
    pub fn instances(&self) -> Vec<Instance> {
        self.services
            .values()
            .map(|svc| {
                let (status, maintenance) = match health::aggregate(self.checks_of(&svc.id)) {
                    Aggregate::Maintenance => {
                        let rest = self.checks_of(&svc.id).filter(|c| !c.is_maintenance());
                        (instance_status(health::aggregate(rest)), true)
                    }
                    other => (instance_status(other), false),
                };
                Instance {
                    id: svc.id.clone(),
                    service: svc.service.clone(),
                    address: svc.address.clone(),
                    port: svc.port,
                    weights: svc.weights,
                    status,
                    maintenance,
                }
            })
            .collect()
    }

    /// The checks of one service instance, in CheckID order.
    pub fn checks_of<'a>(&'a self, service_id: &'a str) -> impl Iterator<Item = &'a HealthCheck> {
        self.checks
            .values()
            .filter(move |c| c.service_id == service_id)
    }

    /// Instances registered under a service name, in ID order.
    pub fn services_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a AgentService> {
        self.services.values().filter(move |s| s.service == name)
    }
}

fn instance_status(a: Aggregate) -> HealthStatus {
    match a {
        Aggregate::Passing => HealthStatus::Passing,
        Aggregate::Warning => HealthStatus::Warning,
        // An unknown status cannot be trusted with traffic.
        Aggregate::Critical | Aggregate::Maintenance | Aggregate::Unknown => HealthStatus::Critical,
    }
}

/// A service instance as registered (Consul's `AgentService`, minus the agent-added fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentService {
    #[serde(rename = "Kind", default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Service")]
    pub service: String,
    #[serde(rename = "Tags", default)]
    pub tags: Vec<String>,
    #[serde(rename = "Meta", default)]
    pub meta: BTreeMap<String, String>,
    #[serde(rename = "Port", default)]
    pub port: u16,
    #[serde(rename = "Address", default)]
    pub address: String,
    #[serde(
        rename = "TaggedAddresses",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub tagged_addresses: BTreeMap<String, TaggedAddress>,
    #[serde(rename = "Weights", default)]
    pub weights: Weights,
    #[serde(rename = "EnableTagOverride", default)]
    pub enable_tag_override: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaggedAddress {
    #[serde(rename = "Address", default)]
    pub address: String,
    #[serde(rename = "Port", default)]
    pub port: u16,
}

/// What `GET /v1/agent/services` and `/v1/agent/service/<id>` return for one instance.
#[derive(Debug, Serialize)]
pub struct ServiceView<'a> {
    #[serde(flatten)]
    pub service: &'a AgentService,
    #[serde(rename = "ContentHash", skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
    #[serde(rename = "Datacenter")]
    pub datacenter: &'static str,
}

impl<'a> ServiceView<'a> {
    pub fn new(service: &'a AgentService) -> ServiceView<'a> {
        ServiceView {
            service,
            content_hash: None,
            datacenter: DATACENTER,
        }
    }
}

/// A check of a service instance, with its current status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthCheck {
    #[serde(rename = "CheckID")]
    pub check_id: String,
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "Status")]
    pub status: String,
    #[serde(rename = "Notes", default)]
    pub notes: String,
    #[serde(rename = "Output", default)]
    pub output: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    #[serde(rename = "ServiceName", default)]
    pub service_name: String,
    /// How to run it; empty for the maintenance check.
    #[serde(rename = "Definition", default)]
    pub definition: CheckDefinition,
}

impl HealthCheck {
    pub fn is_maintenance(&self) -> bool {
        self.check_id.starts_with(MAINTENANCE_PREFIX)
    }

    /// Consul's check `Type`.
    pub fn kind(&self) -> &'static str {
        if self.is_maintenance() {
            "maintenance"
        } else {
            self.definition.kind()
        }
    }
}

/// A check definition as registered (Consul's `CheckType`, minus ID/Name/Notes/Status), kept
/// whole so the prober can run it. Durations are nanoseconds, shown as Go strings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckDefinition {
    #[serde(
        rename = "TTL",
        with = "duration_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl: Option<i64>,
    #[serde(rename = "HTTP", skip_serializing_if = "String::is_empty")]
    pub http: String,
    #[serde(rename = "Header", skip_serializing_if = "BTreeMap::is_empty")]
    pub header: BTreeMap<String, Vec<String>>,
    #[serde(rename = "Method", skip_serializing_if = "String::is_empty")]
    pub method: String,
    #[serde(rename = "Body", skip_serializing_if = "String::is_empty")]
    pub body: String,
    #[serde(rename = "TCP", skip_serializing_if = "String::is_empty")]
    pub tcp: String,
    #[serde(rename = "UDP", skip_serializing_if = "String::is_empty")]
    pub udp: String,
    #[serde(rename = "GRPC", skip_serializing_if = "String::is_empty")]
    pub grpc: String,
    #[serde(rename = "GRPCUseTLS", skip_serializing_if = "is_false")]
    pub grpc_use_tls: bool,
    #[serde(rename = "H2PING", skip_serializing_if = "String::is_empty")]
    pub h2ping: String,
    #[serde(rename = "TLSServerName", skip_serializing_if = "String::is_empty")]
    pub tls_server_name: String,
    #[serde(rename = "TLSSkipVerify", skip_serializing_if = "is_false")]
    pub tls_skip_verify: bool,
    #[serde(rename = "Args", skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(rename = "DockerContainerID", skip_serializing_if = "String::is_empty")]
    pub docker_container_id: String,
    #[serde(rename = "Shell", skip_serializing_if = "String::is_empty")]
    pub shell: String,
    #[serde(rename = "AliasService", skip_serializing_if = "String::is_empty")]
    pub alias_service: String,
    #[serde(rename = "AliasNode", skip_serializing_if = "String::is_empty")]
    pub alias_node: String,
    #[serde(
        rename = "Interval",
        with = "duration_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub interval: Option<i64>,
    #[serde(
        rename = "Timeout",
        with = "duration_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<i64>,
    #[serde(
        rename = "DeregisterCriticalServiceAfter",
        with = "duration_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub deregister_critical_service_after: Option<i64>,
    #[serde(rename = "SuccessBeforePassing", skip_serializing_if = "is_zero")]
    pub success_before_passing: i64,
    #[serde(rename = "FailuresBeforeWarning", skip_serializing_if = "is_zero")]
    pub failures_before_warning: i64,
    #[serde(rename = "FailuresBeforeCritical", skip_serializing_if = "is_zero")]
    pub failures_before_critical: i64,
    #[serde(rename = "OutputMaxSize", skip_serializing_if = "is_zero")]
    pub output_max_size: i64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl CheckDefinition {
    pub fn is_script(&self) -> bool {
        !self.args.is_empty()
    }

    pub fn is_alias(&self) -> bool {
        !self.alias_service.is_empty() || !self.alias_node.is_empty()
    }

    pub fn is_ttl(&self) -> bool {
        self.ttl.is_some()
    }

    /// Consul's `CheckType.Type()`.
    pub fn kind(&self) -> &'static str {
        if !self.grpc.is_empty() {
            "grpc"
        } else if !self.http.is_empty() {
            "http"
        } else if self.is_ttl() {
            "ttl"
        } else if !self.tcp.is_empty() {
            "tcp"
        } else if !self.udp.is_empty() {
            "udp"
        } else if self.is_alias() {
            "alias"
        } else if !self.docker_container_id.is_empty() {
            "docker"
        } else if self.is_script() {
            "script"
        } else if !self.h2ping.is_empty() {
            "h2ping"
        } else {
            ""
        }
    }

    /// Consul's `CheckType.Validate()`, with its messages.
    pub fn validate(&self) -> Result<(), String> {
        let interval_check = self.is_script()
            || !self.http.is_empty()
            || !self.tcp.is_empty()
            || !self.udp.is_empty()
            || !self.grpc.is_empty()
            || !self.h2ping.is_empty();
        let interval = self.interval.is_some_and(|d| d > 0);
        let ttl = self.ttl.is_some_and(|d| d > 0);
        if interval && ttl {
            return Err("Interval and TTL cannot both be specified".into());
        }
        if interval_check && !interval {
            return Err(
                "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks"
                    .into(),
            );
        }
        if interval_check && self.is_alias() {
            return Err("Interval cannot be set for Alias checks".into());
        }
        if self.is_alias() && ttl {
            return Err("TTL must be not be set for Alias checks".into());
        }
        if !interval_check && !self.is_alias() && !ttl {
            return Err("TTL must be > 0 for TTL checks".into());
        }
        if self.output_max_size < 0 {
            return Err("MaxOutputMaxSize must be positive".into());
        }
        Ok(())
    }
}

/// What the health and checks endpoints return for one check (Consul's `api.HealthCheck`).
#[derive(Debug, Serialize)]
pub struct CheckView<'a> {
    #[serde(rename = "Node")]
    pub node: &'static str,
    #[serde(rename = "CheckID")]
    pub check_id: &'a str,
    #[serde(rename = "Name")]
    pub name: &'a str,
    #[serde(rename = "Status")]
    pub status: &'a str,
    #[serde(rename = "Notes")]
    pub notes: &'a str,
    #[serde(rename = "Output")]
    pub output: &'a str,
    #[serde(rename = "ServiceID")]
    pub service_id: &'a str,
    #[serde(rename = "ServiceName")]
    pub service_name: &'a str,
    #[serde(rename = "ServiceTags")]
    pub service_tags: &'a [String],
    #[serde(rename = "Type")]
    pub kind: &'static str,
    #[serde(rename = "Definition")]
    pub definition: &'a CheckDefinition,
}

impl<'a> CheckView<'a> {
    pub fn new(check: &'a HealthCheck, state: &'a AgentState) -> CheckView<'a> {
        let tags = state
            .services
            .get(&check.service_id)
            .map_or(&[][..], |s| s.tags.as_slice());
        CheckView {
            node: NODE_NAME,
            check_id: &check.check_id,
            name: &check.name,
            status: &check.status,
            notes: &check.notes,
            output: &check.output,
            service_id: &check.service_id,
            service_name: &check.service_name,
            service_tags: tags,
            kind: check.kind(),
            definition: &check.definition,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(id: &str) -> AgentService {
        AgentService {
            kind: String::new(),
            id: id.into(),
            service: "web".into(),
            tags: vec![],
            meta: BTreeMap::new(),
            port: 80,
            address: String::new(),
            tagged_addresses: BTreeMap::new(),
            weights: Weights {
                passing: 3,
                warning: 1,
            },
            enable_tag_override: false,
        }
    }

    fn check(id: &str, service: &str, status: &str) -> HealthCheck {
        HealthCheck {
            check_id: id.into(),
            name: id.into(),
            status: status.into(),
            notes: String::new(),
            output: String::new(),
            service_id: service.into(),
            service_name: "web".into(),
            definition: CheckDefinition::default(),
        }
    }

    #[test]
    fn instances_aggregate_their_checks() {
        let mut st = AgentState::default();
        for id in ["a", "b", "c", "d"] {
            st.services.insert(id.into(), service(id));
        }
        st.checks.insert("b1".into(), check("b1", "b", PASSING));
        st.checks.insert("b2".into(), check("b2", "b", WARNING));
        st.checks.insert("c1".into(), check("c1", "c", CRITICAL));
        st.checks.insert("c2".into(), check("c2", "c", WARNING));
        let m = format!("{MAINTENANCE_PREFIX}d");
        st.checks.insert(m.clone(), check(&m, "d", CRITICAL));
        st.checks.insert("d1".into(), check("d1", "d", WARNING));
        let got: Vec<_> = st
            .instances()
            .into_iter()
            .map(|i| (i.id, i.status, i.maintenance, i.address, i.port))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".into(), HealthStatus::Passing, false, String::new(), 80),
                ("b".into(), HealthStatus::Warning, false, String::new(), 80),
                ("c".into(), HealthStatus::Critical, false, String::new(), 80),
                ("d".into(), HealthStatus::Warning, true, String::new(), 80),
            ]
        );
    }

    #[test]
    fn service_json_omits_empty_kind_and_tagged_addresses() {
        let svc = service("a");
        let v = serde_json::to_value(ServiceView::new(&svc)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ID":"a","Service":"web","Tags":[],"Meta":{},"Port":80,
                "Address":"","Weights":{"Passing":3,"Warning":1},"EnableTagOverride":false,
                "Datacenter":"dc1"})
        );
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut st = AgentState::default();
        st.services.insert("a".into(), service("a"));
        let mut c = check("a1", "a", PASSING);
        c.definition.ttl = Some(10_000_000_000);
        c.definition.interval = None;
        st.checks.insert("a1".into(), c);
        let text = serde_json::to_string(&st).unwrap();
        assert!(text.contains(r#""TTL":"10s""#), "{text}");
        let back: AgentState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, st);
    }
}
