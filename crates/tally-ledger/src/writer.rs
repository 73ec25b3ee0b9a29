//! What the executor writes for the transparency log, and under which names.
//!
//! The executor calls [`LogWriter::effect`] for each write a transaction applies,
//! [`LogWriter::finish_txn`] after it and [`LogWriter::finish_block`] after the block's
//! last; it stores what those return in the state store's meta table, in the same commit
//! as the transactions' effects. Names (ASCII, the numbers lowercase hex, fixed width so
//! they sort by number):
//!
//! | name | value |
//! |------|-------|
//! | `tlog/c/CCCCCCCCCCCCCCCC` | chunk `C…`: the complete subtrees of levels 0–3 over leaves `[16C, 16C + 16)`, see below |
//! | `tlog/n/LLIIIIIIIIIIIIIIII` | 32-byte hash of complete subtree (level `LL` ≥ 4, index `I…`) |
//! | `tlog/l/IIIIIIIIIIIIIIII` | the leaf record of leaf `I…` ([`crate::leaf::encode_record`]) |
//! | `tlog/s/HHHHHHHHHHHHHHHH` | this member's signature of the head after block `H…`: public key (32) ‖ signature (64) |
//!
//! The tree's size is the block header's `tree_size`. Nothing under `tlog/` is ever
//! removed, nor rewritten except a leaf record's input, by redaction (`docs/ledger.md`),
//! and a chunk as its leaves arrive.
//!
//! # Chunks (executor rules 7)
//!
//! A chunk's value is one format byte, `1`, then 32-byte hashes: the subtrees of levels
//! 0 to 3 that lie inside the chunk's 16 leaves, in the order they became complete — for
//! each leaf, its own hash, then each parent it completed inside the chunk, lowest first
//! (what [`Frontier::append`] returns, cut at level 3). A full chunk holds 30 hashes
//! (16 + 8 + 4 + 2); one whose leaves are still arriving holds a prefix of them, and is
//! rewritten by each block that appends to it. The hash completed by local leaf `j`
//! (`0..16`) at level `l` is hash number `j + j/2 + j/4 + j/8 + l` ([`chunk_slot`]).
//! [`decode_chunk`] refuses another format byte, a length that is not 1 plus a multiple
//! of 32, and more than 30 hashes.
//!
//! Why: a transaction appends one leaf and completes about two subtrees. Stored one name
//! each (rules 6 and before) they were two of the six entries the write-behind flusher
//! inserted per transfer, each a descent through redb; now the levels below 4 are one
//! entry per block and chunk, and the levels from 4 up one entry per 16 leaves.
//!
//! A store written under rules 6 or before holds every level under `tlog/n/`. Reads
//! ([`NodeReader`]) look a node of level 0–3 up in its chunk first, then under `tlog/n/`;
//! a writer continuing such a store ([`LogWriter::load`]) starts its first chunk from the
//! nodes it finds there, so every chunk it writes is whole from its first leaf.
//!
//! Builds up to data directory format 3 also stored `tlog/h/<first 16 bytes of the leaf
//! hash, hex>` → leaf index here, for `get-proof-by-hash`. That lookup is now node-local
//! (tally-server `leaf_index`); such entries left in a store are never read.

use std::cell::RefCell;

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

/// Meta name of chunk `chunk` (leaves `[16·chunk, 16·chunk + 16)`).
pub fn chunk_key(chunk: u64) -> String {
    numbered("tlog/c/", chunk)
}

/// Levels stored in chunks: 0 to `CHUNK_LEVELS - 1`.
pub const CHUNK_LEVELS: u8 = 4;
/// Leaves a chunk covers.
pub const CHUNK_LEAVES: u64 = 1 << CHUNK_LEVELS;
/// Hashes a full chunk holds: 16 + 8 + 4 + 2.
pub const CHUNK_NODES: usize = 30;
/// The format byte a chunk's value starts with.
pub const CHUNK_FORMAT: u8 = 1;

/// Where a node of level 0–3 lives: its chunk and its hash's number in the chunk's value
/// (see "Chunks"); `None` for a node of level 4 or more (stored under [`node_key`]).
pub fn chunk_slot(id: NodeId) -> Option<(u64, usize)> {
    if id.level >= CHUNK_LEVELS {
        return None;
    }
    let chunk = id.index >> (CHUNK_LEVELS - id.level);
    // The local leaf that completes the node: the last of its leaves.
    let j = (((id.index + 1) << id.level) - 1 - chunk * CHUNK_LEAVES) as usize;
    Some((chunk, j + j / 2 + j / 4 + j / 8 + id.level as usize))
}

