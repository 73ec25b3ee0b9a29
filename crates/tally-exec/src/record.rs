//! The transaction record: a write transaction's input as it is logged, replicated,
//! replayed and hashed (each input is a leaf of its block's inputs root).
//!
//! This module is the record's one owner: [`encode_input`] and [`decode_input`], and the
//! byte layout below (also in `docs/record.md`); the transaction's output record, what
//! the executor answers, is in `output.rs` ([`encode_output`], [`decode_output`]). The decoder refuses anything it does not
//! understand — an unknown version, a bad role, a malformed value, trailing bytes — with a
//! [`RecordError`]; it never fills in a default.
//!
//! One other record shares the log with transaction inputs: the root key record (kind
//! `R`, `root_key.rs`), which sets the cluster's root key hash. Both start with the
//! version byte and then a kind byte, so the executor tells them apart by those two.
//!
//! # Layout, version 1
//!
//! Integers are big-endian; `varint` is unsigned LEB128 in its shortest form (at most 10
//! bytes); `str` is `varint length | UTF-8 bytes`.
//!
//! | field | encoding |
//! |---|---|
//! | version | `u8` = `0x01` |
//! | kind | `u8` = `0x49` (`I`, a transaction input) |
//! | db | `u64`: the database the query runs in (internal id) |
//! | role | `str`: `admin`, `server`, `server-readonly`, `client`, `@member`, `@jwt`, or `@role/<name>[/<name>…]` |
//! | entropy | 32 bytes drawn by the receiving node |
//! | steps_max | `u64`: the evaluation step budget |
//! | flags | `u8`: bit 0 identity, bit 1 token, bit 2 JWT login; other bits 0 |
//! | identity | `tree` (the identity document's ref, wire JSON), if flag bit 0 |
//! | token | `tree` (the token's ref, wire JSON), if flag bit 1 |
//! | jwt | `str` provider, `str` issuer, `tree` claims, if flag bit 2 |
//! | footprint | `varint` length and bytes: reserved for the read/write footprint of partitioned execution; empty in version 1 |
//! | query | `tree`: the query's JSON AST (passwords already replaced by digests) |
//!
//! and nothing after it. A `tree` is a JSON value: a tag byte, then
//!
//! | tag | value | then |
//! |---|---|---|
//! | `0x00` | null | — |
//! | `0x01` / `0x02` | false / true | — |
//! | `0x03` | integer in i64 | `i64` |
//! | `0x04` | integer above i64::MAX | `u64` (refused at or below i64::MAX) |
//! | `0x05` | float | `f64` bits (finite) |
//! | `0x06` | string | `str` |
//! | `0x07` | array | `varint` count, then that many trees |
//! | `0x08` | object | `varint` count, then that many `str` key and tree pairs, keys distinct, in the query's order |
//!
//! nested at most [`TREE_DEPTH_MAX`] deep.
//!
//! # Layout, version 2 (what this build writes)
//!
//! The fields of version 1, with version byte `0x02`, and trees written more compactly
//! (about half the bytes of a typical query: a transfer's 981-byte tree is 469 bytes).
//! In a version 2 tree:
//!
//! | tag | value | then |
//! |---|---|---|
//! | `0x03` | integer in i64 | zigzag `varint` (shortest form) |
//! | `0x06` | string | `name` |
//! | `0x08` | object | `varint` count, then that many `name` key and tree pairs |
//!
//! and the other tags as in version 1. A `name` is `varint h`: an even `h` is followed by
//! `h / 2` bytes of UTF-8; an odd `h` stands for the well-known name number `(h - 1) / 2`
//! of `names.rs` (`@ref`, `collection`, `data`, the FQL function keys, …). A well-known
//! name is always written as its number: the decoder refuses one written out, and a
//! number past the list. The other fields (role, JWT provider and issuer) stay `str`.
//!
//! # Version 0: logs written before version 1
//!
//! Before version 1 an input was the JSON text of an object with the fields `q`, `db`,
//! `role`, `entropy` (64 hex digits), `steps_max` and optional `identity`, `token`, `jwt`.
//! Such a record starts with `{` (0x7B, never a version byte), and [`decode_input`] still
//! reads it, so logs from earlier builds replay exactly as they were written; their hash
//! is the hash of those bytes, as before. Nothing writes version 0 any more.

