//! The record of one request: created by [`middleware`] when the request
//! arrives, filled in by the proxy as it tries keys, finished when the
//! response body has been sent (or dropped). Then it becomes one JSON line
//! in `requests-YYYY-MM-DD.log`, one readable console line, and metrics.
//!
//! The handler reaches its record through a task-local ([`current`]), so the
//! proxy needs no extra parameters to report into it. The response body is
//! wrapped ([`LoggedBody`]) to measure time to first byte, bytes and token
//! usage as the bytes pass: nothing is buffered beyond one SSE line.

use super::metrics::{StreamGuard, metrics};
use super::relay::{End, mentions_usage};
use super::shared::Shared;
use crate::secret::redact;
use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, web};
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The request ID header, taken from the client or generated, and echoed.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Longest SSE line scanned for usage; longer lines are skipped.
const MAX_LINE: usize = 1024 * 1024;
/// Largest body kept for `--log-bodies`, and largest non-streamed body
/// searched for usage.
const MAX_LOGGED_BODY: usize = 1024 * 1024;
/// Longest error message copied into the record.
const MAX_ERROR: usize = 500;

tokio::task_local! {
    static CURRENT: Ctx;
}

/// The record of the request being handled in this task, or a no-op record
/// outside of a request.
pub fn current() -> Ctx {
    CURRENT.try_with(Clone::clone).unwrap_or_default()
}

/// A handle on one request's record (cheap to clone; a no-op when empty).
#[derive(Clone, Default)]
pub struct Ctx(Option<Rc<RefCell<Record>>>);

/// One upstream attempt, as logged.
#[derive(Serialize)]
struct Attempt {
    key: Option<String>,
    outcome: &'static str,
    status: Option<u16>,
    ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// One line of the request log, fields in this order.
#[derive(Serialize)]
struct Line<'a> {
    time: &'a str,
    id: &'a str,
    method: &'a str,
    path: &'a str,
    client: Option<&'a str>,
    model: Option<&'a str>,
    stream: Option<bool>,
    status: u16,
    attempts: &'a [Attempt],
    ttfb_ms: Option<u64>,
    total_ms: u64,
    bytes: u64,
    usage: Option<&'a Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_body: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_body: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_text: Option<&'a str>,
}

#[derive(Default)]
struct Record {
    id: String,
    time: String,
    method: Method,
    path: String,
    route: &'static str,
    client: Option<String>,
    proxied: bool,
    quiet: bool,
    log_bodies: bool,
    started: Option<Instant>,
    model: Option<String>,
    stream: Option<bool>,
    request_body: Option<Value>,
    attempts: Vec<Attempt>,
    pending_verdict: Option<&'static str>,
    pending_delay: Option<Duration>,
    upstream_time: Duration,
    waited: Duration,
    status: u16,
    first_byte: Option<Instant>,
    bytes: u64,
    body_failed: bool,
    end: Option<String>,
    sse: Option<SseScan>,
    whole: Option<Bytes>,
    /// The usage the proxy found while it judged the body (see
    /// [`JudgedUsage`]): then the body is not searched again.
    judged_usage: Option<Option<Box<RawValue>>>,
    usage: Option<Usage>,
    finished: bool,
}

/// Attached to a response (as an extension) whose whole JSON body the proxy
/// already parsed: the `usage` it found there, if any, as the body has it.
pub struct JudgedUsage(pub Option<Box<RawValue>>);

/// The token usage the upstream reported, as it goes into the log line.
#[derive(Serialize)]
#[serde(untagged)]
enum Usage {
    /// The upstream's own compact JSON text, copied as it is (no tree to
    /// build, or to serialize again).
    Raw(Box<RawValue>),
    /// Parsed (from an SSE event, or text with whitespace in it: the log
    /// line must stay on one line).
    Value(Value),
}

impl Usage {
    fn from_raw(raw: Box<RawValue>) -> Option<Self> {
        let text = raw.get().as_bytes();
        if text
            .iter()
            .any(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            return serde_json::from_str(raw.get()).ok().map(Usage::Value);
        }
        Some(Usage::Raw(raw))
    }

    /// `prompt_tokens` and `completion_tokens`, when both are counts.
    fn tokens(&self) -> Option<(u64, u64)> {
        #[derive(serde::Deserialize)]
        struct Tokens {
            prompt_tokens: Option<Value>,
            completion_tokens: Option<Value>,
        }
        let (p, c) = match self {
            Usage::Value(u) => (u.get("prompt_tokens")?, u.get("completion_tokens")?),
            Usage::Raw(raw) => {
                let t: Tokens = serde_json::from_str(raw.get()).ok()?;
                return Some((t.prompt_tokens?.as_u64()?, t.completion_tokens?.as_u64()?));
            }
        };
        Some((p.as_u64()?, c.as_u64()?))
    }
}

