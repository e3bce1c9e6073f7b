//! The schemas: one description of every type, used both to render `/v1/schemas` and to
//! validate request bodies ([`super::validate`]).

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use super::state_machine::{CERTIFICATE_ACTIONS, SERVICE_ACTIONS};

/// One field of a schema.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: &'static str,
    /// GDAPI type: `string int boolean enum json password date reference[x] array[t] map[t]`
    /// or an embedded schema id.
    pub ty: &'static str,
    pub create: bool,
    pub update: bool,
    pub required: bool,
    pub nullable: bool,
    pub default: Option<Value>,
    pub options: &'static [&'static str],
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub min_length: Option<usize>,
    pub max_length: Option<usize>,
    pub valid_chars: Option<&'static str>,
}

fn f(name: &'static str, ty: &'static str) -> Field {
    Field {
        name,
        ty,
        create: false,
        update: false,
        required: false,
        nullable: true,
        default: None,
        options: &[],
        min: None,
        max: None,
        min_length: None,
        max_length: None,
        valid_chars: None,
    }
}

impl Field {
    /// Writable on create and update.
    fn cu(mut self) -> Field {
        self.create = true;
        self.update = true;
        self
    }
    fn c(mut self) -> Field {
        self.create = true;
        self
    }
    fn required(mut self) -> Field {
        self.required = true;
        self.nullable = false;
        self
    }
    fn default(mut self, v: Value) -> Field {
        self.default = Some(v);
        self
    }
    fn options(mut self, o: &'static [&'static str]) -> Field {
        self.options = o;
        self
    }
    fn range(mut self, min: i64, max: i64) -> Field {
        self.min = Some(min);
        self.max = Some(max);
        self
    }
    fn min(mut self, min: i64) -> Field {
        self.min = Some(min);
        self
    }

    fn render(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), json!(self.ty));
        m.insert("create".into(), json!(self.create));
        m.insert("update".into(), json!(self.update));
        m.insert("required".into(), json!(self.required));
        m.insert("nullable".into(), json!(self.nullable));
        if let Some(d) = &self.default {
            m.insert("default".into(), d.clone());
        }
        if !self.options.is_empty() {
            m.insert("options".into(), json!(self.options));
        }
        for (k, v) in [("min", self.min), ("max", self.max)] {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        }
        for (k, v) in [
            ("minLength", self.min_length),
            ("maxLength", self.max_length),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        }
        if let Some(c) = self.valid_chars {
            m.insert("validChars".into(), json!(c));
        }
        Value::Object(m)
    }
}

/// One schema.
#[derive(Debug, Clone)]
pub struct Schema {
    pub id: &'static str,
    pub plural: &'static str,
    /// The collection path segment for top-level types; `None` for embedded types.
    pub collection: Option<&'static str>,
    pub fields: Vec<Field>,
    /// (action, input type)
    pub actions: Vec<(&'static str, Option<&'static str>)>,
    pub filters: &'static [&'static str],
    /// A top-level type clients may only read (`auditLog`): GET methods only.
    pub read_only: bool,
}

impl Schema {
    pub fn render(&self, base: &str) -> Value {
        let mut links = Map::new();
        links.insert(
            "self".into(),
            json!(format!(
                "{base}/v1/schemas/{}",
                self.id.to_ascii_lowercase()
            )),
        );
        if let Some(c) = self.collection {
            links.insert("collection".into(), json!(format!("{base}/v1/{c}")));
        }
        let top = self.collection.is_some();
        let fields: Map<String, Value> = self
            .fields
            .iter()
            .map(|f| (f.name.to_string(), f.render()))
            .collect();
        let output = self.id;
        let actions: Map<String, Value> = self
            .actions
            .iter()
            .map(|(a, input)| {
                let mut m = Map::new();
                if let Some(i) = input {
                    m.insert("input".into(), json!(i));
                }
                m.insert("output".into(), json!(output));
                (a.to_string(), Value::Object(m))
            })
            .collect();
        let modifiers = json!({"modifiers": MODIFIERS});
        let filters: Map<String, Value> = self
            .filters
            .iter()
            .map(|f| (f.to_string(), modifiers.clone()))
            .collect();
        json!({
            "id": self.id,
            "type": "schema",
            "pluralName": self.plural,
            "links": links,
            "actions": {},
            "collectionMethods": match (top, self.read_only) {
                (false, _) => json!([]),
                (true, true) => json!(["GET"]),
                (true, false) => json!(["GET", "POST"]),
            },
            "resourceMethods": match (top, self.read_only) {
                (false, _) => json!([]),
                (true, true) => json!(["GET"]),
                (true, false) => json!(["GET", "PUT", "DELETE"]),
            },
            "collectionActions": {},
            "collectionFields": {},
            "collectionFilters": filters,
            "resourceActions": actions,
            "resourceFields": fields,
        })
    }
}

