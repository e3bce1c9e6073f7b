//! Compiling a [`Config`] into a [`RoutingTable`]: every check that decides whether a
//! configuration can be served lives here, so a table that exists is a table that works.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use super::routes::{Route, RouteSet};
use super::{GroupId, HostPattern, HostPatternError, Listener, RoutingTable};
use crate::balance::{Target, TargetGroup, TargetState};
use crate::config::{Config, HealthStatus, Instance, Protocol};
use crate::metrics::Metrics;
use crate::tls::cache::Parsed;
use crate::tls::{CertCache, CertResolver, TlsContext};

/// What a build needs besides the configuration.
pub struct BuildContext<'a> {
    /// The number the new table gets.
    pub generation: u64,
    /// Ports no rule may claim (the control listener's).
    pub reserved_ports: &'a [u16],
    /// Where the table's metric handles come from.
    pub metrics: &'a Metrics,
    /// Session cache and ticket keys every TLS configuration shares.
    pub tls: &'a TlsContext,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("port {port} is claimed by load balancers {first:?} and {second:?}")]
    PortConflict {
        port: u16,
        first: String,
        second: String,
    },
    #[error("port {port} is reserved (control listener)")]
    PortReserved { port: u16 },
    #[error("load balancer {lb:?}: port {port} mixes protocols {a} and {b}")]
    MixedProtocols {
        lb: String,
        port: u16,
        a: Protocol,
        b: Protocol,
    },
    #[error("load balancer {lb:?}, rule {rule}: {source}")]
    Hostname {
        lb: String,
        rule: usize,
        source: HostPatternError,
    },
    #[error("load balancer {lb:?}, rule {rule}: path {path:?} must start with '/'")]
    Path {
        lb: String,
        rule: usize,
        path: String,
    },
    #[error("load balancer {lb:?}, rule {rule}: sourcePort must be 1-65535")]
    SourcePort { lb: String, rule: usize },
    #[error("certificate {id:?}: {message}")]
    Certificate { id: String, message: String },
    #[error("load balancer {lb:?} refers to unknown certificate {id:?}")]
    UnknownCertificate { lb: String, id: String },
    #[error("duplicate load balancer name {0:?}")]
    DuplicateLoadBalancer(String),
    #[error("duplicate service instance ID {0:?}")]
    DuplicateInstance(String),
}

