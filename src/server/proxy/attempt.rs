//! One upstream attempt, as phases: **send** the request with a key,
//! **judge** the answer (read it, or hold a stream until its first event,
//! and classify it), **decide** what it means ([`crate::pool::decide`]),
//! apply that to the pool, and **respond**: build the client's answer, or
//! keep it as the fallback while the request tries again.

use super::decode;
use super::keepalive::Holding;
use super::outgoing::Outgoing;
use crate::openrouter::classify::{self, Answer, Verdict};
use crate::openrouter::dialect::{Dialect, Role};
use crate::openrouter::stream::Watch;
use crate::openrouter::usage::{self, Usage};
use crate::pool::decide::{self, Attempted, Decision, Failure};
use crate::secret::{ApiKey, redact};
use crate::server::errors::{ApiError, set_retry_headers};
use crate::server::relay::{self, BodyError, Upstream};
use crate::server::request_log::{AttemptRecord, RequestCtx};
use crate::server::shared::Shared;
use actix_web::HttpResponse;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use bytes::Bytes;
use chrono::Utc;
use std::time::{Duration, Instant};

/// How much of a non-streaming 2xx body is read to look for an error inside
/// it; longer bodies are relayed without that check.
const CLASSIFY_CAP: usize = 8 * 1024 * 1024;
/// How much of an error body is read.
const ERROR_BODY_CAP: usize = 1024 * 1024;
/// How much of an SSE stream is held while waiting for its first content
/// event.
const HOLD_CAP: usize = 1024 * 1024;
/// The header naming the generation an answer is (OpenRouter's ID).
const X_GENERATION_ID: HeaderName = HeaderName::from_static("x-generation-id");

const X_ORPROXY_KEY: HeaderName = HeaderName::from_static("x-orproxy-key");
const X_ORPROXY_ATTEMPTS: HeaderName = HeaderName::from_static("x-orproxy-attempts");

/// A response for the client, with the usage found while judging its
/// whole body (`Some(None)`: judged, none there).
pub(crate) struct Reply {
    pub(crate) res: HttpResponse,
    pub(crate) usage: Option<Option<Usage>>,
}

/// What to do after an attempt.
pub(crate) enum Step {
    /// Send this to the client.
    Respond(Reply),
    /// Stop: the client gets this error (a hang is not waited for twice).
    Stop(ApiError),
    /// Try again (on the best key) after `delay`, unless attempts or time
    /// ran out; then send `fallback`.
    Retry { delay: Duration, fallback: Fallback },
}

/// What the client gets when no attempt is left.
pub(crate) enum Fallback {
    /// The last upstream answer, as it came (plus retry hints).
    Upstream(Reply),
    /// An error of orproxy's own.
    Error(ApiError),
}

impl Fallback {
    /// The answer for the client. An upstream 429 that names no wait (a key's
    /// rate limit, when attempts ran out) gets the pool's own estimate: the
    /// seconds until some key can serve again.
    pub(crate) fn into_reply(self, shared: &Shared) -> Result<Reply, ApiError> {
        match self {
            Fallback::Upstream(mut reply) => {
                if reply.res.status() == StatusCode::TOO_MANY_REQUESTS
                    && !reply.res.headers().contains_key(header::RETRY_AFTER)
                {
                    let now = Utc::now();
                    if let Some(at) = shared.next_available(now) {
                        let secs = crate::clock::whole_secs_until(at, now);
                        set_retry_headers(reply.res.headers_mut(), secs, false);
                    }
                }
                Ok(reply)
            }
            Fallback::Error(e) => Err(e),
        }
    }
}

