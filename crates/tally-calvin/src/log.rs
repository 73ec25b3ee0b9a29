//! The durable input log.
//!
//! [`FileLog`] is the single-node implementation: one append-only file of frames
//! `len u32 | crc32 u32 | batch bytes`, fsynced after every append. On open, frames are
//! read and checked; a torn or corrupt tail (a crash mid-append, never acknowledged) is
//! truncated away. Everything before it was fsynced before any client heard of it.
//!
//! A frame that fails its check while complete frames follow it is not a torn tail: those
//! later frames were appended only after it was fsynced, so it was acknowledged and has
//! since been damaged. Opening such a log fails ([`LogError::Corrupt`]) instead of
//! truncating acknowledged batches away.
//!
//! An append that fails (a full disk, a failing `fsync`) is rolled back: the file is cut
//! back to its length before the append, so the batch is not in the log and its
//! submitters are told it was not committed. After a failed append the log accepts no
//! more appends ([`LogError::Stopped`]): the node stops taking writes until it is
//! restarted once the fault is fixed. Fault tests: `tests/disk_faults.rs`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tally_apply::Batch;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("log is corrupt at height {height}: {detail}")]
    Corrupt { height: u64, detail: String },
    #[error("log append out of order: expected height {expected}, got {got}")]
    OutOfOrder { expected: u64, got: u64 },
    #[error(
        "appending batch {height} to the input log {path} failed: {source}; {}",
        if *rolled_back { "the batch was rolled back and is not committed" } else { "the batch could not be rolled back and may be replayed on restart" }
    )]
    AppendFailed { height: u64, path: PathBuf, source: std::io::Error, rolled_back: bool },
    #[error("the input log {path} stopped taking appends after an earlier failure; fix the disk and restart the node")]
    Stopped { path: PathBuf },
}

/// A durable, ordered log of batches.
pub trait Log: Send {
    /// Append `batch` durably; returns only once it survives a crash.
    fn append(&mut self, batch: &Batch) -> Result<(), LogError>;
    /// Every batch with height > `height`, in order.
    fn read_after(&mut self, height: u64) -> Result<Vec<Batch>, LogError>;
    /// Height of the last batch (0 when empty).
    fn last_height(&self) -> u64;
    /// The `ts` of the last batch (0 when empty).
    fn last_ts(&self) -> u64;
}

/// Largest frame accepted when reading the log back.
pub const FRAME_BYTES_MAX: usize = 256 << 20;

pub struct FileLog {
    path: PathBuf,
    file: File,
    /// Bytes of valid frames: where the next append starts.
    len: u64,
    last_height: u64,
    last_ts: u64,
    /// Set by a failed append; every later append fails.
    stopped: bool,
}

impl FileLog {
    /// Open (or create) the log at `dir/input.log`, truncating a torn tail.
    pub fn open(dir: &Path) -> Result<FileLog, LogError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LogError::Io { path: path.clone(), source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join("input.log");
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(io(&path))?;
        let (valid_len, last_height, last_ts) = scan(&mut file, &path, |_| Ok(()))?;
        let len = file.metadata().map_err(io(&path))?.len();
        if valid_len < len {
            tracing::warn!(valid_len, len, "truncating torn tail of the input log");
            file.set_len(valid_len).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        }
        // Make the directory entry durable too.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(FileLog { path, file, len: valid_len, last_height, last_ts, stopped: false })
    }

    /// Cut the file back to `len` after a failed append; true if that is durable.
    fn roll_back(&mut self) -> bool {
        self.file.set_len(self.len).and_then(|()| self.file.sync_all()).is_ok()
    }
}

