//! A member answers an input as soon as the executor releases its output, not when the
//! whole entry is applied: on the leader that proposed the batch, and on a follower that
//! forwarded the input (once the input is visible there).
//!
//! Real members (Raft log on redb, openraft, peer ports on loopback) over a machine that
//! releases input 0 of a two-input batch and then holds the rest until the test opens its
//! gate. Only what was released can have been answered, so the assertions need no timing.
//!
//! Also here: the leader paces its batches by the apply cost it measures, while tenants
//! compete (and only then).

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use tally_calvin::{Batch, MachineError, ReplicatedMachine, StateMachine, Tenant};
use tally_raft::network::Faults;
use tally_raft::{ClusterConfig, LogStore, Machine, RaftNode, SubmitError, SubmitOk};
use tokio::task::JoinHandle;

const TENANT: Tenant = Tenant { id: 1, weight: 1 };
const OTHER: Tenant = Tenant { id: 2, weight: 1 };

/// Echoes each input as its output, taking `per_input` for each. In the first batch of
/// two or more inputs it releases input 0, says so on `released`, and waits for `gate`
/// before applying the rest (if it has a gate).
struct Stepwise {
    height: u64,
    position: Option<Vec<u8>>,
    gate: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
    per_input: Duration,
}

impl StateMachine for Stepwise {
    fn applied_height(&self) -> u64 {
        self.height
    }
    fn apply(&mut self, b: &Batch) -> Vec<Vec<u8>> {
        self.height = b.height;
        std::thread::sleep(self.per_input * b.inputs.len() as u32);
        b.inputs.clone()
    }
    fn last_commit_ts(&self) -> u64 {
        0
    }
}

