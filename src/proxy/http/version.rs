//! Which HTTP a client speaks, known before any parser reads a byte.
//!
//! A TLS client says it by ALPN. Otherwise (plain TCP, TLS without ALPN) the first bytes say
//! it: the h2 connection preface, or anything else (HTTP/1). The relay reads them
//! ([`classify`]) and gives an h2 client to hyper's h2 connection with the bytes read so far.

/// The h2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    Http1,
    H2,
}

/// What a plain TCP client's first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstBytes {
    Speaks(HttpVersion),
    /// A strict prefix of the h2 preface so far (`P` could still be `POST`).
    Unclear,
}

/// Reads the start of a plain TCP client's first bytes (any length).
pub fn classify(first: &[u8]) -> FirstBytes {
    let first = &first[..first.len().min(PREFACE.len())];
    if !PREFACE.starts_with(first) {
        FirstBytes::Speaks(HttpVersion::Http1)
    } else if first.len() == PREFACE.len() {
        FirstBytes::Speaks(HttpVersion::H2)
    } else {
        FirstBytes::Unclear
    }
}

/// The version a TLS client agreed to by ALPN; `None` when it offered none.
pub fn from_alpn(protocol: Option<&[u8]>) -> Option<HttpVersion> {
    match protocol? {
        b"h2" => Some(HttpVersion::H2),
        _ => Some(HttpVersion::Http1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H1: FirstBytes = FirstBytes::Speaks(HttpVersion::Http1);
    const H2: FirstBytes = FirstBytes::Speaks(HttpVersion::H2);

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), H1);
        assert_eq!(classify(b"POST"), H1);
        assert_eq!(classify(b"PRI * HTTP/1.1"), H1);
        assert_eq!(classify(b"P"), FirstBytes::Unclear);
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), FirstBytes::Unclear);
        assert_eq!(classify(PREFACE), H2);
        assert_eq!(classify(&[&PREFACE[..], b"\0\0\x12\x04"].concat()), H2);
    }

    #[test]
    fn alpn_decides_tls_clients() {
        assert_eq!(from_alpn(Some(b"h2")), Some(HttpVersion::H2));
        assert_eq!(from_alpn(Some(b"http/1.1")), Some(HttpVersion::Http1));
        assert_eq!(from_alpn(None), None);
    }
}
