//! Errors orproxy itself answers with, in OpenAI's shape
//! (`{"error": {"message", "type", "param", "code"}}`), or Anthropic's
//! (`{"type": "error", "error": {"type", "message"}}`) on the Messages
//! endpoints ([`ApiError::shaped`]).
//!
//! Every error orproxy can answer is a [`Kind`]; its HTTP status, OpenAI
//! `type` and `code` come from one match ([`Kind::parts`]). The
//! constructors below build each kind with its message, so that every
//! message orproxy writes is in this file.

use crate::clock::whole_secs_until;
use crate::human;
use crate::openrouter::dialect::{ErrorShape, anthropic_type};
use crate::pool::decide::Failure;
use crate::pool::upstream::Outage;
use crate::pool::{Fault, Holds};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::fmt;
use std::time::Duration;

/// Longest `Retry-After` the OpenAI SDKs wait for: openai-python gives up
/// at once beyond it, so orproxy says `x-should-retry: false` instead.
const SDK_RETRY_LIMIT: u64 = 120;

/// `Retry-After` of a request shed because descriptors run short.
const OVERLOAD_RETRY_SECS: u64 = 2;

/// Every kind of error orproxy answers by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// 400: the body or path is not what the endpoint takes.
    BadRequest,
    /// 400: the client asked to switch protocols (`Upgrade`).
    UpgradeRefused,
    /// 404: no such route.
    NotFound,
    /// 405: the route exists, not for this method.
    MethodNotAllowed,
    /// 408: the client stopped sending its body, or took too long in all.
    RequestTimeout,
    /// 413: the body is over `--max-body`.
    TooLarge,
    /// 499: the client went away before the answer started.
    ClientClosed,
    /// 401: no client token, or a wrong one.
    ClientToken(&'static str),
    /// 403: the admin API is off.
    AdminOff,
    /// 401: no admin token, or a wrong one.
    AdminToken(&'static str),
    /// 503: no key can ever serve (none stored, or all disabled).
    NoUsableKey,
    /// 429: every usable key is cooling for longer than the request may wait.
    AllCooling,
    /// 429: every usable key is held for `:free` models by its account's
    /// caps for longer than the request may wait (paid models are not).
    FreeModelsHeld,
    /// 429: every account's daily free-model quota is spent.
    DailyQuotaSpent,
    /// 429: OpenRouter's shared capacity for the model is exhausted.
    ModelBusy,
    /// 502: the upstream cannot be reached.
    UpstreamUnreachable,
    /// 504: the upstream is too slow (connect, headers, or silence in a body).
    UpstreamTimeout,
    /// 502: the upstream's answer broke off before it could be relayed.
    UpstreamBroken,
    /// 502, 503 or 504: the upstream is down (not any key): answered at once.
    UpstreamDown(StatusCode),
    /// 422: OpenRouter rejects a key being added.
    KeyRejected,
    /// 404: no key has that ID.
    KeyNotFound,
    /// 409: several keys start with that ID.
    AmbiguousKeyId,
    /// 503: the shared store cannot be reached.
    StoreUnavailable,
    /// 503: too many connections for the open-files limit.
    Overloaded,
    /// 500: the store cannot be read or written.
    StoreFailed,
    /// 500: something inside orproxy failed.
    Internal,
}

impl Kind {
    /// HTTP status, OpenAI `type` and `code`.
    fn parts(self) -> (StatusCode, &'static str, &'static str) {
        use Kind::*;
        const CLIENT: &str = "invalid_request_error";
        match self {
            BadRequest => (StatusCode::BAD_REQUEST, CLIENT, "invalid_request"),
            UpgradeRefused => (StatusCode::BAD_REQUEST, CLIENT, "upgrade_not_supported"),
            NotFound => (StatusCode::NOT_FOUND, CLIENT, "unknown_url"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, CLIENT, "method_not_allowed"),
            RequestTimeout => (StatusCode::REQUEST_TIMEOUT, CLIENT, "request_timeout"),
            TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, CLIENT, "request_too_large"),
            ClientClosed => (client_closed_status(), CLIENT, "client_closed_request"),
            ClientToken(code) | AdminToken(code) => (StatusCode::UNAUTHORIZED, CLIENT, code),
            AdminOff => (StatusCode::FORBIDDEN, CLIENT, "admin_api_disabled"),
            NoUsableKey => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "no_usable_key",
            ),
            AllCooling => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "all_keys_cooling",
            ),
            FreeModelsHeld => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "free_models_held",
            ),
            DailyQuotaSpent => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "daily_free_quota_spent",
            ),
            ModelBusy => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "model_at_capacity",
            ),
            UpstreamUnreachable => (
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "upstream_unreachable",
            ),
            UpstreamTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_error",
                "upstream_timeout",
            ),
            UpstreamBroken => (StatusCode::BAD_GATEWAY, "upstream_error", "upstream_error"),
            UpstreamDown(status) => (status, "upstream_error", "upstream_down"),
            KeyRejected => (StatusCode::UNPROCESSABLE_ENTITY, CLIENT, "key_rejected"),
            KeyNotFound => (StatusCode::NOT_FOUND, CLIENT, "key_not_found"),
            AmbiguousKeyId => (StatusCode::CONFLICT, CLIENT, "ambiguous_key_id"),
            StoreUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "store_unavailable",
            ),
            Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "server_overloaded",
            ),
            StoreFailed => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "store_error",
            ),
            Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal_error",
            ),
        }
    }
}

