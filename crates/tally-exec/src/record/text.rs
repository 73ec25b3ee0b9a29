//! A query's JSON text straight to the record's `tree` encoding, without a
//! `serde_json::Value` tree: the receiving node encodes the logged query from the request
//! body it already holds (docs/record.md: the query is "the query's JSON AST").
//!
//! The bytes must be exactly what `put_tree` writes for the text's JSON tree, so
//! [`QueryTree::from_text`] declines (`None`) what it cannot write the same way: malformed JSON,
//! an object with a repeated key (the tree keeps the last value in the first one's
//! place), nesting past serde_json's 128 levels. The caller then builds the tree.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::{put_str, put_tree, put_varint};
use tally_fql::expr::KeySeed;

/// A query in the record's `tree` encoding, ready to follow the record's other fields
/// (`super::encode_input_with_tree`).
pub struct QueryTree(pub(super) Vec<u8>);

impl QueryTree {
    /// The `tree` encoding of the JSON `text`, or `None` (see the module doc).
    pub fn from_text(text: &[u8]) -> Option<QueryTree> {
        let mut de = serde_json::Deserializer::from_slice(text);
        let mut enc = Enc { out: Vec::with_capacity(text.len()), counts: Vec::new(), keys: Vec::new() };
        Node { enc: &mut enc }.deserialize(&mut de).ok()?;
        de.end().ok()?;
        let tree = enc.finish();
        debug_assert_eq!(Some(&tree), QueryTree::from_json_text_via_tree(text).as_ref());
        Some(QueryTree(tree))
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
    /// Where in `out` the keys of the objects being written are, innermost object's
    /// last: one stack for all objects rather than a list per object.
    keys: Vec<(usize, usize)>,
}

impl Enc {
    /// Are the keys from `keys[base..]` (one object's) distinct?
    fn distinct(&self, base: usize) -> bool {
        let keys = &self.keys[base..];
        let key = |&(from, to): &(usize, usize)| &self.out[from..to];
        if keys.len() <= 16 {
            return keys.iter().enumerate().all(|(i, k)| keys[..i].iter().all(|x| key(x) != key(k)));
        }
        let mut sorted: Vec<&[u8]> = keys.iter().map(key).collect();
        sorted.sort_unstable();
        sorted.windows(2).all(|w| w[0] != w[1])
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
        self.enc.out.push(0x03);
        self.enc.out.extend_from_slice(&n.to_be_bytes());
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
        self.enc.out.push(0x06);
        put_str(&mut self.enc.out, s);
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
            put_str(&mut self.enc.out, &k);
            let end = self.enc.out.len();
            self.enc.keys.push((end - k.len(), end));
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
