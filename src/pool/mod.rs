//! Key selection and the key state machine: pure functions of (state, event, now).
//!
//! The server keeps one [`Pool`] behind a short mutex. Before each upstream
//! attempt it calls [`Pool::choose`]; after the attempt it calls
//! [`Pool::report`] with what happened. [`Pool::tick`] clears cooldowns that
//! have ended, and [`Pool::reconcile`] merges the pool with the store file.
//! Nothing here reads the clock, touches the disk or blocks: every decision
//! takes `now` as a parameter so it can be tested exactly.

pub(crate) mod accounts;
pub(crate) mod availability;
pub(crate) mod decide;
pub(crate) mod quota;
pub(crate) mod upstream;

#[cfg(test)]
mod tests;

pub(crate) use availability::{Counts, FreeSummary};

use crate::model::{Hold, KeyRecord, KeyState, StoreFile, quota_account};
use crate::secret::ApiKey;
use chrono::{DateTime, Utc};
use quota::AccountUsage;
use std::collections::{HashMap, HashSet};

/// How many consecutive failures disable a key unless configured otherwise.
pub(crate) const DEFAULT_MAX_FAILURES: u32 = 5;

/// What follows the count in the reason of a key disabled by a streak of
/// failures whose last was `last`: "5 consecutive failures (last: HTTP
/// 502)". The Redis script, which counts shared streaks, is given this text.
pub(crate) fn streak_suffix(last: &str) -> String {
    format!(" consecutive failures (last: {last})")
}

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
pub(crate) struct PoolKey {
    /// The key's stable short ID (see [`KeyRecord::id`]).
    pub(crate) id: String,
    /// The secret itself.
    pub(crate) key: ApiKey,
    /// A name the user gave the key.
    pub(crate) label: Option<String>,
    /// The account (`creator_user_id`) owning the key, when known.
    pub(crate) account: Option<String>,
    /// The administrative generation last adopted from the store.
    pub(crate) generation: u64,
    /// Runtime state: cooldown, disabled flag, counters.
    pub(crate) state: KeyState,
    /// Where its free-model requests are counted: the account, or
    /// `key:<id>` when the account is unknown.
    pub(crate) quota: String,
    /// With a shared store: the version of the stored state last adopted,
    /// so that an older one arriving late is ignored.
    pub(crate) version: u64,
    /// A failure that may be the key's, not counted yet (see
    /// [`Pool::report`]): its reason and when it happened.
    pub(crate) suspect: Option<(String, DateTime<Utc>)>,
}

impl PoolKey {
    /// The pool's view of a store record, state included.
    pub(crate) fn from_record(record: &KeyRecord) -> Self {
        Self {
            id: record.id.clone(),
            key: record.key.clone(),
            label: record.label.clone(),
            account: record.account().map(str::to_owned),
            generation: record.generation,
            state: record.state.clone(),
            quota: record.quota_account(),
            version: 0,
            suspect: None,
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
    /// No key is usable now for this kind of request.
    Unavailable {
        /// When the first key that is not disabled can serve it; `None`
        /// when every key is disabled or the pool is empty.
        soonest: Option<DateTime<Utc>>,
        /// Why the keys are held (the availability model's reasons).
        holds: Holds,
    },
}

/// How many keys a request could not use, by why they are held (see
/// [`crate::model::Hold`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Holds {
    /// Cooling: a 429 about the key, its spending limit.
    pub cooldown: usize,
    /// Cooling: the account is out of credits.
    pub credits: usize,
    /// `:free` models: the account's per-minute cap.
    pub minute: usize,
    /// `:free` models: the account's daily cap, until 00:00 UTC.
    pub daily: usize,
    /// Out of rotation until reactivated.
    pub disabled: usize,
}

impl Holds {
    fn add(&mut self, hold: Hold) {
        let slot = match hold {
            Hold::Disabled => &mut self.disabled,
            Hold::Cooldown => &mut self.cooldown,
            Hold::Credits => &mut self.credits,
            Hold::MinuteCap => &mut self.minute,
            Hold::DailyCap => &mut self.daily,
        };
        *slot += 1;
    }

    /// Keys held for a while (not disabled).
    pub(crate) fn held(&self) -> usize {
        self.cooldown + self.credits + self.minute + self.daily
    }

    /// Every key that is not disabled waits for its account's daily cap
    /// (so the wait is until 00:00 UTC).
    pub(crate) fn all_daily(&self) -> bool {
        self.daily > 0 && self.daily == self.held()
    }

