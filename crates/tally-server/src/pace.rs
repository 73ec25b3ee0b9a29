//! The node's [`Pacer`]: the executor's early answers and durable checkpoints on this
//! node's monotonic clock (the executor itself reads no clock; see `tally_exec::pace`).

use std::time::{Duration, Instant};

use tally_exec::machine::CHECKPOINT_BATCHES;
use tally_exec::pace::Pacer;

/// While applying a long batch, outputs are released (with an intermediate commit) at
/// most this often: a short transaction early in the batch is answered within about this
/// long of its turn instead of after the whole batch.
pub const RELEASE_EVERY: Duration = Duration::from_millis(1);

/// Durable storage commits happen at most this often (the log makes every batch durable).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(1000);

/// Release every [`RELEASE_EVERY`] of execution; checkpoint every [`CHECKPOINT_INTERVAL`]
/// or [`CHECKPOINT_BATCHES`] batches, whichever comes first.
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

    fn checkpoint_due(&mut self, batches_since: u64) -> bool {
        batches_since >= CHECKPOINT_BATCHES || self.checkpointed_at.elapsed() >= CHECKPOINT_INTERVAL
    }

    fn checkpointed(&mut self) {
        self.checkpointed_at = Instant::now();
    }
}
