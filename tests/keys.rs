use crate::common::{Env, key};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

#[test]
fn empty_store_says_how_to_add_a_key() {
    let env = Env::new();
    let out = env.run(&["keys", "list"]).success();
    assert!(out.stdout.contains("orproxy keys add"), "{out:?}");
    assert_eq!(env.list_json(), Vec::<serde_json::Value>::new());
    assert!(!env.store.exists(), "listing must not create the store");
}

#[test]
fn add_with_flag_then_list_json_has_every_field() {
    let env = Env::new();
    let k = key(1);
    let out = env
        .run(&[
            "keys",
            "add",
            "--no-verify",
            "--key",
            &k,
            "--label",
            "laptop",
        ])
        .success();
    assert!(out.stdout.contains("added "), "{out:?}");
    // It says which store it wrote to, and that the key is unverified.
    assert!(
        out.stdout.contains(&format!("to {}", env.store.display())),
        "{out:?}"
    );
    assert!(out.stdout.contains("(unverified: --no-verify"), "{out:?}");
    assert!(!out.all().contains(&k), "full key printed: {out:?}");
    let list = env.list_json();
    assert_eq!(list.len(), 1);
    let item = list[0].as_object().unwrap();
    for field in [
        "id",
        "label",
        "masked",
        "status",
        "cooldown_until",
        "cooldown_reason",
        "disabled_reason",
        "free_models",
        "free_requests_today",
        "free_daily_limit",
        "free_requests_this_minute",
        "consecutive_failures",
        "last_used",
        "requests_total",
        "added_at",
        "verified",
    ] {
        assert!(item.contains_key(field), "missing {field}: {item:?}");
    }
    assert_eq!(item["label"], "laptop");
    assert_eq!(item["status"], "active");
    assert_eq!(item["masked"], format!("sk-or-v1-…{}", &k[k.len() - 4..]));
    assert_eq!(item["cooldown_until"], json!(null));
    assert_eq!(item["last_used"], json!(null));
    assert_eq!(item["consecutive_failures"], 0);
    assert_eq!(
        item["free_models"],
        json!({"usable": true, "until": null, "reason": null})
    );
    assert_eq!(item["free_requests_today"], 0);
    assert_eq!(
        item["free_daily_limit"],
        json!(null),
        "unknown until checked"
    );
    assert_eq!(item["free_requests_this_minute"], 0);
    assert_eq!(item["verified"], false);
    let table = env.run(&["keys", "list"]).success().stdout;
    assert!(table.contains("unverified"), "{table}");
    // The ID is the first 8 hex digits of the key's SHA-256: the same everywhere.
    let id = item["id"].as_str().unwrap();
    assert_eq!(id.len(), 8);
    let expected = {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest(k.as_bytes());
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()[..8].to_owned()
    };
    assert_eq!(id, expected);
    // added_at is RFC 3339 UTC.
    let added = item["added_at"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(added).is_ok() && added.ends_with('Z'));
    assert!(!env.list_json().iter().any(|v| v.to_string().contains(&k)));
}

#[test]
fn keys_from_stdin_skip_blanks_and_comments_and_refuse_bad_ones() {
    let env = Env::new();
    let input = format!(
        "# my keys\n\n{}\n   {}  \nbad key\nnot-an-openrouter-key\nsk-or-v1-tooshort\n",
        key(1),
        key(2)
    );
    let out = env.run_stdin(&["keys", "add", "--no-verify"], &input);
    assert_eq!(out.code, Some(1), "a refused key makes the exit 1: {out:?}");
    assert!(
        out.stderr.contains("line 5") && out.stderr.contains("whitespace"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("does not start with \"sk-or-\""),
        "{out:?}"
    );
    // A key too short to be an OpenRouter key is added, with a warning.
    assert!(
        out.stderr.contains("line 7")
            && out
                .stderr
                .contains("has 8 characters after \"sk-or-v1-\" where OpenRouter keys have 64"),
        "{out:?}"
    );
    assert_eq!(
        out.stderr.matches("probably not an OpenRouter key").count(),
        2,
        "{out:?}"
    );
    assert!(!out.all().contains("not-an-openrouter-key"), "{out:?}");
    let list = env.list_json();
    assert_eq!(list.len(), 4, "the good keys are still added: {list:?}");
    let stored = env.store_json();
    let keys: Vec<&str> = stored["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            key(1).as_str(),
            key(2).as_str(),
            "not-an-openrouter-key",
            "sk-or-v1-tooshort"
        ]
    );
}

