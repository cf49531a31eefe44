//! Key selection and the key state machine: pure functions of (state, event, now).
//!
//! The server keeps one [`Pool`] behind a short mutex. Before each upstream
//! attempt it calls [`Pool::choose`]; after the attempt it calls
//! [`Pool::report`] with what happened. [`Pool::tick`] clears cooldowns that
//! have ended, and [`Pool::reconcile`] merges the pool with the store file.
//! Nothing here reads the clock, touches the disk or blocks: every decision
//! takes `now` as a parameter so it can be tested exactly.

pub mod state;

#[cfg(test)]
mod tests;

use crate::secret::ApiKey;
use crate::store::model::{KeyRecord, StoreFile};
use chrono::{DateTime, Utc};
use state::KeyState;
use std::collections::{HashMap, HashSet};

/// How many consecutive failures disable a key unless configured otherwise.
pub const DEFAULT_MAX_FAILURES: u32 = 5;

/// Tunables of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Disable a key after this many consecutive failures (default 5).
    pub max_failures: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_failures: DEFAULT_MAX_FAILURES,
        }
    }
}

/// One key as the pool sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolKey {
    /// The key's stable short ID (see [`KeyRecord::id`]).
    pub id: String,
    /// The secret itself.
    pub key: ApiKey,
    /// A name the user gave the key.
    pub label: Option<String>,
    /// The account (`creator_user_id`) owning the key, when known.
    pub account: Option<String>,
    /// The administrative generation last adopted from the store.
    pub generation: u64,
    /// Runtime state: cooldown, disabled flag, counters.
    pub state: KeyState,
}

impl PoolKey {
    /// The pool's view of a store record, state included.
    pub fn from_record(record: &KeyRecord) -> Self {
        Self {
            id: record.id.clone(),
            key: record.key.clone(),
            label: record.label.clone(),
            account: record.account().map(str::to_owned),
            generation: record.generation,
            state: record.state.clone(),
        }
    }
}

/// The answer of [`Pool::choose`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Send the attempt with this key.
    Use {
        /// The key's ID, to pass back to [`Pool::report`].
        id: String,
        /// The secret to put in the `Authorization` header.
        key: ApiKey,
    },
    /// No key is usable now.
    Unavailable {
        /// Earliest cooldown end among keys that are not disabled; `None`
        /// when every key is disabled or the pool is empty.
        soonest: Option<DateTime<Utc>>,
        /// Keys usable now; always zero, since `choose` retries an excluded
        /// usable key rather than give up.
        active: usize,
        /// Keys waiting for a cooldown to end.
        cooling: usize,
        /// Keys out of rotation until reactivated.
        disabled: usize,
    },
}

/// What happened to one attempt made with a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The key worked: failure streak reset, one more request counted.
    Success,
    /// The key (or its whole account) is rate limited until `until`.
    ///
    /// A cooldown only ever extends: a key already cooling until later keeps
    /// its own end and reason. Not a failure. A cooldown ending at or before
    /// `now` parks nothing. Disabled keys are left alone.
    Cooldown {
        /// When the key may be used again.
        until: DateTime<Utc>,
        /// Why, e.g. `free-models-per-min`.
        reason: String,
        /// Park every key with the same known account too.
        account_wide: bool,
    },
    /// The key is unusable (e.g. 401): disable it at once.
    Disable {
        /// Why it was disabled.
        reason: String,
    },
    /// A 5xx, connection error or timeout: counts toward
    /// [`Settings::max_failures`].
    Failure {
        /// What went wrong this time.
        reason: String,
    },
    /// The client's own error, or nothing to do with the key: no change.
    Neutral,
}

/// A change to a key, for the key log and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A key started cooling, or its cooldown was extended.
    CooldownStarted {
        /// The key's ID.
        id: String,
        /// When the cooldown ends.
        until: DateTime<Utc>,
        /// Why it is cooling.
        reason: String,
    },
    /// A key was taken out of rotation.
    Disabled {
        /// The key's ID.
        id: String,
        /// Why it was disabled.
        reason: String,
    },
    /// A key's cooldown ended and it is back in rotation.
    Recovered {
        /// The key's ID.
        id: String,
    },
    /// A key appeared in the store file.
    Added {
        /// The key's ID.
        id: String,
    },
    /// A key disappeared from the store file.
    Removed {
        /// The key's ID.
        id: String,
    },
    /// An administrative reset (reactivate, re-add) was adopted.
    Reactivated {
        /// The key's ID.
        id: String,
    },
}

