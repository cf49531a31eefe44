//! `orproxy keys ...`: the offline key commands, one file each, all on the
//! shared store.

mod add;
mod check;
mod list;
mod migrate;
mod reactivate;
mod remove;
mod table;
mod watch;

use crate::cli::{KeysArgs, KeysCommand};
use crate::config::ConfigError;
use crate::store::Backend;
use crate::store::location::Location;
use std::process::ExitCode;

/// Run `orproxy keys <command>` on the store `location` resolves to
/// (`keys migrate` names its own stores; `prefix` is `--redis-prefix`).
pub(crate) fn run(
    args: &KeysArgs,
    location: impl FnOnce() -> Result<Location, ConfigError>,
    prefix: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let open = || -> anyhow::Result<Backend> { Ok(Backend::open(&location()?)?) };
    match &args.command {
        KeysCommand::Migrate(a) => migrate::run(a, prefix),
        KeysCommand::Add(a) => add::run(&open()?, a),
        KeysCommand::List(a) => list::run(&open()?, a),
        KeysCommand::Reactivate(a) => reactivate::run(&open()?, a),
        KeysCommand::Remove(a) => remove::run(&open()?, a),
        KeysCommand::Check(a) => check::run(&open()?, a),
    }
}

/// Whether to colour output: on a terminal, unless `NO_COLOR` is set.
fn use_color(tty: bool) -> bool {
    tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
