//! A running server's link to a Redis store shared with other instances.
//!
//! Key choice stays in memory (no round trip on the request path). What the
//! pool decides goes to Redis through a writer thread as atomic Lua calls:
//! cooldowns, disables and failures at once, plain counters batched every
//! second. Redis publishes each change with the key's new state, and a
//! subscriber thread applies the other instances' changes to our pool, so a
//! key parked by one instance is parked for all within milliseconds.
//! `:free` model requests reserve a slot in the account's shared per-minute
//! and per-day counts before they are sent (one round trip, only for them).
//! The requests' usage totals go with the counters: added to Redis's daily
//! usage hashes every second.
//!
//! When Redis is unreachable the server keeps serving with what it knows,
//! queues its changes, logs the outage once and reconnects with backoff.
//! When Redis is back, queued changes are sent and the store read again; if
//! Redis came back empty (restarted without persistence), the first
//! instance to reconnect writes back the keys and states it holds.

use super::usage::Tally;
use super::{Answer, Change, Live, StoreSync};
use crate::model::{StoreFile, UsageBook, quota_account};
use crate::pool::quota::Reservation;
use crate::pool::{CapKind, Outcome, Pool, Probe};
use crate::store::redis::RedisStore;
use crate::store::redis::layout::Message;
use crate::store::redis::script::{self, Op, Reserved};
use chrono::{DateTime, Utc};
use redis::Connection;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often batched counters are sent.
const COUNTS_EVERY: Duration = Duration::from_secs(1);
/// Changes kept while Redis is down; older ones are dropped beyond this.
const MAX_QUEUED: usize = 100_000;
/// How long a request waits for a free-model reservation before it falls
/// back to this instance's own counts.
const RESERVE_WAIT: Duration = Duration::from_secs(1);
/// How long a stopping server keeps trying to send its last changes.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
/// The first pause between two of those tries; it doubles.
const SHUTDOWN_PAUSE: Duration = Duration::from_millis(250);
/// Reconnection backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

enum Cmd {
    /// Urgent changes were queued.
    Wake,
    Reserve {
        account: String,
        daily_cap: u32,
        minute_cap: u32,
        reply: tokio::sync::oneshot::Sender<Option<Reservation>>,
    },
    Reload,
    Flush(Sender<bool>),
    Stop,
}

/// A reservation waiting for the writer: account, daily cap, per-minute
/// cap, and where the answer goes.
type Reserve = (
    String,
    u32,
    u32,
    tokio::sync::oneshot::Sender<Option<Reservation>>,
);

