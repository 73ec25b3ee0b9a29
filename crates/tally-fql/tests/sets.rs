//! Sets, Paginate and the collection functions, end to end through the evaluator over
//! a MemStore (schema and documents created with FQL, one transaction per query).

mod common;

use common::*;
use serde_json::{json, Value as Json};
use tally_fql::auth::Auth;
use tally_fql::eval::{Limits, Mode};
use tally_fql::run::evaluate;
use tally_storage::{MemStore, Store};
use tally_value::{from_json, to_json, Value};

fn all_of(set: Json) -> Json {
    json!({"select": "data", "from": pag(set, json!({"size": 1000}))})
}
fn lambda(param: &str, body: Json) -> Json {
    json!({"lambda": param, "expr": body})
}

fn var(n: &str) -> Json {
    json!({"var": n})
}

/// A store with collection `widgets`, indexes by n / m (terms), by z (values), all
/// widgets, and a collection `nums` with `v` = 0..9 indexed by v, -v, and [v, ref].
fn setup() -> Db {
    let mut db = Db::new();
    db.collection("widgets");
    db.index("widgets_by_n", "widgets", &["n"], &[]);
    db.index("widgets_by_m", "widgets", &["m"], &[]);
    db.index("widgets_by_z", "widgets", &[], &["z"]);
    db.index("all_widgets", "widgets", &[], &[]);
    db.collection("nums");
    db.index("nums_by_v", "nums", &[], &["v"]);
    db.index("nums_by_v_rev", "nums", &[], &["-v"]);
    db.index("nums_v_ref", "nums", &[], &["v", "ref"]);
    db.index("nums_by_parity", "nums", &["even"], &["v"]);
    db
}

fn nums(db: &mut Db) -> Vec<Json> {
    // Created out of order so index order (by v) differs from ref order.
    let mut refs = vec![Json::Null; 10];
    for v in [3, 7, 0, 9, 1, 5, 8, 2, 6, 4] {
        refs[v as usize] = db.doc("nums", json!({"v": v, "even": v % 2 == 0}));
    }
    refs
}

#[test]
fn set_values_render_as_fauna_does() {
    let mut db = setup();
    let s = db.q(m("widgets_by_n", json!(10)));
    assert_eq!(s["@set"]["match"]["@ref"]["id"], json!("widgets_by_n"));
    assert_eq!(s["@set"]["terms"], json!(10));
    let s = db.q(m0("all_widgets"));
    assert!(s["@set"].get("terms").is_none(), "{s}");
    let s = db.q(json!({"union": [m0("all_widgets"), m("widgets_by_n", json!(1))]}));
    assert_eq!(s["@set"]["union"].as_array().unwrap().len(), 2);
    assert!(s["@set"]["union"][0]["@set"]["match"].is_object());
    let s = db.q(json!({"join": m0("all_widgets"), "with": idx("widgets_by_m")}));
    assert_eq!(s["@set"]["with"]["@ref"]["id"], json!("widgets_by_m"));
    let s = db.q(json!({"join": m0("all_widgets"), "with": lambda("x", m("widgets_by_m", var("x")))}));
    assert!(s["@set"]["with"]["@query"]["lambda"].is_string(), "{s}");
    let s = db.q(json!({"range": m0("nums_by_v"), "from": 1, "to": [2]}));
    assert_eq!(s["@set"]["from"], json!(1));
    assert_eq!(s["@set"]["to"], json!([2]));
    let s = db.q(json!({"documents": {"collection": "widgets"}}));
    assert_eq!(s["@set"]["documents"]["@ref"]["id"], json!("widgets"));
    let s = db.q(json!({"distinct": m0("widgets_by_z")}));
    assert!(s["@set"]["distinct"]["@set"].is_object());
    let s = db.q(json!({"reverse": m0("widgets_by_z")}));
    assert!(s["@set"]["reverse"]["@set"].is_object());
    // Set values round-trip through the wire codec.
    let v = from_json(&s).unwrap();
    assert!(matches!(v, Value::Set(_)));
}

