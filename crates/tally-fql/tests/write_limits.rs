//! The transaction-wide write limits of `tally_fql::limits`: a transaction that writes too
//! much is refused while it is evaluated, with `invalid argument`, before the store could
//! refuse anything. (The per-write limits — names, documents, index entries — are checked
//! through the real server in tests/js/executor_limits.test.js.)

use tally_fql::limits::{check_name, TXN_WRITES_MAX, TXN_WRITE_BYTES_MAX};
use tally_fql::model::Tx;
use tally_storage::{MemStore, Space, Store};

#[test]
fn a_transaction_writes_at_most_txn_writes_max_entries() {
    let store = MemStore::new();
    let snap = store.snapshot().unwrap();
    let mut tx = Tx::new(&*snap, 10);
    for i in 0..TXN_WRITES_MAX {
        tx.put(Space::Index, i.to_be_bytes().to_vec(), Vec::new()).unwrap();
    }
    let e = tx.put(Space::Index, b"one more".to_vec(), Vec::new()).unwrap_err();
    assert_eq!(e.code, "invalid argument");
    assert!(e.description.contains("split it into smaller transactions"), "{}", e.description);
}

#[test]
fn a_transaction_writes_at_most_txn_write_bytes_max() {
    let store = MemStore::new();
    let snap = store.snapshot().unwrap();
    let mut tx = Tx::new(&*snap, 10);
    let chunk = vec![7u8; 8 << 20];
    let fits = TXN_WRITE_BYTES_MAX / (chunk.len() as u64 + 8);
    for i in 0..fits {
        tx.put(Space::Docs, i.to_be_bytes().to_vec(), chunk.clone()).unwrap();
    }
    let e = tx.put(Space::Docs, u64::MAX.to_be_bytes().to_vec(), chunk).unwrap_err();
    assert_eq!(e.code, "invalid argument");
    assert!(e.description.contains("bytes of documents and index entries"), "{}", e.description);
}

#[test]
fn store_limits_are_refused_per_write_and_history_edits_count_too() {
    let store = MemStore::new();
    let snap = store.snapshot().unwrap();
    let mut tx = Tx::new(&*snap, 10);
    let e = tx.put(Space::Index, vec![1; tally_storage::KEY_BYTES_MAX + 1], Vec::new()).unwrap_err();
    assert_eq!(e.code, "invalid argument");
    let kind = tally_fql::limits::WriteKind::IndexEntry { index: "by_name" };
    let e = tx.edit_history(kind, Space::Index, vec![1; tally_storage::KEY_BYTES_MAX + 1], 5, None).unwrap_err();
    assert_eq!(e.code, "validation failed");
    assert!(e.failures[0].description.contains("index `by_name`"), "{:?}", e.failures);
    // Nothing refused was kept.
    assert!(tx.into_writes().is_empty());
}

#[test]
fn names_are_limited_in_bytes_not_characters() {
    assert!(check_name(&"a".repeat(1024)).is_ok());
    assert!(check_name(&"a".repeat(1025)).is_err());
    // 342 three-byte characters are 1,026 bytes.
    let e = check_name(&"€".repeat(342)).unwrap_err();
    assert_eq!(e.code, "validation failed");
    assert!(e.failures[0].description.contains("1026"), "{:?}", e.failures);
}
