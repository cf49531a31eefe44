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

/// The default port, as the original Node server used.
pub const DEFAULT_PORT: u16 = 3000;

/// Why `serve` settings are not usable.
#[derive(Debug, thiserror::Error)]
pub enum ServeConfigError {
    /// `--max-body` could not be read.
    #[error(
        "invalid --max-body {0:?}: use a number with an optional unit, e.g. 50MiB, 512KB, 1048576"
    )]
    MaxBody(String),
    /// `PORT` is set but not a port number.
    #[error("invalid PORT {0:?}: expected a number from 0 to 65535")]
    Port(String),
    /// The upstream URL is not http(s).
    #[error("invalid --upstream {0:?}: expected an http:// or https:// URL")]
    Upstream(String),
    /// See [`ConfigError`].
    #[error(transparent)]
    Store(#[from] ConfigError),
}

/// Checked settings for `orproxy serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The key store file.
    pub store: PathBuf,
    /// Listen address.
    pub host: String,
    /// Listen port (0 picks a free one).
    pub port: u16,
    /// OpenRouter API base, without a trailing slash.
    pub upstream: String,
    /// Upstream attempts per request.
    pub max_attempts: u32,
    /// Consecutive failures before a key is disabled.
    pub max_failures: u32,
    /// Longest a request waits for a key or a model back-off.
    pub max_wait: std::time::Duration,
    /// Worker threads (None: actix's default, one per core).
    pub workers: Option<usize>,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Upstream connect (and TLS) timeout.
    pub connect_timeout: std::time::Duration,
    /// Upstream response-headers timeout.
    pub headers_timeout: std::time::Duration,
    /// Longest silence between upstream body chunks.
    pub idle_timeout: std::time::Duration,
    /// Grace period for in-flight requests at shutdown.
    pub shutdown_grace: std::time::Duration,
    /// Interval of background re-checks of keys disabled by failures
    /// (None: never).
    pub reprobe_interval: Option<std::time::Duration>,
    /// Default HTTP-Referer.
    pub referer: String,
    /// Default X-Title.
    pub title: String,
}

impl ServeConfig {
    /// Check raw `serve` arguments. `port_env` is the legacy `PORT` variable.
    pub fn from_args(
        store: Option<PathBuf>,
        args: &crate::cli::ServeArgs,
        port_env: Option<String>,
    ) -> Result<Self, ServeConfigError> {
        use std::time::Duration;
        let port = match (args.port, port_env) {
            (Some(p), _) => p,
            (None, Some(raw)) if !raw.trim().is_empty() => raw
                .trim()
                .parse()
                .map_err(|_| ServeConfigError::Port(raw.clone()))?,
            _ => DEFAULT_PORT,
        };
        let upstream = args.upstream.trim_end_matches('/').to_owned();
        if !(upstream.starts_with("http://") || upstream.starts_with("https://")) {
            return Err(ServeConfigError::Upstream(args.upstream.clone()));
        }
        Ok(Self {
            store: store_path(store)?,
            host: args.host.clone(),
            port,
            upstream,
            max_attempts: args.max_attempts,
            max_failures: args.max_failures,
            max_wait: Duration::from_secs(args.max_wait),
            workers: args.workers.map(|w| w as usize),
            max_body: parse_size(&args.max_body)
                .ok_or_else(|| ServeConfigError::MaxBody(args.max_body.clone()))?,
            connect_timeout: Duration::from_secs(args.connect_timeout.max(1)),
            headers_timeout: Duration::from_secs(args.headers_timeout.max(1)),
            idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
            shutdown_grace: Duration::from_secs(args.shutdown_grace),
            reprobe_interval: (args.reprobe_interval > 0)
                .then(|| Duration::from_secs(args.reprobe_interval)),
            referer: args.referer.clone(),
            title: args.title.clone(),
        })
    }
}

/// Parse `50MiB`, `512KB`, `1.5GiB`, `1048576` into bytes.
pub fn parse_size(raw: &str) -> Option<usize> {
    let s = raw.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = num * mult;
    (bytes.is_finite() && bytes >= 1.0 && bytes <= usize::MAX as f64).then_some(bytes as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("50MiB"), Some(50 * 1024 * 1024));
        assert_eq!(parse_size("512KB"), Some(512_000));
        assert_eq!(parse_size("1048576"), Some(1_048_576));
        assert_eq!(parse_size(" 2 gib "), Some(2 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("1.5KiB"), Some(1536));
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("5 parsecs"), None);
    }
}
