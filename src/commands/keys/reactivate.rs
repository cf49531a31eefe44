//! `orproxy keys reactivate`: clear the disabled flag, cooldowns and
//! failure count of the given keys (or `--all`); say when a key's account
//! has spent its `:free` requests for the day, which no reactivation
//! changes; `--forget-quota` forgets orproxy's count of them.

use crate::cli::ReactivateArgs;
use crate::escape::visible;
use crate::human;
use crate::model::{Hold, StoreFile};
use crate::store::Backend;
use crate::store::edit;
use chrono::{DateTime, Utc};
use std::process::ExitCode;

pub(super) fn run(store: &Backend, args: &ReactivateArgs) -> anyhow::Result<ExitCode> {
    let now = Utc::now();
    let (done, forgotten, file) = store.update(|file| {
        let indices = if args.all {
            (0..file.keys.len()).collect()
        } else {
            edit::resolve_ids(file, &args.ids)?
        };
        let done = edit::reactivate(file, &indices);
        let forgotten = if args.forget_quota {
            let quotas: Vec<String> = indices
                .iter()
                .filter_map(|&i| file.keys.get(i))
                .map(|r| r.quota_account())
                .collect();
            crate::pool::accounts::forget(file, &quotas, now)
        } else {
            Vec::new()
        };
        Ok::<_, edit::IdError>((done, forgotten, file.clone()))
    })??;
    if done.is_empty() {
        crate::out!("No keys to reactivate.")?;
    }
    for id in &done {
        crate::out!("reactivated {}", visible(id))?;
    }
    for (quota, had) in &forgotten {
        crate::out!(
            "forgot today's :free requests of {} ({had} counted): orproxy counts from 0 again",
            visible(&shown_account(quota))
        )?;
    }
    for line in spent_notes(&file, &done, now) {
        crate::out!("{line}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// An account as messages name it: `account user_1`, or `key 1a2b3c4d`'s
/// own count when its account is unknown.
fn shown_account(quota: &str) -> String {
    match quota.strip_prefix("key:") {
        Some(id) => format!("key {id} (account unknown)"),
        None => format!("account {quota}"),
    }
}

/// A note for each account of the reactivated keys `ids` that has spent
/// its `:free` requests of the day: reactivating does not change that.
fn spent_notes(file: &StoreFile, ids: &[String], now: DateTime<Utc>) -> Vec<String> {
    let mut seen = Vec::new();
    let mut notes = Vec::new();
    let board = crate::pool::availability::board(file, now);
    for (record, (availability, free)) in file.keys.iter().zip(&board) {
        if !ids.contains(&record.id) || seen.contains(&free.quota) {
            continue;
        }
        let Some(held) = availability
            .free
            .as_ref()
            .filter(|h| h.hold == Hold::DailyCap)
        else {
            continue;
        };
        seen.push(free.quota.clone());
        let limit = free
            .daily_limit
            .map_or_else(|| "?".to_owned(), |l| l.to_string());
        let resets = held.until.map_or_else(String::new, |at| {
            format!(" ({}, {})", human::rfc3339(at), human::until(at, now))
        });
        notes.push(format!(
            "note: {} has spent its :free requests for today ({}/{limit}): :free models wait \
             until they reset at 00:00 UTC{resets}; paid models work. If orproxy counted wrong \
             (credits bought, say): orproxy keys reactivate --forget-quota {}",
            visible(&shown_account(&free.quota)),
            free.today,
            visible(&record.id)
        ));
    }
    notes
}
