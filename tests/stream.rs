//! Streaming through `orproxy serve`: SSE relayed intact, retries before the
//! first event only, mid-stream failures surfaced, disconnects propagated.

use crate::common::fake_openrouter::{Reply, SseEnd, SseStep};
use crate::common::{Env, Server, data_events, key, key_id, raw_chat_request, request, setup};
use serde_json::json;
use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

fn stream_chat(server: &Server) -> crate::common::Resp {
    request(
        "POST",
        &server.url("/v1/chat/completions"),
        &[
            ("content-type", "application/json"),
            ("authorization", "Bearer dummy-key"),
        ],
        Some(
            json!({"model": "m", "stream": true, "messages": []})
                .to_string()
                .as_bytes(),
        ),
    )
}

fn content_of(body: &str) -> String {
    data_events(body)
        .iter()
        .filter(|d| d.as_str() != "[DONE]")
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[test]
fn sse_is_relayed_byte_for_byte_with_keepalive_comments() {
    let (_env, fake, server) = setup(1, &[]);
    let steps: Vec<Vec<u8>> = vec![
        b": OPENROUTER PROCESSING\n\n".to_vec(),
        b": OPENROUTER PROCESSING\n\n".to_vec(),
        b"data: {\"id\":\"g\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n".to_vec(),
        b"data: {\"id\":\"g\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n: OPENROUTER PROCESSING\n\n".to_vec(),
        // An event split across chunks.
        b"data: {\"id\":\"g\",\"choices\":[{\"index\":0,\"del".to_vec(),
        b"ta\":{\"content\":\"lo\"}}]}\n\n".to_vec(),
        b"data: {\"id\":\"g\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3,\"cost\":0}}\n\n".to_vec(),
        b"data: [DONE]\n\n".to_vec(),
    ];
    fake.push(
        &key(1),
        Reply::sse(
            steps
                .iter()
                .flat_map(|b| {
                    [
                        SseStep::Bytes(b.clone()),
                        SseStep::Sleep(Duration::from_millis(20)),
                    ]
                })
                .collect(),
        ),
    );
    let r = stream_chat(&server);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.header("x-orproxy-key"), Some(key_id(&key(1)).as_str()));
    assert_eq!(r.body, steps.concat(), "relayed exactly");
    assert_eq!(content_of(&r.text()), "Hello");
}

