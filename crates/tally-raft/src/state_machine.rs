//! The Raft state machine: applies committed entries through a
//! [`ReplicatedMachine`] (the FQL executor) running on its own OS thread.
//!
//! Position: with every entry the machine records `{log id, membership}` in the same
//! storage commit as the entry's effects, so `applied_state` after a crash is exactly what
//! the last durable checkpoint holds, and openraft re-applies the rest from its log. The
//! log is never purged past a snapshot, and building a snapshot forces a durable
//! checkpoint first, so the entries after the durable checkpoint are always still in the
//! log.
//!
//! Snapshots are the machine's full export, kept as files in the snapshot directory
//! ([`crate::snapshot_store`]) and never held in memory: building one takes a read view
//! on the executor (after a durable checkpoint) and streams it to the file on a blocking
//! thread while the executor goes on applying; installing one streams the received file
//! into the store as one commit (a damaged one changes nothing).

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use futures_util::StreamExt;
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::vote::RaftLeaderId;
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};
use tally_calvin::{Batch, ExportWriter, ReplicatedMachine};
use tokio::sync::oneshot;

use crate::early::{Early, Sink};
use crate::snapshot_store::{SnapshotDir, SnapshotFile, SNAPSHOT_IO_BUFFER_BYTES};
use crate::{BatchResponse, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};

/// Stack of the executor thread (evaluation recurses; the evaluator bounds the depth).
pub const EXECUTOR_STACK_BYTES: usize = tally_calvin::EXECUTOR_STACK_BYTES;

type Job<M> = Box<dyn FnOnce(&mut M) + Send>;

/// Runs closures on the thread that owns the machine, one at a time, in order. In
/// [deterministic](crate::runtime) mode the closures run inline on the caller's thread.
pub enum Executor<M> {
    Thread(mpsc::Sender<Job<M>>),
    Inline(Arc<std::sync::Mutex<M>>),
}

impl<M> Clone for Executor<M> {
    fn clone(&self) -> Self {
        match self {
            Executor::Thread(tx) => Executor::Thread(tx.clone()),
            Executor::Inline(m) => Executor::Inline(m.clone()),
        }
    }
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl<M: ReplicatedMachine + 'static> Executor<M> {
    pub fn start(mut machine: M) -> io::Result<Executor<M>> {
        if crate::runtime::is_deterministic() {
            return Ok(Executor::Inline(Arc::new(std::sync::Mutex::new(machine))));
        }
        let (tx, rx) = mpsc::channel::<Job<M>>();
        std::thread::Builder::new().name("tally-executor".into()).stack_size(EXECUTOR_STACK_BYTES).spawn(
            move || {
                while let Ok(job) = rx.recv() {
                    job(&mut machine);
                }
            },
        )?;
        Ok(Executor::Thread(tx))
    }

    pub async fn call<R: Send + 'static>(&self, f: impl FnOnce(&mut M) -> R + Send + 'static) -> io::Result<R> {
        let tx = match self {
            Executor::Thread(tx) => tx,
            Executor::Inline(m) => {
                let mut m = m.lock().map_err(|_| io_err("the executor panicked"))?;
                return Ok(f(&mut m));
            }
        };
        let (otx, orx) = oneshot::channel();
        let job: Job<M> = Box::new(move |m| {
            let _ = otx.send(f(m));
        });
        tx.send(job).map_err(|_| io_err("the executor thread has stopped"))?;
        orx.await.map_err(|_| io_err("the executor thread dropped a job"))
    }
}

/// What the machine records with every entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub log_id: Option<LogId>,
    pub membership: StoredMembership,
}

impl Position {
    fn encode(&self) -> Vec<u8> {
        crate::wire::encode_position(&self.log_id, &self.membership)
    }
    fn decode(b: &[u8]) -> io::Result<Position> {
        let (log_id, membership) = crate::wire::decode_position(b).map_err(io_err)?;
        Ok(Position { log_id, membership })
    }
}

/// Type-erased view of the executor for the snapshot builder and the node.
trait Engine: Send + Sync {
    /// A durable checkpoint, then the position and a writer of the state at it.
    fn checkpoint_and_view(&self) -> futures_util::future::BoxFuture<'static, io::Result<(Vec<u8>, ExportWriter)>>;
    /// Replace the state with the export read from `data`, and record `pos`, durably.
    fn import(&self, data: std::fs::File, pos: Vec<u8>) -> futures_util::future::BoxFuture<'static, io::Result<()>>;
    fn apply(
        &self,
        batch: Batch,
        pos: Vec<u8>,
        released: Option<Released>,
    ) -> futures_util::future::BoxFuture<'static, io::Result<BatchResponse>>;
    fn set_position(&self, pos: Vec<u8>) -> futures_util::future::BoxFuture<'static, io::Result<()>>;
    fn checkpoint(&self) -> futures_util::future::BoxFuture<'static, io::Result<()>>;
}

