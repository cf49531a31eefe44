//! Usage and cost (issue 14): what the fake OpenRouter reported in its
//! answers adds up in `orproxy usage` (by day, key, account and model),
//! in `GET /admin/usage` and in `/metrics`, for streamed and whole answers,
//! after a restart, and across two instances sharing Redis.

use crate::common::fake_openrouter::{
    FakeOpenRouter, Reply, SseStep, sse_done, sse_event, sse_named_event, sse_processing_comment,
};
use crate::common::redis::Redis;
use crate::common::{Env, Resp, Server, key, key_id, request, reset_ms_in};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const ADMIN: &str = "admin-token-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(20);

/// What `orproxy usage --json` reports for one day, key, account or model.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Spent {
    requests: u64,
    errors: u64,
    prompt: u64,
    completion: u64,
    cached: u64,
    reasoning: u64,
    cost: f64,
}

impl Spent {
    fn of_row(row: &Value) -> Spent {
        let n = |f: &str| row[f].as_u64().unwrap_or_else(|| panic!("{f} in {row}"));
        Spent {
            requests: n("requests"),
            errors: n("errors"),
            prompt: n("prompt_tokens"),
            completion: n("completion_tokens"),
            cached: n("cached_tokens"),
            reasoning: n("reasoning_tokens"),
            cost: row["cost"].as_f64().unwrap(),
        }
    }

    fn plus(self, o: Spent) -> Spent {
        Spent {
            requests: self.requests + o.requests,
            errors: self.errors + o.errors,
            prompt: self.prompt + o.prompt,
            completion: self.completion + o.completion,
            cached: self.cached + o.cached,
            reasoning: self.reasoning + o.reasoning,
            cost: self.cost + o.cost,
        }
    }
}

/// An answer's usage, as chat completions report it (costs are exact in
/// binary, so that sums compare exactly).
fn usage(prompt: u64, completion: u64, cached: u64, reasoning: u64, cost: f64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cost": cost,
        "is_byok": false,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning, "image_tokens": 0}
    })
}

/// The [`Spent`] of one successful answer with `usage`.
fn ok(prompt: u64, completion: u64, cached: u64, reasoning: u64, cost: f64) -> Spent {
    Spent {
        requests: 1,
        errors: 0,
        prompt,
        completion,
        cached,
        reasoning,
        cost,
    }
}

const FAILED: Spent = Spent {
    requests: 1,
    errors: 1,
    prompt: 0,
    completion: 0,
    cached: 0,
    reasoning: 0,
    cost: 0.0,
};

/// A whole chat answer reporting `usage`.
fn answer(usage: Value) -> Reply {
    Reply::json(
        200,
        &json!({
            "id": "gen-usage-1", "object": "chat.completion", "created": 1, "model": "x",
            "provider": "FakeProvider",
            "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "hi"}}],
            "usage": usage
        }),
    )
}

/// A streamed chat answer whose last event before `[DONE]` reports `usage`.
fn streamed(usage: Value) -> Reply {
    let chunk = |choices: Value| {
        json!({"id": "gen-usage-2", "object": "chat.completion.chunk", "created": 1,
            "model": "x", "choices": choices})
    };
    let mut last = chunk(json!([]));
    last["usage"] = usage;
    Reply::sse(vec![
        SseStep::Bytes(sse_processing_comment()),
        SseStep::Bytes(sse_event(&chunk(json!([{"index": 0,
            "delta": {"role": "assistant", "content": "hi"}, "finish_reason": null}])))),
        SseStep::Bytes(sse_event(&last)),
        SseStep::Bytes(sse_done()),
    ])
}

/// A streamed answer of named events (Responses, Messages), comment first.
fn named_stream(events: &[(&str, Value)]) -> Reply {
    let mut steps = vec![SseStep::Bytes(sse_processing_comment())];
    steps.extend(
        events
            .iter()
            .map(|(name, data)| SseStep::Bytes(sse_named_event(name, data))),
    );
    Reply::sse(steps)
}

fn post(server: &Server, path: &str, body: &Value) -> Resp {
    request(
        "POST",
        &server.url(path),
        &[
            ("authorization", "Bearer dummy-key"),
            ("content-type", "application/json"),
        ],
        Some(body.to_string().as_bytes()),
    )
}

