//! Type checks (`is_*`), conversions (`to_string to_number to_double to_integer
//! to_object to_array`), path selection (`select select_all`) and `merge`.
//!
//! The schema-kind checks (`is_collection`, `is_index`, `is_doc`, ...) decide by the
//! *shape* of a ref (or of the `ref` field of a document object): `Collection("x")` is a
//! collection because it lives in the native `collections` collection. They never read
//! storage, so they answer the same for a ref whose document does not exist (v4 does the
//! same for refs; it is also what keeps these checks free of reads).

use tally_value::{Object, Ref, Value};

use crate::error::{code, invalid_argument, wrong_type, FqlError, Result};
use crate::eval::Eval;
use crate::expr::{Call, Expr, FnSpec};

pub(crate) static SPECS: &[FnSpec] = &[
    FnSpec { name: "is_number", optional: &[], required: &[], handler: is_number },
    FnSpec { name: "is_double", optional: &[], required: &[], handler: is_double },
    FnSpec { name: "is_integer", optional: &[], required: &[], handler: is_integer },
    FnSpec { name: "is_boolean", optional: &[], required: &[], handler: is_boolean },
    FnSpec { name: "is_null", optional: &[], required: &[], handler: is_null },
    FnSpec { name: "is_bytes", optional: &[], required: &[], handler: is_bytes },
    FnSpec { name: "is_timestamp", optional: &[], required: &[], handler: is_timestamp },
    FnSpec { name: "is_date", optional: &[], required: &[], handler: is_date },
    FnSpec { name: "is_string", optional: &[], required: &[], handler: is_string },
    FnSpec { name: "is_array", optional: &[], required: &[], handler: is_array },
    FnSpec { name: "is_object", optional: &[], required: &[], handler: is_object },
    FnSpec { name: "is_ref", optional: &[], required: &[], handler: is_ref },
    FnSpec { name: "is_set", optional: &[], required: &[], handler: is_set },
    FnSpec { name: "is_doc", optional: &[], required: &[], handler: is_doc },
    FnSpec { name: "is_lambda", optional: &[], required: &[], handler: is_lambda },
    FnSpec { name: "is_collection", optional: &[], required: &[], handler: is_collection },
    FnSpec { name: "is_database", optional: &[], required: &[], handler: is_database },
    FnSpec { name: "is_index", optional: &[], required: &[], handler: is_index },
    FnSpec { name: "is_function", optional: &[], required: &[], handler: is_function },
    FnSpec { name: "is_key", optional: &[], required: &[], handler: is_key },
    FnSpec { name: "is_token", optional: &[], required: &[], handler: is_token },
    FnSpec { name: "is_credentials", optional: &[], required: &[], handler: is_credentials },
    FnSpec { name: "is_role", optional: &[], required: &[], handler: is_role },
    FnSpec { name: "to_string", optional: &[], required: &[], handler: to_string },
    FnSpec { name: "to_number", optional: &[], required: &[], handler: to_number },
    FnSpec { name: "to_double", optional: &[], required: &[], handler: to_double },
    FnSpec { name: "to_integer", optional: &[], required: &[], handler: to_integer },
    FnSpec { name: "to_object", optional: &[], required: &[], handler: to_object },
    FnSpec { name: "to_array", optional: &[], required: &[], handler: to_array },
    FnSpec { name: "select", optional: &["default"], required: &["from"], handler: select },
    FnSpec { name: "select_all", optional: &[], required: &["from"], handler: select_all },
    FnSpec { name: "merge", optional: &["lambda"], required: &["with"], handler: merge },
];

// ---- type checks ----

fn check(ev: &mut Eval<'_>, call: &Call, pred: fn(&Value) -> bool) -> Result<Value> {
    let v = ev.primary(call)?;
    Ok(Value::Bool(pred(&v)))
}

macro_rules! type_check {
    ($($name:ident => $pred:expr;)*) => {
        $(fn $name(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
            check(ev, call, $pred)
        })*
    };
}

