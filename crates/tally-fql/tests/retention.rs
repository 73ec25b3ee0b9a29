//! Retention (`history_days`, document `ttl`), property-tested: for random histories of a
//! few documents, with retention sweeps at random points and random sweep bounds,
//! `Get(ref, ts)` and `Paginate(Match(index, x), {ts})` equal a simple model (the whole
//! history, read at `ts`, refused below the floor: `history_days` and v4's 15 minutes
//! back), and every read — `Events` and
//! `Documents` included — answers the same as on a twin store that is never swept.

mod common;

use common::{coll_ref, Db};
use proptest::prelude::*;
use serde_json::{json, Value as Json};
use tally_fql::retention::{sweep, sweep_index, SweepLimits, DAY_MICROS, MVT_OFFSET_MICROS};
use tally_storage::Store;

const HOUR: u64 = DAY_MICROS / 24;
const IDS: [&str; 3] = ["1", "2", "3"];

#[derive(Clone, Debug)]
enum Op {
    /// Create (or create again) a document with `x`, and a `ttl` this many hours ahead.
    Create {
        id: usize,
        x: i64,
        ttl_hours: Option<u64>,
    },
    Update {
        id: usize,
        x: i64,
    },
    Delete {
        id: usize,
    },
    /// A retention sweep bounded to this many keys and removals.
    Sweep {
        keys: usize,
        removals: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..IDS.len(), 0..3i64, prop::option::of(1..40u64)).prop_map(|(id, x, ttl_hours)| Op::Create {
            id,
            x,
            ttl_hours
        }),
        (0..IDS.len(), 0..3i64).prop_map(|(id, x)| Op::Update { id, x }),
        (0..IDS.len()).prop_map(|id| Op::Delete { id }),
        (1..4usize, 1..4usize).prop_map(|(keys, removals)| Op::Sweep { keys, removals }),
    ]
}

/// One stored version in the model: (ts, None for a deletion or Some((x, ttl))).
type ModelVersion = (u64, Option<(i64, Option<u64>)>);

struct World {
    swept: Db,
    twin: Db,
    history_days: Option<u64>,
    model: Vec<Vec<ModelVersion>>,
    cursor: Option<Vec<u8>>,
    index_cursor: Option<Vec<u8>>,
    /// When the collection and index were created (reads before are `invalid ref`).
    born: u64,
    /// Whether any document had a `ttl`.
    ttl_used: bool,
}

fn time(micros: u64) -> Json {
    let t = chrono::DateTime::from_timestamp_micros(micros as i64).unwrap();
    json!({"@ts": t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)})
}

impl World {
    fn new(history_days: Option<u64>) -> World {
        let mut w = World {
            swept: Db::new(),
            twin: Db::new(),
            history_days,
            model: vec![Vec::new(); IDS.len()],
            cursor: None,
            index_cursor: None,
            born: 0,
            ttl_used: false,
        };
        let hd = history_days.map_or(Json::Null, |d| json!(d));
        w.both(json!({"create_collection": {"object": {"name": "c", "history_days": hd}}})).unwrap();
        for db in [&mut w.swept, &mut w.twin] {
            db.index("by_x", "c", &["x"], &[]);
        }
        w.born = w.now();
        w
    }

    /// Runs `q` on both stores at the same ts; they must agree.
    fn both(&mut self, q: Json) -> Result<Json, String> {
        let show = |r: Result<tally_value::Value, tally_fql::FqlError>| match r {
            Ok(v) => Ok(tally_value::to_json(&v)),
            Err(e) => Err(e.code.to_string()),
        };
        let a = show(self.swept.run(q.clone()));
        let b = show(self.twin.run(q.clone()));
        assert_eq!(a, b, "the swept store and its never-swept twin disagree on {q}");
        a
    }

    fn advance(&mut self, micros: u64) {
        self.swept.ts += micros;
        self.twin.ts += micros;
    }

    fn now(&self) -> u64 {
        self.swept.ts
    }