    /// Every key that is not disabled waits for one of its account's
    /// `:free` caps: paid models are not held.
    pub(crate) fn free_caps_only(&self) -> bool {
        self.held() > 0 && self.minute + self.daily == self.held()
    }
}

/// What happened to one attempt made with a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
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
        /// Park it for `:free` models only (an account's free-model cap):
        /// paid models may still use it.
        free_only: bool,
    },
    /// The key is unusable (e.g. 401): disable it at once.
    Disable {
        /// Why it was disabled.
        reason: String,
        /// Re-check it in the background and bring it back when healthy.
        recoverable: bool,
        /// OpenRouter rejected the key (401): re-checked on a slower
        /// schedule, in case OpenRouter answered so by mistake.
        rejected: bool,
    },
    /// The attempt failed without a usable answer. Whether the key is to
    /// blame depends on the `fault` and on what the other keys get: see
    /// [`Pool::report`].
    Failed {
        /// What kind of failure.
        fault: Fault,
        /// What went wrong this time.
        reason: String,
    },
    /// The client's own error, or nothing to do with the key: no change.
    Neutral,
}

/// What kind of failure an attempt met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// No answer at all: refused, DNS, TLS, a reset, a connect timeout. The
    /// path to the upstream is broken whichever key is used: never the
    /// key's fault.
    Unreachable,
    /// No response headers in time, or an answer that went silent: a hang
    /// is not the key's fault.
    Hung,
    /// A 5xx (or 408) that names no provider: the key's only if other keys
    /// are answered normally meanwhile.
    ServerError,
    /// An answer that broke off or could not be read: like `ServerError`.
    Broken,
}

impl Fault {
    /// Whether the upstream gave no answer at all (never the key's fault).
    pub fn no_answer(self) -> bool {
        matches!(self, Fault::Unreachable | Fault::Hung)
    }
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
    /// A failure was counted against a key: it failed while another key
    /// was answered normally.
    Blamed {
        /// The key's ID.
        id: String,
        /// The failure.
        reason: String,
        /// The key's failures in a row now.
        streak: u32,
    },
    /// The upstream went down or came back.
    Upstream(upstream::Change),
}

#[cfg(test)]
impl Event {
    /// The ID of the key the event is about.
    pub(crate) fn id(&self) -> &str {
        match self {
            Event::CooldownStarted { id, .. }
            | Event::Disabled { id, .. }
            | Event::Recovered { id }
            | Event::Added { id }
            | Event::Removed { id }
            | Event::Reactivated { id }
            | Event::Blamed { id, .. } => id,
            Event::Upstream(_) => "",
        }
    }
}

/// A key's class for one kind of request (`free`: a `:free` model), by
/// the availability model.
enum Class {
    Active,
    /// Usable again at this instant, for this reason.
    Held(DateTime<Utc>, Hold),
    Disabled,
}

fn class_for(
    key: &PoolKey,
    accounts: &HashMap<String, AccountUsage>,
    now: DateTime<Utc>,
    free: bool,
) -> Class {
    // Paid models do not read the account's counts.
    let usage = if free { accounts.get(&key.quota) } else { None };
    let judged = availability::judge(&key.state, usage, now);
    match if free { judged.free } else { judged.paid } {
        None => Class::Active,
        Some(block) => match block.until {
            Some(until) if block.hold != Hold::Disabled => Class::Held(until, block.hold),
            _ => Class::Disabled,
        },
    }
}

/// A candidate in the least-recently-used search: index and its `last_used`.
type Oldest = Option<(usize, Option<DateTime<Utc>>)>;

/// Keep `best` unless `idx` was used strictly longer ago (`None` is oldest),
/// so ties go to the earlier key in store order.
fn older(best: Oldest, idx: usize, last_used: Option<DateTime<Utc>>) -> Oldest {
    match best {
        Some((_, best_used)) if best_used <= last_used => best,
        _ => Some((idx, last_used)),
    }
}

/// Everything one pass over the keys learns for [`Pool::choose`].
#[derive(Default)]
struct Scan {
    holds: Holds,
    soonest: Option<DateTime<Utc>>,
    /// Least recently used usable key not in `exclude`.
    fresh: Oldest,
    /// Least recently used usable key, excluded or not.
    any: Oldest,
}

/// A stored state, with the history fields (`last_used`, totals) taking the
/// larger of ours and the store's: the store owns the rest.
fn merged(local: &KeyState, remote: &KeyState) -> KeyState {
    let mut state = remote.clone();
    state.last_used = local.last_used.max(remote.last_used);
    state.requests_total = local.requests_total.max(remote.requests_total);
    state.failures_total = local.failures_total.max(remote.failures_total);
    state
}

