//! The Consul agent service API subset.

use http::StatusCode;

use super::{ApiRequest, Control, Reply};
use crate::config::Instance;

/// The agent's local services and their checks.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AgentState {}

impl AgentState {
    /// Every registered instance with its aggregated health and maintenance flag.
    pub fn instances(&self) -> Vec<Instance> {
        Vec::new()
    }
}

pub async fn handle(_control: &Control, _req: ApiRequest) -> Reply {
    Reply::text(StatusCode::NOT_FOUND, "404 page not found\n")
}
