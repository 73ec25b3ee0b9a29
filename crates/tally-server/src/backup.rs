//! Online backups of a single node or a cluster member, and restoring one into a new data
//! directory.
//!
//! `GET /admin/backup` (root key) answers the backup file as it is read: the state store
//! at one point in time (one storage read transaction; the snapshot format of
//! `snapshot.rs`, which carries the applied height, the head and every block header),
//! the head signed at that height (the `get-sth` answer: on a cluster the signatures of
//! the voters that signed it, the quorum certificate), and on a single node the input
//! log's batches up to that height that are still in the log (a member's log is its Raft
//! log, which a restored member gets again from the cluster). Nothing is held whole in
//! memory on either side: the node writes records as it reads them, `tally backup`
//! writes the bytes to the file as they arrive, and [`verify`] and [`restore`] read the
//! file record by record.
//!
//! Format (version 3, big-endian; docs/backup.md):
//! `"TALLYBAK" | 0x03 | height u64 | head hash [32] | signed head len u32 | signed head
//! (JSON) | snapshot (self-delimiting) | first height u64 | batch count u64 | (batch len
//! u32 | batch)* | sha256 [32]`, the digest covering every byte before it; the batches
//! are `first ..= height`. Version 2 has no signed head and a snapshot length u64 before
//! the snapshot; version 1 (before the log was segmented) also has no first height: its
//! batches start at 1. Both are still read. A reader refuses another magic, version,
//! digest, count or trailing bytes.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tally_calvin::{Batch, Log};
use tally_storage::{Snapshot, Store};

use crate::snapshot::SnapshotReader;

