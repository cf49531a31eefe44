//! Whether the upstream itself is down, as opposed to any one key: pure,
//! like the rest of the pool. Requests that get no answer at all (refused,
//! DNS, TLS, reset, hung) twice in a row, or answers that fail the same way
//! with two different keys in a row, mean the path to OpenRouter is broken
//! whichever key is used: the upstream is down. Then requests are answered
//! at once instead of walking the pool, and a cheap background check
//! (`GET /key`, no quota spent) brings it back up, as does any answer.

use super::Fault;
use chrono::{DateTime, TimeDelta, Utc};

/// How many requests in a row must get no answer at all before the
/// upstream counts as down (one can be a stale pooled connection).
const NO_ANSWER_STREAK: u32 = 2;

/// How often a down upstream is checked.
pub(crate) const CHECK_EVERY: TimeDelta = TimeDelta::seconds(2);

/// An outage of the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outage {
    /// When it started.
    pub since: DateTime<Utc>,
    /// What kind of failure showed it.
    pub fault: Fault,
    /// The last failure's words.
    pub reason: String,
}

/// A change of the upstream's health, for the log (once each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The upstream went down.
    Down(Outage),
    /// The upstream answers again after an outage that started at `since`.
    Up {
        /// When the outage started.
        since: DateTime<Utc>,
    },
}

/// The upstream's health as the pool sees it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Health {
    outage: Option<Outage>,
    /// Requests in a row that got no answer at all.
    no_answer: u32,
    /// When a down upstream was last checked.
    checked: Option<DateTime<Utc>>,
}

impl Health {
    /// The outage in progress, if the upstream is down.
    pub(crate) fn outage(&self) -> Option<&Outage> {
        self.outage.as_ref()
    }

    /// The upstream answered (whatever it said): it is up.
    pub(crate) fn answered(&mut self) -> Option<Change> {
        self.no_answer = 0;
        self.up()
    }

    fn up(&mut self) -> Option<Change> {
        self.checked = None;
        self.outage.take().map(|outage| Change::Up {
            since: outage.since,
        })
    }

    fn down(&mut self, fault: Fault, reason: &str, now: DateTime<Utc>) -> Option<Change> {
        if let Some(outage) = &mut self.outage {
            outage.reason = reason.to_owned();
            return None;
        }
        let outage = Outage {
            since: now,
            fault,
            reason: reason.to_owned(),
        };
        self.outage = Some(outage.clone());
        self.checked = Some(now);
        Some(Change::Down(outage))
    }

    /// A request got no answer at all (`fault` is `Unreachable` or `Hung`).
    pub(crate) fn no_answer(
        &mut self,
        fault: Fault,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Option<Change> {
        self.no_answer = self.no_answer.saturating_add(1);
        if self.no_answer >= NO_ANSWER_STREAK || self.outage.is_some() {
            return self.down(fault, reason, now);
        }
        None
    }

    /// Two keys in a row got the same kind of failed answer.
    pub(crate) fn failed_across_keys(
        &mut self,
        fault: Fault,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Option<Change> {
        self.down(fault, reason, now)
    }

    /// Whether a down upstream is due for a check at `now` (and note that
    /// it is being checked).
    pub(crate) fn check_due(&mut self, now: DateTime<Utc>) -> bool {
        if self.outage.is_none() || self.checked.is_some_and(|at| now - at < CHECK_EVERY) {
            return false;
        }
        self.checked = Some(now);
        true
    }

    /// A check found the upstream reachable (it answered), or not.
    pub(crate) fn checked(&mut self, reachable: bool) -> Option<Change> {
        if reachable {
            self.no_answer = 0;
            return self.up();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn one_request_without_an_answer_is_not_an_outage_two_in_a_row_are() {
        let mut h = Health::default();
        assert_eq!(h.no_answer(Fault::Unreachable, "refused", t(0)), None);
        assert_eq!(h.outage(), None);
        let change = h.no_answer(Fault::Unreachable, "refused again", t(1));
        let down = Outage {
            since: t(1),
            fault: Fault::Unreachable,
            reason: "refused again".into(),
        };
        assert_eq!(change, Some(Change::Down(down.clone())));
        assert_eq!(h.outage(), Some(&down));
        // Said once: more failures only update the reason.
        assert_eq!(h.no_answer(Fault::Hung, "timeout", t(2)), None);
        assert_eq!(h.outage().unwrap().reason, "timeout");
        assert_eq!(h.outage().unwrap().since, t(1));
    }

    #[test]
    fn an_answer_between_failures_restarts_the_count_and_ends_an_outage() {
        let mut h = Health::default();
        h.no_answer(Fault::Unreachable, "refused", t(0));
        assert_eq!(h.answered(), None);
        assert_eq!(h.no_answer(Fault::Unreachable, "refused", t(1)), None);
        h.no_answer(Fault::Unreachable, "refused", t(2));
        assert!(h.outage().is_some());
        assert_eq!(h.answered(), Some(Change::Up { since: t(2) }));
        assert_eq!(h.outage(), None);
        assert_eq!(h.answered(), None, "said once");
    }

    #[test]
    fn the_same_failure_across_keys_is_an_outage_at_once() {
        let mut h = Health::default();
        let change = h.failed_across_keys(Fault::ServerError, "HTTP 502", t(0));
        assert!(matches!(
            change,
            Some(Change::Down(Outage {
                fault: Fault::ServerError,
                ..
            }))
        ));
    }

    #[test]
    fn a_down_upstream_is_checked_every_few_seconds_until_it_answers() {
        let mut h = Health::default();
        assert!(!h.check_due(t(0)), "nothing to check while up");
        h.failed_across_keys(Fault::Broken, "cut", t(0));
        assert!(!h.check_due(t(1)), "checked when it went down");
        assert!(h.check_due(t(2)));
        assert!(!h.check_due(t(3)));
        assert_eq!(h.checked(false), None);
        assert!(h.check_due(t(4)));
        assert_eq!(h.checked(true), Some(Change::Up { since: t(0) }));
        assert!(!h.check_due(t(10)));
    }
}