/// nginx's 499 "client closed request" (never seen by the client itself).
fn client_closed_status() -> StatusCode {
    StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
}

/// "1 key" or "3 keys".
fn keys(n: usize) -> String {
    if n == 1 {
        "1 key".to_owned()
    } else {
        format!("{n} keys")
    }
}

/// Why keys are held, as `keys list` says it: "2 keys at the :free
/// per-minute cap, 1 key cooling, 1 key disabled".
fn describe(holds: &Holds) -> String {
    let parts = [
        (holds.minute, "at the :free per-minute cap of their account"),
        (holds.daily, "at the :free daily cap of their account"),
        (holds.cooldown, "cooling"),
        (holds.credits, "cooling: their account is out of credits"),
        (holds.disabled, "disabled"),
    ];
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{} {what}", keys(*n)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An error answered by orproxy (not relayed from the upstream).
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    /// What went wrong; sets the status, `type` and `code`.
    pub(crate) kind: Kind,
    /// Human-readable message.
    pub(crate) message: String,
    /// Seconds for `Retry-After`, when retrying later makes sense.
    retry_after: Option<u64>,
    /// `x-should-retry: false`: waiting is pointless or too long for the SDKs.
    no_retry: bool,
    /// The shape of its body.
    shape: ErrorShape,
}

