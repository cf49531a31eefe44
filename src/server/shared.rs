//! State shared by every worker: the key pool in memory, and its
//! synchronisation with the store behind the request path (merged with the
//! file once a second, or shared with other instances through Redis by
//! [`super::redis_link`]).

use super::redis_link::{Link, op_for};
use crate::config::ServeConfig;
use crate::model::StoreFile;
use crate::pool::{CapKind, Choice, Counts, Event, Outcome, Pool, Probe, Settings};
use crate::store::redis::script::{Op, Reservation};
use crate::store::{Backend, Stamp, StoreError};
use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use tokio::sync::Notify;

/// Everything the workers share. The pool's mutex is only ever held for a
/// pure, in-memory decision: never across an await or any I/O.
pub struct Shared {
    pool: Mutex<Pool>,
    /// Woken when keys may have become usable (added, reactivated, recovered).
    pub changed: Notify,
    /// The key store: a file merged once a second, or a shared Redis.
    pub store: Backend,
    /// Checked settings.
    pub config: ServeConfig,
    sync_state: Mutex<SyncState>,
    /// With a Redis store: the threads that share our changes and apply
    /// the other instances' (see [`Shared::start`]).
    link: OnceLock<Link>,
}

/// How often a pool whose only changes are counters is saved.
const COUNTERS_EVERY: std::time::Duration = std::time::Duration::from_secs(3);

struct SyncState {
    /// When the store was last written by this server.
    written: std::time::Instant,
    /// The store file as we last read or wrote it.
    stamp: Option<Stamp>,
    /// The last store error logged, so a broken file is reported once.
    last_error: Option<String>,
}

impl Shared {
    /// Build the shared state from a store already read at start. With a
    /// Redis store, call [`Shared::start`] next.
    pub fn new(config: ServeConfig, store: Backend, file: &StoreFile) -> Self {
        let mut pool = Pool::from_records(
            &file.keys,
            Settings {
                max_failures: config.max_failures,
            },
        );
        pool.adopt_accounts(file, Utc::now());
        let stamp = match &store {
            Backend::File(file) => file.stamp(),
            Backend::Redis(_) => None,
        };
        Self {
            pool: Mutex::new(pool),
            changed: Notify::new(),
            store,
            config,
            sync_state: Mutex::new(SyncState {
                written: std::time::Instant::now(),
                stamp,
                last_error: None,
            }),
            link: OnceLock::new(),
        }
    }

    /// With a Redis store, start sharing state with the other instances
    /// (`file`: the store as read at start). Nothing to do for a file.
    pub fn start(self: &Arc<Self>, file: StoreFile) {
        if let Backend::Redis(store) = &self.store {
            let _ = self.link.set(Link::start(self, (**store).clone(), file));
        }
    }

    /// The store's kind (`file` or `redis`) and whether it worked the last
    /// time it was used.
    pub fn store_status(&self) -> (&'static str, bool) {
        match &self.store {
            Backend::File(_) => (
                "file",
                self.sync_state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .last_error
                    .is_none(),
            ),
            Backend::Redis(_) => ("redis", self.link().is_none_or(Link::is_up)),
        }
    }

    /// Woken when keys may have become usable (added, reactivated, recovered).
    pub fn changed(&self) -> &Notify {
        &self.changed
    }

    fn link(&self) -> Option<&Link> {
        self.link.get()
    }

