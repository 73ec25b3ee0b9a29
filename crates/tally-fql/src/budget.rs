//! The per-query memory budget: how many bytes of values one evaluation holds, and how
//! large its answer may be.
//!
//! The measure is deterministic (a function of the query and the data it reads, never of
//! the allocator or of sharing), so every replica fails the same transaction the same
//! way. It approximates the bytes of values *live* at once:
//!
//! - every value a function returns is charged its own size when it is built (strings and
//!   bytes their length, arrays and objects their slots — their elements were charged when
//!   they were built); a copy of a variable, a literal, or a document read from storage
//!   is charged its whole size, because that is a fresh deep copy;
//! - a lambda application gives back what it charged and keeps only its result's size
//!   ([`crate::eval::Eval::apply`]); `Foreach` and `Filter` give that back too, `Reduce`
//!   keeps only the latest accumulator. So a loop that builds and drops values runs in a
//!   constant budget, while `Map` that keeps a 16 MiB string per element runs out.
//!
//! The answer is measured as it would be encoded on the wire ([`wire_len`]) before it is
//! encoded, so an over-large answer is refused without ever being built.

use tally_value::{Object, Ref, Value};

use crate::error::{code, FqlError, Result};

/// Default bytes of values one query may hold (see the module doc). A page of 100,000
/// documents of ~400 bytes with their refs measures about 60 MiB, the largest ordinary
/// query; 128 MiB leaves room for that while a node running `2 × cores + 1` evaluations
/// at once (scheduler slots plus the executor) stays near 1 GiB on two cores.
pub const QUERY_BYTES_MAX: u64 = 128 * 1024 * 1024;

/// Default largest encoded answer. Four times the largest request body; an answer this
/// size takes a driver about a second to parse.
pub const ANSWER_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// What a slot of an array or object costs besides its contents (the value itself and,
/// for objects, the map entry), whatever the platform's exact layout.
const SLOT_BYTES: u64 = 32;
const ENTRY_BYTES: u64 = 64;

/// The bytes of values one evaluation holds, against its limit.
#[derive(Clone, Debug)]
pub struct Budget {
    used: u64,
    max: u64,
}

impl Budget {
    pub fn new(max: u64) -> Budget {
        Budget { used: 0, max }
    }

    pub fn used(&self) -> u64 {
        self.used
    }

    /// Go back to an earlier `used()` (what was charged since has been dropped).
    pub fn reset(&mut self, to: u64) {
        self.used = to.min(self.used);
    }

    pub fn charge(&mut self, bytes: u64) -> Result<()> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.max {
            return Err(FqlError::new(
                code::INVALID_ARGUMENT,
                format!(
                    "Query needs more than {} bytes of memory for the values it builds (the per-query memory \
                     limit); build smaller strings or arrays, paginate with a smaller size, or select fewer fields.",
                    self.max
                ),
            ));
        }
        Ok(())
    }
}

/// A value's own bytes, not counting its elements (a freshly built container's cost).
pub fn shallow_size(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.len() as u64,
        Value::Bytes(b) => b.len() as u64,
        Value::Array(items) => items.len() as u64 * SLOT_BYTES,
        Value::Object(o) => o.len() as u64 * ENTRY_BYTES,
        _ => SLOT_BYTES,
    }
}

/// [`shallow_size`] and [`deep_size`] of the object `data` with the fields named in
/// `hidden` left out and `ref` (`r`) and `ts` added where `data` has no such field (what
/// `fns::docs::render_owned` builds from a stored version), without building it.
pub fn rendered_sizes(r: &Ref, data: &Object, hidden: &[&str]) -> (u64, u64) {
    let (mut fields, mut deep) = (0u64, SLOT_BYTES);
    for (k, v) in data {
        if !hidden.contains(&k.as_str()) {
            fields += 1;
            deep += ENTRY_BYTES + k.len() as u64 + deep_size(v);
        }
    }
    let kept = |name: &str| data.contains_key(name) && !hidden.contains(&name);
    if !kept("ref") {
        fields += 1;
        deep += ENTRY_BYTES + 3 + SLOT_BYTES + ref_size(r);
    }
    if !kept("ts") {
        fields += 1;
        deep += ENTRY_BYTES + 2 + SLOT_BYTES;
    }
    (fields * ENTRY_BYTES, deep)
}

/// A value's bytes with everything it holds (a fresh deep copy's cost). Walks the value,
/// which costs about what copying it did.
pub fn deep_size(v: &Value) -> u64 {
    match v {
        Value::String(s) => SLOT_BYTES + s.len() as u64,
        Value::Bytes(b) => SLOT_BYTES + b.len() as u64,
        Value::Ref(r) => SLOT_BYTES + ref_size(r),
        Value::Set(inner) | Value::Query(inner) => SLOT_BYTES + deep_size(inner),
        Value::Array(items) => SLOT_BYTES + items.iter().map(deep_size).sum::<u64>(),
        Value::Object(o) => {
            SLOT_BYTES + o.iter().map(|(k, v)| ENTRY_BYTES + k.len() as u64 + deep_size(v)).sum::<u64>()
        }
        _ => SLOT_BYTES,
    }
}

