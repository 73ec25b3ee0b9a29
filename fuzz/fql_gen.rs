//! Generators of FQL v4 queries (JSON AST) for the fuzz targets: a mix of well-typed
//! queries built from templates (schema objects, documents, indexes, reads, functions,
//! lambdas) over a small pool of names, so that later queries meet what earlier ones
//! created, and ill-typed calls of every function in the registry
//! (`tally_fql::fns::all_specs`) with arbitrary arguments.
//!
//! `Sizes` decides how large generated strings get: `Sizes::NORMAL` stays far below every
//! storage limit; `Sizes::HUGE` mixes in strings of 1–70 KB (names, data, index terms),
//! the class of input that must fail as one transaction, never stop the executor.
#![allow(dead_code)]

use proptest::prelude::*;
use serde_json::{json, Map, Value as Json};

#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Longest string in bytes.
    pub string_bytes_max: usize,
}

impl Sizes {
    pub const NORMAL: Sizes = Sizes { string_bytes_max: 0 };
    pub const HUGE: Sizes = Sizes { string_bytes_max: 70_000 };
}

/// Names drawn from a small pool, so queries refer to each other's objects.
pub fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(vec!["c0", "c1", "c2", "i0", "i1", "f0", "r0", "d0", "k"]).prop_map(String::from),
        1 => "[a-z_]{0,6}",
        1 => prop::sample::select(vec!["events", "self", "_", "documents", "set", "collections", "é", " "]).prop_map(String::from),
    ]
}

/// A string: short, or (with `Sizes::HUGE`) sometimes very long.
pub fn string(sizes: Sizes) -> BoxedStrategy<String> {
    let short = prop_oneof![name(), "\\PC{0,12}"];
    if sizes.string_bytes_max == 0 {
        return short.boxed();
    }
    let lens = vec![1_000usize, 10_000, 32_000, 33_000, 40_000, sizes.string_bytes_max];
    prop_oneof![
        3 => short,
        1 => (prop::sample::select(lens), prop::sample::select(vec!['x', 'é', '\u{1F600}']))
            .prop_map(|(n, c)| std::iter::repeat_n(c, n / c.len_utf8()).collect::<String>()),
    ]
    .boxed()
}

fn obj(m: Vec<(String, Json)>) -> Json {
    json!({ "object": Json::Object(m.into_iter().collect::<Map<_, _>>()) })
}

/// A literal: scalars, wire special forms, arrays and object literals.
pub fn literal(sizes: Sizes) -> BoxedStrategy<Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        prop_oneof![any::<i64>(), -5i64..5, Just(i64::MAX), Just(i64::MIN)].prop_map(|n| json!(n)),
        prop_oneof![any::<f64>().prop_filter("finite", |d| d.is_finite()), Just(0.5), Just(-1e300)]
            .prop_map(|d| json!(d)),
        string(sizes).prop_map(Json::String),
        prop_oneof![
            Just(json!({"@ts": "2020-01-01T00:00:00Z"})),
            Just(json!({"@ts": "9999-12-31T23:59:59.999999999Z"})),
            Just(json!({"@date": "1970-01-01"})),
            Just(json!({"@date": "9999-12-31"})),
            Just(json!({"@bytes": "AAEC"})),
            Just(
                json!({"@ref": {"id": "1", "collection": {"@ref": {"id": "c0", "collection": {"@ref": {"id": "collections"}}}}}})
            ),
        ],
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::vec((name(), inner), 0..4).prop_map(obj),
        ]
    })
    .boxed()
}

pub fn coll_ref() -> impl Strategy<Value = Json> {
    name().prop_map(|n| json!({"collection": n}))
}

pub fn index_ref() -> impl Strategy<Value = Json> {
    name().prop_map(|n| json!({"index": n}))
}

