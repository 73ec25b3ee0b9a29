//! What one stream watches, and the events a committed transaction makes for it.

use serde_json::{json, Value as Json};
use tally_exec::publish::CommittedTxn;
use tally_fql::auth::Auth;
use tally_fql::catalog::{IndexDef, Target};
use tally_fql::error::code;
use tally_fql::eval::{Eval, Limits, Mode};
use tally_fql::model::{self, native, DbId, Tx};
use tally_fql::perm::ReadFilter;
use tally_fql::FqlError;
use tally_storage::Snapshot;
use tally_value::{Object, Ref, Value};

use crate::http::AppState;

/// The `fields` a client asked for (v4's default: action and document).
#[derive(Clone, Copy, Debug)]
pub struct Fields {
    action: bool,
    document: bool,
    diff: bool,
    prev: bool,
    index: bool,
}

impl Fields {
    pub fn parse(p: Option<&str>) -> Result<Fields, FqlError> {
        let Some(p) = p else {
            return Ok(Fields { action: true, document: true, diff: false, prev: false, index: false });
        };
        let mut f = Fields { action: false, document: false, diff: false, prev: false, index: false };
        // As v4 split the parameter (Java's `split`): empty names at the end are dropped,
        // any other empty name (`fields=`, `a,,b`, `,a`) is an invalid field name.
        let mut names: Vec<&str> = p.split(',').collect();
        while names.len() > 1 && names.last() == Some(&"") {
            names.pop();
        }
        for name in names.into_iter().map(str::trim) {
            match name {
                "action" => f.action = true,
                "document" => f.document = true,
                "diff" => f.diff = true,
                "prev" => f.prev = true,
                "index" => f.index = true,
                other => {
                    // v4's `InvalidURLParam`.
                    return Err(FqlError::new(
                        "invalid url parameter",
                        format!(
                            "Invalid url parameter fields. Invalid field name '{other}'. Use action, document, diff, prev or index."
                        ),
                    ));
                }
            }
        }
        Ok(f)
    }
}

enum What {
    /// One document: its storage key.
    Doc { key: Vec<u8>, r: Ref },
    /// `Documents(coll)`: the collection's key prefix and ref.
    Docs { prefix: Vec<u8>, coll: Ref, db: DbId, coll_id: u64 },
    /// `Match(index, terms)`: the index entries' key prefix.
    Match { prefix: Vec<u8>, index: Ref, db: DbId, def: Box<IndexDef>, norm: Value },
}

pub struct Watch {
    pub start: u64,
    /// The last commit ts this stream looked at.
    pub last_txn: u64,
    what: What,
    fields: Fields,
    /// A JWT login is not re-checked per commit (refused at open); keys and tokens are.
    _auth: Auth,
}

/// The events of a run of commits, and whether the stream ends after them.
pub struct Out {
    pub events: Vec<(u64, Json)>,
    pub end: bool,
}

fn storage(e: impl std::fmt::Display) -> FqlError {
    FqlError::new("internal server error", format!("storage: {e}"))
}

/// v4's refusal of a value that is not a document, a version or an index set
/// (`NonStreamableType`), with what Tally streams of sets.
fn unsupported(got: &str) -> FqlError {
    let hint =
        if got == "Set" { " Of sets, Documents(collection) and Match(index, terms) can be streamed." } else { "" };
    FqlError::new("invalid argument", format!("Expected a Document Ref or Version, or a Set Ref, got {got}.{hint}"))
}

/// v4's type name of a ref to a schema or security document.
fn native_ref_type(coll: u64) -> &'static str {
    match native::name(coll) {
        Some("collections") => "Collection Ref",
        Some("indexes") => "Index Ref",
        Some("databases") => "Database Ref",
        Some("keys") => "Key Ref",
        Some("functions") => "Function Ref",
        Some("roles") => "Role Ref",
        Some("tokens") => "Token Ref",
        Some("credentials") => "Credentials Ref",
        Some("access_providers") => "AccessProvider Ref",
        _ => "Ref",
    }
}

/// Evaluate a query read-only at `ts` (the JSON of an FQL expression).
fn eval(snap: &dyn Snapshot, ts: u64, auth: &Auth, q: &Json) -> Result<Value, FqlError> {
    let expr = tally_fql::expr::parse(q)?;
    tally_fql::run::evaluate(snap, ts, Mode::ReadOnly, auth.clone(), &expr, [0; 32], Limits::default(), None).result
}

