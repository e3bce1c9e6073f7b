//! The v1 legacy load-balancer shape (§1.7) → the effective `lbConfig`.
//!
//! The port-spec grammar lives in [`super::portspec`]; this module only gathers a legacy LB's
//! stored fields and links, and turns the derived rules into `lbConfig`.

use http::StatusCode;
use serde_json::Value;

use super::model::{LbConfig, PortRule, Service, StickinessPolicy};
use super::portspec::{self, LegacyLink, SSL_PORTS_LABEL};
use crate::api::ApiError;

/// Re-derives `lb_config` of a legacy load balancer; other services are left alone.
pub fn rederive(service: &mut Service) -> Result<(), ApiError> {
    if service.is_lb() && service.legacy {
        service.lb_config = Some(derive(service)?);
    }
    Ok(())
}

/// The `lbConfig` a legacy LB's fields and links describe.
pub fn derive(service: &Service) -> Result<LbConfig, ApiError> {
    let launch = service.fields.get("launchConfig");
    let strings = |key: &str| -> Vec<String> {
        launch
            .and_then(|l| l.get(key))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let ports = strings("ports");
    let expose = strings("expose");
    let ssl = launch
        .and_then(|l| l.get("labels"))
        .and_then(|l| l.get(SSL_PORTS_LABEL))
        .and_then(Value::as_str);
    let links: Vec<LegacyLink<'_>> = service
        .links
        .iter()
        .map(|l| LegacyLink {
            service_id: &l.service_id,
            ports: &l.ports,
        })
        .collect();
    let rules = portspec::derive_rules(&ports, &expose, ssl, &links).map_err(|e| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.code(), e.to_string()).with_field("ports")
    })?;

    let lb_config = service.fields.get("loadBalancerConfig");
    let stickiness_policy = lb_config
        .and_then(|c| c.get("lbCookieStickinessPolicy"))
        .filter(|p| p.is_object())
        .and_then(|p| serde_json::from_value::<StickinessPolicy>(p.clone()).ok());
    let haproxy = lb_config.and_then(|c| c.get("haproxyConfig"));
    let section = |name: &str| {
        haproxy
            .and_then(|h| h.get(name))
            .and_then(Value::as_str)
            .map(|text| format!("{name}\n{text}\n"))
    };
    let config = match (section("global"), section("defaults")) {
        (None, None) => None,
        (g, d) => Some(g.unwrap_or_default() + &d.unwrap_or_default()),
    };
    let certificate_ids = service
        .fields
        .get("certificateIds")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let default_certificate_id = service
        .fields
        .get("defaultCertificateId")
        .and_then(Value::as_str)
        .map(str::to_string);

    Ok(LbConfig {
        port_rules: rules
            .into_iter()
            .map(|r| PortRule {
                source_port: r.source_port,
                protocol: r.protocol.as_str().to_string(),
                hostname: Some(r.hostname),
                path: Some(r.path),
                target_port: Some(r.target_port),
                service_id: Some(r.service_id),
                priority: None,
                selector: None,
                backend_name: None,
                environment: None,
                region: None,
                weight: None,
            })
            .collect(),
        certificate_ids,
        default_certificate_id,
        stickiness_policy,
        config,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::rancher::model::{Kind, ServiceLink};
    use crate::api::rancher::state_machine::ServiceState;

    fn legacy_lb(fields: Value, links: Vec<ServiceLink>) -> Service {
        Service {
            id: "1s7".into(),
            kind: Kind::LoadBalancerService,
            name: "lb".into(),
            description: None,
            state: ServiceState::Inactive,
            uuid: "u".into(),
            created: 0,
            fields: fields.as_object().cloned().unwrap_or_default(),
            lb_config: None,
            legacy: true,
            links,
            upgrade: None,
            previous_launch_config: None,
        }
    }

    #[test]
    fn example_of_the_contract() {
        let link = |ports: &str| ServiceLink {
            service_id: "1s2".into(),
            name: None,
            ports: vec![ports.into()],
        };
        let fields = json!({"launchConfig": {"ports": ["18090:80"]},
            "loadBalancerConfig": {"haproxyConfig": {"global": "maxconn 10", "defaults": "retries 3"},
                "lbCookieStickinessPolicy": {"cookie": "S", "mode": "rewrite"}},
            "certificateIds": ["1c4"], "defaultCertificateId": "1c4"});
        let mut lb = legacy_lb(fields, vec![link("web.example.com:18090/legacy=8080")]);
        rederive(&mut lb).unwrap();
        let cfg = lb.lb_config.clone().unwrap();
        assert_eq!(
            serde_json::to_value(&cfg.port_rules).unwrap(),
            json!([{"sourcePort": 18090, "protocol": "http", "hostname": "web.example.com",
                    "path": "/legacy", "targetPort": 8080, "serviceId": "1s2"}])
        );
        assert_eq!(
            cfg.config.as_deref(),
            Some("global\nmaxconn 10\ndefaults\nretries 3\n")
        );
        assert_eq!(cfg.stickiness_policy.unwrap().mode, "rewrite");
        assert_eq!(cfg.certificate_ids, vec!["1c4".to_string()]);
        assert_eq!(cfg.default_certificate_id.as_deref(), Some("1c4"));

        lb.links = vec![link("18090=8081")];
        rederive(&mut lb).unwrap();
        assert_eq!(
            serde_json::to_value(&lb.lb_config.unwrap().port_rules).unwrap(),
            json!([{"sourcePort": 18090, "protocol": "http", "hostname": "", "path": "",
                    "targetPort": 8081, "serviceId": "1s2"}])
        );
    }

    #[test]
    fn bad_spec_is_422() {
        let mut lb = legacy_lb(json!({"launchConfig": {"ports": ["a:b:c:d"]}}), vec![]);
        let e = rederive(&mut lb).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn non_legacy_untouched() {
        let mut lb = legacy_lb(json!({"launchConfig": {"ports": ["80"]}}), vec![]);
        lb.legacy = false;
        rederive(&mut lb).unwrap();
        assert!(lb.lb_config.is_none());
    }
}
