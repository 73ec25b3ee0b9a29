//! Event sets: the history of a document or of a set, as FQL v4 pages it.
//!
//! * `Events(ref)`: one event per version of the document, oldest first:
//!   `{ts, action: "create"|"update"|"delete", document, data}`. `data` is what the
//!   version changed in the document's `data` (all of it for a create, the diff against
//!   the previous version for an update: changed and added fields, removed ones as
//!   `null`), and `null` for a delete.
//! * `Events(set)`: one event per element entering or leaving the set:
//!   `{ts, action: "add"|"remove", document, data?}`, `data` being the index values
//!   (absent when the set has none). Index sets read the versions of their entries;
//!   `Singleton(ref)` and `Documents(coll)` read document versions (a create adds, a
//!   delete removes, updates do not show).
//! * Unions of event sets merge, `Distinct` passes events through; range, reverse,
//!   filter, join, intersection and difference have no history ("Set does not support
//!   events history.", as v4 answers).
//!
//! Events are ordered as v4's historical order: by ts, then action (add, create,
//! update, delete, remove), then document, then values. The engine's byte key for an
//! event is `ts (u64 BE) | action | encoded ref | encoded [values]`, so cursors and
//! unions work on bytes like every other set.
//!
//! Cursors are events without their `data` (document events) or with it (set events,
//! where the values order entries of one document): `{ts, action, document}`. A cursor
//! may also be a bare ts (Integer micros, Time or Date): it points before every event at
//! that ts. A cursor object without `document` points after every event of its ts and
//! action; without `action` it means "add" (the first action).
//!
//! A set's whole history is read to page it (bounded by the set-size limit): there is
//! no time-ordered index to seek in.

use std::collections::VecDeque;
use std::sync::Arc;

use tally_storage::Space;
use tally_value::{encode_into, Object, Ref, Value};

use super::{
    normalize_terms, set, set_list, tick, too_large, Bounds, BoxStream, Ctx, Distinct, Elem, StaticLeaf, Union,
    MATERIALIZE_MAX,
};
use crate::catalog::Target;
use crate::error::{code, invalid_argument, wrong_type, FqlError, Result};
use crate::eval::Eval;
use crate::model::{self, native, CollId, DbId, SCAN_CHUNK};
use crate::perm::ReadFilter;

/// Event actions, in v4's historical order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Add = 0,
    Create = 1,
    Update = 2,
    Delete = 3,
    Remove = 4,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Add => "add",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Remove => "remove",
        }
    }

    fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "add" => Action::Add,
            "create" => Action::Create,
            "update" => Action::Update,
            "delete" => Action::Delete,
            "remove" => Action::Remove,
            _ => return None,
        })
    }
}

/// Where a cursor's document falls among the documents of one ts and action.
enum DocBound<'a> {
    /// Before every document (a bare-ts cursor).
    Min,
    At(&'a Ref, Option<&'a [Value]>),
    /// After every document (a cursor object without `document`).
    Max,
}

fn key(ts: u64, action: Action, doc: DocBound<'_>) -> Vec<u8> {
    let mut k = Vec::with_capacity(48);
    k.extend_from_slice(&ts.to_be_bytes());
    k.push(action as u8);
    match doc {
        DocBound::Min => {}
        // Encoded values start with a type tag below 0xFF.
        DocBound::Max => k.push(0xFF),
        DocBound::At(r, values) => {
            encode_into(&mut k, &Value::Ref(r.clone()));
            if let Some(v) = values {
                encode_into(&mut k, &Value::Array(v.to_vec()));
            }
        }
    }
    k
}

/// One event of a document or set.
struct Event {
    ts: u64,
    action: Action,
    doc: Ref,
    kind: Kind,
}

enum Kind {
    /// A document event and the data it carries.
    Doc(Value),
    /// A set event and the index values of its entry (empty: none shown).
    Set(Vec<Value>),
}

impl Event {
    fn key(&self) -> Vec<u8> {
        let values = match &self.kind {
            Kind::Doc(_) => None,
            Kind::Set(v) => Some(v.as_slice()),
        };
        key(self.ts, self.action, DocBound::At(&self.doc, values))
    }

