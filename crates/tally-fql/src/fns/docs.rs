//! Document reads and writes: `get exists create update replace delete`, plus the
//! index maintenance every write does in the same transaction.

use std::borrow::Cow;
use tally_value::{compare, Object, Ref, Value};

use crate::catalog::{IndexDef, IndexField, Target};
use crate::error::{code, invalid_argument, not_found, wrong_type, FqlError, Result};
use crate::eval::Eval;
use crate::expr::{Call, FnSpec};
use crate::limits::WriteKind;
use crate::model::{self, native, CollId, DbId, INTERNAL_ID};

pub(crate) static SPECS: &[FnSpec] = &[
    FnSpec { name: "get", optional: &["ts"], required: &[], handler: get },
    FnSpec { name: "exists", optional: &["ts"], required: &[], handler: exists },
    FnSpec { name: "create", optional: &["params"], required: &[], handler: create },
    FnSpec { name: "update", optional: &["params"], required: &[], handler: update },
    FnSpec { name: "replace", optional: &["params"], required: &[], handler: replace },
    FnSpec { name: "delete", optional: &[], required: &[], handler: delete },
    FnSpec { name: "insert", optional: &["params"], required: &["ts", "action"], handler: insert },
    FnSpec { name: "remove", optional: &[], required: &["ts", "action"], handler: remove },
];

/// Fields of documents that are stored but never shown.
const HIDDEN: &[&str] = model::HIDDEN_FIELDS;

/// Render a stored version as the document object clients see.
pub fn render(r: &Ref, ts: u64, data: &Object) -> Value {
    let mut o = Object::new();
    o.insert("ref".into(), Value::Ref(r.clone()));
    o.insert("ts".into(), Value::Long(ts as i64));
    for (k, v) in data {
        if !HIDDEN.contains(&k.as_str()) {
            o.insert(k.clone(), v.clone());
        }
    }
    Value::Object(o)
}

/// [`render`] of a version the caller owns: the same object, built from `data` itself
/// instead of a copy of every field (a stored field named `ref` or `ts` wins over the
/// version's own, as in [`render`], where it is inserted after them).
pub fn render_owned(r: &Ref, ts: u64, mut data: Object) -> Value {
    data.retain(|k, _| !HIDDEN.contains(&k.as_str()));
    if !data.contains_key("ref") {
        data.insert("ref".into(), Value::Ref(r.clone()));
    }
    if !data.contains_key("ts") {
        data.insert("ts".into(), Value::Long(ts as i64));
    }
    Value::Object(data)
}

fn ref_arg(ev: &mut Eval<'_>, call: &Call, key: &str) -> Result<Ref> {
    match ev.arg(call, key)? {
        Value::Ref(r) => Ok(r),
        other => Err(wrong_type("Ref", &other).at(call_key(call, key))),
    }
}

fn call_key(call: &Call, key: &str) -> &'static str {
    call.args.iter().find(|(k, _)| *k == key).map(|(k, _)| *k).unwrap_or(call.spec.name)
}

fn ts_arg(ev: &mut Eval<'_>, call: &Call) -> Result<Option<u64>> {
    match ev.opt_arg(call, "ts")? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Time(t)) => Ok(Some(t.timestamp_micros().max(0) as u64)),
        Some(Value::Long(n)) => Ok(Some(n.max(0) as u64)),
        Some(other) => Err(wrong_type("Time", &other).at("ts")),
    }
}

/// Read the live document `r` at the read ts: `(db, coll, id, version)`. Checks that the
/// query may read it (`permission denied` otherwise); a token may always read its own
/// identity through `Ref(coll, "self")`.
pub fn read_doc(ev: &mut Eval<'_>, r: &Ref) -> Result<Option<(DbId, CollId, String, model::DocVersion)>> {
    let own = crate::fns::identity::resolve_self(ev, r);
    let r = own.as_ref().unwrap_or(r);
    match ev.resolve(r)? {
        Target::Doc { db, coll, id } => {
            if own.is_none() && !ev.can_read(db, coll, r)? {
                return Err(crate::error::permission_denied());
            }
            let at = ev.read_ts();
            crate::retention::check_read(&mut ev.tx, db, &[coll], at)?;
            Ok(ev.tx.live_doc(db, coll, &id, at)?.map(|d| (db, coll, id, d)))
        }
        Target::NativeColl { .. } => Ok(None),
    }
}

/// Read the live document `r` without a permission check (login and identify check a
/// password instead).
pub fn read_doc_unchecked(ev: &mut Eval<'_>, r: &Ref) -> Result<Option<(DbId, CollId, String, model::DocVersion)>> {
    match ev.resolve(r)? {
        Target::Doc { db, coll, id } => {
            let at = ev.read_ts();
            crate::retention::check_read(&mut ev.tx, db, &[coll], at)?;
            Ok(ev.tx.live_doc(db, coll, &id, at)?.map(|d| (db, coll, id, d)))
        }
        Target::NativeColl { .. } => Ok(None),
    }
}

