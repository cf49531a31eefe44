//! Upstream bodies on their way to the client: read with an idle timeout,
//! held until the first SSE event when a retry is still possible, and
//! relayed chunk by chunk without buffering.

use crate::openrouter::classify::{FirstEvent, sse_first_data};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

/// Whether a response with these headers is an SSE stream.
pub(crate) fn is_event_stream(headers: &actix_web::http::header::HeaderMap) -> bool {
    headers
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("text/event-stream"))
}

/// An upstream response body.
pub(crate) type Upstream = Pin<Box<dyn Stream<Item = Result<Bytes, awc::error::PayloadError>>>>;

/// Why reading an upstream body stopped early.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BodyError {
    /// No bytes for longer than the idle timeout.
    #[error("the upstream sent nothing for {0} s")]
    Idle(u64),
    /// The connection broke.
    #[error("the upstream connection failed: {0}")]
    Broken(String),
}

/// Read the next chunk within `idle`.
pub(crate) async fn next_chunk(
    body: &mut Upstream,
    idle: Duration,
) -> Result<Option<Bytes>, BodyError> {
    match tokio::time::timeout(idle, body.next()).await {
        Err(_) => Err(BodyError::Idle(idle.as_secs())),
        Ok(next) => chunk(next),
    }
}

/// What the upstream body's next item means.
fn chunk(
    next: Option<Result<Bytes, awc::error::PayloadError>>,
) -> Result<Option<Bytes>, BodyError> {
    match next {
        None => Ok(None),
        Some(Ok(chunk)) => Ok(Some(chunk)),
        Some(Err(e)) => Err(BodyError::Broken(crate::secret::redact(&e.to_string()))),
    }
}

/// The start of a body, read up to a cap.
pub(crate) struct Prefix {
    /// What was read, in the chunks it came in: a body too long to judge is
    /// relayed from these as they are, never copied into one buffer.
    pub(crate) chunks: Vec<Bytes>,
    /// Whether the body ended within the cap.
    pub(crate) complete: bool,
}

impl Prefix {
    /// How many bytes were read.
    pub(crate) fn byte_count(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }
}

/// `chunks` as one buffer: the chunk itself when there is one (the usual
/// short answer), otherwise one allocation of the exact size.
pub(crate) fn join(chunks: Vec<Bytes>) -> Bytes {
    match <[Bytes; 1]>::try_from(chunks) {
        Ok([one]) => one,
        Err(chunks) => {
            let mut buf = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
            for chunk in &chunks {
                buf.extend_from_slice(chunk);
            }
            buf.freeze()
        }
    }
}

/// Read a whole body, or its first `cap` bytes (and the rest of the chunk
/// that crosses the cap) when it is longer. The chunks are kept as they
/// arrived: growing one buffer would copy the body several times and leave
/// the allocator holding every smaller buffer it outgrew.
pub(crate) async fn read_prefix(
    body: &mut Upstream,
    cap: usize,
    idle: Duration,
) -> Result<Prefix, BodyError> {
    let mut chunks = Vec::new();
    let mut len = 0;
    loop {
        if len >= cap {
            return Ok(Prefix {
                chunks,
                complete: false,
            });
        }
        match next_chunk(body, idle).await? {
            Some(chunk) if chunk.is_empty() => {}
            Some(chunk) => {
                len += chunk.len();
                chunks.push(chunk);
            }
            None => {
                return Ok(Prefix {
                    chunks,
                    complete: true,
                });
            }
        }
    }
}

/// What the start of an SSE stream held.
pub(crate) struct Held {
    /// Every byte read so far (comments included), to be relayed first.
    pub(crate) bytes: Bytes,
    /// The first `data:` payload, when one arrived (None for `[DONE]` first,
    /// or a stream that ended or grew past the cap without one).
    pub(crate) first: Option<Vec<u8>>,
    /// Whether the upstream body already ended.
    pub(crate) ended: bool,
}

