//! Reading a client's request body: whole, up to a size limit, with at most
//! [`super::CLIENT_TIMEOUT`] of silence between two chunks and a total
//! deadline (`--body-timeout`), so that a client trickling its body cannot
//! hold a connection and a worker's attention for long.

use super::errors::ApiError;
use actix_web::http::header::{self, HeaderMap};
use actix_web::web;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use std::time::Duration;

/// The whole body of a request with these `headers`, at most `limit` bytes
/// (413 beyond, before reading anything when `Content-Length` says so), read
/// within `total` (408 beyond, and 408 when the client goes silent).
pub(crate) async fn read(
    headers: &HeaderMap,
    mut payload: web::Payload,
    limit: usize,
    total: Duration,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(limit));
    }
    let deadline = tokio::time::Instant::now() + total;
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    loop {
        // A client that stops sending, or sends too slowly in all, must not
        // hold the connection.
        let silence = tokio::time::timeout(super::CLIENT_TIMEOUT, payload.next());
        let chunk = match tokio::time::timeout_at(deadline, silence).await {
            Err(_) => return Err(ApiError::body_too_slow(total)),
            Ok(Err(_)) => return Err(ApiError::request_timeout(super::CLIENT_TIMEOUT)),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => chunk,
        };
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("Cannot read the request body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}
