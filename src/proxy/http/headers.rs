//! Header rewriting between client and target: hop-by-hop removal and `X-Forwarded-*`.

use std::net::IpAddr;

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one hop and never cross the proxy (RFC 9110 §7.6.1), except
/// `Upgrade`, which the caller restores for WebSocket.
const HOP_BY_HOP: [&HeaderName; 6] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
];

/// Whether a request is a WebSocket handshake: GET, `Upgrade: websocket`, `Connection: upgrade`.
pub fn is_websocket_upgrade(method: &http::Method, headers: &HeaderMap) -> bool {
    method == http::Method::GET
        && has_token(headers, &header::UPGRADE, "websocket")
        && has_token(headers, &header::CONNECTION, "upgrade")
}

/// Whether a comma-separated header contains `token` (case-insensitive).
pub fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers: the fixed list, every header `Connection` names (except
/// `Host`: a client must not make the target see no host at all), and `TE` unless it is
/// exactly `trailers`.
///
/// One pass over the names present comes first (standard names compare as enums): most
/// messages carry none of these, or only `Connection`, so most removals are skipped, and a
/// `Connection` token names a header to parse and remove only if that header is there.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = [false; HOP_BY_HOP.len()];
    let mut te = false;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| *h == name) {
            present[i] = true;
        } else if name == header::TE {
            te = true;
        }
    }
    if present[0] {
        let listed: Vec<HeaderName> = headers
            .get_all(&header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| headers.contains_key(*t))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .filter(|name| name != header::HOST)
            .collect();
        for name in &listed {
            headers.remove(name);
        }
    }
    for (name, present) in HOP_BY_HOP.iter().zip(present) {
        if present {
            headers.remove(*name);
        }
    }
    if te {
        let te_trailers_only = headers
            .get_all(&header::TE)
            .iter()
            .all(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
        if !te_trailers_only {
            headers.remove(&header::TE);
        }
    }
}

/// What the target needs to know about the client side: `X-Forwarded-For` (appended to),
/// `X-Forwarded-Proto` and `X-Forwarded-Port`. The client's address and the port are
/// formatted once per client connection, inline: a connection that makes one request should
/// not pay two allocations for them.
#[derive(Debug, Clone)]
pub struct Forwarded {
    client: Text<45>,
    port: Text<5>,
    proto: &'static str,
}

impl Forwarded {
    pub fn new(client: IpAddr, proto: &'static str, port: u16) -> Forwarded {
        Forwarded {
            client: address_text(client),
            port: Text::decimal(port),
            proto,
        }
    }

