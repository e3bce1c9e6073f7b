//! Rancher v1 legacy load-balancer port specs and the port rules derived from them
//! (SPEC-control-api.md §1.7), after Cattle's `LoadBalancerInfoDaoImpl.generateLBConfig`,
//! `PortSpec` and `LoadBalancerTargetPortSpec`.
//!
//! * A listener per `launchConfig.ports` entry `[ip:][public:]private[/proto]` (and per
//!   `launchConfig.expose` entry): source port = public or private, default target port =
//!   private, protocol `tcp` if the spec says `tcp`, else `http`; source ports listed in the
//!   label `io.rancher.loadbalancer.ssl.ports` become `https` (`tls` for tcp).
//! * Each link port spec, new style `[[[hostname:]sourcePort][/path]=][targetPort]` or old
//!   style `targetPort:hostname/path`, yields a rule per matching listener (every listener
//!   when it names no source port); listeners no spec of a link covers get a default rule
//!   for that link's service; rules are deduplicated on (sourcePort, serviceId, hostname,
//!   path), first one wins.
//!
//! Where Cattle is loose this module is stricter (each is a 422 here, where Cattle either
//! accepted garbage or failed with a 500): the optional bind IP must be an IP address; a
//! port written with only digits must be in 1..=65535 (Cattle silently took an oversized
//! number for a hostname); an old-style hostname/path may not contain a further `:` or `=`.
//! Where Cattle's order depends on a Java `HashMap`, this one is deterministic: listeners
//! by ascending source port, and when two launch ports claim one source port the first wins.
//! None of these functions panics, whatever the input.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;

/// Label on the LB's launch config listing (comma-separated) the source ports to serve with
/// TLS termination.
pub const SSL_PORTS_LABEL: &str = "io.rancher.loadbalancer.ssl.ports";

/// A listener's protocol in a legacy LB (a subset of the 1.2+ `portRules` protocols).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegacyProtocol {
    Http,
    Https,
    Tcp,
    Tls,
}

impl LegacyProtocol {
    /// The name used in `portRules[].protocol`.
    pub fn as_str(self) -> &'static str {
        match self {
            LegacyProtocol::Http => "http",
            LegacyProtocol::Https => "https",
            LegacyProtocol::Tcp => "tcp",
            LegacyProtocol::Tls => "tls",
        }
    }
}

impl fmt::Display for LegacyProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A listener derived from one `launchConfig.ports` / `expose` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerPort {
    pub source_port: u16,
    /// The target port of rules that do not name one (the spec's private port).
    pub target_port: u16,
    pub protocol: LegacyProtocol,
}

/// One link port spec; `None` where the spec leaves the part out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkPortSpec {
    /// `None` also when the spec says `default` (Cattle's "no hostname" marker).
    pub hostname: Option<String>,
    pub source_port: Option<u16>,
    /// Starts with `/` when present.
    pub path: Option<String>,
    pub target_port: Option<u16>,
}

/// A port rule of the derived `lbConfig` (`hostname`/`path` are `""` when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedRule {
    pub source_port: u16,
    pub protocol: LegacyProtocol,
    pub hostname: String,
    pub path: String,
    pub target_port: u16,
    pub service_id: String,
}

/// A service link of the legacy LB: the linked service's id and the link's port specs.
#[derive(Debug, Clone, Copy)]
pub struct LegacyLink<'a> {
    pub service_id: &'a str,
    pub ports: &'a [String],
}

/// A rejected port spec (HTTP 422 in the API); every message quotes the spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortSpecError {
    #[error("invalid port spec {spec:?}: expected [ip:][public:]private[/protocol]")]
    WrongFormat { spec: String },
    #[error("invalid port spec {spec:?}: the public port must be 1-65535")]
    InvalidPublicPort { spec: String },
    #[error("invalid port spec {spec:?}: the private port must be 1-65535")]
    InvalidPrivatePort { spec: String },
    #[error("invalid port spec {spec:?}: protocol {protocol:?} is neither tcp nor udp")]
    InvalidProtocol { spec: String, protocol: String },
    #[error("invalid link port spec {spec:?}: {reason}")]
    InvalidLinkPort { spec: String, reason: &'static str },
}

