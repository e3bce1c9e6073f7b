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
mod targets;
mod validate;

use http::{Method, StatusCode};
use serde_json::{json, Map, Value};

pub(crate) use auth::basic_matches;
pub(crate) use model::rfc3339;
pub use model::RancherState;
pub use targets::Resolved;

use super::audit::AuditEntry;
use super::{ApiError, ApiRequest, Control, Reply};
use crate::config::{self, Certificate, LoadBalancer};
use model::Kind;

impl RancherState {
    /// The load balancers that serve now (see [`state_machine::ServiceState::serves`]), with
    /// rule `serviceId`s resolved to service names (the data plane finds instances by Consul
    /// `Service` name; external services and aliases by the synthetic names of
    /// [`targets`], whose instances [`RancherState::synthetic_instances`] makes). Rules
    /// without a (live) target service are dropped.
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
                            service_id: targets::target_name(target),
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
    /// `/v1/services`: services of every kind.
    Services,
    LoadBalancers,
    ExternalServices,
    DnsServices,
    Certificates,
    /// Read-only.
    AuditLogs,
}

impl Coll {
    fn parse(segment: &str) -> Option<Coll> {
        match segment {
            "services" => Some(Coll::Services),
            "loadbalancerservices" => Some(Coll::LoadBalancers),
            "externalservices" => Some(Coll::ExternalServices),
            "dnsservices" => Some(Coll::DnsServices),
            "certificates" => Some(Coll::Certificates),
            "auditlogs" => Some(Coll::AuditLogs),
            _ => None,
        }
    }

    /// The kind a resource found through this collection must have (`None`: any service).
    fn kind(self) -> Option<Kind> {
        match self {
            Coll::LoadBalancers => Some(Kind::LoadBalancerService),
            Coll::ExternalServices => Some(Kind::ExternalService),
            Coll::DnsServices => Some(Kind::DnsService),
            _ => None,
        }
    }

    /// Whether this collection holds services (of some kind).
    fn is_services(self) -> bool {
        !matches!(self, Coll::Certificates | Coll::AuditLogs)
    }

    fn schema(self) -> &'static str {
        match self {
            Coll::Services => "service",
            Coll::LoadBalancers => "loadBalancerService",
            Coll::ExternalServices => "externalService",
            Coll::DnsServices => "dnsService",
            Coll::Certificates => "certificate",
            Coll::AuditLogs => "auditLog",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Coll::Services => "services",
            Coll::LoadBalancers => "loadbalancerservices",
            Coll::ExternalServices => "externalservices",
            Coll::DnsServices => "dnsservices",
            Coll::Certificates => "certificates",
            Coll::AuditLogs => "auditlogs",
        }
    }
}

/// `scheme://host[:port]` of the request, for absolute links.
fn base_url(req: &ApiRequest) -> String {
    base_url_of(&req.headers, req.peer)
}

/// The `X-API-Schemas` URL for a request with these headers (also for requests whose body
/// could not be read, so every `/v1` answer carries it).
pub fn schemas_url(headers: &http::HeaderMap, peer: std::net::SocketAddr) -> String {
    format!("{}/v1/schemas", base_url_of(headers, peer))
}

fn base_url_of(headers: &http::HeaderMap, peer: std::net::SocketAddr) -> String {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let scheme = match header("x-forwarded-proto")
        .and_then(|p| p.split(',').next())
        .map(|p| p.trim().to_ascii_lowercase())
    {
        Some(p) if p == "https" => "https",
        _ => "http",
    };
    let host = header("host")
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        })
        .map_or_else(|| peer.to_string(), str::to_string);
    format!("{scheme}://{host}")
}

pub async fn handle(control: &Control, req: ApiRequest) -> Reply {
    let started = std::time::Instant::now();
    let base = base_url(&req);
    let schemas = format!("{base}/v1/schemas");
    let answer = dispatch(control, &req, &base).await;
    if is_write(&req.method) {
        let entry = audit_entry(control, &req, &answer).took(started.elapsed());
        control.audit(entry).await;
    }
    let reply = match answer {
        Ok((status, body)) => Reply::json(status, &body),
        Err(e) => error_reply(&e),
    };
    reply.header("x-api-schemas", &schemas)
}

