//! Turning raw arguments and the environment into checked settings.

use crate::logging::LogFiles;
use crate::secret::BearerToken;
use crate::store::location::Location;
use std::path::PathBuf;

/// Why settings could not be worked out.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// No --store, no ORPROXY_STORE and no data directory to default to.
    #[error(
        "cannot find a data directory for the key store: pass --store PATH or set ORPROXY_STORE"
    )]
    NoDataDir,
    /// --store or --redis-prefix cannot be used.
    #[error(transparent)]
    Location(#[from] crate::store::location::LocationError),
}

/// The store: --store / ORPROXY_STORE (a path or a redis:// URL), else
/// `$XDG_DATA_HOME/orproxy/keys.json`; `prefix` is --redis-prefix.
pub(crate) fn store_location(
    flag: Option<&str>,
    prefix: Option<&str>,
) -> Result<Location, ConfigError> {
    if let Some(raw) = flag.filter(|raw| !raw.trim().is_empty()) {
        return Ok(Location::parse(raw.trim(), prefix)?);
    }
    let path = dirs::data_dir()
        .map(|d| d.join("orproxy").join("keys.json"))
        .ok_or(ConfigError::NoDataDir)?;
    if prefix.is_some() {
        return Err(
            crate::store::location::LocationError::PrefixWithFile(format!(
                "{} (the default store; pass --store redis://...)",
                path.display()
            ))
            .into(),
        );
    }
    Ok(Location::File(path))
}

/// The default port, as the original Node server used.
pub(crate) const DEFAULT_PORT: u16 = 3000;

/// Why `serve` settings are not usable.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeConfigError {
    /// `PORT` is set but not a port number.
    #[error("invalid PORT {0:?}: expected a number from 0 to 65535")]
    Port(String),
    /// See [`ConfigError`].
    #[error(transparent)]
    Store(#[from] ConfigError),
    /// A client or admin token cannot be used.
    #[error("invalid {what}: {reason}")]
    Token {
        /// Which flag.
        what: &'static str,
        /// What is wrong with it.
        reason: crate::secret::KeyError,
    },
    /// A non-loopback address without client tokens and without --allow-open.
    #[error(
        "refusing to listen on {host}, which is not a loopback address, without client tokens: \
         anyone who can reach it could use your OpenRouter keys and spend their quota. \
         Require tokens with --client-token TOKEN (repeatable, or ORPROXY_CLIENT_TOKENS=tok1,tok2), \
         listen on 127.0.0.1, or pass --allow-open if an open proxy is really what you want"
    )]
    OpenBind {
        /// The --host given.
        host: String,
    },
    /// `LOG_RETENTION_DAYS` is set but not a number of days.
    #[error(
        "invalid LOG_RETENTION_DAYS {0:?}: expected a whole number of days (0 keeps logs forever)"
    )]
    Retention(String),
    /// No --log-dir and no state directory to default to.
    #[error(
        "cannot find a state directory for the logs: pass --log-dir DIR or set ORPROXY_LOG_DIR"
    )]
    NoStateDir,
}

/// Checked settings for `orproxy serve`.
#[derive(Debug, Clone)]
pub(crate) struct ServeConfig {
    /// Where the key store lives.
    pub(crate) store: Location,
    /// Listen address.
    pub(crate) host: String,
    /// Listen port (0 picks a free one).
    pub(crate) port: u16,
    /// OpenRouter API base, without a trailing slash.
    pub(crate) upstream: String,
    /// Upstream attempts per request.
    pub(crate) max_attempts: u32,
    /// Consecutive failures before a key is disabled.
    pub(crate) max_failures: u32,
    /// Longest a request waits for a key or a model back-off.
    pub(crate) max_wait: std::time::Duration,
    /// Worker threads (None: actix's default, one per core).
    pub(crate) workers: Option<usize>,
    /// Largest request body, in bytes.
    pub(crate) max_body: usize,
    /// Upstream connect (and TLS) timeout.
    pub(crate) connect_timeout: std::time::Duration,
    /// Upstream response-headers timeout.
    pub(crate) headers_timeout: std::time::Duration,
    /// Longest silence between upstream body chunks.
    pub(crate) idle_timeout: std::time::Duration,
    /// How long an idle client connection is kept open.
    pub(crate) keep_alive: std::time::Duration,
    /// How long a stream is held before SSE comments keep its client's
    /// connection alive, and between two of them (None: never).
    pub(crate) sse_keepalive: Option<std::time::Duration>,
    /// Longest a client may take to send a request body.
    pub(crate) body_timeout: std::time::Duration,
    /// Grace period for in-flight requests at shutdown.
    pub(crate) shutdown_grace: std::time::Duration,
    /// Interval of background re-checks of keys disabled by failures
    /// (None: never).
    pub(crate) reprobe_interval: Option<std::time::Duration>,
    /// Default HTTP-Referer.
    pub(crate) referer: String,
    /// Default X-Title.
    pub(crate) title: String,
    /// The admin API's token (None: the admin API is off).
    pub(crate) admin_token: Option<BearerToken>,
    /// Tokens clients must send (empty: any token is accepted).
    pub(crate) client_tokens: Vec<BearerToken>,
    /// The daily log files.
    pub(crate) log_files: LogFiles,
    /// Log message contents too.
    pub(crate) log_bodies: bool,
}

