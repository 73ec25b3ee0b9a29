//! The FQL v4 queries of the workloads, built as the JSON AST the official drivers send.
//!
//! The shapes were taken from what the `faunadb` JS driver serialises for the same
//! `q.*` calls; refs are wire refs (`{"@ref": ...}`) because an application holds the
//! refs it got back from earlier queries.

use serde_json::{json, Value};

pub const ACCOUNTS: &str = "accounts";
pub const TRANSFERS: &str = "transfers";
/// Index over `data.bucket`, read by the `read` workload's page reads.
pub const ACCOUNTS_BY_BUCKET: &str = "accounts_by_bucket";
pub const BUCKETS: u64 = 100;
pub const TRANSFER_FN: &str = "transfer";

/// A document ref as the drivers encode it on the wire.
pub fn doc_ref(collection: &str, id: u64) -> Value {
    json!({"@ref": {"id": id.to_string(), "collection": collection_ref(collection)}})
}

fn collection_ref(name: &str) -> Value {
    json!({"@ref": {"id": name, "collection": {"@ref": {"id": "collections"}}}})
}

fn obj(v: Value) -> Value {
    json!({ "object": v })
}

fn var(name: &str) -> Value {
    json!({ "var": name })
}

fn select(path: Value, from: Value) -> Value {
    json!({"select": path, "from": from})
}

fn balance_of(v: &str) -> Value {
    select(json!(["data", "balance"]), var(v))
}

/// `Create(Ref(Collection(c), id), {data})`.
pub fn create_with_id(collection: &str, id: u64, data: Value) -> Value {
    json!({"create": doc_ref(collection, id), "params": obj(json!({"data": obj(data)}))})
}

/// `Do(Create(...), ...)` for accounts `ids`, each with `balance` and its bucket.
pub fn create_accounts(ids: std::ops::Range<u64>, balance: i64) -> Value {
    let creates: Vec<Value> = ids
        .map(|id| create_with_id(ACCOUNTS, id, json!({"balance": balance, "bucket": (id % BUCKETS) as i64})))
        .collect();
    json!({ "do": creates })
}

pub fn create_database(name: &str) -> Value {
    json!({"create_database": obj(json!({"name": name}))})
}

pub fn create_server_key(db: &str) -> Value {
    json!({"create_key": obj(json!({"database": {"database": db}, "role": "server"}))})
}

pub fn create_collection(name: &str) -> Value {
    json!({"create_collection": obj(json!({"name": name}))})
}

pub fn create_index(name: &str, source: &str, term_field: Option<&[&str]>) -> Value {
    let mut params = json!({"name": name, "source": {"collection": source}});
    if let Some(f) = term_field {
        params["terms"] = json!([obj(json!({ "field": f }))]);
    }
    json!({"create_index": obj(params)})
}

/// The body of one transfer over variables `from`, `to` (refs) and `amount`, written the
/// way an application does: read both accounts, check funds, debit, credit, record.
/// `on_insufficient` is what the expression yields when funds are short: `Abort(...)`
/// for a single transfer, a plain string inside a batch (so one short account does not
/// abort the other transfers of the request, as in TigerBeetle's per-event results).
fn transfer_body(from: Value, to: Value, amount: Value, on_insufficient: Value) -> Value {
    json!({
        "let": [{"a": {"get": from.clone()}}, {"b": {"get": to.clone()}}],
        "in": {
            "if": {"lt": [balance_of("a"), amount.clone()]},
            "then": on_insufficient,
            "else": {"do": [
                {"update": from.clone(), "params": obj(json!({"data": obj(json!({
                    "balance": {"subtract": [balance_of("a"), amount.clone()]}}))}))},
                {"update": to.clone(), "params": obj(json!({"data": obj(json!({
                    "balance": {"add": [balance_of("b"), amount.clone()]}}))}))},
                {"create": {"collection": TRANSFERS}, "params": obj(json!({"data": obj(json!({
                    "from": from, "to": to, "amount": amount}))}))},
                "ok"
            ]}
        }
    })
}

pub const INSUFFICIENT: &str = "insufficient funds";

/// One transfer in one request; short funds abort the transaction. The arguments are
/// FQL expressions (refs and a number), or template holes.
pub fn transfer(from: Value, to: Value, amount: Value) -> Value {
    transfer_body(from, to, amount, json!({ "abort": INSUFFICIENT }))
}

/// Many transfers in one request: `Map([[from, to, amount], ...], Lambda([f, t, n], ...))`.
/// Each yields "ok" or "insufficient funds".
pub fn transfer_batch(items: &[(u64, u64, i64)]) -> Value {
    let rows: Vec<Value> =
        items.iter().map(|&(f, t, n)| json!([doc_ref(ACCOUNTS, f), doc_ref(ACCOUNTS, t), n])).collect();
    transfer_map(Value::Array(rows))
}

/// [`transfer_batch`] over `rows`, an array of `[from, to, amount]` (or a template hole).
pub fn transfer_map(rows: Value) -> Value {
    json!({
        "map": {"lambda": ["f", "t", "n"], "expr": transfer_body(var("f"), var("t"), var("n"), json!(INSUFFICIENT))},
        "collection": rows
    })
}

/// `CreateFunction({name: "transfer", body: Query(Lambda([f, t, n], <transfer>))})`.
pub fn create_transfer_fn() -> Value {
    let body = transfer_body(var("f"), var("t"), var("n"), json!({ "abort": INSUFFICIENT }));
    json!({"create_function": obj(json!({
        "name": TRANSFER_FN,
        "body": {"query": {"lambda": ["f", "t", "n"], "expr": body}}
    }))})
}

