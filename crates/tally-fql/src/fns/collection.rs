//! Collection functions over arrays, pages (objects with a `data` array; the result keeps
//! `before`/`after`) and, where FQL v4 allows, sets:
//! `map foreach filter reduce take drop append prepend count sum mean any all reverse
//! is_empty is_nonempty`.
//!
//! Aggregates (`count sum mean any all reduce`) over a page return a page whose `data`
//! holds the one result (`{"data": [n]}`), as Fauna does; over a set they return the bare
//! result. `is_empty`/`is_nonempty` always return a bare boolean.

use tally_value::{Object, Value};

use crate::error::{invalid_argument, wrong_type, Result};
use crate::eval::{Eval, Lambda};
use crate::expr::{Call, FnSpec};
use crate::fns::sets;

pub(crate) static SPECS: &[FnSpec] = &[
    FnSpec { name: "map", optional: &[], required: &["collection"], handler: map },
    FnSpec { name: "foreach", optional: &[], required: &["collection"], handler: foreach },
    FnSpec { name: "filter", optional: &[], required: &["collection"], handler: filter },
    FnSpec { name: "reduce", optional: &[], required: &["initial", "collection"], handler: reduce },
    FnSpec { name: "take", optional: &[], required: &["collection"], handler: take },
    FnSpec { name: "drop", optional: &[], required: &["collection"], handler: drop_ },
    FnSpec { name: "append", optional: &[], required: &["collection"], handler: append },
    FnSpec { name: "prepend", optional: &[], required: &["collection"], handler: prepend },
    FnSpec { name: "count", optional: &[], required: &[], handler: count },
    FnSpec { name: "sum", optional: &[], required: &[], handler: sum },
    FnSpec { name: "mean", optional: &[], required: &[], handler: mean },
    FnSpec { name: "any", optional: &[], required: &[], handler: any },
    FnSpec { name: "all", optional: &[], required: &[], handler: all },
    FnSpec { name: "reverse", optional: &[], required: &[], handler: reverse },
    FnSpec { name: "is_empty", optional: &[], required: &[], handler: is_empty },
    FnSpec { name: "is_nonempty", optional: &[], required: &[], handler: is_nonempty },
];

/// A collection argument, classified.
enum Coll {
    Array(Vec<Value>),
    /// A page: the object without its `data`, and the data.
    Page(Object, Vec<Value>),
    Set(Value),
}

impl Coll {
    fn of(v: Value) -> std::result::Result<Coll, Value> {
        match v {
            Value::Array(items) => Ok(Coll::Array(items)),
            Value::Object(mut o) if matches!(o.get("data"), Some(Value::Array(_))) => match o.remove("data") {
                Some(Value::Array(items)) => Ok(Coll::Page(o, items)),
                _ => Err(Value::Object(o)),
            },
            v if sets::is_set(&v) => Ok(Coll::Set(v)),
            other => Err(other),
        }
    }
}

fn page_with(mut rest: Object, data: Vec<Value>) -> Value {
    rest.insert("data".into(), Value::Array(data));
    Value::Object(rest)
}

/// Evaluate `key` as an array or page (sets are refused).
fn list_arg(ev: &mut Eval<'_>, call: &Call, key: &str) -> Result<(Option<Object>, Vec<Value>)> {
    let k = static_key(call, key);
    match Coll::of(ev.arg(call, key)?) {
        Ok(Coll::Array(items)) => Ok((None, items)),
        Ok(Coll::Page(rest, items)) => Ok((Some(rest), items)),
        Ok(Coll::Set(s)) => Err(wrong_type("Array or Page", &s).at(k)),
        Err(other) => Err(wrong_type("Array or Page", &other).at(k)),
    }
}

fn static_key(call: &Call, key: &str) -> &'static str {
    call.args.iter().find(|(k, _)| *k == key).map(|(k, _)| *k).unwrap_or(call.spec.name)
}

fn rewrap(page: Option<Object>, items: Vec<Value>) -> Value {
    match page {
        Some(rest) => page_with(rest, items),
        None => Value::Array(items),
    }
}

fn map(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let (page, items) = list_arg(ev, call, "collection")?;
    let lam = ev.lambda_arg(call, "map")?;
    let mut out = Vec::with_capacity(items.len());
    for v in items {
        out.push(ev.apply(&lam, vec![v]).map_err(|e| e.at("map"))?);
    }
    Ok(rewrap(page, out))
}

fn foreach(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let coll = ev.arg(call, "collection")?;
    let items = match &coll {
        Value::Array(items) => items.clone(),
        Value::Object(o) => match o.get("data") {
            Some(Value::Array(items)) => items.clone(),
            _ => return Err(wrong_type("Array or Page", &coll).at("collection")),
        },
        other => return Err(wrong_type("Array or Page", other).at("collection")),
    };
    let lam = ev.lambda_arg(call, "foreach")?;
    for v in items {
        ev.apply_transient(&lam, vec![v]).map_err(|e| e.at("foreach"))?;
    }
    Ok(coll)
}

