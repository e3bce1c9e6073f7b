//! Cookie stickiness, with HAProxy's meaning of each mode and flag.
//!
//! * `insert` (default): corral sets `<cookie>=<target id>` on a response when the request had
//!   no valid cookie for the target that served it. `indirect` removes the cookie from requests
//!   (and a same-named cookie the backend sets); `nocache` adds `Cache-Control: private` to
//!   responses that set it; `postonly` sets it on responses to POST only.
//! * `rewrite`: the backend sets `<cookie>`; its value is replaced with the target id.
//! * `prefix`: the backend's value becomes `<target id>~<value>`; the prefix is stripped from
//!   requests before they reach the backend.
//!
//! The target id is [`CookieId`]: a hash of the instance ID, computed when the table is built,
//! so it is opaque, stable across reloads and restarts, and never the backend's address. A
//! missing, malformed or unknown cookie is balanced normally (and the cookie re-set): the
//! cookie is a hint, never a reason to fail a request.
//!
//! None of this runs when a listener has no stickiness policy.

use std::fmt;

use cookie::Cookie;
use http::header::{self, HeaderMap, HeaderValue};
use http::Method;
use prometheus::IntCounter;

use crate::balance::{Target, TargetGroup};
use crate::config::{StickinessMode, StickinessPolicy};

/// The cookie name used when a policy names none (HAProxy's documentation example).
pub const DEFAULT_COOKIE: &str = "SERVERID";

/// Separator between the target id and the backend's value in `prefix` mode (HAProxy's).
const PREFIX_SEP: char = '~';

/// A target's id in sticky cookies: the first 8 bytes of SHA-256(instance ID), in hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CookieId([u8; 16]);

impl CookieId {
    pub fn of(instance_id: &str) -> CookieId {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, instance_id.as_bytes());
        let mut out = [0u8; 16];
        for (i, b) in digest.as_ref()[..8].iter().enumerate() {
            out[2 * i] = HEX[usize::from(b >> 4)];
            out[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        CookieId(out)
    }

    /// A cookie value that has the shape of an id (16 lowercase hex digits).
    pub fn parse(value: &str) -> Option<CookieId> {
        let bytes: [u8; 16] = value.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            .then_some(CookieId(bytes))
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Debug for CookieId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for CookieId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `corral_sticky_total{service,result}` handles of one route, resolved at build time.
#[derive(Debug, Clone)]
pub struct StickyMetrics {
    pub hit: IntCounter,
    pub miss: IntCounter,
    pub redispatch: IntCounter,
}

/// What the request's cookie said, kept until the response is rewritten.
#[derive(Debug)]
pub struct Decision<'g> {
    policy: &'g StickinessPolicy,
    metrics: &'g StickyMetrics,
    /// The id the request presented, when it had the shape of one.
    presented: Option<CookieId>,
    /// The target that id names, when it is in the group and usable now.
    wanted: Option<&'g Target>,
    is_post: bool,
}

impl StickinessPolicy {
    pub fn cookie_name(&self) -> &str {
        self.cookie
            .as_deref()
            .filter(|c| !c.is_empty())
            .unwrap_or(DEFAULT_COOKIE)
    }
}

/// Reads the sticky cookie of a request (and strips or restores it as the mode says).
/// `usable` says whether a target may get traffic now (passive health).
pub fn on_request<'g>(
    policy: &'g StickinessPolicy,
    metrics: &'g StickyMetrics,
    group: &'g TargetGroup,
    method: &Method,
    headers: &mut HeaderMap,
    usable: impl Fn(&Target) -> bool,
) -> Decision<'g> {
    let name = policy.cookie_name();
    let mut presented = None;
    let strip = policy.mode == StickinessMode::Insert && policy.indirect;
    let prefix = policy.mode == StickinessMode::Prefix;
    if let Some(value) = find_cookie(headers, name) {
        let (id, rest) = match policy.mode {
            StickinessMode::Prefix => match value.split_once(PREFIX_SEP) {
                Some((id, rest)) => (CookieId::parse(id), Some(rest)),
                None => (None, None),
            },
            _ => (CookieId::parse(value), None),
        };
        presented = id;
        if strip || (prefix && rest.is_some()) {
            let rest = rest.map(str::to_owned);
            rewrite_request_cookie(headers, name, rest.as_deref());
        }
    }
    let wanted = presented.and_then(|id| {
        group
            .targets()
            .iter()
            .find(|t| t.cookie == id)
            .filter(|t| t.weight > 0 && usable(t))
    });
    Decision {
        policy,
        metrics,
        presented,
        wanted,
        is_post: method == Method::POST,
    }
}

