//! The daily log files: names, retention, the request log's JSON lines, the
//! key and error logs, and message contents only with --log-bodies.

use crate::common::fake_openrouter::{FakeOpenRouter, Reply};
use crate::common::{Env, Server, chat, key, key_id, request, reset_ms_in, wait_until};
use chrono::{Local, NaiveDate, TimeDelta};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

fn today() -> NaiveDate {
    Local::now().date_naive()
}

fn dated(dir: &Path, kind: &str, days_ago: i64) -> PathBuf {
    let date = today() - TimeDelta::days(days_ago);
    dir.join(format!("{kind}-{}.log", date.format("%Y-%m-%d")))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The request log's lines, parsed.
fn request_lines(dir: &Path) -> Vec<Value> {
    read(&dated(dir, "requests", 0))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn wait_for_line(dir: &Path, id: &str) -> Value {
    let mut found = None;
    wait_until("the request's log line", T, || {
        found = request_lines(dir).into_iter().find(|l| l["id"] == id);
        found.is_some()
    });
    found.unwrap()
}

fn serve_logging(env: &Env, fake: &FakeOpenRouter, dir: &Path, args: &[&str]) -> Server {
    let mut all = vec!["--log-dir", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    env.serve(&fake.base_url(), &all)
}

#[test]
fn daily_files_are_named_by_local_date_and_old_ones_are_deleted_at_start() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    let dir = env.dir.path().join("logs");
    std::fs::create_dir_all(&dir).unwrap();
    let too_old = [
        dated(&dir, "requests", 15),
        dated(&dir, "errors", 30),
        dated(&dir, "keys", 400),
    ];
    let kept = [
        dated(&dir, "requests", 14),
        dated(&dir, "errors", 1),
        dir.join("notes-2000-01-01.log"),
        dir.join("requests-latest.log"),
        dir.join("keys-2000-01-01.log.bak"),
    ];
    for path in too_old.iter().chain(&kept) {
        std::fs::write(path, "old\n").unwrap();
    }
    env.add_keys(&[key(1)]);
    let server = serve_logging(&env, &fake, &dir, &["--log-retention-days", "14"]);
    assert!(server.stdout_first_line.contains(dir.to_str().unwrap()));
    for path in &too_old {
        assert!(!path.exists(), "{} was not deleted", path.display());
    }
    for path in &kept {
        assert!(path.exists(), "{} was deleted", path.display());
    }
    let resp = chat(&server, &json!({"model": "m", "messages": []}));
    assert_eq!(resp.status, 200);
    let id = resp.header("x-request-id").unwrap().to_owned();
    wait_for_line(&dir, &id);
    // Today's requests file exists under exactly that name, private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dated(&dir, "requests", 0))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn retention_comes_from_log_retention_days_and_logs_default_to_the_state_dir() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    // The default: $XDG_STATE_HOME/orproxy/logs (the harness sets XDG_STATE_HOME).
    let dir = env
        .dir
        .path()
        .join("xdg-state")
        .join("orproxy")
        .join("logs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dated(&dir, "keys", 4), "").unwrap();
    std::fs::write(dated(&dir, "keys", 3), "").unwrap();
    let mut cmd = env.cmd(&["serve", "--port", "0", "--upstream", &fake.base_url()]);
    cmd.env("LOG_RETENTION_DAYS", "3");
    let _server = env.serve_cmd(cmd);
    assert!(!dated(&dir, "keys", 4).exists());
    assert!(dated(&dir, "keys", 3).exists());
    use std::os::unix::fs::PermissionsExt;
    let fresh = env.dir.path().join("fresh-logs");
    let _other = serve_logging(&env, &fake, &fresh, &[]);
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn each_request_is_one_json_line_with_attempts_timing_bytes_and_usage() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    let dir = env.dir.path().join("logs");
    env.add_keys(&[key(1), key(2)]);
    let server = serve_logging(&env, &fake, &dir, &[]);
    let (id1, id2) = (key_id(&key(1)), key_id(&key(2)));

    // A rate limit on the first key, then success on the second; the
    // client's request ID is kept and echoed.
    fake.push(&key(1), Reply::rate_limit_per_min(reset_ms_in(300)));
    let body =
        json!({"model": "m/x", "messages": [{"role": "user", "content": "very private words"}]});
    let resp = request(
        "POST",
        &server.url("/v1/chat/completions"),
        &[
            ("authorization", "Bearer dummy-key"),
            ("content-type", "application/json"),
            ("x-request-id", "client-req-42"),
        ],
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-request-id"), Some("client-req-42"));
    let line = wait_for_line(&dir, "client-req-42");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["path"], "/v1/chat/completions");
    assert_eq!(line["model"], "m/x");
    assert_eq!(line["stream"], false);
    assert_eq!(line["status"], 200);
    assert_eq!(
        line["attempts"],
        json!([
            {"key": id1, "outcome": "free-models-per-min", "status": 429, "ms": line["attempts"][0]["ms"]},
            {"key": id2, "outcome": "ok", "status": 200, "ms": line["attempts"][1]["ms"]},
        ])
    );
    assert_eq!(line["bytes"], resp.body.len());
    assert!(line["ttfb_ms"].as_u64().unwrap() <= line["total_ms"].as_u64().unwrap());
    assert_eq!(line["usage"]["prompt_tokens"], 12);
    assert!(line["time"].as_str().unwrap().contains('T'));
    assert!(line.get("request_body").is_none());

    // A stream: usage from its last usage event; a generated request ID.
    fake.push(&key(2), Reply::sse_chat(&["Hello", "there"]));
    let resp = chat(
        &server,
        &json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "very private words"}]}),
    );
    assert_eq!(resp.status, 200);
    let rid = resp.header("x-request-id").unwrap().to_owned();
    assert_eq!(rid.len(), 32, "{rid}");
    let line = wait_for_line(&dir, &rid);
    assert_eq!(line["stream"], true);
    assert_eq!(line["bytes"], resp.body.len());
    assert!(line["usage"].is_object(), "{line}");
    assert_eq!(line["attempts"][0]["outcome"], "ok");

    // Message contents are not logged by default.
    assert!(!read(&dated(&dir, "requests", 0)).contains("very private words"));
    assert!(!server.log().contains("very private words"));

    // The console has one readable line per request.
    let console = server.log();
    let console_line = console
        .lines()
        .find(|l| l.contains("client-req-42"))
        .unwrap_or_else(|| panic!("no console line: {console}"));
    assert!(
        console_line.contains("POST /v1/chat/completions model=m/x"),
        "{console_line}"
    );
    assert!(console_line.contains("-> 200"), "{console_line}");
}