use serde::Deserialize;
use serde_json::{Map, Number, Value as Json};

/// Version byte of the output and root key records this build writes (`output.rs`,
/// `root_key.rs`), and of the transaction inputs of earlier builds.
pub const VERSION: u8 = 1;
/// Version byte of the transaction inputs this build writes: version 1 with compact
/// trees (well-known names by number, integers as varints). Versions 0 and 1 are read.
pub const INPUT_VERSION: u8 = 2;
/// Kind byte of a transaction input.
const KIND_INPUT: u8 = b'I';
/// Deepest JSON tree a record holds. Queries reach the log through HTTP, whose JSON is at
/// most 128 levels deep; the margin is for values the receiving node wraps around them.
pub const TREE_DEPTH_MAX: usize = 1024;
/// Longest footprint a version 1 record may carry (none).
const FOOTPRINT_BYTES_MAX: usize = 0;

const FLAG_IDENTITY: u8 = 1;
const FLAG_TOKEN: u8 = 2;
const FLAG_JWT: u8 = 4;

/// Longest input record a receiving node logs: the transaction's ledger leaf record (89
/// bytes, 32 per write, and the input record) is one value of the state store, at most
/// 16 MiB, so a longer input could not be recorded even for a transaction that fails.
pub const INPUT_BYTES_MAX: usize = tally_ledger::leaf::RECORD_BYTES_MAX - tally_ledger::leaf::TXN_LEAF_LEN;

/// Refuse a transaction whose ledger leaf record (input record of `input_len` bytes,
/// `writes` effects) would not fit in [`tally_ledger::leaf::RECORD_BYTES_MAX`]. The
/// receiving node checks the input alone before logging (`writes` = 0); the executor
/// checks input and writes after evaluating, on every replica alike.
pub fn check_record(input_len: usize, writes: usize) -> Result<(), tally_fql::FqlError> {
    use tally_ledger::leaf::{record_len, RECORD_BYTES_MAX};
    let len = record_len(input_len, writes);
    if len <= RECORD_BYTES_MAX {
        return Ok(());
    }
    let what = if input_len > INPUT_BYTES_MAX {
        format!(
            "This query is {input_len} bytes as logged; a transaction's input may be at most {INPUT_BYTES_MAX} bytes \
             (its ledger record must fit in {RECORD_BYTES_MAX} bytes). Send a smaller query: keep large values out \
             of query literals, or split the work over several transactions."
        )
    } else {
        format!(
            "This transaction's ledger record would be {len} bytes (its input of {input_len} bytes as logged, 32 bytes \
             for each of its {writes} writes, and 89); a ledger record may be at most {RECORD_BYTES_MAX} bytes. \
             Send a smaller query or write less in one transaction."
        )
    };
    Err(tally_fql::FqlError::new(tally_fql::error::code::INVALID_ARGUMENT, what))
}

/// One transaction input as it is logged.
#[derive(Clone, Debug, PartialEq)]
pub struct TxnInput {
    /// The query (its JSON AST, passwords already replaced by their digests).
    pub q: Json,
    pub db: u64,
    /// The role's name, as [`tally_fql::auth::Role::name`] spells it.
    pub role: String,
    /// Drawn by the receiving node; secrets and salts derive from it.
    pub entropy: [u8; 32],
    pub steps_max: u64,
    /// Token queries: the identity document and the token (wire-encoded refs).
    pub identity: Option<Json>,
    pub token: Option<Json>,
    /// JWT queries (role `@jwt`): what the receiving node verified. Never the token.
    pub jwt: Option<JwtInput>,
}

/// A verified JWT login as it is logged: the access provider (in the input's database)
/// and the token's claims, which the executor hands to the provider's role predicates and
/// to `CurrentIdentity()`/`CurrentToken()`. The signature is not logged: the claims alone
/// are no credential.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct JwtInput {
    pub provider: String,
    pub issuer: String,
    pub claims: Json,
}

