//! Hostnames of external services: resolved (A and AAAA, every address) when a table is built
//! for a state that names a new one, then re-resolved in the background every refresh
//! interval (clamped to [`REFRESH_FLOOR`, `REFRESH_CEILING`], 30 s by default); a changed
//! answer rebuilds the table. A failed or empty lookup keeps the last good addresses. The
//! answers are runtime state ([`crate::api::rancher::Resolved`]), never persisted.
//!
//! The system resolver (`getaddrinfo`, via tokio's blocking pool) does not report TTLs, so
//! the interval is the operator's, not the record's.

use std::net::IpAddr;
use std::time::Duration;

use crate::api::rancher::Resolved;

pub const DEFAULT_REFRESH: Duration = Duration::from_secs(30);
pub const REFRESH_FLOOR: Duration = Duration::from_secs(1);
pub const REFRESH_CEILING: Duration = Duration::from_secs(3600);

/// One lookup may take this long before it counts as failed.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The refresh interval actually used for `requested`.
pub fn clamp_interval(requested: Duration) -> Duration {
    requested.clamp(REFRESH_FLOOR, REFRESH_CEILING)
}

/// Every address `host` resolves to, sorted and deduplicated; an empty answer is an error.
pub async fn lookup(host: &str) -> Result<Vec<IpAddr>, String> {
    let answer = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host, 0)))
        .await
        .map_err(|_| format!("lookup timed out after {LOOKUP_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    let mut ips: Vec<IpAddr> = answer.map(|a| a.ip()).collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        return Err("no addresses".into());
    }
    Ok(ips)
}

/// Looks up every host in `hosts`.
pub async fn lookup_all(hosts: &[String]) -> Vec<(String, Result<Vec<IpAddr>, String>)> {
    let mut out = Vec::with_capacity(hosts.len());
    for h in hosts {
        out.push((h.clone(), lookup(h).await));
    }
    out
}

/// The next answers: only the `wanted` hosts, each with its fresh answer, else (lookup
/// failed, or not looked up) its last good one.
pub fn merge(
    old: &Resolved,
    wanted: &[String],
    answers: Vec<(String, Result<Vec<IpAddr>, String>)>,
) -> Resolved {
    let mut next = Resolved::new();
    for h in wanted {
        if let Some(ips) = old.get(h) {
            next.insert(h.clone(), ips.clone());
        }
    }
    for (h, answer) in answers {
        if !wanted.contains(&h) {
            continue;
        }
        match answer {
            Ok(ips) => {
                next.insert(h, ips);
            }
            Err(e) => {
                tracing::warn!(hostname = %h, error = %e,
                    "external service lookup failed; keeping the last good addresses");
            }
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn failures_keep_the_last_good_answer() {
        let old = Resolved::from([
            ("a".to_string(), ips(&["10.0.0.1"])),
            ("b".to_string(), ips(&["10.0.0.2"])),
            ("gone".to_string(), ips(&["10.0.0.3"])),
        ]);
        let wanted = vec!["a".to_string(), "b".to_string(), "new".to_string()];
        let answers = vec![
            ("a".to_string(), Ok(ips(&["10.0.0.9", "::9"]))),
            ("b".to_string(), Err("SERVFAIL".to_string())),
            ("new".to_string(), Err("NXDOMAIN".to_string())),
            ("stray".to_string(), Ok(ips(&["10.0.0.4"]))),
        ];
        let next = merge(&old, &wanted, answers);
        assert_eq!(next["a"], ips(&["10.0.0.9", "::9"]));
        assert_eq!(next["b"], ips(&["10.0.0.2"]));
        assert!(!next.contains_key("new"));
        assert!(!next.contains_key("gone") && !next.contains_key("stray"));
        // Nothing new: the same map, so no rebuild.
        let again = merge(&next, &wanted, vec![("b".into(), Err("x".into()))]);
        assert_eq!(again, next);
    }

    #[test]
    fn interval_is_clamped() {
        assert_eq!(clamp_interval(Duration::ZERO), REFRESH_FLOOR);
        assert_eq!(clamp_interval(Duration::from_secs(86_400)), REFRESH_CEILING);
        assert_eq!(clamp_interval(DEFAULT_REFRESH), DEFAULT_REFRESH);
    }

    #[tokio::test]
    async fn localhost_resolves() {
        let ips = lookup("localhost").await.unwrap();
        assert!(ips.iter().all(IpAddr::is_loopback), "{ips:?}");
        assert!(lookup("no-such-host.invalid").await.is_err());
    }
}
