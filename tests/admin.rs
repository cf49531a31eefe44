//! The admin API: off without a token, 401 with a wrong one, and with the
//! right one: add, list, reactivate, remove, all taking effect at once.

use crate::common::fake_openrouter::{FakeOpenRouter, KeyInfoReply, Reply};
use crate::common::{Env, Resp, Server, chat, key, key_id, request, reset_ms_in};
use serde_json::{Value, json};

const TOKEN: &str = "admin-token-0123456789abcdef";

fn admin(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Resp {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(b) = &bearer {
        headers.push(("authorization", b.as_str()));
    }
    request(method, &server.url(path), &headers, body.map(str::as_bytes))
}

fn serve_with_admin(env: &Env, fake: &FakeOpenRouter) -> Server {
    let mut cmd = env.cmd(&["serve", "--port", "0", "--upstream", &fake.base_url()]);
    cmd.env("ORPROXY_ADMIN_TOKEN", TOKEN);
    env.serve_cmd(cmd)
}

#[test]
fn without_an_admin_token_the_admin_api_is_off() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    let server = env.serve(&fake.base_url(), &[]);
    for (method, path) in [
        ("GET", "/admin/keys"),
        ("POST", "/admin/keys"),
        ("DELETE", "/admin/keys/abcd"),
        ("POST", "/admin/keys/abcd/reactivate"),
    ] {
        let resp = admin(&server, method, path, Some("anything"), Some("{}"));
        let v = resp.assert_openai_error(403);
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("--admin-token"), "{msg}");
        assert!(msg.contains("ORPROXY_ADMIN_TOKEN"), "{msg}");
    }
}

#[test]
fn a_missing_or_wrong_admin_token_gets_401() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    env.add_keys(&[key(1)]);
    let server = serve_with_admin(&env, &fake);
    let missing = admin(&server, "GET", "/admin/keys", None, None);
    missing.assert_openai_error(401);
    assert!(missing.header("www-authenticate").is_some());
    for wrong in ["admin-token", "admin-token-0123456789abcdeF", "x"] {
        admin(&server, "GET", "/admin/keys", Some(wrong), None).assert_openai_error(401);
        let add = admin(
            &server,
            "POST",
            "/admin/keys",
            Some(wrong),
            Some(&json!({"key": key(2)}).to_string()),
        );
        add.assert_openai_error(401);
    }
    let basic = request(
        "GET",
        &server.url("/admin/keys"),
        &[("authorization", &format!("Basic {TOKEN}"))],
        None,
    );
    basic.assert_openai_error(401);
    // The client tokens' absence does not open the admin API either.
    assert_eq!(env.list_json().len(), 1);
}

