//! Branch-by-branch tests of the pool: selection, reports, tick, reconcile.

use super::*;
use crate::model::KeyInfo;
use chrono::TimeDelta;

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn t(secs: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(secs)
}

fn rec(id: &str) -> KeyRecord {
    KeyRecord {
        id: id.to_owned(),
        key: ApiKey::parse(&format!("sk-or-v1-{id}")).unwrap(),
        label: None,
        added_at: t0(),
        generation: 0,
        state: KeyState::default(),
        info: None,
        extra: Default::default(),
    }
}

fn rec_in(id: &str, account: &str) -> KeyRecord {
    KeyRecord {
        info: Some(KeyInfo {
            creator_user_id: Some(account.to_owned()),
            ..KeyInfo::default()
        }),
        ..rec(id)
    }
}

fn pool_of(records: &[KeyRecord]) -> Pool {
    Pool::from_records(records, Settings::default())
}

fn pool(ids: &[&str]) -> Pool {
    let records: Vec<KeyRecord> = ids.iter().map(|id| rec(id)).collect();
    pool_of(&records)
}

fn file_of(records: Vec<KeyRecord>) -> StoreFile {
    StoreFile {
        keys: records,
        ..StoreFile::default()
    }
}

fn chosen(choice: Choice) -> String {
    match choice {
        Choice::Use { id, .. } => id,
        other => panic!("expected a key, got {other:?}"),
    }
}

fn pick(pool: &mut Pool, now: DateTime<Utc>) -> String {
    chosen(pool.choose(now, &[]))
}

fn pick_excluding(pool: &mut Pool, now: DateTime<Utc>, exclude: &[&str]) -> String {
    let exclude: Vec<String> = exclude.iter().map(|s| (*s).to_owned()).collect();
    chosen(pool.choose(now, &exclude))
}

fn ids(pool: &Pool) -> Vec<&str> {
    pool.keys().map(|k| k.id.as_str()).collect()
}

fn state(pool: &Pool, id: &str) -> KeyState {
    pool.get(id).unwrap().state.clone()
}

fn cooldown(until: DateTime<Utc>, reason: &str) -> Outcome {
    Outcome::Cooldown {
        until,
        reason: reason.to_owned(),
        account_wide: false,
        free_only: false,
    }
}

fn account_cooldown(until: DateTime<Utc>, reason: &str) -> Outcome {
    Outcome::Cooldown {
        until,
        reason: reason.to_owned(),
        account_wide: true,
        free_only: false,
    }
}

fn failure(reason: &str) -> Outcome {
    Outcome::Failed {
        fault: Fault::ServerError,
        reason: reason.to_owned(),
    }
}

fn no_answer(reason: &str) -> Outcome {
    Outcome::Failed {
        fault: Fault::Unreachable,
        reason: reason.to_owned(),
    }
}

fn disable_outcome(reason: &str) -> Outcome {
    Outcome::Disable {
        reason: reason.to_owned(),
        recoverable: false,
        rejected: false,
    }
}

fn rejected_outcome(reason: &str) -> Outcome {
    Outcome::Disable {
        reason: reason.to_owned(),
        recoverable: true,
        rejected: true,
    }
}

/// Key `id` fails, then `other` is answered normally at the next second:
/// the failure is counted against `id`. Returns the events of both.
fn fail_while_another_works(
    pool: &mut Pool,
    id: &str,
    other: &str,
    reason: &str,
    at: i64,
) -> Vec<Event> {
    let mut events = pool.report(id, failure(reason), t(at));
    events.extend(pool.report(other, Outcome::Success, t(at + 1)));
    events
}

fn set_state(pool: &mut Pool, id: &str, f: impl FnOnce(&mut KeyState)) {
    let idx = pool.index[id];
    f(&mut pool.keys[idx].state);
}

// ---------------------------------------------------------------- construction

#[test]
fn default_settings_disable_after_five_failures() {
    assert_eq!(Settings::default().max_failures, 5);
}

#[test]
fn new_pool_is_empty_and_clean() {
    let pool = Pool::new(Settings { max_failures: 3 });
    assert!(pool.is_empty());
    assert_eq!(pool.len(), 0);
    assert!(!pool.is_dirty());
    assert_eq!(pool.settings().max_failures, 3);
    assert_eq!(pool.counts(t0()), Counts::default());
}

#[test]
fn from_records_keeps_order_state_label_and_account() {
    let mut a = rec_in("a", "user_1");
    a.label = Some("main".into());
    a.generation = 4;
    a.state.requests_total = 12;
    let pool = pool_of(&[rec("c"), a, rec("b")]);
    assert_eq!(ids(&pool), ["c", "a", "b"]);
    assert_eq!(pool.len(), 3);
    assert!(!pool.is_dirty());
    let key = pool.get("a").unwrap();
    assert_eq!(key.label.as_deref(), Some("main"));
    assert_eq!(key.account.as_deref(), Some("user_1"));
    assert_eq!(key.generation, 4);
    assert_eq!(key.state.requests_total, 12);
    assert_eq!(key.key.expose(), "sk-or-v1-a");
    assert_eq!(pool.get("b").unwrap().account, None);
    assert!(pool.get("zzz").is_none());
}

#[test]
fn from_records_keeps_the_first_of_a_repeated_id() {
    let mut second = rec("a");
    second.label = Some("dup".into());
    let pool = pool_of(&[rec("a"), second, rec("b")]);
    assert_eq!(ids(&pool), ["a", "b"]);
    assert_eq!(pool.get("a").unwrap().label, None);
    assert_eq!(pool.get("b").unwrap().id, "b");
}

#[test]
fn event_id_names_the_key() {
    let events = [
        Event::CooldownStarted {
            id: "a".into(),
            until: t0(),
            reason: "r".into(),
        },
        Event::Disabled {
            id: "a".into(),
            reason: "r".into(),
        },
        Event::Recovered { id: "a".into() },
        Event::Added { id: "a".into() },
        Event::Removed { id: "a".into() },
        Event::Reactivated { id: "a".into() },
    ];
    assert!(events.iter().all(|e| e.id() == "a"));
}

// ---------------------------------------------------------------- choose

#[test]
fn choose_hands_out_the_key_secret() {
    let mut pool = pool(&["a"]);
    match pool.choose(t0(), &[]) {
        Choice::Use { id, key } => {
            assert_eq!(id, "a");
            assert_eq!(key.expose(), "sk-or-v1-a");
        }
        other => panic!("expected a key, got {other:?}"),
    }
}

#[test]
fn choose_prefers_a_never_used_key_over_a_used_one() {
    let mut pool = pool(&["a", "b", "c"]);
    set_state(&mut pool, "a", |s| s.last_used = Some(t(-100)));
    set_state(&mut pool, "b", |s| s.last_used = Some(t(-50)));
    assert_eq!(pick(&mut pool, t0()), "c");
}

#[test]
fn choose_takes_the_least_recently_used_key() {
    let mut pool = pool(&["a", "b", "c"]);
    set_state(&mut pool, "a", |s| s.last_used = Some(t(-10)));
    set_state(&mut pool, "b", |s| s.last_used = Some(t(-30)));
    set_state(&mut pool, "c", |s| s.last_used = Some(t(-20)));
    assert_eq!(pick(&mut pool, t0()), "b");
}

#[test]
fn choose_breaks_ties_by_store_order() {
    let mut pool = pool(&["b", "a", "c"]);
    assert_eq!(pick(&mut pool, t0()), "b");
    let mut pool = pool_of(&[rec("x"), rec("y")]);
    set_state(&mut pool, "x", |s| s.last_used = Some(t(-5)));
    set_state(&mut pool, "y", |s| s.last_used = Some(t(-5)));
    assert_eq!(pick(&mut pool, t0()), "x");
}

