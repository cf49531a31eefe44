//! Helpers shared by the integration tests: run the real binary on a
//! temporary store.
#![allow(dead_code)]

pub mod fake_openrouter;
pub mod redis;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_orproxy");

/// A realistic-looking key, unique per `n`.
pub fn key(n: usize) -> String {
    format!("sk-or-v1-{n:064x}")
}

/// A temporary directory with a store path inside it.
pub struct Env {
    pub dir: tempfile::TempDir,
    /// The file store's path (unused with a Redis store).
    pub store: PathBuf,
    /// What `--store` is given: the path, or a Redis URL.
    pub store_arg: std::ffi::OsString,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("data").join("keys.json");
        let store_arg = store.clone().into_os_string();
        Self {
            dir,
            store,
            store_arg,
        }
    }

    /// An environment whose commands use the Redis store at `url`.
    pub fn with_store(url: &str) -> Self {
        let mut env = Self::new();
        env.store_arg = url.into();
        env
    }

    /// `orproxy --store STORE args...` with a clean environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--store").arg(&self.store_arg).args(args);
        clean_env(&mut cmd, self.dir.path());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd(args).stdin(Stdio::null()).output().unwrap())
    }

    pub fn run_stdin(&self, args: &[&str], input: &str) -> Run {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        Run::from(child.wait_with_output().unwrap())
    }

    /// `keys add --no-verify --key K` for each key.
    pub fn add_keys(&self, keys: &[String]) {
        let mut args = vec!["keys", "add", "--no-verify"];
        for k in keys {
            args.push("--key");
            args.push(k);
        }
        self.run(&args).success();
    }

    /// `keys add --key K --upstream UPSTREAM`: added after OpenRouter's
    /// `GET /key` (the fake's) vouched for it.
    pub fn add_verified(&self, key: &str, upstream: &str) {
        self.run(&["keys", "add", "--key", key, "--upstream", upstream])
            .success();
    }

    pub fn list_json(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["keys", "list", "--json"]).success();
        serde_json::from_str::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    pub fn store_json(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&self.store).unwrap()).unwrap()
    }

    pub fn write_store(&self, value: &serde_json::Value) {
        std::fs::create_dir_all(self.store.parent().unwrap()).unwrap();
        std::fs::write(&self.store, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    }
}

/// Remove variables that would change the binary's behaviour.
pub fn clean_env(cmd: &mut Command, home: &Path) {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().to_string();
        if name.starts_with("ORPROXY_")
            || name.starts_with("OPENROUTER_")
            || ["NO_COLOR", "PORT", "RUST_LOG", "HTTP_REFERER", "SITE_NAME"]
                .contains(&name.as_str())
        {
            cmd.env_remove(name);
        }
    }
    cmd.env("HOME", home)
        .env("XDG_DATA_HOME", home.join("xdg-data"))
        .env("XDG_STATE_HOME", home.join("xdg-state"))
        // Nothing in the tests may reach the real OpenRouter.
        .env("ORPROXY_UPSTREAM", "http://127.0.0.1:9/api/v1");
}

/// A finished command.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    #[track_caller]
    pub fn success(self) -> Self {
        assert_eq!(self.code, Some(0), "command failed: {self:#?}");
        self
    }

    #[track_caller]
    pub fn failure(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "unexpected exit: {self:#?}");
        self
    }

    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// A running `orproxy serve`, killed on drop.
