//! The agent's state changes, as pure functions on [`AgentState`]; the handlers run them
//! inside `Control::update`, so an `Err` changes nothing.

use http::StatusCode;

use super::go::quote;
use super::model::{AgentState, CheckDefinition, HealthCheck, CRITICAL, MAINTENANCE_PREFIX};
use super::register::Registration;
use crate::api::ApiError;

/// Consul keeps this much of a check's output.
pub const CHECK_OUTPUT_MAX: usize = 4096;

const DEFAULT_MAINTENANCE_REASON: &str =
    "Maintenance mode is enabled for this service, but no reason was provided. This is a default message.";

/// Adds or replaces a service. Checks named in the registration are (re)defined, keeping the
/// status and output of a check that already existed under the same ID; the service's other
/// checks stay unless `replace_existing_checks` (the maintenance check always stays).
pub fn register(agent: &mut AgentState, reg: Registration, replace_existing_checks: bool) {
    let svc = reg.service;
    let several = reg.checks.len() > 1;
    let mut defined = Vec::with_capacity(reg.checks.len());
    for (i, spec) in reg.checks.into_iter().enumerate() {
        let check_id = if spec.check_id.is_empty() {
            if several {
                format!("service:{}:{}", svc.id, i + 1)
            } else {
                format!("service:{}", svc.id)
            }
        } else {
            spec.check_id
        };
        let name = if spec.name.is_empty() {
            format!("Service '{}' check", svc.service)
        } else {
            spec.name
        };
        let (status, output) = match agent.checks.get(&check_id) {
            Some(prev) => (prev.status.clone(), prev.output.clone()),
            None if spec.status.is_empty() => (CRITICAL.to_string(), String::new()),
            None => (spec.status, String::new()),
        };
        defined.push(HealthCheck {
            check_id,
            name,
            status,
            notes: spec.notes,
            output,
            service_id: svc.id.clone(),
            service_name: svc.service.clone(),
            definition: spec.definition,
        });
    }
    let keep = |c: &HealthCheck| {
        c.service_id != svc.id
            || c.is_maintenance()
            || !replace_existing_checks
            || defined.iter().any(|d| d.check_id == c.check_id)
    };
    agent.checks.retain(|_, c| keep(c));
    for check in agent.checks.values_mut() {
        if check.service_id == svc.id {
            check.service_name.clone_from(&svc.service);
        }
    }
    for check in defined {
        agent.checks.insert(check.check_id.clone(), check);
    }
    agent.services.insert(svc.id.clone(), svc);
}

/// Removes a service and all its checks.
pub fn deregister(agent: &mut AgentState, id: &str) -> Result<(), ApiError> {
    if agent.services.remove(id).is_none() {
        return Err(ApiError::not_found(format!(
            "Unknown service ID {}. Ensure that the service ID is passed, not the service name.",
            quote(id)
        )));
    }
    agent.checks.retain(|_, c| c.service_id != id);
    Ok(())
}

/// Puts a service into maintenance (idempotently: a second enable keeps the first reason) or
/// takes it out.
pub fn maintenance(
    agent: &mut AgentState,
    id: &str,
    enable: bool,
    reason: &str,
) -> Result<(), ApiError> {
    let Some(svc) = agent.services.get(id) else {
        return Err(ApiError::not_found(format!(
            "No service registered with ID {}",
            quote(id)
        )));
    };
    let check_id = format!("{MAINTENANCE_PREFIX}{id}");
    if !enable {
        agent.checks.remove(&check_id);
        return Ok(());
    }
    if agent.checks.contains_key(&check_id) {
        return Ok(());
    }
    let notes = if reason.is_empty() {
        DEFAULT_MAINTENANCE_REASON.to_string()
    } else {
        reason.to_string()
    };
    let check = HealthCheck {
        check_id: check_id.clone(),
        name: "Service Maintenance Mode".into(),
        status: CRITICAL.into(),
        notes,
        output: String::new(),
        service_id: svc.id.clone(),
        service_name: svc.service.clone(),
        definition: CheckDefinition::default(),
    };
    agent.checks.insert(check_id, check);
    Ok(())
}

/// Sets the status of a TTL check (`/v1/agent/check/pass|warn|fail|update`).
pub fn update_ttl(
    agent: &mut AgentState,
    check_id: &str,
    status: &str,
    output: &str,
) -> Result<(), ApiError> {
    let Some(check) = agent.checks.get_mut(check_id) else {
        return Err(ApiError::not_found(format!(
            "Unknown check ID {}. Ensure that the check ID is passed, not the check name.",
            quote(check_id)
        )));
    };
    if !check.definition.is_ttl() {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServerError",
            format!("CheckID {} does not have associated TTL", quote(check_id)),
        ));
    }
    check.status = status.to_string();
    check.output = truncate_output(output);
    Ok(())
}

