//! Time from start to listening, for orproxy's benchmarks (`scripts/bench`).
//!
//! `bench_startup --runs 10 -- orproxy --store S serve --port {port} ...`
//! runs the command `--runs` times on a free port (`{port}` in the arguments
//! is replaced by it). Each run measures, from just before the spawn:
//! - `listen`: the first TCP connection accepted by the kernel (the port is
//!   listening), polled every 100 us;
//! - `health`: the first answer to `GET /health` (the server serves).
//!
//! Then the process is killed. Prints one JSON object on stdout with the
//! minimum, median and maximum of each, in milliseconds.

use anyhow::{Context, bail};
use clap::Parser;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(about = "Time from start to listening")]
struct Args {
    /// How many starts to time.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Give up on one start after this many seconds.
    #[arg(long, default_value_t = 10)]
    timeout_s: u64,
    /// The command; `{port}` is replaced by a free port.
    #[arg(trailing_var_arg = true, required = true)]
    command: Vec<String>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Whether `GET /health` gets any HTTP answer.
fn health_answers(addr: SocketAddr) -> bool {
    let Ok(mut sock) = TcpStream::connect_timeout(&addr, Duration::from_millis(50)) else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(500)));
    if sock
        .write_all(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(sock.read(&mut buf), Ok(n) if n >= 12 && buf.starts_with(b"HTTP/1.1 "))
}

/// One start: (ms to listening, ms to the first /health answer).
fn one_run(args: &Args) -> anyhow::Result<(f64, f64)> {
    let port = free_port()?;
    let argv: Vec<String> = args
        .command
        .iter()
        .map(|a| a.replace("{port}", &port.to_string()))
        .collect();
    let (program, rest) = argv.split_first().context("no command given")?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Duration::from_secs(args.timeout_s);
    let start = Instant::now();
    let mut child = Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    let result = (|| {
        let listen = loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(50)).is_ok() {
                break start.elapsed();
            }
            if start.elapsed() > deadline {
                bail!("not listening after {} s", deadline.as_secs());
            }
            if let Some(status) = child.try_wait()? {
                bail!("the command exited ({status}) before listening");
            }
            std::thread::sleep(Duration::from_micros(100));
        };
        let health = loop {
            if health_answers(addr) {
                break start.elapsed();
            }
            if start.elapsed() > deadline {
                bail!("no answer to GET /health after {} s", deadline.as_secs());
            }
            std::thread::sleep(Duration::from_micros(100));
        };
        Ok((listen.as_secs_f64() * 1e3, health.as_secs_f64() * 1e3))
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn stats(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(f64::total_cmp);
    let round = |x: f64| (x * 100.0).round() / 100.0;
    serde_json::json!({
        "min_ms": round(v.first().copied().unwrap_or(0.0)),
        "median_ms": round(v.get(v.len() / 2).copied().unwrap_or(0.0)),
        "max_ms": round(v.last().copied().unwrap_or(0.0)),
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (mut listen, mut health) = (Vec::new(), Vec::new());
    for _ in 0..args.runs.max(1) {
        let (l, h) = one_run(&args)?;
        listen.push(l);
        health.push(h);
    }
    println!(
        "{}",
        serde_json::json!({"runs": listen.len(), "listen": stats(listen), "health": stats(health)})
    );
    Ok(())
}
