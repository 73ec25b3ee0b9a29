//! Retention in the executor: versions past `history_days` and documents past their `ttl`
//! are removed as part of applying batches — the same ones at the same height on every
//! replica, a bounded share per sweep, listed in each block's removal record whose
//! effect leaves the block's effects root covers — and a replica rebuilt from a snapshot
//! or a restart goes on removing exactly as the others do. Batches with inputs sweep at a
//! commit-ts cadence (`tally_exec::sweep_spacing`, rules 4), and only while a pass is
//! under way or something could be removable (`tally_exec::sweep_due`, rules 6): which
//! batches sweep is part of what every replica, restart and replay must compute alike.

mod common;
use common::{input, obj};

use std::sync::Arc;

use serde_json::json;
use tally_apply::{Batch, ReplicatedMachine, StateMachine};
use tally_exec::machine::{retention_key, FqlMachine, META_RETENTION_SWEPT_TS};
use tally_exec::sweep_spacing::{SWEEP_CREDIT_SPACINGS_MAX, SWEEP_SPACING_MICROS};
use tally_ledger::leaf::{decode_removals, SPACE_DOCS};
use tally_storage::{MemStore, Space, Store};

const DAY: u64 = 86_400_000_000;
const T0: u64 = 1_800_000_000_000_000;

/// Quiet batches (one read each) at the end of [`batches`], 6 ms of commit ts apart: every
/// other one sweeps (`SWEEP_SPACING_MICROS` is 10 ms) until the backlog is gone.
const QUIET: u64 = 24;
const QUIET_APART: u64 = 6_000;

/// Two collections (history kept 1 day; forever) and an index; 60 documents updated 20
/// times each in the first (batches 1 ms apart, none of which sweeps: nothing can be
/// removed for 15 minutes); documents with a `ttl` of one hour; then, days later, small
/// batches that give the sweeps their turns.
fn batches() -> Vec<Batch> {
    let short = json!({"collection": "short"});
    let mut out = vec![vec![
        input(json!({"create_collection": obj(json!({"name": "short", "history_days": 1}))}), 1),
        input(json!({"create_collection": obj(json!({"name": "forever", "history_days": null}))}), 2),
        input(
            json!({"create_index": obj(json!({"name": "by_n", "source": short, "terms": [obj(json!({"field": ["data", "n"]}))]}))}),
            3,
        ),
    ]];
    out.push(
        (0..60u64)
            .map(|i| {
                let r = json!({"ref": short, "id": (i + 1).to_string()});
                input(json!({"create": r, "params": obj(json!({"data": obj(json!({"n": 0}))}))}), 10 + i as u8)
            })
            .collect(),
    );
    for n in 1..20 {
        out.push(
            (0..60u64)
                .map(|i| {
                    let r = json!({"ref": short, "id": (i + 1).to_string()});
                    input(json!({"update": r, "params": obj(json!({"data": obj(json!({"n": n}))}))}), n as u8)
                })
                .collect(),
        );
    }
    let ttl = json!({"@ts": "2027-01-15T09:00:00Z"}); // an hour after T0
    out.push(vec![
        input(json!({"create": {"ref": short, "id": "1000"}, "params": obj(json!({"data": obj(json!({"n": 7})), "ttl": ttl}))}), 90),
        input(json!({"create": {"ref": {"collection": "forever"}, "id": "1"}, "params": obj(json!({"data": obj(json!({"n": 1}))}))}), 91),
        input(json!({"update": {"ref": {"collection": "forever"}, "id": "1"}, "params": obj(json!({"data": obj(json!({"n": 2}))}))}), 92),
    ]);
    let mut batches: Vec<Batch> = out
        .into_iter()
        .enumerate()
        .map(|(i, inputs)| Batch { height: i as u64 + 1, ts: T0 + i as u64 * 1000, rules: tally_exec::RULES, inputs })
        .collect();
    // Three days later: quiet batches, one read each.
    for i in 0..QUIET {
        let height = batches.len() as u64 + 1;
        batches.push(Batch {
            height,
            ts: T0 + 3 * DAY + i * QUIET_APART,
            rules: tally_exec::RULES,
            inputs: vec![input(json!({"new_id": null}), 99)],
        });
    }
    batches
}

fn machine() -> (Arc<dyn Store>, FqlMachine) {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let m = FqlMachine::open(store.clone()).unwrap();
    (store, m)
}

