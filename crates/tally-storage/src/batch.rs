//! The write batch shared by both stores: an in-memory overlay of writes on top of a
//! snapshot taken at `begin`, merged on every read and handed to a backend [`Sink`] on
//! commit. The single-writer rule ([`WriterLock`]) makes that snapshot equal to the state
//! the commit applies to.

use std::borrow::Borrow;
use std::iter::Peekable;
use std::ops::Bound::{Included, Unbounded};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::remembered::{self, Gap, Remembered, Shelf};

use crate::mem::{map_range, VersionMap};
use crate::read;
use crate::{Batch, HistIter, Result, ScanIter, Snapshot, Space, StorageError, Ts, Version, VALUE_BYTES_MAX};

/// Buffered writes; `None` is a removed version.
#[derive(Default)]
pub(crate) struct Overlay {
    pub docs: VersionMap<Option<Vec<u8>>>,
    pub index: VersionMap<Option<Vec<u8>>>,
    /// Meta values set, by name. A hash map, not a B-tree: a merged write-behind entry holds
    /// thousands of names (each transaction's ledger leaf and subtree hashes, each block's
    /// header and signature), every commit merged into it inserts its own, and names are
    /// only ever looked up one at a time; the backend write sorts them
    /// ([`Overlay::meta_in_key_order`]). The hasher has a fixed seed, like [`KeyFilter`]'s.
    meta: MetaMap,
    /// Roughly the memory the writes hold (keys and values), for the write-behind bound.
    pub bytes: usize,
    /// The greatest ts buffered (a version or a removal); 0 when none is.
    pub max_ts: Ts,
    /// The keys buffered, as a Bloom filter: a read of a key this overlay does not hold
    /// (most keys, in most layers of a write-behind stack) goes to the base after one
    /// hash instead of a copy of the key and a search of the map.
    keys: KeyFilter,
}

/// [`Overlay`]'s meta values.
pub(crate) type MetaMap = std::collections::HashMap<String, Vec<u8>, foldhash::fast::FixedState>;

/// A Bloom filter of keys with two probes, [`FILTER_BITS_PER_KEY`] bits per distinct key
/// (from 1,024 bits, grown by its overlay as keys come, up to [`FILTER_BITS_MAX`]): about
/// 1.5 % of absent keys pass at any size up to 262,144 keys. A fixed 1,024 bits let
/// nearly every key through an overlay of a few thousand keys (a batch of batched
/// requests), and each read of a key no layer held then searched every layer's map. The
/// hash has a fixed seed: the storage layer has no randomness.
struct KeyFilter {
    /// A power of two of bits, at least [`FILTER_BITS_MIN`].
    bits: Vec<u64>,
    /// Keys added that the filter did not already hold (about the distinct keys).
    held: usize,
}

const FILTER_BITS_MIN: usize = 1024;
const FILTER_BITS_MAX: usize = 1 << 22;
const FILTER_BITS_PER_KEY: usize = 16;

impl Default for KeyFilter {
    fn default() -> Self {
        KeyFilter { bits: vec![0; FILTER_BITS_MIN / 64], held: 0 }
    }
}

impl KeyFilter {
    /// An empty filter sized for `keys` distinct keys.
    fn sized_for(keys: usize) -> Self {
        let bits = keys.saturating_mul(FILTER_BITS_PER_KEY).next_power_of_two().clamp(FILTER_BITS_MIN, FILTER_BITS_MAX);
        KeyFilter { bits: vec![0; bits / 64], held: 0 }
    }

    /// A filter of `keys`, sized for `count` of them (repeats allowed).
    fn of<'k>(count: usize, keys: impl Iterator<Item = &'k [u8]>) -> Self {
        let mut f = KeyFilter::sized_for(count);
        for k in keys {
            f.add(k);
        }
        f
    }

    /// The hash every filter probes with ([`Snapshot::get_hashed`] carries it down a stack
    /// of layers, so a read hashes its key once).
    pub(crate) fn hash(key: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        foldhash::fast::FixedState::with_seed(0).hash_one(key)
    }

    fn probes(&self, key: &[u8]) -> [usize; 2] {
        self.probes_of(Self::hash(key))
    }

    fn probes_of(&self, h: u64) -> [usize; 2] {
        // Two independent halves of the hash; the filter has at most 2^22 bits.
        let mask = (self.bits.len() * 64 - 1) as u64;
        [(h & mask) as usize, ((h >> 32) & mask) as usize]
    }

    /// Add `key`. Returns whether the filter now holds more keys than its size serves
    /// (the owner then builds a larger one from its keys).
    fn add(&mut self, key: &[u8]) -> bool {
        let probes = self.probes(key);
        if !self.holds(probes) {
            self.held += 1;
            for p in probes {
                self.bits[p / 64] |= 1 << (p % 64);
            }
        }
        let size = self.bits.len() * 64;
        self.held * FILTER_BITS_PER_KEY > size && size < FILTER_BITS_MAX
    }

    fn holds(&self, probes: [usize; 2]) -> bool {
        probes.iter().all(|&p| self.bits[p / 64] & (1 << (p % 64)) != 0)
    }

    fn may_hold(&self, key: &[u8]) -> bool {
        self.holds(self.probes(key))
    }

    fn may_hold_hash(&self, h: u64) -> bool {
        self.holds(self.probes_of(h))
    }
}

impl Overlay {
    fn space(&self, space: Space) -> &VersionMap<Option<Vec<u8>>> {
        match space {
            Space::Docs => &self.docs,
            Space::Index => &self.index,
        }
    }

    /// Buffer the version of `key` at `ts` (`None`: a removal), replacing one buffered
    /// there. The one way versions enter an overlay, so that [`Overlay::max_ts`] holds.
    pub fn insert(&mut self, space: Space, key: &[u8], ts: Ts, value: Option<Vec<u8>>) {
        self.insert_owned(space, key.to_vec(), ts, value);
    }

    fn insert_owned(&mut self, space: Space, key: Vec<u8>, ts: Ts, value: Option<Vec<u8>>) {
        self.max_ts = self.max_ts.max(ts);
        let outgrown = self.keys.add(&key);
        let map = match space {
            Space::Docs => &mut self.docs,
            Space::Index => &mut self.index,
        };
        map.insert((key, std::cmp::Reverse(ts)), value);
        if outgrown {
            let versions = self.docs.len() + self.index.len();
            let keys = self.docs.keys().chain(self.index.keys()).map(|(k, _)| k.as_slice());
            self.keys = KeyFilter::of(self.keys.held.max(versions / 2), keys);
        }
    }

    /// Take in `newer`, an overlay committed after this one: this overlay then reads as
    /// the two stacked did (`newer` on top). A version or removal of `newer` replaces one
    /// buffered at the same (key, ts), as the top layer wins there; its meta values
    /// replace this one's. Counted bytes add up (a replaced version stays counted, so the
    /// count stays an upper bound).
    pub fn absorb(&mut self, newer: Overlay) {
        let Overlay { docs, index, meta, bytes, max_ts, .. } = newer;
        for (space, map) in [(Space::Docs, docs), (Space::Index, index)] {
            for ((key, ts), value) in map {
                self.insert_owned(space, key, ts.0, value);
            }
        }
        self.meta.extend(meta);
        self.bytes += bytes;
        self.max_ts = self.max_ts.max(max_ts);
    }

