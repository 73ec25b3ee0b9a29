//! The output record: what the executor hands back for one transaction — to the request
//! waiting on the node that received it, and, on a cluster, from the leader to the
//! follower that forwarded the write. Version 1 layout (also in `docs/record.md`):
//!
//! | field | encoding |
//! |---|---|
//! | version | `u8` = `0x01` |
//! | kind | `u8` = `0x4F` (`O`, a transaction output) |
//! | status | `u16`: the HTTP status of the answer, 100–599 |
//! | ts | `u64`: the transaction's commit ts (µs) |
//! | steps | `u64`: evaluation steps used |
//! | bytes_read | `u64` |
//! | bytes_written | `u64` |
//! | secrets | `varint` count, then that many `str`: heads of the secret placeholders this transaction issued |
//! | body | `varint` length, then the answer as JSON text: one object, `{"resource": …}` or `{"errors": […]}` |
//!
//! and nothing after it. The body is kept as the JSON text the client receives, so the
//! receiving node sends it as it is unless it must complete secrets in it.

use super::{put_str, put_varint, Reader, RecordError, VERSION};

/// Kind byte of a transaction output.
const KIND_OUTPUT: u8 = b'O';

/// The executor's answer for one input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnOutput {
    pub status: u16,
    /// The answer body, JSON text of one object.
    pub body: Vec<u8>,
    pub ts: u64,
    pub steps: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Heads of the secret placeholders this transaction issued; the receiving node
    /// completes only these in `body` (see `tally_fql::secret::reveal`).
    pub secrets: Vec<String>,
}

impl TxnOutput {
    /// An answer of `status` whose body is the JSON of `body`.
    pub fn json(status: u16, body: &serde_json::Value, ts: u64) -> TxnOutput {
        TxnOutput {
            status,
            body: encode_body(body),
            ts,
            steps: 0,
            bytes_read: 0,
            bytes_written: 0,
            secrets: Vec::new(),
        }
    }
}

/// JSON text of an answer body. Encoding a `serde_json::Value` cannot fail; should it,
/// the client gets an internal error rather than the executor stopping.
pub fn encode_body(body: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(body).unwrap_or_else(|_| {
        br#"{"errors":[{"code":"internal server error","description":"The answer could not be encoded."}]}"#.to_vec()
    })
}

/// Encode `out` as a version 1 output record.
pub fn encode_output(out: &TxnOutput) -> Vec<u8> {
    let mut b = Vec::with_capacity(out.body.len() + 48);
    b.push(VERSION);
    b.push(KIND_OUTPUT);
    b.extend_from_slice(&out.status.to_be_bytes());
    for n in [out.ts, out.steps, out.bytes_read, out.bytes_written] {
        b.extend_from_slice(&n.to_be_bytes());
    }
    put_varint(&mut b, out.secrets.len() as u64);
    for s in &out.secrets {
        put_str(&mut b, s);
    }
    put_varint(&mut b, out.body.len() as u64);
    b.extend_from_slice(&out.body);
    b
}

/// Decode a version 1 output record; anything else is refused.
pub fn decode_output(bytes: &[u8]) -> Result<TxnOutput, RecordError> {
    let mut r = Reader { bytes, pos: 0, version: VERSION };
    match r.u8()? {
        VERSION => {}
        v => return Err(RecordError::UnknownVersion(v)),
    }
    let kind = r.u8()?;
    if kind != KIND_OUTPUT {
        return Err(RecordError::WrongKind(kind));
    }
    let status = u16::from_be_bytes(r.take(2)?.try_into().map_err(|_| RecordError::Truncated)?);
    if !(100..=599).contains(&status) {
        return Err(RecordError::BadStatus(status));
    }
    let (ts, steps, bytes_read, bytes_written) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
    let n = r.len()?;
    let mut secrets = Vec::with_capacity(n as usize);
    for _ in 0..n {
        secrets.push(r.str()?);
    }
    let len = r.len()? as usize;
    let body = r.take(len)?;
    check_body(body)?;
    let rest = bytes.len() - r.pos;
    if rest != 0 {
        return Err(RecordError::TrailingBytes(rest));
    }
    Ok(TxnOutput { status, body: body.to_vec(), ts, steps, bytes_read, bytes_written, secrets })
}

/// The body must be UTF-8 text delimited as one JSON object. Its full syntax is checked
/// where it is parsed (only to complete secrets); otherwise it goes to the client as the
/// executor wrote it.
fn check_body(body: &[u8]) -> Result<(), RecordError> {
    let text = std::str::from_utf8(body).map_err(|_| RecordError::BadUtf8)?.trim();
    if text.starts_with('{') && text.ends_with('}') {
        Ok(())
    } else {
        Err(RecordError::BadBody)
    }
}

#[cfg(test)]
#[path = "output_tests.rs"]
mod tests;
