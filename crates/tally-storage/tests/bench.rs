//! Rough throughput numbers, not a pass/fail test:
//! `cargo test -p tally-storage --release --test bench -- --ignored --nocapture`.

use std::time::Instant;

use tally_storage::{MemStore, RedbStore, Space, Store};

const KEYS: u64 = 200_000;
const BATCH_KEYS: u64 = 10_000;
const VERSIONS: u64 = 3;

fn bench(name: &str, store: &dyn Store) {
    let value = [7u8; 100];
    let t = Instant::now();
    for v in 0..VERSIONS {
        for first in (0..KEYS).step_by(BATCH_KEYS as usize) {
            let mut b = store.begin().unwrap();
            for k in first..first + BATCH_KEYS {
                b.put(Space::Docs, &k.to_be_bytes(), 10 * (v + 1) + k % 7, &value).unwrap();
            }
            b.commit(first + BATCH_KEYS >= KEYS).unwrap();
        }
    }
    let puts = (KEYS * VERSIONS) as f64;
    println!("{name}: put {:.0}/s", puts / t.elapsed().as_secs_f64());

    let snap = store.snapshot().unwrap();
    let t = Instant::now();
    for k in 0..KEYS {
        assert!(snap.get(Space::Docs, &k.to_be_bytes(), 25).unwrap().is_some());
    }
    println!("{name}: get {:.0}/s", KEYS as f64 / t.elapsed().as_secs_f64());
    for desc in [false, true] {
        let t = Instant::now();
        let n = snap.scan(Space::Docs, b"", None, desc, 25).unwrap().count() as u64;
        assert_eq!(n, KEYS);
        println!("{name}: scan desc={desc} {:.0} keys/s", n as f64 / t.elapsed().as_secs_f64());
    }
    drop(snap);

    // A snapshot install: the whole content replaced by a stream of versions in the
    // store's order (key ascending, newest version first), as `tally-exec`'s snapshot
    // import loads it.
    let t = Instant::now();
    store
        .replace(&mut |load| {
            for k in 0..KEYS {
                for v in (0..VERSIONS).rev() {
                    load.put(Space::Docs, &k.to_be_bytes(), 10 * (v + 1) + k % 7, &value)?;
                }
            }
            Ok(())
        })
        .unwrap();
    println!("{name}: replace {:.0} versions/s", puts / t.elapsed().as_secs_f64());
}

#[test]
#[ignore]
fn throughput() {
    bench("mem", &MemStore::new());
    let dir = tempfile::tempdir().unwrap();
    bench("redb", &RedbStore::open(&dir.path().join("bench.redb")).unwrap());
}
