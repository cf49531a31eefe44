//! Who may use the proxy: client tokens, and refusing an open bind.

use crate::common::fake_openrouter::FakeOpenRouter;
use crate::common::{Env, key, request};
use std::process::Stdio;

fn chat_with(base: &str, auth: Option<&str>) -> crate::common::Resp {
    let mut headers = vec![("content-type", "application/json")];
    let bearer = auth.map(|t| format!("Bearer {t}"));
    if let Some(b) = &bearer {
        headers.push(("authorization", b.as_str()));
    }
    request(
        "POST",
        &format!("{base}/v1/chat/completions"),
        &headers,
        Some(br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#),
    )
}

fn get(url: &str, auth: Option<&str>) -> crate::common::Resp {
    let bearer = auth.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|b| ("authorization", b.as_str()))
        .collect();
    request("GET", url, &headers, None)
}

#[test]
fn without_client_tokens_any_bearer_token_is_accepted() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    env.add_keys(&[key(1)]);
    let server = env.serve(&fake.base_url(), &[]);
    assert_eq!(chat_with(&server.base, Some("dummy-key")).status, 200);
    assert_eq!(chat_with(&server.base, None).status, 200);
}

#[test]
fn client_tokens_are_required_on_v1_and_metrics_but_not_health() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    env.add_keys(&[key(1)]);
    let server = env.serve(
        &fake.base_url(),
        &["--client-token", "tok-alpha", "--client-token", "tok-beta"],
    );
    for auth in [
        None,
        Some("dummy-key"),
        Some("tok-alph"),
        Some("tok-alpha2"),
    ] {
        let resp = chat_with(&server.base, auth);
        let v = resp.assert_openai_error(401);
        assert_eq!(v["error"]["code"], "invalid_api_key", "{v}");
        assert!(resp.header("www-authenticate").is_some());
    }
    let resp = get(&server.url("/api/v1/models"), Some("nope"));
    resp.assert_openai_error(401);
    // Nothing that was turned away reached the upstream.
    assert_eq!(fake.request_count(), 0);

    assert_eq!(chat_with(&server.base, Some("tok-alpha")).status, 200);
    assert_eq!(chat_with(&server.base, Some("tok-beta")).status, 200);
    assert_eq!(fake.request_count(), 2);

    assert_eq!(get(&server.url("/health"), None).status, 200);
    get(&server.url("/metrics"), None).assert_openai_error(401);
    let metrics = get(&server.url("/metrics"), Some("tok-beta"));
    assert_eq!(metrics.status, 200);
    assert!(metrics.text().contains("orproxy_requests_total"));
}

#[test]
fn client_tokens_come_from_the_environment_comma_separated() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    env.add_keys(&[key(1)]);
    let mut cmd = env.cmd(&["serve", "--port", "0", "--upstream", &fake.base_url()]);
    cmd.env("ORPROXY_CLIENT_TOKENS", "first-token, second-token");
    let server = env.serve_cmd(cmd);
    assert_eq!(chat_with(&server.base, Some("second-token")).status, 200);
    assert_eq!(chat_with(&server.base, Some("first-token")).status, 200);
    chat_with(&server.base, Some("first-token,second-token")).assert_openai_error(401);
}

#[test]
fn an_open_non_loopback_bind_is_refused_unless_allowed() {
    let env = Env::new();
    let out = env
        .cmd(&["serve", "--host", "0.0.0.0", "--port", "0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refusing to listen on 0.0.0.0"), "{stderr}");
    assert!(stderr.contains("--client-token"), "{stderr}");
    assert!(stderr.contains("--allow-open"), "{stderr}");

    // The same refusal for an IPv6 wildcard given through the environment.
    let mut cmd = env.cmd(&["serve", "--port", "0"]);
    cmd.env("ORPROXY_HOST", "::").stdin(Stdio::null());
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));

    for args in [
        vec!["--host", "0.0.0.0", "--allow-open"],
        vec!["--host", "0.0.0.0", "--client-token", "secret-client"],
    ] {
        let server = env.serve("http://127.0.0.1:9/api/v1", &args);
        let port = server.base.rsplit(':').next().unwrap().to_owned();
        let health = get(&format!("http://127.0.0.1:{port}/health"), None);
        assert_eq!(health.status, 503, "{}", health.text());
    }
}
