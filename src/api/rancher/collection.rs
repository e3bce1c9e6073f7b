//! Collections: filters (`name=x`, `name_prefix=x`, …), sorting, paging, the envelope.
//!
//! Filters apply to the rendered resources, so a filter sees exactly what a client sees.
//! Several `eq` values for one field are alternatives (OR); every other condition must hold.
//! Parameters that are not filters of the type are ignored.

use std::cmp::Ordering;

use serde_json::{json, Map, Value};

use super::schema::MODIFIERS;

/// Default and maximum page size.
pub const DEFAULT_LIMIT: usize = 1000;

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub field: String,
    pub modifier: &'static str,
    pub value: String,
}

/// The filter conditions among the query parameters, for a type filterable on `filters`.
pub fn conditions(query: &[(String, String)], filters: &[&str]) -> Vec<Condition> {
    let mut out = Vec::new();
    for (k, v) in query {
        let (field, modifier) = match k.rsplit_once('_') {
            Some((f, m)) if filters.contains(&f) => match MODIFIERS.iter().find(|x| **x == m) {
                Some(m) => (f, *m),
                None => continue,
            },
            _ if filters.contains(&k.as_str()) => (k.as_str(), "eq"),
            _ => continue,
        };
        out.push(Condition {
            field: field.to_string(),
            modifier,
            value: v.clone(),
        });
    }
    out
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn compare(a: &str, b: &str) -> Ordering {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => a.cmp(b),
    }
}

/// SQL `LIKE`: `%` any run, `_` any one character. Dynamic programming over the pattern,
/// so the cost is bounded by len(s) × len(pattern) whatever the input.
fn like_str(s: &str, pattern: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = pattern.chars().take(256).collect();
    // ok[i]: the pattern prefix seen so far matches s[..i].
    let mut ok = vec![false; s.len() + 1];
    ok[0] = true;
    for &pc in &p {
        let mut next = vec![false; s.len() + 1];
        if pc == '%' {
            let mut any = false;
            for i in 0..=s.len() {
                any |= ok[i];
                next[i] = any;
            }
        } else {
            for i in 0..s.len() {
                next[i + 1] = ok[i] && (pc == '_' || s[i] == pc);
            }
        }
        ok = next;
    }
    ok[s.len()]
}

/// Whether one condition holds for `resource`.
pub fn holds(resource: &Value, c: &Condition) -> bool {
    let field = resource.get(&c.field).and_then(text);
    match (c.modifier, field) {
        ("null", f) => f.is_none(),
        ("notnull", f) => f.is_some(),
        ("ne", None) => true,
        ("notlike", None) => true,
        (_, None) => false,
        ("eq", Some(f)) => f == c.value,
        ("ne", Some(f)) => f != c.value,
        ("prefix", Some(f)) => f.starts_with(&c.value),
        ("like", Some(f)) => like_str(&f, &c.value),
        ("notlike", Some(f)) => !like_str(&f, &c.value),
        ("lt", Some(f)) => compare(&f, &c.value) == Ordering::Less,
        ("lte", Some(f)) => compare(&f, &c.value) != Ordering::Greater,
        ("gt", Some(f)) => compare(&f, &c.value) == Ordering::Greater,
        ("gte", Some(f)) => compare(&f, &c.value) != Ordering::Less,
        _ => false,
    }
}

/// Whether `resource` passes every condition (several `eq` on one field: any of them).
pub fn matches(resource: &Value, conditions: &[Condition]) -> bool {
    conditions.iter().all(|c| {
        if c.modifier == "eq" {
            conditions
                .iter()
                .filter(|o| o.modifier == "eq" && o.field == c.field)
                .any(|o| holds(resource, o))
        } else {
            holds(resource, c)
        }
    })
}

/// What a list request asked for.
pub struct ListRequest<'a> {
    /// The request's own URL without query (for `links.self` / `pagination.next`).
    pub url: String,
    pub query: &'a [(String, String)],
    pub resource_type: &'a str,
    /// `createTypes` entries: type → collection URL.
    pub create_types: Vec<(&'a str, String)>,
    pub filters: &'a [&'a str],
}

