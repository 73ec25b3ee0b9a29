//! A ledger member of a replicated cluster: wiring of the Raft log (tally-raft) to the FQL
//! executor, the peer port, the client-port cluster API, and divergence detection.
//!
//! Client port additions (each needs the root key, as Bearer or Basic secret):
//! `GET /cluster/status`, `POST /cluster/members {"id", "peer"}` (add a member),
//! `DELETE /cluster/members/{id}`, `POST /cluster/root-key {"root_key"}` (rotate the
//! cluster's root key, `crate::root_key`), and with `--fault-injection` only
//! `POST /admin/faults {"isolate": bool, "latency_ms": n}`.
//!
//! Peer port additions: `POST /tally/sth-signature {"height"}` (`crate::quorum`), and
//! `POST /tally/head` and `/tally/header {"height"}`, used by the
//! divergence check: every second each member compares block headers with every peer at
//! the highest height both have; on a mismatch it finds the first divergent height, and
//! a member whose header disagrees with the majority stops at once, loudly, and leaves a
//! `DIVERGED` file that keeps it from starting again until an operator resyncs it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde_json::json;
use sha2::{Digest, Sha256};
use tally_raft::network::Faults;
use tally_raft::{ClusterConfig, RaftNode, SubmitError};
use tally_storage::Store;

use crate::http::AppState;
use tally_exec::machine::{block_key, FqlMachine};

/// How a member joins a cluster (`tally serve --node-id N --cluster …`).
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub node_id: u64,
    /// `id → peer address` of the members that form the cluster on first start.
    pub members: BTreeMap<u64, String>,
    /// This member's peer address when it is not in `members` (it waits to be added).
    pub peer_listen: Option<SocketAddr>,
    /// Added to every request to a peer (emulates distance between members): a default
    /// and per-peer values.
    pub peer_latency_ms: PeerLatency,
    /// Enables `POST /admin/faults` and `TALLY_TEST_DIVERGE_AT` (tests only).
    pub fault_injection: bool,
    pub snapshot_logs: Option<u64>,
    /// Snapshot every this many bytes of Raft log appended (`ClusterConfig::snapshot_log_bytes`).
    pub snapshot_log_bytes: Option<u64>,
    pub write_timeout_ms: Option<u64>,
    /// `ClusterConfig::work_ahead`, when not the default.
    pub work_ahead_ms: Option<u64>,
    /// Mutual TLS between members (`--peer-cert/--peer-key/--peer-ca`) instead of the
    /// token derived from the root key.
    pub peer_tls: Option<tally_raft::tls::PeerTlsFiles>,
    /// The peer port's connection cap and timeouts (`--peer-connections-max`, ...).
    pub peer_limits: tally_raft::peer_port::PeerPortLimits,
}

/// Parse `1=127.0.0.1:7001,2=127.0.0.1:7002`.
pub fn parse_members(s: &str) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').with_context(|| format!("`{part}`: expected ID=HOST:PORT"))?;
        let id: u64 = id.trim().parse().with_context(|| format!("`{part}`: the member id must be a number"))?;
        anyhow::ensure!(id > 0, "member ids start at 1");
        let addr = addr.trim();
        addr.parse::<SocketAddr>().with_context(|| format!("`{part}`: {addr} is not HOST:PORT"))?;
        anyhow::ensure!(out.insert(id, addr.to_string()).is_none(), "member {id} is listed twice");
    }
    anyhow::ensure!(!out.is_empty(), "--cluster lists no members");
    Ok(out)
}

/// Emulated one-way latency towards peers, in ms.
#[derive(Clone, Debug, Default)]
pub struct PeerLatency {
    pub default_ms: u64,
    pub per_peer_ms: BTreeMap<u64, u64>,
}

impl PeerLatency {
    fn max_ms(&self) -> u64 {
        self.per_peer_ms.values().copied().max().unwrap_or(0).max(self.default_ms)
    }
}

