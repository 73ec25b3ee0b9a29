//! tally-exec: the deterministic executor. It owns the transaction record (a logged
//! input's bytes: [`record`]), [`machine::FqlMachine`] (applies epoch batches through the
//! FQL evaluator in write mode onto the state store, builds each block, keeps the meta
//! keys), and the snapshot format a Raft member installs ([`snapshot`]).
//!
//! Every replica runs the same inputs through this crate in log order and must compute
//! the same state and the same block headers, so:
//!
//! Architecture invariant: no clock, no randomness, no I/O but the state store, no
//! HashMap iteration order in anything it writes or answers. Cargo enforces the first
//! part: this crate depends on no tokio, HTTP or `rand` (scripts/exec-boundary checks
//! `cargo tree` and the sources). The only decisions that follow a clock — when to
//! answer partway through a batch, when to make a commit durable — are taken by a
//! [`pace::Pacer`] the node passes in, and change no result. Logs drive the executor
//! through `tally-apply`'s traits only.

pub mod machine;
pub mod pace;
pub mod publish;
pub mod record;
pub mod snapshot;
pub mod sweep_due;
pub mod sweep_spacing;

pub use machine::{FqlMachine, RULES};
