//! Driving the interactive parts through a real pseudo-terminal.

use crate::common::{BIN, Env, clean_env, key};
use std::process::Command;

fn pty_cmd(env: &Env, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--store").arg(&env.store).args(args);
    clean_env(&mut cmd, env.dir.path());
    cmd.env("TERM", "xterm");
    cmd
}

#[test]
fn interactive_add_prompts_hidden_and_loops_until_no() {
    let env = Env::new();
    let mut p = rexpect::session::spawn_command(
        pty_cmd(&env, &["keys", "add", "--no-verify", "--label", "tty"]),
        Some(20_000),
    )
    .unwrap();
    p.exp_string("OpenRouter API key").unwrap();
    p.send_line(&key(1)).unwrap();
    let before_another = p.exp_string("Add another key?").unwrap();
    assert!(before_another.contains("added "), "{before_another}");
    assert!(
        !before_another.contains(&key(1)),
        "the key was echoed: {before_another}"
    );
    p.send("y").unwrap();
    p.flush().unwrap();
    p.exp_string("OpenRouter API key").unwrap();
    p.send_line(&key(2)).unwrap();
    let second = p.exp_string("Add another key?").unwrap();
    assert!(!second.contains(&key(2)), "the key was echoed: {second}");
    p.send("n").unwrap();
    p.flush().unwrap();
    let rest = p.exp_eof().unwrap();
    assert!(!rest.contains(&key(2)));
    let list = env.list_json();
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|k| k["label"] == "tty"));
}

#[test]
fn table_is_coloured_on_a_terminal_unless_no_color() {
    let env = Env::new();
    env.add_keys(&[key(1)]);
    let mut p =
        rexpect::session::spawn_command(pty_cmd(&env, &["keys", "list"]), Some(20_000)).unwrap();
    let out = p.exp_eof().unwrap();
    assert!(out.contains("active"), "{out}");
    assert!(out.contains("\u{1b}["), "expected colour codes: {out:?}");

    let mut cmd = pty_cmd(&env, &["keys", "list"]);
    cmd.env("NO_COLOR", "1");
    let mut p = rexpect::session::spawn_command(cmd, Some(20_000)).unwrap();
    let out = p.exp_eof().unwrap();
    assert!(out.contains("active"), "{out}");
    assert!(
        !out.contains("\u{1b}["),
        "NO_COLOR must disable colours: {out:?}"
    );
}
