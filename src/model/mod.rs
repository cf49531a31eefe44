//! The persisted records: the store file, each key's record, state and
//! OpenRouter info, each account's free-model count, the daily usage
//! totals, and the one public view of a key and of usage. A leaf: the pool
//! decides on these types and the stores persist them, and neither needs
//! the other for it.

mod account;
mod availability;
mod record;
mod state;
mod usage;
mod view;

pub use account::AccountRecord;
pub(crate) use availability::{Availability, FreeCounts, Held, Hold, KeyStatus};
pub use record::{FreeModelDailyRequests, KeyInfo, KeyRecord, StoreFile};
pub(crate) use record::{STORE_VERSION, assign_id, quota_account};
pub use state::KeyState;
pub(crate) use usage::{
    KEEP_DAYS, MAX_MODELS, NO_MODEL, OTHER_MODELS, Since, UsageBy, UsageRow, first_kept_day,
};
pub use usage::{UsageBook, UsageDay, UsageTotals};
pub(crate) use view::KeyView;
