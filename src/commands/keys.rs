//! `orproxy keys ...`: the offline key commands, all on the shared store.

use crate::cli::{AddArgs, CheckArgs, KeysArgs, KeysCommand, ListArgs, ReactivateArgs, RemoveArgs};
use crate::human;
use crate::model::KeyView;
use crate::model::Status;
use crate::model::{KeyInfo, StoreFile};
use crate::openrouter::keyinfo::{self, CheckError};
use crate::secret::ApiKey;
use crate::store::Backend;
use crate::store::edit::{self, Added};
use anyhow::Context;
use chrono::Utc;
use comfy_table::{Cell, Color, ContentArrangement, Table, presets};
use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use std::time::Duration;

/// How long `keys add` waits for OpenRouter's `GET /key`.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(15);

/// Dispatch `orproxy keys <command>`.
pub fn run(cli: &crate::cli::Cli, args: &KeysArgs) -> anyhow::Result<ExitCode> {
    let prefix = cli.redis_prefix.as_deref();
    if let KeysCommand::Migrate(m) = &args.command {
        return super::migrate::run(m, prefix);
    }
    let location = crate::config::store_location(cli.store.as_deref(), prefix)?;
    let store = &Backend::open(&location)?;
    match &args.command {
        KeysCommand::Migrate(m) => super::migrate::run(m, prefix),
        KeysCommand::Add(a) => add(store, a),
        KeysCommand::List(a) => list(store, a),
        KeysCommand::Reactivate(a) => reactivate(store, a),
        KeysCommand::Remove(a) => remove(store, a),
        KeysCommand::Check(a) => check(store, a),
    }
}

/// A key as given, before checks: where it came from, for messages that must
/// not repeat the key itself.
struct Candidate {
    origin: String,
    raw: String,
}

fn add(store: &Backend, args: &AddArgs) -> anyhow::Result<ExitCode> {
    let mut adder = Adder::new(store, args)?;
    if !args.keys.is_empty() {
        let batch = args
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| Candidate {
                origin: format!("--key #{}", i + 1),
                raw: k.clone(),
            })
            .collect();
        adder.add_batch(batch)?;
    } else if std::io::stdin().is_terminal() {
        adder.interactive()?;
    } else {
        let batch = read_stdin_keys()?;
        if batch.is_empty() {
            eprintln!(
                "error: no keys on stdin (one key per line; blank lines and # comments are skipped)"
            );
            return Ok(ExitCode::FAILURE);
        }
        adder.add_batch(batch)?;
    }
    Ok(if adder.refused > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn read_stdin_keys() -> anyhow::Result<Vec<Candidate>> {
    let stdin = std::io::stdin();
    let mut out = Vec::new();
    for (n, line) in stdin.lock().lines().enumerate() {
        let line = line.context("cannot read keys from stdin")?;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        out.push(Candidate {
            origin: format!("stdin line {}", n + 1),
            raw: trimmed.to_owned(),
        });
    }
    Ok(out)
}

struct Adder<'a> {
    store: &'a Backend,
    args: &'a AddArgs,
    runtime: Option<actix_web::rt::SystemRunner>,
    refused: usize,
}

impl<'a> Adder<'a> {
    fn new(store: &'a Backend, args: &'a AddArgs) -> anyhow::Result<Self> {
        let runtime = (!args.no_verify).then(actix_web::rt::System::new);
        Ok(Self {
            store,
            args,
            runtime,
            refused: 0,
        })
    }

    fn interactive(&mut self) -> anyhow::Result<()> {
        let theme = dialoguer::theme::SimpleTheme;
        loop {
            let raw = dialoguer::Password::with_theme(&theme)
                .with_prompt("OpenRouter API key (input hidden)")
                .interact()
                .context("cannot read the key from the terminal")?;
            self.add_batch(vec![Candidate {
                origin: "the key entered".into(),
                raw: raw.trim().to_owned(),
            }])?;
            let again = dialoguer::Confirm::with_theme(&theme)
                .with_prompt("Add another key?")
                .default(false)
                .interact()
                .context("cannot read the answer from the terminal")?;
            if !again {
                return Ok(());
            }
        }
    }

