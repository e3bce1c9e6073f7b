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

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{watch, Mutex};

use super::audit::{AuditEntry, DEFAULT_RETENTION};
use super::rancher::Resolved;
use super::{resolve, ApiError};
use crate::config::Config;
use crate::runtime::{Runtime, Source};
use crate::server::drain;
use crate::store::{FileStore, State};

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
    /// Serialises writers; readers never wait for it.
    writer: Mutex<()>,
    /// Bumped after each committed change; Consul blocking queries wait on it.
    version: watch::Sender<u64>,
    store: FileStore,
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

impl Control {
    /// Loads the saved state and serves it (with `file_config`) before returning.
    pub async fn start(
        store: FileStore,
        runtime: Arc<Runtime>,
        file_config: Config,
        auth: Auth,
    ) -> Result<Control, String> {
        let state = store.load().map_err(|e| e.to_string())?.unwrap_or_default();
        let control = Control {
            state: ArcSwap::from_pointee(state),
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

    /// The current state; cheap, never waits for a writer.
    pub fn state(&self) -> Arc<State> {
        self.state.load_full()
    }

    /// The file part of the configuration in force (`--config`).
    pub fn file_config(&self) -> Arc<Config> {
        self.file_config.load_full()
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// A receiver that sees every committed change (for blocking queries).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Applies `change` to a copy of the state; see the module docs for what follows.
    pub async fn update<T>(
        &self,
        change: impl FnOnce(&mut State) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let _writer = self.writer.lock().await;
        let current = self.state.load_full();
        let mut next = (*current).clone();
        let out = change(&mut next)?;
        if next == *current {
            return Ok(out);
        }
        self.resolve_missing(&next).await;
        self.runtime
            .apply(&self.compile(&next), Source::Api)
            .await?;
        if let Err(e) = self.persist(&next).await {
            tracing::error!(error = %e, "cannot persist the control state; change rolled back");
            if let Err(e) = self
                .runtime
                .apply(&self.compile(&current), Source::Api)
                .await
            {
                tracing::error!(error = %e, "rollback of the routing table failed");
            }
            return Err(ApiError::unavailable(format!(
                "cannot persist the change: {e}"
            )));
        }
        self.state.store(Arc::new(next));
        self.version.send_modify(|v| *v += 1);
        Ok(out)
    }

    /// Appends `entry` to the audit log and persists it; the table is not rebuilt (nothing it
    /// is built from changed). A failure to persist is logged, and the entry dropped.
    pub async fn audit(&self, entry: AuditEntry) {
        let _writer = self.writer.lock().await;
        let current = self.state.load_full();
        let mut next = (*current).clone();
        next.audit.push(entry, self.audit_retention);
        if let Err(e) = self.persist(&next).await {
            tracing::error!(error = %e, "cannot persist the audit log; entry dropped");
            return;
        }
        self.state.store(Arc::new(next));
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

    async fn persist(&self, state: &State) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| e.to_string())?;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.save_bytes(&bytes))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
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
