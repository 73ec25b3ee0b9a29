//! Wire answers printed in the driver's syntax: `Ref(Collection("players"), "1")`,
//! `Time("…")`, objects and arrays on one line when they fit in 80 columns, else one
//! entry per line, indented by two.

use serde_json::{Map, Value as Json};

use crate::unparse;

/// Line width the printer aims for.
const WIDTH: usize = 80;
/// Deeper than this, a value prints as `…` (the printer recurses; an answer this deep is
/// not for reading anyway).
pub(crate) const FORMAT_DEPTH_MAX: usize = 256;

/// Print a wire answer (`{"@ref": …}`, `{"@ts": …}`, `{"@set": …}`, …) as FQL text.
pub fn format(answer: &Json) -> String {
    let mut out = String::new();
    render(&value_doc(answer, 0), 0, &mut out);
    out
}

/// A layout tree: text, or a bracketed list that breaks one item per line when too wide.
pub(crate) enum Doc {
    Text(String),
    /// `open items… close`; `spaced` puts a space inside the brackets on one line (`{ a: 1 }`).
    Group {
        open: String,
        items: Vec<Doc>,
        close: &'static str,
        spaced: bool,
    },
    /// `key: value`.
    Entry(String, Box<Doc>),
}

pub(crate) fn call(name: &str, items: Vec<Doc>) -> Doc {
    Doc::Group { open: format!("{name}("), items, close: ")", spaced: false }
}

pub(crate) fn text(s: impl Into<String>) -> Doc {
    Doc::Text(s.into())
}

pub(crate) fn string(s: &str) -> Doc {
    Doc::Text(Json::String(s.to_string()).to_string())
}

pub(crate) fn too_deep() -> Doc {
    text("…")
}

/// A field name as written in JavaScript: bare when it is an identifier, else quoted.
pub(crate) fn key(k: &str) -> String {
    let mut chars = k.chars();
    let ident = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if ident {
        k.to_string()
    } else {
        Json::String(k.to_string()).to_string()
    }
}

pub(crate) fn object(fields: Vec<(String, Doc)>) -> Doc {
    let items = fields.into_iter().map(|(k, v)| Doc::Entry(key(&k), Box::new(v))).collect();
    Doc::Group { open: "{".into(), items, close: "}", spaced: true }
}

pub(crate) fn array(items: Vec<Doc>) -> Doc {
    Doc::Group { open: "[".into(), items, close: "]", spaced: false }
}

pub(crate) fn number(n: &serde_json::Number) -> Doc {
    // A double keeps its point so it reads as one (`1.0`, not `1`).
    let s = n.to_string();
    if n.is_f64() && !s.contains(['.', 'e', 'E']) {
        return text(format!("{s}.0"));
    }
    text(s)
}

/// A value of an answer (as opposed to an expression inside `@query` or `@set`).
pub(crate) fn value_doc(v: &Json, depth: usize) -> Doc {
    if depth > FORMAT_DEPTH_MAX {
        return too_deep();
    }
    match v {
        Json::Null => text("null"),
        Json::Bool(b) => text(b.to_string()),
        Json::Number(n) => number(n),
        Json::String(s) => string(s),
        Json::Array(items) => array(items.iter().map(|i| value_doc(i, depth + 1)).collect()),
        Json::Object(m) => special(m, depth).unwrap_or_else(|| plain_object(m, depth)),
    }
}

fn plain_object(m: &Map<String, Json>, depth: usize) -> Doc {
    object(m.iter().map(|(k, v)| (k.clone(), value_doc(v, depth + 1))).collect())
}

/// The one-key `@` forms of the wire; `None` for anything else.
pub(crate) fn special(m: &Map<String, Json>, depth: usize) -> Option<Doc> {
    if m.len() != 1 {
        return None;
    }
    let (k, inner) = m.iter().next()?;
    Some(match (k.as_str(), inner) {
        ("@ref", Json::Object(r)) => ref_doc(r, depth)?,
        ("@ref", Json::String(s)) => call("Ref", vec![string(s)]),
        ("@ts", Json::String(s)) => call("Time", vec![string(s)]),
        ("@date", Json::String(s)) => call("Date", vec![string(s)]),
        ("@bytes", Json::String(s)) => call("Bytes", vec![string(&standard_base64(s))]),
        ("@set", set) => unparse::expr_doc(set, depth + 1),
        ("@query", Json::Object(q)) => {
            let mut q = q.clone();
            q.remove("api_version");
            call("Query", vec![unparse::expr_doc(&Json::Object(q), depth + 1)])
        }
        ("@obj", Json::Object(o)) => plain_object(o, depth),
        _ => return None,
    })
}