    fn live(&self, id: usize, at: u64) -> Option<i64> {
        let v = self.model[id].iter().rev().find(|(ts, _)| *ts <= at)?;
        match v.1 {
            Some((x, ttl)) if ttl.is_none_or(|t| t > at) => Some(x),
            _ => None,
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Create { id, x, ttl_hours } => {
                let ttl = ttl_hours.map(|h| self.now() + 1000 + h * HOUR);
                self.ttl_used |= ttl.is_some();
                let mut params = serde_json::Map::new();
                params.insert("data".into(), json!({"object": {"x": x}}));
                if let Some(t) = ttl {
                    params.insert("ttl".into(), time(t));
                }
                let r = self.both(json!({"create": coll_ref("c", IDS[id]), "params": {"object": params}}));
                if r.is_ok() {
                    let ts = self.now();
                    self.model[id].push((ts, Some((x, ttl))));
                }
            }
            Op::Update { id, x } => {
                let r = self.both(
                    json!({"update": coll_ref("c", IDS[id]), "params": {"object": {"data": {"object": {"x": x}}}}}),
                );
                if r.is_ok() {
                    let ts = self.now();
                    let ttl = self.model[id].last().and_then(|v| v.1).and_then(|(_, t)| t);
                    self.model[id].push((ts, Some((x, ttl))));
                }
            }
            Op::Delete { id } => {
                if self.both(json!({"delete": coll_ref("c", IDS[id])})).is_ok() {
                    let ts = self.now();
                    self.model[id].push((ts, None));
                }
            }
            Op::Sweep { keys, removals } => {
                let limits = SweepLimits { keys_max: keys, removals_max: removals, bytes_max: 1 << 20 };
                let snap = self.swept.store.snapshot().unwrap();
                let out = sweep(&*snap, self.now(), self.cursor.as_deref(), limits).unwrap();
                drop(snap);
                // Index entries of a document removed for its `ttl` go with it, uncounted.
                let docs = out.removals.iter().filter(|w| w.space == tally_storage::Space::Docs).count();
                assert!(out.keys <= keys && docs <= removals, "a sweep stays within its bounds");
                let mut b = self.swept.store.begin().unwrap();
                for w in &out.removals {
                    assert!(b.remove(w.space, &w.key, w.ts).unwrap(), "a sweep removes only versions that exist");
                }
                b.commit(false).unwrap();
                self.cursor = out.next;
                let snap = self.swept.store.snapshot().unwrap();
                let out = sweep_index(&*snap, self.now(), self.index_cursor.as_deref(), limits).unwrap();
                drop(snap);
                assert!(out.keys <= keys && out.removals.len() <= removals, "an index sweep stays within its bounds");
                let mut b = self.swept.store.begin().unwrap();
                for w in &out.removals {
                    assert!(b.remove(w.space, &w.key, w.ts).unwrap(), "a sweep removes only entries that exist");
                }
                b.commit(false).unwrap();
                self.index_cursor = out.next;
            }
        }
    }

    /// The floor the next read (at `now() + 1000`) runs under: v4's, the history window's
    /// edge 15 minutes lower.
    fn floor(&self) -> Option<u64> {
        self.history_days.map(|d| (self.now() + 1000).saturating_sub(d * DAY_MICROS + MVT_OFFSET_MICROS))
    }

