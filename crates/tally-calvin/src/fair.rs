//! Weighted fair composition of epoch batches across tenants.
//!
//! Inputs wait for their batch in a [`FairQueue`]: one lane per tenant (the database a
//! query runs in), served by start-time fair queueing. Each input gets a start tag
//! `max(virtual time, the tenant's last finish tag)` and advances the tenant's finish tag
//! by `cost / weight`, where the weight is the tenant's priority (1–500) and the cost is
//! one unit plus one per [`COST_BYTES_UNIT`] of input. A batch takes inputs in start-tag
//! order, so when more is queued than one batch holds, a tenant flooding writes fills
//! only its weighted share of each batch and a quiet tenant's write goes into the next
//! batch instead of waiting behind the whole backlog. While the queue holds less than a
//! batch, every queued input goes into the next batch, exactly as a FIFO would.
//!
//! The total queue is bounded (`capacity`). When it is full, an arriving input pushes out
//! the newest input of the tenant with the longest weighted backlog (that input was never
//! logged; its submitter is told to retry), unless the arriving tenant's own backlog is
//! that long, in which case the arrival is refused. A flood therefore cannot lock other
//! tenants out of the queue either.
//!
//! The queue is plain data (no clock, no threads, no randomness): the same operations
//! give the same batches. What a batch holds is then logged, so replicas never need to
//! agree on how it was chosen. [`FairInbox`] wraps it for a producer/consumer pair: a
//! blocking consumer (the single-node sequencer thread) or an async one (a batcher task).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

// tokio's clock: the wall clock outside a runtime and in a normal one, the virtual clock
// under a runtime with paused time (the cluster simulation), so an async consumer's epoch
// deadlines are on the clock its timers run on. A blocking consumer on its own thread sees
// the wall clock.
use tokio::time::Instant;

/// Who an input belongs to, and how much of the write path it deserves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tenant {
    /// The tenant database's internal id.
    pub id: u64,
    /// Its priority, 1–500 (0 is treated as 1).
    pub weight: u32,
}

impl Tenant {
    /// Inputs with no tenant (tests, tools) share one lane of weight 1.
    pub const DEFAULT: Tenant = Tenant { id: 0, weight: 1 };
}

/// Input bytes that count as one more unit of cost.
pub const COST_BYTES_UNIT: usize = 16 << 10;
/// Virtual time is kept in cost units × this, so weights up to 500 divide without
/// rounding away.
const SCALE: u128 = 1_000_000;
/// Idle lanes kept for their finish tags before a sweep forgets those already served.
const IDLE_LANES_MAX: usize = 4_096;

struct Queued<T> {
    start: u128,
    seq: u64,
    bytes: usize,
    item: T,
}

struct Lane<T> {
    weight: u32,
    /// Finish tag of the tenant's latest input.
    finish: u128,
    items: VecDeque<Queued<T>>,
}

/// A bounded queue of inputs served fairly across tenants (see the module docs).
pub struct FairQueue<T> {
    capacity: usize,
    /// Bytes of inputs queued at most (a lone input may be larger).
    bytes_capacity: usize,
    len: usize,
    bytes: usize,
    /// Start tag of the latest input taken.
    vtime: u128,
    arrivals: u64,
    lanes: BTreeMap<u64, Lane<T>>,
    /// The head of every non-empty lane, by (start tag, arrival).
    heads: BTreeMap<(u128, u64), u64>,
}

/// What [`FairQueue::push`] did with an input.
#[derive(Debug)]
pub enum Pushed<T> {
    /// Queued.
    Queued,
    /// Queued, pushing out this newer input of a tenant with a longer backlog; its
    /// submitter must be told the queue is full.
    Evicted(T),
    /// Not queued: the queue is full and this tenant has the longest backlog.
    Refused(T),
}

impl<T> FairQueue<T> {
    pub fn new(capacity: usize) -> FairQueue<T> {
        assert!(capacity > 0, "a queue must hold at least one input");
        FairQueue {
            capacity,
            bytes_capacity: usize::MAX,
            len: 0,
            bytes: 0,
            vtime: 0,
            arrivals: 0,
            lanes: BTreeMap::new(),
            heads: BTreeMap::new(),
        }
    }

    /// Bound the bytes queued too: an input that would pass `bytes` is refused (or pushes
    /// out the newest input of a longer backlog when that makes room), unless the queue
    /// is empty.
    pub fn with_bytes_capacity(mut self, bytes: usize) -> FairQueue<T> {
        self.bytes_capacity = bytes.max(1);
        self
    }

