//! The leader's batches are composed fairly across tenants: a tenant's write that arrives
//! behind another tenant's backlog of several batches goes into the next batch, whether
//! it was submitted on the leader or forwarded by a follower (which sends its tenant).
//!
//! Real members (Raft log on redb, openraft, peer ports on loopback) over a small machine
//! whose first batch blocks until the test opens a gate. With one batch in flight at most,
//! the leader's batcher cannot take another batch meanwhile, so the backlog is known to be
//! queued whole before anything is composed: the assertions are on heights, not timing.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use tally_calvin::{Batch, MachineError, ReplicatedMachine, StateMachine, Tenant};
use tally_raft::network::Faults;
use tally_raft::{ClusterConfig, LogStore, Machine, RaftNode, SubmitError, SubmitOk};
use tokio::task::JoinHandle;

const FLOOD: Tenant = Tenant { id: 1, weight: 1 };
const QUIET: Tenant = Tenant { id: 2, weight: 1 };
const BATCH_INPUTS_MAX: usize = 10;
const BACKLOG: usize = 100;

/// Counts batches; the first one it applies waits for the gate (if it has one).
struct Gated {
    height: u64,
    position: Option<Vec<u8>>,
    gate: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
}

impl StateMachine for Gated {
    fn applied_height(&self) -> u64 {
        self.height
    }
    fn apply(&mut self, b: &Batch) -> Vec<Vec<u8>> {
        if let Some((entered, gate)) = self.gate.take() {
            let _ = entered.send(());
            let _ = gate.recv();
        }
        self.height = b.height;
        b.inputs.iter().map(|_| Vec::new()).collect()
    }
    fn last_commit_ts(&self) -> u64 {
        0
    }
}

impl ReplicatedMachine for Gated {
    fn apply_at(&mut self, b: &Batch, position: &[u8]) -> Vec<Vec<u8>> {
        self.position = Some(position.to_vec());
        self.apply(b)
    }
    fn set_position(&mut self, position: &[u8]) -> Result<(), MachineError> {
        self.position = Some(position.to_vec());
        Ok(())
    }
    fn position(&self) -> Result<Option<Vec<u8>>, MachineError> {
        Ok(self.position.clone())
    }
    fn checkpoint(&mut self) -> Result<(), MachineError> {
        Ok(())
    }
    fn export(&self) -> Result<Vec<u8>, MachineError> {
        Ok(self.height.to_be_bytes().to_vec())
    }
    fn import(&mut self, data: &[u8]) -> Result<(), MachineError> {
        let b: [u8; 8] = data.try_into().map_err(|_| MachineError("bad export".into()))?;
        self.height = u64::from_be_bytes(b);
        Ok(())
    }
}

/// A gate for a member's machine: `entered` says its first batch is being applied,
/// sending on `open` lets it finish.
struct Gate {
    entered: mpsc::Receiver<()>,
    open: mpsc::Sender<()>,
}

fn gate() -> (Gate, (mpsc::Sender<()>, mpsc::Receiver<()>)) {
    let (entered_tx, entered) = mpsc::channel();
    let (open, gate_rx) = mpsc::channel();
    (Gate { entered, open }, (entered_tx, gate_rx))
}