    fn head(&self) -> Object {
        let mut o = Object::new();
        o.insert("ts".into(), Value::Long(self.ts as i64));
        o.insert("action".into(), Value::String(self.action.name().into()));
        o.insert("document".into(), Value::Ref(self.doc.clone()));
        o
    }

    /// The cursor pointing at this event.
    fn cursor(&self) -> Value {
        let mut o = self.head();
        if let Kind::Set(v) = &self.kind {
            if !v.is_empty() {
                o.insert("data".into(), Value::Array(v.clone()));
            }
        }
        Value::Object(o)
    }

    /// The event as `Paginate` shows it.
    fn render(self) -> Value {
        let mut o = self.head();
        match self.kind {
            Kind::Doc(data) => {
                o.insert("data".into(), data);
            }
            Kind::Set(v) => {
                if !v.is_empty() {
                    o.insert("data".into(), Value::Array(v));
                }
            }
        }
        Value::Object(o)
    }
}

// ---------------------------------------------------------------------------------------
// Cursors
// ---------------------------------------------------------------------------------------

fn micros(v: &Value) -> Option<u64> {
    match v {
        Value::Long(n) if *n >= 0 => Some(*n as u64),
        Value::Time(t) => u64::try_from(t.timestamp_micros()).ok(),
        Value::Date(d) => d.and_hms_opt(0, 0, 0).and_then(|t| u64::try_from(t.and_utc().timestamp_micros()).ok()),
        _ => None,
    }
}

const CURSOR_KEYS: &[&str] = &["ts", "action", "document", "instance", "resource", "data", "values"];

fn bad_cursor(what: impl Into<String>) -> FqlError {
    invalid_argument(what)
}

/// The byte key an event cursor points at.
fn cursor_key(tuple: &[Value]) -> Result<Vec<u8>> {
    let v = match tuple {
        [v] => v,
        _ => {
            return Err(bad_cursor(
                "Event cursor expected: a timestamp or an object with `ts`, `action` and `document`.",
            ))
        }
    };
    match v {
        Value::Null => Ok(key(u64::MAX, Action::Add, DocBound::Min)),
        Value::Object(o) => {
            if let Some(k) = o.keys().find(|k| !CURSOR_KEYS.contains(&k.as_str())) {
                return Err(bad_cursor(format!(
                    "Invalid event cursor: unexpected field `{k}`; use `ts`, `action`, `document` and `data`."
                )));
            }
            let ts = match o.get("ts") {
                Some(t) => micros(t).ok_or_else(|| wrong_type("Integer", t).at("ts"))?,
                None => return Err(bad_cursor("Invalid event cursor: `ts` is required.")),
            };
            let action = match o.get("action") {
                None => Action::Add,
                Some(Value::String(a)) => Action::parse(a).ok_or_else(|| {
                    bad_cursor(format!("Invalid event action {a:?}; use add, create, update, delete or remove."))
                        .at("action")
                })?,
                Some(other) => return Err(wrong_type("String", other).at("action")),
            };
            let doc = o.get("document").or_else(|| o.get("instance")).or_else(|| o.get("resource"));
            let values = match o.get("data").or_else(|| o.get("values")) {
                None | Some(Value::Null) => None,
                Some(Value::Array(v)) => Some(v.as_slice()),
                // Document events carry their data, which does not order them.
                Some(_) => None,
            };
            Ok(match doc {
                None | Some(Value::Null) => key(ts, action, DocBound::Max),
                Some(Value::Ref(r)) => key(ts, action, DocBound::At(r, values)),
                Some(other) => return Err(wrong_type("Ref", other).at("document")),
            })
        }
        other => match micros(other) {
            Some(ts) => Ok(key(ts, Action::Add, DocBound::Min)),
            None => Err(wrong_type("Integer, Time, Date or Object", other)),
        },
    }
}

/// A cursor handed back in a page (`before`/`after` echoing the request's): bare
/// timestamps become `{ts}`, objects stay as given.
pub(super) fn echo_cursor(v: &Value) -> Result<Value> {
    match v {
        Value::Object(_) | Value::Null => Ok(v.clone()),
        Value::Array(items) if items.len() == 1 => echo_cursor(&items[0]),
        other => match micros(other) {
            Some(ts) => Ok(Value::object([("ts", Value::Long(ts as i64))])),
            None => Err(wrong_type("Integer, Time, Date or Object", other)),
        },
    }
}

