//! The node's [`Pacer`]: the executor's early answers and durable checkpoints on this
//! node's monotonic clock (the executor itself reads no clock; see `tally_exec::pace`).

use std::time::{Duration, Instant};

use tally_exec::pace::Pacer;

/// While applying a long batch, outputs are released (with an intermediate commit) at
/// most this often: a short transaction early in the batch is answered within about this
/// long of its turn instead of after the whole batch.
pub const RELEASE_EVERY: Duration = Duration::from_millis(1);

/// Durable storage commits happen this often (the log makes every batch durable, so a
/// restart replays about this much of it).
///
/// Time alone decides, not a count of batches as well: under 64 clients a node applies
/// about a thousand batches a second, and a checkpoint every 256 of them (four a second)
/// cost 100,000-account transfers 5 % of their throughput (docs/benchmarks.md, "A
/// checkpoint a second"), each one writing the pages every flush since the last had
/// copied, and cutting the flusher's group short while the executor read through the
/// layers queued behind it.
///
/// Two seconds, not one: a checkpoint writes whole every B-tree leaf written to since the
/// last, and under updates spread over many keys most leaves are; at every other one as
/// many updates share a leaf, so the flusher took 10–17 % less CPU per 100,000-account
/// transfer (docs/benchmarks.md, "A checkpoint every two seconds"). The write-behind
/// queue holds what two seconds write (`BehindLimits`, 128 MiB). The second a checkpoint
/// is written in runs slower than the one between (same section).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(2000);

/// Release every [`RELEASE_EVERY`] of execution; checkpoint every [`CHECKPOINT_INTERVAL`].
pub struct WallPacer {
    released_at: Instant,
    checkpointed_at: Instant,
}

impl Default for WallPacer {
    fn default() -> Self {
        WallPacer { released_at: Instant::now(), checkpointed_at: Instant::now() }
    }
}

impl Pacer for WallPacer {
    fn batch_started(&mut self) {
        self.released_at = Instant::now();
    }

    fn release_due(&mut self) -> bool {
        let due = self.released_at.elapsed() >= RELEASE_EVERY;
        if due {
            self.released_at = Instant::now();
        }
        due
    }

    fn checkpoint_due(&mut self, _batches_since: u64) -> bool {
        self.checkpointed_at.elapsed() >= CHECKPOINT_INTERVAL
    }

    fn checkpointed(&mut self) {
        self.checkpointed_at = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However many batches went by, a checkpoint waits for the interval; once it has
    /// passed, the next batch checkpoints.
    #[test]
    fn checkpoints_follow_the_clock_not_the_batch_count() {
        let mut p = WallPacer::default();
        assert!(!p.checkpoint_due(u64::MAX));
        p.checkpointed_at = Instant::now() - CHECKPOINT_INTERVAL - Duration::from_millis(1);
        assert!(p.checkpoint_due(0));
        p.checkpointed();
        assert!(!p.checkpoint_due(100_000));
    }
}
