//! `tally bench-resources`: figures for the resource bounds of issue 13 that a test must
//! not time, each from a real `tally serve` started here.
//!
//! - `replay`: a flood of small write transactions, `kill -9`, then a restart timed to
//!   the first `/ping` answer, with the server's resident memory sampled while it
//!   replays its input log. Afterwards every acknowledged write is counted back.
//! - `memory`: a burst of big read answers, then the server's resident memory sampled
//!   while it idles, to show what it gives back.
//!
//! It prints figures and asserts nothing about them (they depend on the machine).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use serde_json::{json, Value};

use crate::client::{Conn, Endpoint};
use crate::server::{rss_bytes, Server};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Write flood, kill -9, time the restart (replay) to ready and its memory.
    Replay,
    /// Burst of big answers, then how much memory the idle server gives back.
    Memory,
    /// A long run of transfers with `--log-retain`: disk use of the input log and the
    /// state over time.
    Disk,
}

/// `tally bench-resources` options.
#[derive(clap::Args, Clone, Debug)]
pub struct ResourceArgs {
    /// replay or memory.
    #[arg(value_enum)]
    pub mode: Mode,
    /// replay: write transactions in the flood (one small `Create` each).
    #[arg(long, default_value_t = 200_000)]
    pub transactions: u64,
    /// replay: stop the flood after this many seconds even if fewer were written.
    #[arg(long, default_value_t = 300)]
    pub flood_seconds_max: u64,
    /// Concurrent clients, each on its own keep-alive connection.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// replay: after the kill, move the state store aside so the restart replays the
    /// whole input log (the longest tail there can be: a node rebuilding its state).
    #[arg(long)]
    pub from_genesis: bool,
    /// memory: big queries in the burst.
    #[arg(long, default_value_t = 64)]
    pub queries: usize,
    /// memory: size of each big answer in MiB (a string of this many bytes).
    #[arg(long, default_value_t = 16)]
    pub answer_mib: u64,
    /// disk: transfers to run.
    #[arg(long, default_value_t = 1_000_000)]
    pub transfers: u64,
    /// disk: accounts the transfers move money between.
    #[arg(long, default_value_t = 10_000)]
    pub accounts: u64,
    /// disk: transfers per request.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// disk: seconds between two lines of figures.
    #[arg(long, default_value_t = 30)]
    pub sample_seconds: u64,
    /// disk: the server's `--log-retain`.
    #[arg(long, default_value = "checkpoint")]
    pub log_retain: String,
    /// disk: the server's `--log-segment-mib`.
    #[arg(long, default_value_t = 64)]
    pub log_segment_mib: u64,
    /// disk: set the accounts' and transfers' `history_days` (retention sweeps the
    /// superseded versions older than that).
    #[arg(long)]
    pub history_days: Option<u64>,
    /// Where the server keeps its data (default: a temporary directory, removed after).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The tally binary to start (default: this one).
    #[arg(long, hide = true)]
    pub tally_bin: Option<PathBuf>,
}

