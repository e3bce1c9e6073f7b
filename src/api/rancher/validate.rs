//! Checking a request body against a schema, with Rancher's error codes (§1.3).
//!
//! Shapes only: whether a reference points at something that exists is the caller's check
//! (it needs the state). Unknown and read-only fields are ignored, as Cattle does.

use serde_json::{Map, Value};

use super::schema::{self, Field, Schema};
use crate::api::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Create,
    Update,
}

/// Validates `body` against `schema`, returning only the fields writable in `mode`.
pub fn check(
    schema: &Schema,
    body: &Map<String, Value>,
    mode: Mode,
) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    for field in &schema.fields {
        let writable = match mode {
            Mode::Create => field.create,
            Mode::Update => field.update,
        };
        if !writable {
            continue;
        }
        match body.get(field.name) {
            None => {
                if mode == Mode::Create && field.required {
                    return Err(missing(field.name));
                }
            }
            Some(v) => {
                value(field, v)?;
                out.insert(field.name.to_string(), v.clone());
            }
        }
    }
    Ok(out)
}

fn missing(name: &str) -> ApiError {
    ApiError::invalid("MissingRequired", name, format!("{name} is required"))
}

fn value(field: &Field, v: &Value) -> Result<(), ApiError> {
    if v.is_null() || (field.required && v.as_str() == Some("")) {
        if field.required {
            return Err(missing(field.name));
        }
        return Ok(());
    }
    typed(field, field.ty, v)
}

fn bad_format(field: &Field, want: &str) -> ApiError {
    ApiError::invalid(
        "InvalidFormat",
        field.name,
        format!("{} must be {want}", field.name),
    )
}

fn typed(field: &Field, ty: &str, v: &Value) -> Result<(), ApiError> {
    if let Some(inner) = ty.strip_prefix("array[").and_then(|t| t.strip_suffix(']')) {
        let Value::Array(items) = v else {
            return Err(bad_format(field, "an array"));
        };
        return items.iter().try_for_each(|item| typed(field, inner, item));
    }
    if let Some(inner) = ty.strip_prefix("map[").and_then(|t| t.strip_suffix(']')) {
        let Value::Object(items) = v else {
            return Err(bad_format(field, "an object"));
        };
        return items
            .values()
            .try_for_each(|item| typed(field, inner, item));
    }
    if ty.starts_with("reference[") {
        return match v {
            Value::String(_) => Ok(()),
            _ => Err(bad_format(field, "a reference (string id)")),
        };
    }
    match ty {
        "json" => Ok(()),
        "string" | "password" | "date" => {
            let Value::String(s) = v else {
                return Err(bad_format(field, "a string"));
            };
            string(field, s)
        }
        "enum" => {
            let Value::String(s) = v else {
                return Err(bad_format(field, "a string"));
            };
            if field.options.contains(&s.as_str()) {
                Ok(())
            } else {
                Err(ApiError::invalid(
                    "InvalidOption",
                    field.name,
                    format!(
                        "{} must be one of {:?}, not {s:?}",
                        field.name, field.options
                    ),
                ))
            }
        }
        "int" => {
            let Some(n) = v.as_i64() else {
                return Err(bad_format(field, "an integer"));
            };
            if let Some(min) = field.min.filter(|&m| n < m) {
                return Err(ApiError::invalid(
                    "MinLimitExceeded",
                    field.name,
                    format!("{} must be at least {min}", field.name),
                ));
            }
            if let Some(max) = field.max.filter(|&m| n > m) {
                return Err(ApiError::invalid(
                    "MaxLimitExceeded",
                    field.name,
                    format!("{} must be at most {max}", field.name),
                ));
            }
            Ok(())
        }
        "float" => v
            .is_number()
            .then_some(())
            .ok_or_else(|| bad_format(field, "a number")),
        "boolean" => v
            .is_boolean()
            .then_some(())
            .ok_or_else(|| bad_format(field, "a boolean")),
        embedded => {
            let Some(schema) = schema::get(embedded) else {
                return Ok(());
            };
            let Value::Object(obj) = v else {
                return Err(bad_format(field, "an object"));
            };
            // Embedded values are replaced whole, so their required fields apply.
            check(schema, obj, Mode::Create).map(|_| ())
        }
    }
}

fn string(field: &Field, s: &str) -> Result<(), ApiError> {
    let len = s.chars().count();
    if let Some(min) = field.min_length.filter(|&m| len < m) {
        return Err(ApiError::invalid(
            "MinLengthExceeded",
            field.name,
            format!("{} must be at least {min} characters", field.name),
        ));
    }
    if let Some(max) = field.max_length.filter(|&m| len > m) {
        return Err(ApiError::invalid(
            "MaxLengthExceeded",
            field.name,
            format!("{} must be at most {max} characters", field.name),
        ));
    }
    if field.valid_chars == Some("a-zA-Z0-9-")
        && !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(ApiError::invalid(
            "InvalidCharacters",
            field.name,
            format!("{} may only contain letters, digits and '-'", field.name),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn lb(body: Value, mode: Mode) -> Result<Map<String, Value>, ApiError> {
        let Value::Object(m) = body else { panic!() };
        check(schema::get("loadBalancerService").unwrap(), &m, mode)
    }

    fn code(r: Result<Map<String, Value>, ApiError>) -> (&'static str, Option<String>) {
        let e = r.unwrap_err();
        (e.code, e.field)
    }

    #[test]
    fn error_codes() {
        assert_eq!(code(lb(json!({}), Mode::Create)).0, "MissingRequired");
        assert_eq!(
            code(lb(json!({"name": ""}), Mode::Create)).0,
            "MissingRequired"
        );
        assert!(lb(json!({}), Mode::Update).is_ok());
        let rule = |r: Value| json!({"name": "lb", "lbConfig": {"portRules": [r]}});
        assert_eq!(
            code(lb(
                rule(json!({"sourcePort": 80, "protocol": "gopher"})),
                Mode::Create
            )),
            ("InvalidOption", Some("protocol".into()))
        );
        assert_eq!(
            code(lb(rule(json!({"sourcePort": 0})), Mode::Create)).0,
            "MinLimitExceeded"
        );
        assert_eq!(
            code(lb(rule(json!({"sourcePort": 70000})), Mode::Create)).0,
            "MaxLimitExceeded"
        );
        assert_eq!(
            code(lb(rule(json!({"sourcePort": "80"})), Mode::Create)).0,
            "InvalidFormat"
        );
        assert_eq!(
            code(lb(rule(json!({"protocol": "http"})), Mode::Create)),
            ("MissingRequired", Some("sourcePort".into()))
        );
        assert_eq!(
            code(lb(json!({"name": "lb", "lbConfig": []}), Mode::Create)).0,
            "InvalidFormat"
        );
        assert_eq!(
            code(lb(json!({"name": "a_b"}), Mode::Create)).0,
            "InvalidCharacters"
        );
    }

    #[test]
    fn keeps_only_writable_fields() {
        let out = lb(
            json!({"name": "lb", "state": "active", "id": "1s9", "scale": 2}),
            Mode::Create,
        )
        .unwrap();
        assert_eq!(out.len(), 2);
        assert!(out.contains_key("name") && out.contains_key("scale"));
    }
}
