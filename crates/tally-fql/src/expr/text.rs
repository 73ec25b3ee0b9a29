//! A query's JSON text straight to an [`Expr`], without a `serde_json::Value` tree.
//!
//! Why: building the request body's JSON tree (an ordered map per object) and freeing it
//! was 8–11 % of a server's CPU per transfer (docs/benchmarks.md). [`from_text`] reads the
//! text once with serde and builds the expression as it goes.
//!
//! It must give exactly what [`super::parse`] gives for the text's JSON tree, so it takes
//! on only what it can decide without the whole tree, and *declines* (`None`) everything
//! else — any error, malformed JSON, a repeated key (a tree keeps the last value in the
//! first one's place), an `@obj` escape, a ref in a form other than an object with a
//! string `id`, nesting past serde_json's 128 levels — and the caller then parses the
//! tree as before, which gives the same expression or the same error. Only the parts whose
//! meaning depends on more than their own text are kept as small JSON trees and handed to
//! the tree parser: a `query` argument and the inside of the special forms other than
//! `@ref`. Nodes are counted as the tree parser counts them, so the
//! [`EXPR_NODES_MAX`] limit is the same.
//!
//! Architecture invariant: `Some(e)` only where `parse(&json)` is `Ok` and equal
//! (`tests/parse_text.rs` compares the two over a corpus and random documents).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;
use tally_value::object::Key;
use tally_value::{Ref, Value};

use super::{key_of, resolve_keys, Call, Expr, Parser, EXPR_NODES_MAX};

/// More keys than any function has: such an object cannot be a call.
const CALL_KEYS_MAX: usize = 32;

/// The expression of a query's JSON text, when it can be built without the JSON tree;
/// `None` when the caller must parse the tree (see the module doc).
pub fn from_text(text: &[u8]) -> Option<Expr> {
    // serde_json's own recursion limit (128) stays on: deeper text takes the tree path.
    let mut de = serde_json::Deserializer::from_slice(text);
    let e = QuerySeed.deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(e)
}

/// [`from_text`] as a seed, for a caller that reads the text through a deserializer of
/// its own: the receiving node reads a write's body once, through a reader that also
/// writes the logged record's `tree` encoding (`tally_exec::record::read_text`). An
/// `Err` of any kind means "take the tree path", as `None` does for [`from_text`]; the
/// deserializer must be serde_json's over the whole text (or pass on exactly what it
/// reads), with its recursion limit on.
pub struct QuerySeed;

impl<'de> DeserializeSeed<'de> for QuerySeed {
    type Value = Expr;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Expr, D::Error> {
        let mut nodes = 0usize;
        ExprSeed { nodes: &mut nodes }.deserialize(d)
    }
}

/// The one error of this module: "take the tree path".
fn decline<E: de::Error>() -> E {
    E::custom("declined")
}

fn count<E: de::Error>(nodes: &mut usize) -> Result<(), E> {
    *nodes += 1;
    if *nodes > EXPR_NODES_MAX {
        return Err(decline());
    }
    Ok(())
}

/// An expression in a position the tree parser passes to `Parser::expr`.
struct ExprSeed<'n> {
    nodes: &'n mut usize,
}

impl<'de> DeserializeSeed<'de> for ExprSeed<'_> {
    type Value = Expr;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Expr, D::Error> {
        count(self.nodes)?;
        d.deserialize_any(ExprVisitor { nodes: self.nodes })
    }
}

struct ExprVisitor<'n> {
    nodes: &'n mut usize,
}

