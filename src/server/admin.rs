//! The admin API under `/admin` (behind the admin token, see [`super::auth`]):
//!
//! - `GET /admin/keys`: every key, as `orproxy keys list --json` prints it.
//! - `POST /admin/keys` `{"key", "label"?, "verify"?}`: add a key (201) or
//!   reactivate a stored one (200).
//! - `POST /admin/keys/{id}/reactivate`, `DELETE /admin/keys/{id}`.
//! - `GET /admin/usage?by=key|account|model&since=DATE|Nd`: the rows
//!   `orproxy usage --json` prints.
//!
//! Changes go through the same locked store as the CLI (`Store::update` and
//! [`crate::store::edit`]), on a blocking thread, and the pool is synchronised
//! right after, so the running server uses them at once. No answer ever
//! contains a full key.

use super::errors::ApiError;
use super::shared::Shared;
use crate::model::KeyView;
use crate::model::StoreFile;
use crate::model::{Since, UsageBy, first_kept_day};
use crate::openrouter::keyinfo::{self, KeyCheck};
use crate::secret::{ApiKey, redact};
use crate::store::StoreError;
use crate::store::edit::{self, Added, IdError};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Largest admin request body.
const MAX_BODY: usize = 64 * 1024;

/// The `/admin` scope, with the admin-token middleware.
pub(crate) fn scope() -> actix_web::Scope<
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
        .service(
            web::resource("/usage")
                .route(web::get().to(usage))
                .default_service(web::to(|req: HttpRequest| not_allowed(req, "GET"))),
        )
        .default_service(web::to(|req: HttpRequest| async move {
            Err::<HttpResponse, _>(ApiError::admin_not_found(req.path()))
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
struct KeyReply {
    #[serde(flatten)]
    key: KeyView,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
}

fn store_error(e: &StoreError) -> ApiError {
    log::error!("admin API: {e}");
    let message = redact(&e.to_string());
    match e {
        // A shared store that cannot be reached is a temporary condition.
        StoreError::Redis { .. } => ApiError::store_unavailable(message),
        _ => ApiError::store_failed(message),
    }
}

fn id_error(e: &IdError) -> ApiError {
    let message = redact(&e.to_string());
    match e {
        IdError::Unknown { .. } => ApiError::key_not_found(message),
        IdError::Ambiguous { .. } => ApiError::ambiguous_key_id(message),
    }
}

/// Run a store change on a blocking thread, then let the pool pick it up.
async fn change<T: Send + 'static>(
    shared: &web::Data<Shared>,
    f: impl FnMut(&mut StoreFile) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let shared: Arc<Shared> = shared.clone().into_inner();
    web::block(move || {
        let out = shared.store.update(f)?;
        shared.sync().refresh();
        Ok::<_, StoreError>(out)
    })
    .await
    .map_err(|_| ApiError::internal("changing the key store"))?
    .map_err(|e| store_error(&e).noting("the change was not made"))
}

async fn list(shared: web::Data<Shared>) -> Result<HttpResponse, ApiError> {
    let s: Arc<Shared> = shared.into_inner();
    let file = web::block(move || {
        // Write the pool's latest state first, so the answer is current.
        s.sync().settle();
        s.store.load()
    })
    .await
    .map_err(|_| ApiError::internal("reading the key store"))?
    .map_err(|e| store_error(&e))?;
    Ok(HttpResponse::Ok().json(crate::pool::availability::views(&file, Utc::now())))
}

/// `by` and `since` of a `GET /admin/usage` query, as `orproxy usage` takes
/// them.
fn usage_query(query: &str) -> Result<(Option<UsageBy>, Option<Since>), ApiError> {
    let (mut by, mut since) = (None, None);
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "by" => {
                by = Some(UsageBy::parse(&value).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "by={value:?} is not one of key, account or model"
                    ))
                })?);
            }
            "since" => {
                since = Some(
                    value
                        .parse::<Since>()
                        .map_err(|e| ApiError::bad_request(format!("since: {e}")))?,
                );
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "Unknown query parameter {other:?}: /admin/usage takes by and since"
                )));
            }
        }
    }
    Ok((by, since))
}