#[test]
fn paginate_match_in_ref_order() {
    let mut db = setup();
    let refs = [
        db.doc("widgets", json!({"n": 200})),
        db.doc("widgets", json!({"n": 200})),
        db.doc("widgets", json!({"n": 201})),
        db.doc("widgets", json!({"n": 200})),
    ];
    let set = m("widgets_by_n", json!(200));
    assert_eq!(db.q(pag(set.clone(), json!({}))), json!({"data": [refs[0], refs[1], refs[3]]}));
    // Terms given as a one-element array mean the same.
    assert_eq!(db.q(all_of(m("widgets_by_n", json!([200])))), json!([refs[0], refs[1], refs[3]]));
    // No match.
    assert_eq!(db.q(pag(m("widgets_by_n", json!(999)), json!({}))), json!({"data": []}));

    let p1 = db.q(pag(set.clone(), json!({"size": 1})));
    assert_eq!(p1, json!({"data": [refs[0]], "after": [refs[1]]}));
    let p2 = db.q(pag(set.clone(), json!({"size": 1, "after": p1["after"]})));
    assert_eq!(p2, json!({"data": [refs[1]], "before": [refs[1]], "after": [refs[3]]}));
    let p3 = db.q(pag(set.clone(), json!({"size": 1, "after": p2["after"]})));
    assert_eq!(p3, json!({"data": [refs[3]], "before": [refs[3]]}));
    // A bare ref works as a cursor too.
    let p = db.q(pag(set.clone(), json!({"size": 5, "after": refs[1]})));
    assert_eq!(p["data"], json!([refs[1], refs[3]]));
    // Going back from p3's before.
    let b = db.q(pag(set.clone(), json!({"size": 1, "before": p3["before"]})));
    assert_eq!(b, json!({"data": [refs[1]], "before": [refs[1]], "after": [refs[3]]}));
    let b = db.q(pag(set, json!({"size": 1, "before": b["before"]})));
    assert_eq!(b, json!({"data": [refs[0]], "after": [refs[1]]}));
}

#[test]
fn cursor_round_trips_over_values() {
    let mut db = setup();
    let refs = nums(&mut db);
    let set = m0("nums_by_v");
    assert_eq!(db.q(all_of(set.clone())), json!([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]));

    // Forward, size 3.
    let p = db.q(pag(set.clone(), json!({"size": 3})));
    assert_eq!(p, json!({"data": [0, 1, 2], "after": [3, refs[3]]}));
    let mut seen: Vec<Json> = p["data"].as_array().unwrap().clone();
    let mut after = p["after"].clone();
    let mut pages = 1;
    while !after.is_null() {
        let p = db.q(pag(set.clone(), json!({"size": 3, "after": after})));
        let data = p["data"].as_array().unwrap();
        assert_eq!(p["before"], json!([data[0].clone(), refs[data[0].as_i64().unwrap() as usize]]));
        seen.extend(data.iter().cloned());
        after = p.get("after").cloned().unwrap_or(Json::Null);
        pages += 1;
    }
    assert_eq!(pages, 4);
    assert_eq!(seen, (0..10).map(|i| json!(i)).collect::<Vec<_>>());

    // Backward from the end (before: null), size 3.
    let p = db.q(pag(set.clone(), json!({"size": 3, "before": null})));
    assert_eq!(p, json!({"data": [7, 8, 9], "before": [7, refs[7]]}));
    let mut seen: Vec<Json> = p["data"].as_array().unwrap().clone();
    let mut before = p["before"].clone();
    while !before.is_null() {
        let p = db.q(pag(set.clone(), json!({"size": 3, "before": before.clone()})));
        assert_eq!(p["after"], before);
        let mut d = p["data"].as_array().unwrap().clone();
        d.extend(seen);
        seen = d;
        before = p.get("before").cloned().unwrap_or(Json::Null);
    }
    assert_eq!(seen, (0..10).map(|i| json!(i)).collect::<Vec<_>>());
    let first = db.q(pag(set.clone(), json!({"size": 3, "before": [1, refs[1]]})));
    assert_eq!(first, json!({"data": [0], "after": [1, refs[1]]}));

    // A value-only cursor is a prefix: after [5] includes 5, before [5] excludes it.
    assert_eq!(db.q(pag(set.clone(), json!({"size": 2, "after": [5]})))["data"], json!([5, 6]));
    assert_eq!(db.q(pag(set.clone(), json!({"size": 2, "after": 5})))["data"], json!([5, 6]));
    assert_eq!(db.q(pag(set.clone(), json!({"size": 2, "before": [5]})))["data"], json!([3, 4]));
    // Past the end.
    assert_eq!(db.q(pag(set, json!({"size": 2, "after": [50]}))), json!({"data": [], "before": [50]}));
}

