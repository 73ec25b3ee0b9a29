//! Sets: `match union intersection difference distinct join range singleton documents
//! events paginate`, and the set engine the collection functions iterate sets with.
//!
//! A set value (`Value::Set`) holds the set's call in data form, exactly as Fauna renders
//! it inside `{"@set": ...}`. Nothing is read when a set is built (beyond checking that
//! the index or collection exists); the engine below turns set data into a [`Stream`]
//! of elements when something consumes the set.
//!
//! Ordering: every element carries a byte key (the order-preserving encoding of its
//! sort tuple, reverse index values bit-inverted), so composite sets merge children by
//! comparing bytes. Cursors (`after`/`before`) and `Range` bounds are handed down to the
//! leaves (index scans, document scans), which encode them with their own reverse flags,
//! seek to them and filter by them; parents never compare cursors themselves.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use tally_value::{encode_into, Object, Ref, Value};

use crate::catalog::{IndexDef, Target};
use crate::error::{code, invalid_argument, wrong_type, FqlError, Result};
use crate::eval::{Eval, Lambda};
use crate::expr::{Call, Expr, FnSpec};
use crate::model::{self, native, CollId, DbId};
use crate::perm::ReadFilter;

mod events;

pub(crate) static SPECS: &[FnSpec] = &[
    FnSpec { name: "match", optional: &["terms", "index"], required: &[], handler: match_ },
    FnSpec { name: "union", optional: &[], required: &[], handler: union },
    FnSpec { name: "intersection", optional: &[], required: &[], handler: intersection },
    FnSpec { name: "difference", optional: &[], required: &[], handler: difference },
    FnSpec { name: "distinct", optional: &[], required: &[], handler: distinct },
    FnSpec { name: "join", optional: &[], required: &["with"], handler: join },
    FnSpec { name: "range", optional: &[], required: &["from", "to"], handler: range },
    FnSpec { name: "singleton", optional: &[], required: &[], handler: singleton },
    FnSpec { name: "documents", optional: &[], required: &[], handler: documents },
    FnSpec { name: "events", optional: &[], required: &[], handler: events },
    FnSpec {
        name: "paginate",
        optional: &["size", "after", "before", "ts", "events", "sources", "cursor"],
        required: &[],
        handler: paginate,
    },
];

/// Most elements any set operation materializes (join sources, whole-set reads).
pub(crate) const MATERIALIZE_MAX: usize = 1_000_000;
/// Default `Paginate` size.
pub(crate) const DEFAULT_PAGE_SIZE: usize = 64;

// ---------------------------------------------------------------------------------------
// Set constructors
// ---------------------------------------------------------------------------------------

fn set(pairs: Vec<(&str, Value)>) -> Value {
    Value::Set(Box::new(Value::object(pairs)))
}

/// Is `v` something the set engine can iterate: a set, or a native collection ref
/// (`Collections()`, `Keys()`, ...)?
pub(crate) fn is_set(v: &Value) -> bool {
    match v {
        Value::Set(_) => true,
        Value::Ref(r) => r.is_native_collection(),
        _ => false,
    }
}

/// Is `v` a set of events (`Events(x)`, or a union of such sets)? Pagination of these
/// returns events with event cursors; they cannot be mixed with sets of values.
pub(crate) fn is_historical(v: &Value) -> bool {
    let Value::Set(d) = v else { return false };
    let Some(o) = d.as_object() else { return false };
    if o.contains_key("events") {
        return true;
    }
    for op in ["union", "intersection", "difference"] {
        if let Some(c) = o.get(op) {
            return set_list(Some(c)).iter().any(is_historical);
        }
    }
    match o.get("distinct") {
        Some(c) => is_historical(c),
        None => false,
    }
}

fn no_history() -> FqlError {
    invalid_argument("Set does not support events history.")
}

/// Does document `r` exist (live at the read ts)? Refs into collections or databases
/// that do not exist, and documents the caller may not read, name no document.
fn doc_exists(ev: &mut Eval<'_>, r: &Ref) -> Result<bool> {
    match ev.resolve(r) {
        Ok(Target::Doc { db, coll, id }) => {
            if !ev.can_read(db, coll, r)? {
                return Ok(false);
            }
            let at = ev.read_ts();
            Ok(ev.tx.live_doc(db, coll, &id, at)?.is_some())
        }
        Ok(Target::NativeColl { .. }) => Ok(false),
        Err(e) if e.code == code::INVALID_REF => Ok(false),
        Err(e) => Err(e),
    }
}

fn require_set(v: &Value) -> Result<()> {
    if is_set(v) {
        Ok(())
    } else {
        Err(wrong_type("Set", v))
    }
}

fn match_(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    // Legacy form `{"match": terms, "index": idx}` as well as `{"match": idx, "terms": t}`.
    let (idx, idx_key, terms) = if call.get("index").is_some() {
        let idx = ev.arg(call, "index")?;
        let terms = ev.primary(call)?;
        (idx, "index", Some(terms))
    } else {
        let idx = ev.primary(call)?;
        (idx, "match", ev.opt_arg(call, "terms")?)
    };
    let r = match &idx {
        Value::Ref(r) => r.clone(),
        other => return Err(wrong_type("Ref", other).at(idx_key)),
    };
    ev.index_def(&r).map_err(|e| e.at(idx_key))?;
    let mut pairs = vec![("match", Value::Ref(r))];
    if let Some(t) = terms {
        pairs.push(("terms", t));
    }
    Ok(set(pairs))
}

/// Evaluate the variadic set arguments of union/intersection/difference and check that
/// they are all sets or all arrays. `Ok(Err(arrays))` when they are arrays.
fn set_args(ev: &mut Eval<'_>, call: &Call) -> Result<std::result::Result<Vec<Value>, Vec<Vec<Value>>>> {
    let name = call.name();
    let args = ev.varargs(call, name)?;
    if args.iter().all(|a| matches!(a, Value::Array(_))) {
        return Ok(Err(args
            .into_iter()
            .map(|a| match a {
                Value::Array(v) => v,
                _ => Vec::new(),
            })
            .collect()));
    }
    let single = !matches!(call.get(name), Some(Expr::Array(_)));
    for (i, a) in args.iter().enumerate() {
        if !is_set(a) {
            let e = wrong_type("Set", a);
            return Err(if single { e.at(name) } else { e.at(i).at(name) });
        }
    }
    let hist = args.iter().filter(|a| is_historical(a)).count();
    if hist != 0 && hist != args.len() {
        return Err(invalid_argument("Sets are not compatible.").at(name));
    }
    Ok(Ok(args))
}

