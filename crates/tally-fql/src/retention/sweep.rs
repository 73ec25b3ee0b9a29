//! The retention sweeps ([`sweep`], [`sweep_index`]): see the parent module's doc for what
//! they remove and why that never changes an answer.
//!
//! **Cost.** Both run at the end of every batch, so their cost is paid per batch by the
//! executor, the one serial stage of the write path. Each walks the store in key order
//! with one ordered pass ([`KeyWalk`], over `Snapshot::versions_from`) that yields every
//! key's versions as it goes, instead of listing keys and then seeking each one's history
//! (through every write-behind layer, a seek per layer): most keys have a few versions
//! and nothing to remove, and for them the pass has already read all there is to know. A
//! key with more than [`WALK_VERSIONS_MAX`] versions (a hot document) is read on its own
//! as before, from its oldest version, and the pass resumes after it.
//!
//! What they compute — removals, cursor, keys looked at, `due` — is exactly what the
//! per-key reads computed (the key listing's 64-key pages included, whose boundaries
//! decide where a document sweep that reaches its bounds stops); `reference.rs` keeps that
//! code, and the tests run both over the same generated stores.

use tally_storage::{Snapshot, Space, Ts, Version};
use tally_value::{Ref, Value};

use super::{config, storage, Retention};
use crate::auth::Auth;
use crate::error::Result;
use crate::eval::{Eval, Mode};
use crate::model::{self, CollId, DbId, DocVersion, Tx, Write};

/// Bounds on one [`sweep`] call.
#[derive(Clone, Copy, Debug)]
pub struct SweepLimits {
    /// Document keys looked at.
    pub keys_max: usize,
    /// Versions removed.
    pub removals_max: usize,
    /// Bytes of the removed versions' keys.
    pub bytes_max: usize,
}

impl Default for SweepLimits {
    /// Per sweep, each of [`sweep`] and [`sweep_index`]: looking at 128 keys and finding
    /// nothing costs 42 µs and 63 µs on redb (`tally-server/tests/retention_cost.rs`,
    /// 20,000 documents; 100 and 183 µs before the sweeps walked the store in one pass);
    /// a backlog of 100,000 removable versions is gone after about 100 sweeps. The
    /// executor grants these bounds per 10 ms of commit ts since its last sweep, up to
    /// 4× (`tally_exec::sweep_spacing`): the backlog goes within ≈ 1 s of commit ts.
    fn default() -> Self {
        SweepLimits { keys_max: 128, removals_max: 1024, bytes_max: 1 << 20 }
    }
}

/// What one [`sweep`] call removes and where the next one starts.
#[derive(Debug, Default, PartialEq)]
pub struct Sweep {
    /// Removals (`value: None`) of document versions, in key order, oldest first per key.
    pub removals: Vec<Write>,
    /// The document key the next call starts at; None: start over from the beginning.
    pub next: Option<Vec<u8>>,
    /// Document keys looked at.
    pub keys: usize,
    /// The earliest `now` at which a key this call looked at has more to remove (None:
    /// none of them will, as time alone passes). What an idle node's sequencer waits for
    /// before it logs an empty batch to sweep at (`tally_exec::machine`).
    pub due: Option<Ts>,
}

impl Sweep {
    pub(super) fn due_by(&mut self, at: Option<Ts>) {
        if let Some(t) = at {
            self.due = Some(self.due.map_or(t, |d| d.min(t)));
        }
    }
}

