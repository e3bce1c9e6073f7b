//! A target's response head, read by the relay: parsed with httparse, its framing decided by
//! RFC 9112 §6.3, and rewritten for the client in the same pass (hop-by-hop fields out).
//! What the target and corral could read differently (both `Content-Length` and
//! `Transfer-Encoding`, two lengths, a coding other than `chunked`) is refused: the client
//! gets a 502 and the connection to the target is closed.

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::super::MAX_HEADERS;
use super::request::{parse_length, push_decimal, spelled};

/// How the body after a response head ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: HEAD, 204, 304.
    Empty,
    Length(u64),
    /// Passed through as it comes; [`super::chunked::ChunkedScanner`] finds its end.
    Chunked,
    /// Ends when the target closes.
    UntilClose,
}

/// Where the fields of a response head go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fields {
    /// Written into the HTTP/1.1 head the client gets.
    Head,
    /// Into the head, except `Set-Cookie` and `Cache-Control`, held in a map for the
    /// stickiness policy to rewrite (a sticky listener).
    HeadHoldingCookies,
    /// All of them into a map: an h2 client's response. Its body is sent de-chunked, so
    /// `Transfer-Encoding` is left out too.
    Map,
}

#[derive(Debug)]
pub struct ResponseHead {
    pub status: u16,
    /// Length of the head in the buffer it was parsed from.
    pub len: usize,
    pub framing: Framing,
    /// The target will take another request on this connection afterwards.
    pub reusable: bool,
    /// The head as the client gets it, without the final empty line (the relay may still add
    /// `connection: close`); empty with [`Fields::Map`].
    pub client: Vec<u8>,
    /// The fields that did not go into `client` (see [`Fields`]).
    pub held: HeaderMap,
}

pub enum Parsed {
    Partial,
    /// A 1xx interim response of this length: skipped, the final one follows.
    Interim(usize),
    Final(ResponseHead),
}

/// Why a response head was refused.
pub type Invalid = &'static str;

/// Parses the response head at the start of `buf`; `head_request` says its body is empty
/// whatever the framing fields say. `fields` says where the fields the client gets go.
pub fn parse(buf: &[u8], head_request: bool, fields: Fields) -> Result<Parsed, Invalid> {
    let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(_) => return Err("malformed response head"),
    };
    let status = res.code.ok_or("malformed response head")?;
    if status == 101 {
        return Err("101 to a request that asked for no upgrade");
    }
    if (100..200).contains(&status) {
        return Ok(Parsed::Interim(len));
    }
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut keep_alive = res.version == Some(1);
    // Fields the target's `Connection` names are hop-by-hop too; they are rare, so the
    // head is only walked twice when there are some.
    let mut listed = false;
    for h in res.headers.iter() {
        if !matches!(h.name.len(), 10 | 14 | 17) {
            // Not one of the three below: most fields are ruled out by their length.
        } else if spelled(h.name.as_bytes(), b"content-length") {
            let n = parse_length(h.value.trim_ascii()).ok_or("invalid content-length")?;
            if length.is_some_and(|l| l != n) {
                return Err("two different content-lengths");
            }
            length = Some(n);
        } else if spelled(h.name.as_bytes(), b"transfer-encoding") {
            if chunked || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err("transfer-encoding other than chunked");
            }
            chunked = true;
        } else if spelled(h.name.as_bytes(), b"connection") {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive |= res.version == Some(0);
                } else if !token.is_empty() {
                    listed = true;
                }
            }
        }
    }
    if chunked && length.is_some() {
        return Err("both content-length and transfer-encoding");
    }
    let framing = if head_request || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };

    let connection: Vec<&[u8]> = if listed {
        res.headers
            .iter()
            .filter(|h| spelled(h.name.as_bytes(), b"connection"))
            .flat_map(|h| h.value.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .collect()
    } else {
        Vec::new()
    };
    // A chunked body passed through as it is keeps its `Transfer-Encoding`.
    let keep_chunked = chunked && fields != Fields::Map;
    let forwarded = res.headers.iter().filter(|h| {
        let name = h.name.as_bytes();
        !(hop_by_hop(name).is_some_and(|f| !(keep_chunked && f == b"transfer-encoding"))
            || connection.iter().any(|c| c.eq_ignore_ascii_case(name)))
    });
    let mut client = Vec::new();
    let mut held = HeaderMap::new();
    if fields == Fields::Map {
        held = field_map(buf, len, forwarded)?;
    } else {
        // Room for the body bytes read with the head too: they follow it in one write.
        client.reserve(buf.len() + 32);
        client.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(&mut client, u64::from(status));
        client.push(b' ');
        client.extend_from_slice(res.reason.unwrap_or("").as_bytes());
        client.extend_from_slice(b"\r\n");
        for h in forwarded {
            let name = h.name.as_bytes();
            if fields == Fields::HeadHoldingCookies {
                let cookie_field = [header::SET_COOKIE, header::CACHE_CONTROL]
                    .into_iter()
                    .find(|f| f.as_str().as_bytes().eq_ignore_ascii_case(name));
                if let Some(field) = cookie_field {
                    if let Ok(value) = HeaderValue::from_bytes(h.value) {
                        held.append(field, value);
                    }
                    continue;
                }
            }
            client.extend_from_slice(name);
            client.extend_from_slice(b": ");
            client.extend_from_slice(h.value);
            client.extend_from_slice(b"\r\n");
        }
    }
    Ok(Parsed::Final(ResponseHead {
        status,
        len,
        framing,
        reusable: keep_alive && framing != Framing::UntilClose,
        client,
        held,
    }))
}

