//! What a retention sweep costs the executor per batch, on redb (prints figures; not run
//! by CI): `cargo test --release -p tally-server --test retention_cost -- --ignored --nocapture`.
//! A store of 20,000 documents (one index) in a collection that keeps 30 days of history,
//! so a sweep looks at its full share of keys and finds nothing to remove: the steady
//! cost every batch pays.

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tally_calvin::{Batch, StateMachine};
use tally_fql::retention::{sweep, sweep_index, SweepLimits};
use tally_server::machine::{FqlMachine, TxnInput};
use tally_storage::{RedbStore, Store};

fn input(q: serde_json::Value) -> Vec<u8> {
    let inp = TxnInput {
        q,
        db: 0,
        role: "admin".into(),
        entropy: [1; 32],
        steps_max: 10_000_000,
        identity: None,
        token: None,
        jwt: None,
    };
    tally_server::record::encode_input(&inp).unwrap()
}

#[test]
#[ignore]
fn sweep_cost_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("state.redb")).unwrap());
    let mut m = FqlMachine::open(store.clone()).unwrap();
    let c = json!({"collection": "c"});
    let obj = |v: serde_json::Value| json!({ "object": v });
    let mut batches = vec![vec![
        input(json!({"create_collection": obj(json!({"name": "c"}))})),
        input(
            json!({"create_index": obj(json!({"name": "by_n", "source": c, "terms": [obj(json!({"field": ["data", "n"]}))]}))}),
        ),
    ]];
    for b in 0..20 {
        let creates: Vec<_> = (0..1000)
            .map(|i| json!({"create": c, "params": obj(json!({"data": obj(json!({"n": b * 1000 + i}))}))}))
            .collect();
        batches.push(vec![input(json!({"do": creates}))]);
    }
    for (i, inputs) in batches.into_iter().enumerate() {
        m.apply(&Batch {
            height: i as u64 + 1,
            ts: 1_800_000_000_000_000 + i as u64 * 1000,
            rules: tally_exec::RULES,
            inputs,
        });
    }
    let snap = store.snapshot().unwrap();
    let now = 1_800_000_100_000_000;
    let limits = SweepLimits::default();
    for (what, index) in [("documents", false), ("index entries", true)] {
        let (mut cursor, mut keys, calls) = (None, 0, 200);
        let t = Instant::now();
        for _ in 0..calls {
            let s = if index {
                sweep_index(&*snap, now, cursor.as_deref(), limits)
            } else {
                sweep(&*snap, now, cursor.as_deref(), limits)
            }
            .unwrap();
            assert!(s.removals.is_empty());
            keys += s.keys;
            cursor = s.next;
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / calls as f64;
        println!("retention sweep of {what}: {us:.0} µs per batch ({} keys looked at per batch)", keys / calls);
    }
}
