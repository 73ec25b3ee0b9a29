//! The sequencer: gathers submitted inputs into epoch batches, logs each batch durably,
//! applies it through the state machine, and answers every submitter with its output.
//!
//! It runs on one dedicated OS thread, so batches are logged and applied strictly in
//! height order. The submission queue is bounded (`queue_inputs_max`): when full,
//! `submit` fails at once with `Overloaded` instead of letting memory grow.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use crate::batch::Batch;
use crate::log::Log;

/// Applies batches deterministically. Implemented by the server over FQL + storage.
pub trait StateMachine: Send {
    /// Height of the last batch whose effects are applied.
    fn applied_height(&self) -> u64;
    /// Apply one batch; returns one output per input, in order.
    fn apply(&mut self, batch: &Batch) -> Vec<Vec<u8>>;
    /// The commit ts of the last applied transaction.
    fn last_commit_ts(&self) -> u64;
}

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
}

impl Default for SequencerConfig {
    fn default() -> Self {
        SequencerConfig { epoch_ms: 10, batch_inputs_max: 8192, batch_bytes_max: 64 << 20, queue_inputs_max: 65_536 }
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SubmitError {
    #[error("the transaction queue is full; retry shortly")]
    Overloaded,
    #[error("the sequencer has stopped: {0}")]
    Stopped(String),
}

type Item = (Vec<u8>, oneshot::Sender<Result<Vec<u8>, SubmitError>>);

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

/// Handle to the running sequencer. Cloneable; dropping every handle stops the thread.
#[derive(Clone)]
pub struct Sequencer {
    tx: SyncSender<Item>,
}

impl Sequencer {
    /// Replay the log past the machine's applied height, then start sequencing.
    pub fn start<L: Log + 'static, M: StateMachine + 'static>(
        mut log: L,
        mut machine: M,
        config: SequencerConfig,
        clock: std::sync::Arc<Clock>,
    ) -> Result<(Sequencer, std::thread::JoinHandle<()>), crate::log::LogError> {
        let applied = machine.applied_height();
        let replay = log.read_after(applied)?;
        if !replay.is_empty() {
            tracing::info!(from = applied + 1, batches = replay.len(), "replaying input log");
        }
        for b in &replay {
            machine.apply(b);
        }
        let (tx, rx) = sync_channel::<Item>(config.queue_inputs_max);
        let handle = std::thread::Builder::new()
            .name("tally-sequencer".into())
            .stack_size(EXECUTOR_STACK_BYTES)
            .spawn(move || run(log, machine, config, rx, clock))
            .map_err(|source| crate::log::LogError::Io { path: "sequencer thread".into(), source })?;
        Ok((Sequencer { tx }, handle))
    }

    /// Submit one input; resolves with the machine's output once its batch is applied.
    pub async fn submit(&self, input: Vec<u8>) -> Result<Vec<u8>, SubmitError> {
        let (otx, orx) = oneshot::channel();
        match self.tx.try_send((input, otx)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(SubmitError::Overloaded),
            Err(TrySendError::Disconnected(_)) => return Err(SubmitError::Stopped("shut down".into())),
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
    cfg: SequencerConfig,
    rx: Receiver<Item>,
    clock: std::sync::Arc<Clock>,
) {
    loop {
        let Ok(first) = rx.recv() else { return };
        let deadline = Instant::now() + Duration::from_millis(cfg.epoch_ms);
        let mut bytes = first.0.len();
        let mut items = vec![first];
        while items.len() < cfg.batch_inputs_max && bytes < cfg.batch_bytes_max {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match rx.recv_timeout(left) {
                Ok(it) => {
                    bytes += it.0.len();
                    items.push(it);
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // The batch ts never goes backwards, even if the wall clock does.
        let ts = clock.next_batch_ts();
        let (inputs, replies): (Vec<Vec<u8>>, Vec<_>) = items.into_iter().unzip();
        let batch = Batch { height: log.last_height() + 1, ts, inputs };
        if let Err(e) = log.append(&batch) {
            // Fail-stop: nothing in this batch was acknowledged, and a log we cannot
            // write is a log we cannot trust to be complete.
            tracing::error!(error = %e, "input log append failed; the sequencer stops");
            for r in replies {
                let _ = r.send(Err(SubmitError::Stopped(e.to_string())));
            }
            return;
        }
        let outputs = machine.apply(&batch);
        clock.batch_done(machine.last_commit_ts());
        for (r, out) in replies.into_iter().zip(
            outputs
                .into_iter()
                .map(Ok)
                .chain(std::iter::repeat_with(|| Err(SubmitError::Stopped("no output for input".into())))),
        ) {
            let _ = r.send(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
                    let o = seq.submit(vec![i]).await.unwrap();
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
}
