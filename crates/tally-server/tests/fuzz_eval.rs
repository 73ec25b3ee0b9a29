//! Fuzzing the evaluator and the executor's apply path (issue 11, item 4).
//!
//! - `evaluator_*`: generated queries (well-typed and ill-typed, `fuzz/fql_gen.rs`) run
//!   read-only and in write mode on a `MemStore`, as the receiving node and the executor
//!   do; nothing panics, every error is a client error (4xx, or v4's `time out`), and the
//!   two passes agree (the read-only one may stop at a write). Writes are applied, so later
//!   queries meet what earlier ones made.
//! - `executor_*`: generated queries as logged inputs, in batches, through two
//!   `FqlMachine`s on redb (the server's store); applying never stops the process, no
//!   output is an internal error, and both machines give the same outputs and heads.
//!   `FqlMachine` exits the process (code 70) when applying a batch fails, so these run
//!   in a child process (this test binary again) and report the batch that stopped it.
//!
//! The huge-string generator (strings of 1–70 KB in names, data and index terms: issue
//! 11's bricking class) is its own test, `executor_survives_huge_strings`.
//! Cases: `TALLY_FUZZ_CASES` (default below); long runs: `scripts/fuzz`.
//! Corpora: `fuzz/corpus/eval/*.json` (and `eval-huge/`), each a list of batches of queries.

#[path = "../../../fuzz/fql_gen.rs"]
mod fql_gen;
#[path = "../../../fuzz/harness.rs"]
mod harness;

use std::process::Command;
use std::sync::Arc;

use fql_gen::{query, Sizes};
use harness::{corpus, fuzz};
use proptest::prelude::*;
use serde_json::Value as Json;
use tally_apply::{Batch, StateMachine};
use tally_exec::machine::{FqlMachine, TxnInput, TxnOutput};
use tally_fql::auth::Auth;
use tally_fql::eval::{Limits, Mode};
use tally_storage::{MemStore, RedbStore, Store};

const EVAL_CASES: u32 = 2_000;
const EXECUTOR_CASES: u32 = 60;

/// A client error, or v4's `time out` for a query over its step budget.
fn client_error(e: &tally_fql::FqlError) -> bool {
    (400..500).contains(&e.http_status()) || e.code == tally_fql::error::code::TIME_OUT
}

/// A small step budget keeps each generated query quick (`repeat`, bulk `do`).
fn limits() -> Limits {
    Limits { steps_max: 200_000, ..Limits::default() }
}

fn eval_sequence(queries: &[Json]) -> Result<(), TestCaseError> {
    let store = MemStore::new();
    let mut ts = 1_000_000u64;
    for q in queries {
        let Ok(expr) = tally_fql::expr::parse(q) else { continue };
        ts += 1000;
        let snap = store.snapshot().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let run = |mode| tally_fql::run::evaluate(&*snap, ts, mode, Auth::root_admin(), &expr, [7; 32], limits(), None);
        let ro = run(Mode::ReadOnly);
        let rw = run(Mode::Write);
        if let Err(e) = &rw.result {
            prop_assert!(client_error(e), "write pass of {} gave {}", q, e.to_json());
        }
        match (&ro.result, &rw.result) {
            (Err(e), _) if e.needs_write => {}
            (Err(e), _) if e.code == tally_fql::error::code::TIME_OUT => {}
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(tally_value::to_json(a), tally_value::to_json(b), "passes disagree on {}", q)
            }
            (Err(a), Err(b)) => prop_assert_eq!(a.code, b.code, "passes disagree on {}", q),
            (a, b) => prop_assert!(false, "passes disagree on {}: {:?} vs {:?}", q, a.is_ok(), b.is_ok()),
        }
        drop(snap);
        if rw.result.is_ok() && !rw.writes.is_empty() {
            let mut b = store.begin().map_err(|e| TestCaseError::fail(e.to_string()))?;
            for w in &rw.writes {
                let r = match &w.value {
                    Some(v) => b.put(w.space, &w.key, w.ts, v),
                    None => b.remove(w.space, &w.key, w.ts).map(|_| ()),
                };
                r.map_err(|e| TestCaseError::fail(format!("store refused a write of {q}: {e}")))?;
            }
            b.commit(false).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
    }
    Ok(())
}

#[test]
fn evaluator_passes_agree_and_never_fail_inside() {
    let s = prop::collection::vec(query(Sizes::NORMAL), 1..10);
    fuzz("evaluator", file!(), EVAL_CASES, s, |qs| eval_sequence(&qs));
}

// ---------------------------------------------------------------------------------------
// The executor's apply path.

fn input(q: &Json, seed: u8) -> Vec<u8> {
    let inp = TxnInput {
        q: q.clone(),
        db: 0,
        role: "admin".into(),
        entropy: [seed; 32],
        steps_max: limits().steps_max,
        identity: None,
        token: None,
        jwt: None,
    };
    tally_exec::record::encode_input(&inp).expect("an input encodes")
}

