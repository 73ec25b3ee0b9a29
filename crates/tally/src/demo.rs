//! `tally demo animal-exchange`: provisions the Animal Exchange (the sample app of
//! Fauna's FQL v4 days, also `tally bench purchase`'s workload) in a fresh database of a
//! running server, and prints the address of its market page, which `tally serve`
//! serves at `/console/exchange` (docs/console.md).
//!
//! The page holds one key, whose role may only call `purchase` and `list_market` and
//! stream the index `purchases_newest_first` (whose entries are a purchase's ts and ref,
//! nothing of its content: the stream only says *that* a purchase happened, and the page
//! then calls `list_market`); both functions run with their own role (`market`), so the
//! browser can neither read nor write a document directly. The purchase is `tally_bench::fql::purchase`, the app's
//! transaction verbatim.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use tally_bench::client::Conn;

#[derive(Args)]
pub struct DemoArgs {
    #[command(subcommand)]
    demo: Demo,
}

#[derive(Subcommand)]
enum Demo {
    /// Provision the Animal Exchange and print the address of its market page.
    AnimalExchange(ExchangeArgs),
}

#[derive(Args)]
struct ExchangeArgs {
    /// The Tally server to provision (it also serves the market page): http://HOST:PORT
    /// or https://HOST:PORT.
    #[arg(long, default_value = "http://127.0.0.1:8443", env = "TALLY_ENDPOINT")]
    endpoint: String,
    /// The CA certificate (PEM) to trust for an https:// endpoint (e.g. the ca.pem of
    /// `tally init-certs`); without it, the public web PKI roots.
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// Name of the new database (`_2`, `_3`, … is appended while the name is taken).
    #[arg(long, default_value = "animal_exchange")]
    database: String,
}

/// Tries at most this many names for a fresh database.
const DATABASE_NAMES_MAX: u32 = 100;

pub fn main(args: DemoArgs) -> anyhow::Result<()> {
    let Demo::AnimalExchange(args) = args.demo;
    // The admin secret comes from the environment, never from the command line (shell
    // history, the process list).
    let secret = std::env::var("TALLY_SECRET")
        .or_else(|_| std::env::var("TALLY_ROOT_KEY"))
        .context("set TALLY_SECRET (or TALLY_ROOT_KEY) to the root key or an admin key of the parent database")?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(provision(&args, &secret))
}

async fn provision(args: &ExchangeArgs, secret: &str) -> anyhow::Result<()> {
    let ep = tally_bench::client::Endpoint::remote(&args.endpoint, args.ca.as_deref())?;
    let mut parent = Conn::connect(ep, secret).await?;
    let db = create_fresh_database(&mut parent, &args.database).await?;
    // A scoped secret acts as admin inside the new database; nothing else is created
    // with more authority than the page's key.
    let mut admin = Conn::connect(ep, &format!("{secret}:{db}:admin")).await?;
    for (what, q) in schema() {
        run(&mut admin, &q).await.with_context(|| format!("creating {what}"))?;
    }
    let key = run(&mut admin, &page_key()).await.context("creating the market page's key")?;
    let Some(key) = key["secret"].as_str() else { bail!("the server answered a key without a secret") };
    let base = args.endpoint.trim_end_matches('/');
    println!("The Animal Exchange is ready in database {db:?}.");
    println!("Open the market: {base}/console/exchange#key={}", percent_encode(key));
    println!(
        "(The page keeps only that key, which may call purchase and list_market and stream the purchase index, in the tab's session storage.)"
    );
    Ok(())
}

async fn run(conn: &mut Conn, q: &Value) -> anyhow::Result<Value> {
    conn.query_json(q).await?.resource()
}

/// `name`, or `name_2`, `name_3`, … whichever is free first.
async fn create_fresh_database(conn: &mut Conn, name: &str) -> anyhow::Result<String> {
    for n in 1..=DATABASE_NAMES_MAX {
        let candidate = if n == 1 { name.to_string() } else { format!("{name}_{n}") };
        let reply = conn.query_json(&json!({"create_database": {"object": {"name": candidate}}})).await?;
        match reply.error_code().as_deref() {
            None if reply.status == 200 => return Ok(candidate),
            Some("instance already exists") => continue,
            _ => bail!("creating database {candidate:?} failed (HTTP {}): {}", reply.status, reply.json()?["errors"]),
        }
    }
    bail!("databases {name} to {name}_{DATABASE_NAMES_MAX} all exist; pass --database NAME")
}

fn var(name: &str) -> Value {
    json!({ "var": name })
}

fn sel(path: Value, from: Value) -> Value {
    json!({"select": path, "from": from})
}

fn name_of(r: Value) -> Value {
    sel(json!(["data", "name"]), json!({ "get": r }))
}

/// `Select("data", Map(Paginate(set, {size}), Lambda(params, row)))`
fn rows(set: Value, size: u64, params: Value, row: Value) -> Value {
    sel(json!("data"), json!({"map": {"lambda": params, "expr": row}, "collection": {"paginate": set, "size": size}}))
}

