//! Time and date functions: `time epoch date now time_add time_subtract time_diff
//! to_seconds to_millis to_micros to_nanos day_of_month day_of_week day_of_year month year
//! hour minute second to_time to_date`.
//!
//! `Now()` and `Time("now")` are the transaction's timestamp, never the wall clock, so
//! every replica computes the same result. The accessor functions (`year`, `to_millis`,
//! ...) accept a Time, a Date (at midnight UTC) or an Integer of microseconds since the
//! epoch (the form of a document's `ts`).

use chrono::{DateTime, Datelike, Duration, NaiveDate, Timelike, Utc};
use tally_value::{Time, Value};

use crate::error::{invalid_argument, wrong_type, FqlError, Result};
use crate::eval::Eval;
use crate::expr::{Call, FnSpec};

pub(crate) static SPECS: &[FnSpec] = &[
    FnSpec { name: "time", optional: &[], required: &[], handler: time },
    FnSpec { name: "epoch", optional: &[], required: &["unit"], handler: epoch },
    FnSpec { name: "date", optional: &[], required: &[], handler: date },
    FnSpec { name: "now", optional: &[], required: &[], handler: now },
    FnSpec { name: "time_add", optional: &[], required: &["offset", "unit"], handler: time_add },
    FnSpec { name: "time_subtract", optional: &[], required: &["offset", "unit"], handler: time_subtract },
    FnSpec { name: "time_diff", optional: &[], required: &["other", "unit"], handler: time_diff },
    FnSpec { name: "to_seconds", optional: &[], required: &[], handler: to_seconds },
    FnSpec { name: "to_millis", optional: &[], required: &[], handler: to_millis },
    FnSpec { name: "to_micros", optional: &[], required: &[], handler: to_micros },
    FnSpec { name: "to_nanos", optional: &[], required: &[], handler: to_nanos },
    FnSpec { name: "day_of_month", optional: &[], required: &[], handler: day_of_month },
    FnSpec { name: "day_of_week", optional: &[], required: &[], handler: day_of_week },
    FnSpec { name: "day_of_year", optional: &[], required: &[], handler: day_of_year },
    FnSpec { name: "month", optional: &[], required: &[], handler: month },
    FnSpec { name: "year", optional: &[], required: &[], handler: year },
    FnSpec { name: "hour", optional: &[], required: &[], handler: hour },
    FnSpec { name: "minute", optional: &[], required: &[], handler: minute },
    FnSpec { name: "second", optional: &[], required: &[], handler: second },
    FnSpec { name: "to_time", optional: &[], required: &[], handler: to_time },
    FnSpec { name: "to_date", optional: &[], required: &[], handler: to_date },
];

/// The transaction time as a `Time`.
fn txn_time(ev: &Eval<'_>) -> Time {
    let micros = i64::try_from(ev.txn_ts()).unwrap_or(i64::MAX);
    DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or_default()
}

fn out_of_range(name: &str) -> FqlError {
    invalid_argument("Time out of range; times must lie between years -262143 and 262142.").at(name)
}

/// Parse a time as v4 accepts it: RFC 3339 with an offset (`Z`, `+01:00`).
fn parse_time(s: &str) -> Option<Time> {
    if let Ok(t) = tally_value::parse_time(s) {
        return Some(t);
    }
    // Lenient forms: a lowercase `t`/`z`, or a space between date and time.
    let fixed = s.trim().replacen(' ', "T", 1).to_ascii_uppercase();
    tally_value::parse_time(&fixed).ok()
}

fn time(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let s = ev.str_arg(call, "time")?;
    if s == "now" {
        return Ok(Value::Time(txn_time(ev)));
    }
    parse_time(&s).map(Value::Time).ok_or_else(|| {
        invalid_argument(format!(
            "Cannot parse {s:?} as a time; use ISO 8601 with an offset, such as \"1970-01-01T00:00:00Z\"."
        ))
        .at("time")
    })
}

fn now(ev: &mut Eval<'_>, _call: &Call) -> Result<Value> {
    Ok(Value::Time(txn_time(ev)))
}

fn parse_date(s: &str, name: &'static str) -> Result<NaiveDate> {
    tally_value::parse_date(s).map_err(|_| {
        invalid_argument(format!("Cannot parse {s:?} as a date; use YYYY-MM-DD, such as \"1970-01-01\".")).at(name)
    })
}

