//! CPU of turning a request body into its expression and its logged record, the tree way
//! (JSON text -> `serde_json::Value` -> `Expr`; redact, encode the tree, free it) against
//! the text way (`expr::from_text`, `QueryTree::from_text`), and parsing once
//! (`record::read_text`, what the server does now). Not a test: a benchmark that
//! prints its figures (docs/benchmarks.md), run with
//! `cargo test --release -p tally-exec --test parse_cost -- --ignored --nocapture`.

use std::time::Instant;

use tally_exec::record::{decode_input, encode_input, encode_input_with_tree, read_text, QueryTree, TxnInput};

fn r(id: &str) -> String {
    format!(
        r#"{{"@ref":{{"id":"{id}","collection":{{"@ref":{{"id":"accounts","collection":{{"@ref":{{"id":"collections"}}}}}}}}}}}}"#
    )
}

/// The shape of `tally bench transfer`'s body (one transfer).
fn transfer() -> String {
    let (a, b) = (r("17"), r("4242"));
    format!(
        r#"{{"let":[{{"a":{{"get":{a}}}}},{{"b":{{"get":{b}}}}}],"in":{{"if":{{"lt":[{{"select":["data","balance"],"from":{{"var":"a"}}}},5]}},"then":{{"abort":"insufficient funds"}},"else":{{"do":[{{"update":{a},"params":{{"object":{{"data":{{"object":{{"balance":{{"subtract":[{{"select":["data","balance"],"from":{{"var":"a"}}}},5]}}}}}}}}}}}},{{"update":{b},"params":{{"object":{{"data":{{"object":{{"balance":{{"add":[{{"select":["data","balance"],"from":{{"var":"b"}}}},5]}}}}}}}}}}}},{{"create":{{"collection":"transfers"}},"params":{{"object":{{"data":{{"object":{{"from":{a},"to":{b},"amount":5}}}}}}}}}}]}}}}}}"#
    )
}

fn input() -> TxnInput {
    TxnInput {
        q: serde_json::Value::Null,
        db: 1,
        role: "server".into(),
        entropy: [7; 32],
        steps_max: 1_000_000,
        identity: None,
        token: None,
        jwt: None,
    }
}

fn tree_way(text: &[u8]) -> usize {
    let q: serde_json::Value = tally_value::parse_json_unbounded(text).expect("json");
    let expr = tally_fql::expr::parse(&q).expect("expr");
    let mut inp = TxnInput { q, ..input() };
    tally_fql::secret::redact_passwords(&mut inp.q, &inp.entropy.clone());
    let n = encode_input(&inp).expect("record").len();
    drop((inp, expr));
    n
}

fn text_way(text: &[u8]) -> usize {
    let expr = tally_fql::expr::from_text(text).expect("taken");
    assert!(!tally_fql::secret::may_hold_password(text));
    let tree = QueryTree::from_text(text).expect("taken");
    let n = encode_input_with_tree(&input(), &tree).expect("record").len();
    drop(expr);
    n
}

/// Parse once: one serde pass gives the expression and the record's tree.
fn once_way(text: &[u8]) -> usize {
    assert!(!tally_fql::secret::may_hold_password(text));
    let (expr, tree) = read_text(text, tally_fql::expr::QuerySeed).expect("taken");
    let n = encode_input_with_tree(&input(), &tree.expect("encoded")).expect("record").len();
    drop(expr);
    n
}

/// The tape way (what the server tries first): the text read into a tape, then the
/// expression and the record's tree built from it.
fn tape_way(text: &[u8]) -> usize {
    assert!(!tally_fql::secret::may_hold_password(text));
    let mut buf = String::new();
    let tape = tally_value::tape::Tape::parse(text, &mut buf).expect("taken");
    let expr = tally_fql::expr::from_tape(&tape).expect("taken");
    let tree = QueryTree::from_tape(&tape);
    let n = encode_input_with_tree(&input(), &tree).expect("record").len();
    drop(expr);
    n
}

/// Option (a) of "parse once": the text to the tree bytes, then the expression from
/// those bytes the way every other replica gets it (`decode_input`, then `expr::parse`
/// of the decoded JSON tree).
fn via_record_way(text: &[u8]) -> usize {
    assert!(!tally_fql::secret::may_hold_password(text));
    let tree = QueryTree::from_text(text).expect("taken");
    let bytes = encode_input_with_tree(&input(), &tree).expect("record");
    let inp = decode_input(&bytes).expect("decodes");
    let expr = tally_fql::expr::parse(&inp.q).expect("expr");
    drop((inp, expr));
    bytes.len()
}

