//! Text to wire JSON: golden translations (checked against the driver's own serialization
//! by tests/js/fqltext.test.js), error positions and limits.

use serde_json::{json, Value};
use tally_fqltext::{needs_more_input, parse, parse_script, ParseError, NESTING_MAX, SOURCE_BYTES_MAX, TOKENS_MAX};

fn wire(src: &str) -> Value {
    parse(src).unwrap_or_else(|e| panic!("{src}: {e}"))
}

fn err(src: &str) -> ParseError {
    match parse(src) {
        Ok(v) => panic!("{src} parsed to {v}"),
        Err(e) => e,
    }
}

fn coll(name: &str) -> Value {
    json!({"collection": name})
}

#[test]
fn golden_translations() {
    let cases: Vec<(&str, Value)> = vec![
        ("Paginate(Collections())", json!({"paginate": {"collections": null}})),
        (
            r#"Paginate(Documents(Collection("players")), {size: 10})"#,
            json!({"paginate": {"documents": coll("players")}, "size": 10}),
        ),
        (r#"Let({a: 1}, Add(Var("a"), 2))"#, json!({"let": [{"a": 1}], "in": {"add": [{"var": "a"}, 2]}})),
        (r#"q.Get(q.Ref(q.Collection("c"), "1"))"#, json!({"get": {"ref": coll("c"), "id": "1"}})),
        (r#"Get(Ref(Collection("c"), "1"), null)"#, json!({"get": {"ref": coll("c"), "id": "1"}})),
        (
            r#"Select(["a", 0], {a: [1]}, null)"#,
            json!({"select": ["a", 0], "from": {"object": {"a": [1]}}, "default": null}),
        ),
        (r#"Create(Collection("c"))"#, json!({"create": coll("c")})),
        (
            r#"Create(Collection("c"), {data: {x: 1}})"#,
            json!({"create": coll("c"), "params": {"object": {"data": {"object": {"x": 1}}}}}),
        ),
        (r#"Match(Index("i"))"#, json!({"match": {"index": "i"}, "terms": []})),
        (r#"Match(Index("i"), "a")"#, json!({"match": {"index": "i"}, "terms": "a"})),
        (r#"Match(Index("i"), "a", 2)"#, json!({"match": {"index": "i"}, "terms": ["a", 2]})),
        ("Add(1)", json!({"add": 1})),
        ("Add(1, 2.5, -3, 1e3, 0x10, 1_000)", json!({"add": [1, 2.5, -3, 1000, 16, 1000]})),
        ("Add(1.0, -0.5)", json!({"add": [1, -0.5]})),
        (
            "Map([1, 2], x => Add(x, 1))",
            json!({"map": {"lambda": "x", "expr": {"add": [{"var": "x"}, 1]}}, "collection": [1, 2]}),
        ),
        (
            "Map([[1, 2]], (a, b) => [b, a])",
            json!({"map": {"lambda": ["a", "b"], "expr": [{"var": "b"}, {"var": "a"}]}, "collection": [[1, 2]]}),
        ),
        (r#"Lambda("x", Var("x"))"#, json!({"lambda": "x", "expr": {"var": "x"}})),
        (r#"Lambda(["a", "b"], Var("a"))"#, json!({"lambda": ["a", "b"], "expr": {"var": "a"}})),
        (r#"Lambda(Var("x"))"#, json!({"var": "x"})),
        ("Lambda(function (x) { return x; })", json!({"lambda": "x", "expr": {"var": "x"}})),
        (
            "Let({a: 1, b: 2}, (x, y) => Add(x, y))",
            json!({"let": [{"a": 1}, {"b": 2}], "in": {"add": [{"var": "a"}, {"var": "b"}]}}),
        ),
        ("Let([{a: 1}, {b: 2}], Var('b'))", json!({"let": [{"a": 1}, {"b": 2}], "in": {"var": "b"}})),
        (
            "Filter([1], x => ({x}))",
            json!({"filter": {"lambda": "x", "expr": {"object": {"x": {"var": "x"}}}}, "collection": [1]}),
        ),
        (
            "Map([1], x => y => x)",
            json!({"map": {"lambda": "x", "expr": {"lambda": "y", "expr": {"var": "x"}}}, "collection": [1]}),
        ),
        ("Now()", json!({"now": null})),
        ("Collections(Database('d'))", json!({"collections": {"database": "d"}})),
        ("Collection('c', null)", json!({"collection": "c", "scope": null})),
        ("Role('r', null)", json!({"role": "r"})),
        ("Concat(['a', 'b'], ' ')", json!({"concat": ["a", "b"], "separator": " "})),
        ("FindStrRegex('abc', 'b', null, 2)", json!({"findstrregex": "abc", "pattern": "b", "num_results": 2})),
        ("Pow(2, 3)", json!({"pow": 2, "exp": 3})),
        ("Hypot(3, 4)", json!({"hypot": 3, "b": 4})),
        ("TimeDiff(Now(), Now(), 'days')", json!({"time_diff": {"now": null}, "other": {"now": null}, "unit": "days"})),
        ("Call(Function('f'), 1, 2)", json!({"call": {"function": "f"}, "arguments": [1, 2]})),
        ("Call(Function('f'))", json!({"call": {"function": "f"}, "arguments": []})),
        ("Format('%s', 'a')", json!({"format": "%s", "values": "a"})),
        ("Ref('collections/c')", json!({"@ref": "collections/c"})),
        ("Bytes('AQID')", json!({"@bytes": "AQID"})),
        ("Bytes('-_8=')", json!({"@bytes": "+/8="})),
        ("Object({a: 1})", json!({"object": {"a": 1}})),
        ("{}", json!({"object": {}})),
        ("[]", json!([])),
        ("{b: 1, 2: 'x', a: 3, 1: 'y', b: 4}", json!({"object": {"1": "y", "2": "x", "b": 4, "a": 3}})),
        (
            r#"{"quoted key": true, 'single': false, $d: null}"#,
            json!({"object": {"quoted key": true, "single": false, "$d": null}}),
        ),
        ("Do(Add(1, 2), 3,)", json!({"do": [{"add": [1, 2]}, 3]})),
        ("Do(1)", json!({"do": [1]})),
        (
            "Paginate(Match(Index('i')), {size: 2, after: [1], events: true})",
            json!({"paginate": {"match": {"index": "i"}, "terms": []}, "size": 2, "after": [1], "events": true}),
        ),
        ("(Add(1, 2));", json!({"add": [1, 2]})),
        (
            "Merge({a: 1}, {b: 2}, (k, a, b) => b)",
            json!({"merge": {"object": {"a": 1}}, "with": {"object": {"b": 2}}, "lambda": {"lambda": ["k", "a", "b"], "expr": {"var": "b"}}}),
        ),
        (
            "Reduce((acc, x) => Add(acc, x), 0, [1])",
            json!({"reduce": {"lambda": ["acc", "x"], "expr": {"add": [{"var": "acc"}, {"var": "x"}]}}, "initial": 0, "collection": [1]}),
        ),
        ("Query(x => x)", json!({"query": {"lambda": "x", "expr": {"var": "x"}}})),
        ("9007199254740993", json!(9007199254740993i64)),
        ("-9223372036854775808", json!(i64::MIN)),
    ];
    for (src, want) in cases {
        assert_eq!(wire(src), want, "{src}");
        // Key order is part of the driver's output too.
        assert_eq!(wire(src).to_string(), want.to_string(), "{src}");
    }
}

#[test]
fn strings_and_comments() {
    assert_eq!(wire(r#""a\"b\n\t\\\u00e9\u{1F600}\x41\0""#), json!("a\"b\n\t\\é😀A\0"));
    assert_eq!(wire(r"'it\'s'"), json!("it's"));
    assert_eq!(wire(r"'\ud83d\ude00'"), json!("😀"));
    assert_eq!(wire("`multi\nline`"), json!("multi\nline"));
    assert_eq!(wire("// leading\nAdd(1, /* inline */ 2) // trailing"), json!({"add": [1, 2]}));
    assert_eq!(wire("'a\\\nb'"), json!("ab"));
}

#[test]
fn error_positions() {
    let cases: &[(&str, usize, usize, &str)] = &[
        ("Foo(1)", 1, 1, "unknown function Foo of FQL v4"),
        ("Colections()", 1, 1, "unknown function Colections; did you mean Collections?"),
        ("Paginat(1)", 1, 1, "did you mean Paginate?"),
        ("Ad(1)", 1, 1, "unknown function Ad; did you mean Add?"),
        ("Xyzzy(1)", 1, 1, "unknown function Xyzzy of FQL v4"),
        ("Add(1,\n  paginate(x))", 2, 3, "did you mean Paginate?"),
        ("Get()", 1, 1, "Get takes 1 to 2 arguments, not 0"),
        ("q.Time(1, 2)", 1, 1, "Time takes 1 argument, not 2"),
        ("Add()", 1, 1, "Add takes at least 1 arguments, not 0"),
        ("Now(1)", 1, 1, "Now takes 0 arguments, not 1"),
        ("Collections(1, 2)", 1, 1, "Collections takes at most 1 argument"),
        ("Add(1, x)", 1, 8, "unknown name `x`"),
        ("Add(1, 2", 1, 9, "expected `)` to close the arguments of Add"),
        ("[1, 2", 1, 6, "expected `]`"),
        ("{a 1}", 1, 4, "expected `:`"),
        ("'abc", 1, 1, "unterminated string"),
        ("/* open", 1, 1, "unterminated comment"),
        ("Add(1) Add(2)", 1, 8, "expected the end after one expression"),
        ("", 1, 1, "expected an expression"),
        ("[1,,2]", 1, 4, "no empty slots"),
        ("-Var('x')", 1, 1, "`-` goes only before a number literal"),
        ("Map([], () => 1)", 1, 9, "at least one parameter"),
        ("Lambda('x')", 1, 1, "Lambda takes a function"),
        ("Let(1, 2)", 1, 1, "Let takes its bindings as an object"),
        ("Paginate(Collections(), 10)", 1, 1, "Paginate's options are an object"),
        ("Bytes('abc')", 1, 1, "not base64"),
        ("Map([], x => { x })", 1, 14, "must be `{ return … }`"),
        ("  \u{e9}\u{e9}", 1, 3, "unknown name `\u{e9}\u{e9}`"),
        ("'\u{e9}\u{e9}' x", 1, 6, "expected the end"),
        ("Add(1, 2) \r\n\r\n  )", 3, 3, "expected the end"),
        ("`a${b}`", 1, 3, "Concat or Format"),
        ("01", 1, 1, "numbers do not start with 0"),
        ("Add(1, @)", 1, 8, "unexpected character '@'"),
        ("Paginate", 1, 1, "Paginate is a function: call it"),
        ("Let({a: 1}, (a, b) => a)", 1, 13, "takes 2 parameters but is given 1"),
    ];
    for (src, line, column, msg) in cases {
        let e = err(src);
        assert!(e.message.contains(msg), "{src}: {e} does not say {msg:?}");
        assert_eq!((e.line, e.column), (*line, *column), "{src}: {e}");
        assert_eq!(e.to_string(), format!("line {line}, column {column}: {}", e.message));
    }
}

#[test]
fn nesting_limit_is_an_error_not_a_stack_overflow() {
    let ok = format!("{}1{}", "[".repeat(NESTING_MAX - 1), "]".repeat(NESTING_MAX - 1));
    assert!(parse(&ok).is_ok());
    for deep in [NESTING_MAX + 1, 100_000] {
        let src = format!("{}1{}", "Add(".repeat(deep), ")".repeat(deep));
        let e = err(&src);
        assert!(e.message.contains("nested more than"), "{e}");
        let src = "[{a: (".repeat(deep / 3);
        assert!(err(&src).message.contains("nested more than"));
    }
}

#[test]
fn size_limit() {
    let big = format!("'{}'", "x".repeat(SOURCE_BYTES_MAX));
    let e = err(&big);
    assert!(e.message.contains("at most"), "{e}");
    let fits = format!("'{}'", "x".repeat(SOURCE_BYTES_MAX - 2));
    assert_eq!(parse(&fits).map(|v| v.as_str().map(str::len)), Ok(Some(SOURCE_BYTES_MAX - 2)));
    let many = format!("[{}]", "1,".repeat(TOKENS_MAX / 2));
    assert!(err(&many).message.contains("tokens"));
    let fewer = format!("[{}]", "1,".repeat(TOKENS_MAX / 2 - 2));
    assert_eq!(parse(&fewer).map(|v| v.as_array().map(Vec::len)), Ok(Some(TOKENS_MAX / 2 - 2)));
}

#[test]
fn scripts_and_continuation() {
    let s = parse_script("Add(1, 2);\n\n// two\nNow()\nCollections();").unwrap();
    assert_eq!(s, vec![(1, json!({"add": [1, 2]})), (4, json!({"now": null})), (5, json!({"collections": null}))]);
    assert_eq!(parse_script("  ;; ").unwrap(), vec![]);
    assert!(parse_script("Add(1)\nFoo()").unwrap_err().line == 2);
    assert!(needs_more_input("Paginate(Collections(),"));
    assert!(needs_more_input("Let({a: 1},\n"));
    assert!(needs_more_input("'abc"));
    assert!(needs_more_input("`multi\nline"));
    assert!(!needs_more_input("'abc\n'"), "a quoted string never continues on the next line");
    assert!(parse("'abc\ndef'").unwrap_err().message.contains("ends at the end of its line"));
    assert!(needs_more_input("Add(1, /* "));
    assert!(!needs_more_input("Add(1, 2)"));
    assert!(!needs_more_input("Add(1, 2))"));
    assert!(!needs_more_input("Foo("[..3].as_ref()));
}

/// The deepest text accepted, and the deepest answer printed, fit in a small thread stack
/// (the server may run the parser on its async threads).
#[test]
fn deepest_input_fits_a_small_stack() {
    let run = std::thread::Builder::new().stack_size(512 << 10).spawn(|| {
        let n = NESTING_MAX - 3;
        let src = format!("{}x => Add(x, 1){}", "Map([1], ".repeat(n), ")".repeat(n));
        let wire = parse(&src).unwrap_or_else(|e| panic!("{e}"));
        let printed = tally_fqltext::format(&serde_json::json!({ "@query": wire }));
        assert!(printed.starts_with("Query(\n  Map(\n    [1],\n    Map("), "{printed}");
        assert!(parse(&format!("{}x => Add(x, 1){}", "Map([1], ".repeat(n + 3), ")".repeat(n + 3))).is_err());
        let objects = format!("{}1{}", "{a: [".repeat(NESTING_MAX / 2 - 1), "]}".repeat(NESTING_MAX / 2 - 1));
        let wire = parse(&objects).unwrap_or_else(|e| panic!("{e}"));
        assert!(!tally_fqltext::format(&serde_json::json!({ "@query": wire })).is_empty());
    });
    run.unwrap().join().unwrap();
}
