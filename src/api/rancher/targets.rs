//! How services that are not plain Consul names become routing targets.
//!
//! The data plane groups targets by service *name* (`config::PortRule::service_id` is matched
//! against `config::Instance::service`). A plain `service` (or load balancer) stands for the
//! instances named like it; the two other kinds get a synthetic service name that no Rancher
//! name can take (Rancher names are `[a-zA-Z0-9-]`), and synthetic instances under it:
//!
//! * an **external service** `1s5` is `externalService:1s5`, one instance per address
//!   (`1s5:127.0.0.2`), equal weight, reached at the rule's `targetPort`; a `hostname` one uses
//!   the addresses its name resolved to ([`Resolved`], runtime state, not persisted);
//! * an **alias** (`dnsService`) `1s7` is `dnsService:1s7`, whose instances are copies of the
//!   instances of every service linked to it, followed through nested aliases (`1s7/web-1`),
//!   each keeping its own port, weights, health and maintenance.
//!
//! One synthetic service per alias, rather than one rule per linked service, because routes
//! are chosen per request by host/path/priority: several rules with the same match would
//! send everything to one of them, while one group over the union balances across all of
//! them by their own weights.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use serde_json::Value;

use super::model::{Kind, RancherState, Service};
use crate::api::ApiError;
use crate::config::{HealthStatus, Instance, Weights};

/// Addresses that hostnames of external services resolved to, keyed by lowercase hostname.
pub type Resolved = HashMap<String, Vec<IpAddr>>;

/// The service name the data plane knows `s` by.
pub fn target_name(s: &Service) -> String {
    match s.kind {
        Kind::Service | Kind::LoadBalancerService => s.name.clone(),
        Kind::ExternalService => format!("externalService:{}", s.id),
        Kind::DnsService => format!("dnsService:{}", s.id),
    }
}

/// The IPs an external service lists (unparsable entries are refused on write, skipped here).
pub fn external_ips(s: &Service) -> Vec<IpAddr> {
    s.fields
        .get("externalIpAddresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|ip| ip.trim().parse().ok())
        .collect()
}

/// The hostname of an external service, lowercased, if it has one.
pub fn external_hostname(s: &Service) -> Option<String> {
    s.fields
        .get("hostname")
        .and_then(Value::as_str)
        .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
        .filter(|h| !h.is_empty())
}

impl RancherState {
    /// Every hostname some external service needs resolved.
    pub fn external_hostnames(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .services
            .iter()
            .filter(|s| s.kind == Kind::ExternalService)
            .filter_map(external_hostname)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The synthetic instances of external services and aliases, given the instances known by
    /// name (`base`: file config and Consul agent) and the resolved hostnames.
    pub fn synthetic_instances(&self, base: &[Instance], resolved: &Resolved) -> Vec<Instance> {
        let mut external = Vec::new();
        for s in self
            .services
            .iter()
            .filter(|s| s.kind == Kind::ExternalService)
        {
            let ips = match external_hostname(s) {
                Some(h) => resolved.get(&h).cloned().unwrap_or_default(),
                None => external_ips(s),
            };
            let service = target_name(s);
            let mut seen = HashSet::new();
            for ip in ips.into_iter().filter(|ip| seen.insert(*ip)) {
                external.push(Instance {
                    id: format!("{}:{ip}", s.id),
                    service: service.clone(),
                    address: ip.to_string(),
                    port: 0,
                    weights: Weights::default(),
                    status: HealthStatus::Passing,
                    maintenance: false,
                });
            }
        }
        let mut by_name: HashMap<&str, Vec<&Instance>> = HashMap::new();
        for inst in base.iter().chain(&external) {
            by_name.entry(inst.service.as_str()).or_default().push(inst);
        }
        let mut aliases = Vec::new();
        for alias in self.services.iter().filter(|s| s.kind == Kind::DnsService) {
            let service = target_name(alias);
            let mut seen = HashSet::new();
            for inst in self.alias_members(alias, &by_name) {
                if !seen.insert(inst.id.as_str()) {
                    continue;
                }
                aliases.push(Instance {
                    id: format!("{}/{}", alias.id, inst.id),
                    service: service.clone(),
                    ..inst.clone()
                });
            }
        }
        external.extend(aliases);
        external
    }

    /// The instances an alias stands for: those of every linked service, through nested
    /// aliases (each alias visited once, so even a cycle in a stored state terminates).
    fn alias_members<'a>(
        &self,
        alias: &Service,
        by_name: &HashMap<&str, Vec<&'a Instance>>,
    ) -> Vec<&'a Instance> {
        let mut out = Vec::new();
        let mut visited: HashSet<&str> = HashSet::from([alias.id.as_str()]);
        let mut stack: Vec<&Service> = vec![alias];
        while let Some(a) = stack.pop() {
            for link in &a.links {
                let Some(t) = self.service(&link.service_id) else {
                    continue;
                };
                if t.kind == Kind::DnsService {
                    if visited.insert(t.id.as_str()) {
                        stack.push(t);
                    }
                    continue;
                }
                let name = target_name(t);
                out.extend(by_name.get(name.as_str()).into_iter().flatten().copied());
            }
        }
        out
    }
}