/// Compiles `config` into a table.
pub fn build(config: &Config, ctx: &BuildContext<'_>) -> Result<RoutingTable, BuildError> {
    let BuildContext {
        generation,
        reserved_ports,
        metrics,
        tls,
    } = *ctx;
    let instances = index_instances(&config.services)?;
    let certificates = load_certificates(&config.certificates, &tls.certs)?;
    let mut groups = GroupBuilder::new(&instances, metrics);
    let mut by_port: BTreeMap<u16, (Listener, Vec<Route>)> = BTreeMap::new();
    let mut lb_names = HashSet::new();

    for lb in &config.load_balancers {
        if !lb_names.insert(lb.name.as_str()) {
            return Err(BuildError::DuplicateLoadBalancer(lb.name.clone()));
        }
        let lb_name: Arc<str> = lb.name.as_str().into();
        let stickiness = lb.lb_config.stickiness_policy.clone().map(Arc::new);
        let resolver = cert_resolver(lb, &certificates)?;
        for (i, rule) in lb.lb_config.port_rules.iter().enumerate() {
            let err_lb = || lb.name.clone();
            if rule.source_port == 0 {
                return Err(BuildError::SourcePort {
                    lb: err_lb(),
                    rule: i,
                });
            }
            if reserved_ports.contains(&rule.source_port) {
                return Err(BuildError::PortReserved {
                    port: rule.source_port,
                });
            }
            let host =
                HostPattern::parse(rule.hostname.as_deref().unwrap_or("")).map_err(|source| {
                    BuildError::Hostname {
                        lb: err_lb(),
                        rule: i,
                        source,
                    }
                })?;
            // Only HTTP routes on paths; a stream listener sees no path.
            let path = match rule.protocol {
                Protocol::Http | Protocol::Https => rule.path.as_deref().unwrap_or(""),
                _ => "",
            };
            if !path.is_empty() && !path.starts_with('/') {
                return Err(BuildError::Path {
                    lb: err_lb(),
                    rule: i,
                    path: path.to_string(),
                });
            }
            let group = groups.group(&rule.service_id, rule.target_port);
            let route = Route {
                host,
                // "/" and "" both mean "every path".
                path: if path == "/" { "" } else { path }.into(),
                priority: rule.priority,
                group,
                service: rule.service_id.as_str().into(),
                name: format!("{}#{i}", lb.name).into(),
                sticky: stickiness
                    .as_ref()
                    .map(|_| metrics.sticky_handles(&rule.service_id)),
            };
            let (listener, routes) = by_port.entry(rule.source_port).or_insert_with(|| {
                let label = format!("{}/{}", rule.source_port, rule.protocol);
                (
                    Listener {
                        port: rule.source_port,
                        protocol: rule.protocol,
                        load_balancer: lb_name.clone(),
                        metrics: metrics.listener(&label),
                        label: label.into(),
                        routes: RouteSet::default(),
                        stickiness: stickiness.clone(),
                        tls: match rule.protocol {
                            Protocol::Https => {
                                Some(tls.server_config(resolver.clone(), &[b"h2", b"http/1.1"]))
                            }
                            Protocol::Tls => Some(tls.server_config(resolver.clone(), &[])),
                            _ => None,
                        },
                    },
                    Vec::new(),
                )
            });
            if listener.load_balancer != lb_name {
                return Err(BuildError::PortConflict {
                    port: rule.source_port,
                    first: listener.load_balancer.to_string(),
                    second: lb.name.clone(),
                });
            }
            if listener.protocol != rule.protocol {
                return Err(BuildError::MixedProtocols {
                    lb: lb.name.clone(),
                    port: rule.source_port,
                    a: listener.protocol,
                    b: rule.protocol,
                });
            }
            routes.push(route);
        }
    }

    let listeners = by_port
        .into_iter()
        .map(|(port, (mut listener, routes))| {
            listener.routes = RouteSet::new(routes);
            (port, listener)
        })
        .collect();
    Ok(RoutingTable {
        generation,
        listeners,
        groups: groups.finish(),
        certificates: certificates
            .iter()
            .map(|(id, c)| (Arc::from(*id), c.info.not_after_unix))
            .collect(),
        timeouts: config.timeouts,
        limits: config.limits,
    })
}

/// Every certificate of the configuration, from inline PEM or from files, parsed or taken from
/// `cache` (which then forgets the ones no longer configured).
fn load_certificates<'c>(
    certs: &'c [crate::config::Certificate],
    cache: &CertCache,
) -> Result<HashMap<&'c str, Arc<Parsed>>, BuildError> {
    let mut loaded = HashMap::new();
    let mut used = HashSet::new();
    for c in certs {
        let fail = |message: String| BuildError::Certificate {
            id: c.id.clone(),
            message,
        };
        let read = |inline: &Option<String>, path: &Option<String>, what: &str| match (inline, path)
        {
            (Some(pem), _) => Ok(pem.clone()),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| fail(format!("cannot read {what} {path}: {e}"))),
            (None, None) => Err(fail(format!("no {what} (inline PEM or path)"))),
        };
        let cert_pem = read(&c.cert, &c.cert_path, "certificate")?;
        let key_pem = read(&c.key, &c.key_path, "key")?;
        let (digest, parsed) = cache
            .get_or_parse(&cert_pem, &key_pem, c.cert_chain.as_deref())
            .map_err(|e| fail(e.to_string()))?;
        used.insert(digest);
        loaded.insert(c.id.as_str(), parsed);
    }
    cache.retain(&used);
    Ok(loaded)
}

