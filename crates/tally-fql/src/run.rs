//! Entry points used by the server and the executor: authenticate a secret, and
//! evaluate one query against a snapshot.

use std::time::Instant;

use subtle::ConstantTimeEq;
use tally_storage::Snapshot;
use tally_value::{Object, Ref, Value};

use crate::auth::{Auth, Role};
use crate::error::{code, FqlError, Result};
use crate::eval::{Eval, Limits, Mode};
use crate::expr::Expr;
use crate::fns::schema::hash_secret;
use crate::model::{native, DbId, Ts, Tx, ROOT_DB};

/// Registry of databases by internal id: `REGISTRY | 0 | id -> {parent, name}`, so a key
/// can check that its database and every ancestor still exist.
pub const REGISTRY_DB: DbId = u64::MAX;

/// What one evaluation produced.
pub struct Outcome {
    pub result: Result<Value>,
    /// Writes to apply at the transaction ts (empty on error or in read-only mode).
    pub writes: Vec<crate::model::Write>,
    pub ids_issued: u64,
    pub steps: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Whether evaluation stopped at `Limits::work_bytes_max` (see there).
    pub work_stopped: bool,
    /// Heads of the secret placeholders the evaluation issued: the receiving node
    /// completes exactly these in the answer (`crate::secret::reveal`).
    pub secrets: Vec<String>,
}

/// Evaluate `expr` at `ts`. In `Mode::ReadOnly` a write yields `needs_write`.
// Every argument is a distinct input of one evaluation; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    snap: &dyn Snapshot,
    ts: Ts,
    mode: Mode,
    auth: Auth,
    expr: &Expr,
    entropy: [u8; 32],
    limits: Limits,
    deadline: Option<Instant>,
) -> Outcome {
    evaluate_cached(snap, ts, mode, auth, expr, entropy, limits, deadline, None)
}

/// [`evaluate`] with the executor's catalog cache ([`crate::schema_cache`]): the same
/// outcome, byte for byte, with fewer reads of schema documents.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_cached(
    snap: &dyn Snapshot,
    ts: Ts,
    mode: Mode,
    auth: Auth,
    expr: &Expr,
    entropy: [u8; 32],
    limits: Limits,
    deadline: Option<Instant>,
    cache: Option<&crate::schema_cache::SchemaCache>,
) -> Outcome {
    let mut tx = Tx::new(snap, ts).with_schema_cache(cache);
    tx.keep_decoded = mode == Mode::Write;
    let mut ev = Eval::new(tx, mode, auth);
    ev.set_limits(limits);
    ev.entropy = entropy;
    ev.deadline = if mode == Mode::ReadOnly { deadline } else { None };
    let mut result = ev.eval(expr);
    if result.is_ok() && ev.tx.too_deep {
        let mut e = FqlError::new(code::VALIDATION_FAILED, "document data is not valid.");
        e.failures.push(crate::error::Failure {
            field: vec!["data".into()],
            code: "invalid value",
            description: format!("Documents may be nested at most {} levels deep.", crate::model::DOC_DEPTH_MAX),
        });
        result = Err(e);
    }
    if let Ok(v) = &result {
        // Measured before anything encodes it: an over-large answer is never built.
        if let Err(e) = crate::budget::check_answer(v, limits.answer_bytes_max) {
            result = Err(e);
        }
    }
    let steps = ev.steps();
    let ids_issued = ev.ids_issued();
    let bytes_read = ev.tx.bytes_read;
    let bytes_written = ev.tx.bytes_written;
    let work_stopped = ev.work_stopped();
    let secrets = std::mem::take(&mut ev.secrets_issued);
    let mut writes = if result.is_ok() && mode == Mode::Write { ev.tx.into_writes() } else { Vec::new() };
    if crate::secret::stored_placeholder(&writes, &secrets) {
        // Only the answer can carry a new secret: the executor never sees the secret
        // itself, so what it would store is a placeholder that works nowhere.
        writes.clear();
        result = Err(FqlError::new(
            code::INVALID_ARGUMENT,
            "A secret issued by this query cannot be stored in a document or index: Tally keeps only its hash, \
             and shows the secret once, in the answer. Store the key's or token's ref instead.",
        ));
    }
    Outcome { result, writes, ids_issued, steps, bytes_read, bytes_written, work_stopped, secrets }
}

fn unauthorized() -> FqlError {
    FqlError::new(code::UNAUTHORIZED, "Unauthorized: the secret is missing, malformed, revoked, or does not exist.")
}

