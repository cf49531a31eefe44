//! A scriptable fake of OpenRouter's HTTP API, for integration tests.
//!
//! Raw tokio TCP plus `httparse` (no web framework), so replies can misbehave at the
//! byte level. The server runs on its own thread with its own 2-worker multi-thread
//! tokio runtime: usable from plain `#[test]` and from inside `#[tokio::test]`.
//! Dropping the [`FakeOpenRouter`] shuts the runtime down and closes every connection.
//!
//! Reply selection for a request, by the bearer key of its `Authorization` header:
//! 1. `GET …/models`: built-in model list (no auth needed).
//! 2. `GET …/key` (also `…/auth/key`): the key-info table ([`FakeOpenRouter::set_key_info`]).
//! 3. anything else: the key's FIFO queue ([`FakeOpenRouter::push`]), else the key's
//!    sticky default ([`FakeOpenRouter::set_default`]), else the global fallback
//!    ([`FakeOpenRouter::set_fallback`], initially [`Reply::chat_ok`]). Requests without
//!    a bearer key get the fallback.
//!
//! Every request (built-in routes included) is recorded before it is answered.
//!
//! Model templating: any occurrence of [`MODEL_MARKER`] in a `Raw` body or in an SSE
//! `Bytes` or `Repeat` step is replaced, at reply time, by the request's JSON `model` field
//! (JSON-string-escaped, without quotes), or by `openrouter/auto` when there is none.
//!
//! Besides chat completions, the fake speaks OpenRouter's other two API skins
//! ([`Dialect`]): the Responses API (`/responses`) and Anthropic Messages (`/messages`).
//! The `Reply::*_in(dialect, ...)` constructors script each dialect's success, 429,
//! in-stream errors, cuts and slow preambles; [`Script`] builds any other stream event by
//! event. The reply still comes from the key's queue, not from the path.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// Placeholder replaced by the request's `model` at reply time (see module docs).
pub const MODEL_MARKER: &str = "__FAKE_OPENROUTER_MODEL__";
/// Used for [`MODEL_MARKER`] when the request names no model.
pub const DEFAULT_MODEL: &str = "openrouter/auto";
/// Content of the assistant message in [`Reply::chat_ok`].
pub const CHAT_OK_CONTENT: &str = "Hello from fake OpenRouter";

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 64 * 1024 * 1024;
const MAX_PENDING_WHILE_WATCHING: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------

/// A scripted answer.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Status, headers and body as given; the fake adds `Content-Length` (a given
    /// `Content-Length` or `Transfer-Encoding` header is dropped) and nothing else.
    Raw {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// `Transfer-Encoding: chunked`; `Content-Type: text/event-stream` and
    /// `Cache-Control: no-cache` unless given in `headers`. Each `SseStep::Bytes` is one
    /// chunk, verbatim (an empty one is skipped: it would end the body).
    Sse {
        status: u16,
        headers: Vec<(String, String)>,
        events: Vec<SseStep>,
        end: SseEnd,
    },
    /// Read the request, then send nothing; keep the socket open until the peer closes
    /// it or the fake is dropped.
    HangBeforeHeaders,
    /// Read the request, then close the socket with SO_LINGER 0 (the peer sees a RST).
    ResetBeforeHeaders,
    /// Write these bytes (not HTTP), then close.
    Garbage(Vec<u8>),
    /// Write these bytes verbatim (one or more whole HTTP answers, say an
    /// interim `103` then the final one), then keep the connection for the
    /// next request, as HTTP/1.1 keep-alive does.
    Wire(Vec<u8>),
    /// Wait (watching for the peer closing), then behave as the inner reply.
    DelayThen(Duration, Box<Reply>),
}

#[derive(Clone, Debug)]
pub enum SseStep {
    /// Written as one chunk, verbatim.
    Bytes(Vec<u8>),
    /// Pause (watching for the peer closing).
    Sleep(Duration),
    /// `bytes` written as one chunk, `times` times over: a large body generated on the fly
    /// (templated once, never held whole in memory).
    Repeat { bytes: Vec<u8>, times: usize },
}

#[derive(Clone, Debug)]
pub enum SseEnd {
    /// Terminating chunk `0\r\n\r\n` after the events; the connection stays usable.
    Done,
    /// Close the socket mid-body, without the terminating chunk.
    Cut,
    /// Stop sending, keep the socket open (until the peer closes or the fake drops).
    Stall,
    /// Close the socket mid-body with SO_LINGER 0 (the peer sees a RST).
    Reset,
}

/// What `GET …/key` answers for a key.
#[derive(Clone, Debug)]
pub enum KeyInfoReply {
    /// 200 `{"data": <this>}`.
    Ok(Value),
    /// 401 `{"error":{"message":"User not found.","code":401}}`.
    Invalid,
    /// Any scripted reply (e.g. a hang, a 500).
    Custom(Reply),
}

/// A request as the fake received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Query string without the `?`.
    pub query: Option<String>,
    /// Names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// Body, de-chunked when it came with `Transfer-Encoding: chunked`.
    pub body: Vec<u8>,
    /// From `Authorization: Bearer <key>`.
    pub key: Option<String>,
}

impl Recorded {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All values of a header (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Body parsed as JSON; panics with the body text when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "request body of {} {} is not JSON ({e}): {:?}",
                self.method,
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Body as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

// ---------------------------------------------------------------------------------------
// Reply constructors
// ---------------------------------------------------------------------------------------

static GEN_COUNTER: AtomicU64 = AtomicU64::new(1);

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn gen_id() -> String {
    format!(
        "gen-{}-fake{:06}",
        now_secs(),
        GEN_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn s(v: &str) -> String {
    v.to_string()
}

/// One SSE data event: `data: <compact json>\n\n`.
pub fn sse_event(value: &Value) -> Vec<u8> {
    format!("data: {value}\n\n").into_bytes()
}

/// One SSE data event with a raw payload: `data: <payload>\n\n`.
pub fn sse_data(payload: &str) -> Vec<u8> {
    format!("data: {payload}\n\n").into_bytes()
}

/// The OpenRouter keep-alive comment `: OPENROUTER PROCESSING\n\n`.
pub fn sse_processing_comment() -> Vec<u8> {
    b": OPENROUTER PROCESSING\n\n".to_vec()
}

/// The `data: [DONE]\n\n` terminator event.
pub fn sse_done() -> Vec<u8> {
    b"data: [DONE]\n\n".to_vec()
}

/// The data object `GET /key` returns for a key that has no entry in the key-info table.
pub fn default_key_info(key: &str) -> Value {
    let tail: String = {
        let chars: Vec<char> = key.chars().collect();
        chars[chars.len().saturating_sub(3)..].iter().collect()
    };
    json!({
        "label": format!("sk-or-v1-...{tail}"),
        "limit": null,
        "limit_remaining": null,
        "limit_reset": null,
        "usage": 0,
        "usage_daily": 0,
        "usage_weekly": 0,
        "usage_monthly": 0,
        "is_free_tier": true,
        "creator_user_id": null,
        "free_model_daily_requests": {"used": 0, "limit": 50, "remaining": 50},
        "rate_limit": {"requests": -1, "interval": "10s"}
    })
}

/// The body `GET …/models` answers with.
pub fn models_body() -> Value {
    let created = 1_733_500_000u64;
    json!({"data": [
        {
            "id": "meta-llama/llama-3.3-70b-instruct:free",
            "canonical_slug": "meta-llama/llama-3.3-70b-instruct",
            "name": "Meta: Llama 3.3 70B Instruct (free)",
            "created": created,
            "description": "Llama 3.3 70B, free variant.",
            "context_length": 131072,
            "architecture": {"modality": "text->text", "input_modalities": ["text"], "output_modalities": ["text"], "tokenizer": "Llama3", "instruct_type": null},
            "pricing": {"prompt": "0", "completion": "0", "request": "0", "image": "0"},
            "top_provider": {"context_length": 131072, "max_completion_tokens": null, "is_moderated": false},
            "per_request_limits": null,
            "supported_parameters": ["max_tokens", "temperature", "top_p", "stop", "seed", "tools", "tool_choice"]
        },
        {
            "id": "openai/gpt-4o",
            "canonical_slug": "openai/gpt-4o",
            "name": "OpenAI: GPT-4o",
            "created": 1_715_367_049u64,
            "description": "GPT-4o.",
            "context_length": 128000,
            "architecture": {"modality": "text+image->text", "input_modalities": ["text", "image", "file"], "output_modalities": ["text"], "tokenizer": "GPT", "instruct_type": null},
            "pricing": {"prompt": "0.0000025", "completion": "0.00001", "request": "0", "image": "0.003613"},
            "top_provider": {"context_length": 128000, "max_completion_tokens": 16384, "is_moderated": true},
            "per_request_limits": null,
            "supported_parameters": ["max_tokens", "temperature", "top_p", "stop", "seed", "tools", "tool_choice", "response_format"]
        }
    ]})
}

fn chunk_value(id: &str, created: u64, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": id,
        "provider": "FakeProvider",
        "model": MODEL_MARKER,
        "object": "chat.completion.chunk",
        "created": created,
        "choices": [{
            "index": 0,
            "delta": delta,
            "finish_reason": finish,
            "native_finish_reason": finish,
            "logprobs": null
        }]
    })
}

fn usage_value(id: &str, created: u64, completion_tokens: u64) -> Value {
    json!({
        "id": id,
        "provider": "FakeProvider",
        "model": MODEL_MARKER,
        "object": "chat.completion.chunk",
        "created": created,
        "choices": [],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": completion_tokens,
            "total_tokens": 12 + completion_tokens,
            "cost": 0,
            "is_byok": false,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0}
        }
    })
}

