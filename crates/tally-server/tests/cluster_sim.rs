//! Seeded chaos simulation of the replicated write path: three in-process members with the
//! real storage (redb Raft log, FQL executor on redb, openraft), joined by an in-process
//! network that drops, delays and so reorders messages, while members crash (stopped
//! without a final checkpoint), restart and are cut off. A bank workload runs throughout.
//!
//! After every step: no two members ever hold different block headers at the same height.
//! At the end (everyone restarted and healed): same head everywhere, total balance
//! unchanged, every acknowledged transfer present, none applied twice.
//!
//! The seed fixes the fault schedule and the workload; thread scheduling is the OS's, so a
//! failing seed reproduces the same schedule, not the same interleaving. CI runs a short
//! simulation; a long run: `TALLY_SIM_SEEDS=1000 TALLY_SIM_STEPS=200 cargo test --release
//! -p tally-server --test cluster_sim -- --nocapture` (or `TALLY_SIM_SEED=n` for one seed).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tally_raft::network::{Faults, PeerClient};
use tally_raft::{ClusterConfig, LogStore, Machine, Raft, RaftNode, Snapshot, TypeConfig, Vote};
use tally_server::machine::{block_key, FqlMachine};
use tally_storage::{RedbStore, Store};

const MEMBERS: u64 = 3;
const ACCOUNTS: u64 = 20;
const START: i64 = 100;

struct Net {
    live: Mutex<BTreeMap<u64, Raft>>,
    cut: Mutex<BTreeSet<u64>>,
    rng: Mutex<StdRng>,
    drop_per_mille: u32,
    delay_max_ms: u64,
}

impl Net {
    /// Decide this message's fate: dropped (after its delay) or delivered to the target.
    async fn route(&self, from: u64, to: u64) -> Result<Raft, Unreachable<TypeConfig>> {
        let (dropped, delay) = {
            let mut r = self.rng.lock().unwrap();
            (r.gen_range(0..1000) < self.drop_per_mille, r.gen_range(0..=self.delay_max_ms))
        };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let cut = self.cut.lock().unwrap().iter().any(|c| *c == from || *c == to);
        let target = self.live.lock().unwrap().get(&to).cloned();
        match target {
            Some(t) if !dropped && !cut => Ok(t),
            _ => Err(Unreachable::from_string(format!("{from} -> {to}: dropped"))),
        }
    }
}

#[derive(Clone)]
struct SimNet {
    net: Arc<Net>,
    from: u64,
}

struct SimConn {
    net: Arc<Net>,
    from: u64,
    to: u64,
}

impl RaftNetworkFactory<TypeConfig> for SimNet {
    type Network = SimConn;
    async fn new_client(&mut self, to: u64, _node: &openraft::BasicNode) -> SimConn {
        SimConn { net: self.net.clone(), from: self.from, to }
    }
}

fn net_err(e: impl std::fmt::Display) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string(e))
}

impl RaftNetworkV2<TypeConfig> for SimConn {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _o: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let t = self.net.route(self.from, self.to).await?;
        t.append_entries(rpc).await.map_err(net_err)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _o: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let t = self.net.route(self.from, self.to).await?;
        t.vote(rpc).await.map_err(net_err)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _o: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let t = self.net.route(self.from, self.to).await?;
        t.pre_vote(rpc).await.map_err(net_err)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        _o: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let t = self.net.route(self.from, self.to).await?;
        t.install_full_snapshot(vote, snapshot).await.map_err(|e| StreamingError::Network(NetworkError::from_string(e)))
    }
}

struct Member {
    dir: PathBuf,
    node: Option<(Arc<RaftNode>, Arc<dyn Store>)>,
}

fn retry<T, E: std::fmt::Debug>(mut f: impl FnMut() -> Result<T, E>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match f() {
            Ok(v) => return v,
            // The previous incarnation's executor thread may still hold the files.
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("reopening a member: {e:?}"),
        }
    }
}

