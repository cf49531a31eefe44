//! What is persisted of an OpenRouter account: its free-model requests of
//! the current UTC day.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The state of an account that is persisted in the store (the per-minute
/// window is too short-lived to be worth it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AccountRecord {
    /// The UTC day the count belongs to.
    pub day: Option<NaiveDate>,
    /// Free-model requests sent that day.
    pub free_requests: u32,
    /// The daily cap, when known exactly.
    pub daily_limit: Option<u32>,
    /// Fields this version does not know, kept on rewrite.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
