//! One conformance suite, run against both stores: hand-written cases for each contract
//! clause, then a seeded random workload checked against a brute-force model.

use std::collections::BTreeMap;

use tally_storage::{BehindLimits, MemStore, RedbStore, Snapshot, Space, StorageError, Store, Ts, Version};

fn v(ts: Ts, value: &str) -> Version {
    Version { ts, value: value.as_bytes().to_vec() }
}

fn hist(s: &dyn Snapshot, key: &[u8], lo: Ts, hi: Ts, desc: bool) -> Vec<Ts> {
    s.history(Space::Docs, key, lo, hi, desc).unwrap().map(|r| r.unwrap().ts).collect()
}

fn scan(s: &dyn Snapshot, prefix: &[u8], from: Option<&[u8]>, desc: bool, at: Ts) -> Vec<(Vec<u8>, Ts)> {
    s.scan(Space::Docs, prefix, from, desc, at).unwrap().map(|r| r.map(|(k, v)| (k, v.ts)).unwrap()).collect()
}

fn kts(items: &[(&[u8], Ts)]) -> Vec<(Vec<u8>, Ts)> {
    items.iter().map(|(k, ts)| (k.to_vec(), *ts)).collect()
}

/// "a" is a prefix of "ab", a prefix of "abc"; "a\xff" and "\xff\xff" exercise prefix ends.
fn fixture(store: &dyn Store) {
    let mut b = store.begin().unwrap();
    for (key, ts, val) in [
        (&b"a"[..], 10, "a10"),
        (b"a", 20, "a20"),
        (b"a", 30, "a30"),
        (b"ab", 15, "ab15"),
        (b"abc", 25, "abc25"),
        (b"abc", 5, "abc5"),
        (b"a\xff", 10, "aff10"),
        (b"b", 40, "b40"),
        (b"\xff\xff", 10, "ffff10"),
    ] {
        b.put(Space::Docs, key, ts, val.as_bytes()).unwrap();
    }
    b.put(Space::Index, b"a", 10, b"idx").unwrap();
    b.set_meta("applied_height", &7u64.to_be_bytes()).unwrap();
    b.commit(false).unwrap();
}