fn date(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let s = ev.str_arg(call, "date")?;
    Ok(Value::Date(parse_date(&s, "date")?))
}

/// A time unit, as a number of nanoseconds; `days` is true for units of whole days
/// (the only units that apply to Dates).
#[derive(Clone, Copy, Debug)]
struct Unit {
    nanos: i128,
    days: bool,
}

fn unit_of(ev: &mut Eval<'_>, call: &Call) -> Result<Unit> {
    let s = ev.str_arg(call, "unit")?;
    let nanos: i128 = match s.as_str() {
        "day" | "days" => 86_400_000_000_000,
        "half day" | "half days" | "half_day" | "half_days" => 43_200_000_000_000,
        "hour" | "hours" => 3_600_000_000_000,
        "minute" | "minutes" => 60_000_000_000,
        "second" | "seconds" => 1_000_000_000,
        "millisecond" | "milliseconds" => 1_000_000,
        "microsecond" | "microseconds" => 1_000,
        "nanosecond" | "nanoseconds" => 1,
        other => {
            return Err(invalid_argument(format!(
                "Unknown time unit {other:?}; use day, half day, hour, minute, second, millisecond, microsecond or nanosecond."
            ))
            .at("unit"))
        }
    };
    Ok(Unit { nanos, days: nanos == 86_400_000_000_000 })
}

fn nanos_of(t: &Time) -> i128 {
    t.timestamp() as i128 * 1_000_000_000 + t.timestamp_subsec_nanos() as i128
}

fn time_from_nanos(n: i128) -> Option<Time> {
    let secs = i64::try_from(n.div_euclid(1_000_000_000)).ok()?;
    let sub = n.rem_euclid(1_000_000_000) as u32;
    DateTime::<Utc>::from_timestamp(secs, sub)
}

/// `Epoch(number, unit)`: the time `number` units after 1970-01-01T00:00:00Z.
fn epoch(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let n = ev.arg(call, "epoch")?;
    let unit = unit_of(ev, call)?;
    let nanos = match n {
        Value::Long(n) => (n as i128).checked_mul(unit.nanos),
        other => return Err(wrong_type("Integer", &other).at("epoch")),
    };
    nanos.and_then(time_from_nanos).map(Value::Time).ok_or_else(|| out_of_range("epoch"))
}

fn shift(ev: &mut Eval<'_>, call: &Call, sign: i128) -> Result<Value> {
    let name = call.name();
    let base = ev.primary(call)?;
    let offset = ev.long_arg(call, "offset")? as i128 * sign;
    let unit = unit_of(ev, call)?;
    match base {
        Value::Time(t) => offset
            .checked_mul(unit.nanos)
            .and_then(|d| nanos_of(&t).checked_add(d))
            .and_then(time_from_nanos)
            .map(Value::Time)
            .ok_or_else(|| out_of_range(name)),
        Value::Date(d) => {
            if !unit.days {
                return Err(invalid_argument("Dates can only be shifted by days; use unit \"days\".").at("unit"));
            }
            i64::try_from(offset)
                .ok()
                .and_then(Duration::try_days)
                .and_then(|x| d.checked_add_signed(x))
                .map(Value::Date)
                .ok_or_else(|| out_of_range(name))
        }
        other => Err(wrong_type("Time or Date", &other).at(name)),
    }
}

fn time_add(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    shift(ev, call, 1)
}

fn time_subtract(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    shift(ev, call, -1)
}

/// `TimeDiff(start, other, unit)`: `other - start` in whole units (truncated toward zero).
fn time_diff(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let a = ev.primary(call)?;
    let b = ev.arg(call, "other")?;
    let unit = unit_of(ev, call)?;
    let diff = match (&a, &b) {
        (Value::Time(x), Value::Time(y)) => nanos_of(y) - nanos_of(x),
        (Value::Date(x), Value::Date(y)) => {
            if !unit.days {
                return Err(invalid_argument("Differences between dates can only be taken in days.").at("unit"));
            }
            (*y - *x).num_days() as i128 * unit.nanos
        }
        (Value::Time(_), other) | (Value::Date(_), other) => {
            return Err(wrong_type(a.type_name(), other).at("other"));
        }
        (other, _) => return Err(wrong_type("Time or Date", other).at("time_diff")),
    };
    i64::try_from(diff / unit.nanos).map(Value::Long).map_err(|_| {
        invalid_argument("Time difference out of range for an Integer; use a larger unit.").at("time_diff")
    })
}

