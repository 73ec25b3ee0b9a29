//! [`RedbStore`]: the on-disk store. The format and the crash argument are in the crate doc.

use std::collections::BTreeMap;
use std::ops::Bound::{self, Excluded, Included, Unbounded};
use std::path::Path;
use std::sync::Arc;

use redb::{
    AccessGuard, Database, Durability, ReadOnlyTable, ReadableDatabase, ReadableTable, TableDefinition, TableError,
};

use crate::batch::{Overlay, OverlayBatch, Sink, WriterLock};
use crate::behind::{Backend, BehindLimits, WriteBehind};
use crate::read::{self, PosRef, VersionEntry, VersionTable};
use crate::{
    Batch, HistIter, Result, ScanIter, Snapshot, Space, StorageError, Store, Ts, Version, FORMAT_VERSION,
    META_FORMAT_VERSION, META_MAX_TS,
};

/// `(user key, u64::MAX - ts)`: a key's versions sort newest first.
type VersionKey = (&'static [u8], u64);
const DOCS: TableDefinition<VersionKey, &[u8]> = TableDefinition::new("docs");
const INDEX: TableDefinition<VersionKey, &[u8]> = TableDefinition::new("index");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

fn definition(space: Space) -> TableDefinition<'static, VersionKey, &'static [u8]> {
    match space {
        Space::Docs => DOCS,
        Space::Index => INDEX,
    }
}

fn redb_err(e: impl Into<redb::Error>) -> StorageError {
    match e.into() {
        redb::Error::Io(e) => StorageError::Io(e.to_string()),
        redb::Error::Corrupted(m) => StorageError::Corrupt(m),
        redb::Error::DatabaseAlreadyOpen => StorageError::AlreadyOpen,
        other => StorageError::Backend(other.to_string()),
    }
}

fn inv(ts: Ts) -> u64 {
    u64::MAX - ts
}

/// On-disk [`Store`] in one redb file.
pub struct RedbStore {
    db: Arc<Database>,
    /// What its batches remember (`crate::remembered`).
    shelf: crate::remembered::Shelf,
    writer: WriterLock,
}

impl RedbStore {
    /// Open the database at `path`, creating and initialising it if missing. Refuses files
    /// of another format version and redb files that are not Tally databases.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with_cache(path, None)
    }

    /// [`RedbStore::open`] with redb's page cache (pages read and written, kept until the
    /// cache is full) bounded to `cache_bytes`; None keeps redb's default of 1 GiB.
    pub fn open_with_cache(path: &Path, cache_bytes: Option<usize>) -> Result<Self> {
        let mut builder = redb::Builder::new();
        if let Some(bytes) = cache_bytes {
            builder.set_cache_size(bytes);
        }
        let db = builder.create(path).map_err(redb_err)?;
        init_or_check(&db)?;
        Ok(RedbStore { db: Arc::new(db), shelf: crate::remembered::new_shelf(), writer: WriterLock::default() })
    }

    /// Bytes of the pages redb has allocated (data, its B-tree branches and its own
    /// tables): what the data occupies, without the file's preallocated growth. Opens
    /// (and drops) a write transaction, so call it with no batch open.
    pub fn allocated_bytes(&self) -> Result<u64> {
        let txn = self.db.begin_write().map_err(redb_err)?;
        let stats = txn.stats().map_err(redb_err)?;
        txn.abort().map_err(redb_err)?;
        Ok(stats.allocated_pages() * stats.page_size() as u64)
    }

    /// This store behind a write-behind queue: commits return once visible, and a
    /// background thread writes them to the file (see [`WriteBehind`]).
    pub fn write_behind(self, limits: BehindLimits) -> Result<WriteBehind> {
        WriteBehind::start(Box::new(self), limits)
    }
}

