//! Raw HTTP/1 attack cases, shared by `tests/hostile.rs` (against corral in-process) and
//! `examples/hostile.rs` (against any proxy on a port): exact client bytes, an instrumented
//! raw backend that records every byte it receives, and the verdict logic.
//!
//! The backend is deliberately a *lenient* parser, like many application servers: it trims
//! spaces around header names, treats `_` as `-` (CGI/WSGI do), and prefers chunked when any
//! `Transfer-Encoding` names it. Anything a proxy forwards that such a backend reads
//! differently shows up as a request for `/smuggled` or a wrong answer to the victim.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The request hidden in attack bodies; it must never reach a backend.
pub const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n";
const VICTIM: &[u8] = b"GET /victim HTTP/1.1\r\nHost: h\r\n\r\n";

/// How the backend answers the next request it parses (a queue, consumed per request, so
/// it applies whichever pooled connection the proxy uses).
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with the request path as the body.
    Echo,
    /// Writes these bytes, then keeps the connection open (answering later requests).
    Raw(&'static [u8]),
    /// Writes these bytes and closes.
    RawClose(&'static [u8]),
    /// Writes these bytes and resets the connection (RST, no FIN).
    RawReset(&'static [u8]),
}

/// A scripted reply built at run time, for [`Reply::Raw`] and friends.
pub fn leak(bytes: Vec<u8>) -> &'static [u8] {
    Box::leak(bytes.into_boxed_slice())
}

/// One complete request as the backend parsed it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub conn: usize,
    pub head: String,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn target(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }
}

#[derive(Default)]
struct State {
    script: Vec<Reply>,
    conns: usize,
    raw: HashMap<usize, Vec<u8>>,
    requests: Vec<Seen>,
    /// Byte streams the backend could not parse as HTTP/1.1.
    invalid: usize,
}

#[derive(Clone)]
pub struct RawBackend {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl RawBackend {
    /// Listens on 127.0.0.1:`port` (0: any free port).
    pub async fn start(port: u16) -> std::io::Result<RawBackend> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let conn = {
                    let mut s = st.lock();
                    s.conns += 1;
                    s.conns
                };
                tokio::spawn(serve(stream, conn, st.clone()));
            }
        });
        Ok(RawBackend { port, state })
    }

    /// Forgets what was seen and queues `script` for the next requests.
    pub fn reset(&self, script: Vec<Reply>) {
        let mut s = self.state.lock();
        s.script = script;
        s.script.reverse();
        s.raw.clear();
        s.requests.clear();
        s.invalid = 0;
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.state.lock().requests.clone()
    }

    /// Every byte received since the last reset, connection by connection.
    pub fn raw(&self) -> String {
        let s = self.state.lock();
        let mut conns: Vec<_> = s.raw.iter().collect();
        conns.sort_by_key(|(c, _)| **c);
        conns
            .iter()
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .collect::<Vec<_>>()
            .join("\n--\n")
    }

    /// Connections accepted since the start (not cleared by [`RawBackend::reset`]).
    pub fn conns(&self) -> usize {
        self.state.lock().conns
    }

    pub fn invalid(&self) -> usize {
        self.state.lock().invalid
    }
}

async fn serve(mut stream: TcpStream, conn: usize, state: Arc<Mutex<State>>) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        loop {
            match parse_request(&buf) {
                Parsed::Partial => break,
                Parsed::Invalid => {
                    state.lock().invalid += 1;
                    return;
                }
                Parsed::Complete { len, head, body } => {
                    buf.drain(..len);
                    let seen = Seen { conn, head, body };
                    let path = seen.target().to_string();
                    let reply = {
                        let mut s = state.lock();
                        s.requests.push(seen);
                        s.script.pop().unwrap_or(Reply::Echo)
                    };
                    let ok = match reply {
                        Reply::Echo => {
                            let resp = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Conn: {conn}\r\n\r\n{path}",
                                path.len()
                            );
                            stream.write_all(resp.as_bytes()).await.is_ok()
                        }
                        Reply::Raw(bytes) => stream.write_all(bytes).await.is_ok(),
                        Reply::RawClose(bytes) => {
                            let _ = stream.write_all(bytes).await;
                            let _ = stream.shutdown().await;
                            false
                        }
                        Reply::RawReset(bytes) => {
                            let _ = stream.write_all(bytes).await;
                            // Linger 0 turns the close into an RST, which is the point here.
                            #[allow(deprecated)]
                            let _ = stream.set_linger(Some(Duration::ZERO));
                            false
                        }
                    };
                    if !ok {
                        return;
                    }
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                buf.extend_from_slice(&chunk[..n]);
                state
                    .lock()
                    .raw
                    .entry(conn)
                    .or_default()
                    .extend_from_slice(&chunk[..n]);
            }
            _ => return,
        }
    }
}

