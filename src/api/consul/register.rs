//! Decoding and validating `PUT /v1/agent/service/register`.
//!
//! Go's `encoding/json` matches keys case-insensitively and Consul also accepts snake_case
//! aliases (`enable_tag_override`, `tagged_addresses`, `deregister_critical_service_after`…),
//! so every *field* key is normalised (lowercased, `_` dropped) before lookup — at every level
//! that holds fields (the service, `Weights`, `TaggedAddresses` values, checks). Keys that are
//! data (`Meta`, the `TaggedAddresses` tags, `Header` names) are kept as sent. Unknown fields
//! are ignored, as Go does.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde_json::{Map, Value};

use super::go;
use super::model::{AgentService, CheckDefinition, TaggedAddress, CRITICAL, PASSING, WARNING};
use crate::api::ApiError;
use crate::config::Weights;

/// A decoded, validated registration.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub service: AgentService,
    pub checks: Vec<CheckSpec>,
}

/// One check of a registration, before its defaults are filled in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckSpec {
    pub check_id: String,
    pub name: String,
    pub notes: String,
    pub status: String,
    pub definition: CheckDefinition,
}

/// `Name` → `name`, `enable_tag_override` → `enabletagoverride`.
pub fn normalize_key(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("BadRequest", message)
}

/// Go's wording for a value of the wrong JSON type.
fn type_error(value: &Value, field: &str, go_type: &str) -> ApiError {
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    bad(format!(
        "Request decode failed: json: cannot unmarshal {kind} into Go struct field {field} of type {go_type}"
    ))
}

/// The fields of one JSON object, by normalised key; JSON `null` reads as absent.
struct Fields<'a> {
    map: HashMap<String, &'a Value>,
    /// Go struct name for error messages (`ServiceDefinition`, `CheckType`).
    owner: &'static str,
}

impl<'a> Fields<'a> {
    fn new(obj: &'a Map<String, Value>, owner: &'static str) -> Fields<'a> {
        let map = obj
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (normalize_key(k), v))
            .collect();
        Fields { map, owner }
    }

    fn get(&self, keys: &[&str]) -> Option<&'a Value> {
        keys.iter().find_map(|k| self.map.get(*k).copied())
    }

    fn field(&self, name: &str) -> String {
        format!("{}.{name}", self.owner)
    }

    fn string(&self, keys: &[&str], name: &str) -> Result<String, ApiError> {
        match self.get(keys) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(type_error(v, &self.field(name), "string")),
        }
    }

    fn boolean(&self, keys: &[&str], name: &str) -> Result<bool, ApiError> {
        match self.get(keys) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(type_error(v, &self.field(name), "bool")),
        }
    }

    fn int(&self, keys: &[&str], name: &str) -> Result<i64, ApiError> {
        match self.get(keys) {
            None => Ok(0),
            Some(v) => as_int(v).ok_or_else(|| type_error(v, &self.field(name), "int")),
        }
    }

    fn strings(&self, keys: &[&str], name: &str) -> Result<Vec<String>, ApiError> {
        match self.get(keys) {
            None => Ok(Vec::new()),
            Some(v) => string_list(v).ok_or_else(|| type_error(v, &self.field(name), "[]string")),
        }
    }

    fn object(
        &self,
        keys: &[&str],
        name: &str,
        go_type: &str,
    ) -> Result<Option<&'a Map<String, Value>>, ApiError> {
        match self.get(keys) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(v) => Err(type_error(v, &self.field(name), go_type)),
        }
    }

    /// A Go duration: a string (`"10s"`) or a number of nanoseconds. Zero and negative
    /// durations read as unset, which is how Consul's validation treats them.
    fn duration(&self, keys: &[&str], name: &str) -> Result<Option<i64>, ApiError> {
        let ns = match self.get(keys) {
            None => return Ok(None),
            Some(Value::String(s)) => {
                go::parse_duration(s).map_err(|e| bad(format!("Request decode failed: {e}")))?
            }
            Some(v) => {
                as_int(v).ok_or_else(|| type_error(v, &self.field(name), "time.Duration"))?
            }
        };
        Ok((ns > 0).then_some(ns))
    }
}

/// A JSON number that is a whole number fitting an i64.
fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
                .map(|f| f as i64)
        }),
        _ => None,
    }
}