type_check! {
    is_number => |v| matches!(v, Value::Long(_) | Value::Double(_));
    is_double => |v| matches!(v, Value::Double(_));
    is_integer => |v| matches!(v, Value::Long(_));
    is_boolean => |v| matches!(v, Value::Bool(_));
    is_null => |v| matches!(v, Value::Null);
    is_bytes => |v| matches!(v, Value::Bytes(_));
    is_timestamp => |v| matches!(v, Value::Time(_));
    is_date => |v| matches!(v, Value::Date(_));
    is_string => |v| matches!(v, Value::String(_));
    is_array => |v| matches!(v, Value::Array(_));
    is_object => |v| matches!(v, Value::Object(_));
    is_ref => |v| matches!(v, Value::Ref(_));
    // Native collection refs such as `Collections()` are sets of their documents.
    is_set => |v| matches!(v, Value::Set(_)) || matches!(v, Value::Ref(r) if r.is_native_collection());
    is_lambda => |v| matches!(v, Value::Query(_));
    is_doc => is_doc_value;
    // `Collections()` itself counts as a collection (the collection of collections).
    is_collection => |v| schema_kind(v, "collections") || matches!(v, Value::Ref(r) if r.is_native_collection());
    is_database => |v| schema_kind(v, "databases");
    is_index => |v| schema_kind(v, "indexes");
    is_function => |v| schema_kind(v, "functions");
    is_key => |v| schema_kind(v, "keys");
    is_token => |v| schema_kind(v, "tokens");
    is_credentials => |v| schema_kind(v, "credentials");
    is_role => |v| schema_kind(v, "roles");
}

/// The ref a value stands for: the ref itself, or the `ref` field of a document object.
fn ref_of(v: &Value) -> Option<&Ref> {
    match v {
        Value::Ref(r) => Some(r),
        Value::Object(o) => match o.get("ref") {
            Some(Value::Ref(r)) if o.contains_key("ts") => Some(r),
            _ => None,
        },
        _ => None,
    }
}

/// A ref (or document) living in the native collection `native`.
fn schema_kind(v: &Value, native: &str) -> bool {
    ref_of(v).is_some_and(|r| r.native_parent() == Some(native))
}

/// A document (an object with `ref` and `ts`) or a ref to a document of a user collection.
fn is_doc_value(v: &Value) -> bool {
    match v {
        Value::Ref(r) => r.user_collection_name().is_some(),
        Value::Object(_) => ref_of(v).is_some_and(|r| r.collection.is_some()),
        _ => false,
    }
}

// ---- conversions ----

