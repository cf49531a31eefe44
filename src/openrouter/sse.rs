//! An SSE stream cut into whole events as its bytes arrive, each kept as the
//! bytes it came in (so that it is relayed unchanged) with what it says:
//! its `event` name and its `data`. Lines end with `\n`, `\r\n` or `\r`; an
//! event ends at a blank line; lines starting with `:` are comments.
//!
//! The parsing crates (eventsource-stream and the like) hand out parsed
//! events only; a proxy must relay the bytes as the upstream sent them,
//! comments and `id:` lines included, and know where each event ends. Pure
//! and fuzzed (`fuzz/fuzz_targets/sse_events.rs`).

use bytes::{Bytes, BytesMut};

/// The largest event held whole; a longer one is passed on in pieces as
/// it comes, without being read.
const MAX_EVENT: usize = 32 * 1024 * 1024;

/// One whole event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    /// Its bytes as they came, blank line included.
    pub(crate) raw: Bytes,
    /// Its `event` field, when it has one.
    pub(crate) name: Option<String>,
    /// Its `data` lines, joined with `\n` (a slice of `raw` when there is
    /// one); None when it has none (a comment, say).
    pub(crate) data: Option<Bytes>,
}

impl Event {
    /// The event's type: its `event` field, else the `type` its JSON data
    /// names (the Responses API and Anthropic Messages send both).
    pub(crate) fn kind(&self) -> Option<String> {
        if let Some(name) = &self.name {
            return Some(name.clone());
        }
        #[derive(serde::Deserialize)]
        struct Typed {
            #[serde(rename = "type")]
            kind: Option<String>,
        }
        let data = self.data.as_deref()?;
        if !opens_object(data) {
            return None;
        }
        serde_json::from_slice::<Typed>(data).ok()?.kind
    }

    /// Whether the event carries nothing: comments, blank lines, `id` or
    /// `retry` alone.
    pub(crate) fn is_empty(&self) -> bool {
        self.name.is_none()
            && self
                .data
                .as_deref()
                .is_none_or(|d| d.trim_ascii().is_empty())
    }

    /// Whether its data is `[DONE]` (chat's end).
    pub(crate) fn is_done(&self) -> bool {
        self.data
            .as_deref()
            .is_some_and(|d| d.trim_ascii() == b"[DONE]")
    }
}

/// Whether `data` starts a JSON object (0x7b is the opening brace).
pub(crate) fn opens_object(data: &[u8]) -> bool {
    data.trim_ascii_start().first() == Some(&0x7b)
}

/// What [`Splitter::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    /// A whole event.
    Event(Event),
    /// Bytes of an event too large to hold, passed on as they are.
    Oversized(Bytes),
}

/// Cuts a stream into whole events. A chunk is kept as it came while the
/// events in it are cut out of it (zero-copy slices); only an event split
/// over chunks is copied, into one buffer.
#[derive(Debug, Default)]
pub(crate) struct Splitter {
    /// The latest chunk, when nothing was held before it.
    fresh: Bytes,
    /// The start of an event that spans chunks.
    buf: BytesMut,
    /// How far the held bytes were searched for the end of the current
    /// event.
    scanned: usize,
    /// Within an event too large to hold: pass bytes on until it ends.
    oversized: bool,
}

impl Splitter {
    /// Add the next bytes of the stream.
    pub(crate) fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        if self.fresh.is_empty() && self.buf.is_empty() {
            self.fresh = chunk;
            return;
        }
        if !self.fresh.is_empty() {
            self.buf.extend_from_slice(&self.fresh);
            self.fresh = Bytes::new();
        }
        self.buf.extend_from_slice(&chunk);
    }

    /// Bytes of an unfinished event, held until it completes.
    pub(crate) fn pending(&self) -> usize {
        self.fresh.len() + self.buf.len()
    }

    /// Whether the held bytes are only line ends (nothing an event would
    /// miss if they were dropped).
    pub(crate) fn pending_is_blank(&self) -> bool {
        let blank = |b: &u8| matches!(b, b'\r' | b'\n');
        self.fresh.iter().all(blank) && self.buf.iter().all(blank)
    }

    /// The next whole event (or oversized piece), if one is complete.
    /// `ended`: the stream is over, so a `\r` at the very end closes its
    /// line.
    pub(crate) fn next(&mut self, ended: bool) -> Option<Piece> {
        if !self.fresh.is_empty() {
            if !self.oversized
                && let Some(end) = event_end(&self.fresh, &mut self.scanned, ended)
            {
                let raw = self.fresh.split_to(end);
                return Some(Piece::Event(parse(raw)));
            }
            // The rest of the chunk starts an event that later chunks end.
            self.buf.extend_from_slice(&self.fresh);
            self.fresh = Bytes::new();
        }
        if self.oversized {
            return self.next_oversized();
        }
        match event_end(&self.buf, &mut self.scanned, ended) {
            Some(end) => Some(Piece::Event(parse(self.buf.split_to(end).freeze()))),
            None if self.buf.len() > MAX_EVENT => {
                self.oversized = true;
                self.next_oversized()
            }
            None => None,
        }
    }

    /// Pass on the held part of an oversized event up to (and including)
    /// its end, if it came.
    fn next_oversized(&mut self) -> Option<Piece> {
        if self.buf.is_empty() {
            return None;
        }
        let cut = match event_end(&self.buf, &mut self.scanned, true) {
            Some(end) => {
                self.oversized = false;
                end
            }
            None => {
                self.scanned = 0;
                self.buf.len()
            }
        };
        Some(Piece::Oversized(self.buf.split_to(cut).freeze()))
    }
}

