//! Writes on services and load balancers: create, partial update, delete, actions.
//!
//! Each function works on a copy of the state inside `Control::update`; an `Err` leaves the
//! real state untouched.

use serde_json::{Map, Value};

use super::legacy;
use super::model::{make_uuid, now_ms, Kind, LbConfig, RancherState, Service, ServiceLink};
use super::schema;
use super::state_machine::{transition, ServiceState, SERVICE_ACTIONS};
use super::targets;
use super::validate::{self, Mode};
use crate::api::ApiError;

/// Fields kept on the service record itself rather than in `fields`.
const OWN_FIELDS: &[&str] = &["name", "description", "lbConfig"];

fn schema_of(kind: Kind) -> Result<&'static schema::Schema, ApiError> {
    schema::get(kind.type_name()).ok_or_else(|| ApiError::not_found("no such type"))
}

fn invalid_ref(field: &str, id: &str) -> ApiError {
    ApiError::invalid(
        "InvalidReference",
        field,
        format!("{field}: {id:?} does not exist"),
    )
}

fn parse_lb_config(v: &Value) -> Result<LbConfig, ApiError> {
    serde_json::from_value(v.clone())
        .map_err(|e| ApiError::invalid("InvalidFormat", "lbConfig", format!("lbConfig: {e}")))
}

fn ensure_unique_name(
    state: &RancherState,
    name: &str,
    except: Option<&str>,
) -> Result<(), ApiError> {
    let taken = state
        .services
        .iter()
        .any(|s| s.name == name && Some(s.id.as_str()) != except);
    if taken {
        return Err(ApiError::invalid(
            "NotUnique",
            "name",
            format!("a service named {name:?} already exists"),
        ));
    }
    Ok(())
}

/// Every reference of `s` (rule targets, certificates, links) points at something that exists.
fn check_references(state: &RancherState, s: &Service) -> Result<(), ApiError> {
    for target in s.rule_targets() {
        if state.service(target).is_none() {
            return Err(invalid_ref("serviceId", target));
        }
    }
    if let Some(cfg) = &s.lb_config {
        for id in &cfg.certificate_ids {
            if state.certificate(id).is_none() {
                return Err(invalid_ref("certificateIds", id));
            }
        }
        if let Some(id) = &cfg.default_certificate_id {
            if state.certificate(id).is_none() {
                return Err(invalid_ref("defaultCertificateId", id));
            }
        }
    }
    for id in s.certificate_refs() {
        if state.certificate(&id).is_none() {
            return Err(invalid_ref("certificateIds", &id));
        }
    }
    for l in &s.links {
        if state.service(&l.service_id).is_none() {
            return Err(invalid_ref("serviceId", &l.service_id));
        }
    }
    targets::check(state, s)
}

/// Copies the validated writable fields into `s`.
fn apply_fields(s: &mut Service, fields: Map<String, Value>) -> Result<(), ApiError> {
    for (k, v) in fields {
        match k.as_str() {
            "name" => {
                if let Value::String(n) = v {
                    s.name = n;
                }
            }
            "description" => s.description = v.as_str().map(str::to_string),
            "lbConfig" => {
                if !v.is_null() {
                    s.lb_config = Some(parse_lb_config(&v)?);
                    s.legacy = false;
                }
            }
            _ if OWN_FIELDS.contains(&k.as_str()) => {}
            _ => {
                if v.is_null() {
                    s.fields.remove(&k);
                } else {
                    s.fields.insert(k, v);
                }
            }
        }
    }
    Ok(())
}

/// Creates a service (`kind`) from a request body; returns its id.
pub fn create(
    state: &mut RancherState,
    kind: Kind,
    body: &Map<String, Value>,
) -> Result<String, ApiError> {
    let fields = validate::check(schema_of(kind)?, body, Mode::Create)?;
    let name = fields
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    ensure_unique_name(state, name, None)?;
    let start = fields.get("startOnCreate").and_then(Value::as_bool) == Some(true);
    let legacy =
        kind == Kind::LoadBalancerService && fields.get("lbConfig").is_none_or(Value::is_null);
    let id = state.allocate_id('s');
    let created = now_ms();
    let mut s = Service {
        id: id.clone(),
        kind,
        name: name.to_string(),
        description: None,
        state: if start {
            ServiceState::Active
        } else {
            ServiceState::Inactive
        },
        uuid: make_uuid(state.next_id, created),
        created,
        fields: Map::new(),
        lb_config: (kind == Kind::LoadBalancerService).then(LbConfig::default),
        legacy,
        links: Vec::new(),
        upgrade: None,
        previous_launch_config: None,
    };
    apply_fields(&mut s, fields)?;
    check_references(state, &s)?;
    legacy::rederive(&mut s)?;
    state.services.push(s);
    Ok(id)
}

