//! How the store is laid out in Redis: key names, and records as hash
//! fields. Pure conversions, unit-tested; no connection here.
//!
//! Under a prefix (default `orproxy`):
//! - `P:meta` hash: `version`.
//! - `P:ids` sorted set: key IDs, scored in the order they were added.
//! - `P:key:ID` hash: one key. Static fields `key`, `label`, `added_at`,
//!   `generation`, `info` (JSON); state fields as in [`KeyState`], with
//!   instants in milliseconds since the epoch and flags as `0`/`1`. An
//!   absent field is `None`, zero or false, so a state update only ever
//!   touches the fields it changes. `v` counts the key's state changes
//!   (see [`version_of`]).
//! - `P:accounts` set: accounts with free-model counts; `P:acct:NAME` hash
//!   (`day`, `free_requests`, `daily_limit`); `P:acctmin:NAME` sorted set of
//!   the last minute's free-model requests (member unique, score ms).
//! - `P:models` hash: model → until (ms) of a shared-capacity back-off.
//! - `P:usage:YYYY-MM-DD` hash: the day's usage totals (see [`super::usage`]).
//! - `P:events` channel: what changed, as JSON (see [`Message`]).

use crate::model::AccountRecord;
use crate::model::KeyState;
use crate::model::{KeyInfo, KeyRecord, StoreFile};
use crate::secret::ApiKey;
use chrono::{DateTime, NaiveDate, Utc};
use std::collections::HashMap;

/// The Redis key names of one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Names {
    prefix: String,
}

impl Names {
    /// Names under `prefix`.
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// `P:meta`.
    pub(crate) fn meta(&self) -> String {
        format!("{}:meta", self.prefix)
    }

    /// `P:ids`.
    pub(crate) fn ids(&self) -> String {
        format!("{}:ids", self.prefix)
    }

    /// `P:key:ID`.
    pub(crate) fn key(&self, id: &str) -> String {
        format!("{}:key:{id}", self.prefix)
    }

    /// `P:accounts`.
    pub(crate) fn accounts(&self) -> String {
        format!("{}:accounts", self.prefix)
    }

    /// `P:acct:NAME`.
    pub(crate) fn account(&self, name: &str) -> String {
        format!("{}:acct:{name}", self.prefix)
    }

    /// `P:acctmin:NAME`.
    pub(crate) fn account_minute(&self, name: &str) -> String {
        format!("{}:acctmin:{name}", self.prefix)
    }

    /// `P:models`.
    pub(crate) fn models(&self) -> String {
        format!("{}:models", self.prefix)
    }

    /// `P:events`.
    pub(crate) fn channel(&self) -> String {
        format!("{}:events", self.prefix)
    }

    /// `P:usage:YYYY-MM-DD` (see [`super::usage`]).
    pub(crate) fn usage(&self, day: NaiveDate) -> String {
        format!("{}:usage:{day}", self.prefix)
    }
}

/// A field that could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key {id}: field {field} holds {value:?}, which orproxy cannot read")]
pub(crate) struct FieldError {
    /// The key's ID (or account name).
    pub(crate) id: String,
    /// The field.
    pub(crate) field: &'static str,
    /// What it held (never the secret: the `key` field reports no value).
    pub(crate) value: String,
}

