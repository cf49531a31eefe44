//! Clients nobody on this project wrote, driving `orproxy serve` in front of the
//! fake OpenRouter: the official OpenAI Python and Node SDKs (`tests/clients/`),
//! the README's curl example as written, and aider.
//!
//! Each test scripts the fake, starts orproxy, runs the client as a subprocess and
//! checks what it printed and what reached the fake. The SDK scripts check what the
//! SDK returned themselves and exit non-zero with a message otherwise.
//!
//! The Responses API (`clients::responses`, the OpenAI Python SDK) and Anthropic Messages
//! (`clients::messages`, the Anthropic Python SDK) have modules of their own.
//!
//! The clients are installed by `scripts/install-test-clients`; `scripts/test` runs it
//! and points these tests at them with `ORPROXY_TEST_PYTHON` (a Python with both SDKs),
//! `ORPROXY_TEST_NODE` (Node.js; the SDK is in `tests/clients/node/node_modules`) and
//! `ORPROXY_TEST_AIDER` (an aider executable). Without them, plain `cargo test` skips
//! these tests, except under CI, where they fail.

use crate::common::fake_openrouter::{CHAT_OK_CONTENT, Dialect, Recorded, Reply, SseEnd};
use crate::common::{Server, key, reset_ms_in, setup};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

mod cli;
mod messages;
mod responses;

const T: Duration = Duration::from_secs(10);
/// A client that has not finished by then is stuck: it is killed and the test fails.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);
const MODEL: &str = "meta-llama/llama-3.3-70b-instruct:free";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether this runs under CI, where skipping a client test is a failure.
fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The path in `var`, or `None` when the tests that need it are skipped (said once per
/// variable, on the real stderr so that plain `cargo test` shows it). Under CI a missing
/// variable fails the test.
fn tool(var: &str, what: &str, once: &'static Once) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let why = format!(
        "the {what} tests need {var}; run the suite with scripts/test, which installs the \
         clients and sets it"
    );
    assert!(!under_ci(), "{why}. CI is set, so they may not be skipped.");
    once.call_once(|| {
        // Not eprintln!: the test harness would swallow it.
        let _ = writeln!(std::io::stderr().lock(), "skipped: {why}.");
    });
    None
}

/// Remove what would send a client elsewhere than the address it is given.
fn clean_client_env(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().to_string();
        let upper = name.to_ascii_uppercase();
        if upper.starts_with("OPENAI_")
            || upper.starts_with("ANTHROPIC_")
            || upper.starts_with("CLAUDE_")
            || upper.starts_with("CODEX_")
            || upper.starts_with("AIDER_")
            || ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NODE_OPTIONS"].contains(&upper.as_str())
        {
            cmd.env_remove(name);
        }
    }
    cmd.env("NO_PROXY", "127.0.0.1,localhost");
}