#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum RecordError {
    #[error("the record ends early")]
    Truncated,
    #[error("unknown record version {0} (this build reads versions 0, 1 and 2)")]
    UnknownVersion(u8),
    #[error("the record is not a transaction input (kind byte {0:#04x})")]
    WrongKind(u8),
    #[error("{0} bytes follow the end of the record")]
    TrailingBytes(usize),
    #[error("unknown role {0:?}")]
    BadRole(String),
    #[error("a string is not UTF-8")]
    BadUtf8,
    #[error("unknown value tag {0:#04x}")]
    BadTag(u8),
    #[error("a value is nested deeper than {TREE_DEPTH_MAX} levels")]
    TooDeep,
    #[error("a length is not in its shortest form or overflows")]
    BadVarint,
    #[error("a length of {0} exceeds what is left of the record")]
    LengthTooLarge(u64),
    #[error("a float is not finite")]
    NonFiniteFloat,
    #[error("an integer is in the wrong form")]
    BadInteger,
    #[error("an object repeats the key {0:?}")]
    DuplicateKey(String),
    #[error("unknown flag bits {0:#04x}")]
    UnknownFlags(u8),
    #[error("a version 1 or 2 record carries no footprint")]
    FootprintNotEmpty,
    #[error("status {0} is not an HTTP status")]
    BadStatus(u16),
    #[error("an output's body is not one JSON object")]
    BadBody,
    #[error("version 0 record: {0}")]
    Legacy(String),
    #[error("a root key record sets an all-zero hash")]
    ZeroRootKeyHash,
    #[error("well-known name number {0} is not in this build's list")]
    UnknownName(u64),
    #[error("the well-known name {0:?} is written out instead of by its number")]
    NameWrittenOut(String),
}

/// Encode `input` as a version 2 record. Fails only for a value nested deeper than
/// [`TREE_DEPTH_MAX`] or a float that is not finite (neither comes out of HTTP JSON).
pub fn encode_input(input: &TxnInput) -> Result<Vec<u8>, RecordError> {
    let mut out = encode_head(input)?;
    put_tree(&mut out, &input.q, 0)?;
    Ok(out)
}

/// Every field of `input` but the query, which follows it last.
fn encode_head(input: &TxnInput) -> Result<Vec<u8>, RecordError> {
    let mut out = Vec::with_capacity(64);
    out.push(INPUT_VERSION);
    out.push(KIND_INPUT);
    out.extend_from_slice(&input.db.to_be_bytes());
    put_str(&mut out, &input.role);
    out.extend_from_slice(&input.entropy);
    out.extend_from_slice(&input.steps_max.to_be_bytes());
    let flags = (input.identity.is_some() as u8 * FLAG_IDENTITY)
        | (input.token.is_some() as u8 * FLAG_TOKEN)
        | (input.jwt.is_some() as u8 * FLAG_JWT);
    out.push(flags);
    if let Some(v) = &input.identity {
        put_tree(&mut out, v, 0)?;
    }
    if let Some(v) = &input.token {
        put_tree(&mut out, v, 0)?;
    }
    if let Some(j) = &input.jwt {
        put_str(&mut out, &j.provider);
        put_str(&mut out, &j.issuer);
        put_tree(&mut out, &j.claims, 0)?;
    }
    put_varint(&mut out, 0); // footprint
    Ok(out)
}

/// [`encode_input`] for an input whose query is already in its `tree` encoding
/// (`input.q` is ignored): the receiving node writes it from the request body's text
/// ([`QueryTree::from_text`]) without building the JSON tree.
pub fn encode_input_with_tree(input: &TxnInput, query: &QueryTree) -> Result<Vec<u8>, RecordError> {
    let mut out = encode_head(input)?;
    out.extend_from_slice(&query.0);
    Ok(out)
}

