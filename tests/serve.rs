//! `orproxy serve` against the in-suite fake OpenRouter: routing, bodies,
//! headers, rotation, cooldowns, failures, waiting.

use crate::common::fake_openrouter::{FakeOpenRouter, Reply};
use crate::common::{Env, chat, key, key_id, request, reset_ms_in, setup, wait_until};
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

#[test]
fn bodies_pass_through_byte_for_byte_with_the_pool_key() {
    let (_env, fake, server) = setup(1, &[]);
    // Odd spacing, key order and unicode: re-serialising would change them.
    let body = "{ \"stream\":false,\n  \"model\" : \"meta-llama/llama-3.3-70b-instruct:free\", \"messages\":[{\"role\":\"user\",\"content\":\"h\\u00e9 ✓\"}], \"provider\": {\"order\": [\"x\"]}, \"extra\": 1.50 }";
    let upstream_body = "{\"id\":\"gen-1\",  \"object\":\"chat.completion\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"ok ✓\"},\"finish_reason\":\"stop\"}] ,\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}";
    fake.push(
        &key(1),
        Reply::Raw {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: upstream_body.as_bytes().to_vec(),
        },
    );
    let resp = request(
        "POST",
        &server.url("/v1/chat/completions"),
        &[
            ("authorization", "Bearer dummy-key"),
            ("content-type", "application/json"),
        ],
        Some(body.as_bytes()),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.body, upstream_body.as_bytes());
    assert_eq!(resp.header("x-orproxy-key"), Some(key_id(&key(1)).as_str()));
    assert_eq!(resp.header("x-orproxy-attempts"), Some("1"));
    let got = fake.wait_requests(1, T);
    assert_eq!(got[0].body, body.as_bytes());
    assert_eq!(got[0].path, "/api/v1/chat/completions");
    assert_eq!(
        got[0].header("authorization"),
        Some(format!("Bearer {}", key(1)).as_str())
    );
}

