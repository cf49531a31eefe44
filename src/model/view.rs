//! The public view of a key: what `keys list --json` prints and the admin API
//! returns. Never holds the full key.

use super::{KeyRecord, Status};
use crate::human::rfc3339;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// One key as shown to users. Status is computed at `now`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct KeyView {
    /// Short stable ID.
    pub(crate) id: String,
    /// The user's label.
    pub(crate) label: Option<String>,
    /// The key, masked.
    pub(crate) masked: String,
    /// `active`, `cooling` or `disabled`.
    pub(crate) status: &'static str,
    /// End of the cooldown (RFC 3339 UTC) while cooling.
    pub(crate) cooldown_until: Option<String>,
    /// Why it is cooling.
    pub(crate) cooldown_reason: Option<String>,
    /// Why it is disabled.
    pub(crate) disabled_reason: Option<String>,
    /// Failed attempts since the last success.
    pub(crate) consecutive_failures: u32,
    /// When it was last used (RFC 3339 UTC).
    pub(crate) last_used: Option<String>,
    /// Requests it answered.
    pub(crate) requests_total: u64,
    /// Attempts with it that failed.
    pub(crate) failures_total: u64,
    /// When it was added (RFC 3339 UTC).
    pub(crate) added_at: String,
    /// The OpenRouter account it belongs to, when known.
    pub(crate) account: Option<String>,
}

impl KeyView {
    /// The view of `record` at `now`.
    pub(crate) fn of(record: &KeyRecord, now: DateTime<Utc>) -> Self {
        let status = record.state.status(now);
        let (cooldown_until, cooldown_reason, disabled_reason) = match &status {
            Status::Active => (None, None, None),
            Status::Cooling { until, reason } => (Some(rfc3339(*until)), reason.clone(), None),
            Status::Disabled { reason } => (None, None, reason.clone()),
        };
        Self {
            id: record.id.clone(),
            label: record.label.clone(),
            masked: record.key.masked(),
            status: status.name(),
            cooldown_until,
            cooldown_reason,
            disabled_reason,
            consecutive_failures: record.state.consecutive_failures,
            last_used: record.state.last_used.map(rfc3339),
            requests_total: record.state.requests_total,
            failures_total: record.state.failures_total,
            added_at: rfc3339(record.added_at),
            account: record.account().map(str::to_owned),
        }
    }
}
