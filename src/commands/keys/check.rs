//! `orproxy keys check`: ask OpenRouter about each key (`GET /key`, no
//! quota spent), record what it says, and show it.

use crate::cli::CheckArgs;
use crate::escape::{json_visible, visible};
use crate::model::KeyInfo;
use crate::openrouter::keyinfo::{self, KeyCheck};
use crate::pool::accounts::{self, Learned};
use crate::secret::ApiKey;
use crate::store::Backend;
use crate::store::edit;
use chrono::Utc;
use comfy_table::{Table, presets};
use std::process::ExitCode;

/// One key's line in `keys check`.
#[derive(serde::Serialize)]
struct Checked {
    id: String,
    masked: String,
    /// `ok`, `rejected` or `unreachable`.
    result: &'static str,
    error: Option<String>,
    info: Option<KeyInfo>,
}

pub(super) fn run(store: &Backend, args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let file = store.load()?;
    let indices = if args.ids.is_empty() {
        (0..file.keys.len()).collect()
    } else {
        edit::resolve_ids(&file, &args.ids)?
    };
    if indices.is_empty() {
        crate::out!("No keys to check. Add one with `orproxy keys add`.")?;
        return Ok(ExitCode::SUCCESS);
    }
    let targets: Vec<(String, ApiKey)> = indices
        .iter()
        .filter_map(|&i| file.keys.get(i))
        .map(|r| (r.id.clone(), r.key.clone()))
        .collect();
    let upstream = &args.upstream;
    let results = actix_web::rt::System::new().block_on(async {
        let client = keyinfo::client();
        let checks = targets
            .iter()
            .map(|(_, key)| keyinfo::check(&client, upstream, key, Utc::now()));
        futures_util::future::join_all(checks).await
    });
    let checked: Vec<Checked> = targets
        .iter()
        .zip(results)
        .map(|((id, key), check)| {
            let result = check.name();
            let (error, info) = match check {
                KeyCheck::Known(info) => (None, Some(info)),
                KeyCheck::Rejected(e) | KeyCheck::Unknown(e) => (Some(e.to_string()), None),
            };
            Checked {
                id: id.clone(),
                masked: key.masked(),
                result,
                error,
                info,
            }
        })
        .collect();
    // Record what OpenRouter said, with its accounts' counts; the running
    // server picks it up.
    let now = Utc::now();
    let learned: Vec<(String, Learned)> = store.update(|file| {
        checked
            .iter()
            .filter_map(|c| {
                let learned = accounts::learn(file, &c.id, c.info.clone()?, now)?;
                Some((c.id.clone(), learned))
            })
            .collect()
    })?;
    let notes = notes(&learned);
    if args.json {
        crate::out!("{}", json_visible(&serde_json::to_string_pretty(&checked)?))?;
        for note in notes {
            eprintln!("{note}");
        }
    } else {
        crate::out!("{}", table(&checked))?;
        for note in notes {
            crate::out!("{note}")?;
        }
    }
    Ok(if checked.iter().all(|c| c.result == "ok") {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What the check changed in the accounts' `:free` counts, one line each.
fn notes(learned: &[(String, Learned)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut lowered_seen = Vec::new();
    for (id, l) in learned {
        let account = visible(&l.quota).into_owned();
        if l.moved > 0 {
            out.push(format!(
                "key {}: its account is {account}: the {} :free requests it made today count \
                 for the account now",
                visible(id),
                l.moved
            ));
        }
        if let Some((counted, used)) = l.lowered
            && !lowered_seen.contains(&l.quota)
        {
            lowered_seen.push(l.quota.clone());
            out.push(format!(
                "account {account}: OpenRouter counts {used} :free requests today where orproxy \
                 counted {counted}: orproxy's count is {used} now"
            ));
        }
    }
    out
}

/// The `keys check` table. OpenRouter's messages, labels and accounts are
/// escaped, like every cell.
fn table(checked: &[Checked]) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED);
    table.set_header(vec![
        "ID",
        "Key",
        "Result",
        "OpenRouter label",
        "Tier",
        "Credit limit",
        "Free today",
        "Account",
    ]);
    for c in checked {
        let info = c.info.clone().unwrap_or_default();
        let tier = match info.is_free_tier {
            Some(true) => "free",
            Some(false) => "paid",
            None => "",
        };
        let limit = match (info.limit, info.limit_remaining) {
            (Some(l), Some(r)) => format!("{r} of {l} left"),
            (Some(l), None) => l.to_string(),
            _ if c.info.is_some() => "none".to_owned(),
            _ => String::new(),
        };
        let free = info
            .free_model_daily_requests
            .as_ref()
            .and_then(|f| Some(format!("{}/{}", f.used?, f.limit?)))
            .unwrap_or_default();
        let result = match (&c.error, c.result) {
            (Some(e), "rejected") => {
                format!("{e}: remove it with `orproxy keys remove {}`", c.id)
            }
            (Some(e), _) => e.clone(),
            (None, r) => r.to_owned(),
        };
        let row = [
            c.id.clone(),
            c.masked.clone(),
            result,
            info.label.unwrap_or_default(),
            tier.to_owned(),
            limit,
            free,
            info.creator_user_id.unwrap_or_default(),
        ];
        table.add_row(row.iter().map(|cell| visible(cell).into_owned()));
    }
    table
}
