//! The counts in a `usage` object, whichever API skin reported it: chat
//! completions (`prompt_tokens`, `completion_tokens`, `*_details`), the
//! Responses API (`input_tokens`, `output_tokens`, `*_details`) and
//! Anthropic Messages (`input_tokens`, `output_tokens`,
//! `cache_read_input_tokens`, `cache_creation_input_tokens`), each with
//! OpenRouter's `cost`. Read leniently: a missing or unreadable field is
//! zero (or no cost), a number may come as a string, and a count is never
//! negative. Nothing is allocated.

use super::usage::Usage;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// What one answer used, in OpenAI's terms: `prompt` counts every input
/// token (cached ones included), `cached` the part of it read from a
/// cache, `reasoning` the part of `completion` spent thinking.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct TokenCounts {
    /// Input tokens, cached ones included.
    pub(crate) prompt: u64,
    /// Output tokens, reasoning included.
    pub(crate) completion: u64,
    /// Input tokens read from a prompt cache.
    pub(crate) cached: u64,
    /// Output tokens spent on reasoning.
    pub(crate) reasoning: u64,
    /// What OpenRouter charged (credits, i.e. US dollars), when it said.
    pub(crate) cost: Option<f64>,
}

impl Usage {
    /// The counts this usage reports; None when it is not a JSON object.
    pub(crate) fn counts(&self) -> Option<TokenCounts> {
        let wire = match self {
            Usage::Raw(raw) => {
                let mut de = serde_json::Deserializer::from_str(raw.get());
                Wire::deserialize(&mut de).ok()?
            }
            Usage::Value(value) => Wire::deserialize(value).ok()?,
        };
        wire.counts()
    }
}

/// The fields of every skin's usage object that orproxy reads.
#[derive(Debug, Default)]
struct Wire {
    object: bool,
    prompt_tokens: Num,
    completion_tokens: Num,
    input_tokens: Num,
    output_tokens: Num,
    cache_read_input_tokens: Num,
    cache_creation_input_tokens: Num,
    cost: Num,
    prompt_details: Details,
    completion_details: Details,
    input_details: Details,
    output_details: Details,
}

impl Wire {
    fn counts(&self) -> Option<TokenCounts> {
        if !self.object {
            return None;
        }
        let cached = self
            .prompt_details
            .cached
            .or(self.input_details.cached)
            .or(self.cache_read_input_tokens)
            .count();
        // Anthropic's `input_tokens` leaves out what was read from or written
        // to the cache; OpenAI's `prompt_tokens` and `input_tokens` include it.
        let prompt = match self.prompt_tokens.0 {
            Some(_) => self.prompt_tokens.count(),
            None => self
                .input_tokens
                .count()
                .saturating_add(self.cache_read_input_tokens.count())
                .saturating_add(self.cache_creation_input_tokens.count()),
        };
        Some(TokenCounts {
            prompt,
            completion: self.completion_tokens.or(self.output_tokens).count(),
            cached,
            reasoning: self
                .completion_details
                .reasoning
                .or(self.output_details.reasoning)
                .count(),
            cost: self.cost.0.filter(|c| c.is_finite() && *c >= 0.0),
        })
    }
}

/// A number, or a string holding one; anything else is none.
#[derive(Debug, Default, Clone, Copy)]
struct Num(Option<f64>);

impl Num {
    fn or(self, other: Num) -> Num {
        Num(self.0.or(other.0))
    }

    /// As a count of tokens: whole and not negative, else 0.
    fn count(self) -> u64 {
        match self.0 {
            // Exact for every count below 2^53; saturates above.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Some(n) if n.is_finite() && n >= 0.0 && n.fract() == 0.0 => n as u64,
            _ => 0,
        }
    }
}

/// `*_tokens_details`: `cached_tokens` and `reasoning_tokens`.
#[derive(Debug, Default, Clone, Copy)]
struct Details {
    cached: Num,
    reasoning: Num,
}

/// Skip whatever value comes next.
fn skip<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    map.next_value::<IgnoredAny>().map(|_| ())
}

struct NumVisitor;

impl<'de> Visitor<'de> for NumVisitor {
    type Value = Num;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    #[allow(clippy::cast_precision_loss)]
    fn visit_u64<E>(self, v: u64) -> Result<Num, E> {
        Ok(Num(Some(v as f64)))
    }