/// The alias cycle `s` would close if written as it is (ids, first == last), if any.
///
/// The stored graph is kept acyclic, so a new cycle must pass through `s`: search from `s`
/// over alias links (iteratively, so a long chain cannot exhaust the stack).
pub fn alias_cycle(state: &RancherState, s: &Service) -> Option<Vec<String>> {
    if s.kind != Kind::DnsService {
        return None;
    }
    let lookup = |id: &str| -> Option<&Service> {
        if s.id.eq_ignore_ascii_case(id) {
            Some(s)
        } else {
            state.service(id)
        }
    };
    let mut parent: HashMap<String, String> = HashMap::new();
    let mut seen: HashSet<String> = HashSet::from([s.id.clone()]);
    let mut stack = vec![s.id.clone()];
    while let Some(cur) = stack.pop() {
        let Some(node) = lookup(&cur) else {
            continue;
        };
        for link in &node.links {
            let Some(t) = lookup(&link.service_id).filter(|t| t.kind == Kind::DnsService) else {
                continue;
            };
            if t.id == s.id {
                let mut path = vec![s.id.clone()];
                let mut c = cur.clone();
                while c != s.id {
                    path.push(c.clone());
                    let Some(p) = parent.get(&c) else {
                        break;
                    };
                    c = p.clone();
                }
                path.push(s.id.clone());
                path.reverse();
                return Some(path);
            }
            if seen.insert(t.id.clone()) {
                parent.insert(t.id.clone(), cur.clone());
                stack.push(t.id.clone());
            }
        }
    }
    None
}

/// Kind-specific rules of a service about to be written: an external service's addresses
/// (IPs xor one hostname), and no alias cycles.
pub fn check(state: &RancherState, s: &Service) -> Result<(), ApiError> {
    match s.kind {
        Kind::ExternalService => check_external(s),
        Kind::DnsService => match alias_cycle(state, s) {
            Some(path) => {
                let names: Vec<String> = path
                    .iter()
                    .map(|id| {
                        let name = if *id == s.id {
                            Some(s.name.as_str())
                        } else {
                            state.service(id).map(|x| x.name.as_str())
                        };
                        format!("{} ({id})", name.unwrap_or("?"))
                    })
                    .collect();
                Err(ApiError::invalid(
                    "InvalidReference",
                    "serviceLinks",
                    format!("alias cycle: {}", names.join(" -> ")),
                ))
            }
            None => Ok(()),
        },
        Kind::Service | Kind::LoadBalancerService => Ok(()),
    }
}