/// `[the document at ts, the document just before ts]`, null where it does not exist;
/// reading them is also the permission check.
fn pair(snap: &dyn Snapshot, ts: u64, auth: &Auth, r: &Ref) -> Result<(Option<Object>, Option<Object>), FqlError> {
    pair_at(snap, ts, ts, auth, r)
}

/// [`pair`] around `ts` (a version in the past, for history edits), read in a query
/// evaluated at `now` (the schema as of the commit).
fn pair_at(
    snap: &dyn Snapshot,
    now: u64,
    ts: u64,
    auth: &Auth,
    r: &Ref,
) -> Result<(Option<Object>, Option<Object>), FqlError> {
    // A commit's own version is read as of its ts and the one before as of ts - 1 (a
    // role's read predicate then sees the document as it was); a history edit's, at the
    // commit (the edited ts may predate the schema that reads it).
    let before = ts.saturating_sub(1);
    let (at_now, before_now) = if now == ts { (ts, before) } else { (now, now) };
    // Just before a collection's first commit the collection did not exist: nor did the
    // document.
    let prev = match read_at(snap, before_now, before, auth, r) {
        Err(e) if e.code == code::INVALID_REF => None,
        x => x?,
    };
    Ok((read_at(snap, at_now, ts, auth, r)?, prev))
}

/// Document `r` as of `at`, None where it does not exist; `permission denied` when it
/// exists and the caller may not read it then (its role's predicate run at `at`). Unlike
/// `Exists`, which hides a document the caller may not read, this tells the two apart.
fn read_at(snap: &dyn Snapshot, now: u64, at: u64, auth: &Auth, r: &Ref) -> Result<Option<Object>, FqlError> {
    let mut ev = Eval::new(Tx::new(snap, now), Mode::ReadOnly, auth.clone());
    ev.with_read_ts(at, |ev| {
        let Target::Doc { db, coll, id } = ev.resolve(r)? else { return Ok(None) };
        let Some(d) = ev.tx.live_doc(db, coll, &id, at)? else { return Ok(None) };
        if !ev.can_read(db, coll, r)? {
            return Err(tally_fql::error::permission_denied());
        }
        match tally_fql::fns::docs::render(r, d.ts, &d.data) {
            Value::Object(o) => Ok(Some(o)),
            _ => Ok(None),
        }
    })
}

impl Watch {
    /// Resolve what `expr` names at `start` with the caller's rights; an error is the
    /// stream's answer (nothing is streamed).
    pub fn open(
        st: &AppState,
        secret: &str,
        expr: &tally_fql::expr::Expr,
        start: u64,
        fields: Fields,
    ) -> Result<Watch, FqlError> {
        let snap = st.store.snapshot().map_err(storage)?;
        let auth = st.auth_cache.authenticate(&*snap, start, secret, &st.root_key_hash.get())?;
        let v = tally_fql::run::evaluate(
            &*snap,
            start,
            Mode::ReadOnly,
            auth.clone(),
            expr,
            [0; 32],
            Limits::default(),
            None,
        )
        .result
        .map_err(|e| {
            if e.needs_write {
                FqlError::new("invalid expression", "Call performs a write, which is not allowed in stream requests.")
            } else {
                e
            }
        })?;
        let mut ev = Eval::new(Tx::new(&*snap, start), Mode::ReadOnly, auth.clone());
        // A version (what `Get` answers) streams its document, as in v4.
        let v = match v {
            Value::Object(o) if matches!(o.get("ref"), Some(Value::Ref(_))) && o.contains_key("ts") => {
                o.get("ref").cloned().unwrap_or(Value::Null)
            }
            v => v,
        };
        let what = match &v {
            Value::Ref(r) => match ev.resolve(r)? {
                // Schema and security documents are not streamed (v4: user documents only).
                Target::Doc { coll, .. } if native::name(coll).is_some() => {
                    return Err(unsupported(native_ref_type(coll)))
                }
                Target::Doc { db, coll, id } => {
                    pair(&*snap, start, &auth, r)?;
                    What::Doc { key: model::doc_key(db, coll, &id), r: r.clone() }
                }
                Target::NativeColl { .. } => return Err(unsupported("Ref")),
            },
            Value::Set(inner) => {
                let what = set_target(&mut ev, inner)?;
                // The caller must be able to read the set now.
                let q = json!({"paginate": tally_value::to_json(&v), "size": 1});
                eval(&*snap, start, &auth, &q)?;
                set_filter(&what, &*snap, start, &auth)?;
                what
            }
            other => return Err(unsupported(other.type_name())),
        };
        Ok(Watch { start, last_txn: start, what, fields, _auth: auth })
    }