/// Java's `Double.toString`, which v4 uses to print doubles: `10.0`, `3.14`, `1.0E21`,
/// `1.0E-5`.
pub(crate) fn java_double(d: f64) -> String {
    if d.is_nan() {
        return "NaN".into();
    }
    if d.is_infinite() {
        return if d > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    if d == 0.0 {
        return if d.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    let a = d.abs();
    if (1e-3..1e7).contains(&a) {
        let s = format!("{d}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        // Shortest round-trip digits, in Java's computerized scientific notation.
        let s = format!("{d:e}");
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let mant = if mant.contains('.') { mant.to_string() } else { format!("{mant}.0") };
        format!("{mant}E{exp}")
    }
}

/// Text form of a scalar for `ToString`; `None` for values that have none.
pub(crate) fn scalar_string(v: &Value) -> Option<String> {
    Some(match v {
        Value::String(s) => s.clone(),
        Value::Long(n) => n.to_string(),
        Value::Double(d) => java_double(*d),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        Value::Time(t) => tally_value::format_time(t),
        Value::Date(d) => d.format("%Y-%m-%d").to_string(),
        _ => return None,
    })
}

fn to_string(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let v = ev.primary(call)?;
    match scalar_string(&v) {
        Some(s) => Ok(Value::String(s)),
        None => Err(invalid_argument(format!("Cannot cast {} to String; only scalar values convert.", v.type_name()))
            .at("to_string")),
    }
}

/// Parse a number as FQL reads it: an integer if it is one, else a double.
fn parse_number(s: &str) -> Option<Value> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i64>() {
        return Some(Value::Long(n));
    }
    // Rust accepts "inf"/"nan" spellings; FQL numbers are finite.
    match t.parse::<f64>() {
        Ok(d) if d.is_finite() && t.bytes().any(|b| b.is_ascii_digit()) => Some(Value::Double(d)),
        _ => None,
    }
}

fn cannot_cast(v: &Value, to: &str, call: &Call) -> FqlError {
    let what = match v {
        Value::String(s) => format!("Cannot cast String {s:?} to {to}."),
        other => format!("Cannot cast {} to {to}.", other.type_name()),
    };
    invalid_argument(what).at(call.name())
}

fn to_number(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let v = ev.primary(call)?;
    match &v {
        Value::Long(_) | Value::Double(_) => Ok(v),
        Value::String(s) => parse_number(s).ok_or_else(|| cannot_cast(&v, "Number", call)),
        _ => Err(cannot_cast(&v, "Number", call)),
    }
}

fn to_double(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let v = ev.primary(call)?;
    match &v {
        Value::Double(_) => Ok(v),
        Value::Long(n) => Ok(Value::Double(*n as f64)),
        Value::String(s) => match parse_number(s) {
            Some(Value::Long(n)) => Ok(Value::Double(n as f64)),
            Some(d) => Ok(d),
            None => Err(cannot_cast(&v, "Double", call)),
        },
        _ => Err(cannot_cast(&v, "Double", call)),
    }
}

/// A double truncated toward zero, if it fits an integer.
pub(crate) fn double_to_long(d: f64) -> Option<i64> {
    let t = d.trunc();
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if d.is_finite() && (-TWO_63..TWO_63).contains(&t) {
        Some(t as i64)
    } else {
        None
    }
}

fn to_integer(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let v = ev.primary(call)?;
    let out = match &v {
        Value::Long(n) => Some(*n),
        Value::Double(d) => double_to_long(*d),
        Value::String(s) => match parse_number(s) {
            Some(Value::Long(n)) => Some(n),
            Some(Value::Double(d)) => double_to_long(d),
            _ => None,
        },
        _ => None,
    };
    out.map(Value::Long).ok_or_else(|| cannot_cast(&v, "Integer", call))
}

fn to_object(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let v = ev.primary(call)?;
    match v {
        Value::Object(_) => Ok(v),
        Value::Array(items) => {
            let mut out = Object::new();
            for (i, item) in items.into_iter().enumerate() {
                let bad = || {
                    invalid_argument("Field/value pair expected: each element must be a [String, value] array.")
                        .at(i)
                        .at("to_object")
                };
                match item {
                    Value::Array(pair) if pair.len() == 2 => {
                        let mut it = pair.into_iter();
                        let (k, val) = (it.next().unwrap_or(Value::Null), it.next().unwrap_or(Value::Null));
                        match k {
                            Value::String(k) => {
                                out.insert(k.into(), val);
                            }
                            _ => return Err(bad()),
                        }
                    }
                    _ => return Err(bad()),
                }
            }
            Ok(Value::Object(out))
        }
        other => Err(invalid_argument(format!(
            "Cannot cast {} to Object; an array of [field, value] pairs is expected.",
            other.type_name()
        ))
        .at("to_object")),
    }
}

fn to_array(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    match ev.primary(call)? {
        Value::Object(o) => {
            Ok(Value::Array(o.into_iter().map(|(k, v)| Value::Array(vec![Value::String(k.into()), v])).collect()))
        }
        v @ Value::Array(_) => Ok(v),
        other => Err(invalid_argument(format!("Cannot cast {} to Array; an object is expected.", other.type_name()))
            .at("to_array")),
    }
}

// ---- paths ----

/// One element of a path. A field name is a `CompactString`: the names a path holds are
/// short (`data`, `balance`) and kept inline, so reading a path allocates nothing.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum PathSeg {
    Key(compact_str::CompactString),
    Index(i64),
}

/// A `select` path: a field name, an array index, or an array of them. Errors carry
/// the index of a bad element (the caller adds the argument key).
pub(crate) fn parse_path(v: &Value) -> Result<Vec<PathSeg>> {
    match v {
        Value::Array(items) => path_of(items.iter()),
        other => Ok(vec![path_seg(other)?]),
    }
}

/// The path whose elements are `items`; an error carries the index of a bad one.
fn path_of<'v>(items: impl Iterator<Item = &'v Value>) -> Result<Vec<PathSeg>> {
    items.enumerate().map(|(i, x)| path_seg(x).map_err(|e| e.at(i))).collect()
}

