//! The key store's on-disk format: `{"version": 1, "keys": [...]}`.

use super::{AccountRecord, KeyState, UsageBook};
use crate::secret::ApiKey;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The store format version this build reads and writes.
pub(crate) const STORE_VERSION: u32 = 1;

/// The whole store file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreFile {
    /// Format version; only [`STORE_VERSION`] is understood.
    pub version: u32,
    /// Every key, in the order they were added.
    #[serde(default)]
    pub keys: Vec<KeyRecord>,
    /// Free-model requests counted per OpenRouter account (or per key, for
    /// keys whose account is unknown: `key:<id>`) for the current UTC day.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub accounts: BTreeMap<String, AccountRecord>,
    /// Requests, tokens and cost per UTC day, key, account and model.
    #[serde(default, skip_serializing_if = "UsageBook::is_empty")]
    pub usage: UsageBook,
    /// Fields this version does not know (a newer orproxy's), kept as they
    /// were whenever the store is rewritten. Likewise at every level below.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for StoreFile {
    fn default() -> Self {
        Self {
            version: STORE_VERSION,
            keys: Vec::new(),
            accounts: BTreeMap::new(),
            usage: UsageBook::default(),
            extra: Map::new(),
        }
    }
}

/// One key and everything known about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Short stable ID: a prefix of the key's SHA-256 (8 hex digits unless that collides).
    pub id: String,
    /// The secret itself.
    pub key: ApiKey,
    /// A name the user gave the key.
    #[serde(default)]
    pub label: Option<String>,
    /// When the key was first added.
    pub added_at: DateTime<Utc>,
    /// Bumped by every administrative reset (reactivate, re-add) so that a
    /// running server adopts the reset instead of writing its older state back.
    #[serde(default)]
    pub generation: u64,
    /// Runtime state kept by the server.
    #[serde(default)]
    pub state: KeyState,
    /// What OpenRouter's `GET /key` said about the key when last checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<KeyInfo>,
    /// Fields this version does not know, kept on rewrite.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl KeyRecord {
    /// The account the key belongs to, when OpenRouter told us.
    pub(crate) fn account(&self) -> Option<&str> {
        self.info.as_ref()?.creator_user_id.as_deref()
    }

    /// The key under which its account's quota is counted: the account, or
    /// the key itself (`key:<id>`) when the account is unknown.
    pub(crate) fn quota_account(&self) -> String {
        quota_account(self.account(), &self.id)
    }
}

/// See [`KeyRecord::quota_account`].
pub(crate) fn quota_account(account: Option<&str>, id: &str) -> String {
    match account {
        Some(a) => a.to_owned(),
        None => format!("key:{id}"),
    }
}

/// Facts from OpenRouter's `GET /key`, kept with the key. Every field is
/// optional: OpenRouter omits some and adds others over time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyInfo {
    /// When orproxy asked.
    pub checked_at: Option<DateTime<Utc>>,
    /// The key's label on OpenRouter.
    pub label: Option<String>,
    /// Whether the account never bought credits.
    pub is_free_tier: Option<bool>,
    /// The key's own credit limit, if any.
    pub limit: Option<f64>,
    /// Credit left under that limit.
    pub limit_remaining: Option<f64>,
    /// When that limit resets (`daily`, `weekly`, `monthly`).
    pub limit_reset: Option<String>,
    /// Credits spent with the key.
    pub usage: Option<f64>,
    /// The account that owns the key.
    pub creator_user_id: Option<String>,
    /// Free-model requests today, when OpenRouter reports them.
    pub free_model_daily_requests: Option<FreeModelDailyRequests>,
    /// Fields this version does not know, kept on rewrite (a new check
    /// replaces the whole info, these included).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `free_model_daily_requests` from `GET /key`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FreeModelDailyRequests {
    /// Requests made today.
    pub used: Option<u64>,
    /// Requests allowed per day.
    pub limit: Option<u64>,
    /// Requests left today.
    pub remaining: Option<u64>,
    /// Fields this version does not know, kept on rewrite.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Pick an ID for `key` that no other key in `existing` uses: the 8-digit
/// prefix, lengthened only on a collision with a different key.
pub(crate) fn assign_id<'a>(
    key: &ApiKey,
    existing: impl Iterator<Item = &'a KeyRecord> + Clone,
) -> String {
    let mut len = 8;
    loop {
        let id = key.id_of_len(len);
        let clash = existing.clone().any(|r| r.key != *key && r.id == id);
        if !clash || len >= 64 {
            return id;
        }
        len += 4;
    }
}
