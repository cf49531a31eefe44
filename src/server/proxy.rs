//! The proxy handler: read the client's request, then for each attempt ask
//! the pool for a key, send upstream, classify the answer, and either relay
//! it or retry on another key, as long as nothing has reached the client.

use super::errors::ApiError;
use super::relay::{self, BodyError, Upstream};
use super::shared::Shared;
use crate::openrouter::classify::{self, Answer, Verdict};
use crate::pool::{CapKind, Choice, Outcome};
use crate::secret::{ApiKey, redact};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::time::{Duration, Instant};

/// One upstream HTTP client per worker (awc's client is not `Send`).
pub struct UpstreamClient {
    client: awc::Client,
    /// `HTTP-Referer` and `X-Title` for requests that send none (when the
    /// configured text is a valid header value), made once.
    referer: Option<HeaderValue>,
    title: Option<HeaderValue>,
}

impl UpstreamClient {
    /// A client with the configured connect timeout, no connection limit, and
    /// the headers timeout applied per request; `referer` and `title` are
    /// sent for clients that do not send their own.
    pub fn new(
        connect_timeout: Duration,
        headers_timeout: Duration,
        referer: &str,
        title: &str,
    ) -> Self {
        let connector = awc::Connector::new().timeout(connect_timeout).limit(0);
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(headers_timeout)
            .disable_redirects()
            .finish();
        Self {
            client,
            referer: HeaderValue::from_str(referer).ok(),
            title: HeaderValue::from_str(title).ok(),
        }
    }
}

const HTTP_REFERER: HeaderName = HeaderName::from_static("http-referer");
const X_TITLE: HeaderName = HeaderName::from_static("x-title");
const X_OPENROUTER_TITLE: HeaderName = HeaderName::from_static("x-openrouter-title");
const X_ORPROXY_KEY: HeaderName = HeaderName::from_static("x-orproxy-key");
const X_ORPROXY_ATTEMPTS: HeaderName = HeaderName::from_static("x-orproxy-attempts");

/// How much of a non-streaming 2xx body is read to look for an error inside
/// it; longer bodies are relayed without that check.
const CLASSIFY_CAP: usize = 8 * 1024 * 1024;
/// How much of an error body is read.
const ERROR_BODY_CAP: usize = 1024 * 1024;
/// How much of an SSE stream is held while waiting for its first event.
const HOLD_CAP: usize = 1024 * 1024;

/// What the client's request is, as far as routing cares.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// Inference endpoints: POST with a JSON body.
    JsonPost,
    /// `GET /models`.
    Models,
    /// Anything else under /v1: forwarded as it is.
    Other,
}

fn endpoint(tail: &str) -> Endpoint {
    match tail.trim_end_matches('/') {
        "chat/completions" | "completions" | "embeddings" | "responses" | "messages" | "rerank" => {
            Endpoint::JsonPost
        }
        "models" => Endpoint::Models,
        _ => Endpoint::Other,
    }
}

/// The two fields orproxy reads from a JSON body. Parsing validates the
/// whole document but copies nothing else.
#[derive(serde::Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
}

/// Whether `model` is one of OpenRouter's free variants, whose limits are
/// the account's free-model caps.
fn is_free_model(model: &str) -> bool {
    model.ends_with(":free")
}

/// Headers never forwarded upstream.
fn drop_request_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "authorization"
            | "host"
            | "content-length"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "accept-encoding"
            | "openai-organization"
            | "openai-project"
    )
}

/// Headers never relayed back to the client.
fn drop_response_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
    )
}

