//! The running servers' state updates, each an atomic Lua call (script.lua):
//! a cooldown only ever extends, a failure is counted exactly once, and
//! every change is published to the other instances with the key's new
//! state.

use super::layout::{Names, from_ms, ms};
use crate::model::KeyState;
use chrono::{DateTime, Utc};
use redis::{Connection, Value};
use std::collections::HashMap;
use std::sync::LazyLock;

static SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("script.lua")));

/// One change decided by a server, to apply to the shared state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Cool these keys until `until` (for free models only when `free_only`).
    Park {
        /// The keys (one, or every key of an account).
        ids: Vec<String>,
        /// When the cooldown ends.
        until: DateTime<Utc>,
        /// Why.
        reason: String,
        /// Only for `:free` models.
        free_only: bool,
    },
    /// One more failed attempt; disables at `max_failures` in a row.
    Fail {
        /// The key.
        id: String,
        /// What follows the count in the disabled reason if the streak
        /// disables the key (`pool::streak_suffix`).
        streak_reason: String,
        /// The streak that disables a key.
        max_failures: u32,
    },
    /// Take the key out of rotation.
    Disable {
        /// The key.
        id: String,
        /// Why.
        reason: String,
        /// Whether background re-checks may bring it back.
        recoverable: bool,
        /// OpenRouter rejected the key (re-checked more rarely).
        rejected: bool,
    },
    /// Successes and last use, batched; `reset_failures` ends a failure streak.
    Count {
        /// The key.
        id: String,
        /// Requests it answered.
        requests: u64,
        /// When it was last handed out.
        last_used: Option<DateTime<Utc>>,
        /// A success ended a failure streak.
        reset_failures: bool,
    },
    /// A disabled key is being re-checked now.
    ProbeMark {
        /// The key.
        id: String,
    },
    /// A re-check found the disabled key healthy: bring it back.
    ProbeOk {
        /// The key.
        id: String,
    },
    /// A re-check found the key rejected for good.
    ProbeInvalid {
        /// The key.
        id: String,
        /// OpenRouter's reason.
        reason: String,
    },
    /// OpenRouter's shared capacity for a model is exhausted until `until`.
    Model {
        /// The model.
        model: String,
        /// Until when.
        until: DateTime<Utc>,
    },
    /// OpenRouter reported an account's daily free-model cap.
    Cap {
        /// The account (see `KeyRecord::quota_account`).
        account: String,
        /// The cap, when OpenRouter said it.
        limit: Option<u32>,
        /// The cap was reached: hold the account for the rest of the day.
        exhausted: bool,
        /// The cap in force (the count is raised to it when exhausted).
        cap: u32,
    },
}

impl Op {
    /// Whether other instances need this at once (cooldowns, disables,
    /// failures); counters can wait to be batched.
    pub(crate) fn is_urgent(&self) -> bool {
        !matches!(
            self,
            Op::Count {
                reset_failures: false,
                ..
            }
        )
    }
}

/// What [`reserve`] decided (the pool adopts it as a `pool::Reservation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reserved {
    /// Go ahead; the account has sent this many today, this one included.
    Granted {
        /// Today's count.
        today: u32,
    },
    /// The account reached its daily cap (with this count).
    DayCapped {
        /// Today's count.
        today: u32,
    },
    /// The account reached its per-minute cap; free again at this instant.
    MinuteCapped {
        /// When a slot frees up.
        until: DateTime<Utc>,
    },
}

/// Load the script into the server's cache (before pipelining EVALSHA).
pub(crate) fn load_script(con: &mut Connection) -> redis::RedisResult<()> {
    SCRIPT.prepare_invoke().load(con).map(|_| ())
}

fn evalsha() -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(SCRIPT.get_hash());
    cmd
}

/// The EVALSHA command for one op.
pub(crate) fn command(names: &Names, origin: &str, op: &Op, now: DateTime<Utc>) -> redis::Cmd {
    let mut cmd = evalsha();
    let mut keys: Vec<String> = Vec::new();
    let mut args: Vec<String> = Vec::new();
    let name = match op {
        Op::Park {
            ids,
            until,
            reason,
            free_only,
        } => {
            keys.extend(ids.iter().map(|id| names.key(id)));
            args.extend([
                ms(*until).to_string(),
                reason.clone(),
                flag(*free_only).into(),
            ]);
            args.extend(ids.iter().cloned());
            "park"
        }
        Op::Fail {
            id,
            streak_reason,
            max_failures,
        } => {
            keys.push(names.key(id));
            args.extend([id.clone(), streak_reason.clone(), max_failures.to_string()]);
            "fail"
        }
        Op::Disable {
            id,
            reason,
            recoverable,
            rejected,
        } => {
            keys.push(names.key(id));
            args.extend([
                id.clone(),
                reason.clone(),
                flag(*recoverable).into(),
                flag(*rejected).into(),
            ]);
            "disable"
        }
        Op::Count {
            id,
            requests,
            last_used,
            reset_failures,
        } => {
            keys.push(names.key(id));
            args.extend([
                id.clone(),
                requests.to_string(),
                last_used.map_or(0, ms).to_string(),
                flag(*reset_failures).into(),
            ]);
            "count"
        }
        Op::ProbeMark { id } => {
            keys.push(names.key(id));
            args.push(id.clone());
            "probe_mark"
        }
        Op::ProbeOk { id } => {
            keys.push(names.key(id));
            args.push(id.clone());
            "probe_ok"
        }
        Op::ProbeInvalid { id, reason } => {
            keys.push(names.key(id));
            args.extend([id.clone(), reason.clone()]);
            "probe_invalid"
        }
        Op::Model { model, until } => {
            keys.push(names.models());
            args.extend([model.clone(), ms(*until).to_string()]);
            "model"
        }
        Op::Cap {
            account,
            limit,
            exhausted,
            cap,
        } => {
            keys.extend([names.account(account), names.accounts()]);
            args.extend([
                account.clone(),
                now.date_naive().to_string(),
                limit.map(|l| l.to_string()).unwrap_or_default(),
                flag(*exhausted).into(),
                cap.to_string(),
            ]);
            "cap"
        }
    };
    cmd.arg(keys.len()).arg(keys);
    cmd.arg(names.channel())
        .arg(origin)
        .arg(name)
        .arg(ms(now))
        .arg(args);
    cmd
}

