//! What the pool has served: per UTC day, per key, per account and per
//! model, the requests that reached OpenRouter, the errors among them, the
//! tokens and the cost OpenRouter reported. Kept as the store's `usage`
//! section for [`KEEP_DAYS`] days, and read back as the rows that
//! `orproxy usage --json` prints and `GET /admin/usage` answers.

use chrono::{NaiveDate, TimeDelta};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Days of usage kept (today included); older days are pruned.
pub(crate) const KEEP_DAYS: u32 = 100;

/// The model of a request that named none.
pub(crate) const NO_MODEL: &str = "(none)";

/// The most models one day keeps apart (model names come from clients);
/// any further ones are added up as [`OTHER_MODELS`].
pub(crate) const MAX_MODELS: usize = 1000;

/// Where the models of a day beyond [`MAX_MODELS`] are counted.
pub(crate) const OTHER_MODELS: &str = "(other models)";

/// The totals of one key, account or model on one day.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UsageTotals {
    /// Answers OpenRouter gave (each attempt of a retried request counts).
    pub requests: u64,
    /// Those that were not a success.
    pub errors: u64,
    /// Input tokens, cached ones included.
    pub prompt_tokens: u64,
    /// Output tokens, reasoning included.
    pub completion_tokens: u64,
    /// Input tokens read from a prompt cache.
    pub cached_tokens: u64,
    /// Output tokens spent on reasoning.
    pub reasoning_tokens: u64,
    /// What OpenRouter charged, in credits (US dollars).
    pub cost: f64,
    /// Fields this version does not know, kept on rewrite.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl UsageTotals {
    /// Add `other` to these totals.
    pub(crate) fn add(&mut self, other: &UsageTotals) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(other.completion_tokens);
        self.cached_tokens = self.cached_tokens.saturating_add(other.cached_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(other.reasoning_tokens);
        self.cost += other.cost;
    }
}

/// One UTC day's totals, three ways.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UsageDay {
    /// By key ID.
    pub keys: BTreeMap<String, UsageTotals>,
    /// By account (`key:<id>` for a key whose account is unknown).
    pub accounts: BTreeMap<String, UsageTotals>,
    /// By model, as the request named it.
    pub models: BTreeMap<String, UsageTotals>,
    /// Fields this version does not know, kept on rewrite.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl UsageDay {
    /// The day's totals: every key's, added up.
    fn total(&self) -> UsageTotals {
        let mut total = UsageTotals::default();
        for t in self.keys.values() {
            total.add(t);
        }
        total
    }

    fn group(&self, by: UsageBy) -> &BTreeMap<String, UsageTotals> {
        match by {
            UsageBy::Key => &self.keys,
            UsageBy::Account => &self.accounts,
            UsageBy::Model => &self.models,
        }
    }
}

/// The store's `usage` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UsageBook {
    /// Each UTC day's totals.
    pub days: BTreeMap<NaiveDate, UsageDay>,
    /// Fields this version does not know, kept on rewrite.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl UsageBook {
    /// Whether nothing is recorded (the section is then left out of the file).
    pub(crate) fn is_empty(&self) -> bool {
        self.days.is_empty() && self.extra.is_empty()
    }

    /// Add `totals` of key `key` (of `account`) for `model` on `day`.
    pub(crate) fn add(
        &mut self,
        day: NaiveDate,
        key: &str,
        account: &str,
        model: &str,
        totals: &UsageTotals,
    ) {
        let entry = self.days.entry(day).or_default();
        let model = if entry.models.len() >= MAX_MODELS && !entry.models.contains_key(model) {
            OTHER_MODELS
        } else {
            model
        };
        for (map, name) in [
            (&mut entry.keys, key),
            (&mut entry.accounts, account),
            (&mut entry.models, model),
        ] {
            match map.get_mut(name) {
                Some(t) => t.add(totals),
                None => {
                    map.insert(name.to_owned(), totals.clone());
                }
            }
        }
    }

    /// Drop the days older than [`KEEP_DAYS`] before `today`.
    pub(crate) fn prune(&mut self, today: NaiveDate) {
        let oldest = first_kept_day(today);
        self.days.retain(|day, _| *day >= oldest);
    }

    /// The rows from day `since` on, one per day (`by`: one per day and
    /// key, account or model), in order of day and then name.
    pub(crate) fn rows(&self, by: Option<UsageBy>, since: NaiveDate) -> Vec<UsageRow> {
        let mut rows = Vec::new();
        for (day, totals) in self.days.range(since..) {
            match by {
                None => rows.push(UsageRow::of(*day, None, &totals.total())),
                Some(by) => {
                    for (name, t) in totals.group(by) {
                        rows.push(UsageRow::of(*day, Some((by, name)), t));
                    }
                }
            }
        }
        rows
    }
}

