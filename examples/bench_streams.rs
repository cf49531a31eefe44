//! Streaming load client for orproxy's benchmarks (`scripts/bench`,
//! BENCHMARKS.md): opens `--streams` concurrent SSE chat completions against
//! `--url` (orproxy, or the fake upstream directly), each asking the fake
//! upstream (`examples/bench_upstream.rs`) for `--chunks` events one every
//! `--interval-ms`, and measures the delay of every event: the time it was
//! read here minus the `bench_sent_ns` the upstream stamped on it. Both
//! processes share the machine's clock, so the difference between a direct
//! run and a run through orproxy is what orproxy adds per chunk.
//!
//! Prints a human summary on stderr and one JSON object on stdout:
//! `{"streams", "completed", "failed", "chunks", "p50_us", "p90_us",
//! "p99_us", "max_us", "wall_ms", "first_error"}`.
//!
//! A plain HTTP/1.1 client over tokio, so that it costs little and hides
//! nothing: one connection per stream, chunked transfer decoding, SSE events
//! split on blank lines.

use anyhow::{Context, bail};
use clap::Parser;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Parser)]
#[command(about = "Concurrent SSE streams with per-chunk delay")]
struct Args {
    /// The chat completions URL, e.g. http://127.0.0.1:3000/v1/chat/completions
    #[arg(long)]
    url: String,
    /// Concurrent streams.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Events per stream (sent to the fake upstream as `?chunks=`).
    #[arg(long, default_value_t = 100)]
    chunks: u32,
    /// Milliseconds between events (sent as `?interval_ms=`).
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// Spread the stream starts over this many milliseconds.
    #[arg(long, default_value_t = 1000)]
    ramp_ms: u64,
    /// Give up on a stream after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout_s: u64,
}

/// `http://host:port/path` split for a raw request.
struct Target {
    addr: String,
    host: String,
    path: String,
}

