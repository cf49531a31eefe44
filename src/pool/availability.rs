//! The one model of what a key can do at an instant: serve paid models now,
//! serve `:free` models now, and if not, until when and why (its own
//! cooldown, its account's credits, its account's `:free` caps per minute
//! and per day, or disabled). A pure function of the key's state, its
//! account's counts and `now` ([`judge`]): the key choice, the 429s,
//! `/health`, `/metrics`, `keys list` and the admin API all read it. The
//! views computed from a store ([`board`], [`views`]) build the pool the
//! server would build from it, so both paths read the same function.

use super::quota::AccountUsage;
use super::{Pool, PoolKey, Settings};
use crate::model::{Availability, FreeCounts, Held, Hold, KeyState, KeyStatus, KeyView, StoreFile};
use chrono::{DateTime, Utc};

/// Where the text of a hold's reason is kept (nothing is copied on the
/// request path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Disabled,
    Cooldown,
    FreeCooldown,
    Account,
}

/// A kind of request a key cannot serve now, before its reason is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Block {
    /// Why.
    pub(crate) hold: Hold,
    /// Until when; None while disabled.
    pub(crate) until: Option<DateTime<Utc>>,
    source: Source,
}

impl Block {
    fn read(self, state: &KeyState) -> Held {
        let reason = match self.source {
            Source::Disabled => state.disabled_reason.clone(),
            Source::Cooldown => state.cooldown_reason.clone(),
            Source::FreeCooldown => state.free_cooldown_reason.clone(),
            Source::Account => Some(self.hold.name().to_owned()),
        };
        Held {
            hold: self.hold,
            until: self.until,
            reason,
        }
    }
}

/// What a key can serve at an instant (`None`: now), cheap to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Judged {
    /// Paid models.
    pub(crate) paid: Option<Block>,
    /// `:free` models.
    pub(crate) free: Option<Block>,
}

impl Judged {
    /// The key's status.
    pub(crate) fn status(&self) -> KeyStatus {
        match (self.paid, self.free) {
            (Some(b), _) if b.hold == Hold::Disabled => KeyStatus::Disabled,
            (Some(_), _) => KeyStatus::Cooling,
            (None, Some(_)) => KeyStatus::FreeHeld,
            (None, None) => KeyStatus::Active,
        }
    }

    /// With the reasons read from `state`.
    pub(crate) fn read(&self, state: &KeyState) -> Availability {
        Availability {
            paid: self.paid.map(|b| b.read(state)),
            free: self.free.map(|b| b.read(state)),
        }
    }
}

/// The hold of a cooldown recorded for `reason`.
fn hold_of(reason: Option<&str>) -> Hold {
    match reason {
        Some(r) if r.contains("per-day") => Hold::DailyCap,
        Some(r) if r.contains("per-min") => Hold::MinuteCap,
        Some("insufficient-credits") => Hold::Credits,
        _ => Hold::Cooldown,
    }
}

/// What a key in `state`, whose account's `:free` use is `usage`, can
/// serve at `now`:
/// - disabled: nothing, until someone acts;
/// - cooling (its own cooldown, or its account's credits): nothing until
///   the cooldown ends;
/// - `:free` models also wait for a park of the key for them (an account
///   cap OpenRouter reported) and for the account's counts (a full
///   minute, or the day's cap until 00:00 UTC): until the latest of these.
///
/// `usage` may be None when only paid models matter.
pub(crate) fn judge(state: &KeyState, usage: Option<&AccountUsage>, now: DateTime<Utc>) -> Judged {
    if state.disabled {
        let off = Block {
            hold: Hold::Disabled,
            until: None,
            source: Source::Disabled,
        };
        return Judged {
            paid: Some(off),
            free: Some(off),
        };
    }
    let paid = state.cooldown(now).map(|until| Block {
        // A general cooldown is the key's own, or its account's credits.
        hold: match hold_of(state.cooldown_reason.as_deref()) {
            Hold::Credits => Hold::Credits,
            _ => Hold::Cooldown,
        },
        until: Some(until),
        source: Source::Cooldown,
    });
    let parked = state.free_cooldown(now).map(|until| Block {
        hold: hold_of(state.free_cooldown_reason.as_deref()),
        until: Some(until),
        source: Source::FreeCooldown,
    });
    let counted = usage.and_then(|u| {
        let until = u.blocked_until(now)?;
        Some(Block {
            hold: if u.daily_blocked(now) {
                Hold::DailyCap
            } else {
                Hold::MinuteCap
            },
            until: Some(until),
            source: Source::Account,
        })
    });
    // Usable for `:free` models when every one of them has ended.
    let free = [paid, parked, counted]
        .into_iter()
        .flatten()
        .reduce(|a, b| if b.until > a.until { b } else { a });
    Judged { paid, free }
}