    /// Set the meta value `key`.
    pub fn set_meta(&mut self, key: &str, value: Vec<u8>) {
        self.meta.insert(key.to_owned(), value);
    }

    /// The meta values set, by name, in no particular order.
    pub fn meta(&self) -> &MetaMap {
        &self.meta
    }

    /// The meta values `overlays` (oldest first) set, in name order, each name once with
    /// its newest value: what a backend writes.
    pub fn meta_in_key_order<'a>(overlays: impl Iterator<Item = &'a Overlay>) -> Vec<(&'a str, &'a [u8])> {
        let mut all: Vec<(&str, &[u8])> = Vec::new();
        for o in overlays {
            all.extend(o.meta.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
        }
        // Stable: among equal names the newest overlay's comes last, and is kept.
        all.sort_by(|a, b| a.0.cmp(b.0));
        let mut out: Vec<(&str, &[u8])> = Vec::with_capacity(all.len());
        for (k, v) in all {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => out.push((k, v)),
            }
        }
        out
    }

    /// The meta value `key`, if this overlay set it.
    fn meta_of(&self, key: &str) -> Option<&Vec<u8>> {
        self.meta.get(key)
    }

    /// Whether any version of `key` is buffered.
    fn touches(&self, space: Space, key: &[u8]) -> bool {
        self.keys.may_hold(key) && self.versions_at(space, key, Ts::MAX).next().is_some()
    }

    /// The buffered versions of `key` at or before `at`, newest first. One bound is
    /// built (the map's keys are owned, so a bound is a copy of `key`): every read of a
    /// write-behind snapshot asks this of every layer in its stack.
    /// Every buffered version of `key` (None: a removal), newest first.
    pub(crate) fn versions_of<'a>(
        &'a self,
        space: Space,
        key: &'a [u8],
    ) -> impl Iterator<Item = (Ts, Option<&'a [u8]>)> + 'a {
        self.versions_at(space, key, Ts::MAX)
    }

    /// Whether the overlay may hold a version of `key` in either space (false: it holds none).
    pub(crate) fn may_hold(&self, key: &[u8]) -> bool {
        self.keys.may_hold(key)
    }

    /// Versions (and removals) buffered in `space`.
    pub(crate) fn versions_in(&self, space: Space) -> &VersionMap<Option<Vec<u8>>> {
        self.space(space)
    }

    fn versions_at<'a>(
        &'a self,
        space: Space,
        key: &'a [u8],
        at: Ts,
    ) -> impl Iterator<Item = (Ts, Option<&'a [u8]>)> + 'a {
        let from = (key.to_vec(), std::cmp::Reverse(at));
        self.space(space)
            .range((Included(from), std::ops::Bound::Unbounded))
            .take_while(move |((k, _), _)| k.as_slice() == key)
            .map(|((_, ts), v)| (ts.0, v.as_deref()))
    }
}

/// What one buffered version costs beyond its key and value (map node, two allocations).
const VERSION_OVERHEAD_BYTES: usize = 64;

/// Where a committed overlay goes.
pub(crate) trait Sink: Send {
    fn apply(self: Box<Self>, overlay: Overlay, durable: bool) -> Result<()>;
}

/// Enforces the single writer without blocking (a blocked deterministic simulation would
/// hang rather than fail).
#[derive(Clone, Default)]
pub(crate) struct WriterLock(Arc<AtomicBool>);

pub(crate) struct WriterGuard(Arc<AtomicBool>);

impl WriterLock {
    pub fn acquire(&self) -> Result<WriterGuard> {
        self.0
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .map_err(|_| StorageError::WriterBusy)?;
        Ok(WriterGuard(Arc::clone(&self.0)))
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A read view: writes buffered in `overlay` on top of `base`. The overlay wins at equal
/// (key, ts), and its removals hide the base's versions. Write batches read through one;
/// the write-behind store stacks one per commit not yet written to its backend.
pub(crate) struct Layer<O> {
    pub base: Box<dyn Snapshot>,
    pub overlay: O,
    /// `base.ts_bound()`, asked once.
    base_bound: Ts,
}

impl<O: Borrow<Overlay>> Layer<O> {
    pub fn new(base: Box<dyn Snapshot>, overlay: O) -> Self {
        let base_bound = base.ts_bound();
        Layer { base, overlay, base_bound }
    }

    pub fn into_parts(self) -> (Box<dyn Snapshot>, O) {
        (self.base, self.overlay)
    }
}

impl<O: Borrow<Overlay> + Send> Snapshot for Layer<O> {
    fn get(&self, space: Space, key: &[u8], at: Ts) -> Result<Option<Version>> {
        self.get_hashed(space, key, KeyFilter::hash(key), at)
    }

    fn get_hashed(&self, space: Space, key: &[u8], hash: u64, at: Ts) -> Result<Option<Version>> {
        // The first version `history(0, at, desc)` merges (`MergeHistory`), found with
        // the base's `get` instead of a merge of the whole stack's histories: a hot key is
        // in every layer, and each merge built one more level of boxed iterators. Most
        // keys are in no given overlay: then the base answers alone.
        let overlay = self.overlay.borrow();
        if !overlay.keys.may_hold_hash(hash) {
            return self.base.get_hashed(space, key, hash, at);
        }
        let mut over = overlay.versions_at(space, key, at).peekable();
        // A version here at or after every version of the base is the answer, without
        // asking the base: a hot key is in the top layers of a write-behind stack, and
        // going down the whole stack to the backend for it was a fifth of the executor's
        // time (docs/benchmarks.md). The overlay wins at equal ts. A history edit can put
        // a version below the base's newest, and the base then answers as below.
        if let Some(&(over_ts, Some(value))) = over.peek() {
            if over_ts >= self.base_bound {
                return Ok(Some(Version { ts: over_ts, value: value.to_vec() }));
            }
        }
        let mut base = self.base.get_hashed(space, key, hash, at)?;
        loop {
            let Some((over_ts, value)) = over.next() else { return Ok(base) };
            if base.as_ref().is_some_and(|b| b.ts > over_ts) {
                return Ok(base);
            }
            // The overlay wins at equal ts; a removal hides the base's version there (the
            // base is asked again below it) and the search goes on.
            match value {
                Some(v) => return Ok(Some(Version { ts: over_ts, value: v.to_vec() })),
                None if base.as_ref().is_some_and(|b| b.ts == over_ts) => {
                    base = match over_ts.checked_sub(1) {
                        Some(below) => self.base.get_hashed(space, key, hash, below)?,
                        None => None,
                    };
                }
                None => {}
            }
        }
    }

    fn history<'a>(&'a self, space: Space, key: &[u8], lo: Ts, hi: Ts, desc: bool) -> Result<HistIter<'a>> {
        if lo > hi {
            return Ok(Box::new(std::iter::empty()));
        }
        let overlay = self.overlay.borrow();
        if !overlay.touches(space, key) {
            return self.base.history(space, key, lo, hi, desc);
        }
        let base = self.base.history(space, key, lo, hi, desc)?;
        let over = map_range(overlay.space(space), Included((key, hi)), Included((key, lo)))
            .map(|((_, ts), v)| (ts.0, v.as_deref()));
        let over: OverlayVersions<'_> = if desc { Box::new(over) } else { Box::new(over.rev()) };
        Ok(Box::new(MergeHistory { base: base.peekable(), over: over.peekable(), desc }))
    }