/// Where the event at the start of `buf` ends (after its blank line), if
/// it does; `scanned`: how far an earlier call searched, updated.
fn event_end(buf: &[u8], scanned: &mut usize, ended: bool) -> Option<usize> {
    // Resume a line start back, so that a line end split over two pushes
    // is seen whole.
    let mut pos = line_start_before(buf, *scanned);
    while let Some((line_len, next)) = next_line(buf, pos, ended) {
        if line_len == 0 {
            // A blank line: it ends the event (an empty one when it comes
            // first).
            *scanned = 0;
            return Some(next);
        }
        pos = next;
    }
    *scanned = pos;
    None
}

/// The start of the line containing `pos` (0 when none is known).
fn line_start_before(buf: &[u8], pos: usize) -> usize {
    let pos = pos.min(buf.len());
    buf[..pos]
        .iter()
        .rposition(|b| matches!(b, b'\n' | b'\r'))
        .map_or(0, |i| i + 1)
}

/// The line starting at `pos`: its length (without its end) and where the
/// next one starts. A `\r` last in the buffer ends its line only when the
/// stream `ended` (else a `\n` may follow).
fn next_line(buf: &[u8], pos: usize, ended: bool) -> Option<(usize, usize)> {
    let rest = buf.get(pos..)?;
    let at = memchr::memchr2(b'\n', b'\r', rest)?;
    let next = match rest[at] {
        b'\r' => match rest.get(at + 1) {
            Some(b'\n') => at + 2,
            Some(_) => at + 1,
            None if ended => at + 1,
            None => return None,
        },
        _ => at + 1,
    };
    Some((at, pos + next))
}

/// Read one whole event's fields.
fn parse(raw: Bytes) -> Event {
    let mut name = None;
    let mut data: Option<BytesMut> = None;
    let mut single: Option<Bytes> = None;
    let mut pos = 0;
    let text = &raw[..];
    // Skip a UTF-8 byte order mark at the start of the stream.
    if text.starts_with(b"\xEF\xBB\xBF") {
        pos = 3;
    }
    while let Some((len, next)) = next_line(text, pos, true) {
        let line = &text[pos..pos + len];
        pos = next;
        if line.is_empty() || line.first() == Some(&b':') {
            continue;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => name = Some(String::from_utf8_lossy(value).into_owned()),
            b"data" => match (&mut data, &single) {
                (Some(d), _) => {
                    d.extend_from_slice(b"\n");
                    d.extend_from_slice(value);
                }
                (None, Some(first)) => {
                    let mut d = BytesMut::from(&first[..]);
                    d.extend_from_slice(b"\n");
                    d.extend_from_slice(value);
                    data = Some(d);
                }
                (None, None) => single = Some(raw.slice_ref(value)),
            },
            _ => {}
        }
    }
    let data = data.map(BytesMut::freeze).or(single);
    Event { raw, name, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(stream: &[u8], chunk: usize) -> (Vec<Event>, usize) {
        let mut s = Splitter::default();
        let mut out = Vec::new();
        for piece in stream.chunks(chunk.max(1)) {
            s.push(Bytes::copy_from_slice(piece));
            while let Some(Piece::Event(e)) = s.next(false) {
                out.push(e);
            }
        }
        while let Some(Piece::Event(e)) = s.next(true) {
            out.push(e);
        }
        (out, s.pending())
    }

    #[test]
    fn events_are_whole_whatever_the_chunks() {
        let stream = b": OPENROUTER PROCESSING\n\nevent: response.created\ndata: {\"type\":\"response.created\"}\n\ndata: a\r\ndata: b\r\n\r\ndata: [DONE]\r\r";
        for chunk in 1..stream.len() {
            let (evs, pending) = events(stream, chunk);
            assert_eq!(pending, 0, "chunk {chunk}");
            assert_eq!(evs.len(), 4, "chunk {chunk}");
            assert!(evs[0].is_empty());
            assert_eq!(evs[1].name.as_deref(), Some("response.created"));
            assert_eq!(evs[1].kind().as_deref(), Some("response.created"));
            assert_eq!(evs[2].data.as_deref(), Some(&b"a\nb"[..]));
            assert!(evs[3].is_done());
            let joined: Vec<u8> = evs.iter().flat_map(|e| e.raw.to_vec()).collect();
            assert_eq!(joined, stream, "the bytes as they came, chunk {chunk}");
        }
    }

    #[test]
    fn a_cut_event_stays_pending() {
        let (evs, pending) = events(b"data: {\"a\":1}\n\ndata: {\"b\"", 5);
        assert_eq!(evs.len(), 1);
        assert_eq!(pending, 10);
    }

    #[test]
    fn a_cr_at_the_end_waits_for_a_possible_lf() {
        let mut s = Splitter::default();
        s.push(Bytes::from_static(b"data: x\r\n\r"));
        assert_eq!(s.next(false), None, "the \\r may be half of \\r\\n");
        s.push(Bytes::from_static(b"\n"));
        let Some(Piece::Event(e)) = s.next(false) else {
            panic!("the event")
        };
        assert_eq!(e.raw, Bytes::from_static(b"data: x\r\n\r\n"));
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn the_type_comes_from_the_data_when_there_is_no_event_line() {
        let (evs, _) = events(b"data: {\"type\":\"message_stop\"}\n\n", 3);
        assert_eq!(evs[0].kind().as_deref(), Some("message_stop"));
        let (evs, _) = events(b"data: not json\n\n", 3);
        assert_eq!(evs[0].kind(), None);
    }

    #[test]
    fn fields_follow_the_sse_rules() {
        let (evs, _) = events(
            b"\xEF\xBB\xBFevent:x\ndata\ndata:  two spaces\nid: 7\n\n",
            4,
        );
        assert_eq!(evs[0].name.as_deref(), Some("x"));
        assert_eq!(evs[0].data.as_deref(), Some(&b"\n two spaces"[..]));
    }
}
