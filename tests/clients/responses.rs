//! The Responses API (`/v1/responses`) through orproxy, as the official OpenAI Python
//! SDK uses it: `responses.create(...)`, `responses.create(stream=True)` and
//! `responses.stream()` (scenarios `responses-*` of `tests/clients/python/check.py`).

use super::{MODEL, Ran, Sdk, T, check_py};
use crate::common::fake_openrouter::{
    CHAT_OK_CONTENT, Dialect, FAKE_COST, Failure, Recorded, Reply, SseEnd,
};
use crate::common::{Server, key, reset_ms_in, setup};
use std::path::{Path, PathBuf};
use std::time::Duration;

const D: Dialect = Dialect::Responses;
/// What the success scenarios expect (check.py's STREAM_CONTENT).
const WORDS: [&str; 3] = ["Streamed ", "through ", "orproxy"];

/// The Python with the SDK, or `None` when the client tests are skipped.
fn python() -> Option<PathBuf> {
    Sdk::Python.interpreter()
}

fn check(python: &Path, scenario: &str, server: &Server) -> Ran {
    check_py(python, scenario, &server.url("/v1"), None, None)
}

/// What reached the fake: the Responses path, the SDK's request, and only the pool key
/// `key(n)`, as a Bearer.
#[track_caller]
fn assert_forwarded(request: &Recorded, n: usize) {
    assert_eq!(request.path, D.upstream_path());
    assert_eq!(
        request.header_all("authorization"),
        vec![format!("Bearer {}", key(n))],
        "the pool key, and only it"
    );
    assert_eq!(request.json()["model"], MODEL);
    assert_eq!(request.json()["input"], "Hello");
    Sdk::Python.assert_sent(request);
}

#[test]
fn create_returns_the_upstream_response() {
    let Some(python) = python() else { return };
    let (_env, fake, server) = setup(1, &[]);
    fake.push(&key(1), Reply::ok_in(D));
    let ran = check(&python, "responses-create", &server).success();
    assert_eq!(ran.value("content"), CHAT_OK_CONTENT);
    let got = fake.wait_requests(1, T);
    assert_eq!(got.len(), 1);
    assert_forwarded(&got[0], 1);
    assert_eq!(got[0].json().get("stream"), None);
}

/// A whole stream: `response.created` ... `response.completed`, its usage with cost.
fn streams(scenario: &str) {
    let Some(python) = python() else { return };
    let (_env, fake, server) = setup(1, &[]);
    fake.push(&key(1), Reply::sse_in(D, &WORDS));
    let ran = check(&python, scenario, &server).success();
    assert_eq!(ran.value("content"), "Streamed through orproxy");
    let events = ran.value("events");
    assert!(
        events.starts_with("response.created,response.in_progress,response.output_item.added"),
        "{ran}"
    );
    assert!(events.ends_with(",response.completed"), "{ran}");
    assert_eq!(ran.value("cost"), FAKE_COST.to_string());
    let got = fake.wait_requests(1, T);
    assert_eq!(got.len(), 1);
    assert_forwarded(&got[0], 1);
    assert_eq!(got[0].json()["stream"], true);
}

#[test]
fn create_stream_reassembles_the_text() {
    streams("responses-create-stream");
}

#[test]
fn the_stream_helper_reassembles_the_text() {
    streams("responses-stream");
}

#[test]
fn a_slow_preamble_still_streams_the_text() {
    let Some(python) = python() else { return };
    let (_env, fake, server) = setup(1, &[]);
    fake.push(
        &key(1),
        Reply::sse_slow_preamble_in(D, &WORDS, Duration::from_millis(300)),
    );
    let ran = check(&python, "responses-create-stream", &server).success();
    assert_eq!(ran.value("content"), "Streamed through orproxy");
    assert_eq!(fake.request_count(), 1);
}

/// Key 1 answers 429 `free-models-per-min` before any stream; orproxy tries key 2, whose
/// stream the SDK gets. The SDK itself never retried.
fn rotates_after_a_429(scenario: &str) {
    let Some(python) = python() else { return };
    let (_env, fake, server) = setup(2, &[]);
    fake.push(&key(1), Reply::rate_limit_per_min_in(D, reset_ms_in(60)));
    fake.push(&key(2), Reply::sse_in(D, &WORDS));
    let ran = check(&python, scenario, &server).success();
    assert_eq!(ran.value("content"), "Streamed through orproxy");
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
    rotates_after_a_429("responses-create-stream");
}

#[test]
fn the_stream_helper_rotates_to_another_key_after_a_429() {
    rotates_after_a_429("responses-stream");
}

#[test]
fn the_non_streaming_create_rotates_to_another_key_after_a_429() {
    let Some(python) = python() else { return };
    let (_env, fake, server) = setup(2, &[]);
    fake.push(&key(1), Reply::rate_limit_per_min_in(D, reset_ms_in(60)));
    fake.push(&key(2), Reply::ok_in(D));
    let ran = check(&python, "responses-create", &server).success();
    assert_eq!(ran.value("content"), CHAT_OK_CONTENT);
    assert_eq!(
        ran.value("output-tokens"),
        CHAT_OK_CONTENT.split_whitespace().count().to_string()
    );
    let got = fake.requests();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_forwarded(&got[1], 2);
}

