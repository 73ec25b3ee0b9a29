//! When a retention sweep could next remove something: what an idle node's log needs to
//! know to give the executor an empty batch to sweep at (`tally_apply::IdleSweep`), and
//! nothing else. Node-local and not replicated: it changes no result, only when an idle
//! leader logs an empty batch, and every member computes the same anyway.
//!
//! Each of the two sweeps (documents, index entries) walks the store in passes, a bounded
//! share per batch (`crate::machine::FqlMachine::sweep`). While a pass is under way a
//! sweep is due now (the rest of the store has not been looked at). A pass that ends
//! knows, from every key it looked at, the earliest commit ts at which one of them has
//! more to remove (`tally_fql::retention::Sweep::due`) — exact, unless a batch wrote
//! something behind the pass's cursor while it ran, in which case another pass is due
//! now.
//!
//! A batch that skips its sweeps (executor rules 4, `crate::sweep_spacing`) but wrote
//! makes a sweep due now ([`SweepWatch::skipped_write`]): nothing has looked at its
//! writes, so an idle node gets an empty batch (2 s later) whose sweep does.
//!
//! The state is kept in the store beside the sweep cursors (meta [`META_SWEEP_WATCH`],
//! written with each batch), so a restart knows what it knew. Where it is absent (a store
//! an earlier build wrote, a snapshot install) nothing is known: no sweep is due until the
//! next batch with inputs, whose sweep starts learning again (an upgraded idle node sweeps
//! after its next write, as earlier builds did).

/// Never, as time alone passes.
pub const NEVER: u64 = u64::MAX;

/// Meta key of the persisted [`SweepWatch`]. Layout (35 bytes): format byte
/// [`WATCH_FORMAT`], then for the document pass and the index entry pass each: `seen`
/// (u64 BE), `dirty` (u8, 0 or 1), `settled` (u64 BE).
pub const META_SWEEP_WATCH: &str = "retention_watch";

/// The format byte of [`META_SWEEP_WATCH`].
pub const WATCH_FORMAT: u8 = 1;

const WATCH_BYTES: usize = 1 + 2 * 17;

#[derive(Clone, Copy, Debug)]
struct Pass {
    /// The earliest due ts seen so far in the pass under way.
    seen: u64,
    /// A batch wrote while the pass was under way (its keys may be behind the cursor).
    dirty: bool,
    /// When the last finished pass said a sweep is next due (0: now, or unknown).
    settled: u64,
}

impl Default for Pass {
    /// Nothing known: the pass under way (if any) is taken as dirty, so its end asks for
    /// another; until then no sweep is due as time alone passes.
    fn default() -> Self {
        Pass { seen: NEVER, dirty: true, settled: NEVER }
    }
}

/// The two passes' state.
#[derive(Debug, Default)]
pub struct SweepWatch {
    passes: [Pass; 2],
}