fn init_or_check(db: &Database) -> Result<()> {
    let rtxn = db.begin_read().map_err(redb_err)?;
    let meta = match rtxn.open_table(META) {
        Ok(meta) => meta,
        Err(TableError::TableDoesNotExist(_)) => {
            if rtxn.list_tables().map_err(redb_err)?.next().is_some() {
                return Err(StorageError::FormatVersion {
                    found: "none (a redb file that is not a Tally database)".into(),
                    expected: FORMAT_VERSION,
                });
            }
            drop(rtxn);
            return init(db);
        }
        Err(e) => return Err(redb_err(e)),
    };
    let found = meta.get(META_FORMAT_VERSION).map_err(redb_err)?.map(|g| g.value().to_vec());
    let upgrade = match found.as_deref() {
        Some([FORMAT_VERSION]) => false,
        Some([1]) => true,
        _ => {
            let found = found.map_or_else(|| "missing".to_string(), |v| format!("{v:?}"));
            return Err(StorageError::FormatVersion { found, expected: FORMAT_VERSION });
        }
    };
    for def in [DOCS, INDEX] {
        rtxn.open_table(def).map_err(|e| StorageError::Corrupt(format!("table missing or unreadable: {e}")))?;
    }
    if upgrade {
        drop((meta, rtxn));
        return upgrade_from_1(db);
    }
    max_ts_of(&meta)?;
    Ok(())
}

fn init(db: &Database) -> Result<()> {
    let txn = db.begin_write().map_err(redb_err)?;
    txn.open_table(DOCS).map_err(redb_err)?;
    txn.open_table(INDEX).map_err(redb_err)?;
    let mut meta = txn.open_table(META).map_err(redb_err)?;
    meta.insert(META_FORMAT_VERSION, &[FORMAT_VERSION][..]).map_err(redb_err)?;
    meta.insert(META_MAX_TS, &0u64.to_be_bytes()[..]).map_err(redb_err)?;
    drop(meta);
    txn.commit().map_err(redb_err)
}

/// Version 1 to 2: [`META_MAX_TS`] from one pass over both version tables, written with the
/// new version in one durable transaction (see the crate doc).
fn upgrade_from_1(db: &Database) -> Result<()> {
    let mut txn = db.begin_write().map_err(redb_err)?;
    txn.set_durability(Durability::Immediate).map_err(redb_err)?;
    let mut max = 0;
    for def in [DOCS, INDEX] {
        let table = txn.open_table(def).map_err(redb_err)?;
        for entry in table.iter().map_err(redb_err)? {
            let (k, _) = entry.map_err(redb_err)?;
            max = max.max(u64::MAX - k.value().1);
        }
    }
    let mut meta = txn.open_table(META).map_err(redb_err)?;
    meta.insert(META_MAX_TS, &max.to_be_bytes()[..]).map_err(redb_err)?;
    meta.insert(META_FORMAT_VERSION, &[FORMAT_VERSION][..]).map_err(redb_err)?;
    drop(meta);
    txn.commit().map_err(redb_err)
}

