//! Micro-benchmarks of the decisions on orproxy's request path (see
//! BENCHMARKS.md): the pool's key choice, the classifier, and the state
//! writer's merge of the pool into the store.
//!
//! `cargo bench --bench pool` (add `-- choose` to run one group).

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use orproxy::internals::ApiKey;
use orproxy::internals::{self as classify, Answer, Dialect, Watch};
use orproxy::internals::{CapKind, Choice, Pool, Settings};
use orproxy::internals::{KeyRecord, StoreFile};
use std::hint::black_box;

const SIZES: [usize; 3] = [3, 1_000, 10_000];

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0)
        .single()
        .unwrap_or_default()
}

/// `n` active keys, as `orproxy keys add --no-verify` stores them.
fn records(n: usize) -> Vec<KeyRecord> {
    (1..=n)
        .filter_map(|i| {
            let key = ApiKey::parse(&format!("sk-or-v1-bench-{i:064x}")).ok()?;
            Some(KeyRecord {
                id: key.short_id(),
                key,
                label: None,
                added_at: start(),
                generation: 0,
                state: Default::default(),
                info: None,
                extra: Default::default(),
            })
        })
        .collect()
}

/// A pool of `n` keys. For free models, each key's account (unknown, so the
/// key itself) gets caps high enough that the benchmark never reaches them.
fn pool(n: usize, free: bool) -> Pool {
    let recs = records(n);
    let mut pool = Pool::from_records(&recs, Settings::default());
    if free {
        for r in &recs {
            pool.note_cap(&r.id, CapKind::PerMinute, Some(1_000), false, start());
            pool.note_cap(&r.id, CapKind::PerDay, Some(u32::MAX), false, start());
        }
    }
    pool
}

fn chosen_id(choice: Choice) -> String {
    match choice {
        Choice::Use { id, .. } => id,
        Choice::Unavailable { .. } => String::new(),
    }
}

/// `Pool::choose_for` on the sticky path (the current key is still usable:
/// the common case) and on the full least-recently-used scan (the current
/// key is excluded, as on a retry or after it started cooling). Simulated
/// time advances 100 ms per choice so free-model minute windows roll.
fn choose(c: &mut Criterion) {
    let mut group = c.benchmark_group("choose");
    for free in [false, true] {
        let kind = if free { "free" } else { "paid" };
        for n in SIZES {
            group.bench_function(BenchmarkId::new(format!("sticky/{kind}"), n), |b| {
                let mut pool = pool(n, free);
                let mut now = start();
                let _ = pool.choose_for(now, &[], free);
                b.iter(|| {
                    now += TimeDelta::milliseconds(100);
                    black_box(pool.choose_for(black_box(now), &[], free))
                });
            });
            group.bench_function(BenchmarkId::new(format!("scan/{kind}"), n), |b| {
                let mut pool = pool(n, free);
                let mut now = start();
                let mut exclude = vec![chosen_id(pool.choose_for(now, &[], free))];
                b.iter(|| {
                    now += TimeDelta::milliseconds(100);
                    let choice = pool.choose_for(black_box(now), &exclude, free);
                    // The next choice excludes this one: every call scans.
                    exclude[0] = chosen_id(black_box(choice));
                });
            });
        }
    }
    group.finish();
}

/// The state writer's merge of the pool into the store file (run once a
/// second while anything changed, under the pool's lock), and the store's
/// render and parse around it.
fn state_writer(c: &mut Criterion) {
    let mut group = c.benchmark_group("state_writer");
    group.sample_size(20);
    for n in SIZES {
        let recs = records(n);
        let file = StoreFile {
            keys: recs.clone(),
            ..StoreFile::default()
        };
        group.bench_function(BenchmarkId::new("reconcile", n), |b| {
            let mut pool = Pool::from_records(&recs, Settings::default());
            let mut now = start();
            b.iter_batched_ref(
                || file.clone(),
                |file| {
                    now += TimeDelta::milliseconds(1);
                    let _ = pool.choose_for(now, &[], false);
                    black_box(pool.reconcile(file, now))
                },
                criterion::BatchSize::LargeInput,
            );
        });
        let Ok(bytes) = orproxy::internals::render(&file) else {
            continue;
        };
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(BenchmarkId::new("render", n), |b| {
            b.iter(|| black_box(orproxy::internals::render(black_box(&file)).map(|v| v.len())));
        });
        let store = orproxy::internals::FileStore::new("/nonexistent/keys.json");
        group.bench_function(BenchmarkId::new("parse", n), |b| {
            b.iter(|| black_box(store.parse(black_box(&bytes)).map(|f| f.keys.len())));
        });
        group.throughput(Throughput::Elements(1));
    }
    group.finish();
}