/// How many keys are in each status at some instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Serve every model now.
    pub(crate) active: usize,
    /// Serve paid models now; `:free` ones are held.
    pub(crate) free_held: usize,
    /// Serve nothing until a cooldown ends.
    pub(crate) cooling: usize,
    /// Out of rotation until reactivated.
    pub(crate) disabled: usize,
}

/// Whether the pool can serve `:free` models at some instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FreeSummary {
    /// Keys that can serve them now.
    pub(crate) usable: usize,
    /// Keys that cannot now but will (not disabled).
    pub(crate) held: usize,
    /// When the first held key can, while none can now.
    pub(crate) next_usable_at: Option<DateTime<Utc>>,
}

impl Pool {
    /// A pool as the server builds it from `file` (keys, states, accounts'
    /// counts and what OpenRouter said), to read views from.
    pub(crate) fn from_store(file: &StoreFile, now: DateTime<Utc>) -> Pool {
        let mut pool = Pool::from_records(&file.keys, Settings::default());
        pool.adopt_accounts(file, now);
        pool
    }

    /// What `key` can serve at `now`.
    pub(crate) fn judged(&self, key: &PoolKey, now: DateTime<Utc>) -> Judged {
        judge(&key.state, self.accounts.get(&key.quota), now)
    }

    /// The `:free` counts of `key`'s account at `now`.
    pub(crate) fn free_counts(&self, key: &PoolKey, now: DateTime<Utc>) -> FreeCounts {
        match self.accounts.get(&key.quota) {
            Some(usage) => usage.counts(&key.quota, now),
            None => AccountUsage::default().counts(&key.quota, now),
        }
    }

    /// How many keys are in each status at `now`.
    pub(crate) fn counts(&self, now: DateTime<Utc>) -> Counts {
        let mut counts = Counts::default();
        for key in &self.keys {
            match self.judged(key, now).status() {
                KeyStatus::Active => counts.active += 1,
                KeyStatus::FreeHeld => counts.free_held += 1,
                KeyStatus::Cooling => counts.cooling += 1,
                KeyStatus::Disabled => counts.disabled += 1,
            }
        }
        counts
    }

    /// Whether `:free` models can be served at `now`, and when if not.
    pub(crate) fn free_summary(&self, now: DateTime<Utc>) -> FreeSummary {
        let mut summary = FreeSummary::default();
        let mut soonest: Option<DateTime<Utc>> = None;
        for key in &self.keys {
            match self.judged(key, now).free {
                None => summary.usable += 1,
                Some(Block {
                    until: Some(until), ..
                }) => {
                    summary.held += 1;
                    soonest = Some(soonest.map_or(until, |s| s.min(until)));
                }
                Some(_) => {}
            }
        }
        if summary.usable == 0 {
            summary.next_usable_at = soonest;
        }
        summary
    }

    /// Every account of the pool's keys (`key:<id>` for a key whose account
    /// is unknown) with its `:free` counts at `now`, in key order.
    pub(crate) fn accounts_at(&self, now: DateTime<Utc>) -> Vec<FreeCounts> {
        let mut seen = std::collections::HashSet::new();
        self.keys
            .iter()
            .filter(|k| seen.insert(k.quota.as_str()))
            .map(|k| self.free_counts(k, now))
            .collect()
    }
}

/// What each key of `file` can do at `now`, and its account's `:free`
/// counts, in the file's order: as a server that read `file` sees them.
pub(crate) fn board(file: &StoreFile, now: DateTime<Utc>) -> Vec<(Availability, FreeCounts)> {
    let pool = Pool::from_store(file, now);
    file.keys
        .iter()
        .map(|record| match pool.get(&record.id) {
            Some(key) => (
                pool.judged(key, now).read(&key.state),
                pool.free_counts(key, now),
            ),
            // Not reachable: every record is in the pool built from it.
            None => (
                Availability {
                    paid: None,
                    free: None,
                },
                FreeCounts::default(),
            ),
        })
        .collect()
}

