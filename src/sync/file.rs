//! The JSON file store: the pool is merged with the file once a second
//! when either changed (`orproxy keys` commands change the file while the
//! server runs), under the file's lock. Cooldowns, disables and the CLI's
//! changes go through within a second; counters alone every few seconds,
//! since a large store costs real CPU to rewrite. A write that fails is
//! reported once and retried on the next tick.

use super::{Answer, Change, Live, StoreSync};
use crate::pool::Pool;
use crate::pool::quota::Reservation;
use crate::store::{FileStore, Stamp, StoreError};
use chrono::Utc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often a pool whose only changes are counters is saved.
const COUNTERS_EVERY: Duration = Duration::from_secs(3);

/// Keeps the pool and the store file in step.
pub(crate) struct FileSync {
    store: FileStore,
    live: Arc<Live>,
    state: Mutex<SyncState>,
}

struct SyncState {
    /// When the store was last written by this server.
    written: Instant,
    /// The store file as we last read or wrote it.
    stamp: Option<Stamp>,
    /// The last store error logged, so a broken file is reported once.
    last_error: Option<String>,
}

impl FileSync {
    /// In step with `store`, which `live` was read from. An existing store
    /// file open to other users is made 0600 and reported, and so is a
    /// store directory open to them.
    pub(crate) fn new(store: FileStore, live: Arc<Live>) -> Self {
        for loose in store.tighten_permissions() {
            log::warn!("{loose}");
        }
        let stamp = store.stamp();
        Self {
            store,
            live,
            state: Mutex::new(SyncState {
                written: Instant::now(),
                stamp,
                last_error: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Merge memory and the file when either changed; `force` writes even
    /// when nothing seems to have changed.
    fn merge(&self, force: bool) {
        let stamp = self.store.stamp();
        let (urgent, dirty) = {
            let pool = self.live.pool();
            (pool.is_urgent(), pool.is_dirty())
        };
        {
            let state = self.state();
            let counters_due = dirty && state.written.elapsed() >= COUNTERS_EVERY;
            if !force && !urgent && !counters_due && stamp == state.stamp {
                return;
            }
        }
        let now = Utc::now();
        let result = self
            .store
            .update(|file| self.live.pool().reconcile(file, now));
        let mut state = self.state();
        match result {
            Ok(events) => {
                state.written = Instant::now();
                state.stamp = self.store.stamp();
                if state.last_error.take().is_some() {
                    log::info!(
                        "the key store {} is readable again",
                        self.store.path().display()
                    );
                }
                drop(state);
                if !events.is_empty() {
                    self.live.events_and_wake(&events);
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

impl StoreSync for FileSync {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn reachable(&self) -> bool {
        self.state().last_error.is_none()
    }

    /// Nothing to share: the next merge writes the pool's state.
    fn share(&self, _: &Pool, _: &Change<'_>) {}

    /// One instance per file: its own counts decide.
    fn reserve_free(&self, _: String, _: u32, _: u32) -> Answer<'_, Option<Reservation>> {
        Box::pin(std::future::ready(None))
    }

    fn sync(&self) {
        self.merge(false);
    }

    fn refresh(&self) {
        self.merge(false);
    }

    fn shutdown(&self) {
        self.merge(true);
    }
}