/// Parse `--peer-latency-ms`: `50` (every peer) or `2=50,3=150`.
pub fn parse_latency(s: &str) -> anyhow::Result<PeerLatency> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(PeerLatency { default_ms: ms, per_peer_ms: BTreeMap::new() });
    }
    let mut out = PeerLatency::default();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parsed = part.split_once('=').and_then(|(id, ms)| Some((id.trim().parse().ok()?, ms.trim().parse().ok()?)));
        let (id, ms) = parsed.with_context(|| format!("--peer-latency-ms: `{part}` is not ID=MS"))?;
        out.per_peer_ms.insert(id, ms);
    }
    Ok(out)
}

/// The secret members present to each other: derived from the root key they all share.
pub fn peer_token(root_key_hash: &str) -> String {
    hex::encode(Sha256::digest(format!("tally-peer-token/v1/{root_key_hash}").as_bytes()))
}

/// The cluster side of a running member, as the HTTP handlers see it.
pub struct Cluster {
    pub node: Arc<RaftNode>,
    pub faults: Arc<Faults>,
    pub fault_injection: bool,
    /// Complete quorum certificates of recent heads (`crate::quorum`).
    pub certs: crate::quorum::CertCache,
    /// The hash of this member's `--root-key`, if it was given: only a bootstrap
    /// proposal (and the plain-HTTP peer token's source), never what authenticates
    /// (`crate::root_key`).
    pub root_key_flag: Option<String>,
}

const DIVERGED_FILE: &str = "DIVERGED";

/// A cluster member's default epoch (`--epoch-ms`): the leader's batcher holds a batch
/// open this long after its first input, one Raft entry per batch. 3 ms, measured against
/// 4 and 5 on a local 3-member cluster once the Raft log stopped holding up openraft's
/// core for each fsync (docs/benchmarks.md, "The Raft log no longer holds up openraft's core; a cluster's epoch: 5 → 3 ms"): 1.2× the
/// transfers at 64 clients, about 5 % fewer at 100 transfers per request. (5 ms had
/// replaced 10 for the same reason earlier; 0 makes many small entries and was slower.)
pub const MEMBER_EPOCH_MS: u64 = 3;

/// Everything `serve` needs to run a member.
pub struct Member {
    pub cluster: Arc<Cluster>,
    pub peer_addr: SocketAddr,
    pub peer_router: Router,
    /// What the member's executor reports to the client port's cache of authenticated secrets.
    pub auth_changes: Arc<tally_fql::authcache::AuthChanges>,
    /// The replicated root key hash, kept by the member's executor.
    pub root_key: Arc<tally_fql::authcache::RootKeyHash>,
}

/// Open the Raft log and state machine in `data_dir` and start Raft.
/// Whether `log_dir` holds a single node's logged batches (a format-2 `input.log`, or a
/// segment holding a frame; a segment that cannot be read counts as holding one).
fn single_log_has_batches(log_dir: &Path) -> bool {
    let legacy = std::fs::metadata(log_dir.join("input.log")).is_ok_and(|m| m.len() > 0);
    legacy
        || tally_calvin::list_segments(log_dir)
            .is_ok_and(|segs| segs.iter().any(|s| tally_calvin::segment_holds_frames(&s.path).unwrap_or(true)))
}