fn ref_size(r: &Ref) -> u64 {
    let mut n = r.id.len() as u64;
    for inner in [&r.collection, &r.database].into_iter().flatten() {
        n += SLOT_BYTES + ref_size(inner);
    }
    n
}

/// The bytes `v` takes as a v4 wire answer, `{"resource": v}`, without building it; at
/// least the real length (tags and escapes are counted generously).
pub fn wire_len(v: &Value) -> u64 {
    const RESOURCE: u64 = 14; // {"resource":}
    RESOURCE + value_len(v)
}

fn value_len(v: &Value) -> u64 {
    match v {
        Value::Null | Value::Bool(_) => 5,
        Value::Long(_) | Value::Double(_) => 24,
        Value::String(s) => str_len(s),
        Value::Bytes(b) => 16 + (b.len() as u64).div_ceil(3) * 4,
        Value::Date(_) => 24,
        Value::Time(_) => 48,
        Value::Ref(r) => ref_len(r),
        Value::Set(inner) | Value::Query(inner) => 12 + value_len(inner),
        Value::Array(items) => 2 + items.iter().map(|i| value_len(i) + 1).sum::<u64>(),
        Value::Object(o) => 12 + o.iter().map(|(k, v)| str_len(k) + 2 + value_len(v)).sum::<u64>(),
    }
}

fn ref_len(r: &Ref) -> u64 {
    let inner = [&r.collection, &r.database].into_iter().flatten().map(|c| 16 + ref_len(c)).sum::<u64>();
    20 + str_len(&r.id) + inner
}

/// A JSON string's length: quotes, and six bytes for each byte that may need `\u00XX`.
fn str_len(s: &str) -> u64 {
    let escaped = s.bytes().filter(|b| *b < 0x20 || *b == b'"' || *b == b'\\').count() as u64;
    2 + s.len() as u64 + escaped * 5
}

/// Refuse an answer that would encode to more than `max` bytes.
pub fn check_answer(v: &Value, max: u64) -> Result<()> {
    let len = wire_len(v);
    if len > max {
        return Err(FqlError::new(
            code::INVALID_ARGUMENT,
            format!(
                "The answer would be about {len} bytes, more than the limit of {max} bytes; paginate with a smaller \
                 size, or Select the fields you need."
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rendered_sizes` is exactly what `render_owned` builds would be charged, for
    /// documents with and without hidden fields and fields named `ref` or `ts`, nested
    /// values of every kind, and refs of every depth: a write whose value nobody uses is
    /// charged what it would have been (`Eval::skipped_result`), so skipping it changes
    /// no result.
    #[test]
    fn rendered_sizes_are_those_of_the_rendered_document() {
        let hidden = crate::model::HIDDEN_FIELDS;
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut below = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let names: Vec<&str> = ["ref", "ts", "data", "balance", "a", "", "credentials"]
            .into_iter()
            .chain(hidden.iter().copied())
            .collect();
        let coll = Ref::collection("accounts");
        let refs = [Ref::doc(coll.clone(), "1"), Ref::doc(coll, "123456789012345678"), Ref::collection("x")];
        for round in 0..2_000 {
            let mut data = Object::new();
            for _ in 0..below(8) {
                let name = names[below(names.len() as u64) as usize];
                let value = match below(7) {
                    0 => Value::Long(below(1000) as i64),
                    1 => Value::String("s".repeat(below(40) as usize)),
                    2 => Value::Null,
                    3 => Value::Array(vec![Value::Bool(true), Value::String("x".into())]),
                    4 => Value::object([("inner", Value::Bytes(vec![1; below(9) as usize]))]),
                    5 => Value::Ref(refs[below(3) as usize].clone()),
                    _ => Value::Double(0.5),
                };
                data.insert(name.into(), value);
            }
            let r = &refs[below(3) as usize];
            let rendered = crate::fns::docs::render_owned(r, below(1 << 40), data.clone());
            assert_eq!(
                rendered_sizes(r, &data, hidden),
                (shallow_size(&rendered), deep_size(&rendered)),
                "round {round}: {data:?}"
            );
        }
    }

    #[test]
    fn wire_len_is_at_least_the_encoding() {
        let v = Value::object([
            ("s", Value::String("a\"b\n".into())),
            ("a", Value::Array(vec![Value::Long(-12345), Value::Null, Value::Bytes(vec![1, 2, 3, 4])])),
            ("@x", Value::Bool(true)),
        ]);
        let real = serde_json::to_vec(&serde_json::json!({"resource": tally_value::to_json(&v)})).unwrap();
        assert!(wire_len(&v) >= real.len() as u64, "{} < {}", wire_len(&v), real.len());
    }

    #[test]
    fn charge_refuses_past_the_limit_and_reset_gives_back() {
        let mut b = Budget::new(100);
        b.charge(60).unwrap();
        let mark = b.used();
        b.charge(30).unwrap();
        b.reset(mark);
        b.charge(30).unwrap();
        let e = b.charge(20).unwrap_err();
        assert_eq!(e.code, code::INVALID_ARGUMENT);
    }
}
