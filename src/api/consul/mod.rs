//! The Consul agent service API subset (SPEC-control-api.md §2): services, their checks,
//! maintenance, health, and hash blocking. Errors are plain text, as Consul writes them.
//!
//! Every write goes through `Control::update`; reads take the current state snapshot.

mod blocking;
pub mod filter;
mod go;
mod health;
pub mod model;
mod register;
pub mod writes;

use std::collections::BTreeMap;

use http::{Method, StatusCode};

pub use model::AgentState;
use model::{AgentState as Agent, CheckView, ServiceView, CRITICAL, PASSING, WARNING};

use super::audit::AuditEntry;
use super::{ApiError, ApiRequest, Control, Reply};

/// Serves one request under `/v1/agent/`; writes (refused ones too) are audited.
pub async fn handle(control: &Control, req: ApiRequest) -> Reply {
    let started = std::time::Instant::now();
    let reply = serve(control, &req).await;
    let route = req
        .path
        .strip_prefix("/v1/agent/")
        .and_then(Route::parse)
        .filter(|r| r.is_write() && req.method == Method::PUT);
    if let Some(route) = route {
        let entry = audit_entry(control, &req, &route, &reply).took(started.elapsed());
        control.audit(entry).await;
    }
    reply
}

/// The audit entry of a Consul write.
fn audit_entry(control: &Control, req: &ApiRequest, route: &Route, reply: &Reply) -> AuditEntry {
    let body: Option<serde_json::Value> = req.json().ok();
    let (rtype, verb, id): (&str, &str, Option<String>) = match route {
        Route::Register => {
            // The ID, else the Name (Consul's default ID), found case-insensitively.
            let field = |name: &str| {
                body.as_ref()
                    .and_then(serde_json::Value::as_object)
                    .and_then(|o| {
                        o.iter()
                            .find(|(k, _)| register::normalize_key(k) == name)
                            .and_then(|(_, v)| v.as_str())
                    })
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
            };
            (
                "consulService",
                "register",
                field("id").or_else(|| field("name")),
            )
        }
        Route::Deregister(id) => ("consulService", "deregister", Some(id.clone())),
        Route::Maintenance(id) => ("consulService", "maintenance", Some(id.clone())),
        Route::CheckStatus(status, id) => {
            let verb = match *status {
                PASSING => "pass",
                WARNING => "warn",
                _ => "fail",
            };
            ("consulCheck", verb, Some(id.clone()))
        }
        Route::CheckUpdate(id) => ("consulCheck", "update", Some(id.clone())),
        _ => ("consulService", "write", None),
    };
    // The body when there is one, else the query parameters (maintenance's enable/reason).
    let object = match body {
        Some(serde_json::Value::Object(m)) if !m.is_empty() => serde_json::Value::Object(m),
        _ => serde_json::Value::Object(
            req.query
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
        ),
    };
    let status = reply.0.status();
    let mut entry = AuditEntry::new(
        Some(rtype),
        verb,
        id.as_deref(),
        req.method.as_str(),
        &req.path,
        req.peer.ip().to_string(),
        status.as_u16(),
        object,
    );
    if control.auth.consul_token.is_some() && authorized(control, req) {
        entry = entry.authenticated("consulToken", None);
    }
    entry
}

async fn serve(control: &Control, req: &ApiRequest) -> Reply {
    let path = req.path.clone();
    let Some(rest) = path.strip_prefix("/v1/agent/") else {
        return not_found();
    };
    let route = Route::parse(rest);
    let Some(route) = route else {
        return not_found();
    };
    let allowed = if route.is_write() {
        Method::PUT
    } else {
        Method::GET
    };
    if req.method != allowed && !(allowed == Method::GET && req.method == Method::HEAD) {
        return Reply::text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} not allowed", req.method),
        )
        .header("allow", allowed.as_str());
    }
    if route.is_write() && !authorized(control, req) {
        return Reply::text(StatusCode::FORBIDDEN, "Permission denied");
    }
    match route {
        Route::Services => list_services(control, req),
        Route::Checks => list_checks(control, req),
        Route::Service(id) => blocking::service_definition(control, req, &id).await,
        Route::HealthById(id) => health::by_id(&control.state().agent, req, &id),
        Route::HealthByName(name) => health::by_name(&control.state().agent, req, &name),
        Route::Register => register(control, req).await,
        Route::Deregister(id) => {
            let result = control
                .update(|state| writes::deregister(&mut state.agent, &id))
                .await;
            done(result)
        }
        Route::Maintenance(id) => maintenance(control, req, &id).await,
        Route::CheckStatus(status, id) => {
            let note = req.query("note").unwrap_or_default().to_string();
            control.health.refreshed(&id);
            let result = control
                .update(|state| writes::update_ttl(&mut state.agent, &id, status, &note))
                .await;
            done(result)
        }
        Route::CheckUpdate(id) => check_update(control, req, &id).await,
    }
}

