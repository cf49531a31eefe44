//! What an upstream attempt means for the pool and for the request: one pure
//! function, [`decide`], from the judged attempt (the classifier's verdict
//! on the answer, or why there was none) to a [`Decision`]: what happens to
//! the key, whether the request tries again and when, which account cap was
//! hit, and whether the model backs off. The server applies the decision
//! and never interprets a verdict itself. [`probe`] is the same for a
//! background key check of a disabled key.
//!
//! Each row of the table is a unit test below.

use super::{CapKind, Fault, Outcome, Probe};
use crate::openrouter::classify::Verdict;
use crate::openrouter::keyinfo::{CheckError, KeyCheck};
use crate::secret::redact;
use chrono::{DateTime, TimeDelta, Utc};
use std::time::Duration;

/// How one attempt ended, as far as deciding needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attempted {
    /// The upstream answered with `status`; the classifier read it as
    /// `verdict`. `rate_limit` is the cap OpenRouter stated
    /// (`X-RateLimit-Limit`), if any.
    Answered {
        /// The upstream's HTTP status.
        status: u16,
        /// The classifier's reading of the answer.
        verdict: Verdict,
        /// `X-RateLimit-Limit`, from the headers or the error body.
        rate_limit: Option<u32>,
    },
    /// No answer to judge.
    Failed(Failure),
}

/// Why an attempt got no answer that could be judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The request could not be sent (refused, DNS, TLS, reset...).
    Unreachable(String),
    /// Connecting took longer than the connect timeout (seconds).
    ConnectTimeout(u64),
    /// No response headers within the headers timeout (seconds).
    HeadersTimeout(u64),
    /// The answer's body broke off before it could be judged.
    Broken(String),
    /// The answer's body went silent for this many seconds before it could
    /// be judged.
    Silent(u64),
    /// An answer orproxy will not relay (a 1xx that reached it): not the
    /// key's fault, and not retried.
    Refused(String),
}

impl Failure {
    /// orproxy's error code for it (the log's outcome).
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Failure::Unreachable(_) => "upstream_unreachable",
            Failure::ConnectTimeout(_) | Failure::HeadersTimeout(_) | Failure::Silent(_) => {
                "upstream_timeout"
            }
            Failure::Broken(_) | Failure::Refused(_) => "upstream_error",
        }
    }

    /// What happened, for people.
    pub(crate) fn message(&self) -> String {
        match self {
            Failure::Unreachable(why) => format!("Cannot reach the upstream: {why}"),
            Failure::ConnectTimeout(secs) => {
                format!("Connecting to the upstream took longer than {secs} s")
            }
            Failure::HeadersTimeout(secs) => {
                format!("The upstream sent no response headers within {secs} s")
            }
            Failure::Broken(why) => {
                format!("The upstream answer broke off before it could be relayed: {why}")
            }
            Failure::Silent(secs) => format!(
                "The upstream answer broke off before it could be relayed: \
                 the upstream sent nothing for {secs} s"
            ),
            Failure::Refused(why) => format!("The upstream's answer was refused: {why}"),
        }
    }
}

impl Attempted {
    /// The attempt's outcome in the request log and metrics: the verdict's
    /// name, or orproxy's error code.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Attempted::Answered { verdict, .. } => verdict.reason(),
            Attempted::Failed(failure) => failure.code(),
        }
    }
}

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    /// What happens to the key (reported to the pool when there was one).
    pub(crate) outcome: Outcome,
    /// `None`: this answer goes to the client. `Some(delay)`: try again
    /// (on the best key) after `delay`, if attempts and time remain.
    pub(crate) retry: Option<Duration>,
    /// The account's free-model cap of this kind was hit: note it, with
    /// the attempt's `rate_limit`.
    pub(crate) cap: Option<CapKind>,
    /// OpenRouter's capacity for the request's model is exhausted: hold
    /// every request for the model until then.
    pub(crate) hold_model_until: Option<DateTime<Utc>>,
    /// The wait to advertise (`Retry-After`) if this upstream answer ends
    /// up with the client after all.
    pub(crate) retry_hint: Option<Duration>,
}

