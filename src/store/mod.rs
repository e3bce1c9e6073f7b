//! Persistence of the control state, behind one small enum with two backends.
//!
//! The whole state is one JSON document, replaced whole on every change.
//!
//! - `file:DIR` (the default): `DIR/state.json`, written to a temporary file, fsynced, renamed
//!   over the old one, and the directory fsynced, so `kill -9` at any moment leaves either the
//!   old or the new document, never a torn one. The file holds private keys, so it is created
//!   with mode 0600.
//! - `etcd:URL[,URL…]`: the document is the value of one key, `<prefix>state`, replaced in a
//!   transaction that compares the key's mod revision with the one the change was computed
//!   from; a replica that lost the race gets the current document back and recomputes. Every
//!   replica follows the key with a watch (see `etcd.rs`).

#[cfg(feature = "etcd")]
mod etcd;
mod file;
#[cfg(test)]
pub mod memory;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[cfg(feature = "etcd")]
pub use etcd::EtcdStore;
pub use file::FileStore;

use crate::api::audit::AuditLog;
use crate::api::consul::AgentState;
use crate::api::rancher::RancherState;
use crate::metrics::StoreMetrics;

/// Everything the control APIs manage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    pub rancher: RancherState,
    pub agent: AgentState,
    /// The newest writes to either API (bounded; see [`crate::api::audit`]).
    pub audit: AuditLog,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("store {path} is not a valid state document: {message}")]
    Corrupt { path: String, message: String },
    /// A store flag that cannot work (`--store-prefix ""`).
    #[error("{0}")]
    Invalid(String),
    /// etcd did not answer (down, no leader, timed out): retryable.
    #[error("etcd store unavailable: {0}")]
    Unavailable(String),
    /// The state does not fit the store's document limit even without its audit log.
    #[error("the state needs {size} bytes without its audit log; the store takes at most {limit}")]
    TooLarge { size: usize, limit: usize },
}

/// etcd refuses requests over 1.5 MiB (its default `--max-request-bytes`): the document
/// stays under this, with room for the transaction around it.
pub const ETCD_DOCUMENT_LIMIT: usize = 1_400_000;

/// `state` as a JSON document of at most `limit` bytes. The audit log is the one part that
/// grows with use rather than with configuration (10,000 entries are several MiB), so its
/// oldest entries are dropped from `state` while the document is over. A state too large
/// without any audit entry is refused, and left as it was.
pub fn fit(state: &mut State, limit: usize, key: &str) -> Result<Vec<u8>, StoreError> {
    let json = |value: &State| {
        serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
            path: key.to_string(),
            message: e.to_string(),
        })
    };
    let mut bytes = json(state)?;
    if bytes.len() <= limit {
        return Ok(bytes);
    }
    let mut trimmed = state.clone();
    let before = trimmed.audit.len();
    while bytes.len() > limit {
        // Drop at least the excess, by the entries' own sizes, then measure again.
        let mut excess = bytes.len() - limit;
        while excess > 0 {
            let Some(entry) = trimmed.audit.pop_oldest() else {
                let size = json(&trimmed)?.len();
                return Err(StoreError::TooLarge { size, limit });
            };
            let size = serde_json::to_vec(&entry).map_or(1, |b| b.len() + 1);
            excess = excess.saturating_sub(size);
        }
        bytes = json(&trimmed)?;
    }
    tracing::warn!(
        dropped = before - trimmed.audit.len(),
        kept = trimmed.audit.len(),
        limit,
        "oldest audit entries dropped to keep the state within the store's limit \
         (a lower --audit-retention keeps fewer and stops this)"
    );
    *state = trimmed;
    Ok(bytes)
}

/// The state as the store holds it, with the revision it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    pub state: State,
    /// etcd: the state key's mod revision (0: no key yet). file: always 0.
    pub revision: i64,
}

/// What a conditional write did.
#[derive(Debug)]
pub enum Commit {
    /// Written; the state now has this revision.
    Done { revision: i64 },
    /// Someone else wrote first: this is the state now in the store.
    Conflict(Versioned),
}

/// `--store`: where the control state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    File(PathBuf),
    Etcd(Vec<String>),
}

impl std::str::FromStr for StoreSpec {
    type Err = String;

