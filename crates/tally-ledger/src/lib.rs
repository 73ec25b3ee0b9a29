//! tally-ledger: the verifiable part of Tally's history.
//!
//! Owns the block header format and its SHA-256 hash chain, RFC 9162 Merkle trees over a
//! batch's inputs and effects, and the inclusion and consistency proofs built on them;
//! the transparency log over all transactions (its leaf format in [`leaf`], its
//! append-only stored tree in [`tlog`]) and signed tree heads ([`sth`], ed25519).
//!
//! Architecture invariant: this crate is pure. It does no I/O, reads no clock and uses no
//! randomness, because every replica must compute byte-identical headers from the same log
//! batch; a mismatch is a divergence. Storing headers, serving them and signing them belong
//! to the crates that own disk and network (`tally-storage`, `tally-calvin`, `tally-server`).

pub mod block;
mod error;
pub mod leaf;
pub mod merkle;
pub mod sth;
pub mod tlog;

pub use block::{
    verify_chain, BlockBuilder, BlockHeader, Chain, BLOCK_VERSION, GENESIS_PREV_HASH, HEADER_ENCODED_LEN,
    HEADER_HASH_TAG,
};
pub use error::LedgerError;
pub use merkle::Hash;
