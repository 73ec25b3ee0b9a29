//! Wire expressions (the body of a `@query`, the set of a `@set`) printed back as calls:
//! the inverse of `eval.rs`, read from the same table.

use serde_json::{Map, Value as Json};

use crate::format::{self, array, call, object, string, text, Doc, FORMAT_DEPTH_MAX};
use crate::spec::{self, Kind, Mode, Spec};

pub(crate) fn expr_doc(e: &Json, depth: usize) -> Doc {
    if depth > FORMAT_DEPTH_MAX {
        return format::too_deep();
    }
    match e {
        Json::Null => text("null"),
        Json::Bool(b) => text(b.to_string()),
        Json::Number(n) => format::number(n),
        Json::String(s) => string(s),
        Json::Array(items) => array(items.iter().map(|i| expr_doc(i, depth + 1)).collect()),
        Json::Object(m) => format::special(m, depth).unwrap_or_else(|| call_doc(m, depth)),
    }
}

fn fields(m: &Map<String, Json>, depth: usize) -> Doc {
    object(m.iter().map(|(k, v)| (k.clone(), expr_doc(v, depth + 1))).collect())
}

fn call_doc(m: &Map<String, Json>, depth: usize) -> Doc {
    let has = |k: &str| m.contains_key(k);
    let only = |keys: &[&str]| m.len() == keys.len() && keys.iter().all(|k| has(k));
    let sub = |k: &str| expr_doc(&m[k], depth + 1);
    if only(&["object"]) {
        if let Json::Object(o) = &m["object"] {
            return fields(o, depth);
        }
    }
    if only(&["let", "in"]) {
        return call("Let", vec![bindings(&m["let"], depth + 1), sub("in")]);
    }
    if has("paginate") {
        let opts: Map<String, Json> =
            m.iter().filter(|(k, _)| *k != "paginate").map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut args = vec![sub("paginate")];
        if !opts.is_empty() {
            args.push(fields(&opts, depth));
        }
        return call("Paginate", args);
    }
    if only(&["lambda", "expr"]) {
        return call("Lambda", vec![sub("lambda"), sub("expr")]);
    }
    if only(&["ref", "id"]) {
        return call("Ref", vec![sub("ref"), sub("id")]);
    }
    match spec::by_keys(m.keys().map(String::as_str)) {
        Some(s) => call(s.name, args(s, m, depth)),
        // Not a call the driver can write: show its fields so nothing is hidden.
        None => fields(m, depth),
    }
}

/// `Let`'s bindings: an object when each binds one distinct name, else the array form.
fn bindings(b: &Json, depth: usize) -> Doc {
    let Json::Array(items) = b else {
        return expr_doc(b, depth);
    };
    let mut merged = Map::new();
    for item in items {
        match item {
            Json::Object(o) if o.len() == 1 && o.keys().all(|k| !merged.contains_key(k)) => {
                merged.extend(o.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            _ => {
                let arr = items.iter().map(|i| match i {
                    Json::Object(o) => fields(o, depth),
                    other => expr_doc(other, depth + 1),
                });
                return array(arr.collect());
            }
        }
    }
    fields(&merged, depth)
}

/// A value under a varargs key: spread into arguments unless it is an empty array.
fn spread(v: &Json, depth: usize, out: &mut Vec<Doc>) {
    match v {
        Json::Array(items) if !items.is_empty() => out.extend(items.iter().map(|i| expr_doc(i, depth + 1))),
        other => out.push(expr_doc(other, depth + 1)),
    }
}

fn args(s: &Spec, m: &Map<String, Json>, depth: usize) -> Vec<Doc> {
    let mut out = Vec::new();
    match s.kind {
        Kind::Nullary => {}
        Kind::Varargs | Kind::ArrayArgs => spread(&m[s.key()], depth, &mut out),
        Kind::LeadVarargs => {
            out.push(expr_doc(&m[s.args[0].0], depth + 1));
            match m.get(s.args[1].0) {
                Some(Json::Array(items)) if items.is_empty() => {}
                Some(v) => spread(v, depth, &mut out),
                None => {}
            }
        }
        _ => {
            // Up to the last argument present; a gap before it is written as null.
            let present = |(k, mode): &(&str, Mode)| match m.get(*k) {
                None => false,
                Some(Json::Null) => *mode != Mode::Null,
                Some(_) => true,
            };
            let last = s.args.iter().rposition(present).map_or(0, |i| i + 1);
            for (k, _) in &s.args[..last] {
                out.push(m.get(*k).map_or_else(|| text("null"), |v| expr_doc(v, depth + 1)));
            }
        }
    }
    out
}