pub async fn start_member(
    data_dir: &Path,
    opts: &ClusterOptions,
    epoch_ms: u64,
    store: Arc<dyn Store>,
    root_key_flag: Option<&str>,
    metrics: Arc<crate::metrics::Metrics>,
    apply_other_rules: bool,
) -> anyhow::Result<(Member, Arc<std::sync::atomic::AtomicU64>, Head)> {
    if let Ok(msg) = std::fs::read_to_string(data_dir.join(DIVERGED_FILE)) {
        anyhow::bail!(
            "this member stopped after its ledger diverged from the cluster:\n{msg}\nInspect it, then \
             start it from an empty data directory so it catches up from the others."
        );
    }
    if single_log_has_batches(&data_dir.join("log")) {
        anyhow::bail!(
            "{} holds a single-node input log; a cluster member must start from an empty data directory",
            data_dir.display()
        );
    }
    let peer_addr: SocketAddr = match (opts.members.get(&opts.node_id), opts.peer_listen) {
        (_, Some(a)) => a,
        (Some(a), None) => a.parse()?,
        (None, None) => anyhow::bail!(
            "member {} is not in --cluster; give its peer address with --peer-listen to join an existing cluster",
            opts.node_id
        ),
    };
    let mut machine = FqlMachine::open(store.clone())?;
    machine.apply_other_rules = apply_other_rules;
    let member_key = Arc::new(crate::datadir::member_key(data_dir)?);
    machine.signer = Some(member_key.clone());
    machine.publish = Some(crate::stream::hub().clone());
    machine.set_pacer(Box::new(crate::pace::WallPacer::default()));
    if opts.fault_injection {
        machine.diverge_at = std::env::var("TALLY_TEST_DIVERGE_AT").ok().and_then(|v| v.parse().ok());
    }
    let applied_ts = machine.applied_ts.clone();
    let head = machine.head.clone();
    let auth_changes = machine.auth_changes.clone();
    let root_key = machine.root_key.clone();
    let retention_due = machine.retention_due.clone();
    metrics.follow_retention(machine.retention_removed.clone());
    let raft_dir = data_dir.join("raft");
    std::fs::create_dir_all(&raft_dir)?;
    let machine = crate::metrics::MeteredMachine::new(machine, metrics);
    let sm =
        tally_raft::Machine::open(machine, &raft_dir.join("snapshot")).context("opening the raft state machine")?;
    let log = tally_raft::LogStore::open(&raft_dir.join("log.redb")).context("opening the raft log")?;
    let faults = Arc::new(Faults::default());
    faults.set_latency_ms(opts.peer_latency_ms.default_ms);
    for (peer, ms) in &opts.peer_latency_ms.per_peer_ms {
        faults.set_peer_latency_ms(*peer, *ms);
    }
    let initial = if opts.members.contains_key(&opts.node_id) { opts.members.clone() } else { BTreeMap::new() };
    let mut cfg = ClusterConfig::new(
        opts.node_id,
        initial,
        peer_token(root_key_flag.unwrap_or_default()),
        opts.peer_latency_ms.max_ms(),
    );
    cfg.epoch_ms = epoch_ms;
    cfg.idle_sweep = Some(tally_apply::IdleSweep::new(retention_due));
    if let Some(n) = opts.snapshot_logs {
        cfg.snapshot_logs = n.max(2);
    }
    if let Some(n) = opts.snapshot_log_bytes {
        cfg.snapshot_log_bytes = n;
    }
    if let Some(ms) = opts.work_ahead_ms {
        cfg.work_ahead = Duration::from_millis(ms.max(1));
    }
    if let Some(ms) = opts.write_timeout_ms {
        cfg.write_timeout = Duration::from_millis(ms);
    }
    if let Some(files) = &opts.peer_tls {
        cfg.peer_tls = Some(Arc::new(tally_raft::tls::PeerTls::load(files, opts.node_id)?));
    }
    let node = RaftNode::start(cfg, log, sm, faults.clone(), applied_ts.clone()).await?;
    let cluster = Arc::new(Cluster {
        node: node.clone(),
        faults,
        fault_injection: opts.fault_injection,
        certs: crate::quorum::CertCache::default(),
        root_key_flag: root_key_flag.map(String::from),
    });
    let signatures = crate::quorum::peer_routes(node.clone(), head.clone(), store.clone(), member_key);
    let peer_router =
        tally_raft::peer::router(node).merge(peer_routes(cluster.clone(), head.clone(), store)).merge(signatures);
    Ok((Member { cluster, peer_addr, peer_router, auth_changes, root_key }, applied_ts, head))
}

type Head = Arc<std::sync::Mutex<Option<tally_ledger::BlockHeader>>>;

#[derive(Clone)]
struct PeerState {
    cluster: Arc<Cluster>,
    head: Head,
    store: Arc<dyn Store>,
}

fn peer_routes(cluster: Arc<Cluster>, head: Head, store: Arc<dyn Store>) -> Router {
    Router::new()
        .route("/tally/head", post(peer_head))
        .route("/tally/header", post(peer_header))
        .with_state(PeerState { cluster, head, store })
}

async fn peer_head(State(st): State<PeerState>, headers: HeaderMap) -> Response {
    if let Err(r) = tally_raft::peer::admit(&st.cluster.node, &headers) {
        return r;
    }
    let h = st.head.lock().ok().and_then(|h| *h);
    let (height, hash) = h.map(|h| (h.height, hex::encode(h.hash()))).unwrap_or((0, hex::encode([0u8; 32])));
    axum::Json(json!({"height": height, "hash": hash})).into_response()
}

