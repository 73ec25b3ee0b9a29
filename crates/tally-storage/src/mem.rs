//! [`MemStore`]: the in-memory store used by tests and the deterministic simulation.
//!
//! The state is an immutable `Arc<MemState>`; a snapshot clones the `Arc`, and a commit
//! replaces it copy-on-write. A commit therefore copies the whole state while any other
//! snapshot is alive: fine for tests and simulation, the reason this is not the real store.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::ops::Bound::{self, Excluded, Included, Unbounded};
use std::sync::{Arc, Mutex};

use crate::batch::{Overlay, OverlayBatch, Sink, WriterLock};
use crate::behind::{Backend, BehindLimits, WriteBehind};
use crate::read::{self, PosRef, VersionEntry, VersionTable};
use crate::{Batch, HistIter, Result, ScanIter, Snapshot, Space, StorageError, Store, Ts};

/// Versions of one space: `(key, Reverse(ts))` sorts a key's versions newest first.
pub(crate) type VersionMap<V> = BTreeMap<(Vec<u8>, Reverse<Ts>), V>;

fn map_bound(b: Bound<PosRef<'_>>) -> Bound<(Vec<u8>, Reverse<Ts>)> {
    match b {
        Included((k, ts)) => Included((k.to_vec(), Reverse(ts))),
        Excluded((k, ts)) => Excluded((k.to_vec(), Reverse(ts))),
        Unbounded => Unbounded,
    }
}

/// Range over a version map; empty (instead of a panic) for inverted bounds.
pub(crate) fn map_range<'a, V>(
    map: &'a VersionMap<V>,
    lo: Bound<PosRef<'_>>,
    hi: Bound<PosRef<'_>>,
) -> std::collections::btree_map::Range<'a, (Vec<u8>, Reverse<Ts>), V> {
    if read::bounds_empty(lo, hi) {
        // An always-empty range that cannot panic.
        let k = (Vec::new(), Reverse(Ts::MAX));
        return map.range((Excluded(k.clone()), Included(k)));
    }
    map.range((map_bound(lo), map_bound(hi)))
}

#[derive(Clone, Default)]
struct MemTable(VersionMap<Vec<u8>>);

impl VersionEntry for (&(Vec<u8>, Reverse<Ts>), &Vec<u8>) {
    fn key(&self) -> &[u8] {
        &self.0 .0
    }
    fn ts(&self) -> Ts {
        self.0 .1 .0
    }
    fn value(&self) -> Vec<u8> {
        self.1.clone()
    }
    fn value_head(&self, n: usize) -> Vec<u8> {
        self.1[..n.min(self.1.len())].to_vec()
    }
}

impl VersionTable for MemTable {
    type Entry<'a> = (&'a (Vec<u8>, Reverse<Ts>), &'a Vec<u8>);

    fn range<'a>(
        &'a self,
        lo: Bound<PosRef<'_>>,
        hi: Bound<PosRef<'_>>,
    ) -> Result<read::EntryIter<'a, Self::Entry<'a>>> {
        Ok(Box::new(map_range(&self.0, lo, hi).map(Ok)))
    }
}

#[derive(Clone, Default)]
struct MemState {
    docs: Arc<MemTable>,
    index: Arc<MemTable>,
    meta: BTreeMap<String, Vec<u8>>,
}

impl MemState {
    fn table(&self, space: Space) -> &MemTable {
        match space {
            Space::Docs => &self.docs,
            Space::Index => &self.index,
        }
    }

