//! The peer port's HTTP API (member to member; never for clients).
//!
//! `POST /raft/{append,vote,pre-vote,transfer-leader,snapshot}` carry openraft's RPCs;
//! `POST /tally/submit` (a forwarded write: the input as the body, its tenant in the
//! `x-tally-tenant` header), `/tally/read-index` and `/tally/membership`
//! are served by the leader for the other members. Every request must come from a member:
//! with mutual TLS, one whose verified certificate names a member id in the Raft
//! membership (any CA-signed id while this member has no membership yet, i.e. waits to
//! be added), and a Raft message must be sent by the member it names as its sender;
//! without, it must carry the cluster token. An isolated member (fault injection)
//! refuses everything.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use openraft::errors::RaftError;
use openraft::raft::{SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::network::{parse_tenant, TENANT_HEADER, TOKEN_HEADER};
use crate::node::{MembershipOp, RaftNode, SubmitError, SubmitOk};
use crate::tls::PEER_MEMBER_HEADER;
use crate::{TypeConfig, Vote};

/// Largest peer request body read whole (append-entries: up to 64 entries of up to
/// 32 MiB). A snapshot is not read whole: its route streams it to a file, under
/// [`crate::snapshot_stream::SNAPSHOT_DATA_BYTES_MAX`].
pub const PEER_BODY_BYTES_MAX: usize = 4 << 30;

pub fn router(node: Arc<RaftNode>) -> Router {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/pre-vote", post(pre_vote))
        .route("/raft/transfer-leader", post(transfer_leader))
        .route("/raft/snapshot", post(snapshot))
        .route("/tally/submit", post(submit))
        .route("/tally/read-index", post(read_index))
        .route("/tally/membership", post(membership))
        .layer(DefaultBodyLimit::max(PEER_BODY_BYTES_MAX))
        .with_state(node)
}

/// Identity and isolation checks shared by every peer route (also used by tally-server's
/// extra peer routes).
#[allow(clippy::result_large_err)] // the error is the response itself, built once per refusal
pub fn admit(node: &RaftNode, headers: &HeaderMap) -> Result<(), Response> {
    if node.client.faults.isolated() {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "isolated (fault injection)").into_response());
    }
    if node.cfg.peer_tls.is_some() {
        return admit_member(node, headers);
    }
    let ok = headers.get(TOKEN_HEADER).map(|v| v.as_bytes() == node.cfg.token.as_bytes()).unwrap_or(false);
    if !ok {
        return Err((StatusCode::UNAUTHORIZED, "missing or wrong cluster token").into_response());
    }
    Ok(())
}

/// The member id of the request's verified certificate (set by the TLS peer port).
fn cert_member(headers: &HeaderMap) -> Option<u64> {
    headers.get(PEER_MEMBER_HEADER)?.to_str().ok()?.parse().ok()
}

#[allow(clippy::result_large_err)]
fn refuse(node: &RaftNode, status: StatusCode, why: String) -> Result<(), Response> {
    node.refusals.refuse(&why);
    Err((status, why).into_response())
}

#[allow(clippy::result_large_err)]
fn admit_member(node: &RaftNode, headers: &HeaderMap) -> Result<(), Response> {
    let Some(id) = cert_member(headers) else {
        return refuse(node, StatusCode::UNAUTHORIZED, "a request without a verified member certificate".into());
    };
    let m = node.metrics();
    let membership = m.membership_config.membership();
    if membership.nodes().next().is_some() && membership.get_node(&id).is_none() {
        let why = format!("member {id}'s certificate is valid, but member {id} is not in this cluster's membership");
        return refuse(node, StatusCode::FORBIDDEN, why);
    }
    Ok(())
}

/// With mutual TLS, a Raft message naming `claimed` as its sender (the candidate or
/// leader in its vote) must come over a connection whose certificate is member `claimed`'s.
#[allow(clippy::result_large_err)]
pub fn check_sender(node: &RaftNode, headers: &HeaderMap, claimed: u64) -> Result<(), Response> {
    if node.cfg.peer_tls.is_none() {
        return Ok(());
    }
    match cert_member(headers) {
        Some(id) if id == claimed => Ok(()),
        Some(id) => refuse(
            node,
            StatusCode::FORBIDDEN,
            format!("member {id}'s certificate sent a message claiming to be from member {claimed}"),
        ),
        None => refuse(node, StatusCode::UNAUTHORIZED, "a request without a verified member certificate".into()),
    }
}

/// The member a vote names: the candidate (vote requests) or the leader (appends, snapshots).
fn voter(v: &Vote) -> u64 {
    use openraft::vote::RaftLeaderId;
    *v.leader_id().node_id()
}

fn json<T: Serialize>(v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(b) => (StatusCode::OK, [("content-type", "application/json")], b).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[allow(clippy::result_large_err)]
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()).into_response())
}

macro_rules! guard {
    ($node:expr, $headers:expr, $body:expr) => {{
        if let Err(r) = admit(&$node, &$headers) {
            return r;
        }
        match parse($body.as_ref()) {
            Ok(v) => v,
            Err(r) => return r,
        }
    }};
    // A Raft message: also check the sender it claims.
    ($node:expr, $headers:expr, $body:expr, $sender:expr) => {{
        let req = guard!($node, $headers, $body);
        if let Err(r) = check_sender(&$node, &$headers, $sender(&req)) {
            return r;
        }
        req
    }};
}

