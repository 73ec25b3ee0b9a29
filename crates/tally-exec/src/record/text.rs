//! A query's JSON text straight to the record's `tree` encoding, without a
//! `serde_json::Value` tree: the receiving node encodes the logged query from the request
//! body it already holds (docs/record.md: the query is "the query's JSON AST").
//!
//! [`read_text`] is the one the server uses: it reads a write's body once, handing every
//! value serde_json reads to the expression parser (`tally_fql::expr::QuerySeed`) and
//! writing it into the tree encoding on the way (a "tee" around the deserializer), so the
//! body is tokenized once for both. [`QueryTree::from_text`] reads the text for the tree
//! alone: the earlier two-pass path, kept as the reference the tests and the `parse_cost`
//! benchmark compare against.
//!
//! The bytes must be exactly what `put_tree` writes for the text's JSON tree, so both
//! decline what they cannot write the same way: malformed JSON, an object with a repeated
//! key (the tree keeps the last value in the first one's place), nesting past
//! serde_json's 128 levels. The caller then builds the tree.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::forward_to_deserialize_any;

use super::{put_int, put_name, put_tree, put_varint};
use tally_fql::expr::KeySeed;
use tally_value::tape::{Node as TapeNode, Tape, Tok};

/// A query in the record's `tree` encoding, ready to follow the record's other fields
/// (`super::encode_input_with_tree`).
pub struct QueryTree(pub(super) Vec<u8>);

impl QueryTree {
    /// The `tree` encoding of the JSON `text`, or `None` (see the module doc): the text
    /// read for the tree alone. The server reads a body once with [`read_text`]; this
    /// is the earlier second pass, kept for the tests and benchmarks that compare the two.
    #[doc(hidden)]
    pub fn from_text(text: &[u8]) -> Option<QueryTree> {
        let mut de = serde_json::Deserializer::from_slice(text);
        let mut enc = Enc::new(text.len());
        Node { enc: &mut enc }.deserialize(&mut de).ok()?;
        de.end().ok()?;
        let tree = enc.finish();
        debug_assert_eq!(Some(&tree), QueryTree::from_json_text_via_tree(text).as_ref());
        Some(QueryTree(tree))
    }

    /// The `tree` encoding of a [`Tape`]'s text: what [`read_text`] writes for the same
    /// text, from the values in text order, with each container's count known before
    /// its elements. The tape holds no repeated key and no non-finite number, so it
    /// always has one (docs/benchmarks.md, "The query read once into a tape").
    pub fn from_tape(tape: &Tape<'_>) -> QueryTree {
        let mut out = Vec::with_capacity(tape.len() * 3);
        put_node(&mut out, tape.root());
        QueryTree(out)
    }

