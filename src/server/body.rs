//! Reading a client's request body: whole, up to a size limit, with at most
//! [`super::CLIENT_TIMEOUT`] of silence between two chunks.

use super::errors::ApiError;
use actix_web::http::header::{self, HeaderMap};
use actix_web::web;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

/// The whole body of a request with these `headers`, at most `limit` bytes
/// (413 beyond, before reading anything when `Content-Length` says so; 408
/// when the client goes silent).
pub(crate) async fn read(
    headers: &HeaderMap,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = headers
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
