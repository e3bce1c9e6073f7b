//! Graceful drain: a signal that asks connections to finish and waits until they have.
//!
//! Every connection holds a [`Watch`]; [`Signal::drain`] tells them all and resolves when the
//! last one is dropped (the `watch` channel closes when its last receiver goes).

use tokio::sync::watch;

pub struct Signal(watch::Sender<bool>);

#[derive(Clone)]
pub struct Watch(watch::Receiver<bool>);

pub fn channel() -> (Signal, Watch) {
    let (tx, rx) = watch::channel(false);
    (Signal(tx), Watch(rx))
}

impl Signal {
    /// Asks every watcher to finish, then waits until all are gone.
    pub async fn drain(self) {
        let _ = self.0.send(true);
        self.0.closed().await;
    }

    /// How many connections (and accept loops) still hold a watch.
    pub fn watchers(&self) -> usize {
        self.0.receiver_count()
    }
}

impl Watch {
    /// Whether a drain has been asked for already.
    pub fn is_signaled(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once a drain has been asked for. The watch itself stays held by its owner,
    /// so the drain keeps waiting until the owner is done and drops it.
    pub async fn signaled(&self) {
        let mut rx = self.0.clone();
        // An error means the signal was dropped without a drain: treat it as one.
        let _ = rx.wait_for(|draining| *draining).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn drain_waits_for_every_watch() {
        let (signal, watch) = channel();
        let done = tokio::spawn({
            let w = watch.clone();
            async move {
                w.signaled().await;
                let _still_held = &w;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        drop(watch);
        let start = std::time::Instant::now();
        signal.drain().await;
        assert!(start.elapsed() >= Duration::from_millis(50));
        done.await.unwrap();
    }
}
