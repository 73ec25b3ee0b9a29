//! Wire answers printed in the driver's syntax, and printed expressions parsing back to the
//! same wire JSON.

use serde_json::{json, Value};
use tally_fqltext::{format, parse};

fn r(id: &str, coll: Value) -> Value {
    json!({"@ref": {"id": id, "collection": coll}})
}

fn native(id: &str) -> Value {
    json!({"@ref": {"id": id}})
}

fn coll(name: &str) -> Value {
    r(name, native("collections"))
}

fn in_db(mut v: Value, db: Value) -> Value {
    v["@ref"]["database"] = db;
    v
}

#[test]
fn refs_print_as_the_driver_prints_them() {
    let child = r("child", native("databases"));
    let grandchild = in_db(r("gc", native("databases")), child.clone());
    let cases: Vec<(Value, &str)> = vec![
        (native("collections"), "Collections()"),
        (native("access_providers"), "AccessProviders()"),
        (in_db(native("collections"), child.clone()), r#"Collections(Database("child"))"#),
        (coll("players"), r#"Collection("players")"#),
        (r("1", coll("players")), r#"Ref(Collection("players"), "1")"#),
        (r("i", native("indexes")), r#"Index("i")"#),
        (r("f", native("functions")), r#"Function("f")"#),
        (r("r", native("roles")), r#"Role("r")"#),
        (r("ap", native("access_providers")), r#"AccessProvider("ap")"#),
        (r("k1", native("keys")), r#"Ref(Keys(), "k1")"#),
        (r("t1", native("tokens")), r#"Ref(Tokens(), "t1")"#),
        (child.clone(), r#"Database("child")"#),
        (grandchild.clone(), r#"Database("gc", Database("child"))"#),
        (in_db(coll("c"), grandchild.clone()), r#"Collection("c", Database("gc", Database("child")))"#),
        (r("7", in_db(coll("c"), child.clone())), r#"Ref(Collection("c", Database("child")), "7")"#),
        (r("q\"uote", coll("c")), r#"Ref(Collection("c"), "q\"uote")"#),
    ];
    for (v, want) in cases {
        assert_eq!(format(&v), want);
    }
}

#[test]
fn scalars_and_special_forms() {
    let cases: Vec<(Value, &str)> = vec![
        (json!(null), "null"),
        (json!(true), "true"),
        (json!(-12), "-12"),
        (json!(1.0), "1.0"),
        (json!(0.25), "0.25"),
        (json!("a\"b\n"), r#""a\"b\n""#),
        (json!({"@ts": "2024-01-02T03:04:05.123456Z"}), r#"Time("2024-01-02T03:04:05.123456Z")"#),
        (json!({"@date": "2024-01-02"}), r#"Date("2024-01-02")"#),
        (json!({"@bytes": "-_8"}), r#"Bytes("+/8=")"#),
        (json!({"@obj": {"@ref": 1}}), r#"{ "@ref": 1 }"#),
        (
            json!({"@set": {"match": {"@ref": {"id": "i", "collection": {"@ref": {"id": "indexes"}}}}, "terms": "x"}}),
            r#"Match(Index("i"), "x")"#,
        ),
        (json!({"@set": {"documents": coll("c")}}), r#"Documents(Collection("c"))"#),
        (
            json!({"@query": {"lambda": "x", "expr": {"add": [{"var": "x"}, 1]}, "api_version": "4"}}),
            r#"Query(Lambda("x", Add(Var("x"), 1)))"#,
        ),
        (json!([]), "[]"),
        (json!({}), "{}"),
        (json!({"a": 1, "b c": [1, 2]}), r#"{ a: 1, "b c": [1, 2] }"#),
    ];
    for (v, want) in cases {
        assert_eq!(format(&v), want, "{v}");
    }
}

#[test]
fn long_values_break_over_lines() {
    let page = json!({
        "data": [
            {"ref": r("101", coll("players")), "ts": 1700000000000000i64, "data": {"name": "Alice", "balance": 100}},
            {"ref": r("102", coll("players")), "ts": 1700000000000001i64, "data": {"name": "Bob", "balance": 90}},
        ]
    });
    let want = r#"{
  data: [
    {
      ref: Ref(Collection("players"), "101"),
      ts: 1700000000000000,
      data: { name: "Alice", balance: 100 }
    },
    {
      ref: Ref(Collection("players"), "102"),
      ts: 1700000000000001,
      data: { name: "Bob", balance: 90 }
    }
  ]
}"#;
    assert_eq!(format(&page), want);
    assert!(format(&page).lines().all(|l| l.chars().count() <= 80));
}

#[test]
fn deep_values_are_cut_not_overflowed() {
    let mut v = json!(1);
    for _ in 0..100_000 {
        v = Value::Array(vec![v]);
    }
    let s = format(&v);
    assert!(s.contains('…'));
    // serde_json drops deep values recursively; take it apart iteratively.
    let mut cur = v;
    while let Value::Array(mut a) = cur {
        cur = a.pop().unwrap_or(Value::Null);
    }
}

/// A printed query or set is text `parse` reads back into the expression it came from.
#[test]
fn printed_expressions_parse_back() {
    let exprs = [
        r#"Paginate(Documents(Collection("c")), {size: 10, after: [Ref(Collection("c"), "5")]})"#,
        r#"Let({a: 1, b: {x: [1, "s"]}}, Select(["x", 0], Var("b"), null))"#,
        r#"Let([{a: 1}, {a: 2}], Var("a"))"#,
        r#"Map([1, 2], Lambda(["a", "b"], If(GT(Var("a"), 1), Abs(-2), Concat(["a", "b"], "-"))))"#,
        r#"Match(Index("i"), "a", 2)"#,
        r#"Match(Index("i"))"#,
        r#"Call(Function("f"), 1, [2])"#,
        r#"FindStrRegex("abc", "b", null, 2)"#,
        r#"Merge({a: 1}, {b: 2}, Lambda(["k", "a", "b"], Var("b")))"#,
        r#"Union(Match(Index("a")), Match(Index("b")))"#,
        r#"Pow(2, 3)"#,
        r#"Collections()"#,
        r#"Create(Collection("c"), {data: {"@odd": 1, "2": 2}})"#,
        r#"Do(Now(), NewId(), CurrentIdentity())"#,
        r#"Reduce(Lambda(["acc", "x"], Add(Var("acc"), Var("x"))), 0.5, [1.5])"#,
    ];
    for src in exprs {
        let wire = parse(src).unwrap();
        let printed = format(&json!({"@query": wire}));
        let inner = printed.strip_prefix("Query(").and_then(|s| s.strip_suffix(')')).unwrap();
        assert_eq!(parse(inner).unwrap(), wire, "{src} printed as {inner}");
    }
}