/// Consul's output cap, cut on a character boundary.
fn truncate_output(output: &str) -> String {
    if output.len() <= CHECK_OUTPUT_MAX {
        return output.to_string();
    }
    let mut end = CHECK_OUTPUT_MAX;
    while !output.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{} ... (captured {end} of {} bytes)",
        &output[..end],
        output.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::consul::model::{PASSING, WARNING};
    use crate::api::consul::register::decode;

    fn reg(agent: &mut AgentState, body: &str, replace: bool) {
        register(agent, decode(body.as_bytes()).unwrap(), replace);
    }

    #[test]
    fn check_defaults_and_ids() {
        let mut a = AgentState::default();
        reg(
            &mut a,
            r#"{"Name":"web","ID":"w1","Check":{"TTL":"10s"}}"#,
            false,
        );
        let c = &a.checks["service:w1"];
        assert_eq!(c.name, "Service 'web' check");
        assert_eq!(c.status, CRITICAL);
        assert_eq!(c.service_name, "web");
        reg(
            &mut a,
            r#"{"Name":"api","Checks":[{"TTL":"1s"},{"TTL":"1s","Status":"warning"}]}"#,
            false,
        );
        assert_eq!(a.checks["service:api:1"].status, CRITICAL);
        assert_eq!(a.checks["service:api:2"].status, WARNING);
    }

    #[test]
    fn reregistration_keeps_or_replaces_checks() {
        let mut a = AgentState::default();
        reg(
            &mut a,
            r#"{"Name":"web","Checks":[{"CheckID":"a","TTL":"1s"},{"CheckID":"b","TTL":"1s"}]}"#,
            false,
        );
        update_ttl(&mut a, "a", PASSING, "fine").unwrap();
        maintenance(&mut a, "web", true, "").unwrap();
        reg(
            &mut a,
            r#"{"Name":"web","Port":81,"Checks":[{"CheckID":"a","TTL":"2s","Status":"critical"}]}"#,
            false,
        );
        assert_eq!(a.services["web"].port, 81);
        assert!(a.checks.contains_key("b"));
        // The running status survives a re-registration.
        assert_eq!(a.checks["a"].status, PASSING);
        assert_eq!(a.checks["a"].output, "fine");
        assert_eq!(a.checks["a"].definition.ttl, Some(2_000_000_000));
        reg(
            &mut a,
            r#"{"Name":"web","Checks":[{"CheckID":"a","TTL":"2s"}]}"#,
            true,
        );
        assert!(!a.checks.contains_key("b"));
        assert!(a.checks.contains_key("a"));
        assert!(a.checks.contains_key("_service_maintenance:web"));
    }

    #[test]
    fn deregister_removes_checks() {
        let mut a = AgentState::default();
        reg(&mut a, r#"{"Name":"web","Check":{"TTL":"1s"}}"#, false);
        reg(&mut a, r#"{"Name":"api","Check":{"TTL":"1s"}}"#, false);
        deregister(&mut a, "web").unwrap();
        assert_eq!(a.checks.keys().collect::<Vec<_>>(), vec!["service:api"]);
        assert_eq!(
            deregister(&mut a, "web").unwrap_err().status,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn maintenance_is_idempotent() {
        let mut a = AgentState::default();
        reg(&mut a, r#"{"Name":"web"}"#, false);
        maintenance(&mut a, "web", true, "first").unwrap();
        maintenance(&mut a, "web", true, "second").unwrap();
        let c = &a.checks["_service_maintenance:web"];
        assert_eq!(c.notes, "first");
        assert_eq!(c.kind(), "maintenance");
        maintenance(&mut a, "web", false, "").unwrap();
        assert!(a.checks.is_empty());
        maintenance(&mut a, "web", true, "").unwrap();
        assert_eq!(
            a.checks["_service_maintenance:web"].notes,
            DEFAULT_MAINTENANCE_REASON
        );
        assert_eq!(
            maintenance(&mut a, "nope", true, "").unwrap_err().status,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn ttl_updates() {
        let mut a = AgentState::default();
        reg(
            &mut a,
            r#"{"Name":"web","Checks":[{"CheckID":"t","TTL":"1s"},{"CheckID":"h","HTTP":"http://x","Interval":"1s"}]}"#,
            false,
        );
        update_ttl(&mut a, "t", WARNING, "slow").unwrap();
        assert_eq!(
            (a.checks["t"].status.as_str(), a.checks["t"].output.as_str()),
            (WARNING, "slow")
        );
        assert_eq!(
            update_ttl(&mut a, "h", PASSING, "").unwrap_err().status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            update_ttl(&mut a, "zz", PASSING, "").unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        let long = "é".repeat(3000);
        update_ttl(&mut a, "t", PASSING, &long).unwrap();
        assert!(a.checks["t"]
            .output
            .contains("(captured 4096 of 6000 bytes)"));
    }
}
