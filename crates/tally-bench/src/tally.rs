//! The Tally side: set up an application database, load it, and drive a workload with
//! concurrent clients over HTTP exactly as an FQL v4 driver would.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::client::{Conn, Endpoint, Reply};
use crate::fql;
use crate::stats::{Outcome, Recorder};
use crate::{Variant, Workload};

/// How the documents are loaded: `per_request` `Create`s in one `Do` per request, and
/// `in_flight` requests outstanding at once (so the server always has the next request
/// queued while it applies one, and several share one epoch batch and its fsync).
#[derive(Clone, Copy, Debug)]
pub struct LoadPlan {
    pub per_request: u64,
    pub in_flight: usize,
}

/// Default documents per load request.
pub const LOAD_PER_REQUEST: u64 = 1_000;
/// Default load requests in flight: enough that the next epoch batch is already queued
/// (and its requests parsed by the HTTP workers) while the executor applies the current one.
pub const LOAD_IN_FLIGHT: usize = 8;
/// Each account starts with this balance; transfers move 1..=10, so funds never run short
/// in a run of any practical length and the check is exercised without aborting.
pub const INITIAL_BALANCE: i64 = 1_000_000_000;
/// Retries of a request Tally answered "unavailable" (queue full) before giving up.
const UNAVAILABLE_RETRIES_MAX: u32 = 100;

/// A JSON body with holes: rendered by concatenation, so building a request costs the
/// client a few hundred nanoseconds instead of a serialisation of the whole tree.
#[derive(Clone)]
pub struct Template {
    pieces: Vec<Piece>,
}

#[derive(Clone)]
enum Piece {
    Text(String),
    Hole(usize),
}

impl Template {
    /// `holes` are string values in `q` (e.g. "$0"); every occurrence of hole `i`, quotes
    /// included, is replaced by `values[i]` (raw JSON) at render time.
    pub fn new(q: &Value, holes: &[&str]) -> Template {
        let text = q.to_string();
        let quoted: Vec<String> = holes.iter().map(|h| format!("\"{h}\"")).collect();
        let mut pieces = Vec::new();
        let mut rest = text.as_str();
        loop {
            let next = quoted.iter().enumerate().filter_map(|(i, h)| rest.find(h.as_str()).map(|p| (p, i))).min();
            let Some((p, i)) = next else { break };
            pieces.push(Piece::Text(rest[..p].to_string()));
            pieces.push(Piece::Hole(i));
            rest = &rest[p + quoted[i].len()..];
        }
        pieces.push(Piece::Text(rest.to_string()));
        Template { pieces }
    }

    pub fn render(&self, values: &[&str]) -> Bytes {
        let mut out = String::with_capacity(512);
        self.render_into(&mut out, values);
        Bytes::from(out)
    }

    /// Appends the rendering to `out`.
    pub fn render_into(&self, out: &mut String, values: &[&str]) {
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Hole(i) => out.push_str(values[*i]),
            }
        }
    }
}

/// `fql::doc_ref(collection, id)` as JSON text, written directly: building and
/// serialising the tree was about a tenth of the load generator's CPU per transfer.
fn ref_json(collection: &str, id: u64) -> String {
    format!(
        r#"{{"@ref":{{"id":"{id}","collection":{{"@ref":{{"id":"{collection}","collection":{{"@ref":{{"id":"collections"}}}}}}}}}}}}"#
    )
}

/// Builds the requests of one client and interprets the answers.
pub struct OpGen {
    workload: Workload,
    variant: Variant,
    accounts: u64,
    batch: usize,
    rng: StdRng,
    single: Template,
    /// `fql::transfer_map` with its rows as a hole: a batched request is this, around
    /// rows written directly (building and serialising the tree of 100 transfers was
    /// nine tenths of the load generator's CPU per batched transfer).
    map: Template,
    get: Template,
    page: Template,
    relist: Template,
    /// The item to put back on sale after a successful purchase.
    pending_relist: Option<u64>,
}

/// One request to send.
pub struct Op {
    pub body: Bytes,
    /// Transfers it carries (1 for reads and purchases).
    pub transfers: u64,
    /// A follow-up request of the app (re-listing an item), not counted as a purchase.
    pub follow_up: bool,
    /// The item a purchase is for (0 otherwise).
    pub item: u64,
}

