//! Command-line definitions (clap only: no logic here).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// The default OpenRouter API base.
pub(crate) const DEFAULT_UPSTREAM: &str = "https://openrouter.ai/api/v1";

/// Keep OpenAI-compatible tools working on OpenRouter by rotating a pool of API keys through rate limits.
#[derive(Debug, Parser)]
#[command(
    name = "orproxy",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// The key store shared by `serve` and the `keys` commands: a JSON file, or a
    /// redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy
    /// instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e.
    /// ~/.local/share/orproxy/keys.json]
    #[arg(long, global = true, env = "ORPROXY_STORE", value_name = "PATH|URL")]
    pub(crate) store: Option<String>,

    /// The prefix of orproxy's Redis keys, so that several key pools can share one Redis
    /// database (only with a redis:// store) [default: orproxy]
    #[arg(
        long,
        global = true,
        env = "ORPROXY_REDIS_PREFIX",
        value_name = "PREFIX"
    )]
    pub(crate) redis_prefix: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the OpenAI-compatible proxy (http://127.0.0.1:3000/v1 by default)
    Serve(Box<ServeArgs>),
    /// Add, list, reactivate and remove OpenRouter API keys
    Keys(KeysArgs),
    /// Show the requests, errors, tokens and cost of each day, from the store
    ///
    /// Every request that reached OpenRouter through `orproxy serve` is counted on its UTC day,
    /// with the tokens and the cost OpenRouter reported in its answer; the store keeps 100 days.
    /// A running server adds its counts to the store every few seconds.
    Usage(UsageArgs),
    /// Write shell completions and man pages
    Generate(GenerateArgs),
}