/// A finished client run.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    #[track_caller]
    fn success(self) -> Self {
        assert_eq!(self.code, Some(0), "client failed:\n{self}");
        self
    }

    /// The `name=value` lines of stdout.
    fn values(&self) -> HashMap<String, String> {
        self.stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect()
    }

    #[track_caller]
    fn value(&self, name: &str) -> String {
        self.values()
            .remove(name)
            .unwrap_or_else(|| panic!("the client printed no {name}=...:\n{self}"))
    }
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit: {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Run `cmd` to the end (stdin closed), killing it after [`CLIENT_TIMEOUT`].
fn run(mut cmd: Command) -> Ran {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let ran = Ran {
        code: status.and_then(|s| s.code()),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    assert!(
        status.is_some(),
        "{cmd:?} did not finish within {CLIENT_TIMEOUT:?}:\n{ran}"
    );
    ran
}

// ---------------------------------------------------------------------------------------
// The official OpenAI SDKs
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Sdk {
    Python,
    Node,
}

static PYTHON_SKIPPED: Once = Once::new();
static NODE_SKIPPED: Once = Once::new();

impl Sdk {
    /// The interpreter, or `None` when skipped.
    fn interpreter(self) -> Option<PathBuf> {
        match self {
            Sdk::Python => tool("ORPROXY_TEST_PYTHON", "OpenAI Python SDK", &PYTHON_SKIPPED),
            Sdk::Node => {
                let node = tool("ORPROXY_TEST_NODE", "OpenAI Node SDK", &NODE_SKIPPED)?;
                let sdk = repo().join("tests/clients/node/node_modules/openai");
                assert!(
                    sdk.is_dir(),
                    "{} is missing: run scripts/install-test-clients (or scripts/test)",
                    sdk.display()
                );
                Some(node)
            }
        }
    }

    /// `interpreter check-script SCENARIO BASE_URL`, run to the end.
    fn run(self, interpreter: &Path, scenario: &str, server: &Server) -> Ran {
        let script = match self {
            Sdk::Python => repo().join("tests/clients/python/check.py"),
            Sdk::Node => repo().join("tests/clients/node/check.mjs"),
        };
        let mut cmd = Command::new(interpreter);
        cmd.arg(script)
            .arg(scenario)
            .arg(server.url("/v1"))
            .current_dir(repo());
        clean_client_env(&mut cmd);
        run(cmd)
    }

    /// What the SDK sends as `X-Stainless-Lang` and at the start of `User-Agent`.
    fn identity(self) -> (&'static str, &'static str) {
        match self {
            Sdk::Python => ("python", "OpenAI/Python "),
            Sdk::Node => ("js", "OpenAI/JS "),
        }
    }

    #[track_caller]
    fn assert_sent(self, request: &Recorded) {
        let (lang, agent) = self.identity();
        assert_eq!(request.header("x-stainless-lang"), Some(lang));
        let ua = request.header("user-agent").unwrap_or_default();
        assert!(ua.starts_with(agent), "User-Agent {ua:?}");
    }
}

/// `check.py SCENARIO BASE_URL [AUTH]` under the Python of [`Sdk::Python`], run to the
/// end; `token`, when given, is the credential the Anthropic scenarios send
/// (`ORPROXY_TEST_CLIENT_TOKEN`).
fn check_py(
    python: &Path,
    scenario: &str,
    base_url: &str,
    auth: Option<&str>,
    token: Option<&str>,
) -> Ran {
    let mut cmd = Command::new(python);
    cmd.arg(repo().join("tests/clients/python/check.py"))
        .arg(scenario)
        .arg(base_url)
        .args(auth)
        .current_dir(repo());
    clean_client_env(&mut cmd);
    cmd.env_remove("ORPROXY_TEST_CLIENT_TOKEN");
    if let Some(token) = token {
        cmd.env("ORPROXY_TEST_CLIENT_TOKEN", token);
    }
    run(cmd)
}

fn chat(sdk: Sdk) {
    let Some(interpreter) = sdk.interpreter() else {
        return;
    };
    let (_env, fake, server) = setup(1, &[]);
    let ran = sdk.run(&interpreter, "chat", &server).success();
    assert_eq!(ran.value("content"), CHAT_OK_CONTENT);
    let got = fake.wait_requests(1, T);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/api/v1/chat/completions");
    assert_eq!(got[0].key.as_deref(), Some(key(1).as_str()), "the pool key");
    assert_eq!(got[0].json()["model"], MODEL);
    assert_eq!(got[0].json()["messages"][0]["content"], "Hello");
    sdk.assert_sent(&got[0]);
}

fn stream(sdk: Sdk) {
    let Some(interpreter) = sdk.interpreter() else {
        return;
    };
    let (_env, fake, server) = setup(1, &[]);
    fake.push(
        &key(1),
        Reply::sse_chat(&["Streamed ", "through ", "orproxy"]),
    );
    let ran = sdk.run(&interpreter, "stream", &server).success();
    assert_eq!(ran.value("content"), "Streamed through orproxy");
    let got = fake.wait_requests(1, T);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["stream"], true);
    sdk.assert_sent(&got[0]);
}

fn models(sdk: Sdk) {
    let Some(interpreter) = sdk.interpreter() else {
        return;
    };
    let (_env, fake, server) = setup(1, &[]);
    let ran = sdk.run(&interpreter, "models", &server).success();
    assert_eq!(
        ran.value("models"),
        "meta-llama/llama-3.3-70b-instruct:free,openai/gpt-4o"
    );
    let got = fake.wait_requests(1, T);
    assert_eq!(
        (got[0].method.as_str(), got[0].path.as_str()),
        ("GET", "/api/v1/models")
    );
}

fn unix_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap()
}