/// The fields of a head parsed from `buf[..len]` as a header map. Its own function: the
/// relay's HTTP/1 path never comes here and should not pay for it in its code.
#[inline(never)]
fn field_map<'h, 'b: 'h>(
    buf: &'b [u8],
    len: usize,
    fields: impl Iterator<Item = &'h httparse::Header<'b>>,
) -> Result<HeaderMap, Invalid> {
    // One copy of the head that every value is a slice of, rather than one allocation per
    // value.
    let block = Bytes::copy_from_slice(&buf[..len]);
    let mut map = HeaderMap::with_capacity(fields.size_hint().1.unwrap_or(0));
    for h in fields {
        let name = common_name(h.name.as_bytes())
            .map_or_else(|| HeaderName::from_bytes(h.name.as_bytes()), Ok);
        // httparse's values are slices of `buf`; checked all the same, not assumed.
        let at = (h.value.as_ptr() as usize).checked_sub(buf.as_ptr() as usize);
        let value = match at {
            Some(at) if at + h.value.len() <= len => {
                HeaderValue::from_maybe_shared(block.slice(at..at + h.value.len()))
            }
            _ => HeaderValue::from_bytes(h.value),
        };
        let (Ok(name), Ok(value)) = (name, value) else {
            return Err("malformed response field");
        };
        map.append(name, value);
    }
    Ok(map)
}

/// `name` as one of the fields nearly every response carries, found by its length, its first
/// letter and one comparison: `HeaderName::from_bytes` lowercases a name into a buffer and then
/// matches it against all the standard names, ~120 instructions a field.
fn common_name(name: &[u8]) -> Option<HeaderName> {
    let first = name.first()? | 0x20;
    let candidate = match (name.len(), first) {
        (4, b'd') => header::DATE,
        (4, b'e') => header::ETAG,
        (4, b'v') => header::VARY,
        (6, b's') => header::SERVER,
        (10, b's') => header::SET_COOKIE,
        (12, b'c') => header::CONTENT_TYPE,
        (13, b'a') => header::ACCEPT_RANGES,
        (13, b'c') => header::CACHE_CONTROL,
        (13, b'l') => header::LAST_MODIFIED,
        (14, b'c') => header::CONTENT_LENGTH,
        _ => return None,
    };
    spelled(name, candidate.as_str().as_bytes()).then_some(candidate)
}

