//! What the executor writes for the transparency log, and under which names.
//!
//! The executor calls [`LogWriter::effect`] for each write a transaction applies and
//! [`LogWriter::finish_txn`] after it; it stores what `finish_txn` returns in the state
//! store's meta table, in the same commit as the transaction's effects. Names (ASCII, the
//! numbers lowercase hex, fixed width so they sort by number):
//!
//! | name | value |
//! |------|-------|
//! | `tlog/n/LLIIIIIIIIIIIIIIII` | 32-byte hash of complete subtree (level `LL`, index `I…`); level 0 = leaf hashes |
//! | `tlog/l/IIIIIIIIIIIIIIII` | the leaf record of leaf `I…` ([`crate::leaf::encode_record`]) |
//! | `tlog/s/HHHHHHHHHHHHHHHH` | this member's signature of the head after block `H…`: public key (32) ‖ signature (64) |
//!
//! The tree's size is the block header's `tree_size`. Nothing under `tlog/` is ever
//! rewritten or removed except a leaf record's input, by redaction (`docs/ledger.md`).
//!
//! Builds up to data directory format 3 also stored `tlog/h/<first 16 bytes of the leaf
//! hash, hex>` → leaf index here, for `get-proof-by-hash`. That lookup is now node-local
//! (tally-server `leaf_index`); such entries left in a store are never read.

use crate::leaf::{self, TxnLeaf};
use crate::merkle::{self, Hash};
use crate::tlog::{Frontier, NodeId};
use crate::LedgerError;

/// Meta name of a stored subtree hash.
pub fn node_key(id: NodeId) -> String {
    let mut name = String::with_capacity(25);
    name.push_str("tlog/n/");
    push_hex(&mut name, id.level.into(), 2);
    push_hex(&mut name, id.index, 16);
    name
}

/// Meta name of a leaf record.
pub fn leaf_key(index: u64) -> String {
    numbered("tlog/l/", index)
}

/// Meta name of this member's signature of the head after block `height`.
pub fn sig_key(height: u64) -> String {
    numbered("tlog/s/", height)
}

/// `prefix` and `n` in 16 lowercase hex digits: what `format!("{prefix}{n:016x}")` gives,
/// without the formatting machinery (2 % of the executor's time under 100,000-account
/// transfers, whose every transaction stores about three such names).
pub fn numbered(prefix: &str, n: u64) -> String {
    let mut name = String::with_capacity(prefix.len() + 16);
    name.push_str(prefix);
    push_hex(&mut name, n, 16);
    name
}

/// The low `digits` hex digits of `v`, lowercase, most significant first.
fn push_hex(out: &mut String, v: u64, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        out.push(HEX[((v >> (4 * i)) & 0xf) as usize] as char);
    }
}

/// Decodes a stored subtree hash.
pub fn decode_node(id: NodeId, b: &[u8]) -> Result<Hash, LedgerError> {
    b.try_into().map_err(|_| {
        LedgerError::Malformed(format!("stored subtree hash {} is {} bytes, not 32", node_key(id), b.len()))
    })
}

/// Appends transactions to the transparency log; see the module doc.
#[derive(Clone, Debug, Default)]
pub struct LogWriter {
    tree: Frontier,
    /// The current transaction's effect-leaf hashes.
    effects: Vec<Hash>,
    buf: Vec<u8>,
}

impl LogWriter {
    /// A writer continuing the tree `tree`.
    pub fn new(tree: Frontier) -> Self {
        Self { tree, effects: Vec::new(), buf: Vec::new() }
    }

    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    pub fn root(&self) -> Hash {
        self.tree.root()
    }

    /// Records one write of the current transaction; returns its effect-leaf hash (the
    /// block's effects tree takes the same hash).
    pub fn effect(&mut self, space: u8, key: &[u8], ts: u64, value: Option<&[u8]>) -> Hash {
        leaf::effect_leaf_into(&mut self.buf, space, key, ts, value);
        let h = merkle::leaf_hash(&self.buf);
        self.effects.push(h);
        h
    }

    /// Forgets the current transaction's effects (it was refused after all).
    pub fn discard_txn(&mut self) {
        self.effects.clear();
    }

    /// Ends the current transaction: appends its leaf and returns the meta values to
    /// store, (name, value).
    pub fn finish_txn(&mut self, ts: u64, height: u64, position: u32, input: &[u8]) -> Vec<(String, Vec<u8>)> {
        self.finish_txn_hashed(ts, height, position, input, merkle::leaf_hash(input))
    }

    /// [`Self::finish_txn`] with the input already hashed (`merkle::leaf_hash(input)`, as
    /// `BlockBuilder::push_input` returns it): the executor hashes each input once.
    pub fn finish_txn_hashed(
        &mut self,
        ts: u64,
        height: u64,
        position: u32,
        input: &[u8],
        input_hash: Hash,
    ) -> Vec<(String, Vec<u8>)> {
        let leaf = TxnLeaf::from_input_hash(ts, height, position, input_hash, &self.effects);
        let index = self.tree.size();
        let mut out = Vec::with_capacity(3);
        let hash = leaf.hash();
        out.push((leaf_key(index), leaf::encode_record(&leaf, &self.effects, input)));
        for (id, hash) in self.tree.append(hash) {
            out.push((node_key(id), hash.to_vec()));
        }
        self.effects.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::tlog::StoredTree;

    #[test]
    fn names_are_what_format_gives() {
        for n in [0, 1, 0xa, 0xff, 0x1234_5678_9abc_def0, u64::MAX - 1, u64::MAX] {
            assert_eq!(leaf_key(n), format!("tlog/l/{n:016x}"));
            assert_eq!(sig_key(n), format!("tlog/s/{n:016x}"));
            assert_eq!(numbered("block/", n), format!("block/{n:016x}"));
            for level in [0u8, 1, 0x3f, 0xff] {
                assert_eq!(node_key(NodeId::new(level, n)), format!("tlog/n/{level:02x}{n:016x}"));
            }
        }
    }

    #[test]
    fn written_tree_answers_proofs_and_names_sort_by_number() {
        let mut w = LogWriter::default();
        let mut meta = BTreeMap::new();
        let mut leaves = Vec::new();
        for i in 0..10u64 {
            for k in 0..i % 3 {
                w.effect(leaf::SPACE_DOCS, &[k as u8], i, Some(b"v"));
            }
            for (name, value) in w.finish_txn(100 + i, 1 + i / 4, (i % 4) as u32, format!("in{i}").as_bytes()) {
                assert!(meta.insert(name, value).is_none());
            }
            let rec = leaf::decode_record(&meta[&leaf_key(i)]).unwrap();
            assert_eq!(rec.leaf.effect_count as u64, i % 3);
            leaves.push(rec.leaf.hash());
        }
        assert_eq!(w.root(), merkle::root_of_hashes(&leaves));
        let read = |id: NodeId| meta.get(&node_key(id)).map(|b| decode_node(id, b)).transpose();
        let tree = StoredTree::new(10, read);
        let proof = tree.inclusion_proof(7, 10).unwrap();
        assert!(merkle::verify_inclusion_of_hash(&leaves[7], 7, 10, &proof, &w.root()));
        assert!(node_key(NodeId::new(1, 0xa)) < node_key(NodeId::new(1, 0x10)));
        assert!(leaf_key(9) < leaf_key(10));
    }
}