impl SweepWatch {
    /// The persisted form ([`META_SWEEP_WATCH`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(WATCH_BYTES);
        out.push(WATCH_FORMAT);
        for p in &self.passes {
            out.extend_from_slice(&p.seen.to_be_bytes());
            out.push(u8::from(p.dirty));
            out.extend_from_slice(&p.settled.to_be_bytes());
        }
        out
    }

    /// Reads [`SweepWatch::encode`]'s bytes; None for anything else (then nothing is known:
    /// `SweepWatch::default()`).
    pub fn decode(b: &[u8]) -> Option<SweepWatch> {
        if b.len() != WATCH_BYTES || b[0] != WATCH_FORMAT {
            return None;
        }
        let u64_at = |i: usize| b.get(i..i + 8).and_then(|s| s.try_into().ok()).map(u64::from_be_bytes);
        let mut w = SweepWatch::default();
        for (k, p) in w.passes.iter_mut().enumerate() {
            let at = 1 + k * 17;
            let dirty = match b[at + 8] {
                0 => false,
                1 => true,
                _ => return None,
            };
            *p = Pass { seen: u64_at(at)?, dirty, settled: u64_at(at + 9)? };
        }
        Some(w)
    }

    /// Before sweep `kind` (0 documents, 1 index entries) runs in a batch: `starts` when
    /// its cursor is at the beginning (a new pass, which sees this batch's writes),
    /// `wrote` when the batch's transactions wrote anything.
    pub fn before(&mut self, kind: usize, starts: bool, wrote: bool) {
        let p = &mut self.passes[kind];
        if starts {
            p.seen = NEVER;
            p.dirty = false;
        } else if wrote {
            p.dirty = true;
        }
    }

    /// A batch that did not sweep (`crate::sweep_spacing`) wrote: no pass has seen its
    /// writes, so a sweep is due now. A pass under way ends asking for another (it may
    /// have passed their keys); with none under way the next pass starts from the
    /// beginning and sees them, and until it ends a sweep is due now. Whether a pass is
    /// under way need not be known (it is in the cursors, not read by a skipped batch):
    /// a starting pass clears `dirty`, and a pass under way reports due now anyway.
    pub fn skipped_write(&mut self) {
        for p in &mut self.passes {
            p.dirty = true;
            p.settled = 0;
        }
    }

    /// After sweep `kind` ran: what it said was due, and whether its pass ended.
    pub fn after(&mut self, kind: usize, due: Option<u64>, ended: bool) {
        let p = &mut self.passes[kind];
        p.seen = p.seen.min(due.unwrap_or(NEVER));
        if ended {
            p.settled = if p.dirty { 0 } else { p.seen };
        }
    }

    /// The commit ts from which a sweep could remove something: 0 now, [`NEVER`] not as
    /// time alone passes. `running[kind]`: that sweep's pass is under way.
    pub fn due(&self, running: [bool; 2]) -> u64 {
        (0..2).map(|k| if running[k] { 0 } else { self.passes[k].settled }).min().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_persisted_form_round_trips_and_refuses_anything_else() {
        let mut w = SweepWatch::default();
        w.before(0, true, false);
        w.after(0, Some(7), true);
        let b = w.encode();
        assert_eq!(b.len(), WATCH_BYTES);
        assert_eq!(SweepWatch::decode(&b).map(|d| d.encode()), Some(b.clone()));
        assert_eq!(SweepWatch::decode(&b).unwrap().due([false, false]), 7);
        let mut bad = b.clone();
        bad[0] = 2;
        assert!(SweepWatch::decode(&bad).is_none(), "another format");
        let mut bad = b.clone();
        bad[9] = 2;
        assert!(SweepWatch::decode(&bad).is_none(), "a dirty flag that is not 0 or 1");
        assert!(SweepWatch::decode(&b[..34]).is_none(), "short");
    }

    #[test]
    fn a_clean_pass_settles_on_what_it_saw_and_a_dirty_one_asks_for_another() {
        let mut w = SweepWatch::default();
        assert_eq!(w.due([false, false]), NEVER, "nothing known: not due as time alone passes");
        assert_eq!(w.due([true, false]), 0, "a pass under way is due now");
        // A pass under way when nothing was known ends asking for another.
        w.before(1, false, false);
        w.after(1, None, true);
        assert_eq!(w.due([false, false]), 0);
        // Documents: a pass over two batches, nothing written meanwhile.
        w.before(0, true, true);
        w.after(0, Some(500), false);
        assert_eq!(w.due([true, false]), 0, "a pass under way is due now");
        w.before(0, false, false);
        w.after(0, Some(300), true);
        // Index entries: one batch, nothing due.
        w.before(1, true, false);
        w.after(1, None, true);
        assert_eq!(w.due([false, false]), 300);
        // A pass during which a batch wrote: another is due at once.
        w.before(1, true, false);
        w.after(1, None, false);
        w.before(1, false, true);
        w.after(1, None, true);
        assert_eq!(w.due([false, false]), 0);
        w.before(1, true, false);
        w.after(1, None, true);
        assert_eq!(w.due([false, false]), 300);
        w.before(0, true, false);
        w.after(0, None, true);
        assert_eq!(w.due([false, false]), NEVER);
    }

    /// A batch that skipped its sweeps but wrote: due now, whether a pass was under way
    /// (it ends asking for another) or not (the next pass, which sees the writes, settles).
    #[test]
    fn a_write_no_sweep_saw_makes_a_sweep_due_now() {
        let mut w = SweepWatch::default();
        for k in 0..2 {
            w.before(k, true, false);
            w.after(k, Some(900), true);
        }
        assert_eq!(w.due([false, false]), 900);
        w.skipped_write();
        assert_eq!(w.due([false, false]), 0, "no pass under way: the next one is due now");
        // Documents: a pass starts (seeing the writes) and ends clean in one batch.
        w.before(0, true, false);
        w.after(0, Some(700), true);
        assert_eq!(w.due([false, false]), 0, "the index entries' pass has not seen them yet");
        // Index entries: a pass under way over two batches, a skipped write between.
        w.before(1, true, false);
        w.after(1, Some(800), false);
        w.skipped_write();
        w.before(1, false, false);
        w.after(1, None, true);
        assert_eq!(w.due([false, false]), 0, "a pass the write may have passed asks for another");
        // Both passes again, nothing written: they settle on what they saw.
        for k in 0..2 {
            w.before(k, true, false);
            w.after(k, Some(600 + k as u64), true);
        }
        assert_eq!(w.due([false, false]), 600);
        let restored = SweepWatch::decode(&w.encode()).unwrap();
        assert_eq!(restored.due([false, false]), 600);
    }
}
