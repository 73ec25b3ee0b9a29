//! The transparency log's leaf: one per applied transaction, and the effect leaves under it.
//!
//! The byte layouts below are frozen under their version byte and documented for outside
//! verifiers in `docs/ledger.md`; change them only with a new version.
//!
//! Transaction leaf, version 1 ([`TXN_LEAF_LEN`] = 89 bytes, integers big-endian):
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! |      0 |    1 | leaf version (= 1) |
//! |      1 |    8 | commit ts (µs since the Unix epoch) |
//! |      9 |    8 | block height |
//! |     17 |    4 | position of the transaction in its block (0-based) |
//! |     21 |   32 | input hash: SHA-256(0x00 ‖ the input record as logged) |
//! |     53 |    4 | number of effects |
//! |     57 |   32 | effects root: RFC 9162 root over the effect leaves, in apply order |
//!
//! Effect leaf (one per document version or index entry the transaction wrote or removed):
//! `space u8 (0 documents, 1 index) | op u8 (0 put, 1 remove) | key length u32 | key |
//! ts u64 | value` (the value is empty for a remove).

use sha2::{Digest, Sha256};

use crate::merkle::{self, Hash};
use crate::LedgerError;

/// The only transaction-leaf version this build writes and reads.
pub const TXN_LEAF_VERSION: u8 = 1;
/// Length of an encoded [`TxnLeaf`].
pub const TXN_LEAF_LEN: usize = 1 + 8 + 8 + 4 + 32 + 4 + 32;
/// Most effects one transaction's stored leaf record may list: above what fits in
/// [`RECORD_BYTES_MAX`] (and the evaluator's limit of 500,000 writes per transaction,
/// `tally_fql::limits`), so every applied transaction's record decodes.
pub const EFFECTS_MAX: usize = 1 << 20;
/// Largest stored leaf record: the state store's value limit (16 MiB; `tally-exec` checks
/// that the two agree). The executor keeps every record within it: a transaction whose
/// record would be larger fails without effects (`tally_exec::machine`), and an input
/// record too large for a record of its own (logged by an earlier build) is stored
/// redacted (see [`encode_record`]).
pub const RECORD_BYTES_MAX: usize = 16 << 20;

/// The length of the leaf record of a transaction whose input record has `input_len`
/// bytes and which made `effects` effects.
pub const fn record_len(input_len: usize, effects: usize) -> usize {
    TXN_LEAF_LEN + 32 * effects + input_len
}

/// `space` byte of an effect leaf.
pub const SPACE_DOCS: u8 = 0;
pub const SPACE_INDEX: u8 = 1;

/// One applied transaction, as the transparency log commits to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnLeaf {
    pub ts: u64,
    pub height: u64,
    pub position: u32,
    pub input_hash: Hash,
    pub effect_count: u32,
    pub effects_root: Hash,
}

impl TxnLeaf {
    /// The leaf of a transaction whose input record is `input` and whose effect leaves
    /// hash to `effect_hashes` (each `merkle::leaf_hash(effect leaf)`).
    pub fn new(ts: u64, height: u64, position: u32, input: &[u8], effect_hashes: &[Hash]) -> Self {
        Self::from_input_hash(ts, height, position, merkle::leaf_hash(input), effect_hashes)
    }

    /// [`Self::new`] with the input already hashed (`merkle::leaf_hash(input)`, the same
    /// hash the block's inputs tree holds).
    pub fn from_input_hash(ts: u64, height: u64, position: u32, input_hash: Hash, effect_hashes: &[Hash]) -> Self {
        Self {
            ts,
            height,
            position,
            input_hash,
            effect_count: effect_hashes.len() as u32,
            effects_root: merkle::root_of_hashes(effect_hashes),
        }
    }

    pub fn to_bytes(&self) -> [u8; TXN_LEAF_LEN] {
        let mut out = [0u8; TXN_LEAF_LEN];
        out[0] = TXN_LEAF_VERSION;
        out[1..9].copy_from_slice(&self.ts.to_be_bytes());
        out[9..17].copy_from_slice(&self.height.to_be_bytes());
        out[17..21].copy_from_slice(&self.position.to_be_bytes());
        out[21..53].copy_from_slice(&self.input_hash);
        out[53..57].copy_from_slice(&self.effect_count.to_be_bytes());
        out[57..89].copy_from_slice(&self.effects_root);
        out
    }