impl<'g> Decision<'g> {
    /// The target the cookie designates, if it may be used.
    pub fn wanted(&self) -> Option<&'g Target> {
        self.wanted
    }

    /// Counts the decision and sets or rewrites the cookie on the response of `served`.
    pub fn on_response(&self, served: &Target, headers: &mut HeaderMap) {
        let valid = self.presented == Some(served.cookie);
        if self.wanted.is_some_and(|t| t.id == served.id) {
            self.metrics.hit.inc();
        } else if self.presented.is_some() {
            self.metrics.redispatch.inc();
        } else {
            self.metrics.miss.inc();
        }
        let name = self.policy.cookie_name();
        let set = match self.policy.mode {
            StickinessMode::Insert => {
                if self.policy.indirect {
                    remove_set_cookie(headers, name);
                }
                if valid || (self.policy.postonly && !self.is_post) {
                    return;
                }
                let mut c = Cookie::build((name, served.cookie.as_str())).path("/");
                if let Some(domain) = self.policy.domain.as_deref().filter(|d| !d.is_empty()) {
                    c = c.domain(domain);
                }
                match HeaderValue::try_from(c.build().to_string()) {
                    Ok(v) => {
                        headers.append(header::SET_COOKIE, v);
                        true
                    }
                    Err(_) => false,
                }
            }
            StickinessMode::Rewrite => {
                rewrite_set_cookie(headers, name, |_| served.cookie.as_str().to_string())
            }
            StickinessMode::Prefix => rewrite_set_cookie(headers, name, |v| {
                format!("{}{PREFIX_SEP}{v}", served.cookie)
            }),
        };
        if set && self.policy.nocache {
            mark_private(headers);
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers (the first one).
fn find_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            // No full cookie parse per pair: the value must be one of our ids (strictly 16
            // hex digits, `CookieId::parse`), which is all the validation it needs.
            let (pair_name, value) = pair.split_once('=')?;
            (pair_name.trim() == name).then(|| value.trim().trim_matches('"'))
        })
}

/// The name of a `name=value` pair of a `Cookie` header.
fn pair_name(pair: &str) -> Option<&str> {
    pair.split_once('=').map(|(name, _)| name.trim())
}

/// Rewrites every `Cookie` header: cookie `name` is removed (`None`) or gets `value`; the
/// other pairs are kept as they came.
fn rewrite_request_cookie(headers: &mut HeaderMap, name: &str, value: Option<&str>) {
    let mut values = Vec::new();
    for header_value in headers.get_all(header::COOKIE).iter() {
        let Ok(pairs) = header_value.to_str() else {
            continue;
        };
        let mut out = String::with_capacity(pairs.len());
        for pair in pairs.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            if !out.is_empty() {
                out.push_str("; ");
            }
            if pair_name(pair) != Some(name) {
                out.push_str(pair);
            } else if let Some(value) = value {
                out.push_str(name);
                out.push('=');
                out.push_str(value);
            } else if out.ends_with("; ") {
                out.truncate(out.len() - 2);
            }
        }
        if !out.is_empty() {
            values.push(out);
        }
    }
    headers.remove(header::COOKIE);
    for v in values {
        if let Ok(v) = HeaderValue::try_from(v) {
            headers.append(header::COOKIE, v);
        }
    }
}

/// The name of the cookie a `Set-Cookie` value sets, and where its value ends.
fn set_cookie_parts(value: &str) -> Option<(Cookie<'_>, usize)> {
    let end = value.find(';').unwrap_or(value.len());
    let c = Cookie::parse(&value[..end]).ok()?;
    Some((c, end))
}

/// Replaces the value of every `Set-Cookie: <name>=…`, keeping its attributes as they were.
/// Whether any was rewritten.
fn rewrite_set_cookie(
    headers: &mut HeaderMap,
    name: &str,
    new_value: impl Fn(&str) -> String,
) -> bool {
    let mut rewritten = false;
    for v in values_mut(headers, header::SET_COOKIE) {
        let Ok(text) = v.to_str() else { continue };
        let Some((c, end)) = set_cookie_parts(text) else {
            continue;
        };
        if c.name() != name {
            continue;
        }
        let value = new_value(c.value_trimmed());
        if let Ok(new) = HeaderValue::try_from(format!("{name}={value}{}", &text[end..])) {
            *v = new;
            rewritten = true;
        }
    }
    rewritten
}