    fn apply(&mut self, overlay: &Overlay) {
        for (space, writes) in [(Space::Docs, &overlay.docs), (Space::Index, &overlay.index)] {
            if writes.is_empty() {
                continue;
            }
            let table = match space {
                Space::Docs => &mut self.docs,
                Space::Index => &mut self.index,
            };
            let map = &mut Arc::make_mut(table).0;
            for (pos, value) in writes {
                match value {
                    Some(v) => map.insert(pos.clone(), v.clone()),
                    None => map.remove(pos),
                };
            }
        }
        self.meta.extend(overlay.meta().iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}

/// In-memory [`Store`]; see the module doc for its cost model.
#[derive(Default)]
pub struct MemStore {
    state: Arc<Mutex<Arc<MemState>>>,
    /// What its batches remember (`crate::remembered`).
    shelf: crate::remembered::Shelf,
    writer: WriterLock,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// This store behind a write-behind queue (tests of [`WriteBehind`]).
    pub fn write_behind(self, limits: BehindLimits) -> Result<WriteBehind> {
        WriteBehind::start(Box::new(self), limits)
    }

    fn current(&self) -> Result<Arc<MemState>> {
        current(&self.state)
    }
}

fn current(state: &Mutex<Arc<MemState>>) -> Result<Arc<MemState>> {
    match state.lock() {
        Ok(s) => Ok(Arc::clone(&s)),
        Err(_) => Err(StorageError::Corrupt("memory store lock poisoned by a panic".into())),
    }
}

struct MemSnapshot(Arc<MemState>);

impl Snapshot for MemSnapshot {
    fn get(&self, space: Space, key: &[u8], at: Ts) -> Result<Option<crate::Version>> {
        read::get(self.0.table(space), key, at)
    }

    fn history<'a>(&'a self, space: Space, key: &[u8], lo: Ts, hi: Ts, desc: bool) -> Result<HistIter<'a>> {
        read::history(self.0.table(space), key, lo, hi, desc)
    }

    fn scan<'a>(
        &'a self,
        space: Space,
        prefix: &[u8],
        from: Option<&[u8]>,
        desc: bool,
        at: Ts,
    ) -> Result<ScanIter<'a>> {
        read::scan(self.0.table(space), prefix, from, desc, at, None)
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
        read::scan(self.0.table(space), prefix, from, desc, at, Some(head))
    }

    fn versions_from<'a>(&'a self, space: Space, from: Option<&[u8]>) -> Result<ScanIter<'a>> {
        read::versions_from(self.0.table(space), from)
    }

    fn next_key_bound(&self, space: Space, from: &[u8]) -> Result<Option<Vec<u8>>> {
        read::next_key(self.0.table(space), from)
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.0.meta.get(key).cloned())
    }
}

struct MemSink(Arc<Mutex<Arc<MemState>>>);

fn write_overlays(state: &Mutex<Arc<MemState>>, overlays: &[&Overlay]) -> Result<()> {
    let mut guard = state.lock().map_err(|_| StorageError::Corrupt("memory store lock poisoned by a panic".into()))?;
    // Copy-on-write: snapshots holding the old state keep their view; with none alive
    // (the batch dropped its own base first) nothing is copied.
    let state = Arc::make_mut(&mut guard);
    for overlay in overlays {
        state.apply(overlay);
    }
    Ok(())
}

impl Sink for MemSink {
    fn apply(self: Box<Self>, overlay: Overlay, _durable: bool) -> Result<()> {
        write_overlays(&self.0, &[&overlay])
    }
}

impl Backend for MemStore {
    fn view(&self) -> Result<Box<dyn Snapshot>> {
        Ok(Box::new(MemSnapshot(self.current()?)))
    }

    fn write(&self, overlays: &[&Overlay], _durable: bool) -> Result<()> {
        write_overlays(&self.state, overlays)
    }
}

impl Store for MemStore {
    fn snapshot(&self) -> Result<Box<dyn Snapshot>> {
        Ok(Box::new(MemSnapshot(self.current()?)))
    }

    fn begin(&self) -> Result<Box<dyn Batch>> {
        let guard = self.writer.acquire()?;
        let base = Box::new(MemSnapshot(self.current()?));
        Ok(Box::new(OverlayBatch::new(
            base,
            Box::new(MemSink(Arc::clone(&self.state))),
            Arc::clone(&self.shelf),
            guard,
        )))
    }
}