fn header_hash(store: &dyn Store, height: u64) -> Option<String> {
    let b = store.snapshot().ok()?.meta(&block_key(height)).ok()??;
    tally_ledger::BlockHeader::decode(&b).ok().map(|h| hex::encode(h.hash()))
}

async fn peer_header(State(st): State<PeerState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = tally_raft::peer::admit(&st.cluster.node, &headers) {
        return r;
    }
    let Ok(req) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "expected {\"height\": n}").into_response();
    };
    let height = req["height"].as_u64().unwrap_or(0);
    let hash = header_hash(&*st.store, height);
    axum::Json(json!({"height": height, "hash": hash})).into_response()
}

/// Client-port routes (merged into the main router; 404 on a single node).
pub fn client_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/cluster/status", get(status))
        .route("/cluster/members", post(add_member))
        .route("/cluster/members/{id}", delete(remove_member))
        .route("/cluster/root-key", post(crate::root_key::rotate))
        .route("/admin/faults", post(faults))
}

fn not_clustered() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"errors": [{"code": "not found",
        "description": "This server runs as a single node; start it with --cluster for the cluster API."}]})),
    )
        .into_response()
}

fn err_json(status: StatusCode, code: &str, desc: impl Into<String>) -> Response {
    (status, axum::Json(json!({"errors": [{"code": code, "description": desc.into()}]}))).into_response()
}

/// The root key (Bearer or Basic) guards cluster administration and fault injection.
fn is_root(st: &AppState, headers: &HeaderMap) -> bool {
    crate::http::secret_of(headers).is_some_and(|s| is_root_secret(st, &s))
}

/// Is `secret` the root key (on a member, the cluster's replicated one)?
pub(crate) fn is_root_secret(st: &AppState, secret: &str) -> bool {
    let h = hex::encode(Sha256::digest(secret.as_bytes()));
    use subtle::ConstantTimeEq;
    let root = st.root_key_hash.get();
    // No root key yet (a cluster before its bootstrap record applies): nobody is root.
    !root.is_empty() && h.as_bytes().ct_eq(root.as_bytes()).into()
}

async fn status(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(c) = &st.cluster else { return not_clustered() };
    // Membership, addresses and Raft state describe the deployment: administrators only.
    if !is_root(&st, &headers) {
        return err_json(StatusCode::UNAUTHORIZED, "unauthorized", "cluster status needs the root key");
    }
    let mut s = c.node.status();
    let head = st.head.lock().ok().and_then(|h| *h);
    s["head"] = json!({"height": head.map(|h| h.height).unwrap_or(0),
                       "hash": hex::encode(head.map(|h| h.hash()).unwrap_or([0; 32]))});
    s["isolated"] = json!(c.faults.isolated());
    // This member's tree-head signing key and every voter's (docs/ledger.md): pin them to
    // check get-sth's signatures and count a majority.
    s["member_key"] = json!(hex::encode(st.member_key.public_key()));
    s["member_keys"] = json!(crate::quorum::member_keys(c, &st.member_key).await);
    // Whether the cluster has a root key yet, and how this member's --root-key compares
    // with it (`crate::root_key`); never the hash itself.
    s["root_key"] = json!({"set": st.root_key_hash.is_set(),
        "flag": crate::root_key::flag_state(&st.root_key_hash, c.root_key_flag.as_deref())});
    axum::Json(s).into_response()
}

/// The client's error for a write or membership change the cluster did not take: a full
/// write queue on the leader answers as a single node's does.
pub fn submit_error(e: &SubmitError) -> tally_fql::FqlError {
    match e {
        SubmitError::Overloaded => crate::http::overloaded(),
        other => tally_fql::FqlError::new("unavailable", other.to_string()),
    }
}

pub fn submit_error_response(e: &SubmitError) -> Response {
    let err = submit_error(e);
    let status = StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    err_json(status, err.code, err.into_description())
}

