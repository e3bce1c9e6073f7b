//! The response body corral sends: the upstream's streamed through, or a short local one,
//! with the access log line written when the body is done (so it carries the byte count).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::upstream::Checkin;

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind {
        Upstream { #[pin] body: Incoming },
        Local { data: Option<Bytes> },
    }
}

pin_project_lite::pin_project! {
    pub struct ProxyBody {
        #[pin]
        kind: Kind,
        log: Option<super::log::AccessLog>,
        // The target connection the body comes from, handed back to the pool as soon as the
        // body has been read to its end (declared after `kind`: dropped after the body).
        checkin: Option<Checkin>,
    }
}

impl ProxyBody {
    /// The target's response body; `checkin` goes back to the pool once it is fully read.
    pub fn upstream(body: Incoming, checkin: Option<Checkin>) -> ProxyBody {
        ProxyBody {
            kind: Kind::Upstream { body },
            log: None,
            checkin,
        }
    }

    pub fn local(data: impl Into<Bytes>) -> ProxyBody {
        ProxyBody {
            kind: Kind::Local {
                data: Some(data.into()),
            },
            log: None,
            checkin: None,
        }
    }

    pub fn empty() -> ProxyBody {
        ProxyBody {
            kind: Kind::Local { data: None },
            log: None,
            checkin: None,
        }
    }

    /// Attaches the access log record; it is written when the body is dropped.
    pub fn with_log(mut self, log: super::log::AccessLog) -> ProxyBody {
        self.log = Some(log);
        self
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let res = match this.kind.project() {
            KindProj::Upstream { mut body } => {
                let res = body.as_mut().poll_frame(cx);
                // Read to its end (or broken): the connection can go back (or be closed) now,
                // before the last bytes are written to the client.
                if this.checkin.is_some()
                    && (res.is_ready() && !matches!(res, Poll::Ready(Some(Ok(_))))
                        || body.is_end_stream())
                {
                    drop(this.checkin.take());
                }
                res
            }
            KindProj::Local { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        };
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
        match &self.kind {
            Kind::Upstream { body } => body.is_end_stream(),
            Kind::Local { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream { body } => body.size_hint(),
            Kind::Local { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