/// Filter modifiers every filterable field supports.
pub const MODIFIERS: &[&str] = &[
    "eq", "ne", "lt", "lte", "gt", "gte", "prefix", "like", "notlike", "null", "notnull",
];

const SERVICE_FILTERS: &[&str] = &[
    "id",
    "name",
    "state",
    "kind",
    "uuid",
    "description",
    "created",
    "removed",
    "environmentId",
    "stackId",
];
const AUDIT_FILTERS: &[&str] = &[
    "id",
    "created",
    "eventType",
    "resourceType",
    "resourceId",
    "authType",
    "authenticatedAsAccountId",
    "clientIp",
    "responseCode",
];
const CERT_FILTERS: &[&str] = &[
    "id",
    "name",
    "state",
    "kind",
    "uuid",
    "description",
    "created",
    "removed",
    "CN",
    "certFingerprint",
];

pub const PROTOCOLS: &[&str] = &["http", "tcp", "https", "tls", "sni", "udp"];

fn common_fields() -> Vec<Field> {
    vec![
        f("id", "string"),
        f("type", "string"),
        f("kind", "string"),
        f("state", "enum").options(&[
            "inactive",
            "active",
            "upgraded",
            "canceled-upgrade",
            "canceled-rollback",
            "removed",
        ]),
        f("uuid", "string"),
        f("created", "date"),
        f("createdTS", "int"),
        f("removed", "date"),
        f("transitioning", "enum").options(&["yes", "no", "error"]),
        f("transitioningMessage", "string"),
        f("transitioningProgress", "int"),
        f("description", "string").cu(),
    ]
}

fn service_fields() -> Vec<Field> {
    let mut v = common_fields();
    let mut name = f("name", "string").cu().required();
    name.min_length = Some(1);
    name.max_length = Some(63);
    name.valid_chars = Some("a-zA-Z0-9-");
    v.extend([
        name,
        f("baseType", "string"),
        f("environmentId", "reference[environment]").c(),
        f("stackId", "reference[stack]").c(),
        f("launchConfig", "launchConfig").c(),
        f("scale", "int").cu().min(0).default(json!(1)),
        f("startOnCreate", "boolean").c().default(json!(false)),
        f("metadata", "map[json]").cu(),
        f("selectorLink", "string").cu(),
        f("linkedServices", "map[reference[service]]"),
        f("upgrade", "serviceUpgrade"),
        f("fqdn", "string"),
        f("vip", "string"),
        f("healthState", "string"),
        f("publicEndpoints", "array[json]"),
        f("currentScale", "int"),
    ]);
    v
}

/// The fields of the non-container services (external service, alias): a service without
/// `launchConfig`/`scale`.
fn plain_service_fields() -> Vec<Field> {
    service_fields()
        .into_iter()
        .filter(|f| !["launchConfig", "scale", "upgrade"].contains(&f.name))
        .collect()
}

fn alias_fields() -> Vec<Field> {
    plain_service_fields()
}

