//! [`WriteBehind`]: a store whose commits return as soon as they are visible, while a
//! background thread writes them to the backend.
//!
//! # Why
//!
//! The executor applies every batch through one write batch, and once a second it makes the
//! store durable. On redb that durable commit writes out a second's worth of pages and
//! fsyncs, 70–120 ms during which no batch could be applied and every client waited. Behind
//! this queue the executor hands the commit over and goes on; the flusher thread does the
//! backend writes (several queued commits in one backend transaction) and the durable ones.
//!
//! # How reads stay exact
//!
//! A commit is queued as an overlay with a sequence number (or merged into the newest one,
//! see "Few layers"). A snapshot is the backend's view with the queued overlays stacked on
//! top ([`Layer`]), oldest at the bottom.
//! The flusher records the last sequence number it wrote in the backend's meta value
//! [`META_BEHIND_SEQ`], in the same backend transaction, and removes the overlays from the
//! queue only afterwards. A snapshot copies the queue first and opens the backend view
//! second, then drops the overlays the view already contains (sequence ≤ its recorded one),
//! so every commit is seen exactly once and the view is a prefix of the commits.
//!
//! A backend view that can be shared ([`Backend::shared_view`]: redb's read transactions)
//! is opened once per backend write, not once per snapshot: `State::written` counts the
//! backend writes that have completed, and a view opened while it was `n` is the backend's
//! current content for as long as it is still `n` (the overlays of writes that completed
//! later but not yet counted are still queued, above the view's recorded sequence).
//!
//! # Few layers
//!
//! Every read goes down the stack, so its depth is a cost on every read. Under 64 clients
//! of one-transfer requests the executor commits about 1,500 times a second (a batch, and
//! an early release within one), the flusher runs at a lower priority and writes in bursts,
//! and the stack was about 100 layers deep: reads, the search for a free id and the
//! retention sweep's walk went through every one. So a commit of at most
//! [`MERGE_COMMIT_BYTES_MAX`] counted bytes is merged into the newest queued entry
//! (`Overlay::absorb`, newer versions replacing older ones at the same key and ts, as the
//! top layer wins there), when three things hold:
//!
//! - no one else holds that entry: no snapshot and no flush (`Arc::get_mut`). An entry a
//!   reader can see never changes; the executor's own batch has let go of its view before
//!   it commits.
//! - the entry does not end at a commit that must be durable (a durable write ends exactly
//!   there, see below).
//! - the entry stays within [`MERGED_BYTES_MAX`] and one flush's bytes.
//!
//! An entry then holds consecutive commits and its sequence number is the last one's, so
//! the flusher writes and the views drop whole entries as before. The stack is a few
//! entries deep: what the flusher is writing, and the entry the executor commits into.
//!
//! # Held until due
//!
//! Each backend write copies every redb page it touches to a fresh one (between durable
//! commits redb cannot reuse the pages a commit frees), so its cost follows the pages it
//! touches more than the commits it holds: transfers between 100,000 accounts touch a
//! random page per account write, and a write a few milliseconds long touched each page
//! about once. So the flusher holds queued commits ([`BehindLimits::hold`]) and writes
//! them only when it must: when a durable write is wanted (the executor's checkpoint, once
//! a second, or [`Store::sync`]), when the queue reaches half of either bound (so a commit
//! rarely waits for room), when it has held them for [`HELD_FOR_MAX`] (a node that stops
//! writing has its queue emptied soon after, as before, though not durably), or when the
//! store closes. A node's flusher thus writes about once a second under load, a second of
//! commits in one backend transaction.
//!
//! Holding used to cost the reads: without merged entries the stack grew with every
//! commit held, and the executor read through all of them (docs/benchmarks.md,
//! "Held-back flushes and rarer checkpoints, measured again"). Merged, a second's commits
//! are a few entries of at most [`MERGED_BYTES_MAX`]. Nothing about durability or memory
//! changes: only a durable write ever made a commit durable, and the bounds are the same.
//!
//! # Durability
//!
//! `commit(durable=false)` and `commit(durable=true)` both return once the commit is queued
//! (visible to the next snapshot). Commits reach the backend in order; one committed with
//! `durable=true` reaches it in a durable backend transaction that ends with it, which makes
//! it and everything before it durable, and nothing after it (a caller may split one unit
//! into several non-durable commits and end it with a durable one). [`Store::sync`] waits until every commit made so far is durable. A
//! crash therefore loses a suffix of the commits, never a middle one and never part of one,
//! the same guarantee the synchronous store gives for its non-durable commits.
//!
//! # Priority
//!
//! The flusher runs at a lower priority than the rest of the process ([`FLUSH_NICE`]): its
//! work is behind the critical path, which runs through the executor and the request
//! threads, and when they want the cores it yields to them and catches up in batches
//! (more queued commits per backend transaction). It cannot fall behind unboundedly: the
//! bounds below stop the executor when the queue is full.
//!
//! # Bounds
//!
//! The queue holds at most [`BehindLimits::commits_max`] entries (commits, or merged runs
//! of them) and about [`BehindLimits::bytes_max`] bytes; a commit beyond either waits for
//! the flusher. A backend
//! write that fails stops the store: every later commit, snapshot and sync fails with that
//! error (the caller replays its log after a restart).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::batch::{Layer, Overlay, OverlayBatch, Sink, WriterLock};
use crate::{Batch, Result, Snapshot, StorageError, Store};

