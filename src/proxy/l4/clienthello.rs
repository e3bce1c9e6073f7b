//! Peek at a TLS ClientHello without terminating TLS.
//!
//! The `sni` listener reads the first bytes of a connection, asks
//! [`parse_client_hello`] what the client wants (server name, ALPN), picks a
//! backend, and then forwards the *unmodified* bytes to it. The parser only
//! has to understand enough of TLS to find those two extensions; everything
//! else (cipher suites, key shares, ...) is skipped and left for the backend
//! to judge.
//!
//! Wire layout (RFC 8446 §4.1.2, RFC 5246 §6.2 and §7.4.1.2):
//!
//! ```text
//! record:     type(1)=22  version(2)  length(2)  fragment(length)
//! handshake:  type(1)=1   length(3)   body(length)    -- may span records
//! body:       legacy_version(2) random(32) session_id<0..32>
//!             cipher_suites<2..2^16-2> compression_methods<1..2^8-1>
//!             [extensions<0..2^16-1>]
//! ```
//!
//! Robustness: this runs on untrusted bytes before any authentication, so
//! every read goes through `Reader`, whose reads are bounds- and
//! overflow-checked and return `None` instead of panicking. The parser
//! never reads past the end of the ClientHello, so its answer depends only
//! on the bytes up to there: once it returns `Ok(Some(_))` or `Err(_)`,
//! appending more bytes does not change the answer.
//!
//! Not supported (reported as [`ClientHelloError::NotTls`]): SSLv2-style
//! ClientHellos and SSL 3.0 record versions; no current client sends them.

use std::net::IpAddr;

/// Upper bound on the bytes a caller must buffer to see a whole ClientHello,
/// record headers included. Real ClientHellos take a few hundred bytes, about
/// 2 KiB with a post-quantum key share; the cap keeps a client from making
/// the listener buffer unbounded data before routing.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// What the parser learned from the first bytes of a TLS connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The SNI host name, lowercased and without a trailing dot. `None` when
    /// the client sent no `server_name` extension, no `host_name` entry, or an
    /// IP address literal (forbidden by RFC 6066 but sent by some clients;
    /// like rustls, we treat it as "no SNI").
    pub server_name: Option<String>,
    /// The ALPN protocol names in the client's order of preference; empty
    /// when the client sent no ALPN extension.
    pub alpn: Vec<Vec<u8>>,
}

/// Why the bytes are not a usable ClientHello.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientHelloError {
    /// The first bytes are not a TLS handshake record (e.g. plain HTTP).
    #[error("not a TLS handshake")]
    NotTls,
    /// A TLS handshake, but its first message is not a ClientHello.
    #[error("first TLS handshake message is not a ClientHello")]
    NotClientHello,
    /// Looked like a ClientHello but broke the format; the text says where.
    #[error("malformed TLS ClientHello: {0}")]
    Malformed(&'static str),
    /// Seeing the whole ClientHello would take more than [`MAX_CLIENT_HELLO`] bytes.
    #[error("TLS ClientHello larger than 16 KiB")]
    TooLarge,
}

/// Parses the ClientHello at the start of `buf`, the bytes read so far from
/// a new connection.
///
/// - `Ok(Some(hello))`: complete. Bytes after the ClientHello are ignored.
/// - `Ok(None)`: `buf` is a valid but incomplete prefix; read more and call
///   again with the longer buffer. Only returned while
///   `buf.len() < MAX_CLIENT_HELLO`, so a read loop capped at
///   `MAX_CLIENT_HELLO` always ends in `Some` or an error.
///
/// Host names must be plain DNS names (letters, digits, `-`, `_`, dots
/// between labels of 1..=63 bytes, at most 253 bytes in all, one trailing
/// dot tolerated). Anything else, like a wildcard, a space or UTF-8, is
/// rejected as [`ClientHelloError::Malformed`] rather than ignored: it could
/// never match a route, and silently sending it to the default backend would
/// hide a broken or hostile client.
///
/// # Errors
///
/// Not a usable ClientHello; more bytes will not change that. See
/// [`ClientHelloError`] for the kinds.
pub fn parse_client_hello(buf: &[u8]) -> Result<Option<ClientHello>, ClientHelloError> {
    if !starts_like_tls_handshake(buf) {
        return Err(ClientHelloError::NotTls);
    }
    let Some(message) = reassemble_handshake_message(buf)? else {
        return Ok(None);
    };
    let body = message
        .get(HANDSHAKE_HEADER_LEN..)
        .ok_or(ClientHelloError::Malformed("handshake header"))?;
    parse_client_hello_body(body).map(Some)
}