/// The RFC 9110 §7.6.1 field `name` is, if it concerns one connection only.
/// `Transfer-Encoding` is one, but a chunked body passed through as it is keeps it.
fn hop_by_hop(name: &[u8]) -> Option<&'static [u8]> {
    let candidates: &[&'static [u8]] = match name.len() {
        2 => &[b"te"],
        7 => &[b"trailer", b"upgrade"],
        10 => &[b"connection", b"keep-alive"],
        16 => &[b"proxy-connection"],
        17 => &[b"transfer-encoding"],
        _ => &[],
    };
    candidates.iter().copied().find(|f| spelled(name, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str, head_request: bool) -> Result<ResponseHead, Invalid> {
        match parse(raw.as_bytes(), head_request, Fields::Head)? {
            Parsed::Final(h) => Ok(h),
            _ => panic!("not final: {raw}"),
        }
    }

    #[test]
    fn common_names_are_the_standard_ones() {
        for name in [
            "Date",
            "ETag",
            "vary",
            "SERVER",
            "Set-Cookie",
            "content-type",
            "Accept-Ranges",
            "Cache-Control",
            "Last-Modified",
            "Content-Length",
        ] {
            let standard = HeaderName::from_bytes(name.as_bytes()).unwrap();
            assert_eq!(common_name(name.as_bytes()), Some(standard), "{name}");
        }
        for other in [
            "",
            "dat",
            "Daté",
            "x-da",
            "Servers",
            "cache-contrl",
            "Last-Modifie",
        ] {
            assert_eq!(common_name(other.as_bytes()), None, "{other}");
        }
    }

    #[test]
    fn framing_by_rfc_9112() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false).unwrap();
        assert_eq!((h.framing, h.reusable), (Framing::Length(5), true));
        let h = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        assert!(String::from_utf8(h.client)
            .unwrap()
            .contains("Transfer-Encoding: chunked"));
        let h = head("HTTP/1.1 200 OK\r\n\r\n", false).unwrap();
        assert_eq!((h.framing, h.reusable), (Framing::UntilClose, false));
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true).unwrap();
        assert_eq!(h.framing, Framing::Empty);
        let h = head("HTTP/1.1 304 Not Modified\r\n\r\n", false).unwrap();
        assert_eq!((h.framing, h.reusable), (Framing::Empty, true));
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false).unwrap();
        assert!(!h.reusable);
        let h = head(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(h.reusable);
        let h = head(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(!h.reusable);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
        ] {
            assert!(
                parse(raw.as_bytes(), false, Fields::Head).is_err(),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn hop_by_hop_fields_stay_with_the_target() {
        let h = head(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private\r\nKeep-Alive: timeout=5\r\n\
             X-Private: 1\r\nServer: s\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(h.client).unwrap(),
            "HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 0\r\n"
        );
    }

    #[test]
    fn an_h2_client_gets_a_map_without_chunked_framing() {
        let raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: X-P\r\n\
                   X-P: 1\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n";
        let Ok(Parsed::Final(h)) = parse(raw.as_bytes(), false, Fields::Map) else {
            panic!("not a final head");
        };
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.client.is_empty());
        let names: Vec<_> = h.held.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["set-cookie"]);
        assert_eq!(h.held.get_all("set-cookie").iter().count(), 2);
    }

    #[test]
    fn empty_values_reach_the_map() {
        for raw in [
            "HTTP/1.1 200 OK\r\nX-Empty:\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX-Empty:   \r\nX-B: 1\r\n\r\n",
        ] {
            let Ok(Parsed::Final(h)) = parse(raw.as_bytes(), false, Fields::Map) else {
                panic!("not a final head: {raw:?}");
            };
            assert_eq!(h.held["x-empty"], "", "{raw:?}");
        }
    }

    #[test]
    fn interim_responses_are_skipped() {
        let raw = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n";
        assert!(matches!(
            parse(raw, false, Fields::Head),
            Ok(Parsed::Interim(40))
        ));
    }
}