/// Meta value holding the sequence number of the last queued commit written to the
/// backend; reserved.
pub const META_BEHIND_SEQ: &str = "write_behind_seq";

/// What the flusher writes into.
pub(crate) trait Backend: Send + Sync + 'static {
    fn view(&self) -> Result<Box<dyn Snapshot>>;
    /// [`Backend::view`] as a view several snapshots may share, if this backend has one.
    fn shared_view(&self) -> Result<Option<Arc<dyn Snapshot + Sync>>> {
        Ok(None)
    }
    /// Write the overlays, in order, atomically.
    fn write(&self, overlays: &[&Overlay], durable: bool) -> Result<()>;
    /// [`Store::replace`] on the backend, recording `seq` as [`META_BEHIND_SEQ`] in the
    /// same durable transaction. By default as one overlay (in memory).
    fn replace(&self, fill: crate::Fill<'_>, seq: u64) -> Result<()> {
        let mut o = crate::replace::overlay_replacing(&*self.view()?, fill)?;
        o.set_meta(META_BEHIND_SEQ, seq.to_be_bytes().to_vec());
        self.write(&[&o], true)
    }
}

/// Bounds of the write-behind queue.
#[derive(Clone, Copy, Debug)]
pub struct BehindLimits {
    /// Queued entries (each is one layer every read walks through; merged commits are one).
    pub commits_max: usize,
    /// Approximate bytes of queued writes.
    pub bytes_max: usize,
    /// Approximate bytes the flusher writes in one backend transaction.
    pub flush_bytes_max: usize,
    /// Hold queued commits back until a durable write is due, the queue is half full
    /// (either bound), they have been held [`HELD_FOR_MAX`] or the store closes, so that
    /// one backend transaction covers as many commits as it can (see "Held until due");
    /// false writes whatever is queued as soon as the flusher gets to it.
    pub hold: bool,
}

impl Default for BehindLimits {
    fn default() -> Self {
        // 128 MiB: what the node writes between two checkpoints under 100,000-account
        // transfers is held until the checkpoint instead of half the queue's worth
        // (whose trigger, at 64 MiB, came first), and a lone larger commit is queued
        // alone. Its extra 64 MiB came out of the state store's page cache (tally-server
        // `node.rs`), so the node's bounds still add up to under 2 GiB; with 256 MiB they
        // added up to more.
        BehindLimits { commits_max: 256, bytes_max: 128 << 20, flush_bytes_max: 64 << 20, hold: true }
    }
}

impl BehindLimits {
    /// These limits with `hold` off: every queued commit is written as soon as the
    /// flusher gets to it.
    pub fn eager(self) -> BehindLimits {
        BehindLimits { hold: false, ..self }
    }
}

/// One entry of the queue: one commit, or consecutive commits merged into one overlay
/// (see "Few layers"); `seq` is the last commit it holds.
struct Queued {
    seq: u64,
    overlay: Arc<Overlay>,
}

/// A commit whose overlay counts at most this many bytes is merged into the newest queued
/// entry when it can be (see "Few layers"). The merge runs under the queue's lock, so this
/// bounds how long a snapshot waits for one (≈ 0.1 ms); a larger commit, a bulk load's,
/// is a layer of its own. At 32 KiB most commits of one-transfer batches (70 KiB on
/// average, their transactions' leaf records included) stayed layers of their own and
/// the stack was still about 70 deep; at 256 KiB it is about 3, with hot transfers
/// 19,958–21,056 → 21,892–22,256/s and 100-transfer requests neutral to +3 %.
pub const MERGE_COMMIT_BYTES_MAX: usize = 256 << 10;

/// The longest the flusher holds commits when nothing else makes a write due (see "Held
/// until due"): under load the executor's checkpoint (once a second) comes first; a node
/// that stops writing has its last commits in the backend this long after, and its queue
/// empty.
pub const HELD_FOR_MAX: std::time::Duration = std::time::Duration::from_secs(3);

/// The bytes a merged entry grows to at most (and at most [`BehindLimits::flush_bytes_max`]).
pub const MERGED_BYTES_MAX: usize = 4 << 20;

struct State {
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    /// Sequence number of the last commit queued.
    last_seq: u64,
    /// The last commit written to the backend, and the last written durably.
    flushed_seq: u64,
    durable_seq: u64,
    /// The last commit that must be written durably.
    durable_wanted: u64,
    /// Backend writes completed (flushes and replacements); see "How reads stay exact".
    written: u64,
    failed: Option<String>,
    /// Called once, from the flusher, when a backend write fails (see
    /// [`WriteBehind::on_failure`]).
    on_failure: Option<FailureHook>,
    closed: bool,
}