impl PortSpecError {
    /// Cattle's error code for the GDAPI error envelope's `code` field.
    pub fn code(&self) -> &'static str {
        match self {
            PortSpecError::WrongFormat { .. } => "PortWrongFormat",
            PortSpecError::InvalidPublicPort { .. } => "PortInvalidPublicPort",
            PortSpecError::InvalidPrivatePort { .. } => "PortInvalidPrivatePort",
            PortSpecError::InvalidProtocol { .. } => "PortInvalidProtocol",
            PortSpecError::InvalidLinkPort { .. } => "InvalidPort",
        }
    }

    /// The offending spec, as given.
    pub fn spec(&self) -> &str {
        match self {
            PortSpecError::WrongFormat { spec }
            | PortSpecError::InvalidPublicPort { spec }
            | PortSpecError::InvalidPrivatePort { spec }
            | PortSpecError::InvalidProtocol { spec, .. }
            | PortSpecError::InvalidLinkPort { spec, .. } => spec,
        }
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Java's `String.split` on one character: trailing empty pieces are dropped.
fn java_split(s: &str, sep: char) -> Vec<&str> {
    let mut v: Vec<&str> = s.split(sep).collect();
    while v.len() > 1 && v.last().is_some_and(|p| p.is_empty()) {
        v.pop();
    }
    v
}

/// A port number in 1..=65535 from ASCII digits (`None` when out of range, however long).
fn port_number(digits: &str) -> Option<u16> {
    let mut n: u32 = 0;
    for b in digits.bytes() {
        n = n
            .checked_mul(10)?
            .checked_add(u32::from(b.wrapping_sub(b'0')))?;
    }
    u16::try_from(n).ok().filter(|&p| p != 0)
}

/// Parses a `launchConfig.ports` / `expose` entry, `[ip:][public:]private[/proto]`
/// (`80`, `81:80`, `81:80/tcp`, `127.0.0.1:81:80`, `127.0.0.1::80`, `[::1]:81:80`), into
/// the LB listener it declares. `proto` must be `tcp` or `udp` (as Cattle's `PortSpec`);
/// the listener is `tcp` for `/tcp`, else `http`, and `https`/`tls` when its source port is
/// in `ssl_ports`.
pub fn parse_launch_port(spec: &str, ssl_ports: &[u16]) -> Result<ListenerPort, PortSpecError> {
    let wrong = || PortSpecError::WrongFormat {
        spec: spec.to_string(),
    };

    // Optional bind address: "[v6]:rest", or "ip:rest" when there are exactly two ':'.
    let parts = java_split(spec, ']');
    let (ip, rest) = if parts.len() == 2 {
        let ip = parts[0].strip_prefix('[').ok_or_else(wrong)?;
        (Some(ip), parts[1].strip_prefix(':').unwrap_or(parts[1]))
    } else if spec.matches(':').count() == 2 {
        let (ip, r) = spec.split_once(':').ok_or_else(wrong)?;
        (Some(ip), r.strip_prefix(':').unwrap_or(r))
    } else {
        (None, spec)
    };
    if let Some(ip) = ip {
        if !ip.is_empty() && ip.parse::<IpAddr>().is_err() {
            return Err(wrong());
        }
    }

    // (([0-9]+):)?([0-9]+)(/(.*))?
    let (ports, proto) = match rest.split_once('/') {
        Some((p, proto)) => (p, Some(proto)),
        None => (rest, None),
    };
    let (public, private) = match ports.split_once(':') {
        Some((public, private)) => (Some(public), private),
        None => (None, ports),
    };
    if !all_digits(private) || public.is_some_and(|p| !all_digits(p)) {
        return Err(wrong());
    }
    if proto.is_some_and(|p| p.contains(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'])) {
        return Err(wrong()); // Java's `.` does not match line terminators
    }
    let private = port_number(private).ok_or_else(|| PortSpecError::InvalidPrivatePort {
        spec: spec.to_string(),
    })?;
    let public = match public {
        None => None,
        Some(p) => Some(
            port_number(p).ok_or_else(|| PortSpecError::InvalidPublicPort {
                spec: spec.to_string(),
            })?,
        ),
    };
    let tcp = match proto {
        None | Some("udp") => false,
        Some("tcp") => true,
        Some(other) => {
            return Err(PortSpecError::InvalidProtocol {
                spec: spec.to_string(),
                protocol: other.to_string(),
            })
        }
    };

    let source_port = public.unwrap_or(private);
    let ssl = ssl_ports.contains(&source_port);
    let protocol = match (tcp, ssl) {
        (false, false) => LegacyProtocol::Http,
        (false, true) => LegacyProtocol::Https,
        (true, false) => LegacyProtocol::Tcp,
        (true, true) => LegacyProtocol::Tls,
    };
    Ok(ListenerPort {
        source_port,
        target_port: private,
        protocol,
    })
}

/// Java's `Integer.valueOf` shape: optional sign, then digits.
fn is_int(s: &str) -> bool {
    all_digits(s.strip_prefix(['+', '-']).unwrap_or(s))
}

/// Parses a link port spec. New style `[[[hostname:]sourcePort][/path]=][targetPort]`:
/// `web.example.com:80/api=8080`, `80=8081`, `example.com:80`, `80/path`, `/path`,
/// `example.com`, `8080` (a lone number is the target port), `""` (all defaults). Old style
/// `targetPort:hostname/path`: `8080:web.example.com/api`, `8080:/api`, `8080:`.
pub fn parse_link_port(spec: &str) -> Result<LinkPortSpec, PortSpecError> {
    let bad = |reason: &'static str| PortSpecError::InvalidLinkPort {
        spec: spec.to_string(),
        reason,
    };
    let port = |s: &str, reason: &'static str| -> Result<u16, PortSpecError> {
        if !is_int(s) {
            return Err(bad(reason));
        }
        s.strip_prefix('+')
            .map_or(Some(s), Some)
            .filter(|d| all_digits(d))
            .and_then(port_number)
            .ok_or_else(|| bad(reason))
    };
    let hostname =
        |h: &str| (!h.is_empty() && !h.eq_ignore_ascii_case("default")).then(|| h.to_string());
    let mut out = LinkPortSpec::default();

    // Old style: digits ':' [hostname][/path]
    let digits_end = spec.bytes().take_while(u8::is_ascii_digit).count();
    if digits_end > 0 && spec.as_bytes().get(digits_end) == Some(&b':') {
        out.target_port = Some(port(
            &spec[..digits_end],
            "the target port must be 1-65535",
        )?);
        let rest = &spec[digits_end + 1..];
        if rest.contains([':', '=']) {
            return Err(bad(
                "more than one ':' or a '=' in an old-style targetPort:hostname/path spec",
            ));
        }
        match rest.find('/') {
            Some(i) => {
                out.hostname = hostname(&rest[..i]);
                out.path = Some(rest[i..].to_string());
            }
            None => out.hostname = hostname(rest),
        }
        return Ok(out);
    }

    if spec.is_empty() {
        return Ok(out);
    }
    if spec.matches('=').count() > 1 {
        return Err(bad("more than one '='"));
    }
    if spec.matches(':').count() > 1 {
        return Err(bad("more than one ':'"));
    }
    let left = match spec.split_once('=') {
        Some((left, target)) => {
            if !target.is_empty() {
                out.target_port = Some(port(target, "the target port must be 1-65535")?);
            }
            left
        }
        None if is_int(spec) => {
            out.target_port = Some(port(spec, "the target port must be 1-65535")?);
            return Ok(out);
        }
        None => spec,
    };
    if left.starts_with('/') {
        out.path = Some(left.to_string());
        return Ok(out);
    }
    let host_port = match left.find('/') {
        Some(i) => {
            out.path = Some(left[i..].to_string());
            &left[..i]
        }
        None => left,
    };
    match host_port.split_once(':') {
        Some((h, p)) => {
            out.hostname = hostname(h);
            if !p.is_empty() {
                out.source_port = Some(port(p, "the source port must be 1-65535")?);
            }
        }
        None if is_int(host_port) => {
            out.source_port = Some(port(host_port, "the source port must be 1-65535")?);
        }
        None => out.hostname = hostname(host_port),
    }
    Ok(out)
}

