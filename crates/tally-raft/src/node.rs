//! A ledger member: the Raft instance, the leader's batcher (the sequencer), write
//! forwarding, linearizable read indexes and membership changes.
//!
//! Writes: on the leader, inputs wait in a [`FairInbox`] (one lane per tenant database,
//! weighted by priority, bounded; see [`tally_calvin::fair`]), from which the batcher
//! takes a batch every `epoch_ms` (or at a size bound), stamps it with the leader's clock
//! and proposes it as one Raft entry; each submitter gets its input's output as soon as
//! the executor releases it, partway through the entry (see [`crate::early`]). So, as on
//! a single node, a tenant flooding writes fills only its weighted share of each batch, a
//! quiet tenant's write does not wait behind the flood's backlog, and it does not wait
//! for the flood's share of its own batch either. On a follower, the input is forwarded
//! to the leader's peer port with its tenant (so it queues in its own lane there), and
//! the answer is returned once the input is visible on this member too (so a client reads
//! its own writes where it wrote).
//!
//! Availability: every wait is bounded by `write_timeout`. A leader that has not heard from
//! a majority recently (and still has not after one more staleness window), or a follower
//! that cannot reach a leader, answers [`SubmitError::Unavailable`]; a proposal whose fate is unknown when time runs
//! out answers [`SubmitError::Ambiguous`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::errors::{ClientWriteError, RaftError};
use openraft::impls::ProgressResponder;
use openraft::{BasicNode, ChangeMembers, ReadPolicy, ServerState};
use serde::{Deserialize, Serialize};
use tally_calvin::{Batch, BatchLimits, Decoded, FairInbox, Pushed, Tenant};
use tokio::sync::Semaphore;
// tokio's clock, so a simulation with paused time controls every deadline.
use tokio::time::Instant;

use crate::early::Early;
use crate::network::{tenant_header, Faults, NetError, NetworkFactory, PeerClient, TENANT_HEADER};
use crate::{BatchRequest, LogStore, Machine, Raft};

#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub node_id: u64,
    /// The members that form a fresh cluster (`--cluster`); empty for a member that waits
    /// to be added.
    pub initial_members: BTreeMap<u64, String>,
    pub epoch_ms: u64,
    pub batch_inputs_max: usize,
    pub batch_bytes_max: usize,
    /// Inputs waiting for a batch on the leader, at most (the fair inbox's capacity).
    pub queue_inputs_max: usize,
    /// Bytes of inputs waiting on the leader, at most (a lone input may be larger).
    pub queue_bytes_max: usize,
    /// Longest an input may wait on the leader for its batch; past it, it is answered
    /// `Overloaded` and never proposed (as on a single node). Below the write timeout, so
    /// a submitter hears for certain that its write was not applied instead of timing out
    /// with an ambiguous answer while the input may still be proposed.
    pub queue_wait_max: Duration,
    /// Batches proposed and not yet applied, at most. The batcher takes a batch only when
    /// one may be proposed, so while the pipeline is full inputs keep waiting in the fair
    /// inbox, where a quiet tenant can still overtake a backlog.
    pub batches_in_flight_max: usize,
    /// An input that arrives while no batch is in flight is proposed at once rather than
    /// held its epoch (the epoch gathers inputs only while the pipeline is busy). Off,
    /// every batch waits its epoch (tests that need inputs to share a batch).
    pub idle_at_once: bool,
    /// While tenants compete, the estimated apply work the leader keeps cut into batches
    /// and not yet applied, at most (costs measured on the leader; at least one input per
    /// batch). The rest waits in the fair inbox, where a tenant with nothing queued still
    /// goes first. It should cover an epoch and a replication round trip, or the executor
    /// idles while a batch commits.
    pub work_ahead: Duration,
    /// Bound on every write (forwarding, commit, local apply) and membership change.
    pub write_timeout: Duration,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: (u64, u64),
    /// Build a snapshot (and allow purging the log before it) every this many entries.
    pub snapshot_logs: u64,
    /// ... or every this many bytes of entries appended, whichever comes first: entries
    /// are epoch batches of any size up to `batch_bytes_max`, so a count alone does not
    /// bound the log's disk use.
    pub snapshot_log_bytes: u64,
    /// Secret shared by members, sent with every peer request (unless `peer_tls`).
    pub token: String,
    /// Mutual TLS with per-member certificates instead of the token (see `crate::tls`).
    pub peer_tls: Option<Arc<crate::tls::PeerTls>>,
    /// The leader's clock for batch timestamps, in microseconds since the Unix epoch (the
    /// simulation replaces it with its virtual clock).
    pub clock: fn() -> u64,
    /// The leader proposes an empty batch for the executor's retention sweep when its
    /// inbox has been idle this long and the executor says a sweep could remove something
    /// (None: never). The same rule as a single node's sequencer.
    pub idle_sweep: Option<tally_calvin::IdleSweep>,
}

