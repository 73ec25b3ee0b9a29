//! Block headers, the hash chain that links them, and the builder that makes one per batch.
//!
//! A block is one log batch. Its header commits to the batch's position (height and the
//! previous header's hash), its commit-timestamp range, RFC 9162 roots over its inputs
//! and its effects, and the transparency log's size and root after its last transaction
//! (see `crate::tlog`). Heights start at 0; block 0's `prev_hash` is [`GENESIS_PREV_HASH`].

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::merkle::{self, Hash};
use crate::LedgerError;

/// The only header version this build writes and reads.
pub const BLOCK_VERSION: u8 = 2;
/// `prev_hash` of block 0.
pub const GENESIS_PREV_HASH: Hash = [0; 32];
/// Prefix of the hashed bytes, so a header hash can never collide with any other SHA-256
/// use in Tally (Merkle leaves and nodes start with 0x00/0x01, this starts with 't').
pub const HEADER_HASH_TAG: &[u8] = b"tally.block.v2\0";
/// Length of [`BlockHeader::encode`]'s output.
pub const HEADER_ENCODED_LEN: usize = 1 + 8 + 32 + 8 + 8 + 4 + 32 + 32 + 8 + 32;

/// One block's header.
///
/// Encoding (all integers big-endian, no padding, [`HEADER_ENCODED_LEN`] = 165 bytes):
///
/// | offset | size | field          |
/// |-------:|-----:|----------------|
/// |      0 |    1 | `version` (=2) |
/// |      1 |    8 | `height`       |
/// |      9 |   32 | `prev_hash`    |
/// |     41 |    8 | `first_ts`     |
/// |     49 |    8 | `last_ts`      |
/// |     57 |    4 | `txn_count`    |
/// |     61 |   32 | `inputs_root`  |
/// |     93 |   32 | `effects_root` |
/// |    125 |    8 | `tree_size`    |
/// |    133 |   32 | `tree_root`    |
///
/// Version 1 (125 bytes, without the last two fields) predates the transparency log and
/// is refused.
/// The header hash is SHA-256([`HEADER_HASH_TAG`] || encoding). In JSON the hashes are
/// lowercase hex and the output carries the computed `hash` as well; on input `hash` is
/// optional and, when present, must match.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "HeaderJson", try_from = "HeaderJson")]
pub struct BlockHeader {
    pub version: u8,
    pub height: u64,
    pub prev_hash: Hash,
    /// Commit timestamp of the batch's first transaction.
    pub first_ts: u64,
    /// Commit timestamp of the batch's last transaction.
    pub last_ts: u64,
    pub txn_count: u32,
    /// RFC 9162 root over the batch's transaction inputs, in log order.
    pub inputs_root: Hash,
    /// RFC 9162 root over every version and index entry the batch wrote, in apply order.
    pub effects_root: Hash,
    /// Leaves of the transparency log (transactions applied since genesis) after this block.
    pub tree_size: u64,
    /// RFC 9162 root of the transparency log at `tree_size`.
    pub tree_root: Hash,
}

