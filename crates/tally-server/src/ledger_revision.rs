//! `get-proof-by-revision?ref=<collection>/<id>&ts=<version ts>`: the proof that one
//! version of one document is in the transparency log.
//!
//! The answer chains two inclusion proofs: the version's effect leaf in its
//! transaction's effects tree (whose root the leaf holds), and the transaction's leaf in
//! the log. The effect leaf names the version: its key is the document's storage key
//! (`db u64 | collection u64 | id`, `docs/ledger.md`) and its ts is the version's ts.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;
use serde_json::json;
use tally_fql::FqlError;
use tally_ledger::{leaf, merkle};
use tally_storage::{Snapshot, Space};

use crate::http::{bad_request, AppState};
use crate::ledger_api::{
    answer, authenticated, b64s, internal, leaf_record, not_found, size_param, stored_head, tree_of,
};

#[derive(Deserialize)]
pub(crate) struct RevisionParams {
    #[serde(rename = "ref")]
    reference: String,
    ts: u64,
    /// Commit ts of the transaction that wrote the version, when it differs from the
    /// version's ts (a version added by `Insert` into history).
    txn_ts: Option<u64>,
    tree_size: Option<u64>,
}

pub(crate) async fn get_proof_by_revision(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    p: Result<Query<RevisionParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    answer((|| {
        let Query(p) = p.map_err(|e| bad_request(format!("{e}; send ref=<collection>/<id>&ts=<version ts>")))?;
        let (coll, id) = p
            .reference
            .split_once('/')
            .filter(|(c, i)| !c.is_empty() && !i.is_empty() && tally_fql::model::native::by_name(c).is_none())
            .ok_or_else(|| bad_request("ref must name a user document as <collection>/<id>, e.g. accounts/101"))?;
        let (snap, auth) = authenticated(&st, &headers)?;
        let read_ts = st.applied_ts.load(std::sync::atomic::Ordering::Acquire);
        may_read_version(&*snap, read_ts, &auth, coll, id, p.ts)?;
        let key = doc_key(&*snap, read_ts, auth.db, coll, id)?;
        let value = version_at(&*snap, &key, p.ts)?;
        let size = stored_head(&*snap)?.map_or(0, |h| h.tree_size);
        let tree_size = size_param("tree_size", p.tree_size, size)?;
        let txn_ts = p.txn_ts.unwrap_or(p.ts);
        let index = leaf_at_ts(&*snap, tree_size, txn_ts)?;
        let record = leaf_record(&*snap, index)?;
        let effect = leaf::effect_leaf(leaf::SPACE_DOCS, &key, p.ts, Some(&value));
        let effect_hash = merkle::leaf_hash(&effect);
        let effect_index = record.effect_hashes.iter().position(|h| *h == effect_hash).ok_or_else(|| {
            not_found(format!("transaction {index} (ts {txn_ts}) did not write this version; pass txn_ts=<commit ts> for a version added to history"))
        })?;
        let effect_path =
            merkle::inclusion_proof_of_hashes(&record.effect_hashes, effect_index as u64).map_err(internal)?;
        let audit_path = tree_of(&*snap, size).inclusion_proof(index, tree_size).map_err(internal)?;
        Ok(json!({
            "tree_size": tree_size,
            "leaf_index": index,
            "leaf_input": B64.encode(record.leaf.to_bytes()),
            "audit_path": b64s(&audit_path),
            "effect": {
                "leaf": B64.encode(&effect),
                "index": effect_index,
                "count": record.effect_hashes.len(),
                "audit_path": b64s(&effect_path),
            },
            // Internal ids are u64s past 2^53: decimal strings, so that JavaScript's
            // JSON.parse keeps them exact.
            "revision": {
                "db": auth.db.to_string(),
                "collection": coll,
                "collection_id": collection_id(&key).to_string(),
                "id": id,
                "ts": p.ts,
                "key": B64.encode(&key),
            },
        }))
    })())
}

/// The key must be able to read the document at `ts`: `Get(Ref(Collection(coll), id), ts)`
/// evaluated with its own permissions, in its own database.
fn may_read_version(
    snap: &dyn Snapshot,
    read_ts: u64,
    auth: &tally_fql::auth::Auth,
    coll: &str,
    id: &str,
    ts: u64,
) -> Result<(), FqlError> {
    let q = json!({"get": {"ref": {"collection": coll}, "id": id}, "ts": ts});
    let expr = tally_fql::expr::parse(&q)?;
    let limits = tally_fql::eval::Limits::default();
    let mode = tally_fql::eval::Mode::ReadOnly;
    tally_fql::run::evaluate(snap, read_ts, mode, auth.clone(), &expr, [0; 32], limits, None).result.map(drop)
}

fn doc_key(snap: &dyn Snapshot, read_ts: u64, db: u64, coll: &str, id: &str) -> Result<Vec<u8>, FqlError> {
    use tally_fql::model::{native, Tx};
    let doc = Tx::new(snap, read_ts).live_doc(db, native::COLLECTIONS, coll, read_ts)?;
    let coll_id = doc.and_then(|d| tally_fql::catalog::internal_id(&d.data));
    let coll_id = coll_id.ok_or_else(|| not_found(format!("collection `{coll}` does not exist")))?;
    Ok(tally_fql::model::doc_key(db, coll_id, id))
}

/// The collection's internal id, bytes 8..16 of a document key (`docs/ledger.md`).
fn collection_id(key: &[u8]) -> u64 {
    key.get(8..16).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes)
}

/// The stored bytes of the version of `key` at exactly `ts`.
fn version_at(snap: &dyn Snapshot, key: &[u8], ts: u64) -> Result<Vec<u8>, FqlError> {
    let mut versions = snap.history(Space::Docs, key, ts, ts, false).map_err(internal)?;
    match versions.next() {
        Some(v) => Ok(v.map_err(internal)?.value),
        None => Err(not_found(format!(
            "the document has no version at ts {ts} (it was never written then, or history before it was removed); \
             use the ts of a version from the document's history"
        ))),
    }
}

/// The leaf whose transaction committed at `ts` (leaves are in strictly increasing ts
/// order, so a binary search: O(log n) leaf reads).
fn leaf_at_ts(snap: &dyn Snapshot, size: u64, ts: u64) -> Result<u64, FqlError> {
    let (mut lo, mut hi) = (0u64, size);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let at = leaf_record(snap, mid)?.leaf.ts;
        match at.cmp(&ts) {
            std::cmp::Ordering::Equal => return Ok(mid),
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
        }
    }
    Err(not_found(format!("no transaction committed at ts {ts} in the first {size} leaves")))
}
