//! The one place the control state changes.
//!
//! Every write of either API is a closure over a copy of the state. The copy is compiled into
//! a routing table and swapped in (binding any new ports), then persisted; only then does the
//! copy become the state and the write get acknowledged. Any failure on the way leaves the
//! state, the table and the listeners as they were.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::{watch, Mutex};

use super::ApiError;
use crate::config::Config;
use crate::runtime::{Runtime, Source};
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
            auth,
            health: Default::default(),
        };
        let state = control.state.load_full();
        control
            .runtime
            .apply(&control.compile(&state), Source::Store)
            .await
            .map_err(|e| format!("saved state cannot be served: {e}"))?;
        Ok(control)
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

    /// Replaces the file part of the configuration (SIGHUP) and serves it with the API state.
    pub async fn reload_file(&self, file_config: Config) -> Result<u64, String> {
        let _writer = self.writer.lock().await;
        let state = self.state.load_full();
        let mut merged = file_config.clone();
        merge(&mut merged, &state);
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
        merge(&mut config, state);
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

fn merge(config: &mut Config, state: &State) {
    config.load_balancers.extend(state.rancher.load_balancers());
    config.certificates.extend(state.rancher.certificates());
    config.services.extend(state.agent.instances());
}
