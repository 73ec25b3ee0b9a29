//! When a batch runs its retention sweeps, and how far they may look (executor rules 4).
//!
//! A sweep that finds nothing still walks its share of the store, and under load almost
//! every sweep finds nothing (collections keep 30 days of history by default): ≈ 6 % of
//! the server's CPU in `tally bench transfer` at ≈ 250 batches/s, where every batch swept.
//! That cost followed the batch rate, so it grew as the node got faster. A batch with
//! inputs now sweeps only when its last commit ts is at least [`SWEEP_SPACING_MICROS`] past
//! the commit ts of the last batch that swept, and then its sweeps may look at a budget
//! proportional to the ts since that sweep ([`limits`]): the store is walked at a rate per
//! second of commit ts (12,800 keys, up to 102,400 removed versions, each for documents
//! and for index entries), not per batch. An empty batch (`idle`, an idle log's) always
//! sweeps, as before.
//!
//! The decision is the block's: which batch sweeps decides which versions its block
//! removes, so it reads only the replicated state — the batch's last commit ts and the
//! meta value [`META_RETENTION_SWEPT_TS`], written in the commit of every batch that swept
//! and carried by snapshots — never a clock or anything node-local. Every member, a
//! restart, a replay from the log and a member installed from a snapshot decide alike.

use tally_fql::retention::SweepLimits;

/// Meta key: the last commit ts of the last batch whose retention sweeps ran (8 bytes,
/// big-endian). Absent (a store of executor rules 3 or earlier, a fresh store): the next
/// batch sweeps.
pub const META_RETENTION_SWEPT_TS: &str = "retention_swept_ts";

/// A batch with inputs sweeps only when its last commit ts is at least this far (µs) past
/// [`META_RETENTION_SWEPT_TS`]: 10 ms of commit ts. At up to 100 batches/s, as fast as
/// batches come in a lightly loaded node, every batch still sweeps as it did under rules 3;
/// a faster node (≈ 250 batches/s in `tally bench transfer`) sweeps about every third
/// batch. The spacing is far below anything retention is measured in (15 minutes of v4's
/// `MVTOffset`, days of `history_days`), and an idle node's empty batches, 2 s apart,
/// always sweep.
pub const SWEEP_SPACING_MICROS: u64 = 10_000;

/// A spaced sweep's budget grows with the commit ts since the last sweep up to this many
/// spacings' worth (40 ms). A batch's sweep then looks at 128 to 512 keys of each kind and
/// removes up to 1,024 to 4,096 versions of each (1 to 4 MiB of keys): at most ≈ 0.4 ms of
/// a batch's time finding nothing (`tally-server/tests/retention_cost.rs`: ≈ 0.1 ms per
/// 128 + 128 keys), and a removal record of at most ≈ 8.2 MiB, well inside a stored value
/// (16 MiB). At 25 batches/s or more this keeps the sweep rate of a node at 100 batches/s
/// under rules 3 (a backlog of 100,000 removable versions gone within ≈ 1 s of commit ts,
/// `SweepLimits::default`); slower nodes sweep every batch with more than rules 3 gave one.
pub const SWEEP_CREDIT_SPACINGS_MAX: u64 = 4;

/// An empty batch's sweep looks at this many times the keys of [`SweepLimits::default`]
/// (finding nothing in 128 keys costs ≈ 0.1 ms, so ≈ 1 ms for 1,024: an idle node works
/// through a large store in fewer empty blocks).
pub const IDLE_SWEEP_KEYS_FACTOR: usize = 8;

/// Reads a stored [`META_RETENTION_SWEPT_TS`]; None for anything but 8 bytes.
pub fn decode_swept_ts(b: &[u8]) -> Option<u64> {
    b.try_into().ok().map(u64::from_be_bytes)
}

/// The bounds of the sweeps of a batch whose last commit ts is `now`, or None when it
/// does not sweep. `idle`: the batch has no inputs. `swept_ts`: the stored
/// [`META_RETENTION_SWEPT_TS`] (None: absent). Deterministic in its arguments alone.
pub fn limits(idle: bool, swept_ts: Option<u64>, now: u64) -> Option<SweepLimits> {
    let base = SweepLimits::default();
    if idle {
        return Some(SweepLimits { keys_max: base.keys_max * IDLE_SWEEP_KEYS_FACTOR, ..base });
    }
    // Commit ts strictly increase, so `now` is above any stored value; a stored value
    // that is not (damaged) gets the full budget, as an absent one does, never a batch
    // that stops sweeping.
    let since = match swept_ts {
        Some(t) if t < now => now - t,
        _ => u64::MAX,
    };
    if since < SWEEP_SPACING_MICROS {
        return None;
    }
    let credit = since.min(SWEEP_SPACING_MICROS * SWEEP_CREDIT_SPACINGS_MAX);
    // usize → u64 never truncates on the 64-bit targets Tally builds for; the product
    // stays far below u64::MAX (1 MiB × 40,000 µs ≈ 4.2e10).
    let scale = |n: usize| usize::try_from(n as u64 * credit / SWEEP_SPACING_MICROS).unwrap_or(n);
    Some(SweepLimits {
        keys_max: scale(base.keys_max),
        removals_max: scale(base.removals_max),
        bytes_max: scale(base.bytes_max),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_800_000_000_000_000;

    fn keys(l: Option<SweepLimits>) -> Option<(usize, usize, usize)> {
        l.map(|l| (l.keys_max, l.removals_max, l.bytes_max))
    }

    #[test]
    fn batches_closer_than_the_spacing_skip_and_the_budget_follows_the_ts_since() {
        let at = |since: u64| keys(limits(false, Some(T), T + since));
        assert_eq!(at(1), None);
        assert_eq!(at(SWEEP_SPACING_MICROS - 1), None);
        assert_eq!(at(SWEEP_SPACING_MICROS), Some((128, 1024, 1 << 20)));
        // 12 ms since: three batches 4 ms apart (≈ 250 batches/s) get 1.2 spacings' worth.
        assert_eq!(at(12_000), Some((153, 1228, 1_258_291)));
        assert_eq!(at(40_000), Some((512, 4096, 4 << 20)));
        assert_eq!(at(3_600_000_000), Some((512, 4096, 4 << 20)), "capped");
        // Nothing stored yet (a fresh store, or one of rules 3): the first batch sweeps.
        assert_eq!(keys(limits(false, None, T)), Some((512, 4096, 4 << 20)));
        // A stored ts at or above `now` cannot happen; should it, the batch sweeps.
        assert_eq!(keys(limits(false, Some(T + 5), T)), Some((512, 4096, 4 << 20)));
    }

    #[test]
    fn empty_batches_always_sweep_as_under_rules_3() {
        for swept in [None, Some(T), Some(T - 1), Some(T - 1_000_000)] {
            assert_eq!(keys(limits(true, swept, T)), Some((1024, 1024, 1 << 20)));
        }
    }

    #[test]
    fn the_stored_ts_is_eight_bytes() {
        assert_eq!(decode_swept_ts(&T.to_be_bytes()), Some(T));
        assert_eq!(decode_swept_ts(&[1; 7]), None);
        assert_eq!(decode_swept_ts(&[1; 9]), None);
    }
}