impl ClusterConfig {
    /// Defaults sized for members `latency_ms` apart (one way; a round trip is twice that).
    /// openraft bounds each replication request by the heartbeat interval, so the interval
    /// must exceed a round trip with room to spare.
    pub fn new(node_id: u64, initial_members: BTreeMap<u64, String>, token: String, latency_ms: u64) -> Self {
        let election_min = 600.max(latency_ms * 16);
        let write_timeout = Duration::from_millis(5_000.max(latency_ms * 40));
        ClusterConfig {
            node_id,
            initial_members,
            epoch_ms: 10,
            batch_inputs_max: 8192,
            batch_bytes_max: 32 << 20,
            queue_inputs_max: 65_536,
            // As on a single node: four full single-node batches.
            queue_bytes_max: 256 << 20,
            // A single node's 10 s, or half the write timeout if that is shorter (2.5 s
            // by default): the other half is for the commit and the answer.
            queue_wait_max: (write_timeout / 2).min(Duration::from_secs(10)),
            batches_in_flight_max: 64,
            idle_at_once: true,
            work_ahead: Duration::from_millis(7 + latency_ms * 4),
            write_timeout,
            heartbeat_ms: 100.max(latency_ms * 4),
            election_timeout_ms: (election_min, election_min * 2),
            snapshot_logs: 5_000,
            snapshot_log_bytes: SNAPSHOT_LOG_BYTES,
            token,
            peer_tls: None,
            clock: now_micros,
            idle_sweep: None,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub enum SubmitError {
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Ambiguous(String),
    #[error("too many transactions are queued; retry shortly")]
    Overloaded,
    #[error("not the leader")]
    NotLeader(Option<u64>),
    /// The write was certainly not accepted (e.g. the leader was unreachable): retry.
    #[error("{0}")]
    Retry(String),
}

/// The output of one input and where it landed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitOk {
    pub output: Vec<u8>,
    /// Raft index of the entry that carried the input.
    pub index: u64,
    pub height: u64,
    /// The input's place in its batch.
    #[serde(default)]
    pub slot: usize,
}

type Reply = tally_calvin::courier::Reply<Result<SubmitOk, SubmitError>>;
/// An input waiting on the leader, what this member's request thread decoded from it (for
/// the executor, see `tally_calvin::Decoded`), where its answer goes, and when it was
/// queued.
type Item = (Vec<u8>, Option<Decoded>, Reply, Instant);

pub struct RaftNode {
    pub raft: Raft,
    pub id: u64,
    pub cfg: ClusterConfig,
    pub client: PeerClient,
    /// The leader's write queue, drained by the batcher task (idle on a follower).
    inbox: Arc<FairInbox<Item>>,
    applied_index: Arc<AtomicU64>,
    applied_notify: Arc<tokio::sync::Notify>,
    /// Outputs released while entries are applied (see [`crate::early`]).
    early: Option<Arc<Early>>,
    checkpoint: Box<dyn Fn() -> futures_util::future::BoxFuture<'static, std::io::Result<()>> + Send + Sync>,
    /// Peer requests refused by the peer API (logged, rate-limited).
    pub refusals: crate::tls::RefusalLog,
    /// The state machine's snapshot directory (received snapshots are streamed there).
    pub snapshots: Arc<crate::snapshot_store::SnapshotDir>,
}

/// Default of [`ClusterConfig::snapshot_log_bytes`]. Measured (docs/operations.md): 380k
/// transfers, 100 per request, grew a member's Raft log file to 200 MiB in 3,800 entries,
/// under the 5,000-entry policy that never fired; each snapshot costs a full export of the
/// state, so this should stay well above a typical state's size per minute of writes.
pub const SNAPSHOT_LOG_BYTES: u64 = 256 << 20;

/// Ask Raft for a snapshot whenever `limit` more bytes were appended to the log since the
/// last ask (openraft's own policy counts entries only). After it, openraft purges the log
/// up to the snapshot but for the last `max_in_snapshot_log_to_keep` entries. Ends when
/// Raft has shut down.
async fn snapshot_by_bytes(raft: Raft, appended: Arc<AtomicU64>, limit: u64) {
    let mut last = appended.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = appended.load(Ordering::Relaxed);
        if now.saturating_sub(last) < limit.max(1) {
            continue;
        }
        last = now;
        if raft.trigger().snapshot().await.is_err() {
            return;
        }
    }
}

/// Wall-clock microseconds since the Unix epoch.
pub fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

fn unavailable(msg: impl Into<String>) -> SubmitError {
    SubmitError::Unavailable(msg.into())
}

impl RaftNode {
    /// Start Raft over `log` and `machine`; forms the cluster on the first start of a
    /// fresh initial member. `last_ts` is the executor's last commit ts (batch ts start
    /// above it).
    pub async fn start(
        cfg: ClusterConfig,
        log: LogStore,
        machine: Machine,
        faults: Arc<Faults>,
        last_ts: Arc<AtomicU64>,
    ) -> anyhow_like::Result<Arc<RaftNode>> {
        let client = PeerClient::with_tls(&cfg.token, cfg.peer_tls.clone(), faults);
        let net = NetworkFactory { client: client.clone() };
        Self::start_with_network(cfg, log, machine, net, client, last_ts).await
    }

