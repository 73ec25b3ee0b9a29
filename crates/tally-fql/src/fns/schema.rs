//! Schema: collections, indexes, databases, keys, functions and roles — their
//! constructors (`create_*`), ref functions (`collection index database ...`), native
//! collection refs (`collections() keys() ...`), `ref`, and `call` for user functions.

use sha2::{Digest, Sha256};
use tally_value::{Object, Ref, Value};

use crate::catalog::{internal_id, Target};
use crate::error::{code, invalid_argument, wrong_type, FqlError, Result};
use crate::eval::Eval;
use crate::expr::{Call, FnSpec};
use crate::fns::docs::{apply_index_diff, deep_merge, index_rows, render, validation};
use crate::model::{native, CollId, DbId, INTERNAL_ID, KEY_DATABASE_ID};

pub(crate) static SPECS: &[FnSpec] = &[
    FnSpec { name: "create_collection", optional: &[], required: &[], handler: create_collection },
    FnSpec { name: "create_class", optional: &[], required: &[], handler: create_collection },
    FnSpec { name: "create_index", optional: &[], required: &[], handler: create_index },
    FnSpec { name: "create_database", optional: &[], required: &[], handler: create_database },
    FnSpec { name: "create_key", optional: &[], required: &[], handler: create_key },
    FnSpec { name: "create_function", optional: &[], required: &[], handler: create_function },
    FnSpec { name: "create_role", optional: &[], required: &[], handler: create_role },
    FnSpec { name: "collection", optional: &["scope"], required: &[], handler: ref_ctor },
    FnSpec { name: "class", optional: &["scope"], required: &[], handler: ref_ctor },
    FnSpec { name: "index", optional: &["scope"], required: &[], handler: ref_ctor },
    FnSpec { name: "database", optional: &["scope"], required: &[], handler: ref_ctor },
    FnSpec { name: "function", optional: &["scope"], required: &[], handler: ref_ctor },
    FnSpec { name: "role", optional: &["scope"], required: &[], handler: ref_ctor },
    FnSpec { name: "access_provider", optional: &["scope"], required: &[], handler: ref_ctor },
    FnSpec { name: "collections", optional: &[], required: &[], handler: native_ref },
    FnSpec { name: "classes", optional: &[], required: &[], handler: native_ref },
    FnSpec { name: "indexes", optional: &[], required: &[], handler: native_ref },
    FnSpec { name: "databases", optional: &[], required: &[], handler: native_ref },
    FnSpec { name: "keys", optional: &[], required: &[], handler: native_ref },
    FnSpec { name: "functions", optional: &[], required: &[], handler: native_ref },
    FnSpec { name: "roles", optional: &[], required: &[], handler: native_ref },
    FnSpec { name: "tokens", optional: &[], required: &[], handler: native_ref },
    FnSpec { name: "credentials", optional: &[], required: &[], handler: native_ref },
    FnSpec { name: "access_providers", optional: &[], required: &[], handler: native_ref },
    FnSpec { name: "ref", optional: &["id"], required: &[], handler: ref_fn },
    FnSpec { name: "call", optional: &["arguments"], required: &[], handler: call_fn },
    FnSpec { name: "move_database", optional: &[], required: &["to"], handler: move_database },
    FnSpec { name: "key_from_secret", optional: &[], required: &[], handler: key_from_secret },
];

/// Names that cannot be used for schema objects.
const RESERVED: &[&str] = &["events", "set", "self", "documents", "_"];

fn scope_ref(ev: &mut Eval<'_>, call: &Call) -> Result<Option<Ref>> {
    match ev.opt_arg(call, "scope")? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Ref(r)) => Ok(Some(r)),
        Some(other) => Err(wrong_type("Database Ref", &other).at("scope")),
    }
}

fn native_for_ctor(name: &str) -> &'static str {
    match name {
        "collection" | "class" => "collections",
        "index" => "indexes",
        "database" => "databases",
        "function" => "functions",
        "role" => "roles",
        _ => "access_providers",
    }
}

fn ref_ctor(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let name = ev.str_arg(call, call.name())?;
    let scope = scope_ref(ev, call)?;
    Ok(Value::Ref(Ref::doc(Ref::native(native_for_ctor(call.name())), name).with_database(scope)))
}

