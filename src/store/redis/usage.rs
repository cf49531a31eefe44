//! Usage totals in Redis: one hash per UTC day, `P:usage:YYYY-MM-DD`, whose
//! fields are `GROUP:NAME:COUNTER`: GROUP is `key`, `account` or `model`,
//! NAME the key's ID, the account or the model (which may hold colons),
//! COUNTER one of [`COUNTERS`]. Instances add their sums with `HINCRBY`
//! (`HINCRBYFLOAT` for `cost`), so several of them add up. A day's hash
//! expires [`KEEP_DAYS`] days after the day began.

use super::RedisStore;
use crate::model::{KEEP_DAYS, UsageBook, UsageDay, UsageTotals};
use crate::store::StoreError;
use chrono::{NaiveDate, NaiveTime, TimeDelta};
use redis::Connection;
use std::collections::{BTreeMap, HashMap};

/// The counters of each key, account and model, as hash field suffixes.
pub(crate) const COUNTERS: [&str; 7] = [
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost",
];

/// The groups of a day, as hash field prefixes.
const GROUPS: [&str; 3] = ["key", "account", "model"];

/// One increment of a day's hash.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Incr {
    /// `HINCRBY field n`.
    Count(String, u64),
    /// `HINCRBYFLOAT field x`.
    Float(String, f64),
}

fn groups(day: &UsageDay) -> [(&str, &BTreeMap<String, UsageTotals>); 3] {
    [
        (GROUPS[0], &day.keys),
        (GROUPS[1], &day.accounts),
        (GROUPS[2], &day.models),
    ]
}

/// The increments that add `day`'s totals to its hash (counters at zero
/// are left out).
pub(crate) fn increments(day: &UsageDay) -> Vec<Incr> {
    let mut out = Vec::new();
    for (group, map) in groups(day) {
        for (name, t) in map {
            let counts = [
                t.requests,
                t.errors,
                t.prompt_tokens,
                t.completion_tokens,
                t.cached_tokens,
                t.reasoning_tokens,
            ];
            for (counter, n) in COUNTERS.iter().zip(counts) {
                if n > 0 {
                    out.push(Incr::Count(format!("{group}:{name}:{counter}"), n));
                }
            }
            if t.cost != 0.0 && t.cost.is_finite() {
                out.push(Incr::Float(format!("{group}:{name}:cost"), t.cost));
            }
        }
    }
    out
}

/// A field that is not a usage counter orproxy can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("usage of {day}: field {field:?} holds {value:?}, which orproxy cannot read")]
pub(crate) struct UsageFieldError {
    day: NaiveDate,
    field: String,
    value: String,
}

/// A day's totals read back from its hash. Fields of groups or counters
/// this version does not know are left out.
pub(crate) fn day_from(
    day: NaiveDate,
    map: &HashMap<String, String>,
) -> Result<UsageDay, UsageFieldError> {
    let mut out = UsageDay::default();
    for (field, value) in map {
        let Some((group, rest)) = field.split_once(':') else {
            continue;
        };
        let Some((name, counter)) = rest.rsplit_once(':') else {
            continue;
        };
        let target = match group {
            "key" => &mut out.keys,
            "account" => &mut out.accounts,
            "model" => &mut out.models,
            _ => continue,
        };
        if !COUNTERS.contains(&counter) {
            continue;
        }
        let bad = || UsageFieldError {
            day,
            field: field.clone(),
            value: value.clone(),
        };
        let t = target.entry(name.to_owned()).or_default();
        if counter == "cost" {
            t.cost = value
                .parse::<f64>()
                .ok()
                .filter(|c| c.is_finite())
                .ok_or_else(bad)?;
            continue;
        }
        let n = value.parse::<u64>().map_err(|_| bad())?;
        match counter {
            "requests" => t.requests = n,
            "errors" => t.errors = n,
            "prompt_tokens" => t.prompt_tokens = n,
            "completion_tokens" => t.completion_tokens = n,
            "cached_tokens" => t.cached_tokens = n,
            _ => t.reasoning_tokens = n,
        }
    }
    Ok(out)
}

/// When a day's hash expires: [`KEEP_DAYS`] days after the day began (Unix
/// seconds).
fn expires_at(day: NaiveDate) -> i64 {
    (day.and_time(NaiveTime::MIN).and_utc() + TimeDelta::days(i64::from(KEEP_DAYS))).timestamp()
}

