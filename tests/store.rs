//! The store's truth survives what happens to it: a store reached through a
//! symbolic link stays a link; fields a newer version wrote are kept; loose
//! permissions are tightened or reported.

use crate::common::fake_openrouter::{FakeOpenRouter, Reply};
use crate::common::{Env, Server, chat, key, key_id, reset_ms_in, wait_until};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

/// For things that take a second or two.
const T: Duration = Duration::from_secs(10);

/// Whether the store file has key 1 parked (for every model, or for `:free`
/// ones: a per-minute free-model limit may be either).
fn key_1_parked_in_store(env: &Env) -> bool {
    let state = &env.store_json()["keys"][0]["state"];
    state["cooldown_until"].is_string() || state["free_cooldown_until"].is_string()
}

/// Key 1 answers a per-minute 429: the server parks it (a change it must
/// save) and key 2 serves the request.
fn park_key_1(fake: &FakeOpenRouter, server: &Server) {
    fake.push(&key(1), Reply::rate_limit_per_min(reset_ms_in(3600)));
    let r = chat(server, &json!({"model": "m:free"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-orproxy-key"), Some(key_id(&key(2)).as_str()));
}

#[test]
fn a_store_reached_through_a_symbolic_link_is_written_through_it() {
    let env = Env::new();
    let real = env.dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = env.store.parent().unwrap();
    std::fs::create_dir(data).unwrap();
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink("../real/keys.json", &env.store).unwrap();
    let is_link = || {
        std::fs::symlink_metadata(&env.store)
            .unwrap()
            .file_type()
            .is_symlink()
    };

    env.add_keys(&[key(1), key(2)]);
    assert!(is_link(), "keys add replaced the link");
    let fake = FakeOpenRouter::start();
    let server = env.serve(&fake.base_url(), &[]);
    park_key_1(&fake, &server);
    wait_until("the cooldown in the store", T, || {
        key_1_parked_in_store(&env)
    });
    assert!(is_link(), "the server replaced the link");
    let target: Value =
        serde_json::from_slice(&std::fs::read(real.join("keys.json")).unwrap()).unwrap();
    assert_eq!(target, env.store_json(), "the link leads to the real file");
    assert_eq!(env.list_json()[0]["status"], "cooling");
    // The lock is beside the real file; nothing but the link is beside it.
    assert!(real.join("keys.json.lock").exists());
    let beside_link: Vec<_> = std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside_link, ["keys.json"]);
}

#[test]
fn fields_a_newer_version_wrote_survive_the_keys_commands_and_the_server() {
    let env = Env::new();
    let today = chrono::Utc::now().date_naive().to_string();
    let (id1, id2, id3) = (key_id(&key(1)), key_id(&key(2)), key_id(&key(3)));
    env.write_store(&json!({
        "version": 1,
        "written_by": "orproxy 9.0",
        "keys": [
            {
                "id": id1, "key": key(1), "added_at": "2026-01-01T00:00:00Z",
                "owner": {"team": "infra"},
                "state": {"disabled": true, "disabled_reason": "401", "streak_started": "2026-01-02T00:00:00Z"},
                "info": {
                    "creator_user_id": "user_1",
                    "rate_limit": {"requests": 10, "interval": "10s"},
                    "free_model_daily_requests": {"used": 1, "window": "utc-day"}
                }
            },
            {"id": id2, "key": key(2), "added_at": "2026-01-01T00:00:00Z", "pinned": true}
        ],
        "accounts": {"user_1": {"day": today, "free_requests": 4, "tier": "gold"}}
    }));
    env.add_keys(&[key(3)]);
    env.run(&["keys", "reactivate", &id1]).success();
    env.run(&["keys", "remove", &id3]).success();
    assert_eq!(env.list_json().len(), 2);

    let fake = FakeOpenRouter::start();
    let server = env.serve(&fake.base_url(), &[]);
    park_key_1(&fake, &server);
    wait_until("the cooldown in the store", T, || {
        key_1_parked_in_store(&env)
    });
    drop(server);

    let v = env.store_json();
    assert_eq!(v["written_by"], "orproxy 9.0");
    let k1 = &v["keys"][0];
    assert_eq!(k1["owner"], json!({"team": "infra"}));
    assert_eq!(k1["state"]["streak_started"], "2026-01-02T00:00:00Z");
    assert_eq!(k1["state"]["disabled"], false, "reactivated");
    assert_eq!(
        k1["info"]["rate_limit"],
        json!({"requests": 10, "interval": "10s"})
    );
    assert_eq!(k1["info"]["free_model_daily_requests"]["window"], "utc-day");
    assert_eq!(v["keys"][1]["pinned"], true);
    assert_eq!(v["accounts"]["user_1"]["tier"], "gold");
    assert_eq!(v["keys"].as_array().unwrap().len(), 2);
}

#[test]
fn loose_permissions_on_the_store_and_the_logs_are_tightened_or_reported() {
    let env = Env::new();
    env.add_keys(&[key(1)]);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let chmod = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    };
    let data = env.store.parent().unwrap();
    chmod(data, 0o755);
    chmod(&env.store, 0o644);
    let logs = env.dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    chmod(&logs, 0o755);
    let today = chrono::Local::now().date_naive().format("%Y-%m-%d");
    let errors = logs.join(format!("errors-{today}.log"));
    std::fs::write(&errors, "").unwrap();
    chmod(&errors, 0o644);

    let fake = FakeOpenRouter::start();
    let server = env.serve(&fake.base_url(), &["--log-dir", logs.to_str().unwrap()]);
    let said = |what: &str| server.log().lines().any(|l| l.contains(what));
    wait_until("the four permission warnings", T, || {
        said("the key store")
            && said("the store directory")
            && said("the log file")
            && said("the log directory")
    });
    let log = server.log();
    for line in log.lines().filter(|l| l.contains("open to other users")) {
        assert!(line.contains(" WARN "), "{line}");
    }
    assert!(log.contains("(mode 0644); it is 0600 now"), "{log}");
    assert!(
        log.contains(&format!("`chmod 700 {}`", data.display())),
        "{log}"
    );
    assert!(
        log.contains(&format!("`chmod 700 {}`", logs.display())),
        "{log}"
    );
    // Files orproxy owns are now private; directories are left as they were.
    assert_eq!(mode(&env.store), 0o600);
    assert_eq!(mode(&errors), 0o600);
    assert_eq!((mode(data), mode(&logs)), (0o755, 0o755));
    // The warnings are in the errors file too.
    crate::common::wait_until("the warnings in the errors file", T, || {
        std::fs::read_to_string(&errors).is_ok_and(|t| t.contains("open to other users"))
    });
}
