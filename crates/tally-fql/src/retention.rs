//! Retention, as v4 defines it: a collection's `history_days` and `ttl_days`, and a
//! document's `ttl`.
//!
//! **The floor.** A user collection with `history_days = d` keeps history for `d` days: at
//! a transaction or snapshot ts `T` its floor (v4's "minimum valid time") is
//! `max(T − d days, min_valid) − 15 minutes`, clamped at the epoch, where `min_valid` is
//! a hidden field of the collection's schema document that only grows (raised whenever
//! `history_days` changes, so lowering and then raising it never brings removed history
//! back), and the 15 minutes are v4's `MVTOffset` ([`MVT_OFFSET_MICROS`], fauna/faunadb
//! `Collection.deriveMinValidTime`): with `history_days: 0` a read 5 minutes in the past
//! still answers. `history_days: null` keeps history forever (no floor, unless
//! `min_valid` says otherwise). The same floor governs reads, `Events`, streams and
//! removal, and follows only the transaction's or snapshot's ts, never a clock.
//!
//! **Reads.** A read at a ts below the floor is refused as v4 refused it: `bad request`,
//! "Requested timestamp … less than minimum allowed timestamp …." (fauna/faunadb
//! `ReadValidTimeBelowMVT`). History reads (`Events`) start at the floor: of the versions
//! at or before it only the newest is shown, as a create, and only when it is live there
//! (v4's `rewriteGCEdge`). A document's `ttl` is not offset: it stops being visible at
//! its `ttl` (reads at an earlier ts, through `At`, still see it), and is removed once
//! the floor passes its `ttl` — 15 minutes and `history_days` later (v4's GC keeps an
//! edge version while `ttl >= MVT`; Tally removes it once it is not live at the floor,
//! `ttl <= floor`, which differs only at the single microsecond `ttl == floor`, where
//! v4's kept version is invisible to every read anyway).
//!
//! **Removal.** [`sweep`] removes exactly what no read at or above the floor can see:
//! the versions older than the newest one at or before the floor, and that one too when
//! it is a deletion or past its `ttl` at the floor. So removal never changes an answer;
//! it only frees storage. It is deterministic (the floor follows the batch's ts, never a
//! clock) and bounded per call ([`SweepLimits`]); the executor calls it once per batch,
//! resuming where the previous call stopped (`tally_exec::machine`), so a backlog is
//! worked off over several batches. A reader whose snapshot predates a removal still has
//! the removed versions in its snapshot; a later snapshot's floor is at or above the
//! floor of the removal, so it never asks for them.
//!
//! Index entries: [`sweep_index`] removes, under the floor of each entry's document's
//! collection, the entry versions no read at or above the floor sees (the same rule as
//! for documents: older than the newest one at or before the floor, and that one too when
//! it is a remove). The entries of a document removed for its `ttl` go with it in
//! [`sweep`] (nothing withdrew them when the `ttl` passed; a document written again after
//! the floor keeps the ones its new version shares); until then an entry whose document
//! is gone is skipped like the entry of an expired document
//! (`crate::fns::docs::expired_entry`).
//!
//! Removal follows batches, not time: a node removes only while it applies batches. An
//! idle node's sequencer logs an empty batch for the sweep when [`Sweep::due`] says a
//! sweep could remove something (`tally_exec::machine::FqlMachine::retention_due`), so
//! expired documents go without a further write. A change stream reads each commit at its
//! ts; once a sweep that removed something has moved the floor past that ts (more than
//! `history_days` and 15 minutes behind), the read is below the floor and the stream ends
//! with the same `bad request` error.
//!
//! **`ttl_days`**: a document written without a `ttl` in a collection whose `ttl_days` is
//! n (more than 0) gets `ttl = commit ts + n days` (each write moves it: "deleted n days
//! after their last write").

use tally_storage::{Snapshot, Space, Ts};
use tally_value::{Object, Ref, Value};

use crate::auth::Auth;
use crate::eval::{Eval, Mode};

use crate::catalog::internal_id;
use crate::error::{code, FqlError, Result};
use crate::model::{self, native, CollId, DbId, DocVersion, Tx, Write};

/// One day in the store's unit (microseconds).
pub const DAY_MICROS: u64 = 86_400_000_000;