fn chat(server: &Server, model: &str, stream: bool) -> Resp {
    let r = post(
        server,
        "/v1/chat/completions",
        &json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert!(r.status == 200 || r.status == 400, "{}", r.text());
    r
}

fn serve(env: &Env, fake: &FakeOpenRouter) -> Server {
    let mut cmd = env.cmd(&["serve", "--port", "0", "--upstream", &fake.base_url()]);
    cmd.env("ORPROXY_ADMIN_TOKEN", ADMIN);
    env.serve_cmd(cmd)
}

/// `orproxy usage --json ARGS...`.
fn usage_json(env: &Env, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["usage", "--json"];
    all.extend(args);
    let out = env.run(&all).success();
    serde_json::from_str::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The rows summed per value of `field` (`day`, `key`, `account`, `model`).
fn by(rows: &[Value], field: &str) -> BTreeMap<String, Spent> {
    let mut out = BTreeMap::<String, Spent>::new();
    for row in rows {
        let name = row[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field}: {row}"));
        let e = out.entry(name.to_owned()).or_default();
        *e = e.plus(Spent::of_row(row));
    }
    out
}

fn today() -> String {
    chrono::Utc::now().date_naive().to_string()
}

/// Wait (polling `orproxy usage --json`) until the day's totals are `want`.
#[track_caller]
fn wait_for_total(env: &Env, want: Spent) {
    let deadline = Instant::now() + WAIT;
    loop {
        let rows = usage_json(env, &[]);
        let total = rows
            .iter()
            .map(Spent::of_row)
            .fold(Spent::default(), Spent::plus);
        if total == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "orproxy usage shows {total:?}, not {want:?}: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn admin_usage(server: &Server, query: &str) -> Resp {
    request(
        "GET",
        &server.url(&format!("/admin/usage{query}")),
        &[("authorization", &format!("Bearer {ADMIN}"))],
        None,
    )
}

/// A `/metrics` sample's value (0 when absent).
fn metric(server: &Server, name: &str, label: Option<(&str, &str)>) -> f64 {
    let text = request("GET", &server.url("/metrics"), &[], None).text();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .map_or(0.0, |s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[test]
fn usage_adds_up_what_openrouter_reported_streamed_or_not_and_survives_a_restart() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    env.add_keys(&[key(1), key(2)]);
    let (id1, id2) = (key_id(&key(1)), key_id(&key(2)));
    let server = serve(&env, &fake);
    let (paid, free) = ("paid/model-a", "free/model-b:free");

    // A whole answer and a stream on the first key.
    fake.push(&key(1), answer(usage(100, 20, 40, 5, 0.25)));
    chat(&server, paid, false);
    fake.push(&key(1), streamed(usage(50, 10, 0, 2, 0.125)));
    let r = chat(&server, free, true);
    assert!(r.text().contains("[DONE]"), "{}", r.text());
    // A rate limit on the first key, answered by the second.
    fake.push(&key(1), Reply::rate_limit_per_min(reset_ms_in(600)));
    fake.push(&key(2), answer(usage(7, 3, 0, 0, 0.5)));
    let r = chat(&server, paid, false);
    assert_eq!(r.header("x-orproxy-attempts"), Some("2"));
    // The client's own mistake, relayed: an error, no tokens.
    fake.push(
        &key(2),
        Reply::json(400, &json!({"error": {"message": "bad", "code": 400}})),
    );
    assert_eq!(chat(&server, paid, false).status, 400);
    // Whole Responses and Messages answers report usage in their own words.
    fake.push(
        &key(2),
        Reply::json(
            200,
            &json!({"id": "resp_1", "object": "response", "status": "completed", "output": [],
                "usage": {"input_tokens": 9, "input_tokens_details": {"cached_tokens": 4},
                    "output_tokens": 6, "output_tokens_details": {"reasoning_tokens": 3},
                    "total_tokens": 15, "cost": 0.0625}}),
        ),
    );
    assert_eq!(
        post(
            &server,
            "/v1/responses",
            &json!({"model": paid, "input": "hi"})
        )
        .status,
        200
    );
    fake.push(
        &key(2),
        Reply::json(
            200,
            &json!({"id": "msg_1", "type": "message", "role": "assistant", "content": [],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 5, "cache_read_input_tokens": 20,
                    "cache_creation_input_tokens": 1, "output_tokens": 4, "cost": 0.03125}}),
        ),
    );
    assert_eq!(
        post(
            &server,
            "/v1/messages",
            &json!({"model": free, "max_tokens": 9, "messages": []})
        )
        .status,
        200
    );
    // Requests that are not inference are not counted.
    request("GET", &server.url("/v1/models"), &[], None);

    let key1 = ok(100, 20, 40, 5, 0.25)
        .plus(ok(50, 10, 0, 2, 0.125))
        .plus(FAILED);
    let responses = ok(9, 6, 4, 3, 0.0625);
    let messages = ok(26, 4, 20, 0, 0.031_25);
    let key2 = ok(7, 3, 0, 0, 0.5)
        .plus(FAILED)
        .plus(responses)
        .plus(messages);
    let total = key1.plus(key2);
    wait_for_total(&env, total);

    let rows = usage_json(&env, &[]);
    assert_eq!(by(&rows, "day"), BTreeMap::from([(today(), total)]));
    assert_eq!(
        by(&usage_json(&env, &["--by", "key"]), "key"),
        BTreeMap::from([(id1.clone(), key1), (id2.clone(), key2)])
    );
    assert_eq!(
        by(&usage_json(&env, &["--by", "account"]), "account"),
        BTreeMap::from([(format!("key:{id1}"), key1), (format!("key:{id2}"), key2)]),
        "keys whose account is unknown count as accounts of their own"
    );
    let models = by(
        &usage_json(&env, &["--by", "model", "--since", "1d"]),
        "model",
    );
    let paid_spent = ok(100, 20, 40, 5, 0.25)
        .plus(FAILED)
        .plus(ok(7, 3, 0, 0, 0.5))
        .plus(FAILED)
        .plus(responses);
    assert_eq!(
        models,
        BTreeMap::from([
            (free.to_owned(), ok(50, 10, 0, 2, 0.125).plus(messages)),
            (paid.to_owned(), paid_spent),
        ])
    );
    // The table says the same.
    let table = env.run(&["usage", "--by", "key"]).success().stdout;
    for text in [
        "Requests",
        "Cost",
        &id1,
        &id2,
        &today(),
        "total",
        "0.375000",
        "0.593750",
        "0.968750",
    ] {
        assert!(table.contains(text), "{text} in\n{table}");
    }

    // The admin API answers what the CLI prints.
    for query in [
        "",
        "?by=key",
        "?by=model&since=1d",
        "?by=account&since=2020-01-01",
    ] {
        let mut args: Vec<&str> = Vec::new();
        for (name, value) in query
            .trim_start_matches('?')
            .split('&')
            .filter_map(|p| p.split_once('='))
        {
            args.extend([if name == "by" { "--by" } else { "--since" }, value]);
        }
        let resp = admin_usage(&server, query);
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.json(), Value::from(usage_json(&env, &args)), "{query}");
    }

    // /metrics counts the same tokens and cost.
    for (kind, n) in [
        ("prompt", total.prompt),
        ("completion", total.completion),
        ("cached", total.cached),
        ("reasoning", total.reasoning),
    ] {
        #[allow(clippy::cast_precision_loss)]
        let n = n as f64;
        assert_eq!(
            metric(&server, "orproxy_tokens_total", Some(("kind", kind))),
            n,
            "{kind}"
        );
    }
    assert_eq!(metric(&server, "orproxy_cost_total", None), total.cost);

    // A restart keeps the totals; what a server spends right before it
    // stops is written as it stops.
    let mut server = server;
    assert!(server.signal_and_wait("TERM").success());
    let mut server = serve(&env, &fake);
    // Whichever key the new server picks.
    fake.push(&key(1), streamed(usage(1, 1, 0, 0, 0.25)));
    fake.push(&key(2), streamed(usage(1, 1, 0, 0, 0.25)));
    chat(&server, paid, true);
    assert!(server.signal_and_wait("TERM").success());
    let rows = usage_json(&env, &[]);
    assert_eq!(
        by(&rows, "day"),
        BTreeMap::from([(today(), total.plus(ok(1, 1, 0, 0, 0.25)))]),
        "{rows:?}"
    );
}

#[test]
fn streamed_responses_and_messages_count_the_usage_of_their_own_events() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    env.add_keys(&[key(1)]);
    let server = serve(&env, &fake);
    // Responses: the usage of response.completed.
    fake.push(
        &key(1),
        named_stream(&[
            (
                "response.created",
                json!({"type": "response.created",
                "response": {"id": "resp_s", "object": "response", "status": "in_progress"}}),
            ),
            (
                "response.output_text.delta",
                json!({"type": "response.output_text.delta", "delta": "hi"}),
            ),
            (
                "response.completed",
                json!({"type": "response.completed",
                "response": {"id": "resp_s", "object": "response", "status": "completed",
                    "usage": {"input_tokens": 8, "input_tokens_details": {"cached_tokens": 2},
                        "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 1},
                        "total_tokens": 13, "cost": 0.25}}}),
            ),
        ]),
    );
    let r = post(
        &server,
        "/v1/responses",
        &json!({"model": "m", "stream": true, "input": "hi"}),
    );
    assert!(r.text().contains("response.completed"), "{}", r.text());
    // Messages: input tokens in message_start, output tokens and cost in message_delta.
    fake.push(
        &key(1),
        named_stream(&[
            ("message_start", json!({"type": "message_start", "message": {"id": "msg_s",
                "type": "message", "role": "assistant", "content": [],
                "usage": {"input_tokens": 11, "cache_read_input_tokens": 3,
                    "cache_creation_input_tokens": 0, "output_tokens": 1}}})),
            ("content_block_delta", json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": "hi"}})),
            ("message_delta", json!({"type": "message_delta",
                "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7, "cost": 0.125}})),
            ("message_stop", json!({"type": "message_stop"})),
        ]),
    );
    let r = post(
        &server,
        "/v1/messages",
        &json!({"model": "m", "stream": true, "max_tokens": 9, "messages": []}),
    );
    assert!(r.text().contains("message_stop"), "{}", r.text());
    wait_for_total(&env, ok(8, 5, 2, 1, 0.25).plus(ok(14, 7, 3, 0, 0.125)));
}

#[test]
fn two_instances_on_redis_add_up_their_usage() {
    let redis = Redis::start();
    let fake = FakeOpenRouter::start();
    let env = Env::with_store(&redis.url());
    env.add_keys(&[key(1)]);
    let id = key_id(&key(1));
    let a = serve(&env, &fake);
    let mut b = serve(&env, &fake);
    fake.push(&key(1), answer(usage(10, 1, 0, 0, 0.25)));
    chat(&a, "m/a", false);
    fake.push(&key(1), streamed(usage(20, 2, 5, 1, 0.5)));
    chat(&b, "m/b", true);
    fake.push(&key(1), answer(usage(30, 3, 0, 0, 0.125)));
    chat(&a, "m/a", false);
    let both = ok(10, 1, 0, 0, 0.25)
        .plus(ok(20, 2, 5, 1, 0.5))
        .plus(ok(30, 3, 0, 0, 0.125));
    wait_for_total(&env, both);
    assert_eq!(
        by(&usage_json(&env, &["--by", "model"]), "model"),
        BTreeMap::from([
            (
                "m/a".to_owned(),
                ok(10, 1, 0, 0, 0.25).plus(ok(30, 3, 0, 0, 0.125))
            ),
            ("m/b".to_owned(), ok(20, 2, 5, 1, 0.5)),
        ])
    );
    assert_eq!(
        by(&usage_json(&env, &["--by", "key"]), "key"),
        BTreeMap::from([(id, both)])
    );
    // Either instance's admin API answers the shared totals.
    assert_eq!(
        admin_usage(&b, "?by=model").json(),
        Value::from(usage_json(&env, &["--by", "model"]))
    );
    // What an instance spends right before it stops reaches Redis as it stops.
    fake.push(&key(1), streamed(usage(1, 1, 0, 0, 0.25)));
    chat(&b, "m/b", true);
    assert!(b.signal_and_wait("TERM").success());
    let rows = usage_json(&env, &[]);
    assert_eq!(
        by(&rows, "day"),
        BTreeMap::from([(today(), both.plus(ok(1, 1, 0, 0, 0.25)))])
    );
    // Redis drops the day once it is no longer kept (100 days).
    let ttl: i64 = redis
        .cli(&["TTL", &format!("orproxy:usage:{}", today())])
        .trim()
        .parse()
        .unwrap();
    assert!(
        (99 * 86_400..=100 * 86_400).contains(&ttl),
        "expires in {ttl} s"
    );
    drop(a);
}

/// A usage row of the store file's `usage` section.
fn stored_day(requests: u64, cost: f64) -> Value {
    let t = json!({"requests": requests, "errors": 0, "prompt_tokens": 10,
        "completion_tokens": 1, "cached_tokens": 0, "reasoning_tokens": 0, "cost": cost});
    json!({"keys": {"1a2b3c4d": t}, "accounts": {"user_1": t}, "models": {"m": t}})
}

#[test]
fn since_and_by_choose_the_rows_and_old_days_are_dropped() {
    let env = Env::new();
    let fake = FakeOpenRouter::start();
    env.add_keys(&[key(1)]);
    let today = chrono::Utc::now().date_naive();
    let ago = |d: i64| (today - chrono::TimeDelta::days(d)).to_string();
    let mut store = env.store_json();
    store["usage"] = json!({"days": {
        ago(200): stored_day(1, 0.5),
        ago(95): stored_day(2, 0.5),
        ago(10): stored_day(4, 0.5),
        ago(3): stored_day(8, 0.25),
    }, "written_by": "a newer orproxy"});
    store["usage"]["days"][ago(3)]["providers"] = json!({"FakeProvider": 8});
    env.write_store(&store);

    let days = |args: &[&str]| -> Vec<(String, u64)> {
        usage_json(&env, args)
            .iter()
            .map(|r| {
                (
                    r["day"].as_str().unwrap().to_owned(),
                    r["requests"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    // 100 days are kept, today included.
    assert_eq!(days(&[]), [(ago(95), 2), (ago(10), 4), (ago(3), 8)]);
    assert_eq!(days(&["--since", "7d"]), [(ago(3), 8)]);
    assert_eq!(days(&["--since", &ago(10)]), [(ago(10), 4), (ago(3), 8)]);
    assert_eq!(days(&["--since", "1d"]), []);
    let rows = usage_json(&env, &["--by", "account", "--since", "7d"]);
    assert_eq!(
        rows,
        [
            json!({"day": ago(3), "account": "user_1", "requests": 8, "errors": 0,
            "prompt_tokens": 10, "completion_tokens": 1, "cached_tokens": 0,
            "reasoning_tokens": 0, "cost": 0.25})
        ]
    );
    let empty = env.run(&["usage", "--since", "1d"]).success().stdout;
    assert!(empty.starts_with("No usage recorded in "), "{empty}");
    for bad in [
        &["--since", "0d"][..],
        &["--since", "last week"],
        &["--by", "provider"],
    ] {
        let mut args = vec!["usage"];
        args.extend(bad);
        let run = env.run(&args).failure(2);
        assert!(run.stderr.contains(bad[1]), "{run:?}");
    }

    let server = serve(&env, &fake);
    assert_eq!(
        admin_usage(&server, "?since=7d&by=model").json(),
        Value::from(usage_json(&env, &["--since", "7d", "--by", "model"]))
    );
    for (query, mention) in [
        ("?since=0d", "0d"),
        ("?by=provider", "provider"),
        ("?limit=3", "limit"),
    ] {
        let v = admin_usage(&server, query).assert_openai_error(400);
        assert!(
            v["error"]["message"].as_str().unwrap().contains(mention),
            "{v}"
        );
    }
    let v = request(
        "POST",
        &server.url("/admin/usage"),
        &[("authorization", &format!("Bearer {ADMIN}"))],
        None,
    )
    .assert_openai_error(405);
    assert!(v["error"]["message"].as_str().unwrap().contains("GET"));
    assert_eq!(
        request("GET", &server.url("/admin/usage"), &[], None).status,
        401
    );

    // Once the server writes usage, days no longer kept leave the file; what
    // this version does not know stays.
    fake.push(&key(1), answer(usage(1, 1, 0, 0, 0.25)));
    chat(&server, "m", false);
    crate::common::wait_until("the oldest day dropped", WAIT, || {
        env.store_json()["usage"]["days"].get(ago(200)).is_none()
    });
    let stored = env.store_json()["usage"].clone();
    assert_eq!(stored["written_by"], "a newer orproxy");
    assert_eq!(
        stored["days"][ago(3)]["providers"],
        json!({"FakeProvider": 8})
    );
    assert_eq!(stored["days"][ago(95)]["keys"]["1a2b3c4d"]["requests"], 2);
    assert_eq!(
        stored["days"][today.to_string()]["models"]["m"]["requests"],
        1
    );
}