/// Filters, sorts, pages `items` and wraps them in the collection envelope.
pub fn render(req: &ListRequest<'_>, items: Vec<Value>) -> Value {
    let conds = conditions(req.query, req.filters);
    let mut data: Vec<Value> = items.into_iter().filter(|r| matches(r, &conds)).collect();

    let param = |k: &str| {
        req.query
            .iter()
            .find(|(q, _)| q == k)
            .map(|(_, v)| v.as_str())
    };
    let sort = param("sort").filter(|s| !s.is_empty());
    let desc = param("order").is_some_and(|o| o.eq_ignore_ascii_case("desc"));
    if let Some(field) = sort {
        data.sort_by(|a, b| {
            let x = a.get(field).and_then(text).unwrap_or_default();
            let y = b.get(field).and_then(text).unwrap_or_default();
            compare(&x, &y)
        });
    }
    if desc {
        data.reverse();
    }

    let limit = param("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|&l| l > 0)
        .map_or(DEFAULT_LIMIT, |l| l.min(DEFAULT_LIMIT));
    let offset = param("marker")
        .and_then(|m| m.strip_prefix('m'))
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(0);
    let total = data.len();
    let page: Vec<Value> = data.into_iter().skip(offset).take(limit).collect();
    let more = offset.saturating_add(page.len()) < total;
    let next = more.then(|| {
        let next_offset = offset + page.len();
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in req.query.iter().filter(|(k, _)| k != "marker") {
            ser.append_pair(k, v);
        }
        ser.append_pair("marker", &format!("m{next_offset}"));
        format!("{}?{}", req.url, ser.finish())
    });

    let self_url = if req.query.is_empty() {
        req.url.clone()
    } else {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in req.query {
            ser.append_pair(k, v);
        }
        format!("{}?{}", req.url, ser.finish())
    };
    let mut filters = Map::new();
    for f in req.filters {
        let mine: Vec<Value> = conds
            .iter()
            .filter(|c| c.field == *f)
            .map(|c| json!({"modifier": c.modifier, "value": c.value}))
            .collect();
        filters.insert(
            f.to_string(),
            if mine.is_empty() {
                Value::Null
            } else {
                json!(mine)
            },
        );
    }
    let create_types: Map<String, Value> = req
        .create_types
        .iter()
        .map(|(t, u)| (t.to_string(), json!(u)))
        .collect();
    json!({
        "type": "collection",
        "resourceType": req.resource_type,
        "links": {"self": self_url},
        "createTypes": create_types,
        "actions": {},
        "sortLinks": {},
        "sort": sort.map(|s| json!({"name": s, "order": if desc {"desc"} else {"asc"}})),
        "pagination": {"first": null, "previous": null, "next": next, "limit": limit,
                       "total": total, "partial": more || offset > 0},
        "filters": filters,
        "data": page,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILTERS: &[&str] = &["name", "state", "id", "kind", "uuid", "createdTS"];

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn names(query: &[(&str, &str)]) -> Vec<String> {
        let items = vec![
            json!({"id": "1s1", "name": "web", "state": "active", "createdTS": 10, "description": null}),
            json!({"id": "1s2", "name": "web-2", "state": "inactive", "createdTS": 20}),
            json!({"id": "1s3", "name": "lb", "state": "active", "createdTS": 30}),
        ];
        let query = q(query);
        let req = ListRequest {
            url: "http://h/v1/services".into(),
            query: &query,
            resource_type: "service",
            create_types: vec![],
            filters: FILTERS,
        };
        let v = render(&req, items);
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn modifiers() {
        assert_eq!(names(&[("name", "web")]), ["web"]);
        assert_eq!(names(&[("name_ne", "web")]), ["web-2", "lb"]);
        assert_eq!(names(&[("name_prefix", "web")]), ["web", "web-2"]);
        assert_eq!(names(&[("name_like", "w%2")]), ["web-2"]);
        assert_eq!(names(&[("name_notlike", "web%")]), ["lb"]);
        assert_eq!(names(&[("state", "active")]), ["web", "lb"]);
        assert_eq!(names(&[("state", "active"), ("name_prefix", "l")]), ["lb"]);
        assert_eq!(names(&[("name", "web"), ("name", "lb")]), ["web", "lb"]);
        assert_eq!(names(&[("createdTS_gt", "10")]), ["web-2", "lb"]);
        assert_eq!(names(&[("createdTS_lte", "20")]), ["web", "web-2"]);
        assert_eq!(names(&[("createdTS_lt", "9")]), Vec::<String>::new());
        assert_eq!(names(&[("createdTS_gte", "30")]), ["lb"]);
        assert_eq!(names(&[("uuid_null", "")]).len(), 3);
        assert_eq!(names(&[("uuid_notnull", "")]).len(), 0);
        assert_eq!(names(&[("bogus", "x"), ("name_bogus", "x")]).len(), 3);
        assert_eq!(names(&[("sort", "name")]), ["lb", "web", "web-2"]);
        assert_eq!(
            names(&[("sort", "name"), ("order", "desc")]),
            ["web-2", "web", "lb"]
        );
    }

    #[test]
    fn envelope_and_paging() {
        let query = q(&[("name_prefix", "w"), ("limit", "1")]);
        let req = ListRequest {
            url: "http://h/v1/services".into(),
            query: &query,
            resource_type: "service",
            create_types: vec![("service", "http://h/v1/services".into())],
            filters: FILTERS,
        };
        let items = vec![json!({"name": "web"}), json!({"name": "web-2"})];
        let v = render(&req, items);
        assert_eq!(v["type"], "collection");
        assert_eq!(v["data"].as_array().unwrap().len(), 1);
        assert_eq!(v["pagination"]["total"], 2);
        assert!(v["pagination"]["next"]
            .as_str()
            .unwrap()
            .contains("marker=m1"));
        assert_eq!(
            v["filters"]["name"],
            json!([{"modifier": "prefix", "value": "w"}])
        );
        assert_eq!(v["filters"]["state"], Value::Null);
        assert_eq!(v["createTypes"]["service"], "http://h/v1/services");
        assert_eq!(v["actions"], json!({}));
    }

    #[test]
    fn like_is_bounded() {
        assert!(like_str("abc", "a%c"));
        assert!(like_str("abc", "a_c"));
        assert!(!like_str("abc", "a_"));
        assert!(!like_str(&"a".repeat(100), "%%%%%%%%%%b"));
    }
}
