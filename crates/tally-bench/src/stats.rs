//! Recording a run: latency histograms (overall and per second), outcome counters, the
//! progress line on stderr, and the [`Report`] that is printed as a table and as JSON.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, up to ten minutes.
const LATENCY_US_MAX: u64 = 600_000_000;

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Committed (or, for reads, answered).
    Ok,
    /// The application's own check failed (insufficient funds): a business abort.
    Insufficient,
    /// Any other failure; the request is not retried.
    Error,
}

/// Shared by every client of one run. One uncontended lock per request is far below the
/// cost of the request itself.
pub struct Recorder {
    inner: Mutex<Inner>,
    /// Live counters for the progress line.
    pub live_transfers: AtomicU64,
    pub live_retries: AtomicU64,
    pub measuring: AtomicBool,
}

struct Inner {
    start: Option<Instant>,
    end: Option<Instant>,
    latency: Histogram<u64>,
    /// One histogram and transfer count per second of the measured phase.
    timeline: Vec<(u64, Histogram<u64>)>,
    requests: u64,
    transfers: u64,
    insufficient: u64,
    errors: u64,
    /// Conflict aborts (serialization failures, deadlocks); each was retried.
    aborts: u64,
    retries: u64,
    /// Transactions still conflicting when the run ended.
    abandoned: u64,
    outcomes: BTreeMap<String, u64>,
    first_error: Option<String>,
}

fn hist(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, sigfig).expect("static histogram bounds are valid")
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            inner: Mutex::new(Inner {
                start: None,
                end: None,
                latency: hist(3),
                timeline: Vec::new(),
                requests: 0,
                transfers: 0,
                insufficient: 0,
                errors: 0,
                aborts: 0,
                retries: 0,
                abandoned: 0,
                outcomes: BTreeMap::new(),
                first_error: None,
            }),
            live_transfers: AtomicU64::new(0),
            live_retries: AtomicU64::new(0),
            measuring: AtomicBool::new(false),
        }
    }
}

impl Recorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open the measured window `[now, now + duration)`.
    pub fn start_measuring(&self, duration: Duration) {
        let now = Instant::now();
        let mut g = self.lock();
        g.start = Some(now);
        g.end = Some(now + duration);
        self.measuring.store(true, Ordering::Release);
    }

    /// Record one request that started at `began` and carried `transfers` transfers.
    /// Requests that finish outside the measured window are not counted.
    pub fn record(&self, began: Instant, transfers: u64, outcome: Outcome, aborts: u64, retries: u64) {
        let done = Instant::now();
        let mut g = self.lock();
        let (Some(start), Some(end)) = (g.start, g.end) else { return };
        if began < start || done > end {
            return;
        }
        let us = (done - began).as_micros().clamp(1, LATENCY_US_MAX as u128) as u64;
        let _ = g.latency.record(us);
        let sec = (done - start).as_secs() as usize;
        while g.timeline.len() <= sec {
            g.timeline.push((0, hist(2)));
        }
        let ok_transfers = if outcome == Outcome::Ok { transfers } else { 0 };
        g.timeline[sec].0 += ok_transfers;
        let _ = g.timeline[sec].1.record(us);
        g.requests += 1;
        g.transfers += ok_transfers;
        g.aborts += aborts;
        g.retries += retries;
        match outcome {
            Outcome::Ok => {}
            Outcome::Insufficient => g.insufficient += 1,
            Outcome::Error => g.errors += 1,
        }
        drop(g);
        self.live_transfers.fetch_add(ok_transfers, Ordering::Relaxed);
        self.live_retries.fetch_add(retries, Ordering::Relaxed);
    }

    /// Conflicts of a transaction still retrying when the window closed: they count as
    /// aborts and retries (a batch that never commits must not look conflict-free).
    pub fn abandoned(&self, conflicts: u64) {
        let mut g = self.lock();
        if g.start.is_some_and(|s| Instant::now() >= s) {
            g.aborts += conflicts;
            g.retries += conflicts;
            g.abandoned += 1;
        }
    }

    /// Count a workload-specific result (e.g. the purchase's answer string).
    pub fn outcome(&self, name: &str) {
        let mut g = self.lock();
        if g.start.is_some_and(|s| Instant::now() >= s) && g.end.is_some_and(|e| Instant::now() <= e) {
            *g.outcomes.entry(name.to_string()).or_default() += 1;
        }
    }

    /// Count business aborts inside a batch (items answered "insufficient funds").
    pub fn insufficient_items(&self, n: u64) {
        if n > 0 {
            self.lock().insufficient += n;
        }
    }

    pub fn note_error(&self, msg: String) {
        let mut g = self.lock();
        if g.first_error.is_none() {
            g.first_error = Some(msg);
        }
    }

    /// The measured figures; `secs` is the measured window's length.
    pub fn finish(&self, head: ReportHead, secs: f64) -> Report {
        let g = self.lock();
        let q = |p: f64| g.latency.value_at_quantile(p) as f64 / 1000.0;
        let timeline = g
            .timeline
            .iter()
            .enumerate()
            .map(|(i, (n, h))| Second {
                t: i as u64,
                transfers_per_s: *n,
                p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
                p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
            })
            .collect();
        Report {
            head,
            duration_s: secs,
            requests: g.requests,
            transfers: g.transfers,
            transfers_per_s: g.transfers as f64 / secs.max(1e-9),
            latency_ms: Latency {
                p50: q(0.5),
                p99: q(0.99),
                p999: q(0.999),
                max: g.latency.max() as f64 / 1000.0,
                mean: g.latency.mean() / 1000.0,
            },
            aborts: g.aborts,
            retries: g.retries,
            abandoned: g.abandoned,
            insufficient: g.insufficient,
            errors: g.errors,
            first_error: g.first_error.clone(),
            outcomes: g.outcomes.clone(),
            storage: Storage::default(),
            cpu: None,
            timeline,
        }
    }
}

