//! The leader's batches are composed fairly across tenants: a tenant's write that arrives
//! behind another tenant's backlog of several batches goes into the next batch, whether
//! it was submitted on the leader or forwarded by a follower (which sends its tenant).
//!
//! Real members (Raft log on redb, openraft, peer ports on loopback) over a small machine
//! whose first batch blocks until the test opens a gate. With one batch in flight at most,
//! the leader's batcher cannot take another batch meanwhile, so the backlog is known to be
//! queued whole before anything is composed: the assertions are on heights, not timing.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{gate, peer_listener, until, Gate, Held, HoldAt, MachineGate, Member};
use tally_calvin::Tenant;
use tally_raft::{ClusterConfig, RaftNode, SubmitError, SubmitOk};
use tokio::task::JoinHandle;

const FLOOD: Tenant = Tenant { id: 1, weight: 1 };
const QUIET: Tenant = Tenant { id: 2, weight: 1 };
const BATCH_INPUTS_MAX: usize = 10;
const BACKLOG: usize = 100;

fn configure(cfg: &mut ClusterConfig) {
    cfg.epoch_ms = 1;
    cfg.batch_inputs_max = BATCH_INPUTS_MAX;
    // While the first batch is held, the batcher cannot take another one.
    cfg.batches_in_flight_max = 1;
    // Composition only: no pacing (the held first batch would make inputs look costly).
    cfg.work_ahead = Duration::from_secs(3600);
}

/// Start member `id` whose first batch waits for `gate` (if any).
async fn start(
    id: u64,
    initial: BTreeMap<u64, String>,
    listener: tokio::net::TcpListener,
    gate: Option<MachineGate>,
) -> Member {
    common::start(id, initial, listener, Held::new(gate, HoldAt::FirstBatch, Duration::ZERO), configure).await
}

/// A one-member cluster, configured by `tune`, whose first batch waits for the returned
/// gate, once it leads.
async fn held_leader(tune: impl FnOnce(&mut ClusterConfig)) -> (Member, Gate) {
    let (listener, addr) = peer_listener().await;
    let (gate, machine_gate) = gate();
    let machine = Held::new(Some(machine_gate), HoldAt::FirstBatch, Duration::ZERO);
    let m = common::start(1, BTreeMap::from([(1, addr)]), listener, machine, tune).await;
    until("member 1 leads", || m.node.leader_with_quorum().unwrap_or(false)).await;
    (m, gate)
}

async fn entered(gate: &Gate) {
    until("the first batch is being applied", || gate.held.try_recv().is_ok()).await;
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
    m.stop().await;
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
    follower.stop().await;
    leader.stop().await;
}

/// A full leader queue answers the flood's newest input `Overloaded` to make room for a
/// quiet tenant's input, and refuses the flood's next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_leader_queue_pushes_out_the_flood() {
    let (m, gate) = held_leader(|cfg| {
        configure(cfg);
        cfg.queue_inputs_max = 4;
    })
    .await;
    let node = m.node.clone();

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
    m.stop().await;
}

/// A write that waits on the leader longer than `queue_wait_max` (here behind a held
/// batch) is answered `Overloaded` and never proposed, as on a single node: the next
/// write lands at the height right after the held batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_queued_too_long_is_refused_and_never_proposed() {
    let (m, gate) = held_leader(|cfg| {
        configure(cfg);
        cfg.queue_wait_max = Duration::from_millis(100);
    })
    .await;
    let node = m.node.clone();

    let first = submit(&node, FLOOD, 0);
    entered(&gate).await;
    let stale = submit(&node, QUIET, 1);
    until("the input is queued", || node.queued() == 1).await;
    // Past its wait bound while the first batch still holds the only proposal slot.
    tokio::time::sleep(Duration::from_millis(300)).await;
    gate.open.send(()).unwrap();

    assert_eq!(height(first).await, 1);
    let refused = stale.await.unwrap();
    assert!(matches!(refused, Err(SubmitError::Overloaded)), "{refused:?}");
    assert_eq!(height(submit(&node, QUIET, 2)).await, 2, "the refused input was proposed after all");
    m.stop().await;
}

/// An epoch gathers inputs only while the pipeline is busy: with a 10-minute epoch, a
/// lone write on an idle leader is proposed at once and answered, and a write that
/// arrives while a batch is in flight waits for its epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_leader_proposes_a_lone_write_at_once() {
    let (m, gate) = held_leader(|cfg| {
        cfg.epoch_ms = 600_000;
        cfg.batches_in_flight_max = 2;
    })
    .await;
    let first = submit(&m.node, QUIET, 1);
    // Proposed without waiting for the epoch: its batch reaches the machine.
    entered(&gate).await;
    // Behind the held batch, the next write waits for its epoch.
    let second = submit(&m.node, QUIET, 2);
    until("the second write is queued", || m.node.queued() == 1).await;
    gate.open.send(()).unwrap();
    let ok = tokio::time::timeout(Duration::from_secs(30), first).await.expect("the lone write is answered").unwrap();
    assert!(ok.is_ok(), "{ok:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "a write that found a batch in flight is held its epoch");
    assert_eq!(m.node.queued(), 1);
    m.stop().await;
}
