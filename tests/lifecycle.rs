//! Starting and stopping `orproxy serve`: configuration sources, keys from
//! the environment, graceful shutdown with a final state write.

use crate::common::fake_openrouter::{FakeOpenRouter, Reply};
use crate::common::{Env, Run, chat, free_port, key, wait_until};
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

#[test]
fn startup_line_names_address_store_upstream_and_key_counts() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    env.add_keys(&[key(1), key(2)]);
    let server = env.serve(&fake.base_url(), &[]);
    let line = &server.stdout_first_line;
    assert!(
        line.contains(&format!("http://{}/v1", server.addr())),
        "{line}"
    );
    assert!(line.contains(env.store.to_str().unwrap()), "{line}");
    assert!(line.contains(&fake.base_url()), "{line}");
    assert!(line.contains("(writable)"), "checked at start: {line}");
    assert!(
        line.contains("2 active, 0 free held, 0 cooling, 0 disabled"),
        "{line}"
    );
}

#[test]
fn openrouter_api_keys_are_added_at_start_once() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    for _ in 0..2 {
        let mut cmd = env.cmd(&["serve", "--port", "0", "--upstream", &fake.base_url()]);
        cmd.env("OPENROUTER_API_KEYS", format!("{}, {} ,,", key(1), key(2)));
        let server = env.serve_cmd(cmd);
        assert!(
            server.stdout_first_line.contains("2 active"),
            "{}",
            server.stdout_first_line
        );
        assert!(!server.log().contains(&key(1)), "a full key in the log");
        assert_eq!(chat(&server, &json!({"model": "m"})).status, 200);
    }
    assert_eq!(env.list_json().len(), 2);
}

#[test]
fn flag_beats_environment_beats_dotenv_beats_default() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    env.add_keys(&[key(1)]);
    let dead = "http://127.0.0.1:9/api/v1";
    let port = free_port();
    std::fs::write(
        env.dir.path().join(".env"),
        format!(
            "# orproxy settings\nORPROXY_UPSTREAM={}\nPORT={port}\nORPROXY_MAX_ATTEMPTS=1\n",
            fake.base_url()
        ),
    )
    .unwrap();

    // .env alone: its upstream and the legacy PORT are used.
    let mut cmd = env.cmd(&["serve"]);
    cmd.env_remove("ORPROXY_UPSTREAM");
    let server = env.serve_cmd(cmd);
    assert_eq!(server.addr(), format!("127.0.0.1:{port}"));
    assert_eq!(chat(&server, &json!({"model": "m"})).status, 200);
    drop(server);

    // The environment beats .env.
    let mut cmd = env.cmd(&["serve", "--port", "0"]);
    cmd.env("ORPROXY_UPSTREAM", dead);
    let server = env.serve_cmd(cmd);
    assert_eq!(chat(&server, &json!({"model": "m"})).status, 502);
    drop(server);

    // A flag beats the environment.
    let mut cmd = env.cmd(&["serve", "--port", "0", "--upstream", &fake.base_url()]);
    cmd.env("ORPROXY_UPSTREAM", dead);
    let server = env.serve_cmd(cmd);
    assert_eq!(chat(&server, &json!({"model": "m"})).status, 200);
}