    fn scan<'a>(
        &'a self,
        space: Space,
        prefix: &[u8],
        from: Option<&[u8]>,
        desc: bool,
        at: Ts,
    ) -> Result<ScanIter<'a>> {
        let base = self.base.scan(space, prefix, from, desc, at)?;
        self.merge_scan(base, space, prefix, from, desc, at)
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
        // The base copies only heads; keys this overlay wrote are few and in memory.
        let base = self.base.scan_heads(space, prefix, from, desc, at, head)?;
        Ok(crate::cut_values(self.merge_scan(base, space, prefix, from, desc, at)?, head))
    }

    fn versions_from<'a>(&'a self, space: Space, from: Option<&[u8]>) -> Result<ScanIter<'a>> {
        let base = self.base.versions_from(space, from)?;
        let lo = match from {
            Some(f) => Included((f, Ts::MAX)),
            None => std::ops::Bound::Unbounded,
        };
        let over = map_range(self.overlay.borrow().space(space), lo, std::ops::Bound::Unbounded);
        if over.clone().next().is_none() {
            return Ok(base);
        }
        Ok(Box::new(MergeVersions { base: base.peekable(), over: over.peekable() }))
    }

    fn next_key_bound(&self, space: Space, from: &[u8]) -> Result<Option<Vec<u8>>> {
        // Any entry of this overlay (a removal too) ends the range as well as a held key:
        // what is below it is decided by the base alone.
        let base = self.base.next_key_bound(space, from)?;
        let over = map_range(self.overlay.borrow().space(space), Included((from, Ts::MAX)), Unbounded).next();
        Ok(match (base, over) {
            (Some(b), Some(((o, _), _))) if o.as_slice() < b.as_slice() => Some(o.clone()),
            (None, Some(((o, _), _))) => Some(o.clone()),
            (b, _) => b,
        })
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.overlay.borrow().meta_of(key) {
            Some(v) => Ok(Some(v.clone())),
            None => self.base.meta(key),
        }
    }

    fn ts_bound(&self) -> Ts {
        self.base_bound.max(self.overlay.borrow().max_ts)
    }
}

impl<O: Borrow<Overlay> + Send> Layer<O> {
    /// The base's scan merged with this overlay's keys in range.
    fn merge_scan<'a>(
        &'a self,
        base: ScanIter<'a>,
        space: Space,
        prefix: &[u8],
        from: Option<&[u8]>,
        desc: bool,
        at: Ts,
    ) -> Result<ScanIter<'a>> {
        let Some((lo, hi)) = read::scan_bounds(prefix, from, desc) else {
            return Ok(Box::new(std::iter::empty()));
        };
        let touched = map_range(self.overlay.borrow().space(space), read::as_ref(&lo), read::as_ref(&hi));
        if touched.clone().next().is_none() {
            return Ok(base);
        }
        let keys = touched.map(|((k, _), _)| k.as_slice());
        let keys: Box<dyn Iterator<Item = &[u8]>> = if desc { Box::new(keys.rev()) } else { Box::new(keys) };
        let mut last: Option<&[u8]> = None;
        let keys = keys.filter(move |k| last.replace(k) != Some(k));
        Ok(Box::new(MergeScan {
            layer: self,
            space,
            at,
            desc,
            base: base.peekable(),
            over: (Box::new(keys) as Box<dyn Iterator<Item = &[u8]>>).peekable(),
        }))
    }
}

pub(crate) struct OverlayBatch {
    layer: Layer<Overlay>,
    sink: Box<dyn Sink>,
    /// What the store's batches remember of it (`crate::remembered`), kept up to date by
    /// [`Batch::commit`].
    shelf: Shelf,
    writer: WriterGuard,
}

impl OverlayBatch {
    /// The write batch over `base`, the store's latest commit, remembering through `shelf`
    /// (the store's own, which only its write batch uses: `writer` is the store's writer
    /// lock).
    pub fn new(base: Box<dyn Snapshot>, sink: Box<dyn Sink>, shelf: Shelf, writer: WriterGuard) -> Self {
        let base = Box::new(NewestMemo::new(base, Arc::clone(&shelf)));
        OverlayBatch { layer: Layer::new(base, Overlay::default()), sink, shelf, writer }
    }
}
/// [`Gap`]s remembered per space.
pub(crate) const MEMO_GAPS_MAX: usize = 16;
/// The longest key a [`Gap`] starts or ends at.
pub(crate) const MEMO_GAP_KEY_BYTES_MAX: usize = 1024;
/// Lookups of the next held key ([`Snapshot::next_key_bound`]) a batch makes to learn
/// [`Gap`]s: a batch that reads many absent keys at random places pays at most this many
/// on top of its reads.
const MEMO_GAP_SCANS_MAX: usize = 64;

/// A batch's base with each key's newest version remembered once read, in the store's
/// [`Remembered`], which later batches keep using (see `crate::remembered`). The base is
/// the store's latest commit, and what is remembered is the store's newest version of each
/// key it holds, so the base's answer for `get(key, at)` is that version whenever its ts is
/// at or before `at`. A batch reads hot keys transaction after transaction, each at its own
/// ts, at or after every version its base holds; each such read went down the whole
/// write-behind stack to redb, about a quarter of a transfer's evaluation
/// (docs/benchmarks.md).
///
/// It also remembers where the base holds nothing ([`Gap`], kept in [`Remembered`] for
/// later batches too): a read that finds a key absent asks the base for the next key it
/// holds, and a later read of an absent key between the two is answered at once. A transaction that creates a document
/// first checks its new id is free, and ids grow with the commit ts, so a batch's creates
/// in a collection all read past the collection's last document: each such read went down
/// the whole stack to redb, a tenth of a batched transfer's evaluation (docs/benchmarks.md).
struct NewestMemo {
    base: Box<dyn Snapshot>,
    /// Taken from the store's shelf when the batch begins and put back when the memo is
    /// dropped (the batch's commit drops it first; a batch dropped uncommitted changed
    /// nothing): the batch's reads then take no lock.
    kept: std::cell::RefCell<Remembered>,
    shelf: Shelf,
    /// Scans left to learn gaps with ([`MEMO_GAP_SCANS_MAX`]).
    gap_scans: std::cell::Cell<usize>,
}

