//! Never running out of descriptors: orproxy keeps answering `/health` and
//! keeps accepting connections, however many clients connect or stay.
//!
//! When a process reaches its open-files limit, `accept` fails with EMFILE
//! and actix-server stops listening for half a second at a time: new
//! connections then wait in the kernel's backlog (a hang, `/health`
//! included), and the logs and the store cannot open their files either.
//! So orproxy stays below the limit by design, per worker:
//!
//! - a client connection costs up to [`PER_CONNECTION`] descriptors: its
//!   socket, the duplicate `disconnect` watches, and the upstream connection
//!   of a request in flight (awc's idle pooled ones are fewer than the
//!   requests that were in flight at once);
//! - [`RESERVED_BASE`] and [`RESERVED_PER_WORKER`] descriptors are left for
//!   everything else (listener, runtimes, log files, the store, Redis);
//! - the rest, divided by the workers, is a worker's [`Budget::max`]
//!   connections: actix's `max_connections`, beyond which the worker takes no
//!   new connection until one closes, so EMFILE never happens;
//! - past [`Budget::soft`] (three quarters of that) connections, a new
//!   connection makes the worker close its longest-idle ones (no request in
//!   flight or arriving: idle keep-alive connections, or ones that never
//!   sent a request);
//! - past `soft` requests in flight, a request other than `/health` gets a
//!   503 (`Retry-After`) on a closed connection, until some finish. The
//!   quarter above `soft` is the room `/health` and those 503s are answered
//!   in.
//!
//! Each worker counts its own connections (a connection lives on one
//! worker's thread), so nothing here is shared or locked.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

/// Descriptors left for what is not a client connection.
const RESERVED_BASE: u64 = 64;
/// More of them for each worker (its runtime, its blocking pool).
const RESERVED_PER_WORKER: u64 = 8;
/// Descriptors one client connection may cost.
const PER_CONNECTION: u64 = 3;

/// What one worker may hold, from the open-files limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    /// Connections at which the worker stops accepting (actix's
    /// `max_connections`).
    pub(crate) max: usize,
    /// Connections past which idle ones are closed, and requests in flight
    /// past which requests but `/health` are answered 503.
    pub(crate) soft: usize,
    /// The open-files limit it was made from, for messages.
    pub(crate) nofile: u64,
}

impl Budget {
    /// The budget of each of `workers` workers under an open-files limit of
    /// `nofile`.
    pub(crate) fn new(nofile: u64, workers: usize) -> Self {
        let workers = u64::try_from(workers.max(1)).unwrap_or(u64::MAX);
        let reserved = RESERVED_BASE.saturating_add(RESERVED_PER_WORKER.saturating_mul(workers));
        let each = (nofile.saturating_sub(reserved) / PER_CONNECTION / workers).max(2);
        let max = usize::try_from(each).unwrap_or(usize::MAX);
        Self {
            max,
            soft: (max - max / 4).min(max - 1).max(1),
            nofile,
        }
    }

    /// Connections to leave when idle ones are closed: an eighth below
    /// `soft`, so that the next connections do not each close one.
    fn evict_down_to(self) -> usize {
        self.soft - self.soft / 8
    }
}

/// A connection the worker may close to make room.
pub(crate) trait Evictable {
    /// Since when no request has been in flight on it; `None` while one is.
    fn idle_since(&self) -> Option<Instant>;
    /// Close it (actix then drops it, and its descriptors).
    fn evict(&self);
}

struct Entry {
    conn: Option<Rc<dyn Evictable>>,
    evicted: bool,
}

/// One worker's connections.
#[derive(Default)]
struct Registry {
    /// The worker's budget (the same for every connection).
    budget: Option<Budget>,
    next_id: u64,
    conns: HashMap<u64, Entry>,
    /// Connections closed here that actix has not dropped yet.
    evicted: usize,
    /// Requests in flight.
    busy: usize,
    /// Whether the worker is past its soft limit (logged when it starts and
    /// when it ends).
    pressed: bool,
}

impl Registry {
    fn live(&self) -> usize {
        self.conns.len().saturating_sub(self.evicted)
    }