fn union(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    match set_args(ev, call)? {
        Ok(sets) => Ok(set(vec![("union", Value::Array(sets))])),
        Err(arrays) => array_union(ev, arrays).map_err(|e| e.at("union")),
    }
}

fn intersection(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    match set_args(ev, call)? {
        Ok(sets) => Ok(set(vec![("intersection", Value::Array(sets))])),
        Err(arrays) => Ok(array_intersection(arrays)),
    }
}

fn difference(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    match set_args(ev, call)? {
        Ok(sets) => Ok(set(vec![("difference", Value::Array(sets))])),
        Err(arrays) => Ok(array_difference(arrays)),
    }
}

fn distinct(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    match ev.primary(call)? {
        Value::Array(items) => Ok(Value::Array(array_distinct(items))),
        Value::Object(mut page) if matches!(page.get("data"), Some(Value::Array(_))) => {
            if let Some(Value::Array(items)) = page.remove("data") {
                page.insert("data".into(), Value::Array(array_distinct(items)));
            }
            Ok(Value::Object(page))
        }
        v if is_set(&v) => Ok(set(vec![("distinct", v)])),
        other => Err(wrong_type("Set or Array", &other).at("distinct")),
    }
}

fn join(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let source = ev.primary(call)?;
    require_set(&source).map_err(|e| e.at("join"))?;
    let with = ev.arg(call, "with")?;
    match &with {
        Value::Ref(r) => {
            ev.index_def(r).map_err(|e| e.at("with"))?;
        }
        Value::Query(_) => {
            ev.lambda_from_value(&with).map_err(|e| e.at("with"))?;
        }
        other => return Err(wrong_type("Index Ref or Lambda", other).at("with")),
    }
    Ok(set(vec![("join", source), ("with", with)]))
}

fn range(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let s = ev.primary(call)?;
    require_set(&s).map_err(|e| e.at("range"))?;
    let from = ev.arg(call, "from")?;
    let to = ev.arg(call, "to")?;
    Ok(set(vec![("range", s), ("from", from), ("to", to)]))
}

fn singleton(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    match ev.primary(call)? {
        Value::Ref(r) => Ok(set(vec![("singleton", Value::Ref(r))])),
        other => Err(wrong_type("Ref", &other).at("singleton")),
    }
}

fn documents(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let r = match ev.primary(call)? {
        Value::Ref(r) => r,
        other => return Err(wrong_type("Collection Ref", &other).at("documents")),
    };
    match ev.resolve(&r).map_err(|e| e.at("documents"))? {
        Target::Doc { db, coll: native::COLLECTIONS, id } => {
            if ev.collection_id(db, &id)?.is_none() {
                return Err(
                    FqlError::new(code::INVALID_REF, format!("Collection `{id}` does not exist.")).at("documents")
                );
            }
        }
        _ => return Err(invalid_argument(format!("Collection Ref expected, {r} provided.")).at("documents")),
    }
    Ok(set(vec![("documents", Value::Ref(r))]))
}

fn events(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let v = ev.primary(call)?;
    match &v {
        _ if is_historical(&v) => Err(no_history()),
        Value::Ref(_) | Value::Set(_) => Ok(set(vec![("events", v)])),
        other => Err(wrong_type("Ref or Set", other).at("events")),
    }
}

// ---------------------------------------------------------------------------------------
// Array forms of union/intersection/difference/distinct (multiset semantics, order kept)
// ---------------------------------------------------------------------------------------

fn vkey(v: &Value) -> Vec<u8> {
    tally_value::encode(v)
}

fn counts(items: &[Value]) -> std::collections::BTreeMap<Vec<u8>, usize> {
    let mut m = std::collections::BTreeMap::new();
    for it in items {
        *m.entry(vkey(it)).or_insert(0) += 1;
    }
    m
}

pub(crate) fn array_union(ev: &Eval<'_>, arrays: Vec<Vec<Value>>) -> Result<Value> {
    let mut emitted: std::collections::BTreeMap<Vec<u8>, usize> = std::collections::BTreeMap::new();
    let mut out = Vec::new();
    for arr in arrays {
        let mut seen_here: std::collections::BTreeMap<Vec<u8>, usize> = std::collections::BTreeMap::new();
        for it in arr {
            let k = vkey(&it);
            let here = seen_here.entry(k.clone()).or_insert(0);
            *here += 1;
            let e = emitted.entry(k).or_insert(0);
            if *here > *e {
                *e += 1;
                out.push(it);
                if out.len() > ev.limits.array_len_max {
                    return Err(array_too_long(ev));
                }
            }
        }
    }
    Ok(Value::Array(out))
}

pub(crate) fn array_intersection(arrays: Vec<Vec<Value>>) -> Value {
    let mut it = arrays.into_iter();
    let Some(first) = it.next() else { return Value::Array(Vec::new()) };
    let others: Vec<_> = it.map(|a| counts(&a)).collect();
    let mut emitted: std::collections::BTreeMap<Vec<u8>, usize> = std::collections::BTreeMap::new();
    let mut out = Vec::new();
    for v in first {
        let k = vkey(&v);
        let allowed = others.iter().map(|c| c.get(&k).copied().unwrap_or(0)).min().unwrap_or(usize::MAX);
        let e = emitted.entry(k).or_insert(0);
        if *e < allowed {
            *e += 1;
            out.push(v);
        }
    }
    Value::Array(out)
}

pub(crate) fn array_difference(arrays: Vec<Vec<Value>>) -> Value {
    let mut it = arrays.into_iter();
    let Some(first) = it.next() else { return Value::Array(Vec::new()) };
    let mut remove = std::collections::BTreeMap::new();
    for a in it {
        for (k, n) in counts(&a) {
            *remove.entry(k).or_insert(0usize) += n;
        }
    }
    let mut out = Vec::new();
    for v in first {
        let k = vkey(&v);
        match remove.get_mut(&k) {
            Some(n) if *n > 0 => *n -= 1,
            _ => out.push(v),
        }
    }
    Value::Array(out)
}

pub(crate) fn array_distinct(items: Vec<Value>) -> Vec<Value> {
    let mut seen = std::collections::BTreeSet::new();
    items.into_iter().filter(|v| seen.insert(vkey(v))).collect()
}

pub(crate) fn array_too_long(ev: &Eval<'_>) -> FqlError {
    invalid_argument(format!("Arrays are limited to {} elements; narrow the input.", ev.limits.array_len_max))
}

// ---------------------------------------------------------------------------------------
// The set engine
// ---------------------------------------------------------------------------------------