/// A Raft record as the answer.
fn record(b: Vec<u8>) -> Response {
    (StatusCode::OK, [("content-type", "application/octet-stream")], b).into_response()
}

/// A request body that is not the Raft record it should be: most likely a member of an
/// earlier build (JSON), which a cluster must not mix with this one.
fn unreadable(what: &str, e: crate::wire::WireError) -> Response {
    let msg = format!("unreadable {what}: {e}; every member of a cluster must run the same Tally build");
    (StatusCode::BAD_REQUEST, msg).into_response()
}

async fn append(State(node): State<Arc<RaftNode>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = admit(&node, &headers) {
        return r;
    }
    let req = match crate::wire::decode_append(&body) {
        Ok(r) => r,
        Err(e) => return unreadable("append-entries request", e),
    };
    if let Err(r) = check_sender(&node, &headers, voter(&req.vote)) {
        return r;
    }
    record(crate::wire::encode_append_answer(&node.raft.append_entries(req).await))
}

async fn vote(State(node): State<Arc<RaftNode>>, headers: HeaderMap, body: Bytes) -> Response {
    let req = guard!(node, headers, body, |r: &VoteRequest<TypeConfig>| voter(&r.vote));
    json(&node.raft.vote(req).await)
}

async fn pre_vote(State(node): State<Arc<RaftNode>>, headers: HeaderMap, body: Bytes) -> Response {
    let req = guard!(node, headers, body, |r: &VoteRequest<TypeConfig>| voter(&r.vote));
    json(&node.raft.pre_vote(req).await)
}

async fn transfer_leader(State(node): State<Arc<RaftNode>>, headers: HeaderMap, body: Bytes) -> Response {
    let req = guard!(node, headers, body, |r: &TransferLeaderRequest<TypeConfig>| voter(r.from_leader()));
    let r: Result<TransferLeaderResponse<TypeConfig>, RaftError<TypeConfig>> =
        node.raft.handle_transfer_leader(req).await.map_err(RaftError::Fatal);
    json(&r)
}

/// A snapshot from the leader: its head is read and its sender checked, then its data is
/// streamed to a temporary file and checked (length, CRC-32, nothing after) before Raft
/// installs it; a cut or damaged one is refused (400) and the leader sends it again.
async fn snapshot(State(node): State<Arc<RaftNode>>, headers: HeaderMap, body: axum::body::Body) -> Response {
    use crate::snapshot_stream::{ReceiveError, Receiver};
    if let Err(r) = admit(&node, &headers) {
        return r;
    }
    let mut rx = Receiver::new(body.into_data_stream());
    let (vote, meta, len) = match rx.read_head().await {
        Ok(h) => h,
        Err(ReceiveError::Head(e)) => return unreadable("snapshot", e),
        Err(e) => return (StatusCode::BAD_REQUEST, format!("snapshot refused: {e}")).into_response(),
    };
    if let Err(r) = check_sender(&node, &headers, voter(&vote)) {
        return r;
    }
    let data = match rx.read_data(&node.snapshots, len).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, bytes = len, "refused a snapshot from the leader");
            return (StatusCode::BAD_REQUEST, format!("snapshot refused: {e}")).into_response();
        }
    };
    let path = data.path().to_path_buf();
    let snap = openraft::Snapshot { meta, snapshot: data };
    let r = node.raft.install_full_snapshot(vote, snap).await.map(|r: SnapshotResponse<TypeConfig>| r.vote);
    // Installed, the file was renamed to the current snapshot; otherwise it is dropped.
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(error = %e, path = %path.display(), "removing a received snapshot file")
        }
        _ => {}
    }
    record(crate::wire::encode_snapshot_answer(&r))
}

/// A write forwarded by a member, queued in the lane of the tenant that member
/// authenticated (the [`TENANT_HEADER`]; absent — a member of an earlier version — means
/// the shared default lane).
async fn submit(State(node): State<Arc<RaftNode>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = admit(&node, &headers) {
        return r;
    }
    let tenant = match headers.get(TENANT_HEADER).map(|v| v.to_str().ok().and_then(parse_tenant)) {
        None => tally_calvin::Tenant::DEFAULT,
        Some(Some(t)) => t,
        Some(None) => return (StatusCode::BAD_REQUEST, "unreadable tenant header").into_response(),
    };
    let input = body.to_vec();
    let deadline = Instant::now() + node.cfg.write_timeout;
    let r: Result<SubmitOk, SubmitError> = match node.leader_with_quorum() {
        Ok(true) => node.submit_here(tenant, input, deadline).await,
        Ok(false) => Err(SubmitError::NotLeader(node.metrics().current_leader)),
        Err(e) => Err(e),
    };
    record(crate::wire::encode_submit_answer(&r))
}

async fn read_index(State(node): State<Arc<RaftNode>>, headers: HeaderMap, body: Bytes) -> Response {
    let () = guard!(node, headers, body);
    let r = node.read_index_here(Instant::now() + node.cfg.write_timeout).await;
    json(&r)
}

async fn membership(State(node): State<Arc<RaftNode>>, headers: HeaderMap, body: Bytes) -> Response {
    let op: MembershipOp = guard!(node, headers, body);
    let r = tokio::time::timeout(Duration::from_secs(110), node.membership_here(op))
        .await
        .unwrap_or_else(|_| Err(SubmitError::Unavailable("membership change timed out".into())));
    json(&r)
}
