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
//! clock) and bounded per call ([`SweepLimits`]); the executor calls it at the end of a
//! batch at least 10 ms of commit ts after the last batch that did, with bounds that grow
//! with that interval (`tally_exec::sweep_spacing`), resuming where the previous call
//! stopped (`tally_exec::machine`), so a backlog is worked off over several batches. A reader whose snapshot predates a removal still has
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

use tally_storage::Ts;
use tally_value::{Object, Value};

use crate::catalog::internal_id;
use crate::error::{code, FqlError, Result};
use crate::model::{self, native, CollId, DbId, DocVersion, Tx};

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

/// What a batch's writes say about when a retention sweep could next remove something:
/// a lower bound for documents and one for index entries (executor rules 6,
/// `tally_exec::sweep_due`). Collected write by write ([`WritesDue::note`], before each is
/// applied) and read once at the batch's end ([`WritesDue::due`]).
///
/// A version written at ts `t` (a create, an update, a delete, an `Insert` or `Remove` at a
/// past ts) can make something removable only once the floor reaches `t`: the version it
/// supersedes goes when the newest version at or before the floor is at `t` or later, and
/// the written one itself only when it is at or before the floor (a deletion, or past a
/// `ttl`, which `ttl_days` puts after `t`). Nothing else about the key changes, so for a
/// document of a user collection the bound is [`Retention::due_at`]`(t)` under the
/// collection's settings (never, when it keeps history forever). For an index entry it is
/// `t` + [`MVT_OFFSET_MICROS`], below its document's collection's `due_at(t)` whatever the
/// settings (when `min_valid` holds the floor, `due_at` is 0 but `min_valid` is at most the
/// batch's ts, and so is the bound). A rewritten collection or database schema document
/// may have lowered a collection's history or raised its `min_valid`, which moves every
/// one of its documents' due ts: the bound is then 0 (sweep now) for both.
#[derive(Debug, Default)]
pub struct WritesDue {
    /// `(db, coll, lowest ts)` of the documents of user collections written.
    docs: Vec<(DbId, CollId, Ts)>,
    /// The lowest ts of an index entry version written.
    index: Option<Ts>,
    /// A collection's or database's schema document that already had a version was written.
    schema: bool,
}

impl WritesDue {
    /// Takes in `w`, not yet applied to `snap` (the batch it is written into).
    pub fn note(&mut self, snap: &dyn tally_storage::Snapshot, w: &model::Write) -> Result<()> {
        match w.space {
            tally_storage::Space::Index => self.index = Some(self.index.map_or(w.ts, |t| t.min(w.ts))),
            tally_storage::Space::Docs => {
                let Some((db, coll)) = sweep::split_key(&w.key) else { return Ok(()) };
                if is_user_collection(db, coll) {
                    match self.docs.iter_mut().find(|e| (e.0, e.1) == (db, coll)) {
                        Some(e) => e.2 = e.2.min(w.ts),
                        None => self.docs.push((db, coll, w.ts)),
                    }
                } else if !self.schema && is_settings_doc(db, coll) {
                    // A create changes no one's due ts (a new collection has no documents).
                    self.schema = snap.get(tally_storage::Space::Docs, &w.key, Ts::MAX).map_err(storage)?.is_some();
                }
            }
        }
        Ok(())
    }

    /// Nothing noted.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty() && self.index.is_none() && !self.schema
    }

    /// The bounds `[documents, index entries]` (`u64::MAX`: never, as time alone passes),
    /// read at `now` (the batch's last commit ts) in `snap` (the batch, its writes applied).
    pub fn due(
        &self,
        snap: &dyn tally_storage::Snapshot,
        now: Ts,
        cache: Option<&crate::schema_cache::SchemaCache>,
    ) -> Result<[Ts; 2]> {
        if self.schema {
            return Ok([0, 0]);
        }
        let mut docs = Ts::MAX;
        if !self.docs.is_empty() {
            let mut tx = Tx::new(snap, now).with_schema_cache(cache);
            for &(db, coll, t) in &self.docs {
                if let Some(d) = config(&mut tx, db, coll, now)?.and_then(|r| r.due_at(t)) {
                    docs = docs.min(d);
                }
            }
        }
        let index = self.index.map_or(Ts::MAX, |t| t.saturating_add(MVT_OFFSET_MICROS));
        Ok([docs, index])
    }
}

/// Schema documents whose rewrite may change a collection's retention: a collection's,
/// a database's (in its parent, and in the registry).
fn is_settings_doc(db: DbId, coll: CollId) -> bool {
    coll == native::COLLECTIONS || coll == native::DATABASES || db == crate::run::REGISTRY_DB
}

fn storage(e: tally_storage::StorageError) -> FqlError {
    FqlError::new(code::INTERNAL_ERROR, format!("storage error: {e}"))
}

mod sweep;
pub use sweep::{sweep, sweep_index, Sweep, SweepLimits};

#[cfg(test)]
mod reference;
#[cfg(test)]
mod sweep_tests;
