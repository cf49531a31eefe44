//! One model of what the keys can do, shown everywhere (issue 14): `:free`
//! requests are driven through the fake until an account's cap is hit, and
//! then the client's 429, `/health`, `/metrics`, `keys list --json` and the
//! admin API must say the same thing at the same moment. Counts are carried
//! into an account learned later, lowered by `keys check` when OpenRouter
//! counts fewer, and forgotten with `keys reactivate --forget-quota`.

use crate::common::fake_openrouter::{FakeOpenRouter, KeyInfoReply};
use crate::common::{Env, Resp, Server, chat, key, key_id, request, wait_until};
use crate::metrics::{scrape, value};
use serde_json::{Value, json};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);
const FREE: &str = "meta-llama/llama-3.3-70b-instruct:free";
const PAID: &str = "openai/gpt-4o";
const TOKEN: &str = "admin-token-availability-0123";

/// What OpenRouter's `GET /key` says of a key of `account`, which sent
/// `used` of its `limit` `:free` requests today (`None`: the account is
/// unknown to it, or it does not report the count).
fn key_info(account: Option<&str>, used_of: Option<(u64, u64)>) -> Value {
    let mut info = json!({
        "label": "sk-or-v1-0e6...f2a", "limit": null, "limit_remaining": null, "usage": 0,
        "is_free_tier": true, "creator_user_id": account,
    });
    if let Some((used, limit)) = used_of {
        info["free_model_daily_requests"] =
            json!({"used": used, "limit": limit, "remaining": limit.saturating_sub(used)});
    }
    info
}

fn serve(env: &Env, fake: &FakeOpenRouter) -> Server {
    let mut cmd = env.cmd(&[
        "serve",
        "--port",
        "0",
        "--upstream",
        &fake.base_url(),
        "--max-wait",
        "0",
    ]);
    cmd.env("ORPROXY_ADMIN_TOKEN", TOKEN);
    env.serve_cmd(cmd)
}

fn admin_keys(server: &Server) -> Value {
    let bearer = format!("Bearer {TOKEN}");
    let r = request(
        "GET",
        &server.url("/admin/keys"),
        &[("authorization", bearer.as_str())],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn health(server: &Server) -> Value {
    request("GET", &server.url("/health"), &[], None).json()
}

fn chats(fake: &FakeOpenRouter) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .count()
}

fn secs(rfc3339: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339.as_str().unwrap_or_else(|| panic!("{rfc3339}")))
        .unwrap()
        .timestamp()
}

/// Everything a user can look at, read back to back.
struct Seen {
    refused: Resp,
    health: Value,
    metrics: prometheus_parse::Scrape,
    list: Value,
    admin: Value,
}

fn look(env: &Env, server: &Server) -> Seen {
    Seen {
        refused: chat(server, &json!({"model": FREE})),
        health: health(server),
        metrics: scrape(server),
        list: Value::Array(env.list_json()),
        admin: admin_keys(server),
    }
}

