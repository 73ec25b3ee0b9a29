//! The JSON wire codec of FQL v4, as the official drivers produce and parse it.
//!
//! Special forms: `{"@ref": {"id", "collection"?, "database"?}}`, `{"@ts": RFC 3339}`,
//! `{"@date": "YYYY-MM-DD"}`, `{"@bytes": base64}`, `{"@set": expr}`, `{"@query": lambda}`,
//! and `{"@obj": {...}}` for an object whose keys would otherwise look special.
//! Output uses URL-safe base64 with padding (both alphabets are accepted on input),
//! and times render with 0, 3, 6 or 9 fractional digits, as Fauna does.

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use std::sync::Arc;

use chrono::{NaiveDate, SecondsFormat};
use serde_json::{Map, Number, Value as Json};

use crate::value::{Object, Ref, Time, Value};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WireError {
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("invalid {form} value: {detail}")]
    BadForm { form: &'static str, detail: String },
    #[error("number {0} is out of range for a 64-bit integer")]
    NumberRange(String),
}

fn bad(form: &'static str, detail: impl Into<String>) -> WireError {
    WireError::BadForm { form, detail: detail.into() }
}

/// Deepest JSON nesting accepted from clients (as v4, which parses with a 1,000-level limit).
pub const JSON_DEPTH_MAX: usize = 1000;

/// The nesting depth of JSON text (arrays and objects), found without parsing or recursion
/// so hostile input is measured cheaply. Stops counting past `limit + 1`.
pub fn json_depth(bytes: &[u8], limit: usize) -> usize {
    let (mut depth, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_str {
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    max = depth;
                    if max > limit {
                        return max;
                    }
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Parse JSON without serde_json's 128-level recursion limit. Callers bound the depth
/// first (see [`json_depth`]) and run on threads with large stacks.
pub fn parse_json_unbounded<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    let v = T::deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// Parse text as JSON and decode it as a value.
pub fn from_json_str(text: &str) -> Result<Value, WireError> {
    let json: Json = serde_json::from_str(text).map_err(|e| WireError::Json(e.to_string()))?;
    from_json(&json)
}

/// Decode a JSON document as data: objects become objects, special forms become typed values.
pub fn from_json(json: &Json) -> Result<Value, WireError> {
    Ok(match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => number(n)?,
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => Value::Array(items.iter().map(from_json).collect::<Result<_, _>>()?),
        Json::Object(map) => {
            if let Some(v) = special(map)? {
                v
            } else {
                Value::Object(plain_object(map)?)
            }
        }
    })
}

pub(crate) fn number(n: &Number) -> Result<Value, WireError> {
    if let Some(i) = n.as_i64() {
        Ok(Value::Long(i))
    } else if n.is_u64() {
        Err(WireError::NumberRange(n.to_string()))
    } else {
        Ok(Value::Double(n.as_f64().unwrap_or(f64::NAN)))
    }
}

fn plain_object(map: &Map<String, Json>) -> Result<Object, WireError> {
    map.iter().map(|(k, v)| Ok((k.clone(), from_json(v)?))).collect()
}

/// Decode a one-key `@` special form; `Ok(None)` when `map` is not one.
pub fn special(map: &Map<String, Json>) -> Result<Option<Value>, WireError> {
    if map.len() != 1 {
        return Ok(None);
    }
    let Some((key, inner)) = map.iter().next() else {
        return Ok(None);
    };
    let v = match key.as_str() {
        "@ref" => Value::Ref(decode_ref(inner)?),
        "@ts" => Value::Time(parse_time(inner.as_str().ok_or_else(|| bad("@ts", "expected a string"))?)?),
        "@date" => {
            let s = inner.as_str().ok_or_else(|| bad("@date", "expected a string"))?;
            Value::Date(parse_date(s)?)
        }
        "@bytes" => {
            let s = inner.as_str().ok_or_else(|| bad("@bytes", "expected a base64 string"))?;
            Value::Bytes(decode_base64(s)?)
        }
        "@set" => Value::Set(Box::new(from_json(inner)?)),
        "@query" => Value::Query(Box::new(query_body_from_json(inner)?)),
        "@obj" => match inner {
            Json::Object(m) => Value::Object(plain_object(m)?),
            _ => return Err(bad("@obj", "expected an object")),
        },
        _ => return Ok(None),
    };
    Ok(Some(v))
}

fn decode_ref(inner: &Json) -> Result<Ref, WireError> {
    let m = match inner {
        Json::Object(m) => m,
        // The drivers' one-argument `Ref("collections/c/1")`.
        Json::String(path) => return crate::legacy_ref::parse(path).map_err(|e| bad("@ref", e)),
        _ => return Err(bad("@ref", "expected an object or a path string")),
    };
    let id = match m.get("id") {
        Some(Json::String(s)) => s.clone(),
        Some(Json::Number(n)) => n.to_string(),
        _ => return Err(bad("@ref", "missing string \"id\"")),
    };
    let sub = |k: &str| -> Result<Option<Arc<Ref>>, WireError> {
        match m.get(k) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Object(o)) => match o.get("@ref") {
                Some(r) if o.len() == 1 => Ok(Some(Arc::new(decode_ref(r)?))),
                _ => Err(bad("@ref", format!("\"{k}\" must be a ref"))),
            },
            Some(_) => Err(bad("@ref", format!("\"{k}\" must be a ref"))),
        }
    };
    Ok(Ref { id: id.into(), collection: sub("collection")?, database: sub("database")? })
}

