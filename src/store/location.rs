//! Where the key store lives: a JSON file (the default) or a Redis server
//! shared by several orproxy instances (`redis://` or `rediss://`).

use std::fmt;
use std::path::PathBuf;

/// The default prefix of orproxy's Redis keys.
pub(crate) const DEFAULT_PREFIX: &str = "orproxy";

/// A store location given with `--store`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// A JSON file.
    File(PathBuf),
    /// A Redis database.
    Redis(RedisUrl),
}

/// A Redis URL, with its password kept out of every rendering.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct RedisUrl {
    url: String,
    shown: String,
    password: Option<String>,
    prefix: String,
}

/// Why a `--store` value cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum LocationError {
    /// A `redis://` value that is not a usable URL.
    #[error("invalid --store {shown}: {reason}")]
    BadUrl {
        /// The value, password hidden.
        shown: String,
        /// What is wrong.
        reason: String,
    },
    /// `--redis-prefix` with a file store.
    #[error("--redis-prefix only applies to a redis:// or rediss:// --store, not to the file {0}")]
    PrefixWithFile(String),
    /// A prefix Redis keys cannot sensibly start with.
    #[error(
        "invalid --redis-prefix {0:?}: use letters, digits, '-', '_', '.' or ':' (1 to 64 of them)"
    )]
    BadPrefix(String),
}

impl Location {
    /// Read a `--store` value: a `redis://` or `rediss://` URL, else a path.
    /// `prefix` (`--redis-prefix`) only goes with a URL.
    pub(crate) fn parse(raw: &str, prefix: Option<&str>) -> Result<Self, LocationError> {
        let lower = raw.to_ascii_lowercase();
        if !(lower.starts_with("redis://") || lower.starts_with("rediss://")) {
            if prefix.is_some() {
                return Err(LocationError::PrefixWithFile(raw.to_owned()));
            }
            return Ok(Location::File(PathBuf::from(raw)));
        }
        let prefix = prefix.unwrap_or(DEFAULT_PREFIX);
        let prefix_ok = !prefix.is_empty()
            && prefix.len() <= 64
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
        if !prefix_ok {
            return Err(LocationError::BadPrefix(prefix.to_owned()));
        }
        let parsed = url::Url::parse(raw).map_err(|e| LocationError::BadUrl {
            shown: hide_password_in_text(raw),
            reason: e.to_string(),
        })?;
        let password = parsed.password().map(|p| {
            // The URL crate keeps it percent-encoded; messages may show either.
            percent_decode(p)
        });
        let shown = shown_url(&parsed);
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(LocationError::BadUrl {
                shown,
                reason: "no host".into(),
            });
        }
        let path = parsed.path().trim_start_matches('/');
        if !path.is_empty() && path.parse::<u32>().is_err() {
            return Err(LocationError::BadUrl {
                shown,
                reason: format!("the path must be a database number, not {path:?}"),
            });
        }
        redis::Client::open(raw).map_err(|e| LocationError::BadUrl {
            shown: shown.clone(),
            reason: scrub(&e.to_string(), password.as_deref()),
        })?;
        Ok(Location::Redis(RedisUrl {
            url: raw.to_owned(),
            shown,
            password,
            prefix: prefix.to_owned(),
        }))
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File(path) => f.debug_tuple("File").field(path).finish(),
            Location::Redis(url) => f.debug_tuple("Redis").field(url).finish(),
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (prefix {})", self.shown, self.prefix)
    }
}

impl RedisUrl {
    /// The full URL, password included: only for connecting.
    pub(crate) fn expose(&self) -> &str {
        &self.url
    }

    /// The URL with `***` for its password.
    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }

    /// The prefix of orproxy's keys.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `text` with the password (if any) replaced by `***`.
    pub(crate) fn scrub(&self, text: &str) -> String {
        scrub(text, self.password.as_deref())
    }
}

fn shown_url(url: &url::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

/// Best effort for a value that is not even a URL: hide what sits between
/// `:` and `@` in its authority.
fn hide_password_in_text(raw: &str) -> String {
    let Some(scheme_end) = raw.find("://") else {
        return raw.to_owned();
    };
    let rest = &raw[scheme_end + 3..];
    match (rest.rfind('@'), rest.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &raw[..scheme_end + 3],
            &rest[..colon],
            &rest[at..]
        ),
        _ => raw.to_owned(),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `text` with `password` replaced by `***`.
fn scrub(text: &str, password: Option<&str>) -> String {
    match password {
        Some(p) if !p.is_empty() => text.replace(p, "***"),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_paths_and_urls_become_redis() {
        assert_eq!(
            Location::parse("/tmp/keys.json", None).unwrap(),
            Location::File("/tmp/keys.json".into())
        );
        let Location::Redis(url) = Location::parse("redis://127.0.0.1:6379/0", None).unwrap()
        else {
            panic!("a redis URL");
        };
        assert_eq!(url.prefix(), "orproxy");
        assert_eq!(url.shown(), "redis://127.0.0.1:6379/0");
    }

    #[test]
    fn the_password_never_shows() {
        let loc =
            Location::parse("rediss://app:s3cr%40t@redis.example:6380/2", Some("team-a")).unwrap();
        assert!(!format!("{loc:?}").contains("s3cr"));
        let Location::Redis(url) = loc else {
            panic!("a redis URL");
        };
        assert_eq!(url.shown(), "rediss://app:***@redis.example:6380/2");
        assert_eq!(url.scrub("auth failed for s3cr@t"), "auth failed for ***");
        assert_eq!(url.prefix(), "team-a");
        let err = Location::parse("redis://u:hunter2@/x", None).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(matches!(
            Location::parse("redis://127.0.0.1:6379/notanumber", None),
            Err(LocationError::BadUrl { .. })
        ));
        assert_eq!(
            Location::parse("keys.json", Some("x")),
            Err(LocationError::PrefixWithFile("keys.json".into()))
        );
        assert!(matches!(
            Location::parse("redis://h/0", Some("has space")),
            Err(LocationError::BadPrefix(_))
        ));
    }
}
