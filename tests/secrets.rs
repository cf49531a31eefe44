//! No full key anywhere: a full scenario (keys from the CLI, the environment
//! and the admin API; successes, rate limits, a 401, streams, errors), then
//! every log file, all console output and every response body is searched
//! for every key.

use crate::common::fake_openrouter::{FakeOpenRouter, KeyInfoReply, Reply};
use crate::common::{Env, Resp, key, key_id, request, reset_ms_in, wait_until};
use serde_json::json;
use std::time::Duration;

const ADMIN: &str = "admin-token-for-the-scan-0123456789";
const CLIENT: &str = "client-token-for-the-scan";

#[test]
fn no_full_key_in_logs_console_or_responses_after_a_full_run() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    let logs = env.dir.path().join("logs");
    let keys: Vec<String> = (1..=6).map(key).collect();
    let mut outputs: Vec<String> = Vec::new();
    let mut bodies: Vec<Resp> = Vec::new();

    // Keys from the CLI (verified against the fake) and from the environment.
    let cli = env.run(&[
        "keys",
        "add",
        "--upstream",
        &fake.base_url(),
        "--key",
        &keys[0],
        "--key",
        &keys[1],
    ]);
    outputs.push(cli.all());
    let mut cmd = env.cmd(&[
        "serve",
        "--port",
        "0",
        "--upstream",
        &fake.base_url(),
        "--log-dir",
        logs.to_str().unwrap(),
        // The strictest case: bodies are logged, so keys inside them must be masked.
        "--log-bodies",
        "--max-attempts",
        "3",
    ]);
    cmd.env("OPENROUTER_API_KEYS", format!("{},{}", keys[2], keys[3]))
        .env("ORPROXY_ADMIN_TOKEN", ADMIN)
        .env("ORPROXY_CLIENT_TOKENS", CLIENT)
        .env("RUST_LOG", "debug");
    let mut server = env.serve_cmd(cmd);
    let bearer = format!("Bearer {CLIENT}");
    let admin_bearer = format!("Bearer {ADMIN}");
    let post = |path: &str, body: &str| {
        request(
            "POST",
            &server.url(path),
            &[
                ("authorization", bearer.as_str()),
                ("content-type", "application/json"),
            ],
            Some(body.as_bytes()),
        )
    };
    let admin = |method: &str, path: &str, body: Option<String>| {
        request(
            method,
            &server.url(path),
            &[
                ("authorization", admin_bearer.as_str()),
                ("content-type", "application/json"),
            ],
            body.as_deref().map(str::as_bytes),
        )
    };

    // Keys from the admin API: one accepted, one OpenRouter rejects.
    bodies.push(admin(
        "POST",
        "/admin/keys",
        Some(json!({"key": keys[4]}).to_string()),
    ));
    fake.set_key_info(&keys[5], KeyInfoReply::Invalid);
    bodies.push(admin(
        "POST",
        "/admin/keys",
        Some(json!({"key": keys[5]}).to_string()),
    ));
    bodies.push(admin(
        "POST",
        "/admin/keys",
        Some(json!({"key": "x", "label": 1, "verify": keys[5]}).to_string()),
    ));

    // Traffic (the pool starts with the first key): a success, a rate limit
    // (retried on the second key), a 401 (the second key is disabled, the
    // third serves), a stream, a stream that fails midway; and messages,
    // paths and headers that carry keys.
    let chat = json!({"model": "m", "messages": [{"role": "user", "content": format!("my key is {}", keys[0])}]}).to_string();
    bodies.push(post("/v1/chat/completions", &chat));
    fake.push(&keys[0], Reply::rate_limit_per_min(reset_ms_in(60)));
    bodies.push(post("/v1/chat/completions", &chat));
    fake.push(&keys[1], Reply::unauthorized());
    bodies.push(post("/v1/chat/completions", &chat));
    fake.push(&keys[2], Reply::sse_chat(&["streamed", "words"]));
    bodies.push(post(
        "/v1/chat/completions",
        &json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": keys[1]}]})
            .to_string(),
    ));
    fake.push(
        &keys[2],
        Reply::sse_error_after(&["half"], "provider fell over"),
    );
    bodies.push(post(
        "/v1/chat/completions",
        &json!({"model": "m", "stream": true, "messages": []}).to_string(),
    ));
    bodies.push(post(
        "/v1/chat/completions",
        &format!("{{not json {}", keys[2]),
    ));
    bodies.push(request(
        "GET",
        &server.url(&format!("/v1/models/{}", keys[3])),
        &[("authorization", bearer.as_str())],
        None,
    ));
    bodies.push(request(
        "GET",
        &server.url(&format!("/nowhere/{}", keys[3])),
        &[("authorization", bearer.as_str())],
        None,
    ));
    bodies.push(request(
        "POST",
        &server.url("/v1/chat/completions"),
        &[("authorization", &format!("Bearer {}", keys[4]))],
        Some(chat.as_bytes()),
    ));
    bodies.push(admin("GET", "/admin/keys", None));
    let id1 = key_id(&keys[0]);
    bodies.push(admin(
        "POST",
        &format!("/admin/keys/{id1}/reactivate"),
        None,
    ));
    bodies.push(admin("DELETE", &format!("/admin/keys/{}", keys[1]), None));
    bodies.push(admin(
        "DELETE",
        &format!("/admin/keys/{}", key_id(&keys[1])),
        None,
    ));
    bodies.push(request("GET", &server.url("/health"), &[], None));
    bodies.push(request(
        "GET",
        &server.url("/metrics"),
        &[("authorization", bearer.as_str())],
        None,
    ));
    let list = env.run(&["keys", "list"]);
    outputs.push(list.all());
    outputs.push(env.run(&["keys", "list", "--json"]).all());

    // Every key event and request must have reached the files before the stop.
    wait_until("the key log", Duration::from_secs(10), || {
        std::fs::read_dir(&logs).is_ok_and(|d| d.count() >= 3)
    });
    let status = server.signal_and_wait("TERM");
    assert!(status.success());
    outputs.push(server.stdout_first_line.clone());
    outputs.push(server.stdout.lock().unwrap().clone());
    outputs.push(server.log());

    let mut files = Vec::new();
    for entry in std::fs::read_dir(&logs).unwrap() {
        let path = entry.unwrap().path();
        files.push((path.clone(), std::fs::read_to_string(&path).unwrap()));
    }
    let names: Vec<String> = files
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for kind in ["requests", "errors", "keys"] {
        assert!(
            names.iter().any(|n| n.starts_with(kind)),
            "no {kind} file in {names:?}"
        );
    }
    // The scenario really happened (so the scan means something).
    let requests_log = &files
        .iter()
        .find(|(p, _)| p.to_string_lossy().contains("requests-"))
        .unwrap()
        .1;
    assert!(
        requests_log.contains("sk-or-v1-…"),
        "masked keys from the bodies are expected"
    );
    assert!(requests_log.contains("free-models-per-min"));
    assert!(requests_log.contains("invalid-key"));
    let keys_log = &files
        .iter()
        .find(|(p, _)| p.to_string_lossy().contains("keys-"))
        .unwrap()
        .1;
    assert!(keys_log.contains("disabled: 401"), "{keys_log}");

    for k in &keys {
        for (path, text) in &files {
            assert!(
                !text.contains(k.as_str()),
                "a full key in {}:\n{text}",
                path.display()
            );
        }
        for text in &outputs {
            assert!(
                !text.contains(k.as_str()),
                "a full key in the output:\n{text}"
            );
        }
        for resp in &bodies {
            assert!(
                !resp.text().contains(k.as_str()),
                "a full key in a response: {}",
                resp.text()
            );
        }
    }
}
