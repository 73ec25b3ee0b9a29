//! The sequencer: gathers submitted inputs into epoch batches, logs each batch durably,
//! applies it through the state machine, and answers every submitter with its output.
//!
//! It runs on one dedicated OS thread, so batches are logged and applied strictly in
//! height order. Submitted inputs wait in a [`FairInbox`]: batches are composed fairly
//! across tenants by priority (see [`crate::fair`]). The queue is bounded
//! (`queue_inputs_max`): when full, `submit` fails at once with `Overloaded` instead of
//! letting memory grow (or pushes out a newer input of a tenant with a longer backlog).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

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
}

impl Default for SequencerConfig {
    fn default() -> Self {
        SequencerConfig {
            epoch_ms: 10,
            batch_inputs_max: 8192,
            batch_bytes_max: 64 << 20,
            queue_inputs_max: 65_536,
            // Four full batches.
            queue_bytes_max: 256 << 20,
            // Well inside the drivers' default 60 s query timeout.
            queue_wait_max: Duration::from_secs(10),
            idle_sweep: None,
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
type Item = (Vec<u8>, Option<Decoded>, oneshot::Sender<Result<Vec<u8>, SubmitError>>, std::time::Instant);

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
        let idle = config.idle_sweep;
        let handle = std::thread::Builder::new()
            .name("tally-sequencer".into())
            .stack_size(EXECUTOR_STACK_BYTES)
            .spawn(move || run(log, machine, rx, clock, &reason, wait_max, idle))
            .map_err(|source| crate::log::LogError::Io { path: "sequencer thread".into(), source })?;
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
        let (otx, orx) = oneshot::channel();
        let bytes = input.len();
        match self.inbox.0.push(tenant, (input, decoded, otx, std::time::Instant::now()), bytes) {
            Pushed::Queued => {}
            Pushed::Evicted((_, _, reply, _)) => {
                let _ = reply.send(Err(SubmitError::Overloaded));
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

fn run<L: Log, M: StateMachine>(
    mut log: L,
    mut machine: M,
    inbox: Arc<FairInbox<Item>>,
    clock: Arc<Clock>,
    stopped: &std::sync::Mutex<Option<String>>,
    wait_max: Duration,
    idle: Option<tally_apply::IdleSweep>,
) {
    while let Some(next) = inbox.next_batch_or_idle(idle.as_ref().map(|i| i.every)) {
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
                let _ = reply.send(Err(SubmitError::Overloaded));
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
        let batch = Batch { height: log.last_height() + 1, ts, inputs };
        if let Err(e) = log.append(&batch) {
            // Fail-stop: nothing in this batch was acknowledged, and a log we cannot
            // write is a log we cannot trust to be complete.
            tracing::error!(error = %e, "input log append failed; the sequencer stops");
            let later = format!(
                "this node takes no more writes since appending to its input log failed ({e}); \
                 fix the disk (space, I/O errors) and restart the node"
            );
            if let Ok(mut s) = stopped.lock() {
                *s = Some(later.clone());
            }
            eprintln!("tally: {later}");
            for r in replies {
                let _ = r.send(Err(SubmitError::Stopped(e.to_string())));
            }
            inbox.close();
            while let Some(rest) = inbox.next_batch_blocking() {
                for (_, _, r, _) in rest {
                    let _ = r.send(Err(SubmitError::Stopped(later.clone())));
                }
            }
            return;
        }
        let mut replies: Vec<_> = replies.into_iter().map(Some).collect();
        machine.apply_decoded(&batch, &mut decoded, &mut |i, out| {
            if let Some(r) = replies.get_mut(i).and_then(Option::take) {
                let _ = r.send(Ok(out));
            }
        });
        clock.batch_done(machine.last_commit_ts());
        for r in replies.into_iter().flatten() {
            let _ = r.send(Err(SubmitError::Stopped("no output for input".into())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fair::Tenant;
    use crate::log::FileLog;

    struct Counter {
        height: u64,
        total: u64,
    }
    impl StateMachine for Counter {
        fn applied_height(&self) -> u64 {
            self.height
        }
        fn last_commit_ts(&self) -> u64 {
            0
        }
        fn apply(&mut self, b: &Batch) -> Vec<Vec<u8>> {
            self.height = b.height;
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
                Counter { height: 0, total: 0 },
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
        let mut m = Counter { height: 0, total: 0 };
        let mut log2 = log;
        for b in log2.read_after(0).unwrap() {
            m.apply(&b);
        }
        assert_eq!(m.total, 15);
        assert_eq!(m.height, log2.last_height());
    }

    /// Records each applied batch's input count.
    struct Recorder {
        height: u64,
        seen: Arc<std::sync::Mutex<Vec<usize>>>,
    }
    impl StateMachine for Recorder {
        fn applied_height(&self) -> u64 {
            self.height
        }
        fn last_commit_ts(&self) -> u64 {
            0
        }
        fn apply(&mut self, b: &Batch) -> Vec<Vec<u8>> {
            self.height = b.height;
            self.seen.lock().unwrap().push(b.inputs.len());
            b.inputs.iter().map(|_| Vec::new()).collect()
        }
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
        let machine = Recorder { height: 0, seen: seen.clone() };
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
        fn apply(&mut self, b: &Batch) -> Vec<Vec<u8>> {
            if let Some(gate) = self.gate.take() {
                let _ = self.entered.send(());
                let _ = gate.recv();
            }
            self.height = b.height;
            b.inputs.iter().map(|_| b.height.to_be_bytes().to_vec()).collect()
        }
    }

    /// Inputs that waited longer than `queue_wait_max` are answered `Overloaded` and never
    /// logged; the one being applied when they queued is answered normally.
    #[test]
    fn inputs_that_wait_too_long_are_shed() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (open, gate) = std::sync::mpsc::channel();
        let machine = Gated { height: 0, entered: entered_tx, gate: Some(gate) };
        let cfg = SequencerConfig { epoch_ms: 1, queue_wait_max: Duration::from_millis(50), ..Default::default() };
        let (seq, _h) =
            Sequencer::start(FileLog::open(dir.path()).unwrap(), machine, cfg, Arc::new(Clock::new(0))).unwrap();
        rt.block_on(async {
            let first = tokio::spawn({
                let seq = seq.clone();
                async move { seq.submit(Tenant::DEFAULT, vec![0]).await }
            });
            while entered.try_recv().is_err() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let late = tokio::spawn({
                let seq = seq.clone();
                async move { seq.submit(Tenant::DEFAULT, vec![1]).await }
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
            open.send(()).unwrap();
            assert!(first.await.unwrap().is_ok());
            assert_eq!(late.await.unwrap(), Err(SubmitError::Overloaded));
            // A fresh input goes through, in batch 2: the shed one was never logged.
            let o = seq.submit(Tenant::DEFAULT, vec![2]).await.unwrap();
            assert_eq!(u64::from_be_bytes(o.try_into().unwrap()), 2);
        });
    }

    /// A tenant's write that arrives behind another tenant's backlog of several batches
    /// goes into the next batch; the backlog keeps its own order.
    #[test]
    fn batches_are_composed_fairly_across_tenants() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (open, gate) = std::sync::mpsc::channel();
        let machine = Gated { height: 0, entered: entered_tx, gate: Some(gate) };
        let cfg = SequencerConfig { epoch_ms: 1, batch_inputs_max: 10, ..Default::default() };
        let (seq, _h) =
            Sequencer::start(FileLog::open(dir.path()).unwrap(), machine, cfg, Arc::new(Clock::new(0))).unwrap();
        let (flood, quiet) = (Tenant { id: 1, weight: 1 }, Tenant { id: 2, weight: 1 });
        let height = |o: Result<Vec<u8>, SubmitError>| u64::from_be_bytes(o.unwrap().try_into().unwrap());
        rt.block_on(async {
            let first = tokio::spawn({
                let seq = seq.clone();
                async move { seq.submit(flood, vec![0]).await }
            });
            // Wait until the first batch is being applied, then queue 100 flood inputs
            // and one quiet input behind them.
            while entered.try_recv().is_err() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let backlog: Vec<_> = (0..100)
                .map(|i| {
                    let seq = seq.clone();
                    tokio::spawn(async move { seq.submit(flood, vec![i]).await })
                })
                .collect();
            let q = tokio::spawn({
                let seq = seq.clone();
                async move { seq.submit(quiet, vec![7]).await }
            });
            while seq.queued() < 101 {
                tokio::task::yield_now().await;
            }
            open.send(()).unwrap();
            assert_eq!(height(first.await.unwrap()), 1);
            assert_eq!(height(q.await.unwrap()), 2, "the quiet input makes the next batch");
            let mut heights = Vec::new();
            for b in backlog {
                heights.push(height(b.await.unwrap()));
            }
            assert!(heights.windows(2).all(|w| w[0] <= w[1]), "the backlog stays in order: {heights:?}");
            assert_eq!(heights.last(), Some(&12), "100 flood inputs take ten batches after the first");
        });
    }
}