/// Looks at up to `limits.keys_max` document keys from `from` on and returns the removals
/// of the versions retention hides at `now` (see the module doc). Deterministic: the same
/// state, `now` and `from` give the same removals on every member.
pub fn sweep(snap: &dyn Snapshot, now: Ts, from: Option<&[u8]>, limits: SweepLimits) -> Result<Sweep> {
    let mut ev = Eval::new(Tx::new(snap, now), Mode::Write, Auth::root_admin());
    let mut out = Sweep { next: from.map(<[u8]>::to_vec), ..Sweep::default() };
    let mut bytes = 0usize;
    // Each collection's floor and settings, once per call.
    let mut floors: Vec<FloorOf> = Vec::new();
    let mut walk = KeyWalk::new(snap, Space::Docs, from)?;
    // Keys taken from the current page: the stopping rule follows the 64-key pages the
    // sweep has always read keys in (a bound reached at a page's end leaves the cursor
    // just after that page's last key, one reached inside a page at the next key).
    let mut in_page = 0usize;
    loop {
        if in_page == 0
            && (out.keys >= limits.keys_max || out.removals.len() >= limits.removals_max || bytes >= limits.bytes_max)
        {
            return Ok(out);
        }
        let Some(key) = walk.next_key()? else {
            if in_page == 0 {
                out.next = None;
                return Ok(out);
            }
            // The page ended short: the next one is empty, after the check above.
            in_page = 0;
            continue;
        };
        if out.keys >= limits.keys_max || out.removals.len() >= limits.removals_max || bytes >= limits.bytes_max {
            out.next = Some(key);
            return Ok(out);
        }
        in_page = (in_page + 1) % SWEEP_PAGE_KEYS;
        out.keys += 1;
        let Some((db, coll)) = split_key(&key) else {
            out.next = Some(successor(&key));
            continue;
        };
        let f = match floors.iter().find(|e| e.0 == (db, coll)) {
            Some(e) => e.1.clone(),
            None => {
                let c = config(&mut ev.tx, db, coll, now)?;
                let f = c.and_then(|r| Some((r.floor(now)?, r)));
                floors.push(((db, coll), f.clone()));
                f
            }
        };
        let Some((f, settings)) = f else {
            // Nothing of this collection goes: skip all its documents (a new page).
            out.next = collection_end(db, coll);
            if out.next.is_none() {
                return Ok(out);
            }
            walk = KeyWalk::new(snap, Space::Docs, out.next.as_deref())?;
            in_page = 0;
            continue;
        };
        let room = limits.removals_max - out.removals.len();
        let (gone, expired, next) = match walk.versions()? {
            Some(newest_first) => removable_of(newest_first.into_iter().rev().map(Ok), f)?,
            None => removable(snap, &key, f)?,
        };
        out.due_by(next.and_then(|t| settings.due_at(t)));
        // The index entries of a document removed for its `ttl` go with it (nothing
        // withdrew them when the `ttl` passed); they are few, so they are not counted.
        let mut entries = Vec::new();
        let whole = gone.len() <= room;
        if let (Some(edge), true) = (expired, whole) {
            let r = doc_ref(&settings.name, &key)?;
            entries = expired_entries(&mut ev, db, coll, &r, &edge, f)?;
        }
        for ts in gone.into_iter().take(room) {
            bytes += key.len();
            out.removals.push(Write { space: Space::Docs, key: key.clone(), ts, value: None });
        }
        for (k, ts) in entries {
            bytes += k.len();
            out.removals.push(Write { space: Space::Index, key: k, ts, value: None });
        }
        if !whole {
            // The rest of this key's removals wait for the next call.
            out.next = Some(key);
            return Ok(out);
        }
        out.next = Some(successor(&key));
    }
}

/// The ref of the document stored under `key` in collection `coll_name` (refs in index
/// entries name collections, not ids).
pub(super) fn doc_ref(coll_name: &str, key: &[u8]) -> Result<Ref> {
    Ok(Ref::doc(Ref::collection(coll_name), model::id_from_doc_key(key)?))
}

/// The index entry versions, at or before `f`, of the rows document `r` had as `edge`.
pub(super) fn expired_entries(
    ev: &mut Eval<'_>,
    db: DbId,
    coll: CollId,
    r: &Ref,
    edge: &DocVersion,
    f: Ts,
) -> Result<Vec<(Vec<u8>, Ts)>> {
    let mut out = Vec::new();
    for def in ev.indexes_on(db, coll)?.iter() {
        let rev = def.reverse_flags();
        for (terms, values) in crate::fns::docs::index_rows(ev, def, coll, r, edge.ts, &edge.data)? {
            let k = model::index_key(db, def.id, &terms, &values, &rev, r);
            for v in ev.tx.snapshot().history(Space::Index, &k, 0, f, false).map_err(storage)? {
                out.push((k.clone(), v.map_err(storage)?.ts));
            }
        }
    }
    Ok(out)
}

/// A collection's floor and settings (None: it keeps everything).
pub(super) type FloorOf = ((DbId, CollId), Option<(Ts, Retention)>);