fn check_external(s: &Service) -> Result<(), ApiError> {
    let ips = s
        .fields
        .get("externalIpAddresses")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    for ip in ips {
        let ok = ip
            .as_str()
            .is_some_and(|t| t.trim().parse::<IpAddr>().is_ok());
        if !ok {
            return Err(ApiError::invalid(
                "InvalidFormat",
                "externalIpAddresses",
                format!("externalIpAddresses: {ip} is not an IP address"),
            ));
        }
    }
    let hostname = s.fields.get("hostname").and_then(Value::as_str);
    if let Some(h) = hostname {
        let h = h.trim().trim_end_matches('.');
        let valid = !h.is_empty()
            && h.len() <= 253
            && h.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(ApiError::invalid(
                "InvalidFormat",
                "hostname",
                format!("hostname: {h:?} is not a valid DNS name"),
            ));
        }
        if !ips.is_empty() {
            return Err(ApiError::invalid(
                "InvalidOption",
                "hostname",
                "an external service has either externalIpAddresses or a hostname, not both",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Map};

    use super::*;
    use crate::api::rancher::model::ServiceLink;
    use crate::api::rancher::state_machine::ServiceState;

    fn svc(id: &str, name: &str, kind: Kind, fields: Value, links: &[&str]) -> Service {
        Service {
            id: id.into(),
            kind,
            name: name.into(),
            description: None,
            state: ServiceState::Active,
            uuid: "u".into(),
            created: 0,
            fields: fields.as_object().cloned().unwrap_or_else(Map::new),
            lb_config: None,
            legacy: false,
            links: links
                .iter()
                .map(|l| ServiceLink {
                    service_id: (*l).into(),
                    name: None,
                    ports: vec![],
                })
                .collect(),
            upgrade: None,
            previous_launch_config: None,
        }
    }

    fn inst(id: &str, service: &str, port: u16, passing: u32) -> Instance {
        Instance {
            id: id.into(),
            service: service.into(),
            address: "127.0.0.1".into(),
            port,
            weights: Weights {
                passing,
                warning: 1,
            },
            status: HealthStatus::Passing,
            maintenance: false,
        }
    }

    #[test]
    fn external_ips_become_equal_instances() {
        let mut st = RancherState::default();
        let ips = json!({"externalIpAddresses": ["127.0.0.2", "127.0.0.3", "127.0.0.2"]});
        st.services
            .push(svc("1s1", "ext", Kind::ExternalService, ips, &[]));
        let out = st.synthetic_instances(&[], &Resolved::new());
        let ids: Vec<_> = out.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["1s1:127.0.0.2", "1s1:127.0.0.3"]);
        assert!(out.iter().all(|i| i.service == "externalService:1s1"
            && i.port == 0
            && i.effective_weight() == 1));
    }

    #[test]
    fn hostnames_use_the_resolved_addresses() {
        let mut st = RancherState::default();
        let h = json!({"hostname": "LocalHost."});
        st.services
            .push(svc("1s1", "ext", Kind::ExternalService, h, &[]));
        assert_eq!(st.external_hostnames(), ["localhost"]);
        assert!(st.synthetic_instances(&[], &Resolved::new()).is_empty());
        let resolved = Resolved::from([(
            "localhost".to_string(),
            vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
        )]);
        let out = st.synthetic_instances(&[], &resolved);
        let addrs: Vec<_> = out.iter().map(|i| i.address.as_str()).collect();
        assert_eq!(addrs, ["127.0.0.1", "::1"]);
    }

    #[test]
    fn alias_expands_to_the_union_with_own_weights() {
        let mut st = RancherState::default();
        st.services
            .push(svc("1s1", "web", Kind::Service, json!({}), &[]));
        st.services
            .push(svc("1s2", "api", Kind::Service, json!({}), &[]));
        let ext = json!({"externalIpAddresses": ["127.0.0.9"]});
        st.services
            .push(svc("1s3", "ext", Kind::ExternalService, ext, &[]));
        st.services.push(svc(
            "1s4",
            "inner",
            Kind::DnsService,
            json!({}),
            &["1s2", "1s3"],
        ));
        // Links to web, to the inner alias, and to web again through nothing new.
        st.services.push(svc(
            "1s5",
            "outer",
            Kind::DnsService,
            json!({}),
            &["1s1", "1s4", "1s99"],
        ));
        let mut w2 = inst("w2", "web", 8002, 1);
        w2.status = HealthStatus::Critical;
        let base = vec![
            inst("w1", "web", 8001, 3),
            w2,
            inst("a1", "api", 9001, 5),
            inst("x1", "other", 1, 1),
        ];
        let out = st.synthetic_instances(&base, &Resolved::new());
        let outer: Vec<_> = out
            .iter()
            .filter(|i| i.service == "dnsService:1s5")
            .map(|i| (i.id.as_str(), i.port, i.effective_weight()))
            .collect();
        assert_eq!(
            outer,
            [
                ("1s5/w1", 8001, 3),
                ("1s5/w2", 8002, 0),
                ("1s5/a1", 9001, 5),
                ("1s5/1s3:127.0.0.9", 0, 1),
            ]
        );
        let inner = out.iter().filter(|i| i.service == "dnsService:1s4").count();
        assert_eq!(inner, 2);
    }

    #[test]
    fn rules_to_externals_and_aliases_use_the_synthetic_names() {
        use crate::api::rancher::model::{LbConfig, PortRule};
        let mut st = RancherState::default();
        let ips = json!({"externalIpAddresses": ["127.0.0.2"]});
        st.services
            .push(svc("1s1", "ext", Kind::ExternalService, ips, &[]));
        st.services
            .push(svc("1s2", "both", Kind::DnsService, json!({}), &["1s1"]));
        st.services
            .push(svc("1s3", "web", Kind::Service, json!({}), &[]));
        let rule = |target: &str, port: u16| PortRule {
            source_port: port,
            protocol: "http".into(),
            hostname: None,
            path: None,
            target_port: Some(80),
            service_id: Some(target.into()),
            priority: None,
            selector: None,
            backend_name: None,
            environment: None,
            region: None,
            weight: None,
        };
        let mut lb = svc("1s4", "lb", Kind::LoadBalancerService, json!({}), &[]);
        lb.lb_config = Some(LbConfig {
            port_rules: vec![rule("1s1", 1), rule("1s2", 2), rule("1s3", 3)],
            ..LbConfig::default()
        });
        st.services.push(lb);
        let lbs = st.load_balancers();
        let names: Vec<_> = lbs[0]
            .lb_config
            .port_rules
            .iter()
            .map(|r| r.service_id.as_str())
            .collect();
        assert_eq!(names, ["externalService:1s1", "dnsService:1s2", "web"]);
        let synthetic = st.synthetic_instances(&[], &Resolved::new());
        let alias: Vec<_> = synthetic
            .iter()
            .filter(|i| i.service == "dnsService:1s2")
            .map(|i| (i.id.as_str(), i.address.as_str()))
            .collect();
        assert_eq!(alias, [("1s2/1s1:127.0.0.2", "127.0.0.2")]);
    }

    #[test]
    fn cycles_are_found_through_the_written_service() {
        let mut st = RancherState::default();
        st.services
            .push(svc("1s1", "web", Kind::Service, json!({}), &[]));
        st.services
            .push(svc("1s2", "a", Kind::DnsService, json!({}), &["1s3"]));
        st.services
            .push(svc("1s3", "b", Kind::DnsService, json!({}), &["1s1"]));
        // b → a closes a → b → a.
        let b = svc("1s3", "b", Kind::DnsService, json!({}), &["1s1", "1s2"]);
        assert_eq!(
            alias_cycle(&st, &b).unwrap(),
            ["1s3", "1s2", "1s3"].map(String::from)
        );
        let e = check(&st, &b).unwrap_err();
        assert_eq!(e.code, "InvalidReference");
        assert!(
            e.message.contains("b (1s3) -> a (1s2) -> b (1s3)"),
            "{}",
            e.message
        );
        // Self-link.
        let a = svc("1s2", "a", Kind::DnsService, json!({}), &["1s2"]);
        assert_eq!(
            alias_cycle(&st, &a).unwrap(),
            ["1s2", "1s2"].map(String::from)
        );
        // A diamond is not a cycle.
        let c = svc("1s4", "c", Kind::DnsService, json!({}), &["1s2", "1s3"]);
        assert!(alias_cycle(&st, &c).is_none());
        // A long chain is searched without recursion.
        let mut st = RancherState::default();
        for i in 1..=2_000u32 {
            let next = format!("1s{}", i + 1);
            st.services.push(svc(
                &format!("1s{i}"),
                "x",
                Kind::DnsService,
                json!({}),
                &[next.as_str()],
            ));
        }
        let last = svc("1s2001", "last", Kind::DnsService, json!({}), &["1s1"]);
        assert_eq!(alias_cycle(&st, &last).map(|p| p.len()), Some(2_002));
    }

    #[test]
    fn external_addresses_are_checked() {
        let st = RancherState::default();
        let ok = |f: Value| check(&st, &svc("1s1", "e", Kind::ExternalService, f, &[]));
        assert!(ok(json!({"externalIpAddresses": ["10.0.0.1", "::1"]})).is_ok());
        assert!(ok(json!({"hostname": "db.example.com"})).is_ok());
        assert!(ok(json!({"hostname": "db.example.com", "externalIpAddresses": []})).is_ok());
        let code = |f: Value| ok(f).unwrap_err().code;
        assert_eq!(
            code(json!({"hostname": "a.b", "externalIpAddresses": ["10.0.0.1"]})),
            "InvalidOption"
        );
        assert_eq!(
            code(json!({"externalIpAddresses": ["nope"]})),
            "InvalidFormat"
        );
        assert_eq!(code(json!({"hostname": "bad host"})), "InvalidFormat");
    }
}
