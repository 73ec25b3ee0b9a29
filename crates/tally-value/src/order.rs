//! The total order over values used by comparisons (`LT`, `GT`, ...), index sorting,
//! `Distinct` and set operations.
//!
//! Across types: numbers < bytes < strings < arrays < objects < refs < sets < queries
//! < times < dates < booleans < null. Longs and doubles compare by numeric value, a long
//! sorting before an equal double. Document ids made only of digits compare numerically
//! (so "9" < "10"), and sort before other ids. The binary key encoding in `codec`
//! preserves exactly this order; a test there checks it.

use std::cmp::Ordering;
use std::sync::Arc;

use crate::value::{Ref, Value};

pub fn type_rank(v: &Value) -> u8 {
    match v {
        Value::Long(_) | Value::Double(_) => 1,
        Value::Bytes(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
        Value::Ref(_) => 6,
        Value::Set(_) => 7,
        Value::Query(_) => 8,
        Value::Time(_) => 9,
        Value::Date(_) => 10,
        Value::Bool(_) => 11,
        Value::Null => 12,
    }
}

/// Doubles order as their storage encoding does (`codec::f64_order`): -0.0 equals 0.0 and
/// every NaN is one NaN, above +inf. A plain `total_cmp` put -0.0 below 0.0 and a negative
/// NaN below everything, so a sort and an index (whose keys are encodings) disagreed
/// (found by tests/fuzz_wire.rs).
fn cmp_f64(a: f64, b: f64) -> Ordering {
    let canon = |d: f64| {
        if d.is_nan() {
            f64::NAN
        } else if d == 0.0 {
            0.0
        } else {
            d
        }
    };
    canon(a).total_cmp(&canon(b))
}

fn cmp_long_double(a: i64, b: f64) -> Ordering {
    // Exact comparison of an i64 with an f64; at equal value the long sorts first.
    if b.is_nan() {
        return Ordering::Less;
    }
    if b >= 9.223_372_036_854_776e18 {
        return Ordering::Less;
    }
    if b < -9.223_372_036_854_776e18 {
        return Ordering::Greater;
    }
    let bi = b.trunc() as i64;
    match a.cmp(&bi) {
        Ordering::Equal if b.fract() > 0.0 => Ordering::Less,
        Ordering::Equal if b.fract() < 0.0 => Ordering::Greater,
        Ordering::Equal => Ordering::Less,
        o => o,
    }
}

/// Numeric-looking ids compare as numbers, before any other id.
pub fn cmp_id(a: &str, b: &str) -> Ordering {
    match (numeric_id(a), numeric_id(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// `Some(n)` when `id` is a canonical decimal u64 (no sign, no leading zeros).
pub fn numeric_id(id: &str) -> Option<u64> {
    if id.is_empty() || id.len() > 20 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if id.len() > 1 && id.starts_with('0') {
        return None;
    }
    id.parse().ok()
}

pub fn cmp_ref(a: &Ref, b: &Ref) -> Ordering {
    let opt = |x: &Option<Arc<Ref>>, y: &Option<Arc<Ref>>| match (x, y) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => cmp_ref(x, y),
    };
    opt(&a.collection, &b.collection).then_with(|| cmp_id(&a.id, &b.id)).then_with(|| opt(&a.database, &b.database))
}

pub fn compare(a: &Value, b: &Value) -> Ordering {
    use Value::*;
    match (a, b) {
        (Long(x), Long(y)) => x.cmp(y),
        (Double(x), Double(y)) => cmp_f64(*x, *y),
        (Long(x), Double(y)) => cmp_long_double(*x, *y),
        (Double(x), Long(y)) => cmp_long_double(*y, *x).reverse(),
        (Bytes(x), Bytes(y)) => x.cmp(y),
        (String(x), String(y)) => x.cmp(y),
        (Array(x), Array(y)) => {
            for (p, q) in x.iter().zip(y.iter()) {
                let o = compare(p, q);
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        (Object(x), Object(y)) => {
            for ((kx, vx), (ky, vy)) in x.iter().zip(y.iter()) {
                let o = kx.cmp(ky).then_with(|| compare(vx, vy));
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        (Ref(x), Ref(y)) => cmp_ref(x, y),
        (Set(x), Set(y)) | (Query(x), Query(y)) => compare(x, y),
        (Time(x), Time(y)) => x.cmp(y),
        (Date(x), Date(y)) => x.cmp(y),
        (Bool(x), Bool(y)) => x.cmp(y),
        (Null, Null) => Ordering::Equal,
        _ => type_rank(a).cmp(&type_rank(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_mix() {
        assert_eq!(compare(&Value::Long(1), &Value::Double(1.5)), Ordering::Less);
        assert_eq!(compare(&Value::Double(2.5), &Value::Long(2)), Ordering::Greater);
        assert_eq!(compare(&Value::Long(1), &Value::Double(1.0)), Ordering::Less);
        assert_eq!(compare(&Value::Long(5), &Value::String("a".into())), Ordering::Less);
        assert_eq!(compare(&Value::Null, &Value::Bool(true)), Ordering::Greater);
    }

    #[test]
    fn zeros_and_nans_order_as_encoded() {
        let d = |x: f64| Value::Double(x);
        assert_eq!(compare(&d(-0.0), &d(0.0)), Ordering::Equal);
        assert_eq!(compare(&d(-f64::NAN), &d(f64::NAN)), Ordering::Equal);
        assert_eq!(compare(&d(-f64::NAN), &d(f64::INFINITY)), Ordering::Greater);
        for (a, b) in [(-0.0, 0.0), (-f64::NAN, 1.0), (f64::NAN, -f64::NAN)] {
            let by_bytes = crate::encode(&d(a)).cmp(&crate::encode(&d(b)));
            assert_eq!(compare(&d(a), &d(b)), by_bytes, "{a} vs {b}");
        }
    }

    #[test]
    fn ids_sort_numerically() {
        assert_eq!(cmp_id("9", "10"), Ordering::Less);
        assert_eq!(cmp_id("10", "abc"), Ordering::Less);
        assert_eq!(cmp_id("01", "1"), Ordering::Greater);
    }
}
