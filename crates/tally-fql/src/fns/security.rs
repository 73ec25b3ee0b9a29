//! Security schema: validating roles, the `role` of keys and functions (and refusing
//! role escalation), access providers, and creating credentials and tokens directly
//! (`Create(Credentials(), ...)`, `Create(Tokens(), ...)`).
//!
//! Escalation rule (stricter than v4, whose server keys may give a function the admin
//! role): a caller may only give a key or a function a built-in role at or below its
//! own; `admin` and user-defined roles need an admin caller. Editing a function keeps
//! the rule for the role the function ends up with, so a server key cannot rewrite the
//! body of an admin function either.

use tally_value::{Object, Ref, Value};

use crate::auth::Role;
use crate::catalog::Target;
use crate::error::{code, wrong_type, FqlError, Result};
use crate::eval::Eval;
use crate::expr::{Call, FnSpec};
use crate::fns::docs::{render, validation};
use crate::model::native;
use crate::perm::{listed, Action, Resource, ROLES_PER_COLLECTION_MAX};

pub(crate) static SPECS: &[FnSpec] =
    &[FnSpec { name: "create_access_provider", optional: &[], required: &[], handler: create_access_provider }];

fn create_access_provider(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let params = match ev.primary(call)? {
        Value::Object(o) => o,
        other => return Err(wrong_type("Object", &other).at(call.name())),
    };
    crate::fns::schema::create_native(ev, "access_providers", params).map_err(|e| e.at(call.name()))
}

/// A `role` field (of a key or a function): a built-in role name, a `Role` ref, a role
/// name, or an array of `Role` refs. User-defined roles must exist in `db` (the
/// database the key opens, or the function's).
pub fn parse_role_field(ev: &mut Eval<'_>, db: crate::model::DbId, v: &Value) -> Result<Role> {
    if let Value::String(s) = v {
        if let Some(r) = Role::builtin(s) {
            return Ok(r);
        }
    }
    let items = match v {
        Value::Array(items) if !items.is_empty() => items.clone(),
        Value::Array(_) => return Err(validation("role", "invalid value", "At least one role is required.")),
        other => vec![other.clone()],
    };
    let mut names = Vec::with_capacity(items.len());
    for it in items {
        let name = match it {
            Value::Ref(r) if r.native_parent() == Some("roles") && r.database.is_none() => r.id.to_string(),
            Value::String(s) if Role::builtin(&s).is_none() => s,
            _ => {
                return Err(validation(
                    "role",
                    "invalid value",
                    "Role must be admin, server, server-readonly, client, a Role ref or an array of Role refs.",
                ))
            }
        };
        let at = ev.txn_ts();
        if ev.tx.live_doc(db, native::ROLES, &name, at)?.is_none() {
            return Err(validation("role", "invalid reference", &format!("Role `{name}` does not exist.")));
        }
        names.push(name);
    }
    Ok(Role::custom(names))
}

/// The user-defined role names a `role` field (keys, functions) or `roles` field (access
/// providers: role refs or `{role, predicate}`) lists.
pub fn role_names(v: Option<&Value>) -> Vec<String> {
    let one = |v: &Value| match v {
        Value::Ref(r) if r.native_parent() == Some("roles") => Some(r.id.to_string()),
        Value::String(s) if Role::builtin(s).is_none() => Some(s.clone()),
        Value::Object(o) => match o.get("role") {
            Some(Value::Ref(r)) if r.native_parent() == Some("roles") => Some(r.id.to_string()),
            _ => None,
        },
        _ => None,
    };
    match v {
        Some(Value::Array(items)) => items.iter().filter_map(one).collect(),
        Some(v) => one(v).into_iter().collect(),
        None => Vec::new(),
    }
}