pub struct Server {
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub stdout_first_line: String,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
    /// Everything on stdout after the first line.
    pub stdout: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Env {
    /// Start `orproxy serve --port 0 --upstream UPSTREAM ARGS...` and wait for
    /// its startup line, which names the real address.
    pub fn serve(&self, upstream: &str, args: &[&str]) -> Server {
        let mut cmd = self.cmd(&["serve", "--port", "0", "--upstream", upstream]);
        cmd.args(args);
        self.serve_cmd(cmd)
    }

    pub fn serve_cmd(&self, mut cmd: Command) -> Server {
        use std::io::BufRead;
        cmd.current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log2.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let rest = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let rest2 = rest.clone();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            // Keep draining so the server never blocks on a full pipe.
            for line in lines {
                let Ok(line) = line else { break };
                rest2.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let first = match rx.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("orproxy serve did not start: {}", log.lock().unwrap());
            }
        };
        let addr = first
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http://"))
            .and_then(|w| w.strip_suffix("/v1"))
            .unwrap_or_else(|| panic!("no address in startup line {first:?}"))
            .to_owned();
        Server {
            child,
            base: format!("http://{addr}"),
            stdout_first_line: first,
            stderr: log,
            stdout: rest,
        }
    }
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Send a signal (by name, e.g. "TERM") and wait for the exit status.
    pub fn signal_and_wait(&mut self, signal: &str) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        self.wait_exit()
    }

    /// Wait for the process to exit on its own.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "server did not exit");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `cond` every 20 ms until it holds; panic with `what` after `timeout`.
#[track_caller]
pub fn wait_until(what: &str, timeout: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A plain HTTP response as a test sees it.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// An OpenAI-shaped error: `{"error": {"message", "type", "code"}}`.
    #[track_caller]
    pub fn assert_openai_error(&self, status: u16) -> serde_json::Value {
        assert_eq!(self.status, status, "{}", self.text());
        let v = self.json();
        let e = &v["error"];
        assert!(e["message"].is_string(), "{v}");
        assert!(e["type"].is_string(), "{v}");
        assert!(e.get("code").is_some(), "{v}");
        assert_eq!(self.header("content-type"), Some("application/json"));
        v
    }
}

/// A blocking HTTP/1.1 client that never treats a status as an error.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(60)))
        .build()
        .into()
}

/// Send a request; `headers` are added as given.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Resp {
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (n, v) in headers {
        builder = builder.header(*n, *v);
    }
    let agent = agent();
    let response = match body {
        Some(b) => agent.run(builder.body(b.to_vec()).unwrap()),
        None => agent.run(builder.body(()).unwrap()),
    }
    .unwrap_or_else(|e| panic!("{method} {url} failed: {e}"));
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let mut body = Vec::new();
    use std::io::Read;
    response
        .into_body()
        .into_reader()
        .read_to_end(&mut body)
        .unwrap();
    Resp {
        status,
        headers,
        body,
    }
}

/// POST a JSON chat request with the usual "dummy-key" bearer.
pub fn chat(server: &Server, body: &serde_json::Value) -> Resp {
    request(
        "POST",
        &server.url("/v1/chat/completions"),
        &[
            ("authorization", "Bearer dummy-key"),
            ("content-type", "application/json"),
        ],
        Some(body.to_string().as_bytes()),
    )
}

/// Milliseconds since the Unix epoch, `secs` from now.
pub fn reset_ms_in(secs: i64) -> u64 {
    u64::try_from((chrono::Utc::now() + chrono::TimeDelta::seconds(secs)).timestamp_millis())
        .unwrap()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The id orproxy gives a key.
pub fn key_id(key: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(key.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect::<String>()[..8].to_owned()
}

/// A store with keys `key(1)..=key(n)` (unverified), the fake OpenRouter,
/// and `orproxy serve ARGS...` in front of it.
pub fn setup(keys: usize, args: &[&str]) -> (Env, fake_openrouter::FakeOpenRouter, Server) {
    let env = Env::new();
    let fake = fake_openrouter::FakeOpenRouter::start();
    env.add_keys(&(1..=keys).map(key).collect::<Vec<_>>());
    let server = env.serve(&fake.base_url(), args);
    (env, fake, server)
}

/// Open a raw connection to `server` and send a chat request with `body`,
/// for tests that control the socket (disconnects).
pub fn raw_chat_request(server: &Server, body: &serde_json::Value) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let body = body.to_string();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

/// `data:` payloads of an SSE body, in order.
pub fn data_events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:").map(str::trim_start))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}