fn native_ref(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let scope = match ev.primary(call)? {
        Value::Null => None,
        Value::Ref(r) => Some(r),
        other => return Err(wrong_type("Database Ref", &other).at(call.name())),
    };
    let id = if call.name() == "classes" { "collections" } else { call.name() };
    Ok(Value::Ref(Ref::native(id).with_database(scope)))
}

fn ref_fn(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let base = ev.primary(call)?;
    let r = match (base, ev.opt_arg(call, "id")?) {
        (Value::Ref(c), Some(id)) => {
            let id = match id {
                Value::String(s) => s,
                Value::Long(n) => n.to_string(),
                other => return Err(wrong_type("String", &other).at("id")),
            };
            Ref::doc(c, id)
        }
        // The legacy path form: "collections/players/123", "indexes/x", "tokens/self".
        (Value::String(path), None) => {
            tally_value::legacy_ref::parse(&path).map_err(|e| invalid_argument(e).at("ref"))?
        }
        (other, _) => return Err(wrong_type("Ref", &other).at("ref")),
    };
    if crate::fns::selfref::is_self(&r) {
        return crate::fns::selfref::resolve_self_ref(ev, &r).map(Value::Ref);
    }
    Ok(Value::Ref(r))
}

fn params_of(ev: &mut Eval<'_>, call: &Call) -> Result<Object> {
    match ev.primary(call)? {
        Value::Object(o) => Ok(o),
        other => Err(wrong_type("Object", &other).at(call.name())),
    }
}

fn name_of(params: &Object) -> Result<String> {
    match params.get("name") {
        Some(Value::String(s)) if !s.is_empty() => {
            crate::limits::check_name(s)?;
            if RESERVED.contains(&s.as_str()) || s.contains('/') {
                return Err(validation(
                    "name",
                    "invalid value",
                    &format!("The name `{s}` is reserved or contains '/'; choose another."),
                ));
            }
            Ok(s.clone())
        }
        Some(Value::String(_)) | None => Err(validation("name", "value required", "Value required.")),
        Some(other) => {
            Err(validation("name", "invalid type", &format!("String expected, {} provided.", other.type_name())))
        }
    }
}

