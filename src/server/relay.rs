//! Upstream bodies on their way to the client: read with an idle timeout,
//! and relayed as they come without buffering: any body chunk by chunk, an
//! SSE stream event by whole event ([`Watch`]).

use crate::openrouter::stream::Watch;
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

/// How a relayed body ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The upstream body ended normally (a stream with its closing event).
    Complete,
    /// The stream ended in its own words with an error the upstream
    /// reported after it started (relayed as it came).
    Errored(String),
    /// The upstream failed or cut the body short; the client was told.
    UpstreamFailed(BodyError),
    /// The client went away; the upstream request was dropped.
    ClientGone,
}

/// What a relayed stream reported, handed over with its [`End`].
#[derive(Debug, Default)]
pub(crate) struct Notes {
    /// Its usage (the last, or Messages' parts merged).
    pub(crate) usage: Option<serde_json::Value>,
    /// Its text, with `--log-bodies`.
    pub(crate) text: Option<String>,
}

/// What the relay knows about the body it relays.
#[derive(Debug, Clone)]
pub(crate) struct RelaySpec {
    /// Longest silence between upstream chunks.
    pub(crate) idle: Duration,
    /// The upstream's Content-Length, if it sent one.
    pub(crate) content_length: Option<u64>,
}

/// The largest piece of a held prefix handed to actix at once.
const PREFIX_PIECE: usize = 64 * 1024;

/// Relay state: the held prefix, then the rest of the upstream body.
struct Relay {
    prefix: VecDeque<Bytes>,
    body: Option<Upstream>,
    spec: RelaySpec,
    /// An SSE stream, read as whole events: only whole events are relayed,
    /// and its end is judged by its dialect's closing event.
    watch: Option<Watch>,
    /// The upstream body ended (an SSE stream may still hold events).
    eof: bool,
    /// Bytes relayed.
    sent: u64,
    gone: Pin<Box<dyn std::future::Future<Output = ()>>>,
    on_end: Option<Box<dyn FnOnce(End, Notes)>>,
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

    /// The next held piece: the prefix, then whole events of the stream.
    fn held(&mut self) -> Option<Bytes> {
        while let Some(mut prefix) = self.prefix.pop_front() {
            if prefix.is_empty() {
                continue;
            }
            // In pieces (zero-copy slices): actix copies each chunk into its
            // write buffer, and a slow client must not make it copy a whole
            // 8 MiB judged body at once.
            let piece = if prefix.len() > PREFIX_PIECE {
                let head = prefix.split_to(PREFIX_PIECE);
                self.prefix.push_front(prefix);
                head
            } else {
                prefix
            };
            return Some(piece);
        }
        let eof = self.eof;
        self.watch.as_mut()?.next(eof)
    }

    /// How the body that just ended did: whole, or why not.
    fn judge_end(&self) -> End {
        if let Some(len) = self.spec.content_length
            && self.sent < len
        {
            return End::UpstreamFailed(BodyError::Broken(
                "the connection closed before the whole body arrived".to_owned(),
            ));
        }
        match &self.watch {
            None => End::Complete,
            Some(watch) => match watch.judge_end() {
                Err(cut) => End::UpstreamFailed(BodyError::Broken(cut.to_string())),
                Ok(()) => match watch.error() {
                    Some(error) => End::Errored(error.to_owned()),
                    None => End::Complete,
                },
            },
        }
    }

    fn finish(&mut self, end: End) {
        self.body = None;
        let notes = match self.watch.as_mut() {
            Some(watch) => Notes {
                usage: watch.take_usage(),
                text: watch.take_text(),
            },
            None => Notes::default(),
        };
        if let Some(f) = self.on_end.take() {
            f(end, notes);
        }
    }

    /// The item that tells the client the body failed: an SSE stream's
    /// closing error events, in its dialect; any other body is aborted.
    fn failure(&self, failure: &BodyError) -> Result<Bytes, actix_web::Error> {
        match &self.watch {
            Some(watch) => {
                let status = match failure {
                    BodyError::Idle(_) => 504,
                    BodyError::Broken(_) => 502,
                };
                Ok(watch.failure_tail(
                    status,
                    &format!("The upstream stream failed after it started: {failure}"),
                ))
            }
            None => Err(actix_web::error::ErrorBadGateway(failure.to_string())),
        }
    }
}