/// The server may send URL-safe, unpadded base64; the driver prints the standard alphabet.
fn standard_base64(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c == '-' {
                '+'
            } else if c == '_' {
                '/'
            } else {
                c
            }
        })
        .collect();
    while out.len() % 4 != 0 {
        out.push('=');
    }
    out
}

/// Refs as the driver prints them: `Collection("c")` for schema refs, `Collections()` for
/// native ones, `Ref(Collection("c"), "1")` for documents; a child database's scope last
/// (`Collection("c", Database("child"))`).
fn ref_doc(r: &Map<String, Json>, depth: usize) -> Option<Doc> {
    if depth > FORMAT_DEPTH_MAX {
        return Some(too_deep());
    }
    let id = match r.get("id")? {
        Json::String(s) => s.clone(),
        Json::Number(n) => n.to_string(),
        _ => return None,
    };
    let sub = |k: &str| match r.get(k) {
        Some(Json::Object(o)) => match o.get("@ref") {
            Some(Json::Object(inner)) if o.len() == 1 => Some(ref_doc(inner, depth + 1)),
            _ => None,
        },
        _ => None,
    };
    let db = sub("database").flatten();
    let Some(coll) = r.get("collection") else {
        let name = match id.as_str() {
            "access_providers" => "AccessProviders".to_string(),
            _ => capitalize(&id),
        };
        return Some(call(&name, db.into_iter().collect()));
    };
    let coll_doc = sub("collection").flatten()?;
    let constructor = coll
        .get("@ref")
        .and_then(|c| c.as_object())
        .filter(|c| !c.contains_key("collection"))
        .and_then(|c| c.get("id"))
        .and_then(|c| c.as_str())
        .and_then(native_constructor);
    Some(match constructor {
        Some(name) => call(name, std::iter::once(string(&id)).chain(db).collect()),
        None => call("Ref", vec![coll_doc, string(&id)]),
    })
}

fn native_constructor(coll: &str) -> Option<&'static str> {
    Some(match coll {
        "collections" => "Collection",
        "databases" => "Database",
        "indexes" => "Index",
        "functions" => "Function",
        "roles" => "Role",
        "access_providers" => "AccessProvider",
        _ => return None,
    })
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Width of `doc` on one line, or `None` once it passes `limit`.
fn flat_width(doc: &Doc, limit: usize) -> Option<usize> {
    let w = match doc {
        Doc::Text(s) => s.chars().count(),
        Doc::Entry(k, v) => k.chars().count() + 2 + flat_width(v, limit)?,
        Doc::Group { open, items, close, spaced } => {
            let mut w = open.chars().count() + close.len();
            if *spaced && !items.is_empty() {
                w += 2;
            }
            for (i, item) in items.iter().enumerate() {
                w += flat_width(item, limit.checked_sub(w)?)? + if i > 0 { 2 } else { 0 };
                if w > limit {
                    return None;
                }
            }
            w
        }
    };
    (w <= limit).then_some(w)
}

fn render_flat(doc: &Doc, out: &mut String) {
    match doc {
        Doc::Text(s) => out.push_str(s),
        Doc::Entry(k, v) => {
            out.push_str(k);
            out.push_str(": ");
            render_flat(v, out);
        }
        Doc::Group { open, items, close, spaced } => {
            out.push_str(open);
            let pad = *spaced && !items.is_empty();
            if pad {
                out.push(' ');
            }
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render_flat(item, out);
            }
            if pad {
                out.push(' ');
            }
            out.push_str(close);
        }
    }
}

fn column(out: &str) -> usize {
    out.rsplit('\n').next().map_or(0, |l| l.chars().count())
}

/// Renders `doc` at the current position; `indent` is the current line's indentation.
fn render(doc: &Doc, indent: usize, out: &mut String) {
    if flat_width(doc, WIDTH.saturating_sub(column(out))).is_some() {
        return render_flat(doc, out);
    }
    match doc {
        Doc::Text(s) => out.push_str(s),
        Doc::Entry(k, v) => {
            out.push_str(k);
            out.push_str(": ");
            render(v, indent, out);
        }
        Doc::Group { open, items, close, .. } => {
            out.push_str(open);
            for (i, item) in items.iter().enumerate() {
                out.push('\n');
                out.push_str(&" ".repeat(indent + 2));
                render(item, indent + 2, out);
                if i + 1 < items.len() {
                    out.push(',');
                }
            }
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            out.push_str(close);
        }
    }
}
