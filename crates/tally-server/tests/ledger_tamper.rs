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
use tally_server::ledger_check::{verify_dir, verify_dir_with, Finding};
use tally_server::machine::{block_key, FqlMachine, TxnInput};
use tally_storage::{RedbStore, Space, Store, Ts};

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
        .map(|(i, inputs)| Batch { height: i as u64 + 1, ts: 1_800_000_000_000_000 + i as u64 * 1000, inputs })
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
    let store = RedbStore::open(&dir.join("state.redb")).unwrap();
    let v = store.snapshot().unwrap().meta(name).unwrap().unwrap();
    v
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
    let id = NodeId::new(2, 1); // leaves 4..8, completed by leaf 7
    let node = flip(meta(dir.path(), &writer::node_key(id)), 0);
    edit(dir.path(), |b| b.set_meta(&writer::node_key(id), &node).unwrap());
    let e = verify_dir(dir.path()).unwrap_err();
    assert!(matches!(e, Finding::Leaf { index: 7, .. }), "{e}");

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
    let mut log =
        FileLog::open_with(&dir.path().join("log"), tally_calvin::LogOptions { segment_bytes_max: 1 }).unwrap();
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
    let mut log = FileLog::create_at(scratch.path(), tally_calvin::LogOptions { segment_bytes_max: 1 }, 2, 0).unwrap();
    log.append(&changed[1]).unwrap();
    drop(log);
    std::fs::rename(scratch.path().join(tally_calvin::segment_name(2)), &seg).unwrap();
    let e = verify_dir_with(dir.path(), Some(archive.path())).unwrap_err();
    assert!(matches!(e, Finding::Block { height: 2, .. }), "{e}");
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
    let mid = raw.len() / 3;
    raw[mid] ^= 0x10;
    std::fs::write(&path, raw).unwrap();
    let e = verify_dir(dir.path()).unwrap_err();
    assert!(matches!(e, Finding::Block { .. }), "{e}");
}

/// The tamper workload, then the accounts collection's history cut to 0 days and the
/// accounts updated, then a quiet batch a day later: its sweep removes every superseded
/// version.
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
    all.push(Batch { height: all.len() as u64 + 1, ts, inputs: next });
    let quiet = vec![input(json!({"new_id": null}), 90)];
    all.push(Batch { height: all.len() as u64 + 1, ts: ts + 86_400_000_000, inputs: quiet });
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
    // With history_days 0 the block of the updates removes what they superseded.
    let last = all.len() as u64 - 1;
    let rec = meta(dir.path(), &tally_server::machine::retention_key(last));
    let removed = tally_ledger::leaf::decode_removals(&rec).unwrap();
    assert_eq!(removed.len(), 12, "the 12 superseded account versions are removed");
    let r = verify_dir(dir.path()).unwrap();
    assert_eq!((r.blocks, r.leaves), (last + 1, 13 + 13 + 1));
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
}