/// Bind the user-defined roles that `new[field]` names (in database `db`) to their
/// identity: [`ROLE_IDS`](crate::model::ROLE_IDS) records each one's internal id at the
/// transaction ts. A write that does not name the field (and keeps `db`) keeps the
/// binding it had, so updating a key's `data` never re-binds it to a role created since
/// under the same name; writing the field is the writer's choice of the roles now so
/// named. `old` is the previous version, its database, and whether this write names
/// the field.
pub fn bind_roles(
    ev: &mut Eval<'_>,
    db: crate::model::DbId,
    field: &str,
    old: Option<(&Object, crate::model::DbId, bool)>,
    new: &mut Object,
) -> Result<()> {
    use crate::model::ROLE_IDS;
    if let Some((old, old_db, written)) = old {
        if !written && old_db == db && old.get(field) == new.get(field) {
            match old.get(ROLE_IDS) {
                Some(v) => new.insert(ROLE_IDS.into(), v.clone()),
                None => new.remove(ROLE_IDS),
            };
            return Ok(());
        }
    }
    new.remove(ROLE_IDS);
    let names = role_names(new.get(field));
    if names.is_empty() {
        return Ok(());
    }
    let at = ev.txn_ts();
    let mut ids = Object::new();
    for name in names {
        if let Some(d) = ev.tx.live_doc(db, native::ROLES, &name, at)? {
            if let Some(id) = crate::catalog::internal_id(&d.data) {
                ids.insert(name.into(), Value::Long(id as i64));
            }
        }
    }
    new.insert(ROLE_IDS.into(), Value::Object(ids));
    Ok(())
}

/// The current name of the role `name` that `holder` — a key, function or access
/// provider whose own id is `holder_id` — was given, in database `db` at `at`, or None
/// when that role is gone. A bound holder follows its role through renames and never
/// reaches a role created later under the same name. One written before bindings
/// existed resolves the name, but only to a role older than itself (internal ids grow
/// with the commit ts).
pub fn bound_role_name(
    tx: &mut crate::model::Tx<'_>,
    db: crate::model::DbId,
    holder: &Object,
    holder_id: u64,
    name: &str,
    at: u64,
) -> Result<Option<String>> {
    let live = tx.live_doc(db, native::ROLES, name, at)?.and_then(|d| crate::catalog::internal_id(&d.data));
    let Some(Value::Object(ids)) = holder.get(crate::model::ROLE_IDS) else {
        return Ok(live.filter(|l| *l < holder_id).map(|_| name.to_string()));
    };
    let Some(Value::Long(bound)) = ids.get(name) else { return Ok(None) };
    let bound = *bound as u64;
    if live == Some(bound) {
        return Ok(Some(name.to_string()));
    }
    // Renamed since: find it by its id (bounded, as membership is).
    for (other, d) in tx.scan_docs(db, native::ROLES, None, false, at, crate::perm::ROLES_SCAN_MAX)? {
        if crate::catalog::internal_id(&d.data) == Some(bound) {
            return Ok(Some(other));
        }
    }
    Ok(None)
}

/// Bind each `privileges` and `membership` entry of a role to the identity of the
/// collection, index or function its `resource` names now
/// ([`ROLE_RESOURCE_IDS`](crate::model::ROLE_RESOURCE_IDS)); a list the write does not
/// name (`patch`) keeps the binding it had.
pub fn bind_role_resources(ev: &mut Eval<'_>, old: Option<(&Object, &Object)>, new: &mut Object) -> Result<()> {
    use crate::model::ROLE_RESOURCE_IDS;
    let old_bound = old.and_then(|(o, _)| match o.get(ROLE_RESOURCE_IDS) {
        Some(Value::Object(b)) => Some(b.clone()),
        _ => None,
    });
    let mut bound = Object::new();
    for field in ["privileges", "membership"] {
        if let (Some((old, patch)), Some(ob)) = (old, &old_bound) {
            if !patch.contains_key(field) && old.get(field) == new.get(field) {
                if let Some(v) = ob.get(field) {
                    bound.insert(field.into(), v.clone());
                }
                continue;
            }
        }
        let mut ids = Vec::new();
        for entry in listed(new.get(field)) {
            let id = match &entry {
                Value::Object(o) => match o.get("resource") {
                    Some(Value::Ref(r)) => match ev.resource_of(r)? {
                        Some(Resource::Coll(i)) if native::name(i).is_none() => Value::Long(i as i64),
                        Some(Resource::Index(i) | Resource::Function(i)) => Value::Long(i as i64),
                        _ => Value::Null,
                    },
                    _ => Value::Null,
                },
                _ => Value::Null,
            };
            ids.push(id);
        }
        bound.insert(field.into(), Value::Array(ids));
    }
    new.insert(ROLE_RESOURCE_IDS.into(), Value::Object(bound));
    Ok(())
}

