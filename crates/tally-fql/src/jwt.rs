//! Logins with a JWT issued by an access provider (FQL v4): what the evaluator knows.
//!
//! The receiving node (tally-server `jwt.rs`) parses the token, checks `exp`/`nbf` on its
//! own clock, fetches the provider's keys and verifies the signature. None of that is
//! deterministic, so none of it happens here. What the node learned travels inside the
//! logged input as a [`JwtLogin`] (the provider's name and issuer, and the verified
//! claims); from that alone, at the commit ts, the evaluator works out the query's roles
//! (the provider's `roles`, whose predicates run on the claims) and answers
//! `CurrentIdentity()` (the `sub` claim) and `CurrentToken()` (the claims).
//!
//! Audience: as in v4, the `aud` claim names the database: `https://db.fauna.com/db/`
//! followed by its global id, the z-base-32 rendering of a 64-bit id (13 characters).
//! Tally's global id is the database's internal id, so the audience an access provider
//! shows is fixed when it is created and survives renames and `MoveDatabase`.

use std::sync::Arc;

use tally_storage::Snapshot;
use tally_value::{Object, Value};

use crate::auth::{Auth, Role};
use crate::error::{code, FqlError, Result};
use crate::eval::{Eval, Mode};
use crate::model::{native, DbId, Ts, Tx};
use crate::perm::{listed, PredArgs};

/// What every audience starts with (v4's canonical database URL).
pub const AUDIENCE_PREFIX: &str = "https://db.fauna.com/db/";

/// Most access providers scanned for an issuer in one database.
pub const PROVIDERS_SCAN_MAX: usize = 4096;

/// Deepest nesting of arrays and objects accepted in a JWT's claims.
pub const CLAIMS_DEPTH_MAX: usize = 32;

/// z-base-32's alphabet (a permutation of base 32 chosen for human use).
const ZBASE32: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";

/// A database's global id: its 64 bits as 13 z-base-32 characters, most significant
/// first, the last character carrying the low 4 bits and one zero bit.
pub fn global_id(db: DbId) -> String {
    let bits = (db as u128) << 1;
    (0..13).map(|i| ZBASE32[((bits >> (5 * (12 - i))) & 31) as usize] as char).collect()
}

/// The database a global id names, if it is one [`global_id`] produces.
pub fn decode_global_id(s: &str) -> Option<DbId> {
    if s.len() != 13 {
        return None;
    }
    let mut bits: u128 = 0;
    for c in s.bytes() {
        let v = ZBASE32.iter().position(|&z| z == c.to_ascii_lowercase())?;
        bits = (bits << 5) | v as u128;
    }
    // 65 bits were written; the padding bit must be zero.
    (bits & 1 == 0).then_some((bits >> 1) as DbId)
}

/// The audience of access providers in database `db`.
pub fn audience(db: DbId) -> String {
    format!("{AUDIENCE_PREFIX}{}", global_id(db))
}

/// The database an `aud` claim (a string or an array of strings) names: exactly one
/// audience must be a database URL, as in v4.
pub fn audience_db(aud: Option<&serde_json::Value>) -> Option<DbId> {
    let ours = |s: &str| s.strip_prefix(AUDIENCE_PREFIX).map(str::to_string);
    let found: Vec<String> = match aud? {
        serde_json::Value::String(s) => ours(s).into_iter().collect(),
        serde_json::Value::Array(items) => items.iter().filter_map(|v| v.as_str().and_then(ours)).collect(),
        _ => return None,
    };
    match found.as_slice() {
        [one] => decode_global_id(one),
        _ => None,
    }
}

/// A JWT's claims as FQL sees them. Claims are plain JSON, not FQL's wire format: an
/// `@ref` key is just a key. Integers that fit 64 bits are longs, other numbers doubles.
/// None when nested deeper than [`CLAIMS_DEPTH_MAX`].
pub fn claims_value(json: &serde_json::Value) -> Option<Value> {
    fn conv(j: &serde_json::Value, depth: usize) -> Option<Value> {
        if depth > CLAIMS_DEPTH_MAX {
            return None;
        }
        Some(match j {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Long(i),
                None => Value::Double(n.as_f64()?),
            },
            serde_json::Value::String(s) => Value::String(s.clone()),
            serde_json::Value::Array(items) => {
                Value::Array(items.iter().map(|v| conv(v, depth + 1)).collect::<Option<Vec<_>>>()?)
            }
            serde_json::Value::Object(m) => Value::Object(
                m.iter().map(|(k, v)| Some((k.clone(), conv(v, depth + 1)?))).collect::<Option<Object>>()?,
            ),
        })
    }
    conv(json, 0)
}