    /// The longest-idle connections to close to get back to `target`
    /// (never `spare`, the one just accepted).
    fn victims(&mut self, target: usize, spare: u64) -> Vec<Rc<dyn Evictable>> {
        let excess = self.live().saturating_sub(target);
        let mut idle: Vec<(Instant, u64)> = self
            .conns
            .iter()
            .filter(|(id, e)| **id != spare && !e.evicted)
            .filter_map(|(id, e)| Some((e.conn.as_ref()?.idle_since()?, *id)))
            .collect();
        if idle.len() > excess {
            idle.select_nth_unstable(excess);
            idle.truncate(excess);
        }
        let mut out = Vec::with_capacity(idle.len());
        for (_, id) in idle {
            if let Some(entry) = self.conns.get_mut(&id) {
                entry.evicted = true;
                self.evicted += 1;
                out.extend(entry.conn.clone());
            }
        }
        out
    }
}

thread_local! {
    static WORKER: RefCell<Registry> = RefCell::new(Registry::default());
}

/// A connection counted by its worker until this is dropped (with the
/// connection).
pub(crate) struct Counted(u64);

impl Drop for Counted {
    fn drop(&mut self) {
        let now = WORKER.try_with(|w| {
            let mut w = w.borrow_mut();
            if w.conns.remove(&self.0).is_some_and(|e| e.evicted) {
                w.evicted = w.evicted.saturating_sub(1);
            }
            (w.budget, w.live())
        });
        if let Ok((Some(budget), live)) = now {
            relief(budget, live);
        }
    }
}

/// A new connection on this worker: count it (`conn`, when it can be
/// closed to make room), and when the worker is past its soft limit close
/// its longest-idle connections.
pub(crate) fn connected(budget: Budget, conn: Option<Rc<dyn Evictable>>) -> Counted {
    let (counted, victims, live) = WORKER.with(|w| {
        let mut w = w.borrow_mut();
        w.budget = Some(budget);
        let id = w.next_id;
        w.next_id = w.next_id.wrapping_add(1);
        w.conns.insert(
            id,
            Entry {
                conn,
                evicted: false,
            },
        );
        let live = w.live();
        let victims = if live > budget.soft {
            w.victims(budget.evict_down_to(), id)
        } else {
            Vec::new()
        };
        (Counted(id), victims, live)
    });
    if !victims.is_empty() {
        pressure(budget, live, victims.len());
    }
    // Outside the borrow: closing does not drop anything now, but nothing
    // here needs the registry either.
    for victim in victims {
        victim.evict();
    }
    counted
}

/// A request in flight on this worker, until this is dropped (when its
/// response has been sent, or dropped).
pub(crate) struct Busy(());

/// Count a request in flight on this worker.
pub(crate) fn busy() -> Busy {
    WORKER.with(|w| w.borrow_mut().busy += 1);
    Busy(())
}

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = WORKER.try_with(|w| {
            if let Ok(mut w) = w.try_borrow_mut() {
                w.busy = w.busy.saturating_sub(1);
            }
        });
    }
}

/// Whether a request on this worker (counted [`busy`]) is to be shed: more
/// than `soft` requests are in flight. Logs the start of such an episode;
/// its end is logged when connections close.
pub(crate) fn overloaded(budget: Budget) -> bool {
    let (live, over) = WORKER.with(|w| {
        let w = w.borrow();
        (w.live(), w.busy > budget.soft)
    });
    if over {
        pressure(budget, live, 0);
    }
    over
}

/// Log once that the worker is past its soft limit.
fn pressure(budget: Budget, live: usize, closed: usize) {
    let started = WORKER.with(|w| !std::mem::replace(&mut w.borrow_mut().pressed, true));
    if started {
        log::warn!(
            "{live} client connections on one worker, near what the open-files limit ({}) \
             allows: closing the longest-idle ones ({closed} now) and answering requests other \
             than /health with 503 while too many are busy",
            budget.nofile
        );
    }
}