fn index_of(state: &RancherState, id: &str, kind: Option<Kind>) -> Result<usize, ApiError> {
    state
        .services
        .iter()
        .position(|s| s.id.eq_ignore_ascii_case(id) && kind.is_none_or(|k| k == s.kind))
        .ok_or_else(|| ApiError::not_found(format!("no service {id:?}")))
}

/// A partial update (PUT): only the fields given change; `lbConfig` is replaced whole.
pub fn update(
    state: &mut RancherState,
    id: &str,
    kind: Option<Kind>,
    body: &Map<String, Value>,
) -> Result<(), ApiError> {
    let i = index_of(state, id, kind)?;
    let mut s = state.services[i].clone();
    let fields = validate::check(schema_of(s.kind)?, body, Mode::Update)?;
    if let Some(name) = fields.get("name").and_then(Value::as_str) {
        ensure_unique_name(state, name, Some(&s.id))?;
    }
    apply_fields(&mut s, fields)?;
    check_references(state, &s)?;
    legacy::rederive(&mut s)?;
    state.services[i] = s;
    Ok(())
}

/// Removes a service; links to it go with it. Returns it in state `removed`.
pub fn delete(state: &mut RancherState, id: &str, kind: Option<Kind>) -> Result<Service, ApiError> {
    let i = index_of(state, id, kind)?;
    let mut gone = state.services.remove(i);
    for s in &mut state.services {
        let before = s.links.len();
        s.links
            .retain(|l| !l.service_id.eq_ignore_ascii_case(&gone.id));
        if s.links.len() != before {
            legacy::rederive(s)?;
        }
    }
    gone.state = ServiceState::Removed;
    Ok(gone)
}

/// What an action did.
pub enum Outcome {
    /// The service (still there) changed or not.
    Updated,
    /// `remove`: the service is gone; here is its last rendering's source.
    Removed(Box<Service>),
}

fn parse_link(v: &Value) -> Result<ServiceLink, ApiError> {
    serde_json::from_value(v.clone())
        .map_err(|e| ApiError::invalid("InvalidFormat", "serviceLink", format!("serviceLink: {e}")))
}

fn input(schema_id: &str, body: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    let s = schema::get(schema_id).ok_or_else(|| ApiError::not_found("no such type"))?;
    validate::check(s, body, Mode::Create)
}

