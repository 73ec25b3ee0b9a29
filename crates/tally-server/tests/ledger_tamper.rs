//! Tampering with a data directory is caught by the offline verifier (`tally verify`),
//! with the block height or leaf index: a changed leaf, subtree hash, header or state
//! version, a forged or swapped member signature, and a transaction changed, dropped or
//! reordered in the input log.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use tally_calvin::{Batch, FileLog, Log, StateMachine};
use tally_ledger::tlog::NodeId;
use tally_ledger::writer;
use tally_server::leaf_index::LeafIndex;
use tally_server::ledger_check::{verify_dir, verify_dir_with, Finding};
use tally_server::machine::{block_key, FqlMachine, TxnInput};
use tally_storage::{RedbStore, Space, Store, Ts};

/// Where a segment's frames end (the zeros written ahead follow): the input log tests' own
/// frame walk.
#[path = "../../tally-calvin/tests/common/mod.rs"]
mod log_frames;
use log_frames::frames_end;

fn input(q: serde_json::Value, seed: u8) -> Vec<u8> {
    let inp = TxnInput {
        q,
        db: 0,
        role: "admin".into(),
        entropy: [seed; 32],
        steps_max: 1_000_000,
        identity: None,
        token: None,
        jwt: None,
    };
    tally_server::record::encode_input(&inp).unwrap()
}

fn obj(v: serde_json::Value) -> serde_json::Value {
    json!({ "object": v })
}

/// Schema, then three batches of four account creations and updates.
fn batches() -> Vec<Batch> {
    let accounts = json!({"collection": "accounts"});
    let mut out = vec![vec![input(json!({"create_collection": obj(json!({"name": "accounts"}))}), 1)]];
    for b in 0..3u8 {
        out.push(
            (0..4u8)
                .map(|i| {
                    let id = (b * 4 + i + 1).to_string();
                    let r = json!({"ref": accounts, "id": id});
                    let data = obj(json!({"data": obj(json!({"n": b * 4 + i}))}));
                    input(json!({"create": r, "params": data}), 10 + b * 4 + i)
                })
                .collect(),
        );
    }
    out.into_iter()
        .enumerate()
        .map(|(i, inputs)| Batch {
            height: i as u64 + 1,
            ts: 1_800_000_000_000_000 + i as u64 * 1000,
            rules: tally_exec::RULES,
            inputs,
        })
        .collect()
}

/// A data directory as a single node leaves it: input log, state, member key.
fn make_dir(dir: &Path, batches: &[Batch]) {
    let mut log = FileLog::open(&dir.join("log")).unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.join("state.redb")).unwrap());
    let mut m = FqlMachine::open(store).unwrap();
    m.checkpoint_every_batches(1);
    m.signer = Some(Arc::new(tally_server::datadir::member_key(dir).unwrap()));
    for b in batches {
        log.append(b).unwrap();
        m.apply(b);
    }
}

fn fresh() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    make_dir(dir.path(), &batches());
    dir
}

/// Changes the state store of `dir` in one durable commit.
fn edit(dir: &Path, f: impl FnOnce(&mut dyn tally_storage::Batch)) {
    let store = RedbStore::open(&dir.join("state.redb")).unwrap();
    let mut b = store.begin().unwrap();
    f(&mut *b);
    b.commit(true).unwrap();
}

fn meta(dir: &Path, name: &str) -> Vec<u8> {
    meta_opt(dir, name).unwrap()
}

fn meta_opt(dir: &Path, name: &str) -> Option<Vec<u8>> {
    let store = RedbStore::open(&dir.join("state.redb")).unwrap();
    store.snapshot().unwrap().meta(name).unwrap()
}

fn flip(mut v: Vec<u8>, at: usize) -> Vec<u8> {
    v[at] ^= 0x01;
    v
}

#[test]
fn an_untouched_directory_verifies_from_genesis() {
    let dir = fresh();
    let r = verify_dir(dir.path()).unwrap();
    assert_eq!((r.blocks, r.leaves, r.signed_blocks, r.replayed), (4, 13, 4, 4));
    assert_eq!(r.signing_keys.len(), 1);
    assert!(r.versions_checked >= 13, "{r:?}");
}

