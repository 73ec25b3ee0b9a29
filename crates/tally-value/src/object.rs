//! [`Object`]: an FQL object's fields, in canonical (byte-wise) key order.
//!
//! Most objects a query touches are small: a document's `ref`, `ts` and `data`, a `data`
//! of a few fields, a write's params. A `BTreeMap<String, Value>` allocated a node sized
//! for eleven entries and a string for every key of each of them, and walked node
//! handles on every step. Here an object of up to [`SMALL_MAX`] fields is one sorted
//! `Vec` (one allocation of its entries; a short one is scanned, a longer one bisected),
//! a key of up to 24 bytes is held inline ([`Key`]), and a larger object is a
//! `BTreeMap`, so building or merging a large one never shifts a `Vec`'s tail per field.
//!
//! Both forms keep keys unique and iterate in ascending byte order, so which form an
//! object has is never visible: equality, iteration, encoding and hashing are the same.

use std::collections::{btree_map, BTreeMap};
use std::fmt;

use crate::Value;

/// A field name. Most are short enough to be held inline, without an allocation.
pub type Key = compact_str::CompactString;

/// The most fields an object keeps in its sorted `Vec`; one more moves it to a `BTreeMap`.
pub const SMALL_MAX: usize = 32;

/// An FQL object: keys in canonical (byte-wise) order, so every rendering and hash of
/// the same object is identical on every replica.
#[derive(Clone)]
pub struct Object(Repr);

#[derive(Clone)]
enum Repr {
    /// Sorted by key, keys unique, at most `SMALL_MAX` entries.
    Small(Vec<(Key, Value)>),
    Large(BTreeMap<Key, Value>),
}

impl Default for Object {
    fn default() -> Self {
        Object::new()
    }
}

