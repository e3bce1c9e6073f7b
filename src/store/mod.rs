//! Persistence of the control state.
//!
//! The whole state is one JSON document, replaced atomically on every change: written to a
//! temporary file, fsynced, renamed over the old one, and the directory fsynced, so `kill -9`
//! at any moment leaves either the old or the new document, never a torn one. The file holds
//! private keys, so it is created with mode 0600.

mod file;

use serde::{Deserialize, Serialize};

pub use file::FileStore;

use crate::api::audit::AuditLog;
use crate::api::consul::AgentState;
use crate::api::rancher::RancherState;

/// Everything the control APIs manage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    pub rancher: RancherState,
    pub agent: AgentState,
    /// The newest writes to either API (bounded; see [`crate::api::audit`]).
    pub audit: AuditLog,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("store {path} is not a valid state document: {message}")]
    Corrupt { path: String, message: String },
}