async fn usage(req: HttpRequest, shared: web::Data<Shared>) -> Result<HttpResponse, ApiError> {
    let (by, since) = usage_query(req.query_string())?;
    let today = Utc::now().date_naive();
    let since = since.map_or_else(|| first_kept_day(today), |s| s.first_day(today));
    let s: Arc<Shared> = shared.into_inner();
    let book = web::block(move || {
        s.sync().sync();
        s.store.usage(since, today)
    })
    .await
    .map_err(|_| ApiError::internal("reading the usage"))?
    .map_err(|e| store_error(&e))?;
    Ok(HttpResponse::Ok().json(book.rows(by, since)))
}

async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    total: std::time::Duration,
) -> Result<AddBody, ApiError> {
    let buf = super::body::read(req.headers(), payload, MAX_BODY, total).await?;
    // serde_json quotes mistyped values: redact, in case one is a key.
    serde_json::from_slice(&buf).map_err(|e| {
        ApiError::bad_request(format!(
            "The request body must be a JSON object {{\"key\": \"<OpenRouter key>\", \"label\": \"...\"}}: {}",
            redact(&e.to_string())
        ))
    })
}

async fn add(
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Shared>,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(&req, payload, shared.config.body_timeout).await?;
    let key = ApiKey::parse(body.key.trim())
        .map_err(|e| ApiError::bad_request(format!("The key was refused: {e}")))?;
    let mut warnings = Vec::new();
    if let Some(problem) = key.not_openrouter() {
        warnings.push(format!(
            "{} {problem}, so it is probably not an OpenRouter key",
            key.masked()
        ));
    }
    let info = if body.verify.unwrap_or(true) {
        let client = keyinfo::client();
        match keyinfo::check(&client, &shared.config.upstream, &key, Utc::now()).await {
            KeyCheck::Known(info) => Some(info),
            KeyCheck::Rejected(e) => {
                return Err(ApiError::key_rejected(format!(
                    "{} was not added: {}",
                    key.masked(),
                    redact(&e.to_string())
                )));
            }
            KeyCheck::Unknown(e) => {
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
        let added = edit::add_key(file, &key, label.as_deref(), None, now);
        if let Some(info) = info.clone() {
            crate::pool::accounts::learn(file, added.id(), info, now);
        }
        let view = view_of(file, added.id(), now);
        (added, view)
    })
    .await?;
    let view = view.ok_or_else(|| ApiError::internal("adding the key"))?;
    let (status, result) = match added {
        Added::New(_) => (StatusCode::CREATED, "added"),
        Added::Reactivated(_) => (StatusCode::OK, "reactivated"),
    };
    Ok(HttpResponse::build(status).json(KeyReply {
        key: view,
        result: Some(result),
        warning: (!warnings.is_empty()).then(|| warnings.join("; ")),
    }))
}

/// The view of key `id` in `file` at `now`.
fn view_of(file: &StoreFile, id: &str, now: chrono::DateTime<Utc>) -> Option<KeyView> {
    let index = file.keys.iter().position(|r| r.id == id)?;
    crate::pool::availability::views(file, now)
        .into_iter()
        .nth(index)
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
                .and_then(|r| view_of(file, &r.id, now)),
        )
    })
    .await?
    .map_err(|e| id_error(&e))?
    .ok_or_else(|| ApiError::internal("reactivating the key"))?;
    Ok(HttpResponse::Ok().json(KeyReply {
        key: view,
        result: Some("reactivated"),
        warning: None,
    }))
}

async fn remove(req: HttpRequest, shared: web::Data<Shared>) -> Result<HttpResponse, ApiError> {
    let id = path_id(&req);
    let now = Utc::now();
    let view = change(&shared, move |file| {
        let indices = edit::resolve_ids(file, std::slice::from_ref(&id))?;
        // The view as it was, before the key goes.
        let view = indices
            .first()
            .and_then(|&i| file.keys.get(i))
            .and_then(|r| view_of(file, &r.id, now));
        edit::remove(file, &indices);
        Ok::<_, IdError>(view)
    })
    .await?
    .map_err(|e| id_error(&e))?
    .ok_or_else(|| ApiError::internal("removing the key"))?;
    Ok(HttpResponse::Ok().json(KeyReply {
        key: view,
        result: Some("removed"),
        warning: None,
    }))
}
