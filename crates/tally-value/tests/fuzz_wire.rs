//! Fuzzing the value codecs (issue 11, item 4): the JSON wire codec the drivers speak and
//! the canonical binary encoding used for keys, stored documents and hashes.
//!
//! Properties, on generated values and on arbitrary input:
//! - arbitrary bytes or JSON text never panic either decoder; they decode or return an error;
//! - every value survives wire encode → decode and binary encode → decode unchanged;
//! - the binary encoding orders like [`tally_value::compare`] (longs kept within 2^53, the
//!   documented exception) and is self-delimiting (tuples split back into their parts).
//!
//! A short run is part of `cargo test` (`TALLY_FUZZ_CASES`, default 256 per property); a
//! long run is `scripts/fuzz`. Saved inputs in `fuzz/corpus/wire/` are replayed every time.

#[path = "../../../fuzz/harness.rs"]
mod harness;

use chrono::{NaiveDate, TimeZone, Utc};
use harness::{corpus, fuzz};
use proptest::prelude::*;
use tally_value::{compare, decode, decode_key_tuple, encode, from_json, from_json_str, to_json, Ref, Value};

/// Cases per target in a default `cargo test` run (well under a second each in release).
const CASES: u32 = 5_000;

fn any_id() -> impl Strategy<Value = String> {
    prop_oneof![(0u64..u64::MAX).prop_map(|n| n.to_string()), "[0-9]{1,22}", "\\PC{0,12}", Just(String::new()),]
}

fn any_ref() -> impl Strategy<Value = Ref> {
    let leaf = prop_oneof![
        prop::sample::select(tally_value::NATIVE_COLLECTIONS).prop_map(Ref::native),
        "[a-z_]{1,8}".prop_map(|n| Ref::collection(&n)),
    ];
    leaf.prop_recursive(3, 8, 2, |inner| {
        (any_id(), inner.clone(), prop::option::of(inner)).prop_map(|(id, c, d)| Ref {
            id: id.into(),
            collection: Some(std::sync::Arc::new(c)),
            database: d.map(std::sync::Arc::new),
        })
    })
}

fn any_date() -> impl Strategy<Value = NaiveDate> {
    // Dates the wire can spell: four-digit years (`%Y-%m-%d`).
    (0i32..=9999, 1u32..=12, 1u32..=28).prop_map(|(y, m, d)| NaiveDate::from_ymd_opt(y, m, d).unwrap())
}

fn any_time() -> impl Strategy<Value = Value> {
    // Times with four-digit years, any nanosecond.
    (-62_135_596_800i64..253_402_300_799, 0u32..1_000_000_000)
        .prop_map(|(s, n)| Value::Time(Utc.timestamp_opt(s, n).single().unwrap()))
}

fn any_double() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |d| d.is_finite()),
        Just(0.0),
        Just(-0.0),
        Just(1.0),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
    ]
}

/// Any value with finite numbers (the wire has no spelling for NaN or infinities).
fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Long),
        any_double().prop_map(Value::Double),
        "\\PC{0,16}".prop_map(Value::String),
        prop::collection::vec(any::<u8>(), 0..24).prop_map(Value::Bytes),
        any_date().prop_map(Value::Date),
        any_time(),
        any_ref().prop_map(Value::Ref),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(prop_oneof!["\\PC{0,6}", "@[a-z]{0,5}"], inner.clone(), 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            inner.clone().prop_map(|v| Value::Set(Box::new(v))),
            inner.prop_map(|v| Value::Query(Box::new(v))),
        ]
    })
}

/// JSON-shaped text with the wire's special forms in it, often slightly wrong.
fn wire_text() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        "-?[0-9]{1,30}(\\.[0-9]{0,5})?([eE][-+]?[0-9]{1,4})?",
        "\"\\PC{0,10}\"",
        Just("\"\\ud800\"".to_string()),
    ];
    atom.prop_recursive(6, 48, 4, |inner| {
        let special = prop::sample::select(vec![
            "@ref",
            "@ts",
            "@date",
            "@bytes",
            "@set",
            "@query",
            "@obj",
            "id",
            "collection",
            "database",
            "x",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((special, inner), 0..3).prop_map(|kv| {
                let body: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", body.join(","))
            }),
        ]
    })
}

