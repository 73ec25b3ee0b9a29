//! Answers released while an entry is still being applied.
//!
//! A batch carries many tenants' inputs. The executor makes every input visible as soon
//! as it is evaluated, in order, in intermediate (never durable) commits, and hands its
//! output over then (`ReplicatedMachine::apply_at_answering`). The entry is already
//! committed by a majority when it is applied, so an output handed over is final. Without
//! this, a quiet tenant's write that the fair queue put first in a batch would still wait
//! for the flooding tenant's share of the batch.
//!
//! Two things use the outputs:
//! - **The leader's submitters.** The batcher registers each proposed batch's answer sink
//!   under the batch's identity: this member's leader term and the batch timestamp. The
//!   batcher never issues one timestamp twice, and a term has one leader per member id,
//!   so an applied entry whose leader id is this member, in the registered term, with the
//!   registered timestamp, is that very proposal. Any other entry finds nothing and is
//!   answered at the end as before; so is a registration no applied entry claims (the
//!   proposal failed), from the batcher's own copy of the replies.
//! - **A follower's forwarded writes.** [`Progress`] says how many inputs of the entry
//!   being applied are visible here, so a follower can answer once the client's own input
//!   is visible on it, not the whole entry.
//!
//! It also keeps what applying an input costs here ([`Early::ns_per_input`]), from which
//! the leader's batcher paces its batches while tenants compete (see `run_batcher`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tally_calvin::Decoded;

/// Where the outputs of one proposed batch go: `(input, output, raft index, height)`.
pub type Sink = Box<dyn FnMut(usize, Vec<u8>, u64, u64) + Send>;

/// A registered batch: the term this member led when it proposed it, its sink, and what
/// this member's request threads decoded from its inputs (`tally_calvin::Decoded`, by
/// input; handed to the executor with the entry).
struct Registered {
    term: u64,
    sink: Sink,
    decoded: Vec<Option<Decoded>>,
}

/// The leader's own things for a batch it proposed, claimed when the entry is applied.
pub struct Claimed {
    pub sink: Sink,
    pub decoded: Vec<Option<Decoded>>,
}

#[derive(Default)]
pub struct Early {
    /// Batch timestamp → sink, for batches this member proposed and has not yet applied.
    pending: Mutex<HashMap<u64, Registered>>,
    progress: Mutex<Progress>,
    /// Woken whenever `progress` moves (only a follower's forwarded writes wait on it, so
    /// readers waiting for whole entries are not woken once per input).
    pub progress_moved: tokio::sync::Notify,
    /// Moving average of the wall time one input took to apply, in nanoseconds (0: none
    /// measured yet).
    cost_ns: AtomicU64,
}

/// The entry being applied and how many of its inputs are visible.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub index: u64,
    pub visible: usize,
}

impl Early {
    /// Register the sink of a batch with timestamp `ts`, proposed while leading in `term`,
    /// with what was decoded from its inputs.
    pub fn register(&self, term: u64, ts: u64, sink: Sink, decoded: Vec<Option<Decoded>>) {
        if let Ok(mut p) = self.pending.lock() {
            p.insert(ts, Registered { term, sink, decoded });
        }
    }

    /// Drop the registration of `ts` (the batcher's answer came; the entry was not applied
    /// here or was answered already).
    pub fn forget(&self, ts: u64) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&ts);
        }
    }

    /// The sink and hints of the entry being applied, if this member proposed it in `term`.
    pub fn claim(&self, term: u64, ts: u64) -> Option<Claimed> {
        let mut p = self.pending.lock().ok()?;
        match p.get(&ts) {
            Some(r) if r.term == term => p.remove(&ts).map(|r| Claimed { sink: r.sink, decoded: r.decoded }),
            _ => None,
        }
    }

    pub fn set_progress(&self, index: u64, visible: usize) {
        if let Ok(mut p) = self.progress.lock() {
            *p = Progress { index, visible };
        }
        self.progress_moved.notify_waiters();
    }

    /// Record that applying `inputs` inputs took `took`.
    pub fn record_apply(&self, took: Duration, inputs: usize) {
        if inputs == 0 {
            return;
        }
        let sample = u64::try_from(took.as_nanos() / inputs as u128).unwrap_or(u64::MAX);
        let old = self.cost_ns.load(Ordering::Relaxed);
        // A quarter of the weight to the newest batch: follows a change of load within a
        // few batches.
        let new = if old == 0 { sample } else { old - old / 4 + sample / 4 };
        self.cost_ns.store(new.max(1), Ordering::Relaxed);
    }

    /// What one input has recently taken to apply here, if anything was measured.
    pub fn ns_per_input(&self) -> Option<u64> {
        Some(self.cost_ns.load(Ordering::Relaxed)).filter(|&n| n > 0)
    }

    /// Is input `slot` of the entry at `index` visible, though the entry is not wholly
    /// applied yet?
    pub fn visible(&self, index: u64, slot: usize) -> bool {
        self.progress.lock().map(|p| p.index == index && p.visible > slot).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_sink_is_claimed_once_and_only_in_its_term() {
        let e = Early::default();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let hints: Vec<Option<Decoded>> = vec![Some(Box::new(42u32)), None];
        e.register(
            3,
            1000,
            Box::new(move |i, out, index, height| g.lock().unwrap().push((i, out, index, height))),
            hints,
        );
        assert!(e.claim(4, 1000).is_none(), "another term's entry with the same ts is not this proposal");
        assert!(e.claim(3, 999).is_none());
        let Claimed { mut sink, mut decoded } = e.claim(3, 1000).expect("the proposal's own entry claims it");
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded[0].take().and_then(|d| d.downcast::<u32>().ok()).map(|d| *d), Some(42));
        assert!(decoded[1].is_none());
        sink(0, b"a".to_vec(), 7, 2);
        assert!(e.claim(3, 1000).is_none(), "claimed once");
        assert_eq!(*got.lock().unwrap(), vec![(0, b"a".to_vec(), 7, 2)]);
        e.register(3, 1001, Box::new(|_, _, _, _| {}), Vec::new());
        e.forget(1001);
        assert!(e.claim(3, 1001).is_none());
    }

    #[test]
    fn the_cost_follows_recent_batches() {
        let e = Early::default();
        assert_eq!(e.ns_per_input(), None);
        e.record_apply(Duration::from_millis(10), 10);
        assert_eq!(e.ns_per_input(), Some(1_000_000));
        for _ in 0..20 {
            e.record_apply(Duration::from_millis(2), 10);
        }
        let n = e.ns_per_input().unwrap();
        assert!((200_000..220_000).contains(&n), "{n}");
    }

    #[test]
    fn progress_covers_only_its_entry() {
        let e = Early::default();
        e.set_progress(5, 2);
        assert!(e.visible(5, 0) && e.visible(5, 1));
        assert!(!e.visible(5, 2));
        assert!(!e.visible(6, 0));
    }
}
