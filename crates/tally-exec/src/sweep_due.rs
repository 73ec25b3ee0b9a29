//! When a retention sweep could next remove something (executor rules 6): replicated
//! state that decides which batches sweep, and what an idle node's log needs to know to
//! give the executor an empty batch to sweep at (`tally_apply::IdleSweep`).
//!
//! Before rules 6 every batch at the sweep spacing (`crate::sweep_spacing`) walked its
//! share of the store, 12,800 keys a second of commit ts of each kind, whether or not
//! anything could be removed: under load with collections keeping 30 days of history
//! that walk found nothing and cost about a tenth of the executor. Now each of the two
//! sweeps (documents, index entries) runs only while its pass is under way (its cursor
//! is not at the beginning) or when its `settled` ts has come:
//!
//! - A pass that ends knows, from every key it looked at, the earliest commit ts at which
//!   one of them has more to remove (`tally_fql::retention::Sweep::due`), and settles on
//!   that, lowered by every write made while it ran (a write behind its cursor is one it
//!   did not see).
//! - Every write lowers the bound: `tally_fql::retention::WritesDue` gives, for a batch's
//!   writes, the earliest ts at which they can make something removable (the collection's
//!   history after the write's ts; 15 minutes for an index entry; now for a rewritten
//!   collection or database schema document).
//! - A pass starts when a sweep is due and its cursor is at the beginning; it sees
//!   everything written before it, so it starts from "never".
//!
//! The state is part of what a batch computes, so it is replicated like the cursors: meta
//! [`META_SWEEP_DUE`], written by every batch that changes it and carried by snapshots.
//! Where it is absent (a store of rules 5 or earlier) nothing is known and a sweep is due
//! now: the first pass settles it. A fresh store (no batch applied yet) has nothing to
//! remove. Every member, a restart, a replay and a member installed from a snapshot read
//! the same bytes and decide alike.

/// Never, as time alone passes.
pub const NEVER: u64 = u64::MAX;

/// Meta key of the replicated [`SweepDue`]. Layout (33 bytes): format byte
/// [`DUE_FORMAT`], then for the document sweep and the index entry sweep each: `seen`
/// (u64 BE: the earliest due ts the pass under way has seen or been told of), `settled`
/// (u64 BE: the earliest ts a sweep is due when no pass is under way).
pub const META_SWEEP_DUE: &str = "retention_due";

/// The format byte of [`META_SWEEP_DUE`].
pub const DUE_FORMAT: u8 = 1;

const DUE_BYTES: usize = 1 + 2 * 16;

/// A kind of sweep: documents.
pub const DOCS: usize = 0;
/// A kind of sweep: index entries.
pub const INDEX: usize = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pass {
    seen: u64,
    settled: u64,
}

/// The two sweeps' state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweepDue {
    passes: [Pass; 2],
}

impl SweepDue {
    /// Nothing is known (a store of earlier rules): a sweep is due now, and a pass under
    /// way ends asking for another (keys behind its cursor were not seen under these
    /// rules).
    pub fn unknown() -> SweepDue {
        SweepDue { passes: [Pass { seen: 0, settled: 0 }; 2] }
    }

    /// A store with nothing in it: nothing is due until something is written.
    pub fn empty() -> SweepDue {
        SweepDue { passes: [Pass { seen: NEVER, settled: NEVER }; 2] }
    }

    /// The state a store holds: `stored` is its [`META_SWEEP_DUE`], `applied_height` its
    /// applied height. Refuses bytes of another layout (a damaged store).
    pub fn load(stored: Option<&[u8]>, applied_height: u64) -> anyhow::Result<SweepDue> {
        match stored {
            Some(b) => SweepDue::decode(b),
            None if applied_height == 0 => Ok(SweepDue::empty()),
            None => Ok(SweepDue::unknown()),
        }
    }

