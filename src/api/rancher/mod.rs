//! The Rancher v1 API (GDAPI) subset: services, load balancers, certificates (SPEC §1).
//!
//! `handle` authenticates, parses the path (case-insensitive, one trailing slash ignored) and
//! dispatches; reads render from `control.state()`, writes go through `control.update`.
//! Every response is JSON and carries `X-API-Schemas`.

mod auth;
mod certs;
mod collection;
mod legacy;
mod model;
pub mod portspec;
mod resource;
mod schema;
mod services;
mod state_machine;
mod validate;

use http::{Method, StatusCode};
use serde_json::{json, Map, Value};

pub(crate) use auth::basic_matches;
pub(crate) use model::rfc3339;
pub use model::RancherState;

use super::{ApiError, ApiRequest, Control, Reply};
use crate::config::{self, Certificate, LoadBalancer};
use model::Kind;

impl RancherState {
    /// The load balancers that serve now (see [`state_machine::ServiceState::serves`]), with
    /// rule `serviceId`s resolved to service names (the data plane finds instances by Consul
    /// `Service` name). Rules without a (live) target service are dropped.
    pub fn load_balancers(&self) -> Vec<LoadBalancer> {
        self.services
            .iter()
            .filter(|s| s.is_lb() && s.state.serves())
            .map(|s| {
                let cfg = s.lb_config.clone().unwrap_or_default();
                let port_rules = cfg
                    .port_rules
                    .iter()
                    .filter_map(|r| {
                        let target = self.service(r.service_id.as_deref()?)?;
                        Some(config::PortRule {
                            source_port: r.source_port,
                            protocol: protocol(&r.protocol),
                            hostname: r.hostname.clone().filter(|h| !h.is_empty()),
                            path: r.path.clone().filter(|p| !p.is_empty()),
                            priority: r.priority,
                            service_id: target.name.clone(),
                            target_port: r.target_port,
                        })
                    })
                    .collect();
                let stickiness_policy = cfg.stickiness_policy.map(|p| config::StickinessPolicy {
                    name: p.name,
                    cookie: p.cookie,
                    domain: p.domain,
                    mode: match p.mode.as_str() {
                        "rewrite" => config::StickinessMode::Rewrite,
                        "prefix" => config::StickinessMode::Prefix,
                        _ => config::StickinessMode::Insert,
                    },
                    indirect: p.indirect,
                    nocache: p.nocache,
                    postonly: p.postonly,
                });
                LoadBalancer {
                    name: s.name.clone(),
                    lb_config: config::LbConfig {
                        port_rules,
                        certificate_ids: cfg.certificate_ids,
                        default_certificate_id: cfg.default_certificate_id,
                        stickiness_policy,
                    },
                }
            })
            .collect()
    }

    /// The certificates serving load balancers refer to, keyed by their id.
    pub fn certificates(&self) -> Vec<Certificate> {
        let used: Vec<String> = self
            .services
            .iter()
            .filter(|s| s.is_lb() && s.state.serves())
            .flat_map(|s| s.certificate_refs())
            .collect();
        self.certificates
            .iter()
            .filter(|c| used.iter().any(|u| u.eq_ignore_ascii_case(&c.id)))
            .map(|c| Certificate {
                id: c.id.clone(),
                cert: Some(c.cert.clone()),
                key: Some(c.key.clone()),
                cert_chain: c.cert_chain.clone(),
                cert_path: None,
                key_path: None,
            })
            .collect()
    }
}

fn protocol(p: &str) -> config::Protocol {
    match p {
        "https" => config::Protocol::Https,
        "tcp" => config::Protocol::Tcp,
        "tls" => config::Protocol::Tls,
        "sni" => config::Protocol::Sni,
        "udp" => config::Protocol::Udp,
        _ => config::Protocol::Http,
    }
}

/// The collections this API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coll {
    /// `/v1/services`: services and load balancers.
    Services,
    LoadBalancers,
    Certificates,
}