impl State {
    /// Whether the flusher has something to write now: a durable write is wanted, or
    /// anything is queued and the store is not holding it back (see "Held until due").
    fn flush_due(&self, limits: &BehindLimits) -> bool {
        self.durable_wanted > self.durable_seq
            || (!self.queue.is_empty()
                && (!limits.hold
                    || self.closed
                    || self.queue.len() >= limits.commits_max.div_ceil(2)
                    || self.queued_bytes >= limits.bytes_max / 2))
    }
}

/// What to do when the store stops (see [`WriteBehind::on_failure`]).
type FailureHook = Box<dyn FnOnce(&str) + Send>;

struct Shared {
    state: Mutex<State>,
    /// Wakes the flusher.
    work: Condvar,
    /// Wakes committers waiting for room and `sync` waiting for durability.
    progress: Condvar,
    limits: BehindLimits,
}

impl Shared {
    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| StorageError::Corrupt("write-behind lock poisoned by a panic".into()))
    }
}

fn failed(reason: &str) -> StorageError {
    StorageError::Io(format!("an earlier background write failed, the store is stopped: {reason}"))
}

/// A [`Store`] over a backend, with commits written behind; see the module doc.
pub struct WriteBehind {
    backend: Arc<dyn Backend>,
    shared: Arc<Shared>,
    /// What its batches remember (`crate::remembered`).
    shelf: crate::remembered::Shelf,
    writer: WriterLock,
    flusher: Mutex<Option<JoinHandle<()>>>,
    /// The last shared backend view opened, for the snapshots taken until the next
    /// backend write.
    base: Mutex<Option<Base>>,
}

/// A shared backend view: opened when `State::written` was `written`; `seq` is the last
/// commit it holds (its [`META_BEHIND_SEQ`]).
struct Base {
    written: u64,
    seq: u64,
    view: Arc<dyn Snapshot + Sync>,
}

/// A snapshot reading a shared backend view.
struct SharedView(Arc<dyn Snapshot + Sync>);

impl Snapshot for SharedView {
    fn get(&self, space: crate::Space, key: &[u8], at: crate::Ts) -> Result<Option<crate::Version>> {
        self.0.get(space, key, at)
    }
    fn get_hashed(&self, space: crate::Space, key: &[u8], hash: u64, at: crate::Ts) -> Result<Option<crate::Version>> {
        self.0.get_hashed(space, key, hash, at)
    }
    fn history<'a>(
        &'a self,
        space: crate::Space,
        key: &[u8],
        lo: crate::Ts,
        hi: crate::Ts,
        desc: bool,
    ) -> Result<crate::HistIter<'a>> {
        self.0.history(space, key, lo, hi, desc)
    }
    fn scan<'a>(
        &'a self,
        space: crate::Space,
        prefix: &[u8],
        from: Option<&[u8]>,
        desc: bool,
        at: crate::Ts,
    ) -> Result<crate::ScanIter<'a>> {
        self.0.scan(space, prefix, from, desc, at)
    }
    fn scan_heads<'a>(
        &'a self,
        space: crate::Space,
        prefix: &[u8],
        from: Option<&[u8]>,
        desc: bool,
        at: crate::Ts,
        head: usize,
    ) -> Result<crate::ScanIter<'a>> {
        self.0.scan_heads(space, prefix, from, desc, at, head)
    }
    fn versions_from<'a>(&'a self, space: crate::Space, from: Option<&[u8]>) -> Result<crate::ScanIter<'a>> {
        self.0.versions_from(space, from)
    }
    fn next_key_bound(&self, space: crate::Space, from: &[u8]) -> Result<Option<Vec<u8>>> {
        self.0.next_key_bound(space, from)
    }
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.0.meta(key)
    }
    fn ts_bound(&self) -> crate::Ts {
        self.0.ts_bound()
    }
}

fn seq_of(view: &dyn Snapshot) -> Result<u64> {
    Ok(match view.meta(META_BEHIND_SEQ)? {
        Some(b) => u64::from_be_bytes(
            b.as_slice().try_into().map_err(|_| StorageError::Corrupt(format!("{META_BEHIND_SEQ} is not 8 bytes")))?,
        ),
        None => 0,
    })
}