pub fn decode_base64(s: &str) -> Result<Vec<u8>, WireError> {
    let padded;
    let s = if !s.len().is_multiple_of(4) {
        padded = format!("{s}{}", "=".repeat(4 - s.len() % 4));
        padded.as_str()
    } else {
        s
    };
    URL_SAFE.decode(s).or_else(|_| STANDARD.decode(s)).map_err(|e| bad("@bytes", e.to_string()))
}

pub fn encode_base64(b: &[u8]) -> String {
    URL_SAFE.encode(b)
}

/// Parse an ISO-8601 / RFC 3339 time with an offset (`Z` or `+hh:mm`).
pub fn parse_time(s: &str) -> Result<Time, WireError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| bad("@ts", format!("{s:?}: {e}")))
}

pub fn parse_date(s: &str) -> Result<NaiveDate, WireError> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|e| bad("@date", format!("{s:?}: {e}")))
}

pub fn format_time(t: &Time) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Encode a value for the wire.
pub fn to_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Long(n) => Json::Number((*n).into()),
        Value::Double(d) => Number::from_f64(*d).map(Json::Number).unwrap_or(Json::Null),
        Value::String(s) => Json::String(s.clone()),
        Value::Bytes(b) => tagged("@bytes", Json::String(encode_base64(b))),
        Value::Date(d) => tagged("@date", Json::String(d.format("%Y-%m-%d").to_string())),
        Value::Time(t) => tagged("@ts", Json::String(format_time(t))),
        Value::Ref(r) => ref_json(r),
        Value::Set(s) => tagged("@set", to_json(s)),
        Value::Query(q) => tagged("@query", query_json(q)),
        Value::Array(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Object(o) => {
            let map: Map<String, Json> = o.iter().map(|(k, v)| (k.to_string(), to_json(v))).collect();
            if o.keys().any(|k| k.starts_with('@')) {
                tagged("@obj", Json::Object(map))
            } else {
                Json::Object(map)
            }
        }
    }
}

