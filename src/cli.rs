//! Command-line definitions (clap only: no logic here).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// The default OpenRouter API base.
pub const DEFAULT_UPSTREAM: &str = "https://openrouter.ai/api/v1";

/// Keep OpenAI-compatible tools working on OpenRouter by rotating a pool of API keys through rate limits.
#[derive(Debug, Parser)]
#[command(
    name = "orproxy",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// The JSON key store shared by `serve` and the `keys` commands
    /// [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]
    #[arg(long, global = true, env = "ORPROXY_STORE", value_name = "PATH")]
    pub store: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add, list, reactivate and remove OpenRouter API keys
    Keys(KeysArgs),
    /// Write shell completions and man pages
    Generate(GenerateArgs),
}

/// `orproxy keys`
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// The key operation.
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// The `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add keys: from --key, a hidden prompt on a terminal, or one per line on stdin
    ///
    /// Adding a key that is already stored reactivates it. Each key is checked with
    /// OpenRouter's GET /key unless --no-verify; a key OpenRouter rejects (401) is not added.
    /// Prefer the prompt or stdin to --key: command lines end up in shell history.
    Add(AddArgs),
    /// Show every key with its status, cooldown and failures
    List(ListArgs),
    /// Put disabled or cooling keys back into rotation
    Reactivate(ReactivateArgs),
    /// Delete keys from the store
    Remove(RemoveArgs),
}

/// `orproxy keys add`
#[derive(Debug, Args)]
pub struct AddArgs {
    /// A key to add (repeatable). Without it, keys are read from a hidden prompt or stdin
    #[arg(long = "key", value_name = "KEY")]
    pub keys: Vec<String>,

    /// A label for the added keys
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,

    /// Do not check the keys with OpenRouter before adding them
    #[arg(long)]
    pub no_verify: bool,

    /// OpenRouter API base used to verify keys
    #[arg(long, env = "ORPROXY_UPSTREAM", value_name = "URL", default_value = DEFAULT_UPSTREAM)]
    pub upstream: String,
}

/// `orproxy keys list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print a JSON array instead of a table
    #[arg(long)]
    pub json: bool,
}

/// `orproxy keys reactivate`
#[derive(Debug, Args)]
pub struct ReactivateArgs {
    /// Key IDs (or unique prefixes of them)
    #[arg(
        value_name = "ID",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub ids: Vec<String>,

    /// Reactivate every key
    #[arg(long)]
    pub all: bool,
}

/// `orproxy keys remove`
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Key IDs (or unique prefixes of them)
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<String>,
}

/// `orproxy generate`
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Directory that receives completions/ and man/
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