/// `Call(Function("transfer"), [from, to, amount])`.
pub fn call_transfer(from: Value, to: Value, amount: Value) -> Value {
    json!({"call": {"function": TRANSFER_FN}, "arguments": [from, to, amount]})
}

/// `Do(Call(Function("transfer"), ...), ...)`: one UDF call per transfer. Short funds
/// abort the whole request, as they would in an application.
pub fn call_transfer_batch(items: &[(u64, u64, i64)]) -> Value {
    let call = |&(f, t, n): &(u64, u64, i64)| call_transfer(doc_ref(ACCOUNTS, f), doc_ref(ACCOUNTS, t), json!(n));
    json!({ "do": items.iter().map(call).collect::<Vec<_>>() })
}

/// `Get(ref)`.
pub fn get(r: Value) -> Value {
    json!({ "get": r })
}

/// `Map(Paginate(Match(Index(i), term), {size}), Lambda(r, Get(Var(r))))`.
pub fn index_page(index: &str, term: Value, size: u64) -> Value {
    json!({
        "map": {"lambda": "r", "expr": {"get": var("r")}},
        "collection": {"paginate": {"match": {"index": index}, "terms": term}, "size": size}
    })
}

// ----- The Animal Exchange (tests/js/animal_exchange.test.js), verbatim. -----

pub const PLAYERS: &str = "players";
pub const ITEMS: &str = "items";
pub const PURCHASES: &str = "purchases";

/// The purchase transaction of the Animal Exchange model, exactly as the app sends it.
/// `player` and `item` are refs (or template holes).
pub fn purchase(player: Value, item: Value) -> Value {
    let upd = |r: Value, data: Value| json!({"update": r, "params": obj(json!({"data": obj(data)}))});
    let sel_ref = |v: &str| select(json!("ref"), var(v));
    json!({
        "let": [{"buyer": {"get": player}}, {"item": {"get": item}}],
        "in": {
            "let": [
                {"buyerBalance": select(json!(["data", "credits"]), var("buyer"))},
                {"itemPrice": select(json!(["data", "price"]), var("item"))},
                {"isForSale": select(json!(["data", "for_sale"]), var("item"))},
                {"seller": {"get": select(json!(["data", "owner"]), var("item"))}}
            ],
            "in": {
                "if": {"not": var("isForSale")},
                "then": "Purchase failed: item not for sale",
                "else": {
                    "if": {"equals": [sel_ref("buyer"), sel_ref("seller")]},
                    "then": {"do": [upd(sel_ref("item"), json!({"for_sale": false})), "Item removed from sale"]},
                    "else": {
                        "if": {"lt": [var("buyerBalance"), var("itemPrice")]},
                        "then": "Purchase failed: insufficient funds",
                        "else": {"do": [
                            {"create": {"class": PURCHASES}, "params": obj(json!({"data": obj(json!({
                                "item": sel_ref("item"), "price": var("itemPrice"),
                                "buyer": sel_ref("buyer"), "seller": sel_ref("seller")}))}))},
                            upd(sel_ref("buyer"), json!({"credits": {"subtract": [var("buyerBalance"), var("itemPrice")]}})),
                            upd(sel_ref("seller"), json!({"credits": {"add": [
                                select(json!(["data", "credits"]), var("seller")), var("itemPrice")]}})),
                            upd(sel_ref("item"), json!({"owner": sel_ref("buyer"), "for_sale": false})),
                            "Purchase success!"
                        ]}
                    }
                }
            }
        }
    })
}

/// The app's "make for sale" query: `Update(item, {data: {price, for_sale}})`.
pub fn make_for_sale(item: Value, price: i64) -> Value {
    json!({"update": item, "params": obj(json!({"data": obj(json!({"price": price, "for_sale": true}))}))})
}

/// Animal Exchange schema, as the session service creates it.
pub fn exchange_schema() -> [Value; 2] {
    let class = |n: &str| json!({"create_class": obj(json!({ "name": n }))});
    let idx = |name: &str, source: &str, terms: Option<&str>| {
        let mut p = json!({"name": name, "source": {"class": source}});
        if let Some(t) = terms {
            p["terms"] = json!([obj(json!({"field": ["data", t]}))]);
        }
        json!({"create_index": obj(p)})
    };
    [
        json!({"do": [class(PLAYERS), class(PURCHASES), class(ITEMS)]}),
        json!({"do": [
            idx("players", PLAYERS, None),
            idx("items_for_sale", ITEMS, Some("for_sale")),
            idx("purchases", PURCHASES, None),
            idx("items_by_owner", ITEMS, Some("owner")),
        ]}),
    ]
}

/// Players `ids` with `credits` each.
pub fn create_players(ids: std::ops::Range<u64>, credits: i64) -> Value {
    json!({"do": ids.map(|id| create_with_id(PLAYERS, id, json!({"name": format!("player{id}"), "credits": credits})))
        .collect::<Vec<_>>()})
}

/// Items `ids`, for sale, owned by player `owner(id)`.
pub fn create_items(ids: std::ops::Range<u64>, owner: impl Fn(u64) -> u64, price: i64) -> Value {
    json!({"do": ids.map(|id| create_with_id(ITEMS, id, json!({
        "label": format!("animal{id}"), "price": price, "for_sale": true, "owner": doc_ref(PLAYERS, owner(id))})))
        .collect::<Vec<_>>()})
}