/// Where the child writes the batches it is about to apply, for the parent's report.
const LAST_BATCH_ENV: &str = "TALLY_FUZZ_LAST_BATCH";

fn apply_batches(batches: &[Vec<Json>]) -> Result<(), TestCaseError> {
    if let Ok(p) = std::env::var(LAST_BATCH_ENV) {
        let _ = std::fs::write(p, serde_json::to_vec(batches).unwrap_or_default());
    }
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let open = |name: &str| -> Result<FqlMachine, TestCaseError> {
        let store: Arc<dyn Store> =
            Arc::new(RedbStore::open(&dir.path().join(name)).map_err(|e| TestCaseError::fail(format!("redb: {e}")))?);
        FqlMachine::open(store).map_err(|e| TestCaseError::fail(e.to_string()))
    };
    let (mut a, mut b) = (open("a.redb")?, open("b.redb")?);
    for (h, queries) in batches.iter().enumerate() {
        let inputs = queries.iter().enumerate().map(|(i, q)| input(q, i as u8)).collect();
        let batch = Batch {
            height: h as u64 + 1,
            ts: 1_800_000_000_000_000 + h as u64 * 1000,
            rules: tally_exec::RULES,
            inputs,
        };
        let (oa, ob) = (a.apply(&batch), b.apply(&batch));
        prop_assert_eq!(&oa, &ob, "outputs differ at height {}", batch.height);
        let head = |m: &FqlMachine| m.head.lock().ok().and_then(|h| h.map(|h| h.hash()));
        prop_assert_eq!(head(&a), head(&b), "heads differ at height {}", batch.height);
        for (o, q) in oa.iter().zip(queries) {
            let out: TxnOutput =
                tally_exec::record::decode_output(o).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let body = String::from_utf8_lossy(&out.body);
            let timed_out = body.contains("\"time out\"");
            prop_assert!(out.status < 500 || timed_out, "{} answered {}: {}", q, out.status, body);
        }
    }
    Ok(())
}

fn batches(sizes: Sizes) -> impl Strategy<Value = Vec<Vec<Json>>> {
    prop::collection::vec(prop::collection::vec(query(sizes), 1..6), 1..5)
}

/// Runs `child` (a test of this binary) in its own process: `FqlMachine` exits the
/// process when a batch fails, which would otherwise end this whole test binary.
fn run_in_child(child: &str) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let last = tempfile::NamedTempFile::new().expect("a temp file");
    let out = Command::new(exe)
        .args(["--exact", child, "--nocapture", "--test-threads=1", "--include-ignored"])
        .env("TALLY_FUZZ_CHILD", "1")
        .env(LAST_BATCH_ENV, last.path())
        .output()
        .expect("running the child test");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stderr.lines().filter(|l| l.starts_with("fuzz ")) {
        eprintln!("{line}");
    }
    if !out.status.success() {
        let batch = std::fs::read_to_string(last.path()).unwrap_or_default();
        let batch: String = batch.chars().take(4_000).collect();
        let tail: String = stderr.chars().rev().take(6_000).collect::<Vec<_>>().into_iter().rev().collect();
        panic!("{child} failed ({}); last batches applied: {batch}\n--- child stderr ---\n{tail}", out.status);
    }
}

fn in_child() -> bool {
    std::env::var("TALLY_FUZZ_CHILD").is_ok_and(|v| v == "1")
}

#[test]
fn executor_applies_everything_and_replicas_agree() {
    run_in_child("child_executor_normal");
}

/// Issue 11's class: oversize names, documents and index entries. Before the evaluator
/// checked the store's limits (tally_fql::limits), the first corpus input stopped the
/// executor (exit 70); now each fails as its own transaction.
#[test]
fn executor_survives_huge_strings() {
    run_in_child("child_executor_huge");
}

#[test]
fn child_executor_normal() {
    if in_child() {
        fuzz("executor", file!(), EXECUTOR_CASES, batches(Sizes::NORMAL), |b| apply_batches(&b));
        replay_corpus("eval");
    }
}

#[test]
fn child_executor_huge() {
    if in_child() {
        replay_corpus("eval-huge");
        fuzz("executor_huge", file!(), EXECUTOR_CASES, batches(Sizes::HUGE), |b| apply_batches(&b));
    }
}

fn replay_corpus(target: &str) {
    for (path, bytes) in corpus(target) {
        let batches: Vec<Vec<Json>> =
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(e) = apply_batches(&batches) {
            panic!("{}: {e}", path.display());
        }
    }
}

/// The evaluator corpus runs in this process (it cannot stop it).
#[test]
fn evaluator_corpus_replays() {
    for (path, bytes) in corpus("eval") {
        let batches: Vec<Vec<Json>> =
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let all: Vec<Json> = batches.into_iter().flatten().collect();
        if let Err(e) = eval_sequence(&all) {
            panic!("{}: {e}", path.display());
        }
    }
}
