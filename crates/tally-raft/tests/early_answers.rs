//! A member answers an input as soon as the executor releases its output, not when the
//! whole entry is applied: on the leader that proposed the batch, and on a follower that
//! forwarded the input (once the input is visible there).
//!
//! Real members (Raft log on redb, openraft, peer ports on loopback) over a machine that
//! releases input 0 of a two-input batch and then holds the rest until the test opens its
//! gate. Only what was released can have been answered, so the assertions need no timing.
//!
//! Also here: the leader paces its batches by the apply cost it measures, while tenants
//! compete (and only then); and the leader's executor gets what its own request threads
//! decoded from the inputs it proposes, while followers and forwarded inputs go without.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{gate, peer_listener, until, Gate, Held, Hints, HoldAt, Member};
use tally_calvin::Tenant;
use tally_raft::{ClusterConfig, RaftNode, SubmitError, SubmitOk};
use tokio::task::JoinHandle;

const TENANT: Tenant = Tenant { id: 1, weight: 1 };
const OTHER: Tenant = Tenant { id: 2, weight: 1 };

/// Start member `id` whose machine releases input 0 of its first two-input batch and
/// holds the rest until the returned gate opens.
async fn start(id: u64, initial: BTreeMap<u64, String>, listener: tokio::net::TcpListener) -> (Member, Gate) {
    let (gate, machine_gate) = gate();
    let machine = Held::new(Some(machine_gate), HoldAt::AfterFirstOutput, Duration::ZERO);
    // An epoch long enough that the two inputs submitted back to back share a batch, the
    // first not proposed alone for finding the pipeline idle.
    let m = common::start(id, initial, listener, machine, |cfg| {
        cfg.epoch_ms = 300;
        cfg.idle_at_once = false;
    })
    .await;
    (m, gate)
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

/// Submits two inputs through `via` into one batch of `leader`; once the members behind
/// `gates` have all released the first and are holding, the first is answered and the
/// second is not. Then opens the gates.
async fn first_answer_comes_before_the_entry_is_applied(leader: &Arc<RaftNode>, via: &Arc<RaftNode>, gates: &[&Gate]) {
    let first = submit(via, b"first");
    until("the first input is queued on the leader", || leader.queued() == 1).await;
    let second = submit(via, b"second");
    for g in gates {
        until("the member released input 0 and holds the rest", || g.held.try_recv().is_ok()).await;
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
    for g in gates {
        g.open.send(()).unwrap();
    }
    let ok2 = second.await.unwrap().unwrap();
    assert_eq!((ok2.output.as_slice(), ok2.slot, ok2.index), (&b"second"[..], 1, ok.index));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_answers_as_the_executor_releases() {
    let (listener, addr) = peer_listener().await;
    let (m, gate) = start(1, BTreeMap::from([(1, addr)]), listener).await;
    until("member 1 leads", || m.node.leader_with_quorum().unwrap_or(false)).await;
    first_answer_comes_before_the_entry_is_applied(&m.node, &m.node, &[&gate]).await;
    m.stop().await;
}

/// A forwarded input is answered once it is visible on the follower that forwarded it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_answers_once_the_input_is_visible_there() {
    let (l1, addr1) = peer_listener().await;
    let (l2, addr2) = peer_listener().await;
    let (leader, leader_gate) = start(1, BTreeMap::from([(1, addr1)]), l1).await;
    until("member 1 leads", || leader.node.leader_with_quorum().unwrap_or(false)).await;
    let (follower, follower_gate) = start(2, BTreeMap::new(), l2).await;
    leader.node.add_member(2, addr2).await.unwrap();
    until("member 2 follows member 1", || follower.node.metrics().current_leader == Some(1)).await;
    first_answer_comes_before_the_entry_is_applied(&leader.node, &follower.node, &[&leader_gate, &follower_gate]).await;
    follower.stop().await;
    leader.stop().await;
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
    let machine = Held::new(None, HoldAt::FirstBatch, Duration::from_millis(5));
    let m = common::start(1, BTreeMap::from([(1, addr)]), listener, machine, configure).await;
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
    m.stop().await;
}

/// An input submitted on the leader with what its request thread decoded reaches the
/// leader's executor with it; the followers apply the same entry from the bytes alone, and
/// an input a follower forwards reaches the leader without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_applies_its_own_proposals_with_their_hints() {
    let (l1, addr1) = peer_listener().await;
    let (l2, addr2) = peer_listener().await;
    let noting = |hints: &Hints| Held::new(None, HoldAt::FirstBatch, Duration::ZERO).noting_hints(hints.clone());
    let (leader_hints, follower_hints) = (Hints::default(), Hints::default());
    let leader = common::start(1, BTreeMap::from([(1, addr1)]), l1, noting(&leader_hints), |_| {}).await;
    until("member 1 leads", || leader.node.leader_with_quorum().unwrap_or(false)).await;
    let follower = common::start(2, BTreeMap::new(), l2, noting(&follower_hints), |_| {}).await;
    leader.node.add_member(2, addr2).await.unwrap();
    until("member 2 follows member 1", || follower.node.metrics().current_leader == Some(1)).await;
    let hint = |input: &[u8]| -> Option<tally_calvin::Decoded> { Some(Box::new(input.to_vec())) };
    let ok = leader.node.submit_decoded(TENANT, b"on the leader".to_vec(), hint(b"on the leader")).await.unwrap();
    assert_eq!(ok.output, b"on the leader");
    let ok = follower.node.submit_decoded(TENANT, b"forwarded".to_vec(), hint(b"forwarded")).await.unwrap();
    assert_eq!(ok.output, b"forwarded");
    until("the follower applied both", || follower_hints.lock().unwrap().len() == 2).await;
    let seen = |h: &Hints| h.lock().unwrap().clone();
    assert_eq!(
        seen(&leader_hints),
        vec![(b"on the leader".to_vec(), true), (b"forwarded".to_vec(), false)],
        "the leader's own proposal came with its hint, the forwarded input without"
    );
    assert_eq!(seen(&follower_hints), vec![(b"on the leader".to_vec(), false), (b"forwarded".to_vec(), false)]);
    follower.stop().await;
    leader.stop().await;
}
