//! A streaming client kept waiting: while orproxy holds a stream before
//! its first content event (a long reasoning preamble, or retries on other
//! keys), nothing has reached the client, and clients and proxies on the
//! way give up on a silent connection. Once a hold has lasted
//! `--sse-keepalive` seconds, the answer is committed: a `200` SSE stream
//! whose first bytes are SSE comments (which every client skips), one every
//! `--sse-keepalive` seconds, while the attempts go on behind it. Then the
//! winning stream is piped in, or the request's failure is told in the
//! endpoint's own protocol ([`crate::openrouter::dialect`]).

use super::attempt::Reply;
use crate::openrouter::dialect::Dialect;
use crate::server::errors::ApiError;
use crate::server::relay::{self, End, Notes};
use crate::server::request_log::RequestCtx;
use actix_web::body::MessageBody;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The comment a waiting client gets.
const COMMENT: &[u8] = b": orproxy is waiting for the upstream's first event\n\n";

/// The request's attempts, run behind a committed stream.
pub(crate) type Work = Pin<Box<dyn Future<Output = Result<Reply, ApiError>>>>;

/// Since when the request's current attempt holds a stream.
#[derive(Debug, Default)]
pub(crate) struct Holding {
    since: Cell<Option<Instant>>,
    started: Notify,
}

/// Marks a hold; it ends when this is dropped.
pub(crate) struct Held<'a>(&'a Holding);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.since.set(None);
    }
}

impl Holding {
    /// A hold starts now.
    pub(crate) fn start(&self) -> Held<'_> {
        self.since.set(Some(Instant::now()));
        self.started.notify_one();
        Held(self)
    }

    /// Resolves once one hold has lasted `after`.
    pub(crate) async fn lasted(&self, after: Duration) {
        loop {
            match self.since.get() {
                Some(since) => {
                    tokio::time::sleep_until(since + after).await;
                    if self.since.get() == Some(since) {
                        return;
                    }
                }
                None => self.started.notified().await,
            }
        }
    }
}

/// What the committed stream is doing.
enum State {
    /// The attempts go on; a comment is due at `next`.
    Waiting { work: Work, next: Instant },
    /// Piping the winning stream.
    Piping(actix_web::body::BoxBody),
    /// Done.
    Over,
}

/// The `200` SSE answer that keeps the client waiting for `work`, a
/// comment every `every`, then relays what `work` gives.
pub(crate) fn commit(
    work: Work,
    req: HttpRequest,
    dialect: Dialect,
    every: Duration,
    ctx: RequestCtx,
) -> HttpResponse {
    let state = State::Waiting {
        work,
        next: Instant::now(),
    };
    let gone = crate::server::disconnect::closed(&req);
    let body = futures_util::stream::unfold((state, gone), move |(state, mut gone)| {
        let ctx = ctx.clone();
        async move {
            let (item, state) = step(state, &mut gone, dialect, every, &ctx).await?;
            Some((item, (state, gone)))
        }
    });
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        ))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
        .streaming(body)
}

type Item = Result<Bytes, actix_web::Error>;

/// The committed stream's next item.
async fn step(
    state: State,
    gone: &mut Pin<Box<dyn Future<Output = ()>>>,
    dialect: Dialect,
    every: Duration,
    ctx: &RequestCtx,
) -> Option<(Item, State)> {
    match state {
        State::Over => None,
        State::Piping(mut body) => {
            let next = futures_util::future::poll_fn(|cx| Pin::new(&mut body).poll_next(cx)).await;
            match next? {
                Ok(chunk) => Some((Ok(chunk), State::Piping(body))),
                Err(e) => Some((
                    Err(actix_web::error::ErrorBadGateway(e.to_string())),
                    State::Over,
                )),
            }
        }
        State::Waiting { mut work, next } => {
            tokio::select! {
                biased;
                // The client left: the attempts are dropped with the stream.
                () = gone.as_mut() => {
                    ctx.stream_ended(&End::ClientGone, Notes::default());
                    None
                }
                result = &mut work => Some(settle(result, dialect, ctx).await),
                () = tokio::time::sleep_until(next) => Some((
                    Ok(Bytes::from_static(COMMENT)),
                    State::Waiting { work, next: Instant::now() + every },
                )),
            }
        }
    }
}

/// What the attempts gave, once the client's stream is committed: the
/// winning stream, or the failure in the endpoint's protocol.
async fn settle(
    result: Result<Reply, ApiError>,
    dialect: Dialect,
    ctx: &RequestCtx,
) -> (Item, State) {
    let (status, message) = match result {
        Ok(reply)
            if reply.res.status().is_success() && relay::is_event_stream(reply.res.headers()) =>
        {
            let mut body = reply.res.into_body();
            let first = futures_util::future::poll_fn(|cx| Pin::new(&mut body).poll_next(cx)).await;
            return match first {
                Some(Ok(chunk)) => (Ok(chunk), State::Piping(body)),
                Some(Err(e)) => (
                    Err(actix_web::error::ErrorBadGateway(e.to_string())),
                    State::Over,
                ),
                None => (Ok(Bytes::new()), State::Over),
            };
        }
        Ok(reply) => {
            let status = reply.res.status();
            let body = actix_web::body::to_bytes_limited(reply.res.into_body(), 1024 * 1024)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            (status.as_u16(), upstream_message(status.as_u16(), &body))
        }
        Err(e) => (e.status().as_u16(), crate::secret::redact(&e.message)),
    };
    ctx.stream_ended(&End::Errored(message.clone()), Notes::default());
    let tail = dialect.failure_tail(status, &message, None);
    (Ok(Bytes::from(tail)), State::Over)
}

/// What an upstream's answer that cannot go into a stream said.
fn upstream_message(status: u16, body: &[u8]) -> String {
    let said = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        });
    match said {
        Some(message) => format!("The upstream answered {status}: {message}"),
        None => format!("The upstream answered {status} instead of a stream"),
    }
}
