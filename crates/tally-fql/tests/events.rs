//! Events: document and set history through `Events` and `Paginate(..., {events: true})`.

mod common;

use common::*;
use serde_json::{json, Value as Json};

/// Collection `things` with an index by `n` (terms) and one by `v` (values).
fn setup() -> Db {
    let mut db = Db::new();
    db.collection("things");
    db.index("things_by_n", "things", &["n"], &[]);
    db.index("things_v", "things", &[], &["v"]);
    db
}

fn events(x: Json) -> Json {
    json!({"events": x})
}

fn actions(page: &Json) -> Vec<String> {
    page["data"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap().to_string()).collect()
}

fn upd(r: &Json, data: Json) -> Json {
    json!({"update": r, "params": {"object": {"data": lit(&data)}}})
}

/// A document written four times: create, update, update, delete. Returns its ref and
/// the ts of each write.
fn history(db: &mut Db) -> (Json, Vec<Json>) {
    let c = db.q(json!({"create": {"collection": "things"}, "params": {"object": {"data": lit(&json!({"n": 1, "v": 1, "o": {"a": 1, "b": 2}}))}}}));
    let r = c["ref"].clone();
    let u1 = db.q(upd(&r, json!({"n": 2, "v": 2})));
    let u2 = db.q(upd(&r, json!({"o": {"b": null, "c": 3}, "v": null})));
    let d = db.q(json!({"delete": r}));
    // Delete answers with the last live version; its own ts is the txn's.
    let _ = d;
    let del_ts = db.ts;
    (r, vec![c["ts"].clone(), u1["ts"].clone(), u2["ts"].clone(), json!(del_ts)])
}

#[test]
fn document_events_carry_actions_and_data_diffs() {
    let mut db = setup();
    let (r, ts) = history(&mut db);
    let page = db.q(pag(events(r.clone()), json!({})));
    assert_eq!(actions(&page), ["create", "update", "update", "delete"]);
    let data = page["data"].as_array().unwrap();
    for (e, t) in data.iter().zip(&ts) {
        assert_eq!(e["document"], r);
        assert_eq!(&e["ts"], t);
    }
    assert_eq!(data[0]["data"], json!({"n": 1, "v": 1, "o": {"a": 1, "b": 2}}));
    assert_eq!(data[1]["data"], json!({"n": 2, "v": 2}));
    assert_eq!(data[2]["data"], json!({"o": {"b": null, "c": 3}, "v": null}));
    assert_eq!(data[3]["data"], json!(null));
    assert!(page.get("after").is_none() && page.get("before").is_none(), "{page}");

    // `events: true` pages the same history; `Paginate(ref)` is the document itself.
    assert_eq!(db.q(pag(r.clone(), json!({"events": true}))), page);
    assert_eq!(db.q(pag(r.clone(), json!({})))["data"], json!([]));
    // The event set renders as `@set: {events: ref}` and is a set to the collection functions.
    assert_eq!(db.q(events(r.clone()))["@set"]["events"], r);
    assert_eq!(db.q(json!({"count": events(r.clone())})), json!(4));
    // History as of an earlier time.
    let then = db.q(pag(events(r.clone()), json!({"ts": ts[1]})));
    assert_eq!(actions(&then), ["create", "update"]);
    let at = db.q(json!({"at": ts[0], "expr": pag(events(r.clone()), json!({}))}));
    assert_eq!(actions(&at), ["create"]);
}