fn audit_fields() -> Vec<Field> {
    let mut v: Vec<Field> = common_fields()
        .into_iter()
        .filter(|f| f.name != "description")
        .collect();
    v.extend([
        f("description", "string"),
        f("eventType", "string"),
        f("resourceType", "string"),
        f("resourceId", "string"),
        f("authType", "string"),
        f("authenticatedAsAccountId", "string"),
        f("clientIp", "string"),
        f("requestMethod", "string"),
        f("requestUrl", "string"),
        f("responseCode", "int"),
        f("requestObject", "json"),
        f("runtime", "int"),
    ]);
    v
}

fn service_actions() -> Vec<(&'static str, Option<&'static str>)> {
    SERVICE_ACTIONS
        .iter()
        .map(|&a| {
            let input = match a {
                "addservicelink" | "removeservicelink" => Some("addRemoveServiceLinkInput"),
                "setservicelinks" => Some("setServiceLinksInput"),
                "upgrade" => Some("serviceUpgrade"),
                "restart" => Some("serviceRestart"),
                _ => None,
            };
            (a, input)
        })
        .collect()
}

fn embedded(id: &'static str, plural: &'static str, fields: Vec<Field>) -> Schema {
    Schema {
        id,
        plural,
        collection: None,
        fields,
        actions: Vec::new(),
        filters: &[],
        read_only: false,
    }
}

