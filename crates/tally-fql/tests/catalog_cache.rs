//! The per-transaction cache of collection ids (`Eval::collection_id`): a transaction that
//! changes the schema must see its own change on its next lookup, never the cached answer.

mod common;

use common::*;
use serde_json::{json, Value as Json};

fn doc(coll: &str, id: &str) -> Json {
    json!({"ref": {"collection": coll}, "id": id})
}

fn create(coll: &str, id: &str, x: i64) -> Json {
    json!({"create": doc(coll, id), "params": {"object": {"data": {"object": {"x": x}}}}})
}

#[test]
fn a_collection_created_in_the_transaction_is_seen_after_a_miss() {
    let mut db = Db::new();
    // The first lookup of `a` misses (and is cached as missing); the collection is then
    // created and used in the same transaction.
    let q = json!({"do": [
        {"exists": doc("a", "1")},
        {"create_collection": {"object": {"name": "a"}}},
        create("a", "1", 7),
        {"select": ["data", "x"], "from": {"get": doc("a", "1")}}
    ]});
    assert_eq!(db.q(q), json!(7));
}

#[test]
fn a_collection_deleted_in_the_transaction_is_gone_after_a_hit() {
    let mut db = Db::new();
    db.collection("b");
    let q = json!({"do": [
        create("b", "1", 1),
        {"delete": {"collection": "b"}},
        create("b", "2", 2)
    ]});
    let e = db.err(q);
    assert_eq!(e.code, "invalid ref", "{}", e.to_json());
}

#[test]
fn many_creates_in_one_transaction_resolve_their_collection() {
    let mut db = Db::new();
    db.collection("c");
    let creates: Vec<Json> = (1..=50).map(|i| create("c", &i.to_string(), i)).collect();
    db.q(json!({"do": creates}));
    let sum = json!({"sum": {"map": {"lambda": "r", "expr": {"select": ["data", "x"], "from": {"get": {"var": "r"}}}},
        "collection": {"select": "data", "from": {"paginate": {"documents": {"collection": "c"}}, "size": 100}}}});
    assert_eq!(db.q(sum), json!(1275));
}
