//! The usage ledger's side in memory: each finished request adds what it
//! spent here (one short lock, a few map updates, no I/O), and the store's
//! sync takes the sums off every few seconds and adds them to the store
//! (the file's `usage` section, or Redis counters that every instance
//! increments). Sums that could not be written are put back and go with
//! the next write.

use crate::model::{MAX_MODELS, OTHER_MODELS, StoreFile, UsageBook, UsageTotals, quota_account};
use chrono::NaiveDate;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Totals spent and not yet in the store.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pending: Mutex<Pending>,
}

/// Sums per UTC day, key ID and model.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Pending {
    days: HashMap<NaiveDate, HashMap<String, HashMap<String, UsageTotals>>>,
}

impl Pending {
    /// Whether nothing is pending.
    pub(crate) fn is_empty(&self) -> bool {
        self.days.is_empty()
    }

    fn add(&mut self, day: NaiveDate, key: &str, model: &str, totals: &UsageTotals) {
        let keys = self.days.entry(day).or_default();
        let models = match keys.get_mut(key) {
            Some(models) => models,
            None => keys.entry(key.to_owned()).or_default(),
        };
        // Model names come from clients: bounded while the store is away.
        let model = if models.len() >= MAX_MODELS && !models.contains_key(model) {
            OTHER_MODELS
        } else {
            model
        };
        match models.get_mut(model) {
            Some(t) => t.add(totals),
            None => {
                models.insert(model.to_owned(), totals.clone());
            }
        }
    }

    /// Add `other` to these sums.
    fn merge(&mut self, other: Pending) {
        for (day, keys) in other.days {
            for (key, models) in keys {
                for (model, totals) in models {
                    self.add(day, &key, &model, &totals);
                }
            }
        }
    }

    /// Add the sums to `book`, each key's under the account `account_of`
    /// names for it.
    pub(crate) fn add_to(&self, book: &mut UsageBook, account_of: impl Fn(&str) -> String) {
        for (day, keys) in &self.days {
            for (key, models) in keys {
                let account = account_of(key);
                for (model, totals) in models {
                    book.add(*day, key, &account, model, totals);
                }
            }
        }
    }
}

/// Add `sums` to the store file's usage (each key's under its account, or
/// `key:<id>` when unknown) and drop the days no longer kept on `today`.
pub(crate) fn add_to_file(file: &mut StoreFile, sums: &Pending, today: NaiveDate) {
    let StoreFile { keys, usage, .. } = file;
    if !sums.is_empty() {
        sums.add_to(usage, |id| {
            let account = keys.iter().find(|k| k.id == id).and_then(|k| k.account());
            quota_account(account, id)
        });
    }
    usage.prune(today);
}

impl Tally {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        // A panic mid-update leaves at worst one request half counted.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Add what one request spent on `day` for `model`: each key's totals.
    pub(crate) fn add<'a>(
        &self,
        day: NaiveDate,
        model: &str,
        spent: impl IntoIterator<Item = (&'a str, UsageTotals)>,
    ) {
        let mut pending = self.pending();
        for (key, totals) in spent {
            pending.add(day, key, model, &totals);
        }
    }

    /// Whether nothing waits for the store.
    pub(crate) fn is_empty(&self) -> bool {
        self.pending().is_empty()
    }

    /// Take every pending sum, to write it.
    pub(crate) fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending())
    }

    /// Put back sums that could not be written (with what came meanwhile).
    pub(crate) fn restore(&self, sums: Pending) {
        if !sums.is_empty() {
            self.pending().merge(sums);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
    }

    fn spent(requests: u64, prompt: u64) -> UsageTotals {
        UsageTotals {
            requests,
            prompt_tokens: prompt,
            ..UsageTotals::default()
        }
    }

    #[test]
    fn requests_are_summed_until_taken_and_put_back_when_not_written() {
        let tally = Tally::default();
        assert!(tally.is_empty());
        tally.add(day(27), "m", [("k1", spent(1, 10)), ("k2", spent(1, 0))]);
        tally.add(day(27), "m", [("k1", spent(1, 5))]);
        let taken = tally.take();
        assert!(tally.is_empty());
        tally.add(day(28), "m", [("k1", spent(1, 1))]);
        tally.restore(taken);
        let mut book = UsageBook::default();
        tally
            .take()
            .add_to(&mut book, |key| format!("acct-of-{key}"));
        let d27 = &book.days[&day(27)];
        assert_eq!(d27.keys["k1"], spent(2, 15));
        assert_eq!(d27.accounts["acct-of-k2"], spent(1, 0));
        assert_eq!(d27.models["m"], spent(3, 15));
        assert_eq!(book.days[&day(28)].keys["k1"], spent(1, 1));
    }
}