#[test]
fn reverse_values_and_reverse_sets() {
    let mut db = setup();
    let refs = nums(&mut db);
    let rev = m0("nums_by_v_rev");
    assert_eq!(db.q(all_of(rev.clone())), json!([9, 8, 7, 6, 5, 4, 3, 2, 1, 0]));
    let p = db.q(pag(rev.clone(), json!({"size": 4})));
    assert_eq!(p, json!({"data": [9, 8, 7, 6], "after": [5, refs[5]]}));
    let p = db.q(pag(rev.clone(), json!({"size": 4, "after": p["after"]})));
    assert_eq!(p["data"], json!([5, 4, 3, 2]));
    let p = db.q(pag(rev.clone(), json!({"size": 4, "before": null})));
    assert_eq!(p, json!({"data": [3, 2, 1, 0], "before": [3, refs[3]]}));
    let p = db.q(pag(rev.clone(), json!({"size": 4, "before": p["before"]})));
    assert_eq!(p["data"], json!([7, 6, 5, 4]));
    // Range over a reversed index: from is the high end.
    assert_eq!(db.q(all_of(json!({"range": rev, "from": 6, "to": 3}))), json!([6, 5, 4, 3]));

    // Reverse(set).
    let r = json!({"reverse": m0("nums_by_v")});
    assert_eq!(db.q(json!({"select": "data", "from": pag(r.clone(), json!({"size": 5}))})), json!([9, 8, 7, 6, 5]));
    let p = db.q(pag(r.clone(), json!({"size": 5})));
    let p2 = db.q(pag(r.clone(), json!({"size": 5, "after": p["after"]})));
    assert_eq!(p2["data"], json!([4, 3, 2, 1, 0]));
    assert_eq!(db.q(all_of(json!({"reverse": r}))), json!([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]));
    // Reverse of a page and of an array.
    let q = json!({"select": ["data", 0], "from": {"reverse": pag(m0("nums_by_v"), json!({"size": 5}))}});
    assert_eq!(db.q(q), json!(4));
    assert_eq!(db.q(json!({"reverse": [1, 2, 3]})), json!([3, 2, 1]));
    assert_eq!(db.q(json!({"reverse": []})), json!([]));
    assert_eq!(db.err(json!({"reverse": "a string"})).code, "invalid argument");
    assert_eq!(db.err(json!({"reverse": idx("nums_by_v")})).code, "invalid argument");
    assert_eq!(db.err(json!({"reverse": {"object": {"a": 1}}})).code, "invalid argument");
}

#[test]
fn multi_value_index_and_terms_with_values() {
    let mut db = setup();
    let refs = nums(&mut db);
    let p = db.q(pag(m0("nums_v_ref"), json!({"size": 2})));
    assert_eq!(p["data"], json!([[0, refs[0]], [1, refs[1]]]));
    assert_eq!(p["after"], json!([2, refs[2], refs[2]]));
    assert_eq!(db.q(all_of(m("nums_by_parity", json!(true)))), json!([0, 2, 4, 6, 8]));
    assert_eq!(db.q(all_of(m("nums_by_parity", json!(false)))), json!([1, 3, 5, 7, 9]));
}

