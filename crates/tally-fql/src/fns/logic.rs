//! Logic and comparison: `and or not equals lt lte gt gte contains_path contains_field
//! contains_value contains` (the deprecated spelling of `contains_path`).

use std::cmp::Ordering;

use tally_value::{compare, Value};

use crate::error::{invalid_argument, wrong_type, Result};
use crate::eval::Eval;
use crate::expr::{Call, Expr, FnSpec};
use crate::fns::types::{parse_path, select_path, PathSeg};

pub(crate) static SPECS: &[FnSpec] = &[
    FnSpec { name: "and", optional: &[], required: &[], handler: and },
    FnSpec { name: "or", optional: &[], required: &[], handler: or },
    FnSpec { name: "not", optional: &[], required: &[], handler: not },
    FnSpec { name: "equals", optional: &[], required: &[], handler: equals },
    FnSpec { name: "lt", optional: &[], required: &[], handler: lt },
    FnSpec { name: "lte", optional: &[], required: &[], handler: lte },
    FnSpec { name: "gt", optional: &[], required: &[], handler: gt },
    FnSpec { name: "gte", optional: &[], required: &[], handler: gte },
    FnSpec { name: "contains_path", optional: &[], required: &["in"], handler: contains_path },
    FnSpec { name: "contains", optional: &[], required: &["in"], handler: contains_path },
    FnSpec { name: "contains_field", optional: &[], required: &["in"], handler: contains_field },
    FnSpec { name: "contains_value", optional: &[], required: &["in"], handler: contains_value },
];

/// Short-circuiting `And`/`Or`: stops at the first element equal to `stop`.
fn bool_chain(ev: &mut Eval<'_>, call: &Call, stop: bool) -> Result<Value> {
    let name = call.name();
    match call.get(name) {
        Some(Expr::Array(items)) => {
            if items.is_empty() {
                return Err(invalid_argument("Non-empty array expected.").at(name));
            }
            for (i, item) in items.iter().enumerate() {
                match ev.eval(item).map_err(|e| e.at(i).at(name))? {
                    Value::Bool(b) if b == stop => return Ok(Value::Bool(stop)),
                    Value::Bool(_) => {}
                    other => return Err(wrong_type("Boolean", &other).at(i).at(name)),
                }
            }
            Ok(Value::Bool(!stop))
        }
        _ => match ev.primary(call)? {
            Value::Bool(b) => Ok(Value::Bool(b)),
            Value::Array(items) => {
                if items.is_empty() {
                    return Err(invalid_argument("Non-empty array expected.").at(name));
                }
                for v in &items {
                    if !matches!(v, Value::Bool(_)) {
                        return Err(wrong_type("Boolean", v).at(name));
                    }
                }
                Ok(Value::Bool(if items.contains(&Value::Bool(stop)) { stop } else { !stop }))
            }
            other => Err(wrong_type("Boolean", &other).at(name)),
        },
    }
}

fn and(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    bool_chain(ev, call, false)
}

fn or(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    bool_chain(ev, call, true)
}

fn not(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    match ev.primary(call)? {
        Value::Bool(b) => Ok(Value::Bool(!b)),
        other => Err(wrong_type("Boolean", &other).at("not")),
    }
}

/// The values of a variadic comparison, at least one.
fn operands(ev: &mut Eval<'_>, call: &Call) -> Result<Vec<Value>> {
    let vals = ev.varargs(call, call.name())?;
    if vals.is_empty() {
        return Err(invalid_argument("Non-empty array expected.").at(call.name()));
    }
    Ok(vals)
}

/// True when every adjacent pair satisfies `ok` (so `LT(1, 2, 3)` chains).
fn chain(ev: &mut Eval<'_>, call: &Call, ok: fn(Ordering) -> bool) -> Result<Value> {
    let vals = operands(ev, call)?;
    Ok(Value::Bool(vals.windows(2).all(|w| ok(compare(&w[0], &w[1])))))
}

/// `Equals`: all values equal. A long and a double are different values (as in v4,
/// `Equals(1, 1.0)` is false); the total order keeps them apart.
fn equals(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    chain(ev, call, |o| o == Ordering::Equal)
}

fn lt(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    chain(ev, call, |o| o == Ordering::Less)
}

fn lte(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    chain(ev, call, |o| o != Ordering::Greater)
}

fn gt(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    chain(ev, call, |o| o == Ordering::Greater)
}

fn gte(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    chain(ev, call, |o| o != Ordering::Less)
}

/// `ContainsPath(path, in)`: whether `Select(path, in)` would find a value.
fn contains_path(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let name = call.name();
    let path_v = ev.primary(call)?;
    let path = parse_path(&path_v).map_err(|e| e.at(name))?;
    let from = ev.arg(call, "in")?;
    Ok(Value::Bool(select_path(&from, &path).is_some()))
}

/// `ContainsField(field, in)`: whether the object `in` has the top-level field `field`.
/// Anything but an object has no fields.
fn contains_field(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let field = match ev.primary(call)? {
        Value::String(s) => s,
        other => return Err(wrong_type("String", &other).at("contains_field")),
    };
    let target = ev.arg(call, "in")?;
    let found = match &target {
        Value::Object(o) => o.contains_key(&field),
        Value::Ref(_) => select_path(&target, &[PathSeg::Key(field.into())]).is_some(),
        _ => false,
    };
    Ok(Value::Bool(found))
}

/// `ContainsValue(value, in)`: whether `value` is one of the top-level values of the
/// object or array `in` (not searched recursively); for a ref, its `id`, `collection`
/// and `database`.
fn contains_value(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let needle = ev.primary(call)?;
    let target = ev.arg(call, "in")?;
    let eq = |v: &Value| compare(v, &needle) == Ordering::Equal;
    let found = match &target {
        Value::Object(o) => o.values().any(eq),
        Value::Array(items) => items.iter().any(eq),
        Value::Ref(r) => {
            eq(&Value::String(r.id.to_string()))
                || r.collection.as_deref().is_some_and(|c| eq(&Value::Ref(c.clone())))
                || r.database.as_deref().is_some_and(|d| eq(&Value::Ref(d.clone())))
        }
        other => {
            return Err(
                invalid_argument(format!("Array, Object or Ref expected, {} provided.", other.type_name())).at("in")
            )
        }
    };
    Ok(Value::Bool(found))
}
