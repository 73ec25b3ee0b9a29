//! Refs written as paths: `{"@ref": "collections/widget/123"}`.
//!
//! The drivers' one-argument `Ref("…")` sends a path string instead of a ref object; v4
//! accepted these forms (its "legacy" ref syntax) and so does Tally:
//!
//! | path | ref |
//! |---|---|
//! | `collections/c/123`, `classes/c/123` | document 123 of collection `c` |
//! | `collections/c`, `classes/c` | `Collection("c")` |
//! | `keys/1`, `tokens/1`, `credentials/1` | a key, token or credentials document |
//! | `keys`, `tokens`, `credentials` | the native collection itself |
//! | `databases/d`, `indexes/i`, `functions/f`, `roles/r`, `access_providers/a` | that schema document |
//! | `databases`, `collections`, `classes`, `indexes`, `functions`, `roles`, `access_providers` | the native collection |
//! | `tokens/self`, `credentials/self`, `collections/c/self` | the caller's own token, credentials or identity |
//!
//! A `self` path is kept as a ref whose id is `self`; the query parser resolves it
//! against the caller (see `tally_fql::fns::identity::self_ref`). Document ids are
//! decimal and must fit a signed 64-bit integer, as in v4; names cannot be `self` or
//! `events` or contain any of `/,()&=`. `…/events` paths (v4's event refs) are refused
//! with a message naming `Events()`.

use crate::value::Ref;

/// Why a path is not a ref.
pub fn parse(path: &str) -> Result<Ref, String> {
    if path.len() > PATH_MAX {
        return Err(format!("A ref path is at most {PATH_MAX} bytes."));
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts.contains(&"events") {
        return Err(format!("`{path}` names an event path; v4 event refs are not supported, use Events(ref)."));
    }
    let bad = || {
        format!(
            "`{path}` is not a ref path; write `collections/<name>/<id>`, `databases/<name>`, `indexes/<name>`, \
             `functions/<name>`, `roles/<name>`, `keys/<id>`, `tokens/self` or `credentials/self`."
        )
    };
    let r = match parts.as_slice() {
        [native] => match *native {
            "classes" | "collections" => Ref::native("collections"),
            "databases" | "indexes" | "functions" | "roles" | "access_providers" | "keys" | "tokens"
            | "credentials" => Ref::native(native),
            _ => return Err(bad()),
        },
        ["classes" | "collections", name] => Ref::collection(checked_name(name).ok_or_else(bad)?),
        [kind @ ("databases" | "indexes" | "functions" | "roles" | "access_providers"), name] => {
            Ref::doc(Ref::native(kind), checked_name(name).ok_or_else(bad)?)
        }
        [kind @ ("keys" | "tokens" | "credentials"), id] => {
            Ref::doc(Ref::native(kind), checked_id(id).ok_or_else(bad)?)
        }
        ["classes" | "collections", name, id] => {
            Ref::doc(Ref::collection(checked_name(name).ok_or_else(bad)?), checked_id(id).ok_or_else(bad)?)
        }
        _ => return Err(bad()),
    };
    Ok(r)
}

/// Longest path accepted (the longest valid one is two names and an id).
pub const PATH_MAX: usize = 4096;

fn checked_name(s: &str) -> Option<&str> {
    let ok = !s.is_empty() && s != "self" && s != "events" && !s.contains([',', '(', ')', '&', '=']);
    ok.then_some(s)
}

/// A decimal id that fits an i64, or `self`.
fn checked_id(s: &str) -> Option<&str> {
    if s == "self" {
        return Some(s);
    }
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits && s.parse::<i64>().is_ok()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_refs() {
        assert_eq!(parse("collections/widget/123"), Ok(Ref::doc(Ref::collection("widget"), "123")));
        assert_eq!(parse("classes/widget/123"), Ok(Ref::doc(Ref::collection("widget"), "123")));
        assert_eq!(parse("collections/widget"), Ok(Ref::collection("widget")));
        assert_eq!(parse("classes"), Ok(Ref::native("collections")));
        assert_eq!(parse("databases/acme"), Ok(Ref::doc(Ref::native("databases"), "acme")));
        assert_eq!(parse("indexes/by_name"), Ok(Ref::doc(Ref::native("indexes"), "by_name")));
        assert_eq!(parse("access_providers/ap"), Ok(Ref::doc(Ref::native("access_providers"), "ap")));
        assert_eq!(parse("keys/42"), Ok(Ref::doc(Ref::native("keys"), "42")));
        assert_eq!(parse("tokens"), Ok(Ref::native("tokens")));
        assert_eq!(parse("tokens/self"), Ok(Ref::doc(Ref::native("tokens"), "self")));
        assert_eq!(parse("credentials/self"), Ok(Ref::doc(Ref::native("credentials"), "self")));
        assert_eq!(parse("collections/users/self"), Ok(Ref::doc(Ref::collection("users"), "self")));
    }

    #[test]
    fn malformed_paths_are_refused() {
        for p in [
            "",
            "/",
            "collections/",
            "collections//1",
            "collections/w/abc",
            "collections/w/-1",
            "collections/w/9223372036854775808",
            "collections/w/1/2",
            "collections/self/1",
            "indexes/a,b",
            "databases/self",
            "widgets/1",
            "keys/abc",
        ] {
            assert!(parse(p).is_err(), "{p:?} should be refused");
        }
        assert!(parse("collections/w/1/events").unwrap_err().contains("Events(ref)"));
        assert!(parse(&"a/".repeat(PATH_MAX)).is_err());
    }
}