/// Runs `action` on service `id` with the action's input `body`.
pub fn action(
    state: &mut RancherState,
    id: &str,
    kind: Option<Kind>,
    action: &str,
    body: &Map<String, Value>,
) -> Result<Outcome, ApiError> {
    let i = index_of(state, id, kind)?;
    if !SERVICE_ACTIONS.contains(&action) {
        return Err(ApiError::invalid(
            "InvalidAction",
            "action",
            format!("unknown action {action:?}"),
        ));
    }
    let mut s = state.services[i].clone();
    let Some(next) = transition(s.state, action) else {
        return Err(ApiError::invalid(
            "ActionNotAvailable",
            "action",
            format!(
                "action {action:?} is not available in state {}",
                s.state.as_str()
            ),
        ));
    };
    match action {
        "remove" => return delete(state, id, kind).map(|s| Outcome::Removed(Box::new(s))),
        "update" => {
            update(state, id, kind, body)?;
            return Ok(Outcome::Updated);
        }
        "addservicelink" | "removeservicelink" => {
            let input = input("addRemoveServiceLinkInput", body)?;
            let link = parse_link(input.get("serviceLink").unwrap_or(&Value::Null))?;
            let uuid = link.uuid();
            let pos = s.links.iter().position(|l| l.uuid() == uuid);
            match (action, pos) {
                ("addservicelink", Some(p)) => s.links[p] = link,
                ("addservicelink", None) => s.links.push(link),
                (_, Some(p)) => {
                    s.links.remove(p);
                }
                (_, None) => {}
            }
        }
        "setservicelinks" => {
            let input = input("setServiceLinksInput", body)?;
            let mut links: Vec<ServiceLink> = Vec::new();
            if let Some(Value::Array(items)) = input.get("serviceLinks") {
                for item in items {
                    let link = parse_link(item)?;
                    links.retain(|l| l.uuid() != link.uuid());
                    links.push(link);
                }
            }
            s.links = links;
        }
        "upgrade" => {
            let input = input("serviceUpgrade", body)?;
            let launch = input
                .get("inServiceStrategy")
                .and_then(|st| st.get("launchConfig"))
                .filter(|l| l.is_object())
                .cloned();
            s.previous_launch_config = s.fields.get("launchConfig").cloned();
            if let Some(l) = launch {
                s.fields.insert("launchConfig".into(), l);
            }
            s.upgrade = Some(Value::Object(input));
        }
        "rollback" => {
            match s.previous_launch_config.take() {
                Some(prev) => s.fields.insert("launchConfig".into(), prev),
                None => s.fields.remove("launchConfig"),
            };
        }
        "finishupgrade" => s.previous_launch_config = None,
        _ => {}
    }
    s.state = next;
    check_references(state, &s)?;
    legacy::rederive(&mut s)?;
    state.services[i] = s;
    Ok(Outcome::Updated)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn create_links_and_legacy_rederive() {
        let mut st = RancherState::default();
        let web = create(&mut st, Kind::Service, &obj(json!({"name": "web"}))).unwrap();
        assert_eq!(web, "1s1");
        let lb = create(
            &mut st,
            Kind::LoadBalancerService,
            &obj(json!({"name": "lb", "launchConfig": {"ports": ["18090:80"]}})),
        )
        .unwrap();
        assert!(st.service(&lb).unwrap().legacy);
        action(
            &mut st,
            &lb,
            None,
            "addservicelink",
            &obj(json!({"serviceLink": {"serviceId": web, "ports": ["8080"]}})),
        )
        .unwrap();
        let rules = &st
            .service(&lb)
            .unwrap()
            .lb_config
            .as_ref()
            .unwrap()
            .port_rules;
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].target_port, Some(8080));
        // Unknown link target → InvalidReference, state untouched.
        let e = action(
            &mut st,
            &lb,
            None,
            "addservicelink",
            &obj(json!({"serviceLink": {"serviceId": "1s99"}})),
        )
        .err()
        .unwrap();
        assert_eq!(e.code, "InvalidReference");
        assert_eq!(st.service(&lb).unwrap().links.len(), 1);
        // Deleting the target drops the link and its rules.
        delete(&mut st, &web, None).unwrap();
        let lb = st.service(&lb).unwrap();
        assert!(lb.links.is_empty());
        assert!(lb.lb_config.as_ref().unwrap().port_rules.is_empty());
    }

    #[test]
    fn actions_follow_the_state_machine() {
        let mut st = RancherState::default();
        let lb = create(
            &mut st,
            Kind::LoadBalancerService,
            &obj(json!({"name": "lb", "lbConfig": {}})),
        )
        .unwrap();
        let e = action(&mut st, &lb, None, "deactivate", &Map::new())
            .err()
            .unwrap();
        assert_eq!(e.code, "ActionNotAvailable");
        let e = action(&mut st, &lb, None, "explode", &Map::new())
            .err()
            .unwrap();
        assert_eq!(e.code, "InvalidAction");
        action(&mut st, &lb, None, "activate", &Map::new()).unwrap();
        assert_eq!(st.service(&lb).unwrap().state, ServiceState::Active);
        let up = json!({"inServiceStrategy": {"launchConfig": {"imageUuid": "docker:x"}}});
        action(&mut st, &lb, None, "upgrade", &obj(up)).unwrap();
        let s = st.service(&lb).unwrap();
        assert_eq!(s.state, ServiceState::Upgraded);
        assert!(s.upgrade.is_some());
        assert_eq!(s.fields["launchConfig"]["imageUuid"], "docker:x");
        action(&mut st, &lb, None, "rollback", &Map::new()).unwrap();
        let s = st.service(&lb).unwrap();
        assert_eq!(s.state, ServiceState::Active);
        assert!(!s.fields.contains_key("launchConfig"));
        assert!(matches!(
            action(&mut st, &lb, None, "remove", &Map::new()),
            Ok(Outcome::Removed(_))
        ));
        assert!(st.services.is_empty());
    }

    #[test]
    fn names_unique_and_references_checked() {
        let mut st = RancherState::default();
        create(&mut st, Kind::Service, &obj(json!({"name": "web"}))).unwrap();
        let e = create(&mut st, Kind::Service, &obj(json!({"name": "web"})))
            .err()
            .unwrap();
        assert_eq!(e.code, "NotUnique");
        let bad = json!({"name": "lb", "lbConfig": {"portRules": [{"sourcePort": 80, "serviceId": "1s42"}]}});
        let e = create(&mut st, Kind::LoadBalancerService, &obj(bad))
            .err()
            .unwrap();
        assert_eq!(e.code, "InvalidReference");
        let bad = json!({"name": "lb", "lbConfig": {"certificateIds": ["1c9"]}});
        let e = create(&mut st, Kind::LoadBalancerService, &obj(bad))
            .err()
            .unwrap();
        assert_eq!(e.code, "InvalidReference");
    }
}
