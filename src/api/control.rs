//! The one place the control state changes.
//!
//! Every write of either API is a closure over a copy of the state. The copy is compiled into
//! a routing table and swapped in (binding any new ports), then persisted; only then does the
//! copy become the state and the write get acknowledged. Any failure on the way leaves the
//! state, the table and the listeners as they were.
//!
//! Two more inputs of the table live here, outside the persisted state: the addresses that
//! external services' hostnames resolved to (refreshed by [`Control::run_resolver`]), and the
//! file configuration. The audit log is part of the state but appended by [`Control::audit`],
//! which persists without rebuilding the table.
//!
//! With a shared store (etcd) the persist is a compare-on-revision transaction: when another
//! replica wrote first, its state is taken and the closure runs again on it, so no
//! acknowledged write is lost. Changes from other replicas arrive through `follow` and are
//! served by `sync` — the same compile and swap, without writing back.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::StatusCode;
use tokio::sync::{mpsc, watch, Mutex};
use tokio::time::Instant;

use super::audit::{AuditEntry, DEFAULT_RETENTION};
use super::rancher::Resolved;
use super::{resolve, ApiError};
use crate::config::Config;
use crate::runtime::{Runtime, Source};
use crate::server::drain;
use crate::store::{Commit, State, Store, StoreError, Versioned};

/// Credentials the control listener checks; `None` means that check is off.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// Rancher API key pair (HTTP Basic on `/v1`).
    pub rancher: Option<(String, String)>,
    /// Consul ACL token required for agent writes.
    pub consul_token: Option<String>,
}

pub struct Control {
    state: ArcSwap<State>,
    /// The store revision `state` was read or written at (etcd; 0 for the file store).
    /// Changed only with `writer` held.
    revision: AtomicI64,
    /// Serialises writers; readers never wait for it.
    writer: Mutex<()>,
    /// Bumped after each committed change; Consul blocking queries wait on it.
    version: watch::Sender<u64>,
    store: Store,
    runtime: Arc<Runtime>,
    /// Load balancers and instances from `--config`, served alongside the API's.
    file_config: ArcSwap<Config>,
    /// What external services' hostnames resolved to; written under `writer`.
    resolved: ArcSwap<Resolved>,
    /// How often those hostnames are looked up again.
    dns_refresh: Duration,
    /// Audit entries kept.
    audit_retention: usize,
    pub auth: Auth,
    /// When each TTL check was last refreshed (read by the health monitor).
    pub health: crate::health::TtlClock,
}

/// How long `update` keeps recomputing a change other replicas keep racing with.
const RACE_BUDGET: Duration = Duration::from_secs(5);

impl Control {
    /// Loads the saved state and serves it (with `file_config`) before returning.
    pub async fn start(
        store: Store,
        runtime: Arc<Runtime>,
        file_config: Config,
        auth: Auth,
    ) -> Result<Control, String> {
        let loaded = store.load().await.map_err(|e| e.to_string())?;
        let metrics = &runtime.shared().metrics.store;
        metrics.set_backend(store.backend());
        metrics.synced(loaded.revision);
        let control = Control {
            state: ArcSwap::from_pointee(loaded.state),
            revision: AtomicI64::new(loaded.revision),
            writer: Mutex::new(()),
            version: watch::channel(0).0,
            store,
            runtime,
            file_config: ArcSwap::from_pointee(file_config),
            resolved: ArcSwap::from_pointee(Resolved::new()),
            dns_refresh: resolve::DEFAULT_REFRESH,
            audit_retention: DEFAULT_RETENTION,
            auth,
            health: Default::default(),
        };
        let state = control.state.load_full();
        control.resolve_missing(&state).await;
        control
            .runtime
            .apply(&control.compile(&state), Source::Store)
            .await
            .map_err(|e| format!("saved state cannot be served: {e}"))?;
        Ok(control)
    }

    /// How many audit entries to keep (default [`DEFAULT_RETENTION`]).
    pub fn with_audit_retention(mut self, retention: usize) -> Control {
        self.audit_retention = retention.max(1);
        self
    }

    /// How often external services' hostnames are re-resolved (clamped, see
    /// [`resolve::clamp_interval`]).
    pub fn with_dns_refresh(mut self, interval: Duration) -> Control {
        self.dns_refresh = resolve::clamp_interval(interval);
        self
    }

    /// The file part of the configuration in force (`--config`).
    pub fn file_config(&self) -> Arc<Config> {
        self.file_config.load_full()
    }

