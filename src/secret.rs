//! API keys as secrets: masking, stable IDs, and validation.
//!
//! [`ApiKey`] never prints the full key through `Debug` or `Display`; the only
//! way to the raw text is [`ApiKey::expose`], used where the key must go on the
//! wire or into the store file.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::fmt;

/// An OpenRouter API key. `Debug` and `Display` show only the masked form.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApiKey(String);

/// Why a key was refused before anything was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Nothing was given.
    #[error("the key is empty")]
    Empty,
    /// The key contains a space, tab or newline.
    #[error("the key contains whitespace")]
    Whitespace,
    /// The key contains a control character.
    #[error("the key contains a control character")]
    Control,
}

impl ApiKey {
    /// Check a key as typed or pasted by the user. Surrounding whitespace is
    /// not trimmed here: callers decide what a line is.
    pub fn parse(raw: &str) -> Result<Self, KeyError> {
        if raw.is_empty() {
            return Err(KeyError::Empty);
        }
        if raw.chars().any(char::is_whitespace) {
            return Err(KeyError::Whitespace);
        }
        if raw.chars().any(char::is_control) {
            return Err(KeyError::Control);
        }
        Ok(Self(raw.to_owned()))
    }

    /// Whether the key has the `sk-or-` prefix OpenRouter keys carry.
    pub(crate) fn looks_like_openrouter(&self) -> bool {
        self.0.starts_with("sk-or-")
    }

    /// The full key, for the `Authorization` header and the store file only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// The masked form shown everywhere: `sk-or-v1-…a1b2`.
    pub(crate) fn masked(&self) -> String {
        mask(&self.0)
    }

    /// The full SHA-256 of the key in hex; IDs are prefixes of it.
    pub(crate) fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        let mut out = String::with_capacity(64);
        for byte in digest {
            use fmt::Write as _;
            let _ = write!(out, "{byte:02x}");
        }
        out
    }

    /// The short stable ID: the first 8 hex digits of the key's SHA-256.
    pub fn short_id(&self) -> String {
        self.id_of_len(8)
    }

    /// A longer prefix of the fingerprint, used when two keys' short IDs collide.
    pub(crate) fn id_of_len(&self, len: usize) -> String {
        let fp = self.fingerprint();
        fp[..len.min(fp.len())].to_owned()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({})", self.masked())
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// A bearer token a client or the admin sends to orproxy (a client token or
/// the admin token). `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct BearerToken(String);

impl BearerToken {
    /// Check a configured token: not empty, no whitespace or control
    /// characters (it could not be sent in a header).
    pub(crate) fn parse(raw: &str) -> Result<Self, KeyError> {
        ApiKey::parse(raw).map(|k| Self(k.0))
    }

    /// The token itself, for comparisons only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(…)")
    }
}

/// Mask any key-like string: keep a known prefix and the last four characters.
pub(crate) fn mask(raw: &str) -> String {
    let prefix = ["sk-or-v1-", "sk-or-", "sk-"]
        .into_iter()
        .find(|p| raw.starts_with(p))
        .unwrap_or("");
    let rest: Vec<char> = raw[prefix.len()..].chars().collect();
    // Show a tail only when enough stays hidden to make it meaningless.
    if rest.len() >= 16 {
        let tail: String = rest[rest.len() - 4..].iter().collect();
        format!("{prefix}…{tail}")
    } else {
        format!("{prefix}…")
    }
}

/// Replace every `sk-or-…` token inside free text with its masked form, so
/// that upstream messages or user input echoed into logs never carry a key.
pub fn redact(text: &str) -> String {
    redacted(text).into_owned()
}

/// Whether `bytes` contain the `sk-or-` prefix, i.e. whether [`redact`]
/// could change them.
pub(crate) fn may_hold_key(bytes: &[u8]) -> bool {
    // The searcher is built once, not for every line.
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new("sk-or-"));
    FINDER.find(bytes).is_some()
}

/// [`redact`], borrowing `text` when there is nothing to mask (the usual
/// case: no copy on the logging path).
pub(crate) fn redacted(text: &str) -> Cow<'_, str> {
    const NEEDLE: &str = "sk-or-";
    if !may_hold_key(text.as_bytes()) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(NEEDLE) {
        out.push_str(&rest[..pos]);
        let token_len = rest[pos..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(rest.len() - pos);
        out.push_str(&mask(&rest[pos..pos + token_len]));
        rest = &rest[pos + token_len..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-or-v1-0123456789abcdef0123456789abcdef0123456789abcdef0123456789a1b2";

    #[test]
    fn masked_keeps_prefix_and_last_four() {
        let key = ApiKey::parse(KEY).unwrap();
        assert_eq!(key.masked(), "sk-or-v1-…a1b2");
        assert_eq!(format!("{key}"), "sk-or-v1-…a1b2");
        assert_eq!(format!("{key:?}"), "ApiKey(sk-or-v1-…a1b2)");
    }

    #[test]
    fn short_keys_show_no_tail() {
        assert_eq!(mask("sk-or-v1-abc"), "sk-or-v1-…");
        assert_eq!(mask("hunter2"), "…");
    }

    #[test]
    fn id_is_sha256_prefix_and_stable() {
        let key = ApiKey::parse("abc").unwrap();
        // sha256("abc") = ba7816bf...
        assert_eq!(key.short_id(), "ba7816bf");
        assert_eq!(key.id_of_len(12), "ba7816bf8f01");
    }

    #[test]
    fn parse_refuses_empty_whitespace_control() {
        assert_eq!(ApiKey::parse(""), Err(KeyError::Empty));
        assert_eq!(ApiKey::parse("sk-or-v1 x"), Err(KeyError::Whitespace));
        assert_eq!(ApiKey::parse("sk-or-\tx"), Err(KeyError::Whitespace));
        assert_eq!(ApiKey::parse("sk-or-\u{7}x"), Err(KeyError::Control));
        assert!(ApiKey::parse("sk-or-v1-x").unwrap().looks_like_openrouter());
        assert!(!ApiKey::parse("abc").unwrap().looks_like_openrouter());
    }

    #[test]
    fn redact_masks_every_key_in_text() {
        let text = format!("bad key {KEY}, and again:{KEY}.");
        let out = redact(&text);
        assert!(!out.contains(KEY));
        assert_eq!(out, "bad key sk-or-v1-…a1b2, and again:sk-or-v1-…a1b2.");
        assert_eq!(redact("nothing here"), "nothing here");
        assert!(matches!(
            redacted("nothing here"),
            Cow::Borrowed("nothing here")
        ));
        assert_eq!(redacted(&text), out);
    }
}
