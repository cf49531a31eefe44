//! Classification of one OpenRouter answer into a [`Verdict`] the key pool acts on.
//!
//! Everything here is pure: no I/O and no clock reads (the current time is a parameter), so every
//! rule can be tested with exact times. The rules follow `docs/openrouter.md`; the choices that
//! document leaves open are written down on the items below.
//!
//! Parsing is lenient everywhere: fields may be missing, `error.code` may be a number or a string,
//! `metadata` may be absent or `null`, header values may be strings or numbers, and a body that is
//! not JSON at all is judged by its HTTP status (and HTTP headers) alone. No input makes these
//! functions panic.

use std::time::Duration;

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, NaiveTime, TimeDelta, Utc};
use serde_json::{Map, Value};

/// Wait before retrying after an account per-minute cap or a generic key rate limit when the
/// answer names no reset time.
const DEFAULT_MINUTE_WAIT: Duration = Duration::from_secs(60);
/// Longest park for an account per-minute cap: the window is one minute, so a reset further away
/// than this is treated as bogus and clamped.
const MAX_MINUTE_WAIT: Duration = Duration::from_secs(10 * 60);
/// Longest park for a generic key rate limit.
const MAX_KEY_RATE_WAIT: Duration = Duration::from_secs(24 * 60 * 60);
/// A daily-cap reset further ahead than this is ignored in favour of the next 00:00 UTC.
const MAX_DAILY_AHEAD: Duration = Duration::from_secs(48 * 60 * 60);
/// Default back-off for model capacity and upstream-provider limits.
const DEFAULT_SHORT_WAIT: Duration = Duration::from_secs(5);
/// Cap on every short back-off (model capacity, provider limits, transient errors).
const MAX_SHORT_WAIT: Duration = Duration::from_secs(300);
/// How long an account is parked after a 402 about its balance. Ten minutes: credits are topped up
/// by a human, so retrying sooner mostly wastes attempts, while a much longer park would keep a
/// freshly funded account idle for too long.
const INSUFFICIENT_CREDITS_PARK: Duration = Duration::from_secs(10 * 60);
/// `X-RateLimit-Reset` values below this are taken as Unix seconds, not milliseconds
/// (10^11 ms is March 1973; 10^11 s is the year 5138).
const RESET_SECONDS_BELOW: f64 = 1e11;
/// Longest reason kept in [`Verdict::InvalidKey`], in bytes.
const MAX_REASON_LEN: usize = 200;

/// One upstream answer, as far as the classifier needs it.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// HTTP status of the upstream response.
    pub status: u16,
    /// Response headers; names in any case.
    pub headers: &'a [(&'a str, &'a str)],
    /// Full body for non-streaming answers, or the JSON of the first SSE `data:` event for
    /// streams. May be empty or not JSON.
    pub body: &'a [u8],
    /// The request's model, e.g. `meta-llama/llama-3.3-70b-instruct:free`.
    pub model: Option<&'a str>,
}

/// Which spending cap of a key was hit (403 `Key limit exceeded (... limit)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitPeriod {
    /// Resets at the next 00:00 UTC.
    Daily,
    /// Resets at the next Monday 00:00 UTC.
    Weekly,
    /// Resets on the 1st of next month, 00:00 UTC.
    Monthly,
    /// Never resets: the key must be disabled.
    Total,
}

/// What the key pool should do with one upstream answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx with no error inside.
    Success,
    /// The client's own fault: pass the answer through unchanged and never penalise the key
    /// (any 4xx but 401, 402, 408 and 429; a 403 other than a key limit; and a 402 about the
    /// request: "requires more credits, or fewer max_tokens").
    ClientError,
    /// The account's free-model per-minute cap: park every key of the account until `until`.
    AccountPerMinute {
        /// When the account may be used again.
        until: DateTime<Utc>,
    },
    /// The account's free-model daily cap: park every key of the account until `until`
    /// (normally the next 00:00 UTC).
    AccountDaily {
        /// When the account may be used again.
        until: DateTime<Utc>,
    },
    /// Any other 429 not attributable to a provider or to model capacity: cool this key.
    KeyRateLimited {
        /// When the key may be used again.
        until: DateTime<Utc>,
    },
    /// OpenRouter's shared capacity for the model is exhausted: back off for the model; other
    /// keys do not help.
    ModelCapacity {
        /// How long to back off (at most 300 s).
        retry_after: Duration,
    },
    /// The upstream provider rate-limited the request: not the key's fault.
    ProviderLimited {
        /// How long to back off (at most 300 s).
        retry_after: Duration,
    },
    /// 401: the key is invalid or deleted; disable it.
    InvalidKey {
        /// The upstream message (truncated to 200 bytes), or `HTTP 401` when there is none.
        reason: String,
    },
    /// 403 `Key limit exceeded`: the key's own spending cap.
    KeyLimit {
        /// Which cap.
        period: LimitPeriod,
        /// When the cap resets; `None` for [`LimitPeriod::Total`] (disable the key).
        until: Option<DateTime<Utc>>,
    },
    /// 402 about the account balance: park the account's keys until `until` (now + 10 min).
    InsufficientCredits {
        /// When to try the account again.
        until: DateTime<Utc>,
    },
    /// 408, 5xx, or an error inside a 2xx body without a usable code: retry with back-off; not
    /// evidence against the key.
    Transient {
        /// The error names an upstream provider (`metadata.provider_name` non-null).
        provider: bool,
        /// Suggested wait, when the answer gives one (at most 300 s).
        retry_after: Option<Duration>,
    },
    /// Any other answer (a 1xx or 3xx that reached the proxy, a status outside HTTP's range, a
    /// provider's 401): relayed as it is, not evidence against the key.
    Other,
}

impl Verdict {
    /// Whether this is one of the account's free-model caps, whose limit
    /// (`X-RateLimit-Limit`, see [`rate_limit_limit`]) the pool remembers.
    pub(crate) fn is_account_cap(&self) -> bool {
        matches!(
            self,
            Verdict::AccountPerMinute { .. } | Verdict::AccountDaily { .. }
        )
    }

