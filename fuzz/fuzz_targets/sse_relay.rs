//! A stream read by events as the relay reads it ([`Watch`]), in any
//! dialect and any chunking: what it hands out is the stream's bytes as
//! they came, up to the end of its last whole event, the same whatever the
//! chunking; what it holds back is a fragment without an event end; its
//! judgement of the end does not depend on the chunking; and the failure
//! tail it writes is whole events that end the stream in its dialect.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use orproxy::internals::{Dialect, Watch};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    dialect: u8,
    cuts: Vec<u16>,
    stream: &'a [u8],
}

fn dialect(n: u8) -> Dialect {
    match n % 4 {
        0 => Dialect::Chat,
        1 => Dialect::Responses,
        2 => Dialect::Messages,
        _ => Dialect::Plain,
    }
}

/// Feed `stream` cut at `cuts`: the bytes handed out, and the watch.
fn relay(d: Dialect, stream: &[u8], cuts: &[usize]) -> (Vec<u8>, Watch) {
    let mut w = Watch::new(d, true);
    let mut out = Vec::new();
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        w.push(bytes::Bytes::copy_from_slice(&stream[at..cut]));
        at = cut;
        while let Some(b) = w.next(false) {
            out.extend_from_slice(&b);
        }
    }
    while let Some(b) = w.next(true) {
        out.extend_from_slice(&b);
    }
    (out, w)
}

fuzz_target!(|input: Input<'_>| {
    let d = dialect(input.dialect);
    let stream = input.stream;
    let mut cuts: Vec<usize> = input
        .cuts
        .iter()
        .map(|&c| usize::from(c) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    let (out, w) = relay(d, stream, &cuts);
    let (whole, w_whole) = relay(d, stream, &[]);
    assert_eq!(out, whole, "the chunking changed what was relayed");
    assert_eq!(w.is_whole(), w_whole.is_whole());
    assert!(stream.starts_with(&out), "not the stream's own bytes");
    // What was held back never holds a blank line (it would end an event).
    let rest = &stream[out.len()..];
    let blank = rest.windows(2).any(|p| p == b"\n\n" || p == b"\r\r")
        || rest.windows(4).any(|p| p == b"\r\n\r\n")
        || rest
            .windows(3)
            .any(|p| p == b"\n\r\n" || p == b"\r\n\n" || p == b"\n\r\r" || p == b"\r\r\n");
    assert!(
        !blank || rest.iter().all(|b| *b == b'\r' || *b == b'\n'),
        "a whole event held back"
    );
    // The failure tail is whole events that end the stream.
    let tail = w.failure_tail(502, "fuzz");
    let mut after = Watch::new(d, false);
    after.push(tail.clone());
    let mut got = Vec::new();
    while let Some(b) = after.next(false) {
        got.extend_from_slice(&b);
    }
    assert_eq!(got, tail.to_vec(), "the tail is whole events");
    assert!(after.is_whole(), "the tail ends the stream in its dialect");
});
