//! Quorum certificates: a tree head carrying the signatures of a majority of the cluster's
//! members (docs/ledger.md, "Quorum certificate").
//!
//! Every member's executor signs the head after each block it applies and stores that
//! signature in its own meta table (`tlog/s/…`, outside the block header, so nothing
//! replicated or hashed depends on who signed). When a client asks a member for
//! `get-sth`, the member asks every other voter over the peer port for its stored
//! signature of the same height (`POST /tally/sth-signature {"height"}`), keeps those that
//! verify over its own head's bytes, and answers them all. A peer that has not applied
//! that height yet waits for it up to [`PEER_WAIT`]; a peer that computed another head
//! (a divergence) signs other bytes and is left out (and logged). Signatures are gathered
//! when asked, never written back into the state store: they cannot reach the executor.
//!
//! Bounds: one request per voter, each within [`PEER_TIMEOUT`]; complete certificates of
//! the last [`CACHE_HEADS`] heads are kept in memory so a polling client costs no peer calls.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value as Json};
use tally_ledger::sth::{self, MemberKey, TreeHead};
use tally_ledger::writer;
use tally_raft::RaftNode;
use tally_storage::Store;

use crate::cluster::Cluster;

/// How long a peer waits to reach the asked height before answering without a signature.
pub const PEER_WAIT: Duration = Duration::from_millis(500);
/// The asking member's deadline for each peer's answer.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(2);
/// Complete certificates kept in memory.
pub const CACHE_HEADS: usize = 16;

/// One member's signature of a head, as `get-sth` lists it.
#[derive(Clone, Debug)]
pub struct MemberSignature {
    pub member: u64,
    pub public_key: [u8; 32],
    pub signature: [u8; 64],
}

impl MemberSignature {
    pub fn to_json(&self) -> Json {
        json!({
            "member": self.member,
            "public_key": B64.encode(self.public_key),
            "key_id": B64.encode(sth::key_id(&self.public_key)),
            "tree_head_signature": B64.encode(sth::digitally_signed(&self.signature)),
        })
    }
}

/// Complete certificates by tree size (heads whose every voter signed).
#[derive(Default)]
pub struct CertCache {
    by_size: Mutex<BTreeMap<u64, (TreeHead, Vec<MemberSignature>)>>,
}

impl CertCache {
    fn get(&self, head: &TreeHead) -> Option<Vec<MemberSignature>> {
        let c = self.by_size.lock().ok()?;
        c.get(&head.tree_size).filter(|(h, _)| h == head).map(|(_, s)| s.clone())
    }

    fn put(&self, head: TreeHead, sigs: Vec<MemberSignature>) {
        if let Ok(mut c) = self.by_size.lock() {
            c.insert(head.tree_size, (head, sigs));
            while c.len() > CACHE_HEADS {
                c.pop_first();
            }
        }
    }
}

/// A member's signatures of `head` (the head after block `height`): its own, then every
/// other voter's that verifies, by member id; the number of voters; and whether a
/// majority of the voters signed (a member that is not a voter yet, being added, lists
/// its own signature but it does not count).
pub async fn collect(
    cluster: &Cluster,
    own: &MemberKey,
    height: u64,
    head: &TreeHead,
) -> (Vec<MemberSignature>, usize, bool) {
    let (sigs, voters) = gather(cluster, own, height, head).await;
    let signed = sigs.iter().filter(|s| voters.contains(&s.member)).count();
    let quorum = signed * 2 > voters.len();
    (sigs, voters.len(), quorum)
}