fn flag(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

/// Keys whose state an op changed, with their new state as stored.
pub(crate) type Changed = Vec<(String, HashMap<String, String>)>;

/// Read an op's answer: `[id, [field, value, ...], ...]`.
pub(crate) fn changed_from(value: Value) -> Changed {
    let Value::Array(items) = value else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut items = items.into_iter();
    while let (Some(id), Some(state)) = (items.next(), items.next()) {
        let Ok(id) = redis::from_redis_value::<String>(id) else {
            continue;
        };
        let Ok(state) = redis::from_redis_value::<HashMap<String, String>>(state) else {
            continue;
        };
        out.push((id, state));
    }
    out
}

/// Run ops in one round trip (the script must be loaded on `con`).
pub(crate) fn run(
    con: &mut Connection,
    names: &Names,
    origin: &str,
    ops: &[Op],
    now: DateTime<Utc>,
) -> redis::RedisResult<Changed> {
    if ops.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for op in ops {
        pipe.add_command(command(names, origin, op, now));
    }
    let answers: Vec<Value> = pipe.query(con)?;
    Ok(answers.into_iter().flat_map(changed_from).collect())
}

/// Count one free-model request against `account` if it is under both of
/// its caps, across every instance.
pub(crate) fn reserve(
    con: &mut Connection,
    names: &Names,
    origin: &str,
    account: &str,
    daily_cap: u32,
    minute_cap: u32,
    now: DateTime<Utc>,
) -> redis::RedisResult<Reserved> {
    let member = format!("{origin}:{}:{}", ms(now), fastrand::u64(..));
    let mut cmd = evalsha();
    cmd.arg(3)
        .arg(names.account(account))
        .arg(names.account_minute(account))
        .arg(names.accounts());
    cmd.arg(names.channel())
        .arg(origin)
        .arg("reserve")
        .arg(ms(now))
        .arg(account)
        .arg(now.date_naive().to_string())
        .arg(daily_cap)
        .arg(minute_cap)
        .arg(member);
    let answer: Vec<Value> = cmd.query(con)?;
    let int = |v: Option<&Value>| match v {
        Some(Value::Int(n)) => *n,
        _ => 0,
    };
    let text = |v: Option<&Value>| match v {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Value::SimpleString(s)) => s.clone(),
        _ => String::new(),
    };
    let today = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
    Ok(match (int(answer.first()), text(answer.get(1)).as_str()) {
        (1, _) => Reserved::Granted {
            today: today(int(answer.get(1))),
        },
        (_, "minute") => Reserved::MinuteCapped {
            until: from_ms(int(answer.get(2))).unwrap_or(now),
        },
        _ => Reserved::DayCapped {
            today: today(int(answer.get(2))),
        },
    })
}

/// A key's state from its stored fields, as the pool adopts it.
pub(crate) fn state_of(id: &str, fields: &HashMap<String, String>) -> Option<KeyState> {
    match super::layout::state_from(id, fields) {
        Ok(state) => Some(state),
        Err(e) => {
            log::warn!("ignoring an unreadable state in the shared store: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_counters_wait_for_a_batch() {
        let count = |reset| Op::Count {
            id: "a".into(),
            requests: 1,
            last_used: None,
            reset_failures: reset,
        };
        assert!(!count(false).is_urgent());
        assert!(count(true).is_urgent());
        assert!(
            Op::Fail {
                id: "a".into(),
                streak_reason: "x".into(),
                max_failures: 5
            }
            .is_urgent()
        );
    }

    #[test]
    fn a_park_names_every_key_and_its_id_in_order() {
        let names = Names::new("p");
        let now = DateTime::from_timestamp_millis(1_000).unwrap();
        let cmd = command(
            &names,
            "inst",
            &Op::Park {
                ids: vec!["a".into(), "b".into()],
                until: DateTime::from_timestamp_millis(5_000).unwrap(),
                reason: "rate-limited".into(),
                free_only: true,
            },
            now,
        );
        let args: Vec<String> = cmd
            .args_iter()
            .filter_map(|a| match a {
                redis::Arg::Simple(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect();
        assert_eq!(
            args[2..],
            [
                "2",
                "p:key:a",
                "p:key:b",
                "p:events",
                "inst",
                "park",
                "1000",
                "5000",
                "rate-limited",
                "1",
                "a",
                "b"
            ]
        );
    }

    #[test]
    fn answers_become_id_and_state_pairs() {
        let v = Value::Array(vec![
            Value::BulkString(b"a".to_vec()),
            Value::Array(vec![
                Value::BulkString(b"disabled".to_vec()),
                Value::BulkString(b"1".to_vec()),
            ]),
        ]);
        let changed = changed_from(v);
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].1.get("disabled").map(String::as_str), Some("1"));
        assert!(changed_from(Value::Nil).is_empty());
    }
}
