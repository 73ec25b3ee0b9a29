//! Property test: over seeded random sequences of creating, deleting and renaming
//! databases, issuing keys for them, creating and deleting identity documents, issuing
//! tokens for them and expiring or replacing those tokens, a secret authenticates only
//! into what it was issued for — the same database incarnation (through renames), the
//! same identity incarnation — and never once that is gone.
//!
//! A model tracks what each secret was issued for; after every step every secret ever
//! issued is authenticated against the real evaluator and store and compared with it,
//! and through the cache of authenticated secrets (`tally_fql::authcache`, told of every
//! write as the executor tells it), which must answer exactly as a fresh lookup does.
//! Keys are also deleted, given another priority or role, or a `ttl` in the past; keys
//! given a user-defined role hold that role through its renames, and nothing once it is
//! deleted, even when another role takes its name.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value as Json};
use tally_fql::auth::Auth;
use tally_fql::authcache::{AuthCache, AuthChanges};
use tally_fql::eval::{Limits, Mode};
use tally_fql::run::{authenticate, evaluate};
use tally_storage::{MemStore, Store};
use tally_value::to_json;

const ROOT_SECRET: &str = "root-secret-for-the-property-test";
const DB_NAMES: &[&str] = &["a", "b", "c"];
const USER_IDS: &[&str] = &["1", "2"];
const ROLE_NAMES: &[&str] = &["r1", "r2"];
const SEEDS: u64 = 24;
const STEPS_PER_SEED: usize = 60;

/// splitmix64: a seeded generator with no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

struct World {
    store: MemStore,
    ts: u64,
    seeds: u64,
    root_hash: String,
    changes: Arc<AuthChanges>,
    cache: AuthCache,
}

impl World {
    fn new() -> World {
        let root_hash = tally_fql::fns::schema::hash_secret(ROOT_SECRET);
        let changes = Arc::new(AuthChanges::new());
        let cache = AuthCache::new(changes.clone());
        World { store: MemStore::new(), ts: 1_000_000, seeds: 0, root_hash, changes, cache }
    }

    /// Run `q` as root in write mode, apply it, and answer with secrets revealed.
    fn run(&mut self, q: Json) -> Result<Json, String> {
        let expr = tally_fql::expr::parse(&q).map_err(|e| e.code.to_string())?;
        self.ts += 1000;
        self.seeds += 1;
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&self.seeds.to_be_bytes());
        let entropy = tally_fql::secret::entropy_for_seed(&seed);
        let snap = self.store.snapshot().unwrap();
        let out = evaluate(&*snap, self.ts, Mode::Write, Auth::root_admin(), &expr, entropy, Limits::default(), None);
        drop(snap);
        let v = out.result.map_err(|e| e.code.to_string())?;
        // As the executor does: before the commit is visible.
        self.changes.record(&out.writes, self.ts);
        let mut b = self.store.begin().unwrap();
        for w in &out.writes {
            match &w.value {
                Some(v) => b.put(w.space, &w.key, w.ts, v).unwrap(),
                None => {
                    b.remove(w.space, &w.key, w.ts).unwrap();
                }
            }
        }
        b.commit(false).unwrap();
        let mut j = to_json(&v);
        tally_fql::secret::reveal(&mut j, &seed, &out.secrets);
        Ok(j)
    }

    fn q(&mut self, q: Json) -> Json {
        self.run(q.clone()).unwrap_or_else(|e| panic!("{q} failed: {e}"))
    }

    fn auth(&self, secret: &str) -> Option<Auth> {
        let snap = self.store.snapshot().unwrap();
        authenticate(&*snap, self.ts + 1, secret, &self.root_hash).ok()
    }

    /// [`World::auth`] through the cache.
    /// The snapshot is opened only when the cache cannot answer (as the server does).
    fn cached_auth(&self, secret: &str) -> Option<Auth> {
        let open = || Ok(tally_fql::authcache::Snap::Owned(self.store.snapshot().unwrap()));
        self.cache.authenticate_opening(self.ts + 1, secret, &self.root_hash, open).ok()
    }

    /// The internal id of top-level database `name` now (through a scoped root secret).
    fn db_id(&self, name: &str) -> u64 {
        self.auth(&format!("{ROOT_SECRET}:{name}:admin")).expect("database exists").db
    }
}

