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
//! Every append, vote and truncation is one redb write transaction with
//! `Durability::Immediate` (fsync) — the entry a majority acknowledges is on disk. The
//! committed log id is saved without an fsync: losing it only means re-learning it from the
//! leader. Writes run on blocking threads so an fsync never stalls the async runtime, and
//! they are serialized by the single `&mut self` openraft holds, as its contract requires.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

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

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The Raft log store; cheap to clone (readers share the database).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// Bytes of entries appended since the store was opened (the node snapshots, and so
    /// lets the log be purged, every `ClusterConfig::snapshot_log_bytes` of them).
    appended_bytes: Arc<std::sync::atomic::AtomicU64>,
}

impl LogStore {
    pub fn open(path: &Path) -> io::Result<LogStore> {
        let db = Database::create(path).map_err(io_err)?;
        let txn = db.begin_write().map_err(io_err)?;
        txn.open_table(LOG).map_err(io_err)?;
        txn.open_table(META).map_err(io_err)?;
        txn.commit().map_err(io_err)?;
        Ok(LogStore { db: Arc::new(db), appended_bytes: Default::default() })
    }

    /// The count of bytes appended since open, shared with the store's clones.
    pub fn appended_bytes(&self) -> Arc<std::sync::atomic::AtomicU64> {
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

    /// Run one write transaction on a blocking thread.
    async fn write<F>(&self, durable: bool, f: F) -> io::Result<()>
    where
        F: FnOnce(&redb::WriteTransaction) -> io::Result<()> + Send + 'static,
    {
        let db = self.db.clone();
        crate::runtime::blocking(move || {
            let mut txn = db.begin_write().map_err(io_err)?;
            txn.set_durability(if durable { Durability::Immediate } else { Durability::None }).map_err(io_err)?;
            f(&txn)?;
            txn.commit().map_err(io_err)
        })
        .await
        .map_err(io_err)?
    }

    fn read_range(&self, lo: Bound<u64>, hi: Bound<u64>) -> io::Result<Vec<Entry>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let t = txn.open_table(LOG).map_err(io_err)?;
        let mut out = Vec::new();
        for item in t.range::<u64>((lo, hi)).map_err(io_err)? {
            let (_, v) = item.map_err(io_err)?;
            out.push(decode_entry(v.value()).map_err(io_err)?);
        }
        Ok(out)
    }

    fn last_entry_id(&self) -> io::Result<Option<LogId>> {
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
        let v = encode_vote(vote);
        self.write(true, move |txn| {
            txn.open_table(META).map_err(io_err)?.insert(META_VOTE, v.as_slice()).map_err(io_err)?;
            Ok(())
        })
        .await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let v = encode_log_id(&committed);
        self.write(false, move |txn| {
            txn.open_table(META).map_err(io_err)?.insert(META_COMMITTED, v.as_slice()).map_err(io_err)?;
            Ok(())
        })
        .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.meta(META_COMMITTED, decode_log_id)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        for e in entries {
            rows.push((e.index(), encode_entry(&e)));
        }
        let bytes: usize = rows.iter().map(|(_, v)| v.len()).sum();
        self.appended_bytes.fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
        let r = self
            .write(true, move |txn| {
                let mut t = txn.open_table(LOG).map_err(io_err)?;
                for (i, v) in &rows {
                    t.insert(*i, v.as_slice()).map_err(io_err)?;
                }
                Ok(())
            })
            .await;
        match r {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.io_completed(Err(io_err(&e)));
                Err(e)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|l| l.index + 1).unwrap_or(0);
        self.write(true, move |txn| {
            let mut t = txn.open_table(LOG).map_err(io_err)?;
            t.retain_in(from.., |_, _| false).map_err(io_err)?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let v = encode_log_id(&Some(log_id));
        let upto = log_id.index;
        self.write(true, move |txn| {
            txn.open_table(META).map_err(io_err)?.insert(META_PURGED, v.as_slice()).map_err(io_err)?;
            txn.open_table(LOG).map_err(io_err)?.retain_in(..=upto, |_, _| false).map_err(io_err)?;
            Ok(())
        })
        .await
    }
}
