//! The response body corral sends: the upstream's streamed through, or a short local one,
//! with the access log line written when the body is done (so it carries the byte count).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

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
    }
}

impl ProxyBody {
    pub fn upstream(body: Incoming) -> ProxyBody {
        ProxyBody {
            kind: Kind::Upstream { body },
            log: None,
        }
    }

    pub fn local(data: impl Into<Bytes>) -> ProxyBody {
        ProxyBody {
            kind: Kind::Local {
                data: Some(data.into()),
            },
            log: None,
        }
    }

    pub fn empty() -> ProxyBody {
        ProxyBody {
            kind: Kind::Local { data: None },
            log: None,
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
            KindProj::Upstream { body } => body.poll_frame(cx),
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