/// A query held as data, in the shape v4 rendered it: a lambda's keys in the order
/// `api_version`, `lambda`, `expr`, and `Let` bindings as one object in binding order
/// (`{"let": {"a": 1, "b": 2}, "in": …}`), however the client spelled them. Stored
/// bodies keep the array form (an [`Object`] is sorted, binding order is not); this is
/// only how they are shown. [`query_body_from_json`] reads either form back.
fn query_json(v: &Value) -> Json {
    match v {
        Value::Object(o) if o.contains_key("lambda") => {
            let mut m = Map::new();
            for k in ["api_version", "lambda", "expr"] {
                if let Some(x) = o.get(k) {
                    m.insert(k.to_string(), query_json(x));
                }
            }
            for (k, x) in o.iter().filter(|(k, _)| !matches!(k.as_str(), "api_version" | "lambda" | "expr")) {
                m.insert(k.to_string(), query_json(x));
            }
            Json::Object(m)
        }
        Value::Object(o) if o.len() == 2 && o.contains_key("let") && o.contains_key("in") => {
            let mut m = Map::new();
            m.insert("let".into(), let_bindings_json(&o["let"]));
            m.insert("in".into(), query_json(&o["in"]));
            Json::Object(m)
        }
        // A literal object: its field names are data, its values expressions.
        Value::Object(o) if o.len() == 1 && matches!(o.get("object"), Some(Value::Object(_))) => {
            let Some(Value::Object(fields)) = o.get("object") else { return to_json(v) };
            let inner: Map<String, Json> = fields.iter().map(|(k, x)| (k.to_string(), query_json(x))).collect();
            tagged(
                "object",
                if fields.keys().any(|k| k.starts_with('@')) {
                    tagged("@obj", Json::Object(inner))
                } else {
                    Json::Object(inner)
                },
            )
        }
        Value::Object(o) if !o.keys().any(|k| k.starts_with('@')) => {
            Json::Object(o.iter().map(|(k, x)| (k.to_string(), query_json(x))).collect())
        }
        Value::Array(items) => Json::Array(items.iter().map(query_json).collect()),
        other => to_json(other),
    }
}

/// `[{"a": 1}, {"b": 2}]` as `{"a": 1, "b": 2}` (in order) when every binding has its
/// own name; otherwise (a name bound twice) the array form, which alone can say that.
fn let_bindings_json(v: &Value) -> Json {
    let Value::Array(items) = v else { return query_json(v) };
    let mut m = Map::new();
    for item in items {
        match item {
            Value::Object(b) if b.len() == 1 => {
                let Some((k, x)) = b.iter().next() else { return query_json(v) };
                if m.insert(k.to_string(), query_json(x)).is_some() {
                    return query_json(v);
                }
            }
            _ => return query_json(v),
        }
    }
    Json::Object(m)
}

/// Read a query body (`@query`, `Query(…)`) sent by a client: as [`from_json`], except
/// that `Let` bindings written as one object (v4's rendering, kept in order by the JSON
/// parser) become the ordered array form, since an [`Object`] would sort them and
/// change what each binding sees.
pub fn query_body_from_json(json: &Json) -> Result<Value, WireError> {
    from_json(&let_objects_as_arrays(json))
}

fn let_objects_as_arrays(json: &Json) -> Json {
    match json {
        Json::Object(m) if m.len() == 2 && m.contains_key("in") => match m.get("let") {
            Some(Json::Object(bindings)) => {
                let arr = bindings.iter().map(|(k, x)| {
                    let mut one = Map::new();
                    one.insert(k.clone(), let_objects_as_arrays(x));
                    Json::Object(one)
                });
                let mut out = Map::new();
                out.insert("let".into(), Json::Array(arr.collect()));
                out.insert("in".into(), let_objects_as_arrays(&m["in"]));
                Json::Object(out)
            }
            _ => Json::Object(m.iter().map(|(k, x)| (k.clone(), let_objects_as_arrays(x))).collect()),
        },
        // A literal object: its field names are data, its values expressions.
        Json::Object(m) if m.len() == 1 && matches!(m.get("object"), Some(Json::Object(_))) => {
            let Some(Json::Object(fields)) = m.get("object") else { return json.clone() };
            let mut out = Map::new();
            out.insert(
                "object".into(),
                Json::Object(fields.iter().map(|(k, x)| (k.clone(), let_objects_as_arrays(x))).collect()),
            );
            Json::Object(out)
        }
        // Special forms (`@ref`, `@obj`, …) are data; leave them as they are.
        Json::Object(m) if m.keys().any(|k| k.starts_with('@')) => json.clone(),
        Json::Object(m) => Json::Object(m.iter().map(|(k, x)| (k.clone(), let_objects_as_arrays(x))).collect()),
        Json::Array(items) => Json::Array(items.iter().map(let_objects_as_arrays).collect()),
        other => other.clone(),
    }
}