/// The route handler for `/v1/*` and `/api/v1/*`.
pub async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Shared>,
    upstream: web::Data<UpstreamClient>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let path = req.path().to_owned();
    let tail = path
        .strip_prefix("/api/v1/")
        .or_else(|| path.strip_prefix("/v1/"))
        .unwrap_or("")
        .to_owned();
    if tail.is_empty() {
        return Err(ApiError::not_found(&path));
    }
    let kind = endpoint(&tail);
    let method = req.method().clone();
    match kind {
        Endpoint::JsonPost if method != Method::POST => {
            return Err(ApiError::method_not_allowed(method.as_str(), &path, "POST"));
        }
        Endpoint::Models if method != Method::GET && method != Method::HEAD => {
            return Err(ApiError::method_not_allowed(method.as_str(), &path, "GET"));
        }
        _ => {}
    }
    let body = read_body(&req, payload, shared.config.max_body).await?;
    let (model, stream) = if kind == Endpoint::JsonPost {
        let peek: Peek<'_> = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!("The request body is not valid JSON: {e}"))
        })?;
        (
            peek.model.map(Cow::into_owned),
            peek.stream.unwrap_or(false),
        )
    } else {
        (None, false)
    };
    super::request_log::current().request(model.as_deref(), stream, &body);
    let mut url = format!("{}/{}", shared.config.upstream, tail);
    if let Some(q) = req.uri().query() {
        url.push('?');
        url.push_str(q);
    }
    let request = Outgoing {
        req: req.clone(),
        expects_done: matches!(
            tail.trim_end_matches('/'),
            "chat/completions" | "completions"
        ),
        method,
        url,
        headers: forwarded_headers(req.headers(), &upstream),
        body,
        free: model.as_deref().is_some_and(is_free_model),
        model,
        anonymous_ok: kind == Endpoint::Models,
    };
    // A client that leaves before the answer starts cancels the attempts
    // (and with them the upstream request).
    let result = tokio::select! {
        biased;
        () = super::disconnect::closed(&req) => {
            log::info!(
                target: "orproxy::requests",
                "{} {path}: the client went away before the answer started",
                request.method
            );
            Err(ApiError::new(
                StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
                "invalid_request_error",
                "client_closed_request",
                "The client closed the connection",
            ))
        }
        result = run_attempts(&shared, &upstream.client, &request, started) => result,
    };
    // The request's log line is written by `request_log` once the body is sent.
    result
}

/// The client's request as it will be sent upstream (minus the key).
struct Outgoing {
    /// The client's request, to watch its connection while relaying.
    req: HttpRequest,
    /// Chat and text completion streams end with `[DONE]`.
    expects_done: bool,
    method: Method,
    url: String,
    headers: HeaderMap,
    body: Bytes,
    model: Option<String>,
    /// A `:free` model: the account's free-model caps apply.
    free: bool,
    /// `GET /models` needs no key: with none usable, send it without one.
    anonymous_ok: bool,
}

