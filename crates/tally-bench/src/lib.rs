//! tally-bench: the load generator behind `tally bench`.
//!
//! It drives a real `tally serve` (started here as a child process on a loopback port,
//! or an existing one given by `--endpoint`) over HTTP exactly as an FQL v4 driver
//! would, and, with `--postgres`, the same transfer workload against PostgreSQL in its
//! two best modes (SERIALIZABLE with retries; READ COMMITTED with `SELECT … FOR UPDATE`),
//! then prints them side by side as a table, the ratio of Tally to the faster mode, the
//! CPU per transfer of each server and of this load generator, and JSON.
//!
//! Workloads ([`Workload`]):
//! - `transfer`: read two accounts, check funds, debit, credit, record the transfer —
//!   in FQL (`Let`/`If`/`Update`/`Create`), or through a UDF with `--udf`; `--batch N`
//!   sends N transfers per request (`Map` over rows), as TigerBeetle clients batch;
//! - `purchase`: the Animal Exchange purchase transaction, verbatim from the app;
//! - `read`: point `Get`s and index page reads (9:1);
//! - `ledger`: no server: the transparency log's own cost per transaction (CPU and bytes),
//!   the same blocks applied to a redb store without and with it ([`ledger`]).
//!
//! What it must not do: talk to anything but loopback, or assert thresholds (figures
//! depend on the machine; CI only checks that the command runs).

pub mod client;
pub mod disk;
pub mod fql;
pub mod ledger;
pub mod pg;
pub mod plot;
pub mod resources;
pub mod server;
pub mod stats;
pub mod tally;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::stats::{Recorder, Report, ReportHead};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Transfer,
    Purchase,
    Read,
    Ledger,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Transfer => "transfer",
            Workload::Purchase => "purchase",
            Workload::Read => "read",
            Workload::Ledger => "ledger",
        }
    }
}

/// How the transaction reaches the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The whole transaction in each request.
    Fql,
    /// `Call(Function("transfer"), ...)`.
    Udf,
}

/// `tally bench` options.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// transfer, purchase, read, or ledger (the transparency log's cost per transaction,
    /// in process: no server).
    #[arg(value_enum)]
    pub workload: Workload,
    /// Accounts (players and items for `purchase`); a comma list runs each in turn.
    /// 10 is a hot set where every transaction contends, 1000000 a cold one.
    #[arg(long, value_delimiter = ',', default_value = "10,10000")]
    pub accounts: Vec<u64>,
    /// Concurrent clients, each on its own keep-alive connection.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Transfers per request (client-side batching).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Where the started servers keep their data (a new directory per run under it);
    /// default: a temporary directory, removed afterwards.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Drive this running server (http://127.0.0.1:PORT) instead of starting one.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Serve and drive Tally over https (TLS 1.3, HTTP/1.1): started servers get a
    /// certificate from a CA made for the run; an https --endpoint needs --tls-ca.
    #[arg(long)]
    pub tls: bool,
    /// The CA (PEM) to trust for an https --endpoint.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Root key of the `--endpoint` server.
    #[arg(long, env = "TALLY_ROOT_KEY", hide_env_values = true)]
    pub root_key: Option<String>,
    /// With `--endpoint`: the process id of the server (repeat it for every member of a
    /// cluster on this machine), so its CPU per transfer is measured and split by thread,
    /// as for a server this command starts.
    #[arg(long = "server-pid", value_name = "PID", requires = "endpoint")]
    pub server_pids: Vec<u32>,
    /// Run the transfer as a user-defined function (`CreateFunction` once, then `Call`).
    #[arg(long)]
    pub udf: bool,
    /// Also run `transfer` against PostgreSQL, e.g. "host=/tmp/pg port=5432 user=postgres".
    #[arg(long)]
    pub postgres: Option<String>,
    /// Skip Tally (with --postgres: measure PostgreSQL only).
    #[arg(long)]
    pub no_tally: bool,
    /// Write an SVG chart of throughput and latency over time.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Write the results as JSON to this file ("-" for stdout).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Documents created per request while loading (one `Do` of `Create`s; keep the body
    /// under the server's 16 MiB limit: an account is about 200 bytes of JSON).
    #[arg(long, default_value_t = tally::LOAD_PER_REQUEST)]
    pub load_batch: u64,
    /// Load requests in flight at once.
    #[arg(long, default_value_t = tally::LOAD_IN_FLIGHT)]
    pub load_in_flight: usize,
    /// Epoch length of the started servers (`tally serve --epoch-ms`).
    #[arg(long)]
    pub epoch_ms: Option<u64>,
    /// ledger: transactions applied per pass.
    #[arg(long, default_value_t = 50_000)]
    pub txns: u64,
    /// ledger: transactions per block (one commit and one head signature each).
    #[arg(long, default_value_t = 16)]
    pub txns_per_block: u64,
    /// ledger: document versions each transaction writes (a transfer: 3).
    #[arg(long, default_value_t = 3)]
    pub doc_writes: u64,
    /// ledger: index entries each transaction writes (a transfer: none).
    #[arg(long, default_value_t = 0)]
    pub index_writes: u64,
    /// ledger: bytes of each stored version or entry (a transfer's: about 80).
    #[arg(long, default_value_t = 80)]
    pub value_bytes: usize,
    /// ledger: bytes of each transaction's logged input record (a transfer's: 1,016).
    #[arg(long, default_value_t = 1016)]
    pub input_bytes: usize,
    /// The tally binary to start (default: this one).
    #[arg(long, hide = true)]
    pub tally_bin: Option<PathBuf>,
}