/// Milliseconds since the epoch.
pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// The instant `ms` milliseconds after the epoch.
pub(crate) fn from_ms(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// How one value of a key's state is kept as a Redis hash field: a time
/// as Unix milliseconds, text as it is, a count or a flag (`1`) as
/// decimal. A value at its default is not stored (the field is deleted).
trait Stored: Sized {
    /// The field's value, or None when the value is the default.
    fn write(&self) -> Option<String>;
    /// The value of a field (absent or empty: the default).
    fn read(field: Option<&str>) -> Option<Self>;
}

impl Stored for Option<DateTime<Utc>> {
    fn write(&self) -> Option<String> {
        self.map(|t| ms(t).to_string())
    }

    fn read(field: Option<&str>) -> Option<Self> {
        match field {
            None | Some("") => Some(None),
            Some(v) => v.parse::<i64>().ok().and_then(from_ms).map(Some),
        }
    }
}

impl Stored for Option<String> {
    fn write(&self) -> Option<String> {
        self.clone()
    }

    fn read(field: Option<&str>) -> Option<Self> {
        Some(field.map(str::to_owned))
    }
}

impl Stored for u64 {
    fn write(&self) -> Option<String> {
        (*self != 0).then(|| self.to_string())
    }

    fn read(field: Option<&str>) -> Option<Self> {
        match field {
            None | Some("") => Some(0),
            // Lua may hand back a negative or fractional count after a bad
            // manual edit: refuse it rather than guess.
            Some(v) => v.parse().ok(),
        }
    }
}

impl Stored for u32 {
    fn write(&self) -> Option<String> {
        u64::from(*self).write()
    }

    fn read(field: Option<&str>) -> Option<Self> {
        u64::read(field).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    }
}

impl Stored for bool {
    fn write(&self) -> Option<String> {
        self.then(|| "1".to_owned())
    }

    fn read(field: Option<&str>) -> Option<Self> {
        match field {
            None | Some("" | "0") => Some(false),
            Some("1") => Some(true),
            Some(_) => None,
        }
    }
}

/// The fields of a key's state in its hash, written once: the field
/// names, writing a state and reading it back all come from this list.
/// (`script.lua` changes these fields atomically; the parity test in
/// `sync::redis` holds it to the pool's transitions.)
macro_rules! state_fields {
    ($($field:ident),* $(,)?) => {
        /// Every state field name (to delete the ones a state leaves unset).
        pub(crate) const STATE_FIELDS: &[&str] = &[$(stringify!($field)),*];

        /// The state's fields that are set, as (field, value).
        pub(crate) fn state_fields(s: &KeyState) -> Vec<(&'static str, String)> {
            let mut out = Vec::new();
            $(
                if let Some(v) = Stored::write(&s.$field) {
                    out.push((stringify!($field), v));
                }
            )*
            out
        }

        /// Read a state back from a key's hash.
        pub(crate) fn state_from(id: &str, map: &HashMap<String, String>) -> Result<KeyState, FieldError> {
            Ok(KeyState {
                $(
                    $field: {
                        let value = map.get(stringify!($field)).map(String::as_str);
                        Stored::read(value).ok_or_else(|| FieldError {
                            id: id.to_owned(),
                            field: stringify!($field),
                            value: value.unwrap_or_default().to_owned(),
                        })?
                    },
                )*
                // Redis keeps fields it does not know in the hash itself
                // (only changed fields are ever written).
                extra: serde_json::Map::new(),
            })
        }
    };
}

state_fields!(
    last_used,
    cooldown_until,
    cooldown_reason,
    consecutive_failures,
    disabled,
    disabled_reason,
    requests_total,
    failures_total,
    free_cooldown_until,
    free_cooldown_reason,
    auto_recover,
    last_probe,
    rejected,
);

/// Every field of a record that is set, as (field, value).
pub(crate) fn record_fields(
    r: &KeyRecord,
) -> Result<Vec<(&'static str, String)>, serde_json::Error> {
    let mut out = vec![
        ("key", r.key.expose().to_owned()),
        ("added_at", ms(r.added_at).to_string()),
        ("generation", r.generation.to_string()),
    ];
    if let Some(label) = &r.label {
        out.push(("label", label.clone()));
    }
    if let Some(info) = &r.info {
        out.push(("info", serde_json::to_string(info)?));
    }
    out.extend(state_fields(&r.state));
    Ok(out)
}

/// Every field name a record may have.
pub(crate) fn all_record_fields() -> impl Iterator<Item = &'static str> {
    ["key", "added_at", "generation", "label", "info"]
        .into_iter()
        .chain(STATE_FIELDS.iter().copied())
}

/// Read a whole record back from a key's hash.
pub(crate) fn record_from(
    id: &str,
    map: &HashMap<String, String>,
) -> Result<KeyRecord, FieldError> {
    let bad = |field: &'static str, value: &str| FieldError {
        id: id.to_owned(),
        field,
        value: value.to_owned(),
    };
    let key = map
        .get("key")
        .and_then(|k| ApiKey::parse(k).ok())
        .ok_or_else(|| bad("key", "(missing or invalid; not shown)"))?;
    let added_at = match map.get("added_at") {
        Some(v) => v
            .parse::<i64>()
            .ok()
            .and_then(from_ms)
            .ok_or_else(|| bad("added_at", v))?,
        None => DateTime::<Utc>::UNIX_EPOCH,
    };
    let generation = match map.get("generation") {
        Some(v) => v.parse::<u64>().map_err(|_| bad("generation", v))?,
        None => 0,
    };
    let info = match map.get("info") {
        Some(v) => Some(serde_json::from_str::<KeyInfo>(v).map_err(|_| bad("info", v))?),
        None => None,
    };
    Ok(KeyRecord {
        id: id.to_owned(),
        key,
        label: map.get("label").cloned(),
        added_at,
        generation,
        state: state_from(id, map)?,
        info,
        extra: serde_json::Map::new(),
    })
}

