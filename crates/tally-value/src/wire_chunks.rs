//! The wire encoding of a value, produced a piece at a time.
//!
//! [`to_json`](crate::to_json) builds the whole JSON tree and then its bytes: for a large
//! answer that is two more copies of it in memory at once, built in one go. A
//! [`ChunkEncoder`] writes the same bytes (it is tested equal to
//! [`to_json_string`](crate::to_json_string)) into buffers of about a given size, walking
//! the value in place, so a server can send a large answer while it encodes it and hold
//! only a chunk or two of its bytes. Long strings and byte arrays are split across chunks
//! too; only `@set` and `@query` values, which are small, are encoded in one piece.

use crate::{to_json, Value};

/// Smallest piece of a string or byte array written at once (so a chunk that is almost
/// full still makes progress).
const PIECE_MIN: usize = 1024;

enum Frame<'a> {
    /// A value still to be written.
    Value(&'a Value),
    /// Literal JSON (brackets, tags).
    Raw(&'static str),
    /// What is left of a string's contents (without quotes).
    Str(&'a str),
    /// What is left of a byte array, to be written in base64.
    Bytes(&'a [u8]),
    /// An array's remaining items; the bool is true before the first.
    Array(std::slice::Iter<'a, Value>, bool),
    /// An object's remaining fields; the bool is true before the first.
    Object(crate::object::Iter<'a>, bool),
}

/// Writes a value's wire JSON (between an optional prefix and suffix) a chunk at a time.
pub struct ChunkEncoder<'a> {
    /// Frames still to be written, the next one last.
    stack: Vec<Frame<'a>>,
}

impl<'a> ChunkEncoder<'a> {
    /// An encoder for `prefix`, then `v`, then `suffix` (e.g. `{"resource":` and `}`).
    pub fn new(prefix: &'static str, v: &'a Value, suffix: &'static str) -> ChunkEncoder<'a> {
        ChunkEncoder { stack: vec![Frame::Raw(suffix), Frame::Value(v), Frame::Raw(prefix)] }
    }

    /// Whether everything has been written.
    pub fn is_done(&self) -> bool {
        self.stack.is_empty()
    }

    /// Append to `out` until it holds about `max` bytes (one small value or a piece of at
    /// least `PIECE_MIN` bytes may go past it) or everything is written.
    pub fn fill(&mut self, out: &mut Vec<u8>, max: usize) {
        while out.len() < max {
            let Some(frame) = self.stack.pop() else { return };
            let room = max.saturating_sub(out.len()).max(PIECE_MIN);
            match frame {
                Frame::Raw(s) => out.extend_from_slice(s.as_bytes()),
                Frame::Str(s) => {
                    let mut cut = s.len().min(room);
                    while !s.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    write_escaped(out, &s[..cut]);
                    if cut < s.len() {
                        self.stack.push(Frame::Str(&s[cut..]));
                    }
                }
                Frame::Bytes(b) => {
                    // Whole groups of three bytes: no padding until the last piece, so
                    // the pieces concatenate to the whole encoding.
                    let cut = if b.len().div_ceil(3) * 4 <= room { b.len() } else { (room / 4 * 3).max(3) };
                    out.extend_from_slice(crate::encode_base64(&b[..cut]).as_bytes());
                    if cut < b.len() {
                        self.stack.push(Frame::Bytes(&b[cut..]));
                    }
                }
                Frame::Array(mut items, first) => {
                    if let Some(item) = items.next() {
                        if !first {
                            out.push(b',');
                        }
                        self.stack.push(Frame::Array(items, false));
                        self.stack.push(Frame::Value(item));
                    }
                }
                Frame::Object(mut fields, first) => {
                    if let Some((k, v)) = fields.next() {
                        if !first {
                            out.push(b',');
                        }
                        write_string(out, k);
                        out.push(b':');
                        self.stack.push(Frame::Object(fields, false));
                        self.stack.push(Frame::Value(v));
                    }
                }
                Frame::Value(v) => self.open(out, v),
            }
        }
    }

    /// Start writing `v`: containers and long leaves become frames, small leaves are
    /// written whole.
    fn open(&mut self, out: &mut Vec<u8>, v: &'a Value) {
        match v {
            Value::String(s) => {
                out.push(b'"');
                self.stack.push(Frame::Raw("\""));
                self.stack.push(Frame::Str(s));
            }
            Value::Bytes(b) => {
                out.extend_from_slice(br#"{"@bytes":""#);
                self.stack.push(Frame::Raw("\"}"));
                self.stack.push(Frame::Bytes(b));
            }
            Value::Array(items) => {
                out.push(b'[');
                self.stack.push(Frame::Raw("]"));
                self.stack.push(Frame::Array(items.iter(), true));
            }
            Value::Object(o) => {
                // Keys that look like tags are wrapped, as `to_json` does.
                if o.keys().any(|k| k.starts_with('@')) {
                    out.extend_from_slice(br#"{"@obj":{"#);
                    self.stack.push(Frame::Raw("}}"));
                } else {
                    out.push(b'{');
                    self.stack.push(Frame::Raw("}"));
                }
                self.stack.push(Frame::Object(o.iter(), true));
            }
            // Small, or rare and bounded by the expression size (`@set`, `@query`).
            other => write_json(out, &to_json(other)),
        }
    }
}

fn write_json(out: &mut Vec<u8>, j: &serde_json::Value) {
    // Writing a serde_json value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, j);
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A string's JSON escaping without its quotes (escapes are per character, so pieces
/// cut at character boundaries concatenate to the whole).
fn write_escaped(out: &mut Vec<u8>, s: &str) {
    let start = out.len();
    write_string(out, s);
    out.pop();
    out.remove(start);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Object, Ref};

    fn chunked(v: &Value, max: usize) -> (String, usize) {
        let mut enc = ChunkEncoder::new("{\"resource\":", v, "}");
        let (mut all, mut chunks) = (Vec::new(), 0);
        while !enc.is_done() {
            let mut buf = Vec::new();
            enc.fill(&mut buf, max);
            // An escaped piece may be up to six times its text (`\u0001`).
            assert!(buf.len() <= 6 * max.max(PIECE_MIN) + 64, "chunk of {} bytes for a limit of {max}", buf.len());
            all.extend_from_slice(&buf);
            chunks += 1;
        }
        (String::from_utf8(all).unwrap(), chunks)
    }

    fn whole(v: &Value) -> String {
        serde_json::to_string(&serde_json::json!({ "resource": to_json(v) })).unwrap()
    }

    fn sample() -> Value {
        let coll = Ref { id: "c".into(), collection: None, database: None };
        let r = Ref { id: "1".into(), collection: Some(std::sync::Arc::new(coll)), database: None };
        let mut tagged = Object::new();
        tagged.insert("@name".into(), Value::Long(1));
        tagged.insert("plain".into(), Value::String("x\"y\\z\n\u{1}é😀".repeat(3000)));
        Value::Array(vec![
            Value::Null,
            Value::Bool(true),
            Value::Long(-7),
            Value::Double(1.5),
            Value::Double(f64::NAN),
            Value::String(String::new()),
            Value::String("ü".repeat(5000)),
            Value::Bytes((0..=255u8).cycle().take(10_001).collect()),
            Value::Bytes(Vec::new()),
            Value::Ref(r.clone()),
            Value::Set(Box::new(Value::object([("match", Value::Ref(r))]))),
            Value::Object(tagged),
            Value::object([("a", Value::Array(vec![])), ("b", Value::Object(Object::new()))]),
            Value::Array((0..2000).map(Value::Long).collect()),
        ])
    }

    /// Whatever the chunk size, the pieces concatenate to exactly what `to_json` gives.
    #[test]
    fn chunks_concatenate_to_the_whole_encoding() {
        let v = sample();
        let expected = whole(&v);
        for max in [1, 7, 100, 1024, 4096, 65_536, 10 << 20] {
            let (got, chunks) = chunked(&v, max);
            assert_eq!(got, expected, "chunk size {max}");
            if max == 4096 {
                assert!(chunks > expected.len() / 8192, "{chunks} chunks");
            }
        }
        for v in [Value::Null, Value::String("a".repeat(100_000)), Value::Array(vec![])] {
            assert_eq!(chunked(&v, 1000).0, whole(&v));
        }
    }
}
