//! The walking sweeps (`super::sweep`) equal the per-key ones they replaced
//! (`super::reference`) exactly: for random stores — documents created, updated (some
//! many times, beyond what one walk hands over), deleted, given a `ttl`; an index whose
//! entries come and go; collections keeping one day, thirty days or everything — swept at
//! random times with random bounds from the cursors a pass leaves and from arbitrary
//! ones, on the committed store and on a write batch holding the removals of an earlier
//! sweep (as the executor runs the index sweep after the document sweep), the two give the
//! same removals, cursor, keys looked at and `due`.

use proptest::prelude::*;
use serde_json::{json, Value as Json};
use tally_storage::{Batch, MemStore, Snapshot, Space, Store};

use super::{reference, sweep, sweep_index, Sweep, SweepLimits, DAY_MICROS};
use crate::auth::Auth;
use crate::eval::{Limits, Mode};

const T0: u64 = 1_800_000_000_000_000;
const HOUR: u64 = DAY_MICROS / 24;

struct Db {
    store: MemStore,
    ts: u64,
}

impl Db {
    fn run(&mut self, q: Json) {
        let expr = crate::expr::parse(&q).unwrap();
        self.ts += 1000;
        let snap = self.store.snapshot().unwrap();
        let out = crate::run::evaluate(
            &*snap,
            self.ts,
            Mode::Write,
            Auth::root_admin(),
            &expr,
            [0; 32],
            Limits::default(),
            None,
        );
        drop(snap);
        if out.result.is_err() {
            return;
        }
        let mut b = self.store.begin().unwrap();
        for w in &out.writes {
            match &w.value {
                Some(v) => b.put(w.space, &w.key, w.ts, v).unwrap(),
                None => drop(b.remove(w.space, &w.key, w.ts).unwrap()),
            }
        }
        b.commit(false).unwrap();
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Create (again) document `id` of collection `coll` with `x`, maybe a `ttl` hours ahead.
    Create {
        coll: usize,
        id: u8,
        x: u8,
        ttl_hours: Option<u8>,
    },
    /// Update it `times` times (one transaction each).
    Update {
        coll: usize,
        id: u8,
        x: u8,
        times: u8,
    },
    Delete {
        coll: usize,
        id: u8,
    },
    /// Let this many hours pass.
    Wait {
        hours: u16,
    },
}

const COLLS: [&str; 3] = ["day", "month", "forever"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize, 0..12u8, 0..3u8, prop::option::of(1..60u8))
            .prop_map(|(coll, id, x, ttl_hours)| Op::Create { coll, id, x, ttl_hours }),
        3 => (0..3usize, 0..12u8, 0..3u8, prop_oneof![3 => 1..3u8, 1 => 8..14u8])
            .prop_map(|(coll, id, x, times)| Op::Update { coll, id, x, times }),
        1 => (0..3usize, 0..12u8).prop_map(|(coll, id)| Op::Delete { coll, id }),
        1 => (1..1200u16).prop_map(|hours| Op::Wait { hours }),
    ]
}

fn doc(coll: usize, id: u8) -> Json {
    json!({"ref": {"collection": COLLS[coll]}, "id": (u64::from(id) + 1).to_string()})
}

fn build(ops: &[Op]) -> Db {
    let mut db = Db { store: MemStore::new(), ts: T0 };
    for (name, days) in COLLS.iter().zip([json!(1), json!(30), Json::Null]) {
        db.run(json!({"create_collection": {"object": {"name": name, "history_days": days}}}));
        db.run(json!({"create_index": {"object": {"name": format!("{name}_by_x"), "source": {"collection": name},
            "terms": [{"object": {"field": ["data", "x"]}}]}}}));
    }
    for op in ops {
        match *op {
            Op::Create { coll, id, x, ttl_hours } => {
                let mut params = json!({"data": {"object": {"x": x}}});
                if let Some(h) = ttl_hours {
                    let t = chrono::DateTime::from_timestamp_micros((db.ts + u64::from(h) * HOUR) as i64).unwrap();
                    params["ttl"] = json!({"@ts": t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)});
                }
                db.run(json!({"create": doc(coll, id), "params": {"object": params}}));
            }
            Op::Update { coll, id, x, times } => {
                for n in 0..times {
                    let x = (x + n) % 3;
                    db.run(json!({"update": doc(coll, id), "params": {"object": {"data": {"object": {"x": x}}}}}));
                }
            }
            Op::Delete { coll, id } => db.run(json!({"delete": doc(coll, id)})),
            Op::Wait { hours } => db.ts += u64::from(hours) * HOUR,
        }
    }
    db
}

