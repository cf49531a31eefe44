//! `orproxy keys migrate`: copy a store into another (file to Redis, or back).

use crate::cli::MigrateArgs;
use crate::store::Backend;
use crate::store::location::Location;
use anyhow::Context;
use std::process::ExitCode;

/// Copy every key of `--from` that `--to` lacks, with its state, label and
/// OpenRouter info, and the accounts' free-model counts (the larger count of
/// the same day wins). The source is only read.
pub(super) fn run(args: &MigrateArgs, prefix: Option<&str>) -> anyhow::Result<ExitCode> {
    let open = |raw: &str| -> anyhow::Result<Backend> {
        let redis = raw.to_ascii_lowercase().starts_with("redis");
        let location = Location::parse(raw.trim(), prefix.filter(|_| redis))?;
        Ok(Backend::open(&location)?)
    };
    let from = open(&args.from)?;
    let to = open(&args.to)?;
    if from.describe() == to.describe() {
        anyhow::bail!("--from and --to are the same store ({})", from.describe());
    }
    let source = from
        .load()
        .with_context(|| format!("cannot read {}", from.describe()))?;
    let (copied, kept) = to.update(|target| {
        let mut copied = Vec::new();
        let mut kept = Vec::new();
        for record in &source.keys {
            let present = target
                .keys
                .iter()
                .any(|r| r.id == record.id || r.key == record.key);
            if present {
                kept.push(record.id.clone());
            } else {
                target.keys.push(record.clone());
                copied.push(record.id.clone());
            }
        }
        for (name, account) in &source.accounts {
            let entry = target.accounts.entry(name.clone()).or_default();
            if entry.day == account.day {
                entry.free_requests = entry.free_requests.max(account.free_requests);
            } else if entry.day < account.day {
                entry.day = account.day;
                entry.free_requests = account.free_requests;
            }
            if entry.daily_limit.is_none() {
                entry.daily_limit = account.daily_limit;
            }
        }
        (copied, kept)
    })?;
    for id in &copied {
        // IDs as the source store holds them: escaped, like all stored text.
        crate::out!("copied {}", crate::escape::visible(id))?;
    }
    for id in &kept {
        crate::out!(
            "kept {}: already in {}",
            crate::escape::visible(id),
            to.describe()
        )?;
    }
    crate::out!(
        "{} of {} keys copied from {} to {}",
        copied.len(),
        source.keys.len(),
        from.describe(),
        to.describe()
    )?;
    Ok(ExitCode::SUCCESS)
}
