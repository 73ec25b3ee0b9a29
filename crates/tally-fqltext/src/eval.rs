//! The syntax tree to wire JSON, the way the driver builds it: each call yields an
//! expression, and every argument goes through the driver's `wrap` (a literal object
//! becomes `{"object": …}`, a function becomes a `Lambda` whose parameters are `Var`s).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{Map, Number, Value as Json};

use crate::parse::Ast;
use crate::spec::{self, Kind, Mode, Spec};
use crate::{ParseError, Pos};

/// What a piece of text is, in the driver's terms, before `wrap`.
#[derive(Clone)]
enum Val<'a> {
    /// The result of a call (an `Expr` in the driver).
    Expr(Json),
    Scalar(Json),
    Array(Vec<Val<'a>>),
    /// Keys in JavaScript's property order, no duplicates.
    Object(Vec<(String, Val<'a>)>),
    Func(Func<'a>),
}

#[derive(Clone)]
struct Func<'a> {
    params: &'a [String],
    body: &'a Ast,
    env: Env,
    pos: Pos,
}

/// What the names in scope stand for (arrow parameters bound to `Var`s), innermost last.
type Env = Vec<(String, Json)>;

pub(crate) fn to_wire(ast: &Ast) -> Result<Json, ParseError> {
    wrap(eval(ast, &Vec::new())?)
}

fn eval<'a>(ast: &'a Ast, env: &Env) -> Result<Val<'a>, ParseError> {
    Ok(match ast {
        Ast::Null(_) => Val::Scalar(Json::Null),
        Ast::Bool(b, _) => Val::Scalar(Json::Bool(*b)),
        Ast::Num(v, exact, pos) => Val::Scalar(number(*v, *exact, *pos)?),
        Ast::Str(s, _) => Val::Scalar(Json::String(s.clone())),
        Ast::Array(items, _) => Val::Array(items.iter().map(|a| eval(a, env)).collect::<Result<_, _>>()?),
        Ast::Object(fields, _) => {
            let mut out = Vec::with_capacity(fields.len());
            for (k, v) in fields {
                out.push((k.clone(), eval(v, env)?));
            }
            Val::Object(js_key_order(out))
        }
        Ast::Ident(name, pos) => match env.iter().rev().find(|(n, _)| n == name) {
            Some((_, v)) => Val::Expr(v.clone()),
            None => return Err(unknown_name(name, *pos)),
        },
        Ast::Arrow { params, body, pos } => Val::Func(Func { params, body, env: env.clone(), pos: *pos }),
        Ast::Call { name, args, pos } => {
            let Some(spec) = spec::lookup(name) else { return Err(unknown_function(name, *pos)) };
            check_arity(spec, args.len(), *pos)?;
            let vals = args.iter().map(|a| eval(a, env)).collect::<Result<Vec<_>, _>>()?;
            Val::Expr(call(spec, vals, *pos)?)
        }
    })
}

/// JavaScript has one number type: an integral value within 2^53 is sent as an integer
/// (`1.0` is `1`), anything else as a double. One deliberate difference: an integer literal
/// that fits in 64 bits is sent exactly, where JavaScript would round it past 2^53.
fn number(v: f64, exact: Option<i64>, pos: Pos) -> Result<Json, ParseError> {
    if let Some(n) = exact {
        return Ok(Json::Number(n.into()));
    }
    if v.is_finite() && v.fract() == 0.0 && v.abs() <= 9_007_199_254_740_992.0 {
        return Ok(Json::Number((v as i64).into()));
    }
    Number::from_f64(v).map(Json::Number).ok_or_else(|| pos.error("the number is too large for a double"))
}