struct Member {
    node: Arc<RaftNode>,
    server: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn peer_listener() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

/// Start member `id` (forming a cluster of `initial` if it is listed there) with its peer
/// port served on `listener`.
async fn start(
    id: u64,
    initial: BTreeMap<u64, String>,
    listener: tokio::net::TcpListener,
    gate: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
) -> Member {
    let dir = tempfile::tempdir().unwrap();
    let log = LogStore::open(&dir.path().join("log.redb")).unwrap();
    let sm = Machine::open(Gated { height: 0, position: None, gate }, &dir.path().join("snapshot")).unwrap();
    let mut cfg = ClusterConfig::new(id, initial, "fair-test-token".into(), 0);
    cfg.epoch_ms = 1;
    cfg.batch_inputs_max = BATCH_INPUTS_MAX;
    // While the first batch is held, the batcher cannot take another one.
    cfg.batches_in_flight_max = 1;
    // Composition only: no pacing (the held first batch would make inputs look costly).
    cfg.work_ahead = Duration::from_secs(3600);
    cfg.write_timeout = Duration::from_secs(60);
    let node = RaftNode::start(cfg, log, sm, Arc::new(Faults::default()), Default::default()).await.unwrap();
    let router = tally_raft::peer::router(node.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Member { node, server, _dir: dir }
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn entered(gate: &Gate) {
    until("the first batch is being applied", || gate.entered.try_recv().is_ok()).await;
}

type Pending = JoinHandle<Result<SubmitOk, SubmitError>>;

fn submit(node: &Arc<RaftNode>, tenant: Tenant, input: u8) -> Pending {
    let node = node.clone();
    tokio::spawn(async move { node.submit(tenant, vec![input]).await })
}

async fn height(p: Pending) -> u64 {
    p.await.unwrap().unwrap().height
}

/// Holds the leader's first batch, queues a flood's backlog of `BACKLOG` inputs and then
/// one quiet input through `via`, opens the gate and checks where everything landed.
async fn quiet_input_overtakes_backlog(leader: &Arc<RaftNode>, via: &Arc<RaftNode>, gate: Gate) {
    let first = submit(via, FLOOD, 0);
    entered(&gate).await;
    let backlog: Vec<Pending> = (0..BACKLOG).map(|i| submit(via, FLOOD, i as u8)).collect();
    until("the backlog is queued on the leader", || leader.queued() == BACKLOG).await;
    let quiet = submit(via, QUIET, 0);
    until("the quiet input is queued on the leader", || leader.queued() == BACKLOG + 1).await;
    gate.open.send(()).unwrap();

    assert_eq!(height(first).await, 1);
    assert_eq!(height(quiet).await, 2, "the quiet input makes the next batch, ahead of the backlog");
    let mut heights = Vec::new();
    for b in backlog {
        heights.push(height(b).await);
    }
    let mut per_batch = BTreeMap::new();
    for h in &heights {
        *per_batch.entry(*h).or_insert(0) += 1;
    }
    // Batch 2 holds the quiet input and 9 of the backlog; the remaining 91 fill batches
    // 3..=12 (the last one partly).
    let expected: BTreeMap<u64, usize> = (2..=12)
        .map(|h| {
            (
                h,
                if h == 2 {
                    9
                } else if h == 12 {
                    1
                } else {
                    10
                },
            )
        })
        .collect();
    assert_eq!(per_batch, expected, "the backlog keeps batches full and behind the quiet input");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_composes_batches_fairly_across_tenants() {
    let (listener, addr) = peer_listener().await;
    let (gate, machine_gate) = gate();
    let m = start(1, BTreeMap::from([(1, addr)]), listener, Some(machine_gate)).await;
    until("member 1 leads", || m.node.leader_with_quorum().unwrap_or(false)).await;
    quiet_input_overtakes_backlog(&m.node, &m.node, gate).await;
    m.node.shutdown().await;
    m.server.abort();
}

/// Writes a follower forwards carry their tenant: the leader queues them in its lane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_writes_keep_their_tenant() {
    let (l1, addr1) = peer_listener().await;
    let (l2, addr2) = peer_listener().await;
    let (gate, machine_gate) = gate();
    let leader = start(1, BTreeMap::from([(1, addr1)]), l1, Some(machine_gate)).await;
    until("member 1 leads", || leader.node.leader_with_quorum().unwrap_or(false)).await;
    let follower = start(2, BTreeMap::new(), l2, None).await;
    leader.node.add_member(2, addr2).await.unwrap();
    until("member 2 follows member 1", || follower.node.metrics().current_leader == Some(1)).await;
    quiet_input_overtakes_backlog(&leader.node, &follower.node, gate).await;
    follower.node.shutdown().await;
    leader.node.shutdown().await;
    follower.server.abort();
    leader.server.abort();
}

/// A full leader queue answers the flood's newest input `Overloaded` to make room for a
/// quiet tenant's input, and refuses the flood's next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_leader_queue_pushes_out_the_flood() {
    let (listener, addr) = peer_listener().await;
    let (gate, machine_gate) = gate();
    let dir = tempfile::tempdir().unwrap();
    let log = LogStore::open(&dir.path().join("log.redb")).unwrap();
    let sm =
        Machine::open(Gated { height: 0, position: None, gate: Some(machine_gate) }, &dir.path().join("snap")).unwrap();
    let mut cfg = ClusterConfig::new(1, BTreeMap::from([(1, addr)]), "fair-test-token".into(), 0);
    cfg.epoch_ms = 1;
    cfg.batches_in_flight_max = 1;
    cfg.queue_inputs_max = 4;
    cfg.work_ahead = Duration::from_secs(3600);
    cfg.write_timeout = Duration::from_secs(60);
    let node = RaftNode::start(cfg, log, sm, Arc::new(Faults::default()), Default::default()).await.unwrap();
    drop(listener);
    until("member 1 leads", || node.leader_with_quorum().unwrap_or(false)).await;

    let first = submit(&node, FLOOD, 0);
    entered(&gate).await;
    // One at a time, so the newest is known.
    let mut backlog = Vec::new();
    for i in 1..=4 {
        backlog.push(submit(&node, FLOOD, i));
        until("the input is queued", || node.queued() == i as usize).await;
    }
    let refused = submit(&node, FLOOD, 5).await.unwrap();
    assert!(matches!(refused, Err(SubmitError::Overloaded)), "{refused:?}");
    let quiet = submit(&node, QUIET, 0);
    until("the quiet input is queued", || backlog.iter().filter(|b| b.is_finished()).count() == 1).await;
    assert_eq!(node.queued(), 4);
    gate.open.send(()).unwrap();

    assert_eq!(height(first).await, 1);
    assert_eq!(height(quiet).await, 2);
    let mut outcomes = Vec::new();
    for b in backlog {
        outcomes.push(b.await.unwrap().map(|ok| ok.height));
    }
    // The newest flood input gave way; the others were applied, in order, with the quiet one.
    assert!(matches!(outcomes[3], Err(SubmitError::Overloaded)), "{outcomes:?}");
    assert_eq!(outcomes[..3].iter().map(|o| *o.as_ref().unwrap()).collect::<Vec<_>>(), vec![2, 2, 2]);
    node.shutdown().await;
}