#[test]
fn choose_is_sticky_while_the_key_stays_usable() {
    let mut pool = pool(&["a", "b", "c"]);
    assert_eq!(pick(&mut pool, t(0)), "a");
    assert_eq!(pool.current(), Some("a"));
    // "b" and "c" are now less recently used, yet "a" is kept.
    assert_eq!(pick(&mut pool, t(1)), "a");
    assert_eq!(pick(&mut pool, t(2)), "a");
    assert_eq!(state(&pool, "a").last_used, Some(t(2)));
    assert_eq!(state(&pool, "b").last_used, None);
}

#[test]
fn choose_sets_last_used_and_marks_dirty() {
    let mut pool = pool(&["a"]);
    assert!(!pool.is_dirty());
    pick(&mut pool, t(7));
    assert_eq!(state(&pool, "a").last_used, Some(t(7)));
    assert!(pool.is_dirty());
}

#[test]
fn sticky_key_that_started_cooling_is_left_for_the_least_recently_used() {
    let mut pool = pool(&["a", "b", "c"]);
    assert_eq!(pick(&mut pool, t(0)), "a");
    // Parked behind the pool's back (e.g. by an account-wide cooldown of another key).
    set_state(&mut pool, "a", |s| s.cooldown_until = Some(t(60)));
    assert_eq!(pick(&mut pool, t(1)), "b");
    assert_eq!(pool.current(), Some("b"));
    assert_eq!(pick(&mut pool, t(2)), "b");
}

#[test]
fn sticky_key_that_was_removed_is_not_used() {
    let mut pool = pool(&["a", "b"]);
    assert_eq!(pick(&mut pool, t(0)), "a");
    let mut file = file_of(vec![rec("b")]);
    pool.reconcile(&mut file, t(1));
    assert_eq!(pick(&mut pool, t(2)), "b");
}

#[test]
fn excluded_sticky_key_is_skipped_and_the_pick_becomes_current() {
    let mut pool = pool(&["a", "b", "c"]);
    assert_eq!(pick(&mut pool, t(0)), "a");
    assert_eq!(pick_excluding(&mut pool, t(1), &["a"]), "b");
    assert_eq!(pool.current(), Some("b"));
    assert_eq!(pick(&mut pool, t(2)), "b");
}

#[test]
fn exclude_is_honoured_in_the_lru_search() {
    let mut pool = pool(&["a", "b", "c"]);
    assert_eq!(pick_excluding(&mut pool, t0(), &["a", "b"]), "c");
    assert_eq!(state(&pool, "a").last_used, None);
}

#[test]
fn exclude_falls_back_to_the_least_recently_used_usable_key() {
    let mut pool = pool(&["a", "b"]);
    set_state(&mut pool, "a", |s| s.last_used = Some(t(-1)));
    set_state(&mut pool, "b", |s| s.last_used = Some(t(-9)));
    assert_eq!(pick_excluding(&mut pool, t0(), &["a", "b"]), "b");
    assert_eq!(pool.current(), Some("b"));
    assert_eq!(state(&pool, "b").last_used, Some(t0()));
}

#[test]
fn exclude_fallback_never_returns_a_cooling_or_disabled_key() {
    let mut pool = pool(&["cool", "dead", "tried"]);
    set_state(&mut pool, "cool", |s| s.cooldown_until = Some(t(30)));
    set_state(&mut pool, "dead", |s| s.disabled = true);
    set_state(&mut pool, "tried", |s| s.last_used = Some(t(-1)));
    assert_eq!(pick_excluding(&mut pool, t0(), &["tried"]), "tried");
}

#[test]
fn exclude_of_an_unknown_id_is_harmless() {
    let mut pool = pool(&["a"]);
    assert_eq!(pick_excluding(&mut pool, t0(), &["nope"]), "a");
}

#[test]
fn cooling_and_disabled_keys_are_never_chosen() {
    let mut pool = pool(&["cool", "ok1", "dead", "ok2"]);
    set_state(&mut pool, "cool", |s| s.cooldown_until = Some(t(1000)));
    set_state(&mut pool, "dead", |s| s.disabled = true);
    for i in 0..20 {
        let id = pick_excluding(&mut pool, t(i), &["ok1"]);
        assert_eq!(id, "ok2");
        let id = pick_excluding(&mut pool, t(i), &["ok2"]);
        assert_eq!(id, "ok1");
    }
    assert_eq!(state(&pool, "cool").last_used, None);
    assert_eq!(state(&pool, "dead").last_used, None);
}

#[test]
fn a_cooldown_that_has_ended_is_usable_before_tick() {
    let mut pool = pool(&["a"]);
    set_state(&mut pool, "a", |s| s.cooldown_until = Some(t(10)));
    assert!(matches!(pool.choose(t(9), &[]), Choice::Unavailable { .. }));
    assert_eq!(pick(&mut pool, t(10)), "a");
}

#[test]
fn empty_pool_is_unavailable_with_no_soonest() {
    let mut pool = Pool::new(Settings::default());
    assert_eq!(
        pool.choose(t0(), &[]),
        Choice::Unavailable {
            soonest: None,
            holds: Holds::default()
        }
    );
    assert!(!pool.is_dirty());
}

#[test]
fn unavailable_reports_the_earliest_cooldown_end_and_counts() {
    let mut pool = pool(&["a", "b", "c", "d"]);
    set_state(&mut pool, "a", |s| s.cooldown_until = Some(t(90)));
    set_state(&mut pool, "b", |s| s.cooldown_until = Some(t(30)));
    set_state(&mut pool, "c", |s| {
        s.disabled = true;
        // A disabled key's cooldown does not bring anything back sooner.
        s.cooldown_until = Some(t(5));
    });
    set_state(&mut pool, "d", |s| s.cooldown_until = Some(t(60)));
    assert_eq!(
        pool.choose(t0(), &[]),
        Choice::Unavailable {
            soonest: Some(t(30)),
            holds: Holds {
                cooldown: 3,
                disabled: 1,
                ..Holds::default()
            }
        }
    );
    assert!(!pool.is_dirty());
}

#[test]
fn all_disabled_is_unavailable_with_no_soonest() {
    let mut pool = pool(&["a", "b"]);
    set_state(&mut pool, "a", |s| s.disabled = true);
    set_state(&mut pool, "b", |s| s.disabled = true);
    assert_eq!(
        pool.choose(t0(), &["a".to_owned()]),
        Choice::Unavailable {
            soonest: None,
            holds: Holds {
                disabled: 2,
                ..Holds::default()
            }
        }
    );
}

#[test]
fn counts_follow_key_status() {
    let mut pool = pool(&["a", "b", "c", "d", "e"]);
    set_state(&mut pool, "b", |s| s.cooldown_until = Some(t(10)));
    set_state(&mut pool, "c", |s| s.cooldown_until = Some(t(-10)));
    set_state(&mut pool, "d", |s| s.disabled = true);
    set_state(&mut pool, "e", |s| {
        s.disabled = true;
        s.cooldown_until = Some(t(10));
    });
    let counts = pool.counts(t0());
    assert_eq!(
        counts,
        Counts {
            active: 2,
            free_held: 0,
            cooling: 1,
            disabled: 2
        }
    );
    // Agrees with the availability model for every key.
    let by_status = |name: &str| {
        pool.keys()
            .filter(|k| pool.judged(k, t0()).status().name() == name)
            .count()
    };
    assert_eq!(counts.active, by_status("active"));
    assert_eq!(counts.cooling, by_status("cooling"));
    assert_eq!(counts.disabled, by_status("disabled"));
    // Later, the cooldown has ended.
    assert_eq!(pool.counts(t(10)).active, 3);
}

#[test]
fn ten_thousand_keys_rotate_and_stick() {
    let records: Vec<KeyRecord> = (0..10_000).map(|i| rec(&format!("k{i:05}"))).collect();
    let mut pool = pool_of(&records);
    assert_eq!(pool.len(), 10_000);
    assert_eq!(pick(&mut pool, t(0)), "k00000");
    assert_eq!(pick(&mut pool, t(1)), "k00000");
    for i in 0..200 {
        let id = pick(&mut pool, t(2 + i));
        pool.report(&id, cooldown(t(100_000), "per-min"), t(2 + i));
    }
    // 200 rotations walked through the never-used keys in store order.
    assert_eq!(pick(&mut pool, t(500)), "k00200");
    assert_eq!(pool.counts(t(500)).cooling, 200);
    assert_eq!(pick_excluding(&mut pool, t(501), &["k00200"]), "k00201");
}

