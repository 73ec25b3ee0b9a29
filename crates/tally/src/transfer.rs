//! `tally export` and `tally import`: a database tree as JSON lines (docs/export.md),
//! and Fauna's snapshot export read into a database (`fauna.rs`).
//!
//! Both are clients of the FQL v4 API (they link no server internals): export reads with
//! the root key scoped to each database (`KEY:path:admin`), every read at one snapshot ts
//! (`At`); import writes schema with the ordinary Create* functions and documents with
//! `Insert` at their original timestamps, many documents per query (one transaction), so
//! ids and history land as they were.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use serde_json::{json, Map, Value};
use tally_bench::client::Conn;

/// The version this build writes and the only one it reads.
pub const EXPORT_VERSION: u64 = 1;
/// Versions of one document exported at most (one page of its events).
const HISTORY_MAX: usize = 100_000;
/// Documents per page when exporting.
const EXPORT_PAGE: usize = 500;
/// An import query carries at most this many history events and about this many bytes.
const IMPORT_EVENTS_MAX: usize = 2_000;
const IMPORT_BYTES_MAX: usize = 2 << 20;

#[derive(clap::Args)]
pub struct ExportArgs {
    /// The server: http://HOST:PORT or https://HOST:PORT.
    #[arg(long, default_value = "http://127.0.0.1:8443", env = "TALLY_ENDPOINT")]
    pub endpoint: String,
    /// The CA certificate (PEM) to trust for an https:// endpoint (e.g. the ca.pem of
    /// `tally init-certs`); without it, the public web PKI roots.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// The root key.
    #[arg(long, env = "TALLY_ROOT_KEY", hide_env_values = true)]
    pub root_key: String,
    /// Path of the database to export (`a/b`); empty: the root, i.e. everything.
    #[arg(long, default_value = "")]
    pub database: String,
    /// File to write (JSON lines).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args)]
pub struct ImportArgs {
    /// The server: http://HOST:PORT or https://HOST:PORT.
    #[arg(long, default_value = "http://127.0.0.1:8443", env = "TALLY_ENDPOINT")]
    pub endpoint: String,
    /// The CA certificate (PEM) to trust for an https:// endpoint (e.g. the ca.pem of
    /// `tally init-certs`); without it, the public web PKI roots.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// The root key.
    #[arg(long, env = "TALLY_ROOT_KEY", hide_env_values = true)]
    pub root_key: String,
    /// Path of the database to import into (it must exist; empty: the root).
    #[arg(long, default_value = "")]
    pub database: String,
    /// A `tally export` file.
    #[arg(long, conflicts_with = "fauna")]
    pub file: Option<PathBuf>,
    /// A directory holding a Fauna snapshot export (`metadata_*.json`, `data/collections/`).
    #[arg(long)]
    pub fauna: Option<PathBuf>,
    /// Progress is recorded here after every batch; an import started again with the same
    /// file goes on from there.
    #[arg(long)]
    pub resume: Option<PathBuf>,
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// The root key scoped to a database (admin role there).
pub fn scoped(root_key: &str, path: &str) -> String {
    if path.is_empty() {
        root_key.to_string()
    } else {
        format!("{root_key}:{path}:admin")
    }
}

/// A connection per database path, made on first use.
pub struct Conns {
    ep: tally_bench::client::Endpoint,
    root_key: String,
    by_path: BTreeMap<String, Conn>,
}

impl Conns {
    pub fn new(endpoint: &str, ca: Option<&std::path::Path>, root_key: &str) -> anyhow::Result<Conns> {
        let ep = tally_bench::client::Endpoint::remote(endpoint, ca)?;
        Ok(Conns { ep, root_key: root_key.to_string(), by_path: BTreeMap::new() })
    }

    /// Run `q` in database `path`; the resource, or an error with the FQL error.
    pub async fn run(&mut self, path: &str, q: &Value) -> anyhow::Result<Value> {
        self.try_run(path, q).await?.map_err(|(code, desc)| anyhow::anyhow!("{code}: {desc}"))
    }