/// Copy the fields a schema document of kind `coll` may hold.
fn schema_fields(coll: CollId, params: &Object) -> Object {
    let allowed: &[&str] = match coll {
        native::COLLECTIONS => &["name", "data", "history_days", "ttl_days", "permissions"],
        native::INDEXES => {
            &["name", "source", "terms", "values", "unique", "serialized", "data", "permissions", "partitions"]
        }
        native::DATABASES => &["name", "data", "priority", "api_version", "disabled"],
        native::FUNCTIONS => &["name", "body", "data", "role", "permissions"],
        native::ACCESS_PROVIDERS => &["name", "issuer", "jwks_uri", "roles", "data"],
        native::ROLES => &["name", "privileges", "membership", "data"],
        // A key's `ttl` ends it, as v4 documents (it used to be dropped: a key meant to
        // expire kept working).
        native::KEYS => &["database", "role", "data", "priority", "ttl"],
        // A token's `instance` is fixed when it is issued (moving a token to another
        // identity would hand that identity's rights to its holder).
        native::TOKENS => &["ttl", "data"],
        _ => &[],
    };
    params.iter().filter(|(k, _)| allowed.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Create a named schema document of kind `coll` in the query's database.
fn create_named(ev: &mut Eval<'_>, coll: CollId, mut params: Object) -> Result<(DbId, String, Object)> {
    ev.require_write()?;
    let name = name_of(&params)?;
    let db = ev.auth.db;
    params.insert("name".into(), Value::String(name.clone()));
    let mut data = schema_fields(coll, &params);
    ev.check_create(db, coll, &schema_ref(coll, &name), &data, false)?;
    let ts = ev.txn_ts();
    if ev.tx.live_doc(db, coll, &name, ts)?.is_some() {
        return Err(FqlError::new(
            code::INSTANCE_ALREADY_EXISTS,
            format!("A {} named `{name}` already exists.", kind_name(coll)),
        ));
    }
    data.insert(INTERNAL_ID.into(), Value::Long(ev.new_id() as i64));
    Ok((db, name, data))
}

fn kind_name(coll: CollId) -> &'static str {
    match coll {
        native::COLLECTIONS => "collection",
        native::INDEXES => "index",
        native::DATABASES => "database",
        native::FUNCTIONS => "function",
        native::ROLES => "role",
        native::KEYS => "key",
        _ => "schema object",
    }
}

fn schema_ref(coll: CollId, id: &str) -> Ref {
    Ref::doc(Ref::native(native::name(coll).unwrap_or("collections")), id)
}

fn create_collection(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let params = params_of(ev, call)?;
    create_native(ev, "collections", params).map_err(|e| e.at(call.name()))
}

fn create_index(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let params = params_of(ev, call)?;
    create_native(ev, "indexes", params).map_err(|e| e.at(call.name()))
}

fn create_database(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let params = params_of(ev, call)?;
    create_native(ev, "databases", params).map_err(|e| e.at(call.name()))
}

fn create_function(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let params = params_of(ev, call)?;
    create_native(ev, "functions", params).map_err(|e| e.at(call.name()))
}

fn create_role(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let params = params_of(ev, call)?;
    create_native(ev, "roles", params).map_err(|e| e.at(call.name()))
}

fn create_key(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let params = params_of(ev, call)?;
    create_native(ev, "keys", params).map_err(|e| e.at(call.name()))
}

/// `Create(Collections(), {...})` and the `create_*` functions.
pub fn create_native(ev: &mut Eval<'_>, native_name: &str, params: Object) -> Result<Value> {
    let coll = native::by_name(native_name)
        .ok_or_else(|| invalid_argument(format!("Cannot create documents in {native_name}.")))?;
    match coll {
        native::KEYS => create_key_doc(ev, params),
        native::INDEXES => create_index_doc(ev, params),
        native::DATABASES => {
            let (db, name, mut data) = create_named(ev, coll, params)?;
            check_database(&data)?;
            data.retain(|_, v| !v.is_null());
            ev.tx.put_doc(db, coll, &name, false, &data)?;
            if let Some(id) = internal_id(&data) {
                crate::run::register_db(&mut ev.tx, id, db, &name, &data)?;
            }
            let ts = ev.txn_ts();
            Ok(render(&schema_ref(coll, &name), ts, &data))
        }
        native::FUNCTIONS => {
            let (db, name, mut data) = create_named(ev, coll, params)?;
            crate::fns::security::check_function(ev, &data)?;
            crate::fns::security::bind_roles(ev, db, "role", None, &mut data)?;
            ev.tx.put_doc(db, coll, &name, false, &data)?;
            let ts = ev.txn_ts();
            Ok(render(&schema_ref(coll, &name), ts, &data))
        }
        native::ROLES | native::ACCESS_PROVIDERS => {
            let (db, name, mut data) = create_named(ev, coll, params)?;
            if coll == native::ROLES {
                crate::fns::security::check_role(ev, &name, &data)?;
                crate::fns::security::bind_role_resources(ev, None, &mut data)?;
            } else {
                crate::fns::security::check_access_provider(ev, &name, &data)?;
                crate::fns::security::bind_roles(ev, db, "roles", None, &mut data)?;
                // What a JWT's `aud` must name; derived, never set by the caller.
                data.insert("audience".into(), Value::String(crate::jwt::audience(db)));
            }
            ev.tx.put_doc(db, coll, &name, false, &data)?;
            let ts = ev.txn_ts();
            Ok(render(&schema_ref(coll, &name), ts, &data))
        }
        native::CREDENTIALS => crate::fns::security::create_credentials(ev, params),
        native::TOKENS => crate::fns::security::create_token(ev, params),
        native::COLLECTIONS => {
            let (db, name, mut data) = create_named(ev, coll, params)?;
            match data.get("history_days") {
                None => {
                    data.insert("history_days".into(), Value::Long(30));
                }
                Some(Value::Null) => {
                    data.remove("history_days");
                }
                _ => {}
            }
            ev.tx.put_doc(db, coll, &name, false, &data)?;
            let ts = ev.txn_ts();
            Ok(render(&schema_ref(coll, &name), ts, &data))
        }
        _ => Err(invalid_argument(format!("Cannot create documents in {native_name}."))),
    }
}

/// A token's or key's `ttl` is a Time (or absent).
fn check_ttl(data: &Object) -> Result<()> {
    match data.get("ttl") {
        None | Some(Value::Time(_) | Value::Null) => Ok(()),
        Some(other) => {
            Err(validation("ttl", "invalid type", &format!("Time expected, {} provided.", other.type_name())))
        }
    }
}

/// `priority` is 1–500 and `disabled` a boolean.
fn check_database(data: &Object) -> Result<()> {
    if data.get("priority").is_some_and(|p| !matches!(p, Value::Long(1..=500) | Value::Null)) {
        return Err(validation("priority", "invalid value", "Priority must be an integer from 1 to 500."));
    }
    if data.get("disabled").is_some_and(|d| !matches!(d, Value::Bool(_) | Value::Null)) {
        return Err(validation("disabled", "invalid type", "Disabled must be a Boolean."));
    }
    Ok(())
}

fn create_index_doc(ev: &mut Eval<'_>, params: Object) -> Result<Value> {
    let (db, name, mut data) = create_named(ev, native::INDEXES, params)?;
    let src_ok = match data.get("source") {
        Some(Value::Ref(_)) | Some(Value::Array(_)) | Some(Value::Object(_)) => true,
        Some(_) => false,
        None => return Err(validation("source", "value required", "Value required.")),
    };
    if !src_ok {
        return Err(validation("source", "invalid type", "Source must be a collection ref or an array of sources."));
    }
    crate::purity::check_index_bindings(&data)?;
    for (field, default) in [("unique", false), ("serialized", true)] {
        if !data.contains_key(field) {
            data.insert(field.into(), Value::Bool(default));
        }
    }
    data.insert("active".into(), Value::Bool(true));
    if !data.contains_key("terms") {
        data.insert("partitions".into(), Value::Long(8));
    } else {
        data.insert("partitions".into(), Value::Long(1));
    }
    let def = ev.parse_index(db, &data).map_err(|e| {
        let mut v = validation("terms", "invalid value", &e.description);
        v.description = "index definition is not valid.".into();
        v
    })?;
    // Check the sources exist.
    if def.sources.is_empty() {
        return Err(FqlError::new(code::INVALID_REF, "The index source collection does not exist; create it first."));
    }
    ev.tx.put_doc(db, native::INDEXES, &name, false, &data)?;
    // Build the index over the documents that already exist.
    let ts = ev.txn_ts();
    for src in def.sources.clone() {
        let coll_name = collection_name(ev, db, src.coll)?;
        let docs = ev.tx.scan_docs(db, src.coll, None, false, ts, usize::MAX)?;
        for (id, d) in docs {
            let r = Ref::doc(Ref::collection(&coll_name), id);
            let rows = index_rows(ev, &def, src.coll, &r, d.ts, &d.data)?;
            apply_index_diff(ev, db, &def, &r, &[], &rows)?;
        }
    }
    Ok(render(&schema_ref(native::INDEXES, &name), ts, &data))
}

/// The name of the collection with internal id `coll`.
fn collection_name(ev: &mut Eval<'_>, db: DbId, coll: CollId) -> Result<String> {
    let ts = ev.read_ts();
    for (name, d) in ev.tx.scan_docs(db, native::COLLECTIONS, None, false, ts, usize::MAX)? {
        if internal_id(&d.data) == Some(coll) {
            return Ok(name);
        }
    }
    Err(crate::model::corrupt("index source collection vanished"))
}

/// SHA-256 hex of a secret string (the root key's stored form).
pub fn hash_secret(secret: &str) -> String {
    let d = Sha256::digest(secret.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn create_key_doc(ev: &mut Eval<'_>, params: Object) -> Result<Value> {
    ev.require_write()?;
    let db = ev.auth.db;
    let role = match params.get("role") {
        Some(v) if !v.is_null() => {
            let target = match params.get("database") {
                Some(Value::Ref(r)) if r.native_parent() == Some("databases") => {
                    ev.resolve_scope(Some(r)).unwrap_or(db)
                }
                _ => db,
            };
            crate::fns::security::parse_role_field(ev, target, v)?
        }
        _ => return Err(validation("role", "value required", "Value required.")),
    };
    if params.get("priority").is_some_and(|p| !matches!(p, Value::Long(1..=500) | Value::Null)) {
        return Err(validation("priority", "invalid value", "Priority must be an integer from 1 to 500."));
    }
    let fields = schema_fields(native::KEYS, &params);
    check_ttl(&fields)?;
    ev.check_create(db, native::KEYS, &Ref::doc(Ref::native("keys"), "0"), &fields, false)?;
    crate::fns::security::check_role_assignment(ev, &role)?;
    let mut target = None;
    if let Some(d) = params.get("database") {
        match d {
            Value::Ref(r) if r.native_parent() == Some("databases") => target = Some(key_target(ev, r)?),
            Value::Null => {}
            other => {
                return Err(validation(
                    "database",
                    "invalid type",
                    &format!("Database Ref expected, {} provided.", other.type_name()),
                ))
            }
        }
    }
    let id = ev.new_id();
    let (secret, hashed) = ev.issue_secret(crate::secret::KIND_KEY, db, id);
    let mut data = schema_fields(native::KEYS, &params);
    data.retain(|_, v| !v.is_null());
    data.insert("hashed_secret".into(), Value::String(hashed));
    if let Some(t) = target {
        data.insert(KEY_DATABASE_ID.into(), Value::Long(t as i64));
    }
    crate::fns::security::bind_roles(ev, target.unwrap_or(db), "role", None, &mut data)?;
    let sid = id.to_string();
    ev.tx.put_doc(db, native::KEYS, &sid, false, &data)?;
    let ts = ev.txn_ts();
    let mut out = render(&Ref::doc(Ref::native("keys"), sid), ts, &data);
    if let Value::Object(o) = &mut out {
        o.insert("secret".into(), Value::String(secret));
    }
    Ok(out)
}

/// The internal id of the database a key's `database` ref names (at the transaction
/// ts): what the key is bound to from now on, whatever that database is later called.
fn key_target(ev: &mut Eval<'_>, r: &Ref) -> Result<DbId> {
    let now = ev.txn_ts();
    ev.with_read_ts(now, |ev| ev.resolve_scope(Some(r)))
        .map_err(|_| FqlError::new(code::INVALID_REF, format!("Database `{}` does not exist.", r.id)))
}

/// Keep a key's [`KEY_DATABASE_ID`] in step with its `database` field: kept while the
/// field is unchanged, bound afresh when an update names a database, gone without one.
fn rebind_key(ev: &mut Eval<'_>, old: &Object, new: &mut Object) -> Result<()> {
    match new.get("database").cloned() {
        Some(Value::Ref(r)) if r.native_parent() == Some("databases") => {
            if old.get("database") != Some(&Value::Ref(r.clone())) || !new.contains_key(KEY_DATABASE_ID) {
                let t = key_target(ev, &r)?;
                new.insert(KEY_DATABASE_ID.into(), Value::Long(t as i64));
            }
            Ok(())
        }
        None | Some(Value::Null) => {
            new.remove("database");
            new.remove(KEY_DATABASE_ID);
            Ok(())
        }
        Some(other) => Err(validation(
            "database",
            "invalid type",
            &format!("Database Ref expected, {} provided.", other.type_name()),
        )),
    }
}

/// `Update`/`Replace` of a schema document.
pub fn modify_schema(
    ev: &mut Eval<'_>,
    db: DbId,
    coll: CollId,
    r: &Ref,
    old: Object,
    params: Object,
    replace: bool,
) -> Result<Value> {
    let patch = schema_fields(coll, &params);
    let mut new = if replace {
        let mut n = Object::new();
        // Replace keeps what binds a document to what it grants: ids, secrets, the
        // identity a token or credentials belong to, the database a key opens.
        for k in [INTERNAL_ID, "hashed_secret", "hashed_password", "instance", "active", "partitions", KEY_DATABASE_ID]
        {
            if let Some(v) = old.get(k) {
                n.insert(k.into(), v.clone());
            }
        }
        if !patch.contains_key("name") {
            if let Some(v) = old.get("name") {
                n.insert("name".into(), v.clone());
            }
        }
        n
    } else {
        old.clone()
    };
    deep_merge(&mut new, &patch);
    if coll == native::ACCESS_PROVIDERS {
        new.insert("audience".into(), Value::String(crate::jwt::audience(db)));
    }
    let ts = ev.txn_ts();
    let old_name = r.id.clone();
    let new_name = match new.get("name") {
        Some(Value::String(s)) => s.clone(),
        _ => old_name.to_string(),
    };
    ev.check_write(db, coll, r, &old, &new)?;
    match coll {
        native::FUNCTIONS => {
            crate::fns::security::check_function(ev, &new)?;
            crate::fns::security::bind_roles(ev, db, "role", Some((&old, db, patch.contains_key("role"))), &mut new)?;
        }
        native::ROLES => {
            crate::fns::security::check_role(ev, &new_name, &new)?;
            crate::fns::security::bind_role_resources(ev, Some((&old, &patch)), &mut new)?;
        }
        native::ACCESS_PROVIDERS => {
            crate::fns::security::check_access_provider(ev, &new_name, &new)?;
            crate::fns::security::bind_roles(ev, db, "roles", Some((&old, db, patch.contains_key("roles"))), &mut new)?;
        }
        native::DATABASES => check_database(&new)?,
        native::INDEXES => crate::purity::check_index_bindings(&new)?,
        native::TOKENS => check_ttl(&new)?,
        native::COLLECTIONS => crate::retention::keep_min_valid(&old, &mut new, ev.txn_ts()),
        native::KEYS => {
            check_ttl(&new)?;
            rebind_key(ev, &old, &mut new)?;
            let role = match new.get("role").cloned() {
                Some(v) => {
                    let target = match new.get(KEY_DATABASE_ID) {
                        Some(Value::Long(t)) => *t as u64,
                        _ => db,
                    };
                    crate::fns::security::parse_role_field(ev, target, &v)?
                }
                None => return Err(validation("role", "value required", "Value required.")),
            };
            crate::fns::security::check_role_assignment(ev, &role)?;
            let target_of = |d: &Object| match d.get(KEY_DATABASE_ID) {
                Some(Value::Long(t)) => *t as u64,
                _ => db,
            };
            let (old_target, new_target) = (target_of(&old), target_of(&new));
            let written = patch.contains_key("role");
            crate::fns::security::bind_roles(ev, new_target, "role", Some((&old, old_target, written)), &mut new)?;
        }
        _ => {}
    }
    if native::is_named(coll) && new_name != old_name {
        name_of(&new)?;
        if ev.tx.live_doc(db, coll, &new_name, ts)?.is_some() {
            return Err(FqlError::new(
                code::INSTANCE_ALREADY_EXISTS,
                format!("A {} named `{new_name}` already exists.", kind_name(coll)),
            ));
        }
        ev.tx.put_doc(db, coll, &old_name, true, &old)?;
    }
    ev.tx.put_doc(db, coll, &new_name, false, &new)?;
    if coll == native::DATABASES {
        if let Some(id) = internal_id(&new) {
            if new_name != old_name {
                rename_keys_into(ev, db, id, &old_name, &new_name)?;
            }
            crate::run::register_db(&mut ev.tx, id, db, &new_name, &new)?;
        }
    }
    let out_ref = Ref { id: new_name.into(), ..r.clone() };
    Ok(render(&out_ref, ts, &new))
}

/// `Delete` of a schema document, with the cascades v4 performs.
pub fn delete_schema(ev: &mut Eval<'_>, db: DbId, coll: CollId, id: &str, old: &Object) -> Result<()> {
    ev.tx.put_doc(db, coll, id, true, old)?;
    if coll == native::DATABASES {
        if let Some(child) = internal_id(old) {
            delete_keys_into(ev, db, child, id)?;
            crate::run::unregister_db(&mut ev.tx, child)?;
        }
    }
    if coll == native::COLLECTIONS {
        if let Some(cid) = internal_id(old) {
            // Indexes over a deleted collection go with it.
            for d in ev.indexes_on(db, cid)?.iter() {
                let ts = ev.txn_ts();
                if let Some(doc) = ev.tx.live_doc(db, native::INDEXES, &d.name, ts)? {
                    ev.tx.put_doc(db, native::INDEXES, &d.name, true, &doc.data)?;
                }
            }
        }
    }
    Ok(())
}

/// The keys of `db` bound to database `child` or one of its descendants (legacy keys
/// without a bound id: whose `database` ref names `child_name`).
fn keys_into(ev: &mut Eval<'_>, db: DbId, child: DbId, child_name: &str) -> Result<Vec<(String, Object)>> {
    let ts = ev.txn_ts();
    let mut out = Vec::new();
    for (kid, k) in ev.tx.scan_docs(db, native::KEYS, None, false, ts, usize::MAX)? {
        let hit = match (k.data.get(KEY_DATABASE_ID), k.data.get("database")) {
            (Some(Value::Long(t)), _) => crate::run::db_path_from(&mut ev.tx, child, *t as u64, ts)?.is_some(),
            // A legacy key was issued for `child` only if `child` is older than it.
            (_, Some(Value::Ref(r))) => {
                r.database.is_none() && r.id == child_name && kid.parse::<u64>().is_ok_and(|k| child < k)
            }
            _ => false,
        };
        if hit {
            out.push((kid, k.data));
        }
    }
    Ok(out)
}

/// Deleting a database deletes the keys its parent holds for it (and for its
/// descendants), as in v4; keys inside it die with its registry entry.
fn delete_keys_into(ev: &mut Eval<'_>, db: DbId, child: DbId, child_name: &str) -> Result<()> {
    for (kid, data) in keys_into(ev, db, child, child_name)? {
        ev.tx.put_doc(db, native::KEYS, &kid, true, &data)?;
    }
    Ok(())
}

/// A database renamed from `old_name` to `new_name`: the parent's keys for it show the
/// new name (they stay bound to it by id; a legacy key is bound now).
fn rename_keys_into(ev: &mut Eval<'_>, db: DbId, child: DbId, old_name: &str, new_name: &str) -> Result<()> {
    for (kid, mut data) in keys_into(ev, db, child, old_name)? {
        let direct = match data.get("database") {
            Some(Value::Ref(r)) => r.database.is_none() && r.id == old_name,
            _ => false,
        };
        if !direct {
            continue;
        }
        data.insert("database".into(), Value::Ref(Ref::doc(Ref::native("databases"), new_name)));
        data.insert(KEY_DATABASE_ID.into(), Value::Long(child as i64));
        ev.tx.put_doc(db, native::KEYS, &kid, false, &data)?;
    }
    Ok(())
}

// ---- user-defined functions ----

fn call_fn(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let f = match ev.primary(call)? {
        Value::Ref(r) => r,
        Value::String(s) => Ref::doc(Ref::native("functions"), s),
        other => return Err(wrong_type("Function Ref", &other).at("call")),
    };
    let args = match call.get("arguments") {
        Some(_) => ev.varargs(call, "arguments")?,
        None => Vec::new(),
    };
    // The raw `arguments` value is what `call` predicates receive.
    let raw_args = match args.len() {
        1 => args[0].clone(),
        _ => Value::Array(args.clone()),
    };
    // The function (its database, body and role) is read at the transaction's own ts,
    // never at an enclosing `At`'s: permissions are decided at the transaction ts, so
    // the body that runs must be the one they were decided for. `At(old, Call(f))` runs
    // today's `f` (its reads still see `old`), and a deleted function stays deleted.
    let now = ev.txn_ts();
    let (db, data) = ev.with_read_ts(now, |ev| function_doc(ev, &f))?;
    let fid = internal_id(&data).ok_or_else(|| crate::model::corrupt("function without internal id"))?;
    ev.check_call(db, fid, &raw_args)?;
    let body = data.get("body").cloned().unwrap_or(Value::Null);
    let mut lam = ev.lambda_from_value(&body)?;
    lam.literal = true;
    // The body runs in the function's database with the function's role (the caller's
    // when it has none); the caller's identity stays visible.
    let role = crate::fns::security::bound_function_role(&mut ev.tx, db, &data, now)?;
    let saved = ev.auth.clone();
    ev.auth.db = db;
    if let Some(role) = role {
        ev.auth.role = role;
    }
    let r = ev.with_fresh_env(|ev| ev.apply(&lam, args));
    ev.auth = saved;
    r.map_err(|inner| {
        if inner.needs_write {
            return inner;
        }
        let mut e = FqlError::new(code::CALL_ERROR, "Calling the function resulted in an error.");
        e.cause.push(inner);
        e
    })
}

/// The database and current document of function `f`, for `Call`.
fn function_doc(ev: &mut Eval<'_>, f: &Ref) -> Result<(DbId, Object)> {
    match ev.resolve(f).map_err(|e| e.at("call"))? {
        Target::Doc { db, coll: native::FUNCTIONS, id } => {
            let at = ev.read_ts();
            match ev.tx.live_doc(db, native::FUNCTIONS, &id, at)? {
                Some(d) => Ok((db, d.data)),
                None => Err(FqlError::new(code::INVALID_REF, format!("Function `{id}` does not exist.")).at("call")),
            }
        }
        _ => Err(invalid_argument(format!("{f} is not a function.")).at("call")),
    }
}

// ---- databases and keys ----

fn db_ref_arg(ev: &mut Eval<'_>, call: &Call, key: &str) -> Result<Ref> {
    match ev.arg(call, key)? {
        Value::Ref(r) if r.native_parent() == Some("databases") => Ok(r),
        other => Err(wrong_type("Database Ref", &other).at(if key == "to" { "to" } else { "move_database" })),
    }
}

/// `MoveDatabase(from, to)`: make `from` a child of `to`, keeping its contents and keys.
fn move_database(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let from = db_ref_arg(ev, call, "move_database")?;
    let to = db_ref_arg(ev, call, "to")?;
    ev.require_write()?;
    let src_parent = ev.resolve_scope(from.database.as_deref()).map_err(|e| e.at("move_database"))?;
    let dst = ev.resolve_scope(Some(&to)).map_err(|e| e.at("to"))?;
    // v4 asks for the right to delete the source (both ends are in the caller's scope).
    let src_ref = Ref::doc(Ref::native("databases"), from.id.clone());
    ev.check_delete(src_parent, native::DATABASES, &src_ref).map_err(|e| e.at("move_database"))?;
    let ts = ev.txn_ts();
    let Some(doc) = ev.tx.live_doc(src_parent, native::DATABASES, &from.id, ts)? else {
        return Err(
            FqlError::new(code::INVALID_REF, format!("Database `{}` does not exist.", from.id)).at("move_database")
        );
    };
    let id = internal_id(&doc.data).ok_or_else(|| crate::model::corrupt("database without internal id"))?;
    // Refuse to move a database into itself or one of its descendants.
    let mut probe = dst;
    let mut hops = 0;
    while probe != crate::model::ROOT_DB && hops < 1024 {
        if probe == id {
            return Err(invalid_argument("A database cannot be moved into itself or one of its children.").at("to"));
        }
        probe = match ev.tx.live_doc(crate::run::REGISTRY_DB, 0, &probe.to_string(), ts)? {
            Some(d) => match d.data.get("parent") {
                Some(Value::Long(p)) => *p as u64,
                _ => break,
            },
            None => break,
        };
        hops += 1;
    }
    if ev.tx.live_doc(dst, native::DATABASES, &from.id, ts)?.is_some() {
        return Err(FqlError::new(
            code::INSTANCE_ALREADY_EXISTS,
            format!("The destination already has a database named `{}`.", from.id),
        )
        .at("to"));
    }
    ev.tx.put_doc(src_parent, native::DATABASES, &from.id, true, &doc.data)?;
    ev.tx.put_doc(dst, native::DATABASES, &from.id, false, &doc.data)?;
    crate::run::register_db(&mut ev.tx, id, dst, &from.id, &doc.data)?;
    Ok(render(&Ref::doc(Ref::native("databases"), from.id.clone()).with_database(Some(to)), ts, &doc.data))
}

/// `KeyFromSecret(secret)`: the key document a secret belongs to.
fn key_from_secret(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let secret = ev.str_arg(call, "key_from_secret")?;
    ev.require_pure_ok("reads keys")?;
    let at = ev.read_ts();
    let found = crate::run::find_key(&mut ev.tx, &secret, at)?;
    let Some((key_db, key_id, data)) = found else {
        return Err(FqlError::new(code::INSTANCE_NOT_FOUND, "No key has that secret.").at("key_from_secret"));
    };
    // The key must live in the caller's database or one of its descendants.
    let Some(path) = crate::run::db_path_from(&mut ev.tx, ev.auth.db, key_db, at)? else {
        return Err(crate::error::permission_denied().at("key_from_secret"));
    };
    if ev.auth.role != crate::auth::Role::Admin {
        return Err(crate::error::permission_denied().at("key_from_secret"));
    }
    let mut scope: Option<Ref> = None;
    for name in path {
        scope = Some(Ref::doc(Ref::native("databases"), name).with_database(scope));
    }
    let r = Ref::doc(Ref::native("keys").with_database(scope), key_id.to_string());
    let ts = ev.tx.live_doc(key_db, native::KEYS, &key_id.to_string(), at)?.map(|d| d.ts).unwrap_or(at);
    Ok(render(&r, ts, &data))
}