#[test]
fn bad_settings_are_refused_with_a_usage_error_or_message() {
    let env = Env::new();
    // A bad flag value is a usage error like any other: exit 2, naming it.
    for (flag, value) in [
        ("--max-body", "lots"),
        ("--max-body", "5XB"),
        ("--upstream", "ftp://x"),
    ] {
        let out = env.run(&["serve", flag, value]);
        assert_eq!(out.code, Some(2), "{out:?}");
        assert!(
            out.stderr.contains(flag) && out.stderr.contains(value),
            "{out:?}"
        );
    }
    let out = env.run(&["keys", "check", "--upstream", "openrouter.ai"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    env.run(&["serve", "--port", "notaport"]).failure(2);
    env.run(&["serve", "--max-attempts", "0"]).failure(2);
}

#[test]
fn a_corrupt_store_stops_serve_from_starting_and_is_left_alone() {
    let env = Env::new();
    std::fs::create_dir_all(env.store.parent().unwrap()).unwrap();
    std::fs::write(&env.store, b"{\"version\": 1, \"keys\": [}").unwrap();
    let out = env.run(&["serve", "--port", "0"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("line 1, column"), "{out:?}");
    assert_eq!(
        std::fs::read(&env.store).unwrap(),
        b"{\"version\": 1, \"keys\": [}"
    );
}

#[test]
fn sigterm_lets_in_flight_requests_finish_then_writes_state_and_exits_0() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    env.add_keys(&[key(1)]);
    let mut server = env.serve(&fake.base_url(), &[]);
    fake.push(
        &key(1),
        Reply::chat_ok().delayed(Duration::from_millis(1500)),
    );
    let s = &server;
    let response = std::thread::scope(|scope| {
        let pending = scope.spawn(|| chat(s, &json!({"model": "m"})));
        fake.wait_requests(1, T);
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &s.child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        pending.join().unwrap()
    });
    assert_eq!(
        response.status,
        200,
        "the in-flight request finished: {}",
        response.text()
    );
    assert_eq!(server.wait_exit().code(), Some(0));
    let k = &env.list_json()[0];
    assert_eq!(k["requests_total"], 1, "final state written: {k}");
    assert!(k["last_used"].is_string());
}

#[test]
fn sigint_stops_gracefully_too() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    env.add_keys(&[key(1)]);
    let mut server = env.serve(&fake.base_url(), &[]);
    assert_eq!(chat(&server, &json!({"model": "m"})).status, 200);
    assert_eq!(server.signal_and_wait("INT").code(), Some(0));
    wait_until("state written", T, || {
        env.list_json()[0]["requests_total"] == 1
    });
}

#[test]
fn a_closed_stdout_does_not_stop_the_server() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    env.add_keys(&[key(1)]);
    let port = free_port();
    let mut child = env
        .cmd(&[
            "serve",
            "--port",
            &port.to_string(),
            "--upstream",
            &fake.base_url(),
        ])
        .current_dir(env.dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The reading end goes away before the startup lines are written.
    drop(child.stdout.take());
    let url = format!("http://127.0.0.1:{port}/health");
    let up = || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && crate::common::request("GET", &url, &[], None).status == 200
    };
    wait_until("the server to serve", T, || {
        assert!(child.try_wait().unwrap().is_none(), "orproxy exited");
        up()
    });
    let _ = child.kill();
    let _ = child.wait();
}

/// Run `serve ARGS...` in `env`, which must stop on its own (within 30 s).
fn serve_that_stops(env: &Env, args: &[&str]) -> Run {
    let mut full = vec!["serve", "--port", "0"];
    full.extend_from_slice(args);
    let mut child = env
        .cmd(&full)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("orproxy serve {args:?} kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Run::from(child.wait_with_output().unwrap())
}

#[test]
fn a_port_in_use_is_said_once_with_its_os_error() {
    let env = Env::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut child = env.cmd(&["serve", "--port", &port]);
    let out = Run::from(child.stdin(std::process::Stdio::null()).output().unwrap());
    assert_eq!(out.code, Some(1), "{out:?}");
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains(&port),
        "{out:?}"
    );
    assert_eq!(last.matches("os error").count(), 1, "said once: {last}");
}

#[test]
fn serve_says_at_once_when_it_cannot_write_its_store_or_its_logs() {
    // A store whose directory cannot be made: a file stands where it goes.
    let env = Env::new();
    let blocker = env.dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let store = blocker.join("keys.json");
    let out = serve_that_stops(&env, &["--store", store.to_str().unwrap()]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("cannot be written") && out.stderr.contains("not-a-dir"),
        "{out:?}"
    );
    assert_eq!(out.stderr.matches("os error").count(), 1, "{out:?}");

    // A store directory that takes no new file.
    let env = Env::new();
    env.add_keys(&[key(1)]);
    let data = env.store.parent().unwrap().to_path_buf();
    let read_only = crate::store::ReadOnlyDir::make(&data);
    let out = serve_that_stops(&env, &[]);
    drop(read_only);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("cannot write in the store directory"),
        "{out:?}"
    );

    // A log directory that takes no new file.
    let env = Env::new();
    let logs = env.dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let read_only = crate::store::ReadOnlyDir::make(&logs);
    let out = serve_that_stops(&env, &["--log-dir", logs.to_str().unwrap()]);
    drop(read_only);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("cannot use the log directory"),
        "{out:?}"
    );
}