impl NewestMemo {
    fn new(base: Box<dyn Snapshot>, shelf: Shelf) -> Self {
        let kept = std::cell::RefCell::new(std::mem::take(&mut *remembered::lock(&shelf)));
        NewestMemo { base, kept, shelf, gap_scans: std::cell::Cell::new(MEMO_GAP_SCANS_MAX) }
    }

    /// Whether a remembered [`Gap`] holds `key`.
    fn in_gap(&self, slot: usize, key: &[u8]) -> bool {
        self.kept.borrow().gaps[slot].iter().any(|g| g.holds(key))
    }

    /// After the base answered that it holds no version of `key`: remember the gap from
    /// `key` up to the next key it holds (or a key before that: its `next_key_bound`). At
    /// most [`MEMO_GAPS_MAX`] per space, the oldest forgotten first, and at most
    /// [`MEMO_GAP_SCANS_MAX`] lookups; a gap whose end is longer than
    /// [`MEMO_GAP_KEY_BYTES_MAX`] is not kept.
    fn learn_gap(&self, space: Space, slot: usize, key: &[u8]) -> Result<()> {
        if key.len() > MEMO_GAP_KEY_BYTES_MAX || self.gap_scans.get() == 0 {
            return Ok(());
        }
        self.gap_scans.set(self.gap_scans.get() - 1);
        // Not the first key of a scan from `key`: through a deep stack of write-behind
        // layers that merged every layer's versions, ≈ 18 µs each and 6 % of the hot
        // executor (docs/benchmarks.md).
        let next = self.base.next_key_bound(space, key)?;
        // The bound is at or after `key`; at `key` itself (an overlay's removal of one of
        // its versions) there is no gap.
        if next.as_deref().is_some_and(|n| n <= key || n.len() > MEMO_GAP_KEY_BYTES_MAX) {
            return Ok(());
        }
        let mut kept = self.kept.borrow_mut();
        let gaps = &mut kept.gaps[slot];
        if gaps.len() == MEMO_GAPS_MAX {
            gaps.remove(0);
        }
        gaps.push(Gap { from: key.to_vec(), until: next });
        Ok(())
    }

    fn slot(space: Space) -> usize {
        match space {
            Space::Docs => 0,
            Space::Index => 1,
        }
    }
}

impl Drop for NewestMemo {
    fn drop(&mut self) {
        *remembered::lock(&self.shelf) = std::mem::take(self.kept.get_mut());
    }
}

impl Snapshot for NewestMemo {
    fn get(&self, space: Space, key: &[u8], at: Ts) -> Result<Option<Version>> {
        let slot = Self::slot(space);
        let kept = self.kept.borrow_mut().newest(space, key);
        if let Some(newest) = kept {
            return match newest {
                None => Ok(None),
                Some(v) if v.ts <= at => Ok(Some(v)),
                Some(_) => self.base.get(space, key, at),
            };
        }
        if self.in_gap(slot, key) {
            return Ok(None);
        }
        let newest = self.base.get(space, key, Ts::MAX)?;
        if newest.is_none() {
            self.learn_gap(space, slot, key)?;
        }
        let answer = match &newest {
            Some(v) if v.ts > at => self.base.get(space, key, at)?,
            other => other.clone(),
        };
        self.kept.borrow_mut().keep(space, key.to_vec(), newest);
        Ok(answer)
    }

    fn history<'a>(&'a self, space: Space, key: &[u8], lo: Ts, hi: Ts, desc: bool) -> Result<HistIter<'a>> {
        self.base.history(space, key, lo, hi, desc)
    }

    fn scan<'a>(
        &'a self,
        space: Space,
        prefix: &[u8],
        from: Option<&[u8]>,
        desc: bool,
        at: Ts,
    ) -> Result<ScanIter<'a>> {
        self.base.scan(space, prefix, from, desc, at)
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
        self.base.scan_heads(space, prefix, from, desc, at, head)
    }

    fn versions_from<'a>(&'a self, space: Space, from: Option<&[u8]>) -> Result<ScanIter<'a>> {
        self.base.versions_from(space, from)
    }

    fn next_key_bound(&self, space: Space, from: &[u8]) -> Result<Option<Vec<u8>>> {
        self.base.next_key_bound(space, from)
    }

    fn ts_bound(&self) -> Ts {
        self.base.ts_bound()
    }

    /// Remembered too (every transaction reads a few meta values, each through every
    /// write-behind layer).
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.kept.borrow_mut().meta(key) {
            return Ok(v);
        }
        let v = self.base.meta(key)?;
        self.kept.borrow_mut().keep_meta(key.to_owned(), v.clone());
        Ok(v)
    }
}

impl Snapshot for OverlayBatch {
    fn get(&self, space: Space, key: &[u8], at: Ts) -> Result<Option<Version>> {
        self.layer.get(space, key, at)
    }

    fn history<'a>(&'a self, space: Space, key: &[u8], lo: Ts, hi: Ts, desc: bool) -> Result<HistIter<'a>> {
        self.layer.history(space, key, lo, hi, desc)
    }

    fn scan<'a>(
        &'a self,
        space: Space,
        prefix: &[u8],
        from: Option<&[u8]>,
        desc: bool,
        at: Ts,
    ) -> Result<ScanIter<'a>> {
        self.layer.scan(space, prefix, from, desc, at)
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
        self.layer.scan_heads(space, prefix, from, desc, at, head)
    }

    fn versions_from<'a>(&'a self, space: Space, from: Option<&[u8]>) -> Result<ScanIter<'a>> {
        self.layer.versions_from(space, from)
    }

    fn next_key_bound(&self, space: Space, from: &[u8]) -> Result<Option<Vec<u8>>> {
        self.layer.next_key_bound(space, from)
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.layer.meta(key)
    }

    fn ts_bound(&self) -> Ts {
        self.layer.ts_bound()
    }
}

impl Batch for OverlayBatch {
    fn put(&mut self, space: Space, key: &[u8], ts: Ts, value: &[u8]) -> Result<()> {
        crate::check_put(key, value)?;
        let overlay = &mut self.layer.overlay;
        overlay.bytes += key.len() + value.len() + VERSION_OVERHEAD_BYTES;
        overlay.insert(space, key, ts, Some(value.to_vec()));
        Ok(())
    }

    fn remove(&mut self, space: Space, key: &[u8], ts: Ts) -> Result<bool> {
        let pos = (key.to_vec(), std::cmp::Reverse(ts));
        let existed = match self.layer.overlay.space(space).get(&pos) {
            Some(v) => v.is_some(),
            None => self.layer.base.history(space, key, ts, ts, true)?.next().transpose()?.is_some(),
        };
        self.layer.overlay.bytes += key.len() + VERSION_OVERHEAD_BYTES;
        self.layer.overlay.insert(space, key, ts, None);
        Ok(existed)
    }

    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<()> {
        if crate::reserved_meta(key) {
            return Err(StorageError::Invalid(format!("meta key {key:?} is reserved")));
        }
        if value.len() > VALUE_BYTES_MAX {
            return Err(StorageError::Invalid(format!("meta value of {} bytes is too large", value.len())));
        }
        self.layer.overlay.bytes += key.len() + value.len() + VERSION_OVERHEAD_BYTES;
        self.layer.overlay.set_meta(key, value.to_vec());
        Ok(())
    }

