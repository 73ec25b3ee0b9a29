//! Canonical binary encoding of values: one byte string per value, used for storage keys,
//! stored documents and hashing.
//!
//! The encoding is self-delimiting (values can be concatenated into tuples) and
//! order-preserving: for any two values, the byte order of their encodings equals
//! [`crate::compare`] (with one documented exception: a long beyond 2^53 and a double that
//! rounds to the same f64 order long-first regardless of value). Layout, by type tag:
//!
//! | tag  | type    | payload                                                        |
//! |------|---------|----------------------------------------------------------------|
//! | 0x10 | number  | f64 order bytes (8), then 0x01 + i64 order bytes (long) or 0x02 (double) |
//! | 0x20 | bytes   | escaped bytes                                                  |
//! | 0x30 | string  | escaped UTF-8                                                  |
//! | 0x40 | array   | elements, then 0x00                                            |
//! | 0x50 | object  | (escaped key, value)* in key order, then 0x00                  |
//! | 0x60 | ref     | collection (0x00, or 0x01 + ref payload), id (0x01 + u64 BE if numeric, else 0x02 + escaped), database (0x00 / 0x01 + ref payload) |
//! | 0x70 | set     | value                                                          |
//! | 0x80 | query   | value                                                          |
//! | 0x90 | time    | i64 seconds order bytes, u32 nanos BE                          |
//! | 0xA0 | date    | i32 days-from-CE order bytes                                   |
//! | 0xB0 | boolean | 0x00 / 0x01                                                    |
//! | 0xC0 | null    | —                                                              |
//!
//! "Escaped" = every 0x00 byte becomes 0x00 0xFF, terminated by 0x00 0x01. "Order bytes"
//! = big-endian with the sign bit flipped (for f64: all bits flipped when negative).

use std::sync::Arc;

use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use compact_str::{CompactString, ToCompactString};

use crate::order::numeric_id;
use crate::value::{Object, Ref, Value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("encoded value is truncated")]
    Truncated,
    #[error("unknown type tag 0x{0:02x} in encoded value")]
    BadTag(u8),
    #[error("encoded value is malformed: {0}")]
    Malformed(&'static str),
}

/// Deepest value `decode` accepts; writers keep stored values well below it.
pub const DECODE_DEPTH_MAX: usize = 4096;

const T_NUM: u8 = 0x10;
const T_BYTES: u8 = 0x20;
const T_STR: u8 = 0x30;
const T_ARR: u8 = 0x40;
const T_OBJ: u8 = 0x50;
const T_REF: u8 = 0x60;
const T_SET: u8 = 0x70;
const T_QUERY: u8 = 0x80;
const T_TIME: u8 = 0x90;
const T_DATE: u8 = 0xA0;
const T_BOOL: u8 = 0xB0;
const T_NULL: u8 = 0xC0;

pub fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    encode_into(&mut out, v);
    out
}

fn f64_order(d: f64) -> [u8; 8] {
    let d = if d.is_nan() {
        f64::NAN
    } else if d == 0.0 {
        0.0
    } else {
        d
    };
    let bits = d.to_bits();
    let bits = if bits >> 63 == 1 { !bits } else { bits ^ (1 << 63) };
    bits.to_be_bytes()
}

fn f64_from_order(b: [u8; 8]) -> f64 {
    let bits = u64::from_be_bytes(b);
    let bits = if bits >> 63 == 1 { bits ^ (1 << 63) } else { !bits };
    f64::from_bits(bits)
}

fn escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    // Whole runs between 0x00 bytes are copied at once: most strings have none.
    out.reserve(bytes.len() + 2);
    let mut rest = bytes;
    while let Some(i) = memchr::memchr(0, rest) {
        out.extend_from_slice(&rest[..=i]);
        out.push(0xFF);
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    out.extend_from_slice(&[0x00, 0x01]);
}

