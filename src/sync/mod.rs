//! Keeping a running server's key pool and its store in step, off the
//! request path. The pool lives in memory ([`Live`]); a [`StoreSync`]
//! carries its decisions to the store and other writers' changes back:
//! [`file::FileSync`] merges with the JSON file once a second,
//! [`redis::RedisSync`] shares every change with the other instances on
//! one Redis. The server holds a `Box<dyn StoreSync>` and never asks which.
//! Both also carry the requests' usage totals ([`usage::Tally`]) to the
//! store every few seconds.
//! A new store backend is a module here, one in `store/`, and one arm in
//! [`start`].

mod file;
mod redis;
pub(crate) mod usage;

use crate::model::StoreFile;
use crate::pool::quota::Reservation;
use crate::pool::{CapKind, Event, Outcome, Pool, Probe};
use crate::store::Backend;
use chrono::{DateTime, Utc};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;

/// The running pool, shared by the workers and the sync threads. Its mutex
/// is only ever held for a pure, in-memory decision: never across an await
/// or any I/O.
pub(crate) struct Live {
    pool: Mutex<Pool>,
    /// Woken when keys may have become usable (added, reactivated, recovered).
    changed: Notify,
    /// Told of every key event (logged and counted by the server).
    on_events: fn(&[Event]),
}

impl Live {
    /// `pool`, whose events go to `on_events`.
    pub(crate) fn new(pool: Pool, on_events: fn(&[Event])) -> Self {
        Self {
            pool: Mutex::new(pool),
            changed: Notify::new(),
            on_events,
        }
    }

    /// The pool, locked.
    pub(crate) fn pool(&self) -> MutexGuard<'_, Pool> {
        // A panic while holding the lock cannot leave the pool half-updated
        // in a way that matters more than stopping service would.
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Woken when keys may have become usable.
    pub(crate) fn changed(&self) -> &Notify {
        &self.changed
    }

    /// Report key events (call without the pool locked).
    pub(crate) fn events(&self, events: &[Event]) {
        if !events.is_empty() {
            (self.on_events)(events);
        }
    }

    /// Report key events and wake the requests waiting for a key.
    pub(crate) fn events_and_wake(&self, events: &[Event]) {
        self.events(events);
        self.changed.notify_waiters();
    }

    /// Adopt a store as the truth (keys added, removed or reset elsewhere),
    /// with each key's state version (see [`Pool::adopt_store`]).
    pub(crate) fn adopt_store(
        &self,
        file: &StoreFile,
        versions: &std::collections::HashMap<String, u64>,
    ) {
        let events = self.pool().adopt_store(file, versions, Utc::now());
        self.events_and_wake(&events);
    }

    /// The store to write back when a shared store lost its data: `base`
    /// (the store as last read) with the pool's current states and counts.
    pub(crate) fn export(&self, base: &StoreFile) -> StoreFile {
        let mut pool = self.pool().clone();
        let mut file = base.clone();
        pool.reconcile(&mut file, Utc::now());
        file
    }
}

/// A change the running pool is about to make that a shared store must
/// learn (see [`StoreSync::share`]).
#[derive(Debug)]
pub(crate) enum Change<'a> {
    /// Key `id` was handed out for a request at `at`.
    Chosen { id: &'a str, at: DateTime<Utc> },
    /// An attempt with key `id` ended with `outcome`.
    Reported { id: &'a str, outcome: &'a Outcome },
    /// A failure of key `id` was counted against it (shared after the pool
    /// applied it: it follows from another key's success).
    Blamed { id: &'a str, reason: &'a str },
    /// Requests for `model` are held until `until`.
    ModelHeld {
        model: &'a str,
        until: DateTime<Utc>,
    },
    /// Disabled key `id` is being re-checked now.
    ProbeStarted { id: &'a str },
    /// A re-check of disabled key `id` found `probe`.
    Probed { id: &'a str, probe: &'a Probe },
    /// OpenRouter reported a cap of key `id`'s account (`hit`: it was
    /// reached), with the limit it stated.
    Cap {
        id: &'a str,
        kind: CapKind,
        limit: Option<u32>,
        hit: bool,
    },
}

/// A future the sync answers (not `Send`: awaited on the worker).
pub(crate) type Answer<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// How a running pool and its store are kept in step.
pub(crate) trait StoreSync: Send + Sync {
    /// The store's kind, `file` or `redis`.
    fn kind(&self) -> &'static str;

    /// Whether the store worked the last time it was used.
    fn reachable(&self) -> bool;

    /// `change` is about to be applied to `pool` (locked by the caller; a
    /// [`Change::Blamed`] has just been applied): pass it on if other
    /// writers need it. Never waits for the store.
    fn share(&self, pool: &Pool, change: &Change<'_>);

    /// Reserve one `:free` request of `account` across every instance,
    /// under the account's `daily` and per-`minute` caps. `None`: no shared
    /// count (this instance's own counts decide).
    fn reserve_free(
        &self,
        account: String,
        daily: u32,
        minute: u32,
    ) -> Answer<'_, Option<Reservation>>;

    /// Bring pool and store together now if either changed (blocking I/O:
    /// call from a blocking thread). Called once a second, and before the
    /// store is read for an answer.
    fn sync(&self);

    /// Before the store is read for an answer (the admin API): write the
    /// pool's state now if it changed at all, counters included (blocking
    /// I/O).
    fn settle(&self);

    /// After an administrative change to the store: make the pool reflect
    /// it now (blocking I/O).
    fn refresh(&self);

    /// The server is stopping: write what is left (blocking I/O).
    fn shutdown(&self);
}

/// Start keeping `live` and `store` in step, and adding the requests'
/// `usage` to the store; `file` is the store as read at start.
pub(crate) fn start(
    store: &Backend,
    live: Arc<Live>,
    file: StoreFile,
    usage: Arc<usage::Tally>,
) -> Arc<dyn StoreSync> {
    match store {
        Backend::File(store) => Arc::new(file::FileSync::new(store.clone(), live, usage)),
        Backend::Redis(store) => Arc::new(redis::RedisSync::start(
            live,
            (**store).clone(),
            file,
            usage,
        )),
    }
}