fn string_list(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect(),
        _ => None,
    }
}

/// `0.0.0.0`, `::` and `[::]` — addresses a client cannot connect to.
fn is_any(address: &str) -> bool {
    let trimmed = address.trim_start_matches('[').trim_end_matches(']');
    trimmed
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified())
}

/// Decodes and validates a registration body, in Consul's order of checks.
pub fn decode(body: &[u8]) -> Result<Registration, ApiError> {
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(body).map_err(|e| bad(format!("Request decode failed: {e}")))?
    };
    let Value::Object(obj) = &value else {
        return Err(type_error(
            &value,
            "ServiceDefinition",
            "structs.ServiceDefinition",
        ));
    };
    let f = Fields::new(obj, "ServiceDefinition");

    let name = f.string(&["name"], "Name")?;
    let mut id = f.string(&["id"], "ID")?;
    let address = f.string(&["address"], "Address")?;
    let port = f.int(&["port"], "Port")?;
    let tags = f.strings(&["tags"], "Tags")?;
    let meta = decode_meta(&f)?;
    let tagged_addresses = decode_tagged_addresses(&f)?;
    let weights = decode_weights(&f)?;
    let enable_tag_override = f.boolean(&["enabletagoverride"], "EnableTagOverride")?;
    let kind = f.string(&["kind"], "Kind")?;
    let checks = decode_checks(&f)?;

    let port = u16::try_from(port).map_err(|_| {
        bad(format!(
            "Request decode failed: Port {port} is out of range 0-65535"
        ))
    })?;

    if name.is_empty() {
        return Err(bad("Missing service name"));
    }
    if id.is_empty() {
        id.clone_from(&name);
    }
    if is_any(&address) || tagged_addresses.values().any(|a| is_any(&a.address)) {
        return Err(bad("Invalid service address"));
    }
    let weights = match weights {
        None => Weights::default(),
        Some((passing, warning)) => {
            validate_weights(passing, warning).map_err(|e| bad(format!("Invalid Weights: {e}")))?
        }
    };
    validate_meta(&meta).map_err(|e| bad(format!("Invalid Service Meta: {e}")))?;
    for check in &checks {
        check
            .definition
            .validate()
            .map_err(|e| bad(format!("Invalid check: {e}")))?;
    }
    if checks
        .iter()
        .any(|c| !c.status.is_empty() && ![PASSING, WARNING, CRITICAL].contains(&c.status.as_str()))
    {
        return Err(bad(
            "Status for checks must 'passing', 'warning', 'critical'",
        ));
    }

    Ok(Registration {
        service: AgentService {
            kind,
            id,
            service: name,
            tags,
            meta,
            port,
            address,
            tagged_addresses,
            weights,
            enable_tag_override,
        },
        checks,
    })
}

fn decode_meta(f: &Fields<'_>) -> Result<BTreeMap<String, String>, ApiError> {
    let Some(obj) = f.object(&["meta"], "Meta", "map[string]string")? else {
        return Ok(BTreeMap::new());
    };
    obj.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            Value::Null => Ok((k.clone(), String::new())),
            other => Err(type_error(other, "ServiceDefinition.Meta", "string")),
        })
        .collect()
}

fn decode_tagged_addresses(f: &Fields<'_>) -> Result<BTreeMap<String, TaggedAddress>, ApiError> {
    let Some(obj) = f.object(
        &["taggedaddresses"],
        "TaggedAddresses",
        "map[string]structs.ServiceAddress",
    )?
    else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    for (tag, value) in obj {
        let Value::Object(addr) = value else {
            return Err(type_error(
                value,
                "ServiceDefinition.TaggedAddresses",
                "structs.ServiceAddress",
            ));
        };
        let a = Fields::new(addr, "ServiceAddress");
        let port = a.int(&["port"], "Port")?;
        let port = u16::try_from(port).map_err(|_| {
            bad(format!(
                "Request decode failed: Port {port} is out of range 0-65535"
            ))
        })?;
        out.insert(
            tag.clone(),
            TaggedAddress {
                address: a.string(&["address"], "Address")?,
                port,
            },
        );
    }
    Ok(out)
}