#[test]
fn event_cursors_page_forward_and_back() {
    let mut db = setup();
    let (r, ts) = history(&mut db);
    let p1 = db.q(pag(events(r.clone()), json!({"size": 1})));
    assert_eq!(actions(&p1), ["create"]);
    // Cursors are events without their data.
    assert_eq!(p1["after"], json!({"ts": ts[1], "action": "update", "document": r}));
    assert!(p1.get("before").is_none());
    let p2 = db.q(pag(events(r.clone()), json!({"size": 2, "after": lit(&p1["after"])})));
    assert_eq!(actions(&p2), ["update", "update"]);
    assert_eq!(p2["before"], p1["after"]);
    assert_eq!(p2["after"], json!({"ts": ts[3], "action": "delete", "document": r}));
    let p3 = db.q(pag(events(r.clone()), json!({"size": 2, "after": lit(&p2["after"])})));
    assert_eq!(actions(&p3), ["delete"]);
    assert!(p3.get("after").is_none());
    // Backwards from the end, and from a cursor (exclusive).
    let b1 = db.q(pag(events(r.clone()), json!({"size": 3, "before": null})));
    assert_eq!(actions(&b1), ["update", "update", "delete"]);
    assert_eq!(b1["before"], json!({"ts": ts[1], "action": "update", "document": r}));
    let b2 = db.q(pag(events(r.clone()), json!({"size": 3, "before": lit(&b1["before"])})));
    assert_eq!(actions(&b2), ["create"]);
    assert_eq!(b2["after"], b1["before"]);
    // A bare ts points before every event at that ts.
    let a = db.q(pag(events(r.clone()), json!({"after": ts[2]})));
    assert_eq!(actions(&a), ["update", "delete"]);
    assert_eq!(a["before"], json!({"ts": ts[2]}));
    let b = db.q(pag(events(r.clone()), json!({"before": ts[2]})));
    assert_eq!(actions(&b), ["create", "update"]);
    assert_eq!(b["after"], json!({"ts": ts[2]}));
    let b = db.q(pag(events(r.clone()), json!({"before": 5})));
    assert_eq!(actions(&b), Vec::<String>::new());
    assert_eq!(b["after"], json!({"ts": 5}));
    // A cursor without a document falls after every event of its ts and action.
    let a = db.q(pag(events(r.clone()), json!({"after": {"object": {"ts": ts[1], "action": "update"}}})));
    assert_eq!(actions(&a), ["update", "delete"]);
    // Legacy cursor form.
    let a = db.q(pag(events(r.clone()), json!({"cursor": {"object": {"after": ts[3]}}})));
    assert_eq!(actions(&a), ["delete"]);
    // Malformed cursors.
    let e = db.err(pag(events(r.clone()), json!({"after": "x"})));
    assert_eq!((e.code, pos(&e)), ("invalid argument", vec![json!("paginate")]));
    let e = db.err(pag(events(r.clone()), json!({"after": {"object": {"ts": 1, "action": "nope"}}})));
    assert_eq!(e.code, "invalid argument");
}

#[test]
fn set_events_add_and_remove() {
    let mut db = setup();
    let (r, ts) = history(&mut db);
    // Singleton: the create adds, the delete removes, updates do not show.
    let p = db.q(pag(events(json!({"singleton": r})), json!({})));
    assert_eq!(actions(&p), ["add", "remove"]);
    assert_eq!(p["data"][0], json!({"ts": ts[0], "action": "add", "document": r}));
    assert_eq!(p["data"][1], json!({"ts": ts[3], "action": "remove", "document": r}));
    // Index without values: the entry under n=1 leaves at the first update.
    let p = db.q(pag(events(m("things_by_n", json!(1))), json!({})));
    assert_eq!(
        p["data"],
        json!([
            {"ts": ts[0], "action": "add", "document": r},
            {"ts": ts[1], "action": "remove", "document": r},
        ])
    );
    let p = db.q(pag(m("things_by_n", json!(2)), json!({"events": true})));
    assert_eq!(actions(&p), ["add", "remove"]);
    // Index with values: the values are the data; an all-null entry is not in the index.
    let p = db.q(pag(events(m0("things_v")), json!({})));
    assert_eq!(
        p["data"],
        json!([
            {"ts": ts[0], "action": "add", "document": r, "data": [1]},
            {"ts": ts[1], "action": "add", "document": r, "data": [2]},
            {"ts": ts[1], "action": "remove", "document": r, "data": [1]},
            {"ts": ts[2], "action": "remove", "document": r, "data": [2]},
        ])
    );
    // Set-event cursors keep the values.
    let p1 = db.q(pag(events(m0("things_v")), json!({"size": 2})));
    assert_eq!(p1["after"], json!({"ts": ts[1], "action": "remove", "document": r, "data": [1]}));
    let p2 = db.q(pag(events(m0("things_v")), json!({"size": 2, "after": lit(&p1["after"])})));
    assert_eq!(
        p2["data"],
        json!([
            {"ts": ts[1], "action": "remove", "document": r, "data": [1]},
            {"ts": ts[2], "action": "remove", "document": r, "data": [2]},
        ])
    );
    // Documents(coll): documents entering and leaving the collection.
    let r2 = db.doc("things", json!({"n": 9}));
    let p = db.q(pag(events(json!({"documents": {"collection": "things"}})), json!({})));
    assert_eq!(actions(&p), ["add", "remove", "add"]);
    assert_eq!(p["data"][2]["document"], r2);
}