fn build() -> Vec<Schema> {
    let mut lb_fields = service_fields();
    lb_fields.extend([
        f("lbConfig", "lbConfig").cu(),
        f("loadBalancerConfig", "loadBalancerConfig").cu(),
        f("certificateIds", "array[reference[certificate]]").cu(),
        f("defaultCertificateId", "reference[certificate]").cu(),
    ]);
    let mut cert_fields = common_fields();
    cert_fields.extend([
        f("name", "string").cu().required(),
        f("cert", "string").cu().required(),
        f("key", "password").cu().required(),
        f("certChain", "string").cu(),
        f("CN", "string"),
        f("certFingerprint", "string"),
        f("keySize", "int"),
        f("subjectAlternativeNames", "array[string]"),
        f("expiresAt", "string"),
        f("issuedAt", "string"),
        f("issuer", "string"),
        f("serialNumber", "string"),
        f("algorithm", "string"),
        f("version", "string"),
    ]);
    let port = |name| f(name, "int").cu().range(1, 65535);
    let mut external_fields = plain_service_fields();
    external_fields.extend([
        f("externalIpAddresses", "array[string]").cu(),
        f("hostname", "string").cu(),
        f("healthCheck", "instanceHealthCheck").cu(),
    ]);
    let link_fields = || {
        vec![
            f("serviceId", "reference[service]").cu().required(),
            f("name", "string").cu(),
            f("ports", "array[string]").cu(),
            f("uuid", "string"),
        ]
    };
    let strategy_common = || {
        vec![
            f("batchSize", "int").cu().min(1).default(json!(1)),
            f("intervalMillis", "int")
                .cu()
                .min(100)
                .default(json!(2000)),
        ]
    };
    let mut in_service = strategy_common();
    in_service.extend([
        f("startFirst", "boolean").cu().default(json!(false)),
        f("launchConfig", "launchConfig").cu(),
        f("secondaryLaunchConfigs", "array[json]").cu(),
        f("previousLaunchConfig", "launchConfig"),
        f("previousSecondaryLaunchConfigs", "array[json]"),
    ]);
    let mut to_service = strategy_common();
    to_service.extend([
        f("toServiceId", "reference[service]").cu(),
        f("updateLinks", "boolean").cu().default(json!(false)),
        f("finalScale", "int").cu().min(1),
    ]);

    vec![
        Schema {
            id: "service",
            plural: "services",
            collection: Some("services"),
            fields: service_fields(),
            actions: service_actions(),
            filters: SERVICE_FILTERS,
            read_only: false,
        },
        Schema {
            id: "loadBalancerService",
            plural: "loadBalancerServices",
            collection: Some("loadbalancerservices"),
            fields: lb_fields,
            actions: service_actions(),
            filters: SERVICE_FILTERS,
            read_only: false,
        },
        Schema {
            id: "certificate",
            plural: "certificates",
            collection: Some("certificates"),
            fields: cert_fields,
            actions: CERTIFICATE_ACTIONS.iter().map(|&a| (a, None)).collect(),
            filters: CERT_FILTERS,
            read_only: false,
        },
        Schema {
            id: "externalService",
            plural: "externalServices",
            collection: Some("externalservices"),
            fields: external_fields,
            actions: service_actions(),
            filters: SERVICE_FILTERS,
            read_only: false,
        },
        Schema {
            id: "dnsService",
            plural: "dnsServices",
            collection: Some("dnsservices"),
            fields: alias_fields(),
            actions: service_actions(),
            filters: SERVICE_FILTERS,
            read_only: false,
        },
        Schema {
            id: "auditLog",
            plural: "auditLogs",
            collection: Some("auditlogs"),
            fields: audit_fields(),
            actions: Vec::new(),
            filters: AUDIT_FILTERS,
            read_only: true,
        },
        embedded(
            "instanceHealthCheck",
            "instanceHealthChecks",
            vec![
                f("name", "string").cu(),
                port("port"),
                f("requestLine", "string").cu(),
                f("interval", "int").cu().min(1).default(json!(2000)),
                f("responseTimeout", "int").cu().min(1).default(json!(2000)),
                f("healthyThreshold", "int").cu().min(1).default(json!(2)),
                f("unhealthyThreshold", "int").cu().min(1).default(json!(3)),
                f("initializingTimeout", "int").cu().min(1),
                f("reinitializingTimeout", "int").cu().min(1),
                f("strategy", "enum")
                    .cu()
                    .options(&["none", "recreate", "recreateOnQuorum"])
                    .default(json!("recreate")),
                f("recreateOnQuorumStrategyConfig", "json").cu(),
            ],
        ),
        embedded(
            "lbConfig",
            "lbConfigs",
            vec![
                f("portRules", "array[portRule]").cu(),
                f("certificateIds", "array[reference[certificate]]").cu(),
                f("defaultCertificateId", "reference[certificate]").cu(),
                f("stickinessPolicy", "loadBalancerCookieStickinessPolicy").cu(),
                f("config", "string").cu(),
            ],
        ),
        embedded(
            "portRule",
            "portRules",
            vec![
                port("sourcePort").required(),
                f("protocol", "enum")
                    .cu()
                    .options(PROTOCOLS)
                    .default(json!("http")),
                f("hostname", "string").cu(),
                f("path", "string").cu(),
                port("targetPort"),
                f("serviceId", "reference[service]").cu(),
                f("priority", "int").cu().min(1),
                f("selector", "string").cu(),
                f("backendName", "string").cu(),
                f("environment", "string").cu(),
                f("region", "string").cu(),
                f("weight", "int").cu().range(0, 256),
            ],
        ),
        embedded(
            "loadBalancerCookieStickinessPolicy",
            "loadBalancerCookieStickinessPolicies",
            vec![
                f("name", "string").cu(),
                f("cookie", "string").cu(),
                f("domain", "string").cu(),
                f("indirect", "boolean").cu().default(json!(false)),
                f("nocache", "boolean").cu().default(json!(false)),
                f("postonly", "boolean").cu().default(json!(false)),
                f("mode", "enum")
                    .cu()
                    .options(&["rewrite", "insert", "prefix"])
                    .default(json!("insert")),
            ],
        ),
        embedded(
            "loadBalancerConfig",
            "loadBalancerConfigs",
            vec![
                f("name", "string").cu(),
                f("description", "string").cu(),
                f("haproxyConfig", "haproxyConfig").cu(),
                f(
                    "lbCookieStickinessPolicy",
                    "loadBalancerCookieStickinessPolicy",
                )
                .cu(),
            ],
        ),
        embedded(
            "haproxyConfig",
            "haproxyConfigs",
            vec![f("global", "string").cu(), f("defaults", "string").cu()],
        ),
        embedded(
            "launchConfig",
            "launchConfigs",
            vec![
                f("imageUuid", "string").cu(),
                f("ports", "array[string]").cu(),
                f("expose", "array[string]").cu(),
                f("labels", "map[string]").cu(),
                f("environment", "map[string]").cu(),
            ],
        ),
        embedded("serviceLink", "serviceLinks", link_fields()),
        embedded(
            "loadBalancerServiceLink",
            "loadBalancerServiceLinks",
            link_fields(),
        ),
        embedded(
            "addRemoveServiceLinkInput",
            "addRemoveServiceLinkInputs",
            vec![f("serviceLink", "serviceLink").cu().required()],
        ),
        embedded(
            "setServiceLinksInput",
            "setServiceLinksInputs",
            vec![f("serviceLinks", "array[serviceLink]").cu()],
        ),
        embedded(
            "addRemoveLoadBalancerServiceLinkInput",
            "addRemoveLoadBalancerServiceLinkInputs",
            vec![f("serviceLink", "loadBalancerServiceLink").cu().required()],
        ),
        embedded(
            "setLoadBalancerServiceLinksInput",
            "setLoadBalancerServiceLinksInputs",
            vec![f("serviceLinks", "array[loadBalancerServiceLink]").cu()],
        ),
        embedded(
            "serviceUpgrade",
            "serviceUpgrades",
            vec![
                f("inServiceStrategy", "inServiceUpgradeStrategy").cu(),
                f("toServiceStrategy", "toServiceUpgradeStrategy").cu(),
            ],
        ),
        embedded(
            "inServiceUpgradeStrategy",
            "inServiceUpgradeStrategies",
            in_service,
        ),
        embedded(
            "toServiceUpgradeStrategy",
            "toServiceUpgradeStrategies",
            to_service,
        ),
        embedded(
            "serviceRestart",
            "serviceRestarts",
            vec![f("rollingRestartStrategy", "json").cu()],
        ),
    ]
}