/// A verified JWT login: everything the evaluator may use about it. Built by the
/// receiving node after verification, and again by the executor from the logged input.
#[derive(Clone, Debug, PartialEq)]
pub struct JwtLogin {
    /// The database the access provider lives in (the query's database).
    pub db: DbId,
    /// The access provider's name in `db`.
    pub provider: String,
    /// Its issuer when the token was verified; the executor insists it still is.
    pub issuer: String,
    /// The claims exactly as the token carried them (this is what gets logged).
    pub claims: serde_json::Value,
    /// The same claims as an FQL object (`CurrentToken()`, role predicates).
    pub payload: Value,
}

impl JwtLogin {
    /// None when the claims are not an object or nest too deeply.
    pub fn new(db: DbId, provider: String, issuer: String, claims: serde_json::Value) -> Option<JwtLogin> {
        let payload = claims_value(&claims).filter(|p| matches!(p, Value::Object(_)))?;
        Some(JwtLogin { db, provider, issuer, claims, payload })
    }

    /// `CurrentIdentity()`: the `sub` claim.
    pub fn subject(&self) -> Option<&Value> {
        self.payload.get("sub").filter(|v| !v.is_null())
    }
}

/// An access provider that may have issued a token: its name and where its keys are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderMatch {
    pub name: String,
    pub jwks_uri: String,
}

fn unauthorized() -> FqlError {
    FqlError::new(code::UNAUTHORIZED, "Unauthorized: no access provider accepts this JWT.")
}

/// The access provider of database `db` whose issuer is `issuer`, at `ts`; None when
/// there is none or the database (or an ancestor) is gone or disabled.
pub fn find_provider(snap: &dyn Snapshot, ts: Ts, db: DbId, issuer: &str) -> Result<Option<ProviderMatch>> {
    let mut tx = Tx::new(snap, ts);
    if !crate::run::db_alive(&mut tx, db, ts)? {
        return Ok(None);
    }
    for (name, d) in tx.scan_docs(db, native::ACCESS_PROVIDERS, None, false, ts, PROVIDERS_SCAN_MAX)? {
        if d.data.get("issuer").and_then(|v| v.as_str()) != Some(issuer) {
            continue;
        }
        let Some(uri) = d.data.get("jwks_uri").and_then(|v| v.as_str()) else { return Ok(None) };
        return Ok(Some(ProviderMatch { name, jwks_uri: uri.to_string() }));
    }
    Ok(None)
}

/// The `Auth` of a verified login at `ts`: the provider's database with the roles its
/// `roles` grant these claims. As in v4, a token no role applies to is `unauthorized`.
/// (The executor works the roles out again at the commit ts; if by then none applies,
/// the query holds no privileges and is denied like a token without roles.)
pub fn authenticate(snap: &dyn Snapshot, ts: Ts, login: JwtLogin) -> Result<Auth> {
    let mut tx = Tx::new(snap, ts);
    if !crate::run::db_alive(&mut tx, login.db, ts)? {
        return Err(unauthorized());
    }
    let mut auth = Auth::new(login.db, Role::Jwt);
    auth.priority = crate::run::db_priority(&mut tx, login.db, ts)?;
    auth.jwt = Some(Arc::new(login));
    let mut ev = Eval::new(tx, Mode::ReadOnly, auth.clone());
    if ev.jwt_roles()?.is_empty() {
        return Err(unauthorized());
    }
    Ok(auth)
}