impl Seen {
    /// Each key of `ids` is free held for `reason` until `until` (in every
    /// view), and the account counts `today` of `limit` and `minute`.
    #[track_caller]
    fn all_free_held(&self, ids: &[String], reason: &str, account: &str, counts: (u32, u32, u32)) {
        let (today, limit, minute) = counts;
        assert_eq!(self.list, self.admin, "keys list and the admin API");
        let list = self.list.as_array().unwrap();
        let until = secs(&list[0]["free_models"]["until"]);
        for (view, id) in list.iter().zip(ids) {
            assert_eq!(view["id"], id.as_str());
            assert_eq!(view["status"], "free_held", "{view}");
            assert_eq!(view["free_models"]["usable"], false, "{view}");
            assert_eq!(view["free_models"]["reason"], reason, "{view}");
            assert_eq!(secs(&view["free_models"]["until"]), until, "{view}");
            assert_eq!(view["free_requests_today"], today, "{view}");
            assert_eq!(view["free_daily_limit"], limit, "{view}");
            assert_eq!(view["free_requests_this_minute"], minute, "{view}");
        }
        let n = ids.len();
        assert_eq!(
            self.health["keys"],
            json!({"active": 0, "free_held": n, "cooling": 0, "disabled": 0}),
            "{}",
            self.health
        );
        assert_eq!(self.health["free_models"]["usable"], 0);
        assert_eq!(self.health["free_models"]["held"], n);
        assert_eq!(secs(&self.health["free_models"]["next_usable_at"]), until);
        let m = &self.metrics;
        let gauge = |name: &str, labels: &[(&str, &str)]| value(m, name, labels);
        assert_eq!(
            gauge("orproxy_keys", &[("state", "free_held")]),
            Some(n as f64)
        );
        assert_eq!(gauge("orproxy_keys", &[("state", "active")]), Some(0.0));
        for id in ids {
            let labels = [("key_id", id.as_str()), ("state", "free_held")];
            assert_eq!(gauge("orproxy_key_state", &labels), Some(1.0));
        }
        let account = [("account", account)];
        assert_eq!(
            gauge("orproxy_account_free_requests_today", &account),
            Some(f64::from(today))
        );
        assert_eq!(
            gauge("orproxy_account_free_daily_limit", &account),
            Some(f64::from(limit))
        );
        assert_eq!(
            gauge("orproxy_account_free_requests_this_minute", &account),
            Some(f64::from(minute))
        );
        // The client's 429: the same hold, the same instant.
        let v = self.refused.assert_openai_error(429);
        let retry: i64 = self.refused.header("retry-after").unwrap().parse().unwrap();
        let left = until - chrono::Utc::now().timestamp();
        assert!(
            (retry - left).abs() <= 2,
            "Retry-After {retry}, {left} s left: {v}"
        );
    }
}

#[test]
fn an_accounts_minute_cap_reads_the_same_in_the_429_health_metrics_keys_list_and_admin_api() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    for n in [1, 2] {
        fake.set_key_info(
            &key(n),
            KeyInfoReply::Ok(key_info(Some("user_m"), Some((0, 50)))),
        );
        env.add_verified(&key(n), &fake.base_url());
    }
    let ids = [key_id(&key(1)), key_id(&key(2))];
    let server = serve(&env, &fake);
    for i in 0..20 {
        let r = chat(&server, &json!({"model": FREE}));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    // The account's minute is spent: keys list says so within a second.
    wait_until("keys list to show the hold", T, || {
        env.list_json().iter().all(|k| k["status"] == "free_held")
    });
    let seen = look(&env, &server);
    seen.all_free_held(&ids, "free-models-per-min", "user_m", (20, 50, 20));
    let v = seen.refused.json();
    assert_eq!(v["error"]["code"], "free_models_held", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("2 keys at the :free per-minute cap") && message.contains("Paid models"),
        "{message}"
    );
    // Nothing was spent to learn it, and paid models still go through.
    assert_eq!(chats(&fake), 20);
    assert_eq!(chat(&server, &json!({"model": PAID})).status, 200);
    // The table says it too: free held, this minute's 20 of 20.
    let table = env.run(&["keys", "list"]).success().stdout;
    assert!(
        table.contains("free held") && table.contains("minute cap"),
        "{table}"
    );
    assert!(
        table.contains("20/50") && table.contains("20/20"),
        "{table}"
    );
}

