//! The three skins OpenRouter speaks, and everything orproxy needs to know
//! about each to relay it: which stream events are preamble (held while a
//! retry is still possible), which event proves a stream whole, how an
//! error inside a stream reads, how a failed stream must end, where the
//! usage is, where the text is (for `--log-bodies`), and the shape of the
//! errors orproxy writes itself. Adding a dialect is one variant here and
//! its rows in [`crate::openrouter::endpoints`]. Pure; see
//! `docs/openrouter.md`, "Three API skins".

use super::sse::Event;
use serde_json::{Map, Value, json};

/// One of OpenRouter's API skins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Chat and text completions: `data:` events, whole after `[DONE]`.
    Chat,
    /// The Responses API (Codex CLI, the AI SDK): `event: response.*`.
    Responses,
    /// Anthropic Messages (Claude Code): `event: message_start` ...
    /// `message_stop`, errors in Anthropic's envelope.
    Messages,
    /// Anything else that streams: whole at any event boundary.
    Plain,
}

/// The shape of an error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorShape {
    /// `{"error": {"message", "type", "param", "code"}}`.
    OpenAi,
    /// `{"type": "error", "error": {"type", "message"}}`.
    Anthropic,
}

/// An error read inside a stream, as the classifier reads an HTTP error:
/// the status it stands for and an OpenRouter-style error body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StreamError {
    /// The HTTP status the error stands for (429 for a rate limit...).
    pub(crate) status: u16,
    /// What it says.
    pub(crate) message: String,
    /// `{"error": {"message", "code", "metadata"}}`.
    pub(crate) body: Vec<u8>,
}

/// What kind of event an event is, for the relay.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Role {
    /// Carries nothing a client can use (comments, `response.created`,
    /// `message_start`, `ping`): held while a retry is possible.
    Preamble,
    /// The first of these commits the stream to its key.
    Content,
    /// An error: before the commit it is retried like an HTTP error.
    Error(StreamError),
    /// Proves the stream whole (`[DONE]`, `response.completed`,
    /// `message_stop`...).
    End,
}

fn json_of(event: &Event) -> Option<Value> {
    let data = event.data.as_deref()?;
    if !super::sse::opens_object(data) {
        return None;
    }
    serde_json::from_slice(data).ok()
}

/// The HTTP status a Responses error `code` (or OpenRouter's shared
/// `error_type`) stands for.
fn status_of_code(code: &str) -> u16 {
    match code {
        "rate_limit_exceeded" | "rate_limit_error" | "too_many_requests" => 429,
        "payment_required" | "insufficient_quota" | "billing_error" => 402,
        "authentication" | "invalid_api_key" | "authentication_error" => 401,
        "permission_error" | "forbidden" | "moderation" => 403,
        "not_found_error" | "model_not_found" => 404,
        "request_too_large" => 413,
        "invalid_prompt"
        | "invalid_request"
        | "invalid_request_error"
        | "context_length_exceeded" => 400,
        "timeout" | "timeout_error" => 408,
        "provider_overloaded" | "overloaded_error" | "overloaded" => 529,
        "provider_unavailable" | "service_unavailable" => 503,
        _ => 502,
    }
}

/// An OpenRouter-style error body for the classifier, from an error
/// object's `message` and `metadata` (and `provider_name` when present).
fn error_body(message: &str, code: u16, metadata: Option<&Value>) -> Vec<u8> {
    let mut error = Map::new();
    error.insert("message".into(), Value::from(message));
    error.insert("code".into(), Value::from(code));
    if let Some(m) = metadata {
        error.insert("metadata".into(), m.clone());
    }
    json!({ "error": error }).to_string().into_bytes()
}

/// A Responses or Messages error object `{code|type, message, metadata}`
/// as the classifier reads it; OpenRouter's `error_type` wins when present.
fn stream_error(error: &Value, code_field: &str) -> StreamError {
    let message = error.get("message").and_then(Value::as_str).unwrap_or("");
    let metadata = error.get("metadata");
    let code = metadata
        .and_then(|m| m.get("error_type"))
        .or_else(|| error.get("error_type"))
        .or_else(|| error.get(code_field))
        .and_then(Value::as_str)
        .unwrap_or("");
    let status = status_of_code(code);
    StreamError {
        status,
        message: message.to_owned(),
        body: error_body(message, status, metadata),
    }
}

impl Dialect {
    /// The shape of errors on its endpoints.
    pub(crate) fn error_shape(self) -> ErrorShape {
        match self {
            Dialect::Messages => ErrorShape::Anthropic,
            _ => ErrorShape::OpenAi,
        }
    }