fn check_reads(s: &dyn Snapshot) {
    let g = |k: &[u8], at| s.get(Space::Docs, k, at).unwrap();
    assert_eq!(g(b"a", 9), None);
    assert_eq!(g(b"a", 10), Some(v(10, "a10")));
    assert_eq!(g(b"a", 19), Some(v(10, "a10")));
    assert_eq!(g(b"a", 20), Some(v(20, "a20")));
    assert_eq!(g(b"a", Ts::MAX), Some(v(30, "a30")));
    assert_eq!(g(b"abc", 24), Some(v(5, "abc5")));
    assert_eq!(g(b"zz", Ts::MAX), None);
    assert_eq!(s.get(Space::Index, b"a", 10).unwrap(), Some(v(10, "idx")));
    assert_eq!(s.get(Space::Index, b"ab", 99).unwrap(), None, "spaces are separate");

    let walk = |from: Option<&[u8]>| -> Vec<(Vec<u8>, Ts)> {
        s.versions_from(Space::Docs, from).unwrap().map(|r| r.map(|(k, v)| (k, v.ts)).unwrap()).collect()
    };
    assert_eq!(
        walk(Some(b"ab")),
        kts(&[(b"ab", 15), (b"abc", 25), (b"abc", 5), (b"a\xff", 10), (b"b", 40), (b"\xff\xff", 10)])
    );
    assert_eq!(walk(None).len(), 9);
    assert_eq!(walk(Some(b"\xff\xff\x00")), kts(&[]));
    assert_eq!(hist(s, b"a", 0, Ts::MAX, false), [10, 20, 30]);
    assert_eq!(hist(s, b"a", 0, Ts::MAX, true), [30, 20, 10]);
    assert_eq!(hist(s, b"a", 11, 30, false), [20, 30]);
    assert_eq!(hist(s, b"a", 10, 29, true), [20, 10]);
    assert_eq!(hist(s, b"a", 20, 20, true), [20]);
    assert_eq!(hist(s, b"a", 30, 10, true), Vec::<Ts>::new());
    assert_eq!(hist(s, b"", 0, Ts::MAX, true), Vec::<Ts>::new(), "history is exact-key");

    let all_a = kts(&[(b"a", 30), (b"ab", 15), (b"abc", 25), (b"a\xff", 10)]);
    assert_eq!(scan(s, b"a", None, false, Ts::MAX), all_a);
    assert_eq!(scan(s, b"a", None, true, Ts::MAX), all_a.iter().rev().cloned().collect::<Vec<_>>());
    assert_eq!(scan(s, b"a", None, false, 12), kts(&[(b"a", 10), (b"abc", 5), (b"a\xff", 10)]));
    assert_eq!(scan(s, b"a", None, true, 22), kts(&[(b"a\xff", 10), (b"abc", 5), (b"ab", 15), (b"a", 20)]));
    assert_eq!(scan(s, b"a", Some(b"ab"), false, Ts::MAX), all_a[1..].to_vec());
    assert_eq!(scan(s, b"a", Some(b"aa"), false, Ts::MAX), all_a[1..].to_vec(), "from need not exist");
    assert_eq!(scan(s, b"a", Some(b"0"), false, Ts::MAX), all_a, "from before the prefix clamps");
    assert_eq!(scan(s, b"a", Some(b"b"), false, Ts::MAX), vec![], "from after the prefix");
    assert_eq!(scan(s, b"a", Some(b"abd"), true, Ts::MAX), kts(&[(b"abc", 25), (b"ab", 15), (b"a", 30)]));
    assert_eq!(scan(s, b"a", Some(b"ab"), true, Ts::MAX), kts(&[(b"ab", 15), (b"a", 30)]));
    assert_eq!(scan(s, b"a", Some(b"z"), true, 12), kts(&[(b"a\xff", 10), (b"abc", 5), (b"a", 10)]));
    assert_eq!(scan(s, b"a", Some(b"0"), true, Ts::MAX), vec![]);
    assert_eq!(scan(s, b"\xff", None, false, Ts::MAX), kts(&[(b"\xff\xff", 10)]));
    assert_eq!(scan(s, b"\xff", None, true, Ts::MAX), kts(&[(b"\xff\xff", 10)]));
    assert_eq!(scan(s, b"", None, false, Ts::MAX).len(), 6);
    assert_eq!(scan(s, b"", None, true, 9), kts(&[(b"abc", 5)]));
    assert_eq!(s.meta("applied_height").unwrap(), Some(7u64.to_be_bytes().to_vec()));
    assert_eq!(s.meta("absent").unwrap(), None);
}

fn check_batch(store: &dyn Store) {
    let before = store.snapshot().unwrap();
    let mut b = store.begin().unwrap();
    assert!(matches!(store.begin(), Err(StorageError::WriterBusy)));
    b.put(Space::Docs, b"a", 35, b"a35").unwrap();
    assert!(b.remove(Space::Docs, b"a", 20).unwrap());
    assert!(!b.remove(Space::Docs, b"a", 21).unwrap());
    assert!(!b.remove(Space::Docs, b"a", 20).unwrap(), "already removed in this batch");
    b.put(Space::Docs, b"aa", 5, b"aa5").unwrap();
    assert!(b.remove(Space::Docs, b"ab", 15).unwrap());
    b.put(Space::Docs, b"abc", 25, b"abc25-new").unwrap();
    b.set_meta("applied_height", b"8").unwrap();
    assert!(matches!(b.set_meta("format_version", b"9"), Err(StorageError::Invalid(_))));
    assert!(matches!(b.set_meta("max_version_ts", b"12345678"), Err(StorageError::Invalid(_))));

    let check_new = |s: &dyn Snapshot| {
        assert_eq!(s.get(Space::Docs, b"a", Ts::MAX).unwrap(), Some(v(35, "a35")));
        assert_eq!(s.get(Space::Docs, b"a", 25).unwrap(), Some(v(10, "a10")));
        assert_eq!(s.get(Space::Docs, b"ab", Ts::MAX).unwrap(), None);
        assert_eq!(s.get(Space::Docs, b"abc", 30).unwrap(), Some(v(25, "abc25-new")));
        assert_eq!(hist(s, b"a", 0, Ts::MAX, true), [35, 30, 10]);
        assert_eq!(hist(s, b"a", 0, 34, false), [10, 30]);
        let want = kts(&[(b"a", 35), (b"aa", 5), (b"abc", 25), (b"a\xff", 10)]);
        assert_eq!(scan(s, b"a", None, false, Ts::MAX), want);
        assert_eq!(scan(s, b"a", None, true, Ts::MAX), want.iter().rev().cloned().collect::<Vec<_>>());
        assert_eq!(scan(s, b"a", Some(b"abc"), true, 6), kts(&[(b"abc", 5), (b"aa", 5)]));
        assert_eq!(s.meta("applied_height").unwrap(), Some(b"8".to_vec()));
    };
    check_new(&*b);
    check_reads(&*before);
    b.commit(true).unwrap();
    check_reads(&*before);
    check_new(&*store.snapshot().unwrap());

    // A dropped batch discards its writes and frees the writer.
    let mut b = store.begin().unwrap();
    b.put(Space::Docs, b"dropped", 1, b"x").unwrap();
    drop(b);
    assert_eq!(store.snapshot().unwrap().get(Space::Docs, b"dropped", 1).unwrap(), None);
    store.begin().unwrap().commit(false).unwrap();
}