    /// Parses [`Self::to_bytes`]'s output; anything else is refused.
    pub fn decode(b: &[u8]) -> Result<Self, LedgerError> {
        match b.first() {
            Some(&v) if v != TXN_LEAF_VERSION => {
                return Err(LedgerError::Version { what: "transaction leaf", found: v, supported: TXN_LEAF_VERSION })
            }
            _ if b.len() != TXN_LEAF_LEN => {
                return Err(LedgerError::Length { what: "transaction leaf", expected: TXN_LEAF_LEN, actual: b.len() })
            }
            _ => {}
        }
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap_or_default());
        let hash_at = |i: usize| -> Hash { b[i..i + 32].try_into().unwrap_or_default() };
        Ok(Self {
            ts: u64_at(1),
            height: u64_at(9),
            position: u32_at(17),
            input_hash: hash_at(21),
            effect_count: u32_at(53),
            effects_root: hash_at(57),
        })
    }

    /// The leaf's hash in the transparency log: `merkle::leaf_hash(to_bytes())`.
    pub fn hash(&self) -> Hash {
        merkle::leaf_hash(&self.to_bytes())
    }
}

/// Appends the effect leaf of one write to `out` (cleared first), so one buffer serves a
/// whole batch.
pub fn effect_leaf_into(out: &mut Vec<u8>, space: u8, key: &[u8], ts: u64, value: Option<&[u8]>) {
    out.clear();
    let v = value.unwrap_or(&[]);
    out.reserve(key.len() + v.len() + 14);
    out.push(space);
    out.push(value.is_none() as u8);
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&ts.to_be_bytes());
    out.extend_from_slice(v);
}

/// The effect leaf of one write (see the module doc).
pub fn effect_leaf(space: u8, key: &[u8], ts: u64, value: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    effect_leaf_into(&mut out, space, key, ts, value);
    out
}

/// The stored record of one leaf (version 1 of the record follows the leaf's version):
/// the leaf, its effect leaves' hashes (32 bytes each, `effect_count` of them), then the
/// transaction's input record as logged (the rest). A proof of one document version
/// then needs no re-execution, and `get-entries` needs no log. Decoding checks the
/// hashes against the leaf's effects root and the input against its input hash, so a
/// damaged record is reported, never served.
///
/// An input so large that the record would exceed [`RECORD_BYTES_MAX`] is left out (the
/// record is redacted: its input is empty, the leaf keeps the input's hash). This build's
/// receiving nodes log no such input; a log written by an earlier one may hold one.
pub fn encode_record(leaf: &TxnLeaf, effect_hashes: &[Hash], input: &[u8]) -> Vec<u8> {
    let input = if record_len(input.len(), effect_hashes.len()) > RECORD_BYTES_MAX { &[][..] } else { input };
    let mut out = Vec::with_capacity(TXN_LEAF_LEN + 32 * effect_hashes.len() + input.len());
    out.extend_from_slice(&leaf.to_bytes());
    for h in effect_hashes {
        out.extend_from_slice(h);
    }
    out.extend_from_slice(input);
    out
}

/// One decoded leaf record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafRecord {
    pub leaf: TxnLeaf,
    pub effect_hashes: Vec<Hash>,
    /// The input record, or empty where it was redacted (see `docs/ledger.md`).
    pub input: Vec<u8>,
}

/// Parses [`encode_record`]'s output.
pub fn decode_record(b: &[u8]) -> Result<LeafRecord, LedgerError> {
    let (head, rest) = b.split_at(b.len().min(TXN_LEAF_LEN));
    let leaf = TxnLeaf::decode(head)?;
    let count = leaf.effect_count as usize;
    if count > EFFECTS_MAX || rest.len() < 32 * count {
        return Err(LedgerError::Malformed(format!(
            "leaf record holds {} bytes after the leaf, too few for its {count} effect hashes",
            rest.len()
        )));
    }
    let (hashes, input) = rest.split_at(32 * count);
    let effect_hashes: Vec<Hash> = hashes.chunks_exact(32).map(|c| c.try_into().unwrap_or_default()).collect();
    if merkle::root_of_hashes(&effect_hashes) != leaf.effects_root {
        return Err(LedgerError::Malformed("leaf record's effect hashes do not match its effects root".into()));
    }
    // An empty input is a redacted one (a logged input record is never empty).
    if !input.is_empty() && merkle::leaf_hash(input) != leaf.input_hash {
        return Err(LedgerError::Malformed("leaf record's input does not match its input hash".into()));
    }
    Ok(LeafRecord { leaf, effect_hashes, input: input.to_vec() })
}

