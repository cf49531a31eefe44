//! Anthropic Messages (`/v1/messages`) through orproxy, as the official Anthropic Python
//! SDK uses it: `messages.create(...)`, `messages.create(stream=True)` and
//! `messages.stream()` (scenarios `messages-*` of `tests/clients/python/check.py`).
//!
//! The SDK is given orproxy's root as `base_url` and appends `/v1/messages` itself.
//! Anthropic SDK 2.x sends both its `api_key` and its `auth_token` as
//! `Authorization: Bearer`; the `x-api-key` scenarios send that header instead, as Claude
//! Code does when `ANTHROPIC_API_KEY` is set.

use super::{MODEL, Ran, Sdk, T, check_py};
use crate::common::fake_openrouter::{CHAT_OK_CONTENT, Dialect, Failure, Recorded, Reply, SseEnd};
use crate::common::{Server, key, reset_ms_in, setup};
use std::path::{Path, PathBuf};
use std::time::Duration;

const D: Dialect = Dialect::Messages;
/// What the success scenarios expect (check.py's STREAM_CONTENT).
const WORDS: [&str; 3] = ["Streamed ", "through ", "orproxy"];
const STREAM_CONTENT: &str = "Streamed through orproxy";

/// The Python with the SDK, or `None` when the client tests are skipped.
fn python() -> Option<PathBuf> {
    Sdk::Python.interpreter()
}

/// Run `scenario` with the SDK's credential sent as `auth` (`api-key`, `auth-token`,
/// `x-api-key`), the credential being `token` (default `dummy-key`).
fn check_as(
    python: &Path,
    scenario: &str,
    server: &Server,
    auth: &str,
    token: Option<&str>,
) -> Ran {
    check_py(python, scenario, &server.base, Some(auth), token)
}

fn check(python: &Path, scenario: &str, server: &Server) -> Ran {
    check_as(python, scenario, server, "api-key", None)
}

/// What reached the fake: `/v1/messages` (the SDK appended it), the SDK's request with
/// its `anthropic-version`, and only the pool key `key(n)`, as a Bearer.
#[track_caller]
fn assert_forwarded(request: &Recorded, n: usize) {
    assert_eq!(request.path, D.upstream_path());
    assert_eq!(
        request.header_all("authorization"),
        vec![format!("Bearer {}", key(n))],
        "the pool key, and only it"
    );
    assert!(request.header("anthropic-version").is_some(), "{request:?}");
    assert_eq!(request.header("x-stainless-lang"), Some("python"));
    let ua = request.header("user-agent").unwrap_or_default();
    assert!(ua.starts_with("Anthropic/Python "), "User-Agent {ua:?}");
    let body = request.json();
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["messages"][0]["content"], "Hello");
}

/// `messages.create(...)` with the SDK's credential sent as `auth`.
fn creates(auth: &str) {
    let Some(python) = python() else { return };
    let (_env, fake, server) = setup(1, &[]);
    fake.push(&key(1), Reply::ok_in(D));
    let ran = check_as(&python, "messages-create", &server, auth, None).success();
    assert_eq!(ran.value("content"), CHAT_OK_CONTENT);
    let got = fake.wait_requests(1, T);
    assert_eq!(got.len(), 1);
    assert_forwarded(&got[0], 1);
}

#[test]
fn create_with_api_key_returns_the_upstream_message() {
    creates("api-key");
}

#[test]
fn create_with_auth_token_returns_the_upstream_message() {
    creates("auth-token");
}

/// A whole stream: `message_start` ... `message_stop`, the usage from `message_start`
/// and `message_delta`.
fn streams(scenario: &str) {
    let Some(python) = python() else { return };
    let (_env, fake, server) = setup(1, &[]);
    fake.push(&key(1), Reply::sse_in(D, &WORDS));
    let ran = check(&python, scenario, &server).success();
    assert_eq!(ran.value("content"), STREAM_CONTENT);
    let got = fake.wait_requests(1, T);
    assert_eq!(got.len(), 1);
    assert_forwarded(&got[0], 1);
    assert_eq!(got[0].json()["stream"], true);
}

#[test]
fn create_stream_reassembles_the_text() {
    streams("messages-create-stream");
}

#[test]
fn the_stream_helper_reassembles_the_text() {
    streams("messages-stream");
}

#[test]
fn a_slow_preamble_still_streams_the_text() {
    let Some(python) = python() else { return };
    let (_env, fake, server) = setup(1, &[]);
    fake.push(
        &key(1),
        Reply::sse_slow_preamble_in(D, &WORDS, Duration::from_millis(300)),
    );
    let ran = check(&python, "messages-stream", &server).success();
    assert_eq!(ran.value("content"), STREAM_CONTENT);
    assert_eq!(fake.request_count(), 1);
}

