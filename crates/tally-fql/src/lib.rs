//! tally-fql: the FQL v4 language: parser, evaluator, and the mapping of FQL data
//! (documents, schema, indexes, keys) onto the temporal key/value store.
//!
//! Owns: [`expr`] (JSON AST -> [`expr::Expr`]), [`eval::Eval`] (the evaluator), one module per
//! function group under [`fns`], [`model`] (key layouts and the transaction overlay),
//! [`auth`] (who runs a query), [`perm`] (what roles may do), [`jwt`] (logins through access
//! providers, after the receiving node verified the token), and error codes ([`error`]).
//!
//! Architecture invariant: tally-fql sees storage only through the
//! [`tally_storage::Snapshot`] trait and returns its writes as a list; it never opens a
//! database file, never touches the network, and never reads the wall clock or draws
//! randomness inside a write transaction.

pub mod auth;
pub mod authcache;
pub mod budget;
pub mod catalog;
pub mod error;
pub mod eval;
pub mod expr;
pub mod fns;
pub mod jwt;
pub mod limits;
pub mod model;
pub mod perm;
pub mod purity;
pub mod retention;
pub mod run;
pub mod schema_cache;
pub mod secret;

pub use error::{FqlError, Result};
