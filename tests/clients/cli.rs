//! The coding agents through orproxy: OpenAI's Codex CLI (`codex exec`, which speaks only
//! the Responses API) and Claude Code (`claude -p`, Anthropic Messages), pinned in
//! `tests/clients/cli/package-lock.json` and installed by `scripts/install-test-clients
//! cli`, which sets `ORPROXY_TEST_CODEX` and `ORPROXY_TEST_CLAUDE`. Without them these
//! tests are skipped, except under CI.
//!
//! Neither needs a login. What keeps them on 127.0.0.1 (checked with strace when these
//! tests were written): codex with `features.plugins=false` (else it syncs its curated
//! plugins from github.com, api.github.com and chatgpt.com) and `analytics.enabled=false`
//! (else it exports metrics to ab.chatgpt.com); Claude Code with
//! `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1` (else it resolves api.anthropic.com and
//! sends `HEAD /api/hello` to its base URL). With those, each makes one request: codex
//! `POST /v1/responses`, Claude Code `POST /v1/messages?beta=true`.

use super::{MODEL, Ran, T, clean_client_env, run, tool};
use crate::common::fake_openrouter::{Dialect, Failure, Recorded, Reply};
use crate::common::{Server, key, reset_ms_in, setup};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

/// The answer the fake streams, one event a word.
const WORDS: [&str; 4] = ["Hello ", "from the fake, ", "through ", "orproxy"];
const ANSWER: &str = "Hello from the fake, through orproxy";

static CODEX_SKIPPED: Once = Once::new();
static CLAUDE_SKIPPED: Once = Once::new();

fn codex() -> Option<PathBuf> {
    tool("ORPROXY_TEST_CODEX", "Codex CLI", &CODEX_SKIPPED)
}

fn claude() -> Option<PathBuf> {
    tool("ORPROXY_TEST_CLAUDE", "Claude Code", &CLAUDE_SKIPPED)
}

/// `codex exec "Say hello"` with a model provider pointing at orproxy's `/v1` (Responses
/// API, credential from `ORPROXY_TEST_KEY` = `dummy-key`), in a fresh home and an empty
/// working directory. Codex's own retries are off, so that what it reports is what
/// orproxy sent.
fn run_codex(codex: &Path, server: &Server) -> Ran {
    let work = tempfile::tempdir().unwrap();
    let (home, codex_home, project) = (
        work.path().join("home"),
        work.path().join("codex-home"),
        work.path().join("project"),
    );
    for dir in [&home, &codex_home, &project] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let provider = format!(
        "model_providers.orproxy={{name=\"orproxy\",base_url=\"{}\",env_key=\"ORPROXY_TEST_KEY\",\
         wire_api=\"responses\",request_max_retries=0,stream_max_retries=0}}",
        server.url("/v1")
    );
    let mut cmd = Command::new(codex);
    cmd.args(["exec", "--skip-git-repo-check", "--ephemeral", "-C"])
        .arg(&project)
        .args(["-m", MODEL, "-c", "model_provider=orproxy", "-c", &provider])
        .args([
            "-c",
            "features.plugins=false",
            "-c",
            "analytics.enabled=false",
        ])
        .arg("Say hello")
        .current_dir(&project);
    clean_client_env(&mut cmd);
    cmd.env("HOME", &home)
        .env("CODEX_HOME", &codex_home)
        .env("ORPROXY_TEST_KEY", "dummy-key")
        .env("NO_COLOR", "1")
        .env("TERM", "dumb");
    run(cmd)
}

/// `claude -p "Say hello"` with `ANTHROPIC_BASE_URL` = orproxy's root and the credential
/// in `credential` (`ANTHROPIC_API_KEY`: sent as `x-api-key`; `ANTHROPIC_AUTH_TOKEN`:
/// sent as Bearer), in a fresh home. Claude Code's own retries and its non-streaming
/// fallback are off, so that what it reports is what orproxy sent.
fn run_claude(claude: &Path, server: &Server, credential: (&str, &str)) -> Ran {
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    let project = work.path().join("project");
    for dir in [&home, &project] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let mut cmd = Command::new(claude);
    cmd.args(["-p", "Say hello", "--model", MODEL])
        .current_dir(&project);
    clean_client_env(&mut cmd);
    cmd.env("HOME", &home)
        .env("ANTHROPIC_BASE_URL", &server.base)
        .env(credential.0, credential.1)
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("CLAUDE_CODE_MAX_RETRIES", "0")
        .env("CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("NO_COLOR", "1")
        .env("TERM", "dumb");
    run(cmd)
}

/// Requests other than the inference endpoint's, which the agent should not make.
#[track_caller]
fn only_inference(got: &[Recorded], dialect: Dialect) {
    let others: Vec<String> = got
        .iter()
        .filter(|r| r.path != dialect.upstream_path())
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(others.is_empty(), "unexpected requests: {others:?}");
}

/// What reached the fake from codex: the Responses path, streamed, only the pool key
/// `key(n)` as a Bearer.
#[track_caller]
fn assert_codex_sent(request: &Recorded, n: usize) {
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", Dialect::Responses.upstream_path())
    );
    assert_eq!(
        request.header_all("authorization"),
        vec![format!("Bearer {}", key(n))]
    );
    let ua = request.header("user-agent").unwrap_or_default();
    assert!(ua.starts_with("codex_exec/"), "User-Agent {ua:?}");
    let body = request.json();
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["stream"], true);
    assert!(body["input"].to_string().contains("Say hello"), "{body}");
}

