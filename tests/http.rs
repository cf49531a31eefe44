//! HTTP at the edges: HTTP/1.0 clients, `Upgrade` requests, keep-alive, and
//! a server out of descriptors.

use crate::common::fake_openrouter::{CHAT_OK_CONTENT, FakeOpenRouter, Reply};
use crate::common::{
    BIN, Env, Server, chat, clean_env, data_events, key, raw_chat_request, setup, wait_until,
};
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Well under the 30 s a silent client is given: an answer within it came
/// "at once", not from a timeout.
const T: Duration = Duration::from_secs(10);

/// Write `bytes` on a fresh connection and read until orproxy closes it;
/// the head and the body, split at the blank line.
fn exchange(server: &Server, bytes: &[u8]) -> (String, String) {
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(bytes).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .expect("orproxy answers and closes the connection");
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_owned(), body.to_owned())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn post_10(body: &serde_json::Value, extra: &str) -> Vec<u8> {
    let body = body.to_string();
    format!(
        "POST /v1/chat/completions HTTP/1.0\r\nContent-Type: application/json\r\n{extra}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn an_http_1_0_client_gets_a_stream_without_chunks_ended_by_the_close() {
    let (_env, fake, server) = setup(1, &[]);
    for extra in ["", "Connection: keep-alive\r\n"] {
        fake.push(&crate::common::key(1), Reply::sse_chat(&["Hello", "there"]));
        let request = post_10(
            &json!({"model": "m", "stream": true, "messages": []}),
            extra,
        );
        let (head, body) = exchange(&server, &request);
        assert!(head.starts_with("HTTP/1.0 200"), "{head}");
        assert_eq!(header(&head, "transfer-encoding"), None, "{head}");
        assert_eq!(header(&head, "content-length"), None, "{head}");
        assert_ne!(header(&head, "connection"), Some("keep-alive"), "{head}");
        // The events as the upstream sent them: no chunk sizes between them.
        assert!(!body.contains("\r\n"), "chunk framing in {body:?}");
        let events = data_events(&body);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{body}");
        let words: String = events[..events.len() - 1]
            .iter()
            .filter_map(|e| serde_json::from_str::<serde_json::Value>(e).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(words, "Hellothere", "{body}");
    }
    // A JSON answer keeps its length (and HTTP/1.0 keep-alive, when asked).
    fake.set_fallback(Reply::chat_ok());
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(&post_10(
        &json!({"model": "m", "messages": []}),
        "Connection: keep-alive\r\n",
    ))
    .unwrap();
    let mut got = vec![0u8; 64 * 1024];
    let mut n = 0;
    while !String::from_utf8_lossy(&got[..n]).contains(CHAT_OK_CONTENT) {
        let read = s.read(&mut got[n..]).unwrap();
        assert!(
            read > 0,
            "closed early: {}",
            String::from_utf8_lossy(&got[..n])
        );
        n += read;
    }
    let text = String::from_utf8_lossy(&got[..n]);
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    assert!(header(&text, "content-length").is_some(), "{text}");
}

#[test]
fn upgrade_requests_get_a_400_at_once_and_are_never_forwarded() {
    let (_env, fake, server) = setup(1, &[]);
    for request in [
        &b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
           Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"[..],
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n\
          Upgrade: websocket\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        b"GET /health HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\n",
    ] {
        let (head, body) = exchange(&server, request);
        assert!(head.starts_with("HTTP/1.1 400"), "{head}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "upgrade_not_supported", "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("HTTP/1.1"),
            "{v}"
        );
    }
    assert_eq!(fake.request_count(), 0, "nothing was forwarded");
    fake.set_fallback(Reply::chat_ok());
    assert_eq!(
        chat(&server, &json!({"model": "m", "messages": []})).status,
        200
    );
}

#[test]
fn idle_connections_close_after_the_keep_alive_the_readme_states() {
    // What the README promises is what `serve` is configured with...
    let readme = include_str!("../README.md");
    assert!(
        readme.contains(
            "Client connections are kept alive for 75 s between requests (`--keep-alive`)"
        ),
        "README's keep-alive sentence changed"
    );
    assert!(
        readme.contains("| `--keep-alive` | `ORPROXY_KEEP_ALIVE` | `75` |"),
        "README's --keep-alive row changed"
    );
    let env = crate::common::Env::new();
    let help = env.run(&["serve", "--help"]).success().stdout;
    let flag = help
        .split("--keep-alive")
        .nth(1)
        .and_then(|rest| rest.split("\n      --").next())
        .unwrap_or_default();
    assert!(flag.contains("[default: 75]"), "{help}");

    // ... and the setting is what closes an idle connection: with 1 s, a
    // connection left idle after a request is closed by orproxy (under the
    // default, it would stay open far longer than this test reads).
    let (_env, _fake, server) = setup(1, &["--keep-alive", "1"]);
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "the idle connection was not closed: {e} after {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(text.matches("HTTP/1.1").count(), 1, "{text}");
    assert_ne!(
        header(&text, "connection"),
        Some("close"),
        "kept alive at first: {text}"
    );
}

// ---------------------------------------------------------------------------
// Out of descriptors
// ---------------------------------------------------------------------------

/// The open-files limit orproxy runs under in these tests (soft and hard:
/// it cannot raise it).
const NOFILE: usize = 256;

/// `orproxy serve --workers 1` under `ulimit -n NOFILE`.
fn serve_limited(env: &Env, fake: &FakeOpenRouter) -> Server {
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -n {NOFILE} && exec \"$0\" \"$@\""))
        .arg(BIN)
        .arg("--store")
        .arg(&env.store_arg)
        .args(["serve", "--port", "0", "--workers", "1"])
        .args(["--upstream", &fake.base_url()]);
    clean_env(&mut cmd, env.dir.path());
    let server = env.serve_cmd(cmd);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        line.split_whitespace().skip(3).take(2).collect::<Vec<_>>(),
        [NOFILE.to_string(), NOFILE.to_string()],
        "{line}"
    );
    server
}