/// A chunk's value: the format byte, then `hashes`.
pub fn encode_chunk(hashes: &[Hash]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 32 * hashes.len());
    out.push(CHUNK_FORMAT);
    for h in hashes {
        out.extend_from_slice(h);
    }
    out
}

/// The hashes of chunk `chunk`'s stored value, refusing anything but format 1 with at
/// most 30 whole hashes.
pub fn decode_chunk(chunk: u64, b: &[u8]) -> Result<Vec<Hash>, LedgerError> {
    let bad = |what: String| LedgerError::Malformed(format!("stored chunk {}: {what}", chunk_key(chunk)));
    let Some((&format, hashes)) = b.split_first() else { return Err(bad("empty".into())) };
    if format != CHUNK_FORMAT {
        return Err(bad(format!("format {format}, this build reads {CHUNK_FORMAT}")));
    }
    if hashes.len() % 32 != 0 || hashes.len() / 32 > CHUNK_NODES {
        return Err(bad(format!("{} bytes of hashes, not a whole number of at most {CHUNK_NODES}", hashes.len())));
    }
    Ok(hashes.chunks_exact(32).map(|h| h.try_into().expect("32 bytes")).collect())
}

/// The nodes of levels 0–3 that leaves `[16·chunk, 16·chunk + leaves)` complete, in the
/// order they are stored in the chunk.
pub fn chunk_ids(chunk: u64, leaves: u64) -> impl Iterator<Item = NodeId> {
    (0..leaves.min(CHUNK_LEAVES)).flat_map(move |j| {
        let leaf = chunk * CHUNK_LEAVES + j;
        (0..CHUNK_LEVELS).take_while(move |&l| (j + 1) % (1u64 << l) == 0).map(move |l| NodeId::new(l, leaf >> l))
    })
}

/// Reads stored subtree hashes in either layout (see "Chunks"), through `meta` (a meta
/// table read), keeping the last chunk it decoded: reading a chunk's 16 leaves in a row
/// reads it once.
pub struct NodeReader<M> {
    meta: M,
    last: RefCell<Option<(u64, Vec<Hash>)>>,
}

impl<M: Fn(&str) -> Result<Option<Vec<u8>>, LedgerError>> NodeReader<M> {
    pub fn new(meta: M) -> Self {
        Self { meta, last: RefCell::new(None) }
    }

    /// The hash of node `id`, if stored.
    pub fn read(&self, id: NodeId) -> Result<Option<Hash>, LedgerError> {
        if let Some((chunk, slot)) = chunk_slot(id) {
            let mut last = self.last.borrow_mut();
            if last.as_ref().is_none_or(|(c, _)| *c != chunk) {
                // An absent chunk is kept as an empty one.
                let hashes = match (self.meta)(&chunk_key(chunk))? {
                    Some(b) => decode_chunk(chunk, &b)?,
                    None => Vec::new(),
                };
                *last = Some((chunk, hashes));
            }
            if let Some(hash) = last.as_ref().and_then(|(_, hashes)| hashes.get(slot)) {
                return Ok(Some(*hash));
            }
        }
        // Levels 4 and up, and every level of a store written before rules 7.
        (self.meta)(&node_key(id))?.map(|b| decode_node(id, &b)).transpose()
    }
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
    /// The current chunk's hashes so far (`tree.size() % 16` leaves' worth).
    chunk: Vec<Hash>,
    /// Chunks this block filled, and whether it appended to the current one since.
    filled: Vec<(String, Vec<u8>)>,
    chunk_dirty: bool,
}

impl LogWriter {
    /// A writer continuing the stored tree of `size` leaves, read through `reader`: its
    /// right edge, and the current chunk's hashes (from `tlog/n/` in a store written before
    /// rules 7).
    pub fn load<M>(size: u64, reader: &NodeReader<M>) -> Result<Self, LedgerError>
    where
        M: Fn(&str) -> Result<Option<Vec<u8>>, LedgerError>,
    {
        let tree = Frontier::load(size, |id| reader.read(id))?;
        let chunk = chunk_ids(size / CHUNK_LEAVES, size % CHUNK_LEAVES)
            .map(|id| reader.read(id)?.ok_or(LedgerError::MissingNode { level: id.level, index: id.index }))
            .collect::<Result<_, _>>()?;
        Ok(Self { tree, chunk, ..Self::default() })
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
    /// store, (name, value): its leaf record, and a subtree of level 4 or more it
    /// completed. Its lower subtrees go into the chunk that [`Self::finish_block`] returns.
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
        let mut out = Vec::with_capacity(1);
        let hash = leaf.hash();
        out.push((leaf_key(index), leaf::encode_record(&leaf, &self.effects, input)));
        for (id, hash) in self.tree.append(hash) {
            if id.level < CHUNK_LEVELS {
                self.chunk.push(hash);
            } else {
                out.push((node_key(id), hash.to_vec()));
            }
        }
        self.chunk_dirty = true;
        if self.tree.size().is_multiple_of(CHUNK_LEAVES) {
            self.filled.push((chunk_key(index / CHUNK_LEAVES), encode_chunk(&self.chunk)));
            self.chunk.clear();
            self.chunk_dirty = false;
        }
        self.effects.clear();
        out
    }

