//! orproxy: an OpenAI-compatible proxy that rotates OpenRouter API keys
//! through rate limits.

pub mod cli;
pub mod commands;
pub mod config;
pub mod human;
pub mod openrouter;
pub mod pool;
pub mod secret;
pub mod store;

use std::process::ExitCode;

/// Run a parsed command line.
pub fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        cli::Command::Keys(args) => {
            let store = store::Store::new(config::store_path(cli.store.clone())?);
            commands::keys::run(&store, args)
        }
        cli::Command::Generate(args) => {
            commands::generate::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