    /// The current state; cheap, never waits for a writer.
    pub fn state(&self) -> Arc<State> {
        self.state.load_full()
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// A receiver that sees every committed change (for blocking queries).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Applies `change` to a copy of the state; see the module docs for what follows. With a
    /// shared store, `change` runs again on the newer state each time another replica wrote
    /// first, so it must not consume what it captures.
    pub async fn update<T>(
        &self,
        mut change: impl FnMut(&mut State) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let _writer = self.writer.lock().await;
        let mut current = self.state.load_full();
        // Once a change has been served and did not land, every way out but a commit serves
        // `current` (by then the newer state) again.
        let mut served = false;
        let deadline = Instant::now() + RACE_BUDGET;
        let result = loop {
            let mut next = (*current).clone();
            let out = match change(&mut next) {
                Ok(out) if next == *current => break Ok(out),
                Ok(out) => out,
                Err(e) => break Err(e),
            };
            match self.write(&mut next, &mut served).await {
                Ok(Commit::Done { revision }) => {
                    self.adopt(Arc::new(next), revision);
                    self.runtime.shared().metrics.store.synced(revision);
                    return Ok(out);
                }
                Ok(Commit::Conflict(newer)) => {
                    // Another replica wrote first: take what it wrote, recompute on it.
                    self.runtime.shared().metrics.store.write_conflict();
                    tracing::debug!(now = newer.revision, "write raced; recomputing");
                    current = Arc::new(newer.state);
                    self.adopt(current.clone(), newer.revision);
                    if Instant::now() >= deadline {
                        break Err(ApiError::unavailable(format!(
                            "the change kept racing with other replicas for {RACE_BUDGET:?}; \
                             try again"
                        )));
                    }
                }
                Err(e) => break Err(e),
            }
        };
        if served {
            self.restore(&current).await;
        }
        result
    }

    /// Serves `next` and commits it at the revision held. `served` becomes true once the
    /// table serves `next`.
    async fn write(&self, next: &mut State, served: &mut bool) -> Result<Commit, ApiError> {
        let unavailable =
            |e: StoreError| ApiError::unavailable(format!("cannot persist the change: {e}"));
        // etcd known to be away: refuse before serving the change at all.
        self.store.writable().await.map_err(unavailable)?;
        self.resolve_missing(next).await;
        self.runtime.apply(&self.compile(next), Source::Api).await?;
        *served = true;
        let expected = self.revision.load(Ordering::Acquire);
        self.store.commit(next, expected).await.map_err(|e| {
            tracing::error!(error = %e, "cannot persist the control state; change rolled back");
            match e {
                StoreError::TooLarge { .. } => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "StateTooLarge",
                    format!("the change cannot be stored: {e}"),
                ),
                e => unavailable(e),
            }
        })
    }

    /// Serves `state` (a change from another replica, seen by the store watch) without
    /// writing it back; states at or before the revision already held are ignored. A state
    /// that cannot be served here is still taken as the state (it is the shared truth), and
    /// the table in force keeps serving until a later one builds.
    pub async fn sync(&self, incoming: Versioned) {
        let _writer = self.writer.lock().await;
        if incoming.revision <= self.revision.load(Ordering::Acquire) {
            return;
        }
        let state = Arc::new(incoming.state);
        if *state != **self.state.load() {
            self.resolve_missing(&state).await;
            if let Err(e) = self
                .runtime
                .apply(&self.compile(&state), Source::Store)
                .await
            {
                tracing::error!(
                    error = %e,
                    revision = incoming.revision,
                    "state from the store cannot be served here; the previous table keeps serving"
                );
            }
        }
        self.adopt(state, incoming.revision);
    }

    /// Follows the store (etcd: other replicas' writes) until the process ends.
    pub async fn follow(self: Arc<Self>) {
        let (tx, mut rx) = mpsc::channel(16);
        let applier = {
            let control = self.clone();
            tokio::spawn(async move {
                while let Some(incoming) = rx.recv().await {
                    control.sync(incoming).await;
                }
            })
        };
        self.store
            .follow(tx, &self.runtime.shared().metrics.store)
            .await;
        let _ = applier.await;
    }

    /// Makes `state` the state at `revision` and wakes blocking queries (writer held).
    fn adopt(&self, state: Arc<State>, revision: i64) {
        self.state.store(state);
        self.revision.store(revision, Ordering::Release);
        self.version.send_modify(|v| *v += 1);
    }

    /// Puts back the table of `state` after a change that did not land.
    async fn restore(&self, state: &State) {
        if let Err(e) = self.runtime.apply(&self.compile(state), Source::Api).await {
            tracing::error!(error = %e, "rollback of the routing table failed");
        }
    }

