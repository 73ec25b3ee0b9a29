//! When the executor answers partway through a batch and when it makes a commit durable.
//!
//! Neither decision changes what any transaction reads or writes, nor any block header:
//! an early answer only tells a client sooner (each input runs on the state every
//! earlier input left, committed or not), and a durable commit only shortens what a
//! restart replays from the log. A node takes both on its clock; the executor takes them
//! from a [`Pacer`] passed in, so it reads no clock itself.

/// The release and checkpoint policy a node gives the executor.
pub trait Pacer: Send {
    /// A batch starts being applied.
    fn batch_started(&mut self) {}
    /// Asked after each input of a batch but the last: release the outputs held so far
    /// (with a non-durable intermediate commit) now?
    fn release_due(&mut self) -> bool;
    /// Asked as a batch ends, with the number of batches applied since the last durable
    /// commit (this one included): make this commit durable?
    fn checkpoint_due(&mut self, batches_since: u64) -> bool;
    /// A durable commit was made (at a batch end, on demand, or by installing a snapshot).
    fn checkpointed(&mut self) {}
}

/// No early answers; a durable commit every `.0` batches (at least 1). What survives a
/// crash then depends on the input alone: the deterministic simulation runs with it.
#[derive(Clone, Copy, Debug)]
pub struct EveryBatches(pub u64);

impl Pacer for EveryBatches {
    fn release_due(&mut self) -> bool {
        false
    }

    fn checkpoint_due(&mut self, batches_since: u64) -> bool {
        batches_since >= self.0.max(1)
    }
}
