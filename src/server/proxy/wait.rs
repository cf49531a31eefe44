//! Waiting for a key: ask the pool, and while every usable key cools (or
//! the model backs off), wait for the soonest one within `--max-wait`,
//! waking early when a key comes back.

use super::outgoing::Outgoing;
use crate::pool::Choice;
use crate::secret::ApiKey;
use crate::server::errors::ApiError;
use crate::server::shared::Shared;
use chrono::Utc;
use std::time::{Duration, Instant};

/// Measures one wait for a free key: started when the request first has to
/// wait, pushed into `waits` once when dropped (key found, gave up, or the
/// client went away and the wait was cancelled).
struct Waiting<'a> {
    waits: &'a mut Vec<Duration>,
    since: Option<Instant>,
}

impl Waiting<'_> {
    fn start(&mut self) {
        self.since.get_or_insert_with(Instant::now);
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(since) = self.since {
            self.waits.push(since.elapsed());
        }
    }
}

/// A key for the next attempt of `request`, not one of `tried` unless
/// every usable key was tried, waiting (without spinning) until `deadline`
/// for one to be free; or the error that says why there is none. `Ok(None)`
/// only for a keyless endpoint when no key is usable: it is sent without
/// one. A wait is added to `waits`.
pub(crate) async fn for_key(
    shared: &Shared,
    tried: &[String],
    deadline: Instant,
    request: &Outgoing,
    waits: &mut Vec<Duration>,
) -> Result<Option<(String, ApiKey)>, ApiError> {
    let mut waiting = Waiting { waits, since: None };
    // A generation is asked of its own account first.
    let exclude: std::borrow::Cow<'_, [String]> = match &request.served_by {
        Some(id) => {
            let mut others = tried.to_vec();
            others.extend(shared.outside_account_of(id));
            others.into()
        }
        None => tried.into(),
    };
    loop {
        // Register for wake-ups before looking, so none is missed.
        let notified = shared.changed().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now = Utc::now();
        // The upstream is down: answer at once rather than walk the pool.
        if let Some(outage) = shared.outage() {
            return Err(ApiError::upstream_down(&outage, now));
        }
        if let Some(model) = request.model.as_deref()
            && let Some(until) = shared.model_backoff(model, now)
        {
            let wait = (until - now).to_std().unwrap_or_default();
            if Instant::now() + wait > deadline {
                return Err(ApiError::model_busy(model, until, now));
            }
            tokio::time::sleep(wait).await;
            continue;
        }
        match shared.choose(now, &exclude, request.free) {
            Choice::Use { id, key } => {
                // With a shared store, a free-model request takes a slot in
                // the account's shared counts first; at a cap there, the
                // account is skipped and another key chosen.
                if request.free && !shared.reserve_free(&id).await {
                    continue;
                }
                return Ok(Some((id, key)));
            }
            Choice::Unavailable { .. } if request.endpoint.keyless => return Ok(None),
            Choice::Unavailable { soonest, holds } => {
                let Some(soonest) = soonest else {
                    return Err(ApiError::no_usable_key(&holds));
                };
                let wait = (soonest - now).to_std().unwrap_or_default();
                if Instant::now() + wait > deadline {
                    return Err(if holds.all_daily() {
                        ApiError::daily_quota_spent(soonest, now)
                    } else {
                        ApiError::all_held(soonest, now, request.free, &holds)
                    });
                }
                waiting.start();
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = &mut notified => {}
                }
            }
        }
    }
}
