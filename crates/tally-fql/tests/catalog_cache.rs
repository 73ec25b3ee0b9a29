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

// ---- The executor's cross-transaction cache (`tally_fql::schema_cache`) ----

use tally_fql::auth::Auth;
use tally_fql::eval::{Limits, Mode};
use tally_fql::run::{evaluate_cached, Outcome};
use tally_fql::schema_cache::SchemaCache;
use tally_storage::{MemStore, Store};

/// The same transactions applied to two stores, one evaluated with a shared catalog
/// cache (as the executor does) and one without: every outcome must be the same, byte
/// for byte (result, writes, bytes read, steps).
struct Twin {
    plain: MemStore,
    cached: MemStore,
    cache: SchemaCache,
    ts: u64,
}

impl Twin {
    fn new() -> Twin {
        Twin { plain: MemStore::new(), cached: MemStore::new(), cache: SchemaCache::new(0), ts: 1_000_000 }
    }

    fn eval(store: &MemStore, ts: u64, expr: &tally_fql::expr::Expr, cache: Option<&SchemaCache>) -> Outcome {
        let snap = store.snapshot().unwrap();
        let auth = Auth::root_admin();
        let out = evaluate_cached(&*snap, ts, Mode::Write, auth, expr, [0; 32], Limits::default(), None, cache);
        drop(snap);
        if out.result.is_ok() {
            commit_writes(store, &out.writes);
        }
        out
    }

    /// Run `q` on both; the outcome as JSON (or the error's code).
    fn run(&mut self, q: Json) -> Result<Json, String> {
        let expr = tally_fql::expr::parse(&q).unwrap();
        self.ts += 1000;
        let a = Twin::eval(&self.plain, self.ts, &expr, None);
        let b = Twin::eval(&self.cached, self.ts, &expr, Some(&self.cache));
        self.cache.record(&b.writes, self.ts);
        let show = |o: &Outcome| match &o.result {
            Ok(v) => Ok(tally_value::to_json(v)),
            Err(e) => Err(e.code.to_string()),
        };
        assert_eq!(show(&a), show(&b), "results differ for {q}");
        assert_eq!(a.writes, b.writes, "writes differ for {q}");
        assert_eq!(a.bytes_read, b.bytes_read, "bytes read differ for {q}");
        assert_eq!(a.steps, b.steps, "steps differ for {q}");
        show(&b)
    }

    fn ok(&mut self, q: Json) -> Json {
        self.run(q.clone()).unwrap_or_else(|e| panic!("{q} failed: {e}"))
    }
}

fn idx_on(name: &str, coll: &str, field: &str) -> Json {
    json!({"create_index": {"object": {"name": name, "source": {"collection": coll},
        "terms": [{"object": {"field": ["data", field]}}]}}})
}

fn by(index: &str, term: Json) -> Json {
    json!({"select": ["data"], "from": {"paginate": {"match": {"index": index}, "terms": term}}})
}

#[test]
fn shared_cache_follows_collections_created_renamed_and_deleted() {
    let mut t = Twin::new();
    t.ok(json!({"create_collection": {"object": {"name": "a"}}}));
    t.ok(create("a", "1", 1));
    t.ok(create("a", "2", 2)); // a's id and indexes come from the cache now
    let before_rename = t.ts;
    // Renamed: the old name is gone in the next transaction, the new one works.
    t.ok(json!({"update": {"collection": "a"}, "params": {"object": {"name": "b"}}}));
    assert_eq!(t.run(create("a", "3", 3)), Err("invalid ref".into()));
    t.ok(create("b", "3", 3));
    assert_eq!(t.ok(json!({"select": ["data", "x"], "from": {"get": doc("b", "1")}})), json!(1));
    // Read at a ts before the rename: the old name, not the cached new one.
    let old = json!({"at": before_rename, "expr": {"select": ["data", "x"], "from": {"get": doc("a", "1")}}});
    assert_eq!(t.ok(old), json!(1));
    // Deleted, then created again under the same name: a new collection.
    t.ok(json!({"delete": {"collection": "b"}}));
    assert_eq!(t.run(json!({"get": doc("b", "1")})), Err("invalid ref".into()));
    t.ok(json!({"create_collection": {"object": {"name": "b"}}}));
    assert_eq!(t.ok(json!({"exists": doc("b", "1")})), json!(false));
    // Within one transaction: used, renamed, then the old name no longer resolves.
    let q = json!({"do": [
        create("b", "10", 10),
        {"update": {"collection": "b"}, "params": {"object": {"name": "c"}}},
        {"exists": doc("b", "10")},
    ]});
    assert_eq!(t.ok(q), json!(false));
    assert_eq!(t.ok(json!({"select": ["data", "x"], "from": {"get": doc("c", "10")}})), json!(10));
    assert_eq!(t.run(create("b", "11", 11)), Err("invalid ref".into()));
}