pub fn encode_into(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Long(n) => {
            out.push(T_NUM);
            out.extend_from_slice(&f64_order(*n as f64));
            out.push(0x01);
            out.extend_from_slice(&((*n as u64) ^ (1 << 63)).to_be_bytes());
        }
        Value::Double(d) => {
            out.push(T_NUM);
            out.extend_from_slice(&f64_order(*d));
            out.push(0x02);
        }
        Value::Bytes(b) => {
            out.push(T_BYTES);
            escaped(out, b);
        }
        Value::String(s) => {
            out.push(T_STR);
            escaped(out, s.as_bytes());
        }
        Value::Array(items) => {
            out.push(T_ARR);
            for i in items {
                encode_into(out, i);
            }
            out.push(0x00);
        }
        Value::Object(o) => {
            out.push(T_OBJ);
            for (k, v) in o {
                // Keys are never empty-tagged: an escaped key starts with its first byte or
                // the 0x00 0x01 terminator; prefix it with 0x01 so 0x00 can end the object.
                out.push(0x01);
                escaped(out, k.as_bytes());
                encode_into(out, v);
            }
            out.push(0x00);
        }
        Value::Ref(r) => {
            out.push(T_REF);
            encode_ref(out, r);
        }
        Value::Set(s) => {
            out.push(T_SET);
            encode_into(out, s);
        }
        Value::Query(q) => {
            out.push(T_QUERY);
            encode_into(out, q);
        }
        Value::Time(t) => {
            out.push(T_TIME);
            out.extend_from_slice(&((t.timestamp() as u64) ^ (1 << 63)).to_be_bytes());
            out.extend_from_slice(&t.timestamp_subsec_nanos().to_be_bytes());
        }
        Value::Date(d) => {
            out.push(T_DATE);
            out.extend_from_slice(&((d.num_days_from_ce() as u32) ^ (1 << 31)).to_be_bytes());
        }
        Value::Bool(b) => {
            out.push(T_BOOL);
            out.push(*b as u8);
        }
        Value::Null => out.push(T_NULL),
    }
}

