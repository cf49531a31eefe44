//! What one SSE stream has shown as it passes through orproxy, in its
//! dialect's terms: its whole events one by one (each with its
//! [`Role`]), whether its closing event came, the error it reported, the
//! Responses object to end it with, its usage, its text (for
//! `--log-bodies`) and its generation ID. The hold before the first
//! content event and the relay after it both read a stream through one
//! `Watch`, so what the hold saw (Messages' input tokens in
//! `message_start`, the ID in `response.created`) is not lost. Pure;
//! fuzzed (`fuzz/fuzz_targets/sse_relay.rs`).

use super::dialect::{Dialect, Role, error_ends_stream};
use super::sse::{Piece, Splitter};
use bytes::Bytes;
use serde_json::Value;

/// Why a stream that ended is not whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cut {
    /// It stopped inside an event (the fragment was never relayed).
    InsideEvent,
    /// It ended between events, without its closing event.
    NoClosingEvent(&'static str),
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cut::InsideEvent => f.write_str("the connection closed in the middle of an event"),
            Cut::NoClosingEvent(what) => write!(f, "the stream ended without {what}"),
        }
    }
}

/// One stream, watched as it passes.
#[derive(Debug)]
pub struct Watch {
    dialect: Dialect,
    splitter: Splitter,
    /// Its closing event came.
    closed: bool,
    /// The error the stream itself reported, if it did.
    error: Option<String>,
    /// The Responses object from `response.created`.
    response: Option<Value>,
    usage: Option<Value>,
    /// The streamed text, when asked for.
    text: Option<String>,
    generation: Option<String>,
}

impl Watch {
    /// A watch on a stream of `dialect`; `text`: also collect its text.
    pub fn new(dialect: Dialect, text: bool) -> Self {
        Self {
            dialect,
            splitter: Splitter::default(),
            closed: false,
            error: None,
            response: None,
            usage: None,
            text: text.then(String::new),
            generation: None,
        }
    }

    /// Bytes of an unfinished event, held until it completes.
    pub(crate) fn pending(&self) -> usize {
        self.splitter.pending()
    }

    /// Add the stream's next bytes.
    pub fn push(&mut self, chunk: Bytes) {
        self.splitter.push(chunk);
    }

    /// The next whole event (its bytes as they came) and its role, once it
    /// is complete; `ended`: the stream is over. A piece of an event too
    /// large to hold comes as content.
    pub(crate) fn next_event(&mut self, ended: bool) -> Option<(Bytes, Role)> {
        match self.splitter.next(ended)? {
            Piece::Oversized(bytes) => Some((bytes, Role::Content)),
            Piece::Event(event) => {
                let role = self.dialect.role(&event);
                if let Some(r) = self.dialect.response_object(&event) {
                    self.response = Some(r);
                }
                self.dialect.fold_usage(&event, &mut self.usage);
                if self.generation.is_none() {
                    self.generation = self.dialect.generation_id(&event);
                }
                if let Some(text) = self.text.as_mut()
                    && let Some(piece) = self.dialect.text(&event)
                {
                    text.push_str(&piece);
                }
                match &role {
                    Role::End => self.closed = true,
                    Role::Error(e) => {
                        self.error = Some(e.message.clone());
                        self.closed |= error_ends_stream(self.dialect, &event);
                    }
                    Role::Preamble | Role::Content => {}
                }
                Some((event.raw, role))
            }
        }
    }

    /// [`Watch::next_event`] without the role.
    pub fn next(&mut self, ended: bool) -> Option<Bytes> {
        self.next_event(ended).map(|(bytes, _)| bytes)
    }

    /// Judge the stream that just ended, once every whole event was taken:
    /// whole, or why not.
    pub(crate) fn judge_end(&self) -> Result<(), Cut> {
        if !self.splitter.pending_is_blank() {
            return Err(Cut::InsideEvent);
        }
        if !self.closed
            && let Some(what) = self.dialect.closing_event()
        {
            return Err(Cut::NoClosingEvent(what));
        }
        Ok(())
    }

    /// Whether the stream that just ended is whole (see [`Watch::judge_end`]).
    pub fn is_whole(&self) -> bool {
        self.judge_end().is_ok()
    }

    /// The events that end the stream after a failure, in its dialect:
    /// `status` is the HTTP status the failure stands for.
    pub fn failure_tail(&self, status: u16, message: &str) -> Bytes {
        Bytes::from(
            self.dialect
                .failure_tail(status, message, self.response.as_ref()),
        )
    }