#[test]
fn request_headers_are_cleaned_and_attributed() {
    let (_env, fake, server) = setup(1, &[]);
    let resp = request(
        "POST",
        &server.url("/v1/chat/completions"),
        &[
            ("authorization", "Bearer dummy-key"),
            ("content-type", "application/json"),
            ("openai-organization", "org-123"),
            ("openai-project", "proj-123"),
            ("x-stainless-lang", "python"),
            ("user-agent", "OpenAI/Python 2.0"),
            ("x-session-id", "abc"),
        ],
        Some(br#"{"model":"m","messages":[]}"#),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let got = &fake.wait_requests(1, T)[0];
    assert_eq!(got.header("openai-organization"), None);
    assert_eq!(got.header("openai-project"), None);
    assert_eq!(
        got.header_all("authorization"),
        vec![format!("Bearer {}", key(1))]
    );
    assert_eq!(got.header("x-stainless-lang"), Some("python"));
    assert_eq!(got.header("user-agent"), Some("OpenAI/Python 2.0"));
    assert_eq!(got.header("x-session-id"), Some("abc"));
    assert_eq!(got.header("x-title"), Some("orproxy"));
    assert!(got.header("http-referer").is_some());

    // The client's own attribution wins.
    let resp = request(
        "POST",
        &server.url("/v1/chat/completions"),
        &[
            ("content-type", "application/json"),
            ("x-title", "My App"),
            ("http-referer", "https://example.test/app"),
        ],
        Some(br#"{"model":"m"}"#),
    );
    assert_eq!(resp.status, 200);
    let got = &fake.wait_requests(2, T)[1];
    assert_eq!(got.header_all("x-title"), vec!["My App"]);
    assert_eq!(
        got.header_all("http-referer"),
        vec!["https://example.test/app"]
    );
}

#[test]
fn attribution_defaults_come_from_the_original_variables() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    env.add_keys(&[key(1)]);
    let mut cmd = env.cmd(&["serve", "--port", "0", "--upstream", &fake.base_url()]);
    cmd.env("HTTP_REFERER", "https://team.test")
        .env("SITE_NAME", "Team Proxy");
    let server = env.serve_cmd(cmd);
    assert_eq!(chat(&server, &json!({"model": "m"})).status, 200);
    let got = &fake.wait_requests(1, T)[0];
    assert_eq!(got.header("http-referer"), Some("https://team.test"));
    assert_eq!(got.header("x-title"), Some("Team Proxy"));
}

#[test]
fn every_v1_path_and_query_is_forwarded_also_under_api_v1() {
    let (_env, fake, server) = setup(1, &[]);
    let r = request(
        "GET",
        &server.url("/v1/generation?id=gen-42&x=1"),
        &[],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r2 = request(
        "GET",
        &server.url("/api/v1/generation?id=gen-43"),
        &[],
        None,
    );
    assert_eq!(r2.status, 200);
    let got = fake.wait_requests(2, T);
    assert_eq!(got[0].path, "/api/v1/generation");
    assert_eq!(got[0].query.as_deref(), Some("id=gen-42&x=1"));
    assert_eq!(got[1].query.as_deref(), Some("id=gen-43"));
    assert_eq!(got[1].key.as_deref(), Some(key(1).as_str()));
    let embed = request(
        "POST",
        &server.url("/api/v1/embeddings"),
        &[("content-type", "application/json")],
        Some(br#"{"model":"e","input":"x"}"#),
    );
    assert_eq!(embed.status, 200);
    assert_eq!(fake.wait_requests(3, T)[2].path, "/api/v1/embeddings");
}

#[test]
fn models_are_listed_even_without_keys() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    let server = env.serve(&fake.base_url(), &[]);
    let r = request(
        "GET",
        &server.url("/v1/models"),
        &[("authorization", "Bearer dummy")],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["data"].as_array().is_some_and(|a| !a.is_empty()));
    let got = &fake.wait_requests(1, T)[0];
    assert_eq!(
        got.header("authorization"),
        None,
        "no key to send, and none needed"
    );
}

#[test]
fn orproxy_errors_are_openai_shaped_and_bad_bodies_never_go_upstream() {
    let (_env, fake, server) = setup(1, &["--max-body", "1KiB"]);
    let bad = request(
        "POST",
        &server.url("/v1/chat/completions"),
        &[("content-type", "application/json")],
        Some(b"{not json"),
    );
    bad.assert_openai_error(400);
    let utf8 = request(
        "POST",
        &server.url("/v1/chat/completions"),
        &[("content-type", "application/json")],
        Some(b"{\"model\":\"\xff\xfe\"}"),
    );
    utf8.assert_openai_error(400);
    let big = vec![b' '; 2048];
    request("POST", &server.url("/v1/chat/completions"), &[], Some(&big)).assert_openai_error(413);
    request("GET", &server.url("/v2/whatever"), &[], None).assert_openai_error(404);
    request("GET", &server.url("/"), &[], None).assert_openai_error(404);
    request("GET", &server.url("/v1/chat/completions"), &[], None).assert_openai_error(405);
    request("DELETE", &server.url("/v1/models"), &[], None).assert_openai_error(405);
    // A known path with the wrong method is a 405 too, saying which to use.
    for path in ["/health", "/metrics"] {
        let v = request("POST", &server.url(path), &[], Some(b"{}")).assert_openai_error(405);
        assert!(
            v["error"]["message"].as_str().unwrap().contains("use GET"),
            "{v}"
        );
    }
    assert_eq!(fake.request_count(), 0, "nothing reached the upstream");
}

#[test]
fn health_reports_key_counts() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    let server = env.serve(&fake.base_url(), &[]);
    let h = request("GET", &server.url("/health"), &[], None);
    assert_eq!(h.status, 503);
    assert_eq!(
        h.json()["keys"],
        json!({"active": 0, "free_held": 0, "cooling": 0, "disabled": 0})
    );
    assert!(h.json()["status"].as_str().unwrap().contains("no keys"));
    env.add_keys(&[key(1)]);
    wait_until("the server to see the new key", T, || {
        request("GET", &server.url("/health"), &[], None).status == 200
    });
    let h = request("GET", &server.url("/health"), &[], None);
    assert_eq!(
        h.json(),
        json!({
            "status": "ok",
            "keys": {"active": 1, "free_held": 0, "cooling": 0, "disabled": 0},
            "free_models": {"usable": 1, "held": 0, "next_usable_at": null},
            "store": {"kind": "file", "reachable": true},
            "upstream": {"status": "up", "since": null, "reason": null}
        })
    );
}

#[test]
fn the_current_key_is_sticky() {
    let (_env, fake, server) = setup(3, &[]);
    for _ in 0..5 {
        assert_eq!(chat(&server, &json!({"model": "m"})).status, 200);
    }
    let got = fake.wait_requests(5, T);
    let first = got[0].key.clone();
    assert!(got.iter().all(|r| r.key == first), "all on one key");
}

#[test]
fn rate_limited_key_cools_until_the_reset_in_milliseconds_and_the_next_lru_key_serves() {
    let (env, fake, server) = setup(3, &[]);
    // Make key 1 current and the most recently used.
    assert_eq!(chat(&server, &json!({"model": "m:free"})).status, 200);
    assert_eq!(
        fake.wait_requests(1, T)[0].key.as_deref(),
        Some(key(1).as_str())
    );
    let reset = reset_ms_in(120);
    fake.push(&key(1), Reply::rate_limit_per_min(reset));
    let r = chat(&server, &json!({"model": "m:free"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-orproxy-attempts"), Some("2"));
    assert_eq!(
        r.header("x-orproxy-key"),
        Some(key_id(&key(2)).as_str()),
        "LRU: key 2 never used"
    );
    // The hold (for `:free` models: the per-minute cap is the account's)
    // reaches the store (and `keys list`) within a couple of seconds.
    wait_until("key 1 free held in keys list", T, || {
        env.list_json()[0]["status"] == "free_held"
    });
    let k1 = &env.list_json()[0];
    assert_eq!(k1["cooldown_reason"], "free-models-per-min");
    let until =
        chrono::DateTime::parse_from_rfc3339(k1["cooldown_until"].as_str().unwrap()).unwrap();
    let expected = i64::try_from(reset / 1000).unwrap();
    assert!(
        (until.timestamp() - expected).abs() <= 1,
        "{until} vs {expected}"
    );
    // Key 1 is never sent while cooling: key 2 is now sticky.
    for _ in 0..3 {
        assert_eq!(chat(&server, &json!({"model": "m:free"})).status, 200);
    }
    assert_eq!(fake.requests_for(&key(1)).len(), 2);
    // Key 2 rate-limited too: the least recently used of the rest is key 3.
    fake.push(&key(2), Reply::rate_limit_per_day(reset_ms_in(3600)));
    let r = chat(&server, &json!({"model": "m:free"}));
    assert_eq!(r.header("x-orproxy-key"), Some(key_id(&key(3)).as_str()));
}

#[test]
fn a_new_cooldown_never_shortens_the_current_one() {
    let (env, fake, server) = setup(2, &[]);
    // Two requests in flight on key 1 at once; the longer reset answers first.
    let long = reset_ms_in(600);
    let short = reset_ms_in(60);
    fake.push(
        &key(1),
        Reply::rate_limit_per_min(long).delayed(Duration::from_millis(1000)),
    );
    fake.push(
        &key(1),
        Reply::rate_limit_per_min(short).delayed(Duration::from_millis(2000)),
    );
    let s = &server;
    std::thread::scope(|scope| {
        let a = scope.spawn(|| chat(s, &json!({"model": "m:free"})));
        let b = scope.spawn(|| chat(s, &json!({"model": "m:free"})));
        assert_eq!(a.join().unwrap().status, 200);
        assert_eq!(b.join().unwrap().status, 200);
    });
    assert_eq!(
        fake.requests_for(&key(1)).len(),
        2,
        "both went to the sticky key"
    );
    wait_until("the hold in the store", T, || {
        env.list_json()[0]["status"] == "free_held"
    });
    wait_until("both reports applied", T, || {
        let until = env.list_json()[0]["cooldown_until"]
            .as_str()
            .map(str::to_owned);
        until.is_some_and(|u| {
            let t = chrono::DateTime::parse_from_rfc3339(&u)
                .unwrap()
                .timestamp();
            (t - i64::try_from(long / 1000).unwrap()).abs() <= 1
        })
    });
}

#[test]
fn a_401_disables_the_key_at_once_and_the_request_still_succeeds() {
    let (env, fake, server) = setup(2, &[]);
    fake.set_default(&key(1), Reply::unauthorized());
    let r = chat(&server, &json!({"model": "m"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-orproxy-key"), Some(key_id(&key(2)).as_str()));
    wait_until("key 1 disabled in the store", T, || {
        env.list_json()[0]["status"] == "disabled"
    });
    let reason = env.list_json()[0]["disabled_reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("401") && reason.contains("User not found"),
        "{reason}"
    );
    for _ in 0..3 {
        chat(&server, &json!({"model": "m"}));
    }
    let sent = |k: &str| {
        fake.requests_for(k)
            .iter()
            .filter(|r| !r.path.ends_with("/key"))
            .count()
    };
    assert_eq!(sent(&key(1)), 1, "a disabled key is never used");
}

#[test]
fn a_single_keys_5xx_is_retried_and_never_disables_it() {
    let (env, fake, server) = setup(1, &["--max-failures", "3", "--max-attempts", "2"]);
    // One failure then a success: retried, and nothing is counted.
    fake.push(&key(1), Reply::server_error(502));
    let r = chat(&server, &json!({"model": "m"}));
    assert_eq!(r.status, 200, "retried after the 502: {}", r.text());
    assert_eq!(r.header("x-orproxy-attempts"), Some("2"));
    wait_until("requests counted", T, || {
        env.list_json()[0]["requests_total"] == 1
    });
    assert_eq!(env.list_json()[0]["consecutive_failures"], 0);
    // The only key failing again and again: the upstream's answer, and the
    // key stays in the pool (with no other key to compare, nothing says it
    // is the key's fault).
    fake.set_default(&key(1), Reply::server_error(500));
    for _ in 0..5 {
        let r = chat(&server, &json!({"model": "m"}));
        assert_eq!(
            r.status,
            500,
            "the upstream's own answer once attempts run out: {}",
            r.text()
        );
    }
    let h = request("GET", &server.url("/health"), &[], None);
    assert_eq!(h.status, 200, "{}", h.text());
    assert_eq!(h.json()["keys"]["active"], 1);
    let k = &env.list_json()[0];
    assert_eq!(k["status"], "active", "{k}");
    assert_eq!(k["consecutive_failures"], 0, "{k}");
    fake.clear_default(&key(1));
    assert_eq!(chat(&server, &json!({"model": "m"})).status, 200);
}

#[test]
fn client_errors_pass_through_and_never_count_against_the_key() {
    let (env, fake, server) = setup(2, &[]);
    let body = json!({"error": {"message": "No endpoints found for x/y.", "code": 404}});
    fake.push(&key(1), Reply::json(404, &body));
    let r = chat(&server, &json!({"model": "x/y"}));
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), body);
    assert_eq!(fake.request_count(), 1, "not retried");
    fake.push(
        &key(1),
        Reply::json(400, &json!({"error": {"message": "bad", "code": 400}})),
    );
    assert_eq!(chat(&server, &json!({"model": "m"})).status, 400);
    wait_until("state written", T, || {
        env.list_json()[0]["last_used"].is_string()
    });
    assert_eq!(env.list_json()[0]["consecutive_failures"], 0);
    assert_eq!(env.list_json()[0]["status"], "active");
}

#[test]
fn waits_for_a_cooling_key_within_max_wait() {
    let (_env, fake, server) = setup(1, &["--max-wait", "20"]);
    fake.push(&key(1), Reply::rate_limit_per_min(reset_ms_in(2)));
    let r = chat(&server, &json!({"model": "m:free"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-orproxy-attempts"),
        Some("2"),
        "waiting is not an attempt"
    );
    let got = fake.wait_requests(2, T);
    assert_eq!(got.len(), 2);
}

#[test]
fn fails_fast_with_retry_after_when_the_wait_is_too_long() {
    let (_env, fake, server) = setup(2, &["--max-wait", "1"]);
    fake.push(&key(1), Reply::rate_limit_per_min(reset_ms_in(40)));
    fake.push(&key(2), Reply::rate_limit_per_min(reset_ms_in(30)));
    let r = chat(&server, &json!({"model": "m:free"}));
    let v = r.assert_openai_error(429);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (28..=31).contains(&retry),
        "seconds until the soonest key: {retry}"
    );
    assert_eq!(v["error"]["code"], "free_models_held");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("2 keys at the :free per-minute cap") && msg.contains(&format!("in {retry}s")),
        "{msg}"
    );
    // Nothing is sent on a cooling key.
    assert_eq!(chat(&server, &json!({"model": "m:free"})).status, 429);
    assert_eq!(fake.request_count(), 2);
}

#[test]
fn keys_added_while_running_are_used() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    let server = env.serve(&fake.base_url(), &[]);
    assert!(
        server.stdout_first_line.contains("0 active"),
        "{}",
        server.stdout_first_line
    );
    chat(&server, &json!({"model": "m"})).assert_openai_error(503);
    env.add_keys(&[key(7)]);
    wait_until("the new key serves", T, || {
        chat(&server, &json!({"model": "m"})).status == 200
    });
    assert_eq!(fake.requests()[0].key.as_deref(), Some(key(7).as_str()));
    // The server's own writes never undo the CLI's change.
    env.add_keys(&[key(8)]);
    wait_until("both keys in the store", T, || env.list_json().len() == 2);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(env.list_json().len(), 2);
}

#[test]
fn removed_keys_stop_being_used() {
    let (env, fake, server) = setup(2, &[]);
    assert_eq!(chat(&server, &json!({"model": "m"})).status, 200);
    env.run(&["keys", "remove", &key_id(&key(1))]).success();
    wait_until("key 1 no longer used", T, || {
        chat(&server, &json!({"model": "m"})).header("x-orproxy-key")
            == Some(key_id(&key(2)).as_str())
    });
    let n = fake.requests_for(&key(1)).len();
    for _ in 0..3 {
        chat(&server, &json!({"model": "m"}));
    }
    assert_eq!(fake.requests_for(&key(1)).len(), n);
    assert_eq!(env.list_json().len(), 1);
}
