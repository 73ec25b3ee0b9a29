//! Read algorithms shared by both backends, written against [`VersionTable`]: an ordered
//! map whose positions are `(key, ts)` in *storage order* — key ascending, then ts
//! descending — so a key's first position is `(key, Ts::MAX)` and its last `(key, 0)`.

use std::ops::Bound::{self, Excluded, Included, Unbounded};

use crate::{HistIter, Result, ScanIter, Ts, Version};

/// After this many consecutive versions skipped one by one, a scan re-seeks instead: cheap
/// for keys with a few versions, logarithmic for keys with a long history.
const LINEAR_SKIP_MAX: usize = 4;

pub(crate) type Pos = (Vec<u8>, Ts);
pub(crate) type PosRef<'k> = (&'k [u8], Ts);

pub(crate) trait VersionEntry {
    fn key(&self) -> &[u8];
    fn ts(&self) -> Ts;
    fn value(&self) -> Vec<u8>;
    /// The value's first `n` bytes (all of it if shorter), copying only those.
    fn value_head(&self, n: usize) -> Vec<u8>;
}

pub(crate) type EntryIter<'a, E> = Box<dyn DoubleEndedIterator<Item = Result<E>> + 'a>;

pub(crate) trait VersionTable {
    type Entry<'a>: VersionEntry + 'a
    where
        Self: 'a;
    /// Entries between two storage positions, in storage order. Callers guarantee lo <= hi.
    fn range<'a>(&'a self, lo: Bound<PosRef<'_>>, hi: Bound<PosRef<'_>>) -> Result<EntryIter<'a, Self::Entry<'a>>>;
}

fn version<E: VersionEntry>(e: &E) -> Version {
    Version { ts: e.ts(), value: e.value() }
}

fn version_head<E: VersionEntry>(e: &E, head: Option<usize>) -> Version {
    match head {
        Some(n) => Version { ts: e.ts(), value: e.value_head(n) },
        None => version(e),
    }
}

/// Storage order of positions: key ascending, ts descending.
pub(crate) fn pos_cmp(a: PosRef<'_>, b: PosRef<'_>) -> std::cmp::Ordering {
    a.0.cmp(b.0).then(b.1.cmp(&a.1))
}

/// Whether `lo..hi` contains no position (BTreeMap::range panics on such bounds).
pub(crate) fn bounds_empty(lo: Bound<PosRef<'_>>, hi: Bound<PosRef<'_>>) -> bool {
    use std::cmp::Ordering::*;
    match (lo, hi) {
        (Included(a), Included(b)) => pos_cmp(a, b) == Greater,
        (Included(a), Excluded(b)) | (Excluded(a), Included(b)) | (Excluded(a), Excluded(b)) => pos_cmp(a, b) != Less,
        _ => false,
    }
}

pub(crate) fn as_ref(b: &Bound<Pos>) -> Bound<PosRef<'_>> {
    match b {
        Included((k, ts)) => Included((k.as_slice(), *ts)),
        Excluded((k, ts)) => Excluded((k.as_slice(), *ts)),
        Unbounded => Unbounded,
    }
}

fn seek<'a, T: VersionTable>(t: &'a T, lo: &Bound<Pos>, hi: &Bound<Pos>) -> Result<EntryIter<'a, T::Entry<'a>>> {
    if bounds_empty(as_ref(lo), as_ref(hi)) {
        return Ok(Box::new(std::iter::empty()));
    }
    t.range(as_ref(lo), as_ref(hi))
}

pub(crate) fn get<T: VersionTable>(t: &T, key: &[u8], at: Ts) -> Result<Option<Version>> {
    match t.range(Included((key, at)), Included((key, 0)))?.next() {
        None => Ok(None),
        Some(e) => Ok(Some(version(&e?))),
    }
}

pub(crate) fn history<'a, T: VersionTable>(t: &'a T, key: &[u8], lo: Ts, hi: Ts, desc: bool) -> Result<HistIter<'a>> {
    if lo > hi {
        return Ok(Box::new(std::iter::empty()));
    }
    let it = t.range(Included((key, hi)), Included((key, lo)))?;
    let it = it.map(|e| e.map(|e| version(&e)));
    Ok(if desc { Box::new(it) } else { Box::new(it.rev()) })
}

/// `Snapshot::versions_from`: one forward range from the first version of `from`.
pub(crate) fn versions_from<'a, T: VersionTable>(t: &'a T, from: Option<&[u8]>) -> Result<ScanIter<'a>> {
    let lo = match from {
        Some(f) => Included((f, Ts::MAX)),
        None => Unbounded,
    };
    let it = t.range(lo, Unbounded)?;
    Ok(Box::new(it.map(|e| e.map(|e| (e.key().to_vec(), version(&e))))))
}

/// The first key at or after `from` holding a version ([`crate::Snapshot::next_key_bound`],
/// exactly), without copying its value.
pub(crate) fn next_key<T: VersionTable>(t: &T, from: &[u8]) -> Result<Option<Vec<u8>>> {
    match t.range(Included((from, Ts::MAX)), Unbounded)?.next() {
        None => Ok(None),
        Some(e) => Ok(Some(e?.key().to_vec())),
    }
}

