//! `orproxy keys list --watch` through a real pseudo-terminal.

use crate::common::{BIN, Env, clean_env, key, key_id};
use serde_json::json;
use std::process::Command;

#[test]
fn watch_redraws_with_countdowns_and_restores_the_terminal_on_ctrl_c() {
    let env = Env::new();
    let now = chrono::Utc::now();
    let until = (now + chrono::TimeDelta::seconds(90)).to_rfc3339();
    env.write_store(&json!({
        "version": 1,
        "keys": [
            {"id": key_id(&key(1)), "key": key(1), "label": "fresh", "added_at": now.to_rfc3339(),
             "state": {}},
            {"id": key_id(&key(2)), "key": key(2), "label": "parked", "added_at": now.to_rfc3339(),
             "state": {"cooldown_until": until, "cooldown_reason": "free-models-per-min"}},
        ]
    }));
    let mut cmd = Command::new(BIN);
    cmd.arg("--store")
        .arg(&env.store)
        .args(["keys", "list", "--watch"]);
    clean_env(&mut cmd, env.dir.path());
    cmd.env("TERM", "xterm");
    let mut p = rexpect::session::spawn_command(cmd, Some(20_000)).unwrap();

    // The alternate screen and a hidden cursor, then the table.
    let first = p.exp_string("free-models-per-min").unwrap();
    assert!(first.contains("\u{1b}[?1049h"), "{first:?}");
    assert!(first.contains("\u{1b}[?25l"), "{first:?}");
    assert!(first.contains("Every 1s"), "{first:?}");
    // The countdown goes down as frames are redrawn.
    let (_, a) = p.exp_regex(r"in 1m \d+s").unwrap();
    let mut later = a.clone();
    for _ in 0..10 {
        let (_, b) = p.exp_regex(r"in 1m \d+s").unwrap();
        if b != a {
            later = b;
            break;
        }
    }
    assert_ne!(a, later, "the countdown never changed");
    let secs = |s: &str| {
        s.trim_start_matches("in 1m ")
            .trim_end_matches('s')
            .parse::<u32>()
            .unwrap()
    };
    assert!(secs(&later) < secs(&a), "{a} then {later}");
    // A key added meanwhile appears in a later frame.
    env.add_keys(&[key(3)]);
    p.exp_string(&key_id(&key(3))).unwrap();

    // Ctrl-C: the cursor is shown again, the screen restored, exit 0.
    p.send_control('c').unwrap();
    let rest = p.exp_eof().unwrap();
    assert!(
        rest.contains("\u{1b}[?25h"),
        "cursor not restored: {rest:?}"
    );
    assert!(
        rest.contains("\u{1b}[?1049l"),
        "screen not restored: {rest:?}"
    );
    match p.process().wait().unwrap() {
        rexpect::process::WaitStatus::Exited(_, code) => assert_eq!(code, 0),
        other => panic!("did not exit cleanly: {other:?}"),
    }
    for k in [key(1), key(2), key(3)] {
        assert!(!first.contains(&k) && !rest.contains(&k));
    }
}

#[test]
fn watch_without_a_terminal_prints_plain_frames() {
    let env = Env::new();
    env.add_keys(&[key(1)]);
    let child = env
        .cmd(&["keys", "list", "--watch"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.matches("Every 1s").count() >= 2, "{text}");
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(!text.contains(&key(1)));
}

#[test]
fn watch_and_json_do_not_mix() {
    let env = Env::new();
    let out = env.run(&["keys", "list", "--watch", "--json"]);
    assert_eq!(out.code, Some(2), "{out:?}");
}