/// Drops the backend's own `Set-Cookie: <name>=…` (indirect mode).
fn remove_set_cookie(headers: &mut HeaderMap, name: &str) {
    if !headers.contains_key(header::SET_COOKIE) {
        return;
    }
    let keep: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| {
            v.to_str()
                .ok()
                .and_then(set_cookie_parts)
                .is_none_or(|(c, _)| c.name() != name)
        })
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for v in keep {
        headers.append(header::SET_COOKIE, v);
    }
}

/// `Cache-Control: private`, so shared caches do not keep a response that sets the cookie.
fn mark_private(headers: &mut HeaderMap) {
    let already = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| {
            let d = d.trim();
            d.eq_ignore_ascii_case("private") || d.eq_ignore_ascii_case("no-store")
        });
    if !already {
        headers.append(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    }
}

/// Every value of header `name`, mutably.
fn values_mut(headers: &mut HeaderMap, name: header::HeaderName) -> Vec<&mut HeaderValue> {
    match headers.entry(name) {
        header::Entry::Occupied(e) => e.into_iter().collect(),
        header::Entry::Vacant(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_cookie_rewrites_keep_the_other_pairs() {
        let cases = [
            ("a=1; SRV=x; b=2", None, Some("a=1; b=2")),
            ("SRV=x; a=1", None, Some("a=1")),
            ("a=1;SRV=x", None, Some("a=1")),
            ("SRV=x", None, None),
            ("SRV=id~v; a=1", Some("v"), Some("SRV=v; a=1")),
            ("SRVX=1; a", None, Some("SRVX=1; a")),
        ];
        for (given, value, want) in cases {
            let mut headers = HeaderMap::new();
            headers.insert(header::COOKIE, HeaderValue::from_static(given));
            rewrite_request_cookie(&mut headers, "SRV", value);
            let got = headers.get(header::COOKIE).map(|v| v.to_str().unwrap());
            assert_eq!(got, want, "{given}");
        }
    }

    #[test]
    fn ids_are_stable_opaque_hex() {
        let a = CookieId::of("web-1");
        assert_eq!(a, CookieId::of("web-1"));
        assert_ne!(a, CookieId::of("web-2"));
        assert_eq!(a.as_str().len(), 16);
        assert_eq!(CookieId::parse(a.as_str()), Some(a));
        assert_eq!(CookieId::parse("zz"), None);
        assert_eq!(CookieId::parse("0123456789ABCDEF"), None);
        assert_eq!(CookieId::parse("é123456789abcde"), None);
    }

    #[test]
    fn request_cookies_found_rewritten_and_removed() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; SRV=abc; b=2"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("c=3"));
        assert_eq!(find_cookie(&h, "SRV"), Some("abc"));
        assert_eq!(find_cookie(&h, "c"), Some("3"));
        assert_eq!(find_cookie(&h, "x"), None);
        rewrite_request_cookie(&mut h, "SRV", Some("plain"));
        assert_eq!(h.get(header::COOKIE).unwrap(), "a=1; SRV=plain; b=2");
        rewrite_request_cookie(&mut h, "SRV", None);
        let all: Vec<_> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(all, ["a=1; b=2", "c=3"]);
        rewrite_request_cookie(&mut h, "c", None);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        let mut junk = HeaderMap::new();
        junk.append(header::COOKIE, HeaderValue::from_static(";;=;SRV"));
        assert_eq!(find_cookie(&junk, "SRV"), None);
    }

    #[test]
    fn set_cookie_rewrite_keeps_attributes() {
        let mut h = HeaderMap::new();
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("JS=v1; Path=/app; HttpOnly; SameSite=Lax; Foo"),
        );
        h.append(header::SET_COOKIE, HeaderValue::from_static("other=1"));
        assert!(rewrite_set_cookie(&mut h, "JS", |v| format!("id~{v}")));
        let all: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(
            all,
            [
                "JS=id~v1; Path=/app; HttpOnly; SameSite=Lax; Foo",
                "other=1"
            ]
        );
        remove_set_cookie(&mut h, "JS");
        let all: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(all, ["other=1"]);
        assert!(!rewrite_set_cookie(&mut h, "JS", |v| v.to_string()));
    }

    #[test]
    fn private_is_added_once() {
        let mut h = HeaderMap::new();
        mark_private(&mut h);
        mark_private(&mut h);
        assert_eq!(h.get_all(header::CACHE_CONTROL).iter().count(), 1);
        let mut h = HeaderMap::new();
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        mark_private(&mut h);
        let all: Vec<_> = h.get_all(header::CACHE_CONTROL).iter().collect();
        assert_eq!(all, ["max-age=60", "private"]);
    }
}
