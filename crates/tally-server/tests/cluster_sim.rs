//! Deterministic simulation of the replicated write path: three in-process members with
//! the real storage (redb Raft log, FQL executor on redb, openraft), joined by an
//! in-process network that drops, delays and so reorders messages, while members crash
//! (stopped without a final checkpoint), restart and are cut off. A bank workload runs
//! throughout.
//!
//! After every step: no two members ever hold different block headers at the same height.
//! At the end (everyone restarted and healed): same head everywhere, total balance
//! unchanged, every acknowledged transfer present, none applied twice.
//!
//! Determinism: each seed runs on one thread, on a current-thread tokio runtime with
//! paused (virtual) time, with `tally_raft::runtime` in deterministic mode: openraft's
//! random draws come from the seed, the executor and the Raft log write inline, the
//! leader's batch clock and the checkpoint policy are virtual. The network's fate for each
//! message, the workload and the faults come from the seed too. So a seed replays exactly:
//! every run of it records the same trace (each step's outcome, each member's height and
//! head hash), and the test checks that by running a seed twice.
//!
//! CI runs a short simulation. A long run: `TALLY_SIM_SEEDS=1000 TALLY_SIM_STEPS=200 cargo
//! test --release -p tally-server --test cluster_sim -- --nocapture`, or `TALLY_SIM_MINUTES=10`
//! to run consecutive seeds for that long; `TALLY_SIM_SEED=n` runs (and replays) one seed,
//! `TALLY_SIM_REPLAY_ALL=1` replays every seed (not only the first), and `TALLY_SIM_TRACE=1`
//! prints each run's trace.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sha2::Digest;
use tally_calvin::Tenant;
use tally_exec::machine::{block_key, FqlMachine};
use tally_raft::network::{Faults, PeerClient};
use tally_raft::{ClusterConfig, LogStore, Machine, Raft, RaftNode, Snapshot, TypeConfig, Vote};
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
    type SnapshotData = tally_raft::SnapshotData;

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

async fn retry<T, E: std::fmt::Debug>(mut f: impl FnMut() -> Result<T, E>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match f() {
            Ok(v) => return v,
            // A task of the previous incarnation may still hold the files: let it finish.
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("reopening a member: {e:?}"),
        }
    }
}