// ---------------------------------------------------------------- report

#[test]
fn report_on_an_unknown_id_does_nothing() {
    let mut pool = pool(&["a"]);
    let before: Vec<PoolKey> = pool.keys().cloned().collect();
    for outcome in [
        Outcome::Success,
        failure("500"),
        disable_outcome("401"),
        account_cooldown(t(60), "x"),
    ] {
        assert!(pool.report("gone", outcome, t0()).is_empty());
    }
    assert_eq!(pool.keys().cloned().collect::<Vec<_>>(), before);
    assert!(!pool.is_dirty());
}

#[test]
fn success_resets_the_failure_streak_and_counts_the_request() {
    let mut pool = pool(&["a"]);
    set_state(&mut pool, "a", |s| {
        s.consecutive_failures = 3;
        s.failures_total = 3;
        s.requests_total = 10;
    });
    let events = pool.report("a", Outcome::Success, t0());
    assert!(events.is_empty());
    let s = state(&pool, "a");
    assert_eq!(s.consecutive_failures, 0);
    assert_eq!(s.requests_total, 11);
    assert_eq!(s.failures_total, 3);
    assert!(pool.is_dirty());
}

#[test]
fn success_keeps_the_key_sticky() {
    let mut pool = pool(&["a", "b"]);
    assert_eq!(pick(&mut pool, t(0)), "a");
    pool.report("a", Outcome::Success, t(0));
    assert_eq!(pick(&mut pool, t(1)), "a");
}

#[test]
fn cooldown_parks_the_key_and_the_next_choice_rotates() {
    let mut pool = pool(&["a", "b"]);
    assert_eq!(pick(&mut pool, t(0)), "a");
    pool.mark_clean();
    let events = pool.report("a", cooldown(t(60), "free-models-per-min"), t(0));
    assert_eq!(
        events,
        [Event::CooldownStarted {
            id: "a".into(),
            until: t(60),
            reason: "free-models-per-min".into()
        }]
    );
    let s = state(&pool, "a");
    assert_eq!(s.cooldown_until, Some(t(60)));
    assert_eq!(s.cooldown_reason.as_deref(), Some("free-models-per-min"));
    assert!(pool.is_dirty());
    assert_eq!(pool.current(), None);
    assert_eq!(pick(&mut pool, t(1)), "b");
}

#[test]
fn cooldown_is_not_a_failure() {
    let mut pool = pool(&["a"]);
    set_state(&mut pool, "a", |s| s.consecutive_failures = 2);
    pool.report("a", cooldown(t(60), "x"), t0());
    let s = state(&pool, "a");
    assert_eq!(s.consecutive_failures, 2);
    assert_eq!(s.failures_total, 0);
    assert!(!s.disabled);
}

#[test]
fn cooldown_extends_to_a_later_end_with_the_new_reason() {
    let mut pool = pool(&["a"]);
    pool.report("a", cooldown(t(60), "per-min"), t0());
    let events = pool.report("a", cooldown(t(3600), "per-day"), t(1));
    assert_eq!(
        events,
        [Event::CooldownStarted {
            id: "a".into(),
            until: t(3600),
            reason: "per-day".into()
        }]
    );
    let s = state(&pool, "a");
    assert_eq!(s.cooldown_until, Some(t(3600)));
    assert_eq!(s.cooldown_reason.as_deref(), Some("per-day"));
}

#[test]
fn cooldown_never_shortens_and_keeps_its_reason() {
    let mut pool = pool(&["a"]);
    pool.report("a", cooldown(t(3600), "per-day"), t0());
    pool.mark_clean();
    for until in [t(60), t(3600)] {
        let events = pool.report("a", cooldown(until, "per-min"), t(1));
        assert!(events.is_empty());
    }
    let s = state(&pool, "a");
    assert_eq!(s.cooldown_until, Some(t(3600)));
    assert_eq!(s.cooldown_reason.as_deref(), Some("per-day"));
    assert!(!pool.is_dirty());
}

#[test]
fn cooldown_replaces_an_ended_one() {
    let mut pool = pool(&["a"]);
    set_state(&mut pool, "a", |s| {
        s.cooldown_until = Some(t(-5));
        s.cooldown_reason = Some("old".into());
    });
    let events = pool.report("a", cooldown(t(5), "new"), t0());
    assert_eq!(events.len(), 1);
    assert_eq!(state(&pool, "a").cooldown_until, Some(t(5)));
}

#[test]
fn cooldown_ending_already_parks_nothing_but_still_rotates() {
    let mut pool = pool(&["a", "b"]);
    assert_eq!(pick(&mut pool, t(0)), "a");
    pool.mark_clean();
    assert!(pool.report("a", cooldown(t(0), "x"), t(0)).is_empty());
    assert_eq!(state(&pool, "a").cooldown_until, None);
    assert!(!pool.is_dirty());
    assert_eq!(pick(&mut pool, t(0)), "b");
}

#[test]
fn cooldown_of_a_disabled_key_changes_nothing() {
    let mut pool = pool(&["a"]);
    set_state(&mut pool, "a", |s| s.disabled = true);
    assert!(pool.report("a", cooldown(t(60), "x"), t0()).is_empty());
    assert_eq!(state(&pool, "a").cooldown_until, None);
}

#[test]
fn account_wide_cooldown_parks_only_keys_of_the_same_account() {
    let mut pool = pool_of(&[
        rec_in("a1", "alice"),
        rec_in("b1", "bob"),
        rec("none"),
        rec_in("a2", "alice"),
    ]);
    let events = pool.report("a2", account_cooldown(t(60), "account"), t0());
    let parked: Vec<&str> = events.iter().map(Event::id).collect();
    assert_eq!(parked, ["a1", "a2"]);
    assert_eq!(state(&pool, "a1").cooldown_until, Some(t(60)));
    assert_eq!(state(&pool, "a2").cooldown_until, Some(t(60)));
    assert_eq!(state(&pool, "b1").cooldown_until, None);
    assert_eq!(state(&pool, "none").cooldown_until, None);
    assert_eq!(pool.counts(t0()).active, 2);
}

#[test]
fn account_wide_cooldown_without_a_known_account_parks_only_that_key() {
    let mut pool = pool_of(&[rec("x"), rec("y"), rec_in("a", "alice")]);
    let events = pool.report("x", account_cooldown(t(60), "account"), t0());
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id(), "x");
    assert_eq!(state(&pool, "y").cooldown_until, None);
    assert_eq!(state(&pool, "a").cooldown_until, None);
}

#[test]
fn account_wide_cooldown_reports_only_keys_actually_parked() {
    let mut pool = pool_of(&[
        rec_in("a1", "alice"),
        rec_in("a2", "alice"),
        rec_in("a3", "alice"),
    ]);
    set_state(&mut pool, "a1", |s| {
        s.cooldown_until = Some(t(999));
        s.cooldown_reason = Some("per-day".into());
    });
    set_state(&mut pool, "a3", |s| s.disabled = true);
    let events = pool.report("a1", account_cooldown(t(60), "account"), t0());
    let parked: Vec<&str> = events.iter().map(Event::id).collect();
    assert_eq!(parked, ["a2"]);
    assert_eq!(state(&pool, "a1").cooldown_until, Some(t(999)));
    assert_eq!(
        state(&pool, "a1").cooldown_reason.as_deref(),
        Some("per-day")
    );
    assert_eq!(state(&pool, "a3").cooldown_until, None);
}

