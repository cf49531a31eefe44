//! State shared by every worker: the key pool in memory, and its
//! synchronisation with the store file behind the request path.

use crate::config::ServeConfig;
use crate::pool::{CapKind, Choice, Counts, Event, Outcome, Pool, Probe, Settings};
use crate::store::model::StoreFile;
use crate::store::{Stamp, Store, StoreError};
use chrono::{DateTime, Utc};
use std::sync::{Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;

/// Everything the workers share. The pool's mutex is only ever held for a
/// pure, in-memory decision: never across an await or any I/O.
pub struct Shared {
    pool: Mutex<Pool>,
    /// Woken when keys may have become usable (added, reactivated, recovered).
    pub changed: Notify,
    /// The store file.
    pub store: Store,
    /// Checked settings.
    pub config: ServeConfig,
    sync_state: Mutex<SyncState>,
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
    /// Build the shared state from a store already read at start.
    pub fn new(config: ServeConfig, store: Store, file: &StoreFile) -> Self {
        let mut pool = Pool::from_records(
            &file.keys,
            Settings {
                max_failures: config.max_failures,
            },
        );
        pool.adopt_accounts(file, Utc::now());
        let stamp = store.stamp();
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
        }
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        // A panic while holding the lock cannot leave the pool half-updated
        // in a way that matters more than stopping service would.
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Pick a key for an attempt (`free`: for a `:free` model).
    pub fn choose(&self, now: DateTime<Utc>, exclude: &[String], free: bool) -> Choice {
        self.pool().choose_for(now, exclude, free)
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
            crate::store::view::rfc3339(until)
        );
        self.pool().back_off_model(model, until);
    }

    /// Disabled keys due for a background re-check.
    pub fn due_for_probe(
        &self,
        now: DateTime<Utc>,
        every: chrono::TimeDelta,
    ) -> Vec<(String, crate::secret::ApiKey)> {
        self.pool().due_for_probe(now, every)
    }

    /// Apply a re-check's result; wakes waiters when the key is back.
    pub fn probe_result(&self, id: &str, probe: Probe, now: DateTime<Utc>) {
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
        self.pool().note_cap(id, kind, limit, hit, now);
    }

    /// Record what happened to an attempt made with key `id`.
    pub fn report(&self, id: &str, outcome: Outcome, now: DateTime<Utc>) {
        let events = self.pool().report(id, outcome, now);
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
    pub fn key_statuses(&self, now: DateTime<Utc>) -> Vec<(String, crate::pool::state::Status)> {
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
        let stamp = self.store.stamp();
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
        let result = self.store.update(|file| self.pool().reconcile(file, now));
        let mut state = self
            .sync_state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(events) => {
                state.written = std::time::Instant::now();
                state.stamp = self.store.stamp();
                if state.last_error.take().is_some() {
                    log::info!(
                        "the key store {} is readable again",
                        self.store.path().display()
                    );
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
                crate::store::view::rfc3339(*until)
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