impl<M: ReplicatedMachine + 'static> Engine for Executor<M> {
    fn checkpoint_and_view(&self) -> futures_util::future::BoxFuture<'static, io::Result<(Vec<u8>, ExportWriter)>> {
        let ex = self.clone();
        Box::pin(async move {
            ex.call(|m| -> io::Result<(Vec<u8>, ExportWriter)> {
                m.checkpoint().map_err(io_err)?;
                let pos = m.position().map_err(io_err)?.unwrap_or_default();
                Ok((pos, m.export_view().map_err(io_err)?))
            })
            .await?
        })
    }

    fn import(&self, data: std::fs::File, pos: Vec<u8>) -> futures_util::future::BoxFuture<'static, io::Result<()>> {
        let ex = self.clone();
        Box::pin(async move {
            ex.call(move |m| -> io::Result<()> {
                let mut r = io::BufReader::with_capacity(SNAPSHOT_IO_BUFFER_BYTES, data);
                m.import_from(&mut r).map_err(io_err)?;
                m.set_position(&pos).map_err(io_err)?;
                m.checkpoint().map_err(io_err)
            })
            .await?
        })
    }

    fn apply(
        &self,
        mut batch: Batch,
        pos: Vec<u8>,
        released: Option<Released>,
    ) -> futures_util::future::BoxFuture<'static, io::Result<BatchResponse>> {
        let ex = self.clone();
        Box::pin(async move {
            ex.call(move |m| {
                // The block height is the machine's own count of applied batches.
                batch.height = m.applied_height() + 1;
                let Some(mut rel) = released else {
                    let outputs = m.apply_at(&batch, &pos);
                    return BatchResponse { height: batch.height, outputs };
                };
                let mut outputs = Vec::with_capacity(batch.inputs.len());
                let started = std::time::Instant::now();
                let mut decoded = std::mem::take(&mut rel.decoded);
                m.apply_at_decoded(&batch, &pos, &mut decoded, &mut |i, out| {
                    rel.early.set_progress(rel.index, i + 1);
                    match rel.sink.as_mut() {
                        // The sink answered this input; the batcher's copy of its reply is
                        // gone, so the response needs only the count.
                        Some(sink) => {
                            sink(i, out, rel.index, batch.height);
                            outputs.push(Vec::new());
                        }
                        None => outputs.push(out),
                    }
                });
                rel.early.record_apply(started.elapsed(), batch.inputs.len());
                BatchResponse { height: batch.height, outputs }
            })
            .await
        })
    }

    fn set_position(&self, pos: Vec<u8>) -> futures_util::future::BoxFuture<'static, io::Result<()>> {
        let ex = self.clone();
        Box::pin(async move { ex.call(move |m| m.set_position(&pos).map_err(io_err)).await? })
    }

    fn checkpoint(&self) -> futures_util::future::BoxFuture<'static, io::Result<()>> {
        let ex = self.clone();
        Box::pin(async move { ex.call(|m| m.checkpoint().map_err(io_err)).await? })
    }
}

/// What the executor does with outputs released while it applies the entry at `index`:
/// hand them to this member's submitters (`sink`, on the leader that proposed the batch)
/// and record how far the entry is visible (for a follower's forwarded writes).
struct Released {
    index: u64,
    sink: Option<Sink>,
    /// What this member's request threads decoded from the entry's inputs, when it
    /// proposed the entry (empty otherwise).
    decoded: Vec<Option<tally_calvin::Decoded>>,
    early: Arc<Early>,
}

/// The openraft state machine over a [`ReplicatedMachine`].
pub struct Machine {
    engine: Arc<dyn Engine>,
    position: Position,
    snapshots: Arc<SnapshotDir>,
    /// Outputs released during an apply; `None` in deterministic mode, where intermediate
    /// commits would depend on the wall clock.
    pub(crate) early: Option<Arc<Early>>,
    /// This member's id, set by [`RaftNode`](crate::RaftNode): entries it proposed may have
    /// a registered sink.
    pub(crate) node_id: Option<u64>,
    /// Raft index of the last applied entry, for waiters outside openraft.
    pub applied_index: Arc<AtomicU64>,
    /// Woken whenever `applied_index` moves.
    pub applied_notify: Arc<tokio::sync::Notify>,
    /// The executor rules of the machine inside ([`tally_calvin::StateMachine::rules`]): the
    /// leader stamps the batches it proposes with them.
    pub rules: u16,
}

