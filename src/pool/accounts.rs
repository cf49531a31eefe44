//! Changes to a store's accounts that keep their `:free` counts true, made
//! where OpenRouter's facts or the user's word arrive: `keys check`, `keys
//! add`, the admin API and the server's re-checks learn what `GET /key`
//! says ([`learn`]); `keys reactivate --forget-quota` forgets ([`forget`]).
//! Pure functions of a [`StoreFile`], on the same [`AccountUsage`] the
//! running pool counts with; the pool takes the result in at its next
//! merge ([`AccountUsage::merge_record`]).

use super::quota::AccountUsage;
use crate::model::{AccountRecord, KeyInfo, KeyState, StoreFile};
use chrono::{DateTime, Utc};

/// What learning about a key changed in its account's counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Learned {
    /// Where the key's `:free` requests are counted now.
    pub(crate) quota: String,
    /// Requests of today the key had counted on its own, now its
    /// account's (its account was unknown before).
    pub(crate) moved: u32,
    /// orproxy's count and OpenRouter's, when OpenRouter counted fewer:
    /// the count is now OpenRouter's.
    pub(crate) lowered: Option<(u32, u32)>,
}

/// A key parked for `:free` models by one of its account's caps is
/// parked no more. Returns whether it was.
pub(crate) fn clear_free_park(state: &mut KeyState) -> bool {
    let capped = state
        .free_cooldown_reason
        .as_deref()
        .is_some_and(|r| r.contains("per-day") || r.contains("per-min"));
    if capped {
        state.free_cooldown_until = None;
        state.free_cooldown_reason = None;
    }
    capped
}

/// The counts of `quota` in `file`.
fn usage_of(file: &StoreFile, quota: &str) -> AccountUsage {
    file.accounts
        .get(quota)
        .map(AccountUsage::from_record)
        .unwrap_or_default()
}

/// Store `usage` as `quota`'s record, keeping the fields this version does
/// not know.
fn put(file: &mut StoreFile, quota: &str, usage: &AccountUsage) {
    let mut record: AccountRecord = usage.to_record();
    if let Some(old) = file.accounts.get_mut(quota) {
        record.extra = std::mem::take(&mut old.extra);
    }
    file.accounts.insert(quota.to_owned(), record);
}

/// Lift the `:free` parks of every key counted under `quota`.
fn clear_parks(file: &mut StoreFile, quota: &str) {
    for record in &mut file.keys {
        if record.quota_account() == quota {
            clear_free_park(&mut record.state);
        }
    }
}

/// OpenRouter said `info` about key `id` (`GET /key`): record it in
/// `file`, keeping its account's counts true.
/// - A key whose account becomes known brings its `:free` counts of today
///   to the account: added, never dropped.
/// - OpenRouter's count of today's `:free` requests (as of the check)
///   becomes the account's, plus the requests sent since; when it is
///   lower than orproxy's, the account's `:free` parks are lifted too.
/// - The account's daily limit becomes the one OpenRouter reports, else
///   its tier's (free or not).
///
/// None when no key has that ID.
pub(crate) fn learn(
    file: &mut StoreFile,
    id: &str,
    info: KeyInfo,
    now: DateTime<Utc>,
) -> Option<Learned> {
    let record = file.keys.iter_mut().find(|r| r.id == id)?;
    let old = record.quota_account();
    record.info = Some(info.clone());
    let quota = record.quota_account();
    let mut usage = usage_of(file, &quota);
    let mut moved = 0;
    if old != quota
        && old.starts_with("key:")
        && let Some(own) = file.accounts.remove(&old)
    {
        let own = AccountUsage::from_record(&own);
        moved = own.today(now);
        usage.absorb(&own, now);
    }
    let counted = usage.today(now);
    let mut lowered = None;
    if let (Some(checked), Some(used)) = (
        info.checked_at
            .filter(|c| c.date_naive() == now.date_naive()),
        info.free_model_daily_requests
            .as_ref()
            .and_then(|f| f.used)
            .and_then(|u| u32::try_from(u).ok()),
    ) {
        usage.reset_count(used, checked, now);
        if used < counted {
            lowered = Some((counted, used));
        }
    }
    usage.adopt_info(&info, now);
    put(file, &quota, &usage);
    if lowered.is_some() {
        clear_parks(file, &quota);
    }
    Some(Learned {
        quota,
        moved,
        lowered,
    })
}