fn get(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let r = match ev.primary(call)? {
        Value::Ref(r) => r,
        Value::Set(s) => return first_of_set(ev, &Value::Set(s)),
        other => return Err(wrong_type("Ref or Set", &other).at("get")),
    };
    let ts = ts_arg(ev, call)?;
    let at = ts.unwrap_or_else(|| ev.read_ts());
    let found = ev.with_read_ts(at, |ev| read_doc(ev, &r))?;
    let r = crate::fns::identity::resolve_self(ev, &r).unwrap_or(r);
    match found {
        Some((_, _, _, d)) => Ok(render_owned(&r, d.ts, d.data)),
        None => Err(not_found("Document not found.")),
    }
}

fn exists(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let v = ev.primary(call)?;
    let ts = ts_arg(ev, call)?;
    let at = ts.unwrap_or_else(|| ev.read_ts());
    match v {
        Value::Ref(r) => {
            let found = ev.with_read_ts(at, |ev| match read_doc(ev, &r) {
                Ok(f) => Ok(f.is_some()),
                // v4: what the caller may not read does not exist for it.
                Err(e) if e.code == code::INVALID_REF || e.code == code::PERMISSION_DENIED => Ok(false),
                Err(e) => Err(e),
            })?;
            Ok(Value::Bool(found))
        }
        Value::Set(s) => {
            let first = ev.with_read_ts(at, |ev| first_of_set(ev, &Value::Set(s.clone())));
            match first {
                Ok(_) => Ok(Value::Bool(true)),
                Err(e) if e.code == code::INSTANCE_NOT_FOUND => Ok(Value::Bool(false)),
                Err(e) => Err(e),
            }
        }
        other => Err(wrong_type("Ref or Set", &other).at("exists")),
    }
}

/// Validate and pick the writable fields of a user document's params (taken, not copied:
/// the params are built for this one write).
fn user_fields(params: Object) -> Result<Object> {
    let mut out = Object::new();
    for (k, v) in params {
        match k.as_str() {
            "data" => match v {
                Value::Object(_) | Value::Null => {
                    out.insert(k, v);
                }
                other => {
                    return Err(validation(
                        "data",
                        "invalid type",
                        &format!("Object expected, {} provided.", other.type_name()),
                    ))
                }
            },
            "credentials" | "ttl" | "delegates" => {
                out.insert(k, v);
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Permission errors of writes point at the write function, as in v4.
pub fn at_if_denied(e: FqlError, key: &'static str) -> FqlError {
    if e.code == code::PERMISSION_DENIED && e.rev_position.is_empty() {
        e.at(key)
    } else {
        e
    }
}

pub fn validation(field: &str, fcode: &'static str, desc: &str) -> FqlError {
    let mut e = FqlError::new(code::VALIDATION_FAILED, "document data is not valid.");
    e.failures.push(crate::error::Failure {
        field: vec![field.to_string()],
        code: fcode,
        description: desc.to_string(),
    });
    e
}

fn params_arg(ev: &mut Eval<'_>, call: &Call) -> Result<Object> {
    match ev.opt_arg(call, "params")? {
        None | Some(Value::Null) => Ok(Object::new()),
        Some(Value::Object(o)) => Ok(o),
        Some(other) => Err(wrong_type("Object", &other).at("params")),
    }
}

fn create(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let unused = ev.result_unused();
    let r = ref_arg(ev, call, "create")?;
    let params = params_arg(ev, call)?;
    ev.require_write()?;
    // Create(Collection("x"), ...) makes a new document; Create(Ref(Collection("x"), id)) a given one;
    // Create on a native collection creates a schema document.
    if r.native_parent() == Some("collections") {
        let coll_ref = r.clone();
        let doc_ref = Ref::doc(coll_ref, ev.new_id().to_string());
        return create_doc_as(ev, &doc_ref, params, false, unused).map_err(|e| at_if_denied(e, "create"));
    }
    if r.is_native_collection() {
        return crate::fns::schema::create_native(ev, &r.id, params).map_err(|e| e.at("create"));
    }
    if r.user_collection_name().is_some() {
        if tally_value::numeric_id(&r.id).is_none() {
            return Err(invalid_argument("Document ids must be numbers (as strings) that fit in 64 bits.").at("create"));
        }
        return create_doc_as(ev, &r, params, true, unused).map_err(|e| {
            if e.code == code::INSTANCE_ALREADY_EXISTS || e.code == code::PERMISSION_DENIED {
                e.at("create")
            } else {
                e
            }
        });
    }
    Err(invalid_argument(format!("Cannot create {r}: pass a collection ref or a document ref.")).at("create"))
}

/// Create user document `r` (`with_id` when the caller chose the id).
pub fn create_doc(ev: &mut Eval<'_>, r: &Ref, params: Object, with_id: bool) -> Result<Value> {
    create_doc_as(ev, r, params, with_id, false)
}

/// [`create_doc`]; `unused`: the caller drops the value, so the document is not rendered
/// (null, charged as the document would be: `Eval::skipped_result`).
fn create_doc_as(ev: &mut Eval<'_>, r: &Ref, params: Object, with_id: bool, unused: bool) -> Result<Value> {
    let Target::Doc { db, coll, id } = ev.resolve(r)? else {
        return Err(invalid_argument("Document ref expected."));
    };
    let ts = ev.txn_ts();
    let ttl_given = params.contains_key("ttl");
    let mut fields = user_fields(params)?;
    ev.check_create(db, coll, r, &fields, with_id)?;
    let prior = ev.tx.get_doc(db, coll, &id, ts)?.filter(|d| !d.deleted);
    if prior.as_ref().is_some_and(|d| d.live_at(ts)) {
        return Err(FqlError::new(code::INSTANCE_ALREADY_EXISTS, "Document already exists."));
    }
    crate::fns::identity::hash_credentials(ev, r, &mut fields)?;
    crate::retention::apply_ttl_days(&mut ev.tx, db, coll, ttl_given, &mut fields)?;
    // A fresh id per incarnation: the document's generation as an identity.
    fields.insert(INTERNAL_ID.into(), Value::Long(ev.new_id() as i64));
    // A version past its `ttl` still has index entries (nothing was written when it
    // expired); the new document replaces them.
    write_doc(ev, db, coll, r, prior.as_ref().map(|d| &d.data), Some(&fields))?;
    Ok(written(ev, r, ts, fields, unused))
}

/// What a write answers: the document it wrote, or, when the caller drops the value
/// (`unused`, see `Eval::result_unused`), null charged as that document would be.
fn written(ev: &mut Eval<'_>, r: &Ref, ts: u64, data: Object, unused: bool) -> Value {
    if unused {
        return ev.skipped_result(crate::budget::rendered_sizes(r, &data, HIDDEN));
    }
    render_owned(r, ts, data)
}

/// Deep merge `patch` into `base`: objects merge recursively, `null` removes a field.
pub fn deep_merge(base: &mut Object, patch: &Object) {
    deep_merge_owned(base, patch.clone());
}

/// [`deep_merge`] of a patch the caller gives up: its values move into `base`.
fn deep_merge_owned(base: &mut Object, patch: Object) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                base.remove(&k);
            }
            Value::Object(p) => match base.get_mut(&k) {
                Some(Value::Object(b)) => deep_merge_owned(b, p),
                _ => {
                    let mut fresh = Object::new();
                    deep_merge_owned(&mut fresh, p);
                    base.insert(k, Value::Object(fresh));
                }
            },
            other => {
                base.insert(k, other);
            }
        }
    }
}