    /// Whether any of these commits may concern this stream (cheap: key comparisons).
    pub fn interested(&self, txns: &[CommittedTxn]) -> bool {
        txns.iter().filter(|t| t.ts > self.last_txn).any(|t| match &self.what {
            What::Doc { key, .. } => t.docs.iter().any(|(k, _)| k == key),
            What::Docs { prefix, .. } => t.docs.iter().any(|(k, _)| k.starts_with(prefix)),
            What::Match { prefix, .. } => t.entries.iter().any(|(k, _, _)| k.starts_with(prefix)),
        })
    }

    /// The events of `txns` for this stream, in commit order.
    pub fn events(&mut self, st: &AppState, secret: &str, txns: &[CommittedTxn]) -> Out {
        let mut out = Out { events: Vec::new(), end: false };
        let snap = match st.store.snapshot() {
            Ok(s) => s,
            Err(e) => return self.fail(out, &storage(e)),
        };
        for t in txns {
            if t.ts <= self.last_txn {
                continue;
            }
            let wanted = self.interested(std::slice::from_ref(t));
            self.last_txn = t.ts;
            if !wanted {
                continue;
            }
            // The caller's rights as of this commit: a revoked key or token ends the stream.
            let auth = match st.auth_cache.authenticate(&*snap, t.ts, secret, &st.root_key_hash.get()) {
                Ok(a) => a,
                Err(e) => return self.fail(out, &e),
            };
            if let Err(e) = self.txn_events(&*snap, &auth, t, &mut out.events) {
                return self.fail(out, &e);
            }
        }
        out
    }

    fn fail(&self, mut out: Out, e: &FqlError) -> Out {
        // A revoked secret or a lost privilege is v4's `StreamError.PermissionDenied`,
        // with what was lost after it.
        let (code, description) = match e.code {
            code::UNAUTHORIZED | code::PERMISSION_DENIED | code::INVALID_TOKEN => {
                (code::PERMISSION_DENIED, format!("Authorization lost during stream evaluation. {}", e.description))
            }
            c => (c, e.description.clone()),
        };
        let ev = json!({"type": "error", "txn": self.last_txn, "event": {"code": code, "description": description}});
        out.events.push((self.last_txn, ev));
        out.end = true;
        out
    }

