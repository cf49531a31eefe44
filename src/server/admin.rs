//! The admin API under `/admin` (behind the admin token, see [`super::auth`]):
//!
//! - `GET /admin/keys`: every key, as `orproxy keys list --json` prints it.
//! - `POST /admin/keys` `{"key", "label"?, "verify"?}`: add a key (201) or
//!   reactivate a stored one (200).
//! - `POST /admin/keys/{id}/reactivate`, `DELETE /admin/keys/{id}`.
//!
//! Changes go through the same locked store as the CLI (`Store::update` and
//! [`crate::store::edit`]), on a blocking thread, and the pool is synchronised
//! right after, so the running server uses them at once. No answer ever
//! contains a full key.

use super::errors::ApiError;
use super::shared::Shared;
use crate::model::KeyView;
use crate::model::StoreFile;
use crate::openrouter::keyinfo::{self, CheckError};
use crate::secret::{ApiKey, redact};
use crate::store::StoreError;
use crate::store::edit::{self, Added, IdError};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::BytesMut;
use chrono::Utc;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Largest admin request body.
const MAX_BODY: usize = 64 * 1024;
/// How long adding a key waits for OpenRouter's `GET /key`.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(15);

/// The `/admin` scope, with the admin-token middleware.
pub fn scope() -> actix_web::Scope<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    web::scope("/admin")
        .wrap(actix_web::middleware::from_fn(super::auth::admin))
        .service(
            web::resource("/keys")
                .route(web::get().to(list))
                .route(web::post().to(add))
                .default_service(web::to(|req: HttpRequest| not_allowed(req, "GET or POST"))),
        )
        .service(
            web::resource("/keys/{id}/reactivate")
                .route(web::post().to(reactivate))
                .default_service(web::to(|req: HttpRequest| not_allowed(req, "POST"))),
        )
        .service(
            web::resource("/keys/{id}")
                .route(web::delete().to(remove))
                .default_service(web::to(|req: HttpRequest| not_allowed(req, "DELETE"))),
        )
        .default_service(web::to(|req: HttpRequest| async move {
            Err::<HttpResponse, _>(ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "unknown_url",
                format!(
                    "Unknown admin path {}: the admin API is /admin/keys, \
                     /admin/keys/{{id}}/reactivate and /admin/keys/{{id}}",
                    req.path()
                ),
            ))
        }))
}

async fn not_allowed(req: HttpRequest, allowed: &str) -> Result<HttpResponse, ApiError> {
    Err(ApiError::method_not_allowed(
        req.method().as_str(),
        req.path(),
        allowed,
    ))
}

/// `POST /admin/keys` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    key: String,
    #[serde(default)]
    label: Option<String>,
    /// Check the key with OpenRouter first (default true).
    #[serde(default)]
    verify: Option<bool>,
}

/// A key in an answer: the `keys list --json` object plus what happened.
#[derive(Serialize)]
struct Answer {
    #[serde(flatten)]
    key: KeyView,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
}

fn internal(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "internal_error",
        format!("{what} failed inside orproxy; see the error log"),
    )
}

fn store_error(e: &StoreError) -> ApiError {
    log::error!("admin API: {e}");
    match e {
        // A shared store that cannot be reached is a temporary condition.
        StoreError::Redis { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "store_unavailable",
            redact(&e.to_string()),
        ),
        _ => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "store_error",
            redact(&e.to_string()),
        ),
    }
}

/// [`store_error`] for a change: says that nothing was changed.
fn change_error(e: &StoreError) -> ApiError {
    let mut err = store_error(e);
    err.message = format!("{}; the change was not made", err.message);
    err
}

fn id_error(e: &IdError) -> ApiError {
    let status = match e {
        IdError::Unknown { .. } => StatusCode::NOT_FOUND,
        IdError::Ambiguous { .. } => StatusCode::CONFLICT,
    };
    let code = match e {
        IdError::Unknown { .. } => "key_not_found",
        IdError::Ambiguous { .. } => "ambiguous_key_id",
    };
    ApiError::new(
        status,
        "invalid_request_error",
        code,
        redact(&e.to_string()),
    )
}

/// Run a store change on a blocking thread, then let the pool pick it up.
async fn change<T: Send + 'static>(
    shared: &web::Data<Shared>,
    f: impl FnMut(&mut StoreFile) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let shared: Arc<Shared> = shared.clone().into_inner();
    web::block(move || {
        let out = shared.store.update(f)?;
        shared.refresh();
        Ok::<_, StoreError>(out)
    })
    .await
    .map_err(|_| internal("changing the key store"))?
    .map_err(|e| change_error(&e))
}

