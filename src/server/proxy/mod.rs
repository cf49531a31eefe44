//! The proxy handler for `/v1/*` and `/api/v1/*`, as phases: find the
//! path's endpoint ([`crate::openrouter::endpoints`]), read the body and
//! peek at it, build the outgoing request, then attempts until one answer
//! may go to the client: wait for a key ([`wait`]), then send, judge,
//! decide and respond ([`attempt`]). Attempts go on (on the best key) as
//! long as nothing the client can use has reached it; a streaming client
//! kept waiting gets SSE comments meanwhile ([`keepalive`]). What the
//! request learns goes into its [`Trace`], handed to its record when the
//! attempts are done. Errors orproxy answers are in the endpoint's shape.

mod attempt;
mod connector;
mod decode;
mod keepalive;
mod outgoing;
mod wait;

pub(crate) use outgoing::UpstreamClient;

use super::errors::{ApiError, Kind};
use super::request_log::{RequestCtx, Trace};
use super::shared::Shared;
use actix_web::{HttpRequest, HttpResponse, web};
use attempt::{Fallback, Reply, Step};
use bytes::Bytes;
use outgoing::Outgoing;
use std::borrow::Cow;
use std::time::{Duration, Instant};

/// The two fields orproxy reads from a JSON body. Parsing validates the
/// whole document but copies nothing else.
#[derive(serde::Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
}

/// `model` and `stream` of a body that must be a JSON object.
fn peek(body: &Bytes) -> Result<(Option<String>, bool), ApiError> {
    // serde would read a struct from an array too (`["m", true]`): the
    // body must open an object (0x7b is the opening brace).
    if !body.trim_ascii_start().starts_with(&[0x7b])
        && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
    {
        return Err(ApiError::bad_request(
            "The request body must be a JSON object, like {\"model\": ..., \"messages\": [...]}",
        ));
    }
    let peek: Peek<'_> = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("The request body is not valid JSON: {e}")))?;
    Ok((
        peek.model.map(Cow::into_owned),
        peek.stream.unwrap_or(false),
    ))
}

/// The route handler for `/v1/*` and `/api/v1/*`: errors in the
/// endpoint's shape.
pub(crate) async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Shared>,
    upstream: web::Data<UpstreamClient>,
    ctx: RequestCtx,
) -> Result<HttpResponse, ApiError> {
    let path = req.path();
    let Some(tail) = super::routes::proxied_tail(path).filter(|t| !t.is_empty()) else {
        return Err(ApiError::not_found(path));
    };
    let endpoint = crate::openrouter::endpoints::lookup(tail);
    let shape = endpoint.dialect.error_shape();
    proxy(
        req.clone(),
        endpoint,
        payload,
        shared,
        upstream,
        ctx.clone(),
    )
    .await
    .map_err(|e| {
        ctx.refused();
        e.shaped(shape)
    })
}

/// Sends the request's trace to its record when the attempts are done or
/// dropped (the client left).
struct Traced {
    trace: Trace,
    ctx: RequestCtx,
}

impl Drop for Traced {
    fn drop(&mut self) {
        // The request's log line is written by `request_log` once the body is sent.
        self.ctx.proxied(std::mem::take(&mut self.trace));
    }
}

