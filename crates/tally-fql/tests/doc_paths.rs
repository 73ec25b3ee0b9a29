//! The executor's shortcuts around rendering a stored document give what rendering gives:
//! `render_owned` (a document the caller owns, moved instead of copied) is `render`, and
//! `select_doc_path` (an index field read from the stored fields in place) is
//! `select_path` over the rendered document. Index entries and answers are hashed into
//! blocks, so any difference would change a block.

use tally_fql::fns::docs::{render, render_owned, select_doc_path, select_path};
use tally_fql::model::HIDDEN_FIELDS;
use tally_value::{Object, Ref, Value};

fn s(x: &str) -> Value {
    Value::String(x.into())
}

fn stored_documents() -> Vec<Object> {
    let obj = |v: Value| match v {
        Value::Object(o) => o,
        _ => unreachable!(),
    };
    let other = Ref::doc(Ref::collection("other"), "7").with_database(Some(Ref::native("databases")));
    let mut docs = vec![
        Object::new(),
        obj(Value::object([
            ("data", Value::object([("balance", Value::Long(5)), ("bucket", Value::Long(2))])),
            ("__tally_id", Value::Long(99)),
        ])),
        obj(Value::object([
            (
                "data",
                Value::object([
                    ("tags", Value::Array(vec![s("a"), s("b"), Value::Null])),
                    ("owner", Value::Ref(other)),
                    ("nested", Value::object([("deep", Value::object([("x", Value::Double(1.5))]))])),
                ]),
            ),
            ("credentials", Value::object([("hashed_password", s("h"))])),
            ("ttl", Value::Long(1)),
        ])),
        // Stored fields named like the rendered ones win over them in `render`.
        obj(Value::object([("ref", s("stored ref")), ("ts", Value::Long(-1)), ("data", Value::Null)])),
    ];
    let mut hidden = Object::new();
    for h in HIDDEN_FIELDS {
        hidden.insert((*h).into(), s(h));
    }
    docs.push(hidden);
    docs
}

fn paths() -> Vec<Vec<Value>> {
    let p = |segs: &[Value]| segs.to_vec();
    let mut out = vec![
        p(&[]),
        p(&[s("ref")]),
        p(&[s("ref"), s("id")]),
        p(&[s("ref"), s("collection")]),
        p(&[s("ref"), s("class"), s("id")]),
        p(&[s("ref"), s("database")]),
        p(&[s("ref"), s("nope")]),
        p(&[s("ts")]),
        p(&[s("ts"), s("x")]),
        p(&[s("data")]),
        p(&[s("data"), s("balance")]),
        p(&[s("data"), s("tags"), Value::Long(1)]),
        p(&[s("data"), s("tags"), Value::Long(7)]),
        p(&[s("data"), s("tags"), Value::Long(-1)]),
        p(&[s("data"), s("owner"), s("collection"), s("id")]),
        p(&[s("data"), s("owner"), s("database"), s("id")]),
        p(&[s("data"), s("nested"), s("deep"), s("x")]),
        p(&[s("data"), s("nested"), Value::Long(0)]),
        p(&[Value::Long(0)]),
        p(&[Value::Null]),
        p(&[s("ttl")]),
        p(&[s("missing"), s("x")]),
    ];
    for h in HIDDEN_FIELDS {
        out.push(p(&[s(h)]));
    }
    out
}

#[test]
fn render_owned_is_render() {
    let r = Ref::doc(Ref::collection("accounts"), "12");
    for data in stored_documents() {
        assert_eq!(render_owned(&r, 42, data.clone()), render(&r, 42, &data), "{data:?}");
    }
}

#[test]
fn select_doc_path_is_select_path_of_the_rendered_document() {
    let refs = [Ref::doc(Ref::collection("accounts"), "12"), Ref::doc(Ref::native("keys"), "3")];
    for r in &refs {
        for data in stored_documents() {
            let doc = render(r, 42, &data);
            for path in paths() {
                assert_eq!(select_doc_path(r, 42, &data, &path), select_path(&doc, &path), "{data:?} {path:?}");
            }
        }
    }
}
