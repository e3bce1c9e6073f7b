//! Finds where a chunked body ends without decoding it: the relay passes a target's chunked
//! response through as it came (chunk sizes, extensions, trailers), and needs only to know
//! the byte after the last CRLF, to keep the connection for the next exchange. An h2 client
//! gets the chunks' data alone: [`ChunkedScanner::scan_data`] says where it is. Strict: CRLF
//! only, a size of at most 15 hex digits, bounded extensions and trailers; anything else
//! ends the exchange as an invalid response.

use std::ops::Range;

/// Bytes of chunk extensions on one size line, and of the whole trailer section.
const MAX_LINE_EXTRA: usize = 4 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex size; `digits` so far.
    Size {
        digits: u8,
    },
    /// After the size: `;ext` or whitespace up to CR.
    Extension {
        len: usize,
    },
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    TrailerLine,
    TrailerLf,
    LastLf,
    Done,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid chunked body: {0}")]
pub struct ChunkedError(&'static str);

#[derive(Debug)]
pub struct ChunkedScanner {
    state: State,
    size: u64,
    remaining: u64,
    trailers: usize,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        ChunkedScanner {
            state: State::Size { digits: 0 },
            size: 0,
            remaining: 0,
            trailers: 0,
        }
    }
}

impl ChunkedScanner {
    /// [`ChunkedScanner::scan_data`] for where the body ends alone.
    #[cfg(test)]
    fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, ChunkedError> {
        self.scan_data(buf, |_| {})
    }

    /// Scans the next bytes of the body, telling `data` where in `buf` the chunks' data is,
    /// in order. `Some(n)`: the body ends after `buf[..n]` (bytes past `n` are not part of
    /// it); `None`: all of `buf` is body and more is to come.
    pub fn scan_data(
        &mut self,
        buf: &[u8],
        mut data: impl FnMut(Range<usize>),
    ) -> Result<Option<usize>, ChunkedError> {
        let mut i = 0;
        while i < buf.len() {
            if self.state == State::Data {
                let take = self.remaining.min((buf.len() - i) as u64);
                self.remaining -= take;
                data(i..i + take as usize);
                i += take as usize;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = buf[i];
            i += 1;
            self.state = match self.state {
                State::Size { digits } => match hex(b) {
                    Some(v) if digits < 15 => {
                        self.size = self.size << 4 | u64::from(v);
                        State::Size { digits: digits + 1 }
                    }
                    Some(_) => return Err(ChunkedError("chunk size too large")),
                    None if digits == 0 => return Err(ChunkedError("missing chunk size")),
                    None => self.after_size(b, 0)?,
                },
                State::Extension { len } => self.after_size(b, len)?,
                State::SizeLf => {
                    expect(b, b'\n')?;
                    self.remaining = std::mem::take(&mut self.size);
                    if self.remaining == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    }
                }
                // Consumed in bulk above.
                State::Data => State::Data,
                State::DataCr => {
                    expect(b, b'\r')?;
                    State::DataLf
                }
                State::DataLf => {
                    expect(b, b'\n')?;
                    State::Size { digits: 0 }
                }
                State::TrailerStart if b == b'\r' => State::LastLf,
                State::TrailerStart | State::TrailerLine => self.trailer_byte(b)?,
                State::TrailerLf => {
                    expect(b, b'\n')?;
                    State::TrailerStart
                }
                State::LastLf => {
                    expect(b, b'\n')?;
                    self.state = State::Done;
                    return Ok(Some(i));
                }
                State::Done => return Ok(Some(i - 1)),
            };
        }
        Ok((self.state == State::Done).then_some(0))
    }

    fn after_size(&self, b: u8, len: usize) -> Result<State, ChunkedError> {
        match b {
            b'\r' => Ok(State::SizeLf),
            b'\n' => Err(ChunkedError("bare LF")),
            _ if len >= MAX_LINE_EXTRA => Err(ChunkedError("chunk extension too long")),
            b';' | b' ' | b'\t' => Ok(State::Extension { len: len + 1 }),
            _ if len > 0 && b.is_ascii_graphic() || b == b'\t' => {
                Ok(State::Extension { len: len + 1 })
            }
            _ => Err(ChunkedError("invalid byte after chunk size")),
        }
    }