/// [`sweep`] for index entries: looks at up to `limits.keys_max` index keys from `from`
/// on and removes, under the floor of each entry's document's collection, the entry
/// versions older than the newest one at or before the floor, and that one too when it is
/// a remove. Index reads at or above the floor see the same entries before and after, and
/// so do index `Events` (which start at the floor the same way).
pub fn sweep_index(snap: &dyn Snapshot, now: Ts, from: Option<&[u8]>, limits: SweepLimits) -> Result<Sweep> {
    let mut ev = Eval::new(Tx::new(snap, now), Mode::Write, Auth::root_admin());
    let mut out = Sweep { next: from.map(<[u8]>::to_vec), ..Sweep::default() };
    let mut bytes = 0usize;
    let mut floors: Vec<FloorOf> = Vec::new();
    let mut walk = KeyWalk::new(snap, Space::Index, from)?;
    loop {
        let Some(key) = walk.next_key()? else {
            out.next = None;
            return Ok(out);
        };
        if out.keys >= limits.keys_max || out.removals.len() >= limits.removals_max || bytes >= limits.bytes_max {
            out.next = Some(key);
            return Ok(out);
        }
        out.keys += 1;
        out.next = Some(successor(&key));
        // Newest first; None: a long history, read on its own.
        let versions = walk.versions()?;
        let newest = match &versions {
            Some(v) => v.first().cloned(),
            None => snap.get(Space::Index, &key, Ts::MAX).map_err(storage)?,
        };
        let Some((f, settings)) = entry_floor(&mut ev, &key, newest, now, &mut floors)? else { continue };
        let room = limits.removals_max - out.removals.len();
        let removable = match versions {
            Some(v) => entry_removable_of(&key, v, f)?,
            None => entry_removable(snap, &key, f)?,
        };
        let Some((gone, next)) = removable else { continue };
        out.due_by(next.and_then(|t| settings.due_at(t)));
        let whole = gone.len() <= room;
        for ts in gone.into_iter().take(room) {
            bytes += key.len();
            out.removals.push(Write { space: Space::Index, key: key.clone(), ts, value: None });
        }
        if !whole {
            out.next = Some(key);
            return Ok(out);
        }
    }
}

/// What of index entry `key` goes under floor `f`: the versions to remove (oldest first)
/// and the lowest floor above `f` at which more goes ([`next_entry_removal`]). None: it
/// has no version at or before `f` (nothing to remove, and no `due` is taken from it).
type EntryRemovable = Option<(Vec<Ts>, Option<Ts>)>;

/// [`EntryRemovable`] from the key's versions (newest first, all of them).
fn entry_removable_of(key: &[u8], newest_first: Vec<Version>, f: Ts) -> Result<EntryRemovable> {
    let Some(at) = newest_first.iter().position(|v| v.ts <= f) else { return Ok(None) };
    let mut gone: Vec<Ts> = newest_first[at + 1..].iter().rev().map(|v| v.ts).collect();
    let edge_kept = model::decode_entry(key.to_vec(), &newest_first[at])?.added;
    if !edge_kept {
        gone.push(newest_first[at].ts);
    }
    let mut above = newest_first;
    above.truncate(at);
    let next = next_entry_removal(key, above.into_iter().rev().map(Ok), edge_kept)?;
    Ok(Some((gone, next)))
}

/// [`EntryRemovable`] of a key with a long history, read from the store: down from
/// the floor, then up from it.
fn entry_removable(snap: &dyn Snapshot, key: &[u8], f: Ts) -> Result<EntryRemovable> {
    let mut hist = snap.history(Space::Index, key, 0, f, true).map_err(storage)?;
    let Some(edge) = hist.next().transpose().map_err(storage)? else { return Ok(None) };
    let mut gone: Vec<Ts> = Vec::new();
    for v in hist {
        gone.push(v.map_err(storage)?.ts);
    }
    gone.reverse();
    let edge_kept = model::decode_entry(key.to_vec(), &edge)?.added;
    if !edge_kept {
        gone.push(edge.ts);
    }
    let after = snap.history(Space::Index, key, f.saturating_add(1), Ts::MAX, false).map_err(storage)?;
    let next = next_entry_removal(key, after, edge_kept)?;
    Ok(Some((gone, next)))
}

/// The floor and settings of the collection of the document an index entry names (None:
/// it has none, or the entry does not name a user document); `newest` is the entry's
/// newest version.
///
/// The collection is looked up by name in the database the entry is stored under: an
/// index's entries live in its own database, and (as in v4, where an index's sources are
/// collections of its own scope and `MVTProvider` derives their floors there) they only
/// ever name documents of that database — a child database's documents are indexed by
/// the child's indexes, under the child's id, and swept under the child's collections'
/// floors like any other. A ref stored with a database qualifier (written relative to an
/// ancestor's scope) still names a collection of the entry's database, so the qualifier
/// is not consulted.
fn entry_floor(
    ev: &mut Eval<'_>,
    key: &[u8],
    newest: Option<Version>,
    now: Ts,
    floors: &mut Vec<FloorOf>,
) -> Result<Option<(Ts, Retention)>> {
    let Some((db, _index)) = split_key(key) else { return Ok(None) };
    let Some(newest) = newest else { return Ok(None) };
    let entry = model::decode_entry(key.to_vec(), &newest)?;
    if entry.doc.database.is_some() {
        // A database-scoped schema ref (a native document), never a user document.
        return Ok(None);
    }
    let Some(name) = entry.doc.user_collection_name() else { return Ok(None) };
    let Some(coll) = ev.collection_id(db, name)? else { return Ok(None) };
    if let Some(e) = floors.iter().find(|e| e.0 == (db, coll)) {
        return Ok(e.1.clone());
    }
    let f = config(&mut ev.tx, db, coll, now)?.and_then(|r| Some((r.floor(now)?, r)));
    floors.push(((db, coll), f.clone()));
    Ok(f)
}

