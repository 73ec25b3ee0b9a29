//! Weighted fair admission of query evaluation across tenants.
//!
//! Evaluating a query (the read-only pass, which every query runs) takes one of a fixed
//! number of slots. When all slots are busy, waiting queries are admitted by
//! start-time fair queueing: each tenant (the database a query runs in) has a virtual
//! finish tag advanced by `cost / weight` per query, and the waiter with the smallest
//! start tag goes next. Weights are the database's or key's `priority` (1–500), so a
//! priority-10 tenant gets ten times the share of a priority-1 one under contention.
//! Cost is the measured evaluation time, charged when the slot is released.
//!
//! The slot bound holds for a lone tenant too: at most `slots` evaluations of one tenant
//! are runnable. (It once did not, and that is what made a quiet tenant's point reads
//! about six times slower under a flood: the flood ran 32 evaluations at once on two
//! cores, and a quiet query waited for all but one of them to reach a yield point, each
//! getting a sixteenth of a core, then ran time-sliced against the rest.)
//!
//! A sparse tenant — one with nothing running — is admitted at once, even over the bound
//! (up to `slots` more): its start tag is the earliest there can be anyway, and admitting
//! it now rather than at the next yield point keeps it from waiting on a flood's query
//! that the OS has descheduled (on a busy machine, most of a quiet read's p99). This is
//! the sparse-flow priority of fq_codel; it is bounded, so many tenants arriving at once
//! still queue.
//!
//! A query cannot be preempted, but it yields: every 128 evaluation steps (a fraction of
//! a millisecond) the evaluator calls [`yield_point`], which hands the slot to a waiting
//! query of another tenant whose start tag is earlier than this tenant's next one, or —
//! after a turn of `TURN` — to this tenant's own next query when it is first in line
//! and ahead of this one within the tenant (below), and queues this query again. A
//! backlogged tenant waits at most 128 steps for a more deserving one.
//!
//! Within a tenant, queries are young until they have run `LONG_AFTER` in all, then long.
//! Young queries take turns among themselves and go before long ones, so a tenant's short
//! queries still overtake its own long ones; long queries go oldest first (by arrival) and
//! do not take turns among themselves: a long query keeps its slot through its own
//! tenant's turn boundaries until it finishes, or until a younger query or an older long
//! one waits. The tenant's tags decide only *when* it gets a slot, not which of its queries
//! takes it, so this changes nothing between tenants. (Time slicing among long queries
//! was what made an overload collapse: fifty reads of 10 s each, sharing two cores in 10 ms
//! turns, all reached a 60 s timeout and none finished; run oldest first, the first ones
//! finish and the rest wait.) The price: every query a tenant queues gets one turn before
//! its long ones go on, so a tenant that keeps sending new long queries faster than its
//! slots finish them delays its own older ones by a turn (and a first step) each; the
//! deadline bounds how long any one waits.
//!
//! A query waits for a slot no longer than its deadline (`X-Query-Timeout`): past it, it
//! leaves the queue and is refused with `time out` instead of being started and abandoned.
//!
//! A sparse tenant admitted over the bound is not left to the OS to time-slice against
//! the flood: at its next yield point, a query of the busiest tenant (the one running the
//! most, when it runs more than one) gives its slot back and queues, so within 128 steps
//! the evaluations running fit the slots again; it is readmitted when a slot frees up.
//!
//! Only admission order changes; results never do, and nothing here runs inside the
//! deterministic executor (it never yields). Writes are queued fairly in the sequencer
//! too (`tally_calvin::fair`).
//!
//! Slots: `TALLY_FAIR_SLOTS` (default: the available cores; 0 turns admission off).

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Nominal cost of one query (µs) charged at admission, corrected at release.
const COST_NOMINAL_US: u128 = 1_000;
/// Most cost (µs) one query is charged, so one huge query cannot lock a tenant out.
const COST_MAX_US: u128 = 1_000_000;
/// Virtual time is kept in µs × this, so weights up to 500 divide without rounding away.
const SCALE: u128 = 1_000;
/// How long a query runs before it lets its own tenant's next query take a turn. Turns
/// of 2 ms made a lone tenant's short queries fast but cost a heavy-read flood about a
/// third of its throughput (every handoff is a context switch, and with processor
/// sharing a closed loop of clients finishes in convoys); 50 ms kept the throughput but
/// left short queries behind long ones; 10 ms keeps both within a few percent of
/// unbounded admission, with a better p99 for short queries.
const TURN: Duration = Duration::from_millis(10);
/// Run time (over all its turns) after which a query is long: it no longer takes turns
/// with its tenant's other long queries. One turn: every young query that waits gets a
/// turn before the long ones go on, and that is work lost if the flood then times out —
/// with fifty 1 s reads queued on two slots, 50 ms of it each put the first completion at
/// 4.9 s in one run, and 7 of them finished in 10 s (10–19 with one turn; part of each
/// turn is the first step, which cannot be cut: `Paginate` of 50,000 refs is one step of
/// 90 ms).
const LONG_AFTER: Duration = TURN;
/// Forget idle tenants once this many are tracked.
const TENANTS_MAX: usize = 100_000;

