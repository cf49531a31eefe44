//! What is persisted of an OpenRouter account: its free-model requests of
//! the current UTC day and of the last minute, and its daily limit.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The state of an account that is persisted in the store, so that
/// `keys list` reads the same counts as the server decides on, and a
/// restarted server keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AccountRecord {
    /// The UTC day the count belongs to.
    pub day: Option<NaiveDate>,
    /// Free-model requests sent that day.
    pub free_requests: u32,
    /// The daily cap, when known exactly.
    pub daily_limit: Option<u32>,
    /// When `daily_limit` was learned (from OpenRouter's `GET /key` or a
    /// rate-limit header): a limit learned later replaces it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_at: Option<DateTime<Utc>>,
    /// When `free_requests` was last set from outside orproxy's own
    /// counting (OpenRouter's count in `keys check`, or
    /// `keys reactivate --forget-quota`): a running server takes that count
    /// in place of its own, plus the requests it sent since.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_at: Option<DateTime<Utc>>,
    /// When the free-model requests of the last minute were sent (the
    /// per-minute window; older entries mean nothing).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub last_minute: Vec<DateTime<Utc>>,
    /// Fields this version does not know, kept on rewrite.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
