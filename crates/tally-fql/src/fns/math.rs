//! Arithmetic and math: `add subtract multiply divide modulo abs acos asin atan bitand
//! bitnot bitor bitxor ceil cos cosh degrees exp floor hypot ln log max min pow radians
//! round sign sin sinh sqrt tan tanh trunc`.
//!
//! Integers and doubles stay apart: an operation on integers gives an integer (and
//! overflow is an error, never a wrap), anything involving a double gives a double.
//! Results that are not finite (NaN, infinities) cannot be represented on the wire and
//! are rejected as `invalid argument`.

use std::cmp::Ordering;

use tally_value::{compare, Value};

use crate::error::{invalid_argument, wrong_type, FqlError, Result};
use crate::eval::Eval;
use crate::expr::{Call, Expr, FnSpec};

pub(crate) static SPECS: &[FnSpec] = &[
    FnSpec { name: "add", optional: &[], required: &[], handler: add },
    FnSpec { name: "subtract", optional: &[], required: &[], handler: subtract },
    FnSpec { name: "multiply", optional: &[], required: &[], handler: multiply },
    FnSpec { name: "divide", optional: &[], required: &[], handler: divide },
    FnSpec { name: "modulo", optional: &[], required: &[], handler: modulo },
    FnSpec { name: "max", optional: &[], required: &[], handler: max },
    FnSpec { name: "min", optional: &[], required: &[], handler: min },
    FnSpec { name: "bitand", optional: &[], required: &[], handler: bitand },
    FnSpec { name: "bitor", optional: &[], required: &[], handler: bitor },
    FnSpec { name: "bitxor", optional: &[], required: &[], handler: bitxor },
    FnSpec { name: "bitnot", optional: &[], required: &[], handler: bitnot },
    FnSpec { name: "abs", optional: &[], required: &[], handler: abs },
    FnSpec { name: "sign", optional: &[], required: &[], handler: sign },
    FnSpec { name: "ceil", optional: &[], required: &[], handler: ceil },
    FnSpec { name: "floor", optional: &[], required: &[], handler: floor },
    FnSpec { name: "round", optional: &["precision"], required: &[], handler: round },
    FnSpec { name: "trunc", optional: &["precision"], required: &[], handler: trunc },
    FnSpec { name: "pow", optional: &["exp"], required: &[], handler: pow },
    FnSpec { name: "hypot", optional: &["b"], required: &[], handler: hypot },
    FnSpec { name: "sqrt", optional: &[], required: &[], handler: sqrt },
    FnSpec { name: "exp", optional: &[], required: &[], handler: exp },
    FnSpec { name: "ln", optional: &[], required: &[], handler: ln },
    FnSpec { name: "log", optional: &[], required: &[], handler: log },
    FnSpec { name: "degrees", optional: &[], required: &[], handler: degrees },
    FnSpec { name: "radians", optional: &[], required: &[], handler: radians },
    FnSpec { name: "sin", optional: &[], required: &[], handler: sin },
    FnSpec { name: "cos", optional: &[], required: &[], handler: cos },
    FnSpec { name: "tan", optional: &[], required: &[], handler: tan },
    FnSpec { name: "asin", optional: &[], required: &[], handler: asin },
    FnSpec { name: "acos", optional: &[], required: &[], handler: acos },
    FnSpec { name: "atan", optional: &[], required: &[], handler: atan },
    FnSpec { name: "sinh", optional: &[], required: &[], handler: sinh },
    FnSpec { name: "cosh", optional: &[], required: &[], handler: cosh },
    FnSpec { name: "tanh", optional: &[], required: &[], handler: tanh },
];

// ---- argument helpers ----

fn is_num(v: &Value) -> bool {
    matches!(v, Value::Long(_) | Value::Double(_))
}

fn as_f64(v: &Value) -> f64 {
    match v {
        Value::Long(n) => *n as f64,
        Value::Double(d) => *d,
        _ => f64::NAN,
    }
}

/// The operands of a variadic function, each checked with `ok`; errors on an element of
/// an array literal point at it (`["add", 1]`).
fn operands(ev: &mut Eval<'_>, call: &Call, expected: &str, ok: fn(&Value) -> bool) -> Result<Vec<Value>> {
    let name = call.name();
    let literal = matches!(call.get(name), Some(Expr::Array(_)));
    let vals = ev.varargs(call, name)?;
    check_operands(call, vals, literal, expected, ok)
}