    fn full_for(&self, bytes: usize) -> bool {
        self.len >= self.capacity || (self.len > 0 && self.bytes.saturating_add(bytes) > self.bytes_capacity)
    }

    /// Inputs queued.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of the inputs queued.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Queue `item` (of `bytes` bytes) for `tenant`.
    pub fn push(&mut self, tenant: Tenant, item: T, bytes: usize) -> Pushed<T> {
        let weight = tenant.weight.max(1);
        let mut evicted = None;
        if self.full_for(bytes) {
            match self.longest_backlog() {
                Some(victim)
                    if self.backlog_exceeds(victim, tenant.id, weight) && self.room_after_evicting(victim, bytes) =>
                {
                    evicted = self.pop_newest(victim)
                }
                _ => return Pushed::Refused(item),
            }
        }
        self.arrivals += 1;
        let seq = self.arrivals;
        let vtime = self.vtime;
        let lane = self.lanes.entry(tenant.id).or_insert(Lane { weight, finish: 0, items: VecDeque::new() });
        lane.weight = weight;
        let start = vtime.max(lane.finish);
        let cost = 1 + (bytes / COST_BYTES_UNIT) as u128;
        lane.finish = start + cost * SCALE / weight as u128;
        if lane.items.is_empty() {
            self.heads.insert((start, seq), tenant.id);
        }
        lane.items.push_back(Queued { start, seq, bytes, item });
        self.len += 1;
        self.bytes += bytes;
        debug_assert!(self.len <= self.capacity);
        debug_assert!(self.len == 1 || self.bytes <= self.bytes_capacity);
        match evicted {
            Some(e) => Pushed::Evicted(e),
            None => Pushed::Queued,
        }
    }

    /// Take the next input in fair order.
    pub fn pop(&mut self) -> Option<T> {
        let ((start, _), tenant) = self.heads.pop_first()?;
        let lane = self.lanes.get_mut(&tenant)?;
        let q = lane.items.pop_front()?;
        debug_assert_eq!(q.start, start);
        if let Some(next) = lane.items.front() {
            self.heads.insert((next.start, next.seq), tenant);
        }
        self.vtime = self.vtime.max(start);
        self.len -= 1;
        self.bytes -= q.bytes;
        self.forget_idle_lanes();
        Some(q.item)
    }

    /// Take the inputs of one batch: in fair order, while fewer than `inputs_max` are
    /// taken and their bytes are under `bytes_max` (so at least one, and the last one
    /// taken may cross `bytes_max`, as it would in a FIFO batch).
    pub fn pop_batch(&mut self, inputs_max: usize, bytes_max: usize) -> Vec<T> {
        let mut out = Vec::new();
        let mut bytes = 0;
        while out.len() < inputs_max.max(1) && bytes < bytes_max {
            let Some((_, &tenant)) = self.heads.first_key_value() else { break };
            bytes += self.lanes.get(&tenant).and_then(|l| l.items.front()).map_or(0, |q| q.bytes);
            match self.pop() {
                Some(item) => out.push(item),
                None => break,
            }
        }
        out
    }

    /// The tenant whose backlog, divided by its weight, is longest (ties: the lowest id,
    /// so the choice is deterministic).
    fn longest_backlog(&self) -> Option<u64> {
        let mut best: Option<(u64, usize, u32)> = None;
        for (&id, lane) in &self.lanes {
            let n = lane.items.len();
            if n == 0 {
                continue;
            }
            let longer = best.is_none_or(|(_, bn, bw)| n as u128 * bw as u128 > bn as u128 * lane.weight as u128);
            if longer {
                best = Some((id, n, lane.weight));
            }
        }
        best.map(|(id, _, _)| id)
    }

    /// Is `victim`'s backlog longer than `tenant`'s would be with one more input?
    fn backlog_exceeds(&self, victim: u64, tenant: u64, weight: u32) -> bool {
        if victim == tenant {
            return false;
        }
        let Some(v) = self.lanes.get(&victim) else { return false };
        let mine = self.lanes.get(&tenant).map_or(0, |l| l.items.len()) + 1;
        v.items.len() as u128 * weight as u128 > mine as u128 * v.weight as u128
    }