#[test]
fn failures_count_while_another_key_works_then_disable_at_max_with_reason() {
    let mut pool = Pool::from_records(&[rec("a"), rec("b")], Settings { max_failures: 3 });
    let events = fail_while_another_works(&mut pool, "a", "b", "502", 0);
    assert_eq!(
        events,
        [Event::Blamed {
            id: "a".into(),
            reason: "502".into(),
            streak: 1
        }]
    );
    fail_while_another_works(&mut pool, "a", "b", "timeout", 2);
    let s = state(&pool, "a");
    assert_eq!(s.consecutive_failures, 2);
    assert_eq!(s.failures_total, 2);
    assert!(!s.disabled);
    let events = fail_while_another_works(&mut pool, "a", "b", "connection reset", 4);
    let reason = "3 consecutive failures (last: connection reset)";
    assert_eq!(
        events[1..],
        [Event::Disabled {
            id: "a".into(),
            reason: reason.into()
        }]
    );
    let s = state(&pool, "a");
    assert!(s.disabled);
    assert!(s.auto_recover, "re-checked");
    assert_eq!(s.disabled_reason.as_deref(), Some(reason));
    assert_eq!(s.failures_total, 3);
    assert_eq!(state(&pool, "b").consecutive_failures, 0);
}

#[test]
fn default_settings_disable_on_the_fifth_failure_counted() {
    let mut pool = pool(&["a", "b"]);
    for i in 0..4 {
        fail_while_another_works(&mut pool, "a", "b", "500", i * 2);
    }
    assert!(!state(&pool, "a").disabled);
    fail_while_another_works(&mut pool, "a", "b", "500", 10);
    assert!(state(&pool, "a").disabled);
}

#[test]
fn a_single_keys_failures_disable_nothing() {
    let mut pool = Pool::from_records(&[rec("a")], Settings { max_failures: 2 });
    for i in 0..10 {
        assert!(pool.report("a", failure("HTTP 500"), t(i)).is_empty());
    }
    let s = state(&pool, "a");
    assert!(!s.disabled);
    assert_eq!((s.consecutive_failures, s.failures_total), (0, 0));
}

#[test]
fn the_same_failure_on_two_keys_blames_neither_and_the_upstream_is_down() {
    let mut pool = Pool::from_records(
        &[rec("a"), rec("b"), rec("c")],
        Settings { max_failures: 1 },
    );
    assert!(pool.report("a", failure("HTTP 502"), t(0)).is_empty());
    let events = pool.report("b", failure("HTTP 502"), t(1));
    assert!(
        matches!(
            events.as_slice(),
            [Event::Upstream(upstream::Change::Down(upstream::Outage {
                fault: Fault::ServerError,
                ..
            }))]
        ),
        "{events:?}"
    );
    assert!(pool.outage().is_some());
    // c's success ends the outage and blames nobody: a's suspect is gone.
    let events = pool.report("c", Outcome::Success, t(2));
    assert_eq!(
        events,
        [Event::Upstream(upstream::Change::Up { since: t(1) })]
    );
    for id in ["a", "b", "c"] {
        assert!(!state(&pool, id).disabled, "{id}");
        assert_eq!(state(&pool, id).failures_total, 0, "{id}");
    }
}

#[test]
fn a_different_kind_of_failure_on_another_key_is_not_an_outage() {
    let mut pool = pool(&["a", "b", "c"]);
    pool.report("a", failure("HTTP 500"), t(0));
    let broken = Outcome::Failed {
        fault: Fault::Broken,
        reason: "cut".into(),
    };
    assert!(pool.report("b", broken, t(1)).is_empty());
    assert!(pool.outage().is_none());
    let events = pool.report("c", Outcome::Success, t(2));
    assert_eq!(events.len(), 2, "both suspects counted: {events:?}");
}

#[test]
fn failures_without_an_answer_are_never_the_keys_and_two_in_a_row_are_an_outage() {
    let mut pool = Pool::from_records(&[rec("a")], Settings { max_failures: 1 });
    assert!(
        pool.report("a", no_answer("connection refused"), t(0))
            .is_empty()
    );
    assert!(pool.outage().is_none(), "one could be a stale connection");
    let events = pool.report("a", no_answer("connection refused"), t(1));
    assert!(matches!(
        events.as_slice(),
        [Event::Upstream(upstream::Change::Down(_))]
    ));
    pool.report("a", no_answer("dns"), t(2));
    let s = state(&pool, "a");
    assert!(!s.disabled);
    assert_eq!((s.consecutive_failures, s.failures_total), (0, 0));
    // The key stays usable: the outage is the server's business.
    assert_eq!(pick(&mut pool, t(3)), "a");
}

#[test]
fn a_down_upstream_is_checked_and_comes_back_when_it_answers() {
    let mut pool = pool(&["a"]);
    pool.report("a", no_answer("refused"), t(0));
    pool.report("a", no_answer("refused"), t(1));
    assert!(!pool.upstream_check_due(t(2)), "just went down");
    assert!(pool.upstream_check_due(t(3)));
    assert!(pool.upstream_checked(false).is_empty());
    assert!(pool.outage().is_some());
    assert!(pool.upstream_check_due(t(5)));
    assert_eq!(
        pool.upstream_checked(true),
        [Event::Upstream(upstream::Change::Up { since: t(1) })]
    );
    assert!(pool.outage().is_none());
}

#[test]
fn a_suspect_failure_is_forgotten_when_no_other_key_works_in_time() {
    let mut pool = pool(&["a", "b"]);
    pool.report("a", failure("HTTP 500"), t(0));
    let events = pool.report("b", Outcome::Success, t(11 * 60));
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(state(&pool, "a").consecutive_failures, 0);
}

#[test]
fn a_failure_rotates_away_from_the_key() {
    let mut pool = pool(&["a", "b"]);
    assert_eq!(pick(&mut pool, t(0)), "a");
    pool.report("a", failure("503"), t(0));
    assert_eq!(pool.current(), None);
    assert_eq!(pick(&mut pool, t(1)), "b");
}

#[test]
fn a_success_of_the_key_itself_clears_its_suspect_failure() {
    let mut pool = Pool::from_records(&[rec("a"), rec("b")], Settings { max_failures: 2 });
    pool.report("a", failure("500"), t(0));
    pool.report("a", Outcome::Success, t(1));
    assert!(pool.report("b", Outcome::Success, t(2)).is_empty());
    assert_eq!(state(&pool, "a").failures_total, 0);
}

#[test]
fn failure_of_an_already_disabled_key_keeps_the_first_reason() {
    let mut pool = Pool::from_records(&[rec("a"), rec("b")], Settings { max_failures: 1 });
    pool.report("a", disable_outcome("401 invalid key"), t(0));
    assert!(fail_while_another_works(&mut pool, "a", "b", "500", 1).is_empty());
    let s = state(&pool, "a");
    assert_eq!(s.disabled_reason.as_deref(), Some("401 invalid key"));
    assert_eq!(s.failures_total, 0);
}

#[test]
fn disable_takes_the_key_out_at_once() {
    let mut pool = pool(&["a", "b"]);
    assert_eq!(pick(&mut pool, t(0)), "a");
    pool.mark_clean();
    let events = pool.report("a", disable_outcome("401 unauthorized"), t(0));
    assert_eq!(
        events,
        [Event::Disabled {
            id: "a".into(),
            reason: "401 unauthorized".into()
        }]
    );
    let s = state(&pool, "a");
    assert!(s.disabled);
    assert_eq!(s.disabled_reason.as_deref(), Some("401 unauthorized"));
    assert!(pool.is_dirty());
    assert_eq!(pick(&mut pool, t(1)), "b");
    assert_eq!(pick_excluding(&mut pool, t(2), &["b"]), "b");
}

#[test]
fn disabling_twice_keeps_the_first_reason_and_reports_nothing() {
    let mut pool = pool(&["a"]);
    pool.report("a", disable_outcome("401"), t(0));
    pool.mark_clean();
    assert!(pool.report("a", disable_outcome("403"), t(1)).is_empty());
    assert_eq!(state(&pool, "a").disabled_reason.as_deref(), Some("401"));
    assert!(!pool.is_dirty());
}