fn keep(ev: &mut Eval<'_>, lam: &Lambda, v: &Value) -> Result<bool> {
    match ev.apply_transient(lam, vec![v.clone()]).map_err(|e| e.at("filter"))? {
        Value::Bool(b) => Ok(b),
        other => Err(wrong_type("Boolean", &other).at("filter")),
    }
}

fn filter(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let coll = match Coll::of(ev.arg(call, "collection")?) {
        Ok(c) => c,
        Err(other) => return Err(wrong_type("Array, Page or Set", &other).at("collection")),
    };
    match coll {
        Coll::Set(s) => {
            // A filtered set stays a set; the lambda runs as the set is read.
            let lam = ev.arg(call, "filter")?;
            ev.lambda_from_value(&lam).map_err(|e| e.at("filter"))?;
            Ok(Value::Set(Box::new(Value::object([("filter", lam), ("collection", s)]))))
        }
        Coll::Array(items) => {
            let lam = ev.lambda_arg(call, "filter")?;
            let mut out = Vec::new();
            for v in items {
                if keep(ev, &lam, &v)? {
                    out.push(v);
                }
            }
            Ok(Value::Array(out))
        }
        Coll::Page(rest, items) => {
            let lam = ev.lambda_arg(call, "filter")?;
            let mut out = Vec::new();
            for v in items {
                if keep(ev, &lam, &v)? {
                    out.push(v);
                }
            }
            Ok(page_with(rest, out))
        }
    }
}

/// Evaluate `key` as any collection (array, page or set).
fn coll_arg(ev: &mut Eval<'_>, call: &Call, key: &str) -> Result<Coll> {
    let k = static_key(call, key);
    Coll::of(ev.arg(call, key)?).map_err(|other| wrong_type("Array, Page or Set", &other).at(k))
}

