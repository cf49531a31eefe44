//! What the server does in the background, off the request path: the
//! state writer, the re-checks of disabled keys, and the checks of a down
//! upstream.

use super::shared::Shared;
use actix_web::web;
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;

/// Once a second: recover keys whose cooldown ended, and merge the pool with
/// the store file (write our state, pick up `orproxy keys` changes). Never on
/// the request path.
pub(super) async fn state_writer(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        shared.tick(Utc::now());
        let sync = shared.sync().clone();
        if web::block(move || sync.sync()).await.is_err() {
            log::error!("the state writer's thread pool is gone");
        }
    }
}

/// Re-check keys disabled by failures with `GET /key` (no quota spent) and
/// bring back those that answer; a 401 ends the re-checks for that key.
pub(super) async fn reprober(shared: Arc<Shared>, every: Duration) {
    use crate::openrouter::keyinfo;
    let every_delta = chrono::TimeDelta::from_std(every).unwrap_or(chrono::TimeDelta::MAX);
    let client = keyinfo::client();
    // Look often; each key is re-checked at most once per `every`.
    let mut interval = tokio::time::interval(every.min(Duration::from_secs(5)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        for (id, key) in shared.due_for_probe(Utc::now(), every_delta) {
            let check = keyinfo::check(&client, &shared.config.upstream, &key, Utc::now()).await;
            let probe = crate::pool::decide::probe(&check);
            log::info!(target: "orproxy::keys", "re-checked disabled key {id}: {probe:?}");
            shared.probe_result(&id, probe, Utc::now());
            if let keyinfo::KeyCheck::Known(info) = check {
                record_info(&shared, id, info).await;
            }
        }
    }
}

/// Record what OpenRouter said about key `id` in the store, as `keys check`
/// does (its account learned, its counts carried into the account's), and
/// let the pool take it in. Off the request path; a failure is logged.
async fn record_info(shared: &Arc<Shared>, id: String, info: crate::model::KeyInfo) {
    let shared = shared.clone();
    let done = web::block(move || {
        shared.store.update(|file| {
            crate::pool::accounts::learn(file, &id, info.clone(), Utc::now());
        })?;
        shared.sync().refresh();
        Ok::<_, crate::store::StoreError>(())
    })
    .await;
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log::warn!("cannot record what OpenRouter said about a key: {e}"),
        Err(_) => log::error!("the store's thread pool is gone"),
    }
}

/// While the upstream is down, check it every few seconds with a request
/// that spends no quota (`GET /key`); any answer below 500 brings it back.
pub(super) async fn upstream_checker(shared: Arc<Shared>) {
    use crate::openrouter::keyinfo::{self, CheckError, KeyCheck};
    let client = keyinfo::client_with_timeout(Duration::from_secs(5));
    let mut interval = tokio::time::interval(Duration::from_millis(250));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if !shared.upstream_check_due(Utc::now()) {
            continue;
        }
        let Some(key) = shared.any_key() else {
            continue;
        };
        let check = keyinfo::check(&client, &shared.config.upstream, &key, Utc::now()).await;
        let reachable = match &check {
            KeyCheck::Known(_) | KeyCheck::Rejected(_) => true,
            KeyCheck::Unknown(CheckError::Unexpected { status, .. }) => *status < 500,
            KeyCheck::Unknown(_) => false,
        };
        shared.upstream_checked(reachable);
    }
}