impl Machine {
    /// Start the executor thread over `machine`; snapshots live in `snapshot_dir`.
    pub fn open<M: ReplicatedMachine + 'static>(machine: M, snapshot_dir: &Path) -> io::Result<Machine> {
        let snapshots = SnapshotDir::open(snapshot_dir)?;
        let position = match machine.position().map_err(io_err)? {
            Some(b) => Position::decode(&b)?,
            None => Position::default(),
        };
        let applied = position.log_id.as_ref().map(|l| l.index).unwrap_or(0);
        let rules = machine.rules();
        Ok(Machine {
            rules,
            engine: Arc::new(Executor::start(machine)?),
            position,
            snapshots,
            applied_index: Arc::new(AtomicU64::new(applied)),
            applied_notify: Arc::new(tokio::sync::Notify::new()),
            early: (!crate::runtime::is_deterministic()).then(|| Arc::new(Early::default())),
            node_id: None,
        })
    }

    /// The snapshot directory (a member receiving a snapshot streams it into a temporary
    /// file there).
    pub fn snapshots(&self) -> Arc<SnapshotDir> {
        self.snapshots.clone()
    }

    /// A durable checkpoint now (clean shutdown).
    pub fn checkpoint_handle(&self) -> impl Fn() -> futures_util::future::BoxFuture<'static, io::Result<()>> {
        let e = self.engine.clone();
        move || e.checkpoint()
    }
}

pub struct SnapshotBuilder {
    engine: Arc<dyn Engine>,
    snapshots: Arc<SnapshotDir>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    /// openraft runs this in a task of its own; the executor is held only for the
    /// checkpoint and the read view, and goes on applying while the file is written.
    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        // Position and view come from one executor call: no entry is applied in between.
        let (pos, writer) = self.engine.checkpoint_and_view().await?;
        let pos = if pos.is_empty() { Position::default() } else { Position::decode(&pos)? };
        let meta = SnapshotMeta { last_log_id: pos.log_id, last_membership: pos.membership };
        let (snapshots, m2) = (self.snapshots.clone(), meta.clone());
        let started = std::time::Instant::now();
        let data = crate::runtime::blocking(move || snapshots.build(&m2, |w| writer(w).map_err(io_err))).await??;
        tracing::info!(
            last_log_id = ?meta.last_log_id, bytes = data.len(), ms = started.elapsed().as_millis() as u64,
            "built a snapshot"
        );
        Ok(Snapshot { meta, snapshot: data })
    }
}

impl RaftStateMachine<TypeConfig> for Machine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.position.log_id, self.position.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures_util::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let log_id = entry.log_id();
            let mut next = Position { log_id: Some(log_id), membership: self.position.membership.clone() };
            let response = match entry.payload {
                EntryPayload::Normal(req) => {
                    let batch = Batch::decode(&req.0).map_err(io_err)?;
                    let released = self.early.as_ref().map(|early| {
                        let leader = log_id.committed_leader_id();
                        let mine = self.node_id == Some(*leader.node_id());
                        let claimed = if mine { early.claim(leader.term(), batch.ts) } else { None };
                        let (sink, decoded) = match claimed {
                            Some(c) => (Some(c.sink), c.decoded),
                            None => (None, Vec::new()),
                        };
                        Released { index: log_id.index, sink, decoded, early: early.clone() }
                    });
                    self.engine.apply(batch, next.encode(), released).await?
                }
                EntryPayload::Blank => {
                    self.engine.set_position(next.encode()).await?;
                    BatchResponse::default()
                }
                EntryPayload::Membership(m) => {
                    next.membership = StoredMembership::new(Some(log_id), m);
                    self.engine.set_position(next.encode()).await?;
                    BatchResponse::default()
                }
            };
            self.position = next;
            self.applied_index.store(log_id.index, Ordering::Release);
            self.applied_notify.notify_waiters();
            if let Some(r) = responder {
                r.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { engine: self.engine.clone(), snapshots: self.snapshots.clone() }
    }

    /// The data is a file (received from the leader, or this member's own snapshot on a
    /// restart): the machine reads it as a stream, then it becomes the current snapshot.
    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotFile) -> Result<(), io::Error> {
        let pos = Position { log_id: meta.last_log_id, membership: meta.last_membership.clone() };
        let started = std::time::Instant::now();
        let bytes = snapshot.len();
        self.engine.import(snapshot.reader()?, pos.encode()).await?;
        let snapshots = self.snapshots.clone();
        let m2 = meta.clone();
        crate::runtime::blocking(move || snapshots.save(&m2, snapshot)).await??;
        self.applied_index.store(pos.log_id.as_ref().map(|l| l.index).unwrap_or(0), Ordering::Release);
        self.applied_notify.notify_waiters();
        self.position = pos;
        tracing::info!(
            last_log_id = ?meta.last_log_id, bytes, ms = started.elapsed().as_millis() as u64, "installed a snapshot"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let snapshots = self.snapshots.clone();
        crate::runtime::blocking(move || snapshots.load()).await?
    }
}
