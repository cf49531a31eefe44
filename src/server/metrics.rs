//! `GET /metrics`: Prometheus text format (0.0.4), built with
//! `prometheus-client`.
//!
//! Counters and histograms live in one process-wide [`Metrics`] so that any
//! part of the server can record into it; the per-key series are read from
//! the pool at scrape time by [`KeyCollector`]. Nothing here ever holds a
//! key: keys are labelled by their ID.

use crate::model::{FreeCounts, KeyStatus};
use crate::openrouter::counts::TokenCounts;
use crate::pool::Event;
use crate::sync::{Live, StoreSync};
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// Labels of `orproxy_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    /// The route, e.g. `/v1/chat/completions` (also for `/api/v1/...`).
    pub(crate) route: &'static str,
    /// The HTTP status sent to the client.
    pub(crate) status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    kind: &'static str,
}

/// Every counter, gauge and histogram orproxy keeps.
#[derive(Debug)]
pub(crate) struct Metrics {
    requests: Family<RequestLabels, Counter>,
    attempts: Family<VerdictLabels, Counter>,
    retries: Counter,
    key_waits: Histogram,
    cooldowns: Family<ReasonLabels, Counter>,
    key_events: Family<EventLabels, Counter>,
    active_streams: Gauge,
    upstream_latency: Histogram,
    overhead: Histogram,
    tokens: Family<TokenLabels, Counter>,
    cost: Counter<f64, std::sync::atomic::AtomicU64>,
}

const LATENCY_BUCKETS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
const OVERHEAD_BUCKETS: [f64; 12] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
const WAIT_BUCKETS: [f64; 10] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    requests: Family::default(),
    attempts: Family::default(),
    retries: Counter::default(),
    key_waits: Histogram::new(WAIT_BUCKETS),
    cooldowns: Family::default(),
    key_events: Family::default(),
    active_streams: Gauge::default(),
    upstream_latency: Histogram::new(LATENCY_BUCKETS),
    overhead: Histogram::new(OVERHEAD_BUCKETS),
    tokens: Family::default(),
    cost: Counter::default(),
});

/// The process-wide metrics.
pub(crate) fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    /// A request answered with `status` on `route`.
    pub(crate) fn request(&self, route: &'static str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
    }

    /// An upstream attempt judged `verdict` after `latency`; `retry` when it
    /// was not the request's first.
    pub(crate) fn attempt(&self, verdict: &'static str, latency: Duration, retry: bool) {
        self.attempts
            .get_or_create(&VerdictLabels { verdict })
            .inc();
        self.upstream_latency.observe(latency.as_secs_f64());
        if retry {
            self.retries.inc();
        }
    }

    /// Time orproxy itself spent on a request.
    pub(crate) fn overhead(&self, took: Duration) {
        self.overhead.observe(took.as_secs_f64());
    }

    /// A request waited this long for a free key.
    pub(crate) fn key_wait(&self, took: Duration) {
        self.key_waits.observe(took.as_secs_f64());
    }

    /// The tokens and cost an answer's usage reported.
    pub(crate) fn spent(&self, counts: &TokenCounts) {
        for (kind, n) in [
            ("prompt", counts.prompt),
            ("completion", counts.completion),
            ("cached", counts.cached),
            ("reasoning", counts.reasoning),
        ] {
            if n > 0 {
                self.tokens.get_or_create(&TokenLabels { kind }).inc_by(n);
            }
        }
        if let Some(cost) = counts.cost.filter(|c| *c > 0.0) {
            self.cost.inc_by(cost);
        }
    }

    /// A streamed response started; the guard ends it when dropped.
    pub(crate) fn stream_started(&self) -> StreamGuard {
        self.active_streams.inc();
        StreamGuard(())
    }

    /// Count key events (cooldowns by reason, and every event by kind).
    pub(crate) fn key_events(&self, events: &[Event]) {
        for event in events {
            let name = match event {
                Event::CooldownStarted { reason, .. } => {
                    self.cooldowns
                        .get_or_create(&ReasonLabels {
                            reason: reason.clone(),
                        })
                        .inc();
                    "cooldown"
                }
                Event::Disabled { .. } => "disabled",
                Event::Recovered { .. } => "recovered",
                Event::Added { .. } => "added",
                Event::Removed { .. } => "removed",
                Event::Reactivated { .. } => "reactivated",
                Event::Blamed { .. } => "failure_counted",
                Event::Upstream(crate::pool::upstream::Change::Down(_)) => "upstream_down",
                Event::Upstream(crate::pool::upstream::Change::Up { .. }) => "upstream_up",
            };
            self.key_events
                .get_or_create(&EventLabels { event: name })
                .inc();
        }
    }
}

