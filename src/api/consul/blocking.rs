//! `GET /v1/agent/service/<id>[?hash=<h>&wait=<dur>]`: the service definition with its
//! `ContentHash`, and Consul's hash-based blocking.

use std::time::Duration;

use http::StatusCode;

use super::go;
use super::model::{AgentService, ServiceView};
use crate::api::{ApiRequest, Control, Reply};

pub const DEFAULT_WAIT: Duration = Duration::from_secs(5 * 60);
pub const MAX_WAIT: Duration = Duration::from_secs(10 * 60);

/// FNV-1a, 64 bits: stable across builds and platforms (std's `DefaultHasher` is not).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The hash of a service definition: FNV-1a 64 of its canonical JSON (fixed field order,
/// sorted maps), in hex.
pub fn content_hash(service: &AgentService) -> String {
    let bytes = serde_json::to_vec(service).unwrap_or_default();
    format!("{:016x}", fnv1a64(&bytes))
}

/// `wait` as Consul reads it: a Go duration, capped at 10 minutes; absent or ≤ 0 is 5 minutes.
pub fn parse_wait(raw: Option<&str>) -> Result<Duration, String> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(DEFAULT_WAIT);
    };
    let ns = go::parse_duration(raw).map_err(|_| "Invalid wait time".to_string())?;
    let Ok(ns) = u64::try_from(ns) else {
        return Ok(DEFAULT_WAIT);
    };
    if ns == 0 {
        return Ok(DEFAULT_WAIT);
    }
    Ok(Duration::from_nanos(ns).min(MAX_WAIT))
}

fn not_found(id: &str) -> Reply {
    Reply::text(StatusCode::NOT_FOUND, format!("unknown service ID: {id}"))
}

/// Answers at once unless `hash` names the current definition; then holds until the
/// definition changes (or goes) or `wait` passes. Other requests are not held up: this only
/// awaits the control's change notifications.
pub async fn service_definition(control: &Control, req: &ApiRequest, id: &str) -> Reply {
    let wanted = req
        .query("hash")
        .filter(|h| !h.is_empty())
        .map(str::to_string);
    let wait = match parse_wait(req.query("wait")) {
        Ok(w) => w,
        Err(e) => return Reply::text(StatusCode::BAD_REQUEST, e),
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = control.subscribe();
    loop {
        // Mark the current version seen before reading the state, so no change is missed.
        changes.borrow_and_update();
        let state = control.state();
        let Some(service) = state.agent.services.get(id) else {
            return not_found(id);
        };
        let hash = content_hash(service);
        if wanted.as_deref() == Some(hash.as_str()) {
            if let Ok(Ok(())) = tokio::time::timeout_at(deadline, changes.changed()).await {
                continue;
            }
            // Timed out (or the control is gone): answer with the unchanged definition.
        }
        let mut view = ServiceView::new(service);
        view.content_hash = Some(hash.clone());
        return Reply::json(StatusCode::OK, &view).header("X-Consul-ContentHash", &hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::consul::register::decode;

    #[test]
    fn fnv_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn content_hash_is_stable_and_sensitive() {
        let a = decode(br#"{"Name":"web","ID":"w1","Port":80,"Meta":{"b":"2","a":"1"}}"#).unwrap();
        let b = decode(br#"{"meta":{"a":"1","b":"2"},"port":80,"id":"w1","name":"web"}"#).unwrap();
        let h = content_hash(&a.service);
        assert_eq!(h, content_hash(&b.service));
        assert_eq!(h.len(), 16);
        // Pinned: the hash must not change between builds, or blocked clients would wake.
        assert_eq!(h, "60db2a094f1f7244");
        let c = decode(br#"{"Name":"web","ID":"w1","Port":81,"Meta":{"b":"2","a":"1"}}"#).unwrap();
        assert_ne!(h, content_hash(&c.service));
    }

    #[test]
    fn wait_parsing() {
        assert_eq!(parse_wait(None), Ok(DEFAULT_WAIT));
        assert_eq!(parse_wait(Some("1s")), Ok(Duration::from_secs(1)));
        assert_eq!(parse_wait(Some("500ms")), Ok(Duration::from_millis(500)));
        assert_eq!(parse_wait(Some("1m30s")), Ok(Duration::from_secs(90)));
        assert_eq!(parse_wait(Some("1h")), Ok(MAX_WAIT));
        assert_eq!(parse_wait(Some("0")), Ok(DEFAULT_WAIT));
        assert_eq!(parse_wait(Some("soon")), Err("Invalid wait time".into()));
    }
}
