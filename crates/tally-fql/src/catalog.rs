//! Schema lookups: resolving refs to internal ids, reading collection and index
//! definitions, and keeping index entries in step with document writes.

use tally_value::{Object, Ref, Value};

use crate::error::{code, invalid_argument, FqlError, Result};
use crate::eval::Eval;
use crate::model::{native, CollId, DbId, INTERNAL_ID};

/// One field of an index's `terms` or `values`.
#[derive(Clone, Debug, PartialEq)]
pub enum IndexField {
    /// `{"field": ["data", "x"]}`; also `["ref"]` and `["ts"]`.
    Path(Vec<Value>),
    /// `{"binding": "name"}`: computed by the source's binding lambda.
    Binding(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct IndexSource {
    pub coll: CollId,
    /// Binding name -> lambda (as a Query value), from `source: [{collection, fields}]`.
    pub bindings: Vec<(String, Value)>,
}

/// A parsed index definition.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexDef {
    pub id: u64,
    pub name: String,
    pub sources: Vec<IndexSource>,
    pub terms: Vec<IndexField>,
    /// Each value field with its `reverse` flag.
    pub values: Vec<(IndexField, bool)>,
    pub unique: bool,
}

impl IndexDef {
    pub fn reverse_flags(&self) -> Vec<bool> {
        self.values.iter().map(|(_, r)| *r).collect()
    }
}

/// Where a ref points, once resolved against the query's database.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// A document (user document, or a schema document in a native collection).
    Doc { db: DbId, coll: CollId, id: String },
    /// A native collection itself (`Collections()`, `Keys()`, ...).
    NativeColl { db: DbId, coll: CollId },
}

impl<'a> Eval<'a> {
    /// Resolve the database a ref's `database` field names, relative to the query's db.
    pub fn resolve_scope(&mut self, database: Option<&Ref>) -> Result<DbId> {
        match database {
            None => Ok(self.auth.db),
            Some(dbref) => {
                let parent = self.resolve_scope(dbref.database.as_deref())?;
                self.child_db_id(parent, &dbref.id)?
                    .ok_or_else(|| FqlError::new(code::INVALID_REF, format!("Database `{}` does not exist.", dbref.id)))
            }
        }
    }

    /// The internal id of child database `name` of `parent`, if it exists now.
    pub fn child_db_id(&mut self, parent: DbId, name: &str) -> Result<Option<DbId>> {
        let at = self.read_ts();
        let doc = self.tx.live_doc(parent, native::DATABASES, name, at)?;
        Ok(doc.and_then(|d| internal_id(&d.data)))
    }

    /// The internal id of user collection `name` in `db`, if it exists at the read ts.
    ///
    /// Cached for the rest of the transaction while no schema document is written and the
    /// read ts stays the same (a bulk `Do` of a thousand `Create`s reads the collection's
    /// schema document once, not a thousand times).
    pub fn collection_id(&mut self, db: DbId, name: &str) -> Result<Option<CollId>> {
        let at = self.read_ts();
        let gen = self.tx.schema_gen;
        if let Some(log) = self.lookup_log.as_mut() {
            log.push(name.to_string());
        }
        let hit = self.coll_cache.iter().find(|e| e.db == db && e.at == at && e.gen == gen && e.name == name);
        if let Some(e) = hit {
            return Ok(e.id);
        }
        let shared = self.tx.shared_schema();
        let id = match shared.and_then(|c| c.coll(at, db, name)) {
            // What the read below would have charged, charged again (crate::schema_cache).
            Some((id, bytes)) => {
                self.tx.bytes_read += bytes;
                id
            }
            None => {
                let (before, ttl_before) = (self.tx.bytes_read, self.tx.ttl_seen);
                self.tx.ttl_seen = false;
                let doc = self.tx.live_doc(db, native::COLLECTIONS, name, at);
                let ttl = self.tx.ttl_seen;
                self.tx.ttl_seen |= ttl_before;
                let id = doc?.and_then(|d| internal_id(&d.data));
                if let (Some(c), false) = (shared, ttl) {
                    c.put_coll(at, db, name, (id, self.tx.bytes_read - before));
                }
                id
            }
        };
        if self.coll_cache.len() >= COLL_CACHE_ENTRIES_MAX {
            self.coll_cache.clear();
        }
        self.coll_cache.push(CollCacheEntry { db, name: name.to_string(), at, gen, id });
        Ok(id)
    }