impl Ctx {
    fn with(&self, f: impl FnOnce(&mut Record)) {
        if let Some(rec) = &self.0
            && let Ok(mut rec) = rec.try_borrow_mut()
        {
            f(&mut rec);
        }
    }

    /// What the client asked for (`body` is kept only with `--log-bodies`).
    pub fn request(&self, model: Option<&str>, stream: bool, body: &Bytes) {
        self.with(|r| {
            r.model = model.map(str::to_owned);
            r.stream = Some(stream);
            if r.log_bodies {
                r.request_body = Some(body_value(body));
            }
        });
    }

    /// The verdict on the current attempt's upstream answer.
    pub fn verdict(&self, reason: &'static str) {
        self.with(|r| r.pending_verdict = Some(reason));
    }

    /// An upstream attempt ended: with key `key`, after `took`; `status` of
    /// the upstream answer when there was one, else orproxy's `error` (code,
    /// message); `retry_delay` when another attempt may follow after it.
    pub fn attempt(
        &self,
        key: Option<&str>,
        status: Option<u16>,
        error: Option<(&'static str, &str)>,
        retry_delay: Option<Duration>,
        took: Duration,
    ) {
        self.with(|r| {
            // Another attempt happened, so the back-off asked for before it
            // was slept.
            if let Some(delay) = r.pending_delay.take() {
                r.waited += delay;
            }
            r.pending_delay = retry_delay;
            let outcome = r
                .pending_verdict
                .take()
                .or(error.map(|(code, _)| code))
                .unwrap_or("unknown");
            let retry = !r.attempts.is_empty();
            metrics().attempt(outcome, took, retry);
            r.upstream_time += took;
            r.attempts.push(Attempt {
                key: key.map(str::to_owned),
                outcome,
                status,
                ms: millis(took),
                error: error.map(|(_, message)| clip(message)),
            });
        });
    }

    /// The request waited this long for a free key.
    pub fn key_wait(&self, took: Duration) {
        self.with(|r| r.waited += took);
    }

    /// How a relayed body ended.
    pub fn stream_end(&self, end: &End) {
        self.with(|r| {
            r.end = match end {
                End::Complete => None,
                End::UpstreamFailed(e) => Some(format!("upstream failed: {e}")),
                End::ClientGone => Some("client gone".to_owned()),
            };
        });
    }

    fn chunk(&self, chunk: &Bytes) {
        self.with(|r| {
            if chunk.is_empty() {
                return;
            }
            r.first_byte.get_or_insert_with(Instant::now);
            r.bytes += chunk.len() as u64;
            if let Some(scan) = r.sse.as_mut() {
                scan.feed(chunk);
            } else if r.bytes == chunk.len() as u64 && chunk.len() <= MAX_LOGGED_BODY {
                r.whole = Some(chunk.clone());
            } else {
                r.whole = None;
            }
        });
    }

    fn finish(&self) {
        let Some(rec) = &self.0 else { return };
        let Ok(mut r) = rec.try_borrow_mut() else {
            return;
        };
        if r.finished {
            return;
        }
        r.finished = true;
        r.finish();
    }
}

impl Record {
    /// The response is ready to go: count it now (rather than when its body
    /// ends), so a scrape right after a client got its answer sees it.
    fn response_started(&mut self) {
        let ready = Instant::now();
        metrics().request(self.route, self.status);
        if self.proxied
            && let Some(started) = self.started
        {
            let spent = ready.saturating_duration_since(started);
            metrics().overhead(
                spent
                    .saturating_sub(self.upstream_time)
                    .saturating_sub(self.waited),
            );
        }
    }

