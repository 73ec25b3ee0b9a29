//! Retiring a single node's input log segments by `--log-retain` (`tally_calvin::Retain`).
//!
//! Once a second a background thread looks for closed segments wholly at or below the
//! applied height. Only when there are some does it make the state store durable up to
//! that height (`Store::sync`: every commit made so far reaches disk, the applied height's
//! included) and then retire them, so a segment goes only after everything it holds is in
//! a durable checkpoint: a crash at any point replays from a checkpoint the remaining log
//! reaches. The extra durable commit costs one store fsync per retired segment, at most.
//!
//! The ledger does not read the log: block headers, transaction leaves (with their input
//! records), proofs and signatures are in the state store, so `/ledger/*` answers and
//! proofs for retired batches are unchanged. What the log alone gives, and retirement
//! takes away (docs/operations.md): `tally verify`'s replay of the chain from genesis
//! (it then checks the chain without replaying, or replays with `--log-archive DIR`),
//! rebuilding a state store that was moved aside, and a backup's copy of retired batches.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tally_calvin::Retain;
use tally_ledger::BlockHeader;
use tally_storage::Store;

/// How often the thread looks for segments to retire.
const RETIRE_EVERY: Duration = Duration::from_secs(1);

/// Start the thread (nothing for `Retain::All`). It ends once the store is dropped.
pub fn spawn(
    store: &Arc<dyn Store>,
    head: Arc<Mutex<Option<BlockHeader>>>,
    log_dir: PathBuf,
    policy: Retain,
) -> std::io::Result<()> {
    if policy == Retain::All {
        return Ok(());
    }
    let store = Arc::downgrade(store);
    std::thread::Builder::new().name("tally-log-retain".into()).spawn(move || run(store, head, log_dir, policy))?;
    Ok(())
}

fn run(store: Weak<dyn Store>, head: Arc<Mutex<Option<BlockHeader>>>, log_dir: PathBuf, policy: Retain) {
    let mut last_error = String::new();
    loop {
        std::thread::sleep(RETIRE_EVERY);
        let Some(store) = store.upgrade() else { return };
        match retire_once(&*store, &head, &log_dir, &policy) {
            Ok(()) => last_error.clear(),
            Err(e) if e != last_error => {
                tracing::warn!(error = %e, "retiring input log segments failed; retrying every second");
                last_error = e;
            }
            Err(_) => {}
        }
    }
}

/// Retire what the applied height allows, after making it durable.
pub fn retire_once(
    store: &dyn Store,
    head: &Mutex<Option<BlockHeader>>,
    log_dir: &std::path::Path,
    policy: &Retain,
) -> Result<(), String> {
    let applied = head.lock().map_err(|_| "the head lock is poisoned".to_string())?.map_or(0, |h| h.height);
    if tally_calvin::retirable(log_dir, applied).map_err(|e| e.to_string())?.is_empty() {
        return Ok(());
    }
    store.sync().map_err(|e| format!("making the state store durable: {e}"))?;
    let r = tally_calvin::retire_segments(log_dir, applied, policy).map_err(|e| e.to_string())?;
    tracing::info!(segments = r.segments, bytes = r.bytes, first_height = r.first_height, %policy, "retired input log segments");
    Ok(())
}
