//! A catalog cache shared by the transactions one executor applies: collection ids by
//! name, index definitions by source collection and collection retention settings, so a
//! transfer does not scan and parse its database's schema documents every time (about a
//! fifth of the executor thread's samples before, docs/benchmarks.md).
//!
//! **Why its answers are the uncached ones.** Every schema document (a document of a
//! native collection) and every registry entry has versions only at the commit ts of the
//! transaction that wrote it: schema history cannot be edited (`Insert`/`Remove` refuse
//! it). [`SchemaCache::record`] is told every transaction's writes right after it is
//! evaluated, before the next one runs, and keeps `schema_ts`: a ts at or after which no
//! schema version exists in the store. The schema a read sees at any ts at or after
//! `schema_ts` is therefore one and the same, a pure function of the store's content. An
//! entry is filled and used only by a read at or after `schema_ts`, and every entry is
//! dropped when `schema_ts` moves. A read at an older ts (`At`, history) or by a
//! transaction that has written a schema document itself (`Tx::schema_gen` > 0: its
//! own writes are not in the store) never touches the cache. An answer that depends on
//! a `ttl` (a schema document that has one: its liveness changes with the read ts alone)
//! is never cached.
//!
//! **Why results and block hashes do not change.** A cached lookup charges the same
//! `bytes_read` the uncached one did (the budget and the output record see it) and makes
//! the same nested lookups through the transaction's own caches in the same order
//! ([`crate::catalog`]), so a member with a cold cache (just restarted, or installing a
//! snapshot) gives byte-identical outputs. `tests/catalog_cache.rs` runs the same
//! transactions with and without a cache and compares every outcome.
//!
//! Node-local and never persisted. At start `schema_ts` is the store's last commit ts
//! (nothing newer exists); a replaced store (snapshot install) calls [`SchemaCache::reset`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tally_storage::Space;

use crate::catalog::IndexDef;
use crate::model::{native, CollId, DbId, Ts, Write};
use crate::retention::Retention;

/// Entries kept per kind; a full map is emptied (a database with more schema than this
/// costs lookups, as without a cache).
pub const SCHEMA_CACHE_ENTRIES_MAX: usize = 4096;

/// What [`crate::eval::Eval::indexes_on`] found, and what finding it cost.
#[derive(Debug)]
pub(crate) struct IndexesOn {
    pub defs: Arc<[IndexDef]>,
    /// `bytes_read` of the scan of the index documents.
    pub scan_bytes: u64,
    /// The collection names `parse_index` looked up, in order (the lookups are made
    /// again on a hit, so the transaction's own collection cache and `bytes_read` end up
    /// as after a miss).
    pub lookups: Vec<String>,
}

#[derive(Default)]
struct Inner {
    /// No schema version in the store has a ts after this (see the module doc).
    schema_ts: Ts,
    colls: HashMap<(DbId, String), (Option<CollId>, u64)>,
    indexes: HashMap<(DbId, CollId), Arc<IndexesOn>>,
    retention: HashMap<(DbId, CollId), (Option<Retention>, u64)>,
}

impl Inner {
    fn clear(&mut self) {
        self.colls.clear();
        self.indexes.clear();
        self.retention.clear();
    }
}

/// See the module doc. Shared by reference with the transactions the executor evaluates.
#[derive(Default)]
pub struct SchemaCache {
    inner: Mutex<Inner>,
}

impl SchemaCache {
    /// A cache for a store whose last commit is at `last_ts`.
    pub fn new(last_ts: Ts) -> SchemaCache {
        SchemaCache { inner: Mutex::new(Inner { schema_ts: last_ts, ..Inner::default() }) }
    }

    /// A transaction committing at `ts` wrote `writes` (call before the next transaction
    /// is evaluated; writes that were then not applied only cost a refill).
    pub fn record(&self, writes: &[Write], ts: Ts) {
        if writes.iter().any(is_schema_write) {
            let mut g = self.lock();
            g.schema_ts = g.schema_ts.max(ts);
            for w in writes {
                g.schema_ts = g.schema_ts.max(w.ts);
            }
            g.clear();
        }
    }

    /// The store was replaced by one whose last commit is at `last_ts`.
    pub fn reset(&self, last_ts: Ts) {
        let mut g = self.lock();
        g.schema_ts = g.schema_ts.max(last_ts);
        g.clear();
    }

    /// The ts from which entries are valid (see the module doc).
    pub fn schema_ts(&self) -> Ts {
        self.lock().schema_ts
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent with
        // `schema_ts` in a way that matters: start over.
        self.inner.lock().unwrap_or_else(|p| {
            let mut g = p.into_inner();
            g.clear();
            g
        })
    }

    pub(crate) fn coll(&self, at: Ts, db: DbId, name: &str) -> Option<(Option<CollId>, u64)> {
        let g = self.lock();
        if at < g.schema_ts {
            return None;
        }
        g.colls.get(&(db, name.to_string())).copied()
    }

    pub(crate) fn put_coll(&self, at: Ts, db: DbId, name: &str, v: (Option<CollId>, u64)) {
        let mut g = self.lock();
        if at < g.schema_ts {
            return;
        }
        if g.colls.len() >= SCHEMA_CACHE_ENTRIES_MAX {
            g.colls.clear();
        }
        g.colls.insert((db, name.to_string()), v);
    }

    pub(crate) fn indexes(&self, at: Ts, db: DbId, coll: CollId) -> Option<Arc<IndexesOn>> {
        let g = self.lock();
        if at < g.schema_ts {
            return None;
        }
        g.indexes.get(&(db, coll)).cloned()
    }

    pub(crate) fn put_indexes(&self, at: Ts, db: DbId, coll: CollId, v: Arc<IndexesOn>) {
        let mut g = self.lock();
        if at < g.schema_ts {
            return;
        }
        if g.indexes.len() >= SCHEMA_CACHE_ENTRIES_MAX {
            g.indexes.clear();
        }
        g.indexes.insert((db, coll), v);
    }

    pub(crate) fn retention(&self, at: Ts, db: DbId, coll: CollId) -> Option<(Option<Retention>, u64)> {
        let g = self.lock();
        if at < g.schema_ts {
            return None;
        }
        g.retention.get(&(db, coll)).cloned()
    }

    pub(crate) fn put_retention(&self, at: Ts, db: DbId, coll: CollId, v: (Option<Retention>, u64)) {
        let mut g = self.lock();
        if at < g.schema_ts {
            return;
        }
        if g.retention.len() >= SCHEMA_CACHE_ENTRIES_MAX {
            g.retention.clear();
        }
        g.retention.insert((db, coll), v);
    }
}

/// Does `w` write a document of a native collection (any database) or a registry entry?
pub fn is_schema_write(w: &Write) -> bool {
    if w.space != Space::Docs || w.key.len() < 16 {
        return false;
    }
    let db = u64::from_be_bytes(w.key[0..8].try_into().unwrap_or_default());
    let coll = u64::from_be_bytes(w.key[8..16].try_into().unwrap_or_default());
    db == crate::run::REGISTRY_DB || native::name(coll).is_some()
}
