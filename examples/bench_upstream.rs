//! A fake OpenRouter for benchmarks (`scripts/bench`, BENCHMARKS.md). It is
//! built to be cheap, so that it is never what limits a measurement:
//!
//! - `POST /api/v1/chat/completions` answers a fixed OpenAI-style chat
//!   completion of about 600 bytes; with `"stream": true` in the body it
//!   answers SSE: `--chunks` events, one every `--interval-ms` (the query
//!   parameters `chunks` and `interval_ms` override both per request), then
//!   `data: [DONE]`. Every event carries `bench_sent_ns`, the wall-clock time
//!   (Unix nanoseconds) at which it was handed to the socket, so a client on
//!   the same machine can measure each chunk's delay.
//! - `GET /api/v1/key` answers a `GET /key` object.
//! - `GET /stats` counts what was answered.
//! - Rate limits, for the cooldown-cycling test: `--limit-fraction F` makes
//!   that fraction of keys (chosen by a hash of the key) answer every request
//!   with a 429 whose `X-RateLimit-Reset` (Unix ms) is `--reset-ms` ahead;
//!   `--limit-every N` makes every key answer its Nth, 2Nth... request so.
//!
//! It is an example, not part of orproxy: `cargo build --release --example
//! bench_upstream`. It prints `bench_upstream listening on http://ADDR` once
//! it listens.

use actix_web::http::header::{CONTENT_TYPE, HeaderValue};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use bytes::Bytes;
use clap::Parser;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Parser)]
#[command(about = "A fake OpenRouter for orproxy's benchmarks")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0 picks a free one; the startup line says which).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// SSE events per streamed answer (query `chunks=` overrides).
    #[arg(long, default_value_t = 100)]
    chunks: u32,
    /// Milliseconds between SSE events (query `interval_ms=` overrides).
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// Fraction of keys (0..=1, by a hash of the key) that answer 429 to every request.
    #[arg(long, default_value_t = 0.0)]
    limit_fraction: f64,
    /// Every key answers 429 to each Nth request it makes (0: never).
    #[arg(long, default_value_t = 0)]
    limit_every: u64,
    /// How far ahead the 429's `X-RateLimit-Reset` lies, in milliseconds.
    #[arg(long, default_value_t = 250)]
    reset_ms: u64,
}

/// What every worker shares.
struct Bench {
    completion: Bytes,
    chunks: u32,
    interval: Duration,
    /// Keys whose hash is below this (out of 10,000) are always limited.
    limited_below: u64,
    limit_every: u64,
    reset_ms: u64,
    per_key: Mutex<HashMap<String, u64>>,
    stats: Stats,
}

#[derive(Default)]
struct Stats {
    completions: AtomicU64,
    streams: AtomicU64,
    chunks: AtomicU64,
    rate_limited: AtomicU64,
    key_checks: AtomicU64,
}

impl Stats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A chat completion in OpenRouter's shape, padded to about 600 bytes.
fn completion_body() -> Bytes {
    let head = r#"{"id":"gen-bench-1764230400-AbCdEfGhIjKlMnOpQrSt","provider":"Bench","model":"openai/gpt-4o-mini","object":"chat.completion","created":1764230400,"choices":[{"logprobs":null,"finish_reason":"stop","native_finish_reason":"stop","index":0,"message":{"role":"assistant","content":""#;
    let tail = r#"","refusal":null,"reasoning":null}}],"usage":{"prompt_tokens":24,"completion_tokens":64,"total_tokens":88,"cost":0.0000420,"is_byok":false,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}"#;
    let sentence = "Hello! This is a fixed answer from orproxy's benchmark upstream. ";
    let mut content = String::new();
    while head.len() + content.len() + tail.len() < 600 {
        content.push_str(sentence);
    }
    content.truncate(600 - head.len() - tail.len());
    Bytes::from(format!("{head}{content}{tail}"))
}

/// FNV-1a, to spread keys over the limited fraction deterministically.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Whether the request body asks for a stream (`"stream": true`), without
/// parsing the whole document.
fn wants_stream(body: &[u8]) -> bool {
    let needle = b"\"stream\"";
    let Some(at) = body.windows(needle.len()).position(|w| w == needle) else {
        return false;
    };
    let rest = body.get(at + needle.len()..).unwrap_or_default();
    let rest = rest.trim_ascii_start();
    rest.strip_prefix(b":")
        .is_some_and(|r| r.trim_ascii_start().starts_with(b"true"))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn query_param<T: std::str::FromStr>(req: &HttpRequest, name: &str) -> Option<T> {
    req.query_string().split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        if k == name { v.parse().ok() } else { None }
    })
}

/// Whether `key` answers this request with a 429.
fn limited(bench: &Bench, key: &str) -> bool {
    if bench.limited_below > 0 && fnv1a(key.as_bytes()) % 10_000 < bench.limited_below {
        return true;
    }
    if bench.limit_every == 0 {
        return false;
    }
    let mut per_key = bench
        .per_key
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let n = per_key.entry(key.to_owned()).or_insert(0);
    *n += 1;
    n.is_multiple_of(bench.limit_every)
}