#[test]
fn empty_stdin_is_an_error() {
    let env = Env::new();
    let out = env.run_stdin(&["keys", "add", "--no-verify"], "# nothing\n\n");
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("no keys"), "{out:?}");
}

#[test]
fn empty_key_flag_is_refused() {
    let env = Env::new();
    let out = env.run(&["keys", "add", "--no-verify", "--key", ""]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("empty"), "{out:?}");
    let ctl = env.run(&["keys", "add", "--no-verify", "--key", "sk-or-v1-a\u{1b}b"]);
    assert_eq!(ctl.code, Some(1), "{ctl:?}");
    assert!(ctl.stderr.contains("control character"), "{ctl:?}");
    assert!(env.list_json().is_empty());
}

/// Put the stored key into a bad state, as the server would after failures.
fn break_key(env: &Env, index: usize) {
    let mut store = env.store_json();
    let state = &mut store["keys"][index]["state"];
    state["disabled"] = json!(true);
    state["disabled_reason"] = json!("401: User not found.");
    state["consecutive_failures"] = json!(5);
    state["cooldown_until"] = json!("2999-01-01T00:00:00Z");
    state["cooldown_reason"] = json!("free-models-per-day");
    env.write_store(&store);
}

#[test]
fn adding_a_stored_key_again_reactivates_it() {
    let env = Env::new();
    env.add_keys(&[key(1)]);
    break_key(&env, 0);
    assert_eq!(env.list_json()[0]["status"], "disabled");
    let out = env
        .run(&["keys", "add", "--no-verify", "--key", &key(1)])
        .success();
    assert!(out.stdout.contains("reactivated"), "{out:?}");
    let list = env.list_json();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["status"], "active");
    assert_eq!(list[0]["consecutive_failures"], 0);
    assert_eq!(list[0]["disabled_reason"], json!(null));
}

#[test]
fn list_shows_cooldown_and_disabled_reasons() {
    let env = Env::new();
    env.add_keys(&[key(1), key(2), key(3)]);
    let mut store = env.store_json();
    let soon = (chrono::Utc::now() + chrono::TimeDelta::seconds(90)).to_rfc3339();
    store["keys"][0]["state"]["cooldown_until"] = json!(soon);
    store["keys"][0]["state"]["cooldown_reason"] = json!("free-models-per-min");
    store["keys"][1]["state"]["disabled"] = json!(true);
    store["keys"][1]["state"]["disabled_reason"] = json!("5 consecutive failures");
    // A cooldown in the past reads as active.
    store["keys"][2]["state"]["cooldown_until"] = json!("2001-01-01T00:00:00Z");
    store["keys"][2]["state"]["cooldown_reason"] = json!("free-models-per-min");
    env.write_store(&store);

    let list = env.list_json();
    assert_eq!(list[0]["status"], "cooling");
    assert_eq!(list[0]["cooldown_reason"], "free-models-per-min");
    assert!(list[0]["cooldown_until"].as_str().unwrap().ends_with('Z'));
    assert_eq!(list[1]["status"], "disabled");
    assert_eq!(list[1]["disabled_reason"], "5 consecutive failures");
    assert_eq!(list[2]["status"], "active");
    assert_eq!(list[2]["cooldown_until"], json!(null));

    let table = env.run(&["keys", "list"]).success().stdout;
    assert!(table.contains("free-models-per-min"), "{table}");
    assert!(
        table.contains("in 1m 2") || table.contains("in 1m 3"),
        "{table}"
    );
    assert!(table.contains("5 consecutive failures"), "{table}");
    assert!(
        table.contains("cooling") && table.contains("disabled"),
        "{table}"
    );
    assert!(
        !table.contains('\u{1b}'),
        "no colours when stdout is not a terminal: {table}"
    );
    for i in 1..=3 {
        assert!(!table.contains(&key(i)), "full key in table");
    }
}