    fn txn_events(
        &self,
        snap: &dyn Snapshot,
        auth: &Auth,
        t: &CommittedTxn,
        out: &mut Vec<(u64, Json)>,
    ) -> Result<(), FqlError> {
        let ts = t.ts;
        match &self.what {
            What::Doc { key, r } => {
                for (_, vts) in t.docs.iter().filter(|(k, _)| k == key) {
                    let vts = *vts;
                    let kind = if vts == ts { "version" } else { "history_rewrite" };
                    let (cur, prev) = pair_at(snap, ts, vts, auth, r)?;
                    let removed = t.removed.iter().find(|(k, rts, _)| k == key && *rts == vts);
                    let e = match removed {
                        // `Remove` took the version at vts away: v4 names it by its ref,
                        // ts and action (its data is gone).
                        Some((_, _, deleted)) => Some(self.removed_event(ts, vts, r, *deleted, prev.is_some())),
                        None => self.version_event(ts, vts, kind, r, cur, prev),
                    };
                    out.extend(e.map(|e| (ts, e)));
                }
            }
            What::Docs { prefix, coll, .. } => {
                let per_doc = matches!(set_filter(&self.what, snap, ts, auth)?, ReadFilter::PerDoc);
                for (k, vts) in t.docs.iter().filter(|(k, _)| k.starts_with(prefix)) {
                    let id = model::id_from_doc_key(k)?;
                    let r = Ref::doc(coll.clone(), id);
                    if *vts != ts {
                        // A history edit: the membership events it adds and takes away.
                        if per_doc && readable(pair_at(snap, ts, *vts, auth, &r), per_doc)?.is_none() {
                            continue;
                        }
                        let removed = t.removed.iter().find(|(rk, rts, _)| rk == k && rts == vts).map(|x| x.2);
                        for (vts, action) in membership_edits(snap, ts, k, *vts, removed)? {
                            out.push((ts, self.set_event(ts, vts, action, &r, None)));
                        }
                        continue;
                    }
                    // A document the caller may not read makes no event (v4 hides it).
                    let Some((cur, prev)) = readable(pair(snap, ts, auth, &r), per_doc)? else { continue };
                    let action = match (&cur, &prev) {
                        (Some(_), None) => "add",
                        (None, Some(_)) => "remove",
                        _ => continue,
                    };
                    out.push((ts, self.set_event(ts, ts, action, &r, None)));
                }
            }
            What::Match { prefix, index, norm, .. } => {
                let per_doc = matches!(set_filter(&self.what, snap, ts, auth)?, ReadFilter::PerDoc);
                // v4 makes a `set` event of every index write, whatever its valid ts: an
                // entry written (an add or remove row, at the commit or, by a history
                // edit, in the past) and an entry a history edit took away (v4's
                // `SetRemove`, shown with the action of the row it removed). Removed
                // rows first, then written removals, then additions: an update that
                // moves a document within the set removes its old tuple and adds the
                // new one.
                let mut changes = Vec::new();
                for (k, ets, v) in t.entries.iter().filter(|(k, _, _)| k.starts_with(prefix)) {
                    let (v, undone) = match v {
                        Some(v) => (v, false),
                        None => match t.removed_entries.iter().find(|(rk, rts, _)| rk == k && rts == ets) {
                            Some((_, _, old)) => (old, true),
                            None => continue,
                        },
                    };
                    let version = tally_storage::Version { ts: *ets, value: v.clone() };
                    changes.push((undone, model::decode_entry(k.clone(), &version)?));
                }
                changes.sort_by_key(|(undone, e)| (!undone, e.added));
                for (_, e) in changes {
                    // Where the role decides per document, reading it (at this commit
                    // and just before it) checks the caller may see it; one it may not
                    // see makes no event. Otherwise the entry alone is the event: with
                    // `unrestricted_read` on the index the documents are never read (v4
                    // reads such an index without the source documents' read checks).
                    if per_doc && readable(pair_at(snap, ts, e.ts, auth, &e.doc), per_doc)?.is_none() {
                        continue;
                    }
                    let index = json!({
                        "ref": tally_value::to_json(&Value::Ref(index.clone())),
                        "terms": tally_value::to_json(norm),
                        "values": e.values.iter().map(tally_value::to_json).collect::<Vec<_>>(),
                    });
                    let action = if e.added { "add" } else { "remove" };
                    out.push((ts, self.set_event(ts, e.ts, action, &e.doc, Some(index))));
                }
            }
        }
        Ok(())
    }

    /// A `set` event of commit `txn` for an element change at valid ts `ts` (`txn`
    /// itself unless a history edit put it in the past; v4 shows the entry's valid ts).
    fn set_event(&self, txn: u64, ts: u64, action: &str, r: &Ref, index: Option<Json>) -> Json {
        let mut ev = serde_json::Map::new();
        if self.fields.action {
            ev.insert("action".into(), json!(action));
        }
        if self.fields.document {
            ev.insert("document".into(), json!({"ref": tally_value::to_json(&Value::Ref(r.clone())), "ts": ts}));
        }
        if let (true, Some(i)) = (self.fields.index, index) {
            ev.insert("index".into(), i);
        }
        json!({"type": "set", "txn": txn, "event": ev})
    }