    /// Would pushing out `victim`'s newest input leave room for `bytes` more?
    fn room_after_evicting(&self, victim: u64, bytes: usize) -> bool {
        let freed = self.lanes.get(&victim).and_then(|l| l.items.back()).map_or(0, |q| q.bytes);
        let (len, queued) = (self.len - 1, self.bytes - freed);
        len == 0 || (len < self.capacity && queued.saturating_add(bytes) <= self.bytes_capacity)
    }

    /// Remove `tenant`'s newest input, giving its virtual time back.
    fn pop_newest(&mut self, tenant: u64) -> Option<T> {
        let lane = self.lanes.get_mut(&tenant)?;
        let q = lane.items.pop_back()?;
        lane.finish = q.start;
        if lane.items.is_empty() {
            self.heads.remove(&(q.start, q.seq));
        }
        self.len -= 1;
        self.bytes -= q.bytes;
        Some(q.item)
    }

    /// Forget empty lanes whose finish tag virtual time has passed: a new input of theirs
    /// would start at the virtual time anyway.
    fn forget_idle_lanes(&mut self) {
        if self.lanes.len() > self.len + IDLE_LANES_MAX {
            let vtime = self.vtime;
            self.lanes.retain(|_, l| !l.items.is_empty() || l.finish > vtime);
        }
    }
}

/// Limits of one batch, as [`FairInbox`] closes them.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// How long a batch stays open after its first input.
    pub epoch: Duration,
    pub inputs_max: usize,
    pub bytes_max: usize,
}

struct InboxState<T> {
    queue: FairQueue<T>,
    closed: bool,
    /// When the oldest queued input arrived (its batch closes an epoch later).
    opened: Option<Instant>,
    /// The tenant of the last input pushed, and when an input last came from a different
    /// tenant than the one before it.
    last_tenant: Option<u64>,
    mixed_at: Option<Instant>,
}

/// A [`FairQueue`] shared by any number of producers and one consumer that takes whole
/// batches: [`FairInbox::next_batch_blocking`] on a thread, or [`FairInbox::next_batch`]
/// in a task.
pub struct FairInbox<T> {
    state: Mutex<InboxState<T>>,
    limits: BatchLimits,
    /// Wakes a blocking consumer.
    ready: Condvar,
    /// Wakes an async consumer.
    ready_async: tokio::sync::Notify,
}

impl<T> FairInbox<T> {
    pub fn new(capacity: usize, limits: BatchLimits) -> FairInbox<T> {
        FairInbox::with_queue(FairQueue::new(capacity), limits)
    }