    /// Ends the block: the chunks its transactions appended to, (name, value), each once.
    pub fn finish_block(&mut self) -> Vec<(String, Vec<u8>)> {
        let mut out = std::mem::take(&mut self.filled);
        if std::mem::take(&mut self.chunk_dirty) {
            out.push((chunk_key(self.tree.size() / CHUNK_LEAVES), encode_chunk(&self.chunk)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::tlog::{node_ids, StoredTree};

    #[test]
    fn names_are_what_format_gives() {
        for n in [0, 1, 0xa, 0xff, 0x1234_5678_9abc_def0, u64::MAX - 1, u64::MAX] {
            assert_eq!(leaf_key(n), format!("tlog/l/{n:016x}"));
            assert_eq!(sig_key(n), format!("tlog/s/{n:016x}"));
            assert_eq!(chunk_key(n), format!("tlog/c/{n:016x}"));
            assert_eq!(numbered("block/", n), format!("block/{n:016x}"));
            for level in [0u8, 1, 0x3f, 0xff] {
                assert_eq!(node_key(NodeId::new(level, n)), format!("tlog/n/{level:02x}{n:016x}"));
            }
        }
    }

    /// Leaf `i`'s transaction: `i % 3` writes, input `in{i}`.
    fn append(w: &mut LogWriter, meta: &mut BTreeMap<String, Vec<u8>>, i: u64) -> Hash {
        for k in 0..i % 3 {
            w.effect(leaf::SPACE_DOCS, &[k as u8], i, Some(b"v"));
        }
        for (name, value) in w.finish_txn(100 + i, 1 + i / 4, (i % 4) as u32, format!("in{i}").as_bytes()) {
            assert!(meta.insert(name, value).is_none());
        }
        leaf::decode_record(&meta[&leaf_key(i)]).unwrap().leaf.hash()
    }

    fn reader(
        meta: &BTreeMap<String, Vec<u8>>,
    ) -> NodeReader<impl Fn(&str) -> Result<Option<Vec<u8>>, LedgerError> + '_> {
        NodeReader::new(move |name: &str| Ok(meta.get(name).cloned()))
    }

    /// Every node of the tree read back through the reader, against the in-memory tree,
    /// and proofs from it.
    fn check_tree(meta: &BTreeMap<String, Vec<u8>>, leaves: &[Hash], w: &LogWriter) {
        let n = leaves.len() as u64;
        let r = reader(meta);
        let mut f = Frontier::new();
        let mut want = BTreeMap::new();
        for h in leaves {
            want.extend(f.append(*h));
        }
        for id in node_ids(n) {
            assert_eq!(r.read(id).unwrap(), Some(want[&id]), "{id:?} of {n}");
        }
        assert_eq!(w.root(), merkle::root_of_hashes(leaves));
        let tree = StoredTree::new(n, |id| r.read(id));
        for i in [0, n / 2, n - 1] {
            let proof = tree.inclusion_proof(i, n).unwrap();
            assert!(merkle::verify_inclusion_of_hash(&leaves[i as usize], i, n, &proof, &w.root()));
        }
    }

    #[test]
    fn written_tree_answers_proofs_and_names_sort_by_number() {
        let mut w = LogWriter::default();
        let mut meta = BTreeMap::new();
        let mut leaves = Vec::new();
        // Blocks of 1 to 7 transactions, so chunks fill inside blocks and across them.
        let mut i = 0u64;
        for block in 0..20u64 {
            for _ in 0..1 + block % 7 {
                leaves.push(append(&mut w, &mut meta, i));
                i += 1;
            }
            let chunks = w.finish_block();
            let names: Vec<_> = chunks.iter().map(|(n, _)| n.clone()).collect();
            let mut sorted = names.clone();
            sorted.dedup();
            assert_eq!(names, sorted, "each chunk once a block");
            meta.extend(chunks);
            assert!(w.finish_block().is_empty(), "nothing new since");
            check_tree(&meta, &leaves, &w);
            // A writer continuing from the store appends what this one does.
            let r = reader(&meta);
            let again = LogWriter::load(i, &r).unwrap();
            assert_eq!((again.size(), again.root(), &again.chunk), (w.size(), w.root(), &w.chunk));
        }
        assert!(i > 3 * CHUNK_LEAVES);
        // Only subtrees of level 4 and up have names of their own; a full chunk holds 30.
        assert!(meta.keys().filter(|k| k.starts_with("tlog/n/")).all(|k| &k[7..9] >= "04"));
        assert_eq!(decode_chunk(0, &meta[&chunk_key(0)]).unwrap().len(), CHUNK_NODES);
        assert!(node_key(NodeId::new(4, 0xa)) < node_key(NodeId::new(4, 0x10)));
        assert!(leaf_key(9) < leaf_key(10));
    }

    #[test]
    fn chunk_slots_follow_the_append_order() {
        let mut f = Frontier::new();
        let mut order = Vec::new();
        for i in 0..2 * CHUNK_LEAVES {
            order.extend(f.append([i as u8; 32]).into_iter().map(|(id, _)| id).filter(|id| id.level < CHUNK_LEVELS));
        }
        for (n, id) in order.iter().enumerate() {
            assert_eq!(chunk_slot(*id), Some((n as u64 / CHUNK_NODES as u64, n % CHUNK_NODES)), "{id:?}");
        }
        assert_eq!(chunk_ids(1, 16).collect::<Vec<_>>(), order[30..]);
        assert_eq!(chunk_ids(0, 3).collect::<Vec<_>>(), order[..4]);
        assert_eq!(chunk_slot(NodeId::new(4, 0)), None);
    }

    #[test]
    fn chunk_bytes_are_golden_and_malformed_ones_refused() {
        let hashes = [[0x11; 32], [0x22; 32]];
        let b = encode_chunk(&hashes);
        let mut want = vec![1u8];
        want.extend([0x11; 32]);
        want.extend([0x22; 32]);
        assert_eq!(b, want);
        assert_eq!(decode_chunk(3, &b).unwrap(), hashes);
        assert_eq!(decode_chunk(3, &[1]).unwrap(), Vec::<Hash>::new());
        let refused = |b: &[u8]| decode_chunk(3, b).unwrap_err().to_string();
        assert!(refused(&[]).contains("tlog/c/0000000000000003: empty"), "{}", refused(&[]));
        let mut other = b.clone();
        other[0] = 2;
        assert!(refused(&other).contains("format 2"), "{}", refused(&other));
        assert!(refused(&b[..40]).contains("whole number"), "{}", refused(&b[..40]));
        let too_many = encode_chunk(&[[0; 32]; CHUNK_NODES + 1]);
        assert!(refused(&too_many).contains("at most 30"), "{}", refused(&too_many));
    }

    /// A store written under rules 6 (every node under `tlog/n/`), continued by this
    /// writer in the middle of a chunk: reads find every node, and the first chunk written
    /// is whole from its first leaf.
    #[test]
    fn a_store_of_the_old_layout_is_read_and_continued() {
        let mut f = Frontier::new();
        let mut meta = BTreeMap::new();
        let mut leaves = Vec::new();
        let mut w = LogWriter::default();
        for i in 0..21u64 {
            // The old writer: the leaf record, and every node by name.
            let mut scratch = BTreeMap::new();
            let h = append(&mut w, &mut scratch, i);
            meta.insert(leaf_key(i), scratch.remove(&leaf_key(i)).unwrap());
            for (id, hash) in f.append(h) {
                meta.insert(node_key(id), hash.to_vec());
            }
            leaves.push(h);
        }
        let mut w = {
            let r = reader(&meta);
            LogWriter::load(21, &r).unwrap()
        };
        check_tree(&meta, &leaves, &w);
        for i in 21..40u64 {
            leaves.push(append(&mut w, &mut meta, i));
        }
        meta.extend(w.finish_block());
        check_tree(&meta, &leaves, &w);
        assert_eq!(decode_chunk(1, &meta[&chunk_key(1)]).unwrap().len(), CHUNK_NODES, "chunk 1 whole");
        assert!(!meta.contains_key(&chunk_key(0)));
    }
}
