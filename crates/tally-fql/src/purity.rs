//! Index bindings are pure functions of the document (FQL v4).
//!
//! A binding (`source: {collection, fields: {name: Query(Lambda(doc => ...))}}`) runs
//! whenever anyone writes a document of its source collection. If it could read or
//! write, it would run with the writer's authority (an admin's write could run a
//! server key's binding) and make index entries depend on more than the document.
//! Two checks keep it pure, as v4 does:
//!
//! - **When the index is written** (`CreateIndex`, `Update`/`Replace` of an index):
//!   [`check_index_bindings`] computes each binding's greatest possible effect from its
//!   expression tree ([`max_effect`], v4's per-function effect table) and refuses
//!   anything but pure with v4's `validation failed` / `invalid binding`.
//! - **When a binding runs** ([`Eval::eval_binding`]): with no identity and no role,
//!   and with `binding_depth` set, every read (ref resolution, permission decision) and
//!   every write or id issue is a definite error, so a binding stored before this check
//!   existed (or anything the static check misses) still cannot read or write. As in v4,
//!   a binding that fails contributes no value: the writer's write goes on, and never
//!   depends on what the writer may read.

use tally_value::{Object, Value};

use crate::auth::{Auth, Role};
use crate::error::{code, invalid_expression, Result};
use crate::eval::Eval;
use crate::expr::Expr;
use crate::fns::docs::validation;

/// The greatest effect an expression may have, ordered (v4's `Effect`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Effect {
    Pure,
    Read,
    Write,
}

/// The effect of calling function `name` (its primary key on the wire), after v4's
/// table: reads of documents, sets, keys or the caller's identity are `Read`; writes,
/// id issue and user-defined function calls (whose body is unknown) are `Write`.
pub fn effect_of(name: &str) -> Effect {
    match name {
        "get"
        | "exists"
        | "paginate"
        | "key_from_secret"
        | "reduce"
        | "count"
        | "sum"
        | "mean"
        | "any"
        | "all"
        | "max"
        | "min"
        | "take"
        | "contains_value"
        | "identify"
        | "current_identity"
        | "has_current_identity"
        | "current_token"
        | "identity"
        | "has_identity"
        | "@self_ref" => Effect::Read,
        "create"
        | "create_class"
        | "create_collection"
        | "create_database"
        | "create_index"
        | "create_function"
        | "create_role"
        | "create_key"
        | "create_access_provider"
        | "update"
        | "replace"
        | "delete"
        | "insert"
        | "remove"
        | "move_database"
        | "login"
        | "logout"
        | "new_id"
        | "next_id"
        | "call" => Effect::Write,
        _ => Effect::Pure,
    }
}

/// The greatest effect of `e`, with the first function that has it.
pub fn max_effect(e: &Expr) -> (Effect, Option<&'static str>) {
    let mut worst = (Effect::Pure, None);
    walk(e, &mut worst);
    worst
}