/// `(Passing, Warning)` as sent (missing members are 0), or `None` without `Weights`.
fn decode_weights(f: &Fields<'_>) -> Result<Option<(i64, i64)>, ApiError> {
    let Some(obj) = f.object(&["weights"], "Weights", "structs.Weights")? else {
        return Ok(None);
    };
    let w = Fields::new(obj, "Weights");
    Ok(Some((
        w.int(&["passing"], "Passing")?,
        w.int(&["warning"], "Warning")?,
    )))
}

/// Consul's `ValidateWeights`.
pub fn validate_weights(passing: i64, warning: i64) -> Result<Weights, String> {
    if passing < 1 {
        return Err("Passing must be greater than 0".into());
    }
    if warning < 0 {
        return Err("Warning must be greater or equal than 0".into());
    }
    if passing > 65535 || warning > 65535 {
        return Err("Passing or Warning must be lower or equal than 65535".into());
    }
    // Both are within 0..=65535 here.
    Ok(Weights {
        passing: passing as u32,
        warning: warning as u32,
    })
}

/// Consul's `ValidateServiceMetadata` (non-gateway services).
fn validate_meta(meta: &BTreeMap<String, String>) -> Result<(), String> {
    if meta.len() > 64 {
        return Err("Node metadata cannot contain more than 64 key/value pairs".into());
    }
    for (key, value) in meta {
        if key.is_empty() {
            return Err("Key cannot be blank".into());
        }
        if key.len() > 128 {
            return Err("Key is too long (limit: 128 characters)".into());
        }
        if !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!("Key contains invalid characters: {key}"));
        }
        if key.starts_with("consul-") {
            return Err("Key prefix 'consul-' is reserved for internal use".into());
        }
        if value.len() > 512 {
            return Err("Value is too long (limit: 512 characters)".into());
        }
    }
    Ok(())
}

/// `Check` (ignored when empty, as Consul does) then `Checks`.
fn decode_checks(f: &Fields<'_>) -> Result<Vec<CheckSpec>, ApiError> {
    let mut out = Vec::new();
    if let Some(obj) = f.object(&["check"], "Check", "structs.CheckType")? {
        let check = decode_check(obj)?;
        if check != CheckSpec::default() {
            out.push(check);
        }
    }
    match f.get(&["checks"]) {
        None => {}
        Some(Value::Array(items)) => {
            for item in items {
                match item {
                    Value::Object(obj) => out.push(decode_check(obj)?),
                    Value::Null => out.push(CheckSpec::default()),
                    other => {
                        return Err(type_error(
                            other,
                            "ServiceDefinition.Checks",
                            "structs.CheckType",
                        ))
                    }
                }
            }
        }
        Some(other) => {
            return Err(type_error(
                other,
                "ServiceDefinition.Checks",
                "structs.CheckTypes",
            ))
        }
    }
    Ok(out)
}