pub fn main(args: ResourceArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.transactions == 0 || args.queries == 0 || args.answer_mib == 0 {
        bail!("--clients, --transactions, --queries and --answer-mib must be positive");
    }
    let tmp = tempfile::Builder::new().prefix("tally-resources-").tempdir()?;
    let base = args.data_dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let bin = match &args.tally_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("locating the tally binary")?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let dir = base.join(match args.mode {
        Mode::Replay => "replay",
        Mode::Memory => "memory",
        Mode::Disk => "disk",
    });
    crate::tally::fresh_dir(&dir)?;
    let root_key = format!("bench-root-{:016x}", rand::random::<u64>());
    match args.mode {
        Mode::Replay => rt.block_on(replay(&args, &bin, &dir, &root_key)),
        Mode::Memory => rt.block_on(memory(&args, &bin, &dir, &root_key)),
        Mode::Disk => rt.block_on(crate::disk::run(&args, &bin, &dir, &root_key)),
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

const EVENTS: &str = "flood_events";

async fn replay(args: &ResourceArgs, bin: &std::path::Path, dir: &std::path::Path, root: &str) -> anyhow::Result<()> {
    let mut server = Server::start(bin, dir, root, None, false).await?;
    let secret = crate::tally::create_app(server.addr, root, "flood").await?;
    let mut c = Conn::connect(server.addr, &secret).await?;
    c.query_json(&json!({"create_collection": {"object": {"name": EVENTS}}})).await?.resource()?;

    eprintln!("flooding {} write transactions from {} clients ...", args.transactions, args.clients);
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(args.flood_seconds_max);
    let acked = flood(server.addr, &secret, args.transactions, args.clients, deadline).await?;
    let flood_s = t0.elapsed().as_secs_f64();
    let log_bytes = crate::server::log_bytes(dir);
    let (rss_flood, hwm_flood) = rss_bytes(server.pid()).unwrap_or_default();
    println!(
        "flood: {acked} write transactions acknowledged in {flood_s:.1} s ({:.0}/s); input log {:.1} MiB; \
         server RSS {:.0} MiB (peak {:.0} MiB)",
        acked as f64 / flood_s.max(1e-9),
        mib(log_bytes),
        mib(rss_flood),
        mib(hwm_flood)
    );

    server.kill9();
    println!("kill -9 right after the last acknowledgement");
    if args.from_genesis {
        let state = dir.join("state.redb");
        std::fs::rename(&state, dir.join("state.redb.moved")).with_context(|| format!("moving {}", state.display()))?;
        println!("state store moved aside: the restart replays the whole input log");
    }
    let mut server = Server::spawn(bin, dir, root, None, false, None)?;
    let (ready, peak_sampled) = wait_ready_sampling(&mut server, Duration::from_secs(600)).await?;
    let (rss_ready, hwm) = rss_bytes(server.pid()).unwrap_or_default();
    println!(
        "restart: ready (first /ping answered) {:.2} s after start; RSS at ready {:.0} MiB, peak RSS during \
         start and replay {:.0} MiB (VmHWM; {:.0} MiB sampled every 10 ms)",
        ready.as_secs_f64(),
        mib(rss_ready),
        mib(hwm),
        mib(peak_sampled)
    );
    let said = std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default();
    if let Some(line) = said.lines().rev().find(|l| l.starts_with("tally replayed")) {
        println!("server: {line}");
    } else {
        println!("server: nothing to replay (its state was checkpointed up to the log's end)");
    }

    let mut c = Conn::connect(server.addr, &secret).await?;
    let count = c
        .query_json(&json!({"count": {"documents": {"collection": EVENTS}}}))
        .await?
        .resource()
        .context("counting the flood's documents")?;
    let count = count.as_u64().context("Count answered no number")?;
    println!(
        "after restart: {count} documents; {acked} writes were acknowledged ({})",
        if count >= acked { "none lost" } else { "SOME LOST" }
    );
    server.stop();
    if count < acked {
        bail!("{} acknowledged writes are missing after the restart", acked - count);
    }
    Ok(())
}

/// `n` single-`Create` transactions from `clients` connections; returns how many were
/// acknowledged (all of them unless `deadline` passed first).
async fn flood(addr: Endpoint, secret: &str, n: u64, clients: usize, deadline: Instant) -> anyhow::Result<u64> {
    let next = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let progress = {
        let acked = acked.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let a = acked.load(Ordering::Relaxed);
                eprintln!("  {a} acknowledged after {:.0} s", t0.elapsed().as_secs_f64());
            }
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (next, acked, secret) = (next.clone(), acked.clone(), secret.to_string());
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::connect(addr, &secret).await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || Instant::now() >= deadline {
                    return anyhow::Ok(());
                }
                let q = json!({
                    "create": {"collection": EVENTS},
                    "params": {"object": {"data": {"object": {"n": i, "note": "a small event"}}}}
                });
                let (r, _) = crate::tally::send(&mut c, Bytes::from(serde_json::to_vec(&q)?)).await?;
                r.resource().context("a flood write")?;
                acked.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut result = Ok(());
    for t in tasks {
        if let Err(e) = t.await.context("flood client").and_then(|r| r) {
            result = Err(e);
        }
    }
    progress.abort();
    result?;
    Ok(acked.load(Ordering::Relaxed))
}

/// Poll `/ping` every 10 ms until it answers, sampling the server's RSS; returns the
/// time to ready and the largest RSS sampled.
async fn wait_ready_sampling(server: &mut Server, max: Duration) -> anyhow::Result<(Duration, u64)> {
    let t0 = Instant::now();
    let mut peak = 0;
    while t0.elapsed() < max {
        if !server.running() {
            bail!("the server exited during its start; see {}", server.data_dir.with_extension("log").display());
        }
        if let Some((rss, _)) = rss_bytes(server.pid()) {
            peak = peak.max(rss);
        }
        if ping(server.addr).await {
            return Ok((t0.elapsed(), peak));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("the server did not answer /ping within {} s", max.as_secs())
}

async fn ping(addr: Endpoint) -> bool {
    let once = async {
        let mut c = Conn::connect(addr, "").await.ok()?;
        let r = c.get("/ping?scope=node").await.ok()?;
        Some(r.status == 200)
    };
    matches!(tokio::time::timeout(Duration::from_millis(500), once).await, Ok(Some(true)))
}

async fn memory(args: &ResourceArgs, bin: &std::path::Path, dir: &std::path::Path, root: &str) -> anyhow::Result<()> {
    let server = Server::start(bin, dir, root, None, false).await?;
    let pid = server.pid();
    let rss = || rss_bytes(pid).map(|r| r.0).unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss();
    // A string of `answer_mib` MiB, built by the query (the body is a few bytes).
    let len = args.answer_mib << 20;
    let q: Value = json!({"repeat": "ab", "number": len / 2});
    let body = Bytes::from(serde_json::to_vec(&q)?);
    eprintln!("burst: {} queries answering {} MiB each, {} at a time ...", args.queries, args.answer_mib, args.clients);
    let next = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_bytes(pid).map(|r| r.0).unwrap_or_default(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.clients.min(args.queries) {
        let (next, body, root, addr, n) = (next.clone(), body.clone(), root.to_string(), server.addr, args.queries);
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::connect(addr, &root).await?;
            let mut answered = 0u64;
            while next.fetch_add(1, Ordering::Relaxed) < n as u64 {
                let (r, _) = crate::tally::send(&mut c, body.clone()).await?;
                let s = r.resource()?;
                anyhow::ensure!(s.as_str().map(str::len) == Some(len as usize), "a short answer");
                answered += 1;
            }
            anyhow::Ok(answered)
        }));
    }
    let mut answered = 0;
    for t in tasks {
        answered += t.await.context("burst client")??;
    }
    let burst_s = t0.elapsed().as_secs_f64();
    sampler.abort();
    let peak = peak.load(Ordering::Relaxed).max(rss());
    println!(
        "burst: {answered} answers of {} MiB in {burst_s:.1} s; RSS idle before {:.0} MiB, peak during {:.0} MiB",
        args.answer_mib,
        mib(idle),
        mib(peak)
    );
    let t1 = Instant::now();
    let mut line = String::from("after the burst, RSS:");
    for at in [0u64, 1, 2, 5, 10] {
        let wait = Duration::from_secs(at).saturating_sub(t1.elapsed());
        tokio::time::sleep(wait).await;
        line += &format!(" {:.0} MiB at +{at} s,", mib(rss()));
    }
    line.pop();
    println!("{line}");
    Ok(())
}