/// Tiny deterministic generator (no external randomness in tests either).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
    fn key(&mut self, len_max: u64) -> Vec<u8> {
        const ALPHABET: [u8; 4] = [0x00, 0x01, b'a', 0xff];
        (0..self.next(len_max + 1)).map(|_| ALPHABET[self.next(4) as usize]).collect()
    }
}

type Model = BTreeMap<(Vec<u8>, Ts), Vec<u8>>;

fn model_get(m: &Model, key: &[u8], at: Ts) -> Option<Version> {
    m.iter()
        .filter(|((k, ts), _)| k == key && *ts <= at)
        .max_by_key(|((_, ts), _)| *ts)
        .map(|((_, ts), val)| Version { ts: *ts, value: val.clone() })
}

fn model_scan(m: &Model, prefix: &[u8], from: Option<&[u8]>, desc: bool, at: Ts) -> Vec<(Vec<u8>, Version)> {
    let mut keys: Vec<&Vec<u8>> = m.keys().map(|(k, _)| k).filter(|k| k.starts_with(prefix)).collect();
    keys.dedup();
    if desc {
        keys.reverse();
    }
    keys.into_iter()
        .filter(|k| from.is_none_or(|f| if desc { k.as_slice() <= f } else { k.as_slice() >= f }))
        .filter_map(|k| model_get(m, k, at).map(|v| (k.clone(), v)))
        .collect()
}

fn check_model(s: &dyn Snapshot, m: &Model, rng: &mut Lcg) {
    for _ in 0..60 {
        let (key, at) = (rng.key(3), rng.next(60));
        assert_eq!(s.get(Space::Docs, &key, at).unwrap(), model_get(m, &key, at), "get {key:?} at {at}");
        let (lo, hi, desc) = (rng.next(60), rng.next(60), rng.next(2) == 1);
        let got: Vec<Version> = s.history(Space::Docs, &key, lo, hi, desc).unwrap().map(Result::unwrap).collect();
        let mut want: Vec<Version> = m
            .iter()
            .filter(|((k, ts), _)| *k == key && lo <= *ts && *ts <= hi)
            .map(|((_, ts), val)| Version { ts: *ts, value: val.clone() })
            .collect();
        if desc {
            want.reverse();
        }
        assert_eq!(got, want, "history {key:?} {lo}..={hi} desc={desc}");
        let prefix = rng.key(2);
        let from = if rng.next(2) == 0 { None } else { Some(rng.key(3)) };
        let got: Vec<_> =
            s.scan(Space::Docs, &prefix, from.as_deref(), desc, at).unwrap().map(Result::unwrap).collect();
        assert_eq!(
            got,
            model_scan(m, &prefix, from.as_deref(), desc, at),
            "scan {prefix:?} from {from:?} desc={desc} at={at}"
        );
        // The same scan giving only value heads: same keys and versions, values cut.
        let head = rng.next(4) as usize;
        let got: Vec<_> =
            s.scan_heads(Space::Docs, &prefix, from.as_deref(), desc, at, head).unwrap().map(Result::unwrap).collect();
        let want: Vec<_> = model_scan(m, &prefix, from.as_deref(), desc, at)
            .into_iter()
            .map(|(k, mut v)| {
                v.value.truncate(head);
                (k, v)
            })
            .collect();
        assert_eq!(got, want, "scan_heads {prefix:?} from {from:?} desc={desc} at={at} head={head}");
        // Every version from a key on, in storage order (keys ascending, newest first).
        let got: Vec<_> = s.versions_from(Space::Docs, from.as_deref()).unwrap().map(Result::unwrap).collect();
        let mut want: Vec<_> = m
            .iter()
            .filter(|((k, _), _)| from.as_deref().is_none_or(|f| k.as_slice() >= f))
            .map(|((k, ts), val)| (k.clone(), Version { ts: *ts, value: val.clone() }))
            .collect();
        want.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.ts.cmp(&a.1.ts)));
        assert_eq!(got, want, "versions_from {from:?}");
    }
}