    /// [`start`](Self::start) over any Raft transport (the simulation's in-process one).
    pub async fn start_with_network<N>(
        cfg: ClusterConfig,
        log: LogStore,
        mut machine: Machine,
        net: N,
        client: PeerClient,
        last_ts: Arc<AtomicU64>,
    ) -> anyhow_like::Result<Arc<RaftNode>>
    where
        N: openraft::RaftNetworkFactory<crate::TypeConfig>,
        N::Network: openraft::network::NetSnapshot<crate::TypeConfig, SnapshotData = crate::SnapshotData>,
    {
        let rcfg = openraft::Config {
            cluster_name: "tally".into(),
            heartbeat_interval: cfg.heartbeat_ms,
            election_timeout_min: cfg.election_timeout_ms.0,
            election_timeout_max: cfg.election_timeout_ms.1,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_logs),
            max_in_snapshot_log_to_keep: cfg.snapshot_logs.min(1000),
            max_payload_entries: 64,
            install_snapshot_timeout: 60_000,
            enable_pre_vote: Some(true),
            // A member's log may go back: one restored from a backup (docs/backup.md) or
            // started on an emptied data directory comes back behind what the leader last
            // saw it match. Without this the leader keeps its old `matching` for it,
            // re-sends the same append-entries after it, gets the same conflict, forever
            // (debug builds assert instead), and the member never catches up. With it the
            // leader starts that member's progress over: it searches for the last matching
            // entry again (or sends a snapshot when its log no longer reaches back), and
            // what a quorum already accepted is never withdrawn (openraft's
            // `reset_entry_with`). tests/restored_member.rs.
            allow_log_reversion: Some(true),
            ..Default::default()
        };
        let rcfg = Arc::new(rcfg.validate().map_err(|e| anyhow_like::err(format!("raft config: {e}")))?);
        let applied_index = machine.applied_index.clone();
        let applied_notify = machine.applied_notify.clone();
        machine.node_id = Some(cfg.node_id);
        let early = machine.early.clone();
        let checkpoint = Box::new(machine.checkpoint_handle());
        let snapshots = machine.snapshots();
        let rules = machine.rules;
        let appended = log.appended_bytes();
        let raft = Raft::new(cfg.node_id, rcfg, net, log, machine)
            .await
            .map_err(|e| anyhow_like::err(format!("starting raft: {e}")))?;
        if cfg.initial_members.contains_key(&cfg.node_id) && !raft.is_initialized().await.unwrap_or(true) {
            let members: BTreeMap<u64, BasicNode> =
                cfg.initial_members.iter().map(|(id, a)| (*id, BasicNode { addr: a.clone() })).collect();
            // Every initial member does this with the same membership; Raft elects one leader.
            if let Err(e) = raft.initialize(members).await {
                tracing::info!(error = %e, "cluster already formed");
            }
        }
        let limits = BatchLimits {
            epoch: Duration::from_millis(cfg.epoch_ms),
            inputs_max: cfg.batch_inputs_max,
            bytes_max: cfg.batch_bytes_max,
        };
        let queue = tally_calvin::FairQueue::new(cfg.queue_inputs_max.max(1)).with_bytes_capacity(cfg.queue_bytes_max);
        let inbox = Arc::new(FairInbox::with_queue(queue, limits));
        let node = Arc::new(RaftNode {
            raft: raft.clone(),
            id: cfg.node_id,
            cfg: cfg.clone(),
            client,
            inbox: inbox.clone(),
            applied_index,
            applied_notify,
            early: early.clone(),
            checkpoint,
            refusals: Default::default(),
            snapshots,
        });
        if !crate::runtime::is_deterministic() {
            tokio::spawn(snapshot_by_bytes(raft.clone(), appended, cfg.snapshot_log_bytes));
        }
        tokio::spawn(run_batcher(raft, cfg, inbox, last_ts, early, rules));
        Ok(node)
    }