/// Attempt number `attempt_no` of `request` with `key` (none for a keyless
/// endpoint): what to do next, and the attempt's record.
pub(crate) async fn run(
    shared: &Shared,
    client: &awc::Client,
    request: &Outgoing,
    key: Option<(&str, &ApiKey)>,
    attempt_no: u32,
    ctx: &RequestCtx,
    holding: &Holding,
) -> (Step, AttemptRecord) {
    let started = Instant::now();
    let judged = match send(shared, client, request, key).await {
        Ok(sent) => judge(sent, request, ctx.log_bodies(), holding).await,
        Err(failure) => Err(failure),
    };
    let attempted = match &judged {
        Ok(j) => j.attempted(),
        Err(failure) => Attempted::Failed(failure.clone()),
    };
    let now = Utc::now();
    let facts = decide::Facts {
        model: request.model.as_deref(),
        attempt_no,
        key_errors: request.endpoint.key_errors,
    };
    let decision = decide::decide(&attempted, &facts, now);
    let key_id = key.map(|(id, _)| id);
    apply(
        shared,
        key_id,
        &attempted,
        &decision,
        request.model.as_deref(),
    );
    log_attempt(&attempted, &decision, key_id, attempt_no);
    let record = AttemptRecord {
        key: key_id.map(str::to_owned),
        outcome: attempted.label(),
        status: match &attempted {
            Attempted::Answered { status, .. } => Some(*status),
            Attempted::Failed(_) => None,
        },
        took: started.elapsed(),
        error: match &attempted {
            Attempted::Failed(failure) => Some(failure.message()),
            Attempted::Answered { .. } => None,
        },
    };
    let step = respond(judged, &decision, (shared, request), key, attempt_no, ctx);
    (step, record)
}

/// The upstream's answer, its head read.
struct Sent {
    status: StatusCode,
    headers: HeaderMap,
    body: Upstream,
}

/// Send `request` with `key`, and wait for the answer's head.
async fn send(
    shared: &Shared,
    client: &awc::Client,
    request: &Outgoing,
    key: Option<(&str, &ApiKey)>,
) -> Result<Sent, Failure> {
    let mut builder = client.request(request.method.clone(), &request.url);
    // The client builds requests without default headers: these are all.
    builder.headers_mut().clone_from(&request.headers);
    if let Some((_, key)) = key {
        builder =
            builder.insert_header((header::AUTHORIZATION, format!("Bearer {}", key.expose())));
    }
    let sent = if request.body.is_empty() && matches!(request.method, Method::GET | Method::HEAD) {
        builder.send().await
    } else {
        builder.send_body(request.body.clone()).await
    };
    let response = sent.map_err(|e| match e {
        awc::error::SendRequestError::Timeout => {
            Failure::HeadersTimeout(shared.config.headers_timeout.as_secs())
        }
        awc::error::SendRequestError::Connect(awc::error::ConnectError::Timeout) => {
            Failure::ConnectTimeout(shared.config.connect_timeout.as_secs())
        }
        other => Failure::Unreachable(redact(&other.to_string())),
    })?;
    let status = response.status();
    // The headers move out of the upstream's answer (nothing reads them
    // there any more) and into the client's.
    let mut headers = HeaderMap::new();
    let response = response.map_body(|head, payload| {
        headers = std::mem::take(&mut head.headers);
        payload
    });
    Ok(Sent {
        status,
        headers,
        body: Box::pin(response),
    })
}

/// An answer read far enough to be judged.
struct Judged {
    status: StatusCode,
    headers: HeaderMap,
    verdict: Verdict,
    /// `X-RateLimit-Limit`, read for an account cap's verdict.
    rate_limit: Option<u32>,
    /// What was read, to be relayed first.
    prefix: Vec<Bytes>,
    /// The rest of the body, when it did not end yet.
    rest: Option<Upstream>,
    /// An SSE stream read by events: what it showed so far.
    watch: Option<Watch>,
    content_length: Option<u64>,
    /// The usage in a whole JSON body, found while judging it.
    usage: Option<Option<Usage>>,
    /// The generation ID a whole JSON body named.
    generation: Option<String>,
}

impl Judged {
    fn attempted(&self) -> Attempted {
        Attempted::Answered {
            status: self.status.as_u16(),
            verdict: self.verdict.clone(),
            rate_limit: self.rate_limit,
        }
    }
}

fn broken(e: BodyError) -> Failure {
    match e {
        BodyError::Idle(secs) => Failure::Silent(secs),
        BodyError::Broken(_) => Failure::Broken(e.to_string()),
    }
}

fn cut(what: &str) -> Failure {
    broken(BodyError::Broken(what.to_owned()))
}

/// What judging read.
#[derive(Default)]
struct Read {
    /// The bytes classified: a whole body, or the error a stream reported
    /// before its first content event. None: judged by the status alone.
    judged: Option<Bytes>,
    /// What is relayed first.
    prefix: Vec<Bytes>,
    /// The rest of the body.
    rest: Option<Upstream>,
    /// A stream read by events.
    watch: Option<Watch>,
    /// The usage of a whole JSON body (`Some(None)`: none there).
    usage: Option<Option<Usage>>,
    /// The generation ID of a whole JSON body.
    generation: Option<String>,
}

