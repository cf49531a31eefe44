//! orproxy reading OpenRouter's answers like an expert: which 429s bench a
//! key, which park a whole account, which are nobody's fault; quotas counted
//! per account; disabled keys re-checked.

use crate::common::fake_openrouter::{FakeOpenRouter, KeyInfoReply, Reply};
use crate::common::{Env, Server, chat, key, key_id, reset_ms_in, setup, wait_until};
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);
const FREE: &str = "meta-llama/llama-3.3-70b-instruct:free";
const PAID: &str = "openai/gpt-4o";

fn key_info(account: &str, used: u64, limit: u64) -> serde_json::Value {
    json!({
        "label": "k", "limit": null, "limit_remaining": null, "usage": 0, "is_free_tier": limit == 50,
        "creator_user_id": account,
        "free_model_daily_requests": {"used": used, "limit": limit, "remaining": limit.saturating_sub(used)}
    })
}

/// Keys added with verification, so orproxy learns their accounts.
fn setup_accounts(accounts: &[(usize, &str)], args: &[&str]) -> (Env, FakeOpenRouter, Server) {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    for (n, account) in accounts {
        fake.set_key_info(&key(*n), KeyInfoReply::Ok(key_info(account, 0, 1000)));
        env.add_verified(&key(*n), &fake.base_url());
    }
    let server = env.serve(&fake.base_url(), args);
    (env, fake, server)
}

/// Chat requests (not GET /key checks) the fake received with `key`.
fn chats_for(fake: &FakeOpenRouter, key: &str) -> Vec<crate::common::fake_openrouter::Recorded> {
    fake.requests_for(key)
        .into_iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .collect()
}

fn next_midnight() -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now();
    (now.date_naive() + chrono::Days::new(1))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
}

#[test]
fn a_provider_429_leaves_the_key_active_and_is_retried_after_its_hint() {
    let (env, fake, server) = setup(1, &["--max-wait", "10"]);
    fake.push(&key(1), Reply::provider_rate_limited(1));
    let r = chat(&server, &json!({"model": FREE}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-orproxy-attempts"), Some("2"));
    assert_eq!(
        fake.requests_for(&key(1)).len(),
        2,
        "same key: it was not at fault"
    );
    wait_until("state written", T, || {
        env.list_json()[0]["requests_total"] == 1
    });
    let k = &env.list_json()[0];
    assert_eq!(k["status"], "active");
    assert_eq!(k["consecutive_failures"], 0);
}

#[test]
fn a_provider_429_beyond_max_wait_reaches_the_client_with_its_retry_after() {
    let (env, fake, server) = setup(1, &["--max-wait", "2"]);
    fake.push(&key(1), Reply::provider_rate_limited(29));
    let r = chat(&server, &json!({"model": FREE}));
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("29"));
    assert_eq!(r.json()["error"]["message"], "Provider returned error");
    assert_eq!(
        fake.request_count(),
        1,
        "no request burnt on a retry that cannot help"
    );
    wait_until("state written", T, || {
        env.list_json()[0]["last_used"].is_string()
    });
    assert_eq!(env.list_json()[0]["status"], "active");
}

#[test]
fn a_daily_cap_parks_the_key_for_free_models_until_midnight_utc() {
    let (env, fake, server) = setup(1, &["--max-wait", "5"]);
    let midnight = next_midnight();
    let reset = u64::try_from(midnight.timestamp_millis()).unwrap();
    fake.push(&key(1), Reply::rate_limit_per_day(reset));
    let r = chat(&server, &json!({"model": FREE}));
    let v = r.assert_openai_error(429);
    assert_eq!(v["error"]["code"], "daily_free_quota_spent");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("00:00 UTC"),
        "{v}"
    );
    assert_eq!(r.header("x-should-retry"), Some("false"));
    let retry: i64 = r.header("retry-after").unwrap().parse().unwrap();
    let expected = (midnight - chrono::Utc::now()).num_seconds();
    assert!((retry - expected).abs() <= 2, "{retry} vs {expected}");
    // Never retried on that account today.
    assert_eq!(chat(&server, &json!({"model": FREE})).status, 429);
    assert_eq!(fake.request_count(), 1);
    // Paid models still go through the same key.
    assert_eq!(chat(&server, &json!({"model": PAID})).status, 200);
    wait_until("the hold in keys list", T, || {
        env.list_json()[0]["status"] == "free_held"
    });
    let k = &env.list_json()[0];
    assert_eq!(k["cooldown_reason"], "free-models-per-day");
    assert_eq!(k["free_models"]["usable"], false);
    assert_eq!(k["free_models"]["reason"], "free-models-per-day");
    let until =
        chrono::DateTime::parse_from_rfc3339(k["cooldown_until"].as_str().unwrap()).unwrap();
    assert_eq!(until.timestamp(), midnight.timestamp());
}

