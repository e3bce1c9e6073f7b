//! The etcd backend: the state is the JSON value of `<prefix>state`.
//!
//! Writes are one transaction: `if mod_revision(key) == expected then put else get`, so a write
//! computed from a stale state never lands; the loser gets the current state back in the same
//! round trip. Every replica follows the prefix with a watch; after any break (etcd down,
//! leader lost, compaction) it re-reads the key and watches again from the revision it read
//! at, with a doubling back-off. Nothing here ever hands out an empty state because a call
//! failed: failures are errors, and the caller keeps what it serves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

use super::{Commit, State, StoreError, Versioned};
use crate::metrics::StoreMetrics;

/// Longest wait for one etcd call; an API write during an outage answers 503 after this.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// One try of the reachability probe of a write while the watch is broken.
const PROBE: Duration = Duration::from_millis(300);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How often the watch asks etcd how far it is (this also proves the stream is alive).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// A watch that has heard nothing for this long is taken as broken and reopened.
const STALE_AFTER: Duration = Duration::from_secs(4);

pub struct EtcdStore {
    client: Client,
    /// False from the moment the watch breaks until it is open again: writes are refused at
    /// once instead of being tried (and served) while etcd is known to be away.
    following: AtomicBool,
    prefix: String,
    key: String,
}

/// Attempts at a write that cannot reach a member, and the pause between them.
const SEND_ATTEMPTS: usize = 4;
const RESEND_PAUSE: Duration = Duration::from_millis(100);

/// The request never left: the client could not connect to the member it picked. Sending it
/// again cannot apply it twice.
fn not_sent(e: &etcd_client::Error) -> bool {
    // gRPC's UNAVAILABLE; tonic reports a refused or failed connect with it.
    const UNAVAILABLE: i32 = 14;
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(status) => {
            i32::from(status.code()) == UNAVAILABLE && status.message().contains("connect")
        }
        _ => false,
    }
}

async fn call<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    settle(what, timeout(CALL_TIMEOUT, fut).await)
}

/// A call's outcome within [`CALL_TIMEOUT`] as the store reports it.
fn settle<T>(
    what: &str,
    outcome: Result<Result<T, etcd_client::Error>, tokio::time::error::Elapsed>,
) -> Result<T, StoreError> {
    match outcome {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(StoreError::Unavailable(format!("{what}: {e}"))),
        Err(_) => Err(StoreError::Unavailable(format!(
            "{what}: no answer within {CALL_TIMEOUT:?}"
        ))),
    }
}

