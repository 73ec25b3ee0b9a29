//! FQL functions, one module per group. Each module exports `SPECS`, the table of the
//! functions it implements (name, argument keys, handler); the parser builds its
//! registry from all of them.

use crate::expr::FnSpec;

pub mod basic;
pub mod collection;
pub mod docs;
pub mod identity;
pub mod logic;
pub mod math;
pub mod schema;
pub mod security;
pub mod selfref;
pub mod sets;
pub mod string;
pub mod time;
pub mod types;

pub fn all_specs() -> impl Iterator<Item = &'static FnSpec> {
    basic::SPECS
        .iter()
        .chain(collection::SPECS)
        .chain(docs::SPECS)
        .chain(identity::SPECS)
        .chain(logic::SPECS)
        .chain(math::SPECS)
        .chain(schema::SPECS)
        .chain(security::SPECS)
        .chain(sets::SPECS)
        .chain(string::SPECS)
        .chain(time::SPECS)
        .chain(types::SPECS)
}