#[test]
fn a_changed_leaf_record_is_found_at_its_index() {
    let dir = fresh();
    let rec = meta(dir.path(), &writer::leaf_key(6));
    // Byte 60 lies in the effects root; the last byte in the logged input.
    for at in [60, rec.len() - 1] {
        let changed = flip(rec.clone(), at);
        edit(dir.path(), |b| b.set_meta(&writer::leaf_key(6), &changed).unwrap());
        let e = verify_dir(dir.path()).unwrap_err();
        assert!(matches!(e, Finding::Leaf { index: 6, .. }), "byte {at}: {e}");
    }
}

#[test]
fn a_changed_subtree_hash_or_header_is_found() {
    let dir = fresh();
    // Leaves 4..8, completed by leaf 7: in chunk 0 (executor rules 7), after its format
    // byte and the hashes before it.
    let id = NodeId::new(2, 1);
    let (chunk, slot) = writer::chunk_slot(id).unwrap();
    let name = writer::chunk_key(chunk);
    let stored = meta(dir.path(), &name);
    assert_eq!(stored.len(), 1 + 32 * writer::chunk_ids(0, 13).count(), "13 leaves' subtrees");
    edit(dir.path(), |b| b.set_meta(&name, &flip(stored.clone(), 1 + 32 * slot)).unwrap());
    let e = verify_dir(dir.path()).unwrap_err();
    assert!(matches!(e, Finding::Leaf { index: 7, .. }), "{e}");
    // Another format byte: the first leaf's hash cannot be read.
    edit(dir.path(), |b| b.set_meta(&name, &flip(stored.clone(), 0)).unwrap());
    let e = verify_dir(dir.path()).unwrap_err();
    assert!(matches!(&e, Finding::Leaf { index: 0, what } if what.contains("format 0")), "{e}");
    // A hash more than the leaves completed.
    edit(dir.path(), |b| b.set_meta(&name, &[&stored[..], &[7; 32]].concat()).unwrap());
    let e = verify_dir(dir.path()).unwrap_err();
    assert!(matches!(&e, Finding::Leaf { index: 12, what } if what.contains("other hashes")), "{e}");

    let dir = fresh();
    let header = flip(meta(dir.path(), &block_key(2)), 140); // in tree_root
    edit(dir.path(), |b| b.set_meta(&block_key(2), &header).unwrap());
    let e = verify_dir(dir.path()).unwrap_err();
    // The next header's prev_hash no longer matches.
    assert!(matches!(e, Finding::Block { height: 3, .. }), "{e}");
}

#[test]
fn a_changed_state_version_is_found() {
    let dir = fresh();
    let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
    let snap = store.snapshot().unwrap();
    let (key, v) = snap.scan(Space::Docs, &[], None, true, Ts::MAX).unwrap().next().unwrap().unwrap();
    drop((snap, store));
    let changed = flip(v.value.clone(), v.value.len() - 1);
    edit(dir.path(), |b| b.put(Space::Docs, &key, v.ts, &changed).unwrap());
    let e = verify_dir(dir.path()).unwrap_err();
    assert!(matches!(&e, Finding::State { what } if what.contains(&format!("ts {}", v.ts))), "{e}");
}

#[test]
fn forged_and_swapped_signatures_are_found() {
    // Block 3 without its signature record, after a signed block 2.
    let dir = tempfile::tempdir().unwrap();
    let mut log = FileLog::open(&dir.path().join("log")).unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("state.redb")).unwrap());
    let mut m = FqlMachine::open(store).unwrap();
    m.checkpoint_every_batches(1);
    let key = Arc::new(tally_server::datadir::member_key(dir.path()).unwrap());
    for b in batches() {
        m.signer = (b.height != 3).then(|| key.clone());
        log.append(&b).unwrap();
        m.apply(&b);
    }
    drop((m, log));
    let e = verify_dir(dir.path()).unwrap_err();
    assert!(
        matches!(&e, Finding::Block { height: 3, what } if what.contains("signature of the block is missing")),
        "{e}"
    );

    let dir = fresh();
    let sig = flip(meta(dir.path(), &writer::sig_key(2)), 40);
    edit(dir.path(), |b| b.set_meta(&writer::sig_key(2), &sig).unwrap());
    let e = verify_dir(dir.path()).unwrap_err();
    assert!(matches!(e, Finding::Block { height: 2, .. }), "{e}");

    let dir = fresh();
    let of_three = meta(dir.path(), &writer::sig_key(3));
    edit(dir.path(), |b| b.set_meta(&writer::sig_key(4), &of_three).unwrap());
    let e = verify_dir(dir.path()).unwrap_err();
    assert!(matches!(e, Finding::Block { height: 4, .. }), "{e}");
}

