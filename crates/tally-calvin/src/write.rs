//! The one seam through which a write reaches "logged and applied": the local log's
//! [`Sequencer`](crate::Sequencer) on a single node, Raft (`tally-raft`'s `RaftNode`) on
//! a cluster. The HTTP layer submits through [`WritePath`] and handles one error type,
//! whichever log is underneath.

use std::future::Future;
use std::pin::Pin;

use crate::fair::Tenant;
use tally_apply::Decoded;

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
    /// [`WritePath::submit`], with what the receiving node already decoded from `input`
    /// ([`Decoded`]), for the executor to use instead of decoding the bytes again where
    /// it runs in this process. By default (Raft: the executor that applies the input
    /// first may be another member's) the hint is dropped.
    fn submit_decoded(&self, tenant: Tenant, input: Vec<u8>, decoded: Decoded) -> WriteFuture<'_> {
        drop(decoded);
        self.submit(tenant, input)
    }
}

impl WritePath for crate::Sequencer {
    fn submit(&self, tenant: Tenant, input: Vec<u8>) -> WriteFuture<'_> {
        self.submit_inner(tenant, input, None)
    }

    fn submit_decoded(&self, tenant: Tenant, input: Vec<u8>, decoded: Decoded) -> WriteFuture<'_> {
        self.submit_inner(tenant, input, Some(decoded))
    }
}

impl crate::Sequencer {
    fn submit_inner(&self, tenant: Tenant, input: Vec<u8>, decoded: Option<Decoded>) -> WriteFuture<'_> {
        Box::pin(async move {
            self.submit_with(tenant, input, decoded).await.map_err(|e| match e {
                crate::SubmitError::Overloaded => WriteError::Overloaded,
                crate::SubmitError::Stopped(m) => WriteError::Unavailable(format!("The write path stopped: {m}")),
            })
        })
    }
}