/// The version of a key's state: bumped by every change, so that an
/// instance can tell an older state (a slow snapshot) from a newer one.
pub(crate) fn version_of(map: &HashMap<String, String>) -> u64 {
    map.get("v").and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// An account's hash fields that are set (its minute's requests are the
/// `P:acctmin:NAME` sorted set).
pub(crate) fn account_fields(a: &AccountRecord) -> Vec<(&'static str, String)> {
    let mut out = vec![("free_requests", a.free_requests.to_string())];
    if let Some(day) = a.day {
        out.push(("day", day.to_string()));
    }
    if let Some(limit) = a.daily_limit {
        out.push(("daily_limit", limit.to_string()));
    }
    if let Some(at) = a.limit_at {
        out.push(("limit_at", ms(at).to_string()));
    }
    if let Some(at) = a.reset_at {
        out.push(("reset_at", ms(at).to_string()));
    }
    out
}

/// An account's minute of requests from its sorted set (member, score in
/// ms), oldest first.
pub(crate) fn minute_from(entries: &[(String, f64)]) -> Vec<DateTime<Utc>> {
    let mut out: Vec<DateTime<Utc>> = entries
        .iter()
        .filter_map(|(_, score)| from_ms(*score as i64))
        .collect();
    out.sort_unstable();
    out
}

/// Read an account back.
pub(crate) fn account_from(
    name: &str,
    map: &HashMap<String, String>,
) -> Result<AccountRecord, FieldError> {
    let bad = |field: &'static str, value: &str| FieldError {
        id: name.to_owned(),
        field,
        value: value.to_owned(),
    };
    let day = match map.get("day") {
        Some(v) => Some(v.parse::<NaiveDate>().map_err(|_| bad("day", v))?),
        None => None,
    };
    let free_requests = match map.get("free_requests") {
        Some(v) => v.parse::<u32>().map_err(|_| bad("free_requests", v))?,
        None => 0,
    };
    let daily_limit = match map.get("daily_limit") {
        Some(v) => Some(v.parse::<u32>().map_err(|_| bad("daily_limit", v))?),
        None => None,
    };
    let instant = |field: &'static str| match map.get(field) {
        Some(v) => v
            .parse::<i64>()
            .ok()
            .and_then(from_ms)
            .map(Some)
            .ok_or_else(|| bad(field, v)),
        None => Ok(None),
    };
    Ok(AccountRecord {
        day,
        free_requests,
        daily_limit,
        limit_at: instant("limit_at")?,
        reset_at: instant("reset_at")?,
        last_minute: Vec::new(),
        extra: serde_json::Map::new(),
    })
}