async fn add_member(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(c) = &st.cluster else { return not_clustered() };
    if !is_root(&st, &headers) {
        return err_json(StatusCode::UNAUTHORIZED, "unauthorized", "cluster administration needs the root key");
    }
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let (Some(id), Some(peer)) = (req["id"].as_u64(), req["peer"].as_str()) else {
        return err_json(StatusCode::BAD_REQUEST, "bad request", "expected {\"id\": N, \"peer\": \"HOST:PORT\"}");
    };
    if peer.parse::<SocketAddr>().is_err() {
        return err_json(StatusCode::BAD_REQUEST, "bad request", format!("{peer} is not HOST:PORT"));
    }
    match c.node.add_member(id, peer.to_string()).await {
        Ok(()) => axum::Json(c.node.status()).into_response(),
        Err(e) => submit_error_response(&e),
    }
}

async fn remove_member(State(st): State<Arc<AppState>>, headers: HeaderMap, UrlPath(id): UrlPath<u64>) -> Response {
    let Some(c) = &st.cluster else { return not_clustered() };
    if !is_root(&st, &headers) {
        return err_json(StatusCode::UNAUTHORIZED, "unauthorized", "cluster administration needs the root key");
    }
    match c.node.remove_member(id).await {
        Ok(()) => axum::Json(c.node.status()).into_response(),
        Err(e) => submit_error_response(&e),
    }
}

async fn faults(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(c) = st.cluster.as_ref().filter(|c| c.fault_injection) else {
        return err_json(StatusCode::NOT_FOUND, "not found", "fault injection is off (start with --fault-injection)");
    };
    // Isolating a member is cluster administration, even on a test cluster.
    if !is_root(&st, &headers) {
        return err_json(StatusCode::UNAUTHORIZED, "unauthorized", "fault injection needs the root key");
    }
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if let Some(on) = req["isolate"].as_bool() {
        c.faults.set_isolated(on);
    }
    if let Some(ms) = req["latency_ms"].as_u64() {
        c.faults.set_latency_ms(ms);
    }
    axum::Json(json!({"isolated": c.faults.isolated()})).into_response()
}

/// Compare headers with every peer, forever; stop this process on a divergence where this
/// member is in the minority.
pub async fn watch_divergence(cluster: Arc<Cluster>, store: Arc<dyn Store>, data_dir: PathBuf) {
    let mut tick = tokio::time::interval(Duration::from_millis(1000));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = check_once(&cluster, &*store, &data_dir).await {
            tracing::debug!(error = %e, "divergence check skipped");
        }
    }
}

async fn peer_call(
    c: &Cluster,
    id: u64,
    addr: &str,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    Ok(c.node.client.post_json(id, addr, path, &body, Duration::from_secs(2)).await?)
}

async fn peer_hash(c: &Cluster, id: u64, addr: &str, height: u64) -> anyhow::Result<Option<String>> {
    let v = peer_call(c, id, addr, "/tally/header", json!({"height": height})).await?;
    Ok(v["hash"].as_str().map(String::from))
}

async fn check_once(c: &Cluster, store: &dyn Store, data_dir: &Path) -> anyhow::Result<()> {
    let m = c.node.metrics();
    let peers: Vec<(u64, String)> = m
        .membership_config
        .membership()
        .nodes()
        .filter(|(id, _)| **id != c.node.id)
        .map(|(id, n)| (*id, n.addr.clone()))
        .collect();
    let members = peers.len() + 1;
    let my_height = tally_exec::machine::meta_height(store)?;
    for (id, addr) in &peers {
        let Ok(head) = peer_call(c, *id, addr, "/tally/head", json!(null)).await else { continue };
        let peer_height = head["height"].as_u64().unwrap_or(0);
        let h = my_height.min(peer_height);
        if h == 0 {
            continue;
        }
        let theirs =
            if peer_height == h { head["hash"].as_str().map(String::from) } else { peer_hash(c, *id, addr, h).await? };
        if theirs.is_none() || theirs == header_hash(store, h) {
            continue;
        }
        // Headers chain: find the first height where they differ.
        let (mut lo, mut hi) = (1u64, h);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if peer_hash(c, *id, addr, mid).await? == header_hash(store, mid) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let d = lo;
        let mine = header_hash(store, d);
        let mut agree = 1; // this member
        let mut seen = Vec::new();
        for (pid, paddr) in &peers {
            if let Ok(ph) = peer_hash(c, *pid, paddr, d).await {
                if ph == mine {
                    agree += 1;
                }
                seen.push(format!("member {pid}: {}", ph.unwrap_or_else(|| "-".into())));
            }
        }
        if agree * 2 <= members {
            let msg = format!(
                "DIVERGENCE: member {} computed block {d} as {} but the majority disagrees ({}); first divergent height {d}",
                c.node.id,
                mine.unwrap_or_else(|| "-".into()),
                seen.join(", ")
            );
            tracing::error!("{msg}");
            eprintln!("tally: fatal: {msg}");
            let _ = std::fs::write(data_dir.join(DIVERGED_FILE), format!("{msg}\n"));
            std::process::exit(71);
        }
        tracing::error!(peer = id, height = d, "member {id} diverged from the majority at block {d}");
    }
    Ok(())
}

