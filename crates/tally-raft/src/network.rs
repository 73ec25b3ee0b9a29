//! The peer transport: HTTP/1.1 POSTs between members' peer ports. What replicates the
//! log — append-entries, snapshots, forwarded writes and their answers — travels as Raft
//! records (`crate::wire`, binary, versioned); elections, leader transfer, read index and
//! membership calls (rare, small, no batches) as JSON. Every request is bounded in time
//! and authenticated: by mutual TLS with per-member certificates when configured (see
//! [`crate::tls`]; no secret on the wire), else by the cluster token (derived from the
//! root key, which every member then shares) in a header.
//!
//! [`Faults`] injects per-peer latency (to emulate members 50–150 ms apart) and, for the
//! fault tests, isolation of this member: while isolated it neither sends nor accepts peer
//! traffic, exactly like a member cut off by the network.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use openraft::errors::{NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::snapshot_stream::PeerBody;
use crate::tls::{PeerConnector, PeerTls};
use crate::{Snapshot, SnapshotData, TypeConfig, Vote};

/// Header carrying the cluster token on every peer request.
pub const TOKEN_HEADER: &str = "x-tally-peer-token";
/// Header carrying the tenant of a forwarded write, `{database id}/{weight}` (see
/// [`tenant_header`]), so the leader queues it in that tenant's lane.
pub const TENANT_HEADER: &str = "x-tally-tenant";

/// The [`TENANT_HEADER`] value for `t`.
pub fn tenant_header(t: tally_calvin::Tenant) -> String {
    format!("{}/{}", t.id, t.weight)
}

/// Parse a [`TENANT_HEADER`] value; None if it is not `{u64}/{u32}`.
pub fn parse_tenant(v: &str) -> Option<tally_calvin::Tenant> {
    let (id, weight) = v.trim().split_once('/')?;
    Some(tally_calvin::Tenant { id: id.parse().ok()?, weight: weight.parse().ok()? })
}

/// Injected network faults, shared by the client and the peer server of one member.
#[derive(Default)]
pub struct Faults {
    isolated: AtomicBool,
    /// Added to every request this member sends (ms), unless a per-peer value is set.
    latency_ms: AtomicU64,
    per_peer_ms: RwLock<BTreeMap<u64, u64>>,
}

impl Faults {
    pub fn set_isolated(&self, on: bool) {
        self.isolated.store(on, Ordering::Release);
    }
    pub fn isolated(&self) -> bool {
        self.isolated.load(Ordering::Acquire)
    }
    pub fn set_latency_ms(&self, ms: u64) {
        self.latency_ms.store(ms, Ordering::Release);
    }
    pub fn set_peer_latency_ms(&self, peer: u64, ms: u64) {
        if let Ok(mut m) = self.per_peer_ms.write() {
            m.insert(peer, ms);
        }
    }
    pub fn latency_for(&self, peer: u64) -> Duration {
        let per = self.per_peer_ms.read().ok().and_then(|m| m.get(&peer).copied());
        Duration::from_millis(per.unwrap_or_else(|| self.latency_ms.load(Ordering::Acquire)))
    }
    /// The largest latency configured towards any peer (to size Raft timeouts).
    pub fn latency_max_ms(&self) -> u64 {
        let per = self.per_peer_ms.read().ok().and_then(|m| m.values().copied().max()).unwrap_or(0);
        per.max(self.latency_ms.load(Ordering::Acquire))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("peer {0} is unreachable: {1}")]
    Unreachable(u64, String),
    #[error("peer {0} did not answer within {1:?}")]
    Timeout(u64, Duration),
    #[error("peer {0} answered HTTP {1}: {2}")]
    Status(u64, u16, String),
    #[error("peer {0} sent an unreadable answer: {1}")]
    Decode(u64, String),
}

type Http = Client<PeerConnector, PeerBody>;

