//! What every worker shares: the checked settings, the running key pool
//! ([`Live`]), the store and how the pool is kept in step with it
//! ([`StoreSync`]: the server never asks which store it is). Each method
//! is one short decision of the pool, passed on to the store's sync.

use crate::config::ServeConfig;
use crate::model::StoreFile;
use crate::pool::{CapKind, Choice, Counts, Event, FreeSummary, Outcome, Pool, Probe, Settings};
use crate::secret::ApiKey;
use crate::store::Backend;
use crate::sync::usage::Tally;
use crate::sync::{Change, Live, StoreSync};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use tokio::sync::Notify;

/// Everything the workers share.
pub(crate) struct Shared {
    live: Arc<Live>,
    sync: Arc<dyn StoreSync>,
    /// The requests' usage totals on their way to the store.
    usage: Arc<Tally>,
    /// The key store, for administrative changes.
    pub(crate) store: Backend,
    /// Checked settings.
    pub(crate) config: ServeConfig,
    /// Which key served which generation.
    pub(crate) generations: super::generations::Generations,
}

impl Shared {
    /// Build the shared state from a store already read at start (`file`),
    /// and start keeping the two in step.
    pub(crate) fn new(config: ServeConfig, store: Backend, file: StoreFile) -> Self {
        let mut pool = Pool::from_records(
            &file.keys,
            Settings {
                max_failures: config.max_failures,
            },
        );
        pool.adopt_accounts(&file, Utc::now());
        let live = Arc::new(Live::new(pool, log_events));
        let usage = Arc::new(Tally::default());
        let sync = crate::sync::start(&store, live.clone(), file, usage.clone());
        Self {
            live,
            sync,
            usage,
            store,
            config,
            generations: super::generations::Generations::default(),
        }
    }

    /// The running pool.
    pub(crate) fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// How the pool is kept in step with the store.
    pub(crate) fn sync(&self) -> &Arc<dyn StoreSync> {
        &self.sync
    }

    /// Where each finished request adds what it spent.
    pub(crate) fn usage(&self) -> &Arc<Tally> {
        &self.usage
    }

    /// The store's kind (`file` or `redis`) and whether it worked the last
    /// time it was used.
    pub(crate) fn store_status(&self) -> (&'static str, bool) {
        (self.sync.kind(), self.sync.reachable())
    }

    /// Woken when keys may have become usable (added, reactivated, recovered).
    pub(crate) fn changed(&self) -> &Notify {
        self.live.changed()
    }

    /// Pick a key for an attempt (`free`: for a `:free` model).
    pub(crate) fn choose(&self, now: DateTime<Utc>, exclude: &[String], free: bool) -> Choice {
        let mut pool = self.live.pool();
        let choice = pool.choose_for(now, exclude, free);
        if let Choice::Use { id, .. } = &choice {
            self.sync.share(&pool, &Change::Chosen { id, at: now });
        }
        choice
    }

    /// The keys of other accounts than key `id`'s (every other key when
    /// its account is unknown).
    pub(crate) fn outside_account_of(&self, id: &str) -> Vec<String> {
        let pool = self.live.pool();
        let account = pool.get(id).and_then(|k| k.account.clone());
        pool.keys()
            .filter(|k| k.id != id && (account.is_none() || k.account != account))
            .map(|k| k.id.clone())
            .collect()
    }

    /// Count a `:free` model request sent with key `id` against its account
    /// across every instance of a shared store. False when the account is
    /// at a cap there: the pool then skips its keys for free models until
    /// the cap frees, and the caller chooses again. True without a shared
    /// count, or when it cannot answer in time (this instance's own counts
    /// decided).
    pub(crate) async fn reserve_free(&self, id: &str) -> bool {
        let Some((account, daily, minute)) = self.live.pool().quota_caps(id) else {
            return true;
        };
        match self.sync.reserve_free(account, daily, minute).await {
            None => true,
            Some(answer) => self.live.pool().adopt_reservation(id, answer, Utc::now()),
        }
    }

    /// Until when requests for `model` are held (OpenRouter's shared
    /// capacity for it is exhausted).
    pub(crate) fn model_backoff(&self, model: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.live.pool().model_backoff(model, now)
    }

    /// Hold requests for `model` until `until`.
    pub(crate) fn back_off_model(&self, model: &str, until: DateTime<Utc>) {
        log::info!(
            target: "orproxy::keys",
            "model {model} is at capacity on OpenRouter: holding its requests until {}",
            crate::human::rfc3339(until)
        );
        let mut pool = self.live.pool();
        self.sync.share(&pool, &Change::ModelHeld { model, until });
        pool.back_off_model(model, until);
    }