/// Run a member until SIGINT/SIGTERM.
pub async fn serve_member(
    cfg: &crate::ServeConfig,
    opts: &ClusterOptions,
    store: Arc<dyn Store>,
    root_key_flag: Option<String>,
    metrics: Arc<crate::metrics::Metrics>,
) -> anyhow::Result<()> {
    let (member, applied_ts, head) = start_member(
        &cfg.data_dir,
        opts,
        cfg.epoch_ms.unwrap_or(MEMBER_EPOCH_MS),
        store.clone(),
        root_key_flag.as_deref(),
        metrics.clone(),
        cfg.apply_other_rules,
    )
    .await?;
    let Member { cluster, peer_addr, peer_router, auth_changes, root_key } = member;
    tokio::spawn(crate::root_key::bootstrap(cluster.node.clone(), root_key.clone(), root_key_flag));
    let peer_listener = crate::conn::bind(peer_addr).with_context(|| format!("binding the peer port {peer_addr}"))?;
    // Mutual TLS when configured (the node's peer TLS), plain HTTP otherwise; the same
    // connection cap and timeouts either way.
    let peer_task = tokio::spawn(tally_raft::peer_port::serve(
        peer_listener,
        peer_router,
        cluster.node.clone(),
        opts.peer_limits.clone(),
    ));
    let clock = Arc::new(tally_calvin::Clock::new(applied_ts.load(Ordering::Acquire)));
    let leaf_index = crate::leaf_index::LeafIndex::open(&cfg.data_dir)?;
    leaf_index.spawn(&store).context("starting the leaf-hash index's thread")?;
    let state = Arc::new(AppState {
        store: store.clone(),
        sequencer: std::sync::Mutex::new(None),
        applied_ts,
        clock,
        head,
        root_key_hash: root_key,
        body_bytes_max: cfg.body_bytes_max,
        cluster: Some(cluster.clone()),
        jwks: Arc::new(crate::jwt::JwksCache::new(cfg.jwks_allow_private)?),
        inflight: crate::inflight::InFlight::with_requests_max(cfg.inflight_bytes_max, cfg.conn.requests_max),
        body_read_timeout: cfg.conn.body_read_timeout,
        member_key: Arc::new(crate::datadir::member_key(&cfg.data_dir)?),
        auth_cache: tally_fql::authcache::AuthCache::new(auth_changes),
        metrics,
        leaf_index,
    });
    crate::node::spawn_metrics_listener(cfg.metrics_listen, &state).await?;
    tokio::spawn(watch_divergence(cluster.clone(), store, cfg.data_dir.clone()));
    let app = crate::http::App::new(state.clone());
    let listener = crate::conn::bind(cfg.listen).with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let tls = crate::tls::client_port(cfg.tls.as_ref(), addr)?;
    let scheme = if tls.is_some() { " (https)" } else { "" };
    println!("tally member {} listening on {addr}{scheme} (peer port {peer_addr})", opts.node_id);
    println!("web console: {}", crate::console::url(addr, tls.is_some()));
    let started = Instant::now();
    crate::inflight::spawn_trimmer(state.inflight.clone());
    let shutdown = crate::node::shutdown_signal();
    crate::conn::serve(listener, app, cfg.conn.clone(), state.inflight.clone(), tls, shutdown).await?;
    peer_task.abort();
    cluster.node.shutdown().await;
    tracing::info!(uptime_s = started.elapsed().as_secs(), "member stopped");
    println!("tally stopped");
    Ok(())
}