/// The certificates of one load balancer, by SNI name, with its default.
fn cert_resolver(
    lb: &crate::config::LoadBalancer,
    certificates: &HashMap<&str, Arc<Parsed>>,
) -> Result<CertResolver, BuildError> {
    let find = |id: &str| {
        certificates
            .get(id)
            .ok_or_else(|| BuildError::UnknownCertificate {
                lb: lb.name.clone(),
                id: id.to_string(),
            })
    };
    let mut builder = CertResolver::builder();
    for id in &lb.lb_config.certificate_ids {
        let c = find(id)?;
        builder.add_cert(&c.info, c.key.clone());
    }
    if let Some(id) = &lb.lb_config.default_certificate_id {
        let c = find(id)?;
        builder.add_cert(&c.info, c.key.clone());
        builder.set_default(c.key.clone());
    }
    Ok(builder.build())
}

fn index_instances(services: &[Instance]) -> Result<HashMap<&str, Vec<&Instance>>, BuildError> {
    let mut seen = std::collections::HashSet::new();
    let mut by_service: HashMap<&str, Vec<&Instance>> = HashMap::new();
    for inst in services {
        if !seen.insert(inst.id.as_str()) {
            return Err(BuildError::DuplicateInstance(inst.id.clone()));
        }
        by_service
            .entry(inst.service.as_str())
            .or_default()
            .push(inst);
    }
    Ok(by_service)
}

/// Target groups keyed by (service, target port): rules that share both share one balancer.
struct GroupBuilder<'a> {
    instances: &'a HashMap<&'a str, Vec<&'a Instance>>,
    metrics: &'a Metrics,
    ids: HashMap<(String, Option<u16>), GroupId>,
    groups: Vec<Arc<TargetGroup>>,
}

impl<'a> GroupBuilder<'a> {
    fn new(instances: &'a HashMap<&'a str, Vec<&'a Instance>>, metrics: &'a Metrics) -> Self {
        GroupBuilder {
            instances,
            metrics,
            ids: HashMap::new(),
            groups: Vec::new(),
        }
    }

    fn group(&mut self, service: &str, target_port: Option<u16>) -> GroupId {
        let key = (service.to_string(), target_port);
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let targets = self
            .instances
            .get(service)
            .into_iter()
            .flatten()
            .filter_map(|inst| target(inst, target_port, self.metrics))
            .collect();
        let id = self.groups.len();
        self.groups.push(Arc::new(TargetGroup::new(
            service.into(),
            targets,
            self.metrics.service(service),
        )));
        self.ids.insert(key, id);
        id
    }

    fn finish(self) -> Vec<Arc<TargetGroup>> {
        self.groups
    }
}

/// Where an instance is reached for a rule: its own port, else the rule's `targetPort`.
/// An instance with neither, or whose address does not resolve, is left out (and logged).
fn target(inst: &Instance, target_port: Option<u16>, metrics: &Metrics) -> Option<Target> {
    let port = match (inst.port, target_port) {
        (0, None) => {
            tracing::warn!(instance = %inst.id, "instance has no Port and the rule no targetPort");
            return None;
        }
        (0, Some(p)) => p,
        (p, _) => p,
    };
    let ip = resolve(&inst.address)?;
    let state = match (inst.maintenance, inst.status) {
        (true, _) => TargetState::Maintenance,
        (false, HealthStatus::Passing) => TargetState::Passing,
        (false, HealthStatus::Warning) => TargetState::Warning,
        (false, HealthStatus::Critical) => TargetState::Critical,
    };
    Some(Target {
        id: inst.id.as_str().into(),
        addr: SocketAddr::new(ip, port),
        weight: inst.effective_weight(),
        state,
        metrics: metrics.target(&inst.service, &inst.id),
        cookie: crate::sticky::CookieId::of(&inst.id),
    })
}

