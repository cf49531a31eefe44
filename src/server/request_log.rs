//! The record of one request: created by [`middleware`] when the request
//! arrives, handed to the handler as its [`RequestCtx`] (an explicit
//! parameter), given the proxy's [`Trace`] when the handler is done, and
//! finished when the response body has been sent (or dropped). Then it
//! becomes one JSON line in `requests-YYYY-MM-DD.log`, one readable console
//! line, and metrics ([`Record::observe`], the one place a request's
//! metrics are recorded, but for the tokens and cost only known at the end:
//! [`Record::spent`], which also hands them to the usage ledger).
//!
//! The response body is wrapped ([`LoggedBody`]) to measure time to first
//! byte and bytes as they pass; a stream's usage and text come from the
//! relay, which reads it by events ([`Notes`]).

use super::metrics::{StreamGuard, metrics};
use super::relay::{End, Notes};
use super::shared::Shared;
use crate::model::{NO_MODEL, UsageTotals};
use crate::openrouter::usage::Usage;
use crate::secret::redact;
use crate::sync::usage::Tally;
use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, FromRequest, HttpMessage, HttpRequest, web};
use bytes::Bytes;
use serde::{Serialize, Serializer};
use serde_json::Value;
use std::cell::RefCell;
use std::future::{Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The request ID header, taken from the client or generated, and echoed.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Largest body kept for `--log-bodies`, and largest non-streamed body
/// searched for usage.
const MAX_LOGGED_BODY: usize = 1024 * 1024;
/// Longest error message copied into the record (characters).
const MAX_ERROR: usize = 500;
/// Longest model name kept in the record.
const MAX_MODEL: usize = 200;
/// Longest path kept in the record.
const MAX_PATH: usize = 1000;
/// Longest method kept in the record (actix takes any token).
const MAX_METHOD: usize = 20;

/// One upstream attempt, as the proxy reports it and the log keeps it.
#[derive(Debug, Serialize)]
pub(crate) struct AttemptRecord {
    /// The key's ID (none for a keyless request).
    pub(crate) key: Option<String>,
    /// The verdict on the answer, or orproxy's error code when there was none.
    pub(crate) outcome: &'static str,
    /// The upstream's status, when it answered.
    pub(crate) status: Option<u16>,
    /// How long the attempt took, until its answer could be judged.
    #[serde(rename = "ms", serialize_with = "as_millis")]
    pub(crate) took: Duration,
    /// orproxy's message, when the upstream gave no answer to judge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

fn as_millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(millis(*d))
}

/// What the proxy learned while it handled one request: handed to the
/// request's record, once, when the handler is done.
#[derive(Debug, Default)]
pub(crate) struct Trace {
    /// The body's `model`.
    pub(crate) model: Option<String>,
    /// The body's `stream` (for peeked bodies).
    pub(crate) stream: Option<bool>,
    /// The request body, kept only with `--log-bodies`.
    pub(crate) request_body: Option<Bytes>,
    /// Each upstream attempt, in order.
    pub(crate) attempts: Vec<AttemptRecord>,
    /// Each wait for a free key.
    pub(crate) key_waits: Vec<Duration>,
    /// Time slept between attempts (back-off).
    pub(crate) slept: Duration,
    /// The usage found while judging the whole JSON body that was relayed
    /// (`Some(None)`: judged, and none there): then the body is not
    /// searched again.
    pub(crate) judged_usage: Option<Option<Usage>>,
}

impl Trace {
    fn upstream_time(&self) -> Duration {
        self.attempts.iter().map(|a| a.took).sum()
    }

    fn waited(&self) -> Duration {
        self.key_waits.iter().sum::<Duration>() + self.slept
    }
}

/// A handle on one request's record, passed to the handler explicitly (it
/// is an extractor). Cheap to clone.
#[derive(Clone)]
pub(crate) struct RequestCtx(Rc<RefCell<Record>>);

impl FromRequest for RequestCtx {
    type Error = Error;
    type Future = Ready<Result<Self, Error>>;

    /// The record [`middleware`] made, or a detached one (never logged)
    /// for a request that did not pass through it.
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let ctx = req.extensions().get::<RequestCtx>().cloned();
        ready(Ok(ctx.unwrap_or_else(|| {
            RequestCtx(Rc::new(RefCell::new(Record {
                quiet: true,
                ..Record::default()
            })))
        })))
    }
}