    fn commit(self: Box<Self>, durable: bool) -> Result<()> {
        let OverlayBatch { layer, sink, shelf, writer } = *self;
        let (base, overlay) = layer.into_parts();
        // Release the base view first so the in-memory store need not copy its state (and
        // its memo puts back what it kept).
        drop(base);
        // Up to date before the writer lock is let go, when the next batch may begin.
        remembered::lock(&shelf).committed(&overlay);
        let result = sink.apply(overlay, durable);
        if result.is_err() {
            // The store may hold part of the commit, or none of it.
            remembered::lock(&shelf).clear();
        }
        drop(writer);
        result
    }
}

/// One key's buffered versions, `None` for a removal.
type OverlayVersions<'a> = Box<dyn Iterator<Item = (Ts, Option<&'a [u8]>)> + 'a>;

/// Merges stored versions with the overlay's; the overlay wins at equal ts (and hides the
/// stored version when it is a removal).
struct MergeHistory<'a> {
    base: Peekable<HistIter<'a>>,
    over: Peekable<OverlayVersions<'a>>,
    desc: bool,
}

impl Iterator for MergeHistory<'_> {
    type Item = Result<Version>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let base_ts = match self.base.peek() {
                Some(Ok(v)) => Some(v.ts),
                Some(Err(_)) => return self.base.next(),
                None => None,
            };
            let Some(&(over_ts, _)) = self.over.peek() else {
                return self.base.next();
            };
            if let Some(b) = base_ts {
                let base_first = if self.desc { b > over_ts } else { b < over_ts };
                if base_first {
                    return self.base.next();
                }
                if b == over_ts {
                    self.base.next();
                }
            }
            if let Some((ts, Some(value))) = self.over.next() {
                return Some(Ok(Version { ts, value: value.to_vec() }));
            }
        }
    }
}

/// Merges the stored versions with the overlay's, both in storage order; the overlay
/// wins at an equal (key, ts) (and hides the stored version when it is a removal).
struct MergeVersions<'a> {
    base: Peekable<ScanIter<'a>>,
    over: Peekable<OverlayRange<'a>>,
}

type OverlayRange<'a> = std::collections::btree_map::Range<'a, (Vec<u8>, std::cmp::Reverse<Ts>), Option<Vec<u8>>>;

impl Iterator for MergeVersions<'_> {
    type Item = Result<(Vec<u8>, Version)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let Some(&((ref over_key, over_ts), _)) = self.over.peek() else {
                return self.base.next();
            };
            let order = match self.base.peek() {
                Some(Ok((k, v))) => Some(read::pos_cmp((k, v.ts), (over_key, over_ts.0))),
                Some(Err(_)) => return self.base.next(),
                None => None,
            };
            match order {
                Some(std::cmp::Ordering::Less) => return self.base.next(),
                Some(std::cmp::Ordering::Equal) => {
                    self.base.next();
                }
                _ => {}
            }
            if let Some(((k, ts), Some(value))) = self.over.next() {
                return Some(Ok((k.clone(), Version { ts: ts.0, value: value.clone() })));
            }
        }
    }
}

/// Merges the stored scan with the keys the overlay touches; for those keys the answer is
/// recomputed through the layer's merged `get`.
struct MergeScan<'a, O> {
    layer: &'a Layer<O>,
    space: Space,
    at: Ts,
    desc: bool,
    base: Peekable<ScanIter<'a>>,
    over: Peekable<Box<dyn Iterator<Item = &'a [u8]> + 'a>>,
}

