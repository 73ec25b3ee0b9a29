//! The root key record: the one logged input that is not a transaction. It sets the
//! cluster's root key hash, which every member then authenticates root requests against
//! (docs/record.md, docs/cluster.md "The root key is cluster data").
//!
//! # Layout, version 1
//!
//! | field | encoding |
//! |---|---|
//! | version | `u8` = `0x01` |
//! | kind | `u8` = `0x52` (`R`, a root key record) |
//! | expected | 32 bytes: the SHA-256 of the root key the request was authenticated with, or 32 zero bytes for "no root key yet" (the cluster's bootstrap) |
//! | hash | 32 bytes: the SHA-256 of the new root key (never all zero) |
//!
//! and nothing after it: 66 bytes. The executor applies it as a compare-and-set: the
//! hash becomes the root key hash only if the current one is `expected` (a bootstrap
//! whose `hash` is already the current one is a no-op that succeeds). So two rotations
//! authenticated with the same key cannot both win, and a member that lags behind cannot
//! bootstrap over a key the cluster already has.

use super::{RecordError, VERSION};

/// Kind byte of a root key record.
pub const KIND_ROOT_KEY: u8 = b'R';
/// Every root key record is this long.
pub const ROOT_KEY_RECORD_BYTES: usize = 2 + 32 + 32;

/// A change of the root key hash, as it is logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootKeySet {
    /// The hash this change replaces; `None` at bootstrap (no root key yet).
    pub expected: Option<[u8; 32]>,
    /// SHA-256 of the new root key.
    pub hash: [u8; 32],
}

/// Is `bytes` a root key record (by its version and kind bytes; [`decode_root_key`]
/// checks the rest)?
pub fn is_root_key_record(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == VERSION && bytes[1] == KIND_ROOT_KEY
}

pub fn encode_root_key(r: &RootKeySet) -> Vec<u8> {
    let mut out = Vec::with_capacity(ROOT_KEY_RECORD_BYTES);
    out.push(VERSION);
    out.push(KIND_ROOT_KEY);
    out.extend_from_slice(&r.expected.unwrap_or([0; 32]));
    out.extend_from_slice(&r.hash);
    out
}

pub fn decode_root_key(bytes: &[u8]) -> Result<RootKeySet, RecordError> {
    match bytes.first() {
        None => return Err(RecordError::Truncated),
        Some(&VERSION) => {}
        Some(&v) => return Err(RecordError::UnknownVersion(v)),
    }
    match bytes.get(1) {
        None => return Err(RecordError::Truncated),
        Some(&KIND_ROOT_KEY) => {}
        Some(&k) => return Err(RecordError::WrongKind(k)),
    }
    if bytes.len() < ROOT_KEY_RECORD_BYTES {
        return Err(RecordError::Truncated);
    }
    if bytes.len() > ROOT_KEY_RECORD_BYTES {
        return Err(RecordError::TrailingBytes(bytes.len() - ROOT_KEY_RECORD_BYTES));
    }
    let expected: [u8; 32] = bytes[2..34].try_into().map_err(|_| RecordError::Truncated)?;
    let hash: [u8; 32] = bytes[34..66].try_into().map_err(|_| RecordError::Truncated)?;
    if hash == [0; 32] {
        return Err(RecordError::ZeroRootKeyHash);
    }
    Ok(RootKeySet { expected: (expected != [0; 32]).then_some(expected), hash })
}

/// What applying `r` does to the current root key hash `current`: the new hash, or why
/// the record changes nothing.
pub fn apply(current: Option<[u8; 32]>, r: &RootKeySet) -> Result<[u8; 32], RootKeyRefusal> {
    if current == r.expected {
        return Ok(r.hash);
    }
    match (r.expected, current) {
        (None, Some(c)) if c == r.hash => Ok(c),
        (None, Some(_)) => Err(RootKeyRefusal::AlreadySet),
        _ => Err(RootKeyRefusal::Changed),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootKeyRefusal {
    /// A bootstrap, but the cluster already has another root key.
    AlreadySet,
    /// A rotation authenticated with a key that is no longer the root key.
    Changed,
}

impl RootKeyRefusal {
    pub fn description(self) -> &'static str {
        match self {
            RootKeyRefusal::AlreadySet => {
                "The cluster already has a root key, and it is not this member's --root-key; the cluster's root key \
                 stays as it is (rotate it with `tally root-key rotate`)."
            }
            RootKeyRefusal::Changed => {
                "The root key changed after this request was authenticated (another rotation was applied first); \
                 nothing was changed. Authenticate with the current root key and try again."
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes() {
        let r = RootKeySet { expected: Some([0x11; 32]), hash: [0x22; 32] };
        let b = encode_root_key(&r);
        assert_eq!(hex::encode(&b), format!("0152{}{}", "11".repeat(32), "22".repeat(32)));
        assert_eq!(decode_root_key(&b), Ok(r));
        let boot = RootKeySet { expected: None, hash: [0x22; 32] };
        let b = encode_root_key(&boot);
        assert_eq!(hex::encode(&b), format!("0152{}{}", "00".repeat(32), "22".repeat(32)));
        assert_eq!(decode_root_key(&b), Ok(boot));
        assert!(is_root_key_record(&b));
    }

    #[test]
    fn the_decoder_refuses_what_it_does_not_understand() {
        let good = encode_root_key(&RootKeySet { expected: None, hash: [7; 32] });
        assert_eq!(decode_root_key(&[]), Err(RecordError::Truncated));
        assert_eq!(decode_root_key(&good[..65]), Err(RecordError::Truncated));
        assert_eq!(decode_root_key(&[good.clone(), vec![0]].concat()), Err(RecordError::TrailingBytes(1)));
        let mut v2 = good.clone();
        v2[0] = 2;
        assert_eq!(decode_root_key(&v2), Err(RecordError::UnknownVersion(2)));
        let mut other = good.clone();
        other[1] = b'I';
        assert_eq!(decode_root_key(&other), Err(RecordError::WrongKind(b'I')));
        let zero = encode_root_key(&RootKeySet { expected: None, hash: [0; 32] });
        assert_eq!(decode_root_key(&zero), Err(RecordError::ZeroRootKeyHash));
        // A transaction input is never taken for a root key record.
        assert!(!is_root_key_record(b"\x01I"));
        assert!(!is_root_key_record(b"{\"q\":1}"));
    }

    #[test]
    fn apply_is_a_compare_and_set() {
        let (a, b) = ([1; 32], [2; 32]);
        let boot = |h| RootKeySet { expected: None, hash: h };
        let rotate = |from, to| RootKeySet { expected: Some(from), hash: to };
        assert_eq!(apply(None, &boot(a)), Ok(a));
        assert_eq!(apply(Some(a), &boot(a)), Ok(a), "a second bootstrap with the same key is a no-op");
        assert_eq!(apply(Some(a), &boot(b)), Err(RootKeyRefusal::AlreadySet));
        assert_eq!(apply(Some(a), &rotate(a, b)), Ok(b));
        assert_eq!(apply(Some(b), &rotate(a, b)), Err(RootKeyRefusal::Changed));
        assert_eq!(apply(None, &rotate(a, b)), Err(RootKeyRefusal::Changed));
    }
}