/// Hold an SSE stream until its first `data:` event (keep-alive comments
/// before it are held with it), at most `cap` bytes.
pub(crate) async fn hold_first_event(
    body: &mut Upstream,
    cap: usize,
    idle: Duration,
) -> Result<Held, BodyError> {
    let mut buf = BytesMut::new();
    loop {
        match sse_first_data(&buf) {
            FirstEvent::Data(range) => {
                let first = buf.get(range).map(<[u8]>::to_vec);
                return Ok(Held {
                    bytes: buf.freeze(),
                    first,
                    ended: false,
                });
            }
            FirstEvent::DataOwned(data) => {
                return Ok(Held {
                    bytes: buf.freeze(),
                    first: Some(data),
                    ended: false,
                });
            }
            FirstEvent::Done => {
                return Ok(Held {
                    bytes: buf.freeze(),
                    first: None,
                    ended: false,
                });
            }
            FirstEvent::NeedMore if buf.len() >= cap => {
                return Ok(Held {
                    bytes: buf.freeze(),
                    first: None,
                    ended: false,
                });
            }
            FirstEvent::NeedMore => {}
        }
        match next_chunk(body, idle).await? {
            Some(chunk) => buf.extend_from_slice(&chunk),
            None => {
                return Ok(Held {
                    bytes: buf.freeze(),
                    first: None,
                    ended: true,
                });
            }
        }
    }
}

/// The error event ending a stream that broke after it started.
pub(crate) fn sse_error_event(message: &str) -> Bytes {
    let event = serde_json::json!({
        "object": "chat.completion.chunk",
        "error": {
            "message": message,
            "type": "upstream_error",
            "param": null,
            "code": "upstream_stream_error",
        },
        "choices": [{"index": 0, "delta": {}, "finish_reason": "error"}],
    });
    Bytes::from(format!("data: {event}\n\ndata: [DONE]\n\n"))
}

/// How a relayed body ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The upstream body ended normally.
    Complete,
    /// The upstream failed or cut the body short; the client was told.
    UpstreamFailed(BodyError),
    /// The client went away; the upstream request was dropped.
    ClientGone,
}

/// What the relay knows about the body it relays.
#[derive(Debug, Clone)]
pub struct RelaySpec {
    /// Longest silence between upstream chunks.
    pub idle: Duration,
    /// The body is an SSE stream.
    pub sse: bool,
    /// The stream ends with `data: [DONE]` when complete (chat and text
    /// completions); an end without it means the upstream cut it short.
    pub expects_done: bool,
    /// The upstream's Content-Length, if it sent one.
    pub content_length: Option<u64>,
}

/// What has been relayed of a body, as far as judging its end needs: how
/// many bytes, and the last few of them. Pure, so it can be tested (and
/// fuzzed) without a connection.
#[derive(Debug, Clone, Default)]
pub struct Sent {
    bytes: u64,
    /// The last bytes sent (at most [`TAIL`]).
    tail: Vec<u8>,
    /// The last bytes sent before any trailing whitespace (at most
    /// `DONE.len()`), however much whitespace followed them.
    last_word: Vec<u8>,
}

const TAIL: usize = 16;
const DONE: &[u8] = b"[DONE]";

impl Sent {
    /// Count `chunk` as sent.
    pub fn remember(&mut self, chunk: &[u8]) {
        let content = chunk.trim_ascii_end();
        if !content.is_empty() {
            // What precedes this chunk's content counts too, whitespace and all.
            let mut word = self.tail.clone();
            word.extend_from_slice(&content[content.len().saturating_sub(DONE.len())..]);
            self.last_word = word.split_off(word.len().saturating_sub(DONE.len()));
        }
        self.bytes += chunk.len() as u64;
        self.tail
            .extend_from_slice(&chunk[chunk.len().saturating_sub(TAIL)..]);
        let excess = self.tail.len().saturating_sub(TAIL);
        self.tail.drain(..excess);
    }

    /// Bytes sent so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether what was sent so far ends with a complete SSE event: with a
    /// blank line, whatever mix of line ends (CRLF, LF, CR) came before it.
    pub fn at_event_boundary(&self) -> bool {
        let t = self.tail.as_slice();
        let line_end = |t: &[u8]| t.ends_with(b"\n") || t.ends_with(b"\r");
        match t
            .strip_suffix(b"\r\n")
            .or_else(|| t.strip_suffix(b"\n"))
            .or_else(|| t.strip_suffix(b"\r"))
        {
            // The last line is blank when the one before it ended too (or
            // when nothing came before it).
            Some(rest) => rest.is_empty() || line_end(rest),
            None => t.is_empty(),
        }
    }

