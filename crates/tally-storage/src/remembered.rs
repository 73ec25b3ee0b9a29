//! [`Remembered`]: the newest versions and meta values a store's batches read, kept from
//! one batch to the next.
//!
//! # Why
//!
//! A batch remembers its base's newest version of each key it reads (`NewestMemo` in
//! batch.rs), so a hot account read by every transaction of a batch goes down the
//! write-behind stack to redb once per batch. With many accounts each batch reads
//! different keys, and each read went down to redb: a B-tree descent through redb's page
//! cache (a hash probe and a shared count per level) and a copy of the value, about a
//! quarter of a transfer's evaluation over 100,000 accounts (docs/benchmarks.md). The
//! batch then writes the key, and the next batch to read it went down again.
//!
//! # How it stays exact
//!
//! Only the single write batch reads or changes it, under the store's writer lock, so
//! when a batch begins it holds what the store holds: for each key it has, the store's
//! newest version (or that the store holds none). A batch's commit brings it up to date
//! before the writer lock is let go ([`Remembered::committed`]), from the overlay the
//! commit writes:
//!
//! - a key the commit removes any version of is forgotten (the newest may now be an
//!   older version it never saw);
//! - otherwise a key it has takes the commit's newest version of that key when that is
//!   at or after the one it had (a version written below it, a history edit, changes
//!   nothing);
//! - a key it does not have stays out: the commit alone does not say what else the
//!   store holds of it. So keys a batch only writes (ledger records, new documents) never
//!   take room; keys it read once stay current as later batches write them.
//!
//! It also keeps where the store holds nothing: key ranges a batch found empty
//! ([`Gap`]). A version enters the store only through a commit, so a commit cuts every gap
//! at each key it writes or removes a version of, and what is left of it stays empty.
//!
//! Meta values are kept likewise (a commit only sets them). A store whose content is
//! replaced other than through a batch ([`crate::Store::replace`]) forgets everything.
//!
//! # Bounds
//!
//! Two generations of at most [`GENERATION_BYTES_MAX`] counted bytes each (keys, values
//! and [`ENTRY_OVERHEAD_BYTES`] per entry); a value larger than [`VALUE_BYTES_MAX`] is not
//! kept. A lookup that finds an entry in the older generation moves it to the newer;
//! when the newer is full it becomes the older and the older is forgotten. What stays is
//! what was read lately, within [`REMEMBERED_BYTES_MAX`]. None of this changes an answer:
//! a key not kept is read from the store as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::batch::Overlay;
use crate::mem::VersionMap;
use crate::{Space, Ts, Version};

/// What all the kept entries may count, both generations together. 64 MiB holds the
/// 100,000 accounts of the uniform transfer benchmark (about 190 counted bytes each) in
/// one generation; at 32 MiB a generation held about 88,000 of them, so reads kept going
/// down to redb, and the executor took 8 % more time per transfer (docs/benchmarks.md).
pub const REMEMBERED_BYTES_MAX: usize = 64 << 20;
/// One generation's share.
const GENERATION_BYTES_MAX: usize = REMEMBERED_BYTES_MAX / 2;
/// The largest value kept.
pub const VALUE_BYTES_MAX: usize = 64 << 10;
/// Counted per entry on top of its key and value: the map's slot, the key's and value's
/// allocations.
const ENTRY_OVERHEAD_BYTES: usize = 96;

/// A store's [`Remembered`], shared by the store and its write batch.
pub(crate) type Shelf = Arc<Mutex<Remembered>>;

pub(crate) fn new_shelf() -> Shelf {
    Arc::new(Mutex::new(Remembered::default()))
}

/// The shelf, locked. Only the write batch takes it (when it begins and ends), so it is
/// never contended; one left poisoned (a panic while it was held) may be half updated,
/// and is emptied.
pub(crate) fn lock(shelf: &Shelf) -> MutexGuard<'_, Remembered> {
    match shelf.lock() {
        Ok(g) => g,
        Err(poisoned) => {
            let mut g = poisoned.into_inner();
            g.clear();
            shelf.clear_poison();
            g
        }
    }
}