    fn check_reads(&mut self, at: u64) {
        if at < self.born {
            return;
        }
        let floor = self.floor();
        let below = floor.is_some_and(|f| at < f);
        for (id, name) in IDS.iter().enumerate() {
            let got = self.both(json!({"get": coll_ref("c", name), "ts": at}));
            let want = if below {
                Err("bad request".to_string())
            } else {
                match self.live(id, at) {
                    Some(x) => Ok(x),
                    None => Err("instance not found".to_string()),
                }
            };
            let got = got.map(|d| d["data"]["x"].as_i64().unwrap());
            assert_eq!(got, want, "Get of document {name} at {at} (floor {floor:?})");
        }
        for x in 0..3i64 {
            let q = json!({"paginate": {"match": {"index": "by_x"}, "terms": x}, "ts": at, "size": 100});
            let got = self.both(q).map(|page| {
                page["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["@ref"]["id"].as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            });
            let want = if below {
                Err("bad request".to_string())
            } else {
                Ok((0..IDS.len()).filter(|&i| self.live(i, at) == Some(x)).map(|i| IDS[i].to_string()).collect())
            };
            assert_eq!(got, want, "Match(by_x, {x}) at {at} (floor {floor:?})");
        }
    }

    /// Reads with no model: the twin must agree (done by `both`). Not events once a
    /// `ttl` was used: the never-swept twin's history does not show an expiry (a document
    /// created again after one is an update there, its index entries are withdrawn only
    /// then), while removal makes the expired document's history start over.
    fn check_history(&mut self) {
        drop(self.both(json!({"paginate": {"documents": {"collection": "c"}}, "size": 1000})));
        if self.ttl_used {
            return;
        }
        for id in IDS {
            drop(self.both(json!({"paginate": {"events": coll_ref("c", id)}, "size": 1000})));
        }
        drop(self.both(json!({"paginate": {"events": {"documents": {"collection": "c"}}}, "size": 1000})));
        drop(self.both(json!({"paginate": {"events": {"match": {"index": "by_x"}, "terms": 1}}, "size": 1000})));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn reads_under_retention_equal_the_model(
        history_days in prop::option::of(0..3u64),
        steps in prop::collection::vec((0..30u64, op()), 1..40),
        probes in prop::collection::vec(0..4000u64, 4),
    ) {
        let mut w = World::new(history_days);
        let start = w.now();
        for (hours, op) in &steps {
            w.advance(hours * HOUR);
            w.apply(op);
        }
        // Sweep until a whole pass found nothing more, then compare again.
        w.check_history();
        let end = w.now();
        let mut times: Vec<u64> = w.model.iter().flatten().flat_map(|(ts, _)| [*ts, ts - 1]).collect();
        times.extend(w.model.iter().flatten().filter_map(|v| v.1.and_then(|(_, t)| t)).flat_map(|t| [t, t - 1]));
        times.extend(probes.iter().map(|p| start + (end - start) * p / 4000));
        if let Some(f) = w.floor() {
            times.extend([f.saturating_sub(1), f, f + 1]);
        }
        times.push(end + 1000);
        for &t in &times {
            w.check_reads(t);
        }
        for _ in 0..64 {
            w.apply(&Op::Sweep { keys: 2, removals: 2 });
        }
        w.check_history();
        for &t in &times {
            w.check_reads(t);
        }
    }
}

/// Versions past `history_days` and documents past their `ttl` are physically gone after
/// sweeps, and the sweep's work is bounded: a backlog takes several calls.
#[test]
fn sweeps_remove_versions_and_expired_documents() {
    let mut w = World::new(Some(1));
    for x in 0..10 {
        w.apply(&Op::Create { id: 0, x, ttl_hours: None });
        w.apply(&Op::Update { id: 0, x: x + 1 });
        w.apply(&Op::Delete { id: 0 });
    }
    w.apply(&Op::Create { id: 1, x: 1, ttl_hours: Some(1) });
    w.apply(&Op::Create { id: 2, x: 2, ttl_hours: None });
    w.advance(3 * DAY_MICROS);
    let versions = |w: &World, id: &str| {
        let snap = w.swept.store.snapshot().unwrap();
        let key = tally_fql::model::doc_key(0, doc_coll(w), id);
        snap.history(tally_storage::Space::Docs, &key, 0, u64::MAX, true).unwrap().count()
    };
    assert_eq!((versions(&w, "1"), versions(&w, "2"), versions(&w, "3")), (30, 1, 1));
    let mut calls = 0;
    loop {
        let before = w.cursor.clone();
        w.apply(&Op::Sweep { keys: 256, removals: 8 });
        calls += 1;
        if before.is_some() && w.cursor.is_none() || calls > 100 {
            break;
        }
    }
    assert!(calls >= 4, "30 removals at 8 a call take several calls, not {calls}");
    assert_eq!((versions(&w, "1"), versions(&w, "2"), versions(&w, "3")), (0, 0, 1));
    for _ in 0..10 {
        w.apply(&Op::Sweep { keys: 256, removals: 8 });
    }
    // The index keeps one entry version: document 3's add (document 1's entries ended in
    // removes, document 2's went with it).
    let snap = w.swept.store.snapshot().unwrap();
    let keys: Vec<Vec<u8>> =
        snap.scan(tally_storage::Space::Index, &[], None, false, u64::MAX).unwrap().map(|r| r.unwrap().0).collect();
    let entries: usize =
        keys.iter().map(|k| snap.history(tally_storage::Space::Index, k, 0, u64::MAX, true).unwrap().count()).sum();
    assert_eq!(entries, 1);
    w.check_reads(w.now() + 1000);
    w.check_history();
}

fn doc_coll(w: &World) -> u64 {
    let snap = w.swept.store.snapshot().unwrap();
    let key = tally_fql::model::doc_key(0, tally_fql::model::native::COLLECTIONS, "c");
    let v = snap.get(tally_storage::Space::Docs, &key, u64::MAX).unwrap().unwrap();
    let d = tally_fql::model::decode_doc(&v).unwrap();
    tally_fql::catalog::internal_id(&d.data).unwrap()
}

/// A sweep over the whole store at `now` (every key, no bound): its removals and `due`.
fn sweep_all(db: &Db, now: u64) -> (Vec<tally_fql::model::Write>, Option<u64>) {
    let limits = SweepLimits { keys_max: usize::MAX, removals_max: usize::MAX, bytes_max: usize::MAX };
    let snap = db.store.snapshot().unwrap();
    let docs = sweep(&*snap, now, None, limits).unwrap();
    let index = sweep_index(&*snap, now, None, limits).unwrap();
    assert!(docs.next.is_none() && index.next.is_none(), "an unbounded sweep is a whole pass");
    let due = [docs.due, index.due].into_iter().flatten().min();
    (docs.removals.into_iter().chain(index.removals).collect(), due)
}

fn apply_removals(db: &Db, removals: &[tally_fql::model::Write]) {
    let mut b = db.store.begin().unwrap();
    for w in removals {
        assert!(b.remove(w.space, &w.key, w.ts).unwrap());
    }
    b.commit(false).unwrap();
}

const MINUTE: u64 = 60_000_000;

/// v4's `MVTOffset`: with `history_days: 0` the floor is 15 minutes behind the read's ts,
/// for reads and for removal alike; a sweep's `due` says when the next removal becomes
/// possible, and nothing goes before it.
#[test]
fn history_days_0_keeps_fifteen_minutes_and_sweeps_say_when_more_goes() {
    let mut w = World::new(Some(0));
    w.apply(&Op::Create { id: 0, x: 0, ttl_hours: None });
    let t0 = w.now();
    w.advance(10 * MINUTE);
    w.apply(&Op::Update { id: 0, x: 1 });
    let t1 = w.now();
    w.advance(MINUTE);
    // Eleven minutes later the first version still reads, and nothing goes yet.
    let get = |w: &mut World, at: u64| w.both(json!({"get": coll_ref("c", "1"), "ts": at}));
    assert_eq!(get(&mut w, t0).unwrap()["data"]["x"], 0);
    let (removals, due) = sweep_all(&w.swept, w.now());
    assert!(removals.is_empty(), "nothing is 15 minutes below the window: {removals:?}");
    // The first version goes once the floor reaches the second: 15 minutes after it.
    assert_eq!(due, Some(t1 + MVT_OFFSET_MICROS));
    let (removals, _) = sweep_all(&w.swept, t1 + MVT_OFFSET_MICROS - 1);
    assert!(removals.is_empty(), "not a microsecond early");
    w.swept.ts = t1 + MVT_OFFSET_MICROS - 1000;
    w.twin.ts = w.swept.ts;
    let (removals, due) = sweep_all(&w.swept, t1 + MVT_OFFSET_MICROS);
    assert_eq!(removals.len(), 3, "the first version and its index entry's add and remove: {removals:?}");
    assert_eq!(due, None, "a lone live version never goes as time passes");
    apply_removals(&w.swept, &removals);
    // (Each read runs 1 ms after the previous one: the first one's floor is exactly t1.)
    assert_eq!(get(&mut w, t1).unwrap()["data"]["x"], 1);
    assert_eq!(get(&mut w, t0), Err("bad request".into()));
    w.check_reads(w.now() + 1000);
}

/// A document's `ttl` is not offset: it stops being visible at its `ttl`, and is removed
/// (with its index entries) once the floor passes it, 15 minutes later with
/// `history_days: 0`, which the sweep's `due` says in advance.
#[test]
fn an_expired_document_reads_gone_at_its_ttl_and_goes_fifteen_minutes_later() {
    let mut w = World::new(Some(0));
    w.apply(&Op::Create { id: 0, x: 5, ttl_hours: Some(1) });
    let ttl = w.model[0][0].1.unwrap().1.unwrap();
    let created = w.now();
    let (removals, due) = sweep_all(&w.swept, w.now());
    assert!(removals.is_empty());
    assert_eq!(due, Some(ttl + MVT_OFFSET_MICROS));
    w.swept.ts = ttl;
    w.twin.ts = ttl;
    assert_eq!(w.both(json!({"exists": coll_ref("c", "1")})).unwrap(), json!(false));
    // A read just before the ttl (within the 15 minutes) still sees it.
    assert_eq!(w.both(json!({"get": coll_ref("c", "1"), "ts": ttl - 1})).unwrap()["data"]["x"], 5);
    assert_eq!(w.both(json!({"get": coll_ref("c", "1"), "ts": created})), Err("bad request".into()));
    let (removals, _) = sweep_all(&w.swept, ttl + MVT_OFFSET_MICROS - 1);
    assert!(removals.is_empty(), "not before the floor passes the ttl");
    let (removals, due) = sweep_all(&w.swept, ttl + MVT_OFFSET_MICROS);
    assert_eq!(removals.len(), 2, "the document and its index entry: {removals:?}");
    assert_eq!(due, None);
}

/// Index entries of documents in a child database live under the child's id and are
/// swept under the child's collection's floor; an entry whose stored ref carries a
/// database qualifier is still its database's own document's and goes the same way.
#[test]
fn index_entries_in_a_child_database_are_swept_under_its_floor() {
    use tally_fql::auth::{Auth, Role};
    use tally_storage::Space;
    let mut db = Db::new();
    db.q(json!({"create_database": {"object": {"name": "child"}}}));
    let child = {
        let snap = db.store.snapshot().unwrap();
        let key = tally_fql::model::doc_key(0, tally_fql::model::native::DATABASES, "child");
        let v = snap.get(Space::Docs, &key, u64::MAX).unwrap().unwrap();
        tally_fql::catalog::internal_id(&tally_fql::model::decode_doc(&v).unwrap().data).unwrap()
    };
    let run = |db: &mut Db, q: Json| {
        let expr = tally_fql::expr::parse(&q).unwrap();
        db.ts += 1000;
        let snap = db.store.snapshot().unwrap();
        let auth = Auth::new(child, Role::Admin);
        let out = tally_fql::run::evaluate(
            &*snap,
            db.ts,
            tally_fql::eval::Mode::Write,
            auth,
            &expr,
            [0; 32],
            Default::default(),
            None,
        );
        drop(snap);
        out.result.unwrap_or_else(|e| panic!("{q}: {}", e.to_json()));
        let mut b = db.store.begin().unwrap();
        for w in &out.writes {
            match &w.value {
                Some(v) => b.put(w.space, &w.key, w.ts, v).unwrap(),
                None => drop(b.remove(w.space, &w.key, w.ts).unwrap()),
            }
        }
        b.commit(false).unwrap();
    };
    run(&mut db, json!({"create_collection": {"object": {"name": "c", "history_days": 0}}}));
    let terms = json!([{"object": {"field": ["data", "x"]}}]);
    run(&mut db, json!({"create_index": {"object": {"name": "by_x", "source": {"collection": "c"}, "terms": terms}}}));
    run(&mut db, json!({"create": coll_ref("c", "1"), "params": {"object": {"data": {"object": {"x": 1}}}}}));
    run(&mut db, json!({"update": coll_ref("c", "1"), "params": {"object": {"data": {"object": {"x": 2}}}}}));
    // The same entry key shape with a database-qualified ref, written directly (no query
    // writes one today: writes below one's own database are refused), added then removed.
    let snap = db.store.snapshot().unwrap();
    let (key, v) = snap.scan(Space::Index, &[], None, false, u64::MAX).unwrap().next().unwrap().unwrap();
    let entry = tally_fql::model::decode_entry(key.clone(), &v).unwrap();
    drop(snap);
    let mut qualified = entry.doc.clone();
    if let Some(c) = qualified.collection.as_mut() {
        std::sync::Arc::make_mut(c).database =
            Some(std::sync::Arc::new(tally_value::Ref::doc(tally_value::Ref::native("databases"), "child")));
    }
    let qkey = tally_fql::model::index_key(
        child,
        u64::from_be_bytes(key[8..16].try_into().unwrap()),
        &[tally_value::Value::Long(9)],
        &[],
        &[],
        &qualified,
    );
    let mut b = db.store.begin().unwrap();
    b.put(Space::Index, &qkey, db.ts + 1, &tally_fql::model::encode_entry(true, &[], &qualified)).unwrap();
    b.put(Space::Index, &qkey, db.ts + 2, &tally_fql::model::encode_entry(false, &[], &qualified)).unwrap();
    b.commit(false).unwrap();
    let entry_versions = |db: &Db| {
        let snap = db.store.snapshot().unwrap();
        let keys: Vec<Vec<u8>> =
            snap.scan(Space::Index, &[], None, false, u64::MAX).unwrap().map(|r| r.unwrap().0).collect();
        keys.iter()
            .filter(|k| k[..8] == child.to_be_bytes())
            .map(|k| snap.history(Space::Index, k, 0, u64::MAX, true).unwrap().count())
            .sum::<usize>()
    };
    // x=1: add, remove; x=2: add; the qualified key: add, remove.
    assert_eq!(entry_versions(&db), 5);
    let (removals, _) = sweep_all(&db, db.ts + DAY_MICROS);
    apply_removals(&db, &removals);
    // Left: the add of x=2, the only entry a read at or above the floor sees.
    assert_eq!(entry_versions(&db), 1, "removed {removals:?}");
}
