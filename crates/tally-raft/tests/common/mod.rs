//! What the member tests share: a small machine that can hold a batch until the test lets
//! it go, and real members around it (Raft log on redb, openraft, peer port on loopback).

#![allow(dead_code)] // each test file uses its own part

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tally_calvin::{Batch, MachineError, ReplicatedMachine, StateMachine};
use tally_raft::network::Faults;
use tally_raft::{ClusterConfig, LogStore, Machine, RaftNode};
use tokio::task::JoinHandle;

/// Where a [`Held`] machine stops, once, until its gate opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldAt {
    /// Before applying its first batch.
    FirstBatch,
    /// In its first batch of two or more inputs, after releasing input 0.
    AfterFirstOutput,
}

/// A machine's height and Raft position as it last recorded them: what a backup of it
/// taken now would hold.
pub type Recorded = Arc<Mutex<(u64, Option<Vec<u8>>)>>;

/// Echoes each input as its output and takes `per_input` for each; with a gate, holds
/// once where `hold_at` says, after telling the test on `held`.
pub struct Held {
    height: u64,
    position: Option<Vec<u8>>,
    gate: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
    hold_at: HoldAt,
    per_input: Duration,
    recorded: Option<Recorded>,
    hints: Option<Hints>,
}

/// The inputs a machine applied, each with whether a hint came with it that holds its own
/// bytes (as `Vec<u8>`): what the member's request thread would have decoded from it.
pub type Hints = Arc<Mutex<Vec<(Vec<u8>, bool)>>>;

impl Held {
    pub fn new(gate: Option<MachineGate>, hold_at: HoldAt, per_input: Duration) -> Held {
        Held {
            height: 0,
            position: None,
            gate: gate.map(|g| (g.held, g.open)),
            hold_at,
            per_input,
            recorded: None,
            hints: None,
        }
    }

    /// A machine restored from a backup: it starts at `height` with that `position`.
    pub fn restored(height: u64, position: Vec<u8>) -> Held {
        Held { height, position: Some(position), ..Held::new(None, HoldAt::FirstBatch, Duration::ZERO) }
    }

    /// Keep `recorded` up to date with this machine's height and position.
    pub fn recording(mut self, recorded: Recorded) -> Held {
        *recorded.lock().unwrap() = (self.height, self.position.clone());
        self.recorded = Some(recorded);
        self
    }

    /// Keep in `hints` every input applied and whether its hint came with it.
    pub fn noting_hints(mut self, hints: Hints) -> Held {
        self.hints = Some(hints);
        self
    }

    fn record(&self) {
        if let Some(r) = &self.recorded {
            *r.lock().unwrap() = (self.height, self.position.clone());
        }
    }

    fn hold(&mut self) {
        if let Some((held, gate)) = self.gate.take() {
            let _ = held.send(());
            let _ = gate.recv();
        }
    }
}

impl StateMachine for Held {
    fn applied_height(&self) -> u64 {
        self.height
    }
    fn apply(&mut self, b: &Batch) -> Vec<Vec<u8>> {
        if self.hold_at == HoldAt::FirstBatch {
            self.hold();
        }
        self.height = b.height;
        std::thread::sleep(self.per_input * b.inputs.len() as u32);
        b.inputs.clone()
    }
    fn last_commit_ts(&self) -> u64 {
        0
    }
    fn rules(&self) -> u16 {
        Batch::UNSTAMPED
    }
}

impl ReplicatedMachine for Held {
    fn apply_at(&mut self, b: &Batch, position: &[u8]) -> Vec<Vec<u8>> {
        self.position = Some(position.to_vec());
        let outputs = self.apply(b);
        self.record();
        outputs
    }
    fn apply_at_answering(&mut self, b: &Batch, position: &[u8], answer: &mut dyn FnMut(usize, Vec<u8>)) {
        let mut outputs = self.apply_at(b, position).into_iter().enumerate();
        if self.hold_at == HoldAt::AfterFirstOutput && b.inputs.len() >= 2 && self.gate.is_some() {
            let (i, out) = outputs.next().unwrap_or_default();
            answer(i, out);
            self.hold();
        }
        for (i, out) in outputs {
            answer(i, out);
        }
    }
    fn apply_at_decoded(
        &mut self,
        b: &Batch,
        position: &[u8],
        decoded: &mut [Option<tally_calvin::Decoded>],
        answer: &mut dyn FnMut(usize, Vec<u8>),
    ) {
        if let Some(hints) = &self.hints {
            let mut hints = hints.lock().unwrap();
            for (i, input) in b.inputs.iter().enumerate() {
                let hint = decoded.get_mut(i).and_then(Option::take).and_then(|d| d.downcast::<Vec<u8>>().ok());
                hints.push((input.clone(), hint.is_some_and(|h| *h == *input)));
            }
        }
        self.apply_at_answering(b, position, answer)
    }
    fn set_position(&mut self, position: &[u8]) -> Result<(), MachineError> {
        self.position = Some(position.to_vec());
        self.record();
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

/// The test's side of a gate: `held` says the machine is holding, sending on `open` lets
/// it go on.
pub struct Gate {
    pub held: mpsc::Receiver<()>,
    pub open: mpsc::Sender<()>,
}

/// The machine's side of a gate.
pub struct MachineGate {
    held: mpsc::Sender<()>,
    open: mpsc::Receiver<()>,
}

pub fn gate() -> (Gate, MachineGate) {
    let (held_tx, held) = mpsc::channel();
    let (open, open_rx) = mpsc::channel();
    (Gate { held, open }, MachineGate { held: held_tx, open: open_rx })
}

pub struct Member {
    pub node: Arc<RaftNode>,
    pub server: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

pub async fn peer_listener() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

/// Start member `id` over `machine` (forming a cluster of `initial` if it is listed there)
/// with its peer port served on `listener`; `configure` adjusts the defaults.
pub async fn start(
    id: u64,
    initial: BTreeMap<u64, String>,
    listener: tokio::net::TcpListener,
    machine: Held,
    configure: impl FnOnce(&mut ClusterConfig),
) -> Member {
    let dir = tempfile::tempdir().unwrap();
    let log = LogStore::open(&dir.path().join("log.redb")).unwrap();
    let sm = Machine::open(machine, &dir.path().join("snapshot")).unwrap();
    let mut cfg = ClusterConfig::new(id, initial, "member-test-token".into(), 0);
    cfg.write_timeout = Duration::from_secs(60);
    configure(&mut cfg);
    let node = RaftNode::start(cfg, log, sm, Arc::new(Faults::default()), Default::default()).await.unwrap();
    let router = tally_raft::peer::router(node.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Member { node, server, _dir: dir }
}

impl Member {
    pub async fn stop(self) {
        self.node.shutdown().await;
        self.server.abort();
    }
}

pub async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
