//! `/ledger/v1/`: the transparency log's API, in the shape of RFC 6962 §4 (JSON, hashes
//! and byte strings in standard base64). Layouts and the verification recipe:
//! `docs/ledger.md`.
//!
//! Access: the heads and proofs (`get-sth`, `get-sth-consistency`, `get-proof-by-hash`)
//! show hashes only and need any valid key; `get-proof-by-revision` answers only for a
//! document the key may read (`Get(ref, ts)` runs with the key's own permissions, in its
//! own database); `get-entries` shows every tenant's transactions and needs the root
//! key or an admin key of the root database, as `/ledger/head` does.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value as Json};
use tally_fql::FqlError;
use tally_ledger::leaf::{self, LeafRecord};
use tally_ledger::merkle::{self, Hash};
use tally_ledger::tlog::{NodeId, StoredTree};
use tally_ledger::writer;
use tally_ledger::{BlockHeader, LedgerError};
use tally_storage::Snapshot;

use crate::http::{bad_request, error_response, AppState};

/// Most entries one `get-entries` answers (RFC 6962 lets a log return fewer than asked).
pub const ENTRIES_MAX: u64 = 256;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/ledger/v1/get-sth", get(get_sth))
        .route("/ledger/v1/get-sth-consistency", get(get_sth_consistency))
        .route("/ledger/v1/get-proof-by-hash", get(get_proof_by_hash))
        .route("/ledger/v1/get-entries", get(get_entries))
        .route("/ledger/v1/get-proof-by-revision", get(get_proof_by_revision))
}

pub(crate) fn internal(e: impl std::fmt::Display) -> FqlError {
    FqlError::new("internal server error", format!("the ledger could not be read: {e}"))
}

pub(crate) fn not_found(desc: impl Into<String>) -> FqlError {
    FqlError::new(tally_fql::error::code::INSTANCE_NOT_FOUND, desc)
}

pub(crate) fn answer(r: Result<Json, FqlError>) -> Response {
    match r {
        Ok(body) => (StatusCode::OK, axum::Json(body)).into_response(),
        Err(e) => error_response(&e, 0),
    }
}

pub(crate) fn b64s(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(|h| B64.encode(h)).collect()
}

/// Any valid key (or token): what the caller may see is checked per endpoint.
pub(crate) fn authenticated(
    st: &AppState,
    headers: &HeaderMap,
) -> Result<(Box<dyn Snapshot>, tally_fql::auth::Auth), FqlError> {
    let refused = || {
        FqlError::new(
            tally_fql::error::code::UNAUTHORIZED,
            "Unauthorized: send a key's secret as `Authorization: Bearer <secret>` to read the ledger.",
        )
    };
    let secret = crate::http::secret_of(headers).ok_or_else(refused)?;
    if crate::jwt::looks_like_jwt(&secret) {
        return Err(refused());
    }
    let snap = st.store.snapshot().map_err(internal)?;
    let ts = st.applied_ts.load(std::sync::atomic::Ordering::Acquire);
    let auth = tally_fql::run::authenticate(&*snap, ts, &secret, &st.root_key_hash.get()).map_err(|_| refused())?;
    Ok((snap, auth))
}

/// The head of the tree in `snap` (what every proof is computed against).
pub(crate) fn stored_head(snap: &dyn Snapshot) -> Result<Option<BlockHeader>, FqlError> {
    match snap.meta(crate::machine::META_HEAD).map_err(internal)? {
        Some(b) => BlockHeader::decode(&b).map(Some).map_err(internal),
        None => Ok(None),
    }
}

pub(crate) fn tree_of(
    snap: &dyn Snapshot,
    size: u64,
) -> StoredTree<impl Fn(NodeId) -> Result<Option<Hash>, LedgerError> + '_> {
    let reader = crate::machine::node_reader(snap);
    StoredTree::new(size, move |id| reader.read(id))
}

pub(crate) fn leaf_record(snap: &dyn Snapshot, index: u64) -> Result<LeafRecord, FqlError> {
    let b = snap.meta(&writer::leaf_key(index)).map_err(internal)?;
    let b = b.ok_or_else(|| internal(format!("leaf {index} is missing")))?;
    leaf::decode_record(&b).map_err(|e| internal(format!("leaf {index}: {e}")))
}

/// A size parameter within the tree: absent means the whole tree.
pub(crate) fn size_param(name: &str, v: Option<u64>, size: u64) -> Result<u64, FqlError> {
    match v {
        None => Ok(size),
        Some(n) if n <= size => Ok(n),
        Some(n) => {
            Err(bad_request(format!("{name} {n} is larger than the tree ({size} leaves); ask get-sth for the size")))
        }
    }
}

