//! Limits on what one transaction may write, checked while it is evaluated.
//!
//! A write transaction is logged before it is executed, and then every replica executes
//! it, on every replay too. A write the store would refuse must therefore be refused
//! here, as the transaction's own FQL error, the same way on every replica: refused by
//! the store while a batch is applied, it would make the batch impossible to apply, now
//! and on every replay and member. The store's own rule is [`tally_storage::check_put`];
//! every write passes [`check_write`] first, which applies that rule and the
//! transaction-wide bounds, and says in FQL terms which limit was hit.
//!
//! | limit | value | what it bounds |
//! |---|---|---|
//! | [`NAME_BYTES_MAX`] | 1,024 bytes | the name of a collection, index, function, role, database or access provider |
//! | [`DOC_BYTES_MAX`] | 16 MiB | one document version, encoded |
//! | [`INDEX_ENTRY_BYTES_MAX`] | 32 KiB | one index entry's key: its terms, values and the document's ref, encoded |
//! | [`TXN_WRITES_MAX`] | 500,000 | document versions and index entries one transaction writes |
//! | [`TXN_WRITE_BYTES_MAX`] | 128 MiB | the bytes of those writes |
//!
//! One more bound is the executor's, as it needs the logged input: a transaction's ledger
//! leaf record (89 bytes, 32 per write, and the input record) is one store value, so it
//! may be at most 16 MiB (`tally_exec::record::check_record`; with a small query about
//! 524,000 writes, hence [`TXN_WRITES_MAX`]).

use tally_storage::Space;

use crate::error::{code, Failure, FqlError};

/// Longest schema name, in UTF-8 bytes. Far below the key limit, so a name always fits in
/// a document key and in every ref an index entry holds.
pub const NAME_BYTES_MAX: usize = 1024;
/// Largest encoded document version: the store's value limit.
pub const DOC_BYTES_MAX: usize = tally_storage::VALUE_BYTES_MAX;
/// Largest encoded index entry key: the store's key limit.
pub const INDEX_ENTRY_BYTES_MAX: usize = tally_storage::KEY_BYTES_MAX;
/// Most writes (document versions and index entries, history edits included) in one
/// transaction: below the 524,285 effects a ledger leaf record of 16 MiB can list.
pub const TXN_WRITES_MAX: u64 = 500_000;
/// Most bytes (keys and values) one transaction writes.
pub const TXN_WRITE_BYTES_MAX: u64 = 128 << 20;

/// A `validation failed` error with one field failure.
fn invalid_field(field: &str, description: String) -> FqlError {
    let mut e = FqlError::new(code::VALIDATION_FAILED, "document data is not valid.");
    e.failures.push(Failure { field: vec![field.to_string()], code: "invalid value", description });
    e
}

/// Refuse a schema name longer than [`NAME_BYTES_MAX`].
pub fn check_name(name: &str) -> Result<(), FqlError> {
    if name.len() > NAME_BYTES_MAX {
        return Err(invalid_field(
            "name",
            format!(
                "Names may be at most {NAME_BYTES_MAX} bytes (UTF-8); this one has {}. Choose a shorter name.",
                name.len()
            ),
        ));
    }
    Ok(())
}

/// What a write is, for the error message when it is refused.
#[derive(Clone, Copy, Debug)]
pub enum WriteKind<'a> {
    /// A document version; `named` when its id is a schema name.
    Doc { named: bool },
    /// An entry of the index of this name.
    IndexEntry { index: &'a str },
    /// A write the caller describes no further (internal bookkeeping).
    Other,
}

/// Check one write of a transaction that has written `count` writes of `bytes` bytes so
/// far. Deterministic: a function of the write and the transaction alone.
pub fn check_write(
    kind: WriteKind<'_>,
    space: Space,
    key: &[u8],
    value: Option<&[u8]>,
    count: u64,
    bytes: u64,
) -> Result<(), FqlError> {
    let value_len = value.map_or(0, <[u8]>::len);
    if count + 1 > TXN_WRITES_MAX {
        return Err(FqlError::new(
            code::INVALID_ARGUMENT,
            format!(
                "This transaction writes more than {TXN_WRITES_MAX} document versions and index entries; \
                 split it into smaller transactions."
            ),
        ));
    }
    let total = bytes + (key.len() + value_len) as u64;
    if total > TXN_WRITE_BYTES_MAX {
        return Err(FqlError::new(
            code::INVALID_ARGUMENT,
            format!(
                "This transaction writes more than {TXN_WRITE_BYTES_MAX} bytes of documents and index entries; \
                 split it into smaller transactions."
            ),
        ));
    }
    if tally_storage::check_put(key, value.unwrap_or(&[])).is_ok() {
        return Ok(());
    }
    Err(match (kind, space) {
        (WriteKind::Doc { named: true }, _) if key.len() > tally_storage::KEY_BYTES_MAX => invalid_field(
            "name",
            format!("Names may be at most {NAME_BYTES_MAX} bytes (UTF-8); choose a shorter name."),
        ),
        (WriteKind::Doc { .. }, _) if key.len() > tally_storage::KEY_BYTES_MAX => {
            FqlError::new(code::INVALID_ARGUMENT, "The document id is too long.")
        }
        (WriteKind::Doc { .. }, _) => invalid_field(
            "data",
            format!(
                "The document is {value_len} bytes encoded; a document may be at most {DOC_BYTES_MAX} bytes. \
                 Keep large content out of the document, or split it over several."
            ),
        ),
        (WriteKind::IndexEntry { index }, _) => invalid_field(
            "data",
            format!(
                "An entry of index `{index}` would be {} bytes (its terms, values and the document's ref, \
                 encoded); index entries may be at most {INDEX_ENTRY_BYTES_MAX} bytes. Index a shorter \
                 field, or a hash of it.",
                key.len()
            ),
        ),
        (WriteKind::Other, _) => FqlError::new(
            code::INVALID_ARGUMENT,
            format!(
                "A write of {} key bytes and {value_len} value bytes exceeds the store's limits \
                 ({} / {} bytes).",
                key.len(),
                tally_storage::KEY_BYTES_MAX,
                tally_storage::VALUE_BYTES_MAX
            ),
        ),
    })
}
