//! The durable Raft log: one redb file (`raft-log.redb`) with two tables.
//!
//! | table  | key           | value                         |
//! |--------|---------------|-------------------------------|
//! | `log`  | index `u64`   | the entry (`wire::encode_entry`) |
//! | `meta` | `&str`        | `vote` (`wire::encode_vote`), `committed`, `purged` (`wire::encode_log_id`) |
//!
//! The values are Raft records (`crate::wire`, docs/record.md); the JSON values of
//! earlier builds are still read.
//!
//! Every append, vote, truncation and purge reaches the file in a redb write transaction
//! with `Durability::Immediate` (fsync) — the entry a majority acknowledges is on disk. The
//! committed log id is saved without an fsync: losing it only means re-learning it from the
//! leader.
//!
//! The writes run on one writer thread (`tally-raftlog`), in the order they were asked for,
//! so openraft's core never waits for an fsync: `append` keeps the entries in memory
//! (`Shared::pending`, where readers find them at once, as openraft's contract asks) and
//! returns; the writer commits every operation queued by then in one transaction, calls
//! the appends' callbacks (openraft counts an entry as this member's only then) and drops
//! the entries from memory. So the leader replicates an entry while its own fsync runs,
//! and entries that arrive during an fsync share the next one. A vote, a truncation and a
//! purge are waited for (they are rare, and what a reader sees must not go back). A failed
//! write stops the log: it and every later operation fail (a later append must not leave a
//! hole). In deterministic mode (the simulation, [`crate::runtime`]) every write runs
//! inline instead, as before.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock};

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::wire::{decode_entry, decode_log_id, decode_vote, encode_entry, encode_log_id, encode_vote, WireError};
use crate::{Entry, LogId, TypeConfig, Vote};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const META_VOTE: &str = "vote";
const META_COMMITTED: &str = "committed";
const META_PURGED: &str = "purged";

/// Operations the writer takes into one transaction, at most (a bound on its size; more
/// wait for the next).
const GROUP_OPS_MAX: usize = 256;

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// An encoded entry, shared by the pending map and the write that stores it.
type Row = Arc<Vec<u8>>;

/// Entries appended and not yet in the file, by index.
type Pending = Arc<Mutex<BTreeMap<u64, Row>>>;

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One write, in the order openraft asked for it.
enum Op {
    Append {
        rows: Vec<(u64, Row)>,
        callback: IOFlushed<TypeConfig>,
    },
    /// A meta value; `durable: false` only for the committed id.
    Meta {
        key: &'static str,
        value: Vec<u8>,
        durable: bool,
        done: Option<Done>,
    },
    /// Remove entries from `from` on.
    Truncate {
        from: u64,
        done: Done,
    },
    /// Record `purged` and remove entries up to `upto`.
    Purge {
        upto: u64,
        purged: Vec<u8>,
        done: Done,
    },
}

type Done = tokio::sync::oneshot::Sender<io::Result<()>>;

impl Op {
    fn durable(&self) -> bool {
        !matches!(self, Op::Meta { durable: false, .. })
    }

    /// Its part of a write transaction.
    fn write(&self, txn: &redb::WriteTransaction) -> io::Result<()> {
        match self {
            Op::Append { rows, .. } => {
                let mut t = txn.open_table(LOG).map_err(io_err)?;
                for (i, v) in rows {
                    t.insert(*i, v.as_slice()).map_err(io_err)?;
                }
            }
            Op::Meta { key, value, .. } => {
                txn.open_table(META).map_err(io_err)?.insert(*key, value.as_slice()).map_err(io_err)?;
            }
            Op::Truncate { from, .. } => {
                txn.open_table(LOG).map_err(io_err)?.retain_in(*from.., |_, _| false).map_err(io_err)?;
            }
            Op::Purge { upto, purged, .. } => {
                txn.open_table(META).map_err(io_err)?.insert(META_PURGED, purged.as_slice()).map_err(io_err)?;
                txn.open_table(LOG).map_err(io_err)?.retain_in(..=*upto, |_, _| false).map_err(io_err)?;
            }
        }
        Ok(())
    }

    /// Tell whoever waits how it went, once its transaction committed (or failed); an
    /// append's entries leave the pending map then (unless replaced meanwhile: a
    /// truncation and a new append at the same index).
    fn finish(self, result: &io::Result<()>, pending: &Mutex<BTreeMap<u64, Row>>) {
        let again = || match result {
            Ok(()) => Ok(()),
            Err(e) => Err(io_err(e)),
        };
        match self {
            Op::Append { rows, callback } => {
                if result.is_ok() {
                    let mut p = locked(pending);
                    for (i, v) in &rows {
                        if p.get(i).is_some_and(|w| Arc::ptr_eq(w, v)) {
                            p.remove(i);
                        }
                    }
                }
                callback.io_completed(again());
            }
            Op::Meta { done, .. } => {
                if let Some(done) = done {
                    let _ = done.send(again());
                }
            }
            Op::Truncate { done, .. } | Op::Purge { done, .. } => {
                let _ = done.send(again());
            }
        }
    }
}

