//! Health aggregation and the agent health endpoints
//! (`/v1/agent/health/service/id/<id>`, `/name/<name>`), JSON or text.

use http::StatusCode;
use serde::Serialize;

use super::model::{
    AgentService, AgentState, CheckView, HealthCheck, ServiceView, CRITICAL, PASSING, WARNING,
};
use crate::api::{ApiRequest, Reply};

/// Consul's `HealthChecks.AggregatedStatus()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Passing,
    Warning,
    Critical,
    Maintenance,
    /// A check had a status Consul does not know; Consul reports `""`.
    Unknown,
}

impl Aggregate {
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregate::Passing => PASSING,
            Aggregate::Warning => WARNING,
            Aggregate::Critical => CRITICAL,
            Aggregate::Maintenance => "maintenance",
            Aggregate::Unknown => "",
        }
    }

    /// The HTTP code the health endpoints answer with.
    pub fn code(self) -> StatusCode {
        match self {
            Aggregate::Passing => StatusCode::OK,
            Aggregate::Warning => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Maintenance beats critical beats warning beats passing; no checks is passing.
pub fn aggregate<'a>(checks: impl IntoIterator<Item = &'a HealthCheck>) -> Aggregate {
    let (mut warning, mut critical, mut maintenance) = (false, false, false);
    for check in checks {
        if check.is_maintenance() {
            maintenance = true;
            continue;
        }
        match check.status.as_str() {
            PASSING => {}
            WARNING => warning = true,
            CRITICAL => critical = true,
            _ => return Aggregate::Unknown,
        }
    }
    if maintenance {
        Aggregate::Maintenance
    } else if critical {
        Aggregate::Critical
    } else if warning {
        Aggregate::Warning
    } else {
        Aggregate::Passing
    }
}

#[derive(Serialize)]
struct ServiceHealth<'a> {
    #[serde(rename = "AggregatedStatus")]
    aggregated_status: &'static str,
    #[serde(rename = "Service")]
    service: Option<ServiceView<'a>>,
    #[serde(rename = "Checks")]
    checks: Option<Vec<CheckView<'a>>>,
}

fn service_health<'a>(
    state: &'a AgentState,
    svc: &'a AgentService,
) -> (Aggregate, ServiceHealth<'a>) {
    let status = aggregate(state.checks_of(&svc.id));
    let checks = state
        .checks_of(&svc.id)
        .map(|c| CheckView::new(c, state))
        .collect();
    let health = ServiceHealth {
        aggregated_status: status.as_str(),
        service: Some(ServiceView::new(svc)),
        checks: Some(checks),
    };
    (status, health)
}

/// Consul's `returnTextPlain`: an `Accept` starting with `text/plain`, or `?format=text`.
fn wants_text(req: &ApiRequest) -> bool {
    if req
        .header("accept")
        .is_some_and(|a| a.starts_with("text/plain"))
    {
        return true;
    }
    req.query("format") == Some("text")
}

fn text(code: StatusCode, body: impl Into<String>) -> Reply {
    Reply::new(code, "text/plain", body.into())
}

/// `GET /v1/agent/health/service/id/<id>`.
pub fn by_id(state: &AgentState, req: &ApiRequest, id: &str) -> Reply {
    if id.is_empty() {
        return text(StatusCode::BAD_REQUEST, "Missing serviceID");
    }
    let Some(svc) = state.services.get(id) else {
        let reason = format!("ServiceId {id} not found");
        if wants_text(req) {
            return text(StatusCode::NOT_FOUND, reason);
        }
        let body = ServiceHealth {
            aggregated_status: CRITICAL,
            service: None,
            checks: None,
        };
        return Reply::json(StatusCode::NOT_FOUND, &body);
    };
    let (status, health) = service_health(state, svc);
    if wants_text(req) {
        return text(status.code(), status.as_str());
    }
    Reply::json(status.code(), &health)
}

/// `GET /v1/agent/health/service/name/<name>`: every instance; the code is the worst, the
/// status word that of the first instance reaching it.
pub fn by_name(state: &AgentState, req: &ApiRequest, name: &str) -> Reply {
    if name.is_empty() {
        return text(StatusCode::BAD_REQUEST, "Missing service Name");
    }
    let mut code = StatusCode::NOT_FOUND;
    let mut word = format!("ServiceName {name} Not Found");
    let mut result = Vec::new();
    for svc in state.services_named(name) {
        let (status, health) = service_health(state, svc);
        if code == StatusCode::NOT_FOUND || code < status.code() {
            code = status.code();
            word = status.as_str().to_string();
        }
        result.push(health);
    }
    if wants_text(req) {
        return text(code, word);
    }
    Reply::json(code, &result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::consul::model::{CheckDefinition, MAINTENANCE_PREFIX};

    fn check(id: &str, status: &str) -> HealthCheck {
        HealthCheck {
            check_id: id.into(),
            name: String::new(),
            status: status.into(),
            notes: String::new(),
            output: String::new(),
            service_id: "s".into(),
            service_name: "s".into(),
            definition: CheckDefinition::default(),
        }
    }

    #[test]
    fn aggregation_order() {
        let p = check("p", PASSING);
        let w = check("w", WARNING);
        let c = check("c", CRITICAL);
        let m = check(&format!("{MAINTENANCE_PREFIX}s"), CRITICAL);
        let odd = check("o", "bogus");
        assert_eq!(aggregate([]), Aggregate::Passing);
        assert_eq!(aggregate([&p]), Aggregate::Passing);
        assert_eq!(aggregate([&p, &w]), Aggregate::Warning);
        assert_eq!(aggregate([&w, &c, &p]), Aggregate::Critical);
        assert_eq!(aggregate([&c, &m]), Aggregate::Maintenance);
        assert_eq!(aggregate([&m]), Aggregate::Maintenance);
        assert_eq!(aggregate([&p, &odd]), Aggregate::Unknown);
        assert_eq!(Aggregate::Unknown.as_str(), "");
    }

    #[test]
    fn codes() {
        assert_eq!(Aggregate::Passing.code(), StatusCode::OK);
        assert_eq!(Aggregate::Warning.code(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(Aggregate::Critical.code(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            Aggregate::Maintenance.code(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