impl Coll {
    fn parse(segment: &str) -> Option<Coll> {
        match segment {
            "services" => Some(Coll::Services),
            "loadbalancerservices" => Some(Coll::LoadBalancers),
            "certificates" => Some(Coll::Certificates),
            _ => None,
        }
    }

    /// The kind a resource found through this collection must have (`None`: any service).
    fn kind(self) -> Option<Kind> {
        match self {
            Coll::LoadBalancers => Some(Kind::LoadBalancerService),
            _ => None,
        }
    }

    fn schema(self) -> &'static str {
        match self {
            Coll::Services => "service",
            Coll::LoadBalancers => "loadBalancerService",
            Coll::Certificates => "certificate",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Coll::Services => "services",
            Coll::LoadBalancers => "loadbalancerservices",
            Coll::Certificates => "certificates",
        }
    }
}

/// `scheme://host[:port]` of the request, for absolute links.
fn base_url(req: &ApiRequest) -> String {
    let scheme = match req
        .header("x-forwarded-proto")
        .and_then(|p| p.split(',').next())
        .map(|p| p.trim().to_ascii_lowercase())
    {
        Some(p) if p == "https" => "https",
        _ => "http",
    };
    let host = req
        .header("host")
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        })
        .map_or_else(|| req.peer.to_string(), str::to_string);
    format!("{scheme}://{host}")
}

pub async fn handle(control: &Control, req: ApiRequest) -> Reply {
    let base = base_url(&req);
    let schemas = format!("{base}/v1/schemas");
    let reply = match dispatch(control, &req, &base).await {
        Ok((status, body)) => Reply::json(status, &body),
        Err(e) => error_reply(&e),
    };
    reply.header("x-api-schemas", &schemas)
}

/// Rancher's error object for `e`.
pub fn error_reply(e: &ApiError) -> Reply {
    Reply::json(
        e.status,
        &json!({
            "id": format!("{}-{}", e.status.as_u16(), e.code),
            "type": "error", "links": {}, "actions": {},
            "status": e.status.as_u16(), "code": e.code,
            "fieldName": e.field, "message": e.message, "detail": null,
        }),
    )
}

type Answer = Result<(StatusCode, Value), ApiError>;

fn method_not_allowed(method: &Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("{method} is not allowed here"),
    )
}

/// The request body as a JSON object (`{}` when empty).
fn body(req: &ApiRequest) -> Result<Map<String, Value>, ApiError> {
    match req.json::<Value>() {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request(
            "InvalidBodyContent",
            "the body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(
            "InvalidBodyContent",
            format!("the body is not JSON: {e}"),
        )),
    }
}

async fn dispatch(control: &Control, req: &ApiRequest, base: &str) -> Answer {
    if let Some((access, secret)) = &control.auth.rancher {
        if !auth::basic_matches(req.header("authorization"), access, secret) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Unauthorized: valid API keys are required",
            ));
        }
    }
    let path = req.path.to_ascii_lowercase();
    let rest = path.strip_prefix("/v1").unwrap_or("");
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let segments: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.trim_start_matches('/').split('/').collect()
    };
    let m = &req.method;
    match segments.as_slice() {
        [] if m == Method::GET => Ok((StatusCode::OK, root(base))),
        ["schemas"] if m == Method::GET => Ok((StatusCode::OK, schemas(req, base))),
        ["schemas", id] if m == Method::GET => schema::get(id)
            .map(|s| (StatusCode::OK, s.render(base)))
            .ok_or_else(|| ApiError::not_found(format!("no schema {id:?}"))),
        [] | ["schemas"] | ["schemas", _] => Err(method_not_allowed(m)),
        [coll] => {
            let coll =
                Coll::parse(coll).ok_or_else(|| ApiError::not_found("no such collection"))?;
            match *m {
                Method::GET => Ok((StatusCode::OK, list(control, req, base, coll))),
                Method::POST => create(control, req, base, coll).await,
                _ => Err(method_not_allowed(m)),
            }
        }
        [coll, id] => {
            let coll =
                Coll::parse(coll).ok_or_else(|| ApiError::not_found("no such collection"))?;
            match *m {
                Method::GET => get(control, base, coll, id),
                Method::PUT => put(control, req, base, coll, id).await,
                Method::DELETE => delete(control, base, coll, id).await,
                Method::POST => match req.query("action") {
                    Some(action) => act(control, req, base, coll, id, action).await,
                    None => Err(method_not_allowed(m)),
                },
                _ => Err(method_not_allowed(m)),
            }
        }
        [coll, id, link] => {
            let coll =
                Coll::parse(coll).ok_or_else(|| ApiError::not_found("no such collection"))?;
            if m != Method::GET {
                return Err(method_not_allowed(m));
            }
            consumed_services(control, req, base, coll, id, link)
        }
        _ => Err(ApiError::not_found("no such resource")),
    }
}