/// The oldest day kept on `today`.
pub(crate) fn first_kept_day(today: NaiveDate) -> NaiveDate {
    today
        .checked_sub_signed(TimeDelta::days(i64::from(KEEP_DAYS) - 1))
        .unwrap_or(NaiveDate::MIN)
}

/// How usage rows are grouped besides by day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UsageBy {
    /// By key ID.
    Key,
    /// By account.
    Account,
    /// By model.
    Model,
}

impl UsageBy {
    /// `key`, `account` or `model`.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "key" => Some(UsageBy::Key),
            "account" => Some(UsageBy::Account),
            "model" => Some(UsageBy::Model),
            _ => None,
        }
    }
}

/// The first day to show: a date, or the last N days (today included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Since {
    /// From this UTC day on.
    Date(NaiveDate),
    /// The last this many days, today included.
    Days(u32),
}

/// A `--since` that is neither a date nor a number of days.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither a date (YYYY-MM-DD) nor a number of days like 7d")]
pub(crate) struct BadSince(String);

impl std::str::FromStr for Since {
    type Err = BadSince;

    fn from_str(text: &str) -> Result<Self, BadSince> {
        let bad = || BadSince(text.to_owned());
        if let Some(days) = text.strip_suffix('d') {
            return match days.parse::<u32>() {
                Ok(n) if n > 0 && days.bytes().all(|b| b.is_ascii_digit()) => Ok(Since::Days(n)),
                _ => Err(bad()),
            };
        }
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map(Since::Date)
            .map_err(|_| bad())
    }
}

impl Since {
    /// The first day shown on `today`.
    pub(crate) fn first_day(self, today: NaiveDate) -> NaiveDate {
        match self {
            Since::Date(day) => day,
            Since::Days(n) => today
                .checked_sub_signed(TimeDelta::days(i64::from(n) - 1))
                .unwrap_or(NaiveDate::MIN),
        }
    }
}

/// One row of `orproxy usage --json` and `GET /admin/usage`: a day's totals,
/// of one key, account or model when grouped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct UsageRow {
    /// The UTC day, `YYYY-MM-DD`.
    pub(crate) day: NaiveDate,
    /// The key's ID (`--by key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<String>,
    /// The account (`--by account`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) account: Option<String>,
    /// The model (`--by model`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) model: Option<String>,
    /// Answers OpenRouter gave.
    pub(crate) requests: u64,
    /// Those that were not a success.
    pub(crate) errors: u64,
    /// Input tokens, cached ones included.
    pub(crate) prompt_tokens: u64,
    /// Output tokens, reasoning included.
    pub(crate) completion_tokens: u64,
    /// Input tokens read from a prompt cache.
    pub(crate) cached_tokens: u64,
    /// Output tokens spent on reasoning.
    pub(crate) reasoning_tokens: u64,
    /// Credits (US dollars) OpenRouter charged.
    pub(crate) cost: f64,
}

impl UsageRow {
    fn of(day: NaiveDate, group: Option<(UsageBy, &str)>, t: &UsageTotals) -> Self {
        let name = |by: UsageBy| {
            group
                .filter(|(b, _)| *b == by)
                .map(|(_, name)| name.to_owned())
        };
        Self {
            day,
            key: name(UsageBy::Key),
            account: name(UsageBy::Account),
            model: name(UsageBy::Model),
            requests: t.requests,
            errors: t.errors,
            prompt_tokens: t.prompt_tokens,
            completion_tokens: t.completion_tokens,
            cached_tokens: t.cached_tokens,
            reasoning_tokens: t.reasoning_tokens,
            cost: t.cost,
        }
    }

