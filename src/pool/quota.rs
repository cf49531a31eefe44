//! Per-account counting of `:free` model requests, so that a key whose
//! account has reached its cap is skipped before a request is spent on
//! learning it. OpenRouter's free-model limits belong to the account, per
//! minute and per UTC day, and failed attempts count too.

use crate::model::{AccountRecord, FreeCounts, KeyInfo};
use chrono::{DateTime, NaiveDate, SubsecRound, TimeDelta, Utc};
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
    /// When `day_limit` was learned: a later figure replaces it.
    pub(crate) limit_at: Option<DateTime<Utc>>,
    /// Whether the account is on the free tier (`GET /key`), which sets
    /// the documented daily cap when no exact one is known.
    pub(crate) free_tier: Option<bool>,
    /// Send times of free-model attempts in the last minute (to the
    /// millisecond, as the stores keep them).
    pub(crate) minute: VecDeque<DateTime<Utc>>,
    /// The per-minute cap, when OpenRouter told us.
    pub(crate) minute_limit: Option<u32>,
    /// Held until then by a shared store's per-minute window (requests
    /// that other instances sent).
    pub(crate) held_until: Option<DateTime<Utc>>,
    /// When the count was last set from outside orproxy's own counting
    /// (OpenRouter's count, or forgotten): see [`AccountRecord::reset_at`].
    pub(crate) reset_at: Option<DateTime<Utc>>,
}

impl AccountUsage {
    /// The daily cap in force: the known one, else the documented one for
    /// the tier; an unknown tier gets the higher figure, so that a key is
    /// never skipped before its real cap.
    pub(crate) fn daily_cap(&self) -> u32 {
        self.known_daily_cap().unwrap_or(FREE_PER_DAY_HIGH)
    }

    /// The daily cap when known: OpenRouter's figure, else the documented
    /// one of the account's tier; None when neither is known.
    pub(crate) fn known_daily_cap(&self) -> Option<u32> {
        self.day_limit.or(self.free_tier.map(tier_cap))
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
        self.minute.push_back(now.trunc_subsecs(3));
        self.bound_minute();
    }