fn check_operands(
    call: &Call,
    vals: Vec<Value>,
    literal: bool,
    expected: &str,
    ok: fn(&Value) -> bool,
) -> Result<Vec<Value>> {
    let name = call.name();
    if vals.is_empty() {
        return Err(invalid_argument("Non-empty array expected.").at(name));
    }
    for (i, v) in vals.iter().enumerate() {
        if !ok(v) {
            let e = wrong_type(expected, v);
            return Err(if literal { e.at(i).at(name) } else { e.at(name) });
        }
    }
    Ok(vals)
}

fn numbers(ev: &mut Eval<'_>, call: &Call) -> Result<Vec<Value>> {
    operands(ev, call, "Number", is_num)
}

/// A numeric argument under `key`.
fn num_arg(ev: &mut Eval<'_>, call: &Call, key: &'static str) -> Result<Value> {
    let v = ev.arg(call, key)?;
    if is_num(&v) {
        Ok(v)
    } else {
        Err(wrong_type("Number", &v).at(key))
    }
}

fn overflow(name: &str) -> FqlError {
    invalid_argument(format!("Integer overflow in `{name}`; use doubles for values beyond 64 bits.")).at(name)
}

fn div_zero(name: &str) -> FqlError {
    invalid_argument("Illegal division by zero.").at(name)
}

/// A double result, rejected when not finite.
fn finite(name: &str, d: f64) -> Result<Value> {
    if d.is_finite() {
        Ok(Value::Double(d))
    } else {
        Err(invalid_argument(format!("The result of `{name}` is not a finite number; check its argument's range."))
            .at(name))
    }
}

/// Fold a binary operation over the operands, as integers while all are integers.
fn fold(
    ev: &mut Eval<'_>,
    call: &Call,
    long_op: fn(i64, i64) -> std::result::Result<i64, &'static str>,
    double_op: fn(f64, f64) -> std::result::Result<f64, &'static str>,
) -> Result<Value> {
    let name = call.name();
    let vals = numbers(ev, call)?;
    let mut it = vals.into_iter();
    let mut acc = it.next().unwrap_or(Value::Long(0));
    for v in it {
        acc = match (&acc, &v) {
            (Value::Long(a), Value::Long(b)) => Value::Long(long_op(*a, *b).map_err(|e| arith_err(e, name))?),
            (a, b) => {
                let r = double_op(as_f64(a), as_f64(b)).map_err(|e| arith_err(e, name))?;
                finite(name, r)?
            }
        };
    }
    if let Value::Double(d) = acc {
        return finite(name, d);
    }
    Ok(acc)
}

fn arith_err(kind: &str, name: &str) -> FqlError {
    match kind {
        "zero" => div_zero(name),
        _ => overflow(name),
    }
}

fn add(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    fold(ev, call, |a, b| a.checked_add(b).ok_or("overflow"), |a, b| Ok(a + b))
}

fn subtract(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    fold(ev, call, |a, b| a.checked_sub(b).ok_or("overflow"), |a, b| Ok(a - b))
}

fn multiply(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    fold(ev, call, |a, b| a.checked_mul(b).ok_or("overflow"), |a, b| Ok(a * b))
}

fn divide(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    fold(
        ev,
        call,
        |a, b| if b == 0 { Err("zero") } else { a.checked_div(b).ok_or("overflow") },
        |a, b| if b == 0.0 { Err("zero") } else { Ok(a / b) },
    )
}

fn modulo(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    fold(
        ev,
        call,
        |a, b| if b == 0 { Err("zero") } else { Ok(a.checked_rem(b).unwrap_or(0)) },
        |a, b| if b == 0.0 { Err("zero") } else { Ok(a % b) },
    )
}

/// `Max`/`Min` take an array (`Max(2)` alone is rejected, as in v4).
fn extreme(ev: &mut Eval<'_>, call: &Call, want: Ordering) -> Result<Value> {
    let name = call.name();
    let vals = if matches!(call.get(name), Some(Expr::Array(_))) {
        numbers(ev, call)?
    } else {
        match ev.primary(call)? {
            Value::Array(items) => check_operands(call, items, false, "Number", is_num)?,
            v => return Err(wrong_type("Array", &v).at(name)),
        }
    };
    let mut best: Option<Value> = None;
    for v in vals {
        best = match best {
            Some(b) if compare(&v, &b) != want => Some(b),
            _ => Some(v),
        };
    }
    Ok(best.unwrap_or(Value::Null))
}