fn swept_ts(store: &dyn Store) -> Option<u64> {
    let b = store.snapshot().unwrap().meta(META_RETENTION_SWEPT_TS).unwrap()?;
    Some(u64::from_be_bytes(b.as_slice().try_into().unwrap()))
}

fn head(m: &FqlMachine) -> [u8; 32] {
    m.head.lock().unwrap().as_ref().map(|h| h.hash()).unwrap()
}

fn snap_has_no_removals(store: &dyn Store, height: u64) -> bool {
    store.snapshot().unwrap().meta(&retention_key(height)).unwrap().is_none()
}

fn versions(store: &dyn Store, space: Space) -> usize {
    let snap = store.snapshot().unwrap();
    let keys: Vec<Vec<u8>> = snap.scan(space, &[], None, false, u64::MAX).unwrap().map(|r| r.unwrap().0).collect();
    keys.iter().map(|k| snap.history(space, k, 0, u64::MAX, true).unwrap().count()).sum()
}

#[test]
fn replicas_remove_the_same_versions_at_the_same_heights() {
    let all = batches();
    let (sa, mut a) = machine();
    let (_sb, mut b) = machine();
    let (sc, mut c) = machine();
    // Replica d joins from a's snapshot after the writes, before the sweeps; replica c
    // stops in the quiet batches and restarts from its store, and replica e joins there
    // from a's snapshot, each after a batch that swept with the index entries' pass under
    // way (the next one does not sweep).
    let (_sd, mut d) = machine();
    let (_se, mut e) = machine();
    let joins_at = all.len() - QUIET as usize;
    let restart_at = joins_at + 3;
    let e_joins_at = joins_at + 5;
    let mut before = 0;
    // Heights whose batch swept (it wrote the swept ts), on a.
    let mut swept = Vec::new();
    for (i, batch) in all.iter().enumerate() {
        if i == joins_at {
            before = versions(&*sa, Space::Docs);
            d.import(&a.export().unwrap()).unwrap();
        }
        if i == e_joins_at {
            e.import(&a.export().unwrap()).unwrap();
        }
        if i == restart_at {
            drop(std::mem::replace(&mut c, FqlMachine::open(sc.clone()).unwrap()));
        }
        let last = swept_ts(&*sa);
        let out = a.apply(batch);
        if swept_ts(&*sa) != last {
            assert_eq!(swept_ts(&*sa), Some(a.last_commit_ts()));
            swept.push(batch.height);
        } else {
            assert!(snap_has_no_removals(&*sa, batch.height), "a batch that did not sweep removed something");
        }
        assert_eq!(out, b.apply(batch), "outputs differ at height {}", batch.height);
        assert_eq!(out, c.apply(batch), "outputs differ at height {}", batch.height);
        if i >= joins_at {
            assert_eq!(out, d.apply(batch));
            assert_eq!(head(&a), head(&d), "a member from a snapshot differs at height {}", batch.height);
        }
        if i >= e_joins_at {
            assert_eq!(out, e.apply(batch));
            assert_eq!(head(&a), head(&e), "a member from a later snapshot differs at height {}", batch.height);
        }
        assert_eq!(head(&a), head(&b), "block hash differs at height {}", batch.height);
        assert_eq!(head(&a), head(&c), "block hash differs at height {}", batch.height);
    }
    // The 22 write batches: none swept (the first removable version is 15 minutes after
    // the first write). The quiet batches 6 ms apart: the first (days later) and every
    // other one while the passes are under way, then none (nothing is left to go).
    let quiet0 = all.len() as u64 - QUIET + 1;
    let n = swept.len() as u64;
    let want: Vec<u64> = (0..n).map(|i| quiet0 + 2 * i).collect();
    assert_eq!(swept, want, "the heights that swept");
    assert!((4..QUIET / 2).contains(&n), "{n} sweeps work off the backlog, and then they stop");
    assert!(swept.contains(&all[restart_at - 1].height), "c restarts after a sweep");
    assert!(swept.contains(&all[e_joins_at - 1].height), "e joins after a sweep");
    let due = a.retention_due.load(std::sync::atomic::Ordering::Acquire);
    assert_eq!(due, u64::MAX, "nothing left that time alone makes removable");
    let after = versions(&*sa, Space::Docs);
    // 60 documents × 20 versions: each keeps only its newest; the expired document goes.
    assert!(before - after > 60 * 19, "removed {} of {before} versions", before - after);
    // The removals are spread over several blocks (1,024 for each 10 ms of commit ts since
    // the last sweep, at most 4,096 a block), each listed in its block's removal record.
    let snap = sa.snapshot().unwrap();
    let mut listed = 0;
    let mut blocks = 0;
    for h in 1..=all.len() as u64 {
        if let Some(rec) = snap.meta(&retention_key(h)).unwrap() {
            let rs = decode_removals(&rec).unwrap();
            assert!(rs.iter().filter(|r| r.space == SPACE_DOCS).count() <= 1024 * SWEEP_CREDIT_SPACINGS_MAX as usize);
            listed += rs.iter().filter(|r| r.space == SPACE_DOCS).count();
            blocks += 1;
        }
    }
    assert_eq!(listed, before - after, "every removed version is in some block's removal record");
    // The index entries' superseded versions went too: 60 × 19 adds and removes of old
    // values, and the expired document's entry.
    let entries = versions(&*sa, Space::Index);
    assert_eq!(entries, 60, "one entry version per document is left, {entries} are");
    assert!(blocks >= 2, "the index entries' backlog (60 × 19 adds and removes) takes more than one block ({blocks})");
    // The remaining state: the latest version of each document reads as before.
    let q = json!({"paginate": {"match": {"index": "by_n"}, "terms": 19}, "size": 100});
    let out = a.apply(&Batch {
        height: all.len() as u64 + 1,
        ts: T0 + 4 * DAY,
        rules: tally_exec::RULES,
        inputs: vec![input(q, 1)],
    });
    let out = String::from_utf8(tally_exec::record::decode_output(&out[0]).unwrap().body).unwrap();
    assert_eq!(out.matches("\"@ref\"").count() / 3, 60, "every document is still found: {out}");
}

