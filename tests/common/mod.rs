//! Helpers shared by the integration tests: run the real binary on a
//! temporary store.
#![allow(dead_code)]

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
    pub store: PathBuf,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("data").join("keys.json");
        Self { dir, store }
    }

    /// `orproxy --store STORE args...` with a clean environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--store").arg(&self.store).args(args);
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
