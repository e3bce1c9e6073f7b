//! The first phase of every request: refuse what hyper's parser lets through but a target
//! could read differently (RFC 9112 framing, RFC 9110 field rules). hyper already refuses
//! most malformed heads itself (see the README's "Hostile traffic" table); these are the
//! gaps the hostile suite (`tests/hostile.rs`) found. A refusal is a
//! [`ProxyError::BadRequest`]: 400 with `Connection: close`.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::Authority;
use http::{Request, Version};

use super::error::ProxyError;
use super::upstream::BodyTimeout;
use crate::config::Timeouts;

/// Longest request target corral forwards (nginx's default buffer; hyper's own limit is
/// 64 KiB, beyond the 64 KiB head buffer, so it would answer 431 instead of 414).
pub const MAX_TARGET_LEN: usize = 8 * 1024;

/// Names that, spelled with `_` for `-`, a CGI/WSGI target reads as the real field.
const UNDERSCORE_SENSITIVE: [&str; 12] = [
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
];

/// Checks `req` and prepares it for the later phases: canonical `Content-Length`, the body
/// read deadline for the upstream exchange.
pub fn request<B>(req: &mut Request<B>, timeouts: &Timeouts) -> Result<(), ProxyError> {
    if target_len(req) > MAX_TARGET_LEN {
        return Err(ProxyError::UriTooLong);
    }
    framing(req.headers_mut())?;
    field_names(req.headers())?;
    host(req)?;
    req.extensions_mut()
        .insert(BodyTimeout(non_zero(timeouts.request_body())));
    Ok(())
}

fn non_zero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

fn target_len<B>(req: &Request<B>) -> usize {
    let uri = req.uri();
    uri.path_and_query().map_or(0, |pq| pq.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len())
}

/// RFC 9112 §6: the only transfer coding corral passes on is a single `chunked` (it
/// de-chunks and re-chunks; any other coding would reach the target undeclared). hyper has
/// already refused `chunked` that is not final, TE in HTTP/1.0 and bad or conflicting
/// `Content-Length`s; with TE and CL together it keeps TE, drops CL and closes afterwards.
fn framing(headers: &mut HeaderMap) -> Result<(), ProxyError> {
    let mut te = headers.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(first) = te.next() {
        let only_chunked = first
            .as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"chunked");
        if !only_chunked || te.next().is_some() {
            return Err(ProxyError::BadRequest(
                "transfer-encoding other than chunked",
            ));
        }
    }
    if let Some(cl) = headers.get(header::CONTENT_LENGTH) {
        // hyper accepted it as 1*DIGIT within u64; forward it without leading zeros.
        let len = std::str::from_utf8(cl.as_bytes())
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(ProxyError::BadRequest("invalid content-length"))?;
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    Ok(())
}

/// A `Transfer_Encoding` or `Content_Length` would be a second framing header to a target
/// that folds `_` into `-`; never a silent drop either, so the request is refused.
fn field_names(headers: &HeaderMap) -> Result<(), ProxyError> {
    let confusable = headers.keys().any(|name| {
        let name = name.as_str();
        name.contains('_')
            && UNDERSCORE_SENSITIVE
                .iter()
                .any(|s| s.len() == name.len() && s.bytes().zip(name.bytes()).all(same_or_dash))
    });
    if confusable {
        return Err(ProxyError::BadRequest(
            "underscore in a framing or routing field",
        ));
    }
    Ok(())
}

fn same_or_dash((want, got): (u8, u8)) -> bool {
    want == got || (want == b'-' && got == b'_')
}

/// RFC 9112 §3.2: exactly one valid `Host` in HTTP/1.1, and an absolute-form target's
/// authority must name the same host (corral routes on the target, the target reads `Host`).
fn host<B>(req: &Request<B>) -> Result<(), ProxyError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one host"));
    }
    let Some(host) = host else {
        return match req.version() {
            Version::HTTP_11 if req.uri().authority().is_none() => {
                Err(ProxyError::BadRequest("missing host"))
            }
            _ => Ok(()),
        };
    };
    let host = std::str::from_utf8(host.as_bytes())
        .ok()
        .and_then(|h| h.parse::<Authority>().ok())
        .filter(|a| !a.as_str().contains('@') && !a.host().is_empty())
        .ok_or(ProxyError::BadRequest("invalid host"))?;
    if let Some(target) = req.uri().authority() {
        let default = if req.uri().scheme_str() == Some("https") {
            443
        } else {
            80
        };
        let same = target.host().eq_ignore_ascii_case(host.host())
            && target.port_u16().unwrap_or(default) == host.port_u16().unwrap_or(default);
        if !same {
            return Err(ProxyError::BadRequest(
                "host differs from the request target",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(build: http::request::Builder) -> Result<Request<()>, ProxyError> {
        let mut req = build.body(()).unwrap();
        request(&mut req, &Timeouts::default()).map(|()| req)
    }

    #[test]
    fn transfer_encoding_must_be_one_chunked() {
        let te = |v: &str| {
            check(
                Request::post("/")
                    .header("host", "h")
                    .header("transfer-encoding", v),
            )
        };
        assert!(te("chunked").is_ok());
        assert!(te("Chunked ").is_ok());
        assert!(te("gzip, chunked").is_err());
        assert!(te("identity").is_err());
        let twice = Request::post("/")
            .header("host", "h")
            .header("transfer-encoding", "chunked")
            .header("transfer-encoding", "chunked");
        assert!(check(twice).is_err());
    }

    #[test]
    fn content_length_is_canonical() {
        let req = check(
            Request::post("/")
                .header("host", "h")
                .header("content-length", "007"),
        )
        .unwrap();
        assert_eq!(req.headers()["content-length"], "7");
    }

    #[test]
    fn underscore_spellings_of_framing_fields_are_refused() {
        for name in [
            "transfer_encoding",
            "content_length",
            "x_forwarded_for",
            "host_",
        ] {
            let res = check(Request::get("/").header("host", "h").header(name, "1"));
            assert_eq!(res.is_err(), name != "host_", "{name}");
        }
        assert!(check(
            Request::get("/")
                .header("host", "h")
                .header("x_custom", "1")
        )
        .is_ok());
    }

    #[test]
    fn host_rules() {
        assert!(check(Request::get("/")).is_err());
        assert!(check(Request::get("/").version(Version::HTTP_10)).is_ok());
        assert!(check(Request::get("/").header("host", "a").header("host", "a")).is_err());
        assert!(check(Request::get("/").header("host", "a b")).is_err());
        assert!(check(Request::get("/").header("host", "u@a")).is_err());
        assert!(check(Request::get("http://a/").header("host", "b")).is_err());
        assert!(check(Request::get("http://A:80/").header("host", "a")).is_ok());
        assert!(check(Request::get("http://a:81/").header("host", "a")).is_err());
        assert!(check(Request::get("http://a/")).is_ok());
    }

    #[test]
    fn long_targets_are_414() {
        let path = format!("/{}", "a".repeat(MAX_TARGET_LEN));
        let err = check(Request::get(path).header("host", "h")).unwrap_err();
        assert_eq!(err.status(), http::StatusCode::URI_TOO_LONG);
    }
}