fn is_write(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The audit entry of a write: what it addressed (from the path, or the created resource),
/// who sent it, and how it ended.
fn audit_entry(control: &Control, req: &ApiRequest, answer: &Answer) -> AuditEntry {
    let path = req.path.to_ascii_lowercase();
    let rest = path.strip_prefix("/v1").unwrap_or("");
    let mut segments = rest.trim_matches('/').split('/').filter(|s| !s.is_empty());
    let coll_segment = segments.next();
    let path_id = segments.next();
    let coll = coll_segment.and_then(Coll::parse);
    let body: Value = req.json().unwrap_or(Value::Null);
    let action = req.query("action").map(str::to_ascii_lowercase);
    let verb = match (&req.method, path_id, action) {
        (&Method::POST, None, _) => "create".to_string(),
        (&Method::POST, Some(_), Some(a)) => a,
        (&Method::PUT, Some(_), _) => "update".to_string(),
        (&Method::DELETE, Some(_), _) => "delete".to_string(),
        (m, _, _) => m.as_str().to_ascii_lowercase(),
    };
    let (status, out) = match answer {
        Ok((status, v)) => (status.as_u16(), Some(v)),
        Err(e) => (e.status.as_u16(), None),
    };
    let created_type = out
        .and_then(|v| v.get("type"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let requested_type = match coll {
        Some(Coll::Services) => Some(
            body.get("type")
                .and_then(Value::as_str)
                .and_then(Kind::from_type_name)
                .map_or("service", Kind::type_name)
                .to_string(),
        ),
        Some(c) => {
            let stored = path_id
                .filter(|_| c.is_services())
                .and_then(|id| control.state().rancher.service(id).map(|s| s.kind));
            Some(stored.map_or(c.schema(), Kind::type_name).to_string())
        }
        None => coll_segment.map(str::to_string),
    };
    let resource_type = created_type.or(requested_type);
    let resource_id = out
        .and_then(|v| v.get("id"))
        .and_then(Value::as_str)
        .or(path_id);
    let mut entry = AuditEntry::new(
        resource_type.as_deref(),
        &verb,
        resource_id,
        req.method.as_str(),
        &req.path,
        req.peer.ip().to_string(),
        status,
        body,
    );
    if let Some((access, secret)) = &control.auth.rancher {
        if auth::basic_matches(req.header("authorization"), access, secret) {
            entry = entry.authenticated("apiKey", Some(access));
        }
    }
    entry.described(answer.as_ref().err().map(|e| e.message.clone()))
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
            read_only(coll, m)?;
            match *m {
                Method::GET => Ok((StatusCode::OK, list(control, req, base, coll))),
                Method::POST => create(control, req, base, coll).await,
                _ => Err(method_not_allowed(m)),
            }
        }
        [coll, id] => {
            let coll =
                Coll::parse(coll).ok_or_else(|| ApiError::not_found("no such collection"))?;
            read_only(coll, m)?;
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
            "externalservices": format!("{base}/v1/externalservices"),
            "dnsservices": format!("{base}/v1/dnsservices"),
            "certificates": format!("{base}/v1/certificates"),
            "auditlogs": format!("{base}/v1/auditlogs"),
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
    let of = |k: Kind| (k.type_name(), format!("{base}/v1/{}", k.collection()));
    match coll {
        Coll::Services => Kind::ALL.into_iter().map(of).collect(),
        Coll::LoadBalancers => vec![of(Kind::LoadBalancerService)],
        Coll::ExternalServices => vec![of(Kind::ExternalService)],
        Coll::DnsServices => vec![of(Kind::DnsService)],
        Coll::Certificates => vec![("certificate", format!("{base}/v1/certificates"))],
        Coll::AuditLogs => Vec::new(),
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
        // Newest first (unless the client sorts).
        Coll::AuditLogs => state
            .audit
            .entries()
            .rev()
            .map(|e| resource::audit_entry(e, base))
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
        Coll::AuditLogs => Err(ApiError::not_found(format!("no audit log {id:?}"))),
        _ => st
            .service(id)
            .filter(|s| coll.kind().is_none_or(|k| k == s.kind))
            .map(|s| resource::service(st, s, base))
            .ok_or_else(|| ApiError::not_found(format!("no service {id:?}"))),
    }
}

fn get(control: &Control, base: &str, coll: Coll, id: &str) -> Answer {
    let state = control.state();
    if coll == Coll::AuditLogs {
        return state
            .audit
            .get(id)
            .map(|e| (StatusCode::OK, resource::audit_entry(e, base)))
            .ok_or_else(|| ApiError::not_found(format!("no audit log {id:?}")));
    }
    render(&state.rancher, base, coll, id).map(|v| (StatusCode::OK, v))
}

/// The audit log is written by the server alone.
fn read_only(coll: Coll, m: &Method) -> Result<(), ApiError> {
    if coll == Coll::AuditLogs && m != Method::GET {
        return Err(method_not_allowed(m));
    }
    Ok(())
}

async fn create(control: &Control, req: &ApiRequest, base: &str, coll: Coll) -> Answer {
    let body = body(req)?;
    let kind = match coll {
        Coll::Services => Some(
            body.get("type")
                .and_then(Value::as_str)
                .and_then(Kind::from_type_name)
                .unwrap_or(Kind::Service),
        ),
        Coll::Certificates | Coll::AuditLogs => None,
        other => other.kind(),
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
        _ if !coll.is_services() => None,
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
