//! How soon a cooldown decided by one orproxy instance reaches another that
//! shares its Redis store, for orproxy's benchmarks (`scripts/bench`).
//!
//! `bench_propagation --a ADDR --b ADDR --samples N` sends chat completions
//! through instance A, one at a time. The fake upstream answers each key's
//! Nth request with a 429 (`bench_upstream --limit-every N`), so A parks its
//! current key now and then. For each request, the clock starts just before
//! it is sent to A. When A's answer says it took a second attempt (the first
//! key was parked), B's `GET /health` is polled over one kept-alive
//! connection until B counts one more cooling key: the time from the start
//! is one sample, an upper bound of the propagation (it includes A's whole
//! request, two upstream attempts). Prints one JSON object: the number of
//! samples, and p50, p90 and the maximum in microseconds, plus A's own
//! request time (p50) for comparison.

use anyhow::{Context, bail};
use clap::Parser;
use std::io::Read;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(about = "Cooldown propagation between two orproxy instances")]
struct Args {
    /// Instance A (`HOST:PORT`), which sees the 429s.
    #[arg(long)]
    a: String,
    /// Instance B (`HOST:PORT`), which must learn of them.
    #[arg(long)]
    b: String,
    /// How many parked keys to time.
    #[arg(long, default_value_t = 30)]
    samples: usize,
    /// Give up on one sample after this many milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

fn cooling(agent: &ureq::Agent, b: &str) -> anyhow::Result<u64> {
    let mut res = agent.get(format!("http://{b}/health")).call()?;
    let mut text = String::new();
    res.body_mut().as_reader().read_to_string(&mut text)?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    v["keys"]["cooling"]
        .as_u64()
        .context("no keys.cooling in /health")
}

fn percentile(sorted: &[u128], p: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let body = r#"{"model":"openai/gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let mut samples = Vec::new();
    let mut requests = Vec::new();
    let mut sent = 0usize;
    while samples.len() < args.samples {
        sent += 1;
        if sent > args.samples * 1000 {
            bail!("no 429 came back after {sent} requests: is the upstream --limit-every set?");
        }
        let before = cooling(&agent, &args.b)?;
        let start = Instant::now();
        let mut res = agent
            .post(format!("http://{}/v1/chat/completions", args.a))
            .header("content-type", "application/json")
            .send(body)?;
        let mut sink = Vec::new();
        res.body_mut().as_reader().read_to_end(&mut sink)?;
        requests.push(start.elapsed().as_micros());
        if res.status() != 200 {
            bail!("instance A answered {}: out of keys?", res.status());
        }
        let attempts = res
            .headers()
            .get("x-orproxy-attempts")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(1);
        if attempts < 2 {
            continue;
        }
        let deadline = start + Duration::from_millis(args.timeout_ms);
        loop {
            if cooling(&agent, &args.b)? > before {
                samples.push(start.elapsed().as_micros());
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "instance B did not see A's cooldown within {} ms",
                    args.timeout_ms
                );
            }
        }
    }
    samples.sort_unstable();
    requests.sort_unstable();
    println!(
        "{}",
        serde_json::json!({
            "samples": samples.len(),
            "p50_us": percentile(&samples, 0.5),
            "p90_us": percentile(&samples, 0.9),
            "max_us": samples.last().copied().unwrap_or(0),
            "a_request_p50_us": percentile(&requests, 0.5),
        })
    );
    Ok(())
}
