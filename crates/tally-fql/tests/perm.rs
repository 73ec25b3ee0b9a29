//! Permission decisions at the evaluator level: every query is evaluated both read-only
//! (as the receiving node does first) and in write mode (as the executor does), and the
//! two must agree — role predicates run in both and must decide alike.

mod common;

use common::{coll_ref, Db};
use serde_json::json;
use tally_fql::auth::{Auth, Role};
use tally_fql::model::ROOT_DB;
use tally_value::Ref;

fn setup() -> Db {
    let mut db = Db::new();
    db.collection("notes");
    db.collection("users");
    db.q(json!({"create": coll_ref("users", "1"), "params": {"object": {"data": {"object": {"vip": true}}}}}));
    db.q(json!({"create": coll_ref("users", "2"), "params": {"object": {"data": {"object": {"vip": false}}}}}));
    for (id, owner, open) in [("10", "1", true), ("11", "2", false)] {
        db.q(json!({"create": coll_ref("notes", id), "params": {"object": {"data": {"object": {
            "owner": coll_ref("users", owner), "open": open}}}}}));
    }
    // read: open notes; write: only keeping `open`; create: nothing.
    db.q(json!({"create_role": {"object": {
        "name": "reader",
        "privileges": [{"object": {"resource": {"collection": "notes"}, "actions": {"object": {
            "read": {"query": {"lambda": "r", "expr": {"select": ["data", "open"], "from": {"get": {"var": "r"}}}}},
            "write": {"query": {"lambda": ["old", "new"], "expr": {"equals": [
                {"select": ["data", "open"], "from": {"var": "old"}},
                {"select": ["data", "open"], "from": {"var": "new"}}]}}}
        }}}}],
        "membership": [{"object": {"resource": {"collection": "users"},
            "predicate": {"query": {"lambda": "u", "expr": {"select": ["data", "vip"], "from": {"get": {"var": "u"}}}}}}}]
    }}}));
    db
}

#[test]
fn custom_role_predicates_agree_in_both_passes() {
    let mut db = setup();
    let auth = Auth::new(ROOT_DB, Role::custom(vec!["reader".into()]));
    assert!(db.both(&auth, json!({"get": coll_ref("notes", "10")})).is_ok());
    assert_eq!(db.both(&auth, json!({"get": coll_ref("notes", "11")})), Err("permission denied".into()));
    assert_eq!(db.both(&auth, json!({"exists": coll_ref("notes", "11")})), Ok(json!(false)));
    let page = db.both(&auth, json!({"paginate": {"documents": {"collection": "notes"}}})).unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 1, "{page}");
    let keep_open = json!({"update": coll_ref("notes", "10"), "params": {"object": {"data": {"object": {"x": 1}}}}});
    assert!(db.both(&auth, keep_open).is_ok());
    let close = json!({"update": coll_ref("notes", "10"), "params": {"object": {"data": {"object": {"open": false}}}}});
    assert_eq!(db.both(&auth, close), Err("permission denied".into()));
    let create = json!({"create": {"collection": "notes"}, "params": {"object": {}}});
    assert_eq!(db.both(&auth, create), Err("permission denied".into()));
    assert_eq!(db.both(&auth, json!({"paginate": {"collections": null}})), Err("permission denied".into()));
}

#[test]
fn predicates_cannot_write() {
    let mut db = setup();
    db.q(json!({"create_role": {"object": {
        "name": "sneaky",
        "privileges": [{"object": {"resource": {"collection": "notes"}, "actions": {"object": {
            "read": {"query": {"lambda": "r", "expr": {"do": [
                {"create": {"collection": "notes"}, "params": {"object": {}}}, true]}}}
        }}}}]
    }}}));
    let auth = Auth::new(ROOT_DB, Role::custom(vec!["sneaky".into()]));
    assert_eq!(db.both(&auth, json!({"get": coll_ref("notes", "10")})), Err("permission denied".into()));
    let count = db.q(json!({"count": {"documents": {"collection": "notes"}}}));
    assert_eq!(count, json!(2), "the predicate wrote nothing");
}

#[test]
fn membership_predicates_pick_the_roles() {
    let mut db = setup();
    let member = |id: &str| {
        let mut a = Auth::new(ROOT_DB, Role::Member);
        a.identity = Some(Ref::doc(Ref::collection("users"), id));
        a
    };
    assert!(db.both(&member("1"), json!({"get": coll_ref("notes", "10")})).is_ok());
    assert_eq!(db.both(&member("2"), json!({"get": coll_ref("notes", "10")})), Err("permission denied".into()));
    // Members read their own identity document (by its ref or through `self`), and no
    // other user's.
    assert!(db.both(&member("2"), json!({"get": coll_ref("users", "2")})).is_ok());
    assert!(db.both(&member("2"), json!({"get": coll_ref("users", "self")})).is_ok());
    assert_eq!(db.both(&member("2"), json!({"get": coll_ref("users", "1")})), Err("permission denied".into()));
}

#[test]
fn builtin_roles_by_scope() {
    let mut db = setup();
    let server = Auth::new(ROOT_DB, Role::Server);
    let ro = Auth::new(ROOT_DB, Role::ServerReadOnly);
    let client = Auth::new(ROOT_DB, Role::Client);
    let write = json!({"update": coll_ref("notes", "10"), "params": {"object": {}}});
    assert!(db.both(&server, write.clone()).is_ok());
    assert_eq!(db.both(&ro, write.clone()), Err("permission denied".into()));
    assert_eq!(db.both(&client, write), Err("permission denied".into()));
    let keys = json!({"paginate": {"keys": null}});
    assert_eq!(db.both(&server, keys.clone()), Err("permission denied".into()));
    assert!(db.both(&Auth::root_admin(), keys).is_ok());
    let key = json!({"create_key": {"object": {"role": "admin"}}});
    assert_eq!(db.both(&server, key), Err("permission denied".into()));
    let func = json!({"create_function": {"object": {"name": "f", "role": "admin",
        "body": {"query": {"lambda": "x", "expr": 1}}}}});
    assert_eq!(db.both(&server, func), Err("permission denied".into()));
}