impl BlockHeader {
    /// The fixed-layout encoding described on the type, without allocating.
    pub fn to_bytes(&self) -> [u8; HEADER_ENCODED_LEN] {
        let mut out = [0u8; HEADER_ENCODED_LEN];
        let parts: [&[u8]; 10] = [
            &[self.version],
            &self.height.to_be_bytes(),
            &self.prev_hash,
            &self.first_ts.to_be_bytes(),
            &self.last_ts.to_be_bytes(),
            &self.txn_count.to_be_bytes(),
            &self.inputs_root,
            &self.effects_root,
            &self.tree_size.to_be_bytes(),
            &self.tree_root,
        ];
        let mut at = 0;
        for part in parts {
            out[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        debug_assert_eq!(at, HEADER_ENCODED_LEN);
        out
    }

    /// The fixed-layout encoding described on the type.
    pub fn encode(&self) -> Vec<u8> {
        self.to_bytes().to_vec()
    }

    /// Parses [`Self::encode`]'s output. The version is checked first so that a header from
    /// a newer build is reported as such rather than as a length error.
    pub fn decode(bytes: &[u8]) -> Result<Self, LedgerError> {
        let length_error = LedgerError::HeaderLength { expected: HEADER_ENCODED_LEN, actual: bytes.len() };
        match bytes.first() {
            None => return Err(length_error),
            Some(&v) if v != BLOCK_VERSION => return Err(LedgerError::UnsupportedVersion(v)),
            Some(_) if bytes.len() != HEADER_ENCODED_LEN => return Err(length_error),
            Some(_) => {}
        }
        let mut r = Reader(bytes);
        let header = Self {
            version: u8::from_be_bytes(r.take()?),
            height: u64::from_be_bytes(r.take()?),
            prev_hash: r.take()?,
            first_ts: u64::from_be_bytes(r.take()?),
            last_ts: u64::from_be_bytes(r.take()?),
            txn_count: u32::from_be_bytes(r.take()?),
            inputs_root: r.take()?,
            effects_root: r.take()?,
            tree_size: u64::from_be_bytes(r.take()?),
            tree_root: r.take()?,
        };
        debug_assert!(r.0.is_empty());
        Ok(header)
    }

    /// SHA-256([`HEADER_HASH_TAG`] || [`Self::to_bytes`]).
    pub fn hash(&self) -> Hash {
        Sha256::new().chain_update(HEADER_HASH_TAG).chain_update(self.to_bytes()).finalize().into()
    }

    /// Checks what a header must satisfy on its own: a known version and an ordered ts range.
    pub fn validate(&self) -> Result<(), LedgerError> {
        if self.version != BLOCK_VERSION {
            return Err(LedgerError::UnsupportedVersion(self.version));
        }
        if self.first_ts > self.last_ts {
            return Err(LedgerError::TsRangeInverted {
                height: self.height,
                first_ts: self.first_ts,
                last_ts: self.last_ts,
            });
        }
        Ok(())
    }
}

impl fmt::Debug for BlockHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockHeader")
            .field("version", &self.version)
            .field("height", &self.height)
            .field("prev_hash", &hex::encode(self.prev_hash))
            .field("first_ts", &self.first_ts)
            .field("last_ts", &self.last_ts)
            .field("txn_count", &self.txn_count)
            .field("inputs_root", &hex::encode(self.inputs_root))
            .field("effects_root", &hex::encode(self.effects_root))
            .field("tree_size", &self.tree_size)
            .field("tree_root", &hex::encode(self.tree_root))
            .finish()
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], LedgerError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(LedgerError::HeaderLength { expected: HEADER_ENCODED_LEN, actual: 0 })?;
        self.0 = rest;
        Ok(*head)
    }
}

/// JSON shape of a header: hashes as lowercase hex, plus the header's own `hash`.
#[derive(Serialize, Deserialize)]
struct HeaderJson {
    version: u8,
    height: u64,
    #[serde(default)]
    hash: Option<String>,
    prev_hash: String,
    first_ts: u64,
    last_ts: u64,
    txn_count: u32,
    inputs_root: String,
    effects_root: String,
    tree_size: u64,
    tree_root: String,
}

impl From<BlockHeader> for HeaderJson {
    fn from(h: BlockHeader) -> Self {
        Self {
            version: h.version,
            height: h.height,
            hash: Some(hex::encode(h.hash())),
            prev_hash: hex::encode(h.prev_hash),
            first_ts: h.first_ts,
            last_ts: h.last_ts,
            txn_count: h.txn_count,
            inputs_root: hex::encode(h.inputs_root),
            effects_root: hex::encode(h.effects_root),
            tree_size: h.tree_size,
            tree_root: hex::encode(h.tree_root),
        }
    }
}

impl TryFrom<HeaderJson> for BlockHeader {
    type Error = LedgerError;

    fn try_from(j: HeaderJson) -> Result<Self, LedgerError> {
        let header = Self {
            version: j.version,
            height: j.height,
            prev_hash: parse_hash("prev_hash", &j.prev_hash)?,
            first_ts: j.first_ts,
            last_ts: j.last_ts,
            txn_count: j.txn_count,
            inputs_root: parse_hash("inputs_root", &j.inputs_root)?,
            effects_root: parse_hash("effects_root", &j.effects_root)?,
            tree_size: j.tree_size,
            tree_root: parse_hash("tree_root", &j.tree_root)?,
        };
        if let Some(claimed) = j.hash {
            let claimed = parse_hash("hash", &claimed)?;
            let computed = header.hash();
            if claimed != computed {
                return Err(LedgerError::HashMismatch { claimed, computed });
            }
        }
        Ok(header)
    }
}

fn parse_hash(field: &'static str, s: &str) -> Result<Hash, LedgerError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| LedgerError::BadHex { field })?;
    Ok(out)
}

/// Verifies headers one at a time as they arrive, remembering only the tip.
#[derive(Clone, Debug, Default)]
pub struct Chain {
    tip: Option<(BlockHeader, Hash)>,
}