    /// The encoding of the JSON tree of `text`, the way the tree path writes it (tests).
    fn from_json_text_via_tree(text: &[u8]) -> Option<Vec<u8>> {
        let json: serde_json::Value = tally_value::parse_json_unbounded(text).ok()?;
        let mut out = Vec::new();
        put_tree(&mut out, &json, 0).ok()?;
        Some(out)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The tree being written. A container's count comes before its elements but is known
/// only after them: `counts` holds (position, count) for every array and object in the
/// order they start, and [`Enc::finish`] writes the counts in while copying once.
struct Enc {
    out: Vec<u8>,
    counts: Vec<(usize, u64)>,
    /// Where in `out` the keys of the objects being written are (each key's whole `name`
    /// encoding: equal keys have equal encodings), innermost object's last: one stack for
    /// all objects rather than a list per object.
    keys: Vec<(usize, usize)>,
    /// Whether the text holds what the tree path would write differently (a repeated
    /// key): [`read_text`] reads on for its seed, but gives no tree.
    declined: bool,
}

impl Enc {
    fn new(text_len: usize) -> Enc {
        // Room for a small query's containers and keys without growing: the bench's
        // transfer has 77 containers and at most 21 keys of open objects.
        let containers = (text_len / 8).min(1024);
        Enc {
            out: Vec::with_capacity(text_len),
            counts: Vec::with_capacity(containers),
            keys: Vec::with_capacity(32),
            declined: false,
        }
    }

    /// Are the keys from `keys[base..]` (one object's) distinct?
    fn distinct(&self, base: usize) -> bool {
        super::all_distinct(&self.keys[base..], |&(from, to)| &self.out[from..to])
    }

    fn finish(self) -> Vec<u8> {
        if self.counts.is_empty() {
            return self.out;
        }
        let mut done = Vec::with_capacity(self.out.len() + 2 * self.counts.len());
        let mut from = 0;
        for (pos, n) in self.counts {
            done.extend_from_slice(&self.out[from..pos]);
            put_varint(&mut done, n);
            from = pos;
        }
        done.extend_from_slice(&self.out[from..]);
        done
    }

    /// Start a container with tag `tag`; its count goes in at the returned slot.
    fn open(&mut self, tag: u8) -> usize {
        self.out.push(tag);
        self.counts.push((self.out.len(), 0));
        self.counts.len() - 1
    }
}

fn decline<E: de::Error>() -> E {
    E::custom("declined")
}

struct Node<'e> {
    enc: &'e mut Enc,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.enc.out.push(0x00);
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<(), E> {
        self.enc.out.push(0x01 + b as u8);
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<(), E> {
        put_int(&mut self.enc.out, n);
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<(), E> {
        match i64::try_from(n) {
            Ok(i) => self.visit_i64(i),
            Err(_) => {
                self.enc.out.push(0x04);
                self.enc.out.extend_from_slice(&n.to_be_bytes());
                Ok(())
            }
        }
    }
    fn visit_f64<E: de::Error>(self, f: f64) -> Result<(), E> {
        // A JSON tree holds a non-finite float as null; serde_json never reads one.
        if !f.is_finite() {
            return Err(decline());
        }
        self.enc.out.push(0x05);
        self.enc.out.extend_from_slice(&f.to_bits().to_be_bytes());
        Ok(())
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        put_string(&mut self.enc.out, s);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let slot = self.enc.open(0x07);
        let mut n = 0u64;
        while seq.next_element_seed(Node { enc: &mut *self.enc })?.is_some() {
            n += 1;
        }
        self.enc.counts[slot].1 = n;
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let slot = self.enc.open(0x08);
        let base = self.enc.keys.len();
        while let Some(k) = map.next_key_seed(KeySeed)? {
            put_key(self.enc, &k);
            map.next_value_seed(Node { enc: &mut *self.enc })?;
        }
        if !self.enc.distinct(base) {
            return Err(decline());
        }
        self.enc.counts[slot].1 = (self.enc.keys.len() - base) as u64;
        self.enc.keys.truncate(base);
        Ok(())
    }
}

/// Read the JSON `text` once with `seed`, and write the `tree` encoding of what it reads:
/// `None` when the seed or serde_json fails (or text follows the value), else the seed's
/// value and the query's tree, or no tree when the text is one [`QueryTree::from_text`]
/// declines (see the module doc) and the caller must encode the record from the JSON tree.
///
/// The tree is the text's, byte for byte, only if the seed reads every value in full
/// (it must not skip anything with `IgnoredAny`: skipping reads no value to record).
/// Any seed that succeeds on serde_json's deserializer has done so for maps and
/// sequences, which serde_json refuses to leave unfinished; `tally_fql::expr::QuerySeed`
/// reads whole values where it ignores them (`RefSeed`), and the tests compare the trees
/// over a corpus.
pub fn read_text<'de, S: DeserializeSeed<'de>>(text: &'de [u8], seed: S) -> Option<(S::Value, Option<QueryTree>)> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let mut enc = Enc::new(text.len());
    let v = seed.deserialize(Tee { inner: &mut de, enc: &mut enc }).ok()?;
    de.end().ok()?;
    if enc.declined {
        return Some((v, None));
    }
    Some((v, Some(QueryTree(enc.finish()))))
}

/// A deserializer that hands what `inner` reads to its visitor and writes it to `enc`.
struct Tee<'e, D> {
    inner: D,
    enc: &'e mut Enc,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Tee<'_, D> {
    type Error = D::Error;

    // Every JSON value is read as what it is: the seed's visitor refuses what it did not
    // expect, as it would have from serde_json's own `deserialize_str` and the like.
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_any(TeeVisitor { inner: visitor, enc: self.enc })
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

/// A value's seed, its deserializer wrapped in a [`Tee`].
struct TeeSeed<'e, S> {
    inner: S,
    enc: &'e mut Enc,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for TeeSeed<'_, S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Tee { inner: d, enc: self.enc })
    }
}

/// The visitor of a value read through a [`Tee`]: writes the value (a container's tag
/// and its elements as they are read), then hands it on.
struct TeeVisitor<'e, V> {
    inner: V,
    enc: &'e mut Enc,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for TeeVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.expecting(f)
    }
    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.enc.out.push(0x00);
        self.inner.visit_unit()
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<V::Value, E> {
        self.enc.out.push(0x01 + b as u8);
        self.inner.visit_bool(b)
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<V::Value, E> {
        put_int(&mut self.enc.out, n);
        self.inner.visit_i64(n)
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<V::Value, E> {
        put_u64(&mut self.enc.out, n);
        self.inner.visit_u64(n)
    }
    fn visit_f64<E: de::Error>(self, f: f64) -> Result<V::Value, E> {
        // A JSON tree holds a non-finite float as null; serde_json never reads one.
        self.enc.declined |= !f.is_finite();
        put_f64(&mut self.enc.out, f);
        self.inner.visit_f64(f)
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<V::Value, E> {
        put_string(&mut self.enc.out, s);
        self.inner.visit_str(s)
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<V::Value, E> {
        put_string(&mut self.enc.out, s);
        self.inner.visit_borrowed_str(s)
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<V::Value, E> {
        put_string(&mut self.enc.out, &s);
        self.inner.visit_string(s)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let slot = self.enc.open(0x07);
        self.inner.visit_seq(TeeSeq { inner: seq, enc: self.enc, slot })
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let slot = self.enc.open(0x08);
        let base = self.enc.keys.len();
        let v = self.inner.visit_map(TeeMap { inner: map, enc: &mut *self.enc })?;
        if !self.enc.distinct(base) {
            self.enc.declined = true;
        }
        self.enc.counts[slot].1 = (self.enc.keys.len() - base) as u64;
        self.enc.keys.truncate(base);
        Ok(v)
    }
}

/// A sequence's elements, each read through a [`Tee`] and counted into its slot.
struct TeeSeq<'e, A> {
    inner: A,
    enc: &'e mut Enc,
    slot: usize,
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for TeeSeq<'_, A> {
    type Error = A::Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, A::Error> {
        let item = self.inner.next_element_seed(TeeSeed { inner: seed, enc: &mut *self.enc })?;
        self.enc.counts[self.slot].1 += item.is_some() as u64;
        Ok(item)
    }
    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// An object's entries: keys written and remembered for the distinct check (the
/// visitor of the object counts them), values read through a [`Tee`].
struct TeeMap<'e, A> {
    inner: A,
    enc: &'e mut Enc,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for TeeMap<'_, A> {
    type Error = A::Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        self.inner.next_key_seed(KeyTee { inner: seed, enc: &mut *self.enc })
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.next_value_seed(TeeSeed { inner: seed, enc: &mut *self.enc })
    }
    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// An object key's seed, its deserializer and visitor wrapped to write the key.
struct KeyTee<'e, K> {
    inner: K,
    enc: &'e mut Enc,
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for KeyTee<'_, K> {
    type Value = K::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<K::Value, D::Error> {
        self.inner.deserialize(KeyDe { inner: d, enc: self.enc })
    }
}

/// The deserializer of an object key. A JSON key is a string whichever way it is asked
/// for; it is asked for as a string (`KeySeed`) or as anything (a JSON tree's map).
struct KeyDe<'e, D> {
    inner: D,
    enc: &'e mut Enc,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for KeyDe<'_, D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_any(KeyVisitor { inner: visitor, enc: self.enc })
    }
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_str(KeyVisitor { inner: visitor, enc: self.enc })
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_string(KeyVisitor { inner: visitor, enc: self.enc })
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

struct KeyVisitor<'e, V> {
    inner: V,
    enc: &'e mut Enc,
}

/// Write an object's `key` and remember where its encoding is.
fn put_key(enc: &mut Enc, key: &str) {
    let start = enc.out.len();
    put_name(&mut enc.out, key);
    enc.keys.push((start, enc.out.len()));
}

impl<'de, V: Visitor<'de>> Visitor<'de> for KeyVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.expecting(f)
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<V::Value, E> {
        put_key(self.enc, s);
        self.inner.visit_str(s)
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<V::Value, E> {
        put_key(self.enc, s);
        self.inner.visit_borrowed_str(s)
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<V::Value, E> {
        put_key(self.enc, &s);
        self.inner.visit_string(s)
    }
}

/// `put_tree`'s encoding of a number, as serde_json hands it over.
fn put_u64(out: &mut Vec<u8>, n: u64) {
    match i64::try_from(n) {
        Ok(i) => put_int(out, i),
        Err(_) => {
            out.push(0x04);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

fn put_f64(out: &mut Vec<u8>, f: f64) {
    out.push(0x05);
    out.extend_from_slice(&f.to_bits().to_be_bytes());
}

/// `put_tree`'s encoding of a tape's value.
fn put_node(out: &mut Vec<u8>, n: TapeNode<'_, '_>) {
    match n.tok() {
        Tok::Null => out.push(0x00),
        Tok::Bool(b) => out.push(0x01 + b as u8),
        Tok::Long(i) => put_int(out, i),
        Tok::BigU64(u) => put_u64(out, u),
        Tok::Double(f) => put_f64(out, f),
        Tok::Str(s) => put_string(out, s),
        Tok::Array { len, .. } => {
            out.push(0x07);
            put_varint(out, u64::from(len));
            for e in n.elements() {
                put_node(out, e);
            }
        }
        Tok::Object { len, .. } => {
            out.push(0x08);
            put_varint(out, u64::from(len));
            for (k, v) in n.entries() {
                put_name(out, k);
                put_node(out, v);
            }
        }
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.push(0x06);
    put_name(out, s);
}

#[cfg(test)]
mod tests {
    use super::super::{decode_input, encode_input, encode_input_with_tree, TxnInput};
    use super::QueryTree;

    fn input(q: serde_json::Value) -> TxnInput {
        TxnInput {
            q,
            db: 7,
            role: "server".into(),
            entropy: [3; 32],
            steps_max: 1000,
            identity: Some(serde_json::json!({"@ref": {"id": "1"}})),
            token: None,
            jwt: None,
        }
    }

    /// The record from the text is the record from the text's JSON tree, byte for byte,
    /// and decodes to that tree; `false` when the text path declined.
    fn same_record(text: &str) -> bool {
        let Some(tree) = QueryTree::from_text(text.as_bytes()) else { return false };
        let q: serde_json::Value = tally_value::parse_json_unbounded(text.as_bytes()).expect("taken text is JSON");
        let via_tree = encode_input(&input(q.clone())).expect("encodes");
        let via_text = encode_input_with_tree(&input(serde_json::Value::Null), &tree).expect("encodes");
        assert_eq!(via_text, via_tree, "{text}");
        assert_eq!(decode_input(&via_text).map(|i| i.q), Ok(q), "{text}");
        true
    }

    #[test]
    fn records_from_text_are_the_records_from_trees() {
        let many = format!("[{}]", (0..300).map(|i| i.to_string()).collect::<Vec<_>>().join(","));
        let wide = format!(
            "{{{}}}",
            (0..200).map(|i| format!("\"k{i}\":[{i},{{\"n\":{many}}}]")).collect::<Vec<_>>().join(",")
        );
        let taken = [
            "null",
            "true",
            "[false]",
            "[1,-1,0,-0,1.0,1e3,-1.5e300,9223372036854775807,9223372036854775808,18446744073709551615]",
            "[18446744073709551616,-9223372036854775808,-9223372036854775809,0.1,5e-324]",
            r#""\u00e9\n\"\\ \ud83d\ude00""#,
            r#"{"g\u0065t":{"@ref":{"id":"1","collection":{"@ref":{"id":"c"}}}},"b":{}}"#,
            r#"{"let":[{"a":1},{"b":[]}],"in":{"object":{"password2":"x"}}}"#,
            " [ 1 , { \"a\" : 2 } ] ",
            &many,
            &wide,
            &format!("{}1{}", "[".repeat(127), "]".repeat(127)),
            &format!("{}{}", "{\"a\":".repeat(100), "1".to_string() + &"}".repeat(100)),
        ];
        for text in taken {
            assert!(same_record(text), "declined {text}");
        }
    }

    #[test]
    fn texts_whose_record_it_cannot_write_alike_are_declined() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let many_dups =
            format!("{{{}}}", (0..40).map(|i| format!("\"k{}\":{i}", i % 39)).collect::<Vec<_>>().join(","));
        for text in ["", "{", "[1,]", "1 x", "1e400", r#"{"a":1,"a":2}"#, r#"[{"a":{"b":1,"b":1}}]"#, &deep, &many_dups]
        {
            assert!(!same_record(text), "took {text}");
        }
    }
}
