//! The root key record in the executor: a bootstrap sets the replicated root key hash, a
//! rotation replaces it only if it names the current hash (compare-and-set), a refused
//! record is that record's error and changes nothing, and the hash survives a reopen and
//! travels in a snapshot — the same on every replica.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tally_apply::{Batch, ReplicatedMachine, StateMachine};
use tally_exec::machine::{meta_root_key, FqlMachine};
use tally_exec::record::root_key::{encode_root_key, RootKeySet};
use tally_storage::{MemStore, Store};

fn h(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn status(out: &[u8]) -> (u16, String) {
    let o = tally_exec::record::decode_output(out).unwrap();
    (o.status, String::from_utf8(o.body).unwrap())
}

fn run(m: &mut FqlMachine, height: u64, inputs: Vec<Vec<u8>>) -> Vec<(u16, String)> {
    m.apply(&Batch { height, ts: 1_000_000 * height, rules: tally_exec::RULES, inputs })
        .iter()
        .map(|o| status(o))
        .collect()
}

fn boot(key: &str) -> Vec<u8> {
    encode_root_key(&RootKeySet { expected: None, hash: h(key) })
}

fn rotate(from: &str, to: &str) -> Vec<u8> {
    encode_root_key(&RootKeySet { expected: Some(h(from)), hash: h(to) })
}

#[test]
fn bootstrap_rotation_and_refusals() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let mut m = FqlMachine::open(store.clone()).unwrap();
    assert!(!m.root_key.is_set(), "no root key before the first record");
    let outs = run(&mut m, 1, vec![boot("old-root-key"), boot("old-root-key"), boot("another-key")]);
    assert_eq!(outs[0].0, 200, "{:?}", outs[0]);
    assert!(outs[0].1.contains("\"set\""), "{:?}", outs[0]);
    assert_eq!(outs[1].0, 200, "a second bootstrap with the same key is a no-op: {:?}", outs[1]);
    assert!(outs[1].1.contains("unchanged"));
    assert_eq!(outs[2].0, 409, "{:?}", outs[2]);
    assert!(outs[2].1.contains("already has a root key"), "{:?}", outs[2]);
    assert_eq!(&*m.root_key.get(), hex::encode(h("old-root-key")));

    // Two rotations authenticated with the same key: the first wins.
    let outs = run(&mut m, 2, vec![rotate("old-root-key", "new-root-key"), rotate("old-root-key", "evil-root-key")]);
    assert_eq!(outs[0].0, 200, "{:?}", outs[0]);
    assert_eq!(outs[1].0, 409, "{:?}", outs[1]);
    assert!(outs[1].1.contains("changed after this request was authenticated"), "{:?}", outs[1]);
    assert_eq!(&*m.root_key.get(), hex::encode(h("new-root-key")));
    // A malformed record is that record's error.
    let mut bad = rotate("new-root-key", "x-root-key");
    bad.push(0);
    let outs = run(&mut m, 3, vec![bad]);
    assert_eq!(outs[0].0, 400, "{:?}", outs[0]);
    assert_eq!(meta_root_key(&*store).unwrap(), Some(h("new-root-key")));
    m.checkpoint().unwrap();

    // Reopened: the hash is read back from the store.
    let reopened = FqlMachine::open(store.clone()).unwrap();
    assert_eq!(&*reopened.root_key.get(), hex::encode(h("new-root-key")));

    // A snapshot carries it to a member that installs it.
    let data = m.export().unwrap();
    let other: Arc<dyn Store> = Arc::new(MemStore::new());
    let mut m2 = FqlMachine::open(other.clone()).unwrap();
    m2.import(&data).unwrap();
    assert_eq!(&*m2.root_key.get(), hex::encode(h("new-root-key")));
    assert_eq!(meta_root_key(&*other).unwrap(), Some(h("new-root-key")));
}

#[test]
fn replicas_agree_on_blocks_with_root_key_records() {
    let heads: Vec<_> = (0..2)
        .map(|_| {
            let store: Arc<dyn Store> = Arc::new(MemStore::new());
            let mut m = FqlMachine::open(store).unwrap();
            run(&mut m, 1, vec![boot("old-root-key"), rotate("old-root-key", "new-root-key")]);
            let head = m.head.lock().unwrap().unwrap();
            (head.hash(), head.tree_size)
        })
        .collect();
    assert_eq!(heads[0], heads[1]);
    assert_eq!(heads[0].1, 2, "each record is a leaf of the transparency log");
}