    /// Appends `entry` to the audit log and commits it; the table is not rebuilt (nothing it
    /// is built from changed) and blocking queries are not woken. On a race with another
    /// replica the entry is appended to the newer state. A failure to commit is logged, and
    /// the entry dropped.
    pub async fn audit(&self, entry: AuditEntry) {
        let _writer = self.writer.lock().await;
        let mut current = self.state.load_full();
        let deadline = Instant::now() + RACE_BUDGET;
        loop {
            let mut next = (*current).clone();
            next.audit.push(entry.clone(), self.audit_retention);
            let expected = self.revision.load(Ordering::Acquire);
            match self.store.commit(&mut next, expected).await {
                Ok(Commit::Done { revision }) => {
                    self.state.store(Arc::new(next));
                    self.revision.store(revision, Ordering::Release);
                    self.runtime.shared().metrics.store.synced(revision);
                    return;
                }
                Ok(Commit::Conflict(newer)) if Instant::now() < deadline => {
                    current = Arc::new(newer.state);
                    self.resolve_missing(&current).await;
                    if let Err(e) = self
                        .runtime
                        .apply(&self.compile(&current), Source::Store)
                        .await
                    {
                        tracing::error!(error = %e, "state from the store cannot be served here");
                    }
                    self.adopt(current.clone(), newer.revision);
                }
                Ok(Commit::Conflict(_)) => {
                    tracing::error!("audit entry kept racing with other replicas; dropped");
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot persist the audit log; entry dropped");
                    return;
                }
            }
        }
    }

    /// Resolves the external-service hostnames of `state` that have no answer yet (those
    /// that fail stay unresolved until the background refresh succeeds).
    async fn resolve_missing(&self, state: &State) {
        let known = self.resolved.load_full();
        let missing: Vec<String> = state
            .rancher
            .external_hostnames()
            .into_iter()
            .filter(|h| !known.contains_key(h))
            .collect();
        if missing.is_empty() {
            return;
        }
        let answers = resolve::lookup_all(&missing).await;
        let mut next = (*known).clone();
        for (h, answer) in answers {
            match answer {
                Ok(ips) => {
                    next.insert(h, ips);
                }
                Err(e) => tracing::warn!(hostname = %h, error = %e,
                    "external service hostname does not resolve (yet)"),
            }
        }
        self.resolved.store(Arc::new(next));
    }

    /// Looks every external-service hostname up again; if any answer changed, rebuilds the
    /// table. Returns whether it did.
    pub async fn refresh_hostnames(&self) -> bool {
        let hosts = self.state.load().rancher.external_hostnames();
        let answers = resolve::lookup_all(&hosts).await;
        let _writer = self.writer.lock().await;
        let state = self.state.load_full();
        let old = self.resolved.load_full();
        let next = resolve::merge(&old, &state.rancher.external_hostnames(), answers);
        if next == *old {
            return false;
        }
        self.resolved.store(Arc::new(next));
        match self.runtime.apply(&self.compile(&state), Source::Dns).await {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, "table rebuild after a DNS change refused");
                false
            }
        }
    }

    /// Re-resolves external-service hostnames every refresh interval until `drain` fires.
    pub async fn run_resolver(self: Arc<Self>, drain: drain::Watch) {
        let stop = drain.signaled();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(self.dns_refresh) => {
                    if self.refresh_hostnames().await {
                        tracing::info!("external service addresses changed; table rebuilt");
                    }
                }
            }
        }
    }

    /// Replaces the file part of the configuration (SIGHUP) and serves it with the API state.
    pub async fn reload_file(&self, file_config: Config) -> Result<u64, String> {
        let _writer = self.writer.lock().await;
        let state = self.state.load_full();
        let mut merged = file_config.clone();
        merge(&mut merged, &state, &self.resolved.load());
        let table = self
            .runtime
            .apply(&merged, Source::File)
            .await
            .map_err(|e| e.to_string())?;
        self.file_config.store(Arc::new(file_config));
        Ok(table.generation())
    }

    /// What the data plane serves for `state`: the file configuration plus the API's.
    fn compile(&self, state: &State) -> Config {
        let mut config = (*self.file_config.load_full()).clone();
        merge(&mut config, state, &self.resolved.load());
        config
    }
}