impl ApiError {
    fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after: None,
            no_retry: false,
            shape: ErrorShape::OpenAi,
        }
    }

    /// This error in `shape` (the endpoint's).
    pub(crate) fn shaped(mut self, shape: ErrorShape) -> Self {
        self.shape = shape;
        self
    }

    /// This error in the shape of the endpoint at `path`.
    pub(crate) fn for_path(self, path: &str) -> Self {
        let shape = super::routes::proxied_tail(path).map_or(ErrorShape::OpenAi, |tail| {
            crate::openrouter::endpoints::lookup(tail)
                .dialect
                .error_shape()
        });
        self.shaped(shape)
    }

    /// A `Retry-After` of `secs`; beyond what the SDKs wait for, also
    /// `x-should-retry: false`.
    fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self.no_retry |= secs > SDK_RETRY_LIMIT;
        self
    }

    /// The HTTP status.
    pub(crate) fn status(&self) -> StatusCode {
        self.kind.parts().0
    }

    /// OpenAI's `code`.
    pub(crate) fn code(&self) -> &'static str {
        self.kind.parts().2
    }

    /// This error, with `note` added to its message.
    pub(crate) fn noting(mut self, note: &str) -> Self {
        self.message = format!("{}; {note}", self.message);
        self
    }

    /// 400: the body is not what the endpoint takes.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Kind::BadRequest, message)
    }

    /// 400: the client asked to switch to `protocol` (`Upgrade:`, e.g.
    /// `websocket` or `h2c`).
    pub(crate) fn upgrade_refused(protocol: &str) -> Self {
        Self::new(
            Kind::UpgradeRefused,
            format!(
                "orproxy speaks HTTP/1.1 only and does not switch protocols (Upgrade: {protocol}); \
                 send the request without Upgrade (with curl, without --http2)"
            ),
        )
    }

    /// 404: no such route.
    pub(crate) fn not_found(path: &str) -> Self {
        Self::new(
            Kind::NotFound,
            format!("Unknown path {path}: orproxy serves the OpenAI API under /v1 (and /api/v1)"),
        )
    }

    /// 404: no such admin route.
    pub(crate) fn admin_not_found(path: &str) -> Self {
        Self::new(
            Kind::NotFound,
            format!(
                "Unknown admin path {path}: the admin API is /admin/keys, \
                 /admin/keys/{{id}}/reactivate, /admin/keys/{{id}} and /admin/usage"
            ),
        )
    }

    /// 405: the route exists but not for this method.
    pub(crate) fn method_not_allowed(method: &str, path: &str, allowed: &str) -> Self {
        Self::new(
            Kind::MethodNotAllowed,
            format!("{method} is not allowed on {path}; use {allowed}"),
        )
    }

    /// 408: the client stopped sending its body.
    pub(crate) fn request_timeout(idle: Duration) -> Self {
        Self::new(
            Kind::RequestTimeout,
            format!(
                "The client sent nothing of its request body for {} s",
                idle.as_secs()
            ),
        )
    }

    /// 408: the client sent its body steadily but took longer than
    /// `--body-timeout` in all.
    pub(crate) fn body_too_slow(total: Duration) -> Self {
        Self::new(
            Kind::RequestTimeout,
            format!(
                "The client took more than {} s to send its request body (--body-timeout)",
                total.as_secs()
            ),
        )
    }

    /// 413: body over `limit` bytes.
    pub(crate) fn too_large(limit: usize) -> Self {
        Self::new(
            Kind::TooLarge,
            format!(
                "The request body is larger than orproxy's limit of {limit} bytes (--max-body)"
            ),
        )
    }

    /// 499: the client went away before the answer started.
    pub(crate) fn client_closed() -> Self {
        Self::new(Kind::ClientClosed, "The client closed the connection")
    }

    /// 401: client tokens are required and none was sent.
    pub(crate) fn missing_client_token() -> Self {
        Self::new(
            Kind::ClientToken("invalid_api_key"),
            "You didn't provide an API key. This orproxy requires one of its client tokens \
             as `Authorization: Bearer TOKEN` (or `x-api-key: TOKEN`).",
        )
    }

    /// 401: the client sent a token that is not one of the client tokens.
    pub(crate) fn wrong_client_token() -> Self {
        Self::new(
            Kind::ClientToken("invalid_api_key"),
            "Incorrect API key provided. This orproxy accepts only its configured client \
             tokens (--client-token / ORPROXY_CLIENT_TOKENS); the OpenRouter keys stay on the \
             server.",
        )
    }

    /// 403: the admin API is off.
    pub(crate) fn admin_off() -> Self {
        Self::new(
            Kind::AdminOff,
            "The admin API is off. Turn it on by starting `orproxy serve` with \
             --admin-token TOKEN (or ORPROXY_ADMIN_TOKEN=TOKEN, which keeps it out of the \
             process list), then send `Authorization: Bearer TOKEN`.",
        )
    }

    /// 401: no admin token.
    pub(crate) fn missing_admin_token() -> Self {
        Self::new(
            Kind::AdminToken("missing_admin_token"),
            "The admin API needs the admin token (--admin-token / ORPROXY_ADMIN_TOKEN) as \
             `Authorization: Bearer TOKEN`.",
        )
    }

    /// 401: a wrong admin token.
    pub(crate) fn wrong_admin_token() -> Self {
        Self::new(
            Kind::AdminToken("invalid_admin_token"),
            "The admin token is not correct.",
        )
    }

    /// 503: no key can serve now or later: none stored, or all disabled.
    pub(crate) fn no_usable_key(holds: &Holds) -> Self {
        let message = match holds.disabled {
            0 => "orproxy has no API keys. Add one with `orproxy keys add`.".to_owned(),
            n => format!(
                "{} disabled. See why with `orproxy keys list`, then `orproxy keys reactivate \
                 --all` or add a key with `orproxy keys add`.",
                if n == 1 {
                    "orproxy's only key is".to_owned()
                } else {
                    format!("All {n} of orproxy's keys are")
                }
            ),
        };
        Self::new(Kind::NoUsableKey, message)
    }

    /// 429: no key can serve the request (`free`: for a `:free` model)
    /// before `soonest`, later than the request may wait; `holds` says why.
    /// When only the accounts' `:free` caps hold them, paid models still
    /// work, and the answer says so (`free_models_held`).
    pub(crate) fn all_held(
        soonest: DateTime<Utc>,
        now: DateTime<Utc>,
        free: bool,
        holds: &Holds,
    ) -> Self {
        let secs = whole_secs_until(soonest, now);
        let (kind, what, tail) = if free && holds.free_caps_only() {
            (
                Kind::FreeModelsHeld,
                ":free models",
                " Paid models are not held.",
            )
        } else if free {
            (Kind::AllCooling, ":free models", "")
        } else {
            (Kind::AllCooling, "this request", "")
        };
        Self::new(
            kind,
            format!(
                "No key can serve {what} now ({}). The soonest can in {}.{tail}",
                describe(holds),
                human::span_secs(secs)
            ),
        )
        .retry_after(secs)
    }

    /// 429: every key waits for its account's daily free-model cap, which
    /// resets at `midnight`.
    pub(crate) fn daily_quota_spent(midnight: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        let secs = whole_secs_until(midnight, now);
        let mut err = Self::new(
            Kind::DailyQuotaSpent,
            format!(
                "The daily free-model quota of every OpenRouter account in orproxy's pool is spent. \
                 It resets at 00:00 UTC ({}, in {}). Paid models still work.",
                human::rfc3339(midnight),
                human::span_secs(secs)
            ),
        )
        .retry_after(secs);
        // Retrying before midnight only burns quota.
        err.no_retry = true;
        err
    }

    /// 429: OpenRouter's capacity for `model` is exhausted until `until`.
    pub(crate) fn model_busy(model: &str, until: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        let secs = whole_secs_until(until, now);
        Self::new(
            Kind::ModelBusy,
            format!(
                "OpenRouter reports high demand for {model}; no key helps with that. Try again in {}, \
                 or use another model (or the `models` fallback list).",
                human::span_secs(secs)
            ),
        )
        .retry_after(secs)
    }

    /// 502, or 504 when it was too slow: the upstream gave no answer that
    /// could be relayed.
    pub(crate) fn upstream(failure: &Failure) -> Self {
        let kind = match failure {
            Failure::Unreachable(_) => Kind::UpstreamUnreachable,
            Failure::ConnectTimeout(_) | Failure::HeadersTimeout(_) | Failure::Silent(_) => {
                Kind::UpstreamTimeout
            }
            Failure::Broken(_) | Failure::Refused(_) => Kind::UpstreamBroken,
        };
        Self::new(kind, failure.message())
    }

    /// The upstream is down since `outage.since`: 502 when it cannot be
    /// reached, 504 when it hangs, 503 when it fails; retry after the next
    /// check.
    pub(crate) fn upstream_down(outage: &Outage, now: DateTime<Utc>) -> Self {
        let status = match outage.fault {
            Fault::Unreachable => StatusCode::BAD_GATEWAY,
            Fault::Hung => StatusCode::GATEWAY_TIMEOUT,
            Fault::ServerError | Fault::Broken => StatusCode::SERVICE_UNAVAILABLE,
        };
        let every = crate::pool::upstream::CHECK_EVERY.num_seconds().max(1);
        Self::new(
            Kind::UpstreamDown(status),
            format!(
                "The upstream (OpenRouter) is down since {} ({} ago): {}. orproxy checks it \
                 every {every} s and serves again as soon as it answers; no key is blamed for it.",
                human::rfc3339(outage.since),
                human::span(now - outage.since),
                outage.reason
            ),
        )
        .retry_after(u64::try_from(every).unwrap_or(2))
    }

    /// 422: OpenRouter rejected a key being added.
    pub(crate) fn key_rejected(message: String) -> Self {
        Self::new(Kind::KeyRejected, message)
    }

    /// 404: no key has the ID.
    pub(crate) fn key_not_found(message: String) -> Self {
        Self::new(Kind::KeyNotFound, message)
    }

    /// 409: several keys start with the ID.
    pub(crate) fn ambiguous_key_id(message: String) -> Self {
        Self::new(Kind::AmbiguousKeyId, message)
    }

    /// 503: the shared store cannot be reached.
    pub(crate) fn store_unavailable(message: String) -> Self {
        Self::new(Kind::StoreUnavailable, message)
    }

    /// 503: the worker holds as many busy connections as the open-files
    /// limit (`nofile`) leaves room for; retry in a moment.
    pub(crate) fn overloaded(nofile: u64) -> Self {
        Self::new(
            Kind::Overloaded,
            format!(
                "orproxy is serving as many connections as its open-files limit ({nofile}) allows; \
                 try again in a moment"
            ),
        )
        .retry_after(OVERLOAD_RETRY_SECS)
    }

    /// 500: the store cannot be read or written.
    pub(crate) fn store_failed(message: String) -> Self {
        Self::new(Kind::StoreFailed, message)
    }

    /// 500: `what` failed inside orproxy.
    pub(crate) fn internal(what: &str) -> Self {
        Self::new(
            Kind::Internal,
            format!("{what} failed inside orproxy; see the error log"),
        )
    }

    /// The JSON body, in its shape.
    pub(crate) fn body(&self) -> serde_json::Value {
        let (status, kind, code) = self.kind.parts();
        if self.shape == ErrorShape::Anthropic {
            return json!({
                "type": "error",
                "error": {
                    "type": anthropic_type(status.as_u16()),
                    "message": crate::secret::redact(&self.message),
                }
            });
        }
        json!({
            "error": {
                // Messages may quote what the client sent: never a full key.
                "message": crate::secret::redact(&self.message),
                "type": kind,
                "param": null,
                "code": code,
            }
        })
    }
}