/// Rewrites the input log of `dir` (with valid frames) as `batches`.
fn rewrite_log(dir: &Path, batches: &[Batch]) {
    std::fs::remove_dir_all(dir.join("log")).unwrap();
    let mut log = FileLog::open(&dir.join("log")).unwrap();
    for b in batches {
        log.append(b).unwrap();
    }
}

/// With the log's first segments retired (`--log-retain checkpoint`), the chain, leaves,
/// signatures and state still verify and the replay is reported skipped; with the archive
/// of `archive:DIR` the replay runs from genesis again, and still finds a changed input.
#[test]
fn a_retired_log_skips_the_replay_and_an_archive_brings_it_back() {
    let dir = fresh();
    std::fs::remove_dir_all(dir.path().join("log")).unwrap();
    let mut log = FileLog::open_with(
        &dir.path().join("log"),
        tally_calvin::LogOptions { segment_bytes_max: 1, ..Default::default() },
    )
    .unwrap();
    for b in batches() {
        log.append(&b).unwrap();
    }
    drop(log);
    let archive = tempfile::tempdir().unwrap();
    let policy = tally_calvin::Retain::Archive(archive.path().to_path_buf());
    let r = tally_calvin::retire_segments(&dir.path().join("log"), 4, &policy).unwrap();
    assert_eq!((r.segments, r.first_height), (3, 4));
    let r = verify_dir(dir.path()).unwrap();
    assert_eq!((r.blocks, r.leaves, r.replayed, r.replay_skipped_from), (4, 13, 0, Some(4)));
    let r = verify_dir_with(dir.path(), Some(archive.path())).unwrap();
    assert_eq!((r.replayed, r.replay_skipped_from), (4, None));
    // An archived batch changed: the replay finds it.
    let mut changed = batches();
    changed[1].inputs.swap(0, 1);
    let seg = archive.path().join(tally_calvin::segment_name(2));
    std::fs::remove_file(&seg).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut log = FileLog::create_at(
        scratch.path(),
        tally_calvin::LogOptions { segment_bytes_max: 1, ..Default::default() },
        2,
        0,
    )
    .unwrap();
    log.append(&changed[1]).unwrap();
    drop(log);
    std::fs::rename(scratch.path().join(tally_calvin::segment_name(2)), &seg).unwrap();
    let e = verify_dir_with(dir.path(), Some(archive.path())).unwrap_err();
    assert!(matches!(e, Finding::Block { height: 2, .. }), "{e}");
}

/// A log whose tail was sequenced under other executor rules (here: unstamped, as builds
/// before the stamp wrote it) is replayed up to that batch, which is reported instead of
/// being recomputed under this build's rules and called tampered.
#[test]
fn the_replay_stops_at_a_batch_of_other_rules() {
    let dir = fresh();
    let mut other = batches();
    for b in &mut other[2..] {
        b.rules = Batch::UNSTAMPED;
    }
    rewrite_log(dir.path(), &other);
    let r = verify_dir(dir.path()).unwrap();
    assert_eq!((r.blocks, r.replayed, r.replay_stopped_at), (4, 2, Some((3, Batch::UNSTAMPED))));
    // Its own rules everywhere: the whole log is replayed.
    rewrite_log(dir.path(), &batches());
    let r = verify_dir(dir.path()).unwrap();
    assert_eq!((r.replayed, r.replay_stopped_at), (4, None));
}

