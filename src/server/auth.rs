//! Who may use the server: client tokens for the proxy (and `/metrics`), the
//! admin token for `/admin`. Tokens are compared in constant time, as
//! SHA-256 digests so that not even their length shows in the timing.

use super::errors::ApiError;
use crate::secret::BearerToken;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap};
use actix_web::middleware::Next;
use actix_web::{Error, ResponseError, web};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The configured tokens, as digests.
#[derive(Clone, Default)]
pub(crate) struct Access {
    admin: Option<[u8; 32]>,
    clients: Vec<[u8; 32]>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The bearer token of a request, if it sent one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The token a client presents: `Authorization: Bearer TOKEN`, else
/// `x-api-key: TOKEN` (how Anthropic-style clients such as Claude Code send
/// theirs).
pub(crate) fn client_token(headers: &HeaderMap) -> Option<&str> {
    bearer(headers).or_else(|| {
        headers
            .get("x-api-key")?
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|t| !t.is_empty())
    })
}

/// Whether `presented` is one of `allowed`, without stopping at the first
/// match or mismatch.
fn matches_any(presented: &str, allowed: &[[u8; 32]]) -> bool {
    let presented = digest(presented);
    let mut found = subtle::Choice::from(0);
    for token in allowed {
        found |= presented.ct_eq(token);
    }
    found.into()
}

impl Access {
    /// From the configured tokens.
    pub(crate) fn new(admin: Option<&BearerToken>, clients: &[BearerToken]) -> Self {
        Self {
            admin: admin.map(|t| digest(t.expose())),
            clients: clients.iter().map(|t| digest(t.expose())).collect(),
        }
    }

    /// May this request use the proxy? Any token when no client tokens are
    /// configured; otherwise one of them. `/metrics` also takes the admin token.
    pub(crate) fn check_client(&self, headers: &HeaderMap, admin_ok: bool) -> Result<(), ApiError> {
        if self.clients.is_empty() {
            return Ok(());
        }
        let Some(token) = client_token(headers) else {
            return Err(ApiError::missing_client_token());
        };
        let admin = admin_ok && self.admin.is_some_and(|a| matches_any(token, &[a]));
        if matches_any(token, &self.clients) || admin {
            Ok(())
        } else {
            Err(ApiError::wrong_client_token())
        }
    }

    /// May this request use the admin API?
    pub(crate) fn check_admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(admin) = self.admin else {
            return Err(ApiError::admin_off());
        };
        match bearer(headers) {
            None => Err(ApiError::missing_admin_token()),
            Some(token) if matches_any(token, &[admin]) => Ok(()),
            Some(_) => Err(ApiError::wrong_admin_token()),
        }
    }
}

fn access(req: &ServiceRequest) -> Access {
    req.app_data::<web::Data<Access>>()
        .map(|a| a.get_ref().clone())
        .unwrap_or_default()
}

/// Answer `req` with `err` instead of calling the service.
fn reject<B>(
    req: ServiceRequest,
    err: &ApiError,
) -> ServiceResponse<actix_web::body::EitherBody<B>> {
    req.into_response(err.error_response())
        .map_into_right_body()
}

/// Middleware for every route whose access class ([`super::routes`]) lets
/// clients in: client tokens, when configured. The admin scope checks its
/// own token.
pub(crate) async fn clients(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    use super::routes::Access;
    let checked = match super::routes::access(req.path()) {
        Access::Open | Access::Admin => Ok(()),
        Access::Client => access(&req).check_client(req.headers(), false),
        Access::ClientOrAdmin => access(&req).check_client(req.headers(), true),
    };
    if let Err(e) = checked {
        let e = e.for_path(req.path());
        return Ok(reject(req, &e));
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// Middleware for `/admin`: the admin token.
pub(crate) async fn admin(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    if let Err(e) = access(&req).check_admin(req.headers()) {
        return Ok(reject(req, &e));
    }
    Ok(next.call(req).await?.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::StatusCode;
    use actix_web::http::header::HeaderValue;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    fn tok(s: &str) -> BearerToken {
        BearerToken::parse(s).unwrap()
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(&headers(Some("Bearer abc"))), Some("abc"));
        assert_eq!(bearer(&headers(Some("bearer   abc "))), Some("abc"));
        assert_eq!(bearer(&headers(Some("Basic abc"))), None);
        assert_eq!(bearer(&headers(Some("Bearer"))), None);
        assert_eq!(bearer(&headers(None)), None);
    }

    #[test]
    fn a_client_token_comes_as_bearer_or_as_x_api_key() {
        let mut h = headers(None);
        h.insert(
            header::HeaderName::from_static("x-api-key"),
            HeaderValue::from_static(" two "),
        );
        assert_eq!(client_token(&h), Some("two"));
        let access = Access::new(None, &[tok("one"), tok("two")]);
        assert!(access.check_client(&h, false).is_ok());
        h.insert(
            header::HeaderName::from_static("x-api-key"),
            HeaderValue::from_static("three"),
        );
        assert!(access.check_client(&h, false).is_err());
        // Bearer first, when both come.
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer one"),
        );
        assert_eq!(client_token(&h), Some("one"));
        assert!(access.check_client(&h, false).is_ok());
    }

    #[test]
    fn clients_open_without_tokens_and_checked_with_them() {
        let open = Access::new(None, &[]);
        assert!(open.check_client(&headers(None), false).is_ok());
        let access = Access::new(Some(&tok("admin-secret")), &[tok("one"), tok("two")]);
        assert!(
            access
                .check_client(&headers(Some("Bearer two")), false)
                .is_ok()
        );
        assert!(
            access
                .check_client(&headers(Some("Bearer one")), false)
                .is_ok()
        );
        let e = access
            .check_client(&headers(Some("Bearer three")), false)
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(e.code(), "invalid_api_key");
        assert!(access.check_client(&headers(None), false).is_err());
        assert!(
            access
                .check_client(&headers(Some("Bearer admin-secret")), false)
                .is_err()
        );
        assert!(
            access
                .check_client(&headers(Some("Bearer admin-secret")), true)
                .is_ok()
        );
    }

    #[test]
    fn admin_off_wrong_and_right() {
        let off = Access::new(None, &[]);
        let e = off.check_admin(&headers(Some("Bearer x"))).unwrap_err();
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert!(e.message.contains("--admin-token"));
        let on = Access::new(Some(&tok("s3cret-admin")), &[]);
        assert_eq!(
            on.check_admin(&headers(None)).unwrap_err().status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            on.check_admin(&headers(Some("Bearer s3cret")))
                .unwrap_err()
                .code(),
            "invalid_admin_token"
        );
        assert!(
            on.check_admin(&headers(Some("Bearer s3cret-admin")))
                .is_ok()
        );
    }
}