/// What a secret was issued for, and whether it should still work.
struct Issued {
    secret: String,
    /// Keys: the database incarnation (internal id). Tokens: the root database.
    db: u64,
    /// Tokens: the identity's id and the model's incarnation number for it.
    identity: Option<(String, u64)>,
    alive: bool,
    token_ref: Option<Json>,
    /// Keys: the key document's ref.
    key_ref: Option<Json>,
    /// Keys given a user-defined role (in the root database): the model's incarnation
    /// number of that role.
    role: Option<u64>,
}

#[derive(Default)]
struct Model {
    /// Database name -> internal id of the incarnation under that name.
    dbs: BTreeMap<String, u64>,
    /// User id -> incarnation number (None: deleted or never created).
    users: BTreeMap<String, Option<u64>>,
    incarnations: u64,
    /// Role name -> incarnation number of the role under that name.
    roles: BTreeMap<String, u64>,
    issued: Vec<Issued>,
}

fn user_ref(id: &str) -> Json {
    json!({"ref": {"collection": "users"}, "id": id})
}

fn step(w: &mut World, m: &mut Model, rng: &mut Rng) {
    match rng.next() % 14 {
        0 => {
            let name = rng.pick(DB_NAMES);
            if !m.dbs.contains_key(name) {
                w.q(json!({"create_database": {"object": {"name": name}}}));
                let id = w.db_id(name);
                m.dbs.insert(name.into(), id);
            }
        }
        1 => {
            let name = rng.pick(DB_NAMES);
            if let Some(id) = m.dbs.remove(name) {
                w.q(json!({"delete": {"database": name}}));
                for i in m.issued.iter_mut().filter(|i| i.identity.is_none() && i.db == id) {
                    i.alive = false;
                }
            }
        }
        2 => {
            let (from, to) = (rng.pick(DB_NAMES), rng.pick(DB_NAMES));
            if from != to && m.dbs.contains_key(from) && !m.dbs.contains_key(to) {
                w.q(json!({"update": {"database": from}, "params": {"object": {"name": to}}}));
                let id = m.dbs.remove(from).unwrap();
                m.dbs.insert(to.into(), id);
            }
        }
        3 | 4 => {
            let name = rng.pick(DB_NAMES);
            if let Some(&id) = m.dbs.get(name) {
                let role = rng.pick(&["admin", "server", "client"]);
                let k = w.q(json!({"create_key": {"object": {"database": {"database": name}, "role": role}}}));
                let secret = k["secret"].as_str().unwrap().to_string();
                let key_ref = Some(k["ref"].clone());
                m.issued.push(Issued {
                    secret,
                    db: id,
                    identity: None,
                    alive: true,
                    token_ref: None,
                    key_ref,
                    role: None,
                });
            }
        }
        5 => {
            let uid = rng.pick(USER_IDS);
            match m.users.get(uid).copied().flatten() {
                None => {
                    w.q(json!({"create": user_ref(uid), "params": {"object": {}}}));
                    m.incarnations += 1;
                    m.users.insert(uid.into(), Some(m.incarnations));
                }
                Some(_) => {
                    w.q(json!({"delete": user_ref(uid)}));
                    m.users.insert(uid.into(), None);
                }
            }
        }
        6 => {
            let uid = rng.pick(USER_IDS);
            if let Some(inc) = m.users.get(uid).copied().flatten() {
                let t = w.q(json!({"create": {"tokens": null}, "params": {"object": {"instance": user_ref(uid)}}}));
                let secret = t["secret"].as_str().unwrap().to_string();
                let token_ref = Some(t["ref"].clone());
                let identity = Some((uid.into(), inc));
                m.issued.push(Issued { secret, db: 0, identity, alive: true, token_ref, key_ref: None, role: None });
            }
        }
        7 | 8 => {
            // Expire (Update ttl into the past) or Replace a random live token.
            let live: Vec<usize> =
                (0..m.issued.len()).filter(|&i| m.issued[i].alive && m.issued[i].token_ref.is_some()).collect();
            if live.is_empty() {
                return;
            }
            let i = live[(rng.next() % live.len() as u64) as usize];
            let r = m.issued[i].token_ref.clone().unwrap();
            if rng.next().is_multiple_of(2) {
                let past = json!({"time_subtract": {"now": null}, "offset": 1, "unit": "second"});
                w.q(json!({"update": r, "params": {"object": {"ttl": past}}}));
                m.issued[i].alive = false;
            } else {
                w.q(json!({"replace": r, "params": {"object": {"data": {"object": {"n": 1}}}}}));
            }
        }
        9 | 10 => key_step(w, m, rng),
        11 => {
            let name = rng.pick(ROLE_NAMES);
            if m.roles.remove(name).is_some() {
                w.q(json!({"delete": {"role": name}}));
            } else {
                w.q(json!({"create_role": {"object": {"name": name, "privileges": []}}}));
                m.incarnations += 1;
                m.roles.insert(name.into(), m.incarnations);
            }
        }
        12 => {
            let (from, to) = (rng.pick(ROLE_NAMES), rng.pick(ROLE_NAMES));
            if from != to && m.roles.contains_key(from) && !m.roles.contains_key(to) {
                w.q(json!({"update": {"role": from}, "params": {"object": {"name": to}}}));
                let inc = m.roles.remove(from).unwrap();
                m.roles.insert(to.into(), inc);
            }
        }
        13 => {
            let name = rng.pick(ROLE_NAMES);
            if let Some(&inc) = m.roles.get(name) {
                let k = w.q(json!({"create_key": {"object": {"role": {"role": name}}}}));
                let secret = k["secret"].as_str().unwrap().to_string();
                let key_ref = Some(k["ref"].clone());
                m.issued.push(Issued {
                    secret,
                    db: 0,
                    identity: None,
                    alive: true,
                    token_ref: None,
                    key_ref,
                    role: Some(inc),
                });
            }
        }
        _ => unreachable!(),
    }
}