/// The endpoints, with their path parameters percent-decoded.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Services,
    Checks,
    Service(String),
    HealthById(String),
    HealthByName(String),
    Register,
    Deregister(String),
    Maintenance(String),
    CheckStatus(&'static str, String),
    CheckUpdate(String),
}

impl Route {
    fn parse(rest: &str) -> Option<Route> {
        let param = |prefix: &str| rest.strip_prefix(prefix).map(percent_decode);
        Some(match rest {
            "services" => Route::Services,
            "checks" => Route::Checks,
            "service/register" => Route::Register,
            _ => {
                if let Some(id) = param("service/deregister/") {
                    Route::Deregister(id)
                } else if let Some(id) = param("service/maintenance/") {
                    Route::Maintenance(id)
                } else if let Some(id) = param("service/") {
                    Route::Service(id)
                } else if let Some(id) = param("health/service/id/") {
                    Route::HealthById(id)
                } else if let Some(name) = param("health/service/name/") {
                    Route::HealthByName(name)
                } else if let Some(id) = param("check/pass/") {
                    Route::CheckStatus(PASSING, id)
                } else if let Some(id) = param("check/warn/") {
                    Route::CheckStatus(WARNING, id)
                } else if let Some(id) = param("check/fail/") {
                    Route::CheckStatus(CRITICAL, id)
                } else if let Some(id) = param("check/update/") {
                    Route::CheckUpdate(id)
                } else {
                    return None;
                }
            }
        })
    }

    fn is_write(&self) -> bool {
        matches!(
            self,
            Route::Register
                | Route::Deregister(_)
                | Route::Maintenance(_)
                | Route::CheckStatus(..)
                | Route::CheckUpdate(_)
        )
    }
}

/// `%XX` escapes in a path segment (`+` stays a plus in paths).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn not_found() -> Reply {
    Reply::text(StatusCode::NOT_FOUND, "404 page not found\n")
}

/// The token a request carries: `X-Consul-Token`, `Authorization: Bearer`, or `?token=`.
fn request_token(req: &ApiRequest) -> Option<&str> {
    if let Some(t) = req.header("x-consul-token").filter(|t| !t.is_empty()) {
        return Some(t);
    }
    if let Some(auth) = req.header("authorization") {
        let mut parts = auth.splitn(2, ' ');
        if let (Some(scheme), Some(t)) = (parts.next(), parts.next()) {
            if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() {
                return Some(t.trim());
            }
        }
    }
    req.query("token").filter(|t| !t.is_empty())
}