/// The smallest key greater than every key starting with `prefix`; None if unbounded.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Storage bounds covering the keys that start with `prefix`, clamped by `from` (the first
/// key visited in the scan direction). None if the clamped range is empty.
pub(crate) fn scan_bounds(prefix: &[u8], from: Option<&[u8]>, desc: bool) -> Option<(Bound<Pos>, Bound<Pos>)> {
    let end = prefix_end(prefix);
    let mut lo = Included((prefix.to_vec(), Ts::MAX));
    let mut hi = match &end {
        Some(e) => Excluded((e.clone(), Ts::MAX)),
        None => Unbounded,
    };
    let beyond_end = |f: &[u8]| end.as_deref().is_some_and(|e| f >= e);
    match from {
        Some(f) if !desc => {
            if beyond_end(f) {
                return None;
            }
            if f > prefix {
                lo = Included((f.to_vec(), Ts::MAX));
            }
        }
        Some(f) => {
            if f < prefix {
                return None;
            }
            if !beyond_end(f) {
                hi = Included((f.to_vec(), 0));
            }
        }
        None => {}
    }
    Some((lo, hi))
}

/// `head`: give only the first bytes of each value (see `Snapshot::scan_heads`).
pub(crate) fn scan<'a, T: VersionTable>(
    t: &'a T,
    prefix: &[u8],
    from: Option<&[u8]>,
    desc: bool,
    at: Ts,
    head: Option<usize>,
) -> Result<ScanIter<'a>> {
    let Some((lo, hi)) = scan_bounds(prefix, from, desc) else {
        return Ok(Box::new(std::iter::empty()));
    };
    let iter = seek(t, &lo, &hi)?;
    Ok(Box::new(Scan { table: t, lo, hi, at, iter, pending: None, last: None, desc, done: false, head }))
}

/// A lazy scan: holds one B-tree cursor and re-seeks it to jump over versions.
struct Scan<'a, T: VersionTable + 'a> {
    table: &'a T,
    lo: Bound<Pos>,
    hi: Bound<Pos>,
    at: Ts,
    iter: EntryIter<'a, T::Entry<'a>>,
    /// Descending only: an entry read past the end of the previous key.
    pending: Option<T::Entry<'a>>,
    /// Ascending only: the key yielded last, whose older versions are still ahead.
    last: Option<Vec<u8>>,
    desc: bool,
    done: bool,
    head: Option<usize>,
}

impl<'a, T: VersionTable> Scan<'a, T> {
    fn pull(&mut self) -> Result<Option<T::Entry<'a>>> {
        if let Some(e) = self.pending.take() {
            return Ok(Some(e));
        }
        let next = if self.desc { self.iter.next_back() } else { self.iter.next() };
        next.transpose()
    }

    fn reseek(&mut self) -> Result<()> {
        self.iter = seek(self.table, &self.lo, &self.hi)?;
        Ok(())
    }

    fn next_asc(&mut self) -> Result<Option<(Vec<u8>, Version)>> {
        let mut skipped = 0;
        while let Some(e) = self.pull()? {
            if self.last.as_deref() == Some(e.key()) {
                skipped += 1;
                if skipped >= LINEAR_SKIP_MAX {
                    self.lo = Excluded((e.key().to_vec(), 0));
                    self.reseek()?;
                    skipped = 0;
                }
                continue;
            }
            if e.ts() <= self.at {
                self.last = Some(e.key().to_vec());
                return Ok(Some((e.key().to_vec(), version_head(&e, self.head))));
            }
            // Newest version is after `at`: jump to this key's first version at or before it.
            self.lo = Included((e.key().to_vec(), self.at));
            self.reseek()?;
        }
        Ok(None)
    }

    fn next_desc(&mut self) -> Result<Option<(Vec<u8>, Version)>> {
        // Walking backwards, a key's versions arrive oldest first; the answer is the last
        // one with ts <= at before a newer version or another key shows up.
        while let Some(oldest) = self.pull()? {
            let key = oldest.key().to_vec();
            let before_key = Excluded((key.clone(), Ts::MAX));
            if oldest.ts() > self.at {
                self.hi = before_key;
                self.reseek()?;
                continue;
            }
            let mut best = oldest;
            let mut steps = 0;
            loop {
                let Some(e) = self.pull()? else { break };
                if e.key() != key.as_slice() {
                    self.pending = Some(e);
                    break;
                }
                if e.ts() > self.at {
                    self.hi = before_key;
                    self.reseek()?;
                    break;
                }
                best = e;
                steps += 1;
                if steps >= LINEAR_SKIP_MAX {
                    let mut found = get(self.table, &key, self.at)?;
                    if let (Some(v), Some(n)) = (found.as_mut(), self.head) {
                        v.value.truncate(n);
                    }
                    self.hi = before_key;
                    self.reseek()?;
                    return Ok(found.map(|v| (key, v)));
                }
            }
            return Ok(Some((key, version_head(&best, self.head))));
        }
        Ok(None)
    }
}

impl<'a, T: VersionTable> Iterator for Scan<'a, T> {
    type Item = Result<(Vec<u8>, Version)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = if self.desc { self.next_desc() } else { self.next_asc() };
        match r {
            Ok(Some(item)) => Some(Ok(item)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