/// [`encode_input_predecoded`] for a query in its `tree` encoding
/// ([`encode_input_with_tree`]); `expr` must be what `tally_fql::expr::parse` gives for
/// that tree (checked in debug builds).
pub fn encode_input_with_tree_predecoded(
    mut input: TxnInput,
    query: &QueryTree,
    expr: std::sync::Arc<tally_fql::expr::Expr>,
) -> Result<(Vec<u8>, Option<Predecoded>), RecordError> {
    debug_assert_eq!(
        Reader { bytes: &query.0, pos: 0, version: INPUT_VERSION }
            .tree(0)
            .ok()
            .and_then(|q| tally_fql::expr::parse(&q).ok())
            .map(|e| format!("{e:?}")),
        Some(format!("{expr:?}")),
        "a Predecoded's expression must be its query's"
    );
    input.q = Json::Null;
    let bytes = encode_input_with_tree(&input, query)?;
    let decodable = tally_fql::auth::Role::parse(&input.role).is_some_and(|r| r.name() == input.role);
    Ok((bytes, decodable.then_some(Predecoded { input, expr })))
}

/// What the receiving node decoded from an input record it encoded itself: the input (its
/// query tree already freed) and the query's expression. It travels beside the record to
/// the executor of the same process (`tally_apply::Decoded`), which then neither decodes
/// the record nor parses the query again; it is never logged or sent (replay and the
/// other replicas decode the record), so it must be exactly what decoding would give.
pub struct Predecoded {
    pub input: TxnInput,
    pub expr: std::sync::Arc<tally_fql::expr::Expr>,
}

/// [`encode_input`], also keeping what the executor needs of `input` as a [`Predecoded`].
/// `expr` must be what `tally_fql::expr::parse(&input.q)` gives (checked in debug
/// builds): a record's decoded tree is the tree it was encoded from (the round-trip
/// tests), so the executor sees the same expression either way. The one field the
/// encoder takes that the decoder may still refuse is the role (a name not in its
/// canonical spelling); such an input gets no `Predecoded`, so the executor refuses it
/// from its bytes as every replica does. The query tree is freed here, on the caller's
/// thread.
pub fn encode_input_predecoded(
    mut input: TxnInput,
    expr: std::sync::Arc<tally_fql::expr::Expr>,
) -> Result<(Vec<u8>, Option<Predecoded>), RecordError> {
    debug_assert_eq!(
        tally_fql::expr::parse(&input.q).map(|e| format!("{e:?}")).ok(),
        Some(format!("{expr:?}")),
        "a Predecoded's expression must be its query's"
    );
    let bytes = encode_input(&input)?;
    input.q = Json::Null;
    let decodable = tally_fql::auth::Role::parse(&input.role).is_some_and(|r| r.name() == input.role);
    Ok((bytes, decodable.then_some(Predecoded { input, expr })))
}

/// Decode a record of version 2 or 1, or of version 0 (JSON text, from earlier builds'
/// logs).
pub fn decode_input(bytes: &[u8]) -> Result<TxnInput, RecordError> {
    match bytes.first() {
        Some(b'{') => decode_legacy(bytes),
        Some(&v @ (1 | INPUT_VERSION)) => decode_binary(bytes, v),
        Some(&v) => Err(RecordError::UnknownVersion(v)),
        None => Err(RecordError::Truncated),
    }
}

/// A record of version 1 or 2 (`version`, its first byte).
fn decode_binary(bytes: &[u8], version: u8) -> Result<TxnInput, RecordError> {
    let mut r = Reader { bytes, pos: 1, version };
    let mut input = decode_v1_head(&mut r)?;
    input.q = r.tree(0)?;
    let rest = bytes.len() - r.pos;
    if rest != 0 {
        return Err(RecordError::TrailingBytes(rest));
    }
    Ok(input)
}