    /// Like `run`, but an FQL error is returned as `(code, description)`.
    pub async fn try_run(&mut self, path: &str, q: &Value) -> anyhow::Result<Result<Value, (String, String)>> {
        if !self.by_path.contains_key(path) {
            let c = Conn::connect(self.ep, &scoped(&self.root_key, path)).await?;
            self.by_path.insert(path.to_string(), c);
        }
        let conn = self.by_path.get_mut(path).context("connection")?;
        let reply = conn.query_json(q).await?;
        let mut j = reply.json()?;
        if reply.status == 200 {
            return Ok(Ok(j["resource"].take()));
        }
        let e = &j["errors"][0];
        Ok(Err((e["code"].as_str().unwrap_or("?").to_string(), e["description"].as_str().unwrap_or("").to_string())))
    }
}

/// A value from an answer (wire JSON) as an expression that evaluates to it: objects are
/// wrapped in `object` so their keys are not read as function names.
pub fn quote(v: &Value) -> Value {
    match v {
        Value::Array(a) => Value::Array(a.iter().map(quote).collect()),
        Value::Object(m) if m.len() == 1 && m.contains_key("@obj") => quote_object(&m["@obj"]),
        Value::Object(m)
            if m.len() == 1 && ["@ref", "@ts", "@date", "@bytes", "@query"].iter().any(|k| m.contains_key(*k)) =>
        {
            v.clone()
        }
        Value::Object(_) => quote_object(v),
        other => other.clone(),
    }
}

fn quote_object(v: &Value) -> Value {
    let m: Map<String, Value> =
        v.as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), quote(v))).collect()).unwrap_or_default();
    json!({ "object": m })
}

fn without(doc: &Value, fields: &[&str]) -> Value {
    let mut d = doc.clone();
    if let Some(m) = d.as_object_mut() {
        for f in fields {
            m.remove(*f);
        }
    }
    d
}

fn coll_ref(name: &str) -> Value {
    json!({ "collection": name })
}

/// Every page of `set` (an expression), mapped through `lambda`, at `ts`.
async fn all_pages(
    conns: &mut Conns,
    path: &str,
    ts: &Value,
    set: Value,
    lambda: Value,
    size: usize,
) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut after: Option<Value> = None;
    loop {
        let mut opts = json!({ "paginate": set.clone(), "size": size });
        if let Some(a) = &after {
            opts["after"] = quote(a);
        }
        let q = json!({ "at": ts, "expr": { "map": lambda.clone(), "collection": opts } });
        let page = conns.run(path, &q).await?;
        out.extend(page["data"].as_array().cloned().unwrap_or_default());
        match page.get("after") {
            Some(a) if !a.is_null() => after = Some(a.clone()),
            _ => return Ok(out),
        }
    }
}

fn get_each() -> Value {
    json!({ "lambda": "r", "expr": { "get": { "var": "r" } } })
}

struct Exporter<W: Write> {
    conns: Conns,
    /// The exported database; records name databases relative to it.
    root: String,
    out: W,
    ts: Value,
    counts: BTreeMap<&'static str, u64>,
    bar: indicatif::ProgressBar,
}

impl<W: Write> Exporter<W> {
    fn rel(&self, path: &str) -> String {
        path.strip_prefix(self.root.as_str()).unwrap_or(path).trim_start_matches('/').to_string()
    }

    fn line(&mut self, kind: &'static str, rec: Value) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.out, &rec)?;
        self.out.write_all(b"\n")?;
        *self.counts.entry(kind).or_default() += 1;
        Ok(())
    }

