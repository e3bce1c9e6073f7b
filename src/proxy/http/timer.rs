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
            sleep: tokio::time::sleep_until(armed + self.idle),
        })
    }
}

pin_project_lite::pin_project! {
    // The tokio sleep lives inline: one allocation per armed timer (hyper's box), not two.
    struct HeadSleep {
        clock: Arc<HeadClock>,
        head: Duration,
        switched: bool,
        #[pin]
        sleep: tokio::time::Sleep,
    }
}

impl Future for HeadSleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        if !*this.switched {
            let first_byte = *this.clock.first_byte.lock();
            if let Some(first) = first_byte {
                let deadline = tokio::time::Instant::from_std(first) + *this.head;
                *this.switched = true;
                this.sleep.as_mut().reset(deadline);
            }
        }
        this.sleep.poll(cx)
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