/// A transaction that writes one document several times shows its net change only: a
/// document moved out of a set and back in within one transaction has no event of that
/// set, one moved in twice is added once, and a document created and deleted by the same
/// transaction leaves no history at all. (Before, each write's index entry overwrote the
/// previous one at the same ts, so the history showed an `add` of a document already in
/// the set — a change feed then saw the same document added twice in a row.)
#[test]
fn one_transaction_shows_its_net_change() {
    let mut db = setup();
    let r = db.doc("things", json!({"n": 1, "v": 1}));
    let before = db.q(pag(events(m("things_by_n", json!(1))), json!({})));
    assert_eq!(actions(&before), ["add"]);
    // Out of n=1 and back in, in one transaction: no event under n=1 or n=2.
    db.q(json!({"do": [upd(&r, json!({"n": 2})), upd(&r, json!({"n": 1}))]}));
    assert_eq!(db.q(pag(events(m("things_by_n", json!(1))), json!({}))), before);
    assert_eq!(actions(&db.q(pag(events(m("things_by_n", json!(2))), json!({})))), Vec::<String>::new());
    // Moved to n=3 by two writes of one transaction: one remove under n=1, one add under 3.
    db.q(json!({"do": [upd(&r, json!({"n": 2})), upd(&r, json!({"n": 3}))]}));
    let moved = db.ts;
    assert_eq!(actions(&db.q(pag(events(m("things_by_n", json!(1))), json!({})))), ["add", "remove"]);
    let p3 = db.q(pag(events(m("things_by_n", json!(3))), json!({})));
    assert_eq!(p3["data"], json!([{"ts": moved, "action": "add", "document": r}]));
    assert_eq!(actions(&db.q(pag(events(m("things_by_n", json!(2))), json!({})))), Vec::<String>::new());
    // Created and deleted by one transaction: no event anywhere, no document history.
    let docs = events(json!({"documents": {"collection": "things"}}));
    let docs_before = db.q(pag(docs.clone(), json!({})));
    let gone = db.q(json!({"let": [{"x": {"create": {"collection": "things"}, "params": {"object": {"data": lit(&json!({"n": 1}))}}}}],
        "in": [{"delete": {"select": "ref", "from": {"var": "x"}}}, {"select": "ref", "from": {"var": "x"}}]}));
    let gone_ref = gone[1].clone();
    assert_eq!(db.q(pag(docs, json!({}))), docs_before);
    assert_eq!(actions(&db.q(pag(events(m("things_by_n", json!(1))), json!({})))), ["add", "remove"]);
    assert_eq!(actions(&db.q(pag(events(gone_ref.clone()), json!({})))), Vec::<String>::new());
    assert_eq!(db.q(json!({"exists": gone_ref})), json!(false));
}