/// Key 1 answers an Anthropic-shaped 429 `free-models-per-min` before any stream;
/// orproxy tries key 2, whose stream the SDK gets. The SDK itself never retried.
fn rotates_after_a_429(scenario: &str) {
    let Some(python) = python() else { return };
    let (_env, fake, server) = setup(2, &[]);
    fake.push(&key(1), Reply::rate_limit_per_min_in(D, reset_ms_in(60)));
    fake.push(&key(2), Reply::sse_in(D, &WORDS));
    let ran = check(&python, scenario, &server).success();
    assert_eq!(ran.value("content"), STREAM_CONTENT);
    let got = fake.requests();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_forwarded(&got[0], 1);
    assert_forwarded(&got[1], 2);
    for request in &got {
        assert_eq!(request.header("x-stainless-retry-count"), Some("0"));
    }
}

#[test]
fn create_stream_rotates_to_another_key_after_a_429() {
    rotates_after_a_429("messages-create-stream");
}

#[test]
fn the_stream_helper_rotates_to_another_key_after_a_429() {
    rotates_after_a_429("messages-stream");
}

#[test]
fn the_non_streaming_create_rotates_to_another_key_after_a_429() {
    let Some(python) = python() else { return };
    let (_env, fake, server) = setup(2, &[]);
    fake.push(&key(1), Reply::rate_limit_per_min_in(D, reset_ms_in(60)));
    fake.push(&key(2), Reply::ok_in(D));
    let ran = check(&python, "messages-create", &server).success();
    assert_eq!(ran.value("content"), CHAT_OK_CONTENT);
    let got = fake.requests();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_forwarded(&got[1], 2);
}

/// An `event: error` as the stream's first event (no `message_start`) is retried on
/// key 2, and the SDK sees key 2's stream.
#[test]
fn an_error_event_first_is_retried_on_another_key() {
    let Some(python) = python() else { return };
    let (_env, fake, server) = setup(2, &[]);
    fake.push(
        &key(1),
        Reply::sse_first_event_error_in(D, Failure::Overloaded, "Overloaded"),
    );
    fake.push(&key(2), Reply::sse_in(D, &WORDS));
    let ran = check(&python, "messages-stream", &server).success();
    assert_eq!(ran.value("content"), STREAM_CONTENT);
    let got = fake.requests();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_forwarded(&got[1], 2);
}

/// The upstream's own `event: error` after `Partial answer` is raised by the SDK as its
/// APIStatusError.
fn relays_the_upstreams_error(scenario: &str) {
    let Some(python) = python() else { return };
    let (_env, fake, server) = setup(1, &[]);
    fake.push(
        &key(1),
        Reply::sse_error_after_in(
            D,
            &["Partial ", "answer"],
            Failure::Overloaded,
            "Overloaded",
        ),
    );
    let ran = check(&python, scenario, &server).success();
    assert_eq!(ran.value("type"), "overloaded_error", "{ran}");
    assert_eq!(ran.value("message"), "Overloaded");
    assert_eq!(fake.request_count(), 1, "no retry once content was sent");
}

#[test]
fn create_stream_raises_the_upstreams_error_event() {
    relays_the_upstreams_error("messages-create-stream-error");
}

#[test]
fn the_stream_helper_raises_the_upstreams_error_event() {
    relays_the_upstreams_error("messages-stream-error");
}

/// With client tokens, the SDK's Bearer (`auth_token`) is the client token; the
/// upstream gets the pool key in its place.
#[test]
fn a_client_token_as_bearer_is_accepted_and_replaced() {
    let Some(python) = python() else { return };
    let (_env, fake, server) = setup(1, &["--client-token", "tok-messages"]);
    fake.push(&key(1), Reply::ok_in(D));
    let ran = check_as(
        &python,
        "messages-create",
        &server,
        "auth-token",
        Some("tok-messages"),
    )
    .success();
    assert_eq!(ran.value("content"), CHAT_OK_CONTENT);
    let got = fake.wait_requests(1, T);
    assert_forwarded(&got[0], 1);
    assert!(!format!("{:?}", got[0].headers).contains("tok-messages"));
}

// ---------------------------------------------------------------------------------------
// What issue 15 asks of orproxy: these fail until orproxy knows the Messages dialect
// ---------------------------------------------------------------------------------------

const RATE_LIMITED: &str = "Rate limit exceeded: free-models-per-min. ";
const PARTIAL: [&str; 2] = ["Partial ", "answer"];

/// Key 1 sends `message_start`, then `event: error` (`rate_limit_error`): nothing the
/// client could use was sent, so orproxy retries on key 2, the SDK sees only key 2's
/// stream, and key 1 cools like after its HTTP twin, a 429.
fn retries_an_error_after_message_start(scenario: &str) {
    let Some(python) = python() else { return };
    let (env, fake, server) = setup(2, &[]);
    fake.push(
        &key(1),
        Reply::sse_error_after_preamble_in(D, Failure::RateLimit, RATE_LIMITED),
    );
    fake.push(&key(2), Reply::sse_in(D, &WORDS));
    let ran = check(&python, scenario, &server);
    assert_eq!(ran.code, Some(0), "the SDK saw key 1's failure:\n{ran}");
    assert_eq!(ran.value("content"), STREAM_CONTENT);
    let got = fake.requests();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_forwarded(&got[1], 2);
    crate::common::wait_until(
        "key 1 held for :free models (its account's minute cap)",
        T,
        || {
            env.list_json()
                .iter()
                .any(|k| k["id"] == crate::common::key_id(&key(1)) && k["status"] == "free_held")
        },
    );
}