/// Version byte of a block's [`Removal`] record.
pub const REMOVALS_VERSION: u8 = 1;
/// Most removals one record may list (the executor's sweep removes far fewer per block).
pub const REMOVALS_MAX: usize = 1 << 20;

/// One version removed by retention at the end of a block: which space, key and ts. Its
/// effect leaf is [`effect_leaf`] with op remove (no value), and it follows the block's
/// transactions' effects in the header's effects root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removal {
    pub space: u8,
    pub key: Vec<u8>,
    pub ts: u64,
}

impl Removal {
    /// The effect leaf's hash, as the block's effects root holds it.
    pub fn effect_hash(&self) -> Hash {
        merkle::leaf_hash(&effect_leaf(self.space, &self.key, self.ts, None))
    }
}

/// The removal record of one block (stored beside its header; `docs/ledger.md`):
/// `version u8 (= 1) | count u32 | count × (space u8 | key length u32 | key | ts u64)`.
pub fn encode_removals(removals: &[Removal]) -> Vec<u8> {
    let bytes: usize = removals.iter().map(|r| 13 + r.key.len()).sum();
    let mut out = Vec::with_capacity(5 + bytes);
    out.push(REMOVALS_VERSION);
    out.extend_from_slice(&(removals.len() as u32).to_be_bytes());
    for r in removals {
        out.push(r.space);
        out.extend_from_slice(&(r.key.len() as u32).to_be_bytes());
        out.extend_from_slice(&r.key);
        out.extend_from_slice(&r.ts.to_be_bytes());
    }
    out
}

/// Parses [`encode_removals`]'s output; anything else is refused.
pub fn decode_removals(b: &[u8]) -> Result<Vec<Removal>, LedgerError> {
    let bad = |what: &str| LedgerError::Malformed(format!("removal record: {what}"));
    match b.first() {
        Some(&REMOVALS_VERSION) => {}
        Some(&v) => return Err(LedgerError::Version { what: "removal record", found: v, supported: REMOVALS_VERSION }),
        None => return Err(bad("empty")),
    }
    let mut at = 1;
    let mut take = |n: usize| -> Result<&[u8], LedgerError> {
        let s = b.get(at..at + n).ok_or_else(|| bad("cut short"))?;
        at += n;
        Ok(s)
    };
    let u32_of = |s: &[u8]| u32::from_be_bytes(s.try_into().unwrap_or_default()) as usize;
    let count = u32_of(take(4)?);
    if count > REMOVALS_MAX {
        return Err(bad("too many removals"));
    }
    let mut out = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let space = take(1)?[0];
        if space != SPACE_DOCS && space != SPACE_INDEX {
            return Err(bad("unknown space"));
        }
        let len = u32_of(take(4)?);
        let key = take(len)?.to_vec();
        let ts = u64::from_be_bytes(take(8)?.try_into().unwrap_or_default());
        out.push(Removal { space, key, ts });
    }
    if at != b.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(out)
}