    /// `file:DIR` or `etcd:http://HOST:PORT[,http://HOST:PORT…]`.
    fn from_str(s: &str) -> Result<StoreSpec, String> {
        if let Some(dir) = s.strip_prefix("file:") {
            if dir.is_empty() {
                return Err("file: needs a directory (file:DIR)".into());
            }
            return Ok(StoreSpec::File(PathBuf::from(dir)));
        }
        if let Some(list) = s.strip_prefix("etcd:") {
            let endpoints: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_string)
                .collect();
            if endpoints.is_empty() {
                return Err(
                    "etcd: needs at least one endpoint (etcd:http://127.0.0.1:2379)".into(),
                );
            }
            if let Some(bad) = endpoints.iter().find(|e| !e.starts_with("http://")) {
                return Err(format!(
                    "etcd endpoint {bad:?}: only http://HOST:PORT is supported"
                ));
            }
            return Ok(StoreSpec::Etcd(endpoints));
        }
        Err(format!(
            "unknown store {s:?}: expected file:DIR or etcd:http://HOST:PORT[,…]"
        ))
    }
}

/// A key prefix for etcd: non-empty, ends with `/` so `/a/` never matches `/ab/state`.
pub fn normalize_prefix(prefix: &str) -> Result<String, String> {
    if prefix.is_empty() {
        return Err("--store-prefix must not be empty".into());
    }
    Ok(if prefix.ends_with('/') {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    })
}

/// The configured backend.
pub enum Store {
    File(FileStore),
    /// Boxed: the client is large and there is one store per process.
    #[cfg(feature = "etcd")]
    Etcd(Box<EtcdStore>),
    /// Tests only: etcd's semantics in memory.
    #[cfg(test)]
    Memory(std::sync::Arc<memory::MemoryStore>),
}

impl Store {
    /// Opens the backend `spec` names (etcd: under `prefix`, which gets a trailing `/`;
    /// connects lazily, `load` is the first round trip).
    pub async fn open(spec: &StoreSpec, prefix: &str) -> Result<Store, StoreError> {
        match spec {
            StoreSpec::File(dir) => FileStore::open(dir).map(Store::File),
            #[cfg(feature = "etcd")]
            StoreSpec::Etcd(endpoints) => {
                let prefix = normalize_prefix(prefix).map_err(StoreError::Invalid)?;
                EtcdStore::connect(endpoints, &prefix)
                    .await
                    .map(|e| Store::Etcd(Box::new(e)))
            }
            #[cfg(not(feature = "etcd"))]
            StoreSpec::Etcd(_) => {
                let _ = prefix;
                Err(StoreError::Invalid(
                    "this corral was built without etcd support: build with `--features etcd`"
                        .into(),
                ))
            }
        }
    }