impl OpGen {
    pub fn new(workload: Workload, variant: Variant, accounts: u64, batch: usize, seed: u64) -> OpGen {
        let hole = |h: &str| Value::String(h.to_string());
        let single = match (workload, variant) {
            (Workload::Purchase, _) => Template::new(&fql::purchase(hole("$0"), hole("$1")), &["$0", "$1"]),
            (_, Variant::Udf) => {
                Template::new(&fql::call_transfer(hole("$0"), hole("$1"), hole("$2")), &["$0", "$1", "$2"])
            }
            _ => Template::new(&fql::transfer(hole("$0"), hole("$1"), hole("$2")), &["$0", "$1", "$2"]),
        };
        let map = Template::new(&fql::transfer_map(hole("$0")), &["$0"]);
        let get = Template::new(&fql::get(hole("$0")), &["$0"]);
        let page = Template::new(&fql::index_page(fql::ACCOUNTS_BY_BUCKET, hole("$0"), 16), &["$0"]);
        let relist = Template::new(&fql::make_for_sale(hole("$0"), 10), &["$0"]);
        OpGen {
            workload,
            variant,
            accounts: accounts.max(2),
            batch: batch.max(1),
            rng: StdRng::seed_from_u64(seed),
            single,
            map,
            get,
            page,
            relist,
            pending_relist: None,
        }
    }

    /// Two distinct accounts, uniformly at random (ids are 1-based).
    fn pair(&mut self) -> (u64, u64) {
        let a = self.rng.gen_range(1..=self.accounts);
        let mut b = self.rng.gen_range(1..self.accounts);
        if b >= a {
            b += 1;
        }
        (a, b)
    }

    pub fn next_op(&mut self) -> Op {
        match self.workload {
            Workload::Transfer if self.batch == 1 => {
                let (a, b) = self.pair();
                let n = self.rng.gen_range(1..=10i64);
                let body =
                    self.single.render(&[&ref_json(fql::ACCOUNTS, a), &ref_json(fql::ACCOUNTS, b), &n.to_string()]);
                Op { body, transfers: 1, follow_up: false, item: 0 }
            }
            Workload::Transfer => {
                let items: Vec<(u64, u64, i64)> = (0..self.batch)
                    .map(|_| {
                        let (a, b) = self.pair();
                        (a, b, self.rng.gen_range(1..=10i64))
                    })
                    .collect();
                let body = self.batch_body(&items);
                Op { body, transfers: items.len() as u64, follow_up: false, item: 0 }
            }
            Workload::Purchase => {
                if let Some(item) = self.pending_relist.take() {
                    let body = self.relist.render(&[&ref_json(fql::ITEMS, item)]);
                    return Op { body, transfers: 0, follow_up: true, item };
                }
                let player = self.rng.gen_range(1..=self.accounts);
                let item = self.rng.gen_range(1..=self.accounts);
                let body = self.single.render(&[&ref_json(fql::PLAYERS, player), &ref_json(fql::ITEMS, item)]);
                Op { body, transfers: 1, follow_up: false, item }
            }
            // `ledger` starts no server (see `main`); were it here, it would read.
            Workload::Read | Workload::Ledger => {
                // Nine point reads for every index page read.
                if self.rng.gen_range(0..10) == 0 {
                    let bucket = self.rng.gen_range(0..fql::BUCKETS).to_string();
                    Op { body: self.page.render(&[&bucket]), transfers: 1, follow_up: false, item: 0 }
                } else {
                    let id = self.rng.gen_range(1..=self.accounts);
                    Op {
                        body: self.get.render(&[&ref_json(fql::ACCOUNTS, id)]),
                        transfers: 1,
                        follow_up: false,
                        item: 0,
                    }
                }
            }
        }
    }

    /// The text of `fql::transfer_batch(items)` (`fql::call_transfer_batch` for the UDF
    /// variant), written from the templates.
    fn batch_body(&self, items: &[(u64, u64, i64)]) -> Bytes {
        let mut out = String::with_capacity(64 + items.len() * 256);
        let joined = |out: &mut String, one: &dyn Fn(&mut String, &str, &str, &str)| {
            for (i, &(f, t, n)) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                one(out, &ref_json(fql::ACCOUNTS, f), &ref_json(fql::ACCOUNTS, t), &n.to_string());
            }
        };
        match self.variant {
            Variant::Udf => {
                out.push_str(r#"{"do":["#);
                joined(&mut out, &|out, f, t, n| self.single.render_into(out, &[f, t, n]));
                out.push_str("]}");
            }
            _ => {
                let mut rows = String::with_capacity(items.len() * 240);
                rows.push('[');
                joined(&mut rows, &|out, f, t, n| {
                    out.push('[');
                    out.push_str(f);
                    out.push(',');
                    out.push_str(t);
                    out.push(',');
                    out.push_str(n);
                    out.push(']');
                });
                rows.push(']');
                self.map.render_into(&mut out, &[&rows]);
            }
        }
        Bytes::from(out)
    }

