//! Text from outside (clients, the upstream, the store) made safe to print:
//! no terminal escape sequences, no line breaks that could forge a log line,
//! no control characters or bidi overrides that reorder what a reader sees.
//!
//! [`visible`] escapes such characters visibly (`\x1b`, `\n`, `\u{202e}`);
//! [`json_visible`] does the same inside serialized JSON without changing
//! its value; [`clip`] caps a text's length. The logging formatter applies
//! [`visible`] to every line, so callers of `log::` need not; the commands'
//! tables and messages apply it to what they print.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal or a log line as it is: C0
/// controls (newlines and ESC among them), DEL, C1 controls (CSI, OSC, NEL
/// among them), the bidi embeddings, overrides, isolates and marks, and the
/// Unicode line and paragraph separators.
pub(crate) fn is_unsafe(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{61c}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}')
}

/// `text` with every [`is_unsafe`] character written visibly: `\n`, `\r`,
/// `\t`, `\x1b` (other C0 controls and DEL), `\u{9b}` (C1 controls, bidi
/// and separators). Borrowed when there is nothing to escape.
pub(crate) fn visible(text: &str) -> Cow<'_, str> {
    // Most text is printable ASCII: one pass over the bytes decides.
    if text.bytes().all(|b| (0x20..0x7f).contains(&b)) || !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) && u32::from(c) <= 0x7f => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Serialized JSON with every [`is_unsafe`] character that serde_json
/// leaves as it is (DEL, C1, bidi, separators) written as a `\uXXXX`
/// escape: the same JSON value, nothing raw for a terminal. serde_json
/// already escapes C0 controls inside strings; the newlines of pretty
/// printing are outside strings and stay.
pub(crate) fn json_visible(json: &str) -> Cow<'_, str> {
    if json.bytes().all(|b| b < 0x7f) {
        return Cow::Borrowed(json);
    }
    let raw = |c: char| is_unsafe(c) && u32::from(c) >= 0x7f;
    if !json.chars().any(raw) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if raw(c) {
            // Every such character is in the Basic Multilingual Plane.
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` cut to at most `max` characters, with `…` when it was longer.
pub(crate) fn clip(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        Some((cut, _)) => Cow::Owned(format!("{}…", &text[..cut])),
        None => Cow::Borrowed(text),
    }
}

/// [`visible`], then [`clip`] to `max` characters: a bounded, printable
/// field. (Escaping first: the cut never splits an escape's meaning away
/// from what it hides.)
pub(crate) fn field(text: &str, max: usize) -> String {
    clip(&visible(text), max).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_text_is_borrowed_unchanged() {
        for text in [
            "plain ASCII: /v1/chat?x=1",
            "",
            "naïve café 模型 👨‍👩‍👧",
            "tab\\t literal",
        ] {
            assert!(
                matches!(visible(text), Cow::Borrowed(t) if t == text),
                "{text}"
            );
            assert!(matches!(json_visible(text), Cow::Borrowed(_)), "{text}");
        }
    }

    #[test]
    fn control_characters_are_escaped_visibly() {
        assert_eq!(visible("a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(visible("\u{1b}[31mred\u{1b}[0m"), "\\x1b[31mred\\x1b[0m");
        assert_eq!(visible("\u{1b}]0;title\u{7}"), "\\x1b]0;title\\x07");
        assert_eq!(visible("nul\0 del\u{7f}"), "nul\\x00 del\\x7f");
        // C1: CSI, OSC, NEL.
        assert_eq!(visible("\u{9b}2J\u{9d}x\u{85}"), "\\u{9b}2J\\u{9d}x\\u{85}");
    }

    #[test]
    fn bidi_overrides_and_separators_are_escaped() {
        assert_eq!(visible("abc\u{202e}fed"), "abc\\u{202e}fed");
        for c in [
            '\u{61c}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{2066}', '\u{2069}',
        ] {
            assert!(!visible(&format!("x{c}y")).contains(c), "{c:?}");
        }
        assert_eq!(visible("a\u{2028}b\u{2029}c"), "a\\u{2028}b\\u{2029}c");
    }

    #[test]
    fn nothing_unsafe_survives_any_character() {
        // Every character up to U+2FFF, alone and between others.
        for n in 0..0x3000u32 {
            let Some(c) = char::from_u32(n) else { continue };
            let text = format!("a{c}b");
            let out = visible(&text);
            assert!(!out.chars().any(is_unsafe), "{n:#x}: {out:?}");
            assert_eq!(out.contains(c), !is_unsafe(c), "{n:#x}");
        }
    }

    #[test]
    fn json_keeps_its_value_and_loses_its_raw_characters() {
        let value = serde_json::json!({"m": "x\u{1b}[2J\n\u{9b}31m\u{202e}\u{7f}y", "n": 1});
        for json in [
            serde_json::to_string(&value).unwrap(),
            serde_json::to_string_pretty(&value).unwrap(),
        ] {
            let safe = json_visible(&json);
            assert!(!safe.chars().any(|c| is_unsafe(c) && c != '\n'), "{safe}");
            let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
            assert_eq!(back, value);
        }
    }

    #[test]
    fn clip_counts_characters_not_bytes() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "abc…");
        assert_eq!(clip("ééééé", 2), "éé…");
        assert_eq!(field("\u{1b}[31mxxxxxxxx", 6), "\\x1b[3…");
    }
}