/// The hidden field of a collection's schema document: the lowest floor it may ever have
/// again (µs). See the module doc.
pub const MIN_VALID_FIELD: &str = "__tally_min_valid_ts";

/// A collection's retention settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// The collection's name (empty when read from data alone, [`Retention::of`]).
    pub name: String,
    /// `history_days` in µs; None keeps history forever.
    pub history_micros: Option<u64>,
    /// `ttl_days` in µs; None (or 0 days) sets no `ttl`.
    pub ttl_micros: Option<u64>,
    /// [`MIN_VALID_FIELD`], 0 when absent.
    pub min_valid: Ts,
}

impl Retention {
    /// Reads the settings of a collection's schema document.
    pub fn of(data: &Object) -> Retention {
        let days = |f: &str| match data.get(f) {
            Some(Value::Long(n)) if *n >= 0 => Some((*n as u64).saturating_mul(DAY_MICROS)),
            _ => None,
        };
        let min_valid = match data.get(MIN_VALID_FIELD) {
            Some(Value::Long(n)) if *n > 0 => *n as u64,
            _ => 0,
        };
        Retention {
            name: String::new(),
            history_micros: days("history_days"),
            ttl_micros: days("ttl_days").filter(|&t| t > 0),
            min_valid,
        }
    }

    /// The floor at `now`: reads below it are refused, versions it hides are removed.
    /// v4's `Collection.deriveMinValidTime`: the retention window's edge, then
    /// [`MVT_OFFSET_MICROS`] lower, clamped at the epoch.
    pub fn floor(&self, now: Ts) -> Option<Ts> {
        self.window_edge(now).map(|f| f.saturating_sub(MVT_OFFSET_MICROS))
    }

    /// The retention window's edge at `now`, without the offset (v4's
    /// `deriveMinValidTimeNoOffset`): what [`MIN_VALID_FIELD`] keeps.
    fn window_edge(&self, now: Ts) -> Option<Ts> {
        let by_history = self.history_micros.map(|h| now.saturating_sub(h));
        match (by_history, self.min_valid) {
            (Some(f), m) => Some(f.max(m)),
            (None, 0) => None,
            (None, m) => Some(m),
        }
    }

    /// The earliest `now` at which [`Retention::floor`] reaches `floor` (None: never; a
    /// floor held by [`MIN_VALID_FIELD`] alone does not move with time).
    pub fn due_at(&self, floor: Ts) -> Option<Ts> {
        let edge = floor.checked_add(MVT_OFFSET_MICROS)?;
        if edge <= self.min_valid {
            return Some(0);
        }
        edge.checked_add(self.history_micros?)
    }
}

/// v4's `Collection.MVTOffset`: the floor stays 15 minutes below the retention window, so
/// that with `history_days: 0` a read (a cursor, a stream, an `At`) up to 15 minutes in
/// the past still answers, and nothing is removed until it is 15 minutes below the
/// window. It must never shrink: a smaller offset would raise every floor at once.
pub const MVT_OFFSET_MICROS: u64 = 15 * 60 * 1_000_000;

/// Only user collections have retention (schema documents and the registry keep their
/// history).
fn is_user_collection(db: DbId, coll: CollId) -> bool {
    db != crate::run::REGISTRY_DB && native::name(coll).is_none() && coll != u64::MAX && coll > 9
}

/// The retention settings of user collection `coll` of `db` as they stand at `at`, or
/// None for anything that is not an existing user collection.
pub fn config(tx: &mut Tx<'_>, db: DbId, coll: CollId, at: Ts) -> Result<Option<Retention>> {
    if !is_user_collection(db, coll) {
        return Ok(None);
    }
    if let Some(hit) = tx.retention_cache.iter().find(|e| e.0 == (db, coll, at, tx.schema_gen)) {
        return Ok(hit.1.clone());
    }
    let shared = tx.shared_schema();
    let found = match shared.and_then(|c| c.retention(at, db, coll)) {
        // What the scan below would have charged, charged again (crate::schema_cache).
        Some((found, bytes)) => {
            tx.bytes_read += bytes;
            found
        }
        None => {
            let before = tx.bytes_read;
            let docs = tx.scan_docs(db, native::COLLECTIONS, None, false, at, usize::MAX)?;
            let bytes = tx.bytes_read - before;
            let cacheable = !docs.iter().any(|(_, d)| d.data.contains_key("ttl"));
            let mut found = None;
            for (name, d) in docs {
                if internal_id(&d.data) == Some(coll) {
                    found = Some(Retention { name, ..Retention::of(&d.data) });
                    break;
                }
            }
            if let (Some(c), true) = (shared, cacheable) {
                c.put_retention(at, db, coll, (found.clone(), bytes));
            }
            found
        }
    };
    if tx.retention_cache.len() >= CACHE_ENTRIES_MAX {
        tx.retention_cache.clear();
    }
    let gen = tx.schema_gen;
    tx.retention_cache.push(((db, coll, at, gen), found.clone()));
    Ok(found)
}