/// Set `Retry-After` (and `retry-after-ms`, which the OpenAI SDKs prefer)
/// to `secs`, and `x-should-retry: false` when the SDKs would not wait that
/// long or `no_retry`.
pub(crate) fn set_retry_headers(headers: &mut HeaderMap, secs: u64, no_retry: bool) {
    headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    headers.insert(
        HeaderName::from_static("retry-after-ms"),
        HeaderValue::from(secs.saturating_mul(1000)),
    );
    if no_retry || secs > SDK_RETRY_LIMIT {
        headers.insert(
            HeaderName::from_static("x-should-retry"),
            HeaderValue::from_static("false"),
        );
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status().as_u16(),
            self.code(),
            self.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status())
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .body(self.body().to_string());
        let headers = res.headers_mut();
        if let Some(secs) = self.retry_after {
            set_retry_headers(headers, secs, self.no_retry);
        }
        if matches!(self.kind, Kind::ClientToken(_) | Kind::AdminToken(_)) {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"orproxy\""),
            );
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(res: &'a HttpResponse, name: &str) -> Option<&'a str> {
        res.headers().get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn short_waits_are_retried_and_long_ones_are_not() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let holds = Holds {
            cooldown: 2,
            ..Holds::default()
        };
        let short = ApiError::all_held(now + chrono::TimeDelta::seconds(30), now, false, &holds);
        let res = short.error_response();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&res, "retry-after"), Some("30"));
        assert_eq!(header(&res, "retry-after-ms"), Some("30000"));
        assert_eq!(header(&res, "x-should-retry"), None);
        let long = ApiError::all_held(now + chrono::TimeDelta::seconds(121), now, false, &holds);
        assert_eq!(
            header(&long.error_response(), "x-should-retry"),
            Some("false")
        );
        let daily = ApiError::daily_quota_spent(now + chrono::TimeDelta::seconds(60), now);
        assert_eq!(
            header(&daily.error_response(), "x-should-retry"),
            Some("false"),
            "retrying a spent daily quota before midnight only burns quota"
        );
    }

    #[test]
    fn the_429_says_what_holds_the_keys_as_keys_list_does() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let soon = now + chrono::TimeDelta::seconds(48);
        let minute = Holds {
            minute: 3,
            ..Holds::default()
        };
        let e = ApiError::all_held(soon, now, true, &minute);
        assert_eq!(e.code(), "free_models_held");
        assert_eq!(
            e.message,
            "No key can serve :free models now (3 keys at the :free per-minute cap of their \
             account). The soonest can in 48s. Paid models are not held."
        );
        let mixed = Holds {
            minute: 1,
            cooldown: 1,
            disabled: 1,
            ..Holds::default()
        };
        let e = ApiError::all_held(soon, now, true, &mixed);
        assert_eq!(e.code(), "all_keys_cooling");
        assert!(
            e.message.contains(
                "1 key at the :free per-minute cap of their account, 1 key cooling, 1 key disabled"
            ),
            "{}",
            e.message
        );
        let e = ApiError::all_held(soon, now, false, &mixed);
        assert!(
            e.message.starts_with("No key can serve this request now"),
            "{}",
            e.message
        );
    }

    #[test]
    fn no_usable_key_reads_naturally_for_one_key_and_for_many() {
        let one = Holds {
            disabled: 1,
            ..Holds::default()
        };
        assert!(
            ApiError::no_usable_key(&one)
                .message
                .starts_with("orproxy's only key is disabled."),
            "{}",
            ApiError::no_usable_key(&one).message
        );
        let three = Holds {
            disabled: 3,
            ..Holds::default()
        };
        assert!(
            ApiError::no_usable_key(&three)
                .message
                .starts_with("All 3 of orproxy's keys are disabled.")
        );
        assert!(
            ApiError::no_usable_key(&Holds::default())
                .message
                .contains("no API keys")
        );
    }

    #[test]
    fn token_errors_ask_for_a_bearer_token() {
        let res = ApiError::wrong_client_token().error_response();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            header(&res, "www-authenticate"),
            Some("Bearer realm=\"orproxy\"")
        );
        assert_eq!(
            header(&ApiError::admin_off().error_response(), "www-authenticate"),
            None
        );
    }

    #[test]
    fn messages_endpoints_get_anthropic_shaped_errors() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let holds = Holds {
            cooldown: 2,
            ..Holds::default()
        };
        let e = ApiError::all_held(now + chrono::TimeDelta::seconds(30), now, false, &holds)
            .for_path("/v1/messages");
        let res = e.error_response();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&res, "retry-after"), Some("30"));
        let body = e.body();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("No key can serve")
        );
        let count = ApiError::wrong_client_token().for_path("/api/v1/messages/count_tokens");
        assert_eq!(count.body()["error"]["type"], "authentication_error");
        let chat = ApiError::wrong_client_token().for_path("/v1/chat/completions");
        assert_eq!(chat.body()["error"]["code"], "invalid_api_key");
    }

    #[test]
    fn the_body_is_openai_shaped_and_never_holds_a_key() {
        let e = ApiError::bad_request("bad key sk-or-v1-0123456789abcdef0123456789abcdef");
        let body = e.body();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["code"], "invalid_request");
        assert!(body["error"]["param"].is_null());
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            !message.contains("0123456789abcdef0123456789abcdef"),
            "{message}"
        );
    }
}