fn rate_limit(sdk: Sdk) {
    let Some(interpreter) = sdk.interpreter() else {
        return;
    };
    let (_env, fake, server) = setup(2, &["--max-wait", "1"]);
    // Both keys hit the per-minute cap; the sooner is free in 90 s, beyond --max-wait.
    let soonest = reset_ms_in(90);
    fake.set_default(&key(1), Reply::rate_limit_per_min(soonest + 20_000));
    fake.set_default(&key(2), Reply::rate_limit_per_min(soonest));
    let before = unix_ms();
    let ran = sdk.run(&interpreter, "rate-limit", &server).success();
    let after = unix_ms();
    // Per-minute caps hold the keys for `:free` models (the SDK's model).
    assert_eq!(
        ran.value("code"),
        "free_models_held",
        "orproxy's own 429\n{ran}"
    );
    // orproxy says how many seconds until the soonest key is free, rounded up: the
    // value the SDK saw lies between what that was before and after the client ran.
    let retry_after: u64 = ran.value("retry-after").parse().unwrap();
    let (earliest, latest) = ((soonest - after) / 1000, (soonest - before).div_ceil(1000));
    assert!(
        (earliest..=latest).contains(&retry_after),
        "Retry-After {retry_after} is not the time until the soonest key ({earliest}..={latest} s)"
    );
    // One attempt per key, and no retry by the SDK.
    assert_eq!(fake.request_count(), 2, "{:?}", fake.requests());
}

/// A stream of `Partial answer` that then carries the upstream's error event.
fn stream_error_event(sdk: Sdk) {
    let Some(interpreter) = sdk.interpreter() else {
        return;
    };
    let (_env, fake, server) = setup(1, &[]);
    fake.push(
        &key(1),
        Reply::sse_error_after(&["Partial ", "answer"], "Provider disconnected mid-stream"),
    );
    let ran = sdk.run(&interpreter, "stream-error", &server).success();
    assert!(
        ran.value("message")
            .contains("Provider disconnected mid-stream"),
        "the upstream's error reached the SDK\n{ran}"
    );
    assert_eq!(fake.request_count(), 1, "no retry once the stream started");
}

/// A stream of `Partial answer` whose connection is then cut, without `[DONE]`.
fn stream_cut(sdk: Sdk) {
    let Some(interpreter) = sdk.interpreter() else {
        return;
    };
    let (_env, fake, server) = setup(1, &[]);
    let Reply::Sse {
        status,
        headers,
        mut events,
        ..
    } = Reply::sse_error_after(&["Partial ", "answer"], "unused")
    else {
        unreachable!("sse_error_after is an SSE reply")
    };
    events.pop(); // the error event: this stream just stops
    fake.push(
        &key(1),
        Reply::Sse {
            status,
            headers,
            events,
            end: SseEnd::Cut,
        },
    );
    let ran = sdk.run(&interpreter, "stream-error", &server).success();
    assert_eq!(
        ran.value("code"),
        "upstream_stream_error",
        "orproxy's error event\n{ran}"
    );
    assert!(
        ran.value("message")
            .contains("stream failed after it started"),
        "{ran}"
    );
    assert_eq!(fake.request_count(), 1, "no retry once the stream started");
}