fn update(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    modify(ev, call, "update", false)
}

fn replace(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    modify(ev, call, "replace", true)
}

fn modify(ev: &mut Eval<'_>, call: &Call, key: &str, replace: bool) -> Result<Value> {
    let unused = ev.result_unused();
    let r = ref_arg(ev, call, key)?;
    let params = params_arg(ev, call)?;
    ev.require_write()?;
    let Target::Doc { db, coll, id } = ev.resolve(&r)? else {
        return Err(invalid_argument(format!("Cannot {key} {r}: it is not a document.")).at(call_key(call, key)));
    };
    let ts = ev.txn_ts();
    let Some(old) = ev.tx.live_doc_to_write(db, coll, &id, ts)? else {
        return Err(not_found("Document not found."));
    };
    let key = call_key(call, key);
    if coll < 1024 && native::name(coll).is_some() {
        return crate::fns::schema::modify_schema(ev, db, coll, &r, old.data, params, replace)
            .map_err(|e| at_if_denied(e, key));
    }
    let ttl_given = params.contains_key("ttl");
    let new = if replace {
        let mut base = Object::new();
        // Replace keeps what clients cannot see or set through `data`.
        for k in ["credentials", INTERNAL_ID] {
            if let Some(c) = old.data.get(k) {
                base.insert(k.into(), c.clone());
            }
        }
        let mut f = Object::new();
        let mut patch = user_fields(params)?;
        crate::fns::identity::hash_credentials(ev, &r, &mut patch)?;
        deep_merge_owned(&mut f, patch);
        for (k, v) in f {
            base.insert(k, v);
        }
        base
    } else {
        let mut base = old.data.clone();
        let mut patch = user_fields(params)?;
        crate::fns::identity::hash_credentials(ev, &r, &mut patch)?;
        deep_merge_owned(&mut base, patch);
        base
    };
    let mut new = new;
    crate::retention::apply_ttl_days(&mut ev.tx, db, coll, ttl_given, &mut new)?;
    ev.check_write(db, coll, &r, &old.data, &new).map_err(|e| at_if_denied(e, key))?;
    write_doc(ev, db, coll, &r, Some(&old.data), Some(&new))?;
    Ok(written(ev, &r, ts, new, unused))
}