/// Write `ops` in one transaction, durable if any of them must be.
fn write_group(db: &Database, ops: &[Op]) -> io::Result<()> {
    let mut txn = db.begin_write().map_err(io_err)?;
    let durable = ops.iter().any(Op::durable);
    txn.set_durability(if durable { Durability::Immediate } else { Durability::None }).map_err(io_err)?;
    for op in ops {
        op.write(&txn)?;
    }
    txn.commit().map_err(io_err)
}

/// The writer thread: takes what is queued, writes it as one transaction, answers. After
/// a failure every later operation fails with the same error.
fn run_writer(db: Arc<Database>, pending: Pending, rx: mpsc::Receiver<Op>) {
    let mut failed: Option<String> = None;
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < GROUP_OPS_MAX {
            match rx.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        let result = match &failed {
            Some(e) => Err(io_err(format!("the raft log stopped after a failed write: {e}"))),
            None => write_group(&db, &group),
        };
        if let Err(e) = &result {
            if failed.is_none() {
                tracing::error!(error = %e, "raft log write failed; the log stops");
                failed = Some(e.to_string());
            }
        }
        for op in group {
            op.finish(&result, &pending);
        }
    }
}

/// The Raft log store; cheap to clone (readers share the database).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    pending: Pending,
    /// The writer thread's queue, started at the first write outside deterministic mode.
    writer: Arc<OnceLock<Mutex<mpsc::Sender<Op>>>>,
    /// The committed id last handed to the writer (it is written lazily).
    committed: Arc<Mutex<Option<Vec<u8>>>>,
    /// Bytes of entries appended since the store was opened (the node snapshots, and so
    /// lets the log be purged, every `ClusterConfig::snapshot_log_bytes` of them).
    appended_bytes: Arc<AtomicU64>,
}

impl LogStore {
    pub fn open(path: &Path) -> io::Result<LogStore> {
        let db = Database::create(path).map_err(io_err)?;
        let txn = db.begin_write().map_err(io_err)?;
        txn.open_table(LOG).map_err(io_err)?;
        txn.open_table(META).map_err(io_err)?;
        txn.commit().map_err(io_err)?;
        Ok(LogStore {
            db: Arc::new(db),
            pending: Default::default(),
            writer: Default::default(),
            committed: Default::default(),
            appended_bytes: Default::default(),
        })
    }

    /// The count of bytes appended since open, shared with the store's clones.
    pub fn appended_bytes(&self) -> Arc<AtomicU64> {
        self.appended_bytes.clone()
    }

    fn meta<T>(&self, key: &str, decode: fn(&[u8]) -> Result<T, WireError>) -> io::Result<Option<T>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let t = txn.open_table(META).map_err(io_err)?;
        match t.get(key).map_err(io_err)? {
            Some(v) => decode(v.value()).map(Some).map_err(|e| io_err(format!("raft log meta {key:?}: {e}"))),
            None => Ok(None),
        }
    }

    /// Hand `op` to the writer; in deterministic mode write it here and now.
    fn submit(&self, op: Op) {
        if crate::runtime::is_deterministic() {
            let result = write_group(&self.db, std::slice::from_ref(&op));
            op.finish(&result, &self.pending);
            return;
        }
        let tx = self.writer.get_or_init(|| {
            let (tx, rx) = mpsc::channel();
            let (db, pending) = (self.db.clone(), self.pending.clone());
            // The thread ends once every clone of the store is gone and the queue is drained.
            let spawned =
                std::thread::Builder::new().name("tally-raftlog".into()).spawn(move || run_writer(db, pending, rx));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the raft log writer");
            }
            Mutex::new(tx)
        });
        if let Err(mpsc::SendError(op)) = locked(tx).send(op) {
            op.finish(&Err(io_err("the raft log writer is not running")), &self.pending);
        }
    }

    /// Submit an operation that answers on `done` and wait for it.
    async fn submit_and_wait(&self, op: impl FnOnce(Done) -> Op) -> io::Result<()> {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.submit(op(done));
        answer.await.map_err(|_| io_err("the raft log writer stopped"))?
    }

    fn read_range(&self, lo: Bound<u64>, hi: Bound<u64>) -> io::Result<Vec<Entry>> {
        // The pending map first: an entry leaves it only after its commit, so one that is
        // not found there is found in the file by the read transaction begun after.
        let pending: Vec<(u64, Row)> = locked(&self.pending).range((lo, hi)).map(|(i, v)| (*i, v.clone())).collect();
        let txn = self.db.begin_read().map_err(io_err)?;
        let t = txn.open_table(LOG).map_err(io_err)?;
        let mut out = Vec::new();
        // Pending entries are the log's tail: the file is read only below the first.
        let stored_hi = match pending.first() {
            Some((first, _)) => Bound::Excluded(*first),
            None => hi,
        };
        let below = match (lo, stored_hi) {
            (Bound::Included(a), Bound::Excluded(b)) | (Bound::Excluded(a), Bound::Excluded(b)) => a < b,
            _ => true,
        };
        if below {
            for item in t.range::<u64>((lo, stored_hi)).map_err(io_err)? {
                let (_, v) = item.map_err(io_err)?;
                out.push(decode_entry(v.value()).map_err(io_err)?);
            }
        }
        for (_, v) in &pending {
            out.push(decode_entry(v).map_err(io_err)?);
        }
        Ok(out)
    }

    fn last_entry_id(&self) -> io::Result<Option<LogId>> {
        if let Some(v) = locked(&self.pending).last_key_value().map(|(_, v)| v.clone()) {
            return Ok(Some(decode_entry(&v).map_err(io_err)?.log_id()));
        }
        let txn = self.db.begin_read().map_err(io_err)?;
        let t = txn.open_table(LOG).map_err(io_err)?;
        let last = t.last().map_err(io_err)?;
        let id = match last {
            Some((_, v)) => Some(decode_entry(v.value()).map_err(io_err)?.log_id()),
            None => None,
        };
        Ok(id)
    }
}