/// May the query's role give a key or function the role `target`?
pub fn check_role_assignment(ev: &Eval<'_>, target: &Role) -> Result<()> {
    let caller = &ev.auth.role;
    let ok = *caller == Role::Admin || (*target != Role::Admin && target.rank() > 0 && target.rank() <= caller.rank());
    if ok {
        Ok(())
    } else {
        Err(FqlError::new(
            code::PERMISSION_DENIED,
            format!(
                "Insufficient privileges to perform the action: only an admin key may assign the role `{}`.",
                target.name()
            ),
        ))
    }
}

/// Validate a function document's `body` and `role` (and the caller's right to it).
pub fn check_function(ev: &mut Eval<'_>, data: &Object) -> Result<()> {
    match data.get("body") {
        Some(Value::Query(_)) => {}
        Some(other) => {
            return Err(validation(
                "body",
                "invalid type",
                &format!("Query expected, {} provided; wrap the Lambda in Query().", other.type_name()),
            ))
        }
        None => return Err(validation("body", "value required", "Value required.")),
    }
    match data.get("role") {
        None | Some(Value::Null) => Ok(()),
        Some(v) => {
            let db = ev.auth.db;
            let role = parse_role_field(ev, db, v)?;
            check_role_assignment(ev, &role)
        }
    }
}

/// The role a stored function runs with (None: the caller's), at `at` in its database
/// `db`: the user-defined roles it was given, under their current names (a role deleted
/// and created again under its name is not one of them); with none left it holds no
/// privileges.
pub fn bound_function_role(
    tx: &mut crate::model::Tx<'_>,
    db: crate::model::DbId,
    data: &Object,
    at: u64,
) -> Result<Option<Role>> {
    let Some(Role::Custom(names)) = function_role(data) else { return Ok(function_role(data)) };
    let fid = crate::catalog::internal_id(data).unwrap_or(0);
    let mut kept = Vec::with_capacity(names.len());
    for name in names {
        if let Some(current) = bound_role_name(tx, db, data, fid, &name, at)? {
            kept.push(current);
        }
    }
    kept.sort();
    kept.dedup();
    Ok(Some(Role::Custom(kept)))
}

/// The role a stored function's `role` field names (None: the caller's).
pub fn function_role(data: &Object) -> Option<Role> {
    match data.get("role")? {
        Value::String(s) => Role::builtin(s).or_else(|| Some(Role::custom(vec![s.clone()]))),
        Value::Ref(r) if r.native_parent() == Some("roles") => Some(Role::custom(vec![r.id.to_string()])),
        Value::Array(items) => {
            let names: Vec<String> = items
                .iter()
                .filter_map(|v| match v {
                    Value::Ref(r) if r.native_parent() == Some("roles") => Some(r.id.to_string()),
                    Value::String(s) => Some(s.clone()),
                    _ => None,
                })
                .collect();
            (!names.is_empty()).then(|| Role::custom(names))
        }
        _ => None,
    }
}

fn role_failure(field: &str, desc: String) -> FqlError {
    validation(field, "invalid value", &desc)
}

