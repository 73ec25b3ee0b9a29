//! The FQL v4 expression tree and its parser from the JSON AST.
//!
//! A JSON object in a query is a function call, named by one of its keys (the function's
//! primary key) with the other keys as named arguments: `{"select": path, "from": x}`.
//! Literal objects come wrapped as `{"object": {...}}`, special values as `@ref`, `@ts`, ...
//! Which function an object calls is decided by its whole key set, so `{"map": f,
//! "collection": c}` is `Map`, not `Collection`.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value as Json;
use tally_value::{from_json, Value};

use crate::error::{invalid_expression, FqlError, Result};
use crate::eval::Eval;

pub type Handler = fn(&mut Eval<'_>, &Call) -> Result<Value>;

/// How one FQL function is spelled on the wire.
pub struct FnSpec {
    /// The primary key, e.g. `"select"`.
    pub name: &'static str,
    /// Every other key the function accepts.
    pub optional: &'static [&'static str],
    /// Keys (besides the primary) that must be present.
    pub required: &'static [&'static str],
    pub handler: Handler,
}

#[derive(Debug, Clone)]
pub enum Expr {
    Lit(Value),
    Array(Vec<Expr>),
    Object(Vec<(tally_value::object::Key, Expr)>),
    Call(Call),
}

#[derive(Clone)]
pub struct Call {
    pub spec: &'static FnSpec,
    /// Arguments by key; the primary argument is stored under the function's name.
    pub args: Vec<(&'static str, Expr)>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call").field("fn", &self.spec.name).field("args", &self.args).finish()
    }
}

impl Call {
    pub fn name(&self) -> &'static str {
        self.spec.name
    }
    /// The expression passed under `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Expr> {
        // Keys are the spec's own `&'static str`s, and callers mostly pass those same
        // strings: the pointer settles most comparisons before the bytes are compared.
        let same = |k: &str| std::ptr::eq(k, key) || k == key;
        self.args.iter().find(|(k, _)| same(k)).map(|(_, e)| e)
    }
    /// The primary argument (the one keyed by the function's own name).
    pub fn primary(&self) -> &Expr {
        // The parser always stores the primary argument.
        self.get(self.spec.name).unwrap_or(&NULL_EXPR)
    }
}

static NULL_EXPR: Expr = Expr::Lit(Value::Null);

/// Parse limits: the JSON parser already bounds nesting (128 levels); this bounds size.
pub const EXPR_NODES_MAX: usize = 1_000_000;

/// Function specs by key, hashed with foldhash (fixed seed): every object of every query
/// body is looked up here, and SipHash was most of that lookup.
type Registry = HashMap<&'static str, Vec<&'static FnSpec>, foldhash::fast::FixedState>;

fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(|| {
        let mut m = Registry::with_hasher(foldhash::fast::FixedState::with_seed(0));
        for spec in crate::fns::all_specs() {
            m.entry(spec.name).or_default().push(spec);
        }
        m
    })
}

/// Is `name` a known function name (for error messages)?
pub fn is_function(name: &str) -> bool {
    registry().contains_key(name)
}

mod tape;
mod text;
pub use tape::from_tape;
pub use text::{from_text, KeySeed, QuerySeed};

pub fn parse(json: &Json) -> Result<Expr> {
    let mut nodes = 0usize;
    Parser { nodes: &mut nodes }.expr(json)
}

/// Parse a lambda or expression held as data (inside a `@query` value).
pub fn parse_value(v: &Value) -> Result<Expr> {
    parse(&tally_value::to_json(v))
}

struct Parser<'n> {
    nodes: &'n mut usize,
}

impl Parser<'_> {
    fn expr(&mut self, json: &Json) -> Result<Expr> {
        *self.nodes += 1;
        if *self.nodes > EXPR_NODES_MAX {
            return Err(invalid_expression(format!(
                "Query has more than {EXPR_NODES_MAX} expressions; split it into smaller queries."
            )));
        }
        Ok(match json {
            Json::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(self.expr(item).map_err(|e| e.at(i))?);
                }
                Expr::Array(out)
            }
            Json::Object(map) => {
                if let Some(v) = tally_value::wire_special(map).map_err(|e| invalid_expression(e.to_string()))? {
                    return Ok(crate::fns::selfref::literal_expr(v));
                }
                self.call(map)?
            }
            other => Expr::Lit(from_json(other).map_err(|e| invalid_expression(e.to_string()))?),
        })
    }

    fn call(&mut self, map: &serde_json::Map<String, Json>) -> Result<Expr> {
        if map.len() == 1 {
            if let Some(Json::Object(fields)) = map.get("object") {
                let fields = escaped_fields(fields);
                let mut out = Vec::with_capacity(fields.len());
                for (k, v) in fields {
                    out.push((k.as_str().into(), self.expr(v).map_err(|e| e.at(k.as_str()).at("object"))?));
                }
                return Ok(Expr::Object(out));
            }
        }
        let spec = resolve(map)?;
        if spec.name == "query" {
            let body = map.get("query").unwrap_or(&Json::Null);
            // Validate now so a malformed lambda fails where it is written.
            self.expr(body).map_err(|e| e.at("query"))?;
            let v = tally_value::query_body_from_json(body).map_err(|e| invalid_expression(e.to_string()))?;
            return Ok(Expr::Lit(Value::Query(Box::new(crate::fns::basic::with_api_version(v)))));
        }
        let mut args = Vec::with_capacity(map.len());
        for (k, v) in map {
            let key = key_of(spec, k);
            let e = if spec.name == "let" && key == "let" {
                self.bindings(v)?
            } else {
                self.expr(v).map_err(|e| e.at(key))?
            };
            args.push((key, e));
        }
        Ok(Expr::Call(Call { spec, args }))
    }

    /// `let` bindings: `[{"x": e1}, {"y": e2}]` (ordered) or the legacy `{"x": e1, "y": e2}`.
    /// Parsed as an array of one-field objects so evaluation order is kept.
    fn bindings(&mut self, v: &Json) -> Result<Expr> {
        let mut out = Vec::new();
        match v {
            Json::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let Json::Object(m) = item else {
                        return Err(invalid_expression("Let bindings must be objects of one variable each.")
                            .at(i)
                            .at("let"));
                    };
                    // A variable named `@…` is held as data in the escaped form.
                    let m = escaped_fields(m);
                    for (k, e) in m {
                        out.push(Expr::Object(vec![(
                            k.as_str().into(),
                            self.expr(e).map_err(|x| x.at(k.as_str()).at(i).at("let"))?,
                        )]));
                    }
                }
            }
            Json::Object(m) => {
                for (k, e) in m {
                    out.push(Expr::Object(vec![(
                        k.as_str().into(),
                        self.expr(e).map_err(|x| x.at(k.as_str()).at("let"))?,
                    )]));
                }
            }
            _ => return Err(invalid_expression("Let bindings must be an array of objects.").at("let")),
        }
        Ok(Expr::Array(out))
    }
}

