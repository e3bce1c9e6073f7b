//! What it takes to send a request a second time.
//!
//! A request whose connection is reset before any response byte may go to another target when
//! sending it again is safe: it has no body, or its method is idempotent and its body is small
//! enough to have been kept ([`REPLAY_LIMIT`]). Anything else streams through and is not retried
//! once sent (a connect failure is still retried: nothing was sent).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::Payload;
use super::ProxyError;

/// Idempotent requests with a body of at most this many bytes are kept for a retry.
pub const REPLAY_LIMIT: u64 = 64 * 1024;

/// A copy of a request that can be sent again.
#[derive(Debug)]
pub struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Option<Bytes>,
}

impl Replay {
    pub fn request(&self) -> Request<Payload> {
        let mut req = Request::new(Payload::Buffered {
            data: self.body.clone(),
        });
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// RFC 9110 §9.2.2.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The request to send, and a copy to send again when that is safe. With `may_retry` false
/// (no other target to retry on) nothing is copied or kept.
pub async fn prepare(
    req: Request<Incoming>,
    may_retry: bool,
    read_timeout: Duration,
) -> Result<(Request<Payload>, Option<Replay>), ProxyError> {
    if !may_retry {
        let (parts, body) = req.into_parts();
        return Ok((
            Request::from_parts(parts, Payload::Streaming { body }),
            None,
        ));
    }
    let (parts, body) = req.into_parts();
    let kept = if body.is_end_stream() {
        None
    } else if is_idempotent(&parts.method)
        && body.size_hint().exact().is_some_and(|n| n <= REPLAY_LIMIT)
    {
        // Boxed: a bodiless request, the common case, should not carry this state.
        let collected = Box::pin(tokio::time::timeout(read_timeout, body.collect()))
            .await
            .map_err(|_| ProxyError::BadRequest("request body not received in time"))?
            .map_err(|_| ProxyError::BadRequest("incomplete request body"))?;
        // Kept as none, so that an empty body reads as ended from the start, as an empty
        // stream does, rather than as one empty frame.
        Some(collected.to_bytes()).filter(|b| !b.is_empty())
    } else {
        return Ok((
            Request::from_parts(parts, Payload::Streaming { body }),
            None,
        ));
    };
    let replay = Replay {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
        body: kept.clone(),
    };
    Ok((
        Request::from_parts(parts, Payload::Buffered { data: kept }),
        Some(replay),
    ))
}

/// Whether a failed exchange ended before any response came back, by a reset or close of the
/// connection (not a malformed response, a timeout or the client's own body failing).
pub fn is_reset(e: &hyper::Error) -> bool {
    !(e.is_parse() || e.is_user() || e.is_body_write_aborted() || e.is_timeout())
}