/// The source ports listed in the `io.rancher.loadbalancer.ssl.ports` label value (entries
/// trimmed; entries that are not a port number written canonically match nothing, as in
/// Cattle's string comparison).
pub fn parse_ssl_ports(label: Option<&str>) -> Vec<u16> {
    label
        .into_iter()
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter_map(|e| e.parse::<u16>().ok().filter(|p| p.to_string() == e))
        .collect()
}

/// Derives the legacy LB's listeners (see [`parse_launch_port`]), by ascending source port;
/// when two entries claim one source port the first (`ports` before `expose`) wins.
pub fn derive_listeners(
    launch_ports: &[String],
    expose: &[String],
    ssl_ports_label: Option<&str>,
) -> Result<Vec<ListenerPort>, PortSpecError> {
    let ssl = parse_ssl_ports(ssl_ports_label);
    let mut listeners: Vec<ListenerPort> = Vec::new();
    for spec in launch_ports.iter().chain(expose) {
        let l = parse_launch_port(spec, &ssl)?;
        if !listeners.iter().any(|x| x.source_port == l.source_port) {
            listeners.push(l);
        }
    }
    listeners.sort_by_key(|l| l.source_port);
    Ok(listeners)
}

/// Derives `lbConfig.portRules` of a legacy LB from its `launchConfig.ports`, `expose`, the
/// SSL-ports label and its service links (in link order; rules per link: its specs in order,
/// each over the listeners by ascending source port, then the link's default rules).
/// Every spec is validated, also when there is no listener (then there are no rules).
pub fn derive_rules(
    launch_ports: &[String],
    expose: &[String],
    ssl_ports_label: Option<&str>,
    links: &[LegacyLink<'_>],
) -> Result<Vec<DerivedRule>, PortSpecError> {
    let listeners = derive_listeners(launch_ports, expose, ssl_ports_label)?;
    let specs = links
        .iter()
        .map(|l| l.ports.iter().map(|p| parse_link_port(p)).collect())
        .collect::<Result<Vec<Vec<LinkPortSpec>>, _>>()?;

    let mut rules: Vec<DerivedRule> = Vec::new();
    let mut registered: HashSet<(u16, String, String, String)> = HashSet::new();
    let mut covered: HashSet<(u16, &str)> = HashSet::new();
    let mut push = |rules: &mut Vec<DerivedRule>, rule: DerivedRule| -> bool {
        let key = (
            rule.source_port,
            rule.service_id.clone(),
            rule.hostname.clone(),
            rule.path.clone(),
        );
        let new = registered.insert(key);
        if new {
            rules.push(rule);
        }
        new
    };

    for (link, specs) in links.iter().zip(&specs) {
        for spec in specs {
            for l in listeners
                .iter()
                .filter(|l| spec.source_port.is_none() || spec.source_port == Some(l.source_port))
            {
                let rule = DerivedRule {
                    source_port: l.source_port,
                    protocol: l.protocol,
                    hostname: spec.hostname.clone().unwrap_or_default(),
                    path: spec.path.clone().unwrap_or_default(),
                    target_port: spec.target_port.unwrap_or(l.target_port),
                    service_id: link.service_id.to_string(),
                };
                if push(&mut rules, rule) {
                    covered.insert((l.source_port, link.service_id));
                }
            }
        }
        for l in &listeners {
            if covered.contains(&(l.source_port, link.service_id)) {
                continue;
            }
            let rule = DerivedRule {
                source_port: l.source_port,
                protocol: l.protocol,
                hostname: String::new(),
                path: String::new(),
                target_port: l.target_port,
                service_id: link.service_id.to_string(),
            };
            push(&mut rules, rule);
        }
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use LegacyProtocol::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn rule(sp: u16, p: LegacyProtocol, h: &str, path: &str, tp: u16, id: &str) -> DerivedRule {
        DerivedRule {
            source_port: sp,
            protocol: p,
            hostname: h.into(),
            path: path.into(),
            target_port: tp,
            service_id: id.into(),
        }
    }

    fn link(h: Option<&str>, sp: Option<u16>, p: Option<&str>, tp: Option<u16>) -> LinkPortSpec {
        LinkPortSpec {
            hostname: h.map(String::from),
            source_port: sp,
            path: p.map(String::from),
            target_port: tp,
        }
    }

    fn lp(sp: u16, tp: u16, p: LegacyProtocol) -> ListenerPort {
        ListenerPort {
            source_port: sp,
            target_port: tp,
            protocol: p,
        }
    }

    #[test]
    fn spec_example() {
        let ports = strings(&["18090:80"]);
        let lp1 = strings(&["web.example.com:18090/legacy=8080"]);
        let links = [LegacyLink {
            service_id: "1s2",
            ports: &lp1,
        }];
        assert_eq!(
            derive_rules(&ports, &[], None, &links).unwrap(),
            [rule(18090, Http, "web.example.com", "/legacy", 8080, "1s2")]
        );
        // after setservicelinks with ports ["18090=8081"]
        let lp2 = strings(&["18090=8081"]);
        let links = [LegacyLink {
            service_id: "1s2",
            ports: &lp2,
        }];
        assert_eq!(
            derive_rules(&ports, &[], None, &links).unwrap(),
            [rule(18090, Http, "", "", 8081, "1s2")]
        );
    }

    #[test]
    fn launch_ports() {
        assert_eq!(parse_launch_port("80", &[]).unwrap(), lp(80, 80, Http));
        assert_eq!(parse_launch_port("81:80", &[]).unwrap(), lp(81, 80, Http));
        assert_eq!(
            parse_launch_port("8080/tcp", &[]).unwrap(),
            lp(8080, 8080, Tcp)
        );
        assert_eq!(
            parse_launch_port("81:80/tcp", &[]).unwrap(),
            lp(81, 80, Tcp)
        );
        assert_eq!(
            parse_launch_port("81:80/udp", &[]).unwrap(),
            lp(81, 80, Http)
        );
        assert_eq!(
            parse_launch_port("127.0.0.1:81:80", &[]).unwrap(),
            lp(81, 80, Http)
        );
        assert_eq!(
            parse_launch_port("127.0.0.1:81:80/tcp", &[]).unwrap(),
            lp(81, 80, Tcp)
        );
        assert_eq!(
            parse_launch_port("127.0.0.1::80", &[]).unwrap(),
            lp(80, 80, Http)
        );
        assert_eq!(parse_launch_port("::80", &[]).unwrap(), lp(80, 80, Http));
        assert_eq!(
            parse_launch_port("[::1]:81:80", &[]).unwrap(),
            lp(81, 80, Http)
        );
        assert_eq!(
            parse_launch_port("[::1]:80", &[]).unwrap(),
            lp(80, 80, Http)
        );
        assert_eq!(
            parse_launch_port("65535:1", &[]).unwrap(),
            lp(65535, 1, Http)
        );
        // SSL ports are matched on the source port.
        assert_eq!(
            parse_launch_port("443:80", &[443]).unwrap(),
            lp(443, 80, Https)
        );
        assert_eq!(
            parse_launch_port("443:80/tcp", &[443]).unwrap(),
            lp(443, 80, Tls)
        );
        assert_eq!(
            parse_launch_port("8443:443", &[443]).unwrap(),
            lp(8443, 443, Http)
        );
    }

    #[test]
    fn launch_ports_malformed() {
        use PortSpecError as E;
        let code = |s: &str| parse_launch_port(s, &[]).unwrap_err().code();
        for s in [
            "",
            "a",
            "80:",
            ":80",
            "/tcp",
            "80:81:82:83",
            "1.2.3.4:5:6:7",
            "[::1]81:80x",
            "::1:81:80",
            "[::1:81:80",
            "x]:80",
            "localhost:81:80",
            "999.1.1.1:81:80",
            "8 0",
            "+80",
            "-80",
            "80/tcp\n",
            "٨٠",
            "80:81/tcp/x\n",
        ] {
            assert_eq!(code(s), "PortWrongFormat", "{s:?}");
        }
        for s in ["0", "65536", "1:0", "99999999999999999999"] {
            assert_eq!(code(s), "PortInvalidPrivatePort", "{s:?}");
        }
        for s in ["0:65535", "65536:65535", "99999999999:80"] {
            assert_eq!(code(s), "PortInvalidPublicPort", "{s:?}");
        }
        for s in [
            "80/",
            "80/asdf",
            "80/TCP",
            "80/http",
            "81:80/tcp/x",
            "80/udp ",
        ] {
            assert_eq!(code(s), "PortInvalidProtocol", "{s:?}");
        }
        let e = parse_launch_port("80/asdf", &[]).unwrap_err();
        assert_eq!(
            e,
            E::InvalidProtocol {
                spec: "80/asdf".into(),
                protocol: "asdf".into()
            }
        );
        assert!(e.to_string().contains("\"80/asdf\""), "{e}");
        assert_eq!(e.spec(), "80/asdf");
    }

    #[test]
    fn link_ports_new_style() {
        let p = |s: &str| parse_link_port(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        assert_eq!(
            p("web.example.com:80/api=8080"),
            link(Some("web.example.com"), Some(80), Some("/api"), Some(8080))
        );
        assert_eq!(p("80=8081"), link(None, Some(80), None, Some(8081)));
        assert_eq!(p("/path"), link(None, None, Some("/path"), None));
        assert_eq!(p("/path=81"), link(None, None, Some("/path"), Some(81)));
        assert_eq!(
            p("example.com"),
            link(Some("example.com"), None, None, None)
        );
        assert_eq!(p("8080"), link(None, None, None, Some(8080)));
        assert_eq!(p("+8080"), link(None, None, None, Some(8080)));
        assert_eq!(
            p("example.com:80"),
            link(Some("example.com"), Some(80), None, None)
        );
        assert_eq!(
            p("example.com:80/path"),
            link(Some("example.com"), Some(80), Some("/path"), None)
        );
        assert_eq!(
            p("example.com:80=81"),
            link(Some("example.com"), Some(80), None, Some(81))
        );
        assert_eq!(
            p("example.com/path"),
            link(Some("example.com"), None, Some("/path"), None)
        );
        assert_eq!(
            p("example.com/path=81"),
            link(Some("example.com"), None, Some("/path"), Some(81))
        );
        assert_eq!(
            p("example.com=81"),
            link(Some("example.com"), None, None, Some(81))
        );
        assert_eq!(p("80/path"), link(None, Some(80), Some("/path"), None));
        assert_eq!(
            p("80/path=81"),
            link(None, Some(80), Some("/path"), Some(81))
        );
        assert_eq!(p("80/a/b:c"), link(None, Some(80), Some("/a/b:c"), None));
        assert_eq!(p(":80"), link(None, Some(80), None, None));
        assert_eq!(
            p("example.com:"),
            link(Some("example.com"), None, None, None)
        );
        assert_eq!(p("=8080"), link(None, None, None, Some(8080)));
        assert_eq!(p("80="), link(None, Some(80), None, None));
        assert_eq!(p(""), LinkPortSpec::default());
        assert_eq!(p("default"), LinkPortSpec::default());
        assert_eq!(p("DEFAULT:80"), link(None, Some(80), None, None));
        assert_eq!(
            p("*.example.com"),
            link(Some("*.example.com"), None, None, None)
        );
    }

    #[test]
    fn link_ports_old_style() {
        let p = |s: &str| parse_link_port(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        assert_eq!(
            p("8080:web.example.com/api"),
            link(Some("web.example.com"), None, Some("/api"), Some(8080))
        );
        assert_eq!(
            p("8080:web.example.com"),
            link(Some("web.example.com"), None, None, Some(8080))
        );
        assert_eq!(p("8080:/api"), link(None, None, Some("/api"), Some(8080)));
        assert_eq!(p("8080:"), link(None, None, None, Some(8080)));
        // As in Cattle, "<digits>:<anything>" is old style, so the part after ':' is a host.
        assert_eq!(p("80:81"), link(Some("81"), None, None, Some(80)));
    }

    #[test]
    fn link_ports_malformed() {
        for s in [
            "80=81=82",
            "a==81",
            "a:b:c",
            "web.example.com:80:90=1",
            "host:80/p:x=9",
            "host:abc",
            "host:0",
            "host:65536",
            "0",
            "-1",
            "65536",
            "99999999999",
            "=0",
            "80=x",
            "80=-1",
            "80=65536",
            "/p=abc",
            "0:web",
            "65536:web",
            "99999999999:web",
            "8080:web.example.com:90",
            "8080:web=1",
            "8080::",
        ] {
            let e = parse_link_port(s).expect_err(s);
            assert_eq!(e.code(), "InvalidPort");
            assert_eq!(e.spec(), s);
            assert!(e.to_string().contains(&format!("{s:?}")), "{e}");
        }
    }

    #[test]
    fn rules_per_listener_and_defaults() {
        let ports = strings(&["80:8080", "443:8080", "9000/tcp"]);
        let a = strings(&["/api=9090"]);
        let b = strings(&["80=81"]);
        let c = strings(&["1234=1"]); // no such listener: defaults only
        let d: Vec<String> = vec![];
        let links = [
            LegacyLink {
                service_id: "1s1",
                ports: &a,
            },
            LegacyLink {
                service_id: "1s2",
                ports: &b,
            },
            LegacyLink {
                service_id: "1s3",
                ports: &c,
            },
            LegacyLink {
                service_id: "1s4",
                ports: &d,
            },
        ];
        let got = derive_rules(&ports, &[], Some(" 443 , x,0443"), &links).unwrap();
        let mut want = vec![
            rule(80, Http, "", "/api", 9090, "1s1"),
            rule(443, Https, "", "/api", 9090, "1s1"),
            rule(9000, Tcp, "", "/api", 9090, "1s1"),
            rule(80, Http, "", "", 81, "1s2"),
            rule(443, Https, "", "", 8080, "1s2"),
            rule(9000, Tcp, "", "", 9000, "1s2"),
        ];
        for id in ["1s3", "1s4"] {
            want.push(rule(80, Http, "", "", 8080, id));
            want.push(rule(443, Https, "", "", 8080, id));
            want.push(rule(9000, Tcp, "", "", 9000, id));
        }
        assert_eq!(got, want);
    }

    #[test]
    fn dedupe_and_order() {
        // Duplicate specs, a spec colliding with the default rule, listeners given out of
        // order and duplicated on one source port (first wins), expose listeners.
        let ports = strings(&["90", "80:8080", "80:9999/tcp", "90"]);
        let expose = strings(&["7000", "80"]);
        let a = strings(&["80=1", "80=2", "web:80=3", "web:80=4", "/x", "90"]);
        let links = [
            LegacyLink {
                service_id: "s",
                ports: &a,
            },
            LegacyLink {
                service_id: "s",
                ports: &[],
            },
        ];
        let got = derive_rules(&ports, &expose, None, &links).unwrap();
        assert_eq!(
            got,
            [
                rule(80, Http, "", "", 1, "s"),
                rule(80, Http, "web", "", 3, "s"),
                rule(80, Http, "", "/x", 8080, "s"),
                rule(90, Http, "", "/x", 90, "s"),
                rule(7000, Http, "", "/x", 7000, "s"),
                rule(90, Http, "", "", 90, "s"),
                rule(7000, Http, "", "", 90, "s"),
            ]
        );
        assert_eq!(
            derive_listeners(&ports, &expose, None).unwrap(),
            [lp(80, 8080, Http), lp(90, 90, Http), lp(7000, 7000, Http)]
        );
    }

    #[test]
    fn old_style_link_on_every_listener() {
        let ports = strings(&["80", "81"]);
        let a = strings(&["8080:web.example.com/api"]);
        let links = [LegacyLink {
            service_id: "1s5",
            ports: &a,
        }];
        assert_eq!(
            derive_rules(&ports, &[], None, &links).unwrap(),
            [
                rule(80, Http, "web.example.com", "/api", 8080, "1s5"),
                rule(81, Http, "web.example.com", "/api", 8080, "1s5"),
            ]
        );
    }

    #[test]
    fn errors_propagate_and_no_listeners_means_no_rules() {
        let bad = strings(&["80=81=82"]);
        let links = [LegacyLink {
            service_id: "x",
            ports: &bad,
        }];
        assert!(derive_rules(&strings(&["80"]), &[], None, &links).is_err());
        assert!(derive_rules(&[], &[], None, &links).is_err());
        assert!(derive_rules(&strings(&["80/http"]), &[], None, &[]).is_err());
        assert!(derive_rules(&[], &strings(&["x"]), None, &[]).is_err());
        let ok = strings(&["80"]);
        let links = [LegacyLink {
            service_id: "x",
            ports: &ok,
        }];
        assert_eq!(derive_rules(&[], &[], None, &links).unwrap(), []);
    }

    #[test]
    fn ssl_label() {
        assert_eq!(parse_ssl_ports(None), Vec::<u16>::new());
        assert_eq!(
            parse_ssl_ports(Some("443, 8443 ,,x,0443,+1,70000")),
            [443, 8443]
        );
        assert_eq!(LegacyProtocol::Tls.to_string(), "tls");
        assert_eq!(LegacyProtocol::Https.as_str(), "https");
    }

    /// xorshift64*: tiny deterministic PRNG for the no-panic test.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_inputs_never_panic() {
        const PIECES: &[&str] = &[
            "0",
            "1",
            "8",
            "9",
            "80",
            "443",
            "65535",
            "65536",
            "99999999999",
            ":",
            ":",
            "::",
            "/",
            "/",
            "=",
            "=",
            "[",
            "]",
            "[::1]",
            ".",
            "tcp",
            "udp",
            "/tcp",
            "http",
            "web.example.com",
            "default",
            "127.0.0.1",
            "-",
            "+",
            " ",
            "\n",
            "é",
            "€",
            "𝄞",
            "٨",
            "*",
            ",",
            "x",
        ];
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let make = |rng: &mut Rng| -> String {
            let n = rng.below(9);
            (0..n).map(|_| PIECES[rng.below(PIECES.len())]).collect()
        };
        let mut ok = (0, 0, 0);
        for _ in 0..4000 {
            let s = make(&mut rng);
            if parse_launch_port(&s, &[80, 443]).is_ok() {
                ok.0 += 1;
            }
            if parse_link_port(&s).is_ok() {
                ok.1 += 1;
            }
            let _ = parse_ssl_ports(Some(&s));
        }
        for _ in 0..1000 {
            let ports: Vec<String> = (0..rng.below(4)).map(|_| make(&mut rng)).collect();
            let expose: Vec<String> = (0..rng.below(2)).map(|_| make(&mut rng)).collect();
            let lps: Vec<Vec<String>> = (0..rng.below(3))
                .map(|_| (0..rng.below(3)).map(|_| make(&mut rng)).collect())
                .collect();
            let ids = ["1s1", "1s2", "1s1"];
            let links: Vec<LegacyLink<'_>> = lps
                .iter()
                .enumerate()
                .map(|(i, p)| LegacyLink {
                    service_id: ids[i % ids.len()],
                    ports: p,
                })
                .collect();
            let label = make(&mut rng);
            if let Ok(rules) = derive_rules(&ports, &expose, Some(&label), &links) {
                ok.2 += 1;
                let mut keys = HashSet::new();
                for r in &rules {
                    assert!(r.source_port > 0 && r.target_port > 0);
                    assert!(keys.insert((r.source_port, &r.service_id, &r.hostname, &r.path)));
                }
            }
        }
        assert!(ok.0 > 0 && ok.1 > 0 && ok.2 > 0, "{ok:?}");
    }
}
