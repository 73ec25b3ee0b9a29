//! tally-value: the FQL v4 value model and its encodings.
//!
//! Owns: [`Value`] (every value an FQL v4 query can produce or store), the JSON wire
//! codec spoken by the official drivers (`@ref @ts @date @bytes @set @query @obj`),
//! the total order FQL uses to compare and sort values, and the canonical binary
//! encoding used for storage keys, stored documents and hashing.
//!
//! Architecture invariant: this crate does no I/O and knows nothing of queries,
//! storage engines or the network. Everything here is deterministic: objects
//! ([`Object`]) keep their keys sorted, so keys always come out in one canonical (byte-wise) order.

mod codec;
pub mod legacy_ref;
pub mod object;
mod order;
pub mod tape;
mod value;
mod wire;
mod wire_chunks;

pub use codec::{decode, decode_field, decode_key_tuple, encode, encode_into, CodecError};
pub use order::{cmp_id, compare, numeric_id, type_rank};
pub use value::{Object, Ref, Time, Value, NATIVE_COLLECTIONS};
pub use wire::{
    decode_base64, encode_base64, format_time, from_json, from_json_str, json_depth, parse_date, parse_json_unbounded,
    parse_time, query_body_from_json, special as wire_special, to_json, to_json_string, WireError, JSON_DEPTH_MAX,
};
pub use wire_chunks::ChunkEncoder;