    /// Resolve any ref to where it lives. Errors with `invalid ref` when a collection
    /// or database in it does not exist.
    pub fn resolve(&mut self, r: &Ref) -> Result<Target> {
        // Resolving reads the catalog: the first step of every read or write of a ref.
        self.require_pure_ok("reads a document or schema")?;
        let db = self.resolve_scope(r.database.as_deref())?;
        match r.collection.as_deref() {
            None => match native::by_name(&r.id) {
                Some(coll) => Ok(Target::NativeColl { db, coll }),
                None => Err(FqlError::new(code::INVALID_REF, format!("Ref `{}` does not name a collection.", r.id))),
            },
            Some(c) => {
                // A schema document: its collection is a native collection.
                if c.collection.is_none() {
                    if let Some(coll) = native::by_name(&c.id) {
                        let cdb = self.resolve_scope(c.database.as_deref())?;
                        let db = if r.database.is_some() { db } else { cdb };
                        return Ok(Target::Doc { db, coll, id: r.id.as_str().to_owned() });
                    }
                    return Err(FqlError::new(code::INVALID_REF, format!("Ref `{c}` does not name a collection.")));
                }
                // A user document: resolve its collection first.
                let cdb = self.resolve_scope(c.database.as_deref())?;
                let db = if r.database.is_some() { db } else { cdb };
                let coll = self.collection_id(db, &c.id)?.ok_or_else(|| {
                    FqlError::new(code::INVALID_REF, format!("Collection `{}` does not exist.", c.id))
                })?;
                Ok(Target::Doc { db, coll, id: r.id.as_str().to_owned() })
            }
        }
    }

    /// The definition of index `r` (which must be `Index(name)`).
    pub fn index_def(&mut self, r: &Ref) -> Result<(DbId, IndexDef)> {
        match self.resolve(r)? {
            Target::Doc { db, coll: native::INDEXES, id } => {
                let at = self.read_ts();
                let doc = self
                    .tx
                    .live_doc(db, native::INDEXES, &id, at)?
                    .ok_or_else(|| FqlError::new(code::INVALID_REF, format!("Index `{id}` does not exist.")))?;
                Ok((db, self.parse_index(db, &doc.data)?))
            }
            _ => Err(invalid_argument(format!("Index ref expected, {r} provided."))),
        }
    }

