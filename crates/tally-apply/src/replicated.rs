//! What a state machine adds to be driven by a replicated log instead of the local
//! `FileLog` of `tally-calvin`.
//!
//! With a replicated log (openraft, in `tally-raft`) the log decides what is applied, not
//! the machine: the log's own position (an opaque byte string — a Raft log id and
//! membership) is recorded *in the same atomic storage commit* as the effects of the
//! entry it describes. After a crash the machine's durable position says exactly which
//! log entries must be applied again. Entries that are not batches (Raft blank and
//! membership entries) only move the position; they never change the block height.

use crate::batch::Batch;
use crate::StateMachine;

#[derive(Debug, thiserror::Error)]
#[error("state machine: {0}")]
pub struct MachineError(pub String);

/// Writes a state exported by [`ReplicatedMachine::export_view`] to a stream; runs off
/// the machine's thread, while the machine goes on applying.
pub type ExportWriter = Box<dyn FnOnce(&mut dyn std::io::Write) -> Result<(), MachineError> + Send>;

/// A [`StateMachine`] that a replicated log can drive, checkpoint and snapshot.
pub trait ReplicatedMachine: StateMachine {
    /// Apply `batch` (its height must be `applied_height() + 1`) and record `position`
    /// in the same atomic commit.
    fn apply_at(&mut self, batch: &Batch, position: &[u8]) -> Vec<Vec<u8>>;
    /// [`apply_at`](Self::apply_at), handing output `i` to `answer` as soon as it may be
    /// released, as [`StateMachine::apply_answering`] does. By default all of them after
    /// the whole batch.
    fn apply_at_answering(&mut self, batch: &Batch, position: &[u8], answer: &mut dyn FnMut(usize, Vec<u8>)) {
        for (i, out) in self.apply_at(batch, position).into_iter().enumerate() {
            answer(i, out);
        }
    }
    /// [`apply_at_answering`](Self::apply_at_answering), with `decoded[i]` (when present)
    /// what this member already decoded from input `i`: the leader received the input
    /// and proposed the batch itself (see [`crate::Decoded`]; other members and a replay
    /// have the bytes only). By default the hints are dropped.
    fn apply_at_decoded(
        &mut self,
        batch: &Batch,
        position: &[u8],
        decoded: &mut [Option<crate::Decoded>],
        answer: &mut dyn FnMut(usize, Vec<u8>),
    ) {
        let _ = decoded;
        self.apply_at_answering(batch, position, answer)
    }
    /// Record `position` for a log entry that carries no batch.
    fn set_position(&mut self, position: &[u8]) -> Result<(), MachineError>;
    /// The last recorded position (what survives a crash is the last durable one).
    fn position(&self) -> Result<Option<Vec<u8>>, MachineError>;
    /// Make everything applied so far durable (fsync).
    fn checkpoint(&mut self) -> Result<(), MachineError>;
    /// The whole state, position included, as one byte string (call after `checkpoint`).
    fn export(&self) -> Result<Vec<u8>, MachineError>;
    /// Replace the whole state with an [`export`](Self::export)ed one, durably.
    fn import(&mut self, data: &[u8]) -> Result<(), MachineError>;
    /// The state as it is now (call after `checkpoint`), to be written later by the
    /// returned writer on another thread while this machine applies more batches: the
    /// same bytes [`export`](Self::export) gives now. A machine over a store takes a
    /// read view here and streams it in the writer, holding one record at a time; the
    /// default exports whole, here.
    fn export_view(&self) -> Result<ExportWriter, MachineError> {
        let data = self.export()?;
        Ok(Box::new(move |w: &mut dyn std::io::Write| w.write_all(&data).map_err(|e| MachineError(e.to_string()))))
    }
    /// [`import`](Self::import) from a stream: a machine over a store loads it record by
    /// record as one commit (a damaged or truncated stream leaves the state as it was);
    /// the default reads it whole first.
    fn import_from(&mut self, r: &mut dyn std::io::Read) -> Result<(), MachineError> {
        let mut data = Vec::new();
        r.read_to_end(&mut data).map_err(|e| MachineError(e.to_string()))?;
        self.import(&data)
    }
}