/// The lowest floor above `f` at which index entry `key` has a version more to remove
/// (the one before a later version, or a remove), given its versions above `f` (`after`,
/// oldest first) and whether a version at or before `f` stays (`edge_kept`). None: never,
/// as time alone passes.
fn next_entry_removal(
    key: &[u8],
    after: impl Iterator<Item = tally_storage::Result<Version>>,
    edge_kept: bool,
) -> Result<Option<Ts>> {
    let mut has_prev = edge_kept;
    for v in after {
        let v = v.map_err(storage)?;
        // Ascending: the first one that qualifies is the lowest.
        if has_prev || !model::decode_entry(key.to_vec(), &v)?.added {
            return Ok(Some(v.ts));
        }
        has_prev = true;
    }
    Ok(None)
}

/// Keys per page of the document sweep (see [`sweep`]).
pub(super) const SWEEP_PAGE_KEYS: usize = 64;

/// Versions of one key a [`KeyWalk`] hands over; a key with more is read on its own.
/// Most keys have one to a few; a hot document's thousands would cost a pass more to step
/// over than one seek to its oldest version and one past its end.
pub(super) const WALK_VERSIONS_MAX: usize = 8;

/// Consecutive keys of a space with their versions, from one ordered pass.
struct KeyWalk<'a> {
    snap: &'a dyn Snapshot,
    space: Space,
    it: std::iter::Peekable<tally_storage::ScanIter<'a>>,
    /// The key [`KeyWalk::next_key`] gave last.
    current: Option<Vec<u8>>,
    /// The pass stands at the current key's first unread version.
    unread: bool,
}