impl Event {
    /// The ID of the key the event is about.
    pub fn id(&self) -> &str {
        match self {
            Event::CooldownStarted { id, .. }
            | Event::Disabled { id, .. }
            | Event::Recovered { id }
            | Event::Added { id }
            | Event::Removed { id }
            | Event::Reactivated { id } => id,
        }
    }
}

/// How many keys are in each status at some instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Usable now.
    pub active: usize,
    /// Waiting for a cooldown to end.
    pub cooling: usize,
    /// Out of rotation until reactivated.
    pub disabled: usize,
}

/// A key's status without cloning its reasons; agrees with [`KeyState::status`].
enum Class {
    Active,
    Cooling(DateTime<Utc>),
    Disabled,
}

fn classify(state: &KeyState, now: DateTime<Utc>) -> Class {
    if state.disabled {
        return Class::Disabled;
    }
    match state.cooldown_until {
        Some(until) if until > now => Class::Cooling(until),
        _ => Class::Active,
    }
}

/// A candidate in the least-recently-used search: index and its `last_used`.
type Candidate = Option<(usize, Option<DateTime<Utc>>)>;

/// Keep `best` unless `idx` was used strictly longer ago (`None` is oldest),
/// so ties go to the earlier key in store order.
fn older(best: Candidate, idx: usize, last_used: Option<DateTime<Utc>>) -> Candidate {
    match best {
        Some((_, best_used)) if best_used <= last_used => best,
        _ => Some((idx, last_used)),
    }
}

/// Everything one pass over the keys learns for [`Pool::choose`].
#[derive(Default)]
struct Scan {
    counts: Counts,
    soonest: Option<DateTime<Utc>>,
    /// Least recently used usable key not in `exclude`.
    fresh: Candidate,
    /// Least recently used usable key, excluded or not.
    any: Candidate,
}

/// Park `key` until `until` unless it already cools at least as long.
fn park(
    key: &mut PoolKey,
    until: DateTime<Utc>,
    reason: &str,
    now: DateTime<Utc>,
) -> Option<Event> {
    if key.state.disabled || until <= now {
        return None;
    }
    if key
        .state
        .cooldown_until
        .is_some_and(|current| current >= until)
    {
        return None;
    }
    key.state.cooldown_until = Some(until);
    key.state.cooldown_reason = Some(reason.to_owned());
    Some(Event::CooldownStarted {
        id: key.id.clone(),
        until,
        reason: reason.to_owned(),
    })
}

/// Disable `key` with `reason` unless it already is (the first reason stays).
fn disable(key: &mut PoolKey, reason: String) -> Option<Event> {
    if key.state.disabled {
        return None;
    }
    key.state.disabled = true;
    key.state.disabled_reason = Some(reason.clone());
    Some(Event::Disabled {
        id: key.id.clone(),
        reason,
    })
}

/// The keys and the selection state of a running server.
#[derive(Debug, Clone, Default)]
pub struct Pool {
    /// Keys in store order.
    keys: Vec<PoolKey>,
    /// ID → position in `keys`.
    index: HashMap<String, usize>,
    /// The key chosen last time, reused while it stays usable.
    current: Option<String>,
    /// State changed since the last [`Pool::mark_clean`] or reconcile.
    dirty: bool,
    settings: Settings,
}