/// `orproxy serve`
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on
    #[arg(long, env = "ORPROXY_HOST", default_value = "127.0.0.1")]
    pub(crate) host: String,

    /// Port to listen on (also from PORT, as the original Node server read it) [default: 3000]
    #[arg(long, env = "ORPROXY_PORT")]
    pub(crate) port: Option<u16>,

    /// OpenRouter API base that requests are forwarded to
    #[arg(long, env = "ORPROXY_UPSTREAM", value_name = "URL", default_value = DEFAULT_UPSTREAM, value_parser = crate::values::upstream_arg)]
    pub(crate) upstream: String,

    /// Upstream attempts per request, each on the best available key
    #[arg(long, env = "ORPROXY_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub(crate) max_attempts: u32,

    /// Consecutive failures after which a key is disabled
    #[arg(long, env = "ORPROXY_MAX_FAILURES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_failures: u32,

    /// Seconds a request may wait for a cooling key (or a model's back-off) before orproxy answers 429
    #[arg(
        long,
        env = "ORPROXY_MAX_WAIT",
        value_name = "SECONDS",
        default_value_t = 30
    )]
    pub(crate) max_wait: u64,

    /// Worker threads [default: the number of CPU cores]
    #[arg(long, env = "ORPROXY_WORKERS", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub(crate) workers: Option<u32>,

    /// Largest request body accepted (B, KiB, MiB, GiB, KB, MB, GB)
    #[arg(
        long,
        env = "ORPROXY_MAX_BODY",
        value_name = "SIZE",
        default_value = "50MiB",
        value_parser = crate::values::size_arg
    )]
    pub(crate) max_body: usize,

    /// Seconds to establish a connection (and TLS) to the upstream
    #[arg(
        long,
        env = "ORPROXY_CONNECT_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 10
    )]
    pub(crate) connect_timeout: u64,

    /// Seconds to wait for the upstream's response headers (LLMs can take minutes)
    #[arg(
        long,
        env = "ORPROXY_HEADERS_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 600
    )]
    pub(crate) headers_timeout: u64,

    /// Seconds of silence allowed between two chunks of an upstream body; a healthy stream has no total limit
    #[arg(
        long,
        env = "ORPROXY_IDLE_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 120
    )]
    pub(crate) idle_timeout: u64,

    /// Seconds an idle client connection is kept open between two requests
    #[arg(
        long,
        env = "ORPROXY_KEEP_ALIVE",
        value_name = "SECONDS",
        default_value_t = 75
    )]
    pub(crate) keep_alive: u64,

    /// Seconds a stream may be held before its first content event (while orproxy can still retry
    /// it on another key) before SSE comments keep the client's connection alive, and between two
    /// of them; 0: never send them
    #[arg(
        long,
        env = "ORPROXY_SSE_KEEPALIVE",
        value_name = "SECONDS",
        default_value_t = 5
    )]
    pub(crate) sse_keepalive: u64,

    /// Seconds a client has to send a whole request body, however steadily it sends (besides 30 s
    /// of silence at most)
    #[arg(
        long,
        env = "ORPROXY_BODY_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 60
    )]
    pub(crate) body_timeout: u64,

    /// Seconds in-flight requests get to finish after SIGINT/SIGTERM
    #[arg(
        long,
        env = "ORPROXY_SHUTDOWN_GRACE",
        value_name = "SECONDS",
        default_value_t = 10
    )]
    pub(crate) shutdown_grace: u64,

    /// Seconds between background GET /key re-checks of a key disabled by failures (0: never)
    #[arg(
        long,
        env = "ORPROXY_REPROBE_INTERVAL",
        value_name = "SECONDS",
        default_value_t = 300
    )]
    pub(crate) reprobe_interval: u64,

    /// HTTP-Referer sent to OpenRouter for app attribution, unless the client sent its own
    #[arg(
        long,
        env = "HTTP_REFERER",
        value_name = "URL",
        default_value = "http://localhost/orproxy"
    )]
    pub(crate) referer: String,

    /// X-Title sent to OpenRouter for app attribution, unless the client sent its own
    #[arg(
        long,
        env = "SITE_NAME",
        value_name = "NAME",
        default_value = "orproxy"
    )]
    pub(crate) title: String,

    /// Token that turns the admin API (/admin/keys) on; send it as `Authorization: Bearer TOKEN`.
    /// Prefer the environment variable: command lines are visible to other local users
    #[arg(
        long,
        env = "ORPROXY_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub(crate) admin_token: Option<String>,

    /// Only clients sending this bearer token may use /v1 and /metrics (repeatable; the
    /// environment variable is comma-separated). Without any, every token is accepted
    #[arg(
        long = "client-token",
        env = "ORPROXY_CLIENT_TOKENS",
        value_name = "TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(crate) client_tokens: Vec<String>,

    /// Listen on a non-loopback address without client tokens: an open proxy that anyone who
    /// reaches it can use to spend your keys' quota
    #[arg(long, env = "ORPROXY_ALLOW_OPEN", value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) allow_open: bool,

    /// Directory of the daily log files requests-, errors- and keys-YYYY-MM-DD.log
    /// [default: $XDG_STATE_HOME/orproxy/logs, i.e. ~/.local/state/orproxy/logs]
    #[arg(long, env = "ORPROXY_LOG_DIR", value_name = "DIR")]
    pub(crate) log_dir: Option<PathBuf>,

    /// Days the log files are kept; 0 keeps them forever (also from LOG_RETENTION_DAYS, as the
    /// original Node server read it) [default: 14]
    #[arg(long, env = "ORPROXY_LOG_RETENTION_DAYS", value_name = "DAYS")]
    pub(crate) log_retention_days: Option<u32>,

    /// Also write message contents (request bodies, non-streamed response bodies, streamed
    /// text) to the request log. Off by default: they are your users' private data
    #[arg(long, env = "ORPROXY_LOG_BODIES", value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) log_bodies: bool,
}

/// `orproxy keys`
#[derive(Debug, Args)]
pub(crate) struct KeysArgs {
    /// The key operation.
    #[command(subcommand)]
    pub(crate) command: KeysCommand,
}

/// The `keys` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Add keys: from --key, a hidden prompt on a terminal, or one per line on stdin
    ///
    /// Adding a key that is already stored reactivates it. Each key is checked with
    /// OpenRouter's GET /key unless --no-verify; a key OpenRouter rejects (401) is not added.
    /// Prefer the prompt or stdin to --key: command lines end up in shell history.
    Add(AddArgs),
    /// Show every key with its status, cooldown and failures
    List(ListArgs),
    /// Put disabled or cooling keys back into rotation
    ///
    /// It says when a key's account has spent its :free requests for the day (they reset at
    /// 00:00 UTC); --forget-quota forgets orproxy's count of them.
    Reactivate(ReactivateArgs),
    /// Delete keys from the store
    Remove(RemoveArgs),
    /// Ask OpenRouter about keys (GET /key, which costs no quota) and record what it says
    Check(CheckArgs),
    /// Copy every key, with its state and the accounts' counts, from one store to another
    ///
    /// For example from the JSON file to Redis: `orproxy keys migrate --from
    /// ~/.local/share/orproxy/keys.json --to redis://127.0.0.1:6379/0`. Keys already in the
    /// target are left as they are; the source is not changed.
    Migrate(MigrateArgs),
}

