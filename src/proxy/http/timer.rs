//! Client-side timeouts of an HTTP/1 connection: idle keep-alive vs. request head.
//!
//! hyper arms its `header_read_timeout` as soon as it waits for a request head, which
//! includes the idle wait between keep-alive requests; one number would force a choice
//! between cutting slowloris late and cutting idle clients early. This timer, given to hyper
//! for one connection, arms the idle deadline while no byte of the next head has arrived and
//! switches to the head deadline at the first byte, which [`ClockedIo`] reports.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};
use parking_lot::Mutex;

use crate::io::{Observed, Observer};

/// Per-connection state shared by the timer and the IO wrapper.
#[derive(Debug, Default)]
pub struct HeadClock {
    /// When the first byte arrived since hyper last armed the head timer.
    first_byte: Mutex<Option<Instant>>,
}

#[derive(Debug, Clone)]
pub struct HeadTimer {
    clock: Arc<HeadClock>,
    idle: Duration,
    head: Duration,
}

impl HeadTimer {
    /// A timer and the IO wrapper that must carry the same connection's bytes.
    pub fn new<T>(io: T, idle: Duration, head: Duration) -> (HeadTimer, ClockedIo<T>) {
        let clock = Arc::new(HeadClock::default());
        (
            HeadTimer {
                clock: clock.clone(),
                idle,
                head,
            },
            Observed::new(io, clock),
        )
    }
}

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        hyper_util::rt::TokioTimer::new().sleep(duration)
    }

    /// hyper calls this when it starts waiting for a request head.
    fn sleep_until(&self, _deadline: Instant) -> Pin<Box<dyn Sleep>> {
        *self.clock.first_byte.lock() = None;
        let armed = tokio::time::Instant::now();
        Box::pin(HeadSleep {
            clock: self.clock.clone(),
            head: self.head,
            switched: false,
            sleep: Box::pin(tokio::time::sleep_until(armed + self.idle)),
        })
    }
}

struct HeadSleep {
    clock: Arc<HeadClock>,
    head: Duration,
    switched: bool,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Future for HeadSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if !self.switched {
            let first_byte = *self.clock.first_byte.lock();
            if let Some(first) = first_byte {
                let deadline = tokio::time::Instant::from_std(first) + self.head;
                self.switched = true;
                self.sleep.as_mut().reset(deadline);
            }
        }
        self.sleep.as_mut().poll(cx)
    }
}

impl Sleep for HeadSleep {}

/// The connection's bytes, reporting the first byte read after the head timer was armed.
pub type ClockedIo<T> = Observed<T, Arc<HeadClock>>;

impl Observer for Arc<HeadClock> {
    fn on_read(&self, _bytes: usize) {
        let mut first = self.first_byte.lock();
        if first.is_none() {
            *first = Some(Instant::now());
        }
    }
}
