//! Writes on certificates. The PEM is parsed by [`crate::tls::cert`]: what it shows becomes the
//! read-only fields; a key that does not fit is refused here, not when a listener needs it.

use std::collections::BTreeMap;

use http::StatusCode;
use serde_json::{json, Map, Value};

use super::model::{make_uuid, now_ms, RancherState, StoredCertificate};
use super::schema;
use super::validate::{self, Mode};
use crate::api::ApiError;
use crate::tls::cert::{self, CertError};

fn cert_error(e: &CertError) -> ApiError {
    let field = match e {
        CertError::InvalidPem | CertError::NoCertificate | CertError::InvalidCertificate(_) => {
            "cert"
        }
        CertError::InvalidChain(_) => "certChain",
        _ => "key",
    };
    ApiError::invalid("InvalidFormat", field, e.to_string())
}

/// Parses the PEM triple: facts of the leaf, and a check that the key belongs to it.
fn facts(
    cert_pem: &str,
    key_pem: &str,
    chain: Option<&str>,
) -> Result<BTreeMap<String, Value>, ApiError> {
    let info = cert::inspect(cert_pem).map_err(|e| cert_error(&e))?;
    cert::certified_key(cert_pem, key_pem, chain).map_err(|e| cert_error(&e))?;
    let mut m = BTreeMap::new();
    m.insert("CN".into(), json!(info.cn));
    m.insert("certFingerprint".into(), json!(info.fingerprint));
    m.insert("keySize".into(), json!(info.key_size));
    m.insert(
        "subjectAlternativeNames".into(),
        json!(info.subject_alternative_names),
    );
    m.insert("expiresAt".into(), json!(info.expires_at));
    m.insert("issuedAt".into(), json!(info.issued_at));
    m.insert("issuer".into(), json!(info.issuer));
    m.insert("serialNumber".into(), json!(info.serial_number));
    m.insert("algorithm".into(), json!(info.algorithm));
    m.insert("version".into(), json!(info.version));
    Ok(m)
}

fn ensure_unique_name(
    state: &RancherState,
    name: &str,
    except: Option<&str>,
) -> Result<(), ApiError> {
    if state
        .certificates
        .iter()
        .any(|c| c.name == name && Some(c.id.as_str()) != except)
    {
        return Err(ApiError::invalid(
            "NotUnique",
            "name",
            format!("a certificate named {name:?} already exists"),
        ));
    }
    Ok(())
}

fn cert_schema() -> Result<&'static schema::Schema, ApiError> {
    schema::get("certificate").ok_or_else(|| ApiError::not_found("no such type"))
}

fn text(fields: &Map<String, Value>, k: &str) -> Option<String> {
    fields.get(k).and_then(Value::as_str).map(str::to_string)
}

/// Creates a certificate; returns its id.
pub fn create(state: &mut RancherState, body: &Map<String, Value>) -> Result<String, ApiError> {
    let fields = validate::check(cert_schema()?, body, Mode::Create)?;
    let name = text(&fields, "name").unwrap_or_default();
    ensure_unique_name(state, &name, None)?;
    let cert_pem = text(&fields, "cert").unwrap_or_default();
    let key = text(&fields, "key").unwrap_or_default();
    let chain = text(&fields, "certChain").filter(|c| !c.trim().is_empty());
    let facts = facts(&cert_pem, &key, chain.as_deref())?;
    let id = state.allocate_id('c');
    let created = now_ms();
    state.certificates.push(StoredCertificate {
        id: id.clone(),
        name,
        description: text(&fields, "description"),
        uuid: make_uuid(state.next_id, created),
        created,
        cert: cert_pem,
        key,
        cert_chain: chain,
        facts,
    });
    Ok(id)
}

fn index_of(state: &RancherState, id: &str) -> Result<usize, ApiError> {
    state
        .certificates
        .iter()
        .position(|c| c.id.eq_ignore_ascii_case(id))
        .ok_or_else(|| ApiError::not_found(format!("no certificate {id:?}")))
}

/// A partial update; a new cert/key/chain is parsed and checked as on create.
pub fn update(
    state: &mut RancherState,
    id: &str,
    body: &Map<String, Value>,
) -> Result<(), ApiError> {
    let i = index_of(state, id)?;
    let fields = validate::check(cert_schema()?, body, Mode::Update)?;
    let mut c = state.certificates[i].clone();
    if let Some(name) = text(&fields, "name") {
        ensure_unique_name(state, &name, Some(&c.id))?;
        c.name = name;
    }
    if fields.contains_key("description") {
        c.description = text(&fields, "description");
    }
    let mut pem_changed = false;
    if let Some(v) = text(&fields, "cert") {
        c.cert = v;
        pem_changed = true;
    }
    if let Some(v) = text(&fields, "key") {
        c.key = v;
        pem_changed = true;
    }
    if fields.contains_key("certChain") {
        c.cert_chain = text(&fields, "certChain").filter(|s| !s.trim().is_empty());
        pem_changed = true;
    }
    if pem_changed {
        c.facts = facts(&c.cert, &c.key, c.cert_chain.as_deref())?;
    }
    state.certificates[i] = c;
    Ok(())
}

/// Removes a certificate no load balancer refers to (405 `InvalidAction` otherwise).
pub fn delete(state: &mut RancherState, id: &str) -> Result<StoredCertificate, ApiError> {
    let i = index_of(state, id)?;
    let cid = state.certificates[i].id.clone();
    let users: Vec<&str> = state
        .services
        .iter()
        .filter(|s| {
            s.is_lb()
                && s.certificate_refs()
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(&cid))
        })
        .map(|s| s.name.as_str())
        .collect();
    if !users.is_empty() {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "InvalidAction",
            format!(
                "Certificate is in use by load balancer services: {}",
                users.join(", ")
            ),
        ));
    }
    Ok(state.certificates.remove(i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::rancher::model::Kind;
    use crate::api::rancher::services;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/certs/",
                $name
            ))
        };
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn create_check_and_delete() {
        let mut st = RancherState::default();
        let body =
            json!({"name": "c", "cert": fixture!("rsa.crt"), "key": fixture!("rsa2048-pkcs8.key")});
        let id = create(&mut st, &obj(body)).unwrap();
        assert_eq!(id, "1c1");
        let c = st.certificate(&id).unwrap();
        assert!(c.facts["certFingerprint"].as_str().unwrap().contains(':'));
        assert!(c.facts["keySize"].as_u64().unwrap() >= 2048);

        let bad = json!({"name": "d", "cert": "not pem", "key": fixture!("rsa2048-pkcs8.key")});
        let e = create(&mut st, &obj(bad)).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("InvalidFormat", Some("cert"))
        );
        let wrong =
            json!({"name": "d", "cert": fixture!("rsa.crt"), "key": fixture!("ec-sec1.key")});
        let e = create(&mut st, &obj(wrong)).unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), ("InvalidFormat", Some("key")));
        let e = create(&mut st, &obj(json!({"name": "x", "key": "k"}))).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("MissingRequired", Some("cert"))
        );
        let expired =
            json!({"name": "old", "cert": fixture!("expired.crt"), "key": fixture!("expired.key")});
        create(&mut st, &obj(expired)).unwrap();

        let lb = json!({"name": "lb1", "lbConfig": {"certificateIds": [id]}});
        services::create(&mut st, Kind::LoadBalancerService, &obj(lb)).unwrap();
        let e = delete(&mut st, &id).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (405, "InvalidAction"));
        assert!(e.message.contains("lb1"));
    }
}
