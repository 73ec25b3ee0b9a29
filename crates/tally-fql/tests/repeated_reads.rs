//! A transaction that reads a document and then updates it (the transfer's shape) reads
//! it from the store once; every answer and charge is as if it read it twice.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use common::Db;
use serde_json::json;
use tally_fql::auth::Auth;
use tally_fql::eval::{Limits, Mode};
use tally_fql::run::evaluate;
use tally_storage::{HistIter, ScanIter, Snapshot, Space, Store, Ts, Version};

/// A snapshot counting the document reads that reach it.
struct Counting {
    inner: Box<dyn Snapshot>,
    doc_gets: AtomicU32,
}

impl Snapshot for Counting {
    fn get(&self, space: Space, key: &[u8], at: Ts) -> tally_storage::Result<Option<Version>> {
        if space == Space::Docs {
            self.doc_gets.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.get(space, key, at)
    }
    fn history<'b>(
        &'b self,
        space: Space,
        key: &[u8],
        lo: Ts,
        hi: Ts,
        desc: bool,
    ) -> tally_storage::Result<HistIter<'b>> {
        self.inner.history(space, key, lo, hi, desc)
    }
    fn scan<'b>(
        &'b self,
        space: Space,
        prefix: &[u8],
        from: Option<&[u8]>,
        desc: bool,
        at: Ts,
    ) -> tally_storage::Result<ScanIter<'b>> {
        self.inner.scan(space, prefix, from, desc, at)
    }
    fn versions_from<'b>(&'b self, space: Space, from: Option<&[u8]>) -> tally_storage::Result<ScanIter<'b>> {
        self.inner.versions_from(space, from)
    }
    fn meta(&self, key: &str) -> tally_storage::Result<Option<Vec<u8>>> {
        self.inner.meta(key)
    }
}

fn acct(id: &str) -> serde_json::Value {
    json!({"ref": {"collection": "accounts"}, "id": id})
}

fn balance(v: &str) -> serde_json::Value {
    json!({"select": ["data", "balance"], "from": {"var": v}})
}

/// (result, document reads that reached the store, bytes charged) of `q` in write mode.
fn run(db: &Db, q: serde_json::Value) -> (serde_json::Value, u32, u64) {
    let q = tally_fql::expr::parse(&q).unwrap();
    let counting = Counting { inner: db.store.snapshot().unwrap(), doc_gets: AtomicU32::new(0) };
    let out = evaluate(&counting, db.ts + 1000, Mode::Write, Auth::root_admin(), &q, [0; 32], Limits::default(), None);
    (tally_value::to_json(&out.result.unwrap()), counting.doc_gets.load(Ordering::Relaxed), out.bytes_read)
}

#[test]
fn a_document_read_again_is_read_from_the_store_once_and_charged_each_time() {
    let mut db = Db::new();
    db.q(json!({"create_collection": {"object": {"name": "accounts"}}}));
    for id in ["1", "2"] {
        db.q(json!({"create": acct(id), "params": {"object": {"data": {"object": {"balance": 100}}}}}));
    }
    let get = |id: &str| json!({"select": ["data", "balance"], "from": {"get": acct(id)}});
    let (v1, reads1, bytes1) = run(&db, json!([get("1")]));
    let (v2, reads2, bytes2) = run(&db, json!([get("1"), get("1")]));
    let (v3, reads3, bytes3) = run(&db, json!([get("1"), get("1"), get("1")]));
    assert_eq!((v1, v2, v3), (json!([100]), json!([100, 100]), json!([100, 100, 100])));
    assert_eq!((reads2, reads3), (reads1, reads1), "a repeated read reached the store");
    // Each read is charged its key and value, answered from the store or not.
    assert!(bytes2 > bytes1 && bytes3 - bytes2 == bytes2 - bytes1, "{bytes1} {bytes2} {bytes3}");
    // Another document, or another read ts, is another read.
    let (_, reads, _) = run(&db, json!([get("1"), get("2")]));
    assert_eq!(reads, reads1 + 1);
    let (v, reads, _) = run(&db, json!([get("1"), {"at": 1, "expr": {"exists": acct("1")}}]));
    assert_eq!((v, reads), (json!([100, false]), reads1 + 1));
    // The transfer's shape: read, update, read again: the transaction's own version.
    let transfer = json!({
        "let": [{"a": {"get": acct("1")}}, {"b": {"get": acct("2")}}],
        "in": {"do": [
            {"update": acct("1"), "params": {"object": {"data": {"object": {"balance": {"subtract": [balance("a"), 30]}}}}}},
            {"update": acct("2"), "params": {"object": {"data": {"object": {"balance": {"add": [balance("b"), 30]}}}}}},
            [get("1"), get("2")]
        ]}
    });
    let (v, reads, _) = run(&db, transfer);
    assert_eq!(v, json!([70, 130]));
    assert_eq!(reads, reads1 + 1, "the updates read what the gets read");
}
