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
mod values;

pub use output::{OutputError, StdoutClosed};
pub use secret::redact;

/// Text from outside made safe to print (see `escape::visible`), for the
/// binary's last error line.
pub fn visible(text: &str) -> String {
    escape::visible(text).into_owned()
}

/// An error and its causes on one line, `: `-separated, each said once: a
/// cause whose text its parent's message already holds (an OS error quoted
/// by the message that wraps it) is not repeated.
pub fn error_chain(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
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
    pub use crate::pool::{CapKind, Choice, Event, Holds, Pool, Settings};
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

#[cfg(test)]
mod tests {
    #[test]
    fn an_os_error_quoted_by_its_parent_is_said_once() {
        let os = std::io::Error::from_raw_os_error(98);
        let shown = os.to_string();
        #[derive(Debug, thiserror::Error)]
        #[error("cannot listen on 127.0.0.1:3000: {source}")]
        struct Bind {
            source: std::io::Error,
        }
        let err = anyhow::Error::new(Bind { source: os }).context("orproxy serve stopped");
        assert_eq!(
            super::error_chain(&err),
            format!("orproxy serve stopped: cannot listen on 127.0.0.1:3000: {shown}")
        );
        let plain = anyhow::anyhow!("one").context("two");
        assert_eq!(super::error_chain(&plain), "two: one");
    }
}