// ---------------------------------------------------------------------------------------
// Reading history
// ---------------------------------------------------------------------------------------

/// What `data` changed from `old` to `new`: changed and added fields, nested objects
/// diffed field by field, removed fields as `null` (v4's version diff).
fn diff(old: &Object, new: &Object) -> Object {
    let mut out = Object::new();
    for (k, nv) in new {
        match (old.get(k), nv) {
            (Some(Value::Object(o)), Value::Object(n)) => {
                let d = diff(o, n);
                if !d.is_empty() {
                    out.insert(k.clone(), Value::Object(d));
                }
            }
            (Some(ov), nv) if ov == nv => {}
            _ => {
                out.insert(k.clone(), nv.clone());
            }
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            out.insert(k.clone(), Value::Null);
        }
    }
    out
}

fn data_of(o: &Object) -> Object {
    match o.get("data") {
        Some(Value::Object(d)) => d.clone(),
        _ => Object::new(),
    }
}

/// The versions of one document at or before the read ts, oldest first, each with its
/// action: a live version after nothing or a deletion creates, after a live one updates.
fn doc_versions(ev: &mut Eval<'_>, db: DbId, coll: CollId, id: &str) -> Result<Vec<(Action, model::DocVersion)>> {
    let key = model::doc_key(db, coll, id);
    let at = ev.read_ts();
    crate::retention::check_read(&mut ev.tx, db, &[coll], at)?;
    let floor = crate::retention::floor(&mut ev.tx, db, coll)?;
    let versions = ev.tx.history(Space::Docs, &key, 0, at, false, MATERIALIZE_MAX + 1)?;
    if versions.len() > MATERIALIZE_MAX {
        return Err(too_large());
    }
    let mut decoded = Vec::with_capacity(versions.len());
    for v in &versions {
        tick(ev)?;
        decoded.push(model::decode_doc(v)?);
    }
    // History starts at the collection's retention floor (what removal keeps).
    let decoded = crate::retention::retained_history(decoded, floor);
    let mut out: Vec<(Action, model::DocVersion)> = Vec::with_capacity(decoded.len());
    for d in decoded {
        let live_before = out.last().is_some_and(|(_, p)| !p.deleted);
        let action = match (d.deleted, live_before) {
            (true, _) => Action::Delete,
            (false, true) => Action::Update,
            (false, false) => Action::Create,
        };
        out.push((action, d));
    }
    Ok(out)
}

/// `Events(ref)`: create/update/delete events with their data.
fn doc_events(ev: &mut Eval<'_>, db: DbId, coll: CollId, id: &str, r: &Ref, out: &mut Vec<Event>) -> Result<()> {
    let versions = doc_versions(ev, db, coll, id)?;
    let mut prev: Option<Object> = None;
    for (action, d) in versions {
        let data = match action {
            Action::Delete => Value::Null,
            Action::Update => {
                let ch = diff(&data_of(prev.as_ref().unwrap_or(&Object::new())), &data_of(&d.data));
                if ch.is_empty() {
                    Value::Null
                } else {
                    Value::Object(ch)
                }
            }
            _ => d.data.get("data").cloned().unwrap_or(Value::Null),
        };
        out.push(Event { ts: d.ts, action, doc: r.clone(), kind: Kind::Doc(data) });
        prev = Some(d.data);
    }
    Ok(())
}

/// A document entering (create) and leaving (delete) a set.
fn membership_events(ev: &mut Eval<'_>, db: DbId, coll: CollId, id: &str, r: &Ref, out: &mut Vec<Event>) -> Result<()> {
    for (action, d) in doc_versions(ev, db, coll, id)? {
        let action = match action {
            Action::Create => Action::Add,
            Action::Delete => Action::Remove,
            _ => continue,
        };
        out.push(Event { ts: d.ts, action, doc: r.clone(), kind: Kind::Set(Vec::new()) });
    }
    Ok(())
}