    /// A `version` event (a commit's own version, `ts` = `txn`) or a `history_rewrite`
    /// one (a version `Insert` put at an earlier `ts`).
    fn version_event(
        &self,
        txn: u64,
        ts: u64,
        kind: &str,
        r: &Ref,
        cur: Option<Object>,
        prev: Option<Object>,
    ) -> Option<Json> {
        let action = match (&cur, &prev) {
            (Some(c), None) if ts_of(c) == Some(ts) => "create",
            (Some(c), Some(_)) if ts_of(c) == Some(ts) => "update",
            (None, Some(_)) => "delete",
            _ => return None,
        };
        let data = |o: &Option<Object>| o.as_ref().and_then(|o| o.get("data")).cloned();
        let base = |data: Option<Value>| {
            let mut o = Object::new();
            o.insert("ref".into(), Value::Ref(r.clone()));
            o.insert("ts".into(), Value::Long(ts as i64));
            if let Some(d) = data {
                o.insert("data".into(), d);
            }
            tally_value::to_json(&Value::Object(o))
        };
        let mut ev = serde_json::Map::new();
        if self.fields.action {
            ev.insert("action".into(), json!(action));
        }
        if self.fields.document {
            let doc = match (&cur, action) {
                (Some(c), _) => tally_value::to_json(&Value::Object(c.clone())),
                (None, _) => base(data(&prev)),
            };
            ev.insert("document".into(), doc);
        }
        if self.fields.diff {
            let d = match action {
                "delete" => None,
                _ => Some(diff(data(&prev).as_ref(), data(&cur).as_ref())),
            };
            ev.insert("diff".into(), base(d));
        }
        if self.fields.prev {
            ev.insert("prev".into(), base(data(&prev)));
        }
        Some(json!({"type": kind, "txn": txn, "event": ev}))
    }

    /// The `history_rewrite` event of a version `Remove` took away at `ts`.
    fn removed_event(&self, txn: u64, ts: u64, r: &Ref, deleted: bool, live_before: bool) -> Json {
        let action = match (deleted, live_before) {
            (true, _) => "delete",
            (false, true) => "update",
            (false, false) => "create",
        };
        let mut ev = serde_json::Map::new();
        if self.fields.action {
            ev.insert("action".into(), json!(action));
        }
        if self.fields.document {
            ev.insert("document".into(), json!({"ref": tally_value::to_json(&Value::Ref(r.clone())), "ts": ts}));
        }
        json!({"type": "history_rewrite", "txn": txn, "event": ev})
    }
}

