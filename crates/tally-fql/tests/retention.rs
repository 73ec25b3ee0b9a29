//! Retention (`history_days`, document `ttl`), property-tested: for random histories of a
//! few documents, with retention sweeps at random points and random sweep bounds,
//! `Get(ref, ts)` and `Paginate(Match(index, x), {ts})` equal a simple model (the whole
//! history, read at `ts`, refused below the floor), and every read — `Events` and
//! `Documents` included — answers the same as on a twin store that is never swept.

mod common;

use common::{coll_ref, Db};
use proptest::prelude::*;
use serde_json::{json, Value as Json};
use tally_fql::retention::{sweep, sweep_index, SweepLimits, DAY_MICROS};
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

    /// The floor the next read (at `now() + 1000`) runs under.
    fn floor(&self) -> Option<u64> {
        self.history_days.map(|d| (self.now() + 1000).saturating_sub(d * DAY_MICROS))
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