#[test]
fn shared_cache_follows_indexes_created_and_deleted() {
    let mut t = Twin::new();
    t.ok(json!({"create_collection": {"object": {"name": "a"}}}));
    t.ok(create("a", "1", 1));
    t.ok(create("a", "2", 2)); // "no index on a" is cached
                               // An index created in one transaction is maintained by the next one's writes.
    t.ok(idx_on("by_x", "a", "x"));
    t.ok(create("a", "3", 3));
    assert_eq!(
        t.ok(by("by_x", json!(3))),
        json!([{"@ref": {"id": "3", "collection": {"@ref": {"id": "a", "collection": {"@ref": {"id": "collections"}}}}}}])
    );
    // Created and written through in the same transaction.
    let q = json!({"do": [idx_on("by_y", "a", "y"), create("a", "4", 4), by("by_x", json!(4))]});
    assert_eq!(t.ok(q).as_array().map(Vec::len), Some(1));
    t.ok(create("a", "5", 5));
    // Deleted: the next write does not maintain it, and it cannot be read.
    t.ok(json!({"delete": {"index": "by_x"}}));
    t.ok(create("a", "6", 6));
    assert_eq!(t.run(by("by_x", json!(6))), Err("invalid ref".into()));
    // Recreated over the same documents: built again, entries for all of them.
    t.ok(idx_on("by_x", "a", "x"));
    t.ok(create("a", "7", 7));
    assert_eq!(t.ok(by("by_x", json!(7))).as_array().map(Vec::len), Some(1));
    // Updates keep entries right through the cached definitions.
    t.ok(json!({"update": doc("a", "7"), "params": {"object": {"data": {"object": {"x": 70}}}}}));
    assert_eq!(t.ok(by("by_x", json!(7))), json!([]));
    assert_eq!(t.ok(by("by_x", json!(70))).as_array().map(Vec::len), Some(1));
}

#[test]
fn shared_cache_follows_retention_settings() {
    let mut t = Twin::new();
    t.ok(json!({"create_collection": {"object": {"name": "a"}}}));
    t.ok(create("a", "1", 1));
    t.ok(create("a", "2", 2));
    // `ttl_days` set: the next document gets a `ttl` (read through the cache).
    t.ok(json!({"update": {"collection": "a"}, "params": {"object": {"ttl_days": 1}}}));
    t.ok(create("a", "3", 3));
    let has_ttl = json!({"contains_path": ["ttl"], "in": {"get": doc("a", "3")}});
    assert_eq!(t.ok(has_ttl), json!(true));
    t.ok(json!({"update": {"collection": "a"}, "params": {"object": {"ttl_days": null}}}));
    t.ok(create("a", "4", 4));
    let no_ttl = json!({"contains_path": ["ttl"], "in": {"get": doc("a", "4")}});
    assert_eq!(t.ok(no_ttl), json!(false));
}

#[test]
fn shared_cache_is_used_only_at_or_after_the_last_schema_change() {
    let c = SchemaCache::new(0);
    let w = |coll: u64| tally_fql::model::Write {
        space: tally_storage::Space::Docs,
        key: [1u64.to_be_bytes(), coll.to_be_bytes(), *b"xxxxxxxx"].concat(),
        ts: 50,
        value: None,
    };
    // A user document write does not move the schema ts; a schema document write does.
    c.record(&[w(1_000)], 50);
    assert_eq!(c.schema_ts(), 0);
    c.record(&[w(tally_fql::model::native::INDEXES)], 50);
    assert_eq!(c.schema_ts(), 50);
    c.reset(40);
    assert_eq!(c.schema_ts(), 50, "never moves back");
}