/// Every key under `prefix` that has a version at or before the read ts.
fn keys_under(ev: &mut Eval<'_>, space: Space, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
    let at = ev.read_ts();
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut from: Option<Vec<u8>> = None;
    loop {
        let page = ev.tx.scan(space, prefix, from.as_deref(), false, at, SCAN_CHUNK + 1)?;
        let n = page.len();
        let mut last = None;
        for (k, _) in page {
            if from.as_ref() == Some(&k) {
                continue;
            }
            tick(ev)?;
            if keys.len() >= MATERIALIZE_MAX {
                return Err(too_large());
            }
            keys.push(k.clone());
            last = Some(k);
        }
        match last {
            Some(l) if n > SCAN_CHUNK => from = Some(l),
            _ => break,
        }
    }
    Ok(keys)
}

/// The documents of a collection entering and leaving it.
fn collection_events(
    ev: &mut Eval<'_>,
    db: DbId,
    coll: CollId,
    parent: &Ref,
    database: Option<Arc<Ref>>,
    out: &mut Vec<Event>,
) -> Result<()> {
    let filter = if native::name(coll).is_some() { ev.native_set_filter(db, coll)? } else { ev.docs_filter(db, coll)? };
    if filter == ReadFilter::Nothing {
        return Ok(());
    }
    for k in keys_under(ev, Space::Docs, &model::doc_prefix(db, coll))? {
        let id = model::id_from_doc_key(&k)?;
        let mut r = Ref::doc(parent.clone(), id.clone());
        r.database = database.clone();
        if filter == ReadFilter::PerDoc && !ev.can_read(db, coll, &r)? {
            continue;
        }
        membership_events(ev, db, coll, &id, &r, out)?;
        if out.len() > MATERIALIZE_MAX {
            return Err(too_large());
        }
    }
    Ok(())
}

/// The add/remove versions of an index's entries under `terms`.
fn index_events(ev: &mut Eval<'_>, index: &Ref, terms: Option<&Value>, out: &mut Vec<Event>) -> Result<()> {
    let (db, def) = ev.index_def(index)?;
    let terms = normalize_terms(def.terms.len(), terms);
    let filter = ev.index_filter(db, &def, &Value::Array(terms.clone()))?;
    if terms.len() != def.terms.len() || filter == ReadFilter::Nothing {
        return Ok(());
    }
    let has_values = !def.values.is_empty();
    let at = ev.read_ts();
    let colls: Vec<CollId> = def.sources.iter().map(|s| s.coll).collect();
    crate::retention::check_read(&mut ev.tx, db, &colls, at)?;
    let mut floor: Option<u64> = None;
    for &c in &colls {
        floor = floor.max(crate::retention::floor(&mut ev.tx, db, c)?);
    }
    for k in keys_under(ev, Space::Index, &model::index_prefix(db, def.id, &terms))? {
        let versions = ev.tx.history(Space::Index, &k, 0, at, false, MATERIALIZE_MAX + 1)?;
        // Of the versions at or before the floor only the newest is shown, if an add.
        let edge = floor.map_or(0, |f| versions.partition_point(|v| v.ts <= f));
        for (i, v) in versions.into_iter().enumerate() {
            tick(ev)?;
            let e = model::decode_entry(k.clone(), &v)?;
            if i + 1 < edge || (i + 1 == edge && !(e.added && live_at_floor(ev, db, &e.doc, floor)?)) {
                continue;
            }
            // v4 leaves documents whose covered values are all null out of the index.
            if has_values && e.values.iter().all(|x| x.is_null()) {
                continue;
            }
            if filter == ReadFilter::PerDoc && !ev.can_read_ref(&e.doc)? {
                continue;
            }
            let action = if e.added { Action::Add } else { Action::Remove };
            let values = if has_values { e.values } else { Vec::new() };
            out.push(Event { ts: e.ts, action, doc: e.doc, kind: Kind::Set(values) });
        }
        if out.len() > MATERIALIZE_MAX {
            return Err(too_large());
        }
    }
    Ok(())
}

/// Is the document of an index entry live at the retention floor `f` (the entry of one
/// removed or expired there is not shown at the floor, as retention removes it)?
fn live_at_floor(ev: &mut Eval<'_>, db: DbId, r: &Ref, f: Option<u64>) -> Result<bool> {
    let (Some(f), Some(coll)) = (f, r.user_collection_name()) else { return Ok(true) };
    let Some(cid) = ev.collection_id(db, coll)? else { return Ok(true) };
    Ok(ev.tx.get_doc(db, cid, &r.id, f)?.is_some_and(|d| d.live_at(f)))
}

