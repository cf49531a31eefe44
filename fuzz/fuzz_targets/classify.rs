//! The upstream-answer classifier: any status, headers, body, model and
//! clock must give a verdict without panicking, and the verdict must keep the
//! promises `classify` documents (cooldowns end in the future, short waits are
//! capped).
#![no_main]

use arbitrary::Arbitrary;
use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use orproxy::internals::{Answer, Verdict, classify, error_in_body};
use std::time::Duration;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    status: u16,
    headers: Vec<(&'a str, &'a str)>,
    model: Option<&'a str>,
    /// Seconds since the epoch, folded into 1970..2200.
    now: u32,
    now_ms: u16,
    body: &'a [u8],
}

const SHORT_CAP: Duration = Duration::from_secs(300);

fuzz_target!(|input: Input<'_>| {
    let secs = i64::from(input.now) * 2;
    let Some(now) =
        DateTime::<Utc>::from_timestamp(secs, u32::from(input.now_ms % 1000) * 1_000_000)
    else {
        return;
    };
    let answer = Answer {
        status: input.status,
        headers: &input.headers,
        body: input.body,
        model: input.model,
    };
    let verdict = classify(&answer, now);
    assert!(!verdict.reason().is_empty());
    match &verdict {
        Verdict::AccountPerMinute { until }
        | Verdict::AccountDaily { until }
        | Verdict::KeyRateLimited { until }
        | Verdict::InsufficientCredits { until } => {
            assert!(*until >= now, "{verdict:?} ends before {now}");
        }
        Verdict::KeyLimit { until, .. } => {
            assert!(until.is_none_or(|u| u > now), "{verdict:?} at {now}");
        }
        Verdict::ModelCapacity { retry_after } | Verdict::ProviderLimited { retry_after } => {
            assert!(*retry_after <= SHORT_CAP, "{verdict:?}");
        }
        Verdict::Transient { retry_after, .. } => {
            assert!(retry_after.is_none_or(|d| d <= SHORT_CAP), "{verdict:?}");
        }
        Verdict::Success | Verdict::ClientError | Verdict::InvalidKey { .. } | Verdict::Other => {}
    }
    // A 2xx answer is a success exactly when its body carries no error.
    if (200..300).contains(&input.status) {
        assert_eq!(
            verdict == Verdict::Success,
            !error_in_body(input.body),
            "{verdict:?} for {:?}",
            String::from_utf8_lossy(input.body)
        );
    }
});
