//! The JSON file store: the pool is merged with the file once a second
//! when either changed (`orproxy keys` commands change the file while the
//! server runs), under the file's lock. Cooldowns, disables and the CLI's
//! changes go through within a second; counters alone every few seconds,
//! since a large store costs real CPU to rewrite. The requests' usage
//! totals go with the counters: added to the file's `usage` section every
//! few seconds.
//!
//! A write that fails (disk full, read-only, any I/O error) is reported
//! once and leaves the pool's state pending: it is tried again after 1 s,
//! then after waits doubling up to [`RETRY_MAX`] (at once when the file
//! changes meanwhile), until it lands, with or without requests. A stopping
//! server tries its last write for up to [`SHUTDOWN_WAIT`].

use super::usage::{self, Tally};
use super::{Answer, Change, Live, StoreSync};
use crate::pool::Pool;
use crate::pool::quota::Reservation;
use crate::store::{FileStore, Stamp, StoreError};
use chrono::Utc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often a pool whose only changes are counters is saved.
const COUNTERS_EVERY: Duration = Duration::from_secs(3);
/// The wait before a failed write is tried again; it doubles after every
/// failure, up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two tries of a failed write.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long a stopping server keeps trying to save its last state.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
/// The first pause between two tries of the last write; it doubles.
const SHUTDOWN_PAUSE: Duration = Duration::from_millis(250);

/// Keeps the pool and the store file in step.
pub(crate) struct FileSync {
    store: FileStore,
    live: Arc<Live>,
    usage: Arc<Tally>,
    state: Mutex<SyncState>,
}

struct SyncState {
    /// When the store was last written by this server.
    written: Instant,
    /// The store file as we last read or wrote it.
    stamp: Option<Stamp>,
    /// The last store error logged, so a broken file is reported once.
    last_error: Option<String>,
    /// Set while the last merge failed: the pool holds state the file may
    /// lack, to be written at the next try.
    retry: Option<Retry>,
}

/// When a failed merge is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Retry {
    /// Not before then.
    at: Instant,
    /// The wait after the next failure.
    next_wait: Duration,
}

impl Retry {
    /// The retry after a failure at `now`, `previous` being the one that
    /// was pending (if any).
    fn after_failure(previous: Option<Retry>, now: Instant) -> Retry {
        let wait = previous.map_or(RETRY_FIRST, |r| r.next_wait);
        Retry {
            at: now + wait,
            next_wait: (wait * 2).min(RETRY_MAX),
        }
    }
}

impl SyncState {
    /// Whether a merge is due at `now`, the file's stamp being `stamp` and
    /// the pool `urgent` or `dirty`. A pending failed write is tried on its
    /// schedule; a file changed by someone else is read at once.
    fn due(&self, stamp: Option<Stamp>, urgent: bool, dirty: bool, now: Instant) -> bool {
        if stamp != self.stamp {
            return true;
        }
        match self.retry {
            Some(retry) => now >= retry.at,
            None => {
                urgent || (dirty && now.saturating_duration_since(self.written) >= COUNTERS_EVERY)
            }
        }
    }
}