/// The machine the figures come from.
#[derive(Serialize, Clone, Debug)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub memory_gib: u64,
    pub note: String,
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_string();
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    Machine {
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        cpu,
        memory_gib: (mem_kib + (1 << 19)) >> 20,
        note: "load generator and server run on the same machine and share its cores".into(),
    }
}

#[derive(Serialize)]
struct JsonOut<'a> {
    machine: Machine,
    reports: &'a [Report],
}

/// CPU seconds this process has used.
fn self_cpu() -> Option<f64> {
    server::cpu_seconds(std::process::id())
}

/// Run everything `args` asks for; prints the table (stdout) and writes JSON and plot.
pub fn main(args: BenchArgs) -> anyhow::Result<()> {
    if args.workload == Workload::Ledger {
        let shape = ledger::Shape {
            txns: args.txns,
            txns_per_block: args.txns_per_block,
            doc_writes: args.doc_writes,
            index_writes: args.index_writes,
            value_bytes: args.value_bytes.max(8),
            input_bytes: args.input_bytes.max(8),
        };
        return ledger::run(&shape).map(drop);
    }
    if args.clients == 0 || args.batch == 0 || args.duration == 0 || args.accounts.is_empty() {
        bail!("--clients, --batch, --duration and --accounts must be positive");
    }
    if args.load_batch == 0 || args.load_in_flight == 0 {
        bail!("--load-batch and --load-in-flight must be positive");
    }
    if let Some(pid) = args.server_pids.iter().find(|&&p| server::cpu_seconds(p).is_none()) {
        bail!("--server-pid {pid}: no such process on this machine (give the pid of the server --endpoint reaches)");
    }
    if args.accounts.iter().any(|&a| a < 2) {
        bail!("--accounts must be at least 2 (a transfer needs two accounts)");
    }
    if let Some(pg) = &args.postgres {
        pg::check_local(pg)?;
        if args.workload != Workload::Transfer {
            bail!("--postgres compares the transfer workload only");
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let reports = rt.block_on(run_all(&args))?;
    let m = machine();
    println!("\nmachine: {} cores ({}), {} GiB; {}\n", m.cores, m.cpu, m.memory_gib, m.note);
    println!("{}", stats::table(&reports));
    for r in reports.iter().filter(|r| r.transfers > 0) {
        if let Some(cpu) = r.cpu.as_ref() {
            let server = if cpu.server_us_per_transfer > 0.0 && !cpu.server_threads_us_per_transfer.is_empty() {
                format!("server CPU {:.0} us/transfer ({}), ", cpu.server_us_per_transfer, cpu.threads_line())
            } else if cpu.server_us_per_transfer > 0.0 {
                format!("server CPU {:.0} us/transfer, ", cpu.server_us_per_transfer)
            } else {
                String::new()
            };
            println!(
                "{} {} ({}) {} accounts: {server}load generator CPU {:.0} us/transfer",
                r.head.system, r.head.workload, r.head.variant, r.head.accounts, cpu.client_us_per_transfer
            );
        }
    }
    if let Some(path) = &args.json {
        let out = serde_json::to_string_pretty(&JsonOut { machine: m, reports: &reports })?;
        if path.as_os_str() == "-" {
            println!("{out}");
        } else {
            std::fs::write(path, out + "\n").with_context(|| format!("writing {}", path.display()))?;
            println!("JSON written to {}", path.display());
        }
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, plot::svg(&reports)).with_context(|| format!("writing {}", path.display()))?;
        println!("chart written to {}", path.display());
    }
    Ok(())
}

async fn run_all(args: &BenchArgs) -> anyhow::Result<Vec<Report>> {
    let tmp = match &args.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            None
        }
        None => Some(tempfile::Builder::new().prefix("tally-bench-").tempdir()?),
    };
    let base =
        args.data_dir.clone().unwrap_or_else(|| tmp.as_ref().map(|t| t.path().to_path_buf()).unwrap_or_default());
    let mut reports = Vec::new();
    for &accounts in &args.accounts {
        if !args.no_tally {
            let r = run_tally(args, accounts, &base).await.with_context(|| format!("tally, {accounts} accounts"))?;
            eprintln!("{}", stats::table(std::slice::from_ref(&r)).lines().nth(1).unwrap_or_default());
            reports.push(r);
        }
        if let Some(pg) = &args.postgres {
            for iso in pg::Isolation::ALL {
                let r = run_postgres(args, pg, iso, accounts)
                    .await
                    .with_context(|| format!("postgres ({}), {accounts} accounts", iso.name()))?;
                eprintln!("{}", stats::table(std::slice::from_ref(&r)).lines().nth(1).unwrap_or_default());
                reports.push(r);
            }
        }
    }
    Ok(reports)
}