/// Collection settings kept by a transaction before it starts over.
const CACHE_ENTRIES_MAX: usize = 64;

/// Meta value the executor writes with every sweep that removed something: the ts the
/// sweep's floors were computed at (8 bytes, big-endian).
pub const META_SWEEP_TS: &str = "retention_ts";

/// The floor of `coll` for reads in this transaction (None: no floor): at its ts, or at
/// the ts of the latest sweep its snapshot holds if that is later. A read-only query's
/// ts can be older than a commit its snapshot already has (the ts is chosen first); the
/// floor then follows the sweep, so a read never asks for a version a sweep removed. In
/// the executor the transaction's ts is always the later one.
pub fn floor(tx: &mut Tx<'_>, db: DbId, coll: CollId) -> Result<Option<Ts>> {
    let now = tx.ts.max(sweep_ts(tx)?);
    Ok(config(tx, db, coll, tx.ts)?.and_then(|r| r.floor(now)))
}

fn sweep_ts(tx: &mut Tx<'_>) -> Result<Ts> {
    if let Some(t) = tx.sweep_ts {
        return Ok(t);
    }
    let t = match tx.snapshot().meta(META_SWEEP_TS).map_err(storage)? {
        Some(b) => u64::from_be_bytes(b.as_slice().try_into().map_err(|_| model::corrupt("retention_ts"))?),
        None => 0,
    };
    tx.sweep_ts = Some(t);
    Ok(t)
}

/// Refuses a read of `colls` (of `db`) at `at` below any of their floors, as v4 did.
pub fn check_read(tx: &mut Tx<'_>, db: DbId, colls: &[CollId], at: Ts) -> Result<()> {
    if at >= tx.ts.max(sweep_ts(tx)?) {
        // The floor is never above that.
        return Ok(());
    }
    for &c in colls {
        if let Some(f) = floor(tx, db, c)? {
            if at < f {
                return Err(below_floor(at, f));
            }
        }
    }
    Ok(())
}

/// v4's answer to a read below the floor (HTTP 400).
pub fn below_floor(at: Ts, floor: Ts) -> FqlError {
    FqlError::new(
        code::BAD_REQUEST,
        format!("Requested timestamp {} less than minimum allowed timestamp {}.", show_ts(at), show_ts(floor)),
    )
}

fn show_ts(ts: Ts) -> String {
    match chrono::DateTime::from_timestamp_micros(ts.min(i64::MAX as u64) as i64) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        None => ts.to_string(),
    }
}

/// What a history read shows of a document's versions (oldest first) under `floor`:
/// every version above it, and before those the newest one at or before it if it is
/// live there. Exactly what [`sweep`] keeps, so removal never changes a history read.
pub fn retained_history(versions: Vec<DocVersion>, floor: Option<Ts>) -> Vec<DocVersion> {
    let Some(f) = floor else { return versions };
    let split = versions.partition_point(|v| v.ts <= f);
    let mut out = Vec::with_capacity(versions.len() - split + 1);
    let mut it = versions.into_iter();
    let edge = if split > 0 { it.nth(split - 1) } else { None };
    if let Some(e) = edge.filter(|e| e.live_at(f)) {
        out.push(e);
    }
    out.extend(it);
    out
}

/// The hidden floor a collection's schema document keeps across an update: never lower
/// than before, and at least the floor the old `history_days` gave at `now`.
pub fn keep_min_valid(old: &Object, new: &mut Object, now: Ts) {
    let before = Retention::of(old);
    let keep = before.window_edge(now).unwrap_or(0).max(before.min_valid);
    new.remove(MIN_VALID_FIELD);
    if keep > 0 {
        new.insert(MIN_VALID_FIELD.into(), Value::Long(keep.min(i64::MAX as u64) as i64));
    }
}