fn max(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    extreme(ev, call, Ordering::Greater)
}

fn min(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    extreme(ev, call, Ordering::Less)
}

fn bits(ev: &mut Eval<'_>, call: &Call, op: fn(i64, i64) -> i64) -> Result<Value> {
    let vals = operands(ev, call, "Integer", |v| matches!(v, Value::Long(_)))?;
    let mut it = vals.iter().filter_map(Value::as_long);
    let first = it.next().unwrap_or(0);
    Ok(Value::Long(it.fold(first, op)))
}

fn bitand(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    bits(ev, call, |a, b| a & b)
}

fn bitor(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    bits(ev, call, |a, b| a | b)
}

fn bitxor(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    bits(ev, call, |a, b| a ^ b)
}

fn bitnot(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    match ev.primary(call)? {
        Value::Long(n) => Ok(Value::Long(!n)),
        // Tolerate the one-element array some drivers send.
        Value::Array(items) if items.len() == 1 && matches!(items[0], Value::Long(_)) => {
            Ok(Value::Long(!items[0].as_long().unwrap_or(0)))
        }
        other => Err(wrong_type("Integer", &other).at("bitnot")),
    }
}

// ---- one-argument functions ----

fn unary(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    num_arg(ev, call, call.name())
}

fn abs(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    match unary(ev, call)? {
        Value::Long(n) => n.checked_abs().map(Value::Long).ok_or_else(|| overflow("abs")),
        v => finite("abs", as_f64(&v).abs()),
    }
}

fn sign(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    match unary(ev, call)? {
        Value::Long(n) => Ok(Value::Long(n.signum())),
        v => {
            let d = as_f64(&v);
            Ok(Value::Double(if d == 0.0 { d } else { d.signum() }))
        }
    }
}

fn ceil(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    match unary(ev, call)? {
        v @ Value::Long(_) => Ok(v),
        v => finite("ceil", as_f64(&v).ceil()),
    }
}

fn floor(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    match unary(ev, call)? {
        v @ Value::Long(_) => Ok(v),
        v => finite("floor", as_f64(&v).floor()),
    }
}

/// Round or truncate a double to `precision` decimal places (negative: to tens,
/// hundreds, ...). Works on the shortest decimal form of the double, so
/// `Round(1.005, 2)` is 1.01 and `Trunc(45.56789, 2)` is exactly 45.56.
pub(crate) fn decimal_round(d: f64, precision: i64, half_up: bool) -> f64 {
    if !d.is_finite() {
        return d;
    }
    let neg = d.is_sign_negative();
    let text = format!("{}", d.abs());
    let (int_part, frac_part) = text.split_once('.').unwrap_or((&text, ""));
    // digits = int_part ++ frac_part, with the decimal point after int_part.len() digits.
    let mut digits: Vec<u8> = int_part.bytes().chain(frac_part.bytes()).map(|b| b - b'0').collect();
    let point = int_part.len() as i64;
    // Number of digits to keep.
    let keep = point.saturating_add(precision);
    if keep >= digits.len() as i64 {
        return d;
    }
    if keep < 0 {
        return if neg { -0.0 } else { 0.0 };
    }
    let keep = keep as usize;
    let round_up = half_up && digits[keep] >= 5;
    digits.truncate(keep);
    // Pad back with zeros up to the decimal point.
    let mut int_len = point as usize;
    while digits.len() < int_len {
        digits.push(0);
    }
    if round_up {
        let mut i = keep;
        loop {
            if i == 0 {
                digits.insert(0, 1);
                int_len += 1;
                break;
            }
            i -= 1;
            if digits[i] == 9 {
                digits[i] = 0;
            } else {
                digits[i] += 1;
                break;
            }
        }
    }
    let mut s = String::with_capacity(digits.len() + 2);
    for (i, dg) in digits.iter().enumerate() {
        if i == int_len {
            s.push('.');
        }
        s.push((b'0' + dg) as char);
    }
    if s.is_empty() || s.starts_with('.') {
        s.insert(0, '0');
    }
    let v: f64 = s.parse().unwrap_or(0.0);
    if neg {
        -v
    } else {
        v
    }
}

