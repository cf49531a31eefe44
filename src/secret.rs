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

    /// Why the key cannot be an OpenRouter key, if it cannot: OpenRouter
    /// keys are `sk-or-v1-` and 64 hexadecimal digits (a later `sk-or-v2-`
    /// may differ, so only `v1` keys are checked past the prefix).
    pub(crate) fn not_openrouter(&self) -> Option<String> {
        const V1: &str = "sk-or-v1-";
        if !self.0.starts_with("sk-or-") {
            return Some("does not start with \"sk-or-\"".to_owned());
        }
        let rest = self.0.strip_prefix(V1)?;
        let n = rest.chars().count();
        if n != 64 {
            return Some(format!(
                "has {n} characters after \"{V1}\" where OpenRouter keys have 64"
            ));
        }
        if !rest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Some(format!(
                "has characters other than 0-9 and a-f after \"{V1}\""
            ));
        }
        None
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
    masked_tokens(text, 0)
}

/// `text` with every `sk-or-` token long enough to be a key (20
/// characters or more after its prefix) masked, and shorter ones (a key's
/// abbreviated form, as OpenRouter's default key labels have it: `sk-or-v1-0e6...f2a`)
/// left as they are.
pub(crate) fn redact_keys(text: &str) -> String {
    masked_tokens(text, 20).into_owned()
}

/// `text` with every `sk-or-` token of at least `min` characters after its
/// prefix masked.
fn masked_tokens(text: &str, min: usize) -> Cow<'_, str> {
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
        let token = &rest[pos..pos + token_len];
        let body = token
            .strip_prefix("sk-or-v1-")
            .unwrap_or(&token[NEEDLE.len()..]);
        if body.len() >= min {
            out.push_str(&mask(token));
        } else {
            out.push_str(token);
        }
        rest = &rest[pos + token_len..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

impl ApiKey {
    /// `bytes` with every occurrence of this key replaced by its masked
    /// form, or None when it holds none. An occurrence may also be
    /// JSON-escaped, any of its characters written `\u00XX`.
    pub(crate) fn masked_in(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        self.replaced_in(bytes, &self.masked())
    }

    /// [`ApiKey::masked_in`] with an ASCII-only masked form (`...` for the
    /// ellipsis), for header values.
    pub(crate) fn masked_ascii_in(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        self.replaced_in(bytes, &self.masked().replace('…', "..."))
    }

    fn replaced_in(&self, bytes: &[u8], masked: &str) -> Option<Vec<u8>> {
        let key = self.0.as_bytes();
        // Most header values are shorter than a key: nothing to search.
        if key.is_empty() || bytes.len() < key.len() {
            return None;
        }
        static ESCAPE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\\u"));
        let escapes = ESCAPE.find(bytes).is_some();
        if !escapes && memchr::memmem::find(bytes, key).is_none() {
            return None;
        }
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        let mut found = false;
        while i < bytes.len() {
            let matched = if escapes {
                escaped_match(&bytes[i..], key)
            } else {
                bytes[i..].starts_with(key).then_some(key.len())
            };
            match matched {
                Some(len) => {
                    out.extend_from_slice(masked.as_bytes());
                    i += len;
                    found = true;
                }
                None => {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
        }
        found.then_some(out)
    }
}

/// The length of `key` at the start of `text`, each of its characters
/// either as it is or as a JSON `\u00XX` escape.
fn escaped_match(text: &[u8], key: &[u8]) -> Option<usize> {
    let mut pos = 0;
    for &want in key {
        let rest = text.get(pos..)?;
        if rest.first() == Some(&want) {
            pos += 1;
            continue;
        }
        let escape = rest.get(..6)?;
        let hex = std::str::from_utf8(escape.get(2..)?).ok()?;
        if escape.starts_with(b"\\u") && u32::from_str_radix(hex, 16).ok() == Some(u32::from(want))
        {
            pos += 6;
        } else {
            return None;
        }
    }
    Some(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_masked_wherever_it_appears_also_json_escaped() {
        let key = ApiKey::parse(&format!("sk-or-v1-{}", "ab12".repeat(16))).unwrap();
        let raw = key.expose().to_owned();
        let masked = key.masked();
        let body = format!(r#"{{"error":{{"message":"bad key {raw} (again: {raw})"}}}}"#);
        let out = String::from_utf8(key.masked_in(body.as_bytes()).unwrap()).unwrap();
        assert_eq!(out.matches(masked.as_str()).count(), 2, "{out}");
        assert!(!out.contains(&raw[20..]), "{out}");
        // Escaped as JSON allows: some characters as \u00XX.
        let escaped = raw.replace('-', "\\u002d").replacen('a', "\\u0061", 3);
        let body = format!(r#"{{"echo":"{escaped}","n":"\u00e9"}}"#);
        let out = String::from_utf8(key.masked_in(body.as_bytes()).unwrap()).unwrap();
        assert_eq!(out, format!(r#"{{"echo":"{masked}","n":"\u00e9"}}"#));
        assert_eq!(key.masked_in(b"{\"nothing\": \"sk-or-v1-other\"}"), None);
        assert_eq!(key.masked_in(b""), None);
    }

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
    }

    #[test]
    fn an_abbreviated_key_is_left_as_it_is_and_a_whole_one_masked() {
        assert_eq!(redact_keys("sk-or-v1-0e6...f2a"), "sk-or-v1-0e6...f2a");
        let whole = format!("mine: {KEY}");
        assert_eq!(redact_keys(&whole), "mine: sk-or-v1-…a1b2");
        assert_eq!(redact_keys("laptop"), "laptop");
    }

    #[test]
    fn keys_that_cannot_be_openrouter_keys_are_told_apart() {
        let problem = |k: &str| ApiKey::parse(k).unwrap().not_openrouter();
        assert_eq!(problem(&format!("sk-or-v1-{}", "0a".repeat(32))), None);
        assert_eq!(problem("sk-or-v2-anything"), None, "a later format");
        assert!(problem("abc").unwrap().contains("does not start"));
        assert!(
            problem("sk-or-v1-abc")
                .unwrap()
                .contains("has 3 characters")
        );
        let upper = format!("sk-or-v1-{}", "0A".repeat(32));
        assert!(problem(&upper).unwrap().contains("other than 0-9 and a-f"));
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