#[test]
fn key_events_and_errors_go_to_their_own_files() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    let dir = env.dir.path().join("logs");
    env.add_keys(&[key(1), key(2)]);
    let server = serve_logging(
        &env,
        &fake,
        &dir,
        &["--max-failures", "1", "--max-attempts", "2"],
    );
    let (id1, id2) = (key_id(&key(1)), key_id(&key(2)));
    fake.push(&key(1), Reply::rate_limit_per_min(reset_ms_in(300)));
    fake.push(&key(2), Reply::unauthorized());
    let resp = chat(&server, &json!({"model": "m", "messages": []}));
    assert!(resp.status >= 400, "{}", resp.text());
    let rid = resp.header("x-request-id").unwrap().to_owned();
    env.add_keys(&[key(3)]);
    let keys_log = dated(&dir, "keys", 0);
    wait_until("the added key in the keys log", T, || {
        read(&keys_log).contains(&format!("key {} added", key_id(&key(3))))
    });
    let keys = read(&keys_log);
    assert!(keys.contains(&format!("key {id1} cooling until")), "{keys}");
    assert!(keys.contains("free-models-per-min"), "{keys}");
    assert!(keys.contains(&format!("key {id2} disabled: 401")), "{keys}");
    env.run(&["keys", "reactivate", &id2]).success();
    env.run(&["keys", "remove", &id1]).success();
    wait_until("reactivation and removal in the keys log", T, || {
        let k = read(&keys_log);
        k.contains(&format!("key {id2} reactivated")) && k.contains(&format!("key {id1} removed"))
    });

    // The failed request is in the errors file, with where and its ID.
    let errors = read(&dated(&dir, "errors", 0));
    assert!(errors.contains(&rid), "{errors}");
    assert!(errors.contains("WARN  requests:"), "{errors}");
    assert!(errors.contains(&format!("key {id2} disabled")), "{errors}");
    // Successes are not errors.
    fake.set_default(&key(3), Reply::chat_ok());
    let ok = chat(&server, &json!({"model": "m", "messages": []}));
    assert_eq!(ok.status, 200);
    let ok_id = ok.header("x-request-id").unwrap().to_owned();
    wait_for_line(&dir, &ok_id);
    assert!(!read(&dated(&dir, "errors", 0)).contains(&ok_id));
}

#[test]
fn log_bodies_adds_message_contents() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    let dir = env.dir.path().join("logs");
    env.add_keys(&[key(1)]);
    let server = serve_logging(&env, &fake, &dir, &["--log-bodies"]);
    let resp = chat(
        &server,
        &json!({"model": "m", "messages": [{"role": "user", "content": "private but wanted"}]}),
    );
    let line = wait_for_line(&dir, resp.header("x-request-id").unwrap());
    assert_eq!(
        line["request_body"]["messages"][0]["content"],
        "private but wanted"
    );
    assert!(line["response_body"]["choices"].is_array(), "{line}");
    fake.push(&key(1), Reply::sse_chat(&["Hello ", "world"]));
    let resp = chat(
        &server,
        &json!({"model": "m", "stream": true, "messages": []}),
    );
    let line = wait_for_line(&dir, resp.header("x-request-id").unwrap());
    assert_eq!(line["response_text"], "Hello world", "{line}");
}