/// Park `key` until `until` unless it already cools at least as long
/// (for free models only when `free_only`).
fn park(
    key: &mut PoolKey,
    until: DateTime<Utc>,
    reason: &str,
    free_only: bool,
    now: DateTime<Utc>,
) -> Option<Event> {
    if key.state.disabled || until <= now {
        return None;
    }
    let state = &mut key.state;
    let (slot, why) = if free_only {
        (
            &mut state.free_cooldown_until,
            &mut state.free_cooldown_reason,
        )
    } else {
        (&mut state.cooldown_until, &mut state.cooldown_reason)
    };
    if slot.is_some_and(|current| current >= until) {
        return None;
    }
    *slot = Some(until);
    *why = Some(reason.to_owned());
    Some(Event::CooldownStarted {
        id: key.id.clone(),
        until,
        reason: reason.to_owned(),
    })
}

/// Disable `key` with `reason` unless it already is (the first reason stays).
/// Its first re-check is due a whole interval later: the answer that
/// disabled it counts as the last check.
fn disable(
    key: &mut PoolKey,
    reason: String,
    (recoverable, rejected): (bool, bool),
    now: DateTime<Utc>,
) -> Option<Event> {
    if key.state.disabled {
        return None;
    }
    key.state.disabled = true;
    key.state.disabled_reason = Some(reason.clone());
    key.state.auto_recover = recoverable;
    key.state.rejected = rejected;
    key.state.last_probe = Some(now);
    key.suspect = None;
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
    /// Only counters changed (last use, requests served, free-model counts)
    /// since the last [`Pool::mark_clean`]: worth saving, but not urgently.
    touched: bool,
    settings: Settings,
    /// Free-model use per account (see [`PoolKey::quota`]).
    accounts: HashMap<String, AccountUsage>,
    /// Models backing off (OpenRouter's shared capacity): not before then.
    models: HashMap<String, DateTime<Utc>>,
    /// The last failed answer that may have been its key's: the key, the
    /// kind of failure, when.
    last_failure: Option<(String, Fault, DateTime<Utc>)>,
    /// Whether the upstream itself is down.
    upstream: upstream::Health,
}

/// How long a failure that may be its key's waits to be counted: another
/// key must be answered normally within this time.
const SUSPECT_FOR: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// How close together the same failure with two different keys must come
/// to count as the upstream's.
const ACROSS_KEYS_WITHIN: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// A key OpenRouter rejected (401) is re-checked this many times more
/// rarely than one disabled by failures.
const REJECTED_RECHECK_FACTOR: i32 = 12;

/// Which of an account's caps OpenRouter reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapKind {
    /// Free-model requests per minute.
    PerMinute,
    /// Free-model requests per UTC day.
    PerDay,
}

/// What a background `GET /key` re-check of a disabled key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Probe {
    /// The key answers and can spend: bring it back.
    Healthy,
    /// OpenRouter rejects the key (401): it stays disabled for good.
    Invalid(String),
    /// Still not usable (unreachable, no credit left...): check again later.
    StillDown(String),
}

impl Pool {
    /// An empty pool.
    pub(crate) fn new(settings: Settings) -> Self {
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

    /// Adopt what the store knows about accounts: persisted free-model
    /// counts (another writer's, or from before a restart; counts only grow
    /// within a day, unless one was reset since: see
    /// [`AccountUsage::merge_record`]) and tiers, limits and counts from
    /// `GET /key` info. The store is this server's own file: requests sent
    /// since it was last written are not in it.
    pub(crate) fn adopt_accounts(&mut self, file: &StoreFile, now: DateTime<Utc>) {
        self.merge_accounts(file, now, false);
    }

    /// [`Pool::adopt_accounts`]; `shared`: the store counts every
    /// instance's requests itself. Returns the accounts whose count was
    /// reset (the user forgot it, or OpenRouter counted fewer) since this
    /// pool last looked.
    fn merge_accounts(
        &mut self,
        file: &StoreFile,
        now: DateTime<Utc>,
        shared: bool,
    ) -> HashSet<String> {
        let mut reset = HashSet::new();
        for (account, record) in &file.accounts {
            let usage = self.accounts.entry(account.clone()).or_default();
            if usage.merge_record(record, now, shared) {
                reset.insert(account.clone());
            }
        }
        for record in &file.keys {
            if let Some(info) = &record.info {
                self.accounts
                    .entry(record.quota_account())
                    .or_default()
                    .adopt_info(info, now);
            }
        }
        reset
    }

    /// The pool's settings.
    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// How many keys the pool holds.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    #[cfg(test)]
    /// Whether the pool holds no key.
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// When some key can serve next: `now` if one can serve every model,
    /// else the soonest end of a hold; `None` when every key is disabled or
    /// there is none.
    pub(crate) fn next_available(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.keys
            .iter()
            .filter_map(|key| match self.judged(key, now).free {
                None => Some(now),
                Some(block) => block.until,
            })
            .min()
    }

    /// The key with this ID.
    pub(crate) fn get(&self, id: &str) -> Option<&PoolKey> {
        self.index.get(id).and_then(|&idx| self.keys.get(idx))
    }

    /// Every key, in store order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &PoolKey> {
        self.keys.iter()
    }