/// A version 1 or 2 record's fields before the query (the query left `Null`), the reader
/// left at the query's tree.
fn decode_v1_head(r: &mut Reader<'_>) -> Result<TxnInput, RecordError> {
    let kind = r.u8()?;
    if kind != KIND_INPUT {
        return Err(RecordError::WrongKind(kind));
    }
    let db = r.u64()?;
    let role = checked_role(r.str()?)?;
    let entropy: [u8; 32] = r.take(32)?.try_into().map_err(|_| RecordError::Truncated)?;
    let steps_max = r.u64()?;
    let flags = r.u8()?;
    if flags & !(FLAG_IDENTITY | FLAG_TOKEN | FLAG_JWT) != 0 {
        return Err(RecordError::UnknownFlags(flags));
    }
    let identity = if flags & FLAG_IDENTITY != 0 { Some(r.tree(0)?) } else { None };
    let token = if flags & FLAG_TOKEN != 0 { Some(r.tree(0)?) } else { None };
    let jwt = if flags & FLAG_JWT != 0 {
        Some(JwtInput { provider: r.str()?, issuer: r.str()?, claims: r.tree(0)? })
    } else {
        None
    };
    if r.len()? as usize > FOOTPRINT_BYTES_MAX {
        return Err(RecordError::FootprintNotEmpty);
    }
    Ok(TxnInput { q: Json::Null, db, role, entropy, steps_max, identity, token, jwt })
}

/// What a replica (or a replay) needs of a record: the input, and its query read from the
/// tree encoding straight into an expression by `tally_fql::expr::QuerySeed`, without the
/// JSON tree that [`decode_input`] builds and `tally_fql::expr::parse` walks (on a cluster
/// that was a fifth of each member's executor). The input's `q` is left `Null`.
///
/// `None` whenever the reference path must decide: a record of version 0, any
/// malformed byte, anything the seed declines. The caller then takes
/// [`decode_input`] and `parse`, which give the same error they always did; where this
/// gives an expression, it is the one they give (`tests/read_text.rs` compares them over a
/// corpus, random documents and every truncation and byte change of a record).
pub fn decode_input_expr(bytes: &[u8]) -> Option<(TxnInput, tally_fql::expr::Expr)> {
    use serde::de::DeserializeSeed;
    let version = *bytes.first().filter(|&&v| v == 1 || v == INPUT_VERSION)?;
    let mut r = Reader { bytes, pos: 1, version };
    let input = decode_v1_head(&mut r).ok()?;
    // The tree into a tape and the tape into an expression, as the receiving node builds
    // it from the request's text (plain loops; the serde visitors cost about three times
    // as much); where the tape or its builder declines, the tree through serde.
    let at = r.pos;
    if let Some(tape) = r.tree_tape().filter(|_| r.pos == bytes.len()) {
        if let Some(expr) = tally_fql::expr::from_tape(&tape) {
            return Some((input, expr));
        }
    }
    r.pos = at;
    let expr = tally_fql::expr::QuerySeed.deserialize(tree_de::TreeDe::new(&mut r)).ok()?;
    (r.pos == bytes.len()).then_some((input, expr))
}

fn checked_role(role: String) -> Result<String, RecordError> {
    match tally_fql::auth::Role::parse(&role) {
        Some(r) if r.name() == role => Ok(role),
        _ => Err(RecordError::BadRole(role)),
    }
}

/// The JSON text records of earlier builds.
fn decode_legacy(bytes: &[u8]) -> Result<TxnInput, RecordError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct V0 {
        q: Json,
        db: u64,
        role: String,
        entropy: String,
        steps_max: u64,
        #[serde(default)]
        identity: Option<Json>,
        #[serde(default)]
        token: Option<Json>,
        #[serde(default)]
        jwt: Option<JwtInput>,
    }
    let v: V0 = tally_value::parse_json_unbounded(bytes).map_err(|e| RecordError::Legacy(e.to_string()))?;
    let entropy = hex::decode(&v.entropy)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| RecordError::Legacy("entropy is not 64 hex digits".into()))?;
    let role = checked_role(v.role)?;
    Ok(TxnInput {
        q: v.q,
        db: v.db,
        role,
        entropy,
        steps_max: v.steps_max,
        identity: v.identity,
        token: v.token,
        jwt: v.jwt,
    })
}

