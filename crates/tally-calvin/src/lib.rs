//! tally-calvin: the Calvin write path — sequencer, durable input log, and the
//! deterministic application loop.
//!
//! Writes are not executed where they arrive. Their *inputs* are gathered into epoch
//! batches (at most `epoch_ms` or `batch_inputs_max` inputs, composed fairly across
//! tenants by priority when more is queued than one batch holds: [`fair`]), each batch is appended to
//! the [`Log`] durably (one fsync shared by every transaction in it), and then a
//! [`StateMachine`] applies the batch deterministically. Replaying the log from the
//! machine's last durable checkpoint rebuilds exactly the same state.
//!
//! Architecture invariant: this crate knows nothing of HTTP, FQL or the storage
//! engine; inputs and outputs are opaque bytes. It drives the executor only through
//! `tally-apply`'s traits (re-exported here); [`ReplicatedMachine`] is the seam where the
//! replicated (openraft) log of `tally-raft` drives the same machine.

pub mod courier;
pub mod fair;
mod log;
mod retain;
mod segment;
mod sequencer;
mod write;

pub use fair::{BatchLimits, FairInbox, FairQueue, Pushed, Tenant};
pub use log::{
    migrate_single_file, read_log_dir, replay_dirs, stream_log_dir, FileLog, Log, LogError, LogOptions,
    FRAME_BYTES_MAX, SEGMENT_BYTES_DEFAULT,
};
pub use retain::{retirable, retire_segments, Retain, Retired};
pub use segment::{
    list_segments, segment_holds_frames, segment_name, Segment, SegmentHeader, SEGMENT_HEADER_BYTES, SEGMENT_VERSION,
    SEGMENT_VERSIONS_READ,
};
pub use sequencer::{Clock, Replayed, Sequencer, SequencerConfig, SubmitError, EXECUTOR_STACK_BYTES};
pub use tally_apply::{
    Batch, BatchError, Decoded, ExportWriter, IdleSweep, MachineError, ReplicatedMachine, StateMachine,
    IDLE_SWEEP_EVERY,
};
pub use write::{WriteError, WriteFuture, WritePath};
