//! `tally bench ledger`: what the transparency log costs per transaction, measured in
//! this process on the very code the executor runs for it (`tally_ledger::writer`,
//! `tally_ledger::sth`) over a real redb state store.
//!
//! The same synthetic blocks are applied twice, each time to a fresh store: once as the
//! executor would without the log (each transaction's versions stored, each effect leaf
//! hashed for the block's effects root, one commit per block), once with it (the same,
//! plus the leaf, the leaf record, the subtree hashes and hash lookup entry per
//! transaction, and the member's ed25519 signature of the head per block). The
//! difference of CPU time and of file size, per transaction, is the log's cost. The
//! transaction's shape (writes, their sizes, its logged input) is set by flags whose
//! defaults are those of one `tally bench transfer` transfer (measured through
//! `get-entries`, `docs/ledger.md` "Cost").

use std::time::Instant;

use anyhow::Context;
use tally_ledger::leaf::{self, SPACE_DOCS, SPACE_INDEX};
use tally_ledger::merkle::{self, Hash};
use tally_ledger::sth::{MemberKey, TreeHead};
use tally_ledger::writer::{self, LogWriter};
use tally_storage::{RedbStore, Space, Store};

/// The shape of the measured workload.
#[derive(Clone, Debug)]
pub struct Shape {
    pub txns: u64,
    pub txns_per_block: u64,
    pub doc_writes: u64,
    pub index_writes: u64,
    pub value_bytes: usize,
    pub input_bytes: usize,
}

/// One pass's figures.
#[derive(Debug, Clone, Copy)]
pub struct Pass {
    pub cpu_s: f64,
    pub wall_s: f64,
    /// Bytes of redb pages allocated at the end (`RedbStore::allocated_bytes`).
    pub file_bytes: u64,
    /// Bytes of the meta entries (names and values) the log added.
    pub log_entry_bytes: u64,
}

/// Runs both passes; prints and returns (without the log, with it).
pub fn run(shape: &Shape) -> anyhow::Result<(Pass, Pass)> {
    anyhow::ensure!(shape.txns > 0 && shape.txns_per_block > 0, "--txns and --txns-per-block must be positive");
    let base = pass(shape, false)?;
    let with = pass(shape, true)?;
    let n = shape.txns as f64;
    let blocks = shape.txns.div_ceil(shape.txns_per_block);
    println!(
        "ledger cost: {} transactions in {blocks} blocks, each {} document and {} index writes of {} bytes, input {} bytes",
        shape.txns, shape.doc_writes, shape.index_writes, shape.value_bytes, shape.input_bytes
    );
    println!("{:<18} {:>14} {:>14} {:>14}", "", "without log", "with log", "log per txn");
    println!(
        "{:<18} {:>14.1} {:>14.1} {:>14.1}",
        "CPU us/txn",
        base.cpu_s * 1e6 / n,
        with.cpu_s * 1e6 / n,
        (with.cpu_s - base.cpu_s) * 1e6 / n
    );
    println!(
        "{:<18} {:>14.1} {:>14.1} {:>14.1}",
        "wall us/txn",
        base.wall_s * 1e6 / n,
        with.wall_s * 1e6 / n,
        (with.wall_s - base.wall_s) * 1e6 / n
    );
    println!(
        "{:<18} {:>14.0} {:>14.0} {:>14.0}",
        "stored bytes/txn",
        base.file_bytes as f64 / n,
        with.file_bytes as f64 / n,
        (with.file_bytes as f64 - base.file_bytes as f64) / n
    );
    println!("{:<18} {:>14} {:>14} {:>14.0}", "log entry bytes", "", "", with.log_entry_bytes as f64 / n);
    let key = MemberKey::from_seed(&[7; 32])?;
    let head = TreeHead { tree_size: 1, timestamp_ms: 1, root: [1; 32] };
    let t0 = cpu_seconds();
    let signs = 2_000;
    for _ in 0..signs {
        std::hint::black_box(key.sign(std::hint::black_box(&head)));
    }
    println!("ed25519 signature of a head (once per block): {:.1} us", (cpu_seconds() - t0) * 1e6 / signs as f64);
    Ok((base, with))
}

fn pass(shape: &Shape, log: bool) -> anyhow::Result<Pass> {
    let dir = tempfile::Builder::new().prefix("tally-bench-ledger-").tempdir()?;
    let path = dir.path().join("state.redb");
    let store = RedbStore::open(&path).context("opening a redb store")?;
    let key = MemberKey::from_seed(&[7; 32])?;
    let mut w = LogWriter::default();
    let mut value = vec![0u8; shape.value_bytes];
    let mut input = vec![0u8; shape.input_bytes];
    let mut effect_buf = Vec::new();
    let mut block_effects: Vec<Hash> = Vec::new();
    let mut log_entry_bytes = 0u64;
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    let mut txn = 0u64;
    let mut height = 0u64;
    while txn < shape.txns {
        height += 1;
        let mut b = store.begin()?;
        let mut last_ts = 0;
        for position in 0..shape.txns_per_block.min(shape.txns - txn) {
            let ts = 1_800_000_000_000_000 + txn;
            last_ts = ts;
            input[..8].copy_from_slice(&txn.to_be_bytes());
            for i in 0..shape.doc_writes + shape.index_writes {
                let (space, tag) =
                    if i < shape.doc_writes { (Space::Docs, SPACE_DOCS) } else { (Space::Index, SPACE_INDEX) };
                // Keys like a document's: database, collection, numeric id.
                let mut k = Vec::with_capacity(25);
                k.extend_from_slice(&0u64.to_be_bytes());
                k.extend_from_slice(&(1 + i).to_be_bytes());
                k.push(1);
                k.extend_from_slice(&(txn % 10_000).to_be_bytes());
                value[..8].copy_from_slice(&txn.to_be_bytes());
                b.put(space, &k, ts, &value)?;
                // The block's effects root hashes every effect leaf with or without the log.
                let h = if log {
                    w.effect(tag, &k, ts, Some(&value))
                } else {
                    leaf::effect_leaf_into(&mut effect_buf, tag, &k, ts, Some(&value));
                    merkle::leaf_hash(&effect_buf)
                };
                block_effects.push(h);
            }
            if log {
                for (name, v) in w.finish_txn(ts, height, position as u32, &input) {
                    log_entry_bytes += (name.len() + v.len()) as u64;
                    b.set_meta(&name, &v)?;
                }
            }
            txn += 1;
        }
        std::hint::black_box(merkle::root_of_hashes(&block_effects));
        block_effects.clear();
        if log {
            for (name, v) in w.finish_block() {
                log_entry_bytes += (name.len() + v.len()) as u64;
                b.set_meta(&name, &v)?;
            }
            let head = TreeHead { tree_size: w.size(), timestamp_ms: TreeHead::timestamp_for(last_ts), root: w.root() };
            let sig = key.sign(&head);
            let name = writer::sig_key(height);
            let v = [&key.public_key()[..], &sig[..]].concat();
            log_entry_bytes += (name.len() + v.len()) as u64;
            b.set_meta(&name, &v)?;
        }
        b.commit(false)?;
    }
    store.begin()?.commit(true)?;
    let (cpu_s, wall_s) = (cpu_seconds() - cpu0, wall0.elapsed().as_secs_f64());
    let file_bytes = store.allocated_bytes()?;
    Ok(Pass { cpu_s, wall_s, file_bytes, log_entry_bytes })
}

fn cpu_seconds() -> f64 {
    crate::server::cpu_seconds(std::process::id()).unwrap_or(0.0)
}
