//! `Select` reads a path written as an array of literals from the literals themselves,
//! without evaluating it into an array value first; the same path given any other way
//! (here through a variable) is evaluated and then parsed. Both must give the same value
//! or the same error, for every kind of step.

mod common;

use common::*;
use serde_json::{json, Value as Json};

#[test]
fn a_literal_path_selects_what_a_built_path_selects() {
    let mut db = Db::new();
    db.q(json!({"create_collection": {"object": {"name": "things"}}}));
    let doc = json!({"create": {"collection": "things"}, "params": {"object": {"data": {"object": {
        "n": 5, "list": ["a", "b", {"object": {"deep": true}}], "nested": {"object": {"x": {"object": {"y": 1.5}}}}
    }}}}});
    let made = db.q(doc);
    let r = made["ref"].clone();
    let from_values: Vec<Json> = vec![
        json!({"get": {"@ref": r["@ref"].clone()}}),
        json!({"object": {"a": {"object": {"b": [10, 20, 30]}}, "data": [1, 2], "after": 3}}),
        json!({"paginate": {"documents": {"collection": "things"}}}),
        json!([[1, 2], [3, 4]]),
        json!({"collection": "things"}),
        json!("just a string"),
    ];
    let paths: Vec<Json> = vec![
        json!([]),
        json!(["data", "n"]),
        json!(["data", "list", 1]),
        json!(["data", "list", 2, "deep"]),
        json!(["data", "nested", "x", "y"]),
        json!(["ref", "collection", "id"]),
        json!(["ref", "id"]),
        json!(["ref", "database"]),
        json!(["a", "b", 2]),
        json!(["a", "b", -1]),
        json!(["data", 0]),
        json!([0, "ref"]),
        json!([1, 0]),
        json!(["id"]),
        json!(["collection", "id"]),
        json!(["missing"]),
        json!(["data", null]),
        json!(["data", 1.5]),
        json!([true]),
    ];
    let outcome = |db: &mut Db, q: Json| match db.run(q) {
        Ok(v) => format!("ok {}", tally_value::to_json(&v)),
        Err(e) => {
            let pos = e.position();
            // The position within the `Select` call: after the `Let` around the built one.
            let at = pos.iter().position(|s| *s == tally_fql::error::Seg::Key("select".into()));
            format!("error {} {:?} {:?}", e.code, e.description, at.map(|i| pos[i..].to_vec()))
        }
    };
    let mut compared = 0;
    for from in &from_values {
        for path in &paths {
            for default in [None, Some(json!("dflt"))] {
                let mut literal = json!({"select": path, "from": from});
                let mut built = json!({"let": [{"p": {"select": [0], "from": [path]}}], "in": {"select": {"var": "p"}, "from": from}});
                if let Some(d) = &default {
                    literal["default"] = d.clone();
                    built["in"]["default"] = d.clone();
                }
                let (a, b) = (outcome(&mut db, literal.clone()), outcome(&mut db, built));
                assert_eq!(a, b, "{literal}");
                compared += 1;
            }
        }
    }
    assert_eq!(compared, from_values.len() * paths.len() * 2);
}
