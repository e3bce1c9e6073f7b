//! Hostname patterns of port rules and the normalisation of request hosts.

use std::borrow::Cow;
use std::fmt;

/// What a rule's `hostname` matches. Patterns are stored lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// No hostname: any host.
    Any,
    Exact(Box<str>),
    /// `*.example.com`, stored as `.example.com`: one or more labels before it.
    Suffix(Box<str>),
    /// `example.*`, stored as `example.`: one or more labels after it.
    Prefix(Box<str>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid hostname pattern {pattern:?}: {reason}")]
pub struct HostPatternError {
    pub pattern: String,
    pub reason: &'static str,
}

impl HostPattern {
    pub fn parse(raw: &str) -> Result<HostPattern, HostPatternError> {
        let lower = raw.trim().trim_end_matches('.').to_ascii_lowercase();
        let fail = |reason| HostPatternError {
            pattern: raw.to_string(),
            reason,
        };
        if lower.is_empty() {
            return Ok(HostPattern::Any);
        }
        let (pattern, literal) = if let Some(rest) = lower.strip_prefix("*.") {
            (HostPattern::Suffix(format!(".{rest}").into()), rest)
        } else if let Some(rest) = lower.strip_suffix(".*") {
            (HostPattern::Prefix(format!("{rest}.").into()), rest)
        } else {
            (HostPattern::Exact(lower.as_str().into()), lower.as_str())
        };
        if literal.is_empty() {
            return Err(fail("a wildcard needs a domain beside it"));
        }
        if !literal
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return Err(fail(
                "only letters, digits, '-', '.' and one leading '*.' or trailing '.*' are allowed",
            ));
        }
        if literal.split('.').any(str::is_empty) {
            return Err(fail("empty label"));
        }
        Ok(pattern)
    }

    /// 0 for exact, 1 for wildcards, 2 for none: lower is more specific.
    pub(crate) fn class(&self) -> u8 {
        match self {
            HostPattern::Exact(_) => 0,
            HostPattern::Suffix(_) | HostPattern::Prefix(_) => 1,
            HostPattern::Any => 2,
        }
    }

    /// Length of the literal part, so `*.api.example.com` outranks `*.example.com`.
    pub(crate) fn literal_len(&self) -> usize {
        match self {
            HostPattern::Any => 0,
            HostPattern::Exact(s) | HostPattern::Suffix(s) | HostPattern::Prefix(s) => s.len(),
        }
    }

    /// Whether a normalised host (see [`normalize_host`]) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(h) => **h == *host,
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(&**s),
            HostPattern::Prefix(p) => host.len() > p.len() && host.starts_with(&**p),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Any => Ok(()),
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Suffix(s) => write!(f, "*{s}"),
            HostPattern::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// Lowercases a `Host`/`:authority` value and strips its port and any trailing dot.
/// Returns `None` for values that cannot be a host, so they match only host-less rules.
/// Borrows from `raw` when it has no capital letter, as nearly every client's has not.
pub fn normalize_host(raw: &str) -> Option<Cow<'_, str>> {
    let host = if let Some(rest) = raw.strip_prefix('[') {
        // IPv6 literal: "[::1]:8080".
        let end = rest.find(']')?;
        &raw[..end + 2]
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            Some(_) => return None,
            None => raw,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HostPattern {
        HostPattern::parse(s).unwrap()
    }

    #[test]
    fn wildcards_need_at_least_one_label() {
        assert!(p("*.example.com").matches("a.example.com"));
        assert!(p("*.example.com").matches("a.b.example.com"));
        assert!(!p("*.example.com").matches("example.com"));
        assert!(!p("*.example.com").matches("xexample.com"));
        assert!(p("example.*").matches("example.com"));
        assert!(p("example.*").matches("example.co.uk"));
        assert!(!p("example.*").matches("example"));
        assert!(!p("example.*").matches("myexample.com"));
        assert!(p("Web.Example.COM.").matches("web.example.com"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["*.", "a..b", "*.*.x", "a b", "x.*.y", "*"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(HostPattern::parse("").unwrap(), HostPattern::Any);
    }

    #[test]
    fn hosts_are_normalised() {
        assert_eq!(
            normalize_host("WWW.Example.com:8080").as_deref(),
            Some("www.example.com")
        );
        assert_eq!(
            normalize_host("example.com.").as_deref(),
            Some("example.com")
        );
        assert_eq!(normalize_host("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(normalize_host("a:b"), None);
        assert_eq!(normalize_host(""), None);
    }
}