fn walk(e: &Expr, worst: &mut (Effect, Option<&'static str>)) {
    match e {
        // A stored lambda inside the binding could be applied by `Map` and the like.
        Expr::Lit(Value::Query(body)) => match crate::expr::parse_value(body) {
            Ok(inner) => walk(&inner, worst),
            Err(_) => raise(worst, Effect::Write, None),
        },
        Expr::Lit(_) => {}
        Expr::Array(items) => items.iter().for_each(|i| walk(i, worst)),
        Expr::Object(fields) => fields.iter().for_each(|(_, v)| walk(v, worst)),
        Expr::Call(call) => {
            raise(worst, effect_of(call.name()), Some(call.name()));
            call.args.iter().for_each(|(_, a)| walk(a, worst));
        }
    }
}

/// Does `e` call a function that writes when it runs (`Create`, `Update`, `Login`, ...)
/// anywhere but inside a quoted `Query` literal? Not `Call`: a user-defined function may
/// only read. Not `NewId`: issuing an id is allowed in a read. Such a query is sent to
/// the log at once: a read-only pass would stop at its first write and be thrown away.
/// A query whose writes all sit in a branch it does not take then runs in the executor
/// and writes nothing, with the answer the read would have had.
pub fn writes_directly(e: &Expr) -> bool {
    match e {
        Expr::Lit(_) => false,
        Expr::Array(items) => items.iter().any(writes_directly),
        Expr::Object(fields) => fields.iter().any(|(_, v)| writes_directly(v)),
        Expr::Call(call) => {
            let name = call.name();
            let writes = effect_of(name) == Effect::Write && !matches!(name, "call" | "new_id" | "next_id");
            writes || call.args.iter().any(|(_, a)| writes_directly(a))
        }
    }
}

fn raise(worst: &mut (Effect, Option<&'static str>), eff: Effect, name: Option<&'static str>) {
    if eff > worst.0 {
        *worst = (eff, name);
    }
}

/// The bindings an index document declares: `(path of the failure, name, lambda)`.
fn declared_bindings(data: &Object) -> Vec<(Vec<String>, String, Value)> {
    let sources: Vec<&Value> = match data.get("source") {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(v) => vec![v],
        None => Vec::new(),
    };
    let mut out = Vec::new();
    for (i, src) in sources.into_iter().enumerate() {
        let Some(Value::Object(fields)) = src.get("fields") else { continue };
        for (name, lam) in fields {
            let path = vec!["source".to_string(), i.to_string(), "fields".to_string(), name.to_string()];
            out.push((path, name.to_string(), lam.clone()));
        }
    }
    out
}

/// Refuse an index document whose bindings are not pure one-parameter lambdas (v4's
/// `SourceBindingsValidator`): checked on every create, update and replace of an index.
pub fn check_index_bindings(data: &Object) -> Result<()> {
    for (path, _name, lam) in declared_bindings(data) {
        let why = match binding_problem(&lam) {
            None => continue,
            Some(why) => why,
        };
        let mut e =
            validation("source", "invalid binding", &format!("Field binding must be a pure unary function: {why}"));
        if let Some(f) = e.failures.first_mut() {
            f.field = path;
        }
        return Err(e);
    }
    Ok(())
}

/// What is wrong with a binding, if anything.
fn binding_problem(lam: &Value) -> Option<String> {
    let Value::Query(body) = lam else {
        return Some("wrap it in Query(Lambda(doc => ...)).".into());
    };
    let expr = match crate::expr::parse_value(body) {
        Ok(e) => e,
        Err(e) => return Some(format!("it does not parse ({}).", e.description)),
    };
    let Expr::Call(call) = &expr else { return Some("it must be a Lambda.".into()) };
    if call.name() != "lambda" {
        return Some("it must be a Lambda.".into());
    }
    match max_effect(&expr) {
        (Effect::Pure, _) => None,
        (eff, f) => {
            let what = if eff == Effect::Read { "reads" } else { "writes or calls a function" };
            let f = f.map(|f| format!("`{f}` ")).unwrap_or_default();
            Some(format!("{f}{what}; compute the value from the document alone."))
        }
    }
}

impl Eval<'_> {
    /// Inside an index binding: the error for anything that reads or writes beyond the
    /// document (see the module doc). `what` names the effect for the message.
    pub fn require_pure_ok(&self, what: &str) -> Result<()> {
        if self.binding_depth > 0 {
            return Err(invalid_expression(format!(
                "Index bindings must be pure functions of the document; this binding {what}, which is not allowed."
            )));
        }
        Ok(())
    }

    /// Apply binding `lam` to the rendered document `doc`: with no role, no identity and
    /// nothing readable or writable beyond `doc`. `None` when the binding fails (the
    /// document then has no value for it, as in v4); running out of steps still ends
    /// the query, and storage failures still surface.
    pub fn eval_binding(&mut self, lam: &Value, doc: Value) -> Result<Option<Value>> {
        let Ok(lam) = self.lambda_from_value(lam) else { return Ok(None) };
        let neutral = Auth { priority: self.auth.priority, ..Auth::new(self.auth.db, Role::Predicate) };
        let saved = std::mem::replace(&mut self.auth, neutral);
        self.binding_depth += 1;
        // The value becomes index rows; nothing it built stays charged (see `crate::budget`).
        let r = self.with_fresh_env(|ev| ev.apply_transient(&lam, vec![doc]));
        self.binding_depth -= 1;
        self.auth = saved;
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.code == code::TIME_OUT || e.code == code::INTERNAL_ERROR => Err(e),
            Err(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn effect(j: serde_json::Value) -> Effect {
        max_effect(&crate::expr::parse(&j).unwrap()).0
    }

    #[test]
    fn effects_follow_v4s_table() {
        let doc = json!({"var": "doc"});
        let r = json!({"ref": {"collection": "c"}, "id": "1"});
        assert_eq!(effect(json!({"lambda": "doc", "expr": {"select": ["data", "x"], "from": doc}})), Effect::Pure);
        assert_eq!(effect(json!({"lambda": "doc", "expr": {"casefold": {"concat": ["a", "b"]}}})), Effect::Pure);
        assert_eq!(
            effect(json!({"lambda": "doc", "expr": {"match": {"index": "i"}}})),
            Effect::Pure,
            "a set is a value"
        );
        assert_eq!(effect(json!({"lambda": "doc", "expr": {"now": null}})), Effect::Pure);
        assert_eq!(effect(json!({"lambda": "doc", "expr": {"exists": r}})), Effect::Read);
        assert_eq!(effect(json!({"lambda": "doc", "expr": {"count": [1, 2]}})), Effect::Read, "v4: a fold reads");
        assert_eq!(effect(json!({"lambda": "doc", "expr": {"current_identity": null}})), Effect::Read);
        assert_eq!(
            effect(json!({"lambda": "doc", "expr": {"call": {"function": "f"}, "arguments": 1}})),
            Effect::Write
        );
        assert_eq!(effect(json!({"lambda": "doc", "expr": {"new_id": null}})), Effect::Write);
        // Nested anywhere: in a lambda, an object, an array, an If branch.
        let nested = json!({"lambda": "doc", "expr": {"if": true, "then": [{"object": {"a": {"get": r}}}], "else": 0}});
        assert_eq!(effect(nested), Effect::Read);
        let in_map =
            json!({"lambda": "doc", "expr": {"map": {"lambda": "i", "expr": {"delete": r}}, "collection": [1]}});
        assert_eq!(effect(in_map), Effect::Write);
    }

    #[test]
    fn index_documents_with_impure_bindings_are_refused() {
        let lam = |body: serde_json::Value| {
            Value::Query(Box::new(tally_value::from_json(&json!({"lambda": "doc", "expr": body})).unwrap()))
        };
        let index = |b: Value| {
            let mut fields = Object::new();
            fields.insert("b".into(), b);
            let mut src = Object::new();
            src.insert("fields".into(), Value::Object(fields));
            let mut data = Object::new();
            data.insert("source".into(), Value::Array(vec![Value::Object(src)]));
            data
        };
        assert!(check_index_bindings(&index(lam(json!({"uppercase": "x"})))).is_ok());
        let e = check_index_bindings(&index(lam(json!({"get": {"ref": {"collection": "c"}, "id": "1"}})))).unwrap_err();
        assert_eq!(e.code, code::VALIDATION_FAILED);
        assert_eq!(e.failures[0].code, "invalid binding");
        assert_eq!(e.failures[0].field, vec!["source", "0", "fields", "b"]);
        assert!(e.failures[0].description.contains("`get` reads"), "{}", e.failures[0].description);
        assert!(check_index_bindings(&index(Value::Long(1))).is_err(), "not a lambda");
    }
}