    /// The name of its key, account or model, when grouped.
    pub(crate) fn group(&self) -> Option<&str> {
        self.key
            .as_deref()
            .or(self.account.as_deref())
            .or(self.model.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
    }

    fn spent(requests: u64, prompt: u64, cost: f64) -> UsageTotals {
        UsageTotals {
            requests,
            prompt_tokens: prompt,
            cost,
            ..UsageTotals::default()
        }
    }

    #[test]
    fn totals_add_up_per_key_account_and_model() {
        let mut book = UsageBook::default();
        book.add(day(27), "k1", "u1", "m1", &spent(1, 10, 0.5));
        book.add(day(27), "k2", "u1", "m2", &spent(2, 20, 0.25));
        book.add(day(27), "k1", "u1", "m2", &spent(1, 5, 0.0));
        let d = &book.days[&day(27)];
        assert_eq!(d.keys["k1"], spent(2, 15, 0.5));
        assert_eq!(d.accounts["u1"], spent(4, 35, 0.75));
        assert_eq!(d.models["m2"], spent(3, 25, 0.25));
        assert_eq!(d.total(), spent(4, 35, 0.75));
    }

    #[test]
    fn a_day_keeps_so_many_models_apart_and_adds_up_the_rest() {
        let mut book = UsageBook::default();
        for i in 0..MAX_MODELS + 2 {
            book.add(day(27), "k", "a", &format!("m{i}"), &spent(1, 1, 0.0));
        }
        book.add(day(27), "k", "a", "m0", &spent(1, 1, 0.0));
        let models = &book.days[&day(27)].models;
        assert_eq!(models.len(), MAX_MODELS + 1);
        assert_eq!(models[OTHER_MODELS], spent(2, 2, 0.0));
        assert_eq!(models["m0"], spent(2, 2, 0.0));
    }

    #[test]
    fn rows_by_day_or_group_from_a_day_on() {
        let mut book = UsageBook::default();
        book.add(day(25), "k1", "u1", "m1", &spent(1, 10, 0.5));
        book.add(day(27), "k2", "key:k2", "m1", &spent(2, 20, 0.25));
        book.add(day(27), "k1", "u1", "m2", &spent(1, 5, 0.0));
        let rows = book.rows(None, day(26));
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].day, rows[0].requests), (day(27), 3));
        let rows = book.rows(Some(UsageBy::Account), day(1));
        let names: Vec<_> = rows.iter().map(|r| (r.day, r.group().unwrap())).collect();
        assert_eq!(
            names,
            [(day(25), "u1"), (day(27), "key:k2"), (day(27), "u1")]
        );
        assert_eq!(
            serde_json::to_value(&rows[1]).unwrap(),
            json!({"day": "2026-11-27", "account": "key:k2", "requests": 2, "errors": 0,
                "prompt_tokens": 20, "completion_tokens": 0, "cached_tokens": 0,
                "reasoning_tokens": 0, "cost": 0.25})
        );
    }

    #[test]
    fn days_older_than_the_kept_ones_are_pruned() {
        let today = day(27);
        let mut book = UsageBook::default();
        let oldest = first_kept_day(today);
        assert_eq!((today - oldest).num_days(), i64::from(KEEP_DAYS) - 1);
        for d in [oldest.pred_opt().unwrap(), oldest, today] {
            book.add(d, "k", "a", "m", &spent(1, 1, 0.0));
        }
        book.prune(today);
        assert_eq!(
            book.days.keys().copied().collect::<Vec<_>>(),
            [oldest, today]
        );
    }

    #[test]
    fn since_is_a_date_or_a_number_of_days_with_today() {
        assert_eq!("2026-11-01".parse(), Ok(Since::Date(day(1))));
        assert_eq!("7d".parse(), Ok(Since::Days(7)));
        assert_eq!(Since::Days(7).first_day(day(27)), day(21));
        assert_eq!(Since::Days(1).first_day(day(27)), day(27));
        assert_eq!(Since::Date(day(3)).first_day(day(27)), day(3));
        for bad in [
            "0d",
            "d",
            "-1d",
            "+3d",
            "7",
            "7 d",
            "2026-13-01",
            "yesterday",
            "",
        ] {
            assert!(bad.parse::<Since>().is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_fields_are_kept_at_every_level() {
        let text = json!({"days": {"2026-11-27": {
            "keys": {"k": {"requests": 1, "cost": 0.5, "images": 3}},
            "providers": {"x": 1}}}, "since": "2026-01-01"});
        let book: UsageBook = serde_json::from_value(text.clone()).unwrap();
        let mut back = serde_json::to_value(&book).unwrap();
        // Known fields are written in full; the unknown ones are as they were.
        assert_eq!(back["since"], text["since"]);
        assert_eq!(back["days"]["2026-11-27"]["providers"], json!({"x": 1}));
        let k = back["days"]["2026-11-27"]["keys"]["k"].take();
        assert_eq!(
            (k["images"].clone(), k["requests"].clone()),
            (json!(3), json!(1))
        );
    }
}
