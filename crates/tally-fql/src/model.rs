//! How FQL data maps onto the temporal key/value store ([`tally_storage::Snapshot`]).
//!
//! Every database has an internal id (root = 0). Native collections have fixed ids;
//! user collections, indexes and child databases get ids from the transaction's id
//! generator, stored in their schema document as `__tally_id`.
//!
//! Key layouts (big-endian, `Space::Docs`):
//!   `db u64 | collection u64 | doc id` where doc id = 0x01 + u64 (numeric ids) or
//!   0x02 + escaped string (names), so documents sort by id as refs do.
//! Value of a document version: `0x01 (format) | action (0 live, 1 deleted) | encoded Object`.
//!
//! `Space::Index`: `db u64 | index u64 | encoded [terms] | each value (bit-inverted when
//! reverse) | encoded ref`, value = `0x01 | action (0 add, 1 remove) | encoded [[values], ref]`.
//!
//! [`Tx`] layers this transaction's own writes over the snapshot: reads see them, and at
//! the end [`Tx::into_writes`] hands them to the executor to apply at the commit ts.

use std::collections::BTreeMap;
use std::ops::Bound;

use tally_storage::{Snapshot, Space, Version};
use tally_value::{decode, encode, encode_into, numeric_id, Object, Value};

use crate::limits::WriteKind;

use crate::error::{code, FqlError, Result};

pub type Ts = u64;
pub type DbId = u64;
pub type CollId = u64;

pub const ROOT_DB: DbId = 0;
pub const FORMAT: u8 = 1;

/// Fixed ids of the native collections of every database.
pub mod native {
    use super::CollId;
    pub const COLLECTIONS: CollId = 1;
    pub const INDEXES: CollId = 2;
    pub const DATABASES: CollId = 3;
    pub const KEYS: CollId = 4;
    pub const FUNCTIONS: CollId = 5;
    pub const ROLES: CollId = 6;
    pub const TOKENS: CollId = 7;
    pub const CREDENTIALS: CollId = 8;
    pub const ACCESS_PROVIDERS: CollId = 9;

    pub fn by_name(name: &str) -> Option<CollId> {
        Some(match name {
            "collections" | "classes" => COLLECTIONS,
            "indexes" => INDEXES,
            "databases" => DATABASES,
            "keys" => KEYS,
            "functions" => FUNCTIONS,
            "roles" => ROLES,
            "tokens" => TOKENS,
            "credentials" => CREDENTIALS,
            "access_providers" => ACCESS_PROVIDERS,
            _ => return None,
        })
    }

    pub fn name(id: CollId) -> Option<&'static str> {
        Some(match id {
            COLLECTIONS => "collections",
            INDEXES => "indexes",
            DATABASES => "databases",
            KEYS => "keys",
            FUNCTIONS => "functions",
            ROLES => "roles",
            TOKENS => "tokens",
            CREDENTIALS => "credentials",
            ACCESS_PROVIDERS => "access_providers",
            _ => return None,
        })
    }

    /// Native collections whose documents are named (id = name) rather than numbered.
    pub fn is_named(id: CollId) -> bool {
        matches!(id, COLLECTIONS | INDEXES | DATABASES | FUNCTIONS | ROLES | ACCESS_PROVIDERS)
    }
}

/// The hidden field of schema documents holding their internal id. User documents
/// carry one too (since identity generations): a fresh id for every incarnation, so a
/// document deleted and created again under the same ref is a new identity.
pub const INTERNAL_ID: &str = "__tally_id";
/// The hidden field of a key with a `database`: the internal id of the database it
/// opens, fixed when the key is written (the `database` ref only shows its name).
pub const KEY_DATABASE_ID: &str = "__tally_database_id";
/// The hidden field of a token: the [`INTERNAL_ID`] of the identity incarnation it was
/// issued to.
pub const TOKEN_INSTANCE_ID: &str = "__tally_instance_id";
/// The hidden field of a key, function or access provider naming user-defined roles: an
/// object `{role name: internal id}` of the roles its `role`/`roles` named when written,
/// so a role deleted (or renamed away) and created again under the same name is not the
/// role it grants (see `fns::security::bind_roles`).
pub const ROLE_IDS: &str = "__tally_role_ids";
/// The hidden field of a role: `{privileges: [id or null, ...], membership: [...]}`, the
/// internal id of the collection, index or function each entry's `resource` named when
/// the role was written (null for native collections), so a privilege follows its
/// resource through renames and never passes to one created later under the same name
/// (see `fns::security::bind_role_resources`).
pub const ROLE_RESOURCE_IDS: &str = "__tally_resource_ids";
/// Stored fields no client ever sees (rendering, predicates).
pub const HIDDEN_FIELDS: &[&str] = &[
    INTERNAL_ID,
    KEY_DATABASE_ID,
    TOKEN_INSTANCE_ID,
    ROLE_IDS,
    ROLE_RESOURCE_IDS,
    "credentials",
    crate::retention::MIN_VALID_FIELD,
];

pub fn doc_prefix(db: DbId, coll: CollId) -> Vec<u8> {
    let mut k = Vec::with_capacity(32);
    k.extend_from_slice(&db.to_be_bytes());
    k.extend_from_slice(&coll.to_be_bytes());
    k
}

pub fn push_id(k: &mut Vec<u8>, id: &str) {
    match numeric_id(id) {
        Some(n) => {
            k.push(0x01);
            k.extend_from_slice(&n.to_be_bytes());
        }
        None => {
            k.push(0x02);
            for &b in id.as_bytes() {
                k.push(b);
                if b == 0 {
                    k.push(0xFF);
                }
            }
            k.extend_from_slice(&[0, 1]);
        }
    }
}