fn root(base: &str) -> Value {
    json!({
        "id": "v1", "type": "apiVersion", "actions": {},
        "links": {
            "self": format!("{base}/v1"),
            "schemas": format!("{base}/v1/schemas"),
            "services": format!("{base}/v1/services"),
            "loadbalancerservices": format!("{base}/v1/loadbalancerservices"),
            "certificates": format!("{base}/v1/certificates"),
        },
    })
}

fn schemas(req: &ApiRequest, base: &str) -> Value {
    let items = schema::all().iter().map(|s| s.render(base)).collect();
    let list = collection::ListRequest {
        url: format!("{base}/v1/schemas"),
        query: &req.query,
        resource_type: "schema",
        create_types: Vec::new(),
        filters: &[],
    };
    collection::render(&list, items)
}

fn create_types(base: &str, coll: Coll) -> Vec<(&'static str, String)> {
    let lb = (
        "loadBalancerService",
        format!("{base}/v1/loadbalancerservices"),
    );
    match coll {
        Coll::Services => vec![("service", format!("{base}/v1/services")), lb],
        Coll::LoadBalancers => vec![lb],
        Coll::Certificates => vec![("certificate", format!("{base}/v1/certificates"))],
    }
}

fn filters_of(coll: Coll) -> &'static [&'static str] {
    schema::get(coll.schema()).map_or(&[], |s| s.filters)
}

fn list(control: &Control, req: &ApiRequest, base: &str, coll: Coll) -> Value {
    let state = control.state();
    let st = &state.rancher;
    let items: Vec<Value> = match coll {
        Coll::Certificates => st
            .certificates
            .iter()
            .map(|c| resource::certificate(c, base, false))
            .collect(),
        _ => st
            .services
            .iter()
            .filter(|s| coll.kind().is_none_or(|k| k == s.kind))
            .map(|s| resource::service(st, s, base))
            .collect(),
    };
    let list = collection::ListRequest {
        url: format!("{base}/v1/{}", coll.path()),
        query: &req.query,
        resource_type: coll.schema(),
        create_types: create_types(base, coll),
        filters: filters_of(coll),
    };
    collection::render(&list, items)
}

fn render(st: &RancherState, base: &str, coll: Coll, id: &str) -> Result<Value, ApiError> {
    match coll {
        Coll::Certificates => st
            .certificate(id)
            .map(|c| resource::certificate(c, base, false))
            .ok_or_else(|| ApiError::not_found(format!("no certificate {id:?}"))),
        _ => st
            .service(id)
            .filter(|s| coll.kind().is_none_or(|k| k == s.kind))
            .map(|s| resource::service(st, s, base))
            .ok_or_else(|| ApiError::not_found(format!("no service {id:?}"))),
    }
}

fn get(control: &Control, base: &str, coll: Coll, id: &str) -> Answer {
    let state = control.state();
    render(&state.rancher, base, coll, id).map(|v| (StatusCode::OK, v))
}