#[test]
fn reactivate_by_id_prefix_and_all() {
    let env = Env::new();
    env.add_keys(&[key(1), key(2)]);
    break_key(&env, 0);
    break_key(&env, 1);
    let list = env.list_json();
    let id0 = list[0]["id"].as_str().unwrap().to_owned();
    let out = env.run(&["keys", "reactivate", &id0[..5]]).success();
    assert!(out.stdout.contains(&id0), "{out:?}");
    let list = env.list_json();
    assert_eq!(list[0]["status"], "active");
    assert_eq!(list[1]["status"], "disabled");
    env.run(&["keys", "reactivate", "--all"]).success();
    assert!(env.list_json().iter().all(|k| k["status"] == "active"));
}

#[test]
fn unknown_id_fails_and_lists_known_ids_without_changing_anything() {
    let env = Env::new();
    env.add_keys(&[key(1), key(2)]);
    break_key(&env, 0);
    let before = std::fs::read(&env.store).unwrap();
    let ids: Vec<String> = env
        .list_json()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect();
    for cmd in ["reactivate", "remove"] {
        let out = env.run(&["keys", cmd, &ids[0], "zzzz"]);
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(out.stderr.contains("zzzz"), "{out:?}");
        for id in &ids {
            assert!(
                out.stderr.contains(id.as_str()),
                "known IDs listed: {out:?}"
            );
        }
        assert_eq!(std::fs::read(&env.store).unwrap(), before, "all or nothing");
    }
}

#[test]
fn remove_deletes_keys() {
    let env = Env::new();
    env.add_keys(&[key(1), key(2), key(3)]);
    let ids: Vec<String> = env
        .list_json()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect();
    let out = env.run(&["keys", "remove", &ids[0], &ids[2]]).success();
    assert!(
        out.stdout.contains(&ids[0]) && out.stdout.contains(&ids[2]),
        "{out:?}"
    );
    let left = env.list_json();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], ids[1].as_str());
}

#[test]
fn corrupt_store_fails_every_command_and_is_left_untouched() {
    let env = Env::new();
    let bad = b"{\n  \"version\": 1,\n  \"keys\": [\n    {\"id\": \"x\",}\n  ]\n}\n".to_vec();
    std::fs::create_dir_all(env.store.parent().unwrap()).unwrap();
    std::fs::write(&env.store, &bad).unwrap();
    let k = key(1);
    let commands: Vec<Vec<&str>> = vec![
        vec!["keys", "list"],
        vec!["keys", "list", "--json"],
        vec!["keys", "add", "--no-verify", "--key", &k],
        vec!["keys", "reactivate", "--all"],
        vec!["keys", "remove", "abc"],
    ];
    for args in commands {
        let out = env.run(&args);
        assert_eq!(out.code, Some(1), "{args:?}: {out:?}");
        assert!(
            out.stderr.contains(env.store.to_str().unwrap()),
            "names the file: {out:?}"
        );
        assert!(
            out.stderr.contains("line 4, column"),
            "names line and column: {out:?}"
        );
        assert!(
            out.stderr.contains("move it aside"),
            "says what to do: {out:?}"
        );
        assert_eq!(
            std::fs::read(&env.store).unwrap(),
            bad,
            "{args:?} touched the file"
        );
    }
}

