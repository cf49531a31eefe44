//! The three dialects through the real server, as a client sees the bytes:
//! keep-alive comments during a long hold, the request log's usage for
//! Responses and Messages, errors orproxy writes in Anthropic's shape, and
//! `GET /v1/generation` sent to the key that served the generation.

use crate::common::fake_openrouter::{Dialect, Failure, FakeOpenRouter, Reply, Script};
use crate::common::{Env, Server, chat, key, key_id, request, setup, wait_until};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);
const KEEPALIVE: &str = ": orproxy is waiting for the upstream's first event\n\n";

/// A streaming request in `dialect` to its endpoint.
fn stream(server: &Server, dialect: Dialect) -> crate::common::Resp {
    let (path, body) = match dialect {
        Dialect::Chat => (
            "/v1/chat/completions",
            json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}),
        ),
        Dialect::Responses => (
            "/v1/responses",
            json!({"model": "m", "stream": true, "input": "Hi"}),
        ),
        Dialect::Messages => (
            "/v1/messages",
            json!({"model": "m", "stream": true, "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}),
        ),
    };
    request(
        "POST",
        &server.url(path),
        &[("content-type", "application/json")],
        Some(body.to_string().as_bytes()),
    )
}

/// `event:` names in an SSE body, in order.
fn event_names(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .map(str::to_owned)
        .collect()
}

/// The JSON of the first `data:` line following `event: name`.
fn event_data(body: &str, name: &str) -> Value {
    let marker = format!("event: {name}\ndata: ");
    let at = body
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {body}"))
        + marker.len();
    let line = body[at..].lines().next().unwrap();
    serde_json::from_str(line).unwrap()
}

#[test]
fn a_long_preamble_gets_keepalive_comments_then_the_whole_stream() {
    let (_env, fake, server) = setup(1, &["--sse-keepalive", "1"]);
    let script = Script::new(Dialect::Messages)
        .preamble()
        .pause(Duration::from_millis(2500))
        .words(&["Thought ", "long"])
        .close();
    fake.push(&key(1), script.reply());
    let r = stream(&server, Dialect::Messages);
    assert_eq!(r.status, 200);
    let body = r.text();
    assert!(body.starts_with(KEEPALIVE), "comments first: {body}");
    let upstream = &body[body.find(": OPENROUTER PROCESSING").unwrap()..];
    assert!(
        !upstream.contains(KEEPALIVE),
        "no comment inside the stream: {body}"
    );
    assert_eq!(
        event_names(&body),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
}

#[test]
fn without_keepalive_a_long_preamble_is_held_silently() {
    let (_env, fake, server) = setup(1, &["--sse-keepalive", "0"]);
    let script = Script::new(Dialect::Responses)
        .preamble()
        .pause(Duration::from_millis(1500))
        .words(&["ok"])
        .close();
    fake.push(&key(1), script.reply());
    let body = stream(&server, Dialect::Responses).text();
    assert!(body.starts_with(": OPENROUTER PROCESSING"), "{body}");
    assert!(!body.contains(": orproxy"), "{body}");
}

#[test]
fn after_keepalive_an_error_before_content_is_still_retried_and_its_preamble_never_sent() {
    let (env, fake, server) = setup(2, &["--sse-keepalive", "1"]);
    let failing = Script::new(Dialect::Responses)
        .preamble()
        .pause(Duration::from_millis(2500))
        .fail(
            Failure::RateLimit,
            "Rate limit exceeded: free-models-per-min. ",
        );
    let failing_id = failing.id().to_owned();
    fake.push(&key(1), failing.reply());
    let winning = Script::new(Dialect::Responses)
        .preamble()
        .words(&["from ", "key 2"])
        .close();
    let winning_id = winning.id().to_owned();
    fake.push(&key(2), winning.reply());
    let r = stream(&server, Dialect::Responses);
    assert_eq!(r.status, 200);
    let body = r.text();
    assert!(body.starts_with(KEEPALIVE), "{body}");
    assert!(
        !body.contains(&failing_id),
        "key 1's preamble was sent: {body}"
    );
    assert!(!body.contains("response.failed"), "{body}");
    assert_eq!(
        event_data(&body, "response.created")["response"]["id"],
        winning_id
    );
    assert_eq!(
        event_names(&body).last().map(String::as_str),
        Some("response.completed")
    );
    assert_eq!(fake.requests().len(), 2);
    wait_until(
        "key 1 held for :free models (its account's minute cap)",
        T,
        || {
            env.list_json()
                .iter()
                .any(|k| k["id"] == key_id(&key(1)) && k["status"] == "free_held")
        },
    );
}

#[test]
fn after_keepalive_a_request_that_cannot_be_served_ends_in_its_own_protocol() {
    // One key, rate-limited after a long preamble, and no time to wait for it.
    let (_env, fake, server) = setup(1, &["--sse-keepalive", "1", "--max-wait", "0"]);
    let failing = Script::new(Dialect::Messages)
        .preamble()
        .pause(Duration::from_millis(2500))
        .fail(Failure::RateLimit, "Rate limit exceeded: limit_rpm/key");
    fake.push(&key(1), failing.reply());
    let r = stream(&server, Dialect::Messages);
    assert_eq!(r.status, 200, "committed by the comments");
    let body = r.text();
    assert!(body.starts_with(KEEPALIVE), "{body}");
    assert_eq!(
        event_names(&body),
        ["error"],
        "only orproxy's error: {body}"
    );
    let error = event_data(&body, "error");
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "rate_limit_error");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Try again in"),
        "orproxy's own 429 message: {error}"
    );
}

