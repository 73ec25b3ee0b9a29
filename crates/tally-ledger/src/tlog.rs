//! The transparency log's append-only persistent tree.
//!
//! The tree over all transactions grows by one leaf per applied transaction and never
//! changes a leaf. It is kept as the hashes of its *complete subtrees*: node
//! `(level, index)` is the root of the perfect subtree over leaves
//! `[index << level, (index + 1) << level)`, written once, when its last leaf arrives,
//! and never rewritten. Level 0 holds the leaf hashes. A tree of n leaves stores fewer
//! than 2n nodes; any range the RFC 9162 proof recursion asks for splits into at most
//! ~2·log2(n) complete subtrees, so a proof costs O(log n) reads whatever n is.
//!
//! [`Frontier`] is the appender: it remembers the roots of the complete subtrees along
//! the tree's right edge (one per set bit of the size, at most 64) and, for each new
//! leaf, returns the nodes that became complete, for the caller to store. [`StoredTree`]
//! reads them back to answer roots and proofs. Neither does I/O itself: the caller
//! passes a function that reads a node from wherever it keeps them.

use crate::merkle::{self, node_hash, Hash, RangeRoots};
use crate::LedgerError;

/// A complete subtree: leaves `[index << level, (index + 1) << level)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId {
    pub level: u8,
    pub index: u64,
}

impl NodeId {
    pub fn new(level: u8, index: u64) -> Self {
        Self { level, index }
    }
}

/// The right edge of a tree: enough to append leaves and compute the root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Roots of the complete subtrees that make up the tree, largest (leftmost) first:
    /// one per set bit of `size`.
    peaks: Vec<Hash>,
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The frontier of the stored tree of `size` leaves (one read per set bit of `size`).
    pub fn load(size: u64, read: impl Fn(NodeId) -> Result<Option<Hash>, LedgerError>) -> Result<Self, LedgerError> {
        let peaks = peak_ids(size)
            .map(|id| read(id)?.ok_or(LedgerError::MissingNode { level: id.level, index: id.index }))
            .collect::<Result<_, _>>()?;
        Ok(Self { size, peaks })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf by its hash; returns the nodes this completed (the leaf itself at
    /// level 0 first, then each parent it completed, lowest first), for the caller to store.
    pub fn append(&mut self, leaf_hash: Hash) -> Vec<(NodeId, Hash)> {
        let mut done = Vec::with_capacity(2);
        let (mut level, mut index, mut hash) = (0u8, self.size, leaf_hash);
        done.push((NodeId::new(0, index), hash));
        while index & 1 == 1 {
            // An odd index closes its pair: the left sibling is the newest peak.
            let Some(left) = self.peaks.pop() else { break };
            hash = node_hash(&left, &hash);
            level += 1;
            index >>= 1;
            done.push((NodeId::new(level, index), hash));
        }
        self.peaks.push(hash);
        self.size += 1;
        done
    }

    /// `MTH` of the whole tree: the peaks folded from the right.
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(last) = peaks.next() else { return merkle::empty_root() };
        peaks.fold(*last, |right, left| node_hash(left, &right))
    }
}

/// The complete subtrees that make up a tree of `size` leaves, largest first.
pub fn peak_ids(size: u64) -> impl Iterator<Item = NodeId> {
    (0..64u8).rev().filter(move |b| size >> b & 1 == 1).map(move |b| {
        let start = size & !((1u128 << (b + 1)) - 1) as u64;
        NodeId::new(b, start >> b)
    })
}

/// Every node a tree of `size` leaves stores (for copying a tree elsewhere).
pub fn node_ids(size: u64) -> impl Iterator<Item = NodeId> {
    (0..64u8).take_while(move |l| size >> l > 0).flat_map(move |l| (0..size >> l).map(move |i| NodeId::new(l, i)))
}

/// A tree of `size` leaves whose complete-subtree hashes are read through `read`.
pub struct StoredTree<F> {
    size: u64,
    read: F,
}

impl<F: Fn(NodeId) -> Result<Option<Hash>, LedgerError>> StoredTree<F> {
    pub fn new(size: u64, read: F) -> Self {
        Self { size, read }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    fn node(&self, id: NodeId) -> Result<Hash, LedgerError> {
        (self.read)(id)?.ok_or(LedgerError::MissingNode { level: id.level, index: id.index })
    }

    /// `MTH(D[0:size])` for any `size` up to the tree's.
    pub fn root_at(&self, size: u64) -> Result<Hash, LedgerError> {
        self.range_root(0, size)
    }

    /// Inclusion proof of leaf `index` in the tree's first `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, LedgerError> {
        self.check_size(size)?;
        merkle::inclusion_proof_in(self, size, index)
    }

    /// Consistency proof from the first `old_size` to the first `size` leaves.
    pub fn consistency_proof(&self, old_size: u64, size: u64) -> Result<Vec<Hash>, LedgerError> {
        self.check_size(size)?;
        merkle::consistency_proof_in(self, old_size, size)
    }

    /// Hash of leaf `index`.
    pub fn leaf_hash(&self, index: u64) -> Result<Hash, LedgerError> {
        if index >= self.size {
            return Err(LedgerError::IndexOutOfRange { index, size: self.size });
        }
        self.node(NodeId::new(0, index))
    }

    fn check_size(&self, size: u64) -> Result<(), LedgerError> {
        if size > self.size {
            return Err(LedgerError::OldSizeTooLarge { old: size, size: self.size });
        }
        Ok(())
    }
}