/// Proxy `req` to `endpoint`.
async fn proxy(
    req: HttpRequest,
    endpoint: &'static crate::openrouter::endpoints::Endpoint,
    payload: web::Payload,
    shared: web::Data<Shared>,
    upstream: web::Data<UpstreamClient>,
    ctx: RequestCtx,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let path = req.path();
    let Some(tail) = super::routes::proxied_tail(path) else {
        return Err(ApiError::not_found(path));
    };
    if let Some(problem) = super::routes::path_problem(req.uri().path()) {
        return Err(ApiError::bad_request(format!(
            "The path {path} has {problem}; orproxy forwards only plain paths"
        )));
    }
    let method = req.method().as_str();
    if !endpoint.methods.allow(method) {
        return Err(ApiError::method_not_allowed(
            method,
            path,
            endpoint.methods.hint(),
        ));
    }
    let config = &shared.config;
    let body =
        super::body::read(req.headers(), payload, config.max_body, config.body_timeout).await?;
    let (model, stream) = if endpoint.peeked {
        peek(&body)?
    } else {
        (None, false)
    };
    let trace = Trace {
        model: model.clone(),
        stream: Some(stream),
        request_body: ctx.log_bodies().then(|| body.clone()),
        ..Trace::default()
    };
    let mut request = Outgoing::new(
        &req,
        (endpoint, tail),
        body,
        model,
        &shared.config,
        &upstream,
    );
    if endpoint.path == "generation" {
        request.served_by = generation_of(&req).and_then(|id| shared.generations.served_by(&id));
    }
    let holding = std::rc::Rc::new(keepalive::Holding::default());
    let work = {
        let (shared, holding, ctx) = (shared.clone(), holding.clone(), ctx.clone());
        async move {
            let mut traced = Traced {
                trace,
                ctx: ctx.clone(),
            };
            let trace = &mut traced.trace;
            let client = &upstream.client;
            let result = attempts(&shared, client, &request, started, trace, &ctx, &holding).await;
            result.map(|mut reply| {
                trace.judged_usage = reply.usage.take();
                reply
            })
        }
    };
    // A client that leaves before the answer starts cancels the attempts
    // (and with them the upstream request).
    let gone = async {
        super::disconnect::closed(&req).await;
        log::info!(
            target: "orproxy::requests",
            "{} {}: the client went away before the answer started",
            req.method(),
            req.path()
        );
    };
    let result = match shared.config.sse_keepalive.filter(|_| stream) {
        // Not a stream, or no keep-alive: the attempts decide the answer.
        None => {
            tokio::select! {
                biased;
                () = gone => Err(ApiError::client_closed()),
                result = work => result,
            }
        }
        // A stream held that long is committed, its attempts moved into its body.
        Some(every) => {
            let mut work: keepalive::Work = Box::pin(work);
            tokio::select! {
                biased;
                () = gone => Err(ApiError::client_closed()),
                result = &mut work => result,
                () = holding.lasted(every) => {
                    return Ok(keepalive::commit(work, req.clone(), endpoint.dialect, every, ctx));
                }
            }
        }
    };
    result.map(|reply| reply.res)
}

/// The `id` a `GET /v1/generation?id=...` asks about.
fn generation_of(req: &HttpRequest) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Query {
        id: Option<String>,
    }
    web::Query::<Query>::from_query(req.query_string())
        .ok()?
        .into_inner()
        .id
}

/// Attempts until one answer may go to the client.
async fn attempts(
    shared: &Shared,
    client: &awc::Client,
    request: &Outgoing,
    started: Instant,
    trace: &mut Trace,
    ctx: &RequestCtx,
    holding: &keepalive::Holding,
) -> Result<Reply, ApiError> {
    let deadline = started + shared.config.max_wait;
    let mut tried: Vec<String> = Vec::new();
    let mut attempt_no: u32 = 0;
    let mut last: Option<Fallback> = None;
    loop {
        let chosen =
            match wait::for_key(shared, &tried, deadline, request, &mut trace.key_waits).await {
                Ok(chosen) => chosen,
                // The last key just got disabled: what the upstream said is
                // more useful than "no usable key".
                Err(e) if e.kind == Kind::NoUsableKey => {
                    return last.map_or(Err(e), |f| f.into_reply(shared));
                }
                Err(e) => return Err(e),
            };
        attempt_no += 1;
        if let Some((id, _)) = &chosen
            && !tried.contains(id)
        {
            tried.push(id.clone());
        }
        let key = chosen.as_ref().map(|(id, key)| (id.as_str(), key));
        let (step, record) =
            attempt::run(shared, client, request, key, attempt_no, ctx, holding).await;
        trace.attempts.push(record);
        let (delay, fallback) = match step {
            Step::Respond(reply) => return Ok(reply),
            Step::Stop(error) => return Err(error),
            Step::Retry { delay, fallback } => (delay, fallback),
        };
        // A keyless attempt has no other key to try.
        if chosen.is_none() || attempt_no >= shared.config.max_attempts {
            return fallback.into_reply(shared);
        }
        if !delay.is_zero() {
            let now = Instant::now();
            if now + delay > deadline.max(now + Duration::from_secs(2)) {
                return fallback.into_reply(shared);
            }
            tokio::time::sleep(delay).await;
            trace.slept += delay;
        }
        last = Some(fallback);
    }
}
