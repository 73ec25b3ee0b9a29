//! The leaf-hash lookup behind `get-proof-by-hash`: which leaf of the transaction log has
//! a given hash. Node-local and derived: a background thread builds it from the leaf
//! hashes the state store already holds (level 0 of `tlog/c/…`, `tlog/n/00…` in stores
//! written before executor rules 7), into its own file.
//!
//! # Why not in the state store
//!
//! Up to data directory format 3 the executor stored one meta entry per transaction,
//! `tlog/h/<first 16 bytes of the leaf hash>`, in the same commit as the transaction.
//! A hash is random, so each entry landed on a random page of the meta table, and every
//! write-behind flush (about one per batch) copied one such page per transaction: about a
//! tenth of a hot transfer's server CPU (docs/benchmarks.md, "The leaf-hash lookup
//! leaves the write path"). Nothing in a block commits to that entry, every member can
//! compute it from the tree, and a snapshot never carried it. So it now lives here: written
//! off the write path, sorted, up to [`LEAVES_PER_COMMIT`] leaves per commit, in a file
//! the executor never touches.
//!
//! # File layout (`leafhash.redb`, format 1)
//!
//! A redb database with two tables:
//!
//! | table | key | value |
//! |---|---|---|
//! | `leafhash` | `[u8; 16]`: a leaf hash's first 16 bytes | `u64`: that leaf's index |
//! | `info` | `"format"` | one byte, `1` |
//! | `info` | `"indexed"` | `u64` big-endian: leaves `0..indexed` are in `leafhash` |
//! | `info` | `"root"` | 32 bytes: the tree hash of those leaves, `MTH(D[0:indexed])` |
//!
//! The root ties the file to one history: when the state's tree hash at `indexed` differs
//! (the state was restored from a backup, or replaced by another), or `indexed` is past the
//! state's tree, the thread empties both tables and starts again from leaf 0. A file that
//! redb cannot open, or that holds another format, is deleted and rebuilt the same way.
//! Every eighth commit is fsynced; a crash loses the commits since, which the thread redoes
//! (each records how far it got).
//!
//! # Lookups
//!
//! An entry is only a hint: the caller confirms `leaf_hash(index) == hash` against the
//! state's tree, so a stale or damaged entry can make a lookup miss but never answer
//! wrongly. Leaves past `indexed` (the last moments of commits, or all of them while the
//! file is built) are searched one by one in the state; when more than
//! [`TAIL_SCAN_MAX`] are unindexed and the leaf is not among the indexed ones, the lookup
//! answers `unavailable` (503) with how far the index has got, rather than scanning for
//! seconds.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tally_fql::error::FqlError;
use tally_ledger::merkle::Hash;
use tally_ledger::tlog::{NodeId, StoredTree};
use tally_storage::{Snapshot, Store};

use crate::ledger_api::{internal, stored_head, tree_of};

/// The file's name in the data directory.
pub const FILE: &str = "leafhash.redb";
/// The file format this build reads and writes.
pub const FORMAT: u8 = 1;
/// Most leaves indexed in one commit (their pairs are sorted in memory first: 24 bytes each).
pub const LEAVES_PER_COMMIT: u64 = 65_536;
/// Most unindexed leaves a lookup searches one by one.
pub const TAIL_SCAN_MAX: u64 = 65_536;
/// How often the thread looks for new leaves when it has caught up. Longer means more
/// leaves per commit (fewer page copies per leaf) and a longer unindexed tail.
pub const INTERVAL: Duration = Duration::from_millis(1000);
/// Commits between fsyncs: the others are redb's non-durable commits, which a crash loses
/// (the thread redoes them: the file records how far it got in the same commit).
const COMMITS_PER_SYNC: u64 = 8;
/// redb's page cache for this file.
const CACHE_BYTES: usize = 32 << 20;

const LEAFHASH: TableDefinition<[u8; 16], u64> = TableDefinition::new("leafhash");
const INFO: TableDefinition<&str, &[u8]> = TableDefinition::new("info");

/// The lookup, shared by the API handlers and the thread that builds it.
pub struct LeafIndex {
    db: Database,
    /// Leaves indexed so far (a copy of `info.indexed`, for metrics and messages).
    indexed: AtomicU64,
    stop: AtomicBool,
    commits: AtomicU64,
    /// [`TAIL_SCAN_MAX`], lower in tests.
    tail_scan_max: AtomicU64,
}

