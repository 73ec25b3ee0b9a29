//! One epoch batch: the unit of sequencing, logging, replication and execution.
//!
//! Encoding (big-endian; docs/record.md "Epoch batch"):
//! - version 2: `0x02 | rules u16 | height u64 | ts u64 | count u32 | (len u32 | input bytes)*`
//! - version 1 (builds before executor rules were stamped; still read, and written again
//!   only for a batch decoded from it): `0x01 | height u64 | ts u64 | count u32 | (len u32 | input bytes)*`
//!
//! Nothing may follow the last input.

/// The version this build writes for a stamped batch.
pub const BATCH_FORMAT: u8 = 2;
/// The version of batches that carry no executor rules ([`Batch::UNSTAMPED`]).
pub const BATCH_FORMAT_UNSTAMPED: u8 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Position in the log, starting at 1.
    pub height: u64,
    /// The sequencer's clock when it closed the batch (µs since the epoch). Logged, so
    /// replay sees the same value; transactions derive their commit ts from it.
    pub ts: u64,
    /// The executor rules the sequencer closed the batch under (its
    /// [`StateMachine::rules`](crate::StateMachine::rules)): every replica, and every
    /// replay, must apply it under these rules, or compute other results than the ones
    /// acknowledged. [`Batch::UNSTAMPED`] for a batch logged before rules were stamped.
    pub rules: u16,
    pub inputs: Vec<Vec<u8>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("batch encoding is truncated")]
    Truncated,
    #[error("unknown batch format {0}")]
    Format(u8),
    #[error("a format-2 batch names executor rules 0")]
    ZeroRules,
    #[error("{0} bytes follow the batch's last input")]
    Trailing(usize),
}

/// What a batch's header says, read without copying its inputs ([`Batch::check`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHead {
    pub height: u64,
    pub ts: u64,
    pub rules: u16,
}

impl Batch {
    /// The `rules` of a batch sequenced before batches carried executor rules (format 1).
    pub const UNSTAMPED: u16 = 0;

