//! The token usage OpenRouter reports, wherever it reports it: the
//! top-level `usage` of a whole JSON answer, or the last `usage` of an SSE
//! stream. The one place that finds it, for the request log.

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// Longest SSE line scanned for usage; longer lines are skipped.
const MAX_LINE: usize = 1024 * 1024;

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

    /// `prompt_tokens` and `completion_tokens`, when both are counts.
    pub(crate) fn tokens(&self) -> Option<(u64, u64)> {
        #[derive(serde::Deserialize)]
        struct Tokens {
            prompt_tokens: Option<Value>,
            completion_tokens: Option<Value>,
        }
        let (p, c) = match self {
            Usage::Value(u) => (u.get("prompt_tokens")?, u.get("completion_tokens")?),
            Usage::Raw(raw) => {
                let t: Tokens = serde_json::from_str(raw.get()).ok()?;
                return Some((t.prompt_tokens?.as_u64()?, t.completion_tokens?.as_u64()?));
            }
        };
        Some((p.as_u64()?, c.as_u64()?))
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
}

/// Judge a whole body declared as JSON (`application/json` or `+json`; None
/// for any other content type): whether it is one JSON document, and its
/// top-level `usage`. One pass over the body, which copies nothing but the
/// text of `usage`.
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
        Ok(usage) => JsonBody {
            cut: false,
            usage: usage.map(serde_json::value::RawValue::to_owned),
        },
        Err(_) => JsonBody {
            cut: true,
            usage: None,
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
/// (dropped when it is null or appears twice).
struct UsageProbe {
    wanted: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for UsageProbe {
    type Value = Option<&'de serde_json::value::RawValue>;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for UsageProbe {
    type Value = Option<&'de serde_json::value::RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON document")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut usage = None;
        let mut seen = 0;
        while let Some(is_usage) = map.next_key_seed(IsUsage)? {
            if is_usage && self.wanted {
                seen += 1;
                usage = Some(map.next_value::<&serde_json::value::RawValue>()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(usage.filter(|u| seen == 1 && u.get() != "null"))
    }
}

/// Whether an object key is `usage`, without copying it.
struct IsUsage;

impl<'de> serde::de::DeserializeSeed<'de> for IsUsage {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<bool, D::Error> {
        de.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for IsUsage {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E>(self, key: &str) -> Result<bool, E> {
        Ok(key == "usage")
    }
}

/// Reads an SSE stream line by line as it passes, for the last `usage` and,
/// when asked, the streamed text. Holds at most one partial line.
#[derive(Debug, Default)]
pub(crate) struct SseScan {
    line: Vec<u8>,
    overflow: bool,
    usage: Option<Value>,
    text: Option<String>,
}

impl SseScan {
    /// A scanner; `text`: also collect the streamed text.
    pub(crate) fn new(text: bool) -> Self {
        Self {
            text: text.then(String::new),
            ..Self::default()
        }
    }

    /// The last usage seen.
    pub(crate) fn take_usage(&mut self) -> Option<Usage> {
        self.usage.take().map(Usage::Value)
    }

    /// The text collected (when asked for).
    pub(crate) fn take_text(&mut self) -> Option<String> {
        self.text.take()
    }

    /// Scan the next bytes of the stream.
    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        for piece in chunk.split_inclusive(|b| *b == b'\n') {
            let complete = piece.ends_with(b"\n");
            if !complete {
                if self.overflow || self.line.len() + piece.len() > MAX_LINE {
                    self.overflow = true;
                    self.line.clear();
                } else {
                    self.line.extend_from_slice(piece);
                }
                continue;
            }
            if self.overflow || self.line.len() + piece.len() > MAX_LINE {
                self.overflow = false;
                self.line.clear();
                continue;
            }
            if self.line.is_empty() {
                self.line_done(piece);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(piece);
                self.line_done(&line);
                line.clear();
                self.line = line;
            }
        }
    }

    fn line_done(&mut self, line: &[u8]) {
        let line = line.trim_ascii_end();
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.trim_ascii_start();
        if data == b"[DONE]" || !(self.text.is_some() || mentions_usage(data)) {
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(u.clone());
        }
        if let (Some(text), Some(choices)) = (
            self.text.as_mut(),
            v.get("choices").and_then(Value::as_array),
        ) {
            for c in choices {
                let piece = c
                    .pointer("/delta/content")
                    .or_else(|| c.get("text"))
                    .and_then(Value::as_str);
                if let Some(piece) = piece {
                    text.push_str(piece);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    fn sse_scan_finds_the_last_usage_across_chunk_boundaries() {
        let mut scan = SseScan::new(true);
        let stream = concat!(
            ": OPENROUTER PROCESSING\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\r\n\r\n",
            "data: [DONE]\n\n"
        )
        .as_bytes();
        for chunk in stream.chunks(7) {
            scan.feed(chunk);
        }
        assert_eq!(
            scan.usage,
            Some(json!({"prompt_tokens": 3, "completion_tokens": 2}))
        );
        assert_eq!(scan.text.as_deref(), Some("Hello"));
        assert!(scan.line.is_empty());
    }

    #[test]
    fn sse_scan_skips_overlong_lines() {
        let mut scan = SseScan::default();
        let mut long = b"data: {\"usage\":{\"x\":1},\"pad\":\"".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_LINE + 10));
        long.extend_from_slice(b"\"}\n\n");
        for chunk in long.chunks(64 * 1024) {
            scan.feed(chunk);
        }
        assert!(scan.usage.is_none());
        scan.feed(b"data: {\"usage\":{\"total_tokens\":5}}\n\n");
        assert_eq!(scan.usage, Some(json!({"total_tokens": 5})));
    }
}