/// Whether no two of `items` have the same key: the tree refuses an object with a
/// repeated key, and both readers of a query's text or tree that write or read it without
/// building the tree check it with this. A few keys are compared pairwise, more sorted.
fn all_distinct<T, K: Ord>(items: &[T], key: impl Fn(&T) -> K) -> bool {
    if items.len() <= 16 {
        return items.iter().enumerate().all(|(i, k)| items[..i].iter().all(|x| key(x) != key(k)));
    }
    let mut sorted: Vec<K> = items.iter().map(key).collect();
    sorted.sort_unstable();
    sorted.windows(2).all(|w| w[0] != w[1])
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A version 2 `name`: a well-known name's number, or the string written out.
fn put_name(out: &mut Vec<u8>, s: &str) {
    match names::number(s).filter(|&n| (n as usize) < names::IN_VERSION_2) {
        Some(n) => put_varint(out, 2 * u64::from(n) + 1),
        None => {
            put_varint(out, 2 * s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
    }
}

/// A version 2 integer (tag `0x03`): zigzag, then varint.
fn put_int(out: &mut Vec<u8>, i: i64) {
    out.push(0x03);
    put_varint(out, ((i << 1) ^ (i >> 63)) as u64);
}

fn put_tree(out: &mut Vec<u8>, v: &Json, depth: usize) -> Result<(), RecordError> {
    if depth >= TREE_DEPTH_MAX {
        return Err(RecordError::TooDeep);
    }
    match v {
        Json::Null => out.push(0x00),
        Json::Bool(b) => out.push(0x01 + *b as u8),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                put_int(out, i);
            } else if let Some(u) = n.as_u64() {
                out.push(0x04);
                out.extend_from_slice(&u.to_be_bytes());
            } else {
                let f = n.as_f64().filter(|f| f.is_finite()).ok_or(RecordError::NonFiniteFloat)?;
                out.push(0x05);
                out.extend_from_slice(&f.to_bits().to_be_bytes());
            }
        }
        Json::String(s) => {
            out.push(0x06);
            put_name(out, s);
        }
        Json::Array(items) => {
            out.push(0x07);
            put_varint(out, items.len() as u64);
            for item in items {
                put_tree(out, item, depth + 1)?;
            }
        }
        Json::Object(map) => {
            out.push(0x08);
            put_varint(out, map.len() as u64);
            for (k, item) in map {
                put_name(out, k);
                put_tree(out, item, depth + 1)?;
            }
        }
    }
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// The record's version, which says how its trees are written (1 or 2; other
    /// records read no tree).
    version: u8,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or(RecordError::Truncated)?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().map_err(|_| RecordError::Truncated)?))
    }

    fn varint(&mut self) -> Result<u64, RecordError> {
        let mut n: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            if i == 9 && bits > 1 {
                return Err(RecordError::BadVarint);
            }
            n |= bits << (7 * i);
            if b & 0x80 == 0 {
                // Shortest form: no trailing zero group (except the value 0 itself).
                if i > 0 && bits == 0 {
                    return Err(RecordError::BadVarint);
                }
                return Ok(n);
            }
        }
        Err(RecordError::BadVarint)
    }

    /// A length or count, which can be no larger than the bytes left (every element
    /// takes at least one byte), so a forged count cannot make the decoder allocate.
    fn len(&mut self) -> Result<u64, RecordError> {
        let n = self.varint()?;
        if n > (self.bytes.len() - self.pos) as u64 {
            return Err(RecordError::LengthTooLarge(n));
        }
        Ok(n)
    }

    fn str(&mut self) -> Result<String, RecordError> {
        self.borrowed_str().map(str::to_string)
    }

    fn borrowed_str(&mut self) -> Result<&'a str, RecordError> {
        let n = self.len()? as usize;
        let b = self.take(n)?;
        std::str::from_utf8(b).map_err(|_| RecordError::BadUtf8)
    }

    /// A tree's string or object key: a `str` in version 1, a `name` in version 2.
    fn name(&mut self) -> Result<&'a str, RecordError> {
        if self.version < INPUT_VERSION {
            return self.borrowed_str();
        }
        let h = self.varint()?;
        if h & 1 == 1 {
            let n = h >> 1;
            return names::NAMES[..names::IN_VERSION_2].get(n as usize).copied().ok_or(RecordError::UnknownName(n));
        }
        let n = h >> 1;
        if n > (self.bytes.len() - self.pos) as u64 {
            return Err(RecordError::LengthTooLarge(n));
        }
        let s = std::str::from_utf8(self.take(n as usize)?).map_err(|_| RecordError::BadUtf8)?;
        if names::number(s).is_some_and(|n| (n as usize) < names::IN_VERSION_2) {
            return Err(RecordError::NameWrittenOut(s.to_string()));
        }
        Ok(s)
    }

    /// A tree's integer of tag `0x03`: 8 bytes in version 1, a zigzag varint in version 2.
    fn int(&mut self) -> Result<i64, RecordError> {
        if self.version < INPUT_VERSION {
            return Ok(self.u64()? as i64);
        }
        let z = self.varint()?;
        Ok((z >> 1) as i64 ^ -((z & 1) as i64))
    }

    /// The query tree as a [`tally_value::tape::Tape`] (strings borrowed from the record
    /// or the well-known names), or None where the record is malformed or the tape
    /// declines (deeper than its limit, a repeated key): what [`tree_de::TreeDe`] presents
    /// to a visitor, value for value.
    fn tree_tape(&mut self) -> Option<tally_value::tape::Tape<'a>> {
        use tally_value::tape::{TapeBuilder, Tok};
        let mut b = TapeBuilder::default();
        while !b.is_done() {
            if b.wants_key() {
                b.key(self.name().ok()?)?;
                continue;
            }
            match self.u8().ok()? {
                0x00 => b.scalar(Tok::Null)?,
                0x01 => b.scalar(Tok::Bool(false))?,
                0x02 => b.scalar(Tok::Bool(true))?,
                0x03 => b.scalar(Tok::Long(self.int().ok()?))?,
                0x04 => match self.u64().ok()? {
                    u if u > i64::MAX as u64 => b.scalar(Tok::BigU64(u))?,
                    _ => return None,
                },
                0x05 => match f64::from_bits(self.u64().ok()?) {
                    f if f.is_finite() => b.scalar(Tok::Double(f))?,
                    _ => return None,
                },
                0x06 => b.scalar(Tok::Str(self.name().ok()?))?,
                0x07 => b.array(u32::try_from(self.len().ok()?).ok()?)?,
                0x08 => b.object(u32::try_from(self.len().ok()?).ok()?)?,
                _ => return None,
            }
        }
        b.finish()
    }

    fn tree(&mut self, depth: usize) -> Result<Json, RecordError> {
        if depth >= TREE_DEPTH_MAX {
            return Err(RecordError::TooDeep);
        }
        Ok(match self.u8()? {
            0x00 => Json::Null,
            0x01 => Json::Bool(false),
            0x02 => Json::Bool(true),
            0x03 => Json::Number(self.int()?.into()),
            0x04 => {
                let u = self.u64()?;
                if u <= i64::MAX as u64 {
                    return Err(RecordError::BadInteger);
                }
                Json::Number(u.into())
            }
            0x05 => {
                let f = f64::from_bits(self.u64()?);
                Json::Number(Number::from_f64(f).ok_or(RecordError::NonFiniteFloat)?)
            }
            0x06 => Json::String(self.name()?.to_string()),
            0x07 => {
                let n = self.len()?;
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.tree(depth + 1)?);
                }
                Json::Array(items)
            }
            0x08 => {
                let n = self.len()?;
                let mut map = Map::new();
                for _ in 0..n {
                    let k = self.name()?.to_string();
                    let v = self.tree(depth + 1)?;
                    if map.contains_key(&k) {
                        return Err(RecordError::DuplicateKey(k));
                    }
                    map.insert(k, v);
                }
                Json::Object(map)
            }
            t => return Err(RecordError::BadTag(t)),
        })
    }
}

mod names;
mod output;
pub mod root_key;
mod text;
mod tree_de;
pub use output::{decode_output, encode_body, encode_output, TxnOutput};
pub use text::{read_text, QueryTree};

#[cfg(test)]
mod tests;
