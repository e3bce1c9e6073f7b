//! One error type for both APIs; each renders it in its own wire format (Rancher's error
//! object, Consul's plain text).

use http::StatusCode;

use crate::routing::BuildError;
use crate::runtime::ApplyError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    /// Rancher's error `code` (`NotFound`, `MissingRequired`, …).
    pub code: &'static str,
    pub message: String,
    /// Rancher's `fieldName`, when one field is at fault.
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 422: the request is well-formed but cannot be applied.
    pub fn invalid(code: &'static str, field: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message).with_field(field)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
    }
}

impl From<ApplyError> for ApiError {
    /// The state change is valid on its own but cannot be served: refuse it.
    fn from(e: ApplyError) -> ApiError {
        let message = e.to_string();
        let (code, field) = match &e {
            ApplyError::Build(
                BuildError::PortConflict { .. } | BuildError::PortReserved { .. },
            )
            | ApplyError::Bind(_) => ("NotUnique", "sourcePort"),
            ApplyError::Build(BuildError::Hostname { .. }) => ("InvalidFormat", "hostname"),
            ApplyError::Build(BuildError::Path { .. }) => ("InvalidFormat", "path"),
            ApplyError::Build(BuildError::SourcePort { .. }) => ("MinLimitExceeded", "sourcePort"),
            ApplyError::Build(BuildError::MixedProtocols { .. }) => ("InvalidOption", "protocol"),
            ApplyError::Build(BuildError::Certificate { .. }) => ("InvalidFormat", "cert"),
            ApplyError::Build(_) => ("InvalidReference", "lbConfig"),
        };
        ApiError::invalid(code, field, message)
    }
}