/// [`META_MAX_TS`] of a version 2 file: missing or not 8 bytes is corruption.
fn max_ts_of(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<Ts> {
    let v = meta.get(META_MAX_TS).map_err(redb_err)?;
    let bytes: Option<[u8; 8]> = v.as_ref().and_then(|g| g.value().try_into().ok());
    bytes
        .map(u64::from_be_bytes)
        .ok_or_else(|| StorageError::Corrupt(format!("meta value {META_MAX_TS:?} is missing or not 8 bytes")))
}

struct RedbEntry(AccessGuard<'static, VersionKey>, AccessGuard<'static, &'static [u8]>);

impl VersionEntry for RedbEntry {
    fn key(&self) -> &[u8] {
        self.0.value().0
    }
    fn ts(&self) -> Ts {
        u64::MAX - self.0.value().1
    }
    fn value(&self) -> Vec<u8> {
        self.1.value().to_vec()
    }
    fn value_head(&self, n: usize) -> Vec<u8> {
        let v = self.1.value();
        v[..n.min(v.len())].to_vec()
    }
}

struct RedbTable(ReadOnlyTable<VersionKey, &'static [u8]>);

fn to_redb(b: Bound<PosRef<'_>>) -> Bound<(&[u8], u64)> {
    match b {
        Included((k, ts)) => Included((k, inv(ts))),
        Excluded((k, ts)) => Excluded((k, inv(ts))),
        Unbounded => Unbounded,
    }
}

impl VersionTable for RedbTable {
    type Entry<'a> = RedbEntry;

    fn range<'a>(&'a self, lo: Bound<PosRef<'_>>, hi: Bound<PosRef<'_>>) -> Result<read::EntryIter<'a, RedbEntry>> {
        let range = self.0.range((to_redb(lo), to_redb(hi))).map_err(redb_err)?;
        Ok(Box::new(range.map(|r| r.map(|(k, v)| RedbEntry(k, v)).map_err(redb_err))))
    }
}

/// A redb read transaction; owns its tables, so it is `'static` and `Send`.
struct RedbSnapshot {
    docs: RedbTable,
    index: RedbTable,
    meta: ReadOnlyTable<&'static str, &'static [u8]>,
    /// [`META_MAX_TS`] as this view has it.
    ts_bound: Ts,
}

impl RedbSnapshot {
    fn table(&self, space: Space) -> &RedbTable {
        match space {
            Space::Docs => &self.docs,
            Space::Index => &self.index,
        }
    }
}

impl Snapshot for RedbSnapshot {
    fn get(&self, space: Space, key: &[u8], at: Ts) -> Result<Option<Version>> {
        read::get(self.table(space), key, at)
    }

    fn history<'a>(&'a self, space: Space, key: &[u8], lo: Ts, hi: Ts, desc: bool) -> Result<HistIter<'a>> {
        read::history(self.table(space), key, lo, hi, desc)
    }

    fn scan<'a>(
        &'a self,
        space: Space,
        prefix: &[u8],
        from: Option<&[u8]>,
        desc: bool,
        at: Ts,
    ) -> Result<ScanIter<'a>> {
        read::scan(self.table(space), prefix, from, desc, at, None)
    }

    fn scan_heads<'a>(
        &'a self,
        space: Space,
        prefix: &[u8],
        from: Option<&[u8]>,
        desc: bool,
        at: Ts,
        head: usize,
    ) -> Result<ScanIter<'a>> {
        read::scan(self.table(space), prefix, from, desc, at, Some(head))
    }

    fn versions_from<'a>(&'a self, space: Space, from: Option<&[u8]>) -> Result<ScanIter<'a>> {
        read::versions_from(self.table(space), from)
    }

    fn next_key_bound(&self, space: Space, from: &[u8]) -> Result<Option<Vec<u8>>> {
        read::next_key(self.table(space), from)
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.meta.get(key).map_err(redb_err)?.map(|g| g.value().to_vec()))
    }

    fn ts_bound(&self) -> Ts {
        self.ts_bound
    }
}

/// Write `overlays`, in order, as one redb transaction (all or nothing).
fn write_overlays(db: &Database, overlays: &[&Overlay], durable: bool) -> Result<()> {
    let mut txn = db.begin_write().map_err(redb_err)?;
    if durable {
        txn.set_durability(Durability::Immediate).map_err(redb_err)?;
        // Saves the allocator state so reopening after a crash is quick.
        txn.set_quick_repair(true);
    } else {
        txn.set_durability(Durability::None).map_err(redb_err)?;
    }
    // Each table's writes in key order, a key written by several overlays once (its
    // newest value): consecutive inserts share pages, runs of them into one gap are
    // spliced in together (`write_in_runs`), and the names every batch sets (the applied
    // height, the head, the last ts) are written once per group.
    for space in [Space::Docs, Space::Index] {
        let mut table = txn.open_table(definition(space)).map_err(redb_err)?;
        let writes = in_key_order(overlays.iter().map(|o| match space {
            Space::Docs => &o.docs,
            Space::Index => &o.index,
        }));
        let writes = writes.into_iter().map(|((key, ts), value)| ((key.as_slice(), inv(ts.0)), value.as_deref()));
        write_in_runs(&mut table, writes)?;
    }
    {
        let mut meta = txn.open_table(META).map_err(redb_err)?;
        write_in_runs(
            &mut meta,
            Overlay::meta_in_key_order(overlays.iter().map(|o| &**o)).into_iter().map(|(k, v)| (k, Some(v))),
        )?;
        let max = overlays.iter().map(|o| o.max_ts).max().unwrap_or(0);
        if max > max_ts_of(&meta)? {
            meta.insert(META_MAX_TS, &max.to_be_bytes()[..]).map_err(redb_err)?;
        }
    }
    // Dropping `txn` on any error above aborts it: a commit is all or nothing.
    txn.commit().map_err(redb_err)
}