#[test]
fn an_accounts_daily_cap_reads_the_same_everywhere_and_reactivate_says_so() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    fake.set_key_info(
        &key(1),
        KeyInfoReply::Ok(key_info(Some("user_d"), Some((45, 50)))),
    );
    env.add_verified(&key(1), &fake.base_url());
    let id = key_id(&key(1));
    let server = serve(&env, &fake);
    for _ in 0..5 {
        assert_eq!(chat(&server, &json!({"model": FREE})).status, 200);
    }
    wait_until("keys list to show the daily cap", T, || {
        env.list_json()[0]["free_models"]["reason"] == "free-models-per-day"
    });
    let seen = look(&env, &server);
    seen.all_free_held(
        std::slice::from_ref(&id),
        "free-models-per-day",
        "user_d",
        (50, 50, 5),
    );
    let v = seen.refused.json();
    assert_eq!(v["error"]["code"], "daily_free_quota_spent", "{v}");
    assert_eq!(seen.refused.header("x-should-retry"), Some("false"));
    let midnight = (chrono::Utc::now().date_naive() + chrono::Days::new(1))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    assert_eq!(
        secs(&seen.list[0]["free_models"]["until"]),
        midnight.timestamp()
    );
    assert_eq!(chats(&fake), 5);
    assert_eq!(chat(&server, &json!({"model": PAID})).status, 200);

    // Reactivating changes nothing about the account's day, and says so.
    let out = env.run(&["keys", "reactivate", "--all"]).success().stdout;
    assert!(
        out.contains("account user_d has spent its :free requests for today (50/50)")
            && out.contains("00:00 UTC")
            && out.contains("--forget-quota"),
        "{out}"
    );
    assert_eq!(env.list_json()[0]["status"], "free_held");

    // The user knows better: orproxy forgets its count, and the running
    // server sends `:free` requests again.
    let out = env
        .run(&["keys", "reactivate", "--forget-quota", &id])
        .success()
        .stdout;
    assert!(
        out.contains("forgot today's :free requests of account user_d (50 counted)"),
        "{out}"
    );
    wait_until("the server to serve :free models again", T, || {
        health(&server)["free_models"]["usable"] == 1
    });
    assert_eq!(chat(&server, &json!({"model": FREE})).status, 200);
    assert_eq!(chats(&fake), 7);
    wait_until("the new count in keys list", T, || {
        env.list_json()[0]["free_requests_today"] == 1
    });
    assert_eq!(env.list_json()[0]["status"], "active");
}

#[test]
fn a_keys_count_is_carried_into_its_newly_learned_account_and_survives_a_restart() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    // Key 1 is added unverified: its account is unknown, it counts alone.
    env.add_keys(&[key(1)]);
    fake.set_key_info(
        &key(2),
        KeyInfoReply::Ok(key_info(Some("user_c"), Some((0, 50)))),
    );
    let added = env
        .run(&[
            "keys",
            "add",
            "--key",
            &key(2),
            "--upstream",
            &fake.base_url(),
        ])
        .success()
        .stdout;
    // OpenRouter's label of the key as it reports it (its default label is
    // the key abbreviated: not a secret), and the store written to.
    assert!(added.contains("label \"sk-or-v1-0e6...f2a\""), "{added}");
    assert!(
        added.contains(&format!("to {}", env.store.display())),
        "{added}"
    );
    assert!(!added.contains("unverified"), "{added}");
    let (id1, id2) = (key_id(&key(1)), key_id(&key(2)));
    let mut server = serve(&env, &fake);
    for _ in 0..3 {
        let r = chat(&server, &json!({"model": FREE}));
        assert_eq!(r.header("x-orproxy-key"), Some(id1.as_str()), "sticky");
    }
    wait_until("key 1's own count in keys list", T, || {
        env.list_json()[0]["free_requests_today"] == 3
    });
    // OpenRouter now tells key 1's account, without a count of its own.
    fake.set_key_info(&key(1), KeyInfoReply::Ok(key_info(Some("user_c"), None)));
    let out = env
        .run(&["keys", "check", &id1, "--upstream", &fake.base_url()])
        .success()
        .stdout;
    assert!(
        out.contains(&format!(
            "key {id1}: its account is user_c: the 3 :free requests"
        )),
        "{out}"
    );
    // The account has them: added, not dropped, in the store and the server.
    assert!(
        env.list_json()
            .iter()
            .all(|k| k["free_requests_today"] == 3),
        "{:?}",
        env.list_json()
    );
    let today = |s: &prometheus_parse::Scrape| {
        value(
            s,
            "orproxy_account_free_requests_today",
            &[("account", "user_c")],
        )
    };
    wait_until("the server's count of the account", T, || {
        today(&scrape(&server)) == Some(3.0)
    });
    let s = scrape(&server);
    assert_eq!(
        value(
            &s,
            "orproxy_account_free_requests_today",
            &[("account", &format!("key:{id1}"))]
        ),
        None,
        "no count left behind"
    );
    // Counting goes on from there, not from 1.
    for _ in 0..2 {
        assert_eq!(chat(&server, &json!({"model": FREE})).status, 200);
    }
    wait_until("5 in keys list", T, || {
        env.list_json()
            .iter()
            .all(|k| k["free_requests_today"] == 5)
    });
    assert_eq!(env.list_json()[1]["id"], id2.as_str());
    // And the count survives a restart.
    assert_eq!(server.signal_and_wait("TERM").code(), Some(0));
    drop(server);
    let server = serve(&env, &fake);
    let s = scrape(&server);
    assert_eq!(
        value(
            &s,
            "orproxy_account_free_requests_today",
            &[("account", "user_c")]
        ),
        Some(5.0)
    );
    assert_eq!(admin_keys(&server)[0]["free_requests_this_minute"], 5);
}

