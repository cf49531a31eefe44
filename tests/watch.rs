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

/// `text` without terminal escape sequences (CSI and the alternate-screen
/// ones the frames are drawn with).
fn without_escapes(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            // Parameters, then one final byte in @..~.
            for d in chars.by_ref() {
                if ('@'..='~').contains(&d) {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    out
}

#[test]
fn watch_fits_an_80_column_terminal_with_the_accounts_counts() {
    let env = Env::new();
    let now = chrono::Utc::now();
    let today = now.date_naive().to_string();
    let in_hours = (now + chrono::TimeDelta::hours(3)).to_rfc3339();
    let in_secs = (now + chrono::TimeDelta::seconds(90)).to_rfc3339();
    let account = "user_2xYzAbCdEfGhIjKlMnOpQrStUv";
    let info = json!({"checked_at": now.to_rfc3339(), "creator_user_id": account,
                      "is_free_tier": true});
    env.write_store(&json!({
        "version": 1,
        "keys": [
            {"id": key_id(&key(1)), "key": key(1), "label": "the team lead's laptop key",
             "added_at": now.to_rfc3339(), "info": info,
             "state": {"free_cooldown_until": in_hours,
                       "free_cooldown_reason": "free-models-per-day"}},
            {"id": key_id(&key(2)), "key": key(2), "label": "ci", "added_at": now.to_rfc3339(),
             "info": info,
             "state": {"cooldown_until": in_secs, "cooldown_reason": "rate-limited"}},
            {"id": key_id(&key(3)), "key": key(3), "label": "old", "added_at": now.to_rfc3339(),
             "state": {"disabled": true,
                       "disabled_reason": "401 from OpenRouter: User not found."}},
        ],
        "accounts": {account: {"day": today, "free_requests": 37, "daily_limit": 50,
                               "last_minute": [now.to_rfc3339()]}}
    }));
    // An 80-column terminal, as a tmux pane beside `orproxy serve` may be.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("stty cols 80 rows 40 && exec \"$0\" \"$@\"")
        .arg(BIN)
        .arg("--store")
        .arg(&env.store)
        .args(["keys", "list", "--watch"]);
    clean_env(&mut cmd, env.dir.path());
    cmd.env("TERM", "xterm");
    let mut p = rexpect::session::spawn_command(cmd, Some(20_000)).unwrap();
    // Two whole frames (the second drawn over the first), each ending with
    // the table's bottom-right corner. The session reads bytes as Latin-1.
    let corner: String = "┘".bytes().map(char::from).collect();
    p.exp_string(&corner).unwrap();
    let drawn = p.exp_string(&corner).unwrap();
    let bytes: Vec<u8> = drawn.chars().map(|c| u8::try_from(c).unwrap()).collect();
    let screen = without_escapes(&String::from_utf8(bytes).unwrap());
    let frame = &screen[screen.rfind("Every 1s").unwrap()..];
    let lines: Vec<&str> = frame.lines().map(|l| l.trim_end_matches('\r')).collect();
    for line in &lines {
        assert!(
            line.chars().count() <= 80,
            "{} columns: {line:?}\n{frame}",
            line.chars().count()
        );
    }
    // Every ID whole on one line, every status, and the account's counts:
    // 37 of 50 today, 1 this minute.
    for n in 1..=3 {
        let id = key_id(&key(n));
        assert!(
            lines.iter().any(|l| l.contains(&id)),
            "{id} whole in\n{frame}"
        );
    }
    for text in [
        "free held",
        "cooling",
        "disabled",
        "37/50",
        "1/20",
        "daily cap",
        "the team ",
    ] {
        assert!(frame.contains(text), "{text} in\n{frame}");
    }
    p.send_control('c').unwrap();
    p.exp_eof().unwrap();
    for n in 1..=3 {
        assert!(!screen.contains(&key(n)));
    }
}
