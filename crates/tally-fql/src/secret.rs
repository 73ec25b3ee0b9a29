//! Key and token secrets, designed so the input log never holds one.
//!
//! A write's input is logged before it runs, and every replica re-runs it, so whatever
//! the executor derives a secret from is on disk. The receiving node therefore draws a
//! 32-byte `seed` that is never logged and logs only `entropy = SHA-256(seed)`:
//!
//! - secret (v2): `fn` + base64url(`kind u8 | db u64 | id u64 | seed [32]`)
//! - stored `hashed_secret`: hex SHA-256(`"tally.secret.v2\0" | kind | db | id | SHA-256(seed)`)
//!
//! The executor computes the stored hash from `entropy` alone and answers with a
//! placeholder (`\0tally-secret:` + base64url(`kind | db | id`)); the receiving node,
//! which holds the seed, turns placeholders into secrets in the answer it sends
//! ([`reveal`]). Checking a presented secret recomputes the hash from it. A transaction
//! that issues several secrets issues them from one seed: its caller gets them all.
//!
//! v1 secrets (`kind | db | id | 20 bytes`, stored as SHA-256 of the secret string) are
//! still accepted so keys issued before v2 keep working.
//!
//! Passwords: the receiving node replaces every literal password of a write
//! (`credentials: {password}`, `Login` params, `Identify`, `Create(Credentials())`) by
//! `{"tally_password_digest": hex SHA-256("tally.password.v1\0" | password)}` before the
//! input is logged ([`redact_passwords`]); the evaluator hashes that digest with Argon2
//! whether it arrives so or is computed from a plain string ([`Password`]). The log thus
//! never holds a literal password, only a digest that is worth nothing outside Tally.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::model::DbId;

pub const KIND_KEY: u8 = 1;
pub const KIND_TOKEN: u8 = 2;

const V1_LEN: usize = 37;
const V2_LEN: usize = 49;
const PLACEHOLDER: &str = "\u{0}tally-secret:";
const DOMAIN_V2: &[u8] = b"tally.secret.v2\0";