#[test]
fn union_intersection_difference() {
    let mut db = setup();
    let ref_n = db.doc("widgets", json!({"n": 101}));
    let ref_m = db.doc("widgets", json!({"m": 201}));
    let ref_nm = db.doc("widgets", json!({"n": 101, "m": 201}));
    let n = m("widgets_by_n", json!(101));
    let mm = m("widgets_by_m", json!(201));
    assert_eq!(db.q(all_of(json!({"union": [n.clone(), mm.clone()]}))), json!([ref_n, ref_m, ref_nm]));
    assert_eq!(db.q(all_of(json!({"union": n.clone()}))), json!([ref_n, ref_nm]));
    assert_eq!(db.q(all_of(json!({"intersection": [n.clone(), mm.clone()]}))), json!([ref_nm]));
    assert_eq!(db.q(all_of(json!({"difference": [n.clone(), mm.clone()]}))), json!([ref_n]));
    assert_eq!(db.q(all_of(json!({"difference": [mm.clone(), n.clone()]}))), json!([ref_m]));
    // Paging through a union with cursors.
    let u = json!({"union": [n.clone(), mm.clone()]});
    let p = db.q(pag(u.clone(), json!({"size": 2})));
    assert_eq!(p, json!({"data": [ref_n, ref_m], "after": [ref_nm]}));
    let p = db.q(pag(u.clone(), json!({"size": 2, "after": p["after"]})));
    assert_eq!(p, json!({"data": [ref_nm], "before": [ref_nm]}));
    let p = db.q(pag(u, json!({"size": 2, "before": p["before"]})));
    assert_eq!(p, json!({"data": [ref_n, ref_m], "after": [ref_nm]}));
    // Read backwards.
    let all3 = json!({"union": [n.clone(), mm.clone(), m0("all_widgets")]});
    let both = json!({"intersection": [all3.clone(), mm.clone()]});
    assert_eq!(db.q(pag(both, json!({"size": 1, "before": null}))), json!({"data": [ref_nm], "before": [ref_nm]}));
    let diff = json!({"difference": [all3, mm.clone()]});
    assert_eq!(db.q(pag(diff.clone(), json!({"before": null})))["data"], json!([ref_n]));
    assert_eq!(db.q(all_of(json!({"reverse": {"union": [n.clone(), mm.clone()]}}))), json!([ref_nm, ref_m, ref_n]));
    // Nested.
    let nested = json!({"intersection": [{"union": [n.clone(), mm.clone()]}, m0("all_widgets")]});
    assert_eq!(db.q(json!({"count": nested})), json!(3));

    // Arrays.
    assert_eq!(db.q(json!({"union": [["A", "B"], ["C", "D"]]})), json!(["A", "B", "C", "D"]));
    assert_eq!(db.q(json!({"union": [["A", "B", "C"], ["B", "C", "D"]]})), json!(["A", "B", "C", "D"]));
    assert_eq!(db.q(json!({"intersection": [["A", "B", "C"], ["B", "C", "D"], ["C", "D", "E"]]})), json!(["C"]));
    assert_eq!(db.q(json!({"difference": [["A", "B", "C"], ["B", "C", "D"]]})), json!(["A"]));
    assert_eq!(db.q(json!({"distinct": ["A", "B", "A", "C", "B"]})), json!(["A", "B", "C"]));
    assert_eq!(db.q(json!({"distinct": [1, 1.0, 1]})), json!([1, 1.0]));

    // Mixing sets and other things.
    let e = db.err(json!({"union": [n.clone(), 1]}));
    assert_eq!(e.code, "invalid argument");
    assert_eq!(pos(&e), vec![json!("union"), json!(1)]);
    let e = db.err(json!({"intersection": [[1], n]}));
    assert_eq!(pos(&e), vec![json!("intersection"), json!(0)]);
}

#[test]
fn distinct_join_range_singleton() {
    let mut db = setup();
    for z in [0, 0, 1, 1, 1] {
        db.doc("widgets", json!({"z": z}));
    }
    assert_eq!(db.q(all_of(m0("widgets_by_z"))), json!([0, 0, 1, 1, 1]));
    assert_eq!(db.q(all_of(json!({"distinct": m0("widgets_by_z")}))), json!([0, 1]));
    let p = db.q(pag(json!({"distinct": m0("widgets_by_z")}), json!({"size": 1})));
    assert_eq!(p, json!({"data": [0], "after": [1]}));
    let p = db.q(pag(json!({"distinct": m0("widgets_by_z")}), json!({"size": 1, "after": p["after"]})));
    assert_eq!(p, json!({"data": [1], "before": [1]}));

    let j1 = db.doc("widgets", json!({"n": 12}));
    let j2 = db.doc("widgets", json!({"n": 12}));
    let a1 = db.doc("widgets", json!({"m": j1}));
    let a2 = db.doc("widgets", json!({"m": j2}));
    let source = m("widgets_by_n", json!(12));
    assert_eq!(db.q(all_of(source.clone())), json!([j1, j2]));
    let joined = json!({"join": source.clone(), "with": lambda("a", m("widgets_by_m", var("a")))});
    assert_eq!(db.q(all_of(joined.clone())), json!([a1, a2]));
    assert_eq!(db.q(all_of(json!({"join": source.clone(), "with": idx("widgets_by_m")}))), json!([a1, a2]));
    let p = db.q(pag(joined.clone(), json!({"size": 1})));
    assert_eq!(p, json!({"data": [a1], "after": [a2]}));
    let p = db.q(pag(joined.clone(), json!({"size": 1, "after": p["after"]})));
    assert_eq!(p["data"], json!([a2]));
    // A join lambda that does not return a set.
    let bad = json!({"join": source, "with": lambda("a", json!(1))});
    let e = db.err(pag(bad, json!({})));
    assert_eq!(e.code, "invalid argument");
    assert_eq!(pos(&e), vec![json!("paginate")]);

    // Range.
    let mut db = setup();
    nums(&mut db);
    let v = m0("nums_by_v");
    let range = |f: Json, t: Json| json!({"range": v.clone(), "from": f, "to": t});
    assert_eq!(db.q(all_of(range(json!(3), json!(8)))), json!([3, 4, 5, 6, 7, 8]));
    assert_eq!(db.q(all_of(range(json!(8), json!(9)))), json!([8, 9]));
    assert_eq!(db.q(all_of(range(json!(9), json!(0)))), json!([]));
    assert_eq!(db.q(all_of(range(json!([]), json!([2])))), json!([0, 1, 2]));
    assert_eq!(db.q(all_of(range(json!([7]), json!([])))), json!([7, 8, 9]));
    // Nested ranges intersect; pages of a range keep to it.
    let nested = json!({"range": range(json!(2), json!(8)), "from": 5, "to": 20});
    assert_eq!(db.q(all_of(nested.clone())), json!([5, 6, 7, 8]));
    let p = db.q(pag(nested.clone(), json!({"size": 3, "before": null})));
    assert_eq!(p["data"], json!([6, 7, 8]));
    assert_eq!(db.q(pag(nested, json!({"size": 3, "before": p["before"]})))["data"], json!([5]));

    // Singleton.
    let r = db.doc("widgets", json!({}));
    assert_eq!(db.q(pag(json!({"singleton": r}), json!({}))), json!({"data": [r]}));
    assert_eq!(db.err(json!({"singleton": 1})).code, "invalid argument");
}