pub fn doc_key(db: DbId, coll: CollId, id: &str) -> Vec<u8> {
    let mut k = doc_prefix(db, coll);
    push_id(&mut k, id);
    k
}

/// Recover the document id from a doc key.
pub fn id_from_doc_key(key: &[u8]) -> Result<String> {
    let rest = key.get(16..).ok_or_else(|| corrupt("short document key"))?;
    match rest.first() {
        Some(0x01) if rest.len() == 9 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&rest[1..9]);
            Ok(u64::from_be_bytes(b).to_string())
        }
        Some(0x02) => {
            let mut out = Vec::new();
            let mut i = 1;
            while i < rest.len() {
                let b = rest[i];
                if b == 0 {
                    if rest.get(i + 1) == Some(&0xFF) {
                        out.push(0);
                        i += 2;
                        continue;
                    }
                    break;
                }
                out.push(b);
                i += 1;
            }
            String::from_utf8(out).map_err(|_| corrupt("document id is not UTF-8"))
        }
        _ => Err(corrupt("bad document id encoding")),
    }
}

pub fn corrupt(what: &str) -> FqlError {
    FqlError::new(code::INTERNAL_ERROR, format!("storage is corrupt: {what}"))
}

fn storage_err(e: tally_storage::StorageError) -> FqlError {
    FqlError::new(code::INTERNAL_ERROR, format!("storage error: {e}"))
}

/// One version of a document as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct DocVersion {
    pub ts: Ts,
    pub deleted: bool,
    pub data: Object,
}

impl DocVersion {
    /// Is this version a live document for a read at `at`? Not when it is a deletion,
    /// nor once its `ttl` has passed: as in v4, a document past its `ttl` is removed
    /// (reads at an earlier ts, through `At`, still see it). Deterministic: `at` is the
    /// read ts, never a clock.
    pub fn live_at(&self, at: Ts) -> bool {
        !self.deleted && !self.expired_at(at)
    }

    /// Has the version's `ttl` passed at `at`?
    pub fn expired_at(&self, at: Ts) -> bool {
        matches!(self.data.get("ttl"), Some(Value::Time(t)) if t.timestamp_micros() <= at as i64)
    }
}

pub fn encode_doc(deleted: bool, data: &Object) -> Vec<u8> {
    // Room for a small document at once (growing from a few bytes was a tenth of a
    // create's time); the overlay keeps its own exact copy.
    let mut out = Vec::with_capacity(ENCODE_DOC_CAPACITY);
    out.extend_from_slice(&[FORMAT, deleted as u8]);
    // Encode the object without cloning it into a Value.
    out.push(0x50);
    for (k, v) in data {
        out.push(0x01);
        for &b in k.as_bytes() {
            out.push(b);
            if b == 0 {
                out.push(0xFF);
            }
        }
        out.extend_from_slice(&[0, 1]);
        encode_into(&mut out, v);
    }
    out.push(0);
    out
}

/// The buffer [`encode_doc`] starts with.
const ENCODE_DOC_CAPACITY: usize = 256;

/// A stored document version starts with its format byte and a deletion flag.
const DOC_HEADER_BYTES: usize = 2;

/// Whether a stored document version (or its header alone) is a deletion.
fn doc_header_deleted(bytes: &[u8]) -> Result<bool> {
    if bytes.len() < DOC_HEADER_BYTES || bytes[0] != FORMAT {
        return Err(corrupt("unknown document format"));
    }
    Ok(bytes[1] == 1)
}

pub fn decode_doc(v: &Version) -> Result<DocVersion> {
    let bytes = &v.value;
    if bytes.len() < 2 || bytes[0] != FORMAT {
        return Err(corrupt("unknown document format"));
    }
    let data = match decode(&bytes[2..]).map_err(|e| corrupt(&e.to_string()))? {
        Value::Object(o) => o,
        _ => return Err(corrupt("document is not an object")),
    };
    Ok(DocVersion { ts: v.ts, deleted: bytes[1] == 1, data })
}

/// Of a stored document version, whether it is a deletion and its `ttl` field, refused
/// exactly as [`decode_doc`] refuses it, without building the rest of the document (what
/// a retention sweep asks of every version it looks at).
pub fn decode_doc_ttl(v: &Version) -> Result<(bool, Option<Value>)> {
    let bytes = &v.value;
    if bytes.len() < 2 || bytes[0] != FORMAT {
        return Err(corrupt("unknown document format"));
    }
    match tally_value::decode_field(&bytes[2..], "ttl").map_err(|e| corrupt(&e.to_string()))? {
        Some(ttl) => Ok((bytes[1] == 1, ttl)),
        None => Err(corrupt("document is not an object")),
    }
}

/// One index entry as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexEntry {
    pub key: Vec<u8>,
    pub ts: Ts,
    pub added: bool,
    pub values: Vec<Value>,
    pub doc: tally_value::Ref,
}

pub fn index_prefix(db: DbId, index: u64, terms: &[Value]) -> Vec<u8> {
    let mut k = Vec::with_capacity(64);
    k.extend_from_slice(&db.to_be_bytes());
    k.extend_from_slice(&index.to_be_bytes());
    encode_into(&mut k, &Value::Array(terms.to_vec()));
    k
}

/// Append the sort part of an index key: each value (inverted when reversed), then the ref.
pub fn push_index_values(k: &mut Vec<u8>, values: &[Value], reverse: &[bool]) {
    for (i, v) in values.iter().enumerate() {
        let start = k.len();
        encode_into(k, v);
        if reverse.get(i).copied().unwrap_or(false) {
            for b in &mut k[start..] {
                *b = !*b;
            }
        }
    }
}