const CONTENT_TYPE_HANDSHAKE: u8 = 22;
const HANDSHAKE_TYPE_CLIENT_HELLO: u8 = 1;
const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;
/// RFC 8446 §5.1: a plaintext record fragment is at most 2^14 bytes.
const MAX_RECORD_FRAGMENT: usize = 1 << 14;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const SERVER_NAME_TYPE_HOST_NAME: u8 = 0;
const MAX_DNS_NAME_LEN: usize = 253;
const MAX_DNS_LABEL_LEN: usize = 63;

/// True if `version` is a record-layer version a ClientHello may carry:
/// TLS 1.0 (0x0301) through 1.3 (0x0304). Clients send 0x0301 or 0x0303.
fn is_tls_record_version(version: u16) -> bool {
    (0x0301..=0x0304).contains(&version)
}

/// Checks the bytes of the first record header that have arrived so far.
/// Judging from a partial header lets the listener reject plain-text
/// protocols (an HTTP request starts with a letter) after one byte instead
/// of waiting for five.
fn starts_like_tls_handshake(buf: &[u8]) -> bool {
    // `map_or(true, ..)`: a byte that has not arrived yet cannot disqualify.
    let type_ok = buf.first().is_none_or(|&t| t == CONTENT_TYPE_HANDSHAKE);
    let major_ok = buf.get(1).is_none_or(|&major| major == 3);
    let minor_ok = buf.get(2).is_none_or(|&minor| (1..=4).contains(&minor));
    type_ok && major_ok && minor_ok
}

/// Collects handshake records from `buf` until they hold the whole first
/// handshake message, which is returned header included. A ClientHello may
/// be split over several records (and its 4-byte header may itself be
/// split), so fragments are copied into one buffer; at most
/// `MAX_CLIENT_HELLO` bytes, once per connection, so the copy is cheap.
fn reassemble_handshake_message(buf: &[u8]) -> Result<Option<Vec<u8>>, ClientHelloError> {
    let mut input = Reader::new(buf);
    let mut message = Vec::new();
    loop {
        let Some(fragment) = next_handshake_fragment(&mut input)? else {
            return Ok(None);
        };
        message.extend_from_slice(fragment);
        if let Some(total) = handshake_message_len(&message)? {
            if message.len() >= total {
                // Whatever follows the ClientHello in its last record is not
                // ours to judge; the backend will see it.
                message.truncate(total);
                return Ok(Some(message));
            }
        }
    }
}

/// Reads the next record from `input` and returns its fragment, or `None` if
/// the record has not fully arrived yet.
///
/// The limit is checked *before* reading, against where the header or
/// record would end: that way `None` ("read more") is never the answer
/// once the caller has buffered `MAX_CLIENT_HELLO` bytes.
fn next_handshake_fragment<'a>(
    input: &mut Reader<'a>,
) -> Result<Option<&'a [u8]>, ClientHelloError> {
    check_limit(input.position(), RECORD_HEADER_LEN)?;
    let Some(mut header) = input.sub(RECORD_HEADER_LEN) else {
        return Ok(None);
    };
    let (Some(content_type), Some(version), Some(len)) = (header.u8(), header.u16(), header.u16())
    else {
        return Err(ClientHelloError::Malformed("record header"));
    };
    // The first record already passed `starts_like_tls_handshake`, so these
    // can only fail for a later record: a broken stream, not a non-TLS one.
    if content_type != CONTENT_TYPE_HANDSHAKE {
        return Err(ClientHelloError::Malformed(
            "non-handshake record inside ClientHello",
        ));
    }
    if !is_tls_record_version(version) {
        return Err(ClientHelloError::Malformed("record version"));
    }
    let len = usize::from(len);
    // RFC 8446 §5.1 forbids empty handshake fragments; refusing them also
    // means every record moves the parse forward.
    if len == 0 {
        return Err(ClientHelloError::Malformed("empty handshake record"));
    }
    if len > MAX_RECORD_FRAGMENT {
        return Err(ClientHelloError::Malformed("record longer than 2^14 bytes"));
    }
    check_limit(input.position(), len)?;
    Ok(input.take(len))
}