fn bounds<RB: RangeBounds<u64>>(r: &RB) -> (Bound<u64>, Bound<u64>) {
    (r.start_bound().cloned(), r.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (lo, hi) = bounds(&range);
        self.read_range(lo, hi)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.meta(META_VOTE, decode_vote)
    }

    /// At most this many entries per read, so one append request stays bounded.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, io::Error> {
        const ENTRIES_MAX: u64 = 64;
        let end = end.min(start.saturating_add(ENTRIES_MAX));
        self.read_range(Bound::Included(start), Bound::Excluded(end))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let purged: Option<LogId> = self.meta(META_PURGED, decode_log_id)?.flatten();
        let last = self.last_entry_id()?.or(purged);
        Ok(LogState { last_purged_log_id: purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let value = encode_vote(vote);
        self.submit_and_wait(|done| Op::Meta { key: META_VOTE, value, durable: true, done: Some(done) }).await
    }

    /// Not waited for: the next durable write carries it, and losing it only means
    /// re-learning it from the leader.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let value = encode_log_id(&committed);
        *locked(&self.committed) = Some(value.clone());
        self.submit(Op::Meta { key: META_COMMITTED, value, durable: false, done: None });
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        let queued = locked(&self.committed).clone();
        match queued {
            Some(v) => decode_log_id(&v).map_err(|e| io_err(format!("raft log meta {META_COMMITTED:?}: {e}"))),
            None => Ok(self.meta(META_COMMITTED, decode_log_id)?.flatten()),
        }
    }

    /// Returns once the entries are readable; `callback` is told when they are on disk.
    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let rows: Vec<(u64, Row)> = entries.into_iter().map(|e| (e.index(), Arc::new(encode_entry(&e)))).collect();
        let bytes: usize = rows.iter().map(|(_, v)| v.len()).sum();
        self.appended_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        {
            let mut p = locked(&self.pending);
            for (i, v) in &rows {
                p.insert(*i, v.clone());
            }
        }
        self.submit(Op::Append { rows, callback });
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|l| l.index + 1).unwrap_or(0);
        // Gone for readers at once; from the file by the time this returns.
        drop(locked(&self.pending).split_off(&from));
        self.submit_and_wait(|done| Op::Truncate { from, done }).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let purged = encode_log_id(&Some(log_id));
        let upto = log_id.index;
        locked(&self.pending).retain(|i, _| *i > upto);
        self.submit_and_wait(|done| Op::Purge { upto, purged, done }).await
    }
}

#[cfg(test)]
mod tests {
    use openraft::entry::EntryPayload;
    use openraft::impls::leader_id_adv::LeaderId;

    use super::*;
    use crate::BatchRequest;

    fn entry(term: u64, index: u64, byte: u8) -> Entry {
        Entry {
            log_id: LogId { leader_id: LeaderId { term, node_id: 1 }, index },
            payload: EntryPayload::Normal(BatchRequest(vec![byte; 3])),
        }
    }

    fn payload(e: &Entry) -> Vec<u8> {
        match &e.payload {
            EntryPayload::Normal(BatchRequest(b)) => b.clone(),
            _ => panic!("not a batch"),
        }
    }