/// What reached the fake from Claude Code: `/v1/messages?beta=true`, streamed, with its
/// `anthropic-version` and `anthropic-beta`, and the pool key `key(n)` as the only Bearer.
#[track_caller]
fn assert_claude_sent(request: &Recorded, n: usize) {
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", Dialect::Messages.upstream_path())
    );
    assert_eq!(request.query.as_deref(), Some("beta=true"));
    assert_eq!(
        request.header_all("authorization"),
        vec![format!("Bearer {}", key(n))]
    );
    assert!(request.header("anthropic-version").is_some(), "{request:?}");
    assert!(request.header("anthropic-beta").is_some(), "{request:?}");
    let ua = request.header("user-agent").unwrap_or_default();
    assert!(ua.starts_with("claude-cli/"), "User-Agent {ua:?}");
    let body = request.json();
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["stream"], true);
    assert!(body["messages"].to_string().contains("Say hello"), "{body}");
}

#[test]
fn codex_exec_answers_through_orproxy() {
    let Some(codex) = codex() else { return };
    let (_env, fake, server) = setup(1, &[]);
    fake.push(&key(1), Reply::sse_in(Dialect::Responses, &WORDS));
    let ran = run_codex(&codex, &server);
    assert_eq!(ran.code, Some(0), "codex failed:\n{ran}");
    assert_eq!(ran.stdout.trim(), ANSWER, "{ran}");
    let got = fake.wait_requests(1, T);
    only_inference(&got, Dialect::Responses);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_codex_sent(&got[0], 1);
}

#[test]
fn codex_exec_is_rotated_to_another_key_after_a_429() {
    let Some(codex) = codex() else { return };
    let (_env, fake, server) = setup(2, &[]);
    fake.push(
        &key(1),
        Reply::rate_limit_per_min_in(Dialect::Responses, reset_ms_in(60)),
    );
    fake.push(&key(2), Reply::sse_in(Dialect::Responses, &WORDS));
    let ran = run_codex(&codex, &server);
    assert_eq!(ran.code, Some(0), "codex failed:\n{ran}");
    assert_eq!(ran.stdout.trim(), ANSWER, "{ran}");
    let got = fake.requests();
    only_inference(&got, Dialect::Responses);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_codex_sent(&got[0], 1);
    assert_codex_sent(&got[1], 2);
}

#[test]
fn claude_print_answers_through_orproxy() {
    let Some(claude) = claude() else { return };
    let (_env, fake, server) = setup(1, &[]);
    fake.push(&key(1), Reply::sse_in(Dialect::Messages, &WORDS));
    let ran = run_claude(&claude, &server, ("ANTHROPIC_API_KEY", "dummy-key"));
    assert_eq!(ran.code, Some(0), "claude failed:\n{ran}");
    assert_eq!(ran.stdout.trim(), ANSWER, "{ran}");
    let got = fake.wait_requests(1, T);
    only_inference(&got, Dialect::Messages);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_claude_sent(&got[0], 1);
}

#[test]
fn claude_print_is_rotated_to_another_key_after_a_429() {
    let Some(claude) = claude() else { return };
    let (_env, fake, server) = setup(2, &[]);
    fake.push(
        &key(1),
        Reply::rate_limit_per_min_in(Dialect::Messages, reset_ms_in(60)),
    );
    fake.push(&key(2), Reply::sse_in(Dialect::Messages, &WORDS));
    let ran = run_claude(&claude, &server, ("ANTHROPIC_API_KEY", "dummy-key"));
    assert_eq!(ran.code, Some(0), "claude failed:\n{ran}");
    assert_eq!(ran.stdout.trim(), ANSWER, "{ran}");
    let got = fake.requests();
    only_inference(&got, Dialect::Messages);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_claude_sent(&got[0], 1);
    assert_claude_sent(&got[1], 2);
}

