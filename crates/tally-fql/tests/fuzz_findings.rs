//! Regression tests for what the fuzz targets (`tests/fuzz_parse.rs`, tally-server's
//! `tests/fuzz_eval.rs`) found, one test per finding, each asserting the fixed behaviour.

mod common;

use common::Db;
use serde_json::json;

/// A lambda whose body has an object literal with an `@` key is held as data in the
/// wire's escaped form (`{"object": {"@obj": {...}}}`); calling it must work.
#[test]
fn a_function_returning_an_object_with_an_at_key_can_be_called() {
    let mut db = Db::new();
    let body = json!({"query": {"lambda": "x", "expr": {"object": {"@a": {"var": "x"}, "b": 2}}}});
    db.q(json!({"create_function": {"object": {"name": "f", "body": body}}}));
    let out = db.q(json!({"call": {"function": "f"}, "arguments": [1]}));
    assert_eq!(out, json!({"@obj": {"@a": 1, "b": 2}}));
    // An inline lambda too.
    let out = db.q(json!({"map": {"lambda": "x", "expr": {"object": {"@ref": {"var": "x"}}}}, "collection": [7]}));
    assert_eq!(out, json!([{"@obj": {"@ref": 7}}]));
}

/// A client's literal object whose one key is `@obj` keeps its meaning.
#[test]
fn a_literal_object_keyed_at_obj_is_still_that_object() {
    let mut db = Db::new();
    let out = db.q(json!({"object": {"@obj": {"object": {"a": 1}}}}));
    assert_eq!(out, json!({"@obj": {"@obj": {"a": 1}}}));
}

/// A literal object inside a lambda made a value (`unparse`) stays a literal (it used to
/// read back as a call, or not at all when empty).
#[test]
fn literal_objects_in_a_stored_lambda_stay_literals() {
    let mut db = Db::new();
    let body = json!({"lambda": "x", "expr": [{"@obj": {"add": [1, 2]}}, {"@obj": {}}]});
    db.q(json!({"create_function": {"object": {"name": "g", "body": body}}}));
    let out = db.q(json!({"call": {"function": "g"}, "arguments": [0]}));
    assert_eq!(out, json!([{"add": [1, 2]}, {}]));
}

/// A `let` variable whose name starts with `@` keeps its name in a lambda made a value.
#[test]
fn an_at_named_let_variable_survives_storage() {
    let mut db = Db::new();
    let body = json!({"lambda": "x", "expr": {"let": {"@v": {"var": "x"}}, "in": {"var": "@v"}}});
    db.q(json!({"create_function": {"object": {"name": "h", "body": body}}}));
    assert_eq!(db.q(json!({"call": {"function": "h"}, "arguments": [5]})), json!(5));
}