#[test]
fn unknown_store_version_is_refused() {
    let env = Env::new();
    env.write_store(&json!({"version": 7, "keys": []}));
    let before = std::fs::read(&env.store).unwrap();
    let out = env.run(&["keys", "add", "--no-verify", "--key", &key(1)]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("version 7"), "{out:?}");
    assert_eq!(std::fs::read(&env.store).unwrap(), before);
}

#[test]
fn store_is_private_whatever_the_umask() {
    let env = Env::new();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"umask 000; exec "$0" --store "$1" keys add --no-verify --key "$2""#)
        .arg(crate::common::BIN)
        .arg(&env.store)
        .arg(key(1));
    crate::common::clean_env(&mut cmd, env.dir.path());
    let status = cmd.stdin(Stdio::null()).status().unwrap();
    assert!(status.success());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&env.store), 0o600);
    assert_eq!(mode(env.store.parent().unwrap()), 0o700);
}

#[test]
fn store_format_is_documented_shape() {
    let env = Env::new();
    env.run(&[
        "keys",
        "add",
        "--no-verify",
        "--key",
        &key(1),
        "--label",
        "a",
    ])
    .success();
    let text = std::fs::read_to_string(&env.store).unwrap();
    assert!(
        text.starts_with("{\n  \"version\": 1,"),
        "pretty-printed: {text}"
    );
    let v = env.store_json();
    let record = &v["keys"][0];
    assert_eq!(record["key"], key(1).as_str());
    assert_eq!(record["label"], "a");
    for field in ["id", "added_at", "state"] {
        assert!(record.get(field).is_some(), "{field}");
    }
    for field in [
        "last_used",
        "cooldown_until",
        "cooldown_reason",
        "consecutive_failures",
        "disabled",
        "disabled_reason",
        "requests_total",
    ] {
        assert!(record["state"].get(field).is_some(), "state.{field}");
    }
}

