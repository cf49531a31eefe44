//! The key state machine exists twice: in the pool (Rust) and in the Redis
//! script (Lua), which applies the same changes atomically for every
//! instance sharing a store. This test runs one table of transitions
//! through both, on a real `redis-server` (scripts/test installs it), and
//! holds them to the same resulting states. Each change goes to Redis as
//! the running server sends it ([`super::op_for`]).

use super::op_for;
use crate::model::{KeyInfo, KeyRecord, KeyState, StoreFile};
use crate::pool::{Outcome, Pool, Probe, Settings};
use crate::secret::ApiKey;
use crate::store::location::Location;
use crate::store::redis::{RedisStore, script};
use crate::sync::Change;
use chrono::{DateTime, TimeDelta, Utc};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A throwaway `redis-server` on a free loopback port, killed on drop.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test installs it)");
        let server = Server {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// A store of its own (a prefix) for one row of the table.
    fn store(&self, prefix: &str) -> RedisStore {
        let url = format!("redis://127.0.0.1:{}/0", self.port);
        match Location::parse(&url, Some(prefix)).unwrap() {
            Location::Redis(url) => RedisStore::new(&url).unwrap(),
            Location::File(_) => unreachable!("a redis:// URL"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(secs)
}

/// One change to apply to both, as the running server applies it.
enum Step {
    Chosen(&'static str),
    Report(&'static str, Outcome),
    ProbeStarted(&'static str),
    Probed(&'static str, Probe),
}

struct Row {
    name: &'static str,
    /// Keys: ID, account, state.
    keys: Vec<(&'static str, &'static str, KeyState)>,
    steps: Vec<Step>,
}

fn record(id: &str, account: &str, state: KeyState) -> KeyRecord {
    KeyRecord {
        id: id.to_owned(),
        key: ApiKey::parse(&format!("sk-or-v1-{id}{}", "0".repeat(40))).unwrap(),
        label: None,
        added_at: t0(),
        generation: 0,
        state,
        info: Some(KeyInfo {
            creator_user_id: Some(account.to_owned()),
            ..KeyInfo::default()
        }),
        extra: Default::default(),
    }
}

fn cooldown(until: DateTime<Utc>, reason: &str, account_wide: bool, free_only: bool) -> Outcome {
    Outcome::Cooldown {
        until,
        reason: reason.to_owned(),
        account_wide,
        free_only,
    }
}

fn failure(reason: &str) -> Outcome {
    Outcome::Failed {
        fault: crate::pool::Fault::ServerError,
        reason: reason.to_owned(),
    }
}

fn disable(reason: &str, recoverable: bool, rejected: bool) -> Outcome {
    Outcome::Disable {
        reason: reason.to_owned(),
        recoverable,
        rejected,
    }
}

/// Apply `step` at `now` to the pool, and return what goes to Redis, in
/// order, as `Shared` sends it.
fn apply(pool: &mut Pool, step: &Step, now: DateTime<Utc>) -> Vec<script::Op> {
    match step {
        Step::Chosen(id) => {
            let op = op_for(pool, &Change::Chosen { id, at: now });
            assert!(matches!(
                pool.choose(now, &[]),
                crate::pool::Choice::Use { .. }
            ));
            op.into_iter().collect()
        }
        Step::Report(id, outcome) => {
            let mut ops: Vec<script::Op> = op_for(pool, &Change::Reported { id, outcome })
                .into_iter()
                .collect();
            for event in pool.report(id, outcome.clone(), now) {
                if let crate::pool::Event::Blamed { id, reason, .. } = &event {
                    ops.extend(op_for(pool, &Change::Blamed { id, reason }));
                }
            }
            ops
        }
        Step::ProbeStarted(id) => {
            let due = pool.due_for_probe(now, TimeDelta::zero());
            assert_eq!(due.len(), 1, "one key due");
            op_for(pool, &Change::ProbeStarted { id })
                .into_iter()
                .collect()
        }
        Step::Probed(id, probe) => {
            let op = op_for(pool, &Change::Probed { id, probe });
            pool.probe_result(id, probe.clone(), now);
            op.into_iter().collect()
        }
    }
}

fn rows() -> Vec<Row> {
    let streak = KeyState {
        consecutive_failures: 2,
        failures_total: 2,
        ..KeyState::default()
    };
    let cooling = KeyState {
        cooldown_until: Some(at(60)),
        cooldown_reason: Some("rate-limited".into()),
        ..KeyState::default()
    };
    let disabled = KeyState {
        disabled: true,
        disabled_reason: Some("5 consecutive failures (last: HTTP 502)".into()),
        auto_recover: true,
        consecutive_failures: 5,
        cooldown_until: Some(at(600)),
        cooldown_reason: Some("rate-limited".into()),
        ..KeyState::default()
    };
    let plain = KeyState::default;
    vec![
        Row {
            name: "a success ends a failure streak and is counted",
            keys: vec![("a", "u1", streak.clone())],
            steps: vec![Step::Report("a", Outcome::Success)],
        },
        Row {
            name: "a success without a streak is counted",
            keys: vec![("a", "u1", plain())],
            steps: vec![
                Step::Report("a", Outcome::Success),
                Step::Report("a", Outcome::Success),
            ],
        },
        Row {
            name: "a failure counted while another key works ends a streak by disabling",
            keys: vec![
                (
                    "a",
                    "u1",
                    KeyState {
                        last_probe: Some(at(-100)),
                        ..streak.clone()
                    },
                ),
                ("b", "u2", plain()),
            ],
            steps: vec![
                Step::Report("a", failure("HTTP 502")),
                Step::Report("b", Outcome::Success),
            ],
        },
        Row {
            name: "a failure of one key alone is not counted",
            keys: vec![("a", "u1", streak.clone())],
            steps: vec![
                Step::Report("a", failure("HTTP 500")),
                Step::Report("a", failure("HTTP 502")),
            ],
        },
        Row {
            name: "a cooldown only ever extends",
            keys: vec![("a", "u1", cooling)],
            steps: vec![
                Step::Report("a", cooldown(at(30), "shorter", false, false)),
                Step::Report("a", cooldown(at(90), "longer", false, false)),
            ],
        },
        Row {
            name: "an account-wide cooldown parks every key of the account",
            keys: vec![
                ("a", "u1", plain()),
                ("b", "u1", plain()),
                ("c", "u2", plain()),
            ],
            steps: vec![Step::Report(
                "a",
                cooldown(at(3600), "free-models-per-day", true, true),
            )],
        },
        Row {
            name: "a disabled key is not parked",
            keys: vec![("a", "u1", disabled.clone())],
            steps: vec![Step::Report("a", cooldown(at(900), "x", false, false))],
        },
        Row {
            name: "a disable keeps its first reason",
            keys: vec![("a", "u1", plain())],
            steps: vec![
                Step::Report("a", disable("first", true, false)),
                Step::Report("a", disable("second", false, true)),
            ],
        },
        Row {
            name: "a key OpenRouter rejects is disabled and re-checked rarely",
            keys: vec![("a", "u1", plain())],
            steps: vec![Step::Report(
                "a",
                disable("401 from OpenRouter", true, true),
            )],
        },
    ]
}

/// Rows of re-checks, and of a key being chosen.
fn more_rows() -> Vec<Row> {
    let disabled = KeyState {
        disabled: true,
        disabled_reason: Some("5 consecutive failures (last: HTTP 502)".into()),
        auto_recover: true,
        consecutive_failures: 5,
        cooldown_until: Some(at(600)),
        cooldown_reason: Some("rate-limited".into()),
        ..KeyState::default()
    };
    let streak = KeyState {
        consecutive_failures: 2,
        failures_total: 2,
        ..KeyState::default()
    };
    vec![
        Row {
            name: "a cooldown that already ended parks nothing",
            keys: vec![("a", "u1", KeyState::default())],
            steps: vec![Step::Report("a", cooldown(at(-1), "past", false, false))],
        },
        Row {
            name: "a free-model cap parks for free models only",
            keys: vec![("a", "u1", KeyState::default())],
            steps: vec![Step::Report(
                "a",
                cooldown(at(40), "free-models-per-min", false, true),
            )],
        },
        Row {
            name: "a neutral outcome changes nothing",
            keys: vec![("a", "u1", streak)],
            steps: vec![Step::Report("a", Outcome::Neutral)],
        },
        Row {
            name: "a chosen key was last used then",
            keys: vec![("a", "u1", KeyState::default())],
            steps: vec![Step::Chosen("a")],
        },
        Row {
            name: "a re-check is marked and a healthy one brings the key back",
            keys: vec![("a", "u1", disabled.clone())],
            steps: vec![Step::ProbeStarted("a"), Step::Probed("a", Probe::Healthy)],
        },
        Row {
            name: "a rejected re-check keeps checking, more rarely",
            keys: vec![("a", "u1", disabled.clone())],
            steps: vec![
                Step::ProbeStarted("a"),
                Step::Probed("a", Probe::Invalid("401 from OpenRouter: gone".into())),
            ],
        },
        Row {
            name: "a re-check that finds the key still down changes nothing",
            keys: vec![("a", "u1", disabled)],
            steps: vec![Step::Probed("a", Probe::StillDown("unreachable".into()))],
        },
    ]
}

#[test]
fn the_pool_and_the_redis_script_make_the_same_transitions() {
    let server = Server::start();
    for (n, row) in rows().into_iter().chain(more_rows()).enumerate() {
        let records: Vec<KeyRecord> = row
            .keys
            .iter()
            .map(|(id, account, state)| record(id, account, state.clone()))
            .collect();
        let mut pool = Pool::from_records(&records, Settings { max_failures: 3 });
        let store = server.store(&format!("parity{n}"));
        let file = StoreFile {
            keys: records,
            ..StoreFile::default()
        };
        store.update(|f| *f = file.clone()).unwrap();
        let mut con = store.connect().unwrap();
        script::load_script(&mut con).unwrap();
        for (i, step) in row.steps.iter().enumerate() {
            let now = at(i64::try_from(i).unwrap() + 1);
            let ops = apply(&mut pool, step, now);
            script::run(&mut con, store.names(), "parity", &ops, now).unwrap();
            // After every step, not only at the end: a later step can hide
            // an earlier difference.
            let stored = store.load().unwrap();
            assert_eq!(stored.keys.len(), row.keys.len(), "{}", row.name);
            for record in &stored.keys {
                let in_pool = &pool.get(&record.id).unwrap().state;
                assert_eq!(
                    &record.state,
                    in_pool,
                    "{}, after step {}: key {} in Redis (left) and in the pool (right)",
                    row.name,
                    i + 1,
                    record.id
                );
            }
        }
    }
}