/// Resolve a secret to the database and role it grants, at snapshot ts `ts`.
///
/// Scoped secrets (admin keys and the root key; `@doc` also server keys):
/// `secret:role`, `secret:db/child:role` where role is `admin`, `server`,
/// `server-readonly`, `client`, `@role/name` or `@doc/collection/id`; and Tally's
/// `secret:db/child` (keep the key's role, move to the child).
pub fn authenticate(snap: &dyn Snapshot, ts: Ts, secret: &str, root_key_hash: &str) -> Result<Auth> {
    authenticate_cacheable(snap, ts, secret, root_key_hash).map(|(auth, _)| auth)
}

/// [`authenticate`], and whether its answer may be cached until the next change of a
/// schema document or the registry (`crate::authcache`): a key's secret whose
/// authentication read no document with a `ttl`; never a token or an `@doc` scope,
/// which depend on an identity document.
pub fn authenticate_cacheable(snap: &dyn Snapshot, ts: Ts, secret: &str, root_key_hash: &str) -> Result<(Auth, bool)> {
    let (base, scope) = match secret.split_once(':') {
        Some((b, s)) => (b, Some(s)),
        None => (secret, None),
    };
    let mut tx = Tx::new(snap, ts);
    let mut auth = authenticate_base(&mut tx, ts, base, root_key_hash)?;
    let Some(scope) = scope else {
        // A key's own ref (v4's `CurrentToken()` for keys) is as constant as the key.
        let token_login = auth.token.as_ref().is_some_and(|t| t.native_parent() == Some("tokens"));
        let cacheable = !token_login && !tx.ttl_seen;
        return Ok((auth, cacheable));
    };
    // Tokens ignore scopes, as in v4.
    if auth.token.as_ref().is_some_and(|t| t.native_parent() == Some("tokens")) {
        return Ok((auth, false));
    }
    // A scoped key acts somewhere (or as someone) other than its own database, where v4
    // gives it no token metadata.
    auth.token = None;
    let (path, role) = match scope.split_once(':') {
        Some((p, r)) => (p, Some(r)),
        None if Role::builtin(scope).is_some() || scope.starts_with('@') => ("", Some(scope)),
        None => (scope, None),
    };
    let is_doc = role.is_some_and(|r| r.starts_with("@doc/"));
    let may_scope = auth.role == Role::Admin || (is_doc && path.is_empty() && auth.role == Role::Server);
    if !may_scope {
        return Err(unauthorized());
    }
    for name in path.split('/').filter(|s| !s.is_empty()) {
        let d = tx.live_doc(auth.db, native::DATABASES, name, ts)?.ok_or_else(unauthorized)?;
        auth.db = crate::catalog::internal_id(&d.data).ok_or_else(unauthorized)?;
    }
    if !db_alive(&mut tx, auth.db, ts)? {
        return Err(unauthorized());
    }
    auth.priority = db_priority(&mut tx, auth.db, ts)?;
    match role {
        None => {}
        Some(r) if r.starts_with("@doc/") => {
            let mut parts = r["@doc/".len()..].splitn(2, '/');
            let (Some(coll), Some(id)) = (parts.next(), parts.next()) else { return Err(unauthorized()) };
            let identity = Ref::doc(Ref::collection(coll), id);
            if !crate::fns::identity::identity_alive(&mut tx, auth.db, &identity, ts)? {
                return Err(unauthorized());
            }
            auth.role = Role::Member;
            auth.identity = Some(identity);
        }
        Some(r) if r.starts_with(crate::auth::CUSTOM_PREFIX) => {
            let name = &r[crate::auth::CUSTOM_PREFIX.len()..];
            if name.contains('/') || tx.live_doc(auth.db, native::ROLES, name, ts)?.is_none() {
                return Err(unauthorized());
            }
            auth.role = Role::custom(vec![name.to_string()]);
        }
        Some(r) => auth.role = Role::builtin(r).ok_or_else(unauthorized)?,
    }
    Ok((auth, !is_doc && !tx.ttl_seen))
}

