//! The target side of one exchange: the request written, the final response head read
//! (1xx skipped), and the body streamed to the client as it comes.

use std::io;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::super::log::AccessLog;
use super::super::upstream::UpstreamError;
use super::super::{Buffers, MAX_HEAD_BYTES};
use super::exchange::Outbound;
use super::response::{self, Framing, ResponseHead};
use super::{chunked, worth_parsing, ClientIo};

/// Bytes read at a time from a target for a response head, and for a body.
const TARGET_HEAD_READ: usize = 4 * 1024;
pub const TARGET_READ: usize = 16 * 1024;

/// How one request/response round on one connection failed.
pub enum Round {
    /// The connection was closed before the request could go out, or closed cleanly before
    /// any response byte: what a target's closing of an idle keep-alive connection looks
    /// like from here.
    Stale(UpstreamError),
    /// Reset before any response byte: the target may have seen the request.
    Reset(UpstreamError),
    Invalid(UpstreamError),
}

/// Sends the request on `stream` and reads the final response head, skipping 1xx ones, into
/// a buffer from `buffers`.
pub async fn round(
    stream: &mut TcpStream,
    outbound: Outbound<'_>,
    buffers: &Buffers,
) -> Result<(BytesMut, ResponseHead), Round> {
    let Outbound {
        head,
        body,
        head_request,
        fields,
    } = outbound;
    let sent = if body.is_empty() {
        stream.write_all(head).await
    } else {
        let mut whole = Vec::with_capacity(head.len() + body.len());
        whole.extend_from_slice(head);
        whole.extend_from_slice(body);
        stream.write_all(&whole).await
    };
    sent.map_err(|e| Round::Stale(UpstreamError::Io(e)))?;
    let mut buf = buffers.take();
    // Whether any response byte came (an interim response may have been consumed since).
    let mut answered = false;
    loop {
        let before = buf.len();
        loop {
            buf.reserve(TARGET_HEAD_READ);
            match stream.read_buf(&mut buf).await {
                Ok(0) if !answered => return Err(Round::Stale(UpstreamError::ClosedEarly)),
                Err(e) if !answered => return Err(Round::Reset(UpstreamError::Io(e))),
                Ok(0) => {
                    return Err(Round::Invalid(UpstreamError::InvalidResponse(
                        "closed inside the response head",
                    )))
                }
                Err(e) => return Err(Round::Invalid(UpstreamError::Io(e))),
                Ok(_) => answered = true,
            }
            if worth_parsing(&buf, before) {
                break;
            }
        }
        loop {
            match response::parse(&buf, head_request, fields) {
                Err(why) => return Err(Round::Invalid(UpstreamError::InvalidResponse(why))),
                Ok(response::Parsed::Final(head)) => {
                    buf.advance(head.len);
                    return Ok((buf, head));
                }
                Ok(response::Parsed::Interim(len)) => buf.advance(len),
                Ok(response::Parsed::Partial) if buf.len() >= MAX_HEAD_BYTES => {
                    return Err(Round::Invalid(UpstreamError::InvalidResponse(
                        "response head too large",
                    )))
                }
                Ok(response::Parsed::Partial) => break,
            }
        }
    }
}

/// A response whose head and remaining `Content-Length` body add up to at most this goes to
/// the client in one write, its body waited for (nginx's `postpone_output` does the like).
/// Targets often send a head and a small body as two segments, and passing each on as it
/// came cost the client a second segment and corral a second write (under the benchmark's
/// keep-alive load, a fifth to a third of nginx's 100-byte responses came so). A longer
/// body, a chunked or a close-delimited one (a stream of events, say) is passed on as it
/// comes.
const COALESCE_LIMIT: u64 = 16 * 1024;

/// Streams a response body from the target to the client after `out` (the head). `Ok(true)`
/// when it ended exactly where its framing said, with nothing after it.
pub async fn body<IO: ClientIo>(
    io: &mut IO,
    target: &mut TcpStream,
    buf: &mut BytesMut,
    out: Vec<u8>,
    framing: Framing,
    log: &mut AccessLog,
) -> io::Result<bool> {
    let mut end = BodyEnd::new(framing);
    // Moves from `buf` into `pending` what belongs to the body; `true` once it is complete.
    let mut take = |end: &mut BodyEnd, buf: &mut BytesMut, pending: &mut Vec<u8>| {
        let (n, done) = end.advance(buf, |_| {})?;
        pending.extend_from_slice(&buf[..n]);
        buf.advance(n);
        log.bytes_out += n as u64;
        io::Result::Ok(done)
    };
    let mut pending = out;
    let mut done = take(&mut end, buf, &mut pending)?;
    while !done {
        let short = end
            .remaining_length()
            .is_some_and(|rest| pending.len() as u64 + rest <= COALESCE_LIMIT);
        if !short {
            io.write_all(&pending).await?;
            pending.clear();
        }
        buf.reserve(TARGET_READ);
        let read = target.read_buf(buf).await;
        if !matches!(read, Ok(n) if n > 0) {
            // The target is done or gone: what it sent goes out before the verdict, as it
            // would have without the wait for a short body (a client that got the head
            // knows its request was answered, if not whole).
            io.write_all(&pending).await?;
            io.flush().await?;
            read?;
            end.closed()?;
            return Ok(false);
        }
        done = take(&mut end, buf, &mut pending)?;
    }
    io.write_all(&pending).await?;
    io.flush().await?;
    // Bytes after a complete body: only a misbehaving target sends those.
    Ok(buf.is_empty())
}

/// Where a response body ends, followed through the bytes read after its head: the one
/// reading of a target's framing, for the relay (which passes the body on as it came) and
/// for h2 clients (which get the chunks' data alone).
#[derive(Debug)]
pub struct BodyEnd {
    framing: Framing,
    /// Of a `Content-Length` body, the bytes not yet seen.
    remaining: u64,
    scanner: chunked::ChunkedScanner,
}

impl BodyEnd {
    pub fn new(framing: Framing) -> BodyEnd {
        let remaining = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        BodyEnd {
            framing,
            remaining,
            scanner: chunked::ChunkedScanner::default(),
        }
    }

    /// How many of `buf`'s first bytes belong to the body, and whether it ends with them;
    /// `data` is told where among them the payload is (all of them but chunked framing).
    #[inline]
    pub fn advance(
        &mut self,
        buf: &[u8],
        mut data: impl FnMut(std::ops::Range<usize>),
    ) -> io::Result<(usize, bool)> {
        let (n, done) = match self.framing {
            Framing::Empty => (0, true),
            Framing::Length(_) => {
                let n = self.remaining.min(buf.len() as u64) as usize;
                self.remaining -= n as u64;
                data(0..n);
                (n, self.remaining == 0)
            }
            Framing::Chunked => match self.scanner.scan_data(buf, data) {
                Ok(Some(end)) => (end, true),
                Ok(None) => (buf.len(), false),
                Err(e) => return Err(io::Error::other(e)),
            },
            Framing::UntilClose => {
                data(0..buf.len());
                (buf.len(), false)
            }
        };
        Ok((n, done))
    }

    /// Of a `Content-Length` body, the bytes still to come.
    pub fn remaining_length(&self) -> Option<u64> {
        matches!(self.framing, Framing::Length(_)).then_some(self.remaining)
    }

    /// The target closed before the body was complete: its end, for a body that ends so,
    /// else a cut body.
    pub fn closed(&self) -> io::Result<()> {
        if self.framing == Framing::UntilClose {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the target closed inside the body",
            ))
        }
    }
}
