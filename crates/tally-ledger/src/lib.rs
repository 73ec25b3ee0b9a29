//! tally-ledger: the verifiable part of Tally's history.
//!
//! Owns the block header format and its SHA-256 hash chain, RFC 9162 Merkle trees over a
//! batch's inputs and effects, and the inclusion and consistency proofs built on them.
//!
//! Architecture invariant: this crate is pure. It does no I/O, reads no clock and uses no
//! randomness, because every replica must compute byte-identical headers from the same log
//! batch; a mismatch is a divergence. Storing headers, serving them and signing them belong
//! to the crates that own disk and network (`tally-storage`, `tally-calvin`, `tally-server`).

pub mod block;
mod error;
pub mod merkle;

pub use block::{
    verify_chain, BlockBuilder, BlockHeader, Chain, BLOCK_VERSION, GENESIS_PREV_HASH, HEADER_ENCODED_LEN,
    HEADER_HASH_TAG,
};
pub use error::LedgerError;
pub use merkle::Hash;
