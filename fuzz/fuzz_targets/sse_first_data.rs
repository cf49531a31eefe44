//! Finding the first SSE data event in a stream received so far. The relay
//! calls `sse_first_data` again on the grown buffer after every chunk, so the
//! answer for a prefix, once it is not `NeedMore`, must be the answer for the
//! whole stream: chunking must never change which event is judged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orproxy::internals::{FirstEvent, sse_first_data};

fuzz_target!(|input: (Vec<u16>, &[u8])| {
    let (cuts, stream) = input;
    let whole = sse_first_data(stream);
    if let FirstEvent::Data(range) = &whole {
        let data = stream
            .get(range.clone())
            .expect("the range lies in the buffer");
        assert!(!data.trim_ascii().is_empty());
        assert!(!data.contains(&b'\n') && !data.contains(&b'\r'));
    }
    // Feed the stream as the relay would, cut where the input says.
    let mut cuts: Vec<usize> = cuts
        .iter()
        .map(|&c| usize::from(c) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    for cut in cuts {
        match sse_first_data(&stream[..cut]) {
            FirstEvent::NeedMore => {}
            early => {
                assert_eq!(
                    early,
                    whole,
                    "cut at {cut} of {:?}",
                    String::from_utf8_lossy(stream)
                );
                break;
            }
        }
    }
});
