//! tally-apply: the seam between a log and the executor — the epoch batch a log hands
//! over ([`Batch`], its encoding) and the traits through which a log applies it
//! ([`StateMachine`] for the local log's sequencer, [`ReplicatedMachine`] for Raft).
//!
//! Architecture invariant: no dependencies beyond `thiserror`. The executor
//! (`tally-exec`) implements these traits and the write paths (`tally-calvin`,
//! `tally-raft`) drive them, so neither side reaches the other's dependencies: the
//! executor sees no tokio, no network and no clock.

mod batch;
mod idle;
mod replicated;

pub use batch::{Batch, BatchError, BatchHead, BATCH_FORMAT, BATCH_FORMAT_UNSTAMPED};
pub use idle::{IdleSweep, IDLE_SWEEP_EVERY};
pub use replicated::{ExportWriter, MachineError, ReplicatedMachine};

/// What the node that received an input already decoded from its bytes, handed to the
/// executor beside them so it need not decode them again (on that node only: a single
/// node's sequencer, or the Raft leader that proposes the batch; nothing of it is logged
/// or replicated). Opaque here; the machine that defines it knows its type
/// and ignores anything else. A machine must produce exactly what it would from the
/// bytes alone: a hint saves work, it never changes a result (replay and every other
/// replica see the bytes only).
pub type Decoded = Box<dyn std::any::Any + Send>;

/// Applies batches deterministically. Implemented by `tally-exec` over FQL + storage.
pub trait StateMachine: Send {
    /// Height of the last batch whose effects are applied.
    fn applied_height(&self) -> u64;
    /// Apply one batch; returns one output per input, in order.
    fn apply(&mut self, batch: &Batch) -> Vec<Vec<u8>>;
    /// Apply one batch, handing output `i` to `answer` as soon as it may be released: its
    /// effects are visible to readers and nothing later in the batch can change them.
    /// The sequencer answers clients through this (the batch is already in the log), so a
    /// short input early in a long batch need not wait for the rest. Every output is
    /// handed over exactly once, in order; by default all of them after the whole batch.
    fn apply_answering(&mut self, batch: &Batch, answer: &mut dyn FnMut(usize, Vec<u8>)) {
        for (i, out) in self.apply(batch).into_iter().enumerate() {
            answer(i, out);
        }
    }
    /// [`StateMachine::apply_answering`], with `decoded[i]` (when present) what the
    /// receiving node already decoded from input `i` (see [`Decoded`]). By default the
    /// hints are dropped and the inputs decoded from their bytes.
    fn apply_decoded(
        &mut self,
        batch: &Batch,
        decoded: &mut [Option<Decoded>],
        answer: &mut dyn FnMut(usize, Vec<u8>),
    ) {
        let _ = decoded;
        self.apply_answering(batch, answer)
    }
    /// [`StateMachine::apply_decoded`] for a batch handed over while the log is still
    /// making it durable, so that evaluation overlaps the log's sync. `logged()` blocks
    /// until the batch is durable in the log and says whether it is: `false` means its
    /// append failed, so the batch will never be applied anywhere. Asked again, it answers
    /// the same at once.
    ///
    /// The machine may evaluate the batch before calling `logged()`, but must call it
    /// before anything of the batch is seen outside the executor: a commit readers or the
    /// store's flusher see, an answer, a published change, a shared value such as the
    /// root key. Nothing the machine computes may depend on when `logged()` returns.
    /// When it returns `false`, the machine makes nothing of the batch visible, hands
    /// over no output and returns `false`; its driver then applies nothing more with it
    /// (the log has stopped). By default the machine waits first, then applies.
    fn apply_logging(
        &mut self,
        batch: &Batch,
        decoded: &mut [Option<Decoded>],
        logged: &mut dyn FnMut() -> bool,
        answer: &mut dyn FnMut(usize, Vec<u8>),
    ) -> bool {
        if !logged() {
            return false;
        }
        self.apply_decoded(batch, decoded, answer);
        true
    }
    /// The commit ts of the last applied transaction.
    fn last_commit_ts(&self) -> u64;
    /// The executor rules this machine applies batches under: the log stamps each batch it
    /// closes with it ([`Batch::rules`]), so every replica and every replay applies the
    /// batch under the rules it was acknowledged under (a machine refuses a batch stamped
    /// with other rules). A wrapper passes its inner machine's on; a test machine that
    /// cares for no rules may answer [`Batch::UNSTAMPED`].
    fn rules(&self) -> u16;
}