/// Fails with `TooLarge` if reading `len` more bytes at `position` would
/// go past `MAX_CLIENT_HELLO`.
fn check_limit(position: usize, len: usize) -> Result<(), ClientHelloError> {
    match position.checked_add(len) {
        Some(end) if end <= MAX_CLIENT_HELLO => Ok(()),
        _ => Err(ClientHelloError::TooLarge),
    }
}

/// Returns the full length (header included) of the handshake message that
/// starts `message`, or `None` while its 4-byte header is incomplete.
fn handshake_message_len(message: &[u8]) -> Result<Option<usize>, ClientHelloError> {
    let mut header = Reader::new(message);
    let (Some(msg_type), Some(body_len)) = (header.u8(), header.u24()) else {
        return Ok(None);
    };
    if msg_type != HANDSHAKE_TYPE_CLIENT_HELLO {
        return Err(ClientHelloError::NotClientHello);
    }
    // A u24 plus 4 cannot overflow usize; checked anyway so no input can.
    let total = body_len
        .checked_add(HANDSHAKE_HEADER_LEN)
        .ok_or(ClientHelloError::TooLarge)?;
    // Fail early on the declared length instead of waiting for the bytes.
    if total > MAX_CLIENT_HELLO {
        return Err(ClientHelloError::TooLarge);
    }
    Ok(Some(total))
}

/// Parses the ClientHello body (after the handshake header).
fn parse_client_hello_body(body: &[u8]) -> Result<ClientHello, ClientHelloError> {
    let mut r = Reader::new(body);
    // legacy_version and random: routing needs neither. The version is not
    // checked: the backend decides which versions it speaks.
    r.take(2 + 32)
        .ok_or(ClientHelloError::Malformed("version and random"))?;
    r.u8_prefixed()
        .ok_or(ClientHelloError::Malformed("session id"))?;
    r.u16_prefixed()
        .ok_or(ClientHelloError::Malformed("cipher suites"))?;
    r.u8_prefixed()
        .ok_or(ClientHelloError::Malformed("compression methods"))?;

    let mut hello = ClientHello {
        server_name: None,
        alpn: Vec::new(),
    };
    // Extensions are optional (RFC 5246 §7.4.1.2); very old clients omit them.
    if r.is_empty() {
        return Ok(hello);
    }
    let extensions = r
        .u16_prefixed()
        .ok_or(ClientHelloError::Malformed("extensions length"))?;
    if !r.is_empty() {
        return Err(ClientHelloError::Malformed(
            "trailing bytes after extensions",
        ));
    }
    parse_extensions(extensions, &mut hello)?;
    Ok(hello)
}