#[test]
fn keys_of_one_account_are_parked_together() {
    let (env, fake, server) = setup_accounts(
        &[(1, "user_shared"), (2, "user_shared"), (3, "user_other")],
        &[],
    );
    fake.push(&key(1), Reply::rate_limit_per_min(reset_ms_in(50)));
    let r = chat(&server, &json!({"model": FREE}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-orproxy-key"),
        Some(key_id(&key(3)).as_str()),
        "another account"
    );
    assert!(
        chats_for(&fake, &key(2)).is_empty(),
        "same account: not tried"
    );
    wait_until("both parked", T, || {
        let l = env.list_json();
        l[0]["status"] == "free_held" && l[1]["status"] == "free_held" && l[2]["status"] == "active"
    });
    let table = env.run(&["keys", "list"]).success().stdout;
    assert!(
        table.contains("Account") && table.contains("user_shared"),
        "{table}"
    );
}

#[test]
fn an_account_at_its_minute_cap_is_skipped_without_spending_a_request() {
    let (_env, fake, server) = setup_accounts(&[(1, "user_a"), (2, "user_b")], &[]);
    for _ in 0..20 {
        let r = chat(&server, &json!({"model": FREE}));
        assert_eq!(r.header("x-orproxy-key"), Some(key_id(&key(1)).as_str()));
    }
    // The 21st free request this minute would be refused: key 1 is not asked.
    let r = chat(&server, &json!({"model": FREE}));
    assert_eq!(r.header("x-orproxy-key"), Some(key_id(&key(2)).as_str()));
    assert_eq!(chats_for(&fake, &key(1)).len(), 20);
    // Paid models are not counted against the free caps.
    let r = chat(&server, &json!({"model": PAID}));
    assert_eq!(r.status, 200);
}

#[test]
fn a_daily_count_learned_from_get_key_stops_requests_at_the_cap() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    fake.set_key_info(&key(1), KeyInfoReply::Ok(key_info("user_a", 49, 50)));
    env.add_verified(&key(1), &fake.base_url());
    let server = env.serve(&fake.base_url(), &["--max-wait", "1"]);
    assert_eq!(chat(&server, &json!({"model": FREE})).status, 200);
    let r = chat(&server, &json!({"model": FREE}));
    let v = r.assert_openai_error(429);
    assert_eq!(v["error"]["code"], "daily_free_quota_spent");
    assert_eq!(
        fake.requests()
            .iter()
            .filter(|r| r.path.ends_with("/chat/completions"))
            .count(),
        1
    );
    // The count survives a restart (it is kept in the store).
    let mut server = server;
    assert_eq!(server.signal_and_wait("TERM").code(), Some(0));
    drop(server);
    let server = env.serve(&fake.base_url(), &["--max-wait", "1"]);
    chat(&server, &json!({"model": FREE})).assert_openai_error(429);
    assert_eq!(
        fake.requests()
            .iter()
            .filter(|r| r.path.ends_with("/chat/completions"))
            .count(),
        1
    );
}

