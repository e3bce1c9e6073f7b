//! A relayed connection's one timer, for its waits one at a time: the idle wait before a
//! request, a target's response.
//!
//! A `tokio::time::timeout` per wait puts an entry in the runtime's timer wheel and takes it
//! out again, twice per keep-alive request. Here the connection keeps one `Sleep` for its
//! life and only ever moves it earlier: a wait whose limit ends before the timer does pulls
//! it in, and a timer that goes off before the wait's own limit is pushed out to that limit
//! then. A busy connection so touches the wheel about once per `min(limit)` of activity; a
//! wait still never outlasts its limit.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The connection's timer. Not armed until a wait polls it.
pub fn timer(limit: Duration) -> Sleep {
    tokio::time::sleep(limit)
}

/// The wait reached its limit.
#[derive(Debug)]
pub struct Elapsed;

/// Runs `fut` for at most `limit` on `timer`.
///
/// A future of its own rather than an `async fn`: that would keep `fut` twice (as passed,
/// and pinned in its body), and every request's exchange is inside one of these.
pub fn within<F: Future>(timer: Pin<&mut Sleep>, limit: Duration, fut: F) -> Within<'_, F> {
    Within {
        timer,
        limit,
        end: None,
        fut,
    }
}

pin_project_lite::pin_project! {
    /// `end` is set when the wait is first polled: it starts then.
    pub struct Within<'t, F> {
        timer: Pin<&'t mut Sleep>,
        limit: Duration,
        end: Option<Instant>,
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let timer = this.timer;
        let end = *this.end.get_or_insert_with(|| {
            let end = Instant::now() + *this.limit;
            if timer.deadline() > end {
                timer.as_mut().reset(end);
            }
            end
        });
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        loop {
            ready!(timer.as_mut().poll(cx));
            // Set by an earlier wait: this one's limit has not passed yet.
            if Instant::now() < end {
                timer.as_mut().reset(end);
            } else {
                return Poll::Ready(Err(Elapsed));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_at_its_own_limit() {
        let timer = timer(Duration::from_secs(60));
        tokio::pin!(timer);
        let started = Instant::now();
        let out = within(
            timer.as_mut(),
            Duration::from_secs(5),
            std::future::pending::<()>(),
        );
        assert!(out.await.is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_set_by_an_earlier_wait_is_pushed_out() {
        let timer = timer(Duration::from_secs(10));
        tokio::pin!(timer);
        tokio::time::sleep(Duration::from_secs(8)).await;
        // The timer goes off 2 s into this wait; the wait's own limit is 10 s.
        let started = Instant::now();
        let out = within(
            timer.as_mut(),
            Duration::from_secs(10),
            std::future::pending::<()>(),
        );
        assert!(out.await.is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_wait_returns_its_output() {
        let timer = timer(Duration::from_secs(1));
        tokio::pin!(timer);
        let out = within(timer.as_mut(), Duration::from_secs(1), async { 7 }).await;
        assert_eq!(out.ok(), Some(7));
        // Expired while unused, the timer does not cut the next wait short.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let slow = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            8
        };
        assert_eq!(
            within(timer.as_mut(), Duration::from_secs(1), slow)
                .await
                .ok(),
            Some(8)
        );
    }
}