enum Parsed {
    Complete {
        len: usize,
        head: String,
        body: Vec<u8>,
    },
    Partial,
    Invalid,
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// A lenient backend parser (see the module doc).
fn parse_request(buf: &[u8]) -> Parsed {
    let Some(end) = find(buf, b"\r\n\r\n", 0) else {
        return if buf.len() > 1 << 20 {
            Parsed::Invalid
        } else {
            Parsed::Partial
        };
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    if request_line.split(' ').count() != 3 {
        return Parsed::Invalid;
    }
    let (mut cl, mut chunked) = (None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Parsed::Invalid;
        };
        let name = name.trim().to_ascii_lowercase().replace('_', "-");
        let value = value.trim();
        if name == "transfer-encoding" {
            chunked |= value.to_ascii_lowercase().contains("chunked");
        } else if name == "content-length" {
            match value.parse::<usize>() {
                Ok(n) => cl = Some(n),
                Err(_) => return Parsed::Invalid,
            }
        }
    }
    let start = end + 4;
    if chunked {
        let mut pos = start;
        let mut body = Vec::new();
        loop {
            let Some(eol) = find(buf, b"\r\n", pos) else {
                return Parsed::Partial;
            };
            let line = String::from_utf8_lossy(&buf[pos..eol]);
            let size = line.split(';').next().unwrap_or("").trim();
            let Ok(size) = usize::from_str_radix(size, 16) else {
                return Parsed::Invalid;
            };
            pos = eol + 2;
            if size == 0 {
                // Trailer section up to the empty line.
                loop {
                    let Some(eol) = find(buf, b"\r\n", pos) else {
                        return Parsed::Partial;
                    };
                    let empty = eol == pos;
                    pos = eol + 2;
                    if empty {
                        return Parsed::Complete {
                            len: pos,
                            head,
                            body,
                        };
                    }
                }
            }
            let Some(end) = pos.checked_add(size).and_then(|e| e.checked_add(2)) else {
                return Parsed::Invalid;
            };
            if buf.len() < end {
                return Parsed::Partial;
            }
            body.extend_from_slice(&buf[pos..pos + size]);
            pos = end;
        }
    }
    let Some(end) = start.checked_add(cl.unwrap_or(0)) else {
        return Parsed::Invalid;
    };
    if buf.len() < end {
        return Parsed::Partial;
    }
    Parsed::Complete {
        len: end,
        head,
        body: buf[start..end].to_vec(),
    }
}

/// One response as the client parsed it.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
    /// The trailer section of a chunked body (each field ending in CRLF; empty if none).
    pub trailers: String,
}

impl Response {
    /// The values of header `name` (case-insensitive), trimmed, in order.
    pub fn headers(&self, name: &str) -> Vec<String> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
            .collect()
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers(name).into_iter().next()
    }
}

/// What a client got for its bytes.
#[derive(Clone, Debug, Default)]
pub struct Got {
    pub responses: Vec<Response>,
    /// The proxy closed (or reset) the connection.
    pub closed: bool,
    /// Bytes after the last complete response (a truncated or unparseable answer).
    pub rest: String,
    pub elapsed: Duration,
}

impl Got {
    pub fn statuses(&self) -> Vec<u16> {
        self.responses.iter().map(|r| r.status).collect()
    }
}

/// Sends `bytes` on a fresh connection and reads answers until the connection closes,
/// `want` responses have arrived (plus a short grace for a close), or `timeout` passes.
pub async fn exchange(port: u16, bytes: &[u8], want: usize, timeout: Duration) -> Got {
    let start = Instant::now();
    let mut got = Got::default();
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        got.closed = true;
        return got;
    };
    if stream.write_all(bytes).await.is_err() {
        got.closed = true;
    }
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = start + timeout;
    while !got.closed {
        let grace = got.responses.len() >= want.max(1);
        let until = if grace {
            deadline.min(Instant::now() + Duration::from_millis(150))
        } else {
            deadline
        };
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => got.closed = true,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
        while let Some((len, resp)) = parse_response(&buf, got.closed) {
            buf.drain(..len);
            got.responses.push(resp);
        }
    }
    got.rest = String::from_utf8_lossy(&buf).into_owned();
    got.elapsed = start.elapsed();
    got
}

fn parse_response(buf: &[u8], eof: bool) -> Option<(usize, Response)> {
    parse_response_to(buf, eof, false)
}

