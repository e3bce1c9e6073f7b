//! Target health: active checks (the Consul agent's HTTP, TCP and TTL checks, run for real)
//! and passive health (targets failing requests cool off).

mod active;
mod passive;
pub(crate) mod tls;

pub use active::{spawn, TtlClock, MAX_CONCURRENT_PROBES};
pub use passive::PassiveHealth;