/// The `Documents(coll)` events a history edit of document `key` at `vts` makes, as of
/// commit `txn`: an element enters the set at a version that is live after a missing or
/// deleted one, and leaves it at a deletion after a live one, so an edit changes the
/// event of the edited version and that of the version after it. v4 (whose `Documents`
/// is an index) sends a `set` event for each index row the edit writes or takes away,
/// with the row's action and valid ts; these are the same rows. `removed`: the edit was
/// a `Remove` of a version (whether it was a deletion); otherwise it inserted one.
fn membership_edits(
    snap: &dyn Snapshot,
    txn: u64,
    key: &[u8],
    vts: u64,
    removed: Option<bool>,
) -> Result<Vec<(u64, &'static str)>, FqlError> {
    let mut tx = Tx::new(snap, txn);
    let live = |v: Option<&tally_storage::Version>| -> Result<bool, FqlError> {
        match v {
            Some(v) => Ok(!model::decode_doc(v)?.deleted),
            None => Ok(false),
        }
    };
    let entered = |before: bool, after: bool| match (before, after) {
        (false, true) => Some("add"),
        (true, false) => Some("remove"),
        _ => None,
    };
    let before = match vts.checked_sub(1) {
        Some(b) => tx.history(tally_storage::Space::Docs, key, 0, b, true, 1)?.into_iter().next(),
        None => None,
    };
    let prev_live = live(before.as_ref())?;
    let next = tx.history(tally_storage::Space::Docs, key, vts.saturating_add(1), txn, false, 1)?.into_iter().next();
    let next = match &next {
        Some(n) => Some((n.ts, live(Some(n))?)),
        None => None,
    };
    // The edited version's liveness, and the events of the history without and with it.
    let (edited_live, had_it) = match removed {
        Some(deleted) => (!deleted, true),
        None => {
            let at = tx.history(tally_storage::Space::Docs, key, vts, vts, false, 1)?.into_iter().next();
            match at {
                Some(v) if v.ts == vts => (live(Some(&v))?, false),
                _ => return Ok(Vec::new()),
            }
        }
    };
    let mut without = Vec::new();
    let mut with = Vec::new();
    with.extend(entered(prev_live, edited_live).map(|a| (vts, a)));
    if let Some((nts, nlive)) = next {
        without.extend(entered(prev_live, nlive).map(|a| (nts, a)));
        with.extend(entered(edited_live, nlive).map(|a| (nts, a)));
    }
    let (old, new) = if had_it { (with, without) } else { (without, with) };
    // Rows taken away first, then rows written (v4's order: removes, then adds).
    let mut out: Vec<(u64, &'static str)> = old.iter().filter(|e| !new.contains(e)).copied().collect();
    out.extend(new.iter().filter(|e| !old.contains(e)).copied());
    Ok(out)
}

fn ts_of(o: &Object) -> Option<u64> {
    match o.get("ts") {
        Some(Value::Long(n)) => u64::try_from(*n).ok(),
        _ => None,
    }
}

/// What changed from `old` to `new`: changed fields with their new value, removed ones
/// as null, nested objects compared field by field.
fn diff(old: Option<&Value>, new: Option<&Value>) -> Value {
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let mut out = Object::new();
            for (k, v) in b {
                match a.get(k) {
                    Some(o) if o == v => {}
                    Some(o @ Value::Object(_)) if matches!(v, Value::Object(_)) => {
                        out.insert(k.clone(), diff(Some(o), Some(v)));
                    }
                    _ => {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            for k in a.keys().filter(|k| !b.contains_key(*k)) {
                out.insert(k.clone(), Value::Null);
            }
            Value::Object(out)
        }
        (_, Some(v)) => v.clone(),
        (_, None) => Value::Object(Object::new()),
    }
}

/// A set value's target: `Documents(coll)` or `Match(index, terms)`.
fn set_target(ev: &mut Eval<'_>, inner: &Value) -> Result<What, FqlError> {
    let Some(o) = inner.as_object() else { return Err(unsupported("Set")) };
    if let Some(Value::Ref(idx)) = o.get("match") {
        let (db, def) = ev.index_def(idx)?;
        let terms = tally_fql::fns::sets::normalize_terms(def.terms.len(), o.get("terms"));
        let prefix = model::index_prefix(db, def.id, &terms);
        return Ok(What::Match { prefix, index: idx.clone(), db, def: Box::new(def), norm: Value::Array(terms) });
    }
    if let Some(Value::Ref(cr)) = o.get("documents") {
        return match ev.resolve(cr)? {
            Target::Doc { db, coll: native::COLLECTIONS, id } => {
                let coll = ev
                    .collection_id(db, &id)?
                    .ok_or_else(|| FqlError::new("invalid ref", format!("Collection `{id}` does not exist.")))?;
                Ok(What::Docs { prefix: model::doc_prefix(db, coll), coll: cr.clone(), db, coll_id: coll })
            }
            _ => Err(unsupported("Set")),
        };
    }
    Err(unsupported("Set"))
}

/// How the caller's role filters a set stream's elements at `ts` (v4's rules for reading
/// the set: `unrestricted_read` sees all, a `read` predicate is asked per document). A
/// set the caller can no longer read at all is `permission denied`, which ends the
/// stream.
fn set_filter(what: &What, snap: &dyn Snapshot, ts: u64, auth: &Auth) -> Result<ReadFilter, FqlError> {
    let mut ev = Eval::new(Tx::new(snap, ts), Mode::ReadOnly, auth.clone());
    let f = match what {
        What::Docs { db, coll_id, .. } => ev.docs_filter(*db, *coll_id)?,
        What::Match { db, def, norm, .. } => ev.index_filter(*db, def, norm)?,
        What::Doc { .. } => ReadFilter::All,
    };
    match f {
        ReadFilter::Nothing => Err(FqlError::new(
            code::PERMISSION_DENIED,
            "The stream's secret may no longer read this set; the stream was closed.",
        )),
        f => Ok(f),
    }
}

/// A set element's reads, or None when its document is hidden from the caller (only
/// when the caller's role decides per document).
fn readable<T>(r: Result<T, FqlError>, per_doc: bool) -> Result<Option<T>, FqlError> {
    match r {
        Ok(x) => Ok(Some(x)),
        Err(e) if per_doc && e.code == code::PERMISSION_DENIED => Ok(None),
        Err(e) => Err(e),
    }
}