    fn finish(&mut self) {
        let now = Instant::now();
        let started = self.started.unwrap_or(now);
        let total = now.saturating_duration_since(started);
        let ttfb = self
            .first_byte
            .map(|t| t.saturating_duration_since(started));
        if let Some(scan) = &mut self.sse {
            self.usage = scan.usage.take().map(Usage::Value);
        }
        let mut error = None;
        let mut response_body = None;
        if let Some(body) = &self.whole {
            if let Some(judged) = self.judged_usage.take() {
                if self.usage.is_none() {
                    self.usage = judged.and_then(Usage::from_raw);
                }
            } else if self.usage.is_none() && mentions_usage(body) {
                self.usage = serde_json::from_slice::<UsageOnly>(body)
                    .ok()
                    .and_then(|u| u.usage)
                    .filter(|u| !u.is_null())
                    .map(Usage::Value);
            }
            if self.status >= 400 {
                error = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
                    v.pointer("/error/message")
                        .and_then(Value::as_str)
                        .map(clip)
                });
            }
            if self.log_bodies && self.proxied {
                response_body = Some(body_value(body));
            }
        }
        if self.quiet {
            return;
        }
        let end = self.end.clone().or_else(|| {
            self.body_failed
                .then(|| "the response body failed".to_owned())
        });
        let response_text = self
            .sse
            .as_mut()
            .and_then(|s| s.text.take())
            .filter(|_| self.log_bodies);
        let line = Line {
            time: &self.time,
            id: &self.id,
            method: self.method.as_str(),
            path: &self.path,
            client: self.client.as_deref(),
            model: self.model.as_deref(),
            stream: self.stream,
            status: self.status,
            attempts: &self.attempts,
            ttfb_ms: ttfb.map(millis),
            total_ms: millis(total),
            bytes: self.bytes,
            usage: self.usage.as_ref(),
            end: end.as_deref(),
            error: error.as_deref(),
            request_body: self.request_body.as_ref(),
            response_body: response_body.as_ref(),
            response_text: response_text.as_deref(),
        };
        let mut json = Vec::with_capacity(512);
        if serde_json::to_writer(&mut json, &line).is_ok() {
            crate::logging::request_line(&json);
        }

        let level = if self.status >= 500
            || self.status == 429
            || self.status == 401
            || end.as_deref().is_some_and(|e| e.starts_with("upstream"))
        {
            log::Level::Warn
        } else {
            log::Level::Info
        };
        // The console line is built only when it will be shown.
        if log::log_enabled!(target: "orproxy::requests", level) {
            log::log!(
                target: "orproxy::requests",
                level,
                "{}",
                self.console_line(total, ttfb, end.as_deref(), error.as_deref())
            );
        }
    }

    fn console_line(
        &self,
        total: Duration,
        ttfb: Option<Duration>,
        end: Option<&str>,
        error: Option<&str>,
    ) -> String {
        use std::fmt::Write as _;
        let mut s = String::with_capacity(160);
        let _ = write!(s, "{} {}", self.method, self.path);
        if let Some(model) = &self.model {
            let _ = write!(s, " model={model}");
        }
        if let Some(stream) = self.stream {
            let _ = write!(s, " stream={stream}");
        }
        let _ = write!(s, " -> {} in {} ms", self.status, millis(total));
        // The details, in parentheses and separated by commas.
        let mut details = 0;
        let mut next = |s: &mut String| {
            s.push_str(if details == 0 { " (" } else { ", " });
            details += 1;
        };
        if let Some(t) = ttfb
            && self.proxied
        {
            next(&mut s);
            let _ = write!(s, "ttfb {} ms", millis(t));
        }
        if self.proxied {
            next(&mut s);
            let _ = write!(s, "{} B", self.bytes);
        }
        match self.attempts.as_slice() {
            [] => {}
            [one] => {
                next(&mut s);
                let _ = write!(s, "key {}", one.key.as_deref().unwrap_or("-"));
            }
            many => {
                next(&mut s);
                s.push_str("attempts: ");
                for (i, a) in many.iter().enumerate() {
                    if i > 0 {
                        s.push_str(", ");
                    }
                    let _ = write!(s, "{} {}", a.key.as_deref().unwrap_or("-"), a.outcome);
                    if let Some(status) = a.status {
                        let _ = write!(s, " {status}");
                    }
                }
            }
        }
        if let Some((p, c)) = self.usage.as_ref().and_then(Usage::tokens) {
            next(&mut s);
            let _ = write!(s, "tokens {p}+{c}");
        }
        if let Some(e) = end {
            next(&mut s);
            s.push_str(e);
        }
        if let Some(e) = error {
            next(&mut s);
            let _ = write!(s, "error: {e}");
        }
        if details > 0 {
            s.push(')');
        }
        let _ = write!(s, " [req {}]", self.id);
        s
    }
}