#[test]
fn keys_check_lowers_a_count_when_openrouter_counts_fewer() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    fake.set_key_info(
        &key(1),
        KeyInfoReply::Ok(key_info(Some("user_l"), Some((0, 50)))),
    );
    env.add_verified(&key(1), &fake.base_url());
    let server = serve(&env, &fake);
    for _ in 0..4 {
        assert_eq!(chat(&server, &json!({"model": FREE})).status, 200);
    }
    wait_until("4 in keys list", T, || {
        env.list_json()[0]["free_requests_today"] == 4
    });
    // OpenRouter counted only one of them (the others failed early, say).
    fake.set_key_info(
        &key(1),
        KeyInfoReply::Ok(key_info(Some("user_l"), Some((1, 50)))),
    );
    let out = env
        .run(&["keys", "check", "--upstream", &fake.base_url()])
        .success()
        .stdout;
    assert!(
        out.contains(
            "account user_l: OpenRouter counts 1 :free requests today where orproxy counted 4"
        ),
        "{out}"
    );
    // The running server takes OpenRouter's count and never writes its own back.
    wait_until("the server to count 1", T, || {
        let s = scrape(&server);
        value(
            &s,
            "orproxy_account_free_requests_today",
            &[("account", "user_l")],
        ) == Some(1.0)
    });
    assert_eq!(chat(&server, &json!({"model": FREE})).status, 200);
    wait_until("2 in keys list", T, || {
        env.list_json()[0]["free_requests_today"] == 2
    });
}

#[test]
fn the_servers_recheck_of_a_key_carries_its_count_into_the_account_it_learns() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    env.add_keys(&[key(1), key(2)]);
    let id1 = key_id(&key(1));
    let server = env.serve(
        &fake.base_url(),
        &["--max-failures", "1", "--reprobe-interval", "1"],
    );
    for _ in 0..3 {
        let r = chat(&server, &json!({"model": FREE}));
        assert_eq!(r.header("x-orproxy-key"), Some(id1.as_str()), "sticky");
    }
    // Key 1 fails while key 2 answers: it is disabled, with 4 :free
    // requests of its own today (the failed one counts too); OpenRouter
    // fails its re-checks for now.
    let down = crate::common::fake_openrouter::Reply::server_error(503);
    fake.set_key_info(&key(1), KeyInfoReply::Custom(down));
    fake.push(
        &key(1),
        crate::common::fake_openrouter::Reply::server_error(500),
    );
    assert_eq!(chat(&server, &json!({"model": FREE})).status, 200);
    wait_until("key 1 disabled with its own count", T, || {
        let k = &env.list_json()[0];
        k["status"] == "disabled" && k["free_requests_today"] == 4
    });
    // The server's re-check learns its account from GET /key (which
    // reports no count): the account has the key's 4.
    fake.set_key_info(&key(1), KeyInfoReply::Ok(key_info(Some("user_p"), None)));
    wait_until("key 1 back, in its account, with its count", T, || {
        let k = &env.list_json()[0];
        k["status"] == "active" && k["account"] == "user_p" && k["free_requests_today"] == 4
    });
    wait_until("the server's count of the account", T, || {
        let s = scrape(&server);
        value(
            &s,
            "orproxy_account_free_requests_today",
            &[("account", "user_p")],
        ) == Some(4.0)
    });
}
