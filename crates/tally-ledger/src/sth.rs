//! Signed tree heads: what a member signs, and how a signature is checked.
//!
//! A member signs, with its ed25519 key, the RFC 6962 §3.5 `TreeHeadSignature` structure
//! of every tree head it computes:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! |      0 |    1 | version: 0 (v1) |
//! |      1 |    1 | signature_type: 1 (tree_hash) |
//! |      2 |    8 | timestamp, ms since the Unix epoch (big-endian) |
//! |     10 |    8 | tree_size (big-endian) |
//! |     18 |   32 | sha256_root_hash |
//!
//! The timestamp is the commit ts of the last transaction in the tree (µs, divided by
//! 1,000), not a wall clock: every member computes the same head, byte for byte, so
//! signatures from different members over one head can be checked (and counted towards a
//! quorum) independently. On the wire a signature is a TLS `DigitallySigned`:
//! `0x08 0x07` (SignatureScheme ed25519) | length u16 (= 64) | signature.
//!
//! The key is never generated here (this crate has no randomness): the caller loads it.
//!
//! Signing is ed25519-dalek's, verifying ring's. Ed25519 signatures are deterministic
//! (RFC 8032 §5.1.6), so any correct implementation signs a head to the same 64 bytes;
//! dalek's fixed-base tables sign in about four fifths of ring's time (18 against 23 µs
//! here), and the executor signs once per block, which a lone client pays on every write.

use ring::signature::{self, UnparsedPublicKey};

use crate::merkle::Hash;
use crate::LedgerError;

/// Length of [`TreeHead::signed_bytes`].
pub const SIGNED_LEN: usize = 50;
/// `DigitallySigned` prefix: SignatureScheme ed25519 (0x0807) and a 64-byte length.
const DIGITALLY_SIGNED_PREFIX: [u8; 4] = [0x08, 0x07, 0x00, 0x40];

/// A tree head: the tree's size, root and timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeHead {
    pub tree_size: u64,
    pub timestamp_ms: u64,
    pub root: Hash,
}

impl TreeHead {
    /// The RFC 6962 `TreeHeadSignature` bytes (see the module doc).
    pub fn signed_bytes(&self) -> [u8; SIGNED_LEN] {
        let mut out = [0u8; SIGNED_LEN];
        out[0] = 0;
        out[1] = 1;
        out[2..10].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        out[10..18].copy_from_slice(&self.tree_size.to_be_bytes());
        out[18..50].copy_from_slice(&self.root);
        out
    }

    /// The head's timestamp for a last commit ts in µs.
    pub fn timestamp_for(last_commit_ts_us: u64) -> u64 {
        last_commit_ts_us / 1_000
    }
}

/// A member's signing key (ed25519).
pub struct MemberKey {
    key: ed25519_dalek::SigningKey,
}

impl MemberKey {
    /// The key whose secret seed is `seed` (RFC 8032's 32-byte private key), the form
    /// the data directory keeps.
    pub fn from_seed(seed: &[u8]) -> Result<Self, LedgerError> {
        let seed: &[u8; 32] = seed.try_into().map_err(|_| {
            LedgerError::Malformed(format!("the member key must be a 32-byte ed25519 seed, not {} bytes", seed.len()))
        })?;
        Ok(Self { key: ed25519_dalek::SigningKey::from_bytes(seed) })
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The 64-byte signature of `head`'s `TreeHeadSignature` bytes.
    pub fn sign(&self, head: &TreeHead) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.key.sign(&head.signed_bytes()).to_bytes()
    }
}

impl std::fmt::Debug for MemberKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemberKey({})", hex::encode(self.public_key()))
    }
}

/// Whether `sig` (64 bytes) is `public_key`'s signature of `head`.
pub fn verify(public_key: &[u8], head: &TreeHead, sig: &[u8]) -> bool {
    public_key.len() == 32
        && sig.len() == 64
        && UnparsedPublicKey::new(&signature::ED25519, public_key).verify(&head.signed_bytes(), sig).is_ok()
}

/// A key's id: SHA-256 of its raw 32 bytes.
pub fn key_id(public_key: &[u8; 32]) -> Hash {
    crate::leaf::sha256(public_key)
}

/// The TLS `DigitallySigned` form of a signature.
pub fn digitally_signed(sig: &[u8; 64]) -> [u8; 68] {
    let mut out = [0u8; 68];
    out[..4].copy_from_slice(&DIGITALLY_SIGNED_PREFIX);
    out[4..].copy_from_slice(sig);
    out
}

/// The signature inside a `DigitallySigned`; refuses other schemes and lengths.
pub fn parse_digitally_signed(b: &[u8]) -> Result<[u8; 64], LedgerError> {
    if b.len() != 68 {
        return Err(LedgerError::Length { what: "tree head signature", expected: 68, actual: b.len() });
    }
    if b[..4] != DIGITALLY_SIGNED_PREFIX {
        return Err(LedgerError::Malformed(format!(
            "tree head signature is not ed25519 (scheme/length bytes {})",
            hex::encode(&b[..4])
        )));
    }
    Ok(b[4..].try_into().unwrap_or([0; 64]))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn test_key() -> MemberKey {
        MemberKey::from_seed(&[7; 32]).unwrap()
    }

    #[test]
    fn signed_bytes_follow_rfc6962() {
        let head = TreeHead { tree_size: 5, timestamp_ms: 0x0102, root: [9; 32] };
        let b = head.signed_bytes();
        assert_eq!(&b[..2], &[0, 1]);
        assert_eq!(&b[2..10], &0x0102u64.to_be_bytes());
        assert_eq!(&b[10..18], &5u64.to_be_bytes());
        assert_eq!(&b[18..], &[9; 32]);
    }

    /// The key from RFC 8032's seed gives RFC 8032's public key (§7.1, TEST 1), and signs
    /// heads to exactly ring's bytes (ed25519 signatures are deterministic: members running
    /// either implementation sign a head alike).
    #[test]
    fn keys_and_signatures_match_rfc8032_and_ring() {
        let seed = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").unwrap();
        let key = MemberKey::from_seed(&seed).unwrap();
        assert_eq!(hex::encode(key.public_key()), "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
        let ring_key = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
        for (size, ms, root) in [(0u64, 0u64, [0u8; 32]), (5, 1000, [9; 32]), (u64::MAX, 1 << 40, [0xa5; 32])] {
            let head = TreeHead { tree_size: size, timestamp_ms: ms, root };
            assert_eq!(key.sign(&head)[..], *ring_key.sign(&head.signed_bytes()).as_ref());
        }
        assert!(MemberKey::from_seed(&seed[..31]).is_err());
    }

    #[test]
    fn signatures_verify_and_forgeries_do_not() {
        let key = test_key();
        let head = TreeHead { tree_size: 5, timestamp_ms: 1000, root: [9; 32] };
        let sig = key.sign(&head);
        let pk = key.public_key();
        assert!(verify(&pk, &head, &sig));
        let mut other = head;
        other.tree_size = 6;
        assert!(!verify(&pk, &other, &sig));
        let mut bad = sig;
        bad[10] ^= 1;
        assert!(!verify(&pk, &head, &bad));
        assert!(!verify(&pk[..31], &head, &sig));
        assert!(!verify(&[0u8; 32], &head, &sig));
        let ds = digitally_signed(&sig);
        assert_eq!(parse_digitally_signed(&ds).unwrap(), sig);
        assert!(parse_digitally_signed(&ds[..67]).is_err());
        let mut ecdsa = ds;
        ecdsa[0] = 4;
        ecdsa[1] = 3;
        assert!(parse_digitally_signed(&ecdsa).is_err());
    }
}