impl Chain {
    /// An empty chain; the first header appended must be block 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// A chain resumed from a header the caller already trusts (e.g. a checkpoint).
    pub fn from_tip(tip: BlockHeader) -> Result<Self, LedgerError> {
        tip.validate()?;
        if tip.height == 0 && tip.prev_hash != GENESIS_PREV_HASH {
            return Err(LedgerError::PrevHashMismatch {
                height: 0,
                expected: GENESIS_PREV_HASH,
                actual: tip.prev_hash,
            });
        }
        Ok(Self { tip: Some((tip, tip.hash())) })
    }

    /// The last accepted header.
    pub fn tip(&self) -> Option<&BlockHeader> {
        self.tip.as_ref().map(|(header, _)| header)
    }

    /// The height the next header must have.
    pub fn next_height(&self) -> u64 {
        self.tip.map_or(0, |(header, _)| header.height.saturating_add(1))
    }

    /// The `prev_hash` the next header must carry.
    pub fn next_prev_hash(&self) -> Hash {
        self.tip.map_or(GENESIS_PREV_HASH, |(_, hash)| hash)
    }

    /// Accepts `header` as the new tip if it extends the current one, returning its hash.
    pub fn append(&mut self, header: BlockHeader) -> Result<Hash, LedgerError> {
        header.validate()?;
        let expected_height = match self.tip {
            Some((tip, _)) => tip.height.checked_add(1),
            None => Some(0),
        };
        if expected_height != Some(header.height) {
            return Err(LedgerError::HeightGap { expected: self.next_height(), actual: header.height });
        }
        if header.prev_hash != self.next_prev_hash() {
            return Err(LedgerError::PrevHashMismatch {
                height: header.height,
                expected: self.next_prev_hash(),
                actual: header.prev_hash,
            });
        }
        if let Some((tip, _)) = self.tip {
            if header.first_ts < tip.last_ts {
                return Err(LedgerError::TsWentBackwards {
                    height: header.height,
                    first_ts: header.first_ts,
                    prev_last_ts: tip.last_ts,
                });
            }
        }
        let hash = header.hash();
        self.tip = Some((header, hash));
        Ok(hash)
    }
}

/// Checks that `headers` form one unbroken chain: consecutive heights, each `prev_hash`
/// equal to the previous header's hash, and non-decreasing ts ranges. The first header is
/// trusted as the anchor (if it is block 0, its `prev_hash` must be the genesis value).
pub fn verify_chain(headers: &[BlockHeader]) -> Result<(), LedgerError> {
    let Some((first, rest)) = headers.split_first() else {
        return Ok(());
    };
    let mut chain = Chain::from_tip(*first)?;
    for header in rest {
        chain.append(*header)?;
    }
    Ok(())
}

/// Accumulates one batch's input and effect leaves and produces its header.
///
/// Leaves are hashed on push, so memory is 32 bytes per leaf. Callers push inputs in log
/// order and effects in apply order; every replica must push the same bytes in the same
/// order. Reuse one builder across batches with [`Self::clear`].
#[derive(Clone, Debug, Default)]
pub struct BlockBuilder {
    inputs: Vec<Hash>,
    effects: Vec<Hash>,
}

impl BlockBuilder {
    /// Most transactions one block can count (`txn_count` is a u32).
    pub const TXNS_MAX: u32 = u32::MAX;

    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one transaction's input (its canonical encoding) as the next inputs leaf, and
    /// returns that leaf's hash (`merkle::leaf_hash(input)`, which the transaction's
    /// transparency log leaf holds too: `LogWriter::finish_txn_hashed`).
    pub fn push_input(&mut self, input: &[u8]) -> Result<Hash, LedgerError> {
        if self.inputs.len() >= Self::TXNS_MAX as usize {
            return Err(LedgerError::TooManyTransactions { max: Self::TXNS_MAX });
        }
        let hash = merkle::leaf_hash(input);
        self.inputs.push(hash);
        Ok(hash)
    }

    /// Adds one written version or index entry (its canonical encoding) as the next effects leaf.
    pub fn push_effect(&mut self, effect: &[u8]) {
        self.effects.push(merkle::leaf_hash(effect));
    }

    /// [`Self::push_effect`] for an effect already hashed with `merkle::leaf_hash`.
    pub fn push_effect_hash(&mut self, hash: Hash) {
        self.effects.push(hash);
    }

    /// The leaf hash of the latest input (the transparency log's leaf repeats it).
    pub fn last_input_hash(&self) -> Option<Hash> {
        self.inputs.last().copied()
    }

    pub fn input_count(&self) -> usize {
        self.inputs.len()
    }

    pub fn effect_count(&self) -> usize {
        self.effects.len()
    }

    /// Inclusion proof of input `index` against the header's `inputs_root`.
    pub fn input_proof(&self, index: u64) -> Result<Vec<Hash>, LedgerError> {
        merkle::inclusion_proof_of_hashes(&self.inputs, index)
    }