/// One element of a set as it flows through the engine.
#[derive(Clone, Debug)]
pub(crate) struct Elem {
    /// Ordering key in the stream's own order (reverse values inverted).
    key: Vec<u8>,
    /// Length of the key prefix that identifies `out` (what `Distinct` dedups on).
    dlen: usize,
    /// The cursor tuple: `[values..., ref]` for index entries, `[ref]` for documents.
    tuple: Vec<Value>,
    /// The element as `Paginate` shows it.
    pub(crate) out: Value,
    /// The leaf sets the element came from (filled only when the reader asked for
    /// sources, `Paginate(..., {sources: true})`).
    sources: Vec<Value>,
}

impl Elem {
    fn new(key: Vec<u8>, dlen: usize, tuple: Vec<Value>, out: Value) -> Elem {
        Elem { key, dlen, tuple, out, sources: Vec::new() }
    }
}

/// Add the sources in `more` that `into` does not hold yet.
fn merge_sources(into: &mut Vec<Value>, more: Vec<Value>) {
    for s in more {
        if !into.contains(&s) {
            into.push(s);
        }
    }
}

#[derive(Clone, Debug)]
struct Start {
    tuple: Vec<Value>,
    inclusive: bool,
}

/// How a stream is to be read: direction, start cursor, and `Range` bounds (all apply).
#[derive(Clone, Debug, Default)]
struct Ctx {
    desc: bool,
    start: Option<Start>,
    ranges: Vec<(Vec<Value>, Vec<Value>)>,
    /// How many elements the consumer expects to want (first scan chunk size).
    hint: usize,
    /// Fill [`Elem::sources`].
    sources: bool,
}

trait Stream {
    fn next(&mut self, ev: &mut Eval<'_>) -> Result<Option<Elem>>;
}

type BoxStream = Box<dyn Stream>;

/// A cursor or range bound as a tuple: arrays compare element-wise, anything else is a
/// one-element tuple.
fn as_tuple(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    }
}

fn encode_tuple(t: &[Value], rev: &[bool]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, v) in t.iter().enumerate() {
        let start = out.len();
        encode_into(&mut out, v);
        if rev.get(i).copied().unwrap_or(false) {
            for b in &mut out[start..] {
                *b = !*b;
            }
        }
    }
    out
}

enum Verdict {
    Take,
    Skip,
    Stop,
}

/// Cursor and range bounds encoded for one leaf.
struct Bounds {
    desc: bool,
    lo: Vec<Vec<u8>>,
    hi: Vec<Vec<u8>>,
    start: Option<(Vec<u8>, bool)>,
}

impl Bounds {
    fn new(ctx: &Ctx, rev: &[bool]) -> Bounds {
        Bounds {
            desc: ctx.desc,
            lo: ctx.ranges.iter().map(|(f, _)| encode_tuple(f, rev)).collect(),
            hi: ctx.ranges.iter().map(|(_, t)| encode_tuple(t, rev)).collect(),
            start: ctx.start.as_ref().map(|s| (encode_tuple(&s.tuple, rev), s.inclusive)),
        }
    }

    fn check(&self, key: &[u8]) -> Verdict {
        for h in &self.hi {
            let n = key.len().min(h.len());
            if &key[..n] > h.as_slice() {
                return if self.desc { Verdict::Skip } else { Verdict::Stop };
            }
        }
        for l in &self.lo {
            if key < l.as_slice() {
                return if self.desc { Verdict::Stop } else { Verdict::Skip };
            }
        }
        if let Some((c, incl)) = &self.start {
            let o = key.cmp(c.as_slice());
            let before_start = if self.desc { o == Ordering::Greater } else { o == Ordering::Less };
            if before_start || (!incl && o == Ordering::Equal) {
                return Verdict::Skip;
            }
        }
        Verdict::Take
    }

    /// Where a scan in this direction may start (relative to the leaf's key prefix).
    fn seek(&self) -> Option<Vec<u8>> {
        let mut cands: Vec<Vec<u8>> = Vec::new();
        if self.desc {
            for h in &self.hi {
                let mut k = h.clone();
                k.push(0xFF);
                cands.push(k);
            }
            if let Some((c, _)) = &self.start {
                cands.push(c.clone());
            }
            cands.into_iter().min()
        } else {
            cands.extend(self.lo.iter().cloned());
            if let Some((c, _)) = &self.start {
                cands.push(c.clone());
            }
            cands.into_iter().max()
        }
    }
}

/// Count one element against the evaluation step budget (and the read-only deadline).
fn tick(ev: &mut Eval<'_>) -> Result<()> {
    static TICK: Expr = Expr::Lit(Value::Null);
    ev.eval(&TICK).map(|_| ())
}

fn chunk_next(chunk: usize) -> usize {
    (chunk * 2).min(1024)
}

// ---- leaves ----

struct MatchLeaf {
    prefix: Vec<u8>,
    /// The set value reported as the elements' source (when sources are wanted).
    source: Option<Value>,
    /// The index has values: entries whose values are all null are not part of it (v4
    /// leaves a document out of an index when every covered value is null).
    has_values: bool,
    bounds: Bounds,
    desc: bool,
    from: Option<Vec<u8>>,
    resumed: bool,
    buf: VecDeque<Elem>,
    done: bool,
    chunk: usize,
    /// The index's database and source collections, and (once asked) whether any of
    /// them ever held a document with a `ttl`: only then are entries checked for
    /// documents past it (`crate::fns::docs::expired_entry`).
    db: DbId,
    colls: Vec<CollId>,
    expiring: Option<bool>,
}