/// Validate a role document: privileges name existing resources and known actions with
/// `true`/`false` or predicate lambdas of v4's arity; memberships name collections.
pub fn check_role(ev: &mut Eval<'_>, name: &str, data: &Object) -> Result<()> {
    for p in listed(data.get("privileges")) {
        let Value::Object(p) = p else {
            return Err(role_failure("privileges", "Each privilege must be an object {resource, actions}.".into()));
        };
        let res = match p.get("resource") {
            Some(Value::Ref(r)) => ev.resource_of(r)?,
            _ => return Err(validation("privileges", "value required", "Each privilege needs a `resource` ref.")),
        };
        if res.is_none() {
            return Err(validation(
                "privileges",
                "invalid reference",
                "A privilege names a collection, index or function that does not exist.",
            ));
        }
        match p.get("actions") {
            None | Some(Value::Null) => {}
            Some(Value::Object(actions)) => {
                for (k, v) in actions {
                    let Some(a) = Action::parse(k) else {
                        return Err(role_failure("privileges", format!("Unknown action `{k}`.")));
                    };
                    check_action_value(ev, a.predicate_arity(), v, k)?;
                }
            }
            Some(_) => return Err(role_failure("privileges", "`actions` must be an object.".into())),
        }
    }
    let db = ev.auth.db;
    let at = ev.txn_ts();
    for m in listed(data.get("membership")) {
        let Value::Object(m) = m else {
            return Err(role_failure("membership", "Each membership must be an object {resource, predicate}.".into()));
        };
        let res = match m.get("resource") {
            Some(Value::Ref(r)) => ev.resource_of(r)?,
            _ => return Err(validation("membership", "value required", "Each membership needs a `resource` ref.")),
        };
        let Some(Resource::Coll(cid)) = res.filter(|r| matches!(r, Resource::Coll(c) if native::name(*c).is_none()))
        else {
            return Err(validation("membership", "invalid reference", "A membership must name a user collection."));
        };
        if let Some(p) = m.get("predicate").filter(|p| !p.is_null()) {
            check_action_value(ev, &[1], p, "predicate")?;
        }
        // v4 bounds how many roles may admit one collection's documents.
        let mut others = 0;
        for (other, d) in ev.tx.scan_docs(db, native::ROLES, None, false, at, crate::perm::ROLES_SCAN_MAX)? {
            if other == name {
                continue;
            }
            for om in listed(d.data.get("membership")) {
                if let Some(Value::Ref(r)) = om.get("resource") {
                    if ev.resource_of(r)? == Some(Resource::Coll(cid)) {
                        others += 1;
                        break;
                    }
                }
            }
        }
        if others >= ROLES_PER_COLLECTION_MAX {
            return Err(role_failure(
                "membership",
                format!("At most {ROLES_PER_COLLECTION_MAX} roles may have a membership on one collection."),
            ));
        }
    }
    Ok(())
}

fn check_action_value(ev: &mut Eval<'_>, arity: &[usize], v: &Value, what: &str) -> Result<()> {
    match v {
        Value::Bool(_) => Ok(()),
        Value::Query(_) => {
            let lam = ev.lambda_from_value(v).map_err(|e| role_failure("privileges", e.into_description()))?;
            let n = lam.params.arity();
            // A single parameter takes the whole argument (array or not), as in v4.
            if n == 1 || arity.is_empty() || arity.contains(&n) {
                Ok(())
            } else {
                Err(role_failure(
                    "privileges",
                    format!("The `{what}` predicate takes {arity:?} parameters, {n} given."),
                ))
            }
        }
        other => Err(role_failure(
            "privileges",
            format!("`{what}` must be a Boolean or a Query(Lambda), {} provided.", other.type_name()),
        )),
    }
}

/// Validate an access provider: `issuer` (unique in the database), a `jwks_uri` (https,
/// checked loosely as v4 did; http only on loopback, see [`crate::jwt::JwksUri`]), and `roles`
/// naming existing roles (refs, or `{role, predicate}` with a one-parameter lambda).
pub fn check_access_provider(ev: &mut Eval<'_>, name: &str, data: &Object) -> Result<()> {
    let issuer = match data.get("issuer") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(validation("issuer", "value required", "Value required.")),
    };
    match data.get("jwks_uri") {
        // v4 accepted any https-schemed string here (its own driver tests store
        // "https: //…"); a URI Tally cannot fetch is refused when a JWT needs its keys
        // (the login is then `unauthorized`), not when the provider is written.
        Some(Value::String(u))
            if u.len() > 6
                && u.len() <= crate::jwt::JWKS_URI_BYTES_MAX
                && u[..6].eq_ignore_ascii_case("https:")
                && !u.chars().any(char::is_control) => {}
        Some(Value::String(u)) => {
            crate::jwt::JwksUri::parse(u).map_err(|why| validation("jwks_uri", "invalid uri", why))?;
        }
        _ => return Err(validation("jwks_uri", "value required", "Value required.")),
    }
    let (db, at) = (ev.auth.db, ev.txn_ts());
    let providers = ev.tx.scan_docs(db, native::ACCESS_PROVIDERS, None, false, at, crate::jwt::PROVIDERS_SCAN_MAX)?;
    for (other, d) in providers {
        if other != name && d.data.get("issuer") == Some(&Value::String(issuer.clone())) {
            return Err(validation("issuer", "duplicate value", "Another access provider has this issuer."));
        }
    }
    for r in listed(data.get("roles")) {
        let (role, predicate) = match &r {
            Value::Object(o) => (o.get("role").cloned().unwrap_or(Value::Null), o.get("predicate").cloned()),
            other => (other.clone(), None),
        };
        let Value::Ref(rr) = &role else {
            return Err(validation("roles", "invalid value", "Each entry must be a Role ref or {role, predicate}."));
        };
        if rr.native_parent() != Some("roles") || ev.tx.live_doc(db, native::ROLES, &rr.id, at)?.is_none() {
            return Err(validation("roles", "invalid reference", &format!("Role `{}` does not exist.", rr.id)));
        }
        if let Some(p) = predicate.filter(|p| !p.is_null()) {
            let one_param =
                matches!(p, Value::Query(_)) && ev.lambda_from_value(&p).is_ok_and(|l| l.params.arity() == 1);
            if !one_param {
                return Err(validation(
                    "roles",
                    "invalid value",
                    "A role's predicate must be a Query(Lambda) of one parameter (it receives the JWT's claims).",
                ));
            }
        }
    }
    Ok(())
}

