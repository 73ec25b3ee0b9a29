//! The async runtime openraft runs on, and the switch that makes a member deterministic.
//!
//! [`TallyRuntime`] is tokio (via `openraft-rt-tokio`) with one difference: the random
//! numbers openraft draws (election timeouts, first tick waits) come from [`thread_rng`]
//! here, which is seeded from the OS unless the current thread has entered
//! [`deterministic`] mode.
//!
//! Deterministic mode is for the simulation (`tally-server/tests/cluster_sim.rs`): on a
//! thread that has called [`enter_deterministic`] and runs a current-thread tokio runtime
//! with paused time, a member does all its work on that one thread (the executor and the
//! Raft log's writes run inline instead of on their own threads, see [`blocking`]), and
//! every random draw comes from the seed. The same seed then replays the same run, message
//! for message. A production server never enters it.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::time::Duration;

use openraft::async_runtime::AsyncRuntime;
use openraft::OptionalSend;
use openraft_rt_tokio::TokioRuntime;
use rand10::rngs::SmallRng;
use rand10::{Rng, SeedableRng};

thread_local! {
    static SEEDED: RefCell<Option<SmallRng>> = const { RefCell::new(None) };
    static DETERMINISTIC: Cell<bool> = const { Cell::new(false) };
}

/// Make this thread deterministic: random draws come from `seed`, and blocking work runs
/// inline. Only for a thread that drives a current-thread runtime with paused time.
pub fn enter_deterministic(seed: u64) {
    SEEDED.with(|s| *s.borrow_mut() = Some(SmallRng::seed_from_u64(seed)));
    DETERMINISTIC.with(|d| d.set(true));
}

/// Leave deterministic mode on this thread.
pub fn leave_deterministic() {
    SEEDED.with(|s| *s.borrow_mut() = None);
    DETERMINISTIC.with(|d| d.set(false));
}

pub fn is_deterministic() -> bool {
    DETERMINISTIC.with(|d| d.get())
}

/// A fresh generator: from the thread's seed in deterministic mode, from the OS otherwise.
pub fn thread_rng() -> SmallRng {
    let seeded = SEEDED.with(|s| s.borrow_mut().as_mut().map(|r| r.next_u64()));
    match seeded {
        Some(seed) => SmallRng::seed_from_u64(seed),
        None => rand10::make_rng(),
    }
}

/// Run blocking work: on tokio's blocking pool normally, inline in deterministic mode (a
/// second thread would make the order of events depend on the OS scheduler).
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    if is_deterministic() {
        Ok(f())
    } else {
        tokio::task::spawn_blocking(f).await.map_err(|e| io::Error::other(e.to_string()))
    }
}

/// tokio, with random draws from [`thread_rng`].
#[derive(Debug)]
pub struct TallyRuntime(TokioRuntime);

impl AsyncRuntime for TallyRuntime {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <TokioRuntime as AsyncRuntime>::Sleep;
    type Instant = <TokioRuntime as AsyncRuntime>::Instant;
    type TimeoutError = <TokioRuntime as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <TokioRuntime as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = SmallRng;
    type Mpsc = <TokioRuntime as AsyncRuntime>::Mpsc;
    type Watch = <TokioRuntime as AsyncRuntime>::Watch;
    type Oneshot = <TokioRuntime as AsyncRuntime>::Oneshot;
    type Mutex<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::Mutex<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        TokioRuntime::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        TokioRuntime::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        TokioRuntime::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(duration: Duration, future: F) -> Self::Timeout<R, F> {
        TokioRuntime::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(deadline: Self::Instant, future: F) -> Self::Timeout<R, F> {
        TokioRuntime::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        TokioRuntime::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        thread_rng()
    }

    fn new(threads: usize) -> Self {
        TallyRuntime(TokioRuntime::new(threads))
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.0.block_on(future)
    }

    fn spawn_blocking<F, T>(f: F) -> impl Future<Output = Result<T, io::Error>> + Send
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        blocking(f)
    }
}