    fn share(&self, op: Option<Op>) {
        if let (Some(link), Some(op)) = (self.link(), op) {
            link.push(op);
        }
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        // A panic while holding the lock cannot leave the pool half-updated
        // in a way that matters more than stopping service would.
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Pick a key for an attempt (`free`: for a `:free` model).
    pub fn choose(&self, now: DateTime<Utc>, exclude: &[String], free: bool) -> Choice {
        let choice = self.pool().choose_for(now, exclude, free);
        if let (Some(link), Choice::Use { id, .. }) = (self.link(), &choice) {
            link.push(Op::Count {
                id: id.clone(),
                requests: 0,
                last_used: Some(now),
                reset_failures: false,
            });
        }
        choice
    }

    /// With a shared store, count a `:free` model request sent with key
    /// `id` against its account across every instance. False when the
    /// account is at a cap there: the pool then skips its keys for free
    /// models until the cap frees, and the caller chooses again. True
    /// without a shared store, or when Redis cannot answer in time (this
    /// instance's own counts decided).
    pub async fn reserve_free(&self, id: &str) -> bool {
        let Some(link) = self.link() else {
            return true;
        };
        let Some((account, daily, minute)) = self.pool().quota_caps(id) else {
            return true;
        };
        let answer = link.reserve(account, daily, minute).await;
        let now = Utc::now();
        let mut pool = self.pool();
        match answer {
            None => true,
            Some(Reservation::Granted { today }) => {
                pool.adopt_free_count(id, today, now);
                true
            }
            Some(Reservation::DayCapped { .. }) => {
                pool.hold_account(id, true, now, now);
                false
            }
            Some(Reservation::MinuteCapped { until }) => {
                // Never a hold in the past: that would ask again at once.
                let until = until.max(now + chrono::TimeDelta::milliseconds(250));
                pool.hold_account(id, false, until, now);
                false
            }
        }
    }

    /// Apply key states a shared store reports (another instance's change,
    /// or the stored result of ours); wakes waiters when a key came back.
    pub fn adopt_changed(&self, changed: &[(String, std::collections::HashMap<String, String>)]) {
        if changed.is_empty() {
            return;
        }
        let now = Utc::now();
        let mut back = false;
        {
            let mut pool = self.pool();
            for (id, fields) in changed {
                if let Some(state) = crate::store::redis::script::state_of(id, fields) {
                    let version = crate::store::redis::layout::version_of(fields);
                    back |= pool.adopt_state(id, &state, version, now);
                }
            }
        }
        if back {
            self.changed.notify_waiters();
        }
    }

    /// Adopt the whole shared store (keys added, removed or reset).
    pub fn adopt_store(&self, file: &StoreFile, versions: &std::collections::HashMap<String, u64>) {
        let events = self.pool().adopt_store(file, versions, Utc::now());
        log_events(&events);
        self.changed.notify_waiters();
    }

    /// Another instance backed a model off.
    pub fn adopt_model(&self, model: &str, until: DateTime<Utc>) {
        self.pool().back_off_model(model, until);
    }

    /// The store to write back when a shared store lost its data: `base`
    /// (the store as last read) with the pool's current states and counts.
    pub fn export(&self, base: &StoreFile) -> StoreFile {
        let mut pool = self.pool().clone();
        let mut file = base.clone();
        pool.reconcile(&mut file, Utc::now());
        file
    }

    /// After an administrative change to the store: make the pool reflect
    /// it now (blocking I/O: call from a blocking thread).
    pub fn refresh(&self) {
        match &self.store {
            Backend::File(_) => self.sync(false),
            Backend::Redis(store) => match store
                .connect()
                .and_then(|mut con| store.load_versioned(&mut con))
            {
                Ok((file, versions)) => self.adopt_store(&file, &versions),
                // The subscriber's reload notice will catch up.
                Err(e) => log::warn!("{e}"),
            },
        }
    }

    /// Until when requests for `model` are held (OpenRouter's shared
    /// capacity for it is exhausted).
    pub fn model_backoff(&self, model: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.pool().model_backoff(model, now)
    }

    /// Hold requests for `model` until `until`.
    pub fn back_off_model(&self, model: &str, until: DateTime<Utc>) {
        log::info!(
            target: "orproxy::keys",
            "model {model} is at capacity on OpenRouter: holding its requests until {}",
            crate::human::rfc3339(until)
        );
        self.pool().back_off_model(model, until);
        self.share(Some(Op::Model {
            model: model.to_owned(),
            until,
        }));
    }

    /// Disabled keys due for a background re-check.
    pub fn due_for_probe(
        &self,
        now: DateTime<Utc>,
        every: chrono::TimeDelta,
    ) -> Vec<(String, crate::secret::ApiKey)> {
        let due = self.pool().due_for_probe(now, every);
        for (id, _) in &due {
            self.share(Some(Op::ProbeMark { id: id.clone() }));
        }
        due
    }

    /// Apply a re-check's result; wakes waiters when the key is back.
    pub fn probe_result(&self, id: &str, probe: Probe, now: DateTime<Utc>) {
        let op = match &probe {
            Probe::Healthy => Some(Op::ProbeOk { id: id.to_owned() }),
            Probe::Invalid(reason) => Some(Op::ProbeInvalid {
                id: id.to_owned(),
                reason: reason.clone(),
            }),
            Probe::StillDown(_) => None,
        };
        self.share(op);
        let events = self.pool().probe_result(id, probe, now);
        if !events.is_empty() {
            log_events(&events);
            self.changed.notify_waiters();
        }
    }

    /// Record an account cap OpenRouter reported through key `id`.
    pub fn note_cap(
        &self,
        id: &str,
        kind: CapKind,
        limit: Option<u32>,
        hit: bool,
        now: DateTime<Utc>,
    ) {
        let mut pool = self.pool();
        pool.note_cap(id, kind, limit, hit, now);
        if kind == CapKind::PerDay
            && self.link().is_some()
            && let Some((account, cap, _)) = pool.quota_caps(id)
        {
            drop(pool);
            self.share(Some(Op::Cap {
                account,
                limit,
                exhausted: hit,
                cap,
            }));
        }
    }

    /// Record what happened to an attempt made with key `id`.
    pub fn report(&self, id: &str, outcome: Outcome, now: DateTime<Utc>) {
        let (events, op) = {
            let mut pool = self.pool();
            let op = self.link().and_then(|_| op_for(&pool, id, &outcome));
            (pool.report(id, outcome, now), op)
        };
        self.share(op);
        log_events(&events);
    }

    /// Keys by status at `now`.
    pub fn counts(&self, now: DateTime<Utc>) -> Counts {
        self.pool().counts(now)
    }

    /// When some key can serve next (see [`Pool::next_available`]).
    pub fn next_available(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.pool().next_available(now)
    }

    /// Number of keys.
    pub fn key_count(&self) -> usize {
        self.pool().len()
    }

    /// Every key's ID and status at `now`, in pool order (for metrics).
    pub fn key_statuses(&self, now: DateTime<Utc>) -> Vec<(String, crate::model::Status)> {
        self.pool()
            .keys()
            .map(|k| (k.id.clone(), k.state.status(now)))
            .collect()
    }

    /// Once a second: end expired cooldowns, wake waiters for recovered keys.
    pub fn tick(&self, now: DateTime<Utc>) {
        let events = self.pool().tick(now);
        if !events.is_empty() {
            log_events(&events);
            self.changed.notify_waiters();
        }
    }

    /// Merge memory and the store file when either changed (blocking I/O:
    /// call from a blocking thread). `force` writes even when nothing seems
    /// to have changed (at shutdown).
    pub fn sync(&self, force: bool) {
        let store = match &self.store {
            Backend::File(store) => store,
            Backend::Redis(_) => {
                // Changes go out as they happen; at shutdown, send what is
                // queued and stop the threads.
                if force && let Some(link) = self.link() {
                    link.shutdown(std::time::Duration::from_secs(3));
                }
                return;
            }
        };
        let stamp = store.stamp();
        let (urgent, dirty) = {
            let pool = self.pool();
            (pool.is_urgent(), pool.is_dirty())
        };
        {
            let state = self
                .sync_state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Cooldowns, disables and the CLI's changes go through within a
            // second; counters alone (last use, requests) every few seconds,
            // since a large store costs real CPU to rewrite.
            let counters_due = dirty && state.written.elapsed() >= COUNTERS_EVERY;
            if !force && !urgent && !counters_due && stamp == state.stamp {
                return;
            }
        }
        let now = Utc::now();
        let result = store.update(|file| self.pool().reconcile(file, now));
        let mut state = self
            .sync_state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(events) => {
                state.written = std::time::Instant::now();
                state.stamp = store.stamp();
                if state.last_error.take().is_some() {
                    log::info!("the key store {} is readable again", store.path().display());
                }
                drop(state);
                if !events.is_empty() {
                    log_events(&events);
                    self.changed.notify_waiters();
                }
            }
            Err(e) => report_store_error(&mut state, &e),
        }
    }
}

fn report_store_error(state: &mut SyncState, e: &StoreError) {
    let msg = e.to_string();
    if state.last_error.as_deref() != Some(msg.as_str()) {
        log::error!("{msg}; serving from memory, state is not being saved until this is fixed");
        state.last_error = Some(msg);
    }
}

/// Log key events, one line each.
pub fn log_events(events: &[Event]) {
    super::metrics::metrics().key_events(events);
    for event in events {
        match event {
            Event::CooldownStarted { id, until, reason } => log::info!(
                target: "orproxy::keys",
                "key {id} cooling until {} ({reason})",
                crate::human::rfc3339(*until)
            ),
            Event::Disabled { id, reason } => {
                log::warn!(target: "orproxy::keys", "key {id} disabled: {reason}");
            }
            Event::Recovered { id } => {
                log::info!(target: "orproxy::keys", "key {id} recovered: cooldown over");
            }
            Event::Added { id } => log::info!(target: "orproxy::keys", "key {id} added"),
            Event::Removed { id } => log::info!(target: "orproxy::keys", "key {id} removed"),
            Event::Reactivated { id } => {
                log::info!(target: "orproxy::keys", "key {id} reactivated");
            }
        }
    }
}