/// The fields of an object literal. A query held as data (a lambda inside `@query`, a
/// stored function body) renders an object literal whose keys start with `@` as
/// `{"object": {"@obj": {fields}}}` (the wire codec's escape), so that form means those
/// fields; without this such a function could be stored but never called.
fn escaped_fields(fields: &serde_json::Map<String, Json>) -> &serde_json::Map<String, Json> {
    match fields.get("@obj") {
        Some(Json::Object(inner)) if fields.len() == 1 && inner.keys().any(|k| k.starts_with('@')) => inner,
        _ => fields,
    }
}

fn key_of(spec: &'static FnSpec, k: &str) -> &'static str {
    if spec.name == k {
        return spec.name;
    }
    spec.optional.iter().chain(spec.required.iter()).find(|o| **o == k).copied().unwrap_or(spec.name)
}

fn resolve(map: &serde_json::Map<String, Json>) -> Result<&'static FnSpec> {
    let keys: Vec<&str> = map.keys().map(|s| s.as_str()).collect();
    resolve_keys(&keys)
}

/// The function an object with these keys (distinct, in the object's order) calls.
fn resolve_keys(keys: &[&str]) -> Result<&'static FnSpec> {
    let reg = registry();
    let mut best: Option<&'static FnSpec> = None;
    for k in keys {
        let Some(specs) = reg.get(k) else { continue };
        for spec in specs {
            let fits = keys.iter().all(|x| *x == spec.name || spec.optional.contains(x) || spec.required.contains(x))
                && spec.required.iter().all(|r| keys.contains(r));
            if fits
                && best.is_none_or(|b| spec.optional.len() + spec.required.len() > b.optional.len() + b.required.len())
            {
                best = Some(spec);
            }
        }
    }
    best.ok_or_else(|| {
        let known: Vec<&&str> = keys.iter().filter(|k| reg.contains_key(**k)).collect();
        if let Some(k) = known.first() {
            invalid_expression(format!(
                "Invalid arguments for function `{k}`: keys {keys:?} do not match its signature."
            ))
        } else {
            invalid_expression(format!("No form/function found, or invalid argument keys: {{ {} }}.", keys.join(", ")))
        }
    })
}

impl From<FqlError> for String {
    fn from(e: FqlError) -> String {
        e.into_description()
    }
}

/// A literal value in the data form of an expression: objects and arrays inside it would
/// otherwise read back as calls (a literal `{"add": [1, 2]}`, sent as `@obj`, became an
/// `Add`; an empty literal object did not parse at all). Found by tests/fuzz_parse.rs.
fn quote(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::object([("object", Value::Object(m.iter().map(|(k, v)| (k.clone(), quote(v))).collect()))])
        }
        Value::Array(items) => Value::Array(items.iter().map(quote).collect()),
        other => other.clone(),
    }
}

/// Turn an expression back into its data form (as it would render inside `@query`).
pub fn unparse(e: &Expr) -> Value {
    match e {
        Expr::Lit(v) => quote(v),
        Expr::Array(items) => Value::Array(items.iter().map(unparse).collect()),
        Expr::Object(fields) => {
            let inner: tally_value::Object = fields.iter().map(|(k, v)| (k.clone(), unparse(v))).collect();
            Value::object([("object", Value::Object(inner))])
        }
        Expr::Call(c) => {
            let mut o = tally_value::Object::new();
            for (k, v) in &c.args {
                let val = if c.spec.name == "let" && *k == "let" {
                    // Bindings are stored as an array of one-field objects.
                    match v {
                        Expr::Array(bs) => Value::Array(
                            bs.iter()
                                .map(|b| match b {
                                    Expr::Object(f) => {
                                        Value::Object(f.iter().map(|(k, v)| (k.clone(), unparse(v))).collect())
                                    }
                                    other => unparse(other),
                                })
                                .collect(),
                        ),
                        other => unparse(other),
                    }
                } else {
                    unparse(v)
                };
                o.insert((*k).into(), val);
            }
            Value::Object(o)
        }
    }
}