    /// The error the stream itself reported, if it did.
    pub(crate) fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The usage it reported (the last, or Messages' parts merged).
    pub(crate) fn take_usage(&mut self) -> Option<Value> {
        self.usage.take()
    }

    /// The text it streamed (when asked for).
    pub(crate) fn take_text(&mut self) -> Option<String> {
        self.text.take()
    }

    /// The generation ID it named first.
    pub(crate) fn generation(&self) -> Option<&str> {
        self.generation.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Feed `stream` in `chunk`-byte pieces, as the relay does: what it
    /// hands out, and its judgement at the end.
    fn relay(dialect: Dialect, stream: &[u8], chunk: usize) -> (Vec<u8>, Watch) {
        let mut w = Watch::new(dialect, true);
        let mut out = Vec::new();
        for piece in stream.chunks(chunk.max(1)) {
            w.push(Bytes::copy_from_slice(piece));
            while let Some(b) = w.next(false) {
                out.extend_from_slice(&b);
            }
        }
        while let Some(b) = w.next(true) {
            out.extend_from_slice(&b);
        }
        (out, w)
    }

    const RESPONSES: &str = concat!(
        ": OPENROUTER PROCESSING\n\n",
        "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"gen-1\",\"object\":\"response\",\"status\":\"in_progress\"}}\n\n",
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n",
        "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"gen-1\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n",
    );

    #[test]
    fn a_whole_stream_is_relayed_as_it_came_and_read() {
        for chunk in [1, 7, 64, 4096] {
            let (out, mut w) = relay(Dialect::Responses, RESPONSES.as_bytes(), chunk);
            assert_eq!(out, RESPONSES.as_bytes(), "chunk {chunk}");
            assert_eq!(w.judge_end(), Ok(()));
            assert_eq!(w.generation(), Some("gen-1"));
            assert_eq!(w.take_text().as_deref(), Some("Hi"));
            assert_eq!(
                w.take_usage(),
                Some(json!({"input_tokens": 3, "output_tokens": 1}))
            );
        }
    }

    #[test]
    fn a_stream_without_its_closing_event_is_cut() {
        let without = RESPONSES
            .rsplit_once("event: response.completed")
            .unwrap()
            .0;
        let (out, w) = relay(Dialect::Responses, without.as_bytes(), 5);
        assert_eq!(out, without.as_bytes());
        assert_eq!(
            w.judge_end(),
            Err(Cut::NoClosingEvent("response.completed"))
        );
        // Its failure tail ends it in its own words, with its own ID.
        let tail = String::from_utf8(w.failure_tail(502, "cut").to_vec()).unwrap();
        assert!(tail.starts_with("event: response.failed\n"), "{tail}");
        assert!(tail.contains("\"id\":\"gen-1\""), "{tail}");
        assert!(!tail.contains("[DONE]"));
        let (_, w) = relay(Dialect::Chat, b"data: {\"choices\":[]}\n\n", 3);
        assert_eq!(w.judge_end(), Err(Cut::NoClosingEvent("[DONE]")));
        let (_, w) = relay(Dialect::Plain, b"data: x\n\n", 3);
        assert_eq!(w.judge_end(), Ok(()), "a plain stream has no closing event");
    }

    #[test]
    fn a_fragment_after_the_last_event_is_never_handed_out() {
        let cut = "event: message_start\ndata: {\"type\":\"message_start\"}\n\nevent: content_block_delta\ndata: {\"delta\":{\"te";
        let (out, w) = relay(Dialect::Messages, cut.as_bytes(), 4);
        assert_eq!(
            out,
            b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n"
        );
        assert_eq!(w.judge_end(), Err(Cut::InsideEvent));
        let tail = String::from_utf8(w.failure_tail(502, "cut").to_vec()).unwrap();
        assert!(tail.starts_with("event: error\ndata: {"), "{tail}");
        let data: Value =
            serde_json::from_str(tail["event: error\ndata: ".len()..].trim()).unwrap();
        assert_eq!(data["type"], "error");
        assert_eq!(data["error"]["type"], "api_error");
    }

    #[test]
    fn an_error_event_closes_responses_and_messages_streams_but_not_chat() {
        let failed = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\"}}\n\nevent: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"error\":{\"code\":\"server_error\",\"message\":\"boom\"}}}\n\n";
        let (_, w) = relay(Dialect::Responses, failed.as_bytes(), 9);
        assert_eq!(w.judge_end(), Ok(()));
        assert_eq!(w.error(), Some("boom"));
        let error = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"busy\"}}\n\n";
        let (_, w) = relay(Dialect::Messages, error.as_bytes(), 9);
        assert_eq!(w.judge_end(), Ok(()));
        assert_eq!(w.error(), Some("busy"));
        let chat = "data: {\"error\":{\"message\":\"mid\",\"code\":502},\"choices\":[{\"finish_reason\":\"error\"}]}\n\n";
        let (_, w) = relay(Dialect::Chat, chat.as_bytes(), 9);
        assert_eq!(w.error(), Some("mid"));
        assert!(w.judge_end().is_err(), "chat still ends with [DONE]");
    }

    #[test]
    fn messages_usage_is_merged_from_its_parts() {
        let stream = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"gen-m\",\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"ok\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let (_, mut w) = relay(Dialect::Messages, stream.as_bytes(), 11);
        assert_eq!(w.judge_end(), Ok(()));
        assert_eq!(w.generation(), Some("gen-m"));
        assert_eq!(
            w.take_usage(),
            Some(json!({"input_tokens": 12, "output_tokens": 5}))
        );
    }
}