impl RequestCtx {
    fn with(&self, f: impl FnOnce(&mut Record)) {
        if let Ok(mut rec) = self.0.try_borrow_mut() {
            f(&mut rec);
        }
    }

    /// Whether message contents are to be logged (`--log-bodies`).
    pub(crate) fn log_bodies(&self) -> bool {
        self.0.try_borrow().is_ok_and(|r| r.log_bodies)
    }

    /// The proxy is done with the request: what it learned. What came from
    /// outside is capped here, so that a request adds a few KiB to the logs
    /// at most, however large its body. Usually before the response's head
    /// is ready; after it for a stream committed while its attempts went on
    /// (then its metrics are recorded now).
    pub(crate) fn proxied(&self, mut trace: Trace) {
        trace.model = trace
            .model
            .map(|m| crate::escape::clip(&m, MAX_MODEL).into_owned());
        for attempt in &mut trace.attempts {
            attempt.error = attempt.error.as_deref().map(clip);
        }
        self.with(|r| {
            r.trace = trace;
            r.traced = true;
            if r.observed {
                r.observe_trace();
            }
        });
    }

    /// The proxy turned the request away before any attempt: it has no
    /// more to tell than an empty trace.
    pub(crate) fn refused(&self) {
        self.with(|r| {
            if !r.traced {
                r.traced = true;
                if r.observed {
                    r.observe_trace();
                }
            }
        });
    }

    /// How a relayed body ended, and what the stream reported.
    pub(crate) fn stream_ended(&self, end: &End, notes: Notes) {
        self.with(|r| {
            r.end = match end {
                End::Complete => None,
                End::Errored(e) => Some(clip(&format!("upstream error: {e}"))),
                End::UpstreamFailed(e) => Some(clip(&format!("upstream failed: {e}"))),
                End::ClientGone => Some("client gone".to_owned()),
            };
            if let Some(usage) = notes.usage {
                r.usage = Some(Usage::Value(usage));
            }
            if notes.text.is_some() {
                r.text = notes.text;
            }
        });
    }

    fn chunk(&self, chunk: &Bytes) {
        self.with(|r| r.chunk(chunk));
    }

    fn finish(&self) {
        self.with(|r| {
            if !r.finished {
                r.finished = true;
                r.finish();
            }
        });
    }
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
    attempts: &'a [AttemptRecord],
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
    method: String,
    path: String,
    route: &'static str,
    client: Option<String>,
    proxied: bool,
    quiet: bool,
    log_bodies: bool,
    started: Option<Instant>,
    trace: Trace,
    status: u16,
    first_byte: Option<Instant>,
    bytes: u64,
    body_failed: bool,
    end: Option<String>,
    /// The response is an SSE stream (never kept whole).
    sse: bool,
    /// A stream's text (`--log-bodies`).
    text: Option<String>,
    whole: Option<Bytes>,
    usage: Option<Usage>,
    /// Where an inference request's usage goes (none for other paths).
    ledger: Option<Arc<Tally>>,
    /// The response's metrics were recorded.
    observed: bool,
    /// The proxy's trace arrived.
    traced: bool,
    finished: bool,
}

impl Record {
    fn chunk(&mut self, chunk: &Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.first_byte.get_or_insert_with(Instant::now);
        self.bytes += chunk.len() as u64;
        if !self.sse && self.bytes == chunk.len() as u64 && chunk.len() <= MAX_LOGGED_BODY {
            self.whole = Some(chunk.clone());
        } else {
            self.whole = None;
        }
    }

    /// The response is ready to go: record the request's metrics now
    /// (rather than when its body ends), so that a scrape right after a
    /// client got its answer sees them. The only place a request's metrics
    /// are recorded.
    fn observe(&mut self) {
        metrics().request(self.route, self.status);
        self.observed = true;
        if self.traced {
            self.observe_trace();
        }
    }