/// Read every valid frame, calling `f` for each; returns (valid length, last height, last ts).
fn scan(
    file: &mut File,
    path: &Path,
    mut f: impl FnMut(Batch) -> Result<(), LogError>,
) -> Result<(u64, u64, u64), LogError> {
    let io = |source| LogError::Io { path: path.to_path_buf(), source };
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut data = Vec::new();
    file.read_to_end(&mut data).map_err(io)?;
    let mut pos = 0usize;
    let mut last_height = 0;
    let mut last_ts = 0;
    while pos + 8 <= data.len() {
        let len = u32::from_be_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let crc = u32::from_be_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
        if len > FRAME_BYTES_MAX || pos + 8 + len > data.len() {
            break;
        }
        let body = &data[pos + 8..pos + 8 + len];
        let batch = if crc32fast::hash(body) == crc { Batch::decode(body).ok() } else { None };
        let Some(batch) = batch else {
            if frame_follows(&data[pos + 8 + len..]) {
                return Err(LogError::Corrupt {
                    height: last_height + 1,
                    detail: format!(
                        "the frame at byte {pos} of {} fails its check but intact frames follow it, so it was \
                         acknowledged and has since been damaged; restore the data directory from a backup or \
                         another replica (the log is left as it is)",
                        path.display()
                    ),
                });
            }
            break;
        };
        if batch.height != last_height + 1 {
            return Err(LogError::Corrupt {
                height: batch.height,
                detail: format!("expected height {}", last_height + 1),
            });
        }
        last_height = batch.height;
        last_ts = batch.ts;
        f(batch)?;
        pos += 8 + len;
    }
    Ok((pos as u64, last_height, last_ts))
}

/// The batches of the log in `dir` up to `height`, read without opening the log for
/// writing: a running node may be appending (its torn tail is where reading stops, and
/// nothing is truncated). For online backups.
pub fn read_log_dir(dir: &Path, height: u64) -> Result<Vec<Batch>, LogError> {
    let path = dir.join("input.log");
    let mut file = File::open(&path).map_err(|source| LogError::Io { path: path.clone(), source })?;
    let mut out = Vec::new();
    scan(&mut file, &path, |b| {
        if b.height <= height {
            out.push(b);
        }
        Ok(())
    })?;
    Ok(out)
}

/// Whether `rest` starts with a complete frame whose checksum holds (a torn append leaves
/// nothing valid after it).
fn frame_follows(rest: &[u8]) -> bool {
    if rest.len() < 8 {
        return false;
    }
    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let crc = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
    len <= FRAME_BYTES_MAX && 8 + len <= rest.len() && crc32fast::hash(&rest[8..8 + len]) == crc
}

impl Log for FileLog {
    fn append(&mut self, batch: &Batch) -> Result<(), LogError> {
        if self.stopped {
            return Err(LogError::Stopped { path: self.path.clone() });
        }
        if batch.height != self.last_height + 1 {
            return Err(LogError::OutOfOrder { expected: self.last_height + 1, got: batch.height });
        }
        let body = batch.encode();
        let mut frame = Vec::with_capacity(body.len() + 8);
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        frame.extend_from_slice(&body);
        if let Err(source) = self.file.write_all(&frame).and_then(|()| self.file.sync_data()) {
            self.stopped = true;
            let rolled_back = self.roll_back();
            return Err(LogError::AppendFailed { height: batch.height, path: self.path.clone(), source, rolled_back });
        }
        self.len += frame.len() as u64;
        self.last_height = batch.height;
        self.last_ts = batch.ts;
        Ok(())
    }

    fn read_after(&mut self, height: u64) -> Result<Vec<Batch>, LogError> {
        let mut out = Vec::new();
        let path = self.path.clone();
        scan(&mut self.file, &path, |b| {
            if b.height > height {
                out.push(b);
            }
            Ok(())
        })?;
        Ok(out)
    }

    fn last_height(&self) -> u64 {
        self.last_height
    }

    fn last_ts(&self) -> u64 {
        self.last_ts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_reopen_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = FileLog::open(dir.path()).unwrap();
            for h in 1..=3 {
                log.append(&Batch { height: h, ts: h * 10, inputs: vec![vec![h as u8; 5]] }).unwrap();
            }
            assert!(log.append(&Batch { height: 9, ts: 0, inputs: vec![] }).is_err());
        }
        // Simulate a torn append.
        let p = dir.path().join("input.log");
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&[0, 0, 0, 50, 1, 2]).unwrap();
        drop(f);
        let mut log = FileLog::open(dir.path()).unwrap();
        assert_eq!(log.last_height(), 3);
        assert_eq!(log.last_ts(), 30);
        let after = log.read_after(1).unwrap();
        assert_eq!(after.iter().map(|b| b.height).collect::<Vec<_>>(), vec![2, 3]);
        log.append(&Batch { height: 4, ts: 40, inputs: vec![] }).unwrap();
        assert_eq!(FileLog::open(dir.path()).unwrap().last_height(), 4);
    }
}