/// The views of every key of `file` at `now` (`keys list --json`, the
/// admin API).
pub(crate) fn views(file: &StoreFile, now: DateTime<Utc>) -> Vec<KeyView> {
    file.keys
        .iter()
        .zip(board(file, now))
        .map(|(record, (availability, free))| KeyView::of(record, &availability, &free))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn at(secs: i64) -> DateTime<Utc> {
        t0() + TimeDelta::seconds(secs)
    }

    fn status(state: &KeyState, usage: Option<&AccountUsage>) -> KeyStatus {
        judge(state, usage, t0()).status()
    }

    #[test]
    fn a_fresh_key_serves_everything() {
        let j = judge(&KeyState::default(), Some(&AccountUsage::default()), t0());
        assert_eq!(
            j,
            Judged {
                paid: None,
                free: None
            }
        );
        assert_eq!(j.status(), KeyStatus::Active);
    }

    #[test]
    fn a_disabled_key_serves_nothing_until_someone_acts() {
        let state = KeyState {
            disabled: true,
            disabled_reason: Some("401 from OpenRouter: User not found.".into()),
            cooldown_until: Some(at(30)),
            ..KeyState::default()
        };
        let a = judge(&state, None, t0()).read(&state);
        assert_eq!(status(&state, None), KeyStatus::Disabled);
        let held = a.paid.clone().unwrap();
        assert_eq!((held.hold, held.until), (Hold::Disabled, None));
        assert_eq!(
            held.reason.as_deref(),
            Some("401 from OpenRouter: User not found.")
        );
        assert_eq!(a.free, a.paid);
    }

    #[test]
    fn a_cooldown_holds_both_kinds_and_credits_are_told_apart() {
        let mut state = KeyState {
            cooldown_until: Some(at(30)),
            cooldown_reason: Some("rate-limited".into()),
            ..KeyState::default()
        };
        let j = judge(&state, None, t0());
        assert_eq!(j.status(), KeyStatus::Cooling);
        assert_eq!(
            j.paid.map(|b| (b.hold, b.until)),
            Some((Hold::Cooldown, Some(at(30))))
        );
        assert_eq!(j.free, j.paid);
        state.cooldown_reason = Some("insufficient-credits".into());
        assert_eq!(judge(&state, None, t0()).paid.unwrap().hold, Hold::Credits);
        assert_eq!(status(&state, None), KeyStatus::Cooling);
        // Over, it holds nothing.
        assert_eq!(judge(&state, None, at(30)).status(), KeyStatus::Active);
    }

    #[test]
    fn a_free_park_holds_free_models_only() {
        let state = KeyState {
            free_cooldown_until: Some(at(40)),
            free_cooldown_reason: Some("free-models-per-min".into()),
            ..KeyState::default()
        };
        let a = judge(&state, None, t0()).read(&state);
        assert_eq!(a.paid, None);
        let held = a.free.unwrap();
        assert_eq!((held.hold, held.until), (Hold::MinuteCap, Some(at(40))));
        assert_eq!(held.reason.as_deref(), Some("free-models-per-min"));
        assert_eq!(status(&state, None), KeyStatus::FreeHeld);
        let day = KeyState {
            free_cooldown_reason: Some("free-models-per-day".into()),
            ..state
        };
        assert_eq!(judge(&day, None, t0()).free.unwrap().hold, Hold::DailyCap);
    }

    #[test]
    fn an_account_at_its_minute_cap_holds_free_models_until_the_window_frees() {
        let mut usage = AccountUsage::default();
        for s in 0..20 {
            usage.record(at(s - 50));
        }
        let j = judge(&KeyState::default(), Some(&usage), t0());
        assert_eq!(j.paid, None, "paid models are not counted");
        let free = j.free.unwrap();
        assert_eq!((free.hold, free.until), (Hold::MinuteCap, Some(at(10))));
        assert_eq!(j.status(), KeyStatus::FreeHeld);
        assert_eq!(
            j.read(&KeyState::default()).free.unwrap().reason.as_deref(),
            Some("free-models-per-min")
        );
        assert_eq!(
            judge(&KeyState::default(), Some(&usage), at(10)).status(),
            KeyStatus::Active
        );
    }

    #[test]
    fn an_account_at_its_daily_cap_holds_free_models_until_midnight() {
        let mut usage = AccountUsage {
            free_tier: Some(true),
            ..AccountUsage::default()
        };
        for i in 0..50 {
            usage.record(at(-3600 + i * 10));
        }
        let free = judge(&KeyState::default(), Some(&usage), t0())
            .free
            .unwrap();
        assert_eq!(free.hold, Hold::DailyCap);
        assert_eq!(free.until, Some(crate::clock::next_utc_midnight(t0())));
    }

    #[test]
    fn the_latest_of_several_holds_decides_when_free_models_are_served_again() {
        let mut usage = AccountUsage::default();
        for s in 0..20 {
            usage.record(at(s - 50));
        }
        // Cooling 5 s, parked for free models 20 s, the minute full for 10 s.
        let state = KeyState {
            cooldown_until: Some(at(5)),
            cooldown_reason: Some("rate-limited".into()),
            free_cooldown_until: Some(at(20)),
            free_cooldown_reason: Some("free-models-per-min".into()),
            ..KeyState::default()
        };
        let j = judge(&state, Some(&usage), t0());
        assert_eq!(j.status(), KeyStatus::Cooling);
        assert_eq!(j.paid.unwrap().until, Some(at(5)));
        assert_eq!(j.free.unwrap().until, Some(at(20)));
        assert_eq!(j.free.unwrap().source, Source::FreeCooldown);
        // After the cooldown, only free models wait.
        assert_eq!(
            judge(&state, Some(&usage), at(5)).status(),
            KeyStatus::FreeHeld
        );
    }
}