#[test]
fn neutral_changes_nothing() {
    let mut pool = pool(&["a", "b"]);
    assert_eq!(pick(&mut pool, t(0)), "a");
    pool.mark_clean();
    let before: Vec<PoolKey> = pool.keys().cloned().collect();
    assert!(pool.report("a", Outcome::Neutral, t(1)).is_empty());
    assert_eq!(pool.keys().cloned().collect::<Vec<_>>(), before);
    assert!(!pool.is_dirty());
    assert_eq!(pool.current(), Some("a"));
}

#[test]
fn report_about_another_key_keeps_the_current_one() {
    let mut pool = pool(&["a", "b", "c"]);
    assert_eq!(pick(&mut pool, t(0)), "a");
    pool.report("b", failure("500"), t(0));
    pool.report("c", cooldown(t(60), "x"), t(0));
    assert_eq!(pool.current(), Some("a"));
    assert_eq!(pick(&mut pool, t(1)), "a");
}

// ---------------------------------------------------------------- tick

#[test]
fn tick_recovers_only_ended_cooldowns() {
    let mut pool = pool(&["ended", "exact", "later", "never"]);
    set_state(&mut pool, "ended", |s| {
        s.cooldown_until = Some(t(-1));
        s.cooldown_reason = Some("x".into());
    });
    set_state(&mut pool, "exact", |s| {
        s.cooldown_until = Some(t(0));
        s.cooldown_reason = Some("y".into());
    });
    set_state(&mut pool, "later", |s| {
        s.cooldown_until = Some(t(1));
        s.cooldown_reason = Some("z".into());
    });
    let events = pool.tick(t0());
    assert_eq!(
        events,
        [
            Event::Recovered { id: "ended".into() },
            Event::Recovered { id: "exact".into() }
        ]
    );
    for id in ["ended", "exact"] {
        assert_eq!(state(&pool, id).cooldown_until, None);
        assert_eq!(state(&pool, id).cooldown_reason, None);
    }
    assert_eq!(state(&pool, "later").cooldown_until, Some(t(1)));
    assert_eq!(state(&pool, "later").cooldown_reason.as_deref(), Some("z"));
    assert!(pool.is_dirty());
}

#[test]
fn tick_with_nothing_ended_changes_nothing() {
    let mut pool = pool(&["a", "b"]);
    set_state(&mut pool, "a", |s| s.cooldown_until = Some(t(10)));
    assert!(pool.tick(t0()).is_empty());
    assert!(!pool.is_dirty());
}

#[test]
fn tick_clears_a_disabled_keys_old_cooldown_without_recovering_it() {
    let mut pool = pool(&["a"]);
    set_state(&mut pool, "a", |s| {
        s.disabled = true;
        s.cooldown_until = Some(t(-1));
    });
    assert!(pool.tick(t0()).is_empty());
    let s = state(&pool, "a");
    assert_eq!(s.cooldown_until, None);
    assert!(s.disabled);
    assert!(pool.is_dirty());
}

// ---------------------------------------------------------------- reconcile

#[test]
fn reconcile_adds_keys_only_in_the_file_with_their_state() {
    let mut pool = pool(&["a"]);
    let mut new = rec("n");
    new.state.requests_total = 5;
    new.state.cooldown_until = Some(t(30));
    let mut file = file_of(vec![rec("a"), new]);
    let events = pool.reconcile(&mut file, t0());
    assert_eq!(events, [Event::Added { id: "n".into() }]);
    assert_eq!(ids(&pool), ["a", "n"]);
    assert_eq!(state(&pool, "n").requests_total, 5);
    assert_eq!(state(&pool, "n").cooldown_until, Some(t(30)));
}

#[test]
fn reconcile_removes_keys_gone_from_the_file() {
    let mut pool = pool(&["a", "b", "c"]);
    assert_eq!(pick(&mut pool, t(0)), "a");
    let mut file = file_of(vec![rec("b")]);
    let events = pool.reconcile(&mut file, t0());
    assert_eq!(
        events,
        [
            Event::Removed { id: "a".into() },
            Event::Removed { id: "c".into() }
        ]
    );
    assert_eq!(ids(&pool), ["b"]);
    assert!(pool.get("a").is_none());
    assert_eq!(pool.current(), None);
    assert!(pool.report("a", failure("500"), t(1)).is_empty());
}

#[test]
fn reconcile_keeps_the_current_key_when_it_stays() {
    let mut pool = pool(&["a", "b"]);
    assert_eq!(pick(&mut pool, t(0)), "a");
    let mut file = file_of(vec![rec("b"), rec("a")]);
    pool.reconcile(&mut file, t(1));
    assert_eq!(pool.current(), Some("a"));
    assert_eq!(pick(&mut pool, t(2)), "a");
}

#[test]
fn reconcile_keeps_the_pools_state_at_equal_generation() {
    let mut pool = pool(&["a"]);
    pool.report("a", disable_outcome("401"), t0());
    // The file still has the state from before the 401.
    let mut file = file_of(vec![rec("a")]);
    assert!(pool.reconcile(&mut file, t0()).is_empty());
    assert!(state(&pool, "a").disabled);
    assert!(file.keys[0].state.disabled);
}

#[test]
fn reconcile_adopts_an_admin_reset_by_generation() {
    let mut pool = pool(&["a", "b"]);
    set_state(&mut pool, "a", |s| {
        s.disabled = true;
        s.disabled_reason = Some("401".into());
        s.cooldown_until = Some(t(600));
        s.cooldown_reason = Some("x".into());
        s.consecutive_failures = 5;
        s.failures_total = 9;
        s.requests_total = 40;
        s.last_used = Some(t(-3));
    });
    let mut reset = rec("a");
    reset.generation = 1;
    let mut file = file_of(vec![reset, rec("b")]);
    let events = pool.reconcile(&mut file, t0());
    assert_eq!(events, [Event::Reactivated { id: "a".into() }]);
    let key = pool.get("a").unwrap();
    assert_eq!(key.generation, 1);
    assert_eq!(
        key.state,
        KeyState {
            last_used: Some(t(-3)),
            failures_total: 9,
            requests_total: 40,
            ..KeyState::default()
        }
    );
    assert_eq!(file.keys[0].state, key.state);
    assert_eq!(pick(&mut pool, t0()), "b");
    assert_eq!(pick_excluding(&mut pool, t0(), &["b"]), "a");
    // The same generation again is not a new reset.
    pool.report("a", disable_outcome("401"), t(1));
    assert!(pool.reconcile(&mut file, t(2)).is_empty());
    assert!(state(&pool, "a").disabled);
}

#[test]
fn reconcile_takes_a_lower_generation_without_resetting() {
    let mut rec_a = rec("a");
    rec_a.generation = 3;
    let mut pool = pool_of(&[rec_a]);
    set_state(&mut pool, "a", |s| s.disabled = true);
    let mut file = file_of(vec![rec("a")]);
    assert!(pool.reconcile(&mut file, t0()).is_empty());
    assert_eq!(pool.get("a").unwrap().generation, 0);
    assert!(state(&pool, "a").disabled);
}

#[test]
fn reconcile_takes_key_label_and_account_from_the_file() {
    let mut pool = pool(&["a"]);
    let mut changed = rec_in("a", "alice");
    changed.label = Some("renamed".into());
    changed.key = ApiKey::parse("sk-or-v1-rotated").unwrap();
    let mut file = file_of(vec![changed]);
    assert!(pool.reconcile(&mut file, t0()).is_empty());
    let key = pool.get("a").unwrap();
    assert_eq!(key.label.as_deref(), Some("renamed"));
    assert_eq!(key.account.as_deref(), Some("alice"));
    assert_eq!(key.key.expose(), "sk-or-v1-rotated");
    // And back to no label, no account.
    let mut file = file_of(vec![rec("a")]);
    pool.reconcile(&mut file, t0());
    assert_eq!(pool.get("a").unwrap().label, None);
    assert_eq!(pool.get("a").unwrap().account, None);
}