/// Forget today's `:free` counts of each of `quotas` (the user knows
/// better, e.g. after buying credits), and lift their keys' `:free` parks.
/// Returns each account with the count it had.
pub(crate) fn forget(
    file: &mut StoreFile,
    quotas: &[String],
    now: DateTime<Utc>,
) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for quota in quotas {
        if out.iter().any(|(q, _)| q == quota) {
            continue;
        }
        let mut usage = usage_of(file, quota);
        let had = usage.today(now);
        usage.forget(now);
        put(file, quota, &usage);
        clear_parks(file, quota);
        out.push((quota.clone(), had));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FreeModelDailyRequests, KeyRecord};
    use crate::pool::Pool;
    use chrono::TimeDelta;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn at(secs: i64) -> DateTime<Utc> {
        t0() + TimeDelta::seconds(secs)
    }

    fn rec(id: &str, account: Option<&str>) -> KeyRecord {
        KeyRecord {
            id: id.into(),
            key: crate::secret::ApiKey::parse(&format!("sk-or-v1-{id}")).unwrap(),
            label: None,
            added_at: t0(),
            generation: 0,
            state: KeyState::default(),
            info: account.map(|a| KeyInfo {
                creator_user_id: Some(a.into()),
                ..KeyInfo::default()
            }),
            extra: Default::default(),
        }
    }

    fn info(account: &str, checked: DateTime<Utc>, used: Option<u64>) -> KeyInfo {
        KeyInfo {
            checked_at: Some(checked),
            creator_user_id: Some(account.into()),
            is_free_tier: Some(true),
            free_model_daily_requests: used.map(|used| FreeModelDailyRequests {
                used: Some(used),
                limit: Some(50),
                remaining: Some(50u64.saturating_sub(used)),
                ..Default::default()
            }),
            ..KeyInfo::default()
        }
    }

    /// A store whose key `a` (account unknown) sent `own` free requests
    /// and whose key `b` (account `u1`) sent `account`.
    fn store(own: u32, account: u32) -> StoreFile {
        let mut file = StoreFile {
            keys: vec![rec("a", None), rec("b", Some("u1"))],
            ..StoreFile::default()
        };
        let mut pool = Pool::from_store(&file, t0());
        for i in 0..own {
            pool.choose_for(at(i64::from(i)), &["b".to_owned()], true);
        }
        for i in 0..account {
            pool.choose_for(at(i64::from(i)), &["a".to_owned()], true);
        }
        pool.reconcile(&mut file, at(30));
        file
    }

    fn today_of(file: &StoreFile, quota: &str, now: DateTime<Utc>) -> u32 {
        AccountUsage::from_record(&file.accounts[quota]).today(now)
    }

    #[test]
    fn a_key_whose_account_becomes_known_brings_its_count_to_it_added() {
        let mut file = store(4, 3);
        assert_eq!(today_of(&file, "key:a", at(30)), 4);
        assert_eq!(today_of(&file, "u1", at(30)), 3, "{:?}", file.accounts);
        let learned = learn(&mut file, "a", info("u1", at(31), None), at(32)).unwrap();
        assert_eq!(
            learned,
            Learned {
                quota: "u1".into(),
                moved: 4,
                lowered: None
            }
        );
        assert_eq!(today_of(&file, "u1", at(32)), 7, "4 + 3, not the larger");
        assert!(!file.accounts.contains_key("key:a"), "no count left behind");
        // The minute's requests moved too: the account's window holds all 7.
        assert_eq!(
            AccountUsage::from_record(&file.accounts["u1"]).this_minute(at(32)),
            7
        );
        // Learned again, nothing moves twice.
        let again = learn(&mut file, "a", info("u1", at(33), None), at(34)).unwrap();
        assert_eq!(again.moved, 0);
        assert_eq!(today_of(&file, "u1", at(34)), 7);
    }

    #[test]
    fn openrouter_s_count_replaces_ours_and_lower_lifts_the_parks() {
        let mut file = store(0, 12);
        file.keys[1].state.free_cooldown_until = Some(at(3600));
        file.keys[1].state.free_cooldown_reason = Some("free-models-per-day".into());
        let learned = learn(&mut file, "b", info("u1", at(40), Some(5)), at(41)).unwrap();
        assert_eq!(learned.lowered, Some((12, 5)));
        assert_eq!(today_of(&file, "u1", at(41)), 5);
        assert_eq!(file.keys[1].state.free_cooldown_until, None);
        assert_eq!(file.accounts["u1"].daily_limit, Some(50));
        // Higher: taken as it is, nothing lowered.
        let learned = learn(&mut file, "b", info("u1", at(50), Some(9)), at(51)).unwrap();
        assert_eq!((learned.lowered, today_of(&file, "u1", at(51))), (None, 9));
    }

    #[test]
    fn a_count_reported_after_some_of_our_requests_keeps_those_sent_since() {
        let mut file = store(0, 3);
        // OpenRouter counted 10 as of half a second in: the requests of
        // seconds 1 and 2 went out after.
        let checked = at(0) + TimeDelta::milliseconds(500);
        learn(&mut file, "b", info("u1", checked, Some(10)), at(40)).unwrap();
        assert_eq!(today_of(&file, "u1", at(40)), 12);
    }

    #[test]
    fn the_daily_limit_follows_the_tier_openrouter_reports() {
        let mut file = store(0, 1);
        learn(&mut file, "b", info("u1", at(40), None), at(41)).unwrap();
        assert_eq!(file.accounts["u1"].daily_limit, Some(50));
        let paid = KeyInfo {
            is_free_tier: Some(false),
            ..info("u1", at(50), None)
        };
        learn(&mut file, "b", paid, at(51)).unwrap();
        assert_eq!(file.accounts["u1"].daily_limit, Some(1000));
    }

    #[test]
    fn forgetting_zeroes_the_day_and_lifts_the_parks_and_the_pool_takes_it_in() {
        let mut file = store(0, 5);
        let mut pool = Pool::from_store(&file, at(30));
        file.keys[1].state.free_cooldown_until = Some(at(3600));
        file.keys[1].state.free_cooldown_reason = Some("free-models-per-min".into());
        assert_eq!(
            forget(&mut file, &["u1".into(), "u1".into()], at(40)),
            [("u1".to_owned(), 5)]
        );
        assert_eq!(today_of(&file, "u1", at(40)), 0);
        assert_eq!(file.keys[1].state.free_cooldown_until, None);
        // A running pool counted one more meanwhile (sent after the forget).
        pool.choose_for(at(41), &["a".to_owned()], true);
        pool.reconcile(&mut file, at(42));
        assert_eq!(
            today_of(&file, "u1", at(42)),
            1,
            "the forget, then ours since"
        );
    }
}
