//! Several `orproxy serve` instances sharing one key pool through a real
//! Redis (issue 8): a cooldown or a key added through one instance reaches
//! the others, free-model counts add up, and Redis going away and coming
//! back empty loses no key and no cooldown.

use crate::common::fake_openrouter::{FakeOpenRouter, KeyInfoReply, Reply};
use crate::common::redis::Redis;
use crate::common::{Env, Server, chat, key, key_id, request, reset_ms_in, wait_until};
use serde_json::{Value, json};
use std::time::Duration;

const FREE: &str = "meta-llama/llama-3.3-70b-instruct:free";
const ADMIN: &str = "admin-token-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(15);

fn health(server: &Server) -> Value {
    request("GET", &server.url("/health"), &[], None).json()
}

/// Keys held for `:free` models (a per-minute 429 is the account's cap).
fn free_held(server: &Server) -> u64 {
    health(server)["keys"]["free_held"].as_u64().unwrap()
}

fn serve(env: &Env, fake: &FakeOpenRouter) -> Server {
    let mut cmd = env.cmd(&["serve", "--port", "0", "--upstream", &fake.base_url()]);
    cmd.env("ORPROXY_ADMIN_TOKEN", ADMIN);
    env.serve_cmd(cmd)
}

/// A Redis, the fake OpenRouter, a store with `keys` keys, and two
/// instances (with the admin API on) sharing it.
fn two_instances(keys: usize) -> (Redis, FakeOpenRouter, Env, Server, Server) {
    let redis = Redis::start();
    let fake = FakeOpenRouter::start();
    let env = Env::with_store(&redis.url());
    env.add_keys(&(1..=keys).map(key).collect::<Vec<_>>());
    let a = serve(&env, &fake);
    let b = serve(&env, &fake);
    (redis, fake, env, a, b)
}

fn by_id(env: &Env) -> std::collections::HashMap<String, Value> {
    env.list_json()
        .into_iter()
        .map(|k| (k["id"].as_str().unwrap().to_owned(), k))
        .collect()
}

#[test]
fn keys_commands_work_on_redis_and_never_show_its_password() {
    let redis = Redis::start_with(Some("s3cret-pass"));
    let env = Env::with_store(&redis.url());
    let added = env.run_stdin(
        &["keys", "add", "--no-verify", "--label", "team"],
        &format!("{}\n{}\n", key(1), key(2)),
    );
    let added = added.success();
    assert!(added.stdout.contains(&key_id(&key(1))), "{added:?}");
    let list = env.run(&["keys", "list"]).success();
    assert!(list.stdout.contains("team"), "{}", list.stdout);
    let fake = FakeOpenRouter::start();
    let server = env.serve(&fake.base_url(), &[]);
    assert!(
        server
            .stdout_first_line
            .contains("store redis://:***@127.0.0.1"),
        "the startup line names the store without its password: {}",
        server.stdout_first_line
    );
    let started = server.stdout_first_line.clone() + &server.log();
    env.run(&["keys", "remove", &key_id(&key(2))]).success();
    let keys = env.list_json();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["label"], "team");
    // The keys really are in Redis, under the default prefix.
    let ids = redis.cli(&["ZRANGE", "orproxy:ids", "0", "-1"]);
    assert_eq!(ids.trim(), key_id(&key(1)));

    let wrong = Env::with_store(&format!("redis://:wrong-pass@127.0.0.1:{}/0", redis.port));
    let failed = wrong.run(&["keys", "list"]);
    assert_ne!(failed.code, Some(0));
    assert!(
        failed.stderr.contains("redis://:***@127.0.0.1"),
        "{failed:?}"
    );
    for output in [&added.all(), &list.all(), &failed.all(), &started] {
        assert!(!output.contains("s3cret-pass") && !output.contains("wrong-pass"));
    }
}