#[test]
fn reconcile_writes_the_pools_state_into_the_file() {
    let mut pool = pool(&["a", "b"]);
    pick(&mut pool, t(1));
    pool.report("a", Outcome::Success, t(1));
    pool.report("b", cooldown(t(60), "per-min"), t(1));
    let mut file = file_of(vec![rec("a"), rec("b")]);
    pool.reconcile(&mut file, t(2));
    assert_eq!(file.keys[0].state, state(&pool, "a"));
    assert_eq!(file.keys[0].state.requests_total, 1);
    assert_eq!(file.keys[0].state.last_used, Some(t(1)));
    assert_eq!(file.keys[1].state.cooldown_until, Some(t(60)));
    assert_eq!(
        file.keys[1].state.cooldown_reason.as_deref(),
        Some("per-min")
    );
}

#[test]
fn reconcile_leaves_the_files_own_fields_alone() {
    let mut pool = pool(&["a"]);
    pool.report("a", Outcome::Success, t0());
    let mut record = rec_in("a", "alice");
    record.label = Some("l".into());
    record.generation = 2;
    let mut expected = record.clone();
    let mut file = file_of(vec![record]);
    pool.reconcile(&mut file, t0());
    expected.state = state(&pool, "a");
    assert_eq!(file.keys, [expected]);
}

#[test]
fn reconcile_follows_the_files_order_and_rebuilds_the_index() {
    let mut pool = pool(&["a", "b", "c"]);
    let mut file = file_of(vec![rec("c"), rec("d"), rec("a"), rec("b")]);
    pool.reconcile(&mut file, t0());
    assert_eq!(ids(&pool), ["c", "d", "a", "b"]);
    for id in ["a", "b", "c", "d"] {
        assert_eq!(pool.get(id).unwrap().id, id);
    }
    pool.report("b", disable_outcome("401"), t0());
    assert!(state(&pool, "b").disabled);
    assert!(!state(&pool, "d").disabled);
    // Store order now decides LRU ties.
    assert_eq!(pick(&mut pool, t0()), "c");
}

#[test]
fn reconcile_handles_a_repeated_id_in_the_file() {
    let mut pool = pool(&["a"]);
    pool.report("a", Outcome::Success, t0());
    let mut file = file_of(vec![rec("a"), rec("a")]);
    assert!(pool.reconcile(&mut file, t0()).is_empty());
    assert_eq!(pool.len(), 1);
    assert_eq!(file.keys[1].state.requests_total, 1);
}

#[test]
fn reconcile_of_an_empty_file_empties_the_pool() {
    let mut pool = pool(&["a"]);
    let mut file = StoreFile::default();
    assert_eq!(
        pool.reconcile(&mut file, t0()),
        [Event::Removed { id: "a".into() }]
    );
    assert!(pool.is_empty());
    assert!(file.keys.is_empty());
}

// ---------------------------------------------------------------- dirty flag

#[test]
fn dirty_flag_tracks_unsaved_changes() {
    let mut pool = pool(&["a"]);
    assert!(!pool.is_dirty());
    pick(&mut pool, t0());
    assert!(pool.is_dirty());
    pool.mark_clean();
    assert!(!pool.is_dirty());
    pool.report("a", Outcome::Success, t0());
    assert!(pool.is_dirty());
    let mut file = file_of(vec![rec("a"), rec("b")]);
    pool.reconcile(&mut file, t0());
    assert!(!pool.is_dirty());
}

// ---------------------------------------------------------- free models, quotas

fn free_cooldown(until: DateTime<Utc>, reason: &str, account_wide: bool) -> Outcome {
    Outcome::Cooldown {
        until,
        reason: reason.to_owned(),
        account_wide,
        free_only: true,
    }
}

fn pick_free(pool: &mut Pool, now: DateTime<Utc>) -> String {
    chosen(pool.choose_for(now, &[], true))
}

#[test]
fn a_free_only_cooldown_blocks_free_requests_but_not_paid_ones() {
    let mut pool = pool(&["a", "b"]);
    pool.report(
        "a",
        free_cooldown(t(3600), "free-models-per-day", false),
        t0(),
    );
    assert_eq!(pick_free(&mut pool, t(1)), "b");
    // The same key still serves paid models.
    assert_eq!(pick_excluding(&mut pool, t(2), &["b"]), "a");
    let a = pool.get("a").unwrap();
    assert_eq!(pool.judged(a, t(2)).status().name(), "free_held");
}

#[test]
fn account_wide_free_cooldown_parks_only_that_accounts_keys_for_free_models() {
    let mut pool = pool_of(&[
        rec_in("a", "acc1"),
        rec_in("b", "acc1"),
        rec_in("c", "acc2"),
    ]);
    let events = pool.report("a", free_cooldown(t(60), "free-models-per-min", true), t0());
    assert_eq!(events.len(), 2);
    assert_eq!(pick_free(&mut pool, t(1)), "c");
    assert!(state(&pool, "b").free_cooldown_until.is_some());
    assert_eq!(state(&pool, "c").free_cooldown_until, None);
}

#[test]
fn free_requests_count_per_account_and_skip_keys_at_the_minute_cap() {
    let mut pool = pool_of(&[
        rec_in("a", "acc1"),
        rec_in("b", "acc1"),
        rec_in("c", "acc2"),
    ]);
    pool.note_cap("a", CapKind::PerMinute, Some(2), false, t0());
    assert_eq!(pick_free(&mut pool, t(0)), "a");
    assert_eq!(pick_free(&mut pool, t(1)), "a");
    // acc1 has spent its 2 per minute: neither a nor b, though b was never used.
    assert_eq!(pick_free(&mut pool, t(2)), "c");
    assert_eq!(pool.usage_of("b").unwrap().day_count, 2);
    // Paid requests are not limited by free-model caps: b (never used) serves.
    assert_eq!(pick_excluding(&mut pool, t(3), &["c"]), "b");
}

#[test]
fn at_the_cap_with_no_other_account_the_soonest_is_when_the_window_frees() {
    let mut pool = pool(&["a"]);
    pool.note_cap("a", CapKind::PerMinute, Some(1), false, t0());
    assert_eq!(pick_free(&mut pool, t(10)), "a");
    assert_eq!(
        pool.choose_for(t(20), &[], true),
        Choice::Unavailable {
            soonest: Some(t(70)),
            holds: Holds {
                minute: 1,
                ..Holds::default()
            }
        }
    );
    assert_eq!(pick_free(&mut pool, t(70)), "a");
}

#[test]
fn keys_of_unknown_accounts_count_as_their_own_account() {
    let mut pool = pool(&["a", "b"]);
    pool.note_cap("a", CapKind::PerMinute, Some(1), false, t0());
    assert_eq!(pick_free(&mut pool, t(0)), "a");
    assert_eq!(pick_free(&mut pool, t(1)), "b");
    assert_eq!(pool.usage_of("b").unwrap().day_count, 1);
}

#[test]
fn a_daily_cap_hit_holds_the_account_until_midnight_and_says_so() {
    let mut pool = pool_of(&[rec_in("a", "acc1"), rec_in("b", "acc1")]);
    let now = t0();
    let midnight = crate::clock::next_utc_midnight(now);
    pool.note_cap("a", CapKind::PerDay, Some(50), true, now);
    pool.report(
        "a",
        free_cooldown(midnight, "free-models-per-day", true),
        now,
    );
    assert_eq!(
        pool.choose_for(now, &[], true),
        Choice::Unavailable {
            soonest: Some(midnight),
            holds: Holds {
                daily: 2,
                ..Holds::default()
            }
        }
    );
    assert_eq!(pool.usage_of("b").unwrap().day_count, 50);
    // The next day the account is fresh again.
    pool.tick(midnight);
    assert_eq!(pick_free(&mut pool, midnight + TimeDelta::seconds(1)), "a");
}