/// One response at the start of `buf`, and its length; `eof`: nothing more will come (a
/// body without framing ends here); `head_request`: it answers a HEAD, so it has no body
/// whatever its headers say.
pub fn parse_response_to(buf: &[u8], eof: bool, head_request: bool) -> Option<(usize, Response)> {
    let end = find(buf, b"\r\n\r\n", 0)?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head.split(' ').nth(1)?.parse::<u16>().ok()?;
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_ascii_lowercase())
        })
    };
    let start = end + 4;
    let mut trailers = String::new();
    let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let (len, body) = if no_body {
        (start, Vec::new())
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut pos = start;
        let mut body = Vec::new();
        loop {
            let eol = find(buf, b"\r\n", pos)?;
            let line = String::from_utf8_lossy(&buf[pos..eol]);
            let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
            pos = eol + 2;
            if size == 0 {
                let end = find(buf, b"\r\n\r\n", pos - 2)?;
                trailers = String::from_utf8_lossy(&buf[pos..end + 2]).into_owned();
                break (end + 4, body);
            }
            let end = pos.checked_add(size)?.checked_add(2)?;
            if buf.len() < end {
                return None;
            }
            body.extend_from_slice(&buf[pos..pos + size]);
            pos = end;
        }
    } else if let Some(n) = header("content-length") {
        let n = n.parse::<usize>().ok()?;
        let end = start.checked_add(n)?;
        if buf.len() < end {
            return None;
        }
        (end, buf[start..end].to_vec())
    } else if eof {
        (buf.len(), buf[start..].to_vec())
    } else {
        return None;
    };
    Some((
        len,
        Response {
            status,
            head,
            body: String::from_utf8_lossy(&body).into_owned(),
            trailers,
        },
    ))
}

/// A keep-alive client connection in raw bytes: requests written as given, responses read
/// one at a time.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl Conn {
    pub async fn connect(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next response (`head_request`: to a HEAD, so without a body); `None` if the
    /// connection ended or `timeout` passed before a complete one arrived.
    pub async fn response(&mut self, head_request: bool, timeout: Duration) -> Option<Response> {
        let deadline = Instant::now() + timeout;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some((len, resp)) = parse_response_to(&self.buf, self.eof, head_request) {
                self.buf.drain(..len);
                return Some(resp);
            }
            if self.eof {
                return None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => self.eof = true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return None,
            }
        }
    }

    /// Reads for `timeout`, or until the connection ends: whether it ended (closed or reset).
    /// Bytes that arrive meanwhile are kept in [`Conn::rest`].
    pub async fn ends_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut chunk = vec![0u8; 64 * 1024];
        while !self.eof {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => self.eof = true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return false,
            }
        }
        true
    }

    /// Bytes received and not yet parsed as a response.
    pub fn rest(&self) -> &[u8] {
        &self.buf
    }
}

/// What a case must produce at corral.
#[derive(Clone, Debug)]
pub struct Want {
    /// The statuses the client must get, in order (empty: none, the connection just closes).
    pub statuses: Vec<u16>,
    /// Complete requests the backend must parse.
    pub upstream: usize,
    /// Whether the client connection must be closed at the end.
    pub closed: bool,
}

pub fn reject(status: u16) -> Want {
    Want {
        statuses: vec![status],
        upstream: 0,
        closed: true,
    }
}

pub fn forward() -> Want {
    Want {
        statuses: vec![200],
        upstream: 1,
        closed: false,
    }
}

pub fn forward_then_close() -> Want {
    Want {
        statuses: vec![200],
        upstream: 1,
        closed: true,
    }
}

pub struct Case {
    pub class: &'static str,
    pub name: &'static str,
    pub bytes: Vec<u8>,
    pub want: Want,
    /// Substrings that must not appear in what the backend received (case-sensitive).
    pub forbid: Vec<&'static str>,
    /// Substrings that must appear in what the backend received.
    pub require: Vec<&'static str>,
    /// How the backend answers (upstream-side cases).
    pub script: Vec<Reply>,
    /// The first attacked upstream connection must not carry the victim.
    pub fresh_upstream: bool,
}

/// What happened, judged without reference to corral's expectations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The client got a 4xx/5xx (or a close) and nothing complete reached the backend.
    Rejected,
    /// Forwarded, normalised: nothing forbidden reached the backend.
    Forwarded,
    /// A forbidden header, value or framing reached the backend.
    Unsafe,
    /// A smuggled request reached the backend or the victim got someone else's answer.
    Desync,
    /// The proxy neither answered nor closed in time.
    Hang,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Rejected => "rejected",
            Verdict::Forwarded => "forwarded",
            Verdict::Unsafe => "forwarded-unsafe",
            Verdict::Desync => "DESYNC",
            Verdict::Hang => "hang",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub got: Got,
    pub upstream: Vec<Seen>,
    pub upstream_raw: String,
    pub backend_invalid: usize,
    pub victim: Got,
    pub victim_conn: Option<usize>,
    pub verdict: Verdict,
}