impl Pool {
    /// An empty pool.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            ..Self::default()
        }
    }

    /// A pool holding the store's keys, in store order, with their stored
    /// state. A repeated ID keeps its first record. The pool starts clean.
    pub fn from_records(records: &[KeyRecord], settings: Settings) -> Self {
        let mut pool = Self::new(settings);
        for record in records {
            if pool.index.contains_key(&record.id) {
                continue;
            }
            pool.index.insert(record.id.clone(), pool.keys.len());
            pool.keys.push(PoolKey::from_record(record));
        }
        pool
    }

    /// The pool's settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// How many keys the pool holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the pool holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many keys are active, cooling and disabled at `now`
    /// (by [`KeyState::status`]).
    pub fn counts(&self, now: DateTime<Utc>) -> Counts {
        let mut counts = Counts::default();
        for key in &self.keys {
            match classify(&key.state, now) {
                Class::Active => counts.active += 1,
                Class::Cooling(_) => counts.cooling += 1,
                Class::Disabled => counts.disabled += 1,
            }
        }
        counts
    }

    /// When some key can serve next: `now` if one is active, else the soonest
    /// cooldown end; `None` when every key is disabled or there is none.
    pub fn next_available(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.keys
            .iter()
            .filter_map(|key| match classify(&key.state, now) {
                Class::Active => Some(now),
                Class::Cooling(until) => Some(until),
                Class::Disabled => None,
            })
            .min()
    }

    /// The key with this ID.
    pub fn get(&self, id: &str) -> Option<&PoolKey> {
        self.index.get(id).and_then(|&idx| self.keys.get(idx))
    }

    /// Every key, in store order.
    pub fn keys(&self) -> impl Iterator<Item = &PoolKey> {
        self.keys.iter()
    }

    /// The ID of the sticky key: the one chosen last, until a report rotates.
    pub fn current(&self) -> Option<&str> {
        self.current.as_deref()
    }

    /// Pick the key for the next upstream attempt.
    ///
    /// The key chosen last time is reused while it is usable and not in
    /// `exclude`. Otherwise the least recently used usable key not in
    /// `exclude` is picked (never used counts as oldest; ties go to store
    /// order). When every usable key is excluded, the least recently used
    /// usable key is retried anyway. Cooling and disabled keys are never
    /// returned. The chosen key becomes the current key, gets
    /// `last_used = now`, and the pool becomes dirty.
    pub fn choose(&mut self, now: DateTime<Utc>, exclude: &[String]) -> Choice {
        let excluded = |id: &str| exclude.iter().any(|e| e == id);
        let sticky = self
            .current
            .as_deref()
            .filter(|id| !excluded(id))
            .and_then(|id| self.index.get(id).copied())
            .filter(|&idx| {
                self.keys
                    .get(idx)
                    .is_some_and(|key| key.state.is_available(now))
            });
        if let Some(choice) = sticky.and_then(|idx| self.hand_out(idx, now)) {
            return choice;
        }

        let mut scan = Scan::default();
        for (idx, key) in self.keys.iter().enumerate() {
            match classify(&key.state, now) {
                Class::Disabled => scan.counts.disabled += 1,
                Class::Cooling(until) => {
                    scan.counts.cooling += 1;
                    scan.soonest = Some(scan.soonest.map_or(until, |s| s.min(until)));
                }
                Class::Active => {
                    scan.counts.active += 1;
                    let used = key.state.last_used;
                    scan.any = older(scan.any, idx, used);
                    if !excluded(&key.id) {
                        scan.fresh = older(scan.fresh, idx, used);
                    }
                }
            }
        }
        let pick = scan.fresh.or(scan.any).map(|(idx, _)| idx);
        if let Some(choice) = pick.and_then(|idx| self.hand_out(idx, now)) {
            return choice;
        }
        Choice::Unavailable {
            soonest: scan.soonest,
            active: scan.counts.active,
            cooling: scan.counts.cooling,
            disabled: scan.counts.disabled,
        }
    }

    /// Hand out the key at `idx`: it becomes current and gets `last_used`.
    fn hand_out(&mut self, idx: usize, now: DateTime<Utc>) -> Option<Choice> {
        let key = self.keys.get_mut(idx)?;
        key.state.last_used = Some(now);
        self.dirty = true;
        self.current = Some(key.id.clone());
        Some(Choice::Use {
            id: key.id.clone(),
            key: key.key.clone(),
        })
    }

    /// Forget the current key if it is `id`, so the next choice rotates.
    fn rotate_away_from(&mut self, id: &str) {
        if self.current.as_deref() == Some(id) {
            self.current = None;
        }
    }

    /// Record what happened to an attempt made with key `id` and return the
    /// resulting changes. An unknown ID (the key was removed meanwhile) is
    /// ignored. Any state change marks the pool dirty; a cooldown, disable
    /// or failure of the current key makes the next choice rotate.
    pub fn report(&mut self, id: &str, outcome: Outcome, now: DateTime<Utc>) -> Vec<Event> {
        let Some(idx) = self.index.get(id).copied() else {
            return Vec::new();
        };
        let mut events = Vec::new();
        match outcome {
            Outcome::Neutral => {}
            Outcome::Success => {
                if let Some(key) = self.keys.get_mut(idx) {
                    key.state.consecutive_failures = 0;
                    key.state.requests_total = key.state.requests_total.saturating_add(1);
                    self.dirty = true;
                }
            }
            Outcome::Cooldown {
                until,
                reason,
                account_wide,
            } => {
                self.rotate_away_from(id);
                let account = if account_wide {
                    self.keys.get(idx).and_then(|key| key.account.clone())
                } else {
                    None
                };
                match account {
                    Some(account) => {
                        let same = |key: &&mut PoolKey| key.account.as_deref() == Some(&account);
                        for key in self.keys.iter_mut().filter(same) {
                            events.extend(park(key, until, &reason, now));
                        }
                    }
                    None => {
                        if let Some(key) = self.keys.get_mut(idx) {
                            events.extend(park(key, until, &reason, now));
                        }
                    }
                }
            }
            Outcome::Disable { reason } => {
                self.rotate_away_from(id);
                if let Some(key) = self.keys.get_mut(idx) {
                    events.extend(disable(key, reason));
                }
            }
            Outcome::Failure { reason } => {
                self.rotate_away_from(id);
                let max = self.settings.max_failures;
                if let Some(key) = self.keys.get_mut(idx) {
                    let state = &mut key.state;
                    state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                    state.failures_total = state.failures_total.saturating_add(1);
                    self.dirty = true;
                    let n = state.consecutive_failures;
                    if n >= max {
                        let why = format!("{n} consecutive failures (last: {reason})");
                        events.extend(disable(key, why));
                    }
                }
            }
        }
        if !events.is_empty() {
            self.dirty = true;
        }
        events
    }

    /// Clear every cooldown that has ended (`cooldown_until <= now`).
    /// Each key back in rotation yields [`Event::Recovered`]; a disabled
    /// key's stale cooldown is cleared silently.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Event> {
        let mut events = Vec::new();
        for key in &mut self.keys {
            if key.state.cooldown_until.is_some_and(|until| until <= now) {
                key.state.cooldown_until = None;
                key.state.cooldown_reason = None;
                self.dirty = true;
                if !key.state.disabled {
                    events.push(Event::Recovered { id: key.id.clone() });
                }
            }
        }
        events
    }

    /// Merge the pool with the store file, read under the store's lock; the
    /// caller writes `file` back afterwards.
    ///
    /// Keys only in the file are added, keys only in the pool removed. For a
    /// key in both, the file owns key, label, account and generation, and
    /// the pool owns the state, unless the file's generation is higher: then
    /// the admin reset is adopted (`KeyState::reactivate` on the pool's
    /// state). Every file record then receives the pool's state. The pool
    /// takes the file's order and becomes clean. Events come in file order
    /// (added, reactivated), then removals in the pool's former order.
    /// `_now` is accepted for symmetry with the other calls and not needed.
    pub fn reconcile(&mut self, file: &mut StoreFile, _now: DateTime<Utc>) -> Vec<Event> {
        let mut old: HashMap<String, PoolKey> = HashMap::with_capacity(self.keys.len());
        let mut removed = Vec::new();
        {
            let in_file: HashSet<&str> = file.keys.iter().map(|r| r.id.as_str()).collect();
            for key in std::mem::take(&mut self.keys) {
                if in_file.contains(key.id.as_str()) {
                    old.insert(key.id.clone(), key);
                } else {
                    removed.push(Event::Removed { id: key.id });
                }
            }
        }

        let mut events = Vec::new();
        let mut keys = Vec::with_capacity(file.keys.len());
        let mut index = HashMap::with_capacity(file.keys.len());
        for record in &file.keys {
            if index.contains_key(&record.id) {
                continue; // a repeated ID: the first record is the key
            }
            let key = match old.remove(&record.id) {
                Some(mut key) => {
                    key.key = record.key.clone();
                    key.label = record.label.clone();
                    key.account = record.account().map(str::to_owned);
                    if record.generation > key.generation {
                        key.state.reactivate();
                        events.push(Event::Reactivated { id: key.id.clone() });
                    }
                    key.generation = record.generation;
                    key
                }
                None => {
                    events.push(Event::Added {
                        id: record.id.clone(),
                    });
                    PoolKey::from_record(record)
                }
            };
            index.insert(key.id.clone(), keys.len());
            keys.push(key);
        }

        for record in &mut file.keys {
            if let Some(key) = index.get(&record.id).and_then(|&idx| keys.get(idx)) {
                record.state = key.state.clone();
            }
        }

        if self
            .current
            .as_ref()
            .is_some_and(|id| !index.contains_key(id))
        {
            self.current = None;
        }
        self.keys = keys;
        self.index = index;
        self.dirty = false;
        events.extend(removed);
        events
    }

    /// Whether state changed since the last [`Pool::mark_clean`] or
    /// [`Pool::reconcile`], i.e. whether the store needs writing.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Note that the current state has been saved.
    pub fn mark_clean(&mut self) {
        self.dirty = false;
    }
}
