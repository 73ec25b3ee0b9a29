//! Identity: document credentials, `login logout identify`, `current_identity
//! has_current_identity current_token has_current_token`.
//!
//! Passwords are stored only as Argon2id hashes (PHC strings) under
//! `credentials.hashed_password`. The salt is derived from the transaction's entropy, so
//! every replica computes the same hash. Tokens are documents of the native `tokens`
//! collection holding only the SHA-256 of their secret.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use sha2::{Digest, Sha256};
use tally_value::{Object, Ref, Value};

use crate::catalog::Target;
use crate::error::{code, invalid_argument, invalid_expression, wrong_type, FqlError, Result};
use crate::eval::Eval;
use crate::expr::{Call, Expr, FnSpec};
use crate::fns::docs::{read_doc_unchecked, render, validation};
use crate::model::{native, DbId};

pub(crate) static SPECS: &[FnSpec] = &[
    FnSpec { name: "login", optional: &[], required: &["params"], handler: login },
    FnSpec { name: "logout", optional: &[], required: &[], handler: logout },
    FnSpec { name: "identify", optional: &[], required: &["password"], handler: identify },
    FnSpec { name: "current_identity", optional: &[], required: &[], handler: current_identity },
    FnSpec { name: "has_current_identity", optional: &[], required: &[], handler: has_current_identity },
    // v4's older names, still sent by the drivers' deprecated `Identity()` / `HasIdentity()`.
    FnSpec { name: "identity", optional: &[], required: &[], handler: current_identity },
    FnSpec { name: "has_identity", optional: &[], required: &[], handler: has_current_identity },
    FnSpec { name: "current_token", optional: &[], required: &[], handler: current_token },
    FnSpec { name: "has_current_token", optional: &[], required: &[], handler: has_current_token },
    FnSpec {
        name: crate::secret::PASSWORD_DIGEST_FN,
        optional: &[crate::secret::PASSWORD_TAG_ARG],
        required: &[],
        handler: password_digest,
    },
];

/// `{"tally_password_digest": hex, "tag": hex}`: what the receiving node logs instead of
/// a literal password (see `crate::secret`). Valid only with the tag made for this very
/// input; anything else was not written by the receiving node, and is refused the way v4
/// refuses a function it does not know (`invalid expression`) rather than read as data.
fn password_digest(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let reserved = || {
        invalid_expression(format!(
            "`{}` is reserved: Tally writes it into its input log in place of a literal password, and queries \
             may not use it. Pass the password as a string.",
            crate::secret::PASSWORD_DIGEST_FN
        ))
        .at(crate::secret::PASSWORD_DIGEST_FN)
    };
    let Some(entropy) = ev.password_entropy().copied() else { return Err(reserved()) };
    let (Some(Expr::Lit(Value::String(hex_digest))), Some(Expr::Lit(Value::String(tag)))) =
        (call.get(crate::secret::PASSWORD_DIGEST_FN), call.get(crate::secret::PASSWORD_TAG_ARG))
    else {
        return Err(reserved());
    };
    crate::secret::digest_value(hex_digest, tag, &entropy).ok_or_else(reserved)
}

fn password_arg(ev: &Eval<'_>, v: &Value) -> Result<crate::secret::Password> {
    use crate::secret::{Password, PASSWORD_BYTES_MAX};
    match Password::from_value(v, ev.password_entropy()) {
        Some(Password::Plain(s)) if s.is_empty() || s.len() > PASSWORD_BYTES_MAX => {
            Err(validation("credentials", "invalid value", "Password must be 1 to 1024 bytes."))
        }
        Some(p) => Ok(p),
        None => {
            Err(validation("credentials", "invalid type", &format!("String expected, {} provided.", v.type_name())))
        }
    }
}