impl Object {
    pub const fn new() -> Self {
        Object(Repr::Small(Vec::new()))
    }

    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Small(v) => v.len(),
            Repr::Large(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn find(v: &[(Key, Value)], key: &str) -> Result<usize, usize> {
        v.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    /// Where `key` is, if anywhere. Most objects hold a handful of fields, and comparing
    /// for equality checks the lengths before any bytes, so a short one is scanned.
    fn position(v: &[(Key, Value)], key: &str) -> Option<usize> {
        if v.len() <= 8 {
            v.iter().position(|(k, _)| k.as_str() == key)
        } else {
            Self::find(v, key).ok()
        }
    }

    pub fn get<K: AsRef<str> + ?Sized>(&self, key: &K) -> Option<&Value> {
        let key = key.as_ref();
        match &self.0 {
            Repr::Small(v) => Self::position(v, key).map(|i| &v[i].1),
            Repr::Large(m) => m.get(key),
        }
    }

    pub fn get_mut<K: AsRef<str> + ?Sized>(&mut self, key: &K) -> Option<&mut Value> {
        let key = key.as_ref();
        match &mut self.0 {
            Repr::Small(v) => Self::position(v, key).map(|i| &mut v[i].1),
            Repr::Large(m) => m.get_mut(key),
        }
    }

    pub fn contains_key<K: AsRef<str> + ?Sized>(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`, giving back the value it replaces.
    pub fn insert(&mut self, key: Key, value: Value) -> Option<Value> {
        match &mut self.0 {
            Repr::Small(v) => {
                // Fields mostly arrive in order (decoding, rendering): append without a search.
                let at = match v.last() {
                    Some((last, _)) if last.as_str() < key.as_str() => v.len(),
                    None => 0,
                    _ => match Self::find(v, &key) {
                        Ok(i) => return Some(std::mem::replace(&mut v[i].1, value)),
                        Err(i) => i,
                    },
                };
                if v.len() < SMALL_MAX {
                    v.insert(at, (key, value));
                } else {
                    let mut m: BTreeMap<Key, Value> = std::mem::take(v).into_iter().collect();
                    m.insert(key, value);
                    self.0 = Repr::Large(m);
                }
                None
            }
            Repr::Large(m) => m.insert(key, value),
        }
    }

    pub fn remove<K: AsRef<str> + ?Sized>(&mut self, key: &K) -> Option<Value> {
        let key = key.as_ref();
        match &mut self.0 {
            Repr::Small(v) => Self::position(v, key).map(|i| v.remove(i).1),
            Repr::Large(m) => m.remove(key),
        }
    }

    /// Keeps only the fields for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&Key, &mut Value) -> bool) {
        match &mut self.0 {
            Repr::Small(v) => v.retain_mut(|(k, x)| keep(k, x)),
            Repr::Large(m) => m.retain(|k, x| keep(k, x)),
        }
    }

    pub fn first_key_value(&self) -> Option<(&Key, &Value)> {
        self.iter().next()
    }

    pub fn last_key_value(&self) -> Option<(&Key, &Value)> {
        self.iter().next_back()
    }

    pub fn iter(&self) -> Iter<'_> {
        Iter(match &self.0 {
            Repr::Small(v) => IterRepr::Small(v.iter()),
            Repr::Large(m) => IterRepr::Large(m.iter()),
        })
    }

    pub fn iter_mut(&mut self) -> IterMut<'_> {
        IterMut(match &mut self.0 {
            Repr::Small(v) => IterMutRepr::Small(v.iter_mut()),
            Repr::Large(m) => IterMutRepr::Large(m.iter_mut()),
        })
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &Key> + ExactSizeIterator + Clone {
        self.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Value> + ExactSizeIterator + Clone {
        self.iter().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut Value> + ExactSizeIterator {
        self.iter_mut().map(|(_, v)| v)
    }

    fn from_sorted_unique(entries: Vec<(Key, Value)>) -> Object {
        if entries.len() <= SMALL_MAX {
            Object(Repr::Small(entries))
        } else {
            Object(Repr::Large(entries.into_iter().collect()))
        }
    }

    /// Sorts `entries` by key and keeps, of a key given more than once, its last value
    /// (as inserting them one after another would).
    fn from_unsorted(mut entries: Vec<(Key, Value)>) -> Object {
        if !entries.windows(2).all(|w| w[0].0 < w[1].0) {
            // Stable, so equal keys stay in the order given; the last of each run wins.
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out: Vec<(Key, Value)> = Vec::with_capacity(entries.len());
            for e in entries {
                match out.last_mut() {
                    Some(last) if last.0 == e.0 => *last = e,
                    _ => out.push(e),
                }
            }
            entries = out;
        }
        Self::from_sorted_unique(entries)
    }
}

impl PartialEq for Object {
    fn eq(&self, other: &Object) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl fmt::Debug for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: AsRef<str> + ?Sized> std::ops::Index<&K> for Object {
    type Output = Value;
    fn index(&self, key: &K) -> &Value {
        self.get(key).expect("no such field in the object")
    }
}

impl<K: Into<Key>> FromIterator<(K, Value)> for Object {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Object {
        Object::from_unsorted(iter.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

impl<const N: usize> From<[(Key, Value); N]> for Object {
    fn from(entries: [(Key, Value); N]) -> Object {
        entries.into_iter().collect()
    }
}

impl<K: Into<Key>> Extend<(K, Value)> for Object {
    fn extend<I: IntoIterator<Item = (K, Value)>>(&mut self, iter: I) {
        let iter = iter.into_iter().map(|(k, v)| (k.into(), v));
        match &mut self.0 {
            Repr::Large(m) => m.extend(iter),
            Repr::Small(v) if v.is_empty() => *self = iter.collect(),
            Repr::Small(_) => {
                // Existing fields first, then the new ones: the new win on a shared key.
                let mut all: Vec<(Key, Value)> = std::mem::take(self).into_iter().collect();
                all.extend(iter);
                *self = Object::from_unsorted(all);
            }
        }
    }
}

/// The fields of an [`Object`], by reference, in key order.
#[derive(Clone)]
pub struct Iter<'a>(IterRepr<'a>);

#[derive(Clone)]
enum IterRepr<'a> {
    Small(std::slice::Iter<'a, (Key, Value)>),
    Large(btree_map::Iter<'a, Key, Value>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a Key, &'a Value);
    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            IterRepr::Small(i) => i.next().map(|(k, v)| (k, v)),
            IterRepr::Large(i) => i.next(),
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.0 {
            IterRepr::Small(i) => i.size_hint(),
            IterRepr::Large(i) => i.size_hint(),
        }
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            IterRepr::Small(i) => i.next_back().map(|(k, v)| (k, v)),
            IterRepr::Large(i) => i.next_back(),
        }
    }
}

impl ExactSizeIterator for Iter<'_> {}

/// The fields of an [`Object`], values mutable, in key order.
pub struct IterMut<'a>(IterMutRepr<'a>);

enum IterMutRepr<'a> {
    Small(std::slice::IterMut<'a, (Key, Value)>),
    Large(btree_map::IterMut<'a, Key, Value>),
}

impl<'a> Iterator for IterMut<'a> {
    type Item = (&'a Key, &'a mut Value);
    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            IterMutRepr::Small(i) => i.next().map(|(k, v)| (&*k, v)),
            IterMutRepr::Large(i) => i.next(),
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.0 {
            IterMutRepr::Small(i) => i.size_hint(),
            IterMutRepr::Large(i) => i.size_hint(),
        }
    }
}

impl DoubleEndedIterator for IterMut<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            IterMutRepr::Small(i) => i.next_back().map(|(k, v)| (&*k, v)),
            IterMutRepr::Large(i) => i.next_back(),
        }
    }
}

impl ExactSizeIterator for IterMut<'_> {}

/// The fields of an [`Object`], moved out, in key order.
pub struct IntoIter(IntoIterRepr);

enum IntoIterRepr {
    Small(std::vec::IntoIter<(Key, Value)>),
    Large(btree_map::IntoIter<Key, Value>),
}

impl Iterator for IntoIter {
    type Item = (Key, Value);
    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            IntoIterRepr::Small(i) => i.next(),
            IntoIterRepr::Large(i) => i.next(),
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.0 {
            IntoIterRepr::Small(i) => i.size_hint(),
            IntoIterRepr::Large(i) => i.size_hint(),
        }
    }
}

impl DoubleEndedIterator for IntoIter {
    fn next_back(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            IntoIterRepr::Small(i) => i.next_back(),
            IntoIterRepr::Large(i) => i.next_back(),
        }
    }
}

impl ExactSizeIterator for IntoIter {}

impl IntoIterator for Object {
    type Item = (Key, Value);
    type IntoIter = IntoIter;
    fn into_iter(self) -> IntoIter {
        IntoIter(match self.0 {
            Repr::Small(v) => IntoIterRepr::Small(v.into_iter()),
            Repr::Large(m) => IntoIterRepr::Large(m.into_iter()),
        })
    }
}

impl<'a> IntoIterator for &'a Object {
    type Item = (&'a Key, &'a Value);
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for &'a mut Object {
    type Item = (&'a Key, &'a mut Value);
    type IntoIter = IterMut<'a>;
    fn into_iter(self) -> IterMut<'a> {
        self.iter_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> Key {
        compact_str::format_compact!("k{i:05}")
    }

    /// Every operation, on objects below and above `SMALL_MAX`, against a `BTreeMap` model.
    #[test]
    fn behaves_as_an_ordered_map() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for span in [3, 20, SMALL_MAX, SMALL_MAX + 1, 80, 400] {
            let mut o = Object::new();
            let mut m: BTreeMap<Key, Value> = BTreeMap::new();
            for step in 0..4 * span {
                let k = key(next(span));
                match next(5) {
                    0..=2 => {
                        assert_eq!(
                            o.insert(k.clone(), Value::Long(step as i64)),
                            m.insert(k.clone(), Value::Long(step as i64))
                        )
                    }
                    3 => assert_eq!(o.remove(&k), m.remove(&k)),
                    _ => {
                        if let Some(Value::Long(n)) = o.get_mut(&k) {
                            *n += 1;
                        }
                        if let Some(Value::Long(n)) = m.get_mut(&k) {
                            *n += 1;
                        }
                    }
                }
                assert_eq!(o.len(), m.len());
                assert_eq!(o.get(&k), m.get(&k));
            }
            assert!(o.iter().eq(m.iter()), "span {span}");
            assert!(o.iter().rev().eq(m.iter().rev()), "span {span}");
            assert_eq!(o.first_key_value(), m.first_key_value());
            assert_eq!(o.last_key_value(), m.last_key_value());
            assert_eq!(o.clone().into_iter().collect::<Vec<_>>(), m.clone().into_iter().collect::<Vec<_>>());
            o.retain(|k, _| k.ends_with('1'));
            m.retain(|k, _| k.ends_with('1'));
            assert!(o.iter().eq(m.iter()));
        }
    }

    #[test]
    fn collecting_sorts_and_the_last_of_a_key_wins() {
        for n in [5, SMALL_MAX + 5] {
            let pairs: Vec<(Key, Value)> =
                (0..n).rev().chain(0..n).map(|i| (key(i % n), Value::Long(i as i64))).collect();
            let o: Object = pairs.clone().into_iter().collect();
            let m: BTreeMap<Key, Value> = pairs.into_iter().collect();
            assert!(o.iter().eq(m.iter()));
            let mut e = Object::from([(key(1), Value::Null), (key(n + 1), Value::Null)]);
            e.extend((0..n).map(|i| (key(i), Value::Long(7))));
            assert_eq!(e.len(), n + 1);
            assert_eq!(e.get(&key(1)), Some(&Value::Long(7)));
            assert!(e.keys().zip(e.keys().skip(1)).all(|(a, b)| a < b));
        }
    }

    #[test]
    fn the_two_forms_are_equal_when_their_fields_are() {
        let small: Object = (0..4).map(|i| (key(i), Value::Long(i as i64))).collect();
        let mut grown: Object = (0..SMALL_MAX + 1).map(|i| (key(i), Value::Long(i as i64))).collect();
        grown.retain(|k, _| k.as_str() < key(4).as_str());
        assert!(matches!(grown.0, Repr::Large(_)));
        assert!(matches!(small.0, Repr::Small(_)));
        assert_eq!(small, grown);
    }

    /// The two forms cost one word of tag, and `Value` stays five words.
    #[test]
    fn sizes() {
        assert_eq!(std::mem::size_of::<Object>(), 32);
        assert_eq!(std::mem::size_of::<Value>(), 40);
    }

    /// Building a large object one field at a time in descending order stays fast (the
    /// form moves to a `BTreeMap` instead of shifting a `Vec`'s tail per field).
    #[test]
    fn large_objects_take_fields_in_any_order() {
        let mut o = Object::new();
        for i in (0..200_000).rev() {
            o.insert(key(i), Value::Null);
        }
        assert_eq!(o.len(), 200_000);
        assert_eq!(o.first_key_value().map(|(k, _)| k.clone()), Some(key(0)));
    }
}
