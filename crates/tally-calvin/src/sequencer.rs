//! The sequencer: gathers submitted inputs into epoch batches, logs each batch durably,
//! applies it through the state machine, and answers every submitter with its output.
//!
//! It runs on two dedicated OS threads, a logger and the executor, handing batches from
//! one to the other in height order: the executor evaluates batch N while the logger
//! appends and syncs it, and commits and answers it only once it is in the log (see
//! [`execute`]). Submitted inputs wait in a [`FairInbox`]: batches are composed fairly
//! across tenants by priority (see [`crate::fair`]). The queue is bounded
//! (`queue_inputs_max`): when full, `submit` fails at once with `Overloaded` instead of
//! letting memory grow (or pushes out a newer input of a tenant with a longer backlog).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::courier::{reply_channel, Reply};
use crate::fair::{BatchLimits, FairInbox, Pushed, Tenant};
use crate::log::Log;
use tally_apply::{Batch, Decoded, StateMachine};

/// Stack of the sequencer thread, which runs the executor. Evaluation recurses (nested
/// expressions, lambdas, user functions); the evaluator bounds that depth, and this
/// leaves ample room under the bound. Only touched pages are committed.
pub const EXECUTOR_STACK_BYTES: usize = 512 << 20;

#[derive(Clone, Debug)]
pub struct SequencerConfig {
    /// How long a batch stays open after its first input.
    pub epoch_ms: u64,
    pub batch_inputs_max: usize,
    pub batch_bytes_max: usize,
    pub queue_inputs_max: usize,
    /// Bytes of inputs queued at most (a lone input may be larger).
    pub queue_bytes_max: usize,
    /// Longest an input may wait for its batch; past it, it is answered `Overloaded`
    /// instead of being logged (its client has likely given up; the queue is behind).
    pub queue_wait_max: Duration,
    /// Log an empty batch for the executor's retention sweep when the inbox has been idle
    /// this long and the executor says a sweep could remove something (None: never).
    pub idle_sweep: Option<tally_apply::IdleSweep>,
    /// Longest a batch with inputs is held open while the executor is busy with earlier
    /// batches (see [`log_batches`]); past it the batch is closed and appended anyway, so
    /// a long-running batch is not followed by an unlogged queue.
    pub hold_max: Duration,
}