#[derive(Default)]
pub(crate) struct Remembered {
    /// The newer generation first.
    gens: [Generation; 2],
    /// Per space (docs, index), key ranges the store holds no version in, most recently
    /// learned last (`NewestMemo::learn_gap` in batch.rs adds them, at most
    /// `MEMO_GAPS_MAX`).
    pub(crate) gaps: [Vec<Gap>; 2],
}

/// Keys from `from` (inclusive) up to `until` (exclusive; None: every key after `from`),
/// of which the store holds no version.
///
/// A gap is learned by a batch that read an absent key (its `next_key_bound`, down the
/// whole write-behind stack to redb) and stays for later batches: a commit cuts it at
/// every key it writes or removes a version of ([`Remembered::committed`]), keeping the
/// part before the first such key and the part after the last. Ids grow with the commit
/// ts, so a collection's creates read past its last document batch after batch, and each
/// batch's first such read learned the same gap again (about 3.5 % of the hot executor).
pub(crate) struct Gap {
    pub(crate) from: Vec<u8>,
    pub(crate) until: Option<Vec<u8>>,
}

impl Gap {
    pub(crate) fn holds(&self, key: &[u8]) -> bool {
        key >= self.from.as_slice() && self.until.as_deref().is_none_or(|u| key < u)
    }

    /// Whether the gap holds any key from `lo` to `hi` (both included).
    fn meets(&self, lo: &[u8], hi: &[u8]) -> bool {
        self.from.as_slice() <= hi && self.until.as_deref().is_none_or(|u| lo < u)
    }

    /// What stays of this gap after a commit whose versions (and removals) are `written`:
    /// the keys before the first written key it holds and those after the last.
    fn cut(self, written: &VersionMap<Option<Vec<u8>>>) -> impl Iterator<Item = Gap> {
        let inside = |k: &&(Vec<u8>, std::cmp::Reverse<Ts>)| self.until.as_deref().is_none_or(|u| k.0.as_slice() < u);
        let lo = (self.from.clone(), std::cmp::Reverse(Ts::MAX));
        let first = written.range(lo..).next().map(|(k, _)| k).filter(inside).map(|k| k.0.clone());
        let pieces = match first {
            None => [Some(self), None],
            Some(first) => {
                let last = match &self.until {
                    Some(u) => written.range(..(u.clone(), std::cmp::Reverse(Ts::MAX))).next_back(),
                    None => written.iter().next_back(),
                };
                // A key held in the gap is its first; `last` is at or after it.
                let last = last.map_or_else(|| first.clone(), |(k, _)| k.0.clone());
                let mut after = last;
                after.push(0);
                let before = (self.from < first).then_some(Gap { from: self.from, until: Some(first) });
                let after = (after.len() <= crate::batch::MEMO_GAP_KEY_BYTES_MAX
                    && self.until.as_deref().is_none_or(|u| after.as_slice() < u))
                .then_some(Gap { from: after, until: self.until });
                [before, after]
            }
        };
        pieces.into_iter().flatten()
    }
}

#[derive(Default)]
struct Generation {
    /// Per space (docs, index), each key's newest version; `None`: the store holds none.
    newest: [HashMap<Vec<u8>, Option<Version>>; 2],
    /// Meta values; `None`: not set.
    meta: HashMap<String, Option<Vec<u8>>>,
    bytes: usize,
}

/// What a commit does to the newest version of one key, from the versions (None: a
/// removal) it writes of that key, newest first.
#[derive(Clone, Copy)]
enum Change<'a> {
    /// It writes none.
    None,
    /// It removes a version: the newest may now be one never seen.
    Forget,
    /// Its newest version, the store's newest if at or after the one kept.
    Newest(Ts, &'a [u8]),
}

fn change<'a>(mut versions: impl Iterator<Item = (Ts, Option<&'a [u8]>)>) -> Change<'a> {
    let Some((ts, first)) = versions.next() else { return Change::None };
    let Some(value) = first else { return Change::Forget };
    if versions.any(|(_, v)| v.is_none()) {
        return Change::Forget;
    }
    Change::Newest(ts, value)
}