    async fn append(log: &mut LogStore, entries: Vec<Entry>) -> tokio::sync::oneshot::Receiver<io::Result<()>> {
        use openraft::type_config::TypeConfigExt;
        let (tx, rx) = TypeConfig::oneshot();
        log.append(entries, IOFlushed::signal(tx)).await.unwrap();
        rx
    }

    /// Entries are readable as soon as `append` returns, every callback is told once its
    /// entries are in the file, and what was acknowledged is there after a reopen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_are_readable_at_once_and_durable_when_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        let mut log = LogStore::open(&path).unwrap();
        let mut acks = Vec::new();
        for i in 1..=200u64 {
            acks.push(append(&mut log, vec![entry(1, i, i as u8)]).await);
            let got = log.try_get_log_entries(i..=i).await.unwrap();
            assert_eq!(got.len(), 1, "entry {i} readable when append returned");
            assert_eq!(payload(&got[0]), vec![i as u8; 3]);
        }
        log.save_committed(Some(entry(1, 150, 0).log_id)).await.unwrap();
        assert_eq!(log.read_committed().await.unwrap().map(|l| l.index), Some(150));
        for ack in acks {
            ack.await.unwrap().unwrap();
        }
        // A range across what is in the file and what may still be pending.
        let all = log.try_get_log_entries(1..201).await.unwrap();
        assert_eq!(all.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), (1..=200).collect::<Vec<_>>());
        assert_eq!(log.get_log_state().await.unwrap().last_log_id.map(|l| l.index), Some(200));
        drop(log);
        // The writer thread lets go of the file once its queue is drained.
        let mut log = loop {
            match LogStore::open(&path) {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        };
        let all = log.try_get_log_entries(1..).await.unwrap();
        assert_eq!(all.len(), 200);
        assert!(all.iter().all(|e| payload(e) == vec![e.log_id.index as u8; 3]));
        assert_eq!(log.read_committed().await.unwrap().map(|l| l.index), Some(150));
    }

    /// A truncation takes pending entries away from readers at once, and a new entry at a
    /// truncated index is not dropped from memory when the old one's write completes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn truncation_and_reappend_read_the_new_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogStore::open(&dir.path().join("log.redb")).unwrap();
        let mut acks = Vec::new();
        for i in 1..=10u64 {
            acks.push(append(&mut log, vec![entry(1, i, 1)]).await);
        }
        log.truncate_after(Some(entry(1, 5, 0).log_id)).await.unwrap();
        assert_eq!(log.try_get_log_entries(1..).await.unwrap().len(), 5);
        for i in 6..=8u64 {
            acks.push(append(&mut log, vec![entry(2, i, 2)]).await);
        }
        for ack in acks {
            ack.await.unwrap().unwrap();
        }
        let all = log.try_get_log_entries(1..).await.unwrap();
        let seen: Vec<(u64, u64, u8)> =
            all.iter().map(|e| (e.log_id.index, e.log_id.leader_id.term, payload(e)[0])).collect();
        let want: Vec<(u64, u64, u8)> = (1..=5).map(|i| (i, 1, 1)).chain((6..=8).map(|i| (i, 2, 2))).collect();
        assert_eq!(seen, want);
        log.purge(entry(1, 3, 0).log_id).await.unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(3));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(8));
        assert_eq!(log.try_get_log_entries(1..).await.unwrap().first().map(|e| e.log_id.index), Some(4));
    }

    /// The pending map keeps an entry only until its write: the ptr_eq guard must not keep
    /// one forever either (memory would grow with the log).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn written_entries_leave_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogStore::open(&dir.path().join("log.redb")).unwrap();
        let ack = append(&mut log, (1..=50).map(|i| entry(1, i, 3)).collect()).await;
        ack.await.unwrap().unwrap();
        assert!(locked(&log.pending).is_empty());
    }

    /// The write of an entry that a truncation replaced must leave the new entry in memory
    /// (until its own write): a reader would otherwise find it in neither place.
    #[test]
    fn a_finished_write_keeps_a_replacement_in_memory() {
        let (old, new, kept) = (Arc::new(vec![1u8]), Arc::new(vec![2u8]), Arc::new(vec![3u8]));
        let pending: Mutex<BTreeMap<u64, Row>> = Mutex::new([(6, new.clone()), (7, kept.clone())].into());
        let op = Op::Append { rows: vec![(6, old), (5, Arc::new(vec![0]))], callback: IOFlushed::noop() };
        op.finish(&Ok(()), &pending);
        let left = locked(&pending);
        assert!(Arc::ptr_eq(&left[&6], &new) && Arc::ptr_eq(&left[&7], &kept) && left.len() == 2);
        drop(left);
        let op = Op::Append { rows: vec![(6, new)], callback: IOFlushed::noop() };
        op.finish(&Err(io_err("disk full")), &pending);
        assert_eq!(locked(&pending).len(), 2, "a failed write leaves its entries readable");
    }
}