impl Eval<'_> {
    /// The roles the query's JWT login holds at the transaction ts: the access provider's
    /// `roles` entries that are plain role refs, or `{role, predicate}` whose predicate
    /// returns `true` for the claims. Empty when the provider is gone, its issuer
    /// changed, or the query runs in another database (a user-defined function's).
    pub(crate) fn jwt_roles(&mut self) -> Result<Vec<String>> {
        let Some(login) = self.auth.jwt.clone() else { return Ok(Vec::new()) };
        if login.db != self.auth.db {
            return Ok(Vec::new());
        }
        let at = self.txn_ts();
        let Some(doc) = self.tx.live_doc(login.db, native::ACCESS_PROVIDERS, &login.provider, at)? else {
            return Ok(Vec::new());
        };
        if doc.data.get("issuer").and_then(|v| v.as_str()) != Some(login.issuer.as_str()) {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for entry in listed(doc.data.get("roles")) {
            let (role, predicate) = match &entry {
                Value::Object(o) => (o.get("role").cloned(), o.get("predicate").cloned()),
                other => (Some(other.clone()), None),
            };
            let Some(Value::Ref(r)) = role else { continue };
            if r.native_parent() != Some("roles") {
                continue;
            }
            // Only the role the provider was given, not one created since under its name.
            let pid = crate::catalog::internal_id(&doc.data).unwrap_or(0);
            let Some(current) =
                crate::fns::security::bound_role_name(&mut self.tx, login.db, &doc.data, pid, &r.id, at)?
            else {
                continue;
            };
            let admitted = match predicate {
                None | Some(Value::Null) => true,
                Some(p) => self.run_predicate(&p, &PredArgs::Value(&login.payload))?,
            };
            if admitted {
                out.push(current);
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// A `jwks_uri` Tally will fetch: `https://` anywhere, or `http://` on the loopback
/// interface only (`localhost`, `127.0.0.0/8`, `[::1]`), for tests and local identity
/// providers. v4 accepted https only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwksUri {
    pub tls: bool,
    /// Host name or address, without brackets for IPv6.
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// Longest `jwks_uri` accepted.
pub const JWKS_URI_BYTES_MAX: usize = 2048;

impl JwksUri {
    /// Parse and vet a `jwks_uri`; the error says what to change.
    pub fn parse(uri: &str) -> std::result::Result<JwksUri, &'static str> {
        if uri.len() > JWKS_URI_BYTES_MAX || uri.bytes().any(|b| b <= b' ' || b >= 0x7f) {
            return Err("The jwks_uri must be a URI of at most 2048 printable ASCII characters.");
        }
        let (tls, rest) = match uri.split_once("://") {
            Some((s, rest)) if s.eq_ignore_ascii_case("https") => (true, rest),
            Some((s, rest)) if s.eq_ignore_ascii_case("http") => (false, rest),
            _ => return Err("The jwks_uri must be an https URI."),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.contains('@') {
            return Err("The jwks_uri must not carry user information.");
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("The jwks_uri has a malformed host.")?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("The jwks_uri has no host.");
        }
        let port = match port {
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or("The jwks_uri has an invalid port.")?,
        };
        let host = host.to_ascii_lowercase();
        if !tls && !is_loopback(&host) {
            return Err("The jwks_uri must be an https URI (http is accepted only for localhost).");
        }
        let path = tail.split('#').next().unwrap_or_default();
        let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
        Ok(JwksUri { tls, host, port, path })
    }
}

fn is_loopback(host: &str) -> bool {
    if host == "localhost" || host == "::1" {
        return true;
    }
    match host.parse::<std::net::Ipv4Addr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_ids_round_trip() {
        for db in [0, 1, 31, 32, 1 << 40, u64::MAX - 1, u64::MAX] {
            let g = global_id(db);
            assert_eq!(g.len(), 13);
            assert_eq!(decode_global_id(&g), Some(db), "{g}");
        }
        assert_eq!(global_id(0), "yyyyyyyyyyyyy");
        assert_eq!(decode_global_id("yyyyyyyyyyyyb"), None, "padding bit set");
        assert_eq!(decode_global_id("yyyy"), None);
        assert_eq!(decode_global_id("yyyyyyyyyyyyl"), None, "not in the alphabet");
    }

    #[test]
    fn the_audience_names_exactly_one_database() {
        let a = audience(42);
        assert_eq!(audience_db(Some(&serde_json::json!(a))), Some(42));
        assert_eq!(audience_db(Some(&serde_json::json!(["other", a]))), Some(42));
        assert_eq!(audience_db(Some(&serde_json::json!([a, audience(7)]))), None);
        assert_eq!(audience_db(Some(&serde_json::json!("https://example.com/"))), None);
        assert_eq!(audience_db(Some(&serde_json::json!(42))), None);
        assert_eq!(audience_db(None), None);
    }

    #[test]
    fn claims_are_plain_json() {
        let v = claims_value(&serde_json::json!({"@ref": "x", "n": 1, "f": 1.5, "big": u64::MAX})).unwrap();
        assert_eq!(v.get("@ref"), Some(&Value::String("x".into())));
        assert_eq!(v.get("n"), Some(&Value::Long(1)));
        assert_eq!(v.get("f"), Some(&Value::Double(1.5)));
        assert!(matches!(v.get("big"), Some(Value::Double(_))));
        let mut deep = serde_json::json!(1);
        for _ in 0..=CLAIMS_DEPTH_MAX {
            deep = serde_json::json!([deep]);
        }
        assert_eq!(claims_value(&deep), None);
        assert!(JwtLogin::new(0, "p".into(), "i".into(), serde_json::json!([1])).is_none());
    }

    #[test]
    fn jwks_uris_need_https_except_on_loopback() {
        let u = JwksUri::parse("https://idp.example.com/.well-known/jwks.json").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path.as_str()),
            (true, "idp.example.com", 443, "/.well-known/jwks.json")
        );
        let u = JwksUri::parse("http://127.0.0.1:8080/keys?x=1#frag").unwrap();
        assert_eq!((u.tls, u.port, u.path.as_str()), (false, 8080, "/keys?x=1"));
        assert!(JwksUri::parse("http://localhost/k").is_ok());
        assert!(JwksUri::parse("http://[::1]:9/k").is_ok());
        assert_eq!(JwksUri::parse("https://h").unwrap().path, "/");
        for bad in [
            "http://idp.example.com/keys",
            "http://127.0.0.1.example.com/keys",
            "ftp://h/k",
            "https://user@h/k",
            "https://:443/k",
            "https://h:0/k",
            "https://h:99999/k",
            "https://h/a b",
            "idp.example.com/keys",
        ] {
            assert!(JwksUri::parse(bad).is_err(), "{bad}");
        }
    }
}