/// `entry` after a commit whose newest version of its key is `value` at `ts`: that
/// version, when at or after the entry's (the overlay wins at equal ts). Returns the
/// generation's bytes. The caller forgets an entry grown past [`VALUE_BYTES_MAX`].
fn newer(bytes: usize, entry: &mut Option<Version>, ts: Ts, value: &[u8]) -> usize {
    if entry.as_ref().is_some_and(|v| v.ts > ts) {
        return bytes;
    }
    let bytes = bytes.saturating_sub(version_len(entry)) + value.len();
    *entry = Some(Version { ts, value: value.to_vec() });
    bytes
}

impl Generation {
    fn forget(&mut self, s: usize, key: &[u8]) {
        if let Some(v) = self.newest[s].remove(key) {
            self.bytes = self.bytes.saturating_sub(entry_bytes(key.len(), version_len(&v)));
        }
    }
}

fn slot(space: Space) -> usize {
    match space {
        Space::Docs => 0,
        Space::Index => 1,
    }
}

fn entry_bytes(key_len: usize, value_len: usize) -> usize {
    key_len + value_len + ENTRY_OVERHEAD_BYTES
}

fn version_len(v: &Option<Version>) -> usize {
    v.as_ref().map_or(0, |v| v.value.len())
}

impl Remembered {
    /// The store's newest version of `key`, if kept: `Some(None)` when it holds none.
    pub fn newest(&mut self, space: Space, key: &[u8]) -> Option<Option<Version>> {
        let s = slot(space);
        if let Some(v) = self.gens[0].newest[s].get(key) {
            return Some(v.clone());
        }
        if self.gens[1].newest[s].is_empty() {
            return None;
        }
        let v = self.gens[1].newest[s].remove(key)?;
        let size = entry_bytes(key.len(), version_len(&v));
        self.gens[1].bytes = self.gens[1].bytes.saturating_sub(size);
        self.keep(space, key.to_vec(), v.clone());
        Some(v)
    }

    /// Keep `newest` as the store's newest version of `key` (read from the store under
    /// the writer lock).
    pub fn keep(&mut self, space: Space, key: Vec<u8>, newest: Option<Version>) {
        let key_len = key.len();
        self.keep_in(|g| &mut g.newest[slot(space)], key, key_len, newest, version_len);
    }

    /// The meta value `key`, if kept: `Some(None)` when it is not set.
    pub fn meta(&mut self, key: &str) -> Option<Option<Vec<u8>>> {
        if let Some(v) = self.gens[0].meta.get(key) {
            return Some(v.clone());
        }
        if self.gens[1].meta.is_empty() {
            return None;
        }
        let v = self.gens[1].meta.remove(key)?;
        let size = entry_bytes(key.len(), v.as_ref().map_or(0, Vec::len));
        self.gens[1].bytes = self.gens[1].bytes.saturating_sub(size);
        self.keep_meta(key.to_owned(), v.clone());
        Some(v)
    }

    /// Keep `value` as the meta value `key` (read from the store under the writer lock).
    pub fn keep_meta(&mut self, key: String, value: Option<Vec<u8>>) {
        let key_len = key.len();
        self.keep_in(|g| &mut g.meta, key, key_len, value, |v| v.as_ref().map_or(0, Vec::len));
    }

    /// Put `key` (of `key_len` bytes) and `value` into the newer generation's map that
    /// `map` picks, counting their bytes; a value longer than [`VALUE_BYTES_MAX`] (by
    /// `len`) is not kept.
    fn keep_in<K: std::hash::Hash + Eq, V>(
        &mut self,
        map: impl Fn(&mut Generation) -> &mut HashMap<K, V>,
        key: K,
        key_len: usize,
        value: V,
        len: fn(&V) -> usize,
    ) {
        let value_len = len(&value);
        if value_len > VALUE_BYTES_MAX {
            return;
        }
        let size = entry_bytes(key_len, value_len);
        self.make_room(size);
        let gen = &mut self.gens[0];
        gen.bytes += size;
        if let Some(old) = map(gen).insert(key, value) {
            gen.bytes = gen.bytes.saturating_sub(entry_bytes(key_len, len(&old)));
        }
    }

    /// When the newer generation cannot take `size` more bytes: it becomes the older, and
    /// the older is forgotten.
    fn make_room(&mut self, size: usize) {
        if self.gens[0].bytes + size > GENERATION_BYTES_MAX {
            self.gens.swap(0, 1);
            self.gens[0] = Generation::default();
        }
    }

