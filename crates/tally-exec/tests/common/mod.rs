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

/// An input record of `q` run by the admin of the root database.
pub fn input(q: Json, seed: u8) -> Vec<u8> {
    input_as(q, "admin", None, seed)
}

/// `v` as an object literal (`{"object": v}`).
pub fn obj(v: Json) -> Json {
    json!({ "object": v })
}