    fn trailer_byte(&mut self, b: u8) -> Result<State, ChunkedError> {
        self.trailers += 1;
        if self.trailers > MAX_TRAILERS {
            return Err(ChunkedError("trailers too long"));
        }
        match b {
            b'\r' => Ok(State::TrailerLf),
            b'\n' => Err(ChunkedError("bare LF")),
            0x00..=0x08 | 0x0a..=0x1f | 0x7f => Err(ChunkedError("control byte in a trailer")),
            _ => Ok(State::TrailerLine),
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn expect(b: u8, want: u8) -> Result<(), ChunkedError> {
    if b == want {
        Ok(())
    } else {
        Err(ChunkedError("expected CRLF"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans `body` whole and byte by byte; both must agree.
    fn end(body: &[u8]) -> Result<Option<usize>, ChunkedError> {
        let whole = ChunkedScanner::default().scan(body);
        let mut s = ChunkedScanner::default();
        let mut bytewise = Ok(None);
        for (i, b) in body.iter().enumerate() {
            match s.scan(std::slice::from_ref(b)) {
                Ok(Some(_)) => {
                    bytewise = Ok(Some(i + 1));
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    bytewise = Err(e);
                    break;
                }
            }
        }
        assert_eq!(whole, bytewise, "{}", String::from_utf8_lossy(body));
        whole
    }

    #[test]
    fn finds_the_end() {
        let body = b"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        assert_eq!(end(body), Ok(Some(15)));
        assert_eq!(end(b"0\r\n\r\n"), Ok(Some(5)));
        let ext = b"3;name=\"v\"\r\nabc\r\nA \r\n0123456789\r\n0\r\nX-T: 1\r\nY: 2\r\n\r\n";
        assert_eq!(end(ext), Ok(Some(ext.len())));
        assert_eq!(end(b"5\r\nhel"), Ok(None));
    }

    #[test]
    fn refuses_what_a_peer_could_read_otherwise() {
        assert!(end(b"5\nhello\r\n0\r\n\r\n").is_err());
        assert!(end(b"5\r\nhelloX\r\n").is_err());
        assert!(end(b"\r\n").is_err());
        assert!(end(b"-5\r\n").is_err());
        assert!(end(b"0x5\r\n").is_err());
        assert!(end(b"1000000000000000\r\n").is_err());
        assert!(end(b"0\r\nX: \x01\r\n\r\n").is_err());
        assert!(end(b"0\r\n\n").is_err());
    }

    #[test]
    fn data_ranges_are_the_chunks_contents() {
        let body = b"5;x=1\r\nhello\r\nb\r\n, the world\r\n0\r\nT: v\r\n\r\n";
        for cut in 0..body.len() {
            let mut s = ChunkedScanner::default();
            let mut data = Vec::new();
            let first = s.scan_data(&body[..cut], |r| data.extend_from_slice(&body[r]));
            assert_eq!(first, Ok(None), "cut {cut}");
            let rest = &body[cut..];
            let end = s.scan_data(rest, |r| data.extend_from_slice(&rest[r]));
            assert_eq!(end, Ok(Some(rest.len())), "cut {cut}");
            assert_eq!(data, b"hello, the world", "cut {cut}");
        }
    }

    #[test]
    fn split_anywhere() {
        let body = b"a\r\n0123456789\r\n0\r\nT: v\r\n\r\n";
        for cut in 0..body.len() {
            let mut s = ChunkedScanner::default();
            assert_eq!(s.scan(&body[..cut]), Ok(None), "cut {cut}");
            assert_eq!(
                s.scan(&body[cut..]),
                Ok(Some(body.len() - cut)),
                "cut {cut}"
            );
        }
    }
}