    /// Short stable name for logs, metric labels and the key table.
    pub fn reason(&self) -> &'static str {
        match self {
            Verdict::Success => "ok",
            Verdict::ClientError => "client-error",
            Verdict::AccountPerMinute { .. } => "free-models-per-min",
            Verdict::AccountDaily { .. } => "free-models-per-day",
            Verdict::KeyRateLimited { .. } => "rate-limited",
            Verdict::ModelCapacity { .. } => "model-capacity",
            Verdict::ProviderLimited { .. } => "provider-rate-limited",
            Verdict::InvalidKey { .. } => "invalid-key",
            Verdict::KeyLimit { period, .. } => match period {
                LimitPeriod::Daily => "key-limit-daily",
                LimitPeriod::Weekly => "key-limit-weekly",
                LimitPeriod::Monthly => "key-limit-monthly",
                LimitPeriod::Total => "key-limit-total",
            },
            Verdict::InsufficientCredits { .. } => "insufficient-credits",
            Verdict::Transient {
                provider: false, ..
            } => "transient",
            Verdict::Transient { provider: true, .. } => "provider-error",
            Verdict::Other => "unknown-error",
        }
    }
}

/// Classifies one upstream answer.
///
/// Non-2xx answers are judged by their HTTP status, refined by the error message and metadata.
/// A 2xx answer whose body carries an error (see [`error_in_body`]) is judged by the inner
/// `error.code` (a number or a numeric string in 400..=599) as if it were the status; without a
/// usable code it is [`Verdict::Transient`].
///
/// Times: `X-RateLimit-Reset` is read from the HTTP headers, else from `error.metadata.headers`
/// (names case-insensitive in both); it is Unix milliseconds, but a value below 10^11 is taken as
/// Unix seconds. `Retry-After` is seconds (integer or float) or an HTTP-date. Resets in the past
/// are ignored.
pub fn classify(answer: &Answer<'_>, now: DateTime<Utc>) -> Verdict {
    // The common case, a success, without building a JSON tree: no error can
    // be signalled without the word appearing in the body.
    if (200..300).contains(&answer.status) && !mentions_error(answer.body) {
        return Verdict::Success;
    }
    let json: Option<Value> = serde_json::from_slice(answer.body).ok();
    let info = Info::from_json(json.as_ref());
    let status = answer.status;
    if (200..300).contains(&status) {
        if !json.as_ref().is_some_and(value_has_error) {
            return Verdict::Success;
        }
        return match info.code {
            Some(code) => by_status(code, &info, answer, now),
            None => transient(&info, answer, now),
        };
    }
    by_status(status, &info, answer, now)
}

/// True when a 2xx body (or the JSON of an SSE event) carries an error: a top-level truthy
/// `error`, or `choices[0].finish_reason == "error"`.
///
/// "Truthy" follows the OpenAI Python SDK: `null`, `false`, `0`, `""`, `{}` and `[]` are not
/// errors. A body that is not JSON is not an error.
pub fn error_in_body(body: &[u8]) -> bool {
    // Cheap pre-check: no error can be signalled without the word appearing in the body.
    if !mentions_error(body) {
        return false;
    }
    serde_json::from_slice::<Value>(body)
        .ok()
        .as_ref()
        .is_some_and(value_has_error)
}

/// What the classifier reads from an error body.
struct Info<'v> {
    /// `error.message` (or a string `error`), ASCII-lowercased.
    message: String,
    /// `error.message` as sent, for [`Verdict::InvalidKey`].
    raw_message: Option<&'v str>,
    /// `error.code` when it is an HTTP error status (400..=599), as a number or numeric string.
    code: Option<u16>,
    /// `error.metadata` when it is an object.
    meta: Option<&'v Map<String, Value>>,
}

impl<'v> Info<'v> {
    fn from_json(json: Option<&'v Value>) -> Self {
        let mut info = Info {
            message: String::new(),
            raw_message: None,
            code: None,
            meta: None,
        };
        let Some(error) = json.and_then(error_value) else {
            return info;
        };
        match error {
            Value::String(s) => info.raw_message = Some(s),
            Value::Object(obj) => {
                info.raw_message = obj.get("message").and_then(Value::as_str);
                info.code = obj.get("code").and_then(as_number).and_then(|c| {
                    if (400.0..600.0).contains(&c) && c.fract() == 0.0 {
                        Some(c as u16)
                    } else {
                        None
                    }
                });
                info.meta = obj.get("metadata").and_then(Value::as_object);
            }
            _ => {}
        }
        info.message = info.raw_message.unwrap_or("").to_ascii_lowercase();
        info
    }

    fn meta_str(&self, field: &str) -> Option<&'v str> {
        self.meta?.get(field)?.as_str()
    }

    /// `metadata.provider_name` present, non-null and not an empty string.
    fn provider(&self) -> bool {
        match self.meta.and_then(|m| m.get("provider_name")) {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => !s.trim().is_empty(),
            Some(_) => true,
        }
    }

    /// `metadata.limit_source`, lowercased.
    fn limit_source(&self) -> Option<String> {
        self.meta_str("limit_source").map(str::to_ascii_lowercase)
    }

    /// `metadata.raw` (a string, or any other JSON rendered as text) contains `needle`
    /// (lowercase), ignoring ASCII case.
    fn raw_contains(&self, needle: &str) -> bool {
        match self.meta.and_then(|m| m.get("raw")) {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => s.to_ascii_lowercase().contains(needle),
            Some(other) => other.to_string().to_ascii_lowercase().contains(needle),
        }
    }

    /// A header from `metadata.headers`, name case-insensitive, as a number or string value.
    fn meta_header(&self, name: &str) -> Option<&'v Value> {
        let headers = self.meta?.get("headers")?.as_object()?;
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// The error object of a body: top-level `error`, else `choices[0].error`.
fn error_value(json: &Value) -> Option<&Value> {
    let obj = json.as_object()?;
    match obj.get("error") {
        Some(e) if truthy(e) => Some(e),
        _ => obj
            .get("choices")?
            .as_array()?
            .first()?
            .get("error")
            .filter(|e| truthy(e)),
    }
}

