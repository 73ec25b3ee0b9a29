//! The one seam through which a write reaches "logged and applied": the local log's
//! [`Sequencer`](crate::Sequencer) on a single node, Raft (`tally-raft`'s `RaftNode`) on
//! a cluster. The HTTP layer submits through [`WritePath`] and handles one error type,
//! whichever log is underneath.

use std::future::Future;
use std::pin::Pin;

use crate::fair::Tenant;

/// Why a write got no output. Each variant says whether the write may have been applied,
/// which is what a client must know to retry safely.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WriteError {
    /// The queue was full, or the write waited too long for its batch: it was never
    /// logged.
    #[error("too many transactions are queued; retry shortly")]
    Overloaded,
    /// The write was not accepted (no leader or quorum, shutting down, a failed log).
    #[error("{0}")]
    Unavailable(String),
    /// The write was logged or proposed, but its outcome is unknown: it may or may not
    /// have been applied.
    #[error("{0}")]
    Ambiguous(String),
}

/// A submitted write's output (the executor's output record) or why there is none.
pub type WriteFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, WriteError>> + Send + 'a>>;

/// Logs an input durably (one batch shared with concurrent inputs, composed fairly across
/// tenants), applies it through the executor, and resolves with its output.
pub trait WritePath: Send + Sync {
    fn submit(&self, tenant: Tenant, input: Vec<u8>) -> WriteFuture<'_>;
}

impl WritePath for crate::Sequencer {
    fn submit(&self, tenant: Tenant, input: Vec<u8>) -> WriteFuture<'_> {
        Box::pin(async move {
            crate::Sequencer::submit(self, tenant, input).await.map_err(|e| match e {
                crate::SubmitError::Overloaded => WriteError::Overloaded,
                crate::SubmitError::Stopped(m) => WriteError::Unavailable(format!("The write path stopped: {m}")),
            })
        })
    }
}
