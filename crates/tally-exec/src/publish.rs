//! What the executor tells the node about each applied transaction, for change streams
//! (`tally-server/src/stream.rs`): the keys it wrote, after they are visible to readers.
//!
//! The executor only hands over what applying already produced (the writes of each input
//! and its commit ts) once it has committed them; it never waits for, or learns anything
//! from, a subscriber. Nothing published feeds back into state, so this changes no result.

use tally_fql::model::Write;
use tally_storage::Space;

/// One applied transaction, as stream subscribers need it.
#[derive(Clone, Debug)]
pub struct CommittedTxn {
    /// The transaction's commit ts.
    pub ts: u64,
    /// Document versions written: (key, version ts). A version ts other than `ts` is a
    /// history edit. Document bodies are left out (they can be 16 MiB; a subscriber
    /// reads what it needs from the store, with its own permissions).
    pub docs: Vec<(Vec<u8>, u64)>,
    /// Index entries written: (key, version ts, stored entry; None when a history edit
    /// removed the entry's version at that ts). A version ts other than `ts` is a
    /// history edit (`Insert`/`Remove` at a past ts).
    pub entries: Vec<(Vec<u8>, u64, Option<Vec<u8>>)>,
    /// Document versions a history edit (`Remove`) took away: (key, version ts, whether
    /// it was a deletion). Read before the removal is applied, because afterwards the
    /// store no longer has it and a stream's `history_rewrite` event names its action.
    pub removed: Vec<(Vec<u8>, u64, bool)>,
    /// Index entry versions a history edit took away: (key, version ts, the stored entry
    /// it removed). Read before the removal, for the same reason as `removed`: a set
    /// stream names the removed entry's action (v4's `set` event of a `SetRemove`).
    pub removed_entries: Vec<(Vec<u8>, u64, Vec<u8>)>,
}

impl CommittedTxn {
    pub fn of(ts: u64, writes: &[Write]) -> CommittedTxn {
        let mut docs = Vec::new();
        let mut entries = Vec::new();
        for w in writes {
            match w.space {
                Space::Docs => docs.push((w.key.clone(), w.ts)),
                Space::Index => entries.push((w.key.clone(), w.ts, w.value.clone())),
            }
        }
        CommittedTxn { ts, docs, entries, removed: Vec::new(), removed_entries: Vec::new() }
    }
}

/// Where the executor publishes committed transactions, in commit order.
pub trait Publish: Send + Sync {
    /// Whether to copy each batch's written keys at all. Asked once per batch, before
    /// the batch runs: a hub that may gain a subscriber during the batch must say yes,
    /// or that subscriber would miss the batch's later commits.
    fn wanted(&self) -> bool;
    /// Transactions committed and visible to readers, oldest first. Must not block.
    fn publish(&self, txns: Vec<CommittedTxn>);
}