    /// Inclusion proof of effect `index` against the header's `effects_root`.
    pub fn effect_proof(&self, index: u64) -> Result<Vec<Hash>, LedgerError> {
        merkle::inclusion_proof_of_hashes(&self.effects, index)
    }

    /// The header for the accumulated batch. `txn_count` is the number of inputs; `tree`
    /// is the transparency log's (size, root) after the batch.
    pub fn header(
        &self,
        height: u64,
        prev_hash: Hash,
        first_ts: u64,
        last_ts: u64,
        tree: (u64, Hash),
    ) -> Result<BlockHeader, LedgerError> {
        let txn_count =
            u32::try_from(self.inputs.len()).map_err(|_| LedgerError::TooManyTransactions { max: Self::TXNS_MAX })?;
        let header = BlockHeader {
            version: BLOCK_VERSION,
            height,
            prev_hash,
            first_ts,
            last_ts,
            txn_count,
            inputs_root: merkle::root_of_hashes(&self.inputs),
            effects_root: merkle::root_of_hashes(&self.effects),
            tree_size: tree.0,
            tree_root: tree.1,
        };
        header.validate()?;
        Ok(header)
    }

    /// Forgets all leaves, keeping the allocations for the next batch.
    pub fn clear(&mut self) {
        self.inputs.clear();
        self.effects.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BlockHeader {
        BlockHeader {
            version: BLOCK_VERSION,
            height: 0x0102_0304_0506_0708,
            prev_hash: [0xaa; 32],
            first_ts: 10,
            last_ts: 20,
            txn_count: 3,
            inputs_root: [0xbb; 32],
            effects_root: [0xcc; 32],
            tree_size: 0x1122,
            tree_root: [0xdd; 32],
        }
    }

    /// Builds `n` linked blocks, each with two inputs and one effect.
    fn chain_of(n: u64) -> Vec<BlockHeader> {
        let mut chain = Chain::new();
        let mut builder = BlockBuilder::new();
        (0..n)
            .map(|i| {
                builder.clear();
                builder.push_input(format!("in-{i}-a").as_bytes()).unwrap();
                builder.push_input(format!("in-{i}-b").as_bytes()).unwrap();
                builder.push_effect(format!("fx-{i}").as_bytes());
                let header = builder
                    .header(chain.next_height(), chain.next_prev_hash(), i * 10, i * 10 + 5, (2 * i + 2, [i as u8; 32]))
                    .unwrap();
                chain.append(header).unwrap();
                header
            })
            .collect()
    }

    #[test]
    fn encoding_layout_is_fixed_big_endian() {
        let bytes = sample().encode();
        assert_eq!(bytes.len(), HEADER_ENCODED_LEN);
        assert_eq!(bytes[0], 2);
        assert_eq!(&bytes[1..9], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&bytes[9..41], &[0xaa; 32]);
        assert_eq!(&bytes[41..49], &10u64.to_be_bytes());
        assert_eq!(&bytes[49..57], &20u64.to_be_bytes());
        assert_eq!(&bytes[57..61], &3u32.to_be_bytes());
        assert_eq!(&bytes[61..93], &[0xbb; 32]);
        assert_eq!(&bytes[93..125], &[0xcc; 32]);
        assert_eq!(&bytes[125..133], &0x1122u64.to_be_bytes());
        assert_eq!(&bytes[133..165], &[0xdd; 32]);
        assert_eq!(BlockHeader::decode(&bytes), Ok(sample()));
    }

    #[test]
    fn hash_is_domain_separated_and_covers_every_field() {
        let h = sample();
        let expected: Hash = Sha256::digest([HEADER_HASH_TAG, &h.encode()].concat()).into();
        assert_eq!(h.hash(), expected);
        assert_ne!(h.hash(), <Hash>::from(Sha256::digest(h.encode())));
        let bytes = h.encode();
        for i in 1..bytes.len() {
            let mut changed = bytes.clone();
            changed[i] ^= 1;
            let other = BlockHeader::decode(&changed).unwrap();
            assert_ne!(other.hash(), h.hash(), "byte {i} not covered");
        }
    }

    #[test]
    fn decode_rejects_bad_length_and_version() {
        let bytes = sample().encode();
        let too_short = BlockHeader::decode(&bytes[..164]);
        assert!(matches!(too_short, Err(LedgerError::HeaderLength { actual: 164, .. })));
        let too_long = BlockHeader::decode(&[bytes.as_slice(), &[0]].concat());
        assert!(matches!(too_long, Err(LedgerError::HeaderLength { actual: 166, .. })));
        let mut v1 = bytes[..125].to_vec();
        v1[0] = 1;
        assert_eq!(BlockHeader::decode(&v1), Err(LedgerError::UnsupportedVersion(1)));
        assert!(matches!(BlockHeader::decode(&[]), Err(LedgerError::HeaderLength { .. })));
        let mut v3 = bytes.clone();
        v3[0] = 3;
        assert_eq!(BlockHeader::decode(&v3), Err(LedgerError::UnsupportedVersion(3)));
    }

    #[test]
    fn json_uses_lowercase_hex_and_includes_hash() {
        let h = sample();
        let json = serde_json::to_value(h).unwrap();
        assert_eq!(json["height"], 0x0102_0304_0506_0708u64);
        assert_eq!(json["prev_hash"], "aa".repeat(32));
        assert_eq!(json["hash"], hex::encode(h.hash()));
        assert_eq!(serde_json::from_value::<BlockHeader>(json.clone()).unwrap(), h);

        let mut without_hash = json.clone();
        without_hash.as_object_mut().unwrap().remove("hash");
        assert_eq!(serde_json::from_value::<BlockHeader>(without_hash).unwrap(), h);

        let mut lying = json.clone();
        lying["txn_count"] = 4.into();
        let err = serde_json::from_value::<BlockHeader>(lying).unwrap_err();
        assert!(err.to_string().contains("does not match its contents"), "{err}");

        let mut short = json;
        short["inputs_root"] = "abcd".into();
        let err = serde_json::from_value::<BlockHeader>(short).unwrap_err();
        assert!(err.to_string().contains("inputs_root"), "{err}");
    }

    #[test]
    fn builder_roots_match_merkle_and_proofs_verify() {
        let chain = chain_of(1);
        let header = chain[0];
        assert_eq!(header.height, 0);
        assert_eq!(header.prev_hash, GENESIS_PREV_HASH);
        assert_eq!(header.txn_count, 2);
        assert_eq!(header.inputs_root, merkle::root(&[b"in-0-a", b"in-0-b"]));
        assert_eq!(header.effects_root, merkle::root(&[b"fx-0"]));

        let mut builder = BlockBuilder::new();
        builder.push_input(b"x").unwrap();
        builder.push_input(b"y").unwrap();
        builder.push_input(b"z").unwrap();
        let header = builder.header(0, GENESIS_PREV_HASH, 1, 1, (3, [0; 32])).unwrap();
        let proof = builder.input_proof(2).unwrap();
        assert!(merkle::verify_inclusion(b"z", 2, 3, &proof, &header.inputs_root));
        assert!(builder.effect_proof(0).is_err());
        assert_eq!(header.effects_root, merkle::empty_root());
        assert!(matches!(
            builder.header(1, GENESIS_PREV_HASH, 5, 4, (0, [0; 32])),
            Err(LedgerError::TsRangeInverted { .. })
        ));
    }

    #[test]
    fn verify_chain_accepts_linked_headers() {
        let headers = chain_of(5);
        assert_eq!(verify_chain(&headers), Ok(()));
        assert_eq!(verify_chain(&headers[2..]), Ok(()));
        assert_eq!(verify_chain(&[]), Ok(()));
        assert_eq!(headers[4].prev_hash, headers[3].hash());
    }

    #[test]
    fn verify_chain_rejects_breaks() {
        let headers = chain_of(4);

        let mut gap = headers.clone();
        gap.remove(2);
        assert_eq!(verify_chain(&gap), Err(LedgerError::HeightGap { expected: 2, actual: 3 }));

        let mut forged = headers.clone();
        forged[1].txn_count += 1;
        assert!(matches!(verify_chain(&forged), Err(LedgerError::PrevHashMismatch { height: 2, .. })));

        let mut bad_genesis = headers.clone();
        bad_genesis[0].prev_hash = [1; 32];
        assert!(matches!(verify_chain(&bad_genesis), Err(LedgerError::PrevHashMismatch { height: 0, .. })));

        let mut backwards = headers[..2].to_vec();
        backwards[1].first_ts = backwards[0].last_ts - 1;
        assert!(matches!(verify_chain(&backwards), Err(LedgerError::TsWentBackwards { height: 1, .. })));

        let mut inverted = headers[..1].to_vec();
        inverted[0].first_ts = inverted[0].last_ts + 1;
        assert!(matches!(verify_chain(&inverted), Err(LedgerError::TsRangeInverted { .. })));

        let mut not_genesis = Chain::new();
        assert!(matches!(not_genesis.append(headers[1]), Err(LedgerError::HeightGap { expected: 0, .. })));
    }
}