/// Delete a random live key, change its priority or its role, or end it by a `ttl` in the
/// past.
fn key_step(w: &mut World, m: &mut Model, rng: &mut Rng) {
    let live: Vec<usize> =
        (0..m.issued.len()).filter(|&i| m.issued[i].alive && m.issued[i].key_ref.is_some()).collect();
    if live.is_empty() {
        return;
    }
    let i = live[(rng.next() % live.len() as u64) as usize];
    let r = m.issued[i].key_ref.clone().unwrap();
    let set = |data: Json| json!({"update": r.clone(), "params": {"object": data}});
    match rng.next() % 4 {
        0 => {
            w.q(json!({"delete": r}));
            m.issued[i].alive = false;
        }
        // An update that leaves `role` out is refused (`validation failed`) while the
        // role the key names is gone or renamed: the admin must name a role again.
        3 => {
            let past = json!({"time_subtract": {"now": null}, "offset": 1, "unit": "second"});
            match w.run(set(json!({"ttl": past}))) {
                Ok(_) => m.issued[i].alive = false,
                Err(e) => assert!(m.issued[i].role.is_some() && e == "validation failed", "{e}"),
            }
        }
        1 => {
            let priority = 1 + (rng.next() % 9) as i64;
            if let Err(e) = w.run(set(json!({"priority": priority}))) {
                assert!(m.issued[i].role.is_some() && e == "validation failed", "{e}");
            }
        }
        _ => {
            let role = rng.pick(&["admin", "server", "client"]);
            w.q(set(json!({"role": role})));
            m.issued[i].role = None;
        }
    }
}