#[test]
fn rediss_with_a_password_serves_and_checks_the_certificate() {
    let redis = Redis::start_tls("tls-pass-123");
    let fake = FakeOpenRouter::start();
    let ca = redis.ca.clone().unwrap();
    let env = Env::with_store(&redis.url());
    // The server's certificate comes from a private CA: without it trusted,
    // nothing is sent.
    let refused = env.run(&["keys", "add", "--no-verify", "--key", &key(1)]);
    assert_ne!(refused.code, Some(0));
    assert!(refused.stderr.contains("certificate"), "{refused:?}");
    let mut add = env.cmd(&["keys", "add", "--no-verify", "--key", &key(1)]);
    add.env("SSL_CERT_FILE", &ca);
    assert!(add.output().unwrap().status.success());
    let mut cmd = env.cmd(&["serve", "--port", "0", "--upstream", &fake.base_url()]);
    cmd.env("SSL_CERT_FILE", &ca);
    let server = env.serve_cmd(cmd);
    assert!(
        server
            .stdout_first_line
            .contains("store rediss://:***@localhost:"),
        "{}",
        server.stdout_first_line
    );
    let r = chat(&server, &json!({"model": "openai/gpt-4o"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(health(&server)["store"]["reachable"], true);
    assert_eq!(
        redis.cli(&["ZRANGE", "orproxy:ids", "0", "-1"]).trim(),
        key_id(&key(1))
    );
    assert!(!refused.all().contains("tls-pass-123"));
    assert!(!server.log().contains("tls-pass-123"));
}

#[test]
fn prefixes_keep_two_pools_apart_in_one_database() {
    let redis = Redis::start();
    let team_a = Env::with_store(&redis.url());
    team_a.add_keys(&[key(1)]);
    let mut cmd = team_a.cmd(&["--redis-prefix", "team-b", "keys", "add", "--no-verify"]);
    cmd.args(["--key", &key(2)]);
    assert!(cmd.output().unwrap().status.success());
    assert_eq!(team_a.list_json().len(), 1);
    let b = team_a.run(&["--redis-prefix", "team-b", "keys", "list", "--json"]);
    let b: Value = serde_json::from_str(&b.success().stdout).unwrap();
    assert_eq!(b[0]["id"], key_id(&key(2)));
    // A prefix with a file store is refused, not ignored.
    let file = Env::new();
    let refused = file.run(&["--redis-prefix", "x", "keys", "list"]);
    assert_ne!(refused.code, Some(0));
    assert!(refused.stderr.contains("--redis-prefix"), "{refused:?}");
}

#[test]
fn a_cooldown_seen_through_one_instance_parks_the_key_for_the_other() {
    let (_redis, fake, env, a, b) = two_instances(2);
    fake.push(&key(1), Reply::rate_limit_per_min(reset_ms_in(600)));
    let r = chat(&a, &json!({"model": FREE}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-orproxy-attempts"), Some("2"));
    wait_until("instance B sees key 1 held", WAIT, || free_held(&b) == 1);
    // B never asked OpenRouter with key 1, and does not now.
    let before = fake.requests_for(&key(1)).len();
    for _ in 0..3 {
        assert_eq!(chat(&b, &json!({"model": FREE})).status, 200);
    }
    assert_eq!(fake.requests_for(&key(1)).len(), before);
    assert_eq!(fake.requests_for(&key(2)).len(), 4);
    let keys = by_id(&env);
    assert_eq!(keys[&key_id(&key(1))]["status"], "free_held");
    assert_eq!(
        keys[&key_id(&key(1))]["cooldown_reason"],
        "free-models-per-min"
    );
}

#[test]
fn failures_counted_by_two_instances_add_up_to_the_disabling_streak() {
    let redis = Redis::start();
    let fake = FakeOpenRouter::start();
    let env = Env::with_store(&redis.url());
    env.add_keys(&[key(1), key(2)]);
    let start = || {
        let mut cmd = env.cmd(&["serve", "--port", "0", "--upstream", &fake.base_url()]);
        // No re-checks: GET /key would find key 1 healthy and bring it back.
        cmd.args([
            "--max-failures",
            "4",
            "--max-attempts",
            "3",
            "--reprobe-interval",
            "0",
        ]);
        env.serve_cmd(cmd)
    };
    // Key 1 always fails; key 2 works. A fresh instance tries the least
    // recently used key first, key 1, then key 2: each instance counts one
    // failure of key 1 (another key worked), and Redis adds them up.
    fake.set_default(&key(1), Reply::server_error(502));
    for round in 1..=2 {
        let (a, b) = (start(), start());
        for server in [&a, &b] {
            let r = chat(server, &json!({"model": "openai/gpt-4o"}));
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(
                r.header("x-orproxy-attempts"),
                Some("2"),
                "{}",
                server.log()
            );
        }
        let counted = round * 2;
        wait_until("the failures counted in the store", WAIT, || {
            by_id(&env)[&key_id(&key(1))]["failures_total"] == counted
        });
    }
    let (a, b) = (start(), start());
    let k1 = by_id(&env)[&key_id(&key(1))].clone();
    assert_eq!(k1["status"], "disabled", "{k1}");
    let k1 = &by_id(&env)[&key_id(&key(1))];
    assert_eq!(k1["failures_total"], 4, "each failure counted once: {k1}");
    assert!(
        k1["disabled_reason"]
            .as_str()
            .unwrap()
            .starts_with("4 consecutive failures"),
        "{k1}"
    );
    assert_eq!(by_id(&env)[&key_id(&key(2))]["status"], "active");
    let before = fake.requests_for(&key(1)).len();
    for server in [&a, &b] {
        assert_eq!(health(server)["keys"]["disabled"], 1);
        assert_eq!(chat(server, &json!({"model": "openai/gpt-4o"})).status, 200);
    }
    assert_eq!(fake.requests_for(&key(1)).len(), before, "key 1 not tried");
}

#[test]
fn a_model_backing_off_on_one_instance_is_held_on_the_other() {
    let (_redis, fake, _env, a, b) = two_instances(2);
    let busy = json!({"error": {"message": "Rate limit exceeded: limit_rpm/x/y. High demand for x/y:free on OpenRouter", "code": 429, "metadata": {"headers": {"X-RateLimit-Reset": reset_ms_in(120).to_string()}, "provider_name": null}}});
    fake.push(&key(1), Reply::json(429, &busy));
    let r = chat(&a, &json!({"model": "x/y:free"}));
    assert_eq!(
        r.assert_openai_error(429)["error"]["code"],
        "model_at_capacity"
    );
    // OpenRouter would answer now: only the shared back-off holds B.
    wait_until("B holds the model without asking OpenRouter", WAIT, || {
        let sent = fake.request_count();
        let r = chat(&b, &json!({"model": "x/y:free"}));
        r.status == 429 && fake.request_count() == sent
    });
    assert_eq!(chat(&b, &json!({"model": FREE})).status, 200);
}

#[test]
fn a_key_added_through_one_instance_admin_api_serves_through_the_other() {
    let redis = Redis::start();
    let fake = FakeOpenRouter::start();
    let env = Env::with_store(&redis.url());
    let a = serve(&env, &fake);
    let b = serve(&env, &fake);
    assert_eq!(chat(&a, &json!({"model": "openai/gpt-4o"})).status, 503);
    let body = json!({"key": key(7), "verify": false}).to_string();
    let auth = format!("Bearer {ADMIN}");
    let added = request(
        "POST",
        &b.url("/admin/keys"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        Some(body.as_bytes()),
    );
    assert_eq!(added.status, 201, "{}", added.text());
    wait_until("instance A has the key", WAIT, || {
        health(&a)["keys"]["active"] == 1
    });
    let r = chat(&a, &json!({"model": "openai/gpt-4o"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(fake.requests_for(&key(7)).len(), 1);
    // Removed through A: gone from B too.
    let removed = request(
        "DELETE",
        &a.url(&format!("/admin/keys/{}", key_id(&key(7)))),
        &[("authorization", &auth)],
        None,
    );
    assert_eq!(removed.status, 200, "{}", removed.text());
    wait_until("instance B dropped the key", WAIT, || {
        health(&b)["keys"]["active"] == 0
    });
}

#[test]
fn free_model_counts_add_up_across_instances_and_hold_the_daily_cap() {
    let redis = Redis::start();
    let fake = FakeOpenRouter::start();
    let env = Env::with_store(&redis.url());
    let mut info = crate::common::fake_openrouter::default_key_info(&key(1));
    info["free_model_daily_requests"] = json!({"used": 0, "limit": 4, "remaining": 4});
    fake.set_key_info(&key(1), KeyInfoReply::Ok(info));
    env.add_verified(&key(1), &fake.base_url());
    let a = serve(&env, &fake);
    let b = serve(&env, &fake);
    for server in [&a, &b, &a, &b] {
        let r = chat(server, &json!({"model": FREE}));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // Four free requests spent the account's day across both instances:
    // neither sends a fifth.
    for server in [&a, &b] {
        let r = chat(server, &json!({"model": FREE}));
        let v = r.assert_openai_error(429);
        assert!(
            v["error"]["message"].as_str().unwrap().contains("daily"),
            "{v}"
        );
    }
    let chats = |k: &str| {
        fake.requests_for(k)
            .iter()
            .filter(|r| r.path.ends_with("/chat/completions"))
            .count()
    };
    assert_eq!(chats(&key(1)), 4);
    let account = format!("orproxy:acct:key:{}", key_id(&key(1)));
    assert_eq!(redis.cli(&["HGET", &account, "free_requests"]).trim(), "4");
    // Paid models are not held by the free cap.
    assert_eq!(chat(&a, &json!({"model": "openai/gpt-4o"})).status, 200);
    // `keys list` reads the shared counts: today's and this minute's.
    let listed = &env.list_json()[0];
    assert_eq!(listed["status"], "free_held", "{listed}");
    assert_eq!(listed["free_models"]["reason"], "free-models-per-day");
    assert_eq!(listed["free_requests_today"], 4);
    assert_eq!(listed["free_daily_limit"], 4);
    assert_eq!(listed["free_requests_this_minute"], 4);
    // Forgotten, on Redis: both instances send `:free` requests again, and
    // count from 0.
    let id = key_id(&key(1));
    let out = env
        .run(&["keys", "reactivate", "--forget-quota", &id])
        .success()
        .stdout;
    assert!(out.contains("forgot today's :free requests"), "{out}");
    for server in [&a, &b] {
        wait_until("the instance takes the forgotten count in", WAIT, || {
            health(server)["free_models"]["usable"] == 1
        });
        let r = chat(server, &json!({"model": FREE}));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(chats(&key(1)), 7, "4 + the paid one + 2");
    assert_eq!(redis.cli(&["HGET", &account, "free_requests"]).trim(), "2");
    assert_eq!(env.list_json()[0]["free_requests_today"], 2);
}

#[test]
fn killing_redis_mid_load_loses_no_key_and_no_cooldown() {
    let mut redis = Redis::start();
    let fake = FakeOpenRouter::start();
    let env = Env::with_store(&redis.url());
    env.add_keys(&[key(1), key(2), key(3)]);
    let a = serve(&env, &fake);
    let b = serve(&env, &fake);
    fake.push(&key(1), Reply::rate_limit_per_min(reset_ms_in(600)));
    assert_eq!(chat(&a, &json!({"model": FREE})).status, 200);
    wait_until("B sees key 1 held", WAIT, || free_held(&b) == 1);

    // Load on both instances while Redis dies: every request is served.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let served = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for server in [&a, &b] {
            let (stop, served) = (&stop, &served);
            scope.spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let r = chat(server, &json!({"model": "openai/gpt-4o"}));
                    assert_eq!(r.status, 200, "{}", r.text());
                    served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
        let count = || served.load(std::sync::atomic::Ordering::SeqCst);
        wait_until("load is flowing", WAIT, || count() >= 20);
        redis.kill();
        let at_kill = count();
        wait_until("load goes on without Redis", WAIT, || {
            count() >= at_kill + 40
        });
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    // Both keep serving with what they know, and a cooldown decided
    // during the outage is kept.
    for _ in 0..5 {
        assert_eq!(chat(&a, &json!({"model": "openai/gpt-4o"})).status, 200);
        assert_eq!(chat(&b, &json!({"model": FREE})).status, 200);
    }
    for server in [&a, &b] {
        wait_until("/health reports the store unreachable", WAIT, || {
            health(server)["store"] == json!({"kind": "redis", "reachable": false})
        });
    }
    // The key B sticks to now answers 429: B parks it while Redis is down.
    let next = fake.requests().last().unwrap().key.clone().unwrap();
    assert_ne!(next, key(1));
    fake.push(&next, Reply::rate_limit_per_min(reset_ms_in(600)));
    wait_until("B rotates away from the 429", WAIT, || {
        chat(&b, &json!({"model": FREE})).status == 200 && free_held(&b) == 2
    });
    // An admin change cannot be made and says so.
    let auth = format!("Bearer {ADMIN}");
    let body = json!({"key": key(9), "verify": false}).to_string();
    let refused = request(
        "POST",
        &a.url("/admin/keys"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        Some(body.as_bytes()),
    );
    let v = refused.assert_openai_error(503);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("not made"), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{}", redis.port)), "{msg}");

    redis.restart();
    wait_until(
        "the keys and both cooldowns are back in Redis",
        WAIT,
        || {
            let out = env.run(&["keys", "list", "--json"]);
            if out.code != Some(0) {
                return false;
            }
            let keys: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
            keys.len() == 3 && keys.iter().filter(|k| k["status"] == "free_held").count() == 2
        },
    );
    let keys = by_id(&env);
    assert_eq!(keys[&key_id(&key(1))]["status"], "free_held");
    assert_eq!(keys[&key_id(&next)]["status"], "free_held");
    for server in [&a, &b] {
        wait_until("the instance is back on Redis", WAIT, || {
            server.log().contains("reachable again")
        });
        let log = server.log();
        assert_eq!(
            log.matches("is unreachable").count(),
            1,
            "the outage is logged once, not per request: {log}"
        );
        wait_until("the instance sees both cooldowns", WAIT, || {
            free_held(server) == 2
        });
        assert_eq!(health(server)["store"]["reachable"], true);
        let metrics = request("GET", &server.url("/metrics"), &[], None).text();
        assert!(
            metrics.contains("orproxy_store_reachable{kind=\"redis\"} 1"),
            "{metrics}"
        );
    }
    // And sharing works again: a key added now reaches both.
    env.add_keys(&[key(4)]);
    for server in [&a, &b] {
        wait_until("the new key arrives", WAIT, || {
            health(server)["keys"]["active"] == 2
        });
    }
}

#[test]
fn migrate_copies_a_file_store_into_redis_with_its_state() {
    let redis = Redis::start();
    let file = Env::new();
    file.add_keys(&[key(1), key(2)]);
    let mut store = file.store_json();
    store["keys"][1]["state"]["disabled"] = json!(true);
    store["keys"][1]["state"]["disabled_reason"] = json!("401 from OpenRouter");
    file.write_store(&store);
    let path = file.store.to_str().unwrap().to_owned();
    let out = file
        .run(&["keys", "migrate", "--from", &path, "--to", &redis.url()])
        .success();
    assert!(out.stdout.contains("2 of 2 keys copied"), "{}", out.stdout);
    let shared = Env::with_store(&redis.url());
    let keys = by_id(&shared);
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[&key_id(&key(2))]["status"], "disabled");
    assert_eq!(
        keys[&key_id(&key(2))]["disabled_reason"],
        "401 from OpenRouter"
    );
    // Again: nothing to copy, nothing changed.
    let again = file
        .run(&["keys", "migrate", "--from", &path, "--to", &redis.url()])
        .success();
    assert!(
        again.stdout.contains("0 of 2 keys copied"),
        "{}",
        again.stdout
    );
    assert_eq!(by_id(&shared).len(), 2);
}
