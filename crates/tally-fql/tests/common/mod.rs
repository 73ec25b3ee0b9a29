//! Shared harness for the evaluator integration tests: a MemStore-backed database that
//! runs queries in write mode and applies their writes, plus query-building helpers.
#![allow(dead_code)]

use serde_json::{json, Value as Json};
use tally_fql::auth::Auth;
use tally_fql::error::{FqlError, Seg};
use tally_fql::eval::{Limits, Mode};
use tally_fql::run::evaluate;
use tally_storage::{MemStore, Store};
use tally_value::{to_json, Value};

/// Apply a transaction's writes to `store` in one commit, as the executor does.
pub fn commit_writes(store: &MemStore, writes: &[tally_fql::model::Write]) {
    if writes.is_empty() {
        return;
    }
    let mut b = store.begin().unwrap();
    for w in writes {
        match &w.value {
            Some(v) => b.put(w.space, &w.key, w.ts, v).unwrap(),
            None => {
                b.remove(w.space, &w.key, w.ts).unwrap();
            }
        }
    }
    b.commit(false).unwrap();
}

pub struct Db {
    pub store: MemStore,
    pub ts: u64,
}

impl Db {
    pub fn new() -> Db {
        Db { store: MemStore::new(), ts: 1_000_000 }
    }

    pub fn run(&mut self, q: Json) -> Result<Value, FqlError> {
        let expr = tally_fql::expr::parse(&q)?;
        self.ts += 1000;
        let snap = self.store.snapshot().unwrap();
        let out = evaluate(&*snap, self.ts, Mode::Write, Auth::root_admin(), &expr, [0; 32], Limits::default(), None);
        drop(snap);
        if out.result.is_ok() {
            commit_writes(&self.store, &out.writes);
        }
        out.result
    }

    pub fn q(&mut self, q: Json) -> Json {
        match self.run(q.clone()) {
            Ok(v) => to_json(&v),
            Err(e) => panic!("query {q} failed: {}", e.to_json()),
        }
    }

    pub fn err(&mut self, q: Json) -> FqlError {
        match self.run(q.clone()) {
            Ok(v) => panic!("query {q} should fail, gave {}", to_json(&v)),
            Err(e) => e,
        }
    }

    /// Evaluate `q` as `auth` read-only (as the receiving node does first) and in write
    /// mode (as the executor does), without applying anything; the two passes must agree,
    /// except that the read-only one may stop at a write. The write pass's result, or its
    /// error code.
    pub fn both(&mut self, auth: &Auth, q: Json) -> Result<Json, String> {
        let expr = tally_fql::expr::parse(&q).unwrap();
        self.ts += 1000;
        let snap = self.store.snapshot().unwrap();
        let ro = evaluate(&*snap, self.ts, Mode::ReadOnly, auth.clone(), &expr, [0; 32], Limits::default(), None);
        let rw = evaluate(&*snap, self.ts, Mode::Write, auth.clone(), &expr, [0; 32], Limits::default(), None);
        let show = |r: &Result<Value, FqlError>| match r {
            Ok(v) => Ok(to_json(v)),
            Err(e) => Err(e.code.to_string()),
        };
        let w = show(&rw.result);
        match &ro.result {
            Err(e) if e.needs_write => {}
            other => assert_eq!(show(other), w, "read-only and write passes disagree on {q}"),
        }
        w
    }

    pub fn collection(&mut self, name: &str) {
        self.q(json!({"create_collection": {"object": {"name": name}}}));
    }

    /// `terms`/`values`: field paths under `data`; a value written `-x` is reversed.
    pub fn index(&mut self, name: &str, coll: &str, terms: &[&str], values: &[&str]) {
        let terms: Vec<Json> = terms.iter().map(|t| json!({"object": {"field": ["data", t]}})).collect();
        let values: Vec<Json> = values
            .iter()
            .map(|v| match v.strip_prefix('-') {
                Some(v) => json!({"object": {"field": ["data", v], "reverse": true}}),
                None if *v == "ref" => json!({"object": {"field": ["ref"]}}),
                None => json!({"object": {"field": ["data", v]}}),
            })
            .collect();
        let mut o = serde_json::Map::new();
        o.insert("name".into(), json!(name));
        o.insert("source".into(), json!({"collection": coll}));
        if !terms.is_empty() {
            o.insert("terms".into(), Json::Array(terms));
        }
        if !values.is_empty() {
            o.insert("values".into(), Json::Array(values));
        }
        self.q(json!({"create_index": {"object": o}}));
    }

    /// Create a document with `data` (plain JSON values); returns its ref (wire JSON).
    pub fn doc(&mut self, coll: &str, data: Json) -> Json {
        let doc = self.q(json!({"create": {"collection": coll}, "params": {"object": {"data": lit(&data)}}}));
        doc["ref"].clone()
    }
}

/// Wrap plain JSON objects as FQL object literals.
pub fn lit(v: &Json) -> Json {
    match v {
        Json::Object(m) => {
            if m.keys().any(|k| k.starts_with('@')) {
                return v.clone();
            }
            let inner: serde_json::Map<String, Json> = m.iter().map(|(k, v)| (k.clone(), lit(v))).collect();
            json!({ "object": inner })
        }
        Json::Array(a) => Json::Array(a.iter().map(lit).collect()),
        other => other.clone(),
    }
}

pub fn idx(name: &str) -> Json {
    json!({"index": name})
}

pub fn m(index: &str, terms: Json) -> Json {
    json!({"match": idx(index), "terms": terms})
}

pub fn m0(index: &str) -> Json {
    json!({"match": idx(index)})
}

pub fn pag(set: Json, opts: Json) -> Json {
    let mut o = serde_json::Map::new();
    o.insert("paginate".into(), set);
    if let Json::Object(extra) = opts {
        o.extend(extra);
    }
    Json::Object(o)
}

pub fn pos(e: &FqlError) -> Vec<Json> {
    e.position()
        .into_iter()
        .map(|s| match s {
            Seg::Key(k) => json!(k),
            Seg::Index(i) => json!(i),
        })
        .collect()
}

/// A document ref: `{"ref": {"collection": c}, "id": id}`.
pub fn coll_ref(c: &str, id: &str) -> Json {
    json!({"ref": {"collection": c}, "id": id})
}