    /// The metrics of the proxy's trace.
    fn observe_trace(&self) {
        let m = metrics();
        for (i, attempt) in self.trace.attempts.iter().enumerate() {
            m.attempt(attempt.outcome, attempt.took, i > 0);
        }
        for wait in &self.trace.key_waits {
            m.key_wait(*wait);
        }
        if self.proxied
            && let Some(started) = self.started
        {
            let spent = started.elapsed();
            m.overhead(
                spent
                    .saturating_sub(self.trace.upstream_time())
                    .saturating_sub(self.trace.waited()),
            );
        }
    }

    /// The usage, the error message and (with `--log-bodies`) the body of a
    /// response that came whole.
    fn read_whole(&mut self) -> (Option<String>, Option<Value>) {
        let Some(body) = &self.whole else {
            return (None, None);
        };
        if self.usage.is_none() {
            self.usage = match self.trace.judged_usage.take() {
                Some(judged) => judged,
                None => Usage::of_json(body),
            };
        }
        let error = (self.status >= 400)
            .then(|| serde_json::from_slice::<Value>(body).ok())
            .flatten()
            .and_then(|v| {
                v.pointer("/error/message")
                    .and_then(Value::as_str)
                    .map(clip)
            });
        let response_body = (self.log_bodies && self.proxied).then(|| body_value(body));
        (error, response_body)
    }

    fn finish(&mut self) {
        let started = self.started.unwrap_or_else(Instant::now);
        let total = started.elapsed();
        let ttfb = self
            .first_byte
            .map(|t| t.saturating_duration_since(started));
        let (error, response_body) = self.read_whole();
        self.spent();
        if self.quiet {
            return;
        }
        let end = self.end.clone().or_else(|| {
            self.body_failed
                .then(|| "the response body failed".to_owned())
        });
        let response_text = self.text.take().filter(|_| self.log_bodies);
        let request_body = self.trace.request_body.as_deref().map(body_value);
        let line = Line {
            time: &self.time,
            id: &self.id,
            method: &self.method,
            path: &self.path,
            client: self.client.as_deref(),
            model: self.trace.model.as_deref(),
            stream: self.trace.stream,
            status: self.status,
            attempts: &self.trace.attempts,
            ttfb_ms: ttfb.map(millis),
            total_ms: millis(total),
            bytes: self.bytes,
            usage: self.usage.as_ref(),
            end: end.as_deref(),
            error: error.as_deref(),
            request_body: request_body.as_ref(),
            response_body: response_body.as_ref(),
            response_text: response_text.as_deref(),
        };
        let mut json = Vec::with_capacity(512);
        if serde_json::to_writer(&mut json, &line).is_ok() {
            crate::logging::request_line(&json);
        }
        self.console(total, ttfb, end.as_deref(), error.as_deref());
    }

    /// What the request spent, to the usage ledger and the metrics: each
    /// attempt OpenRouter answered is a request of its key (an error unless
    /// it succeeded and, for the last, its answer reached the client whole),
    /// and the last one answered gets the tokens and cost of the usage the
    /// answer reported.
    fn spent(&self) {
        let Some(ledger) = &self.ledger else {
            return;
        };
        let answered = |a: &AttemptRecord| a.key.is_some() && a.status.is_some();
        let Some(last) = self.trace.attempts.iter().rposition(answered) else {
            return;
        };
        let counts = self.usage.as_ref().and_then(Usage::counts);
        if let Some(counts) = &counts {
            metrics().spent(counts);
        }
        let broke = self.status >= 400
            || self.body_failed
            || self
                .end
                .as_deref()
                .is_some_and(|e| e.starts_with("upstream"));
        let spent = self.trace.attempts.iter().enumerate().filter_map(|(i, a)| {
            let key = a.key.as_deref().filter(|_| answered(a))?;
            let mut totals = UsageTotals {
                requests: 1,
                errors: u64::from(a.outcome != "ok" || (i == last && broke)),
                ..UsageTotals::default()
            };
            if let Some(c) = counts.filter(|_| i == last) {
                totals.prompt_tokens = c.prompt;
                totals.completion_tokens = c.completion;
                totals.cached_tokens = c.cached;
                totals.reasoning_tokens = c.reasoning;
                totals.cost = c.cost.unwrap_or(0.0);
            }
            Some((key, totals))
        });
        let model = self.trace.model.as_deref().unwrap_or(NO_MODEL);
        ledger.add(chrono::Utc::now().date_naive(), model, spent);
    }