    /// Check, verify and store a batch of keys under one lock.
    fn add_batch(&mut self, batch: Vec<Candidate>) -> anyhow::Result<()> {
        let mut ready: Vec<(ApiKey, Option<KeyInfo>)> = Vec::new();
        for candidate in batch {
            let key = match ApiKey::parse(&candidate.raw) {
                Ok(key) => key,
                Err(e) => {
                    eprintln!("error: {} refused: {e}", candidate.origin);
                    self.refused += 1;
                    continue;
                }
            };
            if !key.looks_like_openrouter() {
                eprintln!(
                    "warning: {} ({}) does not start with \"sk-or-\", so it may not be an OpenRouter key; adding it anyway",
                    candidate.origin,
                    key.masked()
                );
            }
            match self.verify(&key) {
                Verified::Info(info) => {
                    crate::out!(
                        "{}: OpenRouter says {}",
                        key.masked(),
                        keyinfo::describe(&info)
                    )?;
                    ready.push((key, Some(info)));
                }
                Verified::Skipped => ready.push((key, None)),
                Verified::Rejected(e) => {
                    eprintln!(
                        "error: {} ({}) not added: {e}",
                        candidate.origin,
                        key.masked()
                    );
                    self.refused += 1;
                }
                Verified::Unknown(e) => {
                    eprintln!(
                        "warning: {} could not be verified ({e}); adding it unverified",
                        key.masked()
                    );
                    ready.push((key, None));
                }
            }
        }
        if ready.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let label = self.args.label.as_deref();
        let results = self.store.update(|file| {
            ready
                .iter()
                .map(|(key, info)| {
                    (
                        key.masked(),
                        edit::add_key(file, key, label, info.clone(), now),
                    )
                })
                .collect::<Vec<_>>()
        })?;
        for (masked, added) in results {
            match added {
                Added::New(id) => crate::out!("added {id} {masked}")?,
                Added::Reactivated(id) => crate::out!(
                    "{masked} was already stored as {id}: reactivated (cooldown, failures and disabled flag cleared)"
                )?,
            }
        }
        Ok(())
    }

    fn verify(&self, key: &ApiKey) -> Verified {
        let Some(system) = &self.runtime else {
            return Verified::Skipped;
        };
        let upstream = self.args.upstream.clone();
        let result = system.block_on(async {
            let client = keyinfo::short_client(VERIFY_TIMEOUT);
            keyinfo::fetch(&client, &upstream, key, Utc::now()).await
        });
        match result {
            Ok(info) => Verified::Info(info),
            Err(e @ CheckError::Rejected { .. }) => Verified::Rejected(e),
            Err(e) => Verified::Unknown(e),
        }
    }
}

enum Verified {
    Info(KeyInfo),
    Skipped,
    Rejected(CheckError),
    Unknown(CheckError),
}