fn delete(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let r = ref_arg(ev, call, "delete")?;
    ev.require_write()?;
    let Target::Doc { db, coll, id } = ev.resolve(&r)? else {
        return Err(invalid_argument(format!("Cannot delete {r}.")).at("delete"));
    };
    let ts = ev.txn_ts();
    let Some(old) = ev.tx.live_doc_to_write(db, coll, &id, ts)? else {
        return Err(not_found("Document not found."));
    };
    ev.check_delete(db, coll, &r).map_err(|e| at_if_denied(e, "delete"))?;
    if native::name(coll).is_some() {
        crate::fns::schema::delete_schema(ev, db, coll, &id, &old.data)?;
    } else {
        write_doc(ev, db, coll, &r, Some(&old.data), None)?;
        if old.data.contains_key("credentials") {
            crate::fns::identity::sync_credentials_doc(ev, &r, None)?;
        }
    }
    Ok(render(&r, old.ts, &old.data))
}

/// Write a new version of a document (None = deleted) and keep every index on its
/// collection in step.
pub fn write_doc(
    ev: &mut Eval<'_>,
    db: DbId,
    coll: CollId,
    r: &Ref,
    old: Option<&Object>,
    new: Option<&Object>,
) -> Result<()> {
    let ts = ev.txn_ts();
    let id = r.id.clone();
    if native::name(coll).is_none() && matches!(new.and_then(|d| d.get("ttl")), Some(Value::Time(_))) {
        mark_ttl(ev, db, coll)?;
    }
    match new {
        Some(d) => ev.tx.put_doc(db, coll, &id, false, d)?,
        None => ev.tx.put_doc(db, coll, &id, true, old.unwrap_or(&Object::new()))?,
    }
    if native::name(coll).is_some() && coll != native::KEYS && coll != native::TOKENS {
        // Schema documents are not indexed by user indexes.
        return Ok(());
    }
    let defs = ev.indexes_on(db, coll)?;
    for def in defs.iter() {
        if let (Some(o), Some(n)) = (old, new) {
            if same_index_fields(def, r, ts, o, n) {
                // Equal rows: the diff below would write nothing and read nothing.
                continue;
            }
        }
        let old_rows = match old {
            Some(o) => index_rows(ev, def, coll, r, ts, o)?,
            None => Vec::new(),
        };
        let new_rows = match new {
            Some(n) => index_rows(ev, def, coll, r, ts, n)?,
            None => Vec::new(),
        };
        apply_index_diff(ev, db, def, r, &old_rows, &new_rows)?;
    }
    Ok(())
}

/// Whether two versions of a document (same ref, same ts) give `def` the same rows: every
/// term and value is a path (a binding runs a lambda, so it is always recomputed) and
/// selects equal values from both. An update that leaves an index's fields alone then
/// skips building both versions' rows to find no difference.
fn same_index_fields(def: &IndexDef, r: &Ref, ts: u64, old: &Object, new: &Object) -> bool {
    def.terms.iter().chain(def.values.iter().map(|(f, _)| f)).all(|f| match f {
        IndexField::Path(p) => select_doc_path_ref(r, ts, old, p) == select_doc_path_ref(r, ts, new, p),
        IndexField::Binding(_) => false,
    })
}

/// Where the collections that ever held a document with a `ttl` are marked:
/// `REGISTRY_DB | TTL_MARKS | "db.coll"`. Index reads check their entries' documents for
/// an expired `ttl` only in marked collections, so indexes of collections without
/// `ttl`s cost nothing more (entries are not withdrawn when a `ttl` passes: nothing is
/// written then).
const TTL_MARKS: CollId = u64::MAX;

fn ttl_mark_id(db: DbId, coll: CollId) -> String {
    format!("{db}.{coll}")
}

/// Mark `coll` as holding documents with a `ttl` (once; deterministic).
pub fn mark_ttl(ev: &mut Eval<'_>, db: DbId, coll: CollId) -> Result<()> {
    let (id, ts) = (ttl_mark_id(db, coll), ev.txn_ts());
    if ev.tx.get_doc(crate::run::REGISTRY_DB, TTL_MARKS, &id, ts)?.is_none() {
        ev.tx.put_doc(crate::run::REGISTRY_DB, TTL_MARKS, &id, false, &Object::new())?;
    }
    Ok(())
}