/// An empty batch (an idle log's, `tally_apply::IdleSweep`) is a block of its own with no
/// transactions whose sweep runs at its ts; `retention_due` says when one is worth
/// logging (nothing on a fresh store, v4's 15 minutes after a write in a collection of
/// `history_days: 0`, never once nothing is left to go as time passes), the same on every
/// replica and across a restart; an empty batch before then does not sweep.
#[test]
fn empty_batches_sweep_and_retention_due_says_when() {
    use std::sync::atomic::Ordering;
    const OFFSET: u64 = tally_fql::retention::MVT_OFFSET_MICROS;
    let (store, mut a) = machine();
    let (_sb, mut b) = machine();
    assert_eq!(a.retention_due.load(Ordering::Acquire), u64::MAX, "a fresh store has nothing to remove");
    let doc = json!({"ref": {"collection": "short"}, "id": "1"});
    let mut all = vec![
        Batch {
            height: 1,
            ts: T0,
            rules: tally_exec::RULES,
            inputs: vec![input(json!({"create_collection": obj(json!({"name": "short", "history_days": 0}))}), 1)],
        },
        // The batches with inputs 10 ms apart (`SWEEP_SPACING_MICROS`): none sweeps,
        // nothing can be removed yet.
        Batch {
            height: 2,
            ts: T0 + SWEEP_SPACING_MICROS,
            rules: tally_exec::RULES,
            inputs: vec![input(json!({"create": doc, "params": obj(json!({"data": obj(json!({"n": 1}))}))}), 2)],
        },
        Batch {
            height: 3,
            ts: T0 + 2 * SWEEP_SPACING_MICROS,
            rules: tally_exec::RULES,
            inputs: vec![input(json!({"update": doc, "params": obj(json!({"data": obj(json!({"n": 2}))}))}), 3)],
        },
    ];
    // The create's bound: 15 minutes after it (a write can make something removable only
    // once the floor reaches it). The update's version makes the create removable 15
    // minutes after the update.
    let first = T0 + SWEEP_SPACING_MICROS + OFFSET;
    let due = T0 + 2 * SWEEP_SPACING_MICROS + OFFSET;
    // Empty batches: one before the create's bound (no sweep), one after it but before
    // the update's version is 15 minutes old (a sweep that finds nothing and learns
    // `due`), one at it.
    all.push(Batch { height: 4, ts: first - 1, rules: tally_exec::RULES, inputs: Vec::new() });
    all.push(Batch { height: 5, ts: due - 1, rules: tally_exec::RULES, inputs: Vec::new() });
    all.push(Batch { height: 6, ts: due, rules: tally_exec::RULES, inputs: Vec::new() });
    let mut swept = Vec::new();
    for batch in &all {
        let last = swept_ts(&*store);
        let out = a.apply(batch);
        if swept_ts(&*store) != last {
            swept.push(batch.height);
        }
        assert_eq!(out, b.apply(batch));
        assert_eq!(out.len(), batch.inputs.len());
        assert_eq!(head(&a), head(&b), "block hash differs at height {}", batch.height);
        let want = match batch.height {
            1 => u64::MAX,
            2..=4 => first,
            5 => due,
            _ => u64::MAX,
        };
        assert_eq!(a.retention_due.load(Ordering::Acquire), want, "retention_due after height {}", batch.height);
        assert_eq!(b.retention_due.load(Ordering::Acquire), want);
    }
    assert_eq!(swept, vec![5, 6], "only the empty batches at or after a due ts sweep");
    let snap = store.snapshot().unwrap();
    assert!(snap.meta(&retention_key(5)).unwrap().is_none(), "a microsecond early: nothing goes");
    let removed = decode_removals(&snap.meta(&retention_key(6)).unwrap().unwrap()).unwrap();
    assert_eq!(removed.iter().filter(|r| r.space == SPACE_DOCS).count(), 1, "the superseded version goes: {removed:?}");
    let h = a.head.lock().unwrap().unwrap();
    assert_eq!((h.height, h.txn_count, h.first_ts, h.last_ts), (6, 0, due, due), "an empty block at its own ts");
    assert_eq!(a.last_commit_ts(), due, "the next batch commits above it");
    drop(snap);
    // A restart knows what the sweeps knew.
    let reopened = FqlMachine::open(store.clone()).unwrap();
    assert_eq!(reopened.retention_due.load(Ordering::Acquire), u64::MAX);
    drop(reopened);
    // A write after the empty batch commits above its ts, 1 µs after its sweep: it does not
    // sweep, and its deletion can go 15 minutes after it.
    let later =
        Batch { height: 7, ts: due - 5, rules: tally_exec::RULES, inputs: vec![input(json!({"delete": doc}), 4)] };
    a.apply(&later);
    assert_eq!(a.head.lock().unwrap().unwrap().first_ts, due + 1);
    assert_eq!(swept_ts(&*store), Some(due), "the write did not sweep");
    let after_delete = due + 1 + OFFSET;
    assert_eq!(a.retention_due.load(Ordering::Acquire), after_delete);
    let reopened = FqlMachine::open(store.clone()).unwrap();
    assert_eq!(reopened.retention_due.load(Ordering::Acquire), after_delete, "across a restart");
    drop(reopened);
    // An empty batch before then does not sweep; one at it removes the document.
    a.apply(&Batch { height: 8, ts: due + 2, rules: tally_exec::RULES, inputs: Vec::new() });
    assert_eq!(swept_ts(&*store), Some(due));
    a.apply(&Batch { height: 9, ts: after_delete, rules: tally_exec::RULES, inputs: Vec::new() });
    assert_eq!(swept_ts(&*store), Some(after_delete));
    let snap = store.snapshot().unwrap();
    let removed = decode_removals(&snap.meta(&retention_key(9)).unwrap().unwrap()).unwrap();
    assert_eq!(removed.iter().filter(|r| r.space == SPACE_DOCS).count(), 2, "the update and the deletion: {removed:?}");
    assert_eq!(a.retention_due.load(Ordering::Acquire), u64::MAX);
}

