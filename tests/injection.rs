//! Log and terminal injection: text from clients and from the upstream
//! (model names, paths, headers, error messages, key labels, OpenRouter's
//! key label and account) carrying terminal escape sequences, carriage
//! returns, newlines with a forged log line, C1 controls and bidi
//! overrides. None of it may reach the console, a log file or a `keys`
//! command's output raw, and no forged line may appear; fields are capped so
//! that one request adds a few KiB to the logs at most.

use crate::common::fake_openrouter::{FakeOpenRouter, KeyInfoReply, Reply, default_key_info};
use crate::common::{BIN, Env, clean_env, key, request, wait_until};
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// A forged log line (its own timestamp, level and target) behind a clear
/// screen, a window-title OSC, a CR/LF, a C1 CSI, NEL, a bidi override and a
/// line separator.
const FORGED: &str = "2026-01-01T00:00:00.000+00:00 ERROR requests FORGED";
fn evil() -> String {
    format!(
        "\u{1b}[2J\u{1b}]0;pwned\u{7}\r\n{FORGED}\u{9b}31m\u{85}\u{202e}drow\u{2028}\r\nFORGED too"
    )
}

/// Characters that must never be printed raw: every C0 control but the
/// newline that ends a line, DEL, C1, bidi controls, line separators.
fn is_raw_control(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[track_caller]
fn assert_clean(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    if let Some((i, c)) = text.char_indices().find(|(_, c)| is_raw_control(*c)) {
        let from = text[..i].char_indices().rev().nth(80).map_or(0, |(j, _)| j);
        panic!("{what}: raw {c:?} at byte {i}, after {:?}", &text[from..i]);
    }
    for line in text.lines() {
        assert!(
            !line.starts_with("2026-01-01T00:00:00") && !line.starts_with("FORGED"),
            "{what}: a forged line: {line:?}"
        );
    }
}

/// `orproxy serve` with its stdout and stderr written to files, byte for
/// byte (the common `Server` reads them as lines, which would hide a CR).
struct RawServer {
    child: Child,
    base: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl RawServer {
    fn start(env: &Env, upstream: &str, args: &[&str]) -> Self {
        let stdout = env.dir.path().join("serve.stdout");
        let stderr = env.dir.path().join("serve.stderr");
        let mut cmd = env.cmd(&["serve", "--port", "0", "--upstream", upstream]);
        cmd.args(args)
            .current_dir(env.dir.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        let child = cmd.spawn().unwrap();
        let mut base = String::new();
        wait_until("the startup line", T, || {
            let text = std::fs::read_to_string(&stdout).unwrap_or_default();
            base = text
                .split_whitespace()
                .find_map(|w| w.strip_prefix("http://"))
                .and_then(|w| w.strip_suffix("/v1"))
                .map(|a| format!("http://{a}"))
                .unwrap_or_default();
            !base.is_empty()
        });
        Self {
            child,
            base,
            stdout,
            stderr,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// Stop gracefully (the logs are flushed) and wait.
    fn stop(&mut self) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}");
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw request on its own connection; whatever comes back.
fn raw(addr: &str, head: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(head).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

fn chat_body(model: &str, stream: bool) -> Vec<u8> {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
        .into_bytes()
}

/// `keys list --watch` piped: its first whole frame, then SIGTERM.
fn watch_frame(env: &Env) -> Vec<u8> {
    let mut cmd = Command::new(BIN);
    cmd.arg("--store")
        .arg(&env.store)
        .args(["keys", "list", "--watch"]);
    clean_env(&mut cmd, env.dir.path());
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // The table's last line starts with its bottom-left corner.
    while !String::from_utf8_lossy(&got).contains('└') {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "watch ended before a frame");
        got.extend_from_slice(&buf[..n]);
    }
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let _ = out.read_to_end(&mut got);
    assert!(child.wait().unwrap().success());
    got
}

fn log_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn nothing_from_outside_reaches_a_log_or_a_terminal_raw() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    let evil = evil();
    let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut keep = |what: &str, run: crate::common::Run| {
        outputs.push((format!("{what} stdout"), run.stdout.clone().into_bytes()));
        outputs.push((format!("{what} stderr"), run.stderr.clone().into_bytes()));
        run
    };

    // A label of the user's; OpenRouter's label and account for a verified
    // key; a rejection whose message carries the same.
    keep(
        "keys add --label",
        env.run(&[
            "keys",
            "add",
            "--no-verify",
            "--key",
            &key(1),
            "--label",
            &evil,
        ]),
    )
    .success();
    let mut info = default_key_info(&key(2));
    info["label"] = json!(evil);
    info["creator_user_id"] = json!(evil);
    fake.set_key_info(&key(2), KeyInfoReply::Ok(info));
    let added = keep(
        "keys add (verified)",
        env.run(&[
            "keys",
            "add",
            "--key",
            &key(2),
            "--upstream",
            &fake.base_url(),
        ]),
    )
    .success();
    assert!(added.stdout.contains("label \"\\x1b[2J"), "{added:?}");
    fake.set_key_info(
        &key(3),
        KeyInfoReply::Custom(Reply::json(
            401,
            &json!({"error": {"message": evil, "code": 401}}),
        )),
    );
    keep(
        "keys add (rejected)",
        env.run(&[
            "keys",
            "add",
            "--key",
            &key(3),
            "--upstream",
            &fake.base_url(),
        ]),
    )
    .failure(1);

    let dir = env.dir.path().join("logs");
    let mut server = RawServer::start(
        &env,
        &fake.base_url(),
        &[
            "--log-dir",
            dir.to_str().unwrap(),
            "--admin-token",
            "admin-tok",
        ],
    );
    // A label through the admin API.
    let r = request(
        "POST",
        &server.url("/admin/keys"),
        &[("authorization", "Bearer admin-tok")],
        Some(
            json!({"key": key(4), "label": evil, "verify": false})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.text());

    // A model name, relayed with an upstream error message, both hostile.
    let upstream_error = json!({"error": {"message": evil, "code": 400}});
    fake.set_fallback(Reply::json(400, &upstream_error));
    let headers = [
        ("authorization", "Bearer dummy-key"),
        ("content-type", "application/json"),
    ];
    let chat = server.url("/v1/chat/completions");
    let r = request("POST", &chat, &headers, Some(&chat_body(&evil, false)));
    assert_eq!(r.status, 400, "{}", r.text());

    // Huge fields: a model, an upstream message, a path.
    let huge_error = json!({"error": {"message": "e".repeat(200_000), "code": 400}});
    fake.set_fallback(Reply::json(400, &huge_error));
    let r = request(
        "POST",
        &chat,
        &[("x-request-id", "huge-one"), headers[0], headers[1]],
        Some(&chat_body(&"m".repeat(200_000), false)),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let long_path = format!("/v1/{}", "p".repeat(20_000));
    let r = request(
        "GET",
        &server.url(&long_path),
        &[("x-request-id", "huge-path")],
        None,
    );
    assert!(r.status >= 400, "{}", r.text());

    // A stream whose upstream fails mid-way with a hostile message.
    fake.set_fallback(Reply::sse_error_after(&["Hello"], &evil));
    let r = request("POST", &chat, &headers, Some(&chat_body(&evil, true)));
    assert_eq!(r.status, 200);

    // Paths and headers a client writes itself.
    fake.set_fallback(Reply::chat_ok());
    for head in [
        &b"GET /v1/%1b%5b2J%0d%0a2026-01-01T00:00:00.000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"[..],
        b"GET /%1b]0;x%07%0d%0aFORGED HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /v1/\xc2\x9b31m\xe2\x80\xae HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Request-Id: \xc2\x9b2J\xe2\x80\xae\r\n\
          User-Agent: \xc2\x9b2J\r\nX-Title: \xe2\x80\xae\r\nConnection: close\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Request-Id: a\x1bb\r\nConnection: close\r\n\r\n",
    ] {
        assert!(!raw(server.addr(), head).is_empty());
    }

    // Last: OpenRouter rejects the keys with a hostile message, which
    // becomes their disabled reason in the keys log and in `keys list`.
    for k in [key(1), key(2), key(4)] {
        fake.push(
            &k,
            Reply::json(401, &json!({"error": {"message": evil, "code": 401}})),
        );
    }
    let r = request("POST", &chat, &headers, Some(&chat_body("m", false)));
    assert!(r.status >= 400, "{}", r.text());

    // The keys commands show the labels, reasons and accounts, escaped.
    wait_until("a disabled key in the store", T, || {
        env.run(&["keys", "list", "--json"])
            .stdout
            .contains("disabled")
    });
    let list = keep("keys list", env.run(&["keys", "list"])).success();
    assert!(list.stdout.contains("\\x1b[2J"), "{list:?}");
    keep("keys list --json", env.run(&["keys", "list", "--json"])).success();
    keep(
        "keys check",
        env.run(&["keys", "check", "--upstream", &fake.base_url()]),
    );
    keep(
        "keys check --json",
        env.run(&["keys", "check", "--json", "--upstream", &fake.base_url()]),
    );
    outputs.push(("keys list --watch".into(), watch_frame(&env)));

    server.stop();
    let console = std::fs::read(&server.stderr).unwrap();
    outputs.push((
        "serve stdout".into(),
        std::fs::read(&server.stdout).unwrap(),
    ));
    outputs.push(("serve stderr".into(), console.clone()));
    let files = log_files(&dir);
    assert!(files.len() >= 3, "{files:?}");
    outputs.extend(files.iter().cloned());
    for (what, bytes) in &outputs {
        assert_clean(what, bytes);
    }

    // Escaped, not dropped: the console shows what the client sent.
    let console = String::from_utf8_lossy(&console);
    assert!(
        console.contains("model=\\x1b[2J\\x1b]0;pwned\\x07\\r\\n2026"),
        "{console}"
    );
    assert!(console.contains("\\u{202e}drow"), "{console}");
    // One request adds a few KiB at most, however large its fields.
    for line in console.lines() {
        assert!(
            line.len() < 6 * 1024,
            "a console line of {} bytes",
            line.len()
        );
    }
    let (_, requests) = files
        .iter()
        .find(|(name, _)| name.contains("requests-"))
        .unwrap();
    for line in String::from_utf8_lossy(requests).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            line.len() < 4 * 1024,
            "a request line of {} bytes",
            line.len()
        );
        if v["id"] == "huge-one" {
            assert_eq!(v["model"].as_str().unwrap().chars().count(), 201, "{v}");
            assert_eq!(v["error"].as_str().unwrap().chars().count(), 501, "{v}");
        }
        if v["id"] == "huge-path" {
            assert_eq!(v["path"].as_str().unwrap().chars().count(), 1001, "{v}");
        }
    }
}