fn path_seg(v: &Value) -> Result<PathSeg> {
    match v {
        Value::String(s) => Ok(PathSeg::Key(s.as_str().into())),
        Value::Long(n) => Ok(PathSeg::Index(*n)),
        other => Err(invalid_argument(format!(
            "Path element expected (a String field name or an Integer index), {} provided.",
            other.type_name()
        ))),
    }
}

/// A page: an object with a `data` array and nothing else but its cursors.
fn is_page(o: &Object) -> bool {
    matches!(o.get("data"), Some(Value::Array(_)))
        && o.keys().all(|k| matches!(k.as_str(), "data" | "before" | "after"))
}

/// One element of a path as a lookup uses it: borrowed from a [`PathSeg`], or from a
/// literal of the query's own path array (read in place, nothing copied).
#[derive(Clone, Copy)]
pub(crate) enum Seg<'a> {
    Key(&'a str),
    Index(i64),
}

/// What a path is made of: its parsed elements, or the literals of a path written in the
/// query (already checked by [`check_lits`]).
pub(crate) trait AsSeg {
    fn seg(&self) -> Seg<'_>;
}

impl AsSeg for PathSeg {
    fn seg(&self) -> Seg<'_> {
        match self {
            PathSeg::Key(k) => Seg::Key(k),
            PathSeg::Index(i) => Seg::Index(*i),
        }
    }
}

impl AsSeg for Expr {
    fn seg(&self) -> Seg<'_> {
        match self {
            Expr::Lit(Value::String(s)) => Seg::Key(s),
            Expr::Lit(Value::Long(i)) => Seg::Index(*i),
            // Not a path element: `check_lits` refused it before any lookup. An index no
            // value has, so it could only find nothing.
            _ => Seg::Index(-1),
        }
    }
}

impl std::fmt::Display for Seg<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seg::Key(k) => write!(f, "{k}"),
            Seg::Index(i) => write!(f, "{i}"),
        }
    }
}

/// One step into a value: object fields, array indexes (a page indexes its `data`), and
/// the `id`, `collection` and `database` fields of a ref (a ref is not fetched).
fn step<'v>(v: &'v Value, seg: Seg<'_>) -> Option<std::borrow::Cow<'v, Value>> {
    use std::borrow::Cow;
    match (v, seg) {
        (Value::Object(o), Seg::Key(k)) => o.get(k).map(Cow::Borrowed),
        (Value::Object(o), Seg::Index(i)) if is_page(o) => match o.get("data") {
            Some(Value::Array(a)) => usize::try_from(i).ok().and_then(|i| a.get(i)).map(Cow::Borrowed),
            _ => None,
        },
        (Value::Array(a), Seg::Index(i)) => usize::try_from(i).ok().and_then(|i| a.get(i)).map(Cow::Borrowed),
        (Value::Ref(r), Seg::Key(k)) => match k {
            "id" => Some(Cow::Owned(Value::String(r.id.to_string()))),
            "collection" | "class" => r.collection.as_deref().map(|c| Cow::Owned(Value::Ref(c.clone()))),
            "database" => r.database.as_deref().map(|d| Cow::Owned(Value::Ref(d.clone()))),
            _ => None,
        },
        _ => None,
    }
}

/// The value at `path` inside `v`, if there is one (only the result is cloned).
pub(crate) fn select_path<T: AsSeg>(v: &Value, path: &[T]) -> Option<Value> {
    let mut cur: &Value = v;
    for (i, seg) in path.iter().enumerate() {
        match step(cur, seg.seg())? {
            std::borrow::Cow::Borrowed(b) => cur = b,
            std::borrow::Cow::Owned(o) => return select_path(&o, &path[i + 1..]),
        }
    }
    Some(cur.clone())
}