impl Stream for MatchLeaf {
    fn next(&mut self, ev: &mut Eval<'_>) -> Result<Option<Elem>> {
        loop {
            if let Some(e) = self.buf.pop_front() {
                return Ok(Some(e));
            }
            if self.done {
                return Ok(None);
            }
            let at = ev.read_ts();
            crate::retention::check_read(&mut ev.tx, self.db, &self.colls, at)?;
            let expiring = match self.expiring {
                Some(x) => x,
                None => *self.expiring.insert(crate::fns::docs::may_expire(ev, self.db, &self.colls, at)?),
            };
            let limit = self.chunk + self.resumed as usize;
            let mut page = ev.tx.scan_index(&self.prefix, self.from.as_deref(), self.desc, at, limit)?;
            if page.len() < limit {
                self.done = true;
            }
            if self.resumed && page.first().map(|e| Some(&e.key) == self.from.as_ref()).unwrap_or(false) {
                page.remove(0);
            }
            self.chunk = chunk_next(self.chunk);
            self.resumed = true;
            if let Some(last) = page.last() {
                self.from = Some(last.key.clone());
            } else {
                self.done = true;
            }
            for e in page {
                tick(ev)?;
                if self.has_values && e.values.iter().all(|v| v.is_null()) {
                    continue;
                }
                let key = e.key[self.prefix.len()..].to_vec();
                match self.bounds.check(&key) {
                    Verdict::Take => {}
                    Verdict::Skip => continue,
                    Verdict::Stop => {
                        self.done = true;
                        break;
                    }
                }
                if expiring && crate::fns::docs::expired_entry(ev, self.db, &e.doc, at)? {
                    continue;
                }
                let refv = Value::Ref(e.doc);
                let dlen = if e.values.is_empty() { key.len() } else { key.len() - tally_value::encode(&refv).len() };
                let out = match e.values.len() {
                    0 => refv.clone(),
                    1 => e.values[0].clone(),
                    _ => Value::Array(e.values.clone()),
                };
                let mut tuple = e.values;
                tuple.push(refv);
                let mut el = Elem::new(key, dlen, tuple, out);
                if let Some(src) = &self.source {
                    el.sources.push(src.clone());
                }
                self.buf.push_back(el);
            }
        }
    }
}

pub fn normalize_terms(nterms: usize, t: Option<&Value>) -> Vec<Value> {
    match t {
        None => Vec::new(),
        Some(Value::Array(a)) if nterms != 1 || a.len() == 1 => a.clone(),
        Some(other) => vec![other.clone()],
    }
}

fn open_match(ev: &mut Eval<'_>, index: &Ref, terms: Option<&Value>, ctx: &Ctx) -> Result<BoxStream> {
    let (db, def) = ev.index_def(index)?;
    let filter = ev.index_filter(db, &def, &Value::Array(normalize_terms(def.terms.len(), terms)))?;
    let source = Value::Set(Box::new(match terms {
        Some(t) => Value::object([("match", Value::Ref(index.clone())), ("terms", t.clone())]),
        None => Value::object([("match", Value::Ref(index.clone()))]),
    }));
    Ok(filtered(match_leaf(db, &def, terms, ctx, source), filter, None))
}

/// Hide the elements whose documents the caller may not read (see [`crate::perm`]).
struct Filtered {
    child: BoxStream,
    /// The database and collection of every element, when the leaf has just one.
    fixed: Option<(DbId, CollId)>,
}