/// With client tokens, Claude Code's `ANTHROPIC_AUTH_TOKEN` (sent as Bearer) is the
/// client token; the upstream gets the pool key in its place.
#[test]
fn claude_print_with_a_client_token_as_auth_token() {
    let Some(claude) = claude() else { return };
    let (_env, fake, server) = setup(1, &["--client-token", "tok-claude"]);
    fake.push(&key(1), Reply::sse_in(Dialect::Messages, &WORDS));
    let ran = run_claude(&claude, &server, ("ANTHROPIC_AUTH_TOKEN", "tok-claude"));
    assert_eq!(ran.code, Some(0), "claude failed:\n{ran}");
    assert_eq!(ran.stdout.trim(), ANSWER, "{ran}");
    let got = fake.wait_requests(1, T);
    assert_claude_sent(&got[0], 1);
    assert!(!format!("{:?}", got[0].headers).contains("tok-claude"));
}

// ---------------------------------------------------------------------------------------
// What issue 15 asks of orproxy: these fail until it is done
// ---------------------------------------------------------------------------------------

const RATE_LIMITED: &str = "Rate limit exceeded: free-models-per-min. ";

/// Key 1's stream fails with `response.failed` right after `response.created`: orproxy
/// retries on key 2 and codex (its own retries off) shows key 2's answer.
#[test]
fn codex_exec_gets_an_answer_when_response_failed_follows_the_preamble() {
    let Some(codex) = codex() else { return };
    let (_env, fake, server) = setup(2, &[]);
    fake.push(
        &key(1),
        Reply::sse_error_after_preamble_in(Dialect::Responses, Failure::RateLimit, RATE_LIMITED),
    );
    fake.push(&key(2), Reply::sse_in(Dialect::Responses, &WORDS));
    let ran = run_codex(&codex, &server);
    assert_eq!(ran.code, Some(0), "codex saw key 1's failure:\n{ran}");
    assert_eq!(ran.stdout.trim(), ANSWER, "{ran}");
    let got = fake.requests();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_codex_sent(&got[1], 2);
}

/// Key 1 sends `message_start`, then `event: error`: orproxy retries on key 2 and Claude
/// Code shows key 2's answer.
#[test]
fn claude_print_gets_an_answer_when_an_error_follows_message_start() {
    let Some(claude) = claude() else { return };
    let (_env, fake, server) = setup(2, &[]);
    fake.push(
        &key(1),
        Reply::sse_error_after_preamble_in(Dialect::Messages, Failure::RateLimit, RATE_LIMITED),
    );
    fake.push(&key(2), Reply::sse_in(Dialect::Messages, &WORDS));
    let ran = run_claude(&claude, &server, ("ANTHROPIC_API_KEY", "dummy-key"));
    assert_eq!(ran.code, Some(0), "claude saw key 1's failure:\n{ran}");
    assert_eq!(ran.stdout.trim(), ANSWER, "{ran}");
    let got = fake.requests();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_claude_sent(&got[1], 2);
}

/// Claude Code sends `ANTHROPIC_API_KEY` as `x-api-key`: it never reaches OpenRouter.
#[test]
fn claude_codes_x_api_key_never_reaches_the_upstream() {
    let Some(claude) = claude() else { return };
    let (_env, fake, server) = setup(1, &[]);
    fake.push(&key(1), Reply::sse_in(Dialect::Messages, &WORDS));
    let ran = run_claude(&claude, &server, ("ANTHROPIC_API_KEY", "dummy-key"));
    assert_eq!(ran.code, Some(0), "claude failed:\n{ran}");
    let got = fake.wait_requests(1, T);
    assert_eq!(
        got[0].header_all("x-api-key"),
        Vec::<&str>::new(),
        "Claude Code's x-api-key was forwarded"
    );
}

/// With client tokens, Claude Code's `ANTHROPIC_API_KEY` (sent as `x-api-key`) is
/// accepted as a client token.
#[test]
fn claude_print_with_a_client_token_as_api_key() {
    let Some(claude) = claude() else { return };
    let (_env, fake, server) = setup(1, &["--client-token", "tok-claude"]);
    fake.push(&key(1), Reply::sse_in(Dialect::Messages, &WORDS));
    let ran = run_claude(&claude, &server, ("ANTHROPIC_API_KEY", "tok-claude"));
    assert_eq!(ran.code, Some(0), "claude failed:\n{ran}");
    assert_eq!(ran.stdout.trim(), ANSWER, "{ran}");
    let got = fake.wait_requests(1, T);
    assert_claude_sent(&got[0], 1);
    assert!(!format!("{:?}", got[0].headers).contains("tok-claude"));
}