/// Round an integer to `precision` (only negative precisions change it).
fn long_round(n: i64, precision: i64, half_up: bool) -> Option<i64> {
    if precision >= 0 {
        return Some(n);
    }
    if precision < -18 {
        return if half_up && precision == -19 && n.unsigned_abs() >= 5_000_000_000_000_000_000 {
            None
        } else {
            Some(0)
        };
    }
    let m = 10i64.pow((-precision) as u32);
    let q = n / m;
    let r = n % m;
    let q = if half_up && r.unsigned_abs() * 2 >= m as u64 { q.checked_add(n.signum())? } else { q };
    q.checked_mul(m)
}

fn round_like(ev: &mut Eval<'_>, call: &Call, half_up: bool) -> Result<Value> {
    let name = call.name();
    let v = unary(ev, call)?;
    let precision = match ev.opt_arg(call, "precision")? {
        None => 2,
        Some(Value::Long(p)) => p,
        Some(other) => return Err(wrong_type("Integer", &other).at("precision")),
    };
    match v {
        Value::Long(n) => long_round(n, precision, half_up).map(Value::Long).ok_or_else(|| overflow(name)),
        v => finite(name, decimal_round(as_f64(&v), precision, half_up)),
    }
}

fn round(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    round_like(ev, call, true)
}

fn trunc(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    round_like(ev, call, false)
}

/// `Pow(base, exp = 2)`: integer for an integer base and a non-negative integer exponent.
fn pow(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let base = unary(ev, call)?;
    let e = match call.get("exp") {
        Some(_) => num_arg(ev, call, "exp")?,
        None => Value::Long(2),
    };
    match (&base, &e) {
        (Value::Long(b), Value::Long(x)) if *x >= 0 => {
            let x = u32::try_from(*x).map_err(|_| overflow("pow"))?;
            b.checked_pow(x).map(Value::Long).ok_or_else(|| overflow("pow"))
        }
        _ => finite("pow", as_f64(&base).powf(as_f64(&e))),
    }
}

/// `Hypot(a, b = 0)`.
fn hypot(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let a = unary(ev, call)?;
    let b = match call.get("b") {
        Some(_) => num_arg(ev, call, "b")?,
        None => Value::Long(0),
    };
    finite("hypot", as_f64(&a).hypot(as_f64(&b)))
}

fn float_fn(ev: &mut Eval<'_>, call: &Call, f: fn(f64) -> f64) -> Result<Value> {
    let v = unary(ev, call)?;
    finite(call.name(), f(as_f64(&v)))
}

macro_rules! float_fns {
    ($($name:ident => $f:expr;)*) => {
        $(fn $name(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
            float_fn(ev, call, $f)
        })*
    };
}

float_fns! {
    sqrt => f64::sqrt;
    exp => f64::exp;
    ln => f64::ln;
    log => f64::log10;
    degrees => f64::to_degrees;
    radians => f64::to_radians;
    sin => f64::sin;
    cos => f64::cos;
    tan => f64::tan;
    asin => f64::asin;
    acos => f64::acos;
    atan => f64::atan;
    sinh => f64::sinh;
    cosh => f64::cosh;
    tanh => f64::tanh;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_rounding() {
        assert_eq!(decimal_round(123.456, 2, true), 123.46);
        assert_eq!(decimal_round(123.456, 1, true), 123.5);
        assert_eq!(decimal_round(45.56789, 2, false), 45.56);
        assert_eq!(decimal_round(155.678, -1, true), 160.0);
        assert_eq!(decimal_round(155.678, -1, false), 150.0);
        assert_eq!(decimal_round(155.678, 0, true), 156.0);
        assert_eq!(decimal_round(999.5, 0, true), 1000.0);
        assert_eq!(decimal_round(-2.5, 0, true), -3.0);
        assert_eq!(decimal_round(0.004, 2, true), 0.0);
        assert_eq!(decimal_round(0.005, 2, true), 0.01);
        assert_eq!(decimal_round(1.005, 2, true), 1.01);
        assert_eq!(decimal_round(5.0, -3, true), 0.0);
        assert_eq!(decimal_round(500.0, -3, true), 1000.0);
        assert_eq!(long_round(155, -1, true), Some(160));
        assert_eq!(long_round(-155, -1, false), Some(-150));
    }
}