async fn list(shared: web::Data<Shared>) -> Result<HttpResponse, ApiError> {
    let s: Arc<Shared> = shared.into_inner();
    let file = web::block(move || {
        // Write the pool's latest state first, so the answer is current.
        s.sync(false);
        s.store.load()
    })
    .await
    .map_err(|_| internal("reading the key store"))?
    .map_err(|e| store_error(&e))?;
    let now = Utc::now();
    let views: Vec<KeyView> = file.keys.iter().map(|r| KeyView::of(r, now)).collect();
    Ok(HttpResponse::Ok().json(views))
}

async fn read_body(mut payload: web::Payload) -> Result<AddBody, ApiError> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("Cannot read the request body: {e}")))?;
        if buf.len() + chunk.len() > MAX_BODY {
            return Err(ApiError::too_large(MAX_BODY));
        }
        buf.extend_from_slice(&chunk);
    }
    // serde_json quotes mistyped values: redact, in case one is a key.
    serde_json::from_slice(&buf).map_err(|e| {
        ApiError::bad_request(format!(
            "The request body must be a JSON object {{\"key\": \"<OpenRouter key>\", \"label\": \"...\"}}: {}",
            redact(&e.to_string())
        ))
    })
}

async fn add(payload: web::Payload, shared: web::Data<Shared>) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    let key = ApiKey::parse(body.key.trim())
        .map_err(|e| ApiError::bad_request(format!("The key was refused: {e}")))?;
    let mut warnings = Vec::new();
    if !key.looks_like_openrouter() {
        warnings.push(format!(
            "{} does not start with \"sk-or-\", so it may not be an OpenRouter key",
            key.masked()
        ));
    }
    let info = if body.verify.unwrap_or(true) {
        let client = keyinfo::short_client(VERIFY_TIMEOUT);
        match keyinfo::fetch(&client, &shared.config.upstream, &key, Utc::now()).await {
            Ok(info) => Some(info),
            Err(e @ CheckError::Rejected { .. }) => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_request_error",
                    "key_rejected",
                    format!("{} was not added: {}", key.masked(), redact(&e.to_string())),
                ));
            }
            Err(e) => {
                warnings.push(format!(
                    "could not be verified ({}); added unverified",
                    redact(&e.to_string())
                ));
                None
            }
        }
    } else {
        None
    };
    let label = body
        .label
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty());
    let now = Utc::now();
    let (added, view) = change(&shared, move |file| {
        let added = edit::add_key(file, &key, label.as_deref(), info.clone(), now);
        let view = file
            .keys
            .iter()
            .find(|r| r.id == added.id())
            .map(|r| KeyView::of(r, now));
        (added, view)
    })
    .await?;
    let view = view.ok_or_else(|| internal("adding the key"))?;
    let (status, result) = match added {
        Added::New(_) => (StatusCode::CREATED, "added"),
        Added::Reactivated(_) => (StatusCode::OK, "reactivated"),
    };
    Ok(HttpResponse::build(status).json(Answer {
        key: view,
        result: Some(result),
        warning: (!warnings.is_empty()).then(|| warnings.join("; ")),
    }))
}

fn path_id(req: &HttpRequest) -> String {
    req.match_info().get("id").unwrap_or_default().to_owned()
}

async fn reactivate(req: HttpRequest, shared: web::Data<Shared>) -> Result<HttpResponse, ApiError> {
    let id = path_id(&req);
    let now = Utc::now();
    let view = change(&shared, move |file| {
        let indices = edit::resolve_ids(file, std::slice::from_ref(&id))?;
        edit::reactivate(file, &indices);
        Ok::<_, IdError>(
            indices
                .first()
                .and_then(|&i| file.keys.get(i))
                .map(|r| KeyView::of(r, now)),
        )
    })
    .await?
    .map_err(|e| id_error(&e))?
    .ok_or_else(|| internal("reactivating the key"))?;
    Ok(HttpResponse::Ok().json(Answer {
        key: view,
        result: Some("reactivated"),
        warning: None,
    }))
}

async fn remove(req: HttpRequest, shared: web::Data<Shared>) -> Result<HttpResponse, ApiError> {
    let id = path_id(&req);
    let now = Utc::now();
    let removed = change(&shared, move |file| {
        let indices = edit::resolve_ids(file, std::slice::from_ref(&id))?;
        Ok::<_, IdError>(edit::remove(file, &indices))
    })
    .await?
    .map_err(|e| id_error(&e))?;
    let view = removed
        .first()
        .map(|r| KeyView::of(r, now))
        .ok_or_else(|| internal("removing the key"))?;
    Ok(HttpResponse::Ok().json(Answer {
        key: view,
        result: Some("removed"),
        warning: None,
    }))
}