#[test]
fn a_dropped_reordered_or_changed_transaction_is_found_at_its_block() {
    let dir = fresh();
    let mut dropped = batches();
    dropped[2].inputs.remove(1);
    rewrite_log(dir.path(), &dropped);
    let e = verify_dir(dir.path()).unwrap_err();
    assert!(matches!(e, Finding::Block { height: 3, .. }), "{e}");

    let mut reordered = batches();
    reordered[3].inputs.swap(0, 3);
    rewrite_log(dir.path(), &reordered);
    let e = verify_dir(dir.path()).unwrap_err();
    assert!(matches!(e, Finding::Block { height: 4, .. }), "{e}");

    // One byte of the log file itself: the frame's checksum catches it.
    rewrite_log(dir.path(), &batches());
    let path = dir.path().join("log").join(tally_calvin::segment_name(1));
    let mut raw = std::fs::read(&path).unwrap();
    let mid = frames_end(&path) / 3;
    raw[mid] ^= 0x10;
    std::fs::write(&path, raw).unwrap();
    let e = verify_dir(dir.path()).unwrap_err();
    assert!(matches!(e, Finding::Block { .. }), "{e}");
}

/// The tamper workload, then the accounts collection's history cut to 0 days and the
/// accounts updated, then an empty batch a day later (an idle log's, `tally_apply::IdleSweep`):
/// its sweep removes every superseded version.
fn retention_batches() -> Vec<Batch> {
    let mut all = batches();
    let accounts = json!({"collection": "accounts"});
    let mut next =
        vec![input(json!({"update": {"collection": "accounts"}, "params": obj(json!({"history_days": 0}))}), 50)];
    next.extend((1..=12u8).map(|i| {
        let r = json!({"ref": accounts, "id": i.to_string()});
        input(json!({"update": r, "params": obj(json!({"data": obj(json!({"n": 100}))}))}), 60 + i)
    }));
    let ts = all.last().unwrap().ts + 1000;
    all.push(Batch { height: all.len() as u64 + 1, ts, rules: tally_exec::RULES, inputs: next });
    all.push(Batch {
        height: all.len() as u64 + 1,
        ts: ts + 86_400_000_000,
        rules: tally_exec::RULES,
        inputs: Vec::new(),
    });
    all
}

/// Retention removes versions (redaction): every old head still verifies, the block that
/// removed them says so in its effects root, and its removal record cannot be changed or
/// dropped unnoticed.
#[test]
fn a_directory_after_retention_verifies_and_its_removal_record_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let all = retention_batches();
    make_dir(dir.path(), &all);
    // With history_days 0 the quiet batch a day later (past v4's 15 minutes) removes what
    // the updates superseded; the block of the updates, within the 15 minutes, does not.
    let last = all.len() as u64;
    assert!(meta_opt(dir.path(), &tally_server::machine::retention_key(last - 1)).is_none());
    let rec = meta(dir.path(), &tally_server::machine::retention_key(last));
    let removed = tally_ledger::leaf::decode_removals(&rec).unwrap();
    assert_eq!(removed.len(), 12, "the 12 superseded account versions are removed");
    let r = verify_dir(dir.path()).unwrap();
    // The empty block has no leaf, and verifies.
    assert_eq!((r.blocks, r.leaves), (last, 13 + 13));
    for (at, what) in [(rec.len() - 1, "a changed ts"), (5, "a changed space")] {
        let dir = tempfile::tempdir().unwrap();
        make_dir(dir.path(), &all);
        let changed = flip(rec.clone(), at);
        edit(dir.path(), |b| b.set_meta(&tally_server::machine::retention_key(last), &changed).unwrap());
        let e = verify_dir(dir.path()).unwrap_err();
        assert!(matches!(e, Finding::Block { height, .. } if height == last), "{what}: {e}");
    }
    let dir = tempfile::tempdir().unwrap();
    make_dir(dir.path(), &all);
    edit(dir.path(), |b| b.set_meta(&tally_server::machine::retention_key(last), &[1, 0, 0, 0, 0]).unwrap());
    let e = verify_dir(dir.path()).unwrap_err();
    assert!(matches!(e, Finding::Block { height, .. } if height == last), "an emptied record: {e}");
    // The last sweep's ts decides which later batches sweep (executor rules 4): only a
    // replay vouches for it, and a changed one is found.
    let dir = tempfile::tempdir().unwrap();
    make_dir(dir.path(), &all);
    let swept = meta(dir.path(), tally_server::machine::META_RETENTION_SWEPT_TS);
    assert_eq!(swept, all[last as usize - 1].ts.to_be_bytes(), "the empty batch swept last");
    edit(dir.path(), |b| b.set_meta(tally_server::machine::META_RETENTION_SWEPT_TS, &flip(swept, 7)).unwrap());
    let e = verify_dir(dir.path()).unwrap_err();
    assert!(e.to_string().contains("retention_swept_ts"), "a changed sweep ts: {e}");
}