fn path_text<T: AsSeg>(path: &[T]) -> String {
    let parts: Vec<String> = path.iter().map(|s| s.seg().to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// The path argument. Written as an array of literals (`["data", "balance"]`, the usual
/// case) it is read in place, after the steps and charges building the array would make
/// (`Eval::lit_array_arg`), instead of being built as a value and copied again.
fn path_arg(ev: &mut Eval<'_>, call: &Call) -> Result<Vec<PathSeg>> {
    let name = call.name();
    if let Some(items) = ev.lit_array_arg(call, name)? {
        return path_of(items).map_err(|e| e.at(name));
    }
    ev.with_arg(call, name, parse_path)?.map_err(|e| e.at(name))
}

/// Refuses what [`path_of`] refuses of a path written as literals, with the same error,
/// without building the path.
fn check_lits(items: &[Expr]) -> Result<()> {
    for (i, v) in crate::eval::lit_values(items).enumerate() {
        if !matches!(v, Value::String(_) | Value::Long(_)) {
            if let Err(e) = path_seg(v) {
                return Err(e.at(i));
            }
        }
    }
    Ok(())
}

/// `Select(path, from, default?)`. `from` is looked into in place when it is a variable:
/// only the selected value is copied. A path written as an array of literals (the usual
/// `["data", "balance"]`) is read from the query in place, after the steps and charges
/// building it would make, and never built.
fn select(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let name = call.name();
    if let Some(items) = ev.lit_array_exprs(call, name)? {
        check_lits(items).map_err(|e| e.at(name))?;
        return select_at(ev, call, items);
    }
    let path = ev.with_arg(call, name, parse_path)?.map_err(|e| e.at(name))?;
    select_at(ev, call, &path)
}

/// `Select`'s lookup of `path` in its `from`, or its `default`.
fn select_at<T: AsSeg>(ev: &mut Eval<'_>, call: &Call, path: &[T]) -> Result<Value> {
    if let Some(v) = ev.with_arg(call, "from", |from| select_path(from, path))? {
        return Ok(v);
    }
    match call.get("default") {
        Some(_) => Ok(ev.opt_arg(call, "default")?.unwrap_or(Value::Null)),
        None => {
            Err(FqlError::new(code::VALUE_NOT_FOUND, format!("Value not found at path {}.", path_text(path)))
                .at("from"))
        }
    }
}

/// `SelectAll(path, from)`: like `Select`, but a field name applied to an array applies to
/// each of its elements, and every value found is collected.
fn select_all(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let path = path_arg(ev, call)?;
    let max = ev.limits.array_len_max;
    let mut out = Vec::new();
    ev.with_arg(call, "from", |from| collect_all(from, &path, &mut out, max))??;
    Ok(Value::Array(out))
}

fn collect_all(v: &Value, path: &[PathSeg], out: &mut Vec<Value>, max: usize) -> Result<()> {
    let Some((seg, rest)) = path.split_first() else {
        if out.len() >= max {
            return Err(invalid_argument(format!("SelectAll result exceeds {max} elements.")).at("select_all"));
        }
        out.push(v.clone());
        return Ok(());
    };
    match (v, seg) {
        (Value::Array(items), PathSeg::Key(_)) => {
            for item in items {
                collect_all(item, path, out, max)?;
            }
        }
        _ => {
            if let Some(next) = step(v, seg.seg()) {
                collect_all(&next, rest, out, max)?;
            }
        }
    }
    Ok(())
}

// ---- merge ----

/// `Merge(object, with, lambda?)`: merge `with` (an object, or an array of objects merged
/// in order) into `object`. For each field of `with`, the resolver `lambda(key, left,
/// right)` (default: `right`) gives the field's new value; `null` removes the field.
fn merge(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let mut out = match ev.primary(call)? {
        Value::Object(o) => o,
        other => return Err(wrong_type("Object", &other).at("merge")),
    };
    let with = match ev.arg(call, "with")? {
        Value::Object(o) => vec![o],
        Value::Array(items) => {
            let mut objs = Vec::with_capacity(items.len());
            for (i, it) in items.into_iter().enumerate() {
                match it {
                    Value::Object(o) => objs.push(o),
                    other => return Err(wrong_type("Object", &other).at(i).at("with")),
                }
            }
            objs
        }
        other => return Err(wrong_type("Object", &other).at("with")),
    };
    let resolver = match call.get("lambda") {
        Some(_) => Some(ev.lambda_arg(call, "lambda")?),
        None => None,
    };
    for obj in with {
        for (k, right) in obj {
            let v = match &resolver {
                None => right,
                Some(l) => {
                    let left = out.get(&k).cloned().unwrap_or(Value::Null);
                    ev.apply(l, vec![Value::String(k.to_string()), left, right]).map_err(|e| e.at("lambda"))?
                }
            };
            if v.is_null() {
                out.remove(&k);
            } else {
                out.insert(k, v);
            }
        }
    }
    Ok(Value::Object(out))
}