impl Stream for Filtered {
    fn next(&mut self, ev: &mut Eval<'_>) -> Result<Option<Elem>> {
        while let Some(e) = self.child.next(ev)? {
            let readable = match (e.tuple.last(), self.fixed) {
                (Some(Value::Ref(r)), Some((db, coll))) => ev.can_read(db, coll, r)?,
                (Some(Value::Ref(r)), None) => ev.can_read_ref(r)?,
                _ => true,
            };
            if readable {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }
}

fn filtered(child: BoxStream, f: ReadFilter, fixed: Option<(DbId, CollId)>) -> BoxStream {
    match f {
        ReadFilter::All => child,
        ReadFilter::Nothing => Box::new(Union::new(false, Vec::new())),
        ReadFilter::PerDoc => Box::new(Filtered { child, fixed }),
    }
}

fn first_chunk(ctx: &Ctx) -> usize {
    ctx.hint.clamp(8, 1024)
}

fn match_leaf(db: DbId, def: &IndexDef, terms: Option<&Value>, ctx: &Ctx, source: Value) -> BoxStream {
    let terms = normalize_terms(def.terms.len(), terms);
    let empty = terms.len() != def.terms.len();
    let prefix = model::index_prefix(db, def.id, &terms);
    let bounds = Bounds::new(ctx, &def.reverse_flags());
    let from = bounds.seek().map(|s| {
        let mut k = prefix.clone();
        k.extend_from_slice(&s);
        k
    });
    Box::new(MatchLeaf {
        prefix,
        source: ctx.sources.then_some(source),
        has_values: !def.values.is_empty(),
        bounds,
        desc: ctx.desc,
        from,
        resumed: false,
        buf: VecDeque::new(),
        done: empty,
        chunk: first_chunk(ctx),
        db,
        colls: def.sources.iter().map(|s| s.coll).collect(),
        expiring: None,
    })
}

struct DocsLeaf {
    db: DbId,
    coll: CollId,
    /// The collection ref each document ref is built on.
    parent: Ref,
    database: Option<Arc<Ref>>,
    /// The set value reported as the elements' source (when sources are wanted).
    source: Option<Value>,
    bounds: Bounds,
    desc: bool,
    from: Option<String>,
    resumed: bool,
    buf: VecDeque<Elem>,
    done: bool,
    chunk: usize,
}

impl DocsLeaf {
    fn doc_ref(&self, id: &str) -> Ref {
        let mut r = Ref::doc(self.parent.clone(), id);
        r.database = self.database.clone();
        r
    }
}

impl Stream for DocsLeaf {
    fn next(&mut self, ev: &mut Eval<'_>) -> Result<Option<Elem>> {
        loop {
            if let Some(e) = self.buf.pop_front() {
                return Ok(Some(e));
            }
            if self.done {
                return Ok(None);
            }
            let at = ev.read_ts();
            crate::retention::check_read(&mut ev.tx, self.db, &[self.coll], at)?;
            let limit = self.chunk + self.resumed as usize;
            // Ids only: a listing never reads the bodies it does not return.
            let mut page = ev.tx.scan_doc_ids(self.db, self.coll, self.from.as_deref(), self.desc, at, limit)?;
            if page.len() < limit {
                self.done = true;
            }
            if self.resumed && page.first().map(|id| Some(id) == self.from.as_ref()).unwrap_or(false) {
                page.remove(0);
            }
            self.chunk = chunk_next(self.chunk);
            self.resumed = true;
            match page.last() {
                Some(id) => self.from = Some(id.clone()),
                None => self.done = true,
            }
            // A document past its `ttl` is gone; only a collection that ever held a `ttl`
            // needs its documents' bodies read to tell (crate::fns::docs::mark_ttl).
            let may_expire = !page.is_empty() && crate::fns::docs::may_expire(ev, self.db, &[self.coll], at)?;
            for id in page {
                tick(ev)?;
                if may_expire && ev.tx.get_doc(self.db, self.coll, &id, at)?.is_some_and(|d| d.expired_at(at)) {
                    continue;
                }
                let r = Value::Ref(self.doc_ref(&id));
                let key = tally_value::encode(&r);
                match self.bounds.check(&key) {
                    Verdict::Take => {}
                    Verdict::Skip => continue,
                    Verdict::Stop => {
                        self.done = true;
                        break;
                    }
                }
                let dlen = key.len();
                let mut el = Elem::new(key, dlen, vec![r.clone()], r);
                if let Some(src) = &self.source {
                    el.sources.push(src.clone());
                }
                self.buf.push_back(el);
            }
        }
    }
}

fn open_docs(
    ev: &mut Eval<'_>,
    db: DbId,
    coll: CollId,
    parent: Ref,
    database: Option<Arc<Ref>>,
    ctx: &Ctx,
    source: &Value,
) -> Result<BoxStream> {
    // A native collection is refused when none of it is readable; `Documents` never is.
    let filter = if native::name(coll).is_some() { ev.native_set_filter(db, coll)? } else { ev.docs_filter(db, coll)? };
    let mut leaf = DocsLeaf {
        db,
        coll,
        parent,
        database,
        source: ctx.sources.then(|| source.clone()),
        bounds: Bounds::new(ctx, &[]),
        desc: ctx.desc,
        from: None,
        resumed: false,
        buf: VecDeque::new(),
        done: false,
        chunk: first_chunk(ctx),
    };
    // Seek by id when the start cursor (or the tightest range bound) is a ref of this
    // collection; otherwise start at the edge and let the bounds filter.
    let mut seeks: Vec<Ref> = Vec::new();
    if let Some(Value::Ref(r)) = ctx.start.as_ref().and_then(|s| s.tuple.first()) {
        seeks.push(r.clone());
    }
    for (f, t) in &ctx.ranges {
        let b = if ctx.desc { t } else { f };
        if let Some(Value::Ref(r)) = b.first() {
            seeks.push(r.clone());
        }
    }
    let mut best: Option<Ref> = None;
    for r in seeks {
        if leaf.doc_ref(&r.id) != r {
            continue;
        }
        let better = match &best {
            None => true,
            Some(b) => {
                let o = tally_value::cmp_id(&r.id, &b.id);
                if ctx.desc {
                    o == Ordering::Less
                } else {
                    o == Ordering::Greater
                }
            }
        };
        if better {
            best = Some(r);
        }
    }
    leaf.from = best.map(|r| r.id.to_string());
    Ok(filtered(Box::new(leaf), filter, Some((db, coll))))
}

/// A fixed, already sorted (ascending) list of elements.
struct StaticLeaf {
    items: VecDeque<Elem>,
    bounds: Bounds,
}

impl Stream for StaticLeaf {
    fn next(&mut self, _ev: &mut Eval<'_>) -> Result<Option<Elem>> {
        loop {
            let e = if self.bounds.desc { self.items.pop_back() } else { self.items.pop_front() };
            let Some(e) = e else { return Ok(None) };
            match self.bounds.check(&e.key) {
                Verdict::Take => return Ok(Some(e)),
                Verdict::Skip => continue,
                Verdict::Stop => {
                    self.items.clear();
                    return Ok(None);
                }
            }
        }
    }
}

// ---- composites ----

/// A stream with one element of lookahead.
struct Peek {
    s: BoxStream,
    head: Option<Option<Elem>>,
}

impl Peek {
    fn new(s: BoxStream) -> Peek {
        Peek { s, head: None }
    }
    fn peek(&mut self, ev: &mut Eval<'_>) -> Result<Option<&Elem>> {
        if self.head.is_none() {
            self.head = Some(self.s.next(ev)?);
        }
        Ok(self.head.as_ref().and_then(|h| h.as_ref()))
    }
    fn next(&mut self, ev: &mut Eval<'_>) -> Result<Option<Elem>> {
        match self.head.take() {
            Some(h) => Ok(h),
            None => self.s.next(ev),
        }
    }
}

/// Is `a` before `b` in the stream direction?
fn before(desc: bool, a: &[u8], b: &[u8]) -> bool {
    if desc {
        a > b
    } else {
        a < b
    }
}

#[derive(PartialEq, Eq)]
struct HeapItem {
    key: Vec<u8>,
    idx: usize,
    desc: bool,
}

impl Ord for HeapItem {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap pops the greatest: make "first in stream order" the greatest.
        let k = self.key.cmp(&other.key);
        let k = if self.desc { k } else { k.reverse() };
        k.then_with(|| other.idx.cmp(&self.idx))
    }
}

impl PartialOrd for HeapItem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// K-way merge with dedup of equal keys.
struct Union {
    desc: bool,
    children: Vec<BoxStream>,
    slots: Vec<Option<Elem>>,
    heap: BinaryHeap<HeapItem>,
    started: bool,
}

impl Union {
    fn new(desc: bool, children: Vec<BoxStream>) -> Union {
        let n = children.len();
        Union { desc, children, slots: (0..n).map(|_| None).collect(), heap: BinaryHeap::new(), started: false }
    }

    fn refill(&mut self, ev: &mut Eval<'_>, i: usize) -> Result<()> {
        if let Some(e) = self.children[i].next(ev)? {
            self.heap.push(HeapItem { key: e.key.clone(), idx: i, desc: self.desc });
            self.slots[i] = Some(e);
        }
        Ok(())
    }
}

impl Stream for Union {
    fn next(&mut self, ev: &mut Eval<'_>) -> Result<Option<Elem>> {
        if !self.started {
            self.started = true;
            for i in 0..self.children.len() {
                self.refill(ev, i)?;
            }
        }
        let Some(top) = self.heap.pop() else { return Ok(None) };
        let mut e = self.slots[top.idx].take();
        self.refill(ev, top.idx)?;
        while self.heap.peek().map(|h| h.key == top.key).unwrap_or(false) {
            if let Some(dup) = self.heap.pop() {
                if let (Some(e), Some(d)) = (e.as_mut(), self.slots[dup.idx].take()) {
                    merge_sources(&mut e.sources, d.sources);
                }
                self.refill(ev, dup.idx)?;
            }
        }
        Ok(e)
    }
}

struct Intersection {
    desc: bool,
    first: BoxStream,
    others: Vec<Peek>,
}

impl Stream for Intersection {
    fn next(&mut self, ev: &mut Eval<'_>) -> Result<Option<Elem>> {
        'outer: loop {
            let Some(mut a) = self.first.next(ev)? else { return Ok(None) };
            for o in &mut self.others {
                loop {
                    let Some(h) = o.peek(ev)? else { return Ok(None) };
                    if before(self.desc, &h.key, &a.key) {
                        o.next(ev)?;
                        continue;
                    }
                    if h.key != a.key {
                        continue 'outer;
                    }
                    if !h.sources.is_empty() {
                        let more = h.sources.clone();
                        merge_sources(&mut a.sources, more);
                    }
                    break;
                }
            }
            return Ok(Some(a));
        }
    }
}