/// Hold a successful stream through its preamble (comments,
/// `response.created`, `message_start`...) until its first content event,
/// at most [`HOLD_CAP`] bytes: an error before it is judged like an HTTP
/// error, and the request may still try another key. `holding` says how
/// long it has been held (for keep-alive comments).
async fn hold_stream(
    mut body: Upstream,
    dialect: Dialect,
    idle: Duration,
    text: bool,
    holding: &Holding,
) -> Result<Read, Failure> {
    let _held = holding.start();
    let mut watch = Watch::new(dialect, text);
    let mut prefix = Vec::new();
    let mut held = 0;
    let mut ended = false;
    loop {
        while let Some((raw, role)) = watch.next_event(ended) {
            held += raw.len();
            prefix.push(raw);
            let judged = match role {
                Role::Preamble => continue,
                Role::Content | Role::End => None,
                Role::Error(error) => Some(Bytes::from(error.body)),
            };
            return Ok(Read {
                judged,
                prefix,
                rest: (!ended).then_some(body),
                watch: Some(watch),
                ..Read::default()
            });
        }
        if ended {
            return Err(cut("the stream ended before its first content event"));
        }
        if held + watch.pending() >= HOLD_CAP {
            // Too long a preamble to hold: relayed as it comes.
            return Ok(Read {
                prefix,
                rest: Some(body),
                watch: Some(watch),
                ..Read::default()
            });
        }
        match relay::next_chunk(&mut body, idle).await.map_err(broken)? {
            Some(chunk) => watch.push(chunk),
            None => ended = true,
        }
    }
}

/// Read a body whole (up to a cap), checking that a JSON success is whole.
/// A body gzip- or deflate-encoded although none was asked for is decoded
/// (and its `Content-Encoding` removed); one in another encoding is judged
/// by its status alone and relayed as it came.
async fn read_body(
    mut body: Upstream,
    status: StatusCode,
    request: &Outgoing,
    headers: &mut HeaderMap,
    idle: Duration,
) -> Result<Read, Failure> {
    let cap = if status.is_success() {
        CLASSIFY_CAP
    } else {
        ERROR_BODY_CAP
    };
    let prefix = relay::read_prefix(&mut body, cap, idle)
        .await
        .map_err(broken)?;
    if !prefix.complete {
        // Too long to judge: a large success body, relayed as it comes.
        return Ok(Read {
            prefix: prefix.chunks,
            rest: Some(body),
            ..Read::default()
        });
    }
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if content_length.is_some_and(|n| (prefix.byte_count() as u64) < n) {
        return Err(cut("the connection closed before the whole body arrived"));
    }
    let mut bytes = relay::join(prefix.chunks);
    match decode::encoding(headers) {
        decode::Encoding::Identity => {}
        encoding => match decode::decode(encoding, &bytes, cap) {
            Some(decoded) => {
                bytes = decoded;
                headers.remove(header::CONTENT_ENCODING);
            }
            // Not decodable here: relayed as it came, judged by its status.
            None => {
                return Ok(Read {
                    prefix: vec![bytes],
                    ..Read::default()
                });
            }
        },
    }
    // awc ends a chunked body that the upstream cut off as if it were
    // whole: a JSON success must at least parse.
    let judge_json = status.is_success()
        && !matches!(status, StatusCode::NO_CONTENT | StatusCode::RESET_CONTENT)
        && request.method != Method::HEAD;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let judged = judge_json
        .then(|| usage::judge_json(content_type, &bytes))
        .flatten();
    if judged.as_ref().is_some_and(|j| j.cut) {
        return Err(cut(
            "the connection closed before the whole JSON body arrived",
        ));
    }
    let generation = judged.as_ref().and_then(|j| j.id.clone());
    let usage = judged.map(|j| j.usage.and_then(Usage::from_raw));
    Ok(Read {
        judged: Some(bytes.clone()),
        prefix: vec![bytes],
        usage,
        generation,
        ..Read::default()
    })
}

