//! A record's `tree` encoding as a serde deserializer, for [`super::decode_input_expr`]:
//! the query handed to `tally_fql::expr::QuerySeed` as serde_json would hand over the
//! text of the same JSON tree, so the seed builds the expression it builds from the text.
//!
//! What serde_json presents, and so what this presents: `null` as a unit, a non-negative
//! integer as a `u64` and a negative one as an `i64` (the tree's tag 0x03 holds both), a
//! string as a borrowed `str`, arrays and objects as sequences and maps with their length.
//!
//! It refuses everything [`super::Reader::tree`] refuses (bad tag, truncation, bad UTF-8,
//! a repeated key, depth, a `u64` that fits an `i64`, a non-finite float), a tree deeper
//! than serde_json reads, and a container its visitor left unfinished (serde_json refuses
//! that of text too). Every
//! refusal is the one error [`Declined`]: the caller then takes the reference path, which
//! reports the record's own error.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::forward_to_deserialize_any;

use super::Reader;

/// Deepest tree read here: serde_json's recursion limit, which is what bounds the seed's
/// recursion on the receiving node. Deeper ones (the record allows
/// [`super::TREE_DEPTH_MAX`]) are declined and take the reference path, which walks them
/// as it always did.
const DEPTH_MAX: usize = 128;

/// "Take the reference path."
#[derive(Debug)]
pub(super) struct Declined;

impl fmt::Display for Declined {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("declined")
    }
}

impl std::error::Error for Declined {}

impl de::Error for Declined {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Declined
    }
}

/// One value of the tree, read from `r`.
pub(super) struct TreeDe<'r, 'de> {
    r: &'r mut Reader<'de>,
    depth: usize,
}

impl<'r, 'de> TreeDe<'r, 'de> {
    pub(super) fn new(r: &'r mut Reader<'de>) -> Self {
        TreeDe { r, depth: 0 }
    }
}

impl<'de> Deserializer<'de> for TreeDe<'_, 'de> {
    type Error = Declined;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        if self.depth >= DEPTH_MAX {
            return Err(Declined);
        }
        let r = self.r;
        match r.u8().map_err(|_| Declined)? {
            0x00 => visitor.visit_unit(),
            0x01 => visitor.visit_bool(false),
            0x02 => visitor.visit_bool(true),
            0x03 => {
                let i = r.int().map_err(|_| Declined)?;
                if i >= 0 {
                    visitor.visit_u64(i as u64)
                } else {
                    visitor.visit_i64(i)
                }
            }
            0x04 => match r.u64().map_err(|_| Declined)? {
                u if u > i64::MAX as u64 => visitor.visit_u64(u),
                _ => Err(Declined),
            },
            0x05 => match f64::from_bits(r.u64().map_err(|_| Declined)?) {
                f if f.is_finite() => visitor.visit_f64(f),
                _ => Err(Declined),
            },
            0x06 => visitor.visit_borrowed_str(r.name().map_err(|_| Declined)?),
            0x07 => {
                let left = r.len().map_err(|_| Declined)? as usize;
                let mut seq = Seq { r, depth: self.depth + 1, left };
                let out = visitor.visit_seq(&mut seq)?;
                if seq.left != 0 {
                    return Err(Declined);
                }
                Ok(out)
            }
            0x08 => {
                let left = r.len().map_err(|_| Declined)? as usize;
                let mut map = Map { r, depth: self.depth + 1, left, keys: Vec::new(), value_due: false };
                let out = visitor.visit_map(&mut map)?;
                // A repeated key is found once the object is read: what the visitor built
                // from it is thrown away with the rest of this path's work.
                if map.left != 0 || map.value_due || !super::all_distinct(&map.keys, |k| *k) {
                    return Err(Declined);
                }
                Ok(out)
            }
            _ => Err(Declined),
        }
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct Seq<'r, 'de> {
    r: &'r mut Reader<'de>,
    depth: usize,
    left: usize,
}

impl<'de> SeqAccess<'de> for Seq<'_, 'de> {
    type Error = Declined;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Declined> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(TreeDe { r: self.r, depth: self.depth }).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

struct Map<'r, 'de> {
    r: &'r mut Reader<'de>,
    depth: usize,
    left: usize,
    /// The keys read so far.
    keys: Vec<&'de str>,
    /// A key was read and its value not yet.
    value_due: bool,
}

impl<'de> MapAccess<'de> for Map<'_, 'de> {
    type Error = Declined;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Declined> {
        if self.value_due {
            return Err(Declined);
        }
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let k = self.r.name().map_err(|_| Declined)?;
        self.keys.push(k);
        self.value_due = true;
        seed.deserialize(de::value::BorrowedStrDeserializer::new(k)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Declined> {
        if !self.value_due {
            return Err(Declined);
        }
        self.value_due = false;
        seed.deserialize(TreeDe { r: self.r, depth: self.depth })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}