/// Random puts and removes over short keys from a 4-byte alphabet (many prefix relations,
/// 0x00 and 0xff edges) with up to 60 versions per key (longer than the linear-skip limit),
/// compared with the model both inside each batch and after commit.
fn check_random(store: &dyn Store, seed: u64) {
    let mut rng = Lcg(seed);
    let mut model = Model::new();
    let mut meta: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for round in 0..25 {
        // Now and then a batch is dropped without committing (the executor abandons one
        // when its log append fails): nothing of it may be seen afterwards.
        let abandon = round % 7 == 3;
        let (model_before, meta_before) = (model.clone(), meta.clone());
        let mut b = store.begin().unwrap();
        for _ in 0..40 {
            // Reads between the writes: a batch remembers its base's newest version of
            // each key it reads, whatever it writes afterwards.
            let (probe, at) = (rng.key(3), rng.next(60));
            assert_eq!(b.get(Space::Docs, &probe, at).unwrap(), model_get(&model, &probe, at), "get {probe:?} at {at}");
            // Meta values likewise: read, sometimes set, read again.
            let name = format!("m{}", rng.next(4));
            assert_eq!(b.meta(&name).unwrap(), meta.get(&name).cloned(), "meta {name}");
            if rng.next(3) == 0 {
                let value = format!("{round}-{}", rng.next(100)).into_bytes();
                b.set_meta(&name, &value).unwrap();
                meta.insert(name.clone(), value);
                assert_eq!(b.meta(&name).unwrap(), meta.get(&name).cloned(), "meta {name} after set");
            }
            let (key, ts) = (rng.key(3), rng.next(60));
            if rng.next(4) == 0 {
                let existed = model.remove(&(key.clone(), ts)).is_some();
                assert_eq!(b.remove(Space::Docs, &key, ts).unwrap(), existed);
            } else {
                let val = format!("{round}-{ts}").into_bytes();
                b.put(Space::Docs, &key, ts, &val).unwrap();
                model.insert((key, ts), val);
            }
        }
        check_model(&*b, &model, &mut rng);
        if abandon {
            drop(b);
            (model, meta) = (model_before, meta_before);
        } else {
            b.commit(round % 5 == 0).unwrap();
        }
        check_model(&*store.snapshot().unwrap(), &model, &mut rng);
    }
}

fn conformance(store: &dyn Store) {
    fixture(store);
    check_reads(&*store.snapshot().unwrap());
    check_batch(store);
}

#[test]
fn mem_store_conforms() {
    conformance(&MemStore::new());
    check_random(&MemStore::new(), 1);
    check_random(&MemStore::new(), 2);
}

#[test]
fn redb_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance(&RedbStore::open(&dir.path().join("a.redb")).unwrap());
    check_random(&RedbStore::open(&dir.path().join("b.redb")).unwrap(), 1);
}

