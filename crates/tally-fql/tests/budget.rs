//! The per-query memory budget and the answer size limit (see `tally_fql::budget`): a
//! query that would hold too much fails with `invalid argument`, the same way in
//! read-only and write mode; loops that drop what they build run in a constant budget.

mod common;

use common::*;
use serde_json::{json, Value as Json};
use tally_fql::auth::Auth;
use tally_fql::eval::{Limits, Mode};
use tally_fql::run::evaluate;
use tally_storage::Store;

const MIB: i64 = 1024 * 1024;

fn repeat(n: i64) -> Json {
    json!({"repeat": "a", "number": n})
}

fn lambda(p: &str, body: Json) -> Json {
    json!({"lambda": p, "expr": body})
}

fn range(n: i64) -> Json {
    // An array of n one-letter strings.
    json!({"ngram": repeat(n), "min": 1, "max": 1})
}

/// Evaluate `q` in `mode` with the default limits and a given memory budget.
fn run(db: &Db, q: &Json, mode: Mode, bytes_max: u64) -> Result<tally_value::Value, tally_fql::FqlError> {
    let expr = tally_fql::expr::parse(q).unwrap();
    let snap = db.store.snapshot().unwrap();
    let limits = Limits { value_bytes_max: bytes_max, ..Limits::default() };
    evaluate(&*snap, db.ts, mode, Auth::root_admin(), &expr, [0; 32], limits, None).result
}

#[test]
fn the_map_of_a_large_variable_is_refused_in_both_modes() {
    // The attack from issue 13: 100 copies of a 16 MiB string would be a 1.6 GB answer.
    let db = Db::new();
    let q = json!({"let": [{"x": repeat(16 * MIB)}], "in": {"map": lambda("_", json!({"var": "x"})), "collection": range(100)}});
    let limit = tally_fql::budget::QUERY_BYTES_MAX;
    for mode in [Mode::ReadOnly, Mode::Write] {
        let e = run(&db, &q, mode, limit).unwrap_err();
        assert_eq!(e.code, "invalid argument", "{mode:?}");
        assert!(e.description.contains("memory"), "{}", e.description);
    }
}

#[test]
fn copies_of_a_nested_value_count_whole() {
    // A variable holding an array of large strings: copying it copies them all.
    let db = Db::new();
    let big = json!({"map": lambda("_", repeat(MIB)), "collection": range(4)});
    let q = json!({"let": [{"x": big}], "in": {"map": lambda("_", json!({"var": "x"})), "collection": range(40)}});
    let e = run(&db, &q, Mode::Write, 32 * MIB as u64).unwrap_err();
    assert_eq!(e.code, "invalid argument");
    // Literal arrays of copies count too, without any lambda.
    let copies: Vec<Json> = (0..40).map(|_| json!({"var": "x"})).collect();
    let q = json!({"let": [{"x": repeat(MIB)}], "in": copies});
    assert_eq!(run(&db, &q, Mode::Write, 32 * MIB as u64).unwrap_err().code, "invalid argument");
}

#[test]
fn loops_that_drop_what_they_build_fit() {
    // 100 × 1 MiB built and dropped, in an 8 MiB budget.
    let db = Db::new();
    let body = json!({"length": json!({"concat": [repeat(MIB), "b"]})});
    let q = json!({"map": lambda("_", body), "collection": range(100)});
    let v = run(&db, &q, Mode::Write, 8 * MIB as u64).unwrap();
    assert_eq!(tally_value::to_json(&v).as_array().unwrap().len(), 100);
    let q = json!({"foreach": lambda("_", repeat(MIB)), "collection": range(100)});
    run(&db, &q, Mode::Write, 8 * MIB as u64).unwrap();
    let q = json!({"filter": lambda("_", json!({"equals": [repeat(MIB), "x"]})), "collection": range(100)});
    run(&db, &q, Mode::Write, 8 * MIB as u64).unwrap();
    // Reduce keeps only its latest accumulator: 64 KiB grown 100 times is 6.4 MiB, held
    // about three times over in the last step (the old one, its copy, the new one), where
    // the sum of every accumulator would be 320 MiB.
    let grow = json!({"concat": [json!({"var": "acc"}), repeat(64 * 1024)]});
    let q = json!({"reduce": json!({"lambda": ["acc", "_"], "expr": grow}), "initial": "", "collection": range(100)});
    run(&db, &q, Mode::Write, 24 * MIB as u64).unwrap();
}

#[test]
fn an_answer_over_the_limit_is_refused() {
    let db = Db::new();
    let q = json!({"map": lambda("_", repeat(MIB)), "collection": range(5)});
    let expr = tally_fql::expr::parse(&q).unwrap();
    let snap = db.store.snapshot().unwrap();
    let limits = Limits { answer_bytes_max: 4 * MIB as u64, ..Limits::default() };
    let out = evaluate(&*snap, db.ts, Mode::ReadOnly, Auth::root_admin(), &expr, [0; 32], limits, None);
    let e = out.result.unwrap_err();
    assert_eq!(e.code, "invalid argument");
    assert!(e.description.contains("answer"), "{}", e.description);
    // Four fit.
    let q = json!({"map": lambda("_", repeat(MIB)), "collection": range(3)});
    let expr = tally_fql::expr::parse(&q).unwrap();
    let out = evaluate(&*snap, db.ts, Mode::ReadOnly, Auth::root_admin(), &expr, [0; 32], limits, None);
    assert!(out.result.is_ok());
}