/// A waiting query's place in the queue: (start tag, arrival).
type Key = (u128, u64);

#[derive(Default)]
struct Waiter {
    tenant: u64,
    /// When the query first asked for a slot (kept across its turns): long queries of a
    /// tenant go oldest first.
    rank: u64,
    /// Whether it has run `LONG_AFTER` already.
    long: bool,
    granted: Mutex<bool>,
    cv: Condvar,
}

impl Waiter {
    /// Its order within its tenant: young before long; young ones in queue order (taking
    /// turns), long ones oldest first.
    fn order(&self, key: Key) -> (bool, u64) {
        (self.long, if self.long { self.rank } else { key.1 })
    }
}

/// What a query asks the scheduler for.
#[derive(Clone, Copy)]
struct Ask {
    tenant: u64,
    weight: u32,
    rank: u64,
    long: bool,
    deadline: Option<Instant>,
}

/// The query waited for a slot until its deadline passed, and was taken out of the queue.
#[derive(Debug, thiserror::Error)]
#[error("the query waited for an evaluation slot past its deadline")]
pub struct WaitedPastDeadline;

/// One tenant's waiters, each by its order within the tenant ([`Waiter::order`]) and key.
type TenantWaiters = BTreeSet<((bool, u64), Key)>;

#[derive(Default)]
struct State {
    /// Running queries, and how many of them each tenant runs.
    busy: usize,
    busy_by: HashMap<u64, usize>,
    /// Of `busy`, short reads running inline (`try_acquire`): they end within a bounded
    /// number of steps, so nobody steps back for them.
    inline: usize,
    /// Start tag of the latest admitted query.
    vtime: u128,
    /// Each tenant's latest finish tag.
    finish: HashMap<u64, u128>,
    /// Waiting queries by (start tag, arrival).
    queue: BTreeMap<Key, Arc<Waiter>>,
    /// The same waiters by tenant, in their order within it ([`Waiter::order`]).
    by_tenant: HashMap<u64, TenantWaiters>,
    arrivals: u64,
}

/// Charge `tenant` `prepay_us` of cost up front: its finish tag moves on from its start
/// tag (the later of virtual time and its last finish), which is returned.
fn charge(st: &mut State, tenant: u64, weight: u32, prepay_us: u128) -> u128 {
    let start = st.vtime.max(st.finish.get(&tenant).copied().unwrap_or(0));
    if st.finish.len() >= TENANTS_MAX {
        let v = st.vtime;
        st.finish.retain(|_, f| *f > v);
    }
    st.finish.insert(tenant, start + prepay_us * SCALE / weight as u128);
    start
}

impl State {
    fn admit(&mut self, tenant: u64) {
        self.busy += 1;
        *self.busy_by.entry(tenant).or_insert(0) += 1;
    }

    fn enqueue(&mut self, key: Key, w: Arc<Waiter>) {
        self.by_tenant.entry(w.tenant).or_default().insert((w.order(key), key));
        self.queue.insert(key, w);
    }

    fn unindex(&mut self, key: Key, w: &Waiter) {
        if let Some(set) = self.by_tenant.get_mut(&w.tenant) {
            set.remove(&(w.order(key), key));
            if set.is_empty() {
                self.by_tenant.remove(&w.tenant);
            }
        }
    }

    /// The first of `tenant`'s waiters in its order within the tenant.
    fn first_of(&self, tenant: u64) -> Option<(bool, u64)> {
        self.by_tenant.get(&tenant).and_then(|s| s.first()).map(|(order, _)| *order)
    }