fn authenticate_base(tx: &mut Tx<'_>, ts: Ts, secret: &str, root_key_hash: &str) -> Result<Auth> {
    let h = hash_secret(secret);
    if !root_key_hash.is_empty() && bool::from(h.as_bytes().ct_eq(root_key_hash.as_bytes())) {
        return Ok(Auth::root_admin());
    }
    if let Some(auth) = token_auth(tx, secret, ts)? {
        return Ok(auth);
    }
    let (key_db, key_id, data) = find_key(tx, secret, ts)?.ok_or_else(unauthorized)?;
    let db = key_database(tx, key_db, key_id, &data, ts)?;
    // User-defined roles belong to the database the key opens.
    let role = match data.get("role") {
        Some(Value::String(r)) => match Role::builtin(r) {
            Some(role) => role,
            None => custom_role(tx, db, &data, key_id, ts)?,
        },
        Some(Value::Ref(_) | Value::Array(_)) => custom_role(tx, db, &data, key_id, ts)?,
        _ => return Err(unauthorized()),
    };
    if !db_alive(tx, db, ts)? {
        return Err(unauthorized());
    }
    let mut auth = Auth::new(db, role);
    if db == key_db {
        // v4's `CurrentToken()` for a key used in the database it lives in.
        auth.token = Some(Ref::doc(Ref::native("keys"), key_id.to_string()));
    }
    auth.priority = match data.get("priority") {
        Some(Value::Long(p)) => (*p).clamp(1, crate::auth::PRIORITY_MAX as i64) as u32,
        _ => db_priority(tx, db, ts)?,
    };
    Ok(auth)
}

/// The database a key opens. A key with a `database` is bound to that database's
/// internal id when it is written: it follows the database through renames, dies with
/// it, never opens a database created later under the same name, and opens nothing once
/// the database has left the key's own subtree (`MoveDatabase`). Keys written before
/// the binding existed resolve the name, but only to a database older than the key.
fn key_database(tx: &mut Tx<'_>, key_db: DbId, key_id: u64, data: &Object, ts: Ts) -> Result<DbId> {
    match (data.get(crate::model::KEY_DATABASE_ID), data.get("database")) {
        (Some(Value::Long(t)), _) => {
            let target = *t as u64;
            match db_path_from(tx, key_db, target, ts)? {
                Some(path) if !path.is_empty() => Ok(target),
                _ => Err(unauthorized()),
            }
        }
        (_, Some(Value::Ref(r))) => {
            let target = scope_db(tx, key_db, r, ts)?;
            if target >= key_id {
                return Err(unauthorized());
            }
            Ok(target)
        }
        _ => Ok(key_db),
    }
}

/// The user-defined roles a key (document `key`, id `key_id`) was given, under their
/// current names: a role deleted and created again under the same name is not one of
/// them (`fns::security::bound_role_name`). A key whose roles are all gone
/// authenticates to nothing.
fn custom_role(tx: &mut Tx<'_>, db: DbId, key: &Object, key_id: u64, ts: Ts) -> Result<Role> {
    let mut names = Vec::new();
    for name in crate::fns::security::role_names(key.get("role")) {
        if let Some(current) = crate::fns::security::bound_role_name(tx, db, key, key_id, &name, ts)? {
            names.push(current);
        }
    }
    if names.is_empty() {
        return Err(unauthorized());
    }
    Ok(Role::custom(names))
}

/// Authenticate a token secret: the identity's database, the member role (its roles
/// come from role membership), and the identity and token refs.
fn token_auth(tx: &mut Tx<'_>, secret: &str, ts: Ts) -> Result<Option<Auth>> {
    if crate::secret::parse(secret).is_none_or(|c| c.kind != crate::secret::KIND_TOKEN) {
        return Ok(None);
    }
    let Some((db, id, data)) = crate::fns::identity::find_token(tx, secret, ts)? else {
        return Err(unauthorized());
    };
    let Some(Value::Ref(identity)) = data.get("instance").cloned() else { return Err(unauthorized()) };
    if !db_alive(tx, db, ts)? || !crate::fns::identity::token_identity_alive(tx, db, id, &data, &identity, ts)? {
        return Err(unauthorized());
    }
    let mut auth = Auth::new(db, Role::Member);
    auth.identity = Some(identity);
    auth.token = Some(Ref::doc(Ref::native("tokens"), id.to_string()));
    auth.priority = db_priority(tx, db, ts)?;
    Ok(Some(auth))
}