impl RedisStore {
    /// Add `book`'s totals to the store's, atomically.
    pub(crate) fn add_usage(
        &self,
        con: &mut Connection,
        book: &UsageBook,
    ) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (day, totals) in &book.days {
            let hash = self.names().usage(*day);
            for incr in increments(totals) {
                match incr {
                    Incr::Count(field, n) => pipe.cmd("HINCRBY").arg(&hash).arg(field).arg(n),
                    Incr::Float(field, x) => pipe.cmd("HINCRBYFLOAT").arg(&hash).arg(field).arg(x),
                };
            }
            pipe.cmd("EXPIREAT").arg(&hash).arg(expires_at(*day));
        }
        pipe.query::<()>(con)
            .map_err(|e| self.error("cannot write", &e))
    }

    /// The usage totals of the days from `since` to `until`.
    pub(crate) fn usage(
        &self,
        since: NaiveDate,
        until: NaiveDate,
    ) -> Result<UsageBook, StoreError> {
        let days: Vec<NaiveDate> = since.iter_days().take_while(|d| *d <= until).collect();
        let mut book = UsageBook::default();
        if days.is_empty() {
            return Ok(book);
        }
        let mut con = self.connect()?;
        let mut pipe = redis::pipe();
        for day in &days {
            pipe.cmd("HGETALL").arg(self.names().usage(*day));
        }
        let maps: Vec<HashMap<String, String>> = pipe
            .query(&mut con)
            .map_err(|e| self.error("cannot read", &e))?;
        for (day, map) in days.into_iter().zip(maps) {
            if map.is_empty() {
                continue;
            }
            let totals = day_from(day, &map).map_err(|e| StoreError::Redis {
                action: "cannot read",
                store: self.shown().to_owned(),
                msg: format!("{e}; fix or delete that field. orproxy will not overwrite it"),
            })?;
            book.days.insert(day, totals);
        }
        Ok(book)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 27).unwrap()
    }

    #[test]
    fn a_day_round_trips_through_its_fields() {
        let mut book = UsageBook::default();
        let spent = UsageTotals {
            requests: 3,
            errors: 1,
            prompt_tokens: 30,
            completion_tokens: 7,
            cached_tokens: 4,
            reasoning_tokens: 2,
            cost: 0.000_42,
            ..UsageTotals::default()
        };
        book.add(
            day(),
            "1a2b3c4d",
            "key:1a2b3c4d",
            "meta-llama/llama-3.3-70b-instruct:free",
            &spent,
        );
        let d = &book.days[&day()];
        let fields: HashMap<String, String> = increments(d)
            .into_iter()
            .map(|incr| match incr {
                Incr::Count(f, n) => (f, n.to_string()),
                Incr::Float(f, x) => (f, x.to_string()),
            })
            .collect();
        assert_eq!(fields.len(), 3 * COUNTERS.len());
        assert_eq!(
            fields["model:meta-llama/llama-3.3-70b-instruct:free:prompt_tokens"],
            "30"
        );
        assert_eq!(fields["account:key:1a2b3c4d:cost"], "0.00042");
        assert_eq!(&day_from(day(), &fields).unwrap(), d);
    }

    #[test]
    fn unknown_fields_are_skipped_and_bad_counts_refused() {
        let mut map: HashMap<String, String> = [
            ("key:k:requests", "2"),
            ("key:k:images", "9"),
            ("provider:p:requests", "1"),
            ("stray", "x"),
            ("model:m:cost", "0.5"),
        ]
        .into_iter()
        .map(|(f, v)| (f.to_owned(), v.to_owned()))
        .collect();
        let d = day_from(day(), &map).unwrap();
        assert_eq!(d.keys["k"].requests, 2);
        assert_eq!(d.models["m"].cost, 0.5);
        assert!(d.accounts.is_empty());
        map.insert("key:k:errors".into(), "-1".into());
        let err = day_from(day(), &map).unwrap_err();
        assert!(err.to_string().contains("key:k:errors"), "{err}");
    }

    #[test]
    fn a_day_expires_when_it_is_no_longer_kept() {
        let expiry = chrono::DateTime::from_timestamp(expires_at(day()), 0).unwrap();
        let oldest_kept = crate::model::first_kept_day(expiry.date_naive());
        assert_eq!(oldest_kept, day().succ_opt().unwrap());
    }
}