/// Whether orproxy has answered on `s` or closed it (without reading it).
fn answered(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let done = !matches!(s.peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    s.set_nonblocking(false).unwrap();
    done
}

/// `GET /health` on a fresh connection, within [`T`].
fn health(server: &Server) -> String {
    let (head, _) = exchange(
        server,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    head
}

#[track_caller]
fn assert_never_out_of_descriptors(server: &Server) {
    let log = server.log();
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(
        log.contains("near what the open-files limit (256) allows"),
        "{log}"
    );
}

#[test]
fn out_of_descriptors_idle_connections_make_room_and_health_answers() {
    let _ = rlimit::increase_nofile_limit(8 * NOFILE as u64);
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    env.add_keys(&[key(1)]);
    let server = serve_limited(&env, &fake);
    fake.set_fallback(Reply::chat_ok());
    // Three times as many idle connections as the limit has descriptors:
    // orproxy accepts them all, closing the longest idle to make room (each
    // costs it at least two descriptors, so at most half can stay).
    let idle: Vec<TcpStream> = (0..3 * NOFILE)
        .map(|_| TcpStream::connect(server.addr()).unwrap())
        .collect();
    wait_until("orproxy to take every connection in", T, || {
        idle.iter().filter(|s| answered(s)).count() >= idle.len() - NOFILE / 2
    });
    assert!(health(&server).starts_with("HTTP/1.1 200"));
    let r = chat(&server, &json!({"model": "m", "messages": []}));
    assert_eq!(r.status, 200, "{}", r.text());
    drop(idle);
    assert_eq!(
        chat(&server, &json!({"model": "m", "messages": []})).status,
        200
    );
    assert_never_out_of_descriptors(&server);
}

#[test]
fn out_of_descriptors_busy_connections_shed_new_requests_with_a_503() {
    let _ = rlimit::increase_nofile_limit(8 * NOFILE as u64);
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    env.add_keys(&[key(1)]);
    let server = serve_limited(&env, &fake);
    // As many requests as the limit has descriptors, each held by an
    // upstream that never answers: some go upstream (each then holds three
    // descriptors), the others are answered at once.
    fake.set_fallback(Reply::HangBeforeHeaders);
    let body = json!({"model": "m", "stream": true, "messages": []});
    let busy: Vec<TcpStream> = (0..NOFILE)
        .map(|_| raw_chat_request(&server, &body))
        .collect();
    wait_until("every request upstream or answered", T, || {
        busy.iter().filter(|s| answered(s)).count() + fake.request_count() >= busy.len()
    });
    let upstream = fake.request_count();
    assert!(
        upstream > 0 && upstream < NOFILE / 3,
        "{upstream} went upstream"
    );
    // Those answered got an OpenAI-shaped 503 with Retry-After (or, for a
    // connection whose request had not arrived yet, were closed to make room).
    let mut shed = 0;
    for mut s in busy.iter().filter(|s| answered(s)) {
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        if !got.is_empty() {
            let text = String::from_utf8_lossy(&got);
            assert!(text.starts_with("HTTP/1.1 503"), "{text}");
            shed += 1;
        }
    }
    assert!(shed > 0);
    // /health still answers, and a new request gets a 503 at once.
    assert!(health(&server).starts_with("HTTP/1.1 200"));
    fake.set_fallback(Reply::chat_ok());
    let post = json!({"model": "m", "messages": []}).to_string();
    let (head, body) = exchange(
        &server,
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{post}",
            post.len()
        )
        .as_bytes(),
    );
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(header(&head, "retry-after").is_some(), "{head}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "server_overloaded", "{v}");
    assert_eq!(v["error"]["type"], "server_error", "{v}");
    assert_eq!(
        fake.request_count(),
        upstream,
        "the shed request never went upstream"
    );
    // The clients leave: service resumes.
    drop(busy);
    wait_until("service to resume", T, || {
        chat(&server, &json!({"model": "m", "messages": []})).status == 200
    });
    assert_never_out_of_descriptors(&server);
}
