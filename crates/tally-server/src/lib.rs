//! tally-server: wires the pieces into a running node — the HTTP API the FQL v4
//! drivers speak, authentication, the read-only fast path, and the Calvin write path
//! (sequencer + input log + the FQL state machine over redb).
//!
//! Data flow of one query: HTTP body -> JSON -> `Expr` -> authenticate -> evaluate
//! read-only at the latest applied snapshot; if a write is reached, the query *input*
//! is submitted to the sequencer, logged durably in an epoch batch, and executed by
//! `tally_exec::FqlMachine` at its commit ts; the answer comes back to the handler.

pub mod accept;
pub mod backup;
pub mod body;
pub mod cluster;
pub mod conn;
pub mod console;
pub mod datadir;
pub mod health;
pub mod http;
pub mod inflight;
pub mod jwt;
pub mod lanes;
pub mod leaf_index;
pub mod ledger_api;
pub mod ledger_check;
mod ledger_revision;
mod log_retain;
pub mod longpool;
pub mod metrics;
pub mod node;
pub mod pace;
pub mod quorum;
pub mod root_key;
pub mod scheduler;
pub mod stream;
pub mod tls;

// The executor moved to tally-exec; these paths stay for the code that names them.
pub use tally_exec::{machine, record, snapshot};

pub use cluster::{ClusterOptions, PeerLatency};
pub use conn::ConnLimits;
pub use node::{serve, LogConfig, ServeConfig};
pub use tally_calvin::{Retain, SEGMENT_BYTES_DEFAULT};
pub use tally_raft::peer_port;
/// Mutual TLS between members (files, member names), for the CLI.
pub use tally_raft::tls as peer_tls;