/// Writes `writes` (ascending keys; `None` removes) into `table`. At least [`RUN_MIN`]
/// puts in a row that fall into the same gap of the table (a collection's new documents,
/// the ledger's next leaves and subtree hashes) go in through a cursor left at that gap,
/// whose inserts redb splices into the leaf together, instead of a descent from the root
/// each. Fewer go in as plain inserts.
///
/// Why not a cursor for every run: redb's splice always builds its leaves anew (new pages,
/// the old ones freed), while a plain insert into a leaf this transaction already wrote is
/// made in place. Writes come in key order, so a flush reaches each leaf once with all of
/// its writes; with a cursor for each one- or two-key run (an account's new version is
/// mostly alone in its gap), a leaf was built anew once for every document written into
/// it since the last flush, where one copy now serves them all. The cursor first looks at
/// the entry after its gap and counts the writes that fall before it.
fn write_in_runs<'k, K, V>(
    table: &mut redb::Table<'_, K, V>,
    writes: impl Iterator<Item = (K::SelfType<'k>, Option<V::SelfType<'k>>)>,
) -> Result<()>
where
    K: redb::Key + 'static,
    V: redb::Value + 'static,
{
    let writes: Vec<_> = writes.collect();
    let mut i = 0;
    while i < writes.len() {
        let (k, v) = &writes[i];
        let Some(v) = v else {
            table.remove(k).map_err(redb_err)?;
            i += 1;
            continue;
        };
        // Puts from here on, counted up to what makes a run.
        let puts = writes[i..].iter().take(RUN_MIN).take_while(|(_, v)| v.is_some()).count();
        if puts < RUN_MIN {
            table.insert(k, v).map_err(redb_err)?;
            i += 1;
            continue;
        }
        let mut cursor = table.lower_bound_mut(Included(k)).map_err(redb_err)?;
        // The puts from here on that fall into the cursor's gap: below the entry after it
        // (all of them at the end of the table). A key the table holds is that entry
        // itself, and none falls into the gap.
        let in_gap = {
            let after = cursor.peek_next().map_err(redb_err)?;
            let bound = after.as_ref().map(|(key, _)| key.value());
            let bound = bound.as_ref().map(|b| K::as_bytes(b));
            writes[i..]
                .iter()
                .take_while(|(wk, wv)| {
                    wv.is_some()
                        && bound.as_ref().is_none_or(|b| K::compare(K::as_bytes(wk).as_ref(), b.as_ref()).is_lt())
                })
                .count()
        };
        if in_gap < RUN_MIN {
            cursor.close().map_err(redb_err)?;
            for (wk, wv) in &writes[i..i + in_gap.max(1)] {
                if let Some(wv) = wv {
                    table.insert(wk, wv).map_err(redb_err)?;
                }
            }
            i += in_gap.max(1);
            continue;
        }
        let mut done = 0;
        for (wk, wv) in writes[i..i + in_gap].iter().filter_map(|(k, v)| v.as_ref().map(|v| (k, v))) {
            match cursor.insert_before(wk, wv) {
                Ok(()) => done += 1,
                // Not expected (the run ascends inside the gap); the rest go in plainly.
                Err(redb::CursorError::UnorderedKey) => break,
                Err(e) => return Err(redb_err(e)),
            }
        }
        cursor.close().map_err(redb_err)?;
        if done == 0 {
            table.insert(k, v).map_err(redb_err)?;
            done = 1;
        }
        i += done;
    }
    Ok(())
}

/// The fewest puts into one gap that go in through a cursor ([`write_in_runs`]).
const RUN_MIN: usize = 8;

