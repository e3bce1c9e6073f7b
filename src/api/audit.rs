//! The audit log: one entry per write to either API (Rancher create, update, delete, action;
//! Consul register, deregister, maintenance, check updates), refused writes included.
//!
//! Entries are part of the persisted [`crate::store::State`], bounded to the newest
//! `retention` entries, and appended by [`crate::api::Control::audit`] right after the write
//! they describe (a refused write changes nothing else). The request body is kept with every
//! secret-looking field replaced by [`REDACTED`]; the secret half of a credential is never
//! recorded, only the access key that authenticated.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Entries kept when nothing else is configured.
pub const DEFAULT_RETENTION: usize = 10_000;

/// What replaces a secret value.
pub const REDACTED: &str = "<redacted>";

/// Longest resource type / id / path recorded (they may come from a client's URL).
const MAX_TEXT: usize = 256;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// `1al<N>`, assigned when appended.
    #[serde(default)]
    pub id: String,
    /// Milliseconds since the epoch.
    pub created: i64,
    /// `api.<resourceType>.<verb>`, e.g. `api.loadBalancerService.create`.
    pub event_type: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    /// `apiKey` (Rancher Basic), `consulToken`, or `none`.
    pub auth_type: String,
    /// The access key that authenticated (never the secret).
    pub authenticated_as_account_id: Option<String>,
    pub client_ip: String,
    pub request_method: String,
    /// The path only: a query string may carry a token.
    pub request_url: String,
    pub response_code: u16,
    /// The request (body, else query parameters), secrets redacted.
    pub request_object: Value,
    /// The error message of a refused write.
    pub description: Option<String>,
    /// Milliseconds the request took.
    pub runtime: u64,
}

impl AuditEntry {
    /// An entry stamped now; `id` is set by [`AuditLog::push`].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        resource_type: Option<&str>,
        verb: &str,
        resource_id: Option<&str>,
        request_method: &str,
        request_url: &str,
        client_ip: String,
        response_code: u16,
        request_object: Value,
    ) -> AuditEntry {
        let resource_type = resource_type.map(clip);
        let event_type = format!(
            "api.{}.{}",
            resource_type.as_deref().unwrap_or("unknown"),
            clip(verb)
        );
        let mut request_object = request_object;
        redact(&mut request_object);
        AuditEntry {
            id: String::new(),
            created: now_ms(),
            event_type,
            resource_type,
            resource_id: resource_id.map(clip),
            auth_type: "none".into(),
            authenticated_as_account_id: None,
            client_ip,
            request_method: request_method.to_string(),
            request_url: clip(request_url),
            response_code,
            request_object,
            description: None,
            runtime: 0,
        }
    }

    pub fn authenticated(mut self, auth_type: &str, account: Option<&str>) -> AuditEntry {
        self.auth_type = auth_type.to_string();
        self.authenticated_as_account_id = account.map(clip);
        self
    }

    pub fn described(mut self, description: Option<String>) -> AuditEntry {
        self.description = description;
        self
    }

    pub fn took(mut self, runtime: std::time::Duration) -> AuditEntry {
        self.runtime = u64::try_from(runtime.as_millis()).unwrap_or(u64::MAX);
        self
    }
}