/// Every secret ever issued authenticates exactly as the model says; the violations
/// found, by kind (each with its first occurrence).
fn check(w: &World, m: &Model, seed: u64, n: usize, found: &mut BTreeMap<&'static str, String>) {
    for (k, i) in m.issued.iter().enumerate() {
        let got = w.auth(&i.secret);
        let at = format!("seed {seed} step {n} secret #{k}");
        // Twice: the first may fill the cache, the second may answer from it.
        for _ in 0..2 {
            if !same_auth(&w.cached_auth(&i.secret), &got) {
                found.entry("the cache answered otherwise than a fresh lookup").or_insert(at.clone());
            }
        }
        // The name the key's role has now, if that role is still alive.
        let role_now = i.role.map(|inc| m.roles.iter().find(|(_, v)| **v == inc).map(|(n, _)| n.clone()));
        let violation = match &i.identity {
            None if i.alive && role_now.is_some() => match (&got, role_now.unwrap()) {
                (Some(a), Some(name)) if a.role != tally_fql::auth::Role::custom(vec![name.clone()]) => {
                    Some("a key held another role than the one it was given")
                }
                (None, Some(_)) => Some("a key stopped working while its role lives"),
                (Some(_), None) => Some("a key whose role is gone authenticated"),
                _ => None,
            },
            None if i.alive => match &got {
                None => Some("a live key stopped working"),
                Some(a) if a.db != i.db => Some("a key opened another database"),
                Some(_) => None,
            },
            None => got.is_some().then_some("a deleted or expired key, or a key of a deleted database, authenticated"),
            Some((uid, inc)) => {
                let same_identity = m.users.get(uid).copied().flatten() == Some(*inc);
                match &got {
                    None if i.alive && same_identity => Some("a live token stopped working"),
                    Some(a)
                        if i.alive
                            && same_identity
                            && a.identity.as_ref().map(|r| r.id.as_str()) != Some(uid.as_str()) =>
                    {
                        Some("a token authenticated as another identity")
                    }
                    Some(_) if !same_identity => Some("a token outlived its identity"),
                    Some(_) if !i.alive => Some("an expired token authenticated"),
                    _ => None,
                }
            }
        };
        if let Some(v) = violation {
            found.entry(v).or_insert(at);
        }
    }
}

fn same_auth(a: &Option<Auth>, b: &Option<Auth>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            (a.db, &a.role, &a.identity, &a.token, a.priority) == (b.db, &b.role, &b.identity, &b.token, b.priority)
        }
        _ => false,
    }
}

#[test]
fn secrets_authenticate_only_into_what_they_were_issued_for() {
    let mut found = BTreeMap::new();
    for seed in 0..SEEDS {
        let mut w = World::new();
        w.q(json!({"create_collection": {"object": {"name": "users"}}}));
        let mut m = Model::default();
        let mut rng = Rng(seed);
        for n in 0..STEPS_PER_SEED {
            step(&mut w, &mut m, &mut rng);
            check(&w, &m, seed, n, &mut found);
        }
    }
    assert!(found.is_empty(), "violations: {found:#?}");
}

/// A key the cache holds is answered without opening a snapshot; once anything it may
/// have read changes, the next authentication opens one again.
#[test]
fn a_cached_key_opens_no_snapshot() {
    let mut w = World::new();
    let k = w.q(json!({"create_key": {"object": {"role": "server"}}}));
    let secret = k["secret"].as_str().expect("a key's secret").to_string();
    let opened = std::cell::Cell::new(0);
    let auth = |w: &World| {
        let open = || {
            opened.set(opened.get() + 1);
            Ok(tally_fql::authcache::Snap::Owned(w.store.snapshot().unwrap()))
        };
        w.cache.authenticate_opening(w.ts + 1, &secret, &w.root_hash, open).expect("the key authenticates")
    };
    let first = auth(&w);
    assert_eq!(opened.get(), 1);
    let again = auth(&w);
    assert_eq!(opened.get(), 1, "a cached key must not open a snapshot");
    assert!(same_auth(&Some(first), &Some(again)));
    // Any write to a native collection invalidates: the next lookup reads the store.
    w.q(json!({"create_role": {"object": {"name": "r", "privileges": []}}}));
    auth(&w);
    assert_eq!(opened.get(), 2, "after a schema write the key is looked up again");
}