impl ReplicatedMachine for Stepwise {
    fn apply_at(&mut self, b: &Batch, position: &[u8]) -> Vec<Vec<u8>> {
        self.position = Some(position.to_vec());
        self.apply(b)
    }
    fn apply_at_answering(&mut self, b: &Batch, position: &[u8], answer: &mut dyn FnMut(usize, Vec<u8>)) {
        let mut outputs = self.apply_at(b, position).into_iter().enumerate();
        if b.inputs.len() >= 2 {
            if let Some((released, gate)) = self.gate.take() {
                let (i, out) = outputs.next().unwrap();
                answer(i, out);
                let _ = released.send(());
                let _ = gate.recv();
            }
        }
        for (i, out) in outputs {
            answer(i, out);
        }
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

/// The test's side of a member's gate.
struct Gate {
    released: mpsc::Receiver<()>,
    open: mpsc::Sender<()>,
}

struct Member {
    node: Arc<RaftNode>,
    server: JoinHandle<()>,
    gate: Gate,
    _dir: tempfile::TempDir,
}

async fn peer_listener() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

async fn start(id: u64, initial: BTreeMap<u64, String>, listener: tokio::net::TcpListener) -> Member {
    // An epoch long enough that the two inputs submitted back to back share a batch.
    start_with(id, initial, listener, |cfg| cfg.epoch_ms = 300, true, Duration::ZERO).await
}

async fn start_with(
    id: u64,
    initial: BTreeMap<u64, String>,
    listener: tokio::net::TcpListener,
    configure: impl FnOnce(&mut ClusterConfig),
    gated: bool,
    per_input: Duration,
) -> Member {
    let dir = tempfile::tempdir().unwrap();
    let (released_tx, released) = mpsc::channel();
    let (open, gate_rx) = mpsc::channel();
    let log = LogStore::open(&dir.path().join("log.redb")).unwrap();
    let gate = gated.then_some((released_tx, gate_rx));
    let machine = Stepwise { height: 0, position: None, gate, per_input };
    let sm = Machine::open(machine, &dir.path().join("snapshot")).unwrap();
    let mut cfg = ClusterConfig::new(id, initial, "early-test-token".into(), 0);
    cfg.write_timeout = Duration::from_secs(60);
    configure(&mut cfg);
    let node = RaftNode::start(cfg, log, sm, Arc::new(Faults::default()), Default::default()).await.unwrap();
    let router = tally_raft::peer::router(node.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Member { node, server, gate: Gate { released, open }, _dir: dir }
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

type Pending = JoinHandle<Result<SubmitOk, SubmitError>>;

fn submit(node: &Arc<RaftNode>, input: &[u8]) -> Pending {
    submit_as(node, TENANT, input)
}

fn submit_as(node: &Arc<RaftNode>, tenant: Tenant, input: &[u8]) -> Pending {
    let (node, input) = (node.clone(), input.to_vec());
    tokio::spawn(async move { node.submit(tenant, input).await })
}

/// Submits `n` inputs of `TENANT` at once and returns how many landed in each batch.
async fn batch_sizes(node: &Arc<RaftNode>, n: u8) -> BTreeMap<u64, usize> {
    let pending: Vec<Pending> = (0..n).map(|i| submit(node, &[i])).collect();
    let mut sizes = BTreeMap::new();
    for p in pending {
        *sizes.entry(p.await.unwrap().unwrap().height).or_insert(0) += 1;
    }
    sizes
}

/// Submits two inputs through `via` into one batch of `leader`; once `holders` have all
/// released the first and are held, the first is answered and the second is not. Then
/// opens the gates.
async fn first_answer_comes_before_the_entry_is_applied(
    leader: &Arc<RaftNode>,
    via: &Arc<RaftNode>,
    holders: &[&Member],
) {
    let first = submit(via, b"first");
    until("the first input is queued on the leader", || leader.queued() == 1).await;
    let second = submit(via, b"second");
    for m in holders {
        until("the member released input 0 and holds the rest", || m.gate.released.try_recv().is_ok()).await;
    }
    let ok = tokio::time::timeout(Duration::from_secs(30), first)
        .await
        .expect("input 0 is answered while the rest of its batch is held")
        .unwrap()
        .unwrap();
    assert_eq!(ok.output, b"first");
    assert_eq!(ok.slot, 0);
    assert!(via.applied_index() < ok.index, "the entry is not wholly applied on the answering member");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!second.is_finished(), "input 1 is still held, so it cannot have been answered");
    for m in holders {
        m.gate.open.send(()).unwrap();
    }
    let ok2 = second.await.unwrap().unwrap();
    assert_eq!((ok2.output.as_slice(), ok2.slot, ok2.index), (&b"second"[..], 1, ok.index));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_answers_as_the_executor_releases() {
    let (listener, addr) = peer_listener().await;
    let m = start(1, BTreeMap::from([(1, addr)]), listener).await;
    until("member 1 leads", || m.node.leader_with_quorum().unwrap_or(false)).await;
    first_answer_comes_before_the_entry_is_applied(&m.node, &m.node, &[&m]).await;
    m.node.shutdown().await;
    m.server.abort();
}

/// A forwarded input is answered once it is visible on the follower that forwarded it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_answers_once_the_input_is_visible_there() {
    let (l1, addr1) = peer_listener().await;
    let (l2, addr2) = peer_listener().await;
    let leader = start(1, BTreeMap::from([(1, addr1)]), l1).await;
    until("member 1 leads", || leader.node.leader_with_quorum().unwrap_or(false)).await;
    let follower = start(2, BTreeMap::new(), l2).await;
    leader.node.add_member(2, addr2).await.unwrap();
    until("member 2 follows member 1", || follower.node.metrics().current_leader == Some(1)).await;
    first_answer_comes_before_the_entry_is_applied(&leader.node, &follower.node, &[&leader, &follower]).await;
    follower.node.shutdown().await;
    leader.node.shutdown().await;
    follower.server.abort();
    leader.server.abort();
}

/// Inputs cost 5 ms each to apply and the leader keeps 10 ms of work ahead: while another
/// tenant writes too, no batch holds more than two inputs, so a newcomer's write waits
/// behind at most that much work. A tenant writing alone gets whole batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_paced_only_while_tenants_compete() {
    let (listener, addr) = peer_listener().await;
    let configure = |cfg: &mut ClusterConfig| {
        // Short, so the paced batches (an epoch each) all fall within the one second
        // during which the other tenant's write counts as competing.
        cfg.epoch_ms = 20;
        cfg.work_ahead = Duration::from_millis(10);
    };
    let m = start_with(1, BTreeMap::from([(1, addr)]), listener, configure, false, Duration::from_millis(5)).await;
    until("member 1 leads", || m.node.leader_with_quorum().unwrap_or(false)).await;
    // The first batch measures the cost; then a lone tenant's 12 inputs share one batch.
    batch_sizes(&m.node, 1).await;
    let alone = batch_sizes(&m.node, 12).await;
    assert_eq!(alone.values().copied().collect::<Vec<_>>(), vec![12], "{alone:?}");
    // Another tenant's write: from now on tenants compete.
    submit_as(&m.node, OTHER, b"other").await.unwrap().unwrap();
    let paced = batch_sizes(&m.node, 12).await;
    assert!(paced.values().all(|&n| n <= 2), "at most 10 ms of 5 ms inputs per batch: {paced:?}");
    assert!(paced.len() >= 6, "{paced:?}");
    m.node.shutdown().await;
    m.server.abort();
}