/// OpenRouter's documented bodies (docs/openrouter.md), and the fake
/// upstream's 600-byte success.
const SUCCESS: &str = r#"{"id":"gen-bench-1764230400-AbCdEfGhIjKlMnOpQrSt","provider":"Bench","model":"openai/gpt-4o-mini","object":"chat.completion","created":1764230400,"choices":[{"logprobs":null,"finish_reason":"stop","native_finish_reason":"stop","index":0,"message":{"role":"assistant","content":"Hello! This is a fixed answer from orproxy's benchmark upstream. Hello! This is a fixed","refusal":null,"reasoning":null}}],"usage":{"prompt_tokens":24,"completion_tokens":64,"total_tokens":88,"cost":0.0000420,"is_byok":false,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}"#;
const PER_DAY: &str = r#"{"error":{"message":"Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day","code":429,"metadata":{"headers":{"X-RateLimit-Limit":"50","X-RateLimit-Remaining":"0","X-RateLimit-Reset":"1788220800000"},"provider_name":null}}}"#;
const PER_MIN: &str = r#"{"error":{"message":"Rate limit exceeded: free-models-per-min. ","code":429,"metadata":{"headers":{"X-RateLimit-Limit":"20","X-RateLimit-Remaining":"0","X-RateLimit-Reset":"1783519380000"},"provider_name":null}}}"#;
const VENICE: &str = r#"{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"meta-llama/llama-3.3-70b-instruct:free is temporarily rate-limited upstream. Please retry shortly, or add your own key to accumulate your rate limits: https://openrouter.ai/settings/integrations","provider_name":"Venice","is_byok":false,"retry_after_seconds":29,"headers":{"Retry-After":"29"}}}}"#;
const INVALID: &str = r#"{"error":{"message":"User not found.","code":401}}"#;
const ERROR_IN_200: &str = r#"{"id":"gen-1","error":{"message":"Provider returned error","code":"502","metadata":{"provider_name":"Together"}},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}"#;
const STREAM: &[u8] = concat!(
    ": OPENROUTER PROCESSING\n\n",
    "data: {\"id\":\"gen-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"gen-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"gen-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"id\":\"gen-1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7,\"cost\":0}}\n\n",
    "data: [DONE]\n\n"
)
.as_bytes();

fn classifier(c: &mut Criterion) {
    let mut group = c.benchmark_group("classify");
    let now = start();
    let json = [("content-type", "application/json")];
    let cases: [(&str, u16, &str); 6] = [
        ("success-600B", 200, SUCCESS),
        ("free-models-per-day", 429, PER_DAY),
        ("free-models-per-min", 429, PER_MIN),
        ("provider-429", 429, VENICE),
        ("invalid-key-401", 401, INVALID),
        ("error-in-200", 200, ERROR_IN_200),
    ];
    for (name, status, body) in cases {
        group.bench_function(name, |b| {
            b.iter(|| {
                classify::classify(
                    black_box(&Answer {
                        status,
                        headers: &json,
                        body: body.as_bytes(),
                        model: Some("meta-llama/llama-3.3-70b-instruct:free"),
                    }),
                    now,
                )
            });
        });
    }
    // A chat stream read by events as the relay reads it: comments, content
    // events, the usage event and [DONE].
    group.bench_function("sse_events_chat", |b| {
        b.iter(|| {
            let mut watch = Watch::new(Dialect::Chat, false);
            watch.push(bytes::Bytes::from_static(black_box(STREAM)));
            let mut n = 0;
            while watch.next(true).is_some() {
                n += 1;
            }
            (n, watch.is_whole())
        });
    });
    group.finish();
}

criterion_group!(benches, choose, classifier, state_writer);
criterion_main!(benches);
