//! A client's request head, read by the relay: parsed with httparse in the connection's own
//! buffer, checked, and rewritten for the target in the same pass (hop-by-hop fields out,
//! `X-Forwarded-*` in), without building a header map.
//!
//! The relay takes only requests it can forward byte for byte with no doubt about their
//! meaning: HTTP/1.1, origin-form, at most one plain `Content-Length` of a body small enough
//! to hold, one well-formed `Host`, nothing to upgrade or negotiate. Anything else — and
//! every head httparse refuses — is [`Parsed::Handoff`]: hyper's connection takes the
//! connection from that request on, with its own answers (400, 414, 431) and its support for
//! chunked uploads, `Expect`, upgrades and HTTP/1.0.

use std::mem::MaybeUninit;
use std::ops::Range;

use http::Method;

use super::super::headers::Forwarded;
use super::super::replay::{is_idempotent, REPLAY_LIMIT};
use super::super::validate::MAX_TARGET_LEN;
use super::super::MAX_HEADERS;

pub enum Parsed {
    /// The head is not complete yet.
    Partial,
    Request(RequestHead),
    /// Not for the relay: hyper serves the connection from this request on.
    Handoff,
}

#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    /// Where the path and the `Host` value are in the buffer that was parsed.
    pub path: Range<usize>,
    pub host: Option<Range<usize>>,
    /// Length of the head in the buffer; the body follows it.
    pub len: usize,
    pub body_len: usize,
    /// The client did not ask to close after this exchange.
    pub keep_alive: bool,
    /// The head as the target gets it, ending with its empty line.
    pub upstream: Vec<u8>,
    /// Where the `Cookie` values are, when they were held back from `upstream` for the
    /// stickiness policy to read and rewrite.
    pub cookies: Vec<Range<usize>>,
}

impl RequestHead {
    /// Whether the request may be sent again after a connection broke under it: it has no
    /// body, or one corral holds whose method says sending it twice does no harm.
    pub fn replayable(&self) -> bool {
        self.body_len == 0 || is_idempotent(&self.method)
    }
}

/// What one field of the head is to the relay.
enum Field {
    Forward,
    Host,
    ContentLength,
    Connection,
    ForwardedFor,
    Cookie,
    /// Hop-by-hop or replaced by corral: not forwarded.
    Drop,
    /// Means more than the relay handles.
    Handoff,
}

/// Whether the field name `name` is `lower` (lowercase letters and `-`) in any case. A byte
/// `b` passes for `lower`'s `c` when `b | 0x20 == c`: for a letter that is the letter or its
/// capital, for `-` also CR, which httparse never lets into a field name. Without an early
/// exit the loop is a few instructions; `eq_ignore_ascii_case` spends ~18 a byte.
pub fn spelled(name: &[u8], lower: &[u8]) -> bool {
    name.len() == lower.len()
        && name
            .iter()
            .zip(lower)
            .fold(0, |differ, (b, c)| differ | ((b | 0x20) ^ c))
            == 0
}

fn field(name: &str) -> Field {
    // Most fields are none of these: their length rules them out before any comparison.
    let known = match name.len() {
        4 => &["host"][..],
        10 => &["connection", "keep-alive"][..],
        14 => &["content-length"][..],
        15 => &["x-forwarded-for"][..],
        16 => &["proxy-connection", "x-forwarded-port"][..],
        17 => &["transfer-encoding", "x-forwarded-proto"][..],
        2 => &["te"][..],
        6 => &["cookie", "expect"][..],
        7 => &["upgrade", "trailer"][..],
        _ => &[][..],
    };
    let Some(&which) = known
        .iter()
        .find(|k| spelled(name.as_bytes(), k.as_bytes()))
    else {
        return Field::Forward;
    };
    match which {
        "host" => Field::Host,
        "content-length" => Field::ContentLength,
        "connection" => Field::Connection,
        "x-forwarded-for" => Field::ForwardedFor,
        "cookie" => Field::Cookie,
        "keep-alive" | "proxy-connection" | "x-forwarded-port" | "x-forwarded-proto" => Field::Drop,
        _ => Field::Handoff,
    }
}