/// The commands that turn `before` into `after` (both snapshots of the same
/// store), appended to `pipe`: only changed fields are written, so a
/// server's concurrent counter updates to other keys are untouched. New
/// keys are scored after `max_score`. Returns whether anything changed.
pub(crate) fn diff(
    names: &Names,
    before: &StoreFile,
    after: &StoreFile,
    max_score: f64,
    pipe: &mut redis::Pipeline,
) -> Result<bool, serde_json::Error> {
    let mut changed = false;
    let old: HashMap<&str, &KeyRecord> = before.keys.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut score = max_score;
    let mut seen = std::collections::HashSet::new();
    for record in &after.keys {
        if !seen.insert(record.id.as_str()) {
            continue;
        }
        let hash = names.key(&record.id);
        let new_fields = record_fields(record)?;
        let old_fields = match old.get(record.id.as_str()) {
            Some(r) if *r == record => continue,
            Some(r) => record_fields(r)?,
            None => {
                score += 1.0;
                pipe.cmd("ZADD").arg(names.ids()).arg(score).arg(&record.id);
                Vec::new()
            }
        };
        changed = true;
        let old_map: HashMap<&str, &str> =
            old_fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let set: Vec<&(&str, String)> = new_fields
            .iter()
            .filter(|(k, v)| old_map.get(k) != Some(&v.as_str()))
            .collect();
        if !set.is_empty() {
            let mut cmd = redis::cmd("HSET");
            cmd.arg(&hash);
            for (k, v) in set {
                cmd.arg(*k).arg(v);
            }
            pipe.add_command(cmd);
        }
        let kept: std::collections::HashSet<&str> = new_fields.iter().map(|(k, _)| *k).collect();
        let gone: Vec<&str> = all_record_fields()
            .filter(|f| !kept.contains(f) && old_map.contains_key(f))
            .collect();
        if !gone.is_empty() {
            pipe.cmd("HDEL").arg(&hash).arg(gone);
        }
        pipe.cmd("HINCRBY").arg(&hash).arg("v").arg(1);
    }
    for record in &before.keys {
        if !seen.contains(record.id.as_str()) {
            changed = true;
            pipe.cmd("DEL").arg(names.key(&record.id));
            pipe.cmd("ZREM").arg(names.ids()).arg(&record.id);
        }
    }
    for (name, account) in &after.accounts {
        let old = before.accounts.get(name);
        if old == Some(account) {
            continue;
        }
        changed = true;
        let hash = names.account(name);
        pipe.cmd("DEL").arg(&hash);
        let mut cmd = redis::cmd("HSET");
        cmd.arg(&hash);
        for (k, v) in account_fields(account) {
            cmd.arg(k).arg(v);
        }
        pipe.add_command(cmd);
        pipe.cmd("SADD").arg(names.accounts()).arg(name);
        diff_minute(names, name, old, account, pipe);
    }
    for name in before.accounts.keys() {
        if !after.accounts.contains_key(name) {
            changed = true;
            pipe.cmd("DEL")
                .arg(names.account(name))
                .arg(names.account_minute(name));
            pipe.cmd("SREM").arg(names.accounts()).arg(name);
        }
    }
    Ok(changed)
}

/// The commands that turn an account's minute of requests from `before`'s
/// into `after`'s: emptied (forgotten), or new requests added (a key's
/// minute moved to its account). Requests the servers reserve meanwhile
/// are left alone.
fn diff_minute(
    names: &Names,
    name: &str,
    before: Option<&AccountRecord>,
    after: &AccountRecord,
    pipe: &mut redis::Pipeline,
) {
    let window = names.account_minute(name);
    let old: &[DateTime<Utc>] = before.map_or(&[], |b| &b.last_minute);
    if after.last_minute.is_empty() {
        if !old.is_empty() {
            pipe.cmd("DEL").arg(&window);
        }
        return;
    }
    let new: Vec<&DateTime<Utc>> = after
        .last_minute
        .iter()
        .filter(|t| !old.contains(t))
        .collect();
    if new.is_empty() {
        return;
    }
    let mut cmd = redis::cmd("ZADD");
    cmd.arg(&window);
    for t in new {
        cmd.arg(ms(*t)).arg(format!("m:{}", ms(*t)));
    }
    pipe.add_command(cmd);
    pipe.cmd("PEXPIRE").arg(&window).arg(61_000);
}

/// What the `P:events` channel carries, as JSON. `o` is the instance that
/// made the change (so it can skip its own news).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
pub(crate) struct Message {
    /// The instance that published it (empty for the CLI).
    #[serde(default)]
    pub(crate) o: String,
    /// A key whose state changed, with its whole hash in `s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) k: Option<String>,
    /// The key's hash as field, value, field, value... (Lua's cjson turns an
    /// empty list into `{}`, hence the loose type).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub(crate) s: serde_json::Value,
    /// A model backing off, until `u` (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) m: Option<String>,
    /// See `m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) u: Option<i64>,
    /// Keys were added, removed or reset: read the whole store again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) reload: bool,
}

impl Message {
    /// The reload notice the CLI and admin changes publish.
    pub(crate) fn reload(origin: &str) -> String {
        serde_json::to_string(&Message {
            o: origin.to_owned(),
            k: None,
            s: serde_json::Value::Null,
            m: None,
            u: None,
            reload: true,
        })
        .unwrap_or_else(|_| "{\"reload\":true}".to_owned())
    }
}