/// The signed head JSON of `header`: this member's signature, and on a cluster every
/// other voter's that signed the same head (`crate::quorum`), with `members` (voters) and
/// `quorum` (whether a majority signed).
pub(crate) async fn sth_json(st: &AppState, header: Option<&BlockHeader>) -> Json {
    let head = header.map(crate::machine::tree_head).unwrap_or(tally_ledger::sth::TreeHead {
        tree_size: 0,
        timestamp_ms: 0,
        root: merkle::empty_root(),
    });
    let key = &st.member_key;
    let (sigs, members, quorum) = match &st.cluster {
        Some(c) => crate::quorum::collect(c, key, header.map_or(0, |h| h.height), &head).await,
        None => {
            let own =
                crate::quorum::MemberSignature { member: 1, public_key: key.public_key(), signature: key.sign(&head) };
            (vec![own], 1, true)
        }
    };
    let own_sig = tally_ledger::sth::digitally_signed(&key.sign(&head));
    json!({
        "tree_size": head.tree_size,
        "timestamp": head.timestamp_ms,
        "sha256_root_hash": B64.encode(head.root),
        "tree_head_signature": B64.encode(own_sig),
        "height": header.map_or(0, |h| h.height),
        "members": members,
        "quorum": quorum,
        "signatures": sigs.iter().map(|s| s.to_json()).collect::<Vec<_>>(),
    })
}

async fn get_sth(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let head = (|| {
        let (snap, _) = authenticated(&st, &headers)?;
        stored_head(&*snap)
    })();
    match head {
        Ok(head) => answer(Ok(sth_json(&st, head.as_ref()).await)),
        Err(e) => answer(Err(e)),
    }
}

#[derive(Deserialize)]
struct ConsistencyParams {
    first: u64,
    second: u64,
}

async fn get_sth_consistency(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    p: Result<Query<ConsistencyParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    answer((|| {
        let Query(p) = p.map_err(|e| bad_request(format!("{e}; send first=<old tree size>&second=<new tree size>")))?;
        let (snap, _) = authenticated(&st, &headers)?;
        let size = stored_head(&*snap)?.map_or(0, |h| h.tree_size);
        let second = size_param("second", Some(p.second), size)?;
        if p.first > second {
            return Err(bad_request(format!("first ({}) must not be larger than second ({second})", p.first)));
        }
        let proof = tree_of(&*snap, size).consistency_proof(p.first, second).map_err(internal)?;
        Ok(json!({"consistency": b64s(&proof), "first": p.first, "second": second}))
    })())
}

#[derive(Deserialize)]
struct ByHashParams {
    hash: String,
    tree_size: Option<u64>,
}

async fn get_proof_by_hash(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    p: Result<Query<ByHashParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    answer((|| {
        let Query(p) = p.map_err(|e| bad_request(format!("{e}; send hash=<base64 leaf hash>&tree_size=<n>")))?;
        let hash: Hash = B64
            .decode(p.hash.as_bytes())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad_request("hash must be a base64 SHA-256 leaf hash (32 bytes)"))?;
        let (snap, _) = authenticated(&st, &headers)?;
        let size = stored_head(&*snap)?.map_or(0, |h| h.tree_size);
        let tree_size = size_param("tree_size", p.tree_size, size)?;
        let found = st.leaf_index.find(&*snap, &hash, tree_size)?;
        let index =
            found.ok_or_else(|| not_found(format!("no leaf with this hash in the tree of {tree_size} leaves")))?;
        let tree = tree_of(&*snap, size);
        let proof = tree.inclusion_proof(index, tree_size).map_err(internal)?;
        Ok(json!({"leaf_index": index, "tree_size": tree_size, "audit_path": b64s(&proof)}))
    })())
}

#[derive(Deserialize)]
struct EntriesParams {
    start: u64,
    end: u64,
}

async fn get_entries(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    p: Result<Query<EntriesParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    answer((|| {
        let Query(p) = p.map_err(|e| bad_request(format!("{e}; send start=<first index>&end=<last index>")))?;
        crate::http::may_read_ledger(&st, &headers)?;
        let snap = st.store.snapshot().map_err(internal)?;
        let size = stored_head(&*snap)?.map_or(0, |h| h.tree_size);
        if p.start > p.end || p.start >= size {
            return Err(bad_request(format!(
                "start ({}) must be at most end ({}) and below the tree size ({size})",
                p.start, p.end
            )));
        }
        // Inclusive end, as in RFC 6962; cut to the tree and to ENTRIES_MAX.
        let end = p.end.min(size - 1).min(p.start + ENTRIES_MAX - 1);
        let entries = (p.start..=end)
            .map(|i| {
                let r = leaf_record(&*snap, i)?;
                Ok(json!({
                    "leaf_input": B64.encode(r.leaf.to_bytes()),
                    "extra_data": B64.encode(&r.input),
                    "effect_hashes": b64s(&r.effect_hashes),
                }))
            })
            .collect::<Result<Vec<_>, FqlError>>()?;
        Ok(json!({"entries": entries}))
    })())
}

use crate::ledger_revision::get_proof_by_revision;
