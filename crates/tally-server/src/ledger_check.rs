//! Offline verification of a data directory's ledger (`tally verify`), from genesis.
//!
//! In order, stopping at the first failure and naming its block height or leaf index:
//! 1. every block header decodes and extends the chain (height, `prev_hash`, ts order);
//! 2. every leaf record decodes (its effect hashes match its effects root, its input its
//!    input hash), names the block and position it sits in, its transaction ts
//!    increases, and its hash lookup entry names it; the tree recomputed from the leaves matches every stored subtree hash and
//!    every header's `tree_size`/`tree_root`; every header's effects root is the root over
//!    its leaves' effect hashes followed by its removal record's (retention);
//! 3. every stored member signature verifies over its head, and every block after the
//!    first one signed has one (blocks installed from a snapshot come unsigned, so only a
//!    missing signature *before* every stored one goes unnoticed);
//! 4. every document version and index entry in the state is one some leaf committed to
//!    (a changed byte in the state is an effect no leaf has; a version retention removed
//!    is simply absent);
//! 5. on a single node, the input log replayed by a fresh executor in memory yields the
//!    very same headers (a dropped, reordered or altered transaction changes them), and
//!    the very same state: every document and index version, and the executor's own
//!    meta entries (last ts, root key hash, retention cursors and sweep ts), so a byte changed or a
//!    version dropped anywhere in them is found too. When `--log-retain` retired the
//!    log's first segments this step needs them back: with the archive directory of
//!    `archive:DIR` (`--log-archive DIR`) it replays from genesis as before; without, it
//!    is skipped and the report says from which height the log starts (steps 1–4 do not
//!    read the log and are unchanged).
//!
//! A state file so damaged that the storage engine panics reading it is reported as
//! such (`Finding::Open`), not as a crash. The store is opened read-write (redb has no
//! read-only open) but nothing is written; the server must be stopped.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use tally_calvin::StateMachine;
use tally_ledger::leaf::{self, LeafRecord};
use tally_ledger::merkle::{self, Hash};
use tally_ledger::tlog::Frontier;
use tally_ledger::{writer, BlockHeader, Chain};
use tally_storage::{RedbStore, Snapshot, Space, Store, Ts};

use crate::machine::{block_key, node_reader, retention_key, tree_head, FqlMachine, META_APPLIED_HEIGHT, META_HEAD};

/// What a successful verification covered.
#[derive(Debug, Default)]
pub struct Report {
    pub blocks: u64,
    pub leaves: u64,
    pub signed_blocks: u64,
    pub signing_keys: Vec<[u8; 32]>,
    pub versions_checked: u64,
    /// Batches replayed from the input log (0 on a cluster member: its log is Raft's).
    pub replayed: u64,
    /// The replay was skipped: the log (with the archive, if given) starts at this height,
    /// the batches before it retired by `--log-retain`.
    pub replay_skipped_from: Option<u64>,
    /// The replay stopped before this batch (height, its executor rules): it was sequenced
    /// under other rules than this build's (`tally_exec::RULES`), so this build cannot
    /// recompute its block; the batches before it were replayed and checked.
    pub replay_stopped_at: Option<(u64, u16)>,
}

/// The first thing found wrong.
#[derive(Debug, thiserror::Error)]
pub enum Finding {
    #[error("block {height}: {what}")]
    Block { height: u64, what: String },
    #[error("leaf {index}: {what}")]
    Leaf { index: u64, what: String },
    #[error("state: {what}")]
    State { what: String },
    #[error("{0}")]
    Open(String),
}

fn open_err(e: impl std::fmt::Display) -> Finding {
    Finding::Open(e.to_string())
}

/// Verifies the ledger of the data directory `dir`.
pub fn verify_dir(dir: &Path) -> Result<Report, Finding> {
    verify_dir_with(dir, None)
}

/// [`verify_dir`], reading input log segments retired into `archive` too.
pub fn verify_dir_with(dir: &Path, archive: Option<&Path>) -> Result<Report, Finding> {
    // redb trusts its own pages: a flipped length in one can make it index out of bounds.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| verify_dir_inner(dir, archive))).unwrap_or_else(|p| {
        let why = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        Err(Finding::Open(format!("the state or log file is corrupt: reading it failed ({why})")))
    })
}