/// The time an accessor reads: a Time, a Date at midnight UTC, or microseconds since
/// the epoch.
fn time_of(ev: &mut Eval<'_>, call: &Call) -> Result<Time> {
    let name = call.name();
    match ev.primary(call)? {
        Value::Time(t) => Ok(t),
        Value::Date(d) => Ok(d.and_hms_opt(0, 0, 0).map(|x| x.and_utc()).unwrap_or_default()),
        Value::Long(micros) => DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(|| out_of_range(name)),
        other => Err(wrong_type("Time", &other).at(name)),
    }
}

fn since_epoch(ev: &mut Eval<'_>, call: &Call, per_unit: i128) -> Result<Value> {
    let t = time_of(ev, call)?;
    let n = nanos_of(&t).div_euclid(per_unit);
    i64::try_from(n)
        .map(Value::Long)
        .map_err(|_| invalid_argument("Time out of range for an Integer of this unit.").at(call.name()))
}

fn to_seconds(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    since_epoch(ev, call, 1_000_000_000)
}

fn to_millis(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    since_epoch(ev, call, 1_000_000)
}

fn to_micros(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    since_epoch(ev, call, 1_000)
}

fn to_nanos(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    since_epoch(ev, call, 1)
}

fn field(ev: &mut Eval<'_>, call: &Call, f: fn(&Time) -> i64) -> Result<Value> {
    let t = time_of(ev, call)?;
    Ok(Value::Long(f(&t)))
}

fn day_of_month(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    field(ev, call, |t| t.day() as i64)
}

/// ISO day of week: Monday is 1, Sunday is 7.
fn day_of_week(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    field(ev, call, |t| t.weekday().number_from_monday() as i64)
}

fn day_of_year(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    field(ev, call, |t| t.ordinal() as i64)
}

fn month(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    field(ev, call, |t| t.month() as i64)
}

fn year(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    field(ev, call, |t| t.year() as i64)
}

fn hour(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    field(ev, call, |t| t.hour() as i64)
}

fn minute(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    field(ev, call, |t| t.minute() as i64)
}

fn second(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    field(ev, call, |t| t.second() as i64)
}

/// `ToTime`: a Time as is, a Date at midnight UTC, an ISO 8601 string ("now" is the
/// transaction time), or microseconds since the epoch.
fn to_time(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    match ev.primary(call)? {
        v @ Value::Time(_) => Ok(v),
        Value::Date(d) => Ok(Value::Time(d.and_hms_opt(0, 0, 0).map(|x| x.and_utc()).unwrap_or_default())),
        Value::String(s) if s == "now" => Ok(Value::Time(txn_time(ev))),
        Value::String(s) => parse_time(&s).map(Value::Time).ok_or_else(|| {
            invalid_argument(format!("Cannot cast String {s:?} to Time; use ISO 8601 with an offset.")).at("to_time")
        }),
        Value::Long(micros) => {
            DateTime::<Utc>::from_timestamp_micros(micros).map(Value::Time).ok_or_else(|| out_of_range("to_time"))
        }
        other => Err(invalid_argument(format!("Cannot cast {} to Time.", other.type_name())).at("to_time")),
    }
}

/// `ToDate`: a Date as is, the UTC date of a Time, or a `YYYY-MM-DD` string.
fn to_date(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    match ev.primary(call)? {
        v @ Value::Date(_) => Ok(v),
        Value::Time(t) => Ok(Value::Date(t.date_naive())),
        Value::String(s) => match tally_value::parse_date(&s) {
            Ok(d) => Ok(Value::Date(d)),
            Err(_) => match parse_time(&s) {
                Some(t) => Ok(Value::Date(t.date_naive())),
                None => {
                    Err(invalid_argument(format!("Cannot cast String {s:?} to Date; use YYYY-MM-DD.")).at("to_date"))
                }
            },
        },
        other => Err(invalid_argument(format!("Cannot cast {} to Date.", other.type_name())).at("to_date")),
    }
}