#[test]
fn event_sets_combine_only_with_event_sets() {
    let mut db = setup();
    let (r, _) = history(&mut db);
    let r2 = db.doc("things", json!({"n": 1}));
    // Unions merge in historical order.
    let u = json!({"union": [events(m("things_by_n", json!(1))), events(r2.clone())]});
    let p = db.q(pag(u.clone(), json!({})));
    assert_eq!(actions(&p), ["add", "remove", "add", "create"]);
    assert_eq!(p["data"][2]["document"], r2);
    assert_eq!(p["data"][3]["document"], r2);
    // Events of a union are the union of the events.
    let p = db.q(pag(events(json!({"union": [m("things_by_n", json!(1)), m("things_by_n", json!(2))]})), json!({})));
    assert_eq!(actions(&p), ["add", "add", "remove", "remove", "add"]);
    // Sources name the event set each event came from.
    let p = db.q(pag(events(r.clone()), json!({"sources": true, "size": 1})));
    let src = db.q(events(r.clone()));
    assert_eq!(p["data"][0]["sources"], json!([src]));
    assert_eq!(p["data"][0]["value"]["action"], json!("create"));

    let e = db.err(json!({"union": [events(r.clone()), json!({"singleton": r})]}));
    assert_eq!((e.code, pos(&e)), ("invalid argument", vec![json!("union")]));
    assert_eq!(e.description, "Sets are not compatible.");
    let e = db.err(pag(events(events(r.clone())), json!({})));
    assert_eq!((e.code, pos(&e)), ("invalid argument", vec![json!("paginate")]));
    for s in [
        json!({"range": events(m0("things_v")), "from": 1, "to": 2}),
        json!({"reverse": events(r.clone())}),
        json!({"intersection": [events(r.clone()), events(r2.clone())]}),
        events(json!({"reverse": m0("things_v")})),
    ] {
        let e = db.err(pag(s.clone(), json!({})));
        assert_eq!((e.code, pos(&e)), ("invalid argument", vec![json!("paginate")]), "{s}");
        assert_eq!(e.description, "Set does not support events history.");
    }
    let e = db.err(events(json!(1)));
    assert_eq!((e.code, pos(&e)), ("invalid argument", vec![json!("events")]));
}

/// History edits keep an index's events what the document's history says: an edit
/// writes the entries of the edited version and revises those of the version after it
/// (it now follows another version), as v4 does.
#[test]
fn history_edits_revise_the_next_versions_index_entries() {
    let mut db = setup();
    let c = db.q(json!({"create": {"collection": "things"}, "params": {"object": {"data": lit(&json!({"n": 1}))}}}));
    let r = c["ref"].clone();
    let t0 = c["ts"].as_i64().unwrap();
    let t1 = db.q(upd(&r, json!({"x": 1})))["ts"].as_i64().unwrap(); // still n = 1
    let mid = t0 + (t1 - t0) / 2;
    let feed = |db: &mut Db, n: i64| -> Vec<(String, i64)> {
        let p = db.q(pag(events(m("things_by_n", json!(n))), json!({})));
        p["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["action"].as_str().unwrap().to_string(), e["ts"].as_i64().unwrap()))
            .collect()
    };
    let ev = |a: &str, ts: i64| (a.to_string(), ts);
    // An update in between that moves the document to n = 2: it leaves 1 at `mid` and
    // comes back at t1 (the version at t1 now follows one with n = 2).
    db.q(json!({"insert": r, "ts": mid, "action": "update", "params": {"object": {"data": lit(&json!({"n": 2}))}}}));
    assert_eq!(feed(&mut db, 1), vec![ev("add", t0), ev("remove", mid), ev("add", t1)]);
    assert_eq!(feed(&mut db, 2), vec![ev("add", mid), ev("remove", t1)]);
    // Removing it again restores the index as it was.
    db.q(json!({"remove": r, "ts": mid, "action": "update"}));
    assert_eq!(feed(&mut db, 1), vec![ev("add", t0)]);
    assert_eq!(feed(&mut db, 2), vec![]);
    // An earlier create: the document enters the set then, no longer at t0 (an update).
    db.q(
        json!({"insert": r, "ts": t0 - 500, "action": "create", "params": {"object": {"data": lit(&json!({"n": 1}))}}}),
    );
    assert_eq!(feed(&mut db, 1), vec![ev("add", t0 - 500)]);
    // Reads at every ts agree with the documents.
    for (ts, n1) in [(t0 - 600, 0), (t0 - 500, 1), (t0, 1), (mid, 1), (t1, 1)] {
        let at = db.q(json!({"at": ts, "expr": {"count": m("things_by_n", json!(1))}}));
        assert_eq!(at, json!(n1), "members of n = 1 at {ts}");
    }
}