    /// Never keep more of the minute than the window can matter for.
    fn bound_minute(&mut self) {
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

    /// Adopt what OpenRouter said about one of the account's keys (`GET
    /// /key`, checked at `info.checked_at`): the daily limit it reports (else
    /// its tier's) unless a later one is known; today's count, which only
    /// raises the count unless it was already taken in (a reset at or after
    /// the check); and `remaining: 0` holds the account until midnight.
    pub(crate) fn adopt_info(&mut self, info: &KeyInfo, now: DateTime<Utc>) {
        self.roll(now);
        if info.is_free_tier.is_some() {
            self.free_tier = info.is_free_tier;
        }
        let Some(checked) = info.checked_at else {
            return;
        };
        let report = info.free_model_daily_requests.as_ref();
        let limit = report
            .and_then(|f| f.limit)
            .and_then(|l| u32::try_from(l).ok())
            .or(info.is_free_tier.map(tier_cap));
        if let Some(limit) = limit
            && self.limit_at.is_none_or(|at| at <= checked)
        {
            self.day_limit = Some(limit);
            self.limit_at = Some(checked);
        }
        let taken_in = self.reset_at.is_some_and(|at| at >= checked);
        if checked.date_naive() != now.date_naive() || taken_in {
            return;
        }
        let Some(report) = report else { return };
        if let Some(used) = report.used.and_then(|u| u32::try_from(u).ok()) {
            self.day_count = self.day_count.max(used);
        }
        if report.remaining == Some(0) {
            self.exhaust_day(now);
        }
    }

    /// OpenRouter counted `used` requests today as of `at`: the count
    /// becomes that, plus the requests of the minute sent after `at`.
    pub(crate) fn reset_count(&mut self, used: u32, at: DateTime<Utc>, now: DateTime<Utc>) {
        self.roll(now);
        let since = self.minute.iter().filter(|t| **t > at).count();
        self.day_count = used.saturating_add(u32::try_from(since).unwrap_or(u32::MAX));
        self.reset_at = Some(at);
    }

    /// Forget today's counts (the user knows better): nothing sent today,
    /// nothing this minute, as of `now`.
    pub(crate) fn forget(&mut self, now: DateTime<Utc>) {
        self.roll(now);
        self.day_count = 0;
        self.minute.clear();
        self.held_until = None;
        self.reset_at = Some(now);
    }

    /// Take in the counts of `other` (a key's own counts, now that its
    /// account is known): today's are added, the minute's joined.
    pub(crate) fn absorb(&mut self, other: &AccountUsage, now: DateTime<Utc>) {
        self.roll(now);
        if other.day == self.day {
            self.day_count = self.day_count.saturating_add(other.day_count);
        }
        self.join_minute(other.minute.iter().copied(), now, true);
    }

    /// Join send times to the minute's, in order: `added` ones are other
    /// requests (a key's own, moved to its account); otherwise they are
    /// another copy of the same window (a store's), and a time that both
    /// hold is one request (as many as the copy that holds it more often).
    fn join_minute(
        &mut self,
        times: impl Iterator<Item = DateTime<Utc>>,
        now: DateTime<Utc>,
        added: bool,
    ) {
        let horizon = now - TimeDelta::minutes(1);
        let mut ours: Vec<DateTime<Utc>> = self.minute.drain(..).collect();
        let mut theirs: Vec<DateTime<Utc>> = times.collect();
        ours.sort_unstable();
        theirs.sort_unstable();
        let mut all = Vec::with_capacity(ours.len() + theirs.len());
        if added {
            all.extend(ours);
            all.extend(theirs);
            all.sort_unstable();
        } else {
            let (mut i, mut j) = (0, 0);
            while i < ours.len() || j < theirs.len() {
                match (ours.get(i), theirs.get(j)) {
                    (Some(a), Some(b)) if a == b => {
                        all.push(*a);
                        i += 1;
                        j += 1;
                    }
                    (Some(a), Some(b)) if a < b => {
                        all.push(*a);
                        i += 1;
                    }
                    (Some(_), Some(b)) | (None, Some(b)) => {
                        all.push(*b);
                        j += 1;
                    }
                    (Some(a), None) => {
                        all.push(*a);
                        i += 1;
                    }
                    (None, None) => break,
                }
            }
        }
        all.retain(|t| *t > horizon);
        self.minute = all.into();
        self.bound_minute();
    }

    /// `:free` requests sent today at `now`.
    pub(crate) fn today(&self, now: DateTime<Utc>) -> u32 {
        if self.day == Some(now.date_naive()) {
            self.day_count
        } else {
            0
        }
    }

    /// `:free` requests sent in the minute before `now`.
    pub(crate) fn this_minute(&self, now: DateTime<Utc>) -> u32 {
        let horizon = now - TimeDelta::minutes(1);
        let n = self.minute.iter().filter(|t| **t > horizon).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// The account's counts at `now`, as views show them.
    pub(crate) fn counts(&self, quota: &str, now: DateTime<Utc>) -> FreeCounts {
        FreeCounts {
            quota: quota.to_owned(),
            today: self.today(now),
            daily_limit: self.known_daily_cap(),
            this_minute: self.this_minute(now),
            minute_limit: self.minute_cap(),
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
            limit_at: self.limit_at,
            reset_at: self.reset_at,
            last_minute: self.minute.iter().copied().collect(),
            ..AccountRecord::default()
        }
    }

    /// The usage a persisted record describes (the tier is not in it).
    pub(crate) fn from_record(record: &AccountRecord) -> Self {
        let mut minute: Vec<DateTime<Utc>> = record.last_minute.clone();
        minute.sort_unstable();
        Self {
            day: record.day,
            day_count: record.free_requests,
            day_limit: record.daily_limit,
            limit_at: record.limit_at,
            minute: minute.into(),
            reset_at: record.reset_at,
            ..Self::default()
        }
    }

    /// Merge a persisted record (another writer's counts of the same
    /// account, or ours from before a restart). Counts only grow within a
    /// day, unless the record's count was set from outside after ours was
    /// ([`AccountRecord::reset_at`]): then it replaces ours, plus the
    /// requests we sent since that the record does not hold yet (none on
    /// a `shared` store, which counts every instance's requests itself),
    /// and the minute keeps only what the record keeps of the time before.
    /// A daily limit learned later replaces ours. Returns whether a reset
    /// was taken in.
    pub(crate) fn merge_record(
        &mut self,
        record: &AccountRecord,
        now: DateTime<Utc>,
        shared: bool,
    ) -> bool {
        self.roll(now);
        let today = record.day == self.day;
        let reset = record
            .reset_at
            .filter(|at| self.reset_at.is_none_or(|ours| ours < *at));
        if let Some(at) = reset {
            let unwritten: Vec<DateTime<Utc>> = if shared {
                Vec::new()
            } else {
                self.minute
                    .iter()
                    .filter(|t| **t > at && !record.last_minute.contains(t))
                    .copied()
                    .collect()
            };
            let base = if today { record.free_requests } else { 0 };
            let since = u32::try_from(unwritten.len()).unwrap_or(u32::MAX);
            self.day_count = base.saturating_add(since);
            self.reset_at = Some(at);
            self.held_until = None;
            self.minute.clear();
            self.join_minute(record.last_minute.iter().copied(), now, false);
            self.join_minute(unwritten.into_iter(), now, true);
        } else {
            if today {
                self.day_count = self.day_count.max(record.free_requests);
            }
            if shared {
                self.minute.clear();
            }
            self.join_minute(record.last_minute.iter().copied(), now, false);
        }
        let later = match (record.limit_at, self.limit_at) {
            (Some(theirs), Some(ours)) => theirs > ours,
            (Some(_), None) => true,
            (None, _) => self.day_limit.is_none(),
        };
        if later && record.daily_limit.is_some() {
            self.day_limit = record.daily_limit;
            self.limit_at = record.limit_at;
        }
        reset.is_some()
    }
}

/// The documented daily cap of a tier (`is_free_tier`).
pub(crate) fn tier_cap(free_tier: bool) -> u32 {
    if free_tier {
        FREE_PER_DAY_LOW
    } else {
        FREE_PER_DAY_HIGH
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

    /// `GET /key` info checked at `at`, reporting `used` of `limit`.
    fn info(at: DateTime<Utc>, used: u64, limit: u64, free_tier: Option<bool>) -> KeyInfo {
        KeyInfo {
            checked_at: Some(at),
            is_free_tier: free_tier,
            free_model_daily_requests: Some(crate::model::FreeModelDailyRequests {
                used: Some(used),
                limit: Some(limit),
                remaining: Some(limit.saturating_sub(used)),
                ..Default::default()
            }),
            ..KeyInfo::default()
        }
    }

    #[test]
    fn reports_from_get_key_raise_counts_and_remaining_zero_holds_the_day() {
        let mut u = AccountUsage::default();
        u.record(t(9, 0, 0));
        u.adopt_info(&info(t(9, 30, 0), 30, 50, None), t(10, 0, 0));
        assert_eq!((u.day_count, u.day_limit), (30, Some(50)));
        // A lower figure never lowers the count within the day.
        u.adopt_info(&info(t(9, 40, 0), 3, 50, None), t(10, 0, 0));
        assert_eq!(u.day_count, 30);
        u.adopt_info(&info(t(9, 50, 0), 50, 50, None), t(10, 0, 0));
        assert_eq!(
            u.blocked_until(t(10, 0, 0)),
            Some(t(0, 0, 0) + TimeDelta::days(1))
        );
        // A report from yesterday sets the limit but not today's count.
        let mut v = AccountUsage::default();
        v.adopt_info(
            &info(t(9, 0, 0) - TimeDelta::days(1), 49, 50, None),
            t(10, 0, 0),
        );
        assert_eq!((v.day_count, v.day_limit), (0, Some(50)));
    }

    #[test]
    fn the_latest_limit_wins_and_a_tier_sets_one_when_no_figure_is_given() {
        let mut u = AccountUsage::default();
        assert_eq!(u.known_daily_cap(), None, "nothing known yet");
        u.adopt_info(&info(t(9, 0, 0), 0, 50, Some(true)), t(10, 0, 0));
        assert_eq!(u.daily_cap(), 50);
        // Credits bought: a later check says so, without a figure.
        let paid = KeyInfo {
            checked_at: Some(t(9, 30, 0)),
            is_free_tier: Some(false),
            ..KeyInfo::default()
        };
        u.adopt_info(&paid, t(10, 0, 0));
        assert_eq!(u.known_daily_cap(), Some(1000));
        // The earlier report read again (every merge does) changes nothing.
        u.adopt_info(&info(t(9, 0, 0), 0, 50, Some(true)), t(10, 0, 0));
        assert_eq!(u.known_daily_cap(), Some(1000));
    }

    #[test]
    fn a_count_taken_in_at_a_reset_is_not_raised_again_by_the_same_report() {
        let mut u = AccountUsage::default();
        for s in 0..12 {
            u.record(t(9, 59, s + 10));
        }
        // OpenRouter counted 5 at 09:59:19.5; two of ours went out after.
        let checked = t(9, 59, 19) + TimeDelta::milliseconds(500);
        u.reset_count(5, checked, t(10, 0, 0));
        assert_eq!(u.day_count, 7);
        u.adopt_info(&info(checked, 5, 50, None), t(10, 0, 0));
        assert_eq!(u.day_count, 7, "the report was taken in already");
        assert_eq!(u.this_minute(t(10, 0, 0)), 12, "the minute is the minute");
    }

    #[test]
    fn a_keys_own_counts_are_added_to_its_account() {
        let mut account = AccountUsage::default();
        let mut own = AccountUsage::default();
        for s in 0..3 {
            account.record(t(10, 0, s));
        }
        for s in 0..4 {
            own.record(t(10, 0, 10 + s));
        }
        account.absorb(&own, t(10, 0, 30));
        assert_eq!(account.day_count, 7, "added, not the larger");
        assert_eq!(account.this_minute(t(10, 0, 30)), 7);
        // Yesterday's count is not today's.
        let mut old = AccountUsage::default();
        old.record(t(10, 0, 0) - TimeDelta::days(1));
        account.absorb(&old, t(10, 0, 30));
        assert_eq!(account.day_count, 7);
    }

    #[test]
    fn forgetting_empties_the_day_and_the_minute() {
        let mut u = AccountUsage {
            free_tier: Some(true),
            ..AccountUsage::default()
        };
        for i in 0..50 {
            u.record(t(10, i / 20 * 2, i % 20));
        }
        assert!(u.daily_blocked(t(10, 5, 0)));
        u.forget(t(10, 5, 0));
        assert_eq!((u.today(t(10, 5, 0)), u.this_minute(t(10, 5, 0))), (0, 0));
        assert_eq!(u.blocked_until(t(10, 5, 0)), None);
    }

    #[test]
    fn a_reset_record_replaces_our_count_plus_what_we_sent_since() {
        let mut ours = AccountUsage::default();
        for s in 0..10 {
            ours.record(t(10, 0, s));
        }
        // The store was written with the first 8, then the user forgot
        // the day at 10:00:07.5: our 8th to 10th went out after that, of
        // which the 9th and 10th were never written.
        let written: Vec<_> = ours.minute.iter().copied().take(8).collect();
        let record = AccountRecord {
            day: Some(t(0, 0, 0).date_naive()),
            free_requests: 0,
            reset_at: Some(t(10, 0, 7) + TimeDelta::milliseconds(500)),
            last_minute: Vec::new(),
            ..AccountRecord::default()
        };
        assert!(ours.merge_record(&record, t(10, 0, 20), false));
        assert_eq!(ours.day_count, 2);
        assert_eq!(ours.this_minute(t(10, 0, 20)), 2);
        // Merged again, it is the same count: nothing is added twice.
        assert!(!ours.merge_record(&record, t(10, 0, 21), false));
        assert_eq!(ours.day_count, 2);
        // A shared store counts every instance's requests: its count is it.
        let mut theirs = AccountUsage::default();
        for s in 0..10 {
            theirs.record(t(10, 0, s));
        }
        let shared = AccountRecord {
            free_requests: 4,
            last_minute: written[6..].to_vec(),
            ..record.clone()
        };
        assert!(theirs.merge_record(&shared, t(10, 0, 20), true));
        assert_eq!((theirs.day_count, theirs.this_minute(t(10, 0, 20))), (4, 2));
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
        u.record(t(9, 59, 30));
        let today = AccountRecord {
            day: Some(t(0, 0, 0).date_naive()),
            free_requests: 7,
            daily_limit: Some(50),
            ..AccountRecord::default()
        };
        u.merge_record(&today, t(10, 0, 0), false);
        assert_eq!((u.day_count, u.day_limit), (7, Some(50)));
        let old = AccountRecord {
            day: Some(t(0, 0, 0).date_naive() - TimeDelta::days(1)),
            free_requests: 40,
            daily_limit: None,
            ..AccountRecord::default()
        };
        u.merge_record(&old, t(10, 0, 0), false);
        assert_eq!(u.day_count, 7);
        let written = u.to_record();
        assert_eq!(
            (written.day, written.free_requests, written.daily_limit),
            (today.day, 7, Some(50))
        );
        assert_eq!(
            written.last_minute,
            [t(9, 59, 30)],
            "the minute is kept too"
        );
        assert_eq!(AccountUsage::from_record(&written).to_record(), written);
    }
}