#[test]
fn write_behind_stores_conform() {
    // Held (the default) and eager; tiny, eager: a flush after every commit or two.
    let tiny = BehindLimits { commits_max: 3, bytes_max: 1 << 20, flush_bytes_max: 200, hold: false };
    for limits in [BehindLimits::default(), BehindLimits::default().eager(), tiny] {
        conformance(&MemStore::new().write_behind(limits).unwrap());
        check_random(&MemStore::new().write_behind(limits).unwrap(), 3);
        let dir = tempfile::tempdir().unwrap();
        conformance(&RedbStore::open(&dir.path().join("a.redb")).unwrap().write_behind(limits).unwrap());
        check_random(&RedbStore::open(&dir.path().join("b.redb")).unwrap().write_behind(limits).unwrap(), 1);
    }
}

/// Reads during background writes: one writer commits `n` at ts `n` under key "c" and a key
/// of its own; readers check that every snapshot is an exact prefix of the commits (each
/// seen once, none missing, none from the future), whichever of them are still queued.
#[test]
fn write_behind_snapshots_are_exact_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    // Eager, so that background writes race the readers all along.
    let limits = BehindLimits { commits_max: 16, bytes_max: 1 << 20, flush_bytes_max: 2_000, hold: false };
    let store = std::sync::Arc::new(RedbStore::open(&dir.path().join("p.redb")).unwrap().write_behind(limits).unwrap());
    const COMMITS: u64 = 600;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, done) = (store.clone(), done.clone());
            std::thread::spawn(move || {
                let mut checked = 0;
                while !done.load(std::sync::atomic::Ordering::Acquire) {
                    let s = store.snapshot().unwrap();
                    let n = match s.get(Space::Docs, b"c", Ts::MAX).unwrap() {
                        Some(v) => v.ts,
                        None => 0,
                    };
                    assert_eq!(hist(&*s, b"c", 0, Ts::MAX, false), (1..=n).collect::<Vec<_>>());
                    let own = scan(&*s, b"k", None, false, Ts::MAX);
                    assert_eq!(own.len() as u64, n, "a snapshot at commit {n} saw other commits' keys");
                    let height = s.meta("height").unwrap().map(|b| u64::from_be_bytes(b.try_into().unwrap()));
                    assert_eq!(height.unwrap_or(0), n);
                    // One version rewritten by every commit: an older commit must never be
                    // read over a newer one.
                    let o =
                        s.get(Space::Docs, b"o", 1).unwrap().map(|v| u64::from_be_bytes(v.value.try_into().unwrap()));
                    assert_eq!(o.unwrap_or(0), n, "a snapshot at commit {n} read an older commit's version");
                    checked += 1;
                }
                checked
            })
        })
        .collect();
    for n in 1..=COMMITS {
        let mut b = store.begin().unwrap();
        b.put(Space::Docs, b"c", n, &n.to_be_bytes()).unwrap();
        b.put(Space::Docs, format!("k{n:05}").as_bytes(), n, &[7; 300]).unwrap();
        b.put(Space::Docs, b"o", 1, &n.to_be_bytes()).unwrap();
        b.set_meta("height", &n.to_be_bytes()).unwrap();
        b.commit(n % 50 == 0).unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    store.sync().unwrap();
    assert_eq!(store.queued(), 0);
    drop(store);
    // Everything reached the file.
    let reopened = RedbStore::open(&dir.path().join("p.redb")).unwrap();
    let s = reopened.snapshot().unwrap();
    assert_eq!(s.get(Space::Docs, b"c", Ts::MAX).unwrap().map(|v| v.ts), Some(COMMITS));
    assert_eq!(scan(&*s, b"k", None, false, Ts::MAX).len() as u64, COMMITS);
}

#[test]
fn write_behind_reserves_its_meta_key() {
    let store = MemStore::new().write_behind(BehindLimits::default()).unwrap();
    let mut b = store.begin().unwrap();
    assert!(matches!(b.set_meta(tally_storage::META_BEHIND_SEQ, b"1"), Err(StorageError::Invalid(_))));
}