/// Writes need the configured token (when there is one); reads are anonymous.
fn authorized(control: &Control, req: &ApiRequest) -> bool {
    match &control.auth.consul_token {
        None => true,
        Some(expected) => request_token(req).is_some_and(|t| constant_time_eq(t, expected)),
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// `200` with an empty body, or the error as Consul's plain text.
fn done(result: Result<(), ApiError>) -> Reply {
    match result {
        Ok(()) => Reply::empty(StatusCode::OK),
        Err(e) => error_reply(&e),
    }
}

fn error_reply(e: &ApiError) -> Reply {
    Reply::text(e.status, e.message.clone())
}

fn list_services(control: &Control, req: &ApiRequest) -> Reply {
    let filter = match req.query("filter").filter(|f| !f.trim().is_empty()) {
        None => None,
        Some(expr) => match expr.parse::<filter::Filter>() {
            Ok(f) => Some(f),
            Err(e) => {
                return Reply::text(
                    StatusCode::BAD_REQUEST,
                    format!("Failed to create boolean expression evaluator: {e}"),
                )
            }
        },
    };
    let state = control.state();
    let mut out = BTreeMap::new();
    for (id, svc) in &state.agent.services {
        let view = ServiceView::new(svc);
        let Ok(value) = serde_json::to_value(&view) else {
            continue;
        };
        if filter.as_ref().is_none_or(|f| f.matches(&value)) {
            out.insert(id.as_str(), value);
        }
    }
    Reply::json(StatusCode::OK, &out)
}

fn list_checks(control: &Control, req: &ApiRequest) -> Reply {
    if req.query("filter").is_some_and(|f| !f.trim().is_empty()) {
        return Reply::text(
            StatusCode::BAD_REQUEST,
            "Failed to create boolean expression evaluator: filtering checks is not supported",
        );
    }
    let state = control.state();
    let agent: &Agent = &state.agent;
    let out: BTreeMap<&str, CheckView<'_>> = agent
        .checks
        .iter()
        .map(|(id, c)| (id.as_str(), CheckView::new(c, agent)))
        .collect();
    Reply::json(StatusCode::OK, &out)
}

async fn register(control: &Control, req: &ApiRequest) -> Reply {
    let reg = match register::decode(&req.body) {
        Ok(r) => r,
        Err(e) => return error_reply(&e),
    };
    // Present with no value or a true value (`?replace-existing-checks`, `=true`, `=1`).
    let replace = req
        .query("replace-existing-checks")
        .is_some_and(|v| v.is_empty() || go::parse_bool(v) == Some(true));
    let id = reg.service.id.clone();
    let result = control
        .update(|state| {
            writes::register(&mut state.agent, reg.clone(), replace);
            Ok(())
        })
        .await;
    if result.is_ok() {
        tracing::info!(service_id = %id, "consul: service registered");
    }
    done(result)
}

async fn maintenance(control: &Control, req: &ApiRequest, id: &str) -> Reply {
    if id.is_empty() {
        return Reply::text(StatusCode::BAD_REQUEST, "Missing service ID");
    }
    let Some(raw) = req.query("enable") else {
        return Reply::text(StatusCode::BAD_REQUEST, "Missing value for enable");
    };
    let Some(enable) = go::parse_bool(raw) else {
        return Reply::text(
            StatusCode::BAD_REQUEST,
            format!("Invalid value for enable: {}", go::quote(raw)),
        );
    };
    let reason = req.query("reason").unwrap_or_default().to_string();
    let result = control
        .update(|state| writes::maintenance(&mut state.agent, id, enable, &reason))
        .await;
    done(result)
}

/// `PUT /v1/agent/check/update/<id>` with `{"Status","Output"}`.
async fn check_update(control: &Control, req: &ApiRequest, id: &str) -> Reply {
    let body: serde_json::Value = match req.json() {
        Ok(v) => v,
        Err(e) => {
            return Reply::text(
                StatusCode::BAD_REQUEST,
                format!("Request decode failed: {e}"),
            )
        }
    };
    let field = |name: &str| {
        body.as_object()
            .and_then(|o| {
                o.iter()
                    .find(|(k, _)| register::normalize_key(k) == name)
                    .map(|(_, v)| v)
            })
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let status = field("status");
    let output = field("output");
    if ![PASSING, WARNING, CRITICAL].contains(&status.as_str()) {
        return Reply::text(
            StatusCode::BAD_REQUEST,
            format!("Invalid check status: '{status}'"),
        );
    }
    control.health.refreshed(id);
    let result = control
        .update(|state| writes::update_ttl(&mut state.agent, id, &status, &output))
        .await;
    done(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(Route::parse("services"), Some(Route::Services));
        assert_eq!(Route::parse("service/register"), Some(Route::Register));
        assert_eq!(
            Route::parse("service/web%201"),
            Some(Route::Service("web 1".into()))
        );
        assert_eq!(
            Route::parse("service/deregister/a"),
            Some(Route::Deregister("a".into()))
        );
        assert_eq!(
            Route::parse("service/maintenance/a"),
            Some(Route::Maintenance("a".into()))
        );
        assert_eq!(
            Route::parse("health/service/id/"),
            Some(Route::HealthById(String::new()))
        );
        assert_eq!(
            Route::parse("health/service/name/web"),
            Some(Route::HealthByName("web".into()))
        );
        assert_eq!(
            Route::parse("check/fail/c"),
            Some(Route::CheckStatus(CRITICAL, "c".into()))
        );
        assert_eq!(
            Route::parse("check/update/c"),
            Some(Route::CheckUpdate("c".into()))
        );
        assert_eq!(Route::parse("members"), None);
        assert_eq!(Route::parse("nope/x"), None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b+c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq("s3cr3t", "s3cr3t"));
        assert!(!constant_time_eq("s3cr3t", "s3cr3"));
        assert!(!constant_time_eq("", "x"));
    }
}
