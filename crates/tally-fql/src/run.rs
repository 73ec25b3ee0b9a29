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
    let tx = Tx::new(snap, ts);
    let mut ev = Eval::new(tx, mode, auth);
    ev.limits = limits;
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
    let steps = ev.steps();
    let ids_issued = ev.ids_issued();
    let bytes_read = ev.tx.bytes_read;
    let bytes_written = ev.tx.bytes_written;
    let writes = if result.is_ok() && mode == Mode::Write { ev.tx.into_writes() } else { Vec::new() };
    Outcome { result, writes, ids_issued, steps, bytes_read, bytes_written }
}

fn unauthorized() -> FqlError {
    FqlError::new(code::UNAUTHORIZED, "Unauthorized: the secret is missing, malformed, revoked, or does not exist.")
}

/// Resolve a secret to the database and role it grants, at snapshot ts `ts`.
pub fn authenticate(snap: &dyn Snapshot, ts: Ts, secret: &str, root_key_hash: &str) -> Result<Auth> {
    // Scoped secrets: `secret:db/child:role`.
    let mut parts = secret.splitn(3, ':');
    let base = parts.next().unwrap_or_default();
    let scope = parts.next();
    let role_override = parts.next();
    let mut auth = authenticate_base(snap, ts, base, root_key_hash)?;
    if let Some(path) = scope {
        if auth.role != Role::Admin {
            return Err(unauthorized());
        }
        let mut tx = Tx::new(snap, ts);
        for name in path.split('/').filter(|s| !s.is_empty()) {
            let d = tx.live_doc(auth.db, native::DATABASES, name, ts)?.ok_or_else(unauthorized)?;
            auth.db = crate::catalog::internal_id(&d.data).ok_or_else(unauthorized)?;
        }
        if let Some(r) = role_override {
            auth.role = Role::parse(r).ok_or_else(unauthorized)?;
        }
    }
    Ok(auth)
}

fn authenticate_base(snap: &dyn Snapshot, ts: Ts, secret: &str, root_key_hash: &str) -> Result<Auth> {
    let h = hash_secret(secret);
    if !root_key_hash.is_empty() && bool::from(h.as_bytes().ct_eq(root_key_hash.as_bytes())) {
        return Ok(Auth::root_admin());
    }
    let mut tx = Tx::new(snap, ts);
    if let Some(auth) = token_auth(&mut tx, secret, ts)? {
        return Ok(auth);
    }
    let (key_db, _key_id, data) = find_key(&mut tx, secret, ts)?.ok_or_else(unauthorized)?;
    let key = crate::model::DocVersion { ts, deleted: false, data };
    let role = match key.data.get("role") {
        Some(Value::String(r)) => Role::parse(r).ok_or_else(unauthorized)?,
        _ => return Err(unauthorized()),
    };
    let db = match key.data.get("database") {
        Some(Value::Ref(r)) => scope_db(&mut tx, key_db, r, ts)?,
        _ => key_db,
    };
    Ok(Auth::new(db, role))
}

/// Authenticate a token secret: the identity's database, the `client` role (until
/// roles grant more), and the identity and token refs.
fn token_auth(tx: &mut Tx<'_>, secret: &str, ts: Ts) -> Result<Option<Auth>> {
    use base64::Engine;
    let Some(raw) =
        secret.strip_prefix("fn").and_then(|s| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok())
    else {
        return Ok(None);
    };
    if raw.first() != Some(&2) {
        return Ok(None);
    }
    let Some((db, id, data)) = crate::fns::identity::find_token(tx, &raw, secret, ts)? else {
        return Err(unauthorized());
    };
    let Some(Value::Ref(identity)) = data.get("instance").cloned() else { return Err(unauthorized()) };
    if !db_alive(tx, db, ts)? || !crate::fns::identity::identity_alive(tx, db, &identity, ts)? {
        return Err(unauthorized());
    }
    let mut auth = Auth::new(db, Role::Client);
    auth.identity = Some(identity);
    auth.token = Some(Ref::doc(Ref::native("tokens"), id.to_string()));
    Ok(Some(auth))
}

/// Find the live key a secret belongs to: `(key's database, key id, key document)`.
/// The secret is checked against the stored hash in constant time, and the key's
/// database (and every ancestor) must still exist.
pub fn find_key(tx: &mut Tx<'_>, secret: &str, ts: Ts) -> Result<Option<(DbId, u64, Object)>> {
    use base64::Engine;
    let Some(raw) =
        secret.strip_prefix("fn").and_then(|s| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok())
    else {
        return Ok(None);
    };
    if raw.len() != 37 || raw[0] != 1 {
        return Ok(None);
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&raw[1..9]);
    let key_db = u64::from_be_bytes(b);
    b.copy_from_slice(&raw[9..17]);
    let key_id = u64::from_be_bytes(b);
    let Some(key) = tx.live_doc(key_db, native::KEYS, &key_id.to_string(), ts)? else { return Ok(None) };
    let stored = key.data.get("hashed_secret").and_then(|v| v.as_str()).unwrap_or_default();
    if !bool::from(hash_secret(secret).as_bytes().ct_eq(stored.as_bytes())) {
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

/// Does `db` and every ancestor still exist?
pub fn db_alive(tx: &mut Tx<'_>, mut db: DbId, ts: Ts) -> Result<bool> {
    let mut hops = 0;
    while db != ROOT_DB {
        hops += 1;
        if hops > 1024 {
            return Ok(false);
        }
        match tx.live_doc(REGISTRY_DB, 0, &db.to_string(), ts)? {
            Some(d) => match d.data.get("parent") {
                Some(Value::Long(p)) => db = *p as u64,
                _ => return Ok(false),
            },
            None => return Ok(false),
        }
    }
    Ok(true)
}

/// Record a new database in the registry (called by `CreateDatabase`).
pub fn register_db(tx: &mut Tx<'_>, id: DbId, parent: DbId, name: &str) {
    let mut o = Object::new();
    o.insert("parent".into(), Value::Long(parent as i64));
    o.insert("name".into(), Value::String(name.to_string()));
    tx.put_doc(REGISTRY_DB, 0, &id.to_string(), false, &o);
}

/// Remove a database from the registry (called by `Delete(Database(..))`).
pub fn unregister_db(tx: &mut Tx<'_>, id: DbId) {
    tx.put_doc(REGISTRY_DB, 0, &id.to_string(), true, &Object::new());
}
