//! `GET {upstream}/key`: what OpenRouter knows about a key. It runs no model
//! and costs no quota, so it is the check used when a key is added.

use crate::model::{FreeModelDailyRequests, KeyInfo};
use crate::secret::{ApiKey, redact};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::time::Duration;

/// Why a key could not be checked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckError {
    /// OpenRouter says the key is invalid or deleted (401).
    #[error("OpenRouter rejected the key ({status}: {message})")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// OpenRouter's message.
        message: String,
    },
    /// OpenRouter answered, but not with the key's details.
    #[error("OpenRouter answered {status}: {message}")]
    Unexpected {
        /// The HTTP status.
        status: u16,
        /// OpenRouter's message, or the start of the body.
        message: String,
    },
    /// OpenRouter could not be reached.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// How long a key check (`GET /key`) may take, connection included.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// An HTTP client for key checks, bounded by [`CHECK_TIMEOUT`]. Must be
/// made inside an actix (tokio) runtime.
pub(crate) fn client() -> awc::Client {
    client_with_timeout(CHECK_TIMEOUT)
}

/// An HTTP client for key checks bounded by `timeout`.
pub(crate) fn client_with_timeout(timeout: Duration) -> awc::Client {
    awc::Client::builder()
        .timeout(timeout)
        .connector(awc::Connector::new().timeout(timeout))
        .disable_redirects()
        .finish()
}

/// What a key check says about a key: the one reading of a `GET /key`
/// result, for `keys add`, `keys check`, the admin API and the server's
/// re-checks.
#[derive(Debug)]
pub(crate) enum KeyCheck {
    /// OpenRouter knows the key, and says this about it.
    Known(KeyInfo),
    /// OpenRouter rejects the key (401): invalid or deleted.
    Rejected(CheckError),
    /// No verdict: OpenRouter could not be reached or answered oddly.
    Unknown(CheckError),
}

impl KeyCheck {
    /// `ok`, `rejected` or `unreachable`, as `keys check --json` says it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            KeyCheck::Known(_) => "ok",
            KeyCheck::Rejected(_) => "rejected",
            KeyCheck::Unknown(_) => "unreachable",
        }
    }
}

impl From<Result<KeyInfo, CheckError>> for KeyCheck {
    fn from(result: Result<KeyInfo, CheckError>) -> Self {
        match result {
            Ok(info) => KeyCheck::Known(info),
            Err(e @ CheckError::Rejected { .. }) => KeyCheck::Rejected(e),
            Err(e) => KeyCheck::Unknown(e),
        }
    }
}

/// Check `key` with OpenRouter (`GET {upstream}/key`).
pub(crate) async fn check(
    client: &awc::Client,
    upstream: &str,
    key: &ApiKey,
    now: DateTime<Utc>,
) -> KeyCheck {
    fetch(client, upstream, key, now).await.into()
}

/// Ask OpenRouter about `key`. Must run inside an actix (tokio) runtime.
async fn fetch(
    client: &awc::Client,
    upstream: &str,
    key: &ApiKey,
    now: DateTime<Utc>,
) -> Result<KeyInfo, CheckError> {
    let url = format!("{}/key", upstream.trim_end_matches('/'));
    let unreachable = |reason: String| CheckError::Unreachable {
        url: url.clone(),
        reason: redact(&reason),
    };
    let mut response = client
        .get(&url)
        .bearer_auth(key.expose())
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = response.status().as_u16();
    let body = response
        .body()
        .limit(1 << 20)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if status == 401 {
        return Err(CheckError::Rejected {
            status,
            message: error_message(&body),
        });
    }
    if !(200..300).contains(&status) {
        return Err(CheckError::Unexpected {
            status,
            message: error_message(&body),
        });
    }
    parse_key_info(&body, now).ok_or_else(|| CheckError::Unexpected {
        status,
        message: "the answer has no \"data\" object".into(),
    })
}