/// What was run.
#[derive(Clone, Debug, Serialize)]
pub struct ReportHead {
    /// "tally" or "postgres".
    pub system: String,
    pub workload: String,
    /// "fql" or "udf" (Tally); "ser" or "rc-fu" (PostgreSQL SERIALIZABLE, or READ COMMITTED with `SELECT … FOR UPDATE`).
    pub variant: String,
    pub accounts: u64,
    pub clients: usize,
    /// Transfers per request.
    pub batch: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Storage {
    /// Seconds spent creating the accounts.
    pub load_s: f64,
    /// Size of the data after loading, divided by the accounts.
    pub bytes_per_account: Option<f64>,
    /// Growth of the durable log (Tally's input log, PostgreSQL's WAL) during the run.
    pub log_bytes: Option<u64>,
    /// Growth of the state store (redb file, PostgreSQL's database) during the run.
    pub store_bytes: Option<i64>,
    /// (log + store growth) / committed transfers.
    pub bytes_per_transfer: Option<f64>,
    pub log_bytes_per_transfer: Option<f64>,
    /// Server CPU (all threads) per document created while loading, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_server_cpu_us_per_doc: Option<f64>,
    /// CPU of the server's executor thread per document created while loading, in
    /// microseconds: the serial part, so 1e6 / this bounds the load rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_executor_cpu_us_per_doc: Option<f64>,
    /// How loading went, sampled every [`LOAD_SAMPLE`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub load_curve: Vec<LoadPoint>,
}

/// One sample of the load phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadPoint {
    /// Seconds since loading began.
    pub t_s: f64,
    /// Documents created so far.
    pub docs: u64,
    /// Documents per second since the previous sample.
    pub docs_per_s: f64,
    /// Size of the server's data directory (0 when driving a server given by `--endpoint`).
    pub data_bytes: u64,
}

/// How often the load phase is sampled (and a progress line printed).
pub const LOAD_SAMPLE: Duration = Duration::from_secs(10);