/// A response body: `prefix`, then the rest of `body` as it arrives. With
/// a `watch` (an SSE stream), only whole events are relayed: bytes after
/// the last one wait for it to complete, and are dropped if it never does.
/// When the upstream fails or cuts the body short, a stream gets its
/// dialect's error events; any other body is aborted (the client sees an
/// incomplete body, never a clean end). When the client goes away
/// (`gone`), the upstream body is dropped at once. `on_end` runs once,
/// with how it ended and what the stream reported.
pub(crate) fn relay(
    prefix: Vec<Bytes>,
    body: Option<Upstream>,
    spec: RelaySpec,
    watch: Option<Watch>,
    gone: Pin<Box<dyn std::future::Future<Output = ()>>>,
    on_end: Box<dyn FnOnce(End, Notes)>,
) -> impl Stream<Item = Result<Bytes, actix_web::Error>> {
    let state = Relay {
        prefix: VecDeque::from(prefix),
        eof: body.is_none(),
        body,
        spec,
        watch,
        sent: 0,
        gone,
        on_end: Some(on_end),
        idle: None,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(piece) = st.held() {
                st.sent += piece.len() as u64;
                return Some((Ok(piece), st));
            }
            st.on_end.as_ref()?;
            let failure = if st.eof {
                match st.judge_end() {
                    End::UpstreamFailed(e) => e,
                    end => {
                        st.finish(end);
                        return None;
                    }
                }
            } else {
                match st.next().await {
                    None => {
                        st.finish(End::ClientGone);
                        return None;
                    }
                    Some(Ok(Some(chunk))) => match st.watch.as_mut() {
                        Some(watch) => {
                            watch.push(chunk);
                            continue;
                        }
                        None => {
                            st.sent += chunk.len() as u64;
                            return Some((Ok(chunk), st));
                        }
                    },
                    Some(Ok(None)) => {
                        st.eof = true;
                        continue;
                    }
                    Some(Err(e)) => e,
                }
            };
            let item = st.failure(&failure);
            st.finish(End::UpstreamFailed(failure));
            return Some((item, st));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openrouter::dialect::Dialect;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// Relay `chunks` (sent `gap` apart, then, with `stall`, no end) with an
    /// idle timeout of `idle`: what the client got, item by item, and how
    /// the relay said it ended.
    fn relayed(
        chunks: Vec<&'static [u8]>,
        watch: Option<Watch>,
        content_length: Option<u64>,
        gap: Duration,
        stall: bool,
    ) -> (Vec<Result<Bytes, String>>, String) {
        let n = chunks.len();
        let body = futures_util::stream::unfold(0, move |i| {
            let chunk = chunks.get(i).copied();
            async move {
                tokio::time::sleep(gap).await;
                match chunk {
                    Some(c) => Some((
                        Ok::<_, awc::error::PayloadError>(Bytes::from_static(c)),
                        i + 1,
                    )),
                    None if stall && i == n => {
                        std::future::pending::<()>().await;
                        None
                    }
                    None => None,
                }
            }
        });
        let spec = RelaySpec {
            idle: Duration::from_millis(150),
            content_length,
        };
        let ended = Rc::new(RefCell::new(String::new()));
        let seen = ended.clone();
        let out = relay(
            Vec::new(),
            Some(Box::pin(body)),
            spec,
            watch,
            Box::pin(std::future::pending()),
            Box::new(move |end, _| *seen.borrow_mut() = format!("{end:?}")),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let items = runtime.block_on(
            out.map(|item| item.map_err(|e| e.to_string()))
                .collect::<Vec<_>>(),
        );
        let end = ended.borrow().clone();
        (items, end)
    }

    fn text(items: &[Result<Bytes, String>]) -> String {
        items
            .iter()
            .map(|i| String::from_utf8_lossy(i.as_ref().unwrap()).into_owned())
            .collect()
    }

    #[test]
    fn the_idle_timeout_counts_from_the_last_chunk_only() {
        // Chunks 60 ms apart outlive a 150 ms timeout many times over.
        let chunks: Vec<&'static [u8]> = vec![b"data: 0\n\n"; 6];
        let watch = Watch::new(Dialect::Chat, false);
        let (items, end) = relayed(chunks, Some(watch), None, Duration::from_millis(60), true);
        assert_eq!(items.len(), 7, "{items:?}");
        for item in items.iter().take(6) {
            assert_eq!(item.as_deref(), Ok(&b"data: 0\n\n"[..]));
        }
        // Then the stall: an error event after the timeout, and the end.
        let tail = text(&items[6..]);
        assert!(tail.contains("sent nothing for 0 s"), "{tail}");
        assert!(tail.ends_with("data: [DONE]\n\n"), "{tail}");
        assert!(end.starts_with("UpstreamFailed(Idle"), "{end}");
    }

    #[test]
    fn only_whole_events_are_relayed_and_a_cut_one_is_dropped() {
        let chunks: Vec<&'static [u8]> = vec![
            b"event: message_start\ndata: {\"type\":\"message_start\"}\n",
            b"\nevent: content_block_delta\ndata: {\"delta\":{\"text\":\"Hi\"}}\n\nevent: content_block_delta\nda",
        ];
        let watch = Watch::new(Dialect::Messages, false);
        let (items, end) = relayed(chunks, Some(watch), None, Duration::ZERO, false);
        let got = text(&items);
        let (events, tail) = got.split_at(got.find("event: error").unwrap());
        assert_eq!(
            events,
            "event: message_start\ndata: {\"type\":\"message_start\"}\n\nevent: content_block_delta\ndata: {\"delta\":{\"text\":\"Hi\"}}\n\n"
        );
        assert!(tail.contains("\"api_error\""), "{tail}");
        assert!(tail.contains("middle of an event"), "{tail}");
        assert!(!tail.contains("[DONE]"), "{tail}");
        assert!(end.starts_with("UpstreamFailed"), "{end}");
    }

    #[test]
    fn a_stream_ends_clean_only_with_its_closing_event() {
        let done: Vec<&'static [u8]> = vec![b"data: {}\n\n", b"data: [DONE]\n\n"];
        let (items, end) = relayed(
            done,
            Some(Watch::new(Dialect::Chat, false)),
            None,
            Duration::ZERO,
            false,
        );
        assert_eq!(text(&items), "data: {}\n\ndata: [DONE]\n\n");
        assert_eq!(end, "Complete");
        let short: Vec<&'static [u8]> = vec![b"event: response.created\ndata: {}\n\n"];
        let (items, end) = relayed(
            short,
            Some(Watch::new(Dialect::Responses, false)),
            None,
            Duration::ZERO,
            false,
        );
        assert!(text(&items).contains("event: response.failed"), "{items:?}");
        assert!(end.contains("without response.completed"), "{end}");
        let failed: Vec<&'static [u8]> = vec![b"event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"error\":{\"code\":\"server_error\",\"message\":\"boom\"}}}\n\n"];
        let (items, end) = relayed(
            failed,
            Some(Watch::new(Dialect::Responses, false)),
            None,
            Duration::ZERO,
            false,
        );
        assert_eq!(items.len(), 1, "relayed as it came, nothing added");
        assert_eq!(end, "Errored(\"boom\")");
    }

    #[test]
    fn a_body_shorter_than_its_content_length_is_aborted() {
        let (items, end) = relayed(
            vec![b"12345", b"6789"],
            None,
            Some(10),
            Duration::ZERO,
            false,
        );
        assert_eq!(items.len(), 3);
        assert!(items[2].is_err(), "the body is aborted, never ended clean");
        assert!(end.starts_with("UpstreamFailed"), "{end}");
        let (items, end) = relayed(
            vec![b"12345", b"67890"],
            None,
            Some(10),
            Duration::ZERO,
            false,
        );
        assert_eq!(text(&items), "1234567890");
        assert_eq!(end, "Complete");
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
}