struct Difference {
    desc: bool,
    first: BoxStream,
    others: Vec<Peek>,
}

impl Stream for Difference {
    fn next(&mut self, ev: &mut Eval<'_>) -> Result<Option<Elem>> {
        'outer: loop {
            let Some(a) = self.first.next(ev)? else { return Ok(None) };
            for o in &mut self.others {
                while let Some(h) = o.peek(ev)? {
                    if before(self.desc, &h.key, &a.key) {
                        o.next(ev)?;
                        continue;
                    }
                    if h.key == a.key {
                        continue 'outer;
                    }
                    break;
                }
            }
            return Ok(Some(a));
        }
    }
}

struct Distinct {
    child: BoxStream,
    last: Option<Vec<u8>>,
}

impl Stream for Distinct {
    fn next(&mut self, ev: &mut Eval<'_>) -> Result<Option<Elem>> {
        loop {
            let Some(e) = self.child.next(ev)? else { return Ok(None) };
            let dkey = e.key[..e.dlen].to_vec();
            if self.last.as_ref() == Some(&dkey) {
                continue;
            }
            self.last = Some(dkey.clone());
            let mut tuple = e.tuple;
            if e.dlen < e.key.len() && tuple.len() > 1 {
                tuple.pop();
            }
            let dlen = dkey.len();
            return Ok(Some(Elem { key: dkey, dlen, tuple, out: e.out, sources: e.sources }));
        }
    }
}

/// `Reverse(set)`: the child read the other way, keys inverted so parents merge it in
/// reversed order.
struct Invert {
    child: BoxStream,
}

impl Stream for Invert {
    fn next(&mut self, ev: &mut Eval<'_>) -> Result<Option<Elem>> {
        Ok(self.child.next(ev)?.map(|mut e| {
            for b in &mut e.key {
                *b = !*b;
            }
            e
        }))
    }
}

struct FilterSet {
    child: BoxStream,
    lambda: Lambda,
}

impl Stream for FilterSet {
    fn next(&mut self, ev: &mut Eval<'_>) -> Result<Option<Elem>> {
        loop {
            let Some(e) = self.child.next(ev)? else { return Ok(None) };
            match ev.apply_transient(&self.lambda, vec![e.out.clone()])? {
                Value::Bool(true) => return Ok(Some(e)),
                Value::Bool(false) => continue,
                other => return Err(wrong_type("Boolean", &other)),
            }
        }
    }
}

/// `Join`: built on first use (the source is read whole), then a union of the targets.
struct Join {
    source: Value,
    with: Value,
    ctx: Ctx,
    inner: Option<Union>,
}

impl Stream for Join {
    fn next(&mut self, ev: &mut Eval<'_>) -> Result<Option<Elem>> {
        if self.inner.is_none() {
            let mut src = open(ev, &self.source, &Ctx { hint: 256, ..Ctx::default() })?;
            let lambda = match &self.with {
                Value::Query(_) => Some(ev.lambda_from_value(&self.with)?),
                _ => None,
            };
            let index = match &self.with {
                Value::Ref(idx) => {
                    let (db, def) = ev.index_def(idx)?;
                    Some((db, def, idx.clone()))
                }
                _ => None,
            };
            // Each target is read from its start, so small first chunks.
            let child_ctx = Ctx { hint: 8, ..self.ctx.clone() };
            let mut children: Vec<BoxStream> = Vec::new();
            while let Some(e) = src.next(ev)? {
                if children.len() >= MATERIALIZE_MAX {
                    return Err(too_large());
                }
                let child = match (&index, &lambda) {
                    (Some((db, def, idx)), _) => {
                        let source = Value::Set(Box::new(Value::object([
                            ("match", Value::Ref(idx.clone())),
                            ("terms", e.out.clone()),
                        ])));
                        let terms = Value::Array(normalize_terms(def.terms.len(), Some(&e.out)));
                        let filter = ev.index_filter(*db, def, &terms)?;
                        filtered(match_leaf(*db, def, Some(&e.out), &child_ctx, source), filter, None)
                    }
                    (None, Some(l)) => {
                        let target = ev.apply(l, vec![e.out])?;
                        if is_historical(&target) {
                            return Err(no_history());
                        }
                        if !is_set(&target) {
                            return Err(invalid_argument(format!(
                                "Join lambda must return a Set, it returned {}.",
                                target.type_name()
                            )));
                        }
                        open(ev, &target, &child_ctx)?
                    }
                    (None, None) => return Err(wrong_type("Index Ref or Lambda", &self.with)),
                };
                children.push(child);
            }
            self.inner = Some(Union::new(self.ctx.desc, children));
        }
        match &mut self.inner {
            Some(u) => u.next(ev),
            None => Ok(None),
        }
    }
}

fn too_large() -> FqlError {
    invalid_argument(format!(
        "Set operation would read more than {MATERIALIZE_MAX} elements; narrow the set (e.g. with Range or more specific terms)."
    ))
}

fn set_list(v: Option<&Value>) -> Vec<Value> {
    match v {
        Some(Value::Array(items)) => items.clone(),
        Some(other) => vec![other.clone()],
        None => Vec::new(),
    }
}

