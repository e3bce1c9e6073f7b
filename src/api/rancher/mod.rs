//! The Rancher v1 API (GDAPI) subset: services, load balancers, certificates.

use http::StatusCode;

use super::{ApiRequest, Control, Reply};
use crate::config::{Certificate, LoadBalancer};

/// Rancher's resources as the API stores them.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RancherState {}

impl RancherState {
    /// The active load balancers, with rule `serviceId`s resolved to service names.
    pub fn load_balancers(&self) -> Vec<LoadBalancer> {
        Vec::new()
    }

    /// Certificates referenced by load balancers, keyed by their id.
    pub fn certificates(&self) -> Vec<Certificate> {
        Vec::new()
    }
}

pub async fn handle(_control: &Control, _req: ApiRequest) -> Reply {
    Reply::json(
        StatusCode::NOT_FOUND,
        &serde_json::json!({"type": "error", "status": 404}),
    )
}

/// Rancher's error object for `e`.
pub fn error_reply(e: &super::ApiError) -> Reply {
    Reply::json(
        e.status,
        &serde_json::json!({
            "type": "error", "links": {}, "actions": {},
            "status": e.status.as_u16(), "code": e.code,
            "fieldName": e.field, "message": e.message, "detail": null,
        }),
    )
}