fn check_decode_text(text: &str) -> Result<(), TestCaseError> {
    if let Ok(v) = from_json_str(text) {
        // Whatever decodes must encode to something that decodes to the same value.
        let again = from_json(&to_json(&v)).map_err(|e| TestCaseError::fail(format!("re-decoding {text}: {e}")))?;
        prop_assert_eq!(encode(&again), encode(&v), "wire round trip changed {}", text);
    }
    Ok(())
}

fn check_decode_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(v) = decode(bytes) {
        prop_assert_eq!(decode(&encode(&v)).map(|w| encode(&w)), Ok(encode(&v)));
    }
    let _ = decode_key_tuple(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => check_decode_text(text),
        Err(_) => Ok(()),
    }
}

#[test]
fn wire_round_trip() {
    fuzz("wire_round_trip", file!(), CASES, any_value(), |v| {
        let json = to_json(&v);
        let back = from_json(&json).map_err(|e| TestCaseError::fail(format!("{e} for {json}")))?;
        prop_assert_eq!(encode(&back), encode(&v), "wire round trip of {}", json);
        // And through text, as a driver sends it.
        let text = serde_json::to_string(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let parsed = from_json_str(&text).map_err(|e| TestCaseError::fail(format!("{e} for {text}")))?;
        prop_assert_eq!(encode(&parsed), encode(&v));
        Ok(())
    });
}

#[test]
fn binary_round_trip_and_tuples() {
    fuzz("binary_round_trip", file!(), CASES, (any_value(), any_value()), |(a, b)| {
        let (ea, eb) = (encode(&a), encode(&b));
        prop_assert_eq!(decode(&ea).map(|v| encode(&v)), Ok(ea.clone()));
        let mut tuple = ea.clone();
        tuple.extend_from_slice(&eb);
        let parts = decode_key_tuple(&tuple).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parts.iter().map(encode).collect::<Vec<_>>(), vec![ea, eb]);
        Ok(())
    });
}

#[test]
fn binary_order_matches_compare() {
    fuzz("binary_order", file!(), CASES, (any_value(), any_value()), |(a, b)| {
        // The documented exception: longs past 2^53 next to doubles.
        if !(small_longs(&a) && small_longs(&b)) {
            return Ok(());
        }
        prop_assert_eq!(encode(&a).cmp(&encode(&b)), compare(&a, &b), "order of {:?} and {:?}", a, b);
        Ok(())
    });
}

#[test]
fn doubles_of_any_bits_order_as_encoded() {
    let bits = prop_oneof![any::<u64>(), Just(0x8000_0000_0000_0000), Just(0xfff8_0000_0000_0001), Just(0)];
    fuzz("double_order", file!(), CASES, (bits.clone(), bits), |(a, b)| {
        let (a, b) = (Value::Double(f64::from_bits(a)), Value::Double(f64::from_bits(b)));
        prop_assert_eq!(encode(&a).cmp(&encode(&b)), compare(&a, &b), "order of {:?} and {:?}", a, b);
        Ok(())
    });
}

#[test]
fn arbitrary_bytes_never_panic() {
    fuzz("codec_bytes", file!(), CASES, prop::collection::vec(any::<u8>(), 0..256), |b| check_decode_bytes(&b));
}

#[test]
fn mutated_encodings_never_panic() {
    let s = (any_value(), any::<prop::sample::Index>(), any::<u8>(), any::<bool>());
    fuzz("codec_mutated", file!(), CASES, s, |(v, at, byte, cut)| {
        let mut e = encode(&v);
        let i = at.index(e.len());
        if cut {
            e.truncate(i)
        } else {
            e[i] = byte
        }
        check_decode_bytes(&e)
    });
}

#[test]
fn wire_text_never_panics() {
    fuzz("wire_text", file!(), CASES, wire_text(), |t| check_decode_text(&t));
}

fn small_longs(v: &Value) -> bool {
    match v {
        Value::Long(n) => n.unsigned_abs() < (1 << 53),
        Value::Array(a) => a.iter().all(small_longs),
        Value::Object(o) => o.values().all(small_longs),
        Value::Set(x) | Value::Query(x) => small_longs(x),
        _ => true,
    }
}

/// Replays `fuzz/corpus/wire/*`: inputs that once broke (or nearly broke) a decoder.
#[test]
fn corpus_replays() {
    for (path, bytes) in corpus("wire") {
        if let Err(e) = check_decode_bytes(&bytes) {
            panic!("{}: {e}", path.display());
        }
    }
}