    /// Whether the body that just ended after these bytes is whole. awc
    /// reports a connection closed mid-body as a normal end, so this is
    /// judged from the bytes.
    pub fn truncation(&self, spec: &RelaySpec) -> Option<BodyError> {
        let cut = |what: &str| Some(BodyError::Broken(what.to_owned()));
        if let Some(len) = spec.content_length
            && self.bytes < len
        {
            return cut("the connection closed before the whole body arrived");
        }
        if spec.sse {
            if !self.at_event_boundary() {
                return cut("the connection closed in the middle of an event");
            }
            if spec.expects_done && self.last_word != DONE {
                return cut("the stream ended without [DONE]");
            }
        }
        None
    }

    /// The bytes that end a failed SSE stream after these: close a cut-off
    /// event, then one OpenAI-shaped error event and `[DONE]`.
    pub fn error_tail(&self, e: &BodyError) -> Bytes {
        let mut out = BytesMut::new();
        if !self.at_event_boundary() {
            out.extend_from_slice(b"\n\n");
        }
        out.extend_from_slice(&sse_error_event(&format!(
            "The upstream stream failed after it started: {e}"
        )));
        out.freeze()
    }
}

/// The largest piece of a held prefix handed to actix at once.
const PREFIX_PIECE: usize = 64 * 1024;

/// Relay state: the held prefix, then the rest of the upstream body.
struct Relay {
    prefix: VecDeque<Bytes>,
    body: Option<Upstream>,
    spec: RelaySpec,
    sent: Sent,
    gone: Pin<Box<dyn std::future::Future<Output = ()>>>,
    on_end: Option<Box<dyn FnOnce(End)>>,
    /// The idle timeout, one timer for the whole body (made at the first
    /// wait): a timer per chunk costs a timer-wheel insert and removal each.
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Relay {
    /// The next upstream chunk, within `spec.idle` of this call (like
    /// [`next_chunk`]), or None when the client went away first. The timer
    /// is only moved when it fires early: when it was set for an earlier
    /// wait, it is set again for this one's deadline.
    async fn next(&mut self) -> Option<Result<Option<Bytes>, BodyError>> {
        let idle = self.spec.idle;
        let Some(body) = self.body.as_mut() else {
            // Everything was already in the prefix.
            return Some(Ok(None));
        };
        let now = tokio::time::Instant::now();
        // (An idle timeout too long to add is as good as none, like
        // `tokio::time::timeout`'s.)
        let deadline = now
            .checked_add(idle)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30));
        let timer = self
            .idle
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            tokio::select! {
                biased;
                () = &mut self.gone => return None,
                next = body.next() => return Some(chunk(next)),
                () = timer.as_mut() => {
                    if tokio::time::Instant::now() >= deadline {
                        return Some(Err(BodyError::Idle(idle.as_secs())));
                    }
                    timer.as_mut().reset(deadline);
                }
            }
        }
    }

    fn finish(&mut self, end: End) {
        self.body = None;
        if let Some(f) = self.on_end.take() {
            f(end);
        }
    }
}