#[test]
fn snapshot_is_static_and_send() {
    fn assert_send<T: Send + 'static>(_: T) {}
    let store = MemStore::new();
    assert_send(store.snapshot().unwrap());
}

#[test]
fn redb_persists_and_checks_format_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        fixture(&store);
        let mut b = store.begin().unwrap();
        b.set_meta("durable", b"yes").unwrap();
        b.commit(true).unwrap();
        assert!(matches!(RedbStore::open(&path), Err(StorageError::AlreadyOpen)));
    }
    check_reads(&*RedbStore::open(&path).unwrap().snapshot().unwrap());

    // Another format version is refused, with a message saying what to do.
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
        txn.open_table(meta).unwrap().insert("format_version", &[3u8][..]).unwrap();
        txn.commit().unwrap();
    }
    let err = RedbStore::open(&path).err().expect("format 3 must be refused");
    assert!(matches!(err, StorageError::FormatVersion { .. }), "{err}");
    assert!(err.to_string().contains("version [3]"), "{err}");

    // A redb file that is not a Tally database is refused rather than adopted.
    let other = dir.path().join("other.redb");
    {
        let db = redb::Database::create(&other).unwrap();
        let txn = db.begin_write().unwrap();
        let t: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("foreign");
        txn.open_table(t).unwrap().insert(1, 1).unwrap();
        txn.commit().unwrap();
    }
    assert!(matches!(RedbStore::open(&other), Err(StorageError::FormatVersion { .. })));
}

/// A version 1 file (no `max_version_ts`) is upgraded on open: the bound is the newest ts
/// in either table, written with version 2; the data reads the same. A bound that is not
/// 8 bytes is refused as corruption.
#[test]
fn redb_upgrades_format_1_and_keeps_the_ts_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
    {
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.snapshot().unwrap().ts_bound(), 0, "a new store holds no version");
        fixture(&store);
        let mut b = store.begin().unwrap();
        b.put(Space::Index, b"z", 77, b"newest, in the index").unwrap();
        b.commit(true).unwrap();
        assert_eq!(store.snapshot().unwrap().ts_bound(), 77);
        // A history edit below the newest leaves the bound.
        let mut b = store.begin().unwrap();
        b.put(Space::Index, b"z", 1, b"old").unwrap();
        b.commit(true).unwrap();
        assert_eq!(store.snapshot().unwrap().ts_bound(), 77);
    }
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let mut t = txn.open_table(meta).unwrap();
        t.insert("format_version", &[1u8][..]).unwrap();
        t.remove("max_version_ts").unwrap();
        drop(t);
        txn.commit().unwrap();
    }
    {
        let store = RedbStore::open(&path).unwrap();
        let snap = store.snapshot().unwrap();
        assert_eq!(snap.ts_bound(), 77, "computed from the tables");
        check_reads(&*snap);
    }
    {
        let db = redb::Database::create(&path).unwrap();
        let rtxn = redb::ReadableDatabase::begin_read(&db).unwrap();
        let t = rtxn.open_table(meta).unwrap();
        assert_eq!(t.get("format_version").unwrap().unwrap().value(), &[2u8][..]);
        assert_eq!(t.get("max_version_ts").unwrap().unwrap().value(), &77u64.to_be_bytes()[..]);
        drop((t, rtxn));
        let txn = db.begin_write().unwrap();
        txn.open_table(meta).unwrap().insert("max_version_ts", &[1u8, 2][..]).unwrap();
        txn.commit().unwrap();
    }
    let err = RedbStore::open(&path).err().expect("a damaged bound must be refused");
    assert!(matches!(err, StorageError::Corrupt(_)), "{err}");
    assert!(err.to_string().contains("max_version_ts"), "{err}");
}