    pub fn metrics(&self) -> openraft::RaftMetrics<crate::TypeConfig> {
        use openraft::type_config::async_runtime::watch::WatchReceiver;
        self.raft.metrics().borrow_watched().clone()
    }

    /// Inputs waiting for a batch on this member (only a leader queues any).
    pub fn queued(&self) -> usize {
        self.inbox.len()
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::Acquire)
    }

    /// Wait (bounded) until this member has applied the entry at `index`.
    pub async fn wait_applied(&self, index: u64, deadline: Instant) -> bool {
        self.wait_until(deadline, None, || self.applied_index() >= index).await
    }

    /// Wait (bounded) until input `slot` of the entry at `index` is visible on this member:
    /// the entry is applied, or applied that far.
    async fn wait_visible(&self, index: u64, slot: usize, deadline: Instant) -> bool {
        let Some(early) = &self.early else { return self.wait_applied(index, deadline).await };
        self.wait_until(deadline, Some(&early.progress_moved), || {
            self.applied_index() >= index || early.visible(index, slot)
        })
        .await
    }

    /// Wait (bounded) until `done`, checking whenever an entry is applied (or, with
    /// `progress`, whenever an entry's applied part grows).
    async fn wait_until(
        &self,
        deadline: Instant,
        progress: Option<&tokio::sync::Notify>,
        done: impl Fn() -> bool,
    ) -> bool {
        loop {
            // Register before checking, so an apply in between is not missed.
            let applied = self.applied_notify.notified();
            let grew = progress.map(|p| p.notified());
            if done() {
                return true;
            }
            let moved = async {
                match grew {
                    Some(grew) => tokio::select! { _ = applied => {}, _ = grew => {} },
                    None => applied.await,
                }
            };
            if tokio::time::timeout_at(deadline, moved).await.is_err() {
                return done();
            }
        }
    }

    /// The current leader and its peer address, waiting (bounded) for an election.
    async fn leader(&self, deadline: Instant) -> Result<(u64, String), SubmitError> {
        loop {
            let m = self.metrics();
            if let Some(l) = m.current_leader {
                if let Some(n) = m.membership_config.membership().get_node(&l) {
                    return Ok((l, n.addr.clone()));
                }
            }
            if Instant::now() >= deadline {
                return Err(unavailable("no leader is known: this member cannot reach a majority of the cluster"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Is this member a leader that heard from a majority recently?
    pub fn leader_with_quorum(&self) -> Result<bool, SubmitError> {
        let m = self.metrics();
        if m.state != ServerState::Leader {
            return Ok(false);
        }
        let stale_ms = self.cfg.election_timeout_ms.1 * 2;
        let since_ack = m.last_quorum_acked.as_ref().map(|t| {
            use openraft::Instant as _;
            (**t).elapsed().as_millis() as u64
        });
        match since_ack {
            Some(ms) if ms <= stale_ms => Ok(true),
            _ if m.membership_config.membership().voter_ids().count() == 1 => Ok(true),
            _ => Err(unavailable(format!(
                "this member leads but has not heard from a majority for over {stale_ms} ms; the write was not accepted"
            ))),
        }
    }

    /// Submit one input of `tenant` from a client of this member.
    pub async fn submit(&self, tenant: Tenant, input: Vec<u8>) -> Result<SubmitOk, SubmitError> {
        self.submit_decoded(tenant, input, None).await
    }

    /// [`RaftNode::submit`], with what this member's request thread decoded from `input`:
    /// where this member leads, its executor applies the batch from it (the first attempt
    /// only; a retry or a forwarded write goes without).
    pub async fn submit_decoded(
        &self,
        tenant: Tenant,
        input: Vec<u8>,
        mut decoded: Option<Decoded>,
    ) -> Result<SubmitOk, SubmitError> {
        let deadline = Instant::now() + self.cfg.write_timeout;
        // A leader without recent acks from a majority gives them one more staleness window
        // (a loaded machine can delay heartbeats that long) before it answers unavailable:
        // a transient stall is waited out, a real partition still fails fast.
        let mut quorum_grace: Option<Instant> = None;
        loop {
            let r = match self.leader_with_quorum() {
                Ok(true) => self.submit_here_decoded(tenant, input.clone(), decoded.take(), deadline).await,
                Ok(false) => self.forward(tenant, input.clone(), deadline).await,
                // Just elected: the first answers from the followers are on their way.
                Err(e) if self.metrics().last_quorum_acked.is_none() => Err(SubmitError::Retry(e.to_string())),
                Err(e) => {
                    let grace = *quorum_grace.get_or_insert_with(|| {
                        Instant::now() + Duration::from_millis(self.cfg.election_timeout_ms.1 * 2)
                    });
                    if Instant::now() >= grace {
                        return Err(e);
                    }
                    Err(SubmitError::Retry(e.to_string()))
                }
            };
            // Not accepted anywhere (leadership moved, or the leader is unreachable while an
            // election may be under way): safe to try again until the deadline.
            let why = match r {
                Err(SubmitError::NotLeader(_)) => "leadership moved while the write was submitted".to_string(),
                Err(SubmitError::Retry(m)) => m,
                other => return other,
            };
            if Instant::now() + Duration::from_millis(50) >= deadline {
                return Err(unavailable(format!("{why}; the write was not accepted")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Queue an input of `tenant` for the local batcher (this member is the leader). When
    /// the queue is full, the tenant with the longest weighted backlog gives way: its
    /// newest input is answered `Overloaded` (it was never proposed), or this one is
    /// refused if that tenant is `tenant` itself.
    pub async fn submit_here(
        &self,
        tenant: Tenant,
        input: Vec<u8>,
        deadline: Instant,
    ) -> Result<SubmitOk, SubmitError> {
        self.submit_here_decoded(tenant, input, None, deadline).await
    }

    async fn submit_here_decoded(
        &self,
        tenant: Tenant,
        input: Vec<u8>,
        decoded: Option<Decoded>,
        deadline: Instant,
    ) -> Result<SubmitOk, SubmitError> {
        // Answered through this thread's courier when it has one (tally-calvin `courier`).
        let (otx, orx) = tally_calvin::courier::reply_channel();
        let bytes = input.len();
        match self.inbox.push(tenant, (input, decoded, otx, Instant::now()), bytes) {
            Pushed::Queued => {}
            Pushed::Evicted((_, _, reply, _)) => {
                reply.send(Err(SubmitError::Overloaded));
            }
            Pushed::Refused(_) if self.inbox.is_closed() => return Err(unavailable("this member is shutting down")),
            Pushed::Refused(_) => return Err(SubmitError::Overloaded),
        }
        match tokio::time::timeout_at(deadline, orx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(unavailable("the sequencer stopped")),
            Err(_) => Err(SubmitError::Ambiguous(
                "the write was proposed but not confirmed by a majority in time; it may or may not have been applied"
                    .into(),
            )),
        }
    }

    async fn forward(&self, tenant: Tenant, input: Vec<u8>, deadline: Instant) -> Result<SubmitOk, SubmitError> {
        // Leave a moment of the deadline for the forwarded write itself.
        let (leader, addr) = self.leader(deadline - self.cfg.write_timeout / 5).await?;
        if leader == self.id {
            // Leader without a recent quorum: leader_with_quorum already said so.
            return Err(SubmitError::NotLeader(None));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        // The leader queues the input in its tenant's lane. Only members send this (the
        // peer port takes the cluster token); the tenant comes from the query this member
        // authenticated, never from the client.
        let headers = [(TENANT_HEADER, tenant_header(tenant))];
        let r: Result<Result<SubmitOk, SubmitError>, NetError> =
            match self.client.post_bytes(leader, &addr, "/tally/submit", &headers, input, left).await {
                Ok(b) => crate::wire::decode_submit_answer(&b).map_err(|e| NetError::Decode(leader, e.to_string())),
                Err(e) => Err(e),
            };
        let ok = match r {
            Ok(r) => r?,
            Err(NetError::Unreachable(..)) => {
                return Err(SubmitError::Retry(format!("the leader (member {leader}) is unreachable from this member")))
            }
            Err(e) => {
                return Err(SubmitError::Ambiguous(format!(
                    "forwarding to the leader failed ({e}); the write may or may not have been applied"
                )))
            }
        };
        // Answer once visible here too, so this member's readers see it.
        if !self.wait_visible(ok.index, ok.slot, deadline).await {
            tracing::warn!(index = ok.index, "answering a committed write before this member applied it");
        }
        Ok(ok)
    }

    /// The Raft index a strictly serializable read must wait for (read index, confirmed
    /// with a majority by the leader).
    pub async fn read_index(&self) -> Result<u64, SubmitError> {
        let deadline = Instant::now() + self.cfg.write_timeout;
        if self.metrics().state == ServerState::Leader {
            return self.read_index_here(deadline).await;
        }
        let (leader, addr) = self.leader(deadline).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        let r: Result<Result<u64, SubmitError>, NetError> =
            self.client.post_json(leader, &addr, "/tally/read-index", &(), left).await;
        r.map_err(|e| unavailable(format!("cannot reach the leader for a linearized read: {e}")))?
    }

    pub async fn read_index_here(&self, deadline: Instant) -> Result<u64, SubmitError> {
        let f = self.raft.get_read_linearizer(ReadPolicy::ReadIndex);
        match tokio::time::timeout_at(deadline, f).await {
            Ok(Ok(l)) => Ok(l.read_log_id().index()),
            Ok(Err(e)) => Err(match e {
                RaftError::APIError(openraft::errors::LinearizableReadError::ForwardToLeader(f)) => {
                    SubmitError::NotLeader(f.leader_id)
                }
                other => unavailable(format!("cannot confirm leadership with a majority: {other}")),
            }),
            Err(_) => Err(unavailable("a majority did not confirm leadership in time")),
        }
    }

    /// Add a member (as a learner that catches up, then as a voter).
    pub async fn add_member(&self, id: u64, addr: String) -> Result<(), SubmitError> {
        self.membership_op(MembershipOp::Add { id, addr }).await
    }

    pub async fn remove_member(&self, id: u64) -> Result<(), SubmitError> {
        self.membership_op(MembershipOp::Remove { id }).await
    }

    pub async fn membership_op(&self, op: MembershipOp) -> Result<(), SubmitError> {
        let deadline = Instant::now() + Duration::from_secs(120);
        if self.metrics().state != ServerState::Leader {
            let (leader, addr) = self.leader(deadline).await?;
            let r: Result<Result<(), SubmitError>, NetError> =
                self.client.post_json(leader, &addr, "/tally/membership", &op, Duration::from_secs(120)).await;
            return r.map_err(|e| unavailable(format!("cannot reach the leader: {e}")))?;
        }
        self.membership_here(op).await
    }

    pub async fn membership_here(&self, op: MembershipOp) -> Result<(), SubmitError> {
        let err = |e: RaftError<crate::TypeConfig, ClientWriteError<crate::TypeConfig>>| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => SubmitError::NotLeader(f.leader_id),
            other => unavailable(format!("membership change failed: {other}")),
        };
        match op {
            MembershipOp::Add { id, addr } => {
                self.raft.add_learner(id, BasicNode { addr }, true).await.map_err(err)?;
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                    .map_err(err)?;
            }
            MembershipOp::Remove { id } => {
                self.raft
                    .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                    .await
                    .map_err(err)?;
            }
        }
        Ok(())
    }

    /// A summary for `GET /cluster/status`.
    pub fn status(&self) -> serde_json::Value {
        let m = self.metrics();
        let members: BTreeMap<String, String> =
            m.membership_config.membership().nodes().map(|(id, n)| (id.to_string(), n.addr.clone())).collect();
        let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        serde_json::json!({
            "node_id": self.id,
            "state": format!("{:?}", m.state),
            "leader": m.current_leader,
            "term": m.current_term,
            "last_log_index": m.last_log_index,
            "committed": m.cluster_committed.as_ref().map(|l| l.index),
            "last_applied": m.last_applied.as_ref().map(|l| l.index),
            "snapshot": m.snapshot.as_ref().map(|l| l.index),
            "purged": m.purged.as_ref().map(|l| l.index),
            "members": members,
            "voters": voters,
            "queued": self.queued(),
        })
    }

    /// Stop taking writes (the batcher proposes what is queued, then ends), stop Raft, then
    /// make the state durable. Every waiting submitter gets an answer.
    pub async fn shutdown(&self) {
        self.inbox.close();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        if let Err(e) = (self.checkpoint)().await {
            tracing::warn!(error = %e, "final checkpoint failed (the log replays it on restart)");
        }
    }
}

impl Drop for RaftNode {
    /// The batcher task holds the inbox, not the node: closing it lets the task end (as a
    /// crashed member's does in the simulation, which drops the node without `shutdown`).
    fn drop(&mut self) {
        self.inbox.close();
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MembershipOp {
    Add { id: u64, addr: String },
    Remove { id: u64 },
}

/// Tenants count as competing for this long after inputs of two of them arrived in a row.
const CONTENDED_WINDOW: Duration = Duration::from_secs(1);

/// The leader's sequencer: takes fairly composed batches from the inbox (an epoch after
/// the oldest queued input, or when a batch is full), stamps and proposes them, and
/// answers each input as the executor releases it (registered in `early`), or once the
/// entry is applied (deterministic mode; or its fate is known otherwise). Runs until the inbox is closed and
/// drained; on a follower the inbox stays empty.
/// Inputs that waited longer than `wait_max` are answered `Overloaded` and never
/// proposed: under a backlog the leader sheds its oldest work rather than doing what the
/// submitter no longer waits for (as the single node's sequencer does).
fn shed_stale(items: Vec<Item>, wait_max: Duration) -> Vec<(Vec<u8>, Option<Decoded>, Reply)> {
    items
        .into_iter()
        .filter_map(|(input, decoded, reply, queued)| {
            if queued.elapsed() > wait_max {
                reply.send(Err(SubmitError::Overloaded));
                return None;
            }
            Some((input, decoded, reply))
        })
        .collect()
}

async fn run_batcher(
    raft: Raft,
    cfg: ClusterConfig,
    inbox: Arc<FairInbox<Item>>,
    last_ts: Arc<AtomicU64>,
    early: Option<Arc<Early>>,
    rules: u16,
) {
    let in_flight = Arc::new(Semaphore::new(cfg.batches_in_flight_max.max(1)));
    // Estimated nanoseconds of apply work cut into batches and not yet applied.
    let ahead = Arc::new(AtomicU64::new(0));
    let ahead_moved = Arc::new(tokio::sync::Notify::new());
    let target = u64::try_from(cfg.work_ahead.as_nanos()).unwrap_or(u64::MAX);
    let mut issued = 0u64;
    loop {
        // A slot in the pipeline first, then the batch: inputs that arrive while the
        // pipeline is full are still in the fair queue when the next batch is composed.
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        // Pacing, only while more than one tenant is writing (a lone tenant gets every
        // batch full): batches cut and not yet applied hold at most `work_ahead` of
        // estimated work, so a backlog waits in the fair inbox, where a quiet tenant's
        // next write still goes ahead of it, rather than in batches already proposed.
        // Nothing is measured in deterministic mode, nor before the first batch.
        let cost = early.as_ref().and_then(|e| e.ns_per_input()).filter(|_| inbox.mixed_within(CONTENDED_WINDOW));
        let cap = match cost {
            None => usize::MAX,
            Some(cost) => loop {
                let moved = ahead_moved.notified();
                let now = ahead.load(Ordering::Acquire);
                if now < target {
                    break usize::try_from((target - now) / cost).unwrap_or(usize::MAX).max(1);
                }
                moved.await;
            },
        };
        // A lone input that finds no batch in flight (ours holds the only permit taken) is
        // proposed at once: an epoch gathers inputs only while the pipeline is busy, so a
        // write on a quiet cluster does not wait for one.
        let epoch = Duration::from_millis(cfg.epoch_ms);
        let idle_pipeline = cfg.batches_in_flight_max.max(1) - 1;
        let epoch_now =
            || if cfg.idle_at_once && in_flight.available_permits() >= idle_pipeline { Duration::ZERO } else { epoch };
        let take = inbox.next_batch_capped_within(cap, epoch_now);
        let next = match &cfg.idle_sweep {
            None => take.await,
            // Cancel-safe: nothing leaves the inbox until a batch is taken whole.
            Some(idle) => match tokio::time::timeout(idle.every, take).await {
                Ok(next) => next,
                Err(_) => {
                    use openraft::type_config::async_runtime::watch::WatchReceiver;
                    let leader = raft.metrics().borrow_watched().current_leader == Some(cfg.node_id);
                    if !(leader && idle.wanted((cfg.clock)())) {
                        continue;
                    }
                    // Idle: an empty batch, for the retention sweep.
                    Some(Vec::new())
                }
            },
        };
        let Some(items) = next else { return };
        let sweep_only = items.is_empty();
        let items = shed_stale(items, cfg.queue_wait_max);
        if items.is_empty() && !sweep_only {
            continue;
        }
        let work = cost.unwrap_or(0).saturating_mul(items.len() as u64);
        ahead.fetch_add(work, Ordering::AcqRel);
        let (ahead2, moved2) = (ahead.clone(), ahead_moved.clone());
        let applied = move || {
            ahead2.fetch_sub(work, Ordering::AcqRel);
            moved2.notify_waiters();
        };
        debug_assert!((sweep_only || !items.is_empty()) && items.len() <= cfg.batch_inputs_max.max(1));
        // Never backwards, even across leader changes: above every applied commit.
        let ts = (cfg.clock)().max(issued + 1).max(last_ts.load(Ordering::Acquire) + 1);
        issued = ts;
        let mut inputs = Vec::with_capacity(items.len());
        let mut decoded = Vec::with_capacity(items.len());
        let mut replies = Vec::with_capacity(items.len());
        for (input, hint, reply) in items {
            inputs.push(input);
            decoded.push(hint);
            replies.push(reply);
        }
        let n = inputs.len();
        // Each reply is taken once: by the executor as it releases outputs, or below.
        let replies: Arc<std::sync::Mutex<Vec<Option<Reply>>>> =
            Arc::new(std::sync::Mutex::new(replies.into_iter().map(Some).collect()));
        if let Some(early) = &early {
            use openraft::type_config::async_runtime::watch::WatchReceiver;
            let term = raft.metrics().borrow_watched().current_term;
            let rs = replies.clone();
            early.register(
                term,
                ts,
                Box::new(move |i, output, index, height| {
                    let taken = rs.lock().unwrap_or_else(|p| p.into_inner()).get_mut(i).and_then(Option::take);
                    if let Some(r) = taken {
                        r.send(Ok(SubmitOk { output, index, height, slot: i }));
                    }
                }),
                decoded,
            );
        }
        let take_all = |replies: &std::sync::Mutex<Vec<Option<Reply>>>| -> Vec<Option<Reply>> {
            std::mem::take(&mut *replies.lock().unwrap_or_else(|p| p.into_inner()))
        };
        let req = BatchRequest(Batch { height: 0, ts, rules, inputs }.encode());
        let (responder, done) = ProgressResponder::complete_only();
        if let Err(e) = raft.write(req).responder(responder).await {
            if let Some(early) = &early {
                early.forget(ts);
            }
            for r in take_all(&replies).into_iter().flatten() {
                r.send(Err(unavailable(format!("raft stopped: {e}"))));
            }
            applied();
            continue;
        }
        let early = early.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let result = done.await;
            applied();
            if let Some(early) = &early {
                early.forget(ts);
            }
            let replies = take_all(&replies);
            let outcome: Result<(u64, Vec<Vec<u8>>, u64), SubmitError> = match result {
                Ok(Ok(resp)) => Ok((resp.log_id.index, resp.data.outputs, resp.data.height)),
                Ok(Err(ClientWriteError::ForwardToLeader(f))) => Err(SubmitError::NotLeader(f.leader_id)),
                Ok(Err(e)) => Err(SubmitError::Ambiguous(format!(
                    "leadership changed while the write was pending ({e}); it may or may not have been applied"
                ))),
                Err(_) => {
                    Err(SubmitError::Ambiguous("raft dropped the write; it may or may not have been applied".into()))
                }
            };
            match outcome {
                Ok((index, outputs, height)) => {
                    if outputs.len() != n {
                        tracing::error!(expected = n, got = outputs.len(), "output count mismatch");
                    }
                    let mut outs = outputs.into_iter();
                    for (slot, r) in replies.into_iter().enumerate() {
                        let res = match outs.next() {
                            Some(output) => Ok(SubmitOk { output, index, height, slot }),
                            None => Err(unavailable("no output for the input")),
                        };
                        // Already answered as the batch was applied: nothing to send.
                        if let Some(r) = r {
                            r.send(res);
                        }
                    }
                }
                Err(e) => {
                    for r in replies.into_iter().flatten() {
                        r.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

/// Tiny error plumbing without pulling anyhow into the library.
pub mod anyhow_like {
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    pub struct Error(pub String);
    pub type Result<T> = std::result::Result<T, Error>;
    pub fn err(s: String) -> Error {
        Error(s)
    }
}

/// A cluster member is the write path of its node: the same seam as a single node's
/// sequencer, with the cluster's outcomes folded into the one error type.
impl tally_calvin::WritePath for RaftNode {
    fn submit(&self, tenant: Tenant, input: Vec<u8>) -> tally_calvin::WriteFuture<'_> {
        self.submit_write(tenant, input, None)
    }

    fn submit_decoded(&self, tenant: Tenant, input: Vec<u8>, decoded: Decoded) -> tally_calvin::WriteFuture<'_> {
        self.submit_write(tenant, input, Some(decoded))
    }
}

impl RaftNode {
    fn submit_write(&self, tenant: Tenant, input: Vec<u8>, decoded: Option<Decoded>) -> tally_calvin::WriteFuture<'_> {
        use tally_calvin::WriteError;
        Box::pin(async move {
            match RaftNode::submit_decoded(self, tenant, input, decoded).await {
                Ok(ok) => Ok(ok.output),
                Err(SubmitError::Overloaded) => Err(WriteError::Overloaded),
                Err(SubmitError::Ambiguous(m)) => Err(WriteError::Ambiguous(m)),
                Err(e @ (SubmitError::Unavailable(_) | SubmitError::NotLeader(_) | SubmitError::Retry(_))) => {
                    Err(WriteError::Unavailable(e.to_string()))
                }
            }
        })
    }
}