async fn open(id: u64, dir: &Path, net: &Arc<Net>, snapshot_logs: u64) -> (Arc<RaftNode>, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(retry(|| RedbStore::open(&dir.join("state.redb"))));
    let fql = FqlMachine::open(store.clone()).unwrap();
    let last_ts = fql.applied_ts.clone();
    let sm = Machine::open(fql, &dir.join("snapshot")).unwrap();
    let log = retry(|| LogStore::open(&dir.join("log.redb")));
    let members = (1..=MEMBERS).map(|i| (i, format!("sim-{i}"))).collect();
    let mut cfg = ClusterConfig::new(id, members, "sim".into(), 0);
    cfg.election_timeout_ms = (300, 600);
    cfg.heartbeat_ms = 60;
    cfg.write_timeout = Duration::from_secs(3);
    cfg.snapshot_logs = snapshot_logs;
    let client = PeerClient::new("sim", Arc::new(Faults::default()));
    let node = RaftNode::start_with_network(cfg, log, sm, SimNet { net: net.clone(), from: id }, client, last_ts)
        .await
        .unwrap();
    net.live.lock().unwrap().insert(id, node.raft.clone());
    (node, store)
}

fn input(q: serde_json::Value, entropy: u64) -> Vec<u8> {
    let mut e = [0u8; 32];
    e[..8].copy_from_slice(&entropy.to_be_bytes());
    serde_json::to_vec(&json!({"q": q, "db": 0, "role": "admin", "entropy": hex::encode(e), "steps_max": 10_000_000}))
        .unwrap()
}

fn acct(i: u64) -> serde_json::Value {
    json!({"ref": {"collection": "accounts"}, "id": i.to_string()})
}

fn obj(v: serde_json::Value) -> serde_json::Value {
    json!({ "object": v })
}

/// Idempotent transfer: a retried one that was applied answers "dup".
fn transfer(id: &str, from: u64, to: u64, amount: i64) -> serde_json::Value {
    let bal = |v: &str| json!({"select": ["data", "balance"], "from": {"var": v}});
    json!({"if": {"exists": {"match": {"index": "transfers_by_id"}, "terms": id}}, "then": "dup",
      "else": {"let": [{"a": {"get": acct(from)}}, {"b": {"get": acct(to)}}], "in":
        {"if": {"lt": [bal("a"), amount]}, "then": "insufficient", "else": {"do": [
          {"update": acct(from), "params": obj(json!({"data": obj(json!({"balance": {"subtract": [bal("a"), amount]}}))}))},
          {"update": acct(to), "params": obj(json!({"data": obj(json!({"balance": {"add": [bal("b"), amount]}}))}))},
          {"create": {"collection": "transfers"}, "params": obj(json!({"data": obj(json!({"id": id, "from": from, "to": to, "amount": amount}))}))},
          "ok"]}}}})
}

fn resource(out: &[u8]) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(out).unwrap();
    v["body"]["resource"].clone()
}

struct World {
    net: Arc<Net>,
    members: BTreeMap<u64, Member>,
    _dirs: tempfile::TempDir,
    snapshot_logs: u64,
}

impl World {
    fn leader(&self) -> Option<Arc<RaftNode>> {
        self.members.values().filter_map(|m| m.node.as_ref()).find_map(|(n, _)| {
            let cut = self.net.cut.lock().unwrap().contains(&n.id);
            (!cut && n.leader_with_quorum().unwrap_or(false)).then(|| n.clone())
        })
    }