    /// An inbox around a queue built with its own bounds (see [`FairQueue::with_bytes_capacity`]).
    pub fn with_queue(queue: FairQueue<T>, limits: BatchLimits) -> FairInbox<T> {
        FairInbox {
            state: Mutex::new(InboxState { queue, closed: false, opened: None, last_tenant: None, mixed_at: None }),
            limits,
            ready: Condvar::new(),
            ready_async: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, InboxState<T>> {
        // The state stays consistent across a panic (each method finishes its update
        // before anything can panic), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue an input. `Refused` also when the inbox is closed (check [`Self::is_closed`]).
    pub fn push(&self, tenant: Tenant, item: T, bytes: usize) -> Pushed<T> {
        let mut s = self.lock();
        if s.closed {
            return Pushed::Refused(item);
        }
        let r = s.queue.push(tenant, item, bytes);
        if s.last_tenant.is_some_and(|t| t != tenant.id) {
            s.mixed_at = Some(Instant::now());
        }
        s.last_tenant = Some(tenant.id);
        if s.opened.is_none() && !s.queue.is_empty() {
            s.opened = Some(Instant::now());
        }
        // Wake the consumer only when it has something to do: a first input opens a
        // batch, a full batch closes it early. Otherwise it sleeps until the epoch ends.
        let (n, b) = (s.queue.len(), s.queue.bytes());
        drop(s);
        if n == 1 || n >= self.limits.inputs_max || b >= self.limits.bytes_max {
            self.wake();
        }
        r
    }

    fn wake(&self) {
        self.ready.notify_one();
        self.ready_async.notify_one();
    }

    /// Stop accepting inputs; the consumer still drains what is queued.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Inputs queued.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Did more than one tenant push inputs within the last `window`? (Two inputs in a row
    /// from different tenants, the later one within the window.)
    pub fn mixed_within(&self, window: Duration) -> bool {
        self.lock().mixed_at.is_some_and(|t| t.elapsed() <= window)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn batch_full(&self, s: &InboxState<T>) -> bool {
        s.closed || s.queue.len() >= self.limits.inputs_max || s.queue.bytes() >= self.limits.bytes_max
    }

    /// When the open batch closes: an epoch after its oldest input arrived. Inputs that
    /// queued while the consumer was busy with the previous batch have waited already,
    /// so under load a batch closes as soon as the consumer is free.
    fn deadline(&self, s: &InboxState<T>, epoch: Duration) -> Instant {
        s.opened.unwrap_or_else(Instant::now) + epoch
    }

    fn take_batch(&self, s: &mut InboxState<T>, inputs_max: usize) -> Vec<T> {
        let batch = s.queue.pop_batch(inputs_max, self.limits.bytes_max);
        if s.queue.is_empty() {
            s.opened = None;
        }
        batch
    }

    /// Block until a batch closes (an epoch after its oldest input arrived, or full) and
    /// take it; None once the inbox is closed and drained.
    pub fn next_batch_blocking(&self) -> Option<Vec<T>> {
        // Without an idle bound the wait ends only with an input queued or the inbox closed.
        self.wait_input_or_idle(None).map(|_| self.close_batch())
    }

    /// Block until an input is queued (`Some(true)`), the inbox has been empty for `idle`
    /// (when given; `Some(false)`: the consumer's turn to do idle work,
    /// `tally_apply::IdleSweep`), or it is closed and drained (`None`). Nothing is taken:
    /// [`Self::close_batch`] takes the batch, and a consumer may hold it open between the
    /// two (the sequencer's logger does while its executor is busy).
    pub fn wait_input_or_idle(&self, idle: Option<Duration>) -> Option<bool> {
        let idle_until = idle.map(|d| Instant::now() + d);
        let mut s = self.lock();
        while s.queue.is_empty() {
            if s.closed {
                return None;
            }
            s = match idle_until {
                None => self.ready.wait(s).unwrap_or_else(|p| p.into_inner()),
                Some(t) => {
                    let left = t.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Some(false);
                    }
                    self.ready.wait_timeout(s, left).unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
        Some(true)
    }

    /// Wait until the open batch closes (an epoch after its oldest input, or full) and
    /// take it: empty only when nothing is queued.
    pub fn close_batch(&self) -> Vec<T> {
        let mut s = self.lock();
        let deadline = self.deadline(&s, self.limits.epoch);
        while !self.batch_full(&s) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s = self.ready.wait_timeout(s, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        self.take_batch(&mut s, self.limits.inputs_max)
    }

    /// [`Self::next_batch_blocking`] for a task.
    pub async fn next_batch(&self) -> Option<Vec<T>> {
        self.next_batch_capped(usize::MAX).await
    }

    /// [`Self::next_batch`] taking at most `cap` inputs (at least one). The batch still
    /// closes an epoch after its oldest input (or when full by the inbox's own limits),
    /// and the inputs left over open the next epoch: a capped consumer gets one batch an
    /// epoch, not a stream of small ones. Left-over inputs stay queued, where a tenant
    /// with nothing queued still goes ahead of them into the next batch.
    pub async fn next_batch_capped(&self, cap: usize) -> Option<Vec<T>> {
        self.next_batch_capped_within(cap, || self.limits.epoch).await
    }

    /// [`Self::next_batch_capped`] with the batch held open `epoch()` after its oldest
    /// input instead of the inbox's epoch (zero: taken at once), asked once there is an
    /// input: a consumer whose pipeline is idle need not hold a lone input an epoch.
    pub async fn next_batch_capped_within(&self, cap: usize, epoch: impl Fn() -> Duration) -> Option<Vec<T>> {
        let take_max = self.limits.inputs_max.min(cap).max(1);
        loop {
            let notified = self.ready_async.notified();
            {
                let s = self.lock();
                if !s.queue.is_empty() {
                    break;
                }
                if s.closed {
                    return None;
                }
            }
            notified.await;
        }
        let deadline = self.deadline(&self.lock(), epoch());
        loop {
            let notified = self.ready_async.notified();
            if self.batch_full(&self.lock()) {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        let mut s = self.lock();
        let batch = self.take_batch(&mut s, take_max);
        if take_max < self.limits.inputs_max && !s.queue.is_empty() {
            s.opened = Some(Instant::now());
        }
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: u64, weight: u32) -> Tenant {
        Tenant { id, weight }
    }

    fn push_ok<T: std::fmt::Debug>(q: &mut FairQueue<T>, tenant: Tenant, item: T) {
        assert!(matches!(q.push(tenant, item, 10), Pushed::Queued));
    }

    /// Under capacity and below a batch, every tenant's inputs go into the next batch.
    #[test]
    fn a_small_queue_is_taken_whole() {
        let mut q = FairQueue::new(100);
        for i in 0..5 {
            push_ok(&mut q, t(1, 1), i);
        }
        push_ok(&mut q, t(2, 1), 99);
        let mut b = q.pop_batch(10, usize::MAX);
        b.sort();
        assert_eq!(b, vec![0, 1, 2, 3, 4, 99]);
        assert!(q.is_empty() && q.bytes() == 0);
    }

    /// A quiet tenant's input arriving behind a flood's backlog makes the next batch.
    #[test]
    fn quiet_input_overtakes_a_backlog() {
        let mut q = FairQueue::new(1_000);
        for i in 0..500 {
            push_ok(&mut q, t(1, 1), i);
        }
        push_ok(&mut q, t(2, 1), 10_000);
        let batch = q.pop_batch(8, usize::MAX);
        assert!(batch.contains(&10_000), "{batch:?}");
        // FIFO within a tenant.
        let flood: Vec<_> = batch.iter().copied().filter(|&x| x < 10_000).collect();
        assert_eq!(flood, (0..flood.len() as i32).collect::<Vec<_>>());
    }

    /// Two backlogged tenants share batches by weight.
    #[test]
    fn weights_share_batches() {
        let mut q = FairQueue::new(10_000);
        for i in 0..1_000 {
            push_ok(&mut q, t(1, 1), (1, i));
            push_ok(&mut q, t(2, 4), (2, i));
        }
        let batch = q.pop_batch(100, usize::MAX);
        let heavy = batch.iter().filter(|(tenant, _)| *tenant == 2).count();
        assert!((78..=82).contains(&heavy), "weight-4 tenant got {heavy} of 100");
    }

    /// Large inputs cost more: a tenant sending big inputs gets fewer of them per batch.
    #[test]
    fn bytes_count_toward_cost() {
        let mut q = FairQueue::new(10_000);
        for i in 0..100 {
            q.push(t(1, 1), (1, i), COST_BYTES_UNIT * 3);
            q.push(t(2, 1), (2, i), 10);
        }
        let batch = q.pop_batch(50, usize::MAX);
        let big = batch.iter().filter(|(tenant, _)| *tenant == 1).count();
        assert!((9..=12).contains(&big), "big-input tenant got {big} of 50");
    }

    /// A full queue pushes out the longest backlog's newest input, never a quiet one's.
    #[test]
    fn a_full_queue_evicts_the_flood() {
        let mut q = FairQueue::new(4);
        for i in 0..4 {
            push_ok(&mut q, t(1, 1), i);
        }
        assert!(matches!(q.push(t(1, 1), 4, 10), Pushed::Refused(4)));
        assert!(matches!(q.push(t(2, 1), 100, 10), Pushed::Evicted(3)));
        assert!(matches!(q.push(t(2, 1), 101, 10), Pushed::Evicted(2)));
        // Now both hold two: the newcomer would hold the longest backlog.
        assert!(matches!(q.push(t(2, 1), 102, 10), Pushed::Refused(102)));
        assert_eq!(q.len(), 4);
        let mut all = q.pop_batch(10, usize::MAX);
        all.sort();
        assert_eq!(all, vec![0, 1, 100, 101]);
    }

    /// The byte bound closes a batch after the input that crosses it.
    #[test]
    fn byte_bound() {
        let mut q = FairQueue::new(100);
        for i in 0..10 {
            q.push(t(1, 1), i, 100);
        }
        assert_eq!(q.pop_batch(100, 250).len(), 3);
        assert_eq!(q.bytes(), 700);
    }

    /// The queue holds at most its bytes capacity: a flood's large inputs are refused, a
    /// quiet tenant's input pushes out the flood's newest, and a lone input may be larger.
    #[test]
    fn queue_bytes_capacity() {
        let mut q = FairQueue::new(100).with_bytes_capacity(1_000);
        for i in 0..4 {
            assert!(matches!(q.push(t(1, 1), i, 250), Pushed::Queued));
        }
        assert!(matches!(q.push(t(1, 1), 4, 250), Pushed::Refused(4)));
        assert!(matches!(q.push(t(2, 1), 9, 200), Pushed::Evicted(3)));
        assert_eq!(q.bytes(), 950);
        assert!(matches!(q.push(t(3, 1), 10, 600), Pushed::Refused(10)), "evicting one would not make room");
        let mut lone = FairQueue::new(100).with_bytes_capacity(10);
        assert!(matches!(lone.push(t(1, 1), 0, 50), Pushed::Queued));
    }

    /// Same operations, same batches.
    #[test]
    fn deterministic() {
        let run = || {
            let mut q = FairQueue::new(50);
            let mut out = Vec::new();
            for i in 0..200u64 {
                let _ = q.push(t(i % 7, (i % 3) as u32 + 1), i, (i * 37 % 1000) as usize);
                if i % 9 == 0 {
                    out.extend(q.pop_batch(5, 2_000));
                }
            }
            out
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn inbox_closes_batches_on_time_and_when_full() {
        let limits = BatchLimits { epoch: Duration::from_millis(20), inputs_max: 3, bytes_max: usize::MAX };
        let inbox = std::sync::Arc::new(FairInbox::new(100, limits));
        for i in 0..4 {
            assert!(matches!(inbox.push(Tenant::DEFAULT, i, 1), Pushed::Queued));
        }
        let started = Instant::now();
        assert_eq!(inbox.next_batch_blocking().map(|b| b.len()), Some(3), "full: closed at once");
        assert!(started.elapsed() < Duration::from_millis(15));
        assert_eq!(inbox.next_batch_blocking().map(|b| b.len()), Some(1), "closed by the epoch");
        assert!(started.elapsed() >= Duration::from_millis(20));
        let producer = {
            let inbox = inbox.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(5));
                inbox.push(Tenant::DEFAULT, 7, 1);
                inbox.close();
            })
        };
        assert_eq!(inbox.next_batch_blocking(), Some(vec![7]));
        assert_eq!(inbox.next_batch_blocking(), None);
        producer.join().unwrap();
        assert!(matches!(inbox.push(Tenant::DEFAULT, 8, 1), Pushed::Refused(8)));
    }

    /// Inputs that queued while the consumer was busy do not wait another epoch.
    #[test]
    fn inbox_epoch_counts_from_the_oldest_input() {
        let limits = BatchLimits { epoch: Duration::from_millis(30), inputs_max: 100, bytes_max: usize::MAX };
        let inbox = FairInbox::new(100, limits);
        inbox.push(Tenant::DEFAULT, 1, 1);
        std::thread::sleep(Duration::from_millis(40)); // the consumer was busy
        let started = Instant::now();
        assert_eq!(inbox.next_batch_blocking(), Some(vec![1]));
        assert!(started.elapsed() < Duration::from_millis(20));
    }

    #[test]
    fn inbox_async_consumer() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let limits = BatchLimits { epoch: Duration::from_millis(5), inputs_max: 100, bytes_max: usize::MAX };
        let inbox = std::sync::Arc::new(FairInbox::new(100, limits));
        rt.block_on(async {
            let consumer = {
                let inbox = inbox.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    while let Some(b) = inbox.next_batch().await {
                        got.extend(b);
                    }
                    got
                })
            };
            for i in 0..10 {
                inbox.push(t(i % 2, 1), i, 1);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            inbox.close();
            let mut got = consumer.await.unwrap();
            got.sort();
            assert_eq!(got, (0..10).collect::<Vec<_>>());
        });
    }

    /// A runtime with paused (virtual) time, and an inbox of 100 inputs closing batches of
    /// up to 100 inputs every `epoch`.
    fn paused_inbox(epoch: Duration) -> (tokio::runtime::Runtime, FairInbox<u64>) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        let limits = BatchLimits { epoch, inputs_max: 100, bytes_max: usize::MAX };
        (rt, FairInbox::new(100, limits))
    }

    /// A capped take leaves the rest queued and starts their epoch again: a paced consumer
    /// gets one batch an epoch, and a tenant with nothing queued goes ahead of the rest.
    #[test]
    fn a_capped_batch_leaves_the_rest_for_the_next_epoch() {
        let (rt, inbox) = paused_inbox(Duration::from_millis(10));
        rt.block_on(async {
            for i in 0..6 {
                inbox.push(t(1, 1), i, 1);
            }
            let started = Instant::now();
            // Six queued are more than the cap, yet the batch closes with the epoch, not at once.
            assert_eq!(inbox.next_batch_capped(2).await, Some(vec![0, 1]));
            assert_eq!(started.elapsed(), Duration::from_millis(10));
            inbox.push(t(2, 1), 100, 1);
            let cut = Instant::now();
            assert_eq!(inbox.next_batch_capped(2).await, Some(vec![100, 2]), "the other tenant goes first");
            assert_eq!(cut.elapsed(), Duration::from_millis(10), "the left-over inputs waited a new epoch");
            assert_eq!(inbox.next_batch_capped(0).await, Some(vec![3]), "a cap of 0 still takes one");
            assert_eq!(inbox.next_batch().await, Some(vec![4, 5]), "uncapped takes the rest");
        });
    }

    /// The epoch a consumer asks for is asked once an input is there: zero takes it at
    /// once, and a consumer that is busy again by the next input gets the full epoch.
    #[test]
    fn a_consumer_may_shorten_the_epoch_when_its_pipeline_is_idle() {
        let (rt, inbox) = paused_inbox(Duration::from_millis(10));
        rt.block_on(async {
            let idle = std::sync::atomic::AtomicBool::new(false);
            let epoch = || {
                if idle.load(std::sync::atomic::Ordering::Relaxed) {
                    Duration::ZERO
                } else {
                    Duration::from_millis(10)
                }
            };
            let inbox = &inbox;
            let taker = async { inbox.next_batch_capped_within(usize::MAX, epoch).await };
            let pusher = async {
                tokio::time::sleep(Duration::from_millis(3)).await;
                idle.store(true, std::sync::atomic::Ordering::Relaxed);
                inbox.push(t(1, 1), 7, 1);
            };
            let started = Instant::now();
            let (batch, ()) = tokio::join!(taker, pusher);
            assert_eq!(batch, Some(vec![7]));
            assert_eq!(started.elapsed(), Duration::from_millis(3), "taken as it arrived, not an epoch later");
            idle.store(false, std::sync::atomic::Ordering::Relaxed);
            inbox.push(t(1, 1), 8, 1);
            let cut = Instant::now();
            assert_eq!(inbox.next_batch_capped_within(usize::MAX, epoch).await, Some(vec![8]));
            assert_eq!(cut.elapsed(), Duration::from_millis(10), "a busy consumer holds it the epoch");
        });
    }

    #[test]
    fn the_inbox_notices_tenants_taking_turns() {
        let (rt, inbox) = paused_inbox(Duration::from_millis(10));
        rt.block_on(async {
            let window = Duration::from_secs(1);
            for i in 0..3 {
                inbox.push(t(1, 1), i, 1);
            }
            assert!(!inbox.mixed_within(window), "one tenant alone");
            inbox.push(t(2, 1), 9, 1);
            assert!(inbox.mixed_within(window));
            tokio::time::sleep(Duration::from_millis(1500)).await;
            inbox.push(t(2, 1), 10, 1);
            assert!(!inbox.mixed_within(window), "the last change of tenant is older than the window");
        });
    }

    /// An async consumer keeps epochs on its runtime's clock: under paused (virtual) time,
    /// as in the cluster simulation, a batch closes exactly an epoch of virtual time after
    /// its oldest input, however much wall-clock time passes.
    #[test]
    fn inbox_epochs_follow_tokio_time() {
        let (rt, inbox) = paused_inbox(Duration::from_millis(100));
        rt.block_on(async {
            std::thread::sleep(Duration::from_millis(5)); // wall-clock time only
            let started = Instant::now();
            inbox.push(Tenant::DEFAULT, 1, 1);
            std::thread::sleep(Duration::from_millis(5));
            assert_eq!(inbox.next_batch().await, Some(vec![1]));
            assert_eq!(started.elapsed(), Duration::from_millis(100));
            // Queued while the consumer was busy for longer than an epoch: taken at once.
            inbox.push(Tenant::DEFAULT, 2, 1);
            tokio::time::sleep(Duration::from_millis(150)).await;
            let busy_until = Instant::now();
            assert_eq!(inbox.next_batch().await, Some(vec![2]));
            assert_eq!(busy_until.elapsed(), Duration::ZERO);
        });
    }
}
