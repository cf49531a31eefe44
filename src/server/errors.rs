//! Errors orproxy itself answers with, always in OpenAI's shape:
//! `{"error": {"message", "type", "param", "code"}}`.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;
use std::fmt;

/// An error answered by orproxy (not relayed from the upstream).
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message.
    pub message: String,
    /// OpenAI's `type`, e.g. `invalid_request_error`.
    pub kind: &'static str,
    /// OpenAI's `code`, a short machine-readable string.
    pub code: &'static str,
    /// Seconds for `Retry-After`, when retrying later makes sense.
    pub retry_after: Option<u64>,
    /// Whether the OpenAI SDKs should retry (`x-should-retry`).
    pub should_retry: Option<bool>,
}

impl ApiError {
    /// A new error without retry hints.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            code,
            retry_after: None,
            should_retry: None,
        }
    }

    /// 400: the body is not what the endpoint takes.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            message,
        )
    }

    /// 404: no such route.
    pub fn not_found(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "unknown_url",
            format!("Unknown path {path}: orproxy serves the OpenAI API under /v1 (and /api/v1)"),
        )
    }

    /// 405: the route exists but not for this method.
    pub fn method_not_allowed(method: &str, path: &str, allowed: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            format!("{method} is not allowed on {path}; use {allowed}"),
        )
    }

    /// 408: the client stopped sending its body.
    pub fn request_timeout(idle: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "request_timeout",
            format!(
                "The client sent nothing of its request body for {} s",
                idle.as_secs()
            ),
        )
    }

    /// 413: body over `--max-body`.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!(
                "The request body is larger than orproxy's limit of {limit} bytes (--max-body)"
            ),
        )
    }

    /// Attach a `Retry-After` in seconds.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// Attach `x-should-retry`.
    pub fn should_retry(mut self, yes: bool) -> Self {
        self.should_retry = Some(yes);
        self
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "error": {
                // Messages may quote what the client sent: never a full key.
                "message": crate::secret::redact(&self.message),
                "type": self.kind,
                "param": null,
                "code": self.code,
            }
        })
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            res.insert_header((header::RETRY_AFTER, HeaderValue::from(secs)));
            res.insert_header((
                "retry-after-ms",
                HeaderValue::from(secs.saturating_mul(1000)),
            ));
        }
        if let Some(yes) = self.should_retry {
            res.insert_header(("x-should-retry", if yes { "true" } else { "false" }));
        }
        res.insert_header((header::CONTENT_TYPE, "application/json"))
            .body(self.body().to_string())
    }
}