/// Every schema, built once.
pub fn all() -> &'static [Schema] {
    static SCHEMAS: OnceLock<Vec<Schema>> = OnceLock::new();
    SCHEMAS.get_or_init(build)
}

/// A schema by id, case-insensitively.
pub fn get(id: &str) -> Option<&'static Schema> {
    all().iter().find(|s| s.id.eq_ignore_ascii_case(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_type_and_action_input_is_declared() {
        for s in all() {
            for field in &s.fields {
                let mut ty = field.ty;
                while let Some(inner) = ty.strip_prefix("array[").or(ty.strip_prefix("map[")) {
                    ty = inner.strip_suffix(']').unwrap_or(inner);
                }
                let scalar = ty.starts_with("reference[")
                    || [
                        "string", "int", "boolean", "enum", "json", "password", "date", "float",
                    ]
                    .contains(&ty);
                assert!(
                    scalar || get(ty).is_some(),
                    "{}.{} type {ty}",
                    s.id,
                    field.name
                );
            }
            for (a, input) in &s.actions {
                if let Some(i) = input {
                    assert!(get(i).is_some(), "{}.{a} input {i}", s.id);
                }
            }
        }
    }

    #[test]
    fn rendering_has_absolute_links() {
        let lb = get("loadbalancerservice").unwrap().render("http://h:1");
        assert_eq!(
            lb["links"]["collection"],
            "http://h:1/v1/loadbalancerservices"
        );
        assert_eq!(lb["collectionMethods"], json!(["GET", "POST"]));
        for a in [
            "activate",
            "addservicelink",
            "cancelrollback",
            "finishupgrade",
        ] {
            assert!(lb["resourceActions"][a].is_object(), "{a}");
        }
        let rule = get("portRule").unwrap().render("http://h:1");
        assert_eq!(rule["collectionMethods"], json!([]));
        assert!(rule["links"].get("collection").is_none());
    }
}