fn head(args: &BenchArgs, system: &str, variant: &str, accounts: u64) -> ReportHead {
    ReportHead {
        system: system.into(),
        workload: args.workload.name().into(),
        variant: variant.into(),
        accounts,
        clients: args.clients,
        batch: if args.workload == Workload::Transfer { args.batch } else { 1 },
    }
}

async fn run_tally(args: &BenchArgs, accounts: u64, base: &std::path::Path) -> anyhow::Result<Report> {
    let variant = if args.udf && args.workload == Workload::Transfer { Variant::Udf } else { Variant::Fql };
    let vname = if variant == Variant::Udf { "udf" } else { "fql" };
    // Our own server (fresh data directory), or the one at --endpoint.
    let root_key = match (&args.endpoint, &args.root_key) {
        (Some(_), Some(k)) => k.clone(),
        (Some(_), None) => bail!("--endpoint needs the server's --root-key (or TALLY_ROOT_KEY)"),
        (None, _) => format!("bench-root-{:016x}", rand::random::<u64>()),
    };
    let mut server = None;
    let addr = match &args.endpoint {
        Some(e) if e.starts_with("https://") => {
            let ca = args.tls_ca.as_deref().context("an https --endpoint needs --tls-ca (the CA to trust)")?;
            client::Endpoint::https(client::parse_endpoint(e)?, ca)?
        }
        Some(e) => client::Endpoint::plain(client::parse_endpoint(e)?),
        None => {
            let bin = match &args.tally_bin {
                Some(b) => b.clone(),
                None => std::env::current_exe().context("locating the tally binary")?,
            };
            let dir = base.join(format!("tally-{}-{vname}-{accounts}-b{}", args.workload.name(), args.batch));
            tally::fresh_dir(&dir)?;
            let s = server::Server::start(&bin, &dir, &root_key, args.epoch_ms, args.tls).await?;
            let a = s.addr;
            server = Some(s);
            a
        }
    };
    let https = if addr.tls.is_some() { " (https)" } else { "" };
    let label = format!("tally {} {accounts}{https}", args.workload.name());
    let app = format!("bench_{}_{accounts}_{:08x}", args.workload.name(), rand::random::<u32>());
    let secret = tally::create_app(addr, &root_key, &app).await?;
    eprintln!(
        "{label}: loading {accounts} {}",
        if args.workload == Workload::Purchase { "players and items" } else { "accounts" }
    );
    let data_dir = server.as_ref().map(|s| s.data_dir.clone());
    let docs = if args.workload == Workload::Purchase { 2 * accounts } else { accounts };
    let loaded = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop_load_progress = stats::spawn_load_progress(label.clone(), loaded.clone(), docs, data_dir.clone());
    let server_pids: Vec<u32> = match &server {
        Some(s) => vec![s.pid()],
        None => args.server_pids.clone(),
    };
    let pids = server_pids.clone();
    let server_cpu = move || server::cpu_seconds_of(&pids);
    let load_cpu0 = server_cpu().zip(server::executor_cpu_seconds_of(&server_pids));
    let t0 = Instant::now();
    let plan = tally::LoadPlan { per_request: args.load_batch, in_flight: args.load_in_flight };
    let result = tally::load(addr, &secret, args.workload, variant, accounts, plan, loaded).await;
    let load_s = t0.elapsed().as_secs_f64();
    let load_curve = stop_load_progress();
    result?;
    let load_cpu1 = server_cpu().zip(server::executor_cpu_seconds_of(&server_pids));
    let load_cpu_us = load_cpu0.zip(load_cpu1).map(|((s0, e0), (s1, e1))| {
        let per = |a: f64, b: f64| (b - a) * 1e6 / docs.max(1) as f64;
        (per(s0, s1), per(e0, e1))
    });
    if let Some((s, e)) = load_cpu_us {
        eprintln!(
            "{label}: loaded {docs} in {load_s:.1} s ({:.0}/s); server CPU {s:.1} us/doc, executor thread {e:.1} us/doc",
            docs as f64 / load_s.max(1e-9)
        );
    }
    let after_load = data_dir.as_deref().map(server::dir_bytes);

    let rec = Arc::new(Recorder::default());
    let warmup = Duration::from_secs(args.warmup);
    let duration = Duration::from_secs(args.duration);
    let deadline = Instant::now() + warmup + duration;
    // At the end of the warm-up: open the window and take the "before" sizes and CPU.
    let before = {
        let rec = rec.clone();
        let data_dir = data_dir.clone();
        let pids = server_pids.clone();
        tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            rec.start_measuring(duration);
            let sizes = data_dir.as_deref().map(|d| (server::log_bytes(d), server::dir_bytes(d)));
            (sizes, server::cpu_seconds_of(&pids), self_cpu(), server::ThreadCpu::read_all(&pids))
        })
    };
    let stop_progress = stats::spawn_progress(label, rec.clone(), warmup, duration);
    let (wl, batch) = (args.workload, args.batch);
    let result = tally::drive(
        addr,
        &secret,
        args.clients,
        |seed| tally::OpGen::new(wl, variant, accounts, batch, seed),
        rec.clone(),
        deadline,
    )
    .await;
    stop_progress();
    result?;
    let (sizes0, scpu0, ccpu0, threads0) = before.await?;
    let sizes1 = data_dir.as_deref().map(|d| (server::log_bytes(d), server::dir_bytes(d)));
    let (scpu1, ccpu1) = (server_cpu(), self_cpu());
    let threads1 = server::ThreadCpu::read_all(&server_pids);
    let mut report = rec.finish(head(args, "tally", vname, accounts), duration.as_secs_f64());
    let (log, store) = match (sizes0, sizes1) {
        (Some((l0, d0)), Some((l1, d1))) => (Some(l1 - l0), Some((d1 - l1) as i64 - (d0 - l0) as i64)),
        _ => (None, None),
    };
    let writes = args.workload != Workload::Read;
    report.set_storage(load_s, after_load, log.filter(|_| writes), store.filter(|_| writes));
    report.storage.load_curve = load_curve;
    report.storage.load_server_cpu_us_per_doc = load_cpu_us.map(|c| c.0);
    report.storage.load_executor_cpu_us_per_doc = load_cpu_us.map(|c| c.1);
    if let (Some(s0), Some(s1), Some(c0), Some(c1)) = (scpu0, scpu1, ccpu0, ccpu1) {
        report.set_cpu(s1 - s0, c1 - c0);
        if let (Some(t0), Some(t1)) = (&threads0, &threads1) {
            report.set_server_threads(t0, t1);
        }
    }
    if let Some(mut s) = server {
        s.stop();
    }
    Ok(report)
}