/// Walks the extension list, filling in the fields of `hello` we care about.
fn parse_extensions(mut exts: Reader<'_>, hello: &mut ClientHello) -> Result<(), ClientHelloError> {
    let mut seen_server_name = false;
    let mut seen_alpn = false;
    while !exts.is_empty() {
        let ext_type = exts
            .u16()
            .ok_or(ClientHelloError::Malformed("extension type"))?;
        let data = exts
            .u16_prefixed()
            .ok_or(ClientHelloError::Malformed("extension length"))?;
        // RFC 8446 §4.2 forbids repeats. Rejecting them matters for routing:
        // we must not pick a backend by one copy while the backend's TLS
        // stack reads another.
        match ext_type {
            EXT_SERVER_NAME => {
                if std::mem::replace(&mut seen_server_name, true) {
                    return Err(ClientHelloError::Malformed(
                        "duplicate server_name extension",
                    ));
                }
                hello.server_name = parse_server_name(data)?;
            }
            EXT_ALPN => {
                if std::mem::replace(&mut seen_alpn, true) {
                    return Err(ClientHelloError::Malformed("duplicate ALPN extension"));
                }
                hello.alpn = parse_alpn(data)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Parses the `server_name` extension (RFC 6066 §3) and returns its
/// normalised host name, if any.
fn parse_server_name(mut data: Reader<'_>) -> Result<Option<String>, ClientHelloError> {
    let mut list = data
        .u16_prefixed()
        .ok_or(ClientHelloError::Malformed("server name list length"))?;
    if !data.is_empty() {
        return Err(ClientHelloError::Malformed(
            "trailing bytes after server name list",
        ));
    }
    if list.is_empty() {
        return Err(ClientHelloError::Malformed("empty server name list"));
    }
    let mut host_name = None;
    while !list.is_empty() {
        let name_type = list
            .u8()
            .ok_or(ClientHelloError::Malformed("server name type"))?;
        let name = list
            .u16_prefixed()
            .ok_or(ClientHelloError::Malformed("server name length"))?;
        // Only host_name is defined; skip any other type. (The only
        // alternative layout ever shipped is this same u16-prefixed one.)
        if name_type != SERVER_NAME_TYPE_HOST_NAME {
            continue;
        }
        if host_name.replace(name.rest()).is_some() {
            return Err(ClientHelloError::Malformed("more than one host name"));
        }
    }
    host_name.map_or(Ok(None), normalize_host_name)
}

/// Turns SNI bytes into the form routes are matched against: lowercase,
/// no trailing dot. See [`parse_client_hello`] for what is accepted.
fn normalize_host_name(name: &[u8]) -> Result<Option<String>, ClientHelloError> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    if is_ip_literal(name) {
        return Ok(None);
    }
    if !is_dns_name(name) {
        return Err(ClientHelloError::Malformed("server name is not a DNS name"));
    }
    // `is_dns_name` admits ASCII only, so byte -> char is exact.
    Ok(Some(
        name.iter()
            .map(|&b| char::from(b.to_ascii_lowercase()))
            .collect(),
    ))
}

fn is_ip_literal(name: &[u8]) -> bool {
    std::str::from_utf8(name).is_ok_and(|s| s.parse::<IpAddr>().is_ok())
}

/// Syntax check for a DNS name. Deliberately a little looser than RFC 1123
/// (allows `_` and labels that start or end with `-`, which real names
/// use); the point is only that it can be compared against configured
/// routes.
fn is_dns_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_DNS_NAME_LEN
        && name.split(|&b| b == b'.').all(is_dns_label)
}

fn is_dns_label(label: &[u8]) -> bool {
    (1..=MAX_DNS_LABEL_LEN).contains(&label.len())
        && label
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Parses the ALPN extension (RFC 7301 §3.1).
fn parse_alpn(mut data: Reader<'_>) -> Result<Vec<Vec<u8>>, ClientHelloError> {
    let mut list = data
        .u16_prefixed()
        .ok_or(ClientHelloError::Malformed("ALPN list length"))?;
    if !data.is_empty() {
        return Err(ClientHelloError::Malformed(
            "trailing bytes after ALPN list",
        ));
    }
    if list.is_empty() {
        return Err(ClientHelloError::Malformed("empty ALPN list"));
    }
    let mut protocols = Vec::new();
    while !list.is_empty() {
        let protocol = list
            .u8_prefixed()
            .ok_or(ClientHelloError::Malformed("ALPN protocol length"))?
            .rest();
        if protocol.is_empty() {
            return Err(ClientHelloError::Malformed("empty ALPN protocol name"));
        }
        protocols.push(protocol.to_vec());
    }
    Ok(protocols)
}

/// A cursor over a byte slice whose reads are all checked: each returns
/// `None`, without consuming anything, if the bytes are not there.
#[derive(Debug, Clone)]
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// How many bytes have been consumed.
    fn position(&self) -> usize {
        self.pos
    }

    fn is_empty(&self) -> bool {
        self.rest().is_empty()
    }

    /// The unconsumed bytes.
    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// Consumes the next `n` bytes.
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let bytes = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    /// Consumes the next `n` bytes as a reader of their own, so a
    /// length-prefixed structure cannot read past its declared end.
    fn sub(&mut self, n: usize) -> Option<Reader<'a>> {
        self.take(n).map(Reader::new)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn u16(&mut self) -> Option<u16> {
        let bytes = self.take(2)?;
        Some(u16::from_be_bytes(bytes.try_into().ok()?))
    }

    fn u24(&mut self) -> Option<usize> {
        match *self.take(3)? {
            [a, b, c] => Some(usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c)),
            _ => None,
        }
    }

    /// Consumes a vector with a 1-byte length prefix (TLS `opaque x<..2^8-1>`).
    fn u8_prefixed(&mut self) -> Option<Reader<'a>> {
        self.prefixed(Self::u8)
    }

    /// Consumes a vector with a 2-byte length prefix (TLS `opaque x<..2^16-1>`).
    fn u16_prefixed(&mut self) -> Option<Reader<'a>> {
        self.prefixed(Self::u16)
    }

    /// Reads a length with `read_len`, then that many bytes; on failure
    /// the reader is left where it was.
    fn prefixed<L: Into<usize>>(
        &mut self,
        read_len: fn(&mut Self) -> Option<L>,
    ) -> Option<Reader<'a>> {
        let mut probe = self.clone();
        let len = read_len(&mut probe)?.into();
        let body = probe.sub(len)?;
        *self = probe;
        Some(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello from rustls 0.23 (ring provider, TLS 1.2 + 1.3) for
    /// "api.example.com" with ALPN h2 and http/1.1, in one record.
    const RUSTLS_HELLO_HEX: &str = concat!(
        "16030100ff010000fb03034d4589cc50480418bd5c8524e116f50af1a0350daa",
        "76a8b21eb59660e34ef9ff2037fcebad62447dc4374417072bccde5db9522a89",
        "92e967c29e307dab743a07440014130213011303c02cc02bcca9c030c02fcca8",
        "00ff0100009e000b00020100000a00080006001d001700180000001400120000",
        "0f6170692e6578616d706c652e636f6d00170000002b00050403040303001000",
        "0e000c02683208687474702f312e3100230000003300260024001d0020d61f25",
        "c49993b5effc4bb8c0099e4663553de06ade5df0a5fa03b74a3408d473000d00",
        "140012050304030807080608050804060105010401002d000201010005000501",
        "00000000",
    );

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    fn rustls_hello() -> Vec<u8> {
        unhex(RUSTLS_HELLO_HEX)
    }

    /// The handshake message inside a single-record ClientHello.
    fn handshake_message(records: &[u8]) -> Vec<u8> {
        records[RECORD_HEADER_LEN..].to_vec()
    }

    /// Frames a handshake message into TLS records of at most `chunk` bytes.
    fn into_records(message: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for fragment in message.chunks(chunk) {
            out.extend_from_slice(&[CONTENT_TYPE_HANDSHAKE, 3, 1]);
            out.extend_from_slice(&u16::try_from(fragment.len()).unwrap().to_be_bytes());
            out.extend_from_slice(fragment);
        }
        out
    }

    fn u16_prefixed(body: &[u8]) -> Vec<u8> {
        let mut out = u16::try_from(body.len()).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    fn sni_extension(host: &[u8]) -> (u16, Vec<u8>) {
        let mut entry = vec![SERVER_NAME_TYPE_HOST_NAME];
        entry.extend(u16_prefixed(host));
        (EXT_SERVER_NAME, u16_prefixed(&entry))
    }

    /// Builds a one-record ClientHello with the given extensions (`None`:
    /// no extensions block at all).
    fn synthetic_hello(extensions: Option<&[(u16, Vec<u8>)]>) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0x42; 32]); // random
        body.push(0); // empty session id
        body.extend(u16_prefixed(&[0x13, 0x01])); // TLS_AES_128_GCM_SHA256
        body.extend_from_slice(&[1, 0]); // compression: null
        if let Some(extensions) = extensions {
            let mut block = Vec::new();
            for (ext_type, data) in extensions {
                block.extend_from_slice(&ext_type.to_be_bytes());
                block.extend(u16_prefixed(data));
            }
            body.extend(u16_prefixed(&block));
        }
        let mut message = vec![HANDSHAKE_TYPE_CLIENT_HELLO];
        message.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
        message.extend(body);
        into_records(&message, MAX_RECORD_FRAGMENT)
    }

    fn expect_api_example_com(result: Result<Option<ClientHello>, ClientHelloError>) {
        assert_eq!(
            result,
            Ok(Some(ClientHello {
                server_name: Some("api.example.com".into()),
                alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            }))
        );
    }

    #[test]
    fn parses_real_rustls_hello() {
        expect_api_example_com(parse_client_hello(&rustls_hello()));
    }

    #[test]
    fn ignores_bytes_after_the_hello() {
        let mut buf = rustls_hello();
        buf.extend_from_slice(b"\x17\x03\x03\x00\x05early");
        expect_api_example_com(parse_client_hello(&buf));
    }

    #[test]
    fn every_truncation_asks_for_more() {
        let hello = rustls_hello();
        for len in 0..hello.len() {
            assert_eq!(parse_client_hello(&hello[..len]), Ok(None), "len {len}");
        }
    }

    #[test]
    fn split_across_two_records_at_every_point() {
        let message = handshake_message(&rustls_hello());
        for split in 1..message.len() {
            let (first, second) = message.split_at(split);
            let mut buf = into_records(first, MAX_RECORD_FRAGMENT);
            buf.extend(into_records(second, MAX_RECORD_FRAGMENT));
            expect_api_example_com(parse_client_hello(&buf));
        }
    }

    #[test]
    fn one_byte_records_and_their_truncations() {
        let buf = into_records(&handshake_message(&rustls_hello()), 1);
        expect_api_example_com(parse_client_hello(&buf));
        for len in 0..buf.len() {
            assert_eq!(parse_client_hello(&buf[..len]), Ok(None), "len {len}");
        }
    }

    #[test]
    fn no_extensions_at_all() {
        let hello = parse_client_hello(&synthetic_hello(None)).unwrap().unwrap();
        assert_eq!(hello.server_name, None);
        assert!(hello.alpn.is_empty());
    }

    #[test]
    fn extensions_without_sni() {
        let alpn = (EXT_ALPN, u16_prefixed(b"\x02h2"));
        let buf = synthetic_hello(Some(&[(0x000b, vec![1, 0]), alpn]));
        let hello = parse_client_hello(&buf).unwrap().unwrap();
        assert_eq!(hello.server_name, None);
        assert_eq!(hello.alpn, vec![b"h2".to_vec()]);
    }

    #[test]
    fn host_name_is_lowercased_and_loses_trailing_dot() {
        let buf = synthetic_hello(Some(&[sni_extension(b"Api.Example.COM.")]));
        let hello = parse_client_hello(&buf).unwrap().unwrap();
        assert_eq!(hello.server_name.as_deref(), Some("api.example.com"));
    }

    #[test]
    fn ip_literal_counts_as_no_sni() {
        for ip in [&b"192.0.2.1"[..], b"2001:db8::1"] {
            let buf = synthetic_hello(Some(&[sni_extension(ip)]));
            assert_eq!(parse_client_hello(&buf).unwrap().unwrap().server_name, None);
        }
    }

    #[test]
    fn bad_host_names_are_malformed() {
        let long_label = [b'a'; 64];
        let long_name = [b'a'; 254];
        for host in [
            &b""[..],
            b"*.example.com",
            b"exa mple.com",
            b"a..b",
            b".example.com",
            b"example.com..",
            b"caf\xc3\xa9.example",
            &long_label,
            &long_name,
        ] {
            let buf = synthetic_hello(Some(&[sni_extension(host)]));
            assert!(
                matches!(
                    parse_client_hello(&buf),
                    Err(ClientHelloError::Malformed(_))
                ),
                "{host:?}"
            );
        }
    }

    #[test]
    fn duplicate_sni_is_malformed() {
        let buf = synthetic_hello(Some(&[sni_extension(b"a.test"), sni_extension(b"b.test")]));
        assert_eq!(
            parse_client_hello(&buf),
            Err(ClientHelloError::Malformed(
                "duplicate server_name extension"
            ))
        );
    }

    #[test]
    fn garbage_is_not_tls() {
        for buf in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"G",
            b"\x16\x02",
            b"\x16\x03\x05",
            b"\x80\x2e\x01\x03\x01", // SSLv2-style ClientHello
            b"\x17\x03\x03\x00\x01x",
        ] {
            assert_eq!(
                parse_client_hello(buf),
                Err(ClientHelloError::NotTls),
                "{buf:?}"
            );
        }
    }

    #[test]
    fn other_handshake_message_is_not_client_hello() {
        // A ServerHello header (type 2).
        let buf = b"\x16\x03\x03\x00\x04\x02\x00\x00\x46";
        assert_eq!(
            parse_client_hello(buf),
            Err(ClientHelloError::NotClientHello)
        );
    }

    #[test]
    fn interleaved_non_handshake_record_is_malformed() {
        let message = handshake_message(&rustls_hello());
        let mut buf = into_records(&message[..10], MAX_RECORD_FRAGMENT);
        buf.extend_from_slice(b"\x15\x03\x03\x00\x02\x01\x00"); // alert
        assert!(matches!(
            parse_client_hello(&buf),
            Err(ClientHelloError::Malformed(_))
        ));
    }

    #[test]
    fn declared_length_over_limit_is_too_large() {
        // Handshake header claims a 20000-byte ClientHello.
        let buf = b"\x16\x03\x01\x00\x04\x01\x00\x4e\x20";
        assert_eq!(parse_client_hello(buf), Err(ClientHelloError::TooLarge));
    }

    #[test]
    fn record_overhead_counts_toward_limit() {
        // A message that fits under the limit, but not once framed into
        // one-byte records (6 bytes on the wire per message byte).
        let mut message = vec![HANDSHAKE_TYPE_CLIENT_HELLO, 0x00, 0x20, 0x00];
        message.resize(HANDSHAKE_HEADER_LEN + 0x2000, 0);
        let buf = into_records(&message, 1);
        assert_eq!(parse_client_hello(&buf), Err(ClientHelloError::TooLarge));
        // Records are 6 bytes here. The parser gives up as soon as the
        // next record could not end within the cap, not only once the caller
        // has buffered that much: so the read loop never waits in vain.
        let record = RECORD_HEADER_LEN + 1;
        let fitting = MAX_CLIENT_HELLO / record * record;
        assert_eq!(parse_client_hello(&buf[..fitting - 1]), Ok(None));
        assert_eq!(
            parse_client_hello(&buf[..fitting]),
            Err(ClientHelloError::TooLarge)
        );
    }

    #[test]
    fn hello_filling_the_limit_exactly_is_accepted() {
        // Two records whose headers plus the message fill the cap exactly;
        // an unknown extension pads the message to size.
        let wanted = MAX_CLIENT_HELLO - 2 * RECORD_HEADER_LEN;
        let message_with_padding = |padding: usize| {
            let extensions = [sni_extension(b"a.test"), (0xfe00, vec![0; padding])];
            handshake_message(&synthetic_hello(Some(&extensions)))
        };
        let padding = wanted - message_with_padding(0).len();

        let message = message_with_padding(padding);
        let buf = into_records(&message, message.len() / 2 + 1);
        assert_eq!(buf.len(), MAX_CLIENT_HELLO);
        let hello = parse_client_hello(&buf).unwrap().unwrap();
        assert_eq!(hello.server_name.as_deref(), Some("a.test"));

        // One byte more and it no longer fits.
        let message = message_with_padding(padding + 1);
        let buf = into_records(&message, message.len() / 2 + 1);
        assert_eq!(parse_client_hello(&buf), Err(ClientHelloError::TooLarge));
    }

    /// A deterministic mini-fuzz: every single-byte mutation of a real
    /// hello must return, and not ask for more bytes past the limit.
    #[test]
    fn single_byte_mutations_never_panic() {
        let hello = rustls_hello();
        for i in 0..hello.len() {
            for value in [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff, hello[i] ^ 0x01] {
                let mut buf = hello.clone();
                buf[i] = value;
                let _ = parse_client_hello(&buf);
            }
        }
    }

    #[test]
    fn pseudo_random_input_never_panics() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            // xorshift64: cheap, deterministic, std-only.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let len = (next() % 600) as usize;
            // Start most inputs with a plausible record header so the
            // bytes reach the deeper parsing code.
            let mut buf = b"\x16\x03\x01".to_vec();
            buf.extend((0..len).map(|_| next() as u8));
            let _ = parse_client_hello(&buf);
        }
    }
}
