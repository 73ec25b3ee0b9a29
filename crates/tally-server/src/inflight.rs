//! The server-wide budget for bytes in flight: request bodies being read and the work
//! they become (parsed queries, queued write inputs), and answers waiting for their
//! client to read them. Past it, new work is refused at once (`503` with `Retry-After`)
//! rather than queued: memory stays bounded whatever the clients do. The number of FQL
//! requests in progress is capped the same way ([`InFlight::try_enter_request`]).
//!
//! A reservation is a [`Reserved`] guard; dropping it gives the bytes back.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Default bytes in flight: two 16 MiB writes (a body costs [`BODY_COST_FACTOR`] times
/// its size), or eight 16 MiB answers being sent. With the per-query evaluation budget
/// (128 MiB × one per scheduler slot), the executor's, its batch, the write-behind queue
/// and the state store's page cache, the node's bounds add up to 2,036 MiB on two cores
/// (ARCHITECTURE.md, Limits); 512 MiB made that 2.5 GiB, over the 2 GiB asked for.
pub const INFLIGHT_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;

/// What a request body of `n` bytes costs once read, parsed (serde_json values, the
/// expression tree) and, for a write, encoded as a logged input: measured about 5× for
/// a `Do` of small `Create`s; 8× leaves headroom.
pub const BODY_COST_FACTOR: u64 = 8;

/// Default FQL requests in progress at once (read, being worked on, or waiting for the
/// log), server-wide. A burst beyond it is refused at once with `503` instead of being
/// queued in the async runtime: 80,000 concurrent small writes (400 HTTP/2 connections
/// of 200 streams) were all accepted and waited up to 36 s, the runtime's run queue
/// that long, and `/ping` waited 2–5 s behind them (docs/benchmarks.md). 8,192 is about
/// three seconds of the executor's small writes on two cores, and four times the 2,000
/// concurrent writers the issue saw served without errors.
pub const REQUESTS_DEFAULT_MAX: usize = 8_192;

#[derive(Debug)]
pub struct InFlight {
    used: AtomicU64,
    max: u64,
    requests: AtomicUsize,
    requests_max: usize,
}

impl InFlight {
    pub fn new(max: u64) -> Arc<InFlight> {
        InFlight::with_requests_max(max, REQUESTS_DEFAULT_MAX)
    }

    /// A budget of `max` bytes and `requests_max` requests in progress.
    pub fn with_requests_max(max: u64, requests_max: usize) -> Arc<InFlight> {
        Arc::new(InFlight {
            used: AtomicU64::new(0),
            max: max.max(1),
            requests: AtomicUsize::new(0),
            requests_max: requests_max.max(1),
        })
    }

    /// Enter one request, or None when `requests_max` are already in progress.
    pub fn try_enter_request(self: &Arc<Self>) -> Option<RequestSlot> {
        let mut cur = self.requests.load(Ordering::Relaxed);
        loop {
            if cur >= self.requests_max {
                return None;
            }
            match self.requests.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(RequestSlot { pool: self.clone() }),
                Err(now) => cur = now,
            }
        }
    }

    /// Requests in progress now.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Reserve `bytes`, or None when that would pass the budget. A lone reservation
    /// larger than the whole budget is let in when nothing else is in flight, so that
    /// the largest legal request still works on an idle node.
    pub fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<Reserved> {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let next = cur.saturating_add(bytes);
            if next > self.max && cur > 0 {
                return None;
            }
            match self.used.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(Reserved { pool: self.clone(), bytes }),
                Err(now) => cur = now,
            }
        }
    }

    /// Reserve `bytes` whether or not they fit (an answer already computed: refusing it
    /// would waste the work, and it is bounded by the answer size limit).
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Reserved {
        self.used.fetch_add(bytes, Ordering::AcqRel);
        Reserved { pool: self.clone(), bytes }
    }
}

/// One request in progress until dropped ([`InFlight::try_enter_request`]).
#[derive(Debug)]
pub struct RequestSlot {
    pool: Arc<InFlight>,
}