/// `Let({d: Get(Var(r))}, {field: Select(["data", field], Var("d")), …})`
fn doc_row(fields: &[&str], extra: Value) -> Value {
    let mut o = serde_json::Map::new();
    o.insert("ref".into(), sel(json!("ref"), var("d")));
    for f in fields {
        o.insert((*f).into(), sel(json!(["data", f]), var("d")));
    }
    if let Value::Object(x) = extra {
        o.extend(x);
    }
    json!({"let": [{"d": {"get": var("r")}}], "in": {"object": o}})
}

/// Everything the page shows, in one call: players, items (with their owners' names)
/// and the newest purchases.
fn list_market() -> Value {
    let docs = |c: &str| json!({"documents": {"collection": c}});
    let players = rows(docs("players"), 100, json!("r"), doc_row(&["name", "credits"], json!({})));
    let owner = json!({"owner_name": name_of(sel(json!(["data", "owner"]), var("d")))});
    let items = rows(docs("items"), 100, json!("r"), doc_row(&["label", "price", "for_sale", "owner"], owner));
    let of = |f: &str| sel(json!(["data", f]), var("p"));
    let purchase = json!({"let": [{"p": {"get": var("r")}}], "in": {"object": {
        "ts": var("ts"),
        "price": of("price"),
        "item_label": sel(json!(["data", "label"]), json!({"get": of("item")})),
        "buyer_name": name_of(of("buyer")),
        "seller_name": name_of(of("seller")),
    }}});
    let purchases = rows(json!({"match": {"index": "purchases_newest_first"}}), 20, json!(["ts", "r"]), purchase);
    json!({"object": {"players": players, "items": items, "purchases": purchases}})
}

fn function(name: &str, params: Value, body: Value) -> Value {
    json!({"create_function": {"object": {
        "name": name, "role": {"role": "market"}, "body": {"query": {"lambda": params, "expr": body}}
    }}})
}

fn privilege(resource: Value, actions: Value) -> Value {
    json!({"object": {"resource": resource, "actions": {"object": actions}}})
}

/// The schema, the functions, the roles and the sample data, in order.
fn schema() -> Vec<(&'static str, Value)> {
    let coll = |n: &str| json!({"create_collection": {"object": {"name": n}}});
    let newest_first = json!({"create_index": {"object": {
        "name": "purchases_newest_first",
        "source": {"collection": "purchases"},
        "values": [{"object": {"field": ["ts"], "reverse": true}}, {"object": {"field": ["ref"]}}],
    }}});
    let market = json!({"create_role": {"object": {"name": "market", "privileges": [
        privilege(json!({"collection": "players"}), json!({"read": true, "write": true})),
        privilege(json!({"collection": "items"}), json!({"read": true, "write": true})),
        privilege(json!({"collection": "purchases"}), json!({"read": true, "create": true})),
        privilege(json!({"index": "purchases_newest_first"}), json!({"read": true})),
    ]}}});
    let purchase = tally_bench::fql::purchase(var("buyer"), var("item"));
    // `unrestricted_read` on the index, and no `read` on `purchases`: the index's entries
    // ([ts, ref]) are readable and streamable, the purchases behind the refs are not.
    let page = json!({"create_role": {"object": {"name": "market_page", "privileges": [
        privilege(json!({"function": "purchase"}), json!({"call": true})),
        privilege(json!({"function": "list_market"}), json!({"call": true})),
        privilege(json!({"index": "purchases_newest_first"}), json!({"unrestricted_read": true})),
    ]}}});
    vec![
        ("the collections", json!({"do": [coll("players"), coll("items"), coll("purchases")]})),
        ("the purchase log's index", newest_first),
        ("the functions' role", market),
        ("the purchase function", function("purchase", json!(["item", "buyer"]), purchase)),
        ("the list_market function", function("list_market", json!([]), list_market())),
        ("the market page's role", page),
        ("the players and items", sample_data()),
    ]
}

const PLAYERS: &[(&str, i64)] = &[("Alice", 1000), ("Bob", 1000), ("Carol", 50)];
/// (label, price, owner's index in PLAYERS, for sale)
const ITEMS: &[(&str, i64, usize, bool)] = &[
    ("Dog", 200, 0, true),
    ("Cat", 75, 0, false),
    ("Cow", 500, 1, true),
    ("Pig", 60, 1, true),
    ("Chicken", 20, 2, true),
    ("Sheep", 90, 2, true),
];

fn sample_data() -> Value {
    let with_id = |c: &str, id: usize, data: Value| json!({"create": {"ref": {"collection": c}, "id": (id + 1).to_string()}, "params": {"object": {"data": {"object": data}}}});
    let owner = |i: usize| json!({"ref": {"collection": "players"}, "id": (i + 1).to_string()});
    let players = PLAYERS
        .iter()
        .enumerate()
        .map(|(i, (name, credits))| with_id("players", i, json!({"name": name, "credits": credits})));
    let items = ITEMS.iter().enumerate().map(|(i, (label, price, o, for_sale))| {
        with_id("items", i, json!({"label": label, "price": price, "owner": owner(*o), "for_sale": for_sale}))
    });
    json!({"do": players.chain(items).collect::<Vec<_>>()})
}

fn page_key() -> Value {
    json!({"create_key": {"object": {"role": {"role": "market_page"}, "data": {"object": {"name": "market page"}}}}})
}

/// A secret inside a URL fragment: everything but unreserved characters percent-encoded.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
