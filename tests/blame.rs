//! A key is blamed only for what it caused: outages, client mistakes and
//! odd upstream answers against the real `orproxy serve`. For each fault:
//! what the client gets, that no key was disabled or blamed, and that the
//! pool serves again within 5 s of the fault ending. Also: what is
//! forwarded upstream (credentials, hop-by-hop headers, paths) and what is
//! relayed back (never a pool key).

use crate::common::fake_openrouter::{FakeOpenRouter, Reply, SseStep};
use crate::common::{Env, Server, chat, key, key_id, request, setup, wait_until};
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

/// No key is disabled, and none has a failure counted against it.
#[track_caller]
fn assert_no_key_blamed(env: &Env) {
    for k in env.list_json() {
        assert_eq!(k["status"], "active", "{k}");
        assert_eq!(k["consecutive_failures"], 0, "{k}");
        assert_eq!(k["failures_total"], 0, "{k}");
    }
}

/// A chat request succeeds within 5 s.
#[track_caller]
fn assert_serves_within_5s(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = chat(server, &json!({"model": "m"}));
        if r.status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not serving 5 s after the fault ended: {}",
            r.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn health(server: &Server) -> serde_json::Value {
    request("GET", &server.url("/health"), &[], None).json()
}

/// The day's errors log of `env`'s server.
fn errors_log(env: &Env) -> String {
    let dir = env.dir.path().join("xdg-state/orproxy/logs");
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("errors-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect()
}

/// A raw HTTP/1.1 exchange: write `head` and `body`, read until close.
fn raw(server: &Server, head: &str, body: &[u8]) -> String {
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn a_network_outage_blames_no_key_and_is_said_once_each_way() {
    use socket2::{Domain, Socket, Type};
    // A port that refuses connections until the fake takes it over.
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let env = Env::new();
    env.add_keys(&[key(1), key(2), key(3)]);
    let server = env.serve(&format!("http://{addr}/api/v1"), &[]);
    let mut codes = Vec::new();
    for _ in 0..4 {
        let r = chat(&server, &json!({"model": "m"}));
        let v = r.assert_openai_error(502);
        codes.push(v["error"]["code"].as_str().unwrap().to_owned());
    }
    // Two requests without any answer: then the upstream is down, and
    // requests are answered at once instead of walking the pool.
    assert_eq!(
        codes.last().map(String::as_str),
        Some("upstream_down"),
        "{codes:?}"
    );
    let h = health(&server);
    assert_eq!(h["upstream"]["status"], "down", "{h}");
    assert_eq!(h["keys"]["active"], 3, "the keys stay active: {h}");
    assert_no_key_blamed(&env);
    // The network comes back.
    socket.listen(128).unwrap();
    let _fake = FakeOpenRouter::start_on(socket.into());
    assert_serves_within_5s(&server);
    assert_eq!(health(&server)["upstream"]["status"], "up");
    assert_no_key_blamed(&env);
    wait_until("the outage's end in the errors log", T, || {
        errors_log(&env).contains("answers again")
    });
    let log = server.log();
    assert_eq!(log.matches("the upstream is down").count(), 1, "{log}");
    assert_eq!(log.matches("answers again").count(), 1, "{log}");
    let errors = errors_log(&env);
    assert_eq!(
        errors.matches("the upstream is down").count(),
        1,
        "{errors}"
    );
}

#[test]
fn a_dns_failure_blames_no_key() {
    let env = Env::new();
    env.add_keys(&[key(1)]);
    let server = env.serve("http://orproxy-test.invalid/api/v1", &[]);
    for _ in 0..3 {
        chat(&server, &json!({"model": "m"})).assert_openai_error(502);
    }
    assert_no_key_blamed(&env);
    assert_eq!(health(&server)["upstream"]["status"], "down");
}

#[test]
fn an_html_502_on_every_key_blames_no_key() {
    let (env, fake, server) = setup(3, &[]);
    let html = Reply::Raw {
        status: 502,
        headers: vec![("Content-Type".into(), "text/html".into())],
        body: b"<html><body><h1>502 Bad Gateway</h1>cloudflare</body></html>".to_vec(),
    };
    fake.set_fallback(html);
    for _ in 0..6 {
        let r = chat(&server, &json!({"model": "m"}));
        assert!(matches!(r.status, 502 | 503), "{}", r.text());
    }
    assert_no_key_blamed(&env);
    fake.set_fallback(Reply::chat_ok());
    assert_serves_within_5s(&server);
}

#[test]
fn a_hung_upstream_is_waited_for_once() {
    let (env, fake, server) = setup(3, &["--headers-timeout", "1"]);
    fake.set_fallback(Reply::HangBeforeHeaders);
    let v = chat(&server, &json!({"model": "m"})).assert_openai_error(504);
    assert_eq!(v["error"]["code"], "upstream_timeout", "{v}");
    assert_eq!(fake.request_count(), 1, "not retried on other keys");
    assert_no_key_blamed(&env);
    fake.set_fallback(Reply::chat_ok());
    assert_serves_within_5s(&server);
}

#[test]
fn client_mistakes_are_relayed_and_cost_nothing() {
    let (env, fake, server) = setup(1, &["--max-failures", "1"]);
    for status in [400, 404, 405, 413, 417, 422] {
        fake.push(
            &key(1),
            Reply::json(
                status,
                &json!({"error": {"message": "your request", "code": status}}),
            ),
        );
        let r = chat(&server, &json!({"model": "m"}));
        assert_eq!(r.status, status, "{}", r.text());
    }
    assert_no_key_blamed(&env);
    // A body that is JSON but not an object is refused and never sent.
    let before = fake.request_count();
    for body in ["[]", "[\"m\", true]", "\"text\"", "42"] {
        let r = request(
            "POST",
            &server.url("/v1/chat/completions"),
            &[("content-type", "application/json")],
            Some(body.as_bytes()),
        );
        let v = r.assert_openai_error(400);
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("JSON object"),
            "{v}"
        );
    }
    assert_eq!(fake.request_count(), before);
}

#[test]
fn a_401_on_a_management_path_is_relayed_and_costs_the_key_nothing() {
    let (env, fake, server) = setup(1, &[]);
    fake.push(&key(1), Reply::unauthorized());
    let r = request(
        "GET",
        &server.url("/v1/keys"),
        &[("authorization", "Bearer dummy")],
        None,
    );
    assert_eq!(r.status, 401, "{}", r.text());
    assert_no_key_blamed(&env);
    let r = chat(&server, &json!({"model": "m"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-orproxy-key"), Some(key_id(&key(1)).as_str()));
}

#[test]
fn paths_with_dot_segments_or_encoded_slashes_are_refused() {
    let (_env, fake, server) = setup(1, &[]);
    for path in [
        "/v1/../../x",
        "/v1/%2e%2e/%2E%2E/admin",
        "/v1/chat%2Fcompletions",
        "/api/v1/./models",
    ] {
        let got = raw(
            &server,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            b"",
        );
        assert!(got.starts_with("HTTP/1.1 400"), "{path}: {got}");
        assert!(got.contains("invalid_request"), "{path}: {got}");
    }
    assert_eq!(fake.request_count(), 0, "nothing forwarded");
}

#[test]
fn requests_are_forwarded_clean() {
    let (_env, fake, server) = setup(1, &["--client-token", "tok-123456"]);
    let body = json!({"model": "m"}).to_string();
    // x-api-key is a client token like Bearer (Anthropic-style clients).
    let r = request(
        "POST",
        &server.url("/v1/chat/completions"),
        &[
            ("x-api-key", "tok-123456"),
            ("api-key", "azure-style"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic eA=="),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "listed in Connection"),
            ("content-type", "application/json"),
        ],
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = &fake.requests()[0];
    assert_eq!(
        sent.header_all("authorization"),
        [format!("Bearer {}", key(1))],
        "only the pool key goes upstream"
    );
    for name in [
        "x-api-key",
        "api-key",
        "te",
        "proxy-authorization",
        "x-hop",
        "expect",
    ] {
        assert_eq!(sent.header(name), None, "{name} was forwarded");
    }
}

#[test]
fn an_expect_header_is_never_forwarded_and_the_next_client_is_unharmed() {
    let (env, fake, server) = setup(1, &["--max-failures", "1"]);
    let body = json!({"model": "m"}).to_string();
    let got = raw(
        &server,
        &format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nExpect: x\r\nConnection: close\r\n\r\n",
            body.len()
        ),
        body.as_bytes(),
    );
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    // The standard case, with a body curl would send that way (over 1 MiB).
    let big = json!({"model": "m", "pad": "x".repeat(1_100_000)}).to_string();
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        big.len()
    )
    .unwrap();
    let mut first = [0u8; 25];
    s.read_exact(&mut first).unwrap();
    assert!(first.starts_with(b"HTTP/1.1 100 Continue"), "{first:?}");
    s.write_all(big.as_bytes()).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("HTTP/1.1 200"), "{rest}");
    for sent in fake.requests() {
        assert_eq!(sent.header("expect"), None);
    }
    // Another client after them gets its own answer.
    fake.push(&key(1), Reply::chat_text("for the next client"));
    let r = chat(&server, &json!({"model": "m"}));
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "for the next client"
    );
    assert_no_key_blamed(&env);
}

#[test]
fn the_pool_key_never_reaches_the_client() {
    let (_env, fake, server) = setup(1, &[]);
    let k = key(1);
    let masked = format!("sk-or-v1-…{}", &k[k.len() - 4..]);
    let escaped = k.replace('-', "\\u002d");
    fake.push(
        &k,
        Reply::Raw {
            status: 400,
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("X-Echo".into(), format!("your key {k}")),
                ("Set-Cookie".into(), "session=abc".into()),
                ("Authorization".into(), format!("Bearer {k}")),
            ],
            body: format!(r#"{{"error":{{"message":"bad: {k} / {escaped}","code":400}}}}"#)
                .into_bytes(),
        },
    );
    let r = chat(&server, &json!({"model": "m"}));
    assert_eq!(r.status, 400);
    let text = r.text();
    assert!(!text.contains(&k) && !text.contains(&escaped), "{text}");
    assert_eq!(text.matches(masked.as_str()).count(), 2, "{text}");
    let ascii = masked.replace('…', "...");
    assert_eq!(
        r.header("x-echo"),
        Some(format!("your key {ascii}").as_str())
    );
    assert_eq!(r.header("set-cookie"), None);
    assert_eq!(r.header("authorization"), None);
    // A success that echoes it, and a stream whose first event does.
    fake.push(&k, Reply::chat_text(&format!("the key was {k}")));
    let text = chat(&server, &json!({"model": "m"})).text();
    assert!(!text.contains(&k) && text.contains(&masked), "{text}");
    let event = format!(
        "data: {}\n\n",
        json!({"choices": [{"delta": {"content": k}}]})
    );
    fake.push(
        &k,
        Reply::sse(vec![
            SseStep::Bytes(event.into_bytes()),
            SseStep::Bytes(b"data: [DONE]\n\n".to_vec()),
        ]),
    );
    let text = chat(&server, &json!({"model": "m", "stream": true})).text();
    assert!(!text.contains(&k) && text.contains(&masked), "{text}");
}

#[test]
fn an_interim_answer_is_skipped_and_the_connection_stays_sound() {
    let (env, fake, server) = setup(1, &[]);
    let final_body = json!({"choices": [{"message": {"content": "after hints"}}]}).to_string();
    let wire = format!(
        "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
         HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        final_body.len(),
        final_body
    );
    fake.push(&key(1), Reply::Wire(wire.into_bytes()));
    let r = chat(&server, &json!({"model": "m"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["message"]["content"], "after hints");
    // The next request reuses the pooled connection: it gets its own answer.
    fake.push(&key(1), Reply::chat_text("second"));
    let r = chat(&server, &json!({"model": "m"}));
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "second",
        "{}",
        r.text()
    );
    assert_no_key_blamed(&env);
}

#[test]
fn a_switching_protocols_answer_is_refused_without_blame() {
    let (env, fake, server) = setup(1, &[]);
    fake.push(
        &key(1),
        Reply::Wire(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
                .to_vec(),
        ),
    );
    let v = chat(&server, &json!({"model": "m"})).assert_openai_error(502);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("101"),
        "{v}"
    );
    assert_no_key_blamed(&env);
    assert_serves_within_5s(&server);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use flate2::Compression;
    use flate2::write::GzEncoder;
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[test]
fn encoded_answers_are_judged_and_relayed_not_reported_broken() {
    let (env, fake, server) = setup(2, &[]);
    // A rate limit, gzipped: read, so key 1 cools and key 2 answers.
    let limit = json!({"error": {"message": "Rate limit exceeded: free-models-per-min. ", "code": 429,
        "metadata": {"headers": {"X-RateLimit-Reset": crate::common::reset_ms_in(60).to_string()}}}});
    fake.push(
        &key(1),
        Reply::Raw {
            status: 429,
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Content-Encoding".into(), "gzip".into()),
            ],
            body: gzip(limit.to_string().as_bytes()),
        },
    );
    let ok = json!({"choices": [{"message": {"content": "decoded"}}]}).to_string();
    fake.push(
        &key(2),
        Reply::Raw {
            status: 200,
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Content-Encoding".into(), "gzip".into()),
            ],
            body: gzip(ok.as_bytes()),
        },
    );
    let r = chat(&server, &json!({"model": "m:free"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-encoding"), None, "relayed decoded");
    assert_eq!(r.json()["choices"][0]["message"]["content"], "decoded");
    // The per-minute cap is the account's: key 1 is held for `:free` models.
    wait_until("key 1 held", T, || {
        env.list_json()[0]["status"] == "free_held"
    });
    // An encoding orproxy does not decode is relayed as it came.
    fake.push(
        &key(2),
        Reply::Raw {
            status: 200,
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Content-Encoding".into(), "br".into()),
            ],
            body: b"\x8b\x02\x80opaque".to_vec(),
        },
    );
    let r = chat(&server, &json!({"model": "m"}));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(r.body, b"\x8b\x02\x80opaque");
    assert_eq!(env.list_json()[1]["consecutive_failures"], 0);
}