/// The entries of sorted maps given oldest first, as one sequence in key order with each
/// key once, holding the newest map's value for it: what writing the maps one after
/// another would leave.
///
/// A merge of the maps' own orders (each is a B-tree, already sorted), through a heap of
/// each map's next key: a flush group is a few overlays of many entries each, and sorting
/// all their entries together had taken a tenth of the flusher's time under 100,000-account
/// transfers.
fn in_key_order<'a, K: Ord, V>(maps: impl Iterator<Item = &'a BTreeMap<K, V>>) -> Vec<(&'a K, &'a V)> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    // Empty maps left out: a group of one overlay and the flusher's mark needs no merge.
    let maps: Vec<_> = maps.filter(|m| !m.is_empty()).collect();
    if let [one] = maps[..] {
        return one.iter().collect();
    }
    let mut out: Vec<(&K, &V)> = Vec::with_capacity(maps.iter().map(|m| m.len()).sum());
    let mut iters: Vec<_> = maps.iter().map(|m| m.iter()).collect();
    // Each map's next entry, and a heap of (its key, the map's position): the least key
    // comes out first and, among equal keys, the oldest map's, so the last of a run of
    // equal keys is the newest.
    let mut next: Vec<Option<(&K, &V)>> = iters.iter_mut().map(|it| it.next()).collect();
    let mut heap: BinaryHeap<Reverse<(&K, usize)>> =
        next.iter().enumerate().filter_map(|(i, e)| e.map(|(k, _)| Reverse((k, i)))).collect();
    while let Some(Reverse((_, i))) = heap.pop() {
        // Map `i`'s entries while they come before every other map's next one, without
        // the heap: a flush group's overlays hold mostly disjoint ranges of the names and
        // new documents they append (each its own ledger leaves, blocks and ids).
        while let Some((k, v)) = next[i] {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => out.push((k, v)),
            }
            next[i] = iters[i].next();
            let Some((k, _)) = next[i] else { break };
            if heap.peek().is_some_and(|Reverse(top)| *top < (k, i)) {
                heap.push(Reverse((k, i)));
                break;
            }
        }
    }
    out
}

/// [`Store::replace`] as one durable redb transaction: both version tables dropped and
/// refilled as `fill` goes, `extra` meta values set last. redb writes dirty pages out to
/// the file once its cache is full, so memory stays at the cache's size; dropping the
/// transaction on an error aborts it.
fn replace_tables(db: &Database, fill: crate::Fill<'_>, extra: Option<(&str, &[u8])>) -> Result<()> {
    let mut txn = db.begin_write().map_err(redb_err)?;
    txn.set_durability(Durability::Immediate).map_err(redb_err)?;
    txn.set_quick_repair(true);
    for def in [DOCS, INDEX] {
        txn.delete_table(def).map_err(redb_err)?;
    }
    {
        let mut load = RedbLoad::new(&txn)?;
        fill(&mut load)?;
        load.finish(extra)?;
    }
    txn.commit().map_err(redb_err)
}

/// Bytes of versions (keys and values) a [`RedbLoad`] holds before writing them.
const LOAD_BUFFER_BYTES: usize = 8 << 20;

/// A version a [`RedbLoad`] holds: key, ts, value.
type HeldVersion = (Vec<u8>, Ts, Vec<u8>);

/// A [`crate::Load`] into the emptied tables of one redb transaction. A snapshot streams
/// its versions in key order, so they are buffered (up to [`LOAD_BUFFER_BYTES`]) and each
/// buffer goes in through [`write_in_runs`]: one cursor at the end of the table takes the
/// whole run, where an insert each descended from the root.
struct RedbLoad<'t> {
    docs: redb::Table<'t, VersionKey, &'static [u8]>,
    index: redb::Table<'t, VersionKey, &'static [u8]>,
    meta: redb::Table<'t, &'static str, &'static [u8]>,
    /// The greatest ts put so far.
    max_ts: Ts,
    /// Versions put and not yet written, per space (docs, index), in the order put.
    held: [Vec<HeldVersion>; 2],
    held_bytes: usize,
}

impl<'t> RedbLoad<'t> {
    fn new(txn: &'t redb::WriteTransaction) -> Result<Self> {
        Ok(RedbLoad {
            docs: txn.open_table(DOCS).map_err(redb_err)?,
            index: txn.open_table(INDEX).map_err(redb_err)?,
            meta: txn.open_table(META).map_err(redb_err)?,
            max_ts: 0,
            held: Default::default(),
            held_bytes: 0,
        })
    }