impl WriteBehind {
    pub(crate) fn start(backend: Box<dyn Backend>, limits: BehindLimits) -> Result<WriteBehind> {
        let backend: Arc<dyn Backend> = Arc::from(backend);
        let seq = seq_of(&*backend.view()?)?;
        let limits = BehindLimits { commits_max: limits.commits_max.max(1), ..limits };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                queued_bytes: 0,
                last_seq: seq,
                flushed_seq: seq,
                durable_seq: seq,
                durable_wanted: seq,
                written: 0,
                failed: None,
                on_failure: None,
                closed: false,
            }),
            work: Condvar::new(),
            progress: Condvar::new(),
            limits,
        });
        let (b, s) = (Arc::clone(&backend), Arc::clone(&shared));
        let flusher = std::thread::Builder::new()
            .name("tally-store-flush".into())
            .spawn(move || {
                lower_priority();
                flush_loop(&*b, &s)
            })
            .map_err(|e| StorageError::Io(format!("starting the store's flush thread: {e}")))?;
        Ok(WriteBehind {
            backend,
            shared,
            shelf: crate::remembered::new_shelf(),
            writer: WriterLock::default(),
            flusher: Mutex::new(Some(flusher)),
            base: Mutex::new(None),
        })
    }

    fn view(&self) -> Result<Box<dyn Snapshot>> {
        // Queue first, backend second: see "How reads stay exact".
        let (queued, written): (Vec<(u64, Arc<Overlay>)>, u64) = {
            let st = self.shared.lock()?;
            if let Some(reason) = &st.failed {
                return Err(failed(reason));
            }
            (st.queue.iter().map(|q| (q.seq, Arc::clone(&q.overlay))).collect(), st.written)
        };
        let (mut view, written): (Box<dyn Snapshot>, u64) = match self.shared_base(written)? {
            Some((view, seq)) => (Box::new(SharedView(view)), seq),
            None => {
                let view = self.backend.view()?;
                if queued.is_empty() {
                    return Ok(view);
                }
                let seq = seq_of(&*view)?;
                (view, seq)
            }
        };
        for (seq, overlay) in queued {
            if seq > written {
                view = Box::new(Layer::new(view, overlay));
            }
        }
        Ok(view)
    }

    /// The shared backend view for `written` completed backend writes, and the last
    /// commit it holds: the one opened before if no write completed since, else a new one.
    /// None if the backend has no shared views.
    fn shared_base(&self, written: u64) -> Result<Option<(Arc<dyn Snapshot + Sync>, u64)>> {
        let mut base = self.base.lock().map_err(|_| failed("lock poisoned"))?;
        if let Some(b) = base.as_ref().filter(|b| b.written == written) {
            return Ok(Some((Arc::clone(&b.view), b.seq)));
        }
        let Some(view) = self.backend.shared_view()? else { return Ok(None) };
        let seq = seq_of(&*view)?;
        *base = Some(Base { written, seq, view: Arc::clone(&view) });
        Ok(Some((view, seq)))
    }

    /// Call `hook` with the reason as soon as a background write fails (at once if one
    /// already has). Without it the failure surfaces only at the next commit, snapshot or
    /// sync — reads then fail while nothing writes, for as long as nothing writes; a
    /// server stops at once instead (the state is derived from its log).
    ///
    /// The hook runs with the store locked, before any commit, snapshot or sync can
    /// return the failure, so it must not use the store. A hook that ends the process
    /// is thus the failure's only report.
    pub fn on_failure(&self, hook: impl FnOnce(&str) + Send + 'static) {
        let Ok(mut st) = self.shared.lock() else { return };
        match st.failed.clone() {
            Some(reason) => {
                drop(st);
                hook(&reason);
            }
            None => st.on_failure = Some(Box::new(hook)),
        }
    }

    /// Entries queued and not yet written to the backend (a merged run of commits counts once;
    /// for tests and metrics).
    pub fn queued(&self) -> usize {
        self.shared.lock().map(|st| st.queue.len()).unwrap_or(0)
    }
}

/// Niceness of the flusher thread (0 is normal, 19 the lowest priority); any thread may
/// lower its own priority. On a 2-core machine under 64 clients of hot transfers, the
/// flusher at 10 instead of 0 left the executor and the request threads fewer waits for
/// a core: 15,129–15,266 → 16,209–16,411 transfers/s, and neutral to +2 % at 100,000
/// accounts (docs/benchmarks.md, "The flusher at a lower priority").
pub const FLUSH_NICE: i32 = 10;

#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: setpriority and gettid take plain integers and touch no memory of ours; on
    // Linux PRIO_PROCESS with a thread id sets that thread's niceness only. Lowering one's
    // own priority needs no privilege; if it fails anyway, the thread runs at normal
    // priority, as before.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, FLUSH_NICE);
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