pub fn index_key(
    db: DbId,
    index: u64,
    terms: &[Value],
    values: &[Value],
    reverse: &[bool],
    doc: &tally_value::Ref,
) -> Vec<u8> {
    let mut k = index_prefix(db, index, terms);
    push_index_values(&mut k, values, reverse);
    encode_into(&mut k, &Value::Ref(doc.clone()));
    k
}

pub fn encode_entry(added: bool, values: &[Value], doc: &tally_value::Ref) -> Vec<u8> {
    let mut out = vec![FORMAT, (!added) as u8];
    encode_into(&mut out, &Value::Array(vec![Value::Array(values.to_vec()), Value::Ref(doc.clone())]));
    out
}

pub fn decode_entry(key: Vec<u8>, v: &Version) -> Result<IndexEntry> {
    let b = &v.value;
    if b.len() < 2 || b[0] != FORMAT {
        return Err(corrupt("unknown index entry format"));
    }
    match decode(&b[2..]).map_err(|e| corrupt(&e.to_string()))? {
        Value::Array(mut parts) if parts.len() == 2 => {
            let doc = match parts.pop() {
                Some(Value::Ref(r)) => r,
                _ => return Err(corrupt("index entry without ref")),
            };
            let values = match parts.pop() {
                Some(Value::Array(v)) => v,
                _ => return Err(corrupt("index entry without values")),
            };
            Ok(IndexEntry { key, ts: v.ts, added: b[1] == 0, values, doc })
        }
        _ => Err(corrupt("malformed index entry")),
    }
}

/// Deepest nesting a stored document may have (v4 accepts 1,000-level request bodies).
pub const DOC_DEPTH_MAX: usize = 1024;

/// Scan page size used when pulling from storage.
pub const SCAN_CHUNK: usize = 256;

/// One write of a transaction: a version put at `ts`, or removed when `value` is None.
#[derive(Clone, Debug, PartialEq)]
pub struct Write {
    pub space: Space,
    pub key: Vec<u8>,
    pub ts: Ts,
    pub value: Option<Vec<u8>>,
}

/// A transaction's writes at its ts, one map per [`Space`]: looked up by the key's bytes
/// without building an owned (space, key) pair, and iterated in (space, key) order.
#[derive(Default)]
struct Writes([BTreeMap<Vec<u8>, Vec<u8>>; 2]);

impl Writes {
    const SPACES: [Space; 2] = [Space::Docs, Space::Index];

    fn slot(space: Space) -> usize {
        match space {
            Space::Docs => 0,
            Space::Index => 1,
        }
    }

    fn space(&self, space: Space) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.0[Self::slot(space)]
    }

    fn space_mut(&mut self, space: Space) -> &mut BTreeMap<Vec<u8>, Vec<u8>> {
        &mut self.0[Self::slot(space)]
    }

    /// Every write in (space, key) order.
    fn iter(&self) -> impl Iterator<Item = (&Space, &Vec<u8>, &Vec<u8>)> {
        Self::SPACES.iter().zip(&self.0).flat_map(|(s, m)| m.iter().map(move |(k, v)| (s, k, v)))
    }

    fn into_iter(self) -> impl Iterator<Item = (Space, Vec<u8>, Vec<u8>)> {
        Self::SPACES.into_iter().zip(self.0).flat_map(|(s, m)| m.into_iter().map(move |(k, v)| (s, k, v)))
    }
}

/// A snapshot plus this transaction's writes (all at `ts`).
pub struct Tx<'a> {
    snap: &'a dyn Snapshot,
    /// Commit ts (write mode) or snapshot ts (read mode).
    pub ts: Ts,
    overlay: Writes,
    /// History edits at explicit timestamps: `Some(value)` puts, `None` removes a version.
    history_edits: Vec<Write>,
    /// Bumped by every write to a native (schema) collection.
    pub schema_gen: u64,
    /// Set when a write was refused for nesting deeper than [`DOC_DEPTH_MAX`].
    pub too_deep: bool,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Writes made so far (a rewrite of the same key counts again), for
    /// [`crate::limits::TXN_WRITES_MAX`].
    writes_count: u64,
    /// Set when [`Tx::live_doc`] read a document that has a `ttl`: what was read can
    /// change without a write (`crate::authcache` does not cache such an answer).
    pub ttl_seen: bool,
    /// Collection retention settings read so far (`crate::retention::config`), by
    /// (db, collection, read ts, schema generation).
    pub(crate) retention_cache: Vec<RetentionCacheEntry>,
    /// The ts of the latest retention sweep in the snapshot, once read
    /// (`crate::retention::META_SWEEP_TS`).
    pub(crate) sweep_ts: Option<Ts>,
    /// The inline pass's work bound (`Limits::work_bytes_max`, set by
    /// `Eval::set_limits`): a document read past it is not decoded (see [`Tx::get_doc`]).
    /// `u64::MAX` everywhere else, so no result depends on it.
    pub(crate) read_bytes_max: u64,
    /// Set when a read stopped at `read_bytes_max`.
    pub(crate) read_stopped: bool,
    /// The executor's catalog cache, shared across transactions (see
    /// [`crate::schema_cache`]); None everywhere else.
    pub(crate) schema_cache: Option<&'a crate::schema_cache::SchemaCache>,
    /// The first [`READS_KEPT`] snapshot reads of [`Tx::get`], by (space, key, read ts):
    /// a transaction that reads a document and then updates it (the usual shape) walks
    /// the store's layers for it once. The snapshot does not change while the
    /// transaction runs, and a repeated read charges `bytes_read` as the first did, so
    /// every answer and limit is as without it.
    reads: Vec<(Space, Vec<u8>, Ts, Option<Version>)>,
    /// Documents decoded by [`Tx::get_doc`], each with the version it was decoded from,
    /// when [`Tx::keep_decoded`] is set: the transfer's `Get` and then `Update` of one
    /// document decode it once. Decoding is a function of the version's ts and bytes
    /// alone, and an entry is used only for a version equal in both, so no answer
    /// depends on it. At most [`DECODED_KEPT`], each of at most [`READ_KEPT_BYTES_MAX`].
    decoded: Vec<(Version, DocVersion)>,
    /// Keep what [`Tx::get_doc`] decodes ([`Tx::decoded`]): set for the executor's write
    /// transactions (a read-only pass would pay the copy and rarely read a document again).
    pub(crate) keep_decoded: bool,
}