    async fn submit(&self, q: serde_json::Value, entropy: u64) -> Option<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(6);
        while Instant::now() < deadline {
            if let Some(l) = self.leader() {
                if let Ok(ok) = l.submit_here(input(q.clone(), entropy), Instant::now() + Duration::from_secs(3)).await
                {
                    return Some(resource(&ok.output));
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    async fn crash(&mut self, id: u64) {
        let m = self.members.get_mut(&id).unwrap();
        if let Some((node, store)) = m.node.take() {
            self.net.live.lock().unwrap().remove(&id);
            // No final checkpoint: what was not durable is lost, as in a crash.
            let _ = node.raft.shutdown().await;
            drop(node);
            drop(store);
        }
    }

    async fn restart(&mut self, id: u64) {
        let snapshot_logs = self.snapshot_logs;
        let m = self.members.get_mut(&id).unwrap();
        if m.node.is_none() {
            m.node = Some(open(id, &m.dir, &self.net, snapshot_logs).await);
        }
    }

    /// Safety: no two live members hold different headers at the same height.
    fn check_headers(&self) {
        let stores: Vec<(u64, &Arc<dyn Store>)> =
            self.members.iter().filter_map(|(id, m)| m.node.as_ref().map(|(_, s)| (*id, s))).collect();
        let heights: Vec<u64> =
            stores.iter().map(|(_, s)| tally_server::machine::meta_height(&***s).unwrap()).collect();
        let Some(&h) = heights.iter().min() else { return };
        if h == 0 {
            return;
        }
        let hdr = |s: &Arc<dyn Store>| s.snapshot().unwrap().meta(&block_key(h)).unwrap();
        let first = hdr(stores[0].1);
        for (id, s) in &stores[1..] {
            assert_eq!(hdr(s), first, "member {id} disagrees with member {} at height {h}", stores[0].0);
        }
    }
}

async fn run_seed(seed: u64, steps: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dirs = tempfile::tempdir().unwrap();
    let net = Arc::new(Net {
        live: Mutex::new(BTreeMap::new()),
        cut: Mutex::new(BTreeSet::new()),
        rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0x5eed)),
        drop_per_mille: rng.gen_range(0..=100),
        delay_max_ms: rng.gen_range(0..=30),
    });
    let mut w = World {
        net: net.clone(),
        members: BTreeMap::new(),
        _dirs: tempfile::tempdir().unwrap(),
        snapshot_logs: rng.gen_range(10..=60),
    };
    for id in 1..=MEMBERS {
        let dir = dirs.path().join(format!("m{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        w.members.insert(id, Member { dir, node: None });
    }
    for id in 1..=MEMBERS {
        w.restart(id).await;
    }
    // Schema and accounts (retried until a leader takes them; idempotent by name).
    let setup = json!({"do": [
        {"create_collection": obj(json!({"name": "accounts"}))},
        {"create_collection": obj(json!({"name": "transfers"}))},
        {"create_index": obj(json!({"name": "transfers_by_id", "source": {"collection": "transfers"}, "terms": [obj(json!({"field": ["data", "id"]}))], "unique": true}))},
        {"create_index": obj(json!({"name": "transfer_rows", "source": {"collection": "transfers"}, "values": [obj(json!({"field": ["data", "id"]})), obj(json!({"field": ["data", "from"]})), obj(json!({"field": ["data", "to"]})), obj(json!({"field": ["data", "amount"]}))]}))},
    ]});
    assert!(w.submit(setup, 1).await.is_some(), "seed {seed}: setup never committed");
    let accounts: Vec<_> = (1..=ACCOUNTS)
        .map(|i| json!({"create": acct(i), "params": obj(json!({"data": obj(json!({"balance": START}))}))}))
        .collect();
    assert!(w.submit(json!({"do": accounts}), 2).await.is_some(), "seed {seed}: accounts never committed");

    let mut acked = Vec::new();
    let mut pending: Vec<(String, u64, u64, i64)> = Vec::new();
    for step in 0..steps {
        match rng.gen_range(0..100) {
            0..=64 => {
                let n = rng.gen_range(1..=6);
                for k in 0..n {
                    let from = rng.gen_range(1..=ACCOUNTS);
                    let to = 1 + (from + rng.gen_range(0..ACCOUNTS - 1)) % ACCOUNTS;
                    pending.push((format!("s{seed}-{step}-{k}"), from, to, rng.gen_range(1..=15)));
                }
                let batch = std::mem::take(&mut pending);
                let futs = batch
                    .iter()
                    .enumerate()
                    .map(|(i, (id, f, t, a))| w.submit(transfer(id, *f, *t, *a), step * 100 + i as u64));
                let results = futures_util::future::join_all(futs).await;
                for (r, t) in results.into_iter().zip(batch) {
                    match r.as_ref().and_then(|v| v.as_str()) {
                        Some("ok") | Some("dup") => acked.push(t.0),
                        Some("insufficient") => {}
                        _ => pending.push(t), // unknown fate: retried (idempotent) later
                    }
                }
            }
            65..=74 => {
                let live: Vec<u64> = w.members.iter().filter(|(_, m)| m.node.is_some()).map(|(id, _)| *id).collect();
                if live.len() == MEMBERS as usize {
                    w.crash(live[rng.gen_range(0..live.len())]).await;
                }
            }
            75..=86 => {
                let down: Vec<u64> = w.members.iter().filter(|(_, m)| m.node.is_none()).map(|(id, _)| *id).collect();
                if let Some(id) = down.first() {
                    w.restart(*id).await;
                }
            }
            87..=93 => {
                let mut cut = net.cut.lock().unwrap();
                if cut.is_empty() && w.members.values().all(|m| m.node.is_some()) {
                    cut.insert(rng.gen_range(1..=MEMBERS));
                }
            }
            _ => net.cut.lock().unwrap().clear(),
        }
        w.check_headers();
    }
    // Heal everything, finish the pending transfers, let everyone catch up.
    net.cut.lock().unwrap().clear();
    for id in 1..=MEMBERS {
        w.restart(id).await;
    }
    for (i, (id, f, t, a)) in std::mem::take(&mut pending).into_iter().enumerate() {
        match w.submit(transfer(&id, f, t, a), 900_000 + i as u64).await.as_ref().and_then(|v| v.as_str()) {
            Some("ok") | Some("dup") => acked.push(id),
            Some(_) => {}
            None => panic!("seed {seed}: the healed cluster did not take transfer {id}"),
        }
    }
    let barrier = w.submit(json!({"create_collection": obj(json!({"name": "barrier"}))}), 999_999).await;
    assert!(barrier.is_some(), "seed {seed}: barrier write failed");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let heads: BTreeSet<Vec<u8>> = w
            .members
            .values()
            .map(|m| m.node.as_ref().unwrap().1.snapshot().unwrap().meta("head").unwrap().unwrap_or_default())
            .collect();
        if heads.len() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "seed {seed}: members did not converge");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.check_headers();
    // Every member: the ledger's content, read through FQL on its own store.
    for (id, m) in &w.members {
        let (node, store) = m.node.as_ref().unwrap();
        let _ = node;
        let snap = store.snapshot().unwrap();
        let ts = tally_server::machine::meta_last_ts(&**store).unwrap();
        let auth = tally_fql::auth::Auth::new(0, tally_fql::auth::Role::Admin);
        let run = |q: serde_json::Value| {
            let e = tally_fql::expr::parse(&q).unwrap();
            let out = tally_fql::run::evaluate(
                &*snap,
                ts,
                tally_fql::eval::Mode::ReadOnly,
                auth.clone(),
                &e,
                [0; 32],
                Default::default(),
                None,
            );
            tally_value::to_json(&out.result.unwrap())
        };
        let rows = run(json!({"paginate": {"match": {"index": "transfer_rows"}}, "size": 100000}));
        let rows = rows["data"].as_array().unwrap();
        let ids: BTreeSet<&str> = rows.iter().map(|r| r[0].as_str().unwrap()).collect();
        assert_eq!(ids.len(), rows.len(), "seed {seed}, member {id}: a transfer applied twice");
        for a in &acked {
            assert!(ids.contains(a.as_str()), "seed {seed}, member {id}: acknowledged transfer {a} missing");
        }
        let mut expected = vec![START; ACCOUNTS as usize + 1];
        for r in rows {
            expected[r[1].as_u64().unwrap() as usize] -= r[3].as_i64().unwrap();
            expected[r[2].as_u64().unwrap() as usize] += r[3].as_i64().unwrap();
        }
        for i in 1..=ACCOUNTS {
            let b = run(json!({"select": ["data", "balance"], "from": {"get": acct(i)}}));
            assert_eq!(b.as_i64().unwrap(), expected[i as usize], "seed {seed}, member {id}: account {i}");
        }
        assert_eq!(expected[1..].iter().sum::<i64>(), START * ACCOUNTS as i64);
    }
    for id in 1..=MEMBERS {
        w.crash(id).await;
    }
    println!(
        "seed {seed}: {steps} steps, {} acknowledged transfers, drop {}‰, delay ≤ {} ms",
        acked.len(),
        net.drop_per_mille,
        net.delay_max_ms
    );
}

fn env_u64(k: &str) -> Option<u64> {
    std::env::var(k).ok().and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seeded_chaos_keeps_the_ledger_consistent() {
    let steps = env_u64("TALLY_SIM_STEPS").unwrap_or(30);
    let seeds: Vec<u64> = match (env_u64("TALLY_SIM_SEED"), env_u64("TALLY_SIM_SEEDS")) {
        (Some(s), _) => vec![s],
        (None, Some(n)) => (1..=n).collect(),
        (None, None) => vec![1, 2],
    };
    let started = Instant::now();
    for seed in seeds {
        run_seed(seed, steps).await;
    }
    println!("simulation: {:?}", started.elapsed());
}
