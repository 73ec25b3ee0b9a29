//! tally-raft: the Calvin input log replicated across ledger members with openraft.
//!
//! One Raft entry carries one epoch batch. The Raft leader is the sequencer: it gathers
//! the inputs submitted on every member into a batch, stamps it with its clock, and
//! proposes it; once a majority has the entry durably, every member applies it through the
//! same deterministic [`ReplicatedMachine`](tally_calvin::ReplicatedMachine) (the FQL
//! executor), so every member computes the same block.
//!
//! What lives here: the Raft types ([`TypeConfig`]), the durable Raft log ([`LogStore`],
//! redb), the state machine adapter ([`Machine`]: runs the executor on its own thread and
//! records the Raft position in the executor's own commits), the peer transport (HTTP on
//! the peer port, [`network`] and [`peer`]), and [`RaftNode`], which ties them together
//! behind `submit` / `linearize` / membership calls.
//!
//! Architecture invariant: this crate knows nothing of FQL or of the storage engine of the
//! state; inputs, outputs and snapshots are opaque bytes. openraft is pinned to one exact
//! pre-release version and is visible only through this crate.

pub mod early;
pub mod log_store;
pub mod network;
pub mod node;
pub mod peer;
pub mod peer_port;
pub mod runtime;
pub mod snapshot_store;
pub mod snapshot_stream;
pub mod state_machine;
pub mod tls;
pub mod wire;

use base64::Engine;
use serde::{Deserialize, Serialize};

pub use log_store::LogStore;
pub use node::{ClusterConfig, RaftNode, SubmitError, SubmitOk};
pub use state_machine::Machine;

/// One epoch batch as a Raft entry: the encoded [`tally_calvin::Batch`] with height 0.
/// The height is assigned when the entry is applied (the machine's own batch counter),
/// because Raft blank and membership entries are not batches.
///
/// In the log and on the wire it is bytes inside a Raft record ([`wire`]). The serde
/// implementations below read the version 0 (JSON, base64) log of earlier builds.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BatchRequest(pub Vec<u8>);

impl std::fmt::Display for BatchRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "batch({} bytes)", self.0.len())
    }
}

/// Version 0: base64 in JSON.
impl Serialize for BatchRequest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for BatchRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            base64::engine::general_purpose::STANDARD.decode(s).map(BatchRequest).map_err(serde::de::Error::custom)
        } else {
            Vec::<u8>::deserialize(d).map(BatchRequest)
        }
    }
}

/// What applying one entry produced: the batch's height and one output per input
/// (empty for entries that are not batches).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BatchResponse {
    pub height: u64,
    pub outputs: Vec<Vec<u8>>,
}

impl std::fmt::Display for BatchResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "height {} ({} outputs)", self.height, self.outputs.len())
    }
}

openraft::declare_raft_types!(
    /// Tally's Raft types: node ids are the `--node-id` numbers, a node's data is its peer address.
    pub TypeConfig:
        D = BatchRequest,
        R = BatchResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        AsyncRuntime = crate::runtime::TallyRuntime,
);

pub type Raft = openraft::Raft<TypeConfig, Machine>;
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type Vote = <TypeConfig as openraft::RaftTypeConfig>::Vote;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type SnapshotData = snapshot_store::SnapshotFile;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;