/// Did any of `colls` (of `db`) hold a document with a `ttl` by `at`?
pub fn may_expire(ev: &mut Eval<'_>, db: DbId, colls: &[CollId], at: u64) -> Result<bool> {
    for &c in colls {
        if ev.tx.get_doc(crate::run::REGISTRY_DB, TTL_MARKS, &ttl_mark_id(db, c), at)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Is the document of index entry `r` (in `db`) past its `ttl` at `at`, or gone because
/// retention removed it for its `ttl` (`crate::retention`: its index entries stay)?
pub fn expired_entry(ev: &mut Eval<'_>, db: DbId, r: &Ref, at: u64) -> Result<bool> {
    let Some(coll) = r.user_collection_name() else { return Ok(false) };
    let Some(cid) = ev.collection_id(db, coll)? else { return Ok(false) };
    Ok(match ev.tx.get_doc(db, cid, &r.id, at)? {
        None => true,
        Some(d) => !d.deleted && d.expired_at(at),
    })
}

type Row = (Vec<Value>, Vec<Value>);

/// How an index entry write names itself when a limit refuses it.
fn entry_kind(def: &IndexDef) -> WriteKind<'_> {
    WriteKind::IndexEntry { index: &def.name }
}

/// Put one index entry (added or removed) at the transaction's ts. One transaction's
/// entries say its net change: when an earlier write of the same transaction already put
/// this entry (a document written twice, e.g. moved out of a set and back in) and the
/// entry as it stood before the transaction says the same as this one, the transaction's
/// write is withdrawn instead — a set's history never shows an add of a member that was
/// already in it, or a remove of one that was not.
fn put_entry(ev: &mut Eval<'_>, def: &IndexDef, key: Vec<u8>, added: bool, values: &[Value], r: &Ref) -> Result<()> {
    let value = model::encode_entry(added, values, r);
    let space = tally_storage::Space::Index;
    if ev.tx.wrote(space, &key) {
        let unchanged = match ev.tx.before_txn(space, &key)? {
            Some(v) => v.value == value,
            None => !added,
        };
        if unchanged {
            ev.tx.unput(space, &key);
            return Ok(());
        }
    }
    ev.tx.put_as(entry_kind(def), space, key, value)
}

/// Put add/remove entries for rows that changed, and enforce uniqueness.
pub fn apply_index_diff(ev: &mut Eval<'_>, db: DbId, def: &IndexDef, r: &Ref, old: &[Row], new: &[Row]) -> Result<()> {
    let rev = def.reverse_flags();
    for row in old {
        if !new.contains(row) {
            let key = model::index_key(db, def.id, &row.0, &row.1, &rev, r);
            put_entry(ev, def, key, false, &row.1, r)?;
        }
    }
    for row in new {
        if old.contains(row) {
            continue;
        }
        if def.unique {
            let mut prefix = model::index_prefix(db, def.id, &row.0);
            model::push_index_values(&mut prefix, &row.1, &rev);
            let at = ev.txn_ts();
            let clash = ev.tx.scan_index(&prefix, None, false, at, 2)?;
            if clash.iter().any(|e| &e.doc != r) {
                return Err(FqlError::new(
                    code::INSTANCE_NOT_UNIQUE,
                    format!(
                        "Document is not unique: index `{}` already has an entry with these terms and values.",
                        def.name
                    ),
                ));
            }
        }
        let key = model::index_key(db, def.id, &row.0, &row.1, &rev, r);
        put_entry(ev, def, key, true, &row.1, r)?;
    }
    Ok(())
}

/// The (terms, values) rows a document contributes to an index. Array-valued fields
/// expand into one row per element. A document missing a term is not indexed.
pub fn index_rows(
    ev: &mut Eval<'_>,
    def: &IndexDef,
    coll: CollId,
    r: &Ref,
    ts: u64,
    data: &Object,
) -> Result<Vec<Row>> {
    // The rendered document, built only for a binding: a path reads the stored fields
    // in place (`select_doc_path`), so a plain index copies no document.
    let mut doc: Option<Value> = None;
    let source = def.sources.iter().find(|s| s.coll == coll);
    let mut field_value = |ev: &mut Eval<'_>, f: &IndexField| -> Result<Vec<Value>> {
        let v = match f {
            IndexField::Path(p) => select_doc_path(r, ts, data, p),
            IndexField::Binding(name) => {
                let lam = source.and_then(|s| s.bindings.iter().find(|(n, _)| n == name)).map(|(_, l)| l.clone());
                match lam {
                    Some(l) => {
                        let d = doc.get_or_insert_with(|| render(r, ts, data)).clone();
                        ev.eval_binding(&l, d)?
                    }
                    None => None,
                }
            }
        };
        Ok(match v {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(items)) if !items.is_empty() => items,
            Some(Value::Array(_)) => vec![],
            Some(v) => vec![v],
        })
    };
    let mut terms: Vec<Vec<Value>> = vec![vec![]];
    for f in &def.terms {
        let mut vals = field_value(ev, f)?;
        if vals.is_empty() {
            vals.push(Value::Null);
        }
        terms = cross(terms, &vals);
    }
    let mut values: Vec<Vec<Value>> = vec![vec![]];
    for (f, _) in &def.values {
        let mut vals = field_value(ev, f)?;
        if vals.is_empty() {
            vals.push(Value::Null);
        }
        values = cross(values, &vals);
    }
    let mut rows = Vec::new();
    // As in v4, a document whose indexed fields are all null is left out: with terms,
    // when every term is null; without terms, when every value is null.
    let all_null = |xs: &[Value]| !xs.is_empty() && xs.iter().all(Value::is_null);
    for t in &terms {
        if all_null(t) {
            continue;
        }
        for v in &values {
            if def.terms.is_empty() && all_null(v) {
                continue;
            }
            let row = (t.clone(), v.clone());
            if !rows.contains(&row) {
                rows.push(row);
            }
        }
    }
    // Deterministic order regardless of how the fields expanded.
    rows.sort_by(|a, b| {
        compare(&Value::Array(a.0.clone()), &Value::Array(b.0.clone()))
            .then_with(|| compare(&Value::Array(a.1.clone()), &Value::Array(b.1.clone())))
    });
    Ok(rows)
}

