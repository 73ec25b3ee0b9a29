//! JWT logins in the executor: a logged input carries the access provider and the verified
//! claims (never the token), and the executor works out the roles from them alone at the
//! commit ts — deterministically, so two replicas agree on every answer and block.

mod common;
use common::{input_as as input, obj};

use std::sync::Arc;

use serde_json::{json, Value as Json};
use tally_apply::{Batch, StateMachine};
use tally_exec::machine::{FqlMachine, JwtInput};
use tally_storage::{MemStore, Store};

const ISSUER: &str = "https://idp.example.com/";

fn login(issuer: &str, claims: Json) -> Option<JwtInput> {
    Some(JwtInput { provider: "idp".into(), issuer: issuer.into(), claims })
}

/// Create a note recording who made it (when the query has an identity).
fn create_note(by: bool) -> Json {
    let by = if by { json!({"current_identity": null}) } else { json!("?") };
    json!({"create": {"collection": "notes"}, "params": obj(json!({"data": obj(json!({"by": by}))}))})
}

fn batches() -> Vec<Batch> {
    let schema = vec![
        input(json!({"create_collection": obj(json!({"name": "notes"}))}), "admin", None, 1),
        input(
            json!({"create_role": obj(json!({"name": "writers", "privileges": [obj(json!({
                "resource": {"collection": "notes"}, "actions": obj(json!({"create": true}))}))]}))}),
            "admin",
            None,
            2,
        ),
        input(
            json!({"create_access_provider": obj(json!({
                "name": "idp", "issuer": ISSUER, "jwks_uri": "https://idp.example.com/jwks",
                "roles": [obj(json!({"role": {"role": "writers"}, "predicate": {"query": {"lambda": "c",
                    "expr": {"equals": [{"select": ["group"], "from": {"var": "c"}, "default": null}, "w"]}}}}))]
            }))}),
            "admin",
            None,
            3,
        ),
    ];
    let jwt_writes = vec![
        input(create_note(true), "@jwt", login(ISSUER, json!({"sub": "alice", "group": "w"})), 10),
        input(create_note(true), "@jwt", login(ISSUER, json!({"sub": "bob", "group": "r"})), 11),
        input(create_note(false), "@jwt", None, 12),
        input(create_note(true), "@jwt", login("https://forged/", json!({"sub": "eve", "group": "w"})), 13),
    ];
    [schema, jwt_writes]
        .into_iter()
        .enumerate()
        .map(|(i, inputs)| Batch {
            height: i as u64 + 1,
            ts: 1_800_000_000_000_000 + i as u64 * 1000,
            rules: tally_exec::RULES,
            inputs,
        })
        .collect()
}

fn machine() -> FqlMachine {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    FqlMachine::open(store).unwrap()
}

fn status(out: &[u8]) -> (u64, Json) {
    let out = tally_exec::record::decode_output(out).unwrap();
    (out.status as u64, serde_json::from_slice(&out.body).unwrap())
}

#[test]
fn roles_come_from_the_logged_claims_and_replicas_agree() {
    let (mut a, mut b) = (machine(), machine());
    let mut outs = Vec::new();
    for batch in batches() {
        let oa = a.apply(&batch);
        assert_eq!(oa, b.apply(&batch), "outputs differ at height {}", batch.height);
        let (ha, hb) = (a.head.lock().unwrap().unwrap(), b.head.lock().unwrap().unwrap());
        assert_eq!(ha.hash(), hb.hash());
        outs = oa;
    }
    let (s, body) = status(&outs[0]);
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["resource"]["data"]["by"], "alice", "CurrentIdentity() is the sub claim");
    for (i, who) in
        [(1, "a claim the predicate refuses"), (2, "no logged login"), (3, "a provider with another issuer")]
    {
        let (s, body) = status(&outs[i]);
        assert_eq!((s, body["errors"][0]["code"].as_str()), (403, Some("permission denied")), "{who}: {body}");
    }
}