/// SHA-256 of arbitrary bytes (for callers that want the plain digest).
pub fn sha256(b: &[u8]) -> Hash {
    Sha256::digest(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_layout_is_fixed() {
        let fx = [merkle::leaf_hash(&effect_leaf(SPACE_DOCS, b"k", 7, Some(b"v")))];
        let leaf = TxnLeaf::new(0x0102, 9, 3, b"input", &fx);
        let b = leaf.to_bytes();
        assert_eq!(b[0], 1);
        assert_eq!(&b[1..9], &0x0102u64.to_be_bytes());
        assert_eq!(&b[9..17], &9u64.to_be_bytes());
        assert_eq!(&b[17..21], &3u32.to_be_bytes());
        assert_eq!(&b[21..53], &sha256(&[&[0u8][..], b"input"].concat()));
        assert_eq!(&b[53..57], &1u32.to_be_bytes());
        assert_eq!(&b[57..89], &fx[0]);
        assert_eq!(TxnLeaf::decode(&b), Ok(leaf));
        let e = effect_leaf(SPACE_INDEX, b"key", 5, None);
        assert_eq!(e, [&[1u8, 1, 0, 0, 0, 3][..], b"key", &5u64.to_be_bytes()].concat());
    }

    #[test]
    fn removal_records_round_trip_and_refuse_garbage() {
        let rs = vec![
            Removal { space: SPACE_DOCS, key: b"doc".to_vec(), ts: 9 },
            Removal { space: SPACE_INDEX, key: Vec::new(), ts: u64::MAX },
        ];
        let b = encode_removals(&rs);
        assert_eq!(&b[..5], &[1, 0, 0, 0, 2]);
        assert_eq!(&b[5..17], &[&[0u8, 0, 0, 0, 3][..], b"doc", &9u64.to_be_bytes()[..4]].concat()[..12]);
        assert_eq!(decode_removals(&b), Ok(rs.clone()));
        assert_eq!(decode_removals(&encode_removals(&[])), Ok(Vec::new()));
        assert!(decode_removals(&b[..b.len() - 1]).is_err());
        assert!(decode_removals(&[&b[..], &[0]].concat()).is_err());
        assert!(matches!(decode_removals(&[2, 0, 0, 0, 0]), Err(LedgerError::Version { found: 2, .. })));
        assert!(decode_removals(&[1, 0, 0, 0, 1, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(decode_removals(&[1, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert_eq!(rs[0].effect_hash(), merkle::leaf_hash(&effect_leaf(SPACE_DOCS, b"doc", 9, None)));
    }

    #[test]
    fn decoders_refuse_what_they_do_not_understand() {
        let leaf = TxnLeaf::new(1, 1, 0, b"xz", &[[7; 32], [8; 32]]);
        assert_eq!(leaf.effect_count, 2);
        let mut b = leaf.to_bytes().to_vec();
        assert!(matches!(TxnLeaf::decode(&b[..88]), Err(LedgerError::Length { actual: 88, .. })));
        assert!(TxnLeaf::decode(&[]).is_err());
        b[0] = 2;
        assert!(matches!(TxnLeaf::decode(&b), Err(LedgerError::Version { found: 2, .. })));
        let rec = encode_record(&leaf, &[[7; 32], [8; 32]], b"xz");
        let decoded = decode_record(&rec).unwrap();
        assert_eq!((decoded.effect_hashes, decoded.input), (vec![[7; 32], [8; 32]], b"xz".to_vec()));
        assert!(decode_record(&rec[..rec.len() - 1]).is_err());
        assert!(decode_record(&rec[..TXN_LEAF_LEN + 40]).is_err());
        let swapped = encode_record(&leaf, &[[8; 32], [7; 32]], b"xz");
        assert!(decode_record(&swapped).is_err());
        let other_input = encode_record(&leaf, &[[7; 32], [8; 32]], b"yz");
        assert!(decode_record(&other_input).is_err());
    }

    /// An input too large for a record of its own (a log from an earlier build may hold
    /// one) is stored redacted: the record fits the store, the leaf keeps its hash, and
    /// the record decodes with an empty input.
    #[test]
    fn records_over_the_limit_are_stored_without_their_input() {
        let fits = vec![b'a'; RECORD_BYTES_MAX - TXN_LEAF_LEN - 32];
        let leaf = TxnLeaf::new(1, 1, 0, &fits, &[[7; 32]]);
        let rec = encode_record(&leaf, &[[7; 32]], &fits);
        assert_eq!(rec.len(), RECORD_BYTES_MAX);
        assert_eq!(decode_record(&rec).unwrap().input, fits);
        let over = vec![b'a'; fits.len() + 1];
        let leaf = TxnLeaf::new(1, 1, 0, &over, &[[7; 32]]);
        let rec = encode_record(&leaf, &[[7; 32]], &over);
        assert_eq!(rec.len(), record_len(0, 1));
        let decoded = decode_record(&rec).unwrap();
        assert!(decoded.input.is_empty());
        assert_eq!(decoded.leaf.input_hash, merkle::leaf_hash(&over));
    }
}
