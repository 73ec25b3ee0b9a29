//! `expr::from_text` (JSON text straight to an expression) against the tree parser
//! (`serde_json::Value`, then `expr::parse`): wherever the text path gives an expression,
//! the tree path gives the same one; and the text path does take the shapes real
//! queries have, so the request path really skips the tree.

#[path = "common/json_gen.rs"]
mod json_gen;
use json_gen::JsonGen;

use serde_json::Value as Json;
use tally_fql::expr::{from_text, parse, EXPR_NODES_MAX};

/// The tree path's answer, as comparable text.
fn via_tree(text: &str) -> Result<String, String> {
    let json: Json = tally_value::parse_json_unbounded(text.as_bytes()).map_err(|e| format!("json: {e}"))?;
    parse(&json).map(|e| format!("{e:?}")).map_err(|e| format!("{e:?}"))
}

/// Compare the two paths on `text`; true when the text path took it.
fn same(text: &str) -> bool {
    let Some(fast) = from_text(text.as_bytes()).map(|e| format!("{e:?}")) else { return false };
    assert_eq!(via_tree(text), Ok(fast), "{text}");
    true
}

fn r(id: &str, coll: &str) -> String {
    format!(
        r#"{{"@ref":{{"id":"{id}","collection":{{"@ref":{{"id":"{coll}","collection":{{"@ref":{{"id":"collections"}}}}}}}}}}}}"#
    )
}