/// An active stream; decrements `orproxy_active_streams` when dropped.
#[derive(Debug)]
pub(crate) struct StreamGuard(());

impl Drop for StreamGuard {
    fn drop(&mut self) {
        METRICS.active_streams.dec();
    }
}

/// The registry scraped by `GET /metrics`: the process-wide metrics plus the
/// per-key series of the `live` pool and the state of its store.
pub(crate) fn registry(live: Arc<Live>, sync: Arc<dyn StoreSync>) -> Registry {
    let m = metrics();
    let mut r = Registry::with_prefix("orproxy");
    r.register(
        "requests",
        "Requests answered, by route and HTTP status",
        m.requests.clone(),
    );
    r.register(
        "upstream_attempts",
        "Upstream attempts, by orproxy's verdict on the answer",
        m.attempts.clone(),
    );
    r.register(
        "retries",
        "Upstream attempts after a request's first",
        m.retries.clone(),
    );
    r.register(
        "key_wait_seconds",
        "Waits for a free key (count) and how long they took",
        m.key_waits.clone(),
    );
    r.register(
        "cooldowns",
        "Key cooldowns started or extended, by reason",
        m.cooldowns.clone(),
    );
    r.register(
        "key_events",
        "Key events (added, removed, cooldown, disabled, recovered, reactivated)",
        m.key_events.clone(),
    );
    r.register(
        "active_streams",
        "Streamed (SSE) responses being relayed now",
        m.active_streams.clone(),
    );
    r.register(
        "upstream_latency_seconds",
        "Time per upstream attempt until its answer could be judged (headers, and the first event of a stream)",
        m.upstream_latency.clone(),
    );
    r.register(
        "overhead_seconds",
        "Time orproxy spent on a request before its response started, excluding upstream attempts, waits for a key and back-off",
        m.overhead.clone(),
    );
    r.register(
        "tokens",
        "Tokens OpenRouter reported in the answers' usage, by kind: prompt (cached ones \
         included), completion (reasoning included), cached, reasoning",
        m.tokens.clone(),
    );
    r.register(
        "cost",
        "Credits (US dollars) OpenRouter reported as the answers' cost",
        m.cost.clone(),
    );
    r.register_collector(Box::new(KeyCollector { live, sync }));
    r
}

/// The per-key series, read from the pool at each scrape.
struct KeyCollector {
    live: Arc<Live>,
    sync: Arc<dyn StoreSync>,
}