/// Fold over the elements of a collection; pages give `{"data": [result]}`.
fn fold<T>(
    ev: &mut Eval<'_>,
    name: &'static str,
    coll: Coll,
    init: T,
    mut f: impl FnMut(&mut Eval<'_>, T, Value) -> Result<std::ops::ControlFlow<T, T>>,
    finish: impl FnOnce(&mut Eval<'_>, T) -> Result<Value>,
) -> Result<Value> {
    use std::ops::ControlFlow::*;
    let mut acc = init;
    match coll {
        Coll::Array(items) => {
            for v in items {
                match f(ev, acc, v)? {
                    Continue(a) => acc = a,
                    Break(a) => {
                        acc = a;
                        break;
                    }
                }
            }
            finish(ev, acc)
        }
        Coll::Page(_, items) => {
            for v in items {
                match f(ev, acc, v)? {
                    Continue(a) => acc = a,
                    Break(a) => {
                        acc = a;
                        break;
                    }
                }
            }
            Ok(Value::object([("data", Value::Array(vec![finish(ev, acc)?]))]))
        }
        Coll::Set(s) => {
            let mut it = sets::iter(ev, &s).map_err(|e| e.at(name))?;
            while let Some(v) = it.next(ev).map_err(|e| e.at(name))? {
                match f(ev, acc, v)? {
                    Continue(a) => acc = a,
                    Break(a) => {
                        acc = a;
                        break;
                    }
                }
            }
            finish(ev, acc)
        }
    }
}

fn reduce(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let lam = ev.lambda_arg(call, "reduce")?;
    let initial = ev.arg(call, "initial")?;
    let coll = coll_arg(ev, call, "collection")?;
    // Only the latest accumulator is held: each step gives back the one before.
    let base = ev.mem_used();
    fold(
        ev,
        "reduce",
        coll,
        initial,
        |ev, acc, v| {
            let mark = ev.mem_used();
            let next = ev.apply(&lam, vec![acc, v]).map_err(|e| e.at("reduce"))?;
            let kept = ev.mem_used().saturating_sub(mark);
            ev.mem_reset(base);
            ev.mem_charge(kept)?;
            Ok(std::ops::ControlFlow::Continue(next))
        },
        |_, acc| Ok(acc),
    )
}

fn count_arg(ev: &mut Eval<'_>, call: &Call, key: &str) -> Result<i64> {
    match ev.arg(call, key)? {
        Value::Long(n) => Ok(n),
        other => Err(wrong_type("Integer", &other).at(static_key(call, key))),
    }
}

fn take(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let n = count_arg(ev, call, "take")?;
    let (page, mut items) = list_arg(ev, call, "collection")?;
    items.truncate(n.max(0) as usize);
    Ok(rewrap(page, items))
}

fn drop_(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let n = count_arg(ev, call, "drop")?;
    let (page, items) = list_arg(ev, call, "collection")?;
    let n = (n.max(0) as usize).min(items.len());
    Ok(rewrap(page, items.into_iter().skip(n).collect()))
}

fn two_arrays(ev: &mut Eval<'_>, call: &Call) -> Result<(Vec<Value>, Vec<Value>)> {
    let name = call.name();
    let elems = match ev.arg(call, name)? {
        Value::Array(a) => a,
        other => return Err(wrong_type("Array", &other).at(name)),
    };
    let base = match ev.arg(call, "collection")? {
        Value::Array(a) => a,
        other => return Err(wrong_type("Array", &other).at("collection")),
    };
    if elems.len() + base.len() > ev.limits.array_len_max {
        return Err(sets::array_too_long(ev).at(name));
    }
    Ok((elems, base))
}

fn append(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let (elems, mut base) = two_arrays(ev, call)?;
    base.extend(elems);
    Ok(Value::Array(base))
}

fn prepend(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let (mut elems, base) = two_arrays(ev, call)?;
    elems.extend(base);
    Ok(Value::Array(elems))
}

fn count(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let coll = coll_arg(ev, call, "count")?;
    fold(ev, "count", coll, 0i64, |_, n, _| Ok(std::ops::ControlFlow::Continue(n + 1)), |_, n| Ok(Value::Long(n)))
}

/// Running numeric sum: stays a Long until a Double shows up.
#[derive(Clone, Copy)]
enum Num {
    Long(i64),
    Double(f64),
}

fn add_num(acc: Num, v: &Value, name: &'static str) -> Result<Num> {
    Ok(match (acc, v) {
        (Num::Long(a), Value::Long(b)) => match a.checked_add(*b) {
            Some(s) => Num::Long(s),
            None => return Err(invalid_argument("Integer overflow in sum.").at(name)),
        },
        (Num::Long(a), Value::Double(b)) => Num::Double(a as f64 + b),
        (Num::Double(a), Value::Long(b)) => Num::Double(a + *b as f64),
        (Num::Double(a), Value::Double(b)) => Num::Double(a + b),
        (_, other) => return Err(wrong_type("Number", other).at(name)),
    })
}

fn sum(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let coll = coll_arg(ev, call, "sum")?;
    fold(
        ev,
        "sum",
        coll,
        Num::Long(0),
        |_, acc, v| Ok(std::ops::ControlFlow::Continue(add_num(acc, &v, "sum")?)),
        |_, acc| {
            Ok(match acc {
                Num::Long(n) => Value::Long(n),
                Num::Double(d) => Value::Double(d),
            })
        },
    )
}

fn mean(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let coll = coll_arg(ev, call, "mean")?;
    fold(
        ev,
        "mean",
        coll,
        (0f64, 0u64),
        |_, (s, n), v| {
            let x = match v {
                Value::Long(x) => x as f64,
                Value::Double(x) => x,
                other => return Err(wrong_type("Number", &other).at("mean")),
            };
            Ok(std::ops::ControlFlow::Continue((s + x, n + 1)))
        },
        |_, (s, n)| {
            if n == 0 {
                Err(invalid_argument("Cannot take the mean of an empty collection.").at("mean"))
            } else {
                Ok(Value::Double(s / n as f64))
            }
        },
    )
}

fn bool_fold(ev: &mut Eval<'_>, call: &Call, name: &'static str, want: bool) -> Result<Value> {
    let coll = coll_arg(ev, call, name)?;
    // Any: true once an element is true; All: false once an element is false.
    fold(
        ev,
        name,
        coll,
        !want,
        |_, acc, v| match v {
            Value::Bool(b) if b == want => Ok(std::ops::ControlFlow::Continue(want)),
            Value::Bool(_) => Ok(std::ops::ControlFlow::Continue(acc)),
            other => Err(wrong_type("Boolean", &other).at(name)),
        },
        |_, acc| Ok(Value::Bool(acc)),
    )
}

fn any(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    bool_fold(ev, call, "any", true)
}

fn all(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    bool_fold(ev, call, "all", false)
}

fn reverse(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    match coll_arg(ev, call, "reverse")? {
        Coll::Array(mut items) => {
            items.reverse();
            Ok(Value::Array(items))
        }
        Coll::Page(rest, mut items) => {
            items.reverse();
            Ok(page_with(rest, items))
        }
        Coll::Set(s) => Ok(Value::Set(Box::new(Value::object([("reverse", s)])))),
    }
}

fn emptiness(ev: &mut Eval<'_>, call: &Call, name: &'static str) -> Result<bool> {
    Ok(match coll_arg(ev, call, name)? {
        Coll::Array(items) | Coll::Page(_, items) => items.is_empty(),
        Coll::Set(s) => {
            let mut it = sets::iter(ev, &s).map_err(|e| e.at(name))?;
            it.next(ev).map_err(|e| e.at(name))?.is_none()
        }
    })
}

fn is_empty(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    Ok(Value::Bool(emptiness(ev, call, "is_empty")?))
}

fn is_nonempty(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    Ok(Value::Bool(!emptiness(ev, call, "is_nonempty")?))
}