/// The handle the server keeps.
pub(crate) struct RedisSync {
    store: RedisStore,
    live: Arc<Live>,
    tx: Mutex<Sender<Cmd>>,
    /// Changes waiting for the writer. Counters are only summed here (no
    /// wake-up per request); urgent changes also wake the writer.
    queue: Arc<Mutex<Queue>>,
    /// Usage totals waiting for the writer.
    usage: Arc<Tally>,
    up: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// The change to send for an attempt's outcome (`pool` before the report).
fn op_for_outcome(pool: &Pool, id: &str, outcome: &Outcome) -> Option<Op> {
    let key = pool.get(id)?;
    Some(match outcome {
        Outcome::Neutral => return None,
        Outcome::Success => Op::Count {
            id: id.to_owned(),
            requests: 1,
            last_used: None,
            reset_failures: key.state.consecutive_failures > 0,
        },
        Outcome::Cooldown {
            until,
            reason,
            account_wide,
            free_only,
        } => Op::Park {
            ids: pool.cooldown_targets(id, *account_wide),
            until: *until,
            reason: reason.clone(),
            free_only: *free_only,
        },
        Outcome::Disable {
            reason,
            recoverable,
            rejected,
        } => Op::Disable {
            id: id.to_owned(),
            reason: reason.clone(),
            recoverable: *recoverable,
            rejected: *rejected,
        },
        // Counted against the key only once blamed (Change::Blamed).
        Outcome::Failed { .. } => return None,
    })
}

/// The change to send for `change` (`pool` before it is applied).
fn op_for(pool: &Pool, change: &Change<'_>) -> Option<Op> {
    match *change {
        Change::Chosen { id, at } => Some(Op::Count {
            id: id.to_owned(),
            requests: 0,
            last_used: Some(at),
            reset_failures: false,
        }),
        Change::Reported { id, outcome } => op_for_outcome(pool, id, outcome),
        Change::Blamed { id, reason } => Some(Op::Fail {
            id: id.to_owned(),
            streak_reason: crate::pool::streak_suffix(reason),
            max_failures: pool.settings().max_failures,
        }),
        Change::ModelHeld { model, until } => Some(Op::Model {
            model: model.to_owned(),
            until,
        }),
        Change::ProbeStarted { id } => Some(Op::ProbeMark { id: id.to_owned() }),
        Change::Probed { id, probe } => match probe {
            Probe::Healthy => Some(Op::ProbeOk { id: id.to_owned() }),
            Probe::Invalid(reason) => Some(Op::ProbeInvalid {
                id: id.to_owned(),
                reason: reason.clone(),
            }),
            Probe::StillDown(_) => None,
        },
        Change::Cap {
            id,
            kind: CapKind::PerDay,
            limit,
            hit,
        } => {
            let (account, cap, _) = pool.quota_caps(id)?;
            Some(Op::Cap {
                account,
                limit,
                exhausted: hit,
                // The cap in force once this limit is noted.
                cap: limit.unwrap_or(cap),
            })
        }
        Change::Cap {
            kind: CapKind::PerMinute,
            ..
        } => None,
    }
}

/// The pool's reading of what the script reserved.
fn reservation(reserved: Reserved) -> Reservation {
    match reserved {
        Reserved::Granted { today } => Reservation::Granted { today },
        Reserved::DayCapped { .. } => Reservation::DayCapped,
        Reserved::MinuteCapped { until } => Reservation::MinuteCapped { until },
    }
}

/// Apply key states Redis reports (another instance's change, or the
/// stored result of ours); wakes waiters when a key came back.
fn adopt_changed(live: &Live, changed: &[(String, HashMap<String, String>)]) {
    if changed.is_empty() {
        return;
    }
    let now = Utc::now();
    let mut back = false;
    {
        let mut pool = live.pool();
        for (id, fields) in changed {
            if let Some(state) = script::state_of(id, fields) {
                let version = crate::store::redis::layout::version_of(fields);
                back |= pool.adopt_state(id, &state, version, now);
            }
        }
    }
    if back {
        live.changed().notify_waiters();
    }
}

/// Changes waiting to be sent: urgent ones in order, counters summed per key.
#[derive(Debug, Default)]
struct Queue {
    urgent: VecDeque<Op>,
    counts: HashMap<String, (u64, Option<DateTime<Utc>>)>,
    dropped: u64,
}

impl Queue {
    fn push(&mut self, op: Op) {
        match op {
            Op::Count {
                id,
                requests,
                last_used,
                reset_failures: false,
            } => {
                let entry = self.counts.entry(id).or_default();
                entry.0 = entry.0.saturating_add(requests);
                entry.1 = entry.1.max(last_used);
            }
            op => {
                if self.urgent.len() >= MAX_QUEUED {
                    self.urgent.pop_front();
                    self.dropped += 1;
                }
                self.urgent.push_back(op);
            }
        }
    }

    fn take_counts(&mut self) -> Vec<Op> {
        self.counts
            .drain()
            .map(|(id, (requests, last_used))| Op::Count {
                id,
                requests,
                last_used,
                reset_failures: false,
            })
            .collect()
    }

    fn len(&self) -> usize {
        self.urgent.len() + self.counts.len()
    }
}

impl RedisSync {
    /// Start the writer and subscriber threads for `live`, whose pool was
    /// built from `file` (the store as read at start), and for the requests'
    /// `usage`.
    pub(crate) fn start(
        live: Arc<Live>,
        store: RedisStore,
        file: StoreFile,
        usage: Arc<Tally>,
    ) -> RedisSync {
        let (tx, rx) = mpsc::channel();
        let up = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let origin = format!("{:016x}", fastrand::u64(..));
        let queue = Arc::new(Mutex::new(Queue::default()));
        let writer = {
            let queue = queue.clone();
            let usage = usage.clone();
            let live = live.clone();
            let store = store.clone();
            let up = up.clone();
            let origin = origin.clone();
            std::thread::Builder::new()
                .name("orproxy-redis-writer".into())
                .spawn(move || {
                    Writer {
                        live,
                        store,
                        origin,
                        up,
                        con: None,
                        queue,
                        usage,
                        last_file: file,
                        backoff: BACKOFF_MIN,
                        retry_at: Instant::now(),
                        outage: false,
                    }
                    .run(&rx);
                })
        };
        let subscriber = {
            let (live, store) = (live.clone(), store.clone());
            let tx = tx.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("orproxy-redis-events".into())
                .spawn(move || subscribe(&live, &store, &tx, &stop, &origin))
        };
        let mut threads = Vec::new();
        for t in [writer, subscriber] {
            match t {
                Ok(handle) => threads.push(handle),
                Err(e) => log::error!("cannot start a thread for the shared key store: {e}"),
            }
        }
        RedisSync {
            store: store.clone(),
            live: live.clone(),
            tx: Mutex::new(tx),
            queue,
            usage,
            up,
            stop,
            threads: Mutex::new(threads),
        }
    }