fn parse_url(url: &str) -> anyhow::Result<Target> {
    let rest = url
        .strip_prefix("http://")
        .context("only http:// URLs are supported")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let path = if path.is_empty() { "/" } else { path };
    Ok(Target {
        addr,
        host: authority.to_owned(),
        path: path.to_owned(),
    })
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Decoder for `Transfer-Encoding: chunked` that accepts input in any split.
#[derive(Default)]
struct Chunked {
    raw: Vec<u8>,
    /// Bytes of the current chunk still to come; None while reading a size line.
    remaining: Option<usize>,
    /// The CRLF after a chunk's data is still to be skipped.
    crlf: bool,
    done: bool,
}

impl Chunked {
    /// Feed raw bytes; append decoded bytes to `out`.
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> anyhow::Result<()> {
        self.raw.extend_from_slice(input);
        let mut pos = 0;
        loop {
            if self.done {
                break;
            }
            if self.crlf {
                if self.raw.len() < pos + 2 {
                    break;
                }
                pos += 2;
                self.crlf = false;
            }
            match self.remaining {
                Some(n) => {
                    let take = n.min(self.raw.len() - pos);
                    out.extend_from_slice(&self.raw[pos..pos + take]);
                    pos += take;
                    if take == n {
                        self.remaining = None;
                        self.crlf = true;
                    } else {
                        self.remaining = Some(n - take);
                        break;
                    }
                }
                None => {
                    let Some(eol) = self.raw[pos..].windows(2).position(|w| w == b"\r\n") else {
                        break;
                    };
                    let line = std::str::from_utf8(&self.raw[pos..pos + eol])?;
                    let hex = line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(hex, 16)
                        .with_context(|| format!("bad chunk size line {line:?}"))?;
                    pos += eol + 2;
                    if size == 0 {
                        self.done = true;
                    } else {
                        self.remaining = Some(size);
                    }
                }
            }
        }
        self.raw.drain(..pos);
        Ok(())
    }
}

/// What one stream saw.
#[derive(Default)]
struct StreamResult {
    delays_us: Vec<u32>,
    completed: bool,
    error: Option<String>,
}

/// Read SSE events out of `events` (decoded body so far), recording delays
/// against `now_ns`. Returns whether `[DONE]` was seen.
fn take_events(events: &mut Vec<u8>, now_ns: u128, result: &mut StreamResult) -> bool {
    let mut done = false;
    let mut consumed = 0;
    while let Some(end) = events[consumed..].windows(2).position(|w| w == b"\n\n") {
        let event = &events[consumed..consumed + end];
        consumed += end + 2;
        if event.windows(12).any(|w| w == b"data: [DONE]") {
            done = true;
            continue;
        }
        if event.windows(8).any(|w| w == b"\"error\":") {
            result.error = Some(String::from_utf8_lossy(event).chars().take(300).collect());
            continue;
        }
        let needle = b"\"bench_sent_ns\":";
        if let Some(at) = event.windows(needle.len()).position(|w| w == needle) {
            let digits: Vec<u8> = event[at + needle.len()..]
                .iter()
                .copied()
                .take_while(u8::is_ascii_digit)
                .collect();
            if let Some(sent) = std::str::from_utf8(&digits)
                .ok()
                .and_then(|s| s.parse::<u128>().ok())
            {
                let us = now_ns.saturating_sub(sent) / 1000;
                result.delays_us.push(u32::try_from(us).unwrap_or(u32::MAX));
            }
        }
    }
    events.drain(..consumed);
    done
}

async fn one_stream(target: &Target, request: &[u8]) -> anyhow::Result<StreamResult> {
    let mut sock = TcpStream::connect(&target.addr)
        .await
        .with_context(|| format!("cannot connect to {}", target.addr))?;
    sock.set_nodelay(true)?;
    sock.write_all(request).await?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut head = Vec::new();
    let (status, chunked, body_start) = loop {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            bail!("the connection closed before the response headers");
        }
        head.extend_from_slice(&buf[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut res = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(len) = res.parse(&head)? {
            let chunked = res.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("transfer-encoding")
                    && String::from_utf8_lossy(h.value)
                        .to_ascii_lowercase()
                        .contains("chunked")
            });
            break (res.code.unwrap_or(0), chunked, len);
        }
    };
    let mut result = StreamResult::default();
    let mut decoder = Chunked::default();
    let mut events = Vec::new();
    let mut feed = |bytes: &[u8], result: &mut StreamResult| -> anyhow::Result<bool> {
        let now = unix_ns();
        if chunked {
            decoder.feed(bytes, &mut events)?;
        } else {
            events.extend_from_slice(bytes);
        }
        Ok(take_events(&mut events, now, result) || decoder.done)
    };
    let rest = head[body_start..].to_vec();
    if status != 200 {
        let mut body = rest;
        let _ = tokio::time::timeout(Duration::from_secs(1), sock.read_to_end(&mut body)).await;
        bail!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(300)
                .collect::<String>()
        );
    }
    if feed(&rest, &mut result)? {
        result.completed = result.error.is_none();
        return Ok(result);
    }
    loop {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        if feed(&buf[..n], &mut result)? {
            result.completed = result.error.is_none();
            break;
        }
    }
    Ok(result)
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let target = std::sync::Arc::new(parse_url(&args.url)?);
    let body = r#"{"model":"openai/gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Count slowly."}]}"#;
    let sep = if target.path.contains('?') { '&' } else { '?' };
    let request = std::sync::Arc::new(
        format!(
            "POST {}{sep}chunks={}&interval_ms={} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer sk-or-v1-bench-client\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
            target.path,
            args.chunks,
            args.interval_ms,
            target.host,
            body.len()
        )
        .into_bytes(),
    );
    let started = tokio::time::Instant::now();
    let timeout = Duration::from_secs(args.timeout_s);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.streams {
        let (target, request) = (target.clone(), request.clone());
        let delay = Duration::from_millis(args.ramp_ms) * u32::try_from(i).unwrap_or(u32::MAX)
            / u32::try_from(args.streams.max(1)).unwrap_or(u32::MAX);
        tasks.spawn(async move {
            tokio::time::sleep_until(started + delay).await;
            match tokio::time::timeout(timeout, one_stream(&target, &request)).await {
                Ok(r) => r,
                Err(_) => bail!("timed out after {} s", timeout.as_secs()),
            }
        });
    }
    let (mut completed, mut failed) = (0usize, 0usize);
    let mut first_error: Option<String> = None;
    let mut delays = Vec::with_capacity(args.streams * args.chunks as usize);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(result)) => {
                delays.extend_from_slice(&result.delays_us);
                if result.completed {
                    completed += 1;
                } else {
                    failed += 1;
                    first_error.get_or_insert_with(|| {
                        result
                            .error
                            .unwrap_or_else(|| "the stream ended without [DONE]".to_owned())
                    });
                }
            }
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let wall = started.elapsed();
    delays.sort_unstable();
    let summary = serde_json::json!({
        "streams": args.streams,
        "completed": completed,
        "failed": failed,
        "chunks": delays.len(),
        "p50_us": percentile(&delays, 50.0),
        "p90_us": percentile(&delays, 90.0),
        "p99_us": percentile(&delays, 99.0),
        "max_us": delays.last().copied().unwrap_or(0),
        "wall_ms": wall.as_millis(),
        "first_error": first_error,
    });
    eprintln!(
        "{} streams: {completed} complete, {failed} failed, {} chunks; per-chunk delay p50 {} us, p99 {} us, max {} us; {} ms",
        args.streams,
        delays.len(),
        percentile(&delays, 50.0),
        percentile(&delays, 99.0),
        delays.last().copied().unwrap_or(0),
        wall.as_millis()
    );
    println!("{summary}");
    Ok(())
}