/// The upstream's own `response.failed` after `Partial answer` reaches the SDK as the
/// stream's last event, as sent.
fn relays_the_upstreams_failure(scenario: &str) {
    let Some(python) = python() else { return };
    let (_env, fake, server) = setup(1, &[]);
    fake.push(
        &key(1),
        Reply::sse_error_after_in(
            D,
            &["Partial ", "answer"],
            Failure::Server,
            "Provider disconnected mid-stream",
        ),
    );
    let ran = check(&python, scenario, &server).success();
    assert_eq!(ran.value("event"), "response.failed", "{ran}");
    assert_eq!(ran.value("code"), "server_error");
    assert_eq!(ran.value("message"), "Provider disconnected mid-stream");
    assert_eq!(fake.request_count(), 1, "no retry once content was sent");
}

#[test]
fn create_stream_relays_the_upstreams_response_failed() {
    relays_the_upstreams_failure("responses-create-stream-error");
}

#[test]
fn the_stream_helper_relays_the_upstreams_response_failed() {
    relays_the_upstreams_failure("responses-stream-error");
}

// ---------------------------------------------------------------------------------------
// What issue 15 asks of orproxy: these fail until orproxy knows the Responses dialect
// ---------------------------------------------------------------------------------------

/// Key 1's stream fails (a rate limit) before any content: nothing the client could use
/// was sent, so orproxy retries on key 2, the SDK sees only key 2's stream, and key 1
/// cools like after its HTTP twin, a 429.
fn retries_before_content(scenario: &str, failing: Reply) {
    let Some(python) = python() else { return };
    let (env, fake, server) = setup(2, &[]);
    fake.push(&key(1), failing);
    fake.push(&key(2), Reply::sse_in(D, &WORDS));
    let ran = check(&python, scenario, &server);
    assert_eq!(ran.code, Some(0), "the SDK saw key 1's failure:\n{ran}");
    assert_eq!(ran.value("content"), "Streamed through orproxy");
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

const RATE_LIMITED: &str = "Rate limit exceeded: free-models-per-min. ";

#[test]
fn create_stream_retries_response_failed_after_the_preamble() {
    retries_before_content(
        "responses-create-stream",
        Reply::sse_error_after_preamble_in(D, Failure::RateLimit, RATE_LIMITED),
    );
}

#[test]
fn the_stream_helper_retries_response_failed_after_the_preamble() {
    retries_before_content(
        "responses-stream",
        Reply::sse_error_after_preamble_in(D, Failure::RateLimit, RATE_LIMITED),
    );
}

#[test]
fn create_stream_retries_an_error_event_after_the_preamble() {
    retries_before_content(
        "responses-create-stream",
        Reply::sse_error_event_after_preamble_in(D, Failure::RateLimit, RATE_LIMITED),
    );
}

#[test]
fn create_stream_retries_an_error_event_that_comes_first() {
    retries_before_content(
        "responses-create-stream",
        Reply::sse_first_event_error_in(D, Failure::RateLimit, RATE_LIMITED),
    );
}

/// Key 1's stream breaks after `Partial answer`: the SDK's last event is orproxy's
/// `response.failed` (with the ID of `response.created`), never a JSON decode error, a
/// chat-shaped error chunk or a quiet end; no retry once content was sent.
fn ends_in_response_failed(scenario: &str, breaking: Reply) {
    let Some(python) = python() else { return };
    let (_env, fake, server) = setup(1, &[]);
    fake.push(&key(1), breaking);
    let ran = check(&python, scenario, &server);
    assert_eq!(ran.code, Some(0), "{ran}");
    assert_eq!(ran.value("event"), "response.failed", "{ran}");
    assert_eq!(fake.request_count(), 1, "no retry once content was sent");
}

const PARTIAL: [&str; 2] = ["Partial ", "answer"];

#[test]
fn create_stream_ends_in_response_failed_when_the_connection_breaks() {
    ends_in_response_failed(
        "responses-create-stream-error",
        Reply::sse_cut_after_in(D, &PARTIAL).with_end(SseEnd::Reset),
    );
}

#[test]
fn the_stream_helper_ends_in_response_failed_when_the_connection_breaks() {
    ends_in_response_failed(
        "responses-stream-error",
        Reply::sse_cut_after_in(D, &PARTIAL).with_end(SseEnd::Reset),
    );
}

#[test]
fn create_stream_ends_in_response_failed_when_cut_inside_an_event() {
    ends_in_response_failed(
        "responses-create-stream-error",
        Reply::sse_cut_inside_in(D, &PARTIAL),
    );
}

#[test]
fn the_stream_helper_ends_in_response_failed_when_cut_inside_an_event() {
    ends_in_response_failed(
        "responses-stream-error",
        Reply::sse_cut_inside_in(D, &PARTIAL),
    );
}

#[test]
fn create_stream_ends_in_response_failed_when_cut_at_an_event_boundary() {
    ends_in_response_failed(
        "responses-create-stream-error",
        Reply::sse_cut_after_in(D, &PARTIAL),
    );
}

#[test]
fn create_stream_ends_in_response_failed_without_response_completed() {
    ends_in_response_failed(
        "responses-create-stream-error",
        Reply::sse_unclosed_in(D, &PARTIAL),
    );
}

#[test]
fn the_stream_helper_ends_in_response_failed_without_response_completed() {
    ends_in_response_failed(
        "responses-stream-error",
        Reply::sse_unclosed_in(D, &PARTIAL),
    );
}