#[derive(serde::Deserialize)]
struct UsageOnly {
    #[serde(default)]
    usage: Option<Value>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn clip(text: &str) -> String {
    let text = redact(text);
    match text.char_indices().nth(MAX_ERROR) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// A body as it goes into the log: JSON when it is JSON, else text.
fn body_value(body: &[u8]) -> Value {
    if body.len() > MAX_LOGGED_BODY {
        let cut = String::from_utf8_lossy(&body[..MAX_LOGGED_BODY]).into_owned();
        return Value::String(format!("{cut}… (truncated, {} bytes)", body.len()));
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// Reads an SSE stream line by line as it passes, for the last `usage` and,
/// with `--log-bodies`, the streamed text. Holds at most one partial line.
#[derive(Default)]
struct SseScan {
    line: Vec<u8>,
    overflow: bool,
    usage: Option<Value>,
    text: Option<String>,
}

impl SseScan {
    fn feed(&mut self, chunk: &[u8]) {
        for piece in chunk.split_inclusive(|b| *b == b'\n') {
            let complete = piece.ends_with(b"\n");
            if !complete {
                if self.overflow || self.line.len() + piece.len() > MAX_LINE {
                    self.overflow = true;
                    self.line.clear();
                } else {
                    self.line.extend_from_slice(piece);
                }
                continue;
            }
            if self.overflow || self.line.len() + piece.len() > MAX_LINE {
                self.overflow = false;
                self.line.clear();
                continue;
            }
            if self.line.is_empty() {
                self.line_done(piece);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(piece);
                self.line_done(&line);
                line.clear();
                self.line = line;
            }
        }
    }

    fn line_done(&mut self, line: &[u8]) {
        let line = line.trim_ascii_end();
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.trim_ascii_start();
        if data == b"[DONE]" || !(self.text.is_some() || mentions_usage(data)) {
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(u.clone());
        }
        if let (Some(text), Some(choices)) = (
            self.text.as_mut(),
            v.get("choices").and_then(Value::as_array),
        ) {
            for c in choices {
                let piece = c
                    .pointer("/delta/content")
                    .or_else(|| c.get("text"))
                    .and_then(Value::as_str);
                if let Some(piece) = piece {
                    text.push_str(piece);
                }
            }
        }
    }
}

/// A usable client-sent request ID: 1 to 200 visible ASCII characters.
fn valid_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.len() <= 200 && s.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| s.to_owned())
}

fn new_request_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

/// The metrics label of a path: a known route, never the raw path (whose
/// values are unbounded).
pub fn route_label(path: &str) -> &'static str {
    const KNOWN: [(&str, &str); 14] = [
        ("chat/completions", "/v1/chat/completions"),
        ("completions", "/v1/completions"),
        ("embeddings", "/v1/embeddings"),
        ("models", "/v1/models"),
        ("responses", "/v1/responses"),
        ("messages", "/v1/messages"),
        ("rerank", "/v1/rerank"),
        ("generation", "/v1/generation"),
        ("key", "/v1/key"),
        ("auth/key", "/v1/auth/key"),
        ("credits", "/v1/credits"),
        ("providers", "/v1/providers"),
        ("models/user", "/v1/models/user"),
        ("models/count", "/v1/models/count"),
    ];
    if let Some(tail) = path
        .strip_prefix("/api/v1/")
        .or_else(|| path.strip_prefix("/v1/"))
    {
        let tail = tail.trim_end_matches('/');
        return KNOWN
            .iter()
            .find(|(k, _)| *k == tail)
            .map_or("/v1/other", |(_, route)| route);
    }
    match path {
        "/health" => "/health",
        "/metrics" => "/metrics",
        "/admin/keys" => "/admin/keys",
        p if p.starts_with("/admin/keys/") && p.ends_with("/reactivate") => {
            "/admin/keys/{id}/reactivate"
        }
        p if p.starts_with("/admin/keys/") => "/admin/keys/{id}",
        p if p.starts_with("/admin") => "/admin/other",
        _ => "other",
    }
}

/// The outermost middleware: request ID, the record, the response body
/// wrapper.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(valid_request_id)
        .unwrap_or_else(new_request_id);
    let path = req.path().to_owned();
    let log_bodies = req
        .app_data::<web::Data<Shared>>()
        .is_some_and(|s| s.config.log_bodies);
    let id_header = HeaderValue::from_str(&id).ok();
    let record = Record {
        id,
        time: crate::logging::rfc3339_now(),
        method: req.method().clone(),
        route: route_label(&path),
        proxied: path.starts_with("/v1/") || path.starts_with("/api/v1/"),
        quiet: path == "/health" || path == "/metrics",
        client: req.peer_addr().map(|a| a.ip().to_string()),
        path,
        log_bodies,
        started: Some(Instant::now()),
        ..Record::default()
    };
    let ctx = Ctx(Some(Rc::new(RefCell::new(record))));
    // (The request must not be cloned here: routing needs it unshared.)
    let mut res = match CURRENT.scope(ctx.clone(), next.call(req)).await {
        Ok(res) => res,
        Err(e) => {
            // Handlers turn their errors into responses; this is only a
            // middleware's error, answered by actix outside of this one.
            let status = e.as_response_error().status_code().as_u16();
            ctx.with(|r| {
                r.status = status;
                r.response_started();
            });
            ctx.finish();
            return Err(e);
        }
    };
    if let Some(v) = id_header {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    let sse = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("text/event-stream"));
    let status = res.status().as_u16();
    let judged = res
        .response_mut()
        .extensions_mut()
        .remove::<JudgedUsage>()
        .map(|j| j.0);
    let mut guard = None;
    ctx.with(|r| {
        r.status = status;
        r.judged_usage = judged;
        r.response_started();
        if sse {
            r.sse = Some(SseScan {
                text: r.log_bodies.then(String::new),
                ..SseScan::default()
            });
            guard = Some(metrics().stream_started());
        }
    });
    Ok(res.map_body(move |_, body| LoggedBody {
        body: Box::pin(body),
        ctx,
        _stream: guard,
    }))
}