const ROWS_PER_DOC_MAX: usize = 1024;

fn cross(acc: Vec<Vec<Value>>, vals: &[Value]) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    for a in acc {
        for v in vals {
            if out.len() >= ROWS_PER_DOC_MAX {
                return out;
            }
            let mut n = a.clone();
            n.push(v.clone());
            out.push(n);
        }
    }
    out
}

/// Follow a path of keys/indexes through objects, arrays and refs.
pub fn select_path(v: &Value, path: &[Value]) -> Option<Value> {
    select_path_ref(v, path).map(Cow::into_owned)
}

/// [`select_path`] without copying what is found when it lies inside `v` (a ref's
/// fields are not values until they are taken out of it: those are built).
fn select_path_ref<'v>(v: &'v Value, path: &[Value]) -> Option<Cow<'v, Value>> {
    let mut cur = v;
    for (i, seg) in path.iter().enumerate() {
        cur = match (seg, cur) {
            (Value::String(k), Value::Object(o)) => o.get(k)?,
            (Value::Long(n), Value::Array(a)) => a.get(usize::try_from(*n).ok()?)?,
            (Value::String(k), Value::Ref(r)) => {
                let field = match k.as_str() {
                    "id" => Value::String(r.id.to_string()),
                    "collection" | "class" => Value::Ref(Ref::clone(r.collection.as_deref()?)),
                    "database" => Value::Ref(Ref::clone(r.database.as_deref()?)),
                    _ => return None,
                };
                // A ref's nesting is shallow, and so is this recursion.
                return select_path(&field, &path[i + 1..]).map(Cow::Owned);
            }
            _ => return None,
        };
    }
    Some(Cow::Borrowed(cur))
}

/// `select_path(&render(r, ts, data), path)` without rendering the document.
pub fn select_doc_path(r: &Ref, ts: u64, data: &Object, path: &[Value]) -> Option<Value> {
    select_doc_path_ref(r, ts, data, path).map(Cow::into_owned)
}

/// [`select_doc_path`] without copying a stored field it finds.
fn select_doc_path_ref<'d>(r: &Ref, ts: u64, data: &'d Object, path: &[Value]) -> Option<Cow<'d, Value>> {
    let Some((Value::String(k), rest)) = path.split_first() else {
        // The whole document, or a segment a document object has nothing under.
        return if path.is_empty() { Some(Cow::Owned(render(r, ts, data))) } else { None };
    };
    // What `render` puts under `k`: a shown stored field, else the ref or the ts.
    match data.get(k).filter(|_| !HIDDEN.contains(&k.as_str())) {
        Some(v) => select_path_ref(v, rest),
        None => match k.as_str() {
            "ref" => select_path(&Value::Ref(r.clone()), rest).map(Cow::Owned),
            "ts" => select_path(&Value::Long(ts as i64), rest).map(Cow::Owned),
            _ => None,
        },
    }
}

/// `Get(set)`: the document of the set's first element (which must be a ref).
pub fn first_of_set(ev: &mut Eval<'_>, set: &Value) -> Result<Value> {
    let mut it = crate::fns::sets::iter(ev, set)?;
    match it.next(ev)? {
        Some(Value::Ref(r)) => match read_doc(ev, &r)? {
            Some((_, _, _, d)) => Ok(render_owned(&r, d.ts, d.data)),
            None => Err(not_found("Set not found.")),
        },
        Some(other) => Err(invalid_argument(format!(
            "The set's first element is {}, not a document ref; add the ref to the index values.",
            other.type_name()
        ))),
        None => Err(not_found("Set not found.")),
    }
}