impl EtcdStore {
    /// Sets up the client; the connection itself is made on the first call.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<EtcdStore, StoreError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        let client = call("connect", Client::connect(endpoints, Some(options))).await?;
        Ok(EtcdStore {
            client,
            following: AtomicBool::new(true),
            prefix: prefix.to_string(),
            key: state_key(prefix),
        })
    }

    fn decode(&self, bytes: &[u8], revision: i64) -> Result<State, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            path: format!("etcd key {} (revision {revision})", self.key),
            message: e.to_string(),
        })
    }

    fn versioned(&self, kv: Option<&etcd_client::KeyValue>) -> Result<Versioned, StoreError> {
        Ok(match kv {
            Some(kv) => Versioned {
                state: self.decode(kv.value(), kv.mod_revision())?,
                revision: kv.mod_revision(),
            },
            None => Versioned {
                state: State::default(),
                revision: 0,
            },
        })
    }

    /// The current state and the store revision it was read at.
    pub async fn load(&self) -> Result<(Versioned, i64), StoreError> {
        let mut kv = self.client.kv_client();
        let resp = call("read", kv.get(self.key.clone(), None)).await?;
        let at = resp.header().map_or(0, |h| h.revision());
        Ok((self.versioned(resp.kvs().first())?, at))
    }

    /// Refuses, before the change is served, while etcd is unreachable. A broken watch alone
    /// does not say so: only the member it ran through may be gone while quorum holds, so a
    /// read that reaches any member lets the write go ahead.
    pub async fn writable(&self) -> Result<(), StoreError> {
        if self.following.load(Ordering::Acquire) {
            return Ok(());
        }
        for _ in 0..3 {
            if let Ok(Ok(_)) = tokio::time::timeout(PROBE, self.load()).await {
                return Ok(());
            }
        }
        Err(StoreError::Unavailable(
            "unreachable; the watch is reconnecting".into(),
        ))
    }

    pub async fn commit(&self, state: &mut State, expected: i64) -> Result<Commit, StoreError> {
        let bytes = super::fit(state, super::ETCD_DOCUMENT_LIMIT, &self.key)?;
        let txn = Txn::new()
            .when([Compare::mod_revision(
                self.key.clone(),
                CompareOp::Equal,
                expected,
            )])
            .and_then([TxnOp::put(self.key.clone(), bytes, None)])
            .or_else([TxnOp::get(self.key.clone(), None)]);
        let resp = self.send_txn(txn).await?;
        if resp.succeeded() {
            // The put is the transaction's only write: its revision is the header's.
            let revision = resp.header().map_or(0, |h| h.revision());
            return Ok(Commit::Done { revision });
        }
        let current = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => Some(self.versioned(get.kvs().first())),
            _ => None,
        });
        match current {
            Some(v) => v.map(Commit::Conflict),
            None => Err(StoreError::Unavailable(
                "write: conflict without the current state".into(),
            )),
        }
    }

    /// Sends `txn`, again (to the member the client picks next) while it could not be sent at
    /// all: a member that is down must not refuse writes while the others hold quorum.
    async fn send_txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, StoreError> {
        let mut kv = self.client.kv_client();
        let mut attempt = 1;
        loop {
            match timeout(CALL_TIMEOUT, kv.txn(txn.clone())).await {
                Ok(Err(e)) if not_sent(&e) && attempt < SEND_ATTEMPTS => {
                    tracing::debug!(error = %e, "etcd write not sent; trying another member");
                    attempt += 1;
                    tokio::time::sleep(RESEND_PAUSE).await;
                }
                outcome => return settle("write", outcome),
            }
        }
    }

    /// Sends the current state, then every change, to `changes` until it is closed;
    /// reconnects with back-off after any failure.
    pub async fn follow(&self, changes: mpsc::Sender<Versioned>, metrics: &StoreMetrics) {
        let mut backoff = BACKOFF_MIN;
        let mut first = true;
        while !changes.is_closed() {
            if !first {
                metrics.watch_reconnect();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            first = false;
            let mut established = false;
            match self
                .watch_once(&changes, metrics, &mut backoff, &mut established)
                .await
            {
                Ok(()) => return,
                // A working watch that broke (its member went away) is re-established at once
                // through the other endpoints, and writes stay allowed meanwhile: quorum may
                // well hold. Only a watch that cannot be established means etcd is unreachable.
                Err(e) if established => {
                    first = true;
                    tracing::warn!(error = %e, "etcd watch broken; re-establishing");
                }
                Err(e) => {
                    self.following.store(false, Ordering::Release);
                    tracing::warn!(
                    error = %e,
                    retry_in = ?backoff,
                    "etcd unreachable; serving the last good table"
                    );
                }
            }
        }
    }

    /// One read-then-watch session; `Ok` only when `changes` is closed.
    async fn watch_once(
        &self,
        changes: &mpsc::Sender<Versioned>,
        metrics: &StoreMetrics,
        backoff: &mut Duration,
        established: &mut bool,
    ) -> Result<(), StoreError> {
        let (current, at) = self.load().await?;
        metrics.synced(at);
        if changes.send(current).await.is_err() {
            return Ok(());
        }
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(at + 1);
        let mut watch = self.client.watch_client();
        let mut stream = call("watch", watch.watch(self.prefix.clone(), Some(options))).await?;
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        let mut heard = Instant::now();
        loop {
            tokio::select! {
                message = stream.message() => {
                    let resp = match message {
                        Ok(Some(resp)) => resp,
                        Ok(None) => return Err(StoreError::Unavailable("watch closed".into())),
                        Err(e) => return Err(StoreError::Unavailable(format!("watch: {e}"))),
                    };
                    heard = Instant::now();
                    if resp.created() {
                        *backoff = BACKOFF_MIN;
                        *established = true;
                        self.following.store(true, Ordering::Release);
                    }
                    if resp.canceled() {
                        return Err(StoreError::Unavailable(format!(
                            "watch canceled: {} (compacted at {})",
                            resp.cancel_reason(),
                            resp.compact_revision()
                        )));
                    }
                    for event in resp.events() {
                        let Some(kv) = event.kv().filter(|kv| kv.key() == self.key.as_bytes())
                        else {
                            continue;
                        };
                        let next = match event.event_type() {
                            EventType::Put => match self.versioned(Some(kv)) {
                                Ok(v) => v,
                                Err(e) => {
                                    tracing::error!(error = %e, "ignoring a state this replica cannot read");
                                    continue;
                                }
                            },
                            // Deleted on purpose (etcdctl del): the state is empty now.
                            EventType::Delete => Versioned {
                                state: State::default(),
                                revision: kv.mod_revision(),
                            },
                        };
                        if changes.send(next).await.is_err() {
                            return Ok(());
                        }
                    }
                    if let Some(h) = resp.header() {
                        metrics.synced(h.revision());
                    }
                }
                _ = progress.tick() => {
                    if heard.elapsed() > STALE_AFTER {
                        return Err(StoreError::Unavailable(format!(
                            "watch silent for {:?}",
                            heard.elapsed()
                        )));
                    }
                    if let Err(e) = stream.request_progress().await {
                        return Err(StoreError::Unavailable(format!("watch progress: {e}")));
                    }
                }
                () = changes.closed() => return Ok(()),
            }
        }
    }
}

/// The one key the state lives under.
pub fn state_key(prefix: &str) -> String {
    format!("{prefix}state")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_key_is_under_the_prefix() {
        assert_eq!(state_key("/corral/"), "/corral/state");
    }

    /// With nothing listening, every call fails within the timeout, as an `Unavailable`
    /// error, and never as a default (empty) state.
    #[tokio::test]
    async fn an_unreachable_etcd_is_an_error_not_an_empty_state() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoints = vec![format!("http://127.0.0.1:{port}")];
        let store = EtcdStore::connect(&endpoints, "/t/").await.unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(
            store.load().await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.commit(&mut State::default(), 0).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(started.elapsed() < CALL_TIMEOUT * 3);
    }
}