/// Read the client's body, up to `limit` bytes, with at most
/// [`super::CLIENT_TIMEOUT`] between two chunks.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(limit));
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    // A client that stops sending its body must not hold the connection.
    while let Some(chunk) = tokio::time::timeout(super::CLIENT_TIMEOUT, payload.next())
        .await
        .map_err(|_| ApiError::request_timeout(super::CLIENT_TIMEOUT))?
    {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("Cannot read the request body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn forwarded_headers(incoming: &HeaderMap, upstream: &UpstreamClient) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(incoming.len() + 3);
    for (name, value) in incoming.iter() {
        if !drop_request_header(name) {
            out.append(name.clone(), value.clone());
        }
    }
    // Errors are read and classified: ask for bodies we can read.
    out.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    if !incoming.contains_key(HTTP_REFERER)
        && let Some(v) = &upstream.referer
    {
        out.insert(HTTP_REFERER, v.clone());
    }
    if !incoming.contains_key(X_TITLE)
        && !incoming.contains_key(X_OPENROUTER_TITLE)
        && let Some(v) = &upstream.title
    {
        out.insert(X_TITLE, v.clone());
    }
    out
}

/// What to do after an attempt.
enum Next {
    /// Send this to the client.
    Respond(HttpResponse),
    /// Try again (on the best key) after this delay, unless attempts ran out;
    /// then send `fallback`.
    Retry { delay: Duration, fallback: Fallback },
}

/// What the client gets when no attempt is left.
enum Fallback {
    /// The last upstream answer, unchanged (plus retry hints).
    Upstream(HttpResponse),
    /// An error of orproxy's own.
    Error(ApiError),
}

async fn run_attempts(
    shared: &Shared,
    client: &awc::Client,
    request: &Outgoing,
    started: Instant,
) -> Result<HttpResponse, ApiError> {
    let deadline = started + shared.config.max_wait;
    let mut tried: Vec<String> = Vec::new();
    let mut attempts: u32 = 0;
    let mut last: Option<Fallback> = None;
    loop {
        let chosen = match wait_for_key(shared, &tried, deadline, request).await {
            Ok(chosen) => chosen,
            // The last key just got disabled: what the upstream said is more
            // useful than "no usable key".
            Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE => {
                return last.map_or(Err(e), |f| f.into_result(shared));
            }
            Err(e) => return Err(e),
        };
        let Some((id, key)) = chosen else {
            // GET /models with no usable key: OpenRouter serves it without one.
            attempts += 1;
            return match attempt(shared, client, request, None, attempts).await {
                Next::Respond(res) => Ok(res),
                Next::Retry { fallback, .. } => fallback.into_result(shared),
            };
        };
        attempts += 1;
        if !tried.contains(&id) {
            tried.push(id.clone());
        }
        match attempt(shared, client, request, Some((&id, &key)), attempts).await {
            Next::Respond(res) => return Ok(res),
            Next::Retry { delay, fallback } => {
                if attempts >= shared.config.max_attempts {
                    return fallback.into_result(shared);
                }
                if !delay.is_zero() {
                    if Instant::now() + delay
                        > deadline.max(Instant::now() + Duration::from_secs(2))
                    {
                        return fallback.into_result(shared);
                    }
                    tokio::time::sleep(delay).await;
                }
                last = Some(fallback);
            }
        }
    }
}

impl Fallback {
    /// The answer for the client. An upstream 429 that names no wait (a key's
    /// rate limit, when attempts ran out) gets the pool's own estimate: the
    /// seconds until some key can serve again.
    fn into_result(self, shared: &Shared) -> Result<HttpResponse, ApiError> {
        match self {
            Fallback::Upstream(mut res) => {
                if res.status() == StatusCode::TOO_MANY_REQUESTS
                    && !res.headers().contains_key(header::RETRY_AFTER)
                {
                    let now = Utc::now();
                    if let Some(at) = shared.next_available(now) {
                        let secs = whole_seconds_until(at, now);
                        let headers = res.headers_mut();
                        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
                        headers.insert(
                            HeaderName::from_static("retry-after-ms"),
                            HeaderValue::from(secs.saturating_mul(1000)),
                        );
                        if secs > 120 {
                            headers.insert(
                                HeaderName::from_static("x-should-retry"),
                                HeaderValue::from_static("false"),
                            );
                        }
                    }
                }
                Ok(res)
            }
            Fallback::Error(e) => Err(e),
        }
    }
}

/// Seconds from `now` until `at`, rounded up, at least 1.
fn whole_seconds_until(at: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    let delta = at - now;
    u64::try_from(delta.num_seconds() + i64::from(delta.subsec_nanos() > 0))
        .unwrap_or(1)
        .max(1)
}

/// Wait (without spinning) until the pool has a key, or answer why not.
/// `Ok(None)` only when `anonymous_ok` and no key is usable.
async fn wait_for_key(
    shared: &Shared,
    tried: &[String],
    deadline: Instant,
    request: &Outgoing,
) -> Result<Option<(String, ApiKey)>, ApiError> {
    let mut waited = super::metrics::KeyWait::default();
    loop {
        // Register for wake-ups before looking, so none is missed.
        let notified = shared.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now = Utc::now();
        if let Some(model) = request.model.as_deref()
            && let Some(until) = shared.model_backoff(model, now)
        {
            let wait = (until - now).to_std().unwrap_or_default();
            if Instant::now() + wait > deadline {
                return Err(model_busy(model, until, now));
            }
            tokio::time::sleep(wait).await;
            continue;
        }
        match shared.choose(now, tried, request.free) {
            Choice::Use { id, key } => {
                // With a shared store, a free-model request takes a slot in
                // the account's shared counts first; at a cap there, the
                // account is skipped and another key chosen.
                if request.free && !shared.reserve_free(&id).await {
                    continue;
                }
                return Ok(Some((id, key)));
            }
            Choice::Unavailable { .. } if request.anonymous_ok => return Ok(None),
            Choice::Unavailable {
                soonest,
                cooling,
                disabled,
                all_daily,
                ..
            } => {
                let Some(soonest) = soonest else {
                    return Err(no_usable_key(cooling, disabled));
                };
                let wait = (soonest - now).to_std().unwrap_or_default();
                if Instant::now() + wait > deadline {
                    return Err(if all_daily {
                        daily_quota_spent(soonest, now)
                    } else {
                        all_cooling(soonest, now, cooling, disabled)
                    });
                }
                waited.waiting();
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = &mut notified => {}
                }
            }
        }
    }
}