    /// One database: its schema, documents, then its children, each the same way.
    async fn database(&mut self, path: &str) -> anyhow::Result<()> {
        let ts = self.ts.clone();
        let schema: [(&'static str, &str, &[&str]); 5] = [
            ("collection", "collections", &["ref", "ts"]),
            ("index", "indexes", &["ref", "ts", "active", "partitions"]),
            ("function", "functions", &["ref", "ts"]),
            ("role", "roles", &["ref", "ts"]),
            ("key", "keys", &["ref", "ts", "secret", "hashed_secret"]),
        ];
        let mut collections = Vec::new();
        for (kind, set, drop) in schema {
            let docs = all_pages(&mut self.conns, path, &ts, json!({ set: null }), get_each(), 1000).await?;
            for d in docs {
                if kind == "collection" {
                    collections.push(d["name"].as_str().unwrap_or_default().to_string());
                }
                self.line(kind, json!({ "type": kind, "db": self.rel(path), "doc": without(&d, drop) }))?;
            }
        }
        for c in collections {
            self.documents(path, &c).await?;
        }
        let children = all_pages(&mut self.conns, path, &ts, json!({ "databases": null }), get_each(), 1000).await?;
        for d in children {
            let name = d["name"].as_str().context("a database without a name")?.to_string();
            self.line(
                "database",
                json!({ "type": "database", "db": self.rel(path), "doc": without(&d, &["ref", "ts", "global_id"]) }),
            )?;
            Box::pin(self.database(&join(path, &name))).await?;
        }
        Ok(())
    }

    async fn documents(&mut self, path: &str, coll: &str) -> anyhow::Result<()> {
        let ts = self.ts.clone();
        // An update event carries only what changed; each version is read whole, at its ts.
        let e = |field: &str| json!({ "select": field, "from": { "var": "e" } });
        let version = json!({ "lambda": "e", "expr": { "object": {
            "ts": e("ts"),
            "action": e("action"),
            "data": { "if": { "equals": [e("action"), "delete"] }, "then": null,
                      "else": { "select": "data", "from": { "at": e("ts"), "expr": { "get": { "var": "r" } } } } }
        }}});
        let events = json!({ "paginate": { "events": { "var": "r" } }, "size": HISTORY_MAX });
        let lambda = json!({ "lambda": "r", "expr": [{ "var": "r" }, { "map": version, "collection": events }] });
        let set = json!({ "documents": coll_ref(coll) });
        let rows = all_pages(&mut self.conns, path, &ts, set, lambda, EXPORT_PAGE).await?;
        for row in rows {
            let id = row[0]["@ref"]["id"].as_str().context("a document ref without an id")?.to_string();
            let events = &row[1];
            if events.get("after").is_some_and(|a| !a.is_null()) {
                bail!("{coll}/{id} in {path:?} has more than {HISTORY_MAX} versions; this build exports at most that many");
            }
            let history: Vec<Value> = events["data"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|e| json!({ "ts": e["ts"], "action": e["action"], "data": e["data"] }))
                .collect();
            self.bar.inc(1);
            self.line(
                "document",
                json!({ "type": "document", "db": self.rel(path), "collection": coll, "id": id, "history": history }),
            )?;
        }
        Ok(())
    }
}

pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut conns = Conns::new(&args.endpoint, args.ca.as_deref(), &args.root_key)?;
        let path = args.database.trim_matches('/').to_string();
        // The snapshot every read is made at: the export is one consistent state.
        let ts = conns.run(&path, &json!({ "to_micros": { "now": null } })).await?;
        let file = std::fs::File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
        let bar = indicatif::ProgressBar::new_spinner().with_message("documents exported");
        let mut ex = Exporter {
            conns,
            root: path.clone(),
            out: std::io::BufWriter::new(file),
            ts: ts.clone(),
            counts: BTreeMap::new(),
            bar,
        };
        let header = json!({ "tally_export": EXPORT_VERSION, "database": path, "snapshot_ts": ts });
        serde_json::to_writer(&mut ex.out, &header)?;
        ex.out.write_all(b"\n")?;
        ex.database(&path).await?;
        let counts = ex.counts.clone();
        ex.line("end", json!({ "type": "end", "counts": counts }))?;
        ex.out.flush()?;
        ex.bar.finish_and_clear();
        println!("exported {} at ts {ts}: {counts:?}", if path.is_empty() { "the root database" } else { &path });
        Ok(())
    })
}