    pub fn encode(&self) -> Vec<u8> {
        let len: usize = self.inputs.iter().map(|i| i.len() + 4).sum();
        let mut out = Vec::with_capacity(23 + len);
        if self.rules == Batch::UNSTAMPED {
            out.push(BATCH_FORMAT_UNSTAMPED);
        } else {
            out.push(BATCH_FORMAT);
            out.extend_from_slice(&self.rules.to_be_bytes());
        }
        out.extend_from_slice(&self.height.to_be_bytes());
        out.extend_from_slice(&self.ts.to_be_bytes());
        out.extend_from_slice(&(self.inputs.len() as u32).to_be_bytes());
        for i in &self.inputs {
            out.extend_from_slice(&(i.len() as u32).to_be_bytes());
            out.extend_from_slice(i);
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<Batch, BatchError> {
        let mut inputs = Vec::new();
        let head = Batch::walk(b, |count, i| {
            if inputs.is_empty() {
                inputs.reserve_exact(count.min(1 << 16));
            }
            inputs.push(i.to_vec());
        })?;
        Ok(Batch { height: head.height, ts: head.ts, rules: head.rules, inputs })
    }

    /// Check an encoded batch as [`Batch::decode`] would and return its header, copying
    /// nothing: for a log scan that only needs to know the batch is whole.
    pub fn check(b: &[u8]) -> Result<BatchHead, BatchError> {
        Batch::walk(b, |_, _| {})
    }

    /// Parse `b`, calling `input(count, bytes)` with each input in order.
    fn walk(b: &[u8], mut input: impl FnMut(usize, &[u8])) -> Result<BatchHead, BatchError> {
        let take = |at: usize, n: usize| b.get(at..at.saturating_add(n)).ok_or(BatchError::Truncated);
        let u64_at = |at: usize| -> Result<u64, BatchError> {
            let mut a = [0u8; 8];
            a.copy_from_slice(take(at, 8)?);
            Ok(u64::from_be_bytes(a))
        };
        let u32_at = |at: usize| -> Result<u32, BatchError> {
            let mut a = [0u8; 4];
            a.copy_from_slice(take(at, 4)?);
            Ok(u32::from_be_bytes(a))
        };
        let (rules, at) = match *b.first().ok_or(BatchError::Truncated)? {
            BATCH_FORMAT_UNSTAMPED => (Batch::UNSTAMPED, 1),
            BATCH_FORMAT => {
                let r = take(1, 2)?;
                let rules = u16::from_be_bytes([r[0], r[1]]);
                if rules == Batch::UNSTAMPED {
                    return Err(BatchError::ZeroRules);
                }
                (rules, 3)
            }
            v => return Err(BatchError::Format(v)),
        };
        let height = u64_at(at)?;
        let ts = u64_at(at + 8)?;
        let n = u32_at(at + 16)? as usize;
        let mut pos = at + 20;
        for _ in 0..n {
            let len = u32_at(pos)? as usize;
            pos += 4;
            input(n, take(pos, len)?);
            pos += len;
        }
        if pos != b.len() {
            return Err(BatchError::Trailing(b.len() - pos));
        }
        Ok(BatchHead { height, ts, rules })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for rules in [Batch::UNSTAMPED, 1, 7, u16::MAX] {
            let b = Batch { height: 7, ts: 123, rules, inputs: vec![b"a".to_vec(), vec![], b"xyz".to_vec()] };
            let e = b.encode();
            assert_eq!(Batch::decode(&e).unwrap(), b);
            assert_eq!(Batch::decode(&e[..e.len() - 1]), Err(BatchError::Truncated));
            assert_eq!(Batch::check(&e), Ok(BatchHead { height: 7, ts: 123, rules }));
            assert_eq!(Batch::check(&e[..e.len() - 1]), Err(BatchError::Truncated));
            let mut longer = e.clone();
            longer.push(0);
            assert_eq!(Batch::decode(&longer), Err(BatchError::Trailing(1)));
            assert_eq!(Batch::check(&longer), Err(BatchError::Trailing(1)));
        }
    }

    /// The byte layouts docs/record.md documents, byte for byte.
    #[test]
    fn golden_bytes() {
        let stamped = Batch { height: 5, ts: 0x0102, rules: 3, inputs: vec![b"ab".to_vec()] };
        let want: Vec<u8> = [
            &[0x02][..],
            &[0, 3],
            &[0, 0, 0, 0, 0, 0, 0, 5],
            &[0, 0, 0, 0, 0, 0, 1, 2],
            &[0, 0, 0, 1],
            &[0, 0, 0, 2],
            b"ab",
        ]
        .concat();
        assert_eq!(stamped.encode(), want);
        let legacy = Batch { rules: Batch::UNSTAMPED, ..stamped };
        let want1: Vec<u8> =
            [&[0x01][..], &[0, 0, 0, 0, 0, 0, 0, 5], &[0, 0, 0, 0, 0, 0, 1, 2], &[0, 0, 0, 1], &[0, 0, 0, 2], b"ab"]
                .concat();
        assert_eq!(legacy.encode(), want1);
        assert_eq!(Batch::decode(&want1).unwrap(), legacy);
    }

    #[test]
    fn refusals() {
        assert_eq!(Batch::decode(&[]), Err(BatchError::Truncated));
        assert_eq!(Batch::decode(&[3, 0, 0]), Err(BatchError::Format(3)));
        assert_eq!(Batch::decode(&[0]), Err(BatchError::Format(0)));
        let zero = [&[0x02, 0, 0][..], &[0; 20]].concat();
        assert_eq!(Batch::decode(&zero), Err(BatchError::ZeroRules));
        // A count that promises more inputs than there are bytes.
        let short = [&[0x02, 0, 1][..], &[0; 16], &[0, 0, 0, 9]].concat();
        assert_eq!(Batch::decode(&short), Err(BatchError::Truncated));
    }
}