/// Read the `data` object of a `GET /key` answer, leniently.
pub(crate) fn parse_key_info(body: &[u8], now: DateTime<Utc>) -> Option<KeyInfo> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let data = value.get("data")?.as_object()?;
    let num = |name: &str| data.get(name).and_then(Value::as_f64);
    let text = |name: &str| {
        data.get(name).and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    };
    let free = data
        .get("free_model_daily_requests")
        .and_then(Value::as_object)
        .map(|o| FreeModelDailyRequests {
            used: o.get("used").and_then(Value::as_u64),
            limit: o.get("limit").and_then(Value::as_u64),
            remaining: o.get("remaining").and_then(Value::as_u64),
            ..FreeModelDailyRequests::default()
        });
    Some(KeyInfo {
        checked_at: Some(now),
        // A label, not a secret: as OpenRouter reports it (its default
        // label is the key abbreviated), unless it holds a whole key.
        label: text("label").map(|l| crate::secret::redact_keys(&l)),
        is_free_tier: data.get("is_free_tier").and_then(Value::as_bool),
        limit: num("limit"),
        limit_remaining: num("limit_remaining"),
        limit_reset: text("limit_reset"),
        usage: num("usage"),
        creator_user_id: text("creator_user_id"),
        free_model_daily_requests: free,
        ..KeyInfo::default()
    })
}

/// OpenRouter's `error.message`, else the start of the body; never a key.
pub(crate) fn error_message(body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        v.get("error")
            .and_then(|e| e.get("message").or(Some(e)))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let text = from_json.unwrap_or_else(|| {
        let s = String::from_utf8_lossy(body);
        s.chars().take(200).collect()
    });
    let text = redact(text.trim());
    if text.is_empty() {
        "(no message)".to_owned()
    } else {
        text
    }
}

/// One line describing what OpenRouter said about a key.
pub(crate) fn describe(info: &KeyInfo) -> String {
    let mut parts = Vec::new();
    if let Some(label) = &info.label {
        parts.push(format!("label \"{label}\""));
    }
    match info.is_free_tier {
        Some(true) => parts.push("free tier".to_owned()),
        Some(false) => parts.push("paid account".to_owned()),
        None => {}
    }
    match (info.limit, info.limit_remaining) {
        (Some(limit), Some(left)) => parts.push(format!("credit limit {limit}, {left} left")),
        (Some(limit), None) => parts.push(format!("credit limit {limit}")),
        _ => parts.push("no credit limit".to_owned()),
    }
    if let Some(reset) = &info.limit_reset {
        parts.push(format!("limit resets {reset}"));
    }
    if let Some(FreeModelDailyRequests {
        used: Some(used),
        limit: Some(limit),
        ..
    }) = &info.free_model_daily_requests
    {
        parts.push(format!("free-model requests today {used}/{limit}"));
    }
    if let Some(account) = &info.creator_user_id {
        parts.push(format!("account {account}"));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn parses_documented_fields() {
        let body = br#"{"data":{"label":"laptop","limit":null,"limit_remaining":null,
            "limit_reset":null,"usage":0.5,"is_free_tier":true,"creator_user_id":"user_123",
            "free_model_daily_requests":{"used":3,"limit":50,"remaining":47},"rate_limit":-1}}"#;
        let info = parse_key_info(body, now()).unwrap();
        assert_eq!(info.is_free_tier, Some(true));
        assert_eq!(info.usage, Some(0.5));
        assert_eq!(info.limit, None);
        assert_eq!(info.creator_user_id.as_deref(), Some("user_123"));
        assert_eq!(
            info.free_model_daily_requests.as_ref().unwrap().remaining,
            Some(47)
        );
        assert_eq!(info.checked_at, Some(now()));
        assert_eq!(
            describe(&info),
            "label \"laptop\", free tier, no credit limit, free-model requests today 3/50, account user_123"
        );
    }

    #[test]
    fn the_label_is_kept_as_openrouter_reports_it() {
        let body = br#"{"data":{"label":"sk-or-v1-0e6...f2a"}}"#;
        let info = parse_key_info(body, now()).unwrap();
        assert_eq!(info.label.as_deref(), Some("sk-or-v1-0e6...f2a"));
    }

    #[test]
    fn missing_data_is_none() {
        assert!(parse_key_info(b"{}", now()).is_none());
        assert!(parse_key_info(b"not json", now()).is_none());
    }

    #[test]
    fn error_message_prefers_openrouter_message() {
        assert_eq!(
            error_message(br#"{"error":{"message":"User not found.","code":401}}"#),
            "User not found."
        );
        assert_eq!(error_message(b"  plain text "), "plain text");
        assert_eq!(error_message(b""), "(no message)");
    }
}
