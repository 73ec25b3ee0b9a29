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
//! placeholder (`\0tally-secret:` + base64url(`kind | db | id`), always 37 characters),
//! wherever the secret lands in the answer — alone, inside a larger string (`Concat`),
//! or as an object key. The receiving node, which holds the seed, replaces in the answer
//! it sends every placeholder *that this transaction issued* by the secret ([`reveal`]);
//! the executor lists them in its output. A placeholder a client wrote itself, or one
//! read back from a document, is left as it is: revealing it would only expose this
//! request's seed, and it could never become a valid secret for someone else's key
//! (the stored hash binds the seed of the transaction that issued the key). A
//! transaction may not store a placeholder it issued (the stored copy would be
//! worthless and would surface later unrevealed), see [`stored_placeholder`].
//! Checking a presented secret recomputes the hash from it. A transaction that issues
//! several secrets issues them from one seed: its caller gets them all.
//!
//! v1 secrets (`kind | db | id | 20 bytes`, stored as SHA-256 of the secret string) are
//! still accepted so keys issued before v2 keep working.
//!
//! Passwords: the receiving node replaces every literal password of a write
//! (`credentials: {password}`, `Login` params, `Identify`, `Create(Credentials())`), and
//! every `Concat` of literals in those places, by
//! `{"tally_password_digest": hex SHA-256("tally.password.v1\0" | password), "tag": hex tag}`
//! before the input is logged ([`redact_passwords`]), where the tag is
//! SHA-256(`"tally.password.tag.v1\0" | entropy | digest`). The evaluator hashes the
//! digest with Argon2 whether it arrives so or is computed from a plain string
//! ([`Password`]). The log thus never holds a literal password.
//!
//! The marker is unforgeable by clients: its tag binds it to the entropy of the one input
//! it was written into, which the client cannot know before its write is received (the
//! seed is random) and which no later transaction shares. A marker without the right tag
//! — written by a client, stored in a function body, or replayed from the log — is
//! refused as `invalid expression`, which is what v4 answers for a function it does not
//! know; and the `Bytes` value the marker evaluates to carries the same tag, so a client
//! cannot pass a digest as `Bytes` either (it is then just bytes, not a password).
//! Read-only evaluation never accepts digests: the receiving node redacts only writes.

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

/// Length of a placeholder's base64url head (`kind | db | id`, 17 bytes).
const HEAD_LEN: usize = 23;

/// A secret issued inside the executor.
pub struct Issued {
    /// What the executor answers with (and the receiving node replaces by the secret).
    pub placeholder: String,
    /// The `hashed_secret` to store.
    pub hashed: String,
    /// The placeholder's head, listed in the executor's output so that [`reveal`]
    /// completes only placeholders this transaction issued.
    pub head: String,
}

/// Issue a secret inside the executor (`entropy` is the input's logged entropy).
pub fn issue(entropy: &[u8; 32], kind: u8, db: DbId, id: u64) -> Issued {
    let mut raw = Vec::with_capacity(17);
    raw.push(kind);
    raw.extend_from_slice(&db.to_be_bytes());
    raw.extend_from_slice(&id.to_be_bytes());
    let head = URL_SAFE_NO_PAD.encode(&raw);
    debug_assert_eq!(head.len(), HEAD_LEN);
    Issued { placeholder: format!("{PLACEHOLDER}{head}"), hashed: v2_hash(kind, db, id, entropy), head }
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

/// Replace, anywhere in an executor's answer (whole strings, inside strings, object
/// keys), every placeholder whose head is in `issued` — the secrets this transaction
/// issued — by the secret built from the request's `seed`. Called only by the node that
/// drew the seed. Other placeholder-looking text is client data and is left alone.
pub fn reveal(body: &mut serde_json::Value, seed: &[u8; 32], issued: &[String]) {
    if issued.is_empty() {
        return;
    }
    match body {
        serde_json::Value::String(s) => reveal_str(s, seed, issued),
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| reveal(v, seed, issued)),
        serde_json::Value::Object(o) => {
            if o.keys().any(|k| k.contains(PLACEHOLDER)) {
                for (mut k, mut v) in std::mem::take(o) {
                    reveal_str(&mut k, seed, issued);
                    reveal(&mut v, seed, issued);
                    o.insert(k, v);
                }
            } else {
                o.values_mut().for_each(|v| reveal(v, seed, issued));
            }
        }
        _ => {}
    }
}