fn verify_dir_inner(dir: &Path, archive: Option<&Path>) -> Result<Report, Finding> {
    let store =
        RedbStore::open(&dir.join("state.redb")).map_err(|e| open_err(format!("opening the state store: {e}")))?;
    let snap = store.snapshot().map_err(open_err)?;
    let mut report = Report::default();
    let headers = check_chain(&*snap)?;
    report.blocks = headers.len() as u64;
    let effects = check_tree(&*snap, &headers, &mut report)?;
    check_signatures(&*snap, &headers, &mut report)?;
    report.versions_checked = check_state(&*snap, &effects, &headers)?;
    drop(snap);
    drop(store);
    let log_dir = dir.join("log");
    if log_dir.exists() {
        // Converts a format-2 `input.log` (as opening the node would) and truncates a torn tail.
        tally_calvin::FileLog::open(&log_dir).map_err(|e| match e {
            tally_calvin::LogError::Corrupt { height, detail } => {
                Finding::Block { height, what: format!("input log: {detail}") }
            }
            other => open_err(format!("opening the input log: {other}")),
        })?;
        let mut dirs: Vec<std::path::PathBuf> = archive.map(Path::to_path_buf).into_iter().collect();
        dirs.push(log_dir);
        let first = dirs
            .iter()
            .filter_map(|d| tally_calvin::list_segments(d).ok()?.first().map(|s| s.first_height))
            .min()
            .unwrap_or(1);
        if first > 1 {
            report.replay_skipped_from = Some(first);
        } else {
            let replayed = Arc::new(tally_storage::MemStore::new());
            (report.replayed, report.replay_stopped_at) = replay(&dirs, &headers, replayed.clone())?;
            if report.replay_stopped_at.is_some() {
                return Ok(report);
            }
            let store = RedbStore::open(&dir.join("state.redb")).map_err(open_err)?;
            let (stored, replayed) = (store.snapshot().map_err(open_err)?, replayed.snapshot().map_err(open_err)?);
            same_state(&*stored, &*replayed, &headers)?;
        }
    }
    Ok(report)
}

fn meta(snap: &dyn Snapshot, name: &str) -> Result<Option<Vec<u8>>, Finding> {
    snap.meta(name).map_err(|e| Finding::State { what: format!("reading {name}: {e}") })
}

/// Step 1: the headers 1..=applied height, chained (block 1's `prev_hash` is the
/// genesis constant).
fn check_chain(snap: &dyn Snapshot) -> Result<Vec<BlockHeader>, Finding> {
    let applied = meta(snap, META_APPLIED_HEIGHT)?.and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes);
    let mut chain: Option<Chain> = None;
    let mut headers = Vec::with_capacity(applied as usize);
    for height in 1..=applied {
        let bad = |what: String| Finding::Block { height, what };
        let b = meta(snap, &block_key(height))?.ok_or_else(|| bad("header missing".into()))?;
        let h = BlockHeader::decode(&b).map_err(|e| bad(e.to_string()))?;
        if h.height != height {
            return Err(bad(format!("stored under height {height} but says {}", h.height)));
        }
        match chain.as_mut() {
            Some(c) => drop(c.append(h).map_err(|e| bad(e.to_string()))?),
            None if h.prev_hash != tally_ledger::GENESIS_PREV_HASH => {
                return Err(bad("the first block's prev_hash is not the genesis value".into()))
            }
            None => chain = Some(Chain::from_tip(h).map_err(|e| bad(e.to_string()))?),
        }
        headers.push(h);
    }
    let head = meta(snap, META_HEAD)?.map(|b| BlockHeader::decode(&b)).transpose().map_err(open_err)?;
    if head != headers.last().copied() {
        return Err(Finding::Block { height: applied, what: "the stored head is not the last block's header".into() });
    }
    Ok(headers)
}

