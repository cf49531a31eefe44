//! Per-account counting of `:free` model requests, so that a key whose
//! account has reached its cap is skipped before a request is spent on
//! learning it. OpenRouter's free-model limits belong to the account, per
//! minute and per UTC day, and failed attempts count too.

use crate::model::AccountRecord;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use std::collections::VecDeque;

/// OpenRouter's documented free-model requests per minute.
pub(crate) const FREE_PER_MINUTE: u32 = 20;
/// Free-model requests per day for accounts that bought less than 10 credits.
pub(crate) const FREE_PER_DAY_LOW: u32 = 50;
/// Free-model requests per day for accounts that bought 10 credits or more.
pub(crate) const FREE_PER_DAY_HIGH: u32 = 1000;

/// A shared store's answer to a request for one `:free` request of an
/// account (see [`crate::pool::Pool::adopt_reservation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reservation {
    /// Go ahead; the account has sent this many today, this one included.
    Granted {
        /// Today's count.
        today: u32,
    },
    /// The account reached its daily cap.
    DayCapped,
    /// The account reached its per-minute cap; free again at this instant.
    MinuteCapped {
        /// When a slot frees up.
        until: DateTime<Utc>,
    },
}

/// What is known about one account's free-model use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AccountUsage {
    /// The UTC day `day_count` belongs to.
    pub(crate) day: Option<NaiveDate>,
    /// Free-model attempts sent on that day (from any of its keys).
    pub(crate) day_count: u32,
    /// The daily cap, when OpenRouter told us (header or `GET /key`).
    pub(crate) day_limit: Option<u32>,
    /// Whether the account is on the free tier (`GET /key`), which sets
    /// the documented daily cap when no exact one is known.
    pub(crate) free_tier: Option<bool>,
    /// Send times of free-model attempts in the last minute.
    pub(crate) minute: VecDeque<DateTime<Utc>>,
    /// The per-minute cap, when OpenRouter told us.
    pub(crate) minute_limit: Option<u32>,
    /// Held until then by a shared store's per-minute window (requests
    /// that other instances sent).
    pub(crate) held_until: Option<DateTime<Utc>>,
}

impl AccountUsage {
    /// The daily cap in force: the known one, else the documented one for
    /// the tier; an unknown tier gets the higher figure, so that a key is
    /// never skipped before its real cap.
    pub(crate) fn daily_cap(&self) -> u32 {
        self.day_limit.unwrap_or(match self.free_tier {
            Some(true) => FREE_PER_DAY_LOW,
            _ => FREE_PER_DAY_HIGH,
        })
    }

    /// The per-minute cap in force.
    pub(crate) fn minute_cap(&self) -> u32 {
        self.minute_limit.unwrap_or(FREE_PER_MINUTE)
    }

    /// Forget what belongs to an earlier day or minute.
    pub(crate) fn roll(&mut self, now: DateTime<Utc>) {
        let today = now.date_naive();
        if self.day != Some(today) {
            self.day = Some(today);
            self.day_count = 0;
        }
        let horizon = now - TimeDelta::minutes(1);
        while self.minute.front().is_some_and(|t| *t <= horizon) {
            self.minute.pop_front();
        }
    }