/// Open a stream over the elements of set `s`.
fn open(ev: &mut Eval<'_>, s: &Value, ctx: &Ctx) -> Result<BoxStream> {
    let data = match s {
        Value::Set(d) => d.as_ref(),
        Value::Ref(r) if r.is_native_collection() => {
            return match ev.resolve(r)? {
                Target::NativeColl { db, coll } => {
                    let name = native::name(coll).unwrap_or("collections");
                    // v4 scopes numbered native documents (keys, tokens) through their
                    // collection, and named ones (collections, databases, ...) directly.
                    if native::is_named(coll) {
                        open_docs(ev, db, coll, Ref::native(name), r.database.clone(), ctx, s)
                    } else {
                        open_docs(
                            ev,
                            db,
                            coll,
                            Ref::native(name).with_database(r.database.as_deref().cloned()),
                            None,
                            ctx,
                            s,
                        )
                    }
                }
                _ => Err(wrong_type("Set", s)),
            };
        }
        other => return Err(wrong_type("Set", other)),
    };
    let Some(o) = data.as_object() else { return Err(wrong_type("Set", s)) };
    let get = |k: &str| o.get(k);
    if let Some(idx) = get("match") {
        let Value::Ref(idx) = idx else { return Err(wrong_type("Index Ref", idx)) };
        return open_match(ev, idx, get("terms"), ctx);
    }
    if let Some(c) = get("documents") {
        let Value::Ref(cr) = c else { return Err(wrong_type("Collection Ref", c)) };
        return match ev.resolve(cr)? {
            Target::Doc { db, coll: native::COLLECTIONS, id } => {
                let coll = ev
                    .collection_id(db, &id)?
                    .ok_or_else(|| FqlError::new(code::INVALID_REF, format!("Collection `{id}` does not exist.")))?;
                open_docs(ev, db, coll, cr.clone(), None, ctx, s)
            }
            _ => Err(invalid_argument(format!("Collection Ref expected, {cr} provided."))),
        };
    }
    for op in ["union", "intersection", "difference"] {
        if let Some(v) = get(op) {
            let sets = set_list(Some(v));
            if op != "union" && sets.iter().any(is_historical) {
                return Err(no_history());
            }
            let mut children = Vec::with_capacity(sets.len());
            for c in &sets {
                children.push(open(ev, c, ctx)?);
            }
            return Ok(match op {
                "union" => Box::new(Union::new(ctx.desc, children)),
                _ if children.is_empty() => Box::new(Union::new(ctx.desc, children)),
                _ => {
                    let mut it = children.into_iter();
                    let first = it.next().ok_or_else(|| wrong_type("Set", s))?;
                    let others = it.map(Peek::new).collect();
                    if op == "intersection" {
                        Box::new(Intersection { desc: ctx.desc, first, others })
                    } else {
                        Box::new(Difference { desc: ctx.desc, first, others })
                    }
                }
            });
        }
    }
    if let Some(c) = get("distinct") {
        let child = open(ev, c, ctx)?;
        return Ok(Box::new(Distinct { child, last: None }));
    }
    if let (Some(src), Some(with)) = (get("join"), get("with")) {
        if is_historical(src) {
            return Err(no_history());
        }
        return Ok(Box::new(Join { source: src.clone(), with: with.clone(), ctx: ctx.clone(), inner: None }));
    }
    if let (Some(c), Some(from), Some(to)) = (get("range"), get("from"), get("to")) {
        if is_historical(c) {
            return Err(no_history());
        }
        let mut sub = ctx.clone();
        sub.ranges.push((as_tuple(from), as_tuple(to)));
        return open(ev, c, &sub);
    }
    if let Some(c) = get("reverse") {
        if is_historical(c) {
            return Err(no_history());
        }
        let sub = Ctx {
            desc: !ctx.desc,
            start: ctx.start.clone(),
            ranges: ctx.ranges.iter().map(|(f, t)| (t.clone(), f.clone())).collect(),
            hint: ctx.hint,
            sources: ctx.sources,
        };
        return Ok(Box::new(Invert { child: open(ev, c, &sub)? }));
    }
    if let (Some(lam), Some(c)) = (get("filter"), get("collection")) {
        if is_historical(c) {
            return Err(no_history());
        }
        let lambda = ev.lambda_from_value(lam)?;
        return Ok(Box::new(FilterSet { child: open(ev, c, ctx)?, lambda }));
    }
    if let Some(r) = get("singleton") {
        // The set holds the document while it exists.
        let Value::Ref(dr) = r else { return Err(wrong_type("Ref", r)) };
        let mut items = VecDeque::new();
        if doc_exists(ev, dr)? {
            let key = tally_value::encode(r);
            let dlen = key.len();
            let mut e = Elem::new(key, dlen, vec![r.clone()], r.clone());
            if ctx.sources {
                e.sources.push(s.clone());
            }
            items.push_back(e);
        }
        return Ok(Box::new(StaticLeaf { items, bounds: Bounds::new(ctx, &[]) }));
    }
    if let Some(x) = get("events") {
        return events::open(ev, x, s, ctx);
    }
    Err(wrong_type("Set", s))
}

// ---------------------------------------------------------------------------------------
// Public API for other modules
// ---------------------------------------------------------------------------------------

/// A forward iterator over the elements of a set.
pub(crate) struct SetIter {
    s: BoxStream,
    n: usize,
}

impl SetIter {
    pub(crate) fn next(&mut self, ev: &mut Eval<'_>) -> Result<Option<Value>> {
        // A whole set walked in one step (`Count`, `Sum`, `Reduce` over `Documents(c)`)
        // reads between steps: the inline pass's work bound is checked here too, so such
        // a step stops and runs again off the async threads instead of holding one for
        // the whole walk (100,000 documents counted stalled `/ping` for 0.2–0.4 s). The
        // bound is off in the executor and on the long pool, so results never depend on it.
        if self.n.is_multiple_of(SET_WORK_CHECK_EVERY) {
            ev.check_work()?;
        }
        Ok(self.s.next(ev)?.map(|e| {
            self.n += 1;
            e.out
        }))
    }

    /// Like `next`, but errors once more than [`MATERIALIZE_MAX`] elements were read.
    #[allow(dead_code)] // API for other modules (ToArray over sets, ...)
    pub(crate) fn next_bounded(&mut self, ev: &mut Eval<'_>) -> Result<Option<Value>> {
        if self.n >= MATERIALIZE_MAX {
            return Err(too_large());
        }
        self.next(ev)
    }
}

/// Elements of a set walked between checks of the inline pass's work bound.
const SET_WORK_CHECK_EVERY: usize = 256;

/// Iterate the elements of `set` (a set or a native collection ref) in order.
pub(crate) fn iter(ev: &mut Eval<'_>, set: &Value) -> Result<SetIter> {
    Ok(SetIter { s: open(ev, set, &Ctx { hint: 256, ..Ctx::default() })?, n: 0 })
}

/// Iterate the elements of `set` last to first.
#[allow(dead_code)] // API for other modules (ToArray over sets, ...)
pub(crate) fn iter_rev(ev: &mut Eval<'_>, set: &Value) -> Result<SetIter> {
    Ok(SetIter { s: open(ev, set, &Ctx { desc: true, hint: 256, ..Ctx::default() })?, n: 0 })
}

/// All elements of `set`, bounded by [`MATERIALIZE_MAX`] and the array length limit.
#[allow(dead_code)] // API for other modules (ToArray over sets, ...)
pub(crate) fn to_vec(ev: &mut Eval<'_>, set: &Value) -> Result<Vec<Value>> {
    let max = MATERIALIZE_MAX.min(ev.limits.array_len_max);
    let mut it = iter(ev, set)?;
    let mut out = Vec::new();
    while let Some(v) = it.next(ev)? {
        if out.len() >= max {
            return Err(too_large());
        }
        out.push(v);
    }
    Ok(out)
}

