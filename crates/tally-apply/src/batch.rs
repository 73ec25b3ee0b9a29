//! One epoch batch: the unit of sequencing, logging, replication and execution.
//!
//! Encoding (version 1, big-endian): `0x01 | height u64 | ts u64 | count u32 |
//! (len u32 | input bytes)*`.

pub const BATCH_FORMAT: u8 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Position in the log, starting at 1.
    pub height: u64,
    /// The sequencer's clock when it closed the batch (µs since the epoch). Logged, so
    /// replay sees the same value; transactions derive their commit ts from it.
    pub ts: u64,
    pub inputs: Vec<Vec<u8>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("batch encoding is truncated")]
    Truncated,
    #[error("unknown batch format {0}")]
    Format(u8),
}

impl Batch {
    pub fn encode(&self) -> Vec<u8> {
        let len: usize = self.inputs.iter().map(|i| i.len() + 4).sum();
        let mut out = Vec::with_capacity(21 + len);
        out.push(BATCH_FORMAT);
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
        let (height, ts) = Batch::walk(b, |count, i| {
            if inputs.is_empty() {
                inputs.reserve_exact(count.min(1 << 16));
            }
            inputs.push(i.to_vec());
        })?;
        Ok(Batch { height, ts, inputs })
    }

    /// Check an encoded batch as [`Batch::decode`] would and return its (height, ts),
    /// copying nothing: for a log scan that only needs to know the batch is whole.
    pub fn check(b: &[u8]) -> Result<(u64, u64), BatchError> {
        Batch::walk(b, |_, _| {})
    }

    /// Parse `b`, calling `input(count, bytes)` with each input in order.
    fn walk(b: &[u8], mut input: impl FnMut(usize, &[u8])) -> Result<(u64, u64), BatchError> {
        let take = |at: usize, n: usize| b.get(at..at.saturating_add(n)).ok_or(BatchError::Truncated);
        let v = *b.first().ok_or(BatchError::Truncated)?;
        if v != BATCH_FORMAT {
            return Err(BatchError::Format(v));
        }
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
        let height = u64_at(1)?;
        let ts = u64_at(9)?;
        let n = u32_at(17)? as usize;
        let mut pos = 21;
        for _ in 0..n {
            let len = u32_at(pos)? as usize;
            pos += 4;
            input(n, take(pos, len)?);
            pos += len;
        }
        Ok((height, ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let b = Batch { height: 7, ts: 123, inputs: vec![b"a".to_vec(), vec![], b"xyz".to_vec()] };
        assert_eq!(Batch::decode(&b.encode()).unwrap(), b);
        let e = b.encode();
        assert_eq!(Batch::decode(&e[..e.len() - 1]), Err(BatchError::Truncated));
        assert_eq!(Batch::check(&e), Ok((7, 123)));
        assert_eq!(Batch::check(&e[..e.len() - 1]), Err(BatchError::Truncated));
    }
}
