//! Service states and which actions each allows (Cattle's process definitions, §1.6).
//!
//! Transitions are synchronous: `upgrading`, `rolling-back`, `finishing-upgrade` are passed
//! through instantly, so every stored state is at rest (`transitioning: "no"`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceState {
    Inactive,
    Active,
    Upgraded,
    CanceledUpgrade,
    CanceledRollback,
    /// Only in the rendering of a deleted resource.
    Removed,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Inactive => "inactive",
            ServiceState::Active => "active",
            ServiceState::Upgraded => "upgraded",
            ServiceState::CanceledUpgrade => "canceled-upgrade",
            ServiceState::CanceledRollback => "canceled-rollback",
            ServiceState::Removed => "removed",
        }
    }

    /// Whether a load balancer in this state has its listeners open. An upgrade (and a
    /// canceled one) happens on a running service, so those states serve too.
    pub fn serves(self) -> bool {
        matches!(
            self,
            ServiceState::Active
                | ServiceState::Upgraded
                | ServiceState::CanceledUpgrade
                | ServiceState::CanceledRollback
        )
    }
}

/// Every action a service declares, in `resourceActions` order.
pub const SERVICE_ACTIONS: &[&str] = &[
    "activate",
    "deactivate",
    "addservicelink",
    "removeservicelink",
    "setservicelinks",
    "upgrade",
    "finishupgrade",
    "rollback",
    "cancelupgrade",
    "cancelrollback",
    "continueupgrade",
    "restart",
    "update",
    "remove",
];

/// The state an action leads to, or `None` if it is not available in `from`. State-independent
/// actions (links, update) keep the state.
pub fn transition(from: ServiceState, action: &str) -> Option<ServiceState> {
    use ServiceState::*;
    if from == Removed {
        return None;
    }
    match (action, from) {
        ("activate", Inactive) => Some(Active),
        ("deactivate", Active | Upgraded | CanceledUpgrade | CanceledRollback) => Some(Inactive),
        ("upgrade", Active | Inactive) => Some(Upgraded),
        ("finishupgrade", Upgraded) => Some(Active),
        ("rollback", Upgraded | CanceledUpgrade) => Some(Active),
        ("continueupgrade", CanceledUpgrade) => Some(Upgraded),
        ("restart", Active) => Some(Active),
        ("addservicelink" | "removeservicelink" | "setservicelinks" | "update", s) => Some(s),
        ("remove", _) => Some(Removed),
        // `cancelupgrade` (from upgrading/finishing-upgrade) and `cancelrollback` (from
        // rolling-back) are declared, but those states are never at rest here.
        _ => None,
    }
}

/// The actions available now, in declaration order.
pub fn available(from: ServiceState) -> impl Iterator<Item = &'static str> {
    SERVICE_ACTIONS
        .iter()
        .copied()
        .filter(move |a| transition(from, a).is_some())
}

/// Certificates have no life cycle here: always active.
pub const CERTIFICATE_ACTIONS: &[&str] = &["update", "remove"];

#[cfg(test)]
mod tests {
    use super::ServiceState::*;
    use super::*;

    #[test]
    fn table_of_the_contract() {
        assert_eq!(transition(Inactive, "activate"), Some(Active));
        assert_eq!(transition(Active, "activate"), None);
        assert_eq!(transition(Active, "deactivate"), Some(Inactive));
        assert_eq!(transition(Inactive, "deactivate"), None);
        assert_eq!(transition(Active, "upgrade"), Some(Upgraded));
        assert_eq!(transition(Inactive, "upgrade"), Some(Upgraded));
        assert_eq!(transition(Upgraded, "upgrade"), None);
        assert_eq!(transition(Upgraded, "finishupgrade"), Some(Active));
        assert_eq!(transition(Active, "finishupgrade"), None);
        assert_eq!(transition(Upgraded, "rollback"), Some(Active));
        assert_eq!(transition(CanceledUpgrade, "rollback"), Some(Active));
        assert_eq!(transition(Active, "rollback"), None);
        assert_eq!(transition(Upgraded, "cancelupgrade"), None);
        assert_eq!(transition(Active, "cancelrollback"), None);
        for s in [Inactive, Active, Upgraded] {
            assert_eq!(transition(s, "addservicelink"), Some(s));
            assert_eq!(transition(s, "setservicelinks"), Some(s));
            assert_eq!(transition(s, "removeservicelink"), Some(s));
        }
        assert_eq!(transition(Active, "nonsense"), None);
    }

    #[test]
    fn listed_actions() {
        let inactive: Vec<_> = available(Inactive).collect();
        assert!(inactive.contains(&"activate") && inactive.contains(&"upgrade"));
        assert!(!inactive.contains(&"deactivate") && !inactive.contains(&"finishupgrade"));
        let upgraded: Vec<_> = available(Upgraded).collect();
        assert!(upgraded.contains(&"finishupgrade") && upgraded.contains(&"rollback"));
        assert!(!upgraded.contains(&"upgrade") && !upgraded.contains(&"activate"));
    }

    #[test]
    fn serving_states() {
        assert!(Active.serves() && Upgraded.serves() && CanceledUpgrade.serves());
        assert!(!Inactive.serves() && !Removed.serves());
    }
}