fn rate_limited(bench: &Bench) -> HttpResponse {
    Stats::bump(&bench.stats.rate_limited);
    let reset = unix_ms() + bench.reset_ms;
    let body = format!(
        r#"{{"error":{{"message":"Rate limit exceeded","code":429,"metadata":{{"headers":{{"X-RateLimit-Limit":"100","X-RateLimit-Remaining":"0","X-RateLimit-Reset":"{reset}"}},"provider_name":null}}}}}}"#
    );
    HttpResponse::TooManyRequests()
        .insert_header(("x-ratelimit-limit", "100"))
        .insert_header(("x-ratelimit-remaining", "0"))
        .insert_header(("x-ratelimit-reset", reset.to_string()))
        .content_type("application/json")
        .body(body)
}

fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized()
        .content_type("application/json")
        .body(r#"{"error":{"message":"No auth credentials found","code":401}}"#)
}

async fn chat(req: HttpRequest, body: Bytes, bench: web::Data<Bench>) -> HttpResponse {
    let Some(key) = bearer(&req) else {
        return unauthorized();
    };
    if limited(&bench, key) {
        return rate_limited(&bench);
    }
    if !wants_stream(&body) {
        Stats::bump(&bench.stats.completions);
        let mut res = HttpResponse::Ok().body(bench.completion.clone());
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return res;
    }
    Stats::bump(&bench.stats.streams);
    let chunks = query_param(&req, "chunks").unwrap_or(bench.chunks).max(1);
    let interval = query_param(&req, "interval_ms").map_or(bench.interval, Duration::from_millis);
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .streaming(sse(bench.into_inner(), chunks, interval))
}

/// `chunks` events, the first at once and then one per `interval` (on a
/// fixed schedule, so a late one does not delay the rest), then `[DONE]`.
fn sse(
    bench: std::sync::Arc<Bench>,
    chunks: u32,
    interval: Duration,
) -> impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> {
    let start = tokio::time::Instant::now();
    futures_util::stream::unfold(0u32, move |seq| {
        let bench = bench.clone();
        async move {
            if seq >= chunks {
                return None;
            }
            if seq > 0 {
                tokio::time::sleep_until(start + interval * seq).await;
            }
            Stats::bump(&bench.stats.chunks);
            let last = seq + 1 == chunks;
            let finish = if last { r#""stop""# } else { "null" };
            let done = if last { "data: [DONE]\n\n" } else { "" };
            let event = format!(
                "data: {{\"id\":\"gen-bench-stream\",\"object\":\"chat.completion.chunk\",\"created\":1764230400,\"model\":\"openai/gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"token{seq} \"}},\"finish_reason\":{finish}}}],\"bench_seq\":{seq},\"bench_sent_ns\":{}}}\n\n{done}",
                unix_ns()
            );
            Some((Ok(Bytes::from(event)), seq + 1))
        }
    })
}

async fn key_info(req: HttpRequest, bench: web::Data<Bench>) -> HttpResponse {
    Stats::bump(&bench.stats.key_checks);
    if bearer(&req).is_none() {
        return unauthorized();
    }
    HttpResponse::Ok().content_type("application/json").body(
        r#"{"data":{"label":"bench","limit":null,"limit_remaining":null,"limit_reset":null,"usage":0,"usage_daily":0,"usage_weekly":0,"usage_monthly":0,"is_free_tier":false,"creator_user_id":null,"rate_limit":{"requests":-1,"interval":"10s"}}}"#,
    )
}

async fn stats(bench: web::Data<Bench>) -> HttpResponse {
    let s = &bench.stats;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    HttpResponse::Ok().json(serde_json::json!({
        "completions": get(&s.completions),
        "streams": get(&s.streams),
        "chunks": get(&s.chunks),
        "rate_limited": get(&s.rate_limited),
        "key_checks": get(&s.key_checks),
    }))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fraction = args.limit_fraction.clamp(0.0, 1.0);
    let bench = web::Data::new(Bench {
        completion: completion_body(),
        chunks: args.chunks,
        interval: Duration::from_millis(args.interval_ms),
        limited_below: (fraction * 10_000.0).round() as u64,
        limit_every: args.limit_every,
        reset_ms: args.reset_ms,
        per_key: Mutex::new(HashMap::new()),
        stats: Stats::default(),
    });
    let size = bench.completion.len();
    let started = Instant::now();
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                .app_data(bench.clone())
                .route("/api/v1/chat/completions", web::post().to(chat))
                .route("/api/v1/key", web::get().to(key_info))
                .route("/stats", web::get().to(stats))
        })
        .workers(args.workers.max(1))
        .backlog(4096)
        .keep_alive(Duration::from_secs(75))
        .shutdown_timeout(1)
        .bind((args.host.as_str(), args.port))?;
        for addr in server.addrs() {
            println!(
                "bench_upstream listening on http://{addr} | completion {size} bytes | \
                 started in {} us",
                started.elapsed().as_micros()
            );
        }
        server.run().await
    })?;
    Ok(())
}