/// The `action` of `Insert`/`Remove`: "create", "update" or "delete".
fn action_arg(ev: &mut Eval<'_>, call: &Call) -> Result<&'static str> {
    match ev.arg(call, "action")? {
        Value::String(a) if a == "create" => Ok("create"),
        Value::String(a) if a == "update" => Ok("update"),
        Value::String(a) if a == "delete" => Ok("delete"),
        other => Err(invalid_argument(format!(
            "Action must be \"create\", \"update\" or \"delete\", not {}.",
            tally_value::to_json_string(&other)
        ))
        .at("action")),
    }
}

fn hist_ts(ev: &mut Eval<'_>, call: &Call) -> Result<u64> {
    match ev.arg(call, "ts")? {
        Value::Long(n) if n >= 0 => Ok(n as u64),
        Value::Time(t) if t.timestamp_micros() >= 0 => Ok(t.timestamp_micros() as u64),
        other => Err(wrong_type("Time or Integer", &other).at("ts")),
    }
}

/// The version of a document just before `ts` (exclusive), live or not.
fn version_before(ev: &mut Eval<'_>, db: DbId, coll: CollId, id: &str, ts: u64) -> Result<Option<model::DocVersion>> {
    if ts == 0 {
        return Ok(None);
    }
    ev.tx.get_doc(db, coll, id, ts - 1)
}

/// History edits of schema and security documents (collections, indexes, databases,
/// keys, functions, roles, tokens, credentials, access providers) are refused: such an
/// edit changes what a role, key, token or function grants without the checks a direct
/// write gets (role escalation, validation, cascades, the database registry), e.g.
/// removing the update that narrowed an admin function's role would restore it. v4's
/// own history edits were meant for user data; refusing is the safe reading.
fn refuse_schema_history(coll: CollId, what: &'static str) -> Result<()> {
    match native::name(coll) {
        Some(kind) => Err(invalid_argument(format!(
            "History of {kind} documents cannot be edited: they are schema and security documents. \
             Update, Replace or Delete the document instead."
        ))
        .at(what)),
        None => Ok(()),
    }
}

/// A version's index rows (none for a deletion or nothing).
fn rows_of(
    ev: &mut Eval<'_>,
    def: &IndexDef,
    coll: CollId,
    r: &Ref,
    v: Option<&model::DocVersion>,
) -> Result<Vec<Row>> {
    match v {
        Some(v) if !v.deleted => index_rows(ev, def, coll, r, v.ts, &v.data),
        _ => Ok(Vec::new()),
    }
}

/// The entries a version with rows `cur` writes after one with rows `prev`: the rows it
/// leaves (removed) and the rows it enters (added).
fn entries_between(prev: &[Row], cur: &[Row]) -> Vec<(Row, bool)> {
    let mut out: Vec<(Row, bool)> = prev.iter().filter(|x| !cur.contains(x)).map(|x| (x.clone(), false)).collect();
    out.extend(cur.iter().filter(|x| !prev.contains(x)).map(|x| (x.clone(), true)));
    out
}

/// Make the entries of `def` for document `r` at `ts` go from `old` to `new` (history
/// edits): entries no longer written are removed, new or changed ones put.
fn rewrite_entries(
    ev: &mut Eval<'_>,
    db: DbId,
    def: &IndexDef,
    r: &Ref,
    ts: u64,
    old: &[(Row, bool)],
    new: &[(Row, bool)],
) -> Result<()> {
    let rev = def.reverse_flags();
    for (row, _) in old.iter().filter(|(row, _)| !new.iter().any(|(n, _)| n == row)) {
        let k = model::index_key(db, def.id, &row.0, &row.1, &rev, r);
        ev.tx.edit_history(entry_kind(def), tally_storage::Space::Index, k, ts, None)?;
    }
    for (row, added) in new.iter().filter(|e| !old.contains(e)) {
        let k = model::index_key(db, def.id, &row.0, &row.1, &rev, r);
        let entry = Some(model::encode_entry(*added, &row.1, r));
        ev.tx.edit_history(entry_kind(def), tally_storage::Space::Index, k, ts, entry)?;
    }
    Ok(())
}

/// A history edit at `ts` changes which version the next one (the first after `ts`,
/// before this transaction) follows, from `was` to `now`: rewrite that version's index
/// entries so the index says at every ts what the document's history says (v4 revises
/// the next version the same way, which its set streams show as `set` events).
#[allow(clippy::too_many_arguments)]
fn revise_next(
    ev: &mut Eval<'_>,
    db: DbId,
    coll: CollId,
    id: &str,
    r: &Ref,
    ts: u64,
    was: Option<&model::DocVersion>,
    now: Option<&model::DocVersion>,
) -> Result<()> {
    let key = model::doc_key(db, coll, id);
    // Versions this transaction writes at its own ts index themselves against what
    // they read; only earlier history is revised.
    let hi = ev.tx.ts.saturating_sub(1);
    if ts >= hi {
        return Ok(());
    }
    let Some(next) = ev.tx.history(tally_storage::Space::Docs, &key, ts + 1, hi, false, 1)?.into_iter().next() else {
        return Ok(());
    };
    let next = model::decode_doc(&next)?;
    for def in ev.indexes_on(db, coll)?.iter() {
        let rows_next = rows_of(ev, def, coll, r, Some(&next))?;
        let old = entries_between(&rows_of(ev, def, coll, r, was)?, &rows_next);
        let new = entries_between(&rows_of(ev, def, coll, r, now)?, &rows_next);
        rewrite_entries(ev, db, def, r, next.ts, &old, &new)?;
    }
    Ok(())
}

/// `Insert(ref, ts, action, params)`: add an event to a document's history.
fn insert(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let r = ref_arg(ev, call, "insert")?;
    let ts = hist_ts(ev, call)?;
    let action = action_arg(ev, call)?;
    let deleted = action == "delete";
    let params = params_arg(ev, call)?;
    ev.require_write()?;
    let Target::Doc { db, coll, id } = ev.resolve(&r)? else {
        return Err(invalid_argument("Insert needs a document ref.").at("insert"));
    };
    refuse_schema_history(coll, "insert")?;
    let mut data = user_fields(params)?;
    if data.get("credentials").is_some_and(|c| !c.is_null()) {
        // A password goes through `Create`/`Update`/`Replace` (hashed, kept out of the
        // log); an inserted version would hold it as written.
        return Err(
            invalid_argument("Insert cannot set credentials; Update the document's credentials instead.").at("params")
        );
    }
    ev.check_history_write(db, coll, &r, ts, action, &data).map_err(|e| at_if_denied(e, "insert"))?;
    if !deleted {
        // An inserted version continues the incarnation live just before it, or starts
        // a new one (a new identity: tokens of an earlier one stay dead).
        let prev_gen = version_before(ev, db, coll, &id, ts)?
            .filter(|d| !d.deleted)
            .and_then(|d| crate::catalog::internal_id(&d.data));
        let gen = match prev_gen {
            Some(g) => g,
            None => ev.new_id(),
        };
        data.insert(INTERNAL_ID.into(), Value::Long(gen as i64));
    }
    if matches!(data.get("ttl"), Some(Value::Time(_))) {
        mark_ttl(ev, db, coll)?;
    }
    let key = model::doc_key(db, coll, &id);
    let kind = WriteKind::Doc { named: native::is_named(coll) };
    // The version after the inserted one now follows it: its index entries are revised
    // (history edits are not visible to this transaction's reads, so this is the
    // history as it was).
    let before = version_before(ev, db, coll, &id, ts)?;
    let existing = ev.tx.get_doc(db, coll, &id, ts)?.filter(|v| v.ts == ts);
    let inserted = model::DocVersion { ts, deleted, data: data.clone() };
    revise_next(ev, db, coll, &id, &r, ts, existing.as_ref().or(before.as_ref()), Some(&inserted))?;
    ev.tx.edit_history(kind, tally_storage::Space::Docs, key, ts, Some(model::encode_doc(deleted, &data)))?;
    // Index entries at `ts`, relative to the version before it (replacing those of a
    // version this one overwrites).
    for def in ev.indexes_on(db, coll)?.iter() {
        let rows_before = rows_of(ev, def, coll, &r, before.as_ref())?;
        let old = match &existing {
            Some(x) => entries_between(&rows_before, &rows_of(ev, def, coll, &r, Some(x))?),
            None => Vec::new(),
        };
        let new = entries_between(&rows_before, &rows_of(ev, def, coll, &r, Some(&inserted))?);
        rewrite_entries(ev, db, def, &r, ts, &old, &new)?;
    }
    let mut o = Object::new();
    o.insert("ts".into(), Value::Long(ts as i64));
    o.insert("action".into(), Value::String(if deleted { "delete" } else { "create" }.into()));
    o.insert("document".into(), Value::Ref(r));
    o.insert("data".into(), data.get("data").cloned().unwrap_or(Value::Null));
    Ok(Value::Object(o))
}

/// `Remove(ref, ts, action)`: delete one event from a document's history.
fn remove(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let r = ref_arg(ev, call, "remove")?;
    let ts = hist_ts(ev, call)?;
    let action = action_arg(ev, call)?;
    ev.require_write()?;
    let Target::Doc { db, coll, id } = ev.resolve(&r)? else {
        return Err(invalid_argument("Remove needs a document ref.").at("remove"));
    };
    refuse_schema_history(coll, "remove")?;
    ev.check_history_write(db, coll, &r, ts, action, &Object::new()).map_err(|e| at_if_denied(e, "remove"))?;
    let Some(version) = ev.tx.get_doc(db, coll, &id, ts)?.filter(|v| v.ts == ts) else {
        return Ok(Value::Null);
    };
    let kind = WriteKind::Doc { named: native::is_named(coll) };
    // The version after the removed one now follows the one before it.
    let before = version_before(ev, db, coll, &id, ts)?;
    revise_next(ev, db, coll, &id, &r, ts, Some(&version), before.as_ref())?;
    ev.tx.edit_history(kind, tally_storage::Space::Docs, model::doc_key(db, coll, &id), ts, None)?;
    // Undo the index entries that version wrote at `ts`.
    for def in ev.indexes_on(db, coll)?.iter() {
        let rows_before = rows_of(ev, def, coll, &r, before.as_ref())?;
        let old = entries_between(&rows_before, &rows_of(ev, def, coll, &r, Some(&version))?);
        rewrite_entries(ev, db, def, &r, ts, &old, &[])?;
    }
    Ok(Value::Null)
}
