//! Threads for long evaluations, at a lower OS priority.
//!
//! A read that does not finish within the inline step budget (see `http.rs`) runs here.
//! These threads run at nice 10: when short work wants a core — a quiet tenant's point
//! read on an async worker, its client on the same machine, the executor — the OS lets it
//! preempt a long evaluation at once instead of time-slicing evenly; when nothing else
//! wants the cores, long evaluations get all of them, as before. (Fair shares among
//! tenants are still the scheduler's job; this only orders short before long at the OS
//! level, which the scheduler cannot do: it cannot preempt below a yield point.)
//!
//! Lowering a thread's priority needs no privilege but raising it again does, so these
//! threads stay niced for their lifetime: they are the blocking pool of a runtime of their
//! own, whose threads lower their priority as they start (tokio keeps them for reuse and
//! ends idle ones after a minute, and bounds how many run).

use std::sync::OnceLock;
use std::time::Duration;

/// Niceness of these threads (0 is normal, 19 the lowest priority).
const NICE: i32 = 10;
/// Evaluation recurses; the same stack as the async workers'.
const STACK_BYTES: usize = 512 << 20;

static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();

/// Run `f` on a low-priority thread (on tokio's own blocking pool if that runtime could not
/// be built); the handle resolves to its result, or an error if `f` panicked.
pub fn spawn<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    match runtime() {
        Some(rt) => rt.spawn_blocking(f),
        None => tokio::task::spawn_blocking(f),
    }
}

/// Run the task `fut` on this pool's one low-priority worker thread (on the caller's
/// runtime if the pool could not be built). For work done in small pieces between
/// awaits, such as encoding a large answer chunk by chunk as its client takes it: all
/// such tasks share that one thread, so together they use at most one core, at low
/// priority, and a task waiting for its client holds no thread.
pub fn spawn_async<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    match runtime() {
        Some(rt) => rt.spawn(fut),
        None => tokio::spawn(fut),
    }
}

fn runtime() -> Option<&'static tokio::runtime::Runtime> {
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(512)
            .thread_keep_alive(Duration::from_secs(60))
            .thread_stack_size(STACK_BYTES)
            .thread_name("tally-long")
            .on_thread_start(lower_priority)
            .build()
            .map_err(|e| tracing::warn!(error = %e, "no low-priority pool; long reads use the blocking pool"))
            .ok()
    });
    rt.as_ref()
}

#[cfg(target_os = "linux")]
pub(crate) fn lower_priority() {
    // SAFETY: setpriority and gettid take plain integers and touch no memory of ours; on
    // Linux PRIO_PROCESS with a thread id sets that thread's niceness only.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE);
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn lower_priority() {}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn runs_jobs_and_reports_panics() {
        let rx = super::spawn(|| 6 * 7);
        assert_eq!(rx.await.unwrap(), 42);
        let rx = super::spawn(|| -> u8 { panic!("job bug") });
        assert!(rx.await.is_err());
        // The pool still works after a panic (the worker survives or a new one starts).
        let rx = super::spawn(|| "again");
        assert_eq!(rx.await.unwrap(), "again");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn its_threads_run_at_lower_priority() {
        let rx = super::spawn(|| unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) });
        assert_eq!(rx.await.unwrap(), super::NICE);
        let rx = super::spawn_async(async {
            unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
        });
        assert_eq!(rx.await.unwrap(), super::NICE);
    }
}