    /// Parse a stored index document into an [`IndexDef`].
    pub fn parse_index(&mut self, db: DbId, data: &Object) -> Result<IndexDef> {
        let id = internal_id(data).ok_or_else(|| crate::model::corrupt("index without internal id"))?;
        let name = data.get("name").and_then(|v| v.as_str()).unwrap_or_default().to_string();
        let mut sources = Vec::new();
        let mut add_source = |ev: &mut Eval<'a>, v: &Value, bindings: Vec<(String, Value)>| -> Result<()> {
            if let Value::Ref(cr) = v {
                if let Some(coll) = ev.collection_id(db, &cr.id)? {
                    sources.push(IndexSource { coll, bindings });
                }
            }
            Ok(())
        };
        match data.get("source") {
            Some(Value::Array(items)) => {
                for it in items {
                    match it {
                        Value::Object(o) => {
                            let b = o
                                .get("fields")
                                .and_then(|f| f.as_object())
                                .map(|f| f.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
                                .unwrap_or_default();
                            if let Some(c) = o.get("collection").or_else(|| o.get("class")) {
                                add_source(self, c, b)?;
                            }
                        }
                        other => add_source(self, other, Vec::new())?,
                    }
                }
            }
            Some(Value::Object(o)) => {
                let b = o
                    .get("fields")
                    .and_then(|f| f.as_object())
                    .map(|f| f.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
                    .unwrap_or_default();
                if let Some(c) = o.get("collection").or_else(|| o.get("class")) {
                    add_source(self, c, b)?;
                }
            }
            Some(other) => add_source(self, other, Vec::new())?,
            None => {}
        }
        let terms = match data.get("terms") {
            Some(Value::Array(ts)) => ts.iter().map(parse_field).collect::<Result<_>>()?,
            _ => Vec::new(),
        };
        let values = match data.get("values") {
            Some(Value::Array(vs)) => vs
                .iter()
                .map(|v| {
                    let rev = v.get("reverse").and_then(|r| r.as_bool()).unwrap_or(false);
                    Ok((parse_field(v)?, rev))
                })
                .collect::<Result<_>>()?,
            _ => Vec::new(),
        };
        let unique = data.get("unique").and_then(|u| u.as_bool()).unwrap_or(false);
        Ok(IndexDef { id, name, sources, terms, values, unique })
    }

    /// Every index of `db` that has `coll` as a source (shared: a write looks them up for
    /// every document it writes).
    pub fn indexes_on(&mut self, db: DbId, coll: CollId) -> Result<std::sync::Arc<[IndexDef]>> {
        let at = self.read_ts();
        let gen = self.tx.schema_gen;
        if let Some((g, t, defs)) = self.index_cache.get(&(db, coll)) {
            if *g == gen && *t == at {
                return Ok(defs.clone());
            }
        }
        let shared = self.tx.shared_schema();
        let defs = match shared.and_then(|c| c.indexes(at, db, coll)) {
            Some(hit) => {
                // The scan's charge and the collection lookups a miss makes, made again
                // (crate::schema_cache): the transaction ends up as after a miss.
                self.tx.bytes_read += hit.scan_bytes;
                for name in &hit.lookups {
                    self.collection_id(db, name)?;
                }
                hit.defs.clone()
            }
            None => {
                let (found, cacheable) = self.indexes_on_uncached(db, coll, at)?;
                let defs = found.defs.clone();
                if let (Some(c), true) = (shared, cacheable) {
                    c.put_indexes(at, db, coll, std::sync::Arc::new(found));
                }
                defs
            }
        };
        self.index_cache.insert((db, coll), (gen, at, defs.clone()));
        Ok(defs)
    }

    /// [`Eval::indexes_on`] read from the store, with what it cost, and whether it may be
    /// cached across transactions (no index document has a `ttl`).
    fn indexes_on_uncached(
        &mut self,
        db: DbId,
        coll: CollId,
        at: u64,
    ) -> Result<(crate::schema_cache::IndexesOn, bool)> {
        let before = self.tx.bytes_read;
        let docs = self.tx.scan_docs(db, native::INDEXES, None, false, at, usize::MAX)?;
        let scan_bytes = self.tx.bytes_read - before;
        let cacheable = !docs.iter().any(|(_, d)| d.data.contains_key("ttl"));
        let outer = self.lookup_log.replace(Vec::new());
        let mut parse = || -> Result<Vec<IndexDef>> {
            let mut out = Vec::new();
            for (_, d) in &docs {
                let def = self.parse_index(db, &d.data)?;
                if def.sources.iter().any(|s| s.coll == coll) {
                    out.push(def);
                }
            }
            Ok(out)
        };
        let defs = parse();
        let lookups = std::mem::replace(&mut self.lookup_log, outer).unwrap_or_default();
        if let Some(log) = self.lookup_log.as_mut() {
            log.extend(lookups.iter().cloned());
        }
        Ok((crate::schema_cache::IndexesOn { defs: defs?.into(), scan_bytes, lookups }, cacheable))
    }
}

/// Entries kept by [`Eval::collection_id`]'s cache before it starts over.
const COLL_CACHE_ENTRIES_MAX: usize = 64;

/// One cached collection lookup: `name` in `db` at read ts `at` under schema generation
/// `gen` is collection `id` (None: no such collection).
pub(crate) struct CollCacheEntry {
    db: DbId,
    name: String,
    at: u64,
    gen: u64,
    id: Option<CollId>,
}

pub fn internal_id(data: &Object) -> Option<u64> {
    match data.get(INTERNAL_ID) {
        Some(Value::Long(n)) => Some(*n as u64),
        _ => None,
    }
}

fn parse_field(v: &Value) -> Result<IndexField> {
    if let Some(b) = v.get("binding").and_then(|b| b.as_str()) {
        return Ok(IndexField::Binding(b.to_string()));
    }
    match v.get("field") {
        Some(Value::Array(p)) => Ok(IndexField::Path(p.clone())),
        Some(s @ Value::String(_)) => Ok(IndexField::Path(vec![s.clone()])),
        _ => Err(invalid_argument("Index terms and values need a `field` path or a `binding`.")),
    }
}