#[test]
fn a_model_at_capacity_backs_off_without_benching_the_key() {
    let (env, fake, server) = setup(2, &["--max-wait", "10"]);
    let busy = json!({"error": {"message": "Rate limit exceeded: limit_rpm/meta-llama/llama-3.3-70b-instruct/abc. High demand for meta-llama/llama-3.3-70b-instruct:free on OpenRouter - limited to 20 requests per minute.", "code": 429, "metadata": {"headers": {"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset_ms_in(1).to_string()}, "provider_name": null}}});
    fake.push(&key(1), Reply::json(429, &busy));
    let r = chat(&server, &json!({"model": FREE}));
    assert_eq!(r.status, 200, "{}", r.text());
    wait_until("state written", T, || {
        env.list_json()[0]["last_used"].is_string()
    });
    assert!(
        env.list_json().iter().all(|k| k["status"] == "active"),
        "no key benched"
    );

    // Beyond --max-wait: an honest 429 for that model, without asking upstream.
    let later = json!({"error": {"message": "Rate limit exceeded: limit_rpm/x/y. High demand for x/y:free on OpenRouter", "code": 429, "metadata": {"headers": {"X-RateLimit-Reset": reset_ms_in(120).to_string()}, "provider_name": null}}});
    fake.set_default(&key(1), Reply::json(429, &later));
    fake.set_default(&key(2), Reply::json(429, &later));
    let n = fake.request_count();
    let r = chat(&server, &json!({"model": "x/y:free"}));
    let v = r.assert_openai_error(429);
    assert_eq!(v["error"]["code"], "model_at_capacity");
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 100);
    let r2 = chat(&server, &json!({"model": "x/y:free"}));
    assert_eq!(r2.status, 429);
    assert_eq!(
        fake.request_count(),
        n + 1,
        "the second request was held back, not sent"
    );
    // Other models are not held.
    fake.clear_default(&key(1));
    fake.clear_default(&key(2));
    assert_eq!(chat(&server, &json!({"model": FREE})).status, 200);
}

#[test]
fn key_spending_limits_park_until_the_period_ends_and_total_disables() {
    let (env, fake, server) = setup(2, &[]);
    let daily = json!({"error": {"message": "Key limit exceeded (daily limit). Manage it using https://openrouter.ai/settings/keys", "code": 403}});
    fake.push(&key(1), Reply::json(403, &daily));
    assert_eq!(chat(&server, &json!({"model": PAID})).status, 200);
    wait_until("key 1 cooling", T, || {
        env.list_json()[0]["status"] == "cooling"
    });
    let until = env.list_json()[0]["cooldown_until"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(&until)
            .unwrap()
            .timestamp(),
        next_midnight().timestamp()
    );
    let total = json!({"error": {"message": "Key limit exceeded (total limit).", "code": 403}});
    fake.push(&key(2), Reply::json(403, &total));
    // Key 2 is now the only usable key; its total limit disables it, and the
    // client gets an honest error (key 1 cools until midnight).
    let r = chat(&server, &json!({"model": PAID}));
    assert!(r.status == 403 || r.status == 429, "{}", r.text());
    wait_until("key 2 disabled", T, || {
        env.list_json()[1]["status"] == "disabled"
    });
    assert!(
        env.list_json()[1]["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("total limit")
    );
}

#[test]
fn a_402_about_the_request_passes_through_and_one_about_credits_parks_the_account() {
    let (env, fake, server) = setup(2, &[]);
    let about_request = json!({"error": {"message": "This request requires more credits, or fewer max_tokens. You requested up to 64000 tokens, but can only afford 1000.", "code": 402}});
    fake.push(&key(1), Reply::json(402, &about_request));
    let r = chat(&server, &json!({"model": PAID, "max_tokens": 64000}));
    assert_eq!(r.status, 402);
    assert_eq!(r.json(), about_request);
    assert_eq!(fake.request_count(), 1);
    let credits = json!({"error": {"message": "Insufficient credits. Add more using https://openrouter.ai/credits", "code": 402}});
    fake.push(&key(1), Reply::json(402, &credits));
    let r = chat(&server, &json!({"model": PAID}));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-orproxy-key"), Some(key_id(&key(2)).as_str()));
    wait_until("key 1 parked", T, || {
        env.list_json()[0]["status"] == "cooling"
    });
    assert_eq!(
        env.list_json()[0]["cooldown_reason"],
        "insufficient-credits"
    );
}

#[test]
fn an_error_inside_a_200_body_is_retried_on_another_key() {
    let (_env, fake, server) = setup(2, &[]);
    fake.push(
        &key(1),
        Reply::json(200, &json!({"error": {"message": "Provider returned error", "code": 502, "metadata": {"provider_name": null}}})),
    );
    let r = chat(&server, &json!({"model": PAID}));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-orproxy-attempts"), Some("2"));
    assert!(r.json()["choices"].is_array(), "{}", r.text());
}

#[test]
fn disabled_keys_are_rechecked_and_come_back_and_rejected_ones_are_rechecked_rarely() {
    let (env, fake, server) = setup(3, &["--max-failures", "1", "--reprobe-interval", "1"]);
    fake.push(&key(1), Reply::server_error(500));
    // While OpenRouter still fails for key 1, re-checks leave it disabled.
    fake.set_key_info(&key(1), KeyInfoReply::Custom(Reply::server_error(503)));
    fake.set_key_info(&key(2), KeyInfoReply::Invalid);
    fake.push(&key(2), Reply::unauthorized());
    // Key 1 fails, key 2 is rejected (401), key 3 answers: key 1's failure
    // counts against it (another key worked), and it reaches the limit.
    let r = chat(&server, &json!({"model": PAID}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-orproxy-key"), Some(key_id(&key(3)).as_str()));
    let rechecked = format!("re-checked disabled key {}", key_id(&key(1)));
    wait_until("a failed re-check", T, || server.log().contains(&rechecked));
    assert_eq!(env.list_json()[0]["status"], "disabled");
    // OpenRouter answers again: the next re-check brings the key back.
    fake.set_key_info(&key(1), KeyInfoReply::Ok(key_info("user_a", 0, 1000)));
    wait_until("key 1 back after a healthy GET /key", T, || {
        env.list_json()[0]["status"] == "active" && env.list_json()[0]["failures_total"] == 1
    });
    assert!(
        fake.requests_for(&key(1))
            .iter()
            .any(|r| r.path.ends_with("/key"))
    );
    // The rejected key is checked too (OpenRouter may have answered 401 by
    // mistake), twelve times more rarely: once so far.
    wait_until("key 2 re-checked", T, || {
        fake.requests_for(&key(2))
            .iter()
            .any(|r| r.path.ends_with("/key"))
    });
    let k2 = &env.list_json()[1];
    assert_eq!(k2["status"], "disabled", "OpenRouter still rejects it");
    assert!(k2["disabled_reason"].as_str().unwrap().contains("401"));
    let checks = |k: &str| {
        fake.requests_for(k)
            .iter()
            .filter(|r| r.path.ends_with("/key"))
            .count()
    };
    let key1_checks = checks(&key(1));
    wait_until(
        "key 1 checked again... no: key 1 is back; key 3 serves",
        T,
        || chat(&server, &json!({"model": PAID})).status == 200,
    );
    assert_eq!(checks(&key(2)), 1, "not again within 12 s");
    assert!(key1_checks >= 2);
}

#[test]
fn keys_check_records_what_openrouter_says() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    env.add_keys(&[key(1), key(2)]);
    fake.set_key_info(&key(1), KeyInfoReply::Ok(key_info("user_a", 12, 50)));
    fake.set_key_info(&key(2), KeyInfoReply::Invalid);
    let out = env.run(&["keys", "check", "--upstream", &fake.base_url()]);
    assert_eq!(out.code, Some(1), "a rejected key makes it fail: {out:?}");
    assert!(
        out.stdout.contains("user_a") && out.stdout.contains("12/50"),
        "{out:?}"
    );
    assert!(out.stdout.contains("orproxy keys remove"), "{out:?}");
    let list = env.list_json();
    assert_eq!(list[0]["account"], "user_a");
    // Verified now, with OpenRouter's count and limit of the account; the
    // rejected key stays unverified.
    assert_eq!(list[0]["verified"], true);
    assert_eq!(list[0]["free_requests_today"], 12);
    assert_eq!(list[0]["free_daily_limit"], 50);
    assert_eq!(list[1]["verified"], false);
    let json_out = env
        .run(&[
            "keys",
            "check",
            &key_id(&key(1)),
            "--json",
            "--upstream",
            &fake.base_url(),
        ])
        .success();
    let v: serde_json::Value = serde_json::from_str(&json_out.stdout).unwrap();
    assert_eq!(v[0]["result"], "ok");
    assert_eq!(v[0]["info"]["free_model_daily_requests"]["used"], 12);
    assert!(!json_out.stdout.contains(&key(1)));
}
