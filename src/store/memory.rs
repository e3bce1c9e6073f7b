//! A test backend with etcd's semantics (revisions, compare-on-revision) and knobs to make
//! another "replica" write first or the store go down.

use parking_lot::Mutex;

use super::{Commit, State, StoreError, Versioned};

#[derive(Default)]
pub struct MemoryStore {
    pub inner: Mutex<Memory>,
}

#[derive(Default)]
pub struct Memory {
    pub current: Option<Versioned>,
    /// States another replica writes just before each of the next commits.
    pub racers: Vec<State>,
    pub down: bool,
    /// A document limit, as etcd has.
    pub limit: Option<usize>,
}

impl MemoryStore {
    pub fn load(&self) -> Result<Versioned, StoreError> {
        let g = self.inner.lock();
        if g.down {
            return Err(StoreError::Unavailable("memory store down".into()));
        }
        Ok(g.current.clone().unwrap_or(Versioned {
            state: State::default(),
            revision: 0,
        }))
    }

    pub fn commit(&self, state: &mut State, expected: i64) -> Result<Commit, StoreError> {
        let mut g = self.inner.lock();
        if let Some(limit) = g.limit {
            super::fit(state, limit, "memory")?;
        }
        if g.down {
            return Err(StoreError::Unavailable("memory store down".into()));
        }
        let revision = g.current.as_ref().map_or(0, |v| v.revision);
        if let Some(racer) = g.racers.pop() {
            g.current = Some(Versioned {
                state: racer,
                revision: revision + 1,
            });
        }
        let current = g.current.clone().unwrap_or(Versioned {
            state: State::default(),
            revision: 0,
        });
        if current.revision != expected {
            return Ok(Commit::Conflict(current));
        }
        let revision = current.revision + 1;
        g.current = Some(Versioned {
            state: state.clone(),
            revision,
        });
        Ok(Commit::Done { revision })
    }
}