#[test]
fn get_key_reports_seed_the_daily_count_and_remaining_zero_blocks() {
    let now = t0();
    let mut record = rec_in("a", "acc1");
    if let Some(info) = record.info.as_mut() {
        info.checked_at = Some(now);
        info.is_free_tier = Some(true);
        info.free_model_daily_requests = Some(crate::model::FreeModelDailyRequests {
            used: Some(50),
            limit: Some(50),
            remaining: Some(0),
            ..Default::default()
        });
    }
    let file = file_of(vec![record.clone()]);
    let mut pool = pool_of(&[record]);
    pool.adopt_accounts(&file, now);
    assert!(matches!(
        pool.choose_for(now, &[], true),
        Choice::Unavailable { holds, .. } if holds.all_daily()
    ));
    assert_eq!(pick(&mut pool, now), "a", "paid models are unaffected");
}

#[test]
fn reconcile_merges_account_counts_both_ways_and_keeps_only_today() {
    let now = t0();
    let mut pool = pool(&["a"]);
    pick_free(&mut pool, now);
    let mut file = file_of(vec![rec("a")]);
    file.accounts.insert(
        "key:a".into(),
        crate::model::AccountRecord {
            day: Some(now.date_naive()),
            free_requests: 9,
            daily_limit: Some(50),
            ..Default::default()
        },
    );
    file.accounts.insert(
        "gone-account".into(),
        crate::model::AccountRecord {
            day: Some(now.date_naive()),
            free_requests: 3,
            daily_limit: None,
            ..Default::default()
        },
    );
    pool.reconcile(&mut file, now);
    assert_eq!(pool.usage_of("a").unwrap().day_count, 9);
    assert_eq!(pool.usage_of("a").unwrap().daily_cap(), 50);
    assert_eq!(file.accounts.len(), 1, "only accounts of stored keys");
    assert_eq!(file.accounts["key:a"].free_requests, 9);
    pick_free(&mut pool, now);
    pool.reconcile(&mut file, now);
    assert_eq!(file.accounts["key:a"].free_requests, 10);
}

#[test]
fn model_backoff_only_extends_and_expires() {
    let mut pool = pool(&["a"]);
    pool.back_off_model("m", t(10));
    pool.back_off_model("m", t(5));
    assert_eq!(pool.model_backoff("m", t0()), Some(t(10)));
    assert_eq!(pool.model_backoff("other", t0()), None);
    assert_eq!(pool.model_backoff("m", t(10)), None);
    pool.tick(t(11));
    assert_eq!(
        pool.model_backoff("m", t(9)),
        None,
        "forgotten after it ended"
    );
}

#[test]
fn disabled_keys_are_rechecked_and_rejected_ones_more_rarely() {
    let settings = Settings { max_failures: 1 };
    let mut pool = Pool::from_records(&[rec("a"), rec("b"), rec("c")], settings);
    fail_while_another_works(&mut pool, "a", "c", "HTTP 500", -10);
    pool.report(
        "b",
        rejected_outcome("401 from OpenRouter: User not found."),
        t0(),
    );
    assert!(state(&pool, "a").auto_recover);
    assert!(state(&pool, "b").auto_recover && state(&pool, "b").rejected);
    let every = TimeDelta::minutes(5);
    let due = |pool: &mut Pool, at: i64| -> Vec<String> {
        pool.due_for_probe(t(at), every)
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    };
    assert!(
        due(&mut pool, 1).is_empty(),
        "the answer that disabled a key counts as its last check"
    );
    assert_eq!(due(&mut pool, 301), ["a"], "the rejected key waits longer");
    assert!(
        due(&mut pool, 302).is_empty(),
        "not again before the interval"
    );
    assert_eq!(due(&mut pool, 12 * 300 + 1), ["a", "b"]);
    assert!(
        pool.probe_result("a", Probe::StillDown("unreachable".into()), t(3602))
            .is_empty()
    );
    assert!(state(&pool, "a").disabled);
    let events = pool.probe_result("a", Probe::Healthy, t(3603));
    assert_eq!(events, vec![Event::Recovered { id: "a".into() }]);
    assert!(!state(&pool, "a").disabled);
    assert_eq!(state(&pool, "a").failures_total, 1, "history kept");
    assert_eq!(pick_excluding(&mut pool, t(3604), &["c"]), "a");
    // A rejected key that OpenRouter accepts again comes back whole.
    assert_eq!(
        pool.probe_result("b", Probe::Healthy, t(3605)),
        [Event::Recovered { id: "b".into() }]
    );
    let b = state(&pool, "b");
    assert!(!b.disabled && !b.rejected && !b.auto_recover);
}

#[test]
fn a_check_that_finds_the_key_rejected_keeps_checking_it_rarely() {
    let settings = Settings { max_failures: 1 };
    let mut pool = Pool::from_records(&[rec("a"), rec("b")], settings);
    fail_while_another_works(&mut pool, "a", "b", "timeout", -10);
    assert_eq!(pool.due_for_probe(t(301), TimeDelta::minutes(5)).len(), 1);
    let events = pool.probe_result(
        "a",
        Probe::Invalid("401 from OpenRouter: User not found.".into()),
        t(302),
    );
    assert_eq!(events.len(), 1);
    let s = state(&pool, "a");
    assert!(s.auto_recover && s.rejected);
    assert!(
        pool.due_for_probe(t(1000), TimeDelta::minutes(5))
            .is_empty()
    );
    assert_eq!(
        pool.due_for_probe(t(301 + 3600), TimeDelta::minutes(5))
            .len(),
        1
    );
    assert_eq!(
        state(&pool, "a").disabled_reason.as_deref(),
        Some("401 from OpenRouter: User not found.")
    );
}

#[test]
fn next_available_is_now_the_soonest_cooldown_end_or_none() {
    let mut p = pool(&["a", "b"]);
    assert_eq!(p.next_available(t0()), Some(t0()));
    p.report("a", cooldown(t(90), "rate-limited"), t0());
    assert_eq!(p.next_available(t0()), Some(t0()), "b is still free");
    p.report("b", cooldown(t(30), "rate-limited"), t0());
    assert_eq!(p.next_available(t0()), Some(t(30)));
    p.report("b", disable_outcome("401"), t0());
    assert_eq!(p.next_available(t0()), Some(t(90)));
    p.report("a", disable_outcome("401"), t0());
    assert_eq!(p.next_available(t0()), None);
    assert_eq!(pool(&[]).next_available(t0()), None);
}

#[test]
fn counters_alone_are_not_urgent_but_state_changes_are() {
    let mut pool = pool(&["a", "b"]);
    pick(&mut pool, t(1));
    pool.report("a", Outcome::Success, t(1));
    assert!(pool.is_dirty());
    assert!(!pool.is_urgent(), "last use and a request counted can wait");
    pool.mark_clean();
    fail_while_another_works(&mut pool, "a", "b", "HTTP 500", 2);
    assert!(pool.is_urgent(), "a failure counted shows in keys list");
    pool.mark_clean();
    pool.report("a", Outcome::Success, t(4));
    assert!(pool.is_urgent(), "the end of a failure streak shows too");
    pool.mark_clean();
    pool.report("b", cooldown(t(60), "rate-limited"), t(4));
    assert!(pool.is_urgent());
    let mut file = file_of(vec![rec("a"), rec("b")]);
    pool.reconcile(&mut file, t(5));
    assert!(!pool.is_dirty() && !pool.is_urgent());
}

// ---- a shared store (Redis): adopting other instances' states ----

fn cooling_until(until: DateTime<Utc>) -> KeyState {
    KeyState {
        cooldown_until: Some(until),
        cooldown_reason: Some("rate-limited".into()),
        ..KeyState::default()
    }
}

