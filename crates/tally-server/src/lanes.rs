//! The threads client connections are served on: one single-threaded runtime per worker
//! of the server's runtime (one per core), each connection placed on the one with the
//! fewest open connections and served there until it closes.
//!
//! Why not the server's multi-threaded runtime: every answer comes from another thread
//! (the executor, a long-query thread), and a task woken from outside a work-stealing
//! runtime wakes one of its workers and, often, a second one that finds nothing to steal.
//! A lone client's transfer took about ten thread switches where one needs five, and the
//! request threads' CPU per transfer was half futex, scheduling and `epoll_wait`
//! (docs/benchmarks.md, "Connections on a thread each"). A connection on a runtime of its
//! own thread wakes that thread only. What work stealing gave (a busy connection's
//! neighbours moving to an idle core) matters less here: a request's work on these
//! threads is bounded (a read past the inline step budget of 1,000 steps moves to
//! `crate::longpool`, bodies over 64 KiB are parsed and large answers encoded off these
//! threads too), and connections are spread by count.
//!
//! HTTP/2 is different: a driver multiplexes a whole application onto one connection,
//! which must still have every core. One known from its first bytes (prior knowledge, as
//! the official drivers speak it in the clear) is served on the server's runtime as
//! before (`crate::accept`); one over TLS (ALPN, known only after the handshake on its
//! lane) keeps its connection on the lane and runs its requests on the server's runtime
//! (`crate::conn`). Everything else the server runs (the cluster's network, the metrics
//! port, background tasks) stays there too; a task a request spawns runs where the
//! request runs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tokio::sync::watch;

/// Stack of a lane's thread: as the server runtime's (requests evaluate inline on it, and
/// evaluation recurses; the evaluator bounds the depth). Only touched pages are committed.
const STACK_BYTES: usize = 512 << 20;

/// The connection threads; see the module doc.
pub struct Lanes {
    lanes: Vec<Lane>,
    /// The server's runtime (where HTTP/2 streams run, see `crate::conn`).
    server: Handle,
    stop: watch::Sender<bool>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

struct Lane {
    runtime: Handle,
    open: Arc<AtomicUsize>,
}

/// A connection's place on a lane: counted until dropped.
pub struct Placed {
    open: Arc<AtomicUsize>,
}

impl Drop for Placed {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Lanes {
    /// Start `n` lanes (at least one), from the server's runtime.
    pub fn start(n: usize) -> std::io::Result<Lanes> {
        let server = Handle::current();
        let (stop, _) = watch::channel(false);
        let mut lanes = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let runtime = rt.handle().clone();
            let mut stopped = stop.subscribe();
            let thread = std::thread::Builder::new().name(format!("tally-conn-{i}")).stack_size(STACK_BYTES).spawn(
                move || {
                    rt.block_on(async move {
                        // Answers from the executor reach this thread's requests with one
                        // wake per batch (tally-calvin `courier`).
                        tokio::spawn(tally_calvin::courier::Courier::serve_here());
                        let _ = stopped.wait_for(|s| *s).await;
                    });
                    // Connections still open past the server's grace period are closed.
                    rt.shutdown_background();
                },
            )?;
            lanes.push(Lane { runtime, open: Arc::new(AtomicUsize::new(0)) });
            threads.push(thread);
        }
        Ok(Lanes { lanes, server, stop, threads: Mutex::new(threads) })
    }

    /// The lane with the fewest open connections (the first of equals), and the new
    /// connection's place on it.
    pub fn place(&self) -> (&Handle, Placed) {
        let lane = self.lanes.iter().min_by_key(|l| l.open.load(Ordering::Relaxed)).expect("at least one lane");
        lane.open.fetch_add(1, Ordering::Relaxed);
        (&lane.runtime, Placed { open: lane.open.clone() })
    }

    /// The server's runtime.
    pub fn server(&self) -> &Handle {
        &self.server
    }

    /// Open connections on each lane.
    pub fn open(&self) -> Vec<usize> {
        self.lanes.iter().map(|l| l.open.load(Ordering::Relaxed)).collect()
    }

    /// Stop every lane (what is still running on them is dropped) and wait for their
    /// threads. Blocking.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        // Threads not stopped by `stop` end too (without being waited for).
        let _ = self.stop.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_go_to_the_lane_with_the_fewest() {
        let lanes = Lanes::start(3).unwrap();
        let a = lanes.place().1;
        let b = lanes.place().1;
        let c = lanes.place().1;
        assert_eq!(lanes.open(), [1, 1, 1]);
        drop(b);
        assert_eq!(lanes.open(), [1, 0, 1]);
        let d = lanes.place().1;
        assert_eq!(lanes.open(), [1, 1, 1], "the freed lane is filled first");
        let e = lanes.place().1;
        assert_eq!(lanes.open(), [2, 1, 1]);
        drop((a, c, d, e));
        assert_eq!(lanes.open(), [0, 0, 0]);
        lanes.stop();
    }

    #[test]
    fn a_connection_runs_on_its_lane_and_stop_ends_the_threads() {
        let server = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let lanes = server.block_on(async { Lanes::start(2) }).unwrap();
        let (rt, placed) = lanes.place();
        let (tx, rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            let _placed = placed;
            tx.send(std::thread::current().name().map(str::to_owned)).unwrap();
            // Still running when the lanes stop: dropped, not waited for.
            std::future::pending::<()>().await;
        });
        assert_eq!(rx.recv().unwrap().as_deref(), Some("tally-conn-0"));
        lanes.stop();
        assert!(lanes.threads.lock().unwrap().is_empty());
        assert_eq!(lanes.open(), [0, 0], "the dropped connection gave back its place");
    }
}