#[test]
fn the_admin_api_adds_lists_reactivates_and_removes_keys_at_once() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    let server = serve_with_admin(&env, &fake);
    let auth = Some(TOKEN);
    let id1 = key_id(&key(1));

    // Add: 201 with the ID and masked key, never the key.
    let added = admin(
        &server,
        "POST",
        "/admin/keys",
        auth,
        Some(&json!({"key": key(1), "label": "from-admin"}).to_string()),
    );
    assert_eq!(added.status, 201, "{}", added.text());
    assert!(!added.text().contains(&key(1)));
    let v = added.json();
    assert_eq!(v["id"], id1.as_str());
    assert_eq!(v["masked"], "sk-or-v1-…0001");
    assert_eq!(v["label"], "from-admin");
    assert_eq!(v["status"], "active");
    assert_eq!(v["result"], "added");

    // The running server uses it at once (no wait for the once-a-second merge).
    let resp = chat(&server, &json!({"model": "m:free", "messages": []}));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-orproxy-key"), Some(id1.as_str()));

    // Adding it again reactivates it: 200.
    let again = admin(
        &server,
        "POST",
        "/admin/keys",
        auth,
        Some(&json!({"key": key(1)}).to_string()),
    );
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["result"], "reactivated");

    // GET returns what `keys list --json` prints.
    let list = admin(&server, "GET", "/admin/keys", auth, None);
    assert_eq!(list.status, 200);
    let listed: Value = list.json();
    assert_eq!(listed, Value::Array(env.list_json()));
    assert_eq!(listed[0]["id"], id1.as_str());

    // A rate limit parks the key; reactivating it (by a prefix) frees it at once.
    fake.push(&key(1), Reply::rate_limit_per_min(reset_ms_in(600)));
    let limited = chat(&server, &json!({"model": "m:free", "messages": []}));
    assert_eq!(limited.status, 429);
    let held = admin(&server, "GET", "/admin/keys", auth, None).json();
    assert_eq!(held[0]["status"], "free_held", "{held}");
    assert_eq!(held[0]["free_models"]["reason"], "free-models-per-min");
    let reactivated = admin(
        &server,
        "POST",
        &format!("/admin/keys/{}/reactivate", &id1[..4]),
        auth,
        None,
    );
    assert_eq!(reactivated.status, 200, "{}", reactivated.text());
    assert_eq!(reactivated.json()["status"], "active");
    let resp = chat(&server, &json!({"model": "m:free", "messages": []}));
    assert_eq!(resp.status, 200, "{}", resp.text());

    // Remove: the key is gone from the store and from the running pool.
    let removed = admin(&server, "DELETE", &format!("/admin/keys/{id1}"), auth, None);
    assert_eq!(removed.status, 200, "{}", removed.text());
    assert_eq!(removed.json()["masked"], "sk-or-v1-…0001");
    assert!(!removed.text().contains(&key(1)));
    assert_eq!(env.list_json().len(), 0);
    let resp = chat(&server, &json!({"model": "m:free", "messages": []}));
    resp.assert_openai_error(503);

    // Unknown IDs are OpenAI-shaped 404s.
    let v = admin(&server, "DELETE", "/admin/keys/ffffffff", auth, None).assert_openai_error(404);
    assert_eq!(v["error"]["code"], "key_not_found");
    admin(&server, "POST", "/admin/keys/ffff/reactivate", auth, None).assert_openai_error(404);
}

#[test]
fn the_admin_api_refuses_bad_bodies_and_rejected_keys() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    let server = serve_with_admin(&env, &fake);
    let auth = Some(TOKEN);
    for body in [
        "not json",
        "{\"label\": \"no key\"}",
        "[1, 2]",
        "{\"key\": 5}",
        "{\"key\": \"sk-or-v1-has space\"}",
        "{\"key\": \"\"}",
    ] {
        let resp = admin(&server, "POST", "/admin/keys", auth, Some(body));
        resp.assert_openai_error(400);
    }
    // A mistyped field holding a key is refused without quoting it.
    let body = json!({"key": "x", "verify": key(7)}).to_string();
    let resp = admin(&server, "POST", "/admin/keys", auth, Some(&body));
    resp.assert_openai_error(400);
    assert!(!resp.text().contains(&key(7)), "{}", resp.text());

    // OpenRouter says the key is invalid: 422, not stored.
    fake.set_key_info(&key(3), KeyInfoReply::Invalid);
    let resp = admin(
        &server,
        "POST",
        "/admin/keys",
        auth,
        Some(&json!({"key": key(3)}).to_string()),
    );
    let v = resp.assert_openai_error(422);
    assert_eq!(v["error"]["code"], "key_rejected");
    assert!(!resp.text().contains(&key(3)));
    assert!(env.list_json().is_empty());

    // "verify": false skips the check.
    let resp = admin(
        &server,
        "POST",
        "/admin/keys",
        auth,
        Some(&json!({"key": key(3), "verify": false}).to_string()),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());

    // Wrong methods and paths are OpenAI-shaped too.
    admin(&server, "PUT", "/admin/keys", auth, Some("{}")).assert_openai_error(405);
    admin(&server, "GET", "/admin/keys/abc", auth, None).assert_openai_error(405);
    admin(&server, "GET", "/admin/other", auth, None).assert_openai_error(404);
}