/// The SDK's own retry: its first request finds every key parked for 2 s; orproxy
/// (with `--max-wait 0`) answers 429 with an honest Retry-After; the SDK waits that
/// long and its retry succeeds on a key that is free again.
fn retry_after_rotation(sdk: Sdk) {
    let Some(interpreter) = sdk.interpreter() else {
        return;
    };
    let (_env, fake, server) = setup(2, &["--max-wait", "0"]);
    let reset = reset_ms_in(2);
    fake.push(&key(1), Reply::rate_limit_per_min(reset));
    fake.push(&key(2), Reply::rate_limit_per_min(reset));
    let ran = sdk.run(&interpreter, "retry", &server).success();
    assert_eq!(ran.value("content"), CHAT_OK_CONTENT);
    let retries: u32 = ran.value("retries").parse().unwrap();
    assert!(retries >= 1, "{ran}");
    let got = fake.requests();
    let retry_count = |r: &Recorded| r.header("x-stainless-retry-count").map(str::to_owned);
    // The first request reached the fake on both keys; the success came from a retry.
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(retry_count(&got[0]).as_deref(), Some("0"));
    assert_eq!(retry_count(&got[1]).as_deref(), Some("0"));
    assert_eq!(
        retry_count(&got[2]),
        Some(retries.to_string()),
        "the SDK's retry is what succeeded"
    );
}