async fn gather(cluster: &Cluster, own: &MemberKey, height: u64, head: &TreeHead) -> (Vec<MemberSignature>, Vec<u64>) {
    let m = cluster.node.metrics();
    let membership = m.membership_config.membership();
    let voters: Vec<(u64, String)> = membership
        .voter_ids()
        .map(|id| (id, membership.get_node(&id).map(|n| n.addr.clone()).unwrap_or_default()))
        .collect();
    let me = cluster.node.id;
    let mine = MemberSignature { member: me, public_key: own.public_key(), signature: own.sign(head) };
    let voter_ids: Vec<u64> = voters.iter().map(|(id, _)| *id).collect();
    if let Some(sigs) = cluster.certs.get(head) {
        return (sigs, voter_ids);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (id, addr) in voters.iter().filter(|(id, _)| *id != me).cloned() {
        let node = cluster.node.clone();
        tasks.spawn(async move { (id, ask(&node, id, &addr, height).await) });
    }
    let mut sigs = vec![mine];
    while let Some(done) = tasks.join_next().await {
        let Ok((id, answer)) = done else { continue };
        match answer {
            Ok(Some(s)) if sth::verify(&s.public_key, head, &s.signature) => sigs.push(s),
            Ok(Some(_)) => tracing::warn!(
                member = id,
                height,
                "member {id}'s signature of the head after block {height} is over another head; left out"
            ),
            Ok(None) => {}
            Err(e) => tracing::debug!(member = id, error = %e, "no tree head signature from member {id}"),
        }
    }
    sigs.sort_by_key(|s| s.member);
    if voters.iter().all(|(id, _)| sigs.iter().any(|s| s.member == *id)) {
        cluster.certs.put(*head, sigs.clone());
    }
    (sigs, voter_ids)
}

async fn ask(node: &RaftNode, id: u64, addr: &str, height: u64) -> anyhow::Result<Option<MemberSignature>> {
    let v: Json =
        node.client.post_json(id, addr, "/tally/sth-signature", &json!({"height": height}), PEER_TIMEOUT).await?;
    let field = |name: &str| v[name].as_str().and_then(|s| B64.decode(s).ok());
    let (Some(pk), Some(sig)) = (field("public_key"), field("signature")) else { return Ok(None) };
    let public_key =
        pk.try_into().map_err(|_| anyhow::anyhow!("member {id} sent a public key that is not 32 bytes"))?;
    let signature = sig.try_into().map_err(|_| anyhow::anyhow!("member {id} sent a signature that is not 64 bytes"))?;
    Ok(Some(MemberSignature { member: id, public_key, signature }))
}

/// Every voter's current public key (this member's own, the others' asked over the peer
/// port; a member that does not answer is missing), for `/cluster/status`.
pub async fn member_keys(cluster: &Cluster, own: &MemberKey) -> BTreeMap<u64, String> {
    let m = cluster.node.metrics();
    let membership = m.membership_config.membership();
    let mut tasks = tokio::task::JoinSet::new();
    for id in membership.voter_ids().filter(|id| *id != cluster.node.id) {
        let addr = membership.get_node(&id).map(|n| n.addr.clone()).unwrap_or_default();
        let node = cluster.node.clone();
        tasks.spawn(async move {
            let v: anyhow::Result<Json> = node
                .client
                .post_json(id, &addr, "/tally/sth-signature", &json!({"height": 0}), PEER_TIMEOUT)
                .await
                .map_err(Into::into);
            (id, v.ok().and_then(|v| v["member_key"].as_str().map(String::from)))
        });
    }
    let mut keys = BTreeMap::from([(cluster.node.id, hex::encode(own.public_key()))]);
    while let Some(done) = tasks.join_next().await {
        if let Ok((id, Some(k))) = done {
            keys.insert(id, k);
        }
    }
    keys
}

type Head = Arc<Mutex<Option<tally_ledger::BlockHeader>>>;

#[derive(Clone)]
struct PeerState {
    node: Arc<RaftNode>,
    head: Head,
    store: Arc<dyn Store>,
    key: Arc<MemberKey>,
}

/// The peer-port route that answers this member's stored signature of a height.
pub fn peer_routes(node: Arc<RaftNode>, head: Head, store: Arc<dyn Store>, key: Arc<MemberKey>) -> Router {
    Router::new().route("/tally/sth-signature", post(peer_sth_signature)).with_state(PeerState {
        node,
        head,
        store,
        key,
    })
}

fn applied_height(head: &Head) -> u64 {
    head.lock().ok().and_then(|h| h.map(|h| h.height)).unwrap_or(0)
}

/// `{"height"}` → `{"member", "height" (applied), "member_key" (hex, current),
/// "public_key", "signature"}` (base64; absent when this member has not signed that height).
async fn peer_sth_signature(State(st): State<PeerState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = tally_raft::peer::admit(&st.node, &headers) {
        return r;
    }
    let Some(height) = serde_json::from_slice::<Json>(&body).ok().and_then(|v| v["height"].as_u64()) else {
        return (StatusCode::BAD_REQUEST, "expected {\"height\": n}").into_response();
    };
    let deadline = Instant::now() + PEER_WAIT;
    while applied_height(&st.head) < height && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut out = json!({
        "member": st.node.id,
        "height": applied_height(&st.head),
        "member_key": hex::encode(st.key.public_key()),
    });
    let signed = if height == 0 {
        // The empty tree's head is the same for everyone; no block stored a signature.
        let empty = TreeHead { tree_size: 0, timestamp_ms: 0, root: tally_ledger::merkle::empty_root() };
        Some((st.key.public_key().to_vec(), st.key.sign(&empty).to_vec()))
    } else {
        let stored = st.store.snapshot().ok().and_then(|s| s.meta(&writer::sig_key(height)).ok().flatten());
        stored.filter(|b| b.len() == 96).map(|b| (b[..32].to_vec(), b[32..].to_vec()))
    };
    if let Some((pk, sig)) = signed {
        out["public_key"] = json!(B64.encode(pk));
        out["signature"] = json!(B64.encode(sig));
    }
    axum::Json(out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(size: u64, root: u8) -> TreeHead {
        TreeHead { tree_size: size, timestamp_ms: size * 10, root: [root; 32] }
    }

    #[test]
    fn the_cache_answers_only_the_same_head_and_keeps_the_newest() {
        let key = MemberKey::from_seed(&[3; 32]).unwrap();
        let sig =
            |h: &TreeHead| vec![MemberSignature { member: 1, public_key: key.public_key(), signature: key.sign(h) }];
        let cache = CertCache::default();
        for size in 1..=(CACHE_HEADS as u64 + 4) {
            cache.put(head(size, 1), sig(&head(size, 1)));
        }
        // The oldest heads are dropped first; the newest are kept.
        assert!(cache.get(&head(1, 1)).is_none());
        assert!(cache.get(&head(4, 1)).is_none());
        let kept = cache.get(&head(5, 1)).unwrap();
        assert!(sth::verify(&kept[0].public_key, &head(5, 1), &kept[0].signature));
        // Another head of the same size (a diverged member's) is never answered from it.
        assert!(cache.get(&head(5, 2)).is_none());
        // The signature listing follows docs/ledger.md.
        let j = kept[0].to_json();
        assert_eq!(j["member"], 1);
        assert_eq!(B64.decode(j["tree_head_signature"].as_str().unwrap()).unwrap().len(), 68);
    }
}