    /// Bring what is kept up to date with `overlay`, which a commit is about to write (see
    /// the module doc). Called under the writer lock, before the commit is visible. Goes
    /// through whichever is smaller, the overlay's keys or the kept ones: a batch of many
    /// writes over a few hot keys, or a few writes over many kept keys.
    pub fn committed(&mut self, overlay: &Overlay) {
        for space in [Space::Docs, Space::Index] {
            let (s, written) = (slot(space), overlay.versions_in(space));
            let (Some(((lo, _), _)), Some(((hi, _), _))) = (written.first_key_value(), written.last_key_value()) else {
                continue;
            };
            // Most commits write nowhere near most gaps: those are left as they are.
            if self.gaps[s].iter().any(|g| g.meets(lo, hi)) {
                let gaps = std::mem::take(&mut self.gaps[s]);
                for g in gaps {
                    if g.meets(lo, hi) {
                        self.gaps[s].extend(g.cut(written));
                    } else {
                        self.gaps[s].push(g);
                    }
                }
                let extra = self.gaps[s].len().saturating_sub(crate::batch::MEMO_GAPS_MAX);
                self.gaps[s].drain(..extra);
            }
        }
        for space in [Space::Docs, Space::Index] {
            let s = slot(space);
            let versions = overlay.versions_in(space);
            let kept: usize = self.gens.iter().map(|g| g.newest[s].len()).sum();
            if kept == 0 || versions.is_empty() {
                continue;
            }
            if kept < versions.len() {
                for gen in &mut self.gens {
                    let mut forget = Vec::new();
                    for (key, entry) in gen.newest[s].iter_mut() {
                        if !overlay.may_hold(key) {
                            continue;
                        }
                        match change(overlay.versions_of(space, key)) {
                            Change::None => {}
                            Change::Forget => forget.push(key.clone()),
                            Change::Newest(ts, value) => gen.bytes = newer(gen.bytes, entry, ts, value),
                        }
                        if version_len(entry) > VALUE_BYTES_MAX {
                            forget.push(key.clone());
                        }
                    }
                    for key in forget {
                        gen.forget(s, &key);
                    }
                }
                continue;
            }
            let mut iter = versions.iter().peekable();
            while let Some(((key, _), _)) = iter.peek() {
                let key = key.clone();
                let mut group = Vec::new();
                while let Some(((k, ts), v)) = iter.next_if(|((k, _), _)| *k == key) {
                    debug_assert_eq!(k, &key);
                    group.push((ts.0, v.as_deref()));
                }
                let change = change(group.into_iter());
                for gen in &mut self.gens {
                    let Some(entry) = gen.newest[s].get_mut(key.as_slice()) else { continue };
                    match change {
                        Change::None => {}
                        Change::Forget => gen.forget(s, &key),
                        Change::Newest(ts, value) => {
                            gen.bytes = newer(gen.bytes, entry, ts, value);
                            if version_len(entry) > VALUE_BYTES_MAX {
                                gen.forget(s, &key);
                            }
                        }
                    }
                }
            }
        }
        let kept: usize = self.gens.iter().map(|g| g.meta.len()).sum();
        if kept == 0 {
            return;
        }
        for gen in &mut self.gens {
            let mut forget = Vec::new();
            for (name, entry) in gen.meta.iter_mut() {
                let Some(value) = overlay.meta().get(name) else { continue };
                if value.len() > VALUE_BYTES_MAX {
                    forget.push(name.clone());
                    continue;
                }
                gen.bytes = gen.bytes.saturating_sub(entry.as_ref().map_or(0, Vec::len)) + value.len();
                *entry = Some(value.clone());
            }
            for name in forget {
                if let Some(v) = gen.meta.remove(&name) {
                    gen.bytes = gen.bytes.saturating_sub(entry_bytes(name.len(), v.as_ref().map_or(0, Vec::len)));
                }
            }
        }
    }

    /// Forget everything (the store's content was replaced).
    pub fn clear(&mut self) {
        self.gens = Default::default();
        self.gaps = Default::default();
    }

    /// Counted bytes kept, both generations.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.gens.iter().map(|g| g.bytes).sum()
    }
}