    #[allow(clippy::cast_precision_loss)]
    fn visit_i64<E>(self, v: i64) -> Result<Num, E> {
        Ok(Num(Some(v as f64)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Num, E> {
        Ok(Num(Some(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Num, E> {
        Ok(Num(v.trim().parse::<f64>().ok()))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Num, E> {
        Ok(Num(None))
    }

    fn visit_unit<E>(self) -> Result<Num, E> {
        Ok(Num(None))
    }

    fn visit_none<E>(self) -> Result<Num, E> {
        Ok(Num(None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Num, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Num(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Num, A::Error> {
        while map.next_key::<IgnoredAny>()?.is_some() {
            skip(&mut map)?;
        }
        Ok(Num(None))
    }
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(NumVisitor)
    }
}

/// The object keys orproxy reads, recognised without copying them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    PromptTokens,
    CompletionTokens,
    InputTokens,
    OutputTokens,
    CacheRead,
    CacheCreation,
    Cost,
    PromptDetails,
    CompletionDetails,
    InputDetails,
    OutputDetails,
    CachedTokens,
    ReasoningTokens,
    Other,
}

impl Field {
    fn of(name: &str) -> Field {
        match name {
            "prompt_tokens" => Field::PromptTokens,
            "completion_tokens" => Field::CompletionTokens,
            "input_tokens" => Field::InputTokens,
            "output_tokens" => Field::OutputTokens,
            "cache_read_input_tokens" => Field::CacheRead,
            "cache_creation_input_tokens" => Field::CacheCreation,
            "cost" => Field::Cost,
            "prompt_tokens_details" => Field::PromptDetails,
            "completion_tokens_details" => Field::CompletionDetails,
            "input_tokens_details" => Field::InputDetails,
            "output_tokens_details" => Field::OutputDetails,
            "cached_tokens" => Field::CachedTokens,
            "reasoning_tokens" => Field::ReasoningTokens,
            _ => Field::Other,
        }
    }
}

struct FieldVisitor;

impl Visitor<'_> for FieldVisitor {
    type Value = Field;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E>(self, v: &str) -> Result<Field, E> {
        Ok(Field::of(v))
    }
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_identifier(FieldVisitor)
    }
}

struct DetailsVisitor;

impl<'de> Visitor<'de> for DetailsVisitor {
    type Value = Details;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Details, A::Error> {
        let mut details = Details::default();
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::CachedTokens => details.cached = map.next_value()?,
                Field::ReasoningTokens => details.reasoning = map.next_value()?,
                _ => skip(&mut map)?,
            }
        }
        Ok(details)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Details, A::Error> {
        NumVisitor.visit_seq(seq).map(|_| Details::default())
    }

    fn visit_str<E>(self, _: &str) -> Result<Details, E> {
        Ok(Details::default())
    }

    fn visit_f64<E>(self, _: f64) -> Result<Details, E> {
        Ok(Details::default())
    }

    fn visit_u64<E>(self, _: u64) -> Result<Details, E> {
        Ok(Details::default())
    }

    fn visit_i64<E>(self, _: i64) -> Result<Details, E> {
        Ok(Details::default())
    }

    fn visit_bool<E>(self, _: bool) -> Result<Details, E> {
        Ok(Details::default())
    }

    fn visit_unit<E>(self) -> Result<Details, E> {
        Ok(Details::default())
    }
}

impl<'de> Deserialize<'de> for Details {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(DetailsVisitor)
    }
}

struct WireVisitor;

impl<'de> Visitor<'de> for WireVisitor {
    type Value = Wire;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a usage object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Wire, A::Error> {
        let mut w = Wire {
            object: true,
            ..Wire::default()
        };
        // A field given twice counts as its last value, as in JavaScript.
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::PromptTokens => w.prompt_tokens = map.next_value()?,
                Field::CompletionTokens => w.completion_tokens = map.next_value()?,
                Field::InputTokens => w.input_tokens = map.next_value()?,
                Field::OutputTokens => w.output_tokens = map.next_value()?,
                Field::CacheRead => w.cache_read_input_tokens = map.next_value()?,
                Field::CacheCreation => w.cache_creation_input_tokens = map.next_value()?,
                Field::Cost => w.cost = map.next_value()?,
                Field::PromptDetails => w.prompt_details = map.next_value()?,
                Field::CompletionDetails => w.completion_details = map.next_value()?,
                Field::InputDetails => w.input_details = map.next_value()?,
                Field::OutputDetails => w.output_details = map.next_value()?,
                Field::CachedTokens | Field::ReasoningTokens | Field::Other => skip(&mut map)?,
            }
        }
        Ok(w)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Wire, A::Error> {
        NumVisitor.visit_seq(seq).map(|_| Wire::default())
    }

    fn visit_str<E>(self, _: &str) -> Result<Wire, E> {
        Ok(Wire::default())
    }

    fn visit_f64<E>(self, _: f64) -> Result<Wire, E> {
        Ok(Wire::default())
    }

    fn visit_u64<E>(self, _: u64) -> Result<Wire, E> {
        Ok(Wire::default())
    }

    fn visit_i64<E>(self, _: i64) -> Result<Wire, E> {
        Ok(Wire::default())
    }

    fn visit_bool<E>(self, _: bool) -> Result<Wire, E> {
        Ok(Wire::default())
    }

    fn visit_unit<E>(self) -> Result<Wire, E> {
        Ok(Wire::default())
    }
}

impl<'de> Deserialize<'de> for Wire {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(WireVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn of_value(v: Value) -> Option<TokenCounts> {
        Usage::Value(v).counts()
    }

    fn of_raw(text: &str) -> Option<TokenCounts> {
        let raw = serde_json::value::RawValue::from_string(text.to_owned()).unwrap();
        Usage::Raw(raw).counts()
    }

    fn counts(prompt: u64, completion: u64, cached: u64, reasoning: u64) -> TokenCounts {
        TokenCounts {
            prompt,
            completion,
            cached,
            reasoning,
            cost: None,
        }
    }

    #[test]
    fn chat_completions_usage_as_openrouter_sends_it() {
        // The last chunk of a streamed chat, and a whole answer's usage.
        let text = r#"{"prompt_tokens":194,"completion_tokens":2,"total_tokens":196,"cost":0.000195,"is_byok":false,"prompt_tokens_details":{"cached_tokens":128,"audio_tokens":0},"cost_details":{"upstream_inference_cost":null},"completion_tokens_details":{"reasoning_tokens":1,"image_tokens":0}}"#;
        let want = TokenCounts {
            cost: Some(0.000_195),
            ..counts(194, 2, 128, 1)
        };
        assert_eq!(of_raw(text), Some(want));
        assert_eq!(of_value(serde_json::from_str(text).unwrap()), Some(want));
    }

    #[test]
    fn responses_usage_as_openrouter_sends_it() {
        // `response.completed`'s `response.usage`.
        let usage = json!({
            "input_tokens": 12,
            "input_tokens_details": {"cached_tokens": 4},
            "output_tokens": 30,
            "output_tokens_details": {"reasoning_tokens": 20},
            "total_tokens": 42,
            "cost": 0.00042,
            "is_byok": false
        });
        assert_eq!(
            of_value(usage),
            Some(TokenCounts {
                cost: Some(0.000_42),
                ..counts(12, 30, 4, 20)
            })
        );
    }

    #[test]
    fn messages_usage_counts_cache_reads_and_writes_as_prompt_tokens() {
        // `message_start.message.usage` merged with `message_delta.usage`.
        let usage = json!({
            "input_tokens": 12,
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 1000,
            "output_tokens": 7,
            "cost": 0.00042
        });
        assert_eq!(
            of_value(usage),
            Some(TokenCounts {
                cost: Some(0.000_42),
                ..counts(1112, 7, 1000, 0)
            })
        );
        // `message_start`'s usage alone: nothing written yet.
        let start = json!({"input_tokens": 12, "output_tokens": 1,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0});
        assert_eq!(of_value(start), Some(counts(12, 1, 0, 0)));
    }

    #[test]
    fn missing_fields_are_zero_and_strings_are_numbers() {
        assert_eq!(of_value(json!({})), Some(counts(0, 0, 0, 0)));
        assert_eq!(
            of_value(json!({"prompt_tokens": "12", "completion_tokens": " 3 ", "cost": "0.5"})),
            Some(TokenCounts {
                cost: Some(0.5),
                ..counts(12, 3, 0, 0)
            })
        );
        assert_eq!(
            of_value(json!({"prompt_tokens": 12.0, "completion_tokens": null,
                "prompt_tokens_details": null, "completion_tokens_details": [1],
                "input_tokens_details": "x", "cost": null})),
            Some(counts(12, 0, 0, 0))
        );
    }

    #[test]
    fn nonsense_counts_as_nothing() {
        assert_eq!(
            of_value(json!({"prompt_tokens": -5, "completion_tokens": 2.5,
                "cost": -1, "prompt_tokens_details": {"cached_tokens": {"a": 1}}})),
            Some(counts(0, 0, 0, 0))
        );
        assert_eq!(of_value(json!({"cost": "NaN"})), Some(counts(0, 0, 0, 0)));
        assert_eq!(of_value(json!([1, 2])), None);
        assert_eq!(of_value(json!("usage")), None);
        assert_eq!(of_value(json!(12)), None);
        assert_eq!(of_raw("null"), None);
    }

    #[test]
    fn chat_fields_win_over_the_other_skins() {
        let usage = json!({"prompt_tokens": 10, "input_tokens": 99, "cache_read_input_tokens": 5,
            "completion_tokens": 3, "output_tokens": 77,
            "prompt_tokens_details": {"cached_tokens": 2}});
        assert_eq!(of_value(usage), Some(counts(10, 3, 2, 0)));
    }

    #[test]
    fn a_field_given_twice_counts_as_its_last_value() {
        assert_eq!(
            of_raw(r#"{"prompt_tokens":1,"prompt_tokens":4}"#),
            Some(counts(4, 0, 0, 0))
        );
    }
}