/// Step 2: leaves, stored subtree hashes and header roots. Returns every effect hash.
fn check_tree(snap: &dyn Snapshot, headers: &[BlockHeader], report: &mut Report) -> Result<HashSet<Hash>, Finding> {
    let mut tree = Frontier::new();
    let stored = node_reader(snap);
    let mut effects = HashSet::new();
    let mut last_ts = 0;
    for h in headers {
        // The block's effects root: its transactions' effect leaves, then its removals.
        let mut block_effects: Vec<Hash> = Vec::new();
        for position in 0..h.txn_count {
            let index = tree.size();
            let bad = |what: String| Finding::Leaf { index, what };
            let rec = leaf_record(snap, index).map_err(bad)?;
            let l = rec.leaf;
            if (l.height, l.position) != (h.height, position) {
                return Err(bad(format!(
                    "names block {} position {}, expected {} {position}",
                    l.height, l.position, h.height
                )));
            }
            if l.ts <= last_ts || l.ts < h.first_ts || l.ts > h.last_ts {
                return Err(bad(format!("ts {} out of order or outside its block's range", l.ts)));
            }
            last_ts = l.ts;
            effects.extend(rec.effect_hashes.iter().copied());
            block_effects.extend(rec.effect_hashes.iter().copied());
            for (id, want) in tree.append(l.hash()) {
                // In its chunk (levels 0–3, executor rules 7) or under a name of its own.
                let found = stored
                    .read(id)
                    .map_err(|e| bad(format!("subtree hash at level {} index {}: {e}", id.level, id.index)))?;
                if found != Some(want) {
                    return Err(bad(format!(
                        "stored subtree hash at level {} index {} is wrong or missing",
                        id.level, id.index
                    )));
                }
            }
        }
        if let Some(rec) = meta(snap, &retention_key(h.height))? {
            let removals = leaf::decode_removals(&rec)
                .map_err(|e| Finding::Block { height: h.height, what: format!("removal record: {e}") })?;
            block_effects.extend(removals.iter().map(leaf::Removal::effect_hash));
        }
        if merkle::root_of_hashes(&block_effects) != h.effects_root {
            let what = "its effects root is not the root over its transactions' effects and its removal record";
            return Err(Finding::Block { height: h.height, what: what.into() });
        }
        if (tree.size(), tree.root()) != (h.tree_size, h.tree_root) {
            let what = format!("header says tree_size {} and a root that the leaves do not give", h.tree_size);
            return Err(Finding::Block { height: h.height, what });
        }
    }
    // A chunk holds exactly the subtrees its leaves completed: nothing after them.
    let size = tree.size();
    for chunk in 0..size.div_ceil(writer::CHUNK_LEAVES) {
        let Some(b) = meta(snap, &writer::chunk_key(chunk))? else { continue };
        let leaves = (size - chunk * writer::CHUNK_LEAVES).min(writer::CHUNK_LEAVES);
        let held = writer::decode_chunk(chunk, &b).map_or(usize::MAX, |h| h.len());
        if held != writer::chunk_ids(chunk, leaves).count() {
            let index = chunk * writer::CHUNK_LEAVES + leaves - 1;
            return Err(Finding::Leaf {
                index,
                what: format!("stored chunk {chunk} holds other hashes than its leaves' subtrees"),
            });
        }
    }
    report.leaves = size;
    Ok(effects)
}

fn leaf_record(snap: &dyn Snapshot, index: u64) -> Result<LeafRecord, String> {
    let b = snap.meta(&writer::leaf_key(index)).map_err(|e| e.to_string())?.ok_or("leaf record missing")?;
    leaf::decode_record(&b).map_err(|e| e.to_string())
}

/// Step 3: the member signatures kept with each block.
fn check_signatures(snap: &dyn Snapshot, headers: &[BlockHeader], report: &mut Report) -> Result<(), Finding> {
    // A member signs every block it applies itself; blocks it received in a snapshot (or
    // a backup) come unsigned. So the signed blocks are a suffix: an unsigned block after
    // a signed one lost its signature.
    let mut signing = false;
    for h in headers {
        let bad = |what: &str| Finding::Block { height: h.height, what: what.to_string() };
        let Some(b) = meta(snap, &writer::sig_key(h.height))? else {
            if signing {
                return Err(bad("this member's signature of the block is missing, though it signed the block before"));
            }
            continue;
        };
        signing = true;
        let (pk, sig) = b.split_at(b.len().min(32));
        if !tally_ledger::sth::verify(pk, &tree_head(h), sig) {
            return Err(bad("the member signature does not verify over this block's tree head"));
        }
        let pk: [u8; 32] = pk.try_into().map_err(|_| bad("malformed signature record"))?;
        if !report.signing_keys.contains(&pk) {
            report.signing_keys.push(pk);
        }
        report.signed_blocks += 1;
    }
    Ok(())
}

/// Step 4: every stored version is an effect some leaf committed to.
fn check_state(snap: &dyn Snapshot, effects: &HashSet<Hash>, headers: &[BlockHeader]) -> Result<u64, Finding> {
    let mut checked = 0;
    for (space, tag) in [(Space::Docs, leaf::SPACE_DOCS), (Space::Index, leaf::SPACE_INDEX)] {
        let keys = snap.scan(space, &[], None, false, Ts::MAX).map_err(|e| Finding::State { what: e.to_string() })?;
        for item in keys {
            let (key, _) = item.map_err(|e| Finding::State { what: e.to_string() })?;
            let versions =
                snap.history(space, &key, 0, Ts::MAX, false).map_err(|e| Finding::State { what: e.to_string() })?;
            for v in versions {
                let v = v.map_err(|e| Finding::State { what: e.to_string() })?;
                let h = merkle::leaf_hash(&leaf::effect_leaf(tag, &key, v.ts, Some(&v.value)));
                if !effects.contains(&h) {
                    let block = headers.iter().find(|b| b.first_ts <= v.ts && v.ts <= b.last_ts).map(|b| b.height);
                    return Err(Finding::State {
                        what: format!(
                            "the {} version of key {} at ts {} (block {}) is not one any transaction wrote",
                            if tag == leaf::SPACE_DOCS { "document" } else { "index" },
                            hex::encode(&key),
                            v.ts,
                            block.map_or("?".into(), |b| b.to_string())
                        ),
                    });
                }
                checked += 1;
            }
        }
    }
    Ok(checked)
}

