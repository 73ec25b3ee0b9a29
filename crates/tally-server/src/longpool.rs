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
//! threads stay niced for their lifetime and are kept for reuse (idle ones end after a
//! minute). At most [`THREADS_MAX`] run; beyond that, work goes to tokio's blocking pool.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Mutex;
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send + 'static>;

const THREADS_MAX: usize = 512;
const IDLE_FOR: Duration = Duration::from_secs(60);
/// Niceness of these threads (0 is normal, 19 the lowest priority).
const NICE: i32 = 10;
/// Evaluation recurses; the same stack as the async workers'.
const STACK_BYTES: usize = 512 << 20;

static IDLE: Mutex<Vec<Sender<Job>>> = Mutex::new(Vec::new());
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Run `f` on a low-priority thread; the result arrives through the returned receiver
/// (an error if `f` panicked).
pub fn spawn<F, R>(f: F) -> tokio::sync::oneshot::Receiver<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    loop {
        let idle = IDLE.lock().ok().and_then(|mut v| v.pop());
        match idle {
            // A worker that timed out meanwhile hands the job back.
            Some(w) => match w.send(job) {
                Ok(()) => return rx,
                Err(back) => job = back.0,
            },
            None => break,
        }
    }
    if THREADS.fetch_add(1, Ordering::AcqRel) >= THREADS_MAX {
        THREADS.fetch_sub(1, Ordering::AcqRel);
        tokio::task::spawn_blocking(job);
        return rx;
    }
    let (wtx, wrx) = channel::<Job>();
    let started = std::thread::Builder::new().name("tally-long".into()).stack_size(STACK_BYTES).spawn(move || {
        lower_priority();
        let mut next = Some(job);
        while let Some(job) = next.take() {
            // A panicking job drops its result sender (the caller sees an error); the
            // thread goes on.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            if let Ok(mut idle) = IDLE.lock() {
                idle.push(wtx.clone());
            }
            next = wrx.recv_timeout(IDLE_FOR).ok();
        }
        THREADS.fetch_sub(1, Ordering::AcqRel);
    });
    if let Err(e) = started {
        THREADS.fetch_sub(1, Ordering::AcqRel);
        tracing::warn!(error = %e, "could not start an evaluation thread; using the blocking pool");
        // The job moved into the failed closure; the caller's receiver reports the loss.
    }
    rx
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: setpriority and gettid take plain integers and touch no memory of ours; on
    // Linux PRIO_PROCESS with a thread id sets that thread's niceness only.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE);
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

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
    }
}