#[test]
fn documents_and_native_collections() {
    let mut db = setup();
    let refs: Vec<Json> = (0..70).map(|i| db.doc("widgets", json!({"i": i}))).collect();
    let docs = json!({"documents": {"collection": "widgets"}});
    assert_eq!(db.q(json!({"count": docs.clone()})), json!(70));
    let p = db.q(pag(docs.clone(), json!({})));
    assert_eq!(p["data"].as_array().unwrap().len(), 64);
    assert_eq!(p["after"], json!([refs[64]]));
    let p = db.q(pag(docs.clone(), json!({"after": p["after"]})));
    assert_eq!(p["data"].as_array().unwrap().len(), 6);
    assert!(p.get("after").is_none());
    let p = db.q(pag(docs.clone(), json!({"size": 2, "before": null})));
    assert_eq!(p, json!({"data": [refs[68], refs[69]], "before": [refs[68]]}));
    assert_eq!(db.q(json!({"count": pag(docs.clone(), json!({"size": 10}))})), json!({"data": [10]}));
    let e = db.err(json!({"documents": {"collection": "nope"}}));
    assert_eq!(pos(&e), vec![json!("documents")]);

    let cols = db.q(all_of(json!({"collections": null})));
    let names: Vec<&str> = cols.as_array().unwrap().iter().map(|r| r["@ref"]["id"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["nums", "widgets"]);
    assert_eq!(cols[0]["@ref"]["collection"]["@ref"]["id"], json!("collections"));
    assert_eq!(db.q(json!({"count": {"indexes": null}})), json!(8));
    let p = db.q(pag(json!({"indexes": null}), json!({"size": 2})));
    assert_eq!(p["data"][0]["@ref"]["id"], json!("all_widgets"));
    assert_eq!(p["after"][0]["@ref"]["id"], json!("nums_by_v"));
}

#[test]
fn paginate_options_and_errors() {
    let mut db = setup();
    let t0 = db.ts;
    let r1 = db.doc("widgets", json!({"n": 5}));
    let t1 = db.ts;
    let r2 = db.doc("widgets", json!({"n": 5}));
    let set = m("widgets_by_n", json!(5));
    assert_eq!(db.q(pag(set.clone(), json!({})))["data"], json!([r1, r2]));
    assert_eq!(db.q(pag(set.clone(), json!({"ts": t1})))["data"], json!([r1]));
    assert_eq!(db.q(pag(set.clone(), json!({"ts": t0})))["data"], json!([]));
    let t1_time = tally_value::format_time(&chrono::DateTime::from_timestamp_micros(t1 as i64).unwrap());
    assert_eq!(db.q(pag(set.clone(), json!({"ts": {"@ts": t1_time}})))["data"], json!([r1]));
    // Deleted documents leave the set.
    db.q(json!({"delete": r1}));
    assert_eq!(db.q(pag(set.clone(), json!({})))["data"], json!([r2]));
    assert_eq!(db.q(pag(set.clone(), json!({"ts": t1})))["data"], json!([r1]));

    let e = db.err(pag(set.clone(), json!({"size": 0})));
    assert_eq!((e.code, pos(&e)), ("invalid argument", vec![json!("size")]));
    let e = db.err(pag(set.clone(), json!({"size": 100_001})));
    assert_eq!((e.code, pos(&e)), ("invalid argument", vec![json!("size")]));
    let e = db.err(pag(set.clone(), json!({"size": "x"})));
    assert_eq!(pos(&e), vec![json!("size")]);
    let e = db.err(pag(json!("str"), json!({})));
    assert_eq!((e.code, pos(&e)), ("invalid argument", vec![json!("paginate")]));
    // A ref pages as the one-document set `Singleton(ref)`.
    assert_eq!(db.q(pag(r2.clone(), json!({})))["data"], json!([r2]));
    assert_eq!(db.q(pag(r1.clone(), json!({})))["data"], json!([]));
    let e = db.err(pag(set.clone(), json!({"sources": 1})));
    assert_eq!(pos(&e), vec![json!("sources")]);
    let set_json = to_json(&db.run(set.clone()).unwrap());
    assert_eq!(db.q(pag(set.clone(), json!({"sources": true})))["data"], json!([{"value": r2, "sources": [set_json]}]));
    assert_eq!(db.q(pag(set.clone(), json!({"sources": false})))["data"], json!([r2]));
    let e = db.err(json!({"match": idx("nope"), "terms": 1}));
    assert_eq!((e.code, pos(&e)), ("invalid ref", vec![json!("match")]));
    let e = db.err(json!({"match": "widgets_by_n", "terms": 1}));
    assert_eq!((e.code, pos(&e)), ("invalid argument", vec![json!("match")]));
    let e = db.err(pag(json!({"events": {"events": r2}}), json!({})));
    assert_eq!((e.code, pos(&e)), ("invalid argument", vec![json!("paginate")]));
}

#[test]
fn map_filter_foreach_over_arrays_and_pages() {
    let mut db = setup();
    let dbl = lambda("a", json!({"multiply": [2, var("a")]}));
    assert_eq!(db.q(json!({"map": dbl.clone(), "collection": [1, 2, 3]})), json!([2, 4, 6]));
    // Destructuring over multi-parameter lambdas.
    let add = json!({"lambda": ["x", "y"], "expr": {"add": [var("x"), var("y")]}});
    assert_eq!(db.q(json!({"map": add, "collection": [[1, 2], [3, 4]]})), json!([3, 7]));
    // Query values as lambdas.
    let q = json!({"map": {"query": lambda("a", json!({"add": [var("a"), 1]}))}, "collection": [1]});
    assert_eq!(db.q(q), json!([2]));

    let refs = nums(&mut db);
    let page = pag(m0("nums_by_v"), json!({"size": 3}));
    let mapped = db.q(json!({"map": dbl.clone(), "collection": page.clone()}));
    assert_eq!(mapped, json!({"data": [0, 2, 4], "after": [3, refs[3]]}));
    let getv = lambda("r", json!({"select": ["data", "v"], "from": {"get": var("r")}}));
    let q = json!({"map": getv, "collection": pag(json!({"documents": {"collection": "nums"}}), json!({"size": 4}))});
    assert_eq!(db.q(q), json!({"data": [3, 7, 0, 9], "after": [refs[1]]}));

    let even = lambda("a", json!({"equals": [{"modulo": [var("a"), 2]}, 0]}));
    assert_eq!(db.q(json!({"filter": even.clone(), "collection": [1, 2, 3, 4]})), json!([2, 4]));
    assert_eq!(
        db.q(json!({"filter": even.clone(), "collection": page.clone()})),
        json!({"data": [0, 2], "after": [3, refs[3]]})
    );
    // Filter over a set is a set.
    let fs = db.q(json!({"filter": even.clone(), "collection": m0("nums_by_v")}));
    assert!(fs["@set"]["filter"]["@query"].is_object(), "{fs}");
    assert_eq!(db.q(all_of(json!({"filter": even.clone(), "collection": m0("nums_by_v")}))), json!([0, 2, 4, 6, 8]));
    let p = db.q(pag(json!({"filter": even.clone(), "collection": m0("nums_by_v")}), json!({"size": 2})));
    assert_eq!(p, json!({"data": [0, 2], "after": [4, refs[4]]}));
    assert_eq!(db.q(json!({"count": {"filter": even, "collection": m0("nums_by_v")}})), json!(5));

    // Foreach returns its collection.
    let fe = json!({"foreach": lambda("x", json!({"create": {"collection": "widgets"}, "params": {"object": {}}})), "collection": [1, 2]});
    assert_eq!(db.q(fe), json!([1, 2]));
    assert_eq!(db.q(json!({"count": m0("all_widgets")})), json!(2));
    assert_eq!(db.q(json!({"foreach": lambda("x", json!(null)), "collection": page.clone()})), db.q(page));

    // Errors.
    let e = db.err(json!({"map": lambda("x", json!({"divide": [var("x"), 0]})), "collection": [1]}));
    assert_eq!(pos(&e), vec![json!("map"), json!("expr"), json!("divide")]);
    let e = db.err(json!({"map": dbl.clone(), "collection": "abc"}));
    assert_eq!((e.code, pos(&e)), ("invalid argument", vec![json!("collection")]));
    let e = db.err(json!({"map": dbl, "collection": m0("nums_by_v")}));
    assert_eq!((e.code, pos(&e)), ("invalid argument", vec![json!("collection")]));
    let e = db.err(json!({"filter": lambda("x", json!(1)), "collection": [1]}));
    assert_eq!((e.code, pos(&e)), ("invalid argument", vec![json!("filter")]));
    let e = db.err(json!({"map": {"lambda": ["a", "b"], "expr": var("a")}, "collection": [[1, 2, 3]]}));
    assert_eq!(pos(&e), vec![json!("map")]);
}

#[test]
fn aggregates_and_list_functions() {
    let mut db = setup();
    let data = json!([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(db.q(json!({"count": data.clone()})), json!(9));
    assert_eq!(db.q(json!({"sum": data.clone()})), json!(45));
    assert_eq!(db.q(json!({"mean": data.clone()})), json!(5.0));
    assert_eq!(db.q(json!({"sum": [1, 2.5]})), json!(3.5));
    assert_eq!(db.q(json!({"sum": []})), json!(0));
    let e = db.err(json!({"sum": [1, "x"]}));
    assert_eq!((e.code, pos(&e)), ("invalid argument", vec![json!("sum")]));
    assert_eq!(db.err(json!({"mean": []})).code, "invalid argument");
    assert_eq!(db.err(json!({"count": "abc"})).code, "invalid argument");

    // Over sets and pages.
    nums(&mut db);
    let set = m0("nums_by_v");
    assert_eq!(db.q(json!({"count": set.clone()})), json!(10));
    assert_eq!(db.q(json!({"sum": set.clone()})), json!(45));
    assert_eq!(db.q(json!({"mean": set.clone()})), json!(4.5));
    assert_eq!(db.q(json!({"sum": pag(set.clone(), json!({"size": 3}))})), json!({"data": [3]}));
    let red = json!({"reduce": {"lambda": ["acc", "x"], "expr": {"add": [var("acc"), var("x")]}}, "initial": 100, "collection": set.clone()});
    assert_eq!(db.q(red), json!(145));
    let cat = json!({"reduce": {"lambda": ["acc", "x"], "expr": {"concat": [var("acc"), var("x")]}}, "initial": "", "collection": ["Fauna", "DB", " ", "rocks"]});
    assert_eq!(db.q(cat), json!("FaunaDB rocks"));
    let redp = json!({"reduce": {"lambda": ["acc", "x"], "expr": {"add": [var("acc"), var("x")]}}, "initial": 0, "collection": pag(set.clone(), json!({"size": 4}))});
    assert_eq!(db.q(redp), json!({"data": [6]}));
    let e = db.err(json!({"reduce": {"lambda": ["acc", "x"], "expr": {"add": [var("acc"), "s"]}}, "initial": 0, "collection": [1]}));
    assert_eq!(pos(&e)[..2], [json!("reduce"), json!("expr")]);

    // Any / All.
    assert_eq!(
        db.q(json!([{"any": [true, true, false]}, {"all": [true, true, true]}, {"any": [false, false]}, {"all": [true, false]}, {"any": []}, {"all": []}])),
        json!([true, true, false, false, false, true])
    );
    let e = db.err(json!({"all": [1]}));
    assert_eq!(pos(&e), vec![json!("all")]);

    // Emptiness.
    assert_eq!(db.q(json!({"is_empty": []})), json!(true));
    assert_eq!(db.q(json!({"is_nonempty": [1]})), json!(true));
    assert_eq!(db.q(json!({"is_empty": set.clone()})), json!(false));
    assert_eq!(db.q(json!({"is_empty": m("nums_by_parity", json!("x"))})), json!(true));
    assert_eq!(db.q(json!({"is_nonempty": pag(set.clone(), json!({}))})), json!(true));
    assert_eq!(db.q(json!({"is_empty": pag(m("nums_by_parity", json!(1)), json!({}))})), json!(true));

    // Take / Drop / Append / Prepend.
    assert_eq!(db.q(json!({"take": 1, "collection": [1, 2]})), json!([1]));
    assert_eq!(db.q(json!({"take": 3, "collection": [1, 2]})), json!([1, 2]));
    assert_eq!(db.q(json!({"take": -1, "collection": [1, 2]})), json!([]));
    assert_eq!(db.q(json!({"drop": 1, "collection": [1, 2]})), json!([2]));
    assert_eq!(db.q(json!({"drop": 3, "collection": [1, 2]})), json!([]));
    assert_eq!(db.q(json!({"drop": -1, "collection": [1, 2]})), json!([1, 2]));
    assert_eq!(db.q(json!({"take": 2, "collection": pag(set.clone(), json!({"size": 5}))}))["data"], json!([0, 1]));
    assert_eq!(db.q(json!({"prepend": [1, 2, 3], "collection": [4, 5, 6]})), json!([1, 2, 3, 4, 5, 6]));
    assert_eq!(db.q(json!({"append": [4, 5, 6], "collection": [1, 2, 3]})), json!([1, 2, 3, 4, 5, 6]));
    let e = db.err(json!({"append": 4, "collection": [1]}));
    assert_eq!(pos(&e), vec![json!("append")]);
    let e = db.err(json!({"prepend": [4], "collection": "x"}));
    assert_eq!(pos(&e), vec![json!("collection")]);
    let e = db.err(json!({"take": "1", "collection": [1]}));
    assert_eq!(pos(&e), vec![json!("take")]);
}

#[test]
fn array_length_limit() {
    let mut db = Db::new();
    let expr = tally_fql::expr::parse(&json!({"append": [1, 2, 3], "collection": [4, 5]})).unwrap();
    let snap = db.store.snapshot().unwrap();
    db.ts += 1;
    let limits = Limits { array_len_max: 4, ..Limits::default() };
    let out = evaluate(&*snap, db.ts, Mode::ReadOnly, Auth::root_admin(), &expr, [0; 32], limits, None);
    let e = out.result.unwrap_err();
    assert_eq!(e.code, "invalid argument");
    let expr = tally_fql::expr::parse(&json!({"union": [[1, 2, 3], [4, 5]]})).unwrap();
    let out = evaluate(&*snap, db.ts, Mode::ReadOnly, Auth::root_admin(), &expr, [0; 32], limits, None);
    assert_eq!(out.result.unwrap_err().code, "invalid argument");
}

#[test]
fn hand_written_index_entries() {
    // Entries written directly (as the document-write code does), including one removed
    // entry that must not show.
    use tally_fql::model::{self, native, Tx};
    use tally_value::{Object, Ref};
    let store = MemStore::new();
    let snap = store.snapshot().unwrap();
    let mut tx = Tx::new(&*snap, 10);
    let coll = |name: &str, id: i64| -> Object {
        [("name".to_string(), Value::from(name)), (model::INTERNAL_ID.to_string(), Value::Long(id))]
            .into_iter()
            .collect()
    };
    tx.put_doc(0, native::COLLECTIONS, "things", false, &coll("things", 100)).unwrap();
    let mut idx = coll("things_by_k", 200);
    idx.insert("source".into(), Value::Ref(Ref::collection("things")));
    idx.insert(
        "values".into(),
        Value::Array(vec![Value::object([("field", Value::Array(vec!["data".into(), "k".into()]))])]),
    );
    tx.put_doc(0, native::INDEXES, "things_by_k", false, &idx).unwrap();
    for (i, k) in [(1, "b"), (2, "a"), (3, "c")] {
        let r = Ref::doc(Ref::collection("things"), i.to_string());
        let vals = vec![Value::from(k)];
        tx.put(
            tally_storage::Space::Index,
            model::index_key(0, 200, &[], &vals, &[false], &r),
            model::encode_entry(i != 3, &vals, &r),
        )
        .unwrap();
    }
    let mut ev = tally_fql::eval::Eval::new(tx, Mode::Write, Auth::root_admin());
    let e = tally_fql::expr::parse(&json!({"paginate": {"match": {"index": "things_by_k"}}})).unwrap();
    let v = ev.eval(&e).unwrap();
    assert_eq!(to_json(&v), json!({"data": ["a", "b"]}));
}