/// The `ttl` `ttl_days` gives a document written at `now` without one of its own.
pub fn apply_ttl_days(tx: &mut Tx<'_>, db: DbId, coll: CollId, explicit_ttl: bool, fields: &mut Object) -> Result<()> {
    if explicit_ttl {
        return Ok(());
    }
    let now = tx.ts;
    if let Some(ttl) = config(tx, db, coll, now)?.and_then(|r| r.ttl_micros) {
        let at = now.saturating_add(ttl).min(i64::MAX as u64) as i64;
        if let Some(t) = chrono::DateTime::from_timestamp_micros(at) {
            fields.insert("ttl".into(), Value::Time(t));
        }
    }
    Ok(())
}

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
    /// Per batch, each of [`sweep`] and [`sweep_index`]: looking at 128 keys and finding
    /// nothing cost 139 µs and 288 µs on redb (`tally-server/tests/retention_cost.rs`,
    /// 20,000 documents; 256 keys cost 235 and 472 µs); a backlog of 100,000 removable
    /// versions is gone after about 100 batches.
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
    fn due_by(&mut self, at: Option<Ts>) {
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

/// The ref of the document stored under `key` in collection `coll_name` (refs in index
/// entries name collections, not ids).
fn doc_ref(coll_name: &str, key: &[u8]) -> Result<Ref> {
    Ok(Ref::doc(Ref::collection(coll_name), model::id_from_doc_key(key)?))
}

/// The index entry versions, at or before `f`, of the rows document `r` had as `edge`.
fn expired_entries(
    ev: &mut Eval<'_>,
    db: DbId,
    coll: CollId,
    r: &Ref,
    edge: &DocVersion,
    f: Ts,
) -> Result<Vec<(Vec<u8>, Ts)>> {
    let mut out = Vec::new();
    for def in ev.indexes_on(db, coll)? {
        let rev = def.reverse_flags();
        for (terms, values) in crate::fns::docs::index_rows(ev, &def, coll, r, edge.ts, &edge.data)? {
            let k = model::index_key(db, def.id, &terms, &values, &rev, r);
            for v in ev.tx.snapshot().history(Space::Index, &k, 0, f, false).map_err(storage)? {
                out.push((k.clone(), v.map_err(storage)?.ts));
            }
        }
    }
    Ok(out)
}

/// A collection's floor and settings (None: it keeps everything).
type FloorOf = ((DbId, CollId), Option<(Ts, Retention)>);

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

/// Keys fetched per storage scan of a sweep.
const SWEEP_PAGE_KEYS: usize = 64;

fn keys_from(snap: &dyn Snapshot, from: Option<&[u8]>, n: usize) -> Result<Vec<Vec<u8>>> {
    keys_in(snap, Space::Docs, from, n)
}

fn keys_in(snap: &dyn Snapshot, space: Space, from: Option<&[u8]>, n: usize) -> Result<Vec<Vec<u8>>> {
    let it = snap.scan_heads(space, &[], from, false, Ts::MAX, 0).map_err(storage)?;
    it.take(n).map(|r| r.map(|(k, _)| k).map_err(storage)).collect()
}

fn storage(e: tally_storage::StorageError) -> FqlError {
    FqlError::new(code::INTERNAL_ERROR, format!("storage error: {e}"))
}

fn split_key(key: &[u8]) -> Option<(DbId, CollId)> {
    let db = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    let coll = u64::from_be_bytes(key.get(8..16)?.try_into().ok()?);
    Some((db, coll))
}

/// The smallest key after `key`.
fn successor(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

/// The first key after every document of `coll` (None: nothing comes after).
fn collection_end(db: DbId, coll: CollId) -> Option<Vec<u8>> {
    let (db, coll) = match coll.checked_add(1) {
        Some(c) => (db, c),
        None => (db.checked_add(1)?, 0),
    };
    Some(model::doc_prefix(db, coll))
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

/// The lowest floor above `f` at which a document has a version more to remove: the
/// one before a later version, a deletion, or one past its `ttl`; `after` are its
/// versions above `f`, oldest first; `kept` is the version at or before `f` that stays
/// (live there). None: never, as time alone passes.
fn next_doc_removal(
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