/// `Store::replace`: the old versions of both spaces are gone, the loaded ones there, meta
/// values not loaded kept; a snapshot taken before sees the old content whole; a fill that
/// fails leaves the old content and the store writable; an open batch makes it refuse.
fn check_replace(store: &dyn Store) {
    let mut b = store.begin().unwrap();
    b.put(Space::Docs, b"old", 3, b"o3").unwrap();
    b.put(Space::Docs, b"k", 4, b"old k").unwrap();
    b.put(Space::Index, b"i-old", 5, b"x").unwrap();
    b.set_meta("kept", b"yes").unwrap();
    b.set_meta("replaced", b"before").unwrap();
    b.commit(false).unwrap();
    let before = store.snapshot().unwrap();

    let failed = store.replace(&mut |l| {
        l.put(Space::Docs, b"new", 1, b"n1")?;
        Err(StorageError::Invalid("a damaged snapshot".into()))
    });
    assert!(failed.unwrap_err().to_string().contains("damaged"));
    let s = store.snapshot().unwrap();
    assert_eq!(scan(&*s, b"", None, false, Ts::MAX), kts(&[(b"k", 4), (b"old", 3)]));
    assert!(s.get(Space::Docs, b"new", Ts::MAX).unwrap().is_none());
    drop(s);

    let open = store.begin().unwrap();
    assert!(matches!(store.replace(&mut |_| Ok(())), Err(StorageError::WriterBusy)));
    drop(open);

    store
        .replace(&mut |l| {
            l.put(Space::Docs, b"new", 1, b"n1")?;
            l.put(Space::Docs, b"new", 2, b"n2")?;
            l.put(Space::Docs, b"k", 9, b"new k")?;
            l.put(Space::Index, b"i-new", 6, b"y")?;
            assert!(l.set_meta("format_version", b"x").is_err(), "reserved meta refused");
            assert!(l.set_meta("max_version_ts", &[0; 8]).is_err(), "reserved meta refused");
            l.set_meta("replaced", b"after")
        })
        .unwrap();
    let s = store.snapshot().unwrap();
    assert_eq!(scan(&*s, b"", None, false, Ts::MAX), kts(&[(b"k", 9), (b"new", 2)]));
    assert_eq!(hist(&*s, b"new", 0, Ts::MAX, false), vec![1, 2]);
    assert_eq!(hist(&*s, b"k", 0, Ts::MAX, false), vec![9]);
    assert!(s.get(Space::Index, b"i-old", Ts::MAX).unwrap().is_none());
    assert_eq!(s.get(Space::Index, b"i-new", Ts::MAX).unwrap(), Some(v(6, "y")));
    assert_eq!(s.meta("kept").unwrap().as_deref(), Some(&b"yes"[..]));
    assert_eq!(s.meta("replaced").unwrap().as_deref(), Some(&b"after"[..]));
    assert_eq!(scan(&*before, b"", None, false, Ts::MAX), kts(&[(b"k", 4), (b"old", 3)]));
    assert_eq!(before.meta("replaced").unwrap().as_deref(), Some(&b"before"[..]));
    assert!(s.ts_bound() >= 9 && before.ts_bound() >= 5, "{} {}", s.ts_bound(), before.ts_bound());
    drop((s, before));

    // Still writable, and a later commit lands on the new content.
    let mut b = store.begin().unwrap();
    b.put(Space::Docs, b"after", 10, b"a").unwrap();
    b.commit(true).unwrap();
    store.sync().unwrap();
    let s = store.snapshot().unwrap();
    assert_eq!(scan(&*s, b"", None, false, Ts::MAX), kts(&[(b"after", 10), (b"k", 9), (b"new", 2)]));
    assert!(s.ts_bound() >= 10, "{}", s.ts_bound());
}

#[test]
fn every_store_replaces_its_content_whole() {
    check_replace(&MemStore::new());
    check_replace(&MemStore::new().write_behind(BehindLimits::default()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    check_replace(&RedbStore::open(&dir.path().join("a.redb")).unwrap());
    let tiny = BehindLimits { commits_max: 3, bytes_max: 1 << 20, flush_bytes_max: 200, hold: false };
    let path = dir.path().join("b.redb");
    check_replace(&RedbStore::open(&path).unwrap().write_behind(tiny).unwrap());
    // The replaced content is what the file holds once reopened.
    let reopened = RedbStore::open(&path).unwrap();
    let s = reopened.snapshot().unwrap();
    assert_eq!(scan(&*s, b"", None, false, Ts::MAX), kts(&[(b"after", 10), (b"k", 9), (b"new", 2)]));
}