/// Everything in a state store that `tally verify` or the server reads, as one comparable
/// value: every document and index version, and every meta entry the ledger and the
/// executor keep (by name, for the leaves, nodes and blocks the directory has).
fn content(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let store = RedbStore::open(&dir.join("state.redb")).map_err(|e| e.to_string())?;
    let snap = store.snapshot().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for space in [Space::Docs, Space::Index] {
        let keys: Vec<Vec<u8>> = snap
            .scan(space, &[], None, false, Ts::MAX)
            .map_err(|e| e.to_string())?
            .map(|r| r.map(|(k, _)| k).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        for key in keys {
            for v in snap.history(space, &key, 0, Ts::MAX, false).map_err(|e| e.to_string())? {
                let v = v.map_err(|e| e.to_string())?;
                out.push((format!("{space:?} {} {}", hex::encode(&key), v.ts), v.value));
            }
        }
    }
    let mut names: Vec<String> = [
        "format_version",
        "write_behind_seq",
        tally_server::machine::META_APPLIED_HEIGHT,
        tally_server::machine::META_LAST_TS,
        tally_server::machine::META_HEAD,
        tally_server::machine::META_POSITION,
        tally_server::machine::META_ROOT_KEY,
        tally_server::machine::META_RETENTION_CURSOR,
        tally_server::machine::META_RETENTION_INDEX_CURSOR,
        tally_server::machine::META_RETENTION_SWEPT_TS,
        tally_fql::retention::META_SWEEP_TS,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for height in 0..=8 {
        names.extend([block_key(height), writer::sig_key(height), tally_server::machine::retention_key(height)]);
    }
    for index in 0..32 {
        names.push(writer::leaf_key(index));
    }
    names.extend(tally_ledger::tlog::node_ids(32).map(writer::node_key));
    names.extend((0..2).map(writer::chunk_key));
    for name in names {
        if let Some(v) = snap.meta(&name).map_err(|e| e.to_string())? {
            out.push((name, v));
        }
    }
    Ok(out)
}

/// Flips one byte of `file` at each offset `at` (every `stride`-th, from `start`) and
/// runs the checker: either the content it reads is unchanged (free space, redb's own
/// bookkeeping) or the checker reports a finding. Returns the offsets that changed the
/// content and were still accepted.
fn flip_each_byte(
    dir: &Path,
    file: &Path,
    range: std::ops::Range<usize>,
    stride: usize,
    base: &[(String, Vec<u8>)],
) -> Vec<String> {
    let orig = std::fs::read(file).unwrap();
    let mut missed = Vec::new();
    for at in range.step_by(stride) {
        let mut raw = orig.clone();
        raw[at] ^= 0x01;
        std::fs::write(file, &raw).unwrap();
        let verdict = std::panic::catch_unwind(|| verify_dir(dir));
        let accepted = matches!(verdict, Ok(Ok(_)));
        if accepted {
            let now = std::panic::catch_unwind(|| content(dir));
            match now {
                Ok(Ok(c)) if c == base => {}
                Ok(Ok(c)) => {
                    let old: std::collections::BTreeMap<_, _> = base.iter().cloned().collect();
                    let new: std::collections::BTreeMap<_, _> = c.into_iter().collect();
                    let changed: Vec<String> = old
                        .keys()
                        .chain(new.keys())
                        .filter(|k| old.get(*k) != new.get(*k))
                        .map(|k| match (old.get(k), new.get(k)) {
                            (Some(_), None) => format!("{k} lost"),
                            (None, Some(_)) => format!("{k} added"),
                            _ => format!("{k} changed"),
                        })
                        .collect();
                    // A lost signature record of the first blocks is indistinguishable from
                    // a member that installed a snapshot there (docs/ledger.md says so);
                    // any later one is found (`forged_and_swapped_signatures_are_found`).
                    if !changed.iter().all(|c| c.starts_with("tlog/s/") && c.ends_with(" lost")) {
                        missed.push(format!("byte {at}: accepted, but {}", changed.join(", ")));
                    }
                }
                other => missed.push(format!("byte {at}: accepted, but the store does not read back: {other:?}")),
            }
        }
        if let Err(p) = verdict {
            missed.push(format!("byte {at}: the checker panicked: {:?}", p.downcast_ref::<String>()));
        }
    }
    std::fs::write(file, &orig).unwrap();
    missed
}

/// Issue 16 item 5, literally: one byte flipped anywhere in the state file or the input
/// log. The state file is sampled with a stride (every offset would take minutes);
/// `TALLY_TAMPER_STRIDE=1` tries them all, `TALLY_TAMPER_START` shifts the sample.
#[test]
fn a_byte_flipped_anywhere_in_the_state_or_log_file_is_found_or_harmless() {
    let dir = fresh();
    let base = content(dir.path()).unwrap();
    assert!(base.len() > 30, "{}", base.len());
    let stride: usize = std::env::var("TALLY_TAMPER_STRIDE").ok().and_then(|s| s.parse().ok()).unwrap_or(97);
    let start: usize = std::env::var("TALLY_TAMPER_START").ok().and_then(|s| s.parse().ok()).unwrap_or(0) % stride;
    let log = tally_calvin::list_segments(&dir.path().join("log")).unwrap()[0].path.clone();
    // The log's frames byte by byte (a stride of 7), the zeros written ahead of them (a
    // megabyte, where a flipped byte reads as a torn append) sampled more sparsely.
    let (end, len) = (frames_end(&log), std::fs::metadata(&log).unwrap().len() as usize);
    assert!(len > end, "the log has zeros ahead");
    let mut missed = flip_each_byte(dir.path(), &log, start % 7..end, 7.min(stride), &base);
    missed.extend(flip_each_byte(dir.path(), &log, end + start % 4099..len, 4099.min(stride), &base));
    let state = dir.path().join("state.redb");
    let state_len = std::fs::metadata(&state).unwrap().len() as usize;
    missed.extend(flip_each_byte(dir.path(), &state, start..state_len, stride, &base));
    assert!(missed.is_empty(), "start {start}, stride {stride}:\n{}", missed.join("\n"));
}

/// A member that installs a Raft snapshot (or a node restored from a backup, which
/// carries one) gets the tree and the leaf records; it must also be able to find each
/// leaf by its hash (`get-proof-by-hash`), and its directory must verify.
#[test]
fn a_directory_installed_from_a_snapshot_verifies_and_finds_leaves_by_hash() {
    let dir = fresh();
    let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
    let (snapshot, height) = tally_server::snapshot::export_now(&store).unwrap();
    assert_eq!(height, 4);
    drop(store);
    let other = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&other.path().join("state.redb")).unwrap();
    tally_server::snapshot::import(&store, &snapshot).unwrap();
    let snap = store.snapshot().unwrap();
    let hash = leaf_hash(&*snap, 6);
    let index = LeafIndex::open(other.path()).unwrap();
    assert_eq!(index.find(&*snap, &hash, 13).unwrap(), Some(6), "found in the unindexed tail");
    while index.step(&*snap).unwrap() {}
    assert_eq!(index.indexed(), 13);
    assert_eq!(index.find(&*snap, &hash, 13).unwrap(), Some(6), "found through the index");
    drop((snap, store, index));
    let r = verify_dir(other.path()).unwrap();
    assert_eq!((r.blocks, r.leaves, r.signed_blocks), (4, 13, 0));
}

/// A store whose leaves were written before executor rules 7 keeps every subtree under a
/// name of its own and no chunk: it verifies, and a snapshot of it carries those names
/// (the export looks them up only where a chunk is missing), so the member installing it
/// answers proofs and verifies too.
#[test]
fn a_snapshot_of_a_store_of_the_old_layout_carries_its_subtree_names() {
    const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
    let dir = fresh();
    {
        // The state as rules 6 would have left it: chunk 0's subtrees under their names.
        let db = redb::Database::open(dir.path().join("state.redb")).unwrap();
        let w = db.begin_write().unwrap();
        {
            let mut t = w.open_table(META).unwrap();
            let chunk = t.remove(writer::chunk_key(0).as_str()).unwrap().unwrap().value().to_vec();
            let hashes = writer::decode_chunk(0, &chunk).unwrap();
            assert_eq!(hashes.len(), writer::chunk_ids(0, 13).count());
            for (id, h) in writer::chunk_ids(0, 13).zip(hashes) {
                t.insert(writer::node_key(id).as_str(), &h[..]).unwrap();
            }
        }
        w.commit().unwrap();
    }
    assert_eq!(meta_opt(dir.path(), &writer::chunk_key(0)), None);
    assert_eq!(verify_dir(dir.path()).unwrap().leaves, 13);
    let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
    let (snapshot, _) = tally_server::snapshot::export_now(&store).unwrap();
    drop(store);
    let other = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&other.path().join("state.redb")).unwrap();
    tally_server::snapshot::import(&store, &snapshot).unwrap();
    let snap = store.snapshot().unwrap();
    for id in writer::chunk_ids(0, 13) {
        assert!(snap.meta(&writer::node_key(id)).unwrap().is_some(), "{id:?} carried");
    }
    let hash = leaf_hash(&*snap, 12);
    let index = LeafIndex::open(other.path()).unwrap();
    while index.step(&*snap).unwrap() {}
    assert_eq!(index.find(&*snap, &hash, 13).unwrap(), Some(12));
    drop((snap, store, index));
    assert_eq!(verify_dir(other.path()).unwrap().leaves, 13);
}