/// `orproxy keys migrate`
#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// The store to copy from: a JSON file or a redis:// URL
    #[arg(long, value_name = "PATH|URL")]
    pub(crate) from: String,

    /// The store to copy to: a JSON file or a redis:// URL
    #[arg(long, value_name = "PATH|URL")]
    pub(crate) to: String,
}

/// `orproxy keys check`
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Key IDs (or unique prefixes of them) [default: every key]
    #[arg(value_name = "ID")]
    pub(crate) ids: Vec<String>,

    /// Print a JSON array instead of a table
    #[arg(long)]
    pub(crate) json: bool,

    /// OpenRouter API base
    #[arg(long, env = "ORPROXY_UPSTREAM", value_name = "URL", default_value = DEFAULT_UPSTREAM, value_parser = crate::values::upstream_arg)]
    pub(crate) upstream: String,
}

/// `orproxy keys add`
#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    /// A key to add (repeatable). Without it, keys are read from a hidden prompt or stdin
    #[arg(long = "key", value_name = "KEY")]
    pub(crate) keys: Vec<String>,

    /// A label for the added keys
    #[arg(long, value_name = "TEXT")]
    pub(crate) label: Option<String>,

    /// Do not check the keys with OpenRouter before adding them
    #[arg(long)]
    pub(crate) no_verify: bool,

    /// OpenRouter API base used to verify keys
    #[arg(long, env = "ORPROXY_UPSTREAM", value_name = "URL", default_value = DEFAULT_UPSTREAM, value_parser = crate::values::upstream_arg)]
    pub(crate) upstream: String,
}

/// `orproxy keys list`
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Print a JSON array instead of a table
    #[arg(long)]
    pub(crate) json: bool,

    /// Redraw the table every second (like `watch`) with cooldown countdowns; Ctrl-C quits
    #[arg(long, short = 'w', conflicts_with = "json")]
    pub(crate) watch: bool,
}

/// `orproxy keys reactivate`
#[derive(Debug, Args)]
pub(crate) struct ReactivateArgs {
    /// Key IDs (or unique prefixes of them)
    #[arg(
        value_name = "ID",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub(crate) ids: Vec<String>,

    /// Reactivate every key
    #[arg(long)]
    pub(crate) all: bool,

    /// Also forget orproxy's count of today's :free requests of these keys' accounts (when you
    /// know better, e.g. after buying credits)
    #[arg(long)]
    pub(crate) forget_quota: bool,
}

/// `orproxy keys remove`
#[derive(Debug, Args)]
pub(crate) struct RemoveArgs {
    /// Key IDs (or unique prefixes of them)
    #[arg(value_name = "ID", required = true)]
    pub(crate) ids: Vec<String>,
}

/// `orproxy usage`
#[derive(Debug, Args)]
pub(crate) struct UsageArgs {
    /// One row per day and key, account or model
    #[arg(long, value_enum, value_name = "GROUP")]
    pub(crate) by: Option<UsageGroup>,

    /// The first day shown: a UTC date (YYYY-MM-DD), or the last N days, today included (7d)
    /// [default: every day kept]
    #[arg(long, value_name = "DATE|Nd")]
    pub(crate) since: Option<crate::model::Since>,

    /// Print a JSON array of rows instead of a table
    #[arg(long)]
    pub(crate) json: bool,
}

/// What `orproxy usage --by` groups on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum UsageGroup {
    /// Each key, by its ID
    Key,
    /// Each OpenRouter account (key:ID for a key whose account is unknown)
    Account,
    /// Each model, as the requests named it
    Model,
}

/// `orproxy generate`
#[derive(Debug, Args)]
pub(crate) struct GenerateArgs {
    /// Directory that receives completions/ and man/
    #[arg(long, value_name = "DIR")]
    pub(crate) out_dir: PathBuf,
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