/// What an import has to do with one record of the stream.
pub enum Item {
    /// Runs alone (schema).
    Schema { path: String, query: Value, kind: String, name: String },
    /// `Insert` calls for one document, batched with others of the same database.
    Doc { path: String, calls: Vec<Value> },
    /// Counted, not imported (keys: their secrets are not in the export).
    Skipped(&'static str),
}

/// Schema records as the queries that create them; documents as their `Insert`s.
fn item(rec: &Value, base: &str) -> anyhow::Result<Option<Item>> {
    let kind = rec["type"].as_str().context("a record without a type")?;
    let path = join(base, rec["db"].as_str().unwrap_or_default()).trim_matches('/').to_string();
    let doc = &rec["doc"];
    let name = doc["name"].as_str().unwrap_or_default().to_string();
    let create = |f: &str, d: &Value| Item::Schema {
        path: path.clone(),
        query: json!({ f: quote(d) }),
        kind: kind.to_string(),
        name: name.clone(),
    };
    Ok(Some(match kind {
        "collection" => create("create_collection", doc),
        "index" => create("create_index", doc),
        // Created without its role (the role may name the function); the role is set
        // once roles exist ("function_role").
        "function" => create("create_function", &without(doc, &["role"])),
        "role" => create("create_role", doc),
        "database" => create("create_database", doc),
        "key" => Item::Skipped("key"),
        "document" => {
            let coll = rec["collection"].as_str().context("a document without a collection")?;
            let id = rec["id"].as_str().context("a document without an id")?;
            let r = json!({ "ref": coll_ref(coll), "id": id });
            let calls = rec["history"]
                .as_array()
                .context("a document without history")?
                .iter()
                .map(|e| {
                    let params = if e["action"] == "delete" {
                        json!({ "object": {} })
                    } else {
                        quote(&json!({ "data": e["data"] }))
                    };
                    json!({ "insert": r, "ts": e["ts"], "action": e["action"], "params": params })
                })
                .collect();
            Item::Doc { path, calls }
        }
        "end" => return Ok(None),
        other => bail!("unknown record type {other:?}: this file was written by a newer build"),
    }))
}

/// Functions' roles, set after every role exists.
fn function_roles(lines: &[Value], base: &str) -> Vec<(String, Value)> {
    lines
        .iter()
        .filter(|r| r["type"] == "function" && !r["doc"]["role"].is_null())
        .map(|r| {
            let path = join(base, r["db"].as_str().unwrap_or_default()).trim_matches('/').to_string();
            let q = json!({ "update": { "function": r["doc"]["name"] }, "params": { "object": { "role": quote(&r["doc"]["role"]) } } });
            (path, q)
        })
        .collect()
}

pub fn import(args: ImportArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let conns = Conns::new(&args.endpoint, args.ca.as_deref(), &args.root_key)?;
        let base = args.database.trim_matches('/').to_string();
        let mut imp = Importer::new(conns, args.resume.clone())?;
        let started = std::time::Instant::now();
        if let Some(dir) = &args.fauna {
            crate::fauna::import(&mut imp, dir, &base).await?;
        } else if let Some(file) = &args.file {
            import_file(&mut imp, file, &base).await?;
        } else {
            bail!("give --file (a tally export) or --fauna (a Fauna snapshot export directory)");
        }
        let secs = started.elapsed().as_secs_f64();
        imp.bar.finish_and_clear();
        println!(
            "imported {} documents ({} versions) and {} schema objects in {secs:.2} s ({:.0} documents/s); skipped: {:?}",
            imp.docs,
            imp.events,
            imp.schema,
            imp.docs as f64 / secs.max(1e-9),
            imp.skipped
        );
        Ok(())
    })
}

async fn import_file(imp: &mut Importer, file: &PathBuf, base: &str) -> anyhow::Result<()> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    imp.bar.set_length(f.metadata()?.len());
    let mut lines = std::io::BufReader::new(f).lines();
    let header: Value =
        serde_json::from_str(&lines.next().context("the file is empty")??).context("the header line is not JSON")?;
    match header["tally_export"].as_u64() {
        Some(EXPORT_VERSION) => {}
        Some(v) => bail!("{} is export format {v}; this build reads format {EXPORT_VERSION}", file.display()),
        None => bail!("{} is not a tally export (its first line has no \"tally_export\" version)", file.display()),
    }
    // Functions' roles are set at the end, once every role they may name exists.
    let mut roles_later = Vec::new();
    for (n, line) in lines.enumerate() {
        let line = line?;
        imp.bar.inc(line.len() as u64 + 1);
        let rec: Value = serde_json::from_str(&line).with_context(|| format!("line {} is not JSON", n + 2))?;
        roles_later.extend(function_roles(std::slice::from_ref(&rec), base));
        if let Some(it) = item(&rec, base)? {
            imp.push(n as u64, it).await?;
        }
    }
    imp.flush().await?;
    for (path, q) in roles_later {
        imp.conns.run(&path, &q).await.context("setting a function's role")?;
    }
    imp.done()
}

