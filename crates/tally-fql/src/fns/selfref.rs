//! Self refs: `Ref("tokens/self")`, `Ref("credentials/self")`,
//! `Ref("collections/users/self")` and their object forms (`Ref(Tokens(), "self")`,
//! `Ref(Collection("users"), "self")`) name the caller's own token, credentials or
//! identity document. As in v4 they are resolved where the query names them, to the
//! real ref, so the answer (and anything that stores it) holds the document's id; a
//! self ref the caller has nothing for (a key asking for `tokens/self`, a token asking
//! for another collection's `self`) is an `invalid expression`.
//!
//! The parser turns every such literal into a call of [`SELF_REF`], a function that is
//! not in the registry, so a client cannot name it on the wire.

use tally_value::{Ref, Value};

use crate::error::{invalid_expression, Result};
use crate::eval::Eval;
use crate::expr::{Call, Expr, FnSpec};
use crate::model::native;

/// The hidden function a self ref is parsed to; its one argument is the literal ref.
pub static SELF_REF: FnSpec = FnSpec { name: "@self_ref", optional: &[], required: &[], handler: resolve };

/// A literal from the wire, as an expression: self refs become a [`SELF_REF`] call.
pub fn literal_expr(v: Value) -> Expr {
    match &v {
        Value::Ref(r) if is_self(r) => Expr::Call(Call { spec: &SELF_REF, args: vec![(SELF_REF.name, Expr::Lit(v))] }),
        _ => Expr::Lit(v),
    }
}

/// Is `r` a self ref (`<collection>/self`)?
pub fn is_self(r: &Ref) -> bool {
    r.id == "self" && r.database.is_none() && r.collection.is_some()
}

fn resolve(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let Some(Expr::Lit(Value::Ref(r))) = call.get(SELF_REF.name) else {
        return Err(invalid_expression("Invalid self ref."));
    };
    resolve_self_ref(ev, r).map(Value::Ref)
}

/// The ref a self ref names for this query's caller, or `invalid expression`.
pub fn resolve_self_ref(ev: &mut Eval<'_>, r: &Ref) -> Result<Ref> {
    let unresolved = || {
        invalid_expression(format!(
            "Invalid ref: `{}` names the caller's own document, and this query's secret has none \
             (tokens/self and credentials/self need a token; <collection>/self needs an identity in that collection).",
            path_of(r)
        ))
    };
    let found = match r.native_parent() {
        Some("tokens") => ev.auth.token.clone().filter(|t| t.native_parent() == Some("tokens")),
        Some("credentials") => own_credentials(ev)?,
        Some(_) => None,
        None => ev.auth.identity.clone().filter(|id| id.collection == r.collection),
    };
    found.ok_or_else(unresolved)
}

/// The credentials document of a token's identity (a token made without `Login` for a
/// document without credentials has none).
fn own_credentials(ev: &mut Eval<'_>) -> Result<Option<Ref>> {
    let is_token = ev.auth.token.as_ref().is_some_and(|t| t.native_parent() == Some("tokens"));
    let Some(identity) = ev.auth.identity.clone().filter(|_| is_token) else { return Ok(None) };
    let (db, ts) = (ev.auth.db, ev.txn_ts());
    let creds = ev.tx.scan_docs(db, native::CREDENTIALS, None, false, ts, usize::MAX)?;
    Ok(creds
        .into_iter()
        .find(|(_, d)| d.data.get("instance") == Some(&Value::Ref(identity.clone())))
        .map(|(id, _)| Ref::doc(Ref::native("credentials"), id)))
}

fn path_of(r: &Ref) -> String {
    match (r.native_parent(), r.collection.as_deref()) {
        (Some(n), _) => format!("{n}/self"),
        (None, Some(c)) => format!("collections/{}/self", c.id),
        _ => "self".into(),
    }
}
