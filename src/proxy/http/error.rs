//! Why a request could not be proxied, and the one place that maps it to a status.

use std::sync::Arc;

use http::StatusCode;

use super::upstream::UpstreamError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("listener is closing")]
    ListenerClosing,
    #[error("no rule matches")]
    NoRoute,
    #[error("no usable target for service {service:?}")]
    NoTarget { service: Arc<str> },
    #[error("cannot connect to target {target}: {source}")]
    Connect {
        target: Arc<str>,
        source: std::io::Error,
    },
    #[error("target {target} is at its limit of {limit} open connections")]
    AtCapacity { target: Arc<str>, limit: usize },
    #[error("target {target} did not answer within {secs:.1}s")]
    ResponseTimeout { target: Arc<str>, secs: f64 },
    #[error("target {target} failed: {source}")]
    Upstream {
        target: Arc<str>,
        source: UpstreamError,
    },
    #[error("target {target} answered 101 to a request that asked for no upgrade")]
    UnsolicitedUpgrade { target: Arc<str> },
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("request target longer than {} bytes", super::validate::MAX_TARGET_LEN)]
    UriTooLong,
    #[error("method not allowed: {0}")]
    MethodNotAllowed(&'static str),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::ListenerClosing
            | ProxyError::NoTarget { .. }
            | ProxyError::AtCapacity { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            // The client's own body failed the exchange: its fault, not the target's.
            ProxyError::Upstream {
                source: UpstreamError::ClientBodyTimeout,
                ..
            } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Upstream {
                source: UpstreamError::ClientBody(_),
                ..
            } => StatusCode::BAD_REQUEST,
            ProxyError::Connect { .. }
            | ProxyError::Upstream { .. }
            | ProxyError::UnsolicitedUpgrade { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::ResponseTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::UriTooLong => StatusCode::URI_TOO_LONG,
        }
    }

    /// The short body a client sees: says what happened, names nothing internal.
    pub fn body(&self) -> &'static str {
        match self {
            ProxyError::ListenerClosing => "503 Service Unavailable: listener closing\n",
            ProxyError::NoRoute => "404 Not Found: no rule matches this host and path\n",
            ProxyError::NoTarget { .. } => "503 Service Unavailable: no usable target\n",
            ProxyError::AtCapacity { .. } => {
                "503 Service Unavailable: the targets are at their connection limit\n"
            }
            ProxyError::Connect { .. } => "502 Bad Gateway: cannot connect to the target\n",
            ProxyError::Upstream {
                source: UpstreamError::ClientBodyTimeout,
                ..
            } => "408 Request Timeout: the request body stalled\n",
            ProxyError::Upstream {
                source: UpstreamError::ClientBody(_),
                ..
            } => "400 Bad Request: invalid request body\n",
            ProxyError::Upstream { .. } | ProxyError::UnsolicitedUpgrade { .. } => {
                "502 Bad Gateway: invalid response from the target\n"
            }
            ProxyError::ResponseTimeout { .. } => {
                "504 Gateway Timeout: the target did not answer in time\n"
            }
            ProxyError::BadRequest(_) => "400 Bad Request\n",
            ProxyError::MethodNotAllowed(_) => "405 Method Not Allowed\n",
            ProxyError::UriTooLong => "414 URI Too Long\n",
        }
    }

    /// Whether the client connection must close after this answer: the request may have
    /// left bytes (a body, CONNECT tunnel data) that must not be read as the next request.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::BadRequest(_)
                | ProxyError::MethodNotAllowed(_)
                | ProxyError::Upstream {
                    source: UpstreamError::ClientBody(_) | UpstreamError::ClientBodyTimeout,
                    ..
                }
        )
    }

    /// The target involved, if any, for the log line.
    pub fn target(&self) -> Option<&str> {
        match self {
            ProxyError::Connect { target, .. }
            | ProxyError::AtCapacity { target, .. }
            | ProxyError::ResponseTimeout { target, .. }
            | ProxyError::Upstream { target, .. }
            | ProxyError::UnsolicitedUpgrade { target } => Some(target),
            _ => None,
        }
    }
}
