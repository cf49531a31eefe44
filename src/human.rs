//! Short human-readable times: "in 42s", "5m ago".

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

/// RFC 3339 in UTC with a `Z`, to the second.
pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A duration in the largest two units: `42s`, `5m 3s`, `3h 12m`, `2d 4h`.
pub(crate) fn span(d: TimeDelta) -> String {
    let secs = d.num_seconds().max(0);
    let (days, hours, mins, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) if s == 0 => format!("{m}m"),
        (0, 0, m) => format!("{m}m {s}s"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// [`span`] of a whole number of seconds.
pub(crate) fn span_secs(secs: u64) -> String {
    span(TimeDelta::seconds(i64::try_from(secs).unwrap_or(i64::MAX)))
}

/// `in 42s` for a future instant (`now` for one already past).
pub(crate) fn until(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if t <= now {
        "now".to_owned()
    } else {
        format!("in {}", span_secs(crate::clock::whole_secs_until(t, now)))
    }
}

/// `5m ago` for a past instant, `never` for none.
pub(crate) fn ago(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        None => "never".to_owned(),
        Some(t) if now - t < TimeDelta::seconds(1) => "just now".to_owned(),
        Some(t) => format!("{} ago", span(now - t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn spans() {
        assert_eq!(span(TimeDelta::seconds(42)), "42s");
        assert_eq!(span(TimeDelta::seconds(300)), "5m");
        assert_eq!(span(TimeDelta::seconds(303)), "5m 3s");
        assert_eq!(span(TimeDelta::seconds(3 * 3600 + 12 * 60 + 9)), "3h 12m");
        assert_eq!(span(TimeDelta::seconds(7200)), "2h");
        assert_eq!(span(TimeDelta::seconds(2 * 86_400 + 4 * 3600)), "2d 4h");
        assert_eq!(span(TimeDelta::seconds(86_400)), "1d");
        assert_eq!(span(TimeDelta::seconds(-5)), "0s");
    }

    #[test]
    fn until_and_ago() {
        assert_eq!(
            until(t0() + TimeDelta::milliseconds(41_200), t0()),
            "in 42s"
        );
        assert_eq!(until(t0(), t0()), "now");
        assert_eq!(ago(None, t0()), "never");
        assert_eq!(ago(Some(t0()), t0()), "just now");
        assert_eq!(ago(Some(t0() - TimeDelta::seconds(90)), t0()), "1m 30s ago");
    }
}