/// How many snapshot reads a transaction keeps for reading again (a linear search), and
/// the largest value kept (a large document is decoded for longer than it is found).
const READS_KEPT: usize = 8;
const READ_KEPT_BYTES_MAX: usize = 4096;
/// How many decoded documents a transaction keeps ([`Tx::get_doc`]).
const DECODED_KEPT: usize = 4;

pub(crate) type RetentionCacheEntry = ((DbId, CollId, Ts, u64), Option<crate::retention::Retention>);

impl<'a> Tx<'a> {
    pub fn new(snap: &'a dyn Snapshot, ts: Ts) -> Tx<'a> {
        Tx {
            snap,
            ts,
            overlay: Writes::default(),
            history_edits: Vec::new(),
            schema_gen: 0,
            too_deep: false,
            bytes_read: 0,
            bytes_written: 0,
            writes_count: 0,
            ttl_seen: false,
            retention_cache: Vec::new(),
            sweep_ts: None,
            read_bytes_max: u64::MAX,
            read_stopped: false,
            schema_cache: None,
            reads: Vec::new(),
            decoded: Vec::new(),
            keep_decoded: false,
        }
    }

    /// Use `cache` for catalog lookups (the executor's, see [`crate::schema_cache`]).
    pub fn with_schema_cache(mut self, cache: Option<&'a crate::schema_cache::SchemaCache>) -> Tx<'a> {
        self.schema_cache = cache;
        self
    }

    /// The shared catalog cache, when this transaction may use it: it has written no
    /// schema document (its own writes are not in the store) and reads are not bounded
    /// (only the inline pass bounds them, and it has no cache). The read ts is checked by
    /// the cache itself.
    pub(crate) fn shared_schema(&self) -> Option<&'a crate::schema_cache::SchemaCache> {
        if self.schema_gen == 0 && self.read_bytes_max == u64::MAX {
            self.schema_cache
        } else {
            None
        }
    }

    pub fn snapshot(&self) -> &'a dyn Snapshot {
        self.snap
    }

    /// Newest version of `key` at or before `at`, this transaction's writes included.
    pub fn get(&mut self, space: Space, key: &[u8], at: Ts) -> Result<Option<Version>> {
        if at >= self.ts {
            if let Some(v) = self.overlay.space(space).get(key) {
                return Ok(Some(Version { ts: self.ts, value: v.clone() }));
            }
        }
        if let Some((.., v)) = self.reads.iter().find(|(s, k, t, _)| *s == space && *t == at && k == key) {
            let v = v.clone();
            if let Some(v) = &v {
                self.bytes_read += (key.len() + v.value.len()) as u64;
            }
            return Ok(v);
        }
        let v = self.snap.get(space, key, at).map_err(storage_err)?;
        if let Some(v) = &v {
            self.bytes_read += (key.len() + v.value.len()) as u64;
        }
        if self.reads.len() < READS_KEPT && v.as_ref().is_none_or(|v| v.value.len() <= READ_KEPT_BYTES_MAX) {
            self.reads.push((space, key.to_vec(), at, v.clone()));
        }
        Ok(v)
    }

    /// Write `value` at the transaction ts, refused (as the transaction's error) when it
    /// breaks a limit of [`crate::limits`].
    pub fn put(&mut self, space: Space, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        self.put_as(WriteKind::Other, space, key, value)
    }

    /// [`Tx::put`], saying what the write is for the error message.
    pub fn put_as(&mut self, kind: WriteKind<'_>, space: Space, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        self.count_write(kind, space, &key, Some(&value))?;
        self.overlay.space_mut(space).insert(key, value);
        Ok(())
    }

    /// Did this transaction already write `key` (at its ts)?
    pub fn wrote(&self, space: Space, key: &[u8]) -> bool {
        self.overlay.space(space).contains_key(key)
    }

    /// The newest version of `key` before this transaction (its own writes left out).
    pub fn before_txn(&mut self, space: Space, key: &[u8]) -> Result<Option<Version>> {
        let Some(at) = self.ts.checked_sub(1) else { return Ok(None) };
        let v = self.snap.get(space, key, at).map_err(storage_err)?;
        if let Some(v) = &v {
            self.bytes_read += (key.len() + v.value.len()) as u64;
        }
        Ok(v)
    }

    /// Withdraw this transaction's write of `key`: what stood before the transaction
    /// stands again (the write already counted against the limits stays counted).
    pub fn unput(&mut self, space: Space, key: &[u8]) {
        self.overlay.space_mut(space).remove(key);
    }

    fn count_write(&mut self, kind: WriteKind<'_>, space: Space, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        crate::limits::check_write(kind, space, key, value, self.writes_count, self.bytes_written)?;
        self.writes_count += 1;
        self.bytes_written += (key.len() + value.map_or(0, <[u8]>::len)) as u64;
        Ok(())
    }

    pub fn has_writes(&self) -> bool {
        self.overlay.0.iter().any(|m| !m.is_empty()) || !self.history_edits.is_empty()
    }

    /// Edit history: write `value` at `ts` (`None` removes the version at `ts`).
    pub fn edit_history(
        &mut self,
        kind: WriteKind<'_>,
        space: Space,
        key: Vec<u8>,
        ts: Ts,
        value: Option<Vec<u8>>,
    ) -> Result<()> {
        self.count_write(kind, space, &key, value.as_deref())?;
        self.history_edits.push(Write { space, key, ts, value });
        Ok(())
    }

