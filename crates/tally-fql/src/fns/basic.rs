//! Basic forms: `let var if do lambda query object abort at new_id`.

use tally_value::Value;

use crate::error::{code, invalid_argument, invalid_expression, wrong_type, FqlError, Result};
use crate::eval::Eval;
use crate::expr::{unparse, Call, Expr, FnSpec};

pub(crate) static SPECS: &[FnSpec] = &[
    FnSpec { name: "let", optional: &[], required: &["in"], handler: let_ },
    FnSpec { name: "var", optional: &[], required: &[], handler: var },
    FnSpec { name: "if", optional: &[], required: &["then", "else"], handler: if_ },
    FnSpec { name: "do", optional: &[], required: &[], handler: do_ },
    FnSpec { name: "lambda", optional: &["api_version"], required: &["expr"], handler: lambda },
    FnSpec { name: "query", optional: &[], required: &[], handler: lambda },
    FnSpec { name: "abort", optional: &[], required: &[], handler: abort },
    FnSpec { name: "at", optional: &[], required: &["expr"], handler: at },
    FnSpec { name: "new_id", optional: &[], required: &[], handler: new_id },
    FnSpec { name: "next_id", optional: &[], required: &[], handler: new_id },
];

fn let_(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let mark = ev.env_len();
    let r = (|| {
        if let Some(Expr::Array(bindings)) = call.get("let") {
            for (i, b) in bindings.iter().enumerate() {
                if let Expr::Object(fields) = b {
                    for (name, e) in fields {
                        let v = ev.eval(e).map_err(|x| x.at(name.as_str()).at(i).at("let"))?;
                        ev.push_var(name.clone(), v);
                    }
                }
            }
        }
        ev.arg(call, "in")
    })();
    ev.truncate_env(mark);
    r
}

fn var(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let undefined = |name: &str| invalid_expression(format!("Variable '{name}' is not defined."));
    if let Expr::Lit(Value::String(name)) = call.primary() {
        return ev.lookup(name).cloned().ok_or_else(|| undefined(name));
    }
    match ev.primary(call)? {
        Value::String(name) => ev.lookup(&name).cloned().ok_or_else(|| undefined(&name)),
        other => Err(wrong_type("String", &other).at("var")),
    }
}

fn if_(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    match ev.primary(call)? {
        Value::Bool(true) => ev.arg(call, "then"),
        Value::Bool(false) => ev.arg(call, "else"),
        other => Err(wrong_type("Boolean", &other).at("if")),
    }
}

fn do_(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    match call.primary() {
        Expr::Array(items) => {
            let mut last = Value::Null;
            for (i, e) in items.iter().enumerate() {
                // Every value but the last is dropped: a write there need not build the
                // document it returns (`Eval::result_unused`).
                ev.next_unused = i + 1 < items.len();
                last = ev.eval(e).map_err(|x| x.at(i).at("do"))?;
            }
            Ok(last)
        }
        _ => ev.primary(call),
    }
}

/// A lambda evaluated on its own becomes a Query value.
fn lambda(_ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    Ok(Value::Query(Box::new(with_api_version(unparse(&Expr::Call(call.clone()))))))
}

/// Query values carry the API version they were written for, as v4 renders them.
pub fn with_api_version(mut v: Value) -> Value {
    if let Value::Object(o) = &mut v {
        if !o.contains_key("api_version") {
            o.insert("api_version".into(), Value::String("4".into()));
        }
    }
    v
}

fn abort(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let msg = match ev.primary(call)? {
        Value::String(s) => s,
        other => return Err(wrong_type("String", &other).at("abort")),
    };
    Err(FqlError::new(code::TRANSACTION_ABORTED, msg))
}

fn at(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let ts = match ev.primary(call)? {
        Value::Time(t) => {
            let micros = t.timestamp_micros();
            if micros < 0 {
                return Err(invalid_argument("Time must be after the Unix epoch.").at("at"));
            }
            micros as u64
        }
        Value::Long(n) if n >= 0 => n as u64,
        other => return Err(wrong_type("Time", &other).at("at")),
    };
    let expr = call.get("expr").cloned().unwrap_or(Expr::Lit(Value::Null));
    ev.with_read_ts(ts, |ev| ev.eval(&expr).map_err(|e| e.at("expr")))
}

fn new_id(ev: &mut Eval<'_>, _call: &Call) -> Result<Value> {
    ev.require_no_predicate()?;
    Ok(Value::String(ev.new_id().to_string()))
}