impl std::fmt::Debug for KeyCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyCollector")
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyStateLabels {
    key_id: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    key_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AccountLabels {
    account: String,
}

/// One key at a scrape: its ID, status, and seconds until it serves paid
/// and `:free` models again (0 when it does now, or is disabled).
struct KeyRow {
    id: String,
    status: KeyStatus,
    paid_in: f64,
    free_in: f64,
}

/// A gauge family read from each row: name, help, and the value of a row.
type Series<R, V> = (&'static str, &'static str, fn(&R) -> V);

fn seconds_until(until: Option<DateTime<Utc>>, now: DateTime<Utc>) -> f64 {
    until.map_or(0.0, |u| (u - now).num_milliseconds().max(0) as f64 / 1000.0)
}

/// The keys and accounts at `now`, read from the pool in one look, by the
/// availability model (as `/health` and `keys list` read it).
fn read(live: &Live, now: DateTime<Utc>) -> (Vec<KeyRow>, Vec<FreeCounts>) {
    let pool = live.pool();
    let keys = pool
        .keys()
        .map(|k| {
            let judged = pool.judged(k, now);
            KeyRow {
                id: k.id.clone(),
                status: judged.status(),
                paid_in: seconds_until(judged.paid.and_then(|b| b.until), now),
                free_in: seconds_until(judged.free.and_then(|b| b.until), now),
            }
        })
        .collect();
    (keys, pool.accounts_at(now))
}

impl KeyCollector {
    fn encode_keys(
        keys: &[KeyRow],
        encoder: &mut DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let gauge_type = ConstGauge::new(0i64).metric_type();
        let mut family = encoder.encode_descriptor(
            "keys",
            "Keys in each state: active, free_held (paid models only: :free ones held by the account's caps), cooling, disabled",
            None,
            gauge_type,
        )?;
        for status in KeyStatus::ALL {
            let count = keys.iter().filter(|k| k.status == status).count();
            let labels = StateLabels {
                state: status.name(),
            };
            ConstGauge::new(i64::try_from(count).unwrap_or(i64::MAX))
                .encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "key_state",
            "Each key's state, by ID: 1 for its current state, 0 for the others",
            None,
            gauge_type,
        )?;
        for key in keys {
            for status in KeyStatus::ALL {
                let labels = KeyStateLabels {
                    key_id: key.id.clone(),
                    state: status.name(),
                };
                let value = i64::from(key.status == status);
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        let seconds = ConstGauge::new(0f64).metric_type();
        let series: [Series<KeyRow, f64>; 2] = [
            (
                "key_cooldown_seconds",
                "Seconds until each key serves paid models again (0 when it does, or is disabled)",
                |k| k.paid_in,
            ),
            (
                "key_free_held_seconds",
                "Seconds until each key serves :free models again (0 when it does, or is disabled)",
                |k| k.free_in,
            ),
        ];
        for (name, help, value) in series {
            let mut family = encoder.encode_descriptor(name, help, None, seconds)?;
            for key in keys {
                let labels = KeyLabels {
                    key_id: key.id.clone(),
                };
                ConstGauge::new(value(key)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    fn encode_accounts(
        accounts: &[FreeCounts],
        encoder: &mut DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let gauge_type = ConstGauge::new(0i64).metric_type();
        let series: [Series<FreeCounts, Option<u32>>; 3] = [
            (
                "account_free_requests_today",
                ":free requests each account (key:<id> for a key whose account is unknown) sent today (UTC)",
                |a| Some(a.today),
            ),
            (
                "account_free_requests_this_minute",
                ":free requests each account sent in the last minute",
                |a| Some(a.this_minute),
            ),
            (
                "account_free_daily_limit",
                "Each account's daily :free limit, when known (OpenRouter's figure, or its tier's)",
                |a| a.daily_limit,
            ),
        ];
        for (name, help, value) in series {
            let mut family = encoder.encode_descriptor(name, help, None, gauge_type)?;
            for account in accounts {
                if let Some(v) = value(account) {
                    let labels = AccountLabels {
                        account: account.quota.clone(),
                    };
                    ConstGauge::new(i64::from(v)).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

impl Collector for KeyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let (keys, accounts) = read(&self.live, Utc::now());
        Self::encode_keys(&keys, &mut encoder)?;
        Self::encode_accounts(&accounts, &mut encoder)?;
        let (kind, reachable) = (self.sync.kind(), self.sync.reachable());
        let mut family = encoder.encode_descriptor(
            "store_reachable",
            "1 when the key store (file or Redis) worked the last time it was used, else 0",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        ConstGauge::new(i64::from(reachable))
            .encode(family.encode_family(&StoreLabels { kind })?)?;
        Ok(())
    }
}

/// The scrape registry, shared by every worker.
pub(crate) struct Scrape(pub(crate) Registry);

/// `GET /metrics`.
pub(crate) async fn handle(scrape: web::Data<Scrape>) -> HttpResponse {
    let mut body = String::new();
    match prometheus_client::encoding::prometheus_text::encode(&mut body, &scrape.0) {
        Ok(()) => HttpResponse::Ok()
            .content_type(prometheus_client::encoding::prometheus_text::CONTENT_TYPE)
            .body(body),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}