fn list(store: &Backend, args: &ListArgs) -> anyhow::Result<ExitCode> {
    if args.watch {
        return super::watch::run(store);
    }
    let file = store.load()?;
    let now = Utc::now();
    if args.json {
        let views: Vec<KeyView> = file.keys.iter().map(|r| KeyView::of(r, now)).collect();
        crate::out!("{}", serde_json::to_string_pretty(&views)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if file.keys.is_empty() {
        crate::out!(
            "No keys in {}. Add one with `orproxy keys add` (or pipe keys into it, one per line).",
            store.describe()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let stdout = std::io::stdout();
    let color = stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    crate::out!("{}", table(&file, now, color, stdout.is_terminal()))?;
    Ok(ExitCode::SUCCESS)
}

/// The `keys list` table.
pub fn table(file: &StoreFile, now: chrono::DateTime<Utc>, color: bool, tty: bool) -> Table {
    let with_account = file.keys.iter().any(|r| r.account().is_some());
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED);
    if !color {
        table.force_no_tty();
    } else {
        table.enforce_styling();
    }
    // Fit the terminal when there is a sensible width to fit.
    let fits = tty && table.width().is_some_and(|w| w >= 60);
    table.set_content_arrangement(if fits {
        ContentArrangement::Dynamic
    } else {
        ContentArrangement::Disabled
    });
    let mut header = vec!["ID", "Label", "Key"];
    if with_account {
        header.push("Account");
    }
    header.extend(["Status", "Until / why", "Failures", "Last used", "Requests"]);
    table.set_header(header);
    for record in &file.keys {
        let status = record.state.status(now);
        let (status_color, detail) = match &status {
            Status::Active => (Color::Green, String::new()),
            Status::Cooling { until, reason } => (
                Color::Yellow,
                match reason {
                    Some(r) => format!("{}, {r}", human::until(*until, now)),
                    None => human::until(*until, now),
                },
            ),
            Status::Disabled { reason } => (
                Color::Red,
                reason.clone().unwrap_or_else(|| "disabled".into()),
            ),
        };
        let mut row = vec![
            Cell::new(&record.id),
            Cell::new(record.label.as_deref().unwrap_or("")),
            Cell::new(record.key.masked()),
        ];
        if with_account {
            row.push(Cell::new(record.account().unwrap_or("")));
        }
        row.extend([
            Cell::new(status.name()).fg(status_color),
            Cell::new(detail),
            Cell::new(record.state.consecutive_failures),
            Cell::new(human::ago(record.state.last_used, now)),
            Cell::new(record.state.requests_total),
        ]);
        table.add_row(row);
    }
    table
}

fn reactivate(store: &Backend, args: &ReactivateArgs) -> anyhow::Result<ExitCode> {
    let done = store.update(|file| {
        let indices = if args.all {
            (0..file.keys.len()).collect()
        } else {
            edit::resolve_ids(file, &args.ids)?
        };
        Ok::<_, edit::IdError>(edit::reactivate(file, &indices))
    })??;
    if done.is_empty() {
        crate::out!("No keys to reactivate.")?;
    }
    for id in done {
        crate::out!("reactivated {id}")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn remove(store: &Backend, args: &RemoveArgs) -> anyhow::Result<ExitCode> {
    let removed = store.update(|file| {
        let indices = edit::resolve_ids(file, &args.ids)?;
        Ok::<_, edit::IdError>(edit::remove(file, &indices))
    })??;
    for record in removed {
        crate::out!("removed {} {}", record.id, record.key.masked())?;
    }
    Ok(ExitCode::SUCCESS)
}

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

fn check(store: &Backend, args: &CheckArgs) -> anyhow::Result<ExitCode> {
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
    let upstream = args.upstream.clone();
    let results = actix_web::rt::System::new().block_on(async {
        let client = keyinfo::short_client(VERIFY_TIMEOUT);
        let checks = targets
            .iter()
            .map(|(_, key)| keyinfo::fetch(&client, &upstream, key, Utc::now()));
        futures_util::future::join_all(checks).await
    });
    let checked: Vec<Checked> = targets
        .iter()
        .zip(results)
        .map(|((id, key), result)| {
            let (result, error, info) = match result {
                Ok(info) => ("ok", None, Some(info)),
                Err(e @ CheckError::Rejected { .. }) => ("rejected", Some(e.to_string()), None),
                Err(e) => ("unreachable", Some(e.to_string()), None),
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
    // Record what OpenRouter said; the running server picks it up.
    store.update(|file| {
        for c in &checked {
            if let (Some(info), Some(record)) =
                (&c.info, file.keys.iter_mut().find(|r| r.id == c.id))
            {
                record.info = Some(info.clone());
            }
        }
    })?;
    if args.json {
        crate::out!("{}", serde_json::to_string_pretty(&checked)?)?;
    } else {
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
        for c in &checked {
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
            table.add_row(vec![
                c.id.clone(),
                c.masked.clone(),
                result,
                info.label.unwrap_or_default(),
                tier.to_owned(),
                limit,
                free,
                info.creator_user_id.unwrap_or_default(),
            ]);
        }
        crate::out!("{table}")?;
    }
    Ok(if checked.iter().all(|c| c.result == "ok") {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