macro_rules! sdk_tests {
    ($($name:ident: $scenario:ident,)*) => {
        mod python {
            $(#[test] fn $name() { super::$scenario(super::Sdk::Python) })*
        }
        mod node {
            $(#[test] fn $name() { super::$scenario(super::Sdk::Node) })*
        }
    };
}

sdk_tests! {
    chat_returns_the_upstream_content: chat,
    streamed_deltas_reassemble_into_the_text: stream,
    models_list_returns_the_upstream_models: models,
    orproxys_own_429_is_a_rate_limit_error_with_its_retry_after: rate_limit,
    an_upstream_error_event_mid_stream_raises_an_api_error: stream_error_event,
    a_stream_cut_mid_way_raises_an_api_error: stream_cut,
    the_sdks_own_retry_succeeds_once_a_key_is_free: retry_after_rotation,
}

// ---------------------------------------------------------------------------------------
// The README's curl example, as written
// ---------------------------------------------------------------------------------------

/// Each `curl http://localhost:3000...` command in the README's ```sh blocks, with its
/// continuation lines.
fn readme_curl_commands(readme: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_sh = false;
    let mut current: Option<String> = None;
    for line in readme.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_sh = !in_sh && trimmed == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        if let Some(cmd) = current.as_mut() {
            cmd.push('\n');
            cmd.push_str(line);
        } else if trimmed.starts_with("curl http://localhost:3000") {
            current = Some(line.to_owned());
        }
        if current.is_some() && !trimmed.ends_with('\\') {
            commands.extend(current.take());
        }
    }
    commands
}

#[test]
fn readme_curl_examples_run_as_written() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let commands = readme_curl_commands(&readme);
    assert!(!commands.is_empty(), "no curl example found in README.md");
    let (_env, fake, server) = setup(1, &[]);
    for (n, example) in commands.iter().enumerate() {
        // The answer the example's endpoint gives, and where its text is.
        let (dialect, text) = if example.contains("/v1/chat/completions") {
            (Dialect::Chat, "/choices/0/message/content")
        } else if example.contains("/v1/responses") {
            (Dialect::Responses, "/output/0/content/0/text")
        } else if example.contains("/v1/messages") {
            (Dialect::Messages, "/content/0/text")
        } else {
            panic!("this test knows chat, Responses and Messages examples only: {example}")
        };
        fake.push(&key(1), Reply::ok_in(dialect));
        let command = example.replace("localhost:3000", &server.addr());
        let mut sh = Command::new("sh");
        sh.arg("-c").arg(&command);
        clean_client_env(&mut sh);
        let ran = run(sh);
        assert_eq!(ran.code, Some(0), "{command}\n{ran}");
        let answer: serde_json::Value = serde_json::from_str(&ran.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {command}\n{ran}"));
        assert_eq!(
            answer.pointer(text).and_then(|t| t.as_str()),
            Some(CHAT_OK_CONTENT),
            "{answer}"
        );
        let got = fake.wait_requests(n + 1, T);
        assert_eq!(got[n].path, dialect.upstream_path());
        assert_eq!(got[n].key.as_deref(), Some(key(1).as_str()));
        assert_eq!(
            got[n].header_all("authorization"),
            vec![format!("Bearer {}", key(1))],
            "only the pool key"
        );
    }
    assert_eq!(
        commands.len(),
        3,
        "the chat, Responses and Messages examples"
    );
}

#[test]
fn the_readme_curl_extractor_keeps_continuation_lines() {
    let readme = "```sh\n# a comment\naider --foo\n\ncurl http://localhost:3000/v1/x \\\n  -H 'A: b' \\\n  -d '{}'\ncurl http://localhost:3000/v1/y\n```\n\n```\ncurl http://localhost:3000/v1/not-sh\n```\n";
    assert_eq!(
        readme_curl_commands(readme),
        vec![
            "curl http://localhost:3000/v1/x \\\n  -H 'A: b' \\\n  -d '{}'".to_owned(),
            "curl http://localhost:3000/v1/y".to_owned(),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// aider
// ---------------------------------------------------------------------------------------

static AIDER_SKIPPED: Once = Once::new();

#[test]
fn aider_sends_its_chat_through_orproxy() {
    let Some(aider) = tool("ORPROXY_TEST_AIDER", "aider", &AIDER_SKIPPED) else {
        return;
    };
    let (_env, fake, server) = setup(1, &[]);
    let answer = "Hello from the fake, through orproxy";
    fake.set_fallback(Reply::sse_chat(&[
        "Hello from the fake, ",
        "through orproxy",
    ]));
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    let project = work.path().join("project");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&project).unwrap();
    // What aider would otherwise download litellm's model list for (context size, price),
    // described the way aider's docs say to for a model it does not know.
    let metadata = work.path().join("model-metadata.json");
    let model_info = serde_json::json!({
        format!("openai/{MODEL}"): {
            "max_input_tokens": 131_072,
            "max_output_tokens": 8192,
            "input_cost_per_token": 0,
            "output_cost_per_token": 0,
            "litellm_provider": "openai",
            "mode": "chat"
        }
    });
    std::fs::write(&metadata, model_info.to_string()).unwrap();
    let mut cmd = Command::new(&aider);
    cmd.args([
        "--openai-api-base",
        &server.url("/v1"),
        "--openai-api-key",
        "dummy-key",
        "--model",
        &format!("openai/{MODEL}"),
        "--message",
        "Say hello",
        "--yes-always",
        "--no-git",
        "--no-auto-commits",
        "--no-check-update",
        "--no-show-release-notes",
        "--no-analytics",
        "--no-show-model-warnings",
        "--no-pretty",
        "--no-fancy-input",
        "--no-detect-urls",
        "--map-tokens",
        "0",
        "--model-metadata-file",
    ])
    .arg(&metadata)
    .current_dir(&project)
    .env("HOME", &home)
    // Nothing may be fetched from the internet: litellm's bundled model list, no
    // tokenizer download (litellm falls back to its bundled tiktoken encoding).
    .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    .env("HF_HUB_OFFLINE", "1")
    .env("TERM", "dumb");
    clean_client_env(&mut cmd);
    let ran = run(cmd);
    assert_eq!(ran.code, Some(0), "aider failed:\n{ran}");
    assert!(
        ran.stdout.contains(answer),
        "aider showed the answer:\n{ran}"
    );
    for host in [
        "raw.githubusercontent.com",
        "huggingface.co",
        "openrouter.ai",
    ] {
        assert!(
            !format!("{}{}", ran.stdout, ran.stderr).contains(host),
            "aider tried to reach {host}:\n{ran}"
        );
    }
    let chats: Vec<Recorded> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v1/chat/completions")
        .collect();
    assert!(
        !chats.is_empty(),
        "no chat request reached the fake:\n{ran}"
    );
    let body = chats[0].json();
    assert_eq!(
        body["model"], MODEL,
        "aider's model, without its openai/ prefix"
    );
    assert_eq!(chats[0].key.as_deref(), Some(key(1).as_str()));
    assert!(body["messages"].to_string().contains("Say hello"), "{body}");
}