/// Batches `Insert`s into few queries; runs schema queries in order; records progress.
pub struct Importer {
    pub conns: Conns,
    resume: Option<PathBuf>,
    /// Records before this one were imported by an earlier run.
    skip_before: u64,
    pending_path: String,
    pending: Vec<Value>,
    pending_bytes: usize,
    /// The record after the last one in `pending`.
    pending_end: u64,
    pending_docs: u64,
    pub docs: u64,
    pub events: u64,
    pub schema: u64,
    pub skipped: BTreeMap<&'static str, u64>,
    pub bar: indicatif::ProgressBar,
}

impl Importer {
    pub fn new(conns: Conns, resume: Option<PathBuf>) -> anyhow::Result<Importer> {
        let skip_before = match &resume {
            Some(p) if p.exists() => {
                std::fs::read_to_string(p)?.trim().parse().context("the resume file holds no record number")?
            }
            _ => 0,
        };
        if skip_before > 0 {
            println!("resuming at record {skip_before}");
        }
        let bar = indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {per_sec} {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Ok(Importer {
            conns,
            resume,
            skip_before,
            pending_path: String::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            pending_end: 0,
            pending_docs: 0,
            docs: 0,
            events: 0,
            schema: 0,
            skipped: BTreeMap::new(),
            bar,
        })
    }

    /// Record `n` of the stream.
    pub async fn push(&mut self, n: u64, it: Item) -> anyhow::Result<()> {
        if n < self.skip_before {
            return Ok(());
        }
        match it {
            Item::Skipped(what) => *self.skipped.entry(what).or_default() += 1,
            Item::Schema { path, query, kind, name } => {
                self.flush().await?;
                match self.conns.try_run(&path, &query).await? {
                    Ok(_) => self.schema += 1,
                    // Created by an earlier, interrupted run of this import.
                    Err((code, _)) if code == "instance already exists" && self.skip_before > 0 => {}
                    Err((code, desc)) => bail!("creating {kind} {name:?} in {path:?}: {code}: {desc}"),
                }
                self.pending_end = n + 1;
                self.save()?;
            }
            Item::Doc { path, calls } => {
                let bytes: usize = calls.iter().map(|c| c.to_string().len()).sum();
                if path != self.pending_path
                    || self.pending.len() + calls.len() > IMPORT_EVENTS_MAX
                    || self.pending_bytes + bytes > IMPORT_BYTES_MAX
                {
                    self.flush().await?;
                    self.pending_path = path;
                }
                self.pending_bytes += bytes;
                self.pending.extend(calls);
                self.pending_docs += 1;
                self.pending_end = n + 1;
            }
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let calls = std::mem::take(&mut self.pending);
        let n = calls.len() as u64;
        // One transaction: `Do` of every Insert; its answer is discarded server-side
        // except the last (a null keeps the answer small).
        let mut all = calls;
        all.push(Value::Null);
        let q = json!({ "do": all });
        self.conns.run(&self.pending_path.clone(), &q).await.context("importing documents")?;
        self.events += n;
        self.docs += std::mem::take(&mut self.pending_docs);
        self.pending_bytes = 0;
        self.save()
    }

    fn save(&self) -> anyhow::Result<()> {
        let Some(p) = &self.resume else { return Ok(()) };
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, self.pending_end.to_string())?;
        std::fs::rename(&tmp, p)?;
        Ok(())
    }

    pub fn done(&mut self) -> anyhow::Result<()> {
        if let Some(p) = &self.resume {
            std::fs::write(p, u64::MAX.to_string())?;
        }
        Ok(())
    }
}