    /// Take the next waiter to admit, with its start tag: the tenant is the one whose
    /// waiter has the earliest start tag, and of that tenant's waiters the first in its
    /// order within it — which takes over the place of the one it overtakes, so the
    /// tenant's tags (its share) are what they were.
    fn pop_next(&mut self) -> Option<(u128, Arc<Waiter>)> {
        let (key, w) = self.queue.pop_first()?;
        self.unindex(key, &w);
        let best = self.by_tenant.get(&w.tenant).and_then(|s| s.first()).copied();
        if let Some((order, best_key)) = best.filter(|(order, _)| *order < w.order(key)) {
            if let Some(chosen) = self.queue.remove(&best_key) {
                if let Some(s) = self.by_tenant.get_mut(&w.tenant) {
                    s.remove(&(order, best_key));
                }
                self.enqueue(best_key, w);
                return Some((key.0, chosen));
            }
        }
        Some((key.0, w))
    }

    /// Take `w` out of the queue (its deadline passed); false if it is no longer there
    /// (it was just admitted).
    fn withdraw(&mut self, w: &Arc<Waiter>) -> bool {
        let Some(set) = self.by_tenant.get(&w.tenant) else { return false };
        let found = set.iter().map(|(_, k)| *k).find(|k| self.queue.get(k).is_some_and(|q| Arc::ptr_eq(q, w)));
        let Some(key) = found else { return false };
        self.queue.remove(&key);
        self.unindex(key, w);
        true
    }
}

pub struct Scheduler {
    slots: usize,
    state: Mutex<State>,
    /// `state.queue.len()`, readable without the lock: yield points run often and
    /// almost always find nobody waiting.
    waiting: AtomicUsize,
    /// Evaluations running beyond the bound (sparse admissions), readable without the
    /// lock: at its next yield point, a query of the busiest tenant gives its slot back.
    over: AtomicUsize,
    /// Numbers queries by arrival (their rank within a tenant).
    ranks: AtomicU64,
    /// `TURN` and `LONG_AFTER` (tests shorten them).
    turn: Duration,
    long_after: Duration,
}

/// A held slot; dropping it admits the next waiter.
pub struct Permit<'a> {
    sched: &'a Scheduler,
    tenant: u64,
    weight: u32,
    started: Instant,
    /// From `try_acquire`: never yields, and nobody steps back for it.
    inline: bool,
}

impl Scheduler {
    pub fn new(slots: usize) -> Scheduler {
        Scheduler {
            slots,
            state: Mutex::new(State::default()),
            waiting: AtomicUsize::new(0),
            over: AtomicUsize::new(0),
            ranks: AtomicU64::new(0),
            turn: TURN,
            long_after: LONG_AFTER,
        }
    }

    fn from_env() -> Scheduler {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let slots = std::env::var("TALLY_FAIR_SLOTS").ok().and_then(|v| v.parse().ok()).unwrap_or(cores);
        Scheduler::new(slots)
    }

