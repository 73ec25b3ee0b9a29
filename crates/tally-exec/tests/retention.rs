//! Retention in the executor: versions past `history_days` and documents past their `ttl`
//! are removed as part of applying batches — the same ones at the same height on every
//! replica, a bounded share per batch, listed in each block's removal record whose
//! effect leaves the block's effects root covers — and a replica rebuilt from a snapshot
//! or a restart goes on removing exactly as the others do.

mod common;
use common::{input, obj};

use std::sync::Arc;

use serde_json::json;
use tally_apply::{Batch, ReplicatedMachine, StateMachine};
use tally_exec::machine::{retention_key, FqlMachine};
use tally_ledger::leaf::{decode_removals, SPACE_DOCS};
use tally_storage::{MemStore, Space, Store};

const DAY: u64 = 86_400_000_000;
const T0: u64 = 1_800_000_000_000_000;

/// Two collections (history kept 1 day; forever) and an index; 60 documents updated 20
/// times each in the first; documents with a `ttl` of one hour; then, days later, small
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
    for i in 0..12u64 {
        let height = batches.len() as u64 + 1;
        batches.push(Batch {
            height,
            ts: T0 + 3 * DAY + i * 1000,
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

fn head(m: &FqlMachine) -> [u8; 32] {
    m.head.lock().unwrap().as_ref().map(|h| h.hash()).unwrap()
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
    // Replica c stops halfway through the quiet batches and restarts from its store.
    let restart_at = all.len() - 6;
    // Replica d joins from a's snapshot after the writes, before the sweeps.
    let (_sd, mut d) = machine();
    let joins_at = all.len() - 12;
    let mut before = 0;
    for (i, batch) in all.iter().enumerate() {
        if i == joins_at {
            before = versions(&*sa, Space::Docs);
            d.import(&a.export().unwrap()).unwrap();
        }
        if i == restart_at {
            drop(std::mem::replace(&mut c, FqlMachine::open(sc.clone()).unwrap()));
        }
        let out = a.apply(batch);
        assert_eq!(out, b.apply(batch), "outputs differ at height {}", batch.height);
        assert_eq!(out, c.apply(batch), "outputs differ at height {}", batch.height);
        if i >= joins_at {
            assert_eq!(out, d.apply(batch));
            assert_eq!(head(&a), head(&d), "a member from a snapshot differs at height {}", batch.height);
        }
        assert_eq!(head(&a), head(&b), "block hash differs at height {}", batch.height);
        assert_eq!(head(&a), head(&c), "block hash differs at height {}", batch.height);
    }
    let after = versions(&*sa, Space::Docs);
    // 60 documents × 20 versions: each keeps only its newest; the expired document goes.
    assert!(before - after > 60 * 19, "removed {} of {before} versions", before - after);
    // The removals are spread over several blocks (1,024 a block), each listed in its
    // block's removal record.
    let snap = sa.snapshot().unwrap();
    let mut listed = 0;
    let mut blocks = 0;
    for h in 1..=all.len() as u64 {
        if let Some(rec) = snap.meta(&retention_key(h)).unwrap() {
            let rs = decode_removals(&rec).unwrap();
            assert!(rs.iter().filter(|r| r.space == SPACE_DOCS).count() <= 1024);
            listed += rs.iter().filter(|r| r.space == SPACE_DOCS).count();
            blocks += 1;
        }
    }
    assert_eq!(listed, before - after, "every removed version is in some block's removal record");
    // The index entries' superseded versions went too: 60 × 19 adds and removes of old
    // values, and the expired document's entry.
    let entries = versions(&*sa, Space::Index);
    assert_eq!(entries, 60, "one entry version per document is left, {entries} are");
    assert!(blocks >= 2, "a backlog of 1,140 removals takes more than one block ({blocks})");
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
/// logging (nothing on a fresh store, v4's 15 minutes after a superseding write, never
/// once nothing is left to go as time passes), the same on every replica and across a
/// restart.
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
        Batch {
            height: 2,
            ts: T0 + 1000,
            rules: tally_exec::RULES,
            inputs: vec![input(json!({"create": doc, "params": obj(json!({"data": obj(json!({"n": 1}))}))}), 2)],
        },
        Batch {
            height: 3,
            ts: T0 + 2000,
            rules: tally_exec::RULES,
            inputs: vec![input(json!({"update": doc, "params": obj(json!({"data": obj(json!({"n": 2}))}))}), 3)],
        },
    ];
    let due = T0 + 2000 + OFFSET;
    // Empty batches: one before the update's version is 15 minutes old, one at it.
    all.push(Batch { height: 4, ts: due - 1, rules: tally_exec::RULES, inputs: Vec::new() });
    all.push(Batch { height: 5, ts: due, rules: tally_exec::RULES, inputs: Vec::new() });
    for batch in &all {
        let out = a.apply(batch);
        assert_eq!(out, b.apply(batch));
        assert_eq!(out.len(), batch.inputs.len());
        assert_eq!(head(&a), head(&b), "block hash differs at height {}", batch.height);
        let want = match batch.height {
            1 | 2 => u64::MAX,
            3 | 4 => due,
            _ => u64::MAX,
        };
        assert_eq!(a.retention_due.load(Ordering::Acquire), want, "retention_due after height {}", batch.height);
        assert_eq!(b.retention_due.load(Ordering::Acquire), want);
    }
    let snap = store.snapshot().unwrap();
    assert!(snap.meta(&retention_key(4)).unwrap().is_none(), "a minute early: nothing goes");
    let removed = decode_removals(&snap.meta(&retention_key(5)).unwrap().unwrap()).unwrap();
    assert_eq!(removed.iter().filter(|r| r.space == SPACE_DOCS).count(), 1, "the superseded version goes: {removed:?}");
    let h = a.head.lock().unwrap().unwrap();
    assert_eq!((h.height, h.txn_count, h.first_ts, h.last_ts), (5, 0, due, due), "an empty block at its own ts");
    assert_eq!(a.last_commit_ts(), due, "the next batch commits above it");
    drop(snap);
    // A restart knows what the sweeps knew.
    let reopened = FqlMachine::open(store.clone()).unwrap();
    assert_eq!(reopened.retention_due.load(Ordering::Acquire), u64::MAX);
    drop(reopened);
    // A write after the empty batch commits above its ts, and the next due follows it.
    let later =
        Batch { height: 6, ts: due - 5, rules: tally_exec::RULES, inputs: vec![input(json!({"delete": doc}), 4)] };
    a.apply(&later);
    assert_eq!(a.head.lock().unwrap().unwrap().first_ts, due + 1);
    assert_eq!(a.retention_due.load(Ordering::Acquire), due + 1 + OFFSET);
}