/// A response body: `prefix`, then the rest of `body` as it arrives. When
/// the upstream fails or cuts the body short, an SSE stream gets one final
/// error event; any other body is aborted (the client sees an incomplete
/// body, never a clean end). When the client goes away (`gone`), the
/// upstream body is dropped at once. `on_end` runs once, with how it ended.
pub(crate) fn relay(
    prefix: Vec<Bytes>,
    body: Option<Upstream>,
    spec: RelaySpec,
    gone: Pin<Box<dyn std::future::Future<Output = ()>>>,
    on_end: Box<dyn FnOnce(End)>,
) -> impl Stream<Item = Result<Bytes, actix_web::Error>> {
    let state = Relay {
        prefix: VecDeque::from(prefix),
        body,
        spec,
        sent: Sent::default(),
        gone,
        on_end: Some(on_end),
        idle: None,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        while let Some(mut prefix) = st.prefix.pop_front() {
            if prefix.is_empty() {
                continue;
            }
            // In pieces (zero-copy slices): actix copies each chunk into its
            // write buffer, and a slow client must not make it copy a whole
            // 8 MiB judged body at once.
            let piece = if prefix.len() > PREFIX_PIECE {
                let head = prefix.split_to(PREFIX_PIECE);
                st.prefix.push_front(prefix);
                head
            } else {
                prefix
            };
            st.sent.remember(&piece);
            return Some((Ok(piece), st));
        }
        st.on_end.as_ref()?;
        let next = st.next().await;
        let failure = match next {
            None => {
                st.finish(End::ClientGone);
                return None;
            }
            Some(Ok(Some(chunk))) => {
                st.sent.remember(&chunk);
                return Some((Ok(chunk), st));
            }
            Some(Ok(None)) => match st.sent.truncation(&st.spec) {
                None => {
                    st.finish(End::Complete);
                    return None;
                }
                Some(e) => e,
            },
            Some(Err(e)) => e,
        };
        let item = if st.spec.sse {
            Ok(st.sent.error_tail(&failure))
        } else {
            Err(actix_web::error::ErrorBadGateway(failure.to_string()))
        };
        st.finish(End::UpstreamFailed(failure));
        Some((item, st))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(sse: bool, expects_done: bool, content_length: Option<u64>) -> RelaySpec {
        RelaySpec {
            idle: Duration::from_secs(1),
            sse,
            expects_done,
            content_length,
        }
    }

    fn sent(chunks: &[&[u8]]) -> Sent {
        let mut sent = Sent::default();
        for c in chunks {
            sent.remember(c);
        }
        sent
    }

    #[test]
    fn a_stream_is_whole_only_at_an_event_boundary_after_done() {
        let sse = spec(true, true, None);
        assert!(
            sent(&[b"data: {}\n\n", b"data: [DONE]\n\n"])
                .truncation(&sse)
                .is_none()
        );
        // The boundary split over chunks, and CR line ends.
        assert!(
            sent(&[b"data: [DONE]\r\n", b"\r\n"])
                .truncation(&sse)
                .is_none()
        );
        assert!(sent(&[b"data: [DONE]\r", b"\r"]).truncation(&sse).is_none());
        assert!(sent(&[b"data: {}\n\n"]).truncation(&sse).is_some());
        assert!(sent(&[b"data: [DONE]\n"]).truncation(&sse).is_some());
        assert!(sent(&[b"data: {\"a\""]).truncation(&sse).is_some());
        // Without [DONE] expected, any event boundary is a clean end.
        assert!(
            sent(&[b"data: {}\n\n"])
                .truncation(&spec(true, false, None))
                .is_none()
        );
        // However much whitespace follows [DONE].
        let padded = [&b"data: [DONE]"[..], &[b'\n'; 40]].concat();
        assert!(sent(&[&padded]).truncation(&sse).is_none());
        assert!(
            sent(&[b"data: [DONE]\n\n", &[b'\n'; 40], b"\r\n"])
                .truncation(&sse)
                .is_none()
        );
        // Found by fuzzing (fuzz/fuzz_targets/relay_end.rs).
        let found = format!("\n{:58}data: [DONE]{:70}\r\r\r\r\r\r", "", "");
        assert!(sent(&[found.as_bytes()]).truncation(&sse).is_none());
        // Mixed line ends still close an event; a lone CRLF does not.
        assert!(sent(&[b"data: [DONE]\n\r\n"]).truncation(&sse).is_none());
        assert!(sent(&[b"data: [DONE]\r\r\n"]).truncation(&sse).is_none());
        assert!(sent(&[b"data: [DONE]\r\n\n"]).truncation(&sse).is_none());
        assert!(sent(&[b"data: [DONE]\r\n"]).truncation(&sse).is_some());
        assert!(sent(&[b"data: [DONE]\n\r"]).truncation(&sse).is_none());
        assert!(
            sent(&[b"data: [DO", b"NE]", b"\n\n"])
                .truncation(&sse)
                .is_none()
        );
        assert!(
            sent(&[b"data: [DONE]\n\n: more\n\n"])
                .truncation(&sse)
                .is_some()
        );
        // Nothing sent at all is a boundary (an empty stream).
        assert!(Sent::default().at_event_boundary());
    }

    /// Relay `chunks` (sent `gap` apart, then a stall) with an idle timeout
    /// of `idle`; what the client got, item by item.
    fn relayed(chunks: usize, gap: Duration, idle: Duration) -> Vec<Result<Bytes, String>> {
        let body = futures_util::stream::unfold(0, move |n| async move {
            tokio::time::sleep(gap).await;
            if n == chunks {
                std::future::pending::<()>().await;
            }
            let chunk = Bytes::from(format!("data: {n}\n\n"));
            Some((Ok::<_, awc::error::PayloadError>(chunk), n + 1))
        });
        let spec = RelaySpec {
            idle,
            sse: true,
            expects_done: false,
            content_length: None,
        };
        let out = relay(
            Vec::new(),
            Some(Box::pin(body)),
            spec,
            Box::pin(std::future::pending()),
            Box::new(|_| {}),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(
            out.map(|item| item.map_err(|e| e.to_string()))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn the_idle_timeout_counts_from_the_last_chunk_only() {
        // Chunks 60 ms apart outlive a 150 ms timeout many times over.
        let items = relayed(6, Duration::from_millis(60), Duration::from_millis(150));
        assert_eq!(items.len(), 7, "{items:?}");
        for (n, item) in items.iter().take(6).enumerate() {
            assert_eq!(item.as_deref(), Ok(format!("data: {n}\n\n").as_bytes()));
        }
        // Then the stall: an error event after the timeout, and the end.
        let tail = items[6].as_ref().unwrap();
        let tail = String::from_utf8_lossy(tail);
        assert!(tail.contains("sent nothing for 0 s"), "{tail}");
        assert!(tail.ends_with("data: [DONE]\n\n"), "{tail}");
    }

    #[test]
    fn a_prefix_is_the_body_in_its_chunks_up_to_the_cap() {
        let read = |chunks: Vec<&'static [u8]>, cap: usize| {
            let items = chunks
                .into_iter()
                .map(|c| Ok::<_, awc::error::PayloadError>(Bytes::from_static(c)));
            let mut body: Upstream = Box::pin(futures_util::stream::iter(items));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            let prefix = runtime
                .block_on(read_prefix(&mut body, cap, Duration::from_secs(5)))
                .unwrap();
            let len = prefix.byte_count();
            (prefix.chunks, len, prefix.complete)
        };
        let b = Bytes::from_static;
        assert_eq!(read(vec![], 10), (vec![], 0, true));
        assert_eq!(read(vec![b"abc"], 10), (vec![b(b"abc")], 3, true));
        // Empty chunks are dropped; the others are kept as they came.
        assert_eq!(
            read(vec![b"", b"ab", b"c", b"de"], 10),
            (vec![b(b"ab"), b(b"c"), b(b"de")], 5, true)
        );
        // Reading stops at the chunk that reaches the cap.
        assert_eq!(
            read(vec![b"abc", b"def", b"ghi"], 5),
            (vec![b(b"abc"), b(b"def")], 6, false)
        );
        assert_eq!(read(vec![b"abcdef"], 5), (vec![b(b"abcdef")], 6, false));
        assert_eq!(read(vec![b"abcde"], 5), (vec![b(b"abcde")], 5, false));
    }

    #[test]
    fn joined_chunks_are_one_buffer_and_one_chunk_is_not_copied() {
        assert_eq!(join(vec![]), Bytes::new());
        let one = Bytes::from(vec![7u8; 100]);
        let joined = join(vec![one.clone()]);
        assert_eq!(joined.as_ptr(), one.as_ptr(), "the chunk itself");
        assert_eq!(
            join(vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cde")]),
            Bytes::from_static(b"abcde")
        );
    }

    #[test]
    fn a_body_shorter_than_its_content_length_is_cut() {
        let body = spec(false, false, Some(10));
        assert!(sent(&[b"12345", b"6789"]).truncation(&body).is_some());
        assert!(sent(&[b"12345", b"67890"]).truncation(&body).is_none());
        assert_eq!(sent(&[b"12345", b"67890"]).bytes(), 10);
    }

    #[test]
    fn the_error_tail_closes_a_cut_event_first() {
        let e = BodyError::Broken("cut".to_owned());
        let tail = sent(&[b"data: {\"a\""]).error_tail(&e);
        assert!(tail.starts_with(b"\n\ndata: {"));
        assert!(tail.ends_with(b"data: [DONE]\n\n"));
        let tail = sent(&[b"data: {}\n\n"]).error_tail(&e);
        assert!(tail.starts_with(b"data: {"));
    }
}