    /// Wait (blocking the calling thread) for a slot for `tenant` with `weight`, until
    /// `deadline` at most.
    pub fn acquire(
        &self,
        tenant: u64,
        weight: u32,
        deadline: Option<Instant>,
    ) -> Result<Permit<'_>, WaitedPastDeadline> {
        let weight = weight.max(1);
        if self.slots > 0 {
            let rank = self.ranks.fetch_add(1, Ordering::Relaxed);
            let ask = Ask { tenant, weight, rank, long: false, deadline };
            if !self.wait_for_slot(ask, COST_NOMINAL_US, true) {
                return Err(WaitedPastDeadline);
            }
            let since = Instant::now();
            let prepaid_us = COST_NOMINAL_US;
            HELD.with(|h| h.set(Some(Held { ask, since, prepaid_us, ran: Duration::ZERO, slot: true })));
        }
        Ok(Permit { sched: self, tenant, weight, started: Instant::now(), inline: false })
    }

    /// A slot for `tenant` if one is free without waiting (or the tenant is sparse), else
    /// None. The permit never yields: the caller bounds what it runs under it.
    pub fn try_acquire(&self, tenant: u64, weight: u32) -> Option<Permit<'_>> {
        let weight = weight.max(1);
        if self.slots > 0 {
            let Ok(mut st) = self.state.lock() else { return None };
            if !self.may_enter_now(&st, tenant, true) {
                return None;
            }
            let start = charge(&mut st, tenant, weight, COST_NOMINAL_US);
            st.admit(tenant);
            st.inline += 1;
            st.vtime = st.vtime.max(start);
        }
        Some(Permit { sched: self, tenant, weight, started: Instant::now(), inline: true })
    }

    /// Whether `tenant` may run without queueing: a slot is free and nobody waits, or it
    /// is sparse. A sparse tenant — one running nothing — is admitted at once, over the
    /// bound if need be (up to `slots` extra): its start tag is the earliest there can be,
    /// and letting it in now instead of at the next yield point keeps it from waiting on a
    /// flood's query that the OS has descheduled.
    fn may_enter_now(&self, st: &State, tenant: u64, may_be_sparse: bool) -> bool {
        let sparse = may_be_sparse && st.busy_by.get(&tenant).is_none_or(|n| *n == 0) && st.busy < 2 * self.slots;
        sparse || (st.queue.is_empty() && st.busy < self.slots)
    }

    /// Give up this thread's slot if a more deserving query waits, and wait for it again.
    fn yield_slot(&self) {
        if self.waiting.load(Ordering::Relaxed) == 0 && self.over.load(Ordering::Relaxed) == 0 {
            return;
        }
        let Some(held) = HELD.with(|h| h.get()).filter(|h| h.slot) else { return };
        let Held { ask: Ask { tenant, weight, rank, .. }, since, prepaid_us, ran, .. } = held;
        let turn_over = since.elapsed() >= self.turn;
        let long = ran + since.elapsed() > self.long_after;
        let deserving = match self.state.lock() {
            Ok(st) => {
                let mine = st.finish.get(&tenant).copied();
                let owed = match (st.queue.first_key_value(), mine) {
                    // Another tenant that is owed the slot, or this tenant's next query in
                    // line when it goes before this one within the tenant.
                    (Some(((start, _), w)), Some(mine)) => {
                        (w.tenant == tenant
                            && turn_over
                            && st.first_of(tenant).is_some_and(|o| goes_before(o, (long, rank))))
                            || (w.tenant != tenant && *start < mine)
                    }
                    _ => false,
                };
                // A sparse tenant was let in over the bound: the busiest tenant (most
                // queries running, then the latest finish tag) steps back until the
                // evaluations running fit the slots again, so the OS need not share the
                // cores among more of them than there are.
                let over = st.busy - st.inline > self.slots && {
                    let busiest = st.busy_by.iter().max_by_key(|(t, n)| (**n, st.finish.get(*t).copied()));
                    busiest.is_some_and(|(t, n)| *t == tenant && *n > 1)
                };
                owed || over
            }
            Err(_) => false,
        };
        if deserving {
            // Charged what it used; queued again without a new nominal charge, and not as
            // a sparse tenant (it is the one making room).
            let run = since.elapsed();
            self.release(tenant, weight, run.as_micros(), prepaid_us, false);
            let ran = ran + run;
            let ask = Ask { long: ran > self.long_after, ..held.ask };
            // Past its deadline it runs on without a slot, for the few steps until the
            // evaluator's next deadline check ends it.
            let slot = self.wait_for_slot(ask, 0, false);
            HELD.with(|h| h.set(Some(Held { ask, since: Instant::now(), prepaid_us: 0, ran, slot })));
        }
    }

    /// Queue for a slot, charging `prepay_us` of cost up front (corrected at release);
    /// `may_be_sparse`: whether a tenant running nothing may be admitted over the bound.
    /// False if the deadline passed first (the query is out of the queue then).
    fn wait_for_slot(&self, ask: Ask, prepay_us: u128, may_be_sparse: bool) -> bool {
        let Ask { tenant, weight, rank, long, deadline } = ask;
        let waiter = {
            let Ok(mut st) = self.state.lock() else { return true };
            let start = charge(&mut st, tenant, weight, prepay_us);
            if self.may_enter_now(&st, tenant, may_be_sparse) {
                st.admit(tenant);
                st.vtime = st.vtime.max(start);
                self.over.store((st.busy - st.inline).saturating_sub(self.slots), Ordering::Relaxed);
                return true;
            }
            st.arrivals += 1;
            let w = Arc::new(Waiter { tenant, rank, long, ..Waiter::default() });
            let seq = st.arrivals;
            st.enqueue((start, seq), w.clone());
            self.waiting.store(st.queue.len(), Ordering::Relaxed);
            w
        };
        self.await_grant(&waiter, deadline)
    }

    /// Wait until a releaser admits `waiter` (counting it busy) and sets `granted`, or
    /// until `deadline`, when it leaves the queue unless it was admitted just then.
    fn await_grant(&self, waiter: &Arc<Waiter>, mut deadline: Option<Instant>) -> bool {
        let mut granted = waiter.granted.lock().unwrap_or_else(|e| e.into_inner());
        while !*granted {
            let Some(d) = deadline else {
                granted = waiter.cv.wait(granted).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            let now = Instant::now();
            if now < d {
                granted = waiter.cv.wait_timeout(granted, d - now).unwrap_or_else(|e| e.into_inner()).0;
                continue;
            }
            // The releaser takes the state lock before `granted`: never hold both here.
            drop(granted);
            if let Ok(mut st) = self.state.lock() {
                if st.withdraw(waiter) {
                    self.waiting.store(st.queue.len(), Ordering::Relaxed);
                    return false;
                }
            }
            // Admitted meanwhile: the grant is on its way.
            deadline = None;
            granted = waiter.granted.lock().unwrap_or_else(|e| e.into_inner());
        }
        true
    }

    fn release(&self, tenant: u64, weight: u32, cost_us: u128, prepaid_us: u128, inline: bool) {
        let Ok(mut st) = self.state.lock() else { return };
        if inline {
            st.inline = st.inline.saturating_sub(1);
        }
        // Charge what the query really cost beyond what it prepaid at admission.
        let extra = cost_us.min(COST_MAX_US).saturating_sub(prepaid_us) * SCALE / weight as u128;
        if let Some(f) = st.finish.get_mut(&tenant) {
            *f += extra;
        }
        st.busy = st.busy.saturating_sub(1);
        if let Some(n) = st.busy_by.get_mut(&tenant) {
            *n -= 1;
            if *n == 0 {
                st.busy_by.remove(&tenant);
            }
        }
        // Admit waiters, earliest start tag first, while there is room.
        let mut granted = Vec::new();
        while st.busy < self.slots {
            let Some((start, w)) = st.pop_next() else { break };
            st.vtime = st.vtime.max(start);
            st.admit(w.tenant);
            granted.push(w);
        }
        self.waiting.store(st.queue.len(), Ordering::Relaxed);
        self.over.store((st.busy - st.inline).saturating_sub(self.slots), Ordering::Relaxed);
        drop(st);
        for w in granted {
            let mut g = w.granted.lock().unwrap_or_else(|e| e.into_inner());
            *g = true;
            w.cv.notify_one();
        }
    }

    /// Queries waiting for a slot (for tests and diagnostics).
    pub fn waiting(&self) -> usize {
        self.state.lock().map(|s| s.queue.len()).unwrap_or(0)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.sched.slots > 0 {
            // The slot may have been yielded and re-acquired since `started`, or yielded
            // and not got back before the deadline.
            let (since, prepaid) = match HELD.with(|h| h.take()) {
                Some(h) if !h.slot => return,
                Some(h) => (h.since, h.prepaid_us),
                None => (self.started, COST_NOMINAL_US),
            };
            self.sched.release(self.tenant, self.weight, since.elapsed().as_micros(), prepaid, self.inline);
        }
    }
}