/// `Create(Credentials(), {instance, password})`: give a document a password.
pub fn create_credentials(ev: &mut Eval<'_>, params: Object) -> Result<Value> {
    ev.require_write()?;
    let Some(Value::Ref(instance)) = params.get("instance").cloned() else {
        return Err(validation("instance", "value required", "Value required."));
    };
    let Target::Doc { db, coll, id } = ev.resolve(&instance)? else {
        return Err(validation("instance", "invalid reference", "The instance must be a document ref."));
    };
    let mut check = Object::new();
    check.insert("instance".into(), Value::Ref(instance.clone()));
    ev.check_create(db, native::CREDENTIALS, &Ref::doc(Ref::native("credentials"), "0"), &check, false)?;
    if native::name(coll).is_some() {
        return Err(validation("instance", "invalid reference", "Credentials belong to user documents."));
    }
    let mut fields = Object::new();
    let mut creds = Object::new();
    creds.insert("password".into(), params.get("password").cloned().unwrap_or(Value::Null));
    fields.insert("credentials".into(), Value::Object(creds));
    let at = ev.txn_ts();
    let Some(old) = ev.tx.live_doc(db, coll, &id, at)? else {
        return Err(crate::error::not_found("Document not found."));
    };
    crate::fns::identity::hash_credentials(ev, &instance, &mut fields)?;
    let mut new = old.data.clone();
    if let Some(c) = fields.remove("credentials") {
        new.insert("credentials".into(), c);
    }
    crate::fns::docs::write_doc(ev, db, coll, &instance, Some(&old.data), Some(&new))?;
    // The credentials document written by `hash_credentials`.
    let found = ev
        .tx
        .scan_docs(db, native::CREDENTIALS, None, false, at, usize::MAX)?
        .into_iter()
        .find(|(_, d)| d.data.get("instance") == Some(&Value::Ref(instance.clone())));
    match found {
        Some((cid, d)) => Ok(render(&Ref::doc(Ref::native("credentials"), cid), at, &d.data)),
        None => Err(crate::model::corrupt("credentials were not written")),
    }
}

/// `Create(Tokens(), {instance, ttl, data})`: issue a token for a document directly.
pub fn create_token(ev: &mut Eval<'_>, params: Object) -> Result<Value> {
    ev.require_write()?;
    let Some(Value::Ref(instance)) = params.get("instance").cloned() else {
        return Err(validation("instance", "value required", "Value required."));
    };
    let Target::Doc { db, coll, id } = ev.resolve(&instance)? else {
        return Err(validation("instance", "invalid reference", "The instance must be a document ref."));
    };
    // Permission first: a caller without it learns nothing about the instance.
    let mut fields = Object::new();
    fields.insert("instance".into(), Value::Ref(instance.clone()));
    ev.check_create(db, native::TOKENS, &Ref::doc(Ref::native("tokens"), "0"), &fields, false)?;
    let at = ev.txn_ts();
    if native::name(coll).is_some() || ev.tx.live_doc(db, coll, &id, at)?.is_none() {
        return Err(validation("instance", "invalid reference", "The instance must be an existing user document."));
    }
    crate::fns::identity::issue_token(ev, db, &instance, &params)
}