fn flush_loop(backend: &dyn Backend, shared: &Shared) {
    // When the flusher first saw the commits it now holds.
    let mut held_since: Option<std::time::Instant> = None;
    loop {
        let (group, last, durable) = {
            let Ok(mut st) = shared.lock() else { return };
            loop {
                if st.failed.is_some() {
                    return;
                }
                if st.flush_due(&shared.limits) {
                    break;
                }
                if st.closed {
                    return;
                }
                if st.queue.is_empty() {
                    held_since = None;
                    st = match shared.work.wait(st) {
                        Ok(g) => g,
                        Err(_) => return,
                    };
                    continue;
                }
                // Held: written once a durable write or half the queue is due, or after
                // HELD_FOR_MAX, whichever comes first.
                let since = *held_since.get_or_insert_with(std::time::Instant::now);
                let Some(left) = HELD_FOR_MAX.checked_sub(since.elapsed()).filter(|d| !d.is_zero()) else {
                    break;
                };
                st = match shared.work.wait_timeout(st, left) {
                    Ok((g, _)) => g,
                    Err(_) => return,
                };
            }
            held_since = None;
            let mut bytes = 0;
            let mut group = Vec::new();
            let mut last = st.flushed_seq;
            let durable_due = st.durable_wanted > st.durable_seq;
            for q in &st.queue {
                if !group.is_empty() && bytes + q.overlay.bytes > shared.limits.flush_bytes_max {
                    break;
                }
                bytes += q.overlay.bytes;
                group.push(Arc::clone(&q.overlay));
                last = q.seq;
                // A durable write ends exactly at the commit that asked for it: the commits
                // after it may be parts of a larger unit the caller has not finished.
                if durable_due && q.seq == st.durable_wanted {
                    break;
                }
            }
            let durable = st.durable_wanted > st.durable_seq && st.durable_wanted <= last;
            (group, last, durable)
        };
        let mut mark = Overlay::default();
        mark.set_meta(META_BEHIND_SEQ, last.to_be_bytes().to_vec());
        let mut refs: Vec<&Overlay> = group.iter().map(|o| &**o).collect();
        refs.push(&mark);
        // A panic in the backend must not leave `sync` waiting for a thread that is gone.
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| backend.write(&refs, durable)))
            .unwrap_or_else(|_| Err(StorageError::Backend("the backend panicked while writing".into())));
        let Ok(mut st) = shared.lock() else { return };
        match written {
            Ok(()) => {
                st.written += 1;
                st.flushed_seq = last;
                if durable {
                    st.durable_seq = last;
                }
                for _ in 0..group.len() {
                    if let Some(q) = st.queue.pop_front() {
                        st.queued_bytes -= q.overlay.bytes;
                    }
                }
            }
            Err(e) => {
                let reason = e.to_string();
                // The hook runs before anyone can see the store stopped: the lock is held
                // until it returns, so a server's hook (which stops the process) is the
                // only one to report the failure, not raced by a commit or read that met
                // the stopped store and reports it differently.
                if let Some(hook) = st.on_failure.take() {
                    hook(&reason);
                }
                st.failed = Some(reason);
            }
        }
        drop(st);
        // Drop the overlays outside the lock: freeing a large one takes a while.
        drop(group);
        shared.progress.notify_all();
    }
}

struct BehindSink(Arc<Shared>);

impl Sink for BehindSink {
    fn apply(self: Box<Self>, overlay: Overlay, durable: bool) -> Result<()> {
        let shared = &self.0;
        let mut st = shared.lock()?;
        loop {
            if let Some(reason) = &st.failed {
                return Err(failed(reason));
            }
            let full = st.queue.len() >= shared.limits.commits_max
                || (!st.queue.is_empty() && st.queued_bytes + overlay.bytes > shared.limits.bytes_max);
            if !full {
                break;
            }
            st = shared.progress.wait(st).map_err(|_| failed("lock poisoned"))?;
        }
        st.last_seq += 1;
        let seq = st.last_seq;
        // The first commit into an empty queue wakes the flusher, which starts the
        // time it may hold commits for (HELD_FOR_MAX).
        let first = st.queue.is_empty();
        st.queued_bytes += overlay.bytes;
        // Into the newest entry when it is nobody else's (no snapshot or flush holds it, so
        // no reader can see it change) and does not end at a commit that must be durable
        // (a durable write ends exactly there).
        let cap = MERGED_BYTES_MAX.min(shared.limits.flush_bytes_max);
        let durable_wanted = st.durable_wanted;
        let newest = st.queue.back_mut().filter(|q| {
            overlay.bytes <= MERGE_COMMIT_BYTES_MAX && q.seq != durable_wanted && q.overlay.bytes + overlay.bytes <= cap
        });
        let newest = newest.and_then(|q| {
            let Queued { seq: last, overlay: o } = q;
            Arc::get_mut(o).map(|o| (last, o))
        });
        match newest {
            Some((last, o)) => {
                o.absorb(overlay);
                *last = seq;
            }
            None => st.queue.push_back(Queued { seq, overlay: Arc::new(overlay) }),
        }
        if durable {
            st.durable_wanted = seq;
        }
        // Wake the flusher only when it has something to do: a held commit would wake it
        // for nothing (about 1,500 times a second under 64 clients).
        let due = first || st.flush_due(&shared.limits);
        drop(st);
        if due {
            shared.work.notify_one();
        }
        Ok(())
    }
}

impl Store for WriteBehind {
    fn snapshot(&self) -> Result<Box<dyn Snapshot>> {
        self.view()
    }

    fn begin(&self) -> Result<Box<dyn Batch>> {
        let guard = self.writer.acquire()?;
        let base = self.view()?;
        Ok(Box::new(OverlayBatch::new(
            base,
            Box::new(BehindSink(Arc::clone(&self.shared))),
            Arc::clone(&self.shelf),
            guard,
        )))
    }

    fn sync(&self) -> Result<()> {
        let shared = &self.shared;
        let mut st = shared.lock()?;
        let target = st.last_seq;
        if st.durable_seq >= target {
            return Ok(());
        }
        st.durable_wanted = st.durable_wanted.max(target);
        shared.work.notify_one();
        while st.durable_seq < target {
            if let Some(reason) = &st.failed {
                return Err(failed(reason));
            }
            st = shared.progress.wait(st).map_err(|_| failed("lock poisoned"))?;
        }
        Ok(())
    }

    fn wait_requested_durable(&self) -> Result<()> {
        self.wait_durable_wanted()
    }