thread_local! {
    static SIM_START: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Virtual time since this seed's simulation started.
fn sim_elapsed() -> Duration {
    let start = SIM_START.with(|s| s.get()).expect("simulation clock started");
    Instant::now().duration_since(start)
}

/// The leaders' batch clock: virtual time since the simulation started, from a fixed date.
fn sim_clock() -> u64 {
    const BASE_MICROS: u64 = 1_767_225_600_000_000; // 2026-01-01
    BASE_MICROS + sim_elapsed().as_micros() as u64
}

async fn open(id: u64, dir: &Path, net: &Arc<Net>, knobs: Knobs) -> (Arc<RaftNode>, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(retry(|| RedbStore::open(&dir.join("state.redb"))).await);
    let mut fql = FqlMachine::open(store.clone()).unwrap();
    fql.checkpoint_every_batches(knobs.checkpoint_batches);
    let last_ts = fql.applied_ts.clone();
    let sm = Machine::open(fql, &dir.join("snapshot")).unwrap();
    let log = retry(|| LogStore::open(&dir.join("log.redb"))).await;
    let members = (1..=MEMBERS).map(|i| (i, format!("sim-{i}"))).collect();
    let mut cfg = ClusterConfig::new(id, members, "sim".into(), 0);
    cfg.election_timeout_ms = (300, 600);
    cfg.heartbeat_ms = 60;
    cfg.write_timeout = Duration::from_secs(3);
    cfg.snapshot_logs = knobs.snapshot_logs;
    cfg.clock = sim_clock;
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
    let input = tally_exec::record::TxnInput {
        q,
        db: 0,
        role: "admin".into(),
        entropy: e,
        steps_max: 10_000_000,
        identity: None,
        token: None,
        jwt: None,
    };
    tally_exec::record::encode_input(&input).unwrap()
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
    let out = tally_exec::record::decode_output(out).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    body["resource"].clone()
}

#[derive(Clone, Copy)]
struct Knobs {
    snapshot_logs: u64,
    checkpoint_batches: u64,
}

struct World {
    net: Arc<Net>,
    members: BTreeMap<u64, Member>,
    knobs: Knobs,
    /// What happened, step by step: two runs of one seed must record the same.
    trace: Vec<String>,
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
                if let Ok(ok) = l
                    .submit_here(Tenant::DEFAULT, input(q.clone(), entropy), Instant::now() + Duration::from_secs(3))
                    .await
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
        let knobs = self.knobs;
        let m = self.members.get_mut(&id).unwrap();
        if m.node.is_none() {
            m.node = Some(open(id, &m.dir, &self.net, knobs).await);
        }
    }

    /// Each live member's `id@height:head` (short hash), for the trace.
    fn positions(&self) -> String {
        let mut out = Vec::new();
        for (id, m) in &self.members {
            match &m.node {
                Some((n, s)) => {
                    let h = tally_exec::machine::meta_height(&**s).unwrap();
                    let head = s.snapshot().unwrap().meta("head").unwrap().unwrap_or_default();
                    let digest = hex::encode(&sha2::Sha256::digest(&head)[..6]);
                    let m = n.metrics();
                    let term = m.current_term;
                    let leader = m.current_leader.map(|l| l.to_string()).unwrap_or_else(|| "-".into());
                    out.push(format!("{id}@{h}:{digest}(t{term},l{leader},i{:?})", m.last_log_index));
                }
                None => out.push(format!("{id}:down")),
            }
        }
        out.join(" ")
    }

    /// Safety: no two live members hold different headers at the same height.
    fn check_headers(&self) {
        let stores: Vec<(u64, &Arc<dyn Store>)> =
            self.members.iter().filter_map(|(id, m)| m.node.as_ref().map(|(_, s)| (*id, s))).collect();
        let heights: Vec<u64> = stores.iter().map(|(_, s)| tally_exec::machine::meta_height(&***s).unwrap()).collect();
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

/// What one seed's run recorded.
struct Outcome {
    trace: Vec<String>,
    acked: usize,
    virtual_secs: f64,
}

async fn run_seed(seed: u64, steps: u64) -> Outcome {
    SIM_START.with(|s| s.set(Some(Instant::now())));
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
        knobs: Knobs { snapshot_logs: rng.gen_range(10..=60), checkpoint_batches: rng.gen_range(1..=20) },
        trace: Vec::new(),
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
                let mut said = Vec::new();
                for (r, t) in results.into_iter().zip(batch) {
                    said.push(format!("{}={}", t.0, r.as_ref().and_then(|v| v.as_str()).unwrap_or("?")));
                    match r.as_ref().and_then(|v| v.as_str()) {
                        Some("ok") | Some("dup") => acked.push(t.0),
                        Some("insufficient") => {}
                        _ => pending.push(t), // unknown fate: retried (idempotent) later
                    }
                }
                w.trace.push(format!("transfers {}", said.join(" ")));
            }
            65..=74 => {
                let live: Vec<u64> = w.members.iter().filter(|(_, m)| m.node.is_some()).map(|(id, _)| *id).collect();
                if live.len() == MEMBERS as usize {
                    let id = live[rng.gen_range(0..live.len())];
                    w.crash(id).await;
                    w.trace.push(format!("crash {id}"));
                }
            }
            75..=86 => {
                let down: Vec<u64> = w.members.iter().filter(|(_, m)| m.node.is_none()).map(|(id, _)| *id).collect();
                if let Some(id) = down.first() {
                    w.restart(*id).await;
                    w.trace.push(format!("restart {id}"));
                }
            }
            87..=93 => {
                let mut cut = net.cut.lock().unwrap();
                if cut.is_empty() && w.members.values().all(|m| m.node.is_some()) {
                    let id = rng.gen_range(1..=MEMBERS);
                    cut.insert(id);
                    w.trace.push(format!("cut {id}"));
                }
            }
            _ => {
                net.cut.lock().unwrap().clear();
                w.trace.push("heal".into());
            }
        }
        w.check_headers();
        let at = w.positions();
        w.trace.push(format!("step {step} at {:?}: {at}", sim_elapsed()));
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
        let ts = tally_exec::machine::meta_last_ts(&**store).unwrap();
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
    w.trace.push(format!("end {}", w.positions()));
    for id in 1..=MEMBERS {
        w.crash(id).await;
    }
    let virtual_secs = sim_elapsed().as_secs_f64();
    Outcome { trace: w.trace, acked: acked.len(), virtual_secs }
}