fn resolve(address: &str) -> Option<IpAddr> {
    if address.is_empty() {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    if let Ok(ip) = address.parse() {
        return Some(ip);
    }
    // A hostname: resolved once per build, off the request path.
    match (address, 0).to_socket_addrs() {
        Ok(mut addrs) => addrs.next().map(|a| a.ip()),
        Err(e) => {
            tracing::warn!(%address, error = %e, "cannot resolve instance address");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> Config {
        Config::from_json(json).unwrap()
    }

    fn build(
        config: &Config,
        generation: u64,
        reserved_ports: &[u16],
    ) -> Result<RoutingTable, BuildError> {
        let metrics = Metrics::new();
        super::build(
            config,
            &BuildContext {
                generation,
                reserved_ports,
                metrics: &metrics,
                tls: &TlsContext::new(),
            },
        )
    }

    #[test]
    fn builds_listeners_and_groups() {
        let c = cfg(r#"{
            "loadBalancers":[{"name":"lb","lbConfig":{"portRules":[
                {"sourcePort":8080,"serviceId":"web","targetPort":80,"hostname":"*.example.com"},
                {"sourcePort":8080,"serviceId":"api","path":"/api"}]}}],
            "services":[
                {"ID":"w1","Service":"web","Port":0,"Address":"10.0.0.1"},
                {"ID":"a1","Service":"api","Port":9000}]}"#);
        let t = build(&c, 7, &[]).unwrap();
        assert_eq!(t.generation(), 7);
        let l = t.listener(8080).unwrap();
        assert_eq!(&*l.label, "8080/http");
        let r = l.routes.lookup(Some("x.example.com"), "/").unwrap();
        let web = t.group(r.group);
        assert_eq!(web.targets()[0].addr, "10.0.0.1:80".parse().unwrap());
        let r = l.routes.lookup(Some("other"), "/api/v1").unwrap();
        assert_eq!(
            t.group(r.group).targets()[0].addr,
            "127.0.0.1:9000".parse().unwrap()
        );
    }

    #[test]
    fn conflicts_are_refused() {
        let two_lbs = cfg(r#"{"loadBalancers":[
            {"name":"a","lbConfig":{"portRules":[{"sourcePort":80,"serviceId":"x"}]}},
            {"name":"b","lbConfig":{"portRules":[{"sourcePort":80,"serviceId":"y"}]}}]}"#);
        assert!(matches!(
            build(&two_lbs, 1, &[]),
            Err(BuildError::PortConflict { port: 80, .. })
        ));
        let reserved = cfg(r#"{"loadBalancers":[
            {"name":"a","lbConfig":{"portRules":[{"sourcePort":9180,"serviceId":"x"}]}}]}"#);
        assert!(matches!(
            build(&reserved, 1, &[9180]),
            Err(BuildError::PortReserved { port: 9180 })
        ));
        let bad_host = cfg(r#"{"loadBalancers":[
            {"name":"a","lbConfig":{"portRules":[{"sourcePort":80,"serviceId":"x","hostname":"a b"}]}}]}"#);
        assert!(matches!(
            build(&bad_host, 1, &[]),
            Err(BuildError::Hostname { .. })
        ));
        let dup = cfg(r#"{"services":[{"ID":"a","Service":"x"},{"ID":"a","Service":"y"}]}"#);
        assert!(matches!(
            build(&dup, 1, &[]),
            Err(BuildError::DuplicateInstance(_))
        ));
    }

    #[test]
    fn weights_follow_health_and_maintenance() {
        let c = cfg(r#"{
            "loadBalancers":[{"name":"lb","lbConfig":{"portRules":[{"sourcePort":80,"serviceId":"web"}]}}],
            "services":[
                {"ID":"p","Service":"web","Port":1,"Weights":{"Passing":5,"Warning":2}},
                {"ID":"w","Service":"web","Port":2,"Weights":{"Passing":5,"Warning":2},"Status":"warning"},
                {"ID":"c","Service":"web","Port":3,"Status":"critical"},
                {"ID":"m","Service":"web","Port":4,"Maintenance":true}]}"#);
        let t = build(&c, 1, &[]).unwrap();
        let w: Vec<_> = t.groups()[0].targets().iter().map(|t| t.weight).collect();
        assert_eq!(w, [5, 2, 0, 0]);
    }
}