fn http_client(conn: PeerConnector) -> Http {
    Client::builder(hyper_util::rt::TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(conn)
}

/// An HTTP client for peer ports; cheap to clone (one connection pool, or with mutual
/// TLS one per target member, whose connector checks that member's certificate).
#[derive(Clone)]
pub struct PeerClient {
    http: Http,
    /// Sent in [`TOKEN_HEADER`] when there is no mutual TLS.
    token: Option<Arc<str>>,
    tls: Option<Arc<PeerTls>>,
    by_target: Arc<RwLock<BTreeMap<u64, Http>>>,
    pub faults: Arc<Faults>,
}

impl PeerClient {
    /// Members authenticated by the shared cluster token.
    pub fn new(token: &str, faults: Arc<Faults>) -> PeerClient {
        PeerClient::with_tls(token, None, faults)
    }

    /// With `tls`, members authenticate by certificate and `token` is never sent.
    pub fn with_tls(token: &str, tls: Option<Arc<PeerTls>>, faults: Arc<Faults>) -> PeerClient {
        PeerClient {
            http: http_client(PeerConnector::plain()),
            token: tls.is_none().then(|| token.into()),
            tls,
            by_target: Arc::default(),
            faults,
        }
    }

    fn http_for(&self, target: u64) -> Result<Http, NetError> {
        let Some(tls) = &self.tls else { return Ok(self.http.clone()) };
        if let Some(c) = self.by_target.read().ok().and_then(|m| m.get(&target).cloned()) {
            return Ok(c);
        }
        let conn = tls.connector(target).map_err(|e| NetError::Unreachable(target, e.to_string()))?;
        let c = http_client(conn);
        if let Ok(mut m) = self.by_target.write() {
            m.insert(target, c.clone());
        }
        Ok(c)
    }

    /// POST `body` to `http://{addr}{path}` with extra headers; the answer's bytes.
    pub async fn post_bytes(
        &self,
        target: u64,
        addr: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Bytes, NetError> {
        let body = Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed_unsync();
        self.post_body(target, addr, path, headers, body, timeout).await
    }

    /// [`post_bytes`](Self::post_bytes) with a body that may stream.
    pub async fn post_body(
        &self,
        target: u64,
        addr: &str,
        path: &str,
        headers: &[(&str, String)],
        body: PeerBody,
        timeout: Duration,
    ) -> Result<Bytes, NetError> {
        if self.faults.isolated() {
            return Err(NetError::Unreachable(target, "this member is isolated (fault injection)".into()));
        }
        let delay = self.faults.latency_for(target);
        let http = self.http_for(target)?;
        let mut req = hyper::Request::post(format!("http://{addr}{path}"));
        if let Some(token) = &self.token {
            req = req.header(TOKEN_HEADER, &**token);
        }
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req.body(body).map_err(|e| NetError::Unreachable(target, e.to_string()))?;
        let call = async {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let resp = http.request(req).await.map_err(|e| NetError::Unreachable(target, e.to_string()))?;
            let status = resp.status().as_u16();
            let body =
                resp.into_body().collect().await.map_err(|e| NetError::Unreachable(target, e.to_string()))?.to_bytes();
            // The answer travels back over the same emulated distance.
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if status != 200 {
                return Err(NetError::Status(target, status, String::from_utf8_lossy(&body).into_owned()));
            }
            Ok(body)
        };
        tokio::time::timeout(timeout, call).await.map_err(|_| NetError::Timeout(target, timeout))?
    }

    pub async fn post_json<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        target: u64,
        addr: &str,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, NetError> {
        let body = serde_json::to_vec(req).map_err(|e| NetError::Decode(target, e.to_string()))?;
        let b = self.post_bytes(target, addr, path, &[], body, timeout).await?;
        serde_json::from_slice(&b).map_err(|e| NetError::Decode(target, e.to_string()))
    }
}

/// Creates one [`PeerConn`] per target for openraft's replication tasks.
#[derive(Clone)]
pub struct NetworkFactory {
    pub client: PeerClient,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConn;

    async fn new_client(&mut self, target: u64, node: &openraft::BasicNode) -> PeerConn {
        PeerConn { target, addr: node.addr.clone(), client: self.client.clone() }
    }
}

pub struct PeerConn {
    target: u64,
    addr: String,
    client: PeerClient,
}

fn rpc_err(e: NetError) -> RPCError<TypeConfig> {
    match e {
        NetError::Unreachable(..) => RPCError::Unreachable(Unreachable::from_string(e)),
        _ => RPCError::Network(NetworkError::from_string(e)),
    }
}

impl PeerConn {
    async fn rpc<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let r: Result<Resp, RaftError<TypeConfig>> =
            self.client.post_json(self.target, &self.addr, path, req, option.hard_ttl()).await.map_err(rpc_err)?;
        r.map_err(|e| RPCError::Network(NetworkError::from_string(format!("peer {}: {e}", self.target))))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerConn {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let body = crate::wire::encode_append(&rpc);
        let b = self
            .client
            .post_bytes(self.target, &self.addr, "/raft/append", &[], body, option.hard_ttl())
            .await
            .map_err(rpc_err)?;
        let answer =
            crate::wire::decode_append_answer(&b).map_err(|e| rpc_err(NetError::Decode(self.target, e.to_string())))?;
        answer.map_err(|e| RPCError::Network(NetworkError::from_string(format!("peer {}: {e}", self.target))))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc("/raft/vote", &rpc, &option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc("/raft/pre-vote", &rpc, &option).await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc("/raft/transfer-leader", &req, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let timeout = snapshot_timeout(snapshot.snapshot.len()).max(option.hard_ttl());
        let body = crate::snapshot_stream::send_body(&vote, &snapshot.meta, snapshot.snapshot);
        let send = self.client.post_body(self.target, &self.addr, "/raft/snapshot", &[], body, timeout);
        tokio::pin!(cancel);
        let body = tokio::select! {
            closed = &mut cancel => return Err(StreamingError::Closed(closed)),
            r = send => r.map_err(|e| match rpc_err(e) {
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                other => StreamingError::Network(NetworkError::from_string(other)),
            })?,
        };
        let r = crate::wire::decode_snapshot_answer(&body)
            .map_err(|e| StreamingError::Network(NetworkError::from_string(e)))?;
        r.map(|vote| SnapshotResponse { vote }).map_err(|e| StreamingError::Network(NetworkError::from_string(e)))
    }
}

/// How long sending a snapshot of `bytes` may take: a minute, plus a second for every
/// 8 MiB (a slow 64 Mbit/s link), so that a large snapshot is not cut off half-way and
/// sent again forever.
pub fn snapshot_timeout(bytes: u64) -> Duration {
    Duration::from_secs(60 + bytes / (8 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_calvin::Tenant;

    #[test]
    fn tenant_header_round_trips() {
        for t in [Tenant::DEFAULT, Tenant { id: u64::MAX, weight: 500 }, Tenant { id: 42, weight: 0 }] {
            assert_eq!(parse_tenant(&tenant_header(t)), Some(t));
        }
        for bad in ["", "7", "7/", "/3", "x/3", "7/y", "-1/3", "7/3/1", "7/99999999999"] {
            assert_eq!(parse_tenant(bad), None, "{bad:?}");
        }
    }
}
