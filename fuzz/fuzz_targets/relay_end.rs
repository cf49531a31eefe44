//! The relay's judgement of how a body ended, made on the last bytes it
//! relayed, chunk by chunk: it must agree with the same judgement made on the
//! whole body at once, and the error tail it adds to a failed stream must
//! leave a well-formed stream ending in one JSON error event and `[DONE]`.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use orproxy::internals::{BodyError, RelaySpec, Sent};
use std::time::Duration;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    sse: bool,
    expects_done: bool,
    content_length: Option<u16>,
    cuts: Vec<u16>,
    body: &'a [u8],
}

/// Whether a whole SSE body ends with a blank line, read line by line as the
/// SSE format defines lines (ended by CRLF, LF or CR).
fn ends_with_blank_line(body: &[u8]) -> bool {
    if body.is_empty() {
        return true;
    }
    let mut line_start = 0;
    let mut last_line_blank = false;
    let mut i = 0;
    while i < body.len() {
        let end = match body[i] {
            b'\r' if body.get(i + 1) == Some(&b'\n') => Some(i + 2),
            b'\r' | b'\n' => Some(i + 1),
            _ => None,
        };
        match end {
            Some(next) => {
                last_line_blank = i == line_start;
                line_start = next;
                i = next;
            }
            None => i += 1,
        }
    }
    // Complete (nothing after the last line end) and blank.
    line_start == body.len() && last_line_blank
}

/// The judgement on the whole body, from the rules documented in relay.rs.
fn expected(spec: &RelaySpec, body: &[u8]) -> bool {
    if spec.content_length.is_some_and(|n| (body.len() as u64) < n) {
        return false;
    }
    if spec.sse {
        if !ends_with_blank_line(body) {
            return false;
        }
        if spec.expects_done && !body.trim_ascii_end().ends_with(b"[DONE]") {
            return false;
        }
    }
    true
}

fuzz_target!(|input: Input<'_>| {
    let spec = RelaySpec {
        idle: Duration::from_secs(1),
        sse: input.sse,
        expects_done: input.expects_done,
        content_length: input.content_length.map(u64::from),
    };
    let body = input.body;
    let mut cuts: Vec<usize> = input
        .cuts
        .iter()
        .map(|&c| usize::from(c) % (body.len() + 1))
        .collect();
    cuts.push(body.len());
    cuts.sort_unstable();
    let mut sent = Sent::default();
    let mut at = 0;
    for cut in cuts {
        sent.remember(&body[at..cut]);
        at = cut;
    }
    assert_eq!(sent.bytes(), body.len() as u64);
    let verdict = sent.truncation(&spec);
    assert_eq!(
        verdict.is_none(),
        expected(&spec, body),
        "{verdict:?} for {:?}",
        String::from_utf8_lossy(body)
    );
    if spec.sse {
        let tail = sent.error_tail(&BodyError::Broken("fuzz".to_owned()));
        let mut whole = body.to_vec();
        whole.extend_from_slice(&tail);
        assert!(whole.ends_with(b"\n\ndata: [DONE]\n\n"));
        // The error event is its own event: after a blank line, one data line
        // of JSON with an OpenAI-shaped error.
        let text = String::from_utf8_lossy(&tail);
        let event = text
            .trim_start_matches('\n')
            .strip_prefix("data: ")
            .and_then(|t| t.split_once("\n\n"))
            .map(|(e, _)| e)
            .expect("an error event");
        let v: serde_json::Value = serde_json::from_str(event).expect("JSON");
        assert!(v["error"]["message"].is_string() && v["error"]["code"].is_string());
        assert_eq!(v["choices"][0]["finish_reason"], "error");
        let mut after = Sent::default();
        after.remember(&whole);
        assert!(after.at_event_boundary());
    }
});