impl Drop for RequestSlot {
    fn drop(&mut self) {
        self.pool.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Bytes held in flight until dropped.
#[derive(Debug)]
pub struct Reserved {
    pool: Arc<InFlight>,
    bytes: u64,
}

impl Reserved {
    /// Grow the reservation by `more`, or false (and unchanged) past the budget.
    pub fn try_grow(&mut self, more: u64) -> bool {
        match self.pool.try_reserve(more) {
            Some(r) => {
                self.bytes += r.bytes;
                std::mem::forget(r);
                true
            }
            None => false,
        }
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.pool.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// How often the trimmer looks for a quiet moment.
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Allocations of at least this many bytes get pages of their own from the OS (glibc
/// `mmap`), given back the moment they are freed. glibc's default threshold starts at
/// 128 KiB but rises to the size of each large block freed (up to 32 MiB), after which
/// big strings, pages and answer buffers come from the heap and stay resident after a
/// burst of big queries; fixing it keeps them out (`tally bench-resources memory`,
/// docs/benchmarks.md).
const MMAP_THRESHOLD_BYTES: i32 = 1 << 20;

/// What gives freed memory back to the OS, set by the binary that chose the process's
/// allocator (the `tally` binary: jemalloc's purge of every arena); unset, glibc's `malloc_trim`.
static RELEASE: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets how the trimmer gives memory back ([`spawn_trimmer`]): for a binary whose
/// `#[global_allocator]` is not glibc's malloc. The first call wins.
pub fn set_memory_release(release: fn()) {
    let _ = RELEASE.set(release);
}

/// Give memory back to the OS after load: an allocator keeps freed pages for reuse (glibc
/// in its arenas, where a write flood left gigabytes resident; jemalloc until an arena's
/// decay runs, which happens only as the arena is used again), so every
/// [`TRIM_EVERY`] with nothing in flight a thread asks it to release them, once per quiet
/// spell ([`set_memory_release`], else `malloc_trim`, which also returns free pages in
/// the middle of each arena).
pub fn spawn_trimmer(inflight: Arc<InFlight>) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets the allocator's own tuning; it is called once at
        // start, and a refusal (0) leaves glibc's default in place.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        }
    }
    let release = RELEASE.get().copied();
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    if release.is_none() {
        return;
    }
    let _ = std::thread::Builder::new().name("tally-trim".into()).spawn(move || {
        let mut trimmed_at_zero = false;
        loop {
            std::thread::sleep(TRIM_EVERY);
            if inflight.used() > 0 {
                trimmed_at_zero = false;
                continue;
            }
            // Once per quiet spell: a trim walks every arena under its lock.
            if !trimmed_at_zero {
                match release {
                    Some(release) => release(),
                    #[cfg(all(target_os = "linux", target_env = "gnu"))]
                    // SAFETY: malloc_trim only touches the allocator's own state.
                    None => unsafe {
                        libc::malloc_trim(0);
                    },
                    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
                    None => {}
                }
                trimmed_at_zero = true;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_and_given_back() {
        let pool = InFlight::new(100);
        let a = pool.try_reserve(60).unwrap();
        assert!(pool.try_reserve(50).is_none());
        let mut b = pool.try_reserve(40).unwrap();
        assert!(!b.try_grow(1));
        drop(a);
        assert!(b.try_grow(50));
        assert_eq!(pool.used(), 90);
        drop(b);
        assert_eq!(pool.used(), 0);
        // Alone, a request larger than the budget is let in.
        let big = pool.try_reserve(500).unwrap();
        assert!(pool.try_reserve(1).is_none());
        drop(big);
    }

    #[test]
    fn requests_in_progress_are_capped_and_given_back() {
        let pool = InFlight::with_requests_max(100, 2);
        let a = pool.try_enter_request().unwrap();
        let b = pool.try_enter_request().unwrap();
        assert!(pool.try_enter_request().is_none());
        assert_eq!(pool.requests(), 2);
        drop(a);
        let c = pool.try_enter_request().unwrap();
        drop((b, c));
        assert_eq!(pool.requests(), 0);
        // The byte budget is separate.
        assert!(pool.try_reserve(100).is_some());
    }
}