fn stream_error_value(id: &str, created: u64, message: &str, code: u16) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": MODEL_MARKER,
        "provider": "FakeProvider",
        "error": {"message": message, "code": code},
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]
    })
}

fn error_body(message: &str, code: u16) -> Value {
    json!({"error": {"message": message, "code": code}})
}

/// The start of a streamed chat: processing comment, role delta, one content
/// delta per word. Returns the stream's id and creation time with the steps.
fn chat_opening(words: &[&str]) -> (String, u64, Vec<SseStep>) {
    let (id, created) = (gen_id(), now_secs());
    let mut ev = vec![
        SseStep::Bytes(sse_processing_comment()),
        SseStep::Bytes(sse_event(&chunk_value(
            &id,
            created,
            json!({"role": "assistant", "content": ""}),
            None,
        ))),
    ];
    for w in words {
        ev.push(SseStep::Bytes(sse_event(&chunk_value(
            &id,
            created,
            json!({"content": w}),
            None,
        ))));
    }
    (id, created, ev)
}

impl Reply {
    /// 200 chat.completion whose content is [`CHAT_OK_CONTENT`]; model echoed from the request.
    pub fn chat_ok() -> Reply {
        Reply::chat_text(CHAT_OK_CONTENT)
    }

    /// 200 chat.completion with the given assistant content; model echoed from the request.
    pub fn chat_text(content: &str) -> Reply {
        let completion_tokens = content.split_whitespace().count().max(1) as u64;
        Reply::json(
            200,
            &json!({
                "id": gen_id(),
                "provider": "FakeProvider",
                "model": MODEL_MARKER,
                "object": "chat.completion",
                "created": now_secs(),
                "choices": [{
                    "logprobs": null,
                    "finish_reason": "stop",
                    "native_finish_reason": "stop",
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": null, "reasoning": null}
                }],
                "usage": {
                    "prompt_tokens": 12,
                    "completion_tokens": completion_tokens,
                    "total_tokens": 12 + completion_tokens
                }
            }),
        )
    }

    /// `status` with an `application/json` body.
    pub fn json(status: u16, value: &Value) -> Reply {
        Reply::json_with_headers(status, Vec::new(), value)
    }

    /// `status` with an `application/json` body and extra headers (a `Content-Type`
    /// among them replaces the default).
    pub fn json_with_headers(status: u16, headers: Vec<(String, String)>, value: &Value) -> Reply {
        let mut all = Vec::with_capacity(headers.len() + 1);
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        {
            all.push((s("Content-Type"), s("application/json")));
        }
        all.extend(headers);
        Reply::Raw {
            status,
            headers: all,
            body: value.to_string().into_bytes(),
        }
    }

    fn platform_rate_limit(message: &str, limit: &str, reset_ms: u64) -> Reply {
        let reset = reset_ms.to_string();
        Reply::json_with_headers(
            429,
            vec![
                (s("X-RateLimit-Limit"), s(limit)),
                (s("X-RateLimit-Remaining"), s("0")),
                (s("X-RateLimit-Reset"), reset.clone()),
            ],
            &json!({"error": {
                "message": message,
                "code": 429,
                "metadata": {
                    "headers": {
                        "X-RateLimit-Limit": limit,
                        "X-RateLimit-Remaining": "0",
                        "X-RateLimit-Reset": reset
                    },
                    "provider_name": null
                }
            }}),
        )
    }

    /// 429 `free-models-per-min` (limit 20), `X-RateLimit-Reset` = `reset_ms` (Unix ms)
    /// both as HTTP headers and in `error.metadata.headers`.
    pub fn rate_limit_per_min(reset_ms: u64) -> Reply {
        Reply::platform_rate_limit("Rate limit exceeded: free-models-per-min. ", "20", reset_ms)
    }

    /// 429 `free-models-per-day` (limit 50), `X-RateLimit-Reset` = `reset_ms` (Unix ms)
    /// both as HTTP headers and in `error.metadata.headers`.
    pub fn rate_limit_per_day(reset_ms: u64) -> Reply {
        Reply::platform_rate_limit(
            "Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day",
            "50",
            reset_ms,
        )
    }

    /// The Venice "Provider returned error" 429 (upstream provider limit), with
    /// `retry_after_seconds` in the metadata and an HTTP `Retry-After` header.
    pub fn provider_rate_limited(retry_after_secs: u64) -> Reply {
        Reply::json_with_headers(
            429,
            vec![(s("Retry-After"), retry_after_secs.to_string())],
            &json!({"error": {
                "message": "Provider returned error",
                "code": 429,
                "metadata": {
                    "raw": "meta-llama/llama-3.3-70b-instruct:free is temporarily rate-limited upstream. Please retry shortly, or add your own key to accumulate your rate limits: https://openrouter.ai/settings/integrations",
                    "provider_name": "Venice",
                    "is_byok": false,
                    "retry_after_seconds": retry_after_secs,
                    "headers": {"Retry-After": retry_after_secs.to_string()}
                }
            }}),
        )
    }

    /// 401 `{"error":{"message":"User not found.","code":401}}`.
    pub fn unauthorized() -> Reply {
        Reply::json(401, &error_body("User not found.", 401))
    }

    /// An OpenRouter-style error body with the given status (meant for 5xx, works for any).
    pub fn server_error(status: u16) -> Reply {
        let message = match status {
            500 => "Internal Server Error",
            502 => "Provider returned error",
            503 => "Service Unavailable: no available providers",
            504 => "Gateway Timeout",
            524 => "Provider timed out",
            529 => "Provider is overloaded",
            408 => "Request Timeout",
            _ => "Upstream error",
        };
        Reply::json(status, &error_body(message, status))
    }

    /// 200 SSE with the given steps, ending `Done`.
    pub fn sse(events: Vec<SseStep>) -> Reply {
        Reply::Sse {
            status: 200,
            headers: Vec::new(),
            events,
            end: SseEnd::Done,
        }
    }

    /// A streamed chat: processing comment, role delta, one content delta per word, a
    /// `finish_reason: "stop"` chunk, a usage event (empty `choices`), `data: [DONE]`.
    pub fn sse_chat(words: &[&str]) -> Reply {
        let (id, created, mut ev) = chat_opening(words);
        ev.push(SseStep::Bytes(sse_event(&chunk_value(
            &id,
            created,
            json!({"content": ""}),
            Some("stop"),
        ))));
        ev.push(SseStep::Bytes(sse_event(&usage_value(
            &id,
            created,
            words.len() as u64,
        ))));
        ev.push(SseStep::Bytes(sse_done()));
        Reply::sse(ev)
    }