/// What the benchmark's transfer and the drivers send: the text path must take these.
fn taken() -> Vec<String> {
    let (a, b) = (r("1", "accounts"), r("2", "accounts"));
    vec![
        format!(
            r#"{{"let":[{{"a":{{"get":{a}}}}},{{"b":{{"get":{b}}}}}],"in":{{"if":{{"lt":[{{"select":["data","balance"],"from":{{"var":"a"}}}},5]}},"then":{{"abort":"insufficient funds"}},"else":{{"do":[{{"update":{a},"params":{{"object":{{"data":{{"object":{{"balance":{{"subtract":[{{"select":["data","balance"],"from":{{"var":"a"}}}},5]}}}}}}}}}}}},{{"create":{{"collection":"transfers"}},"params":{{"object":{{"data":{{"object":{{"from":{a},"to":{b},"amount":5}}}}}}}}}}]}}}}}}"#
        ),
        format!(r#"{{"get":{a}}}"#),
        r#"{"paginate":{"match":{"index":"by_k"},"terms":"x"},"size":10}"#.into(),
        r#"{"map":{"paginate":{"documents":{"collection":"c"}}},"collection":{"lambda":"x","expr":{"get":{"var":"x"}}}}"#.into(),
        r#"{"let":{"x":1,"y":{"var":"x"}},"in":{"add":[{"var":"x"},{"var":"y"}]}}"#.into(),
        r#"{"let":[{"x":1,"y":2},{}],"in":null}"#.into(),
        r#"{"object":{}}"#.into(),
        r#"{"object":{"a":[1,2.5,-3,true,null,"s"],"b":{"object":{"c":{"add":[1,2]}}}}}"#.into(),
        r#"{"ref":{"collection":"c"},"id":"1"}"#.into(),
        r#"{"@ref":{"id":"self","collection":{"@ref":{"id":"users","collection":{"@ref":{"id":"collections"}}}}}}"#.into(),
        r#"{"@ref":{"id":"1","collection":null,"database":null,"extra":[1,{"x":2}]}}"#.into(),
        r#"{"@ts":"2020-01-01T00:00:00Z"}"#.into(),
        r#"{"@date":"2020-01-01"}"#.into(),
        r#"{"@bytes":"AQID"}"#.into(),
        r#"{"@set":{"match":{"@ref":{"id":"i","collection":{"@ref":{"id":"indexes"}}}}}}"#.into(),
        r#"{"@query":{"lambda":"x","expr":{"var":"x"}}}"#.into(),
        r#"{"@obj":{"@a":1}}"#.into(),
        r#"{"query":{"lambda":"x","expr":{"let":{"a":1,"b":2},"in":{"var":"a"}}}}"#.into(),
        r#"{"filter":{"query":{"lambda":"x","expr":true}},"collection":[1,2]}"#.into(),
        r#"{"concat":["a","\u00e9\n\"",{"to_string":1}],"separator":"-"}"#.into(),
        r#"{"g\u0065t":{"collection":"c"}}"#.into(),
        "[1,-1,0,-0,1.0,1e3,-1.5e300,9223372036854775807,-9223372036854775808,18446744073709551616,-9223372036854775809]".into(),
        r#" {"add" : [ 1 , 2 ] } "#.into(),
        "null".into(),
        "\"just a string\"".into(),
        "[]".into(),
        format!("{}1{}", "[".repeat(127), "]".repeat(127)),
    ]
}

/// Shapes the text path declines (the tree path answers them, often with an error).
fn declined() -> Vec<String> {
    vec![
        "".into(),
        "{".into(),
        "[1,]".into(),
        "nul".into(),
        "\"abc".into(),
        r#"{"get":1} x"#.into(),
        "{}".into(),
        "1e400".into(),
        "9223372036854775808".into(),
        r#"{"get":1,"get":2}"#.into(),
        r#"{"add":[1],"add":[2]}"#.into(),
        r#"{"object":{"a":1,"a":2}}"#.into(),
        r#"{"object":{"@obj":{"@x":1}}}"#.into(),
        r#"{"object":{"@obj":{"x":1}}}"#.into(),
        r#"{"object":{"a":1},"x":1}"#.into(),
        r#"{"object":1}"#.into(),
        r#"{"object":[1]}"#.into(),
        r#"{"let":[{"x":1,"x":2}],"in":1}"#.into(),
        r#"{"let":[{"@obj":{"@x":1}}],"in":1}"#.into(),
        r#"{"let":{"x":1,"x":2},"in":1}"#.into(),
        r#"{"let":[1],"in":1}"#.into(),
        r#"{"let":5,"in":1}"#.into(),
        r#"{"let":[],"in":1,"x":2}"#.into(),
        r#"{"let":[]}"#.into(),
        r#"{"@ref":{"id":1}}"#.into(),
        r#"{"@ref":"collections/c/1"}"#.into(),
        r#"{"@ref":{"collection":null}}"#.into(),
        r#"{"@ref":{"id":"1","id":"2"}}"#.into(),
        r#"{"@ref":{"id":"1","collection":{"@ref":{"id":"c"},"x":1}}}"#.into(),
        r#"{"@ref":{"id":"1","collection":5}}"#.into(),
        r#"{"@ref":{"id":"1","x":"\ud800"}}"#.into(),
        r#"{"@ref":{"id":"1","x":"\u0000\ud800"}}"#.into(),
        r#"["\ud800"]"#.into(),
        r#"{"@ref":{"id":"1"},"x":1}"#.into(),
        r#"{"@ref":{"id":"1"},"@ref":{"id":"2"}}"#.into(),
        r#"{"@ts":"yesterday"}"#.into(),
        r#"{"@ts":5}"#.into(),
        r#"{"@foo":1}"#.into(),
        r#"{"@obj":5}"#.into(),
        r#"{"get":1,"@ref":2}"#.into(),
        r#"{"query":{"nope":1}}"#.into(),
        r#"{"nope":1}"#.into(),
        r#"{"select":["a"]}"#.into(),
        r#"{"get":{"nope":1}}"#.into(),
        format!("{}1{}", "[".repeat(200), "]".repeat(200)),
    ]
}

#[test]
fn the_text_path_takes_what_queries_look_like_and_agrees() {
    for text in taken() {
        assert!(same(&text), "the text path declined {text}");
    }
}

#[test]
fn what_the_text_path_declines_the_tree_path_answers() {
    for text in declined() {
        assert!(!same(&text), "the text path took {text}");
    }
    // Some of these are fine queries; the tree path still parses them.
    assert!(via_tree(r#"{"get":1,"get":2}"#).is_ok());
    assert!(via_tree(r#"{"object":{"@obj":{"@x":1}}}"#).is_ok());
    assert!(via_tree(r#"{"@ref":"collections/c/1"}"#).is_ok());
}

#[test]
fn the_expression_count_limit_is_the_same() {
    // An array of n literals is n + 1 expressions.
    for n in [EXPR_NODES_MAX - 1, EXPR_NODES_MAX] {
        let text = format!("[{}0]", "0,".repeat(n - 1));
        let took = same(&text);
        assert_eq!(took, n < EXPR_NODES_MAX, "n = {n}");
        assert_eq!(via_tree(&text).is_ok(), n < EXPR_NODES_MAX);
    }
    // Counted the same way inside `query`, `let` and object literals.
    let inner = format!("[{}0]", "0,".repeat(EXPR_NODES_MAX / 2));
    let text = format!(r#"{{"let":[{{"a":{inner}}}],"in":{{"object":{{"b":{inner}}}}}}}"#);
    assert!(!same(&text));
    assert!(via_tree(&text).is_err());
}

#[test]
fn random_documents_agree() {
    let mut g = JsonGen::new(0x9e37_79b9_7f4a_7c15);
    let (mut took, mut total) = (0, 0);
    for _ in 0..50_000 {
        let mut text = String::new();
        g.text(6, &mut text);
        total += 1;
        took += same(&text) as u32;
    }
    // Most random documents are errors (declined); some must be taken, or this tests nothing.
    assert!(took > 500, "the text path took {took} of {total}");
}