/// Find the live key a secret belongs to: `(key's database, key id, key document)`.
/// The secret is checked against the stored hash in constant time, and the key's
/// database (and every ancestor) must still exist.
pub fn find_key(tx: &mut Tx<'_>, secret: &str, ts: Ts) -> Result<Option<(DbId, u64, Object)>> {
    let Some(claim) = crate::secret::parse(secret).filter(|c| c.kind == crate::secret::KIND_KEY) else {
        return Ok(None);
    };
    let (key_db, key_id) = (claim.db, claim.id);
    let Some(key) = tx.live_doc(key_db, native::KEYS, &key_id.to_string(), ts)? else { return Ok(None) };
    let stored = key.data.get("hashed_secret").and_then(|v| v.as_str()).unwrap_or_default();
    if !bool::from(claim.expected_hash.as_bytes().ct_eq(stored.as_bytes())) {
        return Ok(None);
    }
    if !db_alive(tx, key_db, ts)? {
        return Ok(None);
    }
    Ok(Some((key_db, key_id, key.data)))
}

/// The names leading from database `from` down to `to` (empty when equal), or None when
/// `to` is not `from` or one of its descendants.
pub fn db_path_from(tx: &mut Tx<'_>, from: DbId, mut to: DbId, ts: Ts) -> Result<Option<Vec<String>>> {
    let mut names = Vec::new();
    let mut hops = 0;
    while to != from {
        if to == ROOT_DB || hops > 1024 {
            return Ok(None);
        }
        hops += 1;
        let Some(d) = tx.live_doc(REGISTRY_DB, 0, &to.to_string(), ts)? else { return Ok(None) };
        match (d.data.get("parent"), d.data.get("name")) {
            (Some(Value::Long(p)), Some(Value::String(n))) => {
                names.push(n.clone());
                to = *p as u64;
            }
            _ => return Ok(None),
        }
    }
    names.reverse();
    Ok(Some(names))
}

fn scope_db(tx: &mut Tx<'_>, from: DbId, r: &Ref, ts: Ts) -> Result<DbId> {
    let parent = match r.database.as_deref() {
        Some(p) => scope_db(tx, from, p, ts)?,
        None => from,
    };
    let d = tx.live_doc(parent, native::DATABASES, &r.id, ts)?.ok_or_else(unauthorized)?;
    crate::catalog::internal_id(&d.data).ok_or_else(unauthorized)
}

/// Does `db` and every ancestor still exist, none of them `disabled`?
pub fn db_alive(tx: &mut Tx<'_>, mut db: DbId, ts: Ts) -> Result<bool> {
    let mut hops = 0;
    while db != ROOT_DB {
        hops += 1;
        if hops > 1024 {
            return Ok(false);
        }
        match tx.live_doc(REGISTRY_DB, 0, &db.to_string(), ts)? {
            Some(d) if d.data.get("disabled") == Some(&Value::Bool(true)) => return Ok(false),
            Some(d) => match d.data.get("parent") {
                Some(Value::Long(p)) => db = *p as u64,
                _ => return Ok(false),
            },
            None => return Ok(false),
        }
    }
    Ok(true)
}

/// The scheduling weight of queries in `db`: its `priority`, else its nearest
/// ancestor's, else [`crate::auth::PRIORITY_DEFAULT`].
pub fn db_priority(tx: &mut Tx<'_>, mut db: DbId, ts: Ts) -> Result<u32> {
    let mut hops = 0;
    while db != ROOT_DB && hops < 1024 {
        hops += 1;
        let Some(d) = tx.live_doc(REGISTRY_DB, 0, &db.to_string(), ts)? else { break };
        if let Some(Value::Long(p)) = d.data.get("priority") {
            return Ok((*p).clamp(1, crate::auth::PRIORITY_MAX as i64) as u32);
        }
        match d.data.get("parent") {
            Some(Value::Long(p)) => db = *p as u64,
            _ => break,
        }
    }
    Ok(crate::auth::PRIORITY_DEFAULT)
}

/// Record a database in the registry (`CreateDatabase`, renames, `MoveDatabase`, and
/// updates of `priority`/`disabled`), from its schema document `data`.
pub fn register_db(tx: &mut Tx<'_>, id: DbId, parent: DbId, name: &str, data: &Object) -> Result<()> {
    let mut o = Object::new();
    o.insert("parent".into(), Value::Long(parent as i64));
    o.insert("name".into(), Value::String(name.to_string()));
    for k in ["priority", "disabled"] {
        if let Some(v) = data.get(k).filter(|v| !v.is_null()) {
            o.insert(k.into(), v.clone());
        }
    }
    tx.put_doc(REGISTRY_DB, 0, &id.to_string(), false, &o)
}

/// Remove a database from the registry (called by `Delete(Database(..))`).
pub fn unregister_db(tx: &mut Tx<'_>, id: DbId) -> Result<()> {
    tx.put_doc(REGISTRY_DB, 0, &id.to_string(), true, &Object::new())
}