fn encode_ref(out: &mut Vec<u8>, r: &Ref) {
    match &r.collection {
        None => out.push(0x00),
        Some(c) => {
            out.push(0x01);
            encode_ref(out, c);
        }
    }
    match numeric_id(&r.id) {
        Some(n) => {
            out.push(0x01);
            out.extend_from_slice(&n.to_be_bytes());
        }
        None => {
            out.push(0x02);
            escaped(out, r.id.as_bytes());
        }
    }
    match &r.database {
        None => out.push(0x00),
        Some(d) => {
            out.push(0x01);
            encode_ref(out, d);
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self.buf.get(self.pos).ok_or(CodecError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }
    fn take<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let s = self.buf.get(self.pos..self.pos + N).ok_or(CodecError::Truncated)?;
        self.pos += N;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn unescape(&mut self) -> Result<Vec<u8>, CodecError> {
        // The first run is usually the whole string: it is sized before anything is copied.
        let mut out = Vec::new();
        loop {
            let rest = &self.buf[self.pos..];
            let Some(i) = memchr::memchr(0, rest) else {
                self.pos = self.buf.len();
                return Err(CodecError::Truncated);
            };
            if out.is_empty() {
                out.reserve_exact(i);
            }
            out.extend_from_slice(&rest[..i]);
            self.pos += i + 1;
            match self.byte()? {
                0xFF => out.push(0),
                0x01 => return Ok(out),
                _ => return Err(CodecError::Malformed("bad escape")),
            }
        }
    }
    fn string(&mut self) -> Result<String, CodecError> {
        String::from_utf8(self.unescape()?).map_err(|_| CodecError::Malformed("invalid UTF-8"))
    }
    /// [`Reader::string`] as a ref id or an object's key: a short one is held inline,
    /// with no allocation.
    fn compact(&mut self) -> Result<CompactString, CodecError> {
        // Found without checking, then checked once as [`Reader::string`] checks: an
        // unescaped id is its own bytes; an escaped one (rare) is unescaped again.
        let start = self.pos;
        let (bytes, escaped) = self.skip_escaped(false)?;
        if !escaped {
            let text = std::str::from_utf8(bytes).map_err(|_| CodecError::Malformed("invalid UTF-8"))?;
            return Ok(CompactString::new(text));
        }
        self.pos = start;
        self.string().map(CompactString::from)
    }
    /// Past an escaped byte string, refusing what [`Reader::unescape`] (and, with `utf8`,
    /// [`Reader::string`]) refuses, with the same error; nothing is copied. Returns the
    /// escaped bytes before the terminator and whether any 0x00 was escaped in them.
    fn skip_escaped(&mut self, utf8: bool) -> Result<(&'a [u8], bool), CodecError> {
        let start = self.pos;
        // UTF-8 is checked a run between two escaped 0x00s at a time: 0x00 is a character
        // of its own, so no character spans one, and the whole string is valid exactly
        // when every run is.
        let mut run = start;
        let mut valid = true;
        let mut escaped = false;
        loop {
            let Some(i) = memchr::memchr(0, &self.buf[self.pos..]) else {
                self.pos = self.buf.len();
                return Err(CodecError::Truncated);
            };
            self.pos += i + 1;
            let end = self.pos - 1;
            valid &= !utf8 || std::str::from_utf8(&self.buf[run..end]).is_ok();
            match self.byte()? {
                0xFF => {
                    escaped = true;
                    run = self.pos;
                }
                // As `string`: the escapes are checked to the end before the UTF-8 is.
                0x01 if !valid => return Err(CodecError::Malformed("invalid UTF-8")),
                0x01 => return Ok((&self.buf[start..end], escaped)),
                _ => return Err(CodecError::Malformed("bad escape")),
            }
        }
    }
    /// Past one value, refusing exactly what [`Reader::value`] refuses, with the same
    /// error, without building it.
    fn skip(&mut self, depth: usize) -> Result<(), CodecError> {
        if depth > DECODE_DEPTH_MAX {
            return Err(CodecError::Malformed("nesting too deep"));
        }
        match self.byte()? {
            T_NUM => {
                self.take::<8>()?;
                match self.byte()? {
                    0x01 => {
                        self.take::<8>()?;
                    }
                    0x02 => {}
                    _ => return Err(CodecError::Malformed("bad number kind")),
                }
            }
            T_BYTES => {
                self.skip_escaped(false)?;
            }
            T_STR => {
                self.skip_escaped(true)?;
            }
            T_ARR => {
                while self.buf.get(self.pos) != Some(&0) {
                    self.skip(depth + 1)?;
                }
                self.pos += 1;
            }
            T_OBJ => loop {
                match self.byte()? {
                    0x00 => break,
                    0x01 => {
                        self.skip_escaped(true)?;
                        self.skip(depth + 1)?;
                    }
                    _ => return Err(CodecError::Malformed("bad object entry")),
                }
            },
            T_REF => self.skip_reference(depth)?,
            T_SET | T_QUERY => self.skip(depth + 1)?,
            T_TIME => {
                let secs = (u64::from_be_bytes(self.take::<8>()?) ^ (1 << 63)) as i64;
                let nanos = u32::from_be_bytes(self.take::<4>()?);
                Utc.timestamp_opt(secs, nanos).single().ok_or(CodecError::Malformed("time out of range"))?;
            }
            T_DATE => {
                let days = (u32::from_be_bytes(self.take::<4>()?) ^ (1 << 31)) as i32;
                NaiveDate::from_num_days_from_ce_opt(days).ok_or(CodecError::Malformed("date out of range"))?;
            }
            T_BOOL => {
                self.byte()?;
            }
            T_NULL => {}
            other => return Err(CodecError::BadTag(other)),
        }
        Ok(())
    }
    /// [`Reader::reference`], skipped.
    fn skip_reference(&mut self, depth: usize) -> Result<(), CodecError> {
        if depth > 64 {
            return Err(CodecError::Malformed("ref nesting too deep"));
        }
        match self.byte()? {
            0x00 => {}
            0x01 => self.skip_reference(depth + 1)?,
            _ => return Err(CodecError::Malformed("bad ref collection")),
        }
        match self.byte()? {
            0x01 => {
                self.take::<8>()?;
            }
            0x02 => {
                self.skip_escaped(true)?;
            }
            _ => return Err(CodecError::Malformed("bad ref id")),
        }
        match self.byte()? {
            0x00 => {}
            0x01 => self.skip_reference(depth + 1)?,
            _ => return Err(CodecError::Malformed("bad ref database")),
        }
        Ok(())
    }
    fn value(&mut self, depth: usize) -> Result<Value, CodecError> {
        if depth > DECODE_DEPTH_MAX {
            return Err(CodecError::Malformed("nesting too deep"));
        }
        let tag = self.byte()?;
        Ok(match tag {
            T_NUM => {
                let f = f64_from_order(self.take::<8>()?);
                match self.byte()? {
                    0x01 => Value::Long((u64::from_be_bytes(self.take::<8>()?) ^ (1 << 63)) as i64),
                    0x02 => Value::Double(f),
                    _ => return Err(CodecError::Malformed("bad number kind")),
                }
            }
            T_BYTES => Value::Bytes(self.unescape()?),
            T_STR => Value::String(self.string()?),
            T_ARR => {
                let mut items = Vec::new();
                while self.buf.get(self.pos) != Some(&0) {
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Value::Array(items)
            }
            T_OBJ => {
                let mut o = Object::new();
                loop {
                    match self.byte()? {
                        0x00 => break,
                        0x01 => {
                            let k = self.compact()?;
                            let v = self.value(depth + 1)?;
                            o.insert(k, v);
                        }
                        _ => return Err(CodecError::Malformed("bad object entry")),
                    }
                }
                Value::Object(o)
            }
            T_REF => Value::Ref(self.reference(depth)?),
            T_SET => Value::Set(Box::new(self.value(depth + 1)?)),
            T_QUERY => Value::Query(Box::new(self.value(depth + 1)?)),
            T_TIME => {
                let secs = (u64::from_be_bytes(self.take::<8>()?) ^ (1 << 63)) as i64;
                let nanos = u32::from_be_bytes(self.take::<4>()?);
                let t = Utc.timestamp_opt(secs, nanos).single().ok_or(CodecError::Malformed("time out of range"))?;
                Value::Time(t)
            }
            T_DATE => {
                let days = (u32::from_be_bytes(self.take::<4>()?) ^ (1 << 31)) as i32;
                Value::Date(
                    NaiveDate::from_num_days_from_ce_opt(days).ok_or(CodecError::Malformed("date out of range"))?,
                )
            }
            T_BOOL => Value::Bool(self.byte()? != 0),
            T_NULL => Value::Null,
            other => return Err(CodecError::BadTag(other)),
        })
    }
    fn reference(&mut self, depth: usize) -> Result<Ref, CodecError> {
        if depth > 64 {
            return Err(CodecError::Malformed("ref nesting too deep"));
        }
        let collection = match self.byte()? {
            0x00 => None,
            0x01 => Some(Arc::new(self.reference(depth + 1)?)),
            _ => return Err(CodecError::Malformed("bad ref collection")),
        };
        let id = match self.byte()? {
            0x01 => u64::from_be_bytes(self.take::<8>()?).to_compact_string(),
            0x02 => self.compact()?,
            _ => return Err(CodecError::Malformed("bad ref id")),
        };
        let database = match self.byte()? {
            0x00 => None,
            0x01 => Some(Arc::new(self.reference(depth + 1)?)),
            _ => return Err(CodecError::Malformed("bad ref database")),
        };
        Ok(Ref { id, collection, database })
    }
}

/// Decode exactly one value that fills `buf`.
pub fn decode(buf: &[u8]) -> Result<Value, CodecError> {
    let mut r = Reader { buf, pos: 0 };
    let v = r.value(0)?;
    if r.pos != buf.len() {
        return Err(CodecError::Malformed("trailing bytes"));
    }
    Ok(v)
}

/// The field `key` of the object `buf` encodes, as `decode(buf)` would give it: the same
/// error for anything `decode` refuses, `Ok(None)` when the value is not an object, else
/// `Ok(Some(field))`. Only that field is built; the others are checked and skipped, so
/// reading one field of a stored document costs no allocation for the rest.
pub fn decode_field(buf: &[u8], key: &str) -> Result<Option<Option<Value>>, CodecError> {
    if buf.first() != Some(&T_OBJ) || key.as_bytes().contains(&0) {
        // Not an object (or a key with a 0x00, which the scan below cannot compare).
        return Ok(match decode(buf)? {
            Value::Object(mut o) => Some(o.remove(key)),
            _ => None,
        });
    }
    let mut r = Reader { buf, pos: 1 };
    let mut found = None;
    loop {
        match r.byte()? {
            0x00 => break,
            0x01 => {
                // A key without escapes is its own bytes; `key` has none to escape.
                let (name, escaped) = r.skip_escaped(true)?;
                if !escaped && name == key.as_bytes() {
                    // A repeated key: the last one wins, as in `decode`'s map.
                    found = Some(r.value(1)?);
                } else {
                    r.skip(1)?;
                }
            }
            _ => return Err(CodecError::Malformed("bad object entry")),
        }
    }
    if r.pos != buf.len() {
        return Err(CodecError::Malformed("trailing bytes"));
    }
    Ok(Some(found))
}

/// Decode a concatenation of encoded values (an index key tuple).
pub fn decode_key_tuple(buf: &[u8]) -> Result<Vec<Value>, CodecError> {
    let mut r = Reader { buf, pos: 0 };
    let mut out = Vec::new();
    while r.pos < buf.len() {
        out.push(r.value(0)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::compare;

    fn samples() -> Vec<Value> {
        let t = |s: &str| Value::Time(crate::wire::parse_time(s).unwrap());
        let players = Ref::collection("players");
        vec![
            Value::Long(i64::MIN),
            Value::Long(-5),
            Value::Double(-1.5),
            Value::Long(0),
            Value::Double(0.5),
            Value::Long(1),
            Value::Double(1.0),
            Value::Long(i64::MAX),
            Value::Bytes(vec![]),
            Value::Bytes(vec![0, 1]),
            Value::String("".into()),
            Value::String("a".into()),
            Value::String("a\0".into()),
            Value::String("ab".into()),
            Value::Array(vec![]),
            Value::Array(vec![Value::Long(1)]),
            Value::Array(vec![Value::Long(1), Value::Null]),
            Value::object([("a", Value::Long(1))]),
            Value::object([("b", Value::Long(0))]),
            Value::Ref(Ref::native("collections")),
            Value::Ref(Ref::doc(players.clone(), "9")),
            Value::Ref(Ref::doc(players.clone(), "10")),
            Value::Ref(Ref::doc(players, "x")),
            t("1969-12-31T23:59:59.5Z"),
            t("1970-01-01T00:00:00Z"),
            t("2026-01-01T00:00:00.000001Z"),
            Value::Date(NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()),
            Value::Bool(false),
            Value::Bool(true),
            Value::Null,
        ]
    }

    #[test]
    fn round_trips() {
        for v in samples() {
            assert_eq!(decode(&encode(&v)).unwrap(), v);
        }
    }

    #[test]
    fn byte_order_matches_value_order() {
        let s = samples();
        for a in &s {
            for b in &s {
                assert_eq!(encode(a).cmp(&encode(b)), compare(a, b), "{a:?} vs {b:?}");
            }
        }
    }

    /// A ref's id is read inline when short and unescaped, and through the string path
    /// otherwise; every way gives the id back, and bad UTF-8 is refused either way.
    #[test]
    fn ref_ids_decode_by_every_path() {
        let coll = Ref::collection("accounts");
        let long = "an id longer than twenty-four bytes, held on the heap";
        let ids = ["1", "18446744073709551615", "x", "", "naïve ☃", "a\0b", "\0", long, &format!("{long}\0")];
        for id in ids {
            let r = Value::Ref(Ref::doc(coll.clone(), id));
            assert_eq!(decode(&encode(&r)).unwrap(), r, "{id:?}");
        }
        // "é" is C3 A9; C3 C3 is no character. The collection names are ASCII, so the pair
        // is found in the id only: short, escaped and long ids.
        for id in ["é", "é\0", "\0é", &format!("{long}é"), &format!("{long}\0é")] {
            let mut bad = encode(&Value::Ref(Ref::doc(coll.clone(), id)));
            let at = bad.windows(2).position(|w| w == [0xC3, 0xA9]).unwrap();
            bad[at + 1] = 0xC3;
            assert_eq!(decode(&bad), Err(CodecError::Malformed("invalid UTF-8")), "{id:?}");
        }
    }

    #[test]
    fn tuples_decode() {
        let mut buf = encode(&Value::String("x".into()));
        encode_into(&mut buf, &Value::Long(3));
        assert_eq!(decode_key_tuple(&buf).unwrap(), vec![Value::String("x".into()), Value::Long(3)]);
        assert!(decode(&buf[..buf.len() - 1]).is_err());
    }

    /// The escaping copies runs between 0x00 bytes at once; what it writes and what
    /// unescaping accepts, returns and refuses are those of the byte-at-a-time definition
    /// (every 0x00 becomes 0x00 0xFF, then 0x00 0x01), for every truncation and every
    /// single-byte change.
    #[test]
    fn escaping_is_the_byte_at_a_time_definition() {
        fn escaped_ref(bytes: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            for &b in bytes {
                out.push(b);
                if b == 0 {
                    out.push(0xFF);
                }
            }
            out.extend_from_slice(&[0x00, 0x01]);
            out
        }
        fn unescape_ref(buf: &[u8]) -> (Result<Vec<u8>, CodecError>, usize) {
            let mut out = Vec::new();
            let mut pos = 0;
            loop {
                let Some(&b) = buf.get(pos) else { return (Err(CodecError::Truncated), pos) };
                pos += 1;
                if b != 0 {
                    out.push(b);
                    continue;
                }
                let Some(&e) = buf.get(pos) else { return (Err(CodecError::Truncated), pos) };
                pos += 1;
                match e {
                    0xFF => out.push(0),
                    0x01 => return (Ok(out), pos),
                    _ => return (Err(CodecError::Malformed("bad escape")), pos),
                }
            }
        }
        let inputs: [&[u8]; 8] =
            [b"", b"\0", b"\0\0", b"a\0", b"\0a", b"ab\0\0cd\0", b"plain text", b"\xff\0\x01\0\xff"];
        for input in inputs {
            let mut out = vec![7];
            escaped(&mut out, input);
            assert_eq!(&out[1..], &escaped_ref(input)[..], "{input:02x?}");
            let enc = escaped_ref(input);
            let mut variants = vec![enc.clone()];
            for n in 0..enc.len() {
                variants.push(enc[..n].to_vec());
                for b in [0x00, 0x01, 0x02, 0xfe, 0xff] {
                    let mut m = enc.clone();
                    m[n] = b;
                    variants.push(m);
                }
            }
            for v in variants {
                let mut r = Reader { buf: &v, pos: 0 };
                let got = r.unescape();
                let (want, _) = unescape_ref(&v);
                assert_eq!(got, want, "{v:02x?}");
                if got.is_ok() {
                    assert_eq!(r.pos, unescape_ref(&v).1, "{v:02x?}");
                }
                let mut r = Reader { buf: &v, pos: 0 };
                let skipped = r.skip_escaped(false).map(|(raw, esc)| (raw.to_vec(), esc));
                match &want {
                    Ok(bytes) => {
                        let (raw, esc) = skipped.unwrap();
                        assert_eq!(esc, bytes.contains(&0), "{v:02x?}");
                        assert_eq!(raw, v[..unescape_ref(&v).1 - 2].to_vec(), "{v:02x?}");
                    }
                    Err(e) => assert_eq!(&skipped.unwrap_err(), e, "{v:02x?}"),
                }
            }
        }
    }

    /// `decode_field` as `decode` then a lookup: the same field, and the same error for
    /// every truncation and every single-byte change of the encodings.
    #[test]
    fn decode_field_agrees_with_decode() {
        let by_decode = |buf: &[u8], key: &str| {
            decode(buf).map(|v| match v {
                Value::Object(o) => Some(o.get(key).cloned()),
                _ => None,
            })
        };
        let mut docs: Vec<Value> = samples();
        for v in samples() {
            docs.push(Value::object([("ttl", v.clone())]));
            docs.push(Value::object([("data", Value::object([("ttl", v.clone())])), ("ttl", v.clone())]));
            docs.push(Value::object([("a\0b", v.clone()), ("tt", Value::Long(1)), ("ttla", v.clone())]));
            docs.push(Value::object([("data", Value::Array(vec![v.clone(), Value::Set(Box::new(v))]))]));
        }
        let mut encodings: Vec<Vec<u8>> = docs.iter().map(encode).collect();
        // A repeated key (no encoder writes one): the last one wins in both.
        let mut twice = vec![T_OBJ];
        for n in [1i64, 2] {
            twice.push(0x01);
            twice.extend_from_slice(b"ttl\0\x01");
            encode_into(&mut twice, &Value::Long(n));
        }
        twice.push(0);
        encodings.push(twice);
        // Invalid UTF-8 in a key and in a string value, before and after an escaped 0x00.
        for bad in [&b"\xff"[..], b"a\0\xff\xc3", b"\xc3\0\xffa"] {
            let mut o = vec![T_OBJ, 0x01];
            o.extend_from_slice(bad);
            o.extend_from_slice(b"\0\x01");
            encode_into(&mut o, &Value::Null);
            o.push(0);
            encodings.push(o);
            let mut o = vec![T_OBJ, 0x01, b'k', 0, 1, T_STR];
            o.extend_from_slice(bad);
            o.extend_from_slice(b"\0\x01\0");
            encodings.push(o);
        }
        for buf in encodings {
            let mut variants = vec![buf.clone()];
            for n in 0..buf.len() {
                variants.push(buf[..n].to_vec());
                for b in [0x00, 0x01, 0x02, 0x30, 0x50, 0x90, 0xff, buf[n] ^ 0x80] {
                    let mut m = buf.clone();
                    m[n] = b;
                    variants.push(m);
                }
            }
            let mut longer = buf.clone();
            longer.push(0);
            variants.push(longer);
            for v in variants {
                for key in ["ttl", "data", "a\0b"] {
                    // Compared as text: a NaN is not equal to itself.
                    let (got, want) = (decode_field(&v, key), by_decode(&v, key));
                    assert_eq!(format!("{got:?}"), format!("{want:?}"), "{v:02x?} {key}");
                }
            }
        }
    }
}