impl<'a> KeyWalk<'a> {
    fn new(snap: &'a dyn Snapshot, space: Space, from: Option<&[u8]>) -> Result<KeyWalk<'a>> {
        let it = snap.versions_from(space, from).map_err(storage)?.peekable();
        Ok(KeyWalk { snap, space, it, current: None, unread: false })
    }

    /// The next key (the first, then each one after the last given), or None at the end.
    fn next_key(&mut self) -> Result<Option<Vec<u8>>> {
        if let Some(cur) = self.current.take() {
            if self.unread {
                // Step over what is left of it; a long history costs a seek past it.
                let mut stepped = 0;
                while self.peek_is(&cur)? {
                    if stepped > WALK_VERSIONS_MAX {
                        self.it =
                            self.snap.versions_from(self.space, Some(&successor(&cur))).map_err(storage)?.peekable();
                        break;
                    }
                    self.it.next();
                    stepped += 1;
                }
            }
        }
        let key = match self.it.peek() {
            None => return Ok(None),
            Some(Ok((k, _))) => k.clone(),
            Some(Err(_)) => return Err(self.it.next().and_then(|r| r.err()).map(storage).unwrap_or_else(walk_lost)),
        };
        self.current = Some(key.clone());
        self.unread = true;
        Ok(Some(key))
    }

    /// The current key's versions, newest first; None when it has more than
    /// [`WALK_VERSIONS_MAX`] (read them from the store instead).
    fn versions(&mut self) -> Result<Option<Vec<Version>>> {
        let Some(cur) = self.current.clone() else { return Ok(Some(Vec::new())) };
        let mut out = Vec::new();
        while self.peek_is(&cur)? {
            if out.len() == WALK_VERSIONS_MAX {
                return Ok(None);
            }
            match self.it.next() {
                Some(Ok((_, v))) => out.push(v),
                Some(Err(e)) => return Err(storage(e)),
                None => break,
            }
        }
        self.unread = false;
        Ok(Some(out))
    }

    /// Whether the pass's next version is one of `key`'s.
    fn peek_is(&mut self, key: &[u8]) -> Result<bool> {
        match self.it.peek() {
            None => Ok(false),
            Some(Ok((k, _))) => Ok(k.as_slice() == key),
            Some(Err(_)) => Err(self.it.next().and_then(|r| r.err()).map(storage).unwrap_or_else(walk_lost)),
        }
    }
}

fn walk_lost() -> crate::error::FqlError {
    crate::error::FqlError::new(crate::error::code::INTERNAL_ERROR, "storage error: a key walk lost its place")
}

pub(super) fn split_key(key: &[u8]) -> Option<(DbId, CollId)> {
    let db = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    let coll = u64::from_be_bytes(key.get(8..16)?.try_into().ok()?);
    Some((db, coll))
}

/// The smallest key after `key`.
pub(super) fn successor(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

/// The first key after every document of `coll` (None: nothing comes after).
pub(super) fn collection_end(db: DbId, coll: CollId) -> Option<Vec<u8>> {
    let (db, coll) = match coll.checked_add(1) {
        Some(c) => (db, c),
        None => (db.checked_add(1)?, 0),
    };
    Some(model::doc_prefix(db, coll))
}

/// The versions of `key` to remove under floor `f`, oldest first; the newest one at or
/// before `f` when it goes because it is past its `ttl` there; and the lowest floor above
/// `f` at which more of `key` goes ([`next_doc_removal`]). Read from the store: for a key
/// with a long history (see [`KeyWalk`]).
pub(super) fn removable(snap: &dyn Snapshot, key: &[u8], f: Ts) -> Result<(Vec<Ts>, Option<DocVersion>, Option<Ts>)> {
    // One pass over the key's versions, oldest first: those at or before the floor, then
    // (where `next_doc_removal` reads on) those after it. (Two reads, one down from the
    // floor and one up from it, cost a sweep a storage seek more for every key.)
    removable_of(snap.history(Space::Docs, key, 0, Ts::MAX, false).map_err(storage)?, f)
}

/// [`removable`] of a key's versions, oldest first.
fn removable_of(
    versions: impl Iterator<Item = tally_storage::Result<Version>>,
    f: Ts,
) -> Result<(Vec<Ts>, Option<DocVersion>, Option<Ts>)> {
    let mut hist = versions.peekable();
    let mut gone: Vec<Ts> = Vec::new();
    let mut edge = None;
    while let Some(v) = hist.next_if(|v| v.as_ref().map_or(true, |v| v.ts <= f)) {
        if let Some(older) = edge.replace(v.map_err(storage)?) {
            gone.push(older.ts);
        }
    }
    let Some(edge) = edge else {
        return Ok((gone, None, next_doc_removal(hist, f, None)?));
    };
    let edge = model::decode_doc(&edge)?;
    if edge.live_at(f) {
        let next = next_doc_removal(hist, f, Some(&edge))?;
        return Ok((gone, None, next));
    }
    gone.push(edge.ts);
    // A document written again after the floor shares index entries with its expired
    // version (the new write kept the rows both have and withdrew the others): those
    // entries stay. Otherwise they go with the document.
    let later = hist.peek().is_some();
    let next = next_doc_removal(hist, f, None)?;
    Ok((gone, Some(edge).filter(|e| !e.deleted && !later), next))
}

/// The lowest floor above `f` at which a document has a version more to remove: the
/// one before a later version, a deletion, or one past its `ttl`; `after` are its
/// versions above `f`, oldest first; `kept` is the version at or before `f` that stays
/// (live there). None: never, as time alone passes.
pub(super) fn next_doc_removal(
    after: impl Iterator<Item = tally_storage::Result<tally_storage::Version>>,
    f: Ts,
    kept: Option<&DocVersion>,
) -> Result<Option<Ts>> {
    let ttl_of = |d: &DocVersion| match d.data.get("ttl") {
        Some(Value::Time(t)) => Some(t.timestamp_micros().max(0) as u64),
        _ => None,
    };
    let mut best: Option<Ts> = kept.and_then(ttl_of).filter(|&t| t > f);
    let mut has_prev = kept.is_some();
    for v in after {
        let v = v.map_err(storage)?;
        if best.is_some_and(|b| v.ts >= b) {
            // Ascending: nothing from here on comes earlier.
            break;
        }
        // Only the deletion flag and the `ttl` (most versions of a key are looked at here).
        let (deleted, ttl) = model::decode_doc_ttl(&v)?;
        let ttl = match ttl {
            Some(Value::Time(t)) => Some(t.timestamp_micros().max(0) as u64),
            _ => None,
        };
        let at = if has_prev || deleted { Some(v.ts) } else { ttl.map(|t| t.max(v.ts)) };
        if let Some(t) = at {
            best = Some(best.map_or(t, |b| b.min(t)));
        }
        has_prev = true;
    }
    Ok(best)
}
