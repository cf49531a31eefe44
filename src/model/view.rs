//! The public view of a key: what `keys list --json` prints and the admin API
//! returns. Never holds the full key.

use super::{Availability, FreeCounts, Hold, KeyRecord};
use crate::human::rfc3339;
use serde::Serialize;

/// Whether a key can serve `:free` models now, and if not until when and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct FreeModels {
    /// It can now.
    pub(crate) usable: bool,
    /// When it can again (RFC 3339 UTC); null when usable, or disabled.
    pub(crate) until: Option<String>,
    /// Why not: `cooldown`, `insufficient-credits`, `free-models-per-min`,
    /// `free-models-per-day` or `disabled`; null when usable.
    pub(crate) reason: Option<&'static str>,
}

/// One key as shown to users, at an instant (see [`Availability`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct KeyView {
    /// Short stable ID.
    pub(crate) id: String,
    /// The user's label.
    pub(crate) label: Option<String>,
    /// The key, masked.
    pub(crate) masked: String,
    /// `active`, `free_held`, `cooling` or `disabled`.
    pub(crate) status: &'static str,
    /// End of the hold the status shows (RFC 3339 UTC): the cooldown while
    /// cooling, the `:free` hold while free held.
    pub(crate) cooldown_until: Option<String>,
    /// Why it is cooling or free held.
    pub(crate) cooldown_reason: Option<String>,
    /// Why it is disabled.
    pub(crate) disabled_reason: Option<String>,
    /// Whether it can serve `:free` models now.
    pub(crate) free_models: FreeModels,
    /// `:free` requests its account sent today (UTC).
    pub(crate) free_requests_today: u32,
    /// Its account's daily `:free` limit; null while unknown.
    pub(crate) free_daily_limit: Option<u32>,
    /// `:free` requests its account sent in the last minute.
    pub(crate) free_requests_this_minute: u32,
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
    /// OpenRouter vouched for it (`GET /key` answered): false until a check
    /// succeeds.
    pub(crate) verified: bool,
}

impl KeyView {
    /// The view of `record`, which can do `availability` and whose account
    /// counts `free`.
    pub(crate) fn of(record: &KeyRecord, availability: &Availability, free: &FreeCounts) -> Self {
        let status = availability.status();
        let (cooldown_until, cooldown_reason, disabled_reason) = match availability.shown() {
            None => (None, None, None),
            Some(held) if held.hold == Hold::Disabled => (None, None, held.reason.clone()),
            Some(held) => (
                held.until.map(rfc3339),
                held.reason
                    .clone()
                    .or_else(|| Some(held.hold.name().to_owned())),
                None,
            ),
        };
        let free_models = match &availability.free {
            None => FreeModels {
                usable: true,
                until: None,
                reason: None,
            },
            Some(held) => FreeModels {
                usable: false,
                until: held.until.map(rfc3339),
                reason: Some(held.hold.name()),
            },
        };
        Self {
            id: record.id.clone(),
            label: record.label.clone(),
            masked: record.key.masked(),
            status: status.name(),
            cooldown_until,
            cooldown_reason,
            disabled_reason,
            free_models,
            free_requests_today: free.today,
            free_daily_limit: free.daily_limit,
            free_requests_this_minute: free.this_minute,
            consecutive_failures: record.state.consecutive_failures,
            last_used: record.state.last_used.map(rfc3339),
            requests_total: record.state.requests_total,
            failures_total: record.state.failures_total,
            added_at: rfc3339(record.added_at),
            account: record.account().map(str::to_owned),
            verified: record.info.is_some(),
        }
    }
}