    /// Holds the writer (no commit can be queued meanwhile), waits until every queued
    /// commit is durably in the backend, then replaces the backend's content in one
    /// transaction. A snapshot taken meanwhile has no queued overlay to stack, so it is
    /// the backend's view before or after that transaction.
    fn replace(&self, fill: crate::Fill<'_>) -> Result<()> {
        let _writer = self.writer.acquire()?;
        crate::remembered::lock(&self.shelf).clear();
        self.sync()?;
        let seq = {
            let st = self.shared.lock()?;
            if !st.queue.is_empty() {
                return Err(StorageError::Backend("commits were queued while the writer was held".into()));
            }
            st.last_seq
        };
        let replaced = self.backend.replace(fill, seq);
        // Counted even if it failed: the backend may hold part of it.
        self.shared.lock()?.written += 1;
        replaced
    }
}

impl WriteBehind {
    /// [`Store::wait_requested_durable`]: waits for the durable write the last
    /// `commit(durable = true)` asked for, never asking for one itself.
    fn wait_durable_wanted(&self) -> Result<()> {
        let shared = &self.shared;
        let mut st = shared.lock()?;
        let target = st.durable_wanted;
        while st.durable_seq < target {
            if let Some(reason) = &st.failed {
                return Err(failed(reason));
            }
            st = shared.progress.wait(st).map_err(|_| failed("lock poisoned"))?;
        }
        Ok(())
    }
}

impl Drop for WriteBehind {
    /// Writes out what is queued, durably, and stops the flusher.
    fn drop(&mut self) {
        if let Ok(mut base) = self.base.lock() {
            base.take();
        }
        let _ = self.sync();
        if let Ok(mut st) = self.shared.lock() {
            st.closed = true;
        }
        self.shared.work.notify_all();
        if let Some(h) = self.flusher.lock().ok().and_then(|mut h| h.take()) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemStore, Space};
    use std::sync::mpsc;

    /// Records each backend write (the `n` meta of every overlay in it, and whether it was
    /// durable); the first write waits for a signal, so commits queue behind it.
    struct Recorder {
        inner: MemStore,
        writes: Mutex<Vec<(Vec<u8>, bool)>>,
        gate: Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>,
    }

    impl Backend for Arc<Recorder> {
        fn view(&self) -> Result<Box<dyn Snapshot>> {
            self.inner.view()
        }
        fn write(&self, overlays: &[&Overlay], durable: bool) -> Result<()> {
            let gate = self.gate.lock().unwrap().take();
            if let Some((entered, gate)) = gate {
                let _ = entered.send(());
                let _ = gate.recv();
            }
            // The commits' own keys: merged commits write theirs in one overlay.
            let ns = overlays.iter().flat_map(|o| o.docs.keys().map(|(k, _)| k[0])).collect();
            self.writes.lock().unwrap().push((ns, durable));
            self.inner.write(overlays, durable)
        }
    }

    /// A recorder whose first write waits: it says so on `entered`, then waits for `open`.
    fn gated_recorder() -> (Arc<Recorder>, mpsc::Sender<()>, mpsc::Receiver<()>) {
        let (open, gate) = mpsc::channel();
        let (entered_tx, entered) = mpsc::channel();
        let rec = Arc::new(Recorder {
            inner: MemStore::new(),
            writes: Mutex::new(Vec::new()),
            gate: Mutex::new(Some((entered_tx, gate))),
        });
        (rec, open, entered)
    }

    fn commit(store: &WriteBehind, n: u8, durable: bool) {
        let mut b = store.begin().unwrap();
        b.put(Space::Docs, &[n], 1, &[n]).unwrap();
        b.set_meta("n", &[n]).unwrap();
        b.commit(durable).unwrap();
    }

    /// Fails (or panics) on every write.
    struct Broken(MemStore, bool);

    impl Backend for Broken {
        fn view(&self) -> Result<Box<dyn Snapshot>> {
            self.0.view()
        }
        fn write(&self, _: &[&Overlay], _: bool) -> Result<()> {
            if self.1 {
                panic!("backend bug");
            }
            Err(StorageError::Io("disk full".into()))
        }
    }

    /// A failed background write stops the store: sync, commits and snapshots fail with
    /// it instead of hanging or going on without the lost commit.
    #[test]
    fn a_failed_background_write_stops_the_store() {
        for panics in [false, true] {
            let store =
                WriteBehind::start(Box::new(Broken(MemStore::new(), panics)), BehindLimits::default().eager()).unwrap();
            commit(&store, 1, false);
            let err = store.sync().unwrap_err().to_string();
            assert!(err.contains(if panics { "panicked" } else { "disk full" }), "{err}");
            assert!(store.snapshot().is_err());
            assert!(store.begin().is_err());
        }
    }

    /// The failure hook runs as soon as a background write fails, with no commit, read or
    /// sync to notice it; one set after the failure runs at once.
    #[test]
    fn the_failure_hook_runs_when_the_write_fails() {
        let store =
            WriteBehind::start(Box::new(Broken(MemStore::new(), false)), BehindLimits::default().eager()).unwrap();
        let (tx, rx) = mpsc::channel();
        store.on_failure(move |why| tx.send(why.to_string()).unwrap());
        commit(&store, 1, false);
        let why = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert!(why.contains("disk full"), "{why}");
        let (tx, rx) = mpsc::channel();
        store.on_failure(move |why| tx.send(why.to_string()).unwrap());
        assert!(rx.try_recv().unwrap().contains("disk full"));
    }