/// `entropy` to log for a request whose secrets come from `seed`.
pub fn entropy_for_seed(seed: &[u8; 32]) -> [u8; 32] {
    Sha256::digest(seed).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn v2_hash(kind: u8, db: DbId, id: u64, commitment: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(DOMAIN_V2);
    h.update([kind]);
    h.update(db.to_be_bytes());
    h.update(id.to_be_bytes());
    h.update(commitment);
    hex(&h.finalize())
}

/// Issue a secret inside the executor: `(placeholder to answer with, hash to store)`.
pub fn issue(entropy: &[u8; 32], kind: u8, db: DbId, id: u64) -> (String, String) {
    let mut head = Vec::with_capacity(17);
    head.push(kind);
    head.extend_from_slice(&db.to_be_bytes());
    head.extend_from_slice(&id.to_be_bytes());
    (format!("{PLACEHOLDER}{}", URL_SAFE_NO_PAD.encode(&head)), v2_hash(kind, db, id, entropy))
}

/// What a presented secret claims to be: its kind, database and document id, and the
/// `hashed_secret` the document must hold for the claim to be true.
pub struct Claim {
    pub kind: u8,
    pub db: DbId,
    pub id: u64,
    pub expected_hash: String,
}

pub fn parse(secret: &str) -> Option<Claim> {
    let raw = URL_SAFE_NO_PAD.decode(secret.strip_prefix("fn")?).ok()?;
    if raw.len() != V1_LEN && raw.len() != V2_LEN {
        return None;
    }
    let kind = raw[0];
    let db = u64::from_be_bytes(raw[1..9].try_into().ok()?);
    let id = u64::from_be_bytes(raw[9..17].try_into().ok()?);
    let expected_hash = if raw.len() == V2_LEN {
        v2_hash(kind, db, id, &Sha256::digest(&raw[17..]))
    } else {
        hex(&Sha256::digest(secret.as_bytes()))
    };
    Some(Claim { kind, db, id, expected_hash })
}

/// Replace every secret placeholder in an executor's answer by the secret built from
/// the request's `seed` (called only by the node that drew the seed).
pub fn reveal(body: &mut serde_json::Value, seed: &[u8; 32]) {
    match body {
        serde_json::Value::String(s) => {
            if let Some(head) = s.strip_prefix(PLACEHOLDER).and_then(|h| URL_SAFE_NO_PAD.decode(h).ok()) {
                if head.len() == 17 {
                    let mut raw = head;
                    raw.extend_from_slice(seed);
                    *s = format!("fn{}", URL_SAFE_NO_PAD.encode(raw));
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| reveal(v, seed)),
        serde_json::Value::Object(o) => o.values_mut().for_each(|v| reveal(v, seed)),
        _ => {}
    }
}

/// Name of the FQL function a redacted password becomes.
pub const PASSWORD_DIGEST_FN: &str = "tally_password_digest";
/// First byte of the `Bytes` value a password digest evaluates to.
const PASSWORD_MARK: u8 = 0xA5;

pub fn password_digest(password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tally.password.v1\0");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// The value `tally_password_digest(hex)` evaluates to.
pub fn digest_value(hex_digest: &str) -> Option<tally_value::Value> {
    let bytes: Vec<u8> = (0..hex_digest.len())
        .step_by(2)
        .map(|i| hex_digest.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect::<Option<_>>()?;
    (bytes.len() == 32).then(|| {
        let mut v = vec![PASSWORD_MARK];
        v.extend_from_slice(&bytes);
        tally_value::Value::Bytes(v)
    })
}

/// A password as the evaluator receives it.
pub enum Password {
    /// A plain string (computed in the query, or sent to the read-only path).
    Plain(String),
    /// A digest the receiving node substituted for a literal password.
    Digest([u8; 32]),
}

impl Password {
    pub fn from_value(v: &tally_value::Value) -> Option<Password> {
        match v {
            tally_value::Value::String(s) => Some(Password::Plain(s.clone())),
            tally_value::Value::Bytes(b) if b.len() == 33 && b[0] == PASSWORD_MARK => {
                Some(Password::Digest(b[1..].try_into().ok()?))
            }
            _ => None,
        }
    }

    /// What Argon2 hashes: the digest, however the password arrived.
    pub fn material(&self) -> [u8; 32] {
        match self {
            Password::Plain(s) => password_digest(s),
            Password::Digest(d) => *d,
        }
    }
}

/// Replace literal passwords in a write's query (JSON wire form) by their digests.
pub fn redact_passwords(q: &mut serde_json::Value) {
    use serde_json::Value as J;
    fn digest_call(v: &mut J) {
        if let J::String(pw) = v {
            let hex_digest = hex(&password_digest(pw));
            *v = serde_json::json!({ PASSWORD_DIGEST_FN: hex_digest });
        }
    }
    /// The `password` of an object literal (`{"object": {...}}` as drivers send it).
    fn literal_password(v: &mut J) {
        let inner = match v {
            J::Object(o) if o.len() == 1 && o.contains_key("object") => o.get_mut("object"),
            other => Some(other),
        };
        if let Some(J::Object(fields)) = inner {
            if let Some(pw) = fields.get_mut("password") {
                digest_call(pw);
            }
        }
    }
    match q {
        J::Array(items) => items.iter_mut().for_each(redact_passwords),
        J::Object(o) => {
            if o.contains_key("identify") {
                if let Some(pw) = o.get_mut("password") {
                    digest_call(pw);
                }
            }
            let is_login = o.contains_key("login");
            let is_write = ["create", "update", "replace"].iter().any(|k| o.contains_key(*k));
            let creates_credentials = matches!(o.get("create"), Some(J::Object(c)) if c.contains_key("credentials"));
            if let Some(params) = o.get_mut("params") {
                if is_login || creates_credentials {
                    literal_password(params);
                }
                if is_write {
                    let fields = match params {
                        J::Object(p) if p.len() == 1 && p.contains_key("object") => p.get_mut("object"),
                        other => Some(other),
                    };
                    if let Some(J::Object(fields)) = fields {
                        if let Some(creds) = fields.get_mut("credentials") {
                            literal_password(creds);
                        }
                    }
                }
            }
            for v in o.values_mut() {
                redact_passwords(v);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_secret_verifies_and_log_cannot_forge_it() {
        let seed = [7u8; 32];
        let entropy = entropy_for_seed(&seed);
        let (placeholder, stored) = issue(&entropy, KIND_KEY, 3, 42);
        let mut body = serde_json::json!({"resource": {"secret": placeholder, "n": [1]}});
        reveal(&mut body, &seed);
        let secret = body["resource"]["secret"].as_str().unwrap().to_string();
        let claim = parse(&secret).unwrap();
        assert_eq!((claim.kind, claim.db, claim.id), (KIND_KEY, 3, 42));
        assert_eq!(claim.expected_hash, stored);
        // Someone holding only the log (the entropy) builds a different secret.
        let mut forged = body.clone();
        forged["resource"]["secret"] = serde_json::Value::String(issue(&entropy, KIND_KEY, 3, 42).0);
        reveal(&mut forged, &entropy);
        let f = parse(forged["resource"]["secret"].as_str().unwrap()).unwrap();
        assert_ne!(f.expected_hash, stored);
        assert!(!secret.contains(&hex(&entropy)));
    }

    #[test]
    fn literal_passwords_never_reach_the_log() {
        let mut q = serde_json::json!({"do": [
            {"create": {"collection": "users"}, "params": {"object": {
                "credentials": {"object": {"password": "hunter2"}},
                "data": {"object": {"password": "not a credential"}}}}},
            {"login": {"@ref": {"id": "1"}}, "params": {"object": {"password": "hunter2", "ttl": null}}},
            {"identify": {"@ref": {"id": "1"}}, "password": "hunter2"},
            {"create": {"credentials": null}, "params": {"object": {"instance": null, "password": "hunter2"}}}
        ]});
        redact_passwords(&mut q);
        let text = q.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("not a credential"), "user data is left alone: {text}");
        assert_eq!(text.matches(PASSWORD_DIGEST_FN).count(), 4);
        let hex_digest = hex(&password_digest("hunter2"));
        let v = digest_value(&hex_digest).unwrap();
        let p = Password::from_value(&v).unwrap();
        assert_eq!(p.material(), Password::Plain("hunter2".into()).material());
    }

    #[test]
    fn malformed_secrets_claim_nothing() {
        assert!(parse("fnAAAA").is_none());
        assert!(parse("nope").is_none());
        assert!(parse("fn!!!").is_none());
    }
}