    /// Like [`Reply::sse_chat`] with `n` content chunks `"chunk-{i} "` (i from 0),
    /// sleeping `pace` between consecutive content chunks.
    pub fn sse_chunks(n: usize, pace: Duration) -> Reply {
        let (id, created, mut ev) = chat_opening(&[]);
        for i in 0..n {
            if i > 0 && !pace.is_zero() {
                ev.push(SseStep::Sleep(pace));
            }
            ev.push(SseStep::Bytes(sse_event(&chunk_value(
                &id,
                created,
                json!({"content": format!("chunk-{i} ")}),
                None,
            ))));
        }
        ev.push(SseStep::Bytes(sse_event(&chunk_value(
            &id,
            created,
            json!({"content": ""}),
            Some("stop"),
        ))));
        ev.push(SseStep::Bytes(sse_event(&usage_value(
            &id, created, n as u64,
        ))));
        ev.push(SseStep::Bytes(sse_done()));
        Reply::sse(ev)
    }

    /// A large streamed chat, generated on the fly: role delta, then `n` content events of
    /// exactly `event_bytes` bytes each (`data: ...\n\n`, content padded with `x`; at least
    /// 128), a `finish_reason: "stop"` chunk, a usage event, `data: [DONE]`. The content events
    /// are one [`SseStep::Repeat`], so the fake never holds the whole body.
    pub fn sse_large(n: usize, event_bytes: usize) -> Reply {
        let (id, created) = (gen_id(), now_secs());
        let frame = |content: &str| {
            sse_event(
                &json!({"id": id, "object": "chat.completion.chunk", "created": created,
                "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]}),
            )
        };
        let overhead = frame("").len();
        assert!(
            event_bytes >= overhead.max(128),
            "events of at least 128 bytes"
        );
        let event = frame(&"x".repeat(event_bytes - overhead));
        debug_assert_eq!(event.len(), event_bytes);
        Reply::sse(vec![
            SseStep::Bytes(sse_processing_comment()),
            SseStep::Bytes(sse_event(&chunk_value(
                &id,
                created,
                json!({"role": "assistant", "content": ""}),
                None,
            ))),
            SseStep::Repeat {
                bytes: event,
                times: n,
            },
            SseStep::Bytes(sse_event(&chunk_value(
                &id,
                created,
                json!({"content": ""}),
                Some("stop"),
            ))),
            SseStep::Bytes(sse_event(&usage_value(&id, created, n as u64))),
            SseStep::Bytes(sse_done()),
        ])
    }

    /// 200 SSE: comment, role delta, one delta per word, then the mid-stream error event
    /// (`error.code` 502, `finish_reason: "error"`), then the body ends without `[DONE]`.
    pub fn sse_error_after(words: &[&str], message: &str) -> Reply {
        let (id, created, mut ev) = chat_opening(words);
        ev.push(SseStep::Bytes(sse_event(&stream_error_value(
            &id, created, message, 502,
        ))));
        Reply::sse(ev)
    }

    /// 200 SSE: comment, then the error event (with `code`) as the first data event; the
    /// body ends without `[DONE]`.
    pub fn sse_first_event_error(message: &str, code: u16) -> Reply {
        let (id, created) = (gen_id(), now_secs());
        Reply::sse(vec![
            SseStep::Bytes(sse_processing_comment()),
            SseStep::Bytes(sse_event(&stream_error_value(&id, created, message, code))),
        ])
    }

    /// `DelayThen(delay, self)`.
    pub fn delayed(self, delay: Duration) -> Reply {
        Reply::DelayThen(delay, Box::new(self))
    }

    /// This reply with its SSE end replaced (no-op for non-SSE replies).
    pub fn with_end(self, new_end: SseEnd) -> Reply {
        match self {
            Reply::Sse {
                status,
                headers,
                events,
                ..
            } => Reply::Sse {
                status,
                headers,
                events,
                end: new_end,
            },
            Reply::DelayThen(d, inner) => Reply::DelayThen(d, Box::new(inner.with_end(new_end))),
            other => other,
        }
    }

    fn is_streaming(&self) -> bool {
        match self {
            Reply::Sse { .. } => true,
            Reply::DelayThen(_, inner) => inner.is_streaming(),
            _ => false,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The three API skins: chat completions, the Responses API, Anthropic Messages
// ---------------------------------------------------------------------------------------

/// Usage cost (credits) the Responses and Messages replies report, as OpenRouter adds it.
pub const FAKE_COST: f64 = 0.000_42;
/// Input tokens every reply reports.
pub const FAKE_INPUT_TOKENS: u64 = 12;

/// One of OpenRouter's API skins, each with its own bodies, stream events and errors
/// (`docs/openrouter.md`, "Three API skins").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `POST /chat/completions`: `data:` events only; whole after `data: [DONE]`.
    Chat,
    /// `POST /responses`: `event: response.*` events carrying `type` and
    /// `sequence_number`; whole after `response.completed`; no `[DONE]`.
    Responses,
    /// `POST /messages` (Anthropic Messages): `event: message_start` ... `message_stop`;
    /// errors in the Anthropic envelope `{"type":"error","error":{"type","message"}}`.
    Messages,
}

impl Dialect {
    /// The endpoint's path as the fake receives it (under `/api/v1`).
    pub fn upstream_path(self) -> &'static str {
        match self {
            Dialect::Chat => "/api/v1/chat/completions",
            Dialect::Responses => "/api/v1/responses",
            Dialect::Messages => "/api/v1/messages",
        }
    }
}

/// What went wrong, said in each dialect's words. Every error object also carries
/// OpenRouter's canonical `error_type` (in `metadata.error_type`, where the chat shape
/// has it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Chat `code` 429; Responses `rate_limit_exceeded`; Messages `rate_limit_error`;
    /// `error_type` `rate_limit_exceeded`.
    RateLimit,
    /// Chat `code` 529; Responses `server_error`; Messages `overloaded_error`;
    /// `error_type` `provider_overloaded`.
    Overloaded,
    /// Chat `code` 502; Responses `server_error`; Messages `api_error`;
    /// `error_type` `server`.
    Server,
}

impl Failure {
    /// Chat's numeric `error.code`.
    pub fn chat_code(self) -> u16 {
        match self {
            Failure::RateLimit => 429,
            Failure::Overloaded => 529,
            Failure::Server => 502,
        }
    }

    /// The Responses API's string `code`.
    pub fn responses_code(self) -> &'static str {
        match self {
            Failure::RateLimit => "rate_limit_exceeded",
            Failure::Overloaded | Failure::Server => "server_error",
        }
    }

    /// The Anthropic `error.type`.
    pub fn messages_type(self) -> &'static str {
        match self {
            Failure::RateLimit => "rate_limit_error",
            Failure::Overloaded => "overloaded_error",
            Failure::Server => "api_error",
        }
    }

    /// OpenRouter's canonical `error_type`, the same in every skin.
    pub fn error_type(self) -> &'static str {
        match self {
            Failure::RateLimit => "rate_limit_exceeded",
            Failure::Overloaded => "provider_overloaded",
            Failure::Server => "server",
        }
    }
}

/// One SSE event with an event name: `event: <name>\ndata: <compact json>\n\n`.
pub fn sse_named_event(name: &str, value: &Value) -> Vec<u8> {
    format!("event: {name}\ndata: {value}\n\n").into_bytes()
}

