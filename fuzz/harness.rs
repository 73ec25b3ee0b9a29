//! The one fuzz runner every `tests/fuzz_*.rs` target includes (`#[path]`): proptest's
//! runner with the case count from `TALLY_FUZZ_CASES`, failures saved beside the test as
//! `*.regressions` (committed, replayed first on every run), and a line per target saying
//! how many inputs it executed, for the long-run report (`scripts/fuzz`).
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};

/// Cases per target: `TALLY_FUZZ_CASES`, else `default` (kept to a few seconds in CI).
pub fn cases(default: u32) -> u32 {
    std::env::var("TALLY_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Run `check` on `cases(default)` generated inputs; panics (failing the test) with the
/// minimal failing input. `file` is the calling test's `file!()`, where regressions go.
pub fn fuzz<S: Strategy>(
    name: &str,
    file: &'static str,
    default: u32,
    strategy: S,
    check: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let config = Config {
        cases: cases(default),
        source_file: Some(file),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        // Shrinking a failing evaluator input is slow; a bounded number of steps is enough.
        max_shrink_iters: 2_000,
        ..Config::default()
    };
    let runs = AtomicU64::new(0);
    let started = std::time::Instant::now();
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |v| {
        runs.fetch_add(1, Ordering::Relaxed);
        check(v)
    });
    eprintln!("fuzz {name}: {} executions in {:.1} s", runs.load(Ordering::Relaxed), started.elapsed().as_secs_f64());
    if let Err(e) = result {
        panic!("fuzz {name} found a failing input: {e}");
    }
}

/// The files of `fuzz/corpus/<target>/`, sorted, with their bytes.
pub fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading the corpus {}: {e}", dir.display()))
        .map(|e| {
            let p = e.expect("a corpus entry").path();
            let b = std::fs::read(&p).expect("a corpus file");
            (p, b)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "the corpus at {} is empty", dir.display());
    out
}