/// A response body that reports what passes through it to its record, and
/// finishes the record when it ends or is dropped.
pub struct LoggedBody<B> {
    body: Pin<Box<B>>,
    ctx: Ctx,
    _stream: Option<StreamGuard>,
}

impl<B: MessageBody> MessageBody for LoggedBody<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        let poll = this.body.as_mut().poll_next(cx);
        match &poll {
            Poll::Ready(Some(Ok(chunk))) => this.ctx.chunk(chunk),
            Poll::Ready(Some(Err(_))) => this.ctx.with(|r| r.body_failed = true),
            Poll::Ready(None) => this.ctx.finish(),
            Poll::Pending => {}
        }
        poll
    }
}

impl<B> Drop for LoggedBody<B> {
    fn drop(&mut self) {
        self.ctx.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn routes_are_bounded() {
        assert_eq!(route_label("/v1/chat/completions"), "/v1/chat/completions");
        assert_eq!(
            route_label("/api/v1/chat/completions/"),
            "/v1/chat/completions"
        );
        assert_eq!(route_label("/v1/anything/else"), "/v1/other");
        assert_eq!(
            route_label("/admin/keys/1a2b/reactivate"),
            "/admin/keys/{id}/reactivate"
        );
        assert_eq!(route_label("/admin/keys/1a2b"), "/admin/keys/{id}");
        assert_eq!(route_label("/wp-login.php"), "other");
    }

    #[test]
    fn sse_scan_finds_the_last_usage_across_chunk_boundaries() {
        let mut scan = SseScan {
            text: Some(String::new()),
            ..SseScan::default()
        };
        let stream = concat!(
            ": OPENROUTER PROCESSING\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\r\n\r\n",
            "data: [DONE]\n\n"
        )
        .as_bytes();
        for chunk in stream.chunks(7) {
            scan.feed(chunk);
        }
        assert_eq!(
            scan.usage,
            Some(json!({"prompt_tokens": 3, "completion_tokens": 2}))
        );
        assert_eq!(scan.text.as_deref(), Some("Hello"));
        assert!(scan.line.is_empty());
    }

    #[test]
    fn sse_scan_skips_overlong_lines() {
        let mut scan = SseScan::default();
        let mut long = b"data: {\"usage\":{\"x\":1},\"pad\":\"".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_LINE + 10));
        long.extend_from_slice(b"\"}\n\n");
        for chunk in long.chunks(64 * 1024) {
            scan.feed(chunk);
        }
        assert!(scan.usage.is_none());
        scan.feed(b"data: {\"usage\":{\"total_tokens\":5}}\n\n");
        assert_eq!(scan.usage, Some(json!({"total_tokens": 5})));
    }

    #[test]
    fn request_ids() {
        assert_eq!(
            valid_request_id(&HeaderValue::from_static("abc-123")),
            Some("abc-123".to_owned())
        );
        assert_eq!(valid_request_id(&HeaderValue::from_static("a b")), None);
        assert_eq!(valid_request_id(&HeaderValue::from_static("")), None);
        let id = new_request_id();
        assert_eq!(id.len(), 32);
        assert_ne!(id, new_request_id());
    }
}