    /// Disabled keys due for a background re-check.
    pub(crate) fn due_for_probe(
        &self,
        now: DateTime<Utc>,
        every: chrono::TimeDelta,
    ) -> Vec<(String, ApiKey)> {
        let mut pool = self.live.pool();
        let due = pool.due_for_probe(now, every);
        for (id, _) in &due {
            self.sync.share(&pool, &Change::ProbeStarted { id });
        }
        due
    }

    /// Apply a re-check's result; wakes waiters when the key is back.
    pub(crate) fn probe_result(&self, id: &str, probe: Probe, now: DateTime<Utc>) {
        let events = {
            let mut pool = self.live.pool();
            self.sync
                .share(&pool, &Change::Probed { id, probe: &probe });
            pool.probe_result(id, probe, now)
        };
        if !events.is_empty() {
            self.live.events_and_wake(&events);
        }
    }

    /// Record an account cap OpenRouter reported through key `id`.
    pub(crate) fn note_cap(
        &self,
        id: &str,
        kind: CapKind,
        limit: Option<u32>,
        hit: bool,
        now: DateTime<Utc>,
    ) {
        let mut pool = self.live.pool();
        self.sync.share(
            &pool,
            &Change::Cap {
                id,
                kind,
                limit,
                hit,
            },
        );
        pool.note_cap(id, kind, limit, hit, now);
    }

    /// Record what happened to an attempt made with key `id`.
    pub(crate) fn report(&self, id: &str, outcome: Outcome, now: DateTime<Utc>) {
        let events = {
            let mut pool = self.live.pool();
            self.sync.share(
                &pool,
                &Change::Reported {
                    id,
                    outcome: &outcome,
                },
            );
            let events = pool.report(id, outcome, now);
            for event in &events {
                if let Event::Blamed { id, reason, .. } = event {
                    self.sync.share(&pool, &Change::Blamed { id, reason });
                }
            }
            events
        };
        let back = events
            .iter()
            .any(|e| matches!(e, Event::Upstream(crate::pool::upstream::Change::Up { .. })));
        if back {
            self.live.events_and_wake(&events);
        } else {
            self.live.events(&events);
        }
    }

    /// The upstream outage in progress, if the upstream is down.
    pub(crate) fn outage(&self) -> Option<crate::pool::upstream::Outage> {
        self.live.pool().outage().cloned()
    }

    /// Whether a down upstream is due for a check now.
    pub(crate) fn upstream_check_due(&self, now: DateTime<Utc>) -> bool {
        self.live.pool().upstream_check_due(now)
    }

    /// A check of the down upstream found it reachable, or not.
    pub(crate) fn upstream_checked(&self, reachable: bool) {
        let events = self.live.pool().upstream_checked(reachable);
        if !events.is_empty() {
            self.live.events_and_wake(&events);
        }
    }

    /// Keys by status at `now`.
    pub(crate) fn counts(&self, now: DateTime<Utc>) -> Counts {
        self.live.pool().counts(now)
    }

    /// Keys by status, whether `:free` models can be served, and how many
    /// keys there are, at `now` (one look at the pool).
    pub(crate) fn availability(&self, now: DateTime<Utc>) -> (Counts, FreeSummary, usize) {
        let pool = self.live.pool();
        (pool.counts(now), pool.free_summary(now), pool.len())
    }

    /// When some key can serve next (see [`Pool::next_available`]).
    pub(crate) fn next_available(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.live.pool().next_available(now)
    }

    /// A key to check the upstream with (one that is not disabled, if any).
    pub(crate) fn any_key(&self) -> Option<ApiKey> {
        let pool = self.live.pool();
        let mut keys = pool.keys();
        let first = pool.keys().next().map(|k| k.key.clone());
        keys.find(|k| !k.state.disabled)
            .map(|k| k.key.clone())
            .or(first)
    }

    /// Once a second: end expired cooldowns, wake waiters for recovered keys.
    pub(crate) fn tick(&self, now: DateTime<Utc>) {
        let events = self.live.pool().tick(now);
        if !events.is_empty() {
            self.live.events_and_wake(&events);
        }
    }
}

/// The upstream went down or came back: said once each, on the console and
/// in the error log.
fn log_upstream(change: &crate::pool::upstream::Change) {
    use crate::pool::upstream::Change;
    match change {
        Change::Down(outage) => log::error!(
            "the upstream is down ({}): answering requests at once and checking it every {} s; \
             no key is blamed",
            outage.reason,
            crate::pool::upstream::CHECK_EVERY.num_seconds()
        ),
        Change::Up { since } => log::warn!(
            "the upstream answers again after {} down: serving",
            crate::human::span(chrono::Utc::now() - *since)
        ),
    }
}

/// Log key events, one line each, and count them.
pub(crate) fn log_events(events: &[Event]) {
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
            Event::Blamed { id, reason, streak } => log::info!(
                target: "orproxy::keys",
                "key {id}: failure counted against it ({streak} in a row): {reason}"
            ),
            Event::Upstream(change) => log_upstream(change),
        }
    }
}