/// A flat `[field, value, ...]` list (as HGETALL and the scripts return it)
/// as a map; anything else is empty.
pub(crate) fn pairs(value: &serde_json::Value) -> HashMap<String, String> {
    let mut map = HashMap::new();
    if let Some(items) = value.as_array() {
        for pair in items.chunks(2) {
            if let [serde_json::Value::String(k), v] = pair {
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                map.insert(k.clone(), v);
            }
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_123).unwrap()
    }

    fn full_state() -> KeyState {
        KeyState {
            last_used: Some(t0()),
            cooldown_until: Some(t0() + TimeDelta::seconds(30)),
            cooldown_reason: Some("rate-limited".into()),
            consecutive_failures: 3,
            disabled: true,
            disabled_reason: Some("401".into()),
            requests_total: 12,
            failures_total: 4,
            free_cooldown_until: Some(t0() + TimeDelta::hours(2)),
            free_cooldown_reason: Some("free-models-per-day".into()),
            auto_recover: true,
            last_probe: Some(t0() - TimeDelta::minutes(1)),
            rejected: true,
            extra: Default::default(),
        }
    }

    fn as_map(fields: &[(&'static str, String)]) -> HashMap<String, String> {
        fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn every_state_field_round_trips() {
        let s = full_state();
        let fields = state_fields(&s);
        assert_eq!(fields.len(), STATE_FIELDS.len(), "every field is written");
        assert_eq!(state_from("k", &as_map(&fields)).unwrap(), s);
    }

    #[test]
    fn a_fresh_state_writes_no_fields_and_reads_back_from_none() {
        assert!(state_fields(&KeyState::default()).is_empty());
        assert_eq!(
            state_from("k", &HashMap::new()).unwrap(),
            KeyState::default()
        );
    }

    #[test]
    fn a_record_round_trips_with_label_and_info_and_its_unknown_fields() {
        let record = KeyRecord {
            id: "abcd1234".into(),
            key: ApiKey::parse("sk-or-v1-0123456789abcdef").unwrap(),
            label: Some("work".into()),
            added_at: t0(),
            generation: 2,
            state: full_state(),
            info: Some(KeyInfo {
                creator_user_id: Some("user_1".into()),
                is_free_tier: Some(true),
                // A newer version's field: the info goes as JSON, whole.
                extra: [("rate_limit".to_owned(), serde_json::json!({"requests": 10}))]
                    .into_iter()
                    .collect(),
                ..KeyInfo::default()
            }),
            extra: Default::default(),
        };
        let map = as_map(&record_fields(&record).unwrap());
        assert_eq!(record_from("abcd1234", &map).unwrap(), record);
    }

    #[test]
    fn unreadable_fields_are_reported_without_the_secret() {
        let mut map = HashMap::new();
        map.insert("key".to_owned(), String::new());
        let err = record_from("abcd1234", &map).unwrap_err();
        assert_eq!(err.field, "key");
        map.insert("key".to_owned(), "sk-or-v1-secretsecret".to_owned());
        map.insert("disabled".to_owned(), "yes".to_owned());
        let err = record_from("abcd1234", &map).unwrap_err();
        assert_eq!((err.field, err.value.as_str()), ("disabled", "yes"));
        assert!(!err.to_string().contains("secretsecret"));
        map.insert("disabled".to_owned(), "1".to_owned());
        map.insert("requests_total".to_owned(), "-3".to_owned());
        assert_eq!(
            record_from("abcd1234", &map).unwrap_err().field,
            "requests_total"
        );
    }

    #[test]
    fn accounts_round_trip() {
        let a = AccountRecord {
            day: Some(t0().date_naive()),
            free_requests: 7,
            daily_limit: Some(50),
            limit_at: Some(t0()),
            reset_at: Some(t0() - TimeDelta::seconds(5)),
            ..AccountRecord::default()
        };
        assert_eq!(
            account_from("acct", &as_map(&account_fields(&a))).unwrap(),
            a
        );
    }

    #[test]
    fn flat_pairs_become_a_map_and_cjson_empty_objects_are_empty() {
        let v = serde_json::json!(["a", "1", "b", "x"]);
        let m = pairs(&v);
        assert_eq!(m.get("a").map(String::as_str), Some("1"));
        assert_eq!(m.len(), 2);
        assert!(pairs(&serde_json::json!({})).is_empty());
    }

    #[test]
    fn messages_parse_and_reload_notices_render() {
        let m: Message =
            serde_json::from_str(r#"{"o":"a1","k":"abcd","s":["disabled","1"]}"#).unwrap();
        assert_eq!(m.k.as_deref(), Some("abcd"));
        assert!(!m.reload);
        let r: Message = serde_json::from_str(&Message::reload("cli")).unwrap();
        assert!(r.reload);
        assert_eq!(r.o, "cli");
    }
}