fn prefix(hash: &Hash) -> [u8; 16] {
    let mut p = [0u8; 16];
    p.copy_from_slice(&hash[..16]);
    p
}

fn io(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("the leaf-hash index: {e}")
}

impl LeafIndex {
    /// Open `dir/leafhash.redb`, or make it; one that cannot be read as format 1 is
    /// replaced by an empty one (it is derived data).
    pub fn open(dir: &Path) -> anyhow::Result<Arc<LeafIndex>> {
        let path = dir.join(FILE);
        let db = match open_checked(&path) {
            Ok(db) => db,
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "rebuilding the leaf-hash index");
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(format!("removing {}: {e}", path.display()))),
                }
                open_checked(&path)?
            }
        };
        let indexed = read_info(&db)?.0;
        Ok(Arc::new(LeafIndex {
            db,
            indexed: AtomicU64::new(indexed),
            stop: AtomicBool::new(false),
            commits: AtomicU64::new(0),
            tail_scan_max: AtomicU64::new(TAIL_SCAN_MAX),
        }))
    }

    /// Search at most `n` unindexed leaves per lookup (tests use a small bound).
    pub fn set_tail_scan_max(&self, n: u64) {
        self.tail_scan_max.store(n, Ordering::Relaxed);
    }

    /// Leaves indexed so far.
    pub fn indexed(&self) -> u64 {
        self.indexed.load(Ordering::Relaxed)
    }

    /// Start the thread (`tally-leafhash`, at nice 10) that keeps the index up with `store`'s
    /// tree. It ends when the store is dropped or [`LeafIndex::stop`] is called.
    pub fn spawn(self: &Arc<Self>, store: &Arc<dyn Store>) -> anyhow::Result<()> {
        let me = Arc::clone(self);
        let store = Arc::downgrade(store);
        std::thread::Builder::new().name("tally-leafhash".into()).spawn(move || me.run(store))?;
        Ok(())
    }

    /// Ask the thread to end after its current step.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn run(&self, store: Weak<dyn Store>) {
        // Behind the write path, like the store's flusher: at nice 10 it yields the cores.
        crate::longpool::lower_priority();
        let mut last_error = String::new();
        while !self.stop.load(Ordering::Relaxed) {
            let Some(s) = store.upgrade() else { return };
            let step = s.snapshot().map_err(io).and_then(|snap| {
                drop(s);
                self.step(&*snap)
            });
            match step {
                Ok(true) => continue,
                Ok(false) => last_error.clear(),
                Err(e) => {
                    let e = e.to_string();
                    if e != last_error {
                        tracing::warn!(error = %e, "the leaf-hash index could not be updated; retrying");
                        last_error = e;
                    }
                }
            }
            std::thread::sleep(INTERVAL);
        }
    }

    /// Index up to [`LEAVES_PER_COMMIT`] more leaves of `snap`'s tree; true when more are
    /// left.
    pub fn step(&self, snap: &dyn Snapshot) -> anyhow::Result<bool> {
        let size = stored_head(snap).map_err(|e| io(e.into_description()))?.map_or(0, |h| h.tree_size);
        let tree = tree_of(snap, size);
        let (mut indexed, root) = read_info(&self.db)?;
        let same_history = of_history(&tree, indexed, &root).map_err(io)?;
        let mut txn = self.db.begin_write().map_err(io)?;
        if !same_history {
            tracing::info!(indexed, tree_size = size, "the leaf-hash index is of another history; rebuilding it");
            txn.delete_table(LEAFHASH).map_err(io)?;
            indexed = 0;
        } else if indexed == size {
            txn.abort().map_err(io)?;
            return Ok(false);
        }
        let end = size.min(indexed + LEAVES_PER_COMMIT);
        let mut pairs = Vec::with_capacity((end - indexed) as usize);
        for i in indexed..end {
            pairs.push((prefix(&tree.leaf_hash(i).map_err(io)?), i));
        }
        pairs.sort_unstable();
        let root = if end == 0 { [0u8; 32] } else { tree.root_at(end).map_err(io)? };
        {
            let mut t = txn.open_table(LEAFHASH).map_err(io)?;
            for (k, i) in &pairs {
                t.insert(k, i).map_err(io)?;
            }
            let mut info = txn.open_table(INFO).map_err(io)?;
            info.insert("indexed", &end.to_be_bytes()[..]).map_err(io)?;
            info.insert("root", &root[..]).map_err(io)?;
        }
        let n = self.commits.fetch_add(1, Ordering::Relaxed) + 1;
        let durable = n.is_multiple_of(COMMITS_PER_SYNC);
        txn.set_durability(if durable { Durability::Immediate } else { Durability::None }).map_err(io)?;
        txn.commit().map_err(io)?;
        self.indexed.store(end, Ordering::Relaxed);
        Ok(end < size)
    }

    /// The index of the leaf whose hash is `hash` among the first `tree_size` leaves of
    /// `snap`'s tree (at most its size), or None.
    pub fn find(&self, snap: &dyn Snapshot, hash: &Hash, tree_size: u64) -> Result<Option<u64>, FqlError> {
        let size = stored_head(snap)?.map_or(0, |h| h.tree_size);
        let tree = tree_of(snap, size);
        let is = |i: u64| -> Result<bool, FqlError> { Ok(tree.leaf_hash(i).map_err(internal)? == *hash) };
        let (hint, indexed, root) = {
            let txn = self.db.begin_read().map_err(internal)?;
            let hint = match txn.open_table(LEAFHASH) {
                Ok(t) => t.get(&prefix(hash)).map_err(internal)?.map(|g| g.value()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(internal(e)),
            };
            let (indexed, root) = info_of(&txn).map_err(internal)?;
            (hint, indexed, root)
        };
        if let Some(i) = hint.filter(|&i| i < size) {
            if is(i)? {
                return Ok(Some(i).filter(|&i| i < tree_size));
            }
        }
        // The leaves the index does not have yet: those past `indexed`, or all of them when
        // the index is of another history (the thread is about to rebuild it).
        let ours = of_history(&tree, indexed, &root).map_err(internal)?;
        let from = if ours { indexed } else { 0 };
        let to = tree_size.min(size);
        if to.saturating_sub(from) > self.tail_scan_max.load(Ordering::Relaxed) {
            return Err(FqlError::new(
                tally_fql::error::code::UNAVAILABLE,
                format!(
                    "the leaf-hash index of this member is being built ({} of {size} leaves so far); \
                     try again shortly, or ask by revision (get-proof-by-revision)",
                    if ours { indexed } else { 0 }
                ),
            ));
        }
        for i in from..to {
            if is(i)? {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }
}

/// Whether an index of the first `indexed` leaves whose tree hash is `root` was built from
/// `tree`'s history (the same leaves, so the same hash at that size).
fn of_history<F>(tree: &StoredTree<F>, indexed: u64, root: &Hash) -> Result<bool, tally_ledger::LedgerError>
where
    F: Fn(NodeId) -> Result<Option<Hash>, tally_ledger::LedgerError>,
{
    Ok(indexed <= tree.size() && (indexed == 0 || tree.root_at(indexed)? == *root))
}

fn open_checked(path: &Path) -> anyhow::Result<Database> {
    let db = redb::Builder::new().set_cache_size(CACHE_BYTES).create(path).map_err(io)?;
    let txn = db.begin_write().map_err(io)?;
    {
        let mut info = txn.open_table(INFO).map_err(io)?;
        let format = info.get("format").map_err(io)?.map(|g| g.value().to_vec());
        match format.as_deref() {
            None => {
                info.insert("format", &[FORMAT][..]).map_err(io)?;
            }
            Some([f]) if *f == FORMAT => {}
            Some(other) => return Err(io(format!("{} has format {other:?}, not [{FORMAT}]", path.display()))),
        }
        txn.open_table(LEAFHASH).map_err(io)?;
    }
    txn.commit().map_err(io)?;
    read_info(&db)?;
    Ok(db)
}

fn read_info(db: &Database) -> anyhow::Result<(u64, [u8; 32])> {
    info_of(&db.begin_read().map_err(io)?)
}

fn info_of(txn: &redb::ReadTransaction) -> anyhow::Result<(u64, [u8; 32])> {
    let info = txn.open_table(INFO).map_err(io)?;
    let indexed = match info.get("indexed").map_err(io)? {
        None => 0,
        Some(g) => u64::from_be_bytes(g.value().try_into().map_err(|_| io("`indexed` is not 8 bytes"))?),
    };
    let root = match info.get("root").map_err(io)? {
        None => [0u8; 32],
        Some(g) => g.value().try_into().map_err(|_| io("`root` is not 32 bytes"))?,
    };
    Ok((indexed, root))
}