/// One page of a set, as `Paginate` returns it.
pub(crate) struct PageOpts {
    pub size: usize,
    pub after: Option<Value>,
    /// `Some(Value::Null)` = from the end.
    pub before: Option<Value>,
    /// Show each element as `{value, sources}`.
    pub sources: bool,
}

pub(crate) fn page(ev: &mut Eval<'_>, s: &Value, opts: &PageOpts) -> Result<Value> {
    let size = opts.size;
    let hist = is_historical(s);
    // Sets of values page with array cursors (the element's sort tuple); event sets with
    // event cursors (`{ts, action, document}`).
    let cursor_of = |e: &Elem| -> Value {
        if hist {
            e.tuple.first().cloned().unwrap_or(Value::Null)
        } else {
            Value::Array(e.tuple.clone())
        }
    };
    let echo = |v: &Value| -> Result<Value> {
        if hist {
            events::echo_cursor(v)
        } else {
            Ok(Value::Array(as_tuple(v)))
        }
    };
    let render = |e: Elem| -> Value {
        if opts.sources {
            Value::object([("value", e.out), ("sources", Value::Array(e.sources))])
        } else {
            e.out
        }
    };
    let mut out = Object::new();
    if let (Some(before), None) = (&opts.before, &opts.after) {
        let start = if before.is_null() { None } else { Some(Start { tuple: as_tuple(before), inclusive: false }) };
        let ctx = Ctx { desc: true, start, ranges: Vec::new(), hint: size + 1, sources: opts.sources };
        let mut st = open(ev, s, &ctx)?;
        let mut got = Vec::with_capacity(size + 1);
        while got.len() <= size {
            match st.next(ev)? {
                Some(e) => got.push(e),
                None => break,
            }
        }
        let more = got.len() > size;
        got.truncate(size);
        got.reverse();
        if more {
            if let Some(first) = got.first() {
                out.insert("before".into(), cursor_of(first));
            }
        }
        if !before.is_null() {
            out.insert("after".into(), echo(before)?);
        }
        out.insert("data".into(), Value::Array(got.into_iter().map(render).collect()));
    } else {
        let start = opts.after.as_ref().map(|a| Start { tuple: as_tuple(a), inclusive: true });
        let ctx = Ctx { desc: false, start, ranges: Vec::new(), hint: size + 1, sources: opts.sources };
        let mut st = open(ev, s, &ctx)?;
        let mut got = Vec::with_capacity(size + 1);
        while got.len() <= size {
            match st.next(ev)? {
                Some(e) => got.push(e),
                None => break,
            }
        }
        if got.len() > size {
            if let Some(next) = got.pop() {
                out.insert("after".into(), cursor_of(&next));
            }
        }
        if let Some(a) = &opts.after {
            let b = match (hist, got.first()) {
                (false, Some(first)) => cursor_of(first),
                _ => echo(a)?,
            };
            out.insert("before".into(), b);
        }
        out.insert("data".into(), Value::Array(got.into_iter().map(render).collect()));
    }
    Ok(Value::Object(out))
}

fn read_ts_of(v: &Value) -> Result<u64> {
    match v {
        Value::Time(t) => {
            let micros = t.timestamp_micros();
            if micros < 0 {
                return Err(invalid_argument("Time must be after the Unix epoch."));
            }
            Ok(micros as u64)
        }
        Value::Long(n) if *n >= 0 => Ok(*n as u64),
        other => Err(wrong_type("Time", other)),
    }
}

fn paginate(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let s = ev.primary(call)?;
    let size = match ev.opt_arg(call, "size")? {
        None => DEFAULT_PAGE_SIZE,
        Some(Value::Long(n)) if n >= 1 && (n as u64) <= ev.limits.page_size_max as u64 => n as usize,
        Some(Value::Long(n)) => {
            return Err(invalid_argument(format!(
                "Page size must be between 1 and {}, {n} given.",
                ev.limits.page_size_max
            ))
            .at("size"))
        }
        Some(other) => return Err(wrong_type("Integer", &other).at("size")),
    };
    let ts = match ev.opt_arg(call, "ts")? {
        None | Some(Value::Null) => None,
        Some(v) => Some(read_ts_of(&v).map_err(|e| e.at("ts"))?),
    };
    let mut flags = [false; 2];
    for (i, opt) in ["events", "sources"].into_iter().enumerate() {
        match ev.opt_arg(call, opt)? {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => flags[i] = b,
            Some(other) => return Err(wrong_type("Boolean", &other).at(opt)),
        }
    }
    let [events, sources] = flags;
    // `Paginate(ref)` pages the document as a one-element set (`Singleton(ref)`);
    // `events: true` pages the history of whatever is paginated.
    let s = match s {
        Value::Ref(r) if !r.is_native_collection() => {
            if events {
                set(vec![("events", Value::Ref(r))])
            } else {
                set(vec![("singleton", Value::Ref(r))])
            }
        }
        s if events && is_set(&s) && !is_historical(&s) => set(vec![("events", s)]),
        s => s,
    };
    let mut after = ev.opt_arg(call, "after")?;
    let before = ev.opt_arg(call, "before")?;
    if after.is_none() && before.is_none() {
        // Legacy `cursor: {after: x}` / `cursor: {before: x}`.
        if let Some(c) = ev.opt_arg(call, "cursor")? {
            if let Some(a) = c.get("after") {
                after = Some(a.clone());
            } else if let Some(b) = c.get("before") {
                let opts = PageOpts { size, after: None, before: Some(b.clone()), sources };
                return run_page(ev, &s, &opts, ts);
            } else if !c.is_null() {
                return Err(invalid_argument(
                    "Invalid cursor object. Expected an object with either 'before' or 'after' key in it.",
                )
                .at("cursor"));
            }
        }
    }
    // `after: null` means "from the start".
    let after = after.filter(|a| !a.is_null());
    let opts = PageOpts { size, after, before, sources };
    run_page(ev, &s, &opts, ts)
}

fn run_page(ev: &mut Eval<'_>, s: &Value, opts: &PageOpts, ts: Option<u64>) -> Result<Value> {
    if !is_set(s) {
        let e = invalid_argument(format!("Set or Ref expected, {} provided.", s.type_name()));
        return Err(e.at("paginate"));
    }
    let r = match ts {
        Some(ts) => ev.with_read_ts(ts, |ev| page(ev, s, opts)),
        None => page(ev, s, opts),
    };
    r.map_err(|e| e.at("paginate"))
}
