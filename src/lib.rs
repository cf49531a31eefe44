//! orproxy: an OpenAI-compatible proxy that rotates OpenRouter API keys
//! through rate limits.

pub mod cli;
mod clock;
mod commands;
mod config;
mod escape;
mod human;
mod logging;
mod model;
mod openrouter;
mod output;
mod pool;
mod secret;
mod server;
mod store;
mod sync;

pub use output::{OutputError, StdoutClosed};
pub use secret::redact;

/// Text from outside made safe to print (see `escape::visible`), for the
/// binary's last error line.
pub fn visible(text: &str) -> String {
    escape::visible(text).into_owned()
}

/// What the benchmarks, the fuzz targets and the integration tests drive
/// directly: the pure parts (classifier, pool, store format, relay end
/// judgement). Not a stable API.
#[doc(hidden)]
pub mod internals {
    pub use crate::model::{
        AccountRecord, FreeModelDailyRequests, KeyInfo, KeyRecord, KeyState, StoreFile, UsageBook,
        UsageDay, UsageTotals,
    };
    pub use crate::openrouter::classify::{Answer, LimitPeriod, Verdict, classify, error_in_body};
    pub use crate::openrouter::dialect::Dialect;
    pub use crate::openrouter::stream::Watch;
    pub use crate::pool::{CapKind, Choice, Event, Pool, Settings};
    pub use crate::secret::ApiKey;
    pub use crate::server::relay::BodyError;
    pub use crate::store::{FileStore, StoreError, render};
}

use std::process::ExitCode;

/// Run a parsed command line.
pub fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    logging::install_panic_hook();
    // The store, for the commands that use the one --store names.
    let store = || config::store_location(cli.store.as_deref(), cli.redis_prefix.as_deref());
    match &cli.command {
        cli::Command::Keys(args) => commands::keys::run(args, store, cli.redis_prefix.as_deref()),
        cli::Command::Usage(args) => {
            let store = store::Backend::open(&store()?)?;
            commands::usage::run(&store, args)
        }
        cli::Command::Serve(args) => {
            commands::serve::run(store()?, args)?;
            Ok(ExitCode::SUCCESS)
        }
        cli::Command::Generate(args) => {
            commands::generate::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