/// Short exponential back-off between attempts after transient failures:
/// 400 ms, 800 ms, 1.6 s, then 2 s.
pub(crate) fn backoff(attempt_no: u32) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << attempt_no.min(4)).min(2000))
}

/// What decides besides the attempt itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts<'a> {
    /// The request's model.
    pub(crate) model: Option<&'a str>,
    /// The attempt's number, from 1.
    pub(crate) attempt_no: u32,
    /// The endpoint's 401s and 403s speak of the key (inference endpoints,
    /// `/models`, `/key`); elsewhere they are about the request.
    pub(crate) key_errors: bool,
}

fn answer(outcome: Outcome) -> Decision {
    Decision {
        outcome,
        retry: None,
        cap: None,
        hold_model_until: None,
        retry_hint: None,
    }
}

fn retry(outcome: Outcome, delay: Duration) -> Decision {
    Decision {
        retry: Some(delay),
        // The client never saw this answer; if attempts run out it gets it
        // with an honest Retry-After when there is one to give.
        retry_hint: (!delay.is_zero()).then_some(delay),
        ..answer(outcome)
    }
}

fn cooldown(until: DateTime<Utc>, reason: &str, account_wide: bool, free_only: bool) -> Outcome {
    Outcome::Cooldown {
        until,
        reason: reason.to_owned(),
        account_wide,
        free_only,
    }
}

fn failed(fault: Fault, reason: String) -> Outcome {
    Outcome::Failed { fault, reason }
}

/// The decision for an attempt that got no answer to judge.
fn no_answer(failure: &Failure, attempt_no: u32) -> Decision {
    let reason = failure.message();
    match failure {
        // The path is broken whichever key is used: try again (a pooled
        // connection may have gone stale); the pool says when the upstream
        // is down, and then requests stop walking the pool.
        Failure::Unreachable(_) | Failure::ConnectTimeout(_) => {
            retry(failed(Fault::Unreachable, reason), backoff(attempt_no))
        }
        // A hang is bounded once: never waited for again on another key.
        Failure::HeadersTimeout(_) | Failure::Silent(_) => answer(failed(Fault::Hung, reason)),
        Failure::Broken(_) => retry(failed(Fault::Broken, reason), backoff(attempt_no)),
        // Odd, but an answer: the upstream works and the key is not to
        // blame.
        Failure::Refused(_) => answer(Outcome::Neutral),
    }
}

/// The decision for attempt `facts.attempt_no` of a request, judged at
/// `now`.
pub(crate) fn decide(attempted: &Attempted, facts: &Facts<'_>, now: DateTime<Utc>) -> Decision {
    let (status, verdict) = match attempted {
        Attempted::Failed(failure) => return no_answer(failure, facts.attempt_no),
        Attempted::Answered {
            status, verdict, ..
        } => (*status, verdict),
    };
    let reason = verdict.reason();
    match verdict {
        Verdict::Success => answer(Outcome::Success),
        // The request's own fault, or an odd answer: relayed, never blamed.
        Verdict::ClientError | Verdict::Other => answer(Outcome::Neutral),
        // A 401 or 403 of an endpoint where they are about the request
        // (a management route, say): relayed, never blamed.
        Verdict::InvalidKey { .. } | Verdict::KeyLimit { .. } if !facts.key_errors => {
            answer(Outcome::Neutral)
        }
        // The account's free-model caps: park the account's keys for free
        // models (paid models still work), and remember the cap.
        Verdict::AccountPerMinute { until } => Decision {
            cap: Some(CapKind::PerMinute),
            ..retry(cooldown(*until, reason, true, true), Duration::ZERO)
        },
        Verdict::AccountDaily { until } => Decision {
            cap: Some(CapKind::PerDay),
            ..retry(cooldown(*until, reason, true, true), Duration::ZERO)
        },
        Verdict::InsufficientCredits { until } => {
            retry(cooldown(*until, reason, true, false), Duration::ZERO)
        }
        Verdict::KeyRateLimited { until }
        | Verdict::KeyLimit {
            until: Some(until), ..
        } => retry(cooldown(*until, reason, false, false), Duration::ZERO),
        Verdict::KeyLimit { until: None, .. } => retry(
            Outcome::Disable {
                reason: "OpenRouter: key limit exceeded (total limit)".to_owned(),
                recoverable: true,
                rejected: false,
            },
            Duration::ZERO,
        ),
        Verdict::InvalidKey { reason } => retry(
            Outcome::Disable {
                reason: format!("401 from OpenRouter: {}", redact(reason)),
                recoverable: true,
                rejected: true,
            },
            Duration::ZERO,
        ),
        // Not the key's fault, and no key helps: the model backs off for
        // every request, and this one waits for it within --max-wait.
        Verdict::ModelCapacity { retry_after } => match facts.model {
            Some(_) => Decision {
                hold_model_until: Some(now + TimeDelta::from_std(*retry_after).unwrap_or_default()),
                retry_hint: Some(*retry_after),
                ..retry(Outcome::Neutral, Duration::ZERO)
            },
            None => retry(Outcome::Neutral, *retry_after),
        },
        Verdict::ProviderLimited { retry_after } => retry(Outcome::Neutral, *retry_after),
        Verdict::Transient {
            provider,
            retry_after,
        } => {
            let outcome = if *provider {
                Outcome::Neutral
            } else {
                failed(Fault::ServerError, format!("HTTP {status} ({reason})"))
            };
            retry(
                outcome,
                retry_after.unwrap_or_else(|| backoff(facts.attempt_no)),
            )
        }
    }
}

