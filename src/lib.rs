//! orproxy: an OpenAI-compatible proxy that rotates OpenRouter API keys
//! through rate limits.

pub mod cli;
mod clock;
pub mod commands;
pub mod config;
pub mod human;
pub mod logging;
pub mod model;
pub mod openrouter;
pub mod output;
pub mod pool;
pub mod secret;
pub mod server;
pub mod store;
mod sync;

use std::process::ExitCode;

/// Run a parsed command line.
pub fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    logging::install_panic_hook();
    // The store, for the commands that use the one --store names.
    let store = || config::store_location(cli.store.as_deref(), cli.redis_prefix.as_deref());
    match &cli.command {
        cli::Command::Keys(args) => commands::keys::run(args, store, cli.redis_prefix.as_deref()),
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