fn clip(s: &str) -> String {
    s.chars().take(MAX_TEXT).collect()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The retained entries, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AuditLog {
    /// The last entry number handed out (never reused, even after entries age out).
    next_id: u64,
    entries: VecDeque<AuditEntry>,
}

impl AuditLog {
    /// Appends `entry` and drops the oldest beyond `retention` (at least one is kept).
    pub fn push(&mut self, mut entry: AuditEntry, retention: usize) {
        self.next_id += 1;
        entry.id = format!("1al{}", self.next_id);
        self.entries.push_back(entry);
        let keep = retention.max(1);
        while self.entries.len() > keep {
            self.entries.pop_front();
        }
    }

    /// Removes the oldest entry (ids are not handed out again).
    pub fn pop_oldest(&mut self) -> Option<AuditEntry> {
        self.entries.pop_front()
    }

    /// Oldest first; `.rev()` for newest first.
    pub fn entries(&self) -> impl DoubleEndedIterator<Item = &AuditEntry> {
        self.entries.iter()
    }

    pub fn get(&self, id: &str) -> Option<&AuditEntry> {
        self.entries.iter().find(|e| e.id.eq_ignore_ascii_case(id))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Whether a field of this name holds a secret: keys, passwords, tokens, credentials.
fn is_secret(name: &str) -> bool {
    let n: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    matches!(
        n.as_str(),
        "key" | "privatekey" | "authorization" | "proxyauthorization" | "credentials"
    ) || [
        "password",
        "passwd",
        "secret",
        "token",
        "secretkey",
        "apikey",
    ]
    .iter()
    .any(|s| n.ends_with(s))
}

/// Replaces every secret field's value, at any depth, with [`REDACTED`].
pub fn redact(v: &mut Value) {
    match v {
        Value::Object(m) => redact_map(m),
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

fn redact_map(m: &mut Map<String, Value>) {
    for (k, v) in m.iter_mut() {
        if is_secret(k) && !v.is_null() {
            *v = Value::String(REDACTED.into());
        } else {
            redact(v);
        }
    }
}

/// The `i`th of a series of similar entries of about 400 bytes, for tests of retention.
#[cfg(test)]
pub fn sample_entry(i: usize) -> AuditEntry {
    let body = serde_json::json!({ "name": format!("lb-{i}"), "note": "x".repeat(200) });
    AuditEntry::new(
        Some("loadBalancerService"),
        "create",
        None,
        "POST",
        "/v1/loadbalancerservices",
        "127.0.0.1".into(),
        201,
        body,
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry(body: Value) -> AuditEntry {
        AuditEntry::new(
            Some("certificate"),
            "create",
            Some("1c1"),
            "POST",
            "/v1/certificates",
            "127.0.0.1".into(),
            201,
            body,
        )
    }

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let e = entry(json!({
            "name": "c", "cert": "PEM", "key": "PRIVATE", "certChain": null,
            "Check": {"Header": {"Authorization": ["Bearer x"]}, "HTTP": "http://h"},
            "nested": [{"password": "p", "token": "t", "secretKey": "s", "aclToken": "a",
                        "access_key": "visible", "cookie": "SRVID"}],
        }));
        let o = &e.request_object;
        assert_eq!(o["key"], REDACTED);
        assert_eq!(o["cert"], "PEM");
        assert_eq!(o["certChain"], Value::Null);
        assert_eq!(o["Check"]["Header"]["Authorization"], REDACTED);
        assert_eq!(o["Check"]["HTTP"], "http://h");
        let n = &o["nested"][0];
        for k in ["password", "token", "secretKey", "aclToken"] {
            assert_eq!(n[k], REDACTED, "{k}");
        }
        assert_eq!(n["access_key"], "visible");
        assert_eq!(n["cookie"], "SRVID");
        assert_eq!(e.event_type, "api.certificate.create");
        let text = serde_json::to_string(&e).unwrap();
        assert!(!text.contains("PRIVATE") && !text.contains("Bearer x"));
    }

    #[test]
    fn retention_is_bounded_and_ids_not_reused() {
        let mut log = AuditLog::default();
        for _ in 0..25 {
            log.push(entry(json!({})), 10);
        }
        assert_eq!(log.len(), 10);
        let ids: Vec<_> = log.entries().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.first(), Some(&"1al16"));
        assert_eq!(ids.last(), Some(&"1al25"));
        assert!(log.get("1al5").is_none() && log.get("1AL20").is_some());
        log.push(entry(json!({})), 0);
        assert_eq!(log.len(), 1);
        // Persisted with the store: the counter survives a round trip.
        let back: AuditLog = serde_json::from_value(serde_json::to_value(&log).unwrap()).unwrap();
        assert_eq!(back, log);
    }

    #[test]
    fn client_text_is_clipped() {
        let long = "x".repeat(10_000);
        let e = AuditEntry::new(
            Some(&long),
            &long,
            Some(&long),
            "POST",
            &long,
            "127.0.0.1".into(),
            404,
            Value::Null,
        );
        assert_eq!(e.resource_type.unwrap().len(), MAX_TEXT);
        assert!(e.event_type.len() <= 2 * MAX_TEXT + 5);
        assert_eq!(e.request_url.len(), MAX_TEXT);
    }
}
