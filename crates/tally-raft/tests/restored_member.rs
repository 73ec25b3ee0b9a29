//! A member restored from a backup catches up, although its log went backwards.
//!
//! The case of `tally restore` into a member's emptied data directory
//! (docs/backup.md): the member was up to date, so the leader last saw it match an entry
//! above the backup's height; it comes back with an empty Raft log and the machine's
//! position at the backup's height. The leader must find where the member's log ends
//! now instead of re-sending what follows the entry it last saw matched (openraft's
//! `allow_log_reversion`, set in `RaftNode::start_with_network`).
//!
//! Real members (Raft log on redb, openraft, peer ports on loopback) over the echoing test
//! machine; the "backup" is the follower's machine height and position recorded at one
//! moment, the emptied directory a fresh one. Every wait is on a state, none on time.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{peer_listener, until, Held, HoldAt, Member, Recorded};
use tally_calvin::Tenant;
use tally_raft::RaftNode;

const TENANT: Tenant = Tenant { id: 1, weight: 1 };

async fn start(id: u64, members: &BTreeMap<u64, String>, listener: tokio::net::TcpListener, machine: Held) -> Member {
    common::start(id, members.clone(), listener, machine, |_| {}).await
}

/// One input per entry: each is submitted after the previous one was answered.
async fn write(leader: &Arc<RaftNode>, n: u8) -> u64 {
    let mut index = 0;
    for i in 0..n {
        index = leader.submit(TENANT, vec![i]).await.unwrap().index;
    }
    index
}

/// The index of the entry the leader last saw `follower` match.
fn matched(leader: &RaftNode, follower: u64) -> u64 {
    let m = leader.metrics();
    let repl = m.replication.unwrap_or_default();
    repl.get(&follower).cloned().flatten().map(|l| l.index).unwrap_or(0)
}

/// Bind `addr` again once the stopped member's listener is gone.
async fn rebind(addr: &str) -> tokio::net::TcpListener {
    for _ in 0..600 {
        if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("could not bind {addr} again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restored_from_a_backup_catches_up() {
    let mut listeners = BTreeMap::new();
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        let (l, addr) = peer_listener().await;
        listeners.insert(id, l);
        members.insert(id, addr);
    }
    let recorded: BTreeMap<u64, Recorded> = (1..=3).map(|id| (id, Recorded::default())).collect();
    let mut nodes = BTreeMap::new();
    for (id, l) in listeners {
        let machine = Held::new(None, HoldAt::FirstBatch, Duration::ZERO).recording(recorded[&id].clone());
        nodes.insert(id, start(id, &members, l, machine).await);
    }
    until("a member leads", || nodes.values().any(|m| m.node.leader_with_quorum().unwrap_or(false))).await;
    let leader_id = *nodes.iter().find(|(_, m)| m.node.leader_with_quorum().unwrap_or(false)).unwrap().0;
    let leader = nodes[&leader_id].node.clone();
    let lost = *members.keys().find(|id| **id != leader_id).unwrap();

    // The backup: the follower's height and position once it applied some entries.
    let index = write(&leader, 5).await;
    until("the follower applied the first writes", || nodes[&lost].node.applied_index() >= index).await;
    let (height, position) = recorded[&lost].lock().unwrap().clone();
    let position = position.expect("the follower recorded a position");
    assert!(height >= 5, "the backup holds the first writes (height {height})");

    // Writes go on, and the leader sees the follower match them: its view of the
    // follower is now above the backup.
    let index = write(&leader, 5).await;
    until("the leader saw the follower match the later writes", || matched(&leader, lost) >= index).await;

    // The follower's disk is lost; it comes back from the backup, same id and address.
    let m = nodes.remove(&lost).unwrap();
    m.stop().await;
    let index = write(&leader, 3).await;
    let listener = rebind(&members[&lost]).await;
    let machine = Held::restored(height, position).recording(recorded[&lost].clone());
    nodes.insert(lost, start(lost, &members, listener, machine).await);

    let index = index.max(write(&leader, 1).await);
    until("the restored member applied every write", || nodes[&lost].node.applied_index() >= index).await;
    let height_of = |id: u64| recorded[&id].lock().unwrap().0;
    until("the restored member's height is the leader's", || height_of(lost) == height_of(leader_id)).await;
    for (_, m) in nodes {
        m.stop().await;
    }
}