    /// Every write of this transaction: first its writes at the txn ts in key order,
    /// then its history edits in the order they were made.
    pub fn into_writes(self) -> Vec<Write> {
        let ts = self.ts;
        let mut out: Vec<Write> =
            self.overlay.into_iter().map(|(space, key, v)| Write { space, key, ts, value: Some(v) }).collect();
        out.extend(self.history_edits);
        out
    }

    pub fn writes(&self) -> impl Iterator<Item = (&Space, &Vec<u8>, &Vec<u8>)> {
        self.overlay.iter()
    }

    /// Up to `limit` distinct keys under `prefix`, starting at `from` (inclusive), each
    /// with its newest version at or before `at`, overlay merged in.
    pub fn scan(
        &mut self,
        space: Space,
        prefix: &[u8],
        from: Option<&[u8]>,
        desc: bool,
        at: Ts,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Version)>> {
        self.scan_cut(space, prefix, from, desc, at, limit, None)
    }

    /// [`Tx::scan`] giving (and counting as read) only the first `head` bytes of each
    /// stored value when `head` is set: listings that do not return document bodies.
    #[allow(clippy::too_many_arguments)]
    fn scan_cut(
        &mut self,
        space: Space,
        prefix: &[u8],
        from: Option<&[u8]>,
        desc: bool,
        at: Ts,
        limit: usize,
        head: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Version)>> {
        let mut out: Vec<(Vec<u8>, Version)> = Vec::new();
        let mut it = match head {
            Some(n) => self.snap.scan_heads(space, prefix, from, desc, at, n),
            None => self.snap.scan(space, prefix, from, desc, at),
        }
        .map_err(storage_err)?;
        // Overlay entries in range, in scan order.
        let mut ov: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if at >= self.ts {
            for (k, v) in self.overlay.space(space).range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded)) {
                if !k.starts_with(prefix) {
                    break;
                }
                let in_range = match from {
                    None => true,
                    Some(f) if desc => k.as_slice() <= f,
                    Some(f) => k.as_slice() >= f,
                };
                if in_range {
                    ov.push((k.clone(), v.clone()));
                }
            }
            if desc {
                ov.reverse();
            }
        }
        let mut ov = ov.into_iter().peekable();
        let mut next_store = it.next().transpose().map_err(storage_err)?;
        while out.len() < limit {
            let take_ov = match (ov.peek(), &next_store) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((ok, _)), Some((sk, _))) => {
                    if ok == sk {
                        // Overlay shadows the stored version.
                        next_store = it.next().transpose().map_err(storage_err)?;
                        true
                    } else if desc {
                        ok > sk
                    } else {
                        ok < sk
                    }
                }
            };
            if take_ov {
                if let Some((k, mut v)) = ov.next() {
                    if let Some(n) = head {
                        v.truncate(n);
                    }
                    out.push((k, Version { ts: self.ts, value: v }));
                }
            } else if let Some((k, v)) = next_store.take() {
                self.bytes_read += (k.len() + v.value.len()) as u64;
                out.push((k, v));
                next_store = it.next().transpose().map_err(storage_err)?;
            }
        }
        Ok(out)
    }

    /// Versions of one key, newest first when `desc` (history reads).
    pub fn history(
        &mut self,
        space: Space,
        key: &[u8],
        lo: Ts,
        hi: Ts,
        desc: bool,
        limit: usize,
    ) -> Result<Vec<Version>> {
        let mut out = Vec::new();
        let own = if hi >= self.ts { self.overlay.space(space).get(key).cloned() } else { None };
        if let (Some(v), true) = (&own, desc) {
            out.push(Version { ts: self.ts, value: v.clone() });
        }
        for v in self.snap.history(space, key, lo, hi, desc).map_err(storage_err)? {
            if out.len() >= limit {
                break;
            }
            let v = v.map_err(storage_err)?;
            if own.is_some() && v.ts == self.ts {
                continue;
            }
            out.push(v);
        }
        if let (Some(v), false) = (own, desc) {
            if out.len() < limit {
                out.push(Version { ts: self.ts, value: v });
            }
        }
        Ok(out)
    }

    // ---- documents ----

    pub fn get_doc(&mut self, db: DbId, coll: CollId, id: &str, at: Ts) -> Result<Option<DocVersion>> {
        self.doc_version(db, coll, id, at, false)
    }

    /// [`Tx::get_doc`]; `last` says the caller reads this version for the last time (it
    /// is about to write the document), so a kept decoding is handed over, not copied.
    fn doc_version(&mut self, db: DbId, coll: CollId, id: &str, at: Ts, last: bool) -> Result<Option<DocVersion>> {
        match self.get(Space::Docs, &doc_key(db, coll, id), at)? {
            // Decoding a large document is the heavy part of reading it (a 16 MiB one
            // takes tens of ms): the inline pass stops before it (issue 13 item 4).
            Some(_) if self.bytes_read > self.read_bytes_max => {
                self.read_stopped = true;
                Err(crate::eval::Eval::work_exceeded(self.read_bytes_max))
            }
            Some(v) => {
                if let Some(i) = self.decoded.iter().position(|(k, _)| k.ts == v.ts && k.value == v.value) {
                    return Ok(Some(if last { self.decoded.remove(i).1 } else { self.decoded[i].1.clone() }));
                }
                let doc = decode_doc(&v)?;
                if self.keep_decoded && !last && v.value.len() <= READ_KEPT_BYTES_MAX {
                    // The oldest goes first: a document read and never written (a `Get`
                    // whose `Update` did not happen) does not take a place for good.
                    if self.decoded.len() == DECODED_KEPT {
                        self.decoded.remove(0);
                    }
                    self.decoded.push((v, doc.clone()));
                }
                Ok(Some(doc))
            }
            None => Ok(None),
        }
    }

    /// The live document (None if missing or deleted at `at`).
    pub fn live_doc(&mut self, db: DbId, coll: CollId, id: &str, at: Ts) -> Result<Option<DocVersion>> {
        let doc = self.get_doc(db, coll, id, at)?;
        self.live(doc, at)
    }

    /// [`Tx::live_doc`] for a caller about to write the document (`Update`, `Replace`,
    /// `Delete`): the same answer, taking a decoding kept from an earlier read instead of
    /// copying it.
    pub fn live_doc_to_write(&mut self, db: DbId, coll: CollId, id: &str, at: Ts) -> Result<Option<DocVersion>> {
        let doc = self.doc_version(db, coll, id, at, true)?;
        self.live(doc, at)
    }

    fn live(&mut self, doc: Option<DocVersion>, at: Ts) -> Result<Option<DocVersion>> {
        if doc.as_ref().is_some_and(|d| d.data.contains_key("ttl")) {
            self.ttl_seen = true;
        }
        Ok(doc.filter(|d| d.live_at(at)))
    }

    pub fn put_doc(&mut self, db: DbId, coll: CollId, id: &str, deleted: bool, data: &Object) -> Result<()> {
        if data.values().map(Value::depth).max().unwrap_or(0) >= DOC_DEPTH_MAX {
            // Reported by `run::evaluate` as `validation failed`; nothing is written.
            self.too_deep = true;
            return Ok(());
        }
        if native::name(coll).is_some() {
            // Schema changed: caches of schema reads made in this transaction are stale.
            self.schema_gen += 1;
        }
        let kind = WriteKind::Doc { named: native::is_named(coll) };
        let key = doc_key(db, coll, id);
        if deleted && self.wrote(Space::Docs, &key) {
            // Created and deleted by this one transaction: it leaves no version behind
            // (its history shows its net change, like its index entries).
            let absent_before = match self.before_txn(Space::Docs, &key)? {
                None => true,
                Some(v) => doc_header_deleted(&v.value)?,
            };
            if absent_before {
                self.unput(Space::Docs, &key);
                return Ok(());
            }
        }
        self.put_as(kind, Space::Docs, key, encode_doc(deleted, data))
    }

    /// Live documents of a collection in id order, starting at `from_id` (inclusive).
    /// Ids of the live documents of a collection, as [`Tx::scan_docs`] lists them, without
    /// reading or decoding their bodies (only each version's header, which says whether it
    /// is a deletion): what `Documents` sets, their pages and counts need. A document past
    /// its `ttl` is listed (its body would tell); callers that care check it.
    pub fn scan_doc_ids(
        &mut self,
        db: DbId,
        coll: CollId,
        from_id: Option<&str>,
        desc: bool,
        at: Ts,
        limit: usize,
    ) -> Result<Vec<String>> {
        self.page_docs(db, coll, from_id, desc, at, limit, Some(DOC_HEADER_BYTES), |k, v| {
            if doc_header_deleted(&v.value)? {
                return Ok(None);
            }
            id_from_doc_key(k).map(Some)
        })
    }

    pub fn scan_docs(
        &mut self,
        db: DbId,
        coll: CollId,
        from_id: Option<&str>,
        desc: bool,
        at: Ts,
        limit: usize,
    ) -> Result<Vec<(String, DocVersion)>> {
        self.page_docs(db, coll, from_id, desc, at, limit, None, |k, v| {
            let d = decode_doc(v)?;
            if !d.live_at(at) {
                return Ok(None);
            }
            Ok(Some((id_from_doc_key(k)?, d)))
        })
    }

    /// Up to `limit` of what `keep` makes of the documents of a collection (each key with
    /// its newest version at `at`, or only the first `head` bytes of it), in id order from
    /// `from_id` (inclusive), pulling from storage in chunks of [`SCAN_CHUNK`].
    // The arguments are one scan's, as for `scan_docs`.
    #[allow(clippy::too_many_arguments)]
    fn page_docs<T>(
        &mut self,
        db: DbId,
        coll: CollId,
        from_id: Option<&str>,
        desc: bool,
        at: Ts,
        limit: usize,
        head: Option<usize>,
        mut keep: impl FnMut(&[u8], &Version) -> Result<Option<T>>,
    ) -> Result<Vec<T>> {
        let prefix = doc_prefix(db, coll);
        let mut from = from_id.map(|id| doc_key(db, coll, id));
        let mut out = Vec::new();
        let mut resumed = false;
        loop {
            let page = self.scan_cut(Space::Docs, &prefix, from.as_deref(), desc, at, SCAN_CHUNK + 1, head)?;
            let skip_first =
                from.is_some() && resumed && page.first().map(|(k, _)| Some(k) == from.as_ref()).unwrap_or(false);
            let n = page.len() - skip_first as usize;
            let mut last = None;
            for (k, v) in page.into_iter().skip(skip_first as usize) {
                if out.len() < limit {
                    if let Some(t) = keep(&k, &v)? {
                        out.push(t);
                    }
                }
                last = Some(k);
            }
            if n < SCAN_CHUNK || out.len() >= limit {
                break;
            }
            from = last;
            resumed = true;
        }
        Ok(out)
    }

    // ---- index entries ----

    /// Live entries under an index key prefix, starting at `from` (inclusive).
    pub fn scan_index(
        &mut self,
        prefix: &[u8],
        from: Option<&[u8]>,
        desc: bool,
        at: Ts,
        limit: usize,
    ) -> Result<Vec<IndexEntry>> {
        let mut from = from.map(|f| f.to_vec());
        let mut out = Vec::new();
        let mut resumed = false;
        loop {
            let page = self.scan(Space::Index, prefix, from.as_deref(), desc, at, SCAN_CHUNK + 1)?;
            let skip_first =
                from.is_some() && resumed && page.first().map(|(k, _)| Some(k) == from.as_ref()).unwrap_or(false);
            let n = page.len() - skip_first as usize;
            let mut last = None;
            for (k, v) in page.into_iter().skip(skip_first as usize) {
                let e = decode_entry(k.clone(), &v)?;
                if e.added && out.len() < limit {
                    out.push(e);
                }
                last = Some(k);
            }
            if n < SCAN_CHUNK || out.len() >= limit {
                break;
            }
            from = last;
            resumed = true;
        }
        Ok(out)
    }
}

