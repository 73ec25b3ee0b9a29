//! `tally bench-resources disk`: disk use of a node over a long run of transfers.
//!
//! Starts `tally serve` with `--log-retain` (default `checkpoint`) and the segment size
//! asked for, loads the accounts, then drives the transfer workload (`--batch` transfers
//! per request, as TigerBeetle clients batch) until `--transfers` are done, printing every
//! `--sample-seconds` the transfers so far, their rate, and the bytes on disk of the input
//! log (and its segment count) and of the state store. At the end: the largest the log
//! got, and the state's bytes per transfer (it keeps every transfer document, so it grows
//! with the data; `--history-days 0` lets retention sweep superseded account versions).
//!
//! Prints figures and asserts nothing about them.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::client::Conn;
use crate::resources::ResourceArgs;
use crate::server::{dir_bytes, Server};
use crate::tally::{LoadPlan, OpGen};
use crate::{fql, Variant, Workload};

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// (log bytes, log segments, state bytes) of a data directory.
fn disk(dir: &Path) -> (u64, usize, u64) {
    let log = dir.join("log");
    let segments = std::fs::read_dir(&log)
        .map(|rd| rd.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".seg")).count())
        .unwrap_or(0);
    let state = std::fs::metadata(dir.join("state.redb")).map(|m| m.len()).unwrap_or(0);
    (dir_bytes(&log), segments, state)
}

pub async fn run(args: &ResourceArgs, bin: &Path, dir: &Path, root: &str) -> anyhow::Result<()> {
    let extra = vec![
        "--log-retain".to_string(),
        args.log_retain.clone(),
        "--log-segment-mib".to_string(),
        args.log_segment_mib.to_string(),
    ];
    let mut server = Server::spawn_with(bin, dir, root, None, false, None, &extra)?;
    crate::client::wait_ready(server.addr, 300).await.context("tally serve did not come up")?;
    let secret = crate::tally::create_app(server.addr, root, "disk").await?;
    let loaded = Arc::new(AtomicU64::new(0));
    let plan = LoadPlan { per_request: crate::tally::LOAD_PER_REQUEST, in_flight: crate::tally::LOAD_IN_FLIGHT };
    crate::tally::load(server.addr, &secret, Workload::Transfer, Variant::Fql, args.accounts, plan, loaded).await?;
    if let Some(days) = args.history_days {
        let mut c = Conn::connect(server.addr, &secret).await?;
        for coll in [fql::ACCOUNTS, fql::TRANSFERS] {
            let q = json!({"update": {"collection": coll}, "params": {"object": {"history_days": days}}});
            c.query_json(&q).await?.resource().context("setting history_days")?;
        }
    }
    let (log0, _, state0) = disk(dir);
    println!(
        "disk run: {} transfers, {} per request, {} clients, {} accounts, --log-retain {} --log-segment-mib {}{}",
        args.transfers,
        args.batch,
        args.clients,
        args.accounts,
        args.log_retain,
        args.log_segment_mib,
        args.history_days.map(|d| format!(", history_days {d}")).unwrap_or_default()
    );
    println!("after loading: log {:.1} MiB, state {:.1} MiB", mib(log0), mib(state0));
    println!(
        "{:>8} {:>12} {:>10} {:>10} {:>9} {:>11} {:>11}",
        "s", "transfers", "per s", "log MiB", "segments", "state MiB", "total MiB"
    );

    let done = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let batch = args.batch.max(1);
    let requests = args.transfers.div_ceil(batch as u64);
    let mut tasks = Vec::new();
    for k in 0..args.clients {
        let (done, next, secret, addr) = (done.clone(), next.clone(), secret.clone(), server.addr);
        let accounts = args.accounts;
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::connect(addr, &secret).await?;
            let mut gen = OpGen::new(Workload::Transfer, Variant::Fql, accounts, batch, 0x5eed + k as u64);
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                let op = gen.next_op();
                let (r, _) = crate::tally::send(&mut c, op.body).await?;
                r.resource().context("a transfer request")?;
                done.fetch_add(op.transfers, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    let t0 = Instant::now();
    let mut log_max = 0u64;
    let mut segments_max = 0usize;
    let mut next_sample = args.sample_seconds.max(1);
    let sample = |t0: Instant, done: u64, log_max: &mut u64, segments_max: &mut usize| {
        let (log, segs, state) = disk(dir);
        *log_max = (*log_max).max(log);
        *segments_max = (*segments_max).max(segs);
        let s = t0.elapsed().as_secs_f64();
        println!(
            "{s:>8.0} {done:>12} {:>10.0} {:>10.1} {segs:>9} {:>11.1} {:>11.1}",
            done as f64 / s.max(1e-9),
            mib(log),
            mib(state),
            mib(log + state)
        );
        (log, state)
    };
    while !tasks.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        // The largest the log gets falls between two printed lines (just before a retirement).
        let (log, segs, _) = disk(dir);
        log_max = log_max.max(log);
        segments_max = segments_max.max(segs);
        if t0.elapsed().as_secs() >= next_sample {
            sample(t0, done.load(Ordering::Relaxed), &mut log_max, &mut segments_max);
            next_sample += args.sample_seconds.max(1);
        }
    }
    for t in tasks {
        t.await.context("transfer client")??;
    }
    // Let the last checkpoint and retirement happen, then the final figures.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let total = done.load(Ordering::Relaxed);
    let (log, state) = sample(t0, total, &mut log_max, &mut segments_max);
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "summary: {total} transfers in {secs:.0} s ({:.0}/s); input log at most {:.1} MiB in at most {segments_max} \
         segments, {:.1} MiB at the end; state {:.1} MiB at the end, {:.0} bytes per transfer over the run",
        total as f64 / secs.max(1e-9),
        mib(log_max),
        mib(log),
        mib(state),
        state.saturating_sub(state0) as f64 / (total.max(1)) as f64
    );
    server.stop();
    let (log, _, state) = disk(dir);
    println!(
        "after a graceful stop: input log {:.1} MiB, state {:.1} MiB ({:.0} bytes per transfer; while running, redb's \
         file grows ahead of its content in doubling steps)",
        mib(log),
        mib(state),
        state.saturating_sub(state0) as f64 / (total.max(1)) as f64
    );
    Ok(())
}