/// Log once that the worker is back under its soft limit.
fn relief(budget: Budget, live: usize) {
    if live > budget.evict_down_to() {
        return;
    }
    let ended = WORKER
        .try_with(|w| {
            w.try_borrow_mut()
                .map(|mut w| std::mem::replace(&mut w.pressed, false))
        })
        .is_ok_and(|r| r.unwrap_or(false));
    if ended {
        log::info!("{live} client connections on the worker: serving every request again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::time::Duration;

    struct Fake {
        idle_since: Option<Instant>,
        evicted: Cell<bool>,
    }

    impl Evictable for Fake {
        fn idle_since(&self) -> Option<Instant> {
            self.idle_since
        }
        fn evict(&self) {
            self.evicted.set(true);
        }
    }

    fn fake(idle_since: Option<Instant>) -> Rc<Fake> {
        Rc::new(Fake {
            idle_since,
            evicted: Cell::new(false),
        })
    }

    #[test]
    fn the_budget_leaves_room_below_the_limit() {
        for (nofile, workers) in [(256, 1), (1024, 2), (1024, 16), (20_000, 2), (1 << 20, 64)] {
            let b = Budget::new(nofile, workers);
            assert!(b.soft < b.max, "{b:?}");
            assert!(b.soft >= b.max / 2, "{b:?}");
            let worst = (b.max as u64) * PER_CONNECTION * (workers as u64) + RESERVED_BASE;
            assert!(
                worst <= nofile,
                "{b:?} with {workers} workers needs {worst}"
            );
        }
        assert_eq!(Budget::new(256, 1).max, 61);
        // Hopelessly low limits still give a worker something.
        let tiny = Budget::new(10, 4);
        assert_eq!((tiny.max, tiny.soft), (2, 1));
        assert_eq!(Budget::new(u64::MAX, 1).nofile, u64::MAX);
    }

    #[test]
    fn past_the_soft_limit_the_longest_idle_connections_are_closed() {
        let budget = Budget {
            max: 12,
            soft: 8,
            nofile: 0,
        };
        let t0 = Instant::now();
        let at = |secs| Some(t0 + Duration::from_secs(secs));
        let mut held: Vec<(Rc<Fake>, Counted)> = Vec::new();
        let add = |held: &mut Vec<(Rc<Fake>, Counted)>, idle: Option<Instant>| {
            let c = fake(idle);
            let counted = connected(budget, Some(c.clone() as Rc<dyn Evictable>));
            held.push((c, counted));
        };
        // Actix drops the connections that were closed.
        let reap = |held: &mut Vec<(Rc<Fake>, Counted)>| held.retain(|(c, _)| !c.evicted.get());
        // 4 busy connections and 4 idle ones, idle since t0 + 4, 3, 2 and 1 s
        // (the last one idle the longest).
        for secs in [4, 3, 2, 1] {
            add(&mut held, None);
            add(&mut held, at(secs));
        }
        assert!(held.iter().all(|(c, _)| !c.evicted.get()));
        // The ninth is past the soft limit: down to 7 (an eighth below),
        // closing the 2 idle the longest; never a busy one, never the new one.
        add(&mut held, at(0));
        let closed: Vec<_> = held
            .iter()
            .filter(|(c, _)| c.evicted.get())
            .map(|(c, _)| c.idle_since)
            .collect();
        assert_eq!(closed, [at(2), at(1)]);
        reap(&mut held);
        assert_eq!(held.len(), 7);
        // More busy ones: the other idle ones go, then the newest idle one.
        add(&mut held, None);
        add(&mut held, None);
        assert_eq!(held.iter().filter(|(c, _)| c.evicted.get()).count(), 2);
        reap(&mut held);
        add(&mut held, None);
        add(&mut held, None);
        reap(&mut held);
        assert!(
            held.iter().all(|(c, _)| c.idle_since.is_none()),
            "only busy ones left"
        );
        // Nothing left to close: a tenth connection stays (actix stops at max).
        add(&mut held, None);
        assert_eq!(held.len(), 9);
        // A connection that cannot be watched still counts.
        let unwatched = connected(budget, None);
        assert_eq!(WORKER.with(|w| w.borrow().live()), 10);
        drop(unwatched);
    }

    #[test]
    fn past_soft_requests_in_flight_new_ones_are_shed() {
        let budget = Budget {
            max: 12,
            soft: 8,
            nofile: 0,
        };
        let mut requests: Vec<Busy> = (0..8).map(|_| busy()).collect();
        assert!(!overloaded(budget), "8 in flight is the soft limit");
        requests.push(busy());
        assert!(overloaded(budget), "the ninth is shed");
        requests.pop();
        requests.pop();
        requests.push(busy());
        assert!(!overloaded(budget), "served again once some finish");
    }
}