async fn run_postgres(args: &BenchArgs, conn: &str, iso: pg::Isolation, accounts: u64) -> anyhow::Result<Report> {
    let label = format!("postgres transfer {accounts} ({})", iso.name());
    eprintln!("{label}: loading {accounts} accounts");
    let (load_s, table_bytes) = pg::load(conn, accounts).await?;
    let rec = Arc::new(Recorder::default());
    let warmup = Duration::from_secs(args.warmup);
    let duration = Duration::from_secs(args.duration);
    let deadline = Instant::now() + warmup + duration;
    let postmaster = pg::postmaster_pid(conn).await;
    let before = {
        let rec = rec.clone();
        let conn = conn.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            rec.start_measuring(duration);
            (pg::sizes(&conn).await.ok(), self_cpu(), postmaster.and_then(server::tree_cpu_seconds))
        })
    };
    let stop_progress = stats::spawn_progress(label, rec.clone(), warmup, duration);
    let result = pg::drive(conn, iso, accounts, args.clients, args.batch, rec.clone(), deadline).await;
    stop_progress();
    result?;
    let (s0, c0, pg0) = before.await?;
    // Before the sizes query below opens a backend of its own.
    let pg1 = postmaster.and_then(server::tree_cpu_seconds);
    let s1 = pg::sizes(conn).await.ok();
    let mut report = rec.finish(head(args, "postgres", iso.name(), accounts), duration.as_secs_f64());
    let (log, store) = match (s0, s1) {
        (Some((w0, d0)), Some((w1, d1))) => (Some(w1 - w0), Some(d1 - d0)),
        _ => (None, None),
    };
    report.set_storage(load_s, Some(table_bytes), log, store);
    match (c0, self_cpu(), pg0.zip(pg1)) {
        (Some(c0), Some(c1), Some((p0, p1))) => report.set_cpu(p1 - p0, c1 - c0),
        (Some(c0), Some(c1), None) => report.set_client_cpu(c1 - c0),
        _ => {}
    }
    Ok(report)
}