/// Executor rules 4: a batch with inputs sweeps only when its last commit ts is at least
/// `SWEEP_SPACING_MICROS` past the last sweep's (meta `retention_swept_ts`); one closer
/// removes nothing even when something is removable, and the next one past the spacing
/// removes it. Rules 6: a batch past the spacing with nothing removable does not sweep. A
/// restart, a member installed from a snapshot and a replay of the log on a fresh store
/// decide the same way at every height (same blocks, same removal records).
#[test]
fn batches_closer_than_the_spacing_do_not_sweep_and_replays_agree() {
    use std::sync::atomic::Ordering;
    const HOUR: u64 = 3_600_000_000;
    let t1 = T0 + 2 * HOUR;
    let doc = |id: &str| json!({"ref": {"collection": "short"}, "id": id});
    // Two versions an hour old (under the floor of `history_days: 0`, 15 minutes): the
    // first is removable as soon as the second is written.
    let past_pair = |id: &str, seed: u8| {
        vec![
            input(
                json!({"insert": doc(id), "ts": {"@ts": "2027-01-15T09:00:00Z"}, "action": "create", "params": obj(json!({"data": obj(json!({"n": 1}))}))}),
                seed,
            ),
            input(
                json!({"insert": doc(id), "ts": {"@ts": "2027-01-15T09:00:01Z"}, "action": "update", "params": obj(json!({"data": obj(json!({"n": 2}))}))}),
                seed + 1,
            ),
        ]
    };
    let noise = |seed: u8| vec![input(json!({"new_id": null}), seed)];
    let mut all = Vec::new();
    let mut push = |ts: u64, inputs: Vec<Vec<u8>>| {
        all.push(Batch { height: all.len() as u64 + 1, ts, rules: tally_exec::RULES, inputs });
    };
    push(T0, vec![input(json!({"create_collection": obj(json!({"name": "short", "history_days": 0}))}), 1)]);
    push(t1, noise(2)); // 2: nothing written yet: nothing to sweep
    push(t1 + 1, past_pair("1", 3)); // 3: removable at once: sweeps, removes doc 1's create
    push(t1 + 2, past_pair("2", 5)); // 4: 1 µs later: does not sweep
    push(t1 + SWEEP_SPACING_MICROS, noise(7)); // 5: still within the spacing
    push(t1 + SWEEP_SPACING_MICROS + 2, noise(8)); // 6: 10 ms after 3's last commit: sweeps, removes doc 2's create
    push(t1 + SWEEP_SPACING_MICROS + 3, past_pair("3", 9)); // 7: does not sweep
    push(t1 + 2 * SWEEP_SPACING_MICROS, noise(11)); // 8: does not
    push(t1 + 2 * SWEEP_SPACING_MICROS + 5, Vec::new()); // 9: an empty batch sweeps whatever the spacing
    push(t1 + 4 * SWEEP_SPACING_MICROS, noise(12)); // 10: past the spacing, nothing left: does not
    push(t1 + 4 * SWEEP_SPACING_MICROS + 1, past_pair("4", 13)); // 11: removable, past it: sweeps
    let (sa, mut a) = machine();
    let mut swept = Vec::new();
    let mut heads = Vec::new();
    for batch in &all {
        let last = swept_ts(&*sa);
        a.apply(batch);
        if swept_ts(&*sa) != last {
            swept.push(batch.height);
        }
        heads.push(head(&a));
        let due = a.retention_due.load(Ordering::Acquire);
        if [4, 5, 7, 8].contains(&batch.height) {
            assert!(due <= batch.ts, "a removable version no sweep saw: due at once ({due})");
        } else {
            assert_eq!(due, u64::MAX, "nothing removable after height {}", batch.height);
        }
    }
    assert_eq!(swept, vec![3, 6, 9, 11]);
    assert_eq!(swept_ts(&*sa), Some(t1 + 4 * SWEEP_SPACING_MICROS + 2), "11's last commit ts");
    let snap = sa.snapshot().unwrap();
    let removed_at = |h: u64| match snap.meta(&retention_key(h)).unwrap() {
        None => 0,
        Some(rec) => decode_removals(&rec).unwrap().iter().filter(|r| r.space == SPACE_DOCS).count(),
    };
    let removed: Vec<usize> = (1..=all.len() as u64).map(removed_at).collect();
    assert_eq!(removed, vec![0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 1], "each superseded create goes at the next sweep");
    drop(snap);
    replays_agree(&all, &heads);
}