const MAGIC: &[u8; 8] = b"TALLYBAK";
const VERSION: u8 = 3;
/// Version 2: a snapshot length before the snapshot, no signed head.
const VERSION_SNAPSHOT_LEN: u8 = 2;
/// Version 1: every batch from height 1, no first-height field.
const VERSION_WHOLE_LOG: u8 = 1;
/// The longest signed head a reader accepts (a `get-sth` answer is about 200 bytes per
/// member).
const SIGNED_HEAD_BYTES_MAX: usize = 1 << 20;
/// The longest batch a reader accepts (the log's own frame limit).
const BATCH_BYTES_MAX: usize = tally_calvin::FRAME_BYTES_MAX;
/// redb's page cache while restoring: the store is written once, in key order, so a
/// large cache buys little and would set the command's memory (redb's default is 1 GiB).
const RESTORE_CACHE_BYTES: usize = 64 << 20;
/// What the writer hands to the network at a time.
pub const CHUNK_BYTES: usize = 256 << 10;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("the backup file is malformed: {0}")]
    Malformed(&'static str),
    #[error("the backup file is format version {0}; this build reads versions {VERSION_WHOLE_LOG} to {VERSION}")]
    Version(u8),
    #[error("the backup file fails its SHA-256 check: it is damaged or incomplete")]
    Digest,
    #[error("snapshot: {0}")]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error("input log: {0}")]
    Log(#[from] tally_calvin::LogError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// What a backup holds, once checked (everything but the records themselves).
#[derive(Clone, Debug)]
pub struct Contents {
    pub version: u8,
    pub height: u64,
    pub head: [u8; 32],
    /// The `get-sth` JSON at `height` (version 3).
    pub signed_head: Option<Vec<u8>>,
    /// Height of the first batch (`height + 1` when there are none).
    pub first: u64,
    pub batches: u64,
    /// Bytes of the file.
    pub bytes: u64,
}

/// The hash of the block header at `height` in `snap` (all zeros at height 0), and the
/// header.
pub fn head_at(snap: &dyn Snapshot, height: u64) -> Result<([u8; 32], Option<tally_ledger::BlockHeader>), BackupError> {
    if height == 0 {
        return Ok(([0; 32], None));
    }
    let bytes = snap
        .meta(&crate::machine::block_key(height))
        .map_err(|e| BackupError::Other(e.to_string()))?
        .ok_or(BackupError::Malformed("no block header at the applied height"))?;
    let h = tally_ledger::BlockHeader::decode(&bytes).map_err(|e| BackupError::Other(e.to_string()))?;
    Ok((h.hash(), Some(h)))
}

/// Writes through, keeping the SHA-256 of everything written and the count.
struct Sha256Writer<'a> {
    w: &'a mut dyn Write,
    sha: Sha256,
    bytes: u64,
}

impl Write for Sha256Writer<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.w.write(b)?;
        self.sha.update(&b[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

/// Write the backup of the view `snap` (at its applied `height`) to `w` as it is read:
/// the snapshot record by record, then the batches `..= height` still in `log_dir` one by
/// one (none for a cluster member, `log_dir` `None`). `signed_head` is the `get-sth`
/// JSON at `height`. Returns the bytes written.
pub fn write(
    snap: &dyn Snapshot,
    height: u64,
    signed_head: &[u8],
    log_dir: Option<&Path>,
    w: &mut dyn Write,
) -> Result<u64, BackupError> {
    let (head, _) = head_at(snap, height)?;
    let mut out = Sha256Writer { w, sha: Sha256::new(), bytes: 0 };
    out.write_all(MAGIC)?;
    out.write_all(&[VERSION])?;
    out.write_all(&height.to_be_bytes())?;
    out.write_all(&head)?;
    out.write_all(&(signed_head.len() as u32).to_be_bytes())?;
    out.write_all(signed_head)?;
    crate::snapshot::export_to(snap, height, &mut out)?;
    // The first height is known at the first batch, the count from it: nothing of the
    // log is held, and a segment retired before anything was read is skipped.
    let mut next = 0u64;
    let mut put = |b: Batch| -> Result<(), tally_calvin::LogError> {
        let io = |e: std::io::Error| tally_calvin::LogError::Corrupt { height: b.height, detail: e.to_string() };
        if next == 0 {
            out.write_all(&b.height.to_be_bytes()).map_err(io)?;
            out.write_all(&(height + 1 - b.height).to_be_bytes()).map_err(io)?;
        } else if b.height != next {
            return Err(tally_calvin::LogError::Corrupt { height: b.height, detail: "a batch is missing".into() });
        }
        let enc = b.encode();
        out.write_all(&(enc.len() as u32).to_be_bytes()).map_err(io)?;
        out.write_all(&enc).map_err(io)?;
        next = b.height + 1;
        Ok(())
    };
    if let Some(dir) = log_dir {
        tally_calvin::stream_log_dir(dir, height, &mut put)?;
    }
    if next == 0 {
        // Every batch retired (or a member): the restored log starts after the height.
        out.write_all(&(height + 1).to_be_bytes())?;
        out.write_all(&0u64.to_be_bytes())?;
    } else if next != height + 1 {
        return Err(BackupError::Other(format!(
            "the input log ends before height {height}, the state's; a backup needs the log up to the state"
        )));
    }
    let digest = out.sha.clone().finalize();
    out.w.write_all(&digest)?;
    out.w.flush()?;
    Ok(out.bytes + 32)
}

/// A backup of `store` as it is now, whole in memory (tests and small tools).
pub fn take(store: &dyn Store, log_dir: &Path) -> Result<Vec<u8>, BackupError> {
    let snap = store.snapshot().map_err(|e| BackupError::Other(e.to_string()))?;
    let height = crate::snapshot::applied_height(&*snap)?;
    let mut out = Vec::new();
    write(&*snap, height, b"{}", Some(log_dir), &mut out)?;
    Ok(out)
}

fn read_exact<const N: usize>(r: &mut dyn Read) -> Result<[u8; N], BackupError> {
    let mut b = [0u8; N];
    r.read_exact(&mut b).map_err(|_| BackupError::Malformed("truncated"))?;
    Ok(b)
}

fn read_u64(r: &mut dyn Read) -> Result<u64, BackupError> {
    Ok(u64::from_be_bytes(read_exact::<8>(r)?))
}

fn read_vec(r: &mut dyn Read, n: usize) -> Result<Vec<u8>, BackupError> {
    let mut b = Vec::with_capacity(n.min(1 << 16));
    r.take(n as u64).read_to_end(&mut b)?;
    if b.len() != n {
        return Err(BackupError::Malformed("truncated"));
    }
    Ok(b)
}

/// What a walk over a backup does with its parts.
pub trait Visitor {
    /// Called once the header is read, before the snapshot.
    fn header(&mut self, _c: &Contents) -> Result<(), BackupError> {
        Ok(())
    }
    /// Must read the snapshot to its end (`next_record` answering `None`).
    fn snapshot(&mut self, r: &mut SnapshotReader<&mut dyn Read>) -> Result<(), BackupError> {
        while r.next_record()?.is_some() {}
        Ok(())
    }
    fn batch(&mut self, _first: u64, _b: Batch) -> Result<(), BackupError> {
        Ok(())
    }
}

/// Only checks.
pub struct Check;
impl Visitor for Check {}

/// The SHA-256 check of the whole file, streamed: the digest of every byte but the last
/// 32, against the last 32.
fn check_digest(path: &Path) -> Result<u64, BackupError> {
    let len = std::fs::metadata(path)?.len();
    if len < (MAGIC.len() + 1 + 32) as u64 {
        return Err(BackupError::Malformed("not a Tally backup (no TALLYBAK header)"));
    }
    let mut r = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut sha = Sha256::new();
    std::io::copy(&mut (&mut r).take(len - 32), &mut sha)?;
    let want: [u8; 32] = read_exact(&mut r)?;
    if sha.finalize().as_slice() != want {
        return Err(BackupError::Digest);
    }
    Ok(len)
}

/// Read the backup at `path` through `v`: first its SHA-256 (so a damaged file is named
/// as such before anything else is read), then every part in order, each checked.
pub fn walk(path: &Path, v: &mut dyn Visitor) -> Result<Contents, BackupError> {
    walk_checked(path, v, true)
}

/// [`walk`], with the SHA-256 pass left out when `digest` is false (the file was checked
/// a moment ago).
fn walk_checked(path: &Path, v: &mut dyn Visitor, digest: bool) -> Result<Contents, BackupError> {
    let magic_checked = {
        let mut f = File::open(path)?;
        let mut m = [0u8; 9];
        f.read_exact(&mut m).is_ok() && &m[..8] == MAGIC
    };
    if !magic_checked {
        return Err(BackupError::Malformed("not a Tally backup (no TALLYBAK header)"));
    }
    let len = if digest { check_digest(path)? } else { std::fs::metadata(path)?.len().max(32) };
    let file = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut body = file.take(len - 32);
    let r: &mut dyn Read = &mut body;
    read_exact::<8>(r)?;
    let version = read_exact::<1>(r)?[0];
    if !(VERSION_WHOLE_LOG..=VERSION).contains(&version) {
        return Err(BackupError::Version(version));
    }
    let height = read_u64(r)?;
    let head = read_exact::<32>(r)?;
    let mut c = Contents { version, height, head, signed_head: None, first: 0, batches: 0, bytes: len };
    let snapshot_len = if version > VERSION_SNAPSHOT_LEN {
        let n = u32::from_be_bytes(read_exact::<4>(r)?) as usize;
        if n > SIGNED_HEAD_BYTES_MAX {
            return Err(BackupError::Malformed("the signed head is longer than the limit"));
        }
        c.signed_head = Some(read_vec(r, n)?);
        None
    } else {
        Some(read_u64(r)?)
    };
    v.header(&c)?;
    match snapshot_len {
        None => {
            let sr: &mut dyn Read = &mut *r;
            v.snapshot(&mut SnapshotReader::new(sr)?)?
        }
        Some(n) => {
            let mut t = (&mut *r).take(n);
            let tr: &mut dyn Read = &mut t;
            v.snapshot(&mut SnapshotReader::new(tr)?)?;
            if t.limit() != 0 {
                return Err(BackupError::Malformed("bytes after the snapshot"));
            }
        }
    }
    c.first = if version == VERSION_WHOLE_LOG { 1 } else { read_u64(r)? };
    c.batches = read_u64(r)?;
    if c.first == 0 || c.first.checked_add(c.batches) != height.checked_add(1) {
        return Err(BackupError::Malformed("the batches do not end at the backup's height"));
    }
    for i in 0..c.batches {
        let n = u32::from_be_bytes(read_exact::<4>(r)?) as usize;
        if n > BATCH_BYTES_MAX {
            return Err(BackupError::Malformed("a batch is longer than the limit"));
        }
        let b = Batch::decode(&read_vec(r, n)?).map_err(|_| BackupError::Malformed("a batch does not decode"))?;
        if b.height != c.first + i {
            return Err(BackupError::Malformed("the batches are not consecutive"));
        }
        v.batch(c.first, b)?;
    }
    if body.limit() != 0 {
        return Err(BackupError::Malformed("bytes after the last batch"));
    }
    Ok(c)
}

/// Check the backup at `path` completely (digest, every record and batch).
pub fn verify(path: &Path) -> Result<Contents, BackupError> {
    walk(path, &mut Check)
}

/// What [`restore`] made.
pub struct Restored {
    pub height: u64,
    pub head: [u8; 32],
    /// Members whose signature of the head verified, and the voters at the time (from the
    /// signed head; a single node signs as member 1 of 1).
    pub signed_by: Vec<u64>,
    pub members: u64,
}

struct Loader {
    store: Arc<dyn Store>,
    log_dir: std::path::PathBuf,
    log: Option<tally_calvin::FileLog>,
}

impl Visitor for Loader {
    fn header(&mut self, _c: &Contents) -> Result<(), BackupError> {
        Ok(())
    }
    fn snapshot(&mut self, r: &mut SnapshotReader<&mut dyn Read>) -> Result<(), BackupError> {
        crate::snapshot::import_fresh(&*self.store, r)?;
        Ok(())
    }
    fn batch(&mut self, first: u64, b: Batch) -> Result<(), BackupError> {
        if self.log.is_none() {
            self.log = Some(tally_calvin::FileLog::create_at(&self.log_dir, Default::default(), first, 0)?);
        }
        if let Some(log) = self.log.as_mut() {
            log.append(&b)?;
        }
        Ok(())
    }
}

/// Make `dir` (absent or empty) a data directory holding the backup at `path`; the file
/// is checked completely first. Returns its height and head as the restored store
/// reports them, and who signed that head.
pub fn restore(path: &Path, dir: &Path) -> anyhow::Result<Restored> {
    use anyhow::Context;
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        anyhow::bail!("{} is not empty; restore into a new directory", dir.display());
    }
    let c = verify(path)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let made = (|| -> anyhow::Result<Restored> {
        crate::datadir::check_or_init(dir)?;
        let store: Arc<dyn Store> =
            Arc::new(tally_storage::RedbStore::open_with_cache(&dir.join("state.redb"), Some(RESTORE_CACHE_BYTES))?);
        let mut loader = Loader { store: store.clone(), log_dir: dir.join("log"), log: None };
        walk_checked(path, &mut loader, false)?;
        // Batches before `first` were retired on the node the backup came from (or are
        // a member's Raft log): the restored log starts after the last one it has.
        if loader.log.is_none() {
            tally_calvin::FileLog::create_at(&dir.join("log"), Default::default(), c.first, 0)?;
        }
        drop(loader);
        let snap = store.snapshot()?;
        let height = crate::snapshot::applied_height(&*snap)?;
        let (head, header) = head_at(&*snap, height)?;
        if height != c.height || head != c.head {
            anyhow::bail!("the restored store reports height {height}, not the backup's {}", c.height);
        }
        let (signed_by, members) = match (&c.signed_head, &header) {
            (Some(sth), Some(h)) => check_signed_head(sth, &crate::machine::tree_head(h))?,
            _ => (Vec::new(), 0),
        };
        Ok(Restored { height, head, signed_by, members })
    })();
    if made.is_err() {
        // Nothing half-restored is left to be started by mistake.
        let _ = std::fs::remove_dir_all(dir);
    }
    made
}

/// The members whose signature in the `get-sth` JSON `sth` verifies over `head`, and the
/// voter count it names. A signed head over another tree head is refused.
pub fn check_signed_head(sth: &[u8], head: &tally_ledger::sth::TreeHead) -> anyhow::Result<(Vec<u64>, u64)> {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    let j: serde_json::Value = serde_json::from_slice(sth).map_err(|e| anyhow::anyhow!("the signed head: {e}"))?;
    if j.as_object().is_some_and(|o| o.is_empty()) {
        return Ok((Vec::new(), 0));
    }
    let root = j["sha256_root_hash"].as_str().and_then(|s| B64.decode(s).ok()).unwrap_or_default();
    if j["tree_size"].as_u64() != Some(head.tree_size) || root != head.root {
        anyhow::bail!("the backup's signed head is not the head of its state");
    }
    let mut signed_by = Vec::new();
    for s in j["signatures"].as_array().into_iter().flatten() {
        let pk = s["public_key"].as_str().and_then(|k| B64.decode(k).ok()).unwrap_or_default();
        let sig = s["tree_head_signature"]
            .as_str()
            .and_then(|k| B64.decode(k).ok())
            .and_then(|b| tally_ledger::sth::parse_digitally_signed(&b).ok());
        match (s["member"].as_u64(), sig) {
            (Some(m), Some(sig)) if tally_ledger::sth::verify(&pk, head, &sig) => signed_by.push(m),
            _ => anyhow::bail!("a signature in the backup's signed head does not verify"),
        }
    }
    Ok((signed_by, j["members"].as_u64().unwrap_or(0)))
}

/// Write a backup into a file as it is produced, behind a buffer (`tally backup`'s sink
/// and tests).
pub fn file_writer(path: &Path) -> std::io::Result<BufWriter<File>> {
    Ok(BufWriter::with_capacity(1 << 20, File::create(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_storage::{MemStore, Space};

    fn store() -> MemStore {
        let s = MemStore::new();
        let mut b = s.begin().unwrap();
        b.put(Space::Docs, b"k1", 5, b"v5").unwrap();
        b.put(Space::Index, b"i", 7, b"x").unwrap();
        b.commit(true).unwrap();
        s
    }

    fn file(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// A version 2 file of the same content: a snapshot length, no signed head.
    fn version_2(snapshot: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.push(2);
        out.extend_from_slice(&0u64.to_be_bytes());
        out.extend_from_slice(&[0; 32]);
        out.extend_from_slice(&(snapshot.len() as u64).to_be_bytes());
        out.extend_from_slice(snapshot);
        out.extend_from_slice(&1u64.to_be_bytes());
        out.extend_from_slice(&0u64.to_be_bytes());
        let d = Sha256::digest(&out);
        out.extend_from_slice(&d);
        out
    }

    #[test]
    fn streamed_backup_reads_back_and_refuses_damage_and_other_versions() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store();
        let mut bytes = Vec::new();
        let n = write(&*s.snapshot().unwrap(), 0, br#"{"tree_size":0}"#, None, &mut bytes).unwrap();
        assert_eq!(n, bytes.len() as u64);
        let c = verify(&file(tmp.path(), "ok", &bytes)).unwrap();
        assert_eq!((c.version, c.height, c.first, c.batches, c.bytes), (3, 0, 1, 0, n));
        assert_eq!(c.signed_head.as_deref(), Some(&br#"{"tree_size":0}"#[..]));

        let mut flipped = bytes.clone();
        flipped[bytes.len() / 2] ^= 1;
        assert!(matches!(verify(&file(tmp.path(), "flipped", &flipped)), Err(BackupError::Digest)));
        assert!(verify(&file(tmp.path(), "short", &bytes[..bytes.len() - 1])).is_err());
        let mut v9 = bytes.clone();
        v9[8] = 9;
        let d = Sha256::digest(&v9[..v9.len() - 32]);
        let at = v9.len() - 32;
        v9[at..].copy_from_slice(&d);
        assert!(matches!(verify(&file(tmp.path(), "v9", &v9)), Err(BackupError::Version(9))));

        // Version 2 is still read, and restores the same store.
        let snapshot = crate::snapshot::export(&s, 0).unwrap();
        let v2 = file(tmp.path(), "v2", &version_2(&snapshot));
        assert_eq!(verify(&v2).unwrap().version, 2);
        let restored = restore(&v2, &tmp.path().join("d2")).unwrap();
        assert_eq!((restored.height, restored.head), (0, [0; 32]));
        let again = tally_storage::RedbStore::open(&tmp.path().join("d2/state.redb")).unwrap();
        assert_eq!(crate::snapshot::export(&again, 0).unwrap(), snapshot);

        // A failed restore leaves no directory behind.
        assert!(restore(&file(tmp.path(), "bad", &flipped), &tmp.path().join("d3")).is_err());
        assert!(!tmp.path().join("d3").exists());
    }
}