    /// While the hook runs, no commit, read or sync returns the failure: a server's hook
    /// ends the process and must be the failure's only report.
    #[test]
    fn nothing_sees_the_failure_before_the_hook_returns() {
        let store = Arc::new(
            WriteBehind::start(Box::new(Broken(MemStore::new(), false)), BehindLimits::default().eager()).unwrap(),
        );
        let (entered_tx, entered) = mpsc::channel();
        let (open, gate) = mpsc::channel::<()>();
        store.on_failure(move |_| {
            entered_tx.send(()).unwrap();
            gate.recv().unwrap();
        });
        commit(&store, 1, false);
        entered.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        let (seen_tx, seen) = mpsc::channel();
        let s2 = Arc::clone(&store);
        let reader = std::thread::spawn(move || seen_tx.send(s2.snapshot().is_err()).unwrap());
        assert!(
            seen.recv_timeout(std::time::Duration::from_millis(300)).is_err(),
            "a read saw the failure during the hook"
        );
        open.send(()).unwrap();
        assert!(seen.recv_timeout(std::time::Duration::from_secs(10)).unwrap(), "after the hook the read fails");
        reader.join().unwrap();
    }

    #[test]
    fn a_durable_write_ends_at_the_commit_that_asked_for_it() {
        let (rec, open, entered) = gated_recorder();
        let store = WriteBehind::start(Box::new(Arc::clone(&rec)), BehindLimits::default().eager()).unwrap();
        commit(&store, 0, false);
        // The flusher is now held in its first write; these queue behind it.
        entered.recv().unwrap();
        commit(&store, 1, false);
        commit(&store, 2, true);
        commit(&store, 3, false);
        commit(&store, 4, false);
        // Every commit is visible before any reached the backend.
        let snap = store.snapshot().unwrap();
        for n in 0..=4u8 {
            assert_eq!(snap.get(Space::Docs, &[n], 1).unwrap().map(|v| v.value), Some(vec![n]));
        }
        drop(snap);
        open.send(()).unwrap();
        while store.queued() > 0 {
            std::thread::yield_now();
        }
        let writes = rec.writes.lock().unwrap().clone();
        let durable: Vec<_> = writes.iter().filter(|(_, d)| *d).map(|(ns, _)| ns.clone()).collect();
        assert_eq!(durable.first().and_then(|ns| ns.last()), Some(&2), "writes: {writes:?}");
        assert_eq!(writes.len(), 3, "0 alone, then 1–2 durable, then 3–4: {writes:?}");
        assert!(!writes[2].1);
        let order: Vec<u8> = writes.iter().flat_map(|(ns, _)| ns.clone()).collect();
        assert_eq!(order, [0, 1, 2, 3, 4], "every commit written once, in order: {writes:?}");
        store.sync().unwrap();
        assert_eq!(rec.writes.lock().unwrap().last().map(|w| w.1), Some(true), "sync wrote durably");
    }

    /// Small commits merge into the newest queued entry, except into one a snapshot or
    /// the flusher holds (so no reader sees an entry change) or one that ends at a commit
    /// that must be durable; a large commit is an entry of its own. Reads and writes are
    /// as if each commit were its own layer.
    #[test]
    fn small_commits_merge_into_the_newest_entry_nobody_holds() {
        let (rec, open, entered) = gated_recorder();
        let store = WriteBehind::start(Box::new(Arc::clone(&rec)), BehindLimits::default().eager()).unwrap();
        // Dropped before the store if an assertion fails, so the held flusher goes on.
        let open = open;
        commit(&store, 0, false);
        entered.recv().unwrap();
        // The flusher holds 0; 1 and 2 become one entry.
        commit(&store, 1, false);
        commit(&store, 2, false);
        assert_eq!(store.queued(), 2);
        // A snapshot holds that entry: 3 starts another, which the snapshot never sees.
        let snap = store.snapshot().unwrap();
        commit(&store, 3, false);
        assert_eq!(store.queued(), 3);
        assert_eq!(snap.get(Space::Docs, &[2], 1).unwrap().map(|v| v.value), Some(vec![2]));
        assert_eq!(snap.get(Space::Docs, &[3], 1).unwrap(), None);
        assert_eq!(snap.meta("n").unwrap(), Some(vec![2]));
        drop(snap);
        // 4 asks for durability: it joins 3, and the entry ends there.
        commit(&store, 4, true);
        commit(&store, 5, false);
        assert_eq!(store.queued(), 4);
        // A large commit is a layer of its own; a small one may join it.
        let mut b = store.begin().unwrap();
        b.put(Space::Docs, &[6], 1, &vec![6; MERGE_COMMIT_BYTES_MAX + 1]).unwrap();
        b.commit(false).unwrap();
        assert_eq!(store.queued(), 5);
        commit(&store, 7, false);
        assert_eq!(store.queued(), 5);
        let snap = store.snapshot().unwrap();
        for n in [0u8, 1, 2, 3, 4, 5, 7] {
            assert_eq!(snap.get(Space::Docs, &[n], 1).unwrap().map(|v| v.value), Some(vec![n]));
        }
        assert_eq!(snap.meta("n").unwrap(), Some(vec![7]));
        drop(snap);
        open.send(()).unwrap();
        while store.queued() > 0 {
            std::thread::yield_now();
        }
        let writes = rec.writes.lock().unwrap().clone();
        assert_eq!(writes[..2], [(vec![0], false), (vec![1, 2, 3, 4], true)], "{writes:?}");
        let order: Vec<u8> = writes.iter().flat_map(|(ns, _)| ns.clone()).collect();
        assert_eq!(order, [0, 1, 2, 3, 4, 5, 6, 7], "every commit written once, in order: {writes:?}");
        assert!(writes[2..].iter().all(|w| !w.1), "{writes:?}");
    }