fn reveal_str(s: &mut String, seed: &[u8; 32], issued: &[String]) {
    if !s.contains(PLACEHOLDER) {
        return;
    }
    let mut out = String::with_capacity(s.len() + 48);
    let mut rest = s.as_str();
    while let Some(at) = rest.find(PLACEHOLDER) {
        out.push_str(&rest[..at]);
        let after = &rest[at + PLACEHOLDER.len()..];
        let head = after.get(..HEAD_LEN).filter(|h| issued.iter().any(|i| i == h));
        match head.and_then(|h| URL_SAFE_NO_PAD.decode(h).ok()) {
            Some(mut raw) if raw.len() == 17 => {
                raw.extend_from_slice(seed);
                out.push_str("fn");
                out.push_str(&URL_SAFE_NO_PAD.encode(raw));
                rest = &after[HEAD_LEN..];
            }
            _ => {
                out.push_str(PLACEHOLDER);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    *s = out;
}

/// Does any of `writes` (keys or values, in their canonical encoding, where a string's
/// bytes stay contiguous) hold a placeholder this transaction issued?
pub fn stored_placeholder(writes: &[crate::model::Write], issued: &[String]) -> bool {
    // The placeholder after its NUL, which the encoding escapes.
    const MARK: &[u8] = b"tally-secret:";
    let holds = |bytes: &[u8]| {
        bytes.windows(MARK.len()).enumerate().any(|(i, w)| {
            w == MARK && {
                let head = &bytes[i + MARK.len()..];
                issued.iter().any(|h| head.starts_with(h.as_bytes()))
            }
        })
    };
    !issued.is_empty() && writes.iter().any(|w| holds(&w.key) || w.value.as_deref().is_some_and(holds))
}

/// Name of the FQL function a redacted password becomes.
pub const PASSWORD_DIGEST_FN: &str = "tally_password_digest";
/// Its second argument: the tag binding the digest to the input's entropy.
pub const PASSWORD_TAG_ARG: &str = "tag";
/// First byte of the `Bytes` value a password digest evaluates to.
const PASSWORD_MARK: u8 = 0xA5;
/// Longest password accepted (hashing cost grows with it). Longer or empty literals are
/// not redacted: the evaluator refuses them, so they are nobody's password.
pub const PASSWORD_BYTES_MAX: usize = 1024;

pub fn password_digest(password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tally.password.v1\0");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// The tag that makes a digest valid in exactly one input: the one with `entropy`.
fn password_tag(entropy: &[u8; 32], digest: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tally.password.tag.v1\0");
    h.update(entropy);
    h.update(digest);
    h.finalize().into()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn tag_matches(entropy: &[u8; 32], digest: &[u8], tag: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(password_tag(entropy, digest).ct_eq(tag))
}

/// The value `tally_password_digest(hex, tag)` evaluates to in the input with `entropy`,
/// or None when the tag was not made for that input.
pub fn digest_value(hex_digest: &str, hex_tag: &str, entropy: &[u8; 32]) -> Option<tally_value::Value> {
    let (digest, tag) = (unhex32(hex_digest)?, unhex32(hex_tag)?);
    tag_matches(entropy, &digest, &tag).then(|| {
        let mut v = Vec::with_capacity(65);
        v.push(PASSWORD_MARK);
        v.extend_from_slice(&digest);
        v.extend_from_slice(&tag);
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
    /// `entropy` is the input's when digests are acceptable (write mode), else None.
    pub fn from_value(v: &tally_value::Value, entropy: Option<&[u8; 32]>) -> Option<Password> {
        match v {
            tally_value::Value::String(s) => Some(Password::Plain(s.clone())),
            tally_value::Value::Bytes(b) if b.len() == 65 && b[0] == PASSWORD_MARK => {
                let d: [u8; 32] = b[1..33].try_into().ok()?;
                tag_matches(entropy?, &d, &b[33..]).then_some(Password::Digest(d))
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

/// The string a password expression certainly evaluates to, when it is written with
/// literals only: a string, or a `Concat` of such (with a literal separator).
fn literal_string(v: &serde_json::Value) -> Option<String> {
    use serde_json::Value as J;
    match v {
        J::String(s) => Some(s.clone()),
        J::Object(o) if o.contains_key("concat") && o.keys().all(|k| k == "concat" || k == "separator") => {
            let sep = match o.get("separator") {
                Some(s) => literal_string(s)?,
                None => String::new(),
            };
            let parts = match &o["concat"] {
                J::Array(items) => items.iter().map(literal_string).collect::<Option<Vec<_>>>()?,
                one => vec![literal_string(one)?],
            };
            Some(parts.join(&sep))
        }
        _ => None,
    }
}

/// Could [`redact_passwords`] replace anything in the JSON tree of `text`? It replaces
/// only values under a key `password`, and a decoded key can be `password` only where
/// the text spells it out or writes a letter as a `\u` escape; `false` when it has
/// neither, so the query can be logged from its text as it is.
///
/// One pass: `memchr2` finds the next `p` or backslash (vectorized), and only there is the
/// text compared; the receiving node scans every query body with it.
pub fn may_hold_password(text: &[u8]) -> bool {
    memchr::memchr2_iter(b'p', b'\\', text).any(|i| {
        let rest = &text[i..];
        rest.starts_with(b"password") || rest.starts_with(b"\\u")
    })
}

/// Replace literal passwords in a write's query (JSON wire form) by digests tagged for
/// the input with `entropy`. A password that is only known once the query runs (a
/// variable, a read, a function of anything but literals) stays as it is written, and
/// so does anything inside a `Query` body (stored functions and role predicates keep
/// their body as written, in the database itself).
///
/// Returns how many passwords it replaced (a query parsed before has changed when any).
pub fn redact_passwords(q: &mut serde_json::Value, entropy: &[u8; 32]) -> usize {
    use serde_json::Value as J;
    let replaced = std::cell::Cell::new(0usize);
    let digest_call = |v: &mut J| {
        let Some(pw) = literal_string(v).filter(|p| !p.is_empty() && p.len() <= PASSWORD_BYTES_MAX) else { return };
        replaced.set(replaced.get() + 1);
        let digest = password_digest(&pw);
        *v = serde_json::json!({
            PASSWORD_DIGEST_FN: hex(&digest),
            PASSWORD_TAG_ARG: hex(&password_tag(entropy, &digest)),
        });
    };
    /// The `password` of an object literal (`{"object": {...}}` as drivers send it).
    fn literal_password(v: &mut J, digest_call: &dyn Fn(&mut J)) {
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
    fn walk(q: &mut J, digest_call: &dyn Fn(&mut J)) {
        match q {
            J::Array(items) => items.iter_mut().for_each(|v| walk(v, digest_call)),
            // A `Query` body is data: a function or predicate stores it as written (and
            // runs it in later transactions, where a tag made for this one is void).
            J::Object(o) if o.len() == 1 && (o.contains_key("query") || o.contains_key("@query")) => {}
            J::Object(o) => {
                if o.contains_key("identify") {
                    if let Some(pw) = o.get_mut("password") {
                        digest_call(pw);
                    }
                }
                let is_login = o.contains_key("login");
                let is_write = ["create", "update", "replace"].iter().any(|k| o.contains_key(*k));
                let creates_credentials =
                    matches!(o.get("create"), Some(J::Object(c)) if c.contains_key("credentials"));
                if let Some(params) = o.get_mut("params") {
                    if is_login || creates_credentials {
                        literal_password(params, digest_call);
                    }
                    if is_write {
                        let fields = match params {
                            J::Object(p) if p.len() == 1 && p.contains_key("object") => p.get_mut("object"),
                            other => Some(other),
                        };
                        if let Some(J::Object(fields)) = fields {
                            if let Some(creds) = fields.get_mut("credentials") {
                                literal_password(creds, digest_call);
                            }
                        }
                    }
                }
                for v in o.values_mut() {
                    walk(v, digest_call);
                }
            }
            _ => {}
        }
    }
    walk(q, &digest_call);
    replaced.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_secret_verifies_and_log_cannot_forge_it() {
        let seed = [7u8; 32];
        let entropy = entropy_for_seed(&seed);
        let issued = issue(&entropy, KIND_KEY, 3, 42);
        let mut body = serde_json::json!({"resource": {"secret": issued.placeholder, "n": [1]}});
        reveal(&mut body, &seed, std::slice::from_ref(&issued.head));
        let secret = body["resource"]["secret"].as_str().unwrap().to_string();
        let claim = parse(&secret).unwrap();
        assert_eq!((claim.kind, claim.db, claim.id), (KIND_KEY, 3, 42));
        assert_eq!(claim.expected_hash, issued.hashed);
        // Someone holding only the log (the entropy) builds a different secret.
        let mut forged = body.clone();
        forged["resource"]["secret"] = serde_json::Value::String(issue(&entropy, KIND_KEY, 3, 42).placeholder);
        reveal(&mut forged, &entropy, &[issued.head]);
        let f = parse(forged["resource"]["secret"].as_str().unwrap()).unwrap();
        assert_ne!(f.expected_hash, issued.hashed);
        assert!(!secret.contains(&hex(&entropy)));
    }

    #[test]
    fn placeholders_are_revealed_anywhere_but_only_when_issued() {
        let seed = [9u8; 32];
        let mine = issue(&entropy_for_seed(&seed), KIND_KEY, 1, 7);
        let other = issue(&[0; 32], KIND_KEY, 1, 8);
        let p = &mine.placeholder;
        let mut body = serde_json::json!({
            "a": format!("key={p};"),
            "b": [format!("{p}{p}"), other.placeholder.clone()],
            p.clone(): {"nested": format!("x{}y", other.placeholder)},
        });
        reveal(&mut body, &seed, std::slice::from_ref(&mine.head));
        let text = body.to_string();
        let secret = {
            let mut b = serde_json::Value::String(p.clone());
            reveal(&mut b, &seed, std::slice::from_ref(&mine.head));
            b.as_str().unwrap().to_string()
        };
        assert!(!text.contains(&mine.placeholder), "{text}");
        assert_eq!(body["a"], format!("key={secret};"));
        assert_eq!(body["b"][0], format!("{secret}{secret}"));
        // Not issued by this transaction: client data, left as written.
        assert_eq!(body["b"][1], other.placeholder);
        assert_eq!(body[&secret]["nested"], format!("x{}y", other.placeholder));
        assert_eq!(parse(&secret).unwrap().expected_hash, mine.hashed);
    }

    #[test]
    fn stored_placeholders_are_found_in_encoded_writes() {
        let mine = issue(&[1; 32], KIND_TOKEN, 2, 3);
        let doc = |s: &str| {
            let mut o = tally_value::Object::new();
            o.insert("s".into(), tally_value::Value::String(s.into()));
            crate::model::encode_doc(false, &o)
        };
        let write = |v: Vec<u8>| crate::model::Write {
            space: tally_storage::Space::Docs,
            key: b"k".to_vec(),
            ts: 1,
            value: Some(v),
        };
        let issued = std::slice::from_ref(&mine.head);
        assert!(stored_placeholder(&[write(doc(&format!("x{}", mine.placeholder)))], issued));
        assert!(!stored_placeholder(&[write(doc("plain"))], issued));
        let other = issue(&[1; 32], KIND_TOKEN, 2, 4);
        assert!(!stored_placeholder(&[write(doc(&other.placeholder))], issued));
    }

    #[test]
    fn may_hold_password_finds_what_a_byte_window_scan_finds() {
        let naive = |t: &[u8]| t.windows(8).any(|w| w == b"password") || t.windows(2).any(|w| w == b"\\u");
        let texts: &[&[u8]] = &[
            b"",
            b"p",
            b"\\",
            b"\\u",
            b"password",
            b"passwor",
            b"ppassword",
            b"pppp\\\\u",
            br#"{"object":{"password":"x"}}"#,
            br#"{"object":{"pass\u0077ord":"x"}}"#,
            br#"{"params":{"object":{"data":{"object":{"p":"\\n"}}}}}"#,
            br#"{"update":{"@ref":{"id":"1"}},"params":{"object":{"data":{"object":{"passwor":1}}}}}"#,
            "é passwordé".as_bytes(),
            b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxpassword",
            b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxpasswor",
            b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\\",
        ];
        for t in texts {
            assert_eq!(may_hold_password(t), naive(t), "{}", String::from_utf8_lossy(t));
        }
        // Every split of a long text, so each match lands on each side of a vector block.
        let long = [b"xp\\".repeat(40), b"password".to_vec(), b"p\\x".repeat(40)].concat();
        for from in 0..long.len() {
            for to in [from, (from + 9).min(long.len()), long.len()] {
                assert_eq!(may_hold_password(&long[from..to]), naive(&long[from..to]), "{from}..{to}");
            }
        }
    }

    #[test]
    fn literal_passwords_never_reach_the_log() {
        let entropy = [5u8; 32];
        let mut q = serde_json::json!({"do": [
            {"create": {"collection": "users"}, "params": {"object": {
                "credentials": {"object": {"password": "hunter2"}},
                "data": {"object": {"password": "not a credential"}}}}},
            {"login": {"@ref": {"id": "1"}}, "params": {"object": {"password": "hunter2", "ttl": null}}},
            {"identify": {"@ref": {"id": "1"}}, "password": {"concat": ["hun", {"concat": "ter"}, "2"]}},
            {"create": {"credentials": null}, "params": {"object": {"instance": null, "password": "hunter2"}}},
            {"identify": {"@ref": {"id": "1"}}, "password": {"var": "pw"}},
            {"identify": {"@ref": {"id": "1"}}, "password": ""}
        ]});
        assert_eq!(redact_passwords(&mut q, &entropy), 4, "it counts what it replaced");
        let text = q.to_string();
        assert!(!text.contains("hunter2") && !text.contains("\"hun\""), "{text}");
        assert!(text.contains("not a credential"), "user data is left alone: {text}");
        assert_eq!(text.matches(PASSWORD_DIGEST_FN).count(), 4);
        assert_eq!(q["do"][4]["password"], serde_json::json!({"var": "pw"}), "computed at run time: left alone");
        assert_eq!(q["do"][5]["password"], "", "an invalid password is refused by the evaluator, not redacted");
        // The marker evaluates to the same material as the plain password, in its input only.
        let marker = &q["do"][2]["password"];
        let (d, t) = (marker[PASSWORD_DIGEST_FN].as_str().unwrap(), marker[PASSWORD_TAG_ARG].as_str().unwrap());
        let v = digest_value(d, t, &entropy).unwrap();
        let p = Password::from_value(&v, Some(&entropy)).unwrap();
        assert_eq!(p.material(), Password::Plain("hunter2".into()).material());
        assert!(digest_value(d, t, &[6; 32]).is_none(), "a tag is void in another input");
        assert!(Password::from_value(&v, Some(&[6; 32])).is_none());
        assert!(Password::from_value(&v, None).is_none(), "read-only evaluation takes no digest");
    }

    #[test]
    fn query_bodies_are_not_redacted() {
        let mut q = serde_json::json!({"create_function": {"object": {"name": "f", "body": {"query":
            {"lambda": "r", "expr": {"login": {"var": "r"}, "params": {"object": {"password": "pw"}}}}}}}});
        let before = q.clone();
        assert_eq!(redact_passwords(&mut q, &[1; 32]), 0);
        assert_eq!(q, before);
    }

    #[test]
    fn malformed_secrets_claim_nothing() {
        assert!(parse("fnAAAA").is_none());
        assert!(parse("nope").is_none());
        assert!(parse("fn!!!").is_none());
    }
}
