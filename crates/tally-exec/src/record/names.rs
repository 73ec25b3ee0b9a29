//! The well-known names of record version 2: strings that FQL v4 queries spell again and
//! again (function and argument keys, `@ref`, `collection`, `data`, …), each written in a
//! `name` as its number in [`NAMES`] instead of its bytes (docs/record.md, "Version 2").
//!
//! The list is part of the record format: a number means the same string in every record
//! of version 2, so entries are never removed, reordered or changed. Version 2 is exactly
//! the first [`IN_VERSION_2`] names: a name appended later would make version-2 records that
//! wrote it out undecodable (they would hold a well-known name written out), so appending
//! takes a new record version whose decoder accepts the longer list in its own records
//! only. The first 64 take one byte as an object key, the rest two.

/// How many of [`NAMES`] record version 2 has: its decoder refuses a larger number, and a
/// string that is a name only past this count is no well-known name in version 2.
pub const IN_VERSION_2: usize = 171;

macro_rules! well_known_names {
    ($($name:literal),* $(,)?) => {
        /// The well-known names, by number.
        pub const NAMES: &[&str] = &[$($name),*];

        /// The number of the well-known name `s`, if it is one. A `match` on the string,
        /// which the compiler turns into a branch on the length and a few compares.
        pub fn number(s: &str) -> Option<u32> {
            match s {
                $($name => Some(const { position($name) }),)*
                _ => None,
            }
        }
    };
}

/// Where `name` is in [`NAMES`] (at compile time, for [`number`]'s arms). A name listed
/// twice fails the build: a string would have two numbers.
const fn position(name: &str) -> u32 {
    let mut found = None;
    let mut i = 0;
    while i < NAMES.len() {
        if same(NAMES[i].as_bytes(), name.as_bytes()) {
            if found.is_some() {
                panic!("a well-known name is listed twice");
            }
            found = Some(i as u32);
        }
        i += 1;
    }
    match found {
        Some(n) => n,
        None => panic!("a well-known name's arm is not in the list"),
    }
}

const fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

well_known_names! {
    "@ref", "id", "collection", "collections", "object", "data", "var", "select", "from", "let", "in", "if", "then",
    "else", "do", "get", "create", "update", "replace", "delete", "params", "lambda", "expr", "map", "foreach",
    "filter", "paginate", "match", "index", "indexes", "terms", "values", "size", "after", "before", "add",
    "subtract", "multiply", "divide", "equals", "lt", "lte", "gt", "gte", "and", "or", "not", "abort", "call",
    "function", "functions", "arguments", "exists", "ts", "@ts", "@set", "@obj", "@date", "@query", "query", "now",
    "time", "database", "databases", "default", "all", "any", "count", "sum", "mean", "max", "min", "contains_path",
    "contains_field", "contains_value", "path", "field", "value", "concat", "separator", "format", "upper_case",
    "lower_case", "length", "to_string", "to_number", "to_integer", "to_double", "to_time", "to_date", "to_object",
    "to_array", "append", "prepend", "take", "drop", "reverse", "distinct", "union", "intersection", "difference",
    "join", "with", "range", "reduce", "initial", "merge", "documents", "events", "singleton", "is_empty",
    "is_nonempty", "is_null", "is_string", "is_number", "is_array", "is_object", "is_ref", "new_id",
    "create_collection", "create_index", "create_function", "create_role", "create_key", "create_database", "name",
    "source", "body", "role", "roles", "membership", "privileges", "actions", "read", "write", "history_days",
    "ttl_days", "ttl", "unique", "serialized", "credentials", "password", "secret", "login", "logout", "identify",
    "identity", "current_identity", "has_current_identity", "current_token", "tokens", "keys", "key_from_secret",
    "access_providers", "remove", "insert", "action", "at", "timestamp", "date", "epoch", "unit", "time_add",
    "time_subtract", "time_diff", "modulo", "abs", "round", "trunc", "ceil", "floor",
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The list is a format: its length and a few entries are pinned, every entry is
    /// distinct and found by [`number`] at its own place.
    #[test]
    fn the_list_is_fixed_and_numbers_agree() {
        assert_eq!(NAMES.len(), 171);
        assert_eq!(IN_VERSION_2, NAMES.len(), "a name appended takes a new record version");
        assert_eq!(
            (NAMES[0], NAMES[2], NAMES[5], NAMES[63], NAMES[64], NAMES[NAMES.len() - 1]),
            ("@ref", "collection", "data", "databases", "default", "floor")
        );
        for (i, n) in NAMES.iter().enumerate() {
            assert_eq!(number(n), Some(i as u32), "{n}");
        }
        for other in ["", "Ref", "@re", "@refs", "accounts", "balance", "é"] {
            assert_eq!(number(other), None, "{other}");
        }
    }
}