/// What a background check (`GET /key`) of a disabled key means for it.
pub(crate) fn probe(check: &KeyCheck) -> Probe {
    match check {
        KeyCheck::Known(info) if info.limit_remaining.is_some_and(|left| left <= 0.0) => {
            Probe::StillDown("no credit left under the key's own limit".to_owned())
        }
        KeyCheck::Known(_) => Probe::Healthy,
        KeyCheck::Rejected(CheckError::Rejected { status, message }) => {
            Probe::Invalid(format!("{status} from OpenRouter: {message}"))
        }
        KeyCheck::Rejected(e) => Probe::Invalid(e.to_string()),
        KeyCheck::Unknown(e) => Probe::StillDown(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openrouter::classify::LimitPeriod;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn later(secs: i64) -> DateTime<Utc> {
        now() + TimeDelta::seconds(secs)
    }

    fn answered(status: u16, verdict: Verdict) -> Attempted {
        Attempted::Answered {
            status,
            verdict,
            rate_limit: None,
        }
    }

    const INFERENCE: Facts<'static> = Facts {
        model: Some("m:free"),
        attempt_no: 1,
        key_errors: true,
    };

    fn on(attempted: Attempted) -> Decision {
        decide(&attempted, &INFERENCE, now())
    }

    const NOW: Option<Duration> = Some(Duration::ZERO);

    #[test]
    fn a_success_counts_and_is_relayed() {
        assert_eq!(
            on(answered(200, Verdict::Success)),
            answer(Outcome::Success)
        );
    }

    #[test]
    fn a_client_error_is_relayed_and_costs_the_key_nothing() {
        assert_eq!(
            on(answered(417, Verdict::ClientError)),
            answer(Outcome::Neutral)
        );
    }

    #[test]
    fn an_odd_answer_is_relayed_and_costs_the_key_nothing() {
        assert_eq!(on(answered(302, Verdict::Other)), answer(Outcome::Neutral));
    }

    #[test]
    fn a_per_minute_cap_parks_the_account_for_free_models_and_retries_at_once() {
        let d = on(answered(
            429,
            Verdict::AccountPerMinute { until: later(30) },
        ));
        assert_eq!(
            d.outcome,
            cooldown(later(30), "free-models-per-min", true, true)
        );
        assert_eq!((d.retry, d.cap), (NOW, Some(CapKind::PerMinute)));
        assert_eq!(d.retry_hint, None);
    }

    #[test]
    fn a_daily_cap_parks_the_account_for_free_models_and_notes_the_day() {
        let d = on(answered(429, Verdict::AccountDaily { until: later(3600) }));
        assert_eq!(
            d.outcome,
            cooldown(later(3600), "free-models-per-day", true, true)
        );
        assert_eq!((d.retry, d.cap), (NOW, Some(CapKind::PerDay)));
    }

    #[test]
    fn no_credit_parks_the_whole_account_for_every_model() {
        let d = on(answered(
            402,
            Verdict::InsufficientCredits { until: later(600) },
        ));
        assert_eq!(
            d.outcome,
            cooldown(later(600), "insufficient-credits", true, false)
        );
        assert_eq!((d.retry, d.cap), (NOW, None));
    }

    #[test]
    fn a_keys_own_rate_limit_or_spending_cap_cools_that_key() {
        let d = on(answered(429, Verdict::KeyRateLimited { until: later(60) }));
        assert_eq!(d.outcome, cooldown(later(60), "rate-limited", false, false));
        assert_eq!(d.retry, NOW);
        let d = on(answered(
            403,
            Verdict::KeyLimit {
                period: LimitPeriod::Weekly,
                until: Some(later(86_400)),
            },
        ));
        assert_eq!(
            d.outcome,
            cooldown(later(86_400), "key-limit-weekly", false, false)
        );
    }

    #[test]
    fn a_spent_total_limit_disables_the_key_until_a_check_finds_credit() {
        let d = on(answered(
            403,
            Verdict::KeyLimit {
                period: LimitPeriod::Total,
                until: None,
            },
        ));
        assert_eq!(
            d.outcome,
            Outcome::Disable {
                reason: "OpenRouter: key limit exceeded (total limit)".into(),
                recoverable: true,
                rejected: false,
            }
        );
        assert_eq!(d.retry, NOW);
    }

    #[test]
    fn a_rejected_key_is_disabled_and_rechecked_with_a_redacted_reason() {
        let d = on(answered(
            401,
            Verdict::InvalidKey {
                reason: "User not found.".into(),
            },
        ));
        assert_eq!(
            d.outcome,
            Outcome::Disable {
                reason: "401 from OpenRouter: User not found.".into(),
                recoverable: true,
                rejected: true,
            }
        );
        assert_eq!(d.retry, NOW);
        let d = on(answered(
            401,
            Verdict::InvalidKey {
                reason: "bad sk-or-v1-0123456789abcdef0123456789abcdef".into(),
            },
        ));
        let Outcome::Disable { reason, .. } = d.outcome else {
            panic!("{d:?}")
        };
        assert!(
            !reason.contains("0123456789abcdef0123456789abcdef"),
            "{reason}"
        );
    }

    #[test]
    fn a_401_or_403_of_a_route_about_the_request_is_relayed_and_blames_nobody() {
        let management = Facts {
            key_errors: false,
            ..INFERENCE
        };
        for verdict in [
            Verdict::InvalidKey {
                reason: "Only management keys can do this".into(),
            },
            Verdict::KeyLimit {
                period: LimitPeriod::Total,
                until: None,
            },
        ] {
            let status = if matches!(verdict, Verdict::InvalidKey { .. }) {
                401
            } else {
                403
            };
            assert_eq!(
                decide(&answered(status, verdict), &management, now()),
                answer(Outcome::Neutral)
            );
        }
    }

    #[test]
    fn model_capacity_holds_the_model_not_the_key() {
        let d = on(answered(
            429,
            Verdict::ModelCapacity {
                retry_after: Duration::from_secs(7),
            },
        ));
        assert_eq!(d.outcome, Outcome::Neutral);
        assert_eq!(d.hold_model_until, Some(later(7)));
        assert_eq!((d.retry, d.retry_hint), (NOW, Some(Duration::from_secs(7))));
        // Without a model to hold, the request itself waits.
        let no_model = Facts {
            model: None,
            ..INFERENCE
        };
        let d = decide(
            &answered(
                429,
                Verdict::ModelCapacity {
                    retry_after: Duration::from_secs(7),
                },
            ),
            &no_model,
            now(),
        );
        assert_eq!(d.hold_model_until, None);
        assert_eq!(d.retry, Some(Duration::from_secs(7)));
    }

    #[test]
    fn a_providers_rate_limit_waits_without_blaming_the_key() {
        let d = on(answered(
            429,
            Verdict::ProviderLimited {
                retry_after: Duration::from_secs(29),
            },
        ));
        assert_eq!(d.outcome, Outcome::Neutral);
        assert_eq!(d.retry, Some(Duration::from_secs(29)));
        assert_eq!(d.retry_hint, Some(Duration::from_secs(29)));
    }

    #[test]
    fn a_5xx_naming_no_provider_is_a_suspect_server_error_retried_with_its_wait_or_a_backoff() {
        let d = on(answered(
            503,
            Verdict::Transient {
                provider: false,
                retry_after: Some(Duration::from_secs(3)),
            },
        ));
        assert_eq!(
            d.outcome,
            failed(Fault::ServerError, "HTTP 503 (transient)".into())
        );
        assert_eq!(d.retry, Some(Duration::from_secs(3)));
        let second = Facts {
            attempt_no: 2,
            ..INFERENCE
        };
        let d = decide(
            &answered(
                502,
                Verdict::Transient {
                    provider: true,
                    retry_after: None,
                },
            ),
            &second,
            now(),
        );
        assert_eq!(d.outcome, Outcome::Neutral, "a provider's error");
        assert_eq!(d.retry, Some(backoff(2)));
        assert_eq!(d.retry_hint, Some(backoff(2)));
    }

    #[test]
    fn no_answer_is_never_the_keys_fault_and_a_hang_is_not_waited_for_twice() {
        let third = Facts {
            attempt_no: 3,
            ..INFERENCE
        };
        for (failure, fault, retried) in [
            (
                Failure::Unreachable("connection refused".into()),
                Fault::Unreachable,
                true,
            ),
            (Failure::ConnectTimeout(10), Fault::Unreachable, true),
            (Failure::HeadersTimeout(600), Fault::Hung, false),
            (Failure::Silent(120), Fault::Hung, false),
            (Failure::Broken("reset".into()), Fault::Broken, true),
        ] {
            let d = decide(&Attempted::Failed(failure.clone()), &third, now());
            assert_eq!(d.outcome, failed(fault, failure.message()), "{failure:?}");
            assert_eq!(d.retry, retried.then(|| backoff(3)), "{failure:?}");
        }
    }

    #[test]
    fn the_backoff_doubles_up_to_two_seconds() {
        let ms = |n| backoff(n).as_millis();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(4), ms(9)],
            [400, 800, 1600, 2000, 2000]
        );
    }

    #[test]
    fn labels_name_the_verdict_or_the_failure() {
        assert_eq!(answered(200, Verdict::Success).label(), "ok");
        assert_eq!(
            Attempted::Failed(Failure::HeadersTimeout(1)).label(),
            "upstream_timeout"
        );
        assert_eq!(
            Attempted::Failed(Failure::Unreachable(String::new())).label(),
            "upstream_unreachable"
        );
    }

    #[test]
    fn a_key_check_brings_a_disabled_key_back_only_when_it_can_spend() {
        use crate::model::KeyInfo;
        assert_eq!(probe(&KeyCheck::Known(KeyInfo::default())), Probe::Healthy);
        let spent = KeyInfo {
            limit_remaining: Some(0.0),
            ..KeyInfo::default()
        };
        assert!(matches!(
            probe(&KeyCheck::Known(spent)),
            Probe::StillDown(_)
        ));
        let rejected = CheckError::Rejected {
            status: 401,
            message: "User not found.".into(),
        };
        assert_eq!(
            probe(&KeyCheck::Rejected(rejected)),
            Probe::Invalid("401 from OpenRouter: User not found.".into())
        );
        let down = CheckError::Unreachable {
            url: "http://x/key".into(),
            reason: "refused".into(),
        };
        assert!(matches!(
            probe(&KeyCheck::Unknown(down)),
            Probe::StillDown(_)
        ));
    }
}
