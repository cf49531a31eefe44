//! Time arithmetic shared by the pool, the classifier and the server: the
//! next 00:00 UTC (when OpenRouter's daily caps reset) and whole seconds
//! until an instant (for `Retry-After` and messages). Pure: `now` is always
//! a parameter.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};

/// The next 00:00 UTC strictly after `now`, when daily caps reset.
pub(crate) fn next_utc_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    let tomorrow = now.date_naive().succ_opt().unwrap_or(NaiveDate::MAX);
    tomorrow.and_time(NaiveTime::MIN).and_utc()
}

/// Whole seconds from `now` until `at`, rounded up, at least 1: a wait of
/// "0 s" would read as "now" while it still lasts.
pub(crate) fn whole_secs_until(at: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    let delta = at - now;
    u64::try_from(delta.num_seconds() + i64::from(delta.subsec_nanos() > 0))
        .unwrap_or(1)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        NaiveDate::from_ymd_opt(2026, 11, 27)
            .unwrap()
            .and_hms_opt(h, m, s)
            .unwrap()
            .and_utc()
    }

    #[test]
    fn next_midnight_is_the_start_of_the_next_utc_day() {
        assert_eq!(
            next_utc_midnight(t(13, 5, 0)),
            t(0, 0, 0) + TimeDelta::days(1)
        );
        assert_eq!(
            next_utc_midnight(t(0, 0, 0)),
            t(0, 0, 0) + TimeDelta::days(1)
        );
    }

    #[test]
    fn whole_seconds_round_up_and_are_at_least_one() {
        assert_eq!(whole_secs_until(t(10, 0, 42), t(10, 0, 0)), 42);
        assert_eq!(
            whole_secs_until(t(10, 0, 41) + TimeDelta::milliseconds(200), t(10, 0, 0)),
            42
        );
        assert_eq!(whole_secs_until(t(10, 0, 0), t(10, 0, 0)), 1);
        assert_eq!(whole_secs_until(t(9, 0, 0), t(10, 0, 0)), 1);
    }
}