pub async fn run(case: &Case, port: u16, backend: &RawBackend, timeout: Duration) -> Outcome {
    backend.reset(case.script.clone());
    let want = case.want.statuses.len().max(1);
    let got = exchange(port, &case.bytes, want, timeout).await;
    // Let a proxy that forwards late (or a backend that reads late) show its hand.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let upstream = backend.requests();
    let upstream_raw = backend.raw();
    let backend_invalid = backend.invalid();
    backend.reset(Vec::new());
    let victim = exchange(port, VICTIM, 1, timeout).await;
    let victim_conn = backend.requests().first().map(|s| s.conn);
    let victim_seen = backend.requests();

    let smuggled = upstream
        .iter()
        .chain(&victim_seen)
        .any(|s| s.target().contains("smuggled"));
    let victim_ok = victim.statuses() == [200]
        && victim.responses[0].body == "/victim"
        && victim_seen.len() == 1;
    let reused = case.fresh_upstream
        && upstream
            .first()
            .is_some_and(|first| Some(first.conn) == victim_conn);
    let forbidden = case.forbid.iter().any(|f| upstream_raw.contains(f)) || backend_invalid > 0;
    let verdict = if smuggled || !victim_ok || reused {
        Verdict::Desync
    } else if forbidden {
        Verdict::Unsafe
    } else if got.responses.is_empty() && !got.closed {
        Verdict::Hang
    } else if upstream.is_empty() && !matches!(got.responses.first(), Some(r) if r.status < 400) {
        Verdict::Rejected
    } else {
        Verdict::Forwarded
    };
    Outcome {
        got,
        upstream,
        upstream_raw,
        backend_invalid,
        victim,
        victim_conn,
        verdict,
    }
}

impl Outcome {
    /// The table cell: the verdict, or for upstream-side cases what the client got.
    pub fn cell(&self, case: &Case) -> String {
        let bad = matches!(
            self.verdict,
            Verdict::Desync | Verdict::Unsafe | Verdict::Hang
        );
        if bad || case.script.is_empty() {
            return self.verdict.label().to_string();
        }
        let mut cell: Vec<String> = self.got.statuses().iter().map(u16::to_string).collect();
        if self.got.closed {
            cell.push(
                if self.got.rest.is_empty() {
                    "closed"
                } else {
                    "truncated+closed"
                }
                .into(),
            );
        }
        cell.join(", ")
    }
}

/// Whether corral did exactly what the case wants; the reason if not.
pub fn check(case: &Case, out: &Outcome) -> Result<(), String> {
    if matches!(
        out.verdict,
        Verdict::Desync | Verdict::Unsafe | Verdict::Hang
    ) {
        return Err(format!("verdict {}", out.verdict.label()));
    }
    if out.got.statuses() != case.want.statuses {
        return Err(format!(
            "statuses {:?}, want {:?}",
            out.got.statuses(),
            case.want.statuses
        ));
    }
    if out.got.closed != case.want.closed {
        return Err(format!(
            "client connection closed: {}, want {}",
            out.got.closed, case.want.closed
        ));
    }
    if out.upstream.len() != case.want.upstream {
        return Err(format!(
            "backend parsed {} requests, want {}",
            out.upstream.len(),
            case.want.upstream
        ));
    }
    if let Some(r) = case.require.iter().find(|r| !out.upstream_raw.contains(*r)) {
        return Err(format!("backend did not receive {r:?}"));
    }
    Ok(())
}

fn req(head: &str, body: &str) -> Vec<u8> {
    let mut v = head.as_bytes().to_vec();
    v.extend_from_slice(body.as_bytes());
    v
}

