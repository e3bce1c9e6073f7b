use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A duration written as whole milliseconds in JSON, so config files stay plain numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    pub const fn from_secs(secs: u64) -> Millis {
        Millis(secs * 1000)
    }
}

impl From<Millis> for Duration {
    fn from(m: Millis) -> Duration {
        Duration::from_millis(m.0)
    }
}
