//! `orproxy keys list`: the table, `--json`, or `--watch`.

use crate::cli::ListArgs;
use crate::store::Backend;
use chrono::Utc;
use std::io::IsTerminal;
use std::process::ExitCode;

pub(super) fn run(store: &Backend, args: &ListArgs) -> anyhow::Result<ExitCode> {
    if args.watch {
        return super::watch::run(store);
    }
    let file = store.load()?;
    let now = Utc::now();
    if args.json {
        let views = crate::pool::availability::views(&file, now);
        crate::out!(
            "{}",
            crate::escape::json_visible(&serde_json::to_string_pretty(&views)?)
        )?;
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
    let tty = stdout.is_terminal();
    crate::out!(
        "{}",
        super::table::table(&file, now, super::use_color(tty), tty)
    )?;
    Ok(ExitCode::SUCCESS)
}
