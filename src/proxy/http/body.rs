//! HTTP bodies as corral passes them on, in both directions: [`Payload`] is the body itself,
//! streamed through or held in memory; [`ProxyBody`] is the response sent to the client, which
//! also writes the access log line when the body is done (so it carries the byte count).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::h1::h2_stream::RelayedBody;
use super::upstream::Checkin;

pin_project_lite::pin_project! {
    /// A body streamed through from the other side (the client's request, the target's
    /// response: from hyper, or read from the target's socket by the relay for an h2
    /// client), or one held in memory (a local answer, a request body kept for a retry).
    #[project = PayloadProj]
    // `Relayed` and `ProxyBody::log` are boxed: hyper moves a response, and the stream task
    // that holds its body, several times per h2 stream, and with both inline a
    // `Response<ProxyBody>` was 656 bytes; boxed it is 232 and an h2 request costs 3.7 % fewer
    // instructions (49.0k → 47.2k), the allocations included.
    pub enum Payload {
        Streaming { #[pin] body: Incoming },
        Relayed { body: Box<RelayedBody> },
        Buffered { data: Option<Bytes> },
    }
}

impl Body for Payload {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            PayloadProj::Streaming { body } => body.poll_frame(cx).map_err(Into::into),
            PayloadProj::Relayed { body } => {
                Pin::new(body.as_mut()).poll_frame(cx).map_err(Into::into)
            }
            PayloadProj::Buffered { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Payload::Streaming { body } => body.is_end_stream(),
            Payload::Relayed { body } => body.is_end_stream(),
            Payload::Buffered { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Payload::Streaming { body } => body.size_hint(),
            Payload::Relayed { body } => body.size_hint(),
            Payload::Buffered { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

/// What a response body's stream can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project_lite::pin_project! {
    pub struct ProxyBody {
        #[pin]
        body: Payload,
        log: Option<Box<super::log::AccessLog>>,
        // The target connection the body comes from, handed back to the pool as soon as the
        // body has been read to its end (declared after `body`: dropped after the body).
        checkin: Option<Checkin>,
    }
}

impl ProxyBody {
    /// The target's response body; `checkin` goes back to the pool once it is fully read.
    pub fn upstream(body: Incoming, checkin: Option<Checkin>) -> ProxyBody {
        ProxyBody {
            body: Payload::Streaming { body },
            log: None,
            checkin,
        }
    }

    pub fn local(data: impl Into<Bytes>) -> ProxyBody {
        ProxyBody {
            body: Payload::Buffered {
                data: Some(data.into()),
            },
            log: None,
            checkin: None,
        }
    }

    pub fn empty() -> ProxyBody {
        ProxyBody {
            body: Payload::Buffered { data: None },
            log: None,
            checkin: None,
        }
    }

    /// A body the relay reads from a target (see [`RelayedBody`]).
    pub fn relayed(body: RelayedBody) -> ProxyBody {
        ProxyBody {
            body: Payload::Relayed {
                body: Box::new(body),
            },
            log: None,
            checkin: None,
        }
    }

    /// Attaches the access log record; it is written when the body is dropped.
    pub fn with_log(mut self, log: super::log::AccessLog) -> ProxyBody {
        self.log = Some(Box::new(log));
        self
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let mut body = this.body;
        let res = body.as_mut().poll_frame(cx);
        // Read to its end (or broken): the connection can go back (or be closed) now,
        // before the last bytes are written to the client.
        if this.checkin.is_some()
            && (res.is_ready() && !matches!(res, Poll::Ready(Some(Ok(_)))) || body.is_end_stream())
        {
            drop(this.checkin.take());
        }
        if let (Poll::Ready(Some(Ok(frame))), Some(log)) = (&res, this.log.as_mut()) {
            if let Some(d) = frame.data_ref() {
                log.bytes_out += d.len() as u64;
            }
        }
        if let (Poll::Ready(Some(Err(_))), Some(log)) = (&res, this.log.as_mut()) {
            log.aborted = true;
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_small_enough_to_move() {
        // See `Payload`: a field added inline that makes this fail costs every h2 stream.
        let size = std::mem::size_of::<http::Response<ProxyBody>>();
        assert!(size <= 256, "Response<ProxyBody> is {size} bytes");
    }
}