/// Whole seconds from `now` to `until`, rounded up, at least 1.
fn secs_until(until: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    let delta = until - now;
    u64::try_from(delta.num_seconds() + i64::from(delta.subsec_nanos() > 0))
        .unwrap_or(1)
        .max(1)
}

fn human_secs(secs: u64) -> String {
    crate::human::span(chrono::TimeDelta::seconds(
        i64::try_from(secs).unwrap_or(i64::MAX),
    ))
}

/// Every key waits for its account's daily free-model cap.
fn daily_quota_spent(midnight: DateTime<Utc>, now: DateTime<Utc>) -> ApiError {
    let secs = secs_until(midnight, now);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        "daily_free_quota_spent",
        format!(
            "The daily free-model quota of every OpenRouter account in orproxy's pool is spent. \
             It resets at 00:00 UTC ({}, in {}). Paid models still work.",
            crate::human::rfc3339(midnight),
            human_secs(secs)
        ),
    )
    .retry_after(secs)
    .should_retry(false)
}

/// OpenRouter's shared capacity for the model is exhausted for longer than
/// the request may wait.
fn model_busy(model: &str, until: DateTime<Utc>, now: DateTime<Utc>) -> ApiError {
    let secs = secs_until(until, now);
    let mut err = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        "model_at_capacity",
        format!(
            "OpenRouter reports high demand for {model}; no key helps with that. Try again in {}, \
             or use another model (or the `models` fallback list).",
            human_secs(secs)
        ),
    )
    .retry_after(secs);
    if secs > 120 {
        err = err.should_retry(false);
    }
    err
}

fn no_usable_key(cooling: usize, disabled: usize) -> ApiError {
    let message = if cooling + disabled == 0 {
        "orproxy has no API keys. Add one with `orproxy keys add`.".to_owned()
    } else {
        format!(
            "All {disabled} of orproxy's keys are disabled. See why with `orproxy keys list`, \
             then `orproxy keys reactivate --all` or add a key with `orproxy keys add`."
        )
    };
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        "no_usable_key",
        message,
    )
}

fn all_cooling(
    soonest: DateTime<Utc>,
    now: DateTime<Utc>,
    cooling: usize,
    disabled: usize,
) -> ApiError {
    let secs = secs_until(soonest, now);
    let mut err = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        "all_keys_cooling",
        format!(
            "All usable keys are rate-limited: {cooling} cooling, {disabled} disabled. \
             The soonest is free in {}.",
            human_secs(secs)
        ),
    )
    .retry_after(secs);
    if secs > 120 {
        err = err.should_retry(false);
    }
    err
}

/// One upstream attempt, recorded in the request log and metrics.
async fn attempt(
    shared: &Shared,
    client: &awc::Client,
    request: &Outgoing,
    key: Option<(&str, &ApiKey)>,
    attempt_no: u32,
) -> Next {
    let log = super::request_log::current();
    let started = Instant::now();
    let next = attempt_once(shared, client, request, key, attempt_no).await;
    let (status, error, delay) = match &next {
        Next::Respond(res) => (Some(res.status().as_u16()), None, None),
        Next::Retry { delay, fallback } => match fallback {
            Fallback::Upstream(res) => (Some(res.status().as_u16()), None, Some(*delay)),
            Fallback::Error(e) => (None, Some((e.code, e.message.as_str())), Some(*delay)),
        },
    };
    log.attempt(key.map(|k| k.0), status, error, delay, started.elapsed());
    next
}