fn leaf_hash(snap: &dyn tally_storage::Snapshot, index: u64) -> tally_ledger::merkle::Hash {
    let rec = snap.meta(&writer::leaf_key(index)).unwrap().unwrap();
    tally_ledger::leaf::decode_record(&rec).unwrap().leaf.hash()
}

/// The leaf-hash lookup (`get-proof-by-hash`) is node-local and derived: every leaf is
/// found by its hash before and after it is indexed, a hash the tree does not hold (or
/// holds past the asked size) is not, and an index of another history (a restored or
/// replaced state) is never believed: it is rebuilt, and lookups meanwhile search the state.
#[test]
fn the_leaf_hash_index_finds_every_leaf_and_follows_the_state_it_serves() {
    let dir = fresh();
    let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
    let snap = store.snapshot().unwrap();
    let hashes: Vec<_> = (0..13).map(|i| leaf_hash(&*snap, i)).collect();
    let index = LeafIndex::open(dir.path()).unwrap();
    for round in 0..2 {
        for (i, h) in hashes.iter().enumerate() {
            assert_eq!(index.find(&*snap, h, 13).unwrap(), Some(i as u64), "round {round}, leaf {i}");
            assert_eq!(index.find(&*snap, h, i as u64).unwrap(), None, "leaf {i} is not among the first {i}");
        }
        assert_eq!(index.find(&*snap, &[7u8; 32], 13).unwrap(), None);
        assert!(!index.step(&*snap).unwrap(), "13 leaves take one step");
        assert_eq!(index.indexed(), 13);
    }
    drop((snap, store, index));
    // The same file next to a state with another, shorter history.
    let other = tempfile::tempdir().unwrap();
    make_dir(other.path(), &batches()[..2]);
    std::fs::copy(dir.path().join(tally_server::leaf_index::FILE), other.path().join(tally_server::leaf_index::FILE))
        .unwrap();
    let store = RedbStore::open(&other.path().join("state.redb")).unwrap();
    let snap = store.snapshot().unwrap();
    let index = LeafIndex::open(other.path()).unwrap();
    assert_eq!(index.indexed(), 13, "the copied file is read as it is");
    let short: Vec<_> =
        (0..).map_while(|i| snap.meta(&writer::leaf_key(i)).unwrap().map(|_| leaf_hash(&*snap, i))).collect();
    assert!(!short.is_empty() && short.len() < 13, "{}", short.len());
    let n = short.len() as u64;
    for (i, h) in short.iter().enumerate() {
        assert_eq!(index.find(&*snap, h, n).unwrap(), Some(i as u64), "before the rebuild, leaf {i}");
    }
    for h in &hashes[short.len()..] {
        assert_eq!(index.find(&*snap, h, n).unwrap(), None, "a leaf of the other history");
    }
    assert!(!index.step(&*snap).unwrap());
    assert_eq!(index.indexed(), n, "rebuilt from this state's tree");
    for (i, h) in short.iter().enumerate() {
        assert_eq!(index.find(&*snap, h, n).unwrap(), Some(i as u64), "after the rebuild, leaf {i}");
    }
    drop((snap, store, index));
    // A damaged file is replaced by an empty one, and the leaves are still found.
    std::fs::write(other.path().join(tally_server::leaf_index::FILE), b"not a redb file").unwrap();
    let store = RedbStore::open(&other.path().join("state.redb")).unwrap();
    let snap = store.snapshot().unwrap();
    let index = LeafIndex::open(other.path()).unwrap();
    assert_eq!(index.indexed(), 0);
    assert_eq!(index.find(&*snap, &short[0], n).unwrap(), Some(0));
    // Past the bound of leaves a lookup searches one by one, it answers `unavailable` with
    // how far the index got, until the index has the leaves.
    index.set_tail_scan_max(n - 1);
    let e = index.find(&*snap, &short[0], n).unwrap_err();
    assert_eq!(e.code, tally_fql::error::code::UNAVAILABLE);
    assert!(e.description.contains(&format!("being built (0 of {n} leaves")), "{}", e.description);
    assert_eq!(index.find(&*snap, &short[0], n - 1).unwrap(), Some(0), "a smaller tree size is within the bound");
    assert!(!index.step(&*snap).unwrap());
    assert_eq!(index.find(&*snap, &short[0], n).unwrap(), Some(0));
    assert_eq!(index.find(&*snap, &[7u8; 32], n).unwrap(), None);
}