impl<'de> Visitor<'de> for ExprVisitor<'_> {
    type Value = Expr;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an FQL expression")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Expr, E> {
        Ok(Expr::Lit(Value::Null))
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Expr, E> {
        Ok(Expr::Lit(Value::Bool(b)))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Expr, E> {
        Ok(Expr::Lit(Value::Long(n)))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Expr, E> {
        // Above i64::MAX the tree parser's answer is an error.
        i64::try_from(n).map(|n| Expr::Lit(Value::Long(n))).map_err(|_| decline())
    }
    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Expr, E> {
        // A JSON tree holds a non-finite float as null; serde_json never reads one.
        if !f.is_finite() {
            return Err(decline());
        }
        Ok(Expr::Lit(Value::Double(f)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Expr, E> {
        Ok(Expr::Lit(Value::String(s.to_owned())))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Expr, E> {
        Ok(Expr::Lit(Value::String(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Expr, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(e) = seq.next_element_seed(ExprSeed { nodes: self.nodes })? {
            out.push(e);
        }
        Ok(Expr::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Expr, A::Error> {
        let Some(first) = map.next_key_seed(KeySeed)? else {
            return Err(decline()); // `{}` calls nothing: an error
        };
        if first.starts_with('@') {
            return special(first, map);
        }
        object(first, map, self.nodes)
    }
}

/// A one-key special form (`{"@ref": …}`, …), as `tally_value::wire_special` reads it.
fn special<'de, A: MapAccess<'de>>(tag: Cow<'de, str>, mut map: A) -> Result<Expr, A::Error> {
    let v = match &*tag {
        "@ref" => Value::Ref(map.next_value_seed(RefSeed)?),
        "@ts" | "@date" | "@bytes" | "@set" | "@query" | "@obj" => {
            // Rare in a query's text: the tree decoder reads the inside.
            let inner: Json = map.next_value()?;
            let mut one = serde_json::Map::new();
            one.insert(tag.into_owned(), inner);
            match tally_value::wire_special(&one) {
                Ok(Some(v)) => v,
                _ => return Err(decline()),
            }
        }
        _ => return Err(decline()),
    };
    // With a second key the object is no special form (and no call either).
    if map.next_key_seed(KeySeed)?.is_some() {
        return Err(decline());
    }
    Ok(crate::fns::selfref::literal_expr(v))
}

/// What an object's value became before the object's whole key set is known.
enum Pending {
    Expr(Expr),
    /// The fields of `{"object": {…}}`, if that is the object's only key.
    Fields(Vec<(Key, Expr)>),
    /// `let` bindings, if the object calls `Let`.
    Bindings(Expr),
    /// A `query` argument, kept as JSON: as `Query`'s body it is data.
    Json(Json),
}

/// An object that is not a special form: an object literal or a call.
fn object<'de, A: MapAccess<'de>>(first: Cow<'de, str>, mut map: A, nodes: &mut usize) -> Result<Expr, A::Error> {
    let mut entries: Vec<(Cow<'de, str>, Pending)> = Vec::with_capacity(4);
    let mut key = Some(first);
    while let Some(k) = key {
        if k.starts_with('@') || entries.len() == CALL_KEYS_MAX || entries.iter().any(|(e, _)| *e == k) {
            return Err(decline());
        }
        let p = match &*k {
            "object" if entries.is_empty() => map.next_value_seed(FieldsOrExprSeed { nodes: &mut *nodes })?,
            "let" => Pending::Bindings(map.next_value_seed(BindingsSeed { nodes: &mut *nodes })?),
            "query" => Pending::Json(map.next_value()?),
            _ => Pending::Expr(map.next_value_seed(ExprSeed { nodes: &mut *nodes })?),
        };
        entries.push((k, p));
        key = map.next_key_seed(KeySeed)?;
    }
    if entries.len() == 1 && matches!(entries[0].1, Pending::Fields(_)) {
        let Some((_, Pending::Fields(fields))) = entries.pop() else { return Err(decline()) };
        return Ok(Expr::Object(fields));
    }
    let mut keys = [""; CALL_KEYS_MAX];
    for (slot, (k, _)) in keys.iter_mut().zip(&entries) {
        *slot = k;
    }
    let spec = resolve_keys(&keys[..entries.len()]).map_err(|_| decline())?;
    if spec.name == "query" {
        // As `Parser::call`: validated as an expression, kept as data.
        let Some((_, Pending::Json(body))) = entries.pop() else { return Err(decline()) };
        Parser { nodes }.expr(&body).map_err(|_| decline())?;
        let v = tally_value::query_body_from_json(&body).map_err(|_| decline())?;
        return Ok(Expr::Lit(Value::Query(Box::new(crate::fns::basic::with_api_version(v)))));
    }
    let mut args = Vec::with_capacity(entries.len());
    for (k, p) in entries {
        let key = key_of(spec, &k);
        let e = match p {
            Pending::Expr(e) => e,
            Pending::Bindings(b) if spec.name == "let" && key == "let" => b,
            Pending::Json(j) => Parser { nodes: &mut *nodes }.expr(&j).map_err(|_| decline())?,
            Pending::Bindings(_) | Pending::Fields(_) => return Err(decline()),
        };
        args.push((key, e));
    }
    Ok(Expr::Call(Call { spec, args }))
}

/// Are all keys distinct? (A JSON tree would have merged repeated ones.)
fn distinct<K: AsRef<str>, T>(fields: &[(K, T)]) -> bool {
    if fields.len() <= 16 {
        return fields.iter().enumerate().all(|(i, (k, _))| fields[..i].iter().all(|(x, _)| x.as_ref() != k.as_ref()));
    }
    let mut keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_ref()).collect();
    keys.sort_unstable();
    keys.windows(2).all(|w| w[0] != w[1])
}

/// The fields of an object as `(key, expression)` pairs, declining an `@obj` key (the
/// tree parser may read it as an escape) and repeated keys.
fn fields<'de, A: MapAccess<'de>>(mut map: A, nodes: &mut usize) -> Result<Vec<(Key, Expr)>, A::Error> {
    let mut out: Vec<(Key, Expr)> = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
    while let Some(k) = map.next_key_seed(KeySeed)? {
        if k == "@obj" {
            return Err(decline());
        }
        let e = map.next_value_seed(ExprSeed { nodes: &mut *nodes })?;
        out.push((Key::from(k.as_ref()), e));
    }
    if !distinct(&out) {
        return Err(decline());
    }
    Ok(out)
}

/// The value of an object's first key `object`: an object literal's fields if it is an
/// object, else an expression.
struct FieldsOrExprSeed<'n> {
    nodes: &'n mut usize,
}

impl<'de> DeserializeSeed<'de> for FieldsOrExprSeed<'_> {
    type Value = Pending;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Pending, D::Error> {
        d.deserialize_any(self)
    }
}

macro_rules! as_expr {
    ($($name:ident($t:ty)),*) => {$(
        fn $name<E: de::Error>(self, v: $t) -> Result<Pending, E> {
            count(self.nodes)?;
            ExprVisitor { nodes: self.nodes }.$name(v).map(Pending::Expr)
        }
    )*};
}

impl<'de> Visitor<'de> for FieldsOrExprSeed<'_> {
    type Value = Pending;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object literal's fields or an FQL expression")
    }
    as_expr!(visit_bool(bool), visit_i64(i64), visit_u64(u64), visit_f64(f64), visit_str(&str), visit_string(String));
    fn visit_unit<E: de::Error>(self) -> Result<Pending, E> {
        count(self.nodes)?;
        Ok(Pending::Expr(Expr::Lit(Value::Null)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Pending, A::Error> {
        count(self.nodes)?;
        ExprVisitor { nodes: self.nodes }.visit_seq(seq).map(Pending::Expr)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Pending, A::Error> {
        // Not counted: the tree parser counts the `{"object": …}` around it, not this.
        fields(map, self.nodes).map(Pending::Fields)
    }
}

/// `Let` bindings: `[{"x": e1}, {"y": e2}]`, or the legacy `{"x": e1, "y": e2}`, as
/// `Parser::bindings` reads them.
struct BindingsSeed<'n> {
    nodes: &'n mut usize,
}

impl<'de> DeserializeSeed<'de> for BindingsSeed<'_> {
    type Value = Expr;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Expr, D::Error> {
        d.deserialize_any(self)
    }
}

fn one_field_objects(fields: Vec<(Key, Expr)>, out: &mut Vec<Expr>) {
    out.extend(fields.into_iter().map(|f| Expr::Object(vec![f])));
}

impl<'de> Visitor<'de> for BindingsSeed<'_> {
    type Value = Expr;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("Let bindings")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Expr, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element_seed(BindingSeed { nodes: &mut *self.nodes })? {
            one_field_objects(item, &mut out);
        }
        Ok(Expr::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Expr, A::Error> {
        // The legacy form takes its keys as they are (no `@obj` escape): `fields` declines
        // an `@obj` key all the same, which only sends it to the tree parser.
        let mut out = Vec::new();
        one_field_objects(fields(map, self.nodes)?, &mut out);
        Ok(Expr::Array(out))
    }
}

/// One element of the array form of `Let` bindings: an object.
struct BindingSeed<'n> {
    nodes: &'n mut usize,
}

impl<'de> DeserializeSeed<'de> for BindingSeed<'_> {
    type Value = Vec<(Key, Expr)>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BindingSeed<'_> {
    type Value = Vec<(Key, Expr)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of Let bindings")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        fields(map, self.nodes)
    }
}

/// An object key, borrowed from the text when it has no escapes (also used by the logged
/// record's writer, `tally_exec::record`, which reads the same text).
pub struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_owned()))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s))
    }
}