impl Default for SequencerConfig {
    fn default() -> Self {
        SequencerConfig {
            epoch_ms: 10,
            batch_inputs_max: 8192,
            // As on a cluster: a 16 MiB write and more fit, and the executor holds half
            // what 64 MiB let it (the node's bounds add up to under 2 GiB).
            batch_bytes_max: 32 << 20,
            queue_inputs_max: 65_536,
            // Four full batches.
            queue_bytes_max: 128 << 20,
            // Well inside the drivers' default 60 s query timeout.
            queue_wait_max: Duration::from_secs(10),
            idle_sweep: None,
            // Ten times a loaded node's batch (≈ 0.5 ms at 64 clients).
            hold_max: Duration::from_millis(5),
        }
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SubmitError {
    #[error("the transaction queue is full; retry shortly")]
    Overloaded,
    #[error("the sequencer has stopped: {0}")]
    Stopped(String),
}

/// An input, what the receiving node decoded from it, where its answer goes, and when it
/// was queued.
type Item = (Vec<u8>, Option<Decoded>, Reply<Result<Vec<u8>, SubmitError>>, std::time::Instant);

/// Hands out timestamps: one per batch, and read timestamps for the read-only path.
///
/// A read may be given a timestamp later than the last applied commit (so clients see
/// time move on, as v4's `x-txn-time` does) only while no sequenced batch is still
/// unapplied; every later batch gets a larger timestamp. So a read at `t` never misses
/// a commit at or before `t`.
#[derive(Default)]
pub struct Clock {
    state: std::sync::Mutex<ClockState>,
}

#[derive(Default)]
struct ClockState {
    /// Largest timestamp handed out so far (batch or read).
    issued: u64,
    /// Batches sequenced but not yet applied.
    pending: u64,
}

impl Clock {
    pub fn new(last_ts: u64) -> Clock {
        Clock { state: std::sync::Mutex::new(ClockState { issued: last_ts, pending: 0 }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_batch_ts(&self) -> u64 {
        let mut s = self.lock();
        let t = now_micros().max(s.issued + 1);
        s.issued = t;
        s.pending += 1;
        t
    }

    fn batch_done(&self, last_commit_ts: u64) {
        let mut s = self.lock();
        s.pending = s.pending.saturating_sub(1);
        s.issued = s.issued.max(last_commit_ts);
    }

    /// The largest timestamp this node has handed out.
    pub fn issued(&self) -> u64 {
        self.lock().issued
    }

    /// The timestamp a read-only query should run at, given the last applied commit.
    pub fn read_ts(&self, applied: u64) -> u64 {
        let mut s = self.lock();
        if s.pending > 0 {
            return applied;
        }
        let t = now_micros().max(applied).max(s.issued);
        s.issued = t;
        t
    }
}

/// Handle to the running sequencer. Cloneable; dropping every handle stops the thread
/// (after it has sequenced what is queued).
#[derive(Clone)]
pub struct Sequencer {
    inbox: Arc<Closer>,
    /// Why the sequencer stopped taking writes (a failed log append), for every later
    /// submitter; `None` while running or after a plain shutdown.
    stopped: Arc<std::sync::Mutex<Option<String>>>,
    /// What the start replayed.
    replayed: Replayed,
}

/// What [`Sequencer::start`] replayed from the log before it began sequencing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Replayed {
    pub batches: u64,
    pub inputs: u64,
    /// Reading the log and applying the batches.
    pub elapsed: Duration,
}

/// Closes the inbox when the last handle goes.
struct Closer(Arc<FairInbox<Item>>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl Sequencer {
    /// Replay the log past the machine's applied height, then start sequencing.
    pub fn start<L: Log + 'static, M: StateMachine + 'static>(
        mut log: L,
        mut machine: M,
        config: SequencerConfig,
        clock: Arc<Clock>,
    ) -> Result<(Sequencer, std::thread::JoinHandle<()>), crate::log::LogError> {
        let started = std::time::Instant::now();
        let applied = machine.applied_height();
        if log.last_height() > applied {
            tracing::info!(from = applied + 1, to = log.last_height(), "replaying input log");
        }
        // Streamed: one batch in memory at a time, however long the tail is.
        let mut replayed = Replayed::default();
        log.replay_after(applied, &mut |b| {
            replayed.batches += 1;
            replayed.inputs += b.inputs.len() as u64;
            machine.apply(&b);
            Ok(())
        })?;
        replayed.elapsed = started.elapsed();
        let limits = BatchLimits {
            epoch: Duration::from_millis(config.epoch_ms),
            inputs_max: config.batch_inputs_max,
            bytes_max: config.batch_bytes_max,
        };
        let queue = crate::fair::FairQueue::new(config.queue_inputs_max).with_bytes_capacity(config.queue_bytes_max);
        let inbox = Arc::new(FairInbox::with_queue(queue, limits));
        let rx = inbox.clone();
        let stopped = Arc::new(std::sync::Mutex::new(None));
        let reason = stopped.clone();
        let wait_max = config.queue_wait_max;
        let rules = machine.rules();
        let idle = config.idle_sweep;
        let hold_max = config.hold_max;
        let (tx, logged) = std::sync::mpsc::sync_channel::<Logged>(LOGGED_BUFFER);
        let durable = Arc::new(Durable::default());
        durable.synced(log.last_height());
        let executor_state = Arc::new(ExecutorState::after(log.last_height()));
        let logger = {
            let clock = clock.clone();
            let durable = durable.clone();
            let executor = executor_state.clone();
            std::thread::Builder::new()
                .name("tally-logger".into())
                .spawn(move || {
                    let stages = Stages { logged: &tx, durable: &durable, executor: &executor };
                    log_batches(log, rules, &rx, &clock, &reason, wait_max, hold_max, stages, idle)
                })
                .map_err(|source| crate::log::LogError::Io { path: "logger thread".into(), source })?
        };
        let handle = std::thread::Builder::new()
            .name("tally-sequencer".into())
            .stack_size(EXECUTOR_STACK_BYTES)
            .spawn(move || execute(machine, logged, logger, clock, &durable, &executor_state))
            .map_err(|source| {
                // Nobody can submit yet; closing the inbox lets the logger end.
                inbox.close();
                crate::log::LogError::Io { path: "sequencer thread".into(), source }
            })?;
        Ok((Sequencer { inbox: Arc::new(Closer(inbox)), stopped, replayed }, handle))
    }

    /// What the start replayed from the log.
    pub fn replayed(&self) -> Replayed {
        self.replayed
    }

    /// Inputs waiting for a batch.
    pub fn queued(&self) -> usize {
        self.inbox.0.len()
    }

    /// Submit one input of `tenant`; resolves with the machine's output once its batch
    /// is applied.
    pub async fn submit(&self, tenant: Tenant, input: Vec<u8>) -> Result<Vec<u8>, SubmitError> {
        self.submit_with(tenant, input, None).await
    }

    /// [`Sequencer::submit`], with what the receiving node already decoded from `input`
    /// for the executor ([`StateMachine::apply_decoded`]); only `input` is logged.
    pub async fn submit_with(
        &self,
        tenant: Tenant,
        input: Vec<u8>,
        decoded: Option<Decoded>,
    ) -> Result<Vec<u8>, SubmitError> {
        // Answered through this thread's courier when it has one (crate::courier).
        let (otx, orx) = reply_channel();
        let bytes = input.len();
        match self.inbox.0.push(tenant, (input, decoded, otx, std::time::Instant::now()), bytes) {
            Pushed::Queued => {}
            Pushed::Evicted((_, _, reply, _)) => {
                reply.send(Err(SubmitError::Overloaded));
            }
            Pushed::Refused(_) if self.inbox.0.is_closed() => {
                let reason = self.stopped.lock().ok().and_then(|r| r.clone());
                return Err(SubmitError::Stopped(reason.unwrap_or_else(|| "shut down".into())));
            }
            Pushed::Refused(_) => return Err(SubmitError::Overloaded),
        }
        orx.await.unwrap_or_else(|_| Err(SubmitError::Stopped("dropped the transaction".into())))
    }
}

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// A batch on its way to the executor, in the log or being appended to it: what the
/// receiving node decoded for each input, and where each answer goes.
struct Logged {
    batch: Arc<Batch>,
    decoded: Vec<Option<Decoded>>,
    replies: Vec<Reply<Result<Vec<u8>, SubmitError>>>,
}

/// Batches handed over and not yet taken by the executor, at most. With one, the
/// executor evaluates a batch while the logger syncs it, and the logger closes the next
/// batch once that sync has ended and the executor is free for it (at most
/// [`SequencerConfig::hold_max`] later); when the executor is behind even so, the logger
/// appends a batch first and then waits to hand it over. Everything else stays in the fair queue,
/// where it can still be reordered across tenants or shed when it waited too long.
const LOGGED_BUFFER: usize = 1;

/// What the logger knows of the executor ([`log_batches`] closes a batch when the
/// executor is free to start it): whether it waits for a batch, and the height of the
/// last one it took.
struct ExecutorState {
    state: std::sync::Mutex<ExecutorSeen>,
    freed: std::sync::Condvar,
}

struct ExecutorSeen {
    free: bool,
    took: u64,
}

impl ExecutorState {
    /// The state of an executor that has applied the log up to `height`.
    fn after(height: u64) -> ExecutorState {
        ExecutorState {
            state: std::sync::Mutex::new(ExecutorSeen { free: false, took: height }),
            freed: std::sync::Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ExecutorSeen> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The executor waits for its next batch (`true`) or has one.
    fn set_free(&self, free: bool) {
        self.lock().free = free;
        if free {
            self.freed.notify_all();
        }
    }

    fn took(&self, height: u64) {
        self.lock().took = height;
    }

    /// Wait until the executor has taken every batch up to `height` and waits for the
    /// next, or `max` has passed.
    fn wait_free(&self, height: u64, max: Duration) {
        let until = std::time::Instant::now() + max;
        let mut s = self.lock();
        while !(s.free && s.took >= height) {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            s = self.freed.wait_timeout(s, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// How far the log is durable, shared by the logger (which advances it after each
/// append's sync) and the executor (which waits on it before a batch is seen).
#[derive(Default)]
struct Durable {
    state: std::sync::Mutex<DurableState>,
    advanced: std::sync::Condvar,
}

#[derive(Default)]
struct DurableState {
    /// Height of the last batch whose append is synced.
    height: u64,
    /// Set when an append failed: no batch from there on will be durable.
    failed: Option<String>,
}

impl Durable {
    fn lock(&self) -> std::sync::MutexGuard<'_, DurableState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn synced(&self, height: u64) {
        self.lock().height = height;
        self.advanced.notify_all();
    }

    fn failed(&self, why: String) {
        self.lock().failed = Some(why);
        self.advanced.notify_all();
    }

    /// Wait until batch `height` is durable: `Ok`, or `Err(why)` once it never will be.
    fn wait(&self, height: u64) -> Result<(), String> {
        let mut s = self.lock();
        loop {
            if s.height >= height {
                return Ok(());
            }
            if let Some(why) = &s.failed {
                return Err(why.clone());
            }
            s = self.advanced.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The sequencer's executor stage (the other is [`log_batches`]), each on its own thread
/// and both in height order: the logger closes a batch, hands it over and appends it,
/// waiting for its fsync; the executor (this thread, with the large stack) evaluates the
/// batch meanwhile, and commits and answers once the append is synced
/// ([`StateMachine::apply_logging`]). So a batch's fsync overlaps its own evaluation
/// instead of preceding it, and nothing of a batch is seen (answers, reads, streams, the
/// store's flushes) before it is durable. The executor sees the same batches in the same
/// order as a replay would: the log decides what it applies, never timing.
fn execute<M: StateMachine>(
    mut machine: M,
    rx: std::sync::mpsc::Receiver<Logged>,
    logger: std::thread::JoinHandle<()>,
    clock: Arc<Clock>,
    durable: &Durable,
    state: &ExecutorState,
) {
    // Ends when the logger stops (inbox closed and drained, or a failed append) and has
    // handed over every batch it took.
    let mut stopped: Option<String> = None;
    loop {
        let next = match rx.try_recv() {
            Ok(l) => l,
            Err(std::sync::mpsc::TryRecvError::Empty) => {
                state.set_free(true);
                let next = rx.recv();
                state.set_free(false);
                match next {
                    Ok(l) => l,
                    Err(_) => break,
                }
            }
            Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
        };
        let Logged { batch, mut decoded, replies } = next;
        state.took(batch.height);
        if let Some(why) = &stopped {
            for r in replies {
                r.send(Err(SubmitError::Stopped(why.clone())));
            }
            continue;
        }
        let mut replies: Vec<_> = replies.into_iter().map(Some).collect();
        let height = batch.height;
        let applied = machine.apply_logging(
            &batch,
            &mut decoded,
            &mut || match durable.wait(height) {
                Ok(()) => true,
                Err(why) => {
                    stopped = Some(why);
                    false
                }
            },
            &mut |i, out| {
                if let Some(r) = replies.get_mut(i).and_then(Option::take) {
                    r.send(Ok(out));
                }
            },
        );
        if applied {
            clock.batch_done(machine.last_commit_ts());
        }
        let why = stopped.clone().unwrap_or_else(|| "no output for input".into());
        for r in replies.into_iter().flatten() {
            r.send(Err(SubmitError::Stopped(why.clone())));
        }
    }
    let _ = logger.join();
}

/// What the logger shares with the executor: the hand-over, how far the log is durable,
/// and whether the executor is free.
struct Stages<'a> {
    logged: &'a std::sync::mpsc::SyncSender<Logged>,
    durable: &'a Durable,
    executor: &'a ExecutorState,
}

/// The logger stage (see [`execute`]): closes epoch batches, appends each durably, and hands it
/// to the executor.
///
/// A batch closes once the executor is free to start it (or [`SequencerConfig::hold_max`]
/// after an input was queued, whichever is first), not merely once the previous append
/// is synced: inputs that arrive while the executor is busy could not be evaluated any
/// sooner, and gathered into one batch they share its fsync, its block (header, tree-head
/// signature, sweep, commit) and each connection thread's wake for the answers. A lone
/// input reaching an idle executor is taken at once, as before. Closed at the executor's
/// turn, a batch's append overlaps its own evaluation instead of the previous batch's.
#[allow(clippy::too_many_arguments)]
fn log_batches<L: Log>(
    mut log: L,
    rules: u16,
    inbox: &FairInbox<Item>,
    clock: &Clock,
    stopped: &std::sync::Mutex<Option<String>>,
    wait_max: Duration,
    hold_max: Duration,
    Stages { logged, durable, executor }: Stages<'_>,
    idle: Option<tally_apply::IdleSweep>,
) {
    while let Some(input) = inbox.wait_input_or_idle(idle.as_ref().map(|i| i.every)) {
        let next = input.then(|| {
            // An input is queued: while the executor is still busy with earlier batches the
            // batch stays open, since nothing in it could be evaluated sooner.
            executor.wait_free(log.last_height(), hold_max);
            inbox.close_batch()
        });
        // Idle: an empty batch when a retention sweep could remove something.
        let Some(items) = next.or_else(|| idle.as_ref().filter(|i| i.wanted(now_micros())).map(|_| Vec::new())) else {
            continue;
        };
        let sweep_only = items.is_empty();
        // Inputs that waited too long are answered now and never logged: under a backlog
        // the queue sheds its oldest work rather than doing what nobody waits for.
        let mut inputs: Vec<Vec<u8>> = Vec::with_capacity(items.len());
        let mut decoded: Vec<Option<Decoded>> = Vec::with_capacity(items.len());
        let mut replies = Vec::with_capacity(items.len());
        for (input, hint, reply, queued) in items {
            if queued.elapsed() > wait_max {
                reply.send(Err(SubmitError::Overloaded));
                continue;
            }
            inputs.push(input);
            decoded.push(hint);
            replies.push(reply);
        }
        if inputs.is_empty() && !sweep_only {
            continue;
        }
        // The batch ts never goes backwards, even if the wall clock does.
        let ts = clock.next_batch_ts();
        let batch = Arc::new(Batch { height: log.last_height() + 1, ts, rules, inputs });
        // Handed over before the append when the executor has room, so it evaluates the
        // batch while the append syncs; otherwise appended first and handed over after.
        let mut waiting = match logged.try_send(Logged { batch: batch.clone(), decoded, replies }) {
            Ok(()) => None,
            Err(std::sync::mpsc::TrySendError::Full(l)) => Some(l),
            Err(std::sync::mpsc::TrySendError::Disconnected(l)) => {
                // The executor is gone (it only stops when this thread does, or by a
                // fail-stop exit), so nobody will apply this batch here.
                for r in l.replies {
                    r.send(Err(SubmitError::Stopped("the executor has stopped".into())));
                }
                return;
            }
        };
        if let Err(e) = log.append(&batch) {
            // Fail-stop: nothing in this batch was acknowledged, and a log we cannot
            // write is a log we cannot trust to be complete. Batches logged before it
            // are still applied and answered (they are durable).
            tracing::error!(error = %e, "input log append failed; the sequencer stops");
            let later = format!(
                "this node takes no more writes since appending to its input log failed ({e}); \
                 fix the disk (space, I/O errors) and restart the node"
            );
            if let Ok(mut s) = stopped.lock() {
                *s = Some(later.clone());
            }
            eprintln!("tally: {later}");
            // The executor holds back everything of this batch, answers its inputs
            // with this error, and applies nothing more.
            durable.failed(e.to_string());
            if let Some(l) = waiting.take() {
                for r in l.replies {
                    r.send(Err(SubmitError::Stopped(e.to_string())));
                }
            }
            inbox.close();
            while let Some(rest) = inbox.next_batch_blocking() {
                for (_, _, r, _) in rest {
                    r.send(Err(SubmitError::Stopped(later.clone())));
                }
            }
            return;
        }
        durable.synced(batch.height);
        if let Some(l) = waiting.take() {
            if let Err(std::sync::mpsc::SendError(l)) = logged.send(l) {
                // The executor is gone, so nobody will apply this batch here; a restart
                // replays it.
                for r in l.replies {
                    r.send(Err(SubmitError::Stopped("the executor has stopped".into())));
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fair::Tenant;
    use crate::log::FileLog;

    /// Sums the first byte of each input (answering the running total) and records each
    /// applied batch's input count in `seen`.
    #[derive(Default)]
    struct Counter {
        height: u64,
        total: u64,
        seen: Arc<std::sync::Mutex<Vec<usize>>>,
    }
    impl StateMachine for Counter {
        fn applied_height(&self) -> u64 {
            self.height
        }
        fn last_commit_ts(&self) -> u64 {
            0
        }
        fn rules(&self) -> u16 {
            Batch::UNSTAMPED
        }
        fn apply(&mut self, b: &Batch) -> Vec<Vec<u8>> {
            self.height = b.height;
            self.seen.lock().unwrap().push(b.inputs.len());
            b.inputs
                .iter()
                .map(|i| {
                    self.total += i[0] as u64;
                    self.total.to_be_bytes().to_vec()
                })
                .collect()
        }
    }

    #[test]
    fn batches_apply_in_order_and_replay() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        {
            let log = FileLog::open(dir.path()).unwrap();
            let (seq, _h) = Sequencer::start(
                log,
                Counter::default(),
                SequencerConfig { epoch_ms: 2, ..Default::default() },
                std::sync::Arc::new(Clock::new(0)),
            )
            .unwrap();
            let outs: Vec<u64> = rt.block_on(async {
                let mut outs = Vec::new();
                for i in 1..=5u8 {
                    let o = seq.submit(Tenant::DEFAULT, vec![i]).await.unwrap();
                    outs.push(u64::from_be_bytes(o.try_into().unwrap()));
                }
                outs
            });
            assert_eq!(outs, vec![1, 3, 6, 10, 15]);
        }
        // A fresh machine replays the whole log to the same state.
        let log = FileLog::open(dir.path()).unwrap();
        let mut m = Counter::default();
        let mut log2 = log;
        for b in log2.read_after(0).unwrap() {
            m.apply(&b);
        }
        assert_eq!(m.total, 15);
        assert_eq!(m.height, log2.last_height());
    }

    /// An idle sequencer logs an empty batch only while the executor says a sweep is
    /// due; it is logged like any other batch (a restart replays it).
    #[test]
    fn an_idle_sequencer_logs_empty_batches_only_when_a_sweep_is_due() {
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let due = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
        let idle = tally_apply::IdleSweep { due: due.clone(), every: Duration::from_millis(20) };
        let cfg = SequencerConfig { epoch_ms: 1, idle_sweep: Some(idle), ..Default::default() };
        let machine = Counter { seen: seen.clone(), ..Default::default() };
        let (seq, _h) =
            Sequencer::start(FileLog::open(dir.path()).unwrap(), machine, cfg, Arc::new(Clock::new(0))).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(seq.submit(Tenant::DEFAULT, vec![1])).unwrap();
        // Not due: idle periods pass without a batch.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(*seen.lock().unwrap(), vec![1], "nothing due: no empty batch");
        // Due: empty batches come (polled, bounded).
        due.store(0, std::sync::atomic::Ordering::Release);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while seen.lock().unwrap().len() < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        due.store(u64::MAX, std::sync::atomic::Ordering::Release);
        let applied = seen.lock().unwrap().clone();
        assert!(applied.len() >= 2 && applied[1..].iter().all(|&n| n == 0), "empty batches: {applied:?}");
        drop(seq);
        drop(_h.join());
        let mut log = FileLog::open(dir.path()).unwrap();
        let logged: Vec<usize> = log.read_after(0).unwrap().iter().map(|b| b.inputs.len()).collect();
        assert_eq!(logged[..applied.len()], applied[..], "every applied batch is in the log");
    }

    /// Answers each input with its batch height; the first batch waits for `gate`.
    struct Gated {
        height: u64,
        entered: std::sync::mpsc::Sender<()>,
        gate: Option<std::sync::mpsc::Receiver<()>>,
    }
    impl StateMachine for Gated {
        fn applied_height(&self) -> u64 {
            self.height
        }
        fn last_commit_ts(&self) -> u64 {
            0
        }
        fn rules(&self) -> u16 {
            Batch::UNSTAMPED
        }
        fn apply(&mut self, b: &Batch) -> Vec<Vec<u8>> {
            if let Some(gate) = self.gate.take() {
                let _ = self.entered.send(());
                let _ = gate.recv();
            }
            self.height = b.height;
            b.inputs.iter().map(|_| b.height.to_be_bytes().to_vec()).collect()
        }
    }

    /// A [`FileLog`] that reports the height of every batch it appended.
    struct Reporting {
        log: FileLog,
        appended: std::sync::mpsc::Sender<u64>,
    }
    impl Log for Reporting {
        fn append(&mut self, batch: &Batch) -> Result<(), crate::log::LogError> {
            self.log.append(batch)?;
            let _ = self.appended.send(batch.height);
            Ok(())
        }
        fn replay_after(
            &mut self,
            height: u64,
            f: &mut dyn FnMut(Batch) -> Result<(), crate::log::LogError>,
        ) -> Result<(), crate::log::LogError> {
            self.log.replay_after(height, f)
        }
        fn last_height(&self) -> u64 {
            self.log.last_height()
        }
        fn last_ts(&self) -> u64 {
            self.log.last_ts()
        }
    }

    type Answer = tokio::task::JoinHandle<Result<Vec<u8>, SubmitError>>;

    /// A sequencer whose first batch is held in `apply` until `open` is sent, and whose
    /// log reports each append; returns once batch 1 is being applied and batches 2 and 3
    /// (one input each, answered later with their heights) are logged and wait for the
    /// executor. From then on the logger takes nothing more, so whatever is submitted
    /// stays queued.
    fn stalled(
        cfg: SequencerConfig,
        dir: &std::path::Path,
        rt: &tokio::runtime::Runtime,
    ) -> (Sequencer, std::sync::mpsc::Sender<()>, Vec<Answer>) {
        let g = gated(cfg, dir, rt);
        let second = submit(&g.seq, rt, 0);
        assert_eq!(g.appended.recv().unwrap(), 2, "the logger runs ahead of the executor");
        let third = submit(&g.seq, rt, 0);
        assert_eq!(g.appended.recv().unwrap(), 3, "one batch handed over, one held");
        (g.seq, g.open, vec![g.first, second, third])
    }

    /// A sequencer over [`Gated`] and a [`Reporting`] log, returned once its first batch
    /// (one input, `first`) is logged and being applied, held until `open` is sent.
    struct Stuck {
        seq: Sequencer,
        open: std::sync::mpsc::Sender<()>,
        appended: std::sync::mpsc::Receiver<u64>,
        first: Answer,
    }

    fn gated(cfg: SequencerConfig, dir: &std::path::Path, rt: &tokio::runtime::Runtime) -> Stuck {
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (open, gate) = std::sync::mpsc::channel();
        let (appended_tx, appended) = std::sync::mpsc::channel();
        let machine = Gated { height: 0, entered: entered_tx, gate: Some(gate) };
        let log = Reporting { log: FileLog::open(dir).unwrap(), appended: appended_tx };
        let (seq, _h) = Sequencer::start(log, machine, cfg, Arc::new(Clock::new(0))).unwrap();
        let first = submit(&seq, rt, 0);
        entered.recv().unwrap();
        assert_eq!(appended.recv().unwrap(), 1);
        Stuck { seq, open, appended, first }
    }

    fn submit(seq: &Sequencer, rt: &tokio::runtime::Runtime, i: u8) -> Answer {
        let seq = seq.clone();
        rt.spawn(async move { seq.submit(Tenant::DEFAULT, vec![i]).await })
    }

    fn height_of(o: Result<Vec<u8>, SubmitError>) -> u64 {
        u64::from_be_bytes(o.unwrap().try_into().unwrap())
    }

    /// While the executor is busy, the logger holds the next batch open: what arrives
    /// meanwhile becomes one batch when the executor is free, not a batch per append.
    #[test]
    fn a_busy_executor_gets_one_batch_of_what_arrived_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_time().build().unwrap();
        let cfg = SequencerConfig { hold_max: Duration::from_secs(600), ..Default::default() };
        let g = gated(cfg, dir.path(), &rt);
        let rest: Vec<Answer> = (1..=10).map(|i| submit(&g.seq, &rt, i)).collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while g.seq.queued() < 10 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        // The executor is busy: nothing is taken or logged (each would be appended at once).
        assert!(g.appended.recv_timeout(Duration::from_millis(300)).is_err(), "held while the executor is busy");
        assert_eq!(g.seq.queued(), 10);
        g.open.send(()).unwrap();
        rt.block_on(async {
            assert_eq!(height_of(g.first.await.unwrap()), 1);
            assert_eq!(futures_heights(rest, height_of).await, vec![2; 10], "one batch of all ten");
        });
        assert_eq!(g.appended.recv().unwrap(), 2);
    }

    /// The hold is bounded: past `hold_max` the batch is closed and logged while the
    /// executor is still busy, and applied once it is free.
    #[test]
    fn a_batch_is_held_at_most_hold_max() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_time().build().unwrap();
        let hold = Duration::from_millis(50);
        let g = gated(SequencerConfig { hold_max: hold, ..Default::default() }, dir.path(), &rt);
        let submitted = std::time::Instant::now();
        let second = submit(&g.seq, &rt, 1);
        assert_eq!(g.appended.recv_timeout(Duration::from_secs(30)).unwrap(), 2, "logged within the bound");
        assert!(submitted.elapsed() >= hold, "held for hold_max first");
        g.open.send(()).unwrap();
        rt.block_on(async {
            assert_eq!(height_of(g.first.await.unwrap()), 1);
            assert_eq!(height_of(second.await.unwrap()), 2);
        });
    }

    /// Inputs that waited longer than `queue_wait_max` are answered `Overloaded` and never
    /// logged; those already logged when they queued (the batch being applied, and those
    /// the logger has ready) are answered normally.
    #[test]
    fn inputs_that_wait_too_long_are_shed() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_time().build().unwrap();
        let cfg = SequencerConfig { epoch_ms: 1, queue_wait_max: Duration::from_millis(50), ..Default::default() };
        let (seq, open, logged) = stalled(cfg, dir.path(), &rt);
        rt.block_on(async {
            let late = tokio::spawn({
                let seq = seq.clone();
                async move { seq.submit(Tenant::DEFAULT, vec![1]).await }
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
            open.send(()).unwrap();
            for l in logged {
                assert!(l.await.unwrap().is_ok());
            }
            assert_eq!(late.await.unwrap(), Err(SubmitError::Overloaded));
            // A fresh input goes through, in batch 4: the shed one was never logged.
            let o = seq.submit(Tenant::DEFAULT, vec![2]).await.unwrap();
            assert_eq!(u64::from_be_bytes(o.try_into().unwrap()), 4);
        });
    }

    /// A tenant's write that arrives behind another tenant's backlog of several batches
    /// goes into the next batch; the backlog keeps its own order.
    #[test]
    fn batches_are_composed_fairly_across_tenants() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_time().build().unwrap();
        let cfg = SequencerConfig { epoch_ms: 1, batch_inputs_max: 10, ..Default::default() };
        // Batch 1 is being applied and batches 2 and 3 are logged; the rest waits queued.
        let (seq, open, logged) = stalled(cfg, dir.path(), &rt);
        let (flood, quiet) = (Tenant { id: 1, weight: 1 }, Tenant { id: 2, weight: 1 });
        rt.block_on(async {
            // Queue 100 flood inputs, one at a time so that the queue holds them in this
            // order (spawned at once, the runtime may poll them in another), and one quiet
            // input behind them.
            let mut backlog = Vec::new();
            for i in 0..100u8 {
                let seq2 = seq.clone();
                backlog.push(tokio::spawn(async move { seq2.submit(flood, vec![i]).await }));
                while seq.queued() < usize::from(i) + 1 {
                    tokio::task::yield_now().await;
                }
            }
            let q = tokio::spawn({
                let seq = seq.clone();
                async move { seq.submit(quiet, vec![7]).await }
            });
            while seq.queued() < 101 {
                tokio::task::yield_now().await;
            }
            open.send(()).unwrap();
            let ahead: Vec<u64> = futures_heights(logged, height_of).await;
            assert_eq!(ahead, vec![1, 2, 3]);
            assert_eq!(height_of(q.await.unwrap()), 4, "the quiet input makes the next batch");
            let mut heights = Vec::new();
            for b in backlog {
                heights.push(height_of(b.await.unwrap()));
            }
            assert!(heights.windows(2).all(|w| w[0] <= w[1]), "the backlog stays in order: {heights:?}");
            assert_eq!(heights.last(), Some(&14), "100 flood inputs take ten batches after the first three");
        });
    }

    async fn futures_heights(handles: Vec<Answer>, height: impl Fn(Result<Vec<u8>, SubmitError>) -> u64) -> Vec<u64> {
        let mut out = Vec::new();
        for h in handles {
            out.push(height(h.await.unwrap()));
        }
        out
    }

    /// Evaluates a batch before asking whether it is logged, and commits (counts the
    /// batch, answers with its height) only if it is. Reports each step.
    struct Eager {
        height: u64,
        events: std::sync::mpsc::Sender<String>,
    }
    impl StateMachine for Eager {
        fn applied_height(&self) -> u64 {
            self.height
        }
        fn last_commit_ts(&self) -> u64 {
            0
        }
        fn rules(&self) -> u16 {
            Batch::UNSTAMPED
        }
        fn apply(&mut self, b: &Batch) -> Vec<Vec<u8>> {
            self.height = b.height;
            b.inputs.iter().map(|_| b.height.to_be_bytes().to_vec()).collect()
        }
        fn apply_logging(
            &mut self,
            b: &Batch,
            _: &mut [Option<Decoded>],
            logged: &mut dyn FnMut() -> bool,
            answer: &mut dyn FnMut(usize, Vec<u8>),
        ) -> bool {
            let _ = self.events.send(format!("evaluated {}", b.height));
            if !logged() {
                let _ = self.events.send(format!("refused {}", b.height));
                return false;
            }
            let _ = self.events.send(format!("committed {}", b.height));
            for (i, out) in self.apply(b).into_iter().enumerate() {
                answer(i, out);
            }
            true
        }
    }

    /// A [`FileLog`] whose appends each wait for a word on `release`: `true` appends,
    /// `false` fails as a full disk would.
    struct Held {
        log: FileLog,
        release: std::sync::mpsc::Receiver<bool>,
    }
    impl Log for Held {
        fn append(&mut self, batch: &Batch) -> Result<(), crate::log::LogError> {
            if self.release.recv().unwrap_or(false) {
                self.log.append(batch)
            } else {
                Err(crate::log::LogError::Io { path: "held".into(), source: std::io::Error::other("disk full") })
            }
        }
        fn replay_after(
            &mut self,
            height: u64,
            f: &mut dyn FnMut(Batch) -> Result<(), crate::log::LogError>,
        ) -> Result<(), crate::log::LogError> {
            self.log.replay_after(height, f)
        }
        fn last_height(&self) -> u64 {
            self.log.last_height()
        }
        fn last_ts(&self) -> u64 {
            self.log.last_ts()
        }
    }

    /// A sequencer over an [`Eager`] machine and a [`Held`] log, with one input submitted
    /// (its batch is handed over; its append waits for `release`).
    struct HeldRun {
        dir: tempfile::TempDir,
        rt: tokio::runtime::Runtime,
        seq: Sequencer,
        h: std::thread::JoinHandle<()>,
        events: std::sync::mpsc::Receiver<String>,
        release: std::sync::mpsc::Sender<bool>,
        answer: Answer,
    }

    fn held_run() -> HeldRun {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_time().build().unwrap();
        let (events_tx, events) = std::sync::mpsc::channel();
        let (release, held) = std::sync::mpsc::channel();
        let log = Held { log: FileLog::open(dir.path()).unwrap(), release: held };
        let machine = Eager { height: 0, events: events_tx };
        let (seq, h) = Sequencer::start(log, machine, SequencerConfig::default(), Arc::new(Clock::new(0))).unwrap();
        let answer = rt.spawn({
            let seq = seq.clone();
            async move { seq.submit(Tenant::DEFAULT, vec![1]).await }
        });
        HeldRun { dir, rt, seq, h, events, release, answer }
    }

    /// The executor evaluates a batch while its append is still being synced, and
    /// nothing of it is committed or answered until the append is done.
    #[test]
    fn a_batch_is_evaluated_during_its_append_and_answered_after_it() {
        let HeldRun { dir, rt, seq, h, events, release, answer } = held_run();
        // The append of batch 1 is held, and the executor has evaluated it already.
        assert_eq!(events.recv().unwrap(), "evaluated 1");
        assert!(events.try_recv().is_err(), "nothing committed before the append is done");
        assert!(!answer.is_finished(), "nothing answered before the append is done");
        release.send(true).unwrap();
        assert_eq!(events.recv().unwrap(), "committed 1");
        let out = rt.block_on(answer).unwrap().unwrap();
        assert_eq!(u64::from_be_bytes(out.try_into().unwrap()), 1);
        drop(seq);
        drop(release);
        h.join().unwrap();
        assert_eq!(FileLog::open(dir.path()).unwrap().last_height(), 1);
    }

    /// When the append of a batch the executor has already evaluated fails, nothing of
    /// the batch is committed or answered with an output, its submitters and every later
    /// one hear why the node stopped, and the executor applies nothing more.
    #[test]
    fn a_batch_whose_append_fails_is_never_committed() {
        let HeldRun { dir, rt, seq, h, events, release, answer } = held_run();
        assert_eq!(events.recv().unwrap(), "evaluated 1");
        release.send(false).unwrap();
        assert_eq!(events.recv().unwrap(), "refused 1");
        match rt.block_on(answer).unwrap() {
            Err(SubmitError::Stopped(why)) => assert!(why.contains("disk full"), "{why}"),
            other => panic!("expected Stopped, got {other:?}"),
        }
        match rt.block_on(seq.submit(Tenant::DEFAULT, vec![2])) {
            Err(SubmitError::Stopped(why)) => assert!(why.contains("takes no more writes"), "{why}"),
            other => panic!("expected Stopped, got {other:?}"),
        }
        drop(seq);
        h.join().unwrap();
        assert!(events.try_recv().is_err(), "nothing else was evaluated or committed");
        assert_eq!(FileLog::open(dir.path()).unwrap().last_height(), 0);
    }
}