/// Argon2id cost: 8 MiB, one pass. Hashing runs inside the serial executor, so the cost
/// is kept to a few milliseconds; raise it together with an executor that hashes off
/// the apply thread.
fn hasher() -> Argon2<'static> {
    let params = Params::new(8 * 1024, 1, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Replace `credentials.password` by its hash (called for every document write).
pub fn hash_credentials(ev: &mut Eval<'_>, r: &Ref, fields: &mut Object) -> Result<()> {
    let Some(Value::Object(creds)) = fields.get_mut("credentials") else {
        if matches!(fields.get("credentials"), Some(Value::Null) | None) {
            return Ok(());
        }
        return Err(validation(
            "credentials",
            "invalid type",
            "Credentials must be an object like {password: \"...\"}.",
        ));
    };
    let Some(pw) = creds.remove("password") else { return Ok(()) };
    let material = password_arg(ev, &pw)?.material();
    let mut h = Sha256::new();
    h.update(b"tally.credentials.salt.v1\0");
    h.update(ev.entropy);
    h.update(r.id.as_bytes());
    h.update(ev.new_id().to_be_bytes());
    let salt_bytes = h.finalize();
    let salt = SaltString::encode_b64(&salt_bytes[..16])
        .map_err(|e| FqlError::new(code::INTERNAL_ERROR, format!("salt: {e}")))?;
    let hash = hasher()
        .hash_password(&material, &salt)
        .map_err(|e| FqlError::new(code::INTERNAL_ERROR, format!("password hashing failed: {e}")))?;
    let hashed = hash.to_string();
    creds.insert("hashed_password".into(), Value::String(hashed.clone()));
    sync_credentials_doc(ev, r, Some(hashed))
}

/// Keep the document's entry in the native `credentials` collection in step: v4 lists
/// credentials there as `{instance, hashed_password}` documents. `None` removes it.
pub fn sync_credentials_doc(ev: &mut Eval<'_>, r: &Ref, hashed: Option<String>) -> Result<()> {
    let Target::Doc { db, .. } = ev.resolve(r)? else { return Ok(()) };
    let ts = ev.txn_ts();
    let existing = ev
        .tx
        .scan_docs(db, native::CREDENTIALS, None, false, ts, usize::MAX)?
        .into_iter()
        .find(|(_, d)| d.data.get("instance") == Some(&Value::Ref(r.clone())));
    match (existing, hashed) {
        (Some((id, d)), None) => ev.tx.put_doc(db, native::CREDENTIALS, &id, true, &d.data)?,
        (existing, Some(h)) => {
            let id = match existing {
                Some((id, _)) => id,
                None => ev.new_id().to_string(),
            };
            let mut data = Object::new();
            data.insert("instance".into(), Value::Ref(r.clone()));
            data.insert("hashed_password".into(), Value::String(h));
            ev.tx.put_doc(db, native::CREDENTIALS, &id, false, &data)?;
        }
        (None, None) => {}
    }
    Ok(())
}

/// Does `password` match the document's credentials? Hashes are of the password's
/// digest; hashes made before digests (of the plain string) are still accepted.
fn verify(data: &Object, password: &crate::secret::Password) -> bool {
    let stored = data.get("credentials").and_then(|c| c.get("hashed_password")).and_then(|h| h.as_str());
    let Some(h) = stored.and_then(|s| PasswordHash::new(s).ok()) else { return false };
    if hasher().verify_password(&password.material(), &h).is_ok() {
        return true;
    }
    match password {
        crate::secret::Password::Plain(s) => hasher().verify_password(s.as_bytes(), &h).is_ok(),
        crate::secret::Password::Digest(_) => false,
    }
}

fn identity_arg(ev: &mut Eval<'_>, call: &Call, key: &str) -> Result<Ref> {
    match ev.arg(call, key)? {
        Value::Ref(r) => Ok(r),
        other => Err(wrong_type("Ref", &other).at(if key == "login" { "login" } else { "identify" })),
    }
}

fn authentication_failed() -> FqlError {
    FqlError::new("authentication failed", "The document was not found or the password was incorrect.")
}

fn identify(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let r = identity_arg(ev, call, "identify")?;
    let pw = match ev.arg(call, "password")? {
        v @ (Value::String(_) | Value::Bytes(_)) => crate::secret::Password::from_value(&v, ev.password_entropy())
            .ok_or_else(|| wrong_type("String", &v).at("password"))?,
        other => return Err(wrong_type("String", &other).at("password")),
    };
    // As in v4, identifying needs the password, not the right to read the document.
    let found = match own_identity_doc(ev, &r) {
        Ok(f) => f,
        Err(e) if e.code == code::INVALID_REF => None,
        Err(e) => return Err(e),
    };
    Ok(Value::Bool(found.is_some_and(|(_, _, _, d)| verify(&d.data, &pw))))
}

/// The identity document `r` names for `Identify` and `Login`, read without a
/// permission check (they check a password instead) — but only in the database the
/// query runs in: a document of another database (a child, through a scoped ref) is no
/// identity of this one, and answers like a missing document, so no key becomes a
/// password oracle for another tenant or writes a token into it.
fn own_identity_doc(
    ev: &mut Eval<'_>,
    r: &Ref,
) -> Result<Option<(DbId, crate::model::CollId, String, crate::model::DocVersion)>> {
    Ok(read_doc_unchecked(ev, r)?.filter(|(db, ..)| *db == ev.auth.db))
}

fn login(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let r = identity_arg(ev, call, "login")?;
    let params = match ev.arg(call, "params")? {
        Value::Object(o) => o,
        other => return Err(wrong_type("Object", &other).at("params")),
    };
    let Some(pw) = params.get("password").and_then(|p| crate::secret::Password::from_value(p, ev.password_entropy()))
    else {
        return Err(invalid_argument("Login needs {password: \"...\"}.").at("params"));
    };
    ev.require_write()?;
    // As in v4, logging in needs the password, not the right to read the document.
    let (db, _coll, _id, doc) = match own_identity_doc(ev, &r) {
        Ok(Some(f)) => f,
        Ok(None) => return Err(authentication_failed()),
        Err(e) if e.code == code::INVALID_REF => return Err(authentication_failed()),
        Err(e) => return Err(e),
    };
    if !verify(&doc.data, &pw) {
        return Err(authentication_failed());
    }
    issue_token(ev, db, &r, &params)
}

/// Write a token for `identity` in `db` (with `ttl` and `data` from `params`) and return
/// it with its secret: the only time the secret is ever shown.
pub fn issue_token(ev: &mut Eval<'_>, db: DbId, identity: &Ref, params: &Object) -> Result<Value> {
    match params.get("ttl") {
        None | Some(Value::Null) | Some(Value::Time(_)) => {}
        Some(other) => {
            return Err(validation("ttl", "invalid type", &format!("Time expected, {} provided.", other.type_name())))
        }
    }
    let id = ev.new_id();
    let (secret, hashed) = ev.issue_secret(crate::secret::KIND_TOKEN, db, id);
    let mut data = Object::new();
    data.insert("instance".into(), Value::Ref(identity.clone()));
    data.insert("hashed_secret".into(), Value::String(hashed));
    // Bind the token to this incarnation of its identity (see `token_identity_alive`).
    let at = ev.txn_ts();
    if let Some(gen) = identity_doc(&mut ev.tx, db, identity, at)?.and_then(|d| crate::catalog::internal_id(&d.data)) {
        data.insert(crate::model::TOKEN_INSTANCE_ID.into(), Value::Long(gen as i64));
    }
    for k in ["ttl", "data"] {
        if let Some(v) = params.get(k) {
            if !v.is_null() {
                data.insert(k.into(), v.clone());
            }
        }
    }
    ev.tx.put_doc(db, native::TOKENS, &id.to_string(), false, &data)?;
    let ts = ev.txn_ts();
    let mut out = render(&Ref::doc(Ref::native("tokens"), id.to_string()), ts, &data);
    if let Value::Object(o) = &mut out {
        o.insert("secret".into(), Value::String(secret));
    }
    Ok(out)
}

fn logout(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let all = ev.bool_arg(call, "logout")?;
    // v4 answers false when there is no token (or, for `all`, no identity) to log out.
    // A JWT has neither: only its issuer can revoke it (or it expires).
    let (Some(identity), token) = (ev.auth.identity.clone(), ev.auth.token.clone()) else {
        return Ok(Value::Bool(false));
    };
    if token.is_none() && !all {
        return Ok(Value::Bool(false));
    }
    ev.require_write()?;
    let db = ev.auth.db;
    let ts = ev.txn_ts();
    if all {
        for (id, d) in ev.tx.scan_docs(db, native::TOKENS, None, false, ts, usize::MAX)? {
            if d.data.get("instance") == Some(&Value::Ref(identity.clone())) {
                ev.tx.put_doc(db, native::TOKENS, &id, true, &d.data)?;
            }
        }
    } else if let Some(token) = token {
        if let Some(d) = ev.tx.live_doc(db, native::TOKENS, &token.id, ts)? {
            ev.tx.put_doc(db, native::TOKENS, &token.id, true, &d.data)?;
        }
    }
    Ok(Value::Bool(true))
}

fn missing_identity() -> FqlError {
    FqlError::new(
        code::MISSING_IDENTITY,
        "This query has no identity: it was not made with a token secret, or its JWT has no `sub` claim.",
    )
}

/// A token's identity document, or (as in v4) a JWT's `sub` claim.
fn current_identity(ev: &mut Eval<'_>, _call: &Call) -> Result<Value> {
    if let Some(login) = &ev.auth.jwt {
        return login.subject().cloned().ok_or_else(missing_identity);
    }
    ev.auth.identity.clone().map(Value::Ref).ok_or_else(missing_identity)
}

fn has_current_identity(ev: &mut Eval<'_>, _call: &Call) -> Result<Value> {
    let has = match &ev.auth.jwt {
        Some(login) => login.subject().is_some(),
        None => ev.auth.identity.is_some(),
    };
    Ok(Value::Bool(has))
}

/// A token's ref, a key's ref (a key used in the database it lives in), or (as in v4) a
/// JWT's claims as an object.
fn current_token(ev: &mut Eval<'_>, _call: &Call) -> Result<Value> {
    if let Some(login) = &ev.auth.jwt {
        return Ok(login.payload.clone());
    }
    ev.auth.token.clone().map(Value::Ref).ok_or_else(|| {
        FqlError::new(
            code::INVALID_TOKEN,
            "Token metadata is not accessible: this query was not made with a token, a JWT, or a key of the \
             database it runs in (the root key, and keys made in a parent database, have none).",
        )
    })
}

fn has_current_token(ev: &mut Eval<'_>, _call: &Call) -> Result<Value> {
    Ok(Value::Bool(ev.auth.token.is_some() || ev.auth.jwt.is_some()))
}

/// `Ref(Collection("x"), "self")` means the current identity when it is a document of `x`.
pub fn resolve_self(ev: &Eval<'_>, r: &Ref) -> Option<Ref> {
    if r.id != "self" {
        return None;
    }
    let id = ev.auth.identity.as_ref()?;
    (id.collection == r.collection).then(|| id.clone())
}

/// Check a token secret: `(db, token id, token document)` when valid at `ts`.
pub fn find_token(tx: &mut crate::model::Tx<'_>, secret: &str, ts: u64) -> Result<Option<(DbId, u64, Object)>> {
    use subtle::ConstantTimeEq;
    let Some(claim) = crate::secret::parse(secret).filter(|c| c.kind == crate::secret::KIND_TOKEN) else {
        return Ok(None);
    };
    let (db, id) = (claim.db, claim.id);
    let Some(tok) = tx.live_doc(db, native::TOKENS, &id.to_string(), ts)? else { return Ok(None) };
    let stored = tok.data.get("hashed_secret").and_then(|v| v.as_str()).unwrap_or_default();
    if !bool::from(claim.expected_hash.as_bytes().ct_eq(stored.as_bytes())) {
        return Ok(None);
    }
    if let Some(Value::Time(ttl)) = tok.data.get("ttl") {
        if ttl.timestamp_micros() <= ts as i64 {
            return Ok(None);
        }
    }
    Ok(Some((db, id, tok.data)))
}

/// Does identity document `identity` exist at `ts`?
pub fn identity_alive(tx: &mut crate::model::Tx<'_>, db: DbId, identity: &Ref, ts: u64) -> Result<bool> {
    Ok(identity_doc(tx, db, identity, ts)?.is_some())
}

/// The live identity document `identity` at `ts`.
fn identity_doc(
    tx: &mut crate::model::Tx<'_>,
    db: DbId,
    identity: &Ref,
    ts: u64,
) -> Result<Option<crate::model::DocVersion>> {
    let Some(coll) = identity.collection.as_deref() else { return Ok(None) };
    let Some(cdoc) = tx.live_doc(db, native::COLLECTIONS, &coll.id, ts)? else { return Ok(None) };
    let Some(cid) = crate::catalog::internal_id(&cdoc.data) else { return Ok(None) };
    tx.live_doc(db, cid, &identity.id, ts)
}

/// Is the identity a token (document `token`, id `token_id`) was issued to still
/// alive, as the same incarnation? Every incarnation of a user document carries a fresh
/// internal id, and a token records the one it was issued to: a document deleted and
/// created again under the same ref is a new identity, and old tokens stay dead. A token
/// issued before tokens recorded it is accepted only by an identity older than itself
/// (ids grow with the commit ts).
pub fn token_identity_alive(
    tx: &mut crate::model::Tx<'_>,
    db: DbId,
    token_id: u64,
    token: &Object,
    identity: &Ref,
    ts: u64,
) -> Result<bool> {
    let Some(doc) = identity_doc(tx, db, identity, ts)? else { return Ok(false) };
    let gen = crate::catalog::internal_id(&doc.data);
    Ok(match (token.get(crate::model::TOKEN_INSTANCE_ID), gen) {
        (Some(Value::Long(bound)), Some(gen)) => *bound as u64 == gen,
        (Some(_), _) => false,
        (None, Some(gen)) => gen < token_id,
        (None, None) => true,
    })
}