/// The inside of `{"@ref": …}` in its object form with a string `id`, as
/// `tally_value`'s `decode_ref` reads it: `id`, optional `collection` and `database`
/// (null or a `{"@ref": …}`), other keys ignored. The path-string form, a numeric id and
/// every error are declined.
struct RefSeed;

impl<'de> DeserializeSeed<'de> for RefSeed {
    type Value = Ref;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Ref, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RefSeed {
    type Value = Ref;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a ref")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ref, A::Error> {
        let (mut id, mut collection, mut database) = (None, None, None);
        let mut seen: Vec<Cow<'de, str>> = Vec::with_capacity(3);
        while let Some(k) = map.next_key_seed(KeySeed)? {
            match &*k {
                "id" | "collection" | "database" if seen.contains(&k) => return Err(decline()),
                "id" => id = Some(map.next_value_seed(IdSeed)?),
                "collection" => collection = map.next_value_seed(SubRefSeed)?,
                "database" => database = map.next_value_seed(SubRefSeed)?,
                _ => {
                    // Read whole, not skipped: serde_json's skipping accepts strings its
                    // parser refuses (a lone surrogate escape), and the tree path parses it.
                    map.next_value::<Json>()?;
                    continue;
                }
            }
            seen.push(k);
        }
        let id = id.ok_or_else(decline)?;
        Ok(Ref { id: id.into(), collection, database })
    }
}

struct IdSeed;

impl<'de> DeserializeSeed<'de> for IdSeed {
    type Value = String;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for IdSeed {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string id")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<String, E> {
        Ok(s.to_owned())
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<String, E> {
        Ok(s)
    }
}

/// `collection` or `database` inside a ref: null (none) or a one-key `{"@ref": …}`.
struct SubRefSeed;

impl<'de> DeserializeSeed<'de> for SubRefSeed {
    type Value = Option<Arc<Ref>>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SubRefSeed {
    type Value = Option<Arc<Ref>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("null or a ref")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        match map.next_key_seed(KeySeed)? {
            Some(k) if k == "@ref" => {}
            _ => return Err(decline()),
        }
        let r = map.next_value_seed(RefSeed)?;
        if map.next_key_seed(KeySeed)?.is_some() {
            return Err(decline());
        }
        Ok(Some(Arc::new(r)))
    }
}