/// Encode a value the way index keys do (exposed for cursors).
pub fn encode_value(v: &Value) -> Vec<u8> {
    encode(v)
}

#[cfg(test)]
mod decoded_tests {
    use super::*;
    use proptest::prelude::*;
    use tally_storage::{MemStore, Store};

    const COLL: CollId = 2048;

    fn doc(balance: i64, ttl: bool) -> Object {
        let mut o = Object::new();
        o.insert("balance".into(), Value::Long(balance));
        if ttl {
            o.insert("ttl".into(), Value::Time(chrono::DateTime::from_timestamp_micros(25).unwrap()));
        }
        o
    }

    /// Docs "0".."3", each with versions at ts 10, 20 and 30: some deletions, a `ttl`,
    /// and "2" and "3" byte for byte alike at every ts (a kept decoding is matched by the
    /// version's bytes, whatever key it was read under).
    fn store() -> MemStore {
        let store = MemStore::new();
        let mut b = store.begin().unwrap();
        for id in 0..4u64 {
            for ts in [10u64, 20, 30] {
                let (deleted, data) = match (id.min(2), ts) {
                    (0, 20) => (true, doc(0, false)),
                    (1, 30) => (false, doc(ts as i64, true)),
                    _ => (false, doc((id.min(2) * 100 + ts) as i64, false)),
                };
                let key = doc_key(1, COLL, &id.to_string());
                b.put(Space::Docs, &key, ts, &encode_doc(deleted, &data)).unwrap();
            }
        }
        b.commit(true).unwrap();
        store
    }