async fn create(control: &Control, req: &ApiRequest, base: &str, coll: Coll) -> Answer {
    let body = body(req)?;
    let kind = match coll {
        Coll::LoadBalancers => Some(Kind::LoadBalancerService),
        Coll::Services => Some(
            if body.get("type").and_then(Value::as_str) == Some("loadBalancerService") {
                Kind::LoadBalancerService
            } else {
                Kind::Service
            },
        ),
        Coll::Certificates => None,
    };
    control
        .update(|state| {
            let st = &mut state.rancher;
            let (id, coll) = match kind {
                Some(k) => (services::create(st, k, &body)?, coll),
                None => (certs::create(st, &body)?, coll),
            };
            render(st, base, coll, &id)
        })
        .await
        .map(|v| (StatusCode::CREATED, v))
}

async fn put(control: &Control, req: &ApiRequest, base: &str, coll: Coll, id: &str) -> Answer {
    let body = body(req)?;
    control
        .update(|state| {
            let st = &mut state.rancher;
            match coll {
                Coll::Certificates => certs::update(st, id, &body)?,
                _ => services::update(st, id, coll.kind(), &body)?,
            }
            render(st, base, coll, id)
        })
        .await
        .map(|v| (StatusCode::OK, v))
}

async fn delete(control: &Control, base: &str, coll: Coll, id: &str) -> Answer {
    control
        .update(|state| {
            let st = &mut state.rancher;
            Ok(match coll {
                Coll::Certificates => resource::certificate(&certs::delete(st, id)?, base, true),
                _ => {
                    let gone = services::delete(st, id, coll.kind())?;
                    resource::service(st, &gone, base)
                }
            })
        })
        .await
        .map(|v| (StatusCode::OK, v))
}

async fn act(
    control: &Control,
    req: &ApiRequest,
    base: &str,
    coll: Coll,
    id: &str,
    action: &str,
) -> Answer {
    let body = body(req)?;
    let action = action.to_ascii_lowercase();
    control
        .update(|state| {
            let st = &mut state.rancher;
            match coll {
                Coll::Certificates => match action.as_str() {
                    "update" => {
                        certs::update(st, id, &body)?;
                        render(st, base, coll, id)
                    }
                    "remove" => Ok(resource::certificate(&certs::delete(st, id)?, base, true)),
                    _ => {
                        st.certificate(id)
                            .ok_or_else(|| ApiError::not_found(format!("no certificate {id:?}")))?;
                        Err(ApiError::invalid(
                            "InvalidAction",
                            "action",
                            format!("unknown action {action:?}"),
                        ))
                    }
                },
                _ => match services::action(st, id, coll.kind(), &action, &body)? {
                    services::Outcome::Updated => render(st, base, coll, id),
                    services::Outcome::Removed(gone) => Ok(resource::service(st, &gone, base)),
                },
            }
        })
        .await
        .map(|v| (StatusCode::OK, v))
}

fn consumed_services(
    control: &Control,
    req: &ApiRequest,
    base: &str,
    coll: Coll,
    id: &str,
    link: &str,
) -> Answer {
    let state = control.state();
    let st = &state.rancher;
    let service = match coll {
        Coll::Certificates => None,
        _ => st
            .service(id)
            .filter(|s| coll.kind().is_none_or(|k| k == s.kind)),
    };
    let Some(service) = service.filter(|_| link == "consumedservices") else {
        return Err(ApiError::not_found("no such link"));
    };
    let mut seen: Vec<&str> = Vec::new();
    let items: Vec<Value> = service
        .links
        .iter()
        .filter_map(|l| st.service(&l.service_id))
        .filter(|t| {
            let new = !seen.contains(&t.id.as_str());
            seen.push(&t.id);
            new
        })
        .map(|t| resource::service(st, t, base))
        .collect();
    let list = collection::ListRequest {
        url: format!("{}/consumedservices", resource::service_url(base, service)),
        query: &req.query,
        resource_type: "service",
        create_types: Vec::new(),
        filters: filters_of(Coll::Services),
    };
    Ok((StatusCode::OK, collection::render(&list, items)))
}
