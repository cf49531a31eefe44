//! Turning raw arguments and the environment into checked settings.

use std::path::PathBuf;

/// Why settings could not be worked out.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No --store, no ORPROXY_STORE and no data directory to default to.
    #[error(
        "cannot find a data directory for the key store: pass --store PATH or set ORPROXY_STORE"
    )]
    NoDataDir,
}

/// The store path: --store / ORPROXY_STORE, else `$XDG_DATA_HOME/orproxy/keys.json`.
pub fn store_path(flag: Option<PathBuf>) -> Result<PathBuf, ConfigError> {
    if let Some(path) = flag {
        return Ok(path);
    }
    dirs::data_dir()
        .map(|d| d.join("orproxy").join("keys.json"))
        .ok_or(ConfigError::NoDataDir)
}
