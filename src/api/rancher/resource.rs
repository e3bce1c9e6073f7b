//! Rendering stored resources as GDAPI resources: every common field, absolute `links`, and
//! the `actions` valid now (both always objects, never null).

use serde_json::{json, Map, Value};

use super::model::{now_ms, rfc3339, RancherState, Service, StoredCertificate};
use super::schema;
use super::state_machine::{self, ServiceState};
use crate::api::audit::AuditEntry;

/// The `self` URL of a service or load balancer.
pub fn service_url(base: &str, s: &Service) -> String {
    format!("{base}/v1/{}/{}", s.kind.collection(), s.id)
}

pub fn certificate_url(base: &str, c: &StoredCertificate) -> String {
    format!("{base}/v1/certificates/{}", c.id)
}

fn actions(self_url: &str, names: impl Iterator<Item = &'static str>) -> Value {
    Value::Object(
        names
            .map(|a| (a.to_string(), json!(format!("{self_url}?action={a}"))))
            .collect(),
    )
}

/// The fields every resource has.
struct Head<'a> {
    id: &'a str,
    ty: &'a str,
    name: &'a str,
    description: Option<&'a str>,
    state: &'a str,
    uuid: &'a str,
    created: i64,
}

fn common(m: &mut Map<String, Value>, h: Head<'_>) {
    let Head {
        id,
        ty,
        name,
        description,
        state,
        uuid,
        created,
    } = h;
    m.insert("id".into(), json!(id));
    m.insert("type".into(), json!(ty));
    m.insert("kind".into(), json!(ty));
    m.insert("name".into(), json!(name));
    m.insert("description".into(), json!(description));
    m.insert("state".into(), json!(state));
    m.insert("uuid".into(), json!(uuid));
    m.insert("created".into(), json!(rfc3339(created)));
    m.insert("createdTS".into(), json!(created));
    let removed = (state == "removed").then(|| rfc3339(now_ms()));
    m.insert("removed".into(), json!(removed));
    m.insert("transitioning".into(), json!("no"));
    m.insert("transitioningMessage".into(), Value::Null);
    m.insert("transitioningProgress".into(), Value::Null);
}

/// A `service` or `loadBalancerService` resource.
pub fn service(state: &RancherState, s: &Service, base: &str) -> Value {
    let mut m = Map::new();
    common(
        &mut m,
        Head {
            id: &s.id,
            ty: s.kind.type_name(),
            name: &s.name,
            description: s.description.as_deref(),
            state: s.state.as_str(),
            uuid: &s.uuid,
            created: s.created,
        },
    );
    m.insert("baseType".into(), json!("service"));
    // Writable fields: as stored, else the schema's default, else null.
    if let Some(schema) = schema::get(s.kind.type_name()) {
        for f in schema.fields.iter().filter(|f| f.create || f.update) {
            if m.contains_key(f.name) || f.name == "lbConfig" {
                continue;
            }
            let v = s
                .fields
                .get(f.name)
                .cloned()
                .or_else(|| f.default.clone())
                .unwrap_or(Value::Null);
            m.insert(f.name.to_string(), v);
        }
    }
    if s.is_lb() {
        let cfg = s.lb_config.clone().unwrap_or_default();
        let cfg = serde_json::to_value(cfg).unwrap_or_else(|_| json!({}));
        m.insert("lbConfig".into(), cfg);
    }
    let linked: Map<String, Value> = s
        .links
        .iter()
        .filter_map(|l| {
            let target = state.service(&l.service_id)?;
            let key = l.name.clone().unwrap_or_else(|| target.name.clone());
            Some((key, json!(target.id)))
        })
        .collect();
    m.insert("linkedServices".into(), Value::Object(linked));
    m.insert("upgrade".into(), s.upgrade.clone().unwrap_or(Value::Null));
    let serving = s.state.serves();
    let scale = s.fields.get("scale").and_then(Value::as_i64).unwrap_or(1);
    m.insert(
        "currentScale".into(),
        json!(if serving { scale } else { 0 }),
    );
    m.insert(
        "healthState".into(),
        json!(if serving { "healthy" } else { "unhealthy" }),
    );
    m.insert("fqdn".into(), Value::Null);
    m.insert("vip".into(), Value::Null);
    m.insert("publicEndpoints".into(), json!([]));

    let self_url = service_url(base, s);
    m.insert(
        "links".into(),
        json!({"self": self_url, "consumedservices": format!("{self_url}/consumedservices")}),
    );
    let acts = if s.state == ServiceState::Removed {
        json!({})
    } else {
        actions(&self_url, state_machine::available(s.state))
    };
    m.insert("actions".into(), acts);
    Value::Object(m)
}

