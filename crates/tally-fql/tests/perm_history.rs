//! The permission matrix for history edits of schema documents and for `At` + `Call`,
//! at the evaluator level: every role, both passes (read-only and write) agreeing.

mod common;

use common::{coll_ref, Db};
use serde_json::{json, Value as Json};
use tally_fql::auth::{Auth, Role};
use tally_fql::model::ROOT_DB;

fn roles() -> Vec<(&'static str, Auth)> {
    vec![
        ("admin", Auth::new(ROOT_DB, Role::Admin)),
        ("server", Auth::new(ROOT_DB, Role::Server)),
        ("server-readonly", Auth::new(ROOT_DB, Role::ServerReadOnly)),
        ("client", Auth::new(ROOT_DB, Role::Client)),
        ("custom", Auth::new(ROOT_DB, Role::custom(vec!["all".into()]))),
    ]
}

fn lambda(param: &str, body: Json) -> Json {
    json!({"query": {"lambda": param, "expr": body}})
}

/// A collection, an index, a function, a role that may do everything to all of them, a
/// key, a user with a token.
fn setup() -> Db {
    let mut db = Db::new();
    db.collection("c");
    db.index("i", "c", &[], &[]);
    db.q(json!({"create_function": {"object": {"name": "f", "role": "admin", "body": lambda("x", json!(1))}}}));
    let all = json!({"object": {"read": true, "write": true, "create": true, "delete": true,
        "history_read": true, "history_write": true, "call": true}});
    let privileges: Vec<Json> = [
        json!({"collection": "c"}),
        json!({"index": "i"}),
        json!({"function": "f"}),
        json!({"keys": null}),
        json!({"tokens": null}),
        json!({"collections": null}),
        json!({"functions": null}),
    ]
    .into_iter()
    .map(|r| json!({"object": {"resource": r, "actions": all.clone()}}))
    .collect();
    db.q(json!({"create_role": {"object": {"name": "all", "privileges": privileges}}}));
    db.q(json!({"create": coll_ref("c", "1"), "params": {"object": {}}}));
    db
}

#[test]
fn history_edits_of_schema_documents_are_refused_for_every_role() {
    let mut db = setup();
    let key = db.q(json!({"create_key": {"object": {"role": "client"}}}))["ref"].clone();
    let token = db.q(json!({"create": {"tokens": null}, "params": {"object": {"instance": coll_ref("c", "1")}}}))
        ["ref"]
        .clone();
    let targets = [
        ("collection", json!({"collection": "c"})),
        ("index", json!({"index": "i"})),
        ("function", json!({"function": "f"})),
        ("role", json!({"role": "all"})),
        ("key", key),
        ("token", token),
    ];
    for (who, auth) in roles() {
        for (kind, r) in &targets {
            let ins = json!({"insert": r, "ts": 1, "action": "update", "params": {"object": {"data": {"object": {}}}}});
            let rem = json!({"remove": r, "ts": 1, "action": "create"});
            for q in [ins, rem] {
                assert_eq!(db.both(&auth, q), Err("invalid argument".into()), "{who} on {kind}");
            }
        }
        // User documents keep v4's history edits, under `history_write`.
        let user = json!({"insert": coll_ref("c", "1"), "ts": 1, "action": "create", "params": {"object": {}}});
        let want_ok = matches!(who, "admin" | "server" | "custom");
        assert_eq!(db.both(&auth, user).is_ok(), want_ok, "{who} on a user document");
    }
}

#[test]
fn at_call_runs_the_current_function_for_every_role() {
    let mut db = setup();
    let secret = json!({"select": ["data", "secret"], "from": {"get": coll_ref("c", "2")}});
    db.q(json!({"create": coll_ref("c", "2"), "params": {"object": {"data": {"object": {"secret": "s3"}}}}}));
    let made = db.q(json!({"create_function": {"object": {"name": "leaky", "role": "admin",
        "body": lambda("x", secret), "permissions": {"object": {"call": "public"}}}}}));
    let old_ts = made["ts"].clone();
    db.q(json!({"update": {"function": "leaky"}, "params": {"object": {"role": "client", "body": lambda("x", json!("safe"))}}}));
    let gone = db.q(json!({"create_function": {"object": {"name": "gone", "role": "admin",
        "body": lambda("x", json!("ran")), "permissions": {"object": {"call": "public"}}}}}));
    db.q(json!({"delete": {"function": "gone"}}));
    for (who, auth) in roles() {
        let got = db.both(&auth, json!({"at": old_ts, "expr": {"call": {"function": "leaky"}, "arguments": 0}}));
        assert_ne!(got, Ok(json!("s3")), "{who} read through the old body");
        let want = match who {
            // server-readonly may not call functions; the custom role has no privilege
            // on `leaky` (legacy `public` permissions are the client role's).
            "server-readonly" | "custom" => Err("permission denied".to_string()),
            _ => Ok(json!("safe")),
        };
        assert_eq!(got, want, "{who}");
        let dead = db.both(&auth, json!({"at": gone["ts"], "expr": {"call": {"function": "gone"}, "arguments": 0}}));
        assert_eq!(dead, Err("invalid ref".into()), "{who} called a deleted function");
    }
}