/// Sample the load every [`LOAD_SAMPLE`] and print a line; the returned closure stops the
/// sampler and hands back the curve, with a last sample taken at that moment.
pub fn spawn_load_progress(
    label: String,
    loaded: Arc<AtomicU64>,
    total: u64,
    data_dir: Option<std::path::PathBuf>,
) -> impl FnOnce() -> Vec<LoadPoint> {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let handle = std::thread::spawn(move || {
        let began = Instant::now();
        let mut curve: Vec<LoadPoint> = Vec::new();
        let mut next = began + LOAD_SAMPLE;
        loop {
            let stopping = stop2.load(Ordering::Acquire);
            if !stopping && Instant::now() < next {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            next += LOAD_SAMPLE;
            let t_s = began.elapsed().as_secs_f64();
            let docs = loaded.load(Ordering::Relaxed);
            let (t0, d0) = curve.last().map_or((0.0, 0), |p| (p.t_s, p.docs));
            let docs_per_s = (docs - d0) as f64 / (t_s - t0).max(1e-9);
            let data_bytes = data_dir.as_deref().map_or(0, crate::server::dir_bytes);
            eprintln!(
                "{label}: loaded {docs}/{total} in {t_s:.0} s, {docs_per_s:.0}/s now, data {:.1} MB ({:.0} B/doc)",
                data_bytes as f64 / 1e6,
                data_bytes as f64 / docs.max(1) as f64
            );
            curve.push(LoadPoint { t_s, docs, docs_per_s, data_bytes });
            if stopping {
                return curve;
            }
        }
    });
    move || {
        stop.store(true, Ordering::Release);
        handle.join().unwrap_or_default()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Second {
    pub t: u64,
    pub transfers_per_s: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub head: ReportHead,
    pub duration_s: f64,
    pub requests: u64,
    /// Committed transfers (or purchases, or reads).
    pub transfers: u64,
    pub transfers_per_s: f64,
    /// Per request, including retries.
    pub latency_ms: Latency,
    /// Conflict aborts (serialization failure, deadlock); every one was retried.
    pub aborts: u64,
    /// Retried attempts (conflicts, or Tally answering "unavailable" when its queue is full).
    pub retries: u64,
    /// Transactions (requests) still retrying conflicts when the run ended.
    pub abandoned: u64,
    /// Transfers the application itself refused (insufficient funds).
    pub insufficient: u64,
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub outcomes: BTreeMap<String, u64>,
    pub storage: Storage,
    /// CPU time per committed transfer during the measured window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    pub timeline: Vec<Second>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Cpu {
    /// The server process (user + system); 0 when not measured (PostgreSQL).
    pub server_us_per_transfer: f64,
    /// This load generator.
    pub client_us_per_transfer: f64,
    /// The server's CPU per transfer by what its threads do (`server::thread_role`:
    /// http, executor, flusher, log, leaf index, long queries, other), adding up to
    /// `server_us_per_transfer`; empty when not measured.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub server_threads_us_per_transfer: BTreeMap<String, f64>,
}

impl Cpu {
    /// The server's CPU by thread role, largest first: `http 31, executor 22, …` (parts
    /// under half a microsecond left out).
    pub fn threads_line(&self) -> String {
        let mut parts: Vec<(&String, &f64)> = self.server_threads_us_per_transfer.iter().collect();
        parts.sort_by(|a, b| b.1.total_cmp(a.1).then_with(|| a.0.cmp(b.0)));
        // Parts under half a microsecond would print as 0.
        parts.iter().filter(|(_, us)| **us >= 0.5).map(|(r, us)| format!("{r} {us:.0}")).collect::<Vec<_>>().join(", ")
    }
}

impl Report {
    pub fn set_storage(&mut self, load_s: f64, data_after_load: Option<u64>, log: Option<u64>, store: Option<i64>) {
        let s = &mut self.storage;
        s.load_s = load_s;
        s.bytes_per_account = data_after_load.map(|b| b as f64 / self.head.accounts.max(1) as f64);
        s.log_bytes = log;
        s.store_bytes = store;
        if self.transfers > 0 && (log.is_some() || store.is_some()) {
            let total = log.unwrap_or(0) as f64 + store.unwrap_or(0) as f64;
            s.bytes_per_transfer = Some(total / self.transfers as f64);
            s.log_bytes_per_transfer = log.map(|l| l as f64 / self.transfers as f64);
        }
    }
}

impl Report {
    pub fn set_cpu(&mut self, server_s: f64, client_s: f64) {
        let n = self.transfers.max(1) as f64;
        self.cpu = Some(Cpu {
            server_us_per_transfer: server_s * 1e6 / n,
            client_us_per_transfer: client_s * 1e6 / n,
            server_threads_us_per_transfer: BTreeMap::new(),
        });
    }

    /// The server's CPU by thread role between two readings (after [`Report::set_cpu`]).
    pub fn set_server_threads(&mut self, before: &crate::server::ThreadCpu, after: &crate::server::ThreadCpu) {
        let n = self.transfers;
        if let Some(cpu) = self.cpu.as_mut() {
            cpu.server_threads_us_per_transfer = before.per_op(after, n).into_iter().collect();
        }
    }

    pub fn set_client_cpu(&mut self, client_s: f64) {
        self.set_cpu(0.0, client_s);
    }
}

/// The progress line: rewritten in place on a terminal, one line every 5 s otherwise.
pub fn spawn_progress(label: String, rec: Arc<Recorder>, warmup: Duration, duration: Duration) -> impl FnOnce() {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let handle = std::thread::spawn(move || {
        let tty = std::io::stderr().is_terminal();
        let began = Instant::now();
        let total = warmup + duration;
        let mut last = 0u64;
        let mut tick = 0u64;
        while !stop2.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(250));
            tick += 1;
            if tick % 4 != 0 {
                continue;
            }
            let now = rec.live_transfers.load(Ordering::Relaxed);
            let rate = now - last;
            last = now;
            let el = began.elapsed().min(total);
            let frac = el.as_secs_f64() / total.as_secs_f64().max(1e-9);
            let filled = (frac * 24.0) as usize;
            let bar: String = "#".repeat(filled) + &".".repeat(24 - filled.min(24));
            let phase = if rec.measuring.load(Ordering::Acquire) { "run" } else { "warmup" };
            let line = format!(
                "{label} [{bar}] {:>3}/{}s {phase} {rate:>8}/s total {now} retries {}",
                el.as_secs(),
                total.as_secs(),
                rec.live_retries.load(Ordering::Relaxed)
            );
            let mut e = std::io::stderr().lock();
            if tty {
                let _ = write!(e, "\r\x1b[2K{line}");
            } else if tick % 20 == 0 {
                let _ = writeln!(e, "{line}");
            }
        }
        if tty {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    });
    move || {
        stop.store(true, Ordering::Release);
        let _ = handle.join();
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |b| format!("{b:.0}"))
}

/// The results as a table, then each Tally run against the PostgreSQL run of the same
/// shape with the ratio of their throughputs.
pub fn table(reports: &[Report]) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{:<9} {:<9} {:<5} {:>9} {:>7} {:>5} {:>11} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>7} {:>8}\n",
        "system",
        "workload",
        "via",
        "accounts",
        "clients",
        "batch",
        "transfers/s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "aborts",
        "retries",
        "errors",
        "B/xfer",
        "B/acct"
    ));
    for r in reports {
        s.push_str(&format!(
            "{:<9} {:<9} {:<5} {:>9} {:>7} {:>5} {:>11.0} {:>8.2} {:>8.2} {:>8.2} {:>8} {:>8} {:>6} {:>7} {:>8}\n",
            r.head.system,
            r.head.workload,
            r.head.variant,
            r.head.accounts,
            r.head.clients,
            r.head.batch,
            r.transfers_per_s,
            r.latency_ms.p50,
            r.latency_ms.p99,
            r.latency_ms.p999,
            r.aborts,
            r.retries,
            r.errors,
            fmt_opt(r.storage.bytes_per_transfer),
            fmt_opt(r.storage.bytes_per_account),
        ));
    }
    let cmp: String = reports.iter().filter(|r| r.head.system == "tally").map(|t| compare(t, reports)).collect();
    if !cmp.is_empty() {
        s.push_str("\nTally / PostgreSQL, same clients and account skew (best = PostgreSQL's faster mode):\n");
        s.push_str(&cmp);
    }
    for r in reports.iter().filter(|r| r.abandoned > 0) {
        s.push_str(&format!(
            "\n{} ({}, {} accounts, batch {}): {} transactions were still retrying conflicts when the run ended",
            r.head.system, r.head.variant, r.head.accounts, r.head.batch, r.abandoned
        ));
    }
    for r in reports.iter().filter(|r| r.errors > 0 || !r.outcomes.is_empty()) {
        if let Some(e) = &r.first_error {
            s.push_str(&format!(
                "\n{} {} ({} accounts): first error: {e}",
                r.head.system, r.head.workload, r.head.accounts
            ));
        }
        if !r.outcomes.is_empty() {
            s.push_str(&format!("\n{} {} outcomes: {:?}", r.head.system, r.head.workload, r.outcomes));
        }
    }
    s
}