    /// When the account may send a free-model request again, if it is at a
    /// cap now; None when it may send now. Entries of earlier days and
    /// minutes are ignored, so no [`AccountUsage::roll`] is needed first.
    pub(crate) fn blocked_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.daily_blocked(now) {
            return Some(crate::clock::next_utc_midnight(now));
        }
        let held = self.held_until.filter(|until| *until > now);
        let horizon = now - TimeDelta::minutes(1);
        let expired = self.minute.iter().take_while(|t| **t <= horizon).count();
        let recent = self.minute.len() - expired;
        let cap = usize::try_from(self.minute_cap()).unwrap_or(usize::MAX);
        if recent >= cap {
            // Free again when enough of the window has expired.
            let idx = self.minute.len() - cap;
            let local = self.minute.get(idx).map(|t| *t + TimeDelta::minutes(1));
            return local.max(held);
        }
        held
    }

    /// Whether the block at `now` (if any) is the daily cap.
    pub(crate) fn daily_blocked(&self, now: DateTime<Utc>) -> bool {
        self.day == Some(now.date_naive()) && self.day_count >= self.daily_cap()
    }

    /// Count one free-model attempt sent at `now`.
    pub(crate) fn record(&mut self, now: DateTime<Utc>) {
        self.roll(now);
        self.day_count = self.day_count.saturating_add(1);
        self.minute.push_back(now);
        // Never keep more than the window can matter for.
        let keep = usize::try_from(self.minute_cap())
            .unwrap_or(usize::MAX)
            .max(1);
        while self.minute.len() > keep {
            self.minute.pop_front();
        }
    }

    /// The daily cap is reached today: hold the account until midnight.
    pub(crate) fn exhaust_day(&mut self, now: DateTime<Utc>) {
        self.roll(now);
        self.day_count = self.day_count.max(self.daily_cap());
    }

    /// Adopt what OpenRouter reported (`GET /key`'s
    /// `free_model_daily_requests`, checked at `checked`): counts only grow
    /// within a day, and `remaining: 0` holds until the next midnight.
    pub(crate) fn adopt_report(
        &mut self,
        checked: DateTime<Utc>,
        used: Option<u64>,
        limit: Option<u64>,
        remaining: Option<u64>,
        now: DateTime<Utc>,
    ) {
        self.roll(now);
        if let Some(limit) = limit.and_then(|l| u32::try_from(l).ok()) {
            self.day_limit = Some(limit);
        }
        if checked.date_naive() != now.date_naive() {
            return;
        }
        if let Some(used) = used.and_then(|u| u32::try_from(u).ok()) {
            self.day_count = self.day_count.max(used);
        }
        if remaining == Some(0) {
            self.exhaust_day(now);
        }
    }

    /// A shared store counted `today` requests for the account today
    /// (every instance's): counts only grow within a day.
    pub(crate) fn adopt_shared_count(&mut self, today: u32, now: DateTime<Utc>) {
        self.roll(now);
        self.day_count = self.day_count.max(today);
    }

    /// The persisted part.
    pub(crate) fn to_record(&self) -> AccountRecord {
        AccountRecord {
            day: self.day,
            free_requests: self.day_count,
            daily_limit: self.day_limit,
            ..AccountRecord::default()
        }
    }

    /// Merge a persisted record (another writer's count of the same day).
    pub(crate) fn merge_record(&mut self, record: &AccountRecord, now: DateTime<Utc>) {
        self.roll(now);
        if record.day == self.day {
            self.day_count = self.day_count.max(record.free_requests);
        }
        if self.day_limit.is_none() {
            self.day_limit = record.daily_limit;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        NaiveDate::from_ymd_opt(2026, 11, 27)
            .unwrap()
            .and_hms_opt(h, m, s)
            .unwrap()
            .and_utc()
    }

    #[test]
    fn caps_default_by_tier() {
        let mut u = AccountUsage::default();
        assert_eq!(u.daily_cap(), 1000, "unknown tier: never skip early");
        u.free_tier = Some(true);
        assert_eq!(u.daily_cap(), 50);
        u.day_limit = Some(200);
        assert_eq!(u.daily_cap(), 200);
        assert_eq!(u.minute_cap(), 20);
    }

    #[test]
    fn daily_cap_blocks_until_midnight_and_resets_next_day() {
        let mut u = AccountUsage {
            free_tier: Some(true),
            ..AccountUsage::default()
        };
        for i in 0..50 {
            u.record(t(10, i / 20 * 2, i % 20));
        }
        assert_eq!(u.day_count, 50);
        assert_eq!(
            u.blocked_until(t(12, 0, 0)),
            Some(t(0, 0, 0) + TimeDelta::days(1))
        );
        assert!(u.daily_blocked(t(12, 0, 0)));
        let tomorrow = t(0, 0, 1) + TimeDelta::days(1);
        assert_eq!(
            u.blocked_until(tomorrow),
            None,
            "yesterday's count does not block"
        );
        u.roll(tomorrow);
        assert_eq!(u.day_count, 0);
    }

    #[test]
    fn minute_cap_blocks_until_the_window_frees() {
        let mut u = AccountUsage::default();
        for i in 0..20 {
            u.record(t(10, 0, i));
        }
        assert_eq!(u.blocked_until(t(10, 0, 30)), Some(t(10, 1, 0)));
        assert!(!u.daily_blocked(t(10, 0, 30)));
        // Without rolling first: the expired entry no longer counts.
        assert_eq!(u.blocked_until(t(10, 1, 0)), None);
        u.roll(t(10, 1, 0));
        assert_eq!(u.minute.len(), 19);
    }

    #[test]
    fn learned_minute_limit_applies() {
        let mut u = AccountUsage {
            minute_limit: Some(2),
            ..AccountUsage::default()
        };
        u.record(t(10, 0, 0));
        assert_eq!(u.blocked_until(t(10, 0, 1)), None);
        u.record(t(10, 0, 5));
        assert_eq!(u.blocked_until(t(10, 0, 6)), Some(t(10, 1, 0)));
    }

    #[test]
    fn reports_from_get_key_raise_counts_and_remaining_zero_holds_the_day() {
        let mut u = AccountUsage::default();
        u.record(t(9, 0, 0));
        u.adopt_report(t(9, 30, 0), Some(30), Some(50), Some(20), t(10, 0, 0));
        assert_eq!((u.day_count, u.day_limit), (30, Some(50)));
        // A lower figure never lowers the count within the day.
        u.adopt_report(t(9, 40, 0), Some(3), Some(50), Some(47), t(10, 0, 0));
        assert_eq!(u.day_count, 30);
        u.adopt_report(t(9, 50, 0), Some(50), Some(50), Some(0), t(10, 0, 0));
        assert_eq!(
            u.blocked_until(t(10, 0, 0)),
            Some(t(0, 0, 0) + TimeDelta::days(1))
        );
        // A report from yesterday sets the limit but not today's count.
        let mut v = AccountUsage::default();
        v.adopt_report(
            t(9, 0, 0) - TimeDelta::days(1),
            Some(49),
            Some(50),
            Some(0),
            t(10, 0, 0),
        );
        assert_eq!((v.day_count, v.day_limit), (0, Some(50)));
    }

    #[test]
    fn a_shared_hold_blocks_until_it_ends_and_shared_counts_only_grow() {
        let mut u = AccountUsage {
            held_until: Some(t(10, 0, 40)),
            ..AccountUsage::default()
        };
        assert_eq!(u.blocked_until(t(10, 0, 0)), Some(t(10, 0, 40)));
        assert_eq!(u.blocked_until(t(10, 0, 40)), None);
        u.adopt_shared_count(30, t(10, 0, 0));
        u.adopt_shared_count(12, t(10, 0, 1));
        assert_eq!(u.day_count, 30);
        u.free_tier = Some(true);
        u.adopt_shared_count(50, t(10, 0, 2));
        assert!(u.daily_blocked(t(10, 0, 3)));
    }

    #[test]
    fn records_merge_by_day_taking_the_larger_count() {
        let mut u = AccountUsage::default();
        u.record(t(9, 0, 0));
        let today = AccountRecord {
            day: Some(t(0, 0, 0).date_naive()),
            free_requests: 7,
            daily_limit: Some(50),
            ..AccountRecord::default()
        };
        u.merge_record(&today, t(10, 0, 0));
        assert_eq!((u.day_count, u.day_limit), (7, Some(50)));
        let old = AccountRecord {
            day: Some(t(0, 0, 0).date_naive() - TimeDelta::days(1)),
            free_requests: 40,
            daily_limit: None,
            ..AccountRecord::default()
        };
        u.merge_record(&old, t(10, 0, 0));
        assert_eq!(u.day_count, 7);
        assert_eq!(u.to_record(), today);
    }
}