impl<O: Borrow<Overlay> + Send> Iterator for MergeScan<'_, O> {
    type Item = Result<(Vec<u8>, Version)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let base_key = match self.base.peek() {
                Some(Ok((k, _))) => Some(k.as_slice()),
                Some(Err(_)) => return self.base.next(),
                None => None,
            };
            let Some(&over_key) = self.over.peek() else {
                return self.base.next();
            };
            if let Some(b) = base_key {
                let base_first = if self.desc { b > over_key } else { b < over_key };
                if base_first {
                    return self.base.next();
                }
                if b == over_key {
                    self.base.next();
                }
            }
            self.over.next();
            match self.layer.get(self.space, over_key, self.at) {
                Ok(Some(v)) => return Some(Ok((over_key.to_vec(), v))),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemStore, Store};

    /// A view that reports `bound` as its [`Snapshot::ts_bound`].
    struct Bounded(Box<dyn Snapshot>, Ts);

    impl Snapshot for Bounded {
        fn get(&self, space: Space, key: &[u8], at: Ts) -> Result<Option<Version>> {
            self.0.get(space, key, at)
        }
        fn history<'a>(&'a self, space: Space, key: &[u8], lo: Ts, hi: Ts, desc: bool) -> Result<HistIter<'a>> {
            self.0.history(space, key, lo, hi, desc)
        }
        fn scan<'a>(
            &'a self,
            space: Space,
            prefix: &[u8],
            from: Option<&[u8]>,
            desc: bool,
            at: Ts,
        ) -> Result<ScanIter<'a>> {
            self.0.scan(space, prefix, from, desc, at)
        }
        fn versions_from<'a>(&'a self, space: Space, from: Option<&[u8]>) -> Result<ScanIter<'a>> {
            self.0.versions_from(space, from)
        }
        fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
            self.0.meta(key)
        }
        fn ts_bound(&self) -> Ts {
            self.1
        }
    }

    /// A small deterministic generator (xorshift64).
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// A layer answers from its own overlay when its version is at or after the base's
    /// bound, and otherwise asks the base: the answers are those of a base that gives no
    /// bound, for versions above, at and below the base's newest (history edits), and
    /// for removals.
    #[test]
    fn a_bounded_base_changes_no_answer() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..200 {
            let store = MemStore::new();
            let mut b = store.begin().unwrap();
            let mut max = 0;
            for _ in 0..rng.below(12) {
                let ts = 1 + rng.below(40);
                max = max.max(ts);
                b.put(Space::Docs, &[b'k', rng.below(3) as u8], ts, format!("base{ts}").as_bytes()).unwrap();
            }
            b.commit(false).unwrap();
            let mut over = Overlay::default();
            for _ in 0..rng.below(8) {
                let ts = 1 + rng.below(60);
                let value = (rng.below(4) > 0).then(|| format!("over{ts}").into_bytes());
                over.insert(Space::Docs, &[b'k', rng.below(3) as u8], ts, value);
            }
            let over = Arc::new(over);
            let bounded = Layer::new(Box::new(Bounded(store.snapshot().unwrap(), max)), Arc::clone(&over));
            let unbounded = Layer::new(Box::new(Bounded(store.snapshot().unwrap(), Ts::MAX)), Arc::clone(&over));
            assert_eq!(bounded.ts_bound(), max.max(over.max_ts));
            for k in 0..3u8 {
                for at in (0..=62).chain([Ts::MAX]) {
                    let key = [b'k', k];
                    assert_eq!(
                        bounded.get(Space::Docs, &key, at).unwrap(),
                        unbounded.get(Space::Docs, &key, at).unwrap(),
                        "round {round}, key {k}, at {at}"
                    );
                }
            }
        }
    }

    /// An overlay's key filter never misses a key it holds, and lets few absent keys
    /// through at any size: a batch's hundred keys, or the thousands of a batch of
    /// batched requests (the filter grows with them), written more than once or not.
    #[test]
    fn the_key_filter_holds_every_key_and_few_others() {
        for n in [100u32, 3_000, 40_000] {
            let mut o = Overlay::default();
            let held: Vec<Vec<u8>> = (0..n).map(|i| format!("docs/accounts/{i}").into_bytes()).collect();
            for (i, k) in held.iter().enumerate() {
                o.insert(Space::Docs, k, 1, Some(vec![1]));
                // Hot keys: written again, in both spaces.
                if i % 3 == 0 {
                    o.insert(Space::Docs, k, 2, Some(vec![2]));
                    o.insert(Space::Index, k, 2, None);
                }
            }
            assert!(held.iter().all(|k| o.keys.may_hold(k)), "{n} keys");
            let passed = (0..10_000u32).filter(|i| o.keys.may_hold(format!("docs/other/{i}").as_bytes())).count();
            assert!(passed < 400, "{n} keys: {passed} of 10,000 absent keys passed");
        }
    }

    /// The meta values of a group of overlays in name order, each name once with the
    /// newest overlay's value, whatever order each overlay's map keeps.
    #[test]
    fn meta_in_key_order_keeps_the_newest_of_each_name() {
        let mut overlays: Vec<Overlay> = (0..3).map(|_| Overlay::default()).collect();
        for (layer, o) in overlays.iter_mut().enumerate() {
            for i in (0..500u32).filter(|i| i % (layer as u32 + 1) == 0) {
                o.set_meta(&format!("tlog/l/{i:05}"), vec![layer as u8]);
            }
        }
        overlays[1].set_meta("only/one", vec![9]);
        let got = Overlay::meta_in_key_order(overlays.iter());
        let mut want = std::collections::BTreeMap::new();
        for o in &overlays {
            for (k, v) in o.meta() {
                want.insert(k.clone(), v.clone());
            }
        }
        let got: Vec<(String, Vec<u8>)> = got.into_iter().map(|(k, v)| (k.to_owned(), v.to_vec())).collect();
        assert_eq!(got, want.into_iter().collect::<Vec<_>>());
        // Name 6 is set by all three; 4 by the first two only; 3 by the first and third.
        let of = |name: &str| overlays.iter().rev().find_map(|o| o.meta_of(name).cloned());
        assert_eq!(of("tlog/l/00006"), Some(vec![2]));
        assert_eq!(of("tlog/l/00004"), Some(vec![1]));
        assert_eq!(of("tlog/l/00003"), Some(vec![2]));
        assert_eq!(of("tlog/l/00001"), Some(vec![0]));
        assert!(overlays[1].meta_of("only/one").is_some() && overlays[0].meta_of("only/one").is_none());
    }

    /// Meta reads through a stack of layers: each name is answered by the newest layer that
    /// set it, whatever the filters let through, and a name no layer set by the base.
    #[test]
    fn meta_through_layers_is_the_newest_set() {
        let store = MemStore::new();
        let mut b = store.begin().unwrap();
        for i in 0..300u32 {
            b.set_meta(&format!("base/{i}"), &i.to_be_bytes()).unwrap();
        }
        b.commit(false).unwrap();
        let mut snap: Box<dyn Snapshot> = store.snapshot().unwrap();
        for layer in 0..8u32 {
            let mut o = Overlay::default();
            // Overlapping names: layer L sets i in L*40..L*40+100, so most are set again above.
            for i in layer * 40..layer * 40 + 100 {
                o.set_meta(&format!("base/{i}"), format!("{layer}").into_bytes());
            }
            snap = Box::new(Layer::new(snap, o));
        }
        for i in 0..500u32 {
            let want = match (0..8u32).rev().find(|l| (l * 40..l * 40 + 100).contains(&i)) {
                Some(l) => Some(format!("{l}").into_bytes()),
                None if i < 300 => Some(i.to_be_bytes().to_vec()),
                None => None,
            };
            assert_eq!(snap.meta(&format!("base/{i}")).unwrap(), want, "base/{i}");
        }
    }

    /// A store for round `round` of a random test (most over a MemStore, every sixth over
    /// redb in `dir`, as a node runs) holding up to 20 versions of keys `key(0..30)`.
    fn random_base(rng: &mut Rng, round: u64, dir: &std::path::Path, key: impl Fn(u64) -> Vec<u8>) -> Box<dyn Store> {
        let store: Box<dyn Store> = if round % 6 == 5 {
            Box::new(crate::RedbStore::open(&dir.join(format!("{round}.redb"))).unwrap())
        } else {
            Box::new(MemStore::new())
        };
        let mut b = store.begin().unwrap();
        for _ in 0..rng.below(20) {
            let space = if rng.below(4) == 0 { Space::Index } else { Space::Docs };
            b.put(space, &key(rng.below(30)), 1 + rng.below(20), b"base").unwrap();
        }
        b.commit(false).unwrap();
        store
    }

    /// `layers` overlays on `snap`, as the write-behind queue stacks them: up to 8 writes
    /// and removals each.
    fn random_layers(
        rng: &mut Rng,
        mut snap: Box<dyn Snapshot>,
        layers: u64,
        key: impl Fn(u64) -> Vec<u8>,
    ) -> Box<dyn Snapshot> {
        for _ in 0..layers {
            let mut o = Overlay::default();
            for _ in 0..rng.below(8) {
                let space = if rng.below(4) == 0 { Space::Index } else { Space::Docs };
                let value = (rng.below(3) > 0).then(|| b"over".to_vec());
                o.insert(space, &key(rng.below(30)), 1 + rng.below(20), value);
            }
            snap = Box::new(Layer::new(snap, o));
        }
        snap
    }

    /// What a store's batches remember from one batch to the next (`crate::remembered`)
    /// never changes an answer: after every batch, committed or dropped, a new batch reads
    /// every key at every ts, and every meta name, as a fresh snapshot of the store does.
    /// The batches read keys (so they are remembered), write versions above the newest and
    /// below it (history edits), remove versions and set meta values, over a MemStore, redb,
    /// and the write-behind queue over each; and now and then the store's content is
    /// replaced.
    #[test]
    fn what_batches_remember_is_what_the_store_holds() {
        let key = |i: u64| format!("k{i:02}").into_bytes();
        let name = |i: u64| format!("m{i}");
        let dir = tempfile::tempdir().unwrap();
        for kind in 0..4u64 {
            let mut rng = Rng(0x5851_f42d_4c95_7f2d ^ kind);
            let path = dir.path().join(format!("{kind}.redb"));
            let store: Box<dyn Store> = match kind {
                0 => Box::new(MemStore::new()),
                1 => Box::new(crate::RedbStore::open(&path).unwrap()),
                2 => Box::new(MemStore::new().write_behind(crate::BehindLimits::default()).unwrap()),
                _ => Box::new(
                    crate::RedbStore::open(&path).unwrap().write_behind(crate::BehindLimits::default()).unwrap(),
                ),
            };
            let mut ts = 10;
            for round in 0..150 {
                let mut b = store.begin().unwrap();
                for _ in 0..rng.below(12) {
                    let space = if rng.below(4) == 0 { Space::Index } else { Space::Docs };
                    b.get(space, &key(rng.below(24)), rng.below(ts + 2)).unwrap();
                    b.meta(&name(rng.below(6))).unwrap();
                }
                // Now and then more writes than keys kept, and then fewer (the two ways
                // `Remembered::committed` goes).
                let writes = if rng.below(4) == 0 { 40 } else { rng.below(8) };
                for _ in 0..writes {
                    let space = if rng.below(4) == 0 { Space::Index } else { Space::Docs };
                    let k = key(rng.below(24));
                    match rng.below(6) {
                        // Above every version: a transaction's write.
                        0..=2 => b.put(space, &k, ts + 1, format!("v{round}").as_bytes()).unwrap(),
                        // Below the newest: a history edit.
                        3 => b.put(space, &k, 1 + rng.below(ts), format!("h{round}").as_bytes()).unwrap(),
                        _ => b.remove(space, &k, 1 + rng.below(ts + 1)).map(|_| ()).unwrap(),
                    }
                    if rng.below(3) == 0 {
                        b.set_meta(&name(rng.below(6)), format!("m{round}").as_bytes()).unwrap();
                    }
                }
                match rng.below(10) {
                    0 => drop(b),
                    1 => {
                        drop(b);
                        let content = rng.below(1000);
                        let mut fill = |load: &mut dyn crate::Load| {
                            for i in 0..8 {
                                load.put(Space::Docs, &key((content + i) % 24), 1 + i, b"replaced")?;
                            }
                            load.set_meta(&name(content % 6), b"replaced")
                        };
                        store.replace(&mut fill).unwrap();
                    }
                    _ => {
                        b.commit(rng.below(4) == 0).unwrap();
                        ts += 1;
                    }
                }
                let check = store.begin().unwrap();
                let truth = store.snapshot().unwrap();
                for space in [Space::Docs, Space::Index] {
                    for k in 0..24 {
                        for at in (0..ts + 2).chain([Ts::MAX]) {
                            assert_eq!(
                                check.get(space, &key(k), at).unwrap(),
                                truth.get(space, &key(k), at).unwrap(),
                                "store {kind}, round {round}, {space:?} key {k} at {at}"
                            );
                        }
                    }
                }
                for m in 0..6 {
                    assert_eq!(check.meta(&name(m)).unwrap(), truth.meta(&name(m)).unwrap(), "store {kind}, meta {m}");
                }
            }
        }
    }

    /// What is remembered stays within its bound however many keys batches read, and
    /// the keys read lately stay.
    #[test]
    fn what_is_remembered_is_bounded() {
        let mut r = remembered::Remembered::default();
        let value = vec![7u8; 1000];
        for i in 0..100_000u64 {
            r.keep(Space::Docs, i.to_be_bytes().to_vec(), Some(Version { ts: 1, value: value.clone() }));
            assert!(r.bytes() <= remembered::REMEMBERED_BYTES_MAX, "after {i} keys: {} bytes", r.bytes());
        }
        assert!(r.newest(Space::Docs, &99_999u64.to_be_bytes()).is_some());
        assert!(r.newest(Space::Docs, &0u64.to_be_bytes()).is_none());
        // A value past the largest kept is not kept.
        r.keep(Space::Docs, b"big".to_vec(), Some(Version { ts: 1, value: vec![0; remembered::VALUE_BYTES_MAX + 1] }));
        assert!(r.newest(Space::Docs, b"big").is_none());
        // A batch's commit updates a key kept in the older generation too.
        let mut r = remembered::Remembered::default();
        r.keep(Space::Docs, b"a".to_vec(), Some(Version { ts: 1, value: b"one".to_vec() }));
        for i in 0..20_000u64 {
            r.keep(Space::Index, i.to_be_bytes().to_vec(), None);
        }
        let mut o = Overlay::default();
        o.insert(Space::Docs, b"a", 2, Some(b"two".to_vec()));
        r.committed(&o);
        assert_eq!(r.newest(Space::Docs, b"a"), Some(Some(Version { ts: 2, value: b"two".to_vec() })));
    }

    /// A batch's reads through its [`NewestMemo`] answer as its base does, for keys the
    /// base holds and keys it does not, in and around the gaps the memo learns (keys
    /// whose every version a layer removed included), in both spaces and at any ts, over
    /// a MemStore and over redb; and the memo does learn gaps: after the first absent key
    /// past the last one held, the next reads of absent keys there go no further than the
    /// memo.
    #[test]
    fn absent_keys_are_answered_as_the_base_answers() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let key = |i: u64| format!("k{i:02}").into_bytes();
        let dir = tempfile::tempdir().unwrap();
        for round in 0..360 {
            let store = random_base(&mut rng, round, dir.path(), key);
            let layers = rng.below(4);
            let snap = random_layers(&mut rng, store.snapshot().unwrap(), layers, key);
            let reference: Vec<Vec<Option<Version>>> = [Space::Docs, Space::Index]
                .iter()
                .map(|&space| (0..32 * 22).map(|n| snap.get(space, &key(n / 22), n % 22).unwrap()).collect::<Vec<_>>())
                .collect();
            let memo = NewestMemo::new(snap, remembered::new_shelf());
            // Keys past every key held: one gap to the end, learned at the first of them.
            let past = |i: u64| format!("z{i}").into_bytes();
            assert_eq!(memo.get(Space::Docs, &past(1), Ts::MAX).unwrap(), None);
            assert!(memo.in_gap(0, &past(2)) && memo.in_gap(0, b"zz"), "round {round}");
            for _ in 0..200 {
                let (slot, space) = if rng.below(4) == 0 { (1, Space::Index) } else { (0, Space::Docs) };
                let (k, at) = (rng.below(32), rng.below(22));
                let got = memo.get(space, &key(k), at).unwrap();
                assert_eq!(got, reference[slot][(k * 22 + at) as usize], "round {round}, {space:?} key {k} at {at}");
            }
            // No gap the memo learned holds a key the base holds.
            for (slot, space) in [(0, Space::Docs), (1, Space::Index)] {
                for k in 0..32 {
                    let held = reference[slot][(k * 22 + 21) as usize].is_some();
                    assert!(!(held && memo.in_gap(slot, &key(k))), "round {round}, {space:?} key {k}");
                }
            }
        }
    }

    /// `next_key_bound` through a stack of layers never passes a key that holds a version
    /// (it is at most the first key `versions_from` gives), is `None` only where no key
    /// from there on holds one, and is exact on a store with no layers: over a MemStore
    /// and redb, with writes and removals in the layers.
    #[test]
    fn the_next_key_bound_never_passes_a_held_key() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let key = |i: u64| format!("k{i:02}").into_bytes();
        let dir = tempfile::tempdir().unwrap();
        let first = |snap: &dyn Snapshot, space: Space, from: &[u8]| {
            snap.versions_from(space, Some(from)).unwrap().next().map(|item| item.unwrap().0)
        };
        for round in 0..240 {
            let store = random_base(&mut rng, round, dir.path(), key);
            let base = store.snapshot().unwrap();
            for space in [Space::Docs, Space::Index] {
                for n in 0..32 {
                    let from = key(n);
                    assert_eq!(
                        base.next_key_bound(space, &from).unwrap(),
                        first(&*base, space, &from),
                        "round {round}"
                    );
                }
            }
            let layers = 1 + rng.below(4);
            let snap = random_layers(&mut rng, base, layers, key);
            for space in [Space::Docs, Space::Index] {
                for n in 0..32 {
                    let from = key(n);
                    let exact = first(&*snap, space, &from);
                    let bound = snap.next_key_bound(space, &from).unwrap();
                    let what = format!("round {round}, {space:?} from k{n:02}: bound {bound:?}, first held {exact:?}");
                    match (&bound, &exact) {
                        (None, e) => assert!(e.is_none(), "{what}"),
                        (Some(b), e) => {
                            assert!(b.as_slice() >= from.as_slice(), "{what}");
                            assert!(e.as_ref().is_none_or(|e| b <= e), "{what}");
                        }
                    }
                }
            }
        }
    }

    /// Absent keys read at random places cost a batch at most [`MEMO_GAP_SCANS_MAX`] scans
    /// and [`MEMO_GAPS_MAX`] remembered gaps per space, and are still answered right once
    /// the scans are spent.
    #[test]
    fn learning_gaps_is_bounded() {
        let store = MemStore::new();
        let mut b = store.begin().unwrap();
        for i in (0..400u32).step_by(2) {
            b.put(Space::Docs, format!("k{i:03}").as_bytes(), 1, b"v").unwrap();
        }
        b.commit(false).unwrap();
        let memo = NewestMemo::new(store.snapshot().unwrap(), remembered::new_shelf());
        for i in (1..400u32).step_by(2) {
            assert_eq!(memo.get(Space::Docs, format!("k{i:03}").as_bytes(), Ts::MAX).unwrap(), None, "k{i:03}");
            assert!(memo.kept.borrow().gaps[0].len() <= MEMO_GAPS_MAX);
        }
        assert_eq!(memo.gap_scans.get(), 0);
        assert!(memo.get(Space::Docs, b"k398", Ts::MAX).unwrap().is_some());
    }

    /// A gap outlives its batch: the next batch finds it without a scan, cut at the key
    /// the commit between them wrote (a collection's next document, past its last one).
    #[test]
    fn gaps_stay_for_later_batches_cut_at_written_keys() {
        let store = MemStore::new();
        let mut b = store.begin().unwrap();
        for i in 0..10u32 {
            b.put(Space::Docs, format!("k{i:03}").as_bytes(), 1, b"v").unwrap();
        }
        b.commit(false).unwrap();
        let shelf = remembered::new_shelf();
        let memo = NewestMemo::new(store.snapshot().unwrap(), Arc::clone(&shelf));
        assert_eq!(memo.get(Space::Docs, b"k100", Ts::MAX).unwrap(), None);
        assert_eq!(memo.gap_scans.get(), MEMO_GAP_SCANS_MAX - 1);
        drop(memo);
        // The commit writes k100 and k300, inside the gap [k100, end).
        let mut b = store.begin().unwrap();
        let mut o = Overlay::default();
        for k in [&b"k100"[..], b"k300"] {
            b.put(Space::Docs, k, 2, b"new").unwrap();
            o.insert(Space::Docs, k, 2, Some(b"new".to_vec()));
        }
        b.commit(false).unwrap();
        remembered::lock(&shelf).committed(&o);
        let memo = NewestMemo::new(store.snapshot().unwrap(), Arc::clone(&shelf));
        assert!(!memo.in_gap(0, b"k100") && !memo.in_gap(0, b"k200") && !memo.in_gap(0, b"k300"));
        assert!(memo.in_gap(0, b"k300\0") && memo.in_gap(0, b"k400"));
        assert_eq!(memo.get(Space::Docs, b"k400", Ts::MAX).unwrap(), None);
        assert_eq!(memo.get(Space::Docs, b"k300", Ts::MAX).unwrap().map(|v| v.value), Some(b"new".to_vec()));
        assert_eq!(memo.get(Space::Docs, b"k100", Ts::MAX).unwrap().map(|v| v.value), Some(b"new".to_vec()));
        assert_eq!(memo.gap_scans.get(), MEMO_GAP_SCANS_MAX, "no scan in the second batch");
        drop(memo);
        // Replacing the store's content forgets every gap.
        remembered::lock(&shelf).clear();
        let memo = NewestMemo::new(store.snapshot().unwrap(), shelf);
        assert!(!memo.in_gap(0, b"k400"));
    }

    /// The case the bound exists for, and the one it must not shortcut: a version written
    /// above the base's newest is the answer; one written below it (a history edit) is
    /// not, at a read ts after both.
    #[test]
    fn a_history_edit_below_the_base_is_not_the_newest() {
        let store = MemStore::new();
        let mut b = store.begin().unwrap();
        b.put(Space::Docs, b"k", 100, b"base").unwrap();
        b.commit(false).unwrap();
        let base = || -> Box<dyn Snapshot> { Box::new(Bounded(store.snapshot().unwrap(), 100)) };
        let mut below = Overlay::default();
        below.insert(Space::Docs, b"k", 50, Some(b"edit".to_vec()));
        let l = Layer::new(base(), below);
        assert_eq!(l.get(Space::Docs, b"k", Ts::MAX).unwrap(), Some(Version { ts: 100, value: b"base".to_vec() }));
        assert_eq!(l.get(Space::Docs, b"k", 99).unwrap(), Some(Version { ts: 50, value: b"edit".to_vec() }));
        let mut at = Overlay::default();
        at.insert(Space::Docs, b"k", 100, Some(b"same ts".to_vec()));
        let l = Layer::new(base(), at);
        assert_eq!(l.get(Space::Docs, b"k", Ts::MAX).unwrap(), Some(Version { ts: 100, value: b"same ts".to_vec() }));
    }
}