fn env_u64(k: &str) -> Option<u64> {
    std::env::var(k).ok().and_then(|v| v.parse().ok())
}

/// Run one seed on its own thread: a current-thread runtime with paused time, the Raft
/// runtime in deterministic mode.
fn run_seed_deterministic(seed: u64, steps: u64) -> Outcome {
    std::thread::Builder::new()
        .name(format!("sim-{seed}"))
        .stack_size(256 << 20)
        .spawn(move || {
            tally_raft::runtime::enter_deterministic(seed);
            let mut builder = tokio::runtime::Builder::new_current_thread();
            builder.enable_all().start_paused(true);
            // tokio's own random choices (which of a watch channel's waiters wakes first)
            // must come from the seed too (needs `--cfg tokio_unstable`, .cargo/config.toml).
            #[cfg(tokio_unstable)]
            builder.rng_seed(tokio::runtime::RngSeed::from_bytes(&seed.to_be_bytes()));
            let rt = builder.build().unwrap();
            let out = rt.block_on(run_seed(seed, steps));
            drop(rt);
            tally_raft::runtime::leave_deterministic();
            out
        })
        .unwrap()
        .join()
        .unwrap_or_else(|_| panic!("seed {seed} failed (TALLY_SIM_SEED={seed} replays it)"))
}

/// Where two traces of one seed first differ, for the failure message.
fn first_difference(a: &[String], b: &[String]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!("line {i}:\n  first run:  {}\n  second run: {}", a[i], b[i]),
        None => format!("one trace is longer ({} vs {} lines)", a.len(), b.len()),
    }
}

#[test]
fn seeded_chaos_keeps_the_ledger_consistent() {
    let steps = env_u64("TALLY_SIM_STEPS").unwrap_or(40);
    // Seeds to run, and an optional time budget (consecutive seeds until it runs out).
    let (first, last, budget) =
        match (env_u64("TALLY_SIM_SEED"), env_u64("TALLY_SIM_SEEDS"), env_u64("TALLY_SIM_MINUTES")) {
            (Some(s), _, _) => (s, s, None),
            (None, Some(n), m) => (1, n.max(1), m.map(|m| Duration::from_secs(m * 60))),
            (None, None, Some(m)) => (1, u64::MAX, Some(Duration::from_secs(m * 60))),
            (None, None, None) => (1, 4, None),
        };
    let started = std::time::Instant::now();
    let (mut runs, mut total_steps, mut acked) = (0u64, 0u64, 0usize);
    for seed in first..=last {
        if budget.is_some_and(|b| started.elapsed() >= b) {
            break;
        }
        let o = run_seed_deterministic(seed, steps);
        let replay = seed == first || std::env::var_os("TALLY_SIM_REPLAY_ALL").is_some();
        if replay && cfg!(tokio_unstable) {
            // A replayed seed runs twice: both runs must record the same trace.
            let again = run_seed_deterministic(seed, steps);
            assert!(
                o.trace == again.trace,
                "seed {seed} did not replay exactly: {}",
                first_difference(&o.trace, &again.trace)
            );
            println!("seed {seed} replayed exactly ({} trace lines)", o.trace.len());
        } else if replay {
            println!("built without --cfg tokio_unstable (RUSTFLAGS overrides .cargo/config.toml): replay not checked");
        }
        if std::env::var_os("TALLY_SIM_TRACE").is_some() {
            o.trace.iter().for_each(|l| println!("  {l}"));
        }
        runs += 1;
        total_steps += steps;
        acked += o.acked;
        println!(
            "seed {seed}: {steps} steps, {} acknowledged transfers, {:.0} s of virtual time",
            o.acked, o.virtual_secs
        );
    }
    println!(
        "simulation: {runs} seeds, {total_steps} steps, {acked} acknowledged transfers in {:?}",
        started.elapsed()
    );
}