fn value_has_error(json: &Value) -> bool {
    let Some(obj) = json.as_object() else {
        return false;
    };
    if obj.get("error").is_some_and(truthy) {
        return true;
    }
    obj.get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .and_then(|c| c.get("finish_reason"))
        .and_then(Value::as_str)
        == Some("error")
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// A number, or a string holding one.
fn as_number(v: &Value) -> Option<f64> {
    let n = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    n.is_finite().then_some(n)
}

fn by_status(status: u16, info: &Info<'_>, answer: &Answer<'_>, now: DateTime<Utc>) -> Verdict {
    match status {
        429 => rate_limited(info, answer, now),
        401 => {
            // An upstream provider's 401 (e.g. a BYOK credential) says nothing about our key.
            if info.provider() {
                return Verdict::Other;
            }
            let reason = match info.raw_message.map(str::trim) {
                Some(m) if !m.is_empty() => truncate(m, MAX_REASON_LEN).to_owned(),
                _ => "HTTP 401".to_owned(),
            };
            Verdict::InvalidKey { reason }
        }
        402 => {
            if info.message.contains("fewer max_tokens")
                || info.message.contains("requires more credits, or fewer")
            {
                Verdict::ClientError
            } else {
                Verdict::InsufficientCredits {
                    until: add(now, INSUFFICIENT_CREDITS_PARK),
                }
            }
        }
        403 => key_limit(info, now).unwrap_or(Verdict::ClientError),
        408 | 500..=599 => transient(info, answer, now),
        // Any other 4xx is about the request (400, 404, 405, 413, 417,
        // 422...): the key did nothing wrong.
        400..=499 => Verdict::ClientError,
        _ => Verdict::Other,
    }
}

/// The 429 family, in this order:
/// 1. daily: message has `free-models-per-day`, or `limit_source` starts with
///    `openrouter_free_tier` and mentions `day`;
/// 2. per-minute: message has `free-models-per-min`, or any other `openrouter_free_tier*` source;
/// 3. model capacity: source `openrouter_shared_capacity`, or a message starting
///    `Rate limit exceeded: limit_rpm/` or containing `High demand for` (either suffices);
/// 4. provider: source `upstream_provider_shared_pool`, `metadata.raw` mentioning
///    `rate-limited upstream`, or any non-null `metadata.provider_name` (OpenRouter's own limits
///    carry `null`);
/// 5. anything else: the key's own rate limit.
fn rate_limited(info: &Info<'_>, answer: &Answer<'_>, now: DateTime<Utc>) -> Verdict {
    let msg = info.message.as_str();
    let source = info.limit_source();
    let source = source.as_deref().unwrap_or("");

    let daily = msg.contains("free-models-per-day")
        || (source.starts_with("openrouter_free_tier")
            && (source.contains("day") || source.contains("daily")));
    if daily {
        return Verdict::AccountDaily {
            until: daily_until(reset_at(info, answer), now),
        };
    }
    if msg.contains("free-models-per-min") || source.starts_with("openrouter_free_tier") {
        return Verdict::AccountPerMinute {
            until: until_from(
                reset_at(info, answer),
                retry_after(info, answer, now, false),
                now,
                DEFAULT_MINUTE_WAIT,
                MAX_MINUTE_WAIT,
            ),
        };
    }
    let capacity = source == "openrouter_shared_capacity"
        || msg.starts_with("rate limit exceeded: limit_rpm/")
        || msg.contains("high demand for");
    if capacity {
        let wait = reset_at(info, answer)
            .and_then(|r| (r - now).to_std().ok())
            .filter(|d| !d.is_zero())
            .or_else(|| retry_after(info, answer, now, false))
            .unwrap_or(DEFAULT_SHORT_WAIT);
        return Verdict::ModelCapacity {
            retry_after: wait.min(MAX_SHORT_WAIT),
        };
    }
    let provider = source == "upstream_provider_shared_pool"
        || info.raw_contains("rate-limited upstream")
        || info.provider();
    if provider {
        let wait = retry_after(info, answer, now, true).unwrap_or(DEFAULT_SHORT_WAIT);
        return Verdict::ProviderLimited {
            retry_after: wait.min(MAX_SHORT_WAIT),
        };
    }
    Verdict::KeyRateLimited {
        until: until_from(
            reset_at(info, answer),
            retry_after(info, answer, now, false),
            now,
            DEFAULT_MINUTE_WAIT,
            MAX_KEY_RATE_WAIT,
        ),
    }
}

/// 403 `Key limit exceeded (daily|weekly|monthly|total limit)`. A key limit whose period cannot
/// be read is taken as daily: the key is re-tried tomorrow rather than disabled.
fn key_limit(info: &Info<'_>, now: DateTime<Utc>) -> Option<Verdict> {
    let msg = info.message.as_str();
    if !msg.contains("key limit exceeded") {
        return None;
    }
    let period = if msg.contains("total") {
        LimitPeriod::Total
    } else if msg.contains("monthly") {
        LimitPeriod::Monthly
    } else if msg.contains("weekly") {
        LimitPeriod::Weekly
    } else {
        LimitPeriod::Daily
    };
    let until = match period {
        LimitPeriod::Daily => Some(crate::clock::next_utc_midnight(now)),
        LimitPeriod::Weekly => Some(next_monday(now)),
        LimitPeriod::Monthly => Some(next_month(now)),
        LimitPeriod::Total => None,
    };
    Some(Verdict::KeyLimit { period, until })
}

fn transient(info: &Info<'_>, answer: &Answer<'_>, now: DateTime<Utc>) -> Verdict {
    Verdict::Transient {
        provider: info.provider(),
        retry_after: retry_after(info, answer, now, true).map(|d| d.min(MAX_SHORT_WAIT)),
    }
}

/// The cap OpenRouter states in `X-RateLimit-Limit` (HTTP header first,
/// then `error.metadata.headers`), e.g. 20 per minute or 50 per day.
pub(crate) fn rate_limit_limit(answer: &Answer<'_>) -> Option<u32> {
    let as_u32 =
        |v: f64| (v.is_finite() && v >= 1.0 && v <= f64::from(u32::MAX)).then_some(v as u32);
    if let Some(v) = http_header(answer.headers, "x-ratelimit-limit")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(as_u32)
    {
        return Some(v);
    }
    let json: Value = serde_json::from_slice(answer.body).ok()?;
    let info = Info::from_json(Some(&json));
    info.meta_header("x-ratelimit-limit")
        .and_then(as_number)
        .and_then(as_u32)
}

/// `X-RateLimit-Reset`: HTTP header first, then `metadata.headers`.
fn reset_at(info: &Info<'_>, answer: &Answer<'_>) -> Option<DateTime<Utc>> {
    http_header(answer.headers, "x-ratelimit-reset")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(reset_to_time)
        .or_else(|| {
            info.meta_header("x-ratelimit-reset")
                .and_then(as_number)
                .and_then(reset_to_time)
        })
}

fn reset_to_time(v: f64) -> Option<DateTime<Utc>> {
    if !v.is_finite() || v <= 0.0 {
        return None;
    }
    let ms = if v < RESET_SECONDS_BELOW {
        v * 1000.0
    } else {
        v
    };
    if ms > 1e16 {
        return None;
    }
    DateTime::from_timestamp_millis(ms as i64)
}

/// `Retry-After`: HTTP header first, then (when `provider_field`) `metadata.retry_after_seconds`,
/// then `metadata.headers.Retry-After`.
fn retry_after(
    info: &Info<'_>,
    answer: &Answer<'_>,
    now: DateTime<Utc>,
    provider_field: bool,
) -> Option<Duration> {
    if let Some(d) = http_header(answer.headers, "retry-after").and_then(|v| parse_retry(v, now)) {
        return Some(d);
    }
    if provider_field
        && let Some(d) = info
            .meta
            .and_then(|m| m.get("retry_after_seconds"))
            .and_then(as_number)
            .and_then(secs)
    {
        return Some(d);
    }
    match info.meta_header("retry-after")? {
        Value::String(s) => parse_retry(s, now),
        other => as_number(other).and_then(secs),
    }
}

/// Seconds (integer or float), or an HTTP-date (turned into the wait from `now`, zero if past).
fn parse_retry(v: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = v.trim();
    if let Ok(n) = v.parse::<f64>() {
        return secs(n);
    }
    let when = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    Some((when - now).to_std().unwrap_or(Duration::ZERO))
}

fn secs(n: f64) -> Option<Duration> {
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(n).ok()
}

fn http_header<'a>(headers: &[(&'a str, &'a str)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// The reset if it is in the future (clamped to `now + cap`), else `now + retry_after` (clamped),
/// else `now + default`.
fn until_from(
    reset: Option<DateTime<Utc>>,
    retry: Option<Duration>,
    now: DateTime<Utc>,
    default: Duration,
    cap: Duration,
) -> DateTime<Utc> {
    let latest = add(now, cap);
    match (reset.filter(|r| *r > now), retry) {
        (Some(r), _) => r.min(latest),
        (None, Some(d)) => add(now, d.min(cap)),
        (None, None) => add(now, default.min(cap)),
    }
}

/// The reset if it is in the future and at most 48 h ahead, else the next 00:00 UTC.
fn daily_until(reset: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
    match reset {
        Some(r) if r > now && r <= add(now, MAX_DAILY_AHEAD) => r,
        _ => crate::clock::next_utc_midnight(now),
    }
}

fn add(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(now)
}

fn midnight(date: Option<NaiveDate>, now: DateTime<Utc>) -> DateTime<Utc> {
    date.map(|d| d.and_time(NaiveTime::MIN).and_utc())
        .unwrap_or(now)
}

/// The next Monday 00:00 UTC strictly after `now` (a week ahead when `now` is a Monday).
fn next_monday(now: DateTime<Utc>) -> DateTime<Utc> {
    let days = 7 - u64::from(now.weekday().num_days_from_monday());
    midnight(now.date_naive().checked_add_days(Days::new(days)), now)
}

/// The 1st of next month, 00:00 UTC.
fn next_month(now: DateTime<Utc>) -> DateTime<Utc> {
    let date = now
        .date_naive()
        .with_day(1)
        .and_then(|d| d.checked_add_months(Months::new(1)));
    midnight(date, now)
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

/// Whether `error` occurs in `body`: a searcher built once, for the check
/// every success body goes through.
fn mentions_error(body: &[u8]) -> bool {
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"error"));
    FINDER.find(body).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn ms(v: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(v).unwrap()
    }

    fn run(status: u16, headers: &[(&str, &str)], body: &str, now: DateTime<Utc>) -> Verdict {
        let answer = Answer {
            status,
            headers,
            body: body.as_bytes(),
            model: Some("meta-llama/llama-3.3-70b-instruct:free"),
        };
        classify(&answer, now)
    }

    const PER_DAY: &str = r#"{"error":{"message":"Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day","code":429,"metadata":{"headers":{"X-RateLimit-Limit":"50","X-RateLimit-Remaining":"0","X-RateLimit-Reset":"1788220800000"},"provider_name":null}}}"#;
    const PER_MIN: &str = r#"{"error":{"message":"Rate limit exceeded: free-models-per-min. ","code":429,"metadata":{"headers":{"X-RateLimit-Limit":"20","X-RateLimit-Remaining":"0","X-RateLimit-Reset":"1783519380000"},"provider_name":null}}}"#;
    const VENICE: &str = r#"{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"meta-llama/llama-3.3-70b-instruct:free is temporarily rate-limited upstream. Please retry shortly, or add your own key to accumulate your rate limits: https://openrouter.ai/settings/integrations","provider_name":"Venice","is_byok":false,"retry_after_seconds":29,"headers":{"Retry-After":"29"}}}}"#;

    // --- the literal examples -------------------------------------------------------------

    #[test]
    fn per_day_literal() {
        // 1788220800000 ms = 2026-09-01T00:00:00Z.
        let reset = ms(1_788_220_800_000);
        assert_eq!(reset, at(2026, 9, 1, 0, 0, 0));
        let now = at(2026, 8, 31, 15, 30, 0);
        let v = run(429, &[], PER_DAY, now);
        assert_eq!(v, Verdict::AccountDaily { until: reset });
        assert_eq!(v.reason(), "free-models-per-day");
    }

    #[test]
    fn per_day_reset_in_past_falls_back_to_next_midnight() {
        let now = at(2026, 9, 2, 10, 0, 0);
        assert_eq!(
            run(429, &[], PER_DAY, now),
            Verdict::AccountDaily {
                until: at(2026, 9, 3, 0, 0, 0)
            }
        );
    }

    #[test]
    fn per_day_without_any_reset_uses_next_midnight() {
        let body = r#"{"error":{"message":"Rate limit exceeded: free-models-per-day","code":429}}"#;
        let now = at(2026, 12, 31, 23, 59, 59);
        assert_eq!(
            run(429, &[], body, now),
            Verdict::AccountDaily {
                until: at(2027, 1, 1, 0, 0, 0)
            }
        );
    }

    #[test]
    fn per_day_reset_too_far_ahead_is_ignored() {
        let now = at(2026, 8, 20, 12, 0, 0);
        assert_eq!(
            run(429, &[], PER_DAY, now),
            Verdict::AccountDaily {
                until: at(2026, 8, 21, 0, 0, 0)
            }
        );
    }

    #[test]
    fn per_day_high_balance() {
        let body = r#"{"error":{"message":"Rate limit exceeded: free-models-per-day-high-balance","code":"429","metadata":{"provider_name":null}}}"#;
        let now = at(2026, 8, 31, 15, 30, 0);
        let headers = [("X-RateLimit-Reset", "1788220800000")];
        assert_eq!(
            run(429, &headers, body, now),
            Verdict::AccountDaily {
                until: at(2026, 9, 1, 0, 0, 0)
            }
        );
    }

    #[test]
    fn per_min_literal() {
        // 1783519380000 ms = 2026-07-08T14:03:00Z.
        let reset = ms(1_783_519_380_000);
        assert_eq!(reset, at(2026, 7, 8, 14, 3, 0));
        let now = at(2026, 7, 8, 14, 2, 31);
        let v = run(429, &[], PER_MIN, now);
        assert_eq!(v, Verdict::AccountPerMinute { until: reset });
        assert_eq!(v.reason(), "free-models-per-min");
    }

    #[test]
    fn per_min_http_header_wins_over_metadata() {
        let now = at(2026, 7, 8, 14, 2, 31);
        let headers = [("x-ratelimit-reset", "1783519370000")];
        assert_eq!(
            run(429, &headers, PER_MIN, now),
            Verdict::AccountPerMinute {
                until: at(2026, 7, 8, 14, 2, 50)
            }
        );
    }

    #[test]
    fn per_min_reset_in_seconds_is_tolerated() {
        let body = r#"{"error":{"message":"Rate limit exceeded: free-models-per-min.","code":429,"metadata":{"headers":{"x-ratelimit-reset":1783519380}}}}"#;
        let now = at(2026, 7, 8, 14, 2, 31);
        assert_eq!(
            run(429, &[], body, now),
            Verdict::AccountPerMinute {
                until: at(2026, 7, 8, 14, 3, 0)
            }
        );
    }

    #[test]
    fn per_min_reset_past_uses_retry_after_then_sixty_seconds() {
        let now = at(2026, 7, 8, 15, 0, 0);
        assert_eq!(
            run(429, &[("Retry-After", "7")], PER_MIN, now),
            Verdict::AccountPerMinute {
                until: at(2026, 7, 8, 15, 0, 7)
            }
        );
        assert_eq!(
            run(429, &[], PER_MIN, now),
            Verdict::AccountPerMinute {
                until: at(2026, 7, 8, 15, 1, 0)
            }
        );
    }

    #[test]
    fn per_min_far_reset_is_clamped() {
        let now = at(2026, 7, 8, 14, 0, 0);
        let headers = [("X-RateLimit-Reset", "1783526400000")]; // 16:00Z, two hours ahead.
        assert_eq!(
            run(429, &headers, PER_MIN, now),
            Verdict::AccountPerMinute {
                until: at(2026, 7, 8, 14, 10, 0)
            }
        );
    }

    #[test]
    fn venice_provider_literal() {
        let now = at(2026, 7, 8, 14, 0, 0);
        let v = run(429, &[], VENICE, now);
        assert_eq!(
            v,
            Verdict::ProviderLimited {
                retry_after: Duration::from_secs(29)
            }
        );
        assert_eq!(v.reason(), "provider-rate-limited");
    }

    #[test]
    fn provider_http_retry_after_wins() {
        let now = at(2026, 7, 8, 14, 0, 0);
        assert_eq!(
            run(429, &[("retry-after", "2.5")], VENICE, now),
            Verdict::ProviderLimited {
                retry_after: Duration::from_millis(2500)
            }
        );
    }

    #[test]
    fn provider_retry_after_only_in_metadata_headers() {
        let body = r#"{"error":{"message":"Provider returned error","code":429,"metadata":{"provider_name":"Chutes","headers":{"retry-after":12}}}}"#;
        let now = at(2026, 7, 8, 14, 0, 0);
        assert_eq!(
            run(429, &[], body, now),
            Verdict::ProviderLimited {
                retry_after: Duration::from_secs(12)
            }
        );
    }

    #[test]
    fn provider_raw_without_provider_name_and_default_wait() {
        let body = r#"{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"x is temporarily rate-limited upstream.","provider_name":null}}}"#;
        let now = at(2026, 7, 8, 14, 0, 0);
        assert_eq!(
            run(429, &[], body, now),
            Verdict::ProviderLimited {
                retry_after: Duration::from_secs(5)
            }
        );
    }

    #[test]
    fn provider_wait_is_capped() {
        let body = r#"{"error":{"message":"Provider returned error","code":429,"metadata":{"provider_name":"X","retry_after_seconds":"86400"}}}"#;
        let now = at(2026, 7, 8, 14, 0, 0);
        assert_eq!(
            run(429, &[], body, now),
            Verdict::ProviderLimited {
                retry_after: Duration::from_secs(300)
            }
        );
    }

    #[test]
    fn limit_source_free_tier() {
        let body = r#"{"error":{"message":"Rate limit exceeded","code":429,"metadata":{"limit_source":"openrouter_free_tier","headers":{"X-RateLimit-Reset":"1783519380000"}}}}"#;
        let now = at(2026, 7, 8, 14, 2, 0);
        assert_eq!(
            run(429, &[], body, now),
            Verdict::AccountPerMinute {
                until: at(2026, 7, 8, 14, 3, 0)
            }
        );
        let daily = r#"{"error":{"message":"Rate limit exceeded","code":429,"metadata":{"limit_source":"openrouter_free_tier_daily"}}}"#;
        assert_eq!(
            run(429, &[], daily, now),
            Verdict::AccountDaily {
                until: at(2026, 7, 9, 0, 0, 0)
            }
        );
    }

    #[test]
    fn limit_source_shared_capacity() {
        let body = r#"{"error":{"message":"Rate limit exceeded","code":429,"metadata":{"limit_source":"openrouter_shared_capacity"}}}"#;
        let now = at(2026, 7, 8, 14, 2, 0);
        let v = run(429, &[], body, now);
        assert_eq!(
            v,
            Verdict::ModelCapacity {
                retry_after: Duration::from_secs(5)
            }
        );
        assert_eq!(v.reason(), "model-capacity");
        assert_eq!(
            run(429, &[("X-RateLimit-Reset", "1783519340000")], body, now),
            Verdict::ModelCapacity {
                retry_after: Duration::from_secs(20)
            }
        );
    }

    #[test]
    fn high_demand_message_is_model_capacity() {
        let body = r#"{"error":{"message":"Rate limit exceeded: limit_rpm/google/gemini-2.5-pro-exp-03-25/abc. High demand for google/gemini-2.5-pro-exp-03-25 on OpenRouter - limited to 1 requests per minute. Please retry shortly.","code":429,"metadata":{"headers":{"X-RateLimit-Limit":"1","X-RateLimit-Remaining":"0"},"provider_name":null}}}"#;
        let now = at(2026, 7, 8, 14, 2, 0);
        assert_eq!(
            run(429, &[("Retry-After", "9")], body, now),
            Verdict::ModelCapacity {
                retry_after: Duration::from_secs(9)
            }
        );
    }

    #[test]
    fn limit_source_upstream_pool() {
        let body = r#"{"error":{"message":"Rate limit exceeded","code":429,"metadata":{"limit_source":"upstream_provider_shared_pool","retry_after_seconds":3}}}"#;
        let now = at(2026, 7, 8, 14, 2, 0);
        assert_eq!(
            run(429, &[], body, now),
            Verdict::ProviderLimited {
                retry_after: Duration::from_secs(3)
            }
        );
    }

    #[test]
    fn generic_429_is_key_rate_limited() {
        let now = at(2026, 7, 8, 14, 2, 0);
        let body = r#"{"error":{"message":"Rate limit exceeded","code":429}}"#;
        let v = run(429, &[], body, now);
        assert_eq!(
            v,
            Verdict::KeyRateLimited {
                until: at(2026, 7, 8, 14, 3, 0)
            }
        );
        assert_eq!(v.reason(), "rate-limited");
        assert_eq!(
            run(429, &[("Retry-After", "30")], "not json", now),
            Verdict::KeyRateLimited {
                until: at(2026, 7, 8, 14, 2, 30)
            }
        );
        assert_eq!(
            run(
                429,
                &[("Retry-After", "Wed, 08 Jul 2026 14:04:00 GMT")],
                "",
                now
            ),
            Verdict::KeyRateLimited {
                until: at(2026, 7, 8, 14, 4, 0)
            }
        );
        assert_eq!(
            run(429, &[("X-RATELIMIT-RESET", "1783519350000")], "", now),
            Verdict::KeyRateLimited {
                until: at(2026, 7, 8, 14, 2, 30)
            }
        );
    }

    // --- other statuses --------------------------------------------------------------------

    #[test]
    fn invalid_key() {
        let now = at(2026, 7, 8, 14, 2, 0);
        let v = run(
            401,
            &[],
            r#"{"error":{"message":"User not found.","code":401}}"#,
            now,
        );
        assert_eq!(
            v,
            Verdict::InvalidKey {
                reason: "User not found.".into()
            }
        );
        assert_eq!(v.reason(), "invalid-key");
        assert_eq!(
            run(401, &[], "<html>", now),
            Verdict::InvalidKey {
                reason: "HTTP 401".into()
            }
        );
        let long = format!(r#"{{"error":{{"message":"{}"}}}}"#, "é".repeat(150));
        let Verdict::InvalidKey { reason } = run(401, &[], &long, now) else {
            panic!("not invalid key");
        };
        assert_eq!(reason.len(), 200);
    }

    #[test]
    fn key_limits() {
        // 2026-07-08 is a Wednesday.
        let now = at(2026, 7, 8, 14, 2, 0);
        let body = |p: &str| {
            format!(
                r#"{{"error":{{"message":"Key limit exceeded ({p} limit). Manage it using https://openrouter.ai/settings/keys","code":403}}}}"#
            )
        };
        let v = run(403, &[], &body("daily"), now);
        assert_eq!(
            v,
            Verdict::KeyLimit {
                period: LimitPeriod::Daily,
                until: Some(at(2026, 7, 9, 0, 0, 0))
            }
        );
        assert_eq!(v.reason(), "key-limit-daily");
        let v = run(403, &[], &body("weekly"), now);
        assert_eq!(
            v,
            Verdict::KeyLimit {
                period: LimitPeriod::Weekly,
                until: Some(at(2026, 7, 13, 0, 0, 0))
            }
        );
        assert_eq!(v.reason(), "key-limit-weekly");
        let v = run(403, &[], &body("monthly"), now);
        assert_eq!(
            v,
            Verdict::KeyLimit {
                period: LimitPeriod::Monthly,
                until: Some(at(2026, 8, 1, 0, 0, 0))
            }
        );
        assert_eq!(v.reason(), "key-limit-monthly");
        let v = run(403, &[], &body("total"), now);
        assert_eq!(
            v,
            Verdict::KeyLimit {
                period: LimitPeriod::Total,
                until: None
            }
        );
        assert_eq!(v.reason(), "key-limit-total");
    }

    #[test]
    fn key_limit_period_edges() {
        let weekly = r#"{"error":{"message":"Key limit exceeded (weekly limit)"}}"#;
        let monthly = r#"{"error":{"message":"Key limit exceeded (monthly limit)"}}"#;
        // Monday 00:00 exactly: next Monday.
        assert_eq!(
            run(403, &[], weekly, at(2026, 7, 6, 0, 0, 0)),
            Verdict::KeyLimit {
                period: LimitPeriod::Weekly,
                until: Some(at(2026, 7, 13, 0, 0, 0))
            }
        );
        // Sunday night: tomorrow.
        assert_eq!(
            run(403, &[], weekly, at(2026, 7, 12, 23, 59, 59)),
            Verdict::KeyLimit {
                period: LimitPeriod::Weekly,
                until: Some(at(2026, 7, 13, 0, 0, 0))
            }
        );
        // December rolls into January; 31 January into 1 March's predecessor month.
        assert_eq!(
            run(403, &[], monthly, at(2026, 12, 31, 12, 0, 0)),
            Verdict::KeyLimit {
                period: LimitPeriod::Monthly,
                until: Some(at(2027, 1, 1, 0, 0, 0))
            }
        );
        assert_eq!(
            run(403, &[], monthly, at(2027, 1, 31, 12, 0, 0)),
            Verdict::KeyLimit {
                period: LimitPeriod::Monthly,
                until: Some(at(2027, 2, 1, 0, 0, 0))
            }
        );
    }

    #[test]
    fn moderation_403_is_client_error() {
        let body = r#"{"error":{"message":"meta-llama/llama-guard-4-12b requires moderation on OpenInference. Your input was flagged for \"violence\".","code":403,"metadata":{"reasons":["violence"],"flagged_input":"...","provider_name":"OpenInference","model_slug":"x"}}}"#;
        let v = run(403, &[], body, at(2026, 7, 8, 14, 2, 0));
        assert_eq!(v, Verdict::ClientError);
        assert_eq!(v.reason(), "client-error");
    }

    #[test]
    fn payment_required() {
        let now = at(2026, 7, 8, 14, 2, 0);
        let account = r#"{"error":{"message":"Insufficient credits. Add more using https://openrouter.ai/credits","code":402}}"#;
        let v = run(402, &[], account, now);
        assert_eq!(
            v,
            Verdict::InsufficientCredits {
                until: at(2026, 7, 8, 14, 12, 0)
            }
        );
        assert_eq!(v.reason(), "insufficient-credits");
        let request = r#"{"error":{"message":"This request requires more credits, or fewer max_tokens. You requested up to 65536 tokens, but can only afford 1000. To increase, visit https://openrouter.ai/settings/credits and upgrade to a paid account","code":402}}"#;
        assert_eq!(run(402, &[], request, now), Verdict::ClientError);
    }

    #[test]
    fn client_errors() {
        let now = at(2026, 7, 8, 14, 2, 0);
        for (status, body) in [
            (400, r#"{"error":{"message":"Invalid JSON","code":400}}"#),
            (
                404,
                r#"{"error":{"message":"No endpoints found for foo/bar:free.","code":404}}"#,
            ),
            (404, "Not Found"),
            (405, ""),
            (409, ""),
            (
                413,
                r#"{"error":{"message":"Payload too large","code":413}}"#,
            ),
            (422, r#"{"error":{"message":"Unprocessable","code":"422"}}"#),
            (417, "Expectation Failed"),
            (418, ""),
            (451, ""),
        ] {
            assert_eq!(
                run(status, &[], body, now),
                Verdict::ClientError,
                "status {status}"
            );
        }
    }

    #[test]
    fn transient_statuses() {
        let now = at(2026, 7, 8, 14, 2, 0);
        for status in [408, 500, 502, 503, 504, 524, 529, 599] {
            let v = run(status, &[], "<html>bad gateway</html>", now);
            assert_eq!(
                v,
                Verdict::Transient {
                    provider: false,
                    retry_after: None
                },
                "status {status}"
            );
            assert_eq!(v.reason(), "transient");
            let body = format!(
                r#"{{"error":{{"message":"Provider returned error","code":{status},"metadata":{{"provider_name":"DeepInfra","raw":"oops"}}}}}}"#
            );
            let v = run(status, &[("Retry-After", "3")], &body, now);
            assert_eq!(
                v,
                Verdict::Transient {
                    provider: true,
                    retry_after: Some(Duration::from_secs(3))
                },
                "status {status}"
            );
            assert_eq!(v.reason(), "provider-error");
        }
        let null_provider =
            r#"{"error":{"message":"Internal Server Error","code":500,"metadata":null}}"#;
        assert_eq!(
            run(500, &[], null_provider, now),
            Verdict::Transient {
                provider: false,
                retry_after: None
            }
        );
    }

    #[test]
    fn other_statuses() {
        let now = at(2026, 7, 8, 14, 2, 0);
        for status in [0, 100, 301, 304, 600, 999] {
            let v = run(status, &[], "", now);
            assert_eq!(v, Verdict::Other, "status {status}");
            assert_eq!(v.reason(), "unknown-error");
        }
        // A provider's 401 (e.g. a BYOK credential) does not disable our key.
        let byok = r#"{"error":{"message":"Provider returned error","code":401,"metadata":{"provider_name":"OpenAI","is_byok":true}}}"#;
        assert_eq!(run(401, &[], byok, now), Verdict::Other);
    }

    // --- errors inside 2xx -----------------------------------------------------------------

    #[test]
    fn success() {
        let now = at(2026, 7, 8, 14, 2, 0);
        let body = r#"{"id":"gen-1","choices":[{"index":0,"message":{"role":"assistant","content":"no error here"},"finish_reason":"stop"}],"usage":{"cost":0}}"#;
        let v = run(200, &[], body, now);
        assert_eq!(v, Verdict::Success);
        assert_eq!(v.reason(), "ok");
        assert_eq!(run(200, &[], "", now), Verdict::Success);
        assert_eq!(run(204, &[], "not json", now), Verdict::Success);
        assert_eq!(
            run(200, &[], r#"{"error":null,"choices":[]}"#, now),
            Verdict::Success
        );
    }

    #[test]
    fn top_level_error_in_200() {
        let now = at(2026, 7, 8, 14, 2, 0);
        assert_eq!(
            run(200, &[], PER_MIN, at(2026, 7, 8, 14, 2, 31)),
            Verdict::AccountPerMinute {
                until: at(2026, 7, 8, 14, 3, 0)
            }
        );
        assert_eq!(
            run(200, &[], VENICE, now),
            Verdict::ProviderLimited {
                retry_after: Duration::from_secs(29)
            }
        );
        let string_code = r#"{"id":"gen-1","error":{"message":"Provider returned error","code":"502","metadata":{"provider_name":"Together"}},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}"#;
        assert_eq!(
            run(200, &[], string_code, now),
            Verdict::Transient {
                provider: true,
                retry_after: None
            }
        );
        let no_code = r#"{"error":{"message":"Something broke","metadata":{"provider_name":"Groq"}},"choices":[]}"#;
        assert_eq!(
            run(200, &[], no_code, now),
            Verdict::Transient {
                provider: true,
                retry_after: None
            }
        );
        let unusable_code = r#"{"error":{"message":"Something broke","code":"server_error"}}"#;
        assert_eq!(
            run(200, &[], unusable_code, now),
            Verdict::Transient {
                provider: false,
                retry_after: None
            }
        );
        let inner_401 = r#"{"error":{"message":"User not found.","code":401}}"#;
        assert_eq!(
            run(200, &[], inner_401, now),
            Verdict::InvalidKey {
                reason: "User not found.".into()
            }
        );
    }

    #[test]
    fn finish_reason_error_in_200() {
        let now = at(2026, 7, 8, 14, 2, 0);
        let body = r#"{"id":"gen-1","choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}"#;
        assert_eq!(
            run(200, &[], body, now),
            Verdict::Transient {
                provider: false,
                retry_after: None
            }
        );
        let with_choice_error = r#"{"choices":[{"finish_reason":"error","error":{"message":"Provider returned error","code":429,"metadata":{"provider_name":"Venice","retry_after_seconds":4}}}]}"#;
        assert_eq!(
            run(200, &[], with_choice_error, now),
            Verdict::ProviderLimited {
                retry_after: Duration::from_secs(4)
            }
        );
    }

    #[test]
    fn error_in_body_cases() {
        assert!(error_in_body(br#"{"error":{"message":"x"}}"#));
        assert!(error_in_body(br#"{"error":"x"}"#));
        assert!(error_in_body(br#"{"error":true}"#));
        assert!(error_in_body(br#"{"choices":[{"finish_reason":"error"}]}"#));
        assert!(!error_in_body(br#"{"error":null}"#));
        assert!(!error_in_body(br#"{"error":false}"#));
        assert!(!error_in_body(br#"{"error":""}"#));
        assert!(!error_in_body(br#"{"error":{}}"#));
        assert!(!error_in_body(br#"{"error":0}"#));
        assert!(!error_in_body(br#"{"choices":[{"finish_reason":"stop"}]}"#));
        assert!(!error_in_body(br#"{"choices":[]}"#));
        assert!(!error_in_body(
            br#"{"choices":[{"message":{"content":"an error"}}]}"#
        ));
        assert!(!error_in_body(b"error"));
        assert!(!error_in_body(b""));
        assert!(!error_in_body(br#"["error"]"#));
    }

    #[test]
    fn an_error_event_first_in_a_chat_stream_is_classified_like_its_http_twin() {
        use crate::openrouter::dialect::{Dialect, Role};
        use crate::openrouter::stream::Watch;
        let mut watch = Watch::new(Dialect::Chat, false);
        watch.push(bytes::Bytes::from(format!(
            ": OPENROUTER PROCESSING\n\ndata: {VENICE}\n\n"
        )));
        assert!(matches!(watch.next_event(false), Some((_, Role::Preamble))));
        let Some((_, Role::Error(error))) = watch.next_event(false) else {
            panic!("the error event");
        };
        let answer = Answer {
            status: 200,
            headers: &[("content-type", "text/event-stream")],
            body: &error.body,
            model: None,
        };
        assert_eq!(
            classify(&answer, at(2026, 7, 8, 14, 2, 0)),
            Verdict::ProviderLimited {
                retry_after: Duration::from_secs(29)
            }
        );
    }

    // --- robustness ------------------------------------------------------------------------

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            xs[self.below(xs.len())]
        }
    }

    #[test]
    fn fuzz_never_panics() {
        const FRAGMENTS: &[&str] = &[
            r#"{"error":"#,
            r#"{"message":"#,
            r#""Rate limit exceeded: free-models-per-day""#,
            r#""Rate limit exceeded: free-models-per-min""#,
            r#""Key limit exceeded (weekly limit)""#,
            r#""Provider returned error""#,
            r#""requires more credits, or fewer max_tokens""#,
            r#","code":"#,
            "429",
            r#""4x9""#,
            "1e308",
            "-1",
            "NaN",
            r#","metadata":"#,
            "null",
            r#"{"headers":{"X-RateLimit-Reset":"#,
            r#"{"headers":{"Retry-After":"#,
            r#""99999999999999999999""#,
            "-9.2e18",
            "18446744073709551616",
            r#","retry_after_seconds":"#,
            r#""limit_source":"openrouter_free_tier""#,
            r#""provider_name":"V""#,
            r#""raw":{"a":"rate-limited upstream"}"#,
            r#","choices":[{"finish_reason":"error"}]"#,
            "}",
            "}}",
            "]",
            ",",
            "é",
            "\u{0}",
            "data: ",
            "\r\n",
            "\n\n",
            "\r",
            ": OPENROUTER PROCESSING",
            "[DONE]",
        ];
        const NAMES: &[&str] = &[
            "X-RateLimit-Reset",
            "retry-after",
            "RETRY-AFTER",
            "x-ratelimit-reset",
            "content-type",
            "",
        ];
        const VALUES: &[&str] = &[
            "1783519380000",
            "1783519380",
            "-5",
            "0",
            "1e400",
            "inf",
            "NaN",
            "9223372036854775807",
            "3.5",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "",
            "garbage",
        ];
        const STATUSES: &[u16] = &[
            0,
            200,
            201,
            400,
            401,
            402,
            403,
            404,
            408,
            409,
            413,
            422,
            429,
            500,
            503,
            529,
            600,
            u16::MAX,
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let nows = [
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
            Utc.with_ymd_and_hms(2026, 7, 8, 14, 2, 0).unwrap(),
            DateTime::<Utc>::UNIX_EPOCH,
        ];
        for i in 0..3000 {
            let mut body: Vec<u8> = Vec::new();
            if i % 3 == 0 {
                for _ in 0..rng.below(64) {
                    body.push(rng.next() as u8);
                }
            } else {
                for _ in 0..rng.below(24) {
                    body.extend_from_slice(rng.pick(FRAGMENTS).as_bytes());
                }
            }
            if i % 5 == 0 {
                // Well-formed bodies with hostile values.
                body = format!(
                    r#"{{"error":{{"message":{},"code":{},"metadata":{{"provider_name":{},"retry_after_seconds":{},"headers":{{"X-RateLimit-Reset":{},"Retry-After":{}}}}}}}}}"#,
                    rng.pick(FRAGMENTS.get(2..7).unwrap()),
                    rng.pick(&["429", "\"429\"", "402", "403", "401", "1e9", "-3", "null"]),
                    rng.pick(&["null", "\"X\"", "1", "\"\""]),
                    rng.pick(&["1e308", "-1", "\"x\"", "5", "1e-320"]),
                    rng.pick(&["1e308", "\"1783519380000\"", "-1", "9e15", "1e19"]),
                    rng.pick(&["\"1e308\"", "\"Fri, 31 Dec 9999 23:59:59 GMT\"", "7.5"]),
                )
                .into_bytes();
            }
            let headers: Vec<(&str, &str)> = (0..rng.below(4))
                .map(|_| (rng.pick(NAMES), rng.pick(VALUES)))
                .collect();
            let status = if i % 7 == 0 {
                rng.next() as u16
            } else {
                STATUSES[rng.below(STATUSES.len())]
            };
            let answer = Answer {
                status,
                headers: &headers,
                body: &body,
                model: None,
            };
            let now = nows[i % nows.len()];
            let verdict = classify(&answer, now);
            let _ = verdict.reason();
            let _ = error_in_body(&body);
        }
    }

    #[test]
    fn rate_limit_limit_from_header_or_metadata() {
        let day = br#"{"error":{"message":"Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day","code":429,"metadata":{"headers":{"X-RateLimit-Limit":"50","X-RateLimit-Remaining":"0","X-RateLimit-Reset":"1788220800000"},"provider_name":null}}}"#;
        let answer =
            |headers: &'static [(&'static str, &'static str)], body: &'static [u8]| Answer {
                status: 429,
                headers,
                body,
                model: None,
            };
        assert_eq!(rate_limit_limit(&answer(&[], day)), Some(50));
        assert_eq!(
            rate_limit_limit(&answer(&[("X-RateLimit-Limit", "20")], day)),
            Some(20)
        );
        assert_eq!(
            rate_limit_limit(&answer(
                &[],
                br#"{"error":{"metadata":{"headers":{"x-ratelimit-limit":1000}}}}"#
            )),
            Some(1000)
        );
        assert_eq!(rate_limit_limit(&answer(&[], b"not json")), None);
        assert_eq!(
            rate_limit_limit(&answer(&[("x-ratelimit-limit", "-1")], b"{}")),
            None
        );
    }
}