impl FileSync {
    /// In step with `store`, which `live` was read from. An existing store
    /// file open to other users is made 0600 and reported, and so is a
    /// store directory open to them.
    pub(crate) fn new(store: FileStore, live: Arc<Live>, usage: Arc<Tally>) -> Self {
        for loose in store.tighten_permissions() {
            log::warn!("{loose}");
        }
        let stamp = store.stamp();
        Self {
            store,
            live,
            usage,
            state: Mutex::new(SyncState {
                written: Instant::now(),
                stamp,
                last_error: None,
                retry: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Merge memory and the file when either changed or a failed write is
    /// due again; `force` merges now whatever the state.
    fn merge(&self, force: bool) -> Result<(), StoreError> {
        let stamp = self.store.stamp();
        let (urgent, dirty) = {
            let pool = self.live.pool();
            (pool.is_urgent(), pool.is_dirty())
        };
        let dirty = dirty || !self.usage.is_empty();
        if !force && !self.state().due(stamp, urgent, dirty, Instant::now()) {
            return Ok(());
        }
        let now = Utc::now();
        let mut events = Vec::new();
        let sums = self.usage.take();
        let result = self.store.update(|file| {
            events = self.live.pool().reconcile(file, now);
            usage::add_to_file(file, &sums, now.date_naive());
        });
        if result.is_err() {
            // Not written: they go with the next try.
            self.usage.restore(sums);
        }
        let mut state = self.state();
        let result = match result {
            Ok(()) => {
                state.written = Instant::now();
                state.stamp = self.store.stamp();
                state.retry = None;
                if state.last_error.take().is_some() {
                    // A warning, like the error it ends (and beside it in
                    // the errors file).
                    log::warn!(
                        "the key store {} is written again: the pending changes are saved",
                        self.store.path().display()
                    );
                }
                Ok(())
            }
            Err(e) => {
                // The pool has taken in the file as it was read (if it
                // was); what it holds beyond that waits for the next try.
                state.stamp = stamp;
                state.retry = Some(Retry::after_failure(state.retry, Instant::now()));
                report_store_error(&mut state, &e);
                Err(e)
            }
        };
        drop(state);
        // The pool changed (keys added or removed in the file) whether or
        // not the write that followed worked.
        if !events.is_empty() {
            self.live.events_and_wake(&events);
        }
        result
    }

    /// The last write at shutdown: tried again while the error is one that
    /// may pass (I/O), pausing through `pause`, for up to [`SHUTDOWN_WAIT`].
    fn last_write(&self, mut pause: impl FnMut(Duration)) {
        let start = Instant::now();
        let (mut wait, mut paused) = (SHUTDOWN_PAUSE, Duration::ZERO);
        loop {
            let error = match self.merge(true) {
                Ok(()) => return,
                Err(e) => e,
            };
            let transient = matches!(error, StoreError::Io { .. });
            let spent = start.elapsed().max(paused);
            if !transient || spent + wait > SHUTDOWN_WAIT {
                log::error!(
                    "stopping without saving the last key states to {}: {error}; \
                     changes since the last successful write are lost",
                    self.store.path().display()
                );
                return;
            }
            pause(wait);
            paused += wait;
            wait *= 2;
        }
    }
}

fn report_store_error(state: &mut SyncState, e: &StoreError) {
    let msg = e.to_string();
    if state.last_error.as_deref() != Some(msg.as_str()) {
        log::error!(
            "{msg}; serving from memory, and trying again (every {} s at most) until the \
             state is saved",
            RETRY_MAX.as_secs()
        );
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
        let _ = self.merge(false);
    }

    fn settle(&self) {
        let dirty = self.live.pool().is_dirty();
        let _ = self.merge(dirty);
    }

    fn refresh(&self) {
        let _ = self.merge(false);
    }

    fn shutdown(&self) {
        self.last_write(std::thread::sleep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StoreFile;
    use crate::pool::{Event, Outcome, Settings};
    use serde_json::{Value, json};
    use std::fs;

    fn no_events(_: &[Event]) {}

    /// A sync of the store at `path`, its pool read from it.
    fn sync_of(path: &std::path::Path) -> FileSync {
        let store = FileStore::new(path);
        let file = store.load().unwrap();
        let pool = Pool::from_records(&file.keys, Settings::default());
        FileSync::new(
            store,
            Arc::new(Live::new(pool, no_events)),
            Arc::new(Tally::default()),
        )
    }

    fn stored(path: &std::path::Path) -> Value {
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
    }

    /// A store with key `a` and nothing else.
    fn one_key(path: &std::path::Path) {
        let store = FileStore::new(path);
        store
            .update(|file| {
                let key = crate::secret::ApiKey::parse("sk-or-v1-aaaaaaaaaaaaaaaa").unwrap();
                crate::store::edit::add_key(file, &key, None, None, Utc::now());
            })
            .unwrap();
    }

    fn cool(sync: &FileSync, until: chrono::DateTime<Utc>) {
        let id = sync.live.pool().keys().next().unwrap().id.clone();
        let outcome = Outcome::Cooldown {
            until,
            reason: "free-models-per-min".into(),
            account_wide: false,
            free_only: false,
        };
        sync.live.pool().report(&id, outcome, Utc::now());
    }

    fn cooldown_in_file(path: &std::path::Path) -> Value {
        stored(path)["keys"][0]["state"]["cooldown_until"].clone()
    }

    /// Changes to the store at `path` fail (as root too) while a directory
    /// stands where its lock file goes; the store itself stays readable and
    /// unchanged. `unblock` removes it.
    struct Blocker(std::path::PathBuf);

    impl Blocker {
        fn block(path: &std::path::Path) -> Self {
            let lock = path.with_extension("json.lock");
            let _ = fs::remove_file(&lock);
            fs::create_dir(&lock).unwrap();
            Self(lock)
        }

        fn unblock(&self) {
            fs::remove_dir(&self.0).unwrap();
        }
    }

    /// Every field of `expected` is in `actual`, with the same value (objects
    /// may hold more fields).
    #[track_caller]
    fn assert_holds(actual: &Value, expected: &Value, at: &str) {
        match (actual, expected) {
            (Value::Object(a), Value::Object(e)) => {
                for (name, value) in e {
                    let inner = a.get(name).unwrap_or_else(|| panic!("{at}.{name} is gone"));
                    assert_holds(inner, value, &format!("{at}.{name}"));
                }
            }
            (Value::Array(a), Value::Array(e)) => {
                assert_eq!(a.len(), e.len(), "{at}");
                for (i, (a, e)) in a.iter().zip(e).enumerate() {
                    assert_holds(a, e, &format!("{at}[{i}]"));
                }
            }
            _ => assert_eq!(actual, expected, "{at}"),
        }
    }

    #[test]
    fn retries_wait_one_second_then_double_up_to_thirty() {
        let t0 = Instant::now();
        let mut retry = None;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let next = Retry::after_failure(retry, t0);
            waits.push((next.at - t0).as_secs());
            retry = Some(next);
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn a_pending_write_is_due_on_its_schedule_or_when_the_file_changes() {
        let t0 = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        one_key(&path);
        let stamp = FileStore::new(&path).stamp();
        let mut state = SyncState {
            written: t0,
            stamp,
            last_error: None,
            retry: None,
        };
        assert!(!state.due(stamp, false, false, t0), "nothing to do");
        assert!(state.due(stamp, true, true, t0), "an urgent change");
        state.retry = Some(Retry::after_failure(None, t0));
        // Pending: the pool being clean does not matter, the schedule does.
        assert!(!state.due(stamp, false, false, t0));
        assert!(
            !state.due(stamp, true, true, t0),
            "no retry before its time"
        );
        assert!(state.due(stamp, false, false, t0 + RETRY_FIRST));
        assert!(state.due(None, false, false, t0), "the file changed");
    }

    #[test]
    fn a_change_that_could_not_be_written_stays_pending_and_lands_at_the_retry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        one_key(&path);
        let sync = sync_of(&path);
        assert!(sync.reachable());
        let until = Utc::now() + chrono::TimeDelta::hours(1);
        cool(&sync, until);
        let blocker = Blocker::block(&path);
        sync.sync();
        assert!(!sync.reachable(), "the failed write is reported");
        blocker.unblock();
        // Not before the retry is due...
        sync.sync();
        assert!(!sync.reachable());
        assert_eq!(cooldown_in_file(&path), Value::Null);
        // ...and then, with nothing else changed, the cooldown lands.
        sync.state().retry.as_mut().unwrap().at = Instant::now();
        sync.sync();
        assert!(sync.reachable());
        assert_eq!(cooldown_in_file(&path), json!(until));
        assert_eq!(sync.state().retry, None);
    }

    #[test]
    fn the_last_write_is_tried_again_until_it_lands() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        one_key(&path);
        let sync = sync_of(&path);
        let until = Utc::now() + chrono::TimeDelta::hours(1);
        cool(&sync, until);
        let blocker = Blocker::block(&path);
        let mut pauses = Vec::new();
        sync.last_write(|wait| {
            pauses.push(wait);
            if pauses.len() == 2 {
                blocker.unblock();
            }
        });
        assert_eq!(pauses, [SHUTDOWN_PAUSE, SHUTDOWN_PAUSE * 2]);
        assert_eq!(cooldown_in_file(&path), json!(until));
    }

    #[test]
    fn the_last_write_gives_up_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        one_key(&path);
        let sync = sync_of(&path);
        cool(&sync, Utc::now() + chrono::TimeDelta::hours(1));
        let _blocker = Blocker::block(&path);
        let mut pauses = Vec::new();
        sync.last_write(|wait| pauses.push(wait));
        assert!(pauses.len() >= 3, "tried several times: {pauses:?}");
        assert!(
            pauses.iter().sum::<Duration>() <= SHUTDOWN_WAIT,
            "{pauses:?}"
        );
        assert!(!sync.reachable());
    }

    #[test]
    fn usage_lands_in_the_file_with_the_counters_and_waits_while_it_cannot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        one_key(&path);
        let sync = sync_of(&path);
        let id = sync.live.pool().keys().next().unwrap().id.clone();
        let today = Utc::now().date_naive();
        let spent = |cost| crate::model::UsageTotals {
            requests: 1,
            prompt_tokens: 10,
            cost,
            ..Default::default()
        };
        sync.usage.add(today, "m:free", [(id.as_str(), spent(0.5))]);
        sync.sync();
        assert_eq!(
            stored(&path).get("usage"),
            None,
            "not before the counters are due"
        );
        sync.state().written = Instant::now() - COUNTERS_EVERY;
        let blocker = Blocker::block(&path);
        sync.sync();
        assert!(!sync.reachable());
        sync.usage
            .add(today, "m:free", [(id.as_str(), spent(0.25))]);
        blocker.unblock();
        sync.state().retry.as_mut().unwrap().at = Instant::now();
        sync.sync();
        assert!(sync.reachable());
        let day = &stored(&path)["usage"]["days"][today.to_string()];
        let want = json!({"requests": 2, "errors": 0, "prompt_tokens": 20, "completion_tokens": 0,
            "cached_tokens": 0, "reasoning_tokens": 0, "cost": 0.75});
        assert_eq!(day["keys"][&id], want);
        assert_eq!(day["accounts"][format!("key:{id}")], want);
        assert_eq!(day["models"]["m:free"], want);
        assert!(sync.usage.is_empty());
    }

    /// A store as a newer orproxy might write it: fields this version does
    /// not know at every level.
    fn newer_store(today: chrono::NaiveDate) -> Value {
        json!({
            "version": 1,
            "written_by": "orproxy 9.0",
            "keys": [{
                "id": "1a2b3c4d",
                "key": "sk-or-v1-aaaaaaaaaaaaaaaa",
                "label": "laptop",
                "added_at": "2026-01-01T00:00:00Z",
                "generation": 0,
                "owner": {"team": "infra"},
                "state": {"requests_total": 3, "streak_started": "2026-01-02T00:00:00Z"},
                "info": {
                    "creator_user_id": "user_1",
                    "rate_limit": {"requests": 10, "interval": "10s"},
                    "free_model_daily_requests": {"used": 1, "window": "utc-day"}
                }
            }],
            "accounts": {
                "user_1": {"day": today, "free_requests": 4, "tier": "gold"}
            }
        })
    }

    #[test]
    fn a_server_merge_keeps_the_fields_of_a_newer_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let today = Utc::now().date_naive();
        fs::write(&path, newer_store(today).to_string()).unwrap();
        let sync = sync_of(&path);
        let until = Utc::now() + chrono::TimeDelta::hours(1);
        cool(&sync, until);
        sync.sync();
        assert!(sync.reachable());
        let mut expected = newer_store(today);
        expected["keys"][0]["state"]["cooldown_until"] = json!(until);
        expected["keys"][0]["state"]["cooldown_reason"] = json!("free-models-per-min");
        // Known fields are written in full (null when unset): the newer
        // store's fields are all there, as they were, beside the cooldown.
        assert_holds(&stored(&path), &expected, "store");
        // And it still reads as a store.
        let file: StoreFile = FileStore::new(&path).load().unwrap();
        assert_eq!(file.extra["written_by"], "orproxy 9.0");
    }
}