/// Parses the head at the start of `buf`; with `hold_cookies`, the `Cookie` fields are left
/// out of the target's head and their places noted (a sticky listener rewrites them).
pub fn parse(buf: &[u8], forwarded: &Forwarded, hold_cookies: bool) -> Parsed {
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Handoff,
    };
    match check(&req, buf, len, forwarded, hold_cookies) {
        Some(head) => Parsed::Request(head),
        None => Parsed::Handoff,
    }
}

fn check(
    req: &httparse::Request<'_, '_>,
    buf: &[u8],
    len: usize,
    forwarded: &Forwarded,
    hold_cookies: bool,
) -> Option<RequestHead> {
    if req.version != Some(1) {
        return None;
    }
    let method = Method::from_bytes(req.method?.as_bytes()).ok()?;
    let path = req.path?;
    if method == Method::CONNECT
        || !path.starts_with('/')
        || path.len() > MAX_TARGET_LEN
        || !path.bytes().all(is_path_byte)
    {
        return None;
    }
    let mut upstream = Vec::with_capacity(len + 96);
    upstream.extend_from_slice(method.as_str().as_bytes());
    upstream.push(b' ');
    upstream.extend_from_slice(path.as_bytes());
    upstream.extend_from_slice(b" HTTP/1.1\r\n");

    let mut host = None;
    let mut content_length = None;
    let mut keep_alive = true;
    let mut prior_xff: [&[u8]; 4] = [&[]; 4];
    let mut xff = 0;
    let mut cookies = Vec::new();
    for h in req.headers.iter() {
        if h.name.contains('_') {
            // A target that folds `_` into `-` could read another field than corral does.
            return None;
        }
        match field(h.name) {
            Field::Forward => {}
            Field::Host => {
                if host.is_some() || !is_host(h.value) {
                    return None;
                }
                host = Some(offset(buf, h.value));
            }
            Field::ContentLength => {
                if content_length.is_some() {
                    return None;
                }
                content_length = Some(parse_length(h.value)?);
                continue;
            }
            Field::Connection => {
                keep_alive &= connection_keeps(h.value)?;
                continue;
            }
            Field::ForwardedFor => {
                *prior_xff.get_mut(xff)? = h.value;
                xff += 1;
                continue;
            }
            Field::Cookie if hold_cookies => {
                cookies.push(offset(buf, h.value));
                continue;
            }
            Field::Cookie => {}
            Field::Drop => continue,
            Field::Handoff => return None,
        }
        upstream.extend_from_slice(h.name.as_bytes());
        upstream.extend_from_slice(b": ");
        upstream.extend_from_slice(h.value);
        upstream.extend_from_slice(b"\r\n");
    }
    let host = host?;
    let body_len = content_length.unwrap_or(0);
    if body_len > REPLAY_LIMIT {
        return None;
    }
    if let Some(n) = content_length {
        upstream.extend_from_slice(b"content-length: ");
        push_decimal(&mut upstream, n);
        upstream.extend_from_slice(b"\r\n");
    }
    forwarded.write_lines(&prior_xff[..xff], &mut upstream);
    upstream.extend_from_slice(b"\r\n");
    Some(RequestHead {
        method,
        path: offset(buf, path.as_bytes()),
        host: Some(host),
        len,
        body_len: body_len as usize,
        keep_alive,
        upstream,
        cookies,
    })
}

/// Writes `n` in decimal (a canonical `Content-Length`: no leading zeros).
pub fn push_decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(super::super::headers::decimal(n, &mut [0; 20]));
}

/// Where `part`, a slice of `buf`, lies in it.
fn offset(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// RFC 3986 path and query characters: what `http::Uri` accepts too, so the relay forwards
/// no target that hyper's path would refuse (`"`, `{`, `\`, ... go to hyper).
fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b)
}

/// A host name, IPv4 or bracketed IPv6 literal, with an optional port: the common forms.
fn is_host(value: &[u8]) -> bool {
    let (name, port) = match value.strip_prefix(b"[") {
        Some(rest) => {
            let Some(end) = rest.iter().position(|&b| b == b']') else {
                return false;
            };
            let (literal, after) = rest.split_at(end);
            if literal.is_empty() || !literal.iter().all(|&b| b.is_ascii_hexdigit() || b == b':') {
                return false;
            }
            (&b"v6"[..], &after[1..])
        }
        None => match value.iter().position(|&b| b == b':') {
            Some(colon) => value.split_at(colon),
            None => (value, &b""[..]),
        },
    };
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => {
            !digits.is_empty() && digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit)
        }
        _ => false,
    };
    port_ok
        && !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A `Content-Length` of plain digits (the response side reads its values with this too).