    /// `wait_requested_durable` waits for the durable write a commit asked for and makes
    /// no later commit durable (a mid-unit commit stays non-durable).
    #[test]
    fn waiting_for_the_requested_durable_write_asks_for_no_other() {
        let (rec, open, entered) = gated_recorder();
        let store = Arc::new(WriteBehind::start(Box::new(Arc::clone(&rec)), BehindLimits::default().eager()).unwrap());
        store.wait_requested_durable().unwrap();
        commit(&store, 0, false);
        entered.recv().unwrap();
        commit(&store, 1, true);
        commit(&store, 2, false);
        let waiter = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || store.wait_requested_durable())
        };
        open.send(()).unwrap();
        waiter.join().unwrap().unwrap();
        while store.queued() > 0 {
            std::thread::yield_now();
        }
        let writes = rec.writes.lock().unwrap().clone();
        let durable: Vec<u8> = writes.iter().filter(|(_, d)| *d).flat_map(|(ns, _)| ns.clone()).collect();
        assert_eq!(durable.last(), Some(&1), "the durable write ends at commit 1: {writes:?}");
        assert!(writes.iter().all(|(ns, d)| !ns.contains(&2) || !*d), "commit 2 is not durable: {writes:?}");
    }

    /// Held (the default), commits wait in the queue until a durable write is wanted, the
    /// queue is half full by entries or by bytes, they have waited `HELD_FOR_MAX`, or the
    /// store closes; then everything held goes in one backend write.
    #[test]
    fn held_commits_are_written_when_a_durable_write_or_half_the_queue_is_due() {
        let rec = Arc::new(Recorder { inner: MemStore::new(), writes: Mutex::new(Vec::new()), gate: Mutex::new(None) });
        let limits = BehindLimits { commits_max: 8, bytes_max: 64 << 10, flush_bytes_max: 1 << 20, hold: true };
        let store = WriteBehind::start(Box::new(Arc::clone(&rec)), limits).unwrap();
        let settled = |store: &WriteBehind| {
            while store.queued() > 0 {
                std::thread::yield_now();
            }
        };
        for n in 0..4 {
            commit(&store, n, false);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(rec.writes.lock().unwrap().is_empty(), "nothing is due yet: {:?}", rec.writes.lock().unwrap());
        let snap = store.snapshot().unwrap();
        assert_eq!(snap.get(Space::Docs, &[3], 1).unwrap().map(|v| v.value), Some(vec![3]), "held commits are read");
        drop(snap);
        // A durable commit writes everything held, ending with it.
        commit(&store, 4, true);
        settled(&store);
        assert_eq!(*rec.writes.lock().unwrap(), [(vec![0, 1, 2, 3, 4], true)]);
        // Four entries (a snapshot keeps each commit from merging into the one before) are
        // half of eight.
        let mut snaps = Vec::new();
        for n in 5..8 {
            commit(&store, n, false);
            snaps.push(store.snapshot().unwrap());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(rec.writes.lock().unwrap().len(), 1, "three of eight entries are held");
        commit(&store, 8, false);
        drop(snaps);
        settled(&store);
        assert_eq!(rec.writes.lock().unwrap()[1], (vec![5, 6, 7, 8], false));
        // Half the bytes: one commit of 40 KiB of 64.
        let mut b = store.begin().unwrap();
        b.put(Space::Docs, &[9], 1, &vec![9; 40 << 10]).unwrap();
        b.commit(false).unwrap();
        settled(&store);
        assert_eq!(rec.writes.lock().unwrap()[2], (vec![9], false));
        // Nothing else due: written, not durably, once held for HELD_FOR_MAX.
        let t = std::time::Instant::now();
        commit(&store, 10, false);
        while store.queued() > 0 {
            assert!(t.elapsed() < HELD_FOR_MAX * 3, "still held after {:?}", t.elapsed());
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(t.elapsed() >= HELD_FOR_MAX, "written after {:?}", t.elapsed());
        assert_eq!(rec.writes.lock().unwrap()[3], (vec![10], false));
        // Closing writes what is held.
        commit(&store, 11, false);
        drop(store);
        assert_eq!(rec.writes.lock().unwrap()[4], (vec![11], true));
        assert_eq!(rec.inner.view().unwrap().get(Space::Docs, &[11], 1).unwrap().map(|v| v.value), Some(vec![11]));
    }
}