#[test]
fn an_adopted_cooldown_takes_the_current_key_out_of_rotation() {
    let mut p = pool(&["a", "b"]);
    assert_eq!(pick(&mut p, t(0)), "a");
    assert!(!p.adopt_state("a", &cooling_until(t(60)), 5, t(1)));
    assert_eq!(p.current(), None);
    assert_eq!(pick(&mut p, t(2)), "b");
    assert_eq!(p.get("a").unwrap().version, 5);
}

#[test]
fn an_older_version_is_ignored_and_a_newer_one_wins() {
    let mut p = pool(&["a"]);
    p.adopt_state("a", &cooling_until(t(60)), 7, t(0));
    // A slow message with the state before the cooldown: ignored.
    assert!(!p.adopt_state("a", &KeyState::default(), 6, t(1)));
    assert!(state(&p, "a").cooldown(t(1)).is_some());
    // The reactivation that came after it: adopted, and waiters are told.
    assert!(p.adopt_state("a", &KeyState::default(), 8, t(2)));
    assert_eq!(pick(&mut p, t(3)), "a");
    assert!(!p.adopt_state("gone", &KeyState::default(), 9, t(3)));
}

#[test]
fn adopting_keeps_the_larger_history() {
    let mut p = pool(&["a"]);
    pick(&mut p, t(50));
    p.report("a", Outcome::Success, t(50));
    let remote = KeyState {
        last_used: Some(t(10)),
        requests_total: 0,
        consecutive_failures: 2,
        ..KeyState::default()
    };
    p.adopt_state("a", &remote, 1, t(51));
    let s = state(&p, "a");
    assert_eq!(s.last_used, Some(t(50)));
    assert_eq!(s.requests_total, 1);
    assert_eq!(s.consecutive_failures, 2, "the streak is the store's");
}

#[test]
fn adopting_a_store_adds_removes_and_respects_versions() {
    let mut p = pool(&["a", "b"]);
    p.adopt_state("a", &cooling_until(t(60)), 10, t(0));
    let mut file = file_of(vec![rec("a"), rec("c")]);
    // The snapshot was read before a's cooldown reached us (version 9).
    let versions: HashMap<String, u64> = [("a".to_owned(), 9), ("c".to_owned(), 3)].into();
    let events = p.adopt_store(&file, &versions, t(1));
    assert_eq!(
        events,
        vec![
            Event::Added { id: "c".into() },
            Event::Removed { id: "b".into() }
        ]
    );
    assert_eq!(ids(&p), ["a", "c"]);
    assert!(
        state(&p, "a").cooldown(t(1)).is_some(),
        "older snapshot ignored"
    );
    assert_eq!(p.get("c").unwrap().version, 3);
    // A reset written later (higher generation and version) is adopted.
    file.keys[0].generation = 1;
    let versions: HashMap<String, u64> = [("a".to_owned(), 11), ("c".to_owned(), 3)].into();
    let events = p.adopt_store(&file, &versions, t(2));
    assert_eq!(events, vec![Event::Reactivated { id: "a".into() }]);
    assert!(state(&p, "a").cooldown(t(2)).is_none());
}

#[test]
fn cooldown_targets_cover_the_account_only_when_account_wide_and_known() {
    let p = pool_of(&[
        rec_in("a", "u1"),
        rec_in("b", "u1"),
        rec_in("c", "u2"),
        rec("d"),
    ]);
    assert_eq!(p.cooldown_targets("a", true), ["a", "b"]);
    assert_eq!(p.cooldown_targets("a", false), ["a"]);
    assert_eq!(p.cooldown_targets("d", true), ["d"]);
    assert!(p.cooldown_targets("zz", true).is_empty());
}

#[test]
fn a_shared_minute_hold_skips_the_account_for_free_models_until_it_ends() {
    let mut p = pool_of(&[rec_in("a", "u1"), rec_in("b", "u2")]);
    assert_eq!(chosen(p.choose_for(t(0), &[], true)), "a");
    p.hold_account("a", false, t(30), t(0));
    assert_eq!(p.current(), None);
    assert_eq!(chosen(p.choose_for(t(1), &[], true)), "b");
    assert_eq!(chosen(p.choose_for(t(2), &[], false)), "b", "sticky");
    // Paid models are not held; after the hold, free models may use a again.
    p.hold_account("b", false, t(40), t(3));
    assert_eq!(chosen(p.choose_for(t(3), &[], false)), "a");
    assert_eq!(chosen(p.choose_for(t(31), &[], true)), "a");
}

#[test]
fn a_shared_daily_cap_holds_every_key_of_the_account_until_midnight() {
    let mut p = pool_of(&[rec_in("a", "u1"), rec_in("b", "u1")]);
    p.adopt_free_count("a", 12, t(0));
    assert_eq!(p.usage_of("b").unwrap().day_count, 12);
    p.hold_account("a", true, t(0), t(0));
    match p.choose_for(t(1), &[], true) {
        Choice::Unavailable { soonest, holds } => {
            assert!(holds.all_daily());
            assert_eq!(soonest, Some(crate::clock::next_utc_midnight(t(1))));
        }
        other => panic!("expected the daily cap, got {other:?}"),
    }
    assert!(matches!(p.choose_for(t(1), &[], false), Choice::Use { .. }));
}

#[test]
fn a_key_whose_account_is_learned_brings_its_count_to_the_account_added() {
    let now = t0();
    let mut pool = pool_of(&[rec("a"), rec_in("b", "u1")]);
    for i in 0..3 {
        assert_eq!(chosen(pool.choose_for(t(i), &["b".into()], true)), "a");
    }
    for i in 0..2 {
        assert_eq!(chosen(pool.choose_for(t(i), &["a".into()], true)), "b");
    }
    // `keys check` learned a's account; it has not touched the counts.
    let mut file = file_of(vec![rec_in("a", "u1"), rec_in("b", "u1")]);
    pool.reconcile(&mut file, now + TimeDelta::seconds(5));
    assert_eq!(pool.usage_of("a").unwrap().day_count, 5, "3 + 2");
    assert_eq!(file.accounts["u1"].free_requests, 5);
    assert!(!file.accounts.contains_key("key:a"));
    // Merged again, nothing is added twice.
    pool.reconcile(&mut file, now + TimeDelta::seconds(6));
    assert_eq!(file.accounts["u1"].free_requests, 5);
}

#[test]
fn reaching_a_cap_is_written_within_a_second_not_with_the_counters() {
    let mut pool = pool(&["a"]);
    pool.note_cap("a", CapKind::PerMinute, Some(2), false, t0());
    pool.mark_clean();
    pick_free(&mut pool, t(0));
    assert!(pool.is_dirty() && !pool.is_urgent(), "a counter");
    pick_free(&mut pool, t(1));
    assert!(
        pool.is_urgent(),
        "the account is held now: keys list must say so"
    );
    let a = pool.get("a").unwrap();
    assert_eq!(pool.judged(a, t(1)).status().name(), "free_held");
}

#[test]
fn a_forgotten_account_lifts_its_keys_free_parks_in_the_pool() {
    let now = t0();
    let mut pool = pool_of(&[rec_in("a", "u1"), rec_in("b", "u1")]);
    pool.note_cap("a", CapKind::PerDay, Some(50), true, now);
    let midnight = crate::clock::next_utc_midnight(now);
    pool.report(
        "a",
        free_cooldown(midnight, "free-models-per-day", true),
        now,
    );
    let mut file = file_of(vec![rec_in("a", "u1"), rec_in("b", "u1")]);
    pool.reconcile(&mut file, t(1));
    assert_eq!(pool.free_summary(t(1)).usable, 0);
    // `keys reactivate --forget-quota` on the file.
    crate::pool::accounts::forget(&mut file, &["u1".into()], t(2));
    pool.reconcile(&mut file, t(3));
    assert_eq!(
        pool.free_summary(t(3)).usable,
        2,
        "both keys serve :free again"
    );
    assert_eq!(file.keys[1].state.free_cooldown_until, None);
    assert_eq!(file.accounts.get("u1").map_or(0, |a| a.free_requests), 0);
}
