//! Rule lookup for one listener.
//!
//! Rules are ranked once at build time (priority, then host specificity, then path length,
//! then declaration order). Lookup does not scan every rule: exact hosts and wildcard domains
//! are hash lookups per label of the request host, and the best-ranked match among those
//! candidates and the host-less rules wins.

use std::collections::HashMap;
use std::sync::Arc;

use super::{GroupId, HostPattern};

#[derive(Debug, Clone)]
pub struct Route {
    pub host: HostPattern,
    /// Path prefix; `""` matches every path.
    pub path: Box<str>,
    pub priority: Option<u32>,
    pub group: GroupId,
    pub service: Arc<str>,
    /// `"lb-1#2"`: the load balancer and the rule's position in it, for logs.
    pub name: Arc<str>,
    /// `corral_sticky_total` handles, when the listener has a stickiness policy.
    pub sticky: Option<crate::sticky::StickyMetrics>,
}

#[derive(Debug, Default)]
pub struct RouteSet {
    /// In rank order: a lower index wins.
    routes: Vec<Route>,
    exact: HashMap<Box<str>, Vec<u32>>,
    suffix: HashMap<Box<str>, Vec<u32>>,
    prefix: HashMap<Box<str>, Vec<u32>>,
    any: Vec<u32>,
}

impl RouteSet {
    pub fn new(mut routes: Vec<Route>) -> RouteSet {
        // Stable sort: declaration order breaks the remaining ties.
        routes.sort_by_key(|r| {
            (
                r.priority.unwrap_or(u32::MAX),
                r.host.class(),
                std::cmp::Reverse(r.host.literal_len()),
                std::cmp::Reverse(r.path.len()),
            )
        });
        let mut set = RouteSet::default();
        for (i, r) in routes.iter().enumerate() {
            let i = i as u32;
            match &r.host {
                HostPattern::Any => set.any.push(i),
                HostPattern::Exact(h) => set.exact.entry(h.clone()).or_default().push(i),
                HostPattern::Suffix(s) => set.suffix.entry(s.clone()).or_default().push(i),
                HostPattern::Prefix(p) => set.prefix.entry(p.clone()).or_default().push(i),
            }
        }
        set.routes = routes;
        set
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The best rule for a normalised host (see [`super::normalize_host`]) and a path.
    pub fn lookup(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        let first_match = |candidates: &[u32]| {
            candidates
                .iter()
                .copied()
                .find(|&i| path.starts_with(&*self.routes[i as usize].path))
        };
        let mut best = first_match(&self.any);
        let mut consider = |candidates: Option<&Vec<u32>>| {
            if let Some(i) = candidates.and_then(|c| first_match(c)) {
                best = Some(best.map_or(i, |b| b.min(i)));
            }
        };
        if let Some(host) = host {
            consider(self.exact.get(host));
            if self.suffix.is_empty() && self.prefix.is_empty() {
                // No wildcard rules (the common table): no need to walk the host's labels.
                return best.map(|i| &self.routes[i as usize]);
            }
            for (dot, _) in host.match_indices('.') {
                // ".example.com" for "*.example.com": at least one label stands before it.
                if dot > 0 {
                    consider(self.suffix.get(&host[dot..]));
                }
                // "example." for "example.*": at least one label stands after it.
                if dot + 1 < host.len() {
                    consider(self.prefix.get(&host[..=dot]));
                }
            }
        }
        best.map(|i| &self.routes[i as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: &str, path: &str, priority: Option<u32>, group: GroupId) -> Route {
        Route {
            host: HostPattern::parse(host).unwrap(),
            path: path.into(),
            priority,
            group,
            service: "s".into(),
            name: "lb#0".into(),
            sticky: None,
        }
    }

    fn hit(set: &RouteSet, host: &str, path: &str) -> Option<GroupId> {
        set.lookup(Some(host), path).map(|r| r.group)
    }

    #[test]
    fn specificity_orders_ties() {
        let set = RouteSet::new(vec![
            route("", "/", None, 0),
            route("*.example.com", "/", None, 1),
            route("www.example.com", "/", None, 2),
            route("www.example.com", "/api", None, 3),
            route("*.api.example.com", "/", None, 4),
            route("example.*", "/", None, 5),
        ]);
        assert_eq!(hit(&set, "www.example.com", "/api/x"), Some(3));
        assert_eq!(hit(&set, "www.example.com", "/"), Some(2));
        assert_eq!(hit(&set, "a.example.com", "/"), Some(1));
        assert_eq!(hit(&set, "x.api.example.com", "/"), Some(4));
        assert_eq!(hit(&set, "example.org", "/"), Some(5));
        assert_eq!(hit(&set, "other.org", "/"), Some(0));
        assert_eq!(set.lookup(None, "/").map(|r| r.group), Some(0));
    }

    #[test]
    fn priority_beats_specificity() {
        let set = RouteSet::new(vec![
            route("www.example.com", "/", Some(2), 0),
            route("", "/", Some(1), 1),
        ]);
        assert_eq!(hit(&set, "www.example.com", "/"), Some(1));
    }

    #[test]
    fn no_match_is_none() {
        let set = RouteSet::new(vec![route("a.com", "/api", None, 0)]);
        assert_eq!(hit(&set, "a.com", "/"), None);
        assert_eq!(hit(&set, "b.com", "/api"), None);
        assert_eq!(set.lookup(None, "/api").map(|r| r.group), None);
    }
}