    /// Classify an answer; for purchases, also remember what the app does next.
    pub fn classify(&mut self, op: &Op, reply: &Reply, rec: &Recorder) -> (Outcome, Option<String>) {
        if reply.status != 200 {
            let code = reply.error_code().unwrap_or_default();
            if code == "transaction aborted" {
                return (Outcome::Insufficient, None);
            }
            let msg = format!("HTTP {} {}", reply.status, String::from_utf8_lossy(&reply.body));
            return (Outcome::Error, Some(msg));
        }
        match self.workload {
            Workload::Transfer if self.batch > 1 => {
                // Count the items the application refused; the request itself committed.
                let short = reply
                    .json()
                    .ok()
                    .and_then(|j| {
                        j["resource"]
                            .as_array()
                            .map(|a| a.iter().filter(|v| v.as_str() == Some(fql::INSUFFICIENT)).count())
                    })
                    .unwrap_or(0);
                rec.insufficient_items(short as u64);
                (Outcome::Ok, None)
            }
            Workload::Purchase if !op.follow_up => {
                let answer = reply.json().ok().and_then(|j| j["resource"].as_str().map(str::to_string));
                let answer = answer.unwrap_or_else(|| "unexpected answer".into());
                rec.outcome(&answer);
                if answer == "Purchase success!" || answer == "Item removed from sale" {
                    // The (new) owner puts the animal back on sale, as players do in the app;
                    // without it every item ends up off sale and purchases stop writing.
                    self.pending_relist = Some(op.item);
                }
                (Outcome::Ok, None)
            }
            _ => (Outcome::Ok, None),
        }
    }
}

/// Send `body`, retrying while Tally answers "unavailable" (its queue is full).
pub async fn send(conn: &mut Conn, body: Bytes) -> anyhow::Result<(Reply, u64)> {
    let mut retries = 0;
    loop {
        let r = conn.query(body.clone()).await?;
        if r.status == 503 && retries < UNAVAILABLE_RETRIES_MAX as u64 {
            retries += 1;
            tokio::time::sleep(Duration::from_millis(1 << retries.min(6))).await;
            continue;
        }
        return Ok((r, retries));
    }
}

/// Create the application database and its server key with the root key; returns the key's secret.
pub async fn create_app(addr: Endpoint, root_key: &str, name: &str) -> anyhow::Result<String> {
    let mut admin = Conn::connect(addr, root_key).await?;
    admin.query_json(&fql::create_database(name)).await?.resource().context("creating the bench database")?;
    let key = admin.query_json(&fql::create_server_key(name)).await?.resource().context("creating a server key")?;
    key["secret"].as_str().map(str::to_string).context("CreateKey answered no secret")
}

/// Create the schema and documents of `workload` with `accounts` accounts (or players and items).
pub async fn load(
    addr: Endpoint,
    secret: &str,
    workload: Workload,
    variant: Variant,
    accounts: u64,
    plan: LoadPlan,
    loaded: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let mut c = Conn::connect(addr, secret).await?;
    let accounts = accounts.max(2);
    match workload {
        Workload::Transfer | Workload::Read | Workload::Ledger => {
            for q in [fql::create_collection(fql::ACCOUNTS), fql::create_collection(fql::TRANSFERS)] {
                c.query_json(&q).await?.resource().context("creating collections")?;
            }
            let idx = fql::create_index(fql::ACCOUNTS_BY_BUCKET, fql::ACCOUNTS, Some(&["data", "bucket"]));
            c.query_json(&idx).await?.resource().context("creating the index")?;
            if variant == Variant::Udf {
                c.query_json(&fql::create_transfer_fn()).await?.resource().context("creating the UDF")?;
            }
            run_load(addr, secret, accounts, plan, loaded, |r| fql::create_accounts(r, INITIAL_BALANCE)).await
        }
        Workload::Purchase => {
            for q in fql::exchange_schema() {
                c.query_json(&q).await?.resource().context("creating the Animal Exchange schema")?;
            }
            // Players first: items refer to them.
            run_load(addr, secret, accounts, plan, loaded.clone(), |r| fql::create_players(r, INITIAL_BALANCE)).await?;
            let items = move |r| fql::create_items(r, |id| (id * 7919) % accounts + 1, 10);
            run_load(addr, secret, accounts, plan, loaded, items).await
        }
    }
}