    /// What `event` is to the relay.
    pub(crate) fn role(self, event: &Event) -> Role {
        if event.is_empty() {
            return Role::Preamble;
        }
        match self {
            Dialect::Chat => chat_role(event),
            Dialect::Responses => responses_role(event),
            Dialect::Messages => messages_role(event),
            Dialect::Plain => Role::Content,
        }
    }

    /// The event that proves a stream of this dialect whole (None: any
    /// event boundary does).
    pub(crate) fn closing_event(self) -> Option<&'static str> {
        match self {
            Dialect::Chat => Some("[DONE]"),
            Dialect::Responses => Some("response.completed"),
            Dialect::Messages => Some("message_stop"),
            Dialect::Plain => None,
        }
    }

    /// The events that end a stream that failed after it started, in the
    /// dialect's own words: `status` is the HTTP status the failure stands
    /// for (it picks the error's type), `message` says what happened;
    /// `response` is the Responses object from `response.created`, if one
    /// came.
    pub(crate) fn failure_tail(
        self,
        status: u16,
        message: &str,
        response: Option<&Value>,
    ) -> Vec<u8> {
        match self {
            Dialect::Chat | Dialect::Plain => {
                let event = json!({
                    "object": "chat.completion.chunk",
                    "error": {
                        "message": message,
                        "type": "upstream_error",
                        "param": null,
                        "code": "upstream_stream_error",
                    },
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "error"}],
                });
                format!("data: {event}\n\ndata: [DONE]\n\n").into_bytes()
            }
            Dialect::Responses => {
                let mut response = response.cloned().unwrap_or_else(|| {
                    json!({
                        "id": format!("resp_orproxy_{:016x}", fastrand::u64(..)),
                        "object": "response",
                        "output": [],
                    })
                });
                if let Some(r) = response.as_object_mut() {
                    r.insert("status".into(), Value::from("failed"));
                    let code = if status == 429 {
                        "rate_limit_exceeded"
                    } else {
                        "server_error"
                    };
                    r.insert("error".into(), json!({"code": code, "message": message}));
                }
                let event = json!({"type": "response.failed", "response": response});
                format!("event: response.failed\ndata: {event}\n\n").into_bytes()
            }
            Dialect::Messages => {
                let event = json!({
                    "type": "error",
                    "error": {"type": anthropic_type(status), "message": message},
                });
                format!("event: error\ndata: {event}\n\n").into_bytes()
            }
        }
    }

    /// The Responses object a `response.created` (or `response.in_progress`)
    /// event carries, kept to end a failed stream with the same ID.
    pub(crate) fn response_object(self, event: &Event) -> Option<Value> {
        if self != Dialect::Responses {
            return None;
        }
        let kind = event.kind()?;
        if kind != "response.created" && kind != "response.in_progress" {
            return None;
        }
        json_of(event)?.get("response").cloned()
    }

    /// Fold the usage `event` reports into `usage` (the request's last
    /// known usage, as a JSON object): chat's `usage` in a data event; the
    /// Responses `response.completed`'s `response.usage`; Messages' input
    /// tokens from `message_start` and output tokens and cost from
    /// `message_delta`.
    pub(crate) fn fold_usage(self, event: &Event, usage: &mut Option<Value>) {
        let Some(data) = event.data.as_deref() else {
            return;
        };
        if !super::usage::mentions_usage(data) {
            return;
        }
        let Some(value) = json_of(event) else {
            return;
        };
        let found = match self {
            Dialect::Chat | Dialect::Plain => value.get("usage"),
            Dialect::Responses => value.pointer("/response/usage"),
            Dialect::Messages => value
                .pointer("/message/usage")
                .or_else(|| value.get("usage")),
        };
        let Some(Value::Object(found)) = found else {
            return;
        };
        match (self, usage.as_mut().and_then(Value::as_object_mut)) {
            // Messages reports in parts: merge them.
            (Dialect::Messages, Some(known)) => {
                for (k, v) in found {
                    known.insert(k.clone(), v.clone());
                }
            }
            _ => *usage = Some(Value::Object(found.clone())),
        }
    }

    /// The generation ID an event names (chat's `id`, the Responses
    /// object's, the Messages message's), for `GET /v1/generation`.
    pub(crate) fn generation_id(self, event: &Event) -> Option<String> {
        let data = event.data.as_deref()?;
        if !super::sse::opens_object(data) || memchr::memmem::find(data, b"\"id\"").is_none() {
            return None;
        }
        let value = json_of(event)?;
        let id = match self {
            Dialect::Chat | Dialect::Plain => value.get("id"),
            Dialect::Responses => value.pointer("/response/id"),
            Dialect::Messages => value.pointer("/message/id"),
        };
        id.and_then(Value::as_str).map(str::to_owned)
    }

    /// The text `event` adds to the answer (for `--log-bodies`).
    pub(crate) fn text(self, event: &Event) -> Option<String> {
        let value = json_of(event)?;
        let text = match self {
            Dialect::Chat | Dialect::Plain => {
                let choices = value.get("choices")?.as_array()?;
                let mut text = String::new();
                for c in choices {
                    if let Some(piece) = c
                        .pointer("/delta/content")
                        .or_else(|| c.get("text"))
                        .and_then(Value::as_str)
                    {
                        text.push_str(piece);
                    }
                }
                return Some(text);
            }
            Dialect::Responses => (event.kind()? == "response.output_text.delta")
                .then(|| value.get("delta"))
                .flatten(),
            Dialect::Messages => value.pointer("/delta/text"),
        };
        text.and_then(Value::as_str).map(str::to_owned)
    }
}