    #[cfg(test)]
    /// The ID of the sticky key: the one chosen last, until a report rotates.
    pub(crate) fn current(&self) -> Option<&str> {
        self.current.as_deref()
    }

    #[cfg(test)]
    /// Pick the key for the next upstream attempt.
    ///
    /// The key chosen last time is reused while it is usable and not in
    /// `exclude`. Otherwise the least recently used usable key not in
    /// `exclude` is picked (never used counts as oldest; ties go to store
    /// order). When every usable key is excluded, the least recently used
    /// usable key is retried anyway. Cooling and disabled keys are never
    /// returned. The chosen key becomes the current key, gets
    /// `last_used = now`, and the pool becomes dirty.
    pub(crate) fn choose(&mut self, now: DateTime<Utc>, exclude: &[String]) -> Choice {
        self.choose_for(now, exclude, false)
    }

    /// [`Pool::choose`] for one kind of request: with `free` (a `:free`
    /// model), keys parked for free models only and keys whose account has
    /// reached its free-model cap are skipped too, and the attempt is
    /// counted against the chosen key's account.
    pub fn choose_for(&mut self, now: DateTime<Utc>, exclude: &[String], free: bool) -> Choice {
        let excluded = |id: &str| exclude.iter().any(|e| e == id);
        let sticky = self
            .current
            .as_deref()
            .filter(|id| !excluded(id))
            .and_then(|id| self.index.get(id).copied())
            .filter(|&idx| {
                self.keys.get(idx).is_some_and(|key| {
                    matches!(class_for(key, &self.accounts, now, free), Class::Active)
                })
            });
        if let Some(choice) = sticky.and_then(|idx| self.hand_out(idx, now, free)) {
            return choice;
        }

        let mut scan = Scan::default();
        for (idx, key) in self.keys.iter().enumerate() {
            match class_for(key, &self.accounts, now, free) {
                Class::Disabled => scan.holds.add(Hold::Disabled),
                Class::Held(until, hold) => {
                    scan.holds.add(hold);
                    scan.soonest = Some(scan.soonest.map_or(until, |s| s.min(until)));
                }
                Class::Active => {
                    let used = key.state.last_used;
                    scan.any = older(scan.any, idx, used);
                    if !excluded(&key.id) {
                        scan.fresh = older(scan.fresh, idx, used);
                    }
                }
            }
        }
        let pick = scan.fresh.or(scan.any).map(|(idx, _)| idx);
        if let Some(choice) = pick.and_then(|idx| self.hand_out(idx, now, free)) {
            return choice;
        }
        Choice::Unavailable {
            soonest: scan.soonest,
            holds: scan.holds,
        }
    }

