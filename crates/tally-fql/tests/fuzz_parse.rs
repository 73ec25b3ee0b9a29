//! Fuzzing the JSON AST parser (issue 11, item 4): any JSON a client can send either
//! parses or is refused with an FQL error a client can act on (a 4xx with a v4 code);
//! nothing panics. What parses survives `unparse` (the `@query` form lambdas are stored
//! in) and parses again to the same tree.
//!
//! `TALLY_FUZZ_CASES` sets the cases per target (default below); `scripts/fuzz` runs long.
//! `fuzz/corpus/parse/*.json` is replayed on every run.

#[path = "../../../fuzz/fql_gen.rs"]
mod fql_gen;
#[path = "../../../fuzz/harness.rs"]
mod harness;

use fql_gen::{any_json, query, Sizes};
use harness::{corpus, fuzz};
use proptest::prelude::*;
use serde_json::Value as Json;
use tally_fql::expr::{parse, unparse};

const CASES: u32 = 2_000;

fn check(json: &Json) -> Result<(), TestCaseError> {
    match parse(json) {
        Ok(expr) => {
            let data = tally_value::to_json(&unparse(&expr));
            let again =
                parse(&data).map_err(|e| TestCaseError::fail(format!("unparsed {data} does not parse: {e:?}")))?;
            let data2 = tally_value::to_json(&unparse(&again));
            prop_assert_eq!(&data2, &data, "unparse is not stable for {}", json);
        }
        Err(e) => {
            let status = e.http_status();
            prop_assert!((400..500).contains(&status), "parse error {} answers {} for {}", e.code, status, json);
            prop_assert!(!e.description.is_empty(), "parse error without a description for {}", json);
        }
    }
    Ok(())
}

#[test]
fn any_json_parses_or_is_an_fql_error() {
    fuzz("parse_any_json", file!(), CASES, any_json(), |j| check(&j));
}

#[test]
fn generated_queries_parse_stably() {
    fuzz("parse_queries", file!(), CASES, query(Sizes::NORMAL), |j| check(&j));
}

#[test]
fn arbitrary_text_never_panics() {
    fuzz("parse_text", file!(), CASES, "\\PC{0,64}", |text| {
        if let Ok(j) = serde_json::from_str::<Json>(&text) {
            check(&j)?;
        }
        Ok(())
    });
}

#[test]
fn corpus_replays() {
    for (path, bytes) in corpus("parse") {
        let json: Json = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(e) = check(&json) {
            panic!("{}: {e}", path.display());
        }
    }
}
