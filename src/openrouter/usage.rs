//! The token usage OpenRouter reports in a whole JSON answer (its
//! top-level `usage`), for the request log; a stream's is read by its
//! dialect ([`super::dialect::Dialect::fold_usage`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// The token usage the upstream reported, as it goes into the log line.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum Usage {
    /// The upstream's own compact JSON text, copied as it is (no tree to
    /// build, or to serialize again).
    Raw(Box<RawValue>),
    /// Parsed (from an SSE event, or text with whitespace in it: the log
    /// line must stay on one line).
    Value(Value),
}

impl Usage {
    /// The usage as a body had it (kept as its text when that is compact).
    pub(crate) fn from_raw(raw: Box<RawValue>) -> Option<Self> {
        let text = raw.get().as_bytes();
        if text
            .iter()
            .any(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            return serde_json::from_str(raw.get()).ok().map(Usage::Value);
        }
        Some(Usage::Raw(raw))
    }

    /// The top-level `usage` of a whole JSON body, if it has one.
    pub(crate) fn of_json(body: &[u8]) -> Option<Self> {
        if !mentions_usage(body) {
            return None;
        }
        serde_json::from_slice::<UsageOnly>(body)
            .ok()
            .and_then(|u| u.usage)
            .filter(|u| !u.is_null())
            .map(Usage::Value)
    }

    /// Input and output tokens, when both are counts: chat's
    /// `prompt_tokens` and `completion_tokens`, or the Responses API's and
    /// Anthropic's `input_tokens` and `output_tokens`.
    pub(crate) fn tokens(&self) -> Option<(u64, u64)> {
        #[derive(serde::Deserialize)]
        struct Tokens {
            #[serde(alias = "input_tokens")]
            prompt_tokens: Option<Value>,
            #[serde(alias = "output_tokens")]
            completion_tokens: Option<Value>,
        }
        let t: Tokens = match self {
            Usage::Value(u) => Tokens::deserialize(u).ok()?,
            Usage::Raw(raw) => serde_json::from_str(raw.get()).ok()?,
        };
        Some((t.prompt_tokens?.as_u64()?, t.completion_tokens?.as_u64()?))
    }
}

#[derive(serde::Deserialize)]
struct UsageOnly {
    #[serde(default)]
    usage: Option<Value>,
}

/// What a whole JSON body held, as far as orproxy cares.
#[derive(Debug)]
pub(crate) struct JsonBody {
    /// Not one JSON document: cut short by the upstream.
    pub(crate) cut: bool,
    /// The top-level `usage` (when not null) as the body has it, for the
    /// request log.
    pub(crate) usage: Option<Box<serde_json::value::RawValue>>,
    /// The top-level `id` when it is a string (the generation ID).
    pub(crate) id: Option<String>,
}

/// Judge a whole body declared as JSON (`application/json` or `+json`; None
/// for any other content type): whether it is one JSON document, and its
/// top-level `usage` and `id`. One pass over the body, which copies nothing
/// but the text of `usage` and the `id`.
pub(crate) fn judge_json(content_type: Option<&str>, body: &[u8]) -> Option<JsonBody> {
    let is_json = content_type.is_some_and(|ct| {
        let essence = ct.split(';').next().unwrap_or_default().trim();
        essence.eq_ignore_ascii_case("application/json")
            || essence.to_ascii_lowercase().ends_with("+json")
    });
    if !is_json {
        return None;
    }
    let probe = UsageProbe {
        // No usage can be there without the word.
        wanted: mentions_usage(body),
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = serde::de::DeserializeSeed::deserialize(probe, &mut de).and_then(|usage| {
        de.end()?;
        Ok(usage)
    });
    Some(match parsed {
        Ok(Found { usage, id }) => JsonBody {
            cut: false,
            usage: usage.map(serde_json::value::RawValue::to_owned),
            id,
        },
        Err(_) => JsonBody {
            cut: true,
            usage: None,
            id: None,
        },
    })
}

/// Whether `"usage"` occurs in `bytes` (no usage can be reported without it).
pub(crate) fn mentions_usage(bytes: &[u8]) -> bool {
    // The searcher is built once, not for every body.
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage\""));
    FINDER.find(bytes).is_some()
}

/// Reads any JSON document, keeping only a top-level object's `usage`
/// (dropped when it is null or appears twice) and string `id`.
struct UsageProbe {
    wanted: bool,
}

/// What [`UsageProbe`] keeps.
#[derive(Default)]
struct Found<'de> {
    usage: Option<&'de serde_json::value::RawValue>,
    id: Option<String>,
}