/// Read the answer far enough to judge it, and classify it. An interim
/// or upgrading answer (1xx) is refused: awc's connection to it is dropped.
async fn judge(
    sent: Sent,
    request: &Outgoing,
    text: bool,
    holding: &Holding,
) -> Result<Judged, Failure> {
    let idle = request.idle;
    let Sent {
        status,
        mut headers,
        body,
    } = sent;
    if status.is_informational() {
        return Err(Failure::Refused(format!(
            "the upstream answered {status}, which orproxy does not relay"
        )));
    }
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let encoded = decode::encoding(&headers) != decode::Encoding::Identity;
    let stream = relay::is_event_stream(&headers);
    let read = if status.is_success() && stream && encoded {
        // An encoded stream cannot be read by events: relayed as opaque
        // bytes as they come.
        Read {
            rest: Some(body),
            ..Read::default()
        }
    } else if status.is_success() && stream {
        hold_stream(body, request.endpoint.dialect, idle, text, holding).await?
    } else {
        read_body(body, status, request, &mut headers, idle).await?
    };
    let judged = read.judged.as_deref();
    let header_pairs: Vec<(&str, &str)> = headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
        .collect();
    let answer = Answer {
        status: status.as_u16(),
        headers: &header_pairs,
        body: judged.unwrap_or_default(),
        model: request.model.as_deref(),
    };
    // A body that was not read (too long, or undecodable) and a stream that
    // reached its content are judged by their status and headers.
    let verdict = match judged {
        None if status.is_success() => Verdict::Success,
        _ => classify::classify(&answer, Utc::now()),
    };
    let rate_limit = verdict
        .is_account_cap()
        .then(|| classify::rate_limit_limit(&answer))
        .flatten();
    drop(header_pairs);
    Ok(Judged {
        status,
        headers,
        verdict,
        rate_limit,
        prefix: read.prefix,
        rest: read.rest,
        watch: read.watch,
        content_length,
        usage: read.usage,
        generation: read.generation,
    })
}

/// Apply `decision` to the pool: the cap noted, the model held, the key's
/// outcome reported.
fn apply(
    shared: &Shared,
    key_id: Option<&str>,
    attempted: &Attempted,
    decision: &Decision,
    model: Option<&str>,
) {
    let now = Utc::now();
    if let (Some(id), Some(kind)) = (key_id, decision.cap) {
        let limit = match attempted {
            Attempted::Answered { rate_limit, .. } => *rate_limit,
            Attempted::Failed(_) => None,
        };
        shared.note_cap(id, kind, limit, true, now);
    }
    if let (Some(model), Some(until)) = (model, decision.hold_model_until) {
        shared.back_off_model(model, until);
    }
    if let Some(id) = key_id {
        shared.report(id, decision.outcome.clone(), now);
    }
}

fn log_attempt(attempted: &Attempted, decision: &Decision, key_id: Option<&str>, n: u32) {
    let key = key_id.unwrap_or("-");
    match attempted {
        Attempted::Failed(failure) => log::warn!(
            target: "orproxy::requests",
            "attempt {n} with key {key}: {}",
            failure.message()
        ),
        Attempted::Answered { status, .. } if decision.retry.is_some() => log::info!(
            target: "orproxy::requests",
            "attempt {n} with key {key}: {status} ({})",
            attempted.label()
        ),
        Attempted::Answered { .. } => {}
    }
}

/// The client's answer, or the fallback while the request tries again.
fn respond(
    judged: Result<Judged, Failure>,
    decision: &Decision,
    (shared, request): (&Shared, &Outgoing),
    key: Option<(&str, &ApiKey)>,
    attempt_no: u32,
    ctx: &RequestCtx,
) -> Step {
    let judged = match judged {
        Ok(judged) => judged,
        Err(failure) => {
            let error = ApiError::upstream(&failure);
            return match decision.retry {
                Some(delay) => Step::Retry {
                    delay,
                    fallback: Fallback::Error(error),
                },
                None => Step::Stop(error),
            };
        }
    };
    let extra_retry_after = decision.retry.and(decision.retry_hint);
    if decision.retry.is_none()
        && judged.status.is_success()
        && let Some((key_id, _)) = key
    {
        remember_generation(shared, &judged, key_id);
    }
    let reply = deliver(judged, request, key, attempt_no, extra_retry_after, ctx);
    match decision.retry {
        None => Step::Respond(reply),
        Some(delay) => Step::Retry {
            delay,
            fallback: Fallback::Upstream(reply),
        },
    }
}

/// Note which key served the generation `judged` names (its
/// `X-Generation-Id`, its JSON `id`, or its stream's), for a later `GET
/// /v1/generation`.
fn remember_generation(shared: &Shared, judged: &Judged, key_id: &str) {
    let id = judged
        .headers
        .get(X_GENERATION_ID)
        .and_then(|v| v.to_str().ok())
        .or(judged.generation.as_deref())
        .or_else(|| judged.watch.as_ref().and_then(Watch::generation));
    if let Some(id) = id {
        shared.generations.remember(id, key_id);
    }
}