/// An index of a history with as many leaves as the state's, but other ones (every batch
/// one microsecond later): its root tells them apart.
#[test]
fn a_leaf_hash_index_of_another_history_of_the_same_size_is_not_believed() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    make_dir(a.path(), &batches());
    let mut later = batches();
    for batch in &mut later {
        batch.ts += 1;
    }
    make_dir(b.path(), &later);
    let hashes = |dir: &Path| -> Vec<_> {
        let store = RedbStore::open(&dir.join("state.redb")).unwrap();
        let snap = store.snapshot().unwrap();
        (0..13).map(|i| leaf_hash(&*snap, i)).collect()
    };
    let (ha, hb) = (hashes(a.path()), hashes(b.path()));
    assert!(ha.iter().zip(&hb).all(|(x, y)| x != y), "every leaf differs");
    {
        let store = RedbStore::open(&a.path().join("state.redb")).unwrap();
        let index = LeafIndex::open(a.path()).unwrap();
        assert!(!index.step(&*store.snapshot().unwrap()).unwrap());
        assert_eq!(index.indexed(), 13);
    }
    let file = tally_server::leaf_index::FILE;
    std::fs::copy(a.path().join(file), b.path().join(file)).unwrap();
    let store = RedbStore::open(&b.path().join("state.redb")).unwrap();
    let snap = store.snapshot().unwrap();
    let index = LeafIndex::open(b.path()).unwrap();
    assert_eq!(index.indexed(), 13);
    for round in ["before the rebuild", "after"] {
        for i in 0..13 {
            assert_eq!(index.find(&*snap, &hb[i], 13).unwrap(), Some(i as u64), "{round}: leaf {i}");
            assert_eq!(index.find(&*snap, &ha[i], 13).unwrap(), None, "{round}: the other history's leaf {i}");
        }
        assert!(!index.step(&*snap).unwrap());
        assert_eq!(index.indexed(), 13);
    }
}