    fn send(&self, cmd: Cmd) -> bool {
        self.tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(cmd)
            .is_ok()
    }

    /// Queue a change for Redis (never waits for Redis).
    fn push(&self, op: Op) {
        let urgent = op.is_urgent();
        lock(&self.queue).push(op);
        if urgent {
            self.send(Cmd::Wake);
        }
    }

    /// Whether Redis answered last time it was asked.
    fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Reserve one free-model request for `account` across every instance.
    /// None when Redis cannot answer in time (use this instance's counts).
    async fn reserve(
        &self,
        account: String,
        daily_cap: u32,
        minute_cap: u32,
    ) -> Option<Reservation> {
        if !self.is_up() {
            return None;
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        if !self.send(Cmd::Reserve {
            account,
            daily_cap,
            minute_cap,
            reply,
        }) {
            return None;
        }
        tokio::time::timeout(RESERVE_WAIT, answer)
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
    }

    /// Send everything queued and stop the threads (blocking; at shutdown).
    /// While Redis cannot take them, the changes are tried again (each try
    /// reconnects) for up to `wait`.
    fn stop(&self, wait: Duration) {
        let deadline = Instant::now() + wait;
        let mut pause = SHUTDOWN_PAUSE;
        let sent = loop {
            let (ack, done) = mpsc::channel();
            if !self.send(Cmd::Flush(ack)) {
                break false;
            }
            match done.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(true) => break true,
                Ok(false) if Instant::now() + pause < deadline => {
                    std::thread::sleep(pause);
                    pause *= 2;
                }
                _ => break false,
            }
        };
        if !sent {
            log::error!(
                "stopping without sending {} queued changes{} to the shared key store {}: they are lost",
                lock(&self.queue).len(),
                if self.usage.is_empty() {
                    ""
                } else {
                    " and the latest usage totals"
                },
                self.store.shown()
            );
        }
        self.stop.store(true, Ordering::Relaxed);
        self.send(Cmd::Stop);
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl StoreSync for RedisSync {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn reachable(&self) -> bool {
        self.is_up()
    }

    fn share(&self, pool: &Pool, change: &Change<'_>) {
        if let Some(op) = op_for(pool, change) {
            self.push(op);
        }
    }

    fn reserve_free(
        &self,
        account: String,
        daily: u32,
        minute: u32,
    ) -> Answer<'_, Option<Reservation>> {
        Box::pin(self.reserve(account, daily, minute))
    }

    /// Changes go out as they happen.
    fn sync(&self) {}

    /// Counts are in Redis as requests reserve them.
    fn settle(&self) {}

    fn refresh(&self) {
        match self
            .store
            .connect()
            .and_then(|mut con| self.store.load_versioned(&mut con))
        {
            Ok((file, versions)) => self.live.adopt_store(&file, &versions),
            // The subscriber's reload notice will catch up.
            Err(e) => log::warn!("{e}"),
        }
    }

    /// Send what is queued and stop the threads.
    fn shutdown(&self) {
        self.stop(SHUTDOWN_WAIT);
    }
}

fn lock(queue: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Writer {
    live: Arc<Live>,
    store: RedisStore,
    origin: String,
    up: Arc<AtomicBool>,
    con: Option<Connection>,
    queue: Arc<Mutex<Queue>>,
    usage: Arc<Tally>,
    /// The store as last read: what is written back if Redis loses it.
    last_file: StoreFile,
    backoff: Duration,
    retry_at: Instant,
    outage: bool,
}

impl Writer {
    fn run(mut self, rx: &Receiver<Cmd>) {
        let mut counts_at = Instant::now() + COUNTS_EVERY;
        loop {
            let now = Instant::now();
            let mut wake = counts_at;
            if self.con.is_none() {
                wake = wake.min(self.retry_at);
            }
            let first = match rx.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(cmd) => Some(cmd),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut reserves = Vec::new();
            let mut flushes = Vec::new();
            let mut reload = false;
            let mut stop = false;
            for cmd in first
                .into_iter()
                .chain(std::iter::from_fn(|| rx.try_recv().ok()))
            {
                match cmd {
                    Cmd::Wake => {}
                    Cmd::Reserve {
                        account,
                        daily_cap,
                        minute_cap,
                        reply,
                    } => reserves.push((account, daily_cap, minute_cap, reply)),
                    Cmd::Reload => reload = true,
                    Cmd::Flush(ack) => flushes.push(ack),
                    Cmd::Stop => stop = true,
                }
            }
            let flush_counts = !flushes.is_empty() || Instant::now() >= counts_at;
            if flush_counts {
                counts_at = Instant::now() + COUNTS_EVERY;
            }
            if self.con.is_none() && (Instant::now() >= self.retry_at || !flushes.is_empty()) {
                reload |= self.reconnect();
            }
            let ok = self.con.is_some() && self.step(&mut reserves, flush_counts, reload).is_ok();
            for (.., reply) in reserves {
                let _ = reply.send(None);
            }
            for ack in flushes {
                let _ = ack.send(ok && lock(&self.queue).len() == 0 && self.usage.is_empty());
            }
            if stop {
                return;
            }
        }
    }

    /// Send what is queued, answer reservations, read the store if asked.
    fn step(
        &mut self,
        reserves: &mut Vec<Reserve>,
        flush_counts: bool,
        reload: bool,
    ) -> Result<(), ()> {
        let result = self.try_step(reserves, flush_counts, reload);
        if let Err(e) = &result {
            self.down(e);
        }
        result.map_err(|_| ())
    }

    fn try_step(
        &mut self,
        reserves: &mut Vec<Reserve>,
        flush_counts: bool,
        reload: bool,
    ) -> Result<(), String> {
        let Some(con) = self.con.as_mut() else {
            return Err("not connected".into());
        };
        let names = self.store.names().clone();
        // Urgent changes, in order, a bounded batch per round trip; they
        // leave the queue only once Redis has them.
        loop {
            let batch: Vec<Op> = lock(&self.queue).urgent.iter().take(256).cloned().collect();
            if batch.is_empty() {
                break;
            }
            let changed = script::run(con, &names, &self.origin, &batch, Utc::now())
                .map_err(|e| self.store.error("cannot write", &e).to_string())?;
            lock(&self.queue).urgent.drain(..batch.len());
            adopt_changed(&self.live, &changed);
        }
        for (account, daily_cap, minute_cap, reply) in reserves.drain(..) {
            let answer = script::reserve(
                con,
                &names,
                &self.origin,
                &account,
                daily_cap,
                minute_cap,
                Utc::now(),
            )
            .map_err(|e| self.store.error("cannot write", &e).to_string());
            match answer {
                Ok(r) => {
                    let _ = reply.send(Some(reservation(r)));
                }
                Err(e) => {
                    let _ = reply.send(None);
                    return Err(e);
                }
            }
        }
        let batch = if flush_counts {
            lock(&self.queue).take_counts()
        } else {
            Vec::new()
        };
        if !batch.is_empty() {
            match script::run(con, &names, &self.origin, &batch, Utc::now()) {
                Ok(changed) => adopt_changed(&self.live, &changed),
                Err(e) => {
                    let mut queue = lock(&self.queue);
                    for op in batch {
                        queue.push(op);
                    }
                    return Err(self.store.error("cannot write", &e).to_string());
                }
            }
        }
        if flush_counts {
            self.send_usage()?;
        }
        if reload {
            let Some(con) = self.con.as_mut() else {
                return Err("not connected".into());
            };
            let (file, versions) = self.store.load_versioned(con).map_err(|e| e.to_string())?;
            self.live.adopt_store(&file, &versions);
            self.last_file = file;
        }
        Ok(())
    }

    /// Add the usage totals summed since the last time to Redis's (put back
    /// when Redis does not take them).
    fn send_usage(&mut self) -> Result<(), String> {
        let sums = self.usage.take();
        if sums.is_empty() {
            return Ok(());
        }
        let mut book = UsageBook::default();
        {
            let pool = self.live.pool();
            sums.add_to(&mut book, |id| match pool.get(id) {
                Some(key) => key.quota.clone(),
                None => quota_account(None, id),
            });
        }
        let result = match self.con.as_mut() {
            Some(con) => self.store.add_usage(con, &book).map_err(|e| e.to_string()),
            None => Err("not connected".into()),
        };
        if result.is_err() {
            self.usage.restore(sums);
        }
        result
    }

    /// Connect, load the script, and write our state back if Redis lost the
    /// store. Returns whether the store should be read again.
    fn reconnect(&mut self) -> bool {
        match self.try_connect() {
            Ok(mut con) => {
                let restored = self.restore_if_lost(&mut con);
                self.con = Some(con);
                self.up.store(true, Ordering::Relaxed);
                self.backoff = BACKOFF_MIN;
                if self.outage {
                    self.outage = false;
                    log::warn!(
                        "the shared key store {} is reachable again: sending {} queued changes{}",
                        self.store.shown(),
                        lock(&self.queue).len(),
                        if restored {
                            "; it had lost its data, so this instance wrote back the keys and states it knew"
                        } else {
                            ""
                        }
                    );
                    let dropped = std::mem::take(&mut lock(&self.queue).dropped);
                    if dropped > 0 {
                        log::warn!(
                            "{dropped} changes were dropped while the shared key store was down (more than {MAX_QUEUED} queued)"
                        );
                    }
                }
                true
            }
            Err(e) => {
                self.down(&e);
                false
            }
        }
    }

    fn try_connect(&self) -> Result<Connection, String> {
        let mut con = self.store.connect().map_err(|e| e.to_string())?;
        script::load_script(&mut con)
            .map_err(|e| self.store.error("cannot use", &e).to_string())?;
        Ok(con)
    }

    fn restore_if_lost(&mut self, con: &mut Connection) -> bool {
        match self.store.exists(con) {
            Ok(true) => false,
            Ok(false) => {
                let file = self.live.export(&self.last_file);
                match self.store.restore_if_missing(con, &file) {
                    Ok(written) => written,
                    Err(e) => {
                        log::error!("{e}");
                        false
                    }
                }
            }
            Err(e) => {
                log::error!("{e}");
                false
            }
        }
    }

    fn down(&mut self, error: &str) {
        self.con = None;
        self.up.store(false, Ordering::Relaxed);
        if !self.outage {
            self.outage = true;
            log::error!(
                "the shared key store {} is unreachable ({error}): serving with the last known key states; \
                 changes are queued and sent when it is back",
                self.store.shown()
            );
        }
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }
}

/// Apply other instances' changes as Redis announces them.
fn subscribe(live: &Live, store: &RedisStore, tx: &Sender<Cmd>, stop: &AtomicBool, origin: &str) {
    let mut backoff = BACKOFF_MIN;
    let channel = store.names().channel();
    while !stop.load(Ordering::Relaxed) {
        let mut con = match store.connect() {
            Ok(con) => con,
            Err(_) => {
                // The writer reports the outage; just wait and retry.
                let until = Instant::now() + backoff;
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let mut pubsub = con.as_pubsub();
        if pubsub.subscribe(&channel).is_err()
            || pubsub
                .set_read_timeout(Some(Duration::from_millis(250)))
                .is_err()
        {
            continue;
        }
        backoff = BACKOFF_MIN;
        // Whatever changed before we listened (or while we could not).
        let _ = tx.send(Cmd::Reload);
        while !stop.load(Ordering::Relaxed) {
            match pubsub.get_message() {
                Ok(msg) => {
                    if let Ok(message) = serde_json::from_slice::<Message>(msg.get_payload_bytes())
                    {
                        handle(live, tx, &message, origin);
                    }
                }
                Err(e) if e.is_timeout() => {}
                Err(_) => break,
            }
        }
    }
}

fn handle(live: &Live, tx: &Sender<Cmd>, message: &Message, origin: &str) {
    if message.reload {
        let _ = tx.send(Cmd::Reload);
        return;
    }
    if message.o == origin {
        return; // our own change: adopted from the script's answer already
    }
    if let Some(id) = &message.k {
        let fields = crate::store::redis::layout::pairs(&message.s);
        adopt_changed(live, &[(id.clone(), fields)]);
    }
    if let (Some(model), Some(until)) = (&message.m, message.u)
        && let Some(until) = DateTime::from_timestamp_millis(until)
    {
        live.pool().back_off_model(model, until);
    }
}

#[cfg(test)]
mod parity;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{KeyInfo, KeyRecord};
    use crate::pool::Settings;
    use crate::secret::ApiKey;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn pool() -> Pool {
        let record = |id: &str, key: &str, account: &str| KeyRecord {
            id: id.into(),
            key: ApiKey::parse(key).unwrap(),
            label: None,
            added_at: t0(),
            generation: 0,
            state: Default::default(),
            info: Some(KeyInfo {
                creator_user_id: Some(account.into()),
                ..KeyInfo::default()
            }),
            extra: Default::default(),
        };
        Pool::from_records(
            &[
                record("a", "sk-or-v1-aaaaaaaaaaaa", "u1"),
                record("b", "sk-or-v1-bbbbbbbbbbbb", "u1"),
                record("c", "sk-or-v1-cccccccccccc", "u2"),
            ],
            Settings { max_failures: 4 },
        )
    }

    #[test]
    fn outcomes_become_the_matching_shared_change() {
        let p = pool();
        let until = t0() + chrono::TimeDelta::seconds(30);
        let cooldown = |account_wide| Outcome::Cooldown {
            until,
            reason: "free-models-per-day".into(),
            account_wide,
            free_only: true,
        };
        assert_eq!(
            op_for_outcome(&p, "a", &cooldown(true)),
            Some(Op::Park {
                ids: vec!["a".into(), "b".into()],
                until,
                reason: "free-models-per-day".into(),
                free_only: true
            }),
            "an account-wide cooldown parks every key of the account"
        );
        assert!(
            matches!(op_for_outcome(&p, "a", &cooldown(false)), Some(Op::Park { ids, .. }) if ids == ["a"])
        );
        let failed = Outcome::Failed {
            fault: crate::pool::Fault::ServerError,
            reason: "502".into(),
        };
        assert_eq!(
            op_for_outcome(&p, "c", &failed),
            None,
            "a failure is shared once it is counted against the key"
        );
        assert_eq!(
            op_for(
                &p,
                &Change::Blamed {
                    id: "c",
                    reason: "502"
                }
            ),
            Some(Op::Fail {
                id: "c".into(),
                streak_reason: " consecutive failures (last: 502)".into(),
                max_failures: 4
            })
        );
        assert_eq!(op_for_outcome(&p, "c", &Outcome::Neutral), None);
        assert_eq!(op_for_outcome(&p, "gone", &Outcome::Success), None);
    }

    #[test]
    fn a_success_resets_the_shared_streak_only_after_failures() {
        let mut p = pool();
        assert!(matches!(
            op_for_outcome(&p, "a", &Outcome::Success),
            Some(Op::Count {
                reset_failures: false,
                ..
            })
        ));
        p.report(
            "a",
            Outcome::Failed {
                fault: crate::pool::Fault::ServerError,
                reason: "502".into(),
            },
            t0(),
        );
        p.report("c", Outcome::Success, t0());
        let op = op_for_outcome(&p, "a", &Outcome::Success).unwrap();
        assert!(op.is_urgent(), "{op:?}");
    }

    #[test]
    fn counters_are_summed_per_key_and_urgent_changes_keep_their_order() {
        let mut q = Queue::default();
        let count = |id: &str, n, at: Option<DateTime<Utc>>| Op::Count {
            id: id.into(),
            requests: n,
            last_used: at,
            reset_failures: false,
        };
        q.push(count("a", 1, None));
        q.push(count("a", 0, Some(t0())));
        q.push(Op::ProbeOk { id: "x".into() });
        q.push(count("a", 2, Some(t0() - chrono::TimeDelta::seconds(5))));
        q.push(Op::ProbeMark { id: "y".into() });
        assert_eq!(q.len(), 3);
        assert_eq!(
            q.urgent,
            [
                Op::ProbeOk { id: "x".into() },
                Op::ProbeMark { id: "y".into() }
            ]
        );
        assert_eq!(q.take_counts(), [count("a", 3, Some(t0()))]);
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn a_full_queue_drops_the_oldest_change() {
        let mut q = Queue::default();
        for i in 0..=MAX_QUEUED {
            q.push(Op::ProbeMark { id: i.to_string() });
        }
        assert_eq!(q.urgent.len(), MAX_QUEUED);
        assert_eq!(q.dropped, 1);
        assert_eq!(q.urgent.front(), Some(&Op::ProbeMark { id: "1".into() }));
    }
}
