//! The runtime state of one key, as the server keeps it and the store persists it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
    /// The key must not be used for `:free` models before this instant
    /// (an account's free-model cap); paid models may still use it.
    pub free_cooldown_until: Option<DateTime<Utc>>,
    /// Why it is parked for free models (e.g. `free-models-per-day`).
    pub free_cooldown_reason: Option<String>,
    /// A disabled key that the server re-checks with `GET /key` and brings
    /// back when healthy (disabled by failures, not by a 401).
    pub auto_recover: bool,
    /// When the server last re-checked this disabled key.
    pub last_probe: Option<DateTime<Utc>>,
    /// OpenRouter rejected the key (401): a disabled key re-checked on a
    /// slower schedule.
    pub rejected: bool,
    /// Fields this version does not know (written by a newer orproxy),
    /// kept as they were when the state is written back.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl KeyState {
    /// The end of the general cooldown, if it is still running at `now`.
    pub(crate) fn cooldown(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cooldown_until.filter(|until| *until > now)
    }

    /// The end of the free-models cooldown, if it is still running at `now`.
    pub(crate) fn free_cooldown(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.free_cooldown_until.filter(|until| *until > now)
    }

    /// Whether the key may be sent upstream at `now` for any model.
    pub(crate) fn is_available(&self, now: DateTime<Utc>) -> bool {
        self.is_available_for(now, false)
    }

    /// Whether the key may be sent upstream at `now`, for a `:free` model
    /// when `free`.
    pub(crate) fn is_available_for(&self, now: DateTime<Utc>, free: bool) -> bool {
        !self.disabled
            && self.cooldown(now).is_none()
            && !(free && self.free_cooldown(now).is_some())
    }

    /// Bring the key back: clear disabled flag, cooldown and failure count.
    /// Counters and `last_used` are history and stay.
    pub(crate) fn reactivate(&mut self) {
        self.disabled = false;
        self.disabled_reason = None;
        self.cooldown_until = None;
        self.cooldown_reason = None;
        self.free_cooldown_until = None;
        self.free_cooldown_reason = None;
        self.consecutive_failures = 0;
        self.auto_recover = false;
        self.rejected = false;
        self.last_probe = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn free_cooldown_blocks_only_free_models() {
        let s = KeyState {
            free_cooldown_until: Some(t0() + TimeDelta::hours(3)),
            free_cooldown_reason: Some("free-models-per-day".into()),
            ..KeyState::default()
        };
        assert!(s.is_available_for(t0(), false));
        assert!(!s.is_available_for(t0(), true));
        assert_eq!(s.free_cooldown(t0()), Some(t0() + TimeDelta::hours(3)));
        assert!(s.is_available_for(t0() + TimeDelta::hours(3), true));
    }

    #[test]
    fn general_cooldown_blocks_everything() {
        let s = KeyState {
            cooldown_until: Some(t0() + TimeDelta::seconds(30)),
            cooldown_reason: Some("rate-limited".into()),
            free_cooldown_until: Some(t0() + TimeDelta::hours(3)),
            free_cooldown_reason: Some("free-models-per-day".into()),
            ..KeyState::default()
        };
        assert!(!s.is_available_for(t0(), false));
        assert!(!s.is_available_for(t0() + TimeDelta::seconds(30), true));
        assert!(s.is_available_for(t0() + TimeDelta::seconds(30), false));
    }

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn fresh_key_is_available() {
        assert!(KeyState::default().is_available(t0()));
        assert!(KeyState::default().is_available_for(t0(), true));
    }

    #[test]
    fn a_cooldown_blocks_until_it_ends() {
        let mut s = KeyState {
            cooldown_until: Some(t0() + TimeDelta::seconds(42)),
            cooldown_reason: Some("free-models-per-min".into()),
            ..KeyState::default()
        };
        assert_eq!(s.cooldown(t0()), Some(t0() + TimeDelta::seconds(42)));
        assert!(!s.is_available(t0()));
        assert_eq!(s.cooldown(t0() + TimeDelta::seconds(42)), None);
        assert!(s.is_available(t0() + TimeDelta::seconds(42)));
        s.disabled = true;
        assert!(!s.is_available(t0() + TimeDelta::seconds(100)));
        assert!(!s.is_available_for(t0(), true));
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
            free_cooldown_until: Some(t0()),
            free_cooldown_reason: Some("free-models-per-day".into()),
            auto_recover: true,
            last_probe: Some(t0()),
            rejected: true,
            extra: Default::default(),
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