#[test]
fn default_store_is_in_the_xdg_data_dir() {
    let env = Env::new();
    let mut cmd = Command::new(crate::common::BIN);
    crate::common::clean_env(&mut cmd, env.dir.path());
    let out = cmd
        .args(["keys", "add", "--no-verify", "--key", &key(1)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(env.dir.path().join("xdg-data/orproxy/keys.json").is_file());
    // ORPROXY_STORE is the environment form of --store.
    let other = env.dir.path().join("elsewhere.json");
    let mut cmd = Command::new(crate::common::BIN);
    crate::common::clean_env(&mut cmd, env.dir.path());
    let out = cmd
        .env("ORPROXY_STORE", &other)
        .args(["keys", "add", "--no-verify", "--key", &key(2)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(other.is_file());
}

/// Eight processes adding 25 keys each at the same moment: the lock
/// serialises the read-modify-write, so none loses another's keys.
#[test]
fn concurrent_adds_lose_nothing() {
    let env = Env::new();
    let children: Vec<_> = (0..8)
        .map(|p| {
            let input: String = (0..25).map(|i| key(p * 100 + i) + "\n").collect();
            // One key per process invocation, so the 8 processes interleave
            // 25 lock/read/write cycles each.
            let script = r#"while read -r k; do "$0" --store "$1" keys add --no-verify --key "$k" >/dev/null || exit 1; done"#;
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(script).arg(crate::common::BIN).arg(&env.store);
            crate::common::clean_env(&mut cmd, env.dir.path());
            let mut child = cmd.stdin(Stdio::piped()).spawn().unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
            child
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let list = env.list_json();
    assert_eq!(list.len(), 200);
    let mut ids: Vec<&str> = list.iter().map(|k| k["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 200);
}

mod verify {
    use crate::common::fake_openrouter::{FakeOpenRouter, KeyInfoReply};
    use crate::common::{Env, key};
    use serde_json::json;

    fn add_verified(env: &Env, upstream: &str, k: &str) -> crate::common::Run {
        env.run(&["keys", "add", "--key", k, "--upstream", upstream])
    }

    #[test]
    fn a_verified_key_shows_what_openrouter_says_and_stores_it() {
        let env = Env::new();
        let fake = FakeOpenRouter::start();
        fake.set_key_info(
            &key(1),
            KeyInfoReply::Ok(json!({
                "label": "work laptop", "limit": 10.0, "limit_remaining": 7.5, "limit_reset": "monthly",
                "usage": 2.5, "is_free_tier": false, "creator_user_id": "user_abc",
                "free_model_daily_requests": {"used": 12, "limit": 1000, "remaining": 988}
            })),
        );
        let out = add_verified(&env, &fake.base_url(), &key(1)).success();
        for expected in [
            "work laptop",
            "paid account",
            "credit limit 10, 7.5 left",
            "12/1000",
            "user_abc",
        ] {
            assert!(out.stdout.contains(expected), "{expected}: {out:?}");
        }
        let got = fake.wait_requests(1, std::time::Duration::from_secs(5));
        assert_eq!(got[0].path, "/api/v1/key");
        assert_eq!(
            got[0].header("authorization"),
            Some(format!("Bearer {}", key(1)).as_str())
        );
        let stored = env.store_json();
        assert_eq!(stored["keys"][0]["info"]["creator_user_id"], "user_abc");
        assert_eq!(stored["keys"][0]["info"]["is_free_tier"], false);
        assert_eq!(env.list_json()[0]["account"], "user_abc");
    }

    #[test]
    fn a_key_openrouter_rejects_is_not_added() {
        let env = Env::new();
        let fake = FakeOpenRouter::start();
        fake.set_key_info(&key(1), KeyInfoReply::Invalid);
        let out = add_verified(&env, &fake.base_url(), &key(1));
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(
            out.stderr.contains("rejected") && out.stderr.contains("401"),
            "{out:?}"
        );
        assert!(!out.all().contains(&key(1)), "{out:?}");
        assert!(env.list_json().is_empty());
        // Of several keys, only the rejected one is left out.
        let out = env.run(&[
            "keys",
            "add",
            "--key",
            &key(1),
            "--key",
            &key(2),
            "--upstream",
            &fake.base_url(),
        ]);
        assert_eq!(out.code, Some(1));
        let list = env.list_json();
        assert_eq!(list.len(), 1);
        assert_eq!(
            list[0]["masked"],
            format!("sk-or-v1-…{}", &key(2)[key(2).len() - 4..])
        );
    }

    #[test]
    fn an_unreachable_openrouter_adds_the_key_with_a_warning() {
        let env = Env::new();
        let out = add_verified(&env, "http://127.0.0.1:9/api/v1", &key(1)).success();
        assert!(out.stderr.contains("could not be verified"), "{out:?}");
        assert_eq!(env.list_json().len(), 1);
        assert_eq!(env.store_json()["keys"][0].get("info"), None);
    }

    #[test]
    fn the_upstream_for_verification_comes_from_orproxy_upstream() {
        let env = Env::new();
        let fake = FakeOpenRouter::start();
        let mut cmd = env.cmd(&["keys", "add", "--key", &key(3)]);
        cmd.env("ORPROXY_UPSTREAM", fake.base_url());
        let out = crate::common::Run::from(cmd.output().unwrap()).success();
        assert!(out.stdout.contains("OpenRouter says"), "{out:?}");
        assert_eq!(fake.request_count(), 1);
    }
}

#[test]
fn a_reader_that_stops_early_ends_the_command_quietly() {
    let env = Env::new();
    let input: String = (0..2000).map(|i| key(i) + "\n").collect();
    env.run_stdin(&["keys", "add", "--no-verify"], &input)
        .success();
    for args in [&["keys", "list", "--json"][..], &["keys", "list"][..]] {
        let mut child = env
            .cmd(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Like `| head -c 100`: read a little, then go away.
        let mut stdout = child.stdout.take().unwrap();
        let mut first = [0u8; 100];
        use std::io::Read;
        stdout.read_exact(&mut first).unwrap();
        drop(stdout);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