/// One upstream attempt with `key` (or none), and what to do next.
async fn attempt_once(
    shared: &Shared,
    client: &awc::Client,
    request: &Outgoing,
    key: Option<(&str, &ApiKey)>,
    attempt_no: u32,
) -> Next {
    let mut builder = client.request(request.method.clone(), &request.url);
    // The client builds requests without default headers: these are all.
    builder.headers_mut().clone_from(&request.headers);
    if let Some((_, key)) = key {
        builder =
            builder.insert_header((header::AUTHORIZATION, format!("Bearer {}", key.expose())));
    }
    let key_id = key.map(|(id, _)| id.to_owned());
    let report = |outcome: Outcome| {
        if let Some(id) = &key_id {
            shared.report(id, outcome, Utc::now());
        }
    };
    let sent = if request.body.is_empty() && matches!(request.method, Method::GET | Method::HEAD) {
        builder.send().await
    } else {
        builder.send_body(request.body.clone()).await
    };
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            let (status, what) = match &e {
                awc::error::SendRequestError::Timeout => (
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "The upstream sent no response headers within {} s",
                        shared.config.headers_timeout.as_secs()
                    ),
                ),
                awc::error::SendRequestError::Connect(awc::error::ConnectError::Timeout) => (
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "Connecting to the upstream took longer than {} s",
                        shared.config.connect_timeout.as_secs()
                    ),
                ),
                other => (
                    StatusCode::BAD_GATEWAY,
                    format!("Cannot reach the upstream: {}", redact(&other.to_string())),
                ),
            };
            log::warn!(
                target: "orproxy::requests",
                "attempt {attempt_no} with key {}: {what}",
                key_id.as_deref().unwrap_or("-")
            );
            report(Outcome::Failure {
                reason: what.clone(),
            });
            let code = if status == StatusCode::GATEWAY_TIMEOUT {
                "upstream_timeout"
            } else {
                "upstream_unreachable"
            };
            return Next::Retry {
                delay: backoff(attempt_no),
                fallback: Fallback::Error(ApiError::new(status, "upstream_error", code, what)),
            };
        }
    };
    let status = response.status();
    // The headers move out of the upstream's answer (nothing reads them there
    // any more) and into the client's.
    let mut head_headers = HeaderMap::new();
    let response = response.map_body(|head, payload| {
        head_headers = std::mem::take(&mut head.headers);
        payload
    });
    let mut body: Upstream = Box::pin(response);
    let idle = shared.config.idle_timeout;
    let content_length = head_headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let content_type = head_headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let is_sse = content_type.is_some_and(|ct| ct.trim_start().starts_with("text/event-stream"));

    // Read enough of the answer to judge it.
    let cap = if !status.is_success() {
        ERROR_BODY_CAP
    } else {
        CLASSIFY_CAP
    };
    // awc ends a chunked body that the upstream cut off as if it were whole:
    // a JSON success must at least parse.
    let judge_json = status.is_success()
        && !matches!(status, StatusCode::NO_CONTENT | StatusCode::RESET_CONTENT)
        && request.method != Method::HEAD;
    // The usage in a whole JSON body, found while judging it (for the log).
    let mut judged_usage = None;
    let (judged_bytes, relay_prefix, rest): (Option<Bytes>, Vec<Bytes>, Option<Upstream>) =
        if status.is_success() && is_sse {
            match relay::hold_first_event(&mut body, HOLD_CAP, idle).await {
                Ok(held) if held.ended && held.first.is_none() => {
                    let e = BodyError::Broken("the stream ended before its first event".to_owned());
                    return broken_body(&report, e, attempt_no);
                }
                Ok(held) => {
                    let rest = (!held.ended).then_some(body);
                    (held.first.map(Bytes::from), vec![held.bytes], rest)
                }
                Err(e) => return broken_body(&report, e, attempt_no),
            }
        } else {
            match relay::read_prefix(&mut body, cap, idle).await {
                Ok(prefix)
                    if prefix.complete
                        && content_length.is_some_and(|n| (prefix.byte_count() as u64) < n) =>
                {
                    let e = BodyError::Broken(
                        "the connection closed before the whole body arrived".to_owned(),
                    );
                    return broken_body(&report, e, attempt_no);
                }
                Ok(prefix) if prefix.complete => {
                    let bytes = relay::join(prefix.chunks);
                    let judged = judge_json
                        .then(|| relay::judge_json(content_type, &bytes))
                        .flatten();
                    if judged.as_ref().is_some_and(|j| j.cut) {
                        let e = BodyError::Broken(
                            "the connection closed before the whole JSON body arrived".to_owned(),
                        );
                        return broken_body(&report, e, attempt_no);
                    }
                    judged_usage = judged.map(|j| j.usage);
                    (Some(bytes.clone()), vec![bytes], None)
                }
                // Too long to judge: a large success body, relayed as it comes.
                Ok(prefix) => (None, prefix.chunks, Some(body)),
                Err(e) => return broken_body(&report, e, attempt_no),
            }
        };

    let header_pairs: Vec<(&str, &str)> = head_headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
        .collect();
    let verdict = match &judged_bytes {
        Some(bytes) => classify::classify(
            &Answer {
                status: status.as_u16(),
                headers: &header_pairs,
                body: bytes,
                model: request.model.as_deref(),
            },
            Utc::now(),
        ),
        None if status.is_success() => Verdict::Success,
        None => Verdict::Other,
    };

    // The client's answer (`res`, from `deliver`) gets the upstream's
    // headers (minus hop-by-hop ones) and orproxy's own.
    let answer =
        |mut res: HttpResponse, mut headers: HeaderMap, extra_retry_after: Option<Duration>| {
            headers.retain(|name, _| !drop_response_header(name));
            // A streamed body without a type of its own is typed by actix.
            if !headers.contains_key(header::CONTENT_TYPE)
                && let Some(default) = res.headers().get(header::CONTENT_TYPE)
            {
                headers.insert(header::CONTENT_TYPE, default.clone());
            }
            if let Some(d) = extra_retry_after {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(d.as_secs().max(1)));
            }
            if let Some(v) = key_id
                .as_deref()
                .and_then(|id| HeaderValue::from_str(id).ok())
            {
                headers.insert(X_ORPROXY_KEY, v);
            }
            headers.insert(X_ORPROXY_ATTEMPTS, HeaderValue::from(attempt_no));
            *res.headers_mut() = headers;
            res
        };
    let deliver =
        |prefix: Vec<Bytes>, rest: Option<Upstream>, usage: Option<Option<Box<RawValue>>>| {
            let mut builder = HttpResponse::build(status);
            if rest.is_none() && !is_sse {
                let mut res = builder.body(relay::join(prefix));
                if let Some(usage) = usage {
                    res.extensions_mut()
                        .insert(super::request_log::JudgedUsage(usage));
                }
                return res;
            }
            let key_for_log = key_id.clone();
            let log = super::request_log::current();
            builder.streaming(relay::relay(
                prefix,
                rest,
                relay::RelaySpec {
                    idle,
                    sse: is_sse,
                    expects_done: request.expects_done,
                    content_length,
                },
                super::disconnect::closed(&request.req),
                Box::new(move |end: relay::End| {
                    log.stream_end(&end);
                    let key = key_for_log.as_deref().unwrap_or("-");
                    match end {
                        relay::End::Complete => {}
                        relay::End::UpstreamFailed(e) => log::warn!(
                            target: "orproxy::requests",
                            "stream with key {key} broke after it started: {e}"
                        ),
                        relay::End::ClientGone => log::info!(
                            target: "orproxy::requests",
                            "client went away mid-stream (key {key}); upstream request dropped"
                        ),
                    }
                }),
            ))
        };

    let reason = verdict.reason();
    super::request_log::current().verdict(reason);
    // The upstream's own wait hint, for its answer if it goes to the client.
    let hint = match &verdict {
        Verdict::ModelCapacity { retry_after } | Verdict::ProviderLimited { retry_after } => {
            Some(*retry_after)
        }
        Verdict::Transient {
            retry_after: Some(d),
            ..
        } => Some(*d),
        _ => None,
    };
    let now = Utc::now();
    let cap = || {
        classify::rate_limit_limit(&Answer {
            status: status.as_u16(),
            headers: &header_pairs,
            body: judged_bytes.as_deref().unwrap_or_default(),
            model: request.model.as_deref(),
        })
    };
    let cooldown = |until, account_wide, free_only| Outcome::Cooldown {
        until,
        reason: reason.to_owned(),
        account_wide,
        free_only,
    };
    let retry_now = Some(Duration::ZERO);
    let (outcome, next) = match verdict {
        Verdict::Success => (Outcome::Success, None),
        Verdict::ClientError => (Outcome::Neutral, None),
        // The account's free-model caps: park the account's keys for free
        // models (paid models still work), and remember the cap.
        Verdict::AccountPerMinute { until } => {
            if let Some(id) = &key_id {
                shared.note_cap(id, CapKind::PerMinute, cap(), true, now);
            }
            (cooldown(until, true, true), retry_now)
        }
        Verdict::AccountDaily { until } => {
            if let Some(id) = &key_id {
                shared.note_cap(id, CapKind::PerDay, cap(), true, now);
            }
            (cooldown(until, true, true), retry_now)
        }
        Verdict::InsufficientCredits { until } => (cooldown(until, true, false), retry_now),
        Verdict::KeyRateLimited { until }
        | Verdict::KeyLimit {
            until: Some(until), ..
        } => (cooldown(until, false, false), retry_now),
        Verdict::KeyLimit { until: None, .. } => (
            Outcome::Disable {
                reason: "OpenRouter: key limit exceeded (total limit)".to_owned(),
                recoverable: true,
            },
            retry_now,
        ),
        Verdict::InvalidKey { reason } => (
            Outcome::Disable {
                reason: format!("401 from OpenRouter: {}", redact(&reason)),
                recoverable: false,
            },
            retry_now,
        ),
        // Not the key's fault: no key helps. The model backs off for every
        // request; this one waits for it within --max-wait.
        Verdict::ModelCapacity { retry_after } => match request.model.as_deref() {
            Some(model) => {
                shared.back_off_model(
                    model,
                    now + chrono::TimeDelta::from_std(retry_after).unwrap_or_default(),
                );
                (Outcome::Neutral, retry_now)
            }
            None => (Outcome::Neutral, Some(retry_after)),
        },
        Verdict::ProviderLimited { retry_after } => (Outcome::Neutral, Some(retry_after)),
        Verdict::Transient {
            provider,
            retry_after,
        } => (
            if provider {
                Outcome::Neutral
            } else {
                Outcome::Failure {
                    reason: format!("HTTP {} ({reason})", status.as_u16()),
                }
            },
            Some(retry_after.unwrap_or_else(|| backoff(attempt_no))),
        ),
        Verdict::Other => (
            Outcome::Failure {
                reason: format!("HTTP {}", status.as_u16()),
            },
            Some(backoff(attempt_no)),
        ),
    };
    if let Some(delay) = next {
        log::info!(
            target: "orproxy::requests",
            "attempt {attempt_no} with key {}: {} ({reason})",
            key_id.as_deref().unwrap_or("-"),
            status.as_u16()
        );
        report(outcome);
        // The client never saw this answer; if attempts run out it gets it
        // as the upstream sent it, with an honest Retry-After when known.
        let retry_hint = hint.or((!delay.is_zero()).then_some(delay));
        return Next::Retry {
            delay,
            fallback: Fallback::Upstream(answer(
                deliver(relay_prefix, rest, judged_usage),
                head_headers,
                retry_hint,
            )),
        };
    }
    report(outcome);
    Next::Respond(answer(
        deliver(relay_prefix, rest, judged_usage),
        head_headers,
        None,
    ))
}

fn broken_body(report: &impl Fn(Outcome), e: BodyError, attempt_no: u32) -> Next {
    let (status, code) = match e {
        BodyError::Idle(_) => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
        BodyError::Broken(_) => (StatusCode::BAD_GATEWAY, "upstream_error"),
    };
    let message = format!("The upstream answer broke off before it could be relayed: {e}");
    report(Outcome::Failure {
        reason: message.clone(),
    });
    Next::Retry {
        delay: backoff(attempt_no),
        fallback: Fallback::Error(ApiError::new(status, "upstream_error", code, message)),
    }
}

/// Short exponential back-off between attempts after transient failures.
fn backoff(attempt_no: u32) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << attempt_no.min(4)).min(2000))
}