#[test]
fn an_error_as_the_first_event_is_retried_on_another_key() {
    let (_env, fake, server) = setup(2, &[]);
    fake.push(
        &key(1),
        Reply::sse_first_event_error("Provider disconnected", 502),
    );
    fake.push(&key(2), Reply::sse_chat(&["all ", "good"]));
    let r = stream_chat(&server);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-orproxy-attempts"), Some("2"));
    assert_eq!(r.header("x-orproxy-key"), Some(key_id(&key(2)).as_str()));
    let text = r.text();
    assert!(
        !text.contains("\"error\""),
        "the client sees only the good answer: {text}"
    );
    assert_eq!(content_of(&text), "all good");
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[test]
fn a_stream_cut_after_it_started_ends_with_an_error_event_and_is_not_retried() {
    let (_env, fake, server) = setup(2, &[]);
    fake.push(
        &key(1),
        Reply::sse(vec![
            SseStep::Bytes(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"partial \"}}]}\n\n".to_vec()),
            SseStep::Bytes(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"answer\"}}]}\n\ndata: {\"choi".to_vec()),
        ])
        .with_end(SseEnd::Cut),
    );
    let r = stream_chat(&server);
    assert_eq!(r.status, 200);
    let events = data_events(&r.text());
    assert_eq!(content_of(&r.text()), "partial answer");
    let error_event = events
        .iter()
        .rev()
        .find(|d| d.as_str() != "[DONE]")
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(error_event).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    assert!(
        v["error"]["type"].is_string() && v["error"].get("code").is_some(),
        "{v}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "error");
    assert_eq!(
        fake.request_count(),
        1,
        "no retry once bytes reached the client"
    );
}

#[test]
fn a_stalled_stream_hits_the_idle_timeout_and_reports_it() {
    let (_env, fake, server) = setup(1, &["--idle-timeout", "1"]);
    fake.push(
        &key(1),
        Reply::sse(vec![SseStep::Bytes(
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"half\"}}]}\n\n".to_vec(),
        )])
        .with_end(SseEnd::Stall),
    );
    let r = stream_chat(&server);
    assert_eq!(r.status, 200);
    let text = r.text();
    assert_eq!(content_of(&text), "half");
    let events = data_events(&text);
    let error = events
        .iter()
        .find(|e| e.contains("\"error\""))
        .expect("an error event");
    assert!(error.contains("sent nothing for 1 s"), "{error}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
}

#[test]
fn an_upstream_reset_before_headers_is_retried_on_another_key() {
    let (env, fake, server) = setup(2, &[]);
    fake.push(&key(1), Reply::ResetBeforeHeaders);
    let r = stream_chat(&server);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-orproxy-key"), Some(key_id(&key(2)).as_str()));
    crate::common::wait_until("the success recorded", T, || {
        env.list_json()[1]["requests_total"] == 1
    });
    // A reset before any answer is the path's failure, never the key's.
    assert_eq!(env.list_json()[0]["consecutive_failures"], 0);
    assert_eq!(env.list_json()[0]["failures_total"], 0);
}

#[test]
fn an_unreachable_upstream_is_a_502_and_slow_headers_a_504() {
    let env = Env::new();
    env.add_keys(&[key(1)]);
    // Nothing listens on port 9 (discard) here.
    let server = env.serve("http://127.0.0.1:9/api/v1", &["--max-attempts", "1"]);
    crate::common::chat(&server, &json!({"model": "m"})).assert_openai_error(502);
    drop(server);

    let (_env, fake, server) = setup(1, &["--headers-timeout", "1", "--max-attempts", "1"]);
    fake.push(&key(1), Reply::HangBeforeHeaders);
    crate::common::chat(&server, &json!({"model": "m"})).assert_openai_error(504);
}

/// Send a streaming request on a raw socket, read until `marker` appears.
fn open_stream(server: &Server, marker: &str) -> TcpStream {
    let mut s = raw_chat_request(server, &json!({"model": "m", "stream": true}));
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(marker) {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "stream ended before {marker:?}: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    s
}

#[test]
fn a_client_going_away_mid_stream_closes_the_upstream_connection() {
    let (_env, fake, server) = setup(1, &[]);
    fake.push(&key(1), Reply::sse_chunks(300, Duration::from_millis(100)));
    let s = open_stream(&server, "chunk-1 ");
    drop(s);
    assert!(
        fake.wait_stream_closed(Duration::from_secs(5)),
        "the upstream stream was not dropped after the client left"
    );
}

#[test]
fn a_client_going_away_during_a_silent_stream_closes_the_upstream_connection() {
    let (_env, fake, server) = setup(1, &[]);
    // The upstream goes quiet after the first chunks: nothing is written to
    // the client, so only noticing the closed socket can end it.
    fake.push(
        &key(1),
        Reply::sse_chunks(2, Duration::ZERO).with_end(SseEnd::Stall),
    );
    let s = open_stream(&server, "chunk-1 ");
    drop(s);
    assert!(
        fake.wait_stream_closed(Duration::from_secs(5)),
        "the stalled upstream stream was not dropped after the client left"
    );
}

#[test]
fn a_client_going_away_before_headers_closes_the_upstream_connection() {
    let (_env, fake, server) = setup(1, &[]);
    fake.push(&key(1), Reply::HangBeforeHeaders);
    let s = raw_chat_request(&server, &json!({"model": "m"}));
    fake.wait_requests(1, T);
    assert!(fake.open_connections() >= 1);
    drop(s);
    assert!(
        fake.wait_open_connections_at_most(0, Duration::from_secs(5)),
        "the upstream request outlived its client"
    );
}

#[test]
fn a_hundred_concurrent_streams_all_complete() {
    let (_env, fake, server) = setup(3, &[]);
    fake.set_fallback(Reply::sse_chunks(20, Duration::from_millis(5)));
    let s = &server;
    let results: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..100)
            .map(|_| scope.spawn(move || stream_chat(s).text()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let expected: String = (0..20).map(|i| format!("chunk-{i} ")).collect();
    for text in &results {
        assert_eq!(content_of(text), expected);
        assert!(text.ends_with("data: [DONE]\n\n"));
    }
    assert_eq!(fake.request_count(), 100);
}

#[test]
fn a_client_going_away_while_waiting_for_a_key_ends_the_wait() {
    let (_env, fake, server) = setup(1, &["--max-wait", "60"]);
    fake.push(
        &key(1),
        Reply::rate_limit_per_min(crate::common::reset_ms_in(40)),
    );
    let s = raw_chat_request(&server, &json!({"model": "m:free"}));
    crate::common::wait_until("the key to cool", T, || {
        server.log().contains("cooling until")
    });
    drop(s);
    crate::common::wait_until("the wait to end", T, || {
        server.log().contains("went away before the answer started")
    });
    assert_eq!(fake.request_count(), 1);
}