#[test]
fn create_stream_retries_an_error_after_message_start() {
    retries_an_error_after_message_start("messages-create-stream");
}

#[test]
fn the_stream_helper_retries_an_error_after_message_start() {
    retries_an_error_after_message_start("messages-stream");
}

/// Key 1's stream breaks after `Partial answer`: the SDK raises its APIStatusError for
/// orproxy's `event: error`, never a JSON decode error or a quiet, truncated end; no
/// retry once content was sent.
fn raises_an_api_error(scenario: &str, breaking: Reply) {
    let Some(python) = python() else { return };
    let (_env, fake, server) = setup(1, &[]);
    fake.push(&key(1), breaking);
    let ran = check(&python, scenario, &server);
    assert_eq!(ran.code, Some(0), "{ran}");
    assert_eq!(ran.value("error-class"), "APIStatusError", "{ran}");
    assert!(!ran.value("type").is_empty(), "{ran}");
    assert_eq!(fake.request_count(), 1, "no retry once content was sent");
}

#[test]
fn create_stream_raises_an_api_error_when_the_connection_breaks() {
    raises_an_api_error(
        "messages-create-stream-error",
        Reply::sse_cut_after_in(D, &PARTIAL).with_end(SseEnd::Reset),
    );
}

#[test]
fn the_stream_helper_raises_an_api_error_when_the_connection_breaks() {
    raises_an_api_error(
        "messages-stream-error",
        Reply::sse_cut_after_in(D, &PARTIAL).with_end(SseEnd::Reset),
    );
}

#[test]
fn create_stream_raises_an_api_error_when_cut_inside_an_event() {
    raises_an_api_error(
        "messages-create-stream-error",
        Reply::sse_cut_inside_in(D, &PARTIAL),
    );
}

#[test]
fn the_stream_helper_raises_an_api_error_when_cut_inside_an_event() {
    raises_an_api_error(
        "messages-stream-error",
        Reply::sse_cut_inside_in(D, &PARTIAL),
    );
}

#[test]
fn create_stream_raises_an_api_error_when_cut_at_an_event_boundary() {
    raises_an_api_error(
        "messages-create-stream-error",
        Reply::sse_cut_after_in(D, &PARTIAL),
    );
}

#[test]
fn create_stream_raises_an_api_error_without_message_stop() {
    raises_an_api_error(
        "messages-create-stream-error",
        Reply::sse_unclosed_in(D, &PARTIAL),
    );
}

#[test]
fn the_stream_helper_raises_an_api_error_without_message_stop() {
    raises_an_api_error("messages-stream-error", Reply::sse_unclosed_in(D, &PARTIAL));
}

/// The credential Claude Code sends (`x-api-key`, no Authorization) never reaches
/// OpenRouter: the upstream gets only the pool key, as a Bearer.
#[test]
fn the_clients_x_api_key_never_reaches_the_upstream() {
    let Some(python) = python() else { return };
    let (_env, fake, server) = setup(1, &[]);
    fake.push(&key(1), Reply::ok_in(D));
    let ran = check_as(&python, "messages-create", &server, "x-api-key", None).success();
    assert_eq!(ran.value("content"), CHAT_OK_CONTENT);
    let got = fake.wait_requests(1, T);
    assert_eq!(
        got[0].header_all("x-api-key"),
        Vec::<&str>::new(),
        "the client's x-api-key was forwarded"
    );
    assert_forwarded(&got[0], 1);
}

/// With client tokens, a client token sent as `x-api-key` is accepted like a Bearer one.
#[test]
fn a_client_token_as_x_api_key_is_accepted() {
    let Some(python) = python() else { return };
    let (_env, fake, server) = setup(1, &["--client-token", "tok-messages"]);
    fake.push(&key(1), Reply::ok_in(D));
    let ran = check_as(
        &python,
        "messages-create",
        &server,
        "x-api-key",
        Some("tok-messages"),
    );
    assert_eq!(ran.code, Some(0), "{ran}");
    assert_eq!(ran.value("content"), CHAT_OK_CONTENT);
    let got = fake.wait_requests(1, T);
    assert!(!format!("{:?}", got[0].headers).contains("tok-messages"));
    assert_forwarded(&got[0], 1);
}

/// orproxy's own errors on `/v1/messages` are Anthropic-shaped: a wrong client token
/// gets a 401 the SDK reads as `authentication_error`.
#[test]
fn a_wrong_client_token_gets_an_anthropic_shaped_401() {
    let Some(python) = python() else { return };
    let (_env, fake, server) = setup(1, &["--client-token", "tok-messages"]);
    let ran = check_as(
        &python,
        "messages-rejected",
        &server,
        "api-key",
        Some("wrong"),
    );
    assert_eq!(ran.code, Some(0), "{ran}");
    assert_eq!(ran.value("status"), "401");
    assert_eq!(fake.request_count(), 0, "nothing reached the upstream");
}