/// Object.keys order: keys that are array indices first, ascending, then the others in the
/// order written; a repeated key keeps its first place and its last value.
fn js_key_order(fields: Vec<(String, Val<'_>)>) -> Vec<(String, Val<'_>)> {
    let mut out: Vec<(String, Val)> = Vec::with_capacity(fields.len());
    for (k, v) in fields {
        match out.iter_mut().find(|(o, _)| *o == k) {
            Some(slot) => slot.1 = v,
            None => out.push((k, v)),
        }
    }
    let index = |k: &str| -> Option<u64> {
        let n: u64 = k.parse().ok()?;
        (n.to_string() == k && n < u32::MAX as u64).then_some(n)
    };
    let (mut idx, rest): (Vec<_>, Vec<_>) = out.into_iter().partition(|(k, _)| index(k).is_some());
    idx.sort_by_key(|(k, _)| index(k));
    idx.extend(rest);
    idx
}

fn unknown_name(name: &str, pos: Pos) -> ParseError {
    let hint = if spec::lookup(name).is_some() {
        format!("{name} is a function: call it, {name}(…)")
    } else {
        format!("only parameters of an enclosing arrow function are names here; for text write \"{name}\"")
    };
    pos.error(format!("unknown name `{name}`: {hint}"))
}

fn unknown_function(name: &str, pos: Pos) -> ParseError {
    // The closest name by edits, ignoring case, if it is close enough to be a typo.
    let lower = name.to_lowercase();
    let near = spec::SPECS
        .iter()
        .map(|s| (strsim::damerau_levenshtein(&lower, &s.name.to_lowercase()), s.name))
        .filter(|(d, n)| *d <= 2.min(n.len() / 3).max(usize::from(n.eq_ignore_ascii_case(name))))
        .min();
    let hint = match near {
        Some((_, n)) => format!("; did you mean {n}?"),
        None => " of FQL v4 (the JavaScript driver's names, such as Paginate or Match)".into(),
    };
    pos.error(format!("unknown function {name}{hint}"))
}

fn check_arity(spec: &Spec, n: usize, pos: Pos) -> Result<(), ParseError> {
    let (min, max) = (spec.min(), spec.max());
    if n >= min && max.is_none_or(|m| n <= m) {
        return Ok(());
    }
    let want = match max {
        None => format!("at least {min}"),
        Some(m) if m == min => format!("{m}"),
        Some(m) if min == 0 => format!("at most {m}"),
        Some(m) => format!("{min} to {m}"),
    };
    let noun = if want == "1" { "argument" } else { "arguments" };
    Err(pos.error(format!("{} takes {want} {noun}, not {n}{}", spec.name, signature(spec))))
}

/// `: Get(ref, ts?)`, to show what goes where.
fn signature(spec: &Spec) -> String {
    let names: Vec<String> = match spec.kind {
        Kind::Varargs | Kind::ArrayArgs => vec!["…values".into()],
        Kind::LeadVarargs => vec![spec.args[0].0.into(), format!("…{}", spec.args[1].0)],
        Kind::Paginate => vec!["set".into(), "{size, after, before, ts, events, sources}?".into()],
        Kind::Lambda => vec!["params".into(), "expr".into()],
        Kind::Ref => vec!["collection".into(), "id".into()],
        Kind::Nullary => vec![],
        _ => spec.args.iter().map(|(k, m)| if *m == Mode::Req { k.to_string() } else { format!("{k}?") }).collect(),
    };
    format!(": {}({})", spec.name, names.join(", "))
}

/// The driver's `wrap`: the wire form of any argument.
fn wrap(v: Val<'_>) -> Result<Json, ParseError> {
    Ok(match v {
        Val::Expr(j) | Val::Scalar(j) => j,
        Val::Array(items) => Json::Array(items.into_iter().map(wrap).collect::<Result<_, _>>()?),
        Val::Object(fields) => obj1("object", Json::Object(wrap_values(fields)?)),
        Val::Func(f) => lambda_of(f)?,
    })
}

fn wrap_values(fields: Vec<(String, Val<'_>)>) -> Result<Map<String, Json>, ParseError> {
    fields.into_iter().map(|(k, v)| Ok((k, wrap(v)?))).collect()
}

fn obj1(key: &str, v: Json) -> Json {
    let mut m = Map::new();
    m.insert(key.to_string(), v);
    Json::Object(m)
}

/// A function passed where a value goes: `Lambda` with its parameters' names, its body
/// evaluated with each parameter standing for `Var(name)`.
fn lambda_of(f: Func<'_>) -> Result<Json, ParseError> {
    let params: Json = match f.params {
        [] => return Err(f.pos.error("a function passed to FQL takes at least one parameter")),
        [one] => Json::String(one.clone()),
        many => Json::Array(many.iter().map(|p| Json::String(p.clone())).collect()),
    };
    let vars = f.params.iter().map(|p| var(p)).collect();
    let body = apply(&f, vars)?;
    let mut m = Map::new();
    m.insert("lambda".into(), params);
    m.insert("expr".into(), body);
    Ok(Json::Object(m))
}

fn var(name: &str) -> Json {
    obj1("var", Json::String(name.to_string()))
}

/// Calls `f` with these arguments (the driver calls the JavaScript function).
fn apply(f: &Func<'_>, args: Vec<Json>) -> Result<Json, ParseError> {
    if f.params.len() > args.len() {
        let msg = format!("this function takes {} parameters but is given {}", f.params.len(), args.len());
        return Err(f.pos.error(msg));
    }
    let mut env = f.env.clone();
    env.extend(f.params.iter().cloned().zip(args));
    wrap(eval(f.body, &env)?)
}

fn call(spec: &Spec, args: Vec<Val<'_>>, pos: Pos) -> Result<Json, ParseError> {
    match spec.kind {
        Kind::Plain => plain(spec, args),
        Kind::Nullary => Ok(obj1(spec.key(), Json::Null)),
        Kind::Varargs => Ok(obj1(spec.key(), varargs(args)?)),
        Kind::ArrayArgs => Ok(obj1(spec.key(), Json::Array(args.into_iter().map(wrap).collect::<Result<_, _>>()?))),
        Kind::LeadVarargs => {
            let mut args = args.into_iter();
            let first = args.next().map(wrap).transpose()?.unwrap_or(Json::Null);
            let rest: Vec<_> = args.collect();
            let rest = if rest.is_empty() { Json::Array(vec![]) } else { varargs(rest)? };
            let mut m = Map::new();
            m.insert(spec.args[0].0.into(), first);
            m.insert(spec.args[1].0.into(), rest);
            Ok(Json::Object(m))
        }
        Kind::Ref => ref_call(args),
        Kind::Bytes => bytes(args, pos),
        Kind::Let => let_call(args, pos),
        Kind::Lambda => lambda_call(args, pos),
        Kind::Paginate => paginate(args, pos),
        Kind::Object => match args.into_iter().next() {
            Some(Val::Object(fields)) => Ok(obj1("object", Json::Object(wrap_values(fields)?))),
            Some(Val::Scalar(Json::Null)) => Ok(obj1("object", Json::Null)),
            _ => Err(pos.error("Object takes an object literal, such as Object({a: 1})")),
        },
    }
}

fn plain(spec: &Spec, args: Vec<Val<'_>>) -> Result<Json, ParseError> {
    let mut wired: Vec<Option<Json>> = vec![None; spec.args.len()];
    let n = args.len();
    for (i, v) in args.into_iter().enumerate() {
        wired[i] = Some(wrap(v)?);
    }
    let mut m = Map::new();
    let order = std::iter::once(spec.wire_first).chain((0..spec.args.len()).filter(|i| *i != spec.wire_first));
    for i in order {
        let (key, mode) = spec.args[i];
        let value = match (mode, wired[i].take()) {
            (Mode::Drop, Some(Json::Null)) | (Mode::Drop | Mode::Keep, None) => continue,
            (Mode::Null, None) => Json::Null,
            (_, Some(v)) => v,
            (Mode::Req, None) => unreachable_arity(spec, n),
        };
        m.insert(key.into(), value);
    }
    Ok(Json::Object(m))
}

/// `check_arity` ran first, so a required argument is never missing; answer null rather
/// than panic if the table and the check ever disagree.
fn unreachable_arity(spec: &Spec, n: usize) -> Json {
    debug_assert!(false, "{} called with {n} arguments passed the arity check", spec.name);
    Json::Null
}

fn varargs(args: Vec<Val<'_>>) -> Result<Json, ParseError> {
    let mut wired: Vec<Json> = args.into_iter().map(wrap).collect::<Result<_, _>>()?;
    if wired.len() == 1 {
        return Ok(wired.pop().unwrap_or(Json::Null));
    }
    Ok(Json::Array(wired))
}

fn ref_call(args: Vec<Val<'_>>) -> Result<Json, ParseError> {
    let mut args = args.into_iter();
    let first = wrap(args.next().unwrap_or(Val::Scalar(Json::Null)))?;
    match args.next() {
        None => Ok(obj1("@ref", first)),
        Some(id) => {
            let mut m = Map::new();
            m.insert("ref".into(), first);
            m.insert("id".into(), wrap(id)?);
            Ok(Json::Object(m))
        }
    }
}

/// `Bytes("base64")`: the driver decodes the text (either alphabet) and sends it re-encoded.
fn bytes(args: Vec<Val<'_>>, pos: Pos) -> Result<Json, ParseError> {
    let Some(Val::Scalar(Json::String(s))) = args.into_iter().next() else {
        return Err(pos.error("Bytes takes a base64 string literal, such as Bytes(\"AQID\")"));
    };
    let standard: String = s
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
    let raw = STANDARD.decode(standard.as_bytes()).map_err(|e| pos.error(format!("Bytes: not base64 ({e})")))?;
    Ok(obj1("@bytes", Json::String(STANDARD.encode(raw))))
}

fn let_call(args: Vec<Val<'_>>, pos: Pos) -> Result<Json, ParseError> {
    let mut args = args.into_iter();
    let vars = args.next();
    let body = args.next().unwrap_or(Val::Scalar(Json::Null));
    let (bindings, names): (Vec<Json>, Vec<String>) = match vars {
        Some(Val::Object(fields)) => {
            let names = fields.iter().map(|(k, _)| k.clone()).collect();
            let b = fields.into_iter().map(|(k, v)| Ok(obj1(&k, wrap(v)?))).collect::<Result<_, ParseError>>()?;
            (b, names)
        }
        Some(Val::Array(items)) => {
            let (mut b, mut names) = (Vec::new(), Vec::new());
            for item in items {
                let Val::Object(fields) = item else {
                    return Err(pos.error("Let's bindings in an array are objects: Let([{a: 1}, {b: 2}], …)"));
                };
                names.extend(fields.iter().map(|(k, _)| k.clone()));
                b.push(Json::Object(wrap_values(fields)?));
            }
            (b, names)
        }
        _ => return Err(pos.error("Let takes its bindings as an object, such as Let({a: 1}, Var(\"a\"))")),
    };
    // A function as the body is called with the bindings as Vars, in order (the driver does).
    let body = match body {
        Val::Func(f) => apply(&f, names.iter().map(|n| var(n)).collect())?,
        other => wrap(other)?,
    };
    let mut m = Map::new();
    m.insert("let".into(), Json::Array(bindings));
    m.insert("in".into(), body);
    Ok(Json::Object(m))
}

fn lambda_call(args: Vec<Val<'_>>, pos: Pos) -> Result<Json, ParseError> {
    let mut args = args.into_iter();
    let first = args.next();
    match (first, args.next()) {
        (Some(Val::Func(f)), None) => lambda_of(f),
        (Some(Val::Expr(e)), None) => Ok(e),
        (Some(_), None) | (None, _) => {
            Err(pos.error("Lambda takes a function, x => …, or parameter names and a body: Lambda(\"x\", …)"))
        }
        (Some(params), Some(body)) => {
            let mut m = Map::new();
            m.insert("lambda".into(), wrap(params)?);
            m.insert("expr".into(), wrap(body)?);
            Ok(Json::Object(m))
        }
    }
}

fn paginate(args: Vec<Val<'_>>, pos: Pos) -> Result<Json, ParseError> {
    let mut args = args.into_iter();
    let mut m = Map::new();
    m.insert("paginate".into(), wrap(args.next().unwrap_or(Val::Scalar(Json::Null)))?);
    match args.next() {
        None | Some(Val::Scalar(Json::Null)) => {}
        Some(Val::Object(fields)) => {
            for (k, v) in fields {
                m.insert(k, wrap(v)?);
            }
        }
        Some(_) => return Err(pos.error("Paginate's options are an object, such as {size: 10, after: …}")),
    }
    Ok(Json::Object(m))
}