/// Step 5: replay the input log (the segments of `dirs` as one log) into a fresh executor;
/// its headers must be the stored ones.
fn replay(
    dirs: &[std::path::PathBuf],
    headers: &[BlockHeader],
    into: Arc<tally_storage::MemStore>,
) -> Result<(u64, Option<(u64, u16)>), Finding> {
    let mut m = FqlMachine::open(into).map_err(open_err)?;
    m.checkpoint_every_batches(u64::MAX);
    let mut replayed = 0;
    // Streamed, one batch at a time; the first mismatch stops the replay (carried out of
    // the callback, which can only return a log error).
    let mut finding = None;
    let mut stopped = None;
    let read = tally_calvin::replay_dirs(dirs, 0, &mut |batch| {
        let height = batch.height;
        let Some(stored) = headers.get((height as usize).wrapping_sub(1)) else { return Ok(()) };
        if finding.is_some() || stopped.is_some() {
            return Ok(());
        }
        if batch.rules != tally_exec::RULES {
            stopped = Some((height, batch.rules));
            return Ok(());
        }
        m.apply(&batch);
        let got = m.head.lock().ok().and_then(|h| *h);
        if got != Some(*stored) {
            finding = Some(Finding::Block {
                height,
                what: "replaying the input log gives another header (a transaction was changed, dropped or reordered)"
                    .into(),
            });
            return Ok(());
        }
        replayed += 1;
        Ok(())
    });
    if let Some(f) = finding {
        return Err(f);
    }
    read.map_err(|e| match e {
        tally_calvin::LogError::Corrupt { height, detail } => {
            Finding::Block { height, what: format!("input log: {detail}") }
        }
        other => open_err(format!("reading the input log: {other}")),
    })?;
    if stopped.is_none() && replayed < headers.len() as u64 {
        return Err(Finding::Block { height: replayed + 1, what: "the input log ends before the stored chain".into() });
    }
    Ok((replayed, stopped))
}

/// The executor's own meta entries: written by transactions and sweeps, not effects of
/// any leaf, so only a replay can vouch for them.
const EXECUTOR_META: [&str; 7] = [
    META_HEAD,
    crate::machine::META_LAST_TS,
    crate::machine::META_ROOT_KEY,
    crate::machine::META_RETENTION_CURSOR,
    crate::machine::META_RETENTION_INDEX_CURSOR,
    crate::machine::META_RETENTION_SWEPT_TS,
    tally_fql::retention::META_SWEEP_TS,
];

/// Step 5, continued: the state the replay built is the stored state, version for
/// version, and so are the executor's meta entries.
fn same_state(stored: &dyn Snapshot, replayed: &dyn Snapshot, headers: &[BlockHeader]) -> Result<(), Finding> {
    let last = headers.last().map_or(0, |h| h.height);
    for name in EXECUTOR_META {
        if meta(stored, name)? != meta(replayed, name)? {
            let what = format!("the executor's `{name}` is not what replaying the input log gives");
            return Err(Finding::Block { height: last, what });
        }
    }
    for space in [Space::Docs, Space::Index] {
        let (a, b) = (versions(stored, space)?, versions(replayed, space)?);
        if let Some(i) = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i)) {
            let (key, ts) = a.get(i).or(b.get(i)).map(|(k, ts, _)| (k.clone(), *ts)).unwrap_or_default();
            let block = headers.iter().find(|b| b.first_ts <= ts && ts <= b.last_ts).map(|b| b.height);
            return Err(Finding::State {
                what: format!(
                    "the {space:?} version of key {} at ts {ts} (block {}) differs from what replaying the input log gives \
                     (changed, dropped or added)",
                    hex::encode(&key),
                    block.map_or("?".into(), |b| b.to_string())
                ),
            });
        }
    }
    Ok(())
}

/// A stored version: key, ts, value.
type StoredVersion = (Vec<u8>, Ts, Vec<u8>);

/// Every version of `space`, in key then ts order.
fn versions(snap: &dyn Snapshot, space: Space) -> Result<Vec<StoredVersion>, Finding> {
    let err = |e: tally_storage::StorageError| Finding::State { what: e.to_string() };
    let mut out = Vec::new();
    for item in snap.scan(space, &[], None, false, Ts::MAX).map_err(err)? {
        let (key, _) = item.map_err(err)?;
        for v in snap.history(space, &key, 0, Ts::MAX, false).map_err(err)? {
            let v = v.map_err(err)?;
            out.push((key.clone(), v.ts, v.value));
        }
    }
    Ok(out)
}