#[test]
fn an_in_stream_overload_before_content_is_retried_without_cooling_the_key() {
    let (env, fake, server) = setup(2, &[]);
    fake.push(
        &key(1),
        Script::new(Dialect::Messages)
            .preamble()
            .fail(Failure::Overloaded, "Provider returned error")
            .reply(),
    );
    fake.push(&key(2), Reply::sse_in(Dialect::Messages, &["ok"]));
    let body = stream(&server, Dialect::Messages).text();
    assert_eq!(
        event_names(&body).last().map(String::as_str),
        Some("message_stop")
    );
    assert_eq!(fake.requests().len(), 2);
    let keys = env.list_json();
    let first = keys.iter().find(|k| k["id"] == key_id(&key(1))).unwrap();
    assert_eq!(
        first["status"], "active",
        "an overloaded provider is not the key's doing"
    );
}

/// The request log's line of the last request.
fn last_logged(dir: &Path, n: usize) -> Vec<Value> {
    let path = dir.join(format!(
        "requests-{}.log",
        chrono::Local::now().date_naive().format("%Y-%m-%d")
    ));
    let mut lines = Vec::new();
    wait_until("the request log lines", T, || {
        lines = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        lines.len() >= n
    });
    lines
}

#[test]
fn the_request_log_has_the_usage_and_text_of_every_dialect() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    env.add_keys(&[key(1)]);
    let dir = env.dir.path().join("logs");
    let server = env.serve(
        &fake.base_url(),
        &["--log-dir", dir.to_str().unwrap(), "--log-bodies"],
    );
    fake.push(
        &key(1),
        Reply::sse_in(Dialect::Responses, &["Hello ", "there"]),
    );
    fake.push(&key(1), Reply::sse_in(Dialect::Messages, &["Hi ", "you"]));
    assert_eq!(stream(&server, Dialect::Responses).status, 200);
    assert_eq!(stream(&server, Dialect::Messages).status, 200);
    let lines = last_logged(&dir, 2);
    let responses = lines.iter().find(|l| l["path"] == "/v1/responses").unwrap();
    assert_eq!(responses["usage"]["output_tokens"], 2, "{responses}");
    assert!(responses["usage"]["input_tokens"].is_u64(), "{responses}");
    assert_eq!(responses["response_text"], "Hello there");
    assert!(responses.get("end").is_none(), "{responses}");
    let messages = lines.iter().find(|l| l["path"] == "/v1/messages").unwrap();
    // Input tokens from message_start, output tokens and cost from message_delta.
    assert!(
        messages["usage"]["input_tokens"].as_u64().unwrap() > 0,
        "{messages}"
    );
    assert_eq!(messages["usage"]["output_tokens"], 2, "{messages}");
    assert!(messages["usage"]["cost"].is_number(), "{messages}");
    assert_eq!(messages["response_text"], "Hi you");
}