    /// The `backend` label of `corral_store_info`.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::File(_) => "file",
            #[cfg(feature = "etcd")]
            Store::Etcd(_) => "etcd",
            #[cfg(test)]
            Store::Memory(_) => "memory",
        }
    }

    /// The saved state (the default state on first start).
    pub async fn load(&self) -> Result<Versioned, StoreError> {
        match self {
            Store::File(f) => {
                let store = f.clone();
                let state = tokio::task::spawn_blocking(move || store.load())
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))??;
                Ok(Versioned {
                    state: state.unwrap_or_default(),
                    revision: 0,
                })
            }
            #[cfg(feature = "etcd")]
            Store::Etcd(e) => e.load().await.map(|(v, _)| v),
            #[cfg(test)]
            Store::Memory(m) => m.load(),
        }
    }

    /// Whether a write can be tried now (etcd: not while the watch knows etcd is away).
    pub async fn writable(&self) -> Result<(), StoreError> {
        match self {
            #[cfg(feature = "etcd")]
            Store::Etcd(e) => e.writable().await,
            _ => Ok(()),
        }
    }

    /// Writes `state` if the store still holds revision `expected` (the file backend has one
    /// writer, this process, so it always writes). A store with a document limit (etcd)
    /// drops the oldest audit entries of `state` to fit it, so that the caller holds what
    /// was written.
    pub async fn commit(&self, state: &mut State, expected: i64) -> Result<Commit, StoreError> {
        // Only stores shared with other writers compare revisions.
        let _ = expected;
        match self {
            Store::File(f) => {
                let bytes = serde_json::to_vec_pretty(state).map_err(|e| StoreError::Corrupt {
                    path: f.path().display().to_string(),
                    message: e.to_string(),
                })?;
                let store = f.clone();
                tokio::task::spawn_blocking(move || store.save_bytes(&bytes))
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))??;
                Ok(Commit::Done { revision: 0 })
            }
            #[cfg(feature = "etcd")]
            Store::Etcd(e) => e.commit(state, expected).await,
            #[cfg(test)]
            Store::Memory(m) => m.commit(state, expected),
        }
    }

    /// Follows changes made by other replicas, sending each new state to `changes`; returns
    /// only when `changes` is closed. The file backend has no other writers: it returns at
    /// once.
    pub async fn follow(
        &self,
        changes: tokio::sync::mpsc::Sender<Versioned>,
        metrics: &StoreMetrics,
    ) {
        #[cfg(feature = "etcd")]
        if let Store::Etcd(e) = self {
            e.follow(changes, metrics).await;
        }
        #[cfg(not(feature = "etcd"))]
        let _ = (changes, metrics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_specs() {
        assert_eq!(
            "file:/var/lib/corral".parse(),
            Ok(StoreSpec::File("/var/lib/corral".into()))
        );
        assert_eq!(
            "etcd:http://127.0.0.1:2379, http://127.0.0.1:22379".parse(),
            Ok(StoreSpec::Etcd(vec![
                "http://127.0.0.1:2379".into(),
                "http://127.0.0.1:22379".into()
            ]))
        );
        assert!("file:".parse::<StoreSpec>().is_err());
        assert!("etcd:".parse::<StoreSpec>().is_err());
        assert!("etcd:127.0.0.1:2379".parse::<StoreSpec>().is_err());
        assert!("etcd:https://h:2379".parse::<StoreSpec>().is_err());
        assert!("consul:x".parse::<StoreSpec>().is_err());
    }

    #[test]
    fn prefixes_end_with_a_slash() {
        assert_eq!(normalize_prefix("/corral/").unwrap(), "/corral/");
        assert_eq!(normalize_prefix("/t-1").unwrap(), "/t-1/");
        assert!(normalize_prefix("").is_err());
    }

    fn audited(entries: usize) -> State {
        let mut state = State::default();
        state.rancher.next_id = 7;
        for i in 0..entries {
            state
                .audit
                .push(crate::api::audit::sample_entry(i), usize::MAX);
        }
        state
    }

    #[test]
    fn fit_drops_the_oldest_audit_entries_to_stay_under_the_limit() {
        let full = audited(400);
        let whole = serde_json::to_vec(&full).unwrap().len();
        // Under the limit: the state is written as it is.
        let mut state = full.clone();
        assert_eq!(fit(&mut state, whole, "k").unwrap().len(), whole);
        assert_eq!(state, full);
        // Over it: the oldest entries go, the newest stay, and what is returned is `state`.
        let mut state = full.clone();
        let bytes = fit(&mut state, whole / 2, "k").unwrap();
        assert!(bytes.len() <= whole / 2, "{} > {}", bytes.len(), whole / 2);
        assert_eq!(bytes, serde_json::to_vec(&state).unwrap());
        assert!(
            state.audit.len() < 400 && state.audit.len() > 150,
            "{}",
            state.audit.len()
        );
        let newest = |s: &State| s.audit.entries().next_back().map(|e| e.id.clone());
        assert_eq!(newest(&state), newest(&full));
        assert_eq!(state.rancher, full.rancher);
        // Too large without any audit entry: refused, and nothing dropped.
        let mut state = full.clone();
        let err = fit(&mut state, 10, "k").unwrap_err();
        assert!(
            matches!(err, StoreError::TooLarge { limit: 10, .. }),
            "{err}"
        );
        assert_eq!(state, full);
    }

    #[tokio::test]
    async fn file_backend_always_commits_and_reloads() {
        let dir = std::env::temp_dir().join(format!("corral-store-enum-{}", std::process::id()));
        let store = Store::open(&StoreSpec::File(dir.clone()), "/corral/")
            .await
            .unwrap();
        assert_eq!(store.backend(), "file");
        assert_eq!(store.load().await.unwrap().state, State::default());
        let mut state = State::default();
        state.rancher.next_id = 7;
        assert!(matches!(
            store.commit(&mut state.clone(), 42).await.unwrap(),
            Commit::Done { revision: 0 }
        ));
        assert_eq!(store.load().await.unwrap().state, state);
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        // No other writers: returns at once.
        store
            .follow(tx, &crate::metrics::Metrics::new().store)
            .await;
        std::fs::remove_dir_all(dir).unwrap();
    }
}