impl<'de> serde::de::DeserializeSeed<'de> for UsageProbe {
    type Value = Found<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for UsageProbe {
    type Value = Found<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON document")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Found::default())
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Found::default())
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Found::default())
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Found::default())
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Found::default())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Found::default())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Found::default())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut usage = None;
        let mut id = None;
        let mut seen = 0;
        while let Some(key) = map.next_key_seed(IsUsage)? {
            match key {
                Key::Usage if self.wanted => {
                    seen += 1;
                    usage = Some(map.next_value::<&serde_json::value::RawValue>()?);
                }
                Key::Id => {
                    // A plain string is copied straight from the body; one
                    // with escapes is decoded.
                    let raw = map.next_value::<&'de serde_json::value::RawValue>()?;
                    let text = raw.get();
                    id = match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
                        Some(plain) if !plain.contains('\\') => Some(plain.to_owned()),
                        Some(_) => serde_json::from_str::<String>(text).ok(),
                        None => None,
                    };
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(Found {
            usage: usage.filter(|u| seen == 1 && u.get() != "null"),
            id,
        })
    }
}

/// An object key orproxy keeps the value of.
enum Key {
    Usage,
    Id,
    Other,
}

/// Which [`Key`] an object key is, without copying it.
struct IsUsage;

impl<'de> serde::de::DeserializeSeed<'de> for IsUsage {
    type Value = Key;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Key, D::Error> {
        de.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for IsUsage {
    type Value = Key;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Key, E> {
        Ok(match key {
            "usage" => Key::Usage,
            "id" => Key::Id,
            _ => Key::Other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a whole body declared as JSON is not one JSON document: a
    /// body cut short by the upstream.
    fn json_cut_short(content_type: Option<&str>, body: &[u8]) -> bool {
        judge_json(content_type, body).is_some_and(|judged| judged.cut)
    }

    #[test]
    fn json_bodies_must_parse_and_others_are_not_judged() {
        let json = Some("application/json; charset=utf-8");
        assert!(json_cut_short(json, b"{\"id\":\"gen-1\",\"choi"));
        assert!(json_cut_short(json, b""));
        assert!(!json_cut_short(json, b" {\"id\": 1}\n"));
        assert!(json_cut_short(Some("application/problem+json"), b"{"));
        assert!(!json_cut_short(Some("text/plain"), b"{"));
        assert!(!json_cut_short(None, b"{"));
        // Any JSON document is whole, and trailing bytes are not.
        for whole in [
            &b"[1, {\"a\": []}]"[..],
            b"\"text\"",
            b"null",
            b"12.5",
            b"true",
        ] {
            assert!(!json_cut_short(json, whole));
        }
        assert!(json_cut_short(json, b"{\"a\": 1} {"));
        assert!(json_cut_short(json, b"{\"usage\": {\"prompt_tokens\": 1}"));
    }

    #[test]
    fn the_judge_keeps_the_top_level_usage_only() {
        let json = Some("application/json");
        let usage =
            |body: &[u8]| judge_json(json, body).and_then(|j| j.usage.map(|u| u.get().to_owned()));
        assert_eq!(
            usage(b"{\"id\":\"g\",\"usage\":{\"prompt_tokens\":3,\"cost\":0.0000420},\"x\":[1]}")
                .as_deref(),
            Some("{\"prompt_tokens\":3,\"cost\":0.0000420}")
        );
        assert_eq!(
            usage(b"{\"usage\" : {\"a\": 1}\n}").as_deref(),
            Some("{\"a\": 1}")
        );
        assert_eq!(usage(b"{\"usage\":null}"), None);
        assert_eq!(usage(b"{\"a\":{\"usage\":{\"b\":1}}}"), None);
        assert_eq!(usage(b"{\"usage\":1,\"usage\":2}"), None);
        assert_eq!(usage(b"[{\"usage\":1}]"), None);
        assert_eq!(usage(b"{\"us\\u0061ge\":{\"b\":1},\"usage\":2}"), None);
        assert!(judge_json(Some("text/plain"), b"{\"usage\":1}").is_none());
    }

    #[test]
    fn tokens_are_read_in_every_dialects_words() {
        let chat = Usage::Value(serde_json::json!({"prompt_tokens": 3, "completion_tokens": 2}));
        assert_eq!(chat.tokens(), Some((3, 2)));
        let anthropic =
            Usage::Value(serde_json::json!({"input_tokens": 7, "output_tokens": 9, "cost": 0.1}));
        assert_eq!(anthropic.tokens(), Some((7, 9)));
        let raw = serde_json::value::RawValue::from_string(
            "{\"input_tokens\":1,\"output_tokens\":4}".into(),
        )
        .unwrap();
        assert_eq!(Usage::Raw(raw).tokens(), Some((1, 4)));
        assert_eq!(
            Usage::Value(serde_json::json!({"total_tokens": 5})).tokens(),
            None
        );
    }

    #[test]
    fn the_judge_keeps_the_top_level_string_id() {
        let id = |body: &[u8]| judge_json(Some("application/json"), body).and_then(|j| j.id);
        assert_eq!(
            id(b"{\"id\":\"gen-1\",\"choices\":[]}").as_deref(),
            Some("gen-1")
        );
        assert_eq!(id(b"{\"id\":7}"), None);
        assert_eq!(id(b"{\"id\":\"gen-\\u0031\"}").as_deref(), Some("gen-1"));
        assert_eq!(id(b"{\"a\":{\"id\":\"inner\"}}"), None);
    }
}
