//! `orproxy serve`: check settings, prepare the store, run the server.

use crate::cli::ServeArgs;
use crate::config::{LegacyEnv, ServeConfig};
use crate::secret::ApiKey;
use crate::store::location::Location;
use crate::store::{Backend, edit};
use anyhow::Context;
use chrono::Utc;

/// Run the proxy until SIGINT/SIGTERM.
pub(crate) fn run(location: Location, args: &ServeArgs) -> anyhow::Result<()> {
    let config = ServeConfig::from_args(location, args, LegacyEnv::from_process())?;
    crate::logging::init_server(&config.log_files)?;
    let store = Backend::open(&config.store)?;
    // Said at once rather than at the first change the server cannot save.
    if let Backend::File(file) = &store {
        file.check_writable().with_context(|| {
            format!(
                "orproxy serve keeps its keys' cooldowns and counts in the key store {}, \
                 which cannot be written (choose another with --store)",
                store.describe()
            )
        })?;
    }
    let env_keys = std::env::var("OPENROUTER_API_KEYS").unwrap_or_default();
    let file = if env_keys.trim().is_empty() {
        store.load()?
    } else {
        let keys = parse_env_keys(&env_keys);
        let now = Utc::now();
        let (file, added) = store.update(|file| {
            let added: Vec<String> = keys
                .iter()
                .filter_map(|k| edit::ensure_key(file, k, now))
                .collect();
            (file.clone(), added)
        })?;
        for id in added {
            log::info!(target: "orproxy::keys", "key {id} added from OPENROUTER_API_KEYS");
        }
        file
    };
    crate::server::run(config, store, file).context("orproxy serve stopped")?;
    Ok(())
}

/// Keys from `OPENROUTER_API_KEYS` (comma-separated); invalid entries are
/// reported by position and skipped.
fn parse_env_keys(raw: &str) -> Vec<ApiKey> {
    raw.split(',')
        .map(str::trim)
        .enumerate()
        .filter(|(_, k)| !k.is_empty())
        .filter_map(|(i, k)| match ApiKey::parse(k) {
            Ok(key) => Some(key),
            Err(e) => {
                log::warn!("OPENROUTER_API_KEYS entry {} skipped: {e}", i + 1);
                None
            }
        })
        .collect()
}
