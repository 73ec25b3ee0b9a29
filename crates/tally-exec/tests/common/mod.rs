//! What the executor's integration tests share: transaction inputs encoded as the
//! receiving node logs them, and the wire form of an object literal.
#![allow(dead_code)] // each test file uses a part

use serde_json::{json, Value as Json};
use tally_exec::machine::JwtInput;
use tally_exec::machine::TxnInput;

/// An input record of `q` run with `role` (and a JWT login), its entropy all `seed`.
pub fn input_as(q: Json, role: &str, jwt: Option<JwtInput>, seed: u8) -> Vec<u8> {
    let inp = TxnInput {
        q,
        db: 0,
        role: role.into(),
        entropy: [seed; 32],
        steps_max: 1_000_000,
        identity: None,
        token: None,
        jwt,
    };
    tally_exec::record::encode_input(&inp).unwrap()
}

/// What the node that received input record `bytes` hands its executor beside them
/// (`tally_exec::record::Predecoded`): the input and its query's expression, so the
/// executor neither decodes the record nor parses the query. Also returns a second hold
/// of the expression: the request thread keeps one until the answer is in, so the
/// executor's drop only lowers a count and the tree is freed on the thread that built it
/// (tally-server `http.rs`).
pub fn predecoded(bytes: &[u8]) -> (tally_apply::Decoded, std::sync::Arc<tally_fql::expr::Expr>) {
    let inp = tally_exec::record::decode_input(bytes).unwrap();
    let expr = std::sync::Arc::new(tally_fql::expr::parse(&inp.q).unwrap());
    let (again, pre) = tally_exec::record::encode_input_predecoded(inp, expr.clone()).unwrap();
    let pre = pre.expect("a decodable input has its Predecoded");
    assert_eq!(again, bytes, "the record is the same either way");
    assert_eq!(pre.input.q, Json::Null, "the query tree is freed by the encoder");
    (Box::new(pre), expr)
}

/// An input record of `q` run by the admin of the root database.
pub fn input(q: Json, seed: u8) -> Vec<u8> {
    input_as(q, "admin", None, seed)
}

/// `v` as an object literal (`{"object": v}`).
pub fn obj(v: Json) -> Json {
    json!({ "object": v })
}

/// An account's ref in `tally bench transfer`'s schema, written as the benchmark (and a
/// driver's `q.Ref(q.Collection(...), id)` once evaluated) sends it: a ref literal.
pub fn account(id: u64) -> Json {
    let collection = json!({"@ref": {"id": "accounts", "collection": {"@ref": {"id": "collections"}}}});
    json!({"@ref": {"id": id.to_string(), "collection": collection}})
}

/// What the cost figures tests (`sweep_cost`, `exec_cost`) run on: `tally bench
/// transfer`'s schema (accounts and transfers keeping the default 30 days of history, an
/// index on the accounts' bucket) and accounts, on the server's kind of store (redb behind
/// the write-behind queue) in a directory of its own, applied batch after batch.
pub struct TransferStore {
    pub m: tally_exec::machine::FqlMachine,
    pub store: std::sync::Arc<dyn tally_storage::Store>,
    height: u64,
    dir: std::path::PathBuf,
}

impl TransferStore {
    /// Batch ts: 1 ms apart from this one.
    pub const T0: u64 = 1_800_000_000_000_000;

    /// A new store named `name` (under the system's temporary directory) with `accounts`
    /// accounts of a large balance.
    pub fn open(name: &str, accounts: u64) -> TransferStore {
        let dir = std::env::temp_dir().join(format!("tally-{name}-{}-{accounts}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let redb = tally_storage::RedbStore::open(&dir.join("state.redb")).unwrap();
        let store: std::sync::Arc<dyn tally_storage::Store> =
            std::sync::Arc::new(redb.write_behind(tally_storage::BehindLimits::default()).unwrap());
        let m = tally_exec::machine::FqlMachine::open(store.clone()).unwrap();
        let mut s = TransferStore { m, store, height: 0, dir };
        s.apply(vec![
            input(json!({"create_collection": obj(json!({"name": "accounts"}))}), 1),
            input(json!({"create_collection": obj(json!({"name": "transfers"}))}), 2),
            input(
                json!({"create_index": obj(json!({"name": "accounts_by_bucket", "source": {"collection": "accounts"},
                    "terms": [obj(json!({"field": ["data", "bucket"]}))]}))}),
                3,
            ),
        ]);
        for chunk in (1..=accounts).collect::<Vec<_>>().chunks(1000) {
            let creates: Vec<_> = chunk
                .iter()
                .map(|&id| {
                    json!({"create": account(id), "params": obj(json!({"data": obj(json!({"balance": 1_000_000_000, "bucket": id % 100}))}))})
                })
                .collect();
            s.apply(vec![input(json!({ "do": creates }), 4)]);
        }
        s
    }

    /// Apply the next batch, of `inputs`.
    pub fn apply(&mut self, inputs: Vec<Vec<u8>>) {
        use tally_apply::StateMachine;
        let batch = self.next_batch(inputs);
        self.m.apply(&batch);
    }

    /// Apply the next batch, of `inputs`, each with what the receiving node would hand
    /// its executor beside the bytes (`hints`, see [`predecoded`]), as a single node's
    /// sequencer does.
    pub fn apply_decoded(&mut self, inputs: Vec<Vec<u8>>, hints: &mut [Option<tally_apply::Decoded>]) {
        use tally_apply::StateMachine;
        let batch = self.next_batch(inputs);
        self.m.apply_decoded(&batch, hints, &mut |_, _| {});
    }

    /// The batch after the last one applied, of `inputs`: the next height, 1 ms later.
    fn next_batch(&mut self, inputs: Vec<Vec<u8>>) -> tally_apply::Batch {
        self.height += 1;
        tally_apply::Batch { height: self.height, ts: Self::T0 + self.height * 1000, rules: tally_exec::RULES, inputs }
    }

    /// Close the store and remove its directory.
    pub fn close(self) {
        let TransferStore { m, store, dir, .. } = self;
        drop(m);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