    /// The stored form ([`META_SWEEP_DUE`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(DUE_BYTES);
        out.push(DUE_FORMAT);
        for p in &self.passes {
            out.extend_from_slice(&p.seen.to_be_bytes());
            out.extend_from_slice(&p.settled.to_be_bytes());
        }
        out
    }

    /// Reads [`SweepDue::encode`]'s bytes; anything else is an error.
    pub fn decode(b: &[u8]) -> anyhow::Result<SweepDue> {
        anyhow::ensure!(b.len() == DUE_BYTES, "the stored {META_SWEEP_DUE} is {} bytes, not {DUE_BYTES}", b.len());
        anyhow::ensure!(b[0] == DUE_FORMAT, "the stored {META_SWEEP_DUE} has format {}, not {DUE_FORMAT}", b[0]);
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let mut d = SweepDue::empty();
        for (k, p) in d.passes.iter_mut().enumerate() {
            let at = 1 + k * 16;
            *p = Pass { seen: u64_at(at), settled: u64_at(at + 8) };
        }
        Ok(d)
    }

    /// A batch wrote something that can make versions of `kind` removable from `at` on.
    pub fn lower(&mut self, kind: usize, at: u64) {
        let p = &mut self.passes[kind];
        p.seen = p.seen.min(at);
        p.settled = p.settled.min(at);
    }

    /// Does sweep `kind` run in a batch whose last commit ts is `now`? `running`: its
    /// pass is under way.
    pub fn wants(&self, kind: usize, running: bool, now: u64) -> bool {
        running || self.passes[kind].settled <= now
    }

    /// Before sweep `kind` runs: `starts` when its cursor is at the beginning (a new
    /// pass, which sees everything written so far).
    pub fn before(&mut self, kind: usize, starts: bool) {
        if starts {
            self.passes[kind].seen = NEVER;
        }
    }

    /// After sweep `kind` ran: what it said was due, and whether its pass ended.
    pub fn after(&mut self, kind: usize, due: Option<u64>, ended: bool) {
        let p = &mut self.passes[kind];
        p.seen = p.seen.min(due.unwrap_or(NEVER));
        if ended {
            p.settled = p.seen;
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
    fn the_stored_form_has_golden_bytes_round_trips_and_refuses_anything_else() {
        let mut d = SweepDue::empty();
        d.lower(DOCS, 0x0102);
        d.lower(INDEX, 7);
        d.before(INDEX, true);
        let b = d.encode();
        let mut want = vec![DUE_FORMAT];
        for v in [0x0102u64, 0x0102, NEVER, 7] {
            want.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(b, want);
        assert_eq!(SweepDue::decode(&b).unwrap(), d);
        let mut bad = b.clone();
        bad[0] = 2;
        assert!(SweepDue::decode(&bad).is_err(), "another format");
        assert!(SweepDue::decode(&b[..32]).is_err(), "short");
        assert!(SweepDue::decode(&[b.clone(), vec![0]].concat()).is_err(), "trailing bytes");
        // Absent: nothing in a fresh store; unknown in one that applied batches.
        assert_eq!(SweepDue::load(None, 0).unwrap(), SweepDue::empty());
        assert_eq!(SweepDue::load(None, 5).unwrap(), SweepDue::unknown());
        assert_eq!(SweepDue::load(Some(&b), 5).unwrap(), d);
        assert!(SweepDue::load(Some(&b[..3]), 5).is_err());
    }

    #[test]
    fn writes_lower_the_bound_and_a_pass_settles_on_what_it_saw_and_was_told() {
        let mut d = SweepDue::empty();
        assert_eq!(d.due([false, false]), NEVER, "nothing written: never");
        assert!(!d.wants(DOCS, false, 1_000));
        d.lower(DOCS, 500);
        assert_eq!(d.due([false, false]), 500);
        assert!(!d.wants(DOCS, false, 499) && d.wants(DOCS, false, 500));
        assert!(!d.wants(INDEX, false, 500), "the kinds are apart");
        assert!(d.wants(INDEX, true, 0), "a pass under way always runs");
        assert_eq!(d.due([false, true]), 0, "a pass under way is due now");
        // A pass over two batches; a write between them (maybe behind its cursor).
        d.before(DOCS, true);
        d.after(DOCS, Some(900), false);
        d.lower(DOCS, 700);
        d.before(DOCS, false);
        d.after(DOCS, Some(800), true);
        assert_eq!(d.due([false, false]), 700, "the write it may not have seen");
        // A pass that finds nothing and was told nothing: never.
        d.before(DOCS, true);
        d.after(DOCS, None, true);
        assert_eq!(d.due([false, false]), NEVER);
        // Unknown: due now; a pass under way then ends asking for another.
        let mut u = SweepDue::unknown();
        assert!(u.wants(DOCS, false, 0));
        u.before(INDEX, false);
        u.after(INDEX, Some(50), true);
        assert_eq!(u.due([false, false]), 0);
        u.before(INDEX, true);
        u.after(INDEX, Some(50), true);
        u.before(DOCS, true);
        u.after(DOCS, None, true);
        assert_eq!(u.due([false, false]), 50);
    }
}
