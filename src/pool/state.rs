//! The runtime state of one key, as the server keeps it and the store persists it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Runtime state of a key. Persisted inside each store record as `"state"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyState {
    /// When the key was last handed out for a request.
    pub last_used: Option<DateTime<Utc>>,
    /// The key must not be used before this instant.
    pub cooldown_until: Option<DateTime<Utc>>,
    /// Why the key is cooling (e.g. `free-models-per-min`).
    pub cooldown_reason: Option<String>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// The key is out of rotation until reactivated.
    pub disabled: bool,
    /// Why the key was disabled.
    pub disabled_reason: Option<String>,
    /// Requests this key answered successfully.
    pub requests_total: u64,
    /// Attempts with this key that failed.
    pub failures_total: u64,
}

/// What a key can do at a given instant. Computed, never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Usable now.
    Active,
    /// Usable again at `until`.
    Cooling {
        /// When the cooldown ends.
        until: DateTime<Utc>,
        /// Why it is cooling.
        reason: Option<String>,
    },
    /// Out of rotation until reactivated.
    Disabled {
        /// Why it was disabled.
        reason: Option<String>,
    },
}

impl Status {
    /// The lower-case name used in tables and JSON: `active`, `cooling`, `disabled`.
    pub fn name(&self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Cooling { .. } => "cooling",
            Status::Disabled { .. } => "disabled",
        }
    }
}

impl KeyState {
    /// The key's status at `now`: a cooldown in the past reads as active.
    pub fn status(&self, now: DateTime<Utc>) -> Status {
        if self.disabled {
            return Status::Disabled {
                reason: self.disabled_reason.clone(),
            };
        }
        match self.cooldown_until {
            Some(until) if until > now => Status::Cooling {
                until,
                reason: self.cooldown_reason.clone(),
            },
            _ => Status::Active,
        }
    }

    /// Whether the key may be sent upstream at `now`.
    pub fn is_available(&self, now: DateTime<Utc>) -> bool {
        !self.disabled && self.cooldown_until.is_none_or(|until| until <= now)
    }

    /// Bring the key back: clear disabled flag, cooldown and failure count.
    /// Counters and `last_used` are history and stay.
    pub fn reactivate(&mut self) {
        self.disabled = false;
        self.disabled_reason = None;
        self.cooldown_until = None;
        self.cooldown_reason = None;
        self.consecutive_failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn fresh_key_is_active() {
        assert_eq!(KeyState::default().status(t0()), Status::Active);
        assert!(KeyState::default().is_available(t0()));
    }

    #[test]
    fn cooldown_in_future_is_cooling_and_past_is_active() {
        let mut s = KeyState {
            cooldown_until: Some(t0() + TimeDelta::seconds(42)),
            cooldown_reason: Some("free-models-per-min".into()),
            ..KeyState::default()
        };
        assert_eq!(s.status(t0()).name(), "cooling");
        assert!(!s.is_available(t0()));
        assert_eq!(s.status(t0() + TimeDelta::seconds(42)), Status::Active);
        assert!(s.is_available(t0() + TimeDelta::seconds(42)));
        s.disabled = true;
        assert_eq!(s.status(t0() + TimeDelta::seconds(100)).name(), "disabled");
    }

    #[test]
    fn reactivate_clears_everything_but_history() {
        let mut s = KeyState {
            last_used: Some(t0()),
            cooldown_until: Some(t0()),
            cooldown_reason: Some("x".into()),
            consecutive_failures: 4,
            disabled: true,
            disabled_reason: Some("401".into()),
            requests_total: 7,
            failures_total: 9,
        };
        s.reactivate();
        assert_eq!(
            s,
            KeyState {
                last_used: Some(t0()),
                requests_total: 7,
                failures_total: 9,
                ..KeyState::default()
            }
        );
    }
}