/// A `certificate` resource; the private key is never rendered.
pub fn certificate(c: &StoredCertificate, base: &str, removed: bool) -> Value {
    let mut m = Map::new();
    let state = if removed { "removed" } else { "active" };
    common(
        &mut m,
        Head {
            id: &c.id,
            ty: "certificate",
            name: &c.name,
            description: c.description.as_deref(),
            state,
            uuid: &c.uuid,
            created: c.created,
        },
    );
    m.insert("cert".into(), json!(c.cert));
    m.insert("certChain".into(), json!(c.cert_chain));
    for (k, v) in &c.facts {
        m.insert(k.clone(), v.clone());
    }
    let self_url = certificate_url(base, c);
    m.insert("links".into(), json!({ "self": self_url }));
    let acts = if removed {
        json!({})
    } else {
        actions(
            &self_url,
            state_machine::CERTIFICATE_ACTIONS.iter().copied(),
        )
    };
    m.insert("actions".into(), acts);
    Value::Object(m)
}

/// An `auditLog` resource (read-only: no actions).
pub fn audit_entry(e: &AuditEntry, base: &str) -> Value {
    let mut m = Map::new();
    common(
        &mut m,
        Head {
            id: &e.id,
            ty: "auditLog",
            name: "",
            description: e.description.as_deref(),
            state: "active",
            uuid: &e.id,
            created: e.created,
        },
    );
    m.insert("name".into(), Value::Null);
    m.insert("eventType".into(), json!(e.event_type));
    m.insert("resourceType".into(), json!(e.resource_type));
    m.insert("resourceId".into(), json!(e.resource_id));
    m.insert("authType".into(), json!(e.auth_type));
    m.insert(
        "authenticatedAsAccountId".into(),
        json!(e.authenticated_as_account_id),
    );
    m.insert("clientIp".into(), json!(e.client_ip));
    m.insert("requestMethod".into(), json!(e.request_method));
    m.insert("requestUrl".into(), json!(e.request_url));
    m.insert("responseCode".into(), json!(e.response_code));
    m.insert("requestObject".into(), e.request_object.clone());
    m.insert("runtime".into(), json!(e.runtime));
    m.insert(
        "links".into(),
        json!({ "self": format!("{base}/v1/auditlogs/{}", e.id) }),
    );
    m.insert("actions".into(), json!({}));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::rancher::model::{Kind, LbConfig, ServiceLink};

    fn svc(id: &str, name: &str, kind: Kind) -> Service {
        Service {
            id: id.into(),
            kind,
            name: name.into(),
            description: None,
            state: ServiceState::Inactive,
            uuid: "u".into(),
            created: 0,
            fields: Map::new(),
            lb_config: (kind == Kind::LoadBalancerService).then(LbConfig::default),
            legacy: false,
            links: vec![],
            upgrade: None,
            previous_launch_config: None,
        }
    }

    #[test]
    fn links_actions_and_fields() {
        let mut st = RancherState::default();
        st.services.push(svc("1s1", "web", Kind::Service));
        let mut lb = svc("1s2", "lb", Kind::LoadBalancerService);
        lb.links.push(ServiceLink {
            service_id: "1s1".into(),
            name: None,
            ports: vec![],
        });
        lb.links.push(ServiceLink {
            service_id: "1s1".into(),
            name: Some("alt".into()),
            ports: vec![],
        });
        let v = service(&st, &lb, "http://h:1");
        assert_eq!(v["type"], "loadBalancerService");
        assert_eq!(v["baseType"], "service");
        assert_eq!(v["links"]["self"], "http://h:1/v1/loadbalancerservices/1s2");
        assert_eq!(
            v["links"]["consumedservices"],
            "http://h:1/v1/loadbalancerservices/1s2/consumedservices"
        );
        assert_eq!(
            v["actions"]["activate"],
            "http://h:1/v1/loadbalancerservices/1s2?action=activate"
        );
        assert!(v["actions"].get("deactivate").is_none());
        assert_eq!(v["linkedServices"], json!({"web": "1s1", "alt": "1s1"}));
        assert_eq!(v["lbConfig"]["portRules"], json!([]));
        assert_eq!(v["lbConfig"]["certificateIds"], json!([]));
        assert_eq!(v["scale"], 1);
        assert_eq!(v["startOnCreate"], false);
        assert_eq!(v["transitioning"], "no");
        assert_eq!(v["created"], "1970-01-01T00:00:00Z");

        let plain = service(&st, &st.services[0], "http://h:1");
        assert!(plain.get("lbConfig").is_none());
        assert_eq!(plain["links"]["self"], "http://h:1/v1/services/1s1");
    }
}