/// The slot a thread holds.
#[derive(Clone, Copy)]
struct Held {
    ask: Ask,
    /// When it was (re)admitted.
    since: Instant,
    /// Cost charged at admission, deducted from what the release charges.
    prepaid_us: u128,
    /// Run time in its earlier turns.
    ran: Duration,
    /// False once it gave its slot back and its deadline passed before it got one again.
    slot: bool,
}

/// Whether a waiter of `waiting` order within its tenant goes before a running query of
/// `running` order: a young waiter always (young queries take turns), a long one only
/// before a younger long one (long queries go oldest first and do not take turns).
fn goes_before(waiting: (bool, u64), running: (bool, u64)) -> bool {
    match (waiting, running) {
        ((false, _), _) => true,
        ((true, _), (false, _)) => false,
        ((true, w), (true, r)) => w < r,
    }
}

thread_local! {
    static HELD: Cell<Option<Held>> = const { Cell::new(None) };
}

/// The evaluator's yield hook: hand the slot over if someone more deserving waits.
pub fn yield_point() {
    if let Some(s) = GLOBAL.get() {
        s.yield_slot();
    }
}

static GLOBAL: OnceLock<Scheduler> = OnceLock::new();

/// The node's scheduler (one per process: slots are a property of the machine).
pub fn global() -> &'static Scheduler {
    GLOBAL.get_or_init(|| {
        let _ = tally_fql::eval::YIELD_HOOK.set(yield_point);
        Scheduler::from_env()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Turns end at every yield point and a query is long once it has run at all, so the
    /// order below does not depend on timing.
    fn without_turns(slots: usize) -> Scheduler {
        Scheduler { turn: Duration::ZERO, long_after: Duration::ZERO, ..Scheduler::new(slots) }
    }

    /// `units` pieces of work with a yield point after each, logged as `id`.
    fn work(s: &Scheduler, id: &str, units: usize, log: &Mutex<Vec<String>>) {
        for _ in 0..units {
            log.lock().unwrap().push(id.to_string());
            std::thread::sleep(Duration::from_micros(50));
            s.yield_slot();
        }
    }

    /// More long queries of one tenant than slots: after one turn each (they are young
    /// until then), they run oldest first, each to its end, instead of taking turns — the
    /// oldest has the most work and still finishes first. Another tenant's query queued
    /// behind them is admitted at the flood's next yield point, and that tenant's first
    /// query (running nothing) at once.
    #[test]
    fn long_queries_of_a_tenant_run_oldest_first() {
        let s = Arc::new(without_turns(1));
        let log = Arc::new(Mutex::new(Vec::<String>::new()));
        let done = Arc::new(Mutex::new(Vec::<String>::new()));
        let go = Arc::new(std::sync::Barrier::new(2));
        let units = [40, 30, 20, 10];
        let mut threads = Vec::new();
        for (i, n) in units.into_iter().enumerate() {
            let (s2, log2, done2, go2) = (s.clone(), log.clone(), done.clone(), go.clone());
            threads.push(std::thread::spawn(move || {
                let _p = s2.acquire(1, 1, None).unwrap();
                if i == 0 {
                    // Hold the slot until everyone is queued.
                    go2.wait();
                }
                work(&s2, &format!("long{i}"), n, &log2);
                done2.lock().unwrap().push(format!("long{i}"));
            }));
            while s.state.lock().unwrap().busy < 1 || s.waiting() < i {
                std::thread::yield_now();
            }
        }
        let sparse = s.acquire(2, 1, None).unwrap();
        assert_eq!(s.waiting(), 3, "a tenant running nothing is admitted at once");
        let (s2, log2) = (s.clone(), log.clone());
        threads.push(std::thread::spawn(move || {
            let _p = s2.acquire(2, 1, None).unwrap();
            log2.lock().unwrap().push("quiet".to_string());
        }));
        while s.waiting() < 4 {
            std::thread::yield_now();
        }
        drop(sparse);
        go.wait();
        for t in threads {
            t.join().unwrap();
        }
        let done = done.lock().unwrap().clone();
        assert_eq!(done, ["long0", "long1", "long2", "long3"], "finished oldest first");
        let log = log.lock().unwrap().clone();
        let quiet = log.iter().position(|x| x == "quiet").unwrap();
        assert!(quiet <= 2, "the other tenant waited for {quiet} units of the flood: {log:?}");
        // Past each query's first turn, no interleaving: each runs to its end in turn.
        let mut seen = std::collections::HashSet::new();
        let rest: Vec<_> = log.iter().filter(|x| *x != "quiet" && !seen.insert(x.to_string())).cloned().collect();
        let expected: Vec<_> = units.iter().enumerate().flat_map(|(i, n)| vec![format!("long{i}"); n - 1]).collect();
        assert_eq!(rest, expected, "long queries took turns: {log:?}");
        assert_eq!(s.state.lock().unwrap().busy, 0);
    }

    /// A query waits for a slot no longer than its deadline: it is refused and leaves the
    /// queue; and one that gave its slot back at a yield point and is still waiting at its
    /// deadline runs on without a slot (the evaluator ends it at its next check), so the
    /// slot count stays right.
    #[test]
    fn a_query_waits_no_longer_than_its_deadline() {
        let s = Arc::new(without_turns(1));
        let hold = s.acquire(1, 1, None).unwrap();
        let deadline = Instant::now() + Duration::from_millis(20);
        assert!(s.acquire(1, 1, Some(deadline)).is_err());
        assert!(Instant::now() >= deadline);
        assert_eq!(s.waiting(), 0, "it left the queue");
        drop(hold);
        assert_eq!(s.state.lock().unwrap().busy, 0);

        let (s2, release) = (s.clone(), Arc::new(std::sync::Barrier::new(2)));
        let early = s.acquire(1, 1, Some(Instant::now() + Duration::from_millis(20))).unwrap();
        let r2 = release.clone();
        let other = std::thread::spawn(move || {
            let _p = s2.acquire(1, 1, None).unwrap();
            r2.wait();
        });
        while s.waiting() < 1 {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(30));
        // Gives its slot to the young query, and its deadline has passed when it would
        // queue again.
        s.yield_slot();
        assert_eq!(s.waiting(), 0);
        drop(early);
        assert_eq!(s.state.lock().unwrap().busy_by.get(&1), Some(&1), "only the other query holds a slot");
        release.wait();
        other.join().unwrap();
        assert_eq!(s.state.lock().unwrap().busy, 0);
    }

    /// With the slot held and a flooder's backlog queued, a quiet tenant running
    /// nothing is admitted at once; its second concurrent query is not sparse, queues,
    /// and still overtakes the backlog.
    #[test]
    fn quiet_tenant_overtakes_a_backlog() {
        let s = Arc::new(Scheduler::new(1));
        let order = Arc::new(Mutex::new(Vec::new()));
        let hold = s.acquire(1, 1, None).unwrap();
        let mut threads = Vec::new();
        for i in 0..5 {
            let (sc, oc) = (s.clone(), order.clone());
            threads.push(std::thread::spawn(move || {
                let _p = sc.acquire(1, 1, None).unwrap();
                oc.lock().unwrap().push(format!("flood{i}"));
            }));
            while s.waiting() < i + 1 {
                std::thread::yield_now();
            }
        }
        let sparse = s.acquire(2, 1, None).unwrap();
        assert_eq!(s.waiting(), 5, "a sparse tenant does not queue");
        let (s2, order2) = (s.clone(), order.clone());
        threads.push(std::thread::spawn(move || {
            let _p = s2.acquire(2, 1, None).unwrap();
            order2.lock().unwrap().push("quiet".to_string());
        }));
        while s.waiting() < 6 {
            std::thread::yield_now();
        }
        drop(sparse);
        drop(hold);
        for t in threads {
            t.join().unwrap();
        }
        let order = order.lock().unwrap();
        let quiet = order.iter().position(|x| x == "quiet").unwrap();
        assert!(quiet <= 1, "quiet tenant admitted at position {quiet}: {order:?}");
    }

    /// A sparse tenant let in over the bound makes the busiest tenant step back at its
    /// next yield point, so no more evaluations run than there are slots; the flood's
    /// query gets its slot back when the quiet one is done.
    #[test]
    fn over_the_bound_the_busiest_tenant_steps_back() {
        let s = Arc::new(Scheduler::new(2));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let yields = Arc::new(AtomicUsize::new(0));
        let flood: Vec<_> = (0..2)
            .map(|_| {
                let (s, stop, yields) = (s.clone(), stop.clone(), yields.clone());
                let ready = Arc::new(std::sync::Barrier::new(2));
                let r = ready.clone();
                let t = std::thread::spawn(move || {
                    let _p = s.acquire(1, 1, None).unwrap();
                    r.wait();
                    while !stop.load(Ordering::SeqCst) {
                        s.yield_slot();
                        yields.fetch_add(1, Ordering::SeqCst);
                        std::thread::yield_now();
                    }
                });
                ready.wait();
                t
            })
            .collect();
        assert_eq!(s.state.lock().unwrap().busy, 2);
        let quiet = s.acquire(2, 1, None).unwrap();
        // Within a few yield points one flood query has given its slot back.
        while s.state.lock().unwrap().busy > 2 {
            std::thread::yield_now();
        }
        {
            let st = s.state.lock().unwrap();
            assert_eq!(st.busy_by.get(&1), Some(&1));
            assert_eq!(st.busy_by.get(&2), Some(&1));
        }
        // The flood query that stepped back gives up its slot before it queues again:
        // give it a moment (bounded) to be counted as waiting.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while s.waiting() == 0 && std::time::Instant::now() < until {
            std::thread::yield_now();
        }
        assert_eq!(s.waiting(), 1, "the flood's query waits for a slot");
        drop(quiet);
        while s.waiting() > 0 {
            std::thread::yield_now();
        }
        assert_eq!(s.state.lock().unwrap().busy_by.get(&1), Some(&2), "and gets it back");
        stop.store(true, Ordering::SeqCst);
        for t in flood {
            t.join().unwrap();
        }
        assert_eq!(s.state.lock().unwrap().busy, 0);
    }

    /// `try_acquire` never waits: a free slot or a sparse tenant gets one at once,
    /// a busy tenant with no slot free gets None; and a tenant stepping back is not asked
    /// for on behalf of an inline read.
    #[test]
    fn try_acquire_admits_only_without_waiting() {
        let s = Scheduler::new(1);
        let flood = s.acquire(1, 1, None).unwrap();
        assert!(s.try_acquire(1, 1).is_none(), "no slot free and the tenant runs something");
        let quiet = s.try_acquire(2, 1).expect("a sparse tenant goes at once");
        {
            let st = s.state.lock().unwrap();
            assert_eq!((st.busy, st.inline), (2, 1));
        }
        assert_eq!(s.over.load(Ordering::Relaxed), 0, "nobody steps back for an inline read");
        drop(quiet);
        drop(flood);
        let st = s.state.lock().unwrap();
        assert_eq!((st.busy, st.inline), (0, 0));
    }

    /// Sparse admissions are bounded: at most `slots` over the bound.
    #[test]
    fn sparse_admission_is_bounded() {
        let s = Arc::new(Scheduler::new(1));
        let held: Vec<_> = (0..2).map(|t| s.acquire(t, 1, None).unwrap()).collect();
        let s2 = s.clone();
        let third = std::thread::spawn(move || drop(s2.acquire(7, 1, None).unwrap()));
        while s.waiting() < 1 {
            std::thread::yield_now();
        }
        drop(held);
        third.join().unwrap();
    }

    /// A lone tenant is bounded by the slots too, and its queued queries run as slots
    /// free up.
    #[test]
    fn lone_tenant_is_bounded() {
        let s = Arc::new(Scheduler::new(2));
        let held: Vec<_> = (0..2).map(|_| s.acquire(5, 1, None).unwrap()).collect();
        let s2 = s.clone();
        let waiter = std::thread::spawn(move || drop(s2.acquire(5, 1, None).unwrap()));
        while s.waiting() < 1 {
            std::thread::yield_now();
        }
        drop(held);
        waiter.join().unwrap();
        assert_eq!(s.state.lock().unwrap().busy, 0);
    }

    /// Weights share slots: under contention a weight-4 tenant is admitted about four
    /// times as often as a weight-1 tenant.
    #[test]
    fn weights_share_admission() {
        let s = Arc::new(Scheduler::new(1));
        let counts = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        // Two holders use up the slot and the sparse allowance, so everyone queues.
        let hold = (s.acquire(9, 1, None).unwrap(), s.acquire(10, 1, None).unwrap());
        let mut threads = Vec::new();
        for (tenant, weight) in [(0u64, 1u32), (1, 4)] {
            for _ in 0..40 {
                let (sc, cc) = (s.clone(), counts.clone());
                threads.push(std::thread::spawn(move || {
                    let _p = sc.acquire(tenant, weight, None).unwrap();
                    cc[tenant as usize].fetch_add(1, Ordering::SeqCst);
                    // Hold briefly so the others queue up behind.
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }));
            }
        }
        while s.waiting() < 80 {
            std::thread::yield_now();
        }
        drop(hold);
        // After 25 admissions the weight-4 tenant should have about 20 of them.
        while counts[0].load(Ordering::SeqCst) + counts[1].load(Ordering::SeqCst) < 25 {
            std::thread::yield_now();
        }
        let heavy = counts[1].load(Ordering::SeqCst);
        for t in threads {
            t.join().unwrap();
        }
        assert!(heavy >= 15, "weight-4 tenant got {heavy} of the first 25 admissions");
    }
}