#[test]
fn documents_read_are_charged() {
    // Ten documents of 1 MiB each, read into one array, do not fit in 4 MiB.
    let mut db = Db::new();
    db.collection("big");
    let mut refs = Vec::new();
    for _ in 0..10 {
        let d =
            db.q(json!({"create": coll_ref_of("big"), "params": {"object": {"data": {"object": {"s": repeat(MIB)}}}}}));
        refs.push(d["ref"].clone());
    }
    let gets: Vec<Json> = refs.iter().map(|r| json!({"get": lit(r)})).collect();
    let e = run(&db, &json!(gets), Mode::ReadOnly, 4 * MIB as u64).unwrap_err();
    assert_eq!(e.code, "invalid argument");
    // Counting them holds none of them.
    let count = json!({"count": {"documents": coll_ref_of("big")}});
    run(&db, &count, Mode::ReadOnly, 4 * MIB as u64).unwrap();
}

fn coll_ref_of(name: &str) -> Json {
    json!({"collection": name})
}

/// The inline pass's work bound (`Limits::work_bytes_max`): an NGram that would build
/// megabytes in one step stops before building them, and says so (`work_stopped`);
/// without the bound (the default, and always in the executor) the same query answers.
#[test]
fn the_work_bound_stops_a_heavy_step_before_it_runs() {
    let db = Db::new();
    let q = json!({"count": {"ngram": repeat(300_000), "min": 1, "max": 2}});
    let expr = tally_fql::expr::parse(&q).unwrap();
    let snap = db.store.snapshot().unwrap();
    let bounded = Limits { work_bytes_max: 1 << 20, ..Limits::default() };
    let out = evaluate(&*snap, db.ts, Mode::ReadOnly, Auth::root_admin(), &expr, [0; 32], bounded, None);
    assert!(out.work_stopped);
    assert!(out.result.is_err());
    // A small query under the same bound is not stopped.
    let small = tally_fql::expr::parse(&json!({"count": {"ngram": repeat(300), "min": 1, "max": 2}})).unwrap();
    let out = evaluate(&*snap, db.ts, Mode::ReadOnly, Auth::root_admin(), &small, [0; 32], bounded, None);
    assert!(!out.work_stopped);
    assert_eq!(out.result.unwrap(), tally_value::Value::Long(599));
    for mode in [Mode::ReadOnly, Mode::Write] {
        let out = evaluate(&*snap, db.ts, mode, Auth::root_admin(), &expr, [0; 32], Limits::default(), None);
        assert!(!out.work_stopped);
        assert_eq!(out.result.unwrap(), tally_value::Value::Long(599_999), "{mode:?}");
    }
}

/// The work bound also stops a read before the heavy part of it: a document past the
/// bound is not decoded, and a set walked in one step (`Count(Documents(c))`) stops
/// partway. Without the bound both answer, so no result depends on it.
#[test]
fn the_work_bound_stops_large_documents_and_long_walks() {
    let mut db = Db::new();
    db.collection("big");
    let d =
        db.q(json!({"create": coll_ref_of("big"), "params": {"object": {"data": {"object": {"s": repeat(2 * MIB)}}}}}));
    db.collection("many");
    let creates: Vec<Json> = (0..2_000)
        .map(|i| json!({"create": coll_ref_of("many"), "params": {"object": {"data": {"object": {"i": i}}}}}))
        .collect();
    db.q(json!({"do": creates}));
    let snap = db.store.snapshot().unwrap();
    // Smaller than the server's 1 MiB, so that a few thousand keys walked pass it.
    let bounded = Limits { work_bytes_max: 16 << 10, ..Limits::default() };
    let get = tally_fql::expr::parse(&json!({"get": lit(&d["ref"])})).unwrap();
    let count = tally_fql::expr::parse(&json!({"count": {"documents": coll_ref_of("many")}})).unwrap();
    for (what, expr) in [("get", &get), ("count", &count)] {
        let out = evaluate(&*snap, db.ts, Mode::ReadOnly, Auth::root_admin(), expr, [0; 32], bounded, None);
        assert!(out.work_stopped, "{what}");
        assert!(out.result.is_err(), "{what}");
        let out = evaluate(&*snap, db.ts, Mode::ReadOnly, Auth::root_admin(), expr, [0; 32], Limits::default(), None);
        assert!(!out.work_stopped, "{what}");
        assert!(out.result.is_ok(), "{what}");
    }
    let out = evaluate(&*snap, db.ts, Mode::ReadOnly, Auth::root_admin(), &count, [0; 32], Limits::default(), None);
    assert_eq!(out.result.unwrap(), tally_value::Value::Long(2_000));
}
