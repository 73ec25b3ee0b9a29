//! The retention sweeps as they were before they walked the store in one ordered pass
//! (`super::sweep`): a key listing, then each key's history read on its own. Kept, for
//! tests only, as the reference the walking sweeps must equal exactly — removals, cursor,
//! keys looked at and `due` — on every store (`super::sweep_tests`).

use tally_storage::{Snapshot, Space, Ts};

use super::sweep::{
    collection_end, doc_ref, expired_entries, next_doc_removal, split_key, successor, FloorOf, Sweep, SweepLimits,
    SWEEP_PAGE_KEYS,
};
use super::{config, storage, Retention};
use crate::auth::Auth;
use crate::error::Result;
use crate::eval::{Eval, Mode};
use crate::model::{self, DocVersion, Tx, Write};

/// Looks at up to `limits.keys_max` document keys from `from` on and returns the removals
/// of the versions retention hides at `now` (see the module doc). Deterministic: the same
/// state, `now` and `from` give the same removals on every member.
pub fn sweep(snap: &dyn Snapshot, now: Ts, from: Option<&[u8]>, limits: SweepLimits) -> Result<Sweep> {
    let mut ev = Eval::new(Tx::new(snap, now), Mode::Write, Auth::root_admin());
    let mut out = Sweep { next: from.map(<[u8]>::to_vec), ..Sweep::default() };
    let mut bytes = 0usize;
    // Each collection's floor and settings, once per call.
    let mut floors: Vec<FloorOf> = Vec::new();
    'pages: loop {
        if out.keys >= limits.keys_max || out.removals.len() >= limits.removals_max || bytes >= limits.bytes_max {
            return Ok(out);
        }
        let page = keys_from(snap, out.next.as_deref(), SWEEP_PAGE_KEYS)?;
        if page.is_empty() {
            out.next = None;
            return Ok(out);
        }
        for key in page {
            if out.keys >= limits.keys_max || out.removals.len() >= limits.removals_max || bytes >= limits.bytes_max {
                out.next = Some(key);
                return Ok(out);
            }
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
                // Nothing of this collection goes: skip all its documents.
                out.next = collection_end(db, coll);
                if out.next.is_none() {
                    return Ok(out);
                }
                continue 'pages;
            };
            let room = limits.removals_max - out.removals.len();
            let (gone, expired, next) = removable(snap, &key, f)?;
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
}

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
    loop {
        let page = keys_in(snap, Space::Index, out.next.as_deref(), SWEEP_PAGE_KEYS)?;
        if page.is_empty() {
            out.next = None;
            return Ok(out);
        }
        for key in page {
            if out.keys >= limits.keys_max || out.removals.len() >= limits.removals_max || bytes >= limits.bytes_max {
                out.next = Some(key);
                return Ok(out);
            }
            out.keys += 1;
            out.next = Some(successor(&key));
            let Some((f, settings)) = entry_floor(&mut ev, &key, now, &mut floors)? else { continue };
            let room = limits.removals_max - out.removals.len();
            let mut hist = snap.history(Space::Index, &key, 0, f, true).map_err(storage)?;
            let Some(edge) = hist.next().transpose().map_err(storage)? else { continue };
            let mut gone: Vec<Ts> = Vec::new();
            for v in hist {
                gone.push(v.map_err(storage)?.ts);
            }
            gone.reverse();
            let edge_kept = model::decode_entry(key.clone(), &edge)?.added;
            if !edge_kept {
                gone.push(edge.ts);
            }
            out.due_by(next_entry_removal(snap, &key, f, edge_kept)?.and_then(|t| settings.due_at(t)));
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
}

/// The floor and settings of the collection of the document an index entry names (None:
/// it has none, or the entry does not name a user document).
///
/// The collection is looked up by name in the database the entry is stored under: an
/// index's entries live in its own database, and (as in v4, where an index's sources are
/// collections of its own scope and `MVTProvider` derives their floors there) they only
/// ever name documents of that database — a child database's documents are indexed by
/// the child's indexes, under the child's id, and swept under the child's collections'
/// floors like any other. A ref stored with a database qualifier (written relative to an
/// ancestor's scope) still names a collection of the entry's database, so the qualifier
/// is not consulted.
fn entry_floor(ev: &mut Eval<'_>, key: &[u8], now: Ts, floors: &mut Vec<FloorOf>) -> Result<Option<(Ts, Retention)>> {
    let Some((db, _index)) = split_key(key) else { return Ok(None) };
    let Some(newest) = ev.tx.snapshot().get(Space::Index, key, Ts::MAX).map_err(storage)? else { return Ok(None) };
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
/// (the one before a later version, or a remove), given whether a version at or before
/// `f` stays (`edge_kept`). None: never, as time alone passes.
fn next_entry_removal(snap: &dyn Snapshot, key: &[u8], f: Ts, edge_kept: bool) -> Result<Option<Ts>> {
    let mut has_prev = edge_kept;
    for v in snap.history(Space::Index, key, f.saturating_add(1), Ts::MAX, false).map_err(storage)? {
        let v = v.map_err(storage)?;
        // Ascending: the first one that qualifies is the lowest.
        if has_prev || !model::decode_entry(key.to_vec(), &v)?.added {
            return Ok(Some(v.ts));
        }
        has_prev = true;
    }
    Ok(None)
}

fn keys_from(snap: &dyn Snapshot, from: Option<&[u8]>, n: usize) -> Result<Vec<Vec<u8>>> {
    keys_in(snap, Space::Docs, from, n)
}

fn keys_in(snap: &dyn Snapshot, space: Space, from: Option<&[u8]>, n: usize) -> Result<Vec<Vec<u8>>> {
    let it = snap.scan_heads(space, &[], from, false, Ts::MAX, 0).map_err(storage)?;
    it.take(n).map(|r| r.map(|(k, _)| k).map_err(storage)).collect()
}

/// The versions of `key` to remove under floor `f`, oldest first; the newest one at or
/// before `f` when it goes because it is past its `ttl` there; and the lowest floor above
/// `f` at which more of `key` goes ([`next_doc_removal`]).
fn removable(snap: &dyn Snapshot, key: &[u8], f: Ts) -> Result<(Vec<Ts>, Option<DocVersion>, Option<Ts>)> {
    // One pass over the key's versions, oldest first: those at or before the floor, then
    // (where `next_doc_removal` reads on) those after it. (Two reads, one down from the
    // floor and one up from it, cost a sweep a storage seek more for every key.)
    let mut hist = snap.history(Space::Docs, key, 0, Ts::MAX, false).map_err(storage)?.peekable();
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