    /// Write what is held. Versions put out of key order, or twice, are written as
    /// plain inserts would write them (`write_in_runs` starts over at such a key; the
    /// later put of a (key, ts) wins).
    fn write_held(&mut self) -> Result<()> {
        for (slot, table) in [&mut self.docs, &mut self.index].into_iter().enumerate() {
            let held = std::mem::take(&mut self.held[slot]);
            let mut run = 0;
            while run < held.len() {
                // A run of ascending (key, ts) positions; a put that does not ascend
                // starts the next run.
                let mut end = run + 1;
                while end < held.len()
                    && (held[end - 1].0.as_slice(), inv(held[end - 1].1)) < (held[end].0.as_slice(), inv(held[end].1))
                {
                    end += 1;
                }
                let writes = held[run..end].iter().map(|(k, ts, v)| ((k.as_slice(), inv(*ts)), Some(v.as_slice())));
                write_in_runs(table, writes)?;
                run = end;
            }
        }
        self.held_bytes = 0;
        Ok(())
    }

    /// Write what is held and the greatest ts.
    fn finish(mut self, extra: Option<(&str, &[u8])>) -> Result<()> {
        self.write_held()?;
        if let Some((k, v)) = extra {
            self.meta.insert(k, v).map_err(redb_err)?;
        }
        self.meta.insert(META_MAX_TS, &self.max_ts.to_be_bytes()[..]).map_err(redb_err)?;
        Ok(())
    }
}

impl crate::Load for RedbLoad<'_> {
    fn put(&mut self, space: Space, key: &[u8], ts: Ts, value: &[u8]) -> Result<()> {
        crate::check_put(key, value)?;
        self.max_ts = self.max_ts.max(ts);
        let slot = match space {
            Space::Docs => 0,
            Space::Index => 1,
        };
        self.held[slot].push((key.to_vec(), ts, value.to_vec()));
        self.held_bytes += key.len() + value.len();
        if self.held_bytes >= LOAD_BUFFER_BYTES {
            self.write_held()?;
        }
        Ok(())
    }
    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<()> {
        crate::replace::check_meta(key, value)?;
        self.meta.insert(key, value).map(drop).map_err(redb_err)
    }
}

struct RedbSink(Arc<Database>);

impl Sink for RedbSink {
    fn apply(self: Box<Self>, overlay: Overlay, durable: bool) -> Result<()> {
        write_overlays(&self.0, &[&overlay], durable)
    }
}

impl Backend for RedbStore {
    fn view(&self) -> Result<Box<dyn Snapshot>> {
        Ok(Box::new(self.read_view()?))
    }

    fn shared_view(&self) -> Result<Option<Arc<dyn Snapshot + Sync>>> {
        Ok(Some(Arc::new(self.read_view()?)))
    }

    fn write(&self, overlays: &[&Overlay], durable: bool) -> Result<()> {
        write_overlays(&self.db, overlays, durable)
    }

    fn replace(&self, fill: crate::Fill<'_>, seq: u64) -> Result<()> {
        replace_tables(&self.db, fill, Some((crate::META_BEHIND_SEQ, &seq.to_be_bytes())))
    }
}

impl RedbStore {
    fn read_view(&self) -> Result<RedbSnapshot> {
        let txn = self.db.begin_read().map_err(redb_err)?;
        let open = |def| txn.open_table(def).map(RedbTable).map_err(redb_err);
        let meta = txn.open_table(META).map_err(redb_err)?;
        let ts_bound = max_ts_of(&meta)?;
        Ok(RedbSnapshot { docs: open(DOCS)?, index: open(INDEX)?, meta, ts_bound })
    }
}

impl Store for RedbStore {
    fn snapshot(&self) -> Result<Box<dyn Snapshot>> {
        Ok(Box::new(self.read_view()?))
    }

    fn begin(&self) -> Result<Box<dyn Batch>> {
        let guard = self.writer.acquire()?;
        let base = Box::new(self.read_view()?);
        Ok(Box::new(OverlayBatch::new(base, Box::new(RedbSink(Arc::clone(&self.db))), Arc::clone(&self.shelf), guard)))
    }