/// Adds the API's load balancers, certificates and instances to `config`: the agent's, then
/// the synthetic ones of external services and aliases (which expand over all the others).
fn merge(config: &mut Config, state: &State, resolved: &Resolved) {
    config.load_balancers.extend(state.rancher.load_balancers());
    config.certificates.extend(state.rancher.certificates());
    config.services.extend(state.agent.instances());
    let synthetic = state
        .rancher
        .synthetic_instances(&config.services, resolved);
    config.services.extend(synthetic);
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::store::memory::MemoryStore;

    async fn control(memory: &Arc<MemoryStore>) -> Control {
        let runtime = Arc::new(Runtime::new(IpAddr::V4(Ipv4Addr::LOCALHOST), vec![]));
        Control::start(
            Store::Memory(memory.clone()),
            runtime,
            Config::default(),
            Auth::default(),
        )
        .await
        .unwrap()
    }

    fn with_next_id(n: u64) -> State {
        let mut s = State::default();
        s.rancher.next_id = n;
        s
    }

    #[tokio::test]
    async fn a_raced_write_is_recomputed_on_the_newer_state() {
        let memory = Arc::new(MemoryStore::default());
        let control = control(&memory).await;
        let changes = control.subscribe();
        // Another replica allocates ids up to 100 just before our first commit.
        memory.inner.lock().racers.push(with_next_id(100));
        let mut runs = 0;
        let id = control
            .update(|s| {
                runs += 1;
                Ok(s.rancher.allocate_id('s'))
            })
            .await
            .unwrap();
        assert_eq!((id.as_str(), runs), ("1s101", 2));
        assert_eq!(control.state().rancher.next_id, 101);
        let stored = memory.inner.lock().current.clone().unwrap();
        assert_eq!((stored.state.rancher.next_id, stored.revision), (101, 2));
        assert!(changes.has_changed().unwrap());
    }

    #[tokio::test]
    async fn a_store_outage_refuses_the_write_and_keeps_state_and_table() {
        let memory = Arc::new(MemoryStore::default());
        let control = control(&memory).await;
        control
            .update(|s| {
                s.rancher.next_id = 1;
                Ok(())
            })
            .await
            .unwrap();
        let generation = control.runtime().table().generation();
        let changes = control.subscribe();
        memory.inner.lock().down = true;
        let err = control
            .update(|s| {
                s.rancher.next_id = 5;
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(err.status, http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(err.message.contains("memory store down"), "{err}");
        assert_eq!(control.state().rancher.next_id, 1);
        assert!(!changes.has_changed().unwrap());
        // Tried (one build) and rolled back (another): the same content serves.
        assert_eq!(control.runtime().table().generation(), generation + 2);
    }

    #[tokio::test]
    async fn a_document_limit_trims_the_audit_log_and_refuses_what_cannot_fit() {
        let memory = Arc::new(MemoryStore::default());
        memory.inner.lock().limit = Some(20_000);
        let control = control(&memory).await;
        for i in 0..200 {
            control.audit(super::super::audit::sample_entry(i)).await;
        }
        // Every entry was committed; the oldest made room for the newest.
        let state = control.state();
        let kept = state.audit.len();
        assert!(kept > 20 && kept < 200, "{kept} entries kept");
        let newest = state.audit.entries().next_back().unwrap();
        assert_eq!(newest.id, "1al200");
        assert!(newest.request_object["name"] == "lb-199");
        // What is served is what is stored.
        assert_eq!(memory.inner.lock().current.as_ref().unwrap().state, *state);

        // A state too large even without its audit log: 413, and nothing changes.
        memory.inner.lock().limit = Some(10);
        let err = control
            .update(|s| {
                s.rancher.next_id += 1;
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(err.status, http::StatusCode::PAYLOAD_TOO_LARGE);
        assert!(err.message.contains("at most 10"), "{err}");
        assert_eq!(control.state().rancher.next_id, state.rancher.next_id);
        assert_eq!(control.state().audit.len(), kept);
    }

    #[tokio::test]
    async fn sync_serves_newer_states_and_ignores_older_ones() {
        let memory = Arc::new(MemoryStore::default());
        let control = control(&memory).await;
        let changes = control.subscribe();
        let generation = control.runtime().table().generation();
        control
            .sync(Versioned {
                state: with_next_id(3),
                revision: 5,
            })
            .await;
        assert_eq!(control.state().rancher.next_id, 3);
        assert!(changes.has_changed().unwrap());
        assert_eq!(control.runtime().table().generation(), generation + 1);
        // Our own write echoed by the watch, or a late event: ignored.
        control
            .sync(Versioned {
                state: with_next_id(9),
                revision: 5,
            })
            .await;
        assert_eq!(control.state().rancher.next_id, 3);
        // A write after a sync compares on the synced revision: no conflict.
        memory.inner.lock().current = Some(Versioned {
            state: with_next_id(3),
            revision: 5,
        });
        let mut runs = 0;
        control
            .update(|s| {
                runs += 1;
                s.rancher.next_id += 1;
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(runs, 1);
        assert_eq!(memory.inner.lock().current.as_ref().unwrap().revision, 6);
    }
}
