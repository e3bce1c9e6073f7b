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
/// `X-Forwarded-Proto` and `X-Forwarded-Port`. Built once per client connection, so a request
/// without a prior `X-Forwarded-For` costs three header inserts and no formatting.
#[derive(Debug, Clone)]
pub struct Forwarded {
    client: Option<HeaderValue>,
    proto: HeaderValue,
    port: HeaderValue,
}

impl Forwarded {
    pub fn new(client: IpAddr, proto: &'static str, port: u16) -> Forwarded {
        Forwarded {
            client: address_value(client),
            proto: HeaderValue::from_static(proto),
            port: HeaderValue::from(port),
        }
    }

    /// Sets the three headers on a request going to a target.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if let Some(client) = &self.client {
            match headers.entry(&X_FORWARDED_FOR) {
                Entry::Vacant(e) => {
                    e.insert(client.clone());
                }
                Entry::Occupied(mut e) => {
                    let mut values = e.iter().filter_map(|v| v.to_str().ok());
                    let xff = match values.next() {
                        Some(first) => {
                            let prior = values.fold(first.to_string(), |acc, v| acc + ", " + v);
                            let client = client.to_str().unwrap_or_default();
                            HeaderValue::from_str(&format!("{prior}, {client}")).ok()
                        }
                        None => Some(client.clone()),
                    };
                    if let Some(v) = xff {
                        e.insert(v);
                    }
                }
            }
        }
        headers.insert(&X_FORWARDED_PROTO, self.proto.clone());
        headers.insert(&X_FORWARDED_PORT, self.port.clone());
    }

    /// The same three fields as raw HTTP/1 lines, after the `prior` `X-Forwarded-For` values
    /// the client sent (for the relay, which forwards heads as bytes).
    pub fn write_lines(&self, prior: &[&[u8]], out: &mut Vec<u8>) {
        let client = self.client.as_ref().map(HeaderValue::as_bytes);
        let mut values = prior.iter().copied().chain(client);
        if let Some(first) = values.next() {
            out.extend_from_slice(b"x-forwarded-for: ");
            out.extend_from_slice(first);
            for v in values {
                out.extend_from_slice(b", ");
                out.extend_from_slice(v);
            }
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"x-forwarded-proto: ");
        out.extend_from_slice(self.proto.as_bytes());
        out.extend_from_slice(b"\r\nx-forwarded-port: ");
        out.extend_from_slice(self.port.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// A client address as a field value. Made once per connection: IPv4, the common case, is
/// written directly (`Display` for `IpAddr` goes through the formatting machinery, a
/// noticeable share of a connection-per-request's cost).
fn address_value(client: IpAddr) -> Option<HeaderValue> {
    let IpAddr::V4(v4) = client else {
        return HeaderValue::from_str(&client.to_string()).ok();
    };
    let mut text = Vec::with_capacity(15);
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
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).ok()
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
        ] {
            let value = address_value(ip.parse().unwrap()).unwrap();
            assert_eq!(value.to_str().unwrap(), ip);
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