    /// The readable line on the console (built only when it will be shown).
    fn console(
        &self,
        total: Duration,
        ttfb: Option<Duration>,
        end: Option<&str>,
        error: Option<&str>,
    ) {
        let level = if self.status >= 500
            || self.status == 429
            || self.status == 401
            || end.is_some_and(|e| e.starts_with("upstream"))
        {
            log::Level::Warn
        } else {
            log::Level::Info
        };
        if log::log_enabled!(target: "orproxy::requests", level) {
            log::log!(
                target: "orproxy::requests",
                level,
                "{}",
                self.console_line(total, ttfb, end, error)
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
        if let Some(model) = &self.trace.model {
            let _ = write!(s, " model={model}");
        }
        if let Some(stream) = self.trace.stream {
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
        match self.trace.attempts.as_slice() {
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

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A message for the record: masked, at most [`MAX_ERROR`] characters.
fn clip(text: &str) -> String {
    crate::escape::clip(&redact(text), MAX_ERROR).into_owned()
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

/// A usable client-sent request ID: 1 to 200 visible ASCII characters.
fn valid_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.len() <= 200 && s.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| s.to_owned())
}

fn new_request_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

/// The outermost middleware: request ID, the record, the response body
/// wrapper.
pub(crate) async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(valid_request_id)
        .unwrap_or_else(new_request_id);
    let path = req.path().to_owned();
    let shared = req.app_data::<web::Data<Shared>>();
    let log_bodies = shared.is_some_and(|s| s.config.log_bodies);
    let endpoint = super::routes::proxied_tail(&path).map(crate::openrouter::endpoints::lookup);
    // Inference endpoints (those whose body names a model) are metered.
    let ledger = shared
        .filter(|_| endpoint.is_some_and(|e| e.peeked))
        .map(|s| s.usage().clone());
    let id_header = HeaderValue::from_str(&id).ok();
    let record = Record {
        id,
        time: crate::logging::rfc3339_now(),
        method: crate::escape::clip(req.method().as_str(), MAX_METHOD).into_owned(),
        route: super::routes::label(&path),
        proxied: endpoint.is_some(),
        quiet: path == "/health" || path == "/metrics",
        client: req.peer_addr().map(|a| a.ip().to_string()),
        path: crate::escape::clip(&path, MAX_PATH).into_owned(),
        log_bodies,
        ledger,
        started: Some(Instant::now()),
        ..Record::default()
    };
    let ctx = RequestCtx(Rc::new(RefCell::new(record)));
    req.extensions_mut().insert(ctx.clone());
    let mut res = match next.call(req).await {
        Ok(res) => res,
        Err(e) => {
            // Handlers turn their errors into responses; this is only a
            // middleware's error, answered by actix outside of this one.
            let status = e.as_response_error().status_code().as_u16();
            ctx.with(|r| {
                r.status = status;
                r.observe();
            });
            ctx.finish();
            return Err(e);
        }
    };
    if let Some(v) = id_header {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    let sse = super::relay::is_event_stream(res.headers());
    let status = res.status().as_u16();
    let mut guard = None;
    ctx.with(|r| {
        r.status = status;
        r.observe();
        if sse {
            r.sse = true;
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
pub(crate) struct LoggedBody<B> {
    body: Pin<Box<B>>,
    ctx: RequestCtx,
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

    #[test]
    fn an_attempt_is_logged_with_its_milliseconds() {
        let attempt = AttemptRecord {
            key: Some("1a2b3c4d".into()),
            outcome: "ok",
            status: Some(200),
            took: Duration::from_micros(12_345),
            error: None,
        };
        assert_eq!(
            serde_json::to_string(&attempt).unwrap(),
            r#"{"key":"1a2b3c4d","outcome":"ok","status":200,"ms":12}"#
        );
    }
}