    /// Hand out the key at `idx`: it becomes current and gets `last_used`.
    fn hand_out(&mut self, idx: usize, now: DateTime<Utc>, free: bool) -> Option<Choice> {
        let key = self.keys.get_mut(idx)?;
        key.state.last_used = Some(now);
        if free {
            let usage = self.accounts.entry(key.quota.clone()).or_default();
            usage.record(now);
            // The account's keys are now held for `:free` models: news for
            // `keys list`, written within a second.
            if usage.blocked_until(now).is_some() {
                self.dirty = true;
            }
        }
        self.touched = true;
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
    ///
    /// A key is blamed only for what it caused ([`Outcome::Failed`]):
    /// - a failure without an answer ([`Fault::no_answer`]) is never the
    ///   key's; two in a row mean the upstream is down;
    /// - a failed answer ([`Fault::ServerError`], [`Fault::Broken`]) is held
    ///   as the key's *suspect* failure: it counts toward the key's streak
    ///   (and `max_failures`) only when another key is answered normally
    ///   within [`SUSPECT_FOR`]; when another key fails the same way first,
    ///   nobody is blamed and the upstream is down.
    ///
    /// Every outcome but a failure says the upstream answers.
    pub(crate) fn report(&mut self, id: &str, outcome: Outcome, now: DateTime<Utc>) -> Vec<Event> {
        let Some(idx) = self.index.get(id).copied() else {
            return Vec::new();
        };
        let mut events = Vec::new();
        if !matches!(outcome, Outcome::Failed { .. }) {
            events.extend(self.upstream.answered().map(Event::Upstream));
        }
        match outcome {
            Outcome::Neutral => {}
            Outcome::Success => self.succeeded(idx, now, &mut events),
            Outcome::Cooldown {
                until,
                reason,
                account_wide,
                free_only,
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
                            events.extend(park(key, until, &reason, free_only, now));
                        }
                    }
                    None => {
                        if let Some(key) = self.keys.get_mut(idx) {
                            events.extend(park(key, until, &reason, free_only, now));
                        }
                    }
                }
            }
            Outcome::Disable {
                reason,
                recoverable,
                rejected,
            } => {
                self.rotate_away_from(id);
                if let Some(key) = self.keys.get_mut(idx) {
                    events.extend(disable(key, reason, (recoverable, rejected), now));
                }
            }
            Outcome::Failed { fault, reason } => {
                self.rotate_away_from(id);
                self.failed(idx, fault, &reason, now, &mut events);
            }
        }
        if !events.is_empty() {
            self.dirty = true;
        }
        events
    }

    /// Key `idx` was answered normally: its streak ends, and every other
    /// key's recent suspect failure is counted against it.
    fn succeeded(&mut self, idx: usize, now: DateTime<Utc>, events: &mut Vec<Event>) {
        self.last_failure = None;
        let max = self.settings.max_failures;
        for (i, key) in self.keys.iter_mut().enumerate() {
            if i == idx {
                // A streak ending is news for `keys list`; a counter is not.
                if key.state.consecutive_failures > 0 {
                    self.dirty = true;
                }
                key.state.consecutive_failures = 0;
                key.state.requests_total = key.state.requests_total.saturating_add(1);
                key.suspect = None;
                self.touched = true;
                continue;
            }
            let Some((reason, at)) = key.suspect.take() else {
                continue;
            };
            if now - at > SUSPECT_FOR || key.state.disabled {
                continue;
            }
            let state = &mut key.state;
            state.consecutive_failures = state.consecutive_failures.saturating_add(1);
            state.failures_total = state.failures_total.saturating_add(1);
            let streak = state.consecutive_failures;
            events.push(Event::Blamed {
                id: key.id.clone(),
                reason: reason.clone(),
                streak,
            });
            if streak >= max {
                let why = format!("{streak}{}", streak_suffix(&reason));
                events.extend(disable(key, why, (true, false), now));
            }
        }
    }

    /// An attempt with key `idx` failed with `fault`.
    fn failed(
        &mut self,
        idx: usize,
        fault: Fault,
        reason: &str,
        now: DateTime<Utc>,
        events: &mut Vec<Event>,
    ) {
        if fault.no_answer() {
            events.extend(
                self.upstream
                    .no_answer(fault, reason, now)
                    .map(Event::Upstream),
            );
            return;
        }
        let Some(id) = self.keys.get(idx).map(|k| k.id.clone()) else {
            return;
        };
        let across_keys = self.last_failure.as_ref().is_some_and(|(other, f, at)| {
            *other != id && *f == fault && now - *at <= ACROSS_KEYS_WITHIN
        });
        if across_keys {
            // The upstream's failure, not any key's.
            for key in &mut self.keys {
                key.suspect = None;
            }
            self.last_failure = None;
            events.extend(
                self.upstream
                    .failed_across_keys(fault, reason, now)
                    .map(Event::Upstream),
            );
            return;
        }
        if let Some(key) = self.keys.get_mut(idx) {
            key.suspect = Some((reason.to_owned(), now));
        }
        self.last_failure = Some((id, fault, now));
    }

    /// The upstream outage in progress, if the upstream is down.
    pub(crate) fn outage(&self) -> Option<&upstream::Outage> {
        self.upstream.outage()
    }

    /// Whether a down upstream is due for a check at `now` (it is then
    /// marked as being checked).
    pub(crate) fn upstream_check_due(&mut self, now: DateTime<Utc>) -> bool {
        self.upstream.check_due(now)
    }

    /// A check of a down upstream found it reachable, or not.
    pub(crate) fn upstream_checked(&mut self, reachable: bool) -> Vec<Event> {
        self.upstream
            .checked(reachable)
            .map(Event::Upstream)
            .into_iter()
            .collect()
    }

    /// Clear every cooldown that has ended (`cooldown_until <= now`).
    /// Each key back in rotation yields [`Event::Recovered`]; a disabled
    /// key's stale cooldown is cleared silently.
    pub(crate) fn tick(&mut self, now: DateTime<Utc>) -> Vec<Event> {
        let mut events = Vec::new();
        for key in &mut self.keys {
            let state = &mut key.state;
            let mut ended = false;
            if state.cooldown_until.is_some_and(|until| until <= now) {
                state.cooldown_until = None;
                state.cooldown_reason = None;
                ended = true;
            }
            if state.free_cooldown_until.is_some_and(|until| until <= now) {
                state.free_cooldown_until = None;
                state.free_cooldown_reason = None;
                ended = true;
            }
            if ended {
                self.dirty = true;
                if state.is_available_for(now, true) {
                    events.push(Event::Recovered { id: key.id.clone() });
                }
            }
        }
        self.models.retain(|_, until| *until > now);
        events
    }

    /// OpenRouter reported one of the account's caps for key `id` (from
    /// `X-RateLimit-Limit`, when present). A daily cap that was hit also
    /// holds the account until midnight.
    pub fn note_cap(
        &mut self,
        id: &str,
        kind: CapKind,
        limit: Option<u32>,
        hit: bool,
        now: DateTime<Utc>,
    ) {
        let Some(quota) = self.get(id).map(|k| k.quota.clone()) else {
            return;
        };
        let usage = self.accounts.entry(quota).or_default();
        match kind {
            CapKind::PerMinute => {
                if limit.is_some() {
                    usage.minute_limit = limit;
                }
            }
            CapKind::PerDay => {
                if limit.is_some() {
                    usage.day_limit = limit;
                    usage.limit_at = Some(now);
                }
                if hit {
                    usage.exhaust_day(now);
                }
            }
        }
        self.dirty = true;
    }

    #[cfg(test)]
    /// What is known of the free-model use of key `id`'s account.
    pub(crate) fn usage_of(&self, id: &str) -> Option<&AccountUsage> {
        self.get(id).and_then(|k| self.accounts.get(&k.quota))
    }

    /// OpenRouter's shared capacity for `model` is exhausted: hold requests
    /// for it until `until` (only ever extended).
    pub(crate) fn back_off_model(&mut self, model: &str, until: DateTime<Utc>) {
        let entry = self.models.entry(model.to_owned()).or_insert(until);
        if *entry < until {
            *entry = until;
        }
    }

    /// Until when requests for `model` are held, if they are at `now`.
    pub(crate) fn model_backoff(&self, model: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.models.get(model).copied().filter(|until| *until > now)
    }

    /// Disabled keys due for a background `GET /key` re-check: recoverable
    /// ones not checked within `every`. They are marked as checked now.
    pub(crate) fn due_for_probe(
        &mut self,
        now: DateTime<Utc>,
        every: chrono::TimeDelta,
    ) -> Vec<(String, ApiKey)> {
        let mut due = Vec::new();
        for key in &mut self.keys {
            let state = &mut key.state;
            // A key OpenRouter rejected is checked more rarely.
            let every = if state.rejected {
                every * REJECTED_RECHECK_FACTOR
            } else {
                every
            };
            if state.disabled
                && state.auto_recover
                && state.last_probe.is_none_or(|last| now - last >= every)
            {
                state.last_probe = Some(now);
                due.push((key.id.clone(), key.key.clone()));
            }
        }
        if !due.is_empty() {
            self.dirty = true;
        }
        due
    }

    fn key_mut(&mut self, id: &str) -> Option<&mut PoolKey> {
        let idx = self.index.get(id).copied()?;
        self.keys.get_mut(idx)
    }

    /// Apply the result of a re-check of disabled key `id`.
    pub(crate) fn probe_result(
        &mut self,
        id: &str,
        probe: Probe,
        now: DateTime<Utc>,
    ) -> Vec<Event> {
        let Some(key) = self
            .index
            .get(id)
            .copied()
            .and_then(|i| self.keys.get_mut(i))
        else {
            return Vec::new();
        };
        if !key.state.disabled {
            return Vec::new();
        }
        self.dirty = true;
        match probe {
            Probe::Healthy => {
                key.state.reactivate();
                key.state.last_probe = Some(now);
                vec![Event::Recovered { id: key.id.clone() }]
            }
            Probe::Invalid(reason) => {
                // Checked again, more rarely: OpenRouter may have rejected
                // the key by mistake.
                key.state.rejected = true;
                key.state.disabled_reason = Some(reason.clone());
                vec![Event::Disabled {
                    id: key.id.clone(),
                    reason,
                }]
            }
            Probe::StillDown(_) => Vec::new(),
        }
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
    /// Account counts are merged both ways (see [`Pool::adopt_accounts`]);
    /// the file keeps today's counts of the accounts of stored keys. Fields
    /// of states and accounts this version does not know are the file's.
    pub fn reconcile(&mut self, file: &mut StoreFile, now: DateTime<Utc>) -> Vec<Event> {
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
                    let quota = quota_account(key.account.as_deref(), &key.id);
                    self.move_own_counts(&key.quota, &quota, now);
                    key.quota = quota;
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
        self.keys = keys;
        self.index = index;

        // Accounts first: the keys of an account whose count was reset lose
        // their `:free` parks (the file's states are this pool's, which
        // made them), and the file gets those states.
        let reset = self.merge_accounts(file, now, false);
        for key in &mut self.keys {
            if reset.contains(&key.quota) {
                accounts::clear_free_park(&mut key.state);
            }
        }
        self.write_back(file, now);

        if self
            .current
            .as_ref()
            .is_some_and(|id| !self.index.contains_key(id))
        {
            self.current = None;
        }
        self.dirty = false;
        self.touched = false;
        events.extend(removed);
        events
    }

    /// Give every record of `file` its key's state, and `file` today's
    /// counts of the accounts of stored keys (only those: the pool forgets
    /// the others). Fields this version does not know stay the file's.
    fn write_back(&mut self, file: &mut StoreFile, now: DateTime<Utc>) {
        for record in &mut file.keys {
            if let Some(key) = self
                .index
                .get(&record.id)
                .and_then(|&idx| self.keys.get(idx))
            {
                let extra = std::mem::take(&mut record.state.extra);
                record.state = key.state.clone();
                record.state.extra = extra;
            }
        }
        let live: HashSet<&str> = self.keys.iter().map(|k| k.quota.as_str()).collect();
        self.accounts
            .retain(|account, _| live.contains(account.as_str()));
        let today = now.date_naive();
        let mut stored = std::mem::take(&mut file.accounts);
        file.accounts = self
            .accounts
            .iter()
            .filter(|(_, usage)| usage.day == Some(today) && usage.day_count > 0)
            .map(|(account, usage)| {
                let mut record = usage.to_record();
                if let Some(old) = stored.get_mut(account) {
                    record.extra = std::mem::take(&mut old.extra);
                }
                (account.clone(), record)
            })
            .collect();
    }

    /// A key's account is now `new` where it was `old`: a key that counted
    /// on its own (`key:<id>`) brings its counts to the account, added.
    fn move_own_counts(&mut self, old: &str, new: &str, now: DateTime<Utc>) {
        if old == new || !old.starts_with("key:") {
            return;
        }
        if let Some(own) = self.accounts.remove(old) {
            self.accounts
                .entry(new.to_owned())
                .or_default()
                .absorb(&own, now);
        }
    }

    /// The keys a cooldown reported through key `id` parks: every key of
    /// its account when `account_wide` and the account is known, else `id`.
    pub(crate) fn cooldown_targets(&self, id: &str, account_wide: bool) -> Vec<String> {
        let account = self
            .get(id)
            .filter(|_| account_wide)
            .and_then(|k| k.account.clone());
        match account {
            Some(account) => self
                .keys
                .iter()
                .filter(|k| k.account.as_deref() == Some(account.as_str()))
                .map(|k| k.id.clone())
                .collect(),
            None if self.index.contains_key(id) => vec![id.to_owned()],
            None => Vec::new(),
        }
    }

    /// Adopt key `id`'s state as a shared store holds it (decided by
    /// another instance, or the stored result of our own change). The store
    /// owns everything but history: `last_used` and the totals keep the
    /// larger value. A key that stops being usable is no longer current.
    /// Returns whether the key is usable now and was not before (waiters
    /// should look again). An unknown ID, or a `version` older than the
    /// one adopted last, is ignored.
    pub(crate) fn adopt_state(
        &mut self,
        id: &str,
        remote: &KeyState,
        version: u64,
        now: DateTime<Utc>,
    ) -> bool {
        let Some(key) = self.key_mut(id) else {
            return false;
        };
        if version < key.version {
            return false;
        }
        key.version = version;
        let was = key.state.is_available_for(now, true);
        key.state = merged(&key.state, remote);
        let is = key.state.is_available_for(now, true);
        if !key.state.is_available(now) {
            self.rotate_away_from(id);
        }
        is && !was
    }

    /// Adopt a shared store as the truth: keys only in `file` are added,
    /// keys only in the pool removed, and every key takes the stored state
    /// (history merged as in [`Pool::adopt_state`]) and the stored label,
    /// account and generation. Account counts merge (they only grow within
    /// a day). A key whose stored `versions` entry is older than the
    /// state adopted last keeps its state (the snapshot was read before a
    /// newer change reached us). The pool takes the store's order. Events:
    /// added and reactivated (a higher generation) in store order, then
    /// removals.
    pub(crate) fn adopt_store(
        &mut self,
        file: &StoreFile,
        versions: &HashMap<String, u64>,
        now: DateTime<Utc>,
    ) -> Vec<Event> {
        let mut old: HashMap<String, PoolKey> = std::mem::take(&mut self.keys)
            .into_iter()
            .map(|k| (k.id.clone(), k))
            .collect();
        let mut events = Vec::new();
        let mut keys = Vec::with_capacity(file.keys.len());
        let mut index = HashMap::with_capacity(file.keys.len());
        for record in &file.keys {
            if index.contains_key(&record.id) {
                continue;
            }
            let key = match old.remove(&record.id) {
                Some(old) => {
                    if record.generation > old.generation {
                        events.push(Event::Reactivated { id: old.id.clone() });
                    }
                    let version = versions.get(&record.id).copied().unwrap_or(0);
                    let mut key = PoolKey::from_record(record);
                    self.move_own_counts(&old.quota, &key.quota, now);
                    if version >= old.version {
                        key.state = merged(&old.state, &record.state);
                        key.version = version;
                    } else {
                        key.state = old.state;
                        key.version = old.version;
                    }
                    key
                }
                None => {
                    events.push(Event::Added {
                        id: record.id.clone(),
                    });
                    let mut key = PoolKey::from_record(record);
                    key.version = versions.get(&record.id).copied().unwrap_or(0);
                    key
                }
            };
            index.insert(key.id.clone(), keys.len());
            keys.push(key);
        }
        let mut removed: Vec<&PoolKey> = old.values().collect();
        removed.sort_by(|a, b| a.id.cmp(&b.id));
        events.extend(
            removed
                .into_iter()
                .map(|k| Event::Removed { id: k.id.clone() }),
        );
        self.keys = keys;
        self.index = index;
        if self
            .current
            .as_ref()
            .is_some_and(|id| !self.index.contains_key(id))
        {
            self.current = None;
        }
        // The store counts every instance's requests: its counts are it.
        self.merge_accounts(file, now, true);
        let live: HashSet<&str> = self.keys.iter().map(|k| k.quota.as_str()).collect();
        self.accounts
            .retain(|account, _| live.contains(account.as_str()));
        events
    }

    /// The account of key `id` and its caps in force: (account, daily,
    /// per-minute).
    pub(crate) fn quota_caps(&self, id: &str) -> Option<(String, u32, u32)> {
        let key = self.get(id)?;
        let usage = self.accounts.get(&key.quota).cloned().unwrap_or_default();
        Some((key.quota.clone(), usage.daily_cap(), usage.minute_cap()))
    }

    /// A shared store counted `today` free-model requests for key `id`'s
    /// account today.
    pub(crate) fn adopt_free_count(&mut self, id: &str, today: u32, now: DateTime<Utc>) {
        if let Some(quota) = self.get(id).map(|k| k.quota.clone()) {
            self.accounts
                .entry(quota)
                .or_default()
                .adopt_shared_count(today, now);
        }
    }

    /// Adopt a shared store's `answer` to a free-model request with key
    /// `id`: true when the request may go; otherwise the account is held
    /// (never until an instant in the past, which would ask again at once).
    pub(crate) fn adopt_reservation(
        &mut self,
        id: &str,
        answer: quota::Reservation,
        now: DateTime<Utc>,
    ) -> bool {
        match answer {
            quota::Reservation::Granted { today } => {
                self.adopt_free_count(id, today, now);
                true
            }
            quota::Reservation::DayCapped => {
                self.hold_account(id, true, now, now);
                false
            }
            quota::Reservation::MinuteCapped { until } => {
                let until = until.max(now + chrono::TimeDelta::milliseconds(250));
                self.hold_account(id, false, until, now);
                false
            }
        }
    }

    /// A shared store refused key `id`'s account a free-model request: its
    /// daily cap is spent (`daily`), or its per-minute window is full until
    /// `until`. The next choices skip its keys for free models meanwhile.
    pub(crate) fn hold_account(
        &mut self,
        id: &str,
        daily: bool,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) {
        let Some(quota) = self.get(id).map(|k| k.quota.clone()) else {
            return;
        };
        if self.current.as_deref() == Some(id) {
            self.current = None;
        }
        let usage = self.accounts.entry(quota).or_default();
        if daily {
            usage.exhaust_day(now);
        } else if usage.held_until.is_none_or(|h| h < until) {
            usage.held_until = Some(until);
        }
    }

    /// Whether state changed since the last [`Pool::mark_clean`] or
    /// [`Pool::reconcile`], i.e. whether the store needs writing.
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty || self.touched
    }

    /// Whether something users look at changed (a cooldown, a disable, a
    /// failure, a key added or back): save it now. Counters alone
    /// ([`Pool::is_dirty`] without this) can wait a few seconds.
    pub(crate) fn is_urgent(&self) -> bool {
        self.dirty
    }

    #[cfg(test)]
    /// Note that the current state has been saved.
    pub(crate) fn mark_clean(&mut self) {
        self.dirty = false;
        self.touched = false;
    }
}