pub fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// `Some(false)` for `close`, `Some(true)` for `keep-alive`; `None` for a field naming other
/// fields to drop (and `upgrade`), which hyper's path handles.
fn connection_keeps(value: &[u8]) -> Option<bool> {
    let mut keep = true;
    for token in value.split(|&b| b == b',') {
        let token = token.trim_ascii();
        if token.eq_ignore_ascii_case(b"close") {
            keep = false;
        } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
            return None;
        }
    }
    Some(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd() -> Forwarded {
        Forwarded::new("10.0.0.9".parse().unwrap(), "http", 80)
    }

    fn head(raw: &str) -> Option<RequestHead> {
        match parse(raw.as_bytes(), &fwd(), false) {
            Parsed::Request(h) => Some(h),
            Parsed::Partial => panic!("partial: {raw}"),
            Parsed::Handoff => None,
        }
    }

    #[test]
    fn rewrites_for_the_target() {
        let raw = "GET /a?b=1 HTTP/1.1\r\nHost: Example.com:8080\r\nConnection: keep-alive\r\n\
                   Keep-Alive: 5\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-Proto: https\r\n\
                   Accept: */*\r\n\r\nBODY";
        let h = head(raw).unwrap();
        assert_eq!(&raw[h.path.clone()], "/a?b=1");
        assert_eq!(&raw[h.host.clone().unwrap()], "Example.com:8080");
        assert_eq!(h.len, raw.len() - 4);
        assert!(h.keep_alive);
        assert_eq!(
            String::from_utf8(h.upstream).unwrap(),
            "GET /a?b=1 HTTP/1.1\r\nHost: Example.com:8080\r\nAccept: */*\r\n\
             x-forwarded-for: 1.1.1.1, 10.0.0.9\r\nx-forwarded-proto: http\r\n\
             x-forwarded-port: 80\r\n\r\n"
        );
        let h =
            head("POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 007\r\nconnection: close\r\n\r\n")
                .unwrap();
        assert_eq!(h.body_len, 7);
        assert!(!h.keep_alive);
        assert!(String::from_utf8(h.upstream)
            .unwrap()
            .contains("\r\ncontent-length: 7\r\n"));
    }

    #[test]
    fn hands_off_what_it_does_not_take() {
        for raw in [
            "GET / HTTP/1.0\r\nHost: h\r\n\r\n",
            "GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
            "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: u@h\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h:x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 70000\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nConnection: x-secret\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nTE: trailers\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nContent_Length: 5\r\n\r\n",
            "GET /a\"b HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\n bad: fold\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nX: \0\r\n\r\n",
        ] {
            assert!(head(raw).is_none(), "{raw:?}");
        }
    }

    #[test]
    fn cookies_are_held_for_a_sticky_listener() {
        let raw = "GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1\r\nX: y\r\ncookie: SRV=2\r\n\r\n";
        let Parsed::Request(held) = parse(raw.as_bytes(), &fwd(), true) else {
            panic!("not relayed");
        };
        let values: Vec<&str> = held.cookies.iter().map(|r| &raw[r.clone()]).collect();
        assert_eq!(values, ["a=1", "SRV=2"]);
        assert!(!String::from_utf8(held.upstream).unwrap().contains("ookie"));
        let plain = head(raw).unwrap();
        assert!(plain.cookies.is_empty());
        assert!(String::from_utf8(plain.upstream)
            .unwrap()
            .contains("Cookie: a=1\r\n"));
    }

    #[test]
    fn host_forms() {
        for ok in [
            "h",
            "a.b-c.d",
            "h:80",
            "10.0.0.1:8080",
            "[::1]",
            "[::1]:443",
        ] {
            assert!(is_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "", ":80", "h:", "h:123456", "[::1", "[]", "a b", "h:80:80", "[::1]x",
        ] {
            assert!(!is_host(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn partial_heads_wait() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: h\r\n", &fwd(), false),
            Parsed::Partial
        ));
    }
}
