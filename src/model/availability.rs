//! What a key can do at an instant: serve paid models now, serve `:free`
//! models now, and if not, until when and why. Computed by the pool
//! (`pool::availability`, the one place that decides it), never stored:
//! `keys list` (table, `--json`, `--watch`), the admin API, `/health`,
//! `/metrics` and the 429 a client gets all read it, so they agree.

use chrono::{DateTime, Utc};

/// Why a key cannot serve a kind of request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Hold {
    /// Out of rotation until reactivated (or re-checked).
    Disabled,
    /// The key's own cooldown: a 429 about the key, its spending limit.
    Cooldown,
    /// The account is out of credits (a 402): its keys cool for a while.
    Credits,
    /// The account sent its `:free` requests of the minute.
    MinuteCap,
    /// The account sent its `:free` requests of the day (until 00:00 UTC).
    DailyCap,
}

impl Hold {
    /// The stable name in JSON (`free_models.reason`): `disabled`,
    /// `cooldown`, `insufficient-credits`, `free-models-per-min`,
    /// `free-models-per-day` (OpenRouter's names of the account's caps).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Hold::Disabled => "disabled",
            Hold::Cooldown => "cooldown",
            Hold::Credits => "insufficient-credits",
            Hold::MinuteCap => "free-models-per-min",
            Hold::DailyCap => "free-models-per-day",
        }
    }
}

/// A kind of request a key cannot serve now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    /// Why.
    pub(crate) hold: Hold,
    /// When the key can serve it again; None while disabled.
    pub(crate) until: Option<DateTime<Utc>>,
    /// The recorded reason: OpenRouter's verdict (`rate-limited`...) or
    /// why the key was disabled.
    pub(crate) reason: Option<String>,
}

/// What a key can serve at an instant: `None` is "now".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Availability {
    /// Paid models (every request but `:free` ones).
    pub(crate) paid: Option<Held>,
    /// `:free` models.
    pub(crate) free: Option<Held>,
}

/// A key's status, from its [`Availability`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum KeyStatus {
    /// Serves every model now.
    Active,
    /// Serves paid models now; `:free` models are held.
    FreeHeld,
    /// Serves nothing until a cooldown ends.
    Cooling,
    /// Serves nothing until reactivated.
    Disabled,
}

impl KeyStatus {
    /// Every status, in the order views list them.
    pub(crate) const ALL: [KeyStatus; 4] = [
        KeyStatus::Active,
        KeyStatus::FreeHeld,
        KeyStatus::Cooling,
        KeyStatus::Disabled,
    ];

    /// The name in JSON and metrics: `active`, `free_held`, `cooling`,
    /// `disabled`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::FreeHeld => "free_held",
            KeyStatus::Cooling => "cooling",
            KeyStatus::Disabled => "disabled",
        }
    }

    /// The name in the `keys list` table (`free held`).
    pub(crate) fn label(self) -> &'static str {
        match self {
            KeyStatus::FreeHeld => "free held",
            other => other.name(),
        }
    }
}

impl Availability {
    /// The key's status.
    pub(crate) fn status(&self) -> KeyStatus {
        match (&self.paid, &self.free) {
            (Some(h), _) if h.hold == Hold::Disabled => KeyStatus::Disabled,
            (Some(_), _) => KeyStatus::Cooling,
            (None, Some(_)) => KeyStatus::FreeHeld,
            (None, None) => KeyStatus::Active,
        }
    }

    /// What the status shows: the paid hold when cooling or disabled, the
    /// `:free` hold when only that is held.
    pub(crate) fn shown(&self) -> Option<&Held> {
        self.paid.as_ref().or(self.free.as_ref())
    }
}

/// An account's `:free` requests at an instant (a key whose account is
/// unknown counts on its own).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct FreeCounts {
    /// Where they are counted: the account, or `key:<id>`.
    pub(crate) quota: String,
    /// Sent today (UTC).
    pub(crate) today: u32,
    /// The day's limit, when known (OpenRouter's figure, or its tier's).
    pub(crate) daily_limit: Option<u32>,
    /// Sent in the last minute.
    pub(crate) this_minute: u32,
    /// The per-minute limit in force.
    pub(crate) minute_limit: u32,
}