    #[derive(Clone, Debug)]
    enum Op {
        Get(u8, Ts),
        Live(u8, Ts),
        LiveToWrite(u8),
        Put(u8, bool, i64),
        Unput(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        let at = prop_oneof![Just(5u64), Just(10), Just(15), Just(20), Just(25), Just(30), Just(40)];
        prop_oneof![
            (0..4u8, at.clone()).prop_map(|(d, t)| Op::Get(d, t)),
            (0..4u8, at).prop_map(|(d, t)| Op::Live(d, t)),
            (0..4u8).prop_map(Op::LiveToWrite),
            (0..4u8, any::<bool>(), 0..3i64).prop_map(|(d, del, b)| Op::Put(d, del, b)),
            (0..4u8).prop_map(Op::Unput),
        ]
    }

    fn run(tx: &mut Tx<'_>, op: &Op) -> String {
        let out = match op {
            Op::Get(d, at) => format!("{:?}", tx.get_doc(1, COLL, &d.to_string(), *at)),
            Op::Live(d, at) => format!("{:?}", tx.live_doc(1, COLL, &d.to_string(), *at)),
            Op::LiveToWrite(d) => format!("{:?}", tx.live_doc_to_write(1, COLL, &d.to_string(), tx.ts)),
            Op::Put(d, deleted, b) => format!("{:?}", tx.put_doc(1, COLL, &d.to_string(), *deleted, &doc(*b, false))),
            Op::Unput(d) => {
                tx.unput(Space::Docs, &doc_key(1, COLL, &d.to_string()));
                String::new()
            }
        };
        format!("{out} read {} ttl {}", tx.bytes_read, tx.ttl_seen)
    }

    proptest! {
        /// Whatever a transaction reads and writes, each answer, charge and `ttl_seen` is
        /// the same with decodings kept as without.
        #[test]
        fn kept_decodings_change_no_answer(ops in proptest::collection::vec(op(), 1..40)) {
            let store = store();
            let snap = store.snapshot().unwrap();
            let mut plain = Tx::new(&*snap, 40);
            let mut kept = Tx::new(&*snap, 40);
            kept.keep_decoded = true;
            for op in &ops {
                prop_assert_eq!(run(&mut plain, op), run(&mut kept, op), "{:?}", op);
                prop_assert!(kept.decoded.len() <= DECODED_KEPT);
            }
            prop_assert!(plain.decoded.is_empty());
        }
    }

    /// A read and then a write of one document decode it once: the write takes the kept
    /// decoding, a second read of the same version uses it too.
    #[test]
    fn a_read_then_a_write_decodes_once() {
        let store = store();
        let snap = store.snapshot().unwrap();
        let mut tx = Tx::new(&*snap, 40);
        tx.keep_decoded = true;
        let first = tx.live_doc(1, COLL, "2", 40).unwrap();
        assert_eq!(tx.decoded.len(), 1);
        assert_eq!(tx.live_doc(1, COLL, "3", 40).unwrap(), first, "same bytes under another key");
        assert_eq!(tx.decoded.len(), 1, "found, not decoded again");
        assert_eq!(tx.live_doc_to_write(1, COLL, "2", 40).unwrap(), first);
        assert!(tx.decoded.is_empty(), "handed over to the write");
        for id in 0..4 {
            tx.get_doc(1, COLL, &id.to_string(), 10).unwrap();
        }
        assert_eq!(tx.decoded.len(), 3, "\"2\" and \"3\" share one decoding");
        tx.get_doc(1, COLL, "0", 30).unwrap();
        assert_eq!(tx.decoded.len(), DECODED_KEPT);
        tx.get_doc(1, COLL, "1", 20).unwrap();
        assert_eq!(tx.decoded.len(), DECODED_KEPT, "bounded");
        // The newest read is kept and the oldest ("0" at 10) went.
        assert!(tx.decoded.last().is_some_and(|(v, d)| v.ts == 20 && d.data["balance"] == Value::Long(120)));
        assert!(!tx.decoded.iter().any(|(v, d)| v.ts == 10 && d.data["balance"] == Value::Long(10)));
    }
}

#[cfg(test)]
mod write_set_tests {
    use std::collections::BTreeMap;