    fn replace(&self, fill: crate::Fill<'_>) -> Result<()> {
        let _writer = self.writer.acquire()?;
        crate::remembered::lock(&self.shelf).clear();
        replace_tables(&self.db, fill, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_in_key_order_keep_each_keys_newest_value() {
        let a = BTreeMap::from([(1, "a1"), (3, "a3"), (5, "a5")]);
        let b = BTreeMap::from([(2, "b2"), (3, "b3")]);
        let c = BTreeMap::from([(3, "c3"), (6, "c6"), (1, "c1")]);
        let got: Vec<_> = in_key_order([&a, &b, &c].into_iter()).into_iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(got, [(1, "c1"), (2, "b2"), (3, "c3"), (5, "a5"), (6, "c6")]);
        // Given in the other order, the other map is the newest.
        let got: Vec<_> = in_key_order([&c, &b, &a].into_iter()).into_iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(got, [(1, "a1"), (2, "b2"), (3, "a3"), (5, "a5"), (6, "c6")]);
        assert_eq!(in_key_order([&a].into_iter()).len(), 3);
        assert!(in_key_order(std::iter::empty::<&BTreeMap<u8, u8>>()).is_empty());
    }

    /// A fixed sequence of pseudo-random numbers below the `n` asked for each time.
    fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        }
    }

    /// Over many groups of maps with overlapping keys, the merge gives what inserting the
    /// maps into one, oldest first, gives.
    #[test]
    fn the_merge_is_what_writing_the_maps_one_after_another_leaves() {
        let mut rand = xorshift(0x9e37_79b9_7f4a_7c15u64);
        for _ in 0..500 {
            let maps: Vec<BTreeMap<u64, u64>> =
                (0..rand(6)).map(|_| (0..rand(40)).map(|_| (rand(60), rand(1000))).collect()).collect();
            let mut want = BTreeMap::new();
            for m in &maps {
                want.extend(m.iter().map(|(k, v)| (*k, *v)));
            }
            let got: Vec<(u64, u64)> = in_key_order(maps.iter()).into_iter().map(|(k, v)| (*k, *v)).collect();
            assert_eq!(got, want.into_iter().collect::<Vec<_>>());
        }
    }

    /// Writes through cursor runs leave what plain inserts and removals leave: over many
    /// rounds of ascending writes into a table that already holds keys around and between
    /// them, with runs into one gap, keys the table holds (replaced), removals (of held
    /// keys and of absent ones) and singles, each round's table is the model's.
    #[test]
    fn writes_in_runs_leave_what_plain_inserts_leave() {
        const T: TableDefinition<u64, &[u8]> = TableDefinition::new("t");
        let mut rand = xorshift(0x2545_f491_4f6c_dd1du64);
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let mut model: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for round in 0..300u64 {
            // Sparse keys and dense runs: a run of consecutive keys from a random start
            // falls into one gap when the table holds nothing between them.
            let mut writes: BTreeMap<u64, Option<Vec<u8>>> = BTreeMap::new();
            for _ in 0..rand(4) {
                let start = rand(5_000);
                for k in start..start + rand(300) {
                    writes.insert(k, Some(format!("{round}/{k}").into_bytes()));
                }
            }
            for _ in 0..rand(60) {
                let k = rand(5_000);
                let v = if rand(4) == 0 { None } else { Some(vec![b'x'; rand(3_000) as usize]) };
                writes.insert(k, v);
            }
            let txn = db.begin_write().unwrap();
            {
                let mut table = txn.open_table(T).unwrap();
                write_in_runs(&mut table, writes.iter().map(|(k, v)| (*k, v.as_deref()))).unwrap();
            }
            txn.commit().unwrap();
            for (k, v) in writes {
                match v {
                    Some(v) => model.insert(k, v),
                    None => model.remove(&k),
                };
            }
            let read = db.begin_read().unwrap();
            let table = read.open_table(T).unwrap();
            let got: Vec<(u64, Vec<u8>)> = table
                .range::<u64>(..)
                .unwrap()
                .map(|e| {
                    let (k, v) = e.unwrap();
                    (k.value(), v.value().to_vec())
                })
                .collect();
            assert!(got == model.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>(), "round {round}");
        }
        assert!(model.len() > 1_000, "the table grew to {} keys", model.len());
    }