/// Headers never relayed back to the client: hop-by-hop ones, and those
/// that carry credentials or cookies.
fn dropped_response_header(name: &HeaderName) -> bool {
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
            | "set-cookie"
            | "authorization"
            | "proxy-authenticate"
    )
}

/// The pool key never reaches a client: every occurrence in the relayed
/// headers, and in the bytes read before relaying (a whole body, or a
/// stream's held start), becomes its masked form.
fn mask_key(key: &ApiKey, headers: &mut HeaderMap, prefix: &mut [Bytes], whole: bool) {
    let holding: Vec<HeaderName> = headers
        .iter()
        .filter(|(_, v)| key.masked_ascii_in(v.as_bytes()).is_some())
        .map(|(n, _)| n.clone())
        .collect();
    for name in holding {
        let values: Vec<HeaderValue> = headers
            .get_all(&name)
            .filter_map(|v| match key.masked_ascii_in(v.as_bytes()) {
                Some(masked) => HeaderValue::from_bytes(&masked).ok(),
                None => Some(v.clone()),
            })
            .collect();
        headers.remove(&name);
        for value in values {
            headers.append(name.clone(), value);
        }
    }
    if whole {
        for chunk in prefix.iter_mut() {
            if let Some(masked) = key.masked_in(chunk) {
                *chunk = Bytes::from(masked);
            }
        }
    }
}

/// The response relaying `judged`: the upstream's status and headers
/// (minus hop-by-hop ones) and orproxy's own, then the body.
fn deliver(
    judged: Judged,
    request: &Outgoing,
    key: Option<(&str, &ApiKey)>,
    attempt_no: u32,
    extra_retry_after: Option<Duration>,
    ctx: &RequestCtx,
) -> Reply {
    let Judged {
        status,
        mut headers,
        mut prefix,
        rest,
        watch,
        content_length,
        usage,
        ..
    } = judged;
    let sse = watch.is_some();
    headers.retain(|name, _| !dropped_response_header(name));
    let key_id = key.map(|(id, _)| id);
    if let Some((_, key)) = key {
        // A whole body, or a stream's held start: the bytes orproxy read.
        mask_key(key, &mut headers, &mut prefix, rest.is_none() || sse);
    }
    let mut builder = HttpResponse::build(status);
    let mut res = if rest.is_none() && !sse {
        builder.body(relay::join(prefix))
    } else {
        let spec = relay::RelaySpec {
            idle: request.idle,
            content_length,
        };
        let ctx = ctx.clone();
        let key = key_id.unwrap_or("-").to_owned();
        builder.streaming(relay::relay(
            prefix,
            rest,
            spec,
            watch,
            crate::server::disconnect::closed(&request.req),
            Box::new(move |end: relay::End, notes: relay::Notes| {
                log_end(&end, &key);
                ctx.stream_ended(&end, notes);
            }),
        ))
    };
    // A streamed body without a type of its own is typed by actix.
    if !headers.contains_key(header::CONTENT_TYPE)
        && let Some(default) = res.headers().get(header::CONTENT_TYPE)
    {
        headers.insert(header::CONTENT_TYPE, default.clone());
    }
    if let Some(d) = extra_retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(d.as_secs().max(1)));
    }
    if let Some(v) = key_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        headers.insert(X_ORPROXY_KEY, v);
    }
    headers.insert(X_ORPROXY_ATTEMPTS, HeaderValue::from(attempt_no));
    *res.headers_mut() = headers;
    Reply {
        res,
        usage: if sse { None } else { usage },
    }
}

fn log_end(end: &relay::End, key: &str) {
    match end {
        relay::End::Complete => {}
        relay::End::UpstreamFailed(e) => log::warn!(
            target: "orproxy::requests",
            "stream with key {key} broke after it started: {e}"
        ),
        relay::End::Errored(e) => log::warn!(
            target: "orproxy::requests",
            "stream with key {key} ended with the upstream's error after it started: {}",
            crate::escape::clip(&redact(e), 300)
        ),
        relay::End::ClientGone => log::info!(
            target: "orproxy::requests",
            "client went away mid-stream (key {key}); upstream request dropped"
        ),
    }
}