type SweepFn = fn(&dyn Snapshot, u64, Option<&[u8]>, SweepLimits) -> crate::error::Result<Sweep>;

/// Both implementations of one sweep from `from`; they must agree.
fn both(snap: &dyn Snapshot, now: u64, from: Option<&[u8]>, limits: SweepLimits, index: bool) -> Sweep {
    let (new, old): (SweepFn, SweepFn) =
        if index { (sweep_index, reference::sweep_index) } else { (sweep, reference::sweep) };
    let a = new(snap, now, from, limits).map_err(|e| e.into_description());
    let b = old(snap, now, from, limits).map_err(|e| e.into_description());
    assert_eq!(a, b, "index={index} now={now} from={from:?} limits={limits:?}");
    a.unwrap()
}

/// Cursors worth starting at besides the passes' own: every stored key, the bytes just
/// before and after it, and a cut-off prefix.
fn cursors(snap: &dyn Snapshot, space: Space) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = snap.versions_from(space, None).unwrap().map(|r| r.unwrap().0).collect();
    keys.dedup();
    let mut out = Vec::new();
    for k in keys.iter().step_by(3) {
        out.push(k.clone());
        out.push([k.as_slice(), &[0]].concat());
        out.push(k[..k.len() / 2].to_vec());
    }
    out
}

fn apply(b: &mut dyn Batch, s: &Sweep) {
    for w in &s.removals {
        assert!(b.remove(w.space, &w.key, w.ts).unwrap(), "a removal names a stored version");
    }
}

fn check(ops: &[Op], keys: usize, removals: usize, bytes: usize, later_hours: u64) {
    let db = build(ops);
    let limits = SweepLimits { keys_max: keys, removals_max: removals, bytes_max: bytes };
    let now = db.ts + later_hours * HOUR;
    for index in [false, true] {
        let space = if index { Space::Index } else { Space::Docs };
        let snap = db.store.snapshot().unwrap();
        for c in cursors(&*snap, space) {
            both(&*snap, now, Some(&c), limits, index);
        }
        drop(snap);
    }
    // Whole passes, each call's removals applied before the next (the document sweep's
    // in the batch the index sweep then reads, as the executor does), till both end.
    let (mut doc_cursor, mut index_cursor) = (None::<Vec<u8>>, None::<Vec<u8>>);
    for round in 0..400 {
        let mut b = db.store.begin().unwrap();
        let s = both(&*b, now, doc_cursor.as_deref(), limits, false);
        apply(&mut *b, &s);
        doc_cursor = s.next;
        let s = both(&*b, now, index_cursor.as_deref(), limits, true);
        apply(&mut *b, &s);
        index_cursor = s.next;
        b.commit(false).unwrap();
        if doc_cursor.is_none() && index_cursor.is_none() && round > 0 {
            break;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_walking_sweeps_equal_the_per_key_ones(
        ops in prop::collection::vec(op(), 1..40),
        keys in prop_oneof![1..4usize, 60..70usize, Just(128usize)],
        removals in prop_oneof![1..4usize, Just(1024usize)],
        bytes in prop_oneof![Just(40usize), Just(1usize << 20)],
        later_hours in prop_oneof![Just(0u64), 1..2000u64],
    ) {
        check(&ops, keys, removals, bytes, later_hours);
    }
}

/// A store larger than a page (64 keys) in each collection, so that bounds are reached at
/// page ends and inside pages, and passes span many calls.
#[test]
fn the_walking_sweeps_equal_the_per_key_ones_on_a_larger_store() {
    let mut ops = Vec::new();
    for id in 0..100u8 {
        for coll in 0..3 {
            ops.push(Op::Create { coll, id, x: id % 3, ttl_hours: (id % 4 == 0).then_some(id % 50 + 1) });
        }
    }
    ops.push(Op::Wait { hours: 30 });
    for id in (0..100u8).step_by(7) {
        ops.push(Op::Update { coll: 0, id, x: 1, times: 10 });
        ops.push(Op::Delete { coll: 1, id: id + 1 });
    }
    for (keys, removals, bytes) in
        [(64, 1024, 1 << 20), (63, 5, 1 << 20), (128, 1024, 1 << 20), (65, 1024, 100), (1, 1, 1)]
    {
        for later in [0, 40, 24 * 40] {
            check(&ops, keys, removals, bytes, later);
        }
    }
}