fn short_id() -> String {
    format!("{:024x}", GEN_COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A streamed answer in one dialect, built event by event into a [`Reply::Sse`]:
/// `Script::new(Dialect::Messages).preamble().words(&["Hi"]).close().reply()`.
///
/// - `preamble`: `: OPENROUTER PROCESSING`, then the events that carry no content:
///   Responses `response.created`, `response.in_progress`; Messages `message_start`;
///   chat none.
/// - `words`: content, one delta event per word. The first call opens the output:
///   Responses `response.output_item.added`, `response.content_part.added`; Messages
///   `content_block_start`, `ping`; chat the role delta.
/// - `close`: the events that make the stream whole, with the usage: Responses
///   `response.output_text.done`, `response.content_part.done`,
///   `response.output_item.done`, `response.completed`; Messages `content_block_stop`,
///   `message_delta`, `message_stop`; chat the `finish_reason` chunk, the usage chunk and
///   `data: [DONE]`.
/// - `fail`: the dialect's failure event: Responses `response.failed`; Messages `error`;
///   chat the error chunk (`finish_reason: "error"`). `error_event`: the Responses `error`
///   event (the others: as `fail`).
/// - `half_event`: the first half of one more content event (for a cut inside an event).
#[derive(Clone, Debug)]
pub struct Script {
    dialect: Dialect,
    /// Chat's completion id, the Responses `resp_...` or the Messages `msg_...`.
    id: String,
    /// The Responses output item's `msg_...`.
    item_id: String,
    created: u64,
    /// The next Responses `sequence_number`.
    seq: u64,
    /// Content sent so far.
    text: String,
    words: u64,
    opened: bool,
    steps: Vec<SseStep>,
}

impl Script {
    pub fn new(dialect: Dialect) -> Script {
        let id = match dialect {
            Dialect::Chat => gen_id(),
            Dialect::Responses => format!("resp_{}", short_id()),
            Dialect::Messages => format!("msg_{}", short_id()),
        };
        Script {
            dialect,
            id,
            item_id: format!("msg_{}", short_id()),
            created: now_secs(),
            seq: 0,
            text: String::new(),
            words: 0,
            opened: false,
            steps: Vec::new(),
        }
    }

    /// The stream's id: the Responses `response.id`, the Messages `message.id`, the
    /// chat chunks' `id`.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn push(&mut self, bytes: Vec<u8>) {
        self.steps.push(SseStep::Bytes(bytes));
    }

    /// A Responses event: `type` and `sequence_number` added to `fields`.
    fn responses_event(&mut self, ty: &str, mut fields: Value) -> Vec<u8> {
        fields["type"] = json!(ty);
        fields["sequence_number"] = json!(self.seq);
        self.seq += 1;
        sse_named_event(ty, &fields)
    }

    /// A Messages event: `type` added to `fields`.
    fn messages_event(ty: &str, mut fields: Value) -> Vec<u8> {
        fields["type"] = json!(ty);
        sse_named_event(ty, &fields)
    }

    fn responses_usage(&self) -> Value {
        responses_usage(self.words)
    }

    /// The output item with the text so far.
    fn responses_item(&self, status: &str) -> Value {
        json!({
            "type": "message",
            "id": self.item_id,
            "status": status,
            "role": "assistant",
            "content": [{"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}]
        })
    }

    fn responses_object(&self, status: &str, output: Value, usage: Value, error: Value) -> Value {
        response_object(&self.id, self.created, status, output, usage, error)
    }

    /// An SSE comment line, `: <text>\n\n`.
    pub fn comment(mut self, text: &str) -> Script {
        self.push(format!(": {text}\n\n").into_bytes());
        self
    }

    /// Pause (the fake sleeps, watching for the peer closing).
    pub fn pause(mut self, d: Duration) -> Script {
        self.steps.push(SseStep::Sleep(d));
        self
    }

    /// `: OPENROUTER PROCESSING` and the dialect's preamble events.
    pub fn preamble(self) -> Script {
        self.preamble_paced(Duration::ZERO)
    }

    /// Like [`Script::preamble`], pausing `pace` after the comment and after each event.
    pub fn preamble_paced(mut self, pace: Duration) -> Script {
        let pause = |s: &mut Script| {
            if !pace.is_zero() {
                s.steps.push(SseStep::Sleep(pace));
            }
        };
        self.push(sse_processing_comment());
        pause(&mut self);
        match self.dialect {
            Dialect::Chat => {}
            Dialect::Responses => {
                for (ty, status) in [
                    ("response.created", "in_progress"),
                    ("response.in_progress", "in_progress"),
                ] {
                    let response =
                        self.responses_object(status, json!([]), Value::Null, Value::Null);
                    let ev = self.responses_event(ty, json!({"response": response}));
                    self.push(ev);
                    pause(&mut self);
                }
            }
            Dialect::Messages => {
                let ev = Script::messages_event(
                    "message_start",
                    json!({"message": {
                        "id": self.id,
                        "type": "message",
                        "role": "assistant",
                        "model": MODEL_MARKER,
                        "content": [],
                        "stop_reason": null,
                        "stop_sequence": null,
                        "usage": {
                            "input_tokens": FAKE_INPUT_TOKENS,
                            "output_tokens": 1,
                            "cache_creation_input_tokens": 0,
                            "cache_read_input_tokens": 0
                        }
                    }}),
                );
                self.push(ev);
                pause(&mut self);
            }
        }
        self
    }

    fn open(&mut self) {
        if self.opened {
            return;
        }
        self.opened = true;
        match self.dialect {
            Dialect::Chat => {
                let ev = sse_event(&chunk_value(
                    &self.id,
                    self.created,
                    json!({"role": "assistant", "content": ""}),
                    None,
                ));
                self.push(ev);
            }
            Dialect::Responses => {
                let mut item = self.responses_item("in_progress");
                item["content"] = json!([]);
                let ev = self.responses_event(
                    "response.output_item.added",
                    json!({"output_index": 0, "item": item}),
                );
                self.push(ev);
                let ev = self.responses_event(
                    "response.content_part.added",
                    json!({
                        "item_id": self.item_id,
                        "output_index": 0,
                        "content_index": 0,
                        "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                    }),
                );
                self.push(ev);
            }
            Dialect::Messages => {
                self.push(Script::messages_event(
                    "content_block_start",
                    json!({"index": 0, "content_block": {"type": "text", "text": ""}}),
                ));
                self.push(Script::messages_event("ping", json!({})));
            }
        }
    }

    /// The event that carries `word` as content.
    fn delta(&mut self, word: &str) -> Vec<u8> {
        match self.dialect {
            Dialect::Chat => sse_event(&chunk_value(
                &self.id,
                self.created,
                json!({"content": word}),
                None,
            )),
            Dialect::Responses => {
                let fields = json!({
                    "item_id": self.item_id,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": word,
                    "logprobs": []
                });
                self.responses_event("response.output_text.delta", fields)
            }
            Dialect::Messages => Script::messages_event(
                "content_block_delta",
                json!({"index": 0, "delta": {"type": "text_delta", "text": word}}),
            ),
        }
    }

    /// One content event per word (opening the output first).
    pub fn words(mut self, words: &[&str]) -> Script {
        self.open();
        for w in words {
            let ev = self.delta(w);
            self.push(ev);
            self.text.push_str(w);
            self.words += 1;
        }
        self
    }

    /// The first half of one more content event (`word`'s), ending inside its JSON.
    pub fn half_event(mut self, word: &str) -> Script {
        self.open();
        let mut ev = self.delta(word);
        ev.truncate(ev.len() / 2);
        self.push(ev);
        self
    }

    /// The events that make the stream whole, with its usage (and, for chat, `[DONE]`).
    pub fn close(mut self) -> Script {
        self.open();
        match self.dialect {
            Dialect::Chat => {
                let ev = sse_event(&chunk_value(
                    &self.id,
                    self.created,
                    json!({"content": ""}),
                    Some("stop"),
                ));
                self.push(ev);
                let ev = sse_event(&usage_value(&self.id, self.created, self.words));
                self.push(ev);
                self.push(sse_done());
            }
            Dialect::Responses => {
                let text = self.text.clone();
                let item_id = self.item_id.clone();
                let ev = self.responses_event(
                    "response.output_text.done",
                    json!({"item_id": item_id, "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
                );
                self.push(ev);
                let ev = self.responses_event(
                    "response.content_part.done",
                    json!({
                        "item_id": item_id,
                        "output_index": 0,
                        "content_index": 0,
                        "part": {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
                    }),
                );
                self.push(ev);
                let item = self.responses_item("completed");
                let ev = self.responses_event(
                    "response.output_item.done",
                    json!({"output_index": 0, "item": item.clone()}),
                );
                self.push(ev);
                let response = self.responses_object(
                    "completed",
                    json!([item]),
                    self.responses_usage(),
                    Value::Null,
                );
                let ev = self.responses_event("response.completed", json!({"response": response}));
                self.push(ev);
            }
            Dialect::Messages => {
                self.push(Script::messages_event(
                    "content_block_stop",
                    json!({"index": 0}),
                ));
                self.push(Script::messages_event(
                    "message_delta",
                    json!({
                        "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                        "usage": {"output_tokens": self.words, "cost": FAKE_COST}
                    }),
                ));
                self.push(Script::messages_event("message_stop", json!({})));
            }
        }
        self
    }

    /// The dialect's failure event: Responses `response.failed` (with the output so
    /// far), Messages `error`, chat the error chunk.
    pub fn fail(mut self, failure: Failure, message: &str) -> Script {
        let metadata = json!({"error_type": failure.error_type()});
        match self.dialect {
            Dialect::Chat => {
                let mut v =
                    stream_error_value(&self.id, self.created, message, failure.chat_code());
                v["error"]["metadata"] = metadata;
                self.push(sse_event(&v));
            }
            Dialect::Responses => {
                let output = if self.opened {
                    json!([self.responses_item("incomplete")])
                } else {
                    json!([])
                };
                let response = self.responses_object(
                    "failed",
                    output,
                    Value::Null,
                    json!({"code": failure.responses_code(), "message": message, "metadata": metadata}),
                );
                let ev = self.responses_event("response.failed", json!({"response": response}));
                self.push(ev);
            }
            Dialect::Messages => self.push(messages_error_event(failure, message)),
        }
        self
    }

    /// The Responses API's `error` event, as the OpenAI SDKs type it
    /// (`{"type":"error","code","message","param","sequence_number"}`), with OpenRouter's
    /// `metadata.error_type`. Other dialects: as [`Script::fail`].
    pub fn error_event(mut self, failure: Failure, message: &str) -> Script {
        if self.dialect != Dialect::Responses {
            return self.fail(failure, message);
        }
        let ev = self.responses_event(
            "error",
            json!({
                "code": failure.responses_code(),
                "message": message,
                "param": null,
                "metadata": {"error_type": failure.error_type()}
            }),
        );
        self.push(ev);
        self
    }

    /// The steps so far.
    pub fn steps(self) -> Vec<SseStep> {
        self.steps
    }

    /// A 200 SSE reply of these steps that ends as `end` says.
    pub fn reply_ending(self, end: SseEnd) -> Reply {
        Reply::Sse {
            status: 200,
            headers: Vec::new(),
            events: self.steps,
            end,
        }
    }

    /// A 200 SSE reply of these steps, ending cleanly ([`SseEnd::Done`]).
    pub fn reply(self) -> Reply {
        self.reply_ending(SseEnd::Done)
    }
}

fn responses_usage(output_tokens: u64) -> Value {
    json!({
        "input_tokens": FAKE_INPUT_TOKENS,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": FAKE_INPUT_TOKENS + output_tokens,
        "cost": FAKE_COST,
        "is_byok": false
    })
}

fn response_object(
    id: &str,
    created: u64,
    status: &str,
    output: Value,
    usage: Value,
    error: Value,
) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": error,
        "incomplete_details": null,
        "instructions": null,
        "max_output_tokens": null,
        "model": MODEL_MARKER,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        "store": false,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "metadata": {}
    })
}

/// The Anthropic error envelope, `{"type":"error","error":{"type","message"}}`, with
/// OpenRouter's `metadata` (its `error_type`, plus `extra`'s fields) inside `error`.
fn messages_error_value(failure: Failure, message: &str, extra: Value) -> Value {
    let mut metadata = json!({"error_type": failure.error_type()});
    if let (Some(m), Value::Object(extra)) = (metadata.as_object_mut(), extra) {
        m.extend(extra);
    }
    json!({
        "type": "error",
        "error": {"type": failure.messages_type(), "message": message, "metadata": metadata}
    })
}

/// The Messages `event: error` in the Anthropic envelope.
pub fn messages_error_event(failure: Failure, message: &str) -> Vec<u8> {
    sse_named_event(
        "error",
        &messages_error_value(failure, message, Value::Null),
    )
}

impl Reply {
    /// 200 with a whole answer of `content` in the dialect: chat `chat.completion`,
    /// Responses `response` (`output` and `usage`), Messages `message` (`content` and
    /// `usage`, `stop_reason: "end_turn"`). Model echoed from the request.
    pub fn text_in(dialect: Dialect, content: &str) -> Reply {
        let output_tokens = content.split_whitespace().count().max(1) as u64;
        match dialect {
            Dialect::Chat => Reply::chat_text(content),
            Dialect::Responses => Reply::json(
                200,
                &response_object(
                    &format!("resp_{}", short_id()),
                    now_secs(),
                    "completed",
                    json!([{
                        "type": "message",
                        "id": format!("msg_{}", short_id()),
                        "status": "completed",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": content, "annotations": [], "logprobs": []}]
                    }]),
                    responses_usage(output_tokens),
                    Value::Null,
                ),
            ),
            Dialect::Messages => Reply::json(
                200,
                &json!({
                    "id": format!("msg_{}", short_id()),
                    "type": "message",
                    "role": "assistant",
                    "model": MODEL_MARKER,
                    "content": [{"type": "text", "text": content}],
                    "stop_reason": "end_turn",
                    "stop_sequence": null,
                    "usage": {
                        "input_tokens": FAKE_INPUT_TOKENS,
                        "output_tokens": output_tokens,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                        "cost": FAKE_COST
                    }
                }),
            ),
        }
    }

    /// [`Reply::text_in`] with [`CHAT_OK_CONTENT`].
    pub fn ok_in(dialect: Dialect) -> Reply {
        Reply::text_in(dialect, CHAT_OK_CONTENT)
    }

    /// A whole stream in the dialect: preamble, one content event per word, the closing
    /// events with the usage (see [`Script`]).
    pub fn sse_in(dialect: Dialect, words: &[&str]) -> Reply {
        Script::new(dialect).preamble().words(words).close().reply()
    }

    /// Like [`Reply::sse_in`], pausing `pace` after the comment and after each preamble
    /// event: an upstream slow to start (long reasoning).
    pub fn sse_slow_preamble_in(dialect: Dialect, words: &[&str], pace: Duration) -> Reply {
        Script::new(dialect)
            .preamble_paced(pace)
            .words(words)
            .close()
            .reply()
    }

    /// 429 `free-models-per-min` (limit 20) in the dialect's error envelope (chat and
    /// Responses: OpenRouter's `{"error":{"message","code":429,"metadata"}}`; Messages:
    /// `{"type":"error","error":{"type":"rate_limit_error","message","metadata"}}`),
    /// `X-RateLimit-*` headers with `X-RateLimit-Reset` = `reset_ms` (Unix ms), also in
    /// `metadata.headers`.
    pub fn rate_limit_per_min_in(dialect: Dialect, reset_ms: u64) -> Reply {
        if dialect != Dialect::Messages {
            return Reply::rate_limit_per_min(reset_ms);
        }
        let reset = reset_ms.to_string();
        let headers = json!({
            "X-RateLimit-Limit": "20",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": reset
        });
        Reply::json_with_headers(
            429,
            vec![
                (s("X-RateLimit-Limit"), s("20")),
                (s("X-RateLimit-Remaining"), s("0")),
                (s("X-RateLimit-Reset"), reset.clone()),
            ],
            &messages_error_value(
                Failure::RateLimit,
                "Rate limit exceeded: free-models-per-min. ",
                json!({"headers": headers, "provider_name": null}),
            ),
        )
    }

    /// `status` with the dialect's error body for `failure` (Messages: the Anthropic
    /// envelope; chat and Responses: OpenRouter's `{"error":{"message","code"}}`).
    pub fn error_in(dialect: Dialect, status: u16, failure: Failure, message: &str) -> Reply {
        match dialect {
            Dialect::Messages => {
                Reply::json(status, &messages_error_value(failure, message, Value::Null))
            }
            Dialect::Chat | Dialect::Responses => Reply::json(
                status,
                &json!({"error": {
                    "message": message,
                    "code": status,
                    "metadata": {"error_type": failure.error_type()}
                }}),
            ),
        }
    }

    /// 200 SSE whose first event (after `: OPENROUTER PROCESSING`) is the error:
    /// Responses `error`, Messages `error`, chat the error chunk. The body then ends.
    pub fn sse_first_event_error_in(dialect: Dialect, failure: Failure, message: &str) -> Reply {
        Script::new(dialect)
            .comment("OPENROUTER PROCESSING")
            .error_event(failure, message)
            .reply()
    }

    /// 200 SSE: the preamble, then the dialect's failure event (Responses
    /// `response.created`, `response.in_progress`, `response.failed`; Messages
    /// `message_start`, `error`). The body then ends.
    pub fn sse_error_after_preamble_in(dialect: Dialect, failure: Failure, message: &str) -> Reply {
        Script::new(dialect)
            .preamble()
            .fail(failure, message)
            .reply()
    }

    /// Like [`Reply::sse_error_after_preamble_in`] with the Responses `error` event in
    /// place of `response.failed` (the same for the other dialects).
    pub fn sse_error_event_after_preamble_in(
        dialect: Dialect,
        failure: Failure,
        message: &str,
    ) -> Reply {
        Script::new(dialect)
            .preamble()
            .error_event(failure, message)
            .reply()
    }

    /// 200 SSE: preamble, one content event per word, then the upstream's own failure
    /// event mid-stream; the body then ends without the closing events.
    pub fn sse_error_after_in(
        dialect: Dialect,
        words: &[&str],
        failure: Failure,
        message: &str,
    ) -> Reply {
        Script::new(dialect)
            .preamble()
            .words(words)
            .fail(failure, message)
            .reply()
    }

    /// 200 SSE: preamble, one content event per word, then the connection is closed at
    /// an event boundary, mid-body ([`SseEnd::Cut`]).
    pub fn sse_cut_after_in(dialect: Dialect, words: &[&str]) -> Reply {
        Script::new(dialect)
            .preamble()
            .words(words)
            .reply_ending(SseEnd::Cut)
    }

    /// 200 SSE: preamble, one content event per word, the first half of one more
    /// content event, then the connection is closed mid-body ([`SseEnd::Cut`]).
    pub fn sse_cut_inside_in(dialect: Dialect, words: &[&str]) -> Reply {
        Script::new(dialect)
            .preamble()
            .words(words)
            .half_event("lost")
            .reply_ending(SseEnd::Cut)
    }

    /// 200 SSE: preamble, one content event per word, then a clean end of the body
    /// (terminating chunk) without the closing events: no `response.completed`, no
    /// `message_stop`, no `[DONE]`.
    pub fn sse_unclosed_in(dialect: Dialect, words: &[&str]) -> Reply {
        Script::new(dialect).preamble().words(words).reply()
    }
}

// ---------------------------------------------------------------------------------------
// The server handle
// ---------------------------------------------------------------------------------------

struct Inner {
    queues: HashMap<String, VecDeque<Reply>>,
    defaults: HashMap<String, Reply>,
    fallback: Reply,
    key_info: HashMap<String, KeyInfoReply>,
    requests: Vec<Recorded>,
    closed_early: usize,
}

struct Shared {
    inner: Mutex<Inner>,
    changed: Condvar,
    open: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note_closed_early(&self) {
        self.lock().closed_early += 1;
        self.changed.notify_all();
    }

    /// Wait (polling in short slices) until `done` holds; returns whether it did.
    fn wait_until(&self, timeout: Duration, mut done: impl FnMut(&Inner) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut g = self.lock();
        loop {
            if done(&g) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let slice = (deadline - now).min(Duration::from_millis(20));
            g = match self.changed.wait_timeout(g, slice) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

/// The fake server. Dropping it stops the runtime and closes every connection.
pub struct FakeOpenRouter {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeOpenRouter {
    /// Bind 127.0.0.1:0 and start serving on a dedicated thread.
    pub fn start() -> FakeOpenRouter {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("fake OpenRouter: bind 127.0.0.1:0");
        FakeOpenRouter::start_on(std_listener)
    }

    /// Start serving on a listener the caller bound (e.g. on a port that refused
    /// connections until now).
    pub fn start_on(std_listener: std::net::TcpListener) -> FakeOpenRouter {
        std_listener
            .set_nonblocking(true)
            .expect("fake OpenRouter: set_nonblocking");
        let addr = std_listener
            .local_addr()
            .expect("fake OpenRouter: local_addr");
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                queues: HashMap::new(),
                defaults: HashMap::new(),
                fallback: Reply::chat_ok(),
                key_info: HashMap::new(),
                requests: Vec::new(),
                closed_early: 0,
            }),
            changed: Condvar::new(),
            open: AtomicUsize::new(0),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fake-openrouter-{}", addr.port()))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("fake-openrouter-worker")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("listener: {e}")));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    tokio::select! {
                        _ = accept_loop(listener, thread_shared) => {}
                        _ = rx => {}
                    }
                });
                // Dropping the runtime drops every connection task, closing their sockets.
                rt.shutdown_timeout(Duration::from_secs(2));
            })
            .expect("fake OpenRouter: spawn thread");
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("fake OpenRouter failed to start: {e}"),
            Err(_) => panic!("fake OpenRouter thread died while starting"),
        }
        FakeOpenRouter {
            addr,
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/api/v1`
    pub fn base_url(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    /// Queue a reply for requests with `Authorization: Bearer {key}` (FIFO, consumed).
    pub fn push(&self, key: &str, reply: Reply) {
        self.shared
            .lock()
            .queues
            .entry(key.to_string())
            .or_default()
            .push_back(reply);
    }

    /// Sticky reply for `key` when its queue is empty.
    pub fn set_default(&self, key: &str, reply: Reply) {
        self.shared.lock().defaults.insert(key.to_string(), reply);
    }

    /// Forget `key`'s sticky default.
    pub fn clear_default(&self, key: &str) {
        self.shared.lock().defaults.remove(key);
    }

    /// Reply for any key with neither queue nor default (initially [`Reply::chat_ok`]).
    pub fn set_fallback(&self, reply: Reply) {
        self.shared.lock().fallback = reply;
    }

    /// Replies still queued for `key`.
    pub fn queued(&self, key: &str) -> usize {
        self.shared.lock().queues.get(key).map_or(0, |q| q.len())
    }

    /// What `GET …/key` answers for `key`.
    pub fn set_key_info(&self, key: &str, info: KeyInfoReply) {
        self.shared.lock().key_info.insert(key.to_string(), info);
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// Requests whose bearer key was `key`.
    pub fn requests_for(&self, key: &str) -> Vec<Recorded> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.key.as_deref() == Some(key))
            .cloned()
            .collect()
    }

    /// Number of requests received so far.
    pub fn request_count(&self) -> usize {
        self.shared.lock().requests.len()
    }

    /// Block until at least `n` requests arrived; panics on timeout listing what came.
    pub fn wait_requests(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        if self.shared.wait_until(timeout, |i| i.requests.len() >= n) {
            return self.requests();
        }
        let got = self.requests();
        let list: Vec<String> = got
            .iter()
            .map(|r| format!("{} {} key={:?}", r.method, r.path, r.key))
            .collect();
        panic!(
            "fake OpenRouter: timed out after {timeout:?} waiting for {n} request(s); got {}: {list:?}",
            got.len()
        );
    }

    /// TCP connections currently open to the fake.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Block until at most `max` connections are open; false on timeout.
    pub fn wait_open_connections_at_most(&self, max: usize, timeout: Duration) -> bool {
        self.shared
            .wait_until(timeout, |_| self.shared.open.load(Ordering::SeqCst) <= max)
    }

    /// True once (at least one) streaming reply's connection was closed by the peer
    /// before the fake finished sending it; false on timeout.
    pub fn wait_stream_closed(&self, timeout: Duration) -> bool {
        self.shared.wait_until(timeout, |i| i.closed_early > 0)
    }

    /// Count of streaming replies whose connection the peer closed before the fake
    /// finished sending (including during a `DelayThen` before an SSE reply, and
    /// during `SseEnd::Stall`).
    pub fn streams_closed_early(&self) -> usize {
        self.shared.lock().closed_early
    }
}

impl Drop for FakeOpenRouter {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------------------

struct ConnGuard(Arc<Shared>);

impl ConnGuard {
    fn new(shared: Arc<Shared>) -> ConnGuard {
        shared.open.fetch_add(1, Ordering::SeqCst);
        shared.changed.notify_all();
        ConnGuard(shared)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_all();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let guard = ConnGuard::new(shared.clone());
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    handle_conn(stream, shared).await;
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

struct ParsedRequest {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    keep_alive: bool,
}

enum ReadError {
    /// Connection closed or failed.
    Closed,
    /// Answer with this status and close.
    Reject(u16, &'static str),
}

/// Why a reply ended the connection, or that it may go on.
enum After {
    KeepAlive,
    Close,
    /// Close with SO_LINGER 0 (RST).
    Reset,
}

async fn handle_conn(mut stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let (mut rd, mut wr) = stream.split();
        let req = match read_request(&mut rd, &mut wr, &mut buf).await {
            Ok(Some(r)) => r,
            Ok(None) | Err(ReadError::Closed) => return,
            Err(ReadError::Reject(status, msg)) => {
                let body = error_body(msg, status).to_string();
                let head = format!(
                    "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    reason(status),
                    body.len()
                );
                let _ = wr.write_all(head.as_bytes()).await;
                let _ = wr.write_all(body.as_bytes()).await;
                let _ = wr.flush().await;
                return;
            }
        };
        let keep_alive = req.keep_alive;
        let (reply, model) = choose_reply(&shared, req);
        match serve(
            reply, &model, keep_alive, &mut rd, &mut wr, &mut buf, &shared,
        )
        .await
        {
            After::KeepAlive => continue,
            After::Close => {
                let _ = wr.flush().await;
                return;
            }
            After::Reset => {
                let _ = stream.set_zero_linger();
                return;
            }
        }
    }
}

fn choose_reply(shared: &Shared, req: ParsedRequest) -> (Reply, String) {
    let key = req
        .headers
        .iter()
        .find(|(n, _)| n == "authorization")
        .and_then(|(_, v)| bearer(v));
    let model = serde_json::from_slice::<Value>(&req.body)
        .ok()
        .and_then(|v| v.get("model").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_else(|| DEFAULT_MODEL.to_string());
    let is_get = req.method.eq_ignore_ascii_case("GET");
    let path = req.path.trim_end_matches('/').to_string();
    let recorded = Recorded {
        method: req.method,
        path: req.path,
        query: req.query,
        headers: req.headers,
        body: req.body,
        key: key.clone(),
    };
    let mut g = shared.lock();
    g.requests.push(recorded);
    let reply = if is_get && path.ends_with("/models") {
        Reply::json(200, &models_body())
    } else if is_get && path.ends_with("/key") {
        match key.as_deref() {
            None => Reply::json(401, &error_body("No auth credentials found", 401)),
            Some(k) => match g.key_info.get(k) {
                Some(KeyInfoReply::Ok(v)) => Reply::json(200, &json!({"data": v})),
                Some(KeyInfoReply::Invalid) => Reply::unauthorized(),
                Some(KeyInfoReply::Custom(r)) => r.clone(),
                None => Reply::json(200, &json!({"data": default_key_info(k)})),
            },
        }
    } else {
        let queued = key
            .as_deref()
            .and_then(|k| g.queues.get_mut(k))
            .and_then(|q| q.pop_front());
        match queued {
            Some(r) => r,
            None => match key.as_deref().and_then(|k| g.defaults.get(k)) {
                Some(r) => r.clone(),
                None => g.fallback.clone(),
            },
        }
    };
    drop(g);
    shared.changed.notify_all();
    let escaped = serde_json::to_string(&model).unwrap_or_else(|_| format!("\"{DEFAULT_MODEL}\""));
    let escaped = escaped[1..escaped.len() - 1].to_string();
    (reply, escaped)
}

fn bearer(v: &str) -> Option<String> {
    let v = v.trim();
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let k = rest.trim();
    (!k.is_empty()).then(|| k.to_string())
}

fn find_subslice(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn template(bytes: &[u8], model: &str) -> Vec<u8> {
    let marker = MODEL_MARKER.as_bytes();
    if find_subslice(bytes, marker).is_none() {
        return bytes.to_vec();
    }
    let mut out = Vec::with_capacity(bytes.len() + 32);
    let mut rest = bytes;
    while let Some(i) = find_subslice(rest, marker) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(model.as_bytes());
        rest = &rest[i + marker.len()..];
    }
    out.extend_from_slice(rest);
    out
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Read more bytes into `buf`; `false` when the peer closed or the read failed.
async fn fill(rd: &mut ReadHalf<'_>, buf: &mut Vec<u8>) -> bool {
    let mut tmp = [0u8; 16 * 1024];
    match rd.read(&mut tmp).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            true
        }
    }
}

/// Read one request; `Ok(None)` on a clean close between requests.
async fn read_request(
    rd: &mut ReadHalf<'_>,
    wr: &mut WriteHalf<'_>,
    buf: &mut Vec<u8>,
) -> Result<Option<ParsedRequest>, ReadError> {
    // Head.
    let (head_len, method, target, version, headers) = loop {
        if !buf.is_empty() {
            let mut hs = [httparse::EMPTY_HEADER; 256];
            let mut req = httparse::Request::new(&mut hs);
            match req.parse(buf) {
                Ok(httparse::Status::Complete(n)) => {
                    if n > MAX_HEAD {
                        return Err(ReadError::Reject(431, "Request header too large"));
                    }
                    let method = req.method.unwrap_or("").to_string();
                    let target = req.path.unwrap_or("").to_string();
                    let version = req.version.unwrap_or(1);
                    let headers: Vec<(String, String)> = req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    break (n, method, target, version, headers);
                }
                Ok(httparse::Status::Partial) => {
                    if buf.len() > MAX_HEAD {
                        return Err(ReadError::Reject(431, "Request header too large"));
                    }
                }
                Err(_) => return Err(ReadError::Reject(400, "Malformed request")),
            }
        }
        if !fill(rd, buf).await {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(ReadError::Closed)
            };
        }
    };
    buf.drain(..head_len);

    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let has_token = |name: &str, token: &str| {
        headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let chunked = has_token("transfer-encoding", "chunked");
    let content_length = if chunked {
        None
    } else {
        match get("content-length") {
            None => None,
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if n <= MAX_BODY => Some(n),
                Ok(_) => return Err(ReadError::Reject(413, "Request body too large")),
                Err(_) => return Err(ReadError::Reject(400, "Bad Content-Length")),
            },
        }
    };
    let keep_alive = if version == 0 {
        has_token("connection", "keep-alive")
    } else {
        !has_token("connection", "close")
    };
    let expects_continue =
        get("expect").is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
    if expects_continue
        && buf.is_empty()
        && (chunked || content_length.unwrap_or(0) > 0)
        && wr
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .is_err()
    {
        return Err(ReadError::Closed);
    }

    // Body.
    let body = if chunked {
        read_chunked(rd, buf).await?
    } else {
        let n = content_length.unwrap_or(0);
        while buf.len() < n {
            if !fill(rd, buf).await {
                return Err(ReadError::Closed);
            }
        }
        buf.drain(..n).collect()
    };

    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target, None),
    };
    Ok(Some(ParsedRequest {
        method,
        path,
        query,
        headers,
        body,
        keep_alive,
    }))
}

/// Where the next CRLF-ended line of `buf` ends (reading more as needed);
/// `too_long` rejects a line longer than a head may be.
async fn line_in(
    rd: &mut ReadHalf<'_>,
    buf: &mut Vec<u8>,
    too_long: &'static str,
) -> Result<usize, ReadError> {
    loop {
        if let Some(i) = find_subslice(buf, b"\r\n") {
            return Ok(i);
        }
        if buf.len() > MAX_HEAD {
            return Err(ReadError::Reject(400, too_long));
        }
        if !fill(rd, buf).await {
            return Err(ReadError::Closed);
        }
    }
}

/// Decode a chunked body from `buf` (reading more as needed), consuming it and its trailers.
async fn read_chunked(rd: &mut ReadHalf<'_>, buf: &mut Vec<u8>) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        // Chunk-size line.
        let line_end = line_in(rd, buf, "Bad chunk size line").await?;
        let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size_str = line.split(';').next().unwrap_or("").trim();
        let size = match usize::from_str_radix(size_str, 16) {
            Ok(n) => n,
            Err(_) => return Err(ReadError::Reject(400, "Bad chunk size")),
        };
        if body.len().saturating_add(size) > MAX_BODY {
            return Err(ReadError::Reject(413, "Request body too large"));
        }
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers, up to an empty line.
            loop {
                let end = line_in(rd, buf, "Bad trailer").await?;
                buf.drain(..end + 2);
                if end == 0 {
                    return Ok(body);
                }
            }
        }
        while buf.len() < size + 2 {
            if !fill(rd, buf).await {
                return Err(ReadError::Closed);
            }
        }
        if &buf[size..size + 2] != b"\r\n" {
            return Err(ReadError::Reject(400, "Bad chunk terminator"));
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

/// Resolves when the peer closed (read returned 0 or failed). Bytes the peer sends in the
/// meantime (e.g. a pipelined request) are kept in `buf`. Cancel-safe.
async fn peer_closed(rd: &mut ReadHalf<'_>, buf: &mut Vec<u8>) {
    loop {
        if buf.len() > MAX_PENDING_WHILE_WATCHING {
            std::future::pending::<()>().await;
        }
        if !fill(rd, buf).await {
            return;
        }
    }
}

/// Sleep `d` unless the peer closes first; `false` if it did.
async fn sleep_watching(d: Duration, rd: &mut ReadHalf<'_>, buf: &mut Vec<u8>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = peer_closed(rd, buf) => false,
    }
}

/// Write all of `data` unless the peer closes first (or the write fails); `false` then.
async fn write_watching(
    data: &[u8],
    rd: &mut ReadHalf<'_>,
    wr: &mut WriteHalf<'_>,
    buf: &mut Vec<u8>,
) -> bool {
    let mut off = 0;
    while off < data.len() {
        tokio::select! {
            r = wr.write(&data[off..]) => match r {
                Ok(0) | Err(_) => return false,
                Ok(n) => off += n,
            },
            _ = peer_closed(rd, buf) => return false,
        }
    }
    true
}

/// Framing headers are the fake's business; a scripted `Connection` header is dropped
/// when the fake closes anyway (it then sends `Connection: close` itself).
fn keep_scripted_header(name: &str, keep_alive: bool) -> bool {
    let framing = name.eq_ignore_ascii_case("content-length")
        || name.eq_ignore_ascii_case("transfer-encoding");
    let connection = name.eq_ignore_ascii_case("connection");
    !framing && (keep_alive || !connection)
}

fn head(
    status: u16,
    headers: &[(String, String)],
    extra: &[(&str, String)],
    close: bool,
) -> Vec<u8> {
    let mut h = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (n, v) in headers {
        h.push_str(&format!("{n}: {v}\r\n"));
    }
    for (n, v) in extra {
        h.push_str(&format!("{n}: {v}\r\n"));
    }
    if close {
        h.push_str("Connection: close\r\n");
    }
    h.push_str("\r\n");
    h.into_bytes()
}

async fn serve(
    mut reply: Reply,
    model: &str,
    keep_alive: bool,
    rd: &mut ReadHalf<'_>,
    wr: &mut WriteHalf<'_>,
    buf: &mut Vec<u8>,
    shared: &Shared,
) -> After {
    // Unwrap delays, watching for the peer going away meanwhile.
    while let Reply::DelayThen(d, inner) = reply {
        if !sleep_watching(d, rd, buf).await {
            if inner.is_streaming() {
                shared.note_closed_early();
            }
            return After::Close;
        }
        reply = *inner;
    }
    let next = if keep_alive {
        After::KeepAlive
    } else {
        After::Close
    };
    match reply {
        Reply::DelayThen(..) => unreachable!("delays unwrapped above"),
        Reply::Raw {
            status,
            headers,
            body,
        } => {
            let body = template(&body, model);
            let headers: Vec<(String, String)> = headers
                .into_iter()
                .filter(|(n, _)| keep_scripted_header(n, keep_alive))
                .collect();
            let mut out = head(
                status,
                &headers,
                &[("Content-Length", body.len().to_string())],
                !keep_alive,
            );
            out.extend_from_slice(&body);
            if wr.write_all(&out).await.is_err() {
                return After::Close;
            }
            next
        }
        Reply::Sse {
            status,
            headers,
            events,
            end,
        } => {
            let mut extra: Vec<(&str, String)> = Vec::new();
            if !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            {
                extra.push(("Content-Type", s("text/event-stream")));
            }
            if !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("cache-control"))
            {
                extra.push(("Cache-Control", s("no-cache")));
            }
            extra.push(("Transfer-Encoding", s("chunked")));
            let headers: Vec<(String, String)> = headers
                .into_iter()
                .filter(|(n, _)| keep_scripted_header(n, keep_alive))
                .collect();
            let h = head(status, &headers, &extra, !keep_alive);
            if !write_watching(&h, rd, wr, buf).await {
                shared.note_closed_early();
                return After::Close;
            }
            for step in events {
                let ok = match step {
                    SseStep::Bytes(b) if b.is_empty() => true,
                    SseStep::Bytes(b) => {
                        let b = template(&b, model);
                        let mut chunk = format!("{:x}\r\n", b.len()).into_bytes();
                        chunk.extend_from_slice(&b);
                        chunk.extend_from_slice(b"\r\n");
                        write_watching(&chunk, rd, wr, buf).await
                    }
                    SseStep::Sleep(d) => sleep_watching(d, rd, buf).await,
                    SseStep::Repeat { bytes, .. } if bytes.is_empty() => true,
                    SseStep::Repeat { bytes, times } => {
                        let b = template(&bytes, model);
                        let mut chunk = format!("{:x}\r\n", b.len()).into_bytes();
                        chunk.extend_from_slice(&b);
                        chunk.extend_from_slice(b"\r\n");
                        let mut ok = true;
                        for _ in 0..times {
                            if !write_watching(&chunk, rd, wr, buf).await {
                                ok = false;
                                break;
                            }
                        }
                        ok
                    }
                };
                if !ok {
                    shared.note_closed_early();
                    return After::Close;
                }
            }
            match end {
                SseEnd::Done => {
                    if !write_watching(b"0\r\n\r\n", rd, wr, buf).await {
                        shared.note_closed_early();
                        return After::Close;
                    }
                    next
                }
                SseEnd::Cut => After::Close,
                SseEnd::Reset => After::Reset,
                SseEnd::Stall => {
                    peer_closed(rd, buf).await;
                    shared.note_closed_early();
                    After::Close
                }
            }
        }
        Reply::HangBeforeHeaders => {
            peer_closed(rd, buf).await;
            After::Close
        }
        Reply::ResetBeforeHeaders => After::Reset,
        Reply::Garbage(bytes) => {
            let _ = wr.write_all(&bytes).await;
            After::Close
        }
        Reply::Wire(bytes) => {
            if wr.write_all(&bytes).await.is_err() {
                return After::Close;
            }
            next
        }
    }
}