fn decode_check(obj: &Map<String, Value>) -> Result<CheckSpec, ApiError> {
    let f = Fields::new(obj, "CheckType");
    let mut args = f.strings(&["args", "scriptargs"], "ScriptArgs")?;
    // Legacy `script` (py-consul's docker helper): run it with a shell.
    let script = f.string(&["script"], "Script")?;
    if args.is_empty() && !script.is_empty() {
        args = vec!["/bin/sh".into(), "-c".into(), script];
    }
    let header = match f.object(&["header"], "Header", "map[string][]string")? {
        None => BTreeMap::new(),
        Some(obj) => obj
            .iter()
            .map(|(k, v)| match string_list(v) {
                Some(values) => Ok((k.clone(), values)),
                None => Err(type_error(v, "CheckType.Header", "[]string")),
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(CheckSpec {
        check_id: f.string(&["checkid", "id"], "CheckID")?,
        name: f.string(&["name"], "Name")?,
        notes: f.string(&["notes"], "Notes")?,
        status: f.string(&["status"], "Status")?,
        definition: CheckDefinition {
            ttl: f.duration(&["ttl"], "TTL")?,
            http: f.string(&["http"], "HTTP")?,
            header,
            method: f.string(&["method"], "Method")?,
            body: f.string(&["body"], "Body")?,
            tcp: f.string(&["tcp"], "TCP")?,
            udp: f.string(&["udp"], "UDP")?,
            grpc: f.string(&["grpc"], "GRPC")?,
            grpc_use_tls: f.boolean(&["grpcusetls"], "GRPCUseTLS")?,
            h2ping: f.string(&["h2ping"], "H2PING")?,
            tls_server_name: f.string(&["tlsservername"], "TLSServerName")?,
            tls_skip_verify: f.boolean(&["tlsskipverify"], "TLSSkipVerify")?,
            args,
            docker_container_id: f.string(&["dockercontainerid"], "DockerContainerID")?,
            shell: f.string(&["shell"], "Shell")?,
            alias_service: f.string(&["aliasservice"], "AliasService")?,
            alias_node: f.string(&["aliasnode"], "AliasNode")?,
            interval: f.duration(&["interval"], "Interval")?,
            timeout: f.duration(&["timeout"], "Timeout")?,
            deregister_critical_service_after: f.duration(
                &["deregistercriticalserviceafter"],
                "DeregisterCriticalServiceAfter",
            )?,
            success_before_passing: f.int(&["successbeforepassing"], "SuccessBeforePassing")?,
            failures_before_warning: f.int(&["failuresbeforewarning"], "FailuresBeforeWarning")?,
            failures_before_critical: f
                .int(&["failuresbeforecritical"], "FailuresBeforeCritical")?,
            output_max_size: f.int(&["outputmaxsize"], "OutputMaxSize")?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(body: &str) -> Result<Registration, String> {
        decode(body.as_bytes()).map_err(|e| {
            assert_eq!(e.status, http::StatusCode::BAD_REQUEST);
            e.message
        })
    }

    #[test]
    fn keys_normalise() {
        assert_eq!(normalize_key("EnableTagOverride"), "enabletagoverride");
        assert_eq!(normalize_key("enable_tag_override"), "enabletagoverride");
        assert_eq!(normalize_key("TaggedAddresses"), "taggedaddresses");
        assert_eq!(
            normalize_key("DeregisterCriticalServiceAfter"),
            "deregistercriticalserviceafter"
        );
        assert_eq!(normalize_key("tls_skip_verify"), "tlsskipverify");
    }

    #[test]
    fn mixed_case_keys_decode_alike() {
        let lower = dec(
            r#"{"name":"web","id":"w1","address":"127.0.0.1","port":81,"tags":["a"],
            "meta":{"Zone":"a"},"weights":{"passing":3,"warning":1},"enabletagoverride":true,
            "tagged_addresses":{"lan":{"address":"127.0.0.2","port":82}},
            "checks":[{"ttl":"10s","Name":"t","CheckID":"c1","Status":"warning"}]}"#,
        )
        .unwrap();
        let pascal = dec(
            r#"{"Name":"web","ID":"w1","Address":"127.0.0.1","Port":81,"Tags":["a"],
            "Meta":{"Zone":"a"},"Weights":{"Passing":3,"Warning":1},"EnableTagOverride":true,
            "TaggedAddresses":{"lan":{"Address":"127.0.0.2","Port":82}},
            "Checks":[{"TTL":"10s","name":"t","check_id":"c1","status":"warning"}]}"#,
        )
        .unwrap();
        assert_eq!(lower, pascal);
        assert_eq!(
            lower.service.meta.get("Zone").map(String::as_str),
            Some("a")
        );
        assert_eq!(
            lower.service.weights,
            Weights {
                passing: 3,
                warning: 1
            }
        );
        assert_eq!(lower.checks[0].definition.ttl, Some(10_000_000_000));
        assert_eq!(lower.checks[0].status, "warning");
        assert!(lower.service.tagged_addresses.contains_key("lan"));
    }

    #[test]
    fn defaults() {
        let r = dec(r#"{"Name":"web"}"#).unwrap();
        assert_eq!(r.service.id, "web");
        assert_eq!(r.service.address, "");
        assert_eq!(r.service.port, 0);
        assert!(r.service.tags.is_empty() && r.service.meta.is_empty());
        assert_eq!(
            r.service.weights,
            Weights {
                passing: 1,
                warning: 1
            }
        );
        assert!(r.checks.is_empty());
        // An empty `Check` is no check.
        assert!(dec(r#"{"Name":"web","Check":{}}"#)
            .unwrap()
            .checks
            .is_empty());
    }

    #[test]
    fn weights_validation() {
        assert_eq!(
            validate_weights(1, 0),
            Ok(Weights {
                passing: 1,
                warning: 0
            })
        );
        assert_eq!(
            validate_weights(65535, 65535),
            Ok(Weights {
                passing: 65535,
                warning: 65535
            })
        );
        assert_eq!(
            validate_weights(0, 1).unwrap_err(),
            "Passing must be greater than 0"
        );
        assert_eq!(
            validate_weights(1, -1).unwrap_err(),
            "Warning must be greater or equal than 0"
        );
        assert_eq!(
            validate_weights(65536, 1).unwrap_err(),
            "Passing or Warning must be lower or equal than 65535"
        );
        assert_eq!(
            dec(r#"{"Name":"web","Weights":{"Warning":1}}"#).unwrap_err(),
            "Invalid Weights: Passing must be greater than 0"
        );
    }

    #[test]
    fn validation_messages() {
        assert_eq!(dec(r#"{"ID":"x"}"#).unwrap_err(), "Missing service name");
        assert_eq!(dec("").unwrap_err(), "Missing service name");
        assert_eq!(
            dec(r#"{"Name":"a","Address":"0.0.0.0"}"#).unwrap_err(),
            "Invalid service address"
        );
        assert_eq!(
            dec(r#"{"Name":"a","Address":"::"}"#).unwrap_err(),
            "Invalid service address"
        );
        assert!(dec("{nope")
            .unwrap_err()
            .starts_with("Request decode failed: "));
        assert!(dec(r#"{"Name":"a","Port":"80"}"#)
            .unwrap_err()
            .starts_with("Request decode failed: "));
        assert!(dec(r#"{"Name":"a","TaggedAddresses":{"lan":"1.2.3.4"}}"#)
            .unwrap_err()
            .starts_with("Request decode failed: "));
        assert_eq!(
            dec(r#"{"Name":"a","Check":{"Name":"x"}}"#).unwrap_err(),
            "Invalid check: TTL must be > 0 for TTL checks"
        );
        assert_eq!(
            dec(r#"{"Name":"a","Check":{"HTTP":"http://x/"}}"#).unwrap_err(),
            "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks"
        );
        assert_eq!(
            dec(r#"{"Name":"a","Check":{"TTL":"1s","Status":"ok"}}"#).unwrap_err(),
            "Status for checks must 'passing', 'warning', 'critical'"
        );
        assert!(dec(r#"{"Name":"a","Check":{"TTL":"1x"}}"#)
            .unwrap_err()
            .contains("unknown unit"));
        assert_eq!(
            dec(r#"{"Name":"a","Meta":{"consul-x":"1"}}"#).unwrap_err(),
            "Invalid Service Meta: Key prefix 'consul-' is reserved for internal use"
        );
    }

    #[test]
    fn check_definitions_are_kept() {
        let r = dec(r#"{"Name":"a","Checks":[
            {"http":"http://127.0.0.1:1/h","interval":"10s","timeout":"1s","header":{"X-A":["b"]},
             "method":"HEAD","tls_skip_verify":true,"DeregisterCriticalServiceAfter":"1m30s"},
            {"tcp":"127.0.0.1:1","interval":5000000000},
            {"args":["true"],"interval":"1s"},
            {"docker_container_id":"c","shell":"/bin/sh","script":"true","interval":"1s"}]}"#)
        .unwrap();
        let d = &r.checks[0].definition;
        assert_eq!(d.http, "http://127.0.0.1:1/h");
        assert_eq!(d.interval, Some(10_000_000_000));
        assert_eq!(d.timeout, Some(1_000_000_000));
        assert_eq!(d.deregister_critical_service_after, Some(90_000_000_000));
        assert_eq!(d.header.get("X-A"), Some(&vec!["b".to_string()]));
        assert_eq!(d.method, "HEAD");
        assert!(d.tls_skip_verify);
        assert_eq!(d.kind(), "http");
        assert_eq!(r.checks[1].definition.kind(), "tcp");
        assert_eq!(r.checks[1].definition.interval, Some(5_000_000_000));
        assert_eq!(r.checks[2].definition.kind(), "script");
        assert_eq!(r.checks[3].definition.kind(), "docker");
    }
}