    use super::*;
    use proptest::prelude::*;
    use tally_storage::{MemStore, Store};

    const TS: Ts = 50;

    #[derive(Clone, Debug)]
    enum Op {
        Put(Space, Vec<u8>, u8),
        Unput(Space, Vec<u8>),
        Get(Space, Vec<u8>),
        Scan(Space, Vec<u8>, Option<Vec<u8>>, bool, usize),
    }

    fn space() -> impl Strategy<Value = Space> {
        prop_oneof![Just(Space::Docs), Just(Space::Index)]
    }

    /// Keys of one to three bytes out of three: short enough that puts, removals and
    /// scans keep meeting the same keys and prefixes.
    fn key() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(1u8..4, 1..4)
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (space(), key(), any::<u8>()).prop_map(|(s, k, v)| Op::Put(s, k, v)),
            1 => (space(), key()).prop_map(|(s, k)| Op::Unput(s, k)),
            2 => (space(), key()).prop_map(|(s, k)| Op::Get(s, k)),
            2 => (space(), proptest::collection::vec(1u8..4, 0..2), proptest::option::of(key()), any::<bool>(), 1usize..8)
                .prop_map(|(s, p, f, d, n)| Op::Scan(s, p, f, d, n)),
        ]
    }

    /// Values by (space, key).
    type Contents = BTreeMap<(Space, Vec<u8>), Vec<u8>>;

    /// Every key of length two stored at ts 10 with value `[0xEE]`, in both spaces.
    fn stored() -> (MemStore, Contents) {
        let store = MemStore::new();
        let mut b = store.begin().unwrap();
        let mut all = BTreeMap::new();
        for s in [Space::Docs, Space::Index] {
            for a in 1u8..4 {
                for c in 1u8..4 {
                    b.put(s, &[a, c], 10, &[0xEE]).unwrap();
                    all.insert((s, vec![a, c]), vec![0xEE]);
                }
            }
        }
        b.commit(true).unwrap();
        (store, all)
    }

    proptest! {
        /// A transaction's writes, read back point by point and through scans that merge
        /// them with the store, are what a sorted map of them gives, and leave in key order.
        #[test]
        fn the_write_set_reads_and_scans_like_a_sorted_map(ops in proptest::collection::vec(op(), 0..60)) {
            let (store, base) = stored();
            let snap = store.snapshot().unwrap();
            let mut tx = Tx::new(&*snap, TS);
            let mut mine = Contents::new();
            for op in ops {
                match op {
                    Op::Put(s, k, v) => {
                        tx.put(s, k.clone(), vec![v]).unwrap();
                        mine.insert((s, k), vec![v]);
                    }
                    Op::Unput(s, k) => {
                        tx.unput(s, &k);
                        mine.remove(&(s, k));
                    }
                    Op::Get(s, k) => {
                        let want = mine.get(&(s, k.clone())).map(|v| (TS, v.clone()))
                            .or_else(|| base.get(&(s, k.clone())).map(|v| (10, v.clone())));
                        let got = tx.get(s, &k, TS).unwrap().map(|v| (v.ts, v.value));
                        prop_assert_eq!(got, want);
                        prop_assert_eq!(tx.wrote(s, &k), mine.contains_key(&(s, k)));
                    }
                    Op::Scan(s, prefix, from, desc, limit) => {
                        let mut merged: BTreeMap<Vec<u8>, (Ts, Vec<u8>)> = BTreeMap::new();
                        for ((sp, k), v) in &base {
                            if *sp == s { merged.insert(k.clone(), (10, v.clone())); }
                        }
                        for ((sp, k), v) in &mine {
                            if *sp == s { merged.insert(k.clone(), (TS, v.clone())); }
                        }
                        let mut want: Vec<(Vec<u8>, Ts, Vec<u8>)> = merged
                            .into_iter()
                            .filter(|(k, _)| k.starts_with(&prefix))
                            .filter(|(k, _)| match &from {
                                None => true,
                                Some(f) if desc => k <= f,
                                Some(f) => k >= f,
                            })
                            .map(|(k, (ts, v))| (k, ts, v))
                            .collect();
                        if desc { want.reverse(); }
                        want.truncate(limit);
                        let got: Vec<(Vec<u8>, Ts, Vec<u8>)> = tx
                            .scan(s, &prefix, from.as_deref(), desc, TS, limit)
                            .unwrap()
                            .into_iter()
                            .map(|(k, v)| (k, v.ts, v.value))
                            .collect();
                        prop_assert_eq!(got, want);
                    }
                }
            }
            let out: Vec<(Space, Vec<u8>, Vec<u8>)> =
                tx.into_writes().into_iter().map(|w| (w.space, w.key, w.value.unwrap())).collect();
            let want: Vec<(Space, Vec<u8>, Vec<u8>)> = mine.into_iter().map(|((s, k), v)| (s, k, v)).collect();
            prop_assert_eq!(out, want);
        }
    }
}