/// The Anthropic error `type` of an HTTP status.
pub(crate) fn anthropic_type(status: u16) -> &'static str {
    match status {
        400 | 405 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        408 | 504 => "timeout_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

fn chat_role(event: &Event) -> Role {
    if event.is_done() {
        return Role::End;
    }
    let Some(data) = event.data.as_deref() else {
        return Role::Preamble;
    };
    if super::classify::error_in_body(data) {
        let value = serde_json::from_slice::<Value>(data).unwrap_or(Value::Null);
        let message = value
            .pointer("/error/message")
            .or_else(|| value.get("error"))
            .and_then(Value::as_str)
            .unwrap_or("an error inside the stream");
        return Role::Error(StreamError {
            status: 200,
            message: message.to_owned(),
            body: data.to_vec(),
        });
    }
    Role::Content
}

fn responses_role(event: &Event) -> Role {
    let kind = event.kind().unwrap_or_default();
    match kind.as_str() {
        "response.created" | "response.in_progress" => Role::Preamble,
        "response.completed" | "response.incomplete" => Role::End,
        "response.failed" => {
            let error = json_of(event).and_then(|v| v.pointer("/response/error").cloned());
            Role::Error(stream_error(&error.unwrap_or(Value::Null), "code"))
        }
        "error" | "response.error" => {
            let value = json_of(event).unwrap_or(Value::Null);
            // `{"type":"error","code","message"}` or `{"error":{...}}`.
            let error = value
                .get("error")
                .filter(|e| e.is_object())
                .unwrap_or(&value);
            Role::Error(stream_error(error, "code"))
        }
        _ => Role::Content,
    }
}

fn messages_role(event: &Event) -> Role {
    let kind = event.kind().unwrap_or_default();
    match kind.as_str() {
        "message_start" | "ping" => Role::Preamble,
        "message_stop" => Role::End,
        "error" => {
            let value = json_of(event).unwrap_or(Value::Null);
            let error = value.get("error").unwrap_or(&Value::Null);
            Role::Error(stream_error(error, "type"))
        }
        _ => Role::Content,
    }
}

/// Whether a stream that failed with this role is whole: an error event
/// ends a Responses (`response.failed`) or Messages stream in its own
/// words.
pub(crate) fn error_ends_stream(dialect: Dialect, event: &Event) -> bool {
    match dialect {
        Dialect::Messages => event.kind().as_deref() == Some("error"),
        Dialect::Responses => event.kind().as_deref() == Some("response.failed"),
        Dialect::Chat | Dialect::Plain => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openrouter::sse::{Piece, Splitter};

    fn event(text: &str) -> Event {
        let mut s = Splitter::default();
        s.push(bytes::Bytes::copy_from_slice(text.as_bytes()));
        match s.next(true) {
            Some(Piece::Event(e)) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn chat_events() {
        let d = Dialect::Chat;
        assert_eq!(
            d.role(&event(": OPENROUTER PROCESSING\n\n")),
            Role::Preamble
        );
        assert_eq!(d.role(&event("data: {\"choices\":[]}\n\n")), Role::Content);
        assert_eq!(d.role(&event("data: [DONE]\n\n")), Role::End);
        let err = d.role(&event(
            "data: {\"error\":{\"message\":\"x\",\"code\":429},\"choices\":[]}\n\n",
        ));
        assert!(
            matches!(err, Role::Error(StreamError { status: 200, .. })),
            "{err:?}"
        );
    }

    #[test]
    fn responses_events() {
        let d = Dialect::Responses;
        let created = event(
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\"}}\n\n",
        );
        assert_eq!(d.role(&created), Role::Preamble);
        assert_eq!(d.response_object(&created).unwrap()["id"], "resp_1");
        assert_eq!(
            d.role(&event("event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n")),
            Role::Content
        );
        assert_eq!(
            d.role(&event("event: response.completed\ndata: {}\n\n")),
            Role::End
        );
        let failed = d.role(&event("event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"error\":{\"code\":\"rate_limit_exceeded\",\"message\":\"Rate limit exceeded: free-models-per-min.\"}}}\n\n"));
        let Role::Error(e) = failed else {
            panic!("{failed:?}")
        };
        assert_eq!(e.status, 429);
        assert!(String::from_utf8_lossy(&e.body).contains("free-models-per-min"));
        let error = d.role(&event("event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"boom\",\"metadata\":{\"error_type\":\"provider_overloaded\"}}\n\n"));
        assert!(
            matches!(error, Role::Error(StreamError { status: 529, .. })),
            "{error:?}"
        );
    }

    #[test]
    fn messages_events() {
        let d = Dialect::Messages;
        assert_eq!(
            d.role(&event(
                "event: message_start\ndata: {\"type\":\"message_start\"}\n\n"
            )),
            Role::Preamble
        );
        assert_eq!(
            d.role(&event("event: ping\ndata: {\"type\":\"ping\"}\n\n")),
            Role::Preamble
        );
        assert_eq!(
            d.role(&event("event: content_block_delta\ndata: {}\n\n")),
            Role::Content
        );
        assert_eq!(
            d.role(&event("event: message_stop\ndata: {}\n\n")),
            Role::End
        );
        let error = d.role(&event("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"slow down\"}}\n\n"));
        assert!(
            matches!(error, Role::Error(StreamError { status: 429, .. })),
            "{error:?}"
        );
    }

    #[test]
    fn failure_tails_speak_each_dialect() {
        let chat = String::from_utf8(Dialect::Chat.failure_tail(502, "cut", None)).unwrap();
        assert!(chat.ends_with("data: [DONE]\n\n"), "{chat}");
        let created =
            serde_json::json!({"id": "resp_9", "object": "response", "status": "in_progress"});
        let responses =
            String::from_utf8(Dialect::Responses.failure_tail(502, "cut", Some(&created))).unwrap();
        assert!(
            responses.starts_with("event: response.failed\ndata: "),
            "{responses}"
        );
        let data: Value = serde_json::from_str(
            responses
                .trim_start_matches("event: response.failed\ndata: ")
                .trim(),
        )
        .unwrap();
        assert_eq!(data["response"]["id"], "resp_9");
        assert_eq!(data["response"]["status"], "failed");
        assert_eq!(data["response"]["error"]["code"], "server_error");
        assert!(!responses.contains("[DONE]"));
        let messages = String::from_utf8(Dialect::Messages.failure_tail(502, "cut", None)).unwrap();
        assert!(messages.starts_with("event: error\ndata: {"), "{messages}");
        assert!(messages.contains("\"api_error\""));
        let limited = String::from_utf8(Dialect::Messages.failure_tail(429, "slow", None)).unwrap();
        assert!(limited.contains("\"rate_limit_error\""), "{limited}");
        let limited =
            String::from_utf8(Dialect::Responses.failure_tail(429, "slow", None)).unwrap();
        assert!(limited.contains("\"rate_limit_exceeded\""), "{limited}");
        assert!(
            limited.contains("\"resp_orproxy_"),
            "a fresh ID when none came: {limited}"
        );
    }

    #[test]
    fn usage_is_found_where_each_dialect_reports_it() {
        let mut u = None;
        Dialect::Chat.fold_usage(
            &event("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3}}\n\n"),
            &mut u,
        );
        assert_eq!(u, Some(json!({"prompt_tokens": 3})));
        let mut u = None;
        Dialect::Responses.fold_usage(&event("event: response.completed\ndata: {\"response\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":2}}}\n\n"), &mut u);
        assert_eq!(u, Some(json!({"input_tokens": 5, "output_tokens": 2})));
        let mut u = None;
        Dialect::Messages.fold_usage(&event("event: message_start\ndata: {\"message\":{\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\n"), &mut u);
        Dialect::Messages.fold_usage(
            &event(
                "event: message_delta\ndata: {\"usage\":{\"output_tokens\":9,\"cost\":0.01}}\n\n",
            ),
            &mut u,
        );
        assert_eq!(
            u,
            Some(json!({"input_tokens": 7, "output_tokens": 9, "cost": 0.01}))
        );
    }

    #[test]
    fn text_is_found_where_each_dialect_streams_it() {
        assert_eq!(
            Dialect::Chat
                .text(&event(
                    "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n"
                ))
                .as_deref(),
            Some("Hi")
        );
        assert_eq!(
            Dialect::Responses
                .text(&event(
                    "event: response.output_text.delta\ndata: {\"delta\":\"Hi\"}\n\n"
                ))
                .as_deref(),
            Some("Hi")
        );
        assert_eq!(Dialect::Messages.text(&event("event: content_block_delta\ndata: {\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n")).as_deref(), Some("Hi"));
    }
}