impl<F: Fn(NodeId) -> Result<Option<Hash>, LedgerError>> RangeRoots for StoredTree<F> {
    fn range_root(&self, start: u64, end: u64) -> Result<Hash, LedgerError> {
        if start > end || end > self.size {
            return Err(LedgerError::IndexOutOfRange { index: end, size: self.size });
        }
        let len = end - start;
        if len == 0 {
            return Ok(merkle::empty_root());
        }
        if len.is_power_of_two() && start & (len - 1) == 0 {
            return self.node(NodeId::new(len.trailing_zeros() as u8, start >> len.trailing_zeros()));
        }
        // Not one complete subtree: split as MTH does; the left part is complete and
        // aligned whenever the range is one the proof recursion reaches.
        let k = merkle::split_point(len);
        Ok(node_hash(&self.range_root(start, start + k)?, &self.range_root(start + k, end)?))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::BTreeMap;

    use super::*;
    use crate::merkle::{leaf_hash, root_of_hashes, verify_consistency, verify_inclusion_of_hash};

    fn grow(n: u64) -> (Frontier, BTreeMap<NodeId, Hash>, Vec<Hash>) {
        let mut f = Frontier::new();
        let mut nodes = BTreeMap::new();
        let mut leaves = Vec::new();
        for i in 0..n {
            let h = leaf_hash(format!("leaf-{i}").as_bytes());
            leaves.push(h);
            for (id, hash) in f.append(h) {
                assert!(nodes.insert(id, hash).is_none(), "node {id:?} written twice");
            }
            assert_eq!(f.root(), root_of_hashes(&leaves), "size {}", i + 1);
        }
        (f, nodes, leaves)
    }

    #[test]
    fn stored_proofs_equal_in_memory_proofs() {
        let (f, nodes, leaves) = grow(67);
        assert!(nodes.len() < 2 * 67);
        assert_eq!(node_ids(67).count(), nodes.len());
        assert!(node_ids(67).all(|id| nodes.contains_key(&id)));
        let tree = StoredTree::new(67, |id| Ok(nodes.get(&id).copied()));
        for size in 1..=67u64 {
            let prefix = &leaves[..size as usize];
            let root = tree.root_at(size).unwrap();
            assert_eq!(root, root_of_hashes(prefix));
            for i in 0..size {
                let p = tree.inclusion_proof(i, size).unwrap();
                assert_eq!(p, merkle::inclusion_proof_of_hashes(prefix, i).unwrap());
                assert!(verify_inclusion_of_hash(&leaves[i as usize], i, size, &p, &root));
            }
            for m in 0..=size {
                let p = tree.consistency_proof(m, size).unwrap();
                assert_eq!(p, merkle::consistency_proof_of_hashes(prefix, m).unwrap());
                assert!(verify_consistency(m, size, &root_of_hashes(&leaves[..m as usize]), &root, &p));
            }
        }
        assert_eq!(Frontier::load(67, |id| Ok(nodes.get(&id).copied())).unwrap(), f);
        assert!(tree.inclusion_proof(0, 68).is_err());
        assert!(tree.inclusion_proof(67, 67).is_err());
    }

    #[test]
    fn proofs_read_logarithmically_many_nodes() {
        // A million-leaf tree's proof reads about 2·log2(n) nodes, not n: counted here
        // with a reader that computes each node on demand from its leaf range.
        let n = 1u64 << 20;
        let reads = Cell::new(0u32);
        let leaf = |i: u64| leaf_hash(&i.to_be_bytes());
        fn subtree(leaf: &dyn Fn(u64) -> Hash, id: NodeId) -> Hash {
            if id.level == 0 {
                return leaf(id.index);
            }
            let l = subtree(leaf, NodeId::new(id.level - 1, id.index * 2));
            let r = subtree(leaf, NodeId::new(id.level - 1, id.index * 2 + 1));
            node_hash(&l, &r)
        }
        let tree = StoredTree::new(n, |id: NodeId| {
            reads.set(reads.get() + 1);
            // Only small subtrees are computed; a big one stands in as a fixed value.
            Ok(Some(if id.level <= 4 { subtree(&leaf, id) } else { [id.level; 32] }))
        });
        tree.inclusion_proof(123_457, n - 3).unwrap();
        assert!(reads.get() <= 2 * 20 + 2, "{} reads", reads.get());
        reads.set(0);
        tree.consistency_proof(999_999, n - 1).unwrap();
        assert!(reads.get() <= 3 * 20, "{} reads", reads.get());
    }

    #[test]
    fn a_missing_node_is_an_error_not_a_wrong_answer() {
        let (_, mut nodes, _) = grow(8);
        nodes.remove(&NodeId::new(1, 2));
        let tree = StoredTree::new(8, |id| Ok(nodes.get(&id).copied()));
        assert_eq!(tree.inclusion_proof(6, 8), Err(LedgerError::MissingNode { level: 1, index: 2 }));
        assert!(tree.inclusion_proof(0, 8).is_ok());
        assert!(Frontier::load(6, |id| Ok(nodes.get(&id).copied())).is_err());
    }

    #[test]
    fn peaks_follow_the_bits_of_the_size() {
        let ids: Vec<_> = peak_ids(13).collect();
        assert_eq!(ids, [NodeId::new(3, 0), NodeId::new(2, 2), NodeId::new(0, 12)]);
        assert_eq!(peak_ids(0).count(), 0);
        assert_eq!(peak_ids(u64::MAX).count(), 64);
    }
}