/// Send `make(ids)` for every `plan.per_request` ids of `1..=n`, `plan.in_flight` requests
/// at a time; each request is built only when a loader takes it, so memory stays flat
/// whatever `n` is. `loaded` counts the documents created so far (for the progress line).
async fn run_load(
    addr: Endpoint,
    secret: &str,
    n: u64,
    plan: LoadPlan,
    loaded: Arc<AtomicU64>,
    make: impl Fn(std::ops::Range<u64>) -> Value + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let make = Arc::new(make);
    let per = plan.per_request.max(1);
    let chunks = n.div_ceil(per);
    let mut tasks = Vec::new();
    for _ in 0..plan.in_flight.max(1) {
        let (next, make, secret, loaded) = (next.clone(), make.clone(), secret.to_string(), loaded.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::connect(addr, &secret).await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= chunks {
                    return anyhow::Ok(());
                }
                let ids = (1 + i * per)..(1 + ((i + 1) * per).min(n));
                let (r, _) = send(&mut c, Bytes::from(serde_json::to_vec(&make(ids.clone()))?)).await?;
                r.resource().context("loading documents")?;
                loaded.fetch_add(ids.end - ids.start, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Drive `clients` connections until `deadline`, recording every request.
pub async fn drive(
    addr: Endpoint,
    secret: &str,
    clients: usize,
    mk: impl Fn(u64) -> OpGen,
    rec: Arc<Recorder>,
    deadline: Instant,
) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for i in 0..clients {
        let mut gen = mk(0x7a11_0000 + i as u64);
        let rec = rec.clone();
        let secret = secret.to_string();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(addr, &secret).await?;
            while Instant::now() < deadline {
                let op = gen.next_op();
                let began = Instant::now();
                let (reply, retries) = match send(&mut conn, op.body.clone()).await {
                    Ok(x) => x,
                    Err(e) => {
                        rec.note_error(format!("{e:#}"));
                        rec.record(began, op.transfers, Outcome::Error, 0, 0);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let (outcome, err) = gen.classify(&op, &reply, &rec);
                if let Some(e) = err {
                    rec.note_error(e);
                }
                if !op.follow_up {
                    rec.record(began, op.transfers, outcome, 0, retries);
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await.context("client task")??;
    }
    Ok(())
}

/// Refuse to benchmark into a directory that holds something.
pub fn fresh_dir(path: &std::path::Path) -> anyhow::Result<()> {
    if path.exists() && std::fs::read_dir(path).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} exists and is not empty; give a new --data-dir", path.display());
    }
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_written_from_the_templates_is_the_trees_text() {
        for variant in [Variant::Fql, Variant::Udf] {
            for n in [1, 2, 7, 100] {
                let mut gen = OpGen::new(Workload::Transfer, variant, 100_000, n, 42);
                let mut rng = StdRng::seed_from_u64(n as u64);
                let items: Vec<(u64, u64, i64)> = (0..n)
                    .map(|_| (rng.gen_range(1..=u64::MAX), rng.gen_range(1..100), rng.gen_range(-10..=10)))
                    .collect();
                let want = match variant {
                    Variant::Udf => fql::call_transfer_batch(&items),
                    _ => fql::transfer_batch(&items),
                };
                assert_eq!(gen.batch_body(&items), Bytes::from(want.to_string()), "{variant:?}, {n} items");
                // And what the generator sends is such a batch (one transfer alone is
                // sent as the single transfer's template).
                let op = gen.next_op();
                assert_eq!(op.transfers, n as u64);
                let sent: Value = serde_json::from_slice(&op.body).unwrap();
                let rows = match (variant, n) {
                    (_, 1) => 1,
                    (Variant::Udf, _) => sent["do"].as_array().unwrap().len(),
                    _ => sent["collection"].as_array().unwrap().len(),
                };
                assert_eq!(rows, n);
            }
        }
    }

    #[test]
    fn a_ref_written_directly_is_the_trees_text() {
        for (c, id) in [(fql::ACCOUNTS, 1), (fql::ITEMS, 100_000), (fql::PLAYERS, u64::MAX)] {
            assert_eq!(ref_json(c, id), fql::doc_ref(c, id).to_string());
        }
    }
}