/// A replay of the whole log `all` on a fresh store, a machine reopened before every
/// batch, and members installed from a snapshot after each height compute the block
/// `heads` gives at every height.
fn replays_agree(all: &[Batch], heads: &[[u8; 32]]) {
    let (_sr, mut replay) = machine();
    let (sc, mut cold) = machine();
    for (i, batch) in all.iter().enumerate() {
        replay.apply(batch);
        assert_eq!(head(&replay), heads[i], "a replay differs at height {}", batch.height);
        cold = {
            drop(cold);
            FqlMachine::open(sc.clone()).unwrap()
        };
        cold.apply(batch);
        assert_eq!(head(&cold), heads[i], "a reopened machine differs at height {}", batch.height);
    }
    for at in 1..all.len() {
        let (_sj, mut joined) = machine();
        let (_sp, mut source) = machine();
        for batch in &all[..at] {
            source.apply(batch);
        }
        joined.import(&source.export().unwrap()).unwrap();
        for (i, batch) in all.iter().enumerate().skip(at) {
            joined.apply(batch);
            assert_eq!(
                head(&joined),
                heads[i],
                "a member from the snapshot at {at} differs at height {}",
                batch.height
            );
        }
    }
}

/// Executor rules 6: under load in a collection that keeps 30 days of history no batch
/// sweeps, however far apart (nothing can be removable for 30 days and 15 minutes); index
/// entries, bounded at 15 minutes after their writes, get a pass of their own then, which
/// learns when they are next due and leaves the documents' cursor alone; lowering the
/// collection's `history_days` makes both due at once, and that batch removes what the
/// new history hides. Replicas, a replay and a member installed from a snapshot agree.
#[test]
fn sweeps_run_only_when_something_could_be_removable() {
    use std::sync::atomic::Ordering;
    use tally_exec::machine::{META_RETENTION_CURSOR, META_RETENTION_INDEX_CURSOR};
    const OFFSET: u64 = tally_fql::retention::MVT_OFFSET_MICROS;
    const SP: u64 = SWEEP_SPACING_MICROS;
    let long = json!({"collection": "long"});
    let doc = json!({"ref": long, "id": "1"});
    let mut all = Vec::new();
    let mut push = |ts: u64, inputs: Vec<Vec<u8>>| {
        all.push(Batch { height: all.len() as u64 + 1, ts, rules: tally_exec::RULES, inputs });
    };
    push(
        T0,
        vec![
            input(json!({"create_collection": obj(json!({"name": "long", "history_days": 30}))}), 1),
            input(
                json!({"create_index": obj(json!({"name": "long_by_n", "source": long, "terms": [obj(json!({"field": ["data", "n"]}))]}))}),
                2,
            ),
        ],
    );
    push(T0 + SP, vec![input(json!({"create": doc, "params": obj(json!({"data": obj(json!({"n": 0}))}))}), 3)]);
    for n in 1..=4u64 {
        let upd = json!({"update": doc, "params": obj(json!({"data": obj(json!({"n": n}))}))});
        push(T0 + (n + 1) * SP, vec![input(upd, 3 + n as u8)]);
    }
    // 7: 15 minutes after the first index entry: the index entries' pass only.
    push(T0 + SP + OFFSET, vec![input(json!({"new_id": null}), 20)]);
    // 8: an hour later, `history_days` lowered to 0: the four superseded versions go.
    let lower = json!({"update": {"collection": "long"}, "params": obj(json!({"history_days": 0}))});
    push(T0 + 3_600_000_000, vec![input(lower, 21)]);
    let (sa, mut a) = machine();
    let (_sb, mut b) = machine();
    let mut swept = Vec::new();
    let mut heads = Vec::new();
    for batch in &all {
        let last = swept_ts(&*sa);
        let out = a.apply(batch);
        assert_eq!(out, b.apply(batch));
        assert_eq!(head(&a), head(&b), "block hash differs at height {}", batch.height);
        if swept_ts(&*sa) != last {
            swept.push(batch.height);
        }
        heads.push(head(&a));
        let due = a.retention_due.load(Ordering::Acquire);
        match batch.height {
            1 => assert_eq!(due, u64::MAX, "collections and indexes alone: nothing to remove"),
            2..=6 => assert_eq!(due, T0 + SP + OFFSET, "the first index entry's bound, at height {}", batch.height),
            7 => assert!(due > T0 + 30 * DAY, "30 days of history ahead ({due})"),
            _ => {}
        }
    }
    assert_eq!(swept, vec![7, 8], "the writes 10 ms apart never sweep");
    let snap = sa.snapshot().unwrap();
    assert!(snap.meta(&retention_key(7)).unwrap().is_none(), "nothing goes at 7");
    let cursor = |name: &str| snap.meta(name).unwrap().unwrap_or_default();
    assert!(cursor(META_RETENTION_CURSOR).is_empty() && cursor(META_RETENTION_INDEX_CURSOR).is_empty());
    let removed = decode_removals(&snap.meta(&retention_key(8)).unwrap().unwrap()).unwrap();
    assert_eq!(removed.iter().filter(|r| r.space == SPACE_DOCS).count(), 4, "{removed:?}");
    assert!(removed.iter().any(|r| r.space != SPACE_DOCS), "and the superseded index entries: {removed:?}");
    drop(snap);
    // A replay, a machine reopened before every batch and members installed from a
    // snapshot at every height agree.
    replays_agree(&all, &heads);
}