pub fn doc_ref() -> impl Strategy<Value = Json> {
    (coll_ref(), prop_oneof![Just("1".to_string()), "[0-9]{1,19}", "\\PC{0,4}"])
        .prop_map(|(c, id)| json!({"ref": c, "id": id}))
}

/// `{data: {...}}` params with fields the indexes below look at.
fn data_params(sizes: Sizes) -> impl Strategy<Value = Json> {
    let field = prop::sample::select(vec!["name", "n", "tags", "x"]);
    prop::collection::vec((field, literal(sizes)), 0..4).prop_map(|fields| {
        let data = obj(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
        obj(vec![("data".into(), data)])
    })
}

fn field_path() -> impl Strategy<Value = Json> {
    prop_oneof![
        4 => prop::sample::select(vec!["name", "n", "tags", "x"]).prop_map(|f| json!(["data", f])),
        1 => Just(json!(["ref"])),
        1 => Just(json!(["ts"])),
    ]
}

/// Queries that mean something: schema, documents, reads, functions, lambdas.
pub fn well_typed(sizes: Sizes) -> BoxedStrategy<Json> {
    let s = move || string(sizes);
    prop_oneof![
        (s(), prop::option::of(0i64..3)).prop_map(|(n, h)| {
            let mut f = vec![("name".to_string(), json!(n))];
            if let Some(h) = h {
                f.push(("history_days".into(), json!(h)));
            }
            json!({"create_collection": obj(f)})
        }),
        (s(), coll_ref(), prop::collection::vec(field_path(), 0..3), prop::collection::vec(field_path(), 0..3), any::<bool>())
            .prop_map(|(n, src, terms, values, unique)| {
                let t = |v: Vec<Json>| Json::Array(v.into_iter().map(|p| obj(vec![("field".into(), p)])).collect());
                json!({"create_index": obj(vec![
                    ("name".into(), json!(n)), ("source".into(), src),
                    ("terms".into(), t(terms)), ("values".into(), t(values)), ("unique".into(), json!(unique)),
                ])})
            }),
        (coll_ref(), data_params(sizes)).prop_map(|(c, p)| json!({"create": c, "params": p})),
        (doc_ref(), data_params(sizes)).prop_map(|(d, p)| json!({"create": d, "params": p})),
        (doc_ref(), data_params(sizes)).prop_map(|(d, p)| json!({"update": d, "params": p})),
        (doc_ref(), data_params(sizes)).prop_map(|(d, p)| json!({"replace": d, "params": p})),
        doc_ref().prop_map(|d| json!({"delete": d})),
        doc_ref().prop_map(|d| json!({"get": d})),
        coll_ref().prop_map(|c| json!({"paginate": {"documents": c}, "size": 5})),
        (index_ref(), literal(sizes)).prop_map(|(i, t)| json!({"paginate": {"match": i, "terms": t}})),
        (index_ref(), literal(sizes)).prop_map(|(i, t)| json!({"map": {"lambda": "r", "expr": {"get": {"var": "r"}}}, "collection": {"paginate": {"match": i, "terms": t}}})),
        (s(), literal(sizes)).prop_map(|(n, body)| json!({"create_function": obj(vec![
            ("name".into(), json!(n)),
            ("body".into(), json!({"query": {"lambda": "x", "expr": {"add": [{"var": "x"}, 1]}}})),
            ("data".into(), obj(vec![("v".into(), body)])),
        ])})),
        (name(), literal(sizes)).prop_map(|(n, a)| json!({"call": {"function": n}, "arguments": [a]})),
        (s(), coll_ref()).prop_map(|(n, c)| json!({"create_role": obj(vec![
            ("name".into(), json!(n)),
            ("privileges".into(), json!([obj(vec![("resource".into(), c), ("actions".into(), obj(vec![("read".into(), json!(true))]))])])),
        ])})),
        s().prop_map(|n| json!({"create_database": obj(vec![("name".into(), json!(n))])})),
        s().prop_map(|r| json!({"create_key": obj(vec![("role".into(), json!(r))])})),
        (coll_ref(), data_params(sizes), 1usize..20).prop_map(|(c, p, n)| json!({"do": (0..n).map(|_| json!({"create": c.clone(), "params": p.clone()})).collect::<Vec<_>>()})),
        (literal(sizes), literal(sizes)).prop_map(|(a, b)| json!({"let": [{"a": a}, {"b": b}], "in": {"equals": [{"var": "a"}, {"var": "b"}]}})),
        prop::collection::vec(literal(sizes), 0..5).prop_map(|a| json!({"map": {"lambda": "x", "expr": {"to_string": {"var": "x"}}}, "collection": a})),
        (name(), literal(sizes)).prop_map(|(n, v)| json!({"select": ["data", n], "from": v, "default": null})),
        s().prop_map(|v| json!({"concat": [v.clone(), v]})),
        (s(), 0i64..100_000).prop_map(|(v, n)| json!({"repeat": v, "number": n})),
    ]
    .boxed()
}

/// Every function of the registry with its required keys and some optional ones.
fn specs() -> Vec<(&'static str, Vec<&'static str>, Vec<&'static str>)> {
    tally_fql::fns::all_specs().map(|s| (s.name, s.required.to_vec(), s.optional.to_vec())).collect()
}

/// Calls of any function with arguments that are literals, refs or other such calls.
pub fn any_call(sizes: Sizes) -> BoxedStrategy<Json> {
    let leaf = prop_oneof![literal(sizes), coll_ref(), index_ref(), doc_ref(), name().prop_map(|n| json!({"var": n}))];
    let specs = specs();
    leaf.prop_recursive(4, 32, 4, move |inner| {
        let specs = specs.clone();
        (prop::sample::select(specs), prop::collection::vec(inner.clone(), 4), any::<u8>(), inner.clone())
            .prop_map(|((fname, required, optional), args, pick, primary)| {
                let mut m = Map::new();
                m.insert(fname.to_string(), primary);
                let mut args = args.into_iter().cycle();
                for k in required {
                    m.insert(k.to_string(), args.next().unwrap_or(Json::Null));
                }
                for (i, k) in optional.iter().enumerate() {
                    if pick & (1 << (i % 8)) != 0 {
                        m.insert(k.to_string(), args.next().unwrap_or(Json::Null));
                    }
                }
                Json::Object(m)
            })
            .boxed()
    })
    .boxed()
}

/// One query: well-typed or not, wrapped now and then in `Do`, `If` or `Let`.
pub fn query(sizes: Sizes) -> BoxedStrategy<Json> {
    let base = prop_oneof![3 => well_typed(sizes), 2 => any_call(sizes)];
    base.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(|v| json!({"do": v})),
            (inner.clone(), inner.clone())
                .prop_map(|(a, b)| json!({"if": {"exists": {"collection": "c0"}}, "then": a, "else": b})),
            inner.prop_map(|a| json!({"let": [{"x": 1}], "in": a})),
        ]
    })
    .boxed()
}

/// Any JSON at all (for the parser): no knowledge of FQL beyond key names.
pub fn any_json() -> BoxedStrategy<Json> {
    let keys: Vec<String> = specs()
        .into_iter()
        .flat_map(|(n, r, o)| std::iter::once(n).chain(r).chain(o))
        .map(String::from)
        .chain(["object", "@ref", "@ts", "@obj", "@set", "@query", "lambda", "expr", "var", "x"].map(String::from))
        .collect();
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |d| d.is_finite()).prop_map(|d| json!(d)),
        "\\PC{0,8}".prop_map(Json::String),
    ];
    leaf.prop_recursive(6, 64, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Json::Array),
            prop::collection::vec((prop::sample::select(keys.clone()), inner), 0..4)
                .prop_map(|kv| Json::Object(kv.into_iter().collect())),
        ]
    })
    .boxed()
}
