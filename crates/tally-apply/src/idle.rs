//! When an idle log should carry an empty batch: the one decision both write paths (the
//! local sequencer in `tally-calvin`, the Raft leader's batcher in `tally-raft`) take
//! the same way, so a single node and a cluster sweep an idle store alike.
//!
//! Retention removes only as part of applying a batch (every member removes the same
//! versions at the same height, and the block says so). With no writes there are no
//! batches, so an idle log gets an empty batch — no inputs, a commit ts — whose only
//! effect is the executor's end-of-batch retention sweep. Empty batches are logged and
//! replicated like any other; only *when* to log one follows a clock, never what it does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The executor's word on when a sweep could next remove something, and how long a log
/// stays idle before it gets an empty batch.
#[derive(Clone, Debug)]
pub struct IdleSweep {
    /// Commit ts (µs since the epoch) from which a sweep could remove something: 0 now
    /// (or unknown), `u64::MAX` never as time alone passes (until the next write). Set by
    /// the executor after each batch (`tally_exec::machine::FqlMachine::retention_due`).
    pub due: Arc<AtomicU64>,
    /// Idle time before an empty batch, and between two empty batches.
    pub every: Duration,
}

/// Default of [`IdleSweep::every`]: an expired document goes within a few seconds of
/// becoming removable, and a truly idle node logs nothing (its `due` is `u64::MAX`).
pub const IDLE_SWEEP_EVERY: Duration = Duration::from_secs(2);

impl IdleSweep {
    pub fn new(due: Arc<AtomicU64>) -> IdleSweep {
        IdleSweep { due, every: IDLE_SWEEP_EVERY }
    }

    /// Should a log idle for [`IdleSweep::every`] log an empty batch at `now` (µs)?
    pub fn wanted(&self, now: u64) -> bool {
        now >= self.due.load(Ordering::Acquire)
    }
}