/// A stream over the events of `x` (the argument of `Events`); `whole` is the event set
/// itself, reported as the events' source.
pub(super) fn open(ev: &mut Eval<'_>, x: &Value, whole: &Value, ctx: &Ctx) -> Result<BoxStream> {
    if !ctx.ranges.is_empty() {
        return Err(super::no_history());
    }
    let mut events = Vec::new();
    match x {
        Value::Ref(r) if r.is_native_collection() => match ev.resolve(r)? {
            Target::NativeColl { db, coll } => {
                let parent = Ref::native(native::name(coll).unwrap_or("collections"));
                collection_events(ev, db, coll, &parent, r.database.clone(), &mut events)?;
            }
            Target::Doc { .. } => return Err(super::no_history()),
        },
        Value::Ref(r) => match ev.resolve(r)? {
            Target::Doc { db, coll, id } => {
                if !ev.can_read_history(db, coll, r)? {
                    return Err(crate::error::permission_denied());
                }
                doc_events(ev, db, coll, &id, r, &mut events)?;
            }
            Target::NativeColl { .. } => return Err(super::no_history()),
        },
        Value::Set(d) => {
            let Some(o) = d.as_object() else { return Err(wrong_type("Set", x)) };
            if let Some(idx) = o.get("match") {
                let Value::Ref(idx) = idx else { return Err(wrong_type("Index Ref", idx)) };
                index_events(ev, idx, o.get("terms"), &mut events)?;
            } else if let Some(c) = o.get("documents") {
                let Value::Ref(cr) = c else { return Err(wrong_type("Collection Ref", c)) };
                match ev.resolve(cr)? {
                    Target::Doc { db, coll: native::COLLECTIONS, id } => {
                        let coll = ev.collection_id(db, &id)?.ok_or_else(|| {
                            FqlError::new(code::INVALID_REF, format!("Collection `{id}` does not exist."))
                        })?;
                        collection_events(ev, db, coll, cr, None, &mut events)?;
                    }
                    _ => return Err(invalid_argument(format!("Collection Ref expected, {cr} provided."))),
                }
            } else if let Some(r) = o.get("singleton") {
                let Value::Ref(r) = r else { return Err(wrong_type("Ref", r)) };
                match ev.resolve(r) {
                    Ok(Target::Doc { db, coll, id }) => {
                        if ev.can_read(db, coll, r)? {
                            membership_events(ev, db, coll, &id, r, &mut events)?;
                        }
                    }
                    Ok(Target::NativeColl { .. }) => {}
                    Err(e) if e.code == code::INVALID_REF => {}
                    Err(e) => return Err(e),
                }
            } else if let Some(u) = o.get("union") {
                let mut children = Vec::new();
                for c in set_list(Some(u)) {
                    let sub = set(vec![("events", c.clone())]);
                    children.push(open(ev, &c, &sub, ctx)?);
                }
                return Ok(Box::new(Union::new(ctx.desc, children)));
            } else if let Some(c) = o.get("distinct") {
                let child = open(ev, c, whole, ctx)?;
                return Ok(Box::new(Distinct { child, last: None }));
            } else {
                return Err(super::no_history());
            }
        }
        other => return Err(wrong_type("Ref or Set", other)),
    }
    leaf(events, whole, ctx)
}

fn leaf(events: Vec<Event>, whole: &Value, ctx: &Ctx) -> Result<BoxStream> {
    let mut items: Vec<Elem> = events
        .into_iter()
        .map(|e| {
            let key = e.key();
            let dlen = key.len();
            let cursor = e.cursor();
            let mut el = Elem::new(key, dlen, vec![cursor], e.render());
            if ctx.sources {
                el.sources.push(whole.clone());
            }
            el
        })
        .collect();
    items.sort_by(|a, b| a.key.cmp(&b.key));
    items.dedup_by(|a, b| a.key == b.key);
    let start = match &ctx.start {
        Some(s) => Some((cursor_key(&s.tuple)?, s.inclusive)),
        None => None,
    };
    let bounds = Bounds { desc: ctx.desc, lo: Vec::new(), hi: Vec::new(), start };
    Ok(Box::new(StaticLeaf { items: VecDeque::from(items), bounds }))
}
