//! Retiring a single node's input log segments by `--log-retain` (`tally_calvin::Retain`).
//!
//! Once a second a background thread looks for closed segments wholly at or below the
//! executor's last checkpoint (`FqlMachine::checkpointed_height`: the last batch end it
//! committed with `durable = true`, about once a second). Only when there are some does it
//! wait for that commit to reach disk (`Store::wait_requested_durable`) and then retire
//! them, so a segment goes only after everything it holds is in a durable checkpoint: a
//! crash at any point replays from a checkpoint the remaining log reaches. It never makes
//! a commit durable itself: `Store::sync` from this thread could make one of the
//! executor's mid-batch commits durable, and a crash would then replay that batch onto
//! its own partial effects.
//!
//! The ledger does not read the log: block headers, transaction leaves (with their input
//! records), proofs and signatures are in the state store, so `/ledger/*` answers and
//! proofs for retired batches are unchanged. What the log alone gives, and retirement
//! takes away (docs/operations.md): `tally verify`'s replay of the chain from genesis
//! (it then checks the chain without replaying, or replays with `--log-archive DIR`),
//! rebuilding a state store that was moved aside, and a backup's copy of retired batches.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tally_calvin::Retain;
use tally_storage::Store;

/// How often the thread looks for segments to retire.
const RETIRE_EVERY: Duration = Duration::from_secs(1);

/// Start the thread (nothing for `Retain::All`). It ends once the store is dropped.
pub fn spawn(
    store: &Arc<dyn Store>,
    checkpointed: Arc<AtomicU64>,
    log_dir: PathBuf,
    policy: Retain,
) -> std::io::Result<()> {
    if policy == Retain::All {
        return Ok(());
    }
    let store = Arc::downgrade(store);
    std::thread::Builder::new()
        .name("tally-log-retain".into())
        .spawn(move || run(store, checkpointed, log_dir, policy))?;
    Ok(())
}

fn run(store: Weak<dyn Store>, checkpointed: Arc<AtomicU64>, log_dir: PathBuf, policy: Retain) {
    let mut last_error = String::new();
    loop {
        std::thread::sleep(RETIRE_EVERY);
        let Some(store) = store.upgrade() else { return };
        match retire_once(&*store, &checkpointed, &log_dir, &policy) {
            Ok(()) => last_error.clear(),
            Err(e) if e != last_error => {
                tracing::warn!(error = %e, "retiring input log segments failed; retrying every second");
                last_error = e;
            }
            Err(_) => {}
        }
    }
}

/// Retire what the executor's last checkpoint allows, once it is on disk.
pub fn retire_once(
    store: &dyn Store,
    checkpointed: &AtomicU64,
    log_dir: &std::path::Path,
    policy: &Retain,
) -> Result<(), String> {
    // Read before waiting: the commit of this height was queued (with its durable request)
    // before the height was published, so the wait covers it.
    let height = checkpointed.load(Ordering::Acquire);
    if tally_calvin::retirable(log_dir, height).map_err(|e| e.to_string())?.is_empty() {
        return Ok(());
    }
    store.wait_requested_durable().map_err(|e| format!("waiting for the state store's checkpoint: {e}"))?;
    let r = tally_calvin::retire_segments(log_dir, height, policy).map_err(|e| e.to_string())?;
    tracing::info!(segments = r.segments, bytes = r.bytes, first_height = r.first_height, %policy, "retired input log segments");
    Ok(())
}