#[test]
fn a_stream_without_its_closing_event_is_logged_as_a_failure() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    env.add_keys(&[key(1)]);
    let dir = env.dir.path().join("logs");
    let server = env.serve(&fake.base_url(), &["--log-dir", dir.to_str().unwrap()]);
    fake.push(
        &key(1),
        Reply::sse_unclosed_in(Dialect::Responses, &["Half"]),
    );
    let body = stream(&server, Dialect::Responses).text();
    assert_eq!(
        event_names(&body).last().map(String::as_str),
        Some("response.failed")
    );
    let lines = last_logged(&dir, 1);
    let end = lines[0]["end"].as_str().unwrap_or_default();
    assert!(end.contains("without response.completed"), "{}", lines[0]);
}

#[test]
fn errors_orproxy_writes_on_messages_endpoints_are_anthropic_shaped() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    let server = env.serve(&fake.base_url(), &[]);
    for path in ["/v1/messages", "/v1/messages/count_tokens"] {
        let r = request(
            "POST",
            &server.url(path),
            &[("content-type", "application/json")],
            Some(b"{\"model\": "),
        );
        assert_eq!(r.status, 400, "{path}");
        let body = r.json();
        assert_eq!(body["type"], "error", "{path}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not valid JSON")
        );
        // No key at all.
        let r = request(
            "POST",
            &server.url(path),
            &[("content-type", "application/json")],
            Some(b"{\"model\": \"m\", \"messages\": []}"),
        );
        assert_eq!(r.status, 503, "{path}");
        assert_eq!(r.json()["error"]["type"], "api_error", "{}", r.text());
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("keys add")
        );
    }
    // Elsewhere, OpenAI's shape.
    chat(&server, &json!({"model": "m", "messages": []})).assert_openai_error(503);
}

#[test]
fn a_generation_is_looked_up_with_the_key_that_served_it() {
    let (_env, fake, server) = setup(2, &[]);
    fake.push(&key(1), Reply::chat_ok());
    let served = chat(&server, &json!({"model": "m", "messages": []}));
    assert_eq!(served.status, 200);
    let generation = served.json()["id"].as_str().unwrap().to_owned();
    // Key 1 fails once: key 2 serves, and becomes the key in use.
    fake.push(&key(1), Reply::server_error(502));
    fake.push(&key(2), Reply::chat_ok());
    let next = chat(&server, &json!({"model": "m", "messages": []}));
    assert_eq!(next.header("x-orproxy-key"), Some(key_id(&key(2)).as_str()));
    fake.set_default(
        &key(1),
        Reply::json(200, &json!({"data": {"id": generation}})),
    );
    fake.set_default(
        &key(2),
        Reply::json(
            404,
            &json!({"error": {"message": "not found", "code": 404}}),
        ),
    );
    // A generation orproxy never saw goes to the key in use.
    let before = fake.requests().len();
    let r = request(
        "GET",
        &server.url("/v1/generation?id=gen-unknown"),
        &[],
        None,
    );
    assert_eq!(r.status, 404);
    assert_eq!(
        fake.requests()[before].header("authorization"),
        Some(format!("Bearer {}", key(2)).as_str())
    );
    // The one key 1 served goes to key 1.
    let before = fake.requests().len();
    let r = request(
        "GET",
        &server.url(&format!("/v1/generation?id={generation}")),
        &[],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let asked = &fake.requests()[before];
    assert_eq!(asked.path, "/api/v1/generation");
    assert_eq!(
        asked.query.as_deref(),
        Some(format!("id={generation}").as_str())
    );
    assert_eq!(
        asked.header("authorization"),
        Some(format!("Bearer {}", key(1)).as_str())
    );
}