/// Tally's run `t` against every PostgreSQL run with the same accounts, clients and
/// batch, one line each, then the ratio to the best of them.
fn compare(t: &Report, reports: &[Report]) -> String {
    let same = |p: &&Report| {
        p.head.system == "postgres"
            && p.head.accounts == t.head.accounts
            && p.head.clients == t.head.clients
            && p.head.batch == t.head.batch
    };
    let pgs: Vec<&Report> = reports.iter().filter(same).collect();
    let ratio = |p: &Report| {
        if p.transfers_per_s > 0.0 {
            format!("{:.2}x", t.transfers_per_s / p.transfers_per_s)
        } else {
            "n/a (postgres committed none)".into()
        }
    };
    let mut out = String::new();
    for p in &pgs {
        out.push_str(&format!(
            "  {:>9} accounts, {} clients, batch {}: tally ({}) {:.0}/s vs postgres ({}) {:.0}/s = {}; \
             p99 {:.1} ms vs {:.1} ms; aborts {} vs {}\n",
            t.head.accounts,
            t.head.clients,
            t.head.batch,
            t.head.variant,
            t.transfers_per_s,
            p.head.variant,
            p.transfers_per_s,
            ratio(p),
            t.latency_ms.p99,
            p.latency_ms.p99,
            t.aborts,
            p.aborts
        ));
    }
    let best = pgs.iter().max_by(|a, b| a.transfers_per_s.total_cmp(&b.transfers_per_s));
    if let (Some(best), true) = (best, pgs.len() > 1) {
        out.push_str(&format!(
            "  {:>9} accounts, {} clients, batch {}: tally / best postgres ({}) = {}\n",
            t.head.accounts,
            t.head.clients,
            t.head.batch,
            best.head.variant,
            ratio(best)
        ));
    }
    out
}
