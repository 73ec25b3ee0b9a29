use thiserror::Error;

use crate::merkle::Hash;

/// Everything that can go wrong while decoding, building or verifying ledger data.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LedgerError {
    #[error("block header must be {expected} bytes, got {actual}")]
    HeaderLength { expected: usize, actual: usize },
    #[error("block header version {0} is not supported (this build reads version 2)")]
    UnsupportedVersion(u8),
    #[error("leaf index {index} is outside a tree of {size} leaves")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("old tree size {old} is larger than the tree's {size} leaves")]
    OldSizeTooLarge { old: u64, size: u64 },
    #[error("block {height}: first_ts {first_ts} is after last_ts {last_ts}")]
    TsRangeInverted { height: u64, first_ts: u64, last_ts: u64 },
    #[error("expected block height {expected}, got {actual}")]
    HeightGap { expected: u64, actual: u64 },
    #[error(
        "block {height}: prev_hash {} does not match the previous block's hash {}",
        hex::encode(.actual),
        hex::encode(.expected)
    )]
    PrevHashMismatch { height: u64, expected: Hash, actual: Hash },
    #[error("block {height}: first_ts {first_ts} is before the previous block's last_ts {prev_last_ts}")]
    TsWentBackwards { height: u64, first_ts: u64, prev_last_ts: u64 },
    #[error("a block holds at most {max} transactions")]
    TooManyTransactions { max: u32 },
    #[error("field `{field}` must be 64 hex characters (a SHA-256 hash)")]
    BadHex { field: &'static str },
    #[error(
        "header hash {} does not match its contents (computed {})",
        hex::encode(.claimed),
        hex::encode(.computed)
    )]
    HashMismatch { claimed: Hash, computed: Hash },
    #[error("the transparency log has no stored subtree hash at level {level}, index {index}")]
    MissingNode { level: u8, index: u64 },
    #[error("reading the transparency log failed: {0}")]
    Storage(String),
    #[error("{what} must be {expected} bytes, got {actual}")]
    Length { what: &'static str, expected: usize, actual: usize },
    #[error("{what} version {found} is not supported (this build reads version {supported})")]
    Version { what: &'static str, found: u8, supported: u8 },
    #[error("{0}")]
    Malformed(String),
}