    /// Sets the three headers on a request going to a target.
    pub fn apply(&self, headers: &mut HeaderMap) {
        let client = self.client.as_str();
        match headers.entry(&X_FORWARDED_FOR) {
            Entry::Vacant(e) => {
                if let Ok(v) = HeaderValue::from_str(client) {
                    e.insert(v);
                }
            }
            Entry::Occupied(mut e) => {
                let prior = e.iter().filter_map(|v| v.to_str().ok());
                let xff = prior.chain([client]).collect::<Vec<_>>().join(", ");
                if let Ok(v) = HeaderValue::from_str(&xff) {
                    e.insert(v);
                }
            }
        }
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(self.proto));
        if let Ok(port) = HeaderValue::from_str(self.port.as_str()) {
            headers.insert(&X_FORWARDED_PORT, port);
        }
    }

    /// The same three fields as raw HTTP/1 lines, after the `prior` `X-Forwarded-For` values
    /// the client sent (for the relay, which forwards heads as bytes).
    pub fn write_lines(&self, prior: &[&[u8]], out: &mut Vec<u8>) {
        out.extend_from_slice(b"x-forwarded-for: ");
        for v in prior {
            out.extend_from_slice(v);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(self.client.as_str().as_bytes());
        out.extend_from_slice(b"\r\nx-forwarded-proto: ");
        out.extend_from_slice(self.proto.as_bytes());
        out.extend_from_slice(b"\r\nx-forwarded-port: ");
        out.extend_from_slice(self.port.as_str().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// ASCII text of at most `N` bytes, kept inline.
#[derive(Clone, Copy)]
struct Text<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Text<N> {
    fn new() -> Self {
        Text {
            bytes: [0; N],
            len: 0,
        }
    }

    fn decimal(n: u16) -> Self {
        let mut text = Text::new();
        decimal(u64::from(n), &mut [0; 20])
            .iter()
            .for_each(|&d| text.push(d));
        text
    }

    fn push(&mut self, b: u8) {
        if let Some(slot) = self.bytes.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    fn as_str(&self) -> &str {
        // Only ASCII is ever pushed; the fallback is unreachable.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl<const N: usize> std::fmt::Write for Text<N> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.len + s.len() > N {
            return Err(std::fmt::Error);
        }
        s.bytes().for_each(|b| self.push(b));
        Ok(())
    }
}

impl<const N: usize> std::fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `n` in decimal, written at the end of `digits` (no leading zeros: a canonical
/// `Content-Length`).
pub fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &digits[start..]
}

/// A client address as text. IPv4, the common case, is written directly (`Display` for
/// `IpAddr` goes through the formatting machinery, a noticeable share of a
/// connection-per-request's cost); the longest IPv6 text is 45 bytes.
fn address_text(client: IpAddr) -> Text<45> {
    let mut text = Text::new();
    match client {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push(b'.');
                }
                if octet >= 100 {
                    text.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    text.push(b'0' + octet / 10 % 10);
                }
                text.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => {
            let _ = std::fmt::Write::write_fmt(&mut text, format_args!("{v6}"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn connection_listed_and_fixed_headers_go() {
        let mut h = map(&[
            ("connection", "close, X-Secret, Host"),
            ("host", "h"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("trailer", "x"),
            ("upgrade", "h2c"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(h.contains_key("x-kept"));
        assert!(h.contains_key("host"));
        let mut h = map(&[("te", "trailers")]);
        strip_hop_by_hop(&mut h);
        assert!(h.contains_key("te"));
        let mut h = map(&[
            ("connection", "TE, x-absent"),
            ("te", "trailers"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        let mut h = map(&[("x-kept", "1"), ("content-length", "5")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
    }

    #[test]
    fn addresses_as_values() {
        for ip in [
            "0.0.0.0",
            "10.0.0.9",
            "127.0.0.1",
            "255.255.255.255",
            "192.168.100.1",
            "::1",
            "::ffff:192.168.100.1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "1234:5678:9abc:def0:1234:5678:9abc:def0",
        ] {
            assert_eq!(address_text(ip.parse().unwrap()).as_str(), ip);
        }
        for port in [0, 7, 80, 443, 8080, 65535] {
            assert_eq!(Text::<5>::decimal(port).as_str(), port.to_string());
        }
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        Forwarded::new("10.0.0.9".parse().unwrap(), "http", 8080).apply(&mut h);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-port"], "8080");
        let mut h = map(&[]);
        Forwarded::new("::1".parse().unwrap(), "https", 443).apply(&mut h);
        assert_eq!(h["x-forwarded-for"], "::1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-port"], "443");
        // A prior value that is not text is replaced, as before.
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_bytes(b"\xff").unwrap());
        Forwarded::new("10.0.0.9".parse().unwrap(), "http", 80).apply(&mut h);
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
    }

    #[test]
    fn websocket_needs_all_three() {
        let h = map(&[
            ("upgrade", "WebSocket"),
            ("connection", "keep-alive, Upgrade"),
        ]);
        assert!(is_websocket_upgrade(&http::Method::GET, &h));
        assert!(!is_websocket_upgrade(&http::Method::POST, &h));
        let h = map(&[("upgrade", "websocket")]);
        assert!(!is_websocket_upgrade(&http::Method::GET, &h));
    }
}
