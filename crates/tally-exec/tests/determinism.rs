//! The executor is deterministic: the same log applied by two fresh state machines yields
//! the same outputs and the same block hashes, batch after batch; and a machine rebuilt
//! from a checkpoint plus replay reaches the same head as one that never stopped.

mod common;
use common::{input, obj, predecoded};

use std::sync::Arc;

use serde_json::json;
use tally_apply::{Batch, StateMachine};
use tally_exec::machine::{FqlMachine, TxnInput};
use tally_storage::{MemStore, Store};

/// A small ledger workload: schema, accounts, transfers, a key, a failing transaction.
fn batches() -> Vec<Batch> {
    let accounts = json!({"collection": "accounts"});
    let mut out = vec![
        vec![
            input(json!({"create_collection": obj(json!({"name": "accounts"}))}), 1),
            input(json!({"create_index": obj(json!({"name": "by_owner", "source": accounts, "terms": [obj(json!({"field": ["data", "owner"]}))], "unique": true}))}), 2),
        ],
        (0..8)
            .map(|i| input(json!({"create": accounts, "params": obj(json!({"data": obj(json!({"owner": format!("o{i}"), "balance": 100}))}))}), 10 + i))
            .collect(),
        vec![
            input(json!({"create_key": obj(json!({"role": "server"}))}), 30),
            // Violates the unique index: aborts without effects.
            input(json!({"create": accounts, "params": obj(json!({"data": obj(json!({"owner": "o1"}))}))}), 31),
            input(json!({"new_id": null}), 32),
        ],
    ];
    // Transfers between accounts found through the index.
    for round in 0..3u8 {
        let txns = (0..6u8)
            .map(|i| {
                let from = format!("o{}", (i + round) % 8);
                let to = format!("o{}", (i * 3 + 1 + round) % 8);
                let get = |o: &str| json!({"get": {"match": {"index": "by_owner"}, "terms": o}});
                let q = json!({"let": [{"a": get(&from)}, {"b": get(&to)}], "in": {
                    "if": {"equals": [{"select": ["ref"], "from": {"var": "a"}}, {"select": ["ref"], "from": {"var": "b"}}]},
                    "then": "same",
                    "else": {"do": [
                        {"update": {"select": ["ref"], "from": {"var": "a"}}, "params": obj(json!({"data": obj(json!({"balance": {"subtract": [{"select": ["data", "balance"], "from": {"var": "a"}}, 7]}}))}))},
                        {"update": {"select": ["ref"], "from": {"var": "b"}}, "params": obj(json!({"data": obj(json!({"balance": {"add": [{"select": ["data", "balance"], "from": {"var": "b"}}, 7]}}))}))},
                        "ok"
                    ]}
                }});
                input(q, 40 + round * 10 + i)
            })
            .collect();
        out.push(txns);
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

fn machine() -> (Arc<dyn Store>, FqlMachine) {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let m = FqlMachine::open(store.clone()).unwrap();
    (store, m)
}

fn head_hash(m: &FqlMachine) -> [u8; 32] {
    m.head.lock().unwrap().as_ref().map(|h| h.hash()).unwrap()
}

#[test]
fn two_replicas_agree_on_every_output_and_block() {
    let (_s1, mut a) = machine();
    let (_s2, mut b) = machine();
    let mut saw_error = false;
    let mut transfers_ok = 0;
    for batch in batches() {
        let oa = a.apply(&batch);
        let ob = b.apply(&batch);
        assert_eq!(oa, ob, "outputs differ at height {}", batch.height);
        assert_eq!(head_hash(&a), head_hash(&b), "block hash differs at height {}", batch.height);
        saw_error |= oa.iter().any(|o| String::from_utf8_lossy(o).contains("instance not unique"));
        transfers_ok += oa.iter().filter(|o| String::from_utf8_lossy(o).contains(r#""resource":"ok""#)).count();
    }
    assert!(saw_error, "the unique violation was reported");
    assert!(transfers_ok >= 12, "most transfers applied ({transfers_ok})");
    let h = a.head.lock().unwrap().unwrap();
    assert_eq!(h.height, batches().len() as u64);
}

#[test]
fn replay_after_a_restart_reaches_the_same_head() {
    let all = batches();
    let (_s, mut straight) = machine();
    for b in &all {
        straight.apply(b);
    }
    // A second machine applies half, is dropped, reopens on the same store and applies the rest.
    let (store, mut first) = machine();
    for b in &all[..3] {
        first.apply(b);
    }
    drop(first);
    let mut reopened = FqlMachine::open(store).unwrap();
    assert_eq!(reopened.applied_height(), 3);
    for b in &all[3..] {
        reopened.apply(b);
    }
    assert_eq!(head_hash(&reopened), head_hash(&straight));
}

/// Releases after every input (a node's pacer releases on its clock instead).
struct ReleaseEachInput;

impl tally_exec::pace::Pacer for ReleaseEachInput {
    fn release_due(&mut self) -> bool {
        true
    }
    fn checkpoint_due(&mut self, batches_since: u64) -> bool {
        batches_since >= 1
    }
}

/// A long batch answers its inputs as it goes: a short write first in the batch is handed
/// over before the batch ends (the block is not yet built), already visible to readers,
/// and every output and block is the same as when the whole batch is answered at its end.
#[test]
fn a_long_batch_answers_early_inputs_early_with_the_same_results() {
    let (_s1, mut early) = machine();
    early.set_pacer(Box::new(ReleaseEachInput));
    let (_s2, mut whole) = machine();
    let setup = batches().remove(0);
    early.apply(&setup);
    whole.apply(&setup);
    let accounts = json!({"collection": "accounts"});
    let create =
        |owner: String| json!({"create": accounts, "params": obj(json!({"data": obj(json!({"owner": owner}))}))});
    let mut inputs = vec![input(create("first".into()), 1)];
    for i in 0..12 {
        let many: Vec<_> = (0..150).map(|j| create(format!("bulk-{i}-{j}"))).collect();
        inputs.push(input(json!({ "do": many }), 2 + i as u8));
    }
    let batch = Batch { height: 2, ts: 1_900_000_000_000_000, rules: tally_exec::RULES, inputs };

    let mut handed: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut first_seen_early = None;
    let (store, applied_ts, head) = (early.store().clone(), early.applied_ts.clone(), early.head.clone());
    let docs =
        |at: u64| store.snapshot().unwrap().scan(tally_storage::Space::Docs, &[], None, false, at).unwrap().count();
    let before = docs(u64::MAX);
    early.apply_answering(&batch, &mut |i, out| {
        if i == 0 {
            let height = head.lock().unwrap().as_ref().map(|h| h.height);
            let ts: u64 = tally_exec::record::decode_output(&out).unwrap().ts;
            assert!(applied_ts.load(std::sync::atomic::Ordering::Acquire) >= ts, "answered before readers can see it");
            // Readers at the published ts find the document.
            first_seen_early = Some((height, docs(ts)));
        }
        handed.push((i, out));
    });
    let (height, found) = first_seen_early.expect("the first output was handed over");
    assert_eq!(height, Some(1), "the first input was answered only after the whole batch");
    assert_eq!(found, before + 1, "the first input's document was not visible when it was answered");
    assert_eq!(handed.iter().map(|(i, _)| *i).collect::<Vec<_>>(), (0..batch.inputs.len()).collect::<Vec<_>>());
    let outs: Vec<Vec<u8>> = handed.into_iter().map(|(_, o)| o).collect();
    assert_eq!(outs, whole.apply(&batch), "early answers differ from answers at the batch end");
    assert_eq!(head_hash(&early), head_hash(&whole));
}

/// Inputs whose writes break the store's limits (a 40,000-byte name, a 40,000-byte indexed
/// field) fail as transactions, between good ones in the same batch: the batch applies,
/// the good inputs take effect, and two replicas agree on every output and on the block.
/// (Before, applying such a batch failed and the node exited, on every replay.)
#[test]
fn oversized_writes_fail_as_transactions_not_batches() {
    let (_s1, mut a) = machine();
    let (_s2, mut b) = machine();
    let setup = batches().remove(0);
    a.apply(&setup);
    b.apply(&setup);
    let long = "n".repeat(40_000);
    let accounts = json!({"collection": "accounts"});
    let create =
        |owner: &str| json!({"create": accounts, "params": obj(json!({"data": obj(json!({"owner": owner}))}))});
    let inputs = vec![
        input(create("before"), 1),
        input(json!({"create_collection": obj(json!({"name": long}))}), 2),
        input(create(&long), 3),
        input(json!({"create_database": obj(json!({"name": long}))}), 4),
        input(create("after"), 5),
    ];
    let batch = Batch { height: 2, ts: 1_900_000_000_000_000, rules: tally_exec::RULES, inputs };
    let oa = a.apply(&batch);
    assert_eq!(oa, b.apply(&batch));
    assert_eq!(head_hash(&a), head_hash(&b));
    let status = |o: &Vec<u8>| tally_exec::record::decode_output(o).unwrap().status;
    assert_eq!(oa.iter().map(status).collect::<Vec<_>>(), vec![200, 400, 400, 400, 200]);
    for o in &oa[1..4] {
        let text = String::from_utf8(tally_exec::record::decode_output(o).unwrap().body).unwrap();
        assert!(text.contains("validation failed") && text.contains("at most"), "{text}");
    }
    assert_eq!(a.applied_height(), 2);
    let h = a.head.lock().unwrap().unwrap();
    assert_eq!(h.txn_count, 5);
}

/// A transaction whose ledger leaf record (89 bytes, its input as logged, 32 bytes per
/// write) would not fit in one store value fails alone, between good ones in the same
/// batch; an input too large even for a record without writes (a log written by an
/// earlier build may hold one: the build of 297127d stopped on it, on every replay) fails
/// too and its record is kept without its input. Two replicas agree on every output and
/// on the block. (Before, applying the batch failed in the store — "meta value of …
/// bytes is too large" — and the node exited, on every replay.)
#[test]
fn oversized_inputs_fail_as_transactions_not_batches() {
    use tally_exec::record::INPUT_BYTES_MAX;
    let (s1, mut a) = machine();
    let (_s2, mut b) = machine();
    let setup = batches().remove(0);
    a.apply(&setup);
    b.apply(&setup);
    let accounts = json!({"collection": "accounts"});
    let create =
        |owner: &str| json!({"create": accounts, "params": obj(json!({"data": obj(json!({"owner": owner}))}))});
    let with_junk = |junk_len: usize, creates: usize| {
        let each: Vec<_> = (0..creates).map(|i| create(&format!("j{junk_len}-{i}"))).collect();
        json!({"let": [{"junk": "j".repeat(junk_len)}], "in": {"do": each}})
    };
    // Just under the input limit, with 40 writes (a version and an index entry each).
    let near = input(with_junk(INPUT_BYTES_MAX - 2000, 20), 2);
    assert!(near.len() <= INPUT_BYTES_MAX);
    let over = input(with_junk(INPUT_BYTES_MAX, 1), 3);
    let inputs = vec![input(create("before"), 1), near, over, input(create("after"), 4)];
    let batch = Batch { height: 2, ts: 1_900_000_000_000_000, rules: tally_exec::RULES, inputs };
    let oa = a.apply(&batch);
    assert_eq!(oa, b.apply(&batch));
    assert_eq!(head_hash(&a), head_hash(&b));
    let out = |o: &Vec<u8>| tally_exec::record::decode_output(o).unwrap();
    assert_eq!(oa.iter().map(|o| out(o).status).collect::<Vec<_>>(), vec![200, 400, 400, 200]);
    let text = |i: usize| String::from_utf8(out(&oa[i]).body).unwrap();
    assert!(text(1).contains("invalid argument") && text(1).contains("ledger record would be"), "{}", text(1));
    assert!(text(2).contains("a transaction's input may be at most"), "{}", text(2));
    let h = a.head.lock().unwrap().unwrap();
    assert_eq!((h.height, h.txn_count), (2, 4));
    // The over-long input's leaf record is stored without the input, under its hash.
    let snap = s1.snapshot().unwrap();
    let leaf = |i: u64| {
        let b = snap.meta(&tally_ledger::writer::leaf_key(i)).unwrap().unwrap();
        tally_ledger::leaf::decode_record(&b).unwrap()
    };
    let first = h.tree_size - 4;
    assert_eq!(leaf(first + 1).input.len(), batch.inputs[1].len());
    assert!(leaf(first + 2).input.is_empty());
    assert_eq!(leaf(first + 2).leaf.input_hash, tally_ledger::merkle::leaf_hash(&batch.inputs[2]));
    assert_eq!(leaf(first + 3).leaf.effect_count, 2);
}

/// On a single node the receiving node hands its executor what it decoded from each
/// input (`record::Predecoded`) beside the bytes; the executor must answer and build
/// blocks exactly as a replica that decodes the bytes (and ignore a hint it does not
/// know).
#[test]
fn predecoded_inputs_apply_exactly_as_their_bytes() {
    let (_s1, mut bytes_only) = machine();
    let (_s2, mut hinted) = machine();
    for batch in batches() {
        let mut hints: Vec<Option<tally_apply::Decoded>> = batch
            .inputs
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                if i % 3 == 2 {
                    // Not a Predecoded: decoded from the bytes.
                    return Some(Box::new(7u32) as tally_apply::Decoded);
                }
                Some(predecoded(bytes).0)
            })
            .collect();
        let expected = bytes_only.apply(&batch);
        let mut got = vec![Vec::new(); batch.inputs.len()];
        hinted.apply_decoded(&batch, &mut hints, &mut |i, out| got[i] = out);
        assert_eq!(got, expected, "outputs differ at height {}", batch.height);
        assert_eq!(head_hash(&hinted), head_hash(&bytes_only), "block differs at height {}", batch.height);
        assert!(hints.iter().all(Option::is_none), "every hint was taken");
    }
}

/// A role the decoder would refuse gets no `Predecoded`: the executor refuses the input
/// from its bytes, as every replica does, instead of running what the hint says.
#[test]
fn an_input_the_decoder_refuses_gets_no_predecoded() {
    let q = json!({"add": [1, 2]});
    let expr = Arc::new(tally_fql::expr::parse(&q).unwrap());
    let inp = TxnInput {
        q,
        db: 0,
        role: "@role/b/a".into(), // not the canonical (sorted) spelling
        entropy: [1; 32],
        steps_max: 1_000,
        identity: None,
        token: None,
        jwt: None,
    };
    let (bytes, pre) = tally_exec::record::encode_input_predecoded(inp, expr).unwrap();
    assert!(pre.is_none());
    assert!(tally_exec::record::decode_input(&bytes).is_err());
}

/// The executor's catalog cache (`tally_fql::schema_cache`) changes no output and no block:
/// a machine that keeps it warm across every batch and one reopened before every batch (a
/// cold cache each time, as a restarted member has) agree byte for byte, through schema
/// changes between and within batches (outputs carry the bytes read, so a lookup answered
/// from the cache must charge what reading would have).
#[test]
fn a_warm_catalog_cache_changes_no_output_or_block() {
    let accounts = json!({"collection": "accounts"});
    let mut all = batches();
    let create = |owner: &str| json!({"create": accounts, "params": obj(json!({"data": obj(json!({"owner": owner, "balance": 1}))}))});
    let more = vec![
        // A second index on accounts, then writes that must maintain both.
        vec![
            input(
                json!({"create_index": obj(json!({"name": "by_balance", "source": accounts, "terms": [obj(json!({"field": ["data", "balance"]}))]}))}),
                70,
            ),
            input(create("p1"), 71),
            input(create("p2"), 72),
        ],
        vec![input(create("p3"), 73), input(json!({"paginate": {"match": {"index": "by_balance"}, "terms": 1}}), 74)],
        // Renamed, used under the new name, the old one refused; then retention set.
        vec![
            input(json!({"update": {"collection": "accounts"}, "params": obj(json!({"name": "acc"}))}), 75),
            input(
                json!({"create": {"collection": "acc"}, "params": obj(json!({"data": obj(json!({"owner": "q1", "balance": 1}))}))}),
                76,
            ),
            input(create("q2"), 77),
        ],
        vec![
            input(json!({"update": {"collection": "acc"}, "params": obj(json!({"ttl_days": 2}))}), 78),
            input(
                json!({"create": {"collection": "acc"}, "params": obj(json!({"data": obj(json!({"owner": "q3", "balance": 1}))}))}),
                79,
            ),
            input(json!({"delete": {"index": "by_balance"}}), 80),
            input(
                json!({"create": {"collection": "acc"}, "params": obj(json!({"data": obj(json!({"owner": "q4", "balance": 1}))}))}),
                81,
            ),
        ],
        vec![input(
            json!({"create": {"collection": "acc"}, "params": obj(json!({"data": obj(json!({"owner": "q5", "balance": 1}))}))}),
            82,
        )],
    ];
    let next = all.len() as u64;
    for (i, inputs) in more.into_iter().enumerate() {
        let h = next + i as u64;
        all.push(Batch { height: h + 1, ts: 1_800_000_000_000_000 + h * 1000, rules: tally_exec::RULES, inputs });
    }
    let (_s, mut warm) = machine();
    let (cold_store, cold) = machine();
    let mut cold = Some(cold);
    for batch in &all {
        drop(cold.take());
        let mut m = FqlMachine::open(cold_store.clone()).unwrap();
        let oc = m.apply(batch);
        cold = Some(m);
        let ow = warm.apply(batch);
        assert_eq!(ow, oc, "outputs differ at height {}", batch.height);
        assert_eq!(head_hash(&warm), head_hash(cold.as_ref().unwrap()), "block differs at height {}", batch.height);
    }
    let statuses: Vec<u16> = warm
        .apply(&Batch {
            height: all.len() as u64 + 1,
            ts: 1_900_000_000_000_000,
            rules: tally_exec::RULES,
            inputs: vec![input(json!({"create": accounts}), 90)],
        })
        .iter()
        .map(|o| tally_exec::record::decode_output(o).unwrap().status)
        .collect();
    assert_eq!(statuses, vec![400], "the old name is gone");
}

/// On a single node the executor gets each batch while the log is still syncing it
/// (`StateMachine::apply_logging`): it may evaluate, but nothing of the batch is
/// committed, visible or answered before the log says the batch is durable, the outputs
/// and blocks are those of a plain apply, and a batch the log failed to write leaves
/// nothing behind.
#[test]
fn a_batch_is_seen_only_once_the_log_has_it() {
    let (_s1, mut reference) = machine();
    let (store, mut m) = machine();
    let applied_ts = m.applied_ts.clone();
    let all = batches();
    let (last, rest) = all.split_last().unwrap();
    for batch in rest {
        let expected = reference.apply(batch);
        let before_ts = applied_ts.load(std::sync::atomic::Ordering::Acquire);
        let mut asked = 0;
        let answered = std::cell::Cell::new(0);
        let mut got = vec![Vec::new(); batch.inputs.len()];
        let applied = m.apply_logging(
            batch,
            &mut [],
            &mut || {
                asked += 1;
                assert_eq!(
                    tally_exec::machine::meta_height(&*store).unwrap(),
                    batch.height - 1,
                    "committed before logged"
                );
                assert_eq!(applied_ts.load(std::sync::atomic::Ordering::Acquire), before_ts, "visible before logged");
                assert_eq!(answered.get(), 0, "answered before logged");
                true
            },
            &mut |i, out| {
                answered.set(answered.get() + 1);
                got[i] = out;
            },
        );
        assert!(applied);
        assert_eq!(asked, 1, "asked once per batch at height {}", batch.height);
        assert_eq!(got, expected, "outputs differ at height {}", batch.height);
        assert_eq!(head_hash(&m), head_hash(&reference), "block differs at height {}", batch.height);
        assert_eq!(tally_exec::machine::meta_height(&*store).unwrap(), batch.height);
    }
    // The log failed to write the last batch: nothing of it is committed or answered.
    let (height, head, ts) = (m.applied_height(), head_hash(&m), applied_ts.load(std::sync::atomic::Ordering::Acquire));
    let mut answers = 0;
    let applied = m.apply_logging(last, &mut [], &mut || false, &mut |_, _| answers += 1);
    assert!(!applied);
    assert_eq!(answers, 0);
    assert_eq!(m.applied_height(), height);
    assert_eq!(tally_exec::machine::meta_height(&*store).unwrap(), height);
    assert_eq!(head_hash(&m), head);
    assert_eq!(applied_ts.load(std::sync::atomic::Ordering::Acquire), ts);
}

/// A store that can be stopped, as a write-behind store is after a failed background
/// write: every read and write then fails.
struct Stoppable {
    inner: MemStore,
    stopped: std::sync::atomic::AtomicBool,
}

impl Stoppable {
    fn check(&self) -> tally_storage::Result<()> {
        if self.stopped.load(std::sync::atomic::Ordering::Acquire) {
            return Err(tally_storage::StorageError::Io("the store is stopped (test)".into()));
        }
        Ok(())
    }
}

impl Store for Stoppable {
    fn snapshot(&self) -> tally_storage::Result<Box<dyn tally_storage::Snapshot>> {
        self.check()?;
        self.inner.snapshot()
    }
    fn begin(&self) -> tally_storage::Result<Box<dyn tally_storage::Batch>> {
        self.check()?;
        self.inner.begin()
    }
}

/// A machine fault on a batch whose append failed as well (a full disk stops both the
/// log and the store) is the log's failure: `apply_logging` says the batch was not
/// applied, and the node does not stop claiming the batch is in the log (the executor's
/// fail-stop would end this test's process).
#[test]
fn a_fault_on_a_batch_the_log_failed_to_write_is_the_logs_failure() {
    let store = Arc::new(Stoppable { inner: MemStore::new(), stopped: false.into() });
    let mut m = FqlMachine::open(store.clone()).unwrap();
    let all = batches();
    assert!(m.apply_logging(&all[0], &mut [], &mut || true, &mut |_, _| {}));
    store.stopped.store(true, std::sync::atomic::Ordering::Release);
    let mut asked = 0;
    let mut answers = 0;
    let applied = m.apply_logging(
        &all[1],
        &mut [],
        &mut || {
            asked += 1;
            false
        },
        &mut |_, _| answers += 1,
    );
    assert!(!applied);
    assert!(asked >= 1);
    assert_eq!(answers, 0);
    assert_eq!(m.applied_height(), all[0].height);
}