#[test]
#[ignore = "a benchmark: prints figures"]
fn parse_once_cost() {
    let body = transfer();
    let text = body.as_bytes();
    assert_eq!(text_way(text), once_way(text));
    assert_eq!(text_way(text), via_record_way(text));
    assert_eq!(text_way(text), tape_way(text));
    const ROUNDS: u32 = 20_000;
    let time = |f: &dyn Fn(&[u8]) -> usize| {
        let t = Instant::now();
        for _ in 0..ROUNDS {
            std::hint::black_box(f(std::hint::black_box(text)));
        }
        t.elapsed().as_secs_f64() * 1e6 / ROUNDS as f64
    };
    for round in 0..3 {
        let two = time(&text_way);
        let once = time(&once_way);
        let via_record = time(&via_record_way);
        let alone = time(&|t| tally_fql::expr::from_text(t).map_or(0, |_| 1));
        let tape = time(&tape_way);
        println!(
            "round {round}: transfer body of {} bytes: two passes {two:.2} us, (b) once {once:.2} us ({:.0} %), \
             (a) via the record {via_record:.2} us ({:.0} %); expression alone {alone:.2} us; \
             through a tape {tape:.2} us ({:.0} % of once)",
            text.len(),
            100.0 * once / two,
            100.0 * via_record / two,
            100.0 * tape / once,
        );
    }
    // A read pays for the encoding too (the server cannot tell a write before running it).
    let get = format!(r#"{{"get":{}}}"#, r("17"));
    let get = get.as_bytes();
    for round in 0..3 {
        let t = Instant::now();
        for _ in 0..ROUNDS {
            drop(std::hint::black_box(tally_fql::expr::from_text(std::hint::black_box(get))));
        }
        let alone = t.elapsed().as_secs_f64() * 1e6 / ROUNDS as f64;
        let t = Instant::now();
        for _ in 0..ROUNDS {
            drop(std::hint::black_box(read_text(std::hint::black_box(get), tally_fql::expr::QuerySeed)));
        }
        let once = t.elapsed().as_secs_f64() * 1e6 / ROUNDS as f64;
        println!(
            "round {round}: point read body of {} bytes: expression alone {alone:.2} us, with its tree {once:.2} us",
            get.len()
        );
    }
}

#[test]
#[ignore = "a benchmark: prints figures"]
fn parse_cost() {
    let body = transfer();
    let text = body.as_bytes();
    assert_eq!(tree_way(text), text_way(text));
    const ROUNDS: u32 = 20_000;
    for round in 0..3 {
        let t = Instant::now();
        for _ in 0..ROUNDS {
            std::hint::black_box(tree_way(std::hint::black_box(text)));
        }
        let tree_us = t.elapsed().as_secs_f64() * 1e6 / ROUNDS as f64;
        let t = Instant::now();
        for _ in 0..ROUNDS {
            std::hint::black_box(text_way(std::hint::black_box(text)));
        }
        let text_us = t.elapsed().as_secs_f64() * 1e6 / ROUNDS as f64;
        println!(
            "round {round}: transfer body of {} bytes: tree way {tree_us:.2} us, text way {text_us:.2} us ({:.0} %)",
            text.len(),
            100.0 * text_us / tree_us
        );
    }
}

#[test]
#[ignore = "a benchmark: prints figures"]
fn parse_cost_parts() {
    let body = transfer();
    let text = body.as_bytes();
    // The fastest of 20 runs of 1,000: on a shared machine the others measure the
    // neighbours as much as the code.
    const ROUNDS: u32 = 1_000;
    let time = |what: &str, f: &dyn Fn()| {
        let best = (0..20)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..ROUNDS {
                    f();
                }
                t.elapsed().as_secs_f64() * 1e6 / ROUNDS as f64
            })
            .fold(f64::INFINITY, f64::min);
        println!("{what}: {best:.2} us (fastest of 20 runs of {ROUNDS})");
    };
    time("serde_json tree", &|| {
        drop(std::hint::black_box(tally_value::parse_json_unbounded::<serde_json::Value>(text)))
    });
    let q: serde_json::Value = tally_value::parse_json_unbounded(text).unwrap();
    time("expr::parse of the tree", &|| drop(std::hint::black_box(tally_fql::expr::parse(&q))));
    time("expr::from_text", &|| drop(std::hint::black_box(tally_fql::expr::from_text(text))));
    time("QueryTree::from_text", &|| drop(std::hint::black_box(QueryTree::from_text(text))));
    // What a replica (a follower, a replay) does with the logged record instead.
    let mut record_input = input();
    record_input.q = tally_value::parse_json_unbounded(text).unwrap();
    let record = encode_input(&record_input).unwrap();
    time("the record into its input and expression (decode_input_expr)", &|| {
        drop(std::hint::black_box(tally_exec::record::decode_input_expr(std::hint::black_box(&record))))
    });
    // The tape way's parts (what the receiving node does).
    time("Tape::parse", &|| {
        let mut buf = String::new();
        drop(std::hint::black_box(tally_value::tape::Tape::parse(text, &mut buf)))
    });
    let mut buf = String::new();
    let tape = tally_value::tape::Tape::parse(text, &mut buf).unwrap();
    time("expr::from_tape, dropped", &|| drop(std::hint::black_box(tally_fql::expr::from_tape(&tape))));
    time("QueryTree::from_tape", &|| drop(std::hint::black_box(QueryTree::from_tape(&tape))));
    let tree = QueryTree::from_tape(&tape);
    time("encode_input_with_tree", &|| drop(std::hint::black_box(encode_input_with_tree(&input(), &tree))));
    time("may_hold_password", &|| {
        std::hint::black_box(tally_fql::secret::may_hold_password(text));
    });
    time("json_depth", &|| {
        std::hint::black_box(tally_value::json_depth(text, 1000));
    });
    time("serde IgnoredAny pass", &|| {
        let mut de = serde_json::Deserializer::from_slice(text);
        drop(std::hint::black_box(<serde::de::IgnoredAny as serde::Deserialize>::deserialize(&mut de)));
    });
}