pub fn to_json_string(v: &Value) -> String {
    // Serializing a serde_json::Value cannot fail.
    serde_json::to_string(&to_json(v)).unwrap_or_default()
}

fn tagged(tag: &str, inner: Json) -> Json {
    let mut m = Map::new();
    m.insert(tag.to_string(), inner);
    Json::Object(m)
}

fn ref_json(r: &Ref) -> Json {
    let mut m = Map::new();
    m.insert("id".into(), Json::String(r.id.to_string()));
    if let Some(c) = &r.collection {
        m.insert("collection".into(), ref_json(c));
    }
    if let Some(d) = &r.database {
        m.insert("database".into(), ref_json(d));
    }
    tagged("@ref", Json::Object(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) {
        let v = from_json_str(text).unwrap();
        assert_eq!(to_json_string(&v), text, "round trip of {text}");
    }

    #[test]
    fn special_forms_round_trip() {
        round_trip(
            r#"{"@ref":{"id":"2","collection":{"@ref":{"id":"players","collection":{"@ref":{"id":"collections"}}}}}}"#,
        );
        round_trip(r#"{"@ts":"1970-01-01T00:00:00.123456789Z"}"#);
        round_trip(r#"{"@ts":"1970-01-01T00:00:12Z"}"#);
        round_trip(r#"{"@date":"1970-01-01"}"#);
        round_trip(r#"{"@bytes":"AQID"}"#);
        round_trip(r#"{"@obj":{"@name":1}}"#);
        round_trip(r#"[1,1.0,"x",null,true]"#);
    }

    #[test]
    fn long_and_double_stay_apart() {
        assert_eq!(from_json_str("1").unwrap(), Value::Long(1));
        assert_eq!(from_json_str("1.0").unwrap(), Value::Double(1.0));
        assert!(matches!(from_json_str("18446744073709551615"), Err(WireError::NumberRange(_))));
    }

    /// serde_json's default float parser may be off by one ulp; a double a driver sends
    /// must be stored exactly (found by tests/fuzz_wire.rs; fixed by `float_roundtrip`).
    #[test]
    fn doubles_parse_exactly() {
        for d in [7.790645249952438e-39_f64, 1.7976931348623157e308, 5e-324, 0.1, 2.2250738585072014e-308] {
            let text = serde_json::to_string(&d).unwrap();
            assert_eq!(from_json_str(&text).unwrap(), Value::Double(d), "{text}");
        }
    }

    #[test]
    fn bytes_accept_both_alphabets() {
        assert_eq!(from_json_str(r#"{"@bytes":"-_8="}"#).unwrap(), Value::Bytes(vec![0xfb, 0xff]));
        assert_eq!(from_json_str(r#"{"@bytes":"+/8="}"#).unwrap(), Value::Bytes(vec![0xfb, 0xff]));
        assert_eq!(to_json_string(&Value::Bytes(vec![0xfb, 0xff])), r#"{"@bytes":"-_8="}"#);
    }

    #[test]
    fn object_keys_are_canonical() {
        let v = from_json_str(r#"{"b":1,"a":2}"#).unwrap();
        assert_eq!(to_json_string(&v), r#"{"a":2,"b":1}"#);
    }
}
