//! Online backups of a single node, and restoring one into a new data directory.
//!
//! `GET /admin/backup` (root key) answers the backup file: the state store at one point in
//! time (the Raft snapshot format of `snapshot.rs`, which carries the applied height,
//! the head and every block header), plus the input log's batches up to that height that
//! are still in the log (all of them under `--log-retain all`; from the first segment left
//! otherwise), so the restored node has the log its blocks were computed from as far as the
//! node had it.
//!
//! Format (version 2, big-endian; docs/backup.md):
//! `"TALLYBAK" | version u8 | height u64 | head hash [32] | snapshot len u64 | snapshot |
//! first height u64 | batch count u64 | (batch len u32 | batch)* | sha256 [32]`, the digest
//! covering every byte before it; the batches are `first ..= height`. Version 1 (written
//! before the log was segmented) has no first height: its batches start at 1. A reader
//! refuses another magic, version, digest, count or trailing bytes.

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tally_calvin::{Batch, Log};
use tally_storage::Store;

const MAGIC: &[u8; 8] = b"TALLYBAK";
const VERSION: u8 = 2;
/// Version 1: every batch from height 1, no first-height field.
const VERSION_WHOLE_LOG: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("the backup file is malformed: {0}")]
    Malformed(&'static str),
    #[error("the backup file is format version {0}; this build reads versions {VERSION_WHOLE_LOG} and {VERSION}")]
    Version(u8),
    #[error("the backup file fails its SHA-256 check: it is damaged or incomplete")]
    Digest,
    #[error("snapshot: {0}")]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error("input log: {0}")]
    Log(#[from] tally_calvin::LogError),
    #[error("{0}")]
    Other(String),
}

/// What a backup holds, once checked.
pub struct Backup {
    pub height: u64,
    pub head: [u8; 32],
    pub snapshot: Vec<u8>,
    /// Height of the first batch in `batches` (`height + 1` when there are none).
    pub first: u64,
    pub batches: Vec<Batch>,
}

fn head_hash(store: &dyn Store, height: u64) -> Result<[u8; 32], BackupError> {
    if height == 0 {
        return Ok([0; 32]);
    }
    let snap = store.snapshot().map_err(|e| BackupError::Other(e.to_string()))?;
    let bytes = snap
        .meta(&crate::machine::block_key(height))
        .map_err(|e| BackupError::Other(e.to_string()))?
        .ok_or(BackupError::Malformed("no block header at the applied height"))?;
    let h = tally_ledger::BlockHeader::decode(&bytes).map_err(|e| BackupError::Other(e.to_string()))?;
    Ok(h.hash())
}

/// A backup of the node whose store is `store` and whose input log is in `log_dir`.
pub fn take(store: &dyn Store, log_dir: &Path) -> Result<Vec<u8>, BackupError> {
    let (snapshot, height) = crate::snapshot::export_now(store)?;
    // The header at `height` never changes once written, so reading it from a later view
    // is the same as reading it from the snapshot's.
    let head = head_hash(store, height)?;
    let batches = tally_calvin::read_log_dir(log_dir, height)?;
    let first = batches.first().map_or(height + 1, |b| b.height);
    if batches.last().map_or(first - 1, |b| b.height) != height {
        return Err(BackupError::Other(format!(
            "the input log ends before height {height}, the state's; a backup needs the log up to the state"
        )));
    }
    let mut out = Vec::with_capacity(snapshot.len() + 64);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&(snapshot.len() as u64).to_be_bytes());
    out.extend_from_slice(&snapshot);
    out.extend_from_slice(&first.to_be_bytes());
    out.extend_from_slice(&(batches.len() as u64).to_be_bytes());
    for b in &batches {
        let enc = b.encode();
        out.extend_from_slice(&(enc.len() as u32).to_be_bytes());
        out.extend_from_slice(&enc);
    }
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    Ok(out)
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BackupError> {
        let end = self.pos.checked_add(n).ok_or(BackupError::Malformed("length overflow"))?;
        let s = self.b.get(self.pos..end).ok_or(BackupError::Malformed("truncated"))?;
        self.pos = end;
        Ok(s)
    }
    fn u64(&mut self) -> Result<u64, BackupError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().map_err(|_| BackupError::Malformed("u64"))?))
    }
    fn u32(&mut self) -> Result<u32, BackupError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().map_err(|_| BackupError::Malformed("u32"))?))
    }
}

/// Check and decode a backup file.
pub fn parse(data: &[u8]) -> Result<Backup, BackupError> {
    if data.len() < MAGIC.len() + 1 + 32 || &data[..8] != MAGIC {
        return Err(BackupError::Malformed("not a Tally backup (no TALLYBAK header)"));
    }
    let version = data[8];
    if version != VERSION && version != VERSION_WHOLE_LOG {
        return Err(BackupError::Version(version));
    }
    let (body, digest) = data.split_at(data.len() - 32);
    if Sha256::digest(body).as_slice() != digest {
        return Err(BackupError::Digest);
    }
    let mut r = Reader { b: body, pos: 9 };
    let height = r.u64()?;
    let head: [u8; 32] = r.take(32)?.try_into().map_err(|_| BackupError::Malformed("head"))?;
    let n = r.u64()? as usize;
    let snapshot = r.take(n)?.to_vec();
    let first = if version == VERSION_WHOLE_LOG { 1 } else { r.u64()? };
    let count = r.u64()?;
    if first == 0 || first.checked_add(count) != height.checked_add(1) {
        return Err(BackupError::Malformed("the batches do not end at the backup's height"));
    }
    let mut batches = Vec::new();
    for i in 0..count {
        let len = r.u32()? as usize;
        let b = Batch::decode(r.take(len)?).map_err(|_| BackupError::Malformed("a batch does not decode"))?;
        if b.height != first + i {
            return Err(BackupError::Malformed("the batches are not consecutive"));
        }
        batches.push(b);
    }
    if r.pos != body.len() {
        return Err(BackupError::Malformed("bytes after the last batch"));
    }
    Ok(Backup { height, head, snapshot, first, batches })
}

/// Make `dir` (absent or empty) a data directory holding the backup; returns its height
/// and head as the restored store reports them.
pub fn restore(data: &[u8], dir: &Path) -> anyhow::Result<(u64, [u8; 32])> {
    use anyhow::Context;
    let b = parse(data)?;
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        anyhow::bail!("{} is not empty; restore into a new directory", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::datadir::check_or_init(dir)?;
    let store: Arc<dyn Store> = Arc::new(tally_storage::RedbStore::open(&dir.join("state.redb"))?);
    crate::snapshot::import(&*store, &b.snapshot)?;
    // Batches before `first` were retired on the node the backup came from; the restored
    // log starts where its log did.
    let mut log = tally_calvin::FileLog::create_at(&dir.join("log"), Default::default(), b.first, 0)?;
    for batch in &b.batches {
        log.append(batch)?;
    }
    let height = crate::machine::meta_height(&*store)?;
    let head = head_hash(&*store, height)?;
    if height != b.height || head != b.head {
        anyhow::bail!("the restored store reports height {height}, not the backup's {}", b.height);
    }
    Ok((height, head))
}