/// Legacy environment variables the original Node server read, looked up by
/// the caller so that checking stays a pure function.
#[derive(Debug, Clone, Default)]
pub(crate) struct LegacyEnv {
    /// `PORT`.
    pub(crate) port: Option<String>,
    /// `LOG_RETENTION_DAYS`.
    pub(crate) log_retention_days: Option<String>,
}

impl LegacyEnv {
    /// Read them from the process environment.
    pub(crate) fn from_process() -> Self {
        Self {
            port: std::env::var("PORT").ok(),
            log_retention_days: std::env::var("LOG_RETENTION_DAYS").ok(),
        }
    }
}

/// Days log files are kept unless configured otherwise.
pub(crate) const DEFAULT_LOG_RETENTION_DAYS: u32 = 14;

/// The log directory: --log-dir / ORPROXY_LOG_DIR, else
/// `$XDG_STATE_HOME/orproxy/logs` (the local data directory where there is no
/// state directory, as on macOS).
pub(crate) fn log_dir(flag: Option<PathBuf>) -> Result<PathBuf, ServeConfigError> {
    if let Some(path) = flag {
        return Ok(path);
    }
    dirs::state_dir()
        .or_else(dirs::data_local_dir)
        .map(|d| d.join("orproxy").join("logs"))
        .ok_or(ServeConfigError::NoStateDir)
}

/// Whether `host` only ever means this machine: a loopback IP, `localhost`,
/// or a name that resolves to loopback addresses only.
pub(crate) fn is_loopback(host: &str) -> bool {
    use std::net::{IpAddr, ToSocketAddrs};
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return ip.is_loopback();
    }
    if bare.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match (bare, 0).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

impl ServeConfig {
    /// Check raw `serve` arguments. `port_env` is the legacy `PORT` variable.
    pub(crate) fn from_args(
        store: Location,
        args: &crate::cli::ServeArgs,
        legacy: LegacyEnv,
    ) -> Result<Self, ServeConfigError> {
        use std::time::Duration;
        let port = match (args.port, legacy.port) {
            (Some(p), _) => p,
            (None, Some(raw)) if !raw.trim().is_empty() => raw
                .trim()
                .parse()
                .map_err(|_| ServeConfigError::Port(raw.clone()))?,
            _ => DEFAULT_PORT,
        };
        let upstream = args.upstream.trim_end_matches('/').to_owned();
        let token = |what, raw: &str| {
            BearerToken::parse(raw.trim())
                .map_err(|reason| ServeConfigError::Token { what, reason })
        };
        let admin_token = match args.admin_token.as_deref() {
            Some(raw) if !raw.trim().is_empty() => Some(token("--admin-token", raw)?),
            _ => None,
        };
        let client_tokens = args
            .client_tokens
            .iter()
            .filter(|raw| !raw.trim().is_empty())
            .map(|raw| token("--client-token", raw))
            .collect::<Result<Vec<_>, _>>()?;
        if client_tokens.is_empty() && !args.allow_open && !is_loopback(&args.host) {
            return Err(ServeConfigError::OpenBind {
                host: args.host.clone(),
            });
        }
        let retention_days = match (args.log_retention_days, legacy.log_retention_days) {
            (Some(days), _) => days,
            (None, Some(raw)) if !raw.trim().is_empty() => raw
                .trim()
                .parse()
                .map_err(|_| ServeConfigError::Retention(raw.clone()))?,
            _ => DEFAULT_LOG_RETENTION_DAYS,
        };
        Ok(Self {
            store,
            host: args.host.clone(),
            port,
            upstream,
            max_attempts: args.max_attempts,
            max_failures: args.max_failures,
            max_wait: Duration::from_secs(args.max_wait),
            workers: args.workers.map(|w| w as usize),
            max_body: args.max_body,
            connect_timeout: Duration::from_secs(args.connect_timeout.max(1)),
            headers_timeout: Duration::from_secs(args.headers_timeout.max(1)),
            idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
            keep_alive: Duration::from_secs(args.keep_alive.max(1)),
            sse_keepalive: (args.sse_keepalive > 0)
                .then(|| Duration::from_secs(args.sse_keepalive)),
            body_timeout: Duration::from_secs(args.body_timeout.max(1)),
            shutdown_grace: Duration::from_secs(args.shutdown_grace),
            reprobe_interval: (args.reprobe_interval > 0)
                .then(|| Duration::from_secs(args.reprobe_interval)),
            referer: args.referer.clone(),
            title: args.title.clone(),
            admin_token,
            client_tokens,
            log_files: LogFiles {
                dir: log_dir(args.log_dir.clone())?,
                retention_days,
            },
            log_bodies: args.log_bodies,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "localhost",
            "LOCALHOST",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["0.0.0.0", "::", "192.168.1.10", "10.0.0.1"] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
