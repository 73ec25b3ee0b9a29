//! What the per-batch retention sweep costs the executor under the transfer benchmark's
//! shape (prints figures; not run by CI):
//! `cargo test --release -p tally-exec --test sweep_cost -- --ignored --nocapture`.
//!
//! The store is the server's (redb behind the write-behind queue); the schema is
//! `tally bench transfer`'s (accounts and transfers keeping the default 30 days of
//! history, an index on the accounts' bucket). Batches of transfers (two account updates
//! and one new transfer document each) are applied by the machine; after each, both
//! sweeps run once more on a write batch of the store, from the cursors the machine left,
//! as the machine's next sweep would (same view kind, the limits of a sweep 10 ms of
//! commit ts after the last one), and are timed. Nothing is old enough to remove: the
//! steady cost of one sweep in a busy store. Since executor rules 4 the machine sweeps at
//! most once per 10 ms of commit ts (`tally_exec::sweep_spacing`), not after every batch:
//! the figures are per sweep.

mod common;
use common::{account, input, obj, TransferStore};

use std::time::{Duration, Instant};

use serde_json::json;
use tally_apply::StateMachine;
use tally_exec::machine::{META_RETENTION_CURSOR, META_RETENTION_INDEX_CURSOR};
use tally_fql::retention::{sweep, sweep_index, SweepLimits};

fn transfer(from: u64, to: u64) -> serde_json::Value {
    let bal = |v: &str| json!({"select": ["data", "balance"], "from": {"var": v}});
    json!({
        "let": [{"a": {"get": account(from)}}, {"b": {"get": account(to)}}],
        "in": {"do": [
            {"update": account(from), "params": obj(json!({"data": obj(json!({"balance": {"subtract": [bal("a"), 1]}}))}))},
            {"update": account(to), "params": obj(json!({"data": obj(json!({"balance": {"add": [bal("b"), 1]}}))}))},
            {"create": {"collection": "transfers"}, "params": obj(json!({"data": obj(json!({"from": from, "to": to, "amount": 1}))}))},
            "ok"
        ]}
    })
}

fn run(accounts: u64, batches: u64, per_batch: u64) {
    let mut s = TransferStore::open("sweep-cost", accounts);
    let limits = SweepLimits::default();
    let (mut docs, mut index, mut keys) = (Duration::ZERO, Duration::ZERO, [0usize; 2]);
    let mut x = 12345u64;
    for _ in 0..batches {
        let inputs = (0..per_batch)
            .map(|i| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let from = (x >> 33) % accounts + 1;
                let to = (from + 1 + (x >> 13) % (accounts - 1)) % accounts + 1;
                input(transfer(from, to), i as u8)
            })
            .collect();
        s.apply(inputs);
        let b = s.store.begin().unwrap();
        let now = s.m.last_commit_ts();
        let cursor = b.meta(META_RETENTION_CURSOR).unwrap().filter(|c| !c.is_empty());
        let t = Instant::now();
        let s = sweep(&*b, now, cursor.as_deref(), limits).unwrap();
        docs += t.elapsed();
        keys[0] += s.keys;
        assert!(s.removals.is_empty());
        let cursor = b.meta(META_RETENTION_INDEX_CURSOR).unwrap().filter(|c| !c.is_empty());
        let t = Instant::now();
        let s = sweep_index(&*b, now, cursor.as_deref(), limits).unwrap();
        index += t.elapsed();
        keys[1] += s.keys;
        assert!(s.removals.is_empty());
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / batches as f64;
    println!(
        "{accounts} accounts, {per_batch} transfers per batch: documents {:.0} µs per batch ({} keys), \
         index entries {:.0} µs ({} keys); {:.2} µs per transfer",
        per(docs),
        keys[0] as u64 / batches,
        per(index),
        keys[1] as u64 / batches,
        (per(docs) + per(index)) / per_batch as f64
    );
    s.close();
}

#[test]
#[ignore]
fn sweep_cost_under_transfers() {
    run(10, 1500, 40);
    run(100_000, 1500, 40);
}
