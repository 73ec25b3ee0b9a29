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
    fn malformed_secrets_claim_nothing() {
        assert!(parse("fnAAAA").is_none());
        assert!(parse("nope").is_none());
        assert!(parse("fn!!!").is_none());
    }
}