fn bytes(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A POST with `headers` (each ending in CRLF) and `body`.
fn post(headers: &str, body: &str) -> Vec<u8> {
    req(
        &format!("POST / HTTP/1.1\r\nHost: h\r\n{headers}\r\n"),
        body,
    )
}

/// A chunked body that ends, followed by the smuggled request.
fn chunked_then_smuggled() -> String {
    format!("0\r\n\r\n{SMUGGLED}")
}

fn case(class: &'static str, name: &'static str, bytes: Vec<u8>, want: Want) -> Case {
    Case {
        class,
        name,
        bytes,
        want,
        forbid: Vec::new(),
        require: Vec::new(),
        script: Vec::new(),
        fresh_upstream: false,
    }
}

impl Case {
    fn forbid(mut self, f: &[&'static str]) -> Case {
        self.forbid.extend_from_slice(f);
        self
    }
    fn require(mut self, r: &[&'static str]) -> Case {
        self.require.extend_from_slice(r);
        self
    }
    fn script(mut self, s: Vec<Reply>) -> Case {
        self.script = s;
        self.fresh_upstream = true;
        self
    }
}

/// Every case. Request bodies that a misreading proxy would parse as a second request
/// carry [`SMUGGLED`].
pub fn cases() -> Vec<Case> {
    let sm = SMUGGLED;
    let smuggled_len = sm.len().to_string();
    let big_cl = |v: &str| post(&format!("Content-Length: {v}\r\n"), sm);
    let mut c = vec![
        // ---- framing
        case(
            "framing",
            "CL + TE (CL first): chunked wins, connection closed",
            post(
                &format!(
                    "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                    chunked_then_smuggled().len()
                ),
                &chunked_then_smuggled(),
            ),
            forward_then_close(),
        )
        .forbid(&["content-length", "Content-Length"])
        .require(&["transfer-encoding: chunked"]),
        case(
            "framing",
            "TE + CL (TE first): chunked wins, connection closed",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
                &chunked_then_smuggled(),
            ),
            forward_then_close(),
        )
        .forbid(&["content-length", "Content-Length"]),
        case(
            "framing",
            "TE: chunked, gzip (chunked not final)",
            post(
                "Transfer-Encoding: chunked, gzip\r\n",
                &chunked_then_smuggled(),
            ),
            reject(400),
        ),
        case(
            "framing",
            "TE: gzip, chunked (coding corral cannot pass on)",
            post(
                "Transfer-Encoding: gzip, chunked\r\n",
                &chunked_then_smuggled(),
            ),
            reject(400),
        )
        .forbid(&["gzip"]),
        case(
            "framing",
            "TE: CHUNKED (case) forwarded as canonical chunked",
            post("Transfer-Encoding: CHUNKED\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            forward(),
        )
        .forbid(&["CHUNKED"])
        .require(&["hello"]),
        case(
            "framing",
            "Transfer-Encoding : chunked (space before colon)",
            post(
                &format!("Transfer-Encoding : chunked\r\nContent-Length: {smuggled_len}\r\n"),
                sm,
            ),
            reject(400),
        ),
        case(
            "framing",
            "TE in HTTP/1.0",
            req(
                "POST / HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
                &chunked_then_smuggled(),
            ),
            reject(400),
        ),
        case(
            "framing",
            "TE: identity",
            post(
                &format!("Transfer-Encoding: identity\r\nContent-Length: {smuggled_len}\r\n"),
                sm,
            ),
            reject(400),
        ),
        case(
            "framing",
            "TE: chunked twice on two lines",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                &chunked_then_smuggled(),
            ),
            reject(400),
        ),
        case(
            "framing",
            "TE: identity then chunked on two lines",
            post(
                "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n",
                &chunked_then_smuggled(),
            ),
            reject(400),
        ),
        case(
            "framing",
            "TE: xchunked",
            post(
                &format!("Transfer-Encoding: xchunked\r\nContent-Length: {smuggled_len}\r\n"),
                sm,
            ),
            reject(400),
        ),
        case(
            "framing",
            "TE: empty value",
            post(
                &format!("Transfer-Encoding: \r\nContent-Length: {smuggled_len}\r\n"),
                sm,
            ),
            reject(400),
        ),
        case(
            "framing",
            "TE with a vertical tab before chunked",
            post(
                &format!("Transfer-Encoding:\x0bchunked\r\nContent-Length: {smuggled_len}\r\n"),
                sm,
            ),
            reject(400),
        ),
        case(
            "framing",
            "TE with a tab before chunked (valid OWS)",
            post("Transfer-Encoding:\tchunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            forward(),
        )
        .require(&["hello"]),
        case(
            "framing",
            "two different Content-Length lines",
            post("Content-Length: 0\r\nContent-Length: 36\r\n", sm),
            reject(400),
        ),
        case(
            "framing",
            "two equal Content-Length lines: one forwarded",
            post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            forward(),
        )
        .require(&["content-length: 5\r\n"]),
        case(
            "framing",
            "Content-Length list 36, 0",
            post(&format!("Content-Length: {smuggled_len}, 0\r\n"), sm),
            reject(400),
        ),
        case(
            "framing",
            "Content-Length list 5, 5",
            post("Content-Length: 5, 5\r\n", "hello"),
            reject(400),
        ),
        case("framing", "Content-Length: -1", big_cl("-1"), reject(400)),
        case("framing", "Content-Length: +36", big_cl("+36"), reject(400)),
        case(
            "framing",
            "Content-Length: 2^64 (wraps to 0 in a u64)",
            big_cl("18446744073709551616"),
            reject(400),
        ),
        case(
            "framing",
            "Content-Length: u64::MAX (hyper: too large, 431)",
            big_cl("18446744073709551615"),
            reject(431),
        ),
        case(
            "framing",
            "Content-Length: 30 digits",
            big_cl("999999999999999999999999999999"),
            reject(400),
        ),
        case("framing", "Content-Length: 0x24", big_cl("0x24"), reject(400)),
        case("framing", "Content-Length: 3 6", big_cl("3 6"), reject(400)),
        case("framing", "Content-Length: empty", big_cl(""), reject(400)),
        case(
            "framing",
            "Content-Length: 005 forwarded as 5",
            post("Content-Length: 005\r\n", "hello"),
            forward(),
        )
        // With the ": ", not a port number that happens to contain 005 (X-Forwarded-Port).
        .forbid(&[": 005"])
        .require(&["content-length: 5\r\n", "hello"]),
        case(
            "framing",
            "chunk size overflowing u64",
            post(
                "Transfer-Encoding: chunked\r\n",
                "10000000000000005\r\nhello\r\n0\r\n\r\n",
            ),
            reject(400),
        ),
        case(
            "framing",
            "chunk size negative",
            post("Transfer-Encoding: chunked\r\n", "-5\r\nhello\r\n0\r\n\r\n"),
            reject(400),
        ),
        case(
            "framing",
            "chunk extension dropped on the way",
            post(
                "Transfer-Encoding: chunked\r\n",
                "5;name=value\r\nhello\r\n0\r\n\r\n",
            ),
            forward(),
        )
        .forbid(&["name=value"])
        .require(&["hello"]),
        case(
            "framing",
            "chunk extension ended by bare LF",
            post(
                "Transfer-Encoding: chunked\r\n",
                "5;ext\nhello\r\n0\r\n\r\n",
            ),
            reject(400),
        ),
        case(
            "framing",
            "chunk size line ended by bare LF",
            post("Transfer-Encoding: chunked\r\n", "5\nhello\r\n0\r\n\r\n"),
            reject(400),
        ),
        case(
            "framing",
            "chunk data ended by bare LF",
            post("Transfer-Encoding: chunked\r\n", "5\r\nhello\n0\r\n\r\n"),
            reject(400),
        ),
        case(
            "framing",
            "chunk data ended by bare CR",
            post(
                "Transfer-Encoding: chunked\r\n",
                "5\r\nhello\r0\r\n\r\n",
            ),
            reject(400),
        ),
        case(
            "framing",
            "chunk size with a leading space",
            post("Transfer-Encoding: chunked\r\n", " 5\r\nhello\r\n0\r\n\r\n"),
            reject(400),
        ),
        case(
            "framing",
            "chunk longer than its size",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("1\r\nAB\r\n0\r\n\r\n{SMUGGLED}"),
            ),
            reject(400),
        ),
        case(
            "framing",
            "head lines ended by bare LF: forwarded with CRLF",
            b"GET / HTTP/1.1\nHost: h\n\n".to_vec(),
            forward(),
        ),
        case(
            "framing",
            "bare CR inside the head",
            b"GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n".to_vec(),
            reject(400),
        ),
        // ---- header syntax
        case(
            "headers",
            "Content-Length : 36 (space before colon)",
            post(&format!("Content-Length : {smuggled_len}\r\n"), sm),
            reject(400),
        ),
        case(
            "headers",
            "header name with byte 0x85 before the colon",
            bytes(&[
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length\x85: ",
                smuggled_len.as_bytes(),
                b"\r\n\r\n",
                sm.as_bytes(),
            ]),
            reject(400),
        ),
        case(
            "headers",
            "header name X-\\x85",
            b"GET / HTTP/1.1\r\nHost: h\r\nX-\x85: 1\r\n\r\n".to_vec(),
            reject(400),
        ),
        case(
            "headers",
            "Transfer_Encoding: chunked (underscore)",
            post(
                &format!("Transfer_Encoding: chunked\r\nContent-Length: {}\r\n", 5 + sm.len()),
                &chunked_then_smuggled(),
            ),
            reject(400),
        )
        .forbid(&["ransfer_"]),
        case(
            "headers",
            "Content_Length: 36 (underscore)",
            post(&format!("Content_Length: {smuggled_len}\r\n"), sm),
            reject(400),
        )
        .forbid(&["ontent_"]),
        case(
            "headers",
            "X_Forwarded_For (underscore) spoofing the client address",
            b"GET / HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 6.6.6.6\r\n\r\n".to_vec(),
            reject(400),
        )
        .forbid(&["6.6.6.6"]),
        case(
            "headers",
            "NUL in a header value",
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n".to_vec(),
            reject(400),
        )
        .forbid(&["\0"]),
        case(
            "headers",
            "CR in a header value",
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n".to_vec(),
            reject(400),
        ),
        case(
            "headers",
            "obs-fold continuation line",
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n".to_vec(),
            reject(400),
        ),
        case(
            "headers",
            "obs-fold hiding Transfer-Encoding",
            post(
                &format!("X: a\r\n Transfer-Encoding: chunked\r\nContent-Length: {smuggled_len}\r\n"),
                sm,
            ),
            reject(400),
        ),
        case(
            "headers",
            "two Host headers",
            b"GET / HTTP/1.1\r\nHost: h\r\nHost: evil\r\n\r\n".to_vec(),
            reject(400),
        )
        .forbid(&["evil"]),
        case(
            "headers",
            "Host list h, evil",
            b"GET / HTTP/1.1\r\nHost: h, evil\r\n\r\n".to_vec(),
            reject(400),
        )
        .forbid(&["evil"]),
        case(
            "headers",
            "no Host in HTTP/1.1",
            b"GET / HTTP/1.1\r\nX: 1\r\n\r\n".to_vec(),
            reject(400),
        ),
        case(
            "headers",
            "Host with a space",
            b"GET / HTTP/1.1\r\nHost: h evil\r\n\r\n".to_vec(),
            reject(400),
        )
        .forbid(&["evil"]),
        case(
            "headers",
            "absolute-form host differs from Host",
            b"GET http://evil/x HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
            reject(400),
        )
        .forbid(&["evil"]),
        case(
            "headers",
            "absolute-form host agrees with Host: origin-form upstream",
            b"GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
            forward(),
        )
        .require(&["GET /x HTTP/1.1\r\n"]),
        case(
            "headers",
            "empty header name",
            b"GET / HTTP/1.1\r\nHost: h\r\n: x\r\n\r\n".to_vec(),
            reject(400),
        ),
        case(
            "headers",
            "header name with a slash",
            b"GET / HTTP/1.1\r\nHost: h\r\nX/Y: 1\r\n\r\n".to_vec(),
            reject(400),
        ),
        case(
            "headers",
            "header line without a colon",
            b"GET / HTTP/1.1\r\nHost: h\r\nJunk\r\n\r\n".to_vec(),
            reject(400),
        ),
        case(
            "headers",
            "two spaces in the request line",
            b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
            reject(400),
        ),
        case(
            "headers",
            "HTTP/1.2 request line",
            b"GET / HTTP/1.2\r\nHost: h\r\n\r\n".to_vec(),
            reject(400),
        ),
        case(
            "headers",
            "space inside the request target",
            b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
            reject(400),
        ),
        // ---- hop-by-hop and trailers
        case(
            "hop-by-hop",
            "headers named in Connection removed",
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\r\n"
                .to_vec(),
            forward(),
        )
        .forbid(&["X-Secret", "x-secret"]),
        case(
            "hop-by-hop",
            "fixed hop-by-hop list removed",
            b"GET / HTTP/1.1\r\nHost: h\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: gzip\r\nTrailer: X-T\r\n\r\n"
                .to_vec(),
            forward(),
        )
        .forbid(&["keep-alive", "timeout=5", "gzip", "x-t"]),
        case(
            "hop-by-hop",
            "Connection: Host does not strip Host",
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Host\r\n\r\n".to_vec(),
            forward(),
        )
        .require(&["host: h\r\n"]),
        case(
            "hop-by-hop",
            "Connection: Content-Length on a body",
            post("Connection: Content-Length\r\nContent-Length: 5\r\n", "hello"),
            forward(),
        )
        .require(&["hello"]),
        case(
            "hop-by-hop",
            "framing and routing fields in trailers dropped",
            post(
                "Transfer-Encoding: chunked\r\nTrailer: Content-Length, Host, X-T\r\n",
                // A length no port number can contain: X-Forwarded-Port carries the test's.
                "5\r\nhello\r\n0\r\nContent-Length: 987654321\r\nTransfer-Encoding: chunked\r\nHost: evil\r\nX-T: t\r\n\r\n",
            ),
            forward(),
        )
        .forbid(&["987654321", "evil", "X-T", "x-t"])
        .require(&["hello"]),
        case(
            "hop-by-hop",
            "Upgrade: h2c never forwarded",
            b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
                .to_vec(),
            forward(),
        )
        .forbid(&["h2c", "AAMAAAB", "pgrade"]),
        case(
            "hop-by-hop",
            "Upgrade: websocket on POST not passed",
            post(
                "Upgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 5\r\n",
                "hello",
            ),
            forward(),
        )
        .forbid(&["websocket", "pgrade"]),
        case(
            "hop-by-hop",
            "CONNECT refused, tunnel bytes not forwarded",
            req("CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", sm),
            reject(405),
        ),
        // ---- pipelining
        case(
            "pipelining",
            "three pipelined requests answered in order",
            b"GET /p1 HTTP/1.1\r\nHost: h\r\n\r\nGET /p2 HTTP/1.1\r\nHost: h\r\n\r\nGET /p3 HTTP/1.1\r\nHost: h\r\n\r\n"
                .to_vec(),
            Want {
                statuses: vec![200, 200, 200],
                upstream: 3,
                closed: false,
            },
        ),
        case(
            "pipelining",
            "pipelined POST bodies keep their framing",
            b"POST /p1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloPOST /p2 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                .to_vec(),
            Want {
                statuses: vec![200, 200],
                upstream: 2,
                closed: false,
            },
        ),
        case(
            "pipelining",
            "malformed request in a pipeline: earlier answered, then 400 and close",
            b"GET /p1 HTTP/1.1\r\nHost: h\r\n\r\nGET /p2 HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\nGET /p3 HTTP/1.1\r\nHost: h\r\n\r\n"
                .to_vec(),
            Want {
                statuses: vec![200, 400],
                upstream: 1,
                closed: true,
            },
        )
        .forbid(&["/p3"]),
        case(
            "pipelining",
            "bad Host in a pipeline: earlier answered, then 400 and close",
            b"GET /p1 HTTP/1.1\r\nHost: h\r\n\r\nGET /p2 HTTP/1.1\r\nHost: h\r\nHost: x\r\n\r\nGET /p3 HTTP/1.1\r\nHost: h\r\n\r\n"
                .to_vec(),
            Want {
                statuses: vec![200, 400],
                upstream: 1,
                closed: true,
            },
        )
        .forbid(&["/p3"]),
        // ---- limits
        case(
            "limits",
            "101 header fields",
            {
                let mut h = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
                for i in 0..100 {
                    h.push_str(&format!("X-{i}: v\r\n"));
                }
                req(&h, "\r\n")
            },
            reject(431),
        ),
        case(
            "limits",
            "100 header fields accepted",
            {
                let mut h = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
                for i in 0..99 {
                    h.push_str(&format!("X-{i}: v\r\n"));
                }
                req(&h, "\r\n")
            },
            forward(),
        ),
        case(
            "limits",
            "header block over 64 KiB",
            req(
                &format!(
                    "GET / HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n",
                    "a".repeat(70 * 1024)
                ),
                "",
            ),
            reject(431),
        ),
        case(
            "limits",
            "header block of 40 KiB accepted",
            req(
                &format!(
                    "GET / HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n",
                    "a".repeat(40 * 1024)
                ),
                "",
            ),
            forward(),
        ),
        case(
            "limits",
            "request target over 8 KiB",
            req(
                &format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(9 * 1024)),
                "",
            ),
            Want {
                statuses: vec![414],
                upstream: 0,
                closed: false,
            },
        ),
        // ---- upstream side
        case(
            "upstream",
            "target answers with CL and TE",
            b"GET /u HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
            Want {
                statuses: vec![502],
                upstream: 1,
                closed: false,
            },
        )
        .script(vec![Reply::Raw(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n/poisoned",
        )]),
        case(
            "upstream",
            "target sends two responses to one request",
            b"GET /u HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
            Want {
                statuses: vec![200],
                upstream: 1,
                closed: false,
            },
        )
        .script(vec![Reply::Raw(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n/uHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n/poisoned",
        )]),
        case(
            "upstream",
            "target answers 101 to a plain request",
            b"GET /u HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
            Want {
                statuses: vec![502],
                upstream: 1,
                closed: false,
            },
        )
        .script(vec![Reply::Raw(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n/poisoned",
        )]),
        case(
            "upstream",
            "target truncates its body and closes",
            b"GET /u HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
            Want {
                statuses: vec![],
                upstream: 1,
                closed: true,
            },
        )
        .script(vec![Reply::RawClose(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this much",
        )]),
        case(
            "upstream",
            "target resets before the response head",
            b"GET /u HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
            Want {
                statuses: vec![502],
                upstream: 1,
                closed: false,
            },
        )
        .script(vec![Reply::RawReset(b"")]),
        case(
            "upstream",
            "target resets inside the body",
            b"GET /u HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
            Want {
                statuses: vec![],
                upstream: 1,
                closed: true,
            },
        )
        .script(vec![Reply::RawReset(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this much",
        )]),
        case(
            "upstream",
            "target answers with an invalid Content-Length",
            b"GET /u HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
            Want {
                statuses: vec![502],
                upstream: 1,
                closed: false,
            },
        )
        .script(vec![Reply::Raw(
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n/poisoned",
        )]),
        case(
            "upstream",
            "target answers with two different Content-Lengths",
            b"GET /u HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
            Want {
                statuses: vec![502],
                upstream: 1,
                closed: false,
            },
        )
        .script(vec![Reply::Raw(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Length: 9\r\n\r\n/poisoned",
        )]),
        case(
            "upstream",
            "target answers with an obs-folded header",
            b"GET /u HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
            Want {
                statuses: vec![502],
                upstream: 1,
                closed: false,
            },
        )
        .script(vec![Reply::Raw(
            b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 2\r\n\r\n/u",
        )]),
        case(
            "upstream",
            "target answers with a space before a colon",
            b"GET /u HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
            Want {
                statuses: vec![502],
                upstream: 1,
                closed: false,
            },
        )
        .script(vec![Reply::Raw(
            b"HTTP/1.1 200 OK\r\nContent-Length : 9\r\n\r\n/poisoned",
        )]),
        case(
            "upstream",
            "target answers with NUL in a header value",
            b"GET /u HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
            Want {
                statuses: vec![502],
                upstream: 1,
                closed: false,
            },
        )
        .script(vec![Reply::Raw(
            b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 2\r\n\r\n/u",
        )]),
        case(
            "upstream",
            "target answers TE: gzip (not chunked): read to close, not reused",
            b"GET /u HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
            Want {
                statuses: vec![502],
                upstream: 1,
                closed: false,
            },
        )
        .script(vec![Reply::Raw(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n/poisoned",
        )]),
    ];
    c.sort_by_key(|c| c.class);
    c
}
