//! `GET /metrics`, parsed as Prometheus text exposition after known traffic.

use crate::common::fake_openrouter::{FakeOpenRouter, Reply};
use crate::common::{Env, Server, chat, key, key_id, request, reset_ms_in};
use prometheus_parse::{LineInfo, Scrape, Value};
use serde_json::json;

pub fn scrape(server: &Server) -> Scrape {
    let resp = request("GET", &server.url("/metrics"), &[], None);
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        resp.header("content-type")
    );
    let text = resp.text();
    for line in text.lines() {
        assert!(
            !matches!(LineInfo::parse(line), LineInfo::Ignored),
            "not Prometheus text: {line:?}"
        );
    }
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The value of the sample `name` whose labels include `labels`.
pub fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(b) => b.iter().map(|c| c.count).fold(0.0, f64::max),
            Value::Summary(_) => f64::NAN,
        })
}

#[test]
fn metrics_count_requests_attempts_retries_waits_cooldowns_and_key_states() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    env.add_keys(&[key(1), key(2)]);
    let server = env.serve(&fake.base_url(), &[]);
    let (id1, id2) = (key_id(&key(1)), key_id(&key(2)));
    let ask = || chat(&server, &json!({"model": "m:free", "messages": []}));

    // Two plain successes on the sticky first key.
    assert_eq!(ask().status, 200);
    assert_eq!(ask().status, 200);
    // A rate limit on the first key, retried on the second.
    fake.push(&key(1), Reply::rate_limit_per_min(reset_ms_in(600)));
    assert_eq!(ask().status, 200);
    // A stream.
    fake.push(&key(2), Reply::sse_chat(&["a", "b"]));
    let stream = chat(
        &server,
        &json!({"model": "m:free", "stream": true, "messages": []}),
    );
    assert_eq!(stream.status, 200);
    // The second key cools for 2 s while the first is out for 10 min: the
    // next request waits for the second.
    fake.push(&key(2), Reply::rate_limit_per_min(reset_ms_in(2)));
    assert_eq!(ask().status, 200);
    // A body that is not JSON.
    let bad = request(
        "POST",
        &server.url("/v1/chat/completions"),
        &[("content-type", "application/json")],
        Some(b"{nope"),
    );
    assert_eq!(bad.status, 400);

    let s = scrape(&server);
    let chat_route = ("route", "/v1/chat/completions");
    assert_eq!(
        value(
            &s,
            "orproxy_requests_total",
            &[chat_route, ("status", "200")]
        ),
        Some(5.0)
    );
    assert_eq!(
        value(
            &s,
            "orproxy_requests_total",
            &[chat_route, ("status", "400")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "orproxy_upstream_attempts_total", &[("verdict", "ok")]),
        Some(5.0)
    );
    assert_eq!(
        value(
            &s,
            "orproxy_upstream_attempts_total",
            &[("verdict", "free-models-per-min")]
        ),
        Some(2.0)
    );
    assert_eq!(value(&s, "orproxy_retries_total", &[]), Some(2.0));
    assert_eq!(
        value(
            &s,
            "orproxy_cooldowns_total",
            &[("reason", "free-models-per-min")]
        ),
        Some(2.0)
    );
    assert_eq!(value(&s, "orproxy_key_wait_seconds_count", &[]), Some(1.0));
    let waited = value(&s, "orproxy_key_wait_seconds_sum", &[]).unwrap();
    assert!((0.5..10.0).contains(&waited), "{waited}");
    assert_eq!(
        value(&s, "orproxy_upstream_latency_seconds_count", &[]),
        Some(7.0)
    );
    assert_eq!(value(&s, "orproxy_overhead_seconds_count", &[]), Some(6.0));
    assert_eq!(value(&s, "orproxy_active_streams", &[]), Some(0.0));

    // Per-key state, by ID, and the hold left: the per-minute cap holds
    // key 1 for `:free` models only.
    let state =
        |id: &str, st: &str| value(&s, "orproxy_key_state", &[("key_id", id), ("state", st)]);
    assert_eq!(state(&id1, "free_held"), Some(1.0));
    assert_eq!(state(&id1, "cooling"), Some(0.0));
    assert_eq!(state(&id1, "active"), Some(0.0));
    assert_eq!(state(&id2, "active"), Some(1.0));
    let left = value(&s, "orproxy_key_free_held_seconds", &[("key_id", &id1)]).unwrap();
    assert!((500.0..=600.0).contains(&left), "{left}");
    for id in [&id1, &id2] {
        assert_eq!(
            value(&s, "orproxy_key_cooldown_seconds", &[("key_id", id)]),
            Some(0.0),
            "paid models are not held"
        );
    }
    assert_eq!(
        value(&s, "orproxy_key_free_held_seconds", &[("key_id", &id2)]),
        Some(0.0)
    );
    for (st, n) in [
        ("active", 1.0),
        ("free_held", 1.0),
        ("cooling", 0.0),
        ("disabled", 0.0),
    ] {
        assert_eq!(value(&s, "orproxy_keys", &[("state", st)]), Some(n), "{st}");
    }
    // Each key counts on its own (accounts unknown): key 1 sent 3 :free
    // requests, key 2 four.
    let today = |id: &str| {
        value(
            &s,
            "orproxy_account_free_requests_today",
            &[("account", &format!("key:{id}"))],
        )
    };
    assert_eq!((today(&id1), today(&id2)), (Some(3.0), Some(4.0)));

    // HELP and TYPE are there for the families.
    assert!(s.docs.contains_key("orproxy_requests_total"));
    assert!(s.docs.contains_key("orproxy_upstream_latency_seconds"));
    // Never a key.
    let text = request("GET", &server.url("/metrics"), &[], None).text();
    assert!(!text.contains(&key(1)) && !text.contains(&key(2)));
}

#[test]
fn active_streams_counts_streams_in_flight() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    env.add_keys(&[key(1)]);
    let server = env.serve(&fake.base_url(), &[]);
    fake.push(
        &key(1),
        Reply::sse_chunks(3, std::time::Duration::from_millis(1500)),
    );
    let url = server.url("/v1/chat/completions");
    let streamer = std::thread::spawn(move || {
        request(
            "POST",
            &url,
            &[("content-type", "application/json")],
            Some(br#"{"model":"m","stream":true,"messages":[]}"#),
        )
    });
    crate::common::wait_until(
        "a stream in flight",
        std::time::Duration::from_secs(10),
        || value(&scrape(&server), "orproxy_active_streams", &[]) == Some(1.0),
    );
    assert_eq!(streamer.join().unwrap().status, 200);
    crate::common::wait_until(
        "the stream to end",
        std::time::Duration::from_secs(10),
        || value(&scrape(&server), "orproxy_active_streams", &[]) == Some(0.0),
    );
}
