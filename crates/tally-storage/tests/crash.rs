//! Crash test: a child process (this test binary, re-run in "child" mode) commits forever,
//! every 8th commit durable, printing each durable commit once `commit` has returned; the
//! parent kill -9's it mid-stream, reopens the file and checks that every printed commit
//! survived and that what survived is an exact prefix of the commits (each is atomic).
//! Each round resumes from the durable `applied_height`, as the log replay above does.
//! The same runs against the write-behind store, where a commit counts as durable once
//! `sync` has returned after it.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use tally_storage::{BehindLimits, RedbStore, Space, Store};

const CHILD_ENV: &str = "TALLY_STORAGE_CRASH_CHILD";
const BEHIND_ENV: &str = "TALLY_STORAGE_CRASH_BEHIND";
const DURABLE_EVERY: u64 = 8;

fn value(i: u64) -> Vec<u8> {
    i.to_be_bytes().iter().cycle().take(2048).copied().collect()
}

fn applied_height(store: &dyn Store) -> Option<u64> {
    let raw = store.snapshot().unwrap().meta("applied_height").unwrap()?;
    Some(u64::from_be_bytes(raw.try_into().expect("applied_height is 8 bytes")))
}

/// Child mode only; in a normal test run it returns at once.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let redb = RedbStore::open(Path::new(&path)).unwrap();
    let behind = std::env::var(BEHIND_ENV).is_ok();
    // Small flushes, so the kill lands with commits queued, half-written and written.
    let limits = BehindLimits { commits_max: 8, bytes_max: 1 << 20, flush_bytes_max: 8 << 10, hold: false };
    let store: Box<dyn Store> = if behind { Box::new(redb.write_behind(limits).unwrap()) } else { Box::new(redb) };
    let start = applied_height(&*store).map_or(0, |h| h + 1);
    let mut out = std::io::stdout().lock();
    for i in start.. {
        let mut b = store.begin().unwrap();
        b.put(Space::Docs, &i.to_be_bytes(), i + 1, &value(i)).unwrap();
        b.set_meta("applied_height", &i.to_be_bytes()).unwrap();
        let durable = i % DURABLE_EVERY == 0;
        b.commit(durable).unwrap();
        if durable && behind {
            store.sync().unwrap();
        }
        let kind = if durable { "durable" } else { "volatile" };
        writeln!(out, "{kind} {i}").unwrap();
        out.flush().unwrap();
    }
}

/// Kills the child after its `durable_lines`-th durable commit and `then` more commits;
/// returns the last durable commit it reported.
fn run_child_and_kill(path: &Path, behind: bool, durable_lines: usize, then: usize) -> u64 {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    if behind {
        cmd.env(BEHIND_ENV, "1");
    }
    let mut child = cmd
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (mut last, mut seen, mut after) = (None, 0, 0);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        // libtest may print "test crash_child ... " on the same line as the first report.
        let line = line.trim_start_matches("test crash_child ... ");
        if seen == durable_lines {
            after += usize::from(line.starts_with("volatile "));
        } else if let Some(i) = line.strip_prefix("durable ") {
            last = Some(i.parse::<u64>().unwrap());
            seen += 1;
        }
        if seen == durable_lines && after == then {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructors, no flush
    child.wait().unwrap();
    last.expect("child printed no durable commit")
}

#[test]
fn kill_9_keeps_every_durable_commit() {
    kill_9_rounds(false);
}

#[test]
fn kill_9_keeps_every_synced_commit_written_behind() {
    kill_9_rounds(true);
}

fn kill_9_rounds(behind: bool) {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    for round in 0..4 {
        let last_durable = run_child_and_kill(&path, behind, 10 + round * 7, round * 2);
        let store = RedbStore::open(&path).expect("the database must reopen after kill -9");
        let height = applied_height(&store).expect("no durable commit survived");
        assert!(height >= last_durable, "round {round}: lost durable commit {last_durable} (have {height})");
        let snap = store.snapshot().unwrap();
        for i in 0..=height {
            let got = snap.get(Space::Docs, &i.to_be_bytes(), u64::MAX).unwrap();
            assert_eq!(got.map(|v| (v.ts, v.value)), Some((i + 1, value(i))), "round {round}: commit {i}");
        }
        let newest = snap.scan(Space::Docs, b"", None, true, u64::MAX).unwrap().next().unwrap().unwrap();
        assert_eq!(newest.0, height.to_be_bytes(), "a commit's write survived without its meta");
        eprintln!("round {round}: last durable {last_durable}, recovered height {height}");
    }
}