    /// A replacement loaded through the buffered runs holds what plain inserts of its
    /// puts, in the order put, would leave: mostly ascending runs (a snapshot's stream),
    /// with puts out of order and repeated positions (the later put wins) mixed in, more
    /// than one buffer's worth, in both spaces.
    #[test]
    fn a_replacement_holds_what_its_puts_leave() {
        let mut rand = xorshift(0x9e37_79b9_7f4a_7c15);
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("r.redb")).unwrap();
        for round in 0..3u64 {
            type Versions = BTreeMap<(Vec<u8>, u64), Vec<u8>>;
            let mut model: [Versions; 2] = Default::default();
            let mut puts = Vec::new();
            let mut next = rand(1_000);
            while puts.len() < 30_000 {
                // Ascending: the next key, or the same key at an older ts.
                next += rand(3);
                let (key, ts) = if rand(20) == 0 { (rand(40_000), 1 + rand(9)) } else { (next, 9 - rand(3)) };
                let slot = usize::from(rand(4) == 0);
                let value = vec![b'a' + (round as u8); 100 + rand(600) as usize];
                puts.push((slot, format!("k{key:06}").into_bytes(), ts, value));
            }
            assert!(puts.iter().map(|p| p.1.len() + p.3.len()).sum::<usize>() > LOAD_BUFFER_BYTES);
            Store::replace(&store, &mut |l| {
                for (slot, key, ts, value) in &puts {
                    let space = if *slot == 0 { Space::Docs } else { Space::Index };
                    l.put(space, key, *ts, value)?;
                }
                Ok(())
            })
            .unwrap();
            for (slot, key, ts, value) in puts {
                model[slot].insert((key, ts), value);
            }
            let snap = store.snapshot().unwrap();
            for (slot, space) in [(0, Space::Docs), (1, Space::Index)] {
                let got: Vec<_> = snap
                    .versions_from(space, None)
                    .unwrap()
                    .map(|e| {
                        let (k, v) = e.unwrap();
                        ((k, v.ts), v.value)
                    })
                    .collect();
                let mut want: Vec<_> = model[slot].clone().into_iter().collect();
                // The store's order: by key, newest first.
                want.sort_by(|a, b| (&a.0 .0, std::cmp::Reverse(a.0 .1)).cmp(&(&b.0 .0, std::cmp::Reverse(b.0 .1))));
                assert!(got == want, "round {round}, {space:?}: {} versions held, {} put", got.len(), want.len());
            }
        }
    }

    /// One write of several overlays leaves what writing them one by one leaves: a version
    /// removed by a later overlay is gone, a meta name set by several holds the last value.
    #[test]
    fn a_group_of_overlays_is_written_as_if_one_after_another() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("s.redb")).unwrap();
        let mut older = Overlay::default();
        older.insert(Space::Docs, b"k", 10, Some(b"v10".to_vec()));
        older.insert(Space::Docs, b"z", 10, Some(b"z10".to_vec()));
        older.insert(Space::Index, b"i", 10, Some(b"i10".to_vec()));
        older.set_meta("applied_height", b"1".to_vec());
        older.set_meta("block/1", b"b1".to_vec());
        let mut newer = Overlay::default();
        newer.insert(Space::Docs, b"k", 10, None);
        newer.insert(Space::Docs, b"k", 20, Some(b"v20".to_vec()));
        newer.insert(Space::Docs, b"a", 20, Some(b"a20".to_vec()));
        newer.set_meta("applied_height", b"2".to_vec());
        newer.set_meta("block/2", b"b2".to_vec());
        store.write(&[&older, &newer], false).unwrap();
        let snap = store.view().unwrap();
        let history = |key: &[u8]| -> Vec<(Ts, Vec<u8>)> {
            let versions = snap.history(Space::Docs, key, 0, u64::MAX, false).unwrap();
            versions.map(|v| v.map(|v| (v.ts, v.value)).unwrap()).collect()
        };
        assert_eq!(history(b"k"), [(20, b"v20".to_vec())]);
        assert_eq!(history(b"z"), [(10, b"z10".to_vec())]);
        assert_eq!(history(b"a"), [(20, b"a20".to_vec())]);
        assert_eq!(snap.get(Space::Index, b"i", 10).unwrap().map(|v| v.value), Some(b"i10".to_vec()));
        assert_eq!(snap.meta("applied_height").unwrap(), Some(b"2".to_vec()));
        assert_eq!(snap.meta("block/1").unwrap(), Some(b"b1".to_vec()));
        assert_eq!(snap.meta("block/2").unwrap(), Some(b"b2".to_vec()));
    }
}
